//! Production key provider: the key-encryption key lives in an HSM and is
//! used through PKCS#11 (tested against SoftHSM2).
//!
//! The KEK is an AES-256 secret key object in the token, found by its label
//! (which is also its KEK id), created sensitive and non-extractable: its
//! bytes never leave the token. Data and PII keys are wrapped inside the
//! token with CKM_AES_GCM encryption, in the same format as
//! [`crate::LocalKeyFile`] ([`crate::wrap_format`]): a fresh 12-byte IV from
//! the caller's [`RandomSource`], the kind, KEK id, key id and context as
//! associated data. Unwrapped key bytes land only in `Zeroizing` buffers.
//!
//! The module is loaded at run time (no C library at build time). Errors name
//! the module path, token label and key label, never the PIN or key bytes;
//! the PIN is read from a file and kept only inside the crate's secret type
//! until login.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::keys::{key_id_hex, KEY_ID_LEN};
use crate::wrap_format::{check_wrapped, impl_key_provider, kek_id_problem, tampered, wrap_aad, KeyKind, NONCE_LEN, TAG_LEN};
use crate::{CryptoError, RandomSource, WrappedKey};

/// AES-256: the only KEK size accepted or created.
const KEK_LEN: u64 = 32;
/// A PIN file is a short line; anything larger is a wrong path.
const PIN_FILE_MAX_BYTES: usize = 1024;

/// One logged-in session on one token of a PKCS#11 module. Shared (`Arc`)
/// by the providers of every KEK configured in that token.
pub struct Pkcs11Token {
    module: PathBuf,
    token_label: String,
    // A PKCS#11 session runs one operation at a time and cryptoki's Session
    // is not Sync, so calls are serialised on one long-lived session (which
    // also keeps clear of SoftHSM2's races between concurrent sessions). A
    // wrap or unwrap is one short call into the token per file, far from
    // being a bottleneck; a std mutex because no call awaits while holding it.
    session: Mutex<Session>,
}

impl Pkcs11Token {
    /// Loads `module`, finds the token labelled `token_label` and logs in as
    /// the user with the PIN read from `pin_file` (one line; a trailing
    /// newline is ignored).
    pub fn open(module: &Path, token_label: &str, pin_file: &Path) -> Result<Arc<Self>, CryptoError> {
        let at = |what: String| CryptoError::Hsm(format!("PKCS#11 module {}, token {token_label:?}: {what}", module.display()));
        let pin = read_pin(pin_file)?;
        let ctx = loaded_module(module).map_err(at)?;
        let slot = find_slot_patiently(&ctx, token_label).map_err(at)?;
        let session = ctx.open_rw_session(slot).map_err(|e| at(format!("cannot open a session: {e}")))?;
        // Login state is per process and token: if another session of this
        // process is logged in, this one is too.
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => return Err(at(format!("login refused: the PIN in {} is wrong", pin_file.display()))),
            Err(P11Error::Pkcs11(RvError::PinLocked, _)) => return Err(at("login refused: the user PIN is locked (too many wrong PINs)".into())),
            Err(e) => return Err(at(format!("cannot log in with the PIN in {}: {e}", pin_file.display()))),
        }
        Ok(Arc::new(Pkcs11Token { module: module.to_owned(), token_label: token_label.to_owned(), session: Mutex::new(session) }))
    }

    /// The provider of the existing KEK labelled `key_label`. Refused unless
    /// it is a 256-bit AES key that is sensitive and not extractable.
    pub fn key(self: &Arc<Self>, key_label: &str) -> Result<Pkcs11Provider, CryptoError> {
        check_label(key_label)?;
        let session = self.lock();
        let Some(handle) = self.find_key(&session, key_label)? else {
            return Err(self.err(format!("no secret key labelled {key_label:?} (create it with `tandem keys hsm-create`)")));
        };
        let attributes = session
            .get_attributes(handle, &[AttributeType::KeyType, AttributeType::ValueLen, AttributeType::Sensitive, AttributeType::Extractable])
            .map_err(|e| self.err(format!("cannot read the attributes of key {key_label:?}: {e}")))?;
        drop(session);
        for attribute in attributes {
            let problem = match attribute {
                Attribute::KeyType(t) if t != KeyType::AES => Some("it is not an AES key"),
                Attribute::ValueLen(len) if u64::from(len) != KEK_LEN => Some("it is not 256 bits long"),
                Attribute::Sensitive(false) => Some("it is not sensitive (CKA_SENSITIVE is false)"),
                Attribute::Extractable(true) => Some("it is extractable (CKA_EXTRACTABLE is true)"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(self.err(format!("key {key_label:?} cannot be used as a KEK: {problem}")));
            }
        }
        Ok(Pkcs11Provider { token: self.clone(), label: key_label.to_owned(), handle })
    }

    /// Generates a new KEK inside the token: AES-256, sensitive, not
    /// extractable, usable only to encrypt and decrypt. Refuses if a secret
    /// key with that label exists.
    pub fn create_key(self: &Arc<Self>, key_label: &str) -> Result<Pkcs11Provider, CryptoError> {
        check_label(key_label)?;
        let session = self.lock();
        if self.find_key(&session, key_label)?.is_some() {
            return Err(self.err(format!("a secret key labelled {key_label:?} already exists; refusing to create a second one")));
        }
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(KEK_LEN.into()),
            Attribute::Label(key_label.as_bytes().to_vec()),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ];
        let handle = session.generate_key(&Mechanism::AesKeyGen, &template).map_err(|e| self.err(format!("cannot generate key {key_label:?}: {e}")))?;
        drop(session);
        Ok(Pkcs11Provider { token: self.clone(), label: key_label.to_owned(), handle })
    }

    fn find_key(&self, session: &Session, key_label: &str) -> Result<Option<ObjectHandle>, CryptoError> {
        let found = session
            .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(key_label.as_bytes().to_vec())])
            .map_err(|e| self.err(format!("cannot search for key {key_label:?}: {e}")))?;
        match found.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(*one)),
            more => Err(self.err(format!("{} secret keys are labelled {key_label:?}; a KEK label must be unique", more.len()))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock cannot leave the session half-used:
        // every PKCS#11 call below is one complete single-part operation.
        self.session.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn err(&self, what: String) -> CryptoError {
        CryptoError::Hsm(format!("PKCS#11 module {}, token {:?}: {what}", self.module.display(), self.token_label))
    }
}

impl fmt::Debug for Pkcs11Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Token").field("module", &self.module).field("token_label", &self.token_label).finish_non_exhaustive()
    }
}

fn check_label(key_label: &str) -> Result<(), CryptoError> {
    match kek_id_problem(key_label) {
        Some(problem) => Err(CryptoError::InvalidArgument(format!("HSM key label {key_label:?}: {problem}"))),
        None => Ok(()),
    }
}

/// The PIN, from the first line of `path`. Errors name the file, never its
/// contents.
fn read_pin(path: &Path) -> Result<AuthPin, CryptoError> {
    let at = |what: String| CryptoError::Hsm(format!("PIN file {}: {what}", path.display()));
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| at(format!("cannot read it: {e}")))?);
    if bytes.len() > PIN_FILE_MAX_BYTES {
        return Err(at(format!("it is larger than {PIN_FILE_MAX_BYTES} bytes; it must hold only the PIN")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| at("it is not UTF-8 text".into()))?;
    let pin = text.strip_suffix('\n').unwrap_or(text);
    let pin = pin.strip_suffix('\r').unwrap_or(pin);
    if pin.is_empty() {
        return Err(at("it is empty".into()));
    }
    if pin.contains('\n') {
        return Err(at("it has more than one line; it must hold only the PIN".into()));
    }
    Ok(AuthPin::from(pin))
}

/// The process's one context for `module`, loaded and initialised on
/// first use and kept for the life of the process. PKCS#11 allows one
/// C_Initialize per module and process, and SoftHSM2 crashes when it is
/// initialised from two threads at once or unloaded under a live session.
fn loaded_module(module: &Path) -> Result<Pkcs11, String> {
    static LOADED: OnceLock<Mutex<BTreeMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut loaded = LOADED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = loaded.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| format!("cannot load the module: {e}"))?;
    // Code outside this crate may have initialised it already (a test
    // looking into the token); it then simply stays initialised.
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("cannot initialise the module: {e}")),
    }
    loaded.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

/// [`find_slot`], tried again a few times over about a second while the
/// module answers with a general error or lists no token at all: SoftHSM2
/// does while another process opens the same token store (three
/// replicators starting at once). Any other failure is reported at once.
fn find_slot_patiently(ctx: &Pkcs11, token_label: &str) -> Result<Slot, String> {
    const TRIES: u32 = 5;
    let mut attempt = 1;
    loop {
        match find_slot(ctx, token_label) {
            Err(SlotError { message, busy: true }) if attempt < TRIES => {
                tracing::warn!(attempt, error = %message, "HSM busy; trying again");
                std::thread::sleep(std::time::Duration::from_millis(250));
                attempt += 1;
            }
            Err(SlotError { message, .. }) => return Err(message),
            Ok(slot) => return Ok(slot),
        }
    }
}

/// Why no slot was found, and whether the module only seemed busy (a
/// general error, or no token at all): then [`find_slot_patiently`] tries
/// again, and a token that really is missing is reported a second later.
struct SlotError {
    message: String,
    busy: bool,
}

impl SlotError {
    fn from_p11(what: &str, e: P11Error) -> Self {
        let busy = matches!(e, P11Error::Pkcs11(RvError::GeneralError, _));
        SlotError { message: format!("{what}: {e}"), busy }
    }
}

impl From<String> for SlotError {
    fn from(message: String) -> Self {
        SlotError { message, busy: false }
    }
}

/// The slot holding the initialised token labelled `token_label`.
fn find_slot(ctx: &Pkcs11, token_label: &str) -> Result<Slot, SlotError> {
    let slots = ctx.get_slots_with_initialized_token().map_err(|e| SlotError::from_p11("cannot list the slots", e))?;
    let mut labels = Vec::new();
    let mut found = Vec::new();
    for slot in slots {
        let info = ctx.get_token_info(slot).map_err(|e| SlotError::from_p11("cannot read token information", e))?;
        let label = info.label().trim_end().to_owned();
        if label == token_label {
            found.push(slot);
        }
        labels.push(format!("{label:?}"));
    }
    match found.as_slice() {
        [one] => Ok(*one),
        // SoftHSM2 lists no token at all for a moment while another process
        // rewrites the token's files (seen with three replicators starting
        // together): worth a retry, like a general error.
        [] if labels.is_empty() => Err(SlotError { message: "no token found: the module has no initialised token".into(), busy: true }),
        [] => Err(format!("no token with this label (tokens found: {})", labels.join(", ")).into()),
        more => Err(format!("{} tokens carry this label; token labels must be unique", more.len()).into()),
    }
}

/// One KEK inside an HSM token. Its KEK id is its label.
pub struct Pkcs11Provider {
    token: Arc<Pkcs11Token>,
    label: String,
    handle: ObjectHandle,
}

impl Pkcs11Provider {
    /// The token holding the KEK (to find its other keys).
    pub fn token(&self) -> &Arc<Pkcs11Token> {
        &self.token
    }

    /// Names the token in errors.
    fn holder(&self) -> String {
        format!("HSM token {:?}", self.token.token_label)
    }

    fn gcm<'a>(&self, iv: &'a mut [u8; NONCE_LEN], aad: &'a [u8]) -> Result<Mechanism<'a>, CryptoError> {
        let params =
            GcmParams::new(iv, aad, ((TAG_LEN * 8) as u64).into()).map_err(|e| self.token.err(format!("key {:?}: bad GCM parameters: {e}", self.label)))?;
        Ok(Mechanism::AesGcm(params))
    }

    fn wrap(&self, kind: KeyKind, key_id: &[u8; KEY_ID_LEN], secret: &[u8], context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        let mut iv = [0u8; NONCE_LEN];
        rng.fill(&mut iv)?;
        let nonce = iv;
        let aad = wrap_aad(kind, &self.label, key_id, context);
        let mechanism = self.gcm(&mut iv, &aad)?;
        let sealed = self
            .token
            .lock()
            .encrypt(&mechanism, self.handle, secret)
            .map_err(|e| self.token.err(format!("cannot wrap {kind} key {} with key {:?}: {e}", key_id_hex(key_id), self.label)))?;
        if sealed.len() != secret.len() + TAG_LEN {
            return Err(self.token.err(format!(
                "key {:?}: AES-GCM returned {} bytes for a {}-byte key (expected the key and a 16-byte tag)",
                self.label,
                sealed.len(),
                secret.len()
            )));
        }
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        Ok(WrappedKey { kek_id: self.label.clone(), key_id: *key_id, bytes })
    }

    fn unwrap<const N: usize>(&self, kind: KeyKind, wrapped: &WrappedKey, context: &[u8]) -> Result<Zeroizing<[u8; N]>, CryptoError> {
        let id = key_id_hex(&wrapped.key_id);
        check_wrapped(kind, N, wrapped, &self.label, &self.holder())?;
        let (nonce, sealed) = wrapped.bytes.split_at(NONCE_LEN);
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(nonce);
        let aad = wrap_aad(kind, &self.label, &wrapped.key_id, context);
        let mechanism = self.gcm(&mut iv, &aad)?;
        let plain = self.token.lock().decrypt(&mechanism, self.handle, sealed).map(Zeroizing::new).map_err(|e| match e {
            // A failed GCM tag check; SoftHSM2 reports it as a general error.
            P11Error::Pkcs11(RvError::EncryptedDataInvalid | RvError::EncryptedDataLenRange | RvError::GeneralError, Function::Decrypt) => {
                tampered(kind, &wrapped.key_id, &self.label, &self.holder())
            }
            e => self.token.err(format!("cannot unwrap {kind} key {id} with key {:?}: {e}", self.label)),
        })?;
        if plain.len() != N {
            return Err(CryptoError::Corrupt(format!("wrapped {kind} key {id} unwrapped to {} bytes, expected {N}", plain.len())));
        }
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

impl fmt::Debug for Pkcs11Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Provider").field("kek_id", &self.label).field("token", &self.token).finish_non_exhaustive()
    }
}

impl_key_provider!(Pkcs11Provider, label);
