//! Pub/sub synchronization between several nodes (backend instances in one process) on a real
//! redis-server: invalidations travel, a node ignores its own messages, and after a lost
//! subscription (CLIENT KILL, server restart) no node serves an entry invalidated meanwhile.

use std::time::Duration;

use cache_core::{value, Backend, EntryOptions, Key, MemoryBackend, SetOutcome};
use cache_redis::{SyncOptions, SyncedBackend};
use test_support::{require_redis_server, wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(5);

fn node(server: &RedisServer, channel: &str) -> SyncedBackend {
    let node = SyncedBackend::builder(MemoryBackend::new())
        .client(server.client())
        .options(
            SyncOptions::new(channel)
                .ping_interval(Duration::from_millis(100))
                .timeout(Duration::from_millis(500)),
        )
        .build()
        .unwrap();
    assert!(
        node.synchronizer().wait_subscribed(DEADLINE),
        "node subscribed"
    );
    node
}

fn put(node: &SyncedBackend, key: &str, dep: &str) {
    let opts = EntryOptions::new().depends_on(dep);
    let lease = node.local().current_lease();
    node.set_blocking(&Key::from_text(key), value::share(1u32), &opts, lease)
        .unwrap();
    assert!(node.local().contains(key));
}

fn gone(node: &SyncedBackend, key: &str) -> bool {
    wait_until(DEADLINE, || !node.local().contains(key))
}

#[test]
fn invalidation_on_one_node_is_applied_on_the_others() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let [a, b, c] = [0; 3].map(|_| node(&server, "t:sync"));

    // Dependency invalidation.
    for n in [&a, &b, &c] {
        put(n, "app::get_user(7)", "user:7");
        put(n, "app::get_user(8)", "user:8");
    }
    a.invalidate_blocking("user:7").unwrap();
    assert!(!a.local().contains("app::get_user(7)"));
    assert!(gone(&b, "app::get_user(7)") && gone(&c, "app::get_user(7)"));
    assert!(b.local().contains("app::get_user(8)"), "other entries stay");

    // Key removal (async form, inside a runtime).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(b.remove(&Key::from_text("app::get_user(8)")))
        .unwrap();
    assert!(gone(&a, "app::get_user(8)") && gone(&c, "app::get_user(8)"));

    // Clear.
    for n in [&a, &b, &c] {
        put(n, "k", "d");
    }
    c.clear_blocking().unwrap();
    assert!(gone(&a, "k") && gone(&b, "k"));

    // A node ignores its own messages; the others applied them.
    assert!(wait_until(DEADLINE, || a
        .synchronizer()
        .stats()
        .own_messages
        >= 1));
    assert!(b.synchronizer().stats().applied_ops >= 2);
    assert_ne!(a.synchronizer().node_id(), b.synchronizer().node_id());
}

#[test]
fn other_channels_are_not_affected() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let a = node(&server, "t:one");
    let b = node(&server, "t:one");
    let other = node(&server, "t:two");
    for n in [&a, &b, &other] {
        put(n, "k", "d");
    }
    a.invalidate_blocking("d").unwrap();
    assert!(gone(&b, "k"));
    // `b` got it; `other` listens on another channel and keeps its entry.
    assert!(wait_until(DEADLINE, || a
        .synchronizer()
        .stats()
        .published_ops
        >= 1));
    assert!(other.local().contains("k"));
}

#[test]
fn an_unreadable_message_flushes() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let a = node(&server, "t:bad");
    put(&a, "k", "d");
    let mut con = server.connection().unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("t:bad")
        .arg("cs9:future-format")
        .query(&mut con)
        .unwrap();
    assert!(gone(&a, "k"));
    assert_eq!(a.synchronizer().stats().unreadable_messages, 1);
}

fn client_id(server: &RedisServer, name: &str) -> Option<i64> {
    let mut con = server.connection().unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut con).unwrap();
    list.lines().find_map(|line| {
        let has = line.split(' ').any(|f| f == format!("name={name}"));
        let id = line.split(' ').find_map(|f| f.strip_prefix("id="))?;
        has.then(|| id.parse().ok()).flatten()
    })
}

#[test]
fn after_client_kill_of_a_subscriber_no_node_serves_an_invalidated_entry() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let [a, b] = [0; 2].map(|_| node(&server, "t:kill"));
    put(&b, "k", "d");
    let name = format!("cache-sync-sub-{}", b.synchronizer().node_id());
    let id = client_id(&server, &name).expect("b's subscriber is named");
    let mut con = server.connection().unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(id)
        .query(&mut con)
        .unwrap();
    // Whatever A invalidates while B is disconnected never survives on B.
    a.invalidate_blocking("d").unwrap();
    assert!(gone(&b, "k"));
    // B resubscribes (a new connection) and receives again.
    assert!(wait_until(DEADLINE, || b
        .synchronizer()
        .stats()
        .subscriptions
        >= 2));
    assert!(b.synchronizer().stats().subscription_losses >= 1);
    assert!(wait_until(DEADLINE, || client_id(&server, &name)
        .is_some_and(|n| n != id)));
    put(&b, "k2", "d2");
    a.invalidate_blocking("d2").unwrap();
    assert!(gone(&b, "k2"));
}

#[test]
fn after_a_redis_restart_no_node_serves_an_entry_invalidated_during_the_outage() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let mut server = RedisServer::start(&bin).unwrap();
    let [a, b, c] = [0; 3].map(|_| node(&server, "t:restart"));
    server.kill();
    assert!(wait_until(DEADLINE, || {
        !b.synchronizer().is_subscribed() && !c.synchronizer().is_subscribed()
    }));
    // A fill during the outage is not stored: an invalidation elsewhere (whose message cannot
    // travel) could not drop it, so B and C never serve it, during the outage or after.
    for n in [&b, &c] {
        let opts = EntryOptions::new().depends_on("d");
        let lease = n.local().current_lease();
        let out = n
            .set_blocking(&Key::from_text("k"), value::share(1u32), &opts, lease)
            .unwrap();
        assert_eq!(out, SetOutcome::Rejected);
        assert!(!n.local().contains("k"));
        assert!(n.synchronizer().stats().deaf_fills >= 1);
    }
    a.invalidate_blocking("d").unwrap();
    server.restart().unwrap();
    for n in [&a, &b, &c] {
        assert!(wait_until(DEADLINE, || n
            .synchronizer()
            .stats()
            .subscriptions
            >= 2));
    }
    assert!(!b.local().contains("k") && !c.local().contains("k"));
    // Synchronization works again.
    put(&b, "k3", "d3");
    put(&c, "k3", "d3");
    a.invalidate_blocking("d3").unwrap();
    assert!(gone(&b, "k3") && gone(&c, "k3"));
}

#[test]
fn a_failed_ping_counts_as_a_lost_subscription() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).unwrap();
    let a = node(&server, "t:ping");
    put(&a, "k", "d");
    // Pause every client for 2 s: the 500 ms ping timeout fires, A flushes and resubscribes.
    let mut con = server.connection().unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query(&mut con)
        .unwrap();
    assert!(gone(&a, "k"));
    assert!(wait_until(DEADLINE, || a
        .synchronizer()
        .stats()
        .subscriptions
        >= 2));
}
