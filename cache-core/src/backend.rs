//! The [`Backend`] trait: where cached entries live.
//!
//! One object-safe trait, held as `Arc<dyn Backend>` by the [registry](crate::registry). Every
//! operation has an async form (for async fns) and a `_blocking` form (for sync fns, callable
//! inside or outside a tokio runtime). In-process backends also answer
//! [`Backend::lookup_local`], the allocation-free hit path.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::error::CacheError;
use crate::key::KeyBuf;
use crate::stats::BackendStats;
use crate::value::{Hit, SharedValue};

/// A boxed, sendable future (what the async operations of [`Backend`] return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The in-process identity of a key: a seeded hash and the binary encoding.
///
/// Borrowed, built on the stack by the runtime for every call; this is all the memory hit path
/// needs.
#[derive(Clone, Copy)]
pub struct LocalKey<'a> {
    /// [`crate::hash::local_hash`] of `bytes`.
    pub hash: u64,
    /// The binary encoding (function identity + arguments).
    pub bytes: &'a [u8],
}

/// A complete key: its readable text (what Redis and logs see) and its in-process identity.
///
/// ```
/// let key = cache_core::Key::new("app::get_user(7)", b"\x07");
/// assert_eq!(key.text(), "app::get_user(7)");
/// ```
#[derive(Clone)]
pub struct Key {
    text: Arc<str>,
    bytes: Box<[u8]>,
    hash: u64,
}

impl Key {
    /// A key from its readable text and binary encoding.
    pub fn new(text: impl Into<Arc<str>>, bytes: &[u8]) -> Self {
        Key {
            text: text.into(),
            hash: crate::hash::local_hash(bytes),
            bytes: bytes.into(),
        }
    }

    /// A key from its readable text only (the binary encoding is the text itself). Used for
    /// keys that arrive from other processes.
    pub fn from_text(text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let bytes: Box<[u8]> = text.as_bytes().into();
        Key {
            hash: crate::hash::local_hash(&bytes),
            text,
            bytes,
        }
    }

    pub(crate) fn from_buf(text: Arc<str>, buf: &KeyBuf, hash: u64) -> Self {
        Key {
            text,
            bytes: buf.as_bytes().into(),
            hash,
        }
    }

    /// The readable text, e.g. `myapp::get_user(42)`.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The readable text, shared.
    pub fn text_arc(&self) -> &Arc<str> {
        &self.text
    }

    /// The in-process identity.
    pub fn local(&self) -> LocalKey<'_> {
        LocalKey {
            hash: self.hash,
            bytes: &self.bytes,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.text).finish()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A fill ticket handed out with a miss. A set carrying a lease that predates an invalidation of
/// the key or of any of its dependencies is rejected ([`SetOutcome::Rejected`]): no stale set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lease(pub u64);

impl Lease {
    /// A lease newer than every invalidation: the set is never rejected. Used by write-through
    /// (`#[cache_put]`), whose value is the newest by construction.
    pub const UNCONDITIONAL: Lease = Lease(u64::MAX);
}

/// The answer of [`Backend::get`].
#[derive(Debug)]
pub enum Lookup {
    /// The entry exists.
    Hit(Hit),
    /// No entry; fill it with this lease.
    Miss(Lease),
    /// No fresh entry, but the last value is inside its stale window
    /// ([`EntryOptions::stale`]): a miss (fill it with `lease`) whose old value may still be
    /// served while a new one is computed, or instead of an error. `age` is how long ago its
    /// fresh time ended. Only entries stored with a stale window answer this; an invalidated
    /// entry never does.
    Stale {
        /// The old value.
        hit: Hit,
        /// The lease of the miss.
        lease: Lease,
        /// Time since the entry stopped being fresh.
        age: Duration,
    },
}

/// The answer of [`Backend::lookup_local`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalLookup {
    /// Found in process; the value was handed to the visitor.
    Hit,
    /// Definitely absent (an in-process backend): fill with this lease.
    Miss(Lease),
    /// This backend is not (only) in process: ask [`Backend::get`].
    Remote,
}

/// How an entry is stored: expiration and dependencies.
///
/// ```
/// use std::time::Duration;
/// let o = cache_core::EntryOptions::new()
///     .ttl(Duration::from_secs(60))
///     .depends_on("user:7");
/// assert_eq!(o.dependencies, vec!["user:7".to_string()]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryOptions {
    /// Absolute expiration: the entry is gone this long after it was stored.
    pub ttl: Option<Duration>,
    /// Sliding expiration: the entry is gone after this long without a read.
    pub sliding: Option<Duration>,
    /// Dependencies: invalidating any of them removes the entry.
    pub dependencies: Vec<String>,
    /// How long the value is kept after its expiration (`ttl`), readable as
    /// [`Lookup::Stale`] only: for stale-while-revalidate, stale-if-error and refresh-ahead.
    /// `None`: the entry is gone at its expiration.
    pub stale: Option<Duration>,
}

impl EntryOptions {
    /// No expiration, no dependencies.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the absolute expiration.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Sets the sliding expiration.
    pub fn sliding(mut self, sliding: Duration) -> Self {
        self.sliding = Some(sliding);
        self
    }
    /// Adds a dependency.
    pub fn depends_on(mut self, dependency: impl Into<String>) -> Self {
        self.dependencies.push(dependency.into());
        self
    }
    /// Keeps the value readable as stale for this long after its expiration.
    pub fn stale(mut self, window: Duration) -> Self {
        self.stale = Some(window);
        self
    }
}

/// The result of a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The entry was stored.
    Stored,
    /// The lease predates an invalidation of the key or a dependency: the value was dropped.
    Rejected,
}

/// One entry of a [`Backend::set_many`]: what [`Backend::set`] takes, for one key.
///
/// ```
/// use cache_core::{value, Backend, EntryOptions, Fill, Key, MemoryBackend, SetOutcome};
/// let b = MemoryBackend::new();
/// let (k1, k2) = (Key::from_text("a"), Key::from_text("b"));
/// let o = EntryOptions::new();
/// let fills = [
///     Fill { key: &k1, value: value::share(1u8), options: &o, lease: b.current_lease() },
///     Fill { key: &k2, value: value::share(2u8), options: &o, lease: b.current_lease() },
/// ];
/// let done = b.set_many_blocking(&fills).unwrap();
/// assert_eq!(done, vec![SetOutcome::Stored, SetOutcome::Stored]);
/// ```
#[derive(Debug, Clone)]
pub struct Fill<'a> {
    /// The entry's key.
    pub key: &'a Key,
    /// The value to store.
    pub value: SharedValue,
    /// Expiration and dependencies.
    pub options: &'a EntryOptions,
    /// The lease of the miss this fill answers.
    pub lease: Lease,
}

/// Where cached entries live. Object-safe; implement it to add a store.
///
/// Rules every backend keeps:
/// * `get`/`lookup_local` never return an entry past its expiration;
/// * a `set` whose lease predates an invalidation of its key or of one of its dependencies is
///   rejected, atomically with respect to invalidations (no stale set);
/// * `remove` and `invalidate` are transitive: an entry whose key is invalidated also invalidates
///   every entry that depends on that key (the key text is an implicit dependency of its entry).
///   The runtime also lists a nested call's dependencies on the enclosing entry (those of an
///   entry it filled, and those a backend hands to the collector on a hit), so a backend that
///   keeps no reverse index may rely on them instead of walking dependents (the Redis backend's
///   protocol 2 does);
/// * errors are returned, never panicked; the runtime turns them into misses (fail-open).
///
/// ```
/// use std::sync::Arc;
/// use cache_core::{Backend, MemoryBackend};
/// let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
/// assert_eq!(backend.name(), "memory");
/// ```
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and stats (`memory`, `redis`, ...).
    fn name(&self) -> &str;

    /// The [`MemoryBackend`](crate::MemoryBackend) that answers this backend's in-process
    /// lookups, hits *and* misses, if there is one: the hit path of `#[cached]` fns then calls
    /// it directly (no dynamic dispatch), and fills a miss it reports with its lease, through
    /// this backend. Only lookups go direct: sets, removals, invalidations and clears still go
    /// through this backend.
    ///
    /// A memory backend returns itself. A wrapper may return the memory backend it wraps when
    /// its [`lookup_local`](Self::lookup_local) and [`get`](Self::get) are exactly that
    /// backend's (e.g. a wrapper that only adds work to writes); a wrapper with logic of its own
    /// on reads keeps the default, `None` (see [`Self::memory_hits`] for one whose misses must
    /// reach it).
    ///
    /// ```
    /// use cache_core::{Backend, MemoryBackend};
    /// assert!(MemoryBackend::new().as_memory().is_some());
    /// ```
    fn as_memory(&self) -> Option<&crate::MemoryBackend> {
        None
    }

    /// A [`MemoryBackend`](crate::MemoryBackend) whose hits are this backend's hits, while a
    /// miss there is not a miss of this backend (e.g. the L1 of a two-level backend, whose misses
    /// go on to L2). The hit path of `#[cached]` fns serves hits from it directly and takes the
    /// general path ([`get`](Self::get) of this backend) on a miss. Default:
    /// [`as_memory`](Self::as_memory).
    ///
    /// ```
    /// use cache_core::{Backend, MemoryBackend};
    /// assert!(MemoryBackend::new().memory_hits().is_some());
    /// ```
    fn memory_hits(&self) -> Option<&crate::MemoryBackend> {
        self.as_memory()
    }

    /// The in-process lookup: no I/O, no allocation, no reference count touched. On a hit the
    /// backend calls `on_hit` with the stored value (while it is safely readable) and answers
    /// `Hit`; the caller clones what it needs out of it. In-process backends answer `Hit` or
    /// `Miss`; others keep the default, `Remote`.
    ///
    /// ```
    /// use cache_core::{value, Backend, EntryOptions, Key, LocalLookup, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// let k = Key::from_text("k");
    /// b.set_blocking(&k, value::share(5u32), &EntryOptions::new(), b.current_lease()).unwrap();
    /// let mut got = None;
    /// let r = b.lookup_local(&k.local(), &mut |v| got = value::downcast::<u32>(&**v));
    /// assert_eq!((r, got), (LocalLookup::Hit, Some(5)));
    /// ```
    fn lookup_local(
        &self,
        key: &LocalKey<'_>,
        on_hit: &mut dyn FnMut(&SharedValue),
    ) -> LocalLookup {
        let _ = (key, on_hit);
        LocalLookup::Remote
    }

    /// The runtime decoded a hit whose stored value held bytes
    /// ([`CacheValue::encoded_bytes`](crate::value::CacheValue::encoded_bytes)): `decoded` is
    /// the typed value of `encoded`, the very value (same allocation) the hit returned. A
    /// backend that keeps values in process may store `decoded` in place of `encoded` so later
    /// hits skip the decode, but only if the entry of `key` still holds `encoded` (compare with
    /// [`Arc::ptr_eq`]): an entry replaced or invalidated meanwhile must stay as it is (no stale
    /// set). Expiry and dependencies stay the entry's. Default: nothing.
    ///
    /// A backend cannot decode at fill time itself: only the caller knows the type.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cache_core::value::{self, CacheValue, SharedValue};
    /// use cache_core::{Backend, CacheError, EntryOptions, Key, Lookup, MemoryBackend};
    ///
    /// /// Bytes kept in process until a caller decodes them.
    /// struct Encoded(Vec<u8>);
    /// impl CacheValue for Encoded {
    ///     fn as_any(&self) -> &dyn std::any::Any { self }
    ///     fn encode(&self) -> Result<Vec<u8>, CacheError> { Ok(self.0.clone()) }
    ///     fn type_name(&self) -> &'static str { "encoded" }
    ///     fn weight(&self) -> usize { self.0.len() }
    ///     fn encoded_bytes(&self) -> Option<&[u8]> { Some(&self.0) }
    /// }
    ///
    /// let b = MemoryBackend::new();
    /// let k = Key::from_text("k");
    /// let encoded: SharedValue = Arc::new(Encoded(value::encode(&7u32).unwrap()));
    /// b.set_blocking(&k, encoded.clone(), &EntryOptions::new(), b.current_lease()).unwrap();
    /// // a stale offer (the entry no longer holds that value) changes nothing
    /// b.offer_decoded(&k, &value::share(7u32), value::share(8u32));
    /// // the real one replaces the bytes with the typed value
    /// b.offer_decoded(&k, &encoded, value::share(7u32));
    /// let Lookup::Hit(value::Hit::Local(v)) = b.get_blocking(&k).unwrap() else { panic!() };
    /// assert_eq!(value::downcast::<u32>(&*v), Some(7));
    /// ```
    fn offer_decoded(&self, key: &Key, encoded: &SharedValue, decoded: SharedValue) {
        let _ = (key, encoded, decoded);
    }

    /// Reads an entry.
    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>>;
    /// Reads an entry (blocking form).
    fn get_blocking(&self, key: &Key) -> Result<Lookup, CacheError>;

    /// Reads an entry of a call whose entry will depend on `dependencies` (its `depends_on`
    /// names and the function's own, known before the body runs): a backend that validates
    /// entries against versions of their dependencies reads those with the entry, in the same
    /// round trip. The runtime calls this; the default is [`Self::get`].
    ///
    /// ```
    /// use cache_core::{Backend, Key, Lookup, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// let found = b.get_declared_blocking(&Key::from_text("k"), &["user:7".to_string()]);
    /// assert!(matches!(found, Ok(Lookup::Miss(_))));
    /// ```
    fn get_declared<'a>(
        &'a self,
        key: &'a Key,
        dependencies: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        let _ = dependencies;
        self.get(key)
    }
    /// Reads an entry of a call with known dependencies (blocking form of
    /// [`Self::get_declared`]).
    fn get_declared_blocking(
        &self,
        key: &Key,
        dependencies: &[String],
    ) -> Result<Lookup, CacheError> {
        let _ = dependencies;
        self.get_blocking(key)
    }

    /// Reads several entries at once (batch calls, `#[cached(batch(..))]`): one answer per key,
    /// in order. A remote backend answers in one round trip; the default asks [`Self::get`] for
    /// each key in turn.
    ///
    /// ```
    /// use cache_core::{Backend, Key, Lookup, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// let keys = [Key::from_text("a"), Key::from_text("b")];
    /// let found = b.get_many_blocking(&keys).unwrap();
    /// assert!(found.iter().all(|l| matches!(l, Lookup::Miss(_))));
    /// ```
    fn get_many<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<Vec<Lookup>, CacheError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                out.push(self.get(key).await?);
            }
            Ok(out)
        })
    }
    /// Reads several entries at once (blocking form).
    fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Lookup>, CacheError> {
        keys.iter().map(|k| self.get_blocking(k)).collect()
    }

    /// Stores several entries at once, each as [`Self::set`] would (its own lease, options and
    /// rejection): one outcome per fill, in order. A remote backend sends them in one round
    /// trip; the default calls [`Self::set`] for each.
    fn set_many<'a>(
        &'a self,
        fills: &'a [Fill<'a>],
    ) -> BoxFuture<'a, Result<Vec<SetOutcome>, CacheError>> {
        Box::pin(async move {
            let mut out = Vec::with_capacity(fills.len());
            for f in fills {
                out.push(self.set(f.key, f.value.clone(), f.options, f.lease).await?);
            }
            Ok(out)
        })
    }
    /// Stores several entries at once (blocking form).
    fn set_many_blocking(&self, fills: &[Fill<'_>]) -> Result<Vec<SetOutcome>, CacheError> {
        fills
            .iter()
            .map(|f| self.set_blocking(f.key, f.value.clone(), f.options, f.lease))
            .collect()
    }

    /// Stores an entry unless `lease` predates an invalidation of the key or a dependency.
    fn set<'a>(
        &'a self,
        key: &'a Key,
        value: SharedValue,
        options: &'a EntryOptions,
        lease: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>>;
    /// Stores an entry (blocking form).
    fn set_blocking(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError>;

    /// The fill `lease` was handed out for will not store a value: the body failed, returned
    /// nothing to cache, panicked, or its future was dropped. A backend that holds something for
    /// that fill (a distributed single-flight lock) releases it, so callers waiting on other
    /// nodes compute at once instead of waiting out the lock. Must not block. Default: nothing.
    ///
    /// ```
    /// use cache_core::{Backend, Key, Lookup, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// let k = Key::from_text("k");
    /// let Lookup::Miss(lease) = b.get_blocking(&k).unwrap() else { unreachable!() };
    /// b.abandon(&k, lease); // the memory backend holds nothing for a fill
    /// ```
    fn abandon(&self, key: &Key, lease: Lease) {
        let _ = (key, lease);
    }

    /// A background refresh of `key`'s stale value is about to run the body: a backend shared by
    /// several processes takes the key's fill lock here (distributed single flight), so one
    /// process of the fleet refreshes; `false` means another holds it and this refresh is
    /// dropped (its caller was served the stale value already). A backend without such a lock
    /// answers `true`. The lock ends as a fill's does: with the store, or with
    /// [`Self::abandon`].
    ///
    /// ```
    /// use cache_core::{Backend, Key, MemoryBackend};
    /// let b = MemoryBackend::new();
    /// assert!(b.claim_refresh_blocking(&Key::from_text("k")));
    /// ```
    fn claim_refresh<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, bool> {
        let _ = key;
        Box::pin(std::future::ready(true))
    }
    /// Claims a background refresh (blocking form of [`Self::claim_refresh`]).
    fn claim_refresh_blocking(&self, key: &Key) -> bool {
        let _ = key;
        true
    }

    /// Whether this backend keeps values in this process as they are, never serializing them
    /// (the memory backend, local caches synchronized across nodes): `#[cached(local)]` fns
    /// store their values here; with any other backend they use a memory backend of the
    /// process. Default `false`.
    ///
    /// ```
    /// use cache_core::{Backend, MemoryBackend};
    /// assert!(MemoryBackend::new().keeps_values_in_process());
    /// ```
    fn keeps_values_in_process(&self) -> bool {
        false
    }

    /// The queue `#[write_behind]` writes to entries of this backend go to: a durable one for
    /// a backend shared by several processes (`cache-redis`: Redis Streams). `None` (the
    /// default): the process's in-process
    /// [`MemoryQueue`](crate::write_behind::MemoryQueue).
    ///
    /// ```
    /// use cache_core::{Backend, MemoryBackend};
    /// assert!(MemoryBackend::new().write_queue().is_none());
    /// ```
    fn write_queue(&self) -> Option<Arc<dyn crate::write_behind::WriteQueue>> {
        None
    }

    /// Removes an entry and, transitively, every entry depending on its key.
    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<(), CacheError>>;
    /// Removes an entry (blocking form).
    fn remove_blocking(&self, key: &Key) -> Result<(), CacheError>;

    /// Invalidates a dependency: removes every entry depending on it, transitively.
    fn invalidate<'a>(&'a self, dependency: &'a str) -> BoxFuture<'a, Result<(), CacheError>>;
    /// Invalidates a dependency (blocking form).
    fn invalidate_blocking(&self, dependency: &str) -> Result<(), CacheError>;

    /// Removes every entry.
    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>>;
    /// Removes every entry (blocking form).
    fn clear_blocking(&self) -> Result<(), CacheError>;

    /// Counters of this backend.
    fn stats(&self) -> BackendStats;
}

impl fmt::Debug for dyn Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Backend({})", self.name())
    }
}
