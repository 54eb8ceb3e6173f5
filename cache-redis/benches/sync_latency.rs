//! Invalidation propagation latency across nodes, next to the raw redis-rs floor measured in
//! the same run on the same redis-server (started here on a free port by test-support).
//!
//! * `pubsub`: three `SyncedBackend<MemoryBackend>` nodes A, B, C; the time from A's
//!   `invalidate_blocking` call to the entry being gone from B's and C's memory caches.
//! * `raw pubsub floor`: a redis-rs `PUBLISH` (sync connection) to the moment both of two RESP3
//!   subscribers (push-sender callbacks) received it.
//! * `tracking`: three layered nodes (tracking, default mode); a raw `SET` of the entry key
//!   to the entry being gone from B's and C's L1.
//! * `raw tracking floor`: a redis-rs `SET` to the moment two RESP3 connections tracking the key
//!   (`CLIENT TRACKING ON`, read once) received the invalidation push.
//!
//! Each is measured over 1000 invalidations (after 100 warm-up ones); p50/p99/max printed.
//! This is a latency distribution per event, which criterion does not report; hence a plain
//! `harness = false` main. Run: `cargo bench -p cache-redis --bench sync_latency`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, Lease, LocalLookup, MemoryBackend};
use cache_redis::{
    Coherence, LayeredBackend, RedisBackend, SyncOptions, SyncedBackend, TrackingMode,
};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, PushInfo, PushKind};
use test_support::{require_redis_server, RedisServer};

const N: usize = 1000;
const WARMUP: usize = 100;
const LIMIT: Duration = Duration::from_secs(2);

struct Summary {
    name: &'static str,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn summarize(name: &'static str, mut v: Vec<Duration>) -> Summary {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    Summary {
        name,
        p50: at(0.50),
        p99: at(0.99),
        max: *v.last().unwrap(),
    }
}

/// Spins (yielding) until `done`, at most `LIMIT`; returns the elapsed time since `t0`.
fn wait(t0: Instant, mut done: impl FnMut() -> bool) -> Duration {
    while !done() {
        if t0.elapsed() > LIMIT {
            panic!("not propagated within {LIMIT:?}");
        }
        std::thread::yield_now();
    }
    t0.elapsed()
}

fn absent(b: &dyn Backend, key: &Key) -> bool {
    !matches!(b.lookup_local(&key.local(), &mut |_| {}), LocalLookup::Hit)
}

fn pubsub(server: &RedisServer) -> Summary {
    let node = || {
        let n = SyncedBackend::builder(MemoryBackend::new())
            .client(server.client())
            .options(SyncOptions::new("bench:sync"))
            .build()
            .unwrap();
        assert!(n.synchronizer().wait_subscribed(LIMIT));
        n
    };
    let (a, b, c) = (node(), node(), node());
    let mut out = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let key = Key::from_text(format!("bench::f({i})"));
        let dep = format!("dep:{i}");
        let opts = EntryOptions::new().depends_on(dep.clone());
        for n in [&b, &c] {
            n.set_blocking(&key, value::share(i), &opts, Lease::UNCONDITIONAL)
                .unwrap();
        }
        let t0 = Instant::now();
        a.invalidate_blocking(&dep).unwrap();
        let d = wait(t0, || absent(&b, &key) && absent(&c, &key));
        if i >= WARMUP {
            out.push(d);
        }
    }
    summarize("pubsub: A.invalidate -> gone on B and C", out)
}

/// Two RESP3 connections (driven by `rt`) and the number of `kind` pushes they received.
fn push_receivers(
    server: &RedisServer,
    rt: &tokio::runtime::Runtime,
    kind: PushKind,
) -> (Arc<AtomicU64>, Vec<MultiplexedConnection>) {
    let got = Arc::new(AtomicU64::new(0));
    let client = server.resp3_client();
    let cons = (0..2)
        .map(|_| {
            let (got, kind) = (got.clone(), kind.clone());
            let cfg = AsyncConnectionConfig::new().set_push_sender(move |p: PushInfo| {
                if p.kind == kind {
                    got.fetch_add(1, Ordering::Release);
                }
                Ok::<(), ()>(())
            });
            rt.block_on(client.get_multiplexed_async_connection_with_config(&cfg))
                .unwrap()
        })
        .collect();
    (got, cons)
}

fn raw_pubsub(server: &RedisServer, rt: &tokio::runtime::Runtime) -> Summary {
    let (got, mut subs) = push_receivers(server, rt, PushKind::Message);
    for con in subs.iter_mut() {
        rt.block_on(con.subscribe("bench:raw")).unwrap();
    }
    let mut publisher = server.connection().unwrap();
    let mut out = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let before = got.load(Ordering::Acquire);
        let t0 = Instant::now();
        let _: i64 = redis::cmd("PUBLISH")
            .arg("bench:raw")
            .arg(format!(
                "cs1:0000000000000000:d{}:dep:{i}",
                4 + i.to_string().len()
            ))
            .query(&mut publisher)
            .unwrap();
        let d = wait(t0, || got.load(Ordering::Acquire) >= before + 2);
        if i >= WARMUP {
            out.push(d);
        }
    }
    summarize("raw redis-rs PUBLISH -> 2 subscribers", out)
}

fn tracking(server: &RedisServer) -> Summary {
    let node = || {
        let l2 = RedisBackend::builder()
            .url(server.url())
            .prefix("bench")
            .connect_blocking()
            .unwrap();
        let n = LayeredBackend::builder(l2)
            .coherence(Coherence::Tracking(TrackingMode::Default))
            .build()
            .unwrap();
        assert!(n.wait_coherent(LIMIT));
        n
    };
    let (a, b, c) = (node(), node(), node());
    let mut raw = server.connection().unwrap();
    let mut out = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let key = Key::from_text(format!("bench::t({i})"));
        a.set_blocking(
            &key,
            value::share(i),
            &EntryOptions::new(),
            Lease::UNCONDITIONAL,
        )
        .unwrap();
        for n in [&b, &c] {
            let end = Instant::now() + LIMIT;
            while !n.local_store().contains(key.text()) {
                n.get_blocking(&key).unwrap();
                assert!(Instant::now() < end, "L1 not filled");
            }
        }
        let entry_key = a.redis().entry_key(key.text());
        let t0 = Instant::now();
        let _: () = redis::cmd("SET")
            .arg(&entry_key)
            .arg("x")
            .query(&mut raw)
            .unwrap();
        let d = wait(t0, || absent(&b, &key) && absent(&c, &key));
        if i >= WARMUP {
            out.push(d);
        }
    }
    summarize("tracking: raw SET -> gone from B's and C's L1", out)
}

fn raw_tracking(server: &RedisServer, rt: &tokio::runtime::Runtime) -> Summary {
    let (got, mut cons) = push_receivers(server, rt, PushKind::Invalidate);
    for con in cons.iter_mut() {
        let _: () = rt
            .block_on(
                redis::cmd("CLIENT")
                    .arg("TRACKING")
                    .arg("ON")
                    .query_async(con),
            )
            .unwrap();
    }
    let mut writer = server.connection().unwrap();
    let mut out = Vec::with_capacity(N);
    for i in 0..N + WARMUP {
        let key = format!("raw:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(1)
            .query(&mut writer)
            .unwrap();
        for con in cons.iter_mut() {
            rt.block_on(async {
                let _: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await.unwrap();
            });
        }
        let before = got.load(Ordering::Acquire);
        let t0 = Instant::now();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(2)
            .query(&mut writer)
            .unwrap();
        let d = wait(t0, || got.load(Ordering::Acquire) >= before + 2);
        if i >= WARMUP {
            out.push(d);
        }
    }
    summarize("raw redis-rs SET -> 2 tracking pushes", out)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The raw connections' drivers run on their own thread, like the nodes' sync runtime.
    let raw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    drop(rt);
    let rows = [
        raw_pubsub(&server, &raw_rt),
        pubsub(&server),
        raw_tracking(&server, &raw_rt),
        tracking(&server),
    ];
    println!("\ninvalidation propagation over {N} invalidations (after {WARMUP} warm-up)");
    println!("{:<50} {:>10} {:>10} {:>10}", "", "p50", "p99", "max");
    for r in &rows {
        println!(
            "{:<50} {:>8.1}us {:>8.1}us {:>8.1}us",
            r.name,
            r.p50.as_secs_f64() * 1e6,
            r.p99.as_secs_f64() * 1e6,
            r.max.as_secs_f64() * 1e6
        );
    }
    let ratio = |a: &Summary, b: &Summary| a.p99.as_secs_f64() / b.p99.as_secs_f64();
    println!(
        "pubsub p99 / raw floor p99 = {:.2}x; tracking p99 / raw floor p99 = {:.2}x",
        ratio(&rows[1], &rows[0]),
        ratio(&rows[3], &rows[2])
    );
}
