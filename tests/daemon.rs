//! The fleet daemon end to end: the real `litefleet` binary (config mode and the
//! seed's flag mode) against an S3 server on 127.0.0.1 (s3s-fs, in process), with
//! SQLite files written by separate `litefleet-writer` processes. Every replica is
//! judged by restoring it — with `litefleet restore` and with `litestream restore` —
//! and comparing the bytes with the checkpointed source.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::{Daemon, POLL, WAIT};
use common::*;

const G1: &str = "12345678-1234-5678-9abc-123456789012";
const G2: &str = "98765432-4321-8765-cba9-876543210987";
const G3: &str = "abcdef01-2345-6789-abcd-ef0123456789";
const G4: &str = "fedcba98-7654-3210-fedc-ba9876543210";
const G5: &str = "0a0b0c0d-1111-2222-3333-444455556666";
const G6: &str = "0f0f0f0f-aaaa-bbbb-cccc-ddddeeeeffff";
const BUCKET: &str = "fleet";

/// A test's world: a temp dir, an S3 server with the bucket, paths.
struct World {
    dir: tempfile::TempDir,
    s3: S3Server,
    /// The dashboard/API port of the daemon under test.
    port: u16,
}

impl World {
    fn new() -> World {
        let s3 = S3Server::start();
        s3.create_bucket(BUCKET);
        World { dir: tempfile::tempdir().unwrap(), s3, port: free_port() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    /// A config: `watch` is a list of (dir, prefix), `extra` is appended verbatim.
    fn write_config(&self, name: &str, watch: &[(&str, Option<&str>)], extra: &str) -> PathBuf {
        let mut t = String::new();
        for (dir, prefix) in watch {
            t.push_str(&format!("[[watch]]\ndir = {:?}\n", self.path(dir).display().to_string()));
            if let Some(p) = prefix {
                t.push_str(&format!("prefix = {p:?}\n"));
            }
        }
        t.push_str(&format!(
            "[storage]\nurl = \"s3://{BUCKET}\"\nendpoint = {:?}\nregion = \"us-east-1\"\nforce_path_style = true\naccess_key_id = {:?}\nsecret_access_key = {:?}\n",
            self.s3.endpoint(),
            S3Server::ACCESS_KEY,
            S3Server::SECRET_KEY
        ));
        t.push_str(&format!(
            "[replication]\nsync_interval = \"100ms\"\nidle_after = \"3s\"\nstate_dir = {:?}\n",
            self.path("state").display().to_string()
        ));
        t.push_str(&format!("[http]\nlisten = \"127.0.0.1:{}\"\n", self.port));
        t.push_str(extra);
        let p = self.path(name);
        std::fs::write(&p, t).unwrap();
        p
    }

    /// Keys under `databases/<prefix>/` in the bucket.
    fn objects(&self, prefix: &str) -> Vec<String> {
        let want = format!("{prefix}/");
        self.s3.objects(BUCKET).into_iter().filter(|k| k.starts_with(&want)).collect()
    }

    fn wait_objects(&self, prefix: &str) {
        assert!(wait_until(WAIT, POLL, || !self.objects(prefix).is_empty()), "no replica under {prefix}");
    }

    /// `GET path` on the daemon's API, parsed as JSON.
    fn api(&self, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.text(path)).unwrap()
    }

    fn text(&self, path: &str) -> String {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let r = http_request(addr, "GET", path, &[], b"", Duration::from_secs(10)).unwrap();
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        String::from_utf8_lossy(&r.body).into_owned()
    }

    /// The seed's status of the client at `path` in `/api/status`.
    fn status_of(&self, path: &Path) -> Option<String> {
        let v = self.api("/api/status");
        v["clients"]
            .as_array()?
            .iter()
            .find(|c| c["databasePath"] == path.display().to_string())
            .and_then(|c| c["status"].as_str().map(str::to_owned))
    }

    fn expect_status(&self, path: &Path, want: &str) {
        let ok = wait_until(WAIT, POLL, || self.status_of(path).as_deref() == Some(want));
        assert!(ok, "{} never {want}: {}", path.display(), self.api("/api/status"));
    }

    fn env(&self) -> Vec<(String, String)> {
        self.s3.litestream_env()
    }

    /// Restores `databases/<prefix>` with `litefleet restore` and, when available,
    /// `litestream restore`, and asserts both equal `source`.
    fn assert_restores(&self, prefix: &str, source: &[u8]) {
        let url =
            format!("s3://{BUCKET}/{prefix}?endpoint={}&region=us-east-1&force-path-style=true", self.s3.endpoint());
        let out = self.path(&format!("restored-{}.db", prefix.replace('/', "_")));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.args(["restore", &url, "-o", out.to_str().unwrap(), "--integrity-check", "quick"]);
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(o.status.success(), "litefleet restore {prefix}: {}", describe_output(&o));
        let got = std::fs::read(&out).unwrap();
        assert!(got == source, "litefleet restore of {prefix} differs at {:?}", first_difference(&got, source, 4096));
        if let Some(bin) = litestream_bin() {
            let out2 = self.path(&format!("litestream-{}.db", prefix.replace('/', "_")));
            let _ = std::fs::remove_file(&out2);
            let o = run_litestream_restore_env(&bin, &self.s3.litestream_url(BUCKET, prefix), &out2, &[], &self.env());
            assert!(o.status.success(), "litestream restore {prefix}: {}", describe_output(&o));
            let got = std::fs::read(&out2).unwrap();
            assert!(
                got == source,
                "litestream restore of {prefix} differs at {:?}",
                first_difference(&got, source, 4096)
            );
        }
    }
}

fn db(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.db"))
}

/// A database with some rows, written by a separate process that then exits.
fn make_db(path: &Path, rows: u32) {
    let mut w = Writer::open(path);
    w.cmd(&format!("insert t {rows} 200"));
    w.quit();
}

/// Start-up with existing tenants, then every way a tenant comes and goes.
#[test]
fn tenants_come_and_go_and_every_replica_restores() {
    let w = World::new();
    let clients = w.mkdir("data/clients");
    let outside = w.mkdir("elsewhere");
    for (i, id) in [G1, G2, G3].iter().enumerate() {
        make_db(&db(&clients, id), 10 + i as u32);
    }
    make_db(&clients.join("regular-name.db"), 3);
    // An accelerated lifecycle: the replicas restored below hold L1, L2 and L9 files
    // written by the daemon, and L0 files deleted by its retention.
    let lifecycle = "[lifecycle]\nlevels = [\"1s\", \"2s\"]\nsnapshot_interval = \"3s\"\nl0_retention = \"1s\"\n";
    // Restore validation every second, while the lifecycle compacts and deletes.
    let lifecycle = format!("{lifecycle}[validation]\nenabled = true\ninterval = \"1s\"\ntenants = 5\n");
    let config = w.write_config("fleet.toml", &[("data/clients", None)], &lifecycle);
    let d = Daemon::config(&config, w.dir.path());
    d.expect("🎯 Monitoring 3 clients across 1 directories");
    assert_eq!(d.count("✅ Client registered"), 3, "{}", d.log());
    d.expect("Skipped");
    assert!(d.log().contains("regular-name.db"), "{}", d.log());
    for id in [G1, G2, G3] {
        d.expect(&format!("✅ Client registered: {id} -> s3://{BUCKET}/databases/{id}/"));
        w.wait_objects(&format!("databases/{id}"));
    }
    assert!(w.objects("databases/regular-name").is_empty());
    // The seed's JSON: every registered tenant, its storage path, and the counts.
    for id in [G1, G2, G3] {
        w.expect_status(&db(&clients, id), "active");
    }
    let status = w.api("/api/status");
    assert_eq!(status["bucket"], BUCKET, "{status}");
    assert_eq!(status["totalClients"], 3, "{status}");
    let c = status["clients"].as_array().unwrap().iter().find(|c| c["clientId"] == G1).cloned().unwrap();
    assert_eq!(c["s3Path"], format!("databases/{G1}"), "{c}");

    // The seed's way to add a tenant: touch. Registered at once, shipped on first write.
    let g4 = db(&clients, G4);
    std::fs::File::create(&g4).unwrap();
    d.expect(&format!("📁 Database created: {}", g4.display()));
    d.expect(&format!("✅ Client registered: {G4}"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(w.objects(&format!("databases/{G4}")).is_empty(), "an empty file has nothing to ship yet");
    let mut writer = Writer::open(&g4);
    writer.cmd("insert t 5 300");
    w.wait_objects(&format!("databases/{G4}"));

    // Atomic rename into the folder (built elsewhere on the same filesystem).
    let staged = outside.join(format!("{G5}.db"));
    make_db(&staged, 7);
    std::fs::rename(&staged, db(&clients, G5)).unwrap();
    d.expect(&format!("✅ Client registered: {G5}"));
    w.wait_objects(&format!("databases/{G5}"));

    // Remove one: unregistered, its replica stays and still restores.
    let g2_source = checkpointed_bytes(&db(&clients, G2));
    std::fs::remove_file(db(&clients, G2)).unwrap();
    let _ = std::fs::remove_file(clients.join(format!("{G2}.db-wal")));
    let _ = std::fs::remove_file(clients.join(format!("{G2}.db-shm")));
    d.expect(&format!("🗑️  Database removed: {}", db(&clients, G2).display()));
    d.expect(&format!("❌ Client unregistered: {G2}"));

    // Move one out of the folder: unregistered too.
    let g3_source = checkpointed_bytes(&db(&clients, G3));
    std::fs::rename(db(&clients, G3), outside.join(format!("{G3}.db"))).unwrap();
    d.expect(&format!("❌ Client unregistered: {G3}"));
    assert!(w.status_of(&db(&clients, G2)).is_none() && w.status_of(&db(&clients, G3)).is_none());
    w.expect_status(&db(&clients, G4), "active");
    w.expect_status(&db(&clients, G5), "active");

    // More writes to a tenant that stays; they ship.
    writer.cmd("update t 3 300");
    writer.cmd("insert t 2 5000");
    let g4_source = {
        std::thread::sleep(Duration::from_millis(500));
        checkpointed_bytes(&g4)
    };
    // Let the lifecycle run a few passes (levels of 1 s and 2 s, snapshots every 3 s).
    std::thread::sleep(Duration::from_secs(4));
    // Validation has proved the replicas against the live databases, through S3, while
    // files were compacted and deleted: passed, never failed.
    d.expect("🔍 validation passed");
    let clients_json = w.api("/api/clients");
    let validated: Vec<&serde_json::Value> =
        clients_json["clients"].as_array().unwrap().iter().filter(|c| c["validation"]["outcome"] == "passed").collect();
    assert!(!validated.is_empty(), "{clients_json}");
    assert!(validated[0]["validation"]["detail"].as_str().unwrap().contains("equal to the live database"));
    let metrics = w.text("/metrics");
    assert!(metrics.contains("litefleet_validations_total{result=\"passed\"}"), "{metrics}");
    assert!(!metrics.contains("result=\"failed\""), "{metrics}\n{}", d.log());
    assert!(!d.log().contains("validation FAILED"), "{}", d.log());
    let log = d.stop();
    assert!(log.contains("👋 stopped"), "{log}");
    writer.quit();
    let g1 = w.objects(&format!("databases/{G1}"));
    for level in ["/0001/", "/0002/", "/0009/"] {
        assert!(g1.iter().any(|k| k.contains(level)), "no {level} file for {G1}: {g1:?}");
    }

    w.assert_restores(&format!("databases/{G1}"), &checkpointed_bytes(&db(&clients, G1)));
    w.assert_restores(&format!("databases/{G2}"), &g2_source);
    w.assert_restores(&format!("databases/{G3}"), &g3_source);
    w.assert_restores(&format!("databases/{G4}"), &g4_source);
    w.assert_restores(&format!("databases/{G5}"), &checkpointed_bytes(&db(&clients, G5)));

    // `litefleet tenants` lists every replica, including the two whose file is gone.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["tenants", "--config", config.to_str().unwrap()]).current_dir(w.dir.path());
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", describe_output(&o));
    for id in [G1, G2, G3, G4, G5] {
        assert!(table.contains(&format!("databases/{id}")), "{id} missing:\n{table}");
    }
    let gone: Vec<&str> = table.lines().filter(|l| l.contains("(file gone)")).collect();
    assert_eq!(gone.len(), 2, "{table}");
    assert!(gone.iter().any(|l| l.contains(G2)) && gone.iter().any(|l| l.contains(G3)), "{table}");
    assert!(table.contains("5 tenant(s)"), "{table}");

    // Restore one tenant by id through the config.
    let out = w.path("by-id.db");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["restore", "--config", config.to_str().unwrap(), G2, "-o", out.to_str().unwrap()]);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "{}", describe_output(&o));
    assert!(std::fs::read(&out).unwrap() == g2_source, "restore by id differs");
}

/// The seed's own example: the same GUID in prod/ and staging/. One replicates, the
/// other is a conflict naming both paths; per-directory prefixes (by SIGHUP) let both
/// replicate. A reload with a typo is refused with its line and the daemon carries on;
/// a reload adding a directory picks up its tenants.
#[test]
fn same_guid_in_two_directories_conflicts_until_prefixes_and_sighup_reloads() {
    let w = World::new();
    let prod = w.mkdir("data/prod");
    let staging = w.mkdir("data/staging");
    let extra = w.mkdir("data/extra");
    make_db(&db(&prod, G1), 5);
    make_db(&db(&staging, G1), 9);
    let config = w.write_config("fleet.toml", &[("data/prod", None), ("data/staging", None)], "");
    let d = Daemon::config(&config, w.dir.path());
    d.expect("🎯 Monitoring 1 clients across 2 directories");
    d.expect("❌ Conflict:");
    let log = d.log();
    let line = log.lines().find(|l| l.contains("❌ Conflict:")).unwrap_or_default();
    assert!(line.contains(&db(&prod, G1).display().to_string()), "{line}");
    assert!(line.contains(&db(&staging, G1).display().to_string()), "{line}");
    w.wait_objects(&format!("databases/{G1}"));
    assert!(w.objects(&format!("databases/staging/{G1}")).is_empty());
    w.expect_status(&db(&prod, G1), "active");
    w.expect_status(&db(&staging, G1), "conflict");

    // A typo: refused with file, line and key; the daemon keeps running.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("sync_interval = \"100ms\"", "sync_intervall = \"100ms\"")).unwrap();
    d.signal("HUP");
    d.expect("config reload refused");
    let log = d.log();
    let refusal = log.lines().find(|l| l.contains("config reload refused")).unwrap_or_default().to_owned();
    assert!(refusal.contains("fleet.toml:") && refusal.contains("sync_intervall"), "{refusal}");

    // Per-directory prefixes plus a new directory, by SIGHUP.
    make_db(&db(&extra, G6), 4);
    w.write_config(
        "fleet.toml",
        &[("data/prod", Some("prod")), ("data/staging", Some("staging")), ("data/extra", None)],
        "",
    );
    d.signal("HUP");
    d.expect("configuration reloaded");
    d.expect(&format!("✅ Client registered: {G1} -> s3://{BUCKET}/databases/staging/{G1}/"));
    d.expect(&format!("✅ Client registered: {G1} -> s3://{BUCKET}/databases/prod/{G1}/"));
    d.expect(&format!("✅ Client registered: {G6} -> s3://{BUCKET}/databases/{G6}/"));
    w.wait_objects(&format!("databases/staging/{G1}"));
    w.wait_objects(&format!("databases/prod/{G1}"));
    w.wait_objects(&format!("databases/{G6}"));
    d.stop();
    w.assert_restores(&format!("databases/prod/{G1}"), &checkpointed_bytes(&db(&prod, G1)));
    w.assert_restores(&format!("databases/staging/{G1}"), &checkpointed_bytes(&db(&staging, G1)));
    // The replica written before the prefixes is prod's (the first directory won).
    w.assert_restores(&format!("databases/{G1}"), &checkpointed_bytes(&db(&prod, G1)));
    w.assert_restores(&format!("databases/{G6}"), &checkpointed_bytes(&db(&extra, G6)));
    // By id, G1 is ambiguous now: the error names every replica.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["restore", "--config", config.to_str().unwrap(), G1, "-o", w.path("x.db").to_str().unwrap()]);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success() && err.contains("several replicas"), "{}", describe_output(&o));
    for p in [format!("databases/{G1}"), format!("databases/prod/{G1}"), format!("databases/staging/{G1}")] {
        assert!(err.contains(&p), "{err}");
    }
}

/// Garbage and corrupt tenant files are `error` (with the reason, retried), a symlink
/// out of the folder is refused, and a healthy tenant written meanwhile replicates.
#[test]
fn bad_tenant_files_are_contained() {
    let w = World::new();
    let clients = w.mkdir("data/clients");
    let outside = w.mkdir("secret");
    // Random bytes.
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(db(&clients, G1), &garbage).unwrap();
    // A SQLite header followed by garbage: opens, then fails.
    let mut corrupt = b"SQLite format 3\0".to_vec();
    corrupt.extend_from_slice(&garbage[16..]);
    std::fs::write(db(&clients, G2), &corrupt).unwrap();
    // A symlink to a database outside the folder.
    make_db(&db(&outside, G3), 3);
    std::os::unix::fs::symlink(db(&outside, G3), db(&clients, G3)).unwrap();
    // A healthy tenant.
    make_db(&db(&clients, G4), 3);
    let config = w.write_config("fleet.toml", &[("data/clients", None)], "");
    let d = Daemon::config(&config, w.dir.path());
    d.expect("🎯 Monitoring");
    d.expect(&format!("sync of {} failed", db(&clients, G1).display()));
    d.expect(&format!("sync of {} failed", db(&clients, G2).display()));
    d.expect("not a SQLite database");
    d.expect(&format!("Refused {}", db(&clients, G3).display()));
    let mut writer = Writer::open(&db(&clients, G4));
    for _ in 0..5 {
        writer.cmd("insert t 20 500");
        std::thread::sleep(Duration::from_millis(150));
    }
    w.expect_status(&db(&clients, G1), "error");
    w.expect_status(&db(&clients, G2), "error");
    w.expect_status(&db(&clients, G4), "active");
    let skipped = w.api("/api/skipped").to_string();
    assert!(skipped.contains(&db(&clients, G3).display().to_string()), "{skipped}");
    // Errors are retried with backoff (a second attempt is logged).
    d.expect_n(&format!("sync of {} failed", db(&clients, G1).display()), 2);
    std::thread::sleep(Duration::from_millis(400));
    let source = checkpointed_bytes(&db(&clients, G4));
    d.stop();
    writer.quit();
    w.assert_restores(&format!("databases/{G4}"), &source);
    assert!(w.objects(&format!("databases/{G1}")).is_empty());
    assert!(w.objects(&format!("databases/{G3}")).is_empty(), "nothing outside the folder is replicated");
}

/// SIGTERM right after a burst: the final sync ships everything SQLite acknowledged.
#[test]
fn sigterm_after_a_burst_loses_nothing() {
    let w = World::new();
    let clients = w.mkdir("data/clients");
    let ids = [G1, G2, G3];
    let mut writers: Vec<Writer> = ids.iter().map(|id| Writer::open(&db(&clients, id))).collect();
    for wr in &mut writers {
        wr.cmd("insert t 5 100");
    }
    // A long sync interval: whatever the burst writes is still waiting at SIGTERM.
    let config = w.write_config("fleet.toml", &[("data/clients", None)], "");
    let text =
        std::fs::read_to_string(&config).unwrap().replace("sync_interval = \"100ms\"", "sync_interval = \"30s\"");
    std::fs::write(&config, text).unwrap();
    let d = Daemon::config(&config, w.dir.path());
    d.expect("🎯 Monitoring 3 clients");
    for id in ids {
        w.wait_objects(&format!("databases/{id}"));
    }
    for round in 0..20 {
        for wr in &mut writers {
            wr.cmd(&format!("insert t 3 {}", 100 + round));
            wr.cmd("update t 1 100");
        }
    }
    let sources: Vec<Vec<u8>> = ids.iter().map(|id| checkpointed_bytes(&db(&clients, id))).collect();
    let log = d.stop();
    assert!(log.contains("final_syncs=3"), "{log}");
    for w2 in writers {
        w2.quit();
    }
    for (id, source) in ids.iter().zip(&sources) {
        w.assert_restores(&format!("databases/{id}"), source);
    }
}

/// A SIGTERM that arrives while the daemon is still starting (tenants registered, first
/// files possibly shipped, the run loop not yet entered) stops it cleanly: exit 0, not
/// killed by the signal's default action (seen on CI before the handlers were installed
/// first).
#[test]
fn sigterm_while_starting_is_a_clean_stop() {
    let w = World::new();
    let clients = w.mkdir("data/clients");
    for id in [G1, G2, G3] {
        make_db(&db(&clients, id), 3);
    }
    let config = w.write_config("fleet.toml", &[("data/clients", None)], "");
    let d = Daemon::config(&config, w.dir.path());
    d.expect("✅ Client registered");
    let log = d.stop();
    assert!(log.contains("👋 stopped"), "{log}");
}

/// The seed's flags, exactly: `-watch-dir a,b -bucket NAME` (S3 from AWS_* variables)
/// and `-dsn FILE -db-name NAME`; `-h` prints the seed's usage.
#[test]
fn the_seeds_flag_mode() {
    let bin = env!("CARGO_BIN_EXE_litefleet");
    let o = Command::new(bin).arg("-h").output().unwrap();
    let usage = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", describe_output(&o));
    for flag in ["-watch-dir string", "-bucket string", "-dsn string", "-db-name string"] {
        assert!(usage.contains(flag), "{usage}");
    }
    assert!(usage.contains("directory to watch for GUID.db files (comma-separated for multiple)"), "{usage}");
    let o = Command::new(bin).args(["-watch-dir", "a", "-dsn", "b.db"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", describe_output(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("-dsn"), "{}", describe_output(&o));
    let o = Command::new(bin).args(["-watch-dir", "a", "-bogus", "1"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("flag provided but not defined: -bogus"));

    let w = World::new();
    let a = w.mkdir("data/a");
    let b = w.mkdir("data/b");
    make_db(&db(&a, G1), 4);
    make_db(&db(&b, G2), 6);
    let mut env = w.env();
    env.push(("AWS_ENDPOINT_URL".into(), w.s3.endpoint()));
    let port = free_port().to_string();
    let state = w.path("state").display().to_string();
    let d = Daemon::spawn(
        &[
            "-watch-dir",
            "data/a,data/b",
            "-bucket",
            BUCKET,
            "-listen",
            &format!("127.0.0.1:{port}"),
            "-state-dir",
            &state,
        ],
        &env,
        w.dir.path(),
    );
    d.expect("🏢 litefleet Multi-Client Manager (Directory Mode)");
    d.expect(&format!("📦 S3 Bucket: {BUCKET}"));
    d.expect("🎯 Monitoring 2 clients across 2 directories");
    w.wait_objects(&format!("databases/{G1}"));
    w.wait_objects(&format!("databases/{G2}"));
    d.stop();
    w.assert_restores(&format!("databases/{G1}"), &checkpointed_bytes(&db(&a, G1)));
    w.assert_restores(&format!("databases/{G2}"), &checkpointed_bytes(&db(&b, G2)));

    // Legacy mode: one database, stored under databases/<db-name>/.
    let single = w.path("data/single.db");
    let mut writer = Writer::open(&single);
    writer.cmd("insert t 8 100");
    let d = Daemon::spawn(
        &[
            "--dsn",
            single.to_str().unwrap(),
            "-bucket",
            BUCKET,
            "-db-name=legacy-system",
            "-listen",
            &format!("127.0.0.1:{}", free_port()),
            "-state-dir",
            &state,
        ],
        &env,
        w.dir.path(),
    );
    d.expect("(Legacy Mode)");
    d.expect(&format!("✅ Client registered: legacy-system -> s3://{BUCKET}/databases/legacy-system/"));
    w.wait_objects("databases/legacy-system");
    writer.cmd("insert t 2 100");
    std::thread::sleep(Duration::from_millis(400));
    let source = checkpointed_bytes(&single);
    d.stop();
    writer.quit();
    w.assert_restores("databases/legacy-system", &source);
}

/// Hooks in the daemon: the committed shard-prefix example names tenants
/// `tenants/<xx>/<GUID>` (and they restore from there); a hook that loops is stopped
/// and, with `on_error = "refuse"`, that tenant is `error` while the others replicate;
/// replacing the module under the running daemon renames the next tenant, and garbage
/// keeps the running hook.
#[test]
fn hooks_name_refuse_and_reload_under_the_running_daemon() {
    use common::hook_wat::{Behaviour, component};
    let w = World::new();
    let clients = w.mkdir("data/clients");
    let module = w.path("hook.wasm");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/examples/shard-prefix/shard-prefix.wasm");
    std::fs::copy(&example, &module).unwrap();
    make_db(&db(&clients, G1), 4);
    let hooks = format!("[hooks]\nmodule = {:?}\non_error = \"refuse\"\n", module.display().to_string());
    let config = w.write_config("fleet.toml", &[("data/clients", None)], &hooks);
    let d = Daemon::config(&config, w.dir.path());
    let shard = |id: &str| format!("tenants/{}/{id}", &id[..2]);
    d.expect(&format!("✅ Client registered: {G1} -> s3://{BUCKET}/{}/", shard(G1)));
    w.wait_objects(&shard(G1));
    let status = w.api("/api/status");
    assert_eq!(status["clients"][0]["s3Path"], shard(G1), "{status}");

    // A hook that loops for G2's first digit and names the others `<base>/<id>`.
    let looping = component(&Behaviour::Split {
        first: G2.as_bytes()[0],
        bad: Box::new(Behaviour::Loop),
        good: Box::new(Behaviour::PrefixWithId { base: "named".into() }),
    });
    let tmp = w.path("hook.wasm.new");
    std::fs::write(&tmp, &looping).unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    d.expect("reload");
    std::thread::sleep(Duration::from_millis(500));
    make_db(&db(&clients, G2), 3);
    make_db(&db(&clients, G3), 3);
    d.expect(&format!("✅ Client registered: {G3} -> s3://{BUCKET}/named/{G3}/"));
    w.expect_status(&db(&clients, G2), "error");
    let api = w.api("/api/status").to_string();
    assert!(w.objects(&format!("named/{G2}")).is_empty() && w.objects(&format!("databases/{G2}")).is_empty(), "{api}");
    w.wait_objects(&format!("named/{G3}"));

    // Garbage keeps the running hook: the next tenant is still named by it.
    std::fs::write(&tmp, b"not a component").unwrap();
    std::fs::rename(&tmp, &module).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    make_db(&db(&clients, G4), 3);
    d.expect(&format!("✅ Client registered: {G4} -> s3://{BUCKET}/named/{G4}/"));
    w.wait_objects(&format!("named/{G4}"));
    d.stop();
    w.assert_restores(&shard(G1), &checkpointed_bytes(&db(&clients, G1)));
    w.assert_restores(&format!("named/{G3}"), &checkpointed_bytes(&db(&clients, G3)));
}
