//! Replica lifecycle: compaction, snapshots and retention, judged by restores.
//!
//! An accelerated run drives a real replicator (a separate writer process commits) and
//! lifecycle passes on a simulated clock; after every pass the replica is checked: the
//! catalog matches a fresh listing, the object count stays bounded, and the oldest
//! restorable point still restores. At the end every file boundary in the window is
//! restored by litefleet and by `litestream restore` and compared byte for byte with
//! the source captured at that TXID. Then the other direction: a replica Litestream
//! compacted itself (L1, L9, L0 partly deleted) restores identically with both tools.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::*;
use litefleet::lifecycle::{self, Policy};
use litefleet::ltx::TxId;
use litefleet::replicate::{Replicator, Settings};
use litefleet::restore::{self, Target};
use litefleet::storage::catalog::Catalog;
use litefleet::storage::{self, FileInfo, Replica, Storage};

fn keys(files: &[FileInfo]) -> BTreeSet<(u32, TxId, TxId)> {
    files.iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect()
}

async fn ours(replica: &Replica, out: &Path, txid: Option<TxId>) -> Result<Vec<u8>, String> {
    let _ = std::fs::remove_file(out);
    let opts = restore::Options { target: Target { txid, timestamp: None }, ..Default::default() };
    restore::restore(replica, out, &opts).await.map_err(|e| e.to_string())?;
    std::fs::read(out).map_err(|e| e.to_string())
}

fn theirs(bin: &Path, url: &str, out: &Path, txid: TxId) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let o = run_litestream_restore(bin, url, out, &["-txid", &format!("{txid:016x}")]);
    assert!(o.status.success(), "litestream restore -txid {txid:016x}: {}", describe_output(&o));
    std::fs::read(out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accelerated_lifecycle_keeps_replicas_small_and_every_point_in_the_window_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("life.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let replica = Storage::from_url(&url, &storage::Options::default()).unwrap().replica("");
    let policy = Policy {
        levels: vec![Duration::from_secs(3), Duration::from_secs(9)],
        snapshot_interval: Duration::from_secs(20),
        snapshot_retention: Duration::from_secs(30),
        l0_retention: Duration::from_secs(4),
        ..Policy::default()
    };
    let mut w = Writer::open(&db);
    w.cmd("insert t 30 400");
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    let mut cat = Catalog::default();
    let mut copies: BTreeMap<TxId, Vec<u8>> = BTreeMap::new();
    // A simulated clock, one second per step, starting on a minute boundary.
    let start = lifecycle::boundary(SystemTime::now(), Duration::from_secs(60));
    let out = dir.path().join("out.db");
    let mut max_objects = 0;
    let steps = 120u64;
    for step in 0..steps {
        let now = start + Duration::from_secs(step);
        match step % 5 {
            0 => w.cmd("insert t 4 400"),
            1 => w.cmd("update t 3 500"),
            2 => w.cmd("delete t 2"),
            3 => w.cmd("insert u 2 3000"),
            _ => String::new(), // an idle second
        };
        let rep = r.sync().await.unwrap();
        for mut f in rep.files {
            f.created = Some(now);
            cat.add(f);
        }
        if let Some(txid) = rep.txid {
            copies.insert(txid, checkpointed_bytes(&db));
        }
        lifecycle::maintain(&replica, &mut cat, &policy, now).await.unwrap();
        // The catalog is what storage holds.
        let listed = replica.list_all().await.unwrap();
        assert_eq!(keys(&listed), keys(cat.files()), "step {step}");
        max_objects = max_objects.max(listed.len());
        // The oldest point of the window still restores, after every clean-up.
        if step % 10 == 9 {
            let oldest = cat.level(9).iter().map(|f| f.max_txid).min().unwrap_or(1);
            if let Some(want) = copies.get(&oldest) {
                let got = ours(&replica, &out, Some(oldest)).await.unwrap();
                assert!(got == *want, "step {step}: oldest point {oldest} differs");
            }
        }
    }
    let newest = *copies.keys().last().unwrap();
    assert!(newest >= 90, "the workload made {newest} transactions");
    // Bounded: far fewer objects than the L0 files written.
    assert!(max_objects <= 40, "up to {max_objects} objects for {newest} L0 files");
    let files = replica.list_all().await.unwrap();
    let levels: BTreeSet<u32> = files.iter().map(|f| f.level).collect();
    assert!(levels.contains(&1) && levels.contains(&2) && levels.contains(&9), "levels {levels:?}");
    assert!(files.iter().filter(|f| f.level == 0).count() < 10, "L0 retention ran");
    // Every file boundary from the oldest snapshot on: where litefleet's plan reaches it
    // exactly, both tools restore the source captured there; where it does not (an L0
    // file whose predecessors were compacted and aged out), litestream refuses too.
    let oldest = cat.level(9).iter().map(|f| f.max_txid).min().unwrap();
    let bin = litestream_bin();
    let points: BTreeSet<TxId> = files.iter().map(|f| f.max_txid).filter(|t| *t >= oldest).collect();
    let mut exact = 0;
    for &txid in &points {
        let want = copies.get(&txid).unwrap_or_else(|| panic!("no copy at {txid}"));
        match ours(&replica, &out, Some(txid)).await {
            Ok(got) => {
                exact += 1;
                assert!(got == *want, "ours at {txid} differs at {:?}", first_difference(&got, want, 4096));
                if let Some(bin) = &bin {
                    let got = theirs(bin, &url, &dir.path().join("theirs.db"), txid);
                    assert!(got == *want, "litestream at {txid} differs at {:?}", first_difference(&got, want, 4096));
                }
            }
            Err(e) => {
                assert!(e.contains("is not in the backups"), "{e}\nfiles: {:?}", keys(&files));
                if let Some(bin) = &bin {
                    let out2 = dir.path().join("theirs-refused.db");
                    let _ = std::fs::remove_file(&out2);
                    let o = run_litestream_restore(bin, &url, &out2, &["-txid", &format!("{txid:016x}")]);
                    let same_bytes = o.status.success() && std::fs::read(&out2).is_ok_and(|b| b == *want);
                    assert!(
                        !same_bytes,
                        "litestream restored {txid} exactly but litefleet refused: {}",
                        describe_output(&o)
                    );
                }
            }
        }
    }
    let compacted: BTreeSet<TxId> =
        files.iter().filter(|f| f.level > 0 && f.max_txid >= oldest).map(|f| f.max_txid).collect();
    let compacted = compacted.len();
    assert!(exact >= compacted, "only {exact} of {} boundaries restorable; files {:?}", points.len(), keys(&files));
    let got = ours(&replica, &out, None).await.unwrap();
    assert!(got == copies[&newest]);
    // The latest plan reads few files: the snapshot, then the longest compacted files.
    let plan: Vec<(u32, TxId, TxId)> = restore::plan(&replica, &Target::default())
        .await
        .unwrap()
        .iter()
        .map(|s| (s.file.level, s.file.min_txid, s.file.max_txid))
        .collect();
    let chain: Vec<(u32, TxId, TxId)> =
        cat.chain().unwrap().iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect();
    assert_eq!(plan, chain, "the restore plan is the lifecycle's chain");
    assert_eq!(plan[0].0, 9, "the plan starts at a snapshot: {plan:?}");
    assert!(plan.len() <= 6, "a plan of {} files for {newest} transactions: {plan:?}", plan.len());
    assert!(plan.iter().any(|p| p.0 == 2), "the plan uses level 2: {plan:?}");
    w.quit();
}

/// With nothing written, a settled replica needs no pass, ever: no timer, no request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_replica_needs_no_pass() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("idle.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let replica = Storage::from_url(&url, &storage::Options::default()).unwrap().replica("");
    let policy = Policy {
        levels: vec![Duration::from_secs(2)],
        snapshot_interval: Duration::from_secs(4),
        snapshot_retention: Duration::from_secs(8),
        l0_retention: Duration::from_secs(2),
        ..Policy::default()
    };
    let mut w = Writer::open(&db);
    w.cmd("insert t 10 100");
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    let mut cat = Catalog::default();
    let t0 = lifecycle::boundary(SystemTime::now(), Duration::from_secs(60));
    for f in r.sync().await.unwrap().files {
        cat.add(FileInfo { created: Some(t0), ..f });
    }
    w.cmd("insert t 1 100");
    for f in r.sync().await.unwrap().files {
        cat.add(FileInfo { created: Some(t0), ..f });
    }
    let mut now = t0;
    let mut passes = 0;
    while let Some(next) = lifecycle::next_due(&cat, &policy, now) {
        now = next.max(now);
        lifecycle::maintain(&replica, &mut cat, &policy, now).await.unwrap();
        passes += 1;
        assert!(passes < 20, "the lifecycle never settles: {cat:?}");
    }
    assert!(lifecycle::next_due(&cat, &policy, now + Duration::from_secs(86_400)).is_none());
    // The scheduler never queues it; and a pass forced a day later finds nothing to do:
    // it writes, deletes and asks nothing, and leaves the catalog as it was.
    let counters = replica.storage().counters().clone();
    let before = counters.total();
    let settled = cat.clone();
    let out = lifecycle::maintain(&replica, &mut cat, &policy, now + Duration::from_secs(86_400)).await.unwrap();
    assert!(out.written.is_empty() && out.deleted.is_empty(), "a settled replica was changed: {out:?}");
    assert_eq!(out.next, None);
    assert_eq!(counters.total(), before, "a settled replica's pass sent storage requests");
    assert_eq!(cat, settled);
    w.quit();
}

/// Litestream's own compaction (L1, snapshots, L0 retention) restores identically
/// with litefleet, at every TXID litestream can restore.
#[test]
fn litestreams_compacted_replica_restores_identically_with_ours() {
    let Some(bin) = litestream_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("theirs.db");
    let replica_dir = dir.path().join("replica");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "levels:\n  - interval: 1s\n  - interval: 3s\nsnapshot:\n  interval: 4s\n  retention: 1h\nl0-retention: 1s\nl0-retention-check-interval: 1s\ndbs:\n  - path: {}\n    replica:\n      type: file\n      path: {}\n",
            db.display(),
            replica_dir.display()
        ),
    )
    .unwrap();
    let mut w = Writer::open(&db);
    w.cmd("insert t 40 300");
    let mut child = std::process::Command::new(&bin)
        .args(["replicate", "-config", config.to_str().unwrap()])
        .env_remove("AWS_CA_BUNDLE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for step in 0..12 {
        std::thread::sleep(Duration::from_millis(700));
        w.cmd(["update t 10 200", "insert u 20 1000", "delete t 3", "insert t 5 300"][step % 4]);
    }
    std::thread::sleep(Duration::from_secs(6));
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let source = checkpointed_bytes(&db);
    w.quit();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("file://{}", replica_dir.display());
    let replica = Storage::from_url(&url, &storage::Options::default()).unwrap().replica("");
    let files = rt.block_on(replica.list_all()).unwrap();
    let levels: BTreeSet<u32> = files.iter().map(|f| f.level).collect();
    assert!(levels.contains(&1) && levels.contains(&9), "litestream wrote levels {levels:?}");
    let out = dir.path().join("ours.db");
    let got = rt.block_on(ours(&replica, &out, None)).unwrap();
    assert!(got == source, "ours latest differs at {:?}", first_difference(&got, &source, 4096));
    let points: BTreeSet<TxId> = files.iter().map(|f| f.max_txid).collect();
    for txid in points {
        let want = theirs(&bin, &url, &dir.path().join("theirs-out.db"), txid);
        let got = rt.block_on(ours(&replica, &out, Some(txid))).unwrap();
        assert!(
            got == want,
            "txid {txid:016x}: ours differs from litestream at {:?}",
            first_difference(&got, &want, 4096)
        );
    }
}
