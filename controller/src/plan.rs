//! The planner: one pure function from (state, observations, action) to a
//! decision that explains itself. `--dry-run`, the confirmation prompt,
//! the command itself and the audit log all show the same decision.
//!
//! No clock, no I/O: "now" comes in with the observations, so the same
//! inputs always give the same decision (and the drill can replay it).

use serde::Serialize;

use crate::health::ReplicatorHealth;
use crate::ops::describe_shards;
use crate::state::{ClusterState, SiteRole};

/// A replicator heartbeat older than this means the replicator is down or
/// cut off from the controllers.
pub const HEARTBEAT_FRESH_MS: u64 = 5_000;

/// What the controllers currently observe of the data plane.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub replicators: Vec<ReplicatorHealth>,
    /// The observing controller's clock when the heartbeats were read.
    pub now_unix_ms: u64,
}

impl Observations {
    fn fresh(&self, site: &str) -> Option<&ReplicatorHealth> {
        self.replicators
            .iter()
            .find(|h| h.site == site)
            .filter(|h| self.now_unix_ms.saturating_sub(h.received_at_unix_ms) <= HEARTBEAT_FRESH_MS)
    }
}

/// What an operator (or the automatic path) asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Planned move of `shards` (all of `from`'s when `None`) to `to`:
    /// drain, wait until `to` has everything, move. No data loss.
    Switchover { from: String, to: String, shards: Option<Vec<u32>> },
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
    }
}

fn switchover(state: &ClusterState, obs: &Observations, from: &str, to: &str, shards: Option<&[u32]>) -> Decision {
    let mut d = Decision {
        action: "switchover".into(),
        from: from.into(),
        target: None,
        candidates: Vec::new(),
        shards: Vec::new(),
        expected_loss: Loss::default(),
        backlog: Loss::default(),
        refused: None,
        steps: Vec::new(),
    };
    let refuse = |mut d: Decision, why: String| {
        d.target = None;
        d.refused = Some(why);
        d
    };
    if !state.sites.contains_key(from) {
        return refuse(d, format!("unknown site {from:?}"));
    }
    // Every other site is a candidate; only the requested one can be chosen.
    for site in state.sites.values().filter(|s| s.name != from) {
        let reason = if site.name != to {
            "not the requested target".to_string()
        } else if matches!(site.role, SiteRole::Fenced | SiteRole::Recovering) {
            format!("it is {}", site.role.as_str())
        } else if obs.fresh(&site.name).is_none() {
            format!("its replicator has not reported for more than {} s", HEARTBEAT_FRESH_MS / 1000)
        } else {
            String::new()
        };
        let chosen = reason.is_empty();
        let reason = if chosen { format!("requested, {} and reporting", site.role.as_str()) } else { reason };
        d.candidates.push(Candidate { site: site.name.clone(), chosen, reason });
    }
    if from == to {
        return refuse(d, "source and target are the same site".into());
    }
    match d.candidates.iter().find(|c| c.site == to) {
        None => return refuse(d, format!("unknown site {to:?}")),
        Some(c) if !c.chosen => {
            let why = format!("target {to} cannot take shards: {}", c.reason);
            return refuse(d, why);
        }
        Some(_) => {}
    }

    let owned: Vec<u32> = (0..state.shards.len() as u32).filter(|&n| state.shards[n as usize].owner == from).collect();
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
        return refuse(
            d,
            format!(
                "{from}'s replicator has not reported for more than {} s, so it cannot drain: use failover",
                HEARTBEAT_FRESH_MS / 1000
            ),
        );
    };
    if let Some(link) = source.links.iter().find(|l| l.peer == to) {
        d.backlog = Loss { entries: link.entries, bytes: link.bytes, seconds: link.seconds };
    }
    d.target = Some(to.into());
    d.steps = vec![
        format!("drain: {from} stops accepting writes for the {} shards (writes to them pause)", d.shards.len()),
        format!(
            "wait until {to} has confirmed every entry of {from}'s log (now {} entries, {} bytes behind)",
            d.backlog.entries, d.backlog.bytes
        ),
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
    fn the_same_inputs_give_the_same_decision() {
        let state = test_state(16);
        let o = obs(&["a", "b", "c"], 5);
        assert_eq!(plan(&state, &o, &switchover("c", Some(vec![3, 1, 1]))), plan(&state, &o, &switchover("c", Some(vec![1, 3]))));
    }
}
