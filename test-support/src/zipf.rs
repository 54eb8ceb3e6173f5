//! The skewed request traces the hit-ratio benches share (cache-core's `hit_ratio`, cache-redis's
//! `local_store_ratio`), so their tables compare the same requests.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

/// Distinct keys of a trace (key ids `0..KEYS`).
pub const KEYS: usize = 100_000;
/// Requests in a trace.
pub const REQUESTS: usize = 1_500_000;
/// The seed of every trace (mixed with the exponent).
pub const SEED: u64 = 0x5eed_cafe;

/// A deterministic Zipf(`s`) trace of [`REQUESTS`] key ids over [`KEYS`] keys; hot ranks are
/// spread over the key space by a permutation.
///
/// ```
/// let t = test_support::zipf::trace(0.99);
/// assert_eq!(t.len(), test_support::zipf::REQUESTS);
/// assert_eq!(t, test_support::zipf::trace(0.99));
/// ```
pub fn trace(s: f64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(SEED ^ s.to_bits());
    let zipf = Zipf::new(KEYS as u64, s).expect("valid zipf parameters");
    let mut perm: Vec<u32> = (0..KEYS as u32).collect();
    perm.shuffle(&mut rng);
    (0..REQUESTS)
        .map(|_| {
            let rank = zipf.sample(&mut rng) as usize;
            perm[rank.clamp(1, KEYS) - 1]
        })
        .collect()
}
