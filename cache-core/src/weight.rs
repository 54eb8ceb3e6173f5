//! How much memory a cached value holds, estimated by walking it with serde (every cached value
//! is `Serialize`): the value's own size plus what its strings, byte buffers, sequences and maps
//! hold on the heap. A `String` of 10 MB weighs 10 MB, not the 24 bytes of `size_of::<String>()`,
//! so `max_weight` bounds what a memory cache really holds.
//!
//! The estimate counts the bytes of the data (a string's length, each element at its own size)
//! and a word per allocation; it does not see spare capacity or allocator overhead, so it is a
//! lower bound within a small factor of the real heap use. The walk allocates nothing and stops
//! at the first error (a value that cannot serialize weighs what was counted so far).

use serde::ser::{self, Serialize};

/// The estimated bytes `value` holds: `size_of::<T>()` plus its heap data.
///
/// ```
/// let small = String::from("abc");
/// let big = "x".repeat(1 << 20);
/// assert!(cache_core::weight::of(&big) >= 1 << 20);
/// assert!(cache_core::weight::of(&small) < 64);
/// assert!(cache_core::weight::of(&vec![0u64; 1000]) >= 8000);
/// ```
pub fn of<T: Serialize>(value: &T) -> usize {
    let mut c = Counter(0);
    let _ = value.serialize(&mut c);
    std::mem::size_of::<T>().saturating_add(c.0)
}

/// Counts heap bytes; primitives inside a heap allocation (a `Vec<u64>`'s elements) count their
/// size, primitives inline in the top-level value are already in `size_of::<T>()` but counted
/// again (a small overestimate for flat structs, which are small anyway).
struct Counter(usize);

/// A word per heap allocation (a `String`'s or `Vec`'s pointer, length and capacity are in
/// its parent; this stands for the allocator's own bookkeeping).
const ALLOCATION: usize = 16;

#[derive(Debug)]
struct Stop;

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("weight walk stopped")
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Stop
    }
}

impl Counter {
    fn add(&mut self, n: usize) -> Result<(), Stop> {
        self.0 = self.0.saturating_add(n);
        Ok(())
    }
}

macro_rules! prim {
    ($($f:ident: $t:ty),*) => {
        $(fn $f(self, _: $t) -> Result<(), Stop> { self.add(std::mem::size_of::<$t>()) })*
    };
}

impl ser::Serializer for &mut Counter {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    prim!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
          serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
          serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_f32: f32,
          serialize_f64: f64, serialize_char: char);

    fn serialize_str(self, v: &str) -> Result<(), Stop> {
        self.add(v.len() + ALLOCATION)
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Stop> {
        self.add(v.len() + ALLOCATION)
    }
    fn serialize_none(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Ok(())
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Stop> {
        self.add(ALLOCATION)?;
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Stop> {
        self.add(ALLOCATION)?;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Stop> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Stop> {
        Ok(self)
    }
    fn is_human_readable(&self) -> bool {
        false
    }
}

macro_rules! compound {
    ($tr:ident, $f:ident) => {
        impl ser::$tr for &mut Counter {
            type Ok = ();
            type Error = Stop;
            fn $f<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stop> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for &mut Counter {
    type Ok = ();
    type Error = Stop;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Stop> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Stop> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Stop> {
        Ok(())
    }
}

macro_rules! named_fields {
    ($tr:ident) => {
        impl ser::$tr for &mut Counter {
            type Ok = ();
            type Error = Stop;
            fn serialize_field<T: ?Sized + Serialize>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Result<(), Stop> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Stop> {
                Ok(())
            }
        }
    };
}

named_fields!(SerializeStruct);
named_fields!(SerializeStructVariant);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heap_data_counts() {
        let ten_mb = "x".repeat(10 << 20);
        assert!(of(&ten_mb) >= 10 << 20);
        assert!(of(&ten_mb) < (10 << 20) + 100);
        assert_eq!(of(&7u64), 16);
        let v: Vec<String> = (0..100).map(|i| format!("{i:04}")).collect();
        assert!(of(&v) >= 100 * 4);
        let m: std::collections::HashMap<u32, Vec<u8>> =
            (0..10).map(|i| (i, vec![0u8; 1000])).collect();
        assert!(of(&m) >= 10_000);
        assert!(of(&Some("abc".to_string())) < 100);
    }
}
