//! The steps of a call after its in-process lookup missed (or could not answer): one state
//! machine, [`Call`], driven by a short async driver ([`Call::drive_async`]) and a short
//! blocking one ([`Call::drive_blocking`]), which differ only in how they wait for I/O.
//!
//! A step asks the driver for one thing ([`Step`]): read the entry from the backend, remove it,
//! or wait for the caller computing it (single flight); the answer goes back to the machine,
//! which ends with a hit or a [`Filler`] that runs the body.

use std::sync::Arc;

use super::{backend_error, Begin, Filler, FnCache, Mode};
use crate::backend::{Backend, EntryOptions, Key, Lease, Lookup};
use crate::error::CacheError;
use crate::flight::{Flight, Join, Outcome};
use crate::value::{self, Cacheable};

/// What the machine needs the driver to do next.
pub(super) enum Step<V> {
    /// `backend.get(key)`, then [`Call::got`].
    Get,
    /// `backend.remove(key)`, then [`Call::removed`].
    Remove,
    /// Wait for the flight's leader, then [`Call::followed`].
    Wait(Arc<Flight>),
    /// The call's start is decided.
    Done(Begin<V>),
}

/// Why the entry is being removed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Removing {
    /// A refresh drops the entry (and its dependents) before computing; a failure is counted
    /// and the call goes on.
    Refresh,
    /// The stored value did not decode: it is dropped and looked up again; a failure runs the
    /// body without the cache.
    Undecodable,
}

/// One call of a cached fn past its in-process lookup.
pub(super) struct Call {
    cache: &'static FnCache,
    backend: Arc<dyn Backend>,
    key: Option<Key>,
    options: EntryOptions,
    /// Flights ended before the in-process lookup (see [`FnCache::recheck`]).
    flights_ended: u64,
    /// The lease of an in-process miss that is final (no backend read needed).
    known_miss: Option<Lease>,
    removing: Option<Removing>,
    /// The value read once did not decode.
    undecodable: bool,
}

impl Call {
    pub(super) fn new(
        cache: &'static FnCache,
        backend: Arc<dyn Backend>,
        key: Key,
        options: EntryOptions,
        flights_ended: u64,
        known_miss: Option<Lease>,
    ) -> Self {
        Call {
            cache,
            backend,
            key: Some(key),
            options,
            flights_ended,
            known_miss,
            removing: None,
            undecodable: false,
        }
    }

    fn key(&self) -> &Key {
        self.key
            .as_ref()
            .expect("the key is taken only when the call ends")
    }

    /// The first step.
    fn start<V: Cacheable>(&mut self, mode: Mode) -> Step<V> {
        if mode == Mode::Refresh {
            self.removing = Some(Removing::Refresh);
            return Step::Remove;
        }
        self.lookup()
    }

    fn lookup<V: Cacheable>(&mut self) -> Step<V> {
        match self.known_miss.take() {
            Some(lease) => self.missed(lease),
            None => Step::Get,
        }
    }

    /// The backend's answer to [`Step::Get`].
    fn got<V: Cacheable>(&mut self, found: Result<Lookup, CacheError>) -> Step<V> {
        match found {
            Ok(Lookup::Hit(hit)) => match self.cache.decode::<V>(&*self.backend, hit, self.key()) {
                Some(v) => {
                    self.cache.on_hit_known(self.key());
                    Step::Done(Begin::Hit(v))
                }
                None if !self.undecodable => {
                    // drop it, then take a lease on the fresh miss
                    self.undecodable = true;
                    self.removing = Some(Removing::Undecodable);
                    Step::Remove
                }
                None => self.passthrough(),
            },
            Ok(Lookup::Miss(lease)) => self.missed(lease),
            Err(e) => {
                self.cache.counters.errors.incr();
                backend_error(&self.cache.meta, "get", &e);
                self.passthrough()
            }
        }
    }

    /// The backend's answer to [`Step::Remove`].
    fn removed<V: Cacheable>(&mut self, done: Result<(), CacheError>) -> Step<V> {
        let why = self.removing.take();
        match done {
            Ok(()) => Step::Get,
            Err(e) => {
                self.cache.counters.errors.incr();
                backend_error(&self.cache.meta, "remove", &e);
                if why == Some(Removing::Refresh) {
                    Step::Get
                } else {
                    self.passthrough()
                }
            }
        }
    }

    /// A miss: compute it, lead its flight, or follow the caller computing it.
    fn missed<V: Cacheable>(&mut self, lease: Lease) -> Step<V> {
        let cache = self.cache;
        cache.counters.misses.incr();
        tracing::debug!(
            function = cache.meta.name,
            key = self.key().text(),
            "cache miss"
        );
        if !cache.meta.lock {
            return Step::Done(Begin::Fill(self.filler(lease, None)));
        }
        match cache.flights().join(self.key().local().bytes) {
            Join::Lead(leader) => {
                if let Some(v) = cache.recheck::<V>(&*self.backend, self.key(), self.flights_ended)
                {
                    leader.complete(value::share(v.clone()));
                    return Step::Done(Begin::Hit(v));
                }
                Step::Done(Begin::Fill(self.filler(lease, Some(leader))))
            }
            Join::Follow(flight) => Step::Wait(flight),
        }
    }

    /// The leader's outcome, for [`Step::Wait`]: its value, or (it gave up) a new lookup.
    fn followed<V: Cacheable>(&mut self, outcome: Outcome) -> Step<V> {
        if let Outcome::Value(v) = outcome {
            if let Some(v) = value::downcast::<V>(&*v) {
                self.cache.counters.coalesced.incr();
                self.cache.on_hit_known(self.key());
                return Step::Done(Begin::Hit(v));
            }
        }
        Step::Get
    }

    /// The backend failed: run the body without the cache.
    fn passthrough<V: Cacheable>(&mut self) -> Step<V> {
        Step::Done(Begin::Fill(Filler::passthrough(
            self.cache,
            self.key.take(),
        )))
    }

    fn filler<V: Cacheable>(
        &mut self,
        lease: Lease,
        leader: Option<crate::flight::Leader<'static>>,
    ) -> Filler<V> {
        Filler::new(
            self.cache,
            self.key.take().expect("a call ends once"),
            self.backend.clone(),
            std::mem::take(&mut self.options),
            lease,
            leader,
        )
    }

    /// Runs the machine with async I/O.
    pub(super) async fn drive_async<V: Cacheable>(mut self, mode: Mode) -> Begin<V> {
        let backend = self.backend.clone();
        let mut step = self.start::<V>(mode);
        loop {
            step = match step {
                Step::Get => {
                    let found = backend.get(self.key()).await;
                    self.got(found)
                }
                Step::Remove => {
                    let done = backend.remove(self.key()).await;
                    self.removed(done)
                }
                Step::Wait(flight) => {
                    let outcome = flight.wait().await;
                    self.followed(outcome)
                }
                Step::Done(begin) => return begin,
            }
        }
    }

    /// Runs the machine with blocking I/O.
    pub(super) fn drive_blocking<V: Cacheable>(mut self, mode: Mode) -> Begin<V> {
        let backend = self.backend.clone();
        let mut step = self.start::<V>(mode);
        loop {
            step = match step {
                Step::Get => {
                    let found = backend.get_blocking(self.key());
                    self.got(found)
                }
                Step::Remove => {
                    let done = backend.remove_blocking(self.key());
                    self.removed(done)
                }
                Step::Wait(flight) => {
                    let outcome = flight.wait_blocking();
                    self.followed(outcome)
                }
                Step::Done(begin) => return begin,
            }
        }
    }
}
