//! A thread's front table: the entries this thread's recent hits found in one memory backend
//! (the default backend's), so that the next hit of the same key goes straight to its entry:
//! no shard lock, no hash-table probe.
//!
//! A slot holds an `Arc` of the entry itself, never a copy of its value: the entry says whether
//! it is still in its shard ([`Entry::is_alive`], cleared when it is removed, evicted, expired,
//! replaced or cleared), and its expiry and S3-FIFO frequency are the ones the shard reads. So a
//! hit through the front serves exactly what a hit through the shard would, and counts the
//! same. Dead entries a slot still points to are released when the slot is reused, when the
//! backend changes, or when the thread exits; the table has [`SLOTS`] slots.
//!
//! Re-entrancy: cloning a value runs user code, which may call a cached fn on this thread.
//! Only the outermost lookup of a thread writes the table (the caller says which one it is), so
//! an entry a lookup reads from stays in its slot until that lookup returns.

use std::cell::Cell;
use std::sync::Arc;

use super::store::{key_eq, Entry};

/// Slots per thread (direct-mapped by hash; 16 bytes each, allocated on a thread's first
/// hit).
pub(crate) const SLOTS: usize = 256;

struct Slot {
    hash: u64,
    entry: Option<Arc<Entry>>,
}

struct Table {
    /// The id of the backend whose entries the slots hold.
    owner: u64,
    slots: [Slot; SLOTS],
}

thread_local! {
    /// This thread's table, null until its first store (a plain cell: no lazy-init check on
    /// the hit path).
    static TABLE: Cell<*mut Table> = const { Cell::new(std::ptr::null_mut()) };
    /// Frees `TABLE` when the thread exits.
    static RELEASE: Release = const { Release };
}

struct Release;

impl Drop for Release {
    fn drop(&mut self) {
        let table = TABLE.with(|t| t.replace(std::ptr::null_mut()));
        if !table.is_null() {
            // SAFETY: made by `Box::into_raw` in `store`; no longer reachable through `TABLE`.
            drop(unsafe { Box::from_raw(table) });
        }
    }
}

#[inline(always)]
fn index(hash: u64) -> usize {
    // the high bits: the low ones also pick the shard
    (hash >> 56) as usize % SLOTS
}

/// The live entry of `key` in this thread's table for backend `owner`, if it holds one.
#[inline(always)]
pub(crate) fn find<'a>(owner: u64, hash: u64, key: &[u8]) -> Option<&'a Entry> {
    let table = TABLE.with(|t| t.get());
    if table.is_null() {
        return None;
    }
    // SAFETY: this thread's table, freed only at thread exit; slots are written only by the
    // outermost lookup (`store`), so the entry returned stays in its slot (and alive as an
    // allocation) until the lookup that asked for it returns.
    let table = unsafe { &*table };
    let slot = &table.slots[index(hash)];
    let e = slot.entry.as_deref()?;
    if table.owner != owner || slot.hash != hash || !key_eq(&e.key, key) || !e.is_alive() {
        return None;
    }
    Some(e)
}

/// Puts `entry` (of backend `owner`) in this thread's table. Call only from the outermost
/// lookup of the thread. Returns what it displaced, for the caller to drop when it is done
/// (dropping a value runs user code).
pub(crate) fn store(owner: u64, entry: Arc<Entry>) -> Displaced {
    let mut table = TABLE.with(|t| t.get());
    if table.is_null() {
        if RELEASE.try_with(|_| ()).is_err() {
            return Displaced::default(); // the thread is exiting
        }
        let fresh = Box::new(Table {
            owner,
            slots: std::array::from_fn(|_| Slot {
                hash: 0,
                entry: None,
            }),
        });
        table = Box::into_raw(fresh);
        TABLE.with(|t| t.set(table));
    }
    // SAFETY: this thread's table; the caller is the outermost lookup, so no reference into
    // it is held.
    let table = unsafe { &mut *table };
    let mut displaced = Displaced::default();
    if table.owner != owner {
        table.owner = owner;
        displaced._others = table
            .slots
            .iter_mut()
            .filter_map(|s| s.entry.take())
            .collect();
    }
    let slot = &mut table.slots[index(entry.hash)];
    slot.hash = entry.hash;
    displaced._slot = slot.entry.replace(entry);
    displaced
}

/// Entries taken out of the table, dropped by the caller once it no longer reads the table.
#[derive(Default)]
#[must_use]
pub(crate) struct Displaced {
    _slot: Option<Arc<Entry>>,
    _others: Vec<Arc<Entry>>,
}

#[cfg(test)]
mod tests {
    use crate::memory::{Front, MemoryBackend, Typed};
    use crate::{value, Backend, EntryOptions, Key};

    fn put(b: &MemoryBackend, k: &Key, v: u64) {
        b.set_blocking(k, value::share(v), &EntryOptions::new(), b.current_lease())
            .unwrap();
    }

    fn hit(b: &MemoryBackend, k: &Key) -> Option<u64> {
        let stripe = crate::stats::stripe();
        if let Some(v) = b.front_hit::<u64>(&k.local(), stripe) {
            return Some(v);
        }
        match b.lookup_typed::<u64>(&k.local(), stripe, Front::ReadWrite) {
            Typed::Hit(v) => Some(v),
            _ => None,
        }
    }

    #[test]
    fn an_evicted_entry_is_not_served_from_the_front() {
        let b = MemoryBackend::builder()
            .max_entries(64)
            .shards(1)
            .build()
            .unwrap();
        let a = Key::new("a", b"a");
        put(&b, &a, 1);
        assert_eq!(hit(&b, &a), Some(1)); // in the shard; now in the front too
        assert!(super::find(b.id, a.local().hash, a.local().bytes).is_some());
        let mut i = 0u64;
        while b.contains("a") {
            let k = Key::new(format!("k{i}"), &i.to_le_bytes());
            put(&b, &k, i);
            // read once: S3-FIFO promotes it to the main queue, where `a` ages out
            b.lookup_local(&k.local(), &mut |_| {});
            i += 1;
            assert!(i < 10_000, "`a` was never evicted");
        }
        assert!(super::find(b.id, a.local().hash, a.local().bytes).is_none());
        assert_eq!(hit(&b, &a), None, "evicted: a miss, not the front's entry");
    }

    #[test]
    fn another_backend_does_not_see_this_ones_entries() {
        let (b1, b2) = (MemoryBackend::new(), MemoryBackend::new());
        let k = Key::new("k", b"k");
        put(&b1, &k, 1);
        assert_eq!(hit(&b1, &k), Some(1));
        assert_eq!(hit(&b2, &k), None);
        put(&b2, &k, 2);
        assert_eq!(hit(&b2, &k), Some(2));
        assert_eq!(hit(&b2, &k), Some(2));
        assert_eq!(hit(&b1, &k), Some(1));
    }
}
