//! Keys, key files and key wrapping; and that no key material leaks into
//! Debug output or error messages.

mod common;

use common::*;
use std::path::Path;
use tandem_crypto::{CryptoError, DataKey, KeyProvider, LocalKeyFile, PiiKey, SeededRandomSource, SystemRandomSource, WrappedKey};

const CONTEXT: &[u8] = b"tenant-a/contract-42/3/contract.pdf";

fn kek_hex(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text.lines().find(|l| l.starts_with("tandem-kek-v1")).unwrap();
    line.split_whitespace().nth(2).unwrap().to_owned()
}

/// Key material must not appear in any of the ways a byte string could be printed.
fn assert_no_secret(text: &str, secret: &[u8]) {
    let lower = hex::encode(secret);
    assert!(!text.contains(&lower), "hex of a key leaked: {text}");
    assert!(!text.contains(&lower.to_uppercase()), "HEX of a key leaked: {text}");
    assert!(!text.contains(&format!("{:?}", secret)), "byte list of a key leaked: {text}");
}

#[test]
fn create_then_load_round_trips_wrapped_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let created = LocalKeyFile::create(&path, "dev-kek-1", &SystemRandomSource).unwrap();
    assert_eq!(created.kek_id(), "dev-kek-1");

    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let wrapped = created.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(wrapped.kek_id, "dev-kek-1");
    assert_eq!(wrapped.key_id, dk.id());
    assert!(!wrapped.bytes.windows(32).any(|w| w == dk.expose_secret()), "wrapped bytes hold the key in clear");

    let loaded = LocalKeyFile::load(&path).unwrap();
    assert_eq!(loaded.kek_id(), "dev-kek-1");
    let back = loaded.unwrap_data_key(&wrapped, CONTEXT).unwrap();
    assert_eq!(back.id(), dk.id());
    assert_eq!(back.expose_secret(), dk.expose_secret());

    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let wp = loaded.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();
    let pback = created.unwrap_pii_key(&wp, CONTEXT).unwrap();
    assert_eq!(pback.id(), pk.id());
    assert_eq!(pback.expose_secret(), pk.expose_secret());

    // A wrapped key survives serialization (it is stored and replicated).
    let json = serde_json::to_string(&wrapped).unwrap();
    let de: WrappedKey = serde_json::from_str(&json).unwrap();
    assert_eq!(de, wrapped);
    assert_eq!(loaded.unwrap_data_key(&de, CONTEXT).unwrap().expose_secret(), dk.expose_secret());
}

#[cfg(unix)]
#[test]
fn created_key_file_is_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    LocalKeyFile::create(&path, "k1", &SystemRandomSource).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
}

#[test]
fn create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    LocalKeyFile::create(&path, "k1", &SystemRandomSource).unwrap();
    let before = std::fs::read(&path).unwrap();
    let err = LocalKeyFile::create(&path, "k2", &SystemRandomSource).unwrap_err();
    assert!(matches!(err, CryptoError::KeyFile(ref m) if m.contains("already exists") && m.contains(&path.display().to_string())), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn create_rejects_bad_kek_ids_and_failing_rng() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "has space", "has#hash", "tab\there", &"x".repeat(129)] {
        let path = dir.path().join("kek");
        assert!(matches!(LocalKeyFile::create(&path, bad, &SystemRandomSource), Err(CryptoError::InvalidArgument(_))), "{bad:?}");
        assert!(!path.exists());
    }
    let path = dir.path().join("kek");
    assert!(matches!(LocalKeyFile::create(&path, "ok", &FailingRandom), Err(CryptoError::Random)));
    assert!(!path.exists());
}

#[test]
fn load_accepts_comments_and_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let hex = "ab".repeat(32);
    std::fs::write(&path, format!("# comment\n\n  tandem-kek-v1   prod-1 {hex}  # trailing\r\n# end\n")).unwrap();
    let kf = LocalKeyFile::load(&path).unwrap();
    assert_eq!(kf.kek_id(), "prod-1");
}

#[test]
fn bad_key_line_names_path_and_line_but_not_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let good = "0123456789abcdef".repeat(4);
    let cases: Vec<(String, &str)> = vec![
        (format!("tandem-kek-v1 k1 {}", &good[..63]), "64 hex"),
        (format!("tandem-kek-v1 k1 {}g", &good[..63]), "not hex"),
        (format!("tandem-kek-v1 k1 {good} extra"), "3 fields"),
        (good.clone(), "3 fields"),
        (format!("tandem-kek-v9 k1 {good}"), "tandem-kek-v1"),
        (format!("k1 tandem-kek-v1 {good}"), "tandem-kek-v1"),
        (format!("tandem-kek-v1 {good} k1"), "64 hex"),
    ];
    for (line, expect) in cases {
        std::fs::write(&path, format!("# dev key\n\n{line}\n")).unwrap();
        let err = LocalKeyFile::load(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, CryptoError::KeyFile(_)), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("line 3"), "{msg}");
        assert!(msg.contains(expect), "{msg}");
        assert!(!msg.contains(&good[..16]), "key leaked: {msg}");
        assert!(!format!("{err:?}").contains(&good[..16]), "key leaked in Debug");
    }
    // Two key lines.
    std::fs::write(&path, format!("tandem-kek-v1 a {good}\ntandem-kek-v1 b {good}\n")).unwrap();
    let msg = LocalKeyFile::load(&path).unwrap_err().to_string();
    assert!(msg.contains("line 2") && msg.contains("exactly one"), "{msg}");
    // No key line.
    std::fs::write(&path, "# nothing here\n").unwrap();
    let msg = LocalKeyFile::load(&path).unwrap_err().to_string();
    assert!(msg.contains("no key line") && msg.contains(&path.display().to_string()), "{msg}");
    // Missing file.
    let missing = dir.path().join("missing");
    let msg = LocalKeyFile::load(&missing).unwrap_err().to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
}

#[test]
fn unwrap_with_another_key_file_is_wrong_key_naming_both_ids() {
    let dir = tempfile::tempdir().unwrap();
    let a = LocalKeyFile::create(&dir.path().join("a"), "site-a-kek", &SystemRandomSource).unwrap();
    let b = LocalKeyFile::create(&dir.path().join("b"), "site-b-kek", &SystemRandomSource).unwrap();
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let w = a.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    let err = b.unwrap_data_key(&w, CONTEXT).unwrap_err();
    assert!(matches!(err, CryptoError::WrongKey(ref m) if m.contains("site-a-kek") && m.contains("site-b-kek")), "{err}");
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let wp = a.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();
    assert!(matches!(b.unwrap_pii_key(&wp, CONTEXT), Err(CryptoError::WrongKey(_))));

    // Same KEK id but a different key: authentication fails with a clear message.
    let c = LocalKeyFile::create(&dir.path().join("c"), "site-a-kek", &SystemRandomSource).unwrap();
    let err = c.unwrap_data_key(&w, CONTEXT).unwrap_err();
    assert!(matches!(err, CryptoError::Tampered(ref m) if m.contains("site-a-kek") && m.contains("different key")), "{err}");
}

#[test]
fn wrapped_key_is_bound_to_its_context_kind_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let kf = LocalKeyFile::create(&dir.path().join("k"), "k", &SystemRandomSource).unwrap();
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let w = kf.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert!(matches!(kf.unwrap_data_key(&w, b"tenant-a/contract-42/3/other.pdf"), Err(CryptoError::Tampered(_))));
    assert!(matches!(kf.unwrap_data_key(&w, b""), Err(CryptoError::Tampered(_))));
    // The key id is bound too: relabelling a wrapped key fails.
    let mut relabelled = w.clone();
    relabelled.key_id[0] ^= 1;
    assert!(matches!(kf.unwrap_data_key(&relabelled, CONTEXT), Err(CryptoError::Tampered(_))));
    for i in 0..w.bytes.len() {
        let mut bad = w.clone();
        bad.bytes[i] ^= 0x10;
        assert!(matches!(kf.unwrap_data_key(&bad, CONTEXT), Err(CryptoError::Tampered(_))), "byte {i}");
    }
    let mut short = w.clone();
    short.bytes.pop();
    assert!(matches!(kf.unwrap_data_key(&short, CONTEXT), Err(CryptoError::Corrupt(_))));
    // A wrapped data key is not a wrapped PII key.
    assert!(kf.unwrap_pii_key(&w, CONTEXT).is_err());
    // Wrapping twice gives different bytes (random nonce).
    let w2 = kf.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert_ne!(w.bytes, w2.bytes);
}

#[test]
fn debug_output_shows_ids_not_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let kf = LocalKeyFile::create(&path, "dbg-kek", &SystemRandomSource).unwrap();
    let kek = hex::decode(kek_hex(&path)).unwrap();
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();

    let d = format!("{dk:?} {dk:#?}");
    assert!(d.contains(&hex::encode(dk.id())), "{d}");
    assert_no_secret(&d, dk.expose_secret());
    let p = format!("{pk:?} {pk:#?}");
    assert!(p.contains(&hex::encode(pk.id())), "{p}");
    assert_no_secret(&p, pk.expose_secret());
    let k = format!("{kf:?} {kf:#?}");
    assert!(k.contains("dbg-kek"), "{k}");
    assert_no_secret(&k, &kek);
}

#[test]
fn errors_never_contain_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let kf = LocalKeyFile::create(&path, "err-kek", &SystemRandomSource).unwrap();
    let kek = hex::decode(kek_hex(&path)).unwrap();
    let other = LocalKeyFile::create(&dir.path().join("other"), "other-kek", &SystemRandomSource).unwrap();
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let w = kf.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();

    let mut errors: Vec<CryptoError> = Vec::new();
    errors.push(other.unwrap_data_key(&w, CONTEXT).unwrap_err());
    errors.push(kf.unwrap_data_key(&w, b"elsewhere").unwrap_err());
    errors.push(LocalKeyFile::create(&path, "err-kek", &SystemRandomSource).unwrap_err());
    // A key file whose key line is broken right after the key.
    let broken = dir.path().join("broken");
    std::fs::write(&broken, format!("tandem-kek-v1 err-kek {} trailing\n", hex::encode(&kek))).unwrap();
    errors.push(LocalKeyFile::load(&broken).unwrap_err());
    std::fs::write(&broken, format!("tandem-kek-v1 err-kek {}00\n", hex::encode(&kek))).unwrap();
    errors.push(LocalKeyFile::load(&broken).unwrap_err());
    // Stream errors.
    let ct = encrypt(&dk, &ctx(), 64, &data(200), &SystemRandomSource);
    let other_dk = DataKey::generate(&SystemRandomSource).unwrap();
    errors.push(decrypt(&other_dk, &ctx(), &ct, 0).unwrap_err());
    let mut bad = ct.clone();
    bad[50] ^= 1;
    errors.push(decrypt(&dk, &ctx(), &bad, 0).unwrap_err());
    let wrong_ctx = tandem_crypto::FileContext { version: 9, ..ctx() };
    errors.push(decrypt(&dk, &wrong_ctx, &ct, 0).unwrap_err());
    errors.push(decrypt(&dk, &ctx(), &ct[..100], 0).unwrap_err());
    // PII errors.
    let sealed = tandem_crypto::seal_pii(&pk, "id_card", b"c", b"110101199003077777", &SystemRandomSource).unwrap();
    errors.push(tandem_crypto::open_pii(&pk, "name", b"c", &sealed).unwrap_err());
    errors.push(tandem_crypto::open_pii(&pk, "id_card", b"c", &sealed[..5]).unwrap_err());

    assert!(errors.len() >= 11);
    for e in &errors {
        for text in [e.to_string(), format!("{e:?}")] {
            assert_no_secret(&text, &kek);
            assert_no_secret(&text, dk.expose_secret());
            assert_no_secret(&text, pk.expose_secret());
            assert!(!text.contains("110101199003077777"), "PII leaked: {text}");
        }
    }
}

#[test]
fn key_generation_uses_the_random_source() {
    assert!(matches!(DataKey::generate(&FailingRandom), Err(CryptoError::Random)));
    assert!(matches!(PiiKey::generate(&FailingRandom), Err(CryptoError::Random)));
    // A seeded source replays the same keys; different seeds differ.
    let a = DataKey::generate(&SeededRandomSource::new(1)).unwrap();
    let b = DataKey::generate(&SeededRandomSource::new(1)).unwrap();
    let c = DataKey::generate(&SeededRandomSource::new(2)).unwrap();
    assert_eq!((a.id(), a.expose_secret()), (b.id(), b.expose_secret()));
    assert_ne!(a.id(), c.id());
    assert_ne!(a.id().as_slice(), &a.expose_secret()[..16], "id and key must be independent draws");
    let x = DataKey::generate(&SystemRandomSource).unwrap();
    let y = DataKey::generate(&SystemRandomSource).unwrap();
    assert_ne!(x.expose_secret(), y.expose_secret());
}
