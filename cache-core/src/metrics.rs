//! Publishing the cache's counters to the [`metrics`](https://docs.rs/metrics) facade (feature
//! `metrics`), so any exporter (Prometheus, StatsD, ...) shows them.
//!
//! The hit path records nothing here: the counters the runtime keeps anyway are copied to the
//! facade by [`export`], which a service calls before rendering its metrics (for example in its
//! `/metrics` handler). Fill durations, measured on misses only, are recorded as they happen in
//! the histogram `cache_fill_duration_seconds{function, module}`.
//!
//! Published names (labels: `function` and `module` per cached function, `backend` per backend):
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `cache_hits_total` | counter | calls answered from the cache |
//! | `cache_misses_total` | counter | calls that ran the function |
//! | `cache_fills_total` | counter | values stored after a miss |
//! | `cache_stale_rejected_total` | counter | fills dropped because an invalidation raced them |
//! | `cache_coalesced_total` | counter | callers that waited for another caller's computation |
//! | `cache_errors_total` | counter | backend errors met (the function ran instead) |
//! | `cache_time_saved_seconds` | gauge | hits × mean fill time |
//! | `cache_fill_duration_seconds` | histogram | time the function body took on a miss |
//! | `cache_backend_{hits,misses,inserts,evictions,expirations,invalidations,errors}_total` | counter | per backend |
//! | `cache_backend_entries`, `cache_backend_weight` | gauge | per backend |
//! | `cache_write_behind_{queued,inline,flushed,retried,coalesced,dead_lettered}_total` | counter | `#[write_behind]` writes of this process |
//! | `cache_write_behind_pending`, `cache_write_behind_oldest_pending_seconds` | gauge | queue depth and the oldest write's age, as last measured |
//!
//! ```
//! // with no recorder installed this is a no-op; with one (e.g. metrics-exporter-prometheus)
//! // the counters appear in its output
//! cache_core::metrics::export();
//! ```

use crate::functions::all_stats;
use crate::registry;

/// Copies the counters of every cached function and every configured backend to the `metrics`
/// facade (absolute values, so calling it often is harmless).
pub fn export() {
    for s in all_stats() {
        let labels = [("function", s.function), ("module", s.module)];
        ::metrics::counter!("cache_hits_total", &labels).absolute(s.hits);
        ::metrics::counter!("cache_misses_total", &labels).absolute(s.misses);
        ::metrics::counter!("cache_fills_total", &labels).absolute(s.fills);
        ::metrics::counter!("cache_stale_rejected_total", &labels).absolute(s.stale_rejected);
        ::metrics::counter!("cache_coalesced_total", &labels).absolute(s.coalesced);
        ::metrics::counter!("cache_errors_total", &labels).absolute(s.errors);
        ::metrics::counter!("cache_stale_hits_total", &labels).absolute(s.stale_hits);
        ::metrics::counter!("cache_refreshes_total", &labels).absolute(s.refreshes);
        ::metrics::counter!("cache_stale_if_error_served_total", &labels)
            .absolute(s.stale_if_error_served);
        ::metrics::counter!("cache_timeouts_total", &labels).absolute(s.timeouts);
        ::metrics::gauge!("cache_time_saved_seconds", &labels).set(s.time_saved.as_secs_f64());
    }
    for b in registry::all_backends() {
        let s = b.stats();
        let labels = [("backend", b.name().to_string())];
        ::metrics::counter!("cache_backend_hits_total", &labels).absolute(s.hits);
        ::metrics::counter!("cache_backend_misses_total", &labels).absolute(s.misses);
        ::metrics::counter!("cache_backend_inserts_total", &labels).absolute(s.inserts);
        ::metrics::counter!("cache_backend_evictions_total", &labels).absolute(s.evictions);
        ::metrics::counter!("cache_backend_expirations_total", &labels).absolute(s.expirations);
        ::metrics::counter!("cache_backend_invalidations_total", &labels).absolute(s.invalidations);
        ::metrics::counter!("cache_backend_errors_total", &labels).absolute(s.errors);
        ::metrics::gauge!("cache_backend_entries", &labels).set(s.entries as f64);
        ::metrics::gauge!("cache_backend_weight", &labels).set(s.weight as f64);
    }
    let w = crate::write_behind::last_stats();
    ::metrics::counter!("cache_write_behind_queued_total").absolute(w.queued);
    ::metrics::counter!("cache_write_behind_inline_total").absolute(w.inline);
    ::metrics::counter!("cache_write_behind_flushed_total").absolute(w.flushed);
    ::metrics::counter!("cache_write_behind_retried_total").absolute(w.retried);
    ::metrics::counter!("cache_write_behind_coalesced_total").absolute(w.coalesced);
    ::metrics::counter!("cache_write_behind_dead_lettered_total").absolute(w.dead_lettered);
    ::metrics::gauge!("cache_write_behind_pending").set(w.pending as f64);
    ::metrics::gauge!("cache_write_behind_oldest_pending_seconds")
        .set(w.oldest_pending_ms.unwrap_or(0) as f64 / 1000.0);
}

/// Records one fill duration (called by the runtime on a miss).
pub(crate) fn record_fill(module: &'static str, function: &'static str, secs: f64) {
    let labels = [("function", function), ("module", module)];
    ::metrics::histogram!("cache_fill_duration_seconds", &labels).record(secs);
}
