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

/// Waits until the entry of `swr(id)` is no longer fresh (it may still be stale).
async fn until_stale(id: u64) {
    for _ in 0..1000 {
        if swr_entry(id).get().await.is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the entry never went stale");
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
        let stale = || async {
            for _ in 0..1000 {
                if sie_entry(2).get().await.is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!("never stale");
        };
        stale().await;
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
