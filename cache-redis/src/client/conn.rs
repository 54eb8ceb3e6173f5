//! The backend's connection.
//!
//! [`Conn`] holds the current connection (one server's multiplexed connection, or a cluster
//! connection: [`Connection`]), driven by the background executor
//! ([`super::exec`]) so it never dies with a caller's runtime. When a command reports a dropped or
//! broken connection, the connection is discarded and a reconnect loop (with backoff, on the
//! background executor) makes a new one; meanwhile operations fail fast (fail-open).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use tokio::runtime::Handle;

use super::connection::Connection;
use tokio::sync::Notify;

/// How often the masters of a cluster are checked for a new run ([`Conn`]'s watch).
pub(crate) const MASTER_WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// The current connection and the reconnect loop.
pub(crate) struct Conn {
    /// One server's client; on a cluster, the first seed node's (for pub/sub connections).
    client: redis::Client,
    /// The cluster's client, when the backend runs on a Redis Cluster.
    cluster: Option<redis::cluster::ClusterClient>,
    config: redis::AsyncConnectionConfig,
    current: ArcSwapOption<Connection>,
    connecting: AtomicBool,
    connected: Notify,
    connects: AtomicU64,
    failures: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
    handle: Handle,
    redacted_url: String,
    connect_timeout: Duration,
    /// The `run_id` of the server of the last connection (a new one means a restart or a
    /// failover: the data may be older than what the caches saw).
    run_id: parking_lot::Mutex<Option<String>>,
    server_changes: AtomicU64,
    /// Whether the watch of a cluster's masters runs.
    watching: AtomicBool,
    /// Called (before the connection is used) when a connection reaches another server run.
    on_server_change: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Conn {
    pub(crate) fn new(
        client: redis::Client,
        cluster: Option<redis::cluster::ClusterClient>,
        connect_timeout: Duration,
        handle: Handle,
        redacted_url: String,
    ) -> Arc<Self> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        Arc::new(Conn {
            client,
            cluster,
            config,
            current: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            connected: Notify::new(),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: parking_lot::Mutex::new(None),
            handle,
            redacted_url,
            connect_timeout,
            run_id: parking_lot::Mutex::new(None),
            server_changes: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            on_server_change: std::sync::OnceLock::new(),
        })
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The current connection; `None` (and a reconnect under way) when there is none.
    #[inline]
    pub(crate) fn get(self: &Arc<Self>) -> Option<Connection> {
        let guard = self.current.load();
        match guard.as_deref() {
            Some(c) => Some(c.clone()),
            None => {
                self.reconnect();
                None
            }
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.current.load().is_some()
    }

    pub(crate) fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// How long the `INFO` of a new connection may take (the connect timeout, at least 1 s).
    fn config_timeout(&self) -> Duration {
        self.connect_timeout.max(Duration::from_secs(1))
    }

    /// Connections that reached another server run than the one before (restarts, failovers).
    pub(crate) fn server_changes(&self) -> u64 {
        self.server_changes.load(Ordering::Relaxed)
    }

    /// Sets what to do when a new connection reaches another server run (once).
    pub(crate) fn on_server_change(&self, f: Box<dyn Fn() + Send + Sync>) {
        let _ = self.on_server_change.set(f);
    }

    /// Compares the server's `run_id` with the last connection's; a change runs the hook.
    async fn check_server(&self, con: &mut MultiplexedConnection) {
        let limit = self.config_timeout();
        let info = tokio::time::timeout(
            limit,
            redis::cmd("INFO").arg("server").query_async::<String>(con),
        )
        .await;
        let Some(run_id) = info.ok().and_then(Result::ok).and_then(|i| {
            i.lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .map(|v| v.trim().to_string())
        }) else {
            return; // INFO refused (ACL): restarts cannot be detected this way
        };
        let previous = self.run_id.lock().replace(run_id.clone());
        if previous.is_some_and(|p| p != run_id) {
            self.server_changed();
        }
    }

    /// A server run the caches did not see before serves data: count it, run the hook.
    fn server_changed(&self) {
        self.server_changes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(url = %self.redacted_url, "Redis restarted or failed over (new run_id): entries written before are no longer trusted");
        if let Some(hook) = self.on_server_change.get() {
            hook();
        }
    }

    /// On a cluster: every [`MASTER_WATCH_INTERVAL`], the `run_id` of every master; one never
    /// seen as a master before (a replica promoted by a failover, a master restarted) may hold
    /// older data than the caches saw (an automatic failover after a crash can lose the last
    /// writes, an invalidation among them), so it counts as a server change. Slot moves between
    /// known masters do not. Starts once; ends with the connection holder.
    fn watch_masters(self: &Arc<Self>) {
        if self.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        self.handle.spawn(async move {
            let mut known: std::collections::HashSet<String> = std::collections::HashSet::new();
            loop {
                let Some(conn) = weak.upgrade() else { return };
                let current = conn.current.load().as_deref().cloned();
                if let Some(mut con) = current {
                    let limit = conn.config_timeout();
                    if let Ok(Ok(ids)) = tokio::time::timeout(limit, con.master_run_ids()).await {
                        let first = known.is_empty();
                        let new = ids.iter().any(|id| !known.contains(id));
                        known.extend(ids);
                        if new && !first {
                            conn.server_changed();
                        }
                    }
                }
                drop(conn);
                tokio::time::sleep(MASTER_WATCH_INTERVAL).await;
            }
        });
    }

    /// Connection attempts that failed (refused, TLS handshake, authentication, timeout).
    pub(crate) fn connect_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Why the last connection attempt failed, if it did (no secret in it).
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Counts and logs a failed attempt: a warning when an outage starts or its reason
    /// changes, debug for the retries in between.
    fn attempt_failed(&self, e: &redis::RedisError) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut reason = crate::config::redact_url(&e.to_string());
        let tls = self.redacted_url.starts_with("rediss://");
        if tls && e.is_timeout() {
            reason.push_str(" (no TLS handshake: is the port a TLS port?)");
        } else if !tls && (e.is_connection_dropped() || e.is_io_error()) {
            reason.push_str(" (if the port speaks TLS only, use a rediss:// URL)");
        }
        let mut last = self.last_error.lock();
        if last.as_deref() != Some(reason.as_str()) {
            tracing::warn!(url = %self.redacted_url, error = %reason, "cannot connect to Redis; the cache runs uncached (fail-open) and retries");
            *last = Some(reason);
        } else {
            tracing::debug!(url = %self.redacted_url, error = %reason, "Redis connect failed; retrying");
        }
    }

    /// Waits until a connection is up (at most `limit`).
    pub(crate) async fn wait_connected(self: &Arc<Self>, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.connected.notified();
            if self.get().is_some() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.is_connected();
            }
        }
    }

    /// Reports a failed command: a broken connection is dropped and remade.
    pub(crate) fn failed(self: &Arc<Self>, err: &redis::RedisError) {
        if err.is_unrecoverable_error()
            || err.is_connection_dropped()
            || err.is_io_error()
            || err.is_connection_refusal()
        {
            self.current.store(None);
            self.reconnect();
        }
    }

    /// Starts the reconnect loop unless it runs already.
    pub(crate) fn reconnect(self: &Arc<Self>) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::downgrade(self);
        self.handle.spawn(async move {
            let mut delay = Duration::from_millis(10);
            loop {
                let Some(conn) = this.upgrade() else { return };
                let attempt = match &conn.cluster {
                    Some(cluster) => cluster
                        .get_async_connection()
                        .await
                        .map(Connection::Cluster),
                    None => conn
                        .client
                        .get_multiplexed_async_connection_with_config(&conn.config)
                        .await
                        .map(Connection::Single),
                };
                match attempt {
                    Ok(c) => {
                        // a cluster's masters are watched one by one (`watch_masters`)
                        match c.clone() {
                            Connection::Single(mut single) => conn.check_server(&mut single).await,
                            Connection::Cluster(_) => conn.watch_masters(),
                        }
                        *conn.last_error.lock() = None;
                        conn.current.store(Some(Arc::new(c)));
                        conn.connects.fetch_add(1, Ordering::Relaxed);
                        conn.connecting.store(false, Ordering::Release);
                        conn.connected.notify_waiters();
                        tracing::info!(url = %conn.redacted_url, "connected to Redis");
                        return;
                    }
                    Err(e) => conn.attempt_failed(&e),
                }
                drop(conn);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        });
    }
}
