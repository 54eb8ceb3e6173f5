//! The memory hit path: a cached `fn(u64) -> u64` and `fn(String) -> u64` through the cache-core
//! runtime, next to the `cached` crate's `#[cached]`, moka and quick_cache in the same run; and
//! two threads hitting (throughput); hits spread over 10,000 keys and over a Zipf trace of
//! 100,000; an `async fn` hit. Both sides are what a user writes: `#[cache_core::cached]` and
//! `#[cached::proc_macro::cached]` on the same functions.
//!
//! Run: `cargo bench -p cache-core --bench hit_path`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[cache_core::cached]
fn ours_u64(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cache_core::cached]
fn ours_str(s: String) -> u64 {
    s.len() as u64
}

#[cached::proc_macro::cached]
fn cached_u64(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cache_core::cached]
async fn ours_async(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cached::proc_macro::cached]
async fn cached_async(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cached::proc_macro::cached]
fn cached_str(s: String) -> u64 {
    s.len() as u64
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_hit");
    g.throughput(Throughput::Elements(1));
    ours_u64(7);
    cached_u64(7);
    g.bench_function("cache-core u64", |b| b.iter(|| ours_u64(black_box(7))));
    g.bench_function("cached crate u64", |b| b.iter(|| cached_u64(black_box(7))));

    let moka = moka::sync::Cache::<u64, u64>::new(10_000);
    moka.insert(7, 21);
    g.bench_function("moka get u64", |b| b.iter(|| moka.get(black_box(&7))));
    let qc = quick_cache::sync::Cache::<u64, u64>::new(10_000);
    qc.insert(7, 21);
    g.bench_function("quick_cache get u64", |b| b.iter(|| qc.get(black_box(&7))));
    g.bench_function("format! a readable key", |b| {
        b.iter(|| format!("bench::ours_u64({})", black_box(7u64)))
    });

    let s = "user-name@example.com".to_string();
    ours_str(s.clone());
    cached_str(s.clone());
    // both take the String by value, as a user's fn would: the clone is part of either call
    g.bench_function("cache-core String", |b| {
        b.iter(|| ours_str(black_box(s.clone())))
    });
    g.bench_function("cached crate String", |b| {
        b.iter(|| cached_str(black_box(s.clone())))
    });
    g.finish();
}

/// Hits per second with two threads hitting the same 64 keys.
fn two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_hit_2_threads");
    const PER_ITER: u64 = 64;
    g.throughput(Throughput::Elements(2 * PER_ITER));
    for k in 0..PER_ITER {
        ours_u64(k);
        cached_u64(k);
    }
    fn run(f: fn(u64) -> u64, iters: u64) -> Duration {
        let start = Arc::new(std::sync::Barrier::new(2));
        let t0 = Instant::now();
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..iters {
                        for k in 0..PER_ITER {
                            black_box(f(black_box(k)));
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("bench thread");
        }
        t0.elapsed()
    }
    g.bench_function("cache-core u64", |b| {
        b.iter_custom(|iters| run(ours_u64, iters))
    });
    g.bench_function("cached crate u64", |b| {
        b.iter_custom(|iters| run(cached_u64, iters))
    });
    g.finish();
}

/// Hits spread over many keys, all cached: a random order over 10,000 keys (more hot keys than
/// a thread's front table has slots, so most hits go to the shard), and the Zipf(0.99) trace of
/// the hit-ratio bench over 100,000 keys (a working set far larger than the CPU cache).
fn many_keys(c: &mut Criterion) {
    const KEYS: u64 = 10_000;
    let uniform: Vec<u64> = (0..KEYS)
        .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40)
        .map(|h| h % KEYS)
        .collect();
    let zipf: Vec<u64> = test_support::zipf::trace(0.99)
        .into_iter()
        .map(u64::from)
        .collect();
    for (group, order, keys) in [
        ("memory_hit_10k_keys", &uniform, KEYS),
        (
            "memory_hit_zipf_100k_keys",
            &zipf,
            test_support::zipf::KEYS as u64,
        ),
    ] {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(1));
        for k in 0..keys {
            ours_u64(k);
            cached_u64(k);
        }
        let mut i = 0;
        g.bench_function("cache-core u64", |b| {
            b.iter(|| {
                i = (i + 1) % order.len();
                ours_u64(black_box(order[i]))
            })
        });
        let mut i = 0;
        g.bench_function("cached crate u64", |b| {
            b.iter(|| {
                i = (i + 1) % order.len();
                cached_u64(black_box(order[i]))
            })
        });
        g.finish();
    }
}

/// Hits of an `async fn(u64) -> u64`, awaited one after another on a current-thread tokio
/// runtime (what a request handler does).
fn async_fn(c: &mut Criterion) {
    let mut g = c.benchmark_group("memory_hit_async");
    g.throughput(Throughput::Elements(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        ours_async(7).await;
        cached_async(7).await;
    });
    fn run<F: std::future::Future<Output = u64>>(
        rt: &tokio::runtime::Runtime,
        iters: u64,
        f: impl Fn(u64) -> F,
    ) -> Duration {
        rt.block_on(async {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f(black_box(7)).await);
            }
            t.elapsed()
        })
    }
    g.bench_function("cache-core u64", |b| {
        b.iter_custom(|iters| run(&rt, iters, ours_async))
    });
    g.bench_function("cached crate u64", |b| {
        b.iter_custom(|iters| run(&rt, iters, cached_async))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = single_thread, two_threads, many_keys, async_fn
}
criterion_main!(benches);
