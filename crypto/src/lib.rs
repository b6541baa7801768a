//! Encryption at rest for tandem (DESIGN.md §3).
//!
//! - Files: one random 256-bit [`DataKey`] per file, encrypted as a stream of
//!   AES-256-GCM segments ([`Encryptor`], [`Decryptor`]) with an
//!   authenticated header, counter nonces, a last-segment flag and the file
//!   context bound as associated data. Every segment carries a crc32 of its
//!   ciphertext so [`SegmentScanner`] can check integrity without any key.
//! - Keys: data and PII keys are wrapped by a key-encryption key held by a
//!   [`KeyProvider`] ([`LocalKeyFile`] for development, [`Pkcs11Provider`]
//!   for an HSM; [`KeyRing`] for rotation); only [`WrappedKey`]s are stored
//!   and replicated.
//! - PII fields: SM4-GCM, field by field ([`seal_pii`], [`open_pii`]).
//! - Randomness comes through [`RandomSource`] so simulations are replayable.

mod error;
mod framing;
mod header;
mod key_file;
mod key_ring;
mod keys;
mod pii;
mod pkcs11;
mod random;
mod scanner;
mod segment;
mod wrap_format;

pub use error::CryptoError;
pub use header::{ciphertext_len, FileContext, FileHeader, DEFAULT_SEGMENT_SIZE, FORMAT_VERSION, HEADER_LEN, MAX_SEGMENT_SIZE, SEGMENT_OVERHEAD};
pub use key_file::{LocalKeyFile, KEY_FILE_TAG};
pub use key_ring::KeyRing;
pub use keys::{key_id_hex, DataKey, KeyProvider, PiiKey, WrappedKey, DATA_KEY_LEN, KEY_ID_LEN, PII_KEY_LEN};
pub use pii::{open_pii, seal_pii, PII_OVERHEAD};
pub use pkcs11::{Pkcs11Provider, Pkcs11Token};
pub use random::{RandomSource, SeededRandomSource, SystemRandomSource};
pub use scanner::{ScanSummary, SegmentScanner};
pub use segment::{Decryptor, Encryptor};
pub use wrap_format::{kek_id_problem, MAX_KEK_ID_LEN};
pub use zeroize;
