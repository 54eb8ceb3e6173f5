//! Shared helpers of the Redis tests (each test file includes this module).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cache_redis::{RedisBackend, RedisBackendBuilder};
use test_support::{require_redis_server, RedisServer};

/// A fresh server, or `None` when redis-server is missing outside CI (the test is skipped).
/// With `CACHE_REDIS_TEST_CLUSTER=1` (and protocol 2), a one-node Redis Cluster: every script
/// or transaction touching two hash slots then fails loudly.
pub fn server() -> Option<RedisServer> {
    let bin = require_redis_server()?;
    if on_cluster() {
        return Some(RedisServer::start_one_node_cluster(&bin).expect("a one-node cluster starts"));
    }
    Some(RedisServer::start(&bin).expect("redis-server starts"))
}

/// Whether the tests run on a one-node cluster (`CACHE_REDIS_TEST_CLUSTER=1`).
pub fn on_cluster() -> bool {
    std::env::var("CACHE_REDIS_TEST_CLUSTER").as_deref() == Ok("1")
}

/// A fresh single server whatever the tests run on: for tests of protocol 1's own mechanisms
/// and of what a cluster does not have (`SELECT`).
pub fn plain_server() -> Option<RedisServer> {
    let bin = require_redis_server()?;
    Some(RedisServer::start(&bin).expect("redis-server starts"))
}

/// A fresh server for a test of protocol 1's own mechanisms (reverse indexes, generations,
/// tombstones, its garbage collector), `None` when the tests run on protocol 2, which has none
/// of them (its own tests are in `redis_protocol_v2.rs`).
pub fn server_for_protocol_1() -> Option<RedisServer> {
    if protocol() != 1 {
        eprintln!("skipped: this test is about protocol 1's layout");
        return None;
    }
    plain_server()
}

/// The storage protocol the tests run on: `CACHE_REDIS_TEST_PROTOCOL` (1 or 2; default 1).
/// `.ci/run` runs the Redis tests once on each.
pub fn protocol() -> u8 {
    match std::env::var("CACHE_REDIS_TEST_PROTOCOL").as_deref() {
        Ok("2") => 2,
        Ok("1") | Err(_) => 1,
        Ok(other) => panic!("CACHE_REDIS_TEST_PROTOCOL must be 1 or 2, not `{other}`"),
    }
}

/// A builder pointing at `server` with test-friendly timeouts.
pub fn builder(server: &RedisServer) -> RedisBackendBuilder {
    RedisBackend::builder()
        .url(server.url())
        .prefix("t")
        .op_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .protocol(protocol())
}

pub fn connect(server: &RedisServer) -> RedisBackend {
    builder(server).connect_blocking().expect("connects")
}

/// Polls `cond` until true or the deadline (a bounded wait, not a sleep).
pub async fn eventually(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The commands clients send to a server, as `MONITOR` reports them (commands run inside
/// scripts are left out: each command counted is one round trip of some client).
pub struct Monitor {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    marker: redis::Connection,
    next: u64,
    /// The client id of the monitoring connection (killed on drop: that ends the thread).
    id: i64,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(self.id)
            .query::<i64>(&mut self.marker);
    }
}

impl Monitor {
    pub fn start(server: &RedisServer) -> Monitor {
        let mut con = server.connection().expect("monitor connection");
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query(&mut con)
            .expect("CLIENT ID");
        redis::cmd("MONITOR")
            .query::<()>(&mut con)
            .expect("MONITOR");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            while let Ok(v) = con.recv_response() {
                if let Ok(line) = redis::from_redis_value::<String>(v) {
                    if !line.contains(" lua] ") {
                        sink.lock().unwrap().push(line);
                    }
                }
            }
        });
        Monitor {
            lines,
            marker: server.connection().expect("marker connection"),
            next: 0,
            id,
        }
    }

    /// The commands sent since the previous call (or since the start), in order, once they
    /// have all been reported (a marker command sent now is reported after them).
    pub async fn take(&mut self) -> Vec<String> {
        self.next += 1;
        let marker = format!("monitor-marker-{}", self.next);
        redis::cmd("ECHO")
            .arg(&marker)
            .query::<String>(&mut self.marker)
            .unwrap();
        let quoted = format!("\"{marker}\"");
        eventually(
            "the monitor to report the marker",
            Duration::from_secs(5),
            || {
                self.lines
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains(&quoted))
            },
        )
        .await;
        let mut lines = self.lines.lock().unwrap();
        let at = lines.iter().position(|l| l.contains(&quoted)).unwrap();
        let mut taken: Vec<String> = lines.drain(..=at).collect();
        taken.pop();
        taken.retain(|l| !l.contains("\"monitor-marker-"));
        taken
    }
}
