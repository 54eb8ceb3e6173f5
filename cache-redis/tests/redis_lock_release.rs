//! The distributed single-flight lock is released on every path of the leader: when its body
//! returns `Err` or panics, a node waiting for its value computes at once instead of waiting
//! out the lock's ttl.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, Backend};
use cache_redis::RedisBackend;
use test_support::RedisServer;

/// Far longer than the test may take: a waiter that waited it out fails the test.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// Makes the leader's body wait until the follower is waiting, then fail one way or another.
struct Gate {
    started: AtomicBool,
    release: AtomicBool,
    runs: AtomicUsize,
}

impl Gate {
    const fn new() -> Self {
        Gate {
            started: AtomicBool::new(false),
            release: AtomicBool::new(false),
            runs: AtomicUsize::new(0),
        }
    }

    /// The body: the first run (the leader) waits for the release, then fails with `fail`;
    /// later runs (the follower computing at once) return a value.
    async fn body(&self, fail: fn() -> Result<u64, String>) -> Result<u64, String> {
        if self.runs.fetch_add(1, Ordering::SeqCst) > 0 {
            return Ok(7);
        }
        self.started.store(true, Ordering::SeqCst);
        let end = Instant::now() + Duration::from_secs(20);
        while !self.release.load(Ordering::SeqCst) && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        fail()
    }
}

static ERR_GATE: Gate = Gate::new();
static PANIC_GATE: Gate = Gate::new();

#[cached(ttl = "1m", skip(gate, fail))]
async fn load_err(
    gate: &'static Gate,
    fail: fn() -> Result<u64, String>,
    _id: u64,
) -> Result<u64, String> {
    gate.body(fail).await
}

#[cached(ttl = "1m", skip(gate, fail))]
async fn load_panic(
    gate: &'static Gate,
    fail: fn() -> Result<u64, String>,
    _id: u64,
) -> Result<u64, String> {
    gate.body(fail).await
}

fn node(server: &RedisServer) -> Arc<RedisBackend> {
    Arc::new(
        common::builder(server)
            .distributed_lock(LOCK_TTL)
            .connect_blocking()
            .unwrap(),
    )
}

async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    common::eventually(what, Duration::from_secs(10), cond).await;
}

/// Node A leads and fails after node B started waiting; B must compute long before the lock
/// ttl.
async fn waiter_computes_at_once<F>(gate: &'static Gate, call: fn(Arc<dyn Backend>) -> F)
where
    F: std::future::Future<Output = Result<u64, String>> + Send + 'static,
{
    let Some(server) = common::server() else {
        return;
    };
    let (a, b) = (node(&server), node(&server));
    let leader = tokio::spawn(call(a.clone()));
    eventually("the leader's body to start", || {
        gate.started.load(Ordering::SeqCst)
    })
    .await;
    let follower = tokio::spawn(call(b.clone()));
    eventually("the follower to wait for the lock", || {
        b.redis_stats().lock_waits >= 1
    })
    .await;
    let failed_at = Instant::now();
    gate.release.store(true, Ordering::SeqCst);
    let led = leader.await;
    assert!(!matches!(led, Ok(Ok(_))), "the leader failed: {led:?}");
    let followed = follower.await.unwrap();
    let waited = failed_at.elapsed();
    assert_eq!(followed, Ok(7), "the follower computed its own value");
    assert!(
        waited < LOCK_TTL / 3,
        "the follower waited {waited:?} after the leader failed (lock ttl {LOCK_TTL:?})"
    );
    assert_eq!(gate.runs.load(Ordering::SeqCst), 2);
    let locks: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*:lock", a.prefix()))
        .query(&mut server.connection().unwrap())
        .unwrap();
    assert!(locks.is_empty(), "no lock left behind: {locks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_err_releases_the_lock() {
    waiter_computes_at_once(&ERR_GATE, |backend| {
        registry::with_backend(backend, load_err(&ERR_GATE, || Err("db down".into()), 1))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_releases_the_lock() {
    waiter_computes_at_once(&PANIC_GATE, |backend| {
        registry::with_backend(
            backend,
            load_panic(&PANIC_GATE, || panic!("the body panics"), 1),
        )
    })
    .await;
}
