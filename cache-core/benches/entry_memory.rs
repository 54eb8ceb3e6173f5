//! Bytes per entry: resident memory grown by 1,000,000 distinct entries of a `u64 -> u64` cached
//! fn (`#[cache_core::cached]` on the memory backend, `#[cached::proc_macro::cached]`), and of
//! quick_cache and moka caches of `u64 -> u64`, each measured in a process of its own (this bench
//! runs itself once per cache), read from `/proc/self/statm` before and after.
//!
//! Run: `cargo bench -p cache-core --bench entry_memory`

use std::process::Command;

const N: u64 = 1_000_000;
const CHILD: &str = "ENTRY_MEMORY_CHILD";

#[path = "common/u64_fns.rs"]
mod u64_fns;
use u64_fns::{cached_crate, ours};

fn resident() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn child(which: &str) {
    // built before the baseline: the cache's fixed tables are not per-entry cost
    let u64_fns::Caches {
        memory,
        quick,
        moka,
    } = u64_fns::Caches::install();
    std::hint::black_box(ours(u64::MAX));
    std::hint::black_box(cached_crate(u64::MAX));
    let before = resident();
    let held = match which {
        "ours" => {
            for x in 0..N {
                std::hint::black_box(ours(x));
            }
            cache_core::Backend::stats(&*memory).entries
        }
        "cached" => {
            for x in 0..N {
                std::hint::black_box(cached_crate(x));
            }
            N
        }
        "quick_cache" => {
            for x in 0..N {
                quick.insert(x, x.wrapping_mul(3));
            }
            quick.len() as u64
        }
        "moka" => {
            for x in 0..N {
                moka.insert(x, x.wrapping_mul(3));
            }
            moka.run_pending_tasks();
            moka.entry_count()
        }
        _ => 0,
    };
    let after = resident();
    println!("{which} {} {held}", after.saturating_sub(before));
}

fn main() {
    if let Ok(which) = std::env::var(CHILD) {
        child(&which);
        return;
    }
    println!("bytes per entry, {N} distinct u64 -> u64 entries, resident memory difference:");
    let mut rows = Vec::new();
    for which in ["ours", "cached", "quick_cache", "moka"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .env(CHILD, which)
            .output()
            .expect("child runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.starts_with(which)).unwrap_or("");
        let parts: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|s| s.parse().ok())
            .collect();
        if let [bytes, held] = parts[..] {
            let per = bytes as f64 / held.max(1) as f64;
            rows.push((which, per));
            println!("  {which:>12}: {per:>6.0} bytes per entry ({held} entries held)");
        }
    }
    if let (Some(o), Some(q)) = (
        rows.iter().find(|r| r.0 == "ours"),
        rows.iter().find(|r| r.0 == "quick_cache"),
    ) {
        println!("  ours / quick_cache: {:.1}x", o.1 / q.1);
    }
}
