//! Field-by-field encryption of PII (ID-card numbers and the like) in
//! contract metadata with SM4-GCM (RustCrypto `AesGcm<Sm4, U12>`).
//!
//! Sealed field = 12-byte random nonce || ciphertext || 16-byte tag.
//! Associated data = u32 BE len(field) || field name || context, so a value
//! cannot be moved to another field or another contract version unnoticed;
//! the length prefix keeps ("ab", "c...") and ("a", "bc...") apart.

use crate::keys::key_id_hex;
use crate::{CryptoError, PiiKey, RandomSource};
use aes_gcm::aead::consts::U12;
use aes_gcm::{AeadInOut, AesGcm, Key, KeyInit};
use sm4::Sm4;
use zeroize::Zeroizing;

type Sm4Gcm = AesGcm<Sm4, U12>;

/// Nonce length of a sealed PII field.
pub const PII_NONCE_LEN: usize = 12;
/// Tag length of a sealed PII field.
pub const PII_TAG_LEN: usize = 16;
/// Bytes sealing adds to a PII value.
pub const PII_OVERHEAD: usize = PII_NONCE_LEN + PII_TAG_LEN;

fn cipher(key: &PiiKey) -> Sm4Gcm {
    // Borrow the key bytes as the cipher's key type without copying them
    // into an unzeroized temporary.
    let k: &Key<Sm4Gcm> = key.expose_secret()[..].try_into().expect("16-byte SM4 key");
    Sm4Gcm::new(k)
}

fn aad(field: &str, context: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(4 + field.len() + context.len());
    aad.extend_from_slice(&(field.len() as u32).to_be_bytes());
    aad.extend_from_slice(field.as_bytes());
    aad.extend_from_slice(context);
    aad
}

/// PII field encryption with SM4-GCM. Output = 12-byte random nonce ||
/// ciphertext || tag. AAD = field name || context.
pub fn seal_pii(key: &PiiKey, field: &str, context: &[u8], plaintext: &[u8], rng: &dyn RandomSource) -> Result<Vec<u8>, CryptoError> {
    if field.len() > u32::MAX as usize {
        return Err(CryptoError::TooLarge("PII field name longer than 4 GiB".into()));
    }
    let mut nonce = [0u8; PII_NONCE_LEN];
    rng.fill(&mut nonce)?;
    // Exact capacity: the plaintext is encrypted in place and never copied
    // by a reallocation.
    let mut sealed = Vec::with_capacity(PII_OVERHEAD + plaintext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(plaintext);
    let tag = cipher(key)
        .encrypt_inout_detached(&nonce.into(), &aad(field, context), (&mut sealed[PII_NONCE_LEN..]).into())
        .map_err(|_| CryptoError::TooLarge(format!("PII field {field:?} too long for SM4-GCM")))?;
    sealed.extend_from_slice(&tag);
    Ok(sealed)
}

/// Opens a value sealed by [`seal_pii`] with the same key, field and context.
pub fn open_pii(key: &PiiKey, field: &str, context: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if sealed.len() < PII_OVERHEAD {
        return Err(CryptoError::Corrupt(format!("sealed PII field {field:?} is {} bytes, shorter than the {PII_OVERHEAD}-byte nonce and tag", sealed.len())));
    }
    let (nonce, rest) = sealed.split_at(PII_NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - PII_TAG_LEN);
    let nonce: [u8; PII_NONCE_LEN] = nonce.try_into().expect("12 bytes");
    let tag = aes_gcm::Tag::try_from(tag).expect("16 bytes");
    let mut plain = Zeroizing::new(ciphertext.to_vec());
    cipher(key).decrypt_inout_detached(&nonce.into(), &aad(field, context), plain.as_mut_slice().into(), &tag).map_err(|_| {
        CryptoError::Tampered(format!(
            "PII field {field:?} does not authenticate with PII key {}: wrong key, field \
                 name or context, or the sealed value was altered",
            key_id_hex(&key.id())
        ))
    })?;
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8998 appendix A.1: proves the generic GCM over SM4 really is SM4-GCM.
    #[test]
    fn sm4_gcm_known_answer_rfc8998() {
        let mut key = Zeroizing::new([0u8; 16]);
        hex::decode_to_slice("0123456789ABCDEFFEDCBA9876543210", key.as_mut()).unwrap();
        let key = PiiKey::from_secret([0; 16], key);
        let nonce: [u8; 12] = hex::decode("00001234567800000000ABCD").unwrap().try_into().unwrap();
        let aad = hex::decode("FEEDFACEDEADBEEFFEEDFACEDEADBEEFABADDAD2").unwrap();
        let mut buf = hex::decode(
            "AAAAAAAAAAAAAAAABBBBBBBBBBBBBBBBCCCCCCCCCCCCCCCCDDDDDDDDDDDDDDDD\
             EEEEEEEEEEEEEEEEFFFFFFFFFFFFFFFFEEEEEEEEEEEEEEEEAAAAAAAAAAAAAAAA",
        )
        .unwrap();
        let tag = cipher(&key).encrypt_inout_detached(&nonce.into(), &aad, buf.as_mut_slice().into()).unwrap();
        assert_eq!(
            hex::encode_upper(&buf),
            "17F399F08C67D5EE19D0DC9969C4BB7D5FD46FD3756489069157B282BB200735\
             D82710CA5C22F0CCFA7CBF93D496AC15A56834CBCF98C397B4024A2691233B8D"
        );
        assert_eq!(hex::encode_upper(tag), "83DE3541E4C2B58177E065A9BF7B62EC");
    }
}
