//! The wrapped-key format shared by every key provider.
//!
//! A wrapped key is AES-256-GCM of the raw key under the KEK, stored as
//! `nonce(12) || encrypted key || tag(16)`. The associated data is
//! `"tandem-wrap-v1" || kind || len(kek_id) || kek_id || key_id || context`:
//! the kind byte keeps a wrapped PII key from being unwrapped as a data key,
//! and the length prefix keeps the variable-length KEK id unambiguous.
//!
//! [`crate::LocalKeyFile`] computes it with ring, [`crate::Pkcs11Provider`]
//! inside the token (CKM_AES_GCM). Because the bytes are the same, a KEK
//! moved from a key file into an HSM under the same id keeps unwrapping
//! every key wrapped before the move. This module never sees a KEK.

use crate::keys::{key_id_hex, KEY_ID_LEN};
use crate::{CryptoError, WrappedKey};
use std::fmt;

/// Longest KEK id accepted (it is stored with every wrapped key).
pub const MAX_KEK_ID_LEN: usize = 128;
/// Bytes of the random nonce (GCM IV) in front of a wrapped key.
pub(crate) const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag at the end of a wrapped key.
pub(crate) const TAG_LEN: usize = 16;
const WRAP_LABEL: &[u8] = b"tandem-wrap-v1";

/// Which kind of key is wrapped; bound into the associated data.
#[derive(Clone, Copy)]
pub(crate) enum KeyKind {
    Data,
    Pii,
}

impl KeyKind {
    fn label(self) -> u8 {
        match self {
            KeyKind::Data => b'D',
            KeyKind::Pii => b'P',
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Data => "data",
            KeyKind::Pii => "PII",
        })
    }
}

/// Why a KEK id is unusable, or `None` if it is fine. KEK ids (key-file ids
/// and HSM key labels) live in a space-separated text line and in logs, so
/// they are short printable ASCII.
pub fn kek_id_problem(kek_id: &str) -> Option<&'static str> {
    if kek_id.is_empty() {
        Some("it is empty")
    } else if kek_id.len() > MAX_KEK_ID_LEN {
        Some("it is longer than 128 bytes")
    } else if !kek_id.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        Some("it may only contain printable ASCII without spaces or '#'")
    } else {
        None
    }
}

/// The associated data of one wrapped key.
pub(crate) fn wrap_aad(kind: KeyKind, kek_id: &str, key_id: &[u8; KEY_ID_LEN], context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(WRAP_LABEL.len() + 1 + 4 + kek_id.len() + KEY_ID_LEN + context.len());
    aad.extend_from_slice(WRAP_LABEL);
    aad.push(kind.label());
    aad.extend_from_slice(&(kek_id.len() as u32).to_be_bytes());
    aad.extend_from_slice(kek_id.as_bytes());
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(context);
    aad
}

/// Checks, before any decryption, that `wrapped` names the KEK `kek_id`
/// (held by `holder`, e.g. "key file /etc/kek") and has the length of a
/// wrapped `kind` key of `key_len` bytes.
pub(crate) fn check_wrapped(kind: KeyKind, key_len: usize, wrapped: &WrappedKey, kek_id: &str, holder: &dyn fmt::Display) -> Result<(), CryptoError> {
    let id = key_id_hex(&wrapped.key_id);
    if wrapped.kek_id != kek_id {
        return Err(CryptoError::WrongKey(format!("{kind} key {id} was wrapped with KEK {:?}, but {holder} holds KEK {kek_id:?}", wrapped.kek_id)));
    }
    let expected = NONCE_LEN + key_len + TAG_LEN;
    if wrapped.bytes.len() != expected {
        return Err(CryptoError::Corrupt(format!("wrapped {kind} key {id} is {} bytes, expected {expected}", wrapped.bytes.len())));
    }
    Ok(())
}

/// The error for a wrapped key whose GCM tag does not verify under the KEK
/// `kek_id` held by `holder` (e.g. "key file /etc/kek").
pub(crate) fn tampered(kind: KeyKind, key_id: &[u8; KEY_ID_LEN], kek_id: &str, holder: &dyn fmt::Display) -> CryptoError {
    CryptoError::Tampered(format!(
        "{kind} key {} does not unwrap with KEK {kek_id:?} from {holder}: it was wrapped for another context \
         (tenant/contract/version/file), or the wrapped key was altered, or {holder} holds a different key \
         under the same KEK id",
        key_id_hex(key_id)
    ))
}

/// `impl KeyProvider for $provider`, for a provider whose inherent methods
/// `wrap(kind, key_id, secret, context, rng)` and `unwrap::<N>(kind,
/// wrapped, context)` do the work, and whose KEK id is the field `$kek_id`.
macro_rules! impl_key_provider {
    ($provider:ty, $kek_id:ident) => {
        impl $crate::KeyProvider for $provider {
            fn kek_id(&self) -> &str {
                &self.$kek_id
            }

            fn wrap_data_key(&self, key: &$crate::DataKey, context: &[u8], rng: &dyn $crate::RandomSource) -> Result<$crate::WrappedKey, $crate::CryptoError> {
                self.wrap($crate::wrap_format::KeyKind::Data, &key.id(), key.expose_secret(), context, rng)
            }

            fn unwrap_data_key(&self, wrapped: &$crate::WrappedKey, context: &[u8]) -> Result<$crate::DataKey, $crate::CryptoError> {
                let secret = self.unwrap::<{ $crate::DATA_KEY_LEN }>($crate::wrap_format::KeyKind::Data, wrapped, context)?;
                Ok($crate::DataKey::from_secret(wrapped.key_id, secret))
            }

            fn wrap_pii_key(&self, key: &$crate::PiiKey, context: &[u8], rng: &dyn $crate::RandomSource) -> Result<$crate::WrappedKey, $crate::CryptoError> {
                self.wrap($crate::wrap_format::KeyKind::Pii, &key.id(), key.expose_secret(), context, rng)
            }

            fn unwrap_pii_key(&self, wrapped: &$crate::WrappedKey, context: &[u8]) -> Result<$crate::PiiKey, $crate::CryptoError> {
                let secret = self.unwrap::<{ $crate::PII_KEY_LEN }>($crate::wrap_format::KeyKind::Pii, wrapped, context)?;
                Ok($crate::PiiKey::from_secret(wrapped.key_id, secret))
            }
        }
    };
}
pub(crate) use impl_key_provider;
