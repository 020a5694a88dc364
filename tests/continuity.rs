//! Nothing committed is ever missed, and nothing unchanged ships twice: checkpoints
//! under a writer that never pauses, restarts and `kill -9` of the replicator, a
//! database changed while nobody watched (VACUUM, a new page size), and files larger
//! than memory should hold, streamed to S3.
//!
//! Every database is written by a separate `litefleet-writer` process; every replica is
//! restored (by us and, when available, by `litestream restore`) and compared byte for
//! byte with the source.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use litefleet::replicate::{Replicator, Settings};
use litefleet::restore;
use litefleet::storage::{self, Replica, Storage};

fn folder(dir: &Path) -> (Replica, String) {
    let url = format!("file://{}", dir.join("replica").display());
    (Storage::from_url(&url, &storage::Options::default()).unwrap().replica(""), url)
}

fn l0_count(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("replica/ltx/0")).map(|d| d.count()).unwrap_or(0)
}

/// Restores the replica (ours, and Litestream's when available) and compares it with
/// the source as it is now.
async fn restores_to(replica: &Replica, url: &str, db: &Path, scratch: &Path, page_size: usize) {
    let want = checkpointed_bytes(db);
    let out = scratch.join("restored.db");
    let _ = std::fs::remove_file(&out);
    let opts = restore::Options { integrity: restore::IntegrityCheck::Full, ..Default::default() };
    restore::restore(replica, &out, &opts).await.unwrap_or_else(|e| panic!("restore: {e:#}"));
    same("ours", &std::fs::read(&out).unwrap(), &want, page_size);
    if let Some(bin) = litestream_bin() {
        let out = scratch.join("theirs.db");
        let _ = std::fs::remove_file(&out);
        let o = run_litestream_restore(&bin, url, &out, &[]);
        assert!(o.status.success(), "litestream restore failed:\n{}", describe_output(&o));
        same("litestream", &std::fs::read(&out).unwrap(), &want, page_size);
    }
}

/// A `litefleet-writer --script` process: commits the script's lines as fast as it can.
fn script_writer(dir: &Path, db: &Path, lines: &[String]) -> Child {
    let script = dir.join("writer.script");
    let mut text = format!("open {}\npragma synchronous=NORMAL\n", db.display());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&script, text).unwrap();
    Command::new(writer_bin()).args(["--script", script.to_str().unwrap()]).stdout(Stdio::null()).spawn().unwrap()
}

/// The bug this pins: a checkpoint held the application's write lock while it encoded
/// the backlog and copied the whole WAL (a 0.4 s commit stall). Now the barrier covers
/// a copy of the last frames only; under a writer that never pauses, the replicator
/// syncs and checkpoints (hand-off, backfill, deferred and forced restarts) every few
/// milliseconds, and every transaction must still reach the replica with the log
/// restarting along the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_under_a_writer_that_never_pauses_lose_no_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("busy.db");
    let (replica, url) = folder(dir.path());
    Writer::open(&db).cmd("insert t 1 100");
    let lines: Vec<String> = (0..8_000)
        .map(|i| match i % 10 {
            0 => "update t 5 3000".to_owned(),
            1 => "delete t 1".to_owned(),
            _ => "insert t 1 3000".to_owned(),
        })
        .collect();
    let settings = Settings { min_checkpoint_pages: 16, checkpoint_interval: Duration::ZERO, ..Settings::default() };
    let mut r = Replicator::new(&db, replica.clone(), settings);
    let mut w = script_writer(dir.path(), &db, &lines);
    let (mut checkpoints, mut syncs) = (0, 0);
    // Every log restart starts a generation with a new salt-1 in the WAL header.
    let mut generations = std::collections::BTreeSet::new();
    let status = loop {
        let rep = r.sync().await.unwrap_or_else(|e| panic!("sync: {e:#}"));
        checkpoints += usize::from(rep.checkpointed);
        syncs += 1;
        if let Some(status) = w.try_wait().unwrap() {
            break status;
        }
        let mut head = [0u8; 32];
        if let Ok(f) = std::fs::File::open(wal_path(&db))
            && std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).is_ok()
        {
            generations.insert(head[16..20].to_vec());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    };
    assert!(status.success(), "writer: {status}");
    r.shutdown().await.unwrap();
    assert!(checkpoints >= 5, "expected many checkpoints, got {checkpoints} in {syncs} syncs");
    assert!(
        generations.len() >= 3,
        "the log must restart while the writer runs: {} generations seen",
        generations.len()
    );
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
}

/// Frames the application's own PASSIVE checkpoint reports as backfilled.
fn backfilled_by_the_application(db: &Path) -> i64 {
    let mut app = Writer::open(db);
    let out = app.cmd("checkpoint passive");
    out.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("checkpoint answered {out:?}"))
}

/// With `r`'s reader on read mark 0 (the WAL was fully backfilled when it began): the
/// next commits restart the log behind it and nothing can be backfilled; the next sync
/// ships them and moves the mark (no checkpoint is due: 5 frames), after which the
/// application's own checkpoint backfills up to it. Then the replica must restore.
async fn leaves_read_mark_zero_at_the_next_sync(
    w: &mut Writer,
    mut r: Replicator,
    replica: &Replica,
    url: &str,
    db: &Path,
    scratch: &Path,
) {
    for _ in 0..5 {
        w.cmd("insert t 1 3000");
    }
    assert_eq!(backfilled_by_the_application(db), 0, "our reader should hold read mark 0");
    let rep = r.sync().await.unwrap();
    assert!(!rep.checkpointed && rep.uploaded == 1, "{rep:?}");
    for _ in 0..3 {
        w.cmd("insert t 1 3000");
    }
    let done = backfilled_by_the_application(db);
    assert!(done >= 5, "the WAL should be backfilled up to our new mark, got {done} frames");
    r.shutdown().await.unwrap();
    restores_to(replica, url, db, scratch, 4096).await;
}

/// The bug this pins: once our checkpoint had restarted the log, our read transaction
/// sat on read mark 0 until the next checkpoint. Mark 0 forbids any backfill, and every
/// auto-checkpoint of the application (one per commit past 1,000 frames) sorted the
/// whole WAL to find it could copy nothing: 10,000 commits took 3.3 s instead of 0.3 s.
/// Now the mark moves once the restarted log holds a commit, and the application's
/// checkpoints find the WAL backfilled up to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_log_restarts_our_read_mark_leaves_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("marks.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    for _ in 0..40 {
        w.cmd("insert t 1 3000");
    }
    let settings = Settings { min_checkpoint_pages: 16, ..Settings::default() };
    let mut r = Replicator::new(&db, replica.clone(), settings);
    let rep = r.sync().await.unwrap();
    assert!(rep.checkpointed, "40 frames past min_checkpoint_pages: {rep:?}");
    leaves_read_mark_zero_at_the_next_sync(&mut w, r, &replica, &url, &db, dir.path()).await;
}

/// The same, after our connection opens on a WAL the application has just backfilled
/// whole (its own auto-checkpoint, while the tenant was cold): SQLite gives our read
/// transaction mark 0 then too, and it stayed there until our next checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_on_a_backfilled_wal_does_not_leave_our_read_mark_on_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("opened.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    for _ in 0..20 {
        w.cmd("insert t 1 3000");
    }
    let (_, log, done) = w.checkpoint("passive");
    assert!(log > 0 && done == log, "the application backfills the whole WAL: {log} {done}");
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    r.sync().await.unwrap();
    leaves_read_mark_zero_at_the_next_sync(&mut w, r, &replica, &url, &db, dir.path()).await;
}

/// The WAL's progress as SQLite's wal-index says now, read through a connection: a
/// file descriptor of our own on the `-shm`, once closed, would drop every POSIX lock
/// this process holds on it, the replicator's read mark included.
fn progress(db: &Path) -> litefleet::sqlite::WalProgress {
    let c = rusqlite::Connection::open(db).unwrap();
    litefleet::sqlite::begin_read(&c).unwrap();
    let p = litefleet::sqlite::wal_progress(&c).expect("a wal-index");
    c.execute_batch("COMMIT").unwrap();
    p
}

/// Salt-1 of the WAL's header: a new one for each generation (the log restarted).
fn wal_salt(db: &Path) -> Vec<u8> {
    std::fs::read(wal_path(db)).unwrap()[16..20].to_vec()
}

/// One commit of 16 rows of 64 KiB: ~260 frames.
const BULK: &str = "insert t 16 65536";

/// Checks that the replicator backfilled the two bulk commits below its read mark
/// (and nothing is left above it), and returns the progress it saw.
fn bulk_backfilled_by_us(db: &Path) -> litefleet::sqlite::WalProgress {
    let p = progress(db);
    assert!(p.backfilled >= 500 && p.not_backfilled() == 0, "the bulk should be backfilled by us: {p:?}");
    p
}

/// The bug this pins: a tenant woken by a bulk write opened its read transaction with
/// the application's frames below its mark, and the application's next auto-checkpoint
/// (at 1,000 frames) copied them and `fsync`ed the WAL inside one of its commits: the
/// slowest commit of a 1 MiB burst (docs/benchmarks.md §8). Now the replicator copies
/// them itself as soon as it opens. A small gap waits for its next checkpoint, and
/// nothing here lets the log restart before we shipped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_woken_by_a_bulk_write_backfills_it_before_the_application_must() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("woken.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    w.cmd("insert t 1 3000");
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    r.idle(false).await.unwrap();
    // Cold; one small commit: left alone.
    w.cmd("insert t 1 3000");
    r.sync().await.unwrap();
    let p = progress(&db);
    assert!(p.max_frame > 0 && p.backfilled == 0, "a small gap is not copied at once: {p:?}");
    r.idle(false).await.unwrap();
    // Cold; two bulk commits: copied as soon as we open.
    w.cmd(BULK);
    w.cmd(BULK);
    r.sync().await.unwrap();
    let p = bulk_backfilled_by_us(&db);
    // The application writes on past its auto-checkpoint: nothing left for it to copy,
    // and our read mark keeps the log from restarting.
    let salt = wal_salt(&db);
    for _ in 0..4 {
        w.cmd(BULK);
    }
    let later = progress(&db);
    assert_eq!(wal_salt(&db), salt, "the log restarted under our read mark");
    assert_eq!(later.backfilled, p.backfilled, "nothing may be backfilled past our mark: {later:?}");
    r.shutdown().await.unwrap();
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
}

/// The same when our read mark leaves 0 after our checkpoint restarted the log: it moves
/// to the end of the WAL, and the bulk the application wrote meanwhile is copied at once
/// (it waited for a WAL of `min_checkpoint_pages` before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_written_behind_read_mark_zero_is_backfilled_when_the_mark_moves() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("moved.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    w.cmd("pragma wal_autocheckpoint=0");
    for _ in 0..4 {
        w.cmd(BULK);
    }
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    let rep = r.sync().await.unwrap();
    assert!(rep.checkpointed, "1,040 frames: a checkpoint, and the log restarts: {rep:?}");
    w.cmd(BULK);
    w.cmd(BULK);
    assert_eq!(progress(&db).backfilled, 0, "our reader should hold read mark 0");
    let rep = r.sync().await.unwrap();
    assert!(!rep.checkpointed, "520 frames: no checkpoint due: {rep:?}");
    bulk_backfilled_by_us(&db);
    r.shutdown().await.unwrap();
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
}

/// A sync ships what was committed when it began. A writer that commits faster than
/// files ship is left to the next sync (the tenant task paces those at `sync_interval`)
/// instead of being chased in one sync that lasts as long as the writer writes and
/// competes with it for the CPU the whole time (1 MiB transactions waited 2-3x longer
/// than under Litestream, docs/benchmarks.md §8). Nothing is lost on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_ships_what_was_committed_when_it_began_and_leaves_the_rest_to_the_next() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("outrun.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    w.cmd("insert t 1 3000");
    // One transaction per file: each file is an upload of its own, slower than a commit.
    let settings = Settings { max_sync_wal_bytes: 1, ..Settings::default() };
    let mut r = Replicator::new(&db, replica.clone(), settings);
    r.sync().await.unwrap();
    for _ in 0..100 {
        w.cmd("insert t 1 3000");
    }
    // A second process commits continuously until told to stop.
    let (stop, commits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = {
        let (db, stop, commits) = (db.clone(), stop.clone(), commits.clone());
        std::thread::spawn(move || {
            let mut w = Writer::open(&db);
            while !stop.load(Ordering::Acquire) {
                w.cmd("insert t 1 3000");
                commits.fetch_add(1, Ordering::AcqRel);
            }
            w.quit();
        })
    };
    assert!(wait_until(Duration::from_secs(30), Duration::from_millis(5), || commits.load(Ordering::Acquire) > 0));
    let synced = tokio::time::timeout(Duration::from_secs(60), r.sync()).await;
    let running = !writer.is_finished();
    stop.store(true, Ordering::Release);
    writer.join().unwrap();
    let rep = synced.expect("the sync chased the writer instead of stopping where the WAL ended").unwrap();
    assert!(running);
    assert!(rep.more, "a writer committing throughout should have left work for the next sync: {rep:?}");
    assert!(rep.transactions >= 100, "what was committed before the sync began must ship: {rep:?}");
    // The writer is done: the following syncs ship the rest, and none is left over.
    let mut rounds = 0;
    while r.sync().await.unwrap().more {
        rounds += 1;
        assert!(rounds < 10_000, "syncs never caught up with a stopped writer");
    }
    r.shutdown().await.unwrap();
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
}

/// The bug this pins: databases under 256 pages had no page table, so a restart (or a
/// crash) shipped a full-page file for every small tenant whose application had closed
/// its connection (SQLite deletes the WAL then). Now the position cache holds a digest
/// of the replica's database: an unchanged database ships nothing after a restart, a
/// changed one ships, and changes made while nobody watched (VACUUM, a new page size)
/// are found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_ship_nothing_for_an_unchanged_small_database_and_every_change_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("small.db");
    let (replica, url) = folder(dir.path());
    let state = dir.path().join("state");
    let restart = |r: Option<Replicator>| {
        drop(r);
        Replicator::new(&db, replica.clone(), Settings { state_dir: Some(state.clone()), ..Settings::default() })
    };
    let mut w = Writer::open(&db);
    w.cmd("insert t 20 200");
    let mut r = restart(None);
    r.sync().await.unwrap();
    r.shutdown().await.unwrap();
    // The application closes its last connection: SQLite checkpoints and deletes the WAL.
    w.cmd("close");
    assert!(!wal_path(&db).exists());
    for round in 0..2 {
        let mut r = restart(None);
        let rep = r.sync().await.unwrap();
        assert_eq!(rep.uploaded, 0, "restart {round} of an unchanged database shipped {rep:?}");
        r.shutdown().await.unwrap();
    }
    // Changed while the replicator was down: it ships, and restores.
    w.cmd(&format!("open {}", db.display()));
    w.cmd("update t 3 200");
    w.cmd("close");
    let mut r = restart(None);
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.uploaded, 1, "{rep:?}");
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
    r.release().await.unwrap();
    // VACUUM while cold (released, not restarted).
    w.cmd(&format!("open {}", db.display()));
    w.cmd("delete t 10");
    w.cmd("vacuum");
    w.cmd("close");
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.uploaded, 1, "{rep:?}");
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
    r.shutdown().await.unwrap();
    // A new page size while the replicator was down (only possible outside WAL mode).
    w.cmd(&format!("open {}", db.display()));
    w.cmd("exec PRAGMA journal_mode=DELETE; PRAGMA page_size=8192");
    w.cmd("vacuum");
    w.cmd("exec PRAGMA journal_mode=WAL");
    w.cmd("insert t 2 200");
    let mut r = restart(Some(r));
    let rep = r.sync().await.unwrap();
    assert_eq!(rep.snapshots.len(), 1, "a new page size ships every page: {rep:?}");
    r.shutdown().await.unwrap();
    w.quit();
    // (A chain whose page size changes cannot be restored through; the full-page file
    // itself must hold the new database.)
    let f = replica.list(0).await.unwrap().pop().unwrap();
    let bytes = replica.read(&f).await.unwrap().to_vec();
    let mut dec = litefleet::ltx::Decoder::new(&bytes[..]).unwrap();
    let mut image = Vec::new();
    let mut page = vec![0u8; 8192];
    while let Some(pgno) = dec.decode_page(&mut page).unwrap() {
        image.resize(pgno as usize * 8192, 0);
        image[(pgno as usize - 1) * 8192..].copy_from_slice(&page);
    }
    same("the full-page file after the page-size change", &image, &checkpointed_bytes(&db), 8192);
    let mut r = restart(None);
    assert_eq!(r.sync().await.unwrap().uploaded, 0, "unchanged after the page-size change");
    r.shutdown().await.unwrap();
}

/// `litefleet replicate` as its own process, killed with SIGKILL at arbitrary moments
/// while another process writes, and started again each time: nothing is lost, and
/// once the writer is done a restart — clean or after a `kill -9` — uploads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_sync_loses_nothing_and_an_unchanged_restart_uploads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let (replica, url) = folder(dir.path());
    let state = dir.path().join("state");
    let replicate = || -> Child {
        Command::new(env!("CARGO_BIN_EXE_litefleet"))
            .args(["replicate", db.to_str().unwrap(), &url, "--sync-interval", "10ms", "--min-checkpoint-pages", "32"])
            .args(["--state-dir", state.to_str().unwrap()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let stop = |mut c: Child, signal: &str| {
        let _ = Command::new("kill").args([signal, &c.id().to_string()]).status();
        let status = c.wait().unwrap();
        if signal == "-INT" {
            assert!(status.success(), "replicate exited with {status}");
        }
    };
    Writer::open(&db).cmd("insert t 1 100");
    let lines: Vec<String> =
        (0..1500).map(|i| if i % 50 == 0 { "sleep 20".to_owned() } else { "insert t 1 1500".to_owned() }).collect();
    let mut w = script_writer(dir.path(), &db, &lines);
    let mut kills = 0;
    while w.try_wait().unwrap().is_none() {
        let c = replicate();
        std::thread::sleep(Duration::from_millis(150 + 70 * (kills % 5)));
        stop(c, "-KILL");
        kills += 1;
    }
    assert!(w.wait().unwrap().success());
    assert!(kills >= 3, "the writer finished too early to test anything ({kills} kills)");
    // One clean run ships what is left.
    let c = replicate();
    let l0 = dir.path().join("replica/ltx/0");
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(300), {
        let mut last = usize::MAX;
        move || {
            let n = std::fs::read_dir(&l0).map(|d| d.count()).unwrap_or(0);
            std::mem::replace(&mut last, n) == n
        }
    });
    assert!(settled);
    stop(c, "-INT");
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
    // Unchanged from now on. The application opens and closes it once more: SQLite
    // checkpoints and deletes the WAL, so the next start has only the digest to go by.
    let c = rusqlite::Connection::open(&db).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |_| Ok(())).unwrap();
    drop(c);
    assert!(!wal_path(&db).exists());
    let files = l0_count(dir.path());
    let c = replicate();
    std::thread::sleep(Duration::from_millis(800));
    stop(c, "-KILL");
    let c = replicate();
    std::thread::sleep(Duration::from_millis(800));
    stop(c, "-INT");
    assert_eq!(l0_count(dir.path()), files, "restarts of an unchanged database uploaded files");
}

/// A full-page file larger than an upload part goes to S3 as a multipart upload
/// written while it is encoded (bounded memory), and a compaction of it streams too;
/// both restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_larger_than_an_upload_part_streams_to_s3_and_restores() {
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    let url = format!("s3://bkt/big?endpoint={}&region=us-east-1&force-path-style=true", s3.endpoint());
    let opts = storage::Options {
        access_key_id: Some(S3Server::ACCESS_KEY.into()),
        secret_access_key: Some(S3Server::SECRET_KEY.into()),
        ..Default::default()
    };
    let replica = Storage::from_url(&url, &opts).unwrap().replica("");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let mut w = Writer::open(&db);
    w.cmd_timeout("big t 20", Duration::from_secs(60)); // 20 MiB: more than two parts
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    let rep = r.sync().await.unwrap();
    assert_eq!((rep.uploaded, rep.snapshots.len()), (1, 1), "{rep:?}");
    assert!(rep.bytes > (storage::UPLOAD_PART as u64) * 2, "{rep:?}");
    w.cmd("update t 3 1000");
    r.sync().await.unwrap();
    r.shutdown().await.unwrap();
    w.quit();
    let theirs = s3.litestream_url("bkt", "big");
    let restored = |replica: Replica, db: PathBuf, scratch: PathBuf| async move {
        let out = scratch.join("out.db");
        let _ = std::fs::remove_file(&out);
        restore::restore(&replica, &out, &restore::Options::default()).await.unwrap();
        same("ours", &std::fs::read(&out).unwrap(), &checkpointed_bytes(&db), 4096);
    };
    restored(replica.clone(), db.clone(), dir.path().to_path_buf()).await;
    // Compaction of both files into level 1, streamed the same way.
    let mut cat = storage::catalog::Catalog::load(&replica).await.unwrap();
    let policy = litefleet::lifecycle::Policy { levels: vec![Duration::from_secs(1)], ..Default::default() };
    let later = std::time::SystemTime::now() + Duration::from_secs(5);
    let out = litefleet::lifecycle::maintain(&replica, &mut cat, &policy, later).await.unwrap();
    assert!(out.written.iter().any(|f| f.level == 1 && f.min_txid == 1 && f.max_txid == 2), "{out:?}");
    restored(replica.clone(), db.clone(), dir.path().to_path_buf()).await;
    if let Some(bin) = litestream_bin() {
        let out = dir.path().join("theirs.db");
        let o = run_litestream_restore_env(&bin, &theirs, &out, &[], &s3.litestream_env());
        assert!(o.status.success(), "{}", describe_output(&o));
        same("litestream", &std::fs::read(&out).unwrap(), &checkpointed_bytes(&db), 4096);
    }
}

/// A parked connection (released, kept open with no transaction): the application's
/// last close then neither checkpoints nor deletes its `-wal` — so its next connection
/// is not the database's first and writes into a `-wal` that exists (the slow first
/// commits of a burst, benchmarks §8) —, the application's checkpoints still copy
/// everything (no read mark of ours), and the next sync takes the same connection up
/// and ships incrementally. Released without parking, the application's close deletes
/// the `-wal`, which is what the first half checks against. A database replaced while
/// parked is opened afresh, and shipped whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_connection_keeps_the_wal_and_the_next_sync_takes_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("parked.db");
    let (replica, url) = folder(dir.path());
    let mut w = Writer::open(&db);
    w.cmd("insert t 1 3000");
    let mut r = Replicator::new(&db, replica.clone(), Settings::default());
    // Released: the application's close is the last one.
    r.idle(false).await.unwrap();
    assert!(!r.is_parked() && !r.is_hot());
    w.cmd("insert t 1 3000");
    w.cmd("close");
    assert!(!wal_path(&db).exists(), "the application's last close deletes its -wal");
    w.cmd(&format!("open {}", db.display()));
    // Enough frames that the application's next log, restarted over them, stays short
    // of our position (the sync after a gap proves then that nothing was lost).
    for _ in 0..20 {
        w.cmd("insert t 1 3000");
    }
    // Parked: it is not.
    r.idle(true).await.unwrap();
    assert!(r.is_parked() && !r.is_hot());
    w.cmd("insert t 1 3000");
    let (_, log, done) = w.checkpoint("passive");
    assert!(log > 0 && done == log, "a parked connection holds no read mark: {log} {done}");
    w.cmd("close");
    assert!(wal_path(&db).exists(), "the application's close deleted the -wal under a parked connection");
    w.cmd(&format!("open {}", db.display()));
    let before = l0_count(dir.path());
    let rep = r.sync().await.unwrap();
    assert!(r.is_hot() && !r.is_parked(), "the sync takes the parked connection up");
    assert!(rep.snapshots.is_empty(), "after a park the sync is incremental: {:?}", rep.snapshots);
    assert!(l0_count(dir.path()) > before);
    restores_to(&replica, &url, &db, dir.path(), 4096).await;

    // Replaced while parked (the application stopped, a new file moved over the old one,
    // the old -wal and -shm deleted): opened afresh, shipped whole.
    r.idle(true).await.unwrap();
    assert!(r.is_parked());
    w.cmd("checkpoint truncate");
    w.quit();
    let other = dir.path().join("other.db");
    let mut o = Writer::open(&other);
    o.cmd("exec CREATE TABLE u(x)");
    o.cmd("exec INSERT INTO u VALUES (42)");
    o.quit();
    std::fs::rename(&other, &db).unwrap();
    let _ = std::fs::remove_file(wal_path(&db));
    let _ = std::fs::remove_file(shm_path(&db));
    let rep = r.sync().await.unwrap();
    assert!(r.is_hot() && !r.is_parked());
    assert!(!rep.snapshots.is_empty(), "a replaced database ships whole: {rep:?}");
    r.shutdown().await.unwrap();
    restores_to(&replica, &url, &db, dir.path(), 4096).await;
}
