//! The memory backend on its own: eviction order of each policy, expiration with a manual clock,
//! weight bounds, stats, and the dependency index staying exact under every way an entry leaves.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cache_core::memory::{EvictionPolicy, ManualClock, MemoryBackend};
use cache_core::{value, Backend, EntryOptions, Key, LocalLookup, Lookup, SetOutcome};

fn key(name: &str) -> Key {
    Key::from_text(name.to_string())
}

fn put(b: &MemoryBackend, name: &str, options: &EntryOptions) -> SetOutcome {
    b.set_blocking(
        &key(name),
        value::share(name.to_string()),
        options,
        b.current_lease(),
    )
    .expect("the memory backend does not fail")
}

fn hit(b: &MemoryBackend, name: &str) -> bool {
    b.lookup_local(&key(name).local(), &mut |_| {}) == LocalLookup::Hit
}

fn small(policy: EvictionPolicy, n: usize) -> MemoryBackend {
    MemoryBackend::builder()
        .max_entries(n)
        .policy(policy)
        .shards(1)
        .build()
        .expect("valid configuration")
}

/// The index must be exactly what the entries imply: every entry under its own key text and
/// each of its dependencies, nothing else, and no reference to an entry that is gone.
fn assert_index_exact(b: &MemoryBackend) {
    let entries = b.entries_snapshot();
    let mut expected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (text, deps) in &entries {
        expected
            .entry(text.clone())
            .or_default()
            .insert(text.clone());
        // `fn:` names (groups) are not indexed: found by a scan
        for d in deps.iter().filter(|d| !d.starts_with("fn:")) {
            expected.entry(d.clone()).or_default().insert(text.clone());
        }
    }
    let index = b.dependency_index_snapshot();
    assert_eq!(
        index, expected,
        "the dependency index drifted from the entries"
    );
    assert_eq!(b.len(), entries.len());
}

#[test]
fn lru_evicts_the_least_recently_read() {
    let b = small(EvictionPolicy::Lru, 3);
    let o = EntryOptions::new();
    for k in ["a", "b", "c"] {
        put(&b, k, &o);
    }
    assert!(hit(&b, "a")); // a is now the most recent; b the least
    put(&b, "d", &o);
    assert!(!hit(&b, "b"));
    assert!(hit(&b, "a") && hit(&b, "c") && hit(&b, "d"));
    assert_eq!(b.stats().evictions, 1);
}

#[test]
fn fifo_evicts_the_oldest_whatever_was_read() {
    let b = small(EvictionPolicy::Fifo, 3);
    let o = EntryOptions::new();
    for k in ["a", "b", "c"] {
        put(&b, k, &o);
    }
    assert!(hit(&b, "a"));
    put(&b, "d", &o);
    assert!(!hit(&b, "a"));
    assert!(hit(&b, "b") && hit(&b, "c") && hit(&b, "d"));
}

#[test]
fn s3fifo_keeps_a_hot_entry_through_a_scan() {
    let b = small(EvictionPolicy::S3Fifo, 50);
    let o = EntryOptions::new();
    put(&b, "hot", &o);
    assert!(hit(&b, "hot"));
    for i in 0..500 {
        put(&b, &format!("scan{i}"), &o);
        if i % 10 == 0 {
            assert!(
                hit(&b, "hot"),
                "the hot entry was evicted by a one-time scan at {i}"
            );
        }
    }
    assert!(b.len() <= 50);
}

#[test]
fn ttl_expires_at_its_deadline() {
    let clock = ManualClock::new();
    let b = MemoryBackend::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    put(&b, "k", &EntryOptions::new().ttl(Duration::from_secs(10)));
    clock.advance(Duration::from_secs(9));
    assert!(hit(&b, "k"));
    clock.advance(Duration::from_secs(1));
    assert!(!hit(&b, "k"), "served past its ttl");
    b.sweep_expired();
    assert!(b.is_empty());
    assert_eq!(b.stats().expirations, 1);
    assert_index_exact(&b);
}

#[test]
fn sliding_expiration_is_pushed_by_reads_and_capped_by_ttl() {
    let clock = ManualClock::new();
    let b = MemoryBackend::builder()
        .clock(clock.clone())
        .build()
        .unwrap();
    let o = EntryOptions::new()
        .sliding(Duration::from_secs(5))
        .ttl(Duration::from_secs(12));
    put(&b, "k", &o);
    for _ in 0..2 {
        clock.advance(Duration::from_secs(4));
        assert!(hit(&b, "k"), "a read within the window keeps the entry");
    }
    // t = 8; read at 8 pushed the deadline to 12 (= the ttl cap)
    clock.advance(Duration::from_secs(3));
    assert!(hit(&b, "k")); // t = 11
    clock.advance(Duration::from_secs(1)); // t = 12: ttl reached although read 1 s ago
    assert!(!hit(&b, "k"));

    put(
        &b,
        "idle",
        &EntryOptions::new().sliding(Duration::from_secs(5)),
    );
    clock.advance(Duration::from_secs(5));
    assert!(!hit(&b, "idle"), "an entry not read for the window is gone");
}

#[test]
fn weight_bound_evicts_to_fit_and_rejects_what_never_fits() {
    let b = MemoryBackend::builder()
        .max_weight(2_000)
        .shards(1)
        .build()
        .unwrap();
    let o = EntryOptions::new();
    for i in 0..100 {
        let k = key(&format!("k{i}"));
        b.set_blocking(&k, value::share(vec![0u8; 10]), &o, b.current_lease())
            .unwrap();
    }
    let s = b.stats();
    assert!(s.weight <= 2_000, "weight {} over the bound", s.weight);
    assert!(s.evictions > 0);
    assert_index_exact(&b);
}

#[test]
fn stats_count_what_happened() {
    let b = MemoryBackend::new();
    let o = EntryOptions::new().depends_on("d");
    put(&b, "a", &o);
    put(&b, "b", &o);
    assert!(hit(&b, "a"));
    assert!(!hit(&b, "zzz"));
    b.invalidate_blocking("d").unwrap();
    let s = b.stats();
    assert_eq!(
        (s.inserts, s.hits, s.misses, s.invalidations, s.entries),
        (2, 1, 1, 2, 0)
    );
    assert!((s.hit_ratio() - 0.5).abs() < 1e-9);
}

#[test]
fn invalidation_is_transitive_through_key_dependencies() {
    let b = MemoryBackend::new();
    put(&b, "user(7)", &EntryOptions::new().depends_on("row:user:7"));
    put(&b, "team(1)", &EntryOptions::new().depends_on("user(7)"));
    put(&b, "page(1)", &EntryOptions::new().depends_on("team(1)"));
    put(&b, "other", &EntryOptions::new().depends_on("row:user:8"));
    b.invalidate_blocking("row:user:7").unwrap();
    assert!(!hit(&b, "user(7)") && !hit(&b, "team(1)") && !hit(&b, "page(1)"));
    assert!(hit(&b, "other"));
    assert_index_exact(&b);
}

#[test]
fn a_set_with_a_lease_older_than_an_invalidation_is_rejected() {
    let b = MemoryBackend::new();
    let k = key("k");
    let Lookup::Miss(lease) = b.get_blocking(&k).unwrap() else {
        panic!("empty backend")
    };
    b.invalidate_blocking("dep").unwrap();
    let o = EntryOptions::new().depends_on("dep");
    let out = b.set_blocking(&k, value::share(1u8), &o, lease).unwrap();
    assert_eq!(out, SetOutcome::Rejected);
    // an unrelated invalidation does not reject
    let Lookup::Miss(lease) = b.get_blocking(&k).unwrap() else {
        panic!("nothing stored")
    };
    b.invalidate_blocking("unrelated").unwrap();
    let out = b.set_blocking(&k, value::share(1u8), &o, lease).unwrap();
    assert_eq!(out, SetOutcome::Stored);
    assert_eq!(b.stats().rejected_sets, 1);
}

#[test]
fn clear_empties_entries_and_index() {
    let b = MemoryBackend::new();
    for i in 0..10 {
        put(&b, &format!("k{i}"), &EntryOptions::new().depends_on("d"));
    }
    b.clear_blocking().unwrap();
    assert!(b.is_empty());
    assert_eq!(b.dependency_index_len(), 0);
}

/// A deterministic pseudo-random sequence (xorshift), so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn eviction_expiry_and_invalidation_keep_the_dependency_index_exact() {
    for policy in [
        EvictionPolicy::S3Fifo,
        EvictionPolicy::Lru,
        EvictionPolicy::Fifo,
    ] {
        for shards in [1, 4] {
            let clock = ManualClock::new();
            let b = MemoryBackend::builder()
                .max_entries(64)
                .policy(policy)
                .shards(shards)
                .clock(clock.clone())
                .build()
                .unwrap();
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ shards as u64);
            for step in 0..4_000 {
                match rng.next(10) {
                    0..=5 => {
                        let mut o = EntryOptions::new();
                        for _ in 0..rng.next(4) {
                            o = o.depends_on(format!("dep{}", rng.next(20)));
                        }
                        if rng.next(3) == 0 {
                            // depend on another entry's key: transitive chains
                            o = o.depends_on(format!("k{}", rng.next(200)));
                        }
                        if rng.next(4) == 0 {
                            o = o.ttl(Duration::from_millis(1 + rng.next(50)));
                        }
                        put(&b, &format!("k{}", rng.next(200)), &o);
                    }
                    6 => {
                        let _ = hit(&b, &format!("k{}", rng.next(200)));
                    }
                    7 => b
                        .invalidate_blocking(&format!("dep{}", rng.next(20)))
                        .unwrap(),
                    8 => b
                        .remove_blocking(&key(&format!("k{}", rng.next(200))))
                        .unwrap(),
                    _ => {
                        clock.advance(Duration::from_millis(rng.next(20)));
                        if rng.next(2) == 0 {
                            b.sweep_expired();
                        }
                    }
                }
                if step % 50 == 0 {
                    assert_index_exact(&b);
                }
                assert!(b.len() <= 64, "{policy:?}: {} entries", b.len());
            }
            assert_index_exact(&b);
            let s = b.stats();
            assert!(s.evictions > 0, "{policy:?}: the test must evict");
        }
    }
}

/// An installed memory backend is swept in the background once its sweep interval has passed:
/// expired entries leave without being touched.
#[test]
fn installed_backends_are_swept_in_the_background() {
    use cache_core::registry::{configure, Profile};
    use std::sync::Arc;
    let clock = ManualClock::new();
    let b = Arc::new(
        MemoryBackend::builder()
            .clock(clock.clone())
            .sweep_interval(Duration::from_secs(1))
            .build()
            .unwrap(),
    );
    configure()
        .profile("swept", Profile::new().backend(b.clone()))
        .apply()
        .unwrap();
    let short = EntryOptions::new().ttl(Duration::from_secs(1));
    for i in 0..100 {
        put(&b, &format!("k{i}"), &short);
    }
    put(&b, "forever", &EntryOptions::new());
    assert_eq!(b.len(), 101);
    clock.advance(Duration::from_secs(2));
    // the sweeper wakes every second (real time); bounded wait, not a sleep
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while b.len() > 1 {
        assert!(
            std::time::Instant::now() < end,
            "not swept: {} entries",
            b.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(b.contains("forever"));
    assert_eq!(b.stats().expirations, 100);
}

#[test]
fn a_zero_sweep_interval_is_a_config_error() {
    let err = MemoryBackend::builder()
        .sweep_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("sweep_interval"), "{err}");
}

/// `max_weight` bounds what the values hold, not their `size_of`: ten 10 MB strings in a cache
/// bounded to 32 MiB leave at most three of them held.
#[test]
fn max_weight_counts_the_heap_data_of_values() {
    let b = MemoryBackend::builder()
        .max_weight(32 << 20)
        .shards(1)
        .build()
        .unwrap();
    for i in 0..10 {
        let v = format!("{i}").repeat(10 << 20);
        b.set_blocking(
            &key(&format!("big{i}")),
            value::share(v),
            &EntryOptions::new(),
            b.current_lease(),
        )
        .unwrap();
    }
    let stats = b.stats();
    assert!(
        b.len() <= 3,
        "{} entries of 10 MB held under 32 MiB",
        b.len()
    );
    assert!(stats.weight <= 32 << 20, "weight {}", stats.weight);
    assert!(stats.weight >= (10 << 20) * b.len() as u64);
}

/// A fn's `fn:` name (what `invalidate_all` invalidates) is carried by every entry of the fn but
/// not indexed: invalidating it finds its entries by a scan, transitively, and leases still
/// reject a fill that raced it.
#[test]
fn group_names_are_not_indexed_and_still_invalidate() {
    let b = MemoryBackend::new();
    let g = EntryOptions::new().depends_on("fn:app::get");
    for i in 0..100 {
        put(&b, &format!("app::get({i})"), &g);
    }
    // an entry that depends on one of them (a nested call), and one of another fn
    put(
        &b,
        "app::page(1)",
        &EntryOptions::new().depends_on("app::get(7)"),
    );
    put(
        &b,
        "app::other(1)",
        &EntryOptions::new().depends_on("fn:app::other"),
    );
    // the index holds each entry's own key text (the nested dependency `app::get(7)` is one of
    // them): no set of 100 for the group
    assert_eq!(b.dependency_index_len(), 102);
    assert_eq!(b.dependents_of("fn:app::get").len(), 100);
    assert_index_exact(&b);
    let lease = b.current_lease();
    b.invalidate_blocking("fn:app::get").unwrap();
    assert!(!b.contains("app::get(7)"));
    assert!(!b.contains("app::page(1)"), "transitive");
    assert!(b.contains("app::other(1)"));
    assert_eq!(b.len(), 1);
    // a fill leased before the invalidation does not land
    let late = b
        .set_blocking(&key("app::get(1)"), value::share(1u8), &g, lease)
        .unwrap();
    assert_eq!(late, SetOutcome::Rejected);
    assert_index_exact(&b);
}
