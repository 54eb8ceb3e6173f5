//! A fixed number of cache hits, for counting instructions with callgrind (instruction counts do
//! not move with the machine's noise, unlike times). The per-hit cost is the difference of two
//! runs divided by the difference of their counts:
//!
//! ```text
//! cargo build --release -p cache-core --example hit_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/hit_loop u64 1000000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/hit_loop u64 2000000
//! ```
//!
//! Kinds: `u64` (a sync fn, 4 hot keys; `OFF=n` in the environment moves them to n..n+4), `async` (an async fn on a current-thread runtime, 4
//! hot keys), `miss` (a sync fn called with a new key each time: miss + fill, on a memory
//! backend holding every key).

use std::hint::black_box;

#[cache_core::cached]
fn hit_u64(x: u64) -> u64 {
    x.wrapping_mul(3)
}

/// The same fn for the `miss` kind (a second call site of `hit_u64` would change how the
/// compiler inlines it, and so the hit counts).
#[cache_core::cached]
fn miss_u64(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cache_core::cached]
async fn hit_async(x: u64) -> u64 {
    x.wrapping_mul(3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "u64".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut sum = 0u64;
    match kind.as_str() {
        "u64" => {
            let off: u64 = std::env::var("OFF").map_or(0, |v| v.parse().unwrap());
            for i in 0..n {
                sum = sum.wrapping_add(hit_u64(black_box((i & 3) + off)));
            }
        }
        "async" => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                for i in 0..n {
                    sum = sum.wrapping_add(hit_async(black_box(i & 3)).await);
                }
            });
        }
        "miss" => {
            cache_core::registry::install(std::sync::Arc::new(
                cache_core::MemoryBackend::builder()
                    .max_entries(4_000_000)
                    .build()
                    .expect("a memory backend"),
            ));
            for i in 0..n {
                sum = sum.wrapping_add(miss_u64(black_box(i + 4)));
            }
        }
        other => panic!("unknown kind {other}: u64, async or miss"),
    }
    println!("{sum}");
}
