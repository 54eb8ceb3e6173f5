//! The dependency garbage collector: keyspace notifications clean the reverse-index sets of
//! expired entries; the sweep repairs references planted by hand; several instances coexist.

#[path = "redis_common/mod.rs"]
mod common;

use std::time::Duration;

use cache_core::value;
use cache_core::{Backend, EntryOptions, Key, Lookup, SetOutcome};

fn smembers(con: &mut redis::Connection, k: &str) -> Vec<String> {
    redis::cmd("SMEMBERS").arg(k).query(con).unwrap()
}

fn exists(con: &mut redis::Connection, k: &str) -> bool {
    redis::cmd("EXISTS").arg(k).query::<i64>(con).unwrap() == 1
}

async fn fill(b: &dyn Backend, text: &str, o: &EntryOptions) {
    let k = Key::from_text(text);
    let Lookup::Miss(lease) = b.get(&k).await.unwrap() else {
        panic!("hit")
    };
    assert_eq!(
        b.set(&k, value::share(1u32), o, lease).await.unwrap(),
        SetOutcome::Stored
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_clean_dependency_sets_of_expired_entries() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let b = common::connect(&server);
    let mut con = server.connection().unwrap();
    common::eventually("the GC subscription", Duration::from_secs(10), || {
        b.gc_notifications_active()
    })
    .await;
    let flags: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query(&mut con)
        .unwrap();
    assert!(
        flags[1].contains('E') && flags[1].contains('x'),
        "{flags:?}"
    );

    let short = EntryOptions::new()
        .ttl(Duration::from_millis(100))
        .depends_on("user:1")
        .depends_on("team:1");
    let long = EntryOptions::new().depends_on("user:1");
    fill(&b, "short(1)", &short).await;
    fill(&b, "short(2)", &short).await;
    fill(&b, "long(1)", &long).await;
    assert_eq!(smembers(&mut con, "t:dep:{user:1}").len(), 3);

    common::eventually("GC of expired entries", Duration::from_secs(10), || {
        smembers(&mut con, "t:dep:{user:1}") == vec!["long(1)".to_string()]
            && smembers(&mut con, "t:dep:{team:1}").is_empty()
            && !exists(&mut con, "t:{short(1)}:d")
    })
    .await;
    assert!(exists(&mut con, "t:{long(1)}:d"));
    assert!(b.redis_stats().gc_references_removed >= 4);
    assert!(b.stats().expirations >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_repairs_planted_references() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let b = common::builder(&server).gc(false).connect().await.unwrap();
    let mut con = server.connection().unwrap();
    fill(&b, "alive(1)", &EntryOptions::new().depends_on("d")).await;
    // references no notification will ever clean: entries that never existed
    redis::cmd("SADD")
        .arg("t:dep:{d}")
        .arg("ghost(1)")
        .arg("ghost(2)")
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SADD")
        .arg("t:{ghost(3)}:deps")
        .arg("e")
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SADD")
        .arg("t:dep:{e}")
        .arg("ghost(3)")
        .query::<()>(&mut con)
        .unwrap();
    // the same in today's layout: a forward list string `<length>:<name>`
    redis::cmd("SET")
        .arg("t:{ghost(4)}:d")
        .arg("1:f")
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SADD")
        .arg("t:dep:{f}")
        .arg("ghost(4)")
        .query::<()>(&mut con)
        .unwrap();

    let removed = b.sweep_now().await.unwrap();
    assert_eq!(removed, 4);
    assert!(!exists(&mut con, "t:dep:{f}"));
    assert!(!exists(&mut con, "t:{ghost(4)}:d"));
    assert_eq!(
        smembers(&mut con, "t:dep:{d}"),
        vec!["alive(1)".to_string()]
    );
    assert!(!exists(&mut con, "t:dep:{e}"));
    assert!(!exists(&mut con, "t:{ghost(3)}:deps"));
    assert_eq!(b.sweep_now().await.unwrap(), 0, "idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_sweeps_of_several_instances_take_turns() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let mk = || {
        common::builder(&server)
            .keyspace_notifications(false)
            .sweep(Duration::from_millis(20), 5)
            .build()
            .unwrap()
    };
    let (a, b) = (mk(), mk());
    assert!(a.wait_connected(Duration::from_secs(5)).await);
    assert!(b.wait_connected(Duration::from_secs(5)).await);
    let mut con = server.connection().unwrap();
    for i in 0..30 {
        redis::cmd("SADD")
            .arg(format!("t:dep:{{d{i}}}"))
            .arg(format!("ghost({i})"))
            .query::<()>(&mut con)
            .unwrap();
    }
    fill(&a, "alive(1)", &EntryOptions::new().depends_on("d0")).await;
    common::eventually(
        "sweeps to clean every planted set",
        Duration::from_secs(20),
        || {
            let keys: Vec<String> = redis::cmd("KEYS").arg("t:dep:*").query(&mut con).unwrap();
            keys == vec!["t:dep:{d0}".to_string()]
        },
    )
    .await;
    assert_eq!(
        smembers(&mut con, "t:dep:{d0}"),
        vec!["alive(1)".to_string()]
    );
    let (sa, sb) = (a.redis_stats(), b.redis_stats());
    assert_eq!(sa.gc_references_removed + sb.gc_references_removed, 30);
    assert_eq!(sa.backend.errors + sb.backend.errors, 0);
}

/// An entry whose forward list an older layout wrote (a set `P:{T}:deps`) is still invalidated
/// whole: its references leave the reverse indexes and the old set is deleted, so nodes of both
/// layouts can run side by side during a rolling deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_lists_of_the_older_layout_are_read() {
    let Some(server) = common::server_for_protocol_1() else {
        return;
    };
    let b = common::connect(&server);
    let mut con = server.connection().unwrap();
    let both = EntryOptions::new().depends_on("u").depends_on("v");
    fill(&b, "old(1)", &both).await;
    // rewrite its forward list as an older node would have
    redis::cmd("DEL")
        .arg("t:{old(1)}:d")
        .query::<()>(&mut con)
        .unwrap();
    redis::cmd("SADD")
        .arg("t:{old(1)}:deps")
        .arg("u")
        .arg("v")
        .query::<()>(&mut con)
        .unwrap();
    b.invalidate("u").await.unwrap();
    assert!(
        smembers(&mut con, "t:dep:{v}").is_empty(),
        "the reference under v is gone too"
    );
    assert!(!exists(&mut con, "t:{old(1)}:deps"));
    let k = cache_core::Key::from_text("old(1)");
    assert!(matches!(
        b.get(&k).await.unwrap(),
        cache_core::Lookup::Miss(_)
    ));
}
