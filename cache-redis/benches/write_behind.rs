//! `#[write_behind]` against calling the same body directly, with a data store that takes 2 ms
//! per write, on the in-process queue and on Redis (one redis-server started here); then flush
//! throughput: 5,000 queued writes of distinct keys drained by `flush_writes`.
//!
//! Run: `cargo bench -p cache-redis --bench write_behind`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry, write_behind, Backend, MemoryBackend};
use cache_redis::RedisBackend;
use test_support::{require_redis_server, RedisServer};

const STORE_WRITE: Duration = Duration::from_millis(2);
const CALLS: usize = 500;
const FLUSHED: u64 = 5_000;

#[cached(ttl = "10m")]
async fn get_row(id: u64) -> Result<u64, String> {
    Ok(id)
}

/// The data store's write: 2 ms.
async fn store_write(_id: u64, _v: u64) -> Result<(), String> {
    tokio::time::sleep(STORE_WRITE).await;
    Ok(())
}

#[write_behind(get_row(id), value = v, flush_after = "1h")]
async fn save_row(id: u64, v: u64) -> Result<(), String> {
    store_write(id, v).await
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

async fn latencies(
    mut call: impl FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> (Duration, Duration) {
    let mut v = Vec::with_capacity(CALLS);
    for i in 0..CALLS as u64 {
        let t = Instant::now();
        call(i).await;
        v.push(t.elapsed());
    }
    (percentile(&mut v, 0.5), percentile(&mut v, 0.99))
}

async fn run(label: &str, backend: Arc<dyn Backend>) {
    registry::install(backend);
    let (d50, d99) =
        latencies(|i| Box::pin(async move { save_row_now(i, i).await.unwrap() })).await;
    let (w50, w99) = latencies(|i| Box::pin(async move { save_row(i, i).await.unwrap() })).await;
    cache_core::flush_writes().await;
    println!(
        "{label:>6}: direct call p50 {d50:>9.1?} p99 {d99:>9.1?} | write_behind call p50 {w50:>9.1?} p99 {w99:>9.1?} | {:.1}x faster at p50",
        d50.as_secs_f64() / w50.as_secs_f64()
    );
    for id in 0..FLUSHED {
        save_row(1_000_000 + id, id).await.unwrap();
    }
    let t = Instant::now();
    cache_core::flush_writes().await;
    let took = t.elapsed();
    println!(
        "{label:>6}: flushed {FLUSHED} writes of distinct keys in {took:.2?}: {:.0} writes/s (2 ms each)",
        FLUSHED as f64 / took.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run("memory", Arc::new(MemoryBackend::new())));
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).expect("redis-server");
    let backend = RedisBackend::builder()
        .url(server.url())
        .prefix("wb")
        .gc(false)
        .connect_blocking()
        .unwrap();
    rt.block_on(run("redis", Arc::new(backend)));
}
