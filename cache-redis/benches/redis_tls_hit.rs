//! The Redis hit over TLS against a raw redis-rs TLS `GET` on the same server (a TLS-only
//! redis-server started here with certificates made by test-support): paired medians (a raw
//! `GET` and a backend hit alternate, so load drift on a shared machine hits both alike), for a
//! hit awaited alone and for 64 concurrent tasks.
//!
//! Run: `cargo bench -p cache-redis --features tls --bench redis_tls_hit`

use std::sync::Arc;

use cache_core::{value, Backend, EntryOptions, Key, Lookup};
use cache_redis::RedisBackend;
use test_support::tls::Certs;
use test_support::{require_redis_server, RedisServer};

#[path = "paired/mod.rs"]
mod paired;

const TASKS: usize = 64;
const ROUNDS: usize = 3;

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
        let (raw_med, hit_med) =
            rt.block_on(paired::latency(&raw, &raw_key, &*shared, &key, &[], 20_000));
        println!(
            "round {round}: TLS hit latency: raw GET median {raw_med:?}, backend hit median {hit_med:?}, ratio {:.3}",
            hit_med.as_secs_f64() / raw_med.as_secs_f64()
        );
        let (raw_tp, hit_tp) = rt.block_on(paired::throughput(
            &raw,
            &raw_key,
            &shared,
            &(key.clone(), Arc::from(Vec::<String>::new())),
            TASKS,
            500,
            5,
        ));
        println!(
            "round {round}: TLS throughput, {TASKS} tasks: raw {raw_tp:.0} GET/s, backend {hit_tp:.0} hits/s, ratio {:.3}",
            hit_tp / raw_tp
        );
    }
}
