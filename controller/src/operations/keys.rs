//! Key rotation (`tandem keys rotate`): every shard owner re-wraps its data
//! and PII keys under the current KEK, the re-wrapped keys replicate, and
//! the rotation is done when no site holds a key under another KEK. No
//! file is re-encrypted. The plan is each site's dry run: its current KEK
//! and how many keys it holds under others; sites that wrap with different
//! KEKs are refused (a half-configured rollout).

use std::time::Duration;

use serde::Serialize;
use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::contracts_client::ContractsClient;

use super::verify::site_replicators;
use super::{present, replicator_call, Hooks, OpError, Plan};
use crate::client::ControlClient;

/// How often the sites are asked whether old-KEK keys remain.
const POLL: Duration = Duration::from_millis(500);

/// What the caller asks for.
#[derive(Clone, Debug)]
pub struct Request {
    /// Replicator addresses as SITE=HOST:PORT, over the heartbeats'.
    pub replicators: Vec<String>,
    pub who: String,
    pub why: String,
    /// How long to wait for every site to hold only current-KEK keys.
    pub wait: Duration,
}

/// One site's answer (a dry run: what it would do).
#[derive(Clone, Debug, Serialize)]
pub struct SiteRotation {
    pub site: String,
    pub kek_id: String,
    pub versions_rewrapped: u64,
    pub keys_rewrapped: u64,
    /// Contracts skipped because a write to them was in progress.
    pub busy: u64,
    /// Keys still wrapped by another KEK there.
    pub remaining: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Rotated {
    pub kek_id: String,
    /// Each site's rotation.
    pub sites: Vec<SiteRotation>,
    pub versions: u64,
    pub keys: u64,
    /// Sites that still hold keys under another KEK when the wait ended.
    pub left: Vec<String>,
    /// The audit entry's result.
    pub result: String,
}

impl Rotated {
    pub fn complete(&self) -> bool {
        self.left.is_empty()
    }
}

/// Plans and runs a key rotation. `Ok(None)`: the hooks stopped it.
pub async fn rotate(control: &ControlClient, transport: &Transport, req: &Request, hooks: &mut impl Hooks) -> Result<Option<Rotated>, OpError> {
    let (_, status) = control.status().await?;
    let sites = site_replicators(&status, &req.replicators)?;
    let call = |site: String, addr: String, dry_run: bool| async move {
        let channel = transport.channel(&addr).map_err(|e| format!("site {site}: {e}"))?;
        let mut c = ContractsClient::new(channel).max_decoding_message_size(tandem_proto::MAX_MESSAGE).max_encoding_message_size(tandem_proto::MAX_MESSAGE);
        replicator_call(&site, c.rotate(pb::RotateRequest { dry_run })).await
    };

    let mut plan = String::new();
    let mut keks = std::collections::BTreeSet::new();
    for (site, addr) in &sites {
        let r = call(site.clone(), addr.clone(), true).await.map_err(OpError::Failed)?;
        plan.push_str(&format!("  site {site}: current KEK {}, {} keys under other KEKs\n", r.kek_id, r.remaining));
        keks.insert(r.kek_id);
    }
    if keks.len() > 1 {
        let keks: Vec<String> = keks.into_iter().collect();
        return Err(OpError::Refused {
            action: "key rotation".into(),
            reason: format!(
                "the sites wrap new keys with different KEKs ({}): give every replicator the same key_file and restart them first",
                keks.join(", ")
            ),
        });
    }
    let kek = keks.into_iter().next().unwrap_or_default();
    plan.push_str(&format!("plan: every shard owner re-wraps its keys under {kek}; the re-wrapped keys replicate; no file is re-encrypted\n"));
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }

    let mut done = Vec::new();
    let (mut versions, mut keys) = (0, 0);
    for (site, addr) in &sites {
        let r = call(site.clone(), addr.clone(), false)
            .await
            .map_err(|e| OpError::Failed(format!("rotation failed part-way ({e}); run it again (it is idempotent)")))?;
        versions += r.versions_rewrapped;
        keys += r.keys_rewrapped;
        done.push(site_rotation(site, r));
    }
    // Done when no site holds a key under another KEK (peers apply the
    // re-wrapped keys as they receive the owners' log entries).
    let deadline = tokio::time::Instant::now() + req.wait;
    let left = loop {
        let mut left = Vec::new();
        for (site, addr) in &sites {
            let r = call(site.clone(), addr.clone(), true).await.map_err(OpError::Failed)?;
            if r.remaining > 0 {
                left.push(format!("{site}: {}", r.remaining));
            }
        }
        if left.is_empty() || tokio::time::Instant::now() >= deadline {
            break left;
        }
        hooks.progress(&format!("waiting for the re-wrapped keys to replicate ({})", left.join(", ")));
        tokio::time::sleep(POLL).await;
    };
    let result = if left.is_empty() {
        format!("ok: {keys} keys of {versions} versions re-wrapped under {kek}; no site holds a key under another KEK")
    } else {
        format!("incomplete: {keys} keys of {versions} versions re-wrapped under {kek}; keys under other KEKs remain ({})", left.join(", "))
    };
    control
        .record_event(&format!("key rotation to KEK {kek}"), &result, &req.who, &req.why)
        .await
        .map_err(|e| OpError::Failed(format!("the rotation is done but could not be recorded in the audit log: {e}")))?;
    Ok(Some(Rotated { kek_id: kek, sites: done, versions, keys, left, result }))
}

fn site_rotation(site: &str, r: pb::RotateReply) -> SiteRotation {
    SiteRotation {
        site: site.to_string(),
        kek_id: r.kek_id,
        versions_rewrapped: r.versions_rewrapped,
        keys_rewrapped: r.keys_rewrapped,
        busy: r.busy,
        remaining: r.remaining,
    }
}
