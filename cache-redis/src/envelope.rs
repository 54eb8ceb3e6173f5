//! The versioned envelope around a stored value.
//!
//! ```text
//! byte 0      magic 0xCA
//! byte 1      format version (1)
//! byte 2      flags: bit 0 = payload is LZ4 (size-prepended block), bit 1 = sliding present,
//!             bit 2 = absolute deadline present
//! [u64 LE]    sliding expiration in ms          (if bit 1)
//! [u64 LE]    absolute deadline, unix ms        (if bit 2; caps the sliding refresh)
//! [u64 LE]    fresh until, unix ms              (if bit 4: the entry has a stale window;
//!             after this it reads as stale until Redis expires it)
//! [deps]       protocol version 2 only (byte 1 = 2): the entry's dependencies with their
//!             versions: a LEB128 count, then per dependency its name (LEB128 length, UTF-8
//!             bytes) and the version token it was filled under (u64 LE); see
//!             `crate::versioned`
//! payload     MessagePack bytes (or their LZ4 block)
//! ```
//!
//! Each protocol reads only its own format version: bytes of the other one are a miss (never
//! misread), which the next fill overwrites.
//!
//! A **tombstone** (written by the invalidation scripts in place of a removed entry, see
//! `scripts/common.lua`) is the header with flags = bit 3 alone, followed by the invalidation's
//! generation in ASCII decimal: `0xCA 0x01 0x08 "1718000000123456"`. It reads as a miss whose
//! lease is at least that generation ([`Stored::Tombstone`]), not as a corrupt value.
//!
//! Anything else (wrong magic, unknown version or flags, truncated header, bad LZ4, a
//! decompressed size over the limit, or one that is not the size the LZ4 block decompresses
//! to, or more than any block of its length could) is [`EnvelopeError`]: the backend answers a miss and the
//! next fill overwrites the key.

pub(crate) const MAGIC: u8 = 0xCA;
pub(crate) const VERSION: u8 = 1;
/// The format version of protocol version 2 (an entry that lists its dependencies' versions).
pub(crate) const VERSION_2: u8 = 2;
const F_LZ4: u8 = 1;
const F_SLIDING: u8 = 2;
const F_DEADLINE: u8 = 4;
const F_TOMBSTONE: u8 = 8;
const F_FRESH: u8 = 16;
const KNOWN: u8 = F_LZ4 | F_SLIDING | F_DEADLINE | F_FRESH;

/// The most an LZ4 block can expand: per input byte, a match length extension byte adds at most
/// 255 output bytes, a literal one byte; a sequence's token and offset (3 bytes) add at most 19.
const LZ4_MAX_RATIO: usize = 255;

/// How long a tombstone lives (ms; `TOMB_PX` in `scripts/common.lua`, pinned by a test). It
/// only has to outlive the window in which a process may still lease a miss with a generation
/// older than the invalidation ([`crate::backend::GEN_FRESH_MS`], 100 ms); a minute leaves a
/// wide margin (slow replies, clock rate differences) at the cost of a few dozen bytes per
/// invalidated entry for a minute (less than the entry it replaces).
pub(crate) const TOMBSTONE_TTL_MS: u64 = 60_000;

/// Why stored bytes are not a valid envelope.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EnvelopeError {
    #[error("not a cache-redis envelope (magic byte {0:#04x})")]
    Magic(u8),
    #[error("unknown envelope format version {0}")]
    Version(u8),
    #[error("unknown envelope flags {0:#04x}")]
    Flags(u8),
    #[error("truncated envelope header")]
    Truncated,
    #[error("corrupt compressed payload: {0}")]
    Lz4(String),
    #[error("decompressed size {0} exceeds the limit")]
    TooLarge(usize),
    #[error("malformed tombstone generation")]
    Tombstone,
    #[error("malformed dependency list")]
    Dependencies,
}

/// What stored bytes hold.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// A cached value.
    Value(Opened),
    /// A tombstone: the entry was removed by the invalidation of this generation.
    Tombstone(u64),
}

/// An opened envelope.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) payload: Vec<u8>,
    pub(crate) sliding_ms: Option<u64>,
    pub(crate) deadline_ms: Option<u64>,
    /// The end of the fresh time of an entry with a stale window (unix ms).
    pub(crate) fresh_until_ms: Option<u64>,
    /// The format version (1 or [`VERSION_2`]).
    pub(crate) version: u8,
    /// Version 2: the dependencies and the version tokens the entry was filled under.
    pub(crate) deps: Vec<(String, u64)>,
}

/// Wraps `payload`, compressing it when it is longer than `compress_over` and LZ4 makes it
/// smaller.
pub(crate) fn seal(
    payload: &[u8],
    compress_over: usize,
    sliding_ms: Option<u64>,
    deadline_ms: Option<u64>,
    fresh_until_ms: Option<u64>,
) -> Vec<u8> {
    seal_as(
        VERSION,
        payload,
        compress_over,
        sliding_ms,
        deadline_ms,
        fresh_until_ms,
        &[],
    )
}

fn put_leb128(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn get_leb128(bytes: &[u8], at: &mut usize) -> Result<u64, EnvelopeError> {
    let mut n: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at).ok_or(EnvelopeError::Dependencies)?;
        *at += 1;
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err(EnvelopeError::Dependencies)
}

fn get_deps(bytes: &[u8], at: &mut usize) -> Result<Vec<(String, u64)>, EnvelopeError> {
    let count = get_leb128(bytes, at)?;
    // every dependency takes at least 9 bytes: a count larger than the rest is corrupt
    if count > (bytes.len().saturating_sub(*at) / 9) as u64 {
        return Err(EnvelopeError::Dependencies);
    }
    let mut deps = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len =
            usize::try_from(get_leb128(bytes, at)?).map_err(|_| EnvelopeError::Dependencies)?;
        let end = at.checked_add(len).ok_or(EnvelopeError::Dependencies)?;
        let name = bytes.get(*at..end).ok_or(EnvelopeError::Dependencies)?;
        let name = std::str::from_utf8(name).map_err(|_| EnvelopeError::Dependencies)?;
        *at = end;
        let token = bytes.get(*at..*at + 8).ok_or(EnvelopeError::Dependencies)?;
        *at += 8;
        deps.push((
            name.to_string(),
            u64::from_le_bytes(token.try_into().map_err(|_| EnvelopeError::Dependencies)?),
        ));
    }
    Ok(deps)
}

/// Wraps `payload` in format `version` ([`VERSION`], or [`VERSION_2`] listing `deps`: name,
/// version token; format 1 ignores them).
pub(crate) fn seal_as(
    version: u8,
    payload: &[u8],
    compress_over: usize,
    sliding_ms: Option<u64>,
    deadline_ms: Option<u64>,
    fresh_until_ms: Option<u64>,
    deps: &[(String, u64)],
) -> Vec<u8> {
    let compressed = (payload.len() > compress_over)
        .then(|| lz4_flex::block::compress_prepend_size(payload))
        .filter(|c| c.len() < payload.len());
    let mut flags = 0;
    if compressed.is_some() {
        flags |= F_LZ4;
    }
    if sliding_ms.is_some() {
        flags |= F_SLIDING;
    }
    if deadline_ms.is_some() {
        flags |= F_DEADLINE;
    }
    if fresh_until_ms.is_some() {
        flags |= F_FRESH;
    }
    let body: &[u8] = compressed.as_deref().unwrap_or(payload);
    let deps_len: usize = deps.iter().map(|(n, _)| n.len() + 12).sum();
    let mut out = Vec::with_capacity(3 + 24 + deps_len + 2 + body.len());
    out.extend_from_slice(&[MAGIC, version, flags]);
    if let Some(s) = sliding_ms {
        out.extend_from_slice(&s.to_le_bytes());
    }
    if let Some(d) = deadline_ms {
        out.extend_from_slice(&d.to_le_bytes());
    }
    if let Some(f) = fresh_until_ms {
        out.extend_from_slice(&f.to_le_bytes());
    }
    if version == VERSION_2 {
        put_leb128(&mut out, deps.len() as u64);
        for (name, token) in deps {
            put_leb128(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&token.to_le_bytes());
        }
    }
    out.extend_from_slice(body);
    out
}

/// The fresh-until time (unix ms) in the first bytes of a stored value, if it has one (what the
/// layered backend reads to bound an L1 copy of an entry with a stale window).
pub(crate) fn fresh_until(header: &[u8]) -> Option<u64> {
    // both formats put the words (sliding, deadline, fresh) right after the flags
    if header.len() < 3 || header[0] != MAGIC || !matches!(header[1], VERSION | VERSION_2) {
        return None;
    }
    let flags = header[2];
    if flags & F_FRESH == 0 || flags == F_TOMBSTONE {
        return None;
    }
    let at = 3 + 8 * usize::from(flags & F_SLIDING != 0) + 8 * usize::from(flags & F_DEADLINE != 0);
    Some(u64::from_le_bytes(header.get(at..at + 8)?.try_into().ok()?))
}

/// Bytes enough to hold any header ([`fresh_until`]).
pub(crate) const HEADER_MAX: usize = 3 + 24;

/// The bytes of a tombstone for generation `gen` (what `tombstone()` in `common.lua` writes).
#[cfg(test)]
pub(crate) fn tombstone(gen: u64) -> Vec<u8> {
    let mut out = vec![MAGIC, VERSION, F_TOMBSTONE];
    out.extend_from_slice(gen.to_string().as_bytes());
    out
}

/// Opens stored bytes. `max_decompressed` bounds the size an LZ4 header may claim.
pub(crate) fn open(mut bytes: Vec<u8>, max_decompressed: usize) -> Result<Stored, EnvelopeError> {
    if bytes.len() < 3 {
        return Err(match bytes.first() {
            Some(&m) if m != MAGIC => EnvelopeError::Magic(m),
            _ => EnvelopeError::Truncated,
        });
    }
    if bytes[0] != MAGIC {
        return Err(EnvelopeError::Magic(bytes[0]));
    }
    let version = bytes[1];
    if version != VERSION && version != VERSION_2 {
        return Err(EnvelopeError::Version(version));
    }
    let flags = bytes[2];
    if flags == F_TOMBSTONE && version == VERSION {
        let digits = &bytes[3..];
        if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
            return Err(EnvelopeError::Tombstone);
        }
        return std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .map(Stored::Tombstone)
            .ok_or(EnvelopeError::Tombstone);
    }
    if flags & !KNOWN != 0 {
        return Err(EnvelopeError::Flags(flags));
    }
    let mut at = 3;
    let word = |at: &mut usize| -> Result<u64, EnvelopeError> {
        let b = bytes.get(*at..*at + 8).ok_or(EnvelopeError::Truncated)?;
        *at += 8;
        Ok(u64::from_le_bytes(
            b.try_into().map_err(|_| EnvelopeError::Truncated)?,
        ))
    };
    let sliding_ms = if flags & F_SLIDING != 0 {
        Some(word(&mut at)?)
    } else {
        None
    };
    let deadline_ms = if flags & F_DEADLINE != 0 {
        Some(word(&mut at)?)
    } else {
        None
    };
    let fresh_until_ms = if flags & F_FRESH != 0 {
        Some(word(&mut at)?)
    } else {
        None
    };
    let deps = if version == VERSION_2 {
        get_deps(&bytes, &mut at)?
    } else {
        Vec::new()
    };
    let payload = if flags & F_LZ4 != 0 {
        let (size, block) = bytes[at..]
            .split_first_chunk::<4>()
            .ok_or(EnvelopeError::Truncated)?;
        let claimed = u32::from_le_bytes(*size) as usize;
        if claimed > max_decompressed {
            return Err(EnvelopeError::TooLarge(claimed));
        }
        // The decoder allocates the claimed size up front: a claim no block of this length can
        // produce is corrupt, and must not cost an allocation of up to `max_decompressed`.
        if claimed > block.len().saturating_mul(LZ4_MAX_RATIO) {
            return Err(EnvelopeError::Lz4(format!(
                "{claimed} bytes claimed by a {}-byte block",
                block.len()
            )));
        }
        let payload = lz4_flex::block::decompress(block, claimed)
            .map_err(|e| EnvelopeError::Lz4(e.to_string()))?;
        if payload.len() != claimed {
            return Err(EnvelopeError::Lz4(format!(
                "{} bytes decompressed, {claimed} claimed",
                payload.len()
            )));
        }
        payload
    } else {
        bytes.drain(..at);
        bytes
    };
    Ok(Stored::Value(Opened {
        payload,
        sliding_ms,
        deadline_ms,
        fresh_until_ms,
        version,
        deps,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: Vec<u8>) -> Opened {
        match open(bytes, 1 << 20).unwrap() {
            Stored::Value(o) => o,
            Stored::Tombstone(g) => panic!("tombstone {g}"),
        }
    }

    #[test]
    fn round_trips_plain_and_compressed() {
        let small = b"hello".to_vec();
        let sealed = seal(&small, 1024, None, None, None);
        assert_eq!(sealed[..3], [MAGIC, VERSION, 0]);
        assert_eq!(value(sealed).payload, small);

        let big = vec![7u8; 10_000];
        let sealed = seal(&big, 1024, Some(5_000), Some(99), None);
        assert!(sealed.len() < 1_000, "compressible payload is compressed");
        let o = value(sealed);
        assert_eq!(o.payload, big);
        assert_eq!(o.sliding_ms, Some(5_000));
        assert_eq!(o.deadline_ms, Some(99));
    }

    #[test]
    fn fresh_until_round_trips_and_reads_from_the_header() {
        let sealed = seal(b"v", 1024, Some(5), Some(6), Some(1_700_000_000_000));
        assert_eq!(
            fresh_until(&sealed[..HEADER_MAX.min(sealed.len())]),
            Some(1_700_000_000_000)
        );
        assert_eq!(value(sealed).fresh_until_ms, Some(1_700_000_000_000));
        let plain = seal(b"v", 1024, None, None, Some(42));
        assert_eq!(fresh_until(&plain), Some(42));
        assert_eq!(fresh_until(&seal(b"v", 1024, None, None, None)), None);
        assert_eq!(fresh_until(&tombstone(5)), None);
        // format 2: the same words, before the dependency list
        let deps = [("user:1".to_string(), 7u64)];
        let v2 = seal_as(VERSION_2, b"v", 1024, Some(9), None, Some(43), &deps);
        assert_eq!(fresh_until(&v2[..HEADER_MAX.min(v2.len())]), Some(43));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [
            vec![],
            vec![MAGIC],
            vec![1, 2, 3, 4],
            vec![MAGIC, 9, 0],
            vec![MAGIC, VERSION, 0x80],
            vec![MAGIC, VERSION, F_SLIDING, 1, 2],
            vec![MAGIC, VERSION, F_LZ4, 0xff, 0xff, 0xff, 0x7f, 1],
            vec![MAGIC, VERSION, F_LZ4, 10, 0, 0, 0, 0xff, 0xff],
            vec![MAGIC, VERSION, F_TOMBSTONE],
            vec![MAGIC, VERSION, F_TOMBSTONE, b'1', b'x'],
            vec![MAGIC, VERSION, F_TOMBSTONE | F_LZ4, b'1'],
            [&[MAGIC, VERSION, F_TOMBSTONE][..], &[b'9'; 21]].concat(),
            [&[MAGIC, VERSION, F_TOMBSTONE][..], b"99999999999999999999"].concat(),
        ] {
            assert!(open(bytes, 1 << 20).is_err());
        }
    }

    #[test]
    fn version_2_carries_its_dependencies() {
        let deps = vec![
            ("user:7".to_string(), 42u64),
            ("fn:m::f".to_string(), u64::MAX),
        ];
        let sealed = seal_as(VERSION_2, b"v", 1024, None, None, Some(9), &deps);
        assert_eq!(sealed[..2], [MAGIC, VERSION_2]);
        let o = value(sealed.clone());
        assert_eq!(
            (o.version, o.deps, o.payload),
            (VERSION_2, deps, b"v".to_vec())
        );
        assert_eq!(o.fresh_until_ms, Some(9));
        let big = vec![3u8; 10_000];
        let o = value(seal_as(VERSION_2, &big, 100, None, None, None, &[]));
        assert_eq!((o.payload, o.deps), (big, vec![]));
        assert_eq!(value(seal(b"v", 1024, None, None, None)).version, VERSION);
        // truncations and absurd counts are errors
        for cut in 4..sealed.len() - 1 {
            let r = open(sealed[..cut].to_vec(), 1 << 20);
            assert!(
                !matches!(r, Ok(Stored::Value(ref o)) if o.deps.len() == 2),
                "cut at {cut}"
            );
        }
        assert!(open(vec![MAGIC, VERSION_2, 0, 0xff, 0xff, 0xff, 0x0f], 1 << 20).is_err());
        assert!(open(vec![MAGIC, VERSION_2, F_TOMBSTONE, b'1'], 1 << 20).is_err());
    }

    #[test]
    fn tombstones_open_as_tombstones() {
        let t = tombstone(1_718_000_000_123_456);
        assert_eq!(t[..3], [MAGIC, VERSION, F_TOMBSTONE]);
        assert_eq!(
            open(t, 1 << 20),
            Ok(Stored::Tombstone(1_718_000_000_123_456))
        );
        assert_eq!(open(tombstone(0), 16), Ok(Stored::Tombstone(0)));
        assert_eq!(
            open(tombstone(u64::MAX), 16),
            Ok(Stored::Tombstone(u64::MAX))
        );
    }

    /// The Lua side writes the same bytes and ttl as this module reads and documents.
    #[test]
    fn lua_tombstones_match() {
        let common = include_str!("scripts/common.lua");
        assert!(
            common.contains(
                &format!("local TOMB = string.char({MAGIC:#04X}, {VERSION}, {F_TOMBSTONE})")
                    .replace("0XCA", "0xCA")
            ),
            "common.lua tombstone header"
        );
        assert!(common.contains(&format!("local TOMB_PX = {TOMBSTONE_TTL_MS}\n")));
    }
}
