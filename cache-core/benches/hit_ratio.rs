//! Hit ratios of the memory backend's eviction policies on Zipf traces, against quick_cache,
//! moka and Belady's offline optimum (MIN with bypass), plus the cost of a hit.
//!
//! Run: `cargo bench -p cache-core --bench hit_ratio`. Prints markdown tables. Deterministic
//! traces (fixed seed); takes well under two minutes.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Instant;

use cache_core::memory::{EvictionPolicy, MemoryBackend};
use cache_core::{value, Backend, EntryOptions, Key, LocalLookup};
use test_support::zipf::{trace, KEYS, REQUESTS, SEED};

fn keys() -> Vec<Key> {
    (0..KEYS as u32)
        .map(|k| Key::new(format!("bench::get({k})"), &k.to_le_bytes()))
        .collect()
}

fn memory(trace: &[u32], keys: &[Key], capacity: usize, policy: EvictionPolicy) -> f64 {
    let backend = MemoryBackend::builder()
        .max_entries(capacity)
        .policy(policy)
        .build()
        .expect("valid configuration");
    let options = EntryOptions::new();
    let mut hits = 0usize;
    for &k in trace {
        let key = &keys[k as usize];
        match backend.lookup_local(&key.local(), &mut |_| {}) {
            LocalLookup::Hit => hits += 1,
            LocalLookup::Miss(lease) => {
                let _ = backend.set_blocking(key, value::share(k), &options, lease);
            }
            LocalLookup::Remote => unreachable!("the memory backend is local"),
        }
    }
    assert!(backend.len() <= capacity);
    hits as f64 / trace.len() as f64
}

fn quick_cache(trace: &[u32], capacity: usize) -> f64 {
    let cache = quick_cache::sync::Cache::<u32, u32>::new(capacity);
    let mut hits = 0usize;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k);
        }
    }
    hits as f64 / trace.len() as f64
}

fn moka(trace: &[u32], capacity: usize) -> f64 {
    let cache = moka::sync::Cache::<u32, u32>::new(capacity as u64);
    let mut hits = 0usize;
    for &k in trace {
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            cache.insert(k, k);
        }
    }
    hits as f64 / trace.len() as f64
}

/// Belady's MIN with bypass: on a miss, keep the key only if its next use comes before the
/// farthest next use in the cache (evicting that one).
fn belady(trace: &[u32], capacity: usize) -> f64 {
    const NEVER: usize = usize::MAX;
    let mut next = vec![NEVER; trace.len()];
    let mut last = vec![NEVER; KEYS];
    for (i, &k) in trace.iter().enumerate().rev() {
        next[i] = last[k as usize];
        last[k as usize] = i;
    }
    let mut held = vec![NEVER; KEYS]; // next use of each held key
    let mut by_next: BTreeSet<(usize, u32)> = BTreeSet::new();
    let mut hits = 0usize;
    for (i, &k) in trace.iter().enumerate() {
        let ku = k as usize;
        if held[ku] != NEVER {
            hits += 1;
            by_next.remove(&(held[ku], k));
            held[ku] = NEVER;
        }
        let n = next[i];
        if n == NEVER {
            continue;
        }
        if by_next.len() >= capacity {
            match by_next.last().copied() {
                Some((far, fk)) if far > n => {
                    by_next.pop_last();
                    held[fk as usize] = NEVER;
                }
                _ => continue,
            }
        }
        by_next.insert((n, k));
        held[ku] = n;
    }
    hits as f64 / trace.len() as f64
}

/// Nanoseconds per `lookup_local` hit, one thread, 1024 resident keys.
fn hit_cost(keys: &[Key], policy: EvictionPolicy) -> f64 {
    let backend = MemoryBackend::builder()
        .policy(policy)
        .build()
        .expect("valid configuration");
    let resident = &keys[..1024];
    for (i, key) in resident.iter().enumerate() {
        let lease = backend.current_lease();
        let _ = backend.set_blocking(key, value::share(i as u64), &EntryOptions::new(), lease);
    }
    let locals: Vec<_> = resident.iter().map(Key::local).collect();
    let rounds = 5_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for k in &locals {
            black_box(backend.lookup_local(black_box(k), &mut |v| {
                black_box(v);
            }));
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * locals.len()) as f64
}

fn quick_cache_hit_cost() -> f64 {
    let cache = quick_cache::sync::Cache::<u32, std::sync::Arc<u64>>::new(100_000);
    for k in 0..1024u32 {
        cache.insert(k, std::sync::Arc::new(k as u64));
    }
    let rounds = 5_000;
    let start = Instant::now();
    for _ in 0..rounds {
        for k in 0..1024u32 {
            black_box(cache.get(black_box(&k)));
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * 1024) as f64
}

fn main() {
    let started = Instant::now();
    let keys = keys();
    let policies = [
        ("S3Fifo (default)", EvictionPolicy::S3Fifo),
        ("Lru", EvictionPolicy::Lru),
        ("Fifo", EvictionPolicy::Fifo),
    ];
    println!("Hit ratios, {REQUESTS} requests over {KEYS} keys (Zipf), seed {SEED:#x}\n");
    print!("| trace | capacity |");
    for (name, _) in &policies {
        print!(" {name} |");
    }
    println!(" quick_cache 0.7 | moka 0.12 | Belady MIN |");
    println!("|---|---|{}---|---|---|", "---|".repeat(policies.len()));
    let mut shortfalls = Vec::new();
    for s in [0.99, 0.8] {
        let t = trace(s);
        for percent in [1usize, 10] {
            let capacity = KEYS * percent / 100;
            let ours: Vec<f64> = policies
                .iter()
                .map(|(_, p)| memory(&t, &keys, capacity, *p))
                .collect();
            let qc = quick_cache(&t, capacity);
            let mk = moka(&t, capacity);
            let opt = belady(&t, capacity);
            print!("| zipf s={s} | {capacity} ({percent}%) |");
            for r in &ours {
                print!(" {:.2}% |", r * 100.0);
            }
            println!(
                " {:.2}% | {:.2}% | {:.2}% |",
                qc * 100.0,
                mk * 100.0,
                opt * 100.0
            );
            if ours[0] < qc {
                shortfalls.push(format!(
                    "s={s}, capacity {capacity}: default {:.3}% < quick_cache {:.3}%",
                    ours[0] * 100.0,
                    qc * 100.0
                ));
            }
        }
    }
    println!("\nHit cost (lookup_local, one thread, 1024 resident keys)\n");
    println!("| store | ns per hit |\n|---|---|");
    for (name, p) in &policies {
        println!("| MemoryBackend {name} | {:.1} |", hit_cost(&keys, *p));
    }
    println!(
        "| quick_cache 0.7 get (Arc value) | {:.1} |",
        quick_cache_hit_cost()
    );
    for s in &shortfalls {
        println!("\nWARNING: {s}");
    }
    println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
}
