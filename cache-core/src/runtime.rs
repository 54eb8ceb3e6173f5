//! The runtime behind `#[cached]`: one [`FnCache`] per cached function.
//!
//! Generated code calls [`FnCache::begin_async`] / [`FnCache::begin_blocking`]: a hit returns
//! the value; a miss returns a [`Filler`] that runs the body, stores its value with the lease
//! of the miss (so a fill racing an invalidation does not land), shares it with the callers that
//! waited (single flight), and records the entry's key in the enclosing fill's dependencies.
//!
//! Fail-open: a backend error is counted, traced, and the body runs; nothing reaches the caller.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::backend::{Backend, EntryOptions, Key, Lease, LocalKey, LocalLookup};
use crate::context;
use crate::error::CacheError;
use crate::flight::Flights;
use crate::hash::local_hash;
use crate::key::{self, KeyBuf, KeyPart};
use crate::memory::Typed;
use crate::registry::{self, Resolved};
use crate::stats::{FnCounters, FnStats};
use crate::value::{self, Cacheable, Hit, SharedValue};

mod batch;
mod call;
mod fill;
mod handles;
mod meta;
pub use batch::{BatchFill, Items};
pub use call::{AsyncRefresher, BlockingRefresher};
pub use fill::Filler;
use fill::Target;
pub use handles::{
    invalidate_dependency, invalidate_dependency_blocking, EntryRef, EntryRefs, FnRef,
};
pub use meta::{CallInfo, FnMeta, Mode, RawKey, Resilience};

/// The start of a cached call.
pub enum Begin<V> {
    /// The cached value.
    Hit(V),
    /// Run the body through this filler.
    Fill(Filler<V>),
}

/// The cache of one function: its metadata, counters and in-flight computations.
pub struct FnCache {
    meta: FnMeta,
    counters: FnCounters,
    registered: AtomicBool,
    warned_profile: AtomicBool,
    flights: OnceLock<Flights>,
    /// The `#[write_behind]` fns writing entries of this fn (found at its first miss).
    writers: OnceLock<Box<[&'static crate::write_behind::Writer]>>,
}

pub use crate::functions::{all_stats, reset_all_stats};

impl crate::functions::Counted for FnCache {
    fn snapshot(&self) -> FnStats {
        self.counters.snapshot(self.meta.module, self.meta.name)
    }
    fn reset(&self) {
        self.counters.reset();
    }
}

fn backend_error(meta: &FnMeta, op: &str, err: &CacheError) {
    tracing::warn!(function = meta.name, module = meta.module, op, error = %err,
        "cache backend error; running the function without the cache");
}

impl FnCache {
    /// A cache for the function described by `meta` (usable in a `static`).
    pub const fn new(meta: FnMeta) -> Self {
        FnCache {
            meta,
            counters: FnCounters::new(),
            registered: AtomicBool::new(false),
            warned_profile: AtomicBool::new(false),
            flights: OnceLock::new(),
            writers: OnceLock::new(),
        }
    }

    /// A value of this fn as backends hold it, weighed by the fn's `weight` if it has one.
    pub(crate) fn share<V: Cacheable>(&self, value: V) -> SharedValue {
        value::share_weighed(value, self.meta.weight)
    }

    /// The `#[write_behind]` fns whose target is this fn: a miss reads their queued values.
    pub(crate) fn writers(&'static self) -> &'static [&'static crate::write_behind::Writer] {
        self.writers
            .get_or_init(|| crate::write_behind::writers_of(self).into_boxed_slice())
    }

    /// The metadata.
    pub fn meta(&self) -> &FnMeta {
        &self.meta
    }

    /// A snapshot of this function's counters.
    pub fn stats(&'static self) -> FnStats {
        self.counters.snapshot(self.meta.module, self.meta.name)
    }

    #[inline]
    fn register(&'static self) {
        if !self.registered.load(Ordering::Relaxed) && !self.registered.swap(true, Ordering::AcqRel)
        {
            crate::functions::register(self);
        }
    }

    /// The function's path as it appears in keys: `module::name`, `Type::name`, with type
    /// arguments and version: `app::Repo::find::<u32>@v2`.
    pub fn path(&self, info: &CallInfo<'_>) -> String {
        let mut s = String::with_capacity(64);
        s.push_str(info.self_type.unwrap_or(self.meta.module));
        s.push_str("::");
        s.push_str(self.meta.name);
        if !info.generics.is_empty() {
            s.push_str("::<");
            for (i, g) in info.generics.iter().enumerate() {
                if i > 0 {
                    s.push(',');
                }
                s.push_str(g);
            }
            s.push('>');
        }
        if self.meta.version > 0 {
            s.push_str("@v");
            s.push_str(&self.meta.version.to_string());
        }
        s
    }

    /// The dependency every entry of this function has (what [`crate::FnRef::invalidate_all`]
    /// invalidates).
    pub fn all_dependency(&self, info: &CallInfo<'_>) -> String {
        let module = info.self_type.unwrap_or(self.meta.module);
        let mut s = String::with_capacity(5 + module.len() + self.meta.name.len());
        s.push_str("fn:");
        s.push_str(module);
        s.push_str("::");
        s.push_str(self.meta.name);
        s
    }

    #[inline]
    fn binary_key<A: KeyPart + ?Sized>(
        &'static self,
        args: &A,
        info: &CallInfo<'_>,
        buf: &mut KeyBuf,
    ) {
        self.key_prefix(info, buf);
        args.write_binary(buf);
    }

    /// What a binary key starts with: the fn (and its `Self` type and generics), or the mark
    /// of a custom key.
    #[inline(always)]
    fn key_prefix(&'static self, info: &CallInfo<'_>, buf: &mut KeyBuf) {
        if self.meta.custom_key {
            buf.put_u8(0xff);
        } else {
            buf.put(&(self as *const FnCache as usize as u64).to_le_bytes());
            if let Some(t) = info.self_type {
                buf.put_prefixed(t.as_bytes());
            }
            for g in info.generics {
                buf.put_prefixed(g.as_bytes());
            }
        }
    }

    fn text_key(&self, args: &dyn KeyPart, info: &CallInfo<'_>) -> Arc<str> {
        let text = if self.meta.custom_key {
            key::readable(args)
        } else {
            let mut s = self.path(info);
            args.write_readable(&mut s);
            s
        };
        match key::shorten(&text, key::MAX_READABLE_KEY_LEN) {
            std::borrow::Cow::Borrowed(_) => text.into(),
            std::borrow::Cow::Owned(s) => s.into(),
        }
    }

    /// The full key of a call.
    pub fn key(&'static self, args: &dyn KeyPart, info: &CallInfo<'_>) -> Key {
        let mut buf = KeyBuf::new();
        self.binary_key(args, info, &mut buf);
        let hash = local_hash(buf.as_bytes());
        Key::from_buf(self.text_key(args, info), &buf, hash)
    }

    fn options(
        &self,
        resolved: &Resolved,
        declared: Vec<String>,
        info: &CallInfo<'_>,
    ) -> EntryOptions {
        let mut dependencies = declared;
        dependencies.push(self.all_dependency(info));
        let jitter = self.meta.jitter.or(resolved.jitter);
        let ttl = self
            .meta
            .ttl
            .or(resolved.ttl)
            .map(|ttl| ttl + jitter.map_or(Duration::ZERO, crate::jitter::random_below));
        // with a stale window, the entry is fresh until `ttl - refresh_ahead` and then readable
        // as stale for the rest of its window
        let r = self.resilience(resolved);
        let (ttl, stale) = match ttl {
            Some(t) => (Some(t - r.ahead(t)), r.stale_window(t)),
            None => (None, None),
        };
        EntryOptions {
            ttl,
            sliding: self.meta.sliding.or(resolved.sliding),
            dependencies,
            stale,
        }
    }

    /// The fn's resilience settings, completed by its profile's.
    fn resilience(&self, resolved: &Resolved) -> Resilience {
        self.meta.resilience.or(resolved.resilience)
    }

    fn check_profile(&self, resolved: &Resolved) {
        if resolved.unknown_profile {
            self.counters.errors.incr();
            if !self.warned_profile.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    function = self.meta.name,
                    profile = self.meta.profile,
                    "unknown cache profile; using the default backend"
                );
            }
        }
    }

    /// Counts a hit (through this thread's counter stripe) and records the entry as a
    /// dependency of the enclosing fill, if any.
    #[inline(always)]
    fn on_hit_at(&'static self, args: &dyn KeyPart, info: &CallInfo<'_>, stripe: usize) {
        self.counters.hits.incr_at(stripe);
        tracing::trace!(function = self.meta.name, "cache hit");
        if context::is_collecting() {
            self.record_hit(args, info);
        }
    }

    /// Records a hit's key in the enclosing fill's dependencies.
    #[cold]
    #[inline(never)]
    fn record_hit(&self, args: &dyn KeyPart, info: &CallInfo<'_>) {
        context::add_dependency(&*self.text_key(args, info));
    }

    /// Starts a call of an async cached function.
    ///
    /// The in-process lookup runs when this is called, inside the caller's poll: a hit is a
    /// future that is ready at once (the state of the rest of the call is never built).
    #[inline]
    pub fn begin_async<'a, A, V>(
        &'static self,
        args: &'a A,
        info: CallInfo<'a>,
        deps: &'a mut (dyn FnMut(&mut Vec<String>) + Send),
        mode: Mode,
    ) -> impl Future<Output = Begin<V>> + 'a
    where
        A: KeyPart + Sync,
        V: Cacheable,
    {
        self.begin_async_with(args, info, deps, mode, None)
    }

    /// [`Self::begin_async`] of a fn that refreshes stale entries in the background
    /// (`stale_while_revalidate`, `refresh_ahead`): `refresher` starts one refresh.
    #[inline]
    pub fn begin_async_bg<'a, A, V>(
        &'static self,
        args: &'a A,
        info: CallInfo<'a>,
        deps: &'a mut (dyn FnMut(&mut Vec<String>) + Send),
        mode: Mode,
        refresher: AsyncRefresher<'a>,
    ) -> impl Future<Output = Begin<V>> + 'a
    where
        A: KeyPart + Sync,
        V: Cacheable,
    {
        self.begin_async_with(args, info, deps, mode, Some(refresher))
    }

    #[inline(always)]
    fn begin_async_with<'a, A, V>(
        &'static self,
        args: &'a A,
        info: CallInfo<'a>,
        deps: &'a mut (dyn FnMut(&mut Vec<String>) + Send),
        mode: Mode,
        refresher: Option<AsyncRefresher<'a>>,
    ) -> impl Future<Output = Begin<V>> + 'a
    where
        A: KeyPart + Sync,
        V: Cacheable,
    {
        let started = if registry::is_enabled() {
            let mut buf = KeyBuf::new();
            self.binary_key(args, &info, &mut buf);
            let hash = local_hash(buf.as_bytes());
            self.begin_local::<V>(args, &info, mode, &buf, hash)
                .map_err(Some)
        } else {
            Err(None)
        };
        async move {
            match started {
                Ok(v) => Begin::Hit(v),
                Err(None) => {
                    self.register();
                    Begin::Fill(Filler::passthrough(self, None))
                }
                Err(Some((flights_ended, known_miss))) => {
                    // boxed: the rest of a call is a large state machine; a hit should not
                    // build or move a future that has room for it
                    Box::pin(self.begin_async_rest(
                        args,
                        info,
                        deps,
                        mode,
                        refresher,
                        flights_ended,
                        known_miss,
                    ))
                    .await
                }
            }
        }
    }

    /// Everything after the in-process lookups of an async call: a miss, a remote backend, a
    /// refresh.
    #[allow(clippy::too_many_arguments)]
    async fn begin_async_rest<V>(
        &'static self,
        args: &(dyn KeyPart + Sync),
        info: CallInfo<'_>,
        deps: &mut (dyn FnMut(&mut Vec<String>) + Send),
        mode: Mode,
        refresher: Option<AsyncRefresher<'_>>,
        flights_ended: u64,
        known_miss: Option<Lease>,
    ) -> Begin<V>
    where
        V: Cacheable,
    {
        let mut buf = KeyBuf::new();
        self.binary_key(args, &info, &mut buf);
        let hash = local_hash(buf.as_bytes());
        self.call(
            args,
            info,
            deps,
            mode,
            &buf,
            hash,
            flights_ended,
            known_miss,
        )
        .drive_async(refresher)
        .await
    }

    /// The call engine for the rest of a call ([`call::Call`]): the key's text, the backend,
    /// the entry options.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &'static self,
        args: &dyn KeyPart,
        info: CallInfo<'_>,
        deps: &mut (dyn FnMut(&mut Vec<String>) + '_),
        mode: Mode,
        buf: &KeyBuf,
        hash: u64,
        flights_ended: u64,
        known_miss: Option<Lease>,
    ) -> call::Call {
        self.register();
        let resolved = registry::resolve(self.meta.profile);
        self.check_profile(&resolved);
        let backend = self.tier(resolved.backend.clone());
        let key = Key::from_buf(self.text_key(args, &info), buf, hash);
        let mut declared = Vec::new();
        deps(&mut declared);
        let options = self.options(&resolved, declared, &info);
        let resilience = self.resilience(&resolved);
        drop(resolved);
        call::Call::new(
            self,
            backend,
            key,
            options,
            mode,
            resilience,
            flights_ended,
            known_miss,
        )
    }

    /// Starts a call of a sync cached function.
    ///
    /// The hit path is this inlined part: the binary key built on the stack and hashed, looked
    /// up in process (first in the calling thread's front table of memory-backend entries), the
    /// hit counted. Everything else is out of line.
    #[inline]
    pub fn begin_blocking<A, V>(
        &'static self,
        args: &A,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
        mode: Mode,
    ) -> Begin<V>
    where
        A: KeyPart,
        V: Cacheable,
    {
        self.begin_blocking_with(args, info, deps, mode, None)
    }

    /// [`Self::begin_blocking`] of a fn that refreshes stale entries in the background
    /// (`stale_while_revalidate`, `refresh_ahead`): `refresher` starts one refresh.
    #[inline]
    pub fn begin_blocking_bg<A, V>(
        &'static self,
        args: &A,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
        mode: Mode,
        refresher: BlockingRefresher<'_>,
    ) -> Begin<V>
    where
        A: KeyPart,
        V: Cacheable,
    {
        self.begin_blocking_with(args, info, deps, mode, Some(refresher))
    }

    #[inline(always)]
    fn begin_blocking_with<A, V>(
        &'static self,
        args: &A,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
        mode: Mode,
        refresher: Option<BlockingRefresher<'_>>,
    ) -> Begin<V>
    where
        A: KeyPart,
        V: Cacheable,
    {
        if !registry::is_enabled() {
            return self.disabled();
        }
        let mut buf = KeyBuf::new();
        self.binary_key(args, &info, &mut buf);
        let hash = local_hash(buf.as_bytes());
        let (flights_ended, known_miss) = match self.begin_local::<V>(args, &info, mode, &buf, hash)
        {
            Ok(v) => return Begin::Hit(v),
            Err(rest) => rest,
        };
        self.begin_blocking_keyed(
            args,
            info,
            deps,
            mode,
            refresher,
            &buf,
            hash,
            flights_ended,
            known_miss,
        )
    }

    /// The in-process start of a call (sync and async): the hit, counted, or what the rest of
    /// the call needs: the count of ended flights read before the lookup (see
    /// [`Self::recheck`]) and the lease of an in-process miss that is final.
    #[inline(always)]
    fn begin_local<V>(
        &'static self,
        args: &dyn KeyPart,
        info: &CallInfo<'_>,
        mode: Mode,
        buf: &KeyBuf,
        hash: u64,
    ) -> Result<V, (u64, Option<Lease>)>
    where
        V: Cacheable,
    {
        let flights_ended = self.flights_ended();
        if mode != Mode::Normal {
            return Err((flights_ended, None));
        }
        let stripe = crate::stats::stripe();
        let key = LocalKey {
            hash,
            bytes: buf.as_bytes(),
        };
        match self.probe::<V>(&key, stripe) {
            Probe::Hit(v) => {
                self.on_hit_at(args, info, stripe);
                Ok(v)
            }
            Probe::Miss(lease) => Err((flights_ended, Some(lease))),
            Probe::Other => Err((flights_ended, None)),
        }
    }

    #[cold]
    fn disabled<V: Cacheable>(&'static self) -> Begin<V> {
        self.register();
        Begin::Fill(Filler::passthrough(self, None))
    }

    /// Everything after the in-process lookups of a sync call: a miss, a remote backend, a
    /// refresh.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn begin_blocking_keyed<V>(
        &'static self,
        args: &dyn KeyPart,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
        mode: Mode,
        refresher: Option<BlockingRefresher<'_>>,
        buf: &KeyBuf,
        hash: u64,
        flights_ended: u64,
        known_miss: Option<Lease>,
    ) -> Begin<V>
    where
        V: Cacheable,
    {
        self.call(args, info, deps, mode, buf, hash, flights_ended, known_miss)
            .drive_blocking(refresher)
    }

    /// After becoming leader: a leader that finished between our lookup and our join may have
    /// stored the value already (in-process backends only; no extra I/O).
    fn recheck<V: Cacheable>(&self, backend: &dyn Backend, key: &Key, ended: u64) -> Option<V> {
        if self.flights_ended() == ended {
            return None; // no leader finished since our lookup: nothing new to find
        }
        let v = visit_local::<V>(backend, &key.local())?;
        self.on_hit_known(key);
        Some(v)
    }

    /// The in-process lookup: when the fn's backend (the default, or its profile's) is or hits
    /// in a memory backend, first this thread's front table of that backend's entries
    /// ([`MemoryBackend::front_hit`](crate::MemoryBackend): no lock, no probe, no shared write
    /// but the entry's frequency bits), then its shard ([`shard_probe`]); else the in-process
    /// lookup of the backend (a scoped override's, a remote one's).
    /// No allocation, no global lock. The caller counts a hit with `stripe`.
    #[inline(always)]
    fn probe<V: Cacheable>(&self, key: &LocalKey<'_>, stripe: usize) -> Probe<V> {
        let found = registry::with_memory_of(
            self.meta.profile,
            #[inline(always)]
            |m, front, final_misses| {
                // the L1 of a remote backend, inside a fill: its lookup decides (a backend
                // without reverse indexes hands a hit's dependencies to the enclosing fill)
                if !final_misses && context::is_collecting() {
                    return Probe::Other;
                }
                match m.front_hit::<V>(key, stripe) {
                    Some(v) => Probe::Hit(v),
                    None => shard_probe::<V>(m, key, stripe, front, final_misses),
                }
            },
        );
        match found {
            Some(found) => found,
            None => self.probe_backend(key),
        }
    }

    /// [`Self::probe`] in a backend the fast path does not reach: a scoped override's, one
    /// that is not in process, or a profile's not yet remembered by this thread (which it then
    /// remembers).
    #[inline(never)]
    fn probe_backend<V: Cacheable>(&self, key: &LocalKey<'_>) -> Probe<V> {
        let found = registry::with_backend_of(self.meta.profile, |b| probe_local::<V>(b, key));
        if let Some(profile) = self.meta.profile {
            registry::remember_profile(profile);
        }
        found
    }

    fn on_hit_known(&self, key: &Key) {
        self.counters.hits.incr();
        tracing::trace!(function = self.meta.name, key = key.text(), "cache hit");
        if context::is_collecting() {
            context::add_dependency(key.text());
        }
    }

    /// Background refreshes of this fn's entries under way (stale-while-revalidate,
    /// refresh-ahead). For tests and diagnostics.
    pub fn refreshes_running(&self) -> usize {
        self.flights.get().map_or(0, Flights::refreshing)
    }

    /// Callers now waiting for another caller's computation of the same key (single flight).
    /// For tests and diagnostics.
    pub fn waiting_callers(&self) -> usize {
        self.flights.get().map_or(0, Flights::waiting)
    }

    #[inline]
    fn flights_ended(&self) -> u64 {
        self.flights.get().map_or(0, Flights::ended)
    }

    fn flights(&self) -> &Flights {
        self.flights.get_or_init(Flights::default)
    }

    /// The typed value of a hit. A stored value that held bytes is offered back, decoded, to
    /// the backend ([`Backend::offer_decoded`]), so its next hits need no decode.
    fn decode<V: Cacheable>(&self, backend: &dyn Backend, hit: Hit, key: &Key) -> Option<V> {
        let encoded = match &hit {
            Hit::Local(v) if v.encoded_bytes().is_some() => Some(v.clone()),
            _ => None,
        };
        match hit.into_typed::<V>() {
            Ok(v) => {
                if let Some(encoded) = encoded {
                    backend.offer_decoded(key, &encoded, value::share(v.clone()));
                }
                Some(v)
            }
            Err(e) => {
                self.counters.errors.incr();
                tracing::warn!(function = self.meta.name, key = key.text(), error = %e,
                    "cached value does not decode; treating it as a miss and overwriting it");
                None
            }
        }
    }

    /// A handle on the entry of one call (typed key): invalidate it, put a value, read it.
    pub fn entry<V: Cacheable>(
        &'static self,
        args: &dyn KeyPart,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
    ) -> EntryRef<V> {
        let (key, options) = self.entry_parts(args, info, deps);
        EntryRef {
            cache: self,
            key,
            options,
            _value: PhantomData,
        }
    }

    /// The key and entry options of [`Self::entry`] (compiled once, not per value type).
    fn entry_parts(
        &'static self,
        args: &dyn KeyPart,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
    ) -> (Key, EntryOptions) {
        self.register();
        let key = self.key(args, &info);
        let mut declared = Vec::new();
        deps(&mut declared);
        let resolved = registry::resolve(self.meta.profile);
        let options = self.options(&resolved, declared, &info);
        (key, options)
    }

    /// A handle on every entry of this function.
    pub fn all(&'static self, info: CallInfo<'_>) -> FnRef {
        self.register();
        FnRef {
            cache: self,
            dependency: self.all_dependency(&info),
        }
    }

    pub(crate) fn backend(&self) -> Arc<dyn Backend> {
        self.tier(registry::current_backend(self.meta.profile))
    }

    /// Where this fn's values go when its backend is `backend` (a `local` fn's stay in process).
    fn tier(&self, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
        if self.meta.local {
            registry::local_tier(backend)
        } else {
            backend
        }
    }
}

/// [`FnCache::probe`] in the shard of the memory backend `m`, after the front table missed;
/// `final_misses`: a miss there is a miss of the fn's backend.
#[inline(always)]
fn shard_probe<V: Cacheable>(
    m: &crate::MemoryBackend,
    key: &LocalKey<'_>,
    stripe: usize,
    front: crate::memory::Front,
    final_misses: bool,
) -> Probe<V> {
    match m.lookup_typed::<V>(key, stripe, front) {
        Typed::Hit(v) => Probe::Hit(v),
        Typed::Miss(lease) if final_misses => Probe::Miss(lease),
        Typed::Miss(_) | Typed::OtherType => Probe::Other,
    }
}

/// What the in-process lookup found.
enum Probe<V> {
    Hit(V),
    /// An in-process backend does not hold the key: fill with this lease.
    Miss(Lease),
    /// Not answerable in process (a remote backend), or a value of another type.
    Other,
}

#[inline]
fn probe_local<V: Cacheable>(backend: &dyn Backend, key: &LocalKey<'_>) -> Probe<V> {
    let mut out: Option<V> = None;
    match backend.lookup_local(key, &mut |v| out = value::downcast::<V>(&**v)) {
        LocalLookup::Hit => out.map_or(Probe::Other, Probe::Hit),
        LocalLookup::Miss(lease) => Probe::Miss(lease),
        LocalLookup::Remote => Probe::Other,
    }
}

#[inline]
fn visit_local<V: Cacheable>(backend: &dyn Backend, key: &LocalKey<'_>) -> Option<V> {
    match probe_local::<V>(backend, key) {
        Probe::Hit(v) => Some(v),
        Probe::Miss(_) | Probe::Other => None,
    }
}
