//! Backups of one site: a consistent cut of its metadata (contracts,
//! versions with their wrapped keys, tombstones, its change log, cursors
//! and epochs) and the ciphertext it refers to, taken while the site keeps
//! writing, to a directory or an object store.
//!
//! Layout under the destination:
//! - `backups/{id}/meta.dump`: every metadata record of one snapshot
//!   ([`tandem_storage::KvStore::visit_snapshot`]), each framed with its
//!   crc32 (see [`write_record`]);
//! - `blobs/{blake3}`: the ciphertext, named by its hash and shared by
//!   every backup in the destination, so a later backup copies only what
//!   the destination lacks (incremental), and a name never designates other
//!   bytes (a blob path at a site can: a quarantined version's number is
//!   written again);
//! - `backups/{id}/manifest.json` ([`Manifest`]), written last: a backup
//!   without one is incomplete and not listed.
//!
//! [`verify`] needs no key: the dump's length, hash and every record's
//! crc; each blob's length and BLAKE3 against its record, and every
//! segment's crc ([`tandem_crypto::SegmentScanner`]).
//!
//! Files of destroyed versions are not copied (their keys are gone, so
//! they could never be read); a backup still holds the wrapped keys of
//! contracts destroyed after it was taken, which is why a restore
//! ([`crate::restore`]) replays every destroy recorded since before the
//! site serves.

use std::collections::BTreeSet;

use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::blob::{BlobError, BlobStore, Hashing};
use crate::error::ReplicaError;
use crate::hash::Hasher;
use crate::model::VersionRecord;
use crate::site::Site;

pub const FORMAT: u32 = 1;
const DUMP_MAGIC: &[u8] = b"TANDEM-BACKUP-META 1\n";
/// Records are sent from the snapshot to the writer in chunks of this size.
const CHUNK: usize = 1024 * 1024;

/// What a backup holds; `backups/{id}/manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub site: String,
    pub created_unix_ms: u64,
    pub who: String,
    pub why: String,
    /// This site's change-log head in the snapshot.
    pub log_head: u64,
    pub records: u64,
    pub dump_len: u64,
    pub dump_blake3: String,
    pub versions: u64,
    pub blobs: Vec<BackedBlob>,
    /// Blobs this backup copied, and those an earlier backup in the same
    /// destination already held.
    pub copied: u64,
    pub reused: u64,
    /// Blobs of the snapshot that were collected before they could be
    /// copied (their contract was destroyed meanwhile).
    #[serde(default)]
    pub gone: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackedBlob {
    pub blob: String,
    pub len: u64,
    pub blake3: String,
}

/// A backup destination: an absolute directory, or an object-store URL
/// with its options (an unknown option is an error naming it).
pub fn destination(to: &str, options: &std::collections::BTreeMap<String, String>) -> Result<BlobStore, BlobError> {
    if to.contains("://") {
        return BlobStore::from_url(to, options);
    }
    let path = std::path::Path::new(to);
    if !path.is_absolute() {
        return Err(BlobError::Store(format!("backup destination {to:?}: give an absolute directory or a URL")));
    }
    if let Some(k) = options.keys().next() {
        return Err(BlobError::Store(format!("a directory destination takes no options (got {k:?})")));
    }
    BlobStore::local(path)
}

pub(crate) fn dump_path(id: &str) -> String {
    format!("backups/{id}/meta.dump")
}

fn manifest_path(id: &str) -> String {
    format!("backups/{id}/manifest.json")
}

pub(crate) fn blob_path(b: &BackedBlob) -> String {
    format!("blobs/{}", b.blake3)
}

/// One record: key length, value length (u32 little-endian), key, value,
/// crc32 of key and value.
pub fn write_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let mut crc = crc32fast::Hasher::new();
    crc.update(key);
    crc.update(value);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
}

/// What the snapshot pass learnt besides the records themselves.
#[derive(Default)]
struct Cut {
    records: u64,
    versions: u64,
    log_head: u64,
    /// Each file, with the version that names it.
    blobs: Vec<(BackedBlob, (String, String, u64))>,
}

/// Takes a backup of `site` into `dest`. Writes go on meanwhile: the
/// metadata is one snapshot, and the blobs it names never change.
pub async fn create(site: &Site, dest: &BlobStore, who: &str, why: &str) -> Result<Manifest, ReplicaError> {
    let created_unix_ms = site.clock.now_unix_ms();
    let id = format!("{}-{created_unix_ms:013}", site.name);
    let mut writer = dest.writer(&dump_path(&id), Hashing::Hash).await?;
    writer.write(DUMP_MAGIC).await?;
    // The snapshot is read on a blocking thread; its records come here in
    // chunks through a small channel, so memory stays bounded.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
    let meta = site.meta.clone();
    let reader = tokio::task::spawn_blocking(move || -> Result<Cut, String> {
        let mut cut = Cut::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        meta.visit_snapshot(&mut |key, value| {
            write_record(&mut chunk, key, value);
            cut.records += 1;
            if key.starts_with(b"v/") {
                let v: VersionRecord = serde_json::from_slice(value).map_err(|e| format!("version record {}: {e}", String::from_utf8_lossy(key)))?;
                cut.versions += 1;
                // A destroyed version's files have no key left: nothing to keep.
                for f in v.files.iter().filter(|f| f.key.is_some()) {
                    let blob = BackedBlob { blob: f.blob.clone(), len: f.ciphertext_len, blake3: f.ciphertext_blake3.clone() };
                    cut.blobs.push((blob, (v.tenant.clone(), v.contract_id.clone(), v.version)));
                }
            } else if let Some(seq) = key.strip_prefix(b"l/") {
                cut.log_head = cut.log_head.max(std::str::from_utf8(seq).ok().and_then(|s| s.parse().ok()).unwrap_or(0));
            }
            if chunk.len() >= CHUNK {
                tx.blocking_send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).map_err(|_| "the backup writer stopped".to_string())?;
            }
            Ok(())
        })
        .map_err(|e| e.to_string())?;
        if !chunk.is_empty() {
            tx.blocking_send(chunk).map_err(|_| "the backup writer stopped".to_string())?;
        }
        Ok(cut)
    });
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = writer.write(&chunk).await {
            writer.abort().await;
            return Err(e.into());
        }
    }
    let cut = reader.await.map_err(|e| ReplicaError::Internal(e.to_string()))?.map_err(ReplicaError::Internal)?;
    let dump_len = writer.len();
    let stored = writer.finish().await?;
    let dump_blake3 = stored.hash;

    let (mut copied, mut reused, mut gone) = (0, 0, Vec::new());
    let mut seen = BTreeSet::new();
    let mut blobs = Vec::new();
    for (b, (tenant, contract, version)) in cut.blobs {
        let to = blob_path(&b);
        if !seen.insert(to.clone()) {
            blobs.push(b);
            continue;
        }
        if dest.exists(&to).await? {
            reused += 1;
            blobs.push(b);
            continue;
        }
        // Hashed as it is copied: a file stored under its hash must be
        // those bytes, or every later backup would reuse a wrong one (a
        // blob path can be written again, by a quarantined version's
        // number, between the snapshot and this copy).
        let copied_blob = match copy(&site.blobs, &b.blob, dest, &to, Hashing::Hash).await {
            Ok(stored) if stored.hash != b.blake3 => {
                dest.delete(&to).await?;
                Err(ReplicaError::Corrupt(format!("{} no longer holds the bytes its record names (hash {}, expected {})", b.blob, stored.hash, b.blake3)))
            }
            other => other,
        };
        match copied_blob {
            Ok(_) => {
                copied += 1;
                blobs.push(b);
            }
            // Missing here: fine only if its version was destroyed since the
            // snapshot (collected); a live version's file missing is damage
            // the backup must not hide.
            Err(ReplicaError::Corrupt(why)) => {
                let live = site.meta.version(&tenant, &contract, version)?.is_some_and(|v| v.files.iter().any(|f| f.blob == b.blob && f.key.is_some()));
                if live {
                    return Err(ReplicaError::Corrupt(format!(
                        "{why} although {tenant}/{contract} v{version} is live: repair this site (tandem verify --deep --repair), then back up again"
                    )));
                }
                gone.push(b.blob);
            }
            Err(e) => return Err(e),
        }
    }
    let manifest = Manifest {
        format: FORMAT,
        id: id.clone(),
        site: site.name.clone(),
        created_unix_ms,
        who: who.into(),
        why: why.into(),
        log_head: cut.log_head,
        records: cut.records,
        dump_len,
        dump_blake3,
        versions: cut.versions,
        blobs,
        copied,
        reused,
        gone,
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| ReplicaError::Internal(e.to_string()))?;
    let mut w = dest.writer(&manifest_path(&id), Hashing::None).await?;
    w.write(&json).await?;
    w.finish().await?;
    Ok(manifest)
}

/// Copies `blob` of `from` to `dest` in `to`, streaming; what was stored
/// (its hash with [`Hashing::Hash`]).
pub(crate) async fn copy(from: &BlobStore, blob: &str, to: &BlobStore, dest: &str, hashing: Hashing) -> Result<crate::blob::StoredBlob, ReplicaError> {
    let mut stream = from.read(blob).await?;
    let mut w = to.writer(dest, hashing).await?;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => w.write(&bytes).await?,
            Err(e) => {
                w.abort().await;
                return Err(e.into());
            }
        }
    }
    Ok(w.finish().await?)
}

/// Every complete backup in `dest` (those with a manifest), oldest first.
pub async fn list(dest: &BlobStore) -> Result<Vec<Manifest>, BlobError> {
    let mut out = Vec::new();
    for name in dest.list("backups/").await? {
        if !name.ends_with("/manifest.json") {
            continue;
        }
        let bytes = dest.read_to_vec(&name).await?;
        match serde_json::from_slice::<Manifest>(&bytes) {
            Ok(m) => out.push(m),
            Err(e) => return Err(BlobError::Store(format!("{name}: not a backup manifest: {e}"))),
        }
    }
    out.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
    Ok(out)
}

/// What [`verify`] found for one backup.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verified {
    pub id: String,
    pub records: u64,
    pub blobs: u64,
    pub segments: u64,
    /// Each problem, naming the file; empty: the backup is whole.
    pub problems: Vec<String>,
}

/// The manifest of backup `id` in `dest`.
pub async fn manifest(dest: &BlobStore, id: &str) -> Result<Manifest, BlobError> {
    let bytes = match dest.read_to_vec(&manifest_path(id)).await {
        Ok(b) => b,
        Err(BlobError::NotFound(_)) => return Err(BlobError::Store(format!("no complete backup {id:?} here (`tandem backup list` shows them)"))),
        Err(e) => return Err(e),
    };
    serde_json::from_slice(&bytes).map_err(|e| BlobError::Store(format!("{}: not a backup manifest: {e}", manifest_path(id))))
}

/// Checks backup `id` in `dest` without any key.
pub async fn verify(dest: &BlobStore, id: &str) -> Result<Verified, BlobError> {
    let manifest = manifest(dest, id).await?;
    let mut v = Verified { id: id.into(), ..Default::default() };
    match dest.read_to_vec(&dump_path(id)).await {
        Ok(dump) => v.records = check_dump_bytes(&dump, &manifest, &mut v.problems),
        Err(e) => v.problems.push(format!("{}: {e}", dump_path(id))),
    }
    let mut checked = BTreeSet::new();
    for b in &manifest.blobs {
        let name = blob_path(b);
        if !checked.insert(name.clone()) {
            continue;
        }
        match check_blob(dest, &name, b).await {
            Ok(segments) => {
                v.blobs += 1;
                v.segments += segments;
            }
            Err(problem) => v.problems.push(format!("{name} ({}): {problem}", b.blob)),
        }
    }
    Ok(v)
}

/// Checks a metadata dump against its manifest (length, hash, framing,
/// every record's crc, the record count), adding what is wrong to
/// `problems`; returns how many records were whole.
pub(crate) fn check_dump_bytes(dump: &[u8], manifest: &Manifest, problems: &mut Vec<String>) -> u64 {
    let name = dump_path(&manifest.id);
    if dump.len() as u64 != manifest.dump_len {
        problems.push(format!("{name}: {} bytes, the manifest says {}", dump.len(), manifest.dump_len));
    }
    let hash = Hasher::new().update(dump).hex();
    if hash != manifest.dump_blake3 {
        problems.push(format!("{name}: its BLAKE3 differs from the manifest's"));
    }
    let mut records = 0;
    match each_record(dump, &mut |_, _| {
        records += 1;
        true
    }) {
        Err(problem) => problems.push(format!("{name}: {problem}")),
        Ok(()) if records != manifest.records => problems.push(format!("{name}: {records} records, the manifest says {}", manifest.records)),
        Ok(()) => {}
    }
    records
}

/// Calls `each` with every record of a dump, in order, while it returns
/// true; `Err`: where the framing or a crc fails.
pub(crate) fn each_record(dump: &[u8], each: &mut dyn FnMut(&[u8], &[u8]) -> bool) -> Result<(), String> {
    let Some(mut rest) = dump.strip_prefix(DUMP_MAGIC) else {
        return Err("not a metadata dump".into());
    };
    let mut n = 0u64;
    while !rest.is_empty() {
        let Some((k, vl)) =
            rest.get(..8).map(|h| (u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize, u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize))
        else {
            return Err(format!("truncated after record {n}"));
        };
        let Some(body) = rest.get(8..8 + k + vl + 4) else {
            return Err(format!("truncated in record {}", n + 1));
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(&body[..k + vl]);
        if crc.finalize().to_le_bytes() != body[k + vl..] {
            return Err(format!("record {} fails its crc", n + 1));
        }
        n += 1;
        if !each(&body[..k], &body[k..k + vl]) {
            return Ok(());
        }
        rest = &rest[8 + k + vl + 4..];
    }
    Ok(())
}

/// The segments of one blob, or what is wrong with it.
async fn check_blob(dest: &BlobStore, name: &str, b: &BackedBlob) -> Result<u64, String> {
    let mut stream = dest.read(name).await.map_err(|e| e.to_string())?;
    let (mut hash, mut scanner, mut len) = (Hasher::new(), tandem_crypto::SegmentScanner::new(), 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        len += chunk.len() as u64;
        hash.update(&chunk);
        scanner.push(&chunk).map_err(|e| format!("segment framing: {e}"))?;
    }
    if len != b.len {
        return Err(format!("{len} bytes, its record says {}", b.len));
    }
    if hash.hex() != b.blake3 {
        return Err("its BLAKE3 differs from its record's".into());
    }
    let summary = scanner.finish().map_err(|e| format!("segment framing: {e}"))?;
    Ok(summary.segments)
}
