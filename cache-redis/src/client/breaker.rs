//! The circuit breaker: after `threshold` consecutive outages, Redis is skipped for a
//! cool-down; then one probe is let through (half-open) and its result closes or re-opens it.
//!
//! The closed state costs one relaxed load per operation (and one more on success).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::RedisCacheError;

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    failures: AtomicU32,
    /// 0 = closed; otherwise the time (ms) the breaker opened until.
    open_until: AtomicU64,
    probing: AtomicBool,
    trips: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold,
            cooldown,
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            trips: AtomicU64::new(0),
        }
    }

    /// `Err(CircuitOpen)` while open; in the half-open state, one caller gets through.
    #[inline]
    pub(crate) fn allow(&self) -> Result<(), RedisCacheError> {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return Ok(());
        }
        if now_ms() >= until && !self.probing.swap(true, Relaxed) {
            return Ok(());
        }
        Err(RedisCacheError::CircuitOpen {
            failures: self.failures.load(Relaxed),
            cooldown: self.cooldown,
        })
    }

    #[inline]
    pub(crate) fn success(&self) {
        if self.failures.load(Relaxed) != 0 || self.open_until.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
            self.open_until.store(0, Relaxed);
            self.probing.store(false, Relaxed);
        }
    }

    pub(crate) fn failure(&self) {
        let f = self.failures.fetch_add(1, Relaxed).saturating_add(1);
        if f >= self.threshold {
            let was = self
                .open_until
                .swap(now_ms() + self.cooldown.as_millis() as u64, Relaxed);
            self.probing.store(false, Relaxed);
            if was == 0 {
                self.trips.fetch_add(1, Relaxed);
                tracing::warn!(
                    failures = f,
                    cooldown = ?self.cooldown,
                    "Redis unreachable: circuit breaker open, cached fns run uncached"
                );
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open_until.load(Relaxed) != 0
    }

    pub(crate) fn trips(&self) -> u64 {
        self.trips.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_after_cooldown() {
        let b = Breaker::new(2, Duration::from_millis(20));
        assert!(b.allow().is_ok());
        b.failure();
        assert!(b.allow().is_ok());
        b.failure();
        assert!(b.allow().is_err());
        assert!(b.is_open());
        let deadline = Instant::now() + Duration::from_secs(5);
        while b.allow().is_err() {
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(2));
        }
        // half-open: only one probe
        assert!(b.allow().is_err());
        b.success();
        assert!(!b.is_open());
        assert!(b.allow().is_ok());
        assert_eq!(b.trips(), 1);
    }
}
