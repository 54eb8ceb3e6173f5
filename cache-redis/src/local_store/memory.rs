//! [`LocalStore`] for the memory backend (the default store).

use cache_core::value::SharedValue;
use cache_core::{
    Backend, BackendStats, EntryOptions, Key, Lease, LocalKey, LocalLookup, MemoryBackend,
    SetOutcome,
};

use super::LocalStore;

impl LocalStore for MemoryBackend {
    fn name(&self) -> &str {
        "memory"
    }

    fn as_memory(&self) -> Option<&MemoryBackend> {
        Some(self)
    }

    #[inline]
    fn lookup(&self, key: &LocalKey<'_>, on_hit: &mut dyn FnMut(&SharedValue)) -> LocalLookup {
        self.lookup_local(key, on_hit)
    }

    fn lease(&self) -> Lease {
        self.current_lease()
    }

    fn put(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        lease: Lease,
    ) -> SetOutcome {
        self.set_blocking(key, value, options, lease)
            .unwrap_or(SetOutcome::Rejected)
    }

    fn replace_value_if_same(&self, key: &Key, expected: &SharedValue, new: SharedValue) -> bool {
        MemoryBackend::replace_value_if_same(self, key, expected, new)
    }

    fn put_with_reference(
        &self,
        key: &Key,
        value: SharedValue,
        options: &EntryOptions,
        reference: &str,
        lease: Lease,
    ) -> SetOutcome {
        let mut options = options.clone();
        options.dependencies.push(reference.to_string());
        self.put(key, value, &options, lease)
    }

    fn invalidate_references(&self, references: Option<&[&str]>) {
        match references {
            Some(refs) => {
                for r in refs {
                    let _ = self.invalidate_blocking(r);
                }
            }
            None => {
                let _ = self.clear_blocking();
            }
        }
    }

    fn stats(&self) -> BackendStats {
        Backend::stats(self)
    }

    fn sweep_expired(&self) {
        MemoryBackend::sweep_expired(self)
    }
}
