//! Proves the shared test helpers in `tests/common` work.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn s3_server_rejects_unsigned_get_and_counts_it() {
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    assert!(s3.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(s3.request_count(), 0);

    let resp = http_request(s3.addr(), "GET", "/bkt/some/key", &[], b"", T).unwrap();
    assert_eq!(resp.status, 403, "{}", String::from_utf8_lossy(&resp.body));
    assert!(String::from_utf8_lossy(&resp.body).contains("AccessDenied"));
    assert_eq!(s3.request_count(), 1);
    assert_eq!(s3.signed_request_count(), 0);
    assert_eq!(s3.connection_count(), 1);

    let resp = http_request(s3.addr(), "PUT", "/bkt/k", &[], b"data", T).unwrap();
    assert_eq!(resp.status, 403);
    assert_eq!(s3.request_count(), 2);
    assert!(s3.objects("bkt").is_empty());
}

#[test]
fn s3_server_serves_signed_put_and_get() {
    let Ok(out) = Command::new("curl").arg("--version").output() else {
        eprintln!("skipping: no curl to sign requests with");
        return;
    };
    assert!(out.status.success());
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("payload");
    std::fs::write(&payload, b"hello litefleet").unwrap();
    let curl = |extra: &[&str]| {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--fail-with-body", "--max-time", "10"])
            .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4"])
            .arg(format!("aws:amz:{}:s3", s3.region))
            .arg("--user")
            .arg(format!("{}:{}", s3.access_key, s3.secret_key))
            .args(extra);
        run_with_timeout(&mut cmd, Duration::from_secs(20))
    };
    let url = format!("{}/bkt/dir/obj.ltx", s3.endpoint());
    let put = curl(&["-T", payload.to_str().unwrap(), &url]);
    assert!(put.status.success(), "{}", describe_output(&put));
    assert_eq!(s3.objects("bkt"), ["dir/obj.ltx"]);
    assert_eq!(std::fs::read(s3.object_path("bkt", "dir/obj.ltx")).unwrap(), b"hello litefleet");
    let get = curl(&[&url]);
    assert!(get.status.success(), "{}", describe_output(&get));
    assert_eq!(get.stdout, b"hello litefleet");
    assert_eq!(s3.signed_request_count(), 2);
    assert_eq!(s3.request_count(), 2);

    // A wrong secret is refused, and still counted as a request.
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "--aws-sigv4"])
        .arg(format!("aws:amz:{}:s3", s3.region))
        .arg("--user")
        .arg(format!("{}:wrong", s3.access_key))
        .arg(&url);
    let bad = run_with_timeout(&mut cmd, Duration::from_secs(20));
    assert_eq!(String::from_utf8_lossy(&bad.stdout), "403");
    assert_eq!(s3.request_count(), 3);
}

#[tokio::test]
async fn s3_server_starts_and_stops_inside_a_tokio_test() {
    let s3 = S3Server::start();
    let addr = s3.addr();
    let resp = tokio::task::spawn_blocking(move || http_request(addr, "GET", "/", &[], b"", T)).await.unwrap().unwrap();
    assert_eq!(resp.status, 403);
    // Blocking the test's own runtime does not stall the server.
    let resp = http_request(addr, "GET", "/", &[], b"", T).unwrap();
    assert_eq!(resp.status, 403);
    drop(s3);
    // Stopped: no more answers (connection refused or closed unanswered).
    assert!(http_request(addr, "GET", "/", &[], b"", Duration::from_secs(2)).is_err());
}

#[test]
fn writer_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("a.db");
    let mut w = Writer::spawn();
    assert_eq!(w.cmd(&format!("open {} 4096", db.display())), "wal");
    assert_eq!(w.txcount(), 0);
    assert_eq!(w.cmd("insert t 100 1000"), "100");
    assert_eq!(w.txcount(), 1);
    assert_eq!(w.cmd("exec SELECT count(*), sum(length(v)) FROM t"), "100 100000");
    assert_eq!(w.cmd("pragma page_size"), "4096");
    assert_eq!(w.cmd("pragma journal_mode"), "wal");
    assert_eq!(w.cmd("update t 10 500"), "10");
    assert_eq!(w.cmd("delete t 5"), "5");
    assert_eq!(w.cmd("count t"), "95");
    assert_eq!(w.cmd("exec CREATE TABLE IF NOT EXISTS u(x); BEGIN; INSERT INTO u VALUES(1); COMMIT"), "");
    assert_eq!(w.txcount(), 5);
    // No-op and rolled-back transactions are not commits.
    w.cmd("exec CREATE TABLE IF NOT EXISTS u(x); BEGIN; INSERT INTO u VALUES(2); ROLLBACK");
    assert_eq!(w.txcount(), 5);
    assert!(w.try_cmd("bogus").unwrap_err().contains("unknown command"));
    assert!(w.try_cmd("exec SELEC").unwrap_err().contains("syntax error"));
    assert!(w.try_cmd("insert t x 1").is_err());

    let wal = std::fs::metadata(wal_path(&db)).unwrap().len();
    assert!(wal > 0, "writes are still in the WAL");
    let (busy, log, ckpt) = w.checkpoint("passive");
    assert_eq!(busy, 0);
    assert!(log > 0 && ckpt == log, "{log} {ckpt}");
    w.cmd("insert t 3 100");
    let (busy, log, ckpt) = w.checkpoint("truncate");
    assert_eq!((busy, log, ckpt), (0, 0, 0));
    assert_eq!(std::fs::metadata(wal_path(&db)).unwrap().len(), 0);
    w.cmd("vacuum");
    assert_eq!(w.txcount(), 7);
    w.cmd("sleep 1");
    w.cmd("close");
    assert!(w.try_cmd("count t").is_err());
    w.quit();
    assert!(integrity_ok(&db));
}

#[test]
fn writer_is_deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let db = dir.path().join(name);
        let mut w = Writer::spawn_with_args(&["--seed", seed]);
        w.cmd(&format!("open {} 1024", db.display()));
        w.cmd("insert t 50 300");
        w.cmd("update t 7 20");
        w.cmd("delete t 9");
        w.quit();
        db
    };
    let (a, b, c) = (run("a.db", "3"), run("b.db", "3"), run("c.db", "4"));
    assert!(sqlite_logical_eq(&a, &b));
    assert!(!sqlite_logical_eq(&a, &c));
    assert!(sqlite_logical_diff(&a, &c).unwrap().contains("table t"));
}

#[test]
fn writer_big_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let mut w = Writer::open(&db);
    assert_eq!(w.cmd("big b 3"), "48");
    assert_eq!(w.txcount(), 1);
    assert!(std::fs::metadata(wal_path(&db)).unwrap().len() > 3 << 20);
    assert_eq!(w.cmd("exec SELECT sum(length(v)) FROM b"), (3 << 20).to_string());
}

#[test]
fn writer_script_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let script = dir.path().join("ok.txt");
    std::fs::write(
        &script,
        format!("# comment\nopen {} 8192\n\ninsert t 10 10\ntxcount\ncheckpoint truncate\nquit\n", db.display()),
    )
    .unwrap();
    let out = run_with_timeout(Command::new(writer_bin()).arg("--script").arg(&script), Duration::from_secs(60));
    assert!(out.status.success(), "{}", describe_output(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok wal\nok 10\nok 1\nok 0 0 0\nok\n");
    let bytes = std::fs::read(&db).unwrap();
    assert_eq!(u16::from_be_bytes([bytes[16], bytes[17]]), 8192);

    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, format!("open {}\nexec nonsense\ntxcount\n", db.display())).unwrap();
    let out = run_with_timeout(Command::new(writer_bin()).arg("--script").arg(&bad), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(1), "{}", describe_output(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("ok wal\nerr "), "{stdout}");
    assert_eq!(stdout.lines().count(), 2, "stops at the first error");
}

#[test]
fn snapshot_is_consistent_and_leaves_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let mut w = Writer::open(&db);
    w.cmd("pragma wal_autocheckpoint 0");
    w.cmd("insert t 200 700");
    w.cmd("update t 50 900");
    let wal_before = std::fs::read(wal_path(&db)).unwrap();
    let snap = dir.path().join("snap.db");
    snapshot_db(&db, &snap);
    assert!(!wal_path(&snap).exists() && !shm_path(&snap).exists());
    assert_eq!(std::fs::read(wal_path(&db)).unwrap(), wal_before, "source WAL untouched");
    assert!(integrity_ok(&snap));
    assert!(sqlite_logical_eq(&db, &snap));
    let snap_bytes = std::fs::read(&snap).unwrap();
    assert_eq!(checkpointed_bytes(&db), snap_bytes);
    assert_eq!(checkpointed_bytes(&snap), snap_bytes);
    assert_eq!(first_difference(&snap_bytes, &snap_bytes, 4096), None);

    // After more commits the source differs from the old snapshot.
    w.cmd("delete t 10");
    let now = checkpointed_bytes(&db);
    assert_ne!(now, snap_bytes);
    assert!(first_difference(&now, &snap_bytes, 4096).is_some());
    assert!(sqlite_logical_diff(&db, &snap).is_some());

    // The writer is still fine, and its WAL still holds every frame.
    assert_eq!(w.cmd("count t"), "190");
    let (_, log, ckpt) = w.checkpoint("passive");
    assert!(log > 0 && ckpt == log);
}

#[test]
fn snapshots_taken_during_writes_are_whole_transactions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("busy.db");
    let mut w = Writer::open(&db);
    w.cmd("insert t 1 10");
    let stop = Instant::now() + Duration::from_secs(2);
    let writer = std::thread::spawn(move || {
        let mut n = 0;
        while Instant::now() < stop {
            w.cmd("insert t 25 2000");
            n += 1;
        }
        (w, n)
    });
    let mut snaps = 0;
    while Instant::now() < stop {
        let snap = dir.path().join(format!("s{snaps}.db"));
        snapshot_db(&db, &snap);
        assert!(integrity_ok(&snap));
        let conn = rusqlite::Connection::open(&snap).unwrap();
        let rows: i64 = conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!((rows - 1) % 25, 0, "snapshot cut a transaction: {rows} rows");
        snaps += 1;
    }
    let (_w, n) = writer.join().unwrap();
    assert!(n > 0 && snaps > 0, "{n} transactions, {snaps} snapshots");
}

#[test]
fn moto_starts_and_creates_a_bucket() {
    let Some(moto) = MotoServer::start("litefleet-test") else {
        return;
    };
    eprintln!("moto answered after {:?}", moto.startup);
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let resp = http_request(moto.addr(), "GET", "/litefleet-test", &[], b"", T).unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
    assert!(String::from_utf8_lossy(&resp.body).contains("<Name>litefleet-test</Name>"));
    moto.create_bucket("second");
    let resp = http_request(moto.addr(), "GET", "/", &[], b"", T).unwrap();
    assert!(String::from_utf8_lossy(&resp.body).contains("second"));
    let addr = moto.addr();
    drop(moto);
    assert!(
        wait_until(T, Duration::from_millis(20), || {
            http_request(addr, "GET", "/", &[], b"", Duration::from_secs(1)).is_err()
        }),
        "moto still answering after drop"
    );
}

fn check_version(bin: &Path, want: &str) {
    let out = run_litestream(bin, &["version"], &[], Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe_output(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(want), "{} version: {text}", bin.display());
}

/// The one test that fails wherever the Litestream binaries are missing, CI or not:
/// the tests that need them skip (printing why) outside CI, so a bare `cargo test`
/// would otherwise pass without ever running the compatibility oracle.
#[test]
fn litestream_binaries_run() {
    for (var, want) in [("LITEFLEET_LITESTREAM_BIN", "0.5.17"), ("LITEFLEET_LITESTREAM_015_BIN", "0.5.15")] {
        let bin = std::env::var_os(var).map(PathBuf::from).filter(|p| p.is_file()).unwrap_or_else(|| {
            panic!("{var} does not name a litestream {want} binary: run the tests through scripts/test.sh, which installs it")
        });
        check_version(&bin, want);
    }
}

#[test]
fn litestream_talks_to_the_in_process_s3_server() {
    let Some(bin) = litestream_bin() else {
        return;
    };
    let s3 = S3Server::start();
    s3.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let out_db = dir.path().join("restored.db");
    let url = s3.litestream_url("bkt", "tenants/a.db");
    // An empty replica: "no backups" is fine with -if-replica-exists.
    let out = run_litestream_restore_env(&bin, &url, &out_db, &["-if-replica-exists"], &s3.litestream_env());
    assert!(out.status.success(), "{url}\n{}", describe_output(&out));
    assert!(!out_db.exists());
    assert!(s3.signed_request_count() >= 1, "litestream sent no signed request: {}", describe_output(&out));
    assert_eq!(s3.request_count(), s3.signed_request_count());

    // Without -if-replica-exists the same restore fails.
    let out = run_litestream_restore_env(&bin, &url, &out_db, &[], &s3.litestream_env());
    assert!(!out.status.success(), "{}", describe_output(&out));
}

#[test]
fn litestream_talks_to_moto() {
    let Some(bin) = litestream_bin() else {
        return;
    };
    let Some(moto) = MotoServer::start("bkt") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out_db = dir.path().join("restored.db");
    let url = moto.litestream_url("tenants/a.db");
    let out = run_litestream_restore_env(&bin, &url, &out_db, &["-if-replica-exists"], &moto.litestream_env());
    assert!(out.status.success(), "{url}\n{}", describe_output(&out));
}
