//! Counters of the Redis backend.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use cache_core::BackendStats;

const STRIPES: usize = 8;

#[repr(align(64))]
#[derive(Default)]
struct Padded(AtomicU64);

/// A counter striped over cache lines (threads rarely share a line).
#[derive(Default)]
pub(crate) struct Counter([Padded; STRIPES]);

fn stripe() -> usize {
    use std::cell::Cell;
    thread_local!(static S: Cell<usize> = const { Cell::new(usize::MAX) });
    S.try_with(|s| {
        if s.get() == usize::MAX {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            s.set(NEXT.fetch_add(1, Relaxed) as usize % STRIPES);
        }
        s.get()
    })
    .unwrap_or(0)
}

impl Counter {
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
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) inserts: Counter,
    pub(crate) rejected_sets: Counter,
    pub(crate) invalidated: Counter,
    pub(crate) errors: Counter,
    pub(crate) expirations: Counter,
    pub(crate) corrupt: Counter,
    pub(crate) oversize: Counter,
    pub(crate) queued: Counter,
    pub(crate) retried: Counter,
    pub(crate) dropped: Counter,
    pub(crate) gc_removed: Counter,
    pub(crate) sweeps: Counter,
    pub(crate) lock_waits: Counter,
    pub(crate) second_reads: Counter,
}

/// A snapshot of a [`RedisBackend`](crate::RedisBackend)'s counters: the common
/// [`BackendStats`] plus what only Redis has.
///
/// ```
/// let s = cache_redis::RedisStats::default();
/// assert_eq!(s.pending_invalidations, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStats {
    /// The counters every backend has (`entries`/`weight` are not tracked: 0).
    pub backend: BackendStats,
    /// Stored values that were not a valid envelope (treated as misses, overwritten by the fill).
    pub corrupt_values: u64,
    /// Values not stored because they exceeded `max_payload`.
    pub oversize_values: u64,
    /// Invalidations that failed and were queued for retry.
    pub invalidations_queued: u64,
    /// Queued invalidations applied later.
    pub invalidations_retried: u64,
    /// Queued invalidations given up because every entry they could reach had expired.
    pub invalidations_dropped: u64,
    /// Invalidations waiting to be retried now.
    pub pending_invalidations: u64,
    /// Whether the circuit breaker is open now.
    pub breaker_open: bool,
    /// How many times the breaker opened.
    pub breaker_trips: u64,
    /// Connections made (the first one and reconnections).
    pub connects: u64,
    /// Connection attempts that failed (refused, TLS handshake, authentication, timeout); the
    /// reason of the last one is [`RedisBackend::last_connect_error`](crate::RedisBackend::last_connect_error).
    pub connect_failures: u64,
    /// Reconnections that reached another server run (a restart or a failover: a new
    /// `run_id`). Each makes the backend clear its prefix before serving hits again.
    pub server_restarts: u64,
    /// Clears completed after a server restart (while fewer than `server_restarts`, no hit is
    /// served).
    pub restart_clears: u64,
    /// Dependency references removed by the garbage collector (notifications and sweeps).
    pub gc_references_removed: u64,
    /// Sweep batches run by this instance.
    pub sweep_batches: u64,
    /// Misses that waited for another process's fill (distributed single flight).
    pub lock_waits: u64,
    /// Protocol 2: lookups that took a second round trip to read the versions of names the
    /// entry lists beyond its call's declared dependencies (the first read of such an entry
    /// by this process; later ones read them in the first round trip).
    pub second_reads: u64,
}

impl Counters {
    pub(crate) fn backend(&self) -> BackendStats {
        BackendStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            inserts: self.inserts.get(),
            rejected_sets: self.rejected_sets.get(),
            evictions: 0,
            expirations: self.expirations.get(),
            invalidations: self.invalidated.get(),
            errors: self.errors.get(),
            entries: 0,
            weight: 0,
        }
    }
}
