//! The invalidation message format of pub/sub synchronization.
//!
//! Only keys travel, never values. One message carries the operations a node's publisher found
//! queued together:
//!
//! ```text
//! cs1:<node id>:<op><len>:<bytes><op><len>:<bytes>...
//! ```
//!
//! `cs1` names the format and its version (1); `<node id>` is the sender's [`NodeId`] (16 hex
//! digits), so a node ignores its own messages; each operation is one byte (`k` remove a key,
//! `d` invalidate a dependency, `c` clear everything) followed by the decimal byte length of its
//! argument, `:` and the argument itself (any bytes, so key texts need no escaping). A message
//! that cannot be read (another version, truncated) is treated as "something was invalidated":
//! the receiver flushes its local cache.

use std::fmt;

/// The format version written in every message.
pub const FORMAT_VERSION: u8 = 1;

const PREFIX: &[u8] = b"cs1:";

/// The identity of a node (one synchronized cache instance), random unless chosen.
///
/// ```
/// let a = cache_redis::NodeId::random();
/// let b = cache_redis::NodeId::random();
/// assert_ne!(a, b);
/// assert_eq!(a.to_string().len(), 16);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// A fresh random node id (process id, time and a per-process counter, hashed with a
    /// randomly seeded hasher).
    pub fn random() -> Self {
        use std::hash::{BuildHasher, Hasher};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        NodeId(h.finish())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One synchronized operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOp {
    /// An entry was removed (by its readable key text); dependents go with it.
    Remove(String),
    /// A dependency was invalidated.
    Invalidate(String),
    /// Every entry was removed.
    Clear,
}

impl SyncOp {
    fn tag(&self) -> u8 {
        match self {
            SyncOp::Remove(_) => b'k',
            SyncOp::Invalidate(_) => b'd',
            SyncOp::Clear => b'c',
        }
    }
    fn arg(&self) -> &[u8] {
        match self {
            SyncOp::Remove(s) | SyncOp::Invalidate(s) => s.as_bytes(),
            SyncOp::Clear => b"",
        }
    }
    /// The encoded size of this operation in a message.
    pub(crate) fn encoded_len(&self) -> usize {
        1 + 20 + 1 + self.arg().len()
    }
}

/// A message: the sender and its operations.
///
/// ```
/// use cache_redis::{NodeId, SyncMessage, SyncOp};
/// let msg = SyncMessage {
///     node: NodeId(7),
///     ops: vec![SyncOp::Remove("app::f(1)".into()), SyncOp::Invalidate("user:7".into()), SyncOp::Clear],
/// };
/// let bytes = msg.encode();
/// assert!(bytes.starts_with(b"cs1:0000000000000007:k9:app::f(1)d6:user:7c0:"));
/// assert_eq!(SyncMessage::decode(&bytes), Ok(msg));
/// assert!(SyncMessage::decode(b"cs9:whatever").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncMessage {
    /// The node that published it.
    pub node: NodeId,
    /// What it invalidated, in order.
    pub ops: Vec<SyncOp>,
}

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unreadable cache sync message: {0}")]
pub struct MessageError(&'static str);

impl SyncMessage {
    /// The bytes published on the channel.
    pub fn encode(&self) -> Vec<u8> {
        let len = PREFIX.len() + 17 + self.ops.iter().map(SyncOp::encoded_len).sum::<usize>();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(format!("{}:", self.node).as_bytes());
        for op in &self.ops {
            out.push(op.tag());
            out.extend_from_slice(op.arg().len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(op.arg());
        }
        out
    }

    /// Reads a message; any deviation from the format is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, MessageError> {
        let rest = bytes
            .strip_prefix(PREFIX)
            .ok_or(MessageError("unknown format or version"))?;
        if rest.len() < 17 || rest[16] != b':' {
            return Err(MessageError("bad node id"));
        }
        let node = std::str::from_utf8(&rest[..16])
            .ok()
            // `from_str_radix` would also take a leading `+`
            .filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|s| u64::from_str_radix(s, 16).ok())
            .ok_or(MessageError("bad node id"))?;
        let mut rest = &rest[17..];
        let mut ops = Vec::new();
        while let Some((&tag, tail)) = rest.split_first() {
            let colon = tail
                .iter()
                .position(|&b| b == b':')
                .ok_or(MessageError("missing length"))?;
            let len: usize = std::str::from_utf8(&tail[..colon])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or(MessageError("bad length"))?;
            let start = colon + 1;
            let arg = tail
                .get(start..start.checked_add(len).ok_or(MessageError("bad length"))?)
                .ok_or(MessageError("truncated"))?;
            let text =
                || String::from_utf8(arg.to_vec()).map_err(|_| MessageError("key is not UTF-8"));
            ops.push(match tag {
                b'k' => SyncOp::Remove(text()?),
                b'd' => SyncOp::Invalidate(text()?),
                b'c' if len == 0 => SyncOp::Clear,
                _ => return Err(MessageError("unknown operation")),
            });
            rest = &tail[start + len..];
        }
        Ok(SyncMessage {
            node: NodeId(node),
            ops,
        })
    }
}
