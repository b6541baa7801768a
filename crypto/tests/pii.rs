//! SM4-GCM sealing of PII fields.

mod common;

use common::FailingRandom;
use tandem_crypto::{open_pii, seal_pii, CryptoError, PiiKey, SystemRandomSource, PII_OVERHEAD};

const CTX: &[u8] = b"tenant-a/contract-42/3";

fn key() -> PiiKey {
    PiiKey::generate(&SystemRandomSource).unwrap()
}

#[test]
fn seal_open_round_trip() {
    let k = key();
    for value in [&b""[..], b"1", "张三 110101199003077777".as_bytes(), &[0xAB; 1000][..]] {
        let sealed = seal_pii(&k, "id_card", CTX, value, &SystemRandomSource).unwrap();
        assert_eq!(sealed.len(), value.len() + PII_OVERHEAD);
        // A short value can appear in random bytes by chance; long ones cannot.
        if value.len() >= 8 {
            assert!(!sealed.windows(value.len()).any(|w| w == value), "plaintext visible in sealed bytes");
        }
        let opened = open_pii(&k, "id_card", CTX, &sealed).unwrap();
        assert_eq!(&opened[..], value);
    }
}

#[test]
fn sealing_twice_differs() {
    let k = key();
    let a = seal_pii(&k, "id_card", CTX, b"110101199003077777", &SystemRandomSource).unwrap();
    let b = seal_pii(&k, "id_card", CTX, b"110101199003077777", &SystemRandomSource).unwrap();
    assert_ne!(a, b);
}

#[test]
fn wrong_field_context_key_or_bytes_fail() {
    let k = key();
    let sealed = seal_pii(&k, "id_card", CTX, b"110101199003077777", &SystemRandomSource).unwrap();
    let tampered = |r: Result<_, CryptoError>| matches!(r, Err(CryptoError::Tampered(_)));
    assert!(tampered(open_pii(&k, "phone", CTX, &sealed)));
    assert!(tampered(open_pii(&k, "id_car", CTX, &sealed)));
    assert!(tampered(open_pii(&k, "id_cart", CTX, &sealed)), "same-length field name");
    assert!(tampered(open_pii(&k, "id_card", b"tenant-a/contract-42/4", &sealed)));
    assert!(tampered(open_pii(&k, "id_card", b"", &sealed)));
    // Field and context are length-separated: moving bytes between them fails.
    assert!(tampered(open_pii(&k, "id_cardt", b"enant-a/contract-42/3", &sealed)));
    assert!(tampered(open_pii(&key(), "id_card", CTX, &sealed)));
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        assert!(tampered(open_pii(&k, "id_card", CTX, &bad)), "byte {i}");
    }
    assert!(matches!(open_pii(&k, "id_card", CTX, &sealed[..PII_OVERHEAD - 1]), Err(CryptoError::Corrupt(_))));
    let err = open_pii(&k, "phone", CTX, &sealed).unwrap_err().to_string();
    assert!(err.contains("phone"), "{err}");
}

#[test]
fn seal_uses_the_random_source() {
    assert!(matches!(seal_pii(&key(), "f", CTX, b"x", &FailingRandom), Err(CryptoError::Random)));
}
