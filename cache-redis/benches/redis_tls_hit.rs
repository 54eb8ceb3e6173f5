//! The Redis hit over TLS against a raw redis-rs TLS `GET` on the same server (a TLS-only
//! redis-server started here with certificates made by test-support): paired medians (a raw
//! `GET` and a backend hit alternate, so load drift on a shared machine hits both alike), for a
//! hit awaited alone and for 64 concurrent tasks.
//!
//! Run: `cargo bench -p cache-redis --features tls --bench redis_tls_hit`

use std::sync::Arc;
use std::time::{Duration, Instant};

use cache_core::{value, Backend, EntryOptions, Key, Lookup};
use cache_redis::RedisBackend;
use test_support::tls::Certs;
use test_support::{require_redis_server, RedisServer};

const TASKS: usize = 64;
const ROUNDS: usize = 3;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let Some(bin) = require_redis_server() else {
        return;
    };
    let certs = Certs::generate().expect("openssl");
    let server = RedisServer::start_tls(&bin, &certs, false).expect("TLS redis-server");
    let ca = Certs::read(&certs.ca_cert);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = RedisBackend::builder()
        .url(server.url())
        .tls_ca_cert_pem(ca.clone())
        .prefix("b")
        .gc(false)
        .connect_blocking()
        .unwrap();
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());
    let key = Key::from_text("bench::tls_hit(1)");
    let raw_key = backend.entry_key(key.text());
    let raw_client = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca),
        },
    )
    .unwrap();
    let raw = rt.block_on(async {
        let Lookup::Miss(lease) = shared.get(&key).await.unwrap() else {
            panic!("a fresh server")
        };
        shared
            .set(
                &key,
                value::share("v".repeat(100)),
                &EntryOptions::new(),
                lease,
            )
            .await
            .unwrap();
        raw_client.get_multiplexed_async_connection().await.unwrap()
    });

    for round in 1..=ROUNDS {
        let (raw_med, hit_med) = rt.block_on(async {
            let mut con = raw.clone();
            let (mut r, mut h) = (Vec::new(), Vec::new());
            for _ in 0..20_000 {
                let t = Instant::now();
                let v: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&raw_key)
                    .query_async(&mut con)
                    .await
                    .unwrap();
                r.push(t.elapsed());
                assert!(v.is_some());
                let t = Instant::now();
                let Lookup::Hit(hit) = shared.get(&key).await.unwrap() else {
                    panic!("miss")
                };
                assert!(hit.into_typed::<String>().is_ok());
                h.push(t.elapsed());
            }
            (median(r), median(h))
        });
        println!(
            "round {round}: TLS hit latency: raw GET median {raw_med:?}, backend hit median {hit_med:?}, ratio {:.3}",
            hit_med.as_secs_f64() / raw_med.as_secs_f64()
        );
        let (raw_tp, hit_tp) = rt.block_on(async {
            let (mut r, mut h) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..5 {
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (mut con, k) = (raw.clone(), raw_key.clone());
                        tokio::spawn(async move {
                            for _ in 0..500 {
                                let v: Option<Vec<u8>> = redis::cmd("GET")
                                    .arg(&k)
                                    .query_async(&mut con)
                                    .await
                                    .unwrap();
                                assert!(v.is_some());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                r += start.elapsed();
                let start = Instant::now();
                let tasks: Vec<_> = (0..TASKS)
                    .map(|_| {
                        let (b, k) = (shared.clone(), key.clone());
                        tokio::spawn(async move {
                            for _ in 0..500 {
                                let Lookup::Hit(h) = b.get(&k).await.unwrap() else {
                                    panic!("miss")
                                };
                                assert!(h.into_typed::<String>().is_ok());
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
                h += start.elapsed();
            }
            let ops = (5 * TASKS * 500) as f64;
            (ops / r.as_secs_f64(), ops / h.as_secs_f64())
        });
        println!(
            "round {round}: TLS throughput, {TASKS} tasks: raw {raw_tp:.0} GET/s, backend {hit_tp:.0} hits/s, ratio {:.3}",
            hit_tp / raw_tp
        );
    }
}
