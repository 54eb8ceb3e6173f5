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
