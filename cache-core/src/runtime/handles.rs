//! Handles the companions of a cached fn return: one entry ([`EntryRef`]), several entries of a
//! batch fn ([`EntryRefs`]), every entry of the fn ([`FnRef`]); and invalidating a dependency
//! on every backend.

use std::marker::PhantomData;

use super::FnCache;
use crate::backend::{EntryOptions, Key, Lease, Lookup};
use crate::error::CacheError;
use crate::registry;
use crate::stats::FnStats;
use crate::value::Cacheable;

/// A handle on one entry of a cached function (what `<fn>_key(..)` returns).
pub struct EntryRef<V> {
    pub(super) cache: &'static FnCache,
    pub(super) key: Key,
    pub(super) options: EntryOptions,
    pub(super) _value: PhantomData<fn() -> V>,
}

impl<V> std::fmt::Debug for EntryRef<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryRef").field("key", &self.key).finish()
    }
}

impl<V: Cacheable> EntryRef<V> {
    /// The fn's cache.
    pub(crate) fn cache_ref(&self) -> &'static FnCache {
        self.cache
    }

    /// The key.
    pub fn key(&self) -> &Key {
        &self.key
    }

    /// Removes the entry and, transitively, every entry depending on it.
    pub async fn invalidate(&self) -> Result<(), CacheError> {
        tracing::debug!(key = self.key.text(), "invalidate");
        self.cache.backend().remove(&self.key).await
    }

    /// Removes the entry (blocking form).
    pub fn invalidate_blocking(&self) -> Result<(), CacheError> {
        tracing::debug!(key = self.key.text(), "invalidate");
        self.cache.backend().remove_blocking(&self.key)
    }

    /// Stores `value` as this entry (write-through); entries depending on the old value are
    /// invalidated first.
    pub async fn put(&self, value: V) -> Result<(), CacheError> {
        let backend = self.cache.backend();
        backend.remove(&self.key).await?;
        backend
            .set(
                &self.key,
                self.cache.share(value),
                &self.options,
                Lease::UNCONDITIONAL,
            )
            .await
            .map(|_| ())
    }

    /// Stores `value` as this entry (blocking form).
    pub fn put_blocking(&self, value: V) -> Result<(), CacheError> {
        let backend = self.cache.backend();
        backend.remove_blocking(&self.key)?;
        backend
            .set_blocking(
                &self.key,
                self.cache.share(value),
                &self.options,
                Lease::UNCONDITIONAL,
            )
            .map(|_| ())
    }

    /// Reads the entry without running the function (`None` on a miss or an error).
    pub async fn get(&self) -> Option<V> {
        let backend = self.cache.backend();
        match backend.get(&self.key).await {
            Ok(Lookup::Hit(h)) => h.into_typed().ok(),
            _ => None,
        }
    }

    /// Reads the entry (blocking form).
    pub fn get_blocking(&self) -> Option<V> {
        match self.cache.backend().get_blocking(&self.key) {
            Ok(Lookup::Hit(h)) => h.into_typed().ok(),
            _ => None,
        }
    }
}

/// Handles on several entries of a batch fn (what `<fn>_entries(..)` returns, and what
/// `#[invalidates(get_users([id]))]` invalidates).
pub struct EntryRefs<V>(Vec<EntryRef<V>>);

impl<V> std::fmt::Debug for EntryRefs<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|e| &e.key))
            .finish()
    }
}

impl<V: Cacheable> EntryRefs<V> {
    /// Wraps entry handles.
    pub fn new(entries: Vec<EntryRef<V>>) -> Self {
        EntryRefs(entries)
    }

    /// The entries.
    pub fn entries(&self) -> &[EntryRef<V>] {
        &self.0
    }

    /// Removes every entry (and, transitively, their dependents). Returns the first error,
    /// after trying every entry.
    pub async fn invalidate(&self) -> Result<(), CacheError> {
        let mut first = Ok(());
        for e in &self.0 {
            if let Err(err) = e.invalidate().await {
                first = first.and(Err(err));
            }
        }
        first
    }

    /// Removes every entry (blocking form).
    pub fn invalidate_blocking(&self) -> Result<(), CacheError> {
        let mut first = Ok(());
        for e in &self.0 {
            if let Err(err) = e.invalidate_blocking() {
                first = first.and(Err(err));
            }
        }
        first
    }
}

/// A handle on all entries of a cached function (what `<fn>_cache()` returns).
pub struct FnRef {
    pub(super) cache: &'static FnCache,
    pub(super) dependency: String,
}

impl std::fmt::Debug for FnRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnRef")
            .field("dependency", &self.dependency)
            .finish()
    }
}

impl FnRef {
    /// The fn's cache (write-behind finds its targets by it).
    pub(crate) fn cache_ptr(&self) -> *const FnCache {
        self.cache
    }

    /// The backend the fn's calls use now.
    pub(crate) fn backend(&self) -> std::sync::Arc<dyn crate::Backend> {
        self.cache.backend()
    }

    /// Removes every entry of the function (and, transitively, their dependents).
    pub async fn invalidate_all(&self) -> Result<(), CacheError> {
        self.cache.backend().invalidate(&self.dependency).await
    }

    /// Removes every entry of the function (blocking form).
    pub fn invalidate_all_blocking(&self) -> Result<(), CacheError> {
        self.cache.backend().invalidate_blocking(&self.dependency)
    }

    /// The function's counters.
    pub fn stats(&self) -> FnStats {
        self.cache.stats()
    }

    /// Resets the function's counters.
    pub fn reset_stats(&self) {
        self.cache.counters.reset();
    }
}

/// Invalidates `dependency` on every backend a cached call could reach (see
/// [`registry::all_backends`]). Returns the first error, after trying every backend.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// cache_core::invalidate_dependency("user:7").await.unwrap();
/// # });
/// ```
pub async fn invalidate_dependency(dependency: &str) -> Result<(), CacheError> {
    tracing::debug!(dependency, "invalidate dependency");
    let mut first = Ok(());
    for b in registry::all_backends() {
        if let Err(e) = b.invalidate(dependency).await {
            tracing::warn!(backend = b.name(), dependency, error = %e, "invalidation failed");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}

/// Invalidates `dependency` on every backend (blocking form).
pub fn invalidate_dependency_blocking(dependency: &str) -> Result<(), CacheError> {
    tracing::debug!(dependency, "invalidate dependency");
    let mut first = Ok(());
    for b in registry::all_backends() {
        if let Err(e) = b.invalidate_blocking(dependency) {
            tracing::warn!(backend = b.name(), dependency, error = %e, "invalidation failed");
            if first.is_ok() {
                first = Err(e);
            }
        }
    }
    first
}
