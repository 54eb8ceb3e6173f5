//! Shared helpers of the Redis tests (each test file includes this module).
#![allow(dead_code)]

use std::time::{Duration, Instant};

use cache_redis::{RedisBackend, RedisBackendBuilder};
use test_support::{require_redis_server, RedisServer};

/// A fresh server, or `None` when redis-server is missing outside CI (the test is skipped).
pub fn server() -> Option<RedisServer> {
    let bin = require_redis_server()?;
    Some(RedisServer::start(&bin).expect("redis-server starts"))
}

/// A builder pointing at `server` with test-friendly timeouts.
pub fn builder(server: &RedisServer) -> RedisBackendBuilder {
    RedisBackend::builder()
        .url(server.url())
        .prefix("t")
        .op_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
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
