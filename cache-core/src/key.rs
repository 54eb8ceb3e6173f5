//! Cache keys: how function arguments become keys.
//!
//! Every argument that takes part in a key implements [`KeyPart`], which writes the value two ways:
//!
//! * a **compact binary** form into a [`KeyBuf`] (a stack buffer: building it does not allocate for
//!   ordinary arguments). The memory backend hashes and compares this form on the hit path.
//! * a **readable** form into a `String`, e.g. `myapp::users::get_user(42)` or
//!   `search("a,b",Some(3))`, built only when a key must leave the process or be logged: on a
//!   miss, for Redis, for dependencies.
//!
//! Both encodings are *injective* for a fixed argument type: strings are quoted with `"` and `\`
//! escaped, lists are bracketed, numbers are followed by a delimiter that cannot occur inside them.
//! Both are stable across processes, builds and platforms (no `std::hash::Hash`). Readable keys over
//! [`MAX_READABLE_KEY_LEN`] bytes keep their head and replace the tail by a 128-bit SHA-256 prefix of
//! the whole key (see [`shorten`]).
//!
//! Floats: all NaNs are one key (`NaN`); `-0.0` and `0.0` are two keys (a function may tell them
//! apart, e.g. `1.0 / x`).
//!
//! ```
//! use cache_core::key::{KeyPart, readable};
//! assert_eq!(readable(&(42u64, "a,b")), r#"(42,"a,b")"#);
//! assert_eq!(readable(&Some(vec![1.5f64, f64::NAN])), "Some([1.5,NaN])");
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::mem::MaybeUninit;
use std::rc::Rc;
use std::sync::Arc;

/// Readable keys longer than this (in bytes) are shortened by [`shorten`].
pub const MAX_READABLE_KEY_LEN: usize = 250;

/// A growable byte buffer that lives on the stack up to 96 bytes: the binary form of a key.
/// Longer keys spill to the heap.
///
/// ```
/// use cache_core::key::{KeyBuf, KeyPart};
/// let mut buf = KeyBuf::new();
/// 7u64.write_binary(&mut buf);
/// assert_eq!(buf.as_bytes(), &7u64.to_le_bytes());
/// ```
#[derive(Clone)]
pub struct KeyBuf {
    /// Bytes written; `INLINE + 1` once they live in `heap`.
    len: usize,
    /// The first `len` bytes are initialized (not zeroed up front: the hit path builds a key
    /// per call).
    inline: [MaybeUninit<u8>; INLINE],
    heap: Vec<u8>,
}

const INLINE: usize = 96;

impl Default for KeyBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyBuf {
    /// An empty buffer.
    #[inline]
    pub fn new() -> Self {
        KeyBuf {
            len: 0,
            inline: [MaybeUninit::uninit(); INLINE],
            heap: Vec::new(),
        }
    }
    /// Appends raw bytes.
    #[inline]
    pub fn put(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        if end <= INLINE {
            let dst = &mut self.inline[self.len..end];
            // SAFETY: `dst` is `bytes.len()` bytes long; `u8` and `MaybeUninit<u8>` share
            // their layout; the two cannot overlap (`&mut`).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    dst.as_mut_ptr().cast::<u8>(),
                    bytes.len(),
                )
            };
            self.len = end;
        } else {
            self.spill(bytes);
        }
    }
    #[cold]
    fn spill(&mut self, bytes: &[u8]) {
        if self.len <= INLINE && self.heap.is_empty() {
            let head = self.inline_bytes().to_vec();
            self.heap = head;
        }
        self.heap.extend_from_slice(bytes);
        self.len = INLINE + 1; // marks "on the heap"
    }
    /// Appends one byte (a tag).
    #[inline]
    pub fn put_u8(&mut self, b: u8) {
        self.put(&[b]);
    }
    /// Appends a length (or any `usize`) as 8 little-endian bytes.
    #[inline]
    pub fn put_len(&mut self, n: usize) {
        self.put(&(n as u64).to_le_bytes());
    }
    /// Appends length-prefixed bytes.
    #[inline]
    pub fn put_prefixed(&mut self, bytes: &[u8]) {
        self.put_len(bytes.len());
        self.put(bytes);
    }
    /// The bytes written so far.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        if self.len <= INLINE {
            self.inline_bytes()
        } else {
            &self.heap
        }
    }
    #[inline]
    fn inline_bytes(&self) -> &[u8] {
        let len = self.len.min(INLINE);
        // SAFETY: the first `len` (<= INLINE) inline bytes were written by `put`.
        unsafe { std::slice::from_raw_parts(self.inline.as_ptr().cast::<u8>(), len) }
    }
    /// Number of bytes written.
    #[inline]
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }
    /// True when nothing was written.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A value that can be part of a cache key.
///
/// Implemented for integers, floats, `bool`, `char`, `str`/`String`, `Option`, slices, `Vec`,
/// arrays, tuples (up to 12), references, `Box`, `Arc`, `Rc`, `Cow`, `()`, and behind features for
/// `uuid::Uuid`, `chrono` and `time` types. Derive it for your own types with
/// `#[derive(KeyPart)]`, or implement it by hand: both methods must be injective (two different
/// values never write the same bytes / text) and must agree with `Eq` of the type.
///
/// ```
/// use cache_core::key::{KeyBuf, KeyPart};
/// struct UserId(u64);
/// impl KeyPart for UserId {
///     fn write_binary(&self, out: &mut KeyBuf) { self.0.write_binary(out) }
///     fn write_readable(&self, out: &mut String) { self.0.write_readable(out) }
/// }
/// assert_eq!(cache_core::key::readable(&UserId(7)), "7");
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of a cache key",
    label = "this argument's type does not implement `KeyPart`",
    note = "add the parameter to `skip(...)` in the attribute, or `#[derive(KeyPart)]` on the type"
)]
pub trait KeyPart {
    /// Writes the compact binary form (hashed and compared on the memory hit path).
    fn write_binary(&self, out: &mut KeyBuf);
    /// Writes the readable form (Redis keys, logs, dependencies).
    fn write_readable(&self, out: &mut String);
}

/// The readable form of one key part.
pub fn readable<K: KeyPart + ?Sized>(k: &K) -> String {
    let mut s = String::new();
    k.write_readable(&mut s);
    s
}

/// The binary form of one key part.
pub fn binary<K: KeyPart + ?Sized>(k: &K) -> KeyBuf {
    let mut b = KeyBuf::new();
    k.write_binary(&mut b);
    b
}

/// Shortens a readable key longer than `max` bytes: the head is kept (cut at a char boundary) and
/// the rest is replaced by `#` and 32 hex digits of the SHA-256 of the *whole* key, so two different
/// long keys stay different. Shorter keys are returned unchanged.
///
/// ```
/// let long = "x".repeat(400);
/// let short = cache_core::key::shorten(&long, 100);
/// assert!(short.len() <= 100);
/// assert_ne!(short, cache_core::key::shorten(&format!("{long}y"), 100));
/// ```
pub fn shorten(key: &str, max: usize) -> Cow<'_, str> {
    const TAIL: usize = 1 + 32;
    if key.len() <= max {
        return Cow::Borrowed(key);
    }
    let mut cut = max.saturating_sub(TAIL);
    while cut > 0 && !key.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = crate::hash::sha256(key.as_bytes());
    let mut out = String::with_capacity(cut + TAIL);
    out.push_str(&key[..cut]);
    out.push('#');
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    Cow::Owned(out)
}

macro_rules! int_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_binary(&self, out: &mut KeyBuf) {
                out.put(&self.to_le_bytes());
            }
            fn write_readable(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
int_key_part!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

macro_rules! float_key_part {
    ($($t:ty),*) => {$(
        impl KeyPart for $t {
            #[inline]
            fn write_binary(&self, out: &mut KeyBuf) {
                let bits = if self.is_nan() { <$t>::NAN.to_bits() } else { self.to_bits() };
                out.put(&bits.to_le_bytes());
            }
            fn write_readable(&self, out: &mut String) {
                if self.is_nan() {
                    out.push_str("NaN");
                } else {
                    // `{:?}` is the shortest text that parses back to the same value, and keeps
                    // the sign of -0.0 and a `.0` on integral values.
                    let _ = write!(out, "{self:?}");
                }
            }
        }
    )*};
}
float_key_part!(f32, f64);

impl KeyPart for bool {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put_u8(*self as u8);
    }
    fn write_readable(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl KeyPart for char {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put(&(*self as u32).to_le_bytes());
    }
    fn write_readable(&self, out: &mut String) {
        out.push('\'');
        escape_char(*self, '\'', out);
        out.push('\'');
    }
}

fn escape_char(c: char, quote: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

impl KeyPart for str {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put_prefixed(self.as_bytes());
    }
    fn write_readable(&self, out: &mut String) {
        out.reserve(self.len() + 2);
        out.push('"');
        for c in self.chars() {
            escape_char(c, '"', out);
        }
        out.push('"');
    }
}

impl KeyPart for String {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        self.as_str().write_binary(out)
    }
    fn write_readable(&self, out: &mut String) {
        self.as_str().write_readable(out)
    }
}

impl KeyPart for () {
    #[inline]
    fn write_binary(&self, _out: &mut KeyBuf) {}
    fn write_readable(&self, out: &mut String) {
        out.push_str("()");
    }
}

impl<T: KeyPart> KeyPart for Option<T> {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        match self {
            None => out.put_u8(0),
            Some(v) => {
                out.put_u8(1);
                v.write_binary(out);
            }
        }
    }
    fn write_readable(&self, out: &mut String) {
        match self {
            None => out.push_str("None"),
            Some(v) => {
                out.push_str("Some(");
                v.write_readable(out);
                out.push(')');
            }
        }
    }
}

impl<T: KeyPart> KeyPart for [T] {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put_len(self.len());
        for v in self {
            v.write_binary(out);
        }
    }
    fn write_readable(&self, out: &mut String) {
        out.push('[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_readable(out);
        }
        out.push(']');
    }
}

impl<T: KeyPart> KeyPart for Vec<T> {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        self.as_slice().write_binary(out)
    }
    fn write_readable(&self, out: &mut String) {
        self.as_slice().write_readable(out)
    }
}

impl<T: KeyPart, const N: usize> KeyPart for [T; N] {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        self.as_slice().write_binary(out)
    }
    fn write_readable(&self, out: &mut String) {
        self.as_slice().write_readable(out)
    }
}

macro_rules! deref_key_part {
    ($($t:ty),*) => {$(
        impl<T: KeyPart + ?Sized> KeyPart for $t {
            #[inline]
            fn write_binary(&self, out: &mut KeyBuf) {
                (**self).write_binary(out)
            }
            fn write_readable(&self, out: &mut String) {
                (**self).write_readable(out)
            }
        }
    )*};
}
deref_key_part!(&T, &mut T, Box<T>, Arc<T>, Rc<T>);

impl<T: KeyPart + ToOwned + ?Sized> KeyPart for Cow<'_, T> {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        (**self).write_binary(out)
    }
    fn write_readable(&self, out: &mut String) {
        (**self).write_readable(out)
    }
}

macro_rules! tuple_key_part {
    ($(($($n:tt $t:ident),+))*) => {$(
        impl<$($t: KeyPart),+> KeyPart for ($($t,)+) {
            #[inline]
            fn write_binary(&self, out: &mut KeyBuf) {
                $( self.$n.write_binary(out); )+
            }
            fn write_readable(&self, out: &mut String) {
                out.push('(');
                $(
                    if $n > 0 { out.push(','); }
                    self.$n.write_readable(out);
                )+
                out.push(')');
            }
        }
    )*};
}
tuple_key_part! {
    (0 A)
    (0 A, 1 B)
    (0 A, 1 B, 2 C)
    (0 A, 1 B, 2 C, 3 D)
    (0 A, 1 B, 2 C, 3 D, 4 E)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K)
    (0 A, 1 B, 2 C, 3 D, 4 E, 5 F, 6 G, 7 H, 8 I, 9 J, 10 K, 11 L)
}

/// Writes the arguments of a call: `(a,b,c)` readable, the concatenation in binary.
///
/// This is what generated code uses for the argument list; it is the tuple encoding, so
/// `args_readable(&(1, "x"))` is `(1,"x")`.
pub fn args_readable<K: KeyPart + ?Sized>(args: &K, out: &mut String) {
    args.write_readable(out)
}

#[cfg(feature = "uuid")]
impl KeyPart for uuid::Uuid {
    #[inline]
    fn write_binary(&self, out: &mut KeyBuf) {
        out.put(self.as_bytes());
    }
    fn write_readable(&self, out: &mut String) {
        let _ = write!(out, "{}", self.hyphenated());
    }
}

#[cfg(feature = "chrono")]
mod chrono_impls {
    use super::*;
    impl<Tz: chrono::TimeZone> KeyPart for chrono::DateTime<Tz> {
        fn write_binary(&self, out: &mut KeyBuf) {
            let utc = self.naive_utc();
            out.put(&utc.and_utc().timestamp().to_le_bytes());
            out.put(&utc.and_utc().timestamp_subsec_nanos().to_le_bytes());
        }
        fn write_readable(&self, out: &mut String) {
            let _ = write!(
                out,
                "{}",
                self.naive_utc()
                    .and_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            );
        }
    }
    impl KeyPart for chrono::NaiveDate {
        fn write_binary(&self, out: &mut KeyBuf) {
            use chrono::Datelike;
            out.put(&self.num_days_from_ce().to_le_bytes());
        }
        fn write_readable(&self, out: &mut String) {
            let _ = write!(out, "{}", self.format("%Y-%m-%d"));
        }
    }
    impl KeyPart for chrono::NaiveDateTime {
        fn write_binary(&self, out: &mut KeyBuf) {
            self.and_utc().write_binary(out)
        }
        fn write_readable(&self, out: &mut String) {
            let _ = write!(out, "{}", self.format("%Y-%m-%dT%H:%M:%S%.f"));
        }
    }
}

#[cfg(feature = "time")]
mod time_impls {
    use super::*;
    impl KeyPart for time::OffsetDateTime {
        fn write_binary(&self, out: &mut KeyBuf) {
            out.put(&self.unix_timestamp_nanos().to_le_bytes());
        }
        fn write_readable(&self, out: &mut String) {
            let utc = self.to_offset(time::UtcOffset::UTC);
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
                utc.year(),
                u8::from(utc.month()),
                utc.day(),
                utc.hour(),
                utc.minute(),
                utc.second(),
                utc.nanosecond()
            );
        }
    }
    impl KeyPart for time::Date {
        fn write_binary(&self, out: &mut KeyBuf) {
            out.put(&self.to_julian_day().to_le_bytes());
        }
        fn write_readable(&self, out: &mut String) {
            let _ = write!(
                out,
                "{:04}-{:02}-{:02}",
                self.year(),
                u8::from(self.month()),
                self.day()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readable_forms() {
        assert_eq!(readable(&42u64), "42");
        assert_eq!(readable(&-3i32), "-3");
        assert_eq!(readable("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(readable(&'\''), r"'\''");
        assert_eq!(readable(&Some("x")), r#"Some("x")"#);
        assert_eq!(readable(&None::<u8>), "None");
        assert_eq!(readable(&vec![1u8, 2]), "[1,2]");
        assert_eq!(readable(&(1u8, "a", true)), r#"(1,"a",true)"#);
        assert_eq!(readable(&0.0f64), "0.0");
        assert_eq!(readable(&-0.0f64), "-0.0");
        assert_eq!(readable(&f64::NAN), "NaN");
        assert_eq!(readable(&-f64::NAN), "NaN");
        assert_eq!(readable(&f64::INFINITY), "inf");
        assert_eq!(readable(&"line\nbreak"), r#""line\nbreak""#);
        assert_eq!(readable(&"\u{1}"), r#""\u{1}""#);
    }

    #[test]
    fn separators_do_not_collide() {
        assert_ne!(readable(&("a,b",)), readable(&("a", "b")));
        assert_ne!(binary(&("a,b",)).as_bytes(), binary(&("a", "b")).as_bytes());
        assert_ne!(
            binary(&(vec!["a"], vec!["b"])).as_bytes(),
            binary(&(vec!["a", "b"], Vec::<&str>::new())).as_bytes()
        );
    }

    #[test]
    fn nan_canonical_and_signed_zero_distinct() {
        assert_eq!(
            binary(&f64::NAN).as_bytes(),
            binary(&f64::from_bits(0x7ff8_0000_0000_0001)).as_bytes()
        );
        assert_ne!(binary(&0.0f64).as_bytes(), binary(&-0.0f64).as_bytes());
    }

    #[test]
    fn key_buf_spills_to_the_heap_intact() {
        let mut b = KeyBuf::new();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            b.put(&[i, i]);
            expected.extend_from_slice(&[i, i]);
            assert_eq!(b.as_bytes(), &expected[..]);
        }
    }

    #[test]
    fn shorten_keeps_short_and_hashes_long() {
        assert_eq!(shorten("abc", 10), "abc");
        let a = "é".repeat(200);
        let s = shorten(&a, 100);
        assert!(s.len() <= 100, "{}", s.len());
        assert!(s.contains('#'));
        let b = format!("{}x", "é".repeat(199));
        assert_ne!(shorten(&b, 100), s);
    }
}
