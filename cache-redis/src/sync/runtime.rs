//! The background runtime of the synchronization tasks.
//!
//! One thread per process runs a current-thread tokio runtime that owns the subscriber,
//! publisher and tracking connections. Callers never block on it: they hand work over through
//! channels, so the blocking and async methods of the backends work the same inside and outside
//! an application's own tokio runtime.

use std::sync::OnceLock;

use tokio::runtime::Handle;

/// The handle of the process-wide background runtime, started on first use.
///
/// `None` only if the thread could not be started (the caller reports it as an error).
pub(crate) fn handle() -> Option<Handle> {
    static HANDLE: OnceLock<Option<Handle>> = OnceLock::new();
    HANDLE.get_or_init(start).clone()
}

fn start() -> Option<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("cache-redis-sync".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cache-redis: cannot build the sync runtime");
                    let _ = tx.send(None);
                    return;
                }
            };
            let _ = tx.send(Some(rt.handle().clone()));
            // Runs until the process exits; tasks are spawned through the handle.
            rt.block_on(std::future::pending::<()>());
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cache-redis: cannot start the sync thread");
        return None;
    }
    rx.recv().ok().flatten()
}
