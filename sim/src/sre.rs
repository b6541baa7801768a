//! SRE commands in a drill, through the same library code the `tandem` CLI
//! runs: the planner, then the switchover or failover procedure, against
//! the controllers over the simulated network.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_controller::client::{Change, ControlClient};
use tandem_controller::plan::{plan, Action};
use tandem_net::Transport;

use crate::cluster::{controller_addr, replicator_addr, site_names};

const WHO: &str = "drill";
const WHY: &str = "scheduled in the drill scenario";

fn client() -> ControlClient {
    ControlClient::new(site_names().into_iter().map(controller_addr).collect(), Transport::Turmoil, Duration::from_secs(5))
}

/// `tandem switchover --from --to --yes`.
pub async fn switchover(from: &str, to: &str) -> Result<String, String> {
    let c = client();
    let (status, obs) = c.observe().await.map_err(|e| e.to_string())?;
    let action = Action::Switchover { from: from.into(), to: to.into(), shards: None };
    let d = plan(&status.cluster, &obs, &action);
    if let Some(why) = &d.refused {
        return Err(format!("refused by the planner: {why}"));
    }
    let r = tandem_controller::switchover::run(&c, &d, None, WHO, WHY, Duration::from_secs(60), |_| {}).await.map_err(|e| e.to_string())?;
    Ok(format!("{} shards {} -> {}, write pause {} ms", r.shards, r.from, r.to, r.write_pause_ms))
}

/// `tandem failover --from --to [--accept-data-loss] --yes`.
pub async fn failover(from: &str, to: &str, accept_data_loss: bool) -> Result<String, String> {
    let c = client();
    let (status, obs) = c.observe().await.map_err(|e| e.to_string())?;
    let action = Action::Failover { from: from.into(), to: to.into(), accept_data_loss, automatic: false };
    let d = plan(&status.cluster, &obs, &action);
    if let Some(why) = &d.refused {
        return Err(format!("refused by the planner: {why}"));
    }
    let r = tandem_controller::failover::run(&c, &d, false, WHO, WHY, |_| {}).await.map_err(|e| e.to_string())?;
    Ok(format!("{} shards {} -> {} after {} ms fenced; expected loss {} entries", r.shards, r.from, r.to, r.fenced_ms, d.expected_loss.entries))
}

/// `tandem pause` / `tandem resume`.
pub async fn pause(pause: bool) -> Result<String, String> {
    let change = if pause { Change::Pause } else { Change::Resume };
    client().change(change, WHO, WHY).await.map(|o| o.result).map_err(|e| e.to_string())
}

/// `tandem failback --site --yes`.
pub async fn failback(site: &str) -> Result<String, String> {
    let c = client();
    let joiner = ControlClient::new(site_names().into_iter().map(controller_addr).collect(), Transport::Turmoil, Duration::from_secs(120));
    let r = tandem_replicator::failback::run(&c, &joiner, Transport::Turmoil, site, WHO, WHY, Duration::from_secs(300), |_| {}).await.map_err(|e| e.0)?;
    let quarantined = r.divergent.iter().filter(|d| d.quarantined).count();
    Ok(format!("{site} active again; {} divergent writes, {quarantined} quarantined", r.divergent.len()))
}

/// `tandem verify --repair`: the differences found and what was repaired.
pub async fn verify_repair() -> Result<String, String> {
    let c = client();
    let (_, status) = c.status().await.map_err(|e| e.to_string())?;
    let sites: BTreeMap<String, String> = site_names().into_iter().map(|s| (s.to_string(), replicator_addr(s))).collect();
    let mut report = tandem_replicator::verify::verify(&Transport::Turmoil, &sites, &status.cluster, true).await.map_err(|e| e.0)?;
    let found = report.differences.len();
    tandem_replicator::verify::repair(&Transport::Turmoil, &sites, &mut report).await;
    Ok(format!("{found} differences; {}", report.repairs.join("; ")))
}
