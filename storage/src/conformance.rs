//! One conformance suite for [`KvStore`], run against every backend.

use crate::{Durability, KvStore, MemKv, RocksKv, WriteBatch};

fn batch_put(pairs: &[(&str, &str)]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (k, v) in pairs {
        b.put(k.as_bytes(), v.as_bytes());
    }
    b
}

fn keys(kv: &dyn KvStore, start: &str, end: &str) -> Vec<String> {
    kv.range(start.as_bytes(), end.as_bytes(), usize::MAX).unwrap().into_iter().map(|(k, _)| String::from_utf8(k).unwrap()).collect()
}

fn suite(kv: &dyn KvStore) {
    // Writes are visible and ordered.
    kv.write(batch_put(&[("b", "2"), ("a", "1"), ("c", "3"), ("d", "4")]), Durability::Sync).unwrap();
    assert_eq!(kv.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(kv.get(b"zz").unwrap(), None);
    assert_eq!(keys(kv, "a", "d"), ["a", "b", "c"]);
    assert_eq!(kv.range(b"a", b"z", 2).unwrap().len(), 2);
    assert!(kv.range(b"c", b"a", 10).unwrap().is_empty());

    // last_in_range excludes `end` and respects `start`.
    assert_eq!(kv.last_in_range(b"a", b"d").unwrap().unwrap().0, b"c");
    assert_eq!(kv.last_in_range(b"a", b"z").unwrap().unwrap().0, b"d");
    assert!(kv.last_in_range(b"x", b"z").unwrap().is_none());

    // A batch is atomic and applies in order: delete, range delete, put.
    let mut b = WriteBatch::new();
    b.delete(b"a".to_vec());
    b.delete_range(b"b".to_vec(), b"d".to_vec());
    b.put(b"c".to_vec(), b"33".to_vec());
    kv.write(b, Durability::Buffered).unwrap();
    assert_eq!(keys(kv, "a", "z"), ["c", "d"]);
    assert_eq!(kv.get(b"c").unwrap().as_deref(), Some(&b"33"[..]));
    kv.sync().unwrap();

    // A snapshot visit sees every pair in order, as of its start: a write
    // made while it runs is not in it.
    let mut seen = Vec::new();
    kv.visit_snapshot(&mut |k, v| {
        if seen.is_empty() {
            kv.write(batch_put(&[("e", "5")]), Durability::Buffered).map_err(|e| e.to_string())?;
        }
        seen.push((String::from_utf8_lossy(k).to_string(), String::from_utf8_lossy(v).to_string()));
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [("c".to_string(), "33".to_string()), ("d".to_string(), "4".to_string())]);
    assert_eq!(kv.get(b"e").unwrap().as_deref(), Some(&b"5"[..]));
    let stopped = kv.visit_snapshot(&mut |_, _| Err("stop".into()));
    assert!(stopped.is_err());
}

#[test]
fn mem_backend_passes_suite() {
    suite(&MemKv::new());
}

#[test]
fn rocks_backend_passes_suite() {
    let dir = tempfile::tempdir().unwrap();
    suite(&RocksKv::open(dir.path()).unwrap());
}

#[test]
fn rocks_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let kv = RocksKv::open(dir.path()).unwrap();
        kv.write(batch_put(&[("k", "v")]), Durability::Sync).unwrap();
    }
    let kv = RocksKv::open(dir.path()).unwrap();
    assert_eq!(kv.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn rocks_open_error_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = RocksKv::open(&file).err().expect("opening a file as a db must fail").to_string();
    assert!(err.contains("not-a-dir"), "{err}");
}

#[test]
fn mem_crash_loses_only_unsynced_writes() {
    let kv = MemKv::new();
    kv.write(batch_put(&[("synced", "1")]), Durability::Sync).unwrap();
    kv.write(batch_put(&[("buffered", "2")]), Durability::Buffered).unwrap();
    assert_eq!(kv.unsynced_batches(), 1);
    assert!(kv.get(b"buffered").unwrap().is_some(), "buffered writes are visible before a crash");
    kv.crash();
    assert!(kv.get(b"synced").unwrap().is_some());
    assert!(kv.get(b"buffered").unwrap().is_none(), "an unsynced write survived a crash");
}

#[test]
fn mem_sync_write_makes_earlier_buffered_writes_durable() {
    let kv = MemKv::new();
    kv.write(batch_put(&[("first", "1")]), Durability::Buffered).unwrap();
    let mut del = WriteBatch::new();
    del.delete(b"first".to_vec());
    kv.write(del, Durability::Buffered).unwrap();
    kv.write(batch_put(&[("second", "2")]), Durability::Sync).unwrap();
    kv.crash();
    assert!(kv.get(b"first").unwrap().is_none(), "flushed batches must replay in order");
    assert!(kv.get(b"second").unwrap().is_some());
}
