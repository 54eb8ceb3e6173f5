//! The hit is a plain `GET` (issue 4): a miss leases the generation the backend remembers from
//! recent replies, invalidations leave tombstones carrying theirs. What stays true: a fill that
//! began before an invalidation (of its key, a dependency, or everything, on any node) is
//! rejected; a miss caused by a remote invalidation is filled without a spurious rejection; a
//! miss + fill with dependencies is at most 2 round trips.
//!
//! Whether a lookup went through the `GET` path is read from `INFO commandstats` (`cmdstat_mget`
//! stays put). A remembered generation is fresh for 100 ms after the request that brought it
//! was sent (`GEN_FRESH_MS`), so each check that needs the `GET` path runs in attempts: an
//! attempt refreshes the generation first and counts only if it finished within 90 ms; the
//! outcome (stored / rejected) is asserted on every attempt, whichever path it took.

#[path = "redis_common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, Lease, Lookup, SetOutcome};
use cache_redis::RedisBackend;
use test_support::RedisServer;

/// An attempt that finished within this is known to have used the remembered generation.
const WITHIN_FRESH: Duration = Duration::from_millis(90);

/// How many calls of each command the server has served.
fn calls(con: &mut redis::Connection, cmd: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(con).unwrap();
    let name = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(name.as_str()))
        .and_then(|rest| rest.split(',').next()?.parse().ok())
        .unwrap_or(0)
}

fn backend(server: &RedisServer) -> RedisBackend {
    common::builder(server)
        .gc(false) // the GC's own GETs would blur the command counts
        .connect_blocking()
        .expect("connects")
}

async fn miss(b: &RedisBackend, k: &Key) -> Lease {
    match b.get(k).await.expect("get") {
        Lookup::Miss(l) => l,
        _ => panic!("expected a miss for {k}"),
    }
}

async fn fill(b: &RedisBackend, k: &Key, v: u64, o: &EntryOptions) -> SetOutcome {
    let lease = miss(b, k).await;
    b.set(k, value::share(v), o, lease).await.expect("set")
}

async fn hit(b: &RedisBackend, k: &Key) -> u64 {
    match b.get(k).await.expect("get") {
        Lookup::Hit(h) => h.into_typed().expect("decodes"),
        _ => panic!("expected a hit for {k}"),
    }
}

/// Makes `b`'s remembered generation fresh: an invalidation of a name nothing uses is a
/// script whose reply carries the current generation.
async fn refresh(b: &RedisBackend) {
    b.invalidate("refresh-nothing").await.unwrap();
}

/// Runs `attempt(i)` until one finishes within [`WITHIN_FRESH`] without an `MGET` (so its
/// lookups were `GET`s with the remembered generation); at most 10 s.
async fn on_get_path<F, Fut>(server: &RedisServer, what: &str, mut attempt: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut con = server.connection().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    for i in 0.. {
        assert!(
            Instant::now() < end,
            "{what}: no attempt ran on the GET path within 10 s"
        );
        let mget = calls(&mut con, "mget");
        let start = Instant::now();
        attempt(i).await;
        let took = start.elapsed();
        if took < WITHIN_FRESH && calls(&mut con, "mget") == mget {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_warm_up_a_hit_is_a_get() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let b = backend(&server);
    let k = Key::from_text("hot(1)");
    assert_eq!(
        fill(&b, &k, 7, &EntryOptions::new()).await,
        SetOutcome::Stored
    );
    let mut con = server.connection().unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < end, "no batch of hits stayed on GET");
        let start = Instant::now();
        refresh(&b).await;
        let (get, mget) = (calls(&mut con, "get"), calls(&mut con, "mget"));
        for _ in 0..20 {
            assert_eq!(hit(&b, &k).await, 7);
        }
        let (get2, mget2) = (calls(&mut con, "get"), calls(&mut con, "mget"));
        if start.elapsed() < WITHIN_FRESH {
            assert_eq!(mget2, mget, "no MGET while the generation is fresh");
            assert_eq!(get2 - get, 20, "each hit is one GET");
            break;
        }
    }
    // an idle backend's first lookup is the MGET again (the generation went stale)
    let stale_since = Instant::now();
    common::eventually("the generation to go stale", Duration::from_secs(5), || {
        stale_since.elapsed() > Duration::from_millis(150)
    })
    .await;
    let mget = calls(&mut con, "mget");
    assert_eq!(hit(&b, &k).await, 7);
    assert_eq!(calls(&mut con, "mget"), mget + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_caused_by_a_remote_invalidation_refills() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let (a, b) = (backend(&server), backend(&server));
    // by key (remove), by dependency, and transitively (the entry depends on another entry)
    for how in ["remove", "dependency", "transitive"] {
        on_get_path(&server, how, |i| {
            let (a, b) = (&a, &b);
            async move {
                let k = Key::from_text(format!("{how}({i})"));
                let dep = format!("user:{how}:{i}");
                let inner = Key::from_text(format!("inner({how},{i})"));
                let o = match how {
                    "transitive" => EntryOptions::new().depends_on(inner.text()),
                    _ => EntryOptions::new().depends_on(&dep),
                };
                if how == "transitive" {
                    let io = EntryOptions::new().depends_on(&dep);
                    assert_eq!(fill(a, &inner, 1, &io).await, SetOutcome::Stored);
                }
                assert_eq!(fill(a, &k, 1, &o).await, SetOutcome::Stored);
                // B is warm: it hits, and its remembered generation predates A's invalidation
                refresh(b).await;
                assert_eq!(hit(b, &k).await, 1);
                match how {
                    "remove" => a.remove(&k).await.unwrap(),
                    "dependency" => a.invalidate(&dep).await.unwrap(),
                    _ => a.remove(&inner).await.unwrap(),
                }
                let lease = miss(b, &k).await; // the tombstone A's invalidation left
                let out = b.set(&k, value::share(2u64), &o, lease).await.unwrap();
                assert_eq!(out, SetOutcome::Stored, "{how}: B's fill after the miss");
                assert_eq!(hit(b, &k).await, 2);
                assert_eq!(hit(a, &k).await, 2);
            }
        })
        .await;
    }
    assert_eq!(b.stats().rejected_sets, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_racing_an_invalidation_is_rejected_on_the_get_path() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let (a, b) = (backend(&server), backend(&server));
    for how in ["dependency", "remove", "transitive", "clear", "tombstoned"] {
        on_get_path(&server, how, |i| {
            let (a, b) = (&a, &b);
            async move {
                let k = Key::from_text(format!("race-{how}({i})"));
                let dep = format!("d:{how}:{i}");
                let inner = Key::from_text(format!("race-inner({how},{i})"));
                let io = EntryOptions::new().depends_on(&dep);
                assert_eq!(fill(a, &inner, 1, &io).await, SetOutcome::Stored);
                let o = EntryOptions::new()
                    .depends_on(&dep)
                    .depends_on(inner.text());
                if how == "tombstoned" {
                    // the miss reads a tombstone; a later invalidation still wins
                    assert_eq!(fill(a, &k, 1, &o).await, SetOutcome::Stored);
                    a.remove(&k).await.unwrap();
                }
                refresh(b).await;
                let lease = miss(b, &k).await; // B starts computing
                match how {
                    "dependency" | "tombstoned" => a.invalidate(&dep).await.unwrap(),
                    "remove" => a.remove(&k).await.unwrap(),
                    "transitive" => a.remove(&inner).await.unwrap(),
                    _ => a.clear().await.unwrap(),
                }
                let out = b.set(&k, value::share(9u64), &o, lease).await.unwrap();
                assert_eq!(out, SetOutcome::Rejected, "{how}: a stale fill landed");
                miss(a, &k).await;
            }
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_is_a_miss_not_a_corrupt_value() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let (a, b) = (backend(&server), backend(&server));
    let mut con = server.connection().unwrap();
    let k = Key::from_text("tomb(1)");
    assert_eq!(
        fill(&a, &k, 1, &EntryOptions::new()).await,
        SetOutcome::Stored
    );
    a.remove(&k).await.unwrap();
    let raw: Vec<u8> = redis::cmd("GET")
        .arg("t:{tomb(1)}")
        .query(&mut con)
        .unwrap();
    assert_eq!(
        raw[..3],
        [0xCA, 1, 8],
        "a tombstone stands in the entry's place"
    );
    let gen: u64 = std::str::from_utf8(&raw[3..]).unwrap().parse().unwrap();
    let pttl: i64 = redis::cmd("PTTL")
        .arg("t:{tomb(1)}")
        .query(&mut con)
        .unwrap();
    assert!(
        (1..=60_000).contains(&pttl),
        "tombstones expire (pttl {pttl})"
    );
    assert_eq!(a.stats().invalidations, 1);
    // removing it again renews the tombstone but counts no entry
    a.remove(&k).await.unwrap();
    assert_eq!(a.stats().invalidations, 1);

    // through the MGET path (B is cold) and the GET path (B just refreshed)
    for _ in 0..2 {
        let lease = miss(&b, &k).await;
        assert!(
            lease.0 >= gen,
            "lease {} older than the tombstone {gen}",
            lease.0
        );
        refresh(&b).await;
    }
    // a planted tombstone newer than anything B has seen raises the lease
    a.invalidate("bump").await.unwrap();
    let current: u64 = redis::cmd("GET").arg("t:gen").query(&mut con).unwrap();
    let mut planted = vec![0xCA, 1, 8];
    planted.extend_from_slice(current.to_string().as_bytes());
    redis::cmd("SET")
        .arg("t:{tomb(2)}")
        .arg(planted)
        .query::<()>(&mut con)
        .unwrap();
    let lease = miss(&b, &Key::from_text("tomb(2)")).await;
    assert!(lease.0 >= current);
    assert_eq!(a.redis_stats().corrupt_values, 0);
    assert_eq!(b.redis_stats().corrupt_values, 0);

    // a malformed tombstone is corrupt (counted), and still a miss that the fill overwrites
    redis::cmd("SET")
        .arg("t:{tomb(3)}")
        .arg(&[0xCA, 1, 8, b'x'][..])
        .query::<()>(&mut con)
        .unwrap();
    let k3 = Key::from_text("tomb(3)");
    assert_eq!(
        fill(&b, &k3, 3, &EntryOptions::new()).await,
        SetOutcome::Stored
    );
    assert_eq!(b.redis_stats().corrupt_values, 1);
    assert_eq!(hit(&b, &k3).await, 3);

    // the distributed-lock lookup treats a tombstone as a miss too (and takes the lock)
    let locked = common::builder(&server)
        .distributed_lock(Duration::from_millis(2000))
        .gc(false)
        .connect()
        .await
        .unwrap();
    let Lookup::Miss(lease) = locked.get(&k).await.unwrap() else {
        panic!("a tombstone read as a hit")
    };
    assert_eq!(locked.redis_stats().corrupt_values, 0);
    assert_eq!(
        locked
            .set(&k, value::share(5u64), &EntryOptions::new(), lease)
            .await
            .unwrap(),
        SetOutcome::Stored
    );
    assert_eq!(hit(&b, &k).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_and_fill_with_dependencies_is_two_round_trips() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let (a, b) = (backend(&server), backend(&server));
    // INFO commandstats counts the GETs the scripts run too; MONITOR tells them apart
    let mut monitor = common::Monitor::start(&server);
    let o = EntryOptions::new()
        .ttl(Duration::from_secs(60))
        .depends_on("user:1")
        .depends_on("team:1");
    // cold and warm lookups alike: the MGET or the GET, then the set script
    let n = 200u64;
    // the first call of a script loads it (NOSCRIPT, SCRIPT LOAD, EVALSHA): once per server
    assert_eq!(
        fill(&b, &Key::from_text("load"), 0, &o).await,
        SetOutcome::Stored
    );
    monitor.take().await;
    for i in 0..n {
        let k = Key::from_text(format!("rt({i})"));
        assert_eq!(fill(&b, &k, i, &o).await, SetOutcome::Stored);
    }
    let sent = monitor.take().await;
    assert!(
        sent.len() as u64 <= 2 * n,
        "{} commands for {n} misses + fills: {:?}",
        sent.len(),
        &sent[..sent.len().min(8)]
    );
    assert!(
        sent.iter().any(|l| l.contains("\"GET\"")),
        "warm lookups are GETs"
    );

    // the misses an invalidation on another node caused (tombstones): still 2, still stored
    a.invalidate("user:1").await.unwrap();
    monitor.take().await;
    for i in 0..n {
        let k = Key::from_text(format!("rt({i})"));
        assert_eq!(fill(&b, &k, i, &o).await, SetOutcome::Stored);
    }
    let sent = monitor.take().await;
    assert!(sent.len() as u64 <= 2 * n, "{} commands", sent.len());
    assert_eq!(b.stats().rejected_sets, 0);
}
