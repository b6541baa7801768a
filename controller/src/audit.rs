//! The audit log's hash chain: each entry carries the hash of the one
//! before it and its own hash, so an edited, removed, inserted or reordered
//! entry breaks the chain from that point on. The hash is computed by the
//! replica that applies the entry (deterministically: every replica gets
//! the same chain), and checked by `tandem audit --verify` against what a
//! controller reads back from its disk.

use sha2::{Digest, Sha256};

use crate::state::AuditEntry;

/// Versioned so the encoding can change without old chains verifying
/// under new rules by accident.
const DOMAIN: &[u8] = b"tandem-audit-v1";

/// Hash of everything in `e` except `hash` itself: hex SHA-256 over a
/// length-prefixed encoding of each field (no two different entries share
/// an encoding).
pub fn entry_hash(e: &AuditEntry) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(e.seq.to_be_bytes());
    h.update(e.at_unix_ms.to_be_bytes());
    for field in [&e.who, &e.why, &e.what, &e.result, &e.prev_hash] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.update(e.log_index.to_be_bytes());
    // Whose clock the time is from: sealed too, once recorded (entries of
    // older builds have none, and keep their hashes).
    if !e.clock.is_empty() {
        h.update(b"clock");
        h.update((e.clock.len() as u64).to_be_bytes());
        h.update(e.clock.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Links `e` after the entry whose hash is `prev_hash` ("" for the first)
/// and fills in its own hash. Returns the new head of the chain.
pub fn seal(e: &mut AuditEntry, prev_hash: &str) -> String {
    e.prev_hash = prev_hash.to_string();
    e.hash = entry_hash(e);
    e.hash.clone()
}

/// The first entry where the chain does not hold, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Broken {
    pub seq: u64,
    pub reason: String,
}

/// Checks a chain piece by piece (entries oldest first, in pages).
#[derive(Clone, Debug, Default)]
pub struct ChainCheck {
    /// Entries checked so far.
    pub checked: u64,
    /// Hash of the last entry checked ("" before the first).
    pub head: String,
    pub broken: Option<Broken>,
}

impl ChainCheck {
    /// Checks `e`, the next entry. After the first break, nothing more is
    /// checked: every later entry is suspect.
    pub fn push(&mut self, e: &AuditEntry) {
        if self.broken.is_some() {
            return;
        }
        let expected_seq = self.checked + 1;
        let reason = if e.seq != expected_seq {
            Some(format!("expected entry {expected_seq} here, found entry {} (entries removed or reordered)", e.seq))
        } else if e.prev_hash != self.head {
            Some(if expected_seq == 1 {
                "the first entry names a previous entry".to_string()
            } else {
                format!("it does not link to entry {} (entry {} was changed, removed or inserted)", expected_seq - 1, expected_seq - 1)
            })
        } else if entry_hash(e) != e.hash {
            Some("its content does not match its hash (the entry was changed)".to_string())
        } else {
            None
        };
        match reason {
            Some(reason) => self.broken = Some(Broken { seq: expected_seq, reason }),
            None => {
                self.checked += 1;
                self.head = e.hash.clone();
            }
        }
    }

    /// Checks that the chain has `len` entries (the controller's count):
    /// entries cut off at the end are a break too.
    pub fn finish(&mut self, len: u64) {
        if self.broken.is_none() && self.checked != len {
            self.broken = Some(Broken {
                seq: self.checked + 1,
                reason: format!("the log holds {} entries but its count says {len} (entries removed at the end)", self.checked),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut head = String::new();
        (1..=n)
            .map(|seq| {
                let mut e = AuditEntry {
                    seq,
                    at_unix_ms: 1000 * seq,
                    clock: String::new(),
                    who: "alice".into(),
                    why: format!("reason {seq}"),
                    what: "pause".into(),
                    result: "ok".into(),
                    log_index: seq + 3,
                    prev_hash: String::new(),
                    hash: String::new(),
                };
                head = seal(&mut e, &head);
                e
            })
            .collect()
    }

    fn check(entries: &[AuditEntry], len: u64) -> ChainCheck {
        let mut c = ChainCheck::default();
        entries.iter().for_each(|e| c.push(e));
        c.finish(len);
        c
    }

    #[test]
    fn an_untouched_chain_verifies() {
        let c = check(&chain(5), 5);
        assert_eq!(c.broken, None);
        assert_eq!(c.checked, 5);
        assert_eq!(c.head, chain(5)[4].hash);
    }

    #[test]
    fn an_edited_entry_is_named() {
        let mut entries = chain(5);
        entries[2].why = "nothing to see".into();
        assert_eq!(check(&entries, 5).broken.map(|b| b.seq), Some(3));
    }

    #[test]
    fn an_edited_and_rehashed_entry_breaks_the_next_link() {
        let mut entries = chain(5);
        entries[2].why = "nothing to see".into();
        entries[2].hash = entry_hash(&entries[2]);
        let broken = check(&entries, 5).broken.unwrap();
        assert_eq!(broken.seq, 4);
        assert!(broken.reason.contains("entry 3"), "{}", broken.reason);
    }

    #[test]
    fn removed_swapped_and_truncated_entries_are_caught() {
        let mut removed = chain(5);
        removed.remove(1);
        assert_eq!(check(&removed, 5).broken.map(|b| b.seq), Some(2));
        let mut swapped = chain(5);
        swapped.swap(1, 2);
        assert_eq!(check(&swapped, 5).broken.map(|b| b.seq), Some(2));
        let truncated = chain(5)[..4].to_vec();
        assert_eq!(check(&truncated, 5).broken.map(|b| b.seq), Some(5));
    }

    #[test]
    fn every_field_is_covered_by_the_hash() {
        let base = chain(1).remove(0);
        type Edit = Box<dyn Fn(&mut AuditEntry)>;
        let edits: Vec<Edit> = vec![
            Box::new(|e| e.at_unix_ms += 1),
            Box::new(|e| e.who.push('x')),
            Box::new(|e| e.why.push('x')),
            Box::new(|e| e.what.push('x')),
            Box::new(|e| e.result.push('x')),
            Box::new(|e| e.log_index += 1),
            // Moving bytes between fields must change the hash too.
            Box::new(|e| {
                e.who = "alic".into();
                e.why = format!("e{}", e.why);
            }),
        ];
        for edit in edits {
            let mut e = base.clone();
            edit(&mut e);
            assert_ne!(entry_hash(&e), base.hash);
        }
    }
}
