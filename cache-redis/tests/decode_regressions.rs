//! The two decoders of bytes read from Redis (untrusted): stored envelopes and pub/sub sync
//! messages. Hand-made nasty inputs and every input the fuzz targets (`fuzz/` at the workspace
//! root) found: each is an error (a miss, a flush), never a panic, and decoding allocates in
//! proportion to the input, never what a length field in it claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cache_redis::fuzzing::{decode_envelope, open_envelope, seal_envelope, Envelope};
use cache_redis::{NodeId, SyncMessage, SyncOp};

/// The system allocator, adding up the bytes each allocation on the calling thread asks for.
struct CountingBytes;

thread_local! {
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

fn count(size: usize) {
    let _ = BYTES.try_with(|b| b.set(b.get().saturating_add(size)));
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: the caller's contract, passed on
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingBytes = CountingBytes;

/// The bytes `f` asked the allocator for on this thread (a bound on what it held at once).
fn allocated_by<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = BYTES.with(Cell::get);
    let r = f();
    (r, BYTES.with(Cell::get) - before)
}

const MAGIC: u8 = 0xCA;
const VERSION: u8 = 1;
const LZ4: u8 = 1;
const SLIDING: u8 = 2;
const DEADLINE: u8 = 4;
const TOMBSTONE: u8 = 8;

/// The decompression limit of the default configuration (`DEFAULT_MAX_PAYLOAD`).
const DEFAULT_LIMIT: usize = 8 << 20;

/// `bytes` is not an envelope under either limit, and finding that out allocates at most
/// `bound` bytes (the copy of the input included).
#[track_caller]
fn rejected(bytes: &[u8], bound: usize) {
    for limit in [DEFAULT_LIMIT, usize::MAX] {
        let (r, used) = allocated_by(|| decode_envelope(bytes, limit));
        assert!(r.is_err(), "{bytes:02x?} decoded as {r:?}");
        assert!(!open_envelope(bytes, limit));
        assert!(
            used <= bound,
            "{bytes:02x?} ({}): allocated {used} bytes",
            r.unwrap_err()
        );
    }
}

#[test]
fn envelope_headers() {
    for bytes in [
        &[][..],
        &[MAGIC],
        &[MAGIC, VERSION],
        &[0x00, VERSION, 0],
        b"{\"json\":1}",
        &[0x93, 0x01, 0x02, 0x03], // bare MessagePack
        &[MAGIC, 0, 0],
        &[MAGIC, 2, 0, b'x'],
        &[MAGIC, 0xff, 0],
        &[MAGIC, VERSION, 0x10],
        &[MAGIC, VERSION, 0x80, 1, 2, 3],
        &[MAGIC, VERSION, 0xff],
        &[MAGIC, VERSION, SLIDING],
        &[MAGIC, VERSION, SLIDING, 1, 2, 3, 4, 5, 6, 7],
        &[MAGIC, VERSION, DEADLINE, 1],
        &[
            MAGIC,
            VERSION,
            SLIDING | DEADLINE,
            1,
            2,
            3,
            4,
            5,
            6,
            7,
            8,
            1,
            2,
        ],
        &[
            MAGIC,
            VERSION,
            SLIDING | DEADLINE | LZ4,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
        ],
    ] {
        rejected(bytes, 256 + bytes.len());
    }
}

#[test]
fn envelope_tombstones() {
    for digits in [
        &b""[..],
        b"x",
        b"1x",
        b" 1",
        b"+1",
        b"-1",
        b"1.0",
        b"18446744073709551616", // u64::MAX + 1
        b"99999999999999999999",
        b"000000000000000000001", // 21 digits
        &[b'9'; 4096],
    ] {
        let bytes = [&[MAGIC, VERSION, TOMBSTONE][..], digits].concat();
        rejected(&bytes, 256 + bytes.len());
        // other flags with the tombstone bit are not tombstones
        for other in [LZ4, SLIDING, DEADLINE] {
            let bytes = [&[MAGIC, VERSION, TOMBSTONE | other][..], b"1"].concat();
            rejected(&bytes, 256 + bytes.len());
        }
    }
    let max = [&[MAGIC, VERSION, TOMBSTONE][..], b"18446744073709551615"].concat();
    assert_eq!(decode_envelope(&max, 0), Ok(Envelope::Tombstone(u64::MAX)));
    let padded = [&[MAGIC, VERSION, TOMBSTONE][..], b"007"].concat();
    assert_eq!(decode_envelope(&padded, 0), Ok(Envelope::Tombstone(7)));
}

/// An LZ4 envelope whose size header claims `claimed` bytes, followed by `block`.
fn lz4(claimed: u32, block: &[u8]) -> Vec<u8> {
    [&[MAGIC, VERSION, LZ4][..], &claimed.to_le_bytes(), block].concat()
}

#[test]
fn envelope_compressed_size_claims() {
    // The size header alone, or cut short.
    for bytes in [
        vec![MAGIC, VERSION, LZ4],
        vec![MAGIC, VERSION, LZ4, 0xff],
        vec![MAGIC, VERSION, LZ4, 0xff, 0xff, 0xff],
        lz4(u32::MAX, &[]),
        lz4(1, &[]),
    ] {
        rejected(&bytes, 256 + bytes.len());
    }
    // A huge claimed size with a few bytes behind it: over the default limit it is `TooLarge`;
    // under it (or with no limit) it must not be allocated either: a block of n bytes cannot
    // expand to more than 255 n.
    for claimed in [
        u32::MAX,
        u32::MAX / 2,
        DEFAULT_LIMIT as u32 + 1,
        DEFAULT_LIMIT as u32,
        1 << 20,
        255 * 4 + 1,
    ] {
        let bytes = lz4(claimed, &[0x1f, b'a', 1, 0]);
        rejected(&bytes, 256 + bytes.len());
    }
    // A literal run claiming more than it holds.
    rejected(&lz4(100, &[0xf0, 0xff, 0xff, 0xff, 0xff, b'x']), 1024);
    // A match before the start of the output.
    rejected(&lz4(64, &[0x0f, 0x10, 0x00]), 1024);
}

/// Found by the `envelope` fuzz target (minimized): a 5-byte LZ4 block behind a size header of
/// 466 MiB, which the decoder allocated before reading the block (with no limit configured;
/// the default limit let such claims of up to 8 MiB through).
#[test]
fn envelope_fuzz_oom_claimed_size() {
    let bytes = [
        0xca, 0x01, 0x07, 0x88, 0x13, 0x04, 0x00, 0x00, 0x00, 0x1d, 0x1d, 0x1d, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x1d, 0x1d, 0x1d, 0x00, 0x00,
    ];
    rejected(&bytes, 256 + bytes.len());
}

#[test]
fn envelope_compressed_size_must_match() {
    let payload = vec![b'z'; 5_000];
    let sealed = seal_envelope(&payload, 0, None, Some(42));
    assert_eq!(sealed[2], LZ4 | DEADLINE, "compressed");
    let at = 3 + 8;
    let claimed = u32::from_le_bytes(sealed[at..at + 4].try_into().unwrap());
    assert_eq!(claimed, 5_000);
    for wrong in [0, 1, 4_999, 5_001, 10_000] {
        let mut bytes = sealed.clone();
        bytes[at..at + 4].copy_from_slice(&u32::to_le_bytes(wrong));
        rejected(&bytes, 64 + bytes.len() + 255 * (bytes.len() - at - 4));
    }
    assert_eq!(
        decode_envelope(&sealed, 5_000),
        Ok(Envelope::Value {
            payload,
            sliding_ms: None,
            deadline_ms: Some(42),
        })
    );
    assert!(decode_envelope(&sealed, 4_999)
        .unwrap_err()
        .contains("exceeds the limit"));
}

/// The expansion bound does not reject what LZ4 really writes, even at its highest ratio.
#[test]
fn envelope_highly_compressed_values_open() {
    for len in [0, 1, 16, 255, 4096, 1 << 20, 3 << 20] {
        let payload = vec![0u8; len];
        let sealed = seal_envelope(&payload, 0, Some(1), None);
        let (r, used) = allocated_by(|| decode_envelope(&sealed, DEFAULT_LIMIT));
        assert_eq!(
            r,
            Ok(Envelope::Value {
                payload,
                sliding_ms: Some(1),
                deadline_ms: None,
            })
        );
        assert!(used <= 256 + sealed.len() + len, "{len}: allocated {used}");
    }
}

#[test]
fn envelope_plain_values_open() {
    let sealed = seal_envelope(b"\x93\x01\x02\x03", usize::MAX, None, None);
    assert_eq!(sealed, [MAGIC, VERSION, 0, 0x93, 1, 2, 3]);
    assert!(open_envelope(&sealed, 0));
    assert!(open_envelope(&[MAGIC, VERSION, 0], 0), "an empty payload");
    let both = [
        &[MAGIC, VERSION, SLIDING | DEADLINE][..],
        &[0xff; 16],
        b"payload",
    ]
    .concat();
    assert_eq!(
        decode_envelope(&both, 0),
        Ok(Envelope::Value {
            payload: b"payload".to_vec(),
            sliding_ms: Some(u64::MAX),
            deadline_ms: Some(u64::MAX),
        })
    );
}

const NODE: &[u8] = b"cs1:00000000000000a7:";

/// `bytes` is not a sync message, and finding that out allocates at most `bound` bytes.
#[track_caller]
fn unreadable(bytes: &[u8], bound: usize) {
    let (r, used) = allocated_by(|| SyncMessage::decode(bytes));
    assert!(
        r.is_err(),
        "{:?} decoded as {r:?}",
        String::from_utf8_lossy(bytes)
    );
    assert!(
        used <= bound,
        "{:?}: allocated {used} bytes",
        String::from_utf8_lossy(bytes)
    );
}

#[test]
fn sync_message_headers() {
    for bytes in [
        &b""[..],
        b"c",
        b"cs1",
        b"cs1:",
        b"cs0:00000000000000a7:",
        b"cs2:00000000000000a7:c0:",
        b"CS1:00000000000000a7:",
        b"cs1:00000000000000a7",
        b"cs1:00000000000000a7k",
        b"cs1:0000000000000a7:c0:",
        b"cs1:000000000000000a7:c0:",
        b"cs1:00000000000000g7:",
        b"cs1:0x000000000000a7:",
        b"cs1:                a7:",
        b"cs1:-00000000000000a:",
        b"cs1:\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff:",
    ] {
        unreadable(bytes, 0);
    }
}

/// Found by the `sync_message` fuzz target: `u64::from_str_radix` takes a leading `+`, so a
/// node id that is not 16 hex digits was read (and re-encoded differently).
#[test]
fn sync_message_fuzz_node_id_sign() {
    let found = [
        0x63, 0x73, 0x31, 0x3a, 0x2b, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x39, 0x30, 0x61,
        0x62, 0x63, 0x64, 0x65, 0x66, 0x3a, 0x6b, 0x31, 0x37, 0x3a, 0x61, 0x70, 0x70, 0x3a, 0x3a,
        0x67, 0x28, 0x22, 0x36, 0x64, 0x62, 0x61, 0x37, 0x39, 0x65, 0x66, 0x3a, 0x6b, 0x31, 0x37,
        0x3a, 0x61, 0x70, 0x7a, 0x32, 0x31, 0x32, 0x33, 0x34, 0x00, 0x00, 0x00, 0x00, 0x32, 0x29,
        0x64, 0x60, 0x3a,
    ];
    unreadable(&found, 0);
    unreadable(b"cs1:+00000000000000a:", 0);
    unreadable(b"cs1:+00000000000000a:c0:", 0);
}

#[test]
fn sync_message_operations() {
    for op in [
        &b"k"[..],
        b"k:",
        b"k1",
        b"k:a",
        b"kx:a",
        b"k+1:a",
        b"k-1:a",
        b"k 1:a",
        b"k1 :a",
        b"k2:a",
        b"k1:\xff",
        b"d2:\xc3",
        b"c1:x",
        b"c01:x",
        b"x0:",
        b"K0:",
        b"\x000:",
        b"k18446744073709551615:a", // usize::MAX: start + len overflows
        b"k18446744073709551616:a", // usize::MAX + 1
        b"k99999999999999999999999999:a",
        b"k4294967296:abc", // a 4 GiB key
        b"c0:k1:ac0:d999:x",
    ] {
        let bytes = [NODE, op].concat();
        // the operations read before the bad one, and the key text of the one under way
        unreadable(&bytes, 256);
    }
}

#[test]
fn sync_message_valid() {
    let node = NodeId(0xa7);
    for (bytes, ops) in [
        (&b""[..], vec![]),
        (b"c0:", vec![SyncOp::Clear]),
        (b"k0:", vec![SyncOp::Remove(String::new())]),
        (b"k01:a", vec![SyncOp::Remove("a".into())]),
        (
            b"d3:a:bk2:\xc3\xa9c0:",
            vec![
                SyncOp::Invalidate("a:b".into()),
                SyncOp::Remove("\u{e9}".into()),
                SyncOp::Clear,
            ],
        ),
    ] {
        let msg = SyncMessage::decode(&[NODE, bytes].concat()).unwrap();
        assert_eq!(msg, SyncMessage { node, ops });
        assert_eq!(SyncMessage::decode(&msg.encode()), Ok(msg));
    }
    let upper = SyncMessage::decode(b"cs1:00000000000000A7:").unwrap();
    assert_eq!(upper.node, node);
    let max = SyncMessage::decode(b"cs1:ffffffffffffffff:").unwrap();
    assert_eq!(max.node, NodeId(u64::MAX));
}

/// Many tiny operations: the message grows with the input only.
#[test]
fn sync_message_many_operations() {
    let bytes = [NODE, &b"c0:".repeat(10_000)].concat();
    let (r, used) = allocated_by(|| SyncMessage::decode(&bytes));
    assert_eq!(r.unwrap().ops.len(), 10_000);
    // a 32-byte `SyncOp` per 3 input bytes, in a vector that grew by doubling (the sum of its
    // sizes is under twice the last, itself under twice what it holds)
    assert!(used <= 48 * bytes.len(), "allocated {used}");
}

/// Writes the seed corpus of the fuzz targets (`fuzz/corpus/<target>/seed-*`):
/// `cargo test -p cache-redis --test decode_regressions -- --ignored write_seed_corpus`.
#[test]
#[ignore = "writes the fuzz seed corpus"]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
    };
    let msgpack = b"\x82\xa2id\x07\xa4name\xa5alice";
    let text = b"the quick brown fox jumps over the lazy dog; ".repeat(8);
    for (name, bytes) in [
        ("plain-empty", seal_envelope(b"", usize::MAX, None, None)),
        ("plain", seal_envelope(msgpack, usize::MAX, None, None)),
        (
            "sliding",
            seal_envelope(msgpack, usize::MAX, Some(30_000), None),
        ),
        (
            "deadline",
            seal_envelope(msgpack, usize::MAX, None, Some(1_718_000_000_000)),
        ),
        (
            "both",
            seal_envelope(msgpack, usize::MAX, Some(5_000), Some(1_718_000_000_000)),
        ),
        ("lz4-text", seal_envelope(&text, 0, None, None)),
        (
            "lz4-zeros",
            seal_envelope(&[0; 2000], 0, Some(5_000), Some(99)),
        ),
        (
            "tombstone",
            [&[MAGIC, VERSION, TOMBSTONE][..], b"1718000000123456"].concat(),
        ),
    ] {
        assert!(open_envelope(&bytes, DEFAULT_LIMIT), "{name}");
        write("envelope", name, &bytes);
    }
    let node = NodeId(0x0123_4567_89ab_cdef);
    for (name, ops) in [
        ("empty", vec![]),
        ("clear", vec![SyncOp::Clear]),
        ("remove", vec![SyncOp::Remove("app::f(1)".into())]),
        ("invalidate", vec![SyncOp::Invalidate("user:7".into())]),
        (
            "mixed",
            vec![
                SyncOp::Remove("app::g(\"k:\u{e9}\", 2)".into()),
                SyncOp::Invalidate("".into()),
                SyncOp::Clear,
                SyncOp::Invalidate("order:42".into()),
            ],
        ),
    ] {
        write("sync_message", name, &SyncMessage { node, ops }.encode());
    }
}
