//! Hit latency against working-set size: for 1 to 1,048,576 cached keys (powers of 4), the mean
//! time of a hit over a pseudo-random order of those keys, for a `#[cache_core::cached]` fn on
//! the memory backend, a `#[cached::proc_macro::cached]` fn, quick_cache and moka (`u64 -> u64`,
//! every key cached, capacities above the largest size). Prints CSV (`cache,keys,ns_per_hit`)
//! and writes it to `target/working_set.csv`; `scripts/working_set.sh` runs this and draws
//! `docs/working_set.svg` from it.
//!
//! Run: `cargo bench -p cache-core --bench working_set`

use std::hint::black_box;
use std::time::Instant;

const LOOKUPS: usize = 1 << 20;

#[path = "common/u64_fns.rs"]
mod u64_fns;
use u64_fns::{cached_crate, ours};

/// A pseudo-random order of `LOOKUPS` keys below `n` (xorshift64*).
fn order(n: u64) -> Vec<u64> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    (0..LOOKUPS)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) % n
        })
        .collect()
}

/// Nanoseconds per hit: the best of three passes over `keys`.
fn time(keys: &[u64], mut hit: impl FnMut(u64) -> u64) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut sum = 0u64;
        for &k in keys {
            sum = sum.wrapping_add(hit(black_box(k)));
        }
        black_box(sum);
        best = best.min(t.elapsed().as_nanos() as f64 / keys.len() as f64);
    }
    best
}

fn main() {
    let u64_fns::Caches { quick, moka, .. } = u64_fns::Caches::install();
    let mut csv = String::from("cache,keys,ns_per_hit\n");
    let mut filled = 0u64;
    let mut n = 1u64;
    while n <= 1 << 20 {
        // keys filled..n join the working set (the smaller sizes' keys are in it already)
        for k in filled..n {
            ours(k);
            cached_crate(k);
            quick.insert(k, k.wrapping_mul(3));
            moka.insert(k, k.wrapping_mul(3));
        }
        moka.run_pending_tasks();
        filled = n;
        let keys = order(n);
        let rows = [
            ("cache-core", time(&keys, ours)),
            ("cached", time(&keys, cached_crate)),
            ("quick_cache", time(&keys, |k| quick.get(&k).unwrap_or(0))),
            ("moka", time(&keys, |k| moka.get(&k).unwrap_or(0))),
        ];
        for (name, ns) in rows {
            let line = format!("{name},{n},{ns:.1}\n");
            print!("{line}");
            csv.push_str(&line);
        }
        n *= 4;
    }
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/working_set.csv");
    if let Err(e) = std::fs::write(&out, csv) {
        eprintln!("cannot write {}: {e}", out.display());
    }
}
