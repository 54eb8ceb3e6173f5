//! How every Redis connection of this crate is opened: the URL, credentials, database and TLS
//! options become one `redis::Client`, here and nowhere else. The backend's connection, the
//! garbage collector's subscription, the pub/sub synchronizer and the tracking connections all
//! derive their clients from the one this module builds, so they share its TLS settings.
//!
//! TLS (the `tls` feature) uses rustls with the *ring* crypto provider, chosen in this crate's
//! dependencies: ring builds with a C compiler alone (aws-lc-rs, rustls's default, also needs
//! cmake and takes several times longer to compile), and a build with exactly one provider
//! means no process-level provider is left for the application to install. When the
//! application's dependency graph enables a second provider too (so rustls cannot pick one by
//! itself), the first TLS client made here installs ring as the process default, unless the
//! application installed one before.

use redis::{ConnectionAddr, ConnectionInfo};

use crate::config::redact_url;
use crate::error::RedisCacheError;

/// Certificates for TLS connections, as PEM bytes (validated when set through the builder's
/// `validate`).
#[derive(Clone, Default)]
pub(crate) struct TlsOptions {
    /// Trust anchors replacing the system roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key for mutual TLS.
    pub(crate) client_pem: Option<(Vec<u8>, Vec<u8>)>,
}

/// The option or variable names an error should name for each TLS setting.
pub(crate) struct TlsNames {
    pub(crate) ca: &'static str,
    pub(crate) cert: &'static str,
    pub(crate) key: &'static str,
}

impl TlsNames {
    /// Names of the builder methods.
    pub(crate) const BUILDER: TlsNames = TlsNames {
        ca: "tls_ca_cert_pem",
        cert: "tls_client_cert_pem.cert",
        key: "tls_client_cert_pem.key",
    };
    /// Names of the environment variables.
    pub(crate) const ENV: TlsNames = TlsNames {
        ca: "REDIS_TLS_CA_CERT",
        cert: "REDIS_TLS_CLIENT_CERT",
        key: "REDIS_TLS_CLIENT_KEY",
    };
}

impl TlsOptions {
    pub(crate) fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_pem.is_some()
    }

    /// Checks that the PEM blocks parse; errors name the option (or variable).
    pub(crate) fn validate(&self, names: &TlsNames) -> Result<(), RedisCacheError> {
        if !self.is_set() {
            return Ok(());
        }
        let _ = names.key; // read only with the `tls` feature
        if !cfg!(feature = "tls") {
            let field = if self.ca_pem.is_some() {
                names.ca
            } else {
                names.cert
            };
            return Err(RedisCacheError::config(
                field,
                "TLS options need the `tls` feature of cache-redis",
            ));
        }
        #[cfg(feature = "tls")]
        {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer};
            let certs = |field: &str, pem: &[u8]| -> Result<(), RedisCacheError> {
                let mut n = 0;
                for cert in CertificateDer::pem_slice_iter(pem) {
                    cert.map_err(|e| {
                        RedisCacheError::config(field, format!("invalid PEM certificate: {e}"))
                    })?;
                    n += 1;
                }
                if n == 0 {
                    return Err(RedisCacheError::config(
                        field,
                        "holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                    ));
                }
                Ok(())
            };
            if let Some(ca) = &self.ca_pem {
                certs(names.ca, ca)?;
            }
            if let Some((cert, key)) = &self.client_pem {
                certs(names.cert, cert)?;
                // The parser's message never contains key material.
                PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                    RedisCacheError::config(names.key, format!("no valid PEM private key: {e}"))
                })?;
            }
        }
        Ok(())
    }
}

/// Whether `info` is a `rediss://` address.
fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// TLS certificates need a `rediss://` URL; `field` names the URL option or variable.
pub(crate) fn require_tls_url(
    tls: &TlsOptions,
    info: &ConnectionInfo,
    field: &str,
) -> Result<(), RedisCacheError> {
    if tls.is_set() && !is_tls(info) {
        return Err(RedisCacheError::config(
            field,
            "TLS certificates are configured but the URL is not `rediss://`",
        ));
    }
    Ok(())
}

/// Opens the client for `info` with `tls` applied. `field` names the URL option in errors.
pub(crate) fn open_client(
    info: ConnectionInfo,
    tls: &TlsOptions,
    field: &str,
) -> Result<redis::Client, RedisCacheError> {
    require_tls_url(tls, &info, field)?;
    if !is_tls(&info) {
        return redis::Client::open(info).map_err(|e| url_error(field, &info_text(&e)));
    }
    open_tls(info, tls, field)
}

#[cfg(feature = "tls")]
fn open_tls(
    info: ConnectionInfo,
    tls: &TlsOptions,
    field: &str,
) -> Result<redis::Client, RedisCacheError> {
    if let ConnectionAddr::TcpTls { insecure: true, .. } = info.addr() {
        warn_insecure_once();
    }
    ensure_crypto_provider();
    if !tls.is_set() {
        return redis::Client::open(info).map_err(|e| url_error(field, &info_text(&e)));
    }
    let certs = redis::TlsCertificates {
        client_tls: tls
            .client_pem
            .as_ref()
            .map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
        root_cert: tls.ca_pem.clone(),
    };
    redis::Client::build_with_tls(info, certs)
        .map_err(|e| RedisCacheError::config(field, format!("TLS setup failed: {}", info_text(&e))))
}

#[cfg(not(feature = "tls"))]
fn open_tls(
    _info: ConnectionInfo,
    _tls: &TlsOptions,
    field: &str,
) -> Result<redis::Client, RedisCacheError> {
    Err(RedisCacheError::config(
        field,
        "`rediss://` needs the `tls` feature of cache-redis",
    ))
}

/// The same server and TLS settings as `client`, with `settings` changed (protocol, ...).
pub(crate) fn derive_client(
    client: &redis::Client,
    change: impl FnOnce(redis::RedisConnectionInfo) -> redis::RedisConnectionInfo,
) -> redis::RedisResult<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = change(info.redis_settings().clone());
    // The address (with its parsed TLS parameters) is kept as it is.
    redis::Client::open(info.set_redis_settings(settings))
}

fn url_error(field: &str, reason: &str) -> RedisCacheError {
    RedisCacheError::config(field, reason.to_string())
}

/// A redis-rs error's text without any URL it might echo (URLs are redacted).
fn info_text(e: &redis::RedisError) -> String {
    redact_url(&e.to_string())
}

/// `rediss://...#insecure` turns certificate verification off: said once per process.
#[cfg(feature = "tls")]
fn warn_insecure_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED_INSECURE: AtomicBool = AtomicBool::new(false);
    if !WARNED_INSECURE.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cache-redis: a rediss:// URL with #insecure: the server's certificate is NOT verified \
             (anyone on the path can read and change cache traffic); configure the CA with \
             tls_ca_cert_pem / REDIS_TLS_CA_CERT instead"
        );
    }
}

#[cfg(feature = "tls")]
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err only when another thread installed one meanwhile: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
