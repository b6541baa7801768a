//! Client of the Contracts API, used by `tandem contract` and the tests.
//! File bodies are streamed from and to disk; a get writes each file to a
//! temporary name (through the blob writer: writer thread, direct I/O where
//! possible, fsync at the end) and renames it only when the whole contract
//! arrived and passed its checks, so a failed read never leaves a
//! plausible file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::contracts_client::ContractsClient;
use tandem_proto::replicator::get_chunk::Part as GetPart;
use tandem_proto::replicator::put_chunk::Part as PutPart;
use tonic::transport::Channel;

use crate::blob::BlobWriter;
use crate::write::PutHeader;
use crate::MAX_MESSAGE;

/// Bytes of a file per put message.
const PUT_CHUNK: usize = 1024 * 1024;
/// How long a put keeps retrying refusals that pass by themselves.
pub const RETRY_FOR: Duration = Duration::from_secs(10);
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long a client that knows other sites retries one without a write
/// lease ([`ReplicatorClient::with_sites_to_try`]): one lease and a
/// refresh. A renewal that was merely late arrives within it; past it the
/// site is cut off from the controllers, its shards may be on their way
/// elsewhere, and the next site should be tried (the drill found a client
/// spinning 10 s on a cut-off owner).
pub const NO_LEASE_RETRY_FOR: Duration = Duration::from_millis(1750);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("replicator at {addr} did not answer: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The replicator refused; `code` is its stable error code, if any.
    #[error("{message}")]
    Refused { code: Option<String>, message: String },
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

fn contracts_client(channel: Channel) -> ContractsClient<Channel> {
    ContractsClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

fn refused(addr: &str, s: tonic::Status) -> ClientError {
    let code = s.metadata().get(tandem_proto::ERROR_CODE_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string);
    if code.is_none() && tandem_controller::client::is_transport_failure(&s) {
        return ClientError::Unreachable { addr: addr.to_string(), reason: s.message().to_string() };
    }
    ClientError::Refused { code, message: s.message().to_string() }
}

/// The owner's address attached to a "not the owner" refusal.
fn owner_addr(s: &tonic::Status) -> Option<String> {
    s.metadata().get(tandem_proto::OWNER_ADDR_METADATA).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn file_start(name: String) -> pb::PutChunk {
    pb::PutChunk { part: Some(PutPart::File(pb::FileStart { name, ..Default::default() })) }
}

fn bytes_chunks(bytes: bytes::Bytes) -> impl Iterator<Item = pb::PutChunk> {
    (0..bytes.len()).step_by(PUT_CHUNK).map(move |i| pb::PutChunk { part: Some(PutPart::Data(bytes.slice(i..bytes.len().min(i + PUT_CHUNK)))) })
}

/// Where a file's body comes from.
#[derive(Clone)]
enum Body {
    Path(PathBuf),
    Bytes(bytes::Bytes),
}

pub struct ReplicatorClient {
    transport: Transport,
    /// Bound on calls without a file body (head, list, destroy).
    call_timeout: Duration,
    /// One connection per replicator, reused by every call (a new HTTP/2
    /// connection per call costs a handshake, and its first bytes go out
    /// before the server's larger windows and frames are known). Dropped
    /// when a call finds the replicator unreachable.
    channels: std::sync::Mutex<std::collections::BTreeMap<String, Channel>>,
    /// Replicators that did not answer, and when: an owner redirect to one
    /// of them within [`SILENT_FOR`] fails at once instead of waiting out
    /// another connect timeout (the sites that redirect to a dead owner
    /// until the failover reaches them would each cost one).
    silent: std::sync::Mutex<std::collections::BTreeMap<String, tokio::time::Instant>>,
    /// How long a site without a write lease is retried.
    no_lease_retry: Duration,
}

/// How long a replicator that did not answer is not followed to.
const SILENT_FOR: Duration = Duration::from_secs(1);

impl ReplicatorClient {
    pub fn new(transport: Transport, call_timeout: Duration) -> Self {
        Self { transport, call_timeout, channels: Default::default(), silent: Default::default(), no_lease_retry: RETRY_FOR }
    }

    /// For a client that sends to several sites (the platform's): a site
    /// without a write lease is retried for [`NO_LEASE_RETRY_FOR`] only,
    /// then its refusal returned, so the caller tries the next site. A
    /// client with one site to send to keeps waiting [`RETRY_FOR`].
    pub fn with_sites_to_try(mut self) -> Self {
        self.no_lease_retry = NO_LEASE_RETRY_FOR;
        self
    }

    /// How long a refusal that stored nothing may be retried at the same
    /// site: `None` for one that will not pass by itself.
    fn retry_for(&self, e: &ClientError) -> Option<Duration> {
        use tandem_proto::error_code as code;
        match e.code() {
            Some(code::NO_LEASE) => Some(self.no_lease_retry),
            Some(code::MOVING) | Some(code::NOT_READY) => Some(RETRY_FOR),
            _ => None,
        }
    }

    /// When `addr` last did not answer, if within [`SILENT_FOR`].
    fn recently_silent(&self, addr: &str) -> Option<Duration> {
        let silent = self.silent.lock().unwrap_or_else(|p| p.into_inner());
        silent.get(addr).map(|t| t.elapsed()).filter(|e| *e < SILENT_FOR)
    }

    fn client(&self, addr: &str) -> Result<ContractsClient<Channel>, ClientError> {
        let channel = self.channel(addr)?;
        Ok(contracts_client(channel))
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = self.transport.channel(addr).map_err(|e| ClientError::Unreachable { addr: addr.to_string(), reason: e.to_string() })?;
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(channel)
    }

    /// Passes `r` on; a replicator found unreachable gets a new connection
    /// next time (the old one may hang across a partition).
    fn noted<T>(&self, r: Result<T, ClientError>) -> Result<T, ClientError> {
        if let Err(ClientError::Unreachable { addr, .. }) = &r {
            self.channels.lock().unwrap_or_else(|p| p.into_inner()).remove(addr);
            // Not refreshed by a redirect refused without trying: the
            // replicator is tried again once SILENT_FOR has passed.
            if self.recently_silent(addr).is_none() {
                self.silent.lock().unwrap_or_else(|p| p.into_inner()).insert(addr.clone(), tokio::time::Instant::now());
            }
        }
        r
    }

    async fn bounded<T>(&self, addr: &str, fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, ClientError> {
        self.noted(match tokio::time::timeout(self.call_timeout, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(refused(addr, s)),
            Err(_) => Err(ClientError::Unreachable { addr: addr.into(), reason: format!("no answer within {} ms", self.call_timeout.as_millis()) }),
        })
    }

    /// Stores a contract with the files at `files` (name, path). A put sent
    /// to a site that does not own the tenant's shard is resent once to the
    /// owner it names. Refusals that store nothing and pass by themselves
    /// (no lease for a moment, a shard being moved, a replicator starting)
    /// are retried for up to [`RETRY_FOR`] ([`NO_LEASE_RETRY_FOR`] for a
    /// missing lease with [`ReplicatorClient::with_sites_to_try`]).
    pub async fn put(&self, addr: &str, header: &PutHeader, files: &[(String, PathBuf)]) -> Result<pb::PutReply, ClientError> {
        for f in files {
            tokio::fs::metadata(&f.1).await.map_err(|e| ClientError::Io(format!("cannot read {}: {e}", f.1.display())))?;
        }
        let files: Vec<(String, Body)> = files.iter().map(|(n, p)| (n.clone(), Body::Path(p.clone()))).collect();
        self.noted(self.put_retrying(addr, header, &files).await)
    }

    async fn put_following_owner(&self, addr: &str, header: &PutHeader, files: &[(String, Body)]) -> Result<pb::PutReply, ClientError> {
        match self.put_once(addr, header, files).await {
            Err(PutError::NotOwner(owner, _)) if owner != addr && self.recently_silent(&owner).is_some() => {
                let ago = self.recently_silent(&owner).unwrap_or_default();
                Err(ClientError::Unreachable { addr: owner, reason: format!("not tried: it did not answer {} ms ago", ago.as_millis()) })
            }
            Err(PutError::NotOwner(owner, _)) if owner != addr => match self.put_once(&owner, header, files).await {
                Ok(r) => Ok(r),
                // The owner named by the first site names another: their
                // views differ while an ownership change propagates.
                Err(PutError::NotOwner(_, e)) => Err(ClientError::Refused {
                    code: Some(tandem_proto::error_code::MOVING.to_string()),
                    message: format!("the sites disagree on the owner of this shard (an ownership change is propagating): {e}"),
                }),
                Err(PutError::Other(e)) => Err(e),
            },
            Ok(r) => Ok(r),
            Err(PutError::NotOwner(_, e)) | Err(PutError::Other(e)) => Err(e),
        }
    }

    /// Like [`Self::put`], but a site that does not own the shard refuses
    /// instead of the client forwarding to the owner.
    pub async fn put_here(&self, addr: &str, header: &PutHeader, files: &[(String, PathBuf)]) -> Result<pb::PutReply, ClientError> {
        let files: Vec<(String, Body)> = files.iter().map(|(n, p)| (n.clone(), Body::Path(p.clone()))).collect();
        self.noted(self.put_once(addr, header, &files).await.map_err(|e| match e {
            PutError::NotOwner(_, e) | PutError::Other(e) => e,
        }))
    }

    /// Like [`Self::put`], with file bodies in memory (the drill's workload:
    /// no file system under the simulation).
    pub async fn put_bytes(&self, addr: &str, header: &PutHeader, files: &[(String, bytes::Bytes)]) -> Result<pb::PutReply, ClientError> {
        let files: Vec<(String, Body)> = files.iter().map(|(n, b)| (n.clone(), Body::Bytes(b.clone()))).collect();
        self.put_retrying(addr, header, &files).await
    }

    async fn put_retrying(&self, addr: &str, header: &PutHeader, files: &[(String, Body)]) -> Result<pb::PutReply, ClientError> {
        let started = tokio::time::Instant::now();
        loop {
            match self.noted(self.put_following_owner(addr, header, files).await) {
                Err(e) if self.retry_for(&e).is_some_and(|limit| started.elapsed() < limit) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                other => return other,
            }
        }
    }

    async fn put_once(&self, addr: &str, header: &PutHeader, files: &[(String, Body)]) -> Result<pb::PutReply, PutError> {
        let channel = self.channel(addr).map_err(PutError::Other)?;
        let (tx, rx) = tokio::sync::mpsc::channel::<pb::PutChunk>(4);
        let first = pb::PutChunk {
            part: Some(PutPart::Header(pb::PutHeader {
                tenant: header.tenant.clone(),
                contract_id: header.contract_id.clone(),
                fields: header.fields.clone().into_iter().collect(),
                pii_fields: header.pii_fields.clone().into_iter().collect(),
            })),
        };
        let files = files.to_vec();
        let count = files.len() as u32;
        let end = pb::PutChunk { part: Some(PutPart::End(pb::PutEnd { files: count })) };
        let reader = if files.iter().all(|(_, b)| matches!(b, Body::Bytes(_))) {
            // Bodies in memory (the drill) are sent by a task, never a
            // thread: under the simulation a thread would run in real time.
            tokio::spawn(async move {
                let _ = tx.send(first).await;
                for (name, body) in files {
                    let Body::Bytes(bytes) = body else { unreachable!("checked above") };
                    for chunk in std::iter::once(file_start(name)).chain(bytes_chunks(bytes)) {
                        if tx.send(chunk).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                let _ = tx.send(end).await;
                Ok::<(), String>(())
            })
        } else {
            // Files are read on a blocking thread straight into each chunk's
            // buffer (tokio's file would copy every byte once more).
            tokio::task::spawn_blocking(move || {
                use std::io::Read;
                if tx.blocking_send(first).is_err() {
                    return Ok(());
                }
                for (name, body) in files {
                    if tx.blocking_send(file_start(name)).is_err() {
                        return Ok(());
                    }
                    let path = match body {
                        Body::Path(path) => path,
                        Body::Bytes(bytes) => {
                            for chunk in bytes_chunks(bytes) {
                                if tx.blocking_send(chunk).is_err() {
                                    return Ok(());
                                }
                            }
                            continue;
                        }
                    };
                    let mut file = std::fs::File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
                    // Chunks queued, plus the one being read.
                    let pool = crate::pool::Pool::<Vec<u8>>::new(6);
                    loop {
                        let mut buf = pool.vec(PUT_CHUNK);
                        (&mut file).take(PUT_CHUNK as u64).read_to_end(&mut buf).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                        if buf.is_empty() {
                            break;
                        }
                        let chunk = crate::pool::whole(&pool, buf);
                        if tx.blocking_send(pb::PutChunk { part: Some(PutPart::Data(chunk)) }).is_err() {
                            return Ok(());
                        }
                    }
                }
                // Only a complete upload gets its end marker.
                let _ = tx.blocking_send(end);
                Ok::<(), String>(())
            })
        };
        let result = crate::bulk::call::<_, pb::PutReply>(channel, crate::bulk::PUT, tokio_stream::wrappers::ReceiverStream::new(rx)).await;
        // A local read error ends the stream without its end marker, so the
        // server stores nothing; report the read error rather than its refusal.
        let read = reader.await.unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = &read {
            return Err(PutError::Other(ClientError::Io(e.clone())));
        }
        match result {
            Ok(r) => {
                read.map_err(|e| PutError::Other(ClientError::Io(e)))?;
                Ok(r)
            }
            Err(s) => match owner_addr(&s) {
                Some(owner) => Err(PutError::NotOwner(owner, refused(addr, s))),
                None => Err(PutError::Other(refused(addr, s))),
            },
        }
    }

    /// Reads a contract (version 0: latest), writing its files into
    /// `out_dir` when given. Returns its description with PII fields.
    pub async fn get(&self, addr: &str, tenant: &str, contract_id: &str, version: u64, out_dir: Option<&Path>) -> Result<pb::ContractInfo, ClientError> {
        self.noted(self.get_once(addr, tenant, contract_id, version, out_dir, None).await)
    }

    /// Reads a contract like [`ReplicatorClient::get`] without keeping its
    /// files: returns its description and the BLAKE3 (hex) of each file's
    /// decrypted bytes, by file name, so a caller can compare them with
    /// what it wrote (the drill's checker does).
    pub async fn get_hashed(&self, addr: &str, tenant: &str, contract_id: &str) -> Result<(pb::ContractInfo, BTreeMap<String, String>), ClientError> {
        let mut hashes = Vec::new();
        let info = self.noted(self.get_once(addr, tenant, contract_id, 0, None, Some(&mut hashes)).await)?;
        Ok((info, hashes.into_iter().map(|(name, h)| (name, h.finalize().to_hex().to_string())).collect()))
    }

    async fn get_once(
        &self,
        addr: &str,
        tenant: &str,
        contract_id: &str,
        version: u64,
        out_dir: Option<&Path>,
        mut hashes: Option<&mut Vec<(String, blake3::Hasher)>>,
    ) -> Result<pb::ContractInfo, ClientError> {
        let req = pb::GetRequest { tenant: tenant.into(), contract_id: contract_id.into(), version };
        // A bulk stream: the file bytes are not copied into gRPC messages.
        let channel = self.channel(addr)?;
        let grpc = |channel, req| async move { contracts_client(channel).get(req).await };
        let mut stream = crate::bulk::download_or_grpc(channel, crate::bulk::GET, req, grpc).await.map_err(|s| refused(addr, s))?;
        let mut info = None;
        // Each file is written like a blob (writer thread, direct I/O where
        // the filesystem takes it, fsync when complete).
        let mut current: Option<(BlobWriter, PathBuf, PathBuf)> = None;
        let mut finished: Vec<(PathBuf, PathBuf)> = Vec::new();
        let failed = |tmp: &Path, e: crate::blob::BlobError| ClientError::Io(format!("cannot write {}: {e}", tmp.display()));
        let result = async {
            while let Some(chunk) = stream.next().await {
                match chunk.map_err(|s| refused(addr, s))?.part {
                    Some(GetPart::Info(i)) => info = Some(i),
                    Some(GetPart::File(f)) => {
                        if let Some(h) = hashes.as_mut() {
                            h.push((f.name.clone(), blake3::Hasher::new()));
                        }
                        if let Some((file, tmp, dst)) = current.take() {
                            file.finish().await.map_err(|e| failed(&tmp, e))?;
                            finished.push((tmp, dst));
                        }
                        if let Some(dir) = out_dir {
                            crate::ids::check_file_name(&f.name).map_err(|e| ClientError::Io(e.0))?;
                            let dst = dir.join(&f.name);
                            let tmp = dir.join(format!(".{}.partial", f.name));
                            let file = crate::blob::file_writer(&tmp).await.map_err(|e| ClientError::Io(e.to_string()))?;
                            current = Some((file, tmp, dst));
                        }
                    }
                    Some(GetPart::Data(d)) => {
                        if let Some((_, h)) = hashes.as_mut().and_then(|h| h.last_mut()) {
                            h.update(&d);
                        }
                        if let Some((file, tmp, _)) = current.as_mut() {
                            file.write(&d).await.map_err(|e| failed(tmp, e))?;
                        }
                    }
                    None => {}
                }
            }
            if let Some((file, tmp, dst)) = current.take() {
                file.finish().await.map_err(|e| failed(&tmp, e))?;
                finished.push((tmp, dst));
            }
            Ok::<(), ClientError>(())
        }
        .await;
        if let Err(e) = result {
            for (tmp, _) in &finished {
                let _ = tokio::fs::remove_file(tmp).await;
            }
            if let Some((file, _, _)) = current.take() {
                file.abort().await;
            }
            return Err(e);
        }
        for (tmp, dst) in finished {
            tokio::fs::rename(&tmp, &dst).await.map_err(|e| ClientError::Io(format!("cannot rename to {}: {e}", dst.display())))?;
        }
        info.ok_or_else(|| ClientError::Io("the replicator sent no contract description".into()))
    }

    pub async fn head(&self, addr: &str, tenant: &str, contract_id: &str) -> Result<pb::ContractInfo, ClientError> {
        let mut c = self.client(addr)?;
        self.bounded(addr, c.head(pb::HeadRequest { tenant: tenant.into(), contract_id: contract_id.into(), version: 0 })).await
    }

    pub async fn list(&self, addr: &str, tenant: &str) -> Result<Vec<pb::ContractInfo>, ClientError> {
        let mut c = self.client(addr)?;
        Ok(self.bounded(addr, c.list(pb::ListRequest { tenant: tenant.into() })).await?.contracts)
    }

    /// Destroys a contract at its owner (following one redirect).
    /// Key rotation at one site (see `crate::rotate`). Not bounded by the
    /// call timeout: a site may hold many versions.
    pub async fn rotate(&self, addr: &str, dry_run: bool) -> Result<pb::RotateReply, ClientError> {
        let mut c = self.client(addr)?;
        self.noted(c.rotate(pb::RotateRequest { dry_run }).await.map(|r| r.into_inner()).map_err(|s| refused(addr, s)))
    }

    /// Takes a backup of the site at `addr` into `to` (see `crate::backup`).
    /// Not bounded by the call timeout: it copies the site's ciphertext.
    pub async fn backup(&self, addr: &str, to: &str, options: &BTreeMap<String, String>, who: &str, why: &str) -> Result<crate::backup::Manifest, ClientError> {
        let mut c = self.client(addr)?;
        let req = pb::BackupRequest { to: to.into(), options: options.clone().into_iter().collect(), who: who.into(), why: why.into() };
        let reply = self.noted(c.backup(req).await.map(|r| r.into_inner()).map_err(|s| refused(addr, s)))?;
        serde_json::from_str(&reply.manifest_json).map_err(|e| ClientError::Io(format!("malformed backup manifest from {addr}: {e}")))
    }

    /// `approval`: the approved request it carries out (policy four_eyes), or 0.
    pub async fn destroy(&self, addr: &str, tenant: &str, contract_id: &str, who: &str, why: &str, approval: u64) -> Result<pb::DestroyReply, ClientError> {
        self.noted(self.destroy_once(addr, tenant, contract_id, who, why, approval).await)
    }

    async fn destroy_once(&self, addr: &str, tenant: &str, contract_id: &str, who: &str, why: &str, approval: u64) -> Result<pb::DestroyReply, ClientError> {
        let req = pb::DestroyRequest { tenant: tenant.into(), contract_id: contract_id.into(), who: who.into(), why: why.into(), approval };
        let mut c = self.client(addr)?;
        match tokio::time::timeout(self.call_timeout, c.destroy(req.clone())).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => match owner_addr(&s) {
                Some(owner) if owner != addr => {
                    let mut c = self.client(&owner)?;
                    self.bounded(&owner, c.destroy(req)).await
                }
                _ => Err(refused(addr, s)),
            },
            Err(_) => Err(ClientError::Unreachable { addr: addr.into(), reason: "no answer".into() }),
        }
    }
}

enum PutError {
    /// Refused by a non-owner that named the owner's address.
    NotOwner(String, ClientError),
    Other(ClientError),
}
