//! One shard of the memory backend: a hash table of slot indices over a slab of entries, with
//! the eviction queues threaded through the slab.
//!
//! Readers (hits) hold the shard's read lock and only touch atomics of an entry (S3-FIFO
//! frequency bits, the sliding deadline). Structural changes (insert, remove, evict) need the
//! write lock, and the backend makes them under its fill lock too, so the dependency index can
//! follow them exactly.

use std::any::{Any, TypeId};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashTable;

use super::clock::{duration_nanos, Clock};
use super::policy::{EvictionPolicy, Ghost, LinkStore, Links, List, MAIN, NIL, SMALL};
use crate::value::SharedValue;

/// A deadline that never comes.
pub(crate) const NEVER: u64 = u64::MAX;

/// An S3-FIFO entry of the small queue read more than this many times moves to the main queue
/// when it reaches the end of the small queue.
const PROMOTE_ABOVE: u8 = 0;
/// The highest frequency counted.
const MAX_FREQ: u8 = 3;
/// S3-FIFO's small queue holds up to 1/`SMALL_DIV` of a shard's capacity.
const SMALL_DIV: usize = 32;
/// S3-FIFO's ghost queue remembers up to 1/`GHOST_DIV` of a shard's capacity in hashes.
const GHOST_DIV: usize = 4;

/// When an entry stops being served.
pub(crate) struct Expiry {
    /// min(ttl deadline, last read + sliding); `NEVER` for entries that do not expire.
    deadline: AtomicU64,
    /// The absolute (ttl) deadline, or `NEVER`.
    ttl_deadline: u64,
    /// The sliding window in nanoseconds, or `NEVER` for none.
    sliding: u64,
    /// How long (ns) past `deadline` the entry stays, readable only as stale (0: none).
    grace: u64,
}

impl Expiry {
    pub(crate) fn new(
        now: u64,
        ttl: Option<Duration>,
        sliding: Option<Duration>,
        stale: Option<Duration>,
    ) -> Self {
        let ttl_deadline = ttl.map_or(NEVER, |t| now.saturating_add(duration_nanos(t)));
        let sliding = sliding.map_or(NEVER, |s| duration_nanos(s).min(NEVER - 1));
        let deadline = if sliding == NEVER {
            ttl_deadline
        } else {
            ttl_deadline.min(now.saturating_add(sliding))
        };
        Expiry {
            deadline: AtomicU64::new(deadline),
            ttl_deadline,
            sliding,
            grace: stale.map_or(0, duration_nanos),
        }
    }

    /// Whether the entry may be served now; a read pushes a sliding deadline forward. Entries
    /// without expiration do not read the clock.
    #[inline(always)]
    fn read(&self, clock: &Clock) -> bool {
        let deadline = self.deadline.load(Relaxed);
        if deadline == NEVER {
            return true;
        }
        let now = clock.now();
        if now >= deadline {
            return false;
        }
        if self.sliding != NEVER {
            let pushed = now.saturating_add(self.sliding).min(self.ttl_deadline);
            if pushed > deadline {
                self.deadline.fetch_max(pushed, Relaxed);
            }
        }
        true
    }

    /// A copy (for an entry rebuilt in place).
    fn copy(&self) -> Self {
        Expiry {
            deadline: AtomicU64::new(self.deadline.load(Relaxed)),
            ttl_deadline: self.ttl_deadline,
            sliding: self.sliding,
            grace: self.grace,
        }
    }

    /// Whether the entry is gone at `now` (past its deadline and its stale window).
    pub(crate) fn expired_at(&self, now: u64) -> bool {
        self.deadline.load(Relaxed).saturating_add(self.grace) <= now
    }

    /// How long (ns) ago the entry stopped being fresh, if it is inside its stale window.
    fn stale_age(&self, now: u64) -> Option<u64> {
        let deadline = self.deadline.load(Relaxed);
        if self.grace == 0 || deadline == NEVER || now < deadline {
            return None;
        }
        let age = now - deadline;
        (age < self.grace).then_some(age)
    }
}

/// A stored entry. The fields a hit reads come first (`repr(C)`), so a hit touches the start
/// of the allocation only.
#[repr(C)]
pub(crate) struct Entry {
    pub(crate) hash: u64,
    /// The binary key (what lookups compare), inline when short.
    pub(crate) key: KeyBytes,
    /// `TypeId` of the value's `as_any()`, and the address it points to (inside `value`, which
    /// this entry keeps alive and never mutates): a typed hit reads the value without a
    /// virtual call.
    any_type: TypeId,
    any_addr: usize,
    pub(crate) expiry: Expiry,
    /// S3-FIFO read frequency (0..=3).
    freq: AtomicU8,
    /// True while the entry is in its shard: cleared when it leaves (removed, evicted, expired,
    /// replaced, cleared), which is how a thread's front table ([`super::front`]) learns that a
    /// pointer it holds is no longer served.
    alive: AtomicBool,
    /// The readable key (an implicit dependency of the entry).
    pub(crate) text: Arc<str>,
    pub(crate) value: SharedValue,
    /// Declared dependencies, deduplicated, without the key text.
    pub(crate) deps: Box<[Arc<str>]>,
    /// Unique for the backend's lifetime.
    pub(crate) id: u64,
    pub(crate) weight: u64,
}

/// The address of an entry held by an `Arc` in its shard's slab. The shard's table keeps one
/// per key, written under the shard's write lock whenever the slab's `Arc` changes (insert,
/// remove, value replaced), and read under its read lock, so it always points to an entry the
/// slab keeps alive.
#[derive(Clone, Copy)]
struct EntryPtr(*const Entry);

// SAFETY: an `EntryPtr` is only dereferenced under the lock of the shard that holds it, while
// the `Arc` it was taken from is in that shard's slab (see `EntryPtr`); `Entry` is Send + Sync.
unsafe impl Send for EntryPtr {}
// SAFETY: as for Send.
unsafe impl Sync for EntryPtr {}

impl EntryPtr {
    /// # Safety
    /// The shard's `Arc` of this entry is still in its slab and the shard is borrowed.
    #[inline(always)]
    unsafe fn get<'a>(self) -> &'a Entry {
        // SAFETY: the caller's contract
        unsafe { &*self.0 }
    }
}

/// Bytes of a binary key kept inside the entry (longer keys are boxed).
const INLINE_KEY: usize = 30;

/// A binary key: inline up to [`INLINE_KEY`] bytes (a hit compares it without another memory
/// access), else on the heap.
#[derive(Clone)]
pub(crate) enum KeyBytes {
    Inline(u8, [u8; INLINE_KEY]),
    Heap(Box<[u8]>),
}

impl KeyBytes {
    pub(crate) fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= INLINE_KEY {
            let mut inline = [0u8; INLINE_KEY];
            inline[..bytes.len()].copy_from_slice(bytes);
            KeyBytes::Inline(bytes.len() as u8, inline)
        } else {
            KeyBytes::Heap(bytes.into())
        }
    }

    #[inline(always)]
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            KeyBytes::Inline(n, b) => &b[..(*n as usize).min(INLINE_KEY)],
            KeyBytes::Heap(b) => b,
        }
    }
}

/// The `TypeId` of `value.as_any()` and the address it points to (inside `value`'s
/// allocation): what [`Entry::typed`] reads instead of calling `as_any`.
fn any_parts(value: &SharedValue) -> (TypeId, usize) {
    let any: &dyn Any = value.as_any();
    (any.type_id(), any as *const dyn Any as *const () as usize)
}

impl Entry {
    /// Whether the value is a `V`.
    #[inline(always)]
    pub(crate) fn holds<V: 'static>(&self) -> bool {
        self.any_type == TypeId::of::<V>()
    }

    /// A clone of the value if it is a `V`.
    #[inline]
    pub(crate) fn typed<V: Clone + 'static>(&self) -> Option<V> {
        if self.any_type == TypeId::of::<V>() {
            // SAFETY: `any_addr` is the address of the `&dyn Any` whose type id is `V`'s, taken
            // from the value this entry holds (alive and unmoved behind its `Arc`).
            Some(unsafe { &*(self.any_addr as *const V) }.clone())
        } else {
            None
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        hash: u64,
        key: KeyBytes,
        text: Arc<str>,
        value: SharedValue,
        deps: Box<[Arc<str>]>,
        id: u64,
        weight: u64,
        expiry: Expiry,
    ) -> Self {
        let (any_type, any_addr) = any_parts(&value);
        Entry {
            any_type,
            any_addr,
            hash,
            key,
            text,
            value,
            deps,
            id,
            weight,
            expiry,
            freq: AtomicU8::new(0),
            alive: AtomicBool::new(true),
        }
    }

    /// Whether the entry is still in its shard (see [`Self::alive`]).
    #[inline(always)]
    pub(crate) fn is_alive(&self) -> bool {
        self.alive.load(std::sync::atomic::Ordering::Acquire)
    }

    fn kill(&self) {
        self.alive.store(false, Release);
    }

    /// The read side of a hit (S3-FIFO, FIFO): whether the entry may be served now (a read
    /// pushes a sliding deadline forward), counting the read for S3-FIFO when `count`.
    #[inline(always)]
    pub(crate) fn read(&self, clock: &Clock, count: bool) -> bool {
        if !self.expiry.read(clock) {
            return false;
        }
        if count {
            let f = self.freq.load(Relaxed);
            if f < MAX_FREQ {
                self.freq.store(f + 1, Relaxed);
            }
        }
        true
    }
}

struct Node {
    entry: Option<Arc<Entry>>,
    links: Links,
}

impl LinkStore for Vec<Node> {
    #[inline]
    fn links(&mut self, slot: u32) -> &mut Links {
        &mut self[slot as usize].links
    }
}

/// What an insert displaced: the entry it overwrote, the entries it evicted (with their
/// slots), and the new entry itself if it could not be stored (heavier than the shard).
#[derive(Default)]
pub(crate) struct Displaced {
    pub(crate) replaced: Option<(u32, Arc<Entry>)>,
    pub(crate) evicted: Vec<(u32, Arc<Entry>)>,
    pub(crate) unstored: Option<Arc<Entry>>,
}

/// One shard (held in a `RwLock` by the backend).
pub(crate) struct Shard {
    /// Slot and entry of every key: a probe compares the entry it points to without reading
    /// the slab (the slab's `Arc` keeps the entry where the pointer says).
    table: HashTable<(u32, EntryPtr)>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// `[MAIN, SMALL]`.
    queues: [List; 2],
    ghost: Ghost,
    len: usize,
    weight: u64,
    cap_entries: usize,
    cap_weight: u64,
}

/// Byte equality without a `memcmp` call for the short keys of the hit path.
#[inline(always)]
pub(crate) fn key_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a == b;
    }
    let word = |s: &[u8], i: usize| u64::from_ne_bytes(s[i..i + 8].try_into().unwrap_or([0; 8]));
    if n <= 16 {
        // two words, overlapping when `n` < 16: the common short key, without a loop
        return word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8);
    }
    // 8-byte words, the last one overlapping the one before when `n` is not a multiple of 8
    let mut i = 0;
    while i + 8 < n {
        if word(a, i) != word(b, i) {
            return false;
        }
        i += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

impl Shard {
    pub(crate) fn new(cap_entries: usize, cap_weight: u64) -> Self {
        Shard {
            table: HashTable::new(),
            nodes: Vec::new(),
            free: Vec::new(),
            queues: [List::default(); 2],
            ghost: Ghost::default(),
            len: 0,
            weight: 0,
            cap_entries,
            cap_weight,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn weight(&self) -> u64 {
        self.weight
    }

    #[inline]
    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.find_entry(hash, key).map(|(_, slot)| slot)
    }

    /// The entry of `key` and its slot: one probe, one entry read.
    #[inline(always)]
    fn find_entry(&self, hash: u64, key: &[u8]) -> Option<(&Entry, u32)> {
        let &(slot, ptr) = self.table.find(hash, |&(_, p)| {
            // SAFETY: see `EntryPtr`
            let e = unsafe { p.get() };
            e.hash == hash && key_eq(e.key.as_slice(), key)
        })?;
        // SAFETY: see `EntryPtr`; the borrow of `self` keeps the slab (and its `Arc`) as is
        Some((unsafe { ptr.get() }, slot))
    }

    /// The `Arc` of the entry at `slot`.
    #[inline]
    pub(crate) fn arc_at(&self, slot: u32) -> Option<&Arc<Entry>> {
        self.nodes.get(slot as usize)?.entry.as_ref()
    }

    #[inline]
    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.nodes.get(slot as usize)?.entry.as_deref()
    }

    /// The hit path under the read lock (S3-FIFO, FIFO): no allocation, atomics only.
    #[inline(always)]
    pub(crate) fn get(
        &self,
        hash: u64,
        key: &[u8],
        clock: &Clock,
        count: bool,
    ) -> Option<(&Entry, u32)> {
        let (e, slot) = self.find_entry(hash, key)?;
        if !e.read(clock, count) {
            return None;
        }
        Some((e, slot))
    }

    /// An entry past its fresh time but inside its stale window, and how long ago (ns) it
    /// stopped being fresh. Not a hit: nothing is counted or moved.
    pub(crate) fn get_stale(&self, hash: u64, key: &[u8], clock: &Clock) -> Option<(&Entry, u64)> {
        let (e, _) = self.find_entry(hash, key)?;
        let age = e.expiry.stale_age(clock.now())?;
        Some((e, age))
    }

    /// The LRU hit path, under the write lock: moves the entry to the front.
    #[inline]
    pub(crate) fn get_lru(&mut self, hash: u64, key: &[u8], clock: &Clock) -> Option<&Entry> {
        let slot = self.find(hash, key)?;
        let e = self.entry(slot)?;
        if !e.expiry.read(clock) {
            return None;
        }
        let weight = e.weight;
        let q = self.nodes[slot as usize].links.queue as usize;
        if self.queues[q].head != slot {
            self.queues[q].unlink(&mut self.nodes, slot, weight);
            self.queues[q].push_head(&mut self.nodes, slot, weight);
        }
        self.entry(slot)
    }

    /// Whether an entry of this weight can ever fit in the shard.
    pub(crate) fn fits(&self, weight: u64) -> bool {
        weight <= self.cap_weight
    }

    /// Stores `entry`, overwriting an entry with the same key and evicting to stay within
    /// bounds. Returns the new entry's slot if it is stored.
    pub(crate) fn insert(
        &mut self,
        entry: Entry,
        policy: EvictionPolicy,
        out: &mut Displaced,
    ) -> Option<u32> {
        let mut queue = match policy {
            EvictionPolicy::S3Fifo => SMALL,
            _ => MAIN,
        };
        let mut freq = 0;
        if let Some(slot) = self.find(entry.hash, entry.key.as_slice()) {
            if let Some((old, old_queue)) = self.remove_at(slot) {
                if policy == EvictionPolicy::S3Fifo && old_queue == MAIN {
                    queue = MAIN;
                    freq = old.freq.load(Relaxed);
                }
                out.replaced = Some((slot, old));
            }
        }
        let entry = Arc::new(entry);
        if !self.fits(entry.weight) {
            out.unstored = Some(entry);
            return None;
        }
        if queue == SMALL && self.ghost.contains(entry.hash) {
            queue = MAIN;
        }
        // Count the new entry, evict among the others, then queue it: it is never its own
        // victim while anything else can leave.
        self.len += 1;
        self.weight += entry.weight;
        self.evict(policy, &mut out.evicted);
        let (hash, weight) = (entry.hash, entry.weight);
        entry.freq.store(freq, Relaxed);
        // the slab keeps this `Arc` (the entry does not move) until the table forgets `ptr`
        let ptr = EntryPtr(Arc::as_ptr(&entry));
        let slot = match self.free.pop() {
            Some(s) => {
                self.nodes[s as usize].entry = Some(entry);
                s
            }
            None => {
                self.nodes.push(Node {
                    entry: Some(entry),
                    links: Links::default(),
                });
                (self.nodes.len() - 1) as u32
            }
        };
        // SAFETY (rehash): see `EntryPtr`
        self.table
            .insert_unique(hash, (slot, ptr), |&(_, p)| unsafe { p.get() }.hash);
        self.nodes[slot as usize].links.queue = queue;
        self.queues[queue as usize].push_head(&mut self.nodes, slot, weight);
        Some(slot)
    }

    fn over(&self) -> bool {
        self.len > self.cap_entries || self.weight > self.cap_weight
    }

    fn evict(&mut self, policy: EvictionPolicy, out: &mut Vec<(u32, Arc<Entry>)>) {
        while self.over() {
            let victim = match policy {
                EvictionPolicy::S3Fifo => self.s3fifo_victim(),
                _ => self.queues[MAIN as usize].tail,
            };
            if victim == NIL {
                break;
            }
            match self.remove_at(victim) {
                Some((e, _)) => out.push((victim, e)),
                None => break,
            }
        }
    }

    /// Runs S3-FIFO until it designates a victim (promoting and re-queueing on the way).
    fn s3fifo_victim(&mut self) -> u32 {
        // Sizes tuned on Zipf traces (benches/hit_ratio.rs): a ghost of a quarter of the
        // capacity and a small queue of 1/32 beat a 100% ghost and a 10% small queue by 0.5 to
        // 1.5 points of hit ratio at 1% and 10% capacity.
        let ghost_cap = if self.cap_entries == usize::MAX {
            (self.len / GHOST_DIV).max(64)
        } else {
            self.cap_entries / GHOST_DIV
        };
        loop {
            let small = self.queues[SMALL as usize];
            let main = self.queues[MAIN as usize];
            let small_full = small.len > self.cap_entries / SMALL_DIV
                || small.weight > self.cap_weight / SMALL_DIV as u64;
            if small.len > 0 && (small_full || main.len == 0) {
                let t = small.tail;
                let Some(e) = self.entry(t) else { return NIL };
                let (weight, hash) = (e.weight, e.hash);
                if e.freq.load(Relaxed) > PROMOTE_ABOVE {
                    e.freq.store(0, Relaxed);
                    self.queues[SMALL as usize].unlink(&mut self.nodes, t, weight);
                    self.nodes[t as usize].links.queue = MAIN;
                    self.queues[MAIN as usize].push_head(&mut self.nodes, t, weight);
                    continue;
                }
                self.ghost.insert(hash, ghost_cap);
                return t;
            }
            if main.len == 0 {
                return NIL;
            }
            let t = main.tail;
            let Some(e) = self.entry(t) else { return NIL };
            let f = e.freq.load(Relaxed);
            if f == 0 {
                return t;
            }
            e.freq.store(f - 1, Relaxed);
            let weight = e.weight;
            self.queues[MAIN as usize].unlink(&mut self.nodes, t, weight);
            self.queues[MAIN as usize].push_head(&mut self.nodes, t, weight);
        }
    }

    /// Takes the entry at `slot` out of the table, its queue and the slab.
    fn remove_at(&mut self, slot: u32) -> Option<(Arc<Entry>, u8)> {
        let node = self.nodes.get(slot as usize)?;
        let e = node.entry.as_ref()?;
        let (hash, weight, queue) = (e.hash, e.weight, node.links.queue);
        self.queues[queue as usize].unlink(&mut self.nodes, slot, weight);
        if let Ok(found) = self.table.find_entry(hash, |&(i, _)| i == slot) {
            found.remove();
        }
        let e = self.nodes[slot as usize].entry.take()?;
        e.kill();
        self.free.push(slot);
        self.len -= 1;
        self.weight -= weight;
        Some((e, queue))
    }

    /// Removes the entry at `slot` if it is still the one with this id.
    pub(crate) fn remove(&mut self, slot: u32, id: u64) -> Option<Arc<Entry>> {
        if self.entry(slot)?.id != id {
            return None;
        }
        self.remove_at(slot).map(|(e, _)| e)
    }

    /// Moves every entry expired at `now` into `out`.
    pub(crate) fn take_expired(&mut self, now: u64, out: &mut Vec<(u32, Arc<Entry>)>) {
        for slot in 0..self.nodes.len() as u32 {
            if self.entry(slot).is_some_and(|e| e.expiry.expired_at(now)) {
                if let Some((e, _)) = self.remove_at(slot) {
                    out.push((slot, e));
                }
            }
        }
    }

    /// Moves every entry into `out` and forgets the policy's history.
    pub(crate) fn drain(&mut self, out: &mut Vec<Arc<Entry>>) {
        out.extend(
            self.nodes
                .drain(..)
                .filter_map(|n| n.entry)
                .inspect(|e| e.kill()),
        );
        *self = Shard::new(self.cap_entries, self.cap_weight);
    }

    /// Every entry with its slot (for introspection).
    pub(crate) fn entries(&self) -> impl Iterator<Item = (u32, &Entry)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.entry.as_deref().map(|e| (i as u32, e)))
    }

    /// The key text of the entry at `slot` if it still has this id.
    pub(crate) fn text_of(&self, slot: u32, id: u64) -> Option<&Arc<str>> {
        self.entry(slot).filter(|e| e.id == id).map(|e| &e.text)
    }
}

impl Shard {
    /// Puts `new` in place of the value of the entry of `key` if that value is `expected` (the
    /// same allocation), keeping the rest of the entry (weight, id, expiry, frequency);
    /// `Ok(old entry)`, or `Err(new)` when the entry is absent or holds another value. The
    /// caller drops either after releasing the lock. The entry is immutable once shared (front
    /// tables hold it), so this makes a new one with copies of the key and dependency list (a
    /// rare path: once per entry whose bytes are decoded).
    pub(crate) fn replace_value_if_same(
        &mut self,
        hash: u64,
        key: &[u8],
        expected: &SharedValue,
        new: SharedValue,
    ) -> Result<Arc<Entry>, SharedValue> {
        let Some(slot) = self.find(hash, key) else {
            return Err(new);
        };
        let Some(e) = self.nodes[slot as usize].entry.as_mut() else {
            return Err(new);
        };
        if !Arc::ptr_eq(&e.value, expected) {
            return Err(new);
        }
        let (any_type, any_addr) = any_parts(&new);
        let fresh = Arc::new(Entry {
            hash: e.hash,
            key: e.key.clone(),
            text: e.text.clone(),
            value: new,
            deps: e.deps.clone(),
            id: e.id,
            weight: e.weight,
            expiry: e.expiry.copy(),
            freq: AtomicU8::new(e.freq.load(Relaxed)),
            any_type,
            any_addr,
            alive: AtomicBool::new(true),
        });
        let ptr = EntryPtr(Arc::as_ptr(&fresh));
        let old = std::mem::replace(e, fresh);
        if let Ok(mut found) = self.table.find_entry(hash, |&(i, _)| i == slot) {
            found.get_mut().1 = ptr;
        }
        old.kill();
        Ok(old)
    }
}
