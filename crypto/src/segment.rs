//! Streaming AES-256-GCM encryption and decryption of one file in segments.
//!
//! Memory is O(segment_size) whatever the file size. Segments are encrypted
//! and decrypted in place inside the caller's output buffer (ring's
//! `seal_in_place_separate_tag` / `open_in_place`), so input bytes are copied
//! once, except for the part of a segment that straddles two `push` calls.
//!
//! The decryptor hands out the plaintext of each segment as soon as that
//! segment authenticates; the file as a whole is only proven complete when
//! `finish` returns Ok, so callers must not act on the plaintext before then.

use crate::framing::{Frame, FrameReader};
use crate::header::{
    check_segment_size, context_aad, segment_aad, segment_nonce, FileContext, FileHeader, FRAME_HEAD_LEN, HEADER_LEN, NONCE_PREFIX_LEN, SEGMENT_OVERHEAD,
    TAG_LEN,
};
use crate::keys::{key_id_hex, KEY_ID_LEN};
use crate::{CryptoError, DataKey, RandomSource};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

fn ring_key(key: &DataKey) -> LessSafeKey {
    // UnboundKey::new fails only for a wrong key length, and ours is fixed.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose_secret()).expect("32-byte AES-256-GCM key"))
}

/// Encryption state that outlives one segment.
struct Sealer {
    key: LessSafeKey,
    aad: Vec<u8>,
    prefix: [u8; NONCE_PREFIX_LEN],
    counter: u32,
}

impl Sealer {
    /// Appends one framed segment to `out`.
    fn seal(&mut self, plaintext: &[u8], last: bool, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        // The last segment takes counter + 1, so a non-last segment may not
        // use the final counter value.
        if !last && self.counter == u32::MAX {
            return Err(CryptoError::TooLarge("file needs more than 2^32 segments; use a larger segment size".into()));
        }
        let start = out.len();
        out.reserve(plaintext.len() + SEGMENT_OVERHEAD);
        out.extend_from_slice(&[0u8; FRAME_HEAD_LEN]);
        out.extend_from_slice(plaintext);
        let nonce = Nonce::assume_unique_for_key(segment_nonce(&self.prefix, self.counter, last));
        let tag = match self.key.seal_in_place_separate_tag(nonce, Aad::from(&self.aad[..]), &mut out[start + FRAME_HEAD_LEN..]) {
            Ok(tag) => tag,
            Err(_) => {
                out[start..].zeroize();
                out.truncate(start);
                return Err(CryptoError::TooLarge("segment too long for AES-GCM".into()));
            }
        };
        out.extend_from_slice(tag.as_ref());
        let body = &out[start + FRAME_HEAD_LEN..];
        let len = body.len() as u32; // <= MAX_SEGMENT_SIZE + 16, checked at construction
        let crc = crc32fast::hash(body);
        out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        out[start + 4..start + FRAME_HEAD_LEN].copy_from_slice(&crc.to_be_bytes());
        if !last {
            self.counter += 1;
        }
        Ok(())
    }
}

/// Streaming encryption of one file into the segment format. Memory is O(segment_size).
pub struct Encryptor {
    sealer: Sealer,
    key_id: [u8; KEY_ID_LEN],
    header: [u8; HEADER_LEN],
    header_written: bool,
    segment_size: usize,
    // Plaintext of a segment not yet complete. Zeroized on drop because it
    // is contract plaintext; it never reallocates in place, which would
    // leave stray copies (see `keep`).
    pending: Zeroizing<Vec<u8>>,
}

impl Encryptor {
    /// Draws a random 7-byte nonce prefix; fails for a segment size of 0 or
    /// above [`crate::MAX_SEGMENT_SIZE`].
    pub fn new(key: &DataKey, ctx: &FileContext, segment_size: usize, rng: &dyn RandomSource) -> Result<Self, CryptoError> {
        let seg32 = check_segment_size(segment_size)?;
        // The key is fresh per file, but a random prefix keeps nonces unique
        // even if a caller ever encrypts twice with the same data key.
        let mut prefix = [0u8; NONCE_PREFIX_LEN];
        rng.fill(&mut prefix)?;
        let key_id = key.id();
        let header = FileHeader { segment_size: seg32, key_id, nonce_prefix: prefix }.encode();
        Ok(Encryptor {
            sealer: Sealer { key: ring_key(key), aad: segment_aad(&header, &context_aad(ctx), &key_id), prefix, counter: 0 },
            key_id,
            header,
            header_written: false,
            segment_size,
            pending: Zeroizing::new(Vec::new()),
        })
    }

    /// Plaintext bytes per non-last segment.
    pub fn segment_size(&self) -> usize {
        self.segment_size
    }

    fn write_header_once(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            out.extend_from_slice(&self.header);
            self.header_written = true;
        }
    }

    /// Appends the header (first call only) and every complete segment to `out`.
    pub fn push(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.write_header_once(out);
        let seg = self.segment_size;
        let mut rest = plaintext;

        if !self.pending.is_empty() {
            let n = (seg - self.pending.len()).min(rest.len());
            self.keep(&rest[..n]);
            rest = &rest[n..];
            if self.pending.len() < seg {
                return Ok(());
            }
            self.sealer.seal(&self.pending, false, out)?;
            self.pending.clear();
        }

        // Full segments go straight from the input into `out`; reserve for
        // all of them at once instead of growing `out` segment by segment.
        let full = rest.len() / seg;
        out.reserve(full * (seg + SEGMENT_OVERHEAD));
        let mut chunks = rest.chunks_exact(seg);
        for chunk in &mut chunks {
            self.sealer.seal(chunk, false, out)?;
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            self.keep(tail);
        }
        Ok(())
    }

    /// Appends `bytes` (at most what completes a segment) to the pending
    /// plaintext. Its buffer grows by moving to a bigger one, never by
    /// reallocating in place: the old one is zeroized as it is dropped, so
    /// no stray copy of plaintext is left, and a small file never
    /// allocates (and zeroizes) a whole segment: on every put of a small
    /// contract that was a megabyte faulted in and cleared.
    fn keep(&mut self, bytes: &[u8]) {
        let need = self.pending.len() + bytes.len();
        if need > self.pending.capacity() {
            let capacity = need.next_power_of_two().max(4096).min(self.segment_size).max(need);
            let mut bigger = Zeroizing::new(Vec::with_capacity(capacity));
            bigger.extend_from_slice(&self.pending);
            self.pending = bigger;
        }
        self.pending.extend_from_slice(bytes);
    }

    /// Appends the header if not yet written and the last segment (possibly
    /// with empty plaintext) to `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        self.write_header_once(out);
        self.sealer.seal(&self.pending, true, out)
    }
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("key_id", &key_id_hex(&self.key_id))
            .field("segment_size", &self.segment_size)
            .field("segments_written", &self.sealer.counter)
            .finish_non_exhaustive()
    }
}

/// Decryption state that the frame callback needs.
struct Opener {
    key: LessSafeKey,
    key_id: [u8; KEY_ID_LEN],
    context: Vec<u8>,
    // Built once the header has been read; the header is part of it.
    aad: Vec<u8>,
    prefix: [u8; NONCE_PREFIX_LEN],
}

impl Opener {
    fn on_frame(&mut self, frame: Frame<'_>, out: &mut Vec<u8>) -> Result<(), CryptoError> {
        match frame {
            Frame::Header { header, bytes } => {
                if header.key_id != self.key_id {
                    return Err(CryptoError::WrongKey(format!(
                        "file was encrypted with data key {}, but data key {} was supplied",
                        header.key_id_hex(),
                        key_id_hex(&self.key_id)
                    )));
                }
                self.aad = segment_aad(bytes, &self.context, &self.key_id);
                self.prefix = header.nonce_prefix;
                Ok(())
            }
            Frame::Segment { index, last, ciphertext } => {
                let start = out.len();
                out.extend_from_slice(ciphertext);
                let nonce = Nonce::assume_unique_for_key(segment_nonce(&self.prefix, index, last));
                match self.key.open_in_place(nonce, Aad::from(&self.aad[..]), &mut out[start..]) {
                    Ok(plain) => {
                        let n = plain.len();
                        out.truncate(start + n);
                        Ok(())
                    }
                    Err(_) => {
                        // Unauthenticated plaintext must not reach the caller.
                        out[start..].zeroize();
                        out.truncate(start);
                        Err(CryptoError::Tampered(format!(
                            "segment {index} does not authenticate: the file context (tenant, \
                             contract, version, file name) or the key differs from the one used \
                             to encrypt, segments were reordered or taken from another file, or \
                             the data was altered"
                        )))
                    }
                }
            }
        }
    }
}

/// Streaming decryption; accepts ciphertext in arbitrary chunk sizes.
pub struct Decryptor {
    reader: FrameReader,
    opener: Opener,
}

impl Decryptor {
    pub fn new(key: &DataKey, ctx: &FileContext) -> Self {
        Decryptor {
            reader: FrameReader::new(),
            opener: Opener { key: ring_key(key), key_id: key.id(), context: context_aad(ctx), aad: Vec::new(), prefix: [0; NONCE_PREFIX_LEN] },
        }
    }

    /// Appends decrypted plaintext of every complete segment to `out`.
    /// Errors on corruption (crc), tampering (auth), wrong key id, data after
    /// the last segment. After an error `out` may hold plaintext of earlier
    /// segments, which the caller should discard with the rest of the file.
    pub fn push(&mut self, ciphertext: &[u8], out: &mut Vec<u8>) -> Result<(), CryptoError> {
        // Upper bound of what this call can emit besides a buffered segment.
        out.reserve(ciphertext.len().saturating_sub(TAG_LEN));
        let opener = &mut self.opener;
        self.reader.push(ciphertext, |frame| opener.on_frame(frame, out))
    }

    /// Errors with Truncated unless the last segment was seen.
    pub fn finish(self) -> Result<(), CryptoError> {
        self.reader.finish()
    }

    /// The file header, once it has been read.
    pub fn header(&self) -> Option<FileHeader> {
        self.reader.header()
    }
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor").field("key_id", &key_id_hex(&self.opener.key_id)).field("segments_read", &self.reader.segments()).finish_non_exhaustive()
    }
}
