//! Time as the memory backend sees it: a coarse monotonic clock, or a manual one for tests.
//!
//! The hit path of an entry with an expiration reads the clock, so it must be cheap:
//! `Instant::now()` costs ~20 ns, `CLOCK_MONOTONIC_COARSE` (Linux, vDSO, a few ms resolution)
//! costs a few ns. Entries without ttl or sliding expiration never read the clock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A clock that only moves when told to: makes expiration tests deterministic.
///
/// Clones share the same time. Hand one to [`MemoryBackendBuilder::clock`](super::MemoryBackendBuilder::clock)
/// and keep a clone to advance it.
///
/// ```
/// use std::time::Duration;
/// let clock = cache_core::memory::ManualClock::new();
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), Duration::from_secs(5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time zero.
    ///
    /// ```
    /// let clock = cache_core::memory::ManualClock::new();
    /// assert_eq!(clock.now(), std::time::Duration::ZERO);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let clock = cache_core::memory::ManualClock::new();
    /// clock.advance(Duration::from_millis(1500));
    /// assert_eq!(clock.now(), Duration::from_millis(1500));
    /// ```
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(duration_nanos(by), Ordering::AcqRel);
    }

    /// The time elapsed since the clock was created (the sum of the advances).
    ///
    /// ```
    /// let clock = cache_core::memory::ManualClock::new();
    /// assert_eq!(clock.now().as_secs(), 0);
    /// ```
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

/// The clock a backend reads: nanoseconds on a monotonic scale.
#[derive(Clone, Debug)]
pub(crate) enum Clock {
    /// The coarse system clock.
    Coarse,
    /// A test clock.
    Manual(ManualClock),
}

impl Clock {
    /// Now, in nanoseconds (never `u64::MAX`, which means "never" for deadlines).
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        match self {
            Clock::Coarse => coarse_now(),
            Clock::Manual(m) => m.nanos.load(Ordering::Acquire),
        }
        .min(u64::MAX - 1)
    }
}

/// A duration in nanoseconds, saturated to `u64`.
#[inline]
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(target_os = "linux")]
#[inline]
fn coarse_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC_COARSE exists on every
    // Linux since 2.6.32 and is served from the vDSO (no system call).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return instant_now();
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

#[cfg(not(target_os = "linux"))]
#[inline]
fn coarse_now() -> u64 {
    instant_now()
}

fn instant_now() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    duration_nanos(origin.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clock_is_monotonic() {
        let c = Clock::Coarse;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }

    #[test]
    fn manual_clock_advances_for_every_clone() {
        let m = ManualClock::new();
        let c = Clock::Manual(m.clone());
        assert_eq!(c.now(), 0);
        m.advance(Duration::from_nanos(7));
        assert_eq!(c.now(), 7);
    }
}
