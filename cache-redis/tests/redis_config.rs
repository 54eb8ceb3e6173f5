//! Configuration against a live server: passwords and ACL users, db, prefixes, `from_vars`,
//! dependencies off; passwords never shown.

#[path = "redis_common/mod.rs"]
mod common;

use std::time::Duration;

use cache_core::value;
use cache_core::{Backend, EntryOptions, Key, Lookup};
use cache_redis::{RedisBackend, RedisBackendBuilder};
use test_support::{require_redis_server, RedisServer};

async fn fill(b: &RedisBackend, text: &str, v: u32, o: &EntryOptions) {
    let k = Key::from_text(text);
    let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
        panic!("hit")
    };
    b.set(&k, value::share(v), o, lease).await.unwrap();
}

async fn is_hit(b: &RedisBackend, text: &str) -> bool {
    matches!(b.get(&Key::from_text(text)).await.unwrap(), Lookup::Hit(_))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_acl_user() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start_with(&bin, &["--requirepass", "s3cret-pw"]).unwrap();
    let port = server.port();
    let url = format!("redis://:s3cret-pw@127.0.0.1:{port}/");
    let b = RedisBackend::builder()
        .url(&url)
        .prefix("t")
        .connect()
        .await
        .unwrap();
    fill(&b, "a", 1, &EntryOptions::new()).await;
    assert!(is_hit(&b, "a").await);
    let shown = format!("{b:?} {}", b.redacted_url());
    assert!(!shown.contains("s3cret-pw"), "{shown}");

    // an ACL user with its own password, given through the builder
    let mut con = server.connection().unwrap();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("on")
        .arg(">app-pw")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query::<()>(&mut con)
        .unwrap();
    let b = RedisBackend::builder()
        .url(format!("redis://127.0.0.1:{port}/"))
        .username("app")
        .password("app-pw")
        .prefix("t")
        .connect()
        .await
        .unwrap();
    assert!(is_hit(&b, "a").await);

    // a wrong password: no connection, and the error does not show it
    let err = RedisBackend::builder()
        .url(format!("redis://:wrong-pw@127.0.0.1:{port}/"))
        .connect_timeout(Duration::from_millis(300))
        .gc(false)
        .connect()
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains("wrong-pw"), "{msg}");
    assert!(msg.contains("***"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn db_and_prefix_namespace_applications() {
    let Some(server) = common::plain_server()
    /* SELECT: no databases on a cluster */
    else {
        return;
    };
    let app1 = common::builder(&server)
        .prefix("app1")
        .connect()
        .await
        .unwrap();
    let app2 = common::builder(&server)
        .prefix("app2")
        .connect()
        .await
        .unwrap();
    let db3 = common::builder(&server)
        .prefix("app1")
        .db(3)
        .connect()
        .await
        .unwrap();
    fill(&app1, "k", 1, &EntryOptions::new().depends_on("d")).await;
    assert!(!is_hit(&app2, "k").await, "another prefix is another cache");
    assert!(!is_hit(&db3, "k").await, "another db is another cache");
    app2.invalidate("d").await.unwrap();
    app2.clear().await.unwrap();
    assert!(
        is_hit(&app1, "k").await,
        "app2's invalidation and clear leave app1 alone"
    );
    let mut con = server.connection().unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("app1:*").query(&mut con).unwrap();
    assert!(keys.contains(&"app1:{k}".to_string()), "{keys:?}");
    fill(&db3, "k", 3, &EntryOptions::new()).await;
    redis::cmd("SELECT").arg(3).query::<()>(&mut con).unwrap();
    let n: i64 = redis::cmd("EXISTS")
        .arg("app1:{k}")
        .query(&mut con)
        .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_vars_and_dependencies_off() {
    let Some(server) = common::server() else {
        return;
    };
    let url = server.url();
    let b = RedisBackendBuilder::from_vars(|name| match name {
        "REDIS_URL" => Some(url.clone()),
        "CACHE_REDIS_PREFIX" => Some("env".into()),
        "CACHE_REDIS_OP_TIMEOUT_MS" => Some("300".into()),
        "CACHE_REDIS_DEPENDENCIES" => Some("false".into()),
        "CACHE_REDIS_GC" => Some("off".into()),
        "CACHE_REDIS_PROTOCOL" => Some(common::protocol().to_string()),
        _ => None,
    })
    .unwrap()
    .connect()
    .await
    .unwrap();
    assert_eq!(b.prefix(), "env");
    assert_eq!(b.op_timeout(), Duration::from_millis(300));
    fill(&b, "k", 1, &EntryOptions::new().depends_on("d")).await;
    b.invalidate("d").await.unwrap();
    assert!(is_hit(&b, "k").await, "dependencies are not recorded");
    b.remove(&Key::from_text("k")).await.unwrap();
    assert!(!is_hit(&b, "k").await, "remove by key still works");
    let mut con = server.connection().unwrap();
    let sets: Vec<String> = redis::cmd("KEYS").arg("env:dep:*").query(&mut con).unwrap();
    assert!(sets.is_empty());
}
