//! Leases: the invalidation epoch and where it was last recorded.
//!
//! A miss hands out the current epoch as a [`Lease`]. Every invalidation bumps the epoch and
//! records the new value in a fixed table of slots indexed by the hash of each dependency string
//! it reached (key texts included), and `clear` records it as "cleared at". A set whose lease is
//! older than the slot of its key text, of any of its dependencies, or than "cleared at" is
//! stale. Two strings sharing a slot only cause spurious rejections, which are safe.
//!
//! Bumping and recording happen under the backend's fill lock, and so does the staleness check
//! of a set together with its insert: a set cannot slip between an invalidation's record and its
//! removals.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::backend::Lease;
use crate::hash::local_hash;

/// Number of epoch slots (a power of two). 4096 x 8 bytes = 32 KiB per backend.
const SLOTS: usize = 4096;

pub(crate) struct Epochs {
    epoch: AtomicU64,
    cleared_at: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl Epochs {
    pub(crate) fn new() -> Self {
        Epochs {
            epoch: AtomicU64::new(0),
            cleared_at: AtomicU64::new(0),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// A lease for a fill starting now.
    #[inline]
    pub(crate) fn lease(&self) -> Lease {
        Lease(self.epoch.load(Ordering::Acquire))
    }

    /// A new epoch for an invalidation (call under the fill lock).
    pub(crate) fn bump(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::AcqRel) + 1
    }

    #[inline]
    fn slot(&self, dependency: &str) -> &AtomicU64 {
        &self.slots[local_hash(dependency.as_bytes()) as usize & (SLOTS - 1)]
    }

    /// Records that `dependency` was invalidated at `epoch` (call under the fill lock).
    pub(crate) fn record(&self, dependency: &str, epoch: u64) {
        self.slot(dependency).fetch_max(epoch, Ordering::AcqRel);
    }

    /// Records a `clear` at `epoch` (call under the fill lock).
    pub(crate) fn record_clear(&self, epoch: u64) {
        self.cleared_at.fetch_max(epoch, Ordering::AcqRel);
    }

    /// Whether a set under `lease` of an entry with this key text and these dependencies
    /// started before an invalidation of one of them (call under the fill lock).
    pub(crate) fn is_stale(&self, lease: Lease, text: &str, dependencies: &[Arc<str>]) -> bool {
        let newer = |v: &AtomicU64| v.load(Ordering::Acquire) > lease.0;
        newer(&self.cleared_at)
            || newer(self.slot(text))
            || dependencies.iter().any(|d| newer(self.slot(d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_older_than_an_invalidation_is_stale() {
        let e = Epochs::new();
        let old = e.lease();
        let deps: Vec<Arc<str>> = vec![Arc::from("d")];
        assert!(!e.is_stale(old, "k", &deps));
        let ep = e.bump();
        e.record("d", ep);
        assert!(e.is_stale(old, "k", &deps));
        assert!(!e.is_stale(old, "k", &[]));
        let fresh = e.lease();
        assert!(!e.is_stale(fresh, "k", &deps));
        let ep = e.bump();
        e.record_clear(ep);
        assert!(e.is_stale(fresh, "other", &[]));
        assert!(!e.is_stale(e.lease(), "other", &[]));
    }
}
