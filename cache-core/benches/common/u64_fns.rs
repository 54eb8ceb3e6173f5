//! The `u64 -> u64` fn the entry-memory, miss + fill and working-set benches cache, once with
//! `#[cache_core::cached]` and once with the `cached` crate's `#[cached]`.

#[cache_core::cached]
pub fn ours(x: u64) -> u64 {
    x.wrapping_mul(3)
}

#[cached::proc_macro::cached]
pub fn cached_crate(x: u64) -> u64 {
    x.wrapping_mul(3)
}

/// The caches compared (a bench uses the fields it needs), each holding up to 2,000,000 `u64 -> u64` entries (so no bench
/// evicts): the memory backend `ours` uses (installed as the default), quick_cache and moka.
#[allow(dead_code)]
pub struct Caches {
    pub memory: std::sync::Arc<cache_core::MemoryBackend>,
    pub quick: quick_cache::sync::Cache<u64, u64>,
    pub moka: moka::sync::Cache<u64, u64>,
}

impl Caches {
    /// Builds them and installs the memory backend.
    pub fn install() -> Caches {
        let memory = std::sync::Arc::new(
            cache_core::MemoryBackend::builder()
                .max_entries(2_000_000)
                .build()
                .expect("a memory backend"),
        );
        cache_core::registry::install(memory.clone());
        Caches {
            memory,
            quick: quick_cache::sync::Cache::new(2_000_000),
            moka: moka::sync::Cache::new(2_000_000),
        }
    }
}
