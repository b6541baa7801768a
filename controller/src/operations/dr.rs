//! DR activation and DR rejoin (`tandem dr activate|rejoin`, the drill).
//!
//! Both act on a stopped controller's own store, so each has an online
//! half (what the other controllers say, the plan, the confirmation) and
//! an offline half (the store change). The CLI runs both; the drill, whose
//! scenario declares the disaster and stops the controller itself, runs
//! the offline half ([`activate_stopped`], [`prepare_rejoin`]), the same
//! code the CLI's offline half is.

use tandem_storage::KvStore;

use super::{present, Hooks, OpError, Plan};
use crate::client::ControlClient;
use crate::health::{HealthBoard, ReplicatorHealth};
use crate::raft::state_machine::{dr_reset, prepare_join, DrReset};
use crate::state::SiteRole;

/// What a DR activation asks for.
#[derive(Clone, Debug)]
pub struct Activation {
    /// The surviving site: it becomes the only member and owns every shard.
    pub site: String,
    pub node_id: u64,
    pub who: String,
    pub why: String,
    /// The operator's statement of how the other sites were fenced (powered
    /// off, cut from their clients): required. tandem cannot see across a
    /// cut, and sites that still run keep writing under the old epochs.
    pub city_fenced: Option<String>,
    /// The second admin who approved it and the generation they approved
    /// activating from (a verified [`ApprovalFile`]); needed while the
    /// policy's four_eyes is on.
    pub approved_by: Option<(String, u64)>,
}

/// A second admin's approval of a DR activation, for where no controller
/// can record one (the activation runs offline): what they approve, signed
/// with their operator certificate's key.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ApprovalFile {
    /// The approved statement (JSON of [`ApprovedActivation`]), as signed.
    pub payload: String,
    pub signature: tandem_net::signed::Signature,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApprovedActivation {
    pub action: String,
    pub site: String,
    pub reason: String,
    pub approved_by: String,
    /// The cluster generation the site activates from: the activation
    /// moves it on, so the file cannot be used twice.
    pub generation: u64,
    pub expires_at_unix_ms: u64,
}

const DR_ACTION: &str = "dr activate";

impl ApprovalFile {
    /// Signs an approval of activating `site` from cluster `generation`
    /// with the operator key in `files`; valid for
    /// [`crate::ops::approval::TTL_MS`].
    pub fn sign(files: &tandem_net::TlsFiles, approver: &str, site: &str, generation: u64, reason: &str, now_unix_ms: u64) -> Result<Self, String> {
        let approved = ApprovedActivation {
            action: DR_ACTION.into(),
            site: site.into(),
            reason: reason.into(),
            approved_by: approver.into(),
            generation,
            expires_at_unix_ms: now_unix_ms + crate::ops::approval::TTL_MS,
        };
        let payload = serde_json::to_string(&approved).map_err(|e| e.to_string())?;
        let signature = tandem_net::signed::sign(files, payload.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Self { payload, signature })
    }

    /// Who approved the activation of `site`, and from which generation, if
    /// the file is signed by an admin of the CA at `ca`, for this site, and
    /// not expired (the generation is checked against the store by the
    /// reset, [`crate::raft::state_machine::dr_reset`]).
    pub fn verify(&self, ca: &std::path::Path, site: &str, now_unix_ms: u64, source: &std::path::Path) -> Result<(String, u64), String> {
        let peer = tandem_net::signed::verify(ca, &self.signature, self.payload.as_bytes(), source).map_err(|e| e.to_string())?;
        let tandem_net::Peer::Operator { name, role } = &peer else {
            return Err(format!("{}: signed by a site's certificate, not an admin's", source.display()));
        };
        if *role != tandem_net::Role::Admin {
            return Err(format!("{}: signed by {name}, whose role is {}, not admin", source.display(), role.as_str()));
        }
        let a: ApprovedActivation = serde_json::from_str(&self.payload).map_err(|e| format!("{}: {e}", source.display()))?;
        if a.action != DR_ACTION || a.site != site {
            return Err(format!("{}: approves {} of site {}, not DR activation of site {site}", source.display(), a.action, a.site));
        }
        if &a.approved_by != name {
            return Err(format!("{}: names {} as approver but is signed by {name}", source.display(), a.approved_by));
        }
        if now_unix_ms > a.expires_at_unix_ms {
            return Err(format!("{}: the approval expired; ask {name} for a new one", source.display()));
        }
        Ok((name.clone(), a.generation))
    }
}

/// Another site heard by this site's controller more recently than this is
/// not lost: a DR activation is refused (a write lease granted just before
/// its last report could still run).
pub const DR_QUIET: std::time::Duration = std::time::Duration::from_millis(2 * crate::plan::WRITE_LEASE.as_millis() as u64);

#[derive(Clone, Debug)]
pub struct Activated {
    /// The audit line's result ("ok: generation 2, ...").
    pub result: String,
    /// What the other sites had not yet shipped here, as they last said.
    pub loss: Vec<String>,
}

/// The city-wide disaster procedure, run with the surviving site's
/// controller stopped. Refused while a Raft leader with a quorum still
/// answers (`others`: the other sites' controllers): then it is a
/// failover, not a disaster; and refused unless the other sites are
/// fenced ([`check_fenced`]). `open_store` opens the stopped controller's
/// store (opening it refuses while it runs), whose kept heartbeats say
/// when the others were last heard. `Ok(None)`: the hooks stopped it;
/// nothing changed.
pub async fn activate<K: KvStore>(
    others: &ControlClient,
    req: &Activation,
    now_unix_ms: u64,
    open_store: impl FnOnce() -> Result<K, String>,
    hooks: &mut impl Hooks,
) -> Result<Option<Activated>, OpError> {
    if let Ok(status) = others.leader_status().await {
        return Err(OpError::Refused {
            action: "DR activation".into(),
            reason: format!("site {} leads a Raft quorum right now: this is not a city-wide disaster. Use `tandem failover`", status.raft.site),
        });
    }
    let kv = open_store().map_err(OpError::Failed)?;
    let me = &req.site;
    let board = HealthBoard::load(&kv);
    let generation = crate::raft::state_machine::stored_generation(&kv).map_err(OpError::Failed)?;
    let mut plan = format!(
        "plan: DR activation at site {me}, from cluster generation {generation}\n  1. new cluster generation with {me} as the only Raft member\n  2. {me} owns every shard under a new epoch; every other site is fenced\n  3. writes the other sites acknowledged but {me} never received are lost; estimate below\n"
    );
    for line in last_heard(me, &board, now_unix_ms) {
        plan.push_str(&format!("  {line}\n"));
    }
    // The loss it is about to accept, before anything is asked.
    for line in loss_estimate(me, &board, now_unix_ms) {
        plan.push_str(&format!("  estimated loss: {line}\n"));
    }
    plan.push_str(&match &req.city_fenced {
        Some(how) => format!("  the other sites are fenced, you state: {how}\n"),
        None => "  REFUSED unless the other sites are fenced first (--city-fenced)\n".to_string(),
    });
    // Shown, refusal included, then the fence is checked before anything
    // is asked.
    hooks.plan(&Plan::text(plan));
    check_fenced(me, &board, req.city_fenced.as_deref(), now_unix_ms)?;
    if !hooks.confirm().await.map_err(OpError::NotConfirmed)? {
        return Ok(None);
    }
    reset(&kv, req, &board, now_unix_ms).map(Some)
}

/// When this site's controller last heard each other site (its kept
/// heartbeat board).
fn last_heard(me: &str, board: &[ReplicatorHealth], now: u64) -> Vec<String> {
    board
        .iter()
        .filter(|h| h.site != me)
        .map(|h| format!("{} last heard {} s ago (by {me}'s controller)", h.site, now.saturating_sub(h.received_at_unix_ms) / 1000))
        .collect()
}

/// A DR activation needs the other sites fenced: the operator's statement
/// of how, and none of them heard for [`DR_QUIET`]. Without both, the old
/// city may still hold a quorum and go on writing every shard under the
/// old epochs while this site writes them under new ones.
fn check_fenced(me: &str, board: &[ReplicatorHealth], city_fenced: Option<&str>, now: u64) -> Result<(), OpError> {
    let refused = |reason: String| OpError::Refused { action: "DR activation".into(), reason };
    let heard = last_heard(me, board, now).join("; ");
    let heard = if heard.is_empty() { format!("no other site's report is kept at {me}") } else { heard };
    if city_fenced.map(str::trim).is_none_or(str::is_empty) {
        return Err(refused(format!(
            "the other sites must be fenced first ({heard}). tandem cannot see across a cut: sites that still run keep their \
             quorum and write every shard under the old epochs while {me} writes them under new ones. Fence them (power off, or cut \
             them from their clients: runbooks/dr-activation.md), then state how with --city-fenced"
        )));
    }
    if let Some(h) = board.iter().find(|h| h.site != me && now.saturating_sub(h.received_at_unix_ms) < DR_QUIET.as_millis() as u64) {
        return Err(refused(format!(
            "{} was heard {} ms ago: it is not lost (a DR activation needs every other site silent for {} ms; {heard})",
            h.site,
            now.saturating_sub(h.received_at_unix_ms),
            DR_QUIET.as_millis()
        )));
    }
    Ok(())
}

/// The offline half of [`activate`]: the fence check, the loss estimate
/// from the store's kept heartbeats, then the reset (see [`dr_reset`]),
/// recorded with the fence statement and the estimate in the audit log.
pub fn activate_stopped(kv: &dyn KvStore, req: &Activation, now_unix_ms: u64) -> Result<Activated, OpError> {
    let board = HealthBoard::load(kv);
    check_fenced(&req.site, &board, req.city_fenced.as_deref(), now_unix_ms)?;
    reset(kv, req, &board, now_unix_ms)
}

/// The reset itself, once the fence is checked: the loss estimate from
/// `board` (the store's kept heartbeats), then [`dr_reset`], recorded with
/// the fence statement and the estimate in the audit log.
fn reset(kv: &dyn KvStore, req: &Activation, board: &[ReplicatorHealth], now_unix_ms: u64) -> Result<Activated, OpError> {
    let loss = loss_estimate(&req.site, board, now_unix_ms);
    let why = format!(
        "{} (city fenced: {}; {}; estimated loss: {})",
        req.why,
        req.city_fenced.as_deref().unwrap_or_default().trim(),
        last_heard(&req.site, board, now_unix_ms).join("; "),
        loss.join("; ")
    );
    let reset =
        DrReset { site: req.site.clone(), node_id: req.node_id, who: req.who.clone(), why, at_unix_ms: now_unix_ms, approved_by: req.approved_by.clone() };
    let result = dr_reset(kv, &reset).map_err(|e| OpError::Refused { action: "DR activation".into(), reason: e })?;
    Ok(Activated { result, loss })
}

/// What the surviving site had not received from each other site, as those
/// sites last reported it to this site's controller.
fn loss_estimate(me: &str, board: &[ReplicatorHealth], now: u64) -> Vec<String> {
    let mut out = Vec::new();
    for h in board.iter().filter(|h| h.site != me) {
        let age_s = now.saturating_sub(h.received_at_unix_ms) / 1000;
        match h.links.iter().find(|l| l.peer == me) {
            Some(l) => out.push(format!(
                "{} reported {} s ago: {} entries, {} bytes not yet at {me} (oldest {} s old); anything it wrote after that is lost too",
                h.site, age_s, l.entries, l.bytes, l.seconds
            )),
            None => out.push(format!("{} reported {} s ago without a link to {me}", h.site, age_s)),
        }
    }
    if out.is_empty() {
        out.push(format!("no report from the other sites is kept at {me}: the loss cannot be estimated"));
    }
    out
}

/// What a DR rejoin asks for.
#[derive(Clone, Debug)]
pub struct Rejoin {
    /// The returning old site.
    pub site: String,
    pub who: String,
    pub why: String,
}

/// The first step of failback after a DR activation, run with the
/// returning site's controller stopped. Needs the activated generation's
/// leader to answer (`others`) and to list the site as fenced. `prepare`
/// gets the generation to join and readies the store (the CLI keeps the
/// old store aside, then [`prepare_rejoin`]); it returns what it did, which
/// is recorded in the audit log. Returns the generation joined and the
/// audit seq (`None` when the record could not be written), or `Ok(None)`
/// when the hooks stopped it.
pub async fn rejoin(
    others: &ControlClient,
    req: &Rejoin,
    prepare: impl FnOnce(u64) -> Result<String, String>,
    hooks: &mut impl Hooks,
) -> Result<Option<(u64, Result<u64, String>)>, OpError> {
    let me = &req.site;
    let status = others.leader_status().await.map_err(|e| OpError::Refused {
        action: "DR rejoin".into(),
        reason: format!("no leader of an activated generation answers ({e}): rejoin needs it to add {me}"),
    })?;
    let role = status.cluster.sites.get(me).map(|s| s.role);
    if role != Some(SiteRole::Fenced) {
        return Err(OpError::Refused {
            action: "DR rejoin".into(),
            reason: format!(
                "site {} leads generation {} and lists {me} as {}, not fenced: rejoin is only for a site returning after a DR activation",
                status.raft.site,
                status.cluster.generation,
                role.map(|r| r.as_str()).unwrap_or("unknown")
            ),
        });
    }
    let generation = status.cluster.generation;
    let plan = format!(
        "plan: site {me} rejoins generation {generation}, led by {}\n  1. keep this site's old controller store aside (never deleted)\n  2. prepare an empty store that joins generation {generation} instead of starting its own cluster\n  3. then: start the controller, and run `tandem failback --site {me}`\n",
        status.raft.site
    );
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    let what = prepare(generation).map_err(OpError::Failed)?;
    let recorded = others.record_event(&what, "ok", &req.who, &req.why).await.map(|o| o.audit_seq).map_err(|e| e.to_string());
    Ok(Some((generation, recorded)))
}

/// The offline half of [`rejoin`]: an empty store marked to join
/// `generation` instead of starting its own cluster.
pub fn prepare_rejoin(kv: &dyn KvStore, generation: u64) -> Result<(), String> {
    prepare_join(kv, generation)
}
