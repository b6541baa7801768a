//! `tandem status`: the cluster at a glance, or `--json` for scripts.
//!
//! Asks the first controller that answers for the agreed state, then asks
//! every site's controller for its own Raft view, so a dead or cut-off site
//! shows as unreachable instead of hiding behind a stale row.

use std::collections::BTreeMap;

use serde::Serialize;
use tandem_controller::health::ReplicatorHealth;
use tandem_controller::state::ClusterState;
use tandem_controller::status::RaftStatus;

use super::Target;
use crate::output::table;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub target: Target,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Refresh until interrupted (Ctrl-C), like `watch tandem status`; a
    /// refresh that fails is shown and the next one tried.
    #[arg(long)]
    pub watch: bool,
    /// Seconds between refreshes with --watch.
    #[arg(long, default_value_t = 2.0, requires = "watch")]
    pub interval: f64,
    /// Stop after this many refreshes with --watch (0: never).
    #[arg(long, default_value_t = 0, requires = "watch")]
    pub count: u64,
}

/// The `--json` document.
#[derive(Serialize)]
struct Report {
    /// The controller whose applied state is shown.
    answered_by: String,
    leader: Option<String>,
    /// Each site's own Raft view; null when it did not answer.
    nodes: BTreeMap<String, Option<RaftStatus>>,
    shard_counts: BTreeMap<String, u64>,
    cluster: ClusterState,
    /// Latest heartbeat of each replicator, as the answering controller heard it.
    replicators: Vec<ReplicatorHealth>,
    /// The answering controller's clock, to age the heartbeats.
    now_unix_ms: u64,
    /// Per site, per controller that answered: milliseconds since that
    /// controller last heard the site's replicator (null: never).
    health: BTreeMap<String, tandem_controller::detect::Vantage>,
    /// The leader's verdict per site that owns shards: "" if an automatic
    /// failover would go ahead were it lost now, else why not; null when
    /// the leader did not answer.
    auto_failover: Option<BTreeMap<String, String>>,
    /// Set when the daemons that answered run different builds (a rolling
    /// upgrade under way, or one left behind).
    version_warning: Option<String>,
}

/// A heartbeat older than this is shown as stale: the replicator is down or
/// cannot reach this controller.
const HEARTBEAT_STALE_MS: u64 = 5_000;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if !args.watch {
        return once(&args).await;
    }
    let interval = std::time::Duration::try_from_secs_f64(args.interval.max(0.1))
        .map_err(|_| anyhow::anyhow!("--interval {} is not a number of seconds tandem can wait", args.interval))?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = 0u64;
    loop {
        if terminal {
            // Clear the screen and go home, as watch(1) does.
            print!("\x1b[2J\x1b[H");
        }
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        println!("tandem status at {now} (every {:.1} s; Ctrl-C stops)\n", interval.as_secs_f64());
        if let Err(e) = once(&args).await {
            println!("error: {e:#}");
        }
        shown += 1;
        if args.count > 0 && shown >= args.count {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        println!();
    }
}

async fn once(args: &Args) -> anyhow::Result<()> {
    let client = args.target.client();
    let (answered_by, first) = client.status().await?;
    let cluster = first.cluster.clone();

    let mut nodes = BTreeMap::new();
    // Every controller that answers, for its Raft view and its heartbeats.
    let mut statuses = BTreeMap::new();
    let lookups = cluster.sites.values().map(|site| {
        let client = &client;
        let first = &first;
        async move {
            let status = if site.name == first.raft.site { Some(first.clone()) } else { client.status_at(&site.addr).await.ok() };
            (site.name.clone(), status)
        }
    });
    for (name, status) in futures::future::join_all(lookups).await {
        nodes.insert(name.clone(), status.as_ref().map(|s| s.raft.clone()));
        if let Some(s) = status {
            statuses.insert(name, s);
        }
    }
    let health = tandem_controller::detect::vantage_points(&statuses, &cluster);
    // Before bootstrap the cluster state lists no sites: show the answering node.
    if nodes.is_empty() {
        nodes.insert(first.raft.site.clone(), Some(first.raft.clone()));
    }
    let leader =
        nodes.values().flatten().filter(|r| r.role == "leader").max_by_key(|r| r.term).map(|r| r.site.clone()).or_else(|| first.raft.leader_site.clone());

    let auto_failover = leader.as_ref().and_then(|l| statuses.get(l)).map(|s| s.auto_failover.clone());
    let version_warning = version_warning(&nodes, &first.replicators);
    let report = Report {
        version_warning,
        answered_by,
        auto_failover,
        leader,
        nodes,
        shard_counts: cluster.shard_counts(),
        cluster,
        replicators: first.replicators.clone(),
        now_unix_ms: first.now_unix_ms,
        health,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// "automatic failover: a available; b UNAVAILABLE: <why>", from the leader.
fn auto_failover_line(verdicts: Option<&BTreeMap<String, String>>, has_leader: bool) -> String {
    let Some(v) = verdicts.filter(|_| has_leader) else {
        return "automatic failover: UNAVAILABLE: no leader answered (it is decided by the controller leader)\n".into();
    };
    if v.is_empty() {
        return "automatic failover: no active site owns shards with an in-city peer\n".into();
    }
    let parts: Vec<String> =
        v.iter().map(|(site, why)| if why.is_empty() { format!("{site} available") } else { format!("{site} UNAVAILABLE: {why}") }).collect();
    format!("automatic failover: {}\n", parts.join("; "))
}

/// One unfinished move, with its kind and age, and what becomes of it.
fn draining_line(from: &str, to: &str, drain: Option<&tandem_controller::state::Drain>, shards: &[u32], now_unix_ms: u64) -> String {
    let what = tandem_controller::ops::describe_shards(shards);
    let Some(d) = drain else {
        return format!(
            "\nSWITCHOVER IN PROGRESS: {what} of {from} draining towards {to}; writes to them are paused \
             (`tandem switchover --from {from} --to {to} --cancel` if it was interrupted)\n"
        );
    };
    let age_s = now_unix_ms.saturating_sub(d.at_unix_ms) / 1000;
    let kind = d.kind.as_str().to_uppercase();
    let then = match d.kind {
        tandem_controller::state::MoveKind::Failover => "moves them (or undoes the fence)",
        tandem_controller::state::MoveKind::Switchover => "cancels the drain",
    };
    let left_s = d.deadline_unix_ms.saturating_sub(now_unix_ms) / 1000;
    let when = if left_s == 0 { "now: its driver has not finished it".to_string() } else { format!("in {left_s} s if its driver has not finished by then") };
    format!("\n{kind} IN PROGRESS for {age_s} s: {what} of {from} drained towards {to}; writes to them are paused; the leader {then} {when}\n")
}

/// The last switchover and failover, with their timings, and the last
/// thing tandem did on its own.
fn last_actions(c: &ClusterState, now_unix_ms: u64) -> String {
    let mut out = String::new();
    let ago = |at: u64| format!("{} s ago", now_unix_ms.saturating_sub(at) / 1000);
    for m in c.last_moves.values() {
        out.push_str(&format!(
            "last {}: {} -> {}, {} shards{}, {}: drain to move {:.1} s, writes paused {:.1} s (audit #{})\n",
            m.kind.as_str(),
            m.from,
            m.to,
            m.shards,
            if m.automatic { ", by tandem" } else { "" },
            ago(m.moved_at_unix_ms),
            m.duration_ms() as f64 / 1000.0,
            m.write_pause_ms as f64 / 1000.0,
            m.audit_seq,
        ));
    }
    if let Some(a) = &c.last_automatic {
        out.push_str(&format!("last automatic action: {}: {} ({}, audit #{})\n", a.what, a.result, ago(a.at_unix_ms), a.audit_seq));
    }
    out
}

/// Which builds the daemons that answered run, when they are not all the
/// same: "controllers: a, b 0.1.0+abc; c 0.1.0+def; replicators: ...".
/// Daemons of an older build (no version reported) count as "unknown".
fn version_warning(nodes: &BTreeMap<String, Option<RaftStatus>>, replicators: &[ReplicatorHealth]) -> Option<String> {
    let label = |v: &str| if v.is_empty() { "unknown (older build)".to_string() } else { v.to_string() };
    let mut by_version: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (site, view) in nodes {
        if let Some(v) = view {
            by_version.entry(label(&v.version)).or_default().push(format!("controller {site}"));
        }
    }
    for h in replicators {
        by_version.entry(label(&h.version)).or_default().push(format!("replicator {}", h.site));
    }
    if by_version.len() < 2 {
        return None;
    }
    let parts: Vec<String> = by_version.iter().map(|(v, who)| format!("{v} on {}", who.join(", "))).collect();
    Some(format!("daemons run different builds: {}", parts.join("; ")))
}

/// Requests waiting for a second admin (four eyes), so the one on call
/// sees them: "2 requests wait for a second admin's approval: #12 ...".
fn waiting_approvals(c: &tandem_controller::state::ClusterState, now_unix_ms: u64) -> Option<String> {
    let pending: Vec<String> = c
        .approvals
        .values()
        .filter(|a| a.state == tandem_controller::state::ApprovalState::Pending && a.expires_at_unix_ms >= now_unix_ms)
        .map(|a| format!("#{} {} by {}", a.id, a.action, a.requested_by))
        .collect();
    if pending.is_empty() {
        return None;
    }
    Some(format!("{} request(s) wait for a second admin's approval: {} (tandem approvals; runbooks/four-eyes.md)\n", pending.len(), pending.join(", ")))
}

fn render(r: &Report) -> String {
    let c = &r.cluster;
    let mut out = String::new();
    if let Some(w) = &r.version_warning {
        out.push_str(&format!("WARNING: {w} (finish the rolling upgrade: see runbooks)\n"));
    }
    for h in &r.replicators {
        if !h.blob_store_error.is_empty() {
            out.push_str(&format!("WARNING: site {}'s blob store fails: {} (see runbooks/blob-store-failing.md)\n", h.site, h.blob_store_error));
        }
        if !h.keys_error.is_empty() {
            out.push_str(&format!(
                "WARNING: site {}'s key provider fails: {} (it takes no writes; its shards fail over to its in-city peer)\n",
                h.site, h.keys_error
            ));
        }
        if !h.restoring.is_empty() {
            out.push_str(&format!("NOTE: site {}'s replicator serves no contract yet: {} (see runbooks/backup.md)\n", h.site, h.restoring));
        }
    }
    if let Some(line) = waiting_approvals(c, r.now_unix_ms) {
        out.push_str(&line);
    }
    if !c.bootstrapped {
        out.push_str("cluster not bootstrapped yet (waiting for the first leader)\n");
    }
    let actions = if c.policy.paused {
        "PAUSED"
    } else if c.policy.auto_failover {
        "enabled"
    } else {
        "auto-failover off"
    };
    out.push_str(&format!(
        "generation {}   shards {}   automatic actions: {}   leader: {}\n",
        c.generation,
        c.shards.len(),
        actions,
        r.leader.as_deref().unwrap_or("NONE (no quorum?)"),
    ));
    out.push_str(&auto_failover_line(r.auto_failover.as_ref(), r.leader.is_some()));
    out.push_str(&last_actions(c, r.now_unix_ms));
    out.push('\n');
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|(name, view)| {
            let site = c.sites.get(name);
            let (raft_role, term, applied, version) = match view {
                Some(v) => {
                    (v.role.clone(), v.term.to_string(), v.last_applied_index.to_string(), if v.version.is_empty() { "?".into() } else { v.version.clone() })
                }
                None => ("UNREACHABLE".into(), "-".into(), "-".into(), "-".into()),
            };
            vec![
                name.clone(),
                site.map(|s| s.city.clone()).unwrap_or_default(),
                site.map(|s| s.role.as_str().to_string()).unwrap_or_default(),
                raft_role,
                term,
                applied,
                r.shard_counts.get(name).copied().unwrap_or(0).to_string(),
                version,
                site.map(|s| s.addr.clone()).unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(&["SITE", "CITY", "ROLE", "RAFT", "TERM", "APPLIED", "SHARDS", "VERSION", "ADDR"], &rows));
    out.push('\n');
    // Shards being drained: writes to them are refused until the move.
    let mut draining: std::collections::BTreeMap<(String, String, Option<tandem_controller::state::Drain>), Vec<u32>> = Default::default();
    for (n, s) in c.shards.iter().enumerate() {
        if let Some(to) = &s.moving_to {
            draining.entry((s.owner.clone(), to.clone(), s.drain.clone())).or_default().push(n as u32);
        }
    }
    for ((from, to, drain), shards) in draining {
        out.push_str(&draining_line(&from, &to, drain.as_ref(), &shards, r.now_unix_ms));
    }
    if !c.pairs.is_empty() {
        out.push('\n');
        let obs = tandem_controller::plan::Observations { replicators: r.replicators.clone(), now_unix_ms: r.now_unix_ms };
        let rows: Vec<Vec<String>> = c
            .pairs
            .iter()
            .flat_map(|p| {
                [&p.site_a, &p.site_b].map(|from| {
                    let since = p.direction(from).filter(|d| d.since_seq > 0).map_or(String::new(), |d| format!("{from}'s entry {}", d.since_seq));
                    let to = p.partner(from);
                    let loss = tandem_controller::plan::exposure(c, &obs, from, to);
                    let loss = if loss == Default::default() { "nothing".to_string() } else { format!("{} entries, {} s", loss.entries, loss.seconds) };
                    vec![format!("{from} -> {to}"), p.outgoing(from).as_str().to_string(), since, loss, p.state_id.to_string()]
                })
            })
            .collect();
        out.push_str(&table(&["IN-CITY REPLICATION", "MODE", "PEER MAY LACK FROM", "A FAILOVER NOW LOSES", "STATE ID"], &rows));
        out.push('\n');
    }
    if !r.replicators.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["REPLICATOR", "HEARTBEAT", "BLOB STORE", "LOG HEAD", "LINK", "LAG ENTRIES", "LAG BYTES", "LAG SECONDS", "VERSION"],
            &replicator_rows(r),
        ));
        out.push('\n');
    }
    if !r.health.is_empty() {
        let observers: Vec<String> = r.nodes.iter().filter(|(_, v)| v.is_some()).map(|(n, _)| n.clone()).collect();
        let mut header = vec!["HEALTH (seen by)".to_string()];
        header.extend(observers.iter().map(|o| format!("controller {o}")));
        let rows: Vec<Vec<String>> = r
            .health
            .iter()
            .map(|(site, seen)| {
                let mut row = vec![site.clone()];
                row.extend(observers.iter().map(|o| match seen.get(o).copied().flatten() {
                    None => "NEVER".to_string(),
                    Some(ms) if ms > c.policy.down_after_ms => format!("LOST {}s", ms / 1000),
                    Some(ms) => format!("ok {:.1}s", ms as f64 / 1000.0),
                }));
                row
            })
            .collect();
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        out.push('\n');
        out.push_str(&table(&header, &rows));
        out.push('\n');
    }
    out.push_str(&format!("\n(state from {}; {} audit entries)\n", r.answered_by, c.audit_len));
    out
}

/// One row per outgoing link of each replicator.
fn replicator_rows(r: &Report) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for h in &r.replicators {
        let age_ms = r.now_unix_ms.saturating_sub(h.received_at_unix_ms);
        let beat = if age_ms > HEARTBEAT_STALE_MS { format!("STALE ({}s ago)", age_ms / 1000) } else { format!("{}s ago", age_ms / 1000) };
        let version = if h.version.is_empty() { "?".to_string() } else { h.version.clone() };
        let store = if h.blob_store_error.is_empty() { "ok" } else { "FAILING" }.to_string();
        if h.links.is_empty() {
            rows.push(vec![h.site.clone(), beat, store, h.log_head.to_string(), "-".into(), "-".into(), "-".into(), "-".into(), version]);
            continue;
        }
        for (i, l) in h.links.iter().enumerate() {
            let (site, beat, store, head, version) =
                if i == 0 { (h.site.clone(), beat.clone(), store.clone(), h.log_head.to_string(), version.clone()) } else { Default::default() };
            rows.push(vec![site, beat, store, head, format!("-> {}", l.peer), l.entries.to_string(), l.bytes.to_string(), l.seconds.to_string(), version]);
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(version: &str) -> Option<RaftStatus> {
        Some(RaftStatus { version: version.into(), ..Default::default() })
    }

    #[test]
    fn pending_approvals_are_shown_until_decided_or_expired() {
        use tandem_controller::state::{Approval, ApprovalState, ClusterState};
        let request = |id: u64, state: ApprovalState, expires: u64| Approval {
            id,
            action: "contract destroy".into(),
            args: Default::default(),
            plan: String::new(),
            requested_by: "ada".into(),
            reason: "r".into(),
            requested_at_unix_ms: 0,
            expires_at_unix_ms: expires,
            state,
        };
        let mut c = ClusterState::default();
        assert_eq!(waiting_approvals(&c, 10), None);
        c.approvals.insert(7, request(7, ApprovalState::Pending, 100));
        c.approvals.insert(8, request(8, ApprovalState::Rejected { by: "bea".into(), at_unix_ms: 5 }, 100));
        c.approvals.insert(9, request(9, ApprovalState::Pending, 5));
        let line = waiting_approvals(&c, 10).expect("one pending");
        assert!(line.starts_with("1 request(s) wait") && line.contains("#7 contract destroy by ada"), "{line}");
        assert!(!line.contains("#8") && !line.contains("#9"), "decided and expired ones are not waiting: {line}");
    }

    #[test]
    fn differing_builds_are_named_with_who_runs_them() {
        let same: BTreeMap<String, Option<RaftStatus>> =
            [("a".to_string(), node("0.1.0+x")), ("b".to_string(), node("0.1.0+x")), ("c".to_string(), None)].into();
        let beat = |site: &str, v: &str| ReplicatorHealth { site: site.into(), version: v.into(), ..Default::default() };
        assert_eq!(version_warning(&same, &[beat("a", "0.1.0+x")]), None);
        let w = version_warning(&same, &[beat("a", "0.1.0+x"), beat("b", "0.1.0+y"), beat("c", "")]).expect("a warning");
        assert!(w.contains("0.1.0+y on replicator b"), "{w}");
        assert!(w.contains("0.1.0+x on controller a, controller b, replicator a"), "{w}");
        assert!(w.contains("unknown (older build) on replicator c"), "{w}");
    }
}
