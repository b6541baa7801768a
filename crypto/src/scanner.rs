//! Key-less integrity check of an encrypted file: framing, header crc and
//! every segment's crc32. Receivers and verify run it on ciphertext they
//! cannot (and need not) decrypt; it catches transport and disk corruption
//! and truncation, but not deliberate tampering, which only the key holder's
//! authentication detects.

use crate::framing::FrameReader;
use crate::header::FileHeader;
use crate::CryptoError;

/// Key-less integrity check of the segment framing and every segment's crc32.
#[derive(Debug)]
pub struct SegmentScanner {
    reader: FrameReader,
}

/// What a successful scan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanSummary {
    pub segments: u64,
    pub ciphertext_len: u64,
    pub plaintext_len: u64,
}

impl Default for SegmentScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl SegmentScanner {
    pub fn new() -> Self {
        SegmentScanner { reader: FrameReader::new() }
    }

    /// Checks the bytes; accepts arbitrary chunk sizes.
    pub fn push(&mut self, ciphertext: &[u8]) -> Result<(), CryptoError> {
        self.reader.push(ciphertext, |_| Ok(()))
    }

    /// The file header (key id, segment size), once it has been read.
    pub fn header(&self) -> Option<FileHeader> {
        self.reader.header()
    }

    /// Truncated unless the last segment was seen.
    pub fn finish(self) -> Result<ScanSummary, CryptoError> {
        self.reader.finish()?;
        Ok(ScanSummary { segments: self.reader.segments(), ciphertext_len: self.reader.bytes_read(), plaintext_len: self.reader.plaintext_len() })
    }
}
