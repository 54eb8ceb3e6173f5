//! Running the body of a call that missed ([`Filler`]): the value stored with the miss's lease,
//! shared with the callers that waited, recorded in the enclosing fill's dependencies; the
//! stale value standing in for a failed or slow body; the backend told when a fill ends with
//! nothing to store.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{backend_error, FnCache};
use crate::backend::{Backend, EntryOptions, Key, Lease, SetOutcome};
use crate::context;
use crate::error::CacheError;
use crate::flight::Leader;
use crate::registry;
use crate::value::{Cacheable, SharedValue};

/// Runs the body of a call that missed and stores its value.
pub struct Filler<V> {
    cache: &'static FnCache,
    key: Option<Key>,
    target: Option<Target>,
    /// A stale value that may stand in for a failed or slow body (`stale_if_error`).
    fallback: Option<V>,
    /// The body's time limit when a stale value is at hand (`timeout`).
    timeout: Option<Duration>,
}

pub(super) struct Target {
    pub(super) backend: Arc<dyn Backend>,
    pub(super) options: EntryOptions,
    pub(super) lease: Lease,
    pub(super) leader: Option<Leader<'static>>,
}

impl<V: Cacheable> Filler<V> {
    pub(super) fn new(
        cache: &'static FnCache,
        key: Key,
        backend: Arc<dyn Backend>,
        options: EntryOptions,
        lease: Lease,
        leader: Option<Leader<'static>>,
    ) -> Self {
        Filler {
            cache,
            key: Some(key),
            target: Some(Target {
                backend,
                options,
                lease,
                leader,
            }),
            fallback: None,
            timeout: None,
        }
    }

    pub(super) fn passthrough(cache: &'static FnCache, key: Option<Key>) -> Self {
        Filler {
            cache,
            key,
            target: None,
            fallback: None,
            timeout: None,
        }
    }

    /// Keeps a stale value that may stand in for a failed or slow body, and the body's time
    /// limit when there is one.
    pub(super) fn with_fallback(mut self, fallback: Option<V>, timeout: Option<Duration>) -> Self {
        self.fallback = fallback;
        self.timeout = timeout;
        self
    }

    /// [`Self::fill_async`] of a fn with `stale_if_error`: when the body's result is a failure
    /// (`is_err`) and a stale value is at hand, that value is returned (`wrap`: `Ok(v)`)
    /// instead. A panic is not swallowed.
    pub async fn fill_async_guarded<R, F: Future<Output = R>>(
        mut self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        let fallback = self.fallback.take();
        let cache = self.cache;
        let r = self.fill_async(fut, to_value).await;
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_blocking`] of a fn with `stale_if_error` (see [`Self::fill_async_guarded`]).
    pub fn fill_blocking_guarded<R>(
        mut self,
        f: impl FnOnce() -> R,
        to_value: impl FnOnce(&R) -> Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        let fallback = self.fallback.take();
        let cache = self.cache;
        let r = self.fill_blocking(f, to_value);
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_async_guarded`] of a fn with `timeout`: with a stale value at hand, the
    /// body runs as a task of its own and gets `timeout`; a slower body makes the call return
    /// the stale value, and finishes in the background, storing its value. Without a stale
    /// value (or outside a tokio runtime) the call waits for the body.
    pub async fn fill_async_timed<R, F>(
        mut self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V> + Send + 'static,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R
    where
        F: Future<Output = R> + Send + 'static,
        R: Send + 'static,
    {
        let runtime = tokio::runtime::Handle::try_current().ok();
        let (Some(limit), Some(rt), true, true) = (
            self.timeout,
            runtime,
            self.fallback.is_some(),
            timers_enabled(),
        ) else {
            return self.fill_async_guarded(fut, to_value, is_err, wrap).await;
        };
        let fallback = self.fallback.take();
        let cache = self.cache;
        let key = self.key.clone();
        let mut task = rt.spawn(registry::carry_override_async(
            self.fill_async(fut, to_value),
        ));
        let r = match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Ok(Err(_)) | Err(_) => return cache.timed_out(key, fallback, wrap),
        };
        // the body ran in its own task: record the entry in the caller's fill, if any
        cache.record_dependency(key.as_ref());
        cache.stand_in(r, fallback, is_err, wrap)
    }

    /// [`Self::fill_blocking_guarded`] of a fn with `timeout` (see [`Self::fill_async_timed`]):
    /// the body runs on a thread of its own.
    pub fn fill_blocking_timed<R>(
        mut self,
        f: impl FnOnce() -> R + Send + 'static,
        to_value: impl FnOnce(&R) -> Option<V> + Send + 'static,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R
    where
        R: Send + 'static,
    {
        let (Some(limit), true) = (self.timeout, self.fallback.is_some()) else {
            return self.fill_blocking_guarded(f, to_value, is_err, wrap);
        };
        let fallback = self.fallback.take();
        let cache = self.cache;
        let key = self.key.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned =
            std::thread::Builder::new()
                .name("cache-fill".into())
                .spawn(registry::carry_override(move || {
                    let _ = tx.send(self.fill_blocking(f, to_value));
                }));
        let handle = match spawned {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the body on a thread; serving the stale value");
                return cache.timed_out(key, fallback, wrap);
            }
        };
        match rx.recv_timeout(limit) {
            Ok(r) => {
                cache.record_dependency(key.as_ref());
                cache.stand_in(r, fallback, is_err, wrap)
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => cache.timed_out(key, fallback, wrap),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match handle.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => cache.timed_out(key, fallback, wrap),
            },
        }
    }

    /// Runs an async body, stores `to_value` of its result, returns the result.
    ///
    /// Only running the body and taking its value depend on the fn's types; the rest
    /// (the fill's `Run`) is compiled once.
    pub async fn fill_async<R, F: Future<Output = R>>(
        self,
        fut: F,
        to_value: impl FnOnce(&R) -> Option<V>,
    ) -> R {
        let cache = self.cache;
        let Some(run) = Run::start(cache, self.key, self.target) else {
            return fut.await;
        };
        let (r, collected) = context::collect(fut).await;
        let value = to_value(&r).map(|v| cache.share(v));
        run.finish_async(value, collected).await;
        r
    }

    /// Runs a sync body, stores `to_value` of its result, returns the result.
    pub fn fill_blocking<R>(
        self,
        f: impl FnOnce() -> R,
        to_value: impl FnOnce(&R) -> Option<V>,
    ) -> R {
        let cache = self.cache;
        let Some(run) = Run::start(cache, self.key, self.target) else {
            return f();
        };
        let scope = context::SyncScope::enter();
        let r = f();
        let collected = scope.finish();
        let value = to_value(&r).map(|v| cache.share(v));
        run.finish_blocking(value, collected);
        r
    }
}

/// The part of a fill that does not depend on the fn's types: the timing, the store with the
/// miss's lease, the dependency records, and the backend told ([`Backend::abandon`]) when the
/// fill ends without a value to store (the body returned nothing cacheable, panicked, or its
/// future was dropped mid-way: then this is dropped unfinished).
struct Run {
    cache: &'static FnCache,
    key: Key,
    target: Target,
    start: Instant,
    /// Until the body's value is known: dropping the run tells the backend.
    armed: bool,
}

impl Run {
    /// Starts the fill of a call with a target; without one (a passthrough: caching off, or
    /// the key's flight followed elsewhere) only records the key in the enclosing fill.
    #[inline(never)]
    fn start(cache: &'static FnCache, key: Option<Key>, target: Option<Target>) -> Option<Self> {
        let Some(target) = target else {
            cache.record_dependency(key.as_ref());
            return None;
        };
        Some(Run {
            cache,
            key: key.expect("a target has a key"),
            target,
            start: Instant::now(),
            armed: true,
        })
    }

    /// The body returned: the options that go with its value (its collected dependencies
    /// added), and the fill's time.
    fn ended(&mut self, value: &Option<SharedValue>, collected: Vec<String>) -> Duration {
        let elapsed = self.start.elapsed();
        if value.is_some() {
            self.armed = false;
            self.target.options.dependencies.extend(collected);
        } else {
            self.abandon();
        }
        elapsed
    }

    fn abandon(&mut self) {
        if std::mem::take(&mut self.armed) {
            self.target.backend.abandon(&self.key, self.target.lease);
        }
    }

    #[inline(never)]
    fn finish_blocking(mut self, value: Option<SharedValue>, collected: Vec<String>) {
        let elapsed = self.ended(&value, collected);
        if let Some(v) = &value {
            let t = &self.target;
            let outcome = t
                .backend
                .set_blocking(&self.key, v.clone(), &t.options, t.lease);
            self.cache
                .after_set(&self.key, outcome, elapsed, v, &mut self.target);
        }
        self.cache
            .record_filled(&self.key, &self.target.options.dependencies);
    }

    async fn finish_async(mut self, value: Option<SharedValue>, collected: Vec<String>) {
        let elapsed = self.ended(&value, collected);
        if let Some(v) = &value {
            let t = &self.target;
            let outcome = t
                .backend
                .set(&self.key, v.clone(), &t.options, t.lease)
                .await;
            self.cache
                .after_set(&self.key, outcome, elapsed, v, &mut self.target);
        }
        self.cache
            .record_filled(&self.key, &self.target.options.dependencies);
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.abandon();
    }
}

impl FnCache {
    /// The stale value in place of a failed result (`stale_if_error`), or the result.
    fn stand_in<V, R>(
        &self,
        r: R,
        fallback: Option<V>,
        is_err: impl FnOnce(&R) -> bool,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        match fallback {
            Some(v) if is_err(&r) => {
                self.counters.stale_if_error_served.incr();
                tracing::warn!(
                    function = self.meta.name,
                    "the body failed; returning the stale value (stale_if_error)"
                );
                wrap(v)
            }
            _ => r,
        }
    }

    /// The body was slower than `timeout`: the stale value, while it finishes in the background.
    fn timed_out<V, R>(
        &self,
        key: Option<Key>,
        fallback: Option<V>,
        wrap: impl FnOnce(V) -> R,
    ) -> R {
        self.counters.timeouts.incr();
        tracing::debug!(
            function = self.meta.name,
            "the body is slower than its timeout; returning the stale value"
        );
        self.record_dependency(key.as_ref());
        wrap(fallback.expect("a timed fill has a stale value"))
    }

    /// Records `key` in the enclosing fill's dependencies, if any.
    fn record_dependency(&self, key: Option<&Key>) {
        if let (Some(k), true) = (key, context::is_collecting()) {
            context::add_dependency(k.text());
        }
    }

    /// Records a just-filled entry in the enclosing fill's dependencies, if any: its key and
    /// everything it depends on. The outer entry then depends on the inner one's dependencies
    /// directly, which a backend that does not index entries by dependency (Redis, protocol
    /// version 2: entries are validated against versions of what they depend on) needs to
    /// invalidate it with them.
    fn record_filled(&self, key: &Key, dependencies: &[String]) {
        if context::is_collecting() {
            context::add_dependency(key.text());
            for d in dependencies {
                context::add_dependency(d.as_str());
            }
        }
    }

    pub(super) fn after_set(
        &self,
        key: &Key,
        outcome: Result<SetOutcome, CacheError>,
        elapsed: Duration,
        value: &SharedValue,
        target: &mut Target,
    ) {
        self.counters
            .fill_nanos
            .add(elapsed.as_nanos().min(u64::MAX as u128) as u64);
        self.counters.timed_fills.incr();
        #[cfg(feature = "metrics")]
        crate::metrics::record_fill(self.meta.module, self.meta.name, elapsed.as_secs_f64());
        match outcome {
            Ok(SetOutcome::Stored) => {
                self.counters.fills.incr();
                tracing::debug!(
                    function = self.meta.name,
                    key = key.text(),
                    ?elapsed,
                    "cache fill"
                );
                if let Some(l) = target.leader.take() {
                    l.complete(value.clone());
                }
            }
            Ok(SetOutcome::Rejected) => {
                self.counters.stale_rejected.incr();
                tracing::debug!(
                    function = self.meta.name,
                    key = key.text(),
                    "fill rejected: the key or a dependency was invalidated while computing"
                );
                // followers retry: the value may predate the invalidation
            }
            Err(e) => {
                self.counters.errors.incr();
                backend_error(&self.meta, "set", &e);
                if let Some(l) = target.leader.take() {
                    l.complete(value.clone());
                }
            }
        }
    }
}

/// Whether the current tokio runtime has its timer enabled (a runtime built without
/// `enable_time` panics when a timeout is created: the call then waits for the body instead).
/// Tokio offers no query for it, so this creates a timer and catches the panic (under
/// `panic = "abort"` it cannot, and assumes the timer is there, as nearly every runtime has).
fn timers_enabled() -> bool {
    if cfg!(panic = "abort") {
        return true;
    }
    std::panic::catch_unwind(|| drop(tokio::time::sleep(Duration::ZERO))).is_ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timers_are_detected() {
        let without = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(!without.block_on(async { super::timers_enabled() }));
        let with = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert!(with.block_on(async { super::timers_enabled() }));
    }
}
