//! Development key provider: one 256-bit KEK in a local text file.
//!
//! Format, one key line (blank lines and `#` comments allowed):
//! `tandem-kek-v1 <kek-id> <64 hex chars>`.
//!
//! Wrapping is AES-256-GCM (ring) with a random 96-bit nonce, in the format
//! of [`crate::wrap_format`] (shared with the HSM provider).

use crate::keys::{key_id_hex, KEY_ID_LEN};
use crate::wrap_format::{check_wrapped, impl_key_provider, kek_id_problem, tampered, wrap_aad, KeyKind, NONCE_LEN, TAG_LEN};
use crate::{CryptoError, RandomSource, WrappedKey};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// First field of the key line; bumps if the file format ever changes.
pub const KEY_FILE_TAG: &str = "tandem-kek-v1";
const KEK_LEN: usize = 32;

/// Development key provider: a local key file holding one 256-bit KEK and its id.
pub struct LocalKeyFile {
    kek_id: String,
    path: PathBuf,
    // ring does not zeroize its expanded key schedule on drop; keeping one
    // long-lived key object at least avoids scattering copies per operation.
    key: LessSafeKey,
}

fn new_key(kek: &[u8; KEK_LEN]) -> LessSafeKey {
    // UnboundKey::new fails only for a wrong key length, and ours is fixed.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).expect("32-byte AES-256-GCM key"))
}

impl LocalKeyFile {
    /// Reads a key file. Errors name the path and line, never the key.
    pub fn load(path: &Path) -> Result<Self, CryptoError> {
        let at = |line: usize, what: &str| CryptoError::KeyFile(format!("{} line {line}: {what}", path.display()));
        let data = Zeroizing::new(std::fs::read(path).map_err(|e| CryptoError::KeyFile(format!("cannot read {}: {e}", path.display())))?);

        let mut found: Option<(String, Zeroizing<[u8; KEK_LEN]>, usize)> = None;
        for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
            let line_no = i + 1;
            let line = std::str::from_utf8(raw).map_err(|_| at(line_no, "is not valid UTF-8"))?;
            // Neither ids nor hex contain '#', so everything after it is comment.
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            // No message below echoes a field: a misplaced field may be the key.
            let mut fields = line.split_ascii_whitespace();
            let (Some(tag), Some(kek_id), Some(key_hex), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
                return Err(at(line_no, "expected `tandem-kek-v1 <kek-id> <64 hex chars>` (3 fields separated by spaces)"));
            };
            if tag != KEY_FILE_TAG {
                return Err(at(line_no, "first field is not `tandem-kek-v1` (unknown key file version or not a key line)"));
            }
            if let Some((_, _, first)) = &found {
                return Err(at(line_no, &format!("second key line (the first is line {first}); a key file holds exactly one KEK")));
            }
            if let Some(problem) = kek_id_problem(kek_id) {
                return Err(at(line_no, &format!("invalid KEK id: {problem}")));
            }
            if key_hex.len() != 2 * KEK_LEN {
                return Err(at(line_no, &format!("key must be {} hex characters, found {}", 2 * KEK_LEN, key_hex.len())));
            }
            let mut kek = Zeroizing::new([0u8; KEK_LEN]);
            hex::decode_to_slice(key_hex, kek.as_mut()).map_err(|_| at(line_no, "key contains characters that are not hex digits"))?;
            found = Some((kek_id.to_owned(), kek, line_no));
        }

        let Some((kek_id, kek, _)) = found else {
            return Err(CryptoError::KeyFile(format!("{}: no key line (`tandem-kek-v1 <kek-id> <64 hex chars>`) found", path.display())));
        };
        Ok(LocalKeyFile { key: new_key(&kek), kek_id, path: path.to_owned() })
    }

    /// A KEK held only in memory (the drill: no file system under the
    /// simulation). `random` provides the key; nothing is written.
    pub fn in_memory(kek_id: &str, rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        if let Some(problem) = kek_id_problem(kek_id) {
            return Err(CryptoError::InvalidArgument(format!("KEK id {kek_id:?}: {problem}")));
        }
        let mut kek = Zeroizing::new([0u8; KEK_LEN]);
        rng.fill(kek.as_mut())?;
        Ok(LocalKeyFile { key: new_key(&kek), kek_id: kek_id.to_owned(), path: PathBuf::from("<memory>") })
    }

    /// Creates a new key file with a fresh random KEK, mode 0600, refusing to
    /// overwrite an existing file.
    pub fn create(path: &Path, kek_id: &str, rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        if let Some(problem) = kek_id_problem(kek_id) {
            return Err(CryptoError::InvalidArgument(format!("KEK id {kek_id:?}: {problem}")));
        }
        let mut kek = Zeroizing::new([0u8; KEK_LEN]);
        rng.fill(kek.as_mut())?;

        // Sized up front so the buffer holding the hex never reallocates and
        // leaves an unzeroized copy behind.
        let mut contents = Zeroizing::new(String::with_capacity(512));
        contents.push_str(
            "# tandem key-encryption key (KEK). Keep it secret and backed up:\n\
             # every key wrapped with it is unrecoverable without it.\n",
        );
        contents.push_str(KEY_FILE_TAG);
        contents.push(' ');
        contents.push_str(kek_id);
        contents.push(' ');
        contents.push_str(&Zeroizing::new(hex::encode(kek.as_ref())));
        contents.push('\n');

        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CryptoError::KeyFile(format!("{} already exists; refusing to overwrite an existing key file", path.display()))
            } else {
                CryptoError::KeyFile(format!("cannot create {}: {e}", path.display()))
            }
        })?;
        if let Err(e) = file.write_all(contents.as_bytes()).and_then(|()| file.sync_all()) {
            // Remove the partial file so a retry is not refused as "exists".
            drop(file);
            let _ = std::fs::remove_file(path);
            return Err(CryptoError::KeyFile(format!("cannot write {}: {e}", path.display())));
        }
        // Make the new directory entry durable too; a KEK lost in a crash
        // after keys were wrapped with it would lose those keys.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(LocalKeyFile { key: new_key(&kek), kek_id: kek_id.to_owned(), path: path.to_owned() })
    }

    /// Path the key file was loaded from or created at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Names the key file in errors.
    fn holder(&self) -> String {
        format!("key file {}", self.path.display())
    }

    fn wrap(&self, kind: KeyKind, key_id: &[u8; KEY_ID_LEN], secret: &[u8], context: &[u8], rng: &dyn RandomSource) -> Result<WrappedKey, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(&mut nonce)?;
        let aad = wrap_aad(kind, &self.kek_id, key_id, context);
        // Exact capacity: the secret is encrypted in place and the buffer
        // never reallocates, so no plaintext copy is left behind.
        let mut bytes = Vec::with_capacity(NONCE_LEN + secret.len() + TAG_LEN);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(secret);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&aad), &mut bytes[NONCE_LEN..])
            .map_err(|_| CryptoError::TooLarge(format!("{kind} key too long to wrap")))?;
        bytes.extend_from_slice(tag.as_ref());
        Ok(WrappedKey { kek_id: self.kek_id.clone(), key_id: *key_id, bytes })
    }

    fn unwrap<const N: usize>(&self, kind: KeyKind, wrapped: &WrappedKey, context: &[u8]) -> Result<Zeroizing<[u8; N]>, CryptoError> {
        let id = key_id_hex(&wrapped.key_id);
        check_wrapped(kind, N, wrapped, &self.kek_id, &self.holder())?;
        let (nonce, sealed) = wrapped.bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Corrupt(format!("wrapped {kind} key {id}: bad nonce")))?;
        let aad = wrap_aad(kind, &self.kek_id, &wrapped.key_id, context);
        let mut buf = Zeroizing::new(sealed.to_vec());
        let plain =
            self.key.open_in_place(nonce, Aad::from(&aad), buf.as_mut_slice()).map_err(|_| tampered(kind, &wrapped.key_id, &self.kek_id, &self.holder()))?;
        let mut out = Zeroizing::new([0u8; N]);
        out.copy_from_slice(plain);
        Ok(out)
    }
}

impl fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyFile").field("kek_id", &self.kek_id).field("path", &self.path).finish_non_exhaustive()
    }
}

impl_key_provider!(LocalKeyFile, kek_id);
