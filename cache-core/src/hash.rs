//! Hashes: a seeded fast hash for in-process lookups and SHA-256 for stable long-key digests.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

use sha2::Digest;

/// SHA-256 of `bytes` (stable everywhere; used to shorten long readable keys).
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

#[inline]
fn state() -> &'static foldhash::fast::RandomState {
    static STATE: OnceLock<foldhash::fast::RandomState> = OnceLock::new();
    STATE.get_or_init(foldhash::fast::RandomState::default)
}

/// The in-process hash of a binary key: seeded per process (so it cannot be predicted from
/// outside), never stored or sent anywhere.
#[inline(always)]
pub fn local_hash(bytes: &[u8]) -> u64 {
    let mut h = state().build_hasher();
    h.write(bytes);
    h.finish()
}
