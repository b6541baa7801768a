//! A replicator stopped with `shutdown` lets go of everything it held: the
//! same process can start it again on the same stores and ports (the bench
//! restarts the DR site this way; a task or a `/metrics` connection that
//! kept the site alive would hold rocksdb's lock and the port).

use std::io::{Read, Write};
use std::sync::Arc;

use tandem_controller::clock::SystemClock;
use tandem_crypto::{LocalKeyFile, SystemRandomSource};
use tandem_net::Transport;
use tandem_replicator::blob::BlobStore;
use tandem_replicator::config::ReplicatorConfig;
use tandem_replicator::server::{Replicator, ReplicatorDeps};
use tandem_storage::RocksKv;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One `/metrics` scrape, keeping the connection open afterwards (as
/// Prometheus does).
fn scrape(addr: &str) -> (std::net::TcpStream, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let n = s.read(&mut buf).unwrap();
    (s, String::from_utf8_lossy(&buf[..n]).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replicator_starts_again_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("kek.key");
    LocalKeyFile::create(&key, "restart-kek", &SystemRandomSource).unwrap();
    let (port, metrics) = (free_port(), format!("127.0.0.1:{}", free_port()));
    let text = format!(
        "site = \"a\"\ndata_dir = \"{}\"\nkey_file = \"{}\"\ncontrollers = [\"127.0.0.1:1\"]\nmetrics_listen = \"{metrics}\"\n\n\
         [[sites]]\nname = \"a\"\naddr = \"127.0.0.1:{port}\"\n",
        dir.path().display(),
        key.display()
    );
    let config = ReplicatorConfig::parse(&text, "restart.toml").unwrap();
    let mut kept = Vec::new();
    for round in 0..2 {
        let kv = RocksKv::open(&dir.path().join("meta")).unwrap_or_else(|e| panic!("round {round}: the store is still held: {e}"));
        let deps = ReplicatorDeps {
            kv: Arc::new(kv),
            blobs: BlobStore::local(&dir.path().join("blobs")).unwrap(),
            keys: Arc::new(LocalKeyFile::load(&key).unwrap()),
            rng: Arc::new(SystemRandomSource),
            clock: Arc::new(SystemClock),
            transport: Transport::Tokio,
        };
        let r = Replicator::start(config.clone(), deps).await.unwrap_or_else(|e| panic!("round {round}: {e}"));
        let (conn, page) = tokio::task::spawn_blocking({
            let metrics = metrics.clone();
            move || scrape(&metrics)
        })
        .await
        .unwrap();
        assert!(page.contains("tandem_log_entries_total"), "round {round}: {page}");
        kept.push(conn);
        r.shutdown().await;
    }
}
