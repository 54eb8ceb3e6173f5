//! The cost of a local hit, next to redis-rs's own client-side cache and a raw round trip, in
//! one run on one redis-server (started here on a free port by test-support).
//!
//! Every `#[cached] fn` row calls a sync `#[cached]` fn returning a `u64` with its backend
//! installed as the default (`registry::install`, the way an application sets it up): the
//! product path, `FnCache::begin_blocking`, whose hit is a typed lookup in the memory store
//! that answers the backend's hits (`Backend::memory_hits`) plus a clone of the value. Each fn
//! has its own key; the rows:
//!
//! * (a) `memory`: a plain [`MemoryBackend`] (default policy), its bare `lookup_local`, and a
//!   fn reaching the same kind of backend through a named profile (`#[cached(profile = ..)]`);
//! * (b) `synced`: a [`SyncedBackend`] over a memory backend (pub/sub coherence);
//!   `layered pub/sub, writer`: a [`LayeredBackend`] in pub/sub mode with the default L1, on
//!   the node that wrote the entry (L1 holds the typed value); the same with an explicit
//!   `bounded_store(_, Lru)` L1; `layered pub/sub, other node`: a second pub/sub node, whose L1
//!   was filled from Redis (decoded once, then kept typed: `Backend::offer_decoded`);
//!   `layered tracking`: RESP3 tracking (L1 filled from Redis: with tracking a node drops its
//!   own write from L1 and refills it on the next read);
//! * (c) redis-rs's client-side cache (`cache-aio`, a RESP3 multiplexed connection with a
//!   `CacheConfig`): a `GET` of a key in its cache;
//! * (d) a raw `GET` round trip on a multiplexed connection.
//!
//! Criterion prints its own estimates; then an interleaved measurement (every case timed in
//! turn, batch after batch, medians) prints a table and the ratios, robust to load drift on a
//! shared machine. Run: `cargo bench -p cache-redis --bench l1_hit`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::memory::EvictionPolicy;
use cache_core::registry::{configure, install, Profile};
use cache_core::{cached, value, Backend, EntryOptions, Key, Lease, LocalLookup, MemoryBackend};
use cache_redis::layered::DEFAULT_L1_ENTRIES;
use cache_redis::local_store::bounded_store;
use cache_redis::{
    Coherence, LayeredBackend, RedisBackend, SyncOptions, SyncedBackend, TrackingMode,
};
use criterion::Criterion;
use redis::caching::CacheConfig;
use redis::AsyncConnectionConfig;
use test_support::{require_redis_server, RedisServer};

const LIMIT: Duration = Duration::from_secs(5);
const ROUNDS: usize = 101;
const BATCH: Duration = Duration::from_millis(2);

#[cached]
fn hit_mem(id: u64) -> u64 {
    id * 2
}

#[cached(profile = "l1-prof")]
fn hit_prof(id: u64) -> u64 {
    id * 2
}

#[cached]
fn hit_syn(id: u64) -> u64 {
    id * 2
}

#[cached]
fn hit_lpw(id: u64) -> u64 {
    id * 2
}

#[cached]
fn hit_lps(id: u64) -> u64 {
    id * 2
}

#[cached]
fn hit_lpr(id: u64) -> u64 {
    id * 2
}

#[cached]
fn hit_ltr(id: u64) -> u64 {
    id * 2
}

fn use_profile(profile: &str, backend: Arc<dyn Backend>) {
    configure()
        .profile(profile, Profile::new().backend(backend))
        .apply()
        .expect("valid profile");
}

fn l2(server: &RedisServer) -> RedisBackend {
    RedisBackend::builder()
        .url(server.url())
        .prefix("l1b")
        .gc(false)
        .connect_blocking()
        .expect("redis backend")
}

fn layered(server: &RedisServer, coherence: Coherence) -> Arc<LayeredBackend> {
    layered_with(server, coherence, None)
}

fn layered_with(
    server: &RedisServer,
    coherence: Coherence,
    policy: Option<EvictionPolicy>,
) -> Arc<LayeredBackend> {
    let mut builder = LayeredBackend::builder(l2(server)).coherence(coherence);
    if let Some(p) = policy {
        builder = builder.local_store(bounded_store(DEFAULT_L1_ENTRIES, p).unwrap());
    }
    let b = builder.build().expect("layered backend");
    assert!(b.wait_coherent(LIMIT), "coherence channel not up");
    Arc::new(b)
}

/// Calls `f` until the L1 of `node` holds an entry (filled from Redis), at most `LIMIT`.
fn fill_l1(node: &LayeredBackend, f: impl Fn() -> u64) {
    let end = Instant::now() + LIMIT;
    while node.local_store().is_empty() {
        assert_eq!(f(), 2);
        assert!(Instant::now() < end, "L1 not filled");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(f(), 2);
}

/// One case of the interleaved measurement: `run(n)` does `n` hits; `backend` (if any) is
/// installed as the default before each batch.
struct Case {
    name: &'static str,
    backend: Option<Arc<dyn Backend>>,
    run: Box<dyn FnMut(u64)>,
    per_batch: u64,
    samples: Vec<f64>,
}

impl Case {
    fn new(name: &'static str, run: impl FnMut(u64) + 'static) -> Self {
        Case {
            name,
            backend: None,
            run: Box::new(run),
            per_batch: 1,
            samples: Vec::new(),
        }
    }

    fn on(mut self, backend: &Arc<dyn Backend>) -> Self {
        self.backend = Some(backend.clone());
        self
    }

    /// Installs the case's backend and makes one untimed call (which also refreshes the
    /// thread's registry snapshot).
    fn prepare(&mut self) {
        if let Some(b) = &self.backend {
            install(b.clone());
        }
        (self.run)(1);
    }

    /// Picks a batch size that takes about `BATCH`.
    fn calibrate(&mut self) {
        self.prepare();
        let mut n = 1u64;
        loop {
            let t = Instant::now();
            (self.run)(n);
            let e = t.elapsed();
            if e >= BATCH / 4 || n >= 1 << 24 {
                let per = e.as_secs_f64() / n as f64;
                self.per_batch = ((BATCH.as_secs_f64() / per) as u64).max(1);
                return;
            }
            n *= 4;
        }
    }

    fn sample(&mut self) {
        self.prepare();
        let t = Instant::now();
        (self.run)(self.per_batch);
        self.samples
            .push(t.elapsed().as_nanos() as f64 / self.per_batch as f64);
    }

    fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).expect("redis-server");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // (a) memory
    let mem = Arc::new(MemoryBackend::new());
    let raw_key = Key::from_text("l1_hit::raw(1)");
    mem.set_blocking(
        &raw_key,
        value::share(2u64),
        &EntryOptions::new(),
        Lease::UNCONDITIONAL,
    )
    .unwrap();
    let mem_dyn: Arc<dyn Backend> = mem.clone();
    install(mem_dyn.clone());
    assert_eq!(hit_mem(1), 2);
    use_profile("l1-prof", Arc::new(MemoryBackend::new()));
    assert_eq!(hit_prof(1), 2);

    // (b) synced memory, layered pub/sub (writer and reader nodes), layered tracking
    let syn = SyncedBackend::builder(MemoryBackend::new())
        .client(server.client())
        .options(SyncOptions::new("l1b:sync"))
        .build()
        .unwrap();
    assert!(syn.synchronizer().wait_subscribed(LIMIT));
    let syn: Arc<dyn Backend> = Arc::new(syn);
    install(syn.clone());
    assert_eq!(hit_syn(1), 2);

    let pubsub = || Coherence::PubSub(SyncOptions::new("l1b:layered"));
    let writer = layered(&server, pubsub());
    install(writer.clone());
    assert_eq!(hit_lpw(1), 2); // miss: fills Redis, then the writer's L1 (typed)
    assert_eq!(writer.local_store().len(), 1);

    let lru = layered_with(&server, pubsub(), Some(EvictionPolicy::Lru));
    install(lru.clone());
    assert_eq!(hit_lps(1), 2);
    assert_eq!(lru.local_store().len(), 1);

    let reader = layered(&server, pubsub());
    install(writer.clone());
    assert_eq!(hit_lpr(1), 2); // filled by the writer
    install(reader.clone());
    fill_l1(&reader, || hit_lpr(1)); // the reader's L1 is filled from Redis

    let tracking = layered(&server, Coherence::Tracking(TrackingMode::Default));
    install(tracking.clone());
    fill_l1(&tracking, || hit_ltr(1));
    let [writer, lru, reader, tracking]: [Arc<dyn Backend>; 4] =
        [writer, lru, reader, tracking].map(|b| b as Arc<dyn Backend>);

    // (c) redis-rs client-side cache and (d) a raw GET
    let csc_key = "l1b:csc:1";
    let mut setup = server.connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(csc_key)
        .arg(2u64)
        .query(&mut setup)
        .unwrap();
    let cfg = AsyncConnectionConfig::new().set_cache_config(CacheConfig::new());
    let csc = rt.block_on(async {
        server
            .resp3_client()
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .expect("RESP3 connection with client-side caching")
    });
    let raw = rt.block_on(async {
        server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    let get = |con: &mut redis::aio::MultiplexedConnection| {
        let mut con = con.clone();
        async move {
            let v: Option<u64> = redis::cmd("GET")
                .arg(csc_key)
                .query_async(&mut con)
                .await
                .unwrap();
            v
        }
    };
    {
        let mut c = csc.clone();
        rt.block_on(async {
            assert_eq!(get(&mut c).await, Some(2));
            assert_eq!(get(&mut c).await, Some(2));
        });
        let s = csc.get_cache_statistics().expect("caching is on");
        assert!(s.hit >= 1, "redis-rs cache did not hit: {s:?}");
    }

    // ---------- criterion ----------
    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut g = c.benchmark_group("l1_hit");
    g.bench_function("memory_lookup_local", |b| {
        let k = raw_key.local();
        b.iter(|| {
            let mut out = None;
            let r = mem.lookup_local(black_box(&k), &mut |v| out = value::downcast::<u64>(&**v));
            assert_eq!(r, LocalLookup::Hit);
            out
        })
    });
    type FnRow<'a> = (&'a str, Option<&'a Arc<dyn Backend>>, fn(u64) -> u64);
    let fns: [FnRow; 7] = [
        ("memory_cached_fn", Some(&mem_dyn), hit_mem),
        ("memory_profile_cached_fn", None, hit_prof),
        ("synced_cached_fn", Some(&syn), hit_syn),
        ("layered_pubsub_writer_cached_fn", Some(&writer), hit_lpw),
        ("layered_pubsub_writer_lru_cached_fn", Some(&lru), hit_lps),
        (
            "layered_pubsub_other_node_cached_fn",
            Some(&reader),
            hit_lpr,
        ),
        ("layered_tracking_cached_fn", Some(&tracking), hit_ltr),
    ];
    for (name, backend, f) in fns {
        if let Some(b) = backend {
            install(b.clone());
        }
        assert_eq!(f(1), 2);
        g.bench_function(name, |b| b.iter(|| f(black_box(1))));
    }
    g.bench_function("redis_rs_csc_get", |b| {
        let con = csc.clone();
        b.to_async(&rt).iter(|| {
            let mut con = con.clone();
            async move {
                let v: Option<u64> = redis::cmd("GET")
                    .arg(csc_key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                v
            }
        })
    });
    g.bench_function("raw_redis_rs_get", |b| {
        let con = raw.clone();
        b.to_async(&rt).iter(|| {
            let mut con = con.clone();
            async move {
                let v: Option<u64> = redis::cmd("GET")
                    .arg(csc_key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                v
            }
        })
    });
    g.finish();

    // ---------- interleaved medians ----------
    let rt = Arc::new(rt);
    let fn_case = |name, f: fn(u64) -> u64| {
        Case::new(name, move |n| {
            for _ in 0..n {
                assert_eq!(f(black_box(1)), 2);
            }
        })
    };
    let redis_case = |name, con: redis::aio::MultiplexedConnection, rt: Arc<_>| {
        Case::new(name, move |n| {
            let mut con = con.clone();
            let rt: &tokio::runtime::Runtime = &rt;
            rt.block_on(async {
                for _ in 0..n {
                    let v: Option<u64> = redis::cmd("GET")
                        .arg(csc_key)
                        .query_async(&mut con)
                        .await
                        .unwrap();
                    assert_eq!(v, Some(2));
                }
            })
        })
    };
    let mem2 = mem.clone();
    let mut cases = vec![
        Case::new("(a) memory: lookup_local", move |n| {
            let k = raw_key.local();
            for _ in 0..n {
                let mut out = None;
                mem2.lookup_local(black_box(&k), &mut |v| out = value::downcast::<u64>(&**v));
                assert_eq!(out, Some(2));
            }
        }),
        fn_case("(a) memory: #[cached] fn", hit_mem).on(&mem_dyn),
        fn_case("(a) memory via a profile: #[cached(profile)] fn", hit_prof),
        fn_case("(b) synced (pub/sub): #[cached] fn", hit_syn).on(&syn),
        fn_case("(b) layered pub/sub, writer: #[cached] fn", hit_lpw).on(&writer),
        fn_case("(b) layered pub/sub, writer, LRU L1: #[cached] fn", hit_lps).on(&lru),
        fn_case("(b) layered pub/sub, other node: #[cached] fn", hit_lpr).on(&reader),
        fn_case("(b) layered tracking: #[cached] fn", hit_ltr).on(&tracking),
        redis_case(
            "(c) redis-rs client-side cache GET",
            csc.clone(),
            rt.clone(),
        ),
        redis_case("(d) raw redis-rs GET", raw.clone(), rt.clone()),
    ];
    for case in cases.iter_mut() {
        case.calibrate();
    }
    for _ in 0..ROUNDS {
        for case in cases.iter_mut() {
            case.sample();
        }
    }
    let med: Vec<f64> = cases.iter().map(Case::median).collect();
    let (mem_fn, csc_get) = (med[1], med[8]);
    println!("\nL1 hit, interleaved: median of {ROUNDS} batches of ~{BATCH:?} each (u64 value)\n");
    println!(
        "| {:<54} | {:>10} | {:>12} | {:>12} |",
        "path", "ns/hit", "/ memory fn", "/ redis-rs csc"
    );
    println!(
        "|{}|{}|{}|{}|",
        "-".repeat(56),
        "-".repeat(12),
        "-".repeat(14),
        "-".repeat(14)
    );
    for (case, m) in cases.iter().zip(&med) {
        println!(
            "| {:<54} | {:>10.1} | {:>11.2}x | {:>13.4} |",
            case.name,
            m,
            m / mem_fn,
            m / csc_get
        );
    }
    let stats = csc.get_cache_statistics().expect("caching is on");
    println!(
        "\nredis-rs client-side cache statistics: {} hits, {} misses, {} invalidations",
        stats.hit, stats.miss, stats.invalidate
    );
    let targets = [
        ("synced", med[3]),
        ("layered pub/sub writer", med[4]),
        ("layered pub/sub writer, LRU L1", med[5]),
        ("layered pub/sub other node", med[6]),
        ("layered tracking", med[7]),
    ];
    for (name, m) in targets {
        let same = m <= mem_fn * 1.25;
        let tenth = m <= csc_get / 10.0;
        println!(
            "target {name}: {:.2}x memory fn ({}), {:.3}x redis-rs csc ({})",
            m / mem_fn,
            if same {
                "ok"
            } else {
                "MISSED: not the same cost"
            },
            m / csc_get,
            if tenth { "ok" } else { "MISSED: over 1/10" }
        );
    }
}
