//! The replication engine judged by the real Litestream, and Litestream judged by us.
//!
//! A separate `litefleet-writer` process writes real SQLite files; our replicator
//! ships them to a folder and to an S3 server on 127.0.0.1; `litestream restore`
//! (0.5.17 for LZ4-block pages, 0.5.15 for LZ4-frame pages) and our own restore must
//! give back, byte for byte, the source as it was at each captured point.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::*;
use litefleet::ltx::PageEncoding;
use litefleet::replicate::{Replicator, Settings};
use litefleet::restore::{self, Target};
use litefleet::storage::{self, Replica, Storage};

/// The source database as it was right after a sync, and the TXID that sync reached.
struct Point {
    txid: u64,
    bytes: Vec<u8>,
    /// A moment strictly between this point's sync and the next write.
    after: SystemTime,
}

/// Where a replica lives, as we and as litestream address it.
struct Target2 {
    replica: Replica,
    litestream_url: String,
    env: Vec<(String, String)>,
    /// Whether litestream's `-timestamp` can be judged here. moto reports
    /// `LastModified` in whole seconds and litestream 0.5.17's timestamp restore on
    /// S3 depends on it, so on moto several files share one time (our
    /// `litestream-timestamp` metadata is present there; checked with boto3).
    litestream_timestamps: bool,
    _s3: Option<S3Server>,
}

fn folder_target(dir: &Path) -> Target2 {
    let url = format!("file://{}", dir.join("replica").display());
    let replica = Storage::from_url(&url, &storage::Options::default()).unwrap().replica("");
    Target2 { replica, litestream_url: url, env: vec![], litestream_timestamps: true, _s3: None }
}

fn s3_target(path: &str) -> Target2 {
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    let url = format!("s3://bkt/{path}?endpoint={}&region=us-east-1&force-path-style=true", s3.endpoint());
    let opts = storage::Options {
        access_key_id: Some(S3Server::ACCESS_KEY.into()),
        secret_access_key: Some(S3Server::SECRET_KEY.into()),
        ..Default::default()
    };
    let replica = Storage::from_url(&url, &opts).unwrap().replica("");
    Target2 {
        replica,
        litestream_url: s3.litestream_url("bkt", path),
        env: s3.litestream_env(),
        litestream_timestamps: true,
        _s3: Some(s3),
    }
}

fn settings(state: Option<PathBuf>, enc: PageEncoding) -> Settings {
    Settings { state_dir: state, page_encoding: enc, checkpoint_interval: Duration::ZERO, ..Settings::default() }
}

/// Syncs and captures the source at the TXID the sync reached.
async fn point(r: &mut Replicator, db: &Path, scratch: &Path) -> Point {
    r.sync().await.unwrap_or_else(|e| panic!("sync: {e:#}"));
    let txid = r.remote_txid().expect("a txid after sync");
    let copy = scratch.join(format!("point-{txid}.db"));
    snapshot_db(db, &copy);
    let bytes = std::fs::read(&copy).unwrap();
    tokio::time::sleep(Duration::from_millis(15)).await;
    let after = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(15)).await;
    Point { txid, bytes, after }
}

async fn ours(replica: &Replica, out: &Path, target: Target) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let opts = restore::Options { target, integrity: restore::IntegrityCheck::Full, ..Default::default() };
    restore::restore(replica, out, &opts).await.unwrap_or_else(|e| panic!("our restore to {}: {e:#}", out.display()));
    std::fs::read(out).unwrap()
}

fn theirs(bin: &Path, t: &Target2, out: &Path, args: &[&str]) -> Vec<u8> {
    let _ = std::fs::remove_file(out);
    let o = run_litestream_restore_env(bin, &t.litestream_url, out, args, &t.env);
    assert!(o.status.success(), "litestream restore {args:?} failed:\n{}", describe_output(&o));
    assert!(integrity_ok(out), "litestream's restore fails integrity_check");
    std::fs::read(out).unwrap()
}

/// Checks every point with our restore and, when available, litestream's.
async fn judge(t: &Target2, points: &[Point], bin: Option<&Path>, scratch: &Path, page_size: usize) {
    let out = scratch.join("restored.db");
    let latest = points.last().unwrap();
    same("ours latest", &ours(&t.replica, &out, Target::default()).await, &latest.bytes, page_size);
    for p in points {
        let got = ours(&t.replica, &out, Target { txid: Some(p.txid), ..Default::default() }).await;
        same(&format!("ours txid {}", p.txid), &got, &p.bytes, page_size);
        let got = ours(&t.replica, &out, Target { timestamp: Some(p.after), ..Default::default() }).await;
        same(&format!("ours at time after txid {}", p.txid), &got, &p.bytes, page_size);
    }
    let Some(bin) = bin else { return };
    same("litestream latest", &theirs(bin, t, &out, &[]), &latest.bytes, page_size);
    for p in points {
        let txid = format!("{:016x}", p.txid);
        same(&format!("litestream -txid {txid}"), &theirs(bin, t, &out, &["-txid", &txid]), &p.bytes, page_size);
        if p.txid == latest.txid || !t.litestream_timestamps {
            // Litestream refuses a time after its newest file ("timestamp does not
            // exist"); ours restores the latest state. Only earlier points compare.
            continue;
        }
        let ts = humantime::format_rfc3339_millis(p.after).to_string();
        same(&format!("litestream -timestamp {ts}"), &theirs(bin, t, &out, &["-timestamp", &ts]), &p.bytes, page_size);
    }
}

/// The scripted workload: inserts, updates, deletes, an index, growth, a VACUUM that
/// shrinks the file, and idle gaps; optionally a transaction larger than 64 MiB.
async fn workload(t: &Target2, enc: PageEncoding, page_size: u32, big: bool) -> (Vec<Point>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tenant.db");
    let mut w = Writer::spawn();
    w.cmd(&format!("open {} {page_size}", db.display()));
    w.cmd("insert t 50 200");
    let mut r = Replicator::new(&db, t.replica.clone(), settings(Some(dir.path().join("state")), enc));
    let mut points = vec![point(&mut r, &db, dir.path()).await];
    w.cmd("update t 20 300");
    points.push(point(&mut r, &db, dir.path()).await);
    w.cmd("delete t 10");
    w.cmd("exec CREATE INDEX t_v ON t(v)");
    points.push(point(&mut r, &db, dir.path()).await);
    points.push(point(&mut r, &db, dir.path()).await); // idle: nothing new, same TXID
    assert_eq!(points[2].txid, points[3].txid, "an idle sync must not ship anything");
    w.cmd("insert g 400 900"); // growth
    points.push(point(&mut r, &db, dir.path()).await);
    if big {
        w.cmd_timeout("big b 66", Duration::from_secs(120));
        points.push(point(&mut r, &db, dir.path()).await);
        w.cmd("exec DROP TABLE b");
        points.push(point(&mut r, &db, dir.path()).await);
    }
    w.cmd("delete g 390");
    w.cmd_timeout("vacuum", Duration::from_secs(60)); // shrinks the file
    points.push(point(&mut r, &db, dir.path()).await);
    w.cmd("insert t 5 100");
    points.push(point(&mut r, &db, dir.path()).await);
    r.shutdown().await.unwrap();
    w.quit();
    (points, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_restored_by_litestream_from_a_folder_including_a_64mib_transaction() {
    let home = tempfile::tempdir().unwrap();
    let t = folder_target(home.path());
    let (points, dir) = workload(&t, PageEncoding::Lz4Block, 4096, true).await;
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_restored_by_litestream_from_s3() {
    let t = s3_target("databases/0b7c1d2e-aaaa-bbbb-cccc-000000000001");
    let (points, dir) = workload(&t, PageEncoding::Lz4Block, 4096, false).await;
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ours_restored_by_litestream_from_moto() {
    let Some(moto) = MotoServer::start("bkt") else { return };
    let path = "tenants/one";
    let url = format!("s3://bkt/{path}?endpoint={}&region=us-east-1&force-path-style=true", moto.endpoint());
    let opts = storage::Options {
        access_key_id: Some("test".into()),
        secret_access_key: Some("test".into()),
        ..Default::default()
    };
    let replica = Storage::from_url(&url, &opts).unwrap().replica("");
    let t = Target2 {
        replica,
        litestream_url: moto.litestream_url(path),
        env: moto.litestream_env(),
        litestream_timestamps: false,
        _s3: None,
    };
    let (points, dir) = workload(&t, PageEncoding::Lz4Block, 4096, false).await;
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_encoded_pages_restored_by_litestream_0_5_15() {
    let home = tempfile::tempdir().unwrap();
    let t = folder_target(home.path());
    let (points, dir) = workload(&t, PageEncoding::Lz4Frame, 4096, false).await;
    judge(&t, &points, litestream_015_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_sizes_512_and_65536() {
    for ps in [512u32, 65536] {
        let home = tempfile::tempdir().unwrap();
        let t = folder_target(home.path());
        let (points, dir) = workload(&t, PageEncoding::Lz4Block, ps, false).await;
        judge(&t, &points, litestream_bin().as_deref(), dir.path(), ps as usize).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_txids_with_and_without_local_state() {
    let dir = tempfile::tempdir().unwrap();
    let t = folder_target(dir.path());
    let db = dir.path().join("a.db");
    let state = dir.path().join("state");
    let mut w = Writer::open(&db);
    w.cmd("insert t 20 100");
    let mut points = Vec::new();
    {
        let mut r = Replicator::new(&db, t.replica.clone(), settings(Some(state.clone()), PageEncoding::Lz4Block));
        points.push(point(&mut r, &db, dir.path()).await);
        w.cmd("insert t 3 100");
        points.push(point(&mut r, &db, dir.path()).await);
        r.release().await.unwrap();
    }
    // Stopped; the application keeps writing.
    w.cmd("insert t 4 100");
    w.cmd("update t 2 50");
    let mut r = Replicator::new(&db, t.replica.clone(), settings(Some(state.clone()), PageEncoding::Lz4Block));
    let rep = r.sync().await.unwrap();
    assert!(rep.snapshots.is_empty(), "with the state dir the restart continues incrementally: {rep:?}");
    assert_eq!(rep.txid, Some(3));
    assert_eq!(rep.transactions, 2);
    points.push(point(&mut r, &db, dir.path()).await);
    r.release().await.unwrap();
    drop(r);
    // Lost local state: the next file is a full-page L0, and TXIDs still continue.
    std::fs::remove_dir_all(&state).unwrap();
    w.cmd("insert t 1 100");
    let mut r = Replicator::new(&db, t.replica.clone(), settings(Some(state.clone()), PageEncoding::Lz4Block));
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.txid, Some(4));
    assert_eq!(rep.snapshots.len(), 1, "{rep:?}");
    points.push(point(&mut r, &db, dir.path()).await);
    r.shutdown().await.unwrap();
    w.quit();
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

/// Size of the L0 file with this TXID.
async fn l0_size(replica: &Replica, txid: u64) -> u64 {
    replica.list(0).await.unwrap().iter().find(|f| f.max_txid == txid).map(|f| f.size).expect("the L0 file")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_gap_only_changed_pages_ship_and_a_restart_ships_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = folder_target(dir.path());
    let db = dir.path().join("a.db");
    let state = dir.path().join("state");
    let s = || settings(Some(state.clone()), PageEncoding::Lz4Block);
    let mut w = Writer::open(&db);
    w.cmd("insert t 400 3000"); // ~400 pages of incompressible rows: past pages::MIN_PAGES
    let mut r = Replicator::new(&db, t.replica.clone(), s());
    let mut points = vec![point(&mut r, &db, dir.path()).await];
    let full = l0_size(&t.replica, points[0].txid).await;
    assert!(full > 1_000_000, "first file holds every page: {full} bytes");
    r.release().await.unwrap();
    let table =
        std::fs::read_dir(&state).unwrap().flatten().find(|e| e.path().extension().is_some_and(|x| x == "pages"));
    assert!(table.is_some(), "a released tenant keeps its page table in the state dir");

    // Cold, the application writes and closes its last connection: SQLite checkpoints
    // and deletes the WAL, so the frames are gone; only the changed pages ship.
    w.cmd("update t 2 3000");
    w.cmd("close");
    assert!(!wal_path(&db).exists(), "the application's last close removes the WAL");
    let rep = r.sync().await.unwrap();
    assert!(rep.snapshots.is_empty(), "no full-page file after the gap: {rep:?}");
    assert_eq!(rep.uploaded, 1);
    points.push(point(&mut r, &db, dir.path()).await);
    let diff = l0_size(&t.replica, points[1].txid).await;
    assert!(diff < full / 20, "only the changed pages: {diff} bytes vs {full}");

    // A restart with the database untouched ships nothing at all.
    r.shutdown().await.unwrap();
    drop(r);
    let mut r = Replicator::new(&db, t.replica.clone(), s());
    let rep = r.sync().await.unwrap();
    assert_eq!((rep.uploaded, r.remote_txid()), (0, Some(points[1].txid)), "{rep:?}");
    r.release().await.unwrap();

    // The table follows incremental files too: write with the tenant hot, go cold,
    // write and close again; the next file is still only the difference.
    w.cmd(&format!("open {}", db.display()));
    w.cmd("insert t 30 3000");
    points.push(point(&mut r, &db, dir.path()).await);
    r.release().await.unwrap();
    w.cmd("update t 1 3000");
    w.cmd("delete t 5");
    w.cmd("close");
    let rep = r.sync().await.unwrap();
    assert!(rep.snapshots.is_empty(), "{rep:?}");
    points.push(point(&mut r, &db, dir.path()).await);
    assert!(l0_size(&t.replica, points[3].txid).await < full / 10);
    r.release().await.unwrap();

    // A damaged table is never trusted: the next gap ships every page.
    for e in std::fs::read_dir(&state).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "pages") {
            let mut b = std::fs::read(e.path()).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0xff;
            std::fs::write(e.path(), b).unwrap();
        }
    }
    w.cmd(&format!("open {}", db.display()));
    w.cmd("update t 1 3000");
    w.cmd("close");
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.snapshots.len(), 1, "{rep:?}");
    points.push(point(&mut r, &db, dir.path()).await);
    r.shutdown().await.unwrap();
    w.quit();
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_truncate_checkpoint_and_replaced_file_still_restore() {
    let dir = tempfile::tempdir().unwrap();
    let t = folder_target(dir.path());
    let db = dir.path().join("a.db");
    let mut w = Writer::open(&db);
    w.cmd("insert t 30 100");
    let mut r = Replicator::new(&db, t.replica.clone(), settings(None, PageEncoding::Lz4Block));
    let mut points = vec![point(&mut r, &db, dir.path()).await];
    // While we hold our read lock, the application's TRUNCATE cannot reset the WAL.
    w.cmd("insert t 5 100");
    let (busy, _, _) = w.checkpoint("truncate");
    assert_eq!(busy, 1, "our read transaction must keep the WAL from being truncated");
    points.push(point(&mut r, &db, dir.path()).await);
    // Released (idle), the application truncates and writes on: we must notice.
    r.release().await.unwrap();
    w.cmd("insert t 5 100");
    let (busy, _, _) = w.checkpoint("truncate");
    assert_eq!(busy, 0);
    w.cmd("insert t 5 100");
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.snapshots.len(), 1, "a truncated WAL after a gap must be a snapshot: {rep:?}");
    points.push(point(&mut r, &db, dir.path()).await);
    // The file is replaced by rename(2) with another database.
    let other = dir.path().join("other.db");
    let mut w2 = Writer::open(&other);
    w2.cmd("insert z 7 333");
    w2.quit();
    std::fs::rename(&other, &db).unwrap();
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.snapshots.len(), 1, "a replaced file must be a snapshot: {rep:?}");
    points.push(point(&mut r, &db, dir.path()).await);
    r.shutdown().await.unwrap();
    drop(w);
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_keep_the_wal_bounded_and_the_chain_incremental() {
    let dir = tempfile::tempdir().unwrap();
    let t = folder_target(dir.path());
    let db = dir.path().join("a.db");
    let mut w = Writer::open(&db);
    let s = Settings { min_checkpoint_pages: 20, ..settings(None, PageEncoding::Lz4Block) };
    let mut r = Replicator::new(&db, t.replica.clone(), s);
    let mut points = Vec::new();
    let mut checkpoints = 0;
    for _ in 0..12 {
        w.cmd("insert t 30 500");
        let rep = r.sync().await.unwrap();
        checkpoints += rep.checkpointed as usize;
        assert!(rep.snapshots.len() <= usize::from(points.is_empty()), "only the first file is a snapshot: {rep:?}");
        points.push(point(&mut r, &db, dir.path()).await);
    }
    assert!(checkpoints >= 3, "expected several checkpoints, got {checkpoints}");
    let wal = std::fs::metadata(wal_path(&db)).unwrap().len();
    assert!(wal < 200 * 4200, "WAL stays bounded by checkpoints: {wal} bytes");
    r.shutdown().await.unwrap();
    w.quit();
    judge(&t, &points, litestream_bin().as_deref(), dir.path(), 4096).await;
}

/// Litestream writes; our restore must equal litestream's at every TXID.
#[test]
fn theirs_restored_by_ours_at_every_txid() {
    let Some(bin) = litestream_bin() else { return };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("theirs.db");
    let rep_url = format!("file://{}", dir.path().join("replica").display());
    let mut w = Writer::open(&db);
    w.cmd("insert t 40 300");
    let mut child = std::process::Command::new(&bin)
        .args(["replicate", db.to_str().unwrap(), &rep_url])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for step in ["update t 10 200", "insert u 100 1000", "delete t 5", "insert t 3 10"] {
        std::thread::sleep(Duration::from_millis(1300));
        w.cmd(step);
    }
    std::thread::sleep(Duration::from_millis(2500));
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let _ = child.wait();
    let source = checkpointed_bytes(&db);
    w.quit();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replica = Storage::from_url(&rep_url, &storage::Options::default()).unwrap().replica("");
    let files = rt.block_on(replica.list(0)).unwrap();
    assert!(files.len() >= 3, "litestream wrote {} L0 files", files.len());
    let t = Target2 {
        replica: replica.clone(),
        litestream_url: rep_url.clone(),
        env: vec![],
        litestream_timestamps: true,
        _s3: None,
    };
    let out = dir.path().join("ours.db");
    let got = rt.block_on(ours(&replica, &out, Target::default()));
    same("ours latest vs source", &got, &source, 4096);
    for f in &files {
        let txid = format!("{:016x}", f.max_txid);
        let want = theirs(&bin, &t, &dir.path().join("theirs-out.db"), &["-txid", &txid]);
        let got = rt.block_on(ours(&replica, &out, Target { txid: Some(f.max_txid), ..Default::default() }));
        same(&format!("txid {txid}"), &got, &want, 4096);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = folder_target(dir.path());
    // Not SQLite.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"PK\x03\x04 this is a zip file, not a database, padded to be long enough........................................").unwrap();
    let mut r = Replicator::new(&junk, t.replica.clone(), Settings::default());
    let e = r.sync().await.unwrap_err().to_string();
    assert!(e.contains("junk.db") && e.contains("not a SQLite database") && e.contains("PK\\x03\\x04"), "{e}");
    // Rollback-journal mode: switched to WAL (the default) or refused (with the flag).
    let rb = dir.path().join("rollback.db");
    {
        let c = rusqlite::Connection::open(&rb).unwrap();
        c.execute_batch("PRAGMA journal_mode=DELETE; CREATE TABLE x(y); INSERT INTO x VALUES(1);").unwrap();
    }
    let mut refuse =
        Replicator::new(&rb, t.replica.clone(), Settings { refuse_rollback_journal: true, ..Settings::default() });
    let e = refuse.sync().await.unwrap_err().to_string();
    assert!(e.contains("rollback-journal"), "{e}");
    let rt = Storage::from_url(&format!("file://{}", dir.path().join("rb").display()), &storage::Options::default())
        .unwrap();
    let mut r = Replicator::new(&rb, rt.replica(""), Settings::default());
    r.sync().await.unwrap();
    assert_eq!(std::fs::read(&rb).unwrap()[18], 2, "database switched to WAL");
    r.shutdown().await.unwrap();
    // An S3 endpoint nobody listens on: a clear error, no crash.
    let closed = free_port();
    let opts =
        storage::Options { access_key_id: Some("a".into()), secret_access_key: Some("b".into()), ..Default::default() };
    let s = Storage::from_url(&format!("s3://bkt/x?endpoint=http://127.0.0.1:{closed}"), &opts).unwrap();
    let db = dir.path().join("ok.db");
    let mut w = Writer::open(&db);
    w.cmd("insert t 10 100");
    let mut r = Replicator::new(&db, s.replica(""), Settings::default());
    let e = tokio::time::timeout(Duration::from_secs(60), r.sync()).await.expect("bounded").unwrap_err();
    assert!(format!("{e:#}").contains("list"), "{e:#}");
    // A bucket that does not exist yet: errors until it does, then nothing is lost.
    let s3 = S3Server::start();
    let opts = storage::Options {
        access_key_id: Some(S3Server::ACCESS_KEY.into()),
        secret_access_key: Some(S3Server::SECRET_KEY.into()),
        ..Default::default()
    };
    let s = Storage::from_url(&format!("s3://late/x?endpoint={}", s3.endpoint()), &opts).unwrap();
    let mut r = Replicator::new(&db, s.replica(""), Settings::default());
    assert!(r.sync().await.is_err());
    w.cmd("insert t 10 100");
    assert!(r.sync().await.is_err());
    s3.create_bucket("late");
    r.sync().await.unwrap();
    let out = dir.path().join("late.db");
    let got = ours(&s.replica(""), &out, Target::default()).await;
    same("restore after the bucket appeared", &got, &checkpointed_bytes(&db), 4096);
    r.shutdown().await.unwrap();
    w.quit();
    // Restore refuses to overwrite, and fails whole on a gap or a corrupt file.
    let src = dir.path().join("src.db");
    let mut w = Writer::open(&src);
    let mut r = Replicator::new(&src, t.replica.clone(), Settings::default());
    for _ in 0..4 {
        w.cmd("insert t 5 100");
        r.sync().await.unwrap();
    }
    r.shutdown().await.unwrap();
    w.quit();
    let exists = dir.path().join("exists.db");
    std::fs::write(&exists, b"keep me").unwrap();
    let e = restore::restore(&t.replica, &exists, &Default::default()).await.unwrap_err().to_string();
    assert!(e.contains("exists") && e.contains("--force"), "{e}");
    assert_eq!(std::fs::read(&exists).unwrap(), b"keep me");
    let l0 = dir.path().join("replica/ltx/0");
    let third = l0.join("0000000000000003-0000000000000003.ltx");
    let saved = std::fs::read(&third).unwrap();
    let mut bad = saved.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&third, &bad).unwrap();
    let out = dir.path().join("never.db");
    let e = restore::restore(&t.replica, &out, &Default::default()).await.unwrap_err().to_string();
    assert!(e.contains("0000000000000003-0000000000000003.ltx"), "the error names the corrupt file: {e}");
    assert!(!out.exists() && !dir.path().join("never.db.tmp").exists(), "no partial output");
    std::fs::remove_file(&third).unwrap();
    let e = restore::restore(&t.replica, &out, &Default::default()).await.unwrap_err().to_string();
    assert!(e.contains("gap") && e.contains("0000000000000002"), "{e}");
    assert!(!out.exists() && !dir.path().join("never.db.tmp").exists(), "no partial output");
}

/// The CLI end to end: `litefleet replicate` until SIGINT (final sync, exit 0), then
/// `litefleet restore --dry-run` and a restore.
#[test]
fn cli_replicate_until_sigint_then_restore() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.db");
    let rep = format!("file://{}", dir.path().join("replica").display());
    let mut w = Writer::open(&db);
    w.cmd("insert t 10 100");
    let bin = env!("CARGO_BIN_EXE_litefleet");
    let mut child = std::process::Command::new(bin)
        .args(["replicate", db.to_str().unwrap(), &rep, "--sync-interval", "50ms"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let l0 = dir.path().join("replica/ltx/0");
    let count = || std::fs::read_dir(&l0).map(|d| d.count()).unwrap_or(0);
    assert!(wait_until(Duration::from_secs(20), Duration::from_millis(20), || count() >= 1));
    for _ in 0..3 {
        w.cmd("insert t 3 100");
        std::thread::sleep(Duration::from_millis(120));
    }
    w.cmd("update t 2 10"); // right before the signal: the final sync ships it
    let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    let source = checkpointed_bytes(&db);
    w.quit();
    let plan = std::process::Command::new(bin).args(["restore", &rep, "-o", "x.db", "--dry-run"]).output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout).to_string();
    assert!(plan.lines().next().unwrap_or_default().starts_with("L0 0000000000000001-0000000000000001"), "{plan}");
    let out = dir.path().join("out.db");
    let o = std::process::Command::new(bin)
        .args(["restore", &rep, "-o", out.to_str().unwrap(), "--integrity-check", "full"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", describe_output(&o));
    same("cli restore", &std::fs::read(&out).unwrap(), &source, 4096);
}
