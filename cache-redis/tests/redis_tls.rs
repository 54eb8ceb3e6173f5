//! TLS against real `redis-server` processes speaking TLS only, with certificates the test
//! generates (a CA, a server certificate for 127.0.0.1, a client certificate, a second CA):
//! verified connections, mutual TLS, and the refused cases (wrong CA, missing client
//! certificate, `rediss://` to a plain port, `redis://` to a TLS port), each a counted error
//! while the cached fn still returns its value. Any panic in any thread fails the tests.
#![cfg(feature = "tls")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

use cache_core::{cached, registry, Backend, MemoryBackend};
use cache_redis::{
    Coherence, LayeredBackend, RedisBackend, RedisBackendBuilder, SyncOptions, SyncedBackend,
    TrackingMode,
};
use test_support::tls::Certs;
use test_support::{require_redis_server, wait_until, RedisServer};

const DEADLINE: Duration = Duration::from_secs(5);

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts every panic of every thread of this test binary (the default hook still prints it).
fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
    });
}

fn no_panics() {
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a thread panicked (see the output above)"
    );
}

fn tls_server(auth_clients: bool) -> Option<(Certs, RedisServer)> {
    watch_panics();
    let bin = require_redis_server()?;
    let certs = Certs::generate().expect("openssl makes the test certificates");
    let server = RedisServer::start_tls(&bin, &certs, auth_clients).expect("TLS redis-server");
    Some((certs, server))
}

fn builder(url: &str) -> RedisBackendBuilder {
    RedisBackend::builder()
        .url(url)
        .prefix("tls")
        .op_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(1500))
}

fn with_ca(url: &str, certs: &Certs) -> RedisBackendBuilder {
    builder(url).tls_ca_cert_pem(Certs::read(&certs.ca_cert))
}

fn with_client_cert(b: RedisBackendBuilder, certs: &Certs) -> RedisBackendBuilder {
    b.tls_client_cert_pem(
        Certs::read(&certs.client_cert),
        Certs::read(&certs.client_key),
    )
}

#[cached(ttl = "1m", skip(runs))]
async fn square(runs: &AtomicUsize, i: u64) -> u64 {
    runs.fetch_add(1, Ordering::SeqCst);
    i * i
}

/// Two calls of the cached fn on `backend`: the first computes; the second must be a hit
/// when `cached` (the body ran once), else the body runs again (fail-open).
async fn two_calls(backend: Arc<dyn Backend>, i: u64, cached: bool) {
    let runs = AtomicUsize::new(0);
    for _ in 0..2 {
        let v = registry::with_backend(backend.clone(), square(&runs, i)).await;
        assert_eq!(v, i * i, "the cached fn returns its value");
    }
    let expected = if cached { 1 } else { 2 };
    assert_eq!(runs.load(Ordering::SeqCst), expected, "body runs");
}

/// A raw redis-rs TLS connection trusting the test CA, to look at the server directly.
fn raw(server: &RedisServer, certs: &Certs) -> redis::Connection {
    let client = redis::Client::build_with_tls(
        server.url(),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(Certs::read(&certs.ca_cert)),
        },
    )
    .unwrap();
    client.get_connection_with_timeout(DEADLINE).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verified_tls_round_trips_a_cached_fn() {
    let Some((certs, server)) = tls_server(false) else {
        return;
    };
    let backend = with_ca(&server.url(), &certs).connect().await.unwrap();
    let backend = Arc::new(backend);
    two_calls(backend.clone(), 7, true).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tls:*")
        .query(&mut raw(&server, &certs))
        .unwrap();
    assert!(!keys.is_empty(), "the entry is in the TLS server");
    assert_eq!(backend.redis_stats().connect_failures, 0);
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_round_trips_and_a_missing_client_certificate_is_refused() {
    let Some((certs, server)) = tls_server(true) else {
        return;
    };
    let ok = with_client_cert(with_ca(&server.url(), &certs), &certs)
        .connect()
        .await
        .unwrap();
    two_calls(Arc::new(ok), 8, true).await;

    // No client certificate: the server refuses; a counted error, the fn still answers.
    let err = with_ca(&server.url(), &certs).connect().await.unwrap_err();
    eprintln!("no client certificate: {err}");
    let refused = Arc::new(with_ca(&server.url(), &certs).build().unwrap());
    two_calls(refused.clone(), 9, false).await;
    assert!(wait_until(DEADLINE, || refused
        .redis_stats()
        .connect_failures
        >= 1));
    assert!(refused.last_connect_error().is_some());
    assert!(!refused.is_connected());
    no_panics();
}

/// `backend` never connects: its failures are counted, its reason says why, and the cached
/// fn keeps answering (uncached).
async fn refused(backend: RedisBackend, what: &str) -> String {
    let backend = Arc::new(backend);
    two_calls(backend.clone(), 11, false).await;
    assert!(
        wait_until(DEADLINE, || backend.redis_stats().connect_failures >= 1),
        "{what}: the failure is counted"
    );
    let reason = backend.last_connect_error().expect("a reason");
    eprintln!("{what}: {reason}");
    assert!(!backend.is_connected(), "{what}: never connected");
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_ca_is_refused_with_a_clear_counted_error() {
    let Some((certs, server)) = tls_server(false) else {
        return;
    };
    let wrong = || builder(&server.url()).tls_ca_cert_pem(Certs::read(&certs.other_ca_cert));
    let err = wrong().connect().await.unwrap_err().to_string();
    assert!(err.contains("certificate"), "the error says why: {err}");
    let reason = refused(wrong().build().unwrap(), "wrong CA").await;
    assert!(reason.contains("certificate"), "{reason}");
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused() {
    watch_panics();
    let Some(bin) = require_redis_server() else {
        return;
    };
    let certs = Certs::generate().expect("openssl makes the test certificates");
    let server = RedisServer::start_tls_with(
        &bin,
        &certs,
        &certs.expired_server_cert,
        &certs.expired_server_key,
        false,
    )
    .expect("TLS redis-server");
    // valid for 0 days: expired once the second it was made has passed
    let expired_at = certs.made_at + Duration::from_secs(2);
    assert!(wait_until(Duration::from_secs(5), || {
        std::time::SystemTime::now() > expired_at
    }));
    let reason = refused(with_ca(&server.url(), &certs).build().unwrap(), "expired").await;
    assert!(reason.contains("certificate"), "{reason}");
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_roots_do_not_trust_a_private_ca() {
    // Verification is on by default: without the CA, the system roots are used, and they do
    // not know the test CA.
    let Some((_certs, server)) = tls_server(false) else {
        return;
    };
    let reason = refused(builder(&server.url()).build().unwrap(), "system roots").await;
    assert!(reason.contains("certificate"), "{reason}");
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_url_connects_without_verification() {
    let Some((_certs, server)) = tls_server(false) else {
        return;
    };
    let url = format!("rediss://127.0.0.1:{}/#insecure", server.port());
    let backend = builder(&url).connect().await.unwrap();
    two_calls(Arc::new(backend), 12, true).await;
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_to_a_plain_port_and_redis_to_a_tls_port_are_counted_errors() {
    let Some((certs, tls)) = tls_server(false) else {
        return;
    };
    let plain = RedisServer::start(&require_redis_server().unwrap()).unwrap();
    let rediss_to_plain = format!("rediss://127.0.0.1:{}/", plain.port());
    let b = builder(&rediss_to_plain)
        .tls_ca_cert_pem(Certs::read(&certs.ca_cert))
        .build()
        .unwrap();
    refused(b, "rediss:// to a plain port").await;
    let redis_to_tls = format!("redis://127.0.0.1:{}/", tls.port());
    refused(
        builder(&redis_to_tls).build().unwrap(),
        "redis:// to a TLS port",
    )
    .await;
    no_panics();
}

#[test]
fn the_synced_backend_speaks_tls() {
    let Some((certs, server)) = tls_server(false) else {
        return;
    };
    let node = || {
        SyncedBackend::builder(MemoryBackend::new())
            .url(&server.url())
            .tls_ca_cert_pem(Certs::read(&certs.ca_cert))
            .channel("t:tls-sync")
            .build()
            .unwrap()
    };
    let (a, b) = (node(), node());
    assert!(a.synchronizer().wait_subscribed(DEADLINE));
    assert!(b.synchronizer().wait_subscribed(DEADLINE));
    let key = cache_core::Key::from_text("k");
    let opts = cache_core::EntryOptions::new().depends_on("d");
    b.local()
        .set_blocking(
            &key,
            cache_core::value::share(1u64),
            &opts,
            cache_core::Lease::UNCONDITIONAL,
        )
        .unwrap();
    a.invalidate_blocking("d").unwrap();
    assert!(
        wait_until(DEADLINE, || matches!(
            b.local().get_blocking(&key),
            Ok(cache_core::Lookup::Miss(_))
        )),
        "an invalidation published over TLS reaches the other node"
    );
    no_panics();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layered_backend_speaks_tls_with_tracking_and_pub_sub() {
    let Some((certs, server)) = tls_server(true) else {
        return;
    };
    // Mutual TLS for every connection of the layered backend: L2, tracking, pub/sub.
    for (i, coherence) in [
        (13, Coherence::Tracking(TrackingMode::Default)),
        (14, Coherence::PubSub(SyncOptions::new("t:tls-layered"))),
    ] {
        let l2 = with_client_cert(with_ca(&server.url(), &certs), &certs)
            .connect()
            .await
            .unwrap();
        let b = LayeredBackend::builder(l2)
            .coherence(coherence)
            .ping_interval(Duration::from_millis(100))
            .build()
            .unwrap();
        assert!(
            b.wait_coherent(DEADLINE),
            "tracking / subscription over mTLS"
        );
        two_calls(Arc::new(b), i, true).await;
    }
    no_panics();
}
