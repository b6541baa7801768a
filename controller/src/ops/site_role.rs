//! Setting a site's role, used by failback: a returning site is marked
//! `recovering` while it catches up (no shard can be moved to it), then
//! `active` again. Compare-and-set on the current role.

use serde::{Deserialize, Serialize};

use super::Applied;
use crate::state::{ClusterState, SiteRole};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRoleSpec {
    pub site: String,
    pub expect: SiteRole,
    pub role: SiteRole,
}

pub(super) fn apply(state: &mut ClusterState, spec: &SiteRoleSpec) -> Applied {
    let what = format!("site {}: {} -> {}", spec.site, spec.expect.as_str(), spec.role.as_str());
    let Some(site) = state.sites.get_mut(&spec.site) else {
        return Applied { what, result: format!("refused: unknown site {:?}", spec.site), changed: false, refused: true };
    };
    if site.role != spec.expect {
        return Applied {
            what,
            result: format!("refused: {} is {}, not {}", spec.site, site.role.as_str(), spec.expect.as_str()),
            changed: false,
            refused: true,
        };
    }
    if matches!(spec.role, SiteRole::Recovering) && state.shards.iter().any(|s| s.owner == spec.site) {
        return Applied { what, result: format!("refused: {} still owns shards; move them first", spec.site), changed: false, refused: true };
    }
    site.role = spec.role;
    Applied { what, result: "ok".into(), changed: true, refused: false }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovering_only_without_shards_and_only_from_the_expected_role() {
        let mut s = crate::ops::test_state(4);
        let spec = SiteRoleSpec { site: "a".into(), expect: SiteRole::Active, role: SiteRole::Recovering };
        assert!(apply(&mut s, &spec).result.contains("still owns shards"));
        for sh in &mut s.shards {
            sh.owner = "b".into();
        }
        assert!(apply(&mut s, &spec).changed);
        assert_eq!(s.sites["a"].role, SiteRole::Recovering);
        assert!(apply(&mut s, &spec).result.contains("not active"), "a second identical request is refused");
    }
}
