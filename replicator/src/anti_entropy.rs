//! Background anti-entropy: the owner of a shard makes sure every peer has
//! its contracts, including those that reached it from *another* site's
//! log. Each site ships only its own log, so when a site dies after its
//! in-city peer confirmed entries the DR site had not received yet, the new
//! owner copies them on from here (what `tandem verify --repair` does by
//! hand).
//!
//! Conservative by design: it runs towards a peer only while this site's
//! own log is fully confirmed by it (nothing of ours is in flight), and it
//! only *adds*: contracts the peer lacks, or holds in an older version or
//! not yet destroyed. It never removes or replaces a newer version a peer
//! holds (divergent writes are kept for reconciliation).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tandem_proto::replicator as pb;

use crate::digest;
use crate::peer::client;
use crate::site::Site;

/// How often each peer is compared.
pub const EVERY: Duration = Duration::from_secs(5);
const CALL: Duration = Duration::from_secs(30);

pub async fn run(site: Arc<Site>) {
    loop {
        tokio::time::sleep(EVERY).await;
        for peer in site.links.keys() {
            match round(&site, peer).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(site = %site.name, peer = %peer, copied = n, "anti-entropy copied contracts the peer lacked"),
                Err(e) => tracing::debug!(site = %site.name, peer = %peer, error = %e, "anti-entropy round skipped"),
            }
        }
    }
}

async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> Result<T, String> {
    match tokio::time::timeout(CALL, call).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(format!("{what}: {}", s.message())),
        Err(_) => Err(format!("{what}: no answer within {} s", CALL.as_secs())),
    }
}

/// Compares the shards this site owns with `peer` and has it copy what it
/// lacks from here. Returns how many contracts were copied.
async fn round(site: &Site, peer: &str) -> Result<usize, String> {
    let state = site.view.leased().ok_or("no leased controller view")?;
    let link = site.links.get(peer).ok_or("no link")?;
    if crate::lag::of_link(site, link).map_err(|e| e.to_string())?.entries > 0 {
        return Ok(0);
    }
    let mine: Vec<u32> = (0..state.shards.len() as u32).filter(|n| state.shards[*n as usize].owner == site.name).collect();
    if mine.is_empty() {
        return Ok(0);
    }
    let me = site.addr_of(&site.name).ok_or("own address unknown")?.to_string();
    let channel = site.transport.channel(&link.addr).map_err(|e| e.to_string())?;
    let mut c = client(channel);
    let theirs = bounded("digests", c.digests(pb::DigestsRequest {})).await?.shard_digests;
    if theirs.len() != state.shards.len() {
        return Err("peer has another shard count".into());
    }
    let mut copied = 0;
    let mut differing = 0;
    for shard in mine {
        let ours = digest::inventory(site, shard).map_err(|e| e.to_string())?;
        if digest::shard_digest(&ours) == theirs[shard as usize] {
            continue;
        }
        differing += 1;
        let reply = bounded("inventory", c.inventory(pb::InventoryRequest { shard })).await?;
        let at_peer: BTreeMap<(String, String), pb::InventoryItem> = reply.items.into_iter().map(|i| ((i.tenant.clone(), i.contract_id.clone()), i)).collect();
        for item in ours {
            let behind = match at_peer.get(&(item.tenant.clone(), item.contract_id.clone())) {
                None => true,
                Some(p) => p.version < item.version || (item.destroyed && !p.destroyed),
            };
            if !behind {
                continue;
            }
            let req = pb::RepairRequest { tenant: item.tenant.clone(), contract_id: item.contract_id.clone(), source_addr: me.clone() };
            bounded("repair", c.repair(req)).await?;
            copied += 1;
        }
    }
    site.counters.set_differing(peer, differing);
    Ok(copied)
}
