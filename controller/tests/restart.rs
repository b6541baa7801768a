//! The state machine and log survive a restart of the store, and the
//! in-memory disk loses nothing the stores synced when the host crashes.

use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use tandem_controller::ops::{BootstrapSpec, Command, OpMeta, Request};
use tandem_controller::raft::log_store::LogStore;
use tandem_controller::raft::state_machine::StateMachineStore;
use tandem_controller::raft::TypeConfig;
use tandem_controller::state::{Policy, Site, SiteRole};
use tandem_storage::{KvStore, MemKv};

fn request(command: Command) -> Request {
    Request { command, meta: OpMeta { who: "sre".into(), why: "test".into(), at_unix_ms: 7, clock: String::new(), approval: None } }
}

fn entry(index: u64, req: Request) -> Entry<TypeConfig> {
    Entry { log_id: log_id(1, 1, index), payload: EntryPayload::Normal(req) }
}

// Applies bootstrap + pause, crashes the simulated disk, reopens, and
// checks state and audit are exactly as applied (they were synced).
#[tokio::test]
async fn applied_state_and_audit_survive_crash() {
    let disk = MemKv::new();
    let kv: Arc<dyn KvStore> = Arc::new(disk.clone());
    let mut sm = StateMachineStore::open(kv.clone()).unwrap();
    let spec = BootstrapSpec {
        sites: vec![
            Site { name: "a".into(), node_id: 1, city: "x".into(), role: SiteRole::Active, addr: "a:1".into() },
            Site { name: "b".into(), node_id: 2, city: "x".into(), role: SiteRole::Active, addr: "b:1".into() },
        ],
        shard_count: 4,
        policy: Policy::default(),
    };
    let outcomes = sm.apply(vec![entry(1, request(Command::Bootstrap(spec))), entry(2, request(Command::Pause))]).await.unwrap();
    assert_eq!(outcomes[1].audit_seq, 2);
    assert_eq!(disk.unsynced_batches(), 0, "apply must sync before returning");

    disk.crash();
    let mut reopened = StateMachineStore::open(kv).unwrap();
    let (applied, _) = reopened.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(2));
    let reader = reopened.reader();
    let cluster = reader.cluster();
    assert!(cluster.policy.paused);
    assert_eq!(cluster.shards.len(), 4);
    let audit = reader.audit(10).unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].what, "pause automatic actions");
    assert_eq!(audit[0].who, "sre");
    assert_eq!(audit[0].log_index, 2);
    assert_eq!(audit[1].seq, 1);
}

// The log store syncs appended entries before reporting them durable.
#[tokio::test]
async fn appended_log_survives_crash() {
    let disk = MemKv::new();
    let kv: Arc<dyn KvStore> = Arc::new(disk.clone());
    let mut log = LogStore::new(kv.clone());
    openraft::storage::RaftLogStorageExt::blocking_append(&mut log, vec![entry(1, request(Command::Pause))]).await.unwrap();
    disk.crash();
    let mut log = LogStore::new(kv);
    let state = log.get_log_state().await.unwrap();
    assert_eq!(state.last_log_id.map(|l| l.index), Some(1));
    assert_eq!(log.try_get_log_entries(0..5).await.unwrap().len(), 1);
}
