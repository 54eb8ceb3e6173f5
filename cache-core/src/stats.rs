//! Counters: per backend and per cached function.
//!
//! Counters are striped atomics: threads update different cache lines, so counting a hit does
//! not serialize threads that hit at the same time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A snapshot of a backend's counters.
///
/// ```
/// let s = cache_core::BackendStats::default();
/// assert_eq!(s.hit_ratio(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BackendStats {
    /// Lookups that found an entry.
    pub hits: u64,
    /// Lookups that found nothing.
    pub misses: u64,
    /// Entries stored.
    pub inserts: u64,
    /// Sets rejected because an invalidation happened during the fill.
    pub rejected_sets: u64,
    /// Entries evicted to respect a capacity bound.
    pub evictions: u64,
    /// Entries dropped because they expired.
    pub expirations: u64,
    /// Entries removed by invalidation (of the entry or a dependency).
    pub invalidations: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Entries held now.
    pub entries: u64,
    /// Total weight held now.
    pub weight: u64,
}

impl BackendStats {
    /// `hits / (hits + misses)`, 0 when nothing was looked up.
    pub fn hit_ratio(&self) -> f64 {
        let total = self.hits + self.misses;
        if total == 0 {
            0.0
        } else {
            self.hits as f64 / total as f64
        }
    }
}

pub(crate) const STRIPES: usize = 8;
/// The stripe shared (with atomic adds) by threads that found no exclusive stripe free.
pub(crate) const SHARED: usize = STRIPES - 1;

#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter striped over cache lines. Each of the first `STRIPES - 1` threads to count owns a
/// stripe exclusively (released when the thread exits) and increments it with a plain store:
/// no lock-prefixed instruction, no shared cache line on the hit path. Further threads share
/// the last stripe with atomic adds. Reads sum the stripes.
pub(crate) struct Counter([Padded; STRIPES]);

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

/// Which stripes are owned by a live thread.
static OWNED: parking_lot::Mutex<[bool; SHARED]> = parking_lot::Mutex::new([false; SHARED]);

thread_local! {
    /// This thread's stripe; `usize::MAX` until first use.
    static STRIPE: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    /// Gives the exclusive stripe back when the thread exits.
    static RELEASE: StripeRelease = const { StripeRelease };
}

struct StripeRelease;
impl Drop for StripeRelease {
    fn drop(&mut self) {
        let stripe = STRIPE.try_with(|s| s.replace(SHARED)).unwrap_or(SHARED);
        if stripe < SHARED {
            OWNED.lock()[stripe] = false;
        }
    }
}

#[cold]
fn claim_stripe() -> usize {
    let mut owned = OWNED.lock();
    let stripe = match owned.iter().position(|o| !o) {
        Some(i) if RELEASE.try_with(|_| ()).is_ok() => {
            owned[i] = true;
            i
        }
        _ => SHARED,
    };
    let _ = STRIPE.try_with(|s| s.set(stripe));
    stripe
}

/// This thread's stripe (also its reader stripe in the memory backend's shard locks).
#[inline]
pub(crate) fn stripe() -> usize {
    match STRIPE.try_with(|s| s.get()) {
        Ok(usize::MAX) => claim_stripe(),
        Ok(s) => s,
        Err(_) => SHARED,
    }
}

impl Counter {
    pub(crate) const fn new() -> Self {
        Counter([const { Padded(AtomicU64::new(0)) }; STRIPES])
    }
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.add_at(stripe(), n)
    }
    /// Adds `n` through stripe `i`, this thread's [`stripe`].
    #[inline]
    pub(crate) fn add_at(&self, i: usize, n: u64) {
        let i = i & (STRIPES - 1);
        let c = &self.0[i].0;
        if i == SHARED {
            c.fetch_add(n, Relaxed);
        } else {
            // only this thread writes this stripe
            c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
        }
    }
    #[inline]
    pub(crate) fn incr(&self) {
        self.add(1)
    }
    /// Counts one through stripe `i`, this thread's [`stripe`].
    #[inline]
    pub(crate) fn incr_at(&self, i: usize) {
        self.add_at(i, 1)
    }
    pub(crate) fn get(&self) -> u64 {
        self.0.iter().map(|p| p.0.load(Relaxed)).sum()
    }
    pub(crate) fn reset(&self) {
        for p in &self.0 {
            p.0.store(0, Relaxed);
        }
    }
}

/// A snapshot of one cached function's counters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FnStats {
    /// The function's name, e.g. `get_user`.
    pub function: &'static str,
    /// The module it is defined in (`module_path!()`), e.g. `myapp::users`.
    pub module: &'static str,
    /// Calls answered from the cache.
    pub hits: u64,
    /// Calls that ran the function.
    pub misses: u64,
    /// Values stored after a miss.
    pub fills: u64,
    /// Fills dropped because an invalidation raced them.
    pub stale_rejected: u64,
    /// Callers that waited for another caller's computation (single flight).
    pub coalesced: u64,
    /// Backend errors met (the function ran instead).
    pub errors: u64,
    /// Calls answered with a stale value while a background refresh replaced it
    /// (`stale_while_revalidate`, `refresh_ahead`).
    pub stale_hits: u64,
    /// Background refreshes started.
    pub refreshes: u64,
    /// Calls whose body failed (or timed out) and that returned the stale value instead
    /// (`stale_if_error`).
    pub stale_if_error_served: u64,
    /// Bodies that took longer than `timeout` (the call returned the stale value; the body
    /// finished in the background).
    pub timeouts: u64,
    /// Mean time the function body took on a miss.
    pub mean_fill_time: Duration,
    /// Estimated time saved: hits × mean fill time.
    pub time_saved: Duration,
}

pub(crate) struct FnCounters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) fills: Counter,
    pub(crate) stale_rejected: Counter,
    pub(crate) coalesced: Counter,
    pub(crate) errors: Counter,
    pub(crate) stale_hits: Counter,
    pub(crate) refreshes: Counter,
    pub(crate) stale_if_error_served: Counter,
    pub(crate) timeouts: Counter,
    pub(crate) fill_nanos: Counter,
    pub(crate) timed_fills: Counter,
}

impl FnCounters {
    pub(crate) const fn new() -> Self {
        FnCounters {
            hits: Counter::new(),
            misses: Counter::new(),
            fills: Counter::new(),
            stale_rejected: Counter::new(),
            coalesced: Counter::new(),
            errors: Counter::new(),
            stale_hits: Counter::new(),
            refreshes: Counter::new(),
            stale_if_error_served: Counter::new(),
            timeouts: Counter::new(),
            fill_nanos: Counter::new(),
            timed_fills: Counter::new(),
        }
    }

    pub(crate) fn snapshot(&self, module: &'static str, function: &'static str) -> FnStats {
        let timed = self.timed_fills.get();
        let mean = Duration::from_nanos(self.fill_nanos.get().checked_div(timed).unwrap_or(0));
        let hits = self.hits.get();
        FnStats {
            function,
            module,
            hits,
            misses: self.misses.get(),
            fills: self.fills.get(),
            stale_rejected: self.stale_rejected.get(),
            coalesced: self.coalesced.get(),
            errors: self.errors.get(),
            stale_hits: self.stale_hits.get(),
            refreshes: self.refreshes.get(),
            stale_if_error_served: self.stale_if_error_served.get(),
            timeouts: self.timeouts.get(),
            mean_fill_time: mean,
            time_saved: mean.saturating_mul(hits.min(u32::MAX as u64) as u32),
        }
    }

    pub(crate) fn reset(&self) {
        for c in [
            &self.hits,
            &self.misses,
            &self.fills,
            &self.stale_rejected,
            &self.coalesced,
            &self.errors,
            &self.stale_hits,
            &self.refreshes,
            &self.stale_if_error_served,
            &self.timeouts,
            &self.fill_nanos,
            &self.timed_fills,
        ] {
            c.reset();
        }
    }
}
