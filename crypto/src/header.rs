//! The file header, the file context and the per-segment nonce and
//! associated data: the layout shared by encryption, decryption and scanning.
//!
//! File = header || segment*. Header (36 bytes):
//! `"TNDM" | version u8 | segment_size u32 BE | key id [16] | nonce prefix [7] | crc32 u32 BE`
//! where the crc covers the 32 bytes before it. Segment framing is in
//! `framing.rs`.

use crate::keys::{key_id_hex, KEY_ID_LEN};
use crate::CryptoError;

/// First bytes of every encrypted file.
pub const MAGIC: [u8; 4] = *b"TNDM";
/// Segment format version written by this build.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the nonce prefix drawn at random per file.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of the file header in bytes.
pub const HEADER_LEN: usize = 4 + 1 + 4 + KEY_ID_LEN + NONCE_PREFIX_LEN + 4;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;
/// Per-segment framing: ciphertext length and crc32, both u32 BE.
pub const FRAME_HEAD_LEN: usize = 8;
/// Bytes a segment adds to its plaintext (framing + tag).
pub const SEGMENT_OVERHEAD: usize = FRAME_HEAD_LEN + TAG_LEN;
/// Plaintext bytes per segment unless the caller chooses otherwise.
pub const DEFAULT_SEGMENT_SIZE: usize = 1 << 20;
/// Largest segment size accepted, when encrypting and in headers read back.
/// Bounds what a reader allocates for one segment, whatever a header claims.
pub const MAX_SEGMENT_SIZE: usize = 1 << 24;

/// What a file's ciphertext is bound to (all of it goes into every segment's
/// associated data, plus the header bytes and the key id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileContext {
    pub tenant: String,
    pub contract_id: String,
    pub version: u64,
    pub file_name: String,
}

/// The public fields of a file header. Contains no secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Plaintext bytes per non-last segment.
    pub segment_size: u32,
    /// Id of the data key the file was encrypted with.
    pub key_id: [u8; KEY_ID_LEN],
    /// Random per-file prefix of every segment nonce.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl FileHeader {
    pub(crate) fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = FORMAT_VERSION;
        h[5..9].copy_from_slice(&self.segment_size.to_be_bytes());
        h[9..25].copy_from_slice(&self.key_id);
        h[25..32].copy_from_slice(&self.nonce_prefix);
        let crc = crc32fast::hash(&h[..HEADER_LEN - 4]);
        h[HEADER_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
        h
    }

    /// Parses and checks the header at the start of `bytes` (trailing bytes
    /// are ignored). Lets a holder of ciphertext learn the key id and segment
    /// size without a key.
    pub fn parse(bytes: &[u8]) -> Result<Self, CryptoError> {
        let Some(h) = bytes.get(..HEADER_LEN) else {
            return Err(CryptoError::Truncated);
        };
        if h[0..4] != MAGIC {
            return Err(CryptoError::Corrupt("header: bad magic, not a tandem encrypted file".into()));
        }
        let stored = u32::from_be_bytes(h[HEADER_LEN - 4..].try_into().expect("4 bytes"));
        let computed = crc32fast::hash(&h[..HEADER_LEN - 4]);
        if stored != computed {
            return Err(CryptoError::Corrupt(format!("header: crc mismatch (stored {stored:#010x}, computed {computed:#010x})")));
        }
        if h[4] != FORMAT_VERSION {
            return Err(CryptoError::Unsupported(format!("segment format version {} (this build reads version {FORMAT_VERSION})", h[4])));
        }
        let segment_size = u32::from_be_bytes(h[5..9].try_into().expect("4 bytes"));
        if segment_size == 0 || segment_size as usize > MAX_SEGMENT_SIZE {
            return Err(CryptoError::Corrupt(format!("header: segment size {segment_size} outside 1..={MAX_SEGMENT_SIZE}")));
        }
        Ok(FileHeader { segment_size, key_id: h[9..25].try_into().expect("16 bytes"), nonce_prefix: h[25..32].try_into().expect("7 bytes") })
    }

    /// Hex of the key id, for messages.
    pub(crate) fn key_id_hex(&self) -> String {
        key_id_hex(&self.key_id)
    }
}

/// Checks a caller-chosen segment size and narrows it to the header's u32.
pub(crate) fn check_segment_size(segment_size: usize) -> Result<u32, CryptoError> {
    if segment_size == 0 {
        return Err(CryptoError::InvalidArgument("segment size must be at least 1".into()));
    }
    if segment_size > MAX_SEGMENT_SIZE {
        return Err(CryptoError::TooLarge(format!("segment size {segment_size} exceeds the maximum {MAX_SEGMENT_SIZE}")));
    }
    Ok(segment_size as u32)
}

/// The context part of the associated data: length-prefixed strings so that
/// ("ab", "c") and ("a", "bc") bind differently; the version is fixed-width.
pub(crate) fn context_aad(ctx: &FileContext) -> Vec<u8> {
    let mut out = Vec::with_capacity(3 * 8 + ctx.tenant.len() + ctx.contract_id.len() + 8 + ctx.file_name.len());
    for field in [&ctx.tenant, &ctx.contract_id] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&ctx.version.to_be_bytes());
    out.extend_from_slice(&(ctx.file_name.len() as u64).to_be_bytes());
    out.extend_from_slice(ctx.file_name.as_bytes());
    out
}

/// Associated data of every segment: header || context || key id.
pub(crate) fn segment_aad(header: &[u8; HEADER_LEN], context: &[u8], key_id: &[u8; KEY_ID_LEN]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HEADER_LEN + context.len() + KEY_ID_LEN);
    aad.extend_from_slice(header);
    aad.extend_from_slice(context);
    aad.extend_from_slice(key_id);
    aad
}

/// Nonce = prefix(7) || counter u32 BE || last flag. The counter makes
/// reordering fail authentication; the flag makes truncation at a segment
/// boundary detectable even if an attacker controls the framing.
pub(crate) fn segment_nonce(prefix: &[u8; NONCE_PREFIX_LEN], counter: u32, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..NONCE_PREFIX_LEN].copy_from_slice(prefix);
    n[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// Size of the ciphertext for a plaintext of `len` bytes (header + framing +
/// tags), for progress and checks. The encryptor emits full segments as soon
/// as it has them, so there are always `len / segment_size + 1` segments
/// (the last one possibly empty). A `segment_size` of 0 is treated as 1.
pub fn ciphertext_len(plaintext_len: u64, segment_size: usize) -> u64 {
    let seg = segment_size.max(1) as u64;
    let segments = plaintext_len / seg + 1;
    (HEADER_LEN as u64).saturating_add(segments.saturating_mul(SEGMENT_OVERHEAD as u64)).saturating_add(plaintext_len)
}
