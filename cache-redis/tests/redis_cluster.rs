//! The Redis backend on a real Redis Cluster the test creates: 3 masters and 3 replicas
//! (`redis-cli --cluster create`), reached through `RedisBackendBuilder::cluster_urls`, with
//! two backend instances (two nodes of an application):
//!
//! * entries land on all three masters;
//! * an entry on master A that depends on a name whose version key lives on master B, and an
//!   outer entry on master C that called it, are all dropped by one invalidation from the other
//!   node; a fill that began before that invalidation is rejected;
//! * `clear` reaches every master;
//! * two layered nodes (pub/sub coherence) keep their L1 coherent; tracking is refused.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, value, Backend, EntryOptions, Key, Lookup, SetOutcome};
use cache_redis::{Coherence, LayeredBackend, RedisBackend, SyncOptions, TrackingMode};
use test_support::cluster::RedisCluster;
use test_support::require_redis_server;

fn backend(urls: &[String]) -> Arc<RedisBackend> {
    Arc::new(
        RedisBackend::builder()
            .cluster_urls(urls.to_vec())
            .prefix("c")
            .op_timeout(Duration::from_secs(2))
            .connect_blocking()
            .expect("connects to the cluster"),
    )
}

/// The masters' ports, and for each slot range its master's port (`CLUSTER SLOTS`).
fn topology(cluster: &mut RedisCluster) -> (Vec<u16>, Vec<(i64, i64, u16)>) {
    let mut con = cluster.nodes_mut()[0].connection().unwrap();
    let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
    let mut ranges = Vec::new();
    let mut masters = Vec::new();
    for r in slots {
        let redis::Value::Array(parts) = r else {
            panic!()
        };
        let (redis::Value::Int(lo), redis::Value::Int(hi), redis::Value::Array(m)) =
            (&parts[0], &parts[1], &parts[2])
        else {
            panic!("{parts:?}")
        };
        let redis::Value::Int(port) = m[1] else {
            panic!()
        };
        ranges.push((*lo, *hi, port as u16));
        if !masters.contains(&(port as u16)) {
            masters.push(port as u16);
        }
    }
    (masters, ranges)
}

fn master_of(cluster: &mut RedisCluster, ranges: &[(i64, i64, u16)], key: &str) -> u16 {
    let mut con = cluster.nodes_mut()[0].connection().unwrap();
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut con)
        .unwrap();
    ranges
        .iter()
        .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
        .map(|r| r.2)
        .expect("every slot is served")
}

static INNER_RUNS: AtomicUsize = AtomicUsize::new(0);
static OUTER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10m", depends_on = ["stock:{sku}"])]
async fn stock(sku: u64) -> String {
    format!(
        "stock {sku} v{}",
        INNER_RUNS.fetch_add(1, Ordering::SeqCst) + 1
    )
}

#[cached(ttl = "10m")]
async fn shelf(id: u64, sku: u64) -> String {
    OUTER_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("shelf {id}: {}", stock(sku).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_runs_on_a_three_master_cluster() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 1).expect("the cluster forms");
    let urls = cluster.urls();
    let (masters, ranges) = topology(&mut cluster);
    assert_eq!(masters.len(), 3);
    let a = backend(&urls);
    let b = backend(&urls);
    assert!(a.is_cluster());

    // entries land on all three masters
    for i in 0..60u64 {
        registry::with_backend(a.clone(), stock(1000 + i)).await;
    }
    for port in &masters {
        let node = cluster
            .nodes_mut()
            .iter_mut()
            .find(|n| n.port() == *port)
            .unwrap();
        let mut con = node.connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("c:{*").query(&mut con).unwrap();
        assert!(!keys.is_empty(), "master {port} holds entries");
    }

    // inner entry, its dependency's version key and the outer entry on three masters
    let (id, sku) = (0..10_000u64)
        .flat_map(|id| (0..50u64).map(move |sku| (id, sku)))
        .find(|&(id, sku)| {
            let inner = master_of(
                &mut cluster,
                &ranges,
                &format!("c:{{redis_cluster::stock({sku})}}"),
            );
            let dep = master_of(&mut cluster, &ranges, &format!("c:v:{{stock:{sku}}}"));
            let outer = master_of(
                &mut cluster,
                &ranges,
                &format!("c:{{redis_cluster::shelf({id}, {sku})}}"),
            );
            inner != dep && dep != outer && inner != outer
        })
        .expect("keys on three masters");
    let page = registry::with_backend(a.clone(), shelf(id, sku)).await;
    let outer_runs = OUTER_RUNS.load(Ordering::SeqCst);
    assert_eq!(
        registry::with_backend(b.clone(), shelf(id, sku)).await,
        page
    );
    assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), outer_runs, "a hit on B");
    b.invalidate(&format!("stock:{sku}")).await.unwrap();
    let fresh = registry::with_backend(a.clone(), shelf(id, sku)).await;
    assert_ne!(
        fresh, page,
        "one invalidation drops the inner and the outer entry"
    );
    assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), outer_runs + 1);

    // a fill that began before an invalidation on another master is rejected
    let key = Key::from_text("redis_cluster::raced(1)");
    let declared = vec!["row:1".to_string()];
    let Lookup::Miss(lease) = a.get_declared(&key, &declared).await.unwrap() else {
        panic!("a miss")
    };
    b.invalidate("row:1").await.unwrap();
    b.invalidate("row:2").await.unwrap();
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .depends_on("row:1")
        .depends_on("row:2");
    let out = a
        .set(&key, value::share(1u64), &options, lease)
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Rejected, "the raced fill must not land");
    assert!(matches!(
        b.get_declared(&key, &declared).await.unwrap(),
        Lookup::Miss(_)
    ));

    // clear reaches every master
    a.clear().await.unwrap();
    for port in &masters {
        let node = cluster
            .nodes_mut()
            .iter_mut()
            .find(|n| n.port() == *port)
            .unwrap();
        let mut con = node.connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("c:*").query(&mut con).unwrap();
        assert!(keys.is_empty(), "master {port} still holds {keys:?}");
    }

    // layered nodes: pub/sub coherence works, tracking is refused
    let refused = LayeredBackend::builder((*backend(&urls)).clone())
        .coherence(Coherence::Tracking(TrackingMode::Default))
        .build();
    assert!(refused.unwrap_err().to_string().contains("PubSub"));
    let layered = || {
        let l = LayeredBackend::builder((*backend(&urls)).clone())
            .coherence(Coherence::PubSub(SyncOptions::new("c:sync")))
            .build()
            .unwrap();
        assert!(l.wait_coherent(Duration::from_secs(10)));
        Arc::new(l)
    };
    let (la, lb) = (layered(), layered());
    let k = Key::from_text("redis_cluster::l1(1)");
    let opts = EntryOptions::new().depends_on("l1dep");
    la.set(
        &k,
        value::share(7u64),
        &opts,
        cache_core::Lease::UNCONDITIONAL,
    )
    .await
    .unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while !lb.local_store().contains(k.text()) {
        assert!(Instant::now() < end, "B's L1 holds the entry");
        let _ = lb.get(&k).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    la.invalidate("l1dep").await.unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while lb.local_store().contains(k.text()) {
        assert!(Instant::now() < end, "B's L1 dropped the entry");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(lb.get(&k).await.unwrap(), Lookup::Miss(_)));
}
