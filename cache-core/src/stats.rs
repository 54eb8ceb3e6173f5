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

const STRIPES: usize = 8;

#[repr(align(64))]
struct Padded(AtomicU64);

/// A counter striped over cache lines; increments from different threads rarely collide.
pub(crate) struct Counter([Padded; STRIPES]);

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn stripe() -> usize {
    use std::cell::Cell;
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE
        .try_with(|s| {
            let v = s.get();
            if v != usize::MAX {
                return v;
            }
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let v = NEXT.fetch_add(1, Relaxed) as usize % STRIPES;
            s.set(v);
            v
        })
        .unwrap_or(0)
}

impl Counter {
    pub(crate) const fn new() -> Self {
        Counter([const { Padded(AtomicU64::new(0)) }; STRIPES])
    }
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Relaxed);
    }
    #[inline]
    pub(crate) fn incr(&self) {
        self.add(1)
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
    /// The function's path, e.g. `myapp::users::get_user`.
    pub function: &'static str,
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
            fill_nanos: Counter::new(),
            timed_fills: Counter::new(),
        }
    }

    pub(crate) fn snapshot(&self, function: &'static str) -> FnStats {
        let timed = self.timed_fills.get();
        let mean = Duration::from_nanos(self.fill_nanos.get().checked_div(timed).unwrap_or(0));
        let hits = self.hits.get();
        FnStats {
            function,
            hits,
            misses: self.misses.get(),
            fills: self.fills.get(),
            stale_rejected: self.stale_rejected.get(),
            coalesced: self.coalesced.get(),
            errors: self.errors.get(),
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
            &self.fill_nanos,
            &self.timed_fills,
        ] {
            c.reset();
        }
    }
}
