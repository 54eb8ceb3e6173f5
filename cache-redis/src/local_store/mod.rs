//! Pluggable local stores: the L1 of a [`LayeredBackend`](crate::LayeredBackend).
//!
//! A [`LocalStore`] holds typed values in process. Besides the key, an entry is reachable
//! through its *references*: the strings it depends on. The layered backend gives every L1
//! entry the Redis key it was built from as a reference, plus the entry's dependencies, so a
//! tracking push ("Redis key `K` changed") or a pub/sub invalidation of dependency `D` finds
//! the local entries to drop. The key text is always an implicit reference of its entry.
//!
//! Two implementations ship:
//! * [`MemoryBackend`] (the default, see [`default_store`]): bounded by entries (and/or
//!   weight), LRU, FIFO or S3-FIFO eviction, TTL, stats, leases, and the allocation-free hit
//!   path of the memory backend;
//! * [`QuickCacheStore`]: over the `quick_cache` crate (CLOCK-Pro eviction), proving the
//!   trait is pluggable.
//!
//! ```
//! use cache_core::{value, EntryOptions, Key, SetOutcome};
//! use cache_redis::local_store::{default_store, LocalStore};
//!
//! let store = default_store(1000);
//! store.init().unwrap();
//! let key = Key::from_text("app::get_user(7)");
//! let put = store.put_with_reference(&key, value::share(7u32), &EntryOptions::new(), "pfx:app::get_user(7)", store.lease());
//! assert_eq!(put, SetOutcome::Stored);
//! assert!(LocalStore::contains(&store, &key));
//! store.invalidate_references(Some(&["pfx:app::get_user(7)"]));
//! assert!(!LocalStore::contains(&store, &key));
//! ```

mod memory;
mod quick;

use cache_core::memory::EvictionPolicy;
use cache_core::value::SharedValue;
use cache_core::{BackendStats, CacheError, EntryOptions, Key, Lease, LocalKey, LocalLookup};
use cache_core::{MemoryBackend, SetOutcome};

pub use quick::QuickCacheStore;

/// An in-process store for the L1 of a layered backend. Object-safe.
///
/// Rules every store keeps (the layered backend relies on them):
/// * [`lookup`](Self::lookup) never returns an expired entry, and allocates nothing on a hit;
/// * a put whose `lease` predates an invalidation of the key, of the reference or of one of
///   the dependencies (or a clear) is rejected: an invalidation that arrives while a read is
///   in flight wins over that read's reply;
/// * invalidations are applied before they return.
pub trait LocalStore: Send + Sync + 'static {
    /// A short name for logs and stats.
    fn name(&self) -> &str;

    /// Prepares the store; called once by the owning backend before any other operation.
    fn init(&self) -> Result<(), CacheError> {
        Ok(())
    }

    /// The in-process lookup: on a hit calls `on_hit` with the value and answers
    /// [`LocalLookup::Hit`]; otherwise [`LocalLookup::Miss`] with a lease for the fill.
    fn lookup(&self, key: &LocalKey<'_>, on_hit: &mut dyn FnMut(&SharedValue)) -> LocalLookup;

    /// The [`MemoryBackend`] this store is, if it is one: the hit path of `#[cached]` fns then
    /// serves this store's hits directly (see [`cache_core::Backend::memory_hits`]). Default:
    /// `None`.
    ///
    /// ```
    /// use cache_redis::local_store::{default_store, LocalStore, QuickCacheStore};
    /// assert!(LocalStore::as_memory(&default_store(10)).is_some());
    /// assert!(QuickCacheStore::new(10).unwrap().as_memory().is_none());
    /// ```
    fn as_memory(&self) -> Option<&MemoryBackend> {
        None
    }

    /// Whether `key` is held and not expired (does not count as a hit or a miss for policies
    /// that can avoid it).
    fn contains(&self, key: &Key) -> bool {
        matches!(self.lookup(&key.local(), &mut |_| {}), LocalLookup::Hit)
    }

    /// A lease valid from now: a put carrying it loses against every later invalidation.
    fn lease(&self) -> Lease;

    /// Stores `value` under `key` with the options' ttl and dependencies, unless `lease`
    /// predates an invalidation of the key or of a dependency.
    fn put(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> SetOutcome;

    /// Like [`put`](Self::put), with `reference` (a Redis key the value was built from) as an
    /// extra reference of the entry.
    fn put_with_reference(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        reference: &str,
        lease: Lease,
    ) -> SetOutcome;

    /// Puts `new` in place of the value of the entry of `key` if that entry still holds
    /// `expected` (the same allocation, [`Arc::ptr_eq`](std::sync::Arc::ptr_eq)), keeping its
    /// expiry and references; `true` if it did. The compare and the replace must be atomic with
    /// respect to puts and invalidations (an entry replaced or dropped meanwhile is never
    /// brought back). The layered backend uses it to keep the decoded value of an entry filled
    /// from Redis as bytes. Default: nothing, `false` (every hit on such an entry decodes).
    ///
    /// ```
    /// use cache_core::{value, EntryOptions, Key};
    /// use cache_redis::local_store::{default_store, LocalStore};
    /// let store = default_store(10);
    /// let key = Key::from_text("k");
    /// let bytes = value::share(1u8);
    /// store.put(&key, bytes.clone(), &EntryOptions::new(), store.lease());
    /// assert!(!store.replace_value_if_same(&key, &value::share(1u8), value::share(3u8)));
    /// assert!(store.replace_value_if_same(&key, &bytes, value::share(2u8)));
    /// ```
    fn replace_value_if_same(&self, key: &Key, expected: &SharedValue, new: SharedValue) -> bool {
        let _ = (key, expected, new);
        false
    }

    /// Drops the entries whose readable keys are `keys` (and the entries referencing them).
    fn invalidate_keys(&self, keys: &[&str]) {
        self.invalidate_references(Some(keys));
    }

    /// Drops every entry that references one of `references`; `None` (a "flush all"
    /// invalidation) drops everything.
    fn invalidate_references(&self, references: Option<&[&str]>);

    /// Drops everything.
    fn clear(&self) {
        self.invalidate_references(None);
    }

    /// Counters and size.
    fn stats(&self) -> BackendStats;

    /// Drops expired entries now (they are never served, but count toward the bound until
    /// swept or evicted).
    fn sweep_expired(&self);

    /// Releases what the store holds; the owner calls it when it is dropped.
    fn destroy(&self) {
        self.clear();
    }
}

/// The default local store: a [`MemoryBackend`] bounded to `max_entries`, with S3-FIFO
/// eviction (the memory backend's default policy).
///
/// S3-FIFO rather than LRU: on Zipf traces it keeps 5 to 11 points more hits than LRU (the
/// `local_store_ratio` bench), and its hit takes the shard's read lock where an LRU hit takes
/// the write lock to move the entry (the `l1_hit` bench). Use [`bounded_store`] for another
/// policy.
///
/// ```
/// use cache_core::memory::EvictionPolicy;
/// let store = cache_redis::local_store::default_store(10_000);
/// assert_eq!(store.max_entries(), 10_000);
/// assert_eq!(store.policy(), EvictionPolicy::S3Fifo);
/// ```
pub fn default_store(max_entries: usize) -> MemoryBackend {
    bounded_store(max_entries, EvictionPolicy::S3Fifo).unwrap_or_else(|_| MemoryBackend::new())
}

/// A [`MemoryBackend`] local store with the given bound and eviction policy; `Err` names an
/// invalid option.
///
/// ```
/// use cache_core::memory::EvictionPolicy;
/// let store = cache_redis::local_store::bounded_store(100, EvictionPolicy::Fifo).unwrap();
/// assert_eq!(store.policy(), EvictionPolicy::Fifo);
/// assert!(cache_redis::local_store::bounded_store(0, EvictionPolicy::Lru).is_err());
/// ```
pub fn bounded_store(
    max_entries: usize,
    policy: EvictionPolicy,
) -> Result<MemoryBackend, CacheError> {
    MemoryBackend::builder()
        .max_entries(max_entries)
        .policy(policy)
        .build()
}
