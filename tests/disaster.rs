//! Fleet-wide disaster recovery: `litefleet restore --config … --all --output-dir DIR`,
//! the real binary against replicas the real daemon wrote (from tenants written by
//! `litefleet-writer` processes), on a folder and on S3 (s3s-fs in process). Every
//! restored file is compared with its checkpointed source; the output is laid out like
//! the watch directories, so a daemon pointed at it registers the same tenants under the
//! same prefixes. Reruns resume, `--only-missing` and `--dry-run` do what they say, and a
//! tenant that fails (a damaged replica, a full disk) fails alone, loudly, with no
//! partial file and a non-zero exit status.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use common::live::{self, Live, Tmpfs, sha256, write};
use common::*;
use serde_json::Value;

const A: &str = "12345678-1234-5678-9abc-123456789012";
const B: &str = "98765432-4321-8765-cba9-876543210987";
const C: &str = "abcdef01-2345-6789-abcd-ef0123456789";
const D: &str = "fedcba98-7654-3210-fedc-ba9876543210";

/// A fleet whose daemon has stopped: four tenants (`C`'s local file since lost, `D` in
/// a watch directory with prefix `prod`), their replicas, and their sources' bytes.
struct World {
    tmp: tempfile::TempDir,
    config: PathBuf,
    /// Tenant → (its output path relative to the output dir, its bytes at the latest TXID).
    latest: BTreeMap<&'static str, (PathBuf, Vec<u8>)>,
    /// A moment between the two rounds of writes, and what `A` and `D` held then.
    between: SystemTime,
    before: BTreeMap<&'static str, Vec<u8>>,
    _s3: Option<S3Server>,
}

impl World {
    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `litefleet restore --config <config> <args>` (stdin not a terminal).
    fn restore(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.args(["restore", "--config", self.config.to_str().unwrap()]).args(args).current_dir(self.dir());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        run_with_timeout(&mut cmd, live::WAIT)
    }

    /// Asserts every tenant of `ids` is in `out` and equals its latest source.
    fn assert_restored(&self, out: &Path, ids: &[&str]) {
        for id in ids {
            let (rel, want) = &self.latest[id];
            let got = std::fs::read(out.join(rel)).unwrap_or_else(|e| panic!("{id} at {}: {e}", rel.display()));
            assert!(got == *want, "{id}: restored {} bytes vs source {}", got.len(), want.len());
        }
    }
}

/// Builds a [`World`] on a folder, or on S3 when `s3` is given.
async fn world(s3: Option<S3Server>) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for d in ["clients", "prod"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let path = |id: &str| {
        if id == D { dir.join("prod").join(format!("{id}.db")) } else { dir.join("clients").join(format!("{id}.db")) }
    };
    // Written before the daemon starts, like a host that ran for a while.
    for (i, id) in [A, B, C, D].into_iter().enumerate() {
        write(&path(id), &[&format!("insert t {} 300", 5 + 10 * i)]);
    }
    let storage = match &s3 {
        Some(s) => {
            s.create_bucket("recovery");
            format!(
                "url = \"s3://recovery/fleet\"\nendpoint = \"{}\"\nforce_path_style = true\naccess_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
                s.endpoint(),
                S3Server::ACCESS_KEY,
                S3Server::SECRET_KEY
            )
        }
        None => format!("url = \"file://{}\"\n", dir.join("replicas").display()),
    };
    let text = format!(
        "[[watch]]\ndir = {:?}\n\n[[watch]]\ndir = {:?}\nprefix = \"prod\"\n\n[storage]\n{storage}\n[replication]\n\
         state_dir = {:?}\nsync_interval = \"50ms\"\n\n[lifecycle]\nlevels = []\nsnapshot_interval = \"0s\"\n\n[http]\nlisten = \"127.0.0.1:0\"\n",
        dir.join("clients").display().to_string(),
        dir.join("prod").display().to_string(),
        dir.join("state").display().to_string()
    );
    let config = dir.join("fleet.toml");
    std::fs::write(&config, &text).unwrap();
    let live = Live::start(litefleet::config::Config::load(&config).unwrap()).await;
    let mut txids = BTreeMap::new();
    for id in [A, B, C, D] {
        txids.insert(id, live.shipped(&path(id), 0).await);
    }
    let before: BTreeMap<&str, Vec<u8>> = [A, D].into_iter().map(|id| (id, checkpointed_bytes(&path(id)))).collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for id in [A, D] {
        write(&path(id), &["update t 3 300", "insert t 4 700"]);
        live.shipped(&path(id), txids[id]).await;
    }
    let latest = [A, B, C, D]
        .into_iter()
        .map(|id| {
            let rel = if id == D { PathBuf::from(format!("prod/{id}.db")) } else { PathBuf::from(format!("{id}.db")) };
            (id, (rel, checkpointed_bytes(&path(id))))
        })
        .collect();
    live.stop().await;
    // The host loses C's file.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path(C).display()));
    }
    World { tmp, config, latest, between, before, _s3: s3 }
}

fn report(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

fn outcome_of<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {report}"))
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", describe_output(o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The lost host: every tenant comes back (the one whose file is gone too), laid out
/// like the watch directories; a daemon pointed at the output registers the same
/// tenants under the same prefixes. A rerun skips verified outputs and redoes a
/// damaged one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_comes_back_laid_out_like_the_watch_directories_and_reruns_resume() {
    let w = world(None).await;
    let out = w.dir().join("out");
    let o = w.restore(&["--all", "--output-dir", out.to_str().unwrap()]);
    let table = ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("restoring: 4/4 tenants (100 %)"), "plain progress lines off a terminal: {stderr}");
    assert!(!stderr.contains('\r'), "no carriage returns off a terminal");
    assert!(table.contains("OUTCOME") && table.contains("restored           4"), "{table}");
    w.assert_restored(&out, &[A, B, C, D]);
    let r = report(&out.join(".litefleet-restore-report.json"));
    assert_eq!((r["tenants"].as_u64(), r["restored"].as_u64(), r["failed"].as_u64()), (Some(4), Some(4), Some(0)));
    for id in [A, B, C, D] {
        let t = outcome_of(&r, id);
        assert_eq!(t["sha256"].as_str(), Some(sha256(&out.join(&w.latest[id].0)).as_str()), "{t}");
        assert_eq!(t["integrity"], "ok", "{t}");
    }
    if let Some(bin) = litestream_bin() {
        let theirs = w.dir().join("theirs.db");
        let url = format!("file://{}/databases/prod/{D}", w.dir().join("replicas").display());
        let o = run_litestream_restore(&bin, &url, &theirs, &[]);
        assert!(o.status.success(), "{}", describe_output(&o));
        assert!(std::fs::read(&theirs).unwrap() == w.latest[D].1, "litestream restore of D differs");
    }

    // A rerun skips what is there and verified; a damaged output is restored again.
    let table = ok(&w.restore(&["--all", "--output-dir", out.to_str().unwrap()]));
    assert!(table.contains("skipped            4"), "{table}");
    let damaged = out.join(&w.latest[B].0);
    let mut bytes = std::fs::read(&damaged).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&damaged, bytes).unwrap();
    let table = ok(&w.restore(&["--all", "--output-dir", out.to_str().unwrap()]));
    assert!(table.contains("restored           1") && table.contains("skipped            3"), "{table}");
    w.assert_restored(&out, &[A, B, C, D]);

    // Pointed at the output, a daemon finds the same tenants under the same prefixes.
    let mut c = live::config(&w.dir().join("again"));
    c.watch = vec![
        litefleet::config::WatchConfig::new(&out),
        litefleet::config::WatchConfig {
            prefix: Some(litefleet::tenant::Prefix::parse("prod").unwrap()),
            ..litefleet::config::WatchConfig::new(out.join("prod"))
        },
    ];
    let again = Live::start(c).await;
    for id in [A, B, C, D] {
        again.shipped(&out.join(&w.latest[id].0), 0).await;
    }
    let mut prefixes: Vec<String> = again.board.snapshot().tenants.iter().map(|t| t.prefix.to_string()).collect();
    prefixes.sort();
    let mut want: Vec<String> =
        [A, B, C].iter().map(|id| format!("databases/{id}")).chain([format!("databases/prod/{D}")]).collect();
    want.sort();
    assert_eq!(prefixes, want);
    again.stop().await;
}

/// `--dry-run` prints the plan and the bytes and writes nothing; `--only-missing`
/// restores just the tenant whose file is gone; `--timestamp` and `--txid-file` pick each
/// tenant's point.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_only_missing_and_points_in_time() {
    let w = world(None).await;
    let out = w.dir().join("out");
    let table = ok(&w.restore(&["--all", "--output-dir", out.to_str().unwrap(), "--dry-run"]));
    assert!(table.contains("planned            4") && table.contains("to fetch"), "{table}");
    assert!(!out.exists(), "a dry run writes nothing");

    let table = ok(&w.restore(&["--all", "--output-dir", out.to_str().unwrap(), "--only-missing"]));
    assert!(table.contains("restored           1"), "{table}");
    assert_eq!(live::files_under(&out).iter().filter(|p| p.extension().is_some_and(|e| e == "db")).count(), 1);
    w.assert_restored(&out, &[C]);

    let at = humantime::format_rfc3339_millis(w.between).to_string();
    let then = w.dir().join("then");
    ok(&w.restore(&["--all", "--output-dir", then.to_str().unwrap(), "--timestamp", &at]));
    for id in [A, D] {
        assert!(std::fs::read(then.join(&w.latest[id].0)).unwrap() == w.before[id], "{id} as of {at}");
    }
    w.assert_restored(&then, &[B, C]);

    let txids = w.dir().join("txids.txt");
    std::fs::write(&txids, format!("# A as it was\n{A} 1\n")).unwrap();
    let pinned = w.dir().join("pinned");
    ok(&w.restore(&["--all", "--output-dir", pinned.to_str().unwrap(), "--txid-file", txids.to_str().unwrap()]));
    assert!(std::fs::read(pinned.join(&w.latest[A].0)).unwrap() == w.before[A], "A at TXID 1");
    w.assert_restored(&pinned, &[B, C, D]);
    let r = report(&pinned.join(".litefleet-restore-report.json"));
    assert_eq!(outcome_of(&r, A)["point"], "TXID 0000000000000001");
    assert_eq!(outcome_of(&r, B)["point"], "latest");

    // An output directory holding someone else's files is refused without --force.
    let busy = w.dir().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"mine").unwrap();
    let o = w.restore(&["--all", "--output-dir", busy.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("holds files but no restore journal"),
        "{}",
        describe_output(&o)
    );
}

/// A damaged replica and a full disk: those tenants fail alone, with the reason, no
/// partial file and a non-zero exit status; the others are restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tenants_fail_alone_and_the_exit_status_says_so() {
    let w = world(None).await;
    // Damage B's replica: flip a byte inside its LTX file's pages.
    let ltx = live::files_under(&w.dir().join("replicas").join("databases").join(B))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "ltx"))
        .unwrap();
    let mut bytes = std::fs::read(&ltx).unwrap();
    bytes[120] ^= 0x55;
    std::fs::write(&ltx, bytes).unwrap();
    let out = w.dir().join("out");
    let o = w.restore(&["--all", "--output-dir", out.to_str().unwrap()]);
    assert!(!o.status.success(), "{}", describe_output(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(&format!("failed: databases/{B}")), "{stderr}");
    assert!(stderr.contains("1 of 4 tenant(s) failed"), "{stderr}");
    let r = report(&out.join(".litefleet-restore-report.json"));
    let b = outcome_of(&r, B);
    assert_eq!(b["outcome"], "failed");
    assert!(b["error"].as_str().unwrap().contains(".ltx"), "the error names the file: {b}");
    assert!(!out.join(&w.latest[B].0).exists() && !out.join(format!("{}.tmp", w.latest[B].0.display())).exists());
    w.assert_restored(&out, &[A, C, D]);

    // A full disk: the outputs that do not fit fail with ENOSPC and leave nothing.
    let small = w.dir().join("small");
    if let Some(_fs) = Tmpfs::mount(&small, "48k", false) {
        let o = w.restore(&[
            "--all",
            "--output-dir",
            small.to_str().unwrap(),
            "--report",
            w.dir().join("r.json").to_str().unwrap(),
        ]);
        assert!(!o.status.success(), "{}", describe_output(&o));
        let r = report(&w.dir().join("r.json"));
        let failed: Vec<&Value> =
            r["results"].as_array().unwrap().iter().filter(|t| t["outcome"] == "failed").collect();
        assert!(failed.iter().any(|t| t["error"].as_str().unwrap().contains("No space left on device")), "{r}");
        let tmp = live::files_under(&small).into_iter().filter(|p| p.to_string_lossy().ends_with(".tmp")).count();
        assert_eq!(tmp, 0, "no partial file");
        for t in r["results"].as_array().unwrap().iter().filter(|t| t["outcome"] == "restored") {
            let p = PathBuf::from(t["output"].as_str().unwrap());
            assert_eq!(t["sha256"].as_str(), Some(sha256(&p).as_str()), "what fit is whole");
        }
    }
}

/// The same recovery from S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tenant_comes_back_from_s3() {
    let w = world(Some(S3Server::start())).await;
    let out = w.dir().join("out");
    ok(&w.restore(&["--all", "--output-dir", out.to_str().unwrap(), "--concurrency", "3"]));
    w.assert_restored(&out, &[A, B, C, D]);
}

/// On a terminal the progress is one line redrawn in place (tenants, bytes, rate, ETA).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_terminal_progress_is_one_redrawn_line() {
    if !Path::new("/usr/bin/script").exists() {
        assert!(!in_ci(), "CI=true and no /usr/bin/script (util-linux) to run under a pseudo-terminal");
        eprintln!("skipping: no /usr/bin/script");
        return;
    }
    let w = world(None).await;
    let out = w.dir().join("out");
    let cmd = format!(
        "{} restore --config {} --all --output-dir {}",
        env!("CARGO_BIN_EXE_litefleet"),
        w.config.display(),
        out.display()
    );
    let o = run_with_timeout(Command::new("/usr/bin/script").args(["-qec", &cmd, "/dev/null"]), live::WAIT);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", describe_output(&o));
    assert!(text.contains("\r\x1b[Krestoring: 4/4 tenants (100 %)"), "{text:?}");
    assert!(text.contains("tenants/s"), "{text:?}");
    w.assert_restored(&out, &[A, B, C, D]);
}
