//! Redis hit path against raw redis-rs on the same server (a redis-server started here on a
//! free port by test-support).
//!
//! * `redis_hit_latency`: one hit, awaited alone: raw `GET` on a multiplexed connection vs
//!   `RedisBackend::get` (+ decoding the typed value) vs a cached fn through cache-core's
//!   runtime (`__private::FnCache`, what `#[cached]` expands to).
//! * `redis_hit_throughput_64`: 64 concurrent tasks, raw `GET` on one multiplexed connection vs
//!   the backend (one multiplexed connection too).
//! * `redis_miss_with_deps`: a miss + fill with two dependencies (on the default protocol); the
//!   commands sent per miss are counted with `MONITOR` (what clients sent, a pipeline's
//!   commands one by one; `INFO commandstats` also counts the commands scripts run) and printed.
//!
//! Run: `cargo bench -p cache-redis --bench redis_hit`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::__private::{Begin, CallInfo, FnCache, FnMeta, Mode};
use cache_core::{registry, value, Backend, EntryOptions, Key, Lookup};
use cache_redis::RedisBackend;
use criterion::{criterion_group, criterion_main, Criterion};
use test_support::{require_redis_server, RedisServer};

#[path = "../tests/redis_common/mod.rs"]
mod common;
#[path = "paired/mod.rs"]
mod paired;

const TASKS: usize = 64;

static HIT_FN: FnCache = FnCache::new(FnMeta {
    module: "bench",
    name: "hit_fn",
    version: 0,
    ttl: None,
    sliding: None,
    jitter: None,
    profile: None,
    cache_none: true,
    lock: false,
    custom_key: false,
    resilience: cache_core::runtime::Resilience::NONE,
    weight: None,
    local: false,
});

async fn hit_fn(x: u64) -> String {
    match HIT_FN
        .begin_async::<_, String>(&(&x,), CallInfo::default(), &mut |_| {}, Mode::Normal)
        .await
    {
        Begin::Hit(v) => v,
        Begin::Fill(f) => {
            f.fill_async(async { "v".repeat(100) }, |r| Some(r.clone()))
                .await
        }
    }
}

fn bench(c: &mut Criterion) {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).expect("redis-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = RedisBackend::builder()
        .url(server.url())
        .prefix("b")
        .gc(false)
        .connect_blocking()
        .unwrap();
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());
    let key = Key::from_text("bench::hit(1)");
    let payload = "v".repeat(100);
    rt.block_on(async {
        let Lookup::Miss(lease) = shared.get(&key).await.unwrap() else {
            panic!()
        };
        shared
            .set(
                &key,
                value::share(payload.clone()),
                &EntryOptions::new(),
                lease,
            )
            .await
            .unwrap();
    });
    let raw = rt.block_on(async {
        server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    // Paired measurements (robust to load drift on a shared machine): raw GETs and backend
    // hits alternate; medians of 20,000 each, then 10 bursts of 64 tasks x 1,000 each side. On
    // each storage protocol, an entry with one dependency and its fn's, looked up as a cached
    // fn's call does (declaring both).
    let mut protocols: Vec<(u8, Arc<dyn Backend>, Duration)> = Vec::new();
    for protocol in [1u8, 2] {
        let b: Arc<dyn Backend> = Arc::new(
            RedisBackend::builder()
                .url(server.url())
                .prefix(format!("p{protocol}"))
                .protocol(protocol)
                .gc(false)
                .connect_blocking()
                .unwrap(),
        );
        let declared: Arc<[String]> = Arc::from(vec!["user:1".to_string(), "fn:bench::hit".into()]);
        let options = EntryOptions::new()
            .depends_on("user:1")
            .depends_on("fn:bench::hit");
        rt.block_on(async {
            let Lookup::Miss(lease) = b.get_declared(&key, &declared).await.unwrap() else {
                panic!()
            };
            b.set(&key, value::share(payload.clone()), &options, lease)
                .await
                .unwrap();
        });
        let raw_key = format!("p{protocol}:{{{}}}", key.text());
        let (raw_med, backend_med) = rt.block_on(paired::latency(
            &raw, &raw_key, &*b, &key, &declared, 20_000,
        ));
        println!(
            "protocol {protocol}: paired hit latency: raw GET median {raw_med:?}, backend hit median {backend_med:?}, ratio {:.3}",
            backend_med.as_secs_f64() / raw_med.as_secs_f64()
        );
        let (raw_tp, backend_tp) = rt.block_on(paired::throughput(
            &raw,
            &raw_key,
            &b,
            &(key.clone(), declared.clone()),
            TASKS,
            1_000,
            10,
        ));
        println!(
            "protocol {protocol}: paired throughput, {TASKS} tasks: raw {raw_tp:.0} GET/s, backend {backend_tp:.0} hits/s, ratio {:.3}",
            backend_tp / raw_tp
        );
        protocols.push((protocol, b, raw_med));
    }
    // a miss + fill of a call declaring two dependencies (and its fn's), the two protocols
    // alternated, in units of the raw GET's round trip: about the round trips it takes
    let two: Vec<String> = vec!["user:1".into(), "team:1".into(), "fn:bench::miss".into()];
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .depends_on("user:1")
        .depends_on("team:1")
        .depends_on("fn:bench::miss");
    let n = 2_000u64;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); protocols.len()];
    rt.block_on(async {
        for i in 0..n {
            for (p, (_, b, _)) in protocols.iter().enumerate() {
                let k = Key::from_text(format!("bench::miss_rt({i})"));
                let t = Instant::now();
                let Lookup::Miss(lease) = b.get_declared(&k, &two).await.unwrap() else {
                    panic!()
                };
                b.set(&k, value::share(i), &options, lease).await.unwrap();
                times[p].push(t.elapsed());
            }
        }
    });
    for ((protocol, _, raw_med), mut t) in protocols.iter().zip(times) {
        t.sort();
        let per = t[t.len() / 2];
        println!(
            "protocol {protocol}: miss + fill with 2 dependencies: median {per:?} = {:.2} raw GET round trips",
            per.as_secs_f64() / raw_med.as_secs_f64()
        );
    }
    let raw_key = backend.entry_key(key.text());

    let mut g = c.benchmark_group("redis_hit_latency");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("raw_redis_rs_get", |b| {
        b.to_async(&rt).iter(|| {
            let mut con = raw.clone();
            let k = &raw_key;
            async move {
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(k)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                v.unwrap()
            }
        })
    });
    g.bench_function("backend_get", |b| {
        b.to_async(&rt).iter(|| async {
            match shared.get(&key).await.unwrap() {
                Lookup::Hit(h) => h.into_typed::<String>().unwrap(),
                Lookup::Miss(_) | Lookup::Stale { .. } => panic!("miss"),
            }
        })
    });
    g.bench_function("cached_fn", |b| {
        b.to_async(&rt)
            .iter(|| registry::with_backend(shared.clone(), hit_fn(1)))
    });
    g.finish();

    let mut g = c.benchmark_group("redis_hit_throughput_64");
    g.measurement_time(Duration::from_secs(5));
    g.throughput(criterion::Throughput::Elements(1));
    g.bench_function("raw_redis_rs_get", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = raw.clone();
            let k = raw_key.clone();
            async move {
                let per = (iters as usize).div_ceil(TASKS);
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let mut con = raw.clone();
                        let k = k.clone();
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let v: Option<Vec<u8>> = redis::cmd("GET")
                                    .arg(&k)
                                    .query_async(&mut con)
                                    .await
                                    .unwrap();
                                assert!(v.is_some());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    g.bench_function("backend_get", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let shared = shared.clone();
            let key = key.clone();
            async move {
                let per = (iters as usize).div_ceil(TASKS);
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (b, k) = (shared.clone(), key.clone());
                        tokio::spawn(async move {
                            for _ in 0..per {
                                let Lookup::Hit(h) = b.get(&k).await.unwrap() else {
                                    panic!()
                                };
                                assert!(h.into_typed::<String>().is_ok());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    g.finish();

    // a miss with dependencies: lookup + fill (function cost excluded)
    let options = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .depends_on("user:1")
        .depends_on("team:1");
    let n = 1000u64;
    let per_miss = rt.block_on(async {
        let mut monitor = common::Monitor::start(&server);
        monitor.take().await;
        for i in 0..n {
            let k = Key::from_text(format!("bench::miss({i})"));
            let Lookup::Miss(lease) = shared.get(&k).await.unwrap() else {
                panic!()
            };
            shared
                .set(&k, value::share(i), &options, lease)
                .await
                .unwrap();
        }
        monitor.take().await.len() as f64 / n as f64
    });
    println!(
        "redis_miss_with_deps (protocol {}): {per_miss:.2} commands sent per miss + fill (2 dependencies, undeclared; MONITOR counts commands, a pipeline's several in one round trip)",
        backend.protocol()
    );
    let mut g = c.benchmark_group("redis_miss_with_deps");
    g.measurement_time(Duration::from_secs(4));
    let counter = std::sync::atomic::AtomicU64::new(0);
    g.bench_function("miss_and_fill_2_deps", |b| {
        b.to_async(&rt).iter(|| async {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let k = Key::from_text(format!("bench::miss2({i})"));
            let Lookup::Miss(lease) = shared.get(&k).await.unwrap() else {
                panic!()
            };
            shared
                .set(&k, value::share(i), &options, lease)
                .await
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
