//! openraft's storage conformance suite, run against the controller's log
//! and state-machine stores over both storage backends: rocksdb (what the
//! daemons use) and the in-memory disk (what the simulation uses).

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use tandem_controller::raft::log_store::LogStore;
use tandem_controller::raft::state_machine::StateMachineStore;
use tandem_controller::raft::{StorageError, TypeConfig};
use tandem_storage::{KvStore, MemKv, RocksKv};

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let kv: Arc<dyn KvStore> = Arc::new(MemKv::new());
        Ok(((), LogStore::new(kv.clone()), StateMachineStore::open(kv)?))
    }
}

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let kv: Arc<dyn KvStore> = Arc::new(RocksKv::open(dir.path()).expect("open rocksdb"));
        Ok((dir, LogStore::new(kv.clone()), StateMachineStore::open(kv)?))
    }
}

#[test]
fn mem_store_passes_openraft_suite() {
    Suite::test_all(MemBuilder).expect("in-memory store fails openraft's suite");
}

#[test]
fn rocks_store_passes_openraft_suite() {
    Suite::test_all(RocksBuilder).expect("rocksdb store fails openraft's suite");
}
