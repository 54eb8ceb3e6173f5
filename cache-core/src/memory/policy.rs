//! Eviction policies and their per-shard queues.
//!
//! Queues are intrusive doubly linked lists threaded through the shard's slots, so removing an
//! entry (invalidation, expiry) is O(1) whatever the policy.

use hashbrown::HashTable;
use std::collections::VecDeque;

/// Which entry leaves when a shard is full.
///
/// ```
/// use cache_core::memory::{EvictionPolicy, MemoryBackend};
/// let backend = MemoryBackend::builder()
///     .policy(EvictionPolicy::Lru)
///     .build()
///     .unwrap();
/// assert_eq!(backend.policy(), EvictionPolicy::Lru);
/// assert_eq!(EvictionPolicy::default(), EvictionPolicy::S3Fifo);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum EvictionPolicy {
    /// S3-FIFO (the default, frequency-aware): new entries go to a small FIFO queue (1/32 of the
    /// capacity); those read again before they reach its end move to the main queue, the others
    /// leave and are remembered in a ghost queue (1/4 of the capacity), so that their next
    /// insert goes straight to the main queue. The main queue is a CLOCK: a read entry gets another round. A hit only sets a
    /// 2-bit frequency with a relaxed atomic store: it takes the shard's read lock.
    #[default]
    S3Fifo,
    /// Least recently used. Exact: a hit moves the entry to the front of its queue, so a hit
    /// takes the shard's write lock (hits on one shard serialize; expect a few ns more per hit
    /// and poor scaling on hot keys).
    Lru,
    /// First in, first out: reads do not change the order; a hit takes the read lock.
    Fifo,
}

/// "No slot": the end of a list.
pub(crate) const NIL: u32 = u32::MAX;

/// The queue an entry is in (S3-FIFO's small queue; every other policy uses only `MAIN`).
pub(crate) const MAIN: u8 = 0;
/// S3-FIFO's small (probationary) queue.
pub(crate) const SMALL: u8 = 1;

/// Links of one slot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Links {
    pub(crate) prev: u32,
    pub(crate) next: u32,
    pub(crate) queue: u8,
}

impl Default for Links {
    fn default() -> Self {
        Links {
            prev: NIL,
            next: NIL,
            queue: MAIN,
        }
    }
}

/// A queue: `head` is the newest end, `tail` the next to leave.
#[derive(Clone, Copy, Debug)]
pub(crate) struct List {
    pub(crate) head: u32,
    pub(crate) tail: u32,
    pub(crate) len: usize,
    pub(crate) weight: u64,
}

impl Default for List {
    fn default() -> Self {
        List {
            head: NIL,
            tail: NIL,
            len: 0,
            weight: 0,
        }
    }
}

/// Something that holds the links of every slot.
pub(crate) trait LinkStore {
    fn links(&mut self, slot: u32) -> &mut Links;
}

impl List {
    /// Puts `slot` at the head.
    pub(crate) fn push_head<S: LinkStore>(&mut self, store: &mut S, slot: u32, weight: u64) {
        let old_head = self.head;
        {
            let l = store.links(slot);
            l.prev = NIL;
            l.next = old_head;
        }
        if old_head != NIL {
            store.links(old_head).prev = slot;
        } else {
            self.tail = slot;
        }
        self.head = slot;
        self.len += 1;
        self.weight += weight;
    }

    /// Takes `slot` out of the list.
    pub(crate) fn unlink<S: LinkStore>(&mut self, store: &mut S, slot: u32, weight: u64) {
        let Links { prev, next, .. } = *store.links(slot);
        if prev != NIL {
            store.links(prev).next = next;
        } else {
            self.head = next;
        }
        if next != NIL {
            store.links(next).prev = prev;
        } else {
            self.tail = prev;
        }
        let l = store.links(slot);
        l.prev = NIL;
        l.next = NIL;
        self.len -= 1;
        self.weight -= weight;
    }
}

/// S3-FIFO's ghost queue: hashes of keys recently evicted from the small queue.
#[derive(Default)]
pub(crate) struct Ghost {
    ring: VecDeque<u64>,
    set: HashTable<u64>,
}

impl Ghost {
    pub(crate) fn contains(&self, hash: u64) -> bool {
        self.set.find(hash, |&h| h == hash).is_some()
    }

    /// Remembers `hash`, forgetting the oldest beyond `capacity`.
    pub(crate) fn insert(&mut self, hash: u64, capacity: usize) {
        if capacity == 0 || self.contains(hash) {
            return;
        }
        while self.ring.len() >= capacity {
            let Some(old) = self.ring.pop_front() else {
                break;
            };
            if let Ok(e) = self.set.find_entry(old, |&h| h == old) {
                e.remove();
            }
        }
        self.ring.push_back(hash);
        self.set.insert_unique(hash, hash, |&h| h);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vecs(Vec<Links>);
    impl LinkStore for Vecs {
        fn links(&mut self, slot: u32) -> &mut Links {
            &mut self.0[slot as usize]
        }
    }

    fn order(list: &List, s: &mut Vecs) -> Vec<u32> {
        let mut out = vec![];
        let mut i = list.head;
        while i != NIL {
            out.push(i);
            i = s.links(i).next;
        }
        out
    }

    #[test]
    fn lists_link_and_unlink() {
        let mut s = Vecs(vec![Links::default(); 4]);
        let mut l = List::default();
        for i in 0..4 {
            l.push_head(&mut s, i, 1);
        }
        assert_eq!(order(&l, &mut s), vec![3, 2, 1, 0]);
        l.unlink(&mut s, 2, 1);
        l.unlink(&mut s, 0, 1);
        assert_eq!(order(&l, &mut s), vec![3, 1]);
        assert_eq!((l.len, l.weight, l.tail), (2, 2, 1));
        l.unlink(&mut s, 3, 1);
        l.unlink(&mut s, 1, 1);
        assert_eq!((l.head, l.tail, l.len), (NIL, NIL, 0));
    }

    #[test]
    fn ghost_forgets_the_oldest() {
        let mut g = Ghost::default();
        for h in 0..10 {
            g.insert(h, 4);
        }
        assert!(!g.contains(5));
        assert!(g.contains(6) && g.contains(9));
    }
}
