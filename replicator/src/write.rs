//! The write path at the owner site: put and destroy.
//!
//! Put: check lease and owner, encrypt each file as it streams in (fresh
//! data key per file, wrapped by the key-encryption key), store the
//! ciphertext durably, then one synced metadata batch (version, head, log
//! entry), then wait for the in-city peer in sync mode (see [`crate::sync`])
//! before acknowledging. In sync mode the ciphertext also streams to the
//! peer as it is produced ([`crate::stage`]), so the peer stores its copy
//! while this site stores its own, and the entry then only refers to it.
//!
//! Destroy: crypto-shredding. The wrapped keys are deleted in the same
//! synced batch as the tombstone log entry, which replicates the deletion
//! to every site; the ciphertext is collected afterwards ([`crate::gc`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use tandem_crypto::{seal_pii, DataKey, Encryptor, FileContext, PiiKey, WrappedKey, DEFAULT_SEGMENT_SIZE};

use crate::blob::{BlobWriter, Hashing};
use crate::error::ReplicaError;
use crate::ids::{check_field, check_file_name, check_id, FIELDS_MAX, FILES_MAX};
use crate::model::{blob_path, key_context, Change, ContractHead, FileRecord, Tombstone, VersionRecord};
use crate::pool::Pool;
use crate::site::{BusyGuard, Site};
use crate::stage::StageUpload;
use crate::view::waits_for_peer;

/// What a client asks to store (files follow separately).
#[derive(Clone, Debug, Default)]
pub struct PutHeader {
    pub tenant: String,
    pub contract_id: String,
    pub fields: BTreeMap<String, String>,
    pub pii_fields: BTreeMap<String, String>,
}

/// An acknowledged write.
#[derive(Clone, Debug)]
pub struct Acknowledged {
    pub seq: u64,
    /// How the write was made durable (sync with the peer, or why not).
    pub replication: String,
}

struct OpenFile {
    name: String,
    index: usize,
    size: u64,
    encryptor: Encryptor,
    writer: BlobWriter,
    key: WrappedKey,
    /// The same ciphertext on its way to the in-city peer, if staging.
    stage: Option<StageUpload>,
}

/// One put in progress. Dropping it before [`PutSession::commit`] stores
/// nothing visible: the version is not in the metadata, and its blobs are
/// overwritten by the next attempt.
pub struct PutSession<'a> {
    site: &'a Site,
    _busy: BusyGuard<'a>,
    header: PutHeader,
    shard: u32,
    epoch: u64,
    version: u64,
    pii: BTreeMap<String, Vec<u8>>,
    pii_key: Option<WrappedKey>,
    files: Vec<FileRecord>,
    open: Option<OpenFile>,
    /// The in-city peer files are staged at (the pair is in sync mode).
    stage_to: Option<String>,
    /// Blobs streamed to that peer, forgotten again if the put fails.
    staged: Vec<String>,
    committed: bool,
    /// Buffers for the ciphertext of each chunk (see [`crate::pool`]).
    out: Arc<Pool<Vec<u8>>>,
}

impl<'a> PutSession<'a> {
    pub async fn begin(site: &'a Site, header: PutHeader) -> Result<Self, ReplicaError> {
        check_id("tenant", &header.tenant)?;
        check_id("contract id", &header.contract_id)?;
        if header.fields.len() + header.pii_fields.len() > FIELDS_MAX {
            return Err(ReplicaError::Invalid(format!("at most {FIELDS_MAX} metadata fields")));
        }
        for (k, v) in header.fields.iter().chain(&header.pii_fields) {
            check_field(k, v)?;
        }
        if let Some(k) = header.fields.keys().find(|k| header.pii_fields.contains_key(*k)) {
            return Err(ReplicaError::Invalid(format!("field {k:?} is given both as plain and as PII")));
        }
        let (shard, epoch) = site.check_owner(&header.tenant)?;
        let busy = site.claim(&header.tenant, &header.contract_id).ok_or_else(|| ReplicaError::Busy(format!("{}/{}", header.tenant, header.contract_id)))?;
        let head = site.meta.head(shard, &header.tenant, &header.contract_id)?;
        if let Some(h) = &head {
            if h.destroyed.is_some() {
                return Err(ReplicaError::Destroyed { tenant: h.tenant.clone(), contract_id: h.contract_id.clone() });
            }
        }
        let version = head.map(|h| h.latest).unwrap_or(0) + 1;

        let mut pii = BTreeMap::new();
        let mut pii_key = None;
        if !header.pii_fields.is_empty() {
            let key = PiiKey::generate(site.rng.as_ref())?;
            let ctx = key_context(&header.tenant, &header.contract_id, version, "pii");
            for (name, value) in &header.pii_fields {
                pii.insert(name.clone(), seal_pii(&key, name, &ctx, value.as_bytes(), site.rng.as_ref())?);
            }
            pii_key = Some(site.keys.wrap_pii_key(&key, &ctx, site.rng.as_ref()).await?);
        }
        Ok(Self {
            site,
            _busy: busy,
            header,
            shard,
            epoch,
            version,
            pii,
            pii_key,
            files: Vec::new(),
            open: None,
            stage_to: stage_target(site),
            staged: Vec::new(),
            committed: false,
            // Chunks queued for the peer, plus the one being written.
            out: Pool::new(crate::stage::QUEUE + 2),
        })
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub async fn start_file(&mut self, name: &str) -> Result<(), ReplicaError> {
        self.end_file().await?;
        check_file_name(name)?;
        if self.files.len() >= FILES_MAX {
            return Err(ReplicaError::Invalid(format!("at most {FILES_MAX} files per contract")));
        }
        if self.files.iter().any(|f| f.name == name) {
            return Err(ReplicaError::Invalid(format!("file {name:?} is given twice")));
        }
        let h = &self.header;
        let index = self.files.len();
        let data_key = DataKey::generate(self.site.rng.as_ref())?;
        let ctx = FileContext { tenant: h.tenant.clone(), contract_id: h.contract_id.clone(), version: self.version, file_name: name.to_string() };
        let encryptor = Encryptor::new(&data_key, &ctx, DEFAULT_SEGMENT_SIZE, self.site.rng.as_ref())?;
        let key = self
            .site
            .keys
            .wrap_data_key(&data_key, &key_context(&h.tenant, &h.contract_id, self.version, &format!("file:{name}")), self.site.rng.as_ref())
            .await?;
        let blob = blob_path(&h.tenant, &h.contract_id, self.version, index);
        let writer = self.site.blobs.writer(&blob, Hashing::Hash).await?;
        let stage = self
            .stage_to
            .as_ref()
            .and_then(|peer| self.site.links.get(peer))
            .and_then(|link| StageUpload::start(self.site, link, self.shard, self.epoch, &blob));
        self.open = Some(OpenFile { name: name.to_string(), index, size: 0, encryptor, writer, key, stage });
        Ok(())
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), ReplicaError> {
        let open = self.open.as_mut().ok_or_else(|| ReplicaError::Invalid("file data before a file start".into()))?;
        let mut out = self.out.vec(data.len() + DEFAULT_SEGMENT_SIZE + 1024);
        open.encryptor.push(data, &mut out)?;
        open.size += data.len() as u64;
        store(&mut open.stage, &mut open.writer, crate::pool::whole(&self.out, out)).await
    }

    async fn end_file(&mut self) -> Result<(), ReplicaError> {
        let Some(mut open) = self.open.take() else { return Ok(()) };
        let mut out = Vec::new();
        open.encryptor.finish(&mut out)?;
        store(&mut open.stage, &mut open.writer, Bytes::from(out)).await?;
        let h = &self.header;
        let blob = blob_path(&h.tenant, &h.contract_id, self.version, open.index);
        let link = self.stage_to.as_ref().and_then(|p| self.site.links.get(p));
        let stored = match (open.stage.take(), link) {
            (Some(stage), Some(link)) => {
                // The peer gets the end of the stream (with the hash) as soon
                // as the hash is known, and syncs while this site does.
                let (hashed, hash) = tokio::sync::oneshot::channel::<String>();
                let len = open.writer.len();
                let local = open.writer.finish_early(move |h| {
                    let _ = hashed.send(h.to_string());
                });
                // Not waiting for the peer's confirmation: the shipper does,
                // so the peer syncs while this site commits the entry.
                let remote = async move {
                    match hash.await {
                        Ok(h) => stage.finish(len, &h).await,
                        Err(_) => None,
                    }
                };
                let (stored, staged) = tokio::join!(local, remote);
                if let Some(id) = staged {
                    link.note_staged(&blob, id);
                    self.staged.push(blob.clone());
                }
                stored?
            }
            _ => open.writer.finish().await?,
        };
        self.files.push(FileRecord { name: open.name, blob, size: open.size, ciphertext_len: stored.len, ciphertext_blake3: stored.hash, key: Some(open.key) });
        Ok(())
    }

    /// Makes the version durable here, then waits for replication as the
    /// pair's mode requires, and only then reports it acknowledged.
    pub async fn commit(mut self) -> Result<(VersionRecord, Acknowledged), ReplicaError> {
        let t0 = tokio::time::Instant::now();
        self.end_file().await?;
        let stored_ms = t0.elapsed().as_millis();
        // Ownership may have moved while the files streamed in.
        let (shard, epoch) = self.site.check_owner(&self.header.tenant)?;
        if shard != self.shard || epoch != self.epoch {
            return Err(ReplicaError::NoLease(format!("shard {shard} changed owner epoch during the write; nothing was stored")));
        }
        let h = std::mem::take(&mut self.header);
        let record = VersionRecord {
            tenant: h.tenant.clone(),
            contract_id: h.contract_id.clone(),
            version: self.version,
            shard,
            epoch,
            origin: self.site.name.clone(),
            created_unix_ms: self.site.clock.now_unix_ms(),
            fields: h.fields,
            pii: std::mem::take(&mut self.pii),
            pii_key: self.pii_key.take(),
            files: std::mem::take(&mut self.files),
        };
        let head = ContractHead { tenant: h.tenant, contract_id: h.contract_id, shard, latest: record.version, destroyed: None };
        let seq = self
            .site
            .append(shard, epoch, Change::Put(record.clone()), |_, batch| {
                batch.put_version(&record);
                batch.put_head(&head);
                Ok(())
            })
            .await?;
        self.committed = true;
        let committed_ms = t0.elapsed().as_millis();
        let bytes = record.files.iter().map(|f| f.ciphertext_len).sum();
        let replication = crate::sync::confirm(self.site, seq, bytes, (shard, epoch)).await?;
        tracing::debug!(seq, bytes, stored_ms, committed_ms, confirmed_ms = t0.elapsed().as_millis() as u64, "put timing after the last byte arrived");
        Ok((record, Acknowledged { seq, replication }))
    }
}

impl Drop for PutSession<'_> {
    /// A put that was not committed leaves its staged copies to the peer's
    /// collector; the shipper must not refer to them.
    fn drop(&mut self) {
        if !self.committed && !self.staged.is_empty() {
            if let Some(link) = self.stage_to.as_ref().and_then(|p| self.site.links.get(p)) {
                link.take_staged(self.staged.iter().map(String::as_str));
            }
        }
    }
}

/// Whether this site's writes wait for `peer` (the pair is in sync mode
/// this way).
pub(crate) fn waits_for(site: &Site, peer: &str) -> bool {
    stage_target(site).as_deref() == Some(peer)
}

/// Where this site stages the files of its writes: its in-city peer, while
/// the pair is in a mode where writes wait for it.
fn stage_target(site: &Site) -> Option<String> {
    let state = site.view.latest()?;
    let pair = state.pair_of(&site.name)?;
    let peer = pair.partner(&site.name);
    (waits_for_peer(pair.outgoing(&site.name)) && site.links.contains_key(peer)).then(|| peer.to_string())
}

/// Stores ciphertext of an open file, and streams it to the peer if staging.
async fn store(stage: &mut Option<StageUpload>, writer: &mut BlobWriter, bytes: Bytes) -> Result<(), ReplicaError> {
    if bytes.is_empty() {
        return Ok(());
    }
    if let Some(s) = stage {
        if !s.send(bytes.clone()).await {
            *stage = None;
        }
    }
    writer.write(&bytes).await?;
    Ok(())
}

/// Destroys a contract at its owner. While the policy's `four_eyes` is on,
/// only with `approval`: a request a second admin approved for this
/// contract, used up at the controllers before anything is destroyed.
pub async fn destroy(site: &Site, tenant: &str, contract_id: &str, who: &str, why: &str, approval: u64) -> Result<Acknowledged, ReplicaError> {
    check_id("tenant", tenant)?;
    check_id("contract id", contract_id)?;
    if who.trim().is_empty() || why.trim().is_empty() {
        return Err(ReplicaError::Invalid("destroy needs who and why: they are kept in the tombstone".into()));
    }
    let (shard, epoch) = site.check_owner(tenant)?;
    let _busy = site.claim(tenant, contract_id).ok_or_else(|| ReplicaError::Busy(format!("{tenant}/{contract_id}")))?;
    let head = site.meta.head(shard, tenant, contract_id)?.ok_or_else(|| ReplicaError::NotFound(format!("contract {tenant}/{contract_id}")))?;
    if head.destroyed.is_some() {
        return Err(ReplicaError::Destroyed { tenant: tenant.into(), contract_id: contract_id.into() });
    }
    use_approval(site, tenant, contract_id, who, why, approval).await?;
    let tombstone = Tombstone { at_unix_ms: site.clock.now_unix_ms(), origin: site.name.clone(), who: who.trim().to_string(), why: why.trim().to_string() };
    let change = Change::Destroy { tenant: tenant.into(), contract_id: contract_id.into(), tombstone: tombstone.clone() };
    let seq = site.append(shard, epoch, change, |seq, batch| site.shred(&head, &tombstone, seq, batch)).await?;
    let replication = crate::sync::confirm(site, seq, 0, (shard, epoch)).await?;
    Ok(Acknowledged { seq, replication })
}

/// The four-eyes rule for a destroy ([`tandem_controller::ops::approval`]):
/// with the policy on, the approval is used at the controllers (a Raft
/// change, so it is used once, by its approver, for this contract only)
/// before the destroy may go ahead.
async fn use_approval(site: &Site, tenant: &str, contract_id: &str, who: &str, why: &str, approval: u64) -> Result<(), ReplicaError> {
    use tandem_controller::ops::approval;
    if !site.view.latest().is_some_and(|s| s.policy.four_eyes) {
        return Ok(());
    }
    let args = approval::destroy_args(tenant, contract_id);
    if approval == 0 {
        return Err(ReplicaError::NeedsApproval(format!(
            "destroying {tenant}/{contract_id} needs a second admin's approval (policy four_eyes); nothing was destroyed"
        )));
    }
    let spec = approval::UseSpec { id: approval, action: approval::DESTROY.into(), args };
    let outcome = site.control.use_approval(&spec, who, why).await.map_err(|e| ReplicaError::NotReady(format!("cannot check approval #{approval}: {e}")))?;
    if !outcome.accepted {
        return Err(ReplicaError::NeedsApproval(format!("{}; nothing was destroyed", outcome.result.trim_start_matches("refused: "))));
    }
    Ok(())
}
