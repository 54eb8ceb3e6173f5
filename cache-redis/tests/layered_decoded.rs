//! L1 entries filled from Redis are kept decoded: the first `#[cached]` hit decodes the bytes
//! read from Redis and hands the typed value back (`Backend::offer_decoded`), the L1 then holds
//! it typed and later hits are plain memory hits, served on the direct hit path
//! (`Backend::memory_hits`). A replacement never undoes an invalidation or a newer value, and
//! coherence across nodes still holds. Against a real redis-server.
//!
//! The tests install backends as the process-wide default (the product setup), so they run one
//! at a time.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::value::{self, SharedValue};
use cache_core::{cached, invalidates, registry, Backend, EntryOptions, Key, Lease, Lookup};
use cache_core::{LocalLookup, MemoryBackend};
use cache_redis::local_store::{LocalStore, QuickCacheStore};
use cache_redis::{Coherence, LayeredBackend, SyncOptions, TrackingMode};
use test_support::{wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(5);

/// The tests change the process-wide default backend.
static SERIAL: Mutex<()> = Mutex::new(());

/// The source of truth of `price`.
static BASE: AtomicU64 = AtomicU64::new(100);

#[cached]
fn price(id: u64) -> u64 {
    BASE.load(Ordering::SeqCst) + id
}

#[invalidates(price(id))]
fn set_base(id: u64, base: u64) {
    let _ = id;
    BASE.store(base, Ordering::SeqCst);
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn node(server: &RedisServer, prefix: &str, coherence: Coherence) -> Arc<LayeredBackend> {
    let l2 = common::builder(server)
        .prefix(prefix)
        .connect_blocking()
        .unwrap();
    let b = LayeredBackend::builder(l2)
        .coherence(coherence)
        .ping_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(b.wait_coherent(DEADLINE));
    Arc::new(b)
}

/// What the L1 of `n` holds for `key`: `Some(Some(v))` typed, `Some(None)` not typed (bytes),
/// `None` absent.
fn l1_value(n: &LayeredBackend, key: &Key) -> Option<Option<u64>> {
    let mut typed = None;
    match n
        .local_store()
        .lookup_local(&key.local(), &mut |v| typed = value::downcast::<u64>(&**v))
    {
        LocalLookup::Hit => Some(typed),
        _ => None,
    }
}

/// The value (`Arc`) the L1 of `n` holds for `key`.
fn l1_stored(n: &LayeredBackend, key: &Key) -> Option<SharedValue> {
    let mut found = None;
    n.local_store()
        .lookup_local(&key.local(), &mut |v| found = Some(v.clone()));
    found
}

fn l1_hits(n: &LayeredBackend) -> (u64, u64) {
    let s = Backend::stats(n.local_store());
    (s.hits, s.misses)
}

/// Node A computes `price(1)`; node B reads it (L1 filled from Redis, then kept typed) and serves
/// it on the direct hit path; an update through A is then seen by B.
fn decoded_and_coherent(coherence: Coherence, prefix: &str) {
    let Some(server) = common::server() else {
        return;
    };
    let a = node(&server, prefix, coherence.clone());
    let b = node(&server, prefix, coherence);
    // the L1 of a layered backend over a memory store serves the direct hit path; its misses
    // are not final (they go on to Redis)
    assert!(b.memory_hits().is_some());
    assert!(b.as_memory().is_none());
    let key = price_entry(1).key().clone();

    BASE.store(100, Ordering::SeqCst);
    registry::install(a.clone());
    assert_eq!(price(1), 101);
    if let Some(sync) = a.synchronizer() {
        // A's write published a removal; let B see it before B fills its L1
        assert!(wait_until(DEADLINE, || sync.stats().published_ops >= 1));
        let bs = b.synchronizer().unwrap();
        assert!(wait_until(DEADLINE, || bs.stats().received_messages >= 1));
    }

    registry::install(b.clone());
    assert!(
        wait_until(DEADLINE, || price(1) == 101
            && l1_value(&b, &key) == Some(Some(101))),
        "B's L1 holds the decoded value, not bytes: {:?}",
        l1_value(&b, &key)
    );
    // hits now cost one L1 lookup each (no second lookup, no Redis read, no decode)
    let (hits, misses) = l1_hits(&b);
    let fn_hits = price_cache().stats().hits;
    for _ in 0..10 {
        assert_eq!(price(1), 101);
    }
    assert_eq!(l1_hits(&b), (hits + 10, misses));
    assert_eq!(price_cache().stats().hits, fn_hits + 10);

    // an update through A reaches B, whose L1 then holds the new value, decoded again
    registry::install(a.clone());
    set_base(1, 200);
    assert_eq!(price(1), 201);
    registry::install(b.clone());
    assert!(
        wait_until(DEADLINE, || price(1) == 201
            && l1_value(&b, &key) == Some(Some(201))),
        "B sees A's update: {:?}",
        l1_value(&b, &key)
    );
    registry::install(Arc::new(MemoryBackend::new()));
}

#[test]
fn redis_filled_l1_entries_are_kept_decoded_pubsub() {
    let _serial = serial();
    decoded_and_coherent(
        Coherence::PubSub(SyncOptions::new("t:decoded")),
        "t-decoded-ps",
    );
}

#[test]
fn redis_filled_l1_entries_are_kept_decoded_tracking() {
    let _serial = serial();
    decoded_and_coherent(Coherence::Tracking(TrackingMode::Default), "t-decoded-tr");
}

/// A replacement whose expected value is no longer the entry's (the entry was invalidated and
/// refilled meanwhile, or just invalidated) changes nothing.
#[test]
fn a_replacement_racing_an_invalidation_is_refused() {
    let _serial = serial();
    let Some(server) = common::server() else {
        return;
    };
    let coherence = Coherence::PubSub(SyncOptions::new("t:race"));
    let a = node(&server, "t-race", coherence.clone());
    let b = node(&server, "t-race", coherence);
    let key = Key::from_text("app::g(1)");
    let write = |v: u64| {
        a.set_blocking(
            &key,
            value::share(v),
            &EntryOptions::new(),
            Lease::UNCONDITIONAL,
        )
        .unwrap()
    };
    let read = || match b.get_blocking(&key).unwrap() {
        Lookup::Hit(h) => Some(h.into_typed::<u64>().unwrap()),
        Lookup::Miss(_) | Lookup::Stale { .. } => None,
    };

    write(1);
    // a read outside the runtime fills L1 with the bytes and offers nothing back
    assert!(wait_until(DEADLINE, || read() == Some(1)
        && l1_value(&b, &key) == Some(None)));
    let first = l1_stored(&b, &key).unwrap();

    // A writes 2: B's L1 entry goes, and a read refills it with the new bytes
    write(2);
    assert!(wait_until(DEADLINE, || read() == Some(2)
        && l1_value(&b, &key) == Some(None)));
    let second = l1_stored(&b, &key).unwrap();
    assert!(!Arc::ptr_eq(&first, &second));

    // the decode of the first read comes back late: refused, the entry keeps the new bytes
    assert!(!b
        .local_store()
        .replace_value_if_same(&key, &first, value::share(1u64)));
    b.offer_decoded(&key, &first, value::share(1u64));
    assert!(Arc::ptr_eq(&l1_stored(&b, &key).unwrap(), &second));
    assert_eq!(read(), Some(2));

    // the decode of the current bytes is kept
    b.offer_decoded(&key, &second, value::share(2u64));
    assert_eq!(l1_value(&b, &key), Some(Some(2)));

    // after an invalidation, a late replacement does not bring the entry back
    let typed = l1_stored(&b, &key).unwrap();
    b.local_store().invalidate_keys(&[key.text()]);
    assert!(!b
        .local_store()
        .replace_value_if_same(&key, &typed, value::share(9u64)));
    assert_eq!(l1_value(&b, &key), None);
}

/// The quick_cache store replaces a value under the same rule.
#[test]
fn quick_cache_store_replaces_only_the_same_value() {
    let store = QuickCacheStore::new(100).unwrap();
    store.init().unwrap();
    let key = Key::from_text("k");
    let held = value::share(1u64);
    let opts = EntryOptions::new().depends_on("d");
    store.put(&key, held.clone(), &opts, store.lease());
    assert!(!store.replace_value_if_same(&key, &value::share(1u64), value::share(3u64)));
    assert!(store.replace_value_if_same(&key, &held, value::share(2u64)));
    let mut got = None;
    store.lookup(&key.local(), &mut |v| got = value::downcast::<u64>(&**v));
    assert_eq!(got, Some(2));
    // the dependencies stay the entry's
    store.invalidate_references(Some(&["d"]));
    assert!(!LocalStore::contains(&store, &key));
    assert!(!store.replace_value_if_same(&key, &held, value::share(4u64)));
    assert!(!LocalStore::contains(&store, &key));
}
