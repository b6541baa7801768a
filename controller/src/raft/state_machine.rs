//! The replicated state machine, stored through the [`KvStore`] seam.
//!
//! Layout: `sm/core` → JSON [`Core`] (cluster state, last applied log id,
//! membership); `audit/<seq: u64 BE>` → JSON audit entry; `sm/snapshot` →
//! the last built or installed snapshot. Each `apply` call writes its state
//! change and audit entries in one synced batch, so state and audit never
//! disagree after a crash and a snapshot never needs replaying.

// openraft's storage traits return its `StorageError`, which is large;
// the helpers here return it as those traits do.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};
use tandem_storage::{Durability, KvStore, WriteBatch};

use super::{io_err, NodeId, StorageError, TypeConfig};
use crate::ops::{self, Outcome};
use crate::state::{AuditEntry, ClusterState};

const CORE_KEY: &[u8] = b"sm/core";
const SNAPSHOT_KEY: &[u8] = b"sm/snapshot";
const AUDIT_PREFIX: &[u8] = b"audit/";
const AUDIT_END: &[u8] = b"audit0";

fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = AUDIT_PREFIX.to_vec();
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Everything but the audit entries.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Core {
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, openraft::BasicNode>,
    cluster: ClusterState,
}

/// The snapshot payload: the core plus the whole audit log.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    core: Core,
    audit: Vec<AuditEntry>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, openraft::BasicNode>,
    data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Codec(String);

fn codec(e: serde_json::Error) -> Codec {
    Codec(e.to_string())
}

/// Read access to the applied state, shared with the control service.
#[derive(Clone)]
pub struct StateReader {
    core: Arc<Mutex<Core>>,
    kv: Arc<dyn KvStore>,
}

impl StateReader {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn cluster(&self) -> ClusterState {
        self.lock().cluster.clone()
    }

    pub fn last_applied_index(&self) -> u64 {
        self.lock().last_applied.map(|l| l.index).unwrap_or(0)
    }

    /// The newest `limit` audit entries, newest first.
    pub fn audit(&self, limit: usize) -> Result<Vec<AuditEntry>, tandem_storage::StorageError> {
        let len = self.lock().cluster.audit_len;
        let first = len.saturating_sub(limit as u64) + 1;
        let rows = self.kv.range(&audit_key(first), &audit_key(len + 1), limit)?;
        let mut entries: Vec<AuditEntry> = rows
            .iter()
            .map(|(_, v)| serde_json::from_slice(v))
            .collect::<Result<_, _>>()
            .map_err(|e| tandem_storage::StorageError::Backend(format!("corrupt audit entry: {e}")))?;
        entries.reverse();
        Ok(entries)
    }

    /// Up to `limit` audit entries from `from_seq` on, oldest first, and
    /// how many entries the log holds: to read the whole chain in pages.
    pub fn audit_from(&self, from_seq: u64, limit: usize) -> Result<(Vec<AuditEntry>, u64), tandem_storage::StorageError> {
        let len = self.lock().cluster.audit_len;
        let rows = self.kv.range(&audit_key(from_seq.max(1)), AUDIT_END, limit)?;
        let entries = rows
            .iter()
            .map(|(_, v)| serde_json::from_slice(v))
            .collect::<Result<_, _>>()
            .map_err(|e| tandem_storage::StorageError::Backend(format!("corrupt audit entry: {e}")))?;
        Ok((entries, len))
    }
}

pub struct StateMachineStore {
    reader: StateReader,
    snapshot_seq: u64,
}

impl StateMachineStore {
    /// Opens the state machine, loading what a previous run applied.
    pub fn open(kv: Arc<dyn KvStore>) -> Result<Self, StorageError> {
        let core = match kv.get(CORE_KEY).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))? {
            Some(b) => serde_json::from_slice(&b).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, codec(e)))?,
            None => Core::default(),
        };
        let sm = Self { reader: StateReader { core: Arc::new(Mutex::new(core)), kv }, snapshot_seq: 0 };
        // A store written by a build without the tally: count it once from
        // the audit log (kept in memory; stored with the next change).
        let needs_tally = { sm.reader.lock().cluster.tally.is_none() };
        if needs_tally {
            let audit = sm.all_audit()?;
            sm.reader.lock().cluster.backfill_tally(audit);
        }
        Ok(sm)
    }

    pub fn reader(&self) -> StateReader {
        self.reader.clone()
    }

    fn kv(&self) -> &Arc<dyn KvStore> {
        &self.reader.kv
    }

    fn all_audit(&self) -> Result<Vec<AuditEntry>, StorageError> {
        let rows = self.kv().range(AUDIT_PREFIX, AUDIT_END, usize::MAX).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?;
        rows.iter().map(|(_, v)| serde_json::from_slice(v)).collect::<Result<_, _>>().map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, codec(e)))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let core = self.reader.lock().clone();
        let audit = self.all_audit()?;
        let data =
            serde_json::to_vec(&SnapshotData { core: core.clone(), audit }).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Read, codec(e)))?;
        self.snapshot_seq += 1;
        let snapshot_id = match core.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.snapshot_seq),
            None => format!("--{}", self.snapshot_seq),
        };
        let meta = SnapshotMeta { last_log_id: core.last_applied, last_membership: core.membership, snapshot_id };
        let stored = StoredSnapshot { meta: meta.clone(), data: data.clone() };
        let mut batch = WriteBatch::new();
        batch.put(SNAPSHOT_KEY, serde_json::to_vec(&stored).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, codec(e)))?);
        self.kv().write(batch, Durability::Sync).map_err(|e| io_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, openraft::BasicNode>), StorageError> {
        let core = self.reader.lock();
        Ok((core.last_applied, core.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        // Work on a copy and publish it only after the batch is durable, so
        // readers never see state that a crash could take back.
        let mut core = self.reader.lock().clone();
        let mut batch = WriteBatch::new();
        let mut outcomes = Vec::new();
        for entry in entries {
            core.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => outcomes.push(Outcome::default()),
                EntryPayload::Normal(req) => {
                    let (outcome, audit) = ops::apply(&mut core.cluster, &req, entry.log_id.index);
                    let v = serde_json::to_vec(&audit).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, codec(e)))?;
                    batch.put(audit_key(audit.seq), v);
                    outcomes.push(outcome);
                }
                EntryPayload::Membership(m) => {
                    core.membership = StoredMembership::new(Some(entry.log_id), m);
                    outcomes.push(Outcome::default());
                }
            }
        }
        let v = serde_json::to_vec(&core).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, codec(e)))?;
        batch.put(CORE_KEY, v);
        self.kv().write(batch, Durability::Sync).map_err(|e| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        *self.reader.lock() = core;
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineStore { reader: self.reader.clone(), snapshot_seq: self.snapshot_seq + 1000 }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta<NodeId, openraft::BasicNode>, snapshot: Box<Cursor<Vec<u8>>>) -> Result<(), StorageError> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let SnapshotData { mut core, audit } = serde_json::from_slice(&data).map_err(|e| io_err(subject.clone(), ErrorVerb::Read, codec(e)))?;
        // From a leader of a build without the tally.
        core.cluster.backfill_tally(audit.iter().cloned());
        core.last_applied = meta.last_log_id;
        core.membership = meta.last_membership.clone();

        let mut batch = WriteBatch::new();
        batch.delete_range(AUDIT_PREFIX, AUDIT_END);
        for entry in &audit {
            batch.put(audit_key(entry.seq), serde_json::to_vec(entry).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, codec(e)))?);
        }
        batch.put(CORE_KEY, serde_json::to_vec(&core).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, codec(e)))?);
        let stored = StoredSnapshot { meta: meta.clone(), data };
        batch.put(SNAPSHOT_KEY, serde_json::to_vec(&stored).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, codec(e)))?);
        self.kv().write(batch, Durability::Sync).map_err(|e| io_err(subject, ErrorVerb::Write, e))?;
        *self.reader.lock() = core;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let subject = ErrorSubject::Snapshot(None);
        let Some(b) = self.kv().get(SNAPSHOT_KEY).map_err(|e| io_err(subject.clone(), ErrorVerb::Read, e))? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = serde_json::from_slice(&b).map_err(|e| io_err(subject, ErrorVerb::Read, codec(e)))?;
        Ok(Some(Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}

/// Marker keys written by a DR activation (see [`dr_reset`]).
pub const DR_MEMBERS_KEY: &[u8] = b"dr/members";
/// Raft messages from nodes of an older generation than this are refused.
pub const DR_FLOOR_KEY: &[u8] = b"dr/generation-floor";

/// Written by `tandem dr rejoin` into the fresh store of a returning old
/// site: it joins the activated generation (value: that generation) as a
/// new member instead of starting a cluster of its own.
pub const DR_JOINING_KEY: &[u8] = b"dr/joining";

/// Prepares an empty controller store to join generation `generation`
/// (see [`DR_JOINING_KEY`]); Raft messages of older generations are refused.
pub fn prepare_join(kv: &dyn KvStore, generation: u64) -> Result<(), String> {
    if kv.get(CORE_KEY).map_err(|e| e.to_string())?.is_some() {
        return Err("this controller store is not empty".into());
    }
    let mut batch = WriteBatch::new();
    batch.put(DR_JOINING_KEY, generation.to_be_bytes().to_vec());
    batch.put(DR_FLOOR_KEY, generation.to_be_bytes().to_vec());
    kv.write(batch, Durability::Sync).map_err(|e| e.to_string())
}

/// What a DR activation changes, for [`dr_reset`].
pub struct DrReset {
    pub site: String,
    pub node_id: NodeId,
    pub who: String,
    pub why: String,
    pub at_unix_ms: u64,
    /// Who approved it and the generation they approved activating from,
    /// from a verified signed approval file (policy four_eyes; see
    /// `crate::operations::dr::ApprovalFile`).
    pub approved_by: Option<(String, u64)>,
}

/// The cluster generation a stopped controller's store holds.
pub fn stored_generation(kv: &dyn KvStore) -> Result<u64, String> {
    match kv.get(CORE_KEY).map_err(|e| e.to_string())? {
        Some(b) => Ok(serde_json::from_slice::<Core>(&b).map_err(|e| e.to_string())?.cluster.generation),
        None => Err("this controller store holds no applied cluster state (it never applied the cluster's layout)".into()),
    }
}

/// DR activation, offline, on the surviving site's controller store (its
/// controller stopped): the Raft log, vote and snapshot are wiped, the
/// applied state gets a new generation with every shard owned by `site`
/// under a new epoch and every other site fenced, the audit log records it,
/// and the node is marked to start as a one-member cluster that refuses
/// Raft traffic from the old generation. Returns the audit line's result.
pub fn dr_reset(kv: &dyn KvStore, r: &DrReset) -> Result<String, String> {
    let mut core: Core = match kv.get(CORE_KEY).map_err(|e| e.to_string())? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| e.to_string())?,
        None => return Err("this store holds no cluster state".into()),
    };
    let c = &mut core.cluster;
    if !c.bootstrapped {
        return Err("the cluster was never bootstrapped".into());
    }
    if !c.sites.contains_key(&r.site) {
        return Err(format!("site {:?} is not in the cluster", r.site));
    }
    // Four eyes (crate::ops::approval), offline: the approval is a file a
    // second admin signed, verified by the caller against the site's CA.
    if c.policy.four_eyes {
        use crate::ops::approval::identity;
        let g = c.generation;
        match &r.approved_by {
            None => {
                return Err(format!(
                    "DR activation needs a second admin's approval (policy four_eyes): another admin runs `tandem dr approve --site {} --generation {g} --reason ... --out FILE` and you pass it with --approval FILE",
                    r.site
                ))
            }
            Some((by, _)) if identity(by) == identity(&r.who) => {
                return Err(format!("the approval file is signed by {by}, who activates: a second admin must sign it"))
            }
            Some((by, approved)) if *approved != g => {
                return Err(format!(
                    "the approval file (signed by {by}) approves activating from generation {approved}, and this site is at generation {g}: an approval is used once; ask for one for generation {g}"
                ))
            }
            Some(_) => {}
        }
    }
    c.generation += 1;
    for s in &mut c.shards {
        // An unplanned move like a failover: failback of the old owners
        // hands these shards back.
        s.hand_over(&r.site, crate::state::MoveKind::Failover);
    }
    for (name, s) in c.sites.iter_mut() {
        s.role = if *name == r.site { crate::state::SiteRole::Active } else { crate::state::SiteRole::Fenced };
    }
    c.pairs.retain(|p| p.has(&r.site));
    c.audit_len += 1;
    let result = format!("ok: generation {}, {} owns all {} shards, other sites fenced", c.generation, r.site, c.shards.len());
    let mut entry = AuditEntry {
        seq: c.audit_len,
        at_unix_ms: r.at_unix_ms,
        clock: r.site.clone(),
        who: r.who.clone(),
        why: match &r.approved_by {
            Some((by, _)) => format!("{} (approved by {by}, signed approval file)", r.why),
            None => r.why.clone(),
        },
        what: format!("DR activation at {}: membership reset to {} alone", r.site, r.site),
        result: result.clone(),
        log_index: 0,
        prev_hash: String::new(),
        hash: String::new(),
    };
    c.audit_head = crate::audit::seal(&mut entry, &c.audit_head);
    let generation = c.generation;
    core.last_applied = None;
    core.membership = StoredMembership::default();
    let mut batch = WriteBatch::new();
    batch.delete_range(super::log_store::LOG_PREFIX, super::log_store::LOG_END);
    for k in [super::log_store::VOTE_KEY, super::log_store::COMMITTED_KEY, super::log_store::PURGED_KEY, SNAPSHOT_KEY] {
        batch.delete(k);
    }
    batch.put(audit_key(entry.seq), serde_json::to_vec(&entry).map_err(|e| e.to_string())?);
    batch.put(CORE_KEY, serde_json::to_vec(&core).map_err(|e| e.to_string())?);
    batch.put(DR_MEMBERS_KEY, serde_json::to_vec(&vec![r.node_id]).map_err(|e| e.to_string())?);
    batch.put(DR_FLOOR_KEY, generation.to_be_bytes().to_vec());
    kv.write(batch, Durability::Sync).map_err(|e| e.to_string())?;
    Ok(result)
}
