//! Single flight: concurrent misses of one key run the function once per process.
//!
//! The first caller to miss becomes the *leader* and holds a [`Leader`] guard; callers that miss
//! the same key meanwhile *follow*: they wait for the leader's value. If the leader finishes
//! without a value to share (an `Err`, a rejected stale fill), panics, or is cancelled (its future
//! dropped), the guard's `Drop` wakes the followers and they start over: one of them leads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::value::SharedValue;

#[derive(Clone)]
enum State {
    Running,
    Done(SharedValue),
    Abandoned,
}

pub(crate) struct Flight {
    waiting: AtomicUsize,
    state: Mutex<State>,
    cond: Condvar,
    notify: tokio::sync::Notify,
}

/// What a follower got.
pub(crate) enum Outcome {
    /// The leader's value.
    Value(SharedValue),
    /// The leader gave up: start over.
    Retry,
}

impl Flight {
    fn new() -> Self {
        Flight {
            waiting: AtomicUsize::new(0),
            state: Mutex::new(State::Running),
            cond: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    fn outcome(state: &State) -> Option<Outcome> {
        match state {
            State::Running => None,
            State::Done(v) => Some(Outcome::Value(v.clone())),
            State::Abandoned => Some(Outcome::Retry),
        }
    }

    pub(crate) fn wait_blocking(&self) -> Outcome {
        let _w = Waiting::new(&self.waiting);
        let mut st = self.state.lock();
        loop {
            if let Some(o) = Self::outcome(&st) {
                return o;
            }
            self.cond.wait(&mut st);
        }
    }

    pub(crate) async fn wait(&self) -> Outcome {
        let _w = Waiting::new(&self.waiting);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(o) = Self::outcome(&self.state.lock()) {
                return o;
            }
            notified.await;
        }
    }

    fn finish(&self, state: State) {
        *self.state.lock() = state;
        self.cond.notify_all();
        self.notify.notify_waiters();
    }
}

struct Waiting<'a>(&'a AtomicUsize);
impl<'a> Waiting<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        Waiting(n)
    }
}
impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Flights in progress by binary key; the leader holds the same key (one allocation per flight).
type FlightMap = HashMap<Arc<[u8]>, Arc<Flight>, foldhash::fast::RandomState>;

/// The flights of one cached function, by binary key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<FlightMap>,
    /// Keys with a background refresh started and not yet finished (one at a time per key).
    refreshing: Mutex<std::collections::HashSet<Box<[u8]>>>,
    /// Flights ended so far: a caller that missed before a flight ended and leads after it
    /// must look again (the ended leader may have stored the value).
    ended: std::sync::atomic::AtomicU64,
}

/// Either lead the computation or follow the one in progress.
pub(crate) enum Join<'a> {
    Lead(Leader<'a>),
    Follow(Arc<Flight>),
}

impl Flights {
    pub(crate) fn join(&self, key: &[u8]) -> Join<'_> {
        self.join_locked(&mut self.map.lock(), key)
    }

    fn join_locked(&self, map: &mut FlightMap, key: &[u8]) -> Join<'_> {
        if let Some(f) = map.get(key) {
            return Join::Follow(f.clone());
        }
        let flight = Arc::new(Flight::new());
        let key: Arc<[u8]> = key.into();
        map.insert(key.clone(), flight.clone());
        Join::Lead(Leader {
            flights: self,
            key,
            flight,
            done: false,
        })
    }

    /// Joins the flights of several keys at once, under one lock: two batches that overlap are
    /// ordered (the later one follows the earlier one's keys, never the other way round), so a
    /// batch that waits for its followed keys before computing its own cannot deadlock.
    pub(crate) fn join_many<'k>(&self, keys: impl Iterator<Item = &'k [u8]>) -> Vec<Join<'_>> {
        let mut map = self.map.lock();
        keys.map(|key| self.join_locked(&mut map, key)).collect()
    }

    /// Claims the background refresh of `key`: `None` when one is already under way. The
    /// claim ends when the guard is dropped (the refresh finished, failed or was cancelled).
    pub(crate) fn start_refresh(&'static self, key: &[u8]) -> Option<RefreshClaim> {
        if self.map.lock().contains_key(key) || !self.refreshing.lock().insert(key.into()) {
            return None;
        }
        Some(RefreshClaim {
            flights: self,
            key: key.into(),
        })
    }

    /// Background refreshes under way.
    pub(crate) fn refreshing(&self) -> usize {
        self.refreshing.lock().len()
    }

    /// Flights ended so far (see the field).
    #[inline]
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Acquire)
    }

    /// Callers waiting for a leader, over all keys.
    pub(crate) fn waiting(&self) -> usize {
        self.map
            .lock()
            .values()
            .map(|f| f.waiting.load(Ordering::SeqCst))
            .sum()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }
}

/// A claimed background refresh ([`Flights::start_refresh`]); dropping it ends the claim.
pub(crate) struct RefreshClaim {
    flights: &'static Flights,
    key: Box<[u8]>,
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.flights.refreshing.lock().remove(&self.key);
    }
}

/// The leader's guard: share a value with [`Leader::complete`], or drop it to make followers
/// retry.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: Arc<[u8]>,
    flight: Arc<Flight>,
    done: bool,
}

impl Leader<'_> {
    fn end(&mut self, state: State) {
        if self.done {
            return;
        }
        self.done = true;
        self.flights.map.lock().remove(&*self.key);
        self.flights.ended.fetch_add(1, Ordering::Release);
        self.flight.finish(state);
    }

    /// Shares `value` with the followers.
    pub(crate) fn complete(mut self, value: SharedValue) {
        self.end(State::Done(value));
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        self.end(State::Abandoned);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leader_drop_releases_followers() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join(b"k") else {
            panic!("first caller leads")
        };
        let Join::Follow(f) = flights.join(b"k") else {
            panic!("second caller follows")
        };
        drop(leader);
        assert!(matches!(f.wait_blocking(), Outcome::Retry));
        assert_eq!(flights.len(), 0);
    }

    #[test]
    fn complete_shares_value() {
        let flights = Flights::default();
        let Join::Lead(leader) = flights.join(b"k") else {
            panic!()
        };
        let Join::Follow(f) = flights.join(b"k") else {
            panic!()
        };
        leader.complete(crate::value::share(3u8));
        match f.wait_blocking() {
            Outcome::Value(v) => assert_eq!(crate::value::downcast::<u8>(&*v), Some(3)),
            Outcome::Retry => panic!("expected a value"),
        }
    }
}
