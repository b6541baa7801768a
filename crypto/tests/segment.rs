//! Segment format: round trips and every kind of damage the format promises
//! to detect.

mod common;

use common::*;
use tandem_crypto::{
    ciphertext_len, key_id_hex, CryptoError, DataKey, Decryptor, Encryptor, FileContext, FileHeader, SeededRandomSource, SystemRandomSource,
    DEFAULT_SEGMENT_SIZE, HEADER_LEN, MAX_SEGMENT_SIZE,
};

const SEG: usize = 64;

fn key() -> DataKey {
    DataKey::generate(&SystemRandomSource).unwrap()
}

/// 3.5 segments of SEG with a fresh key: (key, plaintext, ciphertext).
fn sample() -> (DataKey, Vec<u8>, Vec<u8>) {
    let k = key();
    let plain = data(SEG * 7 / 2);
    let ct = encrypt(&k, &ctx(), SEG, &plain, &SystemRandomSource);
    (k, plain, ct)
}

fn sizes(seg: usize) -> Vec<usize> {
    vec![0, 1, seg - 1, seg, seg + 1, seg * 7 / 2]
}

#[test]
fn round_trip_small_segments_all_chunkings() {
    let k = key();
    for len in sizes(SEG) {
        let plain = data(len);
        for enc_chunk in [0, 1, 13, SEG] {
            let ct = encrypt_chunked(&k, &ctx(), SEG, &plain, enc_chunk, &SystemRandomSource);
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64, SEG), "len {len}");
            for dec_chunk in [1, 7, 0] {
                let back = decrypt(&k, &ctx(), &ct, dec_chunk).unwrap();
                assert_eq!(back, plain, "len {len} enc_chunk {enc_chunk} dec_chunk {dec_chunk}");
            }
        }
    }
}

#[test]
fn round_trip_default_segment_size() {
    let k = key();
    let seg = DEFAULT_SEGMENT_SIZE;
    for len in sizes(seg) {
        let plain = data(len);
        let ct = encrypt(&k, &ctx(), seg, &plain, &SystemRandomSource);
        assert_eq!(ct.len() as u64, ciphertext_len(len as u64, seg));
        for dec_chunk in [7, 65_539, 0] {
            assert_eq!(decrypt(&k, &ctx(), &ct, dec_chunk).unwrap(), plain, "len {len} chunk {dec_chunk}");
        }
    }
    // One-byte pushes across a segment boundary of the default size.
    let plain = data(seg + 1);
    let ct = encrypt(&k, &ctx(), seg, &plain, &SystemRandomSource);
    assert_eq!(decrypt(&k, &ctx(), &ct, 1).unwrap(), plain);
}

#[test]
fn chunking_of_plaintext_does_not_change_ciphertext() {
    // Same seed => same key and nonce prefix, so output must be byte-identical.
    let plain = data(SEG * 5 + 3);
    let reference = {
        let rng = SeededRandomSource::new(9);
        let k = DataKey::generate(&rng).unwrap();
        encrypt_chunked(&k, &ctx(), SEG, &plain, 0, &rng)
    };
    for chunk in [1, 5, SEG - 1, SEG, SEG + 1, 1000] {
        let rng = SeededRandomSource::new(9);
        let k = DataKey::generate(&rng).unwrap();
        assert_eq!(encrypt_chunked(&k, &ctx(), SEG, &plain, chunk, &rng), reference, "chunk {chunk}");
    }
}

#[test]
fn segments_are_full_except_the_last() {
    let k = key();
    for len in sizes(SEG) {
        let ct = encrypt(&k, &ctx(), SEG, &data(len), &SystemRandomSource);
        let frames = frames(&ct);
        assert_eq!(frames.len(), len / SEG + 1, "len {len}");
        let (last, full) = frames.split_last().unwrap();
        for f in full {
            assert_eq!(f.len(), 8 + SEG + 16);
        }
        assert_eq!(last.len(), 8 + len % SEG + 16);
    }
}

#[test]
fn ciphertext_len_matches_actual_length() {
    let k = key();
    for seg in [1, 2, 16, 64, 1000] {
        for len in [0, 1, 2, 15, 16, 17, 999, 1000, 1001, 4096] {
            let ct = encrypt(&k, &ctx(), seg, &data(len), &SystemRandomSource);
            assert_eq!(ct.len() as u64, ciphertext_len(len as u64, seg), "seg {seg} len {len}");
        }
    }
    assert_eq!(ciphertext_len(0, DEFAULT_SEGMENT_SIZE), HEADER_LEN as u64 + 24);
}

#[test]
fn flipped_header_byte_is_corrupt() {
    let (k, _, ct) = sample();
    for i in 0..HEADER_LEN {
        let mut bad = ct.clone();
        bad[i] ^= 0x01;
        let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
        assert!(matches!(err, CryptoError::Corrupt(ref m) if m.contains("header")), "byte {i}: {err}");
        assert!(matches!(scan(&bad, 0), Err(CryptoError::Corrupt(_))), "scan byte {i}");
    }
}

#[test]
fn header_fields_are_authenticated_not_just_crc_checked() {
    let (k, _, ct) = sample();
    // Change the nonce prefix and fix the header crc: only authentication can tell.
    let mut bad = ct.clone();
    bad[HEADER_LEN - 6] ^= 0x80;
    fix_header_crc(&mut bad);
    let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
    assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains("segment 0")), "{err}");
}

#[test]
fn unknown_format_version_is_unsupported() {
    let (k, _, ct) = sample();
    let mut bad = ct.clone();
    bad[4] = 2;
    fix_header_crc(&mut bad);
    assert!(matches!(decrypt(&k, &ctx(), &bad, 0), Err(CryptoError::Unsupported(_))));
}

#[test]
fn flipped_segment_body_byte_is_corrupt_naming_segment() {
    let (k, _, ct) = sample();
    let frames = frames(&ct);
    for (i, f) in frames.iter().enumerate() {
        // first body byte, middle byte, last tag byte
        for at in [f.start + 8, (f.start + 8 + f.end) / 2, f.end - 1] {
            let mut bad = ct.clone();
            bad[at] ^= 0x40;
            for chunk in [1, 0] {
                let err = decrypt(&k, &ctx(), &bad, chunk).unwrap_err();
                match &err {
                    CryptoError::Corrupt(m) => {
                        assert!(m.contains(&format!("segment {i} ")) && m.contains("crc"), "{m}")
                    }
                    other => panic!("segment {i} byte {at}: expected Corrupt, got {other}"),
                }
            }
            assert!(matches!(scan(&bad, 0), Err(CryptoError::Corrupt(_))));
        }
    }
}

#[test]
fn flipped_crc_field_is_corrupt() {
    let (k, _, ct) = sample();
    for f in frames(&ct) {
        let mut bad = ct.clone();
        bad[f.start + 5] ^= 0x02;
        assert!(matches!(decrypt(&k, &ctx(), &bad, 0), Err(CryptoError::Corrupt(_))));
        assert!(matches!(scan(&bad, 3), Err(CryptoError::Corrupt(_))));
    }
}

#[test]
fn flipped_length_field_is_detected() {
    let (k, _, ct) = sample();
    for f in frames(&ct) {
        for byte in 0..4 {
            for bit in [0x01, 0x10, 0x80] {
                let mut bad = ct.clone();
                bad[f.start + byte] ^= bit;
                assert!(decrypt(&k, &ctx(), &bad, 0).is_err(), "frame at {} byte {byte} bit {bit}", f.start);
                assert!(scan(&bad, 0).is_err());
            }
        }
    }
}

#[test]
fn body_change_with_fixed_crc_is_tampered() {
    let (k, _, ct) = sample();
    let frames = frames(&ct);
    for (i, f) in frames.iter().enumerate() {
        let mut bad = ct.clone();
        bad[f.start + 8] ^= 0x01;
        fix_crc(&mut bad, f.clone());
        let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
        assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains(&format!("segment {i} "))), "{err}");
        // Without the key this cannot be seen: the scanner only checks crcs.
        assert!(scan(&bad, 0).is_ok());
    }
}

#[test]
fn oversized_segment_length_is_refused_before_allocating() {
    let (k, _, ct) = sample();
    let mut bad = ct.clone();
    bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    // The error comes from the length alone, with no body bytes supplied.
    let mut dec = Decryptor::new(&k, &ctx());
    let e = dec.push(&bad[..HEADER_LEN + 8], &mut Vec::new()).unwrap_err();
    assert!(matches!(e, CryptoError::Corrupt(ref m) if m.contains("segment 0") && m.contains("exceeds")), "{e}");
    // And a length shorter than a tag.
    let mut bad = ct.clone();
    bad[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(&15u32.to_be_bytes());
    assert!(matches!(scan(&bad, 0), Err(CryptoError::Corrupt(ref m)) if m.contains("shorter")));
}

#[test]
fn truncation_at_every_point_is_detected() {
    let (k, _, ct) = sample();
    for cut in 0..ct.len() {
        for chunk in [0, 7] {
            let err = decrypt(&k, &ctx(), &ct[..cut], chunk).unwrap_err();
            assert!(matches!(err, CryptoError::Truncated), "cut {cut}: {err}");
        }
        assert!(matches!(scan(&ct[..cut], 0), Err(CryptoError::Truncated)), "scan cut {cut}");
    }
}

#[test]
fn dropping_trailing_segments_is_truncated() {
    let k = key();
    // Length a multiple of the segment size: the last segment is empty, and
    // dropping it leaves only full segments.
    let ct = encrypt(&k, &ctx(), SEG, &data(SEG * 3), &SystemRandomSource);
    let frames = frames(&ct);
    assert_eq!(frames.len(), 4);
    for (keep, frame) in frames.iter().enumerate() {
        let end = frame.start;
        assert!(matches!(decrypt(&k, &ctx(), &ct[..end], 0), Err(CryptoError::Truncated)), "keep {keep}");
    }
}

#[test]
fn swapped_segments_fail_authentication() {
    let (k, _, ct) = sample();
    let f = frames(&ct);
    let mut bad = ct[..f[0].start].to_vec();
    bad.extend_from_slice(&ct[f[1].clone()]);
    bad.extend_from_slice(&ct[f[0].clone()]);
    bad.extend_from_slice(&ct[f[2].start..]);
    assert_eq!(bad.len(), ct.len());
    assert!(scan(&bad, 0).is_ok(), "crcs travel with their segments");
    let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
    assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains("segment 0")), "{err}");
}

#[test]
fn segment_from_another_file_with_same_key_fails() {
    let k = key();
    let plain = data(SEG * 7 / 2);
    let a = encrypt(&k, &ctx(), SEG, &plain, &SystemRandomSource);
    let b = encrypt(&k, &ctx(), SEG, &plain, &SystemRandomSource);
    let (fa, fb) = (frames(&a), frames(&b));
    for i in 0..fa.len() {
        let mut bad = a[..fa[i].start].to_vec();
        bad.extend_from_slice(&b[fb[i].clone()]);
        bad.extend_from_slice(&a[fa[i].end..]);
        let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
        assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains(&format!("segment {i} "))), "{err}");
    }
}

#[test]
fn wrong_context_fails() {
    let (k, plain, ct) = sample();
    assert_eq!(decrypt(&k, &ctx(), &ct, 0).unwrap(), plain);
    let variants: Vec<FileContext> = vec![
        FileContext { file_name: "other.pdf".into(), ..ctx() },
        FileContext { file_name: "contract.pdg".into(), ..ctx() },
        FileContext { version: 4, ..ctx() },
        FileContext { tenant: "tenant-b".into(), ..ctx() },
        FileContext { contract_id: "contract-43".into(), ..ctx() },
        // Same concatenation, different split: length prefixes must tell them apart.
        FileContext { tenant: "tenant-ac".into(), contract_id: "ontract-42".into(), ..ctx() },
    ];
    for wrong in variants {
        let err = decrypt(&k, &wrong, &ct, 0).unwrap_err();
        assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains("segment 0")), "{wrong:?}: {err}");
    }
}

#[test]
fn wrong_key_names_both_key_ids() {
    let (k, _, ct) = sample();
    let other = key();
    let err = decrypt(&other, &ctx(), &ct, 0).unwrap_err();
    match err {
        CryptoError::WrongKey(m) => {
            assert!(m.contains(&key_id_hex(&k.id())), "{m}");
            assert!(m.contains(&key_id_hex(&other.id())), "{m}");
        }
        other => panic!("expected WrongKey, got {other}"),
    }
    // Same id, different key material: caught by authentication.
    let mut secret = tandem_crypto::zeroize::Zeroizing::new(*k.expose_secret());
    secret[0] ^= 1;
    let impostor = DataKey::from_secret(k.id(), secret);
    assert!(matches!(decrypt(&impostor, &ctx(), &ct, 0), Err(CryptoError::Tampered(_))));
}

#[test]
fn appended_data_is_refused() {
    let (k, plain, ct) = sample();
    // In the same push.
    let mut bad = ct.clone();
    bad.extend_from_slice(b"garbage");
    let err = decrypt(&k, &ctx(), &bad, 0).unwrap_err();
    assert!(matches!(err, CryptoError::Corrupt(ref m) if m.contains("after the last segment")), "{err}");
    assert!(matches!(scan(&bad, 0), Err(CryptoError::Corrupt(_))));
    // In a later push, after the plaintext was complete.
    let mut dec = Decryptor::new(&k, &ctx());
    let mut out = Vec::new();
    dec.push(&ct, &mut out).unwrap();
    assert_eq!(out, plain);
    assert!(matches!(dec.push(&[0], &mut out), Err(CryptoError::Corrupt(_))));
    // An empty push after the end is fine.
    let mut dec = Decryptor::new(&k, &ctx());
    dec.push(&ct, &mut Vec::new()).unwrap();
    dec.push(&[], &mut Vec::new()).unwrap();
    dec.finish().unwrap();
    // A duplicated (valid-looking) last segment is refused too.
    let f = frames(&ct);
    let mut dup = ct.clone();
    dup.extend_from_slice(&ct[f.last().unwrap().clone()]);
    assert!(matches!(decrypt(&k, &ctx(), &dup, 0), Err(CryptoError::Corrupt(_))));
}

#[test]
fn decryptor_refuses_input_after_an_error() {
    let (k, _, ct) = sample();
    let mut bad = ct.clone();
    let f = frames(&ct);
    bad[f[1].start + 9] ^= 1;
    let mut dec = Decryptor::new(&k, &ctx());
    let mut out = Vec::new();
    assert!(dec.push(&bad[..f[2].start], &mut out).is_err());
    // Only the first segment's plaintext was emitted.
    assert_eq!(out.len(), SEG);
    assert!(dec.push(&ct[f[2].start..], &mut out).is_err());
    assert!(dec.finish().is_err());
}

#[test]
fn scanner_accepts_good_files_without_a_key() {
    let k = key();
    for len in sizes(SEG) {
        let ct = encrypt(&k, &ctx(), SEG, &data(len), &SystemRandomSource);
        for chunk in [1, 5, 0] {
            let s = scan(&ct, chunk).unwrap();
            assert_eq!(s.segments, (len / SEG + 1) as u64);
            assert_eq!(s.ciphertext_len, ct.len() as u64);
            assert_eq!(s.plaintext_len, len as u64);
        }
    }
    let mut sc = tandem_crypto::SegmentScanner::new();
    assert!(sc.header().is_none());
    let ct = encrypt(&k, &ctx(), SEG, &data(10), &SystemRandomSource);
    sc.push(&ct[..HEADER_LEN]).unwrap();
    assert_eq!(sc.header().unwrap().key_id, k.id());
}

#[test]
fn header_parse_exposes_key_id_and_segment_size() {
    let (k, _, ct) = sample();
    let h = FileHeader::parse(&ct).unwrap();
    assert_eq!(h.key_id, k.id());
    assert_eq!(h.segment_size as usize, SEG);
    assert!(matches!(FileHeader::parse(&ct[..HEADER_LEN - 1]), Err(CryptoError::Truncated)));
    assert!(matches!(FileHeader::parse(b"%PDF-1.7 this is not encrypted at all......"), Err(CryptoError::Corrupt(ref m)) if m.contains("magic")));
}

#[test]
fn segment_size_limits() {
    let k = key();
    assert!(matches!(Encryptor::new(&k, &ctx(), 0, &SystemRandomSource), Err(CryptoError::InvalidArgument(_))));
    assert!(matches!(Encryptor::new(&k, &ctx(), MAX_SEGMENT_SIZE + 1, &SystemRandomSource), Err(CryptoError::TooLarge(_))));
    assert!(Encryptor::new(&k, &ctx(), MAX_SEGMENT_SIZE, &SystemRandomSource).is_ok());
    assert!(matches!(Encryptor::new(&k, &ctx(), SEG, &FailingRandom), Err(CryptoError::Random)));
}

#[test]
fn each_file_gets_a_fresh_nonce_prefix() {
    let k = key();
    let a = encrypt(&k, &ctx(), SEG, b"same", &SystemRandomSource);
    let b = encrypt(&k, &ctx(), SEG, b"same", &SystemRandomSource);
    assert_ne!(a, b);
    assert_ne!(FileHeader::parse(&a).unwrap().nonce_prefix, FileHeader::parse(&b).unwrap().nonce_prefix);
}

#[test]
fn debug_of_streams_shows_no_key() {
    let k = key();
    let enc = Encryptor::new(&k, &ctx(), SEG, &SystemRandomSource).unwrap();
    let dec = Decryptor::new(&k, &ctx());
    let secret = hex::encode(k.expose_secret());
    for s in [format!("{enc:?}"), format!("{dec:?}")] {
        assert!(s.contains(&key_id_hex(&k.id())), "{s}");
        assert!(!s.contains(&secret), "{s}");
    }
}
