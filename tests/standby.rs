//! Follow copies and the warm standby, with real processes: a `litefleet daemon`
//! primary (or the real `litestream`) writing replicas, `litefleet standby` or
//! `litefleet restore -f` following them, tenants written by separate
//! `litefleet-writer` processes, and `kill -9` at arbitrary moments. Every copy is
//! judged byte for byte against its source's checkpointed bytes.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::browser::{chromium_or_skip, launch};
use common::daemon::{Daemon, api};
use common::*;

const T1: &str = "11111111-2222-3333-4444-555555555555";
const T2: &str = "22222222-3333-4444-5555-666666666666";
const T3: &str = "33333333-4444-5555-6666-777777777777";
const BUCKET: &str = "standby";
const POLL: Duration = Duration::from_millis(50);
/// Bound of every wait for a copy to catch up.
const CATCH_UP: Duration = Duration::from_secs(40);

struct Sides {
    dir: tempfile::TempDir,
    watch: PathBuf,
    copies: PathBuf,
    primary: PathBuf,
    standby: PathBuf,
    standby_port: u16,
}

impl Sides {
    /// A primary config (watch folder, `[change_log]` on or off) and a standby config
    /// over the same `[storage]` section.
    fn new(storage: &str, change_log: bool, scan_interval: &str) -> Sides {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let watch = dir.path().join("clients");
        let copies = dir.path().join("standby");
        std::fs::create_dir_all(&watch).unwrap_or_else(|e| panic!("{e}"));
        let (primary_port, standby_port) = (free_port(), free_port());
        let primary = dir.path().join("primary.toml");
        let text = format!(
            r#"[[watch]]
dir = {watch:?}

{storage}

[replication]
sync_interval = "100ms"
idle_after = "2s"
state_dir = {state:?}

[change_log]
enabled = {change_log}
interval = "200ms"

[http]
listen = "127.0.0.1:{primary_port}"
"#,
            watch = watch.display().to_string(),
            state = dir.path().join("state").display().to_string(),
        );
        std::fs::write(&primary, text).unwrap_or_else(|e| panic!("{e}"));
        let standby = dir.path().join("standby.toml");
        let text = format!(
            r#"{storage}

[standby]
dir = {copies:?}
poll_interval = "200ms"
scan_interval = "{scan_interval}"
concurrency = 4

[http]
listen = "127.0.0.1:{standby_port}"
"#,
            copies = copies.display().to_string(),
        );
        std::fs::write(&standby, text).unwrap_or_else(|e| panic!("{e}"));
        Sides { dir, watch, copies, primary, standby, standby_port }
    }

    fn db(&self, id: &str) -> PathBuf {
        self.watch.join(format!("{id}.db"))
    }

    fn copy(&self, id: &str) -> PathBuf {
        self.copies.join(format!("{id}.db"))
    }

    /// Where the copy of a removed tenant goes.
    fn removed_copy(&self, id: &str) -> PathBuf {
        self.copies.join(".removed").join(format!("{id}.db"))
    }

    fn start_primary(&self) -> Daemon {
        let d = Daemon::config(&self.primary, self.dir.path());
        d.expect("🎯 Monitoring");
        d
    }

    fn start_standby(&self) -> Daemon {
        let d =
            Daemon::spawn(&["standby", "--config", self.standby.to_str().unwrap_or_default()], &[], self.dir.path());
        d.expect("standby: listed the storage");
        d
    }

    fn standby_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.standby_port))
    }

    fn totals(&self) -> serde_json::Value {
        api(self.standby_addr(), "/api/standby").unwrap_or_default()
    }

    fn tenant(&self, id: &str) -> serde_json::Value {
        let all = api(self.standby_addr(), "/api/standby/tenants").unwrap_or_default();
        all.as_array()
            .and_then(|a| a.iter().find(|t| t["prefix"].as_str().is_some_and(|p| p.ends_with(id))).cloned())
            .unwrap_or_default()
    }

    /// Waits until the standby's copy of `id` is byte-identical to the source's
    /// checkpointed bytes (the source is not written meanwhile).
    fn wait_identical(&self, id: &str, standby: &Daemon) {
        let want = checkpointed_bytes(&self.db(id));
        let mut got = Vec::new();
        let same = wait_until(CATCH_UP, POLL, || {
            got = std::fs::read(self.copy(id)).unwrap_or_default();
            got == want
        });
        assert!(
            same,
            "copy of {id} never matched its source (first difference {:?}, {} vs {} bytes); standby: {}\nlog:\n{}",
            first_difference(&got, &want, 4096),
            got.len(),
            want.len(),
            self.tenant(id),
            standby.log()
        );
        assert!(integrity_ok(&self.copy(id)));
    }
}

fn moto_storage(moto: &MotoServer) -> String {
    format!(
        "[storage]\nurl = \"s3://{BUCKET}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nforce_path_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"",
        moto.endpoint()
    )
}

/// The whole fleet on S3 with the change log: tenants written, a VACUUM, a tenant
/// created while the standby runs, the standby killed -9 mid-stream and restarted,
/// the primary killed -9 and restarted; after each, every copy is byte-identical to
/// its source. While the fleet is idle the standby lists no replica at all; the page
/// shows every tenant in a real browser; `litestream restore` still restores every
/// tenant of the bucket.
#[test]
fn a_standby_on_s3_keeps_every_tenant_identical_through_kills_and_restarts() {
    let Some(moto) = MotoServer::start(BUCKET) else { return };
    let s = Sides::new(&moto_storage(&moto), true, "1m");
    let mut w1 = Writer::open(&s.db(T1));
    let mut w2 = Writer::open(&s.db(T2));
    w1.cmd("insert t 200 300");
    w2.cmd("insert t 50 1000");
    let primary = s.start_primary();
    let standby = s.start_standby();
    for round in 0..10 {
        w1.cmd(&format!("insert t 20 {}", 100 + round));
        w2.cmd("update t 10 500");
        std::thread::sleep(Duration::from_millis(60));
    }
    s.wait_identical(T1, &standby);
    s.wait_identical(T2, &standby);
    assert_eq!(s.totals()["changeLog"], true, "{}", s.totals());

    // Idle: the change log is read, no replica is listed.
    std::thread::sleep(Duration::from_secs(1));
    let before = s.totals();
    std::thread::sleep(Duration::from_secs(3));
    let after = s.totals();
    assert_eq!(before["lists"], after["lists"], "an idle fleet made the standby list replicas: {before} → {after}");
    assert_eq!(before["gets"], after["gets"], "{before} → {after}");
    assert_eq!(after["puts"], 0, "a standby never writes: {after}");

    // A VACUUM (the database shrinks) and a new tenant.
    w1.cmd("delete t 150");
    w1.cmd("vacuum");
    let mut w3 = Writer::open(&s.db(T3));
    w3.cmd("insert t 30 700");
    s.wait_identical(T1, &standby);
    s.wait_identical(T3, &standby);
    // Readers of the copy see it while it follows.
    let copy = rusqlite::Connection::open(s.copy(T1)).unwrap_or_else(|e| panic!("{e}"));
    let rows: i64 = copy.query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows, 200 + 200 - 150);
    drop(copy);

    // kill -9 of the standby while tenants write, then a restart: it resumes.
    let writes = std::thread::spawn({
        let (db1, db2) = (s.db(T1), s.db(T2));
        move || {
            let mut a = Writer::open(&db1);
            let mut b = Writer::open(&db2);
            for _ in 0..30 {
                a.cmd("insert t 5 400");
                b.cmd("update t 5 800");
                std::thread::sleep(Duration::from_millis(20));
            }
            a.quit();
            b.quit();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    standby.kill9();
    writes.join().unwrap_or_else(|_| panic!("writer thread"));
    for id in [T1, T2, T3] {
        assert!(integrity_ok(&s.copy(id)), "copy of {id} after kill -9 of the standby");
    }
    let standby = s.start_standby();
    for id in [T1, T2, T3] {
        s.wait_identical(id, &standby);
    }

    // kill -9 of the primary, writes while it is down, then its restart: the standby
    // learns of the restart from the log and lists the storage once.
    primary.kill9();
    w2.cmd("insert t 40 300");
    w3.cmd("delete t 10");
    let primary = s.start_primary();
    s.wait_identical(T2, &standby);
    s.wait_identical(T3, &standby);
    assert!(standby.log().contains("started (boot"), "{}", standby.log());

    // A tenant deleted on the primary stops replicating there, and its backups stay. The
    // standby stops following it: its copy, as it was at the last commit, moves to
    // `.removed/`, where a daemon promoted onto the standby's directory does not see it.
    w3.cmd("insert t 2 100");
    // Shipped before the delete: a commit deleted within the pacing window (one sync per
    // `sync_interval` after a burst of two) never ships — the files are gone — and that
    // race, not the standby, made this test fail now and then.
    s.wait_identical(T3, &standby);
    let t3_last = checkpointed_bytes(&s.db(T3));
    w3.quit();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.db(T3).display()));
    }
    primary.expect("Client unregistered");
    w2.cmd("insert t 3 100");
    s.wait_identical(T2, &standby);
    assert!(wait_until(CATCH_UP, POLL, || s.tenant(T3)["state"] == "removed"), "{}", s.tenant(T3));
    assert!(!s.copy(T3).exists(), "the copy of a deleted tenant is still in the layout");
    assert!(std::fs::read(s.removed_copy(T3)).unwrap_or_default() == t3_last, "the copy of a deleted tenant changed");
    assert!(standby.log().contains("deleted on the primary"), "{}", standby.log());
    // A tenant deleted while the standby is down: the restarted standby learns it from
    // the removal marker (not from the log), and does not bring the other one back.
    standby.kill9();
    w2.cmd("insert t 1 100");
    std::thread::sleep(Duration::from_millis(500));
    let t2_last = checkpointed_bytes(&s.db(T2));
    w2.quit();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.db(T2).display()));
    }
    assert!(wait_until(CATCH_UP, POLL, || primary.log().matches("Client unregistered").count() == 2));
    // The change log's next write (every 200 ms) carries the removal marker.
    std::thread::sleep(Duration::from_secs(2));
    let standby = s.start_standby();
    s.wait_identical(T1, &standby);
    for id in [T2, T3] {
        assert!(wait_until(CATCH_UP, POLL, || s.tenant(id)["state"] == "removed"), "{}", s.tenant(id));
        assert!(!s.copy(id).exists(), "a restarted standby restored deleted tenant {id}");
    }
    assert!(std::fs::read(s.removed_copy(T2)).unwrap_or_default() == t2_last, "{}", standby.log());
    // The same tenant created again is followed again, from a new copy.
    let mut w3 = Writer::open(&s.db(T3));
    w3.cmd("insert t 7 900");
    s.wait_identical(T3, &standby);
    assert_eq!(s.tenant(T3)["state"], "following", "{}", s.tenant(T3));

    // The standby's page, in a real browser.
    if let Some(bin) = chromium_or_skip("standby_page") {
        let rt = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async {
            let (_browser, mut page) = launch(&bin, &s.dir.path().join("profile")).await;
            page.call("Page.navigate", serde_json::json!({ "url": format!("http://{}/", s.standby_addr()) })).await;
            page.wait_for("document.querySelectorAll('#tenants tbody tr').length === 3", "three tenant rows").await;
            assert_eq!(page.eval("document.getElementById('t-following').textContent").await, "2");
            assert_eq!(page.eval("document.getElementById('t-removed').textContent").await, "1");
            let text = page.eval("document.body.innerText").await;
            assert!(text.as_str().is_some_and(|t| t.contains(T1) && t.contains("Following the primary's change log")));
            assert!(text.as_str().is_some_and(|t| t.contains("deleted on the primary after TXID")), "{text}");
        });
    }
    let metrics = http_request(s.standby_addr(), "GET", "/metrics", &[], b"", Duration::from_secs(5))
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .unwrap_or_default();
    assert!(metrics.contains("litefleet_standby_tenants{state=\"following\"} 2"), "{metrics}");
    assert!(metrics.contains("litefleet_standby_tenants{state=\"removed\"} 1"), "{metrics}");
    assert!(metrics.contains("litefleet_standby_lag_seconds_bucket"), "{metrics}");

    let log = standby.stop();
    assert!(log.contains("👋 standby stopped"), "{log}");
    primary.stop();
    for wr in [w1, w3] {
        wr.quit();
    }
    // The change log does not disturb Litestream.
    if let Some(bin) = litestream_bin() {
        for id in [T1, T2, T3] {
            let out = s.dir.path().join(format!("litestream-{id}.db"));
            let o = run_litestream_restore_env(
                &bin,
                &moto.litestream_url(&format!("databases/{id}")),
                &out,
                &[],
                &moto.litestream_env(),
            );
            assert!(o.status.success(), "litestream restore {id}: {}", describe_output(&o));
            let got = std::fs::read(&out).unwrap_or_default();
            let want = if id == T2 { t2_last.clone() } else { checkpointed_bytes(&s.db(id)) };
            assert!(got == want, "litestream restore of {id} differs");
        }
    }
}

/// Without a change log (a folder written with `[change_log]` off) the standby lists
/// the storage every `scan_interval`; a prefix removed from the storage stops being
/// followed (its copy moves to `.removed/`), and a replica holding garbage fails alone.
#[test]
fn a_standby_without_a_change_log_lists_the_storage_and_contains_bad_replicas() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let replicas = tmp.path().join("replicas");
    let s = Sides::new(&format!("[storage]\nurl = \"file://{}\"", replicas.display()), false, "1s");
    let mut w1 = Writer::open(&s.db(T1));
    let mut w2 = Writer::open(&s.db(T2));
    w1.cmd("insert t 100 300");
    w2.cmd("insert t 10 300");
    let primary = s.start_primary();
    // A replica of garbage under the root (a torn-looking, then a bad, LTX file).
    let bad = replicas.join("databases/44444444-5555-6666-7777-888888888888/ltx/0");
    std::fs::create_dir_all(&bad).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(bad.join("0000000000000001-0000000000000001.ltx"), vec![7u8; 4096])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(CATCH_UP, POLL, || replicas.join(format!("databases/{T2}")).exists()));
    let standby = s.start_standby();
    w1.cmd("update t 30 900");
    s.wait_identical(T1, &standby);
    s.wait_identical(T2, &standby);
    assert_eq!(s.totals()["changeLog"], false);
    // A copy deleted under the running standby is restored again.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", s.copy(T1).display()));
    }
    w1.cmd("insert t 5 100");
    s.wait_identical(T1, &standby);
    // A second standby on the same directory is refused before it touches anything.
    let o = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_litefleet")).args([
            "standby",
            "--config",
            s.standby.to_str().unwrap_or_default(),
        ]),
        Duration::from_secs(30),
    );
    assert!(!o.status.success(), "{}", describe_output(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("held by another process"), "{}", describe_output(&o));
    assert!(standby.log().contains("no change log in the storage"), "{}", standby.log());
    let bad = s.tenant("44444444-5555-6666-7777-888888888888");
    assert_eq!(bad["state"], "failed", "{bad}");
    assert!(bad["lastError"].as_str().is_some_and(|e| e.contains("0000000000000001-0000000000000001.ltx")), "{bad}");
    // The primary stops; the tenant's prefix is removed from the storage.
    primary.stop();
    w2.quit();
    let t2_last = std::fs::read(s.copy(T2)).unwrap_or_default();
    std::fs::remove_dir_all(replicas.join(format!("databases/{T2}"))).unwrap_or_else(|e| panic!("{e}"));
    assert!(wait_until(CATCH_UP, POLL, || s.tenant(T2)["state"] == "removed"), "{}", s.tenant(T2));
    assert!(!s.copy(T2).exists(), "a removed tenant's copy left the layout");
    assert!(s.removed_copy(T2).exists() && std::fs::read(s.removed_copy(T2)).unwrap_or_default() == t2_last);
    standby.stop();
    w1.quit();
}

/// `litefleet restore -f` of `url` into `out`, expected to end by itself (refused).
fn follow_once(url: &str, out: &Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["restore", "-f", url, "-o", out.to_str().unwrap_or_default()]);
    run_with_timeout(&mut cmd, Duration::from_secs(30))
}

/// Starts `litefleet restore -f` of `url` into `out`.
fn follower(url: &str, out: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_litefleet"))
        .args(["restore", "-f", url, "-o", out.to_str().unwrap_or_default(), "--interval", "50ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `restore -f` of a replica the real `litestream` writes: killed -9 at random moments
/// while the source is written, the copy is always a consistent database that SQLite
/// reads, each restart continues, and at the end it is byte-identical to the source.
/// An existing file that is not a follow copy is refused.
#[test]
fn follow_of_a_litestream_replica_survives_kill_9_at_any_moment() {
    let Some(bin) = litestream_bin() else { return };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "levels:\n  - interval: 2s\nl0-retention: 2s\nl0-retention-check-interval: 1s\ndbs:\n  - path: {}\n    monitor-interval: 50ms\n    replica:\n      type: file\n      path: {}\n      sync-interval: 100ms\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut w = Writer::open(&db);
    w.cmd("insert t 100 500");
    let mut ls = Command::new(&bin)
        .args(["replicate", "-config", config.to_str().unwrap_or_default()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("file://{}", replica.display());
    assert!(wait_until(CATCH_UP, POLL, || replica.join("ltx/0").exists()), "litestream wrote nothing");
    let out = dir.path().join("copy.db");
    // Not a follow copy: refused without --force.
    std::fs::write(&out, b"precious").unwrap_or_else(|e| panic!("{e}"));
    let o = follow_once(&url, &out);
    assert!(
        !o.status.success() && String::from_utf8_lossy(&o.stderr).contains("is not a follow copy"),
        "{}",
        describe_output(&o)
    );
    assert_eq!(std::fs::read(&out).unwrap_or_default(), b"precious");
    std::fs::remove_file(&out).unwrap_or_else(|e| panic!("{e}"));

    // Two followers of one copy: the second is refused.
    let mut first = follower(&url, &out);
    assert!(wait_until(CATCH_UP, POLL, || out.exists()));
    let o = follow_once(&url, &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("held by another process"), "{}", describe_output(&o));
    let _ = first.kill();
    let _ = first.wait();

    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    for round in 0..8 {
        let mut f = follower(&url, &out);
        for i in 0..6 {
            w.cmd(["insert t 20 700", "update t 15 300", "delete t 5", "insert u 3 4000"][(round + i) % 4]);
            std::thread::sleep(Duration::from_millis(30));
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(50 + rng % 400));
        let _ = f.kill();
        let _ = f.wait();
        if out.exists() {
            assert!(integrity_ok(&out), "round {round}: the copy is not a consistent database after kill -9");
        }
    }
    w.cmd("vacuum");
    let mut f = follower(&url, &out);
    // Litestream replicates the last writes within a second or two; then the copy
    // catches up and must equal the source.
    let want = || checkpointed_bytes(&db);
    let same = wait_until(CATCH_UP, Duration::from_millis(200), || std::fs::read(&out).unwrap_or_default() == want());
    let _ = Command::new("kill").args(["-TERM", &f.id().to_string()]).status();
    let status = f.wait().unwrap_or_else(|e| panic!("{e}"));
    let mut err = String::new();
    if let Some(mut e) = f.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    let _ = Command::new("kill").args(["-INT", &ls.id().to_string()]).status();
    let _ = ls.wait();
    let got = std::fs::read(&out).unwrap_or_default();
    assert!(
        same,
        "the copy never matched (first difference {:?}); follower: {err}",
        first_difference(&got, &want(), 4096)
    );
    assert!(status.success(), "{status}: {err}");
    w.quit();
}
