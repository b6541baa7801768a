//! The on-disk format, checked against its specification with an
//! independent reader written here (ring used directly), so a change to the
//! nonce layout, associated data, header or framing cannot slip through just
//! because the crate's writer and reader changed together. Files written
//! today must stay readable.

mod common;

use common::*;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use tandem_crypto::{DataKey, FileContext, SystemRandomSource, HEADER_LEN};

fn lp(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// Decrypts per the documented format, panicking on any deviation.
fn spec_decrypt(key: &DataKey, ctx: &FileContext, ct: &[u8]) -> Vec<u8> {
    let h = &ct[..HEADER_LEN];
    assert_eq!(HEADER_LEN, 36);
    assert_eq!(&h[0..4], b"TNDM");
    assert_eq!(h[4], 1, "format version");
    let seg = u32::from_be_bytes(h[5..9].try_into().unwrap()) as usize;
    assert_eq!(&h[9..25], &key.id(), "key id");
    let prefix = &h[25..32];
    assert_eq!(u32::from_be_bytes(h[32..36].try_into().unwrap()), crc32fast::hash(&h[..32]));

    let mut aad = h.to_vec();
    lp(&mut aad, &ctx.tenant);
    lp(&mut aad, &ctx.contract_id);
    aad.extend_from_slice(&ctx.version.to_be_bytes());
    lp(&mut aad, &ctx.file_name);
    aad.extend_from_slice(&key.id());

    let ring_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose_secret()).unwrap());
    let frames = frames(ct);
    let mut plain = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let last = i + 1 == frames.len();
        let len = u32::from_be_bytes(ct[f.start..f.start + 4].try_into().unwrap()) as usize;
        let crc = u32::from_be_bytes(ct[f.start + 4..f.start + 8].try_into().unwrap());
        let mut body = ct[f.start + 8..f.end].to_vec();
        assert_eq!(body.len(), len);
        assert_eq!(crc, crc32fast::hash(&body), "crc of segment {i}");
        if last {
            assert!(len < seg + 16, "last segment must be short");
        } else {
            assert_eq!(len, seg + 16, "non-last segment must be full");
        }
        let mut nonce = [0u8; 12];
        nonce[..7].copy_from_slice(prefix);
        nonce[7..11].copy_from_slice(&(i as u32).to_be_bytes());
        nonce[11] = u8::from(last);
        let pt = ring_key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut body)
            .unwrap_or_else(|_| panic!("segment {i} does not open per the spec"));
        plain.extend_from_slice(pt);
    }
    plain
}

#[test]
fn ciphertext_follows_the_documented_format() {
    let key = DataKey::generate(&SystemRandomSource).unwrap();
    for (seg, len) in [(16, 0), (16, 5), (16, 16), (16, 40), (1000, 3500)] {
        let plain = data(len);
        let ct = encrypt(&key, &ctx(), seg, &plain, &SystemRandomSource);
        assert_eq!(spec_decrypt(&key, &ctx(), &ct), plain, "seg {seg} len {len}");
    }
}
