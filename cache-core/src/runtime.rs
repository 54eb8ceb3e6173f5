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
use std::time::{Duration, Instant};

use crate::backend::{
    Backend, EntryOptions, Key, Lease, LocalKey, LocalLookup, Lookup, SetOutcome,
};
use crate::context;
use crate::error::CacheError;
use crate::flight::{Flights, Leader};
use crate::hash::local_hash;
use crate::key::{self, KeyBuf, KeyPart};
use crate::memory::Typed;
use crate::registry::{self, Resolved};
use crate::stats::{FnCounters, FnStats};
use crate::value::{self, Cacheable, Hit, SharedValue};

mod batch;
mod call;
pub use batch::{BatchFill, Items};
pub use call::{AsyncRefresher, BlockingRefresher};

/// What the macro knows about a cached function at compile time.
#[derive(Debug, Clone, Copy)]
pub struct FnMeta {
    /// `module_path!()` of the function.
    pub module: &'static str,
    /// The function's name.
    pub name: &'static str,
    /// Bumps the key namespace (`version = N`).
    pub version: u32,
    /// Absolute expiration.
    pub ttl: Option<Duration>,
    /// Sliding expiration.
    pub sliding: Option<Duration>,
    /// Each entry's `ttl` is extended by a random 0..`jitter` (`jitter = "5s"`), so entries
    /// filled together do not expire together.
    pub jitter: Option<Duration>,
    /// Named profile.
    pub profile: Option<&'static str>,
    /// Whether `None` is cached (informational; the generated `to_value` decides).
    pub cache_none: bool,
    /// Single flight on misses.
    pub lock: bool,
    /// The key is a custom template ([`RawKey`]) rather than path + arguments.
    pub custom_key: bool,
    /// Stale-while-revalidate, stale-if-error, timeout, refresh-ahead.
    pub resilience: Resilience,
}

/// What a cached fn does with a stale entry and a slow or failing body: the options
/// `stale_while_revalidate`, `stale_if_error`, `timeout` and `refresh_ahead` of `#[cached]`
/// (and of a [`Profile`](crate::Profile); a fn's own settings win field by field).
///
/// ```
/// use std::time::Duration;
/// use cache_core::runtime::Resilience;
/// let r = Resilience { stale_if_error: Some(Duration::from_secs(60)), ..Resilience::NONE };
/// assert_eq!(r.stale_window(Duration::from_secs(300)), Some(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resilience {
    /// After `ttl`, serve the stale value for up to this long while one background refresh
    /// replaces it.
    pub stale_while_revalidate: Option<Duration>,
    /// When the body fails (or times out), return a value at most this long past its `ttl`.
    pub stale_if_error: Option<Duration>,
    /// With a stale value at hand, a body slower than this returns it and finishes in the
    /// background.
    pub timeout: Option<Duration>,
    /// A call within the last this-long of `ttl` is served and refreshes the entry in the
    /// background.
    pub refresh_ahead: Option<Duration>,
}

impl Resilience {
    /// None of them.
    pub const NONE: Resilience = Resilience {
        stale_while_revalidate: None,
        stale_if_error: None,
        timeout: None,
        refresh_ahead: None,
    };

    /// Field by field, `self`'s setting, else `other`'s.
    pub fn or(self, other: Resilience) -> Resilience {
        Resilience {
            stale_while_revalidate: self.stale_while_revalidate.or(other.stale_while_revalidate),
            stale_if_error: self.stale_if_error.or(other.stale_if_error),
            timeout: self.timeout.or(other.timeout),
            refresh_ahead: self.refresh_ahead.or(other.refresh_ahead),
        }
    }

    /// How far before `ttl` an entry stops being fresh (`refresh_ahead`, at most `ttl`).
    pub fn ahead(&self, ttl: Duration) -> Duration {
        self.refresh_ahead.unwrap_or(Duration::ZERO).min(ttl)
    }

    /// How long past its fresh time an entry of `ttl` stays readable as stale: the
    /// refresh-ahead period plus the longer of the two stale windows; `None` when nothing
    /// reads stale values.
    pub fn stale_window(&self, ttl: Duration) -> Option<Duration> {
        let after = self
            .stale_while_revalidate
            .unwrap_or(Duration::ZERO)
            .max(self.stale_if_error.unwrap_or(Duration::ZERO));
        let w = self.ahead(ttl) + after;
        (w > Duration::ZERO).then_some(w)
    }

    /// Whether a stale value `age` past its fresh time is served at once while a background
    /// refresh runs.
    pub(crate) fn serves_stale(&self, age: Duration) -> bool {
        let ahead = self.refresh_ahead.unwrap_or(Duration::ZERO);
        match self.stale_while_revalidate {
            Some(w) => age < ahead + w,
            None => age < ahead,
        }
    }

    /// Whether a stale value `age` past its fresh time may stand in for a failed or slow body.
    pub(crate) fn falls_back(&self, age: Duration) -> bool {
        let ahead = self.refresh_ahead.unwrap_or(Duration::ZERO);
        self.stale_if_error.is_some_and(|w| age < ahead + w)
    }

    /// Whether anything runs in the background (the body must then be owned, see the macro).
    pub fn background(&self) -> bool {
        self.stale_while_revalidate.is_some()
            || self.refresh_ahead.is_some()
            || self.timeout.is_some()
    }
}

/// What varies per call site: the `Self` type of methods and the type arguments of generic fns.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallInfo<'a> {
    /// `type_name::<Self>()` in methods.
    pub self_type: Option<&'static str>,
    /// `type_name::<T>()` of each type parameter.
    pub generics: &'a [&'static str],
}

/// How a call uses the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look up, fill on a miss.
    Normal,
    /// Drop the current entry (and its dependents), run the body, store.
    Refresh,
    /// A background refresh of a stale entry: never served stale, the entry stays until the
    /// new value replaces it; joins the key's flight like a miss.
    Revalidate,
}

/// A custom key (`key = "..."`): its text is the key, as is.
///
/// ```
/// let k = cache_core::runtime::RawKey("user:7".into());
/// assert_eq!(cache_core::key::readable(&k), "user:7");
/// ```
#[derive(Debug, Clone)]
pub struct RawKey(pub String);

impl KeyPart for RawKey {
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put(self.0.as_bytes());
    }
    fn write_readable(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

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
        }
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
        let mut s = String::from("fn:");
        s.push_str(info.self_type.unwrap_or(self.meta.module));
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
        args.write_binary(buf);
    }

    fn text_key<A: KeyPart + ?Sized>(&self, args: &A, info: &CallInfo<'_>) -> Arc<str> {
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
    pub fn key<A: KeyPart + ?Sized>(&'static self, args: &A, info: &CallInfo<'_>) -> Key {
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
    fn on_hit_at<A: KeyPart + ?Sized>(&'static self, args: &A, info: &CallInfo<'_>, stripe: usize) {
        self.counters.hits.incr_at(stripe);
        tracing::trace!(function = self.meta.name, "cache hit");
        if context::is_collecting() {
            context::add_dependency(&*self.text_key(args, info));
        }
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
        A: KeyPart + ?Sized + Sync,
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
        A: KeyPart + ?Sized + Sync,
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
        A: KeyPart + ?Sized + Sync,
        V: Cacheable,
    {
        let started = if registry::is_enabled() {
            let mut buf = KeyBuf::new();
            self.binary_key(args, &info, &mut buf);
            let hash = local_hash(buf.as_bytes());
            self.begin_local::<A, V>(args, &info, mode, &buf, hash)
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
    async fn begin_async_rest<A, V>(
        &'static self,
        args: &A,
        info: CallInfo<'_>,
        deps: &mut (dyn FnMut(&mut Vec<String>) + Send),
        mode: Mode,
        refresher: Option<AsyncRefresher<'_>>,
        flights_ended: u64,
        known_miss: Option<Lease>,
    ) -> Begin<V>
    where
        A: KeyPart + ?Sized + Sync,
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
    fn call<A: KeyPart + ?Sized>(
        &'static self,
        args: &A,
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
        let backend: Arc<dyn Backend> = resolved.backend.clone();
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
        A: KeyPart + ?Sized,
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
        A: KeyPart + ?Sized,
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
        A: KeyPart + ?Sized,
        V: Cacheable,
    {
        if !registry::is_enabled() {
            return self.disabled();
        }
        let mut buf = KeyBuf::new();
        self.binary_key(args, &info, &mut buf);
        let hash = local_hash(buf.as_bytes());
        let (flights_ended, known_miss) =
            match self.begin_local::<A, V>(args, &info, mode, &buf, hash) {
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
    fn begin_local<A, V>(
        &'static self,
        args: &A,
        info: &CallInfo<'_>,
        mode: Mode,
        buf: &KeyBuf,
        hash: u64,
    ) -> Result<V, (u64, Option<Lease>)>
    where
        A: KeyPart + ?Sized,
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
    fn begin_blocking_keyed<A, V>(
        &'static self,
        args: &A,
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
        A: KeyPart + ?Sized,
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
        let found = registry::with_memory_of(self.meta.profile, |m, front, final_misses| {
            match m.front_hit::<V>(key, stripe) {
                Some(v) => Probe::Hit(v),
                None => shard_probe::<V>(m, key, stripe, front, final_misses),
            }
        });
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
    pub fn entry<A, V>(
        &'static self,
        args: &A,
        info: CallInfo<'_>,
        deps: &mut dyn FnMut(&mut Vec<String>),
    ) -> EntryRef<V>
    where
        A: KeyPart + ?Sized,
        V: Cacheable,
    {
        self.register();
        let key = self.key(args, &info);
        let mut declared = Vec::new();
        deps(&mut declared);
        let resolved = registry::resolve(self.meta.profile);
        let options = self.options(&resolved, declared, &info);
        EntryRef {
            cache: self,
            key,
            options,
            _value: PhantomData,
        }
    }

    /// A handle on every entry of this function.
    pub fn all(&'static self, info: CallInfo<'_>) -> FnRef {
        self.register();
        FnRef {
            cache: self,
            dependency: self.all_dependency(&info),
        }
    }

    fn backend(&self) -> Arc<dyn Backend> {
        registry::current_backend(self.meta.profile)
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

/// Runs the body of a call that missed and stores its value.
pub struct Filler<V> {
    cache: &'static FnCache,
    key: Option<Key>,
    target: Option<Target>,
    /// A stale value that may stand in for a failed or slow body (`stale_if_error`).
    fallback: Option<V>,
    /// The body's time limit when a stale value is at hand (`timeout`).
    timeout: Option<Duration>,
}

struct Target {
    backend: Arc<dyn Backend>,
    options: EntryOptions,
    lease: Lease,
    leader: Option<Leader<'static>>,
}

impl<V: Cacheable> Filler<V> {
    fn new(
        cache: &'static FnCache,
        key: Key,
        backend: Arc<dyn Backend>,
        options: EntryOptions,
        lease: Lease,
        leader: Option<Leader<'static>>,
    ) -> Self {
        Filler {
            cache,
            key: Some(key),
            target: Some(Target {
                backend,
                options,
                lease,
                leader,
            }),
            fallback: None,
            timeout: None,
        }
    }

    fn passthrough(cache: &'static FnCache, key: Option<Key>) -> Self {
        Filler {
            cache,
            key,
            target: None,
            fallback: None,
            timeout: None,
        }
    }

    /// Keeps a stale value that may stand in for a failed or slow body, and the body's time
    /// limit when there is one.
    pub(crate) fn with_fallback(mut self, fallback: Option<V>, timeout: Option<Duration>) -> Self {
        self.fallback = fallback;
        self.timeout = timeout;
        self
    }

    /// [`Self::fill_async`] of a fn with `stale_if_error`: when the body's result is a failure
    /// (`is_err`) and a stale value is at hand, that value is returned (`wrap`: `Ok(v)`)
    /// instead. A panic is not swallowed.
    pub async fn fill_async_guarded<R, F: Future<Output = R>>(
        mut self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        let fallback = self.fallback.take();
        let cache = self.cache;
        let r = self.fill_async(fut, to_value).await;
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_blocking`] of a fn with `stale_if_error` (see [`Self::fill_async_guarded`]).
    pub fn fill_blocking_guarded<R>(
        mut self,
        f: impl FnOnce() -> R,
        to_value: impl FnOnce(&R) -> Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        let fallback = self.fallback.take();
        let cache = self.cache;
        let r = self.fill_blocking(f, to_value);
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_async_guarded`] of a fn with `timeout`: with a stale value at hand, the
    /// body runs as a task of its own and gets `timeout`; a slower body makes the call return
    /// the stale value, and finishes in the background, storing its value. Without a stale
    /// value (or outside a tokio runtime) the call waits for the body.
    pub async fn fill_async_timed<R, F>(
        mut self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V> + Send + 'static,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(limit), Some(rt), true) = (self.timeout, runtime, self.fallback.is_some()) else {
            return self.fill_async_guarded(fut, to_value, is_err, wrap).await;
        };
        let fallback = self.fallback.take();
        let cache = self.cache;
        let key = self.key.clone();
        let mut task = rt.spawn(registry::carry_override_async(
            self.fill_async(fut, to_value),
        ));
        let r = match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(_)) | Err(_) => return cache.timed_out(key, fallback, wrap),
        };
        // the body ran in its own task: record the entry in the caller's fill, if any
        cache.record_dependency(key.as_ref());
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_blocking_guarded`] of a fn with `timeout` (see [`Self::fill_async_timed`]):
    /// the body runs on a thread of its own.
    pub fn fill_blocking_timed<R>(
        mut self,
        f: impl FnOnce() -> R + Send + 'static,
        to_value: impl FnOnce(&R) -> Option<V> + Send + 'static,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R
    where
        R: Send + 'static,
    {
        let (Some(limit), true) = (self.timeout, self.fallback.is_some()) else {
            return self.fill_blocking_guarded(f, to_value, is_err, wrap);
        };
        let fallback = self.fallback.take();
        let cache = self.cache;
        let key = self.key.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned =
            std::thread::Builder::new()
                .name("cache-fill".into())
                .spawn(registry::carry_override(move || {
                    let _ = tx.send(self.fill_blocking(f, to_value));
                }));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the body on a thread; serving the stale value");
                return cache.timed_out(key, fallback, wrap);
            }
        };
        match rx.recv_timeout(limit) {
            Ok(r) => {
                cache.record_dependency(key.as_ref());
                cache.stand_in(r, fallback, is_err, wrap)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => cache.timed_out(key, fallback, wrap),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => cache.timed_out(key, fallback, wrap),
            },
        }
    }

    /// Runs an async body, stores `to_value` of its result, returns the result.
    pub async fn fill_async<R, F: Future<Output = R>>(
        self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V>,
    ) -> R {
        let Some(mut target) = self.target else {
            let r = fut.await;
            if let Some(key) = &self.key {
                if context::is_collecting() {
                    context::add_dependency(key.text());
                }
            }
            return r;
        };
        let key = self.key.expect("a target has a key");
        let start = Instant::now();
        let abandon = Abandon::arm(&target, &key);
        let (r, collected) = context::collect(fut).await;
        let elapsed = start.elapsed();
        let value = to_value(&r).map(value::share);
        abandon.disarm(value.is_some());
        if let Some(v) = &value {
            target.options.dependencies.extend(collected);
            let outcome = target
                .backend
                .set(&key, v.clone(), &target.options, target.lease)
                .await;
            self.cache.after_set(&key, outcome, elapsed, v, &mut target);
        }
        if context::is_collecting() {
            context::add_dependency(key.text());
        }
        r
    }

    /// Runs a sync body, stores `to_value` of its result, returns the result.
    pub fn fill_blocking<R>(
        self,
        f: impl FnOnce() -> R,
        to_value: impl FnOnce(&R) -> Option<V>,
    ) -> R {
        let Some(mut target) = self.target else {
            let r = f();
            if let Some(key) = &self.key {
                if context::is_collecting() {
                    context::add_dependency(key.text());
                }
            }
            return r;
        };
        let key = self.key.expect("a target has a key");
        let start = Instant::now();
        let abandon = Abandon::arm(&target, &key);
        let (r, collected) = context::collect_blocking(f);
        let elapsed = start.elapsed();
        let value = to_value(&r).map(value::share);
        abandon.disarm(value.is_some());
        if let Some(v) = &value {
            target.options.dependencies.extend(collected);
            let outcome =
                target
                    .backend
                    .set_blocking(&key, v.clone(), &target.options, target.lease);
            self.cache.after_set(&key, outcome, elapsed, v, &mut target);
        }
        if context::is_collecting() {
            context::add_dependency(key.text());
        }
        r
    }
}

/// Tells the backend when a fill ends without a value to store ([`Backend::abandon`]): the
/// body returned nothing cacheable, panicked, or its future was dropped mid-way.
struct Abandon<'a> {
    backend: &'a dyn Backend,
    key: &'a Key,
    lease: Lease,
    armed: bool,
}

impl<'a> Abandon<'a> {
    fn arm(target: &'a Target, key: &'a Key) -> Self {
        Abandon {
            backend: &*target.backend,
            key,
            lease: target.lease,
            armed: true,
        }
    }

    /// The body finished: `storing` says whether a value goes to `set` (which ends the fill).
    fn disarm(mut self, storing: bool) {
        self.armed = !storing;
    }
}

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.backend.abandon(self.key, self.lease);
        }
    }
}

impl FnCache {
    /// The stale value in place of a failed result (`stale_if_error`), or the result.
    fn stand_in<V, R>(
        &self,
        r: R,
        fallback: Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        match fallback {
            Some(v) if is_err(&r) => {
                self.counters.stale_if_error_served.incr();
                tracing::warn!(
                    function = self.meta.name,
                    "the body failed; returning the stale value (stale_if_error)"
                );
                wrap(v)
            }
            _ => r,
        }
    }

    /// The body was slower than `timeout`: the stale value, while it finishes in the background.
    fn timed_out<V, R>(
        &self,
        key: Option<Key>,
        fallback: Option<V>,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        self.counters.timeouts.incr();
        tracing::debug!(
            function = self.meta.name,
            "the body is slower than its timeout; returning the stale value"
        );
        self.record_dependency(key.as_ref());
        wrap(fallback.expect("a timed fill has a stale value"))
    }

    /// Records `key` in the enclosing fill's dependencies, if any.
    fn record_dependency(&self, key: Option<&Key>) {
        if let (Some(k), true) = (key, context::is_collecting()) {
            context::add_dependency(k.text());
        }
    }

    fn after_set(
        &self,
        key: &Key,
        outcome: Result<SetOutcome, CacheError>,
        elapsed: Duration,
        value: &SharedValue,
        target: &mut Target,
    ) {
        self.counters
            .fill_nanos
            .add(elapsed.as_nanos().min(u64::MAX as u128) as u64);
        self.counters.timed_fills.incr();
        #[cfg(feature = "metrics")]
        crate::metrics::record_fill(self.meta.module, self.meta.name, elapsed.as_secs_f64());
        match outcome {
            Ok(SetOutcome::Stored) => {
                self.counters.fills.incr();
                tracing::debug!(
                    function = self.meta.name,
                    key = key.text(),
                    ?elapsed,
                    "cache fill"
                );
                if let Some(l) = target.leader.take() {
                    l.complete(value.clone());
                }
            }
            Ok(SetOutcome::Rejected) => {
                self.counters.stale_rejected.incr();
                tracing::debug!(
                    function = self.meta.name,
                    key = key.text(),
                    "fill rejected: the key or a dependency was invalidated while computing"
                );
                // followers retry: the value may predate the invalidation
            }
            Err(e) => {
                self.counters.errors.incr();
                backend_error(&self.meta, "set", &e);
                if let Some(l) = target.leader.take() {
                    l.complete(value.clone());
                }
            }
        }
    }
}

/// A handle on one entry of a cached function (what `<fn>_key(..)` returns).
pub struct EntryRef<V> {
    cache: &'static FnCache,
    key: Key,
    options: EntryOptions,
    _value: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for EntryRef<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryRef").field("key", &self.key).finish()
    }
}

impl<V: Cacheable> EntryRef<V> {
    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Removes the entry and, transitively, every entry depending on it.
    pub async fn invalidate(&self) -> Result<(), CacheError> {
        tracing::debug!(key = self.key.text(), "invalidate");
        self.cache.backend().remove(&self.key).await
    }

    /// Removes the entry (blocking form).
    pub fn invalidate_blocking(&self) -> Result<(), CacheError> {
        tracing::debug!(key = self.key.text(), "invalidate");
        self.cache.backend().remove_blocking(&self.key)
    }

    /// Stores `value` as this entry (write-through); entries depending on the old value are
    /// invalidated first.
    pub async fn put(&self, value: V) -> Result<(), CacheError> {
        let backend = self.cache.backend();
        backend.remove(&self.key).await?;
        backend
            .set(
                &self.key,
                value::share(value),
                &self.options,
                Lease::UNCONDITIONAL,
            )
            .await
            .map(|_| ())
    }

    /// Stores `value` as this entry (blocking form).
    pub fn put_blocking(&self, value: V) -> Result<(), CacheError> {
        let backend = self.cache.backend();
        backend.remove_blocking(&self.key)?;
        backend
            .set_blocking(
                &self.key,
                value::share(value),
                &self.options,
                Lease::UNCONDITIONAL,
            )
            .map(|_| ())
    }

    /// Reads the entry without running the function (`None` on a miss or an error).
    pub async fn get(&self) -> Option<V> {
        let backend = self.cache.backend();
        match backend.get(&self.key).await {
            Ok(Lookup::Hit(h)) => h.into_typed().ok(),
            _ => None,
        }
    }

    /// Reads the entry (blocking form).
    pub fn get_blocking(&self) -> Option<V> {
        match self.cache.backend().get_blocking(&self.key) {
            Ok(Lookup::Hit(h)) => h.into_typed().ok(),
            _ => None,
        }
    }
}

/// Handles on several entries of a batch fn (what `<fn>_entries(..)` returns, and what
/// `#[invalidates(get_users([id]))]` invalidates).
pub struct EntryRefs<V>(Vec<EntryRef<V>>);

impl<V> std::fmt::Debug for EntryRefs<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|e| &e.key))
            .finish()
    }
}

impl<V: Cacheable> EntryRefs<V> {
    /// Wraps entry handles.
    pub fn new(entries: Vec<EntryRef<V>>) -> Self {
        EntryRefs(entries)
    }

    /// The entries.
    pub fn entries(&self) -> &[EntryRef<V>] {
        &self.0
    }

    /// Removes every entry (and, transitively, their dependents). Returns the first error,
    /// after trying every entry.
    pub async fn invalidate(&self) -> Result<(), CacheError> {
        let mut first = Ok(());
        for e in &self.0 {
            if let Err(err) = e.invalidate().await {
                first = first.and(Err(err));
            }
        }
        first
    }

    /// Removes every entry (blocking form).
    pub fn invalidate_blocking(&self) -> Result<(), CacheError> {
        let mut first = Ok(());
        for e in &self.0 {
            if let Err(err) = e.invalidate_blocking() {
                first = first.and(Err(err));
            }
        }
        first
    }
}

/// A handle on all entries of a cached function (what `<fn>_cache()` returns).
pub struct FnRef {
    cache: &'static FnCache,
    dependency: String,
}

impl std::fmt::Debug for FnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnRef")
            .field("dependency", &self.dependency)
            .finish()
    }
}

impl FnRef {
    /// Removes every entry of the function (and, transitively, their dependents).
    pub async fn invalidate_all(&self) -> Result<(), CacheError> {
        self.cache.backend().invalidate(&self.dependency).await
    }

    /// Removes every entry of the function (blocking form).
    pub fn invalidate_all_blocking(&self) -> Result<(), CacheError> {
        self.cache.backend().invalidate_blocking(&self.dependency)
    }

    /// The function's counters.
    pub fn stats(&self) -> FnStats {
        self.cache.stats()
    }

    /// Resets the function's counters.
    pub fn reset_stats(&self) {
        self.cache.counters.reset();
    }
}

/// Invalidates `dependency` on every backend a cached call could reach (see
/// [`registry::all_backends`]). Returns the first error, after trying every backend.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// cache_core::invalidate_dependency("user:7").await.unwrap();
/// # });
/// ```
pub async fn invalidate_dependency(dependency: &str) -> Result<(), CacheError> {
    tracing::debug!(dependency, "invalidate dependency");
    let mut first = Ok(());
    for b in registry::all_backends() {
        if let Err(e) = b.invalidate(dependency).await {
            tracing::warn!(backend = b.name(), dependency, error = %e, "invalidation failed");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Invalidates `dependency` on every backend (blocking form).
pub fn invalidate_dependency_blocking(dependency: &str) -> Result<(), CacheError> {
    tracing::debug!(dependency, "invalidate dependency");
    let mut first = Ok(());
    for b in registry::all_backends() {
        if let Err(e) = b.invalidate_blocking(dependency) {
            tracing::warn!(backend = b.name(), dependency, error = %e, "invalidation failed");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}
