//! An invalidation with a huge fan-out never stalls Redis: invalidating a dependency of
//! 1,000,000 entries runs as bounded steps of about a millisecond of server work each, so the
//! server's own `SLOWLOG` holds no long command, a `PING` from another client is answered
//! meanwhile (its worst latency is printed), and once the call returns none of the dependents
//! is served.
//!
//! The dependents are written by a server-side script (a valid envelope copied from a real
//! fill), so the test spends its time on the invalidation, not on a million fills.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, Lookup};
use test_support::RedisServer;

/// Writes entries `name(from..to)` of prefix `P`, each depending on `D`, with `envelope`.
const SEED: &str = r#"
local P, D, env = ARGV[1], ARGV[2], ARGV[3]
for i = tonumber(ARGV[4]), tonumber(ARGV[5]) do
  local t = 'big(' .. i .. ')'
  redis.call('SET', P .. ':{' .. t .. '}', env, 'PX', 600000)
  redis.call('SET', P .. ':{' .. t .. '}:d', #D .. ':' .. D)
  redis.call('SADD', P .. ':dep:{' .. D .. '}', t)
end
return 1
"#;

/// A command running this long (µs) or longer fails the test. A step's budget keeps its work
/// to about a millisecond (BENCHMARKS.md has the worst `PING` of quiet runs); the bound is far
/// above that because `SLOWLOG` measures wall time, which a busy 2-core VM inflates by tens of
/// milliseconds now and then (seen: a 3 ms `PING`), and far below the seconds the single-script
/// invalidation this replaced held the server for.
const SLOW_US: u64 = 250_000;

const TOMBSTONE_HEADER: [u8; 3] = [0xCA, 1, 8];

fn seed(server: &RedisServer, envelope: &[u8], dep: &str, n: u64) {
    let mut con = server.connection().unwrap();
    let script = redis::Script::new(SEED);
    let mut from = 0;
    while from < n {
        let to = (from + 20_000).min(n) - 1;
        let _: i64 = script
            .arg("t")
            .arg(dep)
            .arg(envelope)
            .arg(from)
            .arg(to)
            .invoke(&mut con)
            .unwrap();
        from = to + 1;
    }
}

/// How many of entries `big(0..n)` are still values (not tombstones, not gone).
fn still_values(server: &RedisServer, n: u64) -> u64 {
    let mut con = server.connection().unwrap();
    let mut live = 0;
    for start in (0..n).step_by(20_000) {
        let mut pipe = redis::pipe();
        for i in start..(start + 20_000).min(n) {
            pipe.cmd("GETRANGE")
                .arg(format!("t:{{big({i})}}"))
                .arg(0)
                .arg(2);
        }
        let heads: Vec<Vec<u8>> = pipe.query(&mut con).unwrap();
        live += heads
            .iter()
            .filter(|h| !h.is_empty() && h.as_slice() != TOMBSTONE_HEADER)
            .count() as u64;
    }
    live
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidating_a_million_dependents_never_blocks_redis() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let backend = Arc::new(common::builder(&server).gc(false).connect().await.unwrap());
    // one real fill gives a valid envelope to copy
    let k = Key::from_text("model");
    let Lookup::Miss(lease) = backend.get(&k).await.unwrap() else {
        panic!("fresh server")
    };
    backend
        .set(&k, value::share(42u64), &EntryOptions::new(), lease)
        .await
        .unwrap();
    let envelope: Vec<u8> = redis::cmd("GET")
        .arg("t:{model}")
        .query(&mut server.connection().unwrap())
        .unwrap();

    for (n, dep) in [(1_000u64, "small"), (100_000, "large"), (1_000_000, "huge")] {
        seed(&server, &envelope, dep, n);
        assert_eq!(still_values(&server, n), n, "seeded");
        // a read of a dependent through the backend is a hit before the invalidation
        let probe = Key::from_text(format!("big({})", n / 2));
        assert!(matches!(backend.get(&probe).await.unwrap(), Lookup::Hit(_)));

        let mut admin = server.connection().unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("slowlog-log-slower-than")
            .arg(SLOW_US)
            .exec(&mut admin)
            .unwrap();
        redis::cmd("SLOWLOG").arg("RESET").exec(&mut admin).unwrap();

        // another client pings all along
        let stop = Arc::new(AtomicBool::new(false));
        let worst_us = Arc::new(AtomicU64::new(0));
        let pinger = {
            let (stop, worst) = (stop.clone(), worst_us.clone());
            let mut con = server.connection().unwrap();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(300);
                while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                    let t = Instant::now();
                    let _: String = redis::cmd("PING").query(&mut con).unwrap();
                    worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let t = Instant::now();
        backend.invalidate(dep).await.unwrap();
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        pinger.join().unwrap();
        let slow: Vec<redis::Value> = redis::cmd("SLOWLOG")
            .arg("GET")
            .arg(10)
            .query(&mut admin)
            .unwrap();
        let worst = Duration::from_micros(worst_us.load(Ordering::Relaxed));
        println!(
            "{n} dependents: invalidation took {took:?}; worst PING of another client {worst:?}; \
             commands over {SLOW_US} µs: {}",
            slow.len()
        );
        assert!(
            slow.is_empty(),
            "a command ran {SLOW_US} µs or more on the server: {slow:?}"
        );
        assert_eq!(
            still_values(&server, n),
            0,
            "no dependent left after the call"
        );
        assert!(matches!(
            backend.get(&probe).await.unwrap(),
            Lookup::Miss(_)
        ));
        let index: bool = redis::cmd("EXISTS")
            .arg(format!("t:dep:{{{dep}}}"))
            .query(&mut admin)
            .unwrap();
        assert!(!index, "the reverse index is drained");
        redis::cmd("FLUSHDB").exec(&mut admin).unwrap();
    }
}
