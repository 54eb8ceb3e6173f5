//! `#[cached(batch(ids))]` on a real Redis: the lookups of a batch are one `MGET` (counted with
//! `MONITOR`), the body gets the misses only, per-item invalidation and leases across nodes,
//! absent items, single flight per item (in process, and across nodes with the distributed
//! lock). Each test starts its own redis-server; the bodies record the items they got.

#[path = "redis_common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::{cached, registry, Backend};
use test_support::RedisServer;

/// The item lists each body call received.
struct Calls(Mutex<Vec<Vec<u64>>>);

impl Calls {
    const fn new() -> Self {
        Calls(Mutex::new(Vec::new()))
    }
    fn record(&self, ids: &[u64]) {
        self.0.lock().unwrap().push(ids.to_vec());
    }
    fn take(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Tests sharing a cached fn (its recorder) run one at a time.
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

fn node(server: &RedisServer) -> Arc<dyn Backend> {
    Arc::new(common::connect(server))
}

/// The commands of `lines` (MONITOR lines) named `cmd`.
fn count(lines: &[String], cmd: &str) -> usize {
    let quoted = format!("\"{cmd}\"");
    lines
        .iter()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|c| c.eq_ignore_ascii_case(&quoted))
        })
        .count()
}

static USERS: Calls = Calls::new();

#[cached(ttl = "1h", batch(ids), depends_on = ["user:{ids}"])]
async fn users(ids: Vec<u64>) -> Result<HashMap<u64, String>, String> {
    USERS.record(&ids);
    Ok(ids
        .into_iter()
        .map(|id| (id, format!("user #{id}")))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_are_one_mget_and_the_body_gets_the_misses() {
    let Some(server) = common::server() else {
        return;
    };
    let _serial = serial().await;
    let a = node(&server);
    let mut monitor = common::Monitor::start(&server);
    registry::with_backend(a.clone(), async {
        USERS.take();
        users((0..90).collect()).await.unwrap();
        assert_eq!(USERS.take(), vec![(0..90).collect::<Vec<u64>>()]);
        monitor.take().await;

        // 100 ids, 90 of them cached
        let got = users((0..100).collect()).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(got[&42], "user #42");
        assert_eq!(USERS.take(), vec![(90..100).collect::<Vec<u64>>()]);
        let sent = monitor.take().await;
        if common::protocol() == 1 {
            assert_eq!(count(&sent, "mget"), 1, "the lookup is one MGET: {sent:#?}");
            assert_eq!(count(&sent, "get"), 0, "no per-item GET: {sent:#?}");
            assert_eq!(
                count(&sent, "evalsha") + count(&sent, "eval"),
                10,
                "one set per missing item"
            );
        } else {
            // protocol 2: the entries' GETs, then their versions'; per missing item its
            // versions checked (the item's and the fn's) and its set script
            assert_eq!(
                count(&sent, "evalsha") + count(&sent, "eval"),
                30,
                "one set per missing item: {sent:#?}"
            );
        }

        // all hits: reads only
        assert_eq!(users((0..100).collect()).await.unwrap().len(), 100);
        assert!(USERS.take().is_empty());
        let sent = monitor.take().await;
        if common::protocol() == 1 {
            assert_eq!(count(&sent, "mget"), 1, "{sent:#?}");
            assert_eq!(sent.len(), 1, "nothing but the MGET: {sent:#?}");
        } else {
            assert_eq!(count(&sent, "get"), sent.len(), "reads only: {sent:#?}");
        }
    })
    .await;
    // another node reads the same entries
    let b = node(&server);
    registry::with_backend(b, async {
        assert_eq!(users((0..100).collect()).await.unwrap().len(), 100);
        assert!(USERS.take().is_empty(), "node B hits every item");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_one_item_dependency_on_another_node_drops_that_item_only() {
    let Some(server) = common::server() else {
        return;
    };
    let _serial = serial().await;
    let (a, b) = (node(&server), node(&server));
    registry::with_backend(a.clone(), users((0..10).collect()))
        .await
        .unwrap();
    USERS.take();
    b.invalidate("user:7").await.unwrap();
    registry::with_backend(a.clone(), async {
        assert_eq!(users((0..10).collect()).await.unwrap().len(), 10);
        assert_eq!(USERS.take(), vec![vec![7]]);
        users_invalidate(&[1, 2]).await.unwrap();
    })
    .await;
    registry::with_backend(b.clone(), async {
        assert_eq!(users((0..10).collect()).await.unwrap().len(), 10);
        assert_eq!(
            USERS.take(),
            vec![vec![1, 2]],
            "node B sees node A's removal"
        );
    })
    .await;
}

static SPARSE: Calls = Calls::new();

#[cached(batch(ids))]
fn sparse(ids: Vec<u64>) -> HashMap<u64, u64> {
    SPARSE.record(&ids);
    ids.into_iter()
        .filter(|i| i % 2 == 0)
        .map(|i| (i, i))
        .collect()
}

static SPARSE_NONE: Calls = Calls::new();

#[cached(batch(ids), cache_none = false)]
fn sparse_none(ids: Vec<u64>) -> HashMap<u64, u64> {
    SPARSE_NONE.record(&ids);
    ids.into_iter()
        .filter(|i| i % 2 == 0)
        .map(|i| (i, i))
        .collect()
}

#[test]
fn absent_items_are_cached_unless_cache_none_is_false() {
    let Some(server) = common::server() else {
        return;
    };
    registry::with_backend_blocking(node(&server), || {
        assert_eq!(sparse(vec![1, 2, 3, 4]).len(), 2);
        assert_eq!(sparse(vec![1, 2, 3, 4]).len(), 2);
        assert_eq!(SPARSE.take(), vec![vec![1, 2, 3, 4]]);
        assert_eq!(sparse_entry(3).get_blocking(), Some(None));
        sparse_none(vec![1, 2, 3, 4]);
        sparse_none(vec![1, 2, 3, 4]);
        assert_eq!(SPARSE_NONE.take(), vec![vec![1, 2, 3, 4], vec![1, 3]]);
    });
}

static RACE: Calls = Calls::new();
static RACE_GATE: AtomicBool = AtomicBool::new(false);
static RACE_STARTED: AtomicBool = AtomicBool::new(false);

#[cached(batch(ids), depends_on = ["item:{ids}"])]
async fn racing(ids: Vec<u64>) -> HashMap<u64, u64> {
    RACE.record(&ids);
    RACE_STARTED.store(true, Ordering::SeqCst);
    common::eventually("the gate", Duration::from_secs(10), || {
        RACE_GATE.load(Ordering::SeqCst)
    })
    .await;
    ids.into_iter().map(|id| (id, id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_an_invalidation_on_another_node_does_not_land_for_that_item() {
    let Some(server) = common::server() else {
        return;
    };
    let (a, b) = (node(&server), node(&server));
    let fill = tokio::spawn(registry::with_backend(a.clone(), racing(vec![5, 6, 7])));
    common::eventually("the fill to start", Duration::from_secs(10), || {
        RACE_STARTED.load(Ordering::SeqCst)
    })
    .await;
    b.invalidate("item:7").await.unwrap();
    RACE_GATE.store(true, Ordering::SeqCst);
    assert_eq!(fill.await.unwrap().len(), 3, "the caller gets every value");
    registry::with_backend(b, async {
        assert_eq!(racing_entry(5).get().await, Some(Some(5)));
        assert_eq!(racing_entry(6).get().await, Some(Some(6)));
        assert_eq!(
            racing_entry(7).get().await,
            None,
            "the raced item is not stored"
        );
    })
    .await;
}

static SHARED: Calls = Calls::new();
static SHARED_GATE: AtomicBool = AtomicBool::new(false);

#[cached(batch(ids))]
async fn shared(ids: Vec<u64>) -> HashMap<u64, u64> {
    SHARED.record(&ids);
    common::eventually("the gate", Duration::from_secs(10), || {
        SHARED_GATE.load(Ordering::SeqCst)
    })
    .await;
    ids.into_iter().map(|id| (id, id + 1)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_batches_on_two_nodes_compute_each_item_once() {
    let Some(server) = common::server() else {
        return;
    };
    // two nodes of one fleet: the distributed lock makes single flight per item fleet-wide
    let lock = |s: &RedisServer| {
        common::builder(s)
            .distributed_lock(Duration::from_secs(10))
            .connect_blocking()
            .unwrap()
    };
    let (a, b) = (lock(&server), lock(&server));
    let first = tokio::spawn(registry::with_backend(
        Arc::new(a.clone()),
        shared((0..60).collect()),
    ));
    common::eventually(
        "the first batch to compute",
        Duration::from_secs(10),
        || !SHARED.0.lock().unwrap().is_empty(),
    )
    .await;
    let second = tokio::spawn(registry::with_backend(
        Arc::new(b.clone()),
        shared((30..100).collect()),
    ));
    // the second node waits for the 30 items whose locks the first one holds
    common::eventually("the second node to wait", Duration::from_secs(10), || {
        b.redis_stats().lock_waits > 0
    })
    .await;
    SHARED_GATE.store(true, Ordering::SeqCst);
    let (x, y) = (first.await.unwrap(), second.await.unwrap());
    assert_eq!((x.len(), y.len()), (60, 70));
    assert!(y.iter().all(|(k, v)| *v == k + 1));
    assert_eq!(
        SHARED.take(),
        vec![(0..60).collect::<Vec<u64>>(), (60..100).collect()],
        "each item computed once, across the two nodes"
    );
}

static TIERED: Calls = Calls::new();

#[cached(batch(ids), depends_on = ["row:{ids}"])]
fn tiered(ids: Vec<u64>) -> HashMap<u64, u64> {
    TIERED.record(&ids);
    ids.into_iter().map(|id| (id, id * 2)).collect()
}

#[test]
fn layered_nodes_serve_batches_from_l1_and_share_invalidations() {
    use cache_redis::{Coherence, LayeredBackend};
    let Some(server) = common::server() else {
        return;
    };
    let layered = || {
        let b = LayeredBackend::builder(common::connect(&server))
            .coherence(Coherence::Tracking(cache_redis::TrackingMode::Default))
            .build()
            .unwrap();
        assert!(b.wait_coherent(Duration::from_secs(5)));
        Arc::new(b)
    };
    let (a, b) = (layered(), layered());
    registry::with_backend_blocking(a.clone(), || tiered((0..20).collect()));
    assert_eq!(TIERED.take(), vec![(0..20).collect::<Vec<u64>>()]);
    // node B: L1 misses, one MGET; then L1 hits
    registry::with_backend_blocking(b.clone(), || {
        assert_eq!(tiered((0..20).collect()).len(), 20);
        assert!(TIERED.take().is_empty(), "node B reads node A's entries");
        let mut monitor = common::Monitor::start(&server);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(monitor.take());
        assert_eq!(tiered((0..20).collect()).len(), 20);
        let sent = rt.block_on(monitor.take());
        assert!(sent.is_empty(), "all 20 items from node B's L1: {sent:#?}");
    });
    // an item dependency invalidated on node A drops that item on node B
    registry::with_backend_blocking(a.clone(), || {
        cache_core::invalidate_dependency_blocking("row:3").unwrap();
    });
    let mut asked = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while asked.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "node B never dropped item 3"
        );
        registry::with_backend_blocking(b.clone(), || tiered((0..20).collect()));
        asked = TIERED.take();
        if asked.is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(asked, vec![vec![3]]);
}
