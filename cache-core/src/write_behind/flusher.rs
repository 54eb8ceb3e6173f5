//! The flusher: one per process, it claims due writes of every registered writer, runs their
//! bodies (one key at a time, keys concurrently), retries failures with backoff and dead-letters
//! what keeps failing.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{counters, queue_of_writer, writers, Finish, QueuedWrite, Start, WriteQueue, Writer};

/// Writes claimed per writer and round.
const CLAIM_BATCH: usize = 256;
/// How often an idle flusher looks for due writes.
const POLL: Duration = Duration::from_millis(25);
/// First retry delay; it doubles per failure up to [`MAX_BACKOFF`].
const BASE_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a key another flusher is writing is left alone.
const BUSY_RETRY: Duration = Duration::from_millis(20);

/// The running flusher (a task on a runtime, or a thread of its own).
enum Running {
    Task(tokio::task::JoinHandle<()>),
    Thread(std::thread::JoinHandle<()>),
}

impl Running {
    fn alive(&self) -> bool {
        match self {
            Running::Task(h) => !h.is_finished(),
            Running::Thread(h) => !h.is_finished(),
        }
    }
}

static FLUSHER: Mutex<Option<Running>> = Mutex::new(None);

/// Starts this process's flusher if it is not running: on the current tokio runtime if there
/// is one, else on a thread of its own. Writes are flushed by every process that has the
/// writer fns and runs a flusher; a process that queues writes starts it by itself, and one
/// that should only flush (a worker) calls this once.
///
/// ```
/// cache_core::write_behind::start_flusher();
/// ```
pub fn start_flusher() {
    let mut f = FLUSHER.lock();
    if f.as_ref().is_some_and(Running::alive) {
        return;
    }
    if writers().next().is_none() {
        return;
    }
    *f = match tokio::runtime::Handle::try_current() {
        Ok(h) => Some(Running::Task(h.spawn(run_forever()))),
        Err(_) => std::thread::Builder::new()
            .name("cache-write-behind".into())
            .spawn(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(run_forever()),
                    Err(e) => tracing::error!(error = %e, "write-behind: cannot start the flusher runtime"),
                }
            })
            .map_err(|e| tracing::error!(error = %e, "write-behind: cannot start the flusher"))
            .ok()
            .map(Running::Thread),
    };
}

async fn run_forever() {
    let mut measured = std::time::Instant::now();
    loop {
        if round(false).await == 0 {
            tokio::time::sleep(POLL).await;
        }
        // the depth gauges of `last_stats` (the metrics export)
        if measured.elapsed() >= Duration::from_secs(1) {
            measured = std::time::Instant::now();
            let _ = super::stats().await;
        }
    }
}

/// Runs every queued write now, without waiting for `flush_after`, until no write is left
/// (written, superseded or dead-lettered; failures keep their backoff). Call it on a graceful
/// shutdown: the in-process queue does not survive the process.
///
/// ```
/// # async fn demo() {
/// cache_core::write_behind::flush_writes().await;
/// # }
/// ```
pub async fn flush_writes() {
    start_flusher();
    loop {
        let ran = round(true).await;
        let mut left = 0;
        for w in writers() {
            left += queue_of_writer(w)
                .depth(w.name)
                .await
                .map_or(0, |d| d.pending);
        }
        if left == 0 {
            return;
        }
        if ran == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// [`flush_writes`], blocking (on a runtime of its own; do not call it from async code).
///
/// ```
/// cache_core::write_behind::flush_writes_blocking();
/// ```
pub fn flush_writes_blocking() {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(flush_writes()),
        Err(e) => tracing::error!(error = %e, "write-behind: cannot flush"),
    }
}

/// One pass over every writer: claims due writes and runs them. Returns how many it claimed.
async fn round(now: bool) -> usize {
    let mut claimed = 0;
    for w in writers() {
        let queue = queue_of_writer(w);
        let delay = if now { Duration::ZERO } else { w.flush_after };
        let writes = match queue.claim(w.name, delay, CLAIM_BATCH).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(writer = w.name, error = %e, "write-behind: cannot read the queue");
                continue;
            }
        };
        claimed += writes.len();
        // per key in sequence order; keys concurrently, each on a task of its own (a panicking
        // body ends its task, not the flusher)
        let mut by_key: BTreeMap<String, Vec<QueuedWrite>> = BTreeMap::new();
        for write in writes {
            by_key.entry(write.key.clone()).or_default().push(write);
        }
        let mut tasks = tokio::task::JoinSet::new();
        for (_, mut list) in by_key {
            list.sort_by_key(|x| x.seq);
            let queue = queue.clone();
            tasks.spawn(async move {
                for write in list {
                    run_one(w, &queue, write).await;
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
    claimed
}

fn backoff(attempts: u32) -> Duration {
    let exp = BASE_BACKOFF
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    // ±25 % jitter, so writes that failed together do not retry together
    exp * 3 / 4 + crate::jitter::random_below(exp / 2)
}

async fn run_one(w: &'static Writer, queue: &Arc<dyn WriteQueue>, write: QueuedWrite) {
    match queue.start(&write, w.coalesce).await {
        Ok(Start::Run) => {}
        Ok(Start::Superseded) => {
            counters().coalesced.fetch_add(1, Relaxed);
            finish(queue, &write, Finish::Superseded).await;
            return;
        }
        Ok(Start::Busy) => {
            finish(queue, &write, Finish::Busy { after: BUSY_RETRY }).await;
            return;
        }
        Err(e) => {
            tracing::warn!(writer = w.name, error = %e, "write-behind: cannot start a write");
            return;
        }
    }
    // the body on a task of its own: a panic is a failure of this write, nothing more; the
    // key's lock is renewed while it runs (a lock that expired would let another flusher run
    // a body of the same key)
    let mut body = tokio::spawn((w.run)(write.args.clone()));
    let renewal = queue.lock_renewal();
    let joined = loop {
        match renewal {
            Some(every) => tokio::select! {
                r = &mut body => break r,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = queue.renew(&write).await {
                        tracing::warn!(writer = w.name, error = %e, "write-behind: cannot renew a key lock");
                    }
                }
            },
            None => break (&mut body).await,
        }
    };
    let result = match joined {
        Ok(r) => r,
        Err(e) => Err(format!("the body panicked: {e}")),
    };
    let how = match result {
        Ok(()) => {
            counters().flushed.fetch_add(1, Relaxed);
            finish(queue, &write, Finish::Done).await;
            if queue.name() == "memory" {
                // an in-process queue is this process's alone: other nodes sharing entries
                // (synchronized local caches) may have cached the data store's older value
                // meanwhile; the invalidation reaches them (and costs this node one miss)
                (w.evict)(write.args.clone()).await;
            }
            return;
        }
        Err(error) => {
            let attempts = write.attempts + 1;
            if attempts >= w.max_attempts {
                tracing::error!(
                    writer = w.name,
                    key = write.key,
                    attempts,
                    error,
                    "write-behind: giving up on a write; it is kept in the dead letters"
                );
                counters().dead_lettered.fetch_add(1, Relaxed);
                let evict = (w.evict)(write.args.clone());
                evict.await;
                Finish::Dead { error, attempts }
            } else {
                tracing::warn!(
                    writer = w.name,
                    key = write.key,
                    attempts,
                    error,
                    "write-behind: a write failed; retrying"
                );
                counters().retried.fetch_add(1, Relaxed);
                Finish::Retry {
                    after: backoff(attempts),
                    attempts,
                }
            }
        }
    };
    finish(queue, &write, how).await;
}

async fn finish(queue: &Arc<dyn WriteQueue>, write: &QueuedWrite, how: Finish) {
    if let Err(e) = queue.finish(write, how).await {
        tracing::warn!(writer = write.writer, error = %e, "write-behind: cannot record a write's end");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        for a in 1..40 {
            let b = backoff(a);
            let exp = BASE_BACKOFF
                .saturating_mul(1u32 << (a - 1).min(16))
                .min(MAX_BACKOFF);
            assert!(b >= exp * 3 / 4 && b <= exp * 5 / 4, "{a}: {b:?}");
        }
    }
}
