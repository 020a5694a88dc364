//! Defects found by trying litefleet as a hostile user would (issue 18), each pinned by
//! a regression test named after it, against the real binary: secrets that leaked at
//! debug level or through URLs, a forged log line through a file name, configuration
//! errors without their line.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

const GUID: &str = "12345678-1234-5678-9abc-123456789012";
/// Realistic credentials (long enough to be scrubbed from every log line).
const ACCESS_KEY: &str = "AKIAREGRESSION18KEY";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYREGRESSION18";

fn litefleet(args: &[&str], cwd: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(args).current_dir(cwd).stdin(Stdio::null());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    run_with_timeout(&mut cmd, Duration::from_secs(60))
}

fn all_output(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn make_db(path: &Path) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (randomblob(500));").unwrap();
}

/// A config with one watch directory and S3 storage at `s3`; `extra` appended.
fn config(dir: &Path, s3: &S3Server, extra: &str) -> PathBuf {
    let clients = dir.join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    let text = format!(
        "[[watch]]\ndir = {:?}\n[storage]\nurl = \"s3://bkt\"\nendpoint = {:?}\naccess_key_id = {ACCESS_KEY:?}\nsecret_access_key = {SECRET_KEY:?}\n[replication]\nsync_interval = \"100ms\"\n[http]\nlisten = \"127.0.0.1:{}\"\n{extra}",
        clients.display().to_string(),
        s3.endpoint(),
        free_port()
    );
    let p = dir.join("litefleet.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Runs the daemon until `done(stderr so far)` holds (or 30 s), then SIGTERM; its log.
fn run_daemon_until(cfg: &Path, cwd: &Path, envs: &[(&str, &str)], done: impl Fn(&str) -> bool) -> String {
    let log = cwd.join("daemon.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["daemon", "--config", cfg.to_str().unwrap()]).current_dir(cwd).stdout(Stdio::null());
    cmd.stderr(std::fs::File::create(&log).unwrap());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let ok = wait_until(Duration::from_secs(30), Duration::from_millis(50), || done(&read()));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let exited =
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || child.try_wait().ok().flatten().is_some());
    if !exited {
        let _ = child.kill();
    }
    let _ = child.wait();
    let text = read();
    assert!(ok, "the daemon never got there; log:\n{text}");
    text
}

/// Regression: with `[log] level = "debug"` the S3 library's own debug line printed
/// `StaticCredentialProvider { access_key_id: …, secret_access_key: "…" }`.
#[test]
fn regression_debug_logs_never_print_the_storage_credentials() {
    let s3 = S3Server::start_with(ACCESS_KEY, SECRET_KEY);
    s3.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &s3, "[log]\nlevel = \"debug\"\n");
    let db = dir.path().join(format!("clients/{GUID}.db"));
    make_db(&db);
    for envs in [vec![], vec![("RUST_LOG", "trace")]] {
        // A write before each run, so each one uploads (a restart with nothing changed
        // ships nothing, and would never log "synced").
        rusqlite::Connection::open(&db).unwrap().execute_batch("INSERT INTO t VALUES (randomblob(500))").unwrap();
        let log =
            run_daemon_until(&cfg, dir.path(), &envs, |l| l.contains("Client registered") && l.contains("synced"));
        assert!(log.contains("DEBUG"), "debug logging is on: {log}");
        assert!(!log.contains(SECRET_KEY), "the secret key was printed ({envs:?}):\n{log}");
        assert!(!log.contains(ACCESS_KEY), "the access key was printed ({envs:?}):\n{log}");
    }
}

/// Regression: credentials written into a storage URL, an endpoint or `-bucket` were
/// echoed in the error, or accepted and then printed in the start-up line, `--check`,
/// `replicaUrl`, the restore commands, `lastError`, `/readyz` and `tenants`. They are
/// refused, and the refusal never shows them.
#[test]
fn regression_credentials_in_a_url_are_refused_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    let secret = "hunter2-in-a-url-secret";
    let with = |storage: &str| {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, format!("[[watch]]\ndir = {:?}\n[storage]\n{storage}\n", clients.display().to_string()))
            .unwrap();
        p
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "daemon".into(),
                "--check".into(),
                "--config".into(),
                with(&format!("url = \"s3://AKIAX:{secret}@bkt/p\"")).display().to_string(),
            ],
            "url",
        ),
        (
            vec![
                "daemon".into(),
                "--check".into(),
                "--config".into(),
                with(&format!("url = \"s3://bkt\"\nendpoint = \"http://admin:{secret}@127.0.0.1:9000\""))
                    .display()
                    .to_string(),
            ],
            "endpoint",
        ),
        (
            vec!["-watch-dir".into(), clients.display().to_string(), "-bucket".into(), format!("AKIAX:{secret}@bkt")],
            "-bucket",
        ),
        (
            vec![
                "-watch-dir".into(),
                clients.display().to_string(),
                "-bucket".into(),
                format!("s3://AKIAX:{secret}@bkt/x?endpoint=http://127.0.0.1:1"),
            ],
            "-bucket",
        ),
        (vec!["restore".into(), format!("s3://AKIAX:{secret}@bkt/x"), "-o".into(), "out.db".into()], "restore"),
    ];
    for (args, what) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = litefleet(&args, dir.path());
        let text = all_output(&o);
        assert!(!o.status.success(), "{what}: accepted: {text}");
        assert!(!text.contains(secret), "{what}: the secret was echoed: {text}");
        assert!(text.contains("credentials in a URL are refused"), "{what}: {text}");
        assert!(!dir.path().join("out.db").exists());
    }
}

/// Regression: a tenant file named with a newline (`evil\n<forged line>.db`) was
/// printed raw in text logs, so a forged `✅ Client registered: …` line appeared.
#[test]
fn regression_a_file_name_cannot_forge_a_log_line() {
    let s3 = S3Server::start_with(ACCESS_KEY, SECRET_KEY);
    s3.create_bucket("bkt");
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &s3, "");
    let forged = "✅ Client registered: 00000000-0000-0000-0000-000000000000 -> pwned";
    std::fs::write(dir.path().join(format!("clients/evil\n{forged}\x1b[2J.db")), b"").unwrap();
    make_db(&dir.path().join(format!("clients/{GUID}.db")));
    let log = run_daemon_until(&cfg, dir.path(), &[], |l| l.contains("Skipped") && l.contains("Client registered"));
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.iter().any(|l| l.trim_start().starts_with("✅ Client registered: 00000000")), "forged:\n{log}");
    assert!(lines.iter().any(|l| l.contains("Skipped") && l.contains("evil\\n✅ Client registered")), "{log}");
    assert!(!log.contains('\x1b'), "an escape sequence reached the log");
}

/// Regression: a missing watch directory and an unreadable hook module gave no
/// `<file>:<line>: <key>`, and their cause was printed twice.
#[test]
fn regression_unusable_paths_in_the_config_name_file_line_and_key_with_the_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-dir");
    let cfg = dir.path().join("prod.toml");
    let text = format!(
        "# tenants\n\n[[watch]]\ndir = {:?}\n\n[storage]\nurl = \"file://./replicas\"\n",
        missing.display().to_string()
    );
    std::fs::write(&cfg, &text).unwrap();
    let o = litefleet(&["daemon", "--config", cfg.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    let want = format!("prod.toml:4: watch[0].dir: cannot use watch directory {}: ", missing.display());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "cause printed once:\n{err}");
    assert!(!dir.path().join("replicas").exists(), "nothing was written");

    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    let module = dir.path().join("hooks/missing.wasm");
    let text = format!(
        "[[watch]]\ndir = {:?}\n\n[hooks]\n\nmodule = {:?}\n",
        clients.display().to_string(),
        module.display().to_string()
    );
    std::fs::write(&cfg, &text).unwrap();
    let o = litefleet(&["daemon", "--config", cfg.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    let want = format!("prod.toml:6: hooks.module: hook {}: cannot read: ", module.display());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "cause printed once:\n{err}");

    // A state directory that cannot be created: a regular file is in the way.
    std::fs::write(dir.path().join("blocker"), b"").unwrap();
    let text = format!(
        "[[watch]]\ndir = {:?}\n[replication]\nstate_dir = {:?}\n",
        clients.display().to_string(),
        dir.path().join("blocker/state").display().to_string()
    );
    std::fs::write(&cfg, &text).unwrap();
    let o = litefleet(&["daemon", "--config", cfg.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success());
    assert!(err.contains("prod.toml:4: replication.state_dir: cannot write in "), "{err}");
    assert!(!dir.path().join("replicas").exists(), "nothing was written");

    // The seed's flags name the flag instead.
    let o = litefleet(&["-watch-dir", missing.to_str().unwrap()], dir.path());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.contains("flags: -watch-dir: cannot use watch directory"), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

/// A failed storage request does not print a backtrace, even under `RUST_BACKTRACE=1`
/// (opendal captures one per error: every retried request logged ~100 frames, and
/// symbolizing them kept the binary's debug info resident — ~260 MB in a standby).
#[test]
fn storage_errors_carry_no_backtrace_under_rust_backtrace() {
    let port = free_port();
    let url = format!("s3://bucket/x?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.db");
    let o = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_litefleet"))
            .args(["restore", &url, "-o", out.to_str().unwrap()])
            .env("RUST_BACKTRACE", "1")
            .env_remove("RUST_LIB_BACKTRACE")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y"),
        Duration::from_secs(120),
    );
    let text = describe_output(&o);
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("Connection refused"), "{text}");
    assert!(!text.contains("Backtrace") && !text.contains("at /rustc"), "{text}");
    assert!(text.len() < 20_000, "{} bytes of output: {text}", text.len());
}
