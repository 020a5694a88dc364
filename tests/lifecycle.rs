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

/// A replica on a folder with `n` syncs of a real writer: L0 files 1..=n, and the
/// source's checkpointed bytes at the end.
async fn replica_with_syncs(dir: &Path, n: u32) -> (Replica, Replicator, Writer, std::path::PathBuf) {
    let db = dir.join("t.db");
    let url = format!("file://{}", dir.join("replica").display());
    let replica = Storage::from_url(&url, &storage::Options::default()).unwrap().replica("");
    let mut w = Writer::open(&db);
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    for i in 0..n {
        w.cmd(&format!("insert t {} 300", 3 + i));
        assert_eq!(r.sync().await.unwrap().uploaded, 1);
    }
    (replica, r, w, db)
}

fn level_file(dir: &Path, level: u32, min: TxId, max: TxId) -> std::path::PathBuf {
    dir.join(format!("replica/ltx/{level}/{}", litefleet::ltx::format_filename(min, max)))
}

/// Regression (issue 18): a full disk left a 0-byte L1 file under its final name; a
/// daemon restarted on that replica with a short `l0_retention` counted it as covering
/// L0 files 2-7 and deleted them — the only intact copies of those TXIDs. A torn file
/// covers nothing: every L0 file stays, the damage is reported, and both restorers still
/// restore the newest TXID through the L0 files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regression_a_torn_level_1_file_never_lets_retention_delete_the_l0_files_it_claims_to_cover() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, _r, w, db) = replica_with_syncs(dir.path(), 8).await;
    let torn = level_file(dir.path(), 1, 1, 7);
    std::fs::create_dir_all(torn.parent().unwrap()).unwrap();
    std::fs::write(&torn, b"").unwrap();
    let policy = Policy {
        levels: vec![],
        snapshot_interval: Duration::ZERO,
        l0_retention: Duration::from_secs(1),
        ..Policy::default()
    };
    let mut cat = Catalog::load(&replica).await.unwrap();
    let later = SystemTime::now() + Duration::from_secs(3600);
    let out = lifecycle::maintain(&replica, &mut cat, &policy, later).await.unwrap();
    assert!(out.deleted.is_empty(), "deleted on the strength of a torn file: {:?}", out.deleted);
    assert_eq!(replica.list(0).await.unwrap().len(), 8, "every L0 file stays");
    assert!(cat.damaged().any(|f| f.level == 1), "the torn L1 file is damaged: {cat:?}");
    // The chain goes around it: both tools restore the newest TXID.
    let want = checkpointed_bytes(&db);
    let got = ours(&replica, &dir.path().join("ours.db"), None).await.unwrap();
    assert!(got == want, "litefleet's restore differs from the source");
    if let Some(bin) = litestream_bin() {
        let _ = std::fs::remove_file(&torn); // Litestream itself cannot read a 0-byte file.
        let got = theirs(&bin, &replica.url(), &dir.path().join("theirs.db"), 8);
        assert!(got == want, "litestream's restore differs from the source");
    }
    w.quit();
}

/// The same with a level-1 file of the right size whose bytes are corrupt: nothing is
/// deleted on its strength until it is read and verified, and the verification fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_verifies_a_level_file_it_did_not_write_before_deleting_what_it_covers() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, _r, w, _db) = replica_with_syncs(dir.path(), 6).await;
    // A good L1 1-5 made by the compactor, then corrupted in the middle.
    let policy = Policy {
        levels: vec![Duration::from_secs(1)],
        snapshot_interval: Duration::ZERO,
        l0_retention: Duration::from_secs(1),
        ..Policy::default()
    };
    let mut cat = Catalog::load(&replica).await.unwrap();
    let t = SystemTime::now() + Duration::from_secs(10);
    let keep_l0 = Policy { l0_retention: Duration::from_secs(86_400), ..policy.clone() };
    lifecycle::maintain(&replica, &mut cat, &keep_l0, t).await.unwrap();
    let l1 = replica.list(1).await.unwrap();
    assert_eq!(l1.len(), 1, "{l1:?}");
    let path = level_file(dir.path(), 1, l1[0].min_txid, l1[0].max_txid);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    // A restarted daemon learns the replica from a listing: nothing verified yet.
    let mut fresh = Catalog::load(&replica).await.unwrap();
    let l0_before = replica.list(0).await.unwrap().len();
    let out = lifecycle::maintain(&replica, &mut fresh, &policy, t + Duration::from_secs(3600)).await.unwrap();
    assert!(out.deleted.is_empty(), "deleted on the strength of a corrupt file: {:?}", out.deleted);
    assert_eq!(replica.list(0).await.unwrap().len(), l0_before);
    assert_eq!(out.damaged.len(), 1, "{out:?}");
    assert!(out.damaged[0].1.contains("checksum"), "{:?}", out.damaged);
    // With a good L1 (this process wrote it) retention does delete.
    let mut ok = Catalog::load(&replica).await.unwrap();
    std::fs::remove_file(&path).unwrap();
    ok.remove(&l1[0]);
    lifecycle::maintain(&replica, &mut ok, &keep_l0, t + Duration::from_secs(20)).await.unwrap();
    let out = lifecycle::maintain(&replica, &mut ok, &policy, t + Duration::from_secs(3600)).await.unwrap();
    assert!(!out.deleted.is_empty(), "a verified level-1 file lets covered L0 files go");
    w.quit();
}

/// A torn L0 file in the middle of the chain breaks the restore window. The pass asks
/// for a full-page file, the replicator ships one, and the next pass turns it into a
/// level-9 snapshot: both restorers reach the newest TXID again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_window_is_repaired_from_a_requested_full_page_file() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, mut r, mut w, db) = replica_with_syncs(dir.path(), 6).await;
    std::fs::write(level_file(dir.path(), 0, 4, 4), b"").unwrap();
    let policy = Policy { levels: vec![], snapshot_interval: Duration::ZERO, ..Policy::default() };
    let mut cat = Catalog::load(&replica).await.unwrap();
    let err = ours(&replica, &dir.path().join("x.db"), None).await.unwrap_err();
    assert!(err.contains("0000000000000004-0000000000000004.ltx (0 bytes)") && err.contains("torn"), "{err}");
    let out = lifecycle::maintain(&replica, &mut cat, &policy, SystemTime::now()).await.unwrap();
    assert!(out.needs_snapshot && out.repaired.is_none(), "{out:?}");
    r.request_snapshot();
    w.cmd("insert t 2 300");
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.full_pages.len(), 1, "the requested file holds every page: {rep:?}");
    for f in rep.files {
        let full = rep.full_pages.contains(&f.max_txid);
        if full { cat.add_full_page(f) } else { cat.add_verified(f) }
    }
    let out = lifecycle::maintain(&replica, &mut cat, &policy, SystemTime::now()).await.unwrap();
    let snap = out.repaired.clone().unwrap_or_else(|| panic!("not repaired: {out:?}"));
    assert_eq!((snap.level, snap.min_txid, snap.max_txid), (9, 1, 7));
    let want = checkpointed_bytes(&db);
    assert!(ours(&replica, &dir.path().join("ours.db"), None).await.unwrap() == want);
    if let Some(bin) = litestream_bin() {
        std::fs::remove_file(level_file(dir.path(), 0, 4, 4)).unwrap();
        assert!(theirs(&bin, &replica.url(), &dir.path().join("theirs.db"), 7) == want);
    }
    w.quit();
}
