//! The server's eviction policy, checked once per connection of the backend.
//!
//! Invalidation finds the entries that depend on a name through reverse-index sets, which are
//! written on fills and read only by invalidations. Under an `allkeys-*` policy Redis evicts
//! those sets while the entries they point to stay hot, and an invalidation then misses those
//! entries (they are served stale until their ttl). Under `volatile-*` policies only keys with
//! a ttl are evicted: entries, tombstones and locks, never the indexes nor the generation keys,
//! so every invalidation reaches its entries. The backend says so in a warning when it finds an
//! `allkeys-*` policy and dependencies are on.

use std::sync::Weak;
use std::time::Duration;

use crate::client::RedisClient;

/// What a `maxmemory-policy` means for invalidation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyFit {
    /// Indexes are never evicted (`volatile-*`, `noeviction`).
    Safe,
    /// Indexes can be evicted (`allkeys-*`).
    IndexesEvictable,
    /// Not a policy this crate knows.
    Unknown,
}

pub(crate) fn fit(policy: &str) -> PolicyFit {
    match policy {
        p if p.starts_with("volatile-") || p == "noeviction" => PolicyFit::Safe,
        p if p.starts_with("allkeys-") => PolicyFit::IndexesEvictable,
        _ => PolicyFit::Unknown,
    }
}

/// Reads the policy once the backend is connected and warns when invalidation could miss
/// entries under it (once per backend: the first answer ends the task). `CONFIG` refused
/// (managed Redis): a debug line.
pub(crate) async fn check(weak: Weak<RedisClient>) {
    for _ in 0..600 {
        let Some(inner) = weak.upgrade() else { return };
        if !inner.connected_within(Duration::from_secs(1)).await {
            continue;
        }
        let policy: Result<Vec<String>, _> = inner
            .run("config", |mut con| async move {
                redis::cmd("CONFIG")
                    .arg("GET")
                    .arg("maxmemory-policy")
                    .query_async(&mut con)
                    .await
            })
            .await;
        match policy {
            Ok(v) => {
                let policy = v.get(1).cloned().unwrap_or_default();
                if fit(&policy) == PolicyFit::IndexesEvictable {
                    tracing::warn!(
                        policy = %policy,
                        "Redis evicts any key under maxmemory-policy {policy}: dependency \
                         indexes can be evicted while their entries stay, and an invalidation \
                         then misses those entries (served stale until their ttl). Use \
                         volatile-lru or volatile-lfu for a cache with dependencies"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot read maxmemory-policy"),
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        assert_eq!(fit("volatile-lru"), PolicyFit::Safe);
        assert_eq!(fit("volatile-ttl"), PolicyFit::Safe);
        assert_eq!(fit("noeviction"), PolicyFit::Safe);
        assert_eq!(fit("allkeys-lru"), PolicyFit::IndexesEvictable);
        assert_eq!(fit("allkeys-lfu"), PolicyFit::IndexesEvictable);
        assert_eq!(fit("something"), PolicyFit::Unknown);
    }
}
