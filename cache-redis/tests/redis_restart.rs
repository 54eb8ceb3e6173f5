//! A Redis restart (or failover) that loses writes never brings an invalidated entry back: the
//! server comes back from an RDB snapshot, or an AOF, taken before an invalidation; every node
//! sees a new `run_id` when it reconnects, serves no hit until its prefix is cleared, and the
//! next call runs the body instead of returning the value from before the invalidation.

#[path = "redis_common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cache_core::{cached, registry, Backend};
use cache_redis::RedisBackend;
use test_support::{require_redis_server, wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(10);

static RDB_RUNS: AtomicUsize = AtomicUsize::new(0);
static AOF_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10m", depends_on = ["profile:{id}"])]
async fn rdb_profile(id: u64) -> String {
    format!("{id}-v{}", RDB_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[cached(ttl = "10m", depends_on = ["profile:{id}"])]
async fn aof_profile(id: u64) -> String {
    format!("{id}-v{}", AOF_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cache-restart-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn nodes(server: &RedisServer) -> [Arc<RedisBackend>; 2] {
    [0, 1].map(|_| Arc::new(common::builder(server).connect_blocking().unwrap()))
}

/// Fills on A, reads on B, lets `persist` keep a copy of the data, invalidates through A and
/// refills, then lets `lose` restart the server from the copy. Every node must then run the
/// body rather than serve the value from before the invalidation.
async fn no_invalidated_entry_comes_back<F, Fut>(
    server: &mut RedisServer,
    call: fn(Arc<dyn Backend>) -> F,
    runs: &AtomicUsize,
    persist: impl FnOnce(&mut RedisServer),
    lose: impl FnOnce(&mut RedisServer),
) where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = String>,
{
    let [a, b] = nodes(server);
    let call_on = |n: &Arc<RedisBackend>| call(n.clone() as Arc<dyn Backend>)();
    assert_eq!(call_on(&a).await, "1-v1");
    assert_eq!(call_on(&b).await, "1-v1", "a hit on B");
    persist(server);
    a.invalidate("profile:1").await.unwrap();
    assert_eq!(call_on(&b).await, "1-v2", "the invalidation reached B");
    let before = runs.load(Ordering::SeqCst);
    lose(server);
    // a call on each node notices the lost connection (it fails open: the body runs, and its
    // value may be stored only after the node reconnected and cleared); protocol 1's garbage
    // collector would notice it in the background too
    for node in [&a, &b] {
        assert_ne!(call_on(node).await, "1-v1");
    }
    assert!(
        wait_until(DEADLINE, || a.is_connected()
            && b.is_connected()
            && a.redis_stats().server_restarts >= 1
            && b.redis_stats().server_restarts >= 1),
        "both nodes reconnect and see the new run"
    );
    for node in [&a, &b] {
        let v = call_on(node).await;
        assert_ne!(
            v, "1-v1",
            "the value from before the invalidation came back"
        );
    }
    assert!(runs.load(Ordering::SeqCst) > before, "the body ran again");
    assert!(wait_until(DEADLINE, || a.redis_stats().restart_clears >= 1
        && b.redis_stats().restart_clears >= 1));
    // once cleared, the cache works as before: a value filled on A is a hit on B. (The first
    // fill after a clear may be rejected: the clear removed the version keys the fill's lease
    // read, and a version key made again counts as a bump, conservatively; a few tries.)
    let mut shared = false;
    for _ in 0..5 {
        let v = call_on(&a).await;
        if call_on(&b).await == v {
            shared = true;
            break;
        }
    }
    assert!(
        shared,
        "hits again after the clear: a={:?} b={:?}",
        a.redis_stats(),
        b.redis_stats()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_rdb_snapshot_brings_nothing_back() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let dir = temp_dir("rdb");
    let d = dir.to_string_lossy().into_owned();
    let mut server =
        RedisServer::start_with(&bin, &["--dir", &d, "--dbfilename", "dump.rdb"]).unwrap();
    no_invalidated_entry_comes_back(
        &mut server,
        |backend| move || registry::with_backend(backend, rdb_profile(1)),
        &RDB_RUNS,
        |s| {
            redis::cmd("SAVE")
                .exec(&mut s.connection().unwrap())
                .unwrap();
        },
        |s| s.restart().unwrap(), // kill -9, start from dump.rdb
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_an_aof_that_lost_the_last_writes_brings_nothing_back() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let dir = temp_dir("aof");
    let d = dir.to_string_lossy().into_owned();
    let mut server = RedisServer::start_with(
        &bin,
        &[
            "--dir",
            &d,
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--appenddirname",
            "aof",
        ],
    )
    .unwrap();
    let aof = dir.join("aof");
    let kept = dir.join("aof-kept");
    no_invalidated_entry_comes_back(
        &mut server,
        |backend| move || registry::with_backend(backend, aof_profile(1)),
        &AOF_RUNS,
        // the AOF as it was before the invalidation: what a crash under `everysec` can leave
        |_| copy_dir(&aof, &kept),
        |s| {
            s.kill();
            copy_dir(&kept, &aof);
            s.restart().unwrap();
        },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
