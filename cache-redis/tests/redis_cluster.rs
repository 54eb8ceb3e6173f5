//! The Redis backend on a real Redis Cluster the test creates: 3 masters and 3 replicas
//! (`redis-cli --cluster create`), reached through `RedisBackendBuilder::cluster_urls`, with
//! two backend instances (two nodes of an application):
//!
//! * entries land on all three masters;
//! * an entry on master A that depends on a name whose version key lives on master B, and an
//!   outer entry on master C that called it, are all dropped by one invalidation from the other
//!   node; a fill that began before that invalidation is rejected;
//! * `clear` reaches every master;
//! * two layered nodes (pub/sub coherence) keep their L1 coherent; tracking is refused; three
//!   synced nodes drop an entry another node invalidated;
//! * under load from both instances, a manual `CLUSTER FAILOVER` and the migration of the slots
//!   of a live entry and of its dependency's version key (`CLUSTER SETSLOT` + `MIGRATE`): every
//!   invalidation is acknowledged and no read that starts after an acknowledged invalidation
//!   returns the value from before it.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, value, Backend, EntryOptions, Key, Lookup, SetOutcome};
use cache_redis::{Coherence, LayeredBackend, RedisBackend, SyncOptions, TrackingMode};
use test_support::cluster::RedisCluster;
use test_support::require_redis_server;

fn backend(urls: &[String]) -> Arc<RedisBackend> {
    backend_with(urls, Duration::from_secs(2))
}

fn backend_with(urls: &[String], op_timeout: Duration) -> Arc<RedisBackend> {
    Arc::new(
        RedisBackend::builder()
            .cluster_urls(urls.to_vec())
            .prefix("c")
            .op_timeout(op_timeout)
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

/// The keys matching `pattern` on the node listening on `port`.
fn keys_on(cluster: &mut RedisCluster, port: u16, pattern: &str) -> Vec<String> {
    let node = cluster
        .nodes_mut()
        .iter_mut()
        .find(|n| n.port() == port)
        .expect("a node on that port");
    let mut con = node.connection().unwrap();
    redis::cmd("KEYS").arg(pattern).query(&mut con).unwrap()
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
        let keys = keys_on(&mut cluster, *port, "c:{*");
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
        let keys = keys_on(&mut cluster, *port, "c:*");
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

    // three synced nodes (local memory caches, invalidations over the cluster's pub/sub)
    let synced: Vec<_> = (0..3)
        .map(|_| {
            let n = cache_redis::with_redis_sync(
                cache_core::MemoryBackend::new(),
                a.client().clone(),
                "c:synced",
            )
            .unwrap();
            assert!(n.synchronizer().wait_subscribed(Duration::from_secs(10)));
            n
        })
        .collect();
    let k = Key::from_text("redis_cluster::synced(1)");
    let opts = EntryOptions::new().depends_on("synced-dep");
    // each node's local copy (written locally, without publishing)
    for n in &synced {
        n.local()
            .set(
                &k,
                value::share(1u64),
                &opts,
                cache_core::Lease::UNCONDITIONAL,
            )
            .await
            .unwrap();
        assert!(n.local().contains(k.text()));
    }
    synced[0].invalidate("synced-dep").await.unwrap();
    let end = Instant::now() + Duration::from_secs(5);
    while synced.iter().any(|n| n.local().contains(k.text())) {
        assert!(Instant::now() < end, "every synced node drops the entry");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

const KEYS: u64 = 16;
static DB: [AtomicU64; KEYS as usize] = [const { AtomicU64::new(0) }; KEYS as usize];
/// 0: before the failover, 1: during it, 2: after it, 3: during the slot migration, 4: after.
static PHASE: AtomicUsize = AtomicUsize::new(0);
static ACKED: [AtomicU64; KEYS as usize] = [const { AtomicU64::new(0) }; KEYS as usize];

#[cached(ttl = "10m", depends_on = ["price:{id}"])]
async fn price(id: u64) -> u64 {
    DB[id as usize].load(Ordering::SeqCst)
}

fn node_id(con: &mut redis::Connection) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(con).unwrap()
}

fn role(con: &mut redis::Connection) -> String {
    let r: Vec<redis::Value> = redis::cmd("ROLE").query(con).unwrap();
    match &r[0] {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        other => panic!("{other:?}"),
    }
}

/// Moves `slot` from master `from` to master `to` (`CLUSTER SETSLOT` + `MIGRATE`, as
/// `redis-cli --cluster reshard` does), telling every master the new owner.
fn migrate_slot(cluster: &mut RedisCluster, slot: i64, from: u16, to: u16) {
    let nodes = cluster.nodes_mut();
    let idx = |p: u16| nodes.iter().position(|n| n.port() == p).unwrap();
    let (fi, ti) = (idx(from), idx(to));
    let mut src = nodes[fi].connection().unwrap();
    let mut dst = nodes[ti].connection().unwrap();
    let (src_id, dst_id) = (node_id(&mut src), node_id(&mut dst));
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("IMPORTING")
        .arg(&src_id)
        .query(&mut dst)
        .unwrap();
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg("MIGRATING")
        .arg(&dst_id)
        .query(&mut src)
        .unwrap();
    for _ in 0..10_000 {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut src)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let _: redis::Value = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to)
            .arg("")
            .arg(0)
            .arg(5000)
            .arg("KEYS")
            .arg(&keys)
            .query(&mut src)
            .unwrap();
    }
    for n in nodes.iter_mut() {
        let mut con = n.connection().unwrap();
        if role(&mut con) == "master" {
            let _: () = redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("NODE")
                .arg(&dst_id)
                .query(&mut con)
                .unwrap();
        }
    }
}

/// Under load from two backend instances, a manual failover and a slot migration of live
/// entries: every invalidation is acknowledged, and no read that starts after an acknowledged
/// invalidation returns the value from before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_slot_migration_under_load_serve_nothing_stale() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 1).expect("the cluster forms");
    let urls = cluster.urls();
    // an operation waits out a failover (its master pauses writes until the replica has caught
    // up, then the client follows the MOVED replies): a longer op timeout than the default
    let a = backend_with(&urls, Duration::from_secs(10));
    let b = backend_with(&urls, Duration::from_secs(10));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stale = Arc::new(AtomicUsize::new(0));
    let reads = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    // each node reads its own half of the keys: the two "nodes" share this process, and a
    // call joins an in-process flight of its key that started before an invalidation another
    // node made (as a second call on one node would): that is single flight, not staleness
    for (half, reader) in [a.clone(), b.clone()].into_iter().enumerate() {
        let (stop, stale, reads) = (stop.clone(), stale.clone(), reads.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let id = (i * 2 + half as u64) % KEYS;
                i += 1;
                let floor = ACKED[id as usize].load(Ordering::SeqCst);
                let v = registry::with_backend(reader.clone(), price(id)).await;
                reads.fetch_add(1, Ordering::SeqCst);
                if v < floor {
                    stale.fetch_add(1, Ordering::SeqCst);
                    eprintln!(
                        "stale read: price({id}) = {v} after invalidation {floor} was acknowledged (phase {})",
                        PHASE.load(Ordering::SeqCst)
                    );
                }
            }
        }));
    }
    let writer = {
        let (stop, b) = (stop.clone(), b.clone());
        tokio::spawn(async move {
            let (mut acked, mut failed) = (0u64, Vec::new());
            let mut slowest = Duration::ZERO;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let id = i % KEYS;
                i += 1;
                let v = DB[id as usize].fetch_add(1, Ordering::SeqCst) + 1;
                let t = Instant::now();
                let r = b.invalidate(&format!("price:{id}")).await;
                slowest = slowest.max(t.elapsed());
                match r {
                    Ok(()) => {
                        ACKED[id as usize].fetch_max(v, Ordering::SeqCst);
                        acked += 1;
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            (acked, failed, slowest)
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // a manual failover: a replica takes over its master's slots
    let replica = cluster
        .nodes_mut()
        .iter_mut()
        .position(|n| role(&mut n.connection().unwrap()) == "slave")
        .expect("a replica");
    let mut con = cluster.nodes_mut()[replica].connection().unwrap();
    PHASE.store(1, Ordering::SeqCst);
    let _: () = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut con)
        .unwrap();
    let started = Instant::now();
    let end = started + Duration::from_secs(20);
    while role(&mut con) != "master" {
        assert!(Instant::now() < end, "the replica never took over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("the replica took over in {:?}", started.elapsed());
    PHASE.store(2, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // a slot migration of live entries: price(0)'s entry and its version key
    let (_, ranges_now) = topology(&mut cluster);
    let masters: Vec<u16> = {
        let mut m: Vec<u16> = ranges_now.iter().map(|r| r.2).collect();
        m.dedup();
        m.sort();
        m.dedup();
        m
    };
    for key in [
        "c:{redis_cluster::price(0)}".to_string(),
        "c:v:{price:0}".to_string(),
    ] {
        let from = master_of(&mut cluster, &ranges_now, &key);
        let to = *masters.iter().find(|m| **m != from).unwrap();
        let mut c0 = cluster.nodes_mut()[0].connection().unwrap();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(&key)
            .query(&mut c0)
            .unwrap();
        PHASE.store(3, Ordering::SeqCst);
        migrate_slot(&mut cluster, slot, from, to);
    }
    PHASE.store(4, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }
    let (acked, failed, slowest) = writer.await.unwrap();
    println!(
        "failover + migration under load: {} reads, {acked} invalidations acknowledged (slowest {slowest:?}), {} failed ({:?}); backend errors A {} B {}",
        reads.load(Ordering::SeqCst),
        failed.len(),
        failed.first(),
        a.stats().errors,
        b.stats().errors
    );
    assert!(acked > 100 && reads.load(Ordering::SeqCst) > 100);
    assert_eq!(
        stale.load(Ordering::SeqCst),
        0,
        "a read returned a value older than an acknowledged invalidation"
    );
    assert!(failed.is_empty(), "invalidations failed: {failed:?}");
}

fn sum_info(cluster: &mut RedisCluster, section: &str, field: &str) -> u64 {
    cluster
        .nodes_mut()
        .iter_mut()
        .map(|n| {
            let info: String = redis::cmd("INFO")
                .arg(section)
                .query(&mut n.connection().unwrap())
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        })
        .sum()
}

/// Runs `f(i)` for `0..n`, 100 at a time.
async fn batched<F, Fut>(n: u64, f: F)
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut from = 0;
    while from < n {
        let to = (from + 100).min(n);
        futures_util::future::join_all((from..to).map(&f)).await;
        from = to;
    }
}

/// Every master under `maxmemory` with `allkeys-lru`: hot entries kept hot by reads while
/// colder fills push each master past its limit are all dropped by the invalidation of their
/// dependencies (version keys on every master).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_on_every_master_keeps_invalidation_whole() {
    const HOT: u64 = 600;
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 0).expect("the cluster forms");
    for n in cluster.nodes_mut() {
        let mut con = n.connection().unwrap();
        for (k, v) in [("maxmemory", "6mb"), ("maxmemory-policy", "allkeys-lru")] {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg(k)
                .arg(v)
                .query(&mut con)
                .unwrap();
        }
    }
    let b = backend(&cluster.urls());
    let fill = |text: String, dep: String, bytes: usize| {
        let b = b.clone();
        async move {
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
    };
    let hits = |b: Arc<RedisBackend>| async move {
        let mut n = 0;
        for i in 0..HOT {
            n += matches!(
                b.get(&Key::from_text(format!("hot({i})"))).await,
                Ok(Lookup::Hit(_))
            ) as u64;
        }
        n
    };
    batched(HOT, |i| fill(format!("hot({i})"), format!("k:{i}"), 100)).await;
    let mut wave = 0u64;
    while sum_info(&mut cluster, "stats", "evicted_keys") < 6_000 {
        assert!(wave < 40, "Redis did not evict");
        batched(1_500, |j| {
            let n = wave * 1_500 + j;
            fill(format!("cold({n})"), format!("c:{n}"), 1_000)
        })
        .await;
        hits(b.clone()).await;
        wave += 1;
    }
    let hot_before = hits(b.clone()).await;
    assert!(
        hot_before > HOT / 2,
        "the hot entries stayed ({hot_before})"
    );
    batched(HOT, |i| {
        let b = b.clone();
        async move { b.invalidate(&format!("k:{i}")).await.unwrap() }
    })
    .await;
    let stale = hits(b.clone()).await;
    println!(
        "cluster, allkeys-lru on 3 masters: {} keys evicted, {hot_before} hot entries cached, {stale} served after their invalidation",
        sum_info(&mut cluster, "stats", "evicted_keys")
    );
    assert_eq!(stale, 0, "invalidated hot entries still served");
}

/// 100,000 entries depending on one name, spread over the three masters: invalidating it is one
/// `O(1)` script on one master; no master runs a command for 10 ms or more meanwhile (`SLOWLOG`,
/// asserted; the worst `PING` of any master is printed); afterwards none of a sample of
/// dependents is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_fan_out_blocks_no_master() {
    const N: u64 = 100_000;
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 0).expect("the cluster forms");
    let urls = cluster.urls();
    let b = backend(&urls);
    // one real fill, whose envelope lists `big` with its token, copied to N entry keys
    let first = Key::from_text("big(0)");
    let Lookup::Miss(lease) = b.get(&first).await.unwrap() else {
        panic!("a miss")
    };
    let opts = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .depends_on("big");
    b.set(&first, value::share(1u64), &opts, lease)
        .await
        .unwrap();
    let raw = redis::cluster::ClusterClient::new(urls.clone())
        .unwrap()
        .get_async_connection()
        .await
        .unwrap();
    let envelope: Vec<u8> = redis::cmd("GET")
        .arg("c:{big(0)}")
        .query_async(&mut raw.clone())
        .await
        .unwrap();
    batched(N, |i| {
        let (mut con, envelope) = (raw.clone(), envelope.clone());
        async move {
            let _: () = redis::cmd("SET")
                .arg(format!("c:{{big({i})}}"))
                .arg(envelope)
                .arg("PX")
                .arg(600_000)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    })
    .await;
    let sample: Vec<u64> = (0..1_000u64)
        .map(|i| i * (N / 1_000))
        .chain([N - 1])
        .collect();
    for i in &sample[..10] {
        assert!(matches!(
            b.get(&Key::from_text(format!("big({i})"))).await.unwrap(),
            Lookup::Hit(_)
        ));
    }
    // every master logs any command slower than 10 ms (server time, unlike a PING's, is not
    // inflated by the test machine's scheduling); and other threads PING every master throughout
    for n in cluster.nodes_mut() {
        let mut con = n.connection().unwrap();
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(10_000)
            .query(&mut con)
            .unwrap();
        let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut con).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pingers: Vec<_> = cluster
        .nodes_mut()
        .iter_mut()
        .map(|n| {
            let mut con = n.connection().unwrap();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    let t = Instant::now();
                    let _: String = redis::cmd("PING").query(&mut con).unwrap();
                    worst = worst.max(t.elapsed());
                    std::thread::sleep(Duration::from_micros(200));
                }
                worst
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    let t = Instant::now();
    b.invalidate("big").await.unwrap();
    let took = t.elapsed();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::SeqCst);
    let worst = pingers
        .into_iter()
        .map(|p| p.join().unwrap())
        .max()
        .unwrap();
    let mut served = 0;
    for i in &sample {
        served += matches!(
            b.get(&Key::from_text(format!("big({i})"))).await.unwrap(),
            Lookup::Hit(_)
        ) as u64;
    }
    let slow: u64 = cluster
        .nodes_mut()
        .iter_mut()
        .map(|n| {
            redis::cmd("SLOWLOG")
                .arg("LEN")
                .query::<u64>(&mut n.connection().unwrap())
                .unwrap()
        })
        .sum();
    println!(
        "cluster fan-out: {N} dependents over 3 masters invalidated in {took:?}; worst PING of any master meanwhile {worst:?}; commands over 10 ms on any master: {slow}; {served} of {} sampled served",
        sample.len()
    );
    assert_eq!(served, 0);
    assert_eq!(slow, 0, "a command blocked a master for more than 10 ms");
}

/// Fills entry `text` (a `u64`) depending on `dep`, as a cached call declaring it would.
async fn fill_one(b: &RedisBackend, text: &str, dep: &str, ttl: Duration) -> Key {
    let key = Key::from_text(text);
    let declared = vec![dep.to_string()];
    let Lookup::Miss(lease) = b.get_declared(&key, &declared).await.unwrap() else {
        panic!("a miss")
    };
    let opts = EntryOptions::new().ttl(ttl).depends_on(dep);
    b.set(&key, value::share(1u64), &opts, lease).await.unwrap();
    key
}

/// The index of the node listening on `port`.
fn node_index(cluster: &mut RedisCluster, port: u16) -> usize {
    cluster
        .nodes_mut()
        .iter()
        .position(|n| n.port() == port)
        .expect("a node on that port")
}

/// Sends `sig` (`-STOP`, `-CONT`) to process `pid`.
fn signal(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// The port of `port`'s replica (`ROLE` of every node).
fn replica_of(cluster: &mut RedisCluster, master: u16) -> u16 {
    for n in cluster.nodes_mut() {
        let r: Vec<redis::Value> = redis::cmd("ROLE")
            .query(&mut n.connection().unwrap())
            .unwrap();
        if let (Some(redis::Value::BulkString(role)), Some(redis::Value::Int(p))) =
            (r.first(), r.get(2))
        {
            if role == b"slave" && *p as u16 == master {
                return n.port();
            }
        }
    }
    panic!("no replica of {master}")
}

/// A master crashes right after acknowledging an invalidation its replica never received (the
/// replica is frozen meanwhile); the replica takes over with the older version token. The
/// backend notices a master it never saw before, serves no hit until it has cleared its
/// entries, and the entry that invalidation dropped is not served after that. (Between the
/// takeover and the watch's next check, at most 500 ms, it can be: printed, not asserted.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_an_invalidation_serves_nothing_stale() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 1).expect("the cluster forms");
    let urls = cluster.urls();
    let (_, ranges) = topology(&mut cluster);
    let b = backend_with(&urls, Duration::from_secs(10));
    let key = fill_one(
        &b,
        "redis_cluster::lost(1)",
        "lost:1",
        Duration::from_secs(600),
    )
    .await;
    let declared = vec!["lost:1".to_string()];
    let version = "c:v:{lost:1}";
    let master = master_of(&mut cluster, &ranges, version);
    let replica = replica_of(&mut cluster, master);
    let (mi, ri) = (
        node_index(&mut cluster, master),
        node_index(&mut cluster, replica),
    );
    let mut m = cluster.nodes_mut()[mi].connection().unwrap();
    let old: String = redis::cmd("GET").arg(version).query(&mut m).unwrap();
    // the replica has everything so far; then it is frozen (SIGSTOP) and cut off, the
    // invalidation is acknowledged by the master alone, and the master dies before the replica
    // runs again
    let mut r = cluster.nodes_mut()[ri].connection().unwrap();
    let _: () = redis::cmd("READONLY").query(&mut r).unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let seen: Option<String> = redis::cmd("GET").arg(version).query(&mut r).unwrap();
        if seen.as_deref() == Some(old.as_str()) {
            break;
        }
        assert!(Instant::now() < end, "the replica never got the token");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let replica_pid = cluster.nodes_mut()[ri].pid().expect("the replica runs");
    signal("-STOP", replica_pid);
    // the master drops its link to the frozen replica, which cannot reconnect
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query(&mut m)
        .unwrap();
    let invalidated = b.invalidate("lost:1").await;
    let bumped: Option<String> = redis::cmd("GET").arg(version).query(&mut m).unwrap();
    assert_ne!(
        bumped.as_deref(),
        Some(old.as_str()),
        "the master has the bump"
    );
    cluster.nodes_mut()[mi].kill();
    signal("-CONT", replica_pid);
    invalidated.unwrap();
    // the replica takes over (bounded)
    let end = Instant::now() + Duration::from_secs(30);
    while role(&mut r) != "master" {
        assert!(Instant::now() < end, "the replica never took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // the old token, or nothing if the backend has already noticed and cleared
    let now: Option<String> = redis::cmd("GET").arg(version).query(&mut r).unwrap();
    assert_ne!(now, bumped, "the setup must lose the invalidation's bump");
    assert!(
        now.as_deref() == Some(old.as_str()) || b.redis_stats().server_restarts >= 1,
        "the new master holds {now:?}"
    );
    // the backend notices the new master (its watch checks every 500 ms) and clears; until
    // then the entry can be served (the window the README states), never after
    let end = Instant::now() + Duration::from_secs(30);
    let mut in_window = 0;
    while b.redis_stats().restart_clears < 1 {
        assert!(
            Instant::now() < end,
            "the backend never cleared after the failover"
        );
        in_window += matches!(b.get_declared(&key, &declared).await, Ok(Lookup::Hit(_))) as u32;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("reads that served the entry before the backend noticed the new master: {in_window}");
    assert!(
        !matches!(b.get_declared(&key, &declared).await, Ok(Lookup::Hit(_))),
        "the invalidated entry was served after the clear"
    );
    assert!(b.redis_stats().server_restarts >= 1);
}

/// With `invalidation_replicas(1)`, an invalidation that a master's replica has not received is
/// not acknowledged (a failover could lose it); once the replica runs again it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "flaky under CI load: once, the queued invalidation's WAIT kept failing for 20 s after the replica resumed (cause not found); run with --ignored"]
async fn an_invalidation_waits_for_a_replica_when_asked_to() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 1).expect("the cluster forms");
    let urls = cluster.urls();
    let (_, ranges) = topology(&mut cluster);
    let b = Arc::new(
        RedisBackend::builder()
            .cluster_urls(urls.clone())
            .prefix("c")
            .op_timeout(Duration::from_secs(2))
            .invalidation_replicas(1)
            .connect_blocking()
            .expect("connects"),
    );
    // an entry depending on the name (a queued invalidation is kept as long as one may live)
    fill_one(
        &b,
        "redis_cluster::replicated(1)",
        "replicated:1",
        Duration::from_secs(60),
    )
    .await;
    // acknowledged once every master's replica is online (they finish syncing after the
    // cluster forms)
    let end = Instant::now() + Duration::from_secs(30);
    while b.invalidate("replicated:1").await.is_err() {
        assert!(
            Instant::now() < end,
            "never acknowledged with the replicas online"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let master = master_of(&mut cluster, &ranges, "c:v:{replicated:1}");
    let replica = replica_of(&mut cluster, master);
    let ri = node_index(&mut cluster, replica);
    let pid = cluster.nodes_mut()[ri].pid().expect("the replica runs");
    signal("-STOP", pid);
    let frozen = b.invalidate("replicated:1").await;
    signal("-CONT", pid);
    let err = frozen.expect_err("not acknowledged while the replica cannot have it");
    assert!(err.to_string().contains("replicas"), "{err}");
    // queued, and applied (acknowledged) once the replica runs again
    let retried = b.redis_stats().invalidations_retried;
    let end = Instant::now() + Duration::from_secs(20);
    while b.redis_stats().invalidations_retried <= retried {
        assert!(
            Instant::now() < end,
            "the queued invalidation was never applied"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.invalidate("replicated:1").await.unwrap();
}
