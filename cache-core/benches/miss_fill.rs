//! Miss + fill: a cached `fn(u64) -> u64` with a trivial body called with a new key each time
//! (every call misses and stores), for `#[cache_core::cached]` on the memory backend and
//! `#[cached::proc_macro::cached]`, next to quick_cache and moka inserts of the same keys.
//! Best of three passes of 200,000 calls, each pass on fresh keys; capacities hold every key.
//!
//! Run: `cargo bench -p cache-core --bench miss_fill`

use std::hint::black_box;
use std::time::Instant;

const CALLS: u64 = 200_000;

#[path = "common/u64_fns.rs"]
mod u64_fns;
use u64_fns::{cached_crate, ours};

fn best(mut pass: impl FnMut(u64) -> u64) -> f64 {
    let mut best = f64::MAX;
    for p in 0..3 {
        let base = (p + 1) * 10_000_000;
        let t = Instant::now();
        let mut sum = 0u64;
        for i in 0..CALLS {
            sum = sum.wrapping_add(pass(black_box(base + i)));
        }
        black_box(sum);
        best = best.min(t.elapsed().as_nanos() as f64 / CALLS as f64);
    }
    best
}

fn main() {
    let u64_fns::Caches { quick, moka, .. } = u64_fns::Caches::install();
    let rows = [
        ("cache-core #[cached]", best(ours)),
        ("cached #[cached]", best(cached_crate)),
        (
            "quick_cache insert",
            best(|k| {
                quick.insert(k, k.wrapping_mul(3));
                k
            }),
        ),
        (
            "moka insert",
            best(|k| {
                moka.insert(k, k.wrapping_mul(3));
                k
            }),
        ),
    ];
    let base = rows[1].1;
    println!("miss + fill, ns per call (best of 3 passes of {CALLS}):");
    for (name, ns) in rows {
        println!("  {name:>22}: {ns:>8.1} ns  ({:.1}x cached)", ns / base);
    }
}
