//! [`LocalStore`] over the `quick_cache` crate.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::value::SharedValue;
use cache_core::{
    BackendStats, CacheError, EntryOptions, Key, Lease, LocalKey, LocalLookup, SetOutcome,
};
use parking_lot::Mutex;

use super::LocalStore;

struct Entry {
    value: SharedValue,
    expires: Option<Instant>,
}

#[derive(Default)]
struct Index {
    /// Reference (key text, Redis key, dependency) -> binary keys of the entries holding it.
    refs: HashMap<Arc<str>, HashSet<Box<[u8]>>>,
    /// Bumped by every invalidation; a lease older than this is rejected.
    epoch: u64,
    members: usize,
}

/// A [`LocalStore`] over [`quick_cache::sync::Cache`] (bounded by entries, CLOCK-Pro
/// eviction), with TTL, references and leases kept beside it.
///
/// Leases are coarse here: any invalidation after a lease was taken rejects the put (safe,
/// at the cost of a few extra misses under heavy invalidation).
///
/// ```
/// use cache_core::{value, EntryOptions, Key, SetOutcome};
/// use cache_redis::local_store::{LocalStore, QuickCacheStore};
/// let store = QuickCacheStore::new(100).unwrap();
/// let k = Key::from_text("k");
/// let lease = store.lease();
/// store.invalidate_keys(&["other"]);
/// assert_eq!(store.put(&k, value::share(1u8), &EntryOptions::new(), lease), SetOutcome::Rejected);
/// assert_eq!(store.put(&k, value::share(1u8), &EntryOptions::new(), store.lease()), SetOutcome::Stored);
/// assert!(store.contains(&k));
/// ```
pub struct QuickCacheStore {
    cache: quick_cache::sync::Cache<Box<[u8]>, Arc<Entry>>,
    index: Mutex<Index>,
    capacity: usize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    rejected: AtomicU64,
    invalidations: AtomicU64,
    expirations: AtomicU64,
}

impl std::fmt::Debug for QuickCacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickCacheStore")
            .field("capacity", &self.capacity)
            .field("len", &self.cache.len())
            .finish()
    }
}

impl QuickCacheStore {
    /// A store holding at most `max_entries` entries; `Err` when it is 0.
    ///
    /// ```
    /// assert!(cache_redis::local_store::QuickCacheStore::new(0).is_err());
    /// ```
    pub fn new(max_entries: usize) -> Result<Self, CacheError> {
        if max_entries == 0 {
            return Err(CacheError::config("max_entries", "must be at least 1"));
        }
        Ok(QuickCacheStore {
            cache: quick_cache::sync::Cache::new(max_entries),
            index: Mutex::new(Index::default()),
            capacity: max_entries,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            inserts: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
        })
    }

    /// Drops index references to entries quick_cache evicted.
    fn prune(&self, index: &mut Index) {
        let mut members = 0;
        index.refs.retain(|_, keys| {
            keys.retain(|k| self.cache.contains_key(&**k));
            members += keys.len();
            !keys.is_empty()
        });
        index.members = members;
    }
}

impl LocalStore for QuickCacheStore {
    fn name(&self) -> &str {
        "quick_cache"
    }

    fn lookup(&self, key: &LocalKey<'_>, on_hit: &mut dyn FnMut(&SharedValue)) -> LocalLookup {
        match self.cache.get(key.bytes) {
            Some(e) if e.expires.map_or(true, |t| Instant::now() < t) => {
                self.hits.fetch_add(1, Relaxed);
                on_hit(&e.value);
                LocalLookup::Hit
            }
            found => {
                if found.is_some() {
                    self.cache.remove(key.bytes);
                    self.expirations.fetch_add(1, Relaxed);
                }
                self.misses.fetch_add(1, Relaxed);
                LocalLookup::Miss(self.lease())
            }
        }
    }

    fn lease(&self) -> Lease {
        Lease(self.index.lock().epoch)
    }

    fn put(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> SetOutcome {
        let bytes: Box<[u8]> = key.local().bytes.into();
        let ttl = options.ttl.into_iter().chain(options.sliding).min();
        let entry = Arc::new(Entry {
            value,
            expires: ttl.map(|t: Duration| Instant::now() + t),
        });
        let mut refs: Vec<Arc<str>> = vec![key.text_arc().clone()];
        refs.extend(options.dependencies.iter().map(|d| Arc::from(d.as_str())));
        let mut index = self.index.lock();
        if lease != Lease::UNCONDITIONAL && lease.0 < index.epoch {
            drop(index);
            self.rejected.fetch_add(1, Relaxed);
            return SetOutcome::Rejected;
        }
        for r in refs {
            if index.refs.entry(r).or_default().insert(bytes.clone()) {
                index.members += 1;
            }
        }
        self.cache.insert(bytes, entry);
        if index.members > self.capacity.saturating_mul(4).max(1024) {
            self.prune(&mut index);
        }
        drop(index);
        self.inserts.fetch_add(1, Relaxed);
        SetOutcome::Stored
    }

    fn replace_value_if_same(&self, key: &Key, expected: &SharedValue, new: SharedValue) -> bool {
        let bytes = key.local().bytes;
        // puts and invalidations hold the index lock: the compare and the replace are atomic
        // with respect to them, and `replace` fails if the entry was evicted meanwhile
        let _index = self.index.lock();
        let Some(e) = self.cache.get(bytes) else {
            return false;
        };
        if !Arc::ptr_eq(&e.value, expected) {
            return false;
        }
        let entry = Arc::new(Entry {
            value: new,
            expires: e.expires,
        });
        self.cache.replace(bytes.into(), entry, true).is_ok()
    }

    fn put_with_reference(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        reference: &str,
        lease: Lease,
    ) -> SetOutcome {
        let mut options = options.clone();
        options.dependencies.push(reference.to_string());
        self.put(key, value, &options, lease)
    }

    fn invalidate_references(&self, references: Option<&[&str]>) {
        let mut index = self.index.lock();
        index.epoch += 1;
        match references {
            None => {
                index.refs.clear();
                index.members = 0;
                let n = self.cache.len() as u64;
                self.cache.clear();
                self.invalidations.fetch_add(n, Relaxed);
            }
            Some(refs) => {
                let mut n = 0;
                for r in refs {
                    if let Some(keys) = index.refs.remove(*r) {
                        index.members -= keys.len();
                        for k in keys {
                            n += u64::from(self.cache.remove(&*k).is_some());
                        }
                    }
                }
                self.invalidations.fetch_add(n, Relaxed);
            }
        }
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            inserts: self.inserts.load(Relaxed),
            rejected_sets: self.rejected.load(Relaxed),
            evictions: 0,
            expirations: self.expirations.load(Relaxed),
            invalidations: self.invalidations.load(Relaxed),
            errors: 0,
            entries: self.cache.len() as u64,
            weight: self.cache.weight(),
        }
    }

    fn sweep_expired(&self) {
        let now = Instant::now();
        let before = self.cache.len();
        self.cache
            .retain(|_, e| e.expires.map_or(true, |t| now < t));
        let swept = before.saturating_sub(self.cache.len()) as u64;
        self.expirations.fetch_add(swept, Relaxed);
        self.prune(&mut self.index.lock());
    }
}
