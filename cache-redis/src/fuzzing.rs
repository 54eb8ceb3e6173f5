//! Entry points for the fuzz targets (`fuzz/` at the workspace root) and the decoder
//! regression tests: the private envelope decoder, reachable from outside the crate.
//!
//! Not part of the public API: hidden from the documentation, no stability promise.

use crate::envelope;

/// What [`decode_envelope`] read from stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A cached value.
    Value {
        /// The (decompressed) MessagePack payload.
        payload: Vec<u8>,
        /// The sliding expiration in ms, if any.
        sliding_ms: Option<u64>,
        /// The absolute deadline in unix ms, if any.
        deadline_ms: Option<u64>,
    },
    /// A tombstone left by the invalidation of this generation.
    Tombstone(u64),
}

/// Opens `bytes` as the backend does when it reads an entry; `true` if they decoded (a value
/// or a tombstone), `false` if the backend would treat them as a corrupt entry (a miss).
pub fn open_envelope(bytes: &[u8], max_decompressed: usize) -> bool {
    envelope::open(bytes.to_vec(), max_decompressed).is_ok()
}

/// Opens `bytes` as the backend does when it reads an entry: what they hold, or why they are
/// not a valid envelope (the error's message).
pub fn decode_envelope(bytes: &[u8], max_decompressed: usize) -> Result<Envelope, String> {
    match envelope::open(bytes.to_vec(), max_decompressed) {
        Ok(envelope::Stored::Value(o)) => Ok(Envelope::Value {
            payload: o.payload,
            sliding_ms: o.sliding_ms,
            deadline_ms: o.deadline_ms,
        }),
        Ok(envelope::Stored::Tombstone(gen)) => Ok(Envelope::Tombstone(gen)),
        Err(e) => Err(e.to_string()),
    }
}

/// Wraps `payload` as the backend does when it stores a value (LZ4 when longer than
/// `compress_over` and compression makes it smaller).
pub fn seal_envelope(
    payload: &[u8],
    compress_over: usize,
    sliding_ms: Option<u64>,
    deadline_ms: Option<u64>,
) -> Vec<u8> {
    envelope::seal(payload, compress_over, sliding_ms, deadline_ms, None)
}
