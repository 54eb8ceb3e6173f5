//! Protocol version 2 (`RedisBackendBuilder::protocol(2)`): what its layout promises, on a
//! one-node Redis Cluster (every script and transaction on one hash slot, or it fails loudly):
//!
//! * a hit reads the entry and its declared dependencies' versions, and nothing else, in one
//!   round trip: one `MGET` on a single server, one `GET` per key (pipelined) on a cluster;
//! * a nested cached call's entry is invalidated, on another node, through what the inner
//!   entry depends on (no reverse index: the outer entry lists the inner one's dependencies);
//! * an invalidation is one `O(1)` script whatever its fan-out: with 1,000, 100,000 and
//!   1,000,000 dependents, a `PING` from another client meanwhile is never slow (worst printed,
//!   under 10 ms asserted), and afterwards none of the dependents is served;
//! * entries of protocol 1 and 2 under one prefix read as misses to each other, never misread.
//!
//! Eviction under `allkeys-*` is in `redis_eviction.rs`.

#[path = "redis_common/mod.rs"]
mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, value, Backend, EntryOptions, Key, Lookup, SetOutcome};
use cache_redis::{Coherence, LayeredBackend, RedisBackend, SyncOptions, TrackingMode};
use test_support::{require_redis_server, RedisServer};

fn cluster_node() -> Option<RedisServer> {
    let bin = require_redis_server()?;
    Some(RedisServer::start_one_node_cluster(&bin).expect("a one-node cluster starts"))
}

fn node(server: &RedisServer) -> Arc<RedisBackend> {
    Arc::new(
        common::builder(server)
            .protocol(2)
            .connect_blocking()
            .expect("connects"),
    )
}

static PROFILE_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10m", depends_on = ["user:{id}"])]
async fn profile(id: u64) -> String {
    format!("{id}-v{}", PROFILE_RUNS.fetch_add(1, Ordering::SeqCst) + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hit_reads_the_entry_and_its_declared_versions_only() {
    let Some(server) = common::plain_server() else {
        return;
    };
    let a = node(&server);
    registry::with_backend(a.clone(), async {
        let first = profile(8).await;
        let mut monitor = common::Monitor::start(&server);
        monitor.take().await;
        assert_eq!(profile(8).await, first, "a hit");
        let sent = monitor.take().await;
        assert_eq!(sent.len(), 1, "one MGET on a single server: {sent:#?}");
        assert!(
            sent[0].contains("\"MGET\"") && sent[0].contains("t:v:{user:8}"),
            "{sent:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_hit_reads_the_entry_and_its_declared_versions_key_by_key() {
    let Some(server) = cluster_node() else {
        return;
    };
    let a = node(&server);
    registry::with_backend(a.clone(), async {
        let first = profile(7).await;
        assert_eq!(profile(7).await, first, "a hit");
        let mut monitor = common::Monitor::start(&server);
        monitor.take().await;
        assert_eq!(profile(7).await, first);
        let sent = monitor.take().await;
        let gets = sent.iter().filter(|l| l.contains("\"GET\"")).count();
        assert_eq!(
            (gets, sent.len()),
            (3, 3),
            "the entry, user:7's version and the fn's: {sent:#?}"
        );
        assert!(sent.iter().any(|l| l.contains("t:v:{user:7}")), "{sent:#?}");
    })
    .await;
}

static INNER_RUNS: AtomicUsize = AtomicUsize::new(0);
static OUTER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10m", depends_on = ["member:{id}"])]
async fn member(id: u64) -> String {
    INNER_RUNS.fetch_add(1, Ordering::SeqCst);
    format!("member {id}")
}

#[cached(ttl = "10m")]
async fn team_page(team: u64) -> String {
    OUTER_RUNS.fetch_add(1, Ordering::SeqCst);
    format!(
        "team {team}: {}, {}",
        member(team * 10).await,
        member(team * 10 + 1).await
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_entries_are_invalidated_through_the_inner_dependencies_on_another_node() {
    let Some(server) = cluster_node() else {
        return;
    };
    let a = node(&server);
    let b = node(&server);
    let outer = || OUTER_RUNS.load(Ordering::SeqCst);
    let inner = || INNER_RUNS.load(Ordering::SeqCst);
    // the inner entry member(10) exists before the outer one is filled: the outer fill takes
    // it as a hit, whose dependencies join the outer entry's
    registry::with_backend(a.clone(), member(10)).await;
    let page = registry::with_backend(a.clone(), team_page(1)).await;
    assert_eq!((outer(), inner()), (1, 2));
    assert_eq!(registry::with_backend(b.clone(), team_page(1)).await, page);
    assert_eq!(outer(), 1, "a hit on B");
    // the page lists names its call does not declare: B's first hit read their versions in a
    // second round trip, its next hits read them with the entry
    assert_eq!(b.redis_stats().second_reads, 1);
    assert_eq!(registry::with_backend(b.clone(), team_page(1)).await, page);
    assert_eq!(b.redis_stats().second_reads, 1, "one round trip");

    // B invalidates what the inner entry that was a hit depends on
    b.invalidate("member:10").await.unwrap();
    registry::with_backend(a.clone(), team_page(1)).await;
    assert_eq!(
        (outer(), inner()),
        (2, 3),
        "A recomputes the page and member(10)"
    );

    // ... and what the inner entry filled inside the outer fill depends on
    b.invalidate("member:11").await.unwrap();
    registry::with_backend(b.clone(), team_page(1)).await;
    assert_eq!(
        (outer(), inner()),
        (3, 4),
        "B recomputes the page and member(11)"
    );

    // removing the inner entry by key drops the outer one too
    let key = Key::from_text("redis_protocol_v2::member(10)");
    assert!(
        matches!(a.get(&key).await.unwrap(), Lookup::Hit(_)),
        "{key}"
    );
    b.remove(&key).await.unwrap();
    registry::with_backend(a.clone(), team_page(1)).await;
    assert_eq!((outer(), inner()), (4, 5));

    // invalidate_all of the inner fn too
    team_page_ref_hit(&a).await;
    b.invalidate("fn:redis_protocol_v2::member").await.unwrap();
    registry::with_backend(a.clone(), team_page(1)).await;
    assert_eq!((outer(), inner()), (5, 7));
}

async fn team_page_ref_hit(a: &Arc<RedisBackend>) {
    let before = OUTER_RUNS.load(Ordering::SeqCst);
    registry::with_backend(a.clone(), team_page(1)).await;
    assert_eq!(OUTER_RUNS.load(Ordering::SeqCst), before, "a hit");
}

/// Seeds `n` entries `big(i)` holding `envelope` (a real fill's bytes, so each lists `dep`
/// with its version token) with a server-side script, in chunks.
fn seed(server: &RedisServer, envelope: &[u8], n: u64) {
    const SEED: &str = r#"
for i = tonumber(ARGV[2]), tonumber(ARGV[3]) do
  redis.call('SET', 't:{big(' .. i .. ')}', ARGV[1], 'PX', 600000)
end
return 1
"#;
    let mut con = server.connection().unwrap();
    let chunk = 50_000;
    let mut from = 0;
    while from < n {
        let to = (from + chunk).min(n) - 1;
        // seeding only, on a plain server: one script writes the keys of one chunk
        redis::cmd("EVAL")
            .arg(SEED)
            .arg(0)
            .arg(envelope)
            .arg(from)
            .arg(to)
            .query::<i64>(&mut con)
            .unwrap();
        from = to + 1;
    }
}

/// Invalidates the dependency of `n` entries while another client pings; returns the
/// invalidation's time and the worst `PING`.
async fn fan_out(n: u64) -> Option<(Duration, Duration)> {
    let bin = require_redis_server()?;
    // a plain server: the seeding script writes keys of many slots
    let server = RedisServer::start(&bin).unwrap();
    let b = node(&server);
    let k = Key::from_text("big(0)");
    let Lookup::Miss(lease) = b.get_declared(&k, &["feed".to_string()]).await.unwrap() else {
        panic!("a miss")
    };
    let o = EntryOptions::new()
        .ttl(Duration::from_secs(600))
        .depends_on("feed");
    assert_eq!(
        b.set(&k, value::share(42u64), &o, lease).await.unwrap(),
        SetOutcome::Stored
    );
    let envelope: Vec<u8> = redis::cmd("GET")
        .arg("t:{big(0)}")
        .query(&mut server.connection().unwrap())
        .unwrap();
    seed(&server, &envelope, n);
    let sample: Vec<Key> = (0..n)
        .step_by((n / 1_000).max(1) as usize)
        .chain([n - 1])
        .map(|i| Key::from_text(format!("big({i})")))
        .collect();
    let hits = b.get_many(&sample).await.unwrap();
    assert!(hits.iter().all(|l| matches!(l, Lookup::Hit(_))), "seeded");

    let stop = Arc::new(AtomicBool::new(false));
    let worst = Arc::new(AtomicU64::new(0));
    let pinger = {
        let (stop, worst) = (stop.clone(), worst.clone());
        let mut con = server.connection().unwrap();
        std::thread::spawn(move || {
            let mut pings = 0u64;
            while !stop.load(Ordering::Relaxed) || pings < 100 {
                let t = Instant::now();
                redis::cmd("PING").query::<String>(&mut con).unwrap();
                worst.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                pings += 1;
            }
        })
    };
    let t = Instant::now();
    b.invalidate("feed").await.unwrap();
    let took = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();
    let found = b.get_many(&sample).await.unwrap();
    let served = found.iter().filter(|l| matches!(l, Lookup::Hit(_))).count();
    assert_eq!(
        served, 0,
        "{n} dependents: none served after the invalidation"
    );
    Some((took, Duration::from_micros(worst.load(Ordering::Relaxed))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalidation_never_stalls_redis_whatever_its_fan_out() {
    for n in [1_000, 100_000, 1_000_000] {
        let Some((took, worst_ping)) = fan_out(n).await else {
            return;
        };
        println!(
            "{n} dependents: invalidation {took:?}, worst PING of another client {worst_ping:?}"
        );
        assert!(
            worst_ping < Duration::from_millis(10),
            "{n} dependents: a PING waited {worst_ping:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_two_protocols_read_each_others_entries_as_misses() {
    let Some(server) = common::plain_server() else {
        return;
    };
    let v1 = common::builder(&server)
        .protocol(1)
        .connect_blocking()
        .unwrap();
    let v2 = node(&server);
    let k = Key::from_text("shared(1)");
    let o = EntryOptions::new().depends_on("d");
    for (writer, reader) in [(&v1, &*v2), (&*v2, &v1)] {
        let Lookup::Miss(lease) = writer.get(&k).await.unwrap() else {
            panic!("a miss")
        };
        assert_eq!(
            writer.set(&k, value::share(1u64), &o, lease).await.unwrap(),
            SetOutcome::Stored
        );
        assert!(matches!(writer.get(&k).await.unwrap(), Lookup::Hit(_)));
        assert!(
            matches!(reader.get(&k).await.unwrap(), Lookup::Miss(_)),
            "protocol {} reads protocol {}'s entry as a miss",
            reader.protocol(),
            writer.protocol()
        );
    }
    assert_eq!(v1.redis_stats().corrupt_values, 0);
    assert_eq!(v2.redis_stats().corrupt_values, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_and_fill_is_a_read_pipeline_then_a_write_pipeline() {
    let Some(server) = cluster_node() else {
        return;
    };
    let b = node(&server);
    let declared: Vec<String> = vec!["user:1".into(), "team:1".into(), "fn:m::f".into()];
    let o = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .depends_on("user:1")
        .depends_on("team:1")
        .depends_on("fn:m::f");
    let fill = |i: u64| {
        let (b, declared, o) = (b.clone(), declared.clone(), o.clone());
        async move {
            let k = Key::from_text(format!("m::f({i})"));
            let Lookup::Miss(lease) = b.get_declared(&k, &declared).await.unwrap() else {
                panic!("a miss")
            };
            b.set(&k, value::share(i), &o, lease).await.unwrap()
        }
    };
    // the first fill creates the version keys
    assert_eq!(fill(0).await, SetOutcome::Stored);
    let mut monitor = common::Monitor::start(&server);
    monitor.take().await;
    assert_eq!(fill(1).await, SetOutcome::Stored);
    let sent = monitor.take().await;
    let reads = sent
        .iter()
        .filter(|l| l.contains("\"GET\"") || l.contains("\"TIME\""))
        .count();
    let scripts = sent.iter().filter(|l| l.contains("\"EVALSHA\"")).count();
    assert_eq!(
        (
            reads - usize::from(sent.iter().any(|l| l.contains("\"TIME\""))),
            scripts,
            sent.len() - reads - scripts
        ),
        (4, 4, 0),
        "the entry and three versions read; three versions checked and the set: {sent:#?}"
    );
}

static L1_INNER_RUNS: AtomicUsize = AtomicUsize::new(0);
static L1_OUTER_RUNS: AtomicUsize = AtomicUsize::new(0);

#[cached(ttl = "10m", depends_on = ["seat:{id}"])]
async fn seat(id: u64) -> String {
    format!(
        "seat {id} v{}",
        L1_INNER_RUNS.fetch_add(1, Ordering::SeqCst) + 1
    )
}

#[cached(ttl = "10m")]
async fn row(r: u64) -> String {
    L1_OUTER_RUNS.fetch_add(1, Ordering::SeqCst);
    format!(
        "row {r}: {}, {}",
        seat(r * 10).await,
        seat(r * 10 + 1).await
    )
}

fn layered(server: &RedisServer, prefix: &str, coherence: Coherence) -> Arc<LayeredBackend> {
    let l2 = common::builder(server)
        .protocol(2)
        .prefix(prefix)
        .connect_blocking()
        .expect("connects");
    let b = LayeredBackend::builder(l2)
        .coherence(coherence)
        .ping_interval(Duration::from_millis(100))
        .build()
        .expect("builds");
    assert!(b.wait_coherent(Duration::from_secs(5)));
    Arc::new(b)
}

/// A nested call whose entry node A holds in its L1 hands what that entry depends on to the
/// enclosing fill, so invalidating it reaches the outer entry in Redis (read by node B) and
/// in A's L1: in every coherence mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layered_nodes_nested_l1_hit_hands_its_dependencies_to_the_outer_entry() {
    let Some(server) = cluster_node() else {
        return;
    };
    let modes = [
        ("l1d", Coherence::Tracking(TrackingMode::Default)),
        ("l1b", Coherence::Tracking(TrackingMode::Broadcast)),
        ("l1p", Coherence::PubSub(SyncOptions::new("l1p:sync"))),
    ];
    for (i, (prefix, coherence)) in modes.into_iter().enumerate() {
        let r = i as u64 + 1;
        let a = layered(&server, prefix, coherence.clone());
        let b = layered(&server, prefix, coherence);
        let inner_key = Key::from_text(format!("redis_protocol_v2::seat({})", r * 10));
        // seat(r*10) in A's L1 (a read after the fill copies it there)
        let end = Instant::now() + Duration::from_secs(5);
        while !a.local_store().contains(inner_key.text()) {
            assert!(Instant::now() < end, "{prefix}: seat in A's L1");
            registry::with_backend(a.clone(), seat(r * 10)).await;
            tokio::task::yield_now().await;
        }
        let outer_before = L1_OUTER_RUNS.load(Ordering::SeqCst);
        let page = registry::with_backend(a.clone(), row(r)).await;
        assert_eq!(L1_OUTER_RUNS.load(Ordering::SeqCst), outer_before + 1);

        b.invalidate(&format!("seat:{}", r * 10)).await.unwrap();
        let fresh = registry::with_backend(b.clone(), row(r)).await;
        assert_ne!(fresh, page, "{prefix}: B recomputes the row from Redis");
        assert_eq!(L1_OUTER_RUNS.load(Ordering::SeqCst), outer_before + 2);
        // A drops its copies once the invalidation reaches it
        let end = Instant::now() + Duration::from_secs(5);
        while registry::with_backend(a.clone(), row(r)).await != fresh {
            assert!(Instant::now() < end, "{prefix}: A still serves the old row");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
