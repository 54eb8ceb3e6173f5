//! `stale_while_revalidate`, `stale_if_error`, `timeout` on a real Redis, two nodes (two
//! backends on one server): the physical TTL covers the stale window and the envelope carries
//! the fresh-until time. Real time here (Redis expires keys by its clock): an entry is known to
//! be stale when the entry handle, which reads fresh values only, stops finding it. Bodies are
//! held at gates, so "the caller did not wait" is shown by the caller returning while the body
//! is held.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{cached, registry, Backend};
use test_support::RedisServer;

const DEADLINE: Duration = Duration::from_secs(10);

struct Gate(AtomicBool);

impl Gate {
    const fn open() -> Self {
        Gate(AtomicBool::new(true))
    }
    fn set(&self, open: bool) {
        self.0.store(open, Ordering::SeqCst);
    }
    async fn pass(&self) {
        common::eventually("the gate to open", DEADLINE, || {
            self.0.load(Ordering::SeqCst)
        })
        .await;
    }
}

fn node(server: &RedisServer) -> Arc<dyn Backend> {
    Arc::new(common::connect(server))
}

static SWR_RUNS: AtomicU64 = AtomicU64::new(0);
static SWR_GATE: Gate = Gate::open();

#[cached(ttl = "300ms", stale_while_revalidate = "1m", depends_on = ["swr:{id}"])]
async fn swr(id: u64) -> u64 {
    let n = SWR_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    SWR_GATE.pass().await;
    id * 100 + n
}

/// Waits (at most 20 s) until `fresh` says an entry is no longer fresh (it may still be
/// stale: the entry handle reads fresh values only).
async fn until_not_fresh<F: std::future::Future<Output = bool>>(mut fresh: impl FnMut() -> F) {
    for _ in 0..1000 {
        if !fresh().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the entry never stopped being fresh");
}

async fn until_stale(id: u64) {
    until_not_fresh(|| async move { swr_entry(id).get().await.is_some() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_on_two_nodes() {
    let Some(server) = common::server() else {
        return;
    };
    let (a, b) = (node(&server), node(&server));
    registry::with_backend(a.clone(), async {
        assert_eq!(swr(1).await, 101);
        until_stale(1).await;
        // 100 concurrent callers on node A while the body is held: all get the stale value
        SWR_GATE.set(false);
        let got = futures_util::future::join_all((0..100).map(|_| swr(1))).await;
        assert!(got.iter().all(|v| *v == 101), "{got:?}");
        SWR_GATE.set(true);
        common::eventually("the refresh to land", DEADLINE, || {
            SWR_RUNS.load(Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(swr_cache().stats().refreshes, 1);
    })
    .await;
    // node B reads the refreshed value from Redis
    registry::with_backend(b.clone(), async {
        let mut v = 0;
        for _ in 0..500 {
            v = swr(1).await;
            if v == 102 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(v, 102);
    })
    .await;
    // an invalidation (from node B) wins over staleness: node A computes, never serves 102
    registry::with_backend(a.clone(), until_stale(1)).await;
    b.invalidate("swr:1").await.unwrap();
    let runs = SWR_RUNS.load(Ordering::SeqCst);
    assert_eq!(
        registry::with_backend(a.clone(), swr(1)).await,
        100 + runs + 1
    );

    // a refresh that began before an invalidation does not land
    registry::with_backend(a.clone(), until_stale(1)).await;
    SWR_GATE.set(false);
    let stale = registry::with_backend(a.clone(), swr(1)).await;
    assert_eq!(stale, 100 + runs + 1, "stale while the refresh is held");
    common::eventually("the refresh to start", DEADLINE, || {
        SWR_RUNS.load(Ordering::SeqCst) == runs + 2
    })
    .await;
    b.invalidate("swr:1").await.unwrap();
    SWR_GATE.set(true);
    common::eventually("the refresh to be rejected", DEADLINE, || {
        swr_cache().stats().stale_rejected == 1
    })
    .await;
    registry::with_backend(b, async {
        assert_eq!(
            swr_entry(1).get().await,
            None,
            "the raced refresh did not land"
        );
    })
    .await;
}

static SIE_FAIL: AtomicBool = AtomicBool::new(false);
static SIE_GATE: Gate = Gate::open();
static SIE_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "300ms", stale_if_error = "1m", timeout = "100ms")]
async fn sie(id: u64) -> Result<u64, String> {
    let n = SIE_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    SIE_GATE.pass().await;
    if SIE_FAIL.load(Ordering::SeqCst) {
        return Err("source down".into());
    }
    Ok(id * 100 + n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_and_timeout_on_redis() {
    let Some(server) = common::server() else {
        return;
    };
    let a = node(&server);
    registry::with_backend(a, async {
        assert_eq!(sie(2).await, Ok(201));
        until_not_fresh(|| async { sie_entry(2).get().await.is_some() }).await;
        SIE_FAIL.store(true, Ordering::SeqCst);
        assert_eq!(sie(2).await, Ok(201), "the stale value in place of the Err");
        assert_eq!(sie_cache().stats().stale_if_error_served, 1);
        SIE_FAIL.store(false, Ordering::SeqCst);
        // a body slower than the timeout: the stale value now, the late result later
        SIE_GATE.set(false);
        assert_eq!(sie(2).await, Ok(201), "the stale value after the timeout");
        assert_eq!(sie_cache().stats().timeouts, 1);
        SIE_GATE.set(true);
        let runs = SIE_RUNS.load(Ordering::SeqCst);
        for _ in 0..500 {
            if sie_entry(2).get().await == Some(200 + runs) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            sie_entry(2).get().await,
            Some(200 + runs),
            "the late result landed"
        );
    })
    .await;
}

static AHEAD_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "600ms", refresh_ahead = "400ms")]
async fn ahead(id: u64) -> u64 {
    id * 100 + AHEAD_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_on_redis_keeps_a_key_read_continuously_from_missing() {
    let Some(server) = common::server() else {
        return;
    };
    registry::with_backend(node(&server), async {
        ahead(3).await;
        // read for six ttls: every call is served from Redis (fresh or inside the last 400 ms,
        // with a refresh), none waits for a miss
        let end = std::time::Instant::now() + Duration::from_millis(3600);
        let mut calls = 0u64;
        while std::time::Instant::now() < end {
            ahead(3).await;
            calls += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = ahead_cache().stats();
        assert!(s.refreshes >= 4, "refreshed ahead of expiry: {s:?}");
        // hits count the stale ones too; the misses are the first call's and the refreshes'
        assert_eq!(s.hits, calls, "every foreground call was a hit: {s:?}");
        assert_eq!(
            AHEAD_RUNS.load(Ordering::SeqCst),
            1 + s.refreshes,
            "the body ran only for the first fill and the refreshes"
        );
    })
    .await;
}

static LAYERED_FAIL: AtomicBool = AtomicBool::new(false);
static LAYERED_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "300ms", stale_if_error = "1m")]
async fn layered_row(id: u64) -> Result<u64, String> {
    let n = LAYERED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if LAYERED_FAIL.load(Ordering::SeqCst) {
        return Err("down".into());
    }
    Ok(id * 100 + n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layered_node_serves_the_stale_value_from_redis_never_from_l1() {
    use cache_redis::{Coherence, LayeredBackend, TrackingMode};
    let Some(server) = common::server() else {
        return;
    };
    let layered = LayeredBackend::builder(common::connect(&server))
        .coherence(Coherence::Tracking(TrackingMode::Default))
        .build()
        .unwrap();
    assert!(layered.wait_coherent(DEADLINE));
    registry::with_backend(Arc::new(layered), async {
        assert_eq!(layered_row(4).await, Ok(401));
        assert_eq!(layered_row(4).await, Ok(401), "an L1 hit");
        // no longer fresh, in L1 or L2
        until_not_fresh(|| async { layered_row_entry(4).get().await.is_some() }).await;
        LAYERED_FAIL.store(true, Ordering::SeqCst);
        assert_eq!(
            layered_row(4).await,
            Ok(401),
            "the stale value from L2 in place of the Err"
        );
        assert_eq!(LAYERED_RUNS.load(Ordering::SeqCst), 2);
        LAYERED_FAIL.store(false, Ordering::SeqCst);
        assert_eq!(layered_row(4).await, Ok(403));
    })
    .await;
}

static BRIEF_FAIL: AtomicBool = AtomicBool::new(false);

#[cached(ttl = "200ms", stale_if_error = "400ms")]
async fn brief(id: u64) -> Result<u64, String> {
    if BRIEF_FAIL.load(Ordering::SeqCst) {
        return Err("down".into());
    }
    Ok(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_on_redis_ends_with_its_window() {
    let Some(server) = common::server() else {
        return;
    };
    registry::with_backend(node(&server), async {
        assert_eq!(brief(9).await, Ok(9));
        until_not_fresh(|| async { brief_entry(9).get().await.is_some() }).await;
        BRIEF_FAIL.store(true, Ordering::SeqCst);
        assert_eq!(brief(9).await, Ok(9), "stale in place of the Err");
        // once Redis has expired the key (ttl + window), the Err comes through
        let mut last = Ok(9);
        for _ in 0..500 {
            last = brief(9).await;
            if last.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(last, Err("down".to_string()));
    })
    .await;
}

static FLEET_RUNS: AtomicU64 = AtomicU64::new(0);
static FLEET_GATE: Gate = Gate::open();

async fn fleet_body(id: u64) -> u64 {
    let n = FLEET_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    FLEET_GATE.pass().await;
    id * 100 + n
}

// Two nodes of one fleet in one process: two fns with one custom key share the Redis entry but
// not their in-process flights, as two processes would.
#[cached(key = "fleet:{id}", ttl = "300ms", stale_while_revalidate = "1m")]
async fn fleet_a(id: u64) -> u64 {
    fleet_body(id).await
}

#[cached(key = "fleet:{id}", ttl = "300ms", stale_while_revalidate = "1m")]
async fn fleet_b(id: u64) -> u64 {
    fleet_body(id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_distributed_lock_one_node_of_the_fleet_refreshes() {
    let Some(server) = common::server() else {
        return;
    };
    let lock = |s: &RedisServer| -> Arc<dyn Backend> {
        Arc::new(
            common::builder(s)
                .distributed_lock(Duration::from_secs(10))
                .connect_blocking()
                .unwrap(),
        )
    };
    let (a, b) = (lock(&server), lock(&server));
    assert_eq!(registry::with_backend(a.clone(), fleet_a(7)).await, 701);
    registry::with_backend(
        a.clone(),
        until_not_fresh(|| async { fleet_a_entry(7).get().await.is_some() }),
    )
    .await;
    FLEET_GATE.set(false);
    // node A serves the stale value and its refresh takes the key's lock (the body is held)
    assert_eq!(registry::with_backend(a.clone(), fleet_a(7)).await, 701);
    common::eventually("node A's refresh to run the body", DEADLINE, || {
        FLEET_RUNS.load(Ordering::SeqCst) == 2
    })
    .await;
    // node B serves the stale value too; its refresh finds the lock taken and ends without
    // running the body (which is still held: a refresh in it would not end)
    assert_eq!(registry::with_backend(b.clone(), fleet_b(7)).await, 701);
    assert_eq!(fleet_b_cache().stats().refreshes, 1);
    common::eventually("node B's refresh to end", DEADLINE, || {
        __cache_core_fleet_b().refreshes_running() == 0
    })
    .await;
    assert_eq!(
        FLEET_RUNS.load(Ordering::SeqCst),
        2,
        "one body run for the fleet"
    );
    FLEET_GATE.set(true);
    registry::with_backend(b, async {
        for _ in 0..500 {
            if fleet_b_entry(7).get().await == Some(702) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("node A's refresh never landed");
    })
    .await;
}
