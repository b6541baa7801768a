//! The HSM key provider against a real SoftHSM2 token (no mocks): key
//! wrapping inside the token, what it refuses, that the KEK cannot be read
//! out, login errors, and rotation from a key-file KEK to an HSM KEK.
//!
//! Every test loads the module in this process, so all share one SoftHSM2
//! configuration (softhsm/mod.rs), use their own key labels, and take
//! turns (`take_turn`).

mod softhsm;

use std::sync::Arc;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use softhsm::{in_process, take_turn, PIN_TEST_TOKEN, SHARED_TOKEN, USER_PIN};
use tandem_crypto::{CryptoError, DataKey, KeyProvider, KeyRing, LocalKeyFile, PiiKey, Pkcs11Provider, Pkcs11Token, SystemRandomSource};

const CONTEXT: &[u8] = b"tenant-a/contract-42/3/contract.pdf";

fn token() -> Arc<Pkcs11Token> {
    let hsm = in_process();
    Pkcs11Token::open(&hsm.module, SHARED_TOKEN, &hsm.pin_file).unwrap()
}

fn new_kek(label: &str) -> Pkcs11Provider {
    token().create_key(label).unwrap()
}

/// A session of the test's own on the shared token, straight through
/// cryptoki, to look at what the provider created.
fn raw_session() -> Session {
    // The provider loads and initialises the module first: two threads
    // initialising it at once crash SoftHSM2.
    drop(token());
    let hsm = in_process();
    let ctx = Pkcs11::new(&hsm.module).unwrap();
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("{e}"),
    }
    let slot =
        ctx.get_slots_with_initialized_token().unwrap().into_iter().find(|s| ctx.get_token_info(*s).unwrap().label().trim_end() == SHARED_TOKEN).unwrap();
    let session = ctx.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(USER_PIN))) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(e) => panic!("{e}"),
    }
    session
}

fn find(session: &Session, label: &str) -> ObjectHandle {
    let found = session.find_objects(&[Attribute::Label(label.as_bytes().to_vec())]).unwrap();
    assert_eq!(found.len(), 1, "{label}");
    found[0]
}

// Data and PII keys wrapped in the token come back equal, under the label
// as KEK id, and the wrapped bytes do not hold the key in clear; a second
// handle on the same token (a restarted replicator) unwraps them too.
#[test]
fn wraps_and_unwraps_data_and_pii_keys_inside_the_token() {
    let _turn = take_turn();
    let kek = new_kek("rt-kek");
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let wrapped = kek.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(wrapped.kek_id, "rt-kek");
    assert_eq!(wrapped.key_id, dk.id());
    assert_eq!(wrapped.bytes.len(), 12 + 32 + 16);
    assert!(!wrapped.bytes.windows(32).any(|w| w == dk.expose_secret()), "wrapped bytes hold the key in clear");
    let again = kek.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert_ne!(again.bytes, wrapped.bytes, "a fresh IV per wrap");

    let reopened = token().key("rt-kek").unwrap();
    let back = reopened.unwrap_data_key(&wrapped, CONTEXT).unwrap();
    assert_eq!((back.id(), back.expose_secret()), (dk.id(), dk.expose_secret()));

    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let wp = reopened.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(wp.bytes.len(), 12 + 16 + 16);
    let pback = kek.unwrap_pii_key(&wp, CONTEXT).unwrap();
    assert_eq!((pback.id(), pback.expose_secret()), (pk.id(), pk.expose_secret()));
}

// A wrapped key opens only for its own context, kind, key id and bytes:
// each change is refused, and no refusal prints the key.
#[test]
fn wrapped_key_is_bound_to_context_kind_key_id_and_bytes() {
    let _turn = take_turn();
    let kek = new_kek("bind-kek");
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let wrapped = kek.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    let secret_hex = hex::encode(dk.expose_secret());

    let err = kek.unwrap_data_key(&wrapped, b"tenant-b/contract-42/3/contract.pdf").unwrap_err();
    assert!(matches!(err, CryptoError::Tampered(_)), "{err}");
    assert!(err.to_string().contains("bind-kek") && err.to_string().contains("context"), "{err}");
    assert!(!err.to_string().contains(&secret_hex));

    let err = kek.unwrap_pii_key(&wrapped, CONTEXT).unwrap_err();
    assert!(matches!(err, CryptoError::Corrupt(_)), "a data key is not a PII key: {err}");
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let wp = kek.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();
    assert!(kek.unwrap_data_key(&wp, CONTEXT).is_err(), "a PII key is not a data key");

    let mut moved = wrapped.clone();
    moved.key_id[0] ^= 1;
    assert!(matches!(kek.unwrap_data_key(&moved, CONTEXT), Err(CryptoError::Tampered(_))), "key id is bound");

    for at in [0, 12, 12 + 31, wrapped.bytes.len() - 1] {
        let mut bad = wrapped.clone();
        bad.bytes[at] ^= 0x80;
        let err = kek.unwrap_data_key(&bad, CONTEXT).unwrap_err();
        assert!(matches!(err, CryptoError::Tampered(_)), "flipped byte {at}: {err}");
        assert!(!err.to_string().contains(&secret_hex));
    }
    let mut short = wrapped.clone();
    short.bytes.pop();
    assert!(matches!(kek.unwrap_data_key(&short, CONTEXT), Err(CryptoError::Corrupt(_))));

    let mut other = wrapped.clone();
    other.kek_id = "some-other-kek".into();
    let err = kek.unwrap_data_key(&other, CONTEXT).unwrap_err();
    assert!(matches!(err, CryptoError::WrongKey(_)) && err.to_string().contains("some-other-kek"), "{err}");
}

// The KEK is created sensitive and non-extractable: C_GetAttributeValue
// of CKA_VALUE is refused as sensitive, and C_WrapKey cannot export it.
#[test]
fn the_kek_cannot_be_read_out_of_the_token() {
    let _turn = take_turn();
    new_kek("sealed-kek");
    let session = raw_session();
    let kek = find(&session, "sealed-kek");
    let info = session.get_attribute_info(kek, &[AttributeType::Value]).unwrap();
    assert!(matches!(info[0], AttributeInfo::Sensitive), "CKA_VALUE must be sensitive, got {:?}", info[0]);
    let got = session.get_attributes(kek, &[AttributeType::Value]).unwrap();
    assert!(got.iter().all(|a| !matches!(a, Attribute::Value(_))), "CKA_VALUE was returned");
    let flags =
        session.get_attributes(kek, &[AttributeType::Sensitive, AttributeType::Extractable, AttributeType::NeverExtractable, AttributeType::Token]).unwrap();
    for expected in [Attribute::Sensitive(true), Attribute::Extractable(false), Attribute::NeverExtractable(true), Attribute::Token(true)] {
        assert!(flags.contains(&expected), "{expected:?} missing from {flags:?}");
    }

    // Export under another key (a wrapping key of the test's own) fails.
    let wrapping = session
        .generate_key(&Mechanism::AesKeyGen, &[Attribute::ValueLen(32u64.into()), Attribute::Token(false), Attribute::Wrap(true), Attribute::Encrypt(true)])
        .unwrap();
    let err = session.wrap_key(&Mechanism::AesKeyWrapPad, wrapping, kek).unwrap_err();
    assert!(matches!(err, P11Error::Pkcs11(RvError::KeyUnextractable, _)), "{err}");
}

// `create_key` refuses an existing label; `key` names a missing label and
// refuses an extractable key as a KEK.
#[test]
fn create_refuses_existing_label_and_key_refuses_missing_or_extractable_keys() {
    let _turn = take_turn();
    let token = token();
    token.create_key("dup-kek").unwrap();
    let err = token.create_key("dup-kek").unwrap_err().to_string();
    assert!(err.contains("dup-kek") && err.contains("already exists") && err.contains(SHARED_TOKEN), "{err}");

    let err = token.key("no-such-kek").unwrap_err().to_string();
    assert!(err.contains("no-such-kek") && err.contains("hsm-create") && err.contains("libsofthsm2.so"), "{err}");

    let session = raw_session();
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"weak-kek".to_vec()),
            ],
        )
        .unwrap();
    let err = token.key("weak-kek").unwrap_err().to_string();
    assert!(err.contains("weak-kek") && (err.contains("sensitive") || err.contains("extractable")), "{err}");

    assert!(matches!(token.create_key("bad label"), Err(CryptoError::InvalidArgument(_))));
}

// A wrong PIN is refused with an error naming the PIN file, token and
// module, and never the PIN (neither the wrong one nor the right one).
#[test]
fn wrong_pin_is_a_clear_error_without_the_pin() {
    let _turn = take_turn();
    let hsm = in_process();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.pin");
    std::fs::write(&wrong, "9876-not-the-pin\n").unwrap();
    let err = Pkcs11Token::open(&hsm.module, PIN_TEST_TOKEN, &wrong).unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, CryptoError::Hsm(_)), "{text}");
    assert!(text.contains("PIN") && text.contains("wrong"), "{text}");
    assert!(text.contains("wrong.pin") && text.contains(PIN_TEST_TOKEN) && text.contains("libsofthsm2.so"), "{text}");
    assert!(!text.contains("9876-not-the-pin") && !text.contains(USER_PIN), "{text}");

    let empty = dir.path().join("empty.pin");
    std::fs::write(&empty, "\n").unwrap();
    let err = Pkcs11Token::open(&hsm.module, PIN_TEST_TOKEN, &empty).unwrap_err().to_string();
    assert!(err.contains("empty.pin") && err.contains("empty"), "{err}");

    // The right PIN works, and nothing printable about the token shows it.
    let token = Pkcs11Token::open(&hsm.module, PIN_TEST_TOKEN, &hsm.pin_file).unwrap();
    let kek = token.create_key("pin-test-kek").unwrap();
    let debug = format!("{token:?} {kek:?}");
    assert!(debug.contains("pin-test-kek") && !debug.contains(USER_PIN), "{debug}");
}

// A token label or module that does not exist is named in the error.
#[test]
fn unknown_token_or_module_is_named() {
    let _turn = take_turn();
    let hsm = in_process();
    let err = Pkcs11Token::open(&hsm.module, "no-such-token", &hsm.pin_file).unwrap_err().to_string();
    assert!(err.contains("no-such-token") && err.contains(SHARED_TOKEN), "lists the tokens found: {err}");
    let missing = std::path::Path::new("/nonexistent/libpkcs11-module.so");
    let err = Pkcs11Token::open(missing, SHARED_TOKEN, &hsm.pin_file).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/libpkcs11-module.so") && err.contains("cannot load"), "{err}");
}

// Rotation from a key-file KEK to an HSM KEK: a ring with the HSM key as
// current and the old key file as retired unwraps both, wraps with the
// HSM key; once the file is removed, only re-wrapped keys open.
#[test]
fn key_ring_rotates_from_a_key_file_kek_to_an_hsm_kek() {
    let _turn = take_turn();
    let dir = tempfile::tempdir().unwrap();
    let old: Arc<dyn KeyProvider> = Arc::new(LocalKeyFile::create(&dir.path().join("old.key"), "file-kek-1", &SystemRandomSource).unwrap());
    let hsm: Arc<dyn KeyProvider> = Arc::new(new_kek("ring-hsm-kek"));
    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let under_file = old.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    let pii_under_file = old.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();

    let ring = KeyRing::new(hsm.clone(), vec![old.clone()]).unwrap();
    assert_eq!(ring.kek_ids(), ["ring-hsm-kek", "file-kek-1"]);
    let unwrapped = ring.unwrap_data_key(&under_file, CONTEXT).unwrap();
    assert_eq!(unwrapped.expose_secret(), dk.expose_secret());
    assert_eq!(ring.unwrap_pii_key(&pii_under_file, CONTEXT).unwrap().expose_secret(), pk.expose_secret());
    let rewrapped = ring.wrap_data_key(&unwrapped, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(rewrapped.kek_id, "ring-hsm-kek");

    let hsm_only = KeyRing::new(hsm, vec![]).unwrap();
    assert_eq!(hsm_only.unwrap_data_key(&rewrapped, CONTEXT).unwrap().expose_secret(), dk.expose_secret());
    let err = hsm_only.unwrap_data_key(&under_file, CONTEXT).unwrap_err().to_string();
    assert!(err.contains("file-kek-1") && err.contains("not configured"), "{err}");
}

// The HSM wraps in the key file's format: a KEK imported into the token
// under the key file's id opens what the file wrapped, and the reverse.
#[test]
fn hsm_and_key_file_share_one_wrapped_key_format() {
    let _turn = take_turn();
    let kek_bytes = [0x5au8; 32];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.key");
    std::fs::write(&path, format!("tandem-kek-v1 moved-kek {}\n", hex::encode(kek_bytes))).unwrap();
    let file = LocalKeyFile::load(&path).unwrap();
    let session = raw_session();
    session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(kek_bytes.to_vec()),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Label(b"moved-kek".to_vec()),
        ])
        .unwrap();
    let hsm = token().key("moved-kek").unwrap();

    let dk = DataKey::generate(&SystemRandomSource).unwrap();
    let by_file = file.wrap_data_key(&dk, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(hsm.unwrap_data_key(&by_file, CONTEXT).unwrap().expose_secret(), dk.expose_secret());
    let pk = PiiKey::generate(&SystemRandomSource).unwrap();
    let by_hsm = hsm.wrap_pii_key(&pk, CONTEXT, &SystemRandomSource).unwrap();
    assert_eq!(file.unwrap_pii_key(&by_hsm, CONTEXT).unwrap().expose_secret(), pk.expose_secret());
}

// The provider is shared by the replicator's tasks: many threads wrapping
// and unwrapping at once all get their own keys back.
#[test]
fn concurrent_wraps_and_unwraps_are_correct() {
    let _turn = take_turn();
    let kek = Arc::new(new_kek("busy-kek"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let kek = kek.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    let context = format!("tenant/{t}/{i}");
                    let dk = DataKey::generate(&SystemRandomSource).unwrap();
                    let w = kek.wrap_data_key(&dk, context.as_bytes(), &SystemRandomSource).unwrap();
                    assert_eq!(kek.unwrap_data_key(&w, context.as_bytes()).unwrap().expose_secret(), dk.expose_secret());
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}
