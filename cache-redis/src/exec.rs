//! The backend's own runtime thread and its connection.
//!
//! Every `RedisBackend` owns one thread running a current-thread tokio runtime. It drives the
//! multiplexed connection (so the connection never dies with a caller's runtime), the
//! background tasks (garbage collector, invalidation retries, sliding refreshes), and the work
//! of the `*_blocking` methods: a blocking call hands its future to this thread and waits on a
//! channel, so it works inside and outside a tokio runtime and never `block_on`s a caller's
//! worker.
//!
//! [`Conn`] holds the current multiplexed connection. When a command reports a dropped or
//! broken connection, the connection is discarded and a reconnect loop (with backoff, on the
//! runtime thread) makes a new one; meanwhile operations fail fast (fail-open).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use tokio::runtime::Handle;
use tokio::sync::Notify;

use crate::error::RedisCacheError;

/// The runtime thread. Dropping it stops the runtime (without joining: the last owner may be
/// a task on that very thread).
pub(crate) struct Exec {
    handle: Handle,
    thread: std::thread::ThreadId,
    shutdown: parking_lot::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

impl Exec {
    pub(crate) fn start(name: &str) -> Result<Self, RedisCacheError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RedisCacheError::Runtime(e.to_string()))?;
        let handle = runtime.handle().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = rx.await;
                });
                runtime.shutdown_background();
            })
            .map_err(|e| RedisCacheError::Runtime(e.to_string()))?
            .thread()
            .id();
        Ok(Exec {
            handle,
            thread,
            shutdown: parking_lot::Mutex::new(Some(tx)),
        })
    }

    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Runs `fut` on the runtime thread and waits for it (at most `limit`). `None` when it did
    /// not finish in time, the runtime stopped, or the caller is the runtime thread itself
    /// (waiting there would deadlock).
    pub(crate) fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
        limit: Duration,
    ) -> Option<T> {
        if std::thread::current().id() == self.thread {
            tracing::error!("a *_blocking cache-redis method was called on the backend's own runtime thread; use the async method there");
            return None;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv_timeout(limit).ok()
    }

    /// Runs `fut` on the runtime thread and awaits it from any executor.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        self.handle.spawn(fut).await.ok()
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.lock().take() {
            let _ = tx.send(());
        }
    }
}

/// The current connection and the reconnect loop.
pub(crate) struct Conn {
    client: redis::Client,
    config: redis::AsyncConnectionConfig,
    current: ArcSwapOption<MultiplexedConnection>,
    connecting: AtomicBool,
    connected: Notify,
    connects: AtomicU64,
    failures: AtomicU64,
    last_error: parking_lot::Mutex<Option<String>>,
    handle: Handle,
    redacted_url: String,
}

impl Conn {
    pub(crate) fn new(
        client: redis::Client,
        connect_timeout: Duration,
        handle: Handle,
        redacted_url: String,
    ) -> Arc<Self> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(None);
        Arc::new(Conn {
            client,
            config,
            current: ArcSwapOption::empty(),
            connecting: AtomicBool::new(false),
            connected: Notify::new(),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: parking_lot::Mutex::new(None),
            handle,
            redacted_url,
        })
    }

    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The current connection; `None` (and a reconnect under way) when there is none.
    #[inline]
    pub(crate) fn get(self: &Arc<Self>) -> Option<MultiplexedConnection> {
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
                let attempt = conn
                    .client
                    .get_multiplexed_async_connection_with_config(&conn.config)
                    .await;
                match attempt {
                    Ok(c) => {
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
