//! The Redis backend on a Redis Cluster against raw redis-rs cluster commands on the same
//! cluster: 3 masters started here (test-support, free loopback ports), storage protocol 2.
//!
//! * paired hit latency: a raw cluster `GET` of the entry key vs a backend hit of the same
//!   entry (one dependency and its fn's, both declared, as a cached fn's call does: the entry and
//!   the two version keys live on different masters and are read concurrently);
//! * 64-task throughput, the same pair;
//! * miss + fill with 2 dependencies on different masters, in units of the raw `GET`;
//! * Redis memory per entry (`used_memory` summed over the masters) against raw `SET ... PX`.
//!
//! Run: `cargo bench -p cache-redis --bench redis_cluster_hit` (prints; no criterion groups).

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, Lookup};
use cache_redis::RedisBackend;
use test_support::cluster::RedisCluster;
use test_support::require_redis_server;

#[path = "paired/mod.rs"]
mod paired;

const TASKS: usize = 64;

fn used_memory(cluster: &mut RedisCluster) -> i64 {
    cluster
        .nodes_mut()
        .iter_mut()
        .map(|n| {
            let mut con = n.connection().unwrap();
            let info: String = redis::cmd("INFO").arg("memory").query(&mut con).unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap()
        })
        .sum()
}

fn main() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut cluster = RedisCluster::start(&bin, 3, 0).expect("the cluster forms");
    let urls = cluster.urls();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(
        RedisBackend::builder()
            .cluster_urls(urls.clone())
            .prefix("b")
            .connect_blocking()
            .unwrap(),
    );
    let raw = rt.block_on(async {
        redis::cluster::ClusterClient::new(urls.clone())
            .unwrap()
            .get_async_connection()
            .await
            .unwrap()
    });
    let key = Key::from_text("bench::cluster_hit(1)");
    let declared: Arc<[String]> =
        Arc::from(vec!["user:1".to_string(), "fn:bench::cluster_hit".into()]);
    let options = EntryOptions::new()
        .depends_on("user:1")
        .depends_on("fn:bench::cluster_hit");
    rt.block_on(async {
        let Lookup::Miss(lease) = backend.get_declared(&key, &declared).await.unwrap() else {
            panic!("a miss")
        };
        backend
            .set(&key, value::share("v".repeat(100)), &options, lease)
            .await
            .unwrap();
    });
    let raw_key = format!("b:{{{}}}", key.text());
    for run in 1..=3 {
        let (raw_med, backend_med) = rt.block_on(paired::latency(
            &raw, &raw_key, &*backend, &key, &declared, 10_000,
        ));
        let (raw_tp, backend_tp) = rt.block_on(paired::throughput(
            &raw,
            &raw_key,
            &backend,
            &(key.clone(), declared.clone()),
            TASKS,
            500,
            6,
        ));
        // miss + fill of a call declaring two dependencies on different masters
        let two: Vec<String> = vec!["user:7".into(), "team:3".into(), "fn:bench::miss".into()];
        let opts = EntryOptions::new()
            .ttl(Duration::from_secs(60))
            .depends_on("user:7")
            .depends_on("team:3")
            .depends_on("fn:bench::miss");
        let mut times: Vec<Duration> = rt.block_on(async {
            let mut t = Vec::new();
            for i in 0..1_000u64 {
                let k = Key::from_text(format!("bench::miss({run}, {i})"));
                let s = Instant::now();
                let Lookup::Miss(lease) = backend.get_declared(&k, &two).await.unwrap() else {
                    panic!("a miss")
                };
                backend
                    .set(&k, value::share(i), &opts, lease)
                    .await
                    .unwrap();
                t.push(s.elapsed());
            }
            t
        });
        times.sort();
        let miss = times[times.len() / 2];
        println!(
            "run {run}: hit latency: raw cluster GET median {raw_med:?}, backend hit {backend_med:?}, ratio {:.3}; \
             64-task throughput: raw {raw_tp:.0} GET/s, backend {backend_tp:.0} hits/s, ratio {:.3}; \
             miss + fill with 2 dependencies: median {miss:?} = {:.2} raw GETs",
            backend_med.as_secs_f64() / raw_med.as_secs_f64(),
            backend_tp / raw_tp,
            miss.as_secs_f64() / raw_med.as_secs_f64()
        );
    }

    // memory per entry over the masters: 30,000 entries of a u64 fn (its fn dependency only)
    // against 30,000 raw SETs of the same value size with a PX
    const N: u64 = 30_000;
    let payload_len = value::share(7u64).encode().unwrap().len();
    let before = used_memory(&mut cluster);
    rt.block_on(async {
        let mut con = raw.clone();
        for i in 0..N {
            let _: () = redis::cmd("SET")
                .arg(format!("raw:{{k{i}}}"))
                .arg(vec![7u8; payload_len])
                .arg("PX")
                .arg(600_000)
                .query_async(&mut con)
                .await
                .unwrap();
        }
    });
    let raw_bytes = used_memory(&mut cluster) - before;
    let fn_only = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .depends_on("fn:bench::mem");
    let fn_declared = vec!["fn:bench::mem".to_string()];
    let before = used_memory(&mut cluster);
    rt.block_on(async {
        for i in 0..N {
            let k = Key::from_text(format!("bench::mem({i})"));
            let Lookup::Miss(lease) = backend.get_declared(&k, &fn_declared).await.unwrap() else {
                panic!("a miss")
            };
            backend
                .set(&k, value::share(i), &fn_only, lease)
                .await
                .unwrap();
        }
    });
    let entry_bytes = used_memory(&mut cluster) - before;
    println!(
        "memory per entry on the cluster: raw SET with PX {} B, entry (fn dependency only) {} B, ratio {:.2}",
        raw_bytes / N as i64,
        entry_bytes / N as i64,
        entry_bytes as f64 / raw_bytes as f64
    );
}
