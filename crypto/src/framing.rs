//! Incremental reader of the segment framing, shared by the decryptor and
//! the key-less scanner so both enforce exactly the same rules.
//!
//! Segment on the wire: `[u32 BE ciphertext_len][u32 BE crc32(ciphertext)][ciphertext || tag]`.
//! A segment whose ciphertext is shorter than `segment_size + 16` is the
//! last one: the encryptor emits full segments as soon as it has them, so the
//! last segment always holds fewer than `segment_size` plaintext bytes (maybe
//! none). The last flag is also in the nonce, so a forged framing cannot turn
//! a middle segment into a last one without failing authentication.

use crate::header::{FileHeader, FRAME_HEAD_LEN, HEADER_LEN, TAG_LEN};
use crate::CryptoError;

/// One complete unit handed to the consumer. The header and crc have been
/// checked already.
pub(crate) enum Frame<'a> {
    Header { header: FileHeader, bytes: &'a [u8; HEADER_LEN] },
    Segment { index: u32, last: bool, ciphertext: &'a [u8] },
}

#[derive(Clone, Copy, Debug)]
enum State {
    Header,
    FrameHead,
    Body { len: usize, crc: u32, start: u64 },
    Done,
    Failed,
}

#[derive(Debug)]
pub(crate) struct FrameReader {
    state: State,
    // Bytes of the current unit when it arrives split over several pushes.
    // Whole units inside one push are handed out straight from the input.
    buf: Vec<u8>,
    offset: u64,
    segment_size: usize,
    segments: u64,
    plaintext_len: u64,
    header: Option<FileHeader>,
}

/// Takes `need` bytes for the current unit from `buf` + `input`. Returns how
/// many input bytes were consumed and the unit once it is complete.
fn take<'x>(buf: &'x mut Vec<u8>, input: &'x [u8], need: usize) -> (usize, Option<&'x [u8]>) {
    if buf.is_empty() && input.len() >= need {
        return (need, Some(&input[..need]));
    }
    let n = (need - buf.len()).min(input.len());
    // One allocation of the unit's final size; the length was checked
    // against the segment size before we get here.
    buf.reserve_exact(need - buf.len());
    buf.extend_from_slice(&input[..n]);
    if buf.len() == need {
        (n, Some(&buf[..]))
    } else {
        (n, None)
    }
}

impl FrameReader {
    pub(crate) fn new() -> Self {
        FrameReader { state: State::Header, buf: Vec::new(), offset: 0, segment_size: 0, segments: 0, plaintext_len: 0, header: None }
    }

    /// Feeds bytes; calls `on_frame` for each unit completed by them. After
    /// any error the reader refuses further input.
    pub(crate) fn push(&mut self, input: &[u8], mut on_frame: impl FnMut(Frame<'_>) -> Result<(), CryptoError>) -> Result<(), CryptoError> {
        let result = self.run(input, &mut on_frame);
        if result.is_err() {
            self.state = State::Failed;
            self.buf = Vec::new();
        }
        result
    }

    fn run(&mut self, input: &[u8], on_frame: &mut impl FnMut(Frame<'_>) -> Result<(), CryptoError>) -> Result<(), CryptoError> {
        let mut rest = input;
        loop {
            let need = match self.state {
                State::Header => HEADER_LEN,
                State::FrameHead => FRAME_HEAD_LEN,
                State::Body { len, .. } => len,
                State::Done if rest.is_empty() => return Ok(()),
                State::Done => {
                    return Err(CryptoError::Corrupt(format!(
                        "{} bytes of unexpected data after the last segment (segment {}) at byte offset {}",
                        rest.len(),
                        self.segments.saturating_sub(1),
                        self.offset
                    )))
                }
                State::Failed => return Err(failed()),
            };
            if rest.is_empty() {
                return Ok(());
            }
            let (consumed, unit) = take(&mut self.buf, rest, need);
            rest = &rest[consumed..];
            let Some(unit) = unit else {
                return Ok(());
            };
            let unit_start = self.offset;
            match self.state {
                State::Header => {
                    let header = FileHeader::parse(unit)?;
                    let bytes: &[u8; HEADER_LEN] = unit.try_into().expect("header-sized unit");
                    self.segment_size = header.segment_size as usize;
                    self.header = Some(header);
                    on_frame(Frame::Header { header, bytes })?;
                    self.state = State::FrameHead;
                }
                State::FrameHead => {
                    let len = u32::from_be_bytes(unit[..4].try_into().expect("4 bytes")) as usize;
                    let crc = u32::from_be_bytes(unit[4..].try_into().expect("4 bytes"));
                    let index = self.segments;
                    // Refused before anything is allocated for the body.
                    if len < TAG_LEN {
                        return Err(CryptoError::Corrupt(format!(
                            "segment {index} at byte offset {unit_start}: length {len} is shorter than the {TAG_LEN}-byte tag"
                        )));
                    }
                    if len > self.segment_size + TAG_LEN {
                        return Err(CryptoError::Corrupt(format!(
                            "segment {index} at byte offset {unit_start}: length {len} exceeds segment size {} plus the {TAG_LEN}-byte tag",
                            self.segment_size
                        )));
                    }
                    self.state = State::Body { len, crc, start: unit_start };
                }
                State::Body { len, crc, start } => {
                    let index = self.segments;
                    let computed = crc32fast::hash(unit);
                    if computed != crc {
                        return Err(CryptoError::Corrupt(format!(
                            "segment {index} at byte offset {start}: crc mismatch (stored {crc:#010x}, computed {computed:#010x})"
                        )));
                    }
                    let counter = u32::try_from(index)
                        .map_err(|_| CryptoError::Corrupt(format!("segment {index} at byte offset {start}: more segments than the 32-bit counter allows")))?;
                    let last = len < self.segment_size + TAG_LEN;
                    on_frame(Frame::Segment { index: counter, last, ciphertext: unit })?;
                    self.segments += 1;
                    self.plaintext_len += (len - TAG_LEN) as u64;
                    self.state = if last { State::Done } else { State::FrameHead };
                }
                State::Done | State::Failed => unreachable!("handled above"),
            }
            self.offset += need as u64;
            self.buf.clear();
            if matches!(self.state, State::Done) {
                self.buf = Vec::new();
            }
        }
    }

    /// Ok once the last segment was read; `Truncated` before.
    pub(crate) fn finish(&self) -> Result<(), CryptoError> {
        match self.state {
            State::Done => Ok(()),
            State::Failed => Err(failed()),
            _ => Err(CryptoError::Truncated),
        }
    }

    pub(crate) fn header(&self) -> Option<FileHeader> {
        self.header
    }
    pub(crate) fn segments(&self) -> u64 {
        self.segments
    }
    pub(crate) fn bytes_read(&self) -> u64 {
        self.offset
    }
    pub(crate) fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }
}

fn failed() -> CryptoError {
    CryptoError::Corrupt("the stream already failed a check; no further data is accepted".into())
}
