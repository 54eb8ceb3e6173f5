//! The layered backend: L1 = a local store in process, L2 = Redis.
//!
//! * **Reads**: L1 first ([`Backend::lookup_local`] is the store's own lookup: a memory hit);
//!   on an L1 miss, `PTTL` of the entry key on the node's tracking connection, then the Redis
//!   backend's read; a hit fills L1 with the Redis key as the entry's reference and a TTL no
//!   longer than the entry's remaining TTL in Redis (so an L1 entry never outlives its L2
//!   entry), unless an invalidation arrived meanwhile (the L1 lease taken before the reads is
//!   then stale) or the coherence channel is down.
//!   On storage protocol 2 an L1 copy lists the names its entry depends on (its L1
//!   references); in default tracking mode their version keys are read on the tracking
//!   connection too (the call's declared names before the entry, the others after it,
//!   checked equal to the tokens the entry lists), so Redis pushes their invalidation. Inside
//!   a fill, a nested call reads L2, not L1: the enclosing entry must list what the nested one
//!   depends on, which the L2 read hands up.
//! * **Writes** go to Redis first, then L1. Removals, invalidations and clears go to Redis,
//!   then L1, then (pub/sub mode) to the other nodes' L1.
//! * **Coherence**, chosen at build time: [`Coherence::PubSub`] (the other nodes apply this
//!   node's invalidations, see [`crate::sync`]) or [`Coherence::Tracking`] (Redis pushes
//!   invalidations of the keys, see [`crate::tracking`]).
//!
//! An entry filled from Redis is held in L1 as its encoded bytes until the runtime decodes it
//! and offers the typed value back ([`Backend::offer_decoded`]): L1 then holds it typed (unless
//! the entry changed meanwhile), and the next hits are plain memory hits. An entry written by
//! this node is held typed. With a [`MemoryBackend`] L1, `#[cached]` fns serve L1 hits directly
//! ([`Backend::memory_hits`]).
//!
//! ```no_run
//! use cache_redis::{Coherence, LayeredBackend, RedisBackend, TrackingMode};
//! let l2 = RedisBackend::builder().url("redis://127.0.0.1:6380/").prefix("app").connect_blocking().unwrap();
//! let backend = LayeredBackend::builder(l2)
//!     .coherence(Coherence::Tracking(TrackingMode::Default))
//!     .build()
//!     .unwrap();
//! cache_core::registry::install(std::sync::Arc::new(backend));
//! ```

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use cache_core::backend::BoxFuture;
use cache_core::value::{CacheValue, Hit, SharedValue};
use cache_core::{
    Backend, BackendStats, CacheError, EntryOptions, Fill, Key, Lease, LocalKey, LocalLookup,
    Lookup, MemoryBackend, SetOutcome,
};

use crate::local_store::{default_store, LocalStore};
use crate::sync::{SyncOp, SyncOptions, SyncTarget, Synchronizer};
use crate::tracking::{Tracker, TrackingMode};
use crate::RedisBackend;

/// The L1 entries of a default layered backend.
pub const DEFAULT_L1_ENTRIES: usize = 10_000;

/// How a layered backend keeps its L1 coherent across nodes.
#[derive(Debug, Clone)]
pub enum Coherence {
    /// Invalidation messages on a Redis pub/sub channel.
    PubSub(SyncOptions),
    /// RESP3 client tracking.
    Tracking(TrackingMode),
}

/// Bytes read from Redis, held in L1 until decoded.
struct Encoded(Vec<u8>);

impl CacheValue for Encoded {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn encode(&self) -> Result<Vec<u8>, CacheError> {
        Ok(self.0.clone())
    }
    fn type_name(&self) -> &'static str {
        "encoded bytes"
    }
    fn weight(&self) -> usize {
        self.0.len()
    }
    fn encoded_bytes(&self) -> Option<&[u8]> {
        Some(&self.0)
    }
}

/// The L1 as a pub/sub target.
struct StoreTarget<S>(Arc<S>);

impl<S: LocalStore> SyncTarget for StoreTarget<S> {
    fn remove_key(&self, key_text: &str) {
        self.0.invalidate_keys(&[key_text]);
    }
    fn invalidate_dependency(&self, dependency: &str) {
        self.0.invalidate_references(Some(&[dependency]));
    }
    fn flush(&self) {
        self.0.clear();
    }
}

/// L1 (a [`LocalStore`], by default a [`MemoryBackend`]) over L2 (a [`RedisBackend`]); see the
/// [module docs](self).
pub struct LayeredBackend<S: LocalStore = MemoryBackend> {
    l1: Arc<S>,
    l2: RedisBackend,
    tracker: Tracker,
    sync: Option<Synchronizer>,
    max_l1_ttl: Option<Duration>,
    name: String,
}

impl<S: LocalStore> std::fmt::Debug for LayeredBackend<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayeredBackend")
            .field("name", &self.name)
            .field("tracker", &self.tracker)
            .field("sync", &self.sync)
            .finish()
    }
}

/// Builds a [`LayeredBackend`]; made by [`LayeredBackend::builder`].
#[must_use]
pub struct LayeredBackendBuilder<S> {
    l2: RedisBackend,
    l1: S,
    coherence: Coherence,
    max_l1_ttl: Option<Duration>,
    ping_interval: Duration,
    sweep_interval: Duration,
}

impl<S: LocalStore> LayeredBackendBuilder<S> {
    /// Uses `store` as the L1 (default: [`default_store`] of [`DEFAULT_L1_ENTRIES`]).
    pub fn local_store<T: LocalStore>(self, store: T) -> LayeredBackendBuilder<T> {
        LayeredBackendBuilder {
            l2: self.l2,
            l1: store,
            coherence: self.coherence,
            max_l1_ttl: self.max_l1_ttl,
            ping_interval: self.ping_interval,
            sweep_interval: self.sweep_interval,
        }
    }

    /// How often expired L1 entries are removed in the background (default 60 s; they are never
    /// served either way, this returns their memory).
    ///
    /// ```no_run
    /// # let l2 = cache_redis::RedisBackend::builder().build().unwrap();
    /// let b = cache_redis::LayeredBackend::builder(l2)
    ///     .sweep_interval(std::time::Duration::from_secs(10))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }

    /// How L1 is kept coherent (default: tracking in default mode).
    pub fn coherence(mut self, coherence: Coherence) -> Self {
        self.coherence = coherence;
        self
    }

    /// Caps the TTL of every L1 entry (default: none beyond the L2 TTL).
    pub fn max_l1_ttl(mut self, ttl: Duration) -> Self {
        self.max_l1_ttl = Some(ttl);
        self
    }

    /// How often the tracking connection is pinged; a failed ping flushes L1 (default 1 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Builds the backend and starts its connections in the background. `Err` names an
    /// invalid option.
    pub fn build(self) -> Result<LayeredBackend<S>, CacheError> {
        if self.ping_interval.is_zero() {
            return Err(CacheError::config("ping_interval", "must be positive"));
        }
        if self.max_l1_ttl.is_some_and(|t| t.is_zero()) {
            return Err(CacheError::config("max_l1_ttl", "must be positive"));
        }
        if self.sweep_interval.is_zero() {
            return Err(CacheError::config("sweep_interval", "must be positive"));
        }
        if self.l2.is_cluster() && matches!(self.coherence, Coherence::Tracking(_)) {
            return Err(CacheError::config(
                "coherence",
                "client tracking on a Redis Cluster needs a tracking connection per master, which is not supported: use Coherence::PubSub",
            ));
        }
        self.l1.init()?;
        let l1 = Arc::new(self.l1);
        spawn_sweeper(Arc::downgrade(&l1), self.sweep_interval)?;
        let mode = match &self.coherence {
            Coherence::PubSub(_) => TrackingMode::Off,
            Coherence::Tracking(mode) => *mode,
        };
        let tracker = Tracker::start(
            self.l2.client(),
            mode,
            self.l2.layout(),
            self.l2.protocol(),
            self.ping_interval,
            self.l2.op_timeout().max(Duration::from_millis(100)),
            l1.clone() as Arc<dyn LocalStore>,
        )?;
        let sync = match self.coherence {
            Coherence::PubSub(options) => Some(Synchronizer::start(
                self.l2.client().clone(),
                options,
                Arc::new(StoreTarget(l1.clone())),
            )?),
            Coherence::Tracking(_) => None,
        };
        let name = format!("{}+{}", l1.name(), self.l2.name());
        Ok(LayeredBackend {
            l1,
            l2: self.l2,
            tracker,
            sync,
            max_l1_ttl: self.max_l1_ttl,
            name,
        })
    }
}

impl LayeredBackend<MemoryBackend> {
    /// A builder over `l2`.
    pub fn builder(l2: RedisBackend) -> LayeredBackendBuilder<MemoryBackend> {
        LayeredBackendBuilder {
            l2,
            l1: default_store(DEFAULT_L1_ENTRIES),
            coherence: Coherence::Tracking(TrackingMode::Default),
            max_l1_ttl: None,
            ping_interval: Duration::from_secs(1),
            sweep_interval: cache_core::memory::DEFAULT_SWEEP_INTERVAL,
        }
    }
}

/// What an L1 fill needs, taken before the L2 read.
struct FillPlan {
    lease: Lease,
    redis_key: String,
    /// Where the pre-read goes: the tracking connection; on a cluster (pub/sub coherence, no
    /// tracking) the backend's own connection, which routes by slot.
    con: Option<crate::client::Connection>,
}

/// Protocol 2: what the L1 copy of an L2 hit needs once the entry is read.
struct ListedFill {
    /// The L1 ttl bound (the entry's `PTTL`).
    ms: i64,
    /// The names the entry lists (its L1 references).
    deps: Vec<String>,
    /// Version keys of listed names not read before the L2 read, to read on the tracking
    /// connection (default mode), and the tokens the entry lists for them.
    confirm: Vec<String>,
    expect: Vec<u64>,
}

/// Protocol 2: an L1 miss of a batch lookup.
struct BatchMiss {
    index: usize,
    plan: FillPlan,
    /// The names whose versions its tracking pre-read reads.
    read: Vec<String>,
}

/// Protocol 2: the L1 copy of a batch's L2 hit, to put once confirmed.
struct PendingCopy {
    key: Key,
    plan: FillPlan,
    fill: ListedFill,
    value: SharedValue,
}

/// Whether the tokens read on the tracking connection are the ones the entry lists.
fn confirmed(fill: &ListedFill, read: Option<Vec<Option<u64>>>) -> bool {
    fill.confirm.is_empty()
        || read.is_some_and(|r| {
            r.len() == fill.expect.len() && r.iter().zip(&fill.expect).all(|(r, e)| *r == Some(*e))
        })
}

impl<S: LocalStore> LayeredBackend<S> {
    /// The L1 store.
    pub fn local_store(&self) -> &S {
        &self.l1
    }

    /// The L2 backend.
    pub fn redis(&self) -> &RedisBackend {
        &self.l2
    }

    /// The tracking connection (its state and counters).
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The pub/sub engine, in [`Coherence::PubSub`] mode.
    pub fn synchronizer(&self) -> Option<&Synchronizer> {
        self.sync.as_ref()
    }

    /// Whether the coherence channel is up (L1 is filled only then).
    pub fn is_coherent(&self) -> bool {
        self.tracker.is_connected() && self.sync.as_ref().is_none_or_subscribed()
    }

    /// Waits (blocking, at most `timeout`) until the coherence channel is up.
    pub fn wait_coherent(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while !self.is_coherent() {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    fn l1_probe(&self, key: &Key) -> Option<Hit> {
        let mut found = None;
        match self
            .l1
            .lookup(&key.local(), &mut |v| found = Some(Hit::Local(v.clone())))
        {
            LocalLookup::Hit => found,
            _ => None,
        }
    }

    fn plan(&self, key: &Key) -> FillPlan {
        FillPlan {
            lease: self.l1.lease(),
            redis_key: self.l2.entry_key(key.text()),
            con: if self.l2.is_cluster() {
                self.l2.connection()
            } else {
                self.tracker.connection()
            },
        }
    }

    /// The L1 hits of a batch lookup, and for each L1 miss its index and fill plan.
    fn l1_many(&self, keys: &[Key]) -> (Vec<Option<Lookup>>, Vec<(usize, FillPlan)>) {
        let found: Vec<Option<Lookup>> = keys
            .iter()
            .map(|k| self.l1_probe(k).map(Lookup::Hit))
            .collect();
        let missing = (0..keys.len())
            .filter(|&i| found[i].is_none())
            .map(|i| (i, self.plan(&keys[i])))
            .collect();
        (found, missing)
    }

    /// The tracking pre-reads of the L1 misses, concurrent (one multiplexed connection).
    fn pre_reads(
        missing: &[(usize, FillPlan)],
    ) -> impl std::future::Future<Output = Vec<Option<(i64, Vec<String>)>>> + Send + 'static {
        futures_util::future::join_all(
            missing
                .iter()
                .map(|(_, p)| Tracker::pre_read(p.con.clone(), p.redis_key.clone())),
        )
    }

    /// A batch lookup's answers: the L1 hits, and the L2 answers of the L1 misses (hits are
    /// kept in L1 as a single lookup's would be).
    fn answer_many(
        &self,
        keys: &[Key],
        mut found: Vec<Option<Lookup>>,
        missing: Vec<(usize, FillPlan)>,
        pres: Vec<Option<(i64, Vec<String>)>>,
        l2: Vec<Lookup>,
    ) -> Vec<Lookup> {
        for (((i, plan), pre), lookup) in missing.into_iter().zip(pres).zip(l2) {
            found[i] = Some(match lookup {
                Lookup::Hit(hit) => Lookup::Hit(self.fill_after_read(&keys[i], &plan, pre, hit)),
                miss => miss,
            });
        }
        found
            .into_iter()
            .map(|l| l.expect("every key answered"))
            .collect()
    }

    fn l2_keys(keys: &[Key], missing: &[(usize, FillPlan)]) -> Vec<Key> {
        missing.iter().map(|(i, _)| keys[*i].clone()).collect()
    }

    /// The L1 options of an entry: ttl capped by the L2 remaining ttl (`pttl` ms; -1: none)
    /// and by `max_l1_ttl`; no sliding (L1 reads do not refresh L2).
    fn l1_options(&self, base: &EntryOptions, pttl: Option<i64>) -> EntryOptions {
        let l2_ttl = match pttl {
            Some(ms) if ms >= 0 => Some(Duration::from_millis(ms as u64)),
            _ => None,
        };
        let ttl = [base.ttl, base.sliding, l2_ttl, self.max_l1_ttl]
            .into_iter()
            .flatten()
            .min();
        EntryOptions {
            ttl,
            sliding: None,
            dependencies: base.dependencies.clone(),
            // an L1 copy is never served stale: L2 answers stale reads
            stale: None,
        }
    }

    /// Fills L1 after an L2 hit, and answers the hit: bytes become a local [`Encoded`] value
    /// (the one L1 holds, so the runtime's decode can replace it, see
    /// [`Backend::offer_decoded`]).
    fn fill_after_read(
        &self,
        key: &Key,
        plan: &FillPlan,
        pre: Option<(i64, Vec<String>)>,
        hit: Hit,
    ) -> Hit {
        let value = local_value(hit);
        // -2: the key did not exist before the read; None: tracking connection down.
        let Some((ms, dependencies)) = pre.filter(|(ms, _)| *ms != -2 && *ms != 0) else {
            return Hit::Local(value);
        };
        if !self.is_coherent() {
            return Hit::Local(value);
        }
        let base = EntryOptions {
            dependencies,
            ..EntryOptions::new()
        };
        let options = self.l1_options(&base, Some(ms));
        self.l1
            .put_with_reference(key, value.clone(), &options, &plan.redis_key, plan.lease);
        Hit::Local(value)
    }

    /// Protocol 2: the version keys of `names` to read on the tracking connection before the L2
    /// read, which makes Redis track them for this node. Only in default tracking mode:
    /// broadcast reports every version key's change, and pub/sub invalidates by name.
    fn tracked_versions(&self, names: &[String]) -> Vec<String> {
        if self.tracker.mode() != TrackingMode::Default {
            return Vec::new();
        }
        let layout = self.l2.layout();
        names.iter().map(|n| layout.version(n)).collect()
    }

    /// Protocol 2: whether an L2 hit may be copied into L1, and what the copy needs. `pre` is
    /// the tracking pre-read (the entry's `PTTL`, the tokens of `read`); `listed` what the
    /// entry lists. In default tracking mode each listed name must have been tracked since
    /// before the entry was read with the token the entry lists: read before the L2 read (and
    /// equal), or read after it and confirmed equal ([`confirmed`]; tokens are never reused,
    /// so an equal token means no invalidation in between, and later ones are pushed).
    fn listed_fill(
        &self,
        pre: Option<(i64, Vec<Option<u64>>)>,
        read: &[String],
        listed: Vec<(String, u64)>,
    ) -> Option<ListedFill> {
        // -2: the key did not exist before the read; None: tracking connection down
        let (ms, tokens) = pre.filter(|(ms, _)| *ms != -2 && *ms != 0)?;
        let mut confirm = Vec::new();
        let mut expect = Vec::new();
        if self.tracker.mode() == TrackingMode::Default {
            for (n, t) in &listed {
                match read.iter().position(|r| r == n) {
                    Some(i) if tokens.get(i) == Some(&Some(*t)) => {}
                    Some(_) => return None,
                    None => {
                        confirm.push(self.l2.layout().version(n));
                        expect.push(*t);
                    }
                }
            }
        }
        Some(ListedFill {
            ms,
            deps: listed.into_iter().map(|(n, _)| n).collect(),
            confirm,
            expect,
        })
    }

    /// Protocol 2: puts the L1 copy of an L2 hit.
    fn put_listed(&self, key: &Key, plan: &FillPlan, fill: ListedFill, value: SharedValue) {
        if !self.is_coherent() {
            return;
        }
        let base = EntryOptions {
            dependencies: fill.deps,
            ..EntryOptions::new()
        };
        let options = self.l1_options(&base, Some(fill.ms));
        self.l1
            .put_with_reference(key, value, &options, &plan.redis_key, plan.lease);
    }

    /// Protocol 2's lookup: L1, else L2 (entry and versions), copied into L1 when coherent
    /// ([`Self::get_many_listed`] of one key). Inside a fill (a nested cached call) it reads L2
    /// only: the enclosing entry must list what this one depends on, which the L2 read hands up.
    async fn get_listed(&self, key: &Key, declared: &[String]) -> Result<Lookup, CacheError> {
        if cache_core::context::is_collecting() {
            return self.l2.get_declared(key, declared).await;
        }
        only(
            self.get_many_listed(std::slice::from_ref(key), declared)
                .await?,
        )
    }

    /// [`Self::get_listed`], blocking.
    fn get_listed_blocking(&self, key: &Key, declared: &[String]) -> Result<Lookup, CacheError> {
        if cache_core::context::is_collecting() {
            return self.l2.get_declared_blocking(key, declared);
        }
        only(self.get_many_listed_blocking(std::slice::from_ref(key), declared)?)
    }

    /// Protocol 2's batch lookup, first step: the L1 hits, and for each L1 miss its index, fill
    /// plan and the names whose versions its tracking pre-read reads (each key's lookup
    /// declaring `declared`).
    fn batch_misses(
        &self,
        keys: &[Key],
        declared: &[String],
    ) -> (Vec<Option<Lookup>>, Vec<BatchMiss>) {
        let found: Vec<Option<Lookup>> = keys
            .iter()
            .map(|k| self.l1_probe(k).map(Lookup::Hit))
            .collect();
        let misses = (0..keys.len())
            .filter(|&i| found[i].is_none())
            .map(|i| BatchMiss {
                index: i,
                plan: self.plan(&keys[i]),
                read: self.l2.lookup_names(&keys[i], declared),
            })
            .collect();
        (found, misses)
    }

    /// The tracking pre-reads of a batch's L1 misses, concurrent (one multiplexed connection).
    fn batch_pre_reads(
        &self,
        misses: &[BatchMiss],
    ) -> impl std::future::Future<Output = Vec<Option<(i64, Vec<Option<u64>>)>>> + Send + 'static
    {
        futures_util::future::join_all(misses.iter().map(|m| {
            Tracker::pre_read_versions(
                m.plan.con.clone(),
                m.plan.redis_key.clone(),
                self.tracked_versions(&m.read),
            )
        }))
    }

    /// A batch's answers (L1 hits, then L2's), and the L1 copies of L2 hits still to put.
    fn batch_answers(
        &self,
        keys: &[Key],
        mut found: Vec<Option<Lookup>>,
        misses: Vec<BatchMiss>,
        pres: Vec<Option<(i64, Vec<Option<u64>>)>>,
        answers: Vec<crate::versioned::Answer>,
    ) -> Result<(Vec<Lookup>, Vec<PendingCopy>), CacheError> {
        let mut pending = Vec::new();
        for ((m, pre), answer) in misses.into_iter().zip(pres).zip(answers) {
            found[m.index] = Some(match answer.lookup {
                Lookup::Hit(hit) => {
                    let value = local_value(hit);
                    if let Some(fill) = self.listed_fill(pre, &m.read, answer.deps) {
                        pending.push(PendingCopy {
                            key: keys[m.index].clone(),
                            plan: m.plan,
                            fill,
                            value: value.clone(),
                        });
                    }
                    Lookup::Hit(Hit::Local(value))
                }
                miss => miss,
            });
        }
        Ok((answered(found)?, pending))
    }

    /// The confirming reads of the copies that need one, concurrent.
    fn confirm_reads(
        pending: &[PendingCopy],
    ) -> impl std::future::Future<Output = Vec<Option<Vec<Option<u64>>>>> + Send + 'static {
        futures_util::future::join_all(pending.iter().map(|p| {
            let (con, confirm) = (p.plan.con.clone(), p.fill.confirm.clone());
            async move {
                if confirm.is_empty() {
                    None
                } else {
                    Tracker::read_versions(con, confirm).await
                }
            }
        }))
    }

    /// Puts the confirmed copies into L1.
    fn put_copies(&self, pending: Vec<PendingCopy>, reads: Vec<Option<Vec<Option<u64>>>>) {
        for (p, read) in pending.into_iter().zip(reads) {
            if confirmed(&p.fill, read) {
                self.put_listed(&p.key, &p.plan, p.fill, p.value);
            }
        }
    }

    /// Protocol 2's batch lookup (each key's lookup declaring `declared`): L1 hits; the L1
    /// misses' tracking pre-reads (before the L2 read: in default tracking mode Redis then
    /// tracks the entry and its declared versions from before it is read), their L2 lookups,
    /// and L1 copies of the hits whose listed versions are confirmed ([`Self::listed_fill`]).
    /// Inside a fill, L2 only.
    async fn get_many_listed(
        &self,
        keys: &[Key],
        declared: &[String],
    ) -> Result<Vec<Lookup>, CacheError> {
        if cache_core::context::is_collecting() {
            return self.l2.get_many(keys).await;
        }
        let (found, misses) = self.batch_misses(keys, declared);
        if misses.is_empty() {
            return answered(found);
        }
        let pres = self.batch_pre_reads(&misses).await;
        let l2_keys: Vec<Key> = misses.iter().map(|m| keys[m.index].clone()).collect();
        let answers = self.l2.lookup_listed_many(&l2_keys, declared).await?;
        let (out, pending) = self.batch_answers(keys, found, misses, pres, answers)?;
        let reads = Self::confirm_reads(&pending).await;
        self.put_copies(pending, reads);
        Ok(out)
    }

    /// [`Self::get_many_listed`], blocking.
    fn get_many_listed_blocking(
        &self,
        keys: &[Key],
        declared: &[String],
    ) -> Result<Vec<Lookup>, CacheError> {
        if cache_core::context::is_collecting() {
            return self.l2.get_many_blocking(keys);
        }
        let (found, misses) = self.batch_misses(keys, declared);
        if misses.is_empty() {
            return answered(found);
        }
        let timeout = self.l2.op_timeout();
        let pres = crate::client::exec::block(self.batch_pre_reads(&misses), timeout)
            .unwrap_or_else(|| misses.iter().map(|_| None).collect());
        let l2_keys: Vec<Key> = misses.iter().map(|m| keys[m.index].clone()).collect();
        let answers = self.l2.lookup_listed_many_blocking(&l2_keys, declared)?;
        let (out, pending) = self.batch_answers(keys, found, misses, pres, answers)?;
        let reads = crate::client::exec::block(Self::confirm_reads(&pending), timeout)
            .unwrap_or_else(|| pending.iter().map(|_| None).collect());
        self.put_copies(pending, reads);
        Ok(out)
    }

    /// After a stored write: in pub/sub mode L1 keeps the value and the other nodes drop
    /// theirs; with tracking, Redis reports the node's own write back, so L1 only drops its
    /// copy and the next read fills it.
    fn after_writes(&self, fills: &[Fill<'_>], outcomes: &[SetOutcome], l1_lease: Lease) {
        for (f, o) in fills.iter().zip(outcomes) {
            if *o == SetOutcome::Stored {
                self.after_write(f.key, f.value.clone(), f.options, l1_lease);
            }
        }
    }

    fn after_write(&self, key: &Key, value: SharedValue, options: &EntryOptions, lease: Lease) {
        if self.sync.is_none() {
            self.l1.invalidate_keys(&[key.text()]);
            return;
        }
        if self.is_coherent() {
            let options = self.l1_options(options, None);
            let redis_key = self.l2.entry_key(key.text());
            self.l1
                .put_with_reference(key, value, &options, &redis_key, lease);
        }
        if let Some(s) = &self.sync {
            s.publish(SyncOp::Remove(key.text().to_string()));
        }
    }
}

/// The value of a hit, as the L1 holds it (bytes read from Redis become [`Encoded`]).
fn local_value(hit: Hit) -> SharedValue {
    match hit {
        Hit::Local(v) => v,
        Hit::Bytes(b) => Arc::new(Encoded(b)),
    }
}

/// The answer of a batch of one key.
fn only(mut answers: Vec<Lookup>) -> Result<Lookup, CacheError> {
    answers
        .pop()
        .ok_or_else(|| CacheError::backend("redis-layered", "a lookup went unanswered"))
}

/// A batch's answers, every key answered.
fn answered(found: Vec<Option<Lookup>>) -> Result<Vec<Lookup>, CacheError> {
    found
        .into_iter()
        .map(|f| {
            f.ok_or_else(|| CacheError::backend("redis-layered", "a batch lookup went unanswered"))
        })
        .collect()
}

/// Sweeps the L1's expired entries every `every` on the background executor, while the L1
/// lives.
fn spawn_sweeper<S: LocalStore>(l1: std::sync::Weak<S>, every: Duration) -> Result<(), CacheError> {
    let handle = crate::client::exec::handle().ok_or_else(|| {
        CacheError::backend("redis-layered", "cannot start the background thread")
    })?;
    handle.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(l1) = l1.upgrade() else { return };
            l1.sweep_expired();
        }
    });
    Ok(())
}

trait SubscribedExt {
    fn is_none_or_subscribed(&self) -> bool;
}

impl SubscribedExt for Option<&Synchronizer> {
    fn is_none_or_subscribed(&self) -> bool {
        self.map_or(true, Synchronizer::is_subscribed)
    }
}

impl<S: LocalStore> Backend for LayeredBackend<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn write_queue(&self) -> Option<Arc<dyn cache_core::write_behind::WriteQueue>> {
        self.l2.write_queue()
    }

    /// The L1, when it is a [`MemoryBackend`]: an L1 hit is this backend's hit; an L1 miss is
    /// not (it goes on to Redis through [`Backend::get`]).
    fn memory_hits(&self) -> Option<&MemoryBackend> {
        self.l1.as_memory()
    }

    /// Keeps the decoded value in L1 in place of the bytes read from Redis, if the L1 entry
    /// still holds those bytes (an invalidation or a newer value that arrived meanwhile wins).
    fn offer_decoded(&self, key: &Key, encoded: &SharedValue, decoded: SharedValue) {
        self.l1.replace_value_if_same(key, encoded, decoded);
    }

    #[inline]
    fn lookup_local(
        &self,
        key: &LocalKey<'_>,
        on_hit: &mut dyn FnMut(&SharedValue),
    ) -> LocalLookup {
        // protocol 2, inside a fill: L2 hands up what the entry depends on (get_listed)
        if self.l2.protocol() == 2 && cache_core::context::is_collecting() {
            return LocalLookup::Remote;
        }
        match self.l1.lookup(key, on_hit) {
            LocalLookup::Hit => LocalLookup::Hit,
            _ => LocalLookup::Remote,
        }
    }

    fn get_declared<'a>(
        &'a self,
        key: &'a Key,
        dependencies: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        if self.l2.protocol() == 1 {
            return self.get(key);
        }
        Box::pin(self.get_listed(key, dependencies))
    }

    fn get_declared_blocking(
        &self,
        key: &Key,
        dependencies: &[String],
    ) -> Result<Lookup, CacheError> {
        if self.l2.protocol() == 1 {
            return self.get_blocking(key);
        }
        self.get_listed_blocking(key, dependencies)
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        if self.l2.protocol() == 2 {
            return Box::pin(self.get_listed(key, &[]));
        }
        Box::pin(async move {
            if let Some(hit) = self.l1_probe(key) {
                return Ok(Lookup::Hit(hit));
            }
            let plan = self.plan(key);
            let pre = Tracker::pre_read(plan.con.clone(), plan.redis_key.clone()).await;
            Ok(match self.l2.get(key).await? {
                Lookup::Hit(hit) => Lookup::Hit(self.fill_after_read(key, &plan, pre, hit)),
                miss => miss,
            })
        })
    }

    fn get_blocking(&self, key: &Key) -> Result<Lookup, CacheError> {
        if self.l2.protocol() == 2 {
            return self.get_listed_blocking(key, &[]);
        }
        if let Some(hit) = self.l1_probe(key) {
            return Ok(Lookup::Hit(hit));
        }
        let plan = self.plan(key);
        let pre = crate::client::exec::block(
            Tracker::pre_read(plan.con.clone(), plan.redis_key.clone()),
            self.l2.op_timeout(),
        )
        .flatten();
        Ok(match self.l2.get_blocking(key)? {
            Lookup::Hit(hit) => Lookup::Hit(self.fill_after_read(key, &plan, pre, hit)),
            miss => miss,
        })
    }

    /// L1 hits, then one `MGET` for the L1 misses (with their tracking pre-reads, concurrent).
    fn get_many<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<Vec<Lookup>, CacheError>> {
        Box::pin(async move {
            if self.l2.protocol() == 2 {
                return self.get_many_listed(keys, &[]).await;
            }
            let (found, missing) = self.l1_many(keys);
            if missing.is_empty() {
                return Ok(self.answer_many(keys, found, missing, Vec::new(), Vec::new()));
            }
            let pres = Self::pre_reads(&missing).await;
            let l2 = self.l2.get_many(&Self::l2_keys(keys, &missing)).await?;
            Ok(self.answer_many(keys, found, missing, pres, l2))
        })
    }

    fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Lookup>, CacheError> {
        if self.l2.protocol() == 2 {
            return self.get_many_listed_blocking(keys, &[]);
        }
        let (found, missing) = self.l1_many(keys);
        if missing.is_empty() {
            return Ok(self.answer_many(keys, found, missing, Vec::new(), Vec::new()));
        }
        let pres = crate::client::exec::block(Self::pre_reads(&missing), self.l2.op_timeout())
            .unwrap_or_else(|| missing.iter().map(|_| None).collect());
        let l2 = self.l2.get_many_blocking(&Self::l2_keys(keys, &missing))?;
        Ok(self.answer_many(keys, found, missing, pres, l2))
    }

    fn set_many<'a>(
        &'a self,
        fills: &'a [Fill<'a>],
    ) -> BoxFuture<'a, Result<Vec<SetOutcome>, CacheError>> {
        Box::pin(async move {
            let l1_lease = self.l1.lease();
            let outcomes = self.l2.set_many(fills).await?;
            self.after_writes(fills, &outcomes, l1_lease);
            Ok(outcomes)
        })
    }

    fn set_many_blocking(&self, fills: &[Fill<'_>]) -> Result<Vec<SetOutcome>, CacheError> {
        let l1_lease = self.l1.lease();
        let outcomes = self.l2.set_many_blocking(fills)?;
        self.after_writes(fills, &outcomes, l1_lease);
        Ok(outcomes)
    }

    fn set<'a>(
        &'a self,
        key: &'a Key,
        value: SharedValue,
        options: &'a EntryOptions,
        lease: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>> {
        Box::pin(async move {
            let l1_lease = self.l1.lease();
            let out = self.l2.set(key, value.clone(), options, lease).await?;
            if out == SetOutcome::Stored {
                self.after_write(key, value, options, l1_lease);
            }
            Ok(out)
        })
    }

    fn set_blocking(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        let l1_lease = self.l1.lease();
        let out = self.l2.set_blocking(key, value.clone(), options, lease)?;
        if out == SetOutcome::Stored {
            self.after_write(key, value, options, l1_lease);
        }
        Ok(out)
    }

    fn abandon(&self, key: &Key, lease: Lease) {
        self.l2.abandon(key, lease);
    }

    fn claim_refresh<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, bool> {
        self.l2.claim_refresh(key)
    }

    fn claim_refresh_blocking(&self, key: &Key) -> bool {
        self.l2.claim_refresh_blocking(key)
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.l2.remove(key).await;
            self.l1.invalidate_keys(&[key.text()]);
            if let Some(s) = &self.sync {
                s.publish(SyncOp::Remove(key.text().to_string()));
            }
            r
        })
    }

    fn remove_blocking(&self, key: &Key) -> Result<(), CacheError> {
        let r = self.l2.remove_blocking(key);
        self.l1.invalidate_keys(&[key.text()]);
        if let Some(s) = &self.sync {
            s.publish(SyncOp::Remove(key.text().to_string()));
        }
        r
    }

    fn invalidate<'a>(&'a self, dependency: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.l2.invalidate(dependency).await;
            self.l1.invalidate_references(Some(&[dependency]));
            if let Some(s) = &self.sync {
                s.publish(SyncOp::Invalidate(dependency.to_string()));
            }
            r
        })
    }

    fn invalidate_blocking(&self, dependency: &str) -> Result<(), CacheError> {
        let r = self.l2.invalidate_blocking(dependency);
        self.l1.invalidate_references(Some(&[dependency]));
        if let Some(s) = &self.sync {
            s.publish(SyncOp::Invalidate(dependency.to_string()));
        }
        r
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.l2.clear().await;
            self.l1.clear();
            if let Some(s) = &self.sync {
                s.publish(SyncOp::Clear);
            }
            r
        })
    }

    fn clear_blocking(&self) -> Result<(), CacheError> {
        let r = self.l2.clear_blocking();
        self.l1.clear();
        if let Some(s) = &self.sync {
            s.publish(SyncOp::Clear);
        }
        r
    }

    fn stats(&self) -> BackendStats {
        self.l1.stats()
    }
}

impl<S: LocalStore> Drop for LayeredBackend<S> {
    fn drop(&mut self) {
        self.l1.destroy();
    }
}
