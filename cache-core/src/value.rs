//! Cached values: typed in process, bytes (MessagePack) for backends that store bytes.
//!
//! The memory backend stores an `Arc<dyn CacheValue>` and a hit clones the typed value out of it:
//! no serialization on the in-process path. Backends that store bytes call
//! [`CacheValue::encode`] on set and hand bytes back; the runtime decodes them with [`decode`].

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::CacheError;

/// What a cached function's value type must be: cloneable (a hit returns a clone), serializable
/// (any backend can be installed at run time, including Redis), thread-safe and `'static`.
///
/// Implemented for every type that meets those bounds.
///
/// ```
/// fn assert_cacheable<T: cache_core::Cacheable>() {}
/// assert_cacheable::<Vec<String>>();
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a cached value",
    note = "a cached value must be `Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static`",
    note = "a value that cannot be serialized (a client handle, a compiled regex, an `Arc<dyn Trait>`) can be kept in this process's memory with `#[cached(local)]`: it then needs only `Clone + Send + Sync + 'static`"
)]
pub trait Cacheable: Clone + Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T: Clone + Serialize + DeserializeOwned + Send + Sync + 'static> Cacheable for T {}

/// A value of a `#[cached(local)]` fn: kept in this process's memory only, never serialized, so
/// it needs only `Clone + Send + Sync + 'static`. Its `Serialize` and `Deserialize` always fail
/// (a backend that would have to store its bytes answers a miss and stores nothing).
///
/// ```
/// let v = cache_core::value::Local(std::sync::Arc::new(|x: u32| x + 1));
/// assert!(cache_core::value::encode(&v).is_err());
/// assert_eq!((v.0)(1), 2);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Local<T>(pub T);

impl<T> fmt::Debug for Local<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Local<{}>", std::any::type_name::<T>())
    }
}

const LOCAL_ONLY: &str = "a #[cached(local)] value is kept in process and never serialized";

impl<T> Serialize for Local<T> {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(LOCAL_ONLY))
    }
}

impl<'de, T> serde::Deserialize<'de> for Local<T> {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom(LOCAL_ONLY))
    }
}

/// A type-erased cached value, as backends hold it.
pub trait CacheValue: Any + Send + Sync {
    /// The value as `Any`, to downcast to the typed value.
    fn as_any(&self) -> &dyn Any;
    /// The value as MessagePack bytes (for backends that store bytes).
    fn encode(&self) -> Result<Vec<u8>, CacheError>;
    /// The Rust type name (for errors and logs).
    fn type_name(&self) -> &'static str;
    /// An estimate of the memory the value holds, in bytes (for weight-bounded stores).
    fn weight(&self) -> usize;

    /// The MessagePack bytes this value *is*, when it holds a value not yet decoded (e.g. read
    /// from a remote store and kept in process) rather than a typed one. Default: `None`.
    ///
    /// A hit on such a value is decoded by the runtime ([`Hit::into_typed`]), which then offers
    /// the typed value back to the backend
    /// ([`Backend::offer_decoded`](crate::Backend::offer_decoded)).
    ///
    /// ```
    /// assert!(cache_core::value::share(5u8).encoded_bytes().is_none());
    /// ```
    fn encoded_bytes(&self) -> Option<&[u8]> {
        None
    }
}

impl fmt::Debug for dyn CacheValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheValue<{}>", self.type_name())
    }
}

/// The [`CacheValue`] of a typed value.
pub struct Typed<T>(pub T);

impl<T: Cacheable> CacheValue for Typed<T> {
    fn as_any(&self) -> &dyn Any {
        &self.0
    }
    fn encode(&self) -> Result<Vec<u8>, CacheError> {
        encode(&self.0)
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
    fn weight(&self) -> usize {
        crate::weight::of(&self.0)
    }
}

/// A typed value with a weight given by its fn (`#[cached(weight = ..)]`) instead of measured.
struct Weighed<T>(Typed<T>, usize);

impl<T: Cacheable> CacheValue for Weighed<T> {
    fn as_any(&self) -> &dyn Any {
        self.0.as_any()
    }
    fn encode(&self) -> Result<Vec<u8>, CacheError> {
        self.0.encode()
    }
    fn type_name(&self) -> &'static str {
        self.0.type_name()
    }
    fn weight(&self) -> usize {
        self.1
    }
}

/// Wraps a typed value whose weight `weigh` gives (`None`: measured, as [`share`] does).
///
/// ```
/// let v = cache_core::value::share_weighed(vec![0u8; 10], Some(|_: &dyn std::any::Any| 1000));
/// assert_eq!(v.weight(), 1000);
/// ```
pub fn share_weighed<T: Cacheable>(value: T, weigh: Option<fn(&dyn Any) -> usize>) -> SharedValue {
    match weigh {
        Some(w) => {
            let weight = w(&value);
            Arc::new(Weighed(Typed(value), weight))
        }
        None => share(value),
    }
}

/// A value held by a backend: shared, type-erased.
pub type SharedValue = Arc<dyn CacheValue>;

/// Wraps a typed value for a backend.
///
/// ```
/// let v = cache_core::value::share(5u32);
/// assert_eq!(cache_core::value::downcast::<u32>(&*v), Some(5));
/// ```
pub fn share<T: Cacheable>(value: T) -> SharedValue {
    Arc::new(Typed(value))
}

/// Clones the typed value out of a shared value, if it holds a `T`.
#[inline]
pub fn downcast<T: Cacheable>(value: &dyn CacheValue) -> Option<T> {
    value.as_any().downcast_ref::<T>().cloned()
}

/// Encodes a value as MessagePack (struct fields by name, so adding an optional field stays
/// compatible).
///
/// ```
/// let bytes = cache_core::value::encode(&("a", 1u8)).unwrap();
/// let back: (String, u8) = cache_core::value::decode(&bytes).unwrap();
/// assert_eq!(back, ("a".to_string(), 1));
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CacheError> {
    rmp_serde::to_vec_named(value).map_err(|e| CacheError::Encode {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

/// Decodes MessagePack bytes written by [`encode`].
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CacheError> {
    rmp_serde::from_slice(bytes).map_err(|e| CacheError::Decode {
        type_name: std::any::type_name::<T>(),
        reason: e.to_string(),
    })
}

/// A hit as a backend returns it: the shared typed value (in process) or bytes (remote).
#[derive(Debug, Clone)]
pub enum Hit {
    /// A value held in process.
    Local(SharedValue),
    /// MessagePack bytes from a remote store.
    Bytes(Vec<u8>),
}

impl Hit {
    /// The typed value; `Err` when bytes do not decode or the local value has another type.
    /// A local value holding bytes ([`CacheValue::encoded_bytes`]) is decoded.
    pub fn into_typed<T: Cacheable>(self) -> Result<T, CacheError> {
        match self {
            Hit::Local(v) => {
                if let Some(t) = downcast::<T>(&*v) {
                    return Ok(t);
                }
                if let Some(bytes) = v.encoded_bytes() {
                    return decode(bytes);
                }
                Err(CacheError::Decode {
                    type_name: std::any::type_name::<T>(),
                    reason: format!("the entry holds a `{}`", v.type_name()),
                })
            }
            Hit::Bytes(b) => decode(&b),
        }
    }
}
