//! A thread's front table: the entries this thread's recent hits found in the memory backends
//! its cached fns use (the default backend's, a profile's), so that the next hit of the same key
//! goes straight to its entry: no shard lock, no hash-table probe.
//!
//! A slot holds an `Arc` of the entry itself, never a copy of its value: the entry says whether
//! it is still in its shard ([`Entry::is_alive`], cleared when it is removed, evicted, expired,
//! replaced or cleared), and its expiry and S3-FIFO frequency are the ones the shard reads. So a
//! hit through the front serves exactly what a hit through the shard would, and counts the
//! same. Dead entries a slot still points to are released when the slot is reused or when the
//! thread exits; the table has [`SLOTS`] slots.
//!
//! Re-entrancy: cloning a value runs user code, which may call a cached fn on this thread.
//! Only the outermost lookup of a thread writes the table (the caller says which one it is), so
//! an entry a lookup reads from stays in its slot until that lookup returns.

use std::cell::Cell;
use std::sync::Arc;

use super::store::{key_eq, Entry};

/// Slots per thread (direct-mapped by hash; 32 bytes each, allocated on a thread's first
/// hit in a shard), shared by the memory backends the thread hits (each slot says whose entry
/// it holds).
pub(crate) const SLOTS: usize = 256;

/// A slot's entry gives way after this many offers for other keys without a hit in between.
const ADMIT_AFTER: u8 = 8;

/// Offers (lookups that missed the table and hit a shard) per window of the bypass decision.
const WINDOW: u32 = 512;

/// Lookups that skip the table after a window in which it served fewer than a third of the
/// hits (a working set much larger than the table, without hot keys: looking first in the
/// table only adds work there).
const BYPASS: u32 = 16_384;

struct Slot {
    /// The id of the backend the entry belongs to.
    owner: u64,
    hash: u64,
    entry: Option<Arc<Entry>>,
    /// Offers refused since the slot's entry was last hit.
    conflicts: Cell<u8>,
}

struct Table {
    /// Lookups left to skip the table (see [`BYPASS`]).
    bypass: Cell<u32>,
    /// Hits served in the current window.
    hits: Cell<u32>,
    /// Offers made in the current window.
    offers: Cell<u32>,
    slots: [Slot; SLOTS],
}

thread_local! {
    /// This thread's table, null until its first offer is taken (a plain cell: no lazy-init check on
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
            // SAFETY: made by `Box::into_raw` in `allocate`; no longer reachable through `TABLE`.
            drop(unsafe { Box::from_raw(table) });
        }
    }
}

#[inline(always)]
fn index(hash: u64) -> usize {
    // mixed again (one multiply): the slot must not follow the bits that pick the shard and
    // the hash table's bucket, and keys that differ in one byte must not share slots
    (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SLOTS
}

/// The live entry of `key` in this thread's table for backend `owner`, if it holds one.
#[inline(always)]
pub(crate) fn find<'a>(owner: u64, hash: u64, key: &[u8]) -> Option<&'a Entry> {
    let table = TABLE.with(|t| t.get());
    if table.is_null() {
        return None;
    }
    // SAFETY: this thread's table, freed only at thread exit; slots are written only by the
    // outermost lookup (`offer`), so the entry returned stays in its slot (and alive as an
    // allocation) until the lookup that asked for it returns.
    let table = unsafe { &*table };
    let bypass = table.bypass.get();
    if bypass != 0 {
        table.bypass.set(bypass - 1);
        return None;
    }
    let slot = &table.slots[index(hash)];
    let e = slot.entry.as_deref()?;
    if slot.hash != hash || slot.owner != owner || !key_eq(e.key.as_slice(), key) || !e.is_alive() {
        return None;
    }
    if slot.conflicts.get() != 0 {
        slot.conflicts.set(0);
    }
    table.hits.set(table.hits.get().wrapping_add(1));
    Some(e)
}

/// Offers `entry` (of backend `owner`, just hit in its shard) to this thread's table: it takes
/// its slot if the slot is free or saw [`ADMIT_AFTER`] offers for other keys (of any memory
/// backend) since its entry was last hit. With more hot keys than slots, the keys hit
/// most keep their slots instead of every hit swapping one in and out (each swap is two
/// reference-count writes on shared entries). Decided before the `Arc` is cloned: a refused
/// offer costs a few loads and a thread-local store. Every [`WINDOW`] offers, a table that
/// served fewer than half as many hits as it was offered is bypassed for [`BYPASS`] lookups.
/// `entry` gives the entry's `Arc` if it is taken. Call only from the outermost lookup of the
/// thread. Returns the entry it displaced, for the caller to drop when it is done with the
/// table (dropping a value runs user code).
#[inline]
pub(crate) fn offer(
    owner: u64,
    hash: u64,
    entry: impl FnOnce() -> Option<Arc<Entry>>,
) -> Option<Arc<Entry>> {
    let mut table = TABLE.with(|t| t.get());
    if table.is_null() {
        table = allocate();
        if table.is_null() {
            return None; // the thread is exiting
        }
    }
    // SAFETY: this thread's table; the caller is the outermost lookup, so no reference into
    // it is held.
    let table = unsafe { &mut *table };
    if table.bypass.get() != 0 {
        return None;
    }
    let offers = table.offers.get() + 1;
    if offers < WINDOW {
        table.offers.set(offers);
    } else {
        // the end of a window: skip the table for a while if it served too few of the hits
        if table.hits.get() < WINDOW / 2 {
            table.bypass.set(BYPASS);
        }
        table.offers.set(0);
        table.hits.set(0);
    }
    let slot = &mut table.slots[index(hash)];
    if slot.entry.is_some() {
        // not asking whether the held entry is alive: that would read another entry's memory
        // on every offer (a dead one gives way after a few offers like any other)
        let conflicts = slot.conflicts.get() + 1;
        if conflicts < ADMIT_AFTER {
            slot.conflicts.set(conflicts);
            return None; // its entry keeps the slot this time
        }
    }
    let entry = entry()?;
    slot.owner = owner;
    slot.hash = hash;
    slot.conflicts.set(0);
    slot.entry.replace(entry)
}

/// Allocates this thread's table on its first offer; null when the thread is exiting (the
/// table could not be freed).
#[cold]
fn allocate() -> *mut Table {
    if RELEASE.try_with(|_| ()).is_err() {
        return std::ptr::null_mut();
    }
    let table = Box::into_raw(Box::new(Table::new()));
    TABLE.with(|t| t.set(table));
    table
}

impl Table {
    fn new() -> Self {
        Table {
            bypass: Cell::new(0),
            hits: Cell::new(0),
            offers: Cell::new(0),
            slots: std::array::from_fn(|_| Slot {
                owner: 0,
                hash: 0,
                entry: None,
                conflicts: Cell::new(0),
            }),
        }
    }
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
