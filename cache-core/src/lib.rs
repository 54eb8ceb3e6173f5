//! # cache-core
//!
//! Aspect-style caching for Rust functions: put `#[cached]` on a function and its results are
//! kept in a cache, keyed by its arguments; put `#[invalidates(...)]` on the functions that
//! change the data. This crate is the runtime: keys, the [`Backend`] trait, the in-memory
//! backend (the embedded default), the registry, the dependency context and the stats.
//!
//! ```
//! use cache_core::{Backend, EntryOptions, Key, Lookup, MemoryBackend, SetOutcome};
//!
//! let mem = MemoryBackend::new();
//! let key = Key::new("app::answer()", b"answer");
//! let Lookup::Miss(lease) = mem.get_blocking(&key).unwrap() else { unreachable!() };
//! let stored = mem
//!     .set_blocking(&key, cache_core::value::share(42u32), &EntryOptions::new(), lease)
//!     .unwrap();
//! assert_eq!(stored, SetOutcome::Stored);
//! ```
#![warn(missing_docs)]

pub mod backend;
pub mod context;
pub mod error;
mod flight;
mod functions;
pub mod hash;
mod jitter;
pub mod key;
pub mod memory;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod registry;
pub mod runtime;
pub mod stats;
pub mod value;
pub mod weight;
pub mod write_behind;

pub use backend::{
    Backend, EntryOptions, Fill, Key, Lease, LocalKey, LocalLookup, Lookup, SetOutcome,
};
pub use cache_macros::{cache_put, cached, invalidates, write_behind, KeyPart};
pub use context::add_dependency;
pub use error::CacheError;
pub use key::KeyPart;
pub use memory::MemoryBackend;
pub use registry::{configure, Profile};
pub use runtime::{
    all_stats, invalidate_dependency, invalidate_dependency_blocking, EntryRef, EntryRefs, FnRef,
};
pub use stats::{BackendStats, FnStats};
pub use value::Cacheable;
pub use write_behind::{flush_writes, flush_writes_blocking};

/// Items used by the code the macros generate. Not a public API: names may change in any
/// release.
#[doc(hidden)]
pub mod __private {
    pub use crate::backend::BoxFuture;
    pub use crate::error::CacheError;
    pub use crate::key::{KeyBuf, KeyPart};
    pub use crate::runtime::{
        BatchFill, Begin, CallInfo, EntryRef, EntryRefs, Filler, FnCache, FnMeta, FnRef, Items,
        Mode, RawKey, Resilience,
    };
    pub use crate::value::{Cacheable, Local};
    pub use crate::write_behind::{
        evict_write, queue_write_async, queue_write_blocking, run_write, run_write_blocking, Writer,
    };
    pub use ::core::any::type_name;
    pub use ::core::time::Duration;
    pub use ::inventory;
    pub use ::std::{format, module_path};

    /// Where the generated key closure writes a call's key arguments: the binary or the
    /// readable form, the same encoding as a tuple of the arguments.
    pub enum ArgWriter<'a> {
        /// The binary form.
        Binary(&'a mut KeyBuf),
        /// The readable form; `first` is true before the first argument.
        Readable(&'a mut String, bool),
    }

    impl ArgWriter<'_> {
        /// Writes one key argument (the error for a type without `KeyPart` points here).
        #[inline(always)]
        pub fn arg<T: KeyPart + ?Sized>(&mut self, value: &T) {
            match self {
                ArgWriter::Binary(out) => value.write_binary(out),
                ArgWriter::Readable(out, first) => {
                    if !*first {
                        out.push(',');
                    }
                    *first = false;
                    value.write_readable(out);
                }
            }
        }
    }

    /// The key arguments of a call, written by a closure (no tuple, no allocation).
    pub struct Args<F>(F);

    /// Wraps the generated key closure.
    #[inline(always)]
    pub fn args<F: Fn(&mut ArgWriter<'_>)>(f: F) -> Args<F> {
        Args(f)
    }

    impl<F: Fn(&mut ArgWriter<'_>)> KeyPart for Args<F> {
        #[inline(always)]
        fn write_binary(&self, out: &mut KeyBuf) {
            (self.0)(&mut ArgWriter::Binary(out))
        }
        fn write_readable(&self, out: &mut String) {
            out.push('(');
            (self.0)(&mut ArgWriter::Readable(out, true));
            out.push(')');
        }
    }

    /// A background refresh of an async fn's entry, boxed for [`crate::runtime::AsyncRefresher`].
    pub fn refresh_task(
        f: impl ::core::future::Future<Output = ()> + Send + 'static,
    ) -> ::core::pin::Pin<Box<dyn ::core::future::Future<Output = ()> + Send>> {
        Box::pin(f)
    }

    /// A background refresh of a sync fn's entry, boxed for
    /// [`crate::runtime::BlockingRefresher`].
    pub fn refresh_job(f: impl FnOnce() + Send + 'static) -> Box<dyn FnOnce() + Send> {
        Box::new(f)
    }

    /// Type-checks a key parameter (the error points at the parameter).
    #[inline(always)]
    pub fn assert_key_part<T: KeyPart + ?Sized>(_: &T) {}

    /// Type-checks a cached value type.
    #[inline(always)]
    pub fn assert_cacheable<T: Cacheable>() {}

    /// Invalidates a dependency on every backend; errors are logged, not returned.
    pub async fn invalidate_dependency(dep: String) {
        let _ = crate::runtime::invalidate_dependency(&dep).await;
    }

    /// Invalidates a dependency on every backend (blocking form).
    pub fn invalidate_dependency_blocking(dep: String) {
        let _ = crate::runtime::invalidate_dependency_blocking(&dep);
    }
}
