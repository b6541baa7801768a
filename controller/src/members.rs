//! The controllers' Raft membership as the leader sees it (`tandem
//! members`): who votes, who only learns, how far each one's log is and
//! when the leader last heard it.

use serde::{Deserialize, Serialize};
use tandem_proto::control as pb;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: u64,
    /// "" when the node is in no site of the layout.
    pub site: String,
    pub addr: String,
    /// "voter" or "learner".
    pub role: String,
    pub leader: bool,
    /// The newest log index the leader knows the node holds.
    pub matched_index: Option<u64>,
    /// Milliseconds since the leader last had an answer from it.
    pub last_contact_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub leader_id: Option<u64>,
    pub term: u64,
    pub last_log_index: u64,
    pub generation: u64,
    pub members: Vec<Member>,
    /// The leader answered, after confirming its leadership; else one
    /// node's own view (no leader answered), without log indexes or
    /// contacts.
    pub from_leader: bool,
    /// The node that answered.
    pub answered_by: u64,
}

impl Members {
    pub fn from_pb(r: pb::MembersReply) -> Self {
        Members {
            leader_id: (r.leader_id != 0).then_some(r.leader_id),
            term: r.term,
            last_log_index: r.last_log_index,
            generation: r.generation,
            from_leader: r.from_leader,
            answered_by: r.answered_by,
            members: r
                .members
                .into_iter()
                .map(|m| Member {
                    node_id: m.node_id,
                    site: m.site,
                    addr: m.addr,
                    role: m.role,
                    leader: m.leader,
                    matched_index: m.matched_index,
                    last_contact_ms: m.last_contact_ms,
                })
                .collect(),
        }
    }

    /// The member of `site`, if its controller is one.
    pub fn of_site(&self, site: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.site == site)
    }

    pub fn voters(&self) -> usize {
        self.members.iter().filter(|m| m.role == "voter").count()
    }
}
