//! Scrubbing: read back every stored file of this site and check it
//! against its record (segment framing and crc32, length, BLAKE3) without
//! a key. This is how `tandem verify --deep` finds a corrupted or
//! truncated blob before a reader does.

use futures::StreamExt;
use tandem_crypto::SegmentScanner;

use crate::error::ReplicaError;
use crate::model::FileRecord;
use crate::site::Site;

/// One stored file that does not match its record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub tenant: String,
    pub contract_id: String,
    pub version: u64,
    pub file: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scrubbed {
    pub problems: Vec<Problem>,
    pub files_checked: u64,
    pub bytes_checked: u64,
}

/// Checks the latest version of every live contract in shards `0..shard_count`.
pub async fn scrub(site: &Site, shard_count: u32) -> Result<Scrubbed, ReplicaError> {
    let mut out = Scrubbed::default();
    for shard in 0..shard_count {
        for head in site.meta.shard_heads(shard)? {
            if head.destroyed.is_some() {
                continue;
            }
            let Some(v) = site.meta.version(&head.tenant, &head.contract_id, head.latest)? else {
                continue;
            };
            for f in &v.files {
                out.files_checked += 1;
                out.bytes_checked += f.ciphertext_len;
                if let Some(problem) = check_file(site, f).await {
                    out.problems.push(Problem {
                        tenant: v.tenant.clone(),
                        contract_id: v.contract_id.clone(),
                        version: v.version,
                        file: f.name.clone(),
                        problem,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// What is wrong with one stored file, if anything.
async fn check_file(site: &Site, f: &FileRecord) -> Option<String> {
    let mut stream = match site.blobs.read(&f.blob).await {
        Ok(s) => s,
        Err(e) => return Some(ReplicaError::from(e).to_string()),
    };
    let mut scanner = SegmentScanner::new();
    let mut hash = crate::hash::Hasher::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => return Some(format!("cannot read: {e}")),
        };
        if let Err(e) = scanner.push(&chunk) {
            return Some(e.to_string());
        }
        hash.update(&chunk);
        len += chunk.len() as u64;
    }
    if let Err(e) = scanner.finish() {
        return Some(e.to_string());
    }
    if len != f.ciphertext_len {
        return Some(format!("{len} bytes stored, {} recorded", f.ciphertext_len));
    }
    if hash.hex() != f.ciphertext_blake3 {
        return Some("BLAKE3 of the stored ciphertext differs from the record".into());
    }
    None
}
