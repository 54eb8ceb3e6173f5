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
