//! A batch of 100 all-hit items on Redis (`#[cached(batch(ids))]`) against 100 calls of a
//! single-item cached fn and against a raw redis-rs `MGET` of the same 100 entry keys, on one
//! redis-server started here. Paired medians: the three sides alternate one by one, so load
//! drift on a shared machine hits them alike; the ratios within a run are the claim.
//!
//! Run: `cargo bench -p cache-redis --bench redis_batch`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{cached, registry};
use cache_redis::RedisBackend;
use test_support::{require_redis_server, RedisServer};

const ITEMS: u64 = 100;
const SAMPLES: usize = 300;
const ROUNDS: usize = 3;

fn payload(id: u64) -> String {
    format!("{id:0>100}")
}

#[cached(batch(ids))]
async fn batch(ids: Vec<u64>) -> HashMap<u64, String> {
    ids.into_iter().map(|id| (id, payload(id))).collect()
}

#[cached]
async fn single(id: u64) -> String {
    payload(id)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let server = RedisServer::start(&bin).expect("redis-server");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = RedisBackend::builder()
        .url(server.url())
        .prefix("b")
        .gc(false)
        .connect_blocking()
        .unwrap();
    registry::install(Arc::new(backend.clone()));
    let ids: Vec<u64> = (0..ITEMS).collect();
    rt.block_on(async {
        batch(ids.clone()).await;
        for &id in &ids {
            single(id).await;
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| backend.entry_key(&batch_entry(*id).key().to_string()))
            .collect();
        let mut raw = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        println!("| round | raw MGET of 100 | batch of 100 hits | 100 single-item hits | batch / MGET | singles / MGET |");
        println!("|---|---|---|---|---|---|");
        for round in 1..=ROUNDS {
            let (mut m, mut b, mut s) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..SAMPLES {
                let t = Instant::now();
                let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(&keys)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                assert!(v.iter().all(Option::is_some));
                m.push(t.elapsed());
                let t = Instant::now();
                assert_eq!(batch(ids.clone()).await.len(), ITEMS as usize);
                b.push(t.elapsed());
                let t = Instant::now();
                for &id in &ids {
                    single(id).await;
                }
                s.push(t.elapsed());
            }
            let (m, b, s) = (median(m), median(b), median(s));
            println!(
                "| {round} | {m:.1?} | {b:.1?} | {s:.1?} | {:.2}x | {:.1}x |",
                b.as_secs_f64() / m.as_secs_f64(),
                s.as_secs_f64() / m.as_secs_f64()
            );
        }
        let stats = batch_cache().stats();
        assert_eq!(stats.misses, ITEMS, "every measured batch item was a hit");
    });
}
