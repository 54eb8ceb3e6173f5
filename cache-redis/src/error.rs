//! The error type of cache-redis.

use std::time::Duration;

use cache_core::CacheError;

/// Everything that can go wrong in the Redis backend.
///
/// Configuration errors name the field (builder method or environment variable) at fault.
/// Messages never contain a password: URLs are shown redacted.
///
/// ```
/// let err = cache_redis::RedisBackend::builder().prefix("bad prefix").validate().unwrap_err();
/// assert!(err.to_string().contains("prefix"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCacheError {
    /// A configuration value is invalid; `field` names the builder option or environment
    /// variable.
    #[error("invalid Redis cache configuration: `{field}`: {reason}")]
    Config {
        /// The option at fault, e.g. `url`, `prefix`, `REDIS_URL`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The first connection could not be made.
    #[error("cannot connect to Redis at {url}: {reason}")]
    Connect {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What happened.
        reason: String,
    },
    /// A Redis command failed.
    #[error("Redis `{op}` failed: {reason}")]
    Redis {
        /// The backend operation (`get`, `set`, `invalidate`, ...).
        op: &'static str,
        /// What Redis or the connection said.
        reason: String,
    },
    /// A Redis operation took longer than the operation timeout.
    #[error("Redis `{op}` timed out after {timeout:?}")]
    Timeout {
        /// The backend operation.
        op: &'static str,
        /// The timeout that elapsed (`op_timeout`).
        timeout: Duration,
    },
    /// The circuit breaker is open: Redis failed repeatedly and is skipped for a cool-down.
    #[error("Redis skipped by the circuit breaker after {failures} consecutive failures (cool-down {cooldown:?})")]
    CircuitOpen {
        /// Consecutive failures that opened the breaker.
        failures: u32,
        /// How long Redis is skipped before a probe.
        cooldown: Duration,
    },
    /// The background runtime thread could not be started or has stopped.
    #[error("cache-redis background runtime: {0}")]
    Runtime(String),
}

impl RedisCacheError {
    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RedisCacheError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Whether this error says Redis is unreachable or too slow (counts towards the breaker).
    pub(crate) fn is_outage(&self) -> bool {
        matches!(
            self,
            RedisCacheError::Timeout { .. } | RedisCacheError::Connect { .. }
        ) || matches!(self, RedisCacheError::Redis { reason, .. } if reason.starts_with("outage: "))
    }
}

impl From<RedisCacheError> for CacheError {
    fn from(e: RedisCacheError) -> Self {
        match e {
            RedisCacheError::Timeout { timeout, .. } => CacheError::Timeout {
                backend: "redis".into(),
                timeout,
            },
            RedisCacheError::Config { field, reason } => CacheError::Config { field, reason },
            other => CacheError::backend("redis", other),
        }
    }
}

/// Maps a redis-rs error, marking outages (I/O, dropped connection, timeouts, refusal) so the
/// circuit breaker counts them.
pub(crate) fn classify(op: &'static str, err: redis::RedisError) -> RedisCacheError {
    let outage = err.is_io_error()
        || err.is_timeout()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_unrecoverable_error();
    RedisCacheError::Redis {
        op,
        reason: if outage {
            format!("outage: {err}")
        } else {
            err.to_string()
        },
    }
}
