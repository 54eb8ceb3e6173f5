//! The registry: which backend a cached function uses.
//!
//! * a **global default** backend: the [`MemoryBackend`] when nothing is configured;
//! * **named profiles** (`#[cached(profile = "hot")]`) carrying ttl, sliding expiration and an
//!   optional backend of their own;
//! * a **scoped override** ([`with_backend`], [`with_backend_blocking`]) that sends every cached
//!   call made inside the scope (across `.await`) to another backend, so tests don't share state;
//! * a run-time switch ([`set_enabled`]) that turns caching off: functions run every time.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use cache_core::{registry::{self, Profile}, MemoryBackend};
//!
//! registry::configure()
//!     .default_backend(Arc::new(MemoryBackend::new()))
//!     .profile("hot", Profile::new().ttl(Duration::from_secs(5)))
//!     .apply()
//!     .unwrap();
//! assert!(registry::profile("hot").is_some());
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::backend::Backend;
use crate::error::CacheError;
use crate::memory::{Front, MemoryBackend};
use crate::runtime::Resilience;

/// Settings shared by the functions that name a profile.
///
/// A function's own `ttl`/`sliding` win over its profile's.
#[derive(Clone, Default)]
pub struct Profile {
    /// Absolute expiration of entries.
    pub ttl: Option<Duration>,
    /// Sliding expiration of entries.
    pub sliding: Option<Duration>,
    /// Each entry's ttl is extended by a random 0..`jitter`.
    pub jitter: Option<Duration>,
    /// Stale-while-revalidate, stale-if-error, timeout, refresh-ahead.
    pub resilience: Resilience,
    /// The backend of this profile; the default backend when `None`.
    pub backend: Option<Arc<dyn Backend>>,
}

impl Profile {
    /// An empty profile (default backend, no expiration).
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
    /// Extends each entry's ttl by a random 0..`jitter`, so entries filled together (a fleet
    /// warming up, a batch job) do not expire together.
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = cache_core::registry::Profile::new()
    ///     .ttl(Duration::from_secs(300))
    ///     .jitter(Duration::from_secs(30));
    /// assert_eq!(p.jitter, Some(Duration::from_secs(30)));
    /// ```
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = Some(jitter);
        self
    }
    /// After `ttl`, serve the stale value for up to `window` more while one background refresh
    /// replaces it (`#[cached(stale_while_revalidate = "..")]`).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.resilience.stale_while_revalidate = Some(window);
        self
    }
    /// When the body fails, return a value at most `window` past its `ttl` instead
    /// (`#[cached(stale_if_error = "..")]`).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.resilience.stale_if_error = Some(window);
        self
    }
    /// With a stale value at hand, a body slower than `timeout` returns it and finishes in the
    /// background (`#[cached(timeout = "..")]`).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.resilience.timeout = Some(timeout);
        self
    }
    /// A hit within the last `ahead` of `ttl` refreshes the entry in the background
    /// (`#[cached(refresh_ahead = "..")]`).
    ///
    /// ```
    /// use std::time::Duration;
    /// let p = cache_core::registry::Profile::new()
    ///     .ttl(Duration::from_secs(60))
    ///     .refresh_ahead(Duration::from_secs(10))
    ///     .stale_if_error(Duration::from_secs(3600));
    /// assert_eq!(p.resilience.refresh_ahead, Some(Duration::from_secs(10)));
    /// ```
    pub fn refresh_ahead(mut self, ahead: Duration) -> Self {
        self.resilience.refresh_ahead = Some(ahead);
        self
    }
    /// Sets the backend.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backend = Some(backend);
        self
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("ttl", &self.ttl)
            .field("sliding", &self.sliding)
            .field("jitter", &self.jitter)
            .field("resilience", &self.resilience)
            .field(
                "backend",
                &self.backend.as_ref().map(|b| b.name().to_string()),
            )
            .finish()
    }
}

pub(crate) struct State {
    pub(crate) default: Arc<dyn Backend>,
    pub(crate) profiles: HashMap<String, Profile>,
    /// Bumped by every configuration change; threads compare it with their snapshot's.
    generation: u64,
}

/// The installed configuration. Readers do not touch it on the hit path: each thread keeps a
/// snapshot (`SNAPSHOT`) and reloads it only when `GENERATION` moved.
static CURRENT: LazyLock<Mutex<Arc<State>>> = LazyLock::new(|| {
    start_sweeper();
    Mutex::new(Arc::new(State {
        default: Arc::new(MemoryBackend::new()),
        profiles: HashMap::new(),
        generation: 0,
    }))
});
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Starts the thread that sweeps the expired entries of the installed memory backends (the
/// default backend's and the profiles', including memory backends inside other backends:
/// [`Backend::as_memory`], [`Backend::memory_hits`]) when their sweep interval has passed. It
/// wakes once a second and holds no lock while sweeping.
fn start_sweeper() {
    let spawned = std::thread::Builder::new()
        .name("cache-core-sweep".into())
        .spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let state = CURRENT.lock().clone();
            let backends = std::iter::once(&state.default)
                .chain(state.profiles.values().filter_map(|p| p.backend.as_ref()));
            for b in backends {
                if let Some(m) = b.as_memory().or_else(|| b.memory_hits()) {
                    m.sweep_if_due();
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the sweeper thread: expired entries are removed only when touched");
    }
}

/// A thread's copy of the configuration.
struct Snapshot {
    state: Arc<State>,
}

impl Snapshot {
    /// Installs `state` as this thread's snapshot and points [`FAST`] at its default backend.
    fn new(state: Arc<State>) -> Self {
        let (memory, final_misses) = memory_of(&*state.default);
        let _ = FAST.try_with(|f| {
            f.generation.set(state.generation);
            f.memory.set(memory);
            f.final_misses.set(final_misses);
            f.forget_profiles();
        });
        Snapshot { state }
    }
}

/// The memory backend the fast path looks in for `backend` ([`Backend::as_memory`], else
/// [`Backend::memory_hits`]; null if neither), and whether a miss there is a miss of `backend`
/// itself (`as_memory`).
fn memory_of(backend: &dyn Backend) -> (*const MemoryBackend, bool) {
    let (memory, final_misses) = match backend.as_memory() {
        Some(m) => (Some(m), true),
        None => (backend.memory_hits(), false),
    };
    (
        memory.map_or(std::ptr::null(), |m| m as *const MemoryBackend),
        final_misses,
    )
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        // the backend `FAST` points into may go with this state
        let _ = FAST.try_with(|f| {
            f.generation.set(u64::MAX);
            f.memory.set(std::ptr::null());
            f.forget_profiles();
        });
    }
}

/// The hit path's view of this thread's snapshot: plain cells without a destructor, so reading
/// them is a few loads (no lazy initialization, no `RefCell`).
struct Fast {
    /// The generation of the snapshot; `u64::MAX` when there is none.
    generation: Cell<u64>,
    /// The [`MemoryBackend`] of its default backend ([`Backend::as_memory`], else
    /// [`Backend::memory_hits`]; kept alive by `SNAPSHOT`), or null.
    memory: Cell<*const MemoryBackend>,
    /// Whether a miss in `memory` is a miss of the default backend ([`Backend::as_memory`]).
    final_misses: Cell<bool>,
    /// Fast-path lookups running on this thread: the snapshot is not replaced while one runs
    /// (a value's `Clone` may call a cached fn that would reload it).
    pins: Cell<u32>,
    /// The memory backends of profiles this thread's cached fns used (kept alive by
    /// `SNAPSHOT`, forgotten with it), by the address of the profile name the fn was compiled
    /// with.
    profiles: [Cell<ProfileMemory>; PROFILES],
    /// The entry of `profiles` the next one replaces.
    next_profile: Cell<usize>,
}

/// How many profiles a thread's fast path remembers.
const PROFILES: usize = 4;

/// A profile whose backend is (or hits in) a memory backend, as [`Fast`] remembers it.
#[derive(Clone, Copy)]
struct ProfileMemory {
    /// The address and length of the profile's name as the fn has it (null: unused).
    name: (*const u8, usize),
    /// Null when the profile's backend has no memory backend.
    memory: *const MemoryBackend,
    /// Whether a miss in `memory` is a miss of the profile's backend.
    final_misses: bool,
}

const NO_PROFILE: ProfileMemory = ProfileMemory {
    name: (std::ptr::null(), 0),
    memory: std::ptr::null(),
    final_misses: false,
};

impl Fast {
    fn forget_profiles(&self) {
        for p in &self.profiles {
            p.set(NO_PROFILE);
        }
    }

    #[inline(always)]
    fn profile(&self, name: &str) -> Option<ProfileMemory> {
        let key = (name.as_ptr(), name.len());
        self.profiles.iter().map(Cell::get).find(|p| p.name == key)
    }
}

thread_local! {
    static SNAPSHOT: RefCell<Option<Snapshot>> = const { RefCell::new(None) };
    static FAST: Fast = const {
        Fast {
            generation: Cell::new(u64::MAX),
            memory: Cell::new(std::ptr::null()),
            final_misses: Cell::new(false),
            pins: Cell::new(0),
            profiles: [const { Cell::new(NO_PROFILE) }; PROFILES],
            next_profile: Cell::new(0),
        }
    };
}

fn load_current() -> Arc<State> {
    CURRENT.lock().clone()
}

/// Replaces the installed configuration with `make(current)`.
fn update(make: impl FnOnce(&State) -> (Arc<dyn Backend>, HashMap<String, Profile>)) {
    let mut cur = CURRENT.lock();
    let generation = cur.generation + 1;
    let (default, profiles) = make(&cur);
    *cur = Arc::new(State {
        default,
        profiles,
        generation,
    });
    GENERATION.store(generation, Ordering::Release);
}

/// Runs `f` on the current configuration: a thread-local snapshot, reloaded only when the
/// configuration changed (no lock, no shared write on the hit path).
#[inline]
pub(crate) fn with_state<R>(f: impl FnOnce(&State) -> R) -> R {
    let generation = GENERATION.load(Ordering::Acquire);
    let mut f = Some(f);
    let r = SNAPSHOT.try_with(|s| {
        if let Ok(b) = s.try_borrow() {
            if let Some(snap) = b.as_ref().filter(|sn| sn.state.generation == generation) {
                let f = f.take()?;
                return Some(f(&snap.state));
            }
        }
        let st = load_current();
        let pinned = FAST.try_with(|f| f.pins.get() > 0).unwrap_or(true);
        if !pinned {
            if let Ok(mut b) = s.try_borrow_mut() {
                // the old snapshot is dropped (and `FAST` cleared) before the new one is made
                *b = None;
                *b = Some(Snapshot::new(st.clone()));
            }
        }
        let f = f.take()?;
        Some(f(&st))
    });
    match (r, f) {
        (Ok(Some(r)), _) => r,
        (_, Some(f)) => f(&load_current()),
        (_, None) => unreachable!("f runs once"),
    }
}

/// The hit path's shortcut: runs `f` on the [`MemoryBackend`] of the backend of `profile`
/// (`None`: the default backend) when it has one ([`Backend::as_memory`] or
/// [`Backend::memory_hits`]), no scoped override is active anywhere and this thread's snapshot
/// is current. `f` also gets whether it may write the thread's front table and whether a miss
/// there is a miss of the backend itself (an `as_memory` backend) rather than only of its
/// local level. `None` (and `f` not run) otherwise, or for a profile this thread has not
/// resolved since its snapshot was taken ([`remember_profile`]): the caller takes the general
/// path ([`with_backend_of`]), which also refreshes the snapshot.
#[inline(always)]
pub(crate) fn with_memory_of<R>(
    profile: Option<&str>,
    f: impl FnOnce(&MemoryBackend, Front, bool) -> R,
) -> Option<R> {
    if OVERRIDES.load(Ordering::Relaxed) != 0 {
        return None;
    }
    let generation = GENERATION.load(Ordering::Acquire);
    // `FAST` has no destructor: it is valid for the whole life of this thread
    let fast: *const Fast = FAST.with(|f| f as *const Fast);
    // SAFETY: a pointer to this thread's `FAST`, used on this thread only.
    let fast = unsafe { &*fast };
    if fast.generation.get() != generation {
        return None;
    }
    let (memory, final_misses) = match profile {
        None => (fast.memory.get(), fast.final_misses.get()),
        Some(name) => {
            let p = fast.profile(name)?;
            (p.memory, p.final_misses)
        }
    };
    if memory.is_null() {
        return None;
    }
    struct Unpin<'a>(&'a Cell<u32>);
    impl Drop for Unpin<'_> {
        #[inline(always)]
        fn drop(&mut self) {
            self.0.set(self.0.get() - 1);
        }
    }
    let pins = fast.pins.get();
    fast.pins.set(pins + 1);
    let _unpin = Unpin(&fast.pins);
    // the outermost lookup of the thread may write its front table (see `memory::front`)
    let front = if pins == 0 {
        Front::ReadWrite
    } else {
        Front::Read
    };
    // SAFETY: `memory` points into a backend of this thread's snapshot (its default or one of
    // its profiles'), which is not replaced while pinned (see `with_state`) and clears `FAST`
    // when dropped.
    Some(f(unsafe { &*memory }, front, final_misses))
}

/// Lets [`with_memory_of`] find `profile`'s memory backend on this thread from now on (until
/// the configuration changes), or know at once that it has none. An unknown profile is not
/// remembered (its calls keep counting the error on the general path).
pub(crate) fn remember_profile(profile: &str) {
    let generation = GENERATION.load(Ordering::Acquire);
    let known = FAST
        .try_with(|f| f.generation.get() != generation || f.profile(profile).is_some())
        .unwrap_or(true);
    if known {
        return; // remembered, or no current snapshot to point into
    }
    let _ = SNAPSHOT.try_with(|s| {
        let Ok(b) = s.try_borrow() else { return };
        let Some(snap) = b.as_ref().filter(|sn| sn.state.generation == generation) else {
            return;
        };
        let Some(p) = snap.state.profiles.get(profile) else {
            return;
        };
        let backend = p.backend.as_ref().unwrap_or(&snap.state.default);
        let (memory, final_misses) = memory_of(&**backend);
        let _ = FAST.try_with(|f| {
            if f.generation.get() != generation {
                return;
            }
            let i = f.next_profile.get() % PROFILES;
            f.next_profile.set(i + 1);
            // SAFETY of the pointer's later use: `memory` lives in a backend of the snapshot
            // `FAST` describes (same generation), and the snapshot forgets it when dropped
            f.profiles[i].set(ProfileMemory {
                name: (profile.as_ptr(), profile.len()),
                memory,
                final_misses,
            });
        });
    });
}

static ENABLED: AtomicBool = AtomicBool::new(true);
static OVERRIDES: AtomicUsize = AtomicUsize::new(0);

tokio::task_local! {
    static TASK_OVERRIDE: Arc<dyn Backend>;
}
thread_local! {
    static THREAD_OVERRIDE: RefCell<Vec<Arc<dyn Backend>>> = const { RefCell::new(Vec::new()) };
}

/// Starts a configuration; nothing changes until [`Config::apply`].
pub fn configure() -> Config {
    Config::default()
}

/// A configuration being built. Profiles not named here are kept.
#[derive(Default)]
pub struct Config {
    default: Option<Arc<dyn Backend>>,
    profiles: Vec<(String, Profile)>,
    enabled: Option<bool>,
}

impl Config {
    /// Sets the global default backend.
    pub fn default_backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.default = Some(backend);
        self
    }
    /// Adds (or replaces) a named profile.
    pub fn profile(mut self, name: impl Into<String>, profile: Profile) -> Self {
        self.profiles.push((name.into(), profile));
        self
    }
    /// Turns caching on or off.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = Some(enabled);
        self
    }
    /// Checks and installs the configuration. An invalid value is an `Err` naming the field
    /// (e.g. `profile.hot.ttl`), and nothing is installed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cache_core::registry::{configure, Profile};
    /// let err = configure().profile("", Profile::new()).apply().unwrap_err();
    /// assert!(err.to_string().contains("profile"));
    /// let err = configure().profile("z", Profile::new().ttl(Duration::ZERO)).apply().unwrap_err();
    /// assert!(err.to_string().contains("profile.z.ttl"));
    /// ```
    pub fn apply(self) -> Result<(), CacheError> {
        for (name, p) in &self.profiles {
            if name.is_empty() {
                return Err(CacheError::config(
                    "profile",
                    "a profile name cannot be empty",
                ));
            }
            if p.ttl == Some(Duration::ZERO) {
                return Err(CacheError::config(
                    format!("profile.{name}.ttl"),
                    "must be greater than zero (leave it unset for no expiration)",
                ));
            }
            if p.jitter.is_some() && p.ttl.is_none() {
                return Err(CacheError::config(
                    format!("profile.{name}.jitter"),
                    "spreads the expiry of `ttl`: set a ttl too",
                ));
            }
            if p.sliding == Some(Duration::ZERO) {
                return Err(CacheError::config(
                    format!("profile.{name}.sliding"),
                    "must be greater than zero (leave it unset for no sliding expiration)",
                ));
            }
            let r = &p.resilience;
            for (field, set) in [
                ("stale_while_revalidate", r.stale_while_revalidate),
                ("stale_if_error", r.stale_if_error),
                ("timeout", r.timeout),
                ("refresh_ahead", r.refresh_ahead),
            ] {
                if set.is_some() && p.ttl.is_none() {
                    return Err(CacheError::config(
                        format!("profile.{name}.{field}"),
                        "works from the entry's expiry: set a ttl too",
                    ));
                }
            }
            if r.timeout.is_some() && r.stale_if_error.is_none() {
                return Err(CacheError::config(
                    format!("profile.{name}.timeout"),
                    "returns the stale value when the body is slow: set stale_if_error too",
                ));
            }
            if let (Some(ahead), Some(ttl)) = (r.refresh_ahead, p.ttl) {
                if ahead >= ttl {
                    return Err(CacheError::config(
                        format!("profile.{name}.refresh_ahead"),
                        "must be shorter than the ttl",
                    ));
                }
            }
        }
        update(|cur| {
            let mut profiles = cur.profiles.clone();
            for (name, p) in self.profiles {
                profiles.insert(name, p);
            }
            (
                self.default.unwrap_or_else(|| cur.default.clone()),
                profiles,
            )
        });
        if let Some(e) = self.enabled {
            set_enabled(e);
        }
        Ok(())
    }
}

/// Installs `backend` as the global default (shortcut for
/// `configure().default_backend(backend).apply()`).
///
/// ```
/// use std::sync::Arc;
/// cache_core::registry::install(Arc::new(cache_core::MemoryBackend::new()));
/// assert_eq!(cache_core::registry::default_backend().name(), "memory");
/// ```
pub fn install(backend: Arc<dyn Backend>) {
    update(|cur| (backend, cur.profiles.clone()));
}

/// The global default backend (ignores scoped overrides).
pub fn default_backend() -> Arc<dyn Backend> {
    with_state(|s| s.default.clone())
}

/// A configured profile.
pub fn profile(name: &str) -> Option<Profile> {
    with_state(|s| s.profiles.get(name).cloned())
}

/// Turns caching on or off at run time. Off: cached functions run their body every time and
/// store nothing.
///
/// ```
/// cache_core::registry::set_enabled(false);
/// assert!(!cache_core::registry::is_enabled());
/// cache_core::registry::set_enabled(true);
/// ```
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether caching is on.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Runs `fut` with every cached call inside it (across `.await`, in this task) going to
/// `backend`, whatever the default or the profiles say.
///
/// ```
/// use std::sync::Arc;
/// use cache_core::{registry, MemoryBackend};
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mem = Arc::new(MemoryBackend::new());
/// registry::with_backend(mem.clone(), async {
///     assert_eq!(registry::current_backend(None).name(), "memory");
/// }).await;
/// # });
/// ```
pub async fn with_backend<F: Future>(backend: Arc<dyn Backend>, fut: F) -> F::Output {
    let _count = OverrideCount::new();
    TASK_OVERRIDE.scope(backend, fut).await
}

/// Runs `f` with every cached call made on this thread inside it going to `backend`.
pub fn with_backend_blocking<R>(backend: Arc<dyn Backend>, f: impl FnOnce() -> R) -> R {
    let _count = OverrideCount::new();
    THREAD_OVERRIDE.with(|s| s.borrow_mut().push(backend));
    struct Pop;
    impl Drop for Pop {
        fn drop(&mut self) {
            let _ = THREAD_OVERRIDE.try_with(|s| s.borrow_mut().pop());
        }
    }
    let _pop = Pop;
    f()
}

struct OverrideCount;
impl OverrideCount {
    fn new() -> Self {
        OVERRIDES.fetch_add(1, Ordering::SeqCst);
        OverrideCount
    }
}
impl Drop for OverrideCount {
    fn drop(&mut self) {
        OVERRIDES.fetch_sub(1, Ordering::SeqCst);
    }
}

#[inline]
/// Work started here that runs elsewhere (a background refresh, a body finishing after its
/// timeout) keeps the scoped override in force here, if any.
pub(crate) fn carry_override_async<F: Future + Send + 'static>(
    fut: F,
) -> std::pin::Pin<Box<dyn Future<Output = F::Output> + Send>>
where
    F::Output: Send,
{
    match scoped_override() {
        Some(b) => Box::pin(with_backend(b, fut)),
        None => Box::pin(fut),
    }
}

/// [`carry_override_async`] for work run on another thread.
pub(crate) fn carry_override<R>(
    f: impl FnOnce() -> R + Send + 'static,
) -> impl FnOnce() -> R + Send + 'static {
    let over = scoped_override();
    move || match over {
        Some(b) => with_backend_blocking(b, f),
        None => f(),
    }
}

fn scoped_override() -> Option<Arc<dyn Backend>> {
    if OVERRIDES.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let t = THREAD_OVERRIDE
        .try_with(|s| s.borrow().last().cloned())
        .ok()
        .flatten();
    t.or_else(|| TASK_OVERRIDE.try_with(|b| b.clone()).ok())
}

/// What a call resolves to: a backend and the profile's expiration settings.
pub(crate) struct Resolved {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) ttl: Option<Duration>,
    pub(crate) sliding: Option<Duration>,
    pub(crate) jitter: Option<Duration>,
    pub(crate) resilience: Resilience,
    pub(crate) unknown_profile: bool,
}

/// Resolves the backend and profile settings for a function with `profile`.
pub(crate) fn resolve(profile: Option<&str>) -> Resolved {
    let over = scoped_override();
    with_state(|state| {
        let (ttl, sliding, jitter, resilience, pbackend, unknown) = match profile {
            None => (None, None, None, Resilience::NONE, None, false),
            Some(name) => match state.profiles.get(name) {
                Some(p) => (
                    p.ttl,
                    p.sliding,
                    p.jitter,
                    p.resilience,
                    p.backend.clone(),
                    false,
                ),
                None => (None, None, None, Resilience::NONE, None, true),
            },
        };
        Resolved {
            backend: over.unwrap_or_else(|| pbackend.unwrap_or_else(|| state.default.clone())),
            ttl,
            sliding,
            jitter,
            resilience,
            unknown_profile: unknown,
        }
    })
}

/// Runs `f` with the backend a call with `profile` uses, without cloning anything on the
/// common path (no scoped override, no profile).
#[inline]
pub(crate) fn with_backend_of<R>(profile: Option<&str>, f: impl FnOnce(&dyn Backend) -> R) -> R {
    if let Some(b) = scoped_override() {
        return f(&*b);
    }
    with_state(|state| match profile.and_then(|p| state.profiles.get(p)) {
        Some(Profile {
            backend: Some(b), ..
        }) => f(&**b),
        _ => f(&*state.default),
    })
}

/// Where a `#[cached(local)]` fn keeps its values when its backend is `backend`: the backend
/// itself if it keeps values in process ([`Backend::keeps_values_in_process`]), else this
/// process's local memory backend ([`local_memory`]).
pub(crate) fn local_tier(backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    if backend.keeps_values_in_process() {
        backend
    } else {
        local_memory()
    }
}

/// The memory backend that holds the values of `#[cached(local)]` fns whose backend does not
/// keep values in process (a `RedisBackend`, a `LayeredBackend`): made at first use, default
/// bounds. Dependency invalidations reach it too ([`crate::invalidate_dependency`]); another
/// node's do not.
///
/// ```
/// let m = cache_core::registry::local_memory();
/// assert_eq!(m.name(), "memory");
/// ```
pub fn local_memory() -> Arc<dyn Backend> {
    LOCAL_MEMORY
        .get_or_init(|| Arc::new(MemoryBackend::new()))
        .clone()
}

/// Whether [`local_memory`] was made (so invalidations need to reach it).
pub(crate) fn local_memory_in_use() -> Option<Arc<dyn Backend>> {
    LOCAL_MEMORY.get().cloned()
}

static LOCAL_MEMORY: std::sync::OnceLock<Arc<dyn Backend>> = std::sync::OnceLock::new();

/// The backend a call with `profile` would use now (scoped override, then the profile's
/// backend, then the default).
pub fn current_backend(profile: Option<&str>) -> Arc<dyn Backend> {
    resolve(profile).backend
}

/// Every distinct backend a cached call could reach now: the scoped override (if any), the
/// default and the profiles' backends, and the [`local_memory`] of `#[cached(local)]` fns if
/// it is in use. Dependency invalidations go to all of them.
pub fn all_backends() -> Vec<Arc<dyn Backend>> {
    let mut out: Vec<Arc<dyn Backend>> = Vec::new();
    let mut push = |b: Arc<dyn Backend>| {
        if !out.iter().any(|o| Arc::ptr_eq(o, &b)) {
            out.push(b);
        }
    };
    if let Some(local) = local_memory_in_use() {
        push(local);
    }
    if let Some(b) = scoped_override() {
        push(b);
        return out;
    }
    let state = load_current();
    push(state.default.clone());
    for p in state.profiles.values() {
        if let Some(b) = &p.backend {
            push(b.clone());
        }
    }
    out
}
