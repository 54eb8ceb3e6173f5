//! Hit ratios of the local stores an L1 can use, on skewed (Zipf) traces: the default store
//! ([`default_store`]) next to [`bounded_store`] with each eviction policy and the
//! [`QuickCacheStore`]. Same traces as cache-core's `hit_ratio` bench (100 000 keys, 1.5 M
//! requests, Zipf s = 0.99 and 0.8, capacity 1% and 10%, fixed seed), driven through the
//! [`LocalStore`] trait the way the layered backend drives its L1: `lookup`, and on a miss
//! `put_with_reference` with the entry's Redis key as reference and the miss's lease.
//!
//! No Redis needed. Run: `cargo bench -p cache-redis --bench local_store_ratio`

use std::time::Instant;

use cache_core::memory::EvictionPolicy;
use cache_core::{value, EntryOptions, Key, LocalLookup};
use cache_redis::local_store::{bounded_store, default_store, LocalStore, QuickCacheStore};
use test_support::zipf::{trace, KEYS, REQUESTS, SEED};

struct Entry {
    key: Key,
    redis_key: String,
}

fn entries() -> Vec<Entry> {
    (0..KEYS as u32)
        .map(|k| Entry {
            key: Key::new(format!("bench::get({k})"), &k.to_le_bytes()),
            redis_key: format!("l1b:{{bench::get({k})}}"),
        })
        .collect()
}

fn ratio(store: &dyn LocalStore, trace: &[u32], entries: &[Entry]) -> f64 {
    store.init().expect("store init");
    let options = EntryOptions::new();
    let mut hits = 0usize;
    for &k in trace {
        let e = &entries[k as usize];
        match store.lookup(&e.key.local(), &mut |_| {}) {
            LocalLookup::Hit => hits += 1,
            LocalLookup::Miss(lease) => {
                store.put_with_reference(&e.key, value::share(k), &options, &e.redis_key, lease);
            }
            LocalLookup::Remote => unreachable!("a local store is local"),
        }
    }
    hits as f64 / trace.len() as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` / `cargo test --benches`
    }
    let started = Instant::now();
    let entries = entries();
    let default_policy = default_store(10).policy();
    type MakeStore = fn(usize) -> Box<dyn LocalStore>;
    let stores: [(String, MakeStore); 5] = [
        (format!("default_store ({default_policy:?})"), |c| {
            Box::new(default_store(c))
        }),
        ("bounded_store Lru".into(), |c| {
            Box::new(bounded_store(c, EvictionPolicy::Lru).unwrap())
        }),
        ("bounded_store Fifo".into(), |c| {
            Box::new(bounded_store(c, EvictionPolicy::Fifo).unwrap())
        }),
        ("bounded_store S3Fifo".into(), |c| {
            Box::new(bounded_store(c, EvictionPolicy::S3Fifo).unwrap())
        }),
        ("QuickCacheStore".into(), |c| {
            Box::new(QuickCacheStore::new(c).unwrap())
        }),
    ];
    println!(
        "L1 local store hit ratios, {REQUESTS} requests over {KEYS} keys (Zipf), seed {SEED:#x}\n"
    );
    print!("| trace | capacity |");
    for (name, _) in &stores {
        print!(" {name} |");
    }
    println!("\n|---|---|{}", "---|".repeat(stores.len()));
    for s in [0.99, 0.8] {
        let t = trace(s);
        for percent in [1usize, 10] {
            let capacity = KEYS * percent / 100;
            print!("| zipf s={s} | {capacity} ({percent}%) |");
            for (_, make) in &stores {
                let store = make(capacity);
                print!(" {:.2}% |", ratio(&*store, &t, &entries) * 100.0);
            }
            println!();
        }
    }
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
