//! The pub/sub invalidation message decoder (messages read from a Redis channel: untrusted).
//!
//! Properties: no panic; a decoded message re-encodes to a message that decodes to the same
//! value, with the same node id text (up to letter case) and no more bytes than were read, and
//! holds no more operations than 3-byte operations could fit; and the other way round, a
//! message built from the input (any keys) encodes and decodes to itself.
#![no_main]

use cache_redis::{NodeId, SyncMessage, SyncOp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = SyncMessage::decode(data) {
        let bytes = msg.encode();
        assert_eq!(SyncMessage::decode(&bytes).as_ref(), Ok(&msg));
        assert!(
            bytes[4..20].eq_ignore_ascii_case(&data[4..20]),
            "node id {:?} read as {}",
            String::from_utf8_lossy(&data[4..20]),
            msg.node
        );
        assert!(bytes.len() <= data.len());
        assert!(msg.ops.len() <= (data.len() - 21) / 3);
    }

    // Encode then decode a message made of the input: operations separated by 0xff bytes, the
    // first byte of each choosing the kind, the rest (lossily UTF-8) the key.
    let node = data
        .get(..8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let ops = data
        .split(|&b| b == 0xff)
        .map(|op| match op.split_first() {
            None => SyncOp::Clear,
            Some((kind, key)) => {
                let key = String::from_utf8_lossy(key).into_owned();
                if kind & 1 == 0 {
                    SyncOp::Remove(key)
                } else {
                    SyncOp::Invalidate(key)
                }
            }
        })
        .collect();
    let msg = SyncMessage {
        node: NodeId(node),
        ops,
    };
    assert_eq!(SyncMessage::decode(&msg.encode()), Ok(msg));
});
