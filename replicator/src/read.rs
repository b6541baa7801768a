//! Reads, served by any site from what it stores: head, list, get. Only a
//! get decrypts, with the key-encryption key of the site serving it.

use std::collections::BTreeMap;

use bytes::Bytes;
use tandem_crypto::{open_pii, Decryptor, FileContext};
use tokio::sync::mpsc;

use crate::error::ReplicaError;
use crate::ids::check_id;
use crate::model::{key_context, ContractHead, FileRecord, VersionRecord};
use crate::pool::Pool;
use crate::site::Site;

/// Plaintext bytes per chunk sent to a reader.
pub const READ_CHUNK: usize = 1024 * 1024;

fn shard_of(site: &Site, tenant: &str) -> Result<u32, ReplicaError> {
    let state =
        site.view.latest().ok_or_else(|| ReplicaError::NotReady("this site has not heard from a controller since it started (shard map unknown)".into()))?;
    state.shard_for(tenant).map(|(s, _)| s).ok_or_else(|| ReplicaError::NotReady("the controller has no shard map yet".into()))
}

/// The head of a contract and one of its versions (0: the latest), unless
/// it is unknown or destroyed.
pub fn version(site: &Site, tenant: &str, contract_id: &str, version: u64) -> Result<(ContractHead, VersionRecord), ReplicaError> {
    check_id("tenant", tenant)?;
    check_id("contract id", contract_id)?;
    let shard = shard_of(site, tenant)?;
    let not_found = || ReplicaError::NotFound(format!("contract {tenant}/{contract_id}"));
    let head = site.meta.head(shard, tenant, contract_id)?.ok_or_else(not_found)?;
    if head.destroyed.is_some() {
        return Err(ReplicaError::Destroyed { tenant: tenant.into(), contract_id: contract_id.into() });
    }
    let v = if version == 0 { head.latest } else { version };
    let record = site.meta.version(tenant, contract_id, v)?.ok_or_else(|| ReplicaError::NotFound(format!("version {v} of contract {tenant}/{contract_id}")))?;
    Ok((head, record))
}

/// Every contract of a tenant with its latest version (destroyed ones
/// included, marked by their head).
pub fn list(site: &Site, tenant: &str) -> Result<Vec<(ContractHead, Option<VersionRecord>)>, ReplicaError> {
    check_id("tenant", tenant)?;
    let shard = shard_of(site, tenant)?;
    let mut out = Vec::new();
    for head in site.meta.tenant_heads(shard, tenant)? {
        let latest = site.meta.version(tenant, &head.contract_id, head.latest)?;
        out.push((head, latest));
    }
    Ok(out)
}

/// The PII fields of a version, decrypted.
pub async fn pii_fields(site: &Site, v: &VersionRecord) -> Result<BTreeMap<String, String>, ReplicaError> {
    if v.pii.is_empty() {
        return Ok(BTreeMap::new());
    }
    let wrapped = v.pii_key.as_ref().ok_or_else(|| ReplicaError::Destroyed { tenant: v.tenant.clone(), contract_id: v.contract_id.clone() })?;
    let ctx = key_context(&v.tenant, &v.contract_id, v.version, "pii");
    let key = site.keys.unwrap_pii_key(wrapped, &ctx).await?;
    let mut out = BTreeMap::new();
    for (name, sealed) in &v.pii {
        let plain = open_pii(&key, name, &ctx, sealed)?;
        let text = String::from_utf8(plain.to_vec()).map_err(|_| ReplicaError::Corrupt(format!("PII field {name:?} is not text")))?;
        out.insert(name.clone(), text);
    }
    Ok(out)
}

/// Decrypts `file` of `v` and sends its plaintext in chunks. A file that
/// fails its checks part-way sends an error last: the reader must discard
/// what it got (the CLI writes to a temporary file and renames on success).
pub async fn send_file(
    site: &Site,
    v: &VersionRecord,
    file: &FileRecord,
    mut send: impl FnMut(Bytes) -> futures::future::BoxFuture<'static, bool>,
) -> Result<(), ReplicaError> {
    let what = format!("file {:?} of {}/{} version {}", file.name, v.tenant, v.contract_id, v.version);
    let wrapped = file.key.as_ref().ok_or_else(|| ReplicaError::Destroyed { tenant: v.tenant.clone(), contract_id: v.contract_id.clone() })?;
    let key = site.keys.unwrap_data_key(wrapped, &key_context(&v.tenant, &v.contract_id, v.version, &format!("file:{}", file.name))).await?;
    let ctx = FileContext { tenant: v.tenant.clone(), contract_id: v.contract_id.clone(), version: v.version, file_name: file.name.clone() };
    let mut decryptor = Decryptor::new(&key, &ctx);
    let mut stream = site.blobs.read(&file.blob).await?;
    // Chunks queued for sending, plus the one being filled.
    let pool = Pool::<Vec<u8>>::new(4);
    let mut out = pool.vec(READ_CHUNK * 2);
    let mut seen = 0u64;
    use futures::StreamExt;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        decryptor.push(&chunk, &mut out).map_err(|e| ReplicaError::Corrupt(format!("{what}: {e}")))?;
        if out.len() >= READ_CHUNK {
            let full = std::mem::replace(&mut out, pool.vec(READ_CHUNK * 2));
            if !send(crate::pool::whole(&pool, full)).await {
                return Ok(());
            }
        }
    }
    decryptor.finish().map_err(|e| ReplicaError::Corrupt(format!("{what}: {e}")))?;
    if seen != file.ciphertext_len {
        return Err(ReplicaError::Corrupt(format!("{what}: {seen} bytes stored, {} expected", file.ciphertext_len)));
    }
    if !out.is_empty() {
        send(Bytes::from(out)).await;
    }
    Ok(())
}

/// A sender over an mpsc channel, for [`send_file`].
pub fn channel_sender<T: Send + 'static>(tx: mpsc::Sender<T>, wrap: fn(Bytes) -> T) -> impl FnMut(Bytes) -> futures::future::BoxFuture<'static, bool> {
    move |bytes| {
        let tx = tx.clone();
        Box::pin(async move { tx.send(wrap(bytes)).await.is_ok() })
    }
}
