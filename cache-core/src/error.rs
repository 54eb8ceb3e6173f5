//! The error type of cache-core.

use std::time::Duration;

/// Everything that can go wrong inside the cache. None of these reach the caller of a cached
/// function: a failing backend means the function runs and its value is returned (fail-open);
/// the error is counted in the stats and traced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A configuration value is invalid; `field` names it.
    #[error("invalid cache configuration: `{field}`: {reason}")]
    Config {
        /// The option at fault, e.g. `profile.hot.ttl`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A value could not be encoded to bytes for a byte-storing backend.
    #[error("cannot encode value of `{type_name}`: {reason}")]
    Encode {
        /// The Rust type of the value.
        type_name: &'static str,
        /// The serializer's message.
        reason: String,
    },
    /// Bytes read from a backend could not be decoded (treated as a miss).
    #[error("cannot decode cached value as `{type_name}`: {reason}")]
    Decode {
        /// The Rust type expected.
        type_name: &'static str,
        /// The deserializer's message.
        reason: String,
    },
    /// A backend operation failed (connection refused, protocol error...).
    #[error("backend `{backend}` failed: {reason}")]
    Backend {
        /// The backend's name.
        backend: String,
        /// What happened.
        reason: String,
    },
    /// A backend operation took longer than its timeout.
    #[error("backend `{backend}` timed out after {timeout:?}")]
    Timeout {
        /// The backend's name.
        backend: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// A named profile was used but never configured.
    #[error(
        "unknown cache profile `{0}`: configure it with `cache_core::configure().profile(..)`"
    )]
    UnknownProfile(String),
}

impl CacheError {
    /// A [`CacheError::Config`] for `field`.
    ///
    /// ```
    /// let e = cache_core::CacheError::config("max_entries", "must be > 0");
    /// assert!(e.to_string().contains("max_entries"));
    /// ```
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        CacheError::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A [`CacheError::Backend`] from any displayable error.
    pub fn backend(backend: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        CacheError::Backend {
            backend: backend.into(),
            reason: reason.to_string(),
        }
    }
}

/// `Result` with [`CacheError`].
pub type Result<T, E = CacheError> = std::result::Result<T, E>;
