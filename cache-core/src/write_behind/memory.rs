//! The in-process write-behind queue: the embedded default. Bounded; a crash loses what it
//! holds (flush it on shutdown with [`flush_writes`](super::flush_writes)).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::queue::{DeadLetter, Depth, Finish, QueuedWrite, Start, WriteQueue};
use crate::backend::BoxFuture;
use crate::error::CacheError;

/// A claimed write not finished within this long is claimable again (its flusher died).
const RECLAIM_AFTER: Duration = Duration::from_secs(60);

struct Record {
    write: QueuedWrite,
    queued: Instant,
    not_before: Instant,
    claimed_at: Option<Instant>,
}

#[derive(Default)]
struct KeyState {
    latest: u64,
    done: u64,
    /// Records of this key in the queue.
    queued: u32,
    /// Dead letters of this key (the state is kept while there are any, so a replay is
    /// compared with the right `done`).
    dead: u32,
    pending: Option<(u64, Vec<u8>)>,
    /// The write (its id) running a body of this key.
    locked: Option<String>,
}

#[derive(Default)]
struct Writer {
    records: BTreeMap<u64, Record>,
    keys: HashMap<String, KeyState>,
    dead: Vec<DeadLetter>,
}

impl Record {
    /// Claimable again no earlier than `after` from now.
    fn pause(&mut self, after: Duration) {
        self.not_before = Instant::now() + after;
        self.claimed_at = None;
    }
}

impl KeyState {
    /// Releases the key's lock if `id` holds it.
    fn unlock(&mut self, id: &str) {
        if self.locked.as_deref() == Some(id) {
            self.locked = None;
        }
    }

    /// Drops the pending value if it is write `seq`'s or older (that write is done or dead).
    fn drop_pending_upto(&mut self, seq: u64) {
        if self.pending.as_ref().is_some_and(|(s, _)| *s <= seq) {
            self.pending = None;
        }
    }
}

impl Writer {
    /// The queued record of `write`, if it is still queued.
    fn record(&mut self, write: &QueuedWrite) -> Option<&mut Record> {
        let id: u64 = write.id.parse().ok()?;
        self.records.get_mut(&id)
    }

    /// Drops the state of a key nothing refers to any more.
    fn tidy(&mut self, key: &str) {
        if let Some(k) = self.keys.get(key) {
            if k.queued == 0 && k.dead == 0 && k.locked.is_none() && k.pending.is_none() {
                self.keys.remove(key);
            }
        }
    }
}

#[derive(Default)]
struct State {
    writers: HashMap<String, Writer>,
    next_id: u64,
    len: usize,
}

/// The in-process [`WriteQueue`]: at most `capacity` writes wait; a push beyond that fails
/// (the caller then runs the write inline, so nothing is dropped).
///
/// ```
/// use cache_core::write_behind::{MemoryQueue, WriteQueue};
/// let q = MemoryQueue::new(1);
/// q.push_blocking("w", "k", vec![], vec![]).unwrap();
/// assert!(q.push_blocking("w", "k", vec![], vec![]).is_err()); // full
/// ```
pub struct MemoryQueue {
    capacity: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("capacity", &self.capacity)
            .field("len", &self.state.lock().len)
            .finish()
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl MemoryQueue {
    /// A queue holding at most `capacity` writes.
    pub fn new(capacity: usize) -> Self {
        MemoryQueue {
            capacity,
            state: Mutex::new(State::default()),
        }
    }

    fn push_now(
        &self,
        writer: &str,
        key: &str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), CacheError> {
        let mut s = self.state.lock();
        if s.len >= self.capacity {
            return Err(CacheError::backend(
                "write-behind memory queue",
                format!("full ({} writes wait)", self.capacity),
            ));
        }
        s.len += 1;
        s.next_id += 1;
        let id = s.next_id;
        let w = s.writers.entry(writer.to_string()).or_default();
        let k = w.keys.entry(key.to_string()).or_default();
        k.latest += 1;
        k.queued += 1;
        let seq = k.latest;
        k.pending = Some((seq, value));
        let now = Instant::now();
        w.records.insert(
            id,
            Record {
                write: QueuedWrite {
                    id: id.to_string(),
                    writer: writer.to_string(),
                    key: key.to_string(),
                    seq,
                    attempts: 0,
                    args,
                    queued_at_ms: unix_ms(),
                },
                queued: now,
                not_before: now,
                claimed_at: None,
            },
        );
        Ok(())
    }

    fn pending_now(&self, writer: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.state.lock();
        let k = s.writers.get(writer)?.keys.get(key)?;
        k.pending.as_ref().map(|(_, v)| v.clone())
    }

    /// Removes a record, returning it.
    fn take(s: &mut State, write: &QueuedWrite) -> Option<Record> {
        let id: u64 = write.id.parse().ok()?;
        let w = s.writers.get_mut(&write.writer)?;
        let r = w.records.remove(&id)?;
        if let Some(k) = w.keys.get_mut(&write.key) {
            k.queued = k.queued.saturating_sub(1);
        }
        s.len -= 1;
        Some(r)
    }
}

impl WriteQueue for MemoryQueue {
    fn name(&self) -> &str {
        "memory"
    }

    fn push<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move { self.push_now(writer, key, args, value) })
    }

    fn push_blocking(
        &self,
        writer: &str,
        key: &str,
        args: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), CacheError> {
        self.push_now(writer, key, args, value)
    }

    fn pending<'a>(
        &'a self,
        writer: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, CacheError>> {
        Box::pin(async move { Ok(self.pending_now(writer, key)) })
    }

    fn pending_blocking(&self, writer: &str, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        Ok(self.pending_now(writer, key))
    }

    fn claim<'a>(
        &'a self,
        writer: &'a str,
        delay: Duration,
        max: usize,
    ) -> BoxFuture<'a, Result<Vec<QueuedWrite>, CacheError>> {
        Box::pin(async move {
            let mut s = self.state.lock();
            let Some(w) = s.writers.get_mut(writer) else {
                return Ok(Vec::new());
            };
            let now = Instant::now();
            let mut out = Vec::new();
            for r in w.records.values_mut() {
                if out.len() >= max {
                    break;
                }
                let free = r
                    .claimed_at
                    .map_or(true, |at| now.duration_since(at) >= RECLAIM_AFTER);
                // a first attempt waits `delay` after it was queued; any write waits until its
                // not-before time (a retry's backoff, a busy key's pause)
                let due = (r.write.attempts > 0 || now.duration_since(r.queued) >= delay)
                    && now >= r.not_before;
                if free && due {
                    r.claimed_at = Some(now);
                    out.push(r.write.clone());
                }
            }
            Ok(out)
        })
    }

    fn start<'a>(
        &'a self,
        write: &'a QueuedWrite,
        coalesce: bool,
    ) -> BoxFuture<'a, Result<Start, CacheError>> {
        Box::pin(async move {
            let mut s = self.state.lock();
            let Some(w) = s.writers.get_mut(&write.writer) else {
                return Ok(Start::Superseded);
            };
            // a write no longer queued was finished already (a second claim)
            let queued = w.record(write).is_some();
            let Some(k) = w.keys.get_mut(&write.key).filter(|_| queued) else {
                return Ok(Start::Superseded);
            };
            if k.done >= write.seq || (coalesce && k.latest > write.seq) {
                return Ok(Start::Superseded);
            }
            if k.locked.is_some() {
                return Ok(Start::Busy);
            }
            k.locked = Some(write.id.clone());
            Ok(Start::Run)
        })
    }

    fn finish<'a>(
        &'a self,
        write: &'a QueuedWrite,
        how: Finish,
    ) -> BoxFuture<'a, Result<(), CacheError>> {
        Box::pin(async move {
            let mut s = self.state.lock();
            let s = &mut *s;
            match how {
                Finish::Busy { after } => {
                    if let Some(r) = s
                        .writers
                        .get_mut(&write.writer)
                        .and_then(|w| w.record(write))
                    {
                        r.pause(after);
                    }
                    return Ok(());
                }
                Finish::Retry { after, attempts } => {
                    let Some(w) = s.writers.get_mut(&write.writer) else {
                        return Ok(());
                    };
                    if let Some(k) = w.keys.get_mut(&write.key) {
                        k.unlock(&write.id);
                    }
                    if let Some(r) = w.record(write) {
                        r.write.attempts = attempts;
                        r.pause(after);
                    }
                    return Ok(());
                }
                Finish::Superseded => {
                    Self::take(s, write);
                }
                Finish::Done => {
                    Self::take(s, write);
                    if let Some(k) = s
                        .writers
                        .get_mut(&write.writer)
                        .and_then(|w| w.keys.get_mut(&write.key))
                    {
                        k.done = k.done.max(write.seq);
                        k.unlock(&write.id);
                        k.drop_pending_upto(write.seq);
                    }
                }
                Finish::Dead { error, attempts } => {
                    let taken = Self::take(s, write);
                    if let Some(w) = s.writers.get_mut(&write.writer) {
                        if let Some(k) = w.keys.get_mut(&write.key) {
                            k.unlock(&write.id);
                            k.dead += 1;
                            k.drop_pending_upto(write.seq);
                        }
                        if let Some(r) = taken {
                            let mut dead = r.write;
                            dead.attempts = attempts;
                            w.dead.push(DeadLetter { write: dead, error });
                        }
                    }
                }
            }
            if let Some(w) = s.writers.get_mut(&write.writer) {
                w.tidy(&write.key);
            }
            Ok(())
        })
    }

    fn dead_letters<'a>(
        &'a self,
        writer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeadLetter>, CacheError>> {
        Box::pin(async move {
            let s = self.state.lock();
            Ok(s.writers
                .get(writer)
                .map(|w| w.dead.clone())
                .unwrap_or_default())
        })
    }

    fn replay<'a>(
        &'a self,
        writer: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<bool, CacheError>> {
        Box::pin(async move {
            let mut s = self.state.lock();
            let s = &mut *s;
            s.next_id += 1;
            let new_id = s.next_id;
            let Some(w) = s.writers.get_mut(writer) else {
                return Ok(false);
            };
            let Some(pos) = w.dead.iter().position(|d| d.write.id == id) else {
                return Ok(false);
            };
            let mut write = w.dead.remove(pos).write;
            write.id = new_id.to_string();
            write.attempts = 0;
            let k = w.keys.entry(write.key.clone()).or_default();
            k.dead = k.dead.saturating_sub(1);
            k.queued += 1;
            // queued when it was first queued (as on Redis): due at once, and its age is real
            let now = Instant::now();
            let age = Duration::from_millis(unix_ms().saturating_sub(write.queued_at_ms));
            w.records.insert(
                new_id,
                Record {
                    write,
                    queued: now.checked_sub(age).unwrap_or(now),
                    not_before: now,
                    claimed_at: None,
                },
            );
            s.len += 1;
            Ok(true)
        })
    }

    fn depth<'a>(&'a self, writer: &'a str) -> BoxFuture<'a, Result<Depth, CacheError>> {
        Box::pin(async move {
            let s = self.state.lock();
            let Some(w) = s.writers.get(writer) else {
                return Ok(Depth::default());
            };
            let now = Instant::now();
            Ok(Depth {
                pending: w.records.len() as u64,
                oldest: w
                    .records
                    .values()
                    .map(|r| now.duration_since(r.queued))
                    .max(),
            })
        })
    }
}
