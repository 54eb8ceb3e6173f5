//! `#[cached(batch(ids))]` on the memory backend: one entry per item, the body called once with
//! the items that missed, single flight per item, per-item dependencies and leases, absent
//! items, companions. Each test uses its own fresh `MemoryBackend` through a scoped override;
//! the bodies record the items they were called with.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::{cached, invalidates, registry, MemoryBackend};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

/// Waits for `cond` with a deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The item lists each body call received.
#[derive(Default)]
struct Calls(Mutex<Vec<Vec<u64>>>);

impl Calls {
    fn record(&self, ids: &[u64]) {
        self.0.lock().unwrap().push(ids.to_vec());
    }
    fn take(&self) -> Vec<Vec<u64>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// Tests that call `names` (its recorder and counters are shared) run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn user(id: u64) -> String {
    format!("user #{id}")
}

// ---------- the body gets the misses only ----------

static NAMES: Calls = Calls(Mutex::new(Vec::new()));

#[cached(ttl = "1h", batch(ids), depends_on = ["user:{ids}"])]
fn names(ids: Vec<u64>) -> HashMap<u64, String> {
    NAMES.record(&ids);
    ids.into_iter().map(|id| (id, user(id))).collect()
}

#[test]
fn the_body_gets_only_the_missing_items_in_caller_order() {
    let _serial = serial();
    registry::with_backend_blocking(mem(), || {
        NAMES.take();
        names_cache().reset_stats();
        let first: Vec<u64> = (0..90).collect();
        assert_eq!(names(first.clone()).len(), 90);
        assert_eq!(NAMES.take(), vec![first]);
        // 100 ids of which 90 are cached, asked in a shuffled order with duplicates
        let mut ids: Vec<u64> = (0..100).rev().collect();
        ids.push(95);
        ids.push(3);
        let got = names(ids);
        assert_eq!(got.len(), 100);
        assert!((0..100).all(|id| got[&id] == user(id)));
        assert_eq!(
            NAMES.take(),
            vec![(90..100).rev().collect::<Vec<u64>>()],
            "one call, with the 10 missing ids, deduplicated, in the caller's order"
        );
        // all hits: the body is not called
        assert_eq!(names((0..100).collect()).len(), 100);
        assert!(NAMES.take().is_empty());
        let s = names_cache().stats();
        assert_eq!((s.hits, s.misses, s.fills), (190, 100, 100));
    });
}

#[test]
fn invalidating_a_dependency_drops_that_item_only() {
    let _serial = serial();
    registry::with_backend_blocking(mem(), || {
        names((0..10).collect());
        NAMES.take();
        cache_core::invalidate_dependency_blocking("user:7").unwrap();
        assert_eq!(names((0..10).collect()).len(), 10);
        assert_eq!(NAMES.take(), vec![vec![7]]);
        // the companions: per item
        names_invalidate(&[2, 3]).unwrap();
        names((0..10).collect());
        assert_eq!(NAMES.take(), vec![vec![2, 3]]);
        assert_eq!(names_entry(4).get_blocking(), Some(Some(user(4))));
        assert_eq!(names_entry(40).get_blocking(), None);
        names_invalidate_all().unwrap();
        names((0..3).collect());
        assert_eq!(NAMES.take(), vec![vec![0, 1, 2]]);
    });
}

#[invalidates(names([id]))]
fn rename(id: u64) {
    let _ = id;
}

#[test]
fn invalidates_takes_the_items_of_a_batch_fn() {
    let _serial = serial();
    registry::with_backend_blocking(mem(), || {
        names((0..5).collect());
        NAMES.take();
        rename(4);
        names((0..5).collect());
        assert_eq!(NAMES.take(), vec![vec![4]]);
    });
}

// ---------- absent items ----------

static SPARSE: Calls = Calls(Mutex::new(Vec::new()));

/// Only even ids exist.
#[cached(batch(ids))]
fn sparse(ids: &[u64]) -> BTreeMap<u64, String> {
    SPARSE.record(ids);
    ids.iter()
        .filter(|id| *id % 2 == 0)
        .map(|&id| (id, user(id)))
        .collect()
}

static SPARSE_NONE: Calls = Calls(Mutex::new(Vec::new()));

#[cached(batch(ids), cache_none = false)]
fn sparse_uncached_absent(ids: &[u64]) -> BTreeMap<u64, String> {
    SPARSE_NONE.record(ids);
    ids.iter()
        .filter(|id| *id % 2 == 0)
        .map(|&id| (id, user(id)))
        .collect()
}

#[test]
fn absent_items_are_cached_unless_cache_none_is_false() {
    registry::with_backend_blocking(mem(), || {
        let got = sparse(&[1, 2, 3, 4]);
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(sparse(&[1, 2, 3, 4]), got);
        assert_eq!(
            SPARSE.take(),
            vec![vec![1, 2, 3, 4]],
            "absent items are cached"
        );
        assert_eq!(sparse_entry(3).get_blocking(), Some(None));

        sparse_uncached_absent(&[1, 2, 3, 4]);
        let again = sparse_uncached_absent(&[1, 2, 3, 4]);
        assert_eq!(again.keys().copied().collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(
            SPARSE_NONE.take(),
            vec![vec![1, 2, 3, 4], vec![1, 3]],
            "with cache_none = false the absent items are asked again"
        );
    });
}

// ---------- errors ----------

static FLAKY: Calls = Calls(Mutex::new(Vec::new()));
static FAIL: AtomicBool = AtomicBool::new(false);

#[cached(batch(ids))]
fn flaky(tenant: String, ids: Vec<u64>) -> Result<HashMap<u64, String>, String> {
    FLAKY.record(&ids);
    if FAIL.load(Ordering::SeqCst) {
        return Err("database down".into());
    }
    Ok(ids
        .into_iter()
        .map(|id| (id, format!("{tenant}/{id}")))
        .collect())
}

#[test]
fn an_err_is_returned_and_nothing_is_stored() {
    registry::with_backend_blocking(mem(), || {
        flaky("a".into(), vec![1]).unwrap();
        FAIL.store(true, Ordering::SeqCst);
        assert_eq!(
            flaky("a".into(), vec![1, 2, 3]),
            Err("database down".to_string())
        );
        FAIL.store(false, Ordering::SeqCst);
        let got = flaky("a".into(), vec![1, 2, 3]).unwrap();
        assert_eq!(got[&3], "a/3");
        assert_eq!(FLAKY.take(), vec![vec![1], vec![2, 3], vec![2, 3]]);
        // the other key arguments are part of each item's key
        assert_eq!(flaky("b".into(), vec![1]).unwrap()[&1], "b/1");
        assert_eq!(FLAKY.take(), vec![vec![1]]);
        assert!(flaky_entry("a".into(), 1).get_blocking().is_some());
        assert!(flaky_entry("c".into(), 1).get_blocking().is_none());
    });
}

// ---------- single flight per item ----------

static SLOW: Calls = Calls(Mutex::new(Vec::new()));
static SLOW_GATE: AtomicBool = AtomicBool::new(false);
static SLOW_STARTED: AtomicBool = AtomicBool::new(false);

#[cached(batch(ids))]
fn slow(ids: Vec<u64>) -> HashMap<u64, u64> {
    SLOW.record(&ids);
    SLOW_STARTED.store(true, Ordering::SeqCst);
    wait_until("the gate", || SLOW_GATE.load(Ordering::SeqCst));
    ids.into_iter().map(|id| (id, id * 10)).collect()
}

#[test]
fn overlapping_batches_compute_each_item_once() {
    let backend = mem();
    let b1 = backend.clone();
    let first =
        std::thread::spawn(move || registry::with_backend_blocking(b1, || slow((0..60).collect())));
    wait_until("the first batch to compute", || {
        SLOW_STARTED.load(Ordering::SeqCst)
    });
    let b2 = backend.clone();
    let second = std::thread::spawn(move || {
        registry::with_backend_blocking(b2, || slow((30..100).collect()))
    });
    // the second batch joined all its items at once and waits for those the first computes
    wait_until("the second batch to wait", || {
        __cache_core_slow().waiting_callers() > 0
    });
    SLOW_GATE.store(true, Ordering::SeqCst);
    let a = first.join().unwrap();
    let b = second.join().unwrap();
    assert_eq!(a.len(), 60);
    assert_eq!(b.len(), 70);
    assert!(b.iter().all(|(k, v)| *v == k * 10));
    assert_eq!(
        SLOW.take(),
        vec![(0..60).collect::<Vec<u64>>(), (60..100).collect()],
        "each item computed once"
    );
    assert_eq!(slow_cache().stats().coalesced, 30);
}

// ---------- leases per item ----------

static RACE: Calls = Calls(Mutex::new(Vec::new()));
static RACE_GATE: AtomicBool = AtomicBool::new(false);
static RACE_STARTED: AtomicBool = AtomicBool::new(false);

#[cached(batch(ids), depends_on = ["user:{ids}"])]
fn racing(ids: Vec<u64>) -> HashMap<u64, u64> {
    RACE.record(&ids);
    RACE_STARTED.store(true, Ordering::SeqCst);
    wait_until("the gate", || RACE_GATE.load(Ordering::SeqCst));
    ids.into_iter().map(|id| (id, id)).collect()
}

#[test]
fn a_fill_racing_an_item_invalidation_does_not_land_for_that_item() {
    let backend = mem();
    let b1 = backend.clone();
    let fill =
        std::thread::spawn(move || registry::with_backend_blocking(b1, || racing(vec![5, 6, 7])));
    wait_until("the fill to start", || RACE_STARTED.load(Ordering::SeqCst));
    registry::with_backend_blocking(backend.clone(), || {
        cache_core::invalidate_dependency_blocking("user:7").unwrap();
    });
    RACE_GATE.store(true, Ordering::SeqCst);
    assert_eq!(
        fill.join().unwrap().len(),
        3,
        "the caller still gets every value"
    );
    registry::with_backend_blocking(backend, || {
        assert_eq!(racing_entry(5).get_blocking(), Some(Some(5)));
        assert_eq!(racing_entry(6).get_blocking(), Some(Some(6)));
        assert_eq!(
            racing_entry(7).get_blocking(),
            None,
            "the raced item is not stored"
        );
        assert_eq!(racing_cache().stats().stale_rejected, 1);
    });
}

// ---------- async ----------

static ASYNC: Calls = Calls(Mutex::new(Vec::new()));

struct Db;

#[cached(batch(ids), skip(db), depends_on = ["user:{ids}"])]
async fn get_users(
    db: &Db,
    ids: std::collections::HashSet<u64>,
) -> Result<HashMap<u64, String>, String> {
    let _ = db;
    let mut v: Vec<u64> = ids.iter().copied().collect();
    v.sort_unstable();
    ASYNC.record(&v);
    tokio::task::yield_now().await;
    Ok(ids.into_iter().map(|id| (id, user(id))).collect())
}

#[tokio::test]
async fn async_batches_work_the_same_way() {
    registry::with_backend(mem(), async {
        let db = Db;
        get_users(&db, (0..90).collect()).await.unwrap();
        ASYNC.take();
        let got = get_users(&db, (0..100).collect()).await.unwrap();
        assert_eq!(got.len(), 100);
        assert_eq!(ASYNC.take(), vec![(90..100).collect::<Vec<u64>>()]);
        get_users_invalidate(&[7]).await.unwrap();
        get_users(&db, (0..100).collect()).await.unwrap();
        assert_eq!(ASYNC.take(), vec![vec![7]]);
        let refreshed = get_users_refresh(&db, [1, 2].into_iter().collect())
            .await
            .unwrap();
        assert_eq!(refreshed.len(), 2);
        assert_eq!(ASYNC.take(), vec![vec![1, 2]]);
    })
    .await;
}

// ---------- nested: a batch inside a cached fn's body ----------

static PAGE_RUNS: Calls = Calls(Mutex::new(Vec::new()));

#[cached]
fn page(n: u64) -> Vec<String> {
    PAGE_RUNS.record(&[n]);
    let mut v: Vec<String> = names((n..n + 3).collect()).into_values().collect();
    v.sort();
    v
}

#[test]
fn a_batch_called_by_a_cached_fn_is_its_dependency() {
    let _serial = serial();
    registry::with_backend_blocking(mem(), || {
        page(100);
        page(100);
        assert_eq!(PAGE_RUNS.take(), vec![vec![100]]);
        names_invalidate(&[101]).unwrap();
        page(100);
        assert_eq!(
            PAGE_RUNS.take(),
            vec![vec![100]],
            "the page depended on item 101"
        );
        NAMES.take();
    });
}
