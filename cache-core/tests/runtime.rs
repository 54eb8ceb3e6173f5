//! The runtime behind `#[cached]`, exercised through hand-written expansions (what the macro
//! generates), so these tests pin the runtime's own rules: single flight, leases, dependencies,
//! fail-open, scoped overrides.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::__private::{Begin, CallInfo, FnCache, FnMeta, Mode};
use cache_core::backend::BoxFuture;
use cache_core::value::SharedValue;
use cache_core::{
    registry, Backend, BackendStats, CacheError, EntryOptions, Key, Lease, Lookup, MemoryBackend,
    SetOutcome,
};

const fn meta(name: &'static str) -> FnMeta {
    FnMeta {
        module: module_path!(),
        name,
        version: 0,
        ttl: None,
        sliding: None,
        jitter: None,
        profile: None,
        cache_none: true,
        lock: true,
        custom_key: false,
        resilience: cache_core::runtime::Resilience::NONE,
        weight: None,
        local: false,
    }
}

fn mem() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

/// Waits for `cond` with a deadline (no sleep-and-hope).
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn wait_until_blocking(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------- single flight ----------

static SF: FnCache = FnCache::new(meta("single_flight"));
static SF_RUNS: AtomicUsize = AtomicUsize::new(0);

async fn single_flight(x: u64, gate: Arc<tokio::sync::Semaphore>) -> u64 {
    match SF
        .begin_async::<_, u64>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal)
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(
                async move {
                    SF_RUNS.fetch_add(1, Ordering::SeqCst);
                    let _permit = gate.acquire().await.expect("gate open");
                    x * 2
                },
                |r| Some(*r),
            )
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_misses_compute_once() {
    registry::with_backend(mem(), async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..1000 {
            let gate = gate.clone();
            tasks.push(tokio::spawn(registry::with_backend(
                registry::current_backend(None),
                single_flight(21, gate),
            )));
        }
        // the leader is inside the body; let every other caller queue up behind it
        wait_until("the leader to start", || {
            SF_RUNS.load(Ordering::SeqCst) == 1
        })
        .await;
        wait_until("999 followers", || SF.waiting_callers() == 999).await;
        gate.add_permits(1);
        for t in tasks {
            assert_eq!(t.await.unwrap(), 42);
        }
        assert_eq!(SF_RUNS.load(Ordering::SeqCst), 1, "exactly one computation");
        let s = SF.stats();
        assert_eq!(s.coalesced, 999);
    })
    .await;
}

// ---------- a panicking / cancelled leader ----------

static PANICKY: FnCache = FnCache::new(meta("panicky"));
static PANICKY_RUNS: AtomicUsize = AtomicUsize::new(0);

fn panicky(x: u64, gate: &std::sync::Barrier, should_panic: bool) -> u64 {
    match PANICKY.begin_blocking::<_, u64>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal) {
        Begin::Hit(v) => v,
        Begin::Fill(f) => f.fill_blocking(
            || {
                PANICKY_RUNS.fetch_add(1, Ordering::SeqCst);
                if should_panic {
                    gate.wait();
                    panic!("leader fails");
                }
                x + 1
            },
            |r| Some(*r),
        ),
    }
}

#[test]
fn panicking_leader_does_not_strand_followers() {
    let backend = mem();
    let gate = Arc::new(std::sync::Barrier::new(2));
    let (b1, g1) = (backend.clone(), gate.clone());
    let leader = std::thread::spawn(move || {
        registry::with_backend_blocking(b1, || panicky(1, &g1, true));
    });
    wait_until_blocking("the leader to start", || {
        PANICKY_RUNS.load(Ordering::SeqCst) == 1
    });
    let (b2, g2) = (backend.clone(), gate.clone());
    let follower =
        std::thread::spawn(move || registry::with_backend_blocking(b2, || panicky(1, &g2, false)));
    wait_until_blocking("the follower to wait", || PANICKY.waiting_callers() == 1);
    gate.wait(); // let the leader panic
    assert!(leader.join().is_err(), "the leader panicked");
    assert_eq!(
        follower.join().unwrap(),
        2,
        "the follower computed by itself"
    );
    assert_eq!(PANICKY_RUNS.load(Ordering::SeqCst), 2);
}

static CANCELLED: FnCache = FnCache::new(meta("cancelled"));
static CANCELLED_RUNS: AtomicUsize = AtomicUsize::new(0);

async fn cancellable(x: u64, hang: bool) -> u64 {
    match CANCELLED
        .begin_async::<_, u64>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal)
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(
                async move {
                    CANCELLED_RUNS.fetch_add(1, Ordering::SeqCst);
                    if hang {
                        std::future::pending::<()>().await;
                    }
                    x + 100
                },
                |r| Some(*r),
            )
            .await
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_leader_does_not_strand_followers() {
    let backend = mem();
    let leader = tokio::spawn(registry::with_backend(
        backend.clone(),
        cancellable(5, true),
    ));
    wait_until("the leader to start", || {
        CANCELLED_RUNS.load(Ordering::SeqCst) == 1
    })
    .await;
    let follower = tokio::spawn(registry::with_backend(
        backend.clone(),
        cancellable(5, false),
    ));
    wait_until("the follower to wait", || CANCELLED.waiting_callers() == 1).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    assert_eq!(follower.await.unwrap(), 105);
    assert_eq!(CANCELLED_RUNS.load(Ordering::SeqCst), 2);
}

// ---------- leases: no stale set ----------

static LEASED: FnCache = FnCache::new(meta("leased"));
static LEASED_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Reads "the database" (`db`) with a pause point inside the body.
async fn leased(
    id: u64,
    db: Arc<AtomicUsize>,
    pause: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    )>,
) -> usize {
    let mut deps = |d: &mut Vec<String>| d.push(format!("row:{id}"));
    match LEASED
        .begin_async::<_, usize>(&(&id,), CallInfo::default(), &mut deps, Mode::Normal)
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(
                async move {
                    LEASED_RUNS.fetch_add(1, Ordering::SeqCst);
                    let v = db.load(Ordering::SeqCst); // read the old row
                    if let Some((started, resume)) = pause {
                        let _ = started.send(());
                        let _ = resume.await;
                    }
                    v
                },
                |r| Some(*r),
            )
            .await
        }
    }
}

#[tokio::test]
async fn fill_racing_an_invalidation_does_not_land() {
    for invalidate_key in [false, true] {
        registry::with_backend(mem(), async {
            let db = Arc::new(AtomicUsize::new(1));
            let (started_tx, started_rx) = tokio::sync::oneshot::channel();
            let (resume_tx, resume_rx) = tokio::sync::oneshot::channel();
            // reader: misses, reads the old row (1), pauses before storing
            let reader = tokio::spawn(registry::with_backend(
                registry::current_backend(None),
                leased(7, db.clone(), Some((started_tx, resume_rx))),
            ));
            started_rx.await.unwrap();
            // writer: updates the row and invalidates while the reader is paused
            db.store(2, Ordering::SeqCst);
            if invalidate_key {
                LEASED
                    .entry::<usize>(&(&7u64,), CallInfo::default(), &mut |_| {})
                    .invalidate()
                    .await
                    .unwrap();
            } else {
                cache_core::invalidate_dependency("row:7").await.unwrap();
            }
            resume_tx.send(()).unwrap();
            assert_eq!(reader.await.unwrap(), 1, "the reader returns what it read");
            // ...but its stale value did not land: the next call reads the new row
            assert_eq!(leased(7, db.clone(), None).await, 2);
            assert_eq!(leased(7, db.clone(), None).await, 2);
        })
        .await;
    }
    assert!(LEASED.stats().stale_rejected >= 2);
}

// ---------- dependencies through nested calls ----------

static INNER: FnCache = FnCache::new(meta("inner"));
static OUTER: FnCache = FnCache::new(meta("outer"));
static OUTER_RUNS: AtomicUsize = AtomicUsize::new(0);

fn inner(id: u64) -> String {
    match INNER.begin_blocking::<_, String>(&(&id,), CallInfo::default(), &mut |_| {}, Mode::Normal)
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => f.fill_blocking(|| format!("user{id}"), |r| Some(r.clone())),
    }
}

fn outer(team: u32) -> Vec<String> {
    match OUTER.begin_blocking::<_, Vec<String>>(
        &(&team,),
        CallInfo::default(),
        &mut |_| {},
        Mode::Normal,
    ) {
        Begin::Hit(v) => v,
        Begin::Fill(f) => f.fill_blocking(
            || {
                OUTER_RUNS.fetch_add(1, Ordering::SeqCst);
                vec![inner(u64::from(team) * 10), inner(u64::from(team) * 10 + 1)]
            },
            |r| Some(r.clone()),
        ),
    }
}

#[test]
fn invalidating_a_nested_entry_drops_the_outer_one() {
    registry::with_backend_blocking(mem(), || {
        let before = OUTER_RUNS.load(Ordering::SeqCst);
        assert_eq!(outer(1), vec!["user10", "user11"]);
        assert_eq!(outer(1), vec!["user10", "user11"]);
        assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), before + 1);
        // invalidate get-user(11): the team page built from it goes too (transitively)
        INNER
            .entry::<String>(&(&11u64,), CallInfo::default(), &mut |_| {})
            .invalidate_blocking()
            .unwrap();
        outer(1);
        assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), before + 2);
        // a nested *hit* is a dependency too
        outer(1);
        INNER
            .entry::<String>(&(&10u64,), CallInfo::default(), &mut |_| {})
            .invalidate_blocking()
            .unwrap();
        outer(1);
        assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), before + 3);
        // invalidate_all of the inner function drops every outer entry
        OUTER_RUNS.store(0, Ordering::SeqCst);
        outer(2);
        INNER
            .all(CallInfo::default())
            .invalidate_all_blocking()
            .unwrap();
        outer(2);
        outer(1);
        assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), 3);
    });
}

// ---------- fail-open ----------

/// A backend whose every operation fails.
struct Broken;
impl Backend for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn get<'a>(&'a self, _: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        Box::pin(async { Err(CacheError::backend("broken", "connection refused")) })
    }
    fn get_blocking(&self, _: &Key) -> Result<Lookup, CacheError> {
        Err(CacheError::backend("broken", "connection refused"))
    }
    fn set<'a>(
        &'a self,
        _: &'a Key,
        _: SharedValue,
        _: &'a EntryOptions,
        _: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>> {
        Box::pin(async { Err(CacheError::backend("broken", "connection refused")) })
    }
    fn set_blocking(
        &self,
        _: &Key,
        _: SharedValue,
        _: &EntryOptions,
        _: Lease,
    ) -> Result<SetOutcome, CacheError> {
        Err(CacheError::backend("broken", "connection refused"))
    }
    fn remove<'a>(&'a self, _: &'a Key) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::backend("broken", "connection refused")) })
    }
    fn remove_blocking(&self, _: &Key) -> Result<(), CacheError> {
        Err(CacheError::backend("broken", "connection refused"))
    }
    fn invalidate<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::backend("broken", "connection refused")) })
    }
    fn invalidate_blocking(&self, _: &str) -> Result<(), CacheError> {
        Err(CacheError::backend("broken", "connection refused"))
    }
    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async { Err(CacheError::backend("broken", "connection refused")) })
    }
    fn clear_blocking(&self) -> Result<(), CacheError> {
        Err(CacheError::backend("broken", "connection refused"))
    }
    fn stats(&self) -> BackendStats {
        BackendStats::default()
    }
}

static FAILOPEN: FnCache = FnCache::new(meta("fail_open"));

async fn fail_open(x: u64, runs: &AtomicUsize) -> u64 {
    match FAILOPEN
        .begin_async::<_, u64>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal)
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(
                async {
                    runs.fetch_add(1, Ordering::SeqCst);
                    x * 3
                },
                |r| Some(*r),
            )
            .await
        }
    }
}

#[tokio::test]
async fn a_failing_backend_never_fails_the_call() {
    registry::with_backend(Arc::new(Broken), async {
        let runs = AtomicUsize::new(0);
        for _ in 0..3 {
            assert_eq!(fail_open(3, &runs).await, 9);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert!(FAILOPEN.stats().errors >= 3);
    })
    .await;
}

// ---------- refresh, scoped isolation ----------

static COUNTED: FnCache = FnCache::new(meta("counted"));

fn counted(x: u64, runs: &AtomicUsize, mode: Mode) -> usize {
    match COUNTED.begin_blocking::<_, usize>(&(&x,), CallInfo::default(), &mut |_| {}, mode) {
        Begin::Hit(v) => v,
        Begin::Fill(f) => f.fill_blocking(|| runs.fetch_add(1, Ordering::SeqCst) + 1, |r| Some(*r)),
    }
}

#[test]
fn refresh_recomputes_and_scopes_are_isolated() {
    let runs = AtomicUsize::new(0);
    let a = mem();
    registry::with_backend_blocking(a.clone(), || {
        assert_eq!(counted(1, &runs, Mode::Normal), 1);
        assert_eq!(counted(1, &runs, Mode::Normal), 1);
        assert_eq!(counted(1, &runs, Mode::Refresh), 2);
        assert_eq!(counted(1, &runs, Mode::Normal), 2);
    });
    registry::with_backend_blocking(mem(), || {
        // another scope, another backend: a miss
        assert_eq!(counted(1, &runs, Mode::Normal), 3);
    });
    registry::with_backend_blocking(a, || assert_eq!(counted(1, &runs, Mode::Normal), 2));
}

#[test]
fn keys_are_readable() {
    let k = COUNTED.key(&(&42u64, &"a,b"), &CallInfo::default());
    assert_eq!(k.text(), r#"runtime::counted(42,"a,b")"#);
    let k = COUNTED.key(
        &(&1u8,),
        &CallInfo {
            self_type: Some("app::Repo"),
            generics: &["u32"],
        },
    );
    assert_eq!(k.text(), "app::Repo::counted::<u32>(1)");
}

// ---------- stats count each call once ----------

#[cache_core::cached]
fn counted_once(x: u64) -> u64 {
    x + 1
}

#[test]
fn a_call_counts_one_hit_or_one_miss_in_function_and_backend_stats() {
    let backend = Arc::new(MemoryBackend::new());
    registry::with_backend_blocking(backend.clone(), || {
        for _ in 0..3 {
            assert_eq!(counted_once(1), 2);
        }
        assert_eq!(counted_once(2), 3);
    });
    let b = backend.stats();
    assert_eq!((b.hits, b.misses, b.inserts), (2, 2, 2));
    let f = counted_once_cache().stats();
    assert_eq!((f.hits, f.misses, f.fills), (2, 2, 2));
    assert_eq!(f.function, "counted_once");
    assert!(f.module.ends_with("runtime"), "{}", f.module);
}
