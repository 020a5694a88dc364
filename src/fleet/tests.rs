//! The fleet in process: registration, connection slots, idle cost, validation, pacing.

use std::path::Path;
use std::sync::atomic::Ordering;

use super::reload::DirKeys;
use super::*;
use crate::status::{Board, Outcome, TenantState};

use crate::config::WatchConfig;

const GA: &str = "11111111-2222-3333-4444-555555555555";
const GB: &str = "22222222-3333-4444-5555-666666666666";
const GC: &str = "33333333-4444-5555-6666-777777777777";

fn test_config(dir: &Path, replicas: &Path) -> Config {
    let mut c = Config { watch: vec![WatchConfig::new(dir.join("clients"))], ..Config::default() };
    c.storage.url = StorageUrl::File { path: replicas.to_path_buf() };
    c.replication.state_dir = Some(dir.join("state"));
    c.replication.sync_interval = Duration::from_millis(50);
    c.fleet.shutdown_timeout = Duration::from_secs(20);
    c
}

fn write(db: &Path, rows: u32) {
    let c = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(v BLOB)").unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..rows {
        c.execute("INSERT INTO t VALUES (randomblob(300))", []).unwrap_or_else(|e| panic!("{e}"));
    }
}

async fn wait(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..600 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Replication alone: no compaction, no snapshots (the lifecycle is tested elsewhere).
fn without_lifecycle(config: &mut Config) {
    config.lifecycle.levels.clear();
    config.lifecycle.snapshot_interval = Duration::ZERO;
}

/// Shuts the fleet down and asserts every final sync succeeded in time.
async fn stop_fleet(fleet: Fleet) {
    let report = fleet.shutdown().await;
    assert!(report.failed.is_empty() && report.timed_out.is_empty(), "{report:?}");
}

/// A temporary folder with an empty watched `clients/`, and the test config replicating
/// it to `replicas/`.
fn watched_and_replicas() -> (tempfile::TempDir, PathBuf, PathBuf, Config) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let replicas = dir.path().join("replicas");
    let config = test_config(dir.path(), &replicas);
    (dir, clients, replicas, config)
}

fn synced(board: &Board, db: &Path) -> bool {
    board.get(db).is_some_and(|s| s.state == TenantState::Active && s.pending_since.is_none() && s.txid.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_created_while_events_are_lost_is_found_by_the_rescan() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(dir.path().join("clients")).unwrap_or_else(|e| panic!("{e}"));
    let fleet =
        Fleet::start(test_config(dir.path(), &dir.path().join("replicas"))).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("ready", || board.is_ready()).await;
    // Every notify event is lost from now on, as in a kernel queue overflow.
    fleet.watcher.drop_events(true);
    let db =
        std::fs::canonicalize(dir.path().join("clients")).unwrap_or_else(|e| panic!("{e}")).join(format!("{GA}.db"));
    write(&db, 5);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(board.get(&db).is_none(), "no event should have reached the fleet");
    // The overflow's rescan finds it.
    fleet.watcher.rescan_now();
    wait("registered and synced after the rescan", || synced(&board, &db)).await;
    stop_fleet(fleet).await;
    assert!(dir.path().join(format!("replicas/databases/{GA}/ltx/0")).is_dir());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stay_within_max_open_tenants_and_everyone_ships() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path(), &dir.path().join("replicas"));
    config.replication.max_open_tenants = 1;
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("ready", || board.is_ready()).await;
    let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
    let dbs: Vec<PathBuf> = [GA, GB, GC].iter().map(|g| clients.join(format!("{g}.db"))).collect();
    let mut max_hot = 0;
    for round in 0..8 {
        for db in &dbs {
            write(db, 1 + round);
            max_hot = max_hot.max(board.counts().hot);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
        max_hot = max_hot.max(board.counts().hot);
    }
    for db in &dbs {
        let want = rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(want, (1..=8).sum::<i64>());
        wait("every tenant synced", || synced(&board, db)).await;
        max_hot = max_hot.max(board.counts().hot);
    }
    assert!(max_hot <= 1, "{max_hot} tenants were hot at once with max_open_tenants = 1");
    // One tenant hot and idle (idle_after is 30 s), another written: the idle holder
    // gives up its slot at once instead of after idle_after.
    write(&dbs[0], 1);
    wait("a hot, idle tenant", || dbs.iter().all(|d| synced(&board, d)) && board.counts().hot == 1).await;
    let cold = dbs.iter().find(|d| board.get(d).is_some_and(|s| !s.hot)).cloned().unwrap_or_default();
    let before = board.get(&cold).and_then(|s| s.txid);
    let asked = std::time::Instant::now();
    write(&cold, 1);
    wait("the cold tenant's write to ship", || {
        board.get(&cold).is_some_and(|s| s.txid > before && s.pending_since.is_none())
    })
    .await;
    assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
    stop_fleet(fleet).await;
}

/// Distinct databases among `dbs` that this process holds open (a descriptor on the
/// file itself, as a connection does).
fn held_open(dbs: &[PathBuf]) -> usize {
    let fds = std::fs::read_dir("/proc/self/fd").map(|d| d.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()));
    let open: std::collections::HashSet<PathBuf> = fds.map(|l| l.collect()).unwrap_or_default();
    dbs.iter().filter(|d| open.contains(*d)).count()
}

/// A released tenant keeps its connection open with no transaction ("parked") while a
/// parking slot is free, for `idle_after`, then closes it: never more parked than
/// `max_parked_tenants`, none after `idle_after`, and none at all with 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_tenants_park_within_max_parked_tenants_for_idle_after() {
    for max in [1, 0] {
        let (_dir, clients, _replicas, mut config) = watched_and_replicas();
        let idle_after = Duration::from_millis(1500);
        config.replication.idle_after = idle_after;
        config.replication.max_parked_tenants = max;
        without_lifecycle(&mut config);
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        wait("ready", || board.is_ready()).await;
        let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
        let dbs: Vec<PathBuf> = [GA, GB, GC].iter().map(|g| clients.join(format!("{g}.db"))).collect();
        for db in &dbs {
            write(db, 2);
        }
        let mut most = 0;
        let mut parked_seen = false;
        wait("all synced and cold", || {
            let cold = dbs.iter().all(|d| synced(&board, d) && board.get(d).is_some_and(|s| !s.hot));
            let held = held_open(&dbs);
            most = most.max(held);
            parked_seen |= cold && held == 1;
            cold
        })
        .await;
        // Cold now: the first to go idle is parked until idle_after after that.
        let cold_at = std::time::Instant::now();
        let held = held_open(&dbs);
        parked_seen |= held == 1;
        assert!(held <= max, "{held} cold tenants hold their database open, max_parked_tenants = {max}");
        assert_eq!(parked_seen, max == 1, "max_parked_tenants = {max}: a cold tenant parked: {parked_seen}");
        wait("the parked connection closed", || held_open(&dbs) == 0 && board.scheduled() == 0).await;
        assert!(cold_at.elapsed() < idle_after + Duration::from_secs(5), "parked for {:?}", cold_at.elapsed());
        assert!(most <= 3, "{most}");
        // Parked or not, a write ships.
        let before = board.get(&dbs[0]).and_then(|s| s.txid);
        write(&dbs[0], 1);
        wait("the next write ships", || {
            board.get(&dbs[0]).is_some_and(|s| s.txid > before && s.pending_since.is_none())
        })
        .await;
        stop_fleet(fleet).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tenant_holds_no_connection_and_sends_no_request() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path(), &dir.path().join("replicas"));
    config.replication.idle_after = Duration::from_millis(300);
    // Replication alone; the lifecycle's idle cost is asserted in tests/lifecycle.rs.
    without_lifecycle(&mut config);
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GB}.db"));
    write(&db, 3);
    wait("synced", || synced(&board, &db)).await;
    // Cold, and no timer left anywhere in the fleet: nothing can happen until a file
    // changes (our own idle checkpoint may wake it once; a stamp shows nothing was
    // committed, so that wake-up arms nothing).
    wait("cold and resting", || board.get(&db).is_some_and(|s| !s.hot) && board.scheduled() == 0).await;
    let counters = fleet.storage().counters().clone();
    let before = counters.total();
    let txid = board.get(&db).and_then(|s| s.txid);
    // Several idle_after periods: a timer that survived would have fired by now.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(board.scheduled(), 0, "an idle tenant armed a timer");
    assert_eq!(counters.total(), before, "an idle tenant sent storage requests");
    assert!(board.get(&db).is_some_and(|s| !s.hot), "an idle tenant reopened its database");
    // A write wakes it and ships.
    write(&db, 1);
    wait("the next write ships", || board.get(&db).is_some_and(|s| s.txid > txid && s.pending_since.is_none())).await;
    stop_fleet(fleet).await;
}

/// A database created while the daemon runs is usually still being set up. Its first
/// sync waits `new_tenant_settle` (here 600 ms), so the schema and first row ship as
/// one file; at once, it shipped the empty database and then the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_created_while_running_ships_once_it_has_settled() {
    let (_dir, clients, replicas, mut config) = watched_and_replicas();
    config.replication.sync_interval = Duration::from_millis(600);
    without_lifecycle(&mut config);
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("ready", || board.is_ready()).await;
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GC}.db"));
    // The application creates the database, and its schema a moment later.
    let created = std::time::Instant::now();
    let app = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    app.execute_batch("PRAGMA journal_mode=WAL;").unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    app.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap_or_else(|e| panic!("{e}"));
    assert!(created.elapsed() < Duration::from_millis(450), "the test needs its writes inside the settle");
    wait("shipped", || synced(&board, &db)).await;
    let l0 = replicas.join(format!("databases/{GC}/ltx/0"));
    let files = std::fs::read_dir(&l0).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files, 1, "a new database shipped in {files} L0 files");
    assert_eq!(board.get(&db).and_then(|s| s.txid), Some(1));
    // A database that appears just before a shutdown is shipped by the final sync,
    // settle or not.
    let other = db.with_file_name(format!("{GA}.db"));
    let appeared = std::time::Instant::now();
    let app2 = rusqlite::Connection::open(&other).unwrap_or_else(|e| panic!("{e}"));
    app2.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (2);")
        .unwrap_or_else(|e| panic!("{e}"));
    wait("registered", || board.get(&other).is_some()).await;
    if appeared.elapsed() < Duration::from_millis(450) {
        assert_eq!(board.get(&other).and_then(|s| s.txid), None, "synced before its settle");
    }
    drop((app, app2));
    stop_fleet(fleet).await;
    let l0 = replicas.join(format!("databases/{GA}/ltx/0"));
    assert_eq!(std::fs::read_dir(&l0).map(|d| d.count()).unwrap_or(0), 1, "not shipped at shutdown");
}

/// A tenant whose file is a symlink to a database in the same folder. SQLite keeps the
/// `-wal` beside the target, so that is what is replicated, stamped and armed. Before,
/// the tenant looked for a `-wal` beside the link, which never exists: its commits woke
/// nothing, a rescan's wake-up was ignored as "nothing committed", and so was the final
/// sync at shutdown — the replica kept only what a checkpoint had put in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_that_is_a_symlink_ships_every_commit() {
    let (_dir, clients, replicas, mut config) = watched_and_replicas();
    without_lifecycle(&mut config);
    let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
    // The target has a name the fleet skips (not a GUID): only the link is a tenant.
    let real = clients.join("customer.sqlite");
    write(&real, 1);
    let link = clients.join(format!("{GC}.db"));
    std::os::unix::fs::symlink(&real, &link).unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("the link's first sync", || synced(&board, &link)).await;
    let first = board.get(&link).and_then(|s| s.txid).unwrap_or_default();
    let app = rusqlite::Connection::open(&link).unwrap_or_else(|e| panic!("{e}"));
    for i in 1..=3 {
        app.execute("INSERT INTO t VALUES (randomblob(100))", []).unwrap_or_else(|e| panic!("{e}"));
        wait("a commit through the link shipped", || board.get(&link).and_then(|s| s.txid) == Some(first + i)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A commit right before a shutdown: shipped by the final sync.
    app.execute("INSERT INTO t VALUES (randomblob(100))", []).unwrap_or_else(|e| panic!("{e}"));
    stop_fleet(fleet).await;
    let newest = std::fs::read_dir(replicas.join(format!("databases/{GC}/ltx/0")))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| crate::ltx::parse_filename(e.ok()?.file_name().to_str()?).map(|(_, max)| max))
        .max();
    assert_eq!(newest, Some(first + 4), "the final sync missed the last commit");
    drop(app);
}

/// A burst of `commits` commits of one `bytes` blob each into `db`, `pause` apart, on
/// a thread; returns when it ended.
fn burst(db: &Path, commits: u32, bytes: u32, pause: Duration) -> std::thread::JoinHandle<std::time::SystemTime> {
    let db = db.to_path_buf();
    std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA synchronous=NORMAL").unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..commits {
            c.execute("INSERT INTO t VALUES (randomblob(?1))", [bytes]).unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(pause);
        }
        std::time::SystemTime::now()
    })
}

/// The rows of table `t` in `replica` restored to a file under `scratch`.
async fn restored_rows(replica: &crate::storage::Replica, scratch: &Path) -> i64 {
    let out = scratch.join("restored.db");
    let opts = crate::restore::Options { integrity: crate::restore::IntegrityCheck::Full, ..Default::default() };
    crate::restore::restore(replica, &out, &opts).await.unwrap_or_else(|e| panic!("restore: {e}"));
    rusqlite::Connection::open(&out)
        .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// When each L0 file under `l0` was written.
fn l0_times(l0: &Path) -> Vec<std::time::SystemTime> {
    std::fs::read_dir(l0)
        .map(|d| d.filter_map(|e| e.ok()?.metadata().ok()?.modified().ok()).collect())
        .unwrap_or_default()
}

/// The L0 files under `l0` holding transactions after `txid`.
fn l0_after(l0: &Path, txid: u64) -> usize {
    std::fs::read_dir(l0)
        .map(|d| {
            d.filter_map(|e| crate::ltx::parse_filename(e.ok()?.file_name().to_str()?))
                .filter(|(min, _)| *min > txid)
                .count()
        })
        .unwrap_or_default()
}

/// A cold tenant woken by a burst of large commits opens at once (its read mark and
/// the early backfill, `checkpoint.rs`) but ships once the writer pauses, in one file:
/// its encode and upload no longer compete with the burst for the cores and the disk.
/// It shipped the burst's first commits at once before, the rest in a second file. A
/// writer that pauses for [`super::settle::QUIET`] (a descheduled test thread on a
/// loaded machine) ends the wait early, so the test passes if one of three bursts
/// shipped in one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_in_flight_at_the_wake_ships_once_the_writer_pauses() {
    let (dir, clients, replicas, mut config) = watched_and_replicas();
    config.replication.sync_interval = Duration::from_secs(3);
    without_lifecycle(&mut config);
    let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
    // One tenant per try: a try is not paced by the upload of the one before.
    let dbs: Vec<PathBuf> = [GA, GB, GC].iter().map(|g| clients.join(format!("{g}.db"))).collect();
    dbs.iter().for_each(|db| write(db, 1));
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    let mut files = Vec::new();
    for (db, g) in dbs.iter().zip([GA, GB, GC]) {
        wait("synced and cold", || synced(&board, db) && board.get(db).is_some_and(|s| !s.hot)).await;
        let before = board.get(db).and_then(|s| s.txid).unwrap_or_default();
        burst(db, 100, 512 * 1024, Duration::ZERO).join().unwrap_or_else(|_| panic!("writer panicked"));
        wait("the burst shipped", || synced(&board, db) && board.get(db).and_then(|s| s.txid) > Some(before)).await;
        files.push(l0_after(&replicas.join(format!("databases/{g}/ltx/0")), before));
        if files.last() == Some(&1) {
            let rows: i64 = rusqlite::Connection::open(db)
                .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get(0)))
                .unwrap_or_else(|e| panic!("{e}"));
            let replica = fleet.storage().replica(format!("databases/{g}"));
            stop_fleet(fleet).await;
            assert_eq!(restored_rows(&replica, dir.path()).await, rows);
            return;
        }
    }
    panic!("every burst shipped in more than one L0 file: {files:?}");
}

/// A writer that never pauses (for as long as the wait's 10 ms) is still shipped while
/// it writes: the wait for a pause ends one `sync_interval` after the open. (Small
/// commits 1 ms apart: a debug build's first upload must end well before the writer.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_never_pauses_ships_within_the_sync_interval() {
    let (_dir, clients, replicas, mut config) = watched_and_replicas();
    config.replication.sync_interval = Duration::from_millis(200);
    without_lifecycle(&mut config);
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GA}.db"));
    write(&db, 1);
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("synced and cold", || synced(&board, &db) && board.get(&db).is_some_and(|s| !s.hot)).await;
    let began = std::time::SystemTime::now();
    let ended = burst(&db, 1500, 8192, Duration::from_millis(1)).join().unwrap_or_else(|_| panic!("writer panicked"));
    let took = ended.duration_since(began).unwrap_or_default();
    let l0 = replicas.join(format!("databases/{GA}/ltx/0"));
    let during = l0_times(&l0).into_iter().filter(|t| *t >= began && *t < ended).count();
    stop_fleet(fleet).await;
    if took >= Duration::from_secs(1) {
        assert!(during >= 1, "nothing shipped during {took:?} of writing, sync_interval 200 ms");
    }
}

/// The bug this pins: after a bulk import left ~1,600 pages in the WAL, a tenant never
/// went idle — every sync ran a checkpoint with nothing to copy (the WAL only restarts
/// at the next write), whose file activity woke the tenant again: ~760 syncs a second,
/// ~20 % of a core, forever. Now a checkpoint runs only when something was shipped
/// since the last one: the tenant goes cold within `idle_after`, then costs no sync,
/// no timer and no request, whatever its WAL holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_left_with_a_large_wal_goes_idle_and_costs_nothing() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path(), &dir.path().join("replicas"));
    let idle_after = Duration::from_millis(500);
    config.replication.idle_after = idle_after;
    without_lifecycle(&mut config);
    // The application has created its schema and keeps its connection: the tenant's
    // first sync ships it and goes cold (two syncs). Our checkpoint then grows the
    // database file, which once looked like a commit: each new tenant woke, reopened
    // its database and synced again, for nothing.
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GC}.db"));
    let app = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    app.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v BLOB);").unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    wait("ready", || board.is_ready()).await;
    let rests = || board.get(&db).is_some_and(|s| !s.hot && s.pending_since.is_none()) && board.scheduled() == 0;
    wait("the schema shipped and the tenant cold", || synced(&board, &db) && rests()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(board.get(&db).map(|s| s.syncs), Some(2), "a new tenant kept waking after its first sync");
    let before = board.get(&db).and_then(|s| s.txid);
    // Then it imports 2,400 pages in one transaction.
    app.execute_batch(
        "BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2400) \
         INSERT INTO t SELECT randomblob(3900) FROM n; COMMIT;",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let wal = std::fs::metadata(crate::sqlite::wal_path(&db)).map(|m| m.len()).unwrap_or(0);
    assert!(wal > 2_000 * 4096, "the WAL holds {wal} bytes");
    wait("the import shipped", || synced(&board, &db) && board.get(&db).is_some_and(|s| s.txid > before)).await;
    let written = std::time::Instant::now();
    wait("cold and resting", rests).await;
    // Within idle_after of the last sync, with some slack for a loaded machine.
    assert!(written.elapsed() < idle_after + Duration::from_secs(3), "went cold after {:?}", written.elapsed());
    let counters = fleet.storage().counters().clone();
    let (requests, syncs) = (counters.total(), board.get(&db).map(|s| s.syncs));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(board.get(&db).map(|s| s.syncs), syncs, "an idle tenant kept syncing");
    assert_eq!(board.scheduled(), 0, "an idle tenant armed a timer");
    assert_eq!(counters.total(), requests, "an idle tenant sent storage requests");
    assert!(board.get(&db).is_some_and(|s| !s.hot), "an idle tenant reopened its database");
    let left = std::fs::metadata(crate::sqlite::wal_path(&db)).map(|m| m.len()).unwrap_or(0);
    assert!(left > 2_000 * 4096, "the test needs the WAL left behind ({left} bytes)");
    drop(app);
    stop_fleet(fleet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_passes_while_writing_and_fails_loudly_on_a_damaged_replica() {
    let (dir, clients, replicas, mut config) = watched_and_replicas();
    // Keep every L0 file where it is: the test damages one.
    without_lifecycle(&mut config);
    config.validation.enabled = true;
    config.validation.interval = Duration::from_secs(1);
    config.validation.tenants = 2;
    config.validation.temp_dir = Some(dir.path().join("tmp"));
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
    let (busy, quiet) = (clients.join(format!("{GA}.db")), clients.join(format!("{GB}.db")));
    write(&quiet, 20);
    write(&busy, 1);
    // A writer commits to `busy` every 150 ms while validations run.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, busy) = (stop.clone(), busy.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                write(&busy, 1);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };
    let passed = |db: &Path| {
        board.get(db).and_then(|s| s.validation).is_some_and(|v| v.outcome == Outcome::Passed && v.txid.is_some())
    };
    wait("both tenants validated", || passed(&busy) && passed(&quiet)).await;
    let v = board.get(&busy).and_then(|s| s.validation).unwrap_or_else(|| unreachable!());
    assert!(v.detail.contains("equal to the live database"), "{}", v.detail);
    // No restored copy is left behind.
    wait("temporary copies removed", || {
        std::fs::read_dir(dir.path().join("tmp")).map(|d| d.count() == 0).unwrap_or(false)
    })
    .await;

    // Damage the quiet tenant's newest L0 file: the next validation fails, loudly.
    let l0 = replicas.join(format!("databases/{GB}/ltx/0"));
    let newest = std::fs::read_dir(&l0)
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max()
        .unwrap_or_else(|| panic!("no L0 file"));
    let mut bytes = std::fs::read(&newest).unwrap_or_else(|e| panic!("{e}"));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&newest, bytes).unwrap_or_else(|e| panic!("{e}"));
    wait("the damage found", || {
        board.get(&quiet).is_some_and(|s| s.validation.is_some_and(|v| v.outcome == Outcome::Failed))
    })
    .await;
    let s = board.get(&quiet).unwrap_or_else(|| unreachable!());
    assert_eq!(s.state_at(SystemTime::now(), Duration::from_secs(10)), TenantState::Error);
    let shown = s.error_shown().unwrap_or_default();
    assert!(shown.starts_with("validation failed: the replica does not restore at TXID"), "{shown}");
    assert!(shown.contains(&newest.file_name().unwrap_or_default().to_string_lossy().to_string()), "{shown}");
    // The busy tenant is unaffected.
    assert!(passed(&busy));
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap_or_else(|_| panic!("writer panicked"));
    stop_fleet(fleet).await;
}

/// A wake-up can come before the commit is complete (the writer's first WAL frames):
/// that sync finds nothing, and the commit itself must then ship at once, not one
/// `sync_interval` later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_that_found_nothing_does_not_delay_the_commit() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path(), &dir.path().join("replicas"));
    config.replication.sync_interval = Duration::from_secs(3);
    config.replication.idle_after = Duration::from_millis(300);
    without_lifecycle(&mut config);
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GC}.db"));
    // One application connection for the whole test: closing the last connection
    // would checkpoint and delete the WAL, and the next sync would then (rightly)
    // ship a full-page file instead of nothing.
    let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v BLOB); INSERT INTO t VALUES (randomblob(300));")
        .unwrap_or_else(|e| panic!("{e}"));
    // Everything written has shipped and the tenant is cold (its writes may have been
    // shipped by more than one sync: wait until nothing moves).
    let mut last = None;
    wait("synced, cold and settled", || {
        // Synced at least once: before its first sync a new tenant is cold with nothing
        // pending too (a loaded machine saw `(0, None)` twice in a row).
        let now =
            board.get(&db).filter(|s| s.syncs > 0 && !s.hot && s.pending_since.is_none()).map(|s| (s.syncs, s.txid));
        let settled = now.is_some() && now == last;
        last = now;
        settled
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (syncs, txid) = board.get(&db).map(|s| (s.syncs, s.txid)).unwrap_or_default();
    assert_eq!(last, Some((syncs, txid)), "still syncing");
    // A transaction bigger than a one-page cache spills frames into the WAL before
    // its commit: the tenant wakes and syncs, finding no commit.
    c.execute_batch("PRAGMA cache_size = 1; BEGIN; INSERT INTO t SELECT randomblob(4000) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4);")
        .unwrap_or_else(|e| panic!("{e}"));
    wait("a sync that finds nothing", || board.get(&db).is_some_and(|s| s.syncs > syncs)).await;
    assert_eq!(board.get(&db).and_then(|s| s.txid), txid, "nothing was committed yet: {:?}", board.get(&db));
    let committed = std::time::Instant::now();
    c.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
    wait("the commit shipped", || board.get(&db).is_some_and(|s| s.txid > txid)).await;
    let took = committed.elapsed();
    assert!(took < Duration::from_millis(1500), "the commit waited {took:?} (sync_interval is 3 s)");
    drop(c);
    stop_fleet(fleet).await;
}

/// Upload pacing: two commits in a row both ship at once (burst of two), the third
/// waits for the interval: one upload per `sync_interval` on average.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_paced_with_bursts_of_two() {
    let small = "INSERT INTO t VALUES (randomblob(100))";
    let lags = paced_lags(&[small, small, small]).await;
    assert!(lags[0] < Duration::from_secs(2) && lags[1] < Duration::from_secs(2), "{lags:?}");
    assert!(lags[2] > Duration::from_secs(2), "the third upload in a row was not paced: {lags:?}");
}

/// A bulk upload (≥ 256 WAL frames) spends the whole burst: the commit after it waits for
/// the interval instead of shipping at once (its writer is most likely still writing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_upload_spends_the_burst() {
    // 300 rows of 4,000 bytes: one page each.
    let bulk = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
                INSERT INTO t SELECT randomblob(4000) FROM n";
    let lags = paced_lags(&[bulk, "INSERT INTO t VALUES (randomblob(100))"]).await;
    assert!(lags[0] < Duration::from_secs(2), "{lags:?}");
    assert!(lags[1] > Duration::from_secs(2), "the commit after a bulk upload was not paced: {lags:?}");
}

/// The pacing, sync after sync at the earliest moment it allows: a writer of small
/// commits gets a burst of two then one upload per interval; a bulk writer (many small
/// commits count, as WAL frames) one upload per interval from the first — and never
/// more than an interval apart, however long it writes.
#[test]
fn pacing_allows_a_burst_of_two_small_uploads_and_one_bulk_upload_per_interval() {
    use super::tenant_task::paced_after;
    let interval = Duration::from_secs(1);
    let report = |frames: u64| crate::replicate::SyncReport { uploaded: 1, frames, ..Default::default() };
    // Gaps between the starts of 200 syncs, each run as early as the pacing allows.
    let gaps = |frames: u64| {
        let base = tokio::time::Instant::now();
        let (mut at, mut paced_until) = (base, None);
        let mut gaps = Vec::new();
        for _ in 0..200 {
            let next = paced_after(paced_until, at, interval, &report(frames));
            paced_until = Some(next);
            let earliest = (next - interval).max(at);
            gaps.push(earliest - at);
            at = earliest;
        }
        gaps
    };
    let small = gaps(3);
    assert_eq!(&small[..2], [Duration::ZERO, interval], "{:?}", &small[..3]);
    assert!(small[2..].iter().all(|g| *g == interval), "{small:?}");
    // 300 one-page commits read 300 frames: bulk, although they ship few pages.
    let bulk = gaps(300);
    assert!(bulk.iter().all(|g| *g == interval), "{bulk:?}");
}

/// Runs `commits` one after another on a settled tenant (`sync_interval` 4 s), each
/// once the previous one has shipped, and returns how long each took to ship.
async fn paced_lags(commits: &[&str]) -> Vec<Duration> {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let mut config = test_config(dir.path(), &dir.path().join("replicas"));
    config.replication.sync_interval = Duration::from_secs(4);
    without_lifecycle(&mut config);
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let board = fleet.board();
    let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GA}.db"));
    let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v BLOB);").unwrap_or_else(|e| panic!("{e}"));
    wait("first sync", || synced(&board, &db)).await;
    // Let the pacing of the first sync run out.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut lags = Vec::new();
    for sql in commits {
        let before = board.get(&db).and_then(|s| s.txid);
        let t = std::time::Instant::now();
        c.execute(sql, []).unwrap_or_else(|e| panic!("{e}"));
        wait("shipped", || board.get(&db).is_some_and(|s| s.txid > before)).await;
        lags.push(t.elapsed());
    }
    drop(c);
    stop_fleet(fleet).await;
    lags
}

#[test]
fn unchanged_watch_entries_keep_their_keys_across_reloads() {
    let mut keys = DirKeys::default();
    let a = WatchConfig::new("a");
    let b = WatchConfig::new("b");
    let first = keys.assign(&[a.clone(), b.clone()], false);
    assert_eq!(first.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
    // Remove a, change b's prefix, add c: b gets a new key (its tenants move).
    let mut b2 = b.clone();
    b2.prefix = Some(crate::tenant::Prefix::parse("staging").unwrap_or_default());
    let c = WatchConfig::new("c");
    let second = keys.assign(&[b2, c], false);
    assert_eq!(second.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [3, 4]);
    // Unchanged: same keys.
    let again: Vec<WatchConfig> = second.iter().map(|(_, w)| w.clone()).collect();
    assert_eq!(keys.assign(&again, false).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [3, 4]);
    // Rekey everything (non_guid changed).
    assert_eq!(keys.assign(&again, true).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [5, 6]);
}

#[test]
fn lag_threshold_is_at_least_ten_seconds() {
    assert_eq!(lag_threshold(Duration::from_secs(1)), Duration::from_secs(10));
    assert_eq!(lag_threshold(Duration::from_secs(10)), Duration::from_secs(50));
}

/// A start-up of 100,000 tenants has nearly all of them waiting at once for one of
/// `startup_concurrency` start-up slots (or, when more than `max_open_tenants` want a
/// connection, for a connection slot). What a tenant waits in must stay small: a sync's
/// own state is boxed only once the slots are held. Waiting inside the sync's box cost
/// ~9 KB per tenant, the bulk of the 1.5 GB start-up peak at 100,000 (benchmarks §12).
#[tokio::test]
async fn a_tenant_waiting_for_its_slots_holds_a_few_hundred_bytes() {
    let (_dir, clients, _replicas, config) = watched_and_replicas();
    let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
    let id = crate::tenant::TenantId::guid(GA).unwrap_or_else(|e| panic!("{e}"));
    let db = clients.join(format!("{GA}.db"));
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut task = tenant_task::TenantTask::new(fleet.shared.clone(), db, id, crate::tenant::Prefix::none(), wake);
    let stop = tokio_util::sync::CancellationToken::new();
    let waiting = std::mem::size_of_val(&task.admit(&stop));
    let syncing = std::mem::size_of_val(&task.sync_now(None));
    assert!(waiting <= 1024, "a tenant waits for its slots in {waiting} bytes");
    assert!(syncing >= 4 * waiting, "a sync's state ({syncing} bytes) is why it is boxed apart");
    drop(task);
    stop_fleet(fleet).await;
}
