//! The web service example (`examples/web/app.rs`), started in-process on a free loopback port
//! and driven over HTTP: a read after an update returns the new data (at `/users/{id}` and in the
//! team page that showed the user through a nested cached call), a created user is written
//! through (the next GET is a hit), the directory in the `shared` profile is dropped by a
//! dependency, `/stats` and `/metrics` report the counters. Once on the embedded defaults
//! (SQLite in memory, memory cache) and once with Redis (a real `redis-server` started by
//! test-support; local caches kept in sync over pub/sub, the directory stored in Redis).
//!
//! The service installs its cache globally (one service per process), so the tests run one at
//! a time.
//!
//! One more test runs the service's database start (connect, migrate, seed) for 8 nodes at the
//! same moment on one new, empty PostgreSQL database: every node must come up. It needs a
//! PostgreSQL server, which the tests cannot start themselves: it runs when
//! `CACHE_TEST_POSTGRES_URL` names one, and is skipped otherwise.

#[path = "../examples/web/app.rs"]
mod app;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::Mutex;

/// The registry and the counters are process-wide: one service at a time.
static SERIAL: Mutex<()> = Mutex::const_new(());

struct Running {
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(config: app::Config) -> Running {
        let app = app::build(config).await.expect("the service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(app::serve(listener, app));
        Running {
            base,
            http: reqwest::Client::new(),
            server,
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// `(hits, misses, fills)` of one cached function, from `/stats`.
    async fn fn_stats(&self, function: &str) -> (u64, u64, u64) {
        let stats = self.get_ok("/stats").await;
        let f = stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == function)
            .unwrap_or_else(|| panic!("no stats for {function}: {stats}"));
        let n = |k: &str| f[k].as_u64().unwrap();
        (n("hits"), n("misses"), n("fills"))
    }

    fn stop(self) {
        self.server.abort();
    }
}

fn member_names(page: &Value) -> Vec<String> {
    page["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect()
}

fn team_size(directory: &Value, team: i64) -> i64 {
    directory
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == team)
        .unwrap()["members"]
        .as_i64()
        .unwrap()
}

/// Everything the service promises, on whatever backends it was built with.
async fn exercise(s: &Running) {
    // ---- a rename is visible at /users/{id} and in the team page (nested cached call)
    assert_eq!(s.get_ok("/users/2").await["name"], "Grace");
    let page = s.get_ok("/teams/1").await;
    assert_eq!(member_names(&page), ["Ada", "Grace", "Linus"]);
    let (h0, m0, _) = s.fn_stats("team_page").await;
    assert_eq!(s.get_ok("/teams/1").await, page);
    let (h1, m1, _) = s.fn_stats("team_page").await;
    assert_eq!(
        (h1, m1),
        (h0 + 1, m0),
        "the second read of the page is a hit"
    );
    let (status, body) = s
        .send(
            reqwest::Method::PUT,
            "/users/2",
            json!({ "name": "Grace H." }),
        )
        .await;
    assert_eq!((status, &body["name"]), (200, &json!("Grace H.")), "{body}");
    assert_eq!(s.get_ok("/users/2").await["name"], "Grace H.");
    let page = s.get_ok("/teams/1").await;
    assert_eq!(
        member_names(&page),
        ["Ada", "Grace H.", "Linus"],
        "renaming a member dropped the cached team page"
    );
    // a rejected update changes nothing and invalidates nothing
    let (status, _) = s
        .send(reqwest::Method::PUT, "/users/2", json!({ "name": " " }))
        .await;
    assert_eq!(status, 400);
    let (h1, m1, _) = s.fn_stats("get_user").await;
    assert_eq!(s.get_ok("/users/2").await["name"], "Grace H.");
    let (h2, m2, _) = s.fn_stats("get_user").await;
    assert_eq!(
        (h2, m2),
        (h1 + 1, m1),
        "still cached after the rejected PUT"
    );
    let (status, _) = s
        .send(
            reqwest::Method::PUT,
            "/users/404",
            json!({ "name": "Nobody" }),
        )
        .await;
    assert_eq!(status, 404);

    // ---- POST then GET: written through, the GET is a hit; team page and directory dropped
    let before = team_size(&s.get_ok("/teams").await, 3);
    assert_eq!(
        member_names(&s.get_ok("/teams/3").await).len() as i64,
        before
    );
    let (status, created) = s
        .send(
            reqwest::Method::POST,
            "/users",
            json!({ "name": "Alan", "email": "alan@example.com", "team_id": 3 }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let (h0, m0, f0) = s.fn_stats("get_user").await;
    let read = s.get_ok(&format!("/users/{id}")).await;
    assert_eq!(read, created);
    assert_eq!(
        s.fn_stats("get_user").await,
        (h0 + 1, m0, f0),
        "the GET after the POST is a hit and runs no query"
    );
    assert!(member_names(&s.get_ok("/teams/3").await).contains(&"Alan".to_string()));
    assert_eq!(team_size(&s.get_ok("/teams").await, 3), before + 1);
    // a POST into a team that does not exist is refused, nothing cached
    let (status, _) = s
        .send(
            reqwest::Method::POST,
            "/users",
            json!({ "name": "Eve", "email": "eve@example.com", "team_id": 99 }),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(s.get("/users/999").await.0, 404);

    // ---- with caching off every read runs the query
    cache_core::registry::set_enabled(false);
    let (h0, _, f0) = s.fn_stats("get_user").await;
    assert_eq!(s.get_ok("/users/1").await["name"], "Ada");
    assert_eq!(s.get_ok("/users/1").await["name"], "Ada");
    let (h1, _, f1) = s.fn_stats("get_user").await;
    cache_core::registry::set_enabled(true);
    assert_eq!(
        (h1, f1),
        (h0, f0),
        "no hit and nothing stored while disabled"
    );

    // ---- observability
    let stats = s.get_ok("/stats").await;
    assert!(!stats["backends"].as_array().unwrap().is_empty(), "{stats}");
    let metrics = s
        .http
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "cache_hits_total{function=\"get_user\"",
        "cache_misses_total{function=\"team_page\"",
        "cache_fill_duration_seconds_bucket{function=\"get_user\"",
        "cache_backend_hits_total{backend=",
    ] {
        assert!(
            metrics.contains(needle),
            "/metrics lacks {needle}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_service_on_the_embedded_defaults() {
    let _one = SERIAL.lock().await;
    let s = Running::start(app::Config {
        node_name: "test-memory".into(),
        ..app::Config::default()
    })
    .await;
    let stats = s.get_ok("/stats").await;
    assert_eq!(
        (&stats["database"], &stats["cache"]),
        (&json!("sqlite"), &json!("memory"))
    );
    exercise(&s).await;
    s.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_service_with_redis() {
    let Some(bin) = test_support::require_redis_server() else {
        return;
    };
    let _one = SERIAL.lock().await;
    let server = test_support::RedisServer::start(&bin).expect("redis-server starts");
    let s = Running::start(app::Config {
        redis_url: Some(server.url()),
        node_name: "test-redis".into(),
        ..app::Config::default()
    })
    .await;
    let stats = s.get_ok("/stats").await;
    assert_eq!(stats["cache"], "memory+sync / redis", "{stats}");
    assert_eq!(stats["sync"]["subscribed"], true, "{stats}");
    exercise(&s).await;
    // the directory (profile `shared`) was stored in Redis itself
    let mut con = server.connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("web-example:{*directory()}")
        .query(&mut con)
        .unwrap();
    assert_eq!(keys.len(), 1, "the directory entry is in Redis: {keys:?}");
    s.stop();
}

/// The same service on a Redis Cluster (`REDIS_CLUSTER_URLS`): three masters the test
/// creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_service_with_a_redis_cluster() {
    let Some(bin) = test_support::require_redis_server() else {
        return;
    };
    let _one = SERIAL.lock().await;
    let mut cluster =
        test_support::cluster::RedisCluster::start(&bin, 3, 0).expect("the cluster forms");
    let s = Running::start(app::Config {
        redis_cluster_urls: Some(cluster.urls().join(",")),
        node_name: "test-cluster".into(),
        ..app::Config::default()
    })
    .await;
    let stats = s.get_ok("/stats").await;
    assert_eq!(stats["cache"], "memory+sync / redis", "{stats}");
    assert_eq!(stats["sync"]["subscribed"], true, "{stats}");
    exercise(&s).await;
    // the directory (profile `shared`) was stored on one of the masters
    let found: usize = cluster
        .nodes_mut()
        .iter_mut()
        .map(|n| {
            let mut con = n.connection().unwrap();
            redis::cmd("KEYS")
                .arg("web-example:{*directory()}")
                .query::<Vec<String>>(&mut con)
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(found, 1, "the directory entry is in the cluster");
    s.stop();
}

// ------------------------------------------------------------------------------------------
// PostgreSQL: nodes starting together on one empty database
// ------------------------------------------------------------------------------------------

/// The PostgreSQL server the migration test uses: `CACHE_TEST_POSTGRES_URL` (for example
/// `postgres://postgres@127.0.0.1:5432`, a role that may create databases). Opt-in: the test
/// suite starts every service it needs itself, and a PostgreSQL is not one it can start.
const PG_URL_VAR: &str = "CACHE_TEST_POSTGRES_URL";

/// Nodes started at the same moment on one empty database.
const NODES: usize = 8;

/// Fresh databases the start is tried on: the race without the lock needs two
/// `CREATE TABLE IF NOT EXISTS` of one table to overlap, which one try can miss.
const ROUNDS: usize = 5;

/// The server URL and an admin connection to it, or `None` (the test is skipped, with a
/// message) when `CACHE_TEST_POSTGRES_URL` is not set. Set but unreachable is a failure.
async fn require_postgres() -> Option<(String, sqlx::PgConnection)> {
    use sqlx::Connection;
    let Ok(server) = std::env::var(PG_URL_VAR) else {
        eprintln!("skipped: set {PG_URL_VAR} (e.g. postgres://postgres@127.0.0.1:5432) to run it");
        return None;
    };
    let url = format!("{}/postgres", server.trim_end_matches('/'));
    let connect = sqlx::PgConnection::connect(&url);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(admin)) => Some((server, admin)),
        Ok(Err(e)) => panic!("{PG_URL_VAR}: cannot connect to {url}: {e}"),
        Err(_) => panic!("{PG_URL_VAR}: {url} did not answer within 10 s"),
    }
}

/// Nodes started together on one empty PostgreSQL database all come up, with the tables
/// created and seeded once. The migration takes an advisory lock first (`Db::migrate_and_seed`);
/// without it concurrent `CREATE TABLE IF NOT EXISTS` statements race in PostgreSQL (the
/// table's row type is created after the existence check) and the late nodes fail with
/// `type "teams" already exists` or a duplicate key in `pg_type`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_together_on_one_empty_postgres_database() {
    use sqlx::Executor;
    let Some((pg_server, mut admin)) = require_postgres().await else {
        return;
    };
    for round in 0..ROUNDS {
        let name = format!("web_service_start_{}_{round}", std::process::id());
        let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        admin.execute(drop_db.as_str()).await.unwrap();
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap();
        let url = format!("{}/{name}", pg_server.trim_end_matches('/'));
        // all nodes connect and migrate at once
        let gate = Arc::new(tokio::sync::Barrier::new(NODES));
        let nodes: Vec<_> = (0..NODES)
            .map(|_| {
                let (url, gate) = (url.clone(), gate.clone());
                tokio::spawn(async move {
                    gate.wait().await;
                    app::Db::connect(Some(&url), Duration::ZERO).await
                })
            })
            .collect();
        let mut started = Vec::new();
        let mut failed = Vec::new();
        for node in nodes {
            match node.await.expect("the node task does not panic") {
                Ok(db) => started.push(db),
                Err(e) => failed.push(e.to_string()),
            }
        }
        // what the tables hold: teams and users (with member counts), the user id counter
        let seen = match started.first() {
            Some(db) => Some((db.teams().await, db.next_user_id().await)),
            None => None,
        };
        drop(started);
        admin.execute(drop_db.as_str()).await.unwrap();

        assert!(
            failed.is_empty(),
            "round {round}: {} of {NODES} nodes failed to start: {failed:?}",
            failed.len()
        );
        let (teams, next_id) = seen.expect("some node started");
        let teams: Vec<(i64, i64)> = teams
            .expect("the teams and users tables exist")
            .iter()
            .map(|t| (t.id, t.members))
            .collect();
        assert_eq!(
            teams,
            [(1, 3), (2, 3), (3, 3)],
            "round {round}: seeded once"
        );
        assert_eq!(
            next_id.expect("the counters table exists"),
            10,
            "round {round}: the user id counter starts after the 9 seeded users"
        );
    }
}
