//! Plaintext keys, wrapped keys and the key-provider seam.
//!
//! Plaintext keys exist only in memory: they are zeroized on drop, cannot be
//! cloned or serialized, and their `Debug` shows only the (public) key id.
//! What is stored and replicated is a [`WrappedKey`].

use crate::{CryptoError, RandomSource};
use std::fmt;
use zeroize::Zeroizing;

/// Length of a key id in bytes.
pub const KEY_ID_LEN: usize = 16;
/// Length of a data key (AES-256) in bytes.
pub const DATA_KEY_LEN: usize = 32;
/// Length of a PII key (SM4) in bytes.
pub const PII_KEY_LEN: usize = 16;

/// Lower-case hex of a key id, for messages and logs. Key ids are random and
/// public (they are stored in every file header), so printing them is safe.
pub fn key_id_hex(id: &[u8; KEY_ID_LEN]) -> String {
    hex::encode(id)
}

/// 256-bit AES data key, one per file. Zeroized on drop. Debug prints only the id.
pub struct DataKey {
    id: [u8; KEY_ID_LEN],
    key: Zeroizing<[u8; DATA_KEY_LEN]>,
}

impl DataKey {
    /// A fresh key with a fresh random id.
    pub fn generate(rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        let mut id = [0u8; KEY_ID_LEN];
        rng.fill(&mut id)?;
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rng.fill(key.as_mut())?;
        Ok(DataKey { id, key })
    }

    /// The key's public id (stored in file headers and wrapped keys).
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// Rebuilds a key from its parts. For [`KeyProvider`] implementations
    /// (e.g. an HSM provider) that unwrap key material themselves.
    pub fn from_secret(id: [u8; KEY_ID_LEN], secret: Zeroizing<[u8; DATA_KEY_LEN]>) -> Self {
        DataKey { id, key: secret }
    }

    /// The raw key bytes. For [`KeyProvider`] implementations only; never log
    /// or store the result.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey").field("id", &key_id_hex(&self.id)).finish_non_exhaustive()
    }
}

/// 128-bit SM4 key for the PII fields of one contract version. Zeroized on
/// drop. Debug prints only the id.
pub struct PiiKey {
    id: [u8; KEY_ID_LEN],
    key: Zeroizing<[u8; PII_KEY_LEN]>,
}

impl PiiKey {
    /// A fresh key with a fresh random id.
    pub fn generate(rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        let mut id = [0u8; KEY_ID_LEN];
        rng.fill(&mut id)?;
        let mut key = Zeroizing::new([0u8; PII_KEY_LEN]);
        rng.fill(key.as_mut())?;
        Ok(PiiKey { id, key })
    }

    /// The key's public id.
    pub fn id(&self) -> [u8; KEY_ID_LEN] {
        self.id
    }

    /// Rebuilds a key from its parts. For [`KeyProvider`] implementations only.
    pub fn from_secret(id: [u8; KEY_ID_LEN], secret: Zeroizing<[u8; PII_KEY_LEN]>) -> Self {
        PiiKey { id, key: secret }
    }

    /// The raw key bytes. For [`KeyProvider`] implementations only; never log
    /// or store the result.
    pub fn expose_secret(&self) -> &[u8; PII_KEY_LEN] {
        &self.key
    }
}

impl fmt::Debug for PiiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PiiKey").field("id", &key_id_hex(&self.id)).finish_non_exhaustive()
    }
}

/// A data or PII key wrapped by a key-encryption key (KEK). Safe to store and
/// replicate: without the KEK it reveals nothing but the ids.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WrappedKey {
    /// Id of the KEK that wrapped the key.
    pub kek_id: String,
    /// Id of the wrapped key (equals `DataKey::id` / `PiiKey::id`).
    pub key_id: [u8; KEY_ID_LEN],
    /// Provider-specific ciphertext of the key.
    pub bytes: Vec<u8>,
}

/// Holds key-encryption keys and wraps/unwraps data and PII keys with them.
pub trait KeyProvider: Send + Sync {
    /// Id of the KEK new keys are wrapped with.
    fn kek_id(&self) -> &str;
    /// `context` is bound as associated data (caller passes
    /// tenant/contract/version/file), so a wrapped key cannot be moved to
    /// another file.
    fn wrap_data_key(&self, key: &DataKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError>;
    /// Inverse of [`KeyProvider::wrap_data_key`]; `context` must be the same bytes.
    fn unwrap_data_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<DataKey, CryptoError>;
    /// Like [`KeyProvider::wrap_data_key`] for a PII key.
    fn wrap_pii_key(&self, key: &PiiKey, context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError>;
    /// Inverse of [`KeyProvider::wrap_pii_key`].
    fn unwrap_pii_key(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<PiiKey, CryptoError>;
    /// How long each call takes, for callers to wait out in their
    /// runtime's time before calling: only the simulation's slow key
    /// provider says more than zero (it cannot take simulated time inside
    /// a synchronous call). Real providers take their time in the call.
    fn latency(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}
