//! The dependency context: what the entry being filled depends on.
//!
//! While a cached function's body runs on a miss, a collector is active: in sync code for the
//! body's call, in async code while the body's future is polled (so it follows the body across
//! `.await`, whichever thread polls it). Active collectors form a per-thread stack; the
//! innermost one collects. Every cached
//! function called inside the body (hit or miss) adds its key to it (and, when it filled its
//! entry, that entry's dependencies; a backend may add a hit's), and so does
//! [`add_dependency`]. When the body returns, the collected keys become dependencies of the new
//! entry, next to its `depends_on` templates; invalidating any of them removes the entry.
//!
//! Work spawned onto other tasks (`tokio::spawn`) does not carry the collector.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

thread_local! {
    /// The collectors active on this thread, innermost last.
    static SYNC_DEPS: RefCell<Vec<Vec<String>>> = const { RefCell::new(Vec::new()) };
    /// How many collectors are active on this thread right now: sync scopes, plus async scopes
    /// while their task is being polled here. One read tells the hit path whether to record.
    static ACTIVE: Cell<u32> = const { Cell::new(0) };
}

/// Counts a collector as active on this thread while it lives.
struct Active;
impl Active {
    #[inline]
    fn enter() -> Self {
        let _ = ACTIVE.try_with(|a| a.set(a.get() + 1));
        Active
    }
}
impl Drop for Active {
    #[inline]
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Adds a dependency to the entry being filled (no-op outside a cached function's body).
///
/// ```
/// use cache_core::context::{add_dependency, collect_blocking};
/// let ((), deps) = collect_blocking(|| add_dependency("user:7"));
/// assert_eq!(deps, vec!["user:7".to_string()]);
/// ```
pub fn add_dependency(dependency: impl Into<String>) {
    let dep = dependency.into();
    let _ = SYNC_DEPS.try_with(|s| {
        if let Some(top) = s.borrow_mut().last_mut() {
            top.push(dep);
        }
    });
}

/// True when a collector is active (inside a cached function's body that is filling).
#[inline]
pub fn is_collecting() -> bool {
    ACTIVE.try_with(|a| a.get() > 0).unwrap_or(false)
}

/// Runs `f` with a fresh thread-local collector and returns what it collected.
pub fn collect_blocking<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let scope = SyncScope::enter();
    let r = f();
    (r, scope.finish())
}

/// A thread-local collector scope (what [`collect_blocking`] wraps around its closure, kept
/// out of the generic part): pushed on entry, popped by [`SyncScope::finish`], or dropped
/// while unwinding.
pub(crate) struct SyncScope {
    _active: Active,
    finished: bool,
}

impl SyncScope {
    #[inline(never)]
    pub(crate) fn enter() -> Self {
        Self::resume(&mut Vec::new())
    }

    /// Makes `deps` (what an async body collected in its earlier polls) the innermost
    /// collector again, for one poll.
    #[inline(never)]
    fn resume(deps: &mut Vec<String>) -> Self {
        let deps = std::mem::take(deps);
        SYNC_DEPS.with(|s| s.borrow_mut().push(deps));
        SyncScope {
            _active: Active::enter(),
            finished: false,
        }
    }

    #[inline(never)]
    pub(crate) fn finish(mut self) -> Vec<String> {
        self.finished = true;
        SYNC_DEPS.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }
}

impl Drop for SyncScope {
    fn drop(&mut self) {
        if !self.finished {
            // unwinding: drop the collector of this scope
            let _ = SYNC_DEPS.try_with(|s| s.borrow_mut().pop());
        }
    }
}

/// Runs `fut` with a fresh collector (active while `fut` is polled) and returns what it
/// collected.
pub fn collect<F: Future>(fut: F) -> impl Future<Output = (F::Output, Vec<String>)> {
    Collecting {
        fut,
        deps: Vec::new(),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`collect`]: only the poll of the body is generic; entering and leaving
    /// the collector ([`SyncScope::resume`], [`SyncScope::suspend`]) is compiled once.
    struct Collecting<F> {
        #[pin]
        fut: F,
        deps: Vec<String>,
    }
}

impl<F: Future> Future for Collecting<F> {
    type Output = (F::Output, Vec<String>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let scope = SyncScope::resume(this.deps);
        let polled = this.fut.poll(cx);
        *this.deps = scope.finish();
        match polled {
            Poll::Ready(r) => Poll::Ready((r, std::mem::take(this.deps))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sync_scopes() {
        let ((inner, ()), outer) = collect_blocking(|| {
            add_dependency("a");
            let r = collect_blocking(|| add_dependency("b"));
            add_dependency("c");
            (r.1, ())
        });
        assert_eq!(inner, vec!["b"]);
        assert_eq!(outer, vec!["a", "c"]);
        assert!(!is_collecting());
    }

    #[tokio::test]
    async fn async_scope_crosses_await() {
        let ((), deps) = collect(async {
            add_dependency("x");
            tokio::task::yield_now().await;
            assert!(is_collecting());
            add_dependency("y");
        })
        .await;
        assert_eq!(deps, vec!["x", "y"]);
        assert!(!is_collecting());
    }

    #[tokio::test]
    async fn sync_inside_async_goes_to_innermost() {
        let (inner, outer) = collect(async {
            let ((), inner) = collect_blocking(|| add_dependency("sync"));
            add_dependency("async");
            inner
        })
        .await;
        assert_eq!(inner, vec!["sync"]);
        assert_eq!(outer, vec!["async"]);
    }
}
