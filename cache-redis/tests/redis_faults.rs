//! Fail-open: a killed, restarted, paused server, a killed connection, garbage under a key, a
//! value over the payload limit. Calls keep returning correct values within bounded latency.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::value;
use cache_core::{Backend, EntryOptions, Key, Lookup, SetOutcome};

/// What a cached fn does with a backend: look up, on a miss compute and fill; errors mean
/// "compute without the cache". Returns the value and whether it came from the cache.
async fn cached_call(b: &dyn Backend, i: u64) -> (u64, bool) {
    let k = Key::from_text(format!("square({i})"));
    let compute = i * i;
    match b.get(&k).await {
        Ok(Lookup::Hit(h)) => match h.into_typed::<u64>() {
            Ok(v) => (v, true),
            Err(_) => (compute, false),
        },
        Ok(Lookup::Miss(lease) | Lookup::Stale { lease, .. }) => {
            let o = EntryOptions::new().depends_on(format!("n:{i}"));
            let _ = b.set(&k, value::share(compute), &o, lease).await;
            (compute, false)
        }
        Err(_) => (compute, false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_server_under_load_fails_open_and_restart_reconnects() {
    let Some(mut server) = common::server() else {
        return;
    };
    let op_timeout = Duration::from_millis(200);
    let b: Arc<dyn Backend> = Arc::new(
        common::builder(&server)
            .op_timeout(op_timeout)
            .circuit_breaker(3, Duration::from_millis(100))
            .connect()
            .await
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let max_latency_us = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let (b, stop, calls, max) = (
            b.clone(),
            stop.clone(),
            calls.clone(),
            max_latency_us.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let (v, _) = cached_call(&*b, i % 50).await;
                max.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                assert_eq!(v, (i % 50) * (i % 50), "a wrong value");
                calls.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::task::yield_now().await;
            }
        }));
    }
    let wait_calls = |n: u64| {
        let calls = calls.clone();
        async move {
            let target = calls.load(Ordering::Relaxed) + n;
            common::eventually("calls to progress", Duration::from_secs(20), || {
                calls.load(Ordering::Relaxed) >= target
            })
            .await;
        }
    };
    wait_calls(500).await;
    server.kill();
    wait_calls(500).await; // calls keep completing while Redis is gone
    let rb = b.clone();
    server.restart().unwrap();
    wait_calls(500).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("no panic in a caller");
    }
    let max = Duration::from_micros(max_latency_us.load(Ordering::Relaxed));
    assert!(
        max < op_timeout * 3,
        "a call took {max:?} (op timeout {op_timeout:?})"
    );
    // reconnected by itself: a fill on the new server becomes a hit
    let k = Key::from_text("after_restart");
    common::eventually("reconnection", Duration::from_secs(10), || {
        let rb = rb.clone();
        let k = k.clone();
        futures_ready(async move {
            if let Ok(Lookup::Miss(lease)) = rb.get(&k).await {
                let _ = rb
                    .set(&k, value::share(1u8), &EntryOptions::new(), lease)
                    .await;
            }
            matches!(rb.get(&k).await, Ok(Lookup::Hit(_)))
        })
    })
    .await;
    assert!(rb.stats().errors > 0);
}

/// Runs a small future to completion on a helper thread with its own runtime (for use inside
/// a polling condition).
fn futures_ready(f: impl std::future::Future<Output = bool> + Send + 'static) -> bool {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_at_start_then_up() {
    let Some(mut server) = common::server() else {
        return;
    };
    server.kill();
    let b = common::builder(&server).build().unwrap();
    let k = Key::from_text("k");
    let start = Instant::now();
    assert!(b.get(&k).await.is_err(), "fails fast while down");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(common::builder(&server).connect().await.is_err());
    server.restart().unwrap();
    assert!(b.wait_connected(Duration::from_secs(10)).await);
    // a cluster node answers CLUSTERDOWN for a moment after its restart
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(b.get(&k).await, Ok(Lookup::Miss(_))) {
        assert!(Instant::now() < deadline, "a miss once Redis is back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_reconnects() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::builder(&server).gc(false).connect().await.unwrap();
    let k = Key::from_text("k");
    let Ok(Lookup::Miss(lease)) = b.get(&k).await else {
        panic!()
    };
    b.set(&k, value::share(3u8), &EntryOptions::new(), lease)
        .await
        .unwrap();
    let connects = b.redis_stats().connects;
    let mut con = server.connection().unwrap();
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut con)
        .unwrap();
    assert!(killed >= 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Lookup::Hit(h)) = b.get(&k).await {
            assert_eq!(h.into_typed::<u8>().unwrap(), 3);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no reconnection after CLIENT KILL"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(b.redis_stats().connects > connects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_under_a_key_is_a_miss_that_gets_overwritten() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::connect(&server);
    let mut con = server.connection().unwrap();
    let k = Key::from_text("g(1)");
    for garbage in [
        &b"garbage"[..],
        &[0xCA, 1, 0x01, 0xff, 0xff, 0xff, 0x7f][..],
        &[0xCA, 9, 0][..],
    ] {
        // the key was invalidated before: its slot carries a stamp the fill must not trip on
        b.remove(&k).await.unwrap();
        redis::cmd("SET")
            .arg("t:{g(1)}")
            .arg(garbage)
            .query::<()>(&mut con)
            .unwrap();
        let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
            panic!("garbage is a miss")
        };
        let out = b
            .set(&k, value::share(9u16), &EntryOptions::new(), lease)
            .await
            .unwrap();
        assert_eq!(out, SetOutcome::Stored);
        let Lookup::Hit(h) = b.get(&k).await.unwrap() else {
            panic!("overwritten")
        };
        assert_eq!(h.into_typed::<u16>().unwrap(), 9);
    }
    assert_eq!(b.redis_stats().corrupt_values, 3);
    // an envelope with a payload of another type: a hit whose decode fails (the runtime's job)
    let Lookup::Hit(h) = b.get(&k).await.unwrap() else {
        panic!()
    };
    assert!(h.into_typed::<String>().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_over_the_payload_limit_is_not_stored() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::builder(&server)
        .max_payload(1024)
        .connect()
        .await
        .unwrap();
    let k = Key::from_text("big");
    let small = EntryOptions::new();
    let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
        panic!()
    };
    b.set(&k, value::share(vec![1u8; 10]), &small, lease)
        .await
        .unwrap();
    // incompressible and too large: refused, and the old entry does not survive
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let err = b
        .set(
            &k,
            value::share(noise),
            &small,
            cache_core::Lease::UNCONDITIONAL,
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_payload"), "{err}");
    assert!(matches!(b.get(&k).await.unwrap(), Lookup::Miss(_)));
    assert_eq!(b.redis_stats().oversize_values, 1);
    // compressible values over the limit before compression are fine
    let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
        panic!()
    };
    let out = b
        .set(&k, value::share(vec![0u8; 8192]), &small, lease)
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_invalidations_are_retried_in_order() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::builder(&server)
        .op_timeout(Duration::from_millis(100))
        .gc(false)
        .connect()
        .await
        .unwrap();
    let mut con = server.connection().unwrap();
    for i in 0..3 {
        let k = Key::from_text(format!("e({i})"));
        let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
            panic!()
        };
        let o = EntryOptions::new()
            .ttl(Duration::from_secs(60))
            .depends_on(format!("d{i}"));
        b.set(&k, value::share(i), &o, lease).await.unwrap();
    }
    // writes stall on the server: invalidations time out and are queued
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query::<()>(&mut con)
        .unwrap();
    assert!(b.invalidate("d0").await.is_err());
    assert!(b.invalidate("d1").await.is_err());
    assert!(b.redis_stats().pending_invalidations >= 1);
    redis::cmd("CLIENT")
        .arg("UNPAUSE")
        .query::<()>(&mut con)
        .unwrap();
    common::eventually(
        "queued invalidations to apply",
        Duration::from_secs(10),
        || b.redis_stats().pending_invalidations == 0,
    )
    .await;
    let s = b.redis_stats();
    assert_eq!(s.invalidations_queued, 2);
    assert_eq!(s.invalidations_retried, 2);
    // e(0) and e(1) are gone (tombstones stand in their place), e(2) is untouched
    for (i, alive) in [(0, false), (1, false), (2, true)] {
        let k = Key::from_text(format!("e({i})"));
        let found = b.get(&k).await.unwrap();
        assert_eq!(matches!(found, Lookup::Hit(_)), alive, "e({i})");
        let head: Vec<u8> = redis::cmd("GETRANGE")
            .arg(format!("t:{{e({i})}}"))
            .arg(0)
            .arg(2)
            .query(&mut con)
            .unwrap();
        if common::protocol() == 1 {
            assert_eq!(head == [0xCA, 1, 8], !alive, "e({i}) tombstone");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distributed_single_flight() {
    let Some(server) = common::server() else {
        return;
    };
    let mk = || {
        common::builder(&server)
            .distributed_lock(Duration::from_millis(2000))
            .gc(false)
            .connect_blocking()
            .unwrap()
    };
    let (a, b) = (Arc::new(mk()), Arc::new(mk()));
    let k = Key::from_text("slow(1)");
    let Lookup::Miss(lease) = a.get(&k).await.unwrap() else {
        panic!()
    };
    // B misses too, but waits for A's value instead of computing
    let waiter = {
        let (b, k) = (b.clone(), k.clone());
        tokio::spawn(async move { b.get(&k).await })
    };
    common::eventually("B to wait on the lock", Duration::from_secs(5), || {
        b.redis_stats().lock_waits == 1
    })
    .await;
    a.set(&k, value::share(42u32), &EntryOptions::new(), lease)
        .await
        .unwrap();
    let Lookup::Hit(h) = waiter.await.unwrap().unwrap() else {
        panic!("B computed")
    };
    assert_eq!(h.into_typed::<u32>().unwrap(), 42);
    let mut con = server.connection().unwrap();
    let lock: Option<String> = redis::cmd("GET")
        .arg("t:{slow(1)}:lock")
        .query(&mut con)
        .unwrap();
    assert_eq!(lock, None, "released by the set");

    // a holder that dies: the lock expires and the waiter computes
    let short = common::builder(&server)
        .distributed_lock(Duration::from_millis(200))
        .gc(false)
        .connect()
        .await
        .unwrap();
    let k = Key::from_text("slow(2)");
    let Lookup::Miss(_) = short.get(&k).await.unwrap() else {
        panic!()
    };
    drop(short); // never fills
    let start = Instant::now();
    assert!(matches!(b.get(&k).await.unwrap(), Lookup::Miss(_)));
    assert!(start.elapsed() < Duration::from_secs(3));
}
