//! The planner: one pure function from (state, observations, action) to a
//! decision that explains itself. `--dry-run`, the confirmation prompt,
//! the command itself and the audit log all show the same decision.
//!
//! No clock, no I/O: "now" comes in with the observations, so the same
//! inputs always give the same decision (and the drill can replay it).

use serde::Serialize;

use crate::health::ReplicatorHealth;
use crate::ops::describe_shards;
use crate::state::{ClusterState, ReplicationMode, SiteRole};

/// A replicator heartbeat older than this means the replicator is down or
/// cut off from the controllers.
pub const HEARTBEAT_FRESH_MS: u64 = 5_000;

pub use crate::lease::WRITE_LEASE;

/// What the controllers currently observe of the data plane.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub replicators: Vec<ReplicatorHealth>,
    /// The observing controller's clock when the heartbeats were read.
    pub now_unix_ms: u64,
}

impl Observations {
    /// What several controllers observe, merged: for each site its freshest
    /// heartbeat, aged on the clock of the node that received it and
    /// expressed on the clock of the first status. A controller that just
    /// restarted has heard nobody yet; that must not read as a site down.
    pub fn merged<'a>(statuses: impl IntoIterator<Item = &'a crate::status::NodeStatus>) -> Observations {
        let mut freshest: std::collections::BTreeMap<String, ReplicatorHealth> = Default::default();
        let mut now = None;
        for s in statuses {
            let now = *now.get_or_insert(s.now_unix_ms);
            for h in &s.replicators {
                let mut h = h.clone();
                h.received_at_unix_ms = now.saturating_sub(s.now_unix_ms.saturating_sub(h.received_at_unix_ms));
                if freshest.get(&h.site).is_none_or(|old| old.received_at_unix_ms < h.received_at_unix_ms) {
                    freshest.insert(h.site.clone(), h);
                }
            }
        }
        Observations { replicators: freshest.into_values().collect(), now_unix_ms: now.unwrap_or(0) }
    }

    fn fresh(&self, site: &str) -> Option<&ReplicatorHealth> {
        self.replicators.iter().find(|h| h.site == site).filter(|h| self.now_unix_ms.saturating_sub(h.received_at_unix_ms) <= HEARTBEAT_FRESH_MS)
    }
}

/// What an operator (or the automatic path) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Planned move of `shards` (all of `from`'s when `None`) to `to`:
    /// drain, wait until `to` has everything, move. No data loss.
    Switchover { from: String, to: String, shards: Option<Vec<u32>> },
    /// Unplanned move of every shard of `from` (down, or to be abandoned)
    /// to `to`. Lossless only when the pair is in sync mode; otherwise
    /// refused unless `accept_data_loss`. `automatic`: asked by the
    /// controller's own detector, which policy, pause and cooldown limit.
    Failover { from: String, to: String, accept_data_loss: bool, automatic: bool },
}

/// Data the move may lose (what the target has not received yet).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Loss {
    pub entries: u64,
    pub bytes: u64,
    pub seconds: u64,
}

/// A site considered as the target, and why it was or was not chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub site: String,
    pub chosen: bool,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// "switchover".
    pub action: String,
    pub from: String,
    /// The chosen target; `None` when refused.
    pub target: Option<String>,
    pub candidates: Vec<Candidate>,
    pub shards: Vec<u32>,
    /// What moving now would lose; zero for a switchover, which waits.
    pub expected_loss: Loss,
    /// What the target still has to receive before the move (switchover).
    pub backlog: Loss,
    /// Why nothing will be done; `None` when the plan can go ahead.
    pub refused: Option<String>,
    /// The plan counts on the in-city pair being in sync (no loss): the
    /// move is refused if it left sync before it commits.
    pub requires_sync: bool,
    /// The steps, in words, for the prompt and the audit log.
    pub steps: Vec<String>,
}

impl Decision {
    /// One paragraph for people.
    pub fn explain(&self) -> String {
        let mut out = format!("plan: {} from {}", self.action, self.from);
        match &self.target {
            Some(t) => out.push_str(&format!(" to {t}, {}", describe_shards(&self.shards))),
            None => out.push_str(": no target"),
        }
        out.push('\n');
        for c in &self.candidates {
            out.push_str(&format!("  candidate {}: {} ({})\n", c.site, if c.chosen { "chosen" } else { "rejected" }, c.reason));
        }
        out.push_str(&format!(
            "  expected data loss: {} entries, {} bytes, {} s\n",
            self.expected_loss.entries, self.expected_loss.bytes, self.expected_loss.seconds
        ));
        for (i, s) in self.steps.iter().enumerate() {
            out.push_str(&format!("  {}. {s}\n", i + 1));
        }
        if let Some(r) = &self.refused {
            out.push_str(&format!("  REFUSED: {r}\n"));
        }
        out
    }
}

pub fn plan(state: &ClusterState, obs: &Observations, action: &Action) -> Decision {
    match action {
        Action::Switchover { from, to, shards } => switchover(state, obs, from, to, shards.as_deref()),
        Action::Failover { from, to, accept_data_loss, automatic } => failover(state, obs, from, to, *accept_data_loss, *automatic),
    }
}

fn empty(action: &str, from: &str) -> Decision {
    Decision {
        action: action.into(),
        from: from.into(),
        target: None,
        candidates: Vec::new(),
        shards: Vec::new(),
        expected_loss: Loss::default(),
        backlog: Loss::default(),
        refused: None,
        requires_sync: false,
        steps: Vec::new(),
    }
}

/// The shards `site` owns, in order.
fn owned_by(state: &ClusterState, site: &str) -> Vec<u32> {
    (0..state.shards.len() as u32).filter(|&n| state.shards[n as usize].owner == site).collect()
}

fn refuse(mut d: Decision, why: String) -> Decision {
    d.target = None;
    d.refused = Some(why);
    d
}

/// How [`pick_target`] words its verdicts for one kind of action.
struct Target {
    /// Why a site other than the requested one is not chosen.
    not_chosen: &'static str,
    /// A further reason to refuse the requested site, if any.
    also_refused: Option<&'static str>,
    /// The chosen site's reason is `before`, its role, `after`
    /// ("requested, active and reporting").
    chosen: (&'static str, &'static str),
}

/// Lists every site but `from` as a candidate, of which only `to` can be
/// chosen, and only if it can take shards (not fenced or recovering, its
/// replicator reporting and not catching up after a restore). `Err` is the refused decision.
// The refused decision is the answer the caller returns as it is, not an
// error to propagate: boxing it would only add an allocation.
#[allow(clippy::result_large_err)]
fn pick_target(mut d: Decision, state: &ClusterState, obs: &Observations, from: &str, to: &str, t: &Target) -> Result<Decision, Decision> {
    for site in state.sites.values().filter(|s| s.name != from) {
        let reason = if site.name != to {
            t.not_chosen.to_string()
        } else if matches!(site.role, SiteRole::Fenced | SiteRole::Recovering) {
            format!("it is {}", site.role.as_str())
        } else if obs.fresh(&site.name).is_none() {
            format!("its replicator has not reported for more than {} s", HEARTBEAT_FRESH_MS / 1000)
        } else if let Some(h) = obs.fresh(&site.name).filter(|h| !h.restoring.is_empty()) {
            // Its copy may predate writes and destroys made since the backup.
            format!("its replicator serves nothing yet: {}", h.restoring)
        } else if let Some(why) = t.also_refused {
            why.to_string()
        } else {
            String::new()
        };
        let chosen = reason.is_empty();
        let reason = if chosen { format!("{}{}{}", t.chosen.0, site.role.as_str(), t.chosen.1) } else { reason };
        d.candidates.push(Candidate { site: site.name.clone(), chosen, reason });
    }
    if from == to {
        return Err(refuse(d, "source and target are the same site".into()));
    }
    match d.candidates.iter().find(|c| c.site == to) {
        None => Err(refuse(d, format!("unknown site {to:?}"))),
        Some(c) if !c.chosen => {
            let why = format!("target {to} cannot take shards: {}", c.reason);
            Err(refuse(d, why))
        }
        Some(_) => Ok(d),
    }
}

fn failover(state: &ClusterState, obs: &Observations, from: &str, to: &str, accept_data_loss: bool, automatic: bool) -> Decision {
    let d = empty(if automatic { "automatic failover" } else { "failover" }, from);
    if !state.sites.contains_key(from) {
        return refuse(d, format!("unknown site {from:?}"));
    }
    let pair = state.pairs.iter().find(|p| p.joins(from, to));
    let target = Target {
        not_chosen: if automatic { "not the in-city peer" } else { "not the requested target" },
        also_refused: (automatic && pair.is_none()).then_some("automatic failover only goes to the in-city peer"),
        chosen: ("", ", reporting"),
    };
    let mut d = match pick_target(d, state, obs, from, to, &target) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    d.shards = owned_by(state, from);
    if d.shards.is_empty() {
        return refuse(d, format!("{from} owns no shard"));
    }

    // What the target may be missing: nothing when `from`'s direction is in
    // sync (every write `from` acknowledged was confirmed by `to`, or the
    // direction was first recorded async); otherwise the source's last
    // reported lag. The other direction (`to`'s own writes, which `from`
    // may lack) does not matter: `to` is the one that keeps the shards.
    let in_sync = pair.is_some_and(|p| p.outgoing(from) == ReplicationMode::Sync);
    d.expected_loss = exposure(state, obs, from, to);
    let mode = pair.map_or("no in-city pair".to_string(), |p| format!("replication {}", p.describe()));

    if automatic {
        let p = &state.policy;
        if !p.auto_failover {
            return refuse(d, "automatic failover is off by policy".into());
        }
        if p.paused {
            return refuse(d, "automatic actions are paused (`tandem resume` re-enables them)".into());
        }
        if !in_sync {
            return refuse(d, format!("{mode}: {to} may be missing acknowledged writes; only an operator can accept that loss"));
        }
        let since = obs.now_unix_ms.saturating_sub(state.last_auto_failover_unix_ms);
        if state.last_auto_failover_unix_ms > 0 && since < p.cooldown_s * 1000 {
            return refuse(d, format!("cooldown: the last automatic failover was {} s ago, the policy asks for {} s between two", since / 1000, p.cooldown_s));
        }
    } else if !in_sync && !accept_data_loss {
        let why = format!(
            "{mode}: {to} may be missing acknowledged writes (last reported lag: {} entries, {} bytes); \
                 pass --accept-data-loss to fail over anyway",
            d.expected_loss.entries, d.expected_loss.bytes
        );
        return refuse(d, why);
    }
    d.target = Some(to.into());
    // An operator who accepted data loss is not refused if the pair leaves
    // sync before the move commits; a lossless plan is.
    d.requires_sync = in_sync && !accept_data_loss;
    d.steps = vec![
        format!("fence: {from} may no longer write the {} shards (it stops as soon as it sees this)", d.shards.len()),
        format!(
            "move once no lease {from} may still hold is valid: at most {} ms after the last lease the leader granted it",
            crate::lease::LEASE_WAIT.as_millis()
        ),
        format!("move: {to} owns them with new epochs; anything {from} still sends under the old epochs is refused"),
        if in_sync { format!("{mode}: no acknowledged write is lost") } else { format!("{mode}: writes {to} never received are lost") },
    ];
    d
}

/// What a failover from `from` to `to` would lose if it happened now (the
/// RPO exposure of that direction): nothing while the direction is in sync
/// (every write `from` acknowledged was confirmed by `to`); otherwise the
/// lag `from` last reported towards `to`, aged by how long ago it reported
/// (zero if it never reported a link to `to`).
pub fn exposure(state: &ClusterState, obs: &Observations, from: &str, to: &str) -> Loss {
    let in_sync = state.pairs.iter().find(|p| p.joins(from, to)).is_some_and(|p| p.outgoing(from) == ReplicationMode::Sync);
    if in_sync {
        return Loss::default();
    }
    let last_report = obs.replicators.iter().find(|h| h.site == from);
    match last_report.and_then(|h| h.links.iter().find(|l| l.peer == to).map(|l| (h, l))) {
        Some((h, link)) => {
            let age_s = obs.now_unix_ms.saturating_sub(h.received_at_unix_ms) / 1000;
            Loss { entries: link.entries, bytes: link.bytes, seconds: link.seconds + age_s }
        }
        None => Loss::default(),
    }
}

fn switchover(state: &ClusterState, obs: &Observations, from: &str, to: &str, shards: Option<&[u32]>) -> Decision {
    let d = empty("switchover", from);
    if !state.sites.contains_key(from) {
        return refuse(d, format!("unknown site {from:?}"));
    }
    let target = Target { not_chosen: "not the requested target", also_refused: None, chosen: ("requested, ", " and reporting") };
    let mut d = match pick_target(d, state, obs, from, to, &target) {
        Ok(d) => d,
        Err(refused) => return refused,
    };

    let owned: Vec<u32> = owned_by(state, from);
    d.shards = match shards {
        None => owned,
        Some(list) => {
            let mut list = list.to_vec();
            list.sort_unstable();
            list.dedup();
            if let Some(n) = list.iter().find(|n| !owned.contains(n)) {
                let owner = state.shards.get(*n as usize).map_or("nobody (no such shard)".to_string(), |s| s.owner.clone());
                return refuse(d, format!("shard {n} is owned by {owner}, not {from}"));
            }
            list
        }
    };
    if d.shards.is_empty() {
        return refuse(d, format!("{from} owns no shard"));
    }
    if let Some(n) = d.shards.iter().copied().find(|n| state.shards[*n as usize].moving_to.as_deref().is_some_and(|t| t != to)) {
        let other = state.shards[n as usize].moving_to.clone().unwrap_or_default();
        return refuse(d, format!("shard {n} is already being moved to {other}"));
    }
    // A planned move needs the source alive to drain; otherwise it is a failover.
    let Some(source) = obs.fresh(from) else {
        return refuse(d, format!("{from}'s replicator has not reported for more than {} s, so it cannot drain: use failover", HEARTBEAT_FRESH_MS / 1000));
    };
    if let Some(link) = source.links.iter().find(|l| l.peer == to) {
        d.backlog = Loss { entries: link.entries, bytes: link.bytes, seconds: link.seconds };
    }
    d.target = Some(to.into());
    d.steps = vec![
        format!("drain: {from} stops accepting writes for the {} shards (writes to them pause)", d.shards.len()),
        format!("wait until {to} has confirmed every entry of {from}'s log (now {} entries, {} bytes behind)", d.backlog.entries, d.backlog.bytes),
        format!("move: {to} owns them with a new epoch; {from}'s late traffic is refused"),
        format!("writes resume at {to}; if {to} does not catch up in time, the drain is cancelled and {from} writes again"),
    ];
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::LinkLag;
    use crate::ops::test_state;

    fn obs(fresh: &[&str], lag_a_to_b: u64) -> Observations {
        let now = 100_000;
        Observations {
            replicators: ["a", "b", "c"]
                .iter()
                .map(|s| ReplicatorHealth {
                    site: s.to_string(),
                    received_at_unix_ms: if fresh.contains(s) { now - 1_000 } else { now - 60_000 },
                    links: vec![LinkLag { peer: "b".into(), entries: lag_a_to_b, bytes: lag_a_to_b * 100, seconds: 1 }],
                    ..Default::default()
                })
                .collect(),
            now_unix_ms: now,
        }
    }

    fn switchover(to: &str, shards: Option<Vec<u32>>) -> Action {
        Action::Switchover { from: "a".into(), to: to.into(), shards }
    }

    #[test]
    fn switchover_takes_all_of_the_sources_shards_and_explains_itself() {
        let state = test_state(8);
        let d = plan(&state, &obs(&["a", "b", "c"], 3), &switchover("b", None));
        assert_eq!(d.refused, None);
        assert_eq!(d.target.as_deref(), Some("b"));
        assert_eq!(d.shards, vec![0, 1, 2, 3]);
        assert_eq!(d.expected_loss, Loss::default(), "a switchover waits, it loses nothing");
        assert_eq!(d.backlog.entries, 3);
        let c = d.candidates.iter().find(|c| c.site == "c").unwrap();
        assert!(!c.chosen && c.reason.contains("not the requested"));
        assert!(d.explain().contains("3 entries"), "{}", d.explain());
    }

    #[test]
    fn switchover_needs_a_live_source_and_target() {
        let state = test_state(8);
        let d = plan(&state, &obs(&["b", "c"], 0), &switchover("b", None));
        assert!(d.refused.as_deref().unwrap().contains("use failover"), "{:?}", d.refused);
        assert_eq!(d.target, None);
        let d = plan(&state, &obs(&["a", "c"], 0), &switchover("b", None));
        assert!(d.refused.as_deref().unwrap().contains("has not reported"), "{:?}", d.refused);
    }

    #[test]
    fn switchover_refuses_shards_the_source_does_not_own_and_bad_targets() {
        let mut state = test_state(8);
        let d = plan(&state, &obs(&["a", "b", "c"], 0), &switchover("b", Some(vec![1, 6])));
        assert_eq!(d.refused.as_deref(), Some("shard 6 is owned by b, not a"));
        let d = plan(&state, &obs(&["a", "b", "c"], 0), &switchover("a", None));
        assert!(d.refused.as_deref().unwrap().contains("same site"));
        state.sites.get_mut("b").unwrap().role = SiteRole::Recovering;
        let d = plan(&state, &obs(&["a", "b", "c"], 0), &switchover("b", None));
        assert!(d.refused.as_deref().unwrap().contains("recovering"), "{:?}", d.refused);
    }

    #[test]
    fn a_site_catching_up_after_a_restore_takes_no_shard() {
        let state = test_state(8);
        let mut o = obs(&["a", "b", "c"], 0);
        o.replicators.iter_mut().find(|h| h.site == "b").unwrap().restoring = "restored from backup b-1; catching up".into();
        let d = plan(&state, &o, &switchover("b", None));
        assert!(d.refused.as_deref().unwrap().contains("serves nothing yet: restored from backup b-1"), "{:?}", d.refused);
        let d = plan(&state, &obs(&["b", "c"], 0), &failover(false, true));
        assert_eq!(d.refused, None, "{}", d.explain());
        let mut o = obs(&["b", "c"], 0);
        o.replicators.iter_mut().find(|h| h.site == "b").unwrap().restoring = "catching up".into();
        let d = plan(&state, &o, &failover(false, true));
        assert!(d.refused.as_deref().unwrap().contains("serves nothing yet"), "{:?}", d.refused);
    }

    #[test]
    fn the_same_inputs_give_the_same_decision() {
        let state = test_state(16);
        let o = obs(&["a", "b", "c"], 5);
        assert_eq!(plan(&state, &o, &switchover("c", Some(vec![3, 1, 1]))), plan(&state, &o, &switchover("c", Some(vec![1, 3]))));
    }

    fn failover(accept: bool, automatic: bool) -> Action {
        Action::Failover { from: "a".into(), to: "b".into(), accept_data_loss: accept, automatic }
    }

    #[test]
    fn failover_in_sync_loses_nothing_and_needs_no_flag() {
        let state = test_state(8);
        let d = plan(&state, &obs(&["b", "c"], 9), &failover(false, false));
        assert_eq!(d.refused, None, "{}", d.explain());
        assert_eq!(d.shards, vec![0, 1, 2, 3]);
        assert_eq!(d.expected_loss, Loss::default());
        assert!(d.steps.iter().any(|s| s.contains("no acknowledged write is lost")));
        assert!(d.requires_sync, "a lossless plan must not commit once the pair left sync");
    }

    #[test]
    fn failover_out_of_sync_states_the_loss_and_needs_the_flag() {
        let mut state = test_state(8);
        state.pairs[0].set_outgoing("a", ReplicationMode::Async, 40);
        let o = obs(&["b", "c"], 9);
        let d = plan(&state, &o, &failover(false, false));
        assert!(d.refused.as_deref().unwrap().contains("--accept-data-loss"), "{:?}", d.refused);
        assert_eq!(d.expected_loss.entries, 9);
        let d = plan(&state, &o, &failover(true, false));
        assert_eq!(d.refused, None);
        assert_eq!(d.expected_loss.entries, 9, "the loss is stated even when accepted");
        assert!(!d.requires_sync);
        // Never automatically.
        let d = plan(&state, &o, &failover(false, true));
        assert!(d.refused.as_deref().unwrap().contains("only an operator"), "{:?}", d.refused);
        assert!(d.refused.as_deref().unwrap().contains("a -> b async since a's entry 40"), "{:?}", d.refused);
    }

    // a died; b's own writes then waited for a and b recorded b -> a async.
    // Every write a acknowledged is still at b: the failover goes ahead,
    // automatically and without loss (the old pair-wide mode declined it).
    #[test]
    fn a_busy_survivor_does_not_block_the_failover() {
        let mut state = test_state(8);
        state.pairs[0].set_outgoing("b", ReplicationMode::Async, 12);
        assert_eq!(state.pairs[0].mode, ReplicationMode::Async);
        let o = obs(&["b", "c"], 9);
        for automatic in [true, false] {
            let d = plan(&state, &o, &failover(false, automatic));
            assert_eq!(d.refused, None, "{}", d.explain());
            assert_eq!(d.expected_loss, Loss::default());
            assert!(d.requires_sync, "the move must still be refused if a -> b leaves sync");
        }
        // The other way round (b fails over to a) a may lack b's writes.
        let back = Action::Failover { from: "b".into(), to: "a".into(), accept_data_loss: false, automatic: true };
        let d = plan(&state, &obs(&["a", "c"], 0), &back);
        assert!(d.refused.as_deref().unwrap().contains("b -> a async"), "{:?}", d.refused);
        // Sync-recover in a's direction is not sync yet.
        state.pairs[0].set_outgoing("a", ReplicationMode::Async, 3);
        state.pairs[0].set_outgoing("a", ReplicationMode::SyncRecover, 3);
        assert!(plan(&state, &o, &failover(false, true)).refused.is_some());
    }

    #[test]
    fn automatic_failover_respects_policy_pause_and_cooldown() {
        let mut state = test_state(8);
        state.policy.cooldown_s = 60;
        let o = obs(&["b", "c"], 0);
        assert_eq!(plan(&state, &o, &failover(false, true)).refused, None);
        state.policy.paused = true;
        assert!(plan(&state, &o, &failover(false, true)).refused.unwrap().contains("paused"));
        state.policy.paused = false;
        state.last_auto_failover_unix_ms = o.now_unix_ms - 10_000;
        let why = plan(&state, &o, &failover(false, true)).refused.unwrap();
        assert!(why.contains("cooldown") && why.contains("10 s ago"), "{why}");
        state.last_auto_failover_unix_ms = o.now_unix_ms - state.policy.cooldown_s * 1000;
        assert_eq!(plan(&state, &o, &failover(false, true)).refused, None);
        state.policy.auto_failover = false;
        assert!(plan(&state, &o, &failover(false, true)).refused.unwrap().contains("off by policy"));
    }

    #[test]
    fn automatic_failover_only_goes_to_the_in_city_peer() {
        let state = test_state(8);
        let a = Action::Failover { from: "a".into(), to: "c".into(), accept_data_loss: false, automatic: true };
        let d = plan(&state, &obs(&["b", "c"], 0), &a);
        assert!(d.refused.unwrap().contains("in-city peer"));
    }

    // Properties over random clusters, observations and requests: whatever
    // the inputs, the planner never breaks the safety rules.
    mod properties {
        use super::*;
        use proptest::prelude::*;

        const SITES: [&str; 3] = ["a", "b", "c"];
        const NOW: u64 = 10_000_000;

        // Mostly active sites, fresh reports and the in-city pair, so that
        // many requests get as far as a plan.
        fn role(i: u8) -> SiteRole {
            match i {
                0..=4 => SiteRole::Active,
                5 => SiteRole::DrStandby,
                6 => SiteRole::Fenced,
                _ => SiteRole::Recovering,
            }
        }

        prop_compose! {
            fn inputs()(
                owners in proptest::collection::vec(0usize..3, 8),
                roles in proptest::collection::vec(0u8..8, 3),
                mode_a in 0u8..3,
                mode_b in 0u8..3,
                paused: bool,
                auto: bool,
                last_auto_ago_s in 0u64..200,
                fresh in proptest::collection::vec(proptest::bool::weighted(0.85), 3),
                lag in 0u64..50,
                from in 0usize..3,
                to in 0usize..3,
                kind in 0u8..5,
                accept: bool,
                automatic: bool,
                subset in proptest::collection::vec(0u32..10, 0..4),
            ) -> (ClusterState, Observations, Action) {
                let mut state = test_state(8);
                for (shard, o) in state.shards.iter_mut().zip(&owners) {
                    shard.owner = SITES[*o].into();
                }
                for (name, r) in SITES.iter().zip(&roles) {
                    state.sites.get_mut(*name).unwrap().role = role(*r);
                }
                let modes = [ReplicationMode::Sync, ReplicationMode::Async, ReplicationMode::SyncRecover];
                state.pairs[0].set_outgoing("a", modes[mode_a as usize], 1);
                state.pairs[0].set_outgoing("b", modes[mode_b as usize], 1);
                state.policy.paused = paused;
                state.policy.auto_failover = auto;
                state.policy.cooldown_s = 60;
                state.last_auto_failover_unix_ms = NOW - last_auto_ago_s * 1000;
                let obs = Observations {
                    replicators: SITES
                        .iter()
                        .zip(&fresh)
                        .map(|(s, f)| ReplicatorHealth {
                            site: s.to_string(),
                            received_at_unix_ms: if *f { NOW - 500 } else { NOW - 60_000 },
                            links: SITES.iter().map(|p| LinkLag { peer: p.to_string(), entries: lag, bytes: lag * 10, seconds: lag }).collect(),
                            ..Default::default()
                        })
                        .collect(),
                    now_unix_ms: NOW,
                };
                let (from, to) = (SITES[from].to_string(), SITES[to].to_string());
                let action = match kind {
                    0 => Action::Switchover { from, to, shards: None },
                    1 => Action::Switchover { from, to, shards: Some(subset) },
                    _ => Action::Failover { from, to, accept_data_loss: accept && !automatic, automatic },
                };
                (state, obs, action)
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn decisions_never_break_the_safety_rules((state, obs, action) in inputs()) {
                let d = plan(&state, &obs, &action);
                // Refused or planned, never both; the same inputs, the same decision.
                prop_assert_eq!(d.refused.is_some(), d.target.is_none(), "{}", d.explain());
                prop_assert_eq!(&d, &plan(&state, &obs, &action));
                // And it does not refuse what it must do: an automatic failover
                // to the in-city peer whose direction from the lost site is in
                // sync, allowed by policy, pause and cooldown, to a site that
                // can take shards, goes ahead whatever the other direction is.
                if let Action::Failover { from, to, automatic: true, .. } = &action {
                    let lossless = state.pairs.iter().any(|p| p.joins(from, to) && p.outgoing(from) == ReplicationMode::Sync);
                    let p = &state.policy;
                    let allowed = p.auto_failover && !p.paused && NOW - state.last_auto_failover_unix_ms >= p.cooldown_s * 1000;
                    let target_ok = !matches!(state.sites[to].role, SiteRole::Fenced | SiteRole::Recovering) && obs.fresh(to).is_some();
                    let owns = state.shards.iter().any(|s| &s.owner == from);
                    if lossless && allowed && target_ok && owns {
                        prop_assert_eq!(&d.refused, &None, "{}", d.explain());
                    }
                }
                let Some(target) = &d.target else { return Ok(()) };
                let (from, to) = match &action {
                    Action::Switchover { from, to, .. } | Action::Failover { from, to, .. } => (from, to),
                };
                prop_assert_eq!(target, to);
                prop_assert_ne!(target, from);
                // Only a site that may own shards is a target.
                let role = state.sites[target].role;
                prop_assert!(!matches!(role, SiteRole::Fenced | SiteRole::Recovering), "target is {}", role.as_str());
                // Only shards the source owns move; none twice.
                prop_assert!(!d.shards.is_empty());
                prop_assert!(d.shards.windows(2).all(|w| w[0] < w[1]));
                for s in &d.shards {
                    prop_assert_eq!(&state.shards[*s as usize].owner, from);
                }
                match &action {
                    Action::Switchover { .. } => {
                        prop_assert_eq!(&d.expected_loss, &Loss::default(), "a switchover waits instead of losing");
                    }
                    Action::Failover { accept_data_loss, automatic, .. } => {
                        // A failover takes every shard of the failed site.
                        let all: Vec<u32> = (0..state.shards.len() as u32).filter(|s| &state.shards[*s as usize].owner == from).collect();
                        prop_assert_eq!(&d.shards, &all);
                        // Lossless exactly when from's own writes reach to in sync;
                        // to's direction is irrelevant.
                        let in_sync = state.pairs.iter().any(|p| p.joins(from, to) && p.outgoing(from) == ReplicationMode::Sync);
                        // Possible loss only when the operator accepted it.
                        if !in_sync {
                            prop_assert!(*accept_data_loss, "a lossy failover planned without --accept-data-loss");
                        }
                        // In sync: nothing lost, and (unless loss was accepted) the move
                        // must not commit once the pair left sync.
                        prop_assert_eq!(d.requires_sync, in_sync && !*accept_data_loss);
                        if in_sync {
                            prop_assert_eq!(&d.expected_loss, &Loss::default());
                        }
                        if *automatic {
                            prop_assert!(in_sync, "automatic failover out of sync");
                            prop_assert!(state.policy.auto_failover && !state.policy.paused);
                            prop_assert!(NOW - state.last_auto_failover_unix_ms >= state.policy.cooldown_s * 1000, "inside the cooldown");
                            prop_assert_eq!(&state.sites[from].city, &state.sites[to].city, "automatic failover left the city");
                        }
                    }
                }
            }
        }
    }
}
