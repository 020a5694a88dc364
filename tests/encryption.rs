//! Client-side encryption end to end (`[encryption]`): the real `litefleet` daemon
//! replicating, compacting and validating tenants written by separate processes, into a
//! folder and into S3 (moto on 127.0.0.1); every replica judged by restoring it and
//! comparing the bytes. Key rotation (old files with key A, new ones with key B),
//! `litefleet reencrypt`, the start-up refusal on a key the keyring lacks,
//! `litestream restore` refusing an encrypted replica, the dashboard's note, and config
//! errors naming their line and key.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::daemon::{Daemon, POLL, WAIT};
use common::*;

const G1: &str = "e1e1e1e1-1111-4222-8333-444455556666";
const G2: &str = "e2e2e2e2-1111-4222-8333-444455556666";
const KA: &str = "ka 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KB: &str = "kb 9f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";
/// An accelerated lifecycle: compaction reads encrypted L0 files and writes L1, L2
/// and snapshots; retention deletes; validation restores through the keyring.
/// The moto test's `[http] token` (ignored by the daemons that have none).
const AUTH: &[(&str, &str)] = &[("Authorization", "Bearer t0k3n")];
const LIFECYCLE: &str = "[lifecycle]\nlevels = [\"1s\", \"2s\"]\nsnapshot_interval = \"3s\"\nl0_retention = \"1s\"\n\
                         [validation]\nenabled = true\ninterval = \"1s\"\ntenants = 5\n";

fn litefleet(args: &[&str], cwd: &Path, envs: &[(String, String)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(args).current_dir(cwd).env_remove("LITEFLEET_KEYS_FILE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, Duration::from_secs(120))
}

struct World {
    dir: tempfile::TempDir,
    port: u16,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::Builder::new().prefix("litefleet-enc-").tempdir().unwrap_or_else(|e| panic!("{e}")),
            port: free_port(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn keyring(&self, name: &str, lines: &[&str]) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, format!("# test keys\n{}\n", lines.join("\n"))).unwrap_or_else(|e| panic!("{e}"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap_or_else(|e| panic!("{e}"));
        }
        p
    }

    /// A config replicating `data/` to `storage` (a `[storage]` table's body).
    fn config(&self, name: &str, storage: &str, encryption: &str, extra: &str) -> PathBuf {
        std::fs::create_dir_all(self.path("data")).unwrap_or_else(|e| panic!("{e}"));
        let text = format!(
            "[[watch]]\ndir = {:?}\n[storage]\n{storage}\n{encryption}\n[replication]\nsync_interval = \"100ms\"\nidle_after = \"3s\"\nstate_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{}\"\n{extra}",
            self.path("data").display().to_string(),
            self.path("state").display().to_string(),
            self.port
        );
        let p = self.path(name);
        std::fs::write(&p, text).unwrap_or_else(|e| panic!("{e}"));
        p
    }

    fn db(&self, id: &str) -> PathBuf {
        self.path(&format!("data/{id}.db"))
    }

    fn get(&self, path: &str) -> String {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap_or_else(|e| panic!("{e}"));
        let r = http_request(addr, "GET", path, AUTH, b"", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status, 200, "{path}: {}", String::from_utf8_lossy(&r.body));
        String::from_utf8_lossy(&r.body).into_owned()
    }

    fn wait_active(&self, d: &Daemon, id: &str) {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap_or_else(|e| panic!("{e}"));
        let ok = wait_until(WAIT, POLL, || {
            let body = http_request(addr, "GET", "/api/status", AUTH, b"", Duration::from_secs(5)).map(|r| r.body);
            let v: serde_json::Value = serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
            v["clients"].as_array().is_some_and(|cs| cs.iter().any(|c| c["clientId"] == id && c["status"] == "active"))
        });
        assert!(ok, "{id} never active; log:\n{}", d.log());
    }
}

/// Every `.ltx` file below `root`, with the key id it is sealed with (`None`: plain).
fn sealed_files(root: &Path) -> Vec<(PathBuf, Option<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "ltx") {
                let b = std::fs::read(&p).unwrap_or_default();
                let key =
                    b.starts_with(b"LFE1").then(|| String::from_utf8_lossy(&b[9..9 + b[8] as usize]).into_owned());
                out.push((p, key));
            }
        }
    }
    out
}

fn restore_to(w: &World, args: &[&str], out: &Path, envs: &[(String, String)]) -> Output {
    let _ = std::fs::remove_file(out);
    let mut all = vec!["restore"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", out.to_str().unwrap_or_default(), "--integrity-check", "quick"]);
    litefleet(&all, w.dir.path(), envs)
}

fn assert_same(out: &Path, want: &[u8], what: &str) {
    let got = std::fs::read(out).unwrap_or_default();
    assert!(got == want, "{what}: restored database differs at {:?}", first_difference(&got, want, 4096));
}

/// Writes `rows` rows in a separate process that then exits.
fn write_rows(db: &Path, rows: u32, size: u32) {
    let mut w = Writer::open(db);
    w.cmd(&format!("insert t {rows} {size}"));
    w.quit();
}

#[test]
fn an_encrypted_folder_replica_rotates_keys_reencrypts_and_restores_byte_identical() {
    let w = World::new();
    let replicas = w.path("replicas");
    let storage = format!("url = \"file://{}\"", replicas.display());
    let ring_a = w.keyring("keys-a", &[KA]);
    let enc_a = format!("[encryption]\nkeys_file = {:?}\nkey_id = \"ka\"", ring_a.display().to_string());
    let config_a = w.config("a.toml", &storage, &enc_a, LIFECYCLE);

    // `--check` reads the keyring and shows ids, never key material.
    let o = litefleet(&["daemon", "--config", config_a.to_str().unwrap_or_default(), "--check"], w.dir.path(), &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && text.contains("encryption=on") && text.contains("\"ka\""), "{text}");
    assert!(!text.contains("0001020304"), "key material printed: {text}");

    // Key A: the daemon replicates, compacts, snapshots and validates, all encrypted.
    std::fs::create_dir_all(w.path("data")).unwrap_or_else(|e| panic!("{e}"));
    write_rows(&w.db(G1), 300, 500);
    let d = Daemon::config(&config_a, w.dir.path());
    w.wait_active(&d, G1);
    let mut writer = Writer::open(&w.db(G1));
    writer.cmd("insert t 200 3000");
    writer.cmd("update t 50 700");
    // Levels of 1 s and 2 s, snapshots every 3 s, validation every second.
    std::thread::sleep(Duration::from_secs(5));
    d.expect("🔍 validation passed");
    assert!(!d.log().contains("validation FAILED") && !d.log().contains("damaged"), "{}", d.log());
    // The dashboard says so, and offers no litestream command.
    let board = w.get("/");
    assert!(board.contains("id=\"encryption\"") && board.contains("litestream restore</code> cannot"), "{board}");
    let page = w.get(&format!("/tenants/{G1}"));
    assert!(page.contains("encryption-note") && !page.contains("cmd-litestream"), "{page}");
    writer.quit();
    let log = d.stop();
    assert!(!log.contains("0001020304"), "key material in the log");
    let source = checkpointed_bytes(&w.db(G1));
    let files = sealed_files(&replicas.join(format!("databases/{G1}")));
    assert!(files.iter().any(|(p, _)| p.to_string_lossy().contains("/ltx/9/")), "no snapshot: {files:?}");
    assert!(files.iter().any(|(p, _)| p.to_string_lossy().contains("/ltx/1/")), "no L1: {files:?}");
    assert!(files.iter().all(|(_, k)| k.as_deref() == Some("ka")), "{files:?}");
    // litefleet's own objects stay plain; the key is recorded.
    assert!(replicas.join("_litefleet/keys/ka").is_file());

    let url = format!("file://{}", replicas.join(format!("databases/{G1}")).display());
    let out = w.path("out.db");
    let o = restore_to(&w, &[&url, "--keys-file", ring_a.to_str().unwrap_or_default()], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore --keys-file A");
    // The keyring through the environment, as the flag's env var.
    let env = vec![("LITEFLEET_KEYS_FILE".to_owned(), ring_a.display().to_string())];
    let o = restore_to(&w, &[&url], &out, &env);
    assert!(o.status.success(), "{}", describe_output(&o));
    // No keyring: refused, naming an object; nothing left at the output.
    let o = restore_to(&w, &[&url], &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains(".ltx") && err.contains("no encryption keys are configured"), "{err}");
    assert!(!out.exists(), "a failed restore left {}", out.display());
    // Litestream cannot read it, and leaves no database behind.
    if let Some(bin) = litestream_bin() {
        let ls_out = w.path("litestream.db");
        let o = run_litestream_restore(&bin, &url, &ls_out, &[]);
        assert!(!o.status.success(), "litestream restored an encrypted replica: {}", describe_output(&o));
        assert!(!ls_out.exists() || !integrity_ok(&ls_out), "litestream left a database: {}", describe_output(&o));
    }

    // Rotation: B is the current key, A stays in the keyring for the old files.
    let ring_ab = w.keyring("keys-ab", &[KA, KB]);
    let enc_ab = format!("[encryption]\nkeys_file = {:?}\nkey_id = \"kb\"", ring_ab.display().to_string());
    let config_ab = w.config("ab.toml", &storage, &enc_ab, "");
    let d = Daemon::config(&config_ab, w.dir.path());
    w.wait_active(&d, G1);
    let old_files = sealed_files(&replicas).len();
    let mut writer = Writer::open(&w.db(G1));
    writer.cmd("insert t 100 900");
    write_rows(&w.db(G2), 50, 100);
    assert!(
        wait_until(WAIT, POLL, || sealed_files(&replicas).iter().filter(|(_, k)| k.as_deref() == Some("kb")).count()
            >= 2),
        "no file with key B; log:\n{}",
        d.log()
    );
    writer.quit();
    d.stop();
    assert!(sealed_files(&replicas).len() > old_files);
    let source = checkpointed_bytes(&w.db(G1));
    let keys: Vec<Option<String>> =
        sealed_files(&replicas.join(format!("databases/{G1}"))).into_iter().map(|(_, k)| k).collect();
    assert!(keys.contains(&Some("ka".into())) && keys.contains(&Some("kb".into())), "{keys:?}");
    // Key B alone does not open the old files: the error names the object and the key.
    let ring_b = w.keyring("keys-b", &[KB]);
    let o = restore_to(&w, &[&url, "--keys-file", ring_b.to_str().unwrap_or_default()], &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success() && err.contains(".ltx") && err.contains("\"ka\", which is not in the keyring"),
        "{err}"
    );
    // Both keys: byte-identical, by URL and by tenant id through the config.
    let o = restore_to(&w, &[&url, "--keys-file", ring_ab.to_str().unwrap_or_default()], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore with A and B");
    let o = restore_to(&w, &["--config", config_ab.to_str().unwrap_or_default(), G1], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore --config");
    // `tenants` lists both through the encrypted storage.
    let o = litefleet(&["tenants", "--config", config_ab.to_str().unwrap_or_default()], w.dir.path(), &[]);
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && table.contains(G1) && table.contains(G2), "{}", describe_output(&o));

    // A daemon with key B only refuses to start: files with A are recorded.
    let enc_b = format!("[encryption]\nkeys_file = {:?}", ring_b.display().to_string());
    let config_b = w.config("b.toml", &storage, &enc_b, "");
    let mut d = Daemon::config(&config_b, w.dir.path());
    let status = d.wait_exit();
    let log = d.log();
    assert!(!status.success() && log.contains("key \"ka\"") && log.contains("litefleet reencrypt"), "{log}");
    // So does a daemon without [encryption].
    let config_plain = w.config("plain.toml", &storage, "", "");
    let mut d = Daemon::config(&config_plain, w.dir.path());
    let status = d.wait_exit();
    assert!(!status.success() && d.log().contains("[encryption] is not configured"), "{}", d.log());

    // Re-encryption: every file with B; A leaves the keyring; B alone restores.
    let o = litefleet(&["reencrypt", "--config", config_ab.to_str().unwrap_or_default()], w.dir.path(), &[]);
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && report.contains("\"kb\"") && report.contains("key(s) ka"), "{}", describe_output(&o));
    assert!(sealed_files(&replicas).iter().all(|(_, k)| k.as_deref() == Some("kb")), "{:?}", sealed_files(&replicas));
    assert!(!replicas.join("_litefleet/keys/ka").exists());
    // A second run has nothing to do.
    let o = litefleet(&["reencrypt", "--config", config_ab.to_str().unwrap_or_default()], w.dir.path(), &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(": 0 file(s) re-encrypted"), "{}", describe_output(&o));
    let o = restore_to(&w, &[&url, "--keys-file", ring_b.to_str().unwrap_or_default()], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore with B only after reencrypt");
    // Every tenant, through the config with B only.
    let all = w.path("all");
    let o = litefleet(
        &[
            "restore",
            "--all",
            "--config",
            config_b.to_str().unwrap_or_default(),
            "--output-dir",
            all.to_str().unwrap_or_default(),
        ],
        w.dir.path(),
        &[],
    );
    assert!(o.status.success(), "{}", describe_output(&o));
    let restored = [all.join(format!("{G2}.db")), all.join(format!("databases/{G2}.db"))];
    let restored = restored.iter().find(|p| p.is_file()).unwrap_or_else(|| panic!("no {G2}.db in {}", all.display()));
    assert!(sqlite_logical_eq(restored, &w.db(G2)), "{}", describe_output(&o));
    // And the daemon with B only starts now.
    let d = Daemon::config(&config_b, w.dir.path());
    w.wait_active(&d, G1);
    d.stop();
}

#[test]
fn a_plain_replica_turned_encrypted_restores_and_reencrypts() {
    let w = World::new();
    let replicas = w.path("replicas");
    let storage = format!("url = \"file://{}\"", replicas.display());
    let config_plain = w.config("plain.toml", &storage, "", "");
    std::fs::create_dir_all(w.path("data")).unwrap_or_else(|e| panic!("{e}"));
    write_rows(&w.db(G1), 100, 300);
    let d = Daemon::config(&config_plain, w.dir.path());
    w.wait_active(&d, G1);
    d.stop();
    // Turned on: old files stay plain, new ones are encrypted, the mix restores.
    let ring = w.keyring("keys", &[KA]);
    let env = vec![("FLEET_KEYS".to_owned(), std::fs::read_to_string(&ring).unwrap_or_default())];
    let config = w.config("enc.toml", &storage, "[encryption]\nkeys_env = \"FLEET_KEYS\"", "");
    let d = Daemon::spawn(&["daemon", "--config", config.to_str().unwrap_or_default()], &env, w.dir.path());
    w.wait_active(&d, G1);
    let mut writer = Writer::open(&w.db(G1));
    writer.cmd("insert t 100 300");
    assert!(
        wait_until(WAIT, POLL, || sealed_files(&replicas).iter().any(|(_, k)| k.is_some())),
        "nothing encrypted; log:\n{}",
        d.log()
    );
    writer.quit();
    d.stop();
    let source = checkpointed_bytes(&w.db(G1));
    let files = sealed_files(&replicas);
    assert!(files.iter().any(|(_, k)| k.is_none()) && files.iter().any(|(_, k)| k.is_some()), "{files:?}");
    let url = format!("file://{}", replicas.join(format!("databases/{G1}")).display());
    let out = w.path("out.db");
    let o = restore_to(&w, &[&url, "--keys-file", ring.to_str().unwrap_or_default()], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "mixed replica");
    // The plain files become encrypted.
    let o = litefleet(&["reencrypt", "--config", config.to_str().unwrap_or_default()], w.dir.path(), &env);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert!(sealed_files(&replicas).iter().all(|(_, k)| k.as_deref() == Some("ka")));
    let o = restore_to(&w, &[&url, "--keys-file", ring.to_str().unwrap_or_default()], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "after reencrypt");
}

#[test]
fn an_encrypted_s3_replica_on_moto_restores_byte_identical() {
    let Some(moto) = MotoServer::start("fleet") else {
        return;
    };
    let w = World::new();
    let ring = w.keyring("keys", &[KA, KB]);
    let storage = format!(
        "url = \"s3://fleet\"\nendpoint = {:?}\nregion = \"us-east-1\"\nforce_path_style = true\naccess_key_id = \"test\"\nsecret_access_key = \"test\"",
        moto.endpoint()
    );
    let enc = format!("[encryption]\nkeys_file = {:?}\nkey_id = \"kb\"", ring.display().to_string());
    let restores = w.path("restores");
    std::fs::create_dir_all(&restores).unwrap_or_else(|e| panic!("{e}"));
    let jobs = format!("[restore]\ndir = {:?}\n", restores.display().to_string());
    let config = w.config("s3.toml", &storage, &enc, &format!("{LIFECYCLE}{jobs}"));
    // The restore jobs of the API need a token.
    let text = std::fs::read_to_string(&config).unwrap_or_default().replace("[http]\n", "[http]\ntoken = \"t0k3n\"\n");
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(w.path("data")).unwrap_or_else(|e| panic!("{e}"));
    write_rows(&w.db(G1), 200, 400);
    let d = Daemon::config(&config, w.dir.path());
    w.wait_active(&d, G1);
    let mut writer = Writer::open(&w.db(G1));
    // A few MB: multipart uploads of the full-page file and compactions.
    writer.cmd("insert t 1500 4000");
    std::thread::sleep(Duration::from_secs(4));
    d.expect("🔍 validation passed");
    writer.quit();
    // A restore job of the API to a point in time: its plan reads every file's header
    // (through the keyring), then restores the state as of now.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", w.port).parse().unwrap_or_else(|e| panic!("{e}"));
    let when = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let auth = [("Authorization", "Bearer t0k3n"), ("content-type", "application/json")];
    let body = format!("{{\"timestamp\": \"{when}\", \"integrityCheck\": \"quick\"}}");
    let path = format!("/api/clients/{G1}/restores");
    let r = http_request(addr, "POST", &path, &auth, body.as_bytes(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
    let job: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    let job_path = format!("/api/restores/{}", job["id"].as_str().unwrap_or_default());
    let mut last = serde_json::Value::Null;
    let finished = wait_until(WAIT, POLL, || {
        last = serde_json::from_str(&w.get(&job_path)).unwrap_or_default();
        matches!(last["state"].as_str(), Some("done" | "failed" | "cancelled"))
    });
    assert!(finished && last["state"] == "done", "{last}\n{}", d.log());
    let p = &last["progress"];
    assert!(p["bytesDone"] == p["bytesTotal"] && p["filesDone"] == p["filesTotal"], "{last}");
    let output = PathBuf::from(last["output"].as_str().unwrap_or_default());
    assert!(sqlite_logical_eq(&output, &w.db(G1)), "the restore job's copy differs: {last}");
    let log = d.stop();
    assert!(!log.contains("validation FAILED") && !log.contains("damaged"), "{log}");
    let source = checkpointed_bytes(&w.db(G1));
    let out = w.path("out.db");
    let o = restore_to(&w, &["--config", config.to_str().unwrap_or_default(), G1], &out, &[]);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore from moto");
    let url = format!("s3://fleet/databases/{G1}?endpoint={}&region=us-east-1&force-path-style=true", moto.endpoint());
    let env = moto.litestream_env();
    let o = restore_to(&w, &[&url, "--keys-file", ring.to_str().unwrap_or_default()], &out, &env);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert_same(&out, &source, "restore by URL from moto");
    let o = restore_to(&w, &[&url], &out, &env);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && err.contains("s3://fleet/databases/") && err.contains("encrypted"), "{err}");
    if let Some(bin) = litestream_bin() {
        let ls_out = w.path("litestream.db");
        let o = run_litestream_restore_env(&bin, &moto.litestream_url(&format!("databases/{G1}")), &ls_out, &[], &env);
        assert!(!o.status.success(), "litestream restored an encrypted replica: {}", describe_output(&o));
        assert!(!ls_out.exists() || !integrity_ok(&ls_out), "{}", describe_output(&o));
    }
}

#[test]
fn encryption_config_errors_name_their_line_and_key() {
    let w = World::new();
    let storage = format!("url = \"file://{}\"", w.path("replicas").display());
    let check = |config: &Path, envs: &[(String, String)]| {
        let o = litefleet(&["daemon", "--config", config.to_str().unwrap_or_default(), "--check"], w.dir.path(), envs);
        assert!(!o.status.success(), "{}", describe_output(&o));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // The line numbers below count the config's lines: [[watch]], dir, [storage], url,
    // then [encryption] on line 5.
    let c = w.config("1.toml", &storage, "[encryption]\nkey_id = \"ka\"", "");
    let e = check(&c, &[]);
    assert!(e.contains("1.toml:5: encryption: names no keyring"), "{e}");
    let c = w.config("2.toml", &storage, "[encryption]\nkeys_env = \"FLEET_KEYS\"\nkey_id = \"a b\"", "");
    let e = check(&c, &[]);
    assert!(e.contains("2.toml:7: encryption.key_id"), "{e}");
    let c = w.config("3.toml", &storage, "[encryption]\nkeys_env = \"FLEET_KEYS\"\nkey_id = \"kc\"", "");
    let e = check(&c, &[]);
    assert!(e.contains("3.toml:6: encryption.keys_env") && e.contains("FLEET_KEYS is not set"), "{e}");
    let env = vec![("FLEET_KEYS".to_owned(), format!("{KA}\n{KB}\n"))];
    let e = check(&c, &env);
    assert!(e.contains("3.toml:7: encryption.key_id") && e.contains("\"kc\" is not in the keyring"), "{e}");
    assert!(!e.contains("0001020304") && !e.contains("9f1e1d"), "key material in an error: {e}");
    let bad = w.keyring("bad-keys", &[KA, "kb 1234"]);
    let c = w.config("4.toml", &storage, &format!("[encryption]\nkeys_file = {:?}", bad.display().to_string()), "");
    let e = check(&c, &[]);
    assert!(e.contains("4.toml:6: encryption.keys_file") && e.contains("line 3: the key of \"kb\""), "{e}");
    assert!(!e.contains("1234") && !e.contains("0001020304"), "key material in an error: {e}");
    let c = w.config("5.toml", &storage, "[encryption]\nkeys_env = \"FLEET_KEYS\"", "");
    let e = check(&c, &env);
    assert!(e.contains("5.toml:5: encryption:") && e.contains("say which one"), "{e}");
    // `--help` of the commands that meet encrypted replicas says Litestream cannot.
    for cmd in ["restore", "daemon"] {
        let o = litefleet(&[cmd, "--help"], w.dir.path(), &[]);
        let help = String::from_utf8_lossy(&o.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("`litestream restore` cannot restore them"), "{cmd} --help: {help}");
    }
    let o = litefleet(&["restore", "--help"], w.dir.path(), &[]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("--keys-file"), "{}", describe_output(&o));
    // keygen: a keyring line that parses, a fresh key each time.
    let (a, b) = (
        litefleet(&["keygen", "--id", "k1"], w.dir.path(), &[]),
        litefleet(&["keygen", "--id", "k1"], w.dir.path(), &[]),
    );
    let (a, b) = (String::from_utf8_lossy(&a.stdout).into_owned(), String::from_utf8_lossy(&b.stdout).into_owned());
    assert!(a.starts_with("k1 ") && a.trim().len() == 3 + 64 && a != b, "{a} {b}");
}
