//! Hits through a thread's front table (the default backend's fast path, `memory::front`): after
//! two calls of a key on a thread, the next ones go straight to the entry. These tests call
//! cached fns with no scoped override, on an installed default memory backend with a manual
//! clock, and check that the front serves exactly what the shard would: nothing invalidated,
//! replaced, cleared or expired (eviction: `memory` unit tests), sliding deadlines pushed, hits counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cache_core::memory::ManualClock;
use cache_core::{cached, registry, Backend, MemoryBackend};
use test_support::alloc::{allocations_in, Counting};

/// Counts allocations per thread (no test here uses a scoped override, so every call takes the
/// default backend's fast path deterministically).
#[global_allocator]
static GLOBAL: Counting = Counting;

struct Installed {
    backend: Arc<MemoryBackend>,
    clock: ManualClock,
}

/// One default backend for this test binary, and a lock each test holds: tests use distinct
/// fns, but one clears the backend and one moves its clock, so they run one at a time.
fn installed() -> (&'static Installed, std::sync::MutexGuard<'static, ()>) {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    (installed_backend(), guard)
}

fn installed_backend() -> &'static Installed {
    static INSTALLED: OnceLock<Installed> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let clock = ManualClock::new();
        let backend = Arc::new(
            MemoryBackend::builder()
                .clock(clock.clone())
                .build()
                .expect("a valid memory backend"),
        );
        registry::install(backend.clone());
        Installed { backend, clock }
    })
}

fn runs(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

static INV_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(depends_on = ["front-inv:{x}"])]
fn inv(x: u64) -> usize {
    INV_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

#[test]
fn an_invalidated_entry_is_not_served_from_the_front() {
    let _serial = installed();
    let first = inv(1);
    for _ in 0..5 {
        assert_eq!(inv(1), first);
    }
    assert_eq!(runs(&INV_RUNS), 1);
    cache_core::invalidate_dependency_blocking("front-inv:1").unwrap();
    let second = inv(1);
    assert_ne!(second, first, "recomputed after the invalidation");
    assert_eq!(inv(1), second);
    assert_eq!(runs(&INV_RUNS), 2);
}

static OTHER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(depends_on = ["front-other:{x}"])]
fn other_thread(x: u64) -> usize {
    OTHER_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

#[test]
fn an_invalidation_on_another_thread_reaches_this_threads_front() {
    let _serial = installed();
    let first = other_thread(2);
    for _ in 0..5 {
        assert_eq!(other_thread(2), first);
    }
    std::thread::spawn(|| {
        cache_core::invalidate_dependency_blocking("front-other:2").unwrap();
    })
    .join()
    .unwrap();
    assert_ne!(other_thread(2), first);
    assert_eq!(runs(&OTHER_RUNS), 2);
}

static REFRESH_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn refreshed(x: u64) -> usize {
    REFRESH_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

#[test]
fn a_replaced_entry_is_not_served_from_the_front() {
    let _serial = installed();
    let first = refreshed(3);
    for _ in 0..5 {
        assert_eq!(refreshed(3), first);
    }
    let second = refreshed_refresh(3);
    assert_ne!(second, first);
    for _ in 0..5 {
        assert_eq!(
            refreshed(3),
            second,
            "the new value, not the front's old one"
        );
    }
}

static TTL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10s")]
fn expiring(x: u64) -> usize {
    TTL_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

static SLIDE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(sliding = "10s")]
fn sliding(x: u64) -> usize {
    SLIDE_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

#[test]
fn expiry_and_sliding_hold_through_the_front() {
    let (installed, _serial) = installed();
    let clock = &installed.clock;
    let first = expiring(4);
    let slid = sliding(4);
    for _ in 0..5 {
        assert_eq!(expiring(4), first);
        assert_eq!(sliding(4), slid);
    }
    // front hits push the sliding deadline: 3 x 6 s > 10 s, still the same entry
    for _ in 0..3 {
        clock.advance(Duration::from_secs(6));
        assert_eq!(sliding(4), slid);
    }
    assert_eq!(runs(&SLIDE_RUNS), 1);
    // 18 s > 10 s: the absolute ttl passed
    assert_ne!(expiring(4), first);
    assert_eq!(runs(&TTL_RUNS), 2);
    clock.advance(Duration::from_secs(11));
    assert_ne!(sliding(4), slid, "idle longer than the window");
}

static CLEAR_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn cleared(x: u64) -> usize {
    CLEAR_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

static COUNT_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn counted(x: u64) -> usize {
    COUNT_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

/// Clearing is global to the backend: this is the only test that clears, and it checks its
/// own fn only; the hit counts it reads are this fn's own.
#[test]
fn cleared_entries_are_not_served_and_front_hits_are_counted() {
    let (installed, _serial) = installed();
    let backend = &installed.backend;
    let first = cleared(5);
    for _ in 0..5 {
        assert_eq!(cleared(5), first);
    }
    backend.clear_blocking().unwrap();
    assert_ne!(cleared(5), first);

    counted(6);
    for _ in 0..10 {
        counted(6);
    }
    let s = counted_cache().stats();
    assert_eq!(
        (s.hits, s.misses),
        (10, 1),
        "front hits count as hits of the fn"
    );
    let before = backend.stats().hits;
    for _ in 0..10 {
        counted(6);
    }
    assert!(
        backend.stats().hits >= before + 10,
        "and as hits of the backend"
    );
}

/// A value whose `Clone` calls another cached fn on the same thread (re-entrancy: a nested
/// lookup must not move entries of the front the outer lookup is cloning from).
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reentrant(u64);

impl Clone for Reentrant {
    fn clone(&self) -> Self {
        // many keys: the nested calls would replace front slots if they were allowed to
        for k in 0..600 {
            let _ = leaf(k);
        }
        Reentrant(self.0)
    }
}

#[cached]
fn leaf(x: u64) -> u64 {
    x + 1
}

#[cached]
fn outer(x: u64) -> Reentrant {
    Reentrant(x * 10)
}

#[test]
fn a_value_clone_that_calls_cached_fns_is_safe() {
    let _serial = installed();
    for round in 0..3 {
        for x in 0..40 {
            assert_eq!(outer(x), Reentrant(x * 10), "round {round}, key {x}");
        }
    }
    for k in 0..600 {
        assert_eq!(leaf(k), k + 1);
    }
}

#[cached]
fn no_alloc(id: u64, name: &str) -> u64 {
    id + name.len() as u64
}

/// Front-table hits allocate nothing (the table's slots are allocated once per thread, on its
/// first hit in a shard).
#[test]
fn front_hits_do_not_allocate() {
    let _serial = installed();
    for _ in 0..2 {
        assert_eq!(no_alloc(2, "abc"), 5); // a miss, then a hit found in the shard
    }
    let n = allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(no_alloc(2, "abc"), 5);
        }
    });
    assert_eq!(n, 0, "allocations on 1000 hits");
}

static PROFILE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(profile = "front-hot", depends_on = ["front-hot:{x}"])]
fn profiled(x: u64) -> usize {
    PROFILE_RUNS.fetch_add(1, Ordering::SeqCst) + x as usize
}

fn hot_profile(backend: &Arc<MemoryBackend>) {
    registry::configure()
        .profile(
            "front-hot",
            cache_core::Profile::new().backend(backend.clone()),
        )
        .apply()
        .unwrap();
}

/// A profile's memory backend is served through the front table too (after the thread has
/// resolved the profile once), and a reconfigured profile is never served from the backend it
/// had before.
#[test]
fn a_profiles_memory_backend_goes_through_the_front_and_follows_reconfiguration() {
    let _serial = installed();
    let first_backend = Arc::new(MemoryBackend::new());
    hot_profile(&first_backend);
    let first = profiled(8);
    for _ in 0..10 {
        assert_eq!(profiled(8), first);
    }
    assert_eq!(runs(&PROFILE_RUNS), 1);
    assert_eq!(
        first_backend.stats().hits,
        10,
        "hits of the profile's backend"
    );
    let n = allocations_in(|| {
        for _ in 0..100 {
            assert_eq!(profiled(8), first);
        }
    });
    assert_eq!(n, 0, "profile hits allocate nothing");

    cache_core::invalidate_dependency_blocking("front-hot:8").unwrap();
    let second = profiled(8);
    assert_ne!(second, first, "invalidated in the profile's backend");
    assert_eq!(profiled(8), second);

    // a new backend for the profile: the old one's entry must not be served
    let second_backend = Arc::new(MemoryBackend::new());
    hot_profile(&second_backend);
    let third = profiled(8);
    assert_ne!(third, second, "a miss in the new backend");
    assert_eq!(profiled(8), third);
    assert_eq!(second_backend.stats().entries, 1);
    assert!(first_backend.contains("macros_front::profiled(8)"));
}
