//! The Redis client layer beneath the cache protocol: how a connection is opened (URL,
//! credentials, TLS: [`connect`]), the current multiplexed connection and its reconnect loop
//! (`conn`), the circuit breaker (`breaker`), the op timeout, and the one background executor
//! ([`exec`]). The backend's protocol, the GC, the retry queue and the eviction check all talk
//! to Redis through a [`RedisClient`] and nothing else; they do not see each other's state.

mod breaker;
mod conn;
pub(crate) mod connect;
mod connection;
pub(crate) mod exec;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::RedisResult;

use crate::config::RedisBackendBuilder;
use crate::error::{classify, RedisCacheError};
use breaker::Breaker;
use conn::Conn;
pub(crate) use connection::{Connection, ScanTarget};
use exec::Shutdown;

/// One Redis server as the cache sees it: a connection that remakes itself, a breaker, a
/// timeout per operation, and background tasks that end when the client is dropped.
pub(crate) struct RedisClient {
    conn: Arc<Conn>,
    breaker: Breaker,
    op_timeout: Duration,
    redacted_url: String,
    db: i64,
    cluster: bool,
    // Last: dropping it ends the background tasks spawned through the client.
    tasks: Shutdown,
}

impl RedisClient {
    /// Opens the client of `b` (no I/O: the first connection is made in the background).
    pub(crate) fn new(b: &RedisBackendBuilder) -> Result<Arc<Self>, RedisCacheError> {
        let client = b.client()?;
        let cluster = b.cluster_client()?;
        let db = client.get_connection_info().redis_settings().db();
        let tasks = Shutdown::new().ok_or_else(|| {
            RedisCacheError::Runtime("the background thread could not be started".into())
        })?;
        let redacted_url = b.redacted_target();
        let conn = Conn::new(
            client,
            cluster,
            b.connect_timeout,
            tasks.handle().clone(),
            redacted_url.clone(),
        );
        conn.reconnect();
        Ok(Arc::new(RedisClient {
            conn,
            breaker: Breaker::new(b.breaker_failures, b.breaker_cooldown),
            op_timeout: b.op_timeout,
            redacted_url,
            db,
            cluster: b.is_cluster(),
            tasks,
        }))
    }

    /// Runs one Redis operation: breaker, connection, op timeout, error classification.
    pub(crate) async fn run<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, RedisCacheError>
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.breaker.allow()?;
        let Some(con) = self.conn.get() else {
            self.breaker.failure();
            return Err(RedisCacheError::Redis {
                op,
                reason: "outage: not connected (reconnecting)".into(),
            });
        };
        match tokio::time::timeout(self.op_timeout, f(con)).await {
            Ok(Ok(v)) => {
                self.breaker.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                self.conn.failed(&e);
                let e = classify(op, e);
                if e.is_outage() {
                    self.breaker.failure();
                } else {
                    self.breaker.success();
                }
                Err(e)
            }
            Err(_) => {
                self.breaker.failure();
                Err(RedisCacheError::Timeout {
                    op,
                    timeout: self.op_timeout,
                })
            }
        }
    }

    /// Sends a command nobody waits for (a sliding refresh, a lock release) on the current
    /// connection, from the executor; dropped while disconnected (no breaker, no timeout: its
    /// failure costs nothing but what it would have done).
    pub(crate) fn detach<Fut>(&self, op: &'static str, f: impl FnOnce(Connection) -> Fut)
    where
        Fut: Future<Output = RedisResult<()>> + Send + 'static,
    {
        let Some(con) = self.conn.get() else {
            return;
        };
        let fut = f(con);
        self.handle().spawn(async move {
            if let Err(e) = fut.await {
                tracing::debug!(op, error = %e, "a background command failed");
            }
        });
    }

    /// Spawns a background task that ends when this client is dropped.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(fut);
    }

    /// Waits (at most `limit`) until connected, from any executor.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        let conn = self.conn.clone();
        exec::run(async move { conn.wait_connected(limit).await })
            .await
            .unwrap_or(false)
    }

    /// [`wait_connected`](Self::wait_connected) for sync code.
    pub(crate) fn wait_connected_blocking(&self, limit: Duration) -> bool {
        let conn = self.conn.clone();
        exec::block(
            async move { conn.wait_connected(limit).await },
            limit + Duration::from_millis(100),
        )
        .unwrap_or(false)
    }

    /// Waits until connected, on the executor itself (for background tasks).
    pub(crate) async fn connected_within(&self, limit: Duration) -> bool {
        self.conn.wait_connected(limit).await
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.conn.is_connected()
    }

    pub(crate) fn connects(&self) -> u64 {
        self.conn.connects()
    }

    /// Connections that reached another server run (restart, failover).
    pub(crate) fn server_changes(&self) -> u64 {
        self.conn.server_changes()
    }

    /// What to do when a connection reaches another server run; runs before that connection
    /// serves any operation.
    pub(crate) fn on_server_change(&self, f: impl Fn() + Send + Sync + 'static) {
        self.conn.on_server_change(Box::new(f));
    }

    pub(crate) fn connect_failures(&self) -> u64 {
        self.conn.connect_failures()
    }

    pub(crate) fn last_error(&self) -> Option<String> {
        self.conn.last_error()
    }

    pub(crate) fn breaker_open(&self) -> bool {
        self.breaker.is_open()
    }

    pub(crate) fn breaker_trips(&self) -> u64 {
        self.breaker.trips()
    }

    /// The redis-rs client every connection derives from (TLS applied).
    pub(crate) fn redis(&self) -> &redis::Client {
        self.conn.client()
    }

    /// The current connection (`None`, and a reconnect under way, while there is none).
    pub(crate) fn connection(&self) -> Option<Connection> {
        self.conn.get()
    }

    /// Whether this client runs on a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        self.cluster
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    pub(crate) fn op_timeout(&self) -> Duration {
        self.op_timeout
    }

    pub(crate) fn redacted_url(&self) -> &str {
        &self.redacted_url
    }

    /// The executor's handle.
    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        self.tasks.handle()
    }
}
