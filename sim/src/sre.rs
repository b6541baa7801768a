//! SRE commands in a drill: the operations library the `tandem` CLI runs
//! (`tandem_controller::operations`), against the controllers over the
//! simulated network, with hooks that go ahead as `--yes` would.

use std::time::Duration;

use tandem_controller::client::ControlClient;
use tandem_controller::operations::{failback, failover, pause as pausing, switchover, verify, GoAhead, OpError};
use tandem_net::Transport;

use crate::cluster::{controller_addr, replicator_addr, site_names};

const WHO: &str = "drill";
const WHY: &str = "scheduled in the drill scenario";

/// `GoAhead` never stops an operation; if one did, say so.
fn stopped() -> OpError {
    OpError::Failed("the operation stopped before changing anything".into())
}

fn client() -> ControlClient {
    ControlClient::new(site_names().into_iter().map(controller_addr).collect(), Transport::Turmoil, Duration::from_secs(5))
}

/// `tandem switchover --from --to --yes`.
pub async fn switchover(from: &str, to: &str) -> Result<String, OpError> {
    let req = switchover::Request {
        from: from.into(),
        to: to.into(),
        shards: None,
        expect_epoch: None,
        who: WHO.into(),
        why: WHY.into(),
        catch_up_timeout: Duration::from_secs(60),
    };
    let done = switchover::switchover(&client(), &Transport::Turmoil, &req, &mut GoAhead).await?.ok_or_else(stopped)?;
    let r = done.report;
    Ok(format!("{} shards {} -> {}, write pause {} ms", r.shards, r.from, r.to, r.write_pause_ms))
}

/// `tandem failover --from --to [--accept-data-loss] --yes`.
pub async fn failover(from: &str, to: &str, accept_data_loss: bool) -> Result<String, OpError> {
    let req = failover::Request {
        from: Some(from.into()),
        to: to.into(),
        accept_data_loss,
        automatic: false,
        expect_epoch: None,
        expect_owner: None,
        who: WHO.into(),
        why: WHY.into(),
    };
    let done = failover::failover(&client(), &req, &mut GoAhead).await?.ok_or_else(stopped)?;
    let r = done.report;
    Ok(format!("{} shards {} -> {} after {} ms fenced; expected loss {} entries", r.shards, r.from, r.to, r.fenced_ms, done.plan.expected_loss.entries))
}

/// `tandem pause` / `tandem resume`.
pub async fn pause(pause: bool) -> Result<String, OpError> {
    let o = pausing::pause(&client(), pause, WHO, WHY, &mut GoAhead).await?.ok_or_else(stopped)?;
    Ok(o.result)
}

/// `tandem failback --site --yes`.
pub async fn failback(site: &str) -> Result<String, OpError> {
    let req = failback::Request { site: site.into(), who: WHO.into(), why: WHY.into(), timeout: Duration::from_secs(300) };
    let r = failback::failback(&client(), &Transport::Turmoil, &req, &mut GoAhead).await?.ok_or_else(stopped)?;
    let quarantined = r.divergent.iter().filter(|d| d.quarantined).count();
    Ok(format!("{site} active again; {} divergent writes, {quarantined} quarantined", r.divergent.len()))
}

/// `tandem verify --deep --repair --replicators ...`: the differences found
/// and what was repaired.
pub async fn verify_repair() -> Result<String, OpError> {
    let req = verify::Request { replicators: site_names().into_iter().map(|s| format!("{s}={}", replicator_addr(s))).collect(), deep: true, repair: true };
    let report = verify::verify_cluster(&client(), &Transport::Turmoil, &req, &mut GoAhead).await?;
    let repairs: Vec<String> = report.repairs.iter().map(ToString::to_string).collect();
    Ok(format!("{} differences; {}", report.differences.len(), repairs.join("; ")))
}
