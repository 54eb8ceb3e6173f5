//! Failed invalidations, retried in the background in the order they were made.
//!
//! An invalidation that cannot reach Redis is queued with a deadline: the longest ttl this
//! backend has used (after that, every entry it could have removed has expired), or the
//! builder's `invalidation_retry_limit` when entries without ttl exist. A task on the backend's
//! background executor applies the queue front to back, waiting with backoff while Redis is down.
//! While the queue is not empty, new invalidations join its tail (order is kept).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::client::RedisClient;
use crate::error::RedisCacheError;
use crate::stats::Counters;

/// Applies one invalidation (the protocol's, given by the backend); `None` once the backend is
/// gone.
pub(crate) type Apply = Arc<
    dyn Fn(
            InvalidationKind,
            Vec<String>,
        ) -> Pin<Box<dyn Future<Output = Option<Result<(), RedisCacheError>>> + Send>>
        + Send
        + Sync,
>;

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
    /// Told when the invalidation is applied (dropped unsent when it is given up).
    applied: tokio::sync::oneshot::Sender<()>,
}

struct Queue {
    pending: Mutex<VecDeque<Pending>>,
    wake: Arc<Notify>,
    counters: Arc<Counters>,
}

/// The queue of failed invalidations and its task (which ends with the client).
pub(crate) struct RetryQueue {
    queue: Arc<Queue>,
}

impl RetryQueue {
    /// Starts the retry task on `client`'s executor; it applies queued invalidations with
    /// `apply`.
    pub(crate) fn start(client: &RedisClient, counters: Arc<Counters>, apply: Apply) -> Self {
        let queue = Arc::new(Queue {
            pending: Mutex::new(VecDeque::new()),
            wake: Arc::new(Notify::new()),
            counters,
        });
        client.spawn(run(Arc::downgrade(&queue), apply));
        RetryQueue { queue }
    }

    pub(crate) fn pending(&self) -> usize {
        self.queue.pending.lock().len()
    }

    /// Queues an invalidation to retry for at most `horizon`; the receiver hears when it is
    /// applied (an error when it is given up).
    pub(crate) fn push(
        &self,
        kind: InvalidationKind,
        names: Vec<String>,
        horizon: Duration,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (applied, heard) = tokio::sync::oneshot::channel();
        self.queue.counters.queued.incr();
        self.queue.pending.lock().push_back(Pending {
            kind,
            names,
            deadline: Instant::now() + horizon,
            applied,
        });
        self.queue.wake.notify_one();
        heard
    }
}

async fn run(weak: Weak<Queue>, apply: Apply) {
    let Some(wake) = weak.upgrade().map(|q| q.wake.clone()) else {
        return;
    };
    let mut delay = Duration::from_millis(20);
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let front = {
            let q = inner.pending.lock();
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
            inner.pending.lock().pop_front();
            inner.counters.dropped.incr();
            tracing::warn!(
                ?names,
                "queued invalidation given up: its entries have expired"
            );
            continue;
        }
        match apply(kind, names.clone()).await {
            None => return,
            Some(Ok(())) => {
                if let Some(done) = inner.pending.lock().pop_front() {
                    let _ = done.applied.send(());
                }
                inner.counters.retried.incr();
                tracing::info!(?names, "queued invalidation applied");
                delay = Duration::from_millis(20);
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, ?names, "queued invalidation still failing; retrying");
                drop(inner);
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_millis(500));
            }
        }
    }
}
