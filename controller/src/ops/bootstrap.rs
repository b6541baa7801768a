//! Bootstrap: the initial layout written by the first leader.
//!
//! Active sites split the shards evenly in contiguous ranges (in site-name
//! order); DR standbys own none. Every in-city pair of active sites starts in
//! sync mode with state id 1. Generation starts at 1.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, Policy, ReplicationPair, Shard, Site, SiteRole};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapSpec {
    pub sites: Vec<Site>,
    pub shard_count: u32,
    pub policy: Policy,
}

pub(super) fn apply(state: &mut ClusterState, spec: &BootstrapSpec) -> Applied {
    let what = format!("bootstrap: {} sites, {} shards", spec.sites.len(), spec.shard_count);
    if state.bootstrapped {
        return Applied { what, result: "ignored: already bootstrapped".into(), changed: false, refused: false };
    }
    let mut active: Vec<&Site> = spec.sites.iter().filter(|s| s.role == SiteRole::Active).collect();
    active.sort_by(|a, b| a.name.cmp(&b.name));
    if active.is_empty() || spec.shard_count == 0 {
        return Applied { what, result: "refused: no active site or no shard".into(), changed: false, refused: true };
    }

    state.sites = spec.sites.iter().map(|s| (s.name.clone(), s.clone())).collect();
    let n = u64::from(spec.shard_count);
    let owners = active.len() as u64;
    state.shards = (0..n)
        .map(|i| {
            // Contiguous ranges: shard i goes to active site floor(i * owners / n).
            let owner = active[(i * owners / n) as usize];
            Shard::new(&owner.name, 1)
        })
        .collect();
    state.pairs = Vec::new();
    for (i, a) in active.iter().enumerate() {
        for b in &active[i + 1..] {
            if a.city == b.city {
                state.pairs.push(ReplicationPair::new_sync(&a.name, &b.name));
            }
        }
    }
    state.policy = spec.policy.clone();
    state.generation = 1;
    state.bootstrapped = true;
    Applied { what, result: "ok: generation 1".into(), changed: true, refused: false }
}

/// The demo layout (a, b active in city-1, c DR in city-2), bootstrapped
/// with `shards` shards: a owns the first half, b the second. For tests.
#[cfg(test)]
pub(crate) fn test_state(shards: u32) -> ClusterState {
    let site = |name: &str, id: u64, city: &str, role: SiteRole| Site { name: name.into(), node_id: id, city: city.into(), role, addr: format!("{name}:1") };
    let spec = BootstrapSpec {
        sites: vec![site("a", 1, "city-1", SiteRole::Active), site("b", 2, "city-1", SiteRole::Active), site("c", 3, "city-2", SiteRole::DrStandby)],
        shard_count: shards,
        policy: Policy::default(),
    };
    let mut state = ClusterState::default();
    apply(&mut state, &spec);
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(name: &str, id: u64, city: &str, role: SiteRole) -> Site {
        Site { name: name.into(), node_id: id, city: city.into(), role, addr: format!("{name}:1") }
    }

    fn spec(shards: u32) -> BootstrapSpec {
        BootstrapSpec {
            sites: vec![site("b", 2, "city-1", SiteRole::Active), site("a", 1, "city-1", SiteRole::Active), site("c", 3, "city-2", SiteRole::DrStandby)],
            shard_count: shards,
            policy: Policy::default(),
        }
    }

    // Checks the documented layout: A and B each own half, C none, one sync pair.
    #[test]
    fn splits_shards_between_active_sites() {
        let mut state = ClusterState::default();
        let applied = apply(&mut state, &spec(256));
        assert!(applied.changed);
        assert_eq!(state.shards.len(), 256);
        let counts = state.shard_counts();
        assert_eq!(counts["a"], 128);
        assert_eq!(counts["b"], 128);
        assert_eq!(counts["c"], 0);
        assert_eq!(state.shards[0].owner, "a");
        assert_eq!(state.shards[255].owner, "b");
        assert!(state.shards.iter().all(|s| s.epoch == 1));
        assert_eq!(state.pairs.len(), 1);
        assert_eq!((state.pairs[0].site_a.as_str(), state.pairs[0].site_b.as_str()), ("a", "b"));
        assert_eq!(state.pairs[0].mode, crate::state::ReplicationMode::Sync);
        assert_eq!(state.generation, 1);
    }

    // A second bootstrap (another node's proposal racing the first) must not
    // reset owners or epochs.
    #[test]
    fn second_bootstrap_is_ignored() {
        let mut state = ClusterState::default();
        apply(&mut state, &spec(8));
        state.shards[0].epoch = 7;
        let applied = apply(&mut state, &spec(16));
        assert!(!applied.changed);
        assert_eq!(state.shards.len(), 8);
        assert_eq!(state.shards[0].epoch, 7);
    }

    #[test]
    fn odd_shard_count_gives_every_shard_an_owner() {
        let mut state = ClusterState::default();
        apply(&mut state, &spec(7));
        let counts = state.shard_counts();
        assert_eq!(counts["a"] + counts["b"], 7);
        assert!(counts["a"].abs_diff(counts["b"]) <= 1);
    }
}
