//! `#[cached(local)]`: values that cannot be serialized (closures, handles) are cached in this
//! process's memory, whatever backend is installed, with dependencies and invalidation.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cache_core::{cached, registry, Backend, MemoryBackend};

/// Not `Serialize`: a client handle with a closure inside.
#[derive(Clone)]
struct Client {
    id: u32,
    call: Arc<dyn Fn(u32) -> u32 + Send + Sync>,
}

static CLIENTS: AtomicUsize = AtomicUsize::new(0);

#[cached(local, ttl = "10m", depends_on = ["client:{id}"])]
fn client(id: u32) -> Client {
    CLIENTS.fetch_add(1, Ordering::SeqCst);
    Client {
        id,
        call: Arc::new(move |x| x * id),
    }
}

static MATCHERS: AtomicUsize = AtomicUsize::new(0);

type Matcher = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[cached(local)]
async fn matcher(prefix: String) -> Result<Matcher, String> {
    MATCHERS.fetch_add(1, Ordering::SeqCst);
    if prefix.is_empty() {
        return Err("empty prefix".into());
    }
    Ok(Arc::new(move |s: &str| s.starts_with(&prefix)))
}

#[test]
fn local_values_are_cached_and_invalidated_on_the_memory_default() {
    let m: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    registry::with_backend_blocking(m.clone(), || {
        let before = CLIENTS.load(Ordering::SeqCst);
        let a = client(3);
        let b = client(3);
        assert_eq!(((a.call)(2), (b.call)(2), b.id), (6, 6, 3));
        assert_eq!(CLIENTS.load(Ordering::SeqCst) - before, 1, "one body run");
        // the entry lives in the installed memory backend
        assert_eq!(m.stats().entries, 1);
        cache_core::invalidate_dependency_blocking("client:3").unwrap();
        client(3);
        assert_eq!(CLIENTS.load(Ordering::SeqCst) - before, 2);
        client_invalidate(3).unwrap();
        client(3);
        assert_eq!(CLIENTS.load(Ordering::SeqCst) - before, 3);
    });
}

#[tokio::test]
async fn async_local_fns_cache_ok_values_only() {
    let m: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    registry::with_backend(m, async {
        let before = MATCHERS.load(Ordering::SeqCst);
        let f = matcher("ab".into()).await.unwrap();
        let g = matcher("ab".into()).await.unwrap();
        assert!(f("abc") && g("abd") && !g("b"));
        assert_eq!(MATCHERS.load(Ordering::SeqCst) - before, 1);
        assert!(matcher(String::new()).await.is_err());
        assert!(matcher(String::new()).await.is_err());
        assert_eq!(
            MATCHERS.load(Ordering::SeqCst) - before,
            3,
            "errors are not cached"
        );
    })
    .await;
}

/// With a backend that serializes (Redis), a local fn keeps its values in the process's local
/// memory backend: nothing goes to Redis, and dependency invalidations still reach them.
#[test]
fn with_redis_installed_local_values_stay_in_process() {
    let Some(bin) = test_support::require_redis_server() else {
        return;
    };
    let server = test_support::RedisServer::start(&bin).expect("redis-server starts");
    let redis: Arc<dyn Backend> = Arc::new(
        cache_redis::RedisBackend::builder()
            .url(server.url())
            .prefix("loc")
            .connect_blocking()
            .unwrap(),
    );
    registry::with_backend_blocking(redis, || {
        let before = CLIENTS.load(Ordering::SeqCst);
        assert_eq!((client(40).call)(2), 80);
        assert_eq!((client(40).call)(3), 120);
        assert_eq!(
            CLIENTS.load(Ordering::SeqCst) - before,
            1,
            "cached in process"
        );
        assert!(registry::local_memory().stats().entries >= 1);
        cache_core::invalidate_dependency_blocking("client:40").unwrap();
        client(40);
        assert_eq!(CLIENTS.load(Ordering::SeqCst) - before, 2);
    });
    let mut con = server.connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("loc:{*").query(&mut con).unwrap();
    assert!(keys.is_empty(), "no entry went to Redis: {keys:?}");
}
