//! # cache-redis
//!
//! The Redis backend of cache-core: several instances of a service share one cache.
//!
//! * [`RedisBackend`]: entries as MessagePack in a versioned envelope (LZ4 over a threshold),
//!   absolute and sliding ttl, dependencies kept in reverse-index sets updated atomically by
//!   Lua scripts (transitive invalidation), leases checked at set time so a fill that raced an
//!   invalidation on any node is rejected, a dependency garbage collector, optional
//!   distributed single flight, and fail-open behaviour (op timeout, circuit breaker,
//!   automatic reconnection, failed invalidations retried in order).
//! * Configuration with [`RedisBackend::builder`] or [`RedisBackendBuilder::from_env`].
//!
//! ```no_run
//! use std::sync::Arc;
//! # async fn demo() -> Result<(), cache_redis::RedisCacheError> {
//! let backend = cache_redis::RedisBackend::builder()
//!     .url("redis://127.0.0.1:6379/")
//!     .prefix("myapp")
//!     .connect()
//!     .await?;
//! cache_core::registry::install(Arc::new(backend));
//! # Ok(()) }
//! ```
//!
//! The key layout is documented in [`keys`](crate#key-layout):
//!
//! | key | holds |
//! |---|---|
//! | `P:{T}` | the entry with key text `T` |
//! | `P:{T}:d` | its dependencies (`<length>:<name>` items) |
//! | `P:{T}:lock` | its single-flight lock |
//! | `P:dep:{D}` | key texts of the entries depending on `D` |
//! | `P:gen`, `P:epochs` | invalidation generation and per-slot invalidation stamps |
//!
//! Protocol version 2 ([`RedisBackendBuilder::protocol`]) keeps only the entries (each lists
//! the versions of what it depends on), their locks, and one version key `P:v:{N}` per
//! dependency name: invalidation is `O(1)`, correct under every eviction policy, and every
//! script touches one hash slot.
#![warn(missing_docs)]

mod backend;
mod client;
pub mod config;
mod envelope;
mod error;
mod eviction;
#[doc(hidden)]
pub mod fuzzing;
mod gc;
mod keys;
mod retry;
mod scripts;
mod stats;
mod versioned;
mod watch;
mod write_queue;

pub use backend::RedisBackend;
pub use config::RedisBackendBuilder;
pub use error::RedisCacheError;
pub use stats::RedisStats;

pub mod layered;
pub mod local_store;
pub mod sync;
pub mod tracking;
pub use layered::{Coherence, LayeredBackend, LayeredBackendBuilder};
pub use sync::{
    with_redis_sync, NodeId, SyncMessage, SyncOp, SyncOptions, SyncStats, SyncedBackend,
    SyncedBackendBuilder, Synchronizer,
};
pub use tracking::{Tracker, TrackingMode, TrackingStats};
