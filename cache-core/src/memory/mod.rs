//! The in-memory backend: the embedded default store.
//!
//! [`MemoryBackend`] holds typed values (`Arc<dyn CacheValue>`) in a sharded table. A hit
//! ([`Backend::lookup_local`]) hashes nothing (the key carries its hash), takes one shard's read
//! lock, compares the binary key, checks expiry with a coarse clock (only for entries that
//! expire), bumps a relaxed frequency counter and clones the `Arc`: no allocation, no global lock.
//! A hit of a `#[cached]` fn first looks in the calling thread's front table of entries it hit
//! before (`front`): no lock and no probe at all, and exactly the same answer (an entry that
//! left its shard is never served from there).
//!
//! Fills (`set`) and invalidations serialize on one *fill lock*, which guards the dependency
//! reverse index and makes the lease check of a set atomic with its insert (see
//! [`Lease`]). Lock order: fill lock, then one shard lock at a time; hits take a
//! shard lock only. Values displaced by a set, an invalidation or an eviction are dropped after
//! every lock is released.
//!
//! ```
//! use cache_core::{Backend, EntryOptions, Key, LocalLookup, Lookup, SetOutcome, value};
//! use cache_core::memory::MemoryBackend;
//!
//! let backend = MemoryBackend::new();
//! let key = Key::new("app::get_user(7)", b"\x07");
//! let Lookup::Miss(lease) = backend.get_blocking(&key).unwrap() else { panic!() };
//! let options = EntryOptions::new().depends_on("user:7");
//! let stored = backend.set_blocking(&key, value::share("Ann".to_string()), &options, lease);
//! assert_eq!(stored.unwrap(), SetOutcome::Stored);
//! assert_eq!(backend.lookup_local(&key.local(), &mut |_| {}), LocalLookup::Hit);
//!
//! backend.invalidate_blocking("user:7").unwrap();
//! assert!(matches!(backend.lookup_local(&key.local(), &mut |_| {}), LocalLookup::Miss(_)));
//! ```

mod clock;
mod deps;
mod front;
mod lease;
mod lock;
mod policy;
mod store;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::backend::{
    Backend, BoxFuture, EntryOptions, Key, Lease, LocalKey, LocalLookup, Lookup, SetOutcome,
};
use crate::error::CacheError;
use crate::stats::{BackendStats, Counter};
use crate::value::{Hit, SharedValue};

pub use clock::ManualClock;
pub use policy::EvictionPolicy;

use clock::Clock;
use deps::{is_group, DepIndex, EntryRef};
use lease::Epochs;
use lock::{ReadGuard, StripedLock, WriteGuard};
use store::{Displaced, Entry, Expiry, Shard};

/// The entry bound of [`MemoryBackend::new`] and of a builder given no bound.
pub const DEFAULT_MAX_ENTRIES: usize = 100_000;
/// How often an installed memory backend's expired entries are swept by default
/// ([`MemoryBackendBuilder::sweep_interval`]).
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// A shard gets at least this many entries (fewer shards for small caches, so that small caches
/// evict in the exact global order of their policy).
const MIN_ENTRIES_PER_SHARD: usize = 32;
/// A shard gets at least this much weight when the backend is bounded by weight.
const MIN_WEIGHT_PER_SHARD: u64 = 4096;

/// A shard on its own cache lines, behind a *striped* reader-writer lock ([`lock`]): a reader
/// writes only the reader stripe of its own thread, so two threads hitting the same shard write
/// no shared cache line (a plain `RwLock`'s reader count would bounce between their cores).
/// Writers (fills, invalidations, evictions) wait for every stripe; they are the rarer
/// operation. A panic while writing leaves the shard structurally sound: every write keeps the
/// table and the queues consistent before anything that can panic.
#[repr(align(128))]
struct Padded(StripedLock<Shard>);

impl Padded {
    #[inline]
    fn read(&self) -> ReadGuard<'_, Shard> {
        self.0.read()
    }
    #[inline]
    fn write(&self) -> WriteGuard<'_, Shard> {
        self.0.write()
    }
}

/// What the fill lock guards.
struct FillState {
    index: DepIndex,
    /// The group names seen (one per cached fn: see [`deps::is_group`]), shared by the
    /// entries that carry them.
    groups: hashbrown::HashSet<Arc<str>, foldhash::fast::RandomState>,
    next_id: u64,
}

#[derive(Default)]
struct Counters {
    hits: Counter,
    misses: Counter,
    inserts: Counter,
    rejected_sets: Counter,
    evictions: Counter,
    expirations: Counter,
    invalidations: Counter,
}

/// The in-memory backend (the embedded default store): sharded, bounded by entries and/or
/// weight, with S3-FIFO (default), LRU or FIFO eviction, ttl and sliding expiration, a
/// dependency reverse index with transitive invalidation, and leases (no stale set).
///
/// ```
/// use cache_core::{Backend, MemoryBackend};
/// let backend = MemoryBackend::new();
/// assert_eq!(backend.name(), "memory");
/// assert!(backend.is_empty());
/// ```
pub struct MemoryBackend {
    shards: Box<[Padded]>,
    shard_mask: usize,
    policy: EvictionPolicy,
    clock: Clock,
    /// Nanoseconds between background sweeps, and when the next one is due (clock scale).
    sweep_every: u64,
    next_sweep: std::sync::atomic::AtomicU64,
    fill: Mutex<FillState>,
    epochs: Epochs,
    counters: Counters,
    max_entries: usize,
    max_weight: Option<u64>,
    /// Unique per backend made in this process (what a thread's front table is keyed by).
    id: u64,
}

/// Configures a [`MemoryBackend`]; made by [`MemoryBackend::builder`].
///
/// ```
/// use cache_core::memory::{EvictionPolicy, MemoryBackend};
/// let backend = MemoryBackend::builder()
///     .max_entries(10_000)
///     .max_weight(64 << 20)
///     .policy(EvictionPolicy::S3Fifo)
///     .build()
///     .unwrap();
/// assert_eq!(backend.max_entries(), 10_000);
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MemoryBackendBuilder {
    max_entries: Option<usize>,
    max_weight: Option<u64>,
    policy: EvictionPolicy,
    clock: Option<ManualClock>,
    shards: Option<usize>,
    sweep_interval: Option<Duration>,
}

impl MemoryBackendBuilder {
    /// Bounds the number of entries. Without any bound the backend holds at most
    /// [`DEFAULT_MAX_ENTRIES`]; with only [`max_weight`](Self::max_weight) the number of
    /// entries is not bounded.
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::builder().max_entries(3).build().unwrap();
    /// assert_eq!(b.max_entries(), 3);
    /// ```
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = Some(n);
        self
    }

    /// Bounds the total weight: for each entry, `CacheValue::weight()` plus the lengths of its
    /// binary key and of its readable key. The bound is split evenly between shards; an entry
    /// heavier than its shard's share is not stored (and counted as evicted).
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::builder().max_weight(1 << 20).build().unwrap();
    /// assert_eq!(b.max_weight(), Some(1 << 20));
    /// ```
    pub fn max_weight(mut self, bytes: u64) -> Self {
        self.max_weight = Some(bytes);
        self
    }

    /// Chooses the eviction policy (default: [`EvictionPolicy::S3Fifo`]).
    ///
    /// ```
    /// use cache_core::memory::{EvictionPolicy, MemoryBackend};
    /// let b = MemoryBackend::builder().policy(EvictionPolicy::Fifo).build().unwrap();
    /// assert_eq!(b.policy(), EvictionPolicy::Fifo);
    /// ```
    pub fn policy(mut self, policy: EvictionPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Uses a manual clock instead of the system's (for tests of expiration).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::memory::{ManualClock, MemoryBackend};
    /// let clock = ManualClock::new();
    /// let b = MemoryBackend::builder().clock(clock.clone()).build().unwrap();
    /// clock.advance(Duration::from_secs(60)); // entries of `b` age by a minute
    /// # drop(b);
    /// ```
    pub fn clock(mut self, clock: ManualClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Sets the number of shards (a power of two). By default: the next power of two at or above
    /// 4 x the number of CPUs, reduced so that each shard holds at least 32 entries (and 4 KiB
    /// when bounded by weight). Bounds are split evenly between shards, so eviction order is
    /// exact only within a shard; one shard gives the exact global order.
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::builder().shards(1).build().unwrap();
    /// assert_eq!(b.shard_count(), 1);
    /// ```
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// How often expired entries are removed from an installed backend (the default backend
    /// or a profile's, and a local cache of cache-redis): a background thread sweeps it when
    /// this much time has passed since the last sweep. Expired entries are never served either
    /// way; sweeping returns their memory without waiting for a lookup or an eviction to reach
    /// them. Default [`DEFAULT_SWEEP_INTERVAL`] (60 s).
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::builder()
    ///     .sweep_interval(std::time::Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// # drop(b);
    /// ```
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = Some(every);
        self
    }

    /// Builds the backend; `Err(CacheError::Config { field, .. })` names an invalid option.
    ///
    /// ```
    /// let err = cache_core::MemoryBackend::builder().max_entries(0).build().unwrap_err();
    /// assert!(err.to_string().contains("max_entries"));
    /// ```
    pub fn build(self) -> Result<MemoryBackend, CacheError> {
        let max_entries = match (self.max_entries, self.max_weight) {
            (Some(0), _) => return Err(CacheError::config("max_entries", "must be at least 1")),
            (Some(n), _) => n,
            (None, Some(_)) => usize::MAX,
            (None, None) => DEFAULT_MAX_ENTRIES,
        };
        if self.max_weight == Some(0) {
            return Err(CacheError::config("max_weight", "must be at least 1 byte"));
        }
        let sweep_every = self.sweep_interval.unwrap_or(DEFAULT_SWEEP_INTERVAL);
        if sweep_every.is_zero() {
            return Err(CacheError::config(
                "sweep_interval",
                "must be greater than zero",
            ));
        }
        let sweep_every = sweep_every.as_nanos().min(u64::MAX as u128 / 2) as u64;
        if max_entries != usize::MAX && max_entries > u32::MAX as usize / 2 {
            return Err(CacheError::config(
                "max_entries",
                format!("must be at most {}", u32::MAX / 2),
            ));
        }
        let shard_count = match self.shards {
            Some(n) if n == 0 || !n.is_power_of_two() || n > 1 << 16 => {
                return Err(CacheError::config(
                    "shards",
                    format!("must be a power of two between 1 and 65536, not {n}"),
                ))
            }
            Some(n) => n,
            None => default_shards(max_entries, self.max_weight),
        };
        let split = |total: u128, i: usize| -> u128 {
            let n = shard_count as u128;
            total / n + u128::from((i as u128) < total % n)
        };
        let shards = (0..shard_count)
            .map(|i| {
                let entries = if max_entries == usize::MAX {
                    usize::MAX
                } else {
                    split(max_entries as u128, i) as usize
                };
                let weight = self
                    .max_weight
                    .map_or(u64::MAX, |w| split(u128::from(w), i) as u64);
                Padded(StripedLock::new(Shard::new(entries, weight)))
            })
            .collect();
        let clock = self.clock.map_or(Clock::Coarse, Clock::Manual);
        Ok(MemoryBackend {
            shards,
            shard_mask: shard_count - 1,
            policy: self.policy,
            next_sweep: std::sync::atomic::AtomicU64::new(clock.now().saturating_add(sweep_every)),
            sweep_every,
            clock,
            fill: Mutex::new(FillState {
                index: DepIndex::default(),
                groups: Default::default(),
                next_id: 0,
            }),
            epochs: Epochs::new(),
            counters: Counters::default(),
            max_entries,
            max_weight: self.max_weight,
            id: {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        })
    }
}

fn default_shards(max_entries: usize, max_weight: Option<u64>) -> usize {
    let cpus = std::thread::available_parallelism().map_or(4, |n| n.get());
    let mut n = (cpus * 4).next_power_of_two().min(1 << 10);
    while n > 1 && max_entries / n < MIN_ENTRIES_PER_SHARD {
        n /= 2;
    }
    if let Some(w) = max_weight {
        while n > 1 && w / (n as u64) < MIN_WEIGHT_PER_SHARD {
            n /= 2;
        }
    }
    n
}

/// Deduplicated dependencies, without the key text (which is always an implicit one).
fn normalize_dependencies(dependencies: &[String], text: &str) -> Box<[Arc<str>]> {
    let mut out: Vec<Arc<str>> = Vec::with_capacity(dependencies.len());
    for d in dependencies {
        if d != text && !out.iter().any(|o| **o == **d) {
            out.push(Arc::from(d.as_str()));
        }
    }
    out.into_boxed_slice()
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("policy", &self.policy)
            .field("max_entries", &self.max_entries)
            .field("max_weight", &self.max_weight)
            .field("shards", &self.shards.len())
            .field("len", &self.len())
            .finish()
    }
}

impl MemoryBackend {
    /// A backend holding at most [`DEFAULT_MAX_ENTRIES`] entries, with S3-FIFO eviction.
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::new();
    /// assert_eq!(b.max_entries(), cache_core::memory::DEFAULT_MAX_ENTRIES);
    /// ```
    pub fn new() -> Self {
        MemoryBackend::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the default configuration is valid"))
    }

    /// A builder to choose bounds, policy and clock.
    ///
    /// ```
    /// let b = cache_core::MemoryBackend::builder().max_entries(100).build().unwrap();
    /// assert!(b.is_empty());
    /// ```
    pub fn builder() -> MemoryBackendBuilder {
        MemoryBackendBuilder::default()
    }

    /// The eviction policy.
    ///
    /// ```
    /// use cache_core::memory::EvictionPolicy;
    /// assert_eq!(cache_core::MemoryBackend::new().policy(), EvictionPolicy::S3Fifo);
    /// ```
    pub fn policy(&self) -> EvictionPolicy {
        self.policy
    }

    /// The entry bound (`usize::MAX` when only the weight is bounded).
    ///
    /// ```
    /// assert_eq!(cache_core::MemoryBackend::new().max_entries(), 100_000);
    /// ```
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The weight bound, if any.
    ///
    /// ```
    /// assert_eq!(cache_core::MemoryBackend::new().max_weight(), None);
    /// ```
    pub fn max_weight(&self) -> Option<u64> {
        self.max_weight
    }

    /// The number of shards.
    ///
    /// ```
    /// assert!(cache_core::MemoryBackend::new().shard_count().is_power_of_two());
    /// ```
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The number of entries held, including expired entries not yet swept.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let k = Key::from_text("k");
    /// b.set_blocking(&k, value::share(1u8), &EntryOptions::new(), b.current_lease()).unwrap();
    /// assert_eq!(b.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Whether no entry is held.
    ///
    /// ```
    /// assert!(cache_core::MemoryBackend::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A lease valid from now on: for a write that does not follow a miss (write-through), which
    /// must still lose against invalidations that happen after it starts.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, SetOutcome, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let lease = b.current_lease();
    /// let k = Key::from_text("k");
    /// let out = b.set_blocking(&k, value::share(1u8), &EntryOptions::new(), lease).unwrap();
    /// assert_eq!(out, SetOutcome::Stored);
    /// ```
    pub fn current_lease(&self) -> Lease {
        self.epochs.lease()
    }

    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        // Middle bits: hashbrown uses the low bits (bucket) and the top 7 bits (tag).
        (hash >> 32) as usize & self.shard_mask
    }

    /// Removes every expired entry (and its dependency index references). Expired entries are
    /// never served; until swept (or evicted) they still count toward the bounds.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// use cache_core::memory::{ManualClock, MemoryBackend};
    /// let clock = ManualClock::new();
    /// let b = MemoryBackend::builder().clock(clock.clone()).build().unwrap();
    /// let opts = EntryOptions::new().ttl(Duration::from_secs(1));
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &opts, b.current_lease()).unwrap();
    /// clock.advance(Duration::from_secs(2));
    /// b.sweep_expired();
    /// assert!(b.is_empty());
    /// ```
    pub fn sweep_expired(&self) {
        let now = self.clock.now();
        let mut removed: Vec<(u32, Arc<Entry>)> = Vec::new();
        let mut dropped: Vec<Arc<Entry>> = Vec::new();
        {
            let mut fill = self.fill.lock();
            for (i, shard) in self.shards.iter().enumerate() {
                shard.write().take_expired(now, &mut removed);
                for (slot, e) in removed.drain(..) {
                    let r = entry_ref(i, slot, e.id);
                    fill.index.remove_entry(r, &e.text, &e.deps);
                    dropped.push(e);
                }
            }
        }
        self.counters.expirations.add(dropped.len() as u64);
        drop(dropped);
    }

    /// Sweeps expired entries if the sweep interval has passed since the last sweep (what the
    /// background sweeper calls); returns whether it swept.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::memory::{ManualClock, MemoryBackend};
    /// let clock = ManualClock::new();
    /// let b = MemoryBackend::builder()
    ///     .clock(clock.clone())
    ///     .sweep_interval(Duration::from_secs(5))
    ///     .build()
    ///     .unwrap();
    /// assert!(!b.sweep_if_due());
    /// clock.advance(Duration::from_secs(6));
    /// assert!(b.sweep_if_due());
    /// assert!(!b.sweep_if_due());
    /// ```
    pub fn sweep_if_due(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.clock.now();
        let due = self.next_sweep.load(Relaxed);
        if now < due
            || self
                .next_sweep
                .compare_exchange(due, now.saturating_add(self.sweep_every), Relaxed, Relaxed)
                .is_err()
        {
            return false;
        }
        self.sweep_expired();
        true
    }

    /// Whether an entry whose readable key is `key_text` is held (expired or not).
    /// For tests and introspection; takes the fill lock.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &EntryOptions::new(), b.current_lease()).unwrap();
    /// assert!(b.contains("k"));
    /// assert!(!b.contains("j"));
    /// ```
    pub fn contains(&self, key_text: &str) -> bool {
        let fill = self.fill.lock();
        let Some(set) = fill.index.get(key_text) else {
            return false;
        };
        set.to_vec().into_iter().any(|r| {
            self.shards[r.shard as usize]
                .read()
                .text_of(r.slot, r.id)
                .is_some_and(|t| &**t == key_text)
        })
    }

    /// The number of distinct strings in the dependency index: declared dependencies and the key
    /// texts of held entries (a key text is an implicit dependency of its entry).
    /// For tests and introspection; takes the fill lock.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let opts = EntryOptions::new().depends_on("d");
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &opts, b.current_lease()).unwrap();
    /// assert_eq!(b.dependency_index_len(), 2); // "k" and "d"
    /// ```
    pub fn dependency_index_len(&self) -> usize {
        self.fill.lock().index.len()
    }

    /// The key texts of the entries depending on `dependency` (sorted; an entry depends on its
    /// own key text). For tests and introspection; takes the fill lock.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let opts = EntryOptions::new().depends_on("d");
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &opts, b.current_lease()).unwrap();
    /// assert_eq!(b.dependents_of("d"), vec!["k".to_string()]);
    /// assert!(b.dependents_of("nothing").is_empty());
    /// ```
    pub fn dependents_of(&self, dependency: &str) -> Vec<String> {
        if is_group(dependency) {
            let mut out: Vec<String> = self
                .entries_snapshot()
                .into_iter()
                .filter(|(_, deps)| deps.iter().any(|d| d == dependency))
                .map(|(text, _)| text)
                .collect();
            out.sort();
            return out;
        }
        self.dependency_index_snapshot()
            .remove(dependency)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// The whole dependency index: dependency string -> key texts of its dependents. Every
    /// reference is resolved through the shards; a reference to an absent entry shows as
    /// `"<dangling>"` (which an exact index never has). For tests; takes the fill lock.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let opts = EntryOptions::new().depends_on("d");
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &opts, b.current_lease()).unwrap();
    /// let index = b.dependency_index_snapshot();
    /// assert_eq!(index.len(), 2);
    /// assert!(index["d"].contains("k") && index["k"].contains("k"));
    /// ```
    pub fn dependency_index_snapshot(&self) -> BTreeMap<String, BTreeSet<String>> {
        let fill = self.fill.lock();
        fill.index
            .iter()
            .map(|(dep, set)| {
                let texts = set
                    .to_vec()
                    .into_iter()
                    .map(|r| {
                        self.shards[r.shard as usize]
                            .read()
                            .text_of(r.slot, r.id)
                            .map_or_else(|| "<dangling>".to_string(), |t| t.to_string())
                    })
                    .collect();
                (dep.to_string(), texts)
            })
            .collect()
    }

    /// Every held entry: key text -> its declared dependencies (sorted; expired entries not yet
    /// swept included). For tests; takes the fill lock.
    ///
    /// ```
    /// use cache_core::{Backend, EntryOptions, Key, value};
    /// let b = cache_core::MemoryBackend::new();
    /// let opts = EntryOptions::new().depends_on("d");
    /// b.set_blocking(&Key::from_text("k"), value::share(1u8), &opts, b.current_lease()).unwrap();
    /// assert_eq!(b.entries_snapshot()["k"], vec!["d".to_string()]);
    /// ```
    pub fn entries_snapshot(&self) -> BTreeMap<String, Vec<String>> {
        let _fill = self.fill.lock();
        let mut out = BTreeMap::new();
        for shard in self.shards.iter() {
            let g = shard.read();
            for (_, e) in g.entries() {
                let mut deps: Vec<String> = e.deps.iter().map(|d| d.to_string()).collect();
                deps.sort();
                out.insert(e.text.to_string(), deps);
            }
        }
        out
    }

    /// Replaces the value of the entry of `key` with `new` if the entry still holds `expected`
    /// (the same allocation, [`Arc::ptr_eq`]); `false` (and nothing changed) otherwise. The
    /// entry keeps its expiry, dependencies, place in the eviction order and weight. The
    /// compare and the replace are atomic with respect to sets and invalidations, so an entry
    /// replaced or invalidated meanwhile is never brought back.
    ///
    /// ```
    /// use cache_core::{value, Backend, EntryOptions, Key, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// let k = Key::from_text("k");
    /// let old = value::share(1u8);
    /// b.set_blocking(&k, old.clone(), &EntryOptions::new(), b.current_lease()).unwrap();
    /// assert!(!b.replace_value_if_same(&k, &value::share(1u8), value::share(3u8)));
    /// assert!(b.replace_value_if_same(&k, &old, value::share(2u8)));
    /// let mut got = None;
    /// b.lookup_local(&k.local(), &mut |v| got = value::downcast::<u8>(&**v));
    /// assert_eq!(got, Some(2));
    /// ```
    pub fn replace_value_if_same(
        &self,
        key: &Key,
        expected: &SharedValue,
        new: SharedValue,
    ) -> bool {
        let local = key.local();
        let shard = &self.shards[self.shard_of(local.hash)];
        let taken = shard
            .write()
            .replace_value_if_same(local.hash, local.bytes, expected, new);
        // the displaced value (or `new`, unused) is dropped after the lock
        taken.is_ok()
    }

    #[inline]
    fn get_inner(&self, key: &LocalKey<'_>, on_hit: &mut dyn FnMut(&SharedValue)) -> bool {
        let shard = &self.shards[self.shard_of(key.hash)];
        let visit = |e: Option<&Entry>, on_hit: &mut dyn FnMut(&SharedValue)| match e {
            Some(e) => {
                on_hit(&e.value);
                true
            }
            None => false,
        };
        match self.policy {
            EvictionPolicy::Lru => visit(
                shard.write().get_lru(key.hash, key.bytes, &self.clock),
                on_hit,
            ),
            EvictionPolicy::S3Fifo => visit(
                shard
                    .read()
                    .get(key.hash, key.bytes, &self.clock, true)
                    .map(|(e, _)| e),
                on_hit,
            ),
            EvictionPolicy::Fifo => visit(
                shard
                    .read()
                    .get(key.hash, key.bytes, &self.clock, false)
                    .map(|(e, _)| e),
                on_hit,
            ),
        }
    }

    /// The hit path of `#[cached]` fns on the default backend: the entry this thread's front
    /// table ([`front`]) holds for the key, if it is still in its shard, unexpired and a `V`
    /// (then read and counted exactly like a shard hit). `stripe` is the caller's
    /// [`crate::stats::stripe`]. `None` sends the caller to [`Self::lookup_typed`].
    #[inline(always)]
    pub(crate) fn front_hit<V: Clone + 'static>(
        &self,
        key: &LocalKey<'_>,
        stripe: usize,
    ) -> Option<V> {
        if self.policy == EvictionPolicy::Lru {
            return None; // an LRU hit moves the entry: only under the shard's write lock
        }
        let e = front::find(self.id, key.hash, key.bytes)?;
        if !e.holds::<V>() || !e.read(&self.clock, self.policy == EvictionPolicy::S3Fifo) {
            return None;
        }
        self.counters.hits.incr_at(stripe);
        e.typed::<V>()
    }

    /// The typed lookup of `#[cached]` fns in the key's shard (what [`Backend::lookup_local`]
    /// does, without dynamic dispatch or a virtual call on the value): `stripe` is the caller's
    /// [`crate::stats::stripe`]. With [`Front::ReadWrite`] a hit is remembered in this
    /// thread's front table.
    #[inline(always)]
    pub(crate) fn lookup_typed<V: Clone + 'static>(
        &self,
        key: &LocalKey<'_>,
        stripe: usize,
        front: Front,
    ) -> Typed<V> {
        let remember = front == Front::ReadWrite;
        if self.policy == EvictionPolicy::Lru {
            return self.lookup_typed_lru(key);
        }
        let found = {
            let shard = self.shards[self.shard_of(key.hash)].0.read_at(stripe);
            shard
                .get(
                    key.hash,
                    key.bytes,
                    &self.clock,
                    self.policy == EvictionPolicy::S3Fifo,
                )
                .map(|(e, slot)| {
                    let displaced = remember
                        .then(|| front::offer(self.id, key.hash, || shard.arc_at(slot).cloned()));
                    (e.typed::<V>(), displaced)
                })
        };
        match found {
            Some((v, displaced)) => {
                self.counters.hits.incr_at(stripe);
                // after the shard lock: dropping a displaced entry may run user code
                drop(displaced);
                match v {
                    Some(v) => Typed::Hit(v),
                    None => Typed::OtherType,
                }
            }
            None => {
                self.counters.misses.incr_at(stripe);
                Typed::Miss(self.epochs.lease())
            }
        }
    }

    /// The value of an entry past its fresh time but inside its stale window, and how long ago
    /// it stopped being fresh.
    fn stale(&self, key: &LocalKey<'_>) -> Option<(SharedValue, Duration)> {
        let shard = self.shards[self.shard_of(key.hash)].0.read();
        let (e, age) = shard.get_stale(key.hash, key.bytes, &self.clock)?;
        Some((e.value.clone(), Duration::from_nanos(age)))
    }

    /// [`Self::lookup_typed`] under LRU (a hit moves the entry: write lock, out of line).
    #[inline(never)]
    fn lookup_typed_lru<V: Clone + 'static>(&self, key: &LocalKey<'_>) -> Typed<V> {
        let mut out = None;
        let found = self.get_inner(key, &mut |v| {
            out = v.as_any().downcast_ref::<V>().cloned();
        });
        if !found {
            self.counters.misses.incr();
            return Typed::Miss(self.epochs.lease());
        }
        self.counters.hits.incr();
        out.map_or(Typed::OtherType, Typed::Hit)
    }

    fn set_inner(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> SetOutcome {
        // Everything that allocates happens before the locks.
        let local = key.local();
        let text = key.text_arc().clone();
        let mut deps = normalize_dependencies(&options.dependencies, &text);
        // the same names (shared), for the index
        let index_deps = deps.clone();
        // the value, the keys and the dependency names it alone holds (a group name is shared
        // by every entry of its fn)
        let dep_bytes: usize = deps.iter().filter(|d| !is_group(d)).map(|d| d.len()).sum();
        let weight = (value.weight() as u64)
            .saturating_add(local.bytes.len() as u64)
            .saturating_add(text.len() as u64)
            .saturating_add(dep_bytes as u64);
        let expiry = Expiry::new(
            self.clock.now(),
            options.ttl,
            options.sliding,
            options.stale,
        );
        let key_bytes = store::KeyBytes::new(local.bytes);
        let shard_idx = self.shard_of(local.hash);
        let mut displaced = Displaced::default();

        let mut fill = self.fill.lock();
        if self.epochs.is_stale(lease, &text, &deps) {
            drop(fill);
            self.counters.rejected_sets.incr();
            drop(value);
            return SetOutcome::Rejected;
        }
        let id = fill.next_id;
        fill.next_id += 1;
        // the entry shares the index's copies of names already indexed (every entry of a fn
        // depends on its `fn:` name); the fresh copies go with `index_deps`, after the locks
        for d in deps.iter_mut() {
            if is_group(d) {
                match fill.groups.get(&**d) {
                    Some(shared) => *d = shared.clone(),
                    None => {
                        fill.groups.insert(d.clone());
                    }
                }
            } else if let Some(shared) = fill.index.shared(d) {
                *d = shared.clone();
            }
        }
        let entry = Entry::new(
            local.hash,
            key_bytes,
            text.clone(),
            value,
            deps,
            id,
            weight,
            expiry,
        );
        let slot = self.shards[shard_idx]
            .write()
            .insert(entry, self.policy, &mut displaced);
        if let Some((slot, old)) = &displaced.replaced {
            fill.index
                .remove_entry(entry_ref(shard_idx, *slot, old.id), &old.text, &old.deps);
        }
        for (slot, e) in &displaced.evicted {
            fill.index
                .remove_entry(entry_ref(shard_idx, *slot, e.id), &e.text, &e.deps);
        }
        if let Some(slot) = slot {
            fill.index
                .add_entry(entry_ref(shard_idx, slot, id), &text, &index_deps);
        }
        drop(fill);

        let now = self.clock.now();
        let expired = displaced
            .evicted
            .iter()
            .filter(|(_, e)| e.expiry.expired_at(now))
            .count() as u64;
        self.counters.expirations.add(expired);
        self.counters.evictions.add(
            displaced.evicted.len() as u64 - expired + u64::from(displaced.unstored.is_some()),
        );
        if slot.is_some() {
            self.counters.inserts.incr();
        }
        drop(displaced);
        SetOutcome::Stored
    }

    /// The entries carrying group `name` (a scan of every shard; see [`deps::is_group`]).
    /// Called under the fill lock.
    fn group_members(&self, name: &str) -> Vec<EntryRef> {
        let mut out = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let g = shard.read();
            for (slot, e) in g.entries() {
                if e.deps.iter().any(|d| **d == *name) {
                    out.push(entry_ref(i, slot, e.id));
                }
            }
        }
        out
    }

    /// Invalidates `dependency` and, transitively, the key texts of the entries it removes.
    fn invalidate_inner(&self, dependency: &str) {
        let mut removed: Vec<Arc<Entry>> = Vec::new();
        {
            let mut fill = self.fill.lock();
            let epoch = self.epochs.bump();
            let mut seen: HashSet<Arc<str>> = HashSet::new();
            let mut work: Vec<Arc<str>> = vec![Arc::from(dependency)];
            while let Some(dep) = work.pop() {
                if !seen.insert(dep.clone()) {
                    continue;
                }
                self.epochs.record(&dep, epoch);
                let refs = if is_group(&dep) {
                    self.group_members(&dep)
                } else {
                    match fill.index.take(&dep) {
                        Some(set) => set.to_vec(),
                        None => continue,
                    }
                };
                for r in refs {
                    let entry = self.shards[r.shard as usize].write().remove(r.slot, r.id);
                    if let Some(e) = entry {
                        fill.index.remove_entry(r, &e.text, &e.deps);
                        if !seen.contains(&e.text) {
                            work.push(e.text.clone());
                        }
                        removed.push(e);
                    }
                }
            }
        }
        self.counters.invalidations.add(removed.len() as u64);
        drop(removed);
    }

    fn clear_inner(&self) {
        let mut removed: Vec<Arc<Entry>> = Vec::new();
        {
            let mut fill = self.fill.lock();
            let epoch = self.epochs.bump();
            self.epochs.record_clear(epoch);
            for shard in self.shards.iter() {
                shard.write().drain(&mut removed);
            }
            fill.index.clear();
        }
        drop(removed);
    }
}

/// Whether [`MemoryBackend::lookup_typed`] may write this thread's front table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Front {
    /// Read it only (a lookup nested in another lookup of this thread: a value's `Clone`).
    Read,
    /// Read it and remember a shard hit in it (the outermost lookup of this thread).
    ReadWrite,
}

/// What [`MemoryBackend::lookup_typed`] found.
pub(crate) enum Typed<V> {
    Hit(V),
    Miss(Lease),
    /// An entry holding another type (counted as a hit, like [`Backend::lookup_local`]).
    OtherType,
}

fn entry_ref(shard: usize, slot: u32, id: u64) -> EntryRef {
    EntryRef {
        id,
        shard: shard as u32,
        slot,
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn keeps_values_in_process(&self) -> bool {
        true
    }

    fn as_memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }

    fn offer_decoded(&self, key: &Key, encoded: &SharedValue, decoded: SharedValue) {
        self.replace_value_if_same(key, encoded, decoded);
    }

    #[inline]
    fn lookup_local(
        &self,
        key: &LocalKey<'_>,
        on_hit: &mut dyn FnMut(&SharedValue),
    ) -> LocalLookup {
        if self.get_inner(key, on_hit) {
            self.counters.hits.incr();
            LocalLookup::Hit
        } else {
            self.counters.misses.incr();
            LocalLookup::Miss(self.epochs.lease())
        }
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        Box::pin(std::future::ready(self.get_blocking(key)))
    }

    fn get_blocking(&self, key: &Key) -> Result<Lookup, CacheError> {
        let mut found = None;
        Ok(
            match self.lookup_local(&key.local(), &mut |v| found = Some(v.clone())) {
                LocalLookup::Hit => match found {
                    Some(v) => Lookup::Hit(Hit::Local(v)),
                    None => Lookup::Miss(self.epochs.lease()),
                },
                LocalLookup::Miss(lease) => match self.stale(&key.local()) {
                    Some((v, age)) => Lookup::Stale {
                        hit: Hit::Local(v),
                        lease,
                        age,
                    },
                    None => Lookup::Miss(lease),
                },
                LocalLookup::Remote => Lookup::Miss(self.epochs.lease()),
            },
        )
    }

    fn set<'a>(
        &'a self,
        key: &'a Key,
        value: SharedValue,
        options: &'a EntryOptions,
        lease: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>> {
        Box::pin(std::future::ready(
            self.set_blocking(key, value, options, lease),
        ))
    }

    fn set_blocking(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        Ok(self.set_inner(key, value, options, lease))
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(std::future::ready(self.remove_blocking(key)))
    }

    fn remove_blocking(&self, key: &Key) -> Result<(), CacheError> {
        self.invalidate_inner(key.text());
        Ok(())
    }

    fn invalidate<'a>(&'a self, dependency: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(std::future::ready(self.invalidate_blocking(dependency)))
    }

    fn invalidate_blocking(&self, dependency: &str) -> Result<(), CacheError> {
        self.invalidate_inner(dependency);
        Ok(())
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(std::future::ready(self.clear_blocking()))
    }

    fn clear_blocking(&self) -> Result<(), CacheError> {
        self.clear_inner();
        Ok(())
    }

    fn stats(&self) -> BackendStats {
        let (mut entries, mut weight) = (0u64, 0u64);
        for s in self.shards.iter() {
            let g = s.read();
            entries += g.len() as u64;
            weight += g.weight();
        }
        let c = &self.counters;
        BackendStats {
            hits: c.hits.get(),
            misses: c.misses.get(),
            inserts: c.inserts.get(),
            rejected_sets: c.rejected_sets.get(),
            evictions: c.evictions.get(),
            expirations: c.expirations.get(),
            invalidations: c.invalidations.get(),
            errors: 0,
            entries,
            weight,
        }
    }
}
