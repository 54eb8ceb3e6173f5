//! The layered backend (L1 in process, L2 = Redis) on several nodes against a real
//! redis-server: L1 coherence through RESP3 client tracking (default and BCAST modes) and
//! through pub/sub, writes made outside the cache (`SET`/`DEL` on the entry key), lost
//! tracking connections, L1 TTL bounded by the L2 TTL, and reads racing writes.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{value, Backend, EntryOptions, Key, Lease, LocalLookup, Lookup};
use cache_redis::local_store::{LocalStore, QuickCacheStore};
use cache_redis::{Coherence, LayeredBackend, RedisBackend, SyncOptions, TrackingMode};
use test_support::{wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(5);

fn l2(server: &RedisServer) -> RedisBackend {
    common::builder(server).connect_blocking().unwrap()
}

fn node(server: &RedisServer, coherence: Coherence) -> LayeredBackend {
    let b = LayeredBackend::builder(l2(server))
        .coherence(coherence)
        .ping_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(b.wait_coherent(DEADLINE));
    b
}

fn write<S: LocalStore>(n: &LayeredBackend<S>, key: &str, v: u64, opts: &EntryOptions) {
    let k = Key::from_text(key);
    n.set_blocking(&k, value::share(v), opts, Lease::UNCONDITIONAL)
        .unwrap();
}

fn read<S: LocalStore>(n: &LayeredBackend<S>, key: &str) -> Option<u64> {
    match n.get_blocking(&Key::from_text(key)).unwrap() {
        Lookup::Hit(h) => Some(h.into_typed::<u64>().unwrap()),
        Lookup::Miss(_) | Lookup::Stale { .. } => None,
    }
}

fn in_l1<S: LocalStore>(n: &LayeredBackend<S>, key: &str) -> bool {
    n.local_store().contains(&Key::from_text(key))
}

/// Reads until the value is in L1 (a read racing the write's own invalidation message or push
/// is, correctly, not kept).
fn fill<S: LocalStore>(n: &LayeredBackend<S>, key: &str, v: u64) -> bool {
    wait_until(DEADLINE, || read(n, key) == Some(v) && in_l1(n, key))
}

fn l1_gone<S: LocalStore>(n: &LayeredBackend<S>, key: &str) -> bool {
    wait_until(DEADLINE, || !in_l1(n, key))
}

fn three(server: &RedisServer, coherence: Coherence) -> [LayeredBackend; 3] {
    [0; 3].map(|_| node(server, coherence.clone()))
}

#[test]
fn reads_fill_l1_and_a_hit_is_served_in_process() {
    let Some(server) = common::server() else {
        return;
    };
    let [a, b, _c] = three(&server, Coherence::Tracking(TrackingMode::Default));
    write(&a, "app::f(1)", 11, &EntryOptions::new());
    assert!(fill(&b, "app::f(1)", 11), "a read fills L1");
    let mut seen = false;
    let r = b.lookup_local(&Key::from_text("app::f(1)").local(), &mut |_| seen = true);
    assert_eq!((r, seen), (LocalLookup::Hit, true));
    assert!(matches!(
        a.lookup_local(&Key::from_text("nope").local(), &mut |_| {}),
        LocalLookup::Remote
    ));
}

#[test]
fn tracking_default_mode_invalidation_on_a_reaches_b_and_c() {
    let Some(server) = common::server() else {
        return;
    };
    let [a, b, c] = three(&server, Coherence::Tracking(TrackingMode::Default));
    let opts = EntryOptions::new().depends_on("user:7");
    write(&a, "app::get_user(7)", 7, &opts);
    for n in [&b, &c] {
        assert!(fill(n, "app::get_user(7)", 7));
    }
    a.invalidate_blocking("user:7").unwrap();
    assert!(l1_gone(&b, "app::get_user(7)") && l1_gone(&c, "app::get_user(7)"));
    assert_eq!(read(&b, "app::get_user(7)"), None);
    assert!(b.tracker().stats().keys >= 1);
}

fn raw_set_and_del_invalidate_every_l1(mode: TrackingMode) {
    let Some(server) = common::server() else {
        return;
    };
    let [a, b, c] = three(&server, Coherence::Tracking(mode));
    write(&a, "app::g(1)", 1, &EntryOptions::new());
    for n in [&a, &b, &c] {
        assert!(fill(n, "app::g(1)", 1));
    }
    // A write made outside the cache (what `redis-cli SET` does).
    let entry_key = a.redis().entry_key("app::g(1)");
    let mut con = server.connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg(&entry_key)
        .arg("garbage")
        .query(&mut con)
        .unwrap();
    for n in [&a, &b, &c] {
        assert!(l1_gone(n, "app::g(1)"), "raw SET invalidated L1");
    }
    // Refill, then a raw DEL.
    write(&a, "app::g(1)", 2, &EntryOptions::new());
    for n in [&a, &b, &c] {
        assert!(fill(n, "app::g(1)", 2));
    }
    let _: () = redis::cmd("DEL").arg(&entry_key).query(&mut con).unwrap();
    for n in [&a, &b, &c] {
        assert!(l1_gone(n, "app::g(1)"), "raw DEL invalidated L1");
        assert_eq!(read(n, "app::g(1)"), None);
    }
    // FLUSHALL: a null invalidation push clears every L1.
    write(&a, "app::g(2)", 3, &EntryOptions::new());
    for n in [&b, &c] {
        assert!(fill(n, "app::g(2)", 3));
    }
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    for n in [&b, &c] {
        assert!(l1_gone(n, "app::g(2)"), "FLUSHALL cleared L1");
    }
}

#[test]
fn tracking_default_mode_raw_writes_invalidate_every_l1() {
    raw_set_and_del_invalidate_every_l1(TrackingMode::Default);
}

#[test]
fn tracking_bcast_mode_raw_writes_invalidate_every_l1() {
    raw_set_and_del_invalidate_every_l1(TrackingMode::Broadcast);
}

#[test]
fn pub_sub_mode_invalidation_on_a_reaches_b_and_c() {
    let Some(server) = common::server() else {
        return;
    };
    let [a, b, c] = three(&server, Coherence::PubSub(SyncOptions::new("t:layered")));
    // Y depends on user:7; X depends on Y's key (transitive).
    write(
        &a,
        "app::y(7)",
        7,
        &EntryOptions::new().depends_on("user:7"),
    );
    write(
        &a,
        "app::x(7)",
        8,
        &EntryOptions::new().depends_on("app::y(7)"),
    );
    for n in [&b, &c] {
        assert!(fill(n, "app::x(7)", 8) && fill(n, "app::y(7)", 7));
    }
    a.invalidate_blocking("user:7").unwrap();
    for n in [&b, &c] {
        assert!(l1_gone(n, "app::y(7)") && l1_gone(n, "app::x(7)"));
    }
    // A write on B drops the copies of A and C.
    write(&a, "app::z", 1, &EntryOptions::new());
    for n in [&a, &c] {
        assert!(fill(n, "app::z", 1));
    }
    write(&b, "app::z", 2, &EntryOptions::new());
    assert!(wait_until(DEADLINE, || read(&a, "app::z") == Some(2)));
    assert!(wait_until(DEADLINE, || read(&c, "app::z") == Some(2)));
}

fn tracker_id(server: &RedisServer) -> Vec<i64> {
    let mut con = server.connection().unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    list.lines()
        .filter(|l| l.split(' ').any(|f| f == "name=cache-track"))
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn after_the_tracking_connection_is_killed_no_node_serves_a_changed_entry() {
    let Some(server) = common::server() else {
        return;
    };
    let a = node(&server, Coherence::Tracking(TrackingMode::Default));
    write(&a, "app::h", 1, &EntryOptions::new());
    assert!(fill(&a, "app::h", 1));
    let ids = tracker_id(&server);
    assert_eq!(ids.len(), 1);
    let mut con = server.connection().unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(ids[0])
        .query(&mut con)
        .unwrap();
    // Changed while (maybe) nobody tracked it: L1 is flushed, the next read is fresh.
    let _: () = redis::cmd("DEL")
        .arg(a.redis().entry_key("app::h"))
        .query(&mut con)
        .unwrap();
    assert!(l1_gone(&a, "app::h"));
    assert!(wait_until(DEADLINE, || a.tracker().stats().connections >= 2));
    assert_eq!(read(&a, "app::h"), None);
    // Tracking works on the new connection.
    write(&a, "app::h", 2, &EntryOptions::new());
    assert_eq!(read(&a, "app::h"), Some(2));
    let _: () = redis::cmd("DEL")
        .arg(a.redis().entry_key("app::h"))
        .query(&mut con)
        .unwrap();
    assert!(l1_gone(&a, "app::h"));
}

#[test]
fn an_l1_entry_never_outlives_its_l2_ttl() {
    let Some(server) = common::server() else {
        return;
    };
    let [a, b, _c] = three(&server, Coherence::PubSub(SyncOptions::new("t:ttl")));
    write(
        &a,
        "app::t",
        1,
        &EntryOptions::new().ttl(Duration::from_secs(60)),
    );
    // Shorten the L2 TTL behind the cache's back (pub/sub mode: no tracking push).
    let mut con = server.connection().unwrap();
    let _: i64 = redis::cmd("PEXPIRE")
        .arg(a.redis().entry_key("app::t"))
        .arg(300)
        .query(&mut con)
        .unwrap();
    assert!(fill(&b, "app::t", 1));
    // Gone from L2 after 300 ms, and from B's L1 with it (its TTL was capped by PTTL).
    assert!(wait_until(DEADLINE, || !in_l1(&b, "app::t")));
    // L1 may expire up to a millisecond before L2 (PTTL is in whole ms, rounded down): the
    // L2 entry follows within the deadline, and a read then misses on both levels.
    assert!(wait_until(DEADLINE, || read(&b, "app::t").is_none()));
}

#[test]
fn reads_racing_writes_never_leave_a_stale_l1_entry() {
    let Some(server) = common::server() else {
        return;
    };
    for mode in [TrackingMode::Default, TrackingMode::Broadcast] {
        let writer = Arc::new(node(&server, Coherence::Tracking(mode)));
        let reader = Arc::new(node(&server, Coherence::Tracking(mode)));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (reader, stop) = (reader.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let _ = read(&reader, "app::race");
                    }
                })
            })
            .collect();
        for i in 0..300u64 {
            write(&writer, "app::race", i, &EntryOptions::new());
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        // Whatever raced, the reader converges to the last value (a stale fill would stay).
        assert!(
            wait_until(DEADLINE, || read(&reader, "app::race") == Some(299)),
            "{mode:?}: reader stuck on {:?}",
            read(&reader, "app::race")
        );
        assert_eq!(read(&reader, "app::race"), Some(299));
        writer.clear_blocking().unwrap();
    }
}

#[test]
fn the_layered_backend_takes_any_local_store() {
    let Some(server) = common::server() else {
        return;
    };
    let mk = || {
        let b = LayeredBackend::builder(l2(&server))
            .local_store(QuickCacheStore::new(1000).unwrap())
            .coherence(Coherence::Tracking(TrackingMode::Default))
            .build()
            .unwrap();
        assert!(b.wait_coherent(DEADLINE));
        b
    };
    let (a, b) = (mk(), mk());
    write(&a, "app::q", 5, &EntryOptions::new().depends_on("d"));
    assert!(fill(&b, "app::q", 5));
    a.invalidate_blocking("d").unwrap();
    assert!(l1_gone(&b, "app::q"));
}

#[test]
fn expired_l1_entries_are_swept_in_the_background() {
    let Some(server) = common::server() else {
        return;
    };
    let b = LayeredBackend::builder(l2(&server))
        .coherence(Coherence::PubSub(SyncOptions::new("t:sweep")))
        .sweep_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    assert!(b.wait_coherent(DEADLINE));
    let short = EntryOptions::new().ttl(Duration::from_millis(200));
    write(&b, "short", 1, &short);
    assert!(in_l1(&b, "short"), "the write filled L1");
    // nothing reads it again: only the sweeper removes it (`len` counts expired entries)
    assert!(
        wait_until(DEADLINE, || b.local_store().is_empty()),
        "an expired L1 entry was swept"
    );
}
