//! Configuration of a [`RedisBackend`](crate::RedisBackend): the builder, `from_env`, validation.

use std::fmt;
use std::time::Duration;

use crate::client::connect::{TlsNames, TlsOptions};
use crate::error::RedisCacheError;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "cache";
/// Default operation timeout: past it, the cached fn runs without the cache.
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_millis(250);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default payload size limit (bytes of the stored envelope).
pub const DEFAULT_MAX_PAYLOAD: usize = 8 << 20;
/// Default compression threshold: payloads longer than this are LZ4-compressed.
pub const DEFAULT_COMPRESS_OVER: usize = 4096;
/// Default life of a dependency's version key (protocol version 2) after its creation or its
/// last invalidation, unless an entry stored with it lives longer.
pub const DEFAULT_VERSION_TTL: Duration = Duration::from_secs(24 * 3600);

/// Configures a [`RedisBackend`](crate::RedisBackend); made by
/// [`RedisBackend::builder`](crate::RedisBackend::builder) or [`RedisBackendBuilder::from_env`].
///
/// Every option has a default; [`validate`](Self::validate) (called by `build`) reports the first
/// invalid option by name. `Debug` output never shows a password.
///
/// ```
/// use std::time::Duration;
/// use cache_redis::RedisBackend;
///
/// let builder = RedisBackend::builder()
///     .url("redis://app:s3cret@127.0.0.1:6379/2")
///     .prefix("shop")
///     .op_timeout(Duration::from_millis(100))
///     .max_payload(1 << 20)
///     .compress_over(2048);
/// builder.validate().unwrap();
/// assert!(!format!("{builder:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisBackendBuilder {
    pub(crate) url: String,
    /// Whether [`url`](Self::url) was called (it and `cluster_urls` exclude each other).
    url_set: bool,
    pub(crate) cluster_urls: Vec<String>,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: Option<i64>,
    pub(crate) prefix: String,
    pub(crate) connect_timeout: Duration,
    pub(crate) op_timeout: Duration,
    pub(crate) max_payload: usize,
    pub(crate) compress_over: usize,
    pub(crate) dependencies: bool,
    pub(crate) lock_ttl: Option<Duration>,
    pub(crate) breaker_failures: u32,
    pub(crate) breaker_cooldown: Duration,
    pub(crate) gc: bool,
    pub(crate) notifications: bool,
    pub(crate) sweep_interval: Duration,
    pub(crate) sweep_batch: usize,
    pub(crate) retry_limit: Duration,
    pub(crate) tls: TlsOptions,
    pub(crate) write_claim_after: Duration,
    pub(crate) write_capacity: u64,
    pub(crate) protocol: u8,
    pub(crate) version_ttl: Duration,
    pub(crate) invalidation_replicas: u32,
}

impl Default for RedisBackendBuilder {
    fn default() -> Self {
        RedisBackendBuilder {
            url: "redis://127.0.0.1:6379/".into(),
            url_set: false,
            cluster_urls: Vec::new(),
            username: None,
            password: None,
            db: None,
            prefix: DEFAULT_PREFIX.into(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            op_timeout: DEFAULT_OP_TIMEOUT,
            max_payload: DEFAULT_MAX_PAYLOAD,
            compress_over: DEFAULT_COMPRESS_OVER,
            dependencies: true,
            lock_ttl: None,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(1),
            gc: true,
            notifications: true,
            sweep_interval: Duration::from_secs(60),
            sweep_batch: 200,
            retry_limit: Duration::from_secs(3600),
            write_claim_after: Duration::from_secs(30),
            write_capacity: 1_000_000,
            tls: TlsOptions::default(),
            protocol: 2,
            version_ttl: DEFAULT_VERSION_TTL,
            invalidation_replicas: 0,
        }
    }
}

impl fmt::Debug for RedisBackendBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackendBuilder")
            .field("url", &redact_url(&self.url))
            .field(
                "cluster_urls",
                &self
                    .cluster_urls
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>(),
            )
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("db", &self.db)
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("op_timeout", &self.op_timeout)
            .field("max_payload", &self.max_payload)
            .field("compress_over", &self.compress_over)
            .field("dependencies", &self.dependencies)
            .field("lock_ttl", &self.lock_ttl)
            .field("gc", &self.gc)
            .field("protocol", &self.protocol)
            .field("tls_ca_cert", &self.tls.ca_pem.as_ref().map(|_| "<set>"))
            .field(
                "tls_client_cert",
                &self.tls.client_pem.as_ref().map(|_| "<set>"),
            )
            .finish_non_exhaustive()
    }
}

/// The URL with its password (if any) replaced by `***`.
///
/// ```
/// assert_eq!(
///     cache_redis::config::redact_url("redis://u:pw@h:1/0"),
///     "redis://u:***@h:1/0"
/// );
/// assert_eq!(cache_redis::config::redact_url("redis://h/"), "redis://h/");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let user = match userinfo.find(':') {
        Some(c) => &userinfo[..c],
        None => return url.to_string(),
    };
    format!("{}{}:***{}", &url[..scheme_end + 3], user, &rest[at..])
}

fn no_connection(limit: Duration, last: Option<String>) -> String {
    match last {
        Some(why) => format!("no connection within {limit:?}: {why}"),
        None => format!("no connection within {limit:?}"),
    }
}

fn positive(field: &str, d: Duration) -> Result<(), RedisCacheError> {
    if d.is_zero() {
        Err(RedisCacheError::config(field, "must be greater than zero"))
    } else {
        Ok(())
    }
}

impl RedisBackendBuilder {
    /// The server URL: `redis://[user[:password]@]host[:port][/db]`, `rediss://...` (TLS, needs
    /// the `tls` feature) or `redis+unix:///path`. Default `redis://127.0.0.1:6379/`.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = url.into();
        self.url_set = true;
        self
    }

    /// Runs on a Redis Cluster reached through these seed nodes (`redis://` or `rediss://`
    /// URLs, user and password as for one server; the client discovers the other nodes,
    /// follows `MOVED`/`ASK` redirections and refreshes the slot map itself). Excludes
    /// [`url`](Self::url). A cluster needs storage protocol 2 (the default) and database 0.
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder()
    ///     .cluster_urls(["redis://127.0.0.1:7000", "redis://127.0.0.1:7001"]);
    /// assert!(b.validate().is_ok());
    /// let both = cache_redis::RedisBackend::builder()
    ///     .url("redis://127.0.0.1:6379")
    ///     .cluster_urls(["redis://127.0.0.1:7000"]);
    /// assert!(both.validate().unwrap_err().to_string().contains("cluster_urls"));
    /// ```
    pub fn cluster_urls<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the backend runs on a Redis Cluster ([`cluster_urls`](Self::cluster_urls)).
    pub(crate) fn is_cluster(&self) -> bool {
        !self.cluster_urls.is_empty()
    }

    /// The URL logs name: the server's, or the seed nodes' (passwords redacted).
    pub(crate) fn redacted_target(&self) -> String {
        if self.is_cluster() {
            let seeds: Vec<String> = self.cluster_urls.iter().map(|u| redact_url(u)).collect();
            format!("cluster [{}]", seeds.join(", "))
        } else {
            redact_url(&self.url)
        }
    }

    /// The ACL user name (overrides the URL's).
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password (overrides the URL's). Never logged nor shown by `Debug`.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Trust anchors for `rediss://` connections, as PEM (one or more `CERTIFICATE` blocks):
    /// the server's certificate must chain to one of them. Without it the system's roots are
    /// used. Needs the `tls` feature; `validate` reports a PEM that does not parse.
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/redis/ca.pem").unwrap();
    /// let builder = cache_redis::RedisBackend::builder()
    ///     .url("rediss://cache.internal:6380/")
    ///     .tls_ca_cert_pem(ca);
    /// ```
    pub fn tls_ca_cert_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.ca_pem = Some(pem.into());
        self
    }

    /// A client certificate (PEM chain) and its private key (PEM) for mutual TLS, for servers
    /// started with `tls-auth-clients yes`. Needs the `tls` feature. The key is never logged.
    ///
    /// ```no_run
    /// let builder = cache_redis::RedisBackend::builder()
    ///     .url("rediss://cache.internal:6380/")
    ///     .tls_client_cert_pem(
    ///         std::fs::read("client.pem").unwrap(),
    ///         std::fs::read("client.key").unwrap(),
    ///     );
    /// ```
    pub fn tls_client_cert_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client_pem = Some((cert.into(), key.into()));
        self
    }

    /// The database number (overrides the URL's).
    pub fn db(mut self, db: i64) -> Self {
        self.db = Some(db);
        self
    }

    /// The prefix of every key this backend writes (namespaces applications sharing a server):
    /// ASCII letters, digits, `_`, `-`, `.` and `:`; default `cache`. Two applications should not
    /// use prefixes where one is `other` and the other `other:more`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long the first connection and every reconnection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one cache operation may take; past it the operation fails (the cached fn runs
    /// and its value is returned).
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.op_timeout = timeout;
        self
    }

    /// The largest stored envelope, in bytes; larger values are not stored (and the key's old
    /// entry is invalidated). Also bounds the size a compressed payload may expand to.
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Payloads longer than this are LZ4-compressed (when that makes them smaller).
    /// `usize::MAX` disables compression.
    pub fn compress_over(mut self, bytes: usize) -> Self {
        self.compress_over = bytes;
        self
    }

    /// Whether dependencies are recorded (default `true`). Without them, `invalidate` of a
    /// dependency only affects the entry whose key text it is.
    pub fn dependencies(mut self, on: bool) -> Self {
        self.dependencies = on;
        self
    }

    /// Enables distributed single flight: a miss takes a Redis lock (`SET NX PX`) held at most
    /// `ttl`, so concurrent misses across processes compute once; the others wait for the value.
    /// A holder that dies frees the key when the lock expires.
    pub fn distributed_lock(mut self, ttl: Duration) -> Self {
        self.lock_ttl = Some(ttl);
        self
    }

    /// The circuit breaker: after `failures` consecutive outages Redis is skipped for
    /// `cooldown`, then probed again. Default 5 failures, 1 s.
    pub fn circuit_breaker(mut self, failures: u32, cooldown: Duration) -> Self {
        self.breaker_failures = failures;
        self.breaker_cooldown = cooldown;
        self
    }

    /// Whether the dependency garbage collector runs (default `true`).
    pub fn gc(mut self, on: bool) -> Self {
        self.gc = on;
        self
    }

    /// Whether the backend turns on keyspace notifications for expired and evicted keys with
    /// `CONFIG SET notify-keyspace-events` (default `true`). When off or refused, enable them
    /// yourself (`notify-keyspace-events Exe`) or rely on the periodic sweep.
    pub fn keyspace_notifications(mut self, on: bool) -> Self {
        self.notifications = on;
        self
    }

    /// The dependency sweep: every `interval`, one instance scans `batch` keys (SCAN COUNT) and
    /// repairs dependency references of entries that no longer exist. Default 60 s, 200.
    pub fn sweep(mut self, interval: Duration, batch: usize) -> Self {
        self.sweep_interval = interval;
        self.sweep_batch = batch;
        self
    }

    /// How long a failed invalidation is retried when no entry of this backend carries a ttl
    /// (otherwise: until the longest ttl used has passed). Default one hour.
    pub fn invalidation_retry_limit(mut self, limit: Duration) -> Self {
        self.retry_limit = limit;
        self
    }

    /// The durable write-behind queue (`#[write_behind]`, Redis Streams): a write another
    /// process took and did not finish within `claim_after` (it crashed) is taken over (default
    /// 30 s; keep it above `flush_after` plus the longest body); at most `capacity` writes wait
    /// per writer fn before new ones run inline (default 1,000,000).
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = cache_redis::RedisBackend::builder().write_queue(Duration::from_secs(10), 10_000);
    /// ```
    pub fn write_queue(mut self, claim_after: Duration, capacity: u64) -> Self {
        self.write_claim_after = claim_after;
        self.write_capacity = capacity;
        self
    }

    /// The storage protocol: `2` (the default: entries carry the versions of what they depend
    /// on and are validated on read: invalidation is O(1), correct under every eviction
    /// policy, every script touches one hash slot) or `1` (reverse dependency indexes walked on
    /// invalidation, see the README; what this crate wrote before version 2). The two keep
    /// different data under the same prefix and must not share one: nodes of a deployment that
    /// ran version 1 keep `protocol(1)` until every node is upgraded, or move to version 2
    /// under a new prefix.
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder().prefix("shop2").protocol(2);
    /// assert!(b.validate().is_ok());
    /// assert!(cache_redis::RedisBackend::builder().protocol(3).validate().is_err());
    /// ```
    pub fn protocol(mut self, version: u8) -> Self {
        self.protocol = version;
        self
    }

    /// How long a dependency's version key (protocol version 2) lives after its creation or
    /// its last invalidation when no entry stored with it asks for longer (default one day). An
    /// entry whose dependency's version key expired reads as a miss and is filled again.
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = cache_redis::RedisBackend::builder().version_ttl(Duration::from_secs(3600));
    /// assert!(b.validate().is_ok());
    /// ```
    pub fn version_ttl(mut self, ttl: Duration) -> Self {
        self.version_ttl = ttl;
        self
    }

    /// Protocol 2: an invalidation is acknowledged only once `n` replicas of each master it
    /// wrote to have it (`WAIT n`, at most half the op timeout; fewer is a failed invalidation,
    /// queued and retried). A failover after a master crashed then cannot lose an acknowledged
    /// invalidation to a replica that never received it (with one replica per master, or when
    /// the failover promotes the most up-to-date replica, as Redis Cluster does). Default 0:
    /// acknowledged by the master alone (the backend still notices the new master and clears,
    /// see the README).
    ///
    /// ```
    /// let b = cache_redis::RedisBackend::builder().invalidation_replicas(1);
    /// assert!(b.validate().is_ok());
    /// ```
    pub fn invalidation_replicas(mut self, n: u32) -> Self {
        self.invalidation_replicas = n;
        self
    }

    /// Reads the configuration from environment variables:
    ///
    /// | variable | option |
    /// |---|---|
    /// | `REDIS_URL` (this or `REDIS_CLUSTER_URLS`) | [`url`](Self::url) |
    /// | `REDIS_CLUSTER_URLS` | comma-separated seed node URLs: [`cluster_urls`](Self::cluster_urls) |
    /// | `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_DB` | [`username`](Self::username), [`password`](Self::password), [`db`](Self::db) |
    /// | `CACHE_REDIS_PREFIX` | [`prefix`](Self::prefix) |
    /// | `CACHE_REDIS_OP_TIMEOUT_MS`, `CACHE_REDIS_CONNECT_TIMEOUT_MS` | timeouts |
    /// | `CACHE_REDIS_MAX_PAYLOAD`, `CACHE_REDIS_COMPRESS_OVER` | sizes in bytes |
    /// | `CACHE_REDIS_DEPENDENCIES`, `CACHE_REDIS_GC` | `true` / `false` |
    /// | `CACHE_REDIS_LOCK_TTL_MS` | [`distributed_lock`](Self::distributed_lock) |
    /// | `CACHE_REDIS_PROTOCOL` | [`protocol`](Self::protocol) (`1` or `2`) |
    /// | `CACHE_REDIS_INVALIDATION_REPLICAS` | [`invalidation_replicas`](Self::invalidation_replicas) |
    /// | `REDIS_TLS_CA_CERT` | path of a PEM file: [`tls_ca_cert_pem`](Self::tls_ca_cert_pem) |
    /// | `REDIS_TLS_CLIENT_CERT`, `REDIS_TLS_CLIENT_KEY` | paths of PEM files (both or neither): [`tls_client_cert_pem`](Self::tls_client_cert_pem) |
    ///
    /// Errors name the variable at fault.
    ///
    /// ```no_run
    /// let backend = cache_redis::RedisBackendBuilder::from_env()?.build()?;
    /// # Ok::<(), cache_redis::RedisCacheError>(())
    /// ```
    pub fn from_env() -> Result<Self, RedisCacheError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `get`.
    ///
    /// ```
    /// let vars = |name: &str| match name {
    ///     "REDIS_URL" => Some("redis://127.0.0.1:7000/".to_string()),
    ///     "CACHE_REDIS_OP_TIMEOUT_MS" => Some("soon".to_string()),
    ///     _ => None,
    /// };
    /// let err = cache_redis::RedisBackendBuilder::from_vars(vars).unwrap_err();
    /// assert!(err.to_string().contains("CACHE_REDIS_OP_TIMEOUT_MS"));
    /// ```
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, RedisCacheError> {
        fn num<T: std::str::FromStr>(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, RedisCacheError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse().map(Some).map_err(|_| {
                    RedisCacheError::config(name, format!("`{v}` is not a valid number"))
                }),
            }
        }
        fn flag(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<bool>, RedisCacheError> {
            match get(name).as_deref().map(str::trim) {
                None => Ok(None),
                Some("1" | "true" | "yes" | "on") => Ok(Some(true)),
                Some("0" | "false" | "no" | "off") => Ok(Some(false)),
                Some(v) => Err(RedisCacheError::config(
                    name,
                    format!("`{v}` is not true or false"),
                )),
            }
        }
        fn pem_file(
            get: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<Vec<u8>>, RedisCacheError> {
            match get(name) {
                None => Ok(None),
                Some(path) => std::fs::read(path.trim()).map(Some).map_err(|e| {
                    RedisCacheError::config(name, format!("cannot read `{}`: {e}", path.trim()))
                }),
            }
        }
        let mut b = match (get("REDIS_URL"), get("REDIS_CLUSTER_URLS")) {
            (Some(_), Some(_)) => {
                return Err(RedisCacheError::config(
                    "REDIS_CLUSTER_URLS",
                    "is set and so is REDIS_URL: set one (REDIS_URL for one server, REDIS_CLUSTER_URLS for a cluster)",
                ))
            }
            (Some(url), None) => RedisBackendBuilder::default().url(url),
            (None, Some(urls)) => {
                let seeds: Vec<String> = urls
                    .split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .map(String::from)
                    .collect();
                if seeds.is_empty() {
                    return Err(RedisCacheError::config(
                        "REDIS_CLUSTER_URLS",
                        "names no URL (comma-separated seed node URLs)",
                    ));
                }
                RedisBackendBuilder::default().cluster_urls(seeds)
            }
            (None, None) => {
                return Err(RedisCacheError::config(
                    "REDIS_URL",
                    "is not set (nor REDIS_CLUSTER_URLS, for a cluster)",
                ))
            }
        };
        if let Some(u) = get("REDIS_USERNAME") {
            b = b.username(u);
        }
        if let Some(p) = get("REDIS_PASSWORD") {
            b = b.password(p);
        }
        if let Some(db) = num(&get, "REDIS_DB")? {
            b = b.db(db);
        }
        if let Some(p) = get("CACHE_REDIS_PREFIX") {
            b = b.prefix(p);
        }
        if let Some(ms) = num::<u64>(&get, "CACHE_REDIS_OP_TIMEOUT_MS")? {
            b = b.op_timeout(Duration::from_millis(ms));
        }
        if let Some(ms) = num::<u64>(&get, "CACHE_REDIS_CONNECT_TIMEOUT_MS")? {
            b = b.connect_timeout(Duration::from_millis(ms));
        }
        if let Some(n) = num(&get, "CACHE_REDIS_MAX_PAYLOAD")? {
            b = b.max_payload(n);
        }
        if let Some(n) = num(&get, "CACHE_REDIS_COMPRESS_OVER")? {
            b = b.compress_over(n);
        }
        if let Some(on) = flag(&get, "CACHE_REDIS_DEPENDENCIES")? {
            b = b.dependencies(on);
        }
        if let Some(on) = flag(&get, "CACHE_REDIS_GC")? {
            b = b.gc(on);
        }
        if let Some(ms) = num::<u64>(&get, "CACHE_REDIS_LOCK_TTL_MS")? {
            b = b.distributed_lock(Duration::from_millis(ms));
        }
        if let Some(v) = num(&get, "CACHE_REDIS_PROTOCOL")? {
            b = b.protocol(v);
        }
        if let Some(n) = num(&get, "CACHE_REDIS_INVALIDATION_REPLICAS")? {
            b = b.invalidation_replicas(n);
        }
        if let Some(ca) = pem_file(&get, "REDIS_TLS_CA_CERT")? {
            b = b.tls_ca_cert_pem(ca);
        }
        match (
            pem_file(&get, "REDIS_TLS_CLIENT_CERT")?,
            pem_file(&get, "REDIS_TLS_CLIENT_KEY")?,
        ) {
            (None, None) => {}
            (Some(cert), Some(key)) => b = b.tls_client_cert_pem(cert, key),
            (Some(_), None) => {
                return Err(RedisCacheError::config(
                    "REDIS_TLS_CLIENT_KEY",
                    "is not set but REDIS_TLS_CLIENT_CERT is (mutual TLS needs both)",
                ))
            }
            (None, Some(_)) => {
                return Err(RedisCacheError::config(
                    "REDIS_TLS_CLIENT_CERT",
                    "is not set but REDIS_TLS_CLIENT_KEY is (mutual TLS needs both)",
                ))
            }
        }
        b.validate_named(true)?;
        Ok(b)
    }

    /// Checks every option; the error names the first invalid one.
    ///
    /// ```
    /// let err = cache_redis::RedisBackend::builder().url("http://x").validate().unwrap_err();
    /// assert!(err.to_string().contains("`url`"));
    /// ```
    pub fn validate(&self) -> Result<(), RedisCacheError> {
        self.validate_named(false)
    }

    fn validate_named(&self, env: bool) -> Result<(), RedisCacheError> {
        let name = |builder: &'static str, var: &'static str| if env { var } else { builder };
        let info = self.connection_info().map_err(|e| match e {
            RedisCacheError::Config { field, reason } if env && field == "url" => {
                RedisCacheError::config("REDIS_URL", reason)
            }
            other => other,
        })?;
        if self.prefix.is_empty()
            || self.prefix.len() > 64
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(RedisCacheError::config(
                name("prefix", "CACHE_REDIS_PREFIX"),
                format!(
                    "`{}` must be 1 to 64 ASCII letters, digits, `_`, `-`, `.` or `:`",
                    self.prefix
                ),
            ));
        }
        positive(
            name("op_timeout", "CACHE_REDIS_OP_TIMEOUT_MS"),
            self.op_timeout,
        )?;
        positive(
            name("connect_timeout", "CACHE_REDIS_CONNECT_TIMEOUT_MS"),
            self.connect_timeout,
        )?;
        if self.max_payload < 16 || self.max_payload > 512 << 20 {
            return Err(RedisCacheError::config(
                name("max_payload", "CACHE_REDIS_MAX_PAYLOAD"),
                "must be between 16 bytes and 512 MiB (Redis's string limit)",
            ));
        }
        if let Some(ttl) = self.lock_ttl {
            positive(name("distributed_lock", "CACHE_REDIS_LOCK_TTL_MS"), ttl)?;
        }
        if self.breaker_failures == 0 {
            return Err(RedisCacheError::config(
                "circuit_breaker.failures",
                "must be at least 1",
            ));
        }
        self.tls.validate(if env {
            &TlsNames::ENV
        } else {
            &TlsNames::BUILDER
        })?;
        crate::client::connect::require_tls_url(&self.tls, &info, name("url", "REDIS_URL"))?;
        if self.is_cluster() {
            self.validate_cluster(name("cluster_urls", "REDIS_CLUSTER_URLS"), env)?;
        }
        if !matches!(self.protocol, 1 | 2) {
            return Err(RedisCacheError::config(
                name("protocol", "CACHE_REDIS_PROTOCOL"),
                format!("`{}` is not a protocol version (1 or 2)", self.protocol),
            ));
        }
        positive("version_ttl", self.version_ttl)?;
        positive("sweep.interval", self.sweep_interval)?;
        if self.sweep_batch == 0 {
            return Err(RedisCacheError::config("sweep.batch", "must be at least 1"));
        }
        Ok(())
    }

    /// What a cluster needs beyond one server's options.
    fn validate_cluster(&self, field: &'static str, env: bool) -> Result<(), RedisCacheError> {
        if self.url_set {
            return Err(RedisCacheError::config(
                field,
                "is set and so is url: set one (url for one server, cluster_urls for a cluster)",
            ));
        }
        for url in &self.cluster_urls {
            let info = self.connection_info_of(url).map_err(|e| match e {
                RedisCacheError::Config { reason, .. } => RedisCacheError::config(field, reason),
                other => other,
            })?;
            if info.redis_settings().db() != 0 {
                return Err(RedisCacheError::config(
                    if env { "REDIS_DB" } else { "db" },
                    "a Redis Cluster has database 0 only",
                ));
            }
        }
        if self.protocol != 2 {
            return Err(RedisCacheError::config(
                if env { "CACHE_REDIS_PROTOCOL" } else { "protocol" },
                "a Redis Cluster needs storage protocol 2 (protocol 1's scripts touch keys of several hash slots)",
            ));
        }
        if self.tls.is_set() {
            return Err(RedisCacheError::config(
                field,
                "custom TLS certificates are not supported on a cluster yet (rediss:// with the system's roots is)",
            ));
        }
        Ok(())
    }

    /// The redis-rs client of the cluster, when the backend runs on one.
    pub(crate) fn cluster_client(
        &self,
    ) -> Result<Option<redis::cluster::ClusterClient>, RedisCacheError> {
        if !self.is_cluster() {
            return Ok(None);
        }
        let infos = self
            .cluster_urls
            .iter()
            .map(|u| self.connection_info_of(u))
            .collect::<Result<Vec<_>, _>>()?;
        redis::cluster::ClusterClient::builder(infos)
            .connection_timeout(self.connect_timeout)
            .build()
            .map(Some)
            .map_err(|e| RedisCacheError::config("cluster_urls", e.to_string()))
    }

    /// The redis-rs connection info: the URL (a cluster's first seed node) with the user,
    /// password and db overrides.
    pub(crate) fn connection_info(&self) -> Result<redis::ConnectionInfo, RedisCacheError> {
        match self.cluster_urls.first() {
            Some(seed) => self.connection_info_of(seed),
            None => self.connection_info_of(&self.url),
        }
    }

    /// [`Self::connection_info`] of `url`.
    fn connection_info_of(&self, url: &str) -> Result<redis::ConnectionInfo, RedisCacheError> {
        let url = url.trim();
        let scheme = url.split("://").next().unwrap_or("");
        match scheme {
            "redis" | "redis+unix" | "unix" => {}
            "rediss" => {
                if !cfg!(feature = "tls") {
                    return Err(RedisCacheError::config(
                        "url",
                        "`rediss://` needs the `tls` feature of cache-redis",
                    ));
                }
            }
            _ => {
                return Err(RedisCacheError::config(
                    "url",
                    format!(
                        "`{}`: the scheme must be redis://, rediss:// or redis+unix://",
                        redact_url(url)
                    ),
                ))
            }
        }
        let info: redis::ConnectionInfo = redis::IntoConnectionInfo::into_connection_info(url)
            .map_err(|e| {
                RedisCacheError::config("url", format!("`{}`: {:?}", redact_url(url), e.kind()))
            })?;
        let mut settings = info.redis_settings().clone();
        if let Some(u) = &self.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &self.password {
            settings = settings.set_password(p);
        }
        if let Some(db) = self.db {
            if db < 0 {
                return Err(RedisCacheError::config("db", "must not be negative"));
            }
            settings = settings.set_db(db);
        }
        Ok(info.set_redis_settings(settings))
    }

    /// The redis-rs client every connection of the backend derives from (TLS applied).
    pub(crate) fn client(&self) -> Result<redis::Client, RedisCacheError> {
        crate::client::connect::open_client(self.connection_info()?, &self.tls, "url")
    }

    /// Builds the backend without connecting: the connection is made in the background (and
    /// remade after failures); until it is up, operations fail fast and cached fns run
    /// uncached. `Err` only for an invalid option. Use
    /// [`connect`](Self::connect) to wait for the first connection.
    ///
    /// ```no_run
    /// let backend = cache_redis::RedisBackend::builder()
    ///     .url("redis://127.0.0.1:6379/")
    ///     .build()?;
    /// # Ok::<(), cache_redis::RedisCacheError>(())
    /// ```
    pub fn build(self) -> Result<crate::RedisBackend, RedisCacheError> {
        self.validate()?;
        crate::RedisBackend::from_builder(self)
    }

    /// Builds the backend and waits (at most `connect_timeout`) for the first connection;
    /// `Err(Connect)` when Redis cannot be reached. Works from any executor.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), cache_redis::RedisCacheError> {
    /// let backend = cache_redis::RedisBackend::builder().prefix("app").connect().await?;
    /// # Ok(()) }
    /// ```
    pub async fn connect(self) -> Result<crate::RedisBackend, RedisCacheError> {
        let limit = self.connect_timeout;
        let url = redact_url(&self.url);
        let backend = self.build()?;
        if backend.wait_connected(limit).await {
            Ok(backend)
        } else {
            Err(RedisCacheError::Connect {
                url,
                reason: no_connection(limit, backend.last_connect_error()),
            })
        }
    }

    /// [`connect`](Self::connect) for sync code (inside or outside a tokio runtime).
    ///
    /// ```no_run
    /// let backend = cache_redis::RedisBackend::builder().connect_blocking()?;
    /// # Ok::<(), cache_redis::RedisCacheError>(())
    /// ```
    pub fn connect_blocking(self) -> Result<crate::RedisBackend, RedisCacheError> {
        let limit = self.connect_timeout;
        let url = redact_url(&self.url);
        let backend = self.build()?;
        if backend.wait_connected_blocking(limit) {
            Ok(backend)
        } else {
            Err(RedisCacheError::Connect {
                url,
                reason: no_connection(limit, backend.last_connect_error()),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn field(e: RedisCacheError) -> String {
        match e {
            RedisCacheError::Config { field, .. } => field.to_string(),
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn cluster_configuration_errors_name_the_option() {
        let ok = RedisBackendBuilder::from_vars(vars(&[(
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7000, redis://127.0.0.1:7001",
        )]))
        .unwrap();
        assert_eq!(ok.cluster_urls.len(), 2);
        assert!(ok.cluster_client().unwrap().is_some());
        let both = RedisBackendBuilder::from_vars(vars(&[
            ("REDIS_URL", "redis://127.0.0.1:6379"),
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
        ]));
        assert_eq!(field(both.unwrap_err()), "REDIS_CLUSTER_URLS");
        let bad = RedisBackendBuilder::from_vars(vars(&[(
            "REDIS_CLUSTER_URLS",
            "redis://127.0.0.1:7000,http://x",
        )]));
        assert_eq!(field(bad.unwrap_err()), "REDIS_CLUSTER_URLS");
        let empty = RedisBackendBuilder::from_vars(vars(&[("REDIS_CLUSTER_URLS", " , ")]));
        assert_eq!(field(empty.unwrap_err()), "REDIS_CLUSTER_URLS");
        let none = RedisBackendBuilder::from_vars(vars(&[]));
        assert_eq!(field(none.unwrap_err()), "REDIS_URL");
        let p1 = RedisBackendBuilder::from_vars(vars(&[
            ("REDIS_CLUSTER_URLS", "redis://127.0.0.1:7000"),
            ("CACHE_REDIS_PROTOCOL", "1"),
        ]));
        assert_eq!(field(p1.unwrap_err()), "CACHE_REDIS_PROTOCOL");
        let db = RedisBackendBuilder::default()
            .cluster_urls(["redis://127.0.0.1:7000/2"])
            .validate();
        assert_eq!(field(db.unwrap_err()), "db");
        let url_too = RedisBackendBuilder::default()
            .url("redis://127.0.0.1:6379")
            .cluster_urls(["redis://127.0.0.1:7000"])
            .validate();
        assert_eq!(field(url_too.unwrap_err()), "cluster_urls");
    }

    #[test]
    fn redaction() {
        assert_eq!(redact_url("redis://:pw@h/"), "redis://:***@h/");
        assert_eq!(redact_url("rediss://user@h/"), "rediss://user@h/");
        assert_eq!(redact_url("nonsense"), "nonsense");
    }

    #[cfg(feature = "tls")]
    fn field_of(r: Result<RedisBackendBuilder, RedisCacheError>) -> (String, String) {
        match r.map(|_| ()).unwrap_err() {
            RedisCacheError::Config { field, reason } => (field, reason),
            e => panic!("{e}"),
        }
    }

    #[test]
    #[cfg(not(feature = "tls"))]
    fn tls_options_without_the_feature_are_an_error() {
        let e = RedisBackendBuilder::default()
            .tls_ca_cert_pem("x")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("tls_ca_cert_pem") && e.contains("`tls` feature"),
            "{e}"
        );
    }

    #[test]
    #[cfg(feature = "tls")]
    fn tls_files_from_env_name_the_variable() {
        let dir = std::env::temp_dir().join(format!("cache-redis-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let garbage = garbage.to_string_lossy().into_owned();
        let vars = |pairs: Vec<(&'static str, String)>| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.clone())
            }
        };
        let url = ("REDIS_URL", "rediss://127.0.0.1:6380/".to_string());
        let (field, reason) = field_of(RedisBackendBuilder::from_vars(vars(vec![
            url.clone(),
            ("REDIS_TLS_CA_CERT", "/nonexistent/ca.pem".into()),
        ])));
        assert_eq!(field, "REDIS_TLS_CA_CERT");
        assert!(reason.contains("/nonexistent/ca.pem"), "{reason}");
        let (field, _) = field_of(RedisBackendBuilder::from_vars(vars(vec![
            url.clone(),
            ("REDIS_TLS_CA_CERT", garbage.clone()),
        ])));
        assert_eq!(field, "REDIS_TLS_CA_CERT");
        let (field, _) = field_of(RedisBackendBuilder::from_vars(vars(vec![
            url.clone(),
            ("REDIS_TLS_CLIENT_CERT", garbage.clone()),
        ])));
        assert_eq!(field, "REDIS_TLS_CLIENT_KEY");
        let (field, _) = field_of(RedisBackendBuilder::from_vars(vars(vec![
            url.clone(),
            ("REDIS_TLS_CLIENT_CERT", garbage.clone()),
            ("REDIS_TLS_CLIENT_KEY", garbage.clone()),
        ])));
        assert_eq!(field, "REDIS_TLS_CLIENT_CERT");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    #[cfg(feature = "tls")]
    fn tls_options_are_checked() {
        let b = RedisBackendBuilder::default;
        let err = |r: Result<(), RedisCacheError>| match r.unwrap_err() {
            RedisCacheError::Config { field, reason } => format!("{field}: {reason}"),
            e => panic!("{e}"),
        };
        let bad = b().url("rediss://h:1/").tls_ca_cert_pem("nope");
        assert!(err(bad.validate()).starts_with("tls_ca_cert_pem"));
        {
            let plain = b().url("redis://h:1/").tls_ca_cert_pem(
                "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n",
            );
            let e = err(plain.validate());
            assert!(e.contains("tls_ca_cert_pem") || e.contains("rediss"), "{e}");
            let key = b()
                .url("rediss://h:1/")
                .tls_client_cert_pem("nope", "secret-key-material");
            let e = err(key.validate());
            assert!(e.starts_with("tls_client_cert_pem"), "{e}");
            assert!(!e.contains("secret-key-material"), "{e}");
            assert!(!format!("{key:?}").contains("secret-key-material"));
        }
    }

    #[test]
    fn errors_name_the_field() {
        let b = RedisBackendBuilder::default;
        let field = |r: Result<(), RedisCacheError>| match r.unwrap_err() {
            RedisCacheError::Config { field, .. } => field,
            e => panic!("{e}"),
        };
        assert_eq!(field(b().url("ftp://x").validate()), "url");
        assert_eq!(field(b().url("redis://[::1").validate()), "url");
        assert_eq!(field(b().prefix("a b").validate()), "prefix");
        assert_eq!(field(b().prefix("a{b").validate()), "prefix");
        assert_eq!(
            field(b().op_timeout(Duration::ZERO).validate()),
            "op_timeout"
        );
        assert_eq!(field(b().max_payload(1).validate()), "max_payload");
        assert_eq!(field(b().db(-1).validate()), "db");
        assert!(b().url("redis://u:p@h:1/3").validate().is_ok());
        let e = RedisBackendBuilder::from_vars(|_| None).unwrap_err();
        assert!(e.to_string().contains("REDIS_URL"));
        let e = RedisBackendBuilder::from_vars(|n| match n {
            "REDIS_URL" => Some("redis://h/".into()),
            "CACHE_REDIS_PREFIX" => Some("no spaces".into()),
            _ => None,
        })
        .unwrap_err();
        assert!(e.to_string().contains("CACHE_REDIS_PREFIX"), "{e}");
    }

    #[test]
    fn password_never_in_errors_or_debug() {
        let b = RedisBackendBuilder::default()
            .url("http://u:topsecret@h/")
            .password("hunter2");
        let e = b.validate().unwrap_err().to_string();
        assert!(!e.contains("topsecret"), "{e}");
        let d = format!("{b:?}");
        assert!(!d.contains("topsecret") && !d.contains("hunter2"), "{d}");
    }
}
