//! The leader finishing or undoing a move whose driver died
//! ([`crate::orphans`] finds them and decides; this carries it out with the
//! steps of [`super::failover`] and [`super::switchover`]).

use super::OpError;
use crate::client::ControlClient;
use crate::ops::describe_shards;
use crate::orphans::{resolve, Orphan, Resolution};
use crate::plan::Observations;
use crate::state::ClusterState;

/// Carries out `resolve`'s verdict for `orphan`; returns what was done.
pub async fn finish(client: &ControlClient, state: &ClusterState, obs: &Observations, orphan: &Orphan, who: &str) -> Result<String, OpError> {
    let age_s = obs.now_unix_ms.saturating_sub(orphan.drained_at_unix_ms) / 1000;
    let what = describe_shards(&orphan.shards);
    match resolve(state, obs, orphan) {
        Resolution::Move(d) => {
            let why = format!("{} of {} fenced {age_s} s ago by a failover that was never finished", what, orphan.from);
            let r = super::failover::finish(client, &d, who, &why).await?;
            Ok(format!("finished the failover of {what} from {} to {}: {}", orphan.from, orphan.to, r))
        }
        Resolution::Cancel(reason) => {
            let why = format!("{reason} ({what} drained {age_s} s ago)");
            let r = super::switchover::undo_drain(client, &orphan.from, &orphan.to, orphan.shards.clone(), true, who, &why).await?;
            Ok(format!("cancelled the {} of {what} from {} to {}: {r}", orphan.kind.as_str(), orphan.from, orphan.to))
        }
    }
}
