//! The replicator's gRPC services: Contracts (for the platform and the
//! CLI) and Replication (between sites), and the handlers the bulk streams
//! (`crate::bulk`: puts, staged copies, Apply) share with them. Handlers
//! parse and convert; the work is in `write`, `read`, `apply` and `digest`.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tandem_proto::replicator as pb;
use tandem_proto::replicator::contracts_server::Contracts;
use tandem_proto::replicator::get_chunk::Part as GetPart;
use tandem_proto::replicator::put_chunk::Part as PutPart;
use tandem_proto::replicator::replication_server::Replication;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::apply::{apply, Mode};
use crate::error::ReplicaError;
use crate::model::{Change, ContractHead, LogEntry, VersionRecord};
use crate::parts::PartReader;
use crate::site::Site;
use crate::write::{PutHeader, PutSession};
use crate::{digest, read, ship};

pub(crate) type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Describes a version for clients. PII values only when `pii` is given.
pub fn info(head: &ContractHead, v: Option<&VersionRecord>, pii: Option<std::collections::BTreeMap<String, String>>) -> pb::ContractInfo {
    let mut out = pb::ContractInfo {
        tenant: head.tenant.clone(),
        contract_id: head.contract_id.clone(),
        version: head.latest,
        shard: head.shard,
        destroyed: head.destroyed.is_some(),
        ..Default::default()
    };
    if let Some(v) = v {
        out.version = v.version;
        out.epoch = v.epoch;
        out.origin = v.origin.clone();
        out.created_unix_ms = v.created_unix_ms;
        out.fields = v.fields.clone().into_iter().collect();
        out.pii_field_names = v.pii.keys().cloned().collect();
        out.files = v
            .files
            .iter()
            .map(|f| pb::FileInfo { name: f.name.clone(), size: f.size, ciphertext_len: f.ciphertext_len, ciphertext_blake3: f.ciphertext_blake3.clone() })
            .collect();
    }
    if let Some(p) = pii {
        out.pii_fields = p.into_iter().collect();
    }
    out
}

/// A contract read, for `Contracts.Get` and the bulk `Get`: its
/// description with PII, then each file's start and plaintext. A file
/// that fails its checks part-way ends the stream with the error.
pub async fn get_chunks(site: &Arc<Site>, r: pb::GetRequest) -> Result<BoxStream<pb::GetChunk>, Status> {
    site.serving()?;
    let (head, v) = read::version(site, &r.tenant, &r.contract_id, r.version)?;
    let pii = read::pii_fields(site, &v).await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<pb::GetChunk, Status>>(4);
    let site = site.clone();
    let first = pb::GetChunk { part: Some(GetPart::Info(info(&head, Some(&v), Some(pii)))) };
    tokio::spawn(async move {
        if tx.send(Ok(first)).await.is_err() {
            return;
        }
        for file in &v.files {
            let start = pb::GetChunk { part: Some(GetPart::File(pb::FileStart { name: file.name.clone(), ..Default::default() })) };
            if tx.send(Ok(start)).await.is_err() {
                return;
            }
            let send = read::channel_sender(tx.clone(), |b| Ok(pb::GetChunk { part: Some(GetPart::Data(b)) }));
            if let Err(e) = read::send_file(&site, &v, file, send).await {
                tracing::warn!(error = %e, "read failed");
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// A contract's state (or one version) as one log entry, for a repair
/// elsewhere: `Replication.Fetch` and the bulk `Fetch`.
pub fn fetch_chunks(site: &Arc<Site>, r: pb::FetchRequest) -> Result<BoxStream<pb::ApplyChunk>, Status> {
    // A restoring site is no source: its copy may predate a destroy.
    site.serving()?;
    let entry = repair_entry(site, &r.tenant, &r.contract_id, r.version)?;
    Ok(Box::pin(ship::entry_chunks(site.blobs.clone(), entry, Default::default(), None, None).map(Ok)))
}

pub struct ContractsService {
    site: Arc<Site>,
}

impl ContractsService {
    pub fn new(site: Arc<Site>) -> Self {
        Self { site }
    }
}

/// One change-log entry from a peer's shipper (a bulk stream, [`crate::bulk`]).
pub async fn apply_logged<S>(site: &Site, chunks: S) -> Result<pb::ApplyReply, Status>
where
    S: Stream<Item = Result<pb::ApplyChunk, Status>>,
{
    let result = apply(site, chunks, Mode::Log).await;
    site.counters.count("apply", result.as_ref().err());
    let applied_seq = result.inspect_err(|e| {
        tracing::warn!(site = %site.name, error = %e, "replication entry refused");
    })?;
    Ok(pb::ApplyReply { applied_seq })
}

/// A staged copy from the in-city peer (a bulk stream, [`crate::bulk`]).
pub async fn stage_logged<S>(site: &Site, chunks: S) -> Result<pb::StageReply, Status>
where
    S: Stream<Item = Result<pb::StageChunk, Status>>,
{
    let staged_id = crate::stage::receive(site, chunks).await.inspect_err(|e| {
        tracing::warn!(site = %site.name, error = %e, "staged copy refused");
    })?;
    Ok(pb::StageReply { staged_id })
}

/// A put, from gRPC (`Contracts.Put`) or a bulk stream ([`crate::bulk`]),
/// counted by outcome.
pub async fn put_counted<S>(site: &Site, chunks: S) -> Result<pb::PutReply, Status>
where
    S: Stream<Item = Result<pb::PutChunk, Status>> + Unpin,
{
    let result = put(site, chunks).await;
    site.counters.count("put", result.as_ref().err());
    Ok(result?)
}

async fn put<S>(site: &Site, chunks: S) -> Result<pb::PutReply, ReplicaError>
where
    S: Stream<Item = Result<pb::PutChunk, Status>> + Unpin,
{
    site.serving()?;
    let mut chunks = PartReader::new(chunks, "put");
    let header = match chunks.first().await? {
        Some(PutPart::Header(h)) => {
            PutHeader { tenant: h.tenant, contract_id: h.contract_id, fields: h.fields.into_iter().collect(), pii_fields: h.pii_fields.into_iter().collect() }
        }
        _ => return Err(ReplicaError::Invalid("a put must start with its header".into())),
    };
    let mut session = PutSession::begin(site, header).await?;
    let mut files = 0u32;
    let end = loop {
        let Some(part) = chunks.next().await? else {
            return Err(ReplicaError::Invalid("put stream ended before its end marker (truncated upload); nothing was stored".into()));
        };
        match part {
            PutPart::File(f) => {
                files += 1;
                session.start_file(&f.name).await?
            }
            PutPart::Data(d) => session.write(&d).await?,
            PutPart::End(end) => break end,
            PutPart::Header(_) => return Err(ReplicaError::Invalid("a put carries one header".into())),
        }
    };
    if end.files != files {
        return Err(ReplicaError::Invalid(format!("put declared {} files but sent {files}; nothing was stored", end.files)));
    }
    let (record, ack) = session.commit().await?;
    let head =
        ContractHead { tenant: record.tenant.clone(), contract_id: record.contract_id.clone(), shard: record.shard, latest: record.version, destroyed: None };
    Ok(pb::PutReply { contract: Some(info(&head, Some(&record), None)), replication: ack.replication })
}

#[tonic::async_trait]
impl Contracts for ContractsService {
    async fn put(&self, req: Request<Streaming<pb::PutChunk>>) -> Result<Response<pb::PutReply>, Status> {
        Ok(Response::new(put_counted(&self.site, req.into_inner()).await?))
    }

    type GetStream = BoxStream<pb::GetChunk>;

    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<Self::GetStream>, Status> {
        Ok(Response::new(get_chunks(&self.site, req.into_inner()).await?))
    }

    async fn head(&self, req: Request<pb::HeadRequest>) -> Result<Response<pb::ContractInfo>, Status> {
        self.site.serving()?;
        let r = req.into_inner();
        let (head, v) = read::version(&self.site, &r.tenant, &r.contract_id, r.version)?;
        Ok(Response::new(info(&head, Some(&v), None)))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListReply>, Status> {
        self.site.serving()?;
        let r = req.into_inner();
        let contracts = read::list(&self.site, &r.tenant)?.iter().map(|(h, v)| info(h, v.as_ref(), None)).collect();
        Ok(Response::new(pb::ListReply { contracts }))
    }

    async fn destroy(&self, req: Request<pb::DestroyRequest>) -> Result<Response<pb::DestroyReply>, Status> {
        self.site.serving()?;
        let who = operator_or_claimed(&req, &req.get_ref().who);
        let r = req.into_inner();
        let ack = crate::write::destroy(&self.site, &r.tenant, &r.contract_id, &who, &r.why, r.approval).await?;
        // A destruction is rare and irreversible: worth a line (ids may
        // hold anything an operator typed; the log writer masks PII).
        tracing::info!(tenant = %r.tenant, contract = %r.contract_id, who = %r.who, log_seq = ack.seq, "contract destroyed: its data keys are deleted on every site");
        Ok(Response::new(pb::DestroyReply { log_seq: ack.seq, replication: ack.replication }))
    }

    async fn backup(&self, req: Request<pb::BackupRequest>) -> Result<Response<pb::BackupReply>, Status> {
        self.site.serving()?;
        let who = operator_or_claimed(&req, &req.get_ref().who);
        let r = req.into_inner();
        if r.why.trim().is_empty() {
            return Err(ReplicaError::Invalid("a backup needs a reason (--reason): it is recorded in its manifest".into()).into());
        }
        let options = r.options.into_iter().collect();
        let dest = crate::backup::destination(&r.to, &options).map_err(|e| ReplicaError::Invalid(e.to_string()))?;
        let manifest = crate::backup::create(&self.site, &dest, &who, r.why.trim()).await?;
        tracing::info!(id = %manifest.id, to = %r.to, records = manifest.records, copied = manifest.copied, reused = manifest.reused, who = %who, "backup taken");
        let manifest_json = serde_json::to_string(&manifest).map_err(|e| ReplicaError::Internal(e.to_string()))?;
        Ok(Response::new(pb::BackupReply { manifest_json }))
    }

    async fn rotate(&self, req: Request<pb::RotateRequest>) -> Result<Response<pb::RotateReply>, Status> {
        self.site.serving()?;
        let dry_run = req.into_inner().dry_run;
        let r = crate::rotate::run(&self.site, dry_run).await?;
        if !dry_run {
            tracing::info!(kek = %r.kek_id, versions = r.versions, keys = r.keys, busy = r.busy, remaining = r.remaining, "keys re-wrapped under the current KEK");
        }
        Ok(Response::new(pb::RotateReply {
            kek_id: r.kek_id,
            versions_rewrapped: r.versions,
            keys_rewrapped: r.keys,
            busy: r.busy,
            remaining: r.remaining,
            last_seq: r.last_seq,
        }))
    }
}

/// Who made a call, for its records: with TLS the operator certificate's
/// name, otherwise the `who` the caller sent.
fn operator_or_claimed<T>(req: &Request<T>, claimed: &str) -> String {
    match tandem_net::Caller::of(req) {
        tandem_net::Caller::Tls(tandem_net::Peer::Operator { name, .. }) => name,
        _ => claimed.to_string(),
    }
}

pub struct ReplicationService {
    site: Arc<Site>,
}

impl ReplicationService {
    pub fn new(site: Arc<Site>) -> Self {
        Self { site }
    }
}

#[tonic::async_trait]
impl Replication for ReplicationService {
    async fn cursor(&self, req: Request<pb::CursorRequest>) -> Result<Response<pb::CursorReply>, Status> {
        let origin = req.into_inner().origin;
        // The peer's shipper is (re)connecting: the peer is up, so ours
        // need not wait out its back-off before shipping to it.
        if let Some(link) = self.site.links.get(&origin) {
            link.peer_seen.notify_one();
        }
        let applied_seq = self.site.meta.cursor(&origin).map_err(ReplicaError::from)?;
        Ok(Response::new(pb::CursorReply { applied_seq, takes_batches: true }))
    }

    async fn backlog(&self, req: Request<pb::BacklogRequest>) -> Result<Response<pb::BacklogReply>, Status> {
        let to = req.into_inner().to;
        let link = self.site.links.get(&to).ok_or_else(|| Status::not_found(format!("no link to {to:?}")))?;
        let lag = crate::lag::of_link(&self.site, link)?;
        let head = self.site.meta.log_head().map_err(ReplicaError::from)?;
        Ok(Response::new(pb::BacklogReply { entries: lag.entries, bytes: lag.bytes, head_seq: head, acked_seq: *link.acked.borrow() }))
    }

    async fn digests(&self, _req: Request<pb::DigestsRequest>) -> Result<Response<pb::DigestsReply>, Status> {
        let count = self.site.view.latest().map(|s| s.shards.len() as u32).ok_or_else(|| Status::unavailable("no controller view yet"))?;
        let site = self.site.clone();
        // Under the simulation everything runs on one thread in simulated
        // time: a blocking-pool thread would make runs irreproducible.
        let shard_digests = if site.transport == tandem_net::Transport::Turmoil {
            digest::shard_digests(&site, count)?
        } else {
            tokio::task::spawn_blocking(move || digest::shard_digests(&site, count)).await.map_err(|e| Status::internal(e.to_string()))??
        };
        Ok(Response::new(pb::DigestsReply { site: self.site.name.clone(), shard_digests }))
    }

    async fn inventory(&self, req: Request<pb::InventoryRequest>) -> Result<Response<pb::InventoryReply>, Status> {
        let items = digest::inventory(&self.site, req.into_inner().shard)?
            .into_iter()
            .map(|i| pb::InventoryItem { tenant: i.tenant, contract_id: i.contract_id, version: i.version, destroyed: i.destroyed, digest: i.digest })
            .collect();
        Ok(Response::new(pb::InventoryReply { items }))
    }

    type FetchStream = BoxStream<pb::ApplyChunk>;

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<Self::FetchStream>, Status> {
        Ok(Response::new(fetch_chunks(&self.site, req.into_inner())?))
    }

    async fn divergent(&self, _req: Request<pb::DivergentRequest>) -> Result<Response<pb::DivergentReply>, Status> {
        Ok(Response::new(pb::DivergentReply { entries: crate::divergent::entries(&self.site)? }))
    }

    async fn skip(&self, req: Request<pb::SkipRequest>) -> Result<Response<pb::ApplyReply>, Status> {
        let applied_seq = crate::apply::skip(&self.site, &req.into_inner()).await?;
        Ok(Response::new(pb::ApplyReply { applied_seq }))
    }

    async fn retract(&self, req: Request<pb::RetractRequest>) -> Result<Response<pb::RetractReply>, Status> {
        let quarantined = crate::quarantine::retract(&self.site, &req.into_inner()).await?;
        Ok(Response::new(pb::RetractReply { quarantined }))
    }

    async fn scrub(&self, _req: Request<pb::ScrubRequest>) -> Result<Response<pb::ScrubReply>, Status> {
        let count = self.site.view.latest().map(|s| s.shards.len() as u32).ok_or_else(|| Status::unavailable("no controller view yet"))?;
        let done = crate::scrub::scrub(&self.site, count).await?;
        let problems = done
            .problems
            .into_iter()
            .map(|p| pb::ScrubProblem { tenant: p.tenant, contract_id: p.contract_id, version: p.version, file: p.file, problem: p.problem })
            .collect();
        Ok(Response::new(pb::ScrubReply { problems, files_checked: done.files_checked, bytes_checked: done.bytes_checked }))
    }

    async fn repair(&self, req: Request<pb::RepairRequest>) -> Result<Response<pb::RepairReply>, Status> {
        let r = req.into_inner();
        crate::apply::copy_from(&self.site, &r.source_addr, &r.tenant, &r.contract_id).await?;
        Ok(Response::new(pb::RepairReply { result: format!("copied {}/{} from {}", r.tenant, r.contract_id, r.source_addr) }))
    }
}

/// The latest state of a contract (or version `version`, unless 0) as a log
/// entry, for repair elsewhere.
fn repair_entry(site: &Site, tenant: &str, contract_id: &str, version: u64) -> Result<LogEntry, ReplicaError> {
    let state = site.view.latest().ok_or_else(|| ReplicaError::NotReady("this site has not heard from a controller since it started".into()))?;
    let (shard, _) = state.shard_for(tenant).ok_or_else(|| ReplicaError::NotReady("the controller has no shard map yet".into()))?;
    let head = site.meta.head(shard, tenant, contract_id)?.ok_or_else(|| ReplicaError::NotFound(format!("contract {tenant}/{contract_id}")))?;
    let epoch = site.meta.epoch(shard)?;
    let change = match (&head.destroyed, version) {
        (Some(t), _) => Change::Destroy { tenant: tenant.into(), contract_id: contract_id.into(), tombstone: t.clone() },
        (None, v) => {
            let v = if v == 0 { head.latest } else { v };
            Change::Put(site.meta.version(tenant, contract_id, v)?.ok_or_else(|| ReplicaError::NotFound(format!("version {v} of {tenant}/{contract_id}")))?)
        }
    };
    let epoch = match &change {
        Change::Put(v) | Change::Rewrap(v) => v.epoch,
        Change::Destroy { .. } => epoch,
    };
    Ok(LogEntry { origin: site.name.clone(), seq: 0, cum_bytes: 0, at_unix_ms: site.clock.now_unix_ms(), shard, epoch, change })
}
