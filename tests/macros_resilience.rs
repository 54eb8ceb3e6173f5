//! `stale_while_revalidate`, `stale_if_error`, `timeout` and `refresh_ahead` on the memory
//! backend, with a manual clock (each test has its own backend and clock, through a scoped
//! override that background refreshes carry along). Bodies count their runs and can be held
//! at a gate, so "the caller did not wait for the body" is shown by the caller returning while
//! the body is held, not by timing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::memory::ManualClock;
use cache_core::{cached, registry, MemoryBackend};

fn backend() -> (Arc<MemoryBackend>, ManualClock) {
    let clock = ManualClock::new();
    let b = MemoryBackend::builder()
        .clock(clock.clone())
        .build()
        .expect("a valid memory backend");
    (Arc::new(b), clock)
}

/// Waits for `cond` with a deadline (the background work runs on other threads).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A body's gate: closed, the body waits (asynchronously) until it opens.
struct Gate(AtomicBool);

impl Gate {
    const fn open() -> Self {
        Gate(AtomicBool::new(true))
    }
    fn set(&self, open: bool) {
        self.0.store(open, Ordering::SeqCst);
    }
    async fn pass(&self) {
        until("the gate to open", || self.0.load(Ordering::SeqCst)).await;
    }
}

// ---------- stale-while-revalidate ----------

static SWR_RUNS: AtomicU64 = AtomicU64::new(0);
static SWR_GATE: Gate = Gate::open();

#[cached(ttl = "10s", stale_while_revalidate = "30s")]
async fn swr(id: u64) -> u64 {
    SWR_GATE.pass().await;
    id * 100 + SWR_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let (b, clock) = backend();
    registry::with_backend(b, async {
        assert_eq!(swr(1).await, 101);
        clock.advance(Duration::from_secs(11));
        // the body is held: 100 concurrent callers get the stale value without waiting for it
        SWR_GATE.set(false);
        let calls = (0..100).map(|_| swr(1));
        let got = futures_util::future::join_all(calls).await;
        assert!(
            got.iter().all(|v| *v == 101),
            "every caller got the stale value"
        );
        SWR_GATE.set(true);
        until("the refresh to land", || {
            swr_entry(1).get_blocking() == Some(102)
        })
        .await;
        assert_eq!(swr(1).await, 102);
        assert_eq!(
            SWR_RUNS.load(Ordering::SeqCst),
            2,
            "one refresh for 100 stale callers"
        );
        let s = swr_cache().stats();
        assert_eq!(s.stale_hits, 100);
        assert_eq!(s.refreshes, 1);
        // past ttl + stale_while_revalidate the value is gone: the caller waits for the body
        clock.advance(Duration::from_secs(41));
        assert_eq!(swr(1).await, 103);
    })
    .await;
}

static SWR_SYNC_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "10s", stale_while_revalidate = "30s")]
fn swr_sync(id: u64) -> u64 {
    id * 100 + SWR_SYNC_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_fn_refreshes_on_a_thread() {
    let (b, clock) = backend();
    let b2 = b.clone();
    let got = tokio::task::spawn_blocking(move || {
        registry::with_backend_blocking(b2, || {
            let first = swr_sync(2);
            clock.advance(Duration::from_secs(11));
            (first, swr_sync(2))
        })
    })
    .await
    .unwrap();
    assert_eq!(got, (201, 201), "the stale value, at once");
    registry::with_backend(b, async {
        until("the refresh to land", || {
            swr_sync_entry(2).get_blocking() == Some(202)
        })
        .await;
    })
    .await;
}

// ---------- invalidation wins over staleness ----------

static INV_RUNS: AtomicU64 = AtomicU64::new(0);
static INV_GATE: Gate = Gate::open();

#[cached(ttl = "10s", stale_while_revalidate = "1h", depends_on = ["row:{id}"])]
async fn guarded_row(id: u64) -> u64 {
    let n = INV_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    INV_GATE.pass().await;
    id * 100 + n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidated_entry_is_never_served_stale_and_a_racing_refresh_does_not_land() {
    let (b, clock) = backend();
    registry::with_backend(b, async {
        // invalidated in its stale window: the next call computes
        assert_eq!(guarded_row(3).await, 301);
        clock.advance(Duration::from_secs(11));
        cache_core::invalidate_dependency("row:3").await.unwrap();
        assert_eq!(guarded_row(3).await, 302, "not the stale 301");

        // a refresh that began before an invalidation does not store its value
        clock.advance(Duration::from_secs(11));
        INV_GATE.set(false);
        assert_eq!(
            guarded_row(3).await,
            302,
            "stale, while the refresh is held"
        );
        until("the refresh to start", || {
            INV_RUNS.load(Ordering::SeqCst) == 3
        })
        .await;
        cache_core::invalidate_dependency("row:3").await.unwrap();
        INV_GATE.set(true);
        until("the refresh to be rejected", || {
            guarded_row_cache().stats().stale_rejected == 1
        })
        .await;
        assert_eq!(
            guarded_row_entry(3).get().await,
            None,
            "the raced refresh did not land"
        );
        assert_eq!(guarded_row(3).await, 304);
    })
    .await;
}

// ---------- stale-if-error ----------

static SIE_FAIL: AtomicBool = AtomicBool::new(false);
static SIE_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "10s", stale_if_error = "1h")]
async fn sie(id: u64) -> Result<u64, String> {
    let n = SIE_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if SIE_FAIL.load(Ordering::SeqCst) {
        return Err("source down".into());
    }
    Ok(id * 100 + n)
}

#[tokio::test]
async fn stale_if_error_returns_the_stale_value_until_its_window_has_passed() {
    let (b, clock) = backend();
    registry::with_backend(b, async {
        assert_eq!(sie(4).await, Ok(401));
        clock.advance(Duration::from_secs(11));
        SIE_FAIL.store(true, Ordering::SeqCst);
        assert_eq!(sie(4).await, Ok(401), "the stale value in place of the Err");
        assert_eq!(sie(4).await, Ok(401));
        assert_eq!(SIE_RUNS.load(Ordering::SeqCst), 3, "the body ran each time");
        assert_eq!(sie_cache().stats().stale_if_error_served, 2);
        // past ttl + stale_if_error: the Err
        clock.advance(Duration::from_secs(3600));
        assert_eq!(sie(4).await, Err("source down".to_string()));
        SIE_FAIL.store(false, Ordering::SeqCst);
        assert_eq!(sie(4).await, Ok(405));
    })
    .await;
}

// ---------- timeout ----------

static SLOW_GATE: Gate = Gate::open();
static SLOW_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(ttl = "10s", stale_if_error = "1h", timeout = "50ms")]
async fn slow(id: u64) -> Result<u64, String> {
    SLOW_GATE.pass().await;
    Ok(id * 100 + SLOW_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_returns_the_stale_value_and_its_late_result_lands() {
    let (b, clock) = backend();
    registry::with_backend(b, async {
        assert_eq!(slow(5).await, Ok(501));
        clock.advance(Duration::from_secs(11));
        SLOW_GATE.set(false);
        assert_eq!(slow(5).await, Ok(501), "the stale value after the timeout");
        assert_eq!(slow_cache().stats().timeouts, 1);
        SLOW_GATE.set(true);
        until("the late result to land", || {
            slow_entry(5).get_blocking() == Some(502)
        })
        .await;
        assert_eq!(slow(5).await, Ok(502));
        // a fresh miss (no stale value) waits for the body, however slow
        assert_eq!(slow(6).await, Ok(603));
    })
    .await;
}

// ---------- refresh-ahead ----------

static AHEAD_RUNS: AtomicU64 = AtomicU64::new(0);
static AHEAD_GATE: Gate = Gate::open();

#[cached(ttl = "10s", refresh_ahead = "3s")]
async fn ahead(id: u64) -> u64 {
    AHEAD_GATE.pass().await;
    id * 100 + AHEAD_RUNS.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_keeps_a_hot_key_from_ever_missing() {
    let (b, clock) = backend();
    registry::with_backend(b, async {
        assert_eq!(ahead(7).await, 701);
        // read every second over five ttls, with the body held whenever a call is made: a call
        // that needed the body would never return
        let mut expected = 701;
        for second in 1..=50u64 {
            clock.advance(Duration::from_secs(1));
            AHEAD_GATE.set(false);
            assert_eq!(ahead(7).await, expected, "second {second}");
            AHEAD_GATE.set(true);
            let runs = AHEAD_RUNS.load(Ordering::SeqCst);
            if ahead_cache().stats().refreshes > runs - 1 {
                until("the refresh to land", || {
                    AHEAD_RUNS.load(Ordering::SeqCst) == runs + 1
                        && ahead_entry(7).get_blocking() == Some(701 + runs)
                })
                .await;
                expected = 701 + runs;
            }
        }
        assert!(
            AHEAD_RUNS.load(Ordering::SeqCst) >= 6,
            "refreshed every 7 s or so"
        );
    })
    .await;
}

// ---------- the same settings on a profile ----------

static PROFILED_FAIL: AtomicBool = AtomicBool::new(false);
static PROFILED_RUNS: AtomicU64 = AtomicU64::new(0);

#[cached(profile = "resilient")]
async fn profiled(id: u64) -> Result<u64, String> {
    let n = PROFILED_RUNS.fetch_add(1, Ordering::SeqCst) + 1;
    if PROFILED_FAIL.load(Ordering::SeqCst) {
        return Err("down".into());
    }
    Ok(id * 100 + n)
}

#[tokio::test]
async fn a_profile_carries_the_resilience_settings() {
    use cache_core::registry::{configure, Profile};
    let bad = configure()
        .profile(
            "bad",
            Profile::new()
                .ttl(Duration::from_secs(10))
                .refresh_ahead(Duration::from_secs(10)),
        )
        .apply();
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("profile.bad.refresh_ahead"));
    configure()
        .profile(
            "resilient",
            Profile::new()
                .ttl(Duration::from_secs(10))
                .stale_if_error(Duration::from_secs(3600)),
        )
        .apply()
        .unwrap();
    let (b, clock) = backend();
    registry::with_backend(b, async {
        assert_eq!(profiled(8).await, Ok(801));
        clock.advance(Duration::from_secs(11));
        PROFILED_FAIL.store(true, Ordering::SeqCst);
        assert_eq!(profiled(8).await, Ok(801), "the profile's stale_if_error");
        clock.advance(Duration::from_secs(3600));
        assert_eq!(profiled(8).await, Err("down".to_string()));
    })
    .await;
}
