//! The shard lock: a reader-writer lock whose readers write only their own thread's stripe.
//!
//! A plain `RwLock` keeps one reader count: two threads hitting the same shard both write that
//! cache line, which then bounces between their cores. Here each of the first threads owns a
//! reader stripe (the stripe of [`crate::stats`], on its own cache line) and enters a read by
//! bumping its stripe with one `xchg` (no other thread writes it) and leaves it with a plain
//! release store; threads beyond the owned stripes share the last stripe with atomic adds.
//!
//! A writer takes the writer mutex, raises `writing`, and waits for every stripe to drain.
//! The reader's exchange and the writer's raise are both sequentially consistent, so at least
//! one of them sees the other (Dekker): a reader that raced a writer sees `writing`, backs
//! out, and reads under the writer mutex instead (after the writer is done). Readers hold a
//! stripe only for a lookup, so a writer waits at most that long (spinning, then yielding).
//!
//! A nested read (a value's `Clone` calling a cached fn that hits the same shard) never waits:
//! the outer read already holds the writer off. On an owned stripe the stripe's depth tells;
//! on the shared stripe, a short thread-local list of the locks this thread holds through it. Like any reader-writer lock,
//! taking the write lock on a thread that holds a read lock of the same shard deadlocks; nothing
//! in the backend does that (the only user code run under a read lock is a value's `Clone`).

use std::cell::{Cell, UnsafeCell};
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};

use crate::stats::{self, STRIPES};

#[repr(align(128))]
struct Stripe(AtomicU64);

/// How many shared-stripe reads a thread tracks for nesting (deeper nesting is not tracked:
/// such a read backs off like a first one).
const HELD_SLOTS: usize = 8;

thread_local! {
    /// The locks (addresses) this thread holds a read of through the shared stripe, and how
    /// many slots are used.
    static SHARED_HELD: ([Cell<usize>; HELD_SLOTS], Cell<usize>) =
        const { ([const { Cell::new(0) }; HELD_SLOTS], Cell::new(0)) };
}

/// Whether this thread holds a read of the lock at `addr` through the shared stripe.
fn holds_shared(addr: usize) -> bool {
    SHARED_HELD
        .try_with(|(slots, len)| slots[..len.get()].iter().any(|c| c.get() == addr))
        .unwrap_or(false)
}

/// Records a shared-stripe read of the lock at `addr` on this thread; false if not recorded.
fn push_shared(addr: usize) -> bool {
    SHARED_HELD
        .try_with(|(slots, len)| {
            let n = len.get();
            if n == HELD_SLOTS {
                return false;
            }
            slots[n].set(addr);
            len.set(n + 1);
            true
        })
        .unwrap_or(false)
}

/// Forgets the latest shared-stripe read of the lock at `addr` on this thread.
fn pop_shared(addr: usize) {
    let _ = SHARED_HELD.try_with(|(slots, len)| {
        let n = len.get();
        if let Some(i) = slots[..n].iter().rposition(|c| c.get() == addr) {
            for j in i..n - 1 {
                slots[j].set(slots[j + 1].get());
            }
            len.set(n - 1);
        }
    });
}

pub(crate) struct StripedLock<T> {
    writing: AtomicBool,
    writer: parking_lot::Mutex<()>,
    readers: [Stripe; STRIPES],
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&T` to several threads (needs `Sync`) and `&mut T` to one
// (needs `Send`), like `RwLock`.
unsafe impl<T: Send + Sync> Sync for StripedLock<T> {}
// SAFETY: moving the lock moves its `T` (the stripes and the mutex hold no thread affinity).
unsafe impl<T: Send> Send for StripedLock<T> {}

pub(crate) struct ReadGuard<'a, T> {
    lock: &'a StripedLock<T>,
    /// The reader stripe entered, or `None` when the read runs under the writer mutex (a
    /// writer was active).
    stripe: Option<usize>,
    /// A shared-stripe read recorded in `SHARED_HELD`.
    recorded: bool,
    _writer: Option<parking_lot::MutexGuard<'a, ()>>,
}

pub(crate) struct WriteGuard<'a, T> {
    lock: &'a StripedLock<T>,
    _writer: parking_lot::MutexGuard<'a, ()>,
}

impl<T> StripedLock<T> {
    pub(crate) fn new(data: T) -> Self {
        StripedLock {
            writing: AtomicBool::new(false),
            writer: parking_lot::Mutex::new(()),
            readers: [const { Stripe(AtomicU64::new(0)) }; STRIPES],
            data: UnsafeCell::new(data),
        }
    }

    /// Read access through this thread's stripe.
    #[inline]
    pub(crate) fn read(&self) -> ReadGuard<'_, T> {
        self.read_at(stats::stripe())
    }

    /// Read access through stripe `stripe` (the caller's [`stats::stripe`]).
    #[inline(always)]
    pub(crate) fn read_at(&self, stripe: usize) -> ReadGuard<'_, T> {
        let stripe = stripe & (STRIPES - 1);
        let r = &self.readers[stripe].0;
        let shared = stripe == stats::SHARED;
        let nested = if shared {
            r.fetch_add(1, SeqCst);
            // this thread already reads this lock through the shared stripe: a writer is
            // still waiting for it to drain
            holds_shared(self as *const Self as usize)
        } else {
            // only this thread writes an owned stripe; the exchange is the full barrier
            let depth = r.load(Relaxed);
            r.swap(depth + 1, SeqCst);
            // this thread already reads: a writer is still waiting for this stripe to drain
            depth != 0
        };
        if nested || !self.writing.load(SeqCst) {
            return ReadGuard {
                lock: self,
                stripe: Some(stripe),
                recorded: shared && push_shared(self as *const Self as usize),
                _writer: None,
            };
        }
        self.leave(stripe);
        self.read_slow()
    }

    #[cold]
    fn read_slow(&self) -> ReadGuard<'_, T> {
        ReadGuard {
            lock: self,
            stripe: None,
            recorded: false,
            _writer: Some(self.writer.lock()),
        }
    }

    #[inline]
    fn leave(&self, stripe: usize) {
        let r = &self.readers[stripe & (STRIPES - 1)].0;
        if stripe == stats::SHARED {
            r.fetch_sub(1, Release);
        } else {
            r.store(r.load(Relaxed) - 1, Release);
        }
    }

    /// Exclusive access.
    pub(crate) fn write(&self) -> WriteGuard<'_, T> {
        let g = self.writer.lock();
        self.writing.store(true, SeqCst);
        for r in &self.readers {
            let mut spins = 0u32;
            while r.0.load(SeqCst) != 0 {
                if spins < 64 {
                    std::hint::spin_loop();
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
        }
        WriteGuard {
            lock: self,
            _writer: g,
        }
    }
}

impl<T> Deref for ReadGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: readers and the writer exclude each other (see the module doc).
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Drop for ReadGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if self.recorded {
            pop_shared(self.lock as *const StripedLock<T> as usize);
        }
        if let Some(s) = self.stripe {
            self.lock.leave(s);
        }
    }
}

impl<T> Deref for WriteGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the writer mutex is held and every reader stripe drained.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for WriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, and `&mut self` makes the access unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for WriteGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.writing.store(false, Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn readers_and_writers_exclude_each_other() {
        let lock = Arc::new(StripedLock::new((0u64, 0u64)));
        let threads: Vec<_> = (0..12)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        if (i + t) % 16 == 0 {
                            let mut g = lock.write();
                            g.0 += 1;
                            g.1 += 1;
                        } else {
                            let g = lock.read();
                            assert_eq!(g.0, g.1);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let g = lock.read();
        assert_eq!(g.0, g.1);
        assert_eq!(g.0, 12 * 20_000 / 16);
    }

    /// A nested read through the shared stripe while a writer waits for that stripe: the
    /// inner read must not wait for the writer (which waits for the outer read).
    #[test]
    fn nested_shared_stripe_read_while_a_writer_waits() {
        use std::time::{Duration, Instant};
        let lock = Arc::new(StripedLock::new(0u32));
        let outer = lock.read_at(stats::SHARED);
        let writer = {
            let lock = lock.clone();
            std::thread::spawn(move || *lock.write() += 1)
        };
        let end = Instant::now() + Duration::from_secs(10);
        while !lock.writing.load(SeqCst) {
            assert!(Instant::now() < end, "the writer never started");
            std::thread::yield_now();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            // the nested read runs on this thread; a watchdog reports a deadlock instead of
            // hanging the test run
            s.spawn(move || {
                if rx.recv_timeout(Duration::from_secs(10)).is_err() {
                    eprintln!("nested shared-stripe read deadlocked");
                    std::process::abort();
                }
            });
            let inner = lock.read_at(stats::SHARED);
            assert_eq!(*inner + *outer, 0);
            drop(inner);
            tx.send(()).unwrap();
        });
        drop(outer);
        writer.join().unwrap();
        assert_eq!(*lock.read_at(stats::SHARED), 1);
    }

    #[test]
    fn nested_reads_on_one_thread() {
        let lock = StripedLock::new(1u8);
        let a = lock.read();
        let b = lock.read();
        assert_eq!(*a + *b, 2);
        drop(a);
        drop(b);
        *lock.write() += 1;
        assert_eq!(*lock.read(), 2);
    }
}
