//! The one hash the replicator uses: BLAKE3, written as lower-case hex.
//!
//! It names stored ciphertext (the owner hashes each file as it stores it;
//! the hash travels in the file's record and `verify --deep` recomputes it
//! at every site) and builds the anti-entropy digests. BLAKE3 rather than
//! SHA-256 because the owner hashes every byte it stores: on this project's
//! machines BLAKE3 costs about 0.1 s of one core per GiB, SHA-256 (even with
//! the SHA extensions) 0.5 s, which was the largest single cost of a large
//! put. Both are collision resistant; no key is involved, so any site can
//! check any copy.

/// An incremental hash.
#[derive(Default)]
pub struct Hasher(blake3::Hasher);

impl Hasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn update(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update(bytes);
        self
    }

    /// The hash, as hex.
    pub fn hex(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// The hash of `bytes`, as hex.
pub fn hex(bytes: &[u8]) -> String {
    Hasher::new().update(bytes).hex()
}
