//! Redis memory per entry, measured as users store them: `INFO memory`'s `used_memory` before
//! and after 100,000 fills of a `u64 -> u64` entry (through the backend, as a cached fn fills:
//! with the function's "invalidate all" dependency, and with one more dependency), against
//! 100,000 raw `SET key value PX ttl` of the same sizes on the same server; for both storage
//! protocols (protocol 2 keeps one version key per dependency name: the "one more dependency"
//! case, a distinct name per entry, pays one each).
//!
//! A measurement, not a pass/fail test (memory figures belong in BENCHMARKS.md):
//! `cargo test --release -p cache-redis --test redis_memory -- --ignored --nocapture`

#[path = "redis_common/mod.rs"]
mod common;

use std::time::Duration;

use cache_core::{value, Backend, EntryOptions, Key, Lookup};

const N: u64 = 100_000;

fn used_memory(con: &mut redis::Connection) -> i64 {
    let info: String = redis::cmd("INFO").arg("memory").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture (release)"]
async fn bytes_per_entry() {
    let Some(server) = common::plain_server() else {
        return;
    };
    let mut con = server.connection().unwrap();
    let before = used_memory(&mut con);
    let mut pipe = redis::pipe();
    for i in 0..N {
        pipe.cmd("SET")
            .arg(format!("raw:{{bench::raw({i})}}"))
            .arg(rmp_like(i))
            .arg("PX")
            .arg(3_600_000)
            .ignore();
    }
    let _: () = pipe.query(&mut con).unwrap();
    let raw = used_memory(&mut con) - before;
    let per = |m: i64| m as f64 / N as f64;
    println!("bytes per entry: raw SET with PX {:.0}", per(raw));
    for protocol in [1, 2] {
        let b = common::builder(&server)
            .prefix(format!("p{protocol}"))
            .protocol(protocol)
            .gc(false)
            .op_timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap();
        let fill = |name: &'static str, extra: bool| {
            let b = b.clone();
            async move {
                for i in 0..N {
                    let k = Key::from_text(format!("bench::{name}({i})"));
                    let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
                        panic!("fresh key")
                    };
                    let mut o = EntryOptions::new()
                        .ttl(Duration::from_secs(3600))
                        .depends_on(format!("bench::{name}#all"));
                    if extra {
                        o = o.depends_on(format!("user:{i}"));
                    }
                    b.set(&k, value::share(i), &o, lease).await.unwrap();
                }
            }
        };
        let before = used_memory(&mut con);
        fill("nodep", false).await;
        let nodep = used_memory(&mut con) - before;
        let before = used_memory(&mut con);
        fill("onedep", true).await;
        let onedep = used_memory(&mut con) - before;
        println!(
            "protocol {protocol}: entry (fn dependency only) {:.0} = {:.2}x raw; \
             entry + one dependency {:.0} = {:.2}x raw",
            per(nodep),
            per(nodep) / per(raw),
            per(onedep),
            per(onedep) / per(raw)
        );
    }
}

/// A value of the size the backend stores for a `u64` (envelope header + MessagePack).
fn rmp_like(i: u64) -> Vec<u8> {
    let mut v = vec![0xCA, 1, 0];
    v.extend_from_slice(&i.to_be_bytes());
    v
}
