//! Failed invalidations, retried in the background in the order they were made.
//!
//! An invalidation that cannot reach Redis is queued with a deadline: the longest ttl this
//! backend has used (after that, every entry it could have removed has expired), or the
//! builder's `invalidation_retry_limit` when entries without ttl exist. A task on the backend's
//! runtime thread applies the queue front to back, waiting with backoff while Redis is down.
//! While the queue is not empty, new invalidations join its tail (order is kept).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::backend::Inner;

/// What an invalidation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InvalidationKind {
    /// Entries by key text (`remove`).
    Keys,
    /// Dependencies (`invalidate`).
    Dependencies,
}

struct Pending {
    kind: InvalidationKind,
    names: Vec<String>,
    deadline: Instant,
}

#[derive(Default)]
pub(crate) struct RetryQueue {
    queue: Mutex<VecDeque<Pending>>,
    wake: Arc<Notify>,
}

impl RetryQueue {
    pub(crate) fn pending(&self) -> usize {
        self.queue.lock().len()
    }

    pub(crate) fn push(&self, inner: &Inner, kind: InvalidationKind, names: Vec<String>) {
        let ttl = inner.max_ttl_ms.load(Ordering::Relaxed);
        let horizon = if ttl == u64::MAX {
            inner.retry_limit
        } else {
            Duration::from_millis(ttl).min(inner.retry_limit)
        };
        inner.counters.queued.incr();
        self.queue.lock().push_back(Pending {
            kind,
            names,
            deadline: Instant::now() + horizon,
        });
        self.wake.notify_one();
    }
}

/// Starts the retry task on the backend's runtime thread.
pub(crate) fn start(inner: &Arc<Inner>) {
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let wake = inner.retry.wake.clone();
    inner.exec.handle().spawn(async move {
        let mut delay = Duration::from_millis(20);
        loop {
            let Some(inner) = weak.upgrade() else { return };
            let front = {
                let q = inner.retry.queue.lock();
                q.front().map(|p| (p.kind, p.names.clone(), p.deadline))
            };
            let Some((kind, names, deadline)) = front else {
                let wake = wake.notified();
                drop(inner);
                // re-check the queue periodically too (the backend may have been dropped)
                let _ = tokio::time::timeout(Duration::from_secs(1), wake).await;
                continue;
            };
            if Instant::now() >= deadline {
                inner.retry.queue.lock().pop_front();
                inner.counters.dropped.incr();
                tracing::warn!(
                    ?names,
                    "queued invalidation given up: its entries have expired"
                );
                continue;
            }
            match inner.apply_invalidation(kind, &names).await {
                Ok(()) => {
                    inner.retry.queue.lock().pop_front();
                    inner.counters.retried.incr();
                    tracing::info!(?names, "queued invalidation applied");
                    delay = Duration::from_millis(20);
                }
                Err(_) => {
                    drop(inner);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
            }
        }
    });
}
