//! `#[cached]` on free fns, sync and async: every option, counting how often each body ran.
//! Each test runs against its own fresh `MemoryBackend` (scoped override), so tests don't share
//! entries.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::{cached, registry, MemoryBackend};

fn mem() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new())
}

static SQUARE_RUNS: AtomicUsize = AtomicUsize::new(0);

/// Squares (docs are kept).
#[cached]
#[must_use]
pub fn square(x: u64) -> u64 {
    SQUARE_RUNS.fetch_add(1, Ordering::SeqCst);
    x * x
}

#[test]
fn sync_free_fn_runs_once_per_key() {
    registry::with_backend_blocking(mem(), || {
        let before = SQUARE_RUNS.load(Ordering::SeqCst);
        assert_eq!(square(3), 9);
        assert_eq!(square(3), 9);
        assert_eq!(square(4), 16);
        assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst) - before, 2);
        square_invalidate(3).unwrap();
        assert_eq!(square(3), 9);
        assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst) - before, 3);
        assert_eq!(square_entry(4).key().text(), "macros_basic::square(4)");
        assert_eq!(square_entry(4).get_blocking(), Some(16));
        square_invalidate_all().unwrap();
        assert_eq!(square_entry(4).get_blocking(), None);
        assert_eq!(square_uncached(5), 25);
        assert_eq!(square_refresh(3), 9);
        assert_eq!(SQUARE_RUNS.load(Ordering::SeqCst) - before, 5);
    });
}

static ASYNC_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "5m")]
async fn fetch(db: &str, id: u64) -> Result<String, String> {
    ASYNC_RUNS.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    if id == 0 {
        return Err("no such user".into());
    }
    Ok(format!("{db}:{id}"))
}

#[tokio::test]
async fn async_free_fn_caches_only_ok() {
    registry::with_backend(mem(), async {
        let before = ASYNC_RUNS.load(Ordering::SeqCst);
        assert_eq!(fetch("a", 1).await.unwrap(), "a:1");
        assert_eq!(fetch("a", 1).await.unwrap(), "a:1");
        assert_eq!(ASYNC_RUNS.load(Ordering::SeqCst) - before, 1);
        assert!(fetch("a", 0).await.is_err());
        assert!(fetch("a", 0).await.is_err());
        assert_eq!(
            ASYNC_RUNS.load(Ordering::SeqCst) - before,
            3,
            "errors are not cached"
        );
        fetch_invalidate("a", 1).await.unwrap();
        assert_eq!(fetch("a", 1).await.unwrap(), "a:1");
        assert_eq!(ASYNC_RUNS.load(Ordering::SeqCst) - before, 4);
        assert_eq!(fetch_entry("a", 1).get().await.as_deref(), Some("a:1"));
        fetch_invalidate_all().await.unwrap();
        assert_eq!(fetch_entry("a", 1).get().await, None);
    })
    .await;
}

/// A value behind an `Arc` is cached as users write it (serde's `rc` feature comes with
/// cache-core): the hit clones the `Arc`, not the map.
#[cache_core::cached]
fn config(env: String) -> std::sync::Arc<std::collections::HashMap<String, String>> {
    std::sync::Arc::new(std::collections::HashMap::from([("env".to_string(), env)]))
}

#[test]
fn arc_values_are_cacheable() {
    cache_core::registry::with_backend_blocking(
        std::sync::Arc::new(cache_core::MemoryBackend::new()),
        || {
            let a = config("prod".into());
            let b = config("prod".into());
            assert!(std::sync::Arc::ptr_eq(&a, &b), "the hit is the same Arc");
            assert_eq!(b["env"], "prod");
        },
    );
}
