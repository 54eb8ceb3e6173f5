//! Pub/sub synchronization of local caches across nodes.
//!
//! Every node keeps its own in-process cache. When a node removes an entry, invalidates a
//! dependency or clears its cache, it applies the change locally and hands it to a background
//! publisher, which publishes it on a Redis channel ([message format](SyncMessage): only keys
//! travel, with the node id and a format version). Every other node's subscriber applies it to
//! its own local cache; a node ignores its own messages.
//!
//! Rules:
//! * publishing never blocks the caller: operations go through an unbounded in-process queue to
//!   a publisher task on a background executor (`crate::client::exec`), so the blocking and async methods
//!   work inside and outside a tokio runtime;
//! * a publish that fails is retried after reconnecting; if the queue grows past
//!   [`SyncOptions::max_pending`] it collapses into one "clear" (every node flushes);
//! * the subscriber uses a RESP3 connection; when it is lost (server restart, `CLIENT KILL`,
//!   failed periodic `PING`) the node flushes its local cache at once, reconnects, resubscribes,
//!   and flushes again once the subscription is confirmed (messages published in between were
//!   lost). A fill that started before that flush is rejected by the local backend's leases.
//! * while the node is not subscribed (before the first subscription, and from the moment a
//!   loss is detected until the subscription is back) it stores nothing locally: a fill is
//!   `Rejected`, so the node serves no local entry that an invalidation it could not hear
//!   should have dropped. Calls run their body meanwhile.
//! * the hit path ([`Backend::lookup_local`]) is the local backend's, delegated directly.
//!
//! ```no_run
//! use cache_core::{Backend, MemoryBackend};
//! let client = redis::Client::open("redis://127.0.0.1:6380/").unwrap();
//! let node = cache_redis::with_redis_sync(MemoryBackend::new(), client, "app:cache-sync").unwrap();
//! node.synchronizer().wait_subscribed(std::time::Duration::from_secs(2));
//! node.invalidate_blocking("user:7").unwrap(); // applied here, published to the other nodes
//! ```

mod message;
mod tasks;

pub(crate) use tasks::resp3_client;

use crate::client::connect::{open_client, TlsNames, TlsOptions};
use crate::config::redact_url;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::backend::BoxFuture;
use cache_core::value::SharedValue;
use cache_core::{
    Backend, BackendStats, CacheError, EntryOptions, Fill, Key, Lease, LocalKey, LocalLookup,
    Lookup, MemoryBackend, SetOutcome,
};
use tokio::sync::mpsc;

pub use message::{MessageError, NodeId, SyncMessage, SyncOp, FORMAT_VERSION};

/// The channel used when none is chosen.
pub const DEFAULT_CHANNEL: &str = "cache-redis:sync";

/// Where received invalidations are applied (a local cache).
pub(crate) trait SyncTarget: Send + Sync + 'static {
    /// Removes the entry whose readable key is `key_text` (and its dependents).
    fn remove_key(&self, key_text: &str);
    /// Invalidates a dependency.
    fn invalidate_dependency(&self, dependency: &str);
    /// Removes everything (messages may have been lost).
    fn flush(&self);
}

/// A [`Backend`] as a [`SyncTarget`].
struct BackendTarget<B>(Arc<B>);

impl<B: Backend> SyncTarget for BackendTarget<B> {
    fn remove_key(&self, key_text: &str) {
        let _ = self.0.remove_blocking(&Key::from_text(key_text));
    }
    fn invalidate_dependency(&self, dependency: &str) {
        let _ = self.0.invalidate_blocking(dependency);
    }
    fn flush(&self) {
        let _ = self.0.clear_blocking();
    }
}

/// Options of pub/sub synchronization.
///
/// ```
/// use std::time::Duration;
/// let o = cache_redis::SyncOptions::new("app:sync").ping_interval(Duration::from_millis(500));
/// assert_eq!(o.channel_name(), "app:sync");
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct SyncOptions {
    channel: String,
    node: Option<NodeId>,
    ping_interval: Duration,
    timeout: Duration,
    max_pending: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions::new(DEFAULT_CHANNEL)
    }
}

impl SyncOptions {
    /// Options for `channel`, with a random node id, a 1 s ping interval, a 1 s timeout and at
    /// most 100 000 queued operations.
    ///
    /// ```
    /// assert_eq!(cache_redis::SyncOptions::new("c").channel_name(), "c");
    /// ```
    pub fn new(channel: impl Into<String>) -> Self {
        SyncOptions {
            channel: channel.into(),
            node: None,
            ping_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_pending: 100_000,
        }
    }

    /// The channel name.
    pub fn channel_name(&self) -> &str {
        &self.channel
    }

    /// Sets the channel.
    ///
    /// ```
    /// let o = cache_redis::SyncOptions::default().channel("x");
    /// assert_eq!(o.channel_name(), "x");
    /// ```
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Chooses this node's id (default: [`NodeId::random`]).
    ///
    /// ```
    /// let _ = cache_redis::SyncOptions::default().node_id(cache_redis::NodeId(1));
    /// ```
    pub fn node_id(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// How often the subscriber connection is pinged; a failed ping counts as a lost
    /// subscription (default 1 s).
    ///
    /// ```
    /// let _ = cache_redis::SyncOptions::default().ping_interval(std::time::Duration::from_millis(200));
    /// ```
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// Connection and response timeout of the sync connections (default 1 s).
    ///
    /// ```
    /// let _ = cache_redis::SyncOptions::default().timeout(std::time::Duration::from_millis(300));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many operations may wait for the publisher before they collapse into one "clear"
    /// (default 100 000).
    ///
    /// ```
    /// let _ = cache_redis::SyncOptions::default().max_pending(1000);
    /// ```
    pub fn max_pending(mut self, n: usize) -> Self {
        self.max_pending = n;
        self
    }

    fn validate(&self) -> Result<(), CacheError> {
        if self.channel.is_empty() {
            return Err(CacheError::config("channel", "must not be empty"));
        }
        if self.ping_interval.is_zero() {
            return Err(CacheError::config("ping_interval", "must be positive"));
        }
        if self.timeout.is_zero() {
            return Err(CacheError::config("timeout", "must be positive"));
        }
        if self.max_pending == 0 {
            return Err(CacheError::config("max_pending", "must be at least 1"));
        }
        Ok(())
    }
}

/// Counters of a [`Synchronizer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Operations published.
    pub published_ops: u64,
    /// Messages published (one message carries the operations queued together).
    pub published_messages: u64,
    /// Publish attempts that failed (retried).
    pub publish_errors: u64,
    /// Times the queue overflowed and collapsed into a clear.
    pub overflows: u64,
    /// Messages received from other nodes.
    pub received_messages: u64,
    /// Operations applied locally from other nodes' messages.
    pub applied_ops: u64,
    /// This node's own messages, ignored.
    pub own_messages: u64,
    /// Messages that could not be read (each flushed the local cache).
    pub unreadable_messages: u64,
    /// Confirmed subscriptions (the first one and every resubscription).
    pub subscriptions: u64,
    /// Subscriptions lost (disconnection or failed ping).
    pub subscription_losses: u64,
    /// Subscribe attempts that failed (refused, TLS handshake, authentication, timeout).
    pub subscribe_errors: u64,
    /// Fills not stored because the node was not subscribed (it could not hear invalidations).
    pub deaf_fills: u64,
    /// Local flushes made because messages may have been lost.
    pub flushes: u64,
}

#[derive(Default)]
pub(crate) struct SyncCounters {
    published_ops: AtomicU64,
    published_messages: AtomicU64,
    publish_errors: AtomicU64,
    overflows: AtomicU64,
    received_messages: AtomicU64,
    applied_ops: AtomicU64,
    own_messages: AtomicU64,
    unreadable_messages: AtomicU64,
    subscriptions: AtomicU64,
    subscription_losses: AtomicU64,
    subscribe_errors: AtomicU64,
    deaf_fills: AtomicU64,
    flushes: AtomicU64,
}

/// State shared by a [`Synchronizer`] and its tasks.
pub(crate) struct Shared {
    node: NodeId,
    channel: String,
    options: SyncOptions,
    subscribed: AtomicBool,
    counters: SyncCounters,
    target: Arc<dyn SyncTarget>,
}

impl Shared {
    fn flush(&self) {
        self.target.flush();
        // counted once done: a reader that sees the count sees the flushed store
        self.counters.flushes.fetch_add(1, Relaxed);
    }
}

/// The pub/sub engine of one node: a publisher queue and a subscriber, both running on the
/// background runtime. Owned by a [`SyncedBackend`] (or a layered backend); dropping it stops
/// its tasks.
pub struct Synchronizer {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<SyncOp>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Synchronizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synchronizer")
            .field("node", &self.shared.node)
            .field("channel", &self.shared.channel)
            .field("subscribed", &self.is_subscribed())
            .finish()
    }
}

impl Synchronizer {
    /// Starts the publisher and subscriber of a node applying remote operations to `target`.
    pub(crate) fn start(
        client: redis::Client,
        options: SyncOptions,
        target: Arc<dyn SyncTarget>,
    ) -> Result<Self, CacheError> {
        options.validate()?;
        let handle = crate::client::exec::handle().ok_or_else(|| {
            CacheError::backend("redis-sync", "cannot start the background thread")
        })?;
        let sub_client =
            tasks::resp3_client(&client).map_err(|e| CacheError::config("url", e.to_string()))?;
        let shared = Arc::new(Shared {
            node: options.node.unwrap_or_else(NodeId::random),
            channel: options.channel.clone(),
            options,
            subscribed: AtomicBool::new(false),
            counters: SyncCounters::default(),
            target,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = handle.spawn(tasks::publisher(client, shared.clone(), rx));
        let subscriber = handle.spawn(tasks::subscriber(sub_client, shared.clone()));
        Ok(Synchronizer {
            shared,
            tx,
            tasks: vec![publisher.abort_handle(), subscriber.abort_handle()],
        })
    }

    /// Queues an operation for the other nodes; never blocks.
    pub(crate) fn publish(&self, op: SyncOp) {
        // The receiver lives as long as the publisher task, which lives as long as `self`.
        let _ = self.tx.send(op);
    }

    /// This node's id (messages carrying it are ignored by this node).
    pub fn node_id(&self) -> NodeId {
        self.shared.node
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Whether the subscription is established now.
    pub fn is_subscribed(&self) -> bool {
        self.shared.subscribed.load(Relaxed)
    }

    /// Waits (blocking the calling thread, at most `timeout`) until the node is subscribed;
    /// returns whether it is.
    pub fn wait_subscribed(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while !self.is_subscribed() {
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Waits (asynchronously, at most `timeout`) until the node is subscribed; returns whether
    /// it is.
    pub async fn wait_subscribed_async(&self, timeout: Duration) -> bool {
        let end = tokio::time::Instant::now() + timeout;
        while !self.is_subscribed() {
            if tokio::time::Instant::now() >= end {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        true
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SyncStats {
        let c = &self.shared.counters;
        SyncStats {
            published_ops: c.published_ops.load(Relaxed),
            published_messages: c.published_messages.load(Relaxed),
            publish_errors: c.publish_errors.load(Relaxed),
            overflows: c.overflows.load(Relaxed),
            received_messages: c.received_messages.load(Relaxed),
            applied_ops: c.applied_ops.load(Relaxed),
            own_messages: c.own_messages.load(Relaxed),
            unreadable_messages: c.unreadable_messages.load(Relaxed),
            subscriptions: c.subscriptions.load(Relaxed),
            subscription_losses: c.subscription_losses.load(Relaxed),
            subscribe_errors: c.subscribe_errors.load(Relaxed),
            deaf_fills: c.deaf_fills.load(Relaxed),
            flushes: c.flushes.load(Relaxed),
        }
    }
}

impl Drop for Synchronizer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A local backend whose removals, invalidations and clears are synchronized with the other
/// nodes through Redis pub/sub (see the [module docs](self)).
///
/// Reads and writes are the local backend's; the hit path is its `lookup_local`.
pub struct SyncedBackend<B: Backend = MemoryBackend> {
    local: Arc<B>,
    sync: Synchronizer,
    name: String,
}

impl<B: Backend> std::fmt::Debug for SyncedBackend<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncedBackend")
            .field("name", &self.name)
            .field("sync", &self.sync)
            .finish()
    }
}

/// Synchronizes `local` through the Redis server of `client` on `channel`: shorthand for
/// [`SyncedBackend::builder`].
///
/// ```no_run
/// let client = redis::Client::open("redis://127.0.0.1:6380/").unwrap();
/// let node = cache_redis::with_redis_sync(cache_core::MemoryBackend::new(), client, "sync").unwrap();
/// assert_eq!(cache_core::Backend::name(&node), "memory+sync");
/// ```
pub fn with_redis_sync<B: Backend>(
    local: B,
    client: redis::Client,
    channel: impl Into<String>,
) -> Result<SyncedBackend<B>, CacheError> {
    SyncedBackend::builder(local)
        .client(client)
        .options(SyncOptions::new(channel))
        .build()
}

/// Builds a [`SyncedBackend`]; made by [`SyncedBackend::builder`].
#[must_use]
pub struct SyncedBackendBuilder<B> {
    local: B,
    source: Option<Source>,
    tls: TlsOptions,
    options: SyncOptions,
}

/// Where the synchronizer's connections go.
enum Source {
    Client(Box<redis::Client>),
    Url(String),
}

impl<B: Backend> SyncedBackendBuilder<B> {
    /// The Redis server, as a redis-rs client.
    pub fn client(mut self, client: redis::Client) -> Self {
        self.source = Some(Source::Client(Box::new(client)));
        self
    }

    /// The Redis server, as a URL (`redis://`, `rediss://`, with credentials if any).
    pub fn url(mut self, url: &str) -> Self {
        self.source = Some(Source::Url(url.to_string()));
        self
    }

    /// Trust anchors (PEM) for a `rediss://` [`url`](Self::url), as
    /// [`RedisBackendBuilder::tls_ca_cert_pem`](crate::RedisBackendBuilder::tls_ca_cert_pem).
    ///
    /// ```no_run
    /// let node = cache_redis::SyncedBackend::builder(cache_core::MemoryBackend::new())
    ///     .url("rediss://cache.internal:6380/")
    ///     .tls_ca_cert_pem(std::fs::read("ca.pem").unwrap())
    ///     .channel("app:sync")
    ///     .build();
    /// ```
    pub fn tls_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// A client certificate and key (PEM) for mutual TLS, as
    /// [`RedisBackendBuilder::tls_client_cert_pem`](crate::RedisBackendBuilder::tls_client_cert_pem).
    pub fn tls_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_pem = Some((cert.into(), key.into()));
        self
    }

    /// Sets every synchronization option at once.
    pub fn options(mut self, options: SyncOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the channel.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.options = self.options.channel(channel);
        self
    }

    /// Builds and starts synchronizing. The subscription is established in the background:
    /// use [`Synchronizer::wait_subscribed`] to wait for it. `Err` names the invalid option.
    ///
    /// ```
    /// let err = cache_redis::SyncedBackend::builder(cache_core::MemoryBackend::new())
    ///     .url("redis://127.0.0.1:1/")
    ///     .channel("")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("channel"));
    /// ```
    pub fn build(self) -> Result<SyncedBackend<B>, CacheError> {
        let client = match self.source {
            None => {
                return Err(CacheError::config(
                    "client",
                    "a Redis client or url is required",
                ))
            }
            Some(Source::Client(c)) => {
                if self.tls.is_set() {
                    return Err(CacheError::config(
                        "tls_ca_cert_pem",
                        "TLS options apply to a url; configure a redis::Client's TLS yourself",
                    ));
                }
                *c
            }
            Some(Source::Url(url)) => {
                let info =
                    redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(|e| {
                        CacheError::config("url", format!("`{}`: {e}", redact_url(&url)))
                    })?;
                self.tls
                    .validate(&TlsNames::BUILDER)
                    .and_then(|()| open_client(info, &self.tls, "url"))
                    .map_err(CacheError::from)?
            }
        };
        self.options.validate()?;
        let local = Arc::new(self.local);
        let name = format!("{}+sync", local.name());
        let target: Arc<dyn SyncTarget> = Arc::new(BackendTarget(local.clone()));
        let sync = Synchronizer::start(client, self.options, target)?;
        Ok(SyncedBackend { local, sync, name })
    }
}

impl<B: Backend> SyncedBackend<B> {
    /// A builder around `local`.
    ///
    /// ```no_run
    /// let node = cache_redis::SyncedBackend::builder(cache_core::MemoryBackend::new())
    ///     .url("redis://127.0.0.1:6380/")
    ///     .channel("app:sync")
    ///     .build()
    ///     .unwrap();
    /// # drop(node);
    /// ```
    pub fn builder(local: B) -> SyncedBackendBuilder<B> {
        SyncedBackendBuilder {
            local,
            source: None,
            tls: TlsOptions::default(),
            options: SyncOptions::default(),
        }
    }

    /// A fill while the node cannot hear invalidations: not stored (counted).
    fn deaf(&self) -> SetOutcome {
        self.sync.shared.counters.deaf_fills.fetch_add(1, Relaxed);
        SetOutcome::Rejected
    }

    /// The local backend.
    pub fn local(&self) -> &B {
        &self.local
    }

    /// The synchronization engine (node id, subscription state, counters).
    pub fn synchronizer(&self) -> &Synchronizer {
        &self.sync
    }
}

impl<B: Backend> Backend for SyncedBackend<B> {
    fn name(&self) -> &str {
        &self.name
    }

    fn keeps_values_in_process(&self) -> bool {
        self.local.keeps_values_in_process()
    }

    fn write_queue(&self) -> Option<Arc<dyn cache_core::write_behind::WriteQueue>> {
        self.local.write_queue()
    }

    /// The local backend's: lookups are the local backend's own (hits and misses), while
    /// writes, removals and invalidations still come here and are published.
    fn as_memory(&self) -> Option<&MemoryBackend> {
        self.local.as_memory()
    }

    fn memory_hits(&self) -> Option<&MemoryBackend> {
        self.local.memory_hits()
    }

    #[inline]
    fn lookup_local(
        &self,
        key: &LocalKey<'_>,
        on_hit: &mut dyn FnMut(&SharedValue),
    ) -> LocalLookup {
        self.local.lookup_local(key, on_hit)
    }

    fn get<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        self.local.get(key)
    }

    fn get_blocking(&self, key: &Key) -> Result<Lookup, CacheError> {
        self.local.get_blocking(key)
    }

    fn get_declared<'a>(
        &'a self,
        key: &'a Key,
        dependencies: &'a [String],
    ) -> BoxFuture<'a, Result<Lookup, CacheError>> {
        self.local.get_declared(key, dependencies)
    }

    fn get_declared_blocking(
        &self,
        key: &Key,
        dependencies: &[String],
    ) -> Result<Lookup, CacheError> {
        self.local.get_declared_blocking(key, dependencies)
    }

    fn get_many<'a>(&'a self, keys: &'a [Key]) -> BoxFuture<'a, Result<Vec<Lookup>, CacheError>> {
        self.local.get_many(keys)
    }

    fn get_many_blocking(&self, keys: &[Key]) -> Result<Vec<Lookup>, CacheError> {
        self.local.get_many_blocking(keys)
    }

    fn set_many<'a>(
        &'a self,
        fills: &'a [Fill<'a>],
    ) -> BoxFuture<'a, Result<Vec<SetOutcome>, CacheError>> {
        if !self.sync.is_subscribed() {
            return Box::pin(async { Ok(fills.iter().map(|_| self.deaf()).collect()) });
        }
        self.local.set_many(fills)
    }

    fn set_many_blocking(&self, fills: &[Fill<'_>]) -> Result<Vec<SetOutcome>, CacheError> {
        if !self.sync.is_subscribed() {
            return Ok(fills.iter().map(|_| self.deaf()).collect());
        }
        self.local.set_many_blocking(fills)
    }

    fn set<'a>(
        &'a self,
        key: &'a Key,
        value: SharedValue,
        options: &'a EntryOptions,
        lease: Lease,
    ) -> BoxFuture<'a, Result<SetOutcome, CacheError>> {
        if !self.sync.is_subscribed() {
            return Box::pin(async { Ok(self.deaf()) });
        }
        self.local.set(key, value, options, lease)
    }

    fn set_blocking(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> Result<SetOutcome, CacheError> {
        if !self.sync.is_subscribed() {
            return Ok(self.deaf());
        }
        self.local.set_blocking(key, value, options, lease)
    }

    fn abandon(&self, key: &Key, lease: Lease) {
        self.local.abandon(key, lease);
    }

    fn claim_refresh<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, bool> {
        self.local.claim_refresh(key)
    }

    fn claim_refresh_blocking(&self, key: &Key) -> bool {
        self.local.claim_refresh_blocking(key)
    }

    fn remove<'a>(&'a self, key: &'a Key) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.local.remove(key).await;
            self.sync.publish(SyncOp::Remove(key.text().to_string()));
            r
        })
    }

    fn remove_blocking(&self, key: &Key) -> Result<(), CacheError> {
        let r = self.local.remove_blocking(key);
        self.sync.publish(SyncOp::Remove(key.text().to_string()));
        r
    }

    fn invalidate<'a>(&'a self, dependency: &'a str) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.local.invalidate(dependency).await;
            self.sync
                .publish(SyncOp::Invalidate(dependency.to_string()));
            r
        })
    }

    fn invalidate_blocking(&self, dependency: &str) -> Result<(), CacheError> {
        let r = self.local.invalidate_blocking(dependency);
        self.sync
            .publish(SyncOp::Invalidate(dependency.to_string()));
        r
    }

    fn clear(&self) -> BoxFuture<'_, Result<(), CacheError>> {
        Box::pin(async move {
            let r = self.local.clear().await;
            self.sync.publish(SyncOp::Clear);
            r
        })
    }

    fn clear_blocking(&self) -> Result<(), CacheError> {
        let r = self.local.clear_blocking();
        self.sync.publish(SyncOp::Clear);
        r
    }

    fn stats(&self) -> BackendStats {
        self.local.stats()
    }
}
