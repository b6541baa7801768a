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

    /// The hash's 32 bytes.
    pub fn bytes(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// The hash of `bytes`, as hex.
pub fn hex(bytes: &[u8]) -> String {
    Hasher::new().update(bytes).hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// It is BLAKE3 (an auditor can recompute a record's hash with `b3sum`),
    /// and hashing in pieces gives the same as hashing at once.
    #[test]
    fn is_blake3_and_incremental() {
        assert_eq!(hex(b""), "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262");
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut pieces = Hasher::new();
        for chunk in data.chunks(4097) {
            pieces.update(chunk);
        }
        assert_eq!(pieces.hex(), hex(&data));
        assert_ne!(hex(&data[1..]), hex(&data));
    }
}
