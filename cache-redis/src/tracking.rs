//! Server-assisted client-side caching: RESP3 `CLIENT TRACKING` keeps an L1 coherent.
//!
//! A [`Tracker`] owns one RESP3 connection (on the background runtime) with tracking on:
//! * [`TrackingMode::Default`]: Redis remembers the keys this connection read and pushes an
//!   invalidation when one of them changes. The layered backend reads `PTTL key` on this
//!   connection *before* reading the entry through the Redis backend, so the key is tracked
//!   before its value is read (a write in between is always reported);
//! * [`TrackingMode::Broadcast`]: `CLIENT TRACKING ON BCAST PREFIX <prefix>`: every change
//!   of an entry key under the prefix is pushed, read or not;
//! * [`TrackingMode::Off`]: no tracking (the connection only answers `PTTL`; pub/sub keeps
//!   the L1 coherent instead).
//!
//! Pushes are applied to the [`LocalStore`] on the connection's task: an `invalidate` push
//! drops the entries referencing the listed Redis keys (on storage protocol 2, a version key
//! `P:v:{N}` stands for `N`: the entries depending on `N`), a null push (`FLUSHALL`/`FLUSHDB`)
//! drops everything. The race of an invalidation arriving while a read is in flight is closed
//! by leases: the reader takes the store's lease before it reads, the push bumps the store's
//! epoch for that Redis key, and the reader's put is rejected. When the connection is lost or a
//! periodic `PING` fails, the store is flushed and nothing is put into it until tracking is
//! back (and it is flushed once more then).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, PushInfo, PushKind, Value};
use tokio::sync::Notify;

use cache_core::CacheError;

use crate::backend::parse_gen;
use crate::client::Connection;
use crate::keys::Layout;
use crate::local_store::LocalStore;
use crate::watch::{next_backoff, until_lost, MIN_BACKOFF};

/// How the L1 of a layered backend is kept coherent by Redis itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackingMode {
    /// Redis tracks the keys this node read (`CLIENT TRACKING ON`).
    Default,
    /// Redis reports every change under the entry-key prefix (`CLIENT TRACKING ON BCAST
    /// PREFIX`).
    Broadcast,
    /// No tracking: the connection only serves `PTTL` (pub/sub keeps the L1 coherent).
    Off,
}

/// Counters of a [`Tracker`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TrackingStats {
    /// `invalidate` pushes received.
    pub pushes: u64,
    /// Redis keys they named.
    pub keys: u64,
    /// "Flush all" (null) pushes.
    pub flush_all: u64,
    /// Connections established with tracking on.
    pub connections: u64,
    /// Connections lost (disconnection or failed ping).
    pub losses: u64,
    /// Connection attempts that failed (refused, TLS handshake, authentication, timeout).
    pub connect_errors: u64,
    /// Times the local store was flushed because invalidations may have been lost.
    pub flushes: u64,
}

#[derive(Default)]
struct Counters {
    pushes: AtomicU64,
    keys: AtomicU64,
    flush_all: AtomicU64,
    connections: AtomicU64,
    losses: AtomicU64,
    connect_errors: AtomicU64,
    flushes: AtomicU64,
}

struct Shared {
    mode: TrackingMode,
    /// The key prefixes broadcast in [`TrackingMode::Broadcast`].
    prefixes: Vec<String>,
    /// The key layout on protocol 2: a pushed version key `P:v:{N}` invalidates the L1 entries
    /// that depend on `N`.
    versions: Option<Layout>,
    ping_interval: Duration,
    timeout: Duration,
    store: Arc<dyn LocalStore>,
    connected: AtomicBool,
    con: Mutex<Option<MultiplexedConnection>>,
    counters: Counters,
}

impl Shared {
    fn flush(&self) {
        self.store.invalidate_references(None);
        // counted once done: a reader that sees the count sees the flushed store
        self.counters.flushes.fetch_add(1, Relaxed);
    }

    /// The L1 reference a pushed Redis key stands for: the name `N` of a version key
    /// `P:v:{N}`, else the key itself (an entry key, the reference of its L1 copy).
    fn reference_of<'k>(&self, key: &'k str) -> &'k str {
        self.versions
            .as_ref()
            .and_then(|l| l.version_name(key))
            .unwrap_or(key)
    }

    fn on_push(&self, lost: &Notify, info: PushInfo) {
        match info.kind {
            PushKind::Invalidate => {
                self.counters.pushes.fetch_add(1, Relaxed);
                match info.data.first() {
                    Some(Value::Array(keys)) | Some(Value::Set(keys)) => {
                        let keys: Vec<&str> = keys
                            .iter()
                            .filter_map(|k| match k {
                                Value::BulkString(b) => std::str::from_utf8(b).ok(),
                                Value::SimpleString(s) => Some(s.as_str()),
                                _ => None,
                            })
                            .collect();
                        self.counters.keys.fetch_add(keys.len() as u64, Relaxed);
                        let refs: Vec<&str> =
                            keys.into_iter().map(|k| self.reference_of(k)).collect();
                        self.store.invalidate_references(Some(&refs));
                    }
                    _ => {
                        // A null key list: the server flushed its keyspace.
                        self.counters.flush_all.fetch_add(1, Relaxed);
                        self.store.invalidate_references(None);
                    }
                }
            }
            PushKind::Disconnection => {
                self.connected.store(false, Relaxed);
                self.flush();
                lost.notify_one();
            }
            _ => {}
        }
    }
}

/// One node's tracking connection (see the [module docs](self)). Dropping it stops its task.
pub struct Tracker {
    shared: Arc<Shared>,
    task: tokio::task::AbortHandle,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("mode", &self.shared.mode)
            .field("prefixes", &self.shared.prefixes)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Tracker {
    /// Starts tracking for `store` through the server of `client`, for the keys of `layout`
    /// written with storage protocol `protocol` (on 2, version keys are tracked and broadcast
    /// too).
    pub(crate) fn start(
        client: &Client,
        mode: TrackingMode,
        layout: &Layout,
        protocol: u8,
        ping_interval: Duration,
        timeout: Duration,
        store: Arc<dyn LocalStore>,
    ) -> Result<Self, CacheError> {
        let handle = crate::client::exec::handle()
            .ok_or_else(|| CacheError::backend("redis-tracking", "cannot start the runtime"))?;
        let client = crate::sync::resp3_client(client)
            .map_err(|e| CacheError::config("url", e.to_string()))?;
        let versions = (protocol == 2).then(|| layout.clone());
        let prefixes = std::iter::once(layout.entry_prefix().to_string())
            .chain(versions.as_ref().map(Layout::version_prefix))
            .collect();
        let shared = Arc::new(Shared {
            mode,
            prefixes,
            versions,
            ping_interval,
            timeout,
            store,
            connected: AtomicBool::new(false),
            con: Mutex::new(None),
            counters: Counters::default(),
        });
        let task = handle.spawn(run(client, shared.clone())).abort_handle();
        Ok(Tracker { shared, task })
    }

    /// The mode.
    pub fn mode(&self) -> TrackingMode {
        self.shared.mode
    }

    /// Whether the tracking connection is up (the L1 may be filled only then).
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Relaxed)
    }

    /// Waits (blocking, at most `timeout`) until the connection is up; returns whether it is.
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        let end = std::time::Instant::now() + timeout;
        while !self.is_connected() {
            if std::time::Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The tracking connection, when it is up.
    pub(crate) fn connection(&self) -> Option<Connection> {
        if !self.is_connected() {
            return None;
        }
        self.shared.con.lock().clone().map(Connection::Single)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> TrackingStats {
        let c = &self.shared.counters;
        TrackingStats {
            pushes: c.pushes.load(Relaxed),
            keys: c.keys.load(Relaxed),
            flush_all: c.flush_all.load(Relaxed),
            connections: c.connections.load(Relaxed),
            losses: c.losses.load(Relaxed),
            connect_errors: c.connect_errors.load(Relaxed),
            flushes: c.flushes.load(Relaxed),
        }
    }

    /// Reads how long an L1 copy of `key` may live and the entry's forward list (its
    /// dependencies) on the tracking connection (which, in default mode, makes Redis track the
    /// key for this node): `PTTL key`, bounded by the end of the entry's fresh time when it has
    /// a stale window (an L1 copy is never served stale). `None` when the connection is down or
    /// the commands failed.
    pub(crate) async fn pre_read(
        con: Option<Connection>,
        key: String,
    ) -> Option<(i64, Vec<String>)> {
        let mut con = con?;
        let (ms, header, list, old): (i64, Vec<u8>, Option<Vec<u8>>, Vec<String>) = redis::pipe()
            .cmd("PTTL")
            .arg(&key)
            .cmd("GETRANGE")
            .arg(&key)
            .arg(0)
            .arg(crate::envelope::HEADER_MAX - 1)
            .cmd("GET")
            .arg(crate::keys::forward_list_key(&key))
            .cmd("SMEMBERS")
            .arg(crate::keys::old_forward_list_key(&key))
            .query_async(&mut con)
            .await
            .ok()?;
        let mut deps = list
            .map(|b| crate::keys::decode_forward_list(&b))
            .unwrap_or_default();
        deps.extend(old);
        Some((l1_ttl(ms, &header), deps))
    }

    /// Protocol 2: how long an L1 copy of `key` may live (as [`Self::pre_read`]) and the
    /// version tokens of `versions` (version keys), read on the tracking connection before the
    /// entry is read, so that Redis tracks them for this node from then on. `None` when the
    /// connection is down or the commands failed.
    pub(crate) async fn pre_read_versions(
        con: Option<Connection>,
        key: String,
        versions: Vec<String>,
    ) -> Option<(i64, Vec<Option<u64>>)> {
        let mut con = con?;
        let mut pipe = redis::pipe();
        pipe.cmd("PTTL")
            .arg(&key)
            .cmd("GETRANGE")
            .arg(&key)
            .arg(0)
            .arg(crate::envelope::HEADER_MAX - 1);
        for v in &versions {
            pipe.cmd("GET").arg(v);
        }
        let mut replies: Vec<Value> = pipe.query_async(&mut con).await.ok()?;
        if replies.len() != versions.len() + 2 {
            return None;
        }
        let tokens = replies.split_off(2).iter().map(parse_gen).collect();
        let (Value::Int(ms), Value::BulkString(header)) = (&replies[0], &replies[1]) else {
            return None;
        };
        Some((l1_ttl(*ms, header), tokens))
    }

    /// Protocol 2: the version tokens of `versions`, read on the tracking connection (Redis
    /// tracks them for this node from then on). `None` when the connection is down or the
    /// command failed.
    pub(crate) async fn read_versions(
        con: Option<Connection>,
        versions: Vec<String>,
    ) -> Option<Vec<Option<u64>>> {
        let mut con = con?;
        let mut pipe = redis::pipe();
        for v in &versions {
            pipe.cmd("GET").arg(v);
        }
        let replies: Vec<Value> = pipe.query_async(&mut con).await.ok()?;
        (replies.len() == versions.len()).then(|| replies.iter().map(parse_gen).collect())
    }
}

/// How long an L1 copy may live: the entry's `PTTL` (`ms`), bounded by the end of its fresh
/// time when its envelope `header` has a stale window.
fn l1_ttl(ms: i64, header: &[u8]) -> i64 {
    match crate::envelope::fresh_until(header) {
        Some(until) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let fresh = (until as i64).saturating_sub(now).max(0);
            if ms < 0 {
                fresh
            } else {
                ms.min(fresh)
            }
        }
        None => ms,
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
        *self.shared.con.lock() = None;
    }
}

async fn run(client: Client, shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let lost = Arc::new(Notify::new());
        let sender = {
            let shared = shared.clone();
            let lost = lost.clone();
            move |info: PushInfo| -> Result<(), ()> {
                shared.on_push(&lost, info);
                Ok(())
            }
        };
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(shared.timeout))
            .set_response_timeout(Some(shared.timeout))
            .set_push_sender(sender);
        let connected = async {
            let mut con = client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await?;
            let _: Value = redis::cmd("CLIENT")
                .arg("SETNAME")
                .arg("cache-track")
                .query_async(&mut con)
                .await?;
            match shared.mode {
                TrackingMode::Off => {}
                TrackingMode::Default => {
                    let _: Value = redis::cmd("CLIENT")
                        .arg("TRACKING")
                        .arg("ON")
                        .query_async(&mut con)
                        .await?;
                }
                TrackingMode::Broadcast => {
                    let mut cmd = redis::cmd("CLIENT");
                    cmd.arg("TRACKING").arg("ON").arg("BCAST");
                    for p in &shared.prefixes {
                        cmd.arg("PREFIX").arg(p);
                    }
                    let _: Value = cmd.query_async(&mut con).await?;
                }
            }
            Ok::<_, redis::RedisError>(con)
        }
        .await;
        match connected {
            Ok(mut con) => {
                // Whatever the store holds may have changed while nobody tracked it.
                shared.flush();
                *shared.con.lock() = Some(con.clone());
                shared.connected.store(true, Relaxed);
                shared.counters.connections.fetch_add(1, Relaxed);
                backoff = MIN_BACKOFF;
                until_lost(&mut con, &lost, shared.ping_interval, "tracking").await;
                shared.connected.store(false, Relaxed);
                *shared.con.lock() = None;
                shared.counters.losses.fetch_add(1, Relaxed);
                shared.flush();
                tracing::warn!("cache tracking: connection lost; L1 flushed; reconnecting");
            }
            Err(e) => {
                shared.counters.connect_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "cache tracking: cannot connect; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = next_backoff(backoff);
    }
}
