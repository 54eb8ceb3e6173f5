//! The Redis backend through the `Backend` trait: round trips of every value kind, ttl and
//! sliding expiry observed with PTTL, dependencies, two nodes on one server, leases.

#[path = "redis_common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cache_core::value::{self, Hit};
use cache_core::{Backend, EntryOptions, Key, Lease, Lookup, SetOutcome};
use serde::{Deserialize, Serialize};

fn key(text: &str) -> Key {
    Key::from_text(text)
}

/// The options of an entry whose body called the cached fn whose entry depends on `inner`:
/// the runtime records the inner entry's key text and, since protocol 2 validates entries
/// against what they list instead of walking a reverse index, the inner entry's dependencies
/// too (as the runtime does for every nested call).
fn nested(o: EntryOptions, inner: &str) -> EntryOptions {
    if common::protocol() == 2 {
        o.depends_on(inner)
    } else {
        o
    }
}

async fn miss(b: &dyn Backend, k: &Key) -> Lease {
    match b.get(k).await.expect("get") {
        Lookup::Miss(l) | Lookup::Stale { lease: l, .. } => l,
        Lookup::Hit(h) => panic!("expected a miss for {k}, got {h:?}"),
    }
}

async fn hit<T: cache_core::Cacheable>(b: &dyn Backend, k: &Key) -> T {
    match b.get(k).await.expect("get") {
        Lookup::Hit(h) => h.into_typed().expect("decodes"),
        Lookup::Miss(_) | Lookup::Stale { .. } => panic!("expected a hit for {k}"),
    }
}

async fn fill<T: cache_core::Cacheable>(b: &dyn Backend, k: &Key, v: T, o: &EntryOptions) {
    let lease = miss(b, k).await;
    assert_eq!(
        b.set(k, value::share(v), o, lease).await.expect("set"),
        SetOutcome::Stored
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
    tags: Vec<String>,
    manager: Option<Box<User>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Unit,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_value_kind_round_trips() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::connect(&server);
    let o = EntryOptions::new();
    macro_rules! rt {
        ($name:literal, $v:expr, $t:ty) => {{
            let k = key($name);
            let v: $t = $v;
            fill(&b, &k, v.clone(), &o).await;
            assert_eq!(hit::<$t>(&b, &k).await, v, "{}", $name);
        }};
    }
    rt!("unit", (), ());
    rt!("bool", true, bool);
    rt!("u8", 255, u8);
    rt!("i64", -9_000_000_000, i64);
    rt!("u128", u128::MAX, u128);
    rt!("f64", 1.5e300, f64);
    rt!("char", 'é', char);
    rt!("string", "héllo, wörld {}:*".to_string(), String);
    rt!("empty string", String::new(), String);
    rt!("bytes", vec![0u8, 1, 255], Vec<u8>);
    rt!("option none", None, Option<u32>);
    rt!("option some", Some(7), Option<u32>);
    rt!("tuple", (1u8, "a".to_string(), -2i32), (u8, String, i32));
    rt!("vec", vec!["a".to_string(), "b".to_string()], Vec<String>);
    rt!(
        "map",
        BTreeMap::from([("k".to_string(), vec![1u16, 2])]),
        BTreeMap<String, Vec<u16>>
    );
    rt!("enum unit", Shape::Unit, Shape);
    rt!("enum newtype", Shape::Circle(2.5), Shape);
    rt!("enum struct", Shape::Rect { w: 3, h: 4 }, Shape);
    rt!("result", Ok::<u8, String>(3), Result<u8, String>);
    let ann = User {
        id: 7,
        name: "Ann".into(),
        tags: vec!["x".into()],
        manager: Some(Box::new(User {
            id: 1,
            name: "Bo".into(),
            tags: vec![],
            manager: None,
        })),
    };
    rt!("struct", ann.clone(), User);
    // a large, compressible value goes through LZ4 and back
    rt!("large", "abc".repeat(100_000), String);
    let raw: Vec<u8> = server.connection().unwrap().get_raw("t:{large}").unwrap();
    assert!(
        raw.len() < 100_000,
        "large payload stored compressed ({} bytes)",
        raw.len()
    );
}

trait GetRaw {
    fn get_raw(&mut self, k: &str) -> redis::RedisResult<Vec<u8>>;
    fn pttl(&mut self, k: &str) -> i64;
}
impl GetRaw for redis::Connection {
    fn get_raw(&mut self, k: &str) -> redis::RedisResult<Vec<u8>> {
        redis::cmd("GET").arg(k).query(self)
    }
    fn pttl(&mut self, k: &str) -> i64 {
        redis::cmd("PTTL").arg(k).query(self).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_and_sliding_are_set_in_redis() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::connect(&server);
    let mut con = server.connection().unwrap();

    let k = key("ttl");
    fill(
        &b,
        &k,
        1u8,
        &EntryOptions::new().ttl(Duration::from_secs(60)),
    )
    .await;
    let pttl = con.pttl("t:{ttl}");
    assert!((55_000..=60_000).contains(&pttl), "pttl {pttl}");

    let k = key("forever");
    fill(&b, &k, 1u8, &EntryOptions::new()).await;
    assert_eq!(con.pttl("t:{forever}"), -1);

    // sliding: a read pushes the expiry back to the full sliding window
    let k = key("sliding");
    fill(
        &b,
        &k,
        1u8,
        &EntryOptions::new().sliding(Duration::from_secs(30)),
    )
    .await;
    redis::cmd("PEXPIRE")
        .arg("t:{sliding}")
        .arg(5_000)
        .query::<()>(&mut con)
        .unwrap();
    assert!(con.pttl("t:{sliding}") <= 5_000);
    assert_eq!(hit::<u8>(&b, &k).await, 1);
    common::eventually("the sliding refresh", Duration::from_secs(5), || {
        con.pttl("t:{sliding}") > 25_000
    })
    .await;

    // sliding capped by the absolute ttl
    let k = key("capped");
    let o = EntryOptions::new()
        .sliding(Duration::from_secs(30))
        .ttl(Duration::from_secs(10));
    fill(&b, &k, 1u8, &o).await;
    assert!(con.pttl("t:{capped}") <= 10_000);
    assert_eq!(hit::<u8>(&b, &k).await, 1);
    // the refresh never extends past the absolute deadline
    let mut con2 = server.connection().unwrap();
    for _ in 0..3 {
        assert_eq!(hit::<u8>(&b, &k).await, 1);
    }
    common::eventually("refreshes to land", Duration::from_secs(2), || {
        con2.pttl("t:{capped}") > 0
    })
    .await;
    assert!(con2.pttl("t:{capped}") <= 10_000);

    // an entry past its ttl is gone
    let k = key("short");
    fill(
        &b,
        &k,
        1u8,
        &EntryOptions::new().ttl(Duration::from_millis(50)),
    )
    .await;
    common::eventually("expiry", Duration::from_secs(5), || {
        con.pttl("t:{short}") == -2
    })
    .await;
    miss(&b, &k).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependencies_invalidate_transitively() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::connect(&server);
    let user = key("get_user(7)");
    let team = key("team_page(1)");
    let other = key("get_user(8)");
    fill(
        &b,
        &user,
        "Ann".to_string(),
        &EntryOptions::new().depends_on("user:7"),
    )
    .await;
    fill(
        &b,
        &other,
        "Bo".to_string(),
        &EntryOptions::new().depends_on("user:8"),
    )
    .await;
    // the team page called get_user(7): the key text is its dependency
    fill(
        &b,
        &team,
        vec![7u64],
        &nested(EntryOptions::new().depends_on("get_user(7)"), "user:7"),
    )
    .await;

    b.invalidate("user:7").await.unwrap();
    miss(&b, &user).await;
    miss(&b, &team).await; // transitive
    assert_eq!(hit::<String>(&b, &other).await, "Bo");

    // remove() is transitive too
    fill(
        &b,
        &user,
        "Ann".to_string(),
        &EntryOptions::new().depends_on("user:7"),
    )
    .await;
    fill(
        &b,
        &team,
        vec![7u64],
        &nested(EntryOptions::new().depends_on("get_user(7)"), "user:7"),
    )
    .await;
    b.remove(&user).await.unwrap();
    miss(&b, &team).await;

    // no reverse-index residue for removed entries
    let mut con = server.connection().unwrap();
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("t:dep:{user:7}")
        .query(&mut con)
        .unwrap();
    assert!(members.is_empty(), "{members:?}");

    // clear
    assert_eq!(hit::<String>(&b, &other).await, "Bo");
    b.clear().await.unwrap();
    miss(&b, &other).await;
    // protocol 1 counts the entries removed (3), protocol 2 the names and keys bumped (2)
    assert!(b.stats().invalidations >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_entries_and_invalidations() {
    let Some(server) = common::server() else {
        return;
    };
    let a: Arc<dyn Backend> = Arc::new(common::connect(&server));
    let b: Arc<dyn Backend> = Arc::new(common::connect(&server));
    let k = key("get_user(1)");
    let o = EntryOptions::new().depends_on("user:1");
    fill(&*a, &k, "Ann".to_string(), &o).await;
    assert_eq!(
        hit::<String>(&*b, &k).await,
        "Ann",
        "a fill on A is a hit on B"
    );
    b.invalidate("user:1").await.unwrap();
    miss(&*a, &k).await;

    // the race: A misses and starts filling; B invalidates; A's set must not land
    let lease = miss(&*a, &k).await;
    b.invalidate("user:1").await.unwrap();
    let out = a
        .set(&k, value::share("stale".to_string()), &o, lease)
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Rejected);
    miss(&*b, &k).await;

    // the same race on the key itself (remove on B)
    let lease = miss(&*a, &k).await;
    b.remove(&k).await.unwrap();
    let out = a
        .set(&k, value::share("stale".to_string()), &o, lease)
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Rejected);

    // and through a transitive dependency: the entry depends on another entry's key
    let page = key("page(1)");
    let po = nested(EntryOptions::new().depends_on("get_user(1)"), "user:1");
    fill(&*a, &k, "Ann".to_string(), &o).await;
    let lease = miss(&*a, &page).await;
    b.invalidate("user:1").await.unwrap(); // drops get_user(1), hence its dependents
    let out = a.set(&page, value::share(1u8), &po, lease).await.unwrap();
    assert_eq!(out, SetOutcome::Rejected);

    // a fill that began after the invalidation lands
    let lease = miss(&*a, &k).await;
    let out = a
        .set(&k, value::share("new".to_string()), &o, lease)
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Stored);
    assert_eq!(hit::<String>(&*b, &k).await, "new");
    // an unrelated invalidation does not reject
    let lease = miss(&*a, &page).await;
    b.invalidate("user:999").await.unwrap();
    let out = a.set(&page, value::share(1u8), &po, lease).await.unwrap();
    assert_eq!(out, SetOutcome::Stored);
    // write-through is unconditional
    b.invalidate("user:1").await.unwrap();
    let out = a
        .set(
            &k,
            value::share("put".to_string()),
            &o,
            Lease::UNCONDITIONAL,
        )
        .await
        .unwrap();
    assert_eq!(out, SetOutcome::Stored);
    let stats = a.stats();
    assert_eq!(stats.rejected_sets, 3);
}

#[test]
fn blocking_calls_work_outside_and_inside_a_runtime() {
    let Some(server) = common::server() else {
        return;
    };
    let b = common::connect(&server);
    let k = key("sync_fn(1)");
    let Lookup::Miss(lease) = b.get_blocking(&k).unwrap() else {
        panic!()
    };
    b.set_blocking(&k, value::share(5u32), &EntryOptions::new(), lease)
        .unwrap();
    assert!(matches!(
        b.get_blocking(&k).unwrap(),
        Lookup::Hit(Hit::Bytes(_))
    ));
    // inside a current-thread runtime (a sync fn called from async code)
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        assert!(matches!(b.get_blocking(&k).unwrap(), Lookup::Hit(_)));
        b.invalidate_blocking("nothing").unwrap();
        b.remove_blocking(&k).unwrap();
        assert!(matches!(b.get_blocking(&k).unwrap(), Lookup::Miss(_)));
        // the async API from inside the same runtime
        assert!(matches!(b.get(&k).await.unwrap(), Lookup::Miss(_)));
    });
    // the async API from a non-tokio executor
    let got = futures_executor_block_on(b.get(&k));
    assert!(matches!(got.unwrap(), Lookup::Miss(_)));
    b.clear_blocking().unwrap();
}

/// A minimal executor (no tokio context) for the test above.
fn futures_executor_block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::{Arc, Condvar, Mutex};
    use std::task::{Context, Poll, Wake, Waker};
    struct Signal(Mutex<bool>, Condvar);
    impl Wake for Signal {
        fn wake(self: Arc<Self>) {
            *self.0.lock().unwrap() = true;
            self.1.notify_one();
        }
    }
    let signal = Arc::new(Signal(Mutex::new(false), Condvar::new()));
    let waker = Waker::from(signal.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        let mut woken = signal.0.lock().unwrap();
        while !*woken {
            woken = signal.1.wait(woken).unwrap();
        }
        *woken = false;
    }
}
