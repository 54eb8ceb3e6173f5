//! [`RedisBackend`]: entries in Redis, shared by every process that uses the same server and
//! prefix.
//!
//! * **Hit**: one `GET P:{T}`. A miss needs a lease: a generation not newer than the one current
//!   when the miss was read (every invalidation after the miss then stamps a newer one, and the
//!   set script rejects the fill). Any generation seen in an earlier reply qualifies, so the
//!   backend remembers the newest one it has seen (`known_gen`: from lookups, fills,
//!   invalidations, clears) and when the request that brought it was sent. While that is at
//!   most [`GEN_FRESH_MS`] old, a lookup is a plain `GET` and a miss leases `known_gen`;
//!   otherwise (an idle process) the lookup is `MGET P:{T} P:gen` as before, which refreshes it.
//!   An invalidation leaves a *tombstone* carrying its generation in place of each entry it
//!   removes ([`crate::envelope`]), and a `GET` that finds one leases the newer of the two: the
//!   miss an invalidation caused (on any node) is never filled with a lease older than that
//!   invalidation, so its fill is not rejected spuriously.
//! * **Fill**: one `EVALSHA` of the set script, which rejects the value when the key, one of its
//!   dependencies, or everything was invalidated after the lease's generation, else stores the
//!   entry, its dependency list and its reverse-index memberships. A miss with dependencies is
//!   thus 2 round trips plus the function.
//! * **Invalidate / remove**: one script; transitive; stamps every name it reaches with a new
//!   generation (what the set script compares against) and leaves a tombstone with that
//!   generation in place of every entry it removes.
//! * **Sliding expiry**: refreshed after a hit by a `PEXPIRE` sent from the backend's runtime
//!   thread, which the caller does not wait for.
//! * **Fail-open**: every operation is bounded by `op_timeout` and passes the circuit breaker;
//!   failed invalidations are queued and retried in order ([`crate::retry`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cache_core::backend::BoxFuture;
use cache_core::value::{Hit, SharedValue};
use cache_core::{
    Backend, BackendStats, CacheError, EntryOptions, Fill, Key, Lease, Lookup, SetOutcome,
};
use redis::RedisResult;

use crate::client::exec::{in_tokio, on_runtime};
use crate::client::RedisClient;
use crate::config::RedisBackendBuilder;
use crate::envelope;
use crate::error::RedisCacheError;
use crate::keys::Layout;
use crate::retry::{InvalidationKind, RetryQueue};
use crate::scripts;
use crate::stats::{Counters, RedisStats};

/// The Redis backend. Cheap to clone (clones share one connection, background tasks and
/// counters); install it with `Arc::new(backend)` as a cache-core backend.
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use cache_core::{Backend, EntryOptions, Key, Lookup, SetOutcome, value};
/// use cache_redis::RedisBackend;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let backend = RedisBackend::builder()
///     .url("redis://127.0.0.1:6379/")
///     .prefix("myapp")
///     .connect()
///     .await?;
/// let key = Key::from_text("myapp::get_user(7)");
/// let Lookup::Miss(lease) = backend.get(&key).await? else { unreachable!() };
/// let options = EntryOptions::new().ttl(Duration::from_secs(60)).depends_on("user:7");
/// let stored = backend.set(&key, value::share("Ann".to_string()), &options, lease).await?;
/// assert_eq!(stored, SetOutcome::Stored);
/// backend.invalidate("user:7").await?; // removes the entry, on every node
///
/// cache_core::registry::install(Arc::new(backend)); // every cached fn now uses Redis
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The connection, breaker, op timeout and background tasks ([`crate::client`]).
    pub(crate) client: Arc<RedisClient>,
    pub(crate) layout: Layout,
    pub(crate) max_payload: usize,
    pub(crate) compress_over: usize,
    pub(crate) dependencies: bool,
    pub(crate) lock_ttl: Option<Duration>,
    retry_limit: Duration,
    pub(crate) instance: String,
    pub(crate) counters: Arc<Counters>,
    retry: RetryQueue,
    /// The longest ttl (ms) of an entry set by this backend; `u64::MAX` once an entry without
    /// an absolute ttl was set. Bounds how long a failed invalidation is retried.
    max_ttl_ms: AtomicU64,
    gc: Arc<crate::gc::Gc>,
    /// The newest generation seen in a reply (a safe lease for any later miss).
    known_gen: AtomicU64,
    /// [`mono_ms`] when the request that brought `known_gen` was sent (0: never).
    known_at: AtomicU64,
    /// Set when the server restarted or failed over (a new `run_id`) until everything this
    /// prefix holds has been cleared: entries written before may predate invalidations the
    /// server lost (a snapshot, the last second of an AOF, a lagging replica), so no hit is
    /// served meanwhile.
    distrust: AtomicBool,
    /// Server changes this backend has distrusted its entries for ([`Inner::trust`]).
    trust_epoch: AtomicU64,
    restart_clears: AtomicU64,
    /// The write-behind queue on Redis Streams ([`crate::write_queue`]).
    write_queue: crate::write_queue::SharedQueue,
    /// The storage protocol (1 or 2, [`crate::versioned`]).
    pub(crate) protocol: u8,
    /// Protocol 2: the leases of misses not yet filled.
    pub(crate) leases: crate::versioned::Leases,
    /// Protocol 2: per key, the names its entry lists beyond its call's declared ones.
    pub(crate) hints: crate::versioned::Hints,
    /// Protocol 2: whether reads of several keys go key by key (set once an `MGET` met
    /// `CROSSSLOT`: a cluster).
    pub(crate) split_reads: AtomicBool,
    /// Protocol 2: the life of a version key (ms) when no entry asks for longer.
    pub(crate) version_ttl_ms: u64,
    /// Replicas that must have an invalidation before it is acknowledged (`WAIT`).
    pub(crate) invalidation_replicas: u32,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &self.inner.client.redacted_url())
            .field("prefix", &self.inner.layout.prefix)
            .field("connected", &self.inner.client.is_connected())
            .finish_non_exhaustive()
    }
}

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a remembered generation is used as the lease of a `GET` miss (ms).
///
/// A miss leases the newest generation this process has seen, brought by a request sent at
/// most this long ago. Safety does not depend on the value (any generation seen earlier is at
/// most the one current at the miss); liveness does: a fill is rejected when one of its
/// names (the key, a dependency, `clear`) was stamped after its lease, so with a remembered
/// lease a stamp up to `GEN_FRESH_MS` (+ a round trip) before the miss rejects it needlessly
/// once, when no tombstone recorded it (the entry did not exist, expired or was evicted, or a
/// `clear` or a dependency stamped after the entry was removed). The rejection's reply brings
/// the current generation, so the next miss stores. Under load a process sends one `MGET`
/// per window (10 per second) and `GET`s otherwise; a process idle for longer pays nothing
/// extra (its next lookup is the `MGET`). Tombstones must outlive this window
/// ([`envelope::TOMBSTONE_TTL_MS`]).
pub(crate) const GEN_FRESH_MS: u64 = 100;

/// Units of work one invalidation step may do (an entry removed costs 1 + its dependency
/// count): about a millisecond of server time, so a `PING` from another client never waits
/// long behind an invalidation, whatever its fan-out.
pub(crate) const INVALIDATION_BUDGET: usize = 100;
/// Names one invalidation step takes at most.
const INVALIDATION_NAMES_PER_STEP: usize = 64;
const _: () = assert!(envelope::TOMBSTONE_TTL_MS >= 100 * GEN_FRESH_MS);

/// Monotonic milliseconds since the first call, plus one (0 is "never").
pub(crate) fn mono_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn instance_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:x}-{:x}-{}",
        std::process::id(),
        nanos as u64,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// When an entry expires in Redis, and what its envelope says about it.
pub(crate) struct Expiry {
    /// The key's expiry in ms (0: none): the ttl or the sliding time, plus the stale window.
    pub(crate) px: u64,
    pub(crate) ttl_ms: Option<u64>,
    pub(crate) sliding_ms: Option<u64>,
    /// With both a ttl and sliding expiry: the absolute end (unix ms).
    pub(crate) deadline_ms: Option<u64>,
    /// With a stale window: the end of the fresh time (unix ms).
    pub(crate) fresh_until_ms: Option<u64>,
}

impl Expiry {
    pub(crate) fn of(options: &EntryOptions) -> Self {
        let ttl_ms = options.ttl.map(|d| d.as_millis().max(1) as u64);
        let sliding_ms = options.sliding.map(|d| d.as_millis().max(1) as u64);
        let px = match (ttl_ms, sliding_ms) {
            (Some(t), Some(s)) => t.min(s),
            (Some(t), None) => t,
            (None, Some(s)) => s,
            (None, None) => 0,
        };
        let deadline_ms = match (ttl_ms, sliding_ms) {
            (Some(t), Some(_)) => Some(unix_ms() + t),
            _ => None,
        };
        // a stale window: Redis keeps the entry that much longer; the envelope says when it
        // stops being fresh (not with sliding expiry: a hit's PEXPIRE would not move the
        // fresh-until time, so such entries have no stale window on Redis)
        let stale_ms = options.stale.map(|d| d.as_millis().max(1) as u64);
        let (px, fresh_until_ms) = match (stale_ms, px) {
            (Some(extra), px) if px > 0 && sliding_ms.is_none() => {
                (px + extra, Some(unix_ms() + px))
            }
            _ => (px, None),
        };
        Expiry {
            px,
            ttl_ms,
            sliding_ms,
            deadline_ms,
            fresh_until_ms,
        }
    }
}

/// One entry of a batch store: key text, encoded value, options, lease.
type EncodedFill = (Arc<str>, Vec<u8>, EntryOptions, Lease);

/// What a lookup found (before conversion to a [`Lookup`]).
enum Found {
    /// The stored bytes, and the lease if they are not a value (a tombstone's generation may
    /// raise it).
    Hit(Vec<u8>, u64),
    /// A miss and its lease.
    Miss(u64),
}

/// A generation as the scripts return it (a decimal string or an integer).
pub(crate) fn parse_gen(v: &redis::Value) -> Option<u64> {
    match v {
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

impl Inner {
    /// Remembers `gen`, seen in the reply to a request sent at `sent` ([`mono_ms`]).
    pub(crate) fn learn_gen(&self, gen: u64, sent: u64) {
        // gen before time: a reader that sees the time sees a generation at least this new
        self.known_gen.fetch_max(gen, Ordering::Release);
        self.known_at.fetch_max(sent, Ordering::Release);
    }

    /// The remembered generation if it was brought by a request sent within
    /// [`GEN_FRESH_MS`].
    pub(crate) fn fresh_gen(&self) -> Option<u64> {
        let at = self.known_at.load(Ordering::Acquire);
        if at == 0 || mono_ms().saturating_sub(at) >= GEN_FRESH_MS {
            return None;
        }
        Some(self.known_gen.load(Ordering::Acquire))
    }

    /// Remembers the server time `time_us` (protocol 2), seen in the reply to a request sent
    /// at `sent`. Any time seen in a reply is at most the server's time at a later request, so
    /// it is a safe lease; unlike a generation it is stored, not maxed, so a server whose clock
    /// went back (a failover) is followed at once.
    pub(crate) fn learn_time(&self, time_us: u64, sent: u64) {
        self.known_gen.store(time_us, Ordering::Release);
        self.known_at.store(sent, Ordering::Release);
    }

    /// Runs one Redis operation through the client (breaker, op timeout, classification).
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisCacheError>
    where
        F: FnOnce(crate::client::Connection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        self.client.run(op, f).await
    }

    async fn lookup(self: &Arc<Self>, text: &str) -> Result<Found, RedisCacheError> {
        if let Some(ttl) = self.lock_ttl {
            return self.lookup_locked(text, ttl).await;
        }
        let item = self.layout.item(text);
        // read before the request is sent: a generation seen later could postdate the miss
        if let Some(lease) = self.fresh_gen() {
            let value: Option<Vec<u8>> = self
                .run("get", |mut con| async move {
                    redis::cmd("GET").arg(&item).query_async(&mut con).await
                })
                .await?;
            return Ok(match value {
                Some(v) => Found::Hit(v, lease),
                None => Found::Miss(lease),
            });
        }
        let sent = mono_ms();
        let (value, gen): (Option<Vec<u8>>, Option<u64>) = self
            .run("get", |mut con| async move {
                redis::cmd("MGET")
                    .arg(&item)
                    .arg(&self.layout.gen)
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let gen = gen.unwrap_or(0);
        self.learn_gen(gen, sent);
        Ok(match value {
            Some(v) => Found::Hit(v, gen),
            None => Found::Miss(gen),
        })
    }

    /// A lookup with distributed single flight: a miss takes the key's lock or waits for the
    /// holder's value (at most the lock's ttl; then computes anyway).
    async fn lookup_locked(
        self: &Arc<Self>,
        text: &str,
        ttl: Duration,
    ) -> Result<Found, RedisCacheError> {
        let deadline = tokio::time::Instant::now() + ttl + self.client.op_timeout();
        let mut delay = Duration::from_millis(2);
        let mut waited = false;
        loop {
            let px = ttl.as_millis().max(1) as u64;
            let sent = mono_ms();
            let (status, gen, value): (i64, u64, Option<Vec<u8>>) = self
                .run("get", |mut con| async move {
                    scripts::get_lock()
                        .arg(&self.layout.prefix)
                        .arg(text)
                        .arg(&self.instance)
                        .arg(px)
                        .invoke_async(&mut con)
                        .await
                })
                .await?;
            self.learn_gen(gen, sent);
            match (status, value) {
                (2, Some(v)) => return Ok(Found::Hit(v, gen)),
                (1, _) => return Ok(Found::Miss(gen)),
                _ => {
                    if !waited {
                        waited = true;
                        self.counters.lock_waits.incr();
                    }
                    if tokio::time::Instant::now() + delay > deadline {
                        return Ok(Found::Miss(gen));
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// What a read may be trusted under: `None` while hits are distrusted (a server change not
    /// yet cleared), otherwise the count of server changes distrusted so far. Taken before a read and
    /// compared after it ([`Self::still_trusted`]): a restart detected, and even cleared, while
    /// the read was under way makes what it read untrusted (it may be a value the restart
    /// brought back that the clear had not yet removed).
    pub(crate) fn trust(&self) -> Option<u64> {
        if self.distrust.load(Ordering::SeqCst) {
            return None;
        }
        let epoch = self.trust_epoch.load(Ordering::SeqCst);
        (!self.distrust.load(Ordering::SeqCst)).then_some(epoch)
    }

    /// Whether a read made under `before` (taken with [`Self::trust`]) may be served.
    pub(crate) fn still_trusted(&self, before: Option<u64>) -> bool {
        before.is_some() && self.trust() == before
    }

    async fn get(self: Arc<Self>, text: Arc<str>) -> Result<Lookup, CacheError> {
        let trust = self.trust();
        match self.lookup(&text).await {
            Ok(found) => Ok(self.answer(&text, found, trust)),
            Err(e) => {
                self.counters.errors.incr();
                Err(e.into())
            }
        }
    }

    /// Reads several entries in one round trip: one `MGET` of the entry keys (plus the
    /// generation when the remembered one is not fresh). With distributed single flight, the
    /// misses then take their locks (or wait for their holders) one lookup each, concurrently.
    async fn get_many(self: Arc<Self>, texts: Vec<Arc<str>>) -> Result<Vec<Lookup>, CacheError> {
        let items: Vec<String> = texts.iter().map(|t| self.layout.item(t)).collect();
        // read before the request is sent: a generation seen later could postdate the misses
        let fresh = self.fresh_gen();
        let sent = mono_ms();
        let with_gen = fresh.is_none();
        let trust = self.trust();
        let read = self
            .run("get_many", |mut con| {
                let mut cmd = redis::cmd("MGET");
                cmd.arg(&items);
                if with_gen {
                    cmd.arg(&self.layout.gen);
                }
                async move { cmd.query_async::<Vec<Option<Vec<u8>>>>(&mut con).await }
            })
            .await;
        let mut values = match read {
            Ok(v) if v.len() == items.len() + usize::from(with_gen) => v,
            Ok(_) => {
                self.counters.errors.incr();
                return Err(CacheError::backend(
                    "redis",
                    "MGET answered a different number of keys",
                ));
            }
            Err(e) => {
                self.counters.errors.incr();
                return Err(e.into());
            }
        };
        let lease = match fresh {
            Some(g) => g,
            None => {
                let g = values
                    .pop()
                    .flatten()
                    .and_then(|b| std::str::from_utf8(&b).ok()?.parse().ok())
                    .unwrap_or(0);
                self.learn_gen(g, sent);
                g
            }
        };
        let mut out: Vec<Option<Lookup>> = Vec::with_capacity(texts.len());
        let mut locking = Vec::new();
        for (i, (text, value)) in texts.iter().zip(values).enumerate() {
            let found = match value {
                Some(v) => Found::Hit(v, lease),
                None if self.lock_ttl.is_some() => {
                    // a miss takes the key's lock (or waits for its holder) first
                    locking.push(i);
                    out.push(None);
                    continue;
                }
                None => Found::Miss(lease),
            };
            out.push(Some(self.answer(text, found, trust)));
        }
        if !locking.is_empty() {
            let locked = futures_util::future::join_all(
                locking.iter().map(|&i| self.clone().get(texts[i].clone())),
            )
            .await;
            for (i, r) in locking.into_iter().zip(locked) {
                out[i] = Some(r?);
            }
        }
        Ok(out
            .into_iter()
            .map(|l| l.expect("every key answered"))
            .collect())
    }

    /// Reads several entries: [`Self::get_many`] on protocol 1; on protocol 2, one lookup per
    /// key (each declaring `declared`), concurrently (they share the connection's pipeline).
    async fn get_many_any(
        self: Arc<Self>,
        texts: Vec<Arc<str>>,
        declared: Vec<String>,
    ) -> Result<Vec<crate::versioned::Answer>, CacheError> {
        if self.protocol == 1 {
            let found = self.get_many(texts).await?;
            return Ok(found
                .into_iter()
                .map(|lookup| crate::versioned::Answer {
                    lookup,
                    deps: Vec::new(),
                })
                .collect());
        }
        futures_util::future::join_all(
            texts
                .into_iter()
                .map(|t| self.clone().v2_get(t, declared.clone())),
        )
        .await
        .into_iter()
        .collect()
    }

    /// A lookup's answer: a value, or a miss with its lease (a tombstone, a corrupt value, or
    /// any entry while hits are distrusted, is a miss).
    fn answer(self: &Arc<Self>, text: &str, found: Found, trust: Option<u64>) -> Lookup {
        let found = match found {
            Found::Hit(_, gen) if !self.still_trusted(trust) => Found::Miss(gen),
            found => found,
        };
        match found {
            Found::Miss(gen) => {
                self.counters.misses.incr();
                Lookup::Miss(Lease(gen))
            }
            Found::Hit(bytes, gen) => match envelope::open(bytes, self.max_payload) {
                Ok(envelope::Stored::Tombstone(removed)) => {
                    // a generation seen in a reply: safe to remember (its time is unknown)
                    self.known_gen.fetch_max(removed, Ordering::Release);
                    self.counters.misses.incr();
                    Lookup::Miss(Lease(gen.max(removed)))
                }
                Ok(envelope::Stored::Value(opened)) if opened.version != envelope::VERSION => {
                    // protocol 2's entry: a miss the fill overwrites
                    self.counters.misses.incr();
                    Lookup::Miss(Lease(gen))
                }
                Ok(envelope::Stored::Value(opened))
                    if opened.fresh_until_ms.is_some_and(|f| unix_ms() >= f) =>
                {
                    // past its fresh time, inside its stale window
                    self.counters.misses.incr();
                    let age = unix_ms().saturating_sub(opened.fresh_until_ms.unwrap_or(0));
                    Lookup::Stale {
                        hit: Hit::Bytes(opened.payload),
                        lease: Lease(gen),
                        age: Duration::from_millis(age),
                    }
                }
                Ok(envelope::Stored::Value(opened)) => {
                    self.counters.hits.incr();
                    if let Some(sliding) = opened.sliding_ms {
                        self.refresh_sliding(text, sliding, opened.deadline_ms);
                    }
                    Lookup::Hit(Hit::Bytes(opened.payload))
                }
                Err(e) => {
                    self.counters.corrupt.incr();
                    self.counters.misses.incr();
                    tracing::warn!(key = text, error = %e,
                        "value in Redis is not a valid cache envelope; treating it as a miss (the fill overwrites it)");
                    Lookup::Miss(Lease(gen))
                }
            },
        }
    }

    /// The server restarted or failed over: serve no hit until every entry of this prefix is
    /// gone (the clear stamps a new generation first, so fills leased before are rejected).
    fn server_changed(self: &Arc<Self>) {
        self.distrust.store(true, Ordering::SeqCst);
        // after `distrust`: a read that saw neither is caught by the epoch it began under
        self.trust_epoch.fetch_add(1, Ordering::SeqCst);
        let weak = Arc::downgrade(self);
        self.client.spawn(async move {
            let mut delay = Duration::from_millis(20);
            loop {
                let Some(inner) = weak.upgrade() else { return };
                match inner.clone().clear().await {
                    Ok(()) => {
                        inner.restart_clears.fetch_add(1, Ordering::Relaxed);
                        inner.distrust.store(false, Ordering::SeqCst);
                        tracing::info!(prefix = %inner.layout.prefix, "entries from before the Redis restart cleared; serving hits again");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "clearing entries after a Redis restart failed; retrying (no hits meanwhile)");
                    }
                }
                drop(inner);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
        });
    }

    /// Takes the key's distributed lock for a background refresh (`SET NX`; this node's own
    /// lock counts as taken). `true` without a distributed lock, and when Redis cannot be asked
    /// (fail-open: a refresh too many is better than none).
    async fn claim_refresh(self: Arc<Self>, text: Arc<str>) -> bool {
        let Some(ttl) = self.lock_ttl else {
            return true;
        };
        let lock = self.layout.lock(&text);
        let token = self.instance.clone();
        let px = ttl.as_millis().max(1) as u64;
        let r = self
            .run("claim", |mut con| async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&lock)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(px)
                    .query_async(&mut con)
                    .await?;
                if set.is_some() {
                    return Ok(true);
                }
                let holder: Option<String> =
                    redis::cmd("GET").arg(&lock).query_async(&mut con).await?;
                Ok(holder.as_deref() == Some(token.as_str()))
            })
            .await;
        r.unwrap_or(true)
    }

    /// Releases the distributed lock of a fill that will not store (in the background: the
    /// caller does not wait).
    pub(crate) fn abandon(&self, text: &str) {
        if self.lock_ttl.is_none() {
            return;
        }
        let lock = self.layout.lock(text);
        let token = self.instance.clone();
        // a release that fails leaves the lock to expire
        self.client.detach("unlock", |mut con| async move {
            scripts::unlock()
                .key(lock)
                .arg(token)
                .invoke_async::<i64>(&mut con)
                .await
                .map(drop)
        });
    }

    /// Extends a sliding entry's expiry without making the caller wait.
    pub(crate) fn refresh_sliding(&self, text: &str, sliding_ms: u64, deadline_ms: Option<u64>) {
        let mut ms = sliding_ms;
        if let Some(d) = deadline_ms {
            let left = d.saturating_sub(unix_ms());
            if left == 0 {
                return;
            }
            ms = ms.min(left);
        }
        let item = self.layout.item(text);
        self.client.detach("sliding", |mut con| async move {
            redis::cmd("PEXPIRE")
                .arg(item)
                .arg(ms)
                .query_async::<()>(&mut con)
                .await
        });
    }

    async fn set(
        self: Arc<Self>,
        text: Arc<str>,
        payload: Vec<u8>,
        options: EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        if self.protocol == 2 {
            return self.v2_set(text, payload, options, lease).await;
        }
        let inv = match self.prepare_set(&text, &payload, &options, lease) {
            Ok(inv) => inv,
            Err(size) => return self.oversize(&text, size).await,
        };
        drop(payload);
        let sent = mono_ms();
        let result = self
            .run("set", |mut con| async move {
                inv.invoke_async::<(i64, redis::Value)>(&mut con).await
            })
            .await;
        self.set_outcome(&text, lease, sent, result)
    }

    /// Stores several entries in one round trip: the set scripts of all of them, pipelined
    /// (each with its own lease, rejected or stored on its own).
    async fn set_many(
        self: Arc<Self>,
        fills: Vec<EncodedFill>,
    ) -> Result<Vec<SetOutcome>, CacheError> {
        if self.protocol == 2 {
            // concurrent requests share the multiplexed connection's pipeline
            return futures_util::future::join_all(fills.into_iter().map(
                |(text, payload, options, lease)| {
                    self.clone().v2_set(text, payload, options, lease)
                },
            ))
            .await
            .into_iter()
            .collect();
        }
        let mut out: Vec<Option<Result<SetOutcome, CacheError>>> =
            (0..fills.len()).map(|_| None).collect();
        let mut sent_fills = Vec::with_capacity(fills.len());
        let mut invs = Vec::with_capacity(fills.len());
        for (i, (text, payload, options, lease)) in fills.iter().enumerate() {
            match self.prepare_set(text, payload, options, *lease) {
                Ok(inv) => {
                    invs.push(inv);
                    sent_fills.push(i);
                }
                Err(size) => out[i] = Some(self.oversize(text, size).await),
            }
        }
        if !invs.is_empty() {
            let sent = mono_ms();
            let result = self
                .run("set_many", |mut con| async move {
                    let mut pipe = redis::pipe();
                    for inv in &invs {
                        pipe.invoke_script(inv);
                    }
                    scripts::query_pipeline::<Vec<(i64, redis::Value)>>(
                        &mut con,
                        &pipe,
                        &[scripts::set()],
                    )
                    .await
                })
                .await;
            match result {
                Ok(replies) if replies.len() == sent_fills.len() => {
                    for (i, reply) in sent_fills.into_iter().zip(replies) {
                        let (text, _, _, lease) = &fills[i];
                        out[i] = Some(self.set_outcome(text, *lease, sent, Ok(reply)));
                    }
                }
                Ok(_) => {
                    self.counters.errors.incr();
                    return Err(CacheError::backend(
                        "redis",
                        "the set pipeline answered a different number of fills",
                    ));
                }
                Err(e) => {
                    self.counters.errors.incr();
                    return Err(e.into());
                }
            }
        }
        out.into_iter()
            .map(|o| o.expect("every fill answered"))
            .collect()
    }

    /// The set script's invocation for one entry, or the sealed size when it exceeds
    /// `max_payload`.
    fn prepare_set(
        &self,
        text: &str,
        payload: &[u8],
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<redis::ScriptInvocation<'static>, usize> {
        let expiry = Expiry::of(options);
        let sealed = envelope::seal(
            payload,
            self.compress_over,
            expiry.sliding_ms,
            expiry.deadline_ms,
            expiry.fresh_until_ms,
        );
        if sealed.len() > self.max_payload {
            return Err(sealed.len());
        }
        self.note_ttl(&expiry);
        let lease_arg = if lease == Lease::UNCONDITIONAL {
            "u".to_string()
        } else {
            lease.0.to_string()
        };
        let token = match self.lock_ttl {
            Some(_) => self.instance.as_str(),
            _ => "",
        };
        let mut inv = scripts::set().prepare_invoke();
        inv.arg(&self.layout.prefix)
            .arg(text)
            .arg(lease_arg)
            .arg(sealed)
            .arg(expiry.px)
            .arg(token);
        if self.dependencies {
            for d in &options.dependencies {
                inv.arg(d);
            }
        }
        Ok(inv)
    }

    /// Remembers the longest ttl of an entry set (how long a failed invalidation is retried).
    pub(crate) fn note_ttl(&self, expiry: &Expiry) {
        self.max_ttl_ms
            .fetch_max(expiry.ttl_ms.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// A value too large for `max_payload`: not stored, and the key's old entry is invalidated.
    pub(crate) async fn oversize(
        self: &Arc<Self>,
        text: &str,
        size: usize,
    ) -> Result<SetOutcome, CacheError> {
        self.counters.oversize.incr();
        tracing::warn!(
            key = text,
            bytes = size,
            limit = self.max_payload,
            "value exceeds max_payload; not stored (the key's old entry is invalidated)"
        );
        let _ = self
            .clone()
            .invalidate(InvalidationKind::Keys, vec![text.to_string()])
            .await;
        Err(CacheError::backend(
            "redis",
            format!(
                "value of {size} bytes exceeds max_payload ({})",
                self.max_payload
            ),
        ))
    }

    /// What the set script's reply means (and the generation it brings).
    fn set_outcome(
        &self,
        text: &str,
        lease: Lease,
        sent: u64,
        result: Result<(i64, redis::Value), RedisCacheError>,
    ) -> Result<SetOutcome, CacheError> {
        if let Ok((stored, g)) = &result {
            if let Some(g) = parse_gen(g) {
                self.learn_gen(g, sent);
                if *stored == 0 && lease != Lease::UNCONDITIONAL && lease.0 > g {
                    // the server's generation went back (restarted without data, or a
                    // failover to a server whose clock is behind): forget the newer ones
                    self.known_gen.store(g, Ordering::Release);
                }
            }
        }
        match result {
            Ok((1, _)) => {
                self.counters.inserts.incr();
                Ok(SetOutcome::Stored)
            }
            Ok(_) => {
                self.counters.rejected_sets.incr();
                tracing::debug!(key = text, "fill rejected: an invalidation raced it");
                Ok(SetOutcome::Rejected)
            }
            Err(e) => {
                self.counters.errors.incr();
                Err(e.into())
            }
        }
    }

    /// Queues a failed invalidation for as long as an entry it could remove may live; the
    /// receiver hears when it is applied.
    fn queue_retry(
        &self,
        kind: InvalidationKind,
        names: Vec<String>,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let ttl = self.max_ttl_ms.load(Ordering::Relaxed);
        let horizon = if ttl == u64::MAX {
            self.retry_limit
        } else {
            Duration::from_millis(ttl).min(self.retry_limit)
        };
        self.retry.push(kind, names, horizon)
    }

    /// Runs an invalidation now, or in order behind queued ones (waiting at most the op
    /// timeout for the queue to apply it); on an outage, queues it.
    pub(crate) async fn invalidate(
        self: Arc<Self>,
        kind: InvalidationKind,
        names: Vec<String>,
    ) -> Result<(), CacheError> {
        if self.retry.pending() > 0 {
            let applied = self.queue_retry(kind, names);
            // the queue drains in order: once it has applied this one, the call succeeded
            return match tokio::time::timeout(self.client.op_timeout(), applied).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(CacheError::backend(
                    "redis",
                    "earlier invalidations are still pending; this one is queued behind them",
                )),
            };
        }
        match self.apply_invalidation(kind, &names).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.counters.errors.incr();
                tracing::warn!(error = %e, ?names, "invalidation failed; queued for retry");
                drop(self.queue_retry(kind, names));
                Err(e.into())
            }
        }
    }

    /// Runs one invalidation as a sequence of bounded script steps ([`INVALIDATION_BUDGET`]
    /// units of work each, so no step holds Redis for more than a few milliseconds whatever
    /// the fan-out), taking the names each step reached until none is left. The first step
    /// takes the generation; every later step stamps with it. Returns when every entry reachable
    /// from `names` (transitively) has been removed.
    pub(crate) async fn apply_invalidation(
        &self,
        kind: InvalidationKind,
        names: &[String],
    ) -> Result<(), RedisCacheError> {
        if self.protocol == 2 {
            return self
                .v2_invalidate(names, kind == InvalidationKind::Keys)
                .await;
        }
        let first_mode = match kind {
            InvalidationKind::Keys => "k",
            InvalidationKind::Dependencies => "d",
        };
        // (mode, names) still to take; `seen` keeps a name reached twice from being walked twice
        let mut todo: std::collections::VecDeque<(&'static str, Vec<String>)> =
            std::collections::VecDeque::new();
        todo.push_back((first_mode, names.to_vec()));
        let mut seen: std::collections::HashSet<String> = names.iter().cloned().collect();
        let mut gen_arg = "new".to_string();
        while let Some((mode, batch)) = todo.pop_front() {
            for chunk in batch.chunks(INVALIDATION_NAMES_PER_STEP) {
                let sent = mono_ms();
                let (removed, gen, reached, unfinished): (
                    u64,
                    redis::Value,
                    Vec<String>,
                    Vec<String>,
                ) = self
                    .run("invalidate", |mut con| {
                        let mut inv = scripts::invalidate().prepare_invoke();
                        inv.arg(&self.layout.prefix)
                            .arg(&gen_arg)
                            .arg(INVALIDATION_BUDGET)
                            .arg(mode);
                        for n in chunk {
                            inv.arg(n);
                        }
                        async move { inv.invoke_async(&mut con).await }
                    })
                    .await?;
                if let Some(g) = parse_gen(&gen) {
                    self.learn_gen(g, sent);
                    gen_arg = g.to_string();
                }
                self.counters.invalidated.add(removed);
                if !unfinished.is_empty() {
                    todo.push_front((mode, unfinished));
                }
                let fresh: Vec<String> = reached
                    .into_iter()
                    .filter(|t| seen.insert(t.clone()))
                    .collect();
                if !fresh.is_empty() {
                    todo.push_back(("d", fresh));
                }
            }
        }
        Ok(())
    }

    async fn clear(self: Arc<Self>) -> Result<(), CacheError> {
        let this: &Inner = &self;
        let r: Result<(), RedisCacheError> = async {
            if this.protocol == 1 {
                let sent = mono_ms();
                let gen: redis::Value = this
                    .run("clear", |mut con| async move {
                        scripts::clear()
                            .arg(&this.layout.prefix)
                            .invoke_async(&mut con)
                            .await
                    })
                    .await?;
                if let Some(g) = parse_gen(&gen) {
                    this.learn_gen(g, sent);
                }
            }
            let pattern = format!("{}:*", this.layout.prefix);
            let epochs = format!("{}:epochs", this.layout.prefix);
            // every master of a cluster, one after the other
            let targets = this
                .run("clear", |mut con| async move { con.scan_targets().await })
                .await?;
            for target in &targets {
                this.clear_on(target, &pattern, &epochs).await?;
            }
            Ok(())
        }
        .await;
        r.map_err(|e| {
            self.counters.errors.incr();
            e.into()
        })
    }

    /// Unlinks the keys of the prefix a `SCAN` of `target` finds (write-behind queues and
    /// protocol 1's generation keys stay).
    async fn clear_on(
        &self,
        target: &crate::client::ScanTarget,
        pattern: &str,
        epochs: &str,
    ) -> Result<(), RedisCacheError> {
        let this = self;
        let mut cursor: u64 = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, keys): (u64, Vec<String>) = this
                .run("clear", |mut con| {
                    let scan = &scan;
                    async move { con.query_on(target, scan).await }
                })
                .await?;
            let doomed: Vec<&String> = keys
                .iter()
                // the write-behind queues are not cache entries: queued writes survive a
                // clear (also the one after a server restart or failover)
                .filter(|k| {
                    **k != this.layout.gen && *k != epochs && !this.layout.is_write_queue_key(k)
                })
                .collect();
            if !doomed.is_empty() {
                this.run("clear", |mut con| async move {
                    // one key per command: on a cluster the keys are in many slots
                    let mut pipe = redis::pipe();
                    for k in &doomed {
                        pipe.cmd("UNLINK").arg(k).ignore();
                    }
                    pipe.query_async::<()>(&mut con).await
                })
                .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    pub(crate) fn stats(&self) -> RedisStats {
        let c = &self.counters;
        RedisStats {
            backend: c.backend(),
            corrupt_values: c.corrupt.get(),
            oversize_values: c.oversize.get(),
            invalidations_queued: c.queued.get(),
            invalidations_retried: c.retried.get(),
            invalidations_dropped: c.dropped.get(),
            pending_invalidations: self.retry.pending() as u64,
            breaker_open: self.client.breaker_open(),
            breaker_trips: self.client.breaker_trips(),
            connects: self.client.connects(),
            connect_failures: self.client.connect_failures(),
            server_restarts: self.client.server_changes(),
            restart_clears: self.restart_clears.load(Ordering::Relaxed),
            gc_references_removed: c.gc_removed.get(),
            sweep_batches: c.sweeps.get(),
            lock_waits: c.lock_waits.get(),
            second_reads: c.second_reads.get(),
        }
    }
}

impl RedisBackend {
    /// A builder with every option at its default.
    ///
    /// ```
    /// let builder = cache_redis::RedisBackend::builder().prefix("myapp");
    /// assert!(builder.validate().is_ok());
    /// ```
    pub fn builder() -> RedisBackendBuilder {
        RedisBackendBuilder::default()
    }

    pub(crate) fn from_builder(b: RedisBackendBuilder) -> Result<Self, RedisCacheError> {
        let client = RedisClient::new(&b)?;
        let layout = Layout::new(&b.prefix);
        let counters = Arc::new(Counters::default());
        let instance = instance_id();
        let gc = crate::gc::Gc::new(
            client.clone(),
            layout.clone(),
            counters.clone(),
            instance.clone(),
        );
        let write_queue =
            crate::write_queue::SharedQueue(Arc::new(crate::write_queue::RedisWriteQueue::new(
                client.clone(),
                layout.clone(),
                instance.clone(),
                crate::write_queue::QueueOptions {
                    claim_after: b.write_claim_after,
                    capacity: b.write_capacity,
                },
            )));
        let inner = Arc::new_cyclic(|weak: &std::sync::Weak<Inner>| {
            let weak = weak.clone();
            let apply: crate::retry::Apply = Arc::new(move |kind, names| {
                let weak = weak.clone();
                Box::pin(async move {
                    let inner = weak.upgrade()?;
                    Some(inner.apply_invalidation(kind, &names).await)
                })
            });
            Inner {
                retry: RetryQueue::start(&client, counters.clone(), apply),
                client: client.clone(),
                layout,
                max_payload: b.max_payload,
                compress_over: b.compress_over,
                dependencies: b.dependencies,
                lock_ttl: b.lock_ttl,
                retry_limit: b.retry_limit,
                instance,
                counters,
                max_ttl_ms: AtomicU64::new(0),
                gc: gc.clone(),
                known_gen: AtomicU64::new(0),
                known_at: AtomicU64::new(0),
                distrust: AtomicBool::new(false),
                trust_epoch: AtomicU64::new(0),
                restart_clears: AtomicU64::new(0),
                write_queue,
                protocol: b.protocol,
                leases: Default::default(),
                hints: Default::default(),
                split_reads: AtomicBool::new(false),
                version_ttl_ms: b.version_ttl.as_millis().max(1) as u64,
                invalidation_replicas: b.invalidation_replicas,
            }
        });
        let weak = Arc::downgrade(&inner);
        client.on_server_change(move || {
            if let Some(inner) = weak.upgrade() {
                inner.server_changed();
            }
        });
        // protocol 2 holds under every eviction policy and keeps no index to collect
        if b.dependencies && b.protocol == 1 {
            client.spawn(crate::eviction::check(Arc::downgrade(&client)));
        }
        if b.gc && b.protocol == 1 {
            crate::gc::start(&gc, b.notifications, b.sweep_interval, b.sweep_batch);
        }
        Ok(RedisBackend { inner })
    }

    /// Waits (at most `limit`) until the backend is connected; `true` when it is.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cache_redis::RedisCacheError> {
    /// let backend = cache_redis::RedisBackend::builder().build()?;
    /// if !backend.wait_connected(std::time::Duration::from_secs(1)).await {
    ///     eprintln!("Redis is not up yet; cached fns run uncached meanwhile");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        self.inner.client.wait_connected(limit).await
    }

    /// [`wait_connected`](Self::wait_connected) for sync code.
    pub fn wait_connected_blocking(&self, limit: Duration) -> bool {
        self.inner.client.wait_connected_blocking(limit)
    }

    /// Whether a connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.client.is_connected()
    }

    /// Why the last connection attempt failed (refused, TLS handshake, authentication, ...),
    /// while no connection has been made since; `None` when connected. Never holds a password.
    ///
    /// ```no_run
    /// let backend = cache_redis::RedisBackend::builder().build()?;
    /// if let Some(reason) = backend.last_connect_error() {
    ///     eprintln!("Redis unreachable: {reason}");
    /// }
    /// # Ok::<(), cache_redis::RedisCacheError>(())
    /// ```
    pub fn last_connect_error(&self) -> Option<String> {
        self.inner.client.last_error()
    }

    /// The storage protocol version (1 or 2; [`RedisBackendBuilder::protocol`]).
    ///
    /// ```
    /// # fn demo(backend: cache_redis::RedisBackend) {
    /// assert!(matches!(backend.protocol(), 1 | 2));
    /// # }
    /// ```
    pub fn protocol(&self) -> u8 {
        self.inner.protocol
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.layout.prefix
    }

    /// The Redis key holding the entry whose key text is `text` (`PREFIX:{text}`), e.g. to
    /// inspect it with `redis-cli` or to track it.
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder().prefix("app").build().unwrap();
    /// assert_eq!(b.entry_key("f(1)"), "app:{f(1)}");
    /// ```
    pub fn entry_key(&self, text: &str) -> String {
        self.inner.layout.item(text)
    }

    /// Whether the backend runs on a Redis Cluster ([`RedisBackendBuilder::cluster_urls`]).
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder()
    ///     .cluster_urls(["redis://127.0.0.1:7000"])
    ///     .build()
    ///     .unwrap();
    /// assert!(b.is_cluster());
    /// ```
    pub fn is_cluster(&self) -> bool {
        self.inner.client.is_cluster()
    }

    /// The current connection (`None` while reconnecting).
    pub(crate) fn connection(&self) -> Option<crate::client::Connection> {
        self.inner.client.connection()
    }

    /// The key layout (names of entry and version keys).
    pub(crate) fn layout(&self) -> &crate::keys::Layout {
        &self.inner.layout
    }

    /// Protocol 2: the names whose versions a lookup of `key` declaring `declared` reads with
    /// the entry.
    pub(crate) fn lookup_names(&self, key: &Key, declared: &[String]) -> Vec<String> {
        self.inner.v2_names(key.text(), declared.to_vec())
    }

    /// Protocol 2: a lookup answering what a hit's entry lists (names and version tokens),
    /// without handing them to an enclosing fill.
    pub(crate) async fn lookup_listed(
        &self,
        key: &Key,
        declared: &[String],
    ) -> Result<crate::versioned::Answer, CacheError> {
        let fut = self
            .inner
            .clone()
            .v2_get(key.text_arc().clone(), declared.to_vec());
        if in_tokio() {
            fut.await
        } else {
            on_runtime(fut).await
        }
    }

    /// Protocol 2: [`Self::lookup_listed`] of several entries, each declaring `declared`
    /// (concurrent lookups).
    pub(crate) async fn lookup_listed_many(
        &self,
        keys: &[Key],
        declared: &[String],
    ) -> Result<Vec<crate::versioned::Answer>, CacheError> {
        let texts = keys.iter().map(|k| k.text_arc().clone()).collect();
        on_runtime(self.inner.clone().get_many_any(texts, declared.to_vec())).await
    }

    /// [`Self::lookup_listed_many`], blocking.
    pub(crate) fn lookup_listed_many_blocking(
        &self,
        keys: &[Key],
        declared: &[String],
    ) -> Result<Vec<crate::versioned::Answer>, CacheError> {
        let texts = keys.iter().map(|k| k.text_arc().clone()).collect();
        self.block(
            "get_many",
            self.inner.clone().get_many_any(texts, declared.to_vec()),
        )
    }

    /// [`Self::lookup_listed`], blocking.
    pub(crate) fn lookup_listed_blocking(
        &self,
        key: &Key,
        declared: &[String],
    ) -> Result<crate::versioned::Answer, CacheError> {
        let fut = self
            .inner
            .clone()
            .v2_get(key.text_arc().clone(), declared.to_vec());
        self.block("get", fut)
    }

    /// The key text of an entry key (`PREFIX:{text}` → `text`); `None` for other keys.
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder().prefix("app").build().unwrap();
    /// assert_eq!(b.entry_text("app:{f(1)}"), Some("f(1)"));
    /// assert_eq!(b.entry_text("app:dep:{x}"), None);
    /// ```
    pub fn entry_text<'k>(&self, key: &'k str) -> Option<&'k str> {
        self.inner.layout.entry_text(key)
    }

    /// The redis-rs client (same URL, credentials and db), for extra connections such as
    /// pub/sub. On a cluster, the first seed node's: a classic `PUBLISH` on any node reaches
    /// the subscribers of every node.
    pub fn client(&self) -> &redis::Client {
        self.inner.client.redis()
    }

    /// The URL with its password redacted.
    pub fn redacted_url(&self) -> &str {
        self.inner.client.redacted_url()
    }

    /// The operation timeout.
    pub fn op_timeout(&self) -> Duration {
        self.inner.client.op_timeout()
    }

    /// A handle on the crate's background executor (one thread per process, see the crate's
    /// README), which drives the backend's connection and background tasks. Tasks
    /// spawned on it must use the async methods: a `*_blocking` method called there fails
    /// instead of deadlocking.
    pub fn runtime_handle(&self) -> tokio::runtime::Handle {
        self.inner.client.handle().clone()
    }

    /// All counters, including the Redis-specific ones.
    pub fn redis_stats(&self) -> RedisStats {
        self.inner.stats()
    }

    /// Whether the garbage collector receives keyspace notifications now.
    pub fn gc_notifications_active(&self) -> bool {
        self.inner.gc.subscribed()
    }

    /// Runs one full dependency sweep now (every batch, from the start of the keyspace) and
    /// returns the number of references removed.
    ///
    /// ```no_run
    /// # async fn demo(backend: cache_redis::RedisBackend) {
    /// let repaired = backend.sweep_now().await.unwrap();
    /// println!("{repaired} stale dependency references removed");
    /// # }
    /// ```
    pub async fn sweep_now(&self) -> Result<u64, RedisCacheError> {
        let gc = self.inner.gc.clone();
        crate::client::exec::run(async move { crate::gc::full_sweep(&gc, 500).await })
            .await
            .unwrap_or_else(|| Err(RedisCacheError::Runtime("runtime stopped".into())))
    }

    /// Runs `fut` on the background executor and waits for it from a sync caller.
    fn block<T: Send + 'static>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<T, CacheError>> + Send + 'static,
    ) -> Result<T, CacheError> {
        // the future carries its own op timeout; the margin covers scheduling
        let limit = self.inner.client.op_timeout() * 2 + Duration::from_millis(100);
        crate::client::exec::block(fut, limit).unwrap_or_else(|| {
            self.inner.counters.errors.incr();
            Err(RedisCacheError::Timeout {
                op,
                timeout: self.inner.client.op_timeout(),
            }
            .into())
        })
    }

    /// The encoded payloads of `fills`, with what the set script needs of each.
    fn encode_fills(&self, fills: &[Fill<'_>]) -> Result<Vec<EncodedFill>, CacheError> {
        fills
            .iter()
            .map(|f| {
                Ok((
                    f.key.text_arc().clone(),
                    self.encode(&f.value)?,
                    f.options.clone(),
                    f.lease,
                ))
            })
            .collect()
    }

    fn encode(&self, value: &SharedValue) -> Result<Vec<u8>, CacheError> {
        value
            .encode()
            .inspect_err(|_| self.inner.counters.errors.incr())
    }
}

/// A lookup's answer for the runtime; the dependencies of a hit join the enclosing fill's (a
/// nested cached call), in the caller's context.
fn hand_up(answer: crate::versioned::Answer) -> Lookup {
    if !answer.deps.is_empty() && cache_core::context::is_collecting() {
        for (d, _) in answer.deps {
            cache_core::context::add_dependency(d);
        }
    }
    answer.lookup
}

impl Backend for RedisBackend {
    fn name(&self) -> &str {
        "redis"
    }

    fn write_queue(&self) -> Option<Arc<dyn cache_core::write_behind::WriteQueue>> {
        Some(Arc::new(self.inner.write_queue.clone()))
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        if self.inner.protocol == 2 {
            return self.get_declared(key, &[]);
        }
        let fut = self.inner.clone().get(key.text_arc().clone());
        if in_tokio() {
            // the hit path: no extra async frame
            Box::pin(fut)
        } else {
            Box::pin(on_runtime(fut))
        }
    }

    fn get_blocking(&self, key: &Key) -> Result<Lookup, CacheError> {
        if self.inner.protocol == 2 {
            return self.get_declared_blocking(key, &[]);
        }
        let inner = self.inner.clone();
        self.block("get", inner.get(key.text_arc().clone()))
    }

    fn get_declared<'a>(
        &'a self,
        key: &'a Key,
        dependencies: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        if self.inner.protocol == 1 {
            return self.get(key);
        }
        Box::pin(async move { Ok(hand_up(self.lookup_listed(key, dependencies).await?)) })
    }

    fn get_declared_blocking(
        &self,
        key: &Key,
        dependencies: &[String],
    ) -> Result<Lookup, CacheError> {
        if self.inner.protocol == 1 {
            return self.get_blocking(key);
        }
        self.lookup_listed_blocking(key, dependencies).map(hand_up)
    }

    fn set<'a>(
        &'a self,
        key: &'a Key,
        value: SharedValue,
        options: &'a EntryOptions,
        lease: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>> {
        Box::pin(async move {
            let payload = self.encode(&value)?;
            drop(value);
            let fut =
                self.inner
                    .clone()
                    .set(key.text_arc().clone(), payload, options.clone(), lease);
            on_runtime(fut).await
        })
    }

    fn set_blocking(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        let payload = self.encode(&value)?;
        drop(value);
        let fut = self
            .inner
            .clone()
            .set(key.text_arc().clone(), payload, options.clone(), lease);
        self.block("set", fut)
    }

    fn get_many<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<Vec<Lookup>, CacheError>> {
        Box::pin(async move {
            let answers = self.lookup_listed_many(keys, &[]).await?;
            Ok(answers.into_iter().map(hand_up).collect())
        })
    }

    fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Lookup>, CacheError> {
        let answers = self.lookup_listed_many_blocking(keys, &[])?;
        Ok(answers.into_iter().map(hand_up).collect())
    }

    fn set_many<'a>(
        &'a self,
        fills: &'a [Fill<'a>],
    ) -> BoxFuture<'a, Result<Vec<SetOutcome>, CacheError>> {
        Box::pin(async move {
            let fut = self.inner.clone().set_many(self.encode_fills(fills)?);
            on_runtime(fut).await
        })
    }

    fn set_many_blocking(&self, fills: &[Fill<'_>]) -> Result<Vec<SetOutcome>, CacheError> {
        let fut = self.inner.clone().set_many(self.encode_fills(fills)?);
        self.block("set_many", fut)
    }

    fn abandon(&self, key: &Key, lease: Lease) {
        self.inner.leases.forget(lease);
        self.inner.abandon(key.text());
    }

    fn claim_refresh<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, bool> {
        let fut = self.inner.clone().claim_refresh(key.text_arc().clone());
        Box::pin(async move {
            on_runtime(async move { Ok(fut.await) })
                .await
                .unwrap_or(true)
        })
    }

    fn claim_refresh_blocking(&self, key: &Key) -> bool {
        let fut = self.inner.clone().claim_refresh(key.text_arc().clone());
        self.block("claim", async move { Ok(fut.await) })
            .unwrap_or(true)
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<(), CacheError>> {
        let fut = self
            .inner
            .clone()
            .invalidate(InvalidationKind::Keys, vec![key.text().to_string()]);
        Box::pin(on_runtime(fut))
    }

    fn remove_blocking(&self, key: &Key) -> Result<(), CacheError> {
        let fut = self
            .inner
            .clone()
            .invalidate(InvalidationKind::Keys, vec![key.text().to_string()]);
        self.block("remove", fut)
    }

    fn invalidate<'a>(&'a self, dependency: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        let fut = self
            .inner
            .clone()
            .invalidate(InvalidationKind::Dependencies, vec![dependency.to_string()]);
        Box::pin(on_runtime(fut))
    }

    fn invalidate_blocking(&self, dependency: &str) -> Result<(), CacheError> {
        let fut = self
            .inner
            .clone()
            .invalidate(InvalidationKind::Dependencies, vec![dependency.to_string()]);
        self.block("invalidate", fut)
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        let fut = self.inner.clone().clear();
        Box::pin(async move {
            crate::client::exec::run(fut)
                .await
                .unwrap_or_else(|| Err(CacheError::backend("redis", "runtime stopped")))
        })
    }

    fn clear_blocking(&self) -> Result<(), CacheError> {
        let fut = self.inner.clone().clear();
        let limit = self.inner.client.op_timeout() * 100 + Duration::from_secs(1);
        crate::client::exec::block(fut, limit)
            .unwrap_or_else(|| Err(CacheError::backend("redis", "clear timed out")))
    }

    fn stats(&self) -> BackendStats {
        self.inner.counters.backend()
    }
}
