//! No stale local entry during an outage: three nodes with local caches (synced memory
//! backends, then layered backends) on one Redis, renames going through one node while every
//! node reads, and redis-server killed and restarted in the middle. From the moment a node has
//! detected the loss of its subscription until it is back, it serves nothing from its local
//! cache, so no read that starts after detection returns a value older than an acknowledged
//! rename. Reads between the kill and the detection can (the detection time is measured and
//! printed: it is bounded by the ping interval).

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, Backend, MemoryBackend};
use cache_redis::{Coherence, LayeredBackend, SyncOptions, SyncedBackend};
use test_support::{wait_until, RedisServer};

const PING: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(10);

/// One node: its backend, whether it can hear invalidations now, and how many times it has
/// flushed its local cache (counted once each flush is done).
struct Node {
    backend: Arc<dyn Backend>,
    coherent: Box<dyn Fn() -> bool + Send + Sync>,
    flushes: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// The database: a version per name, bumped by each rename.
struct Db {
    truth: AtomicU64,
    /// The version of the last rename whose invalidation call has returned.
    acked: AtomicU64,
}

static SYNCED_DB: Db = Db {
    truth: AtomicU64::new(1),
    acked: AtomicU64::new(1),
};
static LAYERED_DB: Db = Db {
    truth: AtomicU64::new(1),
    acked: AtomicU64::new(1),
};

#[cached(ttl = "1m", depends_on = ["name:{id}"], skip(db))]
async fn synced_name(db: &'static Db, id: u64) -> u64 {
    let _ = id; // the key and the dependency
    db.truth.load(Ordering::SeqCst)
}

#[cached(ttl = "1m", depends_on = ["name:{id}"], skip(db))]
async fn layered_name(db: &'static Db, id: u64) -> u64 {
    let _ = id; // the key and the dependency
    db.truth.load(Ordering::SeqCst)
}

#[derive(Default)]
struct Tally {
    reads: AtomicU64,
    /// Stale reads that started after the node had detected the loss (must be none).
    stale_after_detection: AtomicU64,
    /// Stale reads that started while the node still believed it was subscribed.
    stale_before_detection: AtomicU64,
}

type Read = fn(
    Arc<dyn Backend>,
    &'static Db,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = u64> + Send>>;

async fn kill_during_renames(
    mut server: RedisServer,
    nodes: Vec<Node>,
    db: &'static Db,
    read: Read,
) {
    let nodes: Vec<Arc<Node>> = nodes.into_iter().map(Arc::new).collect();
    assert!(wait_until(DEADLINE, || nodes
        .iter()
        .all(|n| (n.coherent)())));
    // each node's flush count when the server is killed (u64::MAX until then): a read that
    // starts while the node is not coherent and has flushed since the kill is "after detection"
    let at_kill: Arc<Vec<AtomicU64>> =
        Arc::new(nodes.iter().map(|_| AtomicU64::new(u64::MAX)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut readers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (node, stop, tally, at_kill) =
            (node.clone(), stop.clone(), tally.clone(), at_kill.clone());
        readers.push(tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let deaf =
                    !(node.coherent)() && (node.flushes)() > at_kill[i].load(Ordering::SeqCst);
                let acked = db.acked.load(Ordering::SeqCst);
                let v = read(node.backend.clone(), db).await;
                tally.reads.fetch_add(1, Ordering::Relaxed);
                if v < acked {
                    let which = if deaf {
                        &tally.stale_after_detection
                    } else {
                        &tally.stale_before_detection
                    };
                    which.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }));
    }
    let writer = {
        let (writer, stop) = (nodes[0].clone(), stop.clone());
        tokio::spawn(async move {
            let end = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                let v = db.truth.fetch_add(1, Ordering::SeqCst) + 1;
                // applied on this node, published (or queued while Redis is down)
                let _ = writer.backend.invalidate("name:1").await;
                db.acked.store(v, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (i, n) in nodes.iter().enumerate() {
        at_kill[i].store((n.flushes)(), Ordering::SeqCst);
    }
    let killed = Instant::now();
    server.kill();
    let detected = {
        let nodes = nodes.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(DEADLINE, || nodes.iter().all(|n| !(n.coherent)()))
        })
        .await
        .unwrap()
    };
    let detection = killed.elapsed();
    assert!(detected, "every node detects the loss");
    tokio::time::sleep(Duration::from_millis(400)).await;
    server.restart().unwrap();
    let back = {
        let nodes = nodes.clone();
        tokio::task::spawn_blocking(move || {
            wait_until(DEADLINE, || nodes.iter().all(|n| (n.coherent)()))
        })
        .await
        .unwrap()
    };
    assert!(back, "every node resubscribes");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
    let before = tally.stale_before_detection.load(Ordering::Relaxed);
    let after = tally.stale_after_detection.load(Ordering::Relaxed);
    println!(
        "{} reads, renames up to v{}; every node detected the loss {:?} after the kill; \
         stale reads before detection: {before}, after detection: {after}",
        tally.reads.load(Ordering::Relaxed),
        db.acked.load(Ordering::SeqCst),
        detection
    );
    assert!(tally.reads.load(Ordering::Relaxed) > 100);
    assert_eq!(
        after, 0,
        "a node served a local entry while it could not hear invalidations"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synced_nodes_serve_nothing_stale_while_deaf() {
    let Some(server) = common::server() else {
        return;
    };
    let nodes = (0..3)
        .map(|_| {
            let b = SyncedBackend::builder(MemoryBackend::new())
                .url(&server.url())
                .options(SyncOptions::new("t:outage").ping_interval(PING))
                .build()
                .unwrap();
            let b = Arc::new(b);
            let (sync, counted) = (b.clone(), b.clone());
            Node {
                backend: b,
                coherent: Box::new(move || sync.synchronizer().is_subscribed()),
                flushes: Box::new(move || counted.synchronizer().stats().flushes),
            }
        })
        .collect();
    kill_during_renames(server, nodes, &SYNCED_DB, |b, db| {
        Box::pin(registry::with_backend(b, synced_name(db, 1)))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_nodes_serve_nothing_stale_while_deaf() {
    let Some(server) = common::server() else {
        return;
    };
    let nodes = (0..3)
        .map(|_| {
            let l2 = common::builder(&server)
                .op_timeout(Duration::from_millis(100))
                .connect_blocking()
                .unwrap();
            let b = LayeredBackend::builder(l2)
                .coherence(Coherence::PubSub(
                    SyncOptions::new("t:outage-layered").ping_interval(PING),
                ))
                .ping_interval(PING)
                .build()
                .unwrap();
            let b = Arc::new(b);
            let (layered, counted) = (b.clone(), b.clone());
            Node {
                backend: b,
                coherent: Box::new(move || layered.is_coherent()),
                flushes: Box::new(move || {
                    counted.synchronizer().map_or(0, |s| s.stats().flushes)
                        + counted.tracker().stats().flushes
                }),
            }
        })
        .collect();
    kill_during_renames(server, nodes, &LAYERED_DB, |b, db| {
        Box::pin(registry::with_backend(b, layered_name(db, 1)))
    })
    .await;
}
