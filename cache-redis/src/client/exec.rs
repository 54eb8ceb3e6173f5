//! The one background executor of this crate.
//!
//! One thread per process runs a current-thread tokio runtime, started on first use. It drives
//! every connection the crate owns (the backends' multiplexed connections, the GC's and the
//! synchronizers' subscriptions, the tracking connections, so none dies with a caller's
//! runtime), the background tasks (garbage collection, invalidation retries, sliding refreshes),
//! and the work of the `*_blocking` methods: a blocking call hands its future to this thread and
//! waits on a channel, so it works inside and outside a tokio runtime and never `block_on`s a
//! caller's worker.
//!
//! Tasks of an owner that goes away end by themselves: [`Shutdown`] ends the tasks spawned
//! through it when it is dropped.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::runtime::Handle;

struct Executor {
    handle: Handle,
    thread: std::thread::ThreadId,
}

fn executor() -> Option<&'static Executor> {
    static EXEC: OnceLock<Option<Executor>> = OnceLock::new();
    EXEC.get_or_init(start).as_ref()
}

fn start() -> Option<Executor> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("cache-redis".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cache-redis: cannot build the background runtime");
                    let _ = tx.send(None);
                    return;
                }
            };
            let _ = tx.send(Some(rt.handle().clone()));
            // Runs until the process exits; tasks are spawned through the handle.
            rt.block_on(std::future::pending::<()>());
        });
    let thread = match spawned {
        Ok(t) => t.thread().id(),
        Err(e) => {
            tracing::error!(error = %e, "cache-redis: cannot start the background thread");
            return None;
        }
    };
    let handle = rx.recv().ok().flatten()?;
    Some(Executor { handle, thread })
}

/// The executor's handle; `None` only if its thread could not be started (callers report it
/// as an error).
pub(crate) fn handle() -> Option<Handle> {
    executor().map(|e| e.handle.clone())
}

/// Runs `fut` on the executor and waits for it (at most `limit`). `None` when it did not finish
/// in time, the executor is missing, or the caller is the executor thread itself (waiting
/// there would deadlock).
pub(crate) fn block<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
    limit: Duration,
) -> Option<T> {
    let exec = executor()?;
    if std::thread::current().id() == exec.thread {
        tracing::error!("a *_blocking cache-redis method was called on the crate's background thread; use the async method there");
        return None;
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    exec.handle.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv_timeout(limit).ok()
}

/// Runs `fut` on the executor and awaits it from any executor.
/// Whether the caller runs inside a tokio runtime.
pub(crate) fn in_tokio() -> bool {
    Handle::try_current().is_ok()
}

/// Awaits `fut` in the caller's task inside tokio, else on the background executor.
pub(crate) async fn on_runtime<T: Send + 'static>(
    fut: impl Future<Output = Result<T, cache_core::CacheError>> + Send + 'static,
) -> Result<T, cache_core::CacheError> {
    if in_tokio() {
        fut.await
    } else {
        run(fut)
            .await
            .unwrap_or_else(|| Err(cache_core::CacheError::backend("redis", "runtime stopped")))
    }
}

pub(crate) async fn run<T: Send + 'static>(
    fut: impl Future<Output = T> + Send + 'static,
) -> Option<T> {
    executor()?.handle.spawn(fut).await.ok()
}

/// Ends the tasks spawned through it when dropped (held by their owner).
pub(crate) struct Shutdown {
    tx: tokio::sync::watch::Sender<()>,
    handle: Handle,
}

impl Shutdown {
    /// `None` if the executor could not be started.
    pub(crate) fn new() -> Option<Self> {
        Some(Shutdown {
            tx: tokio::sync::watch::channel(()).0,
            handle: handle()?,
        })
    }

    /// The executor's handle.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns `fut` on the executor; it is dropped (at its next `.await`) once this
    /// `Shutdown` is.
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut rx = self.tx.subscribe();
        self.handle.spawn(async move {
            tokio::select! {
                () = fut => {}
                _ = rx.changed() => {}
            }
        });
    }
}
