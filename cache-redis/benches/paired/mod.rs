//! Paired measurements of a backend hit against a raw redis-rs `GET` of the same entry (shared by
//! the Redis hit benches): the two sides alternate, so load drift on a shared machine hits both
//! alike, and the ratio within a run is the claim.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{Backend, Key, Lookup};
use redis::aio::ConnectionLike;

/// A raw redis-rs connection the backend is compared with (one server's multiplexed
/// connection, or a cluster connection).
pub trait Raw: ConnectionLike + Clone + Send + Sync + 'static {}
impl<T: ConnectionLike + Clone + Send + Sync + 'static> Raw for T {}

/// One raw `GET` of `key` (must exist).
pub async fn raw_get<C: Raw>(con: &mut C, key: &str) {
    let v: Option<Vec<u8>> = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
    assert!(v.is_some(), "the raw key exists");
}

/// One backend hit of `key` of a call that declares `declared` (as a `#[cached]` fn's call
/// does), decoded as a `String` (must be a hit).
pub async fn backend_hit(backend: &dyn Backend, key: &Key, declared: &[String]) {
    let Lookup::Hit(hit) = backend.get_declared(key, declared).await.unwrap() else {
        panic!("a miss where a hit was expected")
    };
    assert!(hit.into_typed::<String>().is_ok());
}

/// Medians of `n` raw `GET`s and `n` backend hits, alternated one by one.
pub async fn latency<C: Raw>(
    raw: &C,
    raw_key: &str,
    backend: &dyn Backend,
    key: &Key,
    declared: &[String],
    n: usize,
) -> (Duration, Duration) {
    let mut con = raw.clone();
    let (mut r, mut h) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        raw_get(&mut con, raw_key).await;
        r.push(t.elapsed());
        let t = Instant::now();
        backend_hit(backend, key, declared).await;
        h.push(t.elapsed());
    }
    r.sort();
    h.sort();
    (r[n / 2], h[n / 2])
}

/// Throughput (operations per second) of `tasks` concurrent tasks doing `per_task` raw `GET`s,
/// then the same with backend hits of a key and its declared dependencies, alternated `bursts`
/// times.
pub async fn throughput<C: Raw>(
    raw: &C,
    raw_key: &str,
    backend: &Arc<dyn Backend>,
    (key, declared): &(Key, Arc<[String]>),
    tasks: usize,
    per_task: usize,
    bursts: usize,
) -> (f64, f64) {
    let (mut r, mut h) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..bursts {
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (mut con, k) = (raw.clone(), raw_key.to_string());
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        raw_get(&mut con, &k).await;
                    }
                })
            })
            .collect();
        for t in handles {
            t.await.unwrap();
        }
        r += start.elapsed();
        let start = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|_| {
                let (b, k, d) = (backend.clone(), key.clone(), declared.clone());
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        backend_hit(&*b, &k, &d).await;
                    }
                })
            })
            .collect();
        for t in handles {
            t.await.unwrap();
        }
        h += start.elapsed();
    }
    let ops = (bursts * tasks * per_task) as f64;
    (ops / r.as_secs_f64(), ops / h.as_secs_f64())
}
