//! Every `#[cached]` option, counting how often each body really ran. Each test uses its own
//! fresh `MemoryBackend` through a scoped override.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, MemoryBackend};
use serde::{Deserialize, Serialize};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

fn runs(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// Waits for `cond` with a deadline.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------- ttl / sliding ----------

static TTL_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "100ms")]
fn short_lived(x: u32) -> u32 {
    TTL_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

static SLIDING_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(sliding = "1h", ttl = "2h")]
fn slides(x: u32) -> u32 {
    SLIDING_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

#[test]
fn ttl_expires_entries() {
    registry::with_backend_blocking(mem(), || {
        short_lived(1);
        short_lived(1);
        assert_eq!(runs(&TTL_RUNS), 1);
        wait_until("the entry to expire", || {
            short_lived_entry(1).get_blocking().is_none()
        });
        short_lived(1);
        assert_eq!(runs(&TTL_RUNS), 2);
        slides(1);
        slides(1);
        assert_eq!(runs(&SLIDING_RUNS), 1);
    });
}

// ---------- depends_on with field access ----------

#[derive(Clone, Serialize, Deserialize, cache_core::KeyPart)]
struct User {
    id: u64,
    team: u32,
}

static PROFILE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(depends_on = ["user:{user.id}", "team:{user.team}", "all-users"])]
fn render(user: User, style: u8) -> String {
    PROFILE_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("{}/{}/{style}", user.id, user.team)
}

#[tokio::test]
async fn depends_on_templates_with_fields() {
    registry::with_backend(mem(), async {
        let ada = User { id: 1, team: 7 };
        let bob = User { id: 2, team: 8 };
        render(ada.clone(), 0);
        render(bob.clone(), 0);
        render(ada.clone(), 0);
        assert_eq!(runs(&PROFILE_RUNS), 2);
        cache_core::invalidate_dependency("team:7").await.unwrap();
        render(ada.clone(), 0);
        render(bob.clone(), 0);
        assert_eq!(
            runs(&PROFILE_RUNS),
            3,
            "only ada's entry depended on team:7"
        );
        cache_core::invalidate_dependency("user:2").await.unwrap();
        render(bob.clone(), 0);
        assert_eq!(runs(&PROFILE_RUNS), 4);
        cache_core::invalidate_dependency("all-users")
            .await
            .unwrap();
        render(ada, 0);
        render(bob, 0);
        assert_eq!(runs(&PROFILE_RUNS), 6);
    })
    .await;
}

// ---------- custom key ----------

static KEYED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(key = "greeting:{lang}")]
fn greeting(lang: &str, _unused_in_key: u8) -> String {
    KEYED_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("hello in {lang}")
}

#[test]
fn custom_key_template() {
    registry::with_backend_blocking(mem(), || {
        greeting("fr", 1);
        greeting("fr", 2); // same key: only `lang` is in it
        assert_eq!(runs(&KEYED_RUNS), 1);
        assert_eq!(greeting_entry("fr").key().text(), "greeting:fr");
        greeting_invalidate("fr").unwrap();
        greeting("fr", 1);
        assert_eq!(runs(&KEYED_RUNS), 2);
    });
}

// ---------- skip ----------

struct Db {
    name: &'static str,
}

static SKIP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(skip(db, trace))]
fn lookup(db: &Db, id: u64, trace: Vec<u8>) -> String {
    SKIP_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("{}:{id}:{}", db.name, trace.len())
}

#[test]
fn skipped_params_are_not_in_the_key() {
    registry::with_backend_blocking(mem(), || {
        let (a, b) = (Db { name: "a" }, Db { name: "b" });
        assert_eq!(lookup(&a, 1, vec![]), "a:1:0");
        assert_eq!(
            lookup(&b, 1, vec![1, 2]),
            "a:1:0",
            "db and trace are skipped"
        );
        assert_eq!(runs(&SKIP_RUNS), 1);
        assert_eq!(lookup_entry(1).key().text(), "macros_options::lookup(1)");
    });
}

// ---------- profile ----------

static PROFILED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(profile = "macros-options-profile")]
fn profiled(x: u8) -> u8 {
    PROFILED_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

#[test]
fn profile_selects_the_profile_backend() {
    let hot = mem();
    registry::configure()
        .profile(
            "macros-options-profile",
            cache_core::Profile::new().backend(hot.clone()),
        )
        .apply()
        .unwrap();
    // no scoped override here: the call goes to the profile's backend
    profiled(1);
    profiled(1);
    assert_eq!(runs(&PROFILED_RUNS), 1);
    assert_eq!(
        cache_core::Backend::stats(&*hot).entries,
        1,
        "the entry is in the profile's backend"
    );
}

// ---------- cache_none ----------

static NONE_RUNS: AtomicUsize = AtomicUsize::new(0);
static NONE_SKIP_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached]
fn find_default(id: u32) -> Option<String> {
    NONE_RUNS.fetch_add(1, Ordering::SeqCst);
    (id > 1).then(|| id.to_string())
}

#[cached(cache_none = false)]
fn find_no_none(id: u32) -> Option<String> {
    NONE_SKIP_RUNS.fetch_add(1, Ordering::SeqCst);
    (id > 1).then(|| id.to_string())
}

#[test]
fn none_is_cached_unless_cache_none_false() {
    registry::with_backend_blocking(mem(), || {
        assert_eq!(find_default(1), None);
        assert_eq!(find_default(1), None);
        assert_eq!(runs(&NONE_RUNS), 1, "None is cached by default");
        assert_eq!(find_no_none(1), None);
        assert_eq!(find_no_none(1), None);
        assert_eq!(runs(&NONE_SKIP_RUNS), 2, "None is not cached");
        assert_eq!(find_no_none(2).as_deref(), Some("2"));
        assert_eq!(find_no_none(2).as_deref(), Some("2"));
        assert_eq!(runs(&NONE_SKIP_RUNS), 3, "Some is cached");
        // the entry type is the inner value
        let e: cache_core::EntryRef<String> = find_no_none_entry(2);
        assert_eq!(e.get_blocking().as_deref(), Some("2"));
    });
}

// ---------- lock ----------

static UNLOCKED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(lock = false, skip(gate))]
async fn unlocked(x: u32, gate: Arc<tokio::sync::Semaphore>) -> u32 {
    UNLOCKED_RUNS.fetch_add(1, Ordering::SeqCst);
    let _p = gate.acquire().await.unwrap();
    x
}

async fn wait_async(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_flight_unless_lock_false() {
    registry::with_backend(mem(), async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let g = gate.clone();
            tasks.push(tokio::spawn(registry::with_backend(
                registry::current_backend(None),
                unlocked(1, g),
            )));
        }
        wait_async("every unlocked call to run", || runs(&UNLOCKED_RUNS) == 8).await;
        gate.add_permits(100);
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(runs(&UNLOCKED_RUNS), 8, "lock = false: no single flight");
    })
    .await;
}

static SF_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(skip(gate))]
async fn locked_single_flight(x: u32, gate: Arc<tokio::sync::Semaphore>) -> u32 {
    SF_RUNS.fetch_add(1, Ordering::SeqCst);
    let _p = gate.acquire().await.unwrap();
    x
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_run_once_by_default() {
    registry::with_backend(mem(), async {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let g = gate.clone();
            tasks.push(tokio::spawn(registry::with_backend(
                registry::current_backend(None),
                locked_single_flight(1, g),
            )));
        }
        wait_async("the leader to run", || runs(&SF_RUNS) == 1).await;
        gate.add_permits(100);
        for t in tasks {
            assert_eq!(t.await.unwrap(), 1);
        }
        assert_eq!(runs(&SF_RUNS), 1, "single flight");
    })
    .await;
}

// ---------- version ----------

static V1_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(version = 2)]
fn versioned(x: u8) -> u8 {
    V1_RUNS.fetch_add(1, Ordering::SeqCst);
    x
}

#[test]
fn version_is_in_the_key() {
    registry::with_backend_blocking(mem(), || {
        versioned(1);
        versioned(1);
        assert_eq!(runs(&V1_RUNS), 1);
        assert_eq!(
            versioned_entry(1).key().text(),
            "macros_options::versioned@v2(1)"
        );
    });
}

// ---------- stats through the companion ----------

#[cached]
fn counted(x: u8) -> u8 {
    x
}

#[test]
fn stats_through_the_cache_companion() {
    registry::with_backend_blocking(mem(), || {
        counted_cache().reset_stats();
        counted(1);
        counted(1);
        counted(1);
        let s = counted_cache().stats();
        assert_eq!((s.hits, s.misses), (2, 1));
    });
}

// ---------- jitter ----------

#[cached(ttl = "10s", jitter = "5s")]
fn jittered(x: u32) -> u32 {
    x
}

#[cached(profile = "macros-options-jitter")]
fn profile_jittered(x: u32) -> u32 {
    x
}

/// Fills 1,000 entries at one instant, then counts how many are left as a manual clock moves
/// through the jitter window: expiries are spread over it, none before `ttl`, all by
/// `ttl + jitter`.
fn spread_of(
    fill: impl Fn(u32),
    backend: &cache_core::memory::MemoryBackend,
    clock: &cache_core::memory::ManualClock,
) {
    for i in 0..1_000 {
        fill(i);
    }
    assert_eq!(backend.len(), 1_000);
    let mut left = Vec::new();
    for s in [9_999u64, 11_000, 12_000, 13_000, 14_000, 15_000] {
        let now = clock.now();
        clock.advance(Duration::from_millis(s) - now);
        backend.sweep_expired();
        left.push(backend.len());
    }
    assert_eq!(left[0], 1_000, "none before the ttl: {left:?}");
    assert_eq!(left[5], 0, "all by ttl + jitter: {left:?}");
    for w in left.windows(2) {
        assert!(
            w[0] > w[1],
            "expiries spread over every second of the window: {left:?}"
        );
    }
    for (i, n) in left[1..5].iter().enumerate() {
        let expected = 1_000 - 200 * (i + 1);
        assert!(n.abs_diff(expected) < 100, "about uniform: {left:?}");
    }
}

#[test]
fn jitter_spreads_expiries_over_the_window() {
    let clock = cache_core::memory::ManualClock::new();
    let b = Arc::new(
        MemoryBackend::builder()
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    registry::with_backend_blocking(b.clone(), || {
        spread_of(|i| assert_eq!(jittered(i), i), &b, &clock);
    });
}

#[test]
fn a_profile_jitter_spreads_expiries_too() {
    use cache_core::registry::{configure, Profile};
    let clock = cache_core::memory::ManualClock::new();
    let b = Arc::new(
        MemoryBackend::builder()
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    configure()
        .profile(
            "macros-options-jitter",
            Profile::new()
                .ttl(Duration::from_secs(10))
                .jitter(Duration::from_secs(5))
                .backend(b.clone()),
        )
        .apply()
        .unwrap();
    spread_of(|i| assert_eq!(profile_jittered(i), i), &b, &clock);
    let err = configure()
        .profile("no-ttl", Profile::new().jitter(Duration::from_secs(1)))
        .apply()
        .unwrap_err();
    assert!(err.to_string().contains("profile.no-ttl.jitter"), "{err}");
}

/// Pages weigh what their fn says (`weight = page_weight`), not their measured size.
fn page_weight(page: &str) -> usize {
    page.len() * 100
}

#[cached(weight = page_weight)]
fn page(n: u32) -> String {
    "x".repeat(100 + n as usize)
}

#[test]
fn weight_option_replaces_the_measured_weight() {
    let m = Arc::new(
        MemoryBackend::builder()
            .max_weight(100_000)
            .shards(1)
            .build()
            .unwrap(),
    );
    registry::with_backend_blocking(m.clone(), || {
        page(1);
        // 101 bytes measured, 10,100 as weighed by the fn (plus the keys)
        let w = cache_core::Backend::stats(&*m).weight;
        assert!((10_100..10_300).contains(&w), "weight {w}");
        for n in 2..30 {
            page(n);
        }
    });
    // the bound holds with the fn's weights: at most 9 pages of ~10 KB under 100 KB
    let s = cache_core::Backend::stats(&*m);
    assert!(s.entries <= 9, "{} entries", s.entries);
    assert!(s.weight <= 100_000);
}

#[test]
fn an_entry_weighs_its_dependency_names_too() {
    use cache_core::{value, Backend, EntryOptions, Key};
    let m = MemoryBackend::new();
    let long = "d".repeat(1000);
    m.set_blocking(
        &Key::from_text("a"),
        value::share(1u8),
        &EntryOptions::new(),
        m.current_lease(),
    )
    .unwrap();
    let plain = m.stats().weight;
    m.set_blocking(
        &Key::from_text("b"),
        value::share(1u8),
        &EntryOptions::new().depends_on(long),
        m.current_lease(),
    )
    .unwrap();
    assert!(
        m.stats().weight - plain >= 1000,
        "{}",
        m.stats().weight - plain
    );
}
