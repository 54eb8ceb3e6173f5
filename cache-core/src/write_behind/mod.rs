//! Write-behind: `#[write_behind(get_counter(id), value = counter)]` on the fn that writes the
//! data store stores the value as the target's cache entry at once, queues the write, and
//! returns; a background flusher runs the body later.
//!
//! * **Queue.** The installed backend's ([`Backend::write_queue`](crate::Backend::write_queue())):
//!   durable on Redis (`cache-redis`: Redis Streams), otherwise the in-process
//!   [`MemoryQueue`] (bounded; a crash loses its pending writes, so call [`flush_writes`] on a
//!   graceful shutdown). A write that cannot be queued (full, unreachable) runs inline: nothing
//!   is dropped.
//! * **Order.** Per target key, a write runs only if it is newer than the newest one already
//!   written, so an older value never lands over a newer one; with `coalesce`, only the newest
//!   queued write of a key runs. One body per key runs at a time.
//! * **Failures.** A failing (or panicking) body is retried with exponential backoff and jitter
//!   (100 ms doubling, at most 30 s); after `max_attempts` the write goes to the dead letters
//!   ([`dead_letters`], [`replay`]) and the target entry is invalidated, so readers see the
//!   data store again.
//! * **Read-your-writes.** Until a write is flushed, a miss of the target returns the queued
//!   value (on every node sharing the queue) instead of running the target's body.
//! * With caching switched off ([`registry::set_enabled`](crate::registry::set_enabled)), the
//!   write runs inline.
//!
//! ```
//! # async fn demo() {
//! // at shutdown: every queued write written (or dead-lettered)
//! cache_core::write_behind::flush_writes().await;
//! assert_eq!(cache_core::write_behind::stats().await.pending, 0);
//! # }
//! ```

mod flusher;
mod memory;
mod queue;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub use flusher::{flush_writes, flush_writes_blocking, start_flusher};
pub use memory::MemoryQueue;
pub use queue::{DeadLetter, Depth, Finish, QueuedWrite, Start, WriteQueue};

use crate::backend::{Backend, BoxFuture};
use crate::error::CacheError;
use crate::runtime::{EntryRef, FnCache, FnRef};
use crate::value::{self, Cacheable};

/// How many writes the in-process queue holds before writes run inline.
pub const MEMORY_QUEUE_CAPACITY: usize = 100_000;

/// One `#[write_behind]` fn, as the macro registers it (collected at startup, so a process can
/// flush writes another process queued before calling the fn itself).
#[derive(Debug)]
pub struct Writer {
    /// The fn's path (`module::name`): the queue's name for its writes.
    pub name: &'static str,
    /// Runs the body with the arguments of a queued write (MessagePack); `Err` carries the
    /// body's error, formatted.
    pub run: fn(Vec<u8>) -> BoxFuture<'static, Result<(), String>>,
    /// Invalidates the target entry of a queued write (used when it is dead-lettered).
    pub evict: fn(Vec<u8>) -> BoxFuture<'static, ()>,
    /// The target cached fn.
    pub target: fn() -> FnRef,
    /// How long a write waits before it is flushed (the coalescing window).
    pub flush_after: Duration,
    /// Failed runs before a write is dead-lettered.
    pub max_attempts: u32,
    /// Of several queued writes of one key, only the newest runs.
    pub coalesce: bool,
}

inventory::collect!(Writer);

/// Every registered writer.
pub(crate) fn writers() -> impl Iterator<Item = &'static Writer> {
    inventory::iter::<Writer>.into_iter()
}

/// The writer named `name`.
pub(crate) fn writer(name: &str) -> Option<&'static Writer> {
    writers().find(|w| w.name == name)
}

/// The writers whose target is `cache` (what a miss of it consults).
pub(crate) fn writers_of(cache: &FnCache) -> Vec<&'static Writer> {
    writers()
        .filter(|w| std::ptr::eq((w.target)().cache_ptr(), cache))
        .collect()
}

fn memory_queue() -> Arc<dyn WriteQueue> {
    static Q: OnceLock<Arc<MemoryQueue>> = OnceLock::new();
    Q.get_or_init(|| Arc::new(MemoryQueue::new(MEMORY_QUEUE_CAPACITY)))
        .clone()
}

/// The queue writes to entries of `backend` go to.
pub(crate) fn queue_of(backend: &dyn Backend) -> Arc<dyn WriteQueue> {
    backend.write_queue().unwrap_or_else(memory_queue)
}

/// The queue of `writer` (its target's backend's).
pub(crate) fn queue_of_writer(writer: &Writer) -> Arc<dyn WriteQueue> {
    queue_of(&*(writer.target)().backend())
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    inline: AtomicU64,
    flushed: AtomicU64,
    retried: AtomicU64,
    coalesced: AtomicU64,
    dead_lettered: AtomicU64,
    /// The depth last measured (by [`stats`] or the flusher, about once a second).
    depth: AtomicU64,
    /// The oldest pending write's age last measured, ms + 1 (0: none).
    oldest_ms: AtomicU64,
}

fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(Counters::default)
}

/// Write-behind counters of this process, and the queues' depth.
///
/// ```
/// let s = cache_core::write_behind::WriteStats::default();
/// assert_eq!(s.queued, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    /// Writes queued by this process.
    pub queued: u64,
    /// Writes run inline because they could not be queued.
    pub inline: u64,
    /// Writes whose body returned `Ok` in this process's flusher.
    pub flushed: u64,
    /// Failed runs scheduled again.
    pub retried: u64,
    /// Writes dropped because a newer write of their key ran or was queued.
    pub coalesced: u64,
    /// Writes moved to the dead letters.
    pub dead_lettered: u64,
    /// Writes waiting in the queues now (every process's, on a shared queue).
    pub pending: u64,
    /// Age of the oldest waiting write, in milliseconds.
    pub oldest_pending_ms: Option<u64>,
}

/// The write-behind counters and the queues' depth now.
///
/// ```
/// # async fn demo() {
/// let s = cache_core::write_behind::stats().await;
/// println!("{} writes wait", s.pending);
/// # }
/// ```
pub async fn stats() -> WriteStats {
    let mut s = WriteStats {
        pending: 0,
        oldest_pending_ms: None,
        ..last_stats()
    };
    for w in writers() {
        if let Ok(d) = queue_of_writer(w).depth(w.name).await {
            s.pending += d.pending;
            if let Some(age) = d.oldest {
                let ms = age.as_millis() as u64;
                s.oldest_pending_ms = Some(s.oldest_pending_ms.map_or(ms, |o| o.max(ms)));
            }
        }
    }
    let c = counters();
    c.depth.store(s.pending, Relaxed);
    c.oldest_ms
        .store(s.oldest_pending_ms.map_or(0, |ms| ms + 1), Relaxed);
    s
}

/// The counters now, with the queue depth as last measured (by [`stats`], or by the flusher
/// about once a second): what the `metrics` export publishes without touching a queue.
///
/// ```
/// let s = cache_core::write_behind::last_stats();
/// assert_eq!(s.dead_lettered, 0);
/// ```
pub fn last_stats() -> WriteStats {
    let c = counters();
    let oldest = c.oldest_ms.load(Relaxed);
    WriteStats {
        queued: c.queued.load(Relaxed),
        inline: c.inline.load(Relaxed),
        flushed: c.flushed.load(Relaxed),
        retried: c.retried.load(Relaxed),
        coalesced: c.coalesced.load(Relaxed),
        dead_lettered: c.dead_lettered.load(Relaxed),
        pending: c.depth.load(Relaxed),
        oldest_pending_ms: oldest.checked_sub(1),
    }
}

/// The dead letters of every writer (writes that failed `max_attempts` times).
///
/// ```
/// # async fn demo() {
/// for d in cache_core::write_behind::dead_letters().await {
///     eprintln!("{} {}: {}", d.write.writer, d.write.key, d.error);
/// }
/// # }
/// ```
pub async fn dead_letters() -> Vec<DeadLetter> {
    let mut out = Vec::new();
    for w in writers() {
        match queue_of_writer(w).dead_letters(w.name).await {
            Ok(d) => out.extend(d),
            Err(e) => tracing::warn!(writer = w.name, error = %e, "cannot list dead letters"),
        }
    }
    out
}

/// Queues a dead letter again (its attempts start over). `Ok(false)`: no such letter.
///
/// ```
/// # async fn demo() -> Result<(), cache_core::CacheError> {
/// for d in cache_core::write_behind::dead_letters().await {
///     cache_core::write_behind::replay(&d).await?;
/// }
/// # Ok(()) }
/// ```
pub async fn replay(letter: &DeadLetter) -> Result<bool, CacheError> {
    let Some(w) = writer(&letter.write.writer) else {
        return Ok(false);
    };
    let done = queue_of_writer(w).replay(w.name, &letter.write.id).await?;
    if done {
        start_flusher();
    }
    Ok(done)
}

/// What a write sends to the queue: its arguments and value encoded, or `None` when it is not
/// to be queued (caching switched off: it runs inline, as every cached fn runs its body; or it
/// does not encode).
fn prepare<V: Cacheable, A: serde::Serialize>(
    writer: &'static Writer,
    value: &V,
    args: &A,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if !crate::registry::is_enabled() {
        return None;
    }
    match value::encode(args).and_then(|a| Ok((a, value::encode(value)?))) {
        Ok(v) => Some(v),
        Err(e) => {
            not_queued(writer, &e);
            None
        }
    }
}

/// After the queue took the write (`pushed`) and the entry was stored (`put`): `true` when queued.
fn settle(
    writer: &'static Writer,
    pushed: Result<(), CacheError>,
    put: Result<(), CacheError>,
) -> bool {
    if let Err(e) = pushed {
        return not_queued(writer, &e);
    }
    queued(writer);
    if let Err(e) = put {
        tracing::debug!(writer = writer.name, error = %e, "write-behind: cannot store the entry");
    }
    true
}

/// What the generated write fn does: stores `value` as `entry`, queues the write. `true`: queued
/// (the caller returns at once); `false`: not queued (the caller runs the body inline).
#[doc(hidden)]
pub async fn queue_write_async<V: Cacheable, A: serde::Serialize>(
    writer: &'static Writer,
    entry: &EntryRef<V>,
    value: &V,
    args: &A,
) -> bool {
    let Some((args, bytes)) = prepare(writer, value, args) else {
        return false;
    };
    let queue = queue_of(&*entry.cache_ref().backend());
    // the queue and the cache at once (one round trip less on Redis); a write that could not
    // be queued takes its entry back out, since the body that now runs inline may fail
    let (pushed, put) = tokio::join!(
        queue.push(writer.name, entry.key().text(), args, bytes),
        entry.put(value.clone())
    );
    if pushed.is_err() {
        let _ = entry.invalidate().await;
    }
    settle(writer, pushed, put)
}

/// [`queue_write_async`], blocking (queued first, then stored).
#[doc(hidden)]
pub fn queue_write_blocking<V: Cacheable, A: serde::Serialize>(
    writer: &'static Writer,
    entry: &EntryRef<V>,
    value: &V,
    args: &A,
) -> bool {
    let Some((args, bytes)) = prepare(writer, value, args) else {
        return false;
    };
    let queue = queue_of(&*entry.cache_ref().backend());
    let pushed = queue.push_blocking(writer.name, entry.key().text(), args, bytes);
    let put = match pushed {
        Ok(()) => entry.put_blocking(value.clone()),
        Err(_) => Ok(()),
    };
    settle(writer, pushed, put)
}

fn queued(_writer: &'static Writer) {
    counters().queued.fetch_add(1, Relaxed);
    start_flusher();
}

fn not_queued(writer: &'static Writer, e: &CacheError) -> bool {
    counters().inline.fetch_add(1, Relaxed);
    tracing::warn!(writer = writer.name, error = %e, "write-behind: cannot queue the write; running it now");
    false
}

fn decode_args<A: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<A, String> {
    value::decode(bytes).map_err(|e| e.to_string())
}

/// What a `#[write_behind]` body returns: `()` or `Result<(), E>` with `E: Debug` (the error,
/// formatted, is kept with a failed write).
///
/// ```
/// use cache_core::write_behind::WriteOutcome;
/// assert_eq!(Err::<(), _>("down").into_write_result(), Err("\"down\"".to_string()));
/// ```
#[diagnostic::on_unimplemented(
    message = "a `#[write_behind]` fn returns `()` or `Result<(), E>` with `E: Debug`, not `{Self}`"
)]
pub trait WriteOutcome {
    /// `Ok(())`, or the error formatted with `Debug`.
    fn into_write_result(self) -> Result<(), String>;
}

impl WriteOutcome for () {
    fn into_write_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: std::fmt::Debug> WriteOutcome for Result<(), E> {
    fn into_write_result(self) -> Result<(), String> {
        self.map_err(|e| format!("{e:?}"))
    }
}

/// Runs an async write-behind body with the decoded arguments of a queued write (what the
/// generated `Writer::run` does).
#[doc(hidden)]
pub fn run_write<A, F, Fut>(args: Vec<u8>, body: F) -> BoxFuture<'static, Result<(), String>>
where
    A: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(A) -> Fut + Send + 'static,
    Fut: std::future::Future + Send + 'static,
    Fut::Output: WriteOutcome,
{
    Box::pin(async move {
        let a: A = decode_args(&args)?;
        body(a).await.into_write_result()
    })
}

/// [`run_write`] for a sync body (on tokio's blocking pool; a panic is an `Err`).
#[doc(hidden)]
pub fn run_write_blocking<A, F, R>(args: Vec<u8>, body: F) -> BoxFuture<'static, Result<(), String>>
where
    A: serde::de::DeserializeOwned + Send + 'static,
    F: FnOnce(A) -> R + Send + 'static,
    R: WriteOutcome,
{
    Box::pin(async move {
        let a: A = decode_args(&args)?;
        match tokio::task::spawn_blocking(move || body(a).into_write_result()).await {
            Ok(r) => r,
            Err(e) => Err(format!("the body panicked: {e}")),
        }
    })
}

/// Invalidates the target entry of a queued write (what the generated `Writer::evict` does).
#[doc(hidden)]
pub fn evict_write<A, V, F>(args: Vec<u8>, entry: F) -> BoxFuture<'static, ()>
where
    A: serde::de::DeserializeOwned + Send + 'static,
    V: Cacheable,
    F: FnOnce(A) -> EntryRef<V> + Send + 'static,
{
    Box::pin(async move {
        if let Ok(a) = decode_args::<A>(&args) {
            let _ = entry(a).invalidate().await;
        }
    })
}

/// The newest queued value of `key` among `writers` (a miss of their target reads it).
/// Errors read as none (the body runs: fail-open).
pub(crate) async fn pending_async(
    writers: &[&'static Writer],
    backend: &dyn Backend,
    key: &str,
) -> Option<Vec<u8>> {
    let queue = queue_of(backend);
    for w in writers {
        match queue.pending(w.name, key).await {
            Ok(Some(v)) => return Some(v),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(writer = w.name, error = %e, "write-behind: cannot read the queue")
            }
        }
    }
    None
}

/// [`pending_async`], blocking.
pub(crate) fn pending_blocking(
    writers: &[&'static Writer],
    backend: &dyn Backend,
    key: &str,
) -> Option<Vec<u8>> {
    let queue = queue_of(backend);
    for w in writers {
        match queue.pending_blocking(w.name, key) {
            Ok(Some(v)) => return Some(v),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(writer = w.name, error = %e, "write-behind: cannot read the queue")
            }
        }
    }
    None
}
