//! Invalidation under memory pressure: hot entries (kept hot by reads while colder fills push
//! Redis past its `maxmemory`) are all dropped by the invalidation of their dependencies.
//! Protocol 1 holds under `volatile-*` policies only (its dependency indexes have no ttl, so
//! they are never evicted); protocol 2 under every policy (an entry is validated against the
//! versions of its dependencies: an evicted version key makes it a miss).

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use cache_core::{value, Backend, EntryOptions, Key, Lookup};
use test_support::{require_redis_server, RedisServer};

const HOT: u64 = 1_000;

async fn fill(b: &dyn Backend, text: &str, dep: &str, bytes: usize) {
    let k = Key::from_text(text);
    if let Ok(Lookup::Miss(lease)) = b.get(&k).await {
        let opts = EntryOptions::new()
            .ttl(Duration::from_secs(600))
            .depends_on(dep);
        let _ = b
            .set(&k, value::share("x".repeat(bytes)), &opts, lease)
            .await;
    }
}

async fn is_hit(b: &dyn Backend, text: &str) -> bool {
    matches!(b.get(&Key::from_text(text)).await, Ok(Lookup::Hit(_)))
}

fn evicted_keys(server: &RedisServer) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut server.connection().unwrap())
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn hot_entries_are_invalidated_under(policy: &str, protocol: u8) {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server =
        RedisServer::start_with(&bin, &["--maxmemory", "8mb", "--maxmemory-policy", policy])
            .unwrap();
    let b: Arc<dyn Backend> = Arc::new(
        common::builder(&server)
            .protocol(protocol)
            .connect()
            .await
            .unwrap(),
    );
    for i in 0..HOT {
        fill(&*b, &format!("hot({i})"), &format!("k:{i}"), 100).await;
    }
    // waves of colder fills, the hot entries read in between, until Redis has evicted plenty
    let mut wave = 0u64;
    while evicted_keys(&server) < 10_000 {
        assert!(
            wave < 40,
            "Redis did not evict (evicted_keys {})",
            evicted_keys(&server)
        );
        for j in 0..2_000 {
            let n = wave * 2_000 + j;
            fill(&*b, &format!("cold({n})"), &format!("c:{n}"), 1_000).await;
        }
        for i in 0..HOT {
            let _ = is_hit(&*b, &format!("hot({i})")).await;
        }
        wave += 1;
    }
    let mut hot_before = 0;
    for i in 0..HOT {
        hot_before += is_hit(&*b, &format!("hot({i})")).await as u64;
    }
    assert!(
        hot_before > HOT / 2,
        "{policy}: the hot entries stayed ({hot_before})"
    );
    for i in 0..HOT {
        b.invalidate(&format!("k:{i}")).await.unwrap();
    }
    let mut stale = 0;
    for i in 0..HOT {
        stale += is_hit(&*b, &format!("hot({i})")).await as u64;
    }
    println!(
        "{policy}, protocol {protocol}: {} keys evicted, {hot_before} hot entries cached, {stale} served after their invalidation",
        evicted_keys(&server)
    );
    assert_eq!(stale, 0, "{policy}: invalidated hot entries still served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_lru_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("volatile-lru", common::protocol()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_lfu_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("volatile-lfu", common::protocol()).await;
}

/// Protocol 1's gap: under `allkeys-*` Redis evicts the reverse-index sets of hot entries, and
/// their invalidation misses them. Run with `--ignored` to measure it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "protocol 1's known gap: allkeys-* policies evict dependency indexes (README: use volatile-* or protocol 2)"]
async fn protocol_1_allkeys_lru_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("allkeys-lru", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_allkeys_lru_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("allkeys-lru", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_allkeys_lfu_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("allkeys-lfu", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_volatile_lru_keeps_invalidation_whole() {
    hot_entries_are_invalidated_under("volatile-lru", 2).await;
}
