//! `max_weight` bounds the memory a memory cache holds: 10,000 values of 100 KB (1 GB in all)
//! through a cache bounded to 64 MiB leave the process's resident memory under 1.25x the bound
//! above its baseline; a value larger than the bound is not stored. Alone in its test binary so
//! no other test moves the resident figure.

use cache_core::{value, Backend, EntryOptions, Key, Lookup, MemoryBackend};

/// Resident memory of this process, bytes (`/proc/self/statm`).
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

#[test]
fn max_weight_bounds_resident_memory_and_rejects_what_never_fits() {
    const BOUND: u64 = 64 << 20;
    let baseline = resident();
    let b = MemoryBackend::builder().max_weight(BOUND).build().unwrap();
    let o = EntryOptions::new();
    let mut peak = 0;
    for i in 0..10_000u32 {
        // a String (its weight walk is O(1); a Vec<u8> is walked byte by byte)
        let v: String = char::from(b'a' + (i % 26) as u8)
            .to_string()
            .repeat(100 * 1024);
        let k = Key::from_text(format!("v{i}"));
        b.set_blocking(&k, value::share(v), &o, b.current_lease())
            .unwrap();
        if i % 500 == 0 {
            peak = peak.max(resident());
        }
    }
    peak = peak.max(resident());
    let s = b.stats();
    let grown = peak.saturating_sub(baseline);
    eprintln!(
        "baseline {} MiB, peak {} MiB (+{} MiB), {} entries, weight {} MiB",
        baseline >> 20,
        peak >> 20,
        grown >> 20,
        s.entries,
        s.weight >> 20
    );
    assert!(s.weight <= BOUND, "weight {} over the bound", s.weight);
    assert!(
        s.entries >= 500,
        "the cache holds what fits ({})",
        s.entries
    );
    assert!(
        (grown as f64) < 1.25 * BOUND as f64,
        "resident memory grew by {} MiB under a {} MiB bound",
        grown >> 20,
        BOUND >> 20
    );

    // a value larger than the whole bound is not stored (and evicts nothing)
    let small = MemoryBackend::builder()
        .max_weight(1 << 20)
        .build()
        .unwrap();
    let kept = Key::from_text("kept");
    small
        .set_blocking(
            &kept,
            value::share(vec![1u8; 1024]),
            &o,
            small.current_lease(),
        )
        .unwrap();
    let huge = Key::from_text("huge");
    small
        .set_blocking(
            &huge,
            value::share(vec![2u8; 2 << 20]),
            &o,
            small.current_lease(),
        )
        .unwrap();
    assert!(matches!(
        small.get_blocking(&huge).unwrap(),
        Lookup::Miss(_)
    ));
    assert!(matches!(small.get_blocking(&kept).unwrap(), Lookup::Hit(_)));
}
