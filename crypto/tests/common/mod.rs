//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::ops::Range;
use tandem_crypto::{CryptoError, DataKey, Decryptor, Encryptor, FileContext, RandomSource, SegmentScanner, HEADER_LEN};

pub fn ctx() -> FileContext {
    FileContext { tenant: "tenant-a".into(), contract_id: "contract-42".into(), version: 3, file_name: "contract.pdf".into() }
}

/// Deterministic, non-repeating-looking test data.
pub fn data(len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8).collect()
}

/// Encrypts `plain`, pushing it in chunks of `chunk` bytes (0 = all at once).
pub fn encrypt_chunked(key: &DataKey, ctx: &FileContext, seg: usize, plain: &[u8], chunk: usize, rng: &dyn RandomSource) -> Vec<u8> {
    let mut enc = Encryptor::new(key, ctx, seg, rng).unwrap();
    let mut out = Vec::new();
    if chunk == 0 {
        enc.push(plain, &mut out).unwrap();
    } else {
        for c in plain.chunks(chunk) {
            enc.push(c, &mut out).unwrap();
        }
    }
    enc.finish(&mut out).unwrap();
    out
}

pub fn encrypt(key: &DataKey, ctx: &FileContext, seg: usize, plain: &[u8], rng: &dyn RandomSource) -> Vec<u8> {
    encrypt_chunked(key, ctx, seg, plain, 0, rng)
}

/// Decrypts feeding `chunk` bytes per push (0 = all at once), then finishes.
pub fn decrypt(key: &DataKey, ctx: &FileContext, ct: &[u8], chunk: usize) -> Result<Vec<u8>, CryptoError> {
    let mut dec = Decryptor::new(key, ctx);
    let mut out = Vec::new();
    if chunk == 0 {
        dec.push(ct, &mut out)?;
    } else {
        for c in ct.chunks(chunk) {
            dec.push(c, &mut out)?;
        }
    }
    dec.finish()?;
    Ok(out)
}

pub fn scan(ct: &[u8], chunk: usize) -> Result<tandem_crypto::ScanSummary, CryptoError> {
    let mut s = SegmentScanner::new();
    if chunk == 0 {
        s.push(ct)?;
    } else {
        for c in ct.chunks(chunk) {
            s.push(c)?;
        }
    }
    s.finish()
}

/// Byte ranges of each whole segment frame (length, crc, body), read from
/// the framing independently of the crate's reader.
pub fn frames(ct: &[u8]) -> Vec<Range<usize>> {
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    while at < ct.len() {
        let len = u32::from_be_bytes(ct[at..at + 4].try_into().unwrap()) as usize;
        out.push(at..at + 8 + len);
        at += 8 + len;
    }
    assert_eq!(at, ct.len(), "test helper: framing does not add up");
    out
}

/// Recomputes the crc of the frame at `range` after its body was edited,
/// so the edit reaches authentication instead of the crc check.
pub fn fix_crc(ct: &mut [u8], range: Range<usize>) {
    let crc = crc32fast::hash(&ct[range.start + 8..range.end]);
    ct[range.start + 4..range.start + 8].copy_from_slice(&crc.to_be_bytes());
}

pub fn fix_header_crc(ct: &mut [u8]) {
    let crc = crc32fast::hash(&ct[..HEADER_LEN - 4]);
    ct[HEADER_LEN - 4..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
}

/// A random source that always fails.
pub struct FailingRandom;
impl RandomSource for FailingRandom {
    fn fill(&self, _buf: &mut [u8]) -> Result<(), CryptoError> {
        Err(CryptoError::Random)
    }
}
