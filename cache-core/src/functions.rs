//! The cached functions of the process: every `#[cached]` fn registers itself here on its first
//! call, so their counters can be read ([`all_stats`]) and exported ([`crate::metrics`]) in one
//! place. This module knows a function only as something with counters ([`Counted`]).

use std::sync::Mutex;

use crate::stats::FnStats;

/// What the list holds of a cached function: its counters.
pub(crate) trait Counted: Send + Sync {
    /// A snapshot of its counters.
    fn snapshot(&self) -> FnStats;
    /// Resets its counters.
    fn reset(&self);
}

static FUNCTIONS: Mutex<Vec<&'static dyn Counted>> = Mutex::new(Vec::new());

/// Adds a function (once: the caller keeps its own "registered" flag).
pub(crate) fn register(f: &'static dyn Counted) {
    if let Ok(mut v) = FUNCTIONS.lock() {
        v.push(f);
    }
}

fn all() -> Vec<&'static dyn Counted> {
    FUNCTIONS.lock().map(|v| v.clone()).unwrap_or_default()
}

/// Counters of every cached function called so far.
///
/// ```
/// for s in cache_core::runtime::all_stats() {
///     println!("{}: {} hits, {} misses", s.function, s.hits, s.misses);
/// }
/// ```
pub fn all_stats() -> Vec<FnStats> {
    all().iter().map(|f| f.snapshot()).collect()
}

/// Resets the counters of every cached function.
pub fn reset_all_stats() {
    for f in all() {
        f.reset();
    }
}
