//! Random expiry spreading (`jitter`): a per-thread xorshift generator, seeded once per thread
//! from the clock and the thread's address. Not cryptographic; it only has to spread.

use std::cell::Cell;
use std::time::Duration;

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let addr = &local as *const u8 as u64;
    (t ^ addr.rotate_left(32)) | 1
}

fn next() -> u64 {
    STATE
        .try_with(|s| {
            // xorshift64*
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
        .unwrap_or(0)
}

/// A duration drawn uniformly from `0..max` (nanosecond resolution).
pub(crate) fn random_below(max: Duration) -> Duration {
    let n = max.as_nanos().min(u64::MAX as u128) as u64;
    if n == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(((next() as u128 * n as u128) >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_over_the_window() {
        let max = Duration::from_secs(5);
        let mut buckets = [0u32; 5];
        for _ in 0..10_000 {
            let d = random_below(max);
            assert!(d < max);
            buckets[d.as_secs() as usize] += 1;
        }
        for b in buckets {
            assert!((1_500..2_500).contains(&b), "{buckets:?}");
        }
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }
}
