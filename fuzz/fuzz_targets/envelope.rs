//! The envelope decoder (stored values read back from Redis: untrusted bytes).
//!
//! Properties: no panic; no allocation that a length field asks for beyond what the input can
//! hold (run with `-malloc_limit_mb`); a tighter decompression limit only turns successes into
//! errors; what decodes re-seals (plain and compressed) and opens to the same value; a plain
//! envelope re-seals to the same bytes; a tombstone's canonical form decodes to it.
#![no_main]

use cache_redis::fuzzing::{decode_envelope, open_envelope, seal_envelope, Envelope};
use libfuzzer_sys::fuzz_target;

/// A small decompression limit, to exercise the limit check.
const SMALL_LIMIT: usize = 1 << 10;

fuzz_target!(|data: &[u8]| {
    // No limit: the most generous configuration (whatever an LZ4 header may claim in its u32).
    let unlimited = decode_envelope(data, usize::MAX);
    assert_eq!(open_envelope(data, usize::MAX), unlimited.is_ok());

    match (&unlimited, decode_envelope(data, SMALL_LIMIT)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b, "the limit changed what decoded"),
        (Err(_), Ok(b)) => panic!("a tighter limit accepted {b:?}"),
        (Ok(Envelope::Value { payload, .. }), Err(e)) => assert!(
            data[2] & 1 != 0 && payload.len() > SMALL_LIMIT,
            "{e}: a {}-byte payload",
            payload.len()
        ),
        (Ok(t), Err(e)) => panic!("{e}: {t:?}"),
        (Err(_), Err(_)) => {}
    }

    match unlimited {
        Ok(Envelope::Value {
            payload,
            sliding_ms,
            deadline_ms,
        }) => {
            let value = Envelope::Value {
                payload: payload.clone(),
                sliding_ms,
                deadline_ms,
            };
            for compress_over in [0, usize::MAX] {
                let sealed = seal_envelope(&payload, compress_over, sliding_ms, deadline_ms);
                assert_eq!(decode_envelope(&sealed, payload.len()).as_ref(), Ok(&value));
            }
            if data[2] & 1 == 0 {
                let plain = seal_envelope(&payload, usize::MAX, sliding_ms, deadline_ms);
                assert_eq!(plain, data, "a plain envelope re-seals to its bytes");
            }
        }
        Ok(Envelope::Tombstone(gen)) => {
            let canonical = [&data[..3], gen.to_string().as_bytes()].concat();
            assert_eq!(decode_envelope(&canonical, 0), Ok(Envelope::Tombstone(gen)));
        }
        Err(_) => {}
    }
});
