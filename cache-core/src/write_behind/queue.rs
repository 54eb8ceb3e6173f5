//! What a write-behind queue stores and does: the [`WriteQueue`] trait, implemented in process
//! by [`MemoryQueue`](super::MemoryQueue) and durably by `cache-redis` (Redis Streams).
//!
//! A queue holds, per writer (one `#[write_behind]` fn) and target key:
//! * the queued writes ([`QueuedWrite`]), each with a per-key sequence number the queue assigns;
//! * the key's *latest* sequence (the newest write queued) and its *done* sequence (the newest
//!   write whose body returned `Ok`): a write is run only if it is newer than *done*, so an
//!   older value is never written over a newer one, and with coalescing only if it is the
//!   latest;
//! * the key's *pending value* (the newest queued value, read by a miss of the target so that
//!   reads see the write until it is flushed);
//! * a per-key lock held while a body runs (one body per key at a time);
//! * the dead letters: writes that failed `max_attempts` times.

use std::time::Duration;

use crate::backend::BoxFuture;
use crate::error::CacheError;

/// One queued write, as a flusher claims it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedWrite {
    /// The queue's id of this record (a stream id on Redis).
    pub id: String,
    /// The writer: the `#[write_behind]` fn's path (`module::name`).
    pub writer: String,
    /// The target entry's key text (what order, coalescing and the lock are per).
    pub key: String,
    /// The key's sequence number of this write (increasing per writer and key).
    pub seq: u64,
    /// Body runs that failed so far.
    pub attempts: u32,
    /// The write fn's arguments, MessagePack.
    pub args: Vec<u8>,
    /// When the write was queued (unix ms).
    pub queued_at_ms: u64,
}

/// A write that failed `max_attempts` times, kept for [`WriteQueue::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The write.
    pub write: QueuedWrite,
    /// The last error of its body.
    pub error: String,
}

/// What [`WriteQueue::start`] decided about a claimed write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Run the body; the key's lock is held until [`WriteQueue::finish`].
    Run,
    /// A newer write of the key is queued (coalescing) or already done: drop this one.
    Superseded,
    /// Another flusher is running a body of this key: try again later.
    Busy,
}

/// How a claimed write ended, for [`WriteQueue::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The body returned `Ok`: acknowledge, advance the key's done sequence, drop the pending
    /// value if it is this write's.
    Done,
    /// Dropped by [`Start::Superseded`]: acknowledge.
    Superseded,
    /// Told [`Start::Busy`]: claimable again no earlier than `after` from now; its attempts
    /// and the key's lock (another write's) untouched.
    Busy {
        /// Delay before it is claimable again.
        after: Duration,
    },
    /// Run again no earlier than `after` from now, with `attempts` failures so far.
    Retry {
        /// Delay before the next attempt.
        after: Duration,
        /// Failures so far (counts toward `max_attempts`).
        attempts: u32,
    },
    /// Failed `max_attempts` times: move to the dead letters (and drop the pending value if it
    /// is this write's).
    Dead {
        /// The last error.
        error: String,
        /// Failed runs (`max_attempts`).
        attempts: u32,
    },
}

/// How many writes wait, and for how long the oldest has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depth {
    /// Writes queued and not yet done (including those being retried).
    pub pending: u64,
    /// Age of the oldest of them.
    pub oldest: Option<Duration>,
}

/// A queue of writes for the write-behind flusher. Object-safe; `cache-redis` implements it on
/// Redis Streams, [`MemoryQueue`](super::MemoryQueue) in process.
///
/// ```
/// use cache_core::write_behind::{MemoryQueue, WriteQueue};
/// let q = MemoryQueue::new(100);
/// q.push_blocking("app::save", "app::get(1)", vec![1], vec![2]).unwrap();
/// assert_eq!(q.pending_blocking("app::save", "app::get(1)").unwrap(), Some(vec![2]));
/// ```
pub trait WriteQueue: Send + Sync + 'static {
    /// A short name for logs (`memory`, `redis`).
    fn name(&self) -> &str;

    /// Queues a write of `key` by `writer` with its arguments, and makes `value` the key's
    /// pending value. An `Err` means the write is *not* queued (the caller runs it inline).
    fn push<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CacheError>>;
    /// [`push`](Self::push), blocking.
    fn push_blocking(
        &self,
        writer: &str,
        key: &str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), CacheError>;

    /// The key's pending value (MessagePack of the target's value), if a write of it waits.
    fn pending<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>>;
    /// [`pending`](Self::pending), blocking.
    fn pending_blocking(&self, writer: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError>;

    /// Claims up to `max` writes of `writer` that are due: queued at least `delay` ago (a
    /// retry: its backoff passed), including writes another flusher claimed and left
    /// unacknowledged for longer than the queue's claim timeout (it crashed).
    fn claim<'a>(
        &'a self,
        writer: &'a str,
        delay: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<QueuedWrite>, CacheError>>;

    /// Decides whether a claimed write runs (taking the key's lock) or is dropped.
    fn start<'a>(
        &'a self,
        write: &'a QueuedWrite,
        coalesce: bool,
    ) -> BoxFuture<'a, Result<Start, CacheError>>;

    /// How often a running body must renew its key's lock ([`renew`](Self::renew)); `None`
    /// (the default): the lock does not expire.
    fn lock_renewal(&self) -> Option<Duration> {
        None
    }

    /// Keeps the key lock that `write` holds (since [`start`](Self::start) answered
    /// [`Start::Run`]) from expiring while its body runs. Default: nothing to do.
    fn renew<'a>(&'a self, write: &'a QueuedWrite) -> BoxFuture<'a, Result<(), CacheError>> {
        let _ = write;
        Box::pin(std::future::ready(Ok(())))
    }

    /// Records how a claimed write ended (and releases the key's lock).
    fn finish<'a>(
        &'a self,
        write: &'a QueuedWrite,
        how: Finish,
    ) -> BoxFuture<'a, Result<(), CacheError>>;

    /// The dead letters of `writer`.
    fn dead_letters<'a>(
        &'a self,
        writer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, CacheError>>;

    /// Queues dead letter `id` of `writer` again (attempts reset). `Ok(false)`: no such letter.
    fn replay<'a>(
        &'a self,
        writer: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, CacheError>>;

    /// Writes of `writer` not yet done.
    fn depth<'a>(&'a self, writer: &'a str) -> BoxFuture<'a, Result<Depth, CacheError>>;
}
