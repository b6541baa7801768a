//! Log set-up for every `tandem` command: human-readable lines or JSON
//! lines (`--log-format`, or `TANDEM_LOG_FORMAT` as the systemd units set
//! it), and a masking writer under both.
//!
//! Masking is the last line of defence, behind the rule that code never
//! logs PII or keys (PII fields are encrypted before anything sees them,
//! key types do not print themselves): every formatted line passes through
//! [`mask`] before it is written, so an ID-card number, a mobile number or
//! key material that reaches a log line anyway - say, inside an operator's
//! contract id or an error echoing a config line - is replaced.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::LazyLock;

use regex::Regex;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Human,
    /// One JSON object per line, for log pipelines.
    Json,
}

struct Pattern {
    re: Regex,
    with: &'static str,
}

/// What is masked, most specific first. Over-masking (a byte count that
/// looks like a phone number) is accepted; a leak is not.
static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |re: &str, with| Pattern { re: Regex::new(re).expect("a valid pattern"), with };
    vec![
        // PEM private keys (TLS keys in a misquoted config line).
        p(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)", "[private key masked]"),
        // Hex key material: 256-bit keys and longer (SHA-256 digests look
        // the same and are masked too).
        p(r"\b[0-9a-fA-F]{64,}\b", "[hex masked]"),
        // Base64 runs long enough to hold a 256-bit key.
        p(r"[A-Za-z0-9+/]{43,}={0,2}", "[base64 masked]"),
        // PRC resident ID-card numbers: 17 digits and a check digit or X.
        p(r"\b[0-9]{17}[0-9Xx]\b", "[id masked]"),
        // Mobile numbers: 11 digits from 13..19, with an optional +86.
        p(r"(\+?86[- ]?)?\b1[3-9][0-9]{9}\b", "[phone masked]"),
    ]
});

/// `line` with every ID-card number, mobile number and piece of key
/// material replaced.
pub fn mask(line: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(line);
    for p in PATTERNS.iter() {
        if let Cow::Owned(s) = p.re.replace_all(&out, p.with) {
            out = Cow::Owned(s);
        }
    }
    out
}

/// Wraps a writer so everything written through it is masked first. The
/// formatter writes each event in one call, so a pattern is never split
/// across two writes.
pub struct Masking<M>(pub M);

pub struct MaskingWriter<W>(W);

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(mask(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Masking<M> {
    type Writer = MaskingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(self.0.make_writer())
    }
}

/// Installs the global subscriber: `default` levels unless `RUST_LOG` says
/// otherwise, to `file` if given (the demo) or stderr.
pub fn init(default: &str, format: LogFormat, file: Option<std::fs::File>) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (format, file) {
        (LogFormat::Human, Some(file)) => builder.with_ansi(false).with_writer(Masking(std::sync::Mutex::new(file))).init(),
        (LogFormat::Human, None) => builder.with_ansi(io::stderr().is_terminal()).with_writer(Masking(io::stderr)).init(),
        (LogFormat::Json, Some(file)) => builder.json().with_writer(Masking(std::sync::Mutex::new(file))).init(),
        (LogFormat::Json, None) => builder.json().with_writer(Masking(io::stderr)).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pii_and_key_material_are_masked() {
        let kek = "3f".repeat(32);
        let line = format!(
            "put refused tenant=acme id=contract-110101199003074518 phone 13800138000, +86 139-0000 x kek={kek} b64=q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA= done"
        );
        let masked = mask(&line);
        for secret in ["110101199003074518", "13800138000", &kek, "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="] {
            assert!(!masked.contains(secret), "{secret} leaked: {masked}");
        }
        assert!(masked.contains("[id masked]") && masked.contains("[phone masked]"), "{masked}");
        assert!(masked.contains("put refused tenant=acme") && masked.ends_with(" done"), "ordinary text kept: {masked}");
    }

    #[test]
    fn ordinary_lines_are_untouched() {
        for line in [
            "serving addr=127.0.0.1:7111 shards=32 epoch=4 log_index=1234567",
            "pair a-b recorded async state_id=7 after 2000 ms",
            "2026-11-29T12:00:00.123456Z  INFO tandem: stopping",
        ] {
            assert!(matches!(mask(line), Cow::Borrowed(_)), "{line} changed to {}", mask(line));
        }
    }

    #[test]
    fn a_private_key_block_is_masked_whole() {
        let line = "bad tls.key: -----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49\n-----END PRIVATE KEY----- end";
        assert_eq!(mask(line), "bad tls.key: [private key masked] end");
    }
}
