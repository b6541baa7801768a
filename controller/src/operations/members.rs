//! Replacing a lost controller (`tandem members remove|prepare|add`): the
//! site's controller lost its disk, so it must not come back as the voter
//! it was (it forgot its votes and its log, and could help elect a stale
//! leader). It is removed from the Raft membership; a replacement starts
//! from an empty store marked to join, and the leader adds it as a learner
//! that receives the whole state, then as a voter.
//!
//! The leader refuses to remove a controller it still hears: removing a
//! live one would only make it disturb the cluster.

use super::{present, Hooks, OpError, Plan};
use crate::client::{ChangeOutcome, ControlClient};
use crate::members::Members;

/// The membership, for `tandem members`: from the leader, or, when no
/// leader answers (no quorum, an election), as the first controller that
/// answers last saw it (`from_leader` false).
pub async fn list(client: &ControlClient) -> Result<Members, OpError> {
    match client.members().await {
        Ok(m) => Ok(m),
        Err(leader) => client.members_seen().await.map_err(|_| OpError::Control(leader)),
    }
}

fn contact(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("last answered the leader {:.1} s ago", ms as f64 / 1000.0),
        None => "has not answered this leader".into(),
    }
}

/// Removes `site`'s lost controller from the membership. `Ok(None)`: the
/// hooks stopped it.
pub async fn remove(client: &ControlClient, site: &str, who: &str, why: &str, hooks: &mut impl Hooks) -> Result<Option<ChangeOutcome>, OpError> {
    let members = client.members().await?;
    let refused = |reason: String| OpError::Refused { action: format!("removing {site}'s controller"), reason };
    let Some(m) = members.of_site(site) else {
        return Err(refused(format!("{site}'s controller is not a Raft member (nothing to remove)")));
    };
    let plan = format!(
        "plan: remove {site}'s controller (node {}, {}, {}) from the Raft membership: {} voters -> {}\n  \
         the leader refuses if it still hears it; then prepare a replacement (`tandem members prepare --config ...`), start it, and `tandem members add --site {site}`\n",
        m.node_id,
        m.role,
        contact(m.last_contact_ms),
        members.voters(),
        members.voters() - usize::from(m.role == "voter"),
    );
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    Ok(Some(client.remove_member(site, who, why).await?))
}

/// What a replacement controller's store is prepared for.
#[derive(Clone, Debug)]
pub struct Replacement {
    pub site: String,
    pub who: String,
    pub why: String,
}

/// The offline first step of adding a replacement, run where the
/// replacement will run, before it starts: checks that the site's old
/// controller is no member any more, then `prepare` readies an empty
/// store (the CLI keeps any old store aside, then
/// [`crate::raft::state_machine::prepare_join`]) and the audit log records
/// it. `Ok(None)`: the hooks stopped it.
pub async fn prepare(
    client: &ControlClient,
    req: &Replacement,
    prepare: impl FnOnce(u64) -> Result<String, String>,
    hooks: &mut impl Hooks,
) -> Result<Option<ChangeOutcome>, OpError> {
    let site = &req.site;
    let members = client.members().await?;
    if let Some(m) = members.of_site(site) {
        return Err(OpError::Refused {
            action: format!("preparing a replacement for {site}'s controller"),
            reason: format!("{site}'s controller is still a Raft {} (node {}): remove it first with `tandem members remove --site {site}`", m.role, m.node_id),
        });
    }
    let generation = members.generation;
    let plan = format!(
        "plan: prepare an empty controller store for site {site} that joins generation {generation} (leader node {})\n  \
         then start the controller and run `tandem members add --site {site}`\n",
        members.leader_id.unwrap_or_default()
    );
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    let what = prepare(generation).map_err(OpError::Failed)?;
    Ok(Some(client.record_event(&what, "ok", &req.who, &req.why).await?))
}

/// Adds `site`'s (replacement) controller: first a learner that receives
/// the whole state, then a voter. Give `client` a call timeout long enough
/// for the new node to catch up. `Ok(None)`: the hooks stopped it.
pub async fn add(client: &ControlClient, site: &str, who: &str, why: &str, hooks: &mut impl Hooks) -> Result<Option<ChangeOutcome>, OpError> {
    let members = client.members().await?;
    if let Some(m) = members.of_site(site) {
        let plan = format!("plan: {site}'s controller is already a Raft {}: nothing to add", m.role);
        present(hooks, &Plan::text(plan)).await?;
        return Ok(None);
    }
    let plan = format!(
        "plan: add {site}'s controller to the Raft membership: as a learner until it holds the whole state, then as a voter ({} voters -> {})\n  \
         it must be running, started from a store prepared by `tandem members prepare` (or `tandem dr rejoin`)\n",
        members.voters(),
        members.voters() + 1
    );
    if !present(hooks, &Plan::text(plan)).await? {
        return Ok(None);
    }
    Ok(Some(client.join(site, who, why).await?))
}
