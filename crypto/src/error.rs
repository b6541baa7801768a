//! The one error type of the crate.
//!
//! Messages name what failed and where (segment index, byte offset, key ids,
//! key-file path and line) so an operator can act on them, but never carry key
//! bytes, plaintext or PII: errors end up in logs and in replies to clients.

/// Everything that can go wrong while encrypting, decrypting, scanning or
/// handling keys.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The bytes are damaged: bad magic, a crc mismatch, an impossible length,
    /// data after the last segment. Detected without any key, so transport
    /// and disk corruption show up here rather than as `Tampered`.
    #[error("corrupt ciphertext: {0}")]
    Corrupt(String),
    /// The crc was fine but authentication failed: the data was altered
    /// deliberately, segments were reordered or moved from another file, or
    /// the file context or key does not match the one used to encrypt.
    #[error("authentication failed: {0}")]
    Tampered(String),
    /// The stream ended before its last segment: the file was cut short or
    /// trailing segments were dropped.
    #[error("ciphertext truncated: the stream ended before its last segment")]
    Truncated,
    /// The key offered is not the one the data was encrypted or wrapped with.
    /// Names key ids and KEK ids, never key material.
    #[error("wrong key: {0}")]
    WrongKey(String),
    /// A key file could not be read, parsed or created. Names the path and
    /// line, never the file's contents.
    #[error("key file: {0}")]
    KeyFile(String),
    /// A PKCS#11 module (HSM) could not be loaded, logged into or used, or
    /// the key-encryption key is missing from the token. Names the module
    /// path, token label and key label, never the PIN.
    #[error("HSM: {0}")]
    Hsm(String),
    /// The random source failed to produce bytes.
    #[error("the random source failed to produce bytes")]
    Random,
    /// A size limit was exceeded (segment size, number of segments).
    #[error("too large: {0}")]
    TooLarge(String),
    /// A caller passed an unusable argument (for example a segment size of 0
    /// or a KEK id with whitespace).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Well-formed data in a format version or key-file version this build
    /// does not know; most likely written by a newer release.
    #[error("unsupported format: {0}")]
    Unsupported(String),
}
