//! Every storage service besides S3 and folders, on a real server on 127.0.0.1 started
//! by the test (one per service, so one per test): the `litefleet` daemon replicates
//! two tenants there (with an accelerated lifecycle: compaction, snapshots, retention),
//! the dashboard's tenant page reads the replica, `litefleet tenants` lists it, and
//! `litefleet restore` — and `litestream restore`, where it can reach the server — must
//! give back the checkpointed source byte for byte. No secret may reach a log line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::services::{Azurite, GcsEmulator, SshServer};
use common::*;
use litefleet::storage::{Options, Storage};

const G1: &str = "12345678-1234-5678-9abc-123456789012";
const G2: &str = "98765432-4321-8765-cba9-876543210987";
const WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
/// Compaction every 1 s and 2 s, snapshots every 3 s, L0 kept 1 s: a few seconds of
/// running exercise every write, list, read and delete the lifecycle does.
const LIFECYCLE: &str = "[lifecycle]\nlevels = [\"1s\", \"2s\"]\nsnapshot_interval = \"3s\"\nl0_retention = \"1s\"\n";

/// A running `litefleet daemon` whose stderr (the log) is collected.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Starts the daemon on `config` with only `envs` from the cloud variables (no
    /// ambient `AWS_*`, `AZURE_*`, … reaches it).
    fn start(config: &Path, envs: &[(&str, &str)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.args(["daemon", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::piped());
        clean_env(&mut cmd, envs);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning litefleet: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
                g.push_str(&line);
                g.push('\n');
            }
        });
        Daemon { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGTERM, a clean exit, and the whole log.
    fn stop(mut self) -> String {
        let ok = Command::new("kill").args(["-s", "TERM", &self.child.id().to_string()]).status();
        assert!(matches!(ok, Ok(s) if s.success()), "kill failed");
        let mut status = None;
        let exited = wait_until(Duration::from_secs(60), POLL, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(exited, "daemon did not exit; log:\n{}", self.log());
        let log = self.log();
        assert!(status.is_some_and(|s| s.success()), "exit {status:?}; log:\n{log}");
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Removes every cloud credential variable of this machine, then sets `envs`.
fn clean_env(cmd: &mut Command, envs: &[(&str, &str)]) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if ["AWS_", "AZURE_", "GOOGLE_", "STORAGE_EMULATOR", "LITESTREAM_"].iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(k);
        }
    }
    cmd.env_remove("RUST_LOG");
    for (k, v) in envs {
        cmd.env(k, v);
    }
}

/// A database with some rows, written by a separate process that then exits.
fn make_db(path: &Path, rows: u32) {
    let mut w = Writer::open(path);
    w.cmd(&format!("insert t {rows} 300"));
    w.quit();
}

/// `litestream restore` of `(db path as its config names it, prefix, output)`.
type LitestreamRestore<'a> = Box<dyn Fn(&Path, &str, &Path) -> std::process::Output + 'a>;

/// One service under test: its replica storage as the daemon's config spells it, and
/// how to reach it from the test.
struct Case<'a> {
    /// The service, in the measurements printed.
    name: &'static str,
    /// The `[storage]` table (without `root`: the seed's `databases/`).
    storage_toml: String,
    /// The daemon's environment (credentials the config leaves out).
    daemon_env: Vec<(&'a str, &'a str)>,
    /// The storage as this test opens it, to watch files arrive.
    url: String,
    opts: Options,
    /// `litefleet restore`'s URL for a tenant prefix, and its environment.
    restore_url: Box<dyn Fn(&str) -> String + 'a>,
    restore_env: Vec<(&'a str, &'a str)>,
    /// Secrets that must appear in no log line or output.
    secrets: Vec<&'a str>,
    /// `litestream restore` of `(db path, prefix, out)`, where Litestream can reach
    /// the server: its output, judged by the caller.
    litestream: Option<LitestreamRestore<'a>>,
}

/// Replicates two tenants to the case's service with the daemon, then restores each.
fn replicate_and_restore(case: Case) {
    let dir = tempfile::Builder::new().prefix("litefleet-services-").tempdir().unwrap_or_else(|e| panic!("{e}"));
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
    let db = |id: &str| clients.join(format!("{id}.db"));
    make_db(&db(G1), 20);
    make_db(&db(G2), 35);
    let port = free_port();
    let config = dir.path().join("fleet.toml");
    let toml = format!(
        "[[watch]]\ndir = {:?}\n{}\n[replication]\nsync_interval = \"100ms\"\nidle_after = \"3s\"\nstate_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n{LIFECYCLE}",
        clients.display().to_string(),
        case.storage_toml,
        dir.path().join("state").display().to_string(),
    );
    std::fs::write(&config, toml).unwrap_or_else(|e| panic!("{e}"));
    let d = Daemon::start(&config, &case.daemon_env);

    // Both tenants' first files arrive; the test reads the storage through the library.
    let storage = Storage::from_url(&case.url, &case.opts).unwrap_or_else(|e| panic!("{e}"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    let listed = |id: &str| -> usize {
        let r = storage.replica(format!("databases/{id}"));
        rt.block_on(async {
            let mut n = 0;
            for level in [0, 1, 2, 9] {
                n += r.list(level).await.map(|v| v.len()).unwrap_or(0);
            }
            n
        })
    };
    for id in [G1, G2] {
        assert!(wait_until(WAIT, POLL, || listed(id) > 0), "no replica file for {id}; log:\n{}", d.log());
    }
    // Replication lag on this service: a commit until its L0 file is listed (the
    // first commit wakes an idle tenant). Printed for docs/benchmarks.md.
    let r1 = storage.replica(format!("databases/{G1}"));
    let newest = || rt.block_on(async { r1.list(0).await.map(|v| v.iter().map(|f| f.max_txid).max()).ok().flatten() });
    let mut w = Writer::open(&db(G1));
    let mut lags = Vec::new();
    for _ in 0..5 {
        let before = newest();
        let t0 = Instant::now();
        w.cmd("insert t 1 100");
        let shipped = wait_until(WAIT, Duration::from_millis(5), || newest() > before);
        assert!(shipped, "a commit never shipped; log:\n{}", d.log());
        lags.push(t0.elapsed());
    }
    lags.sort();
    eprintln!(
        "{}: replication lag, commit to L0 listed: median {:?}, max {:?} (5 commits)",
        case.name, lags[2], lags[4]
    );

    // More writes while it runs, then time for a few lifecycle passes.
    w.cmd("update t 5 400");
    w.cmd("insert t 10 2000");
    std::thread::sleep(Duration::from_secs(4));
    w.cmd("insert t 3 100");
    std::thread::sleep(Duration::from_secs(1));

    // The dashboard's tenant page reads the replica on this service.
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap_or_else(|e| panic!("{e}"));
    let page = http_request(addr, "GET", &format!("/tenants/{G1}"), &[], b"", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));
    let page = String::from_utf8_lossy(&page.body).into_owned();
    assert!(page.contains("Files by level") && page.contains(".ltx"), "{page}");
    assert!(!page.contains("class=\"err\""), "the page shows an error:\n{page}");

    // Idle cost: once both tenants are idle and the lifecycle has caught up, storage
    // requests in 5 s (opendal's own count in /metrics). Printed, not asserted: the
    // accelerated lifecycle of this test is not the production one.
    let requests = || -> u64 {
        let m =
            http_request(addr, "GET", "/metrics", &[], b"", Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        String::from_utf8_lossy(&m.body)
            .lines()
            .filter(|l| l.starts_with("opendal_operation_duration_seconds_count"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    };
    std::thread::sleep(Duration::from_secs(4));
    let before = requests();
    std::thread::sleep(Duration::from_secs(5));
    let after = requests();
    assert!(before > 0, "no storage request counted in /metrics: the idle count below would mean nothing");
    eprintln!(
        "{}: storage requests in 5 s with both tenants idle: {} (of {after} since start)",
        case.name,
        after.saturating_sub(before)
    );
    let log = d.stop();
    w.quit();

    // The lifecycle wrote compacted levels and a snapshot there.
    let r = storage.replica(format!("databases/{G1}"));
    let levels: Vec<usize> = rt.block_on(async {
        let mut v = Vec::new();
        for level in [1, 2, 9] {
            v.push(r.list(level).await.unwrap_or_else(|e| panic!("{e}")).len());
        }
        v
    });
    assert!(levels.iter().all(|&n| n > 0), "L1, L2, L9 file counts {levels:?}; log:\n{log}");

    // `litefleet tenants` lists both replicas from the config.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["tenants", "--config"]).arg(&config);
    clean_env(&mut cmd, &case.daemon_env);
    let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
    let table = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success() && table.contains("2 tenant(s)"), "{}", describe_output(&o));

    for id in [G1, G2] {
        let source = checkpointed_bytes(&db(id));
        let out = dir.path().join(format!("restored-{id}.db"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.arg("restore").arg((case.restore_url)(&format!("databases/{id}"))).arg("-o").arg(&out);
        cmd.args(["--integrity-check", "quick"]);
        clean_env(&mut cmd, &case.restore_env);
        let o = run_with_timeout(&mut cmd, Duration::from_secs(60));
        assert!(o.status.success(), "litefleet restore {id}: {}", describe_output(&o));
        let got = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
        assert!(got == source, "litefleet restore of {id} differs at {:?}", first_difference(&got, &source, 4096));
        for s in &case.secrets {
            let shown = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            assert!(!shown.contains(s), "restore printed a secret:\n{shown}");
        }
        if let Some(litestream) = &case.litestream {
            let out = dir.path().join(format!("litestream-{id}.db"));
            let o = litestream(&db(id), &format!("databases/{id}"), &out);
            assert!(o.status.success(), "litestream restore {id}: {}", describe_output(&o));
            let got = std::fs::read(&out).unwrap_or_else(|e| panic!("{e}"));
            assert!(got == source, "litestream restore of {id} differs at {:?}", first_difference(&got, &source, 4096));
        }
    }
    for s in &case.secrets {
        assert!(!log.contains(s), "the daemon logged a secret:\n{log}");
    }
}

/// Azure Blob on Azurite: the account in the URL, its key from `AZURE_STORAGE_KEY`,
/// Azurite's endpoint in `[storage]`; restored with a connection string instead.
#[test]
fn azure_blob_on_azurite() {
    let Some(az) = Azurite::start(&["fleet"]) else { return };
    let endpoint = az.endpoint();
    let conn = az.connection_string();
    let ls = litestream_bin();
    let case = Case {
        name: "Azure (Azurite)",
        storage_toml: format!("[storage]\nurl = \"abs://{}@fleet\"\nendpoint = {endpoint:?}\n", Azurite::ACCOUNT),
        daemon_env: vec![("AZURE_STORAGE_KEY", Azurite::KEY)],
        url: format!("abs://{}@fleet", Azurite::ACCOUNT),
        opts: Options {
            endpoint: Some(endpoint.clone()),
            account_key: Some(Azurite::KEY.to_owned()),
            ..Default::default()
        },
        restore_url: Box::new(|prefix| format!("abs://fleet/{prefix}")),
        restore_env: vec![("AZURE_STORAGE_CONNECTION_STRING", conn.as_str())],
        secrets: vec![Azurite::KEY],
        litestream: ls.map(|bin| -> LitestreamRestore {
            let az = &az;
            Box::new(move |db: &Path, prefix: &str, out: &Path| {
                let dir = out.parent().unwrap_or(Path::new("."));
                let cfg = az.litestream_config(dir, db, "fleet", prefix);
                let args: Vec<PathBuf> =
                    vec!["restore".into(), "-config".into(), cfg, "-o".into(), out.into(), db.into()];
                run_litestream(&bin, &args, &[], LITESTREAM_TIMEOUT)
            })
        }),
    };
    replicate_and_restore(case);
}

/// Google Cloud Storage on gcp-storage-emulator: the daemon finds it through
/// `STORAGE_EMULATOR_HOST` (as Google's own clients do), `litefleet restore` through the
/// URL's `?endpoint=`, and `litestream restore` through `STORAGE_EMULATOR_HOST`.
#[test]
fn gcs_on_an_emulator() {
    let Some(gcs) = GcsEmulator::start("fleet") else { return };
    let (host, endpoint) = (gcs.host(), gcs.endpoint());
    let ls = litestream_bin();
    let case = Case {
        name: "GCS (gcp-storage-emulator)",
        storage_toml: "[storage]\nurl = \"gs://fleet\"\n".to_owned(),
        daemon_env: vec![("STORAGE_EMULATOR_HOST", host.as_str())],
        url: "gs://fleet".to_owned(),
        opts: Options { endpoint: Some(endpoint.clone()), ..Default::default() },
        restore_url: Box::new(|prefix| format!("gs://fleet/{prefix}?endpoint={endpoint}")),
        restore_env: vec![],
        secrets: vec![],
        litestream: ls.map(|bin| -> LitestreamRestore {
            let host = host.clone();
            Box::new(move |_db: &Path, prefix: &str, out: &Path| {
                let args: Vec<PathBuf> =
                    vec!["restore".into(), "-o".into(), out.into(), format!("gs://fleet/{prefix}").into()];
                run_litestream(&bin, &args, &[("STORAGE_EMULATOR_HOST".to_owned(), host.clone())], LITESTREAM_TIMEOUT)
            })
        }),
    };
    replicate_and_restore(case);
}

/// SFTP on OpenSSH's sshd: the daemon logs in with `[storage] ssh_key` and checks the
/// host key against known hosts (`strict_host_key_checking` "yes", the default);
/// `litefleet restore` leaves the key to ssh's own config. The test reads the replica
/// folder on the server's side directly (the server is this machine).
#[test]
fn sftp_on_openssh() {
    let Some(ssh) = SshServer::start() else { return };
    let remote = ssh.remote_dir();
    let url = format!("sftp://{}@127.0.0.1:{}{}", ssh.user, ssh.proc.port, remote.display());
    let path = ssh.path_with_ssh();
    let ls = litestream_bin();
    let case = Case {
        name: "SFTP (OpenSSH sshd)",
        storage_toml: format!("[storage]\nurl = {url:?}\nssh_key = {:?}\n", ssh.key.display().to_string()),
        daemon_env: vec![("PATH", path.as_str())],
        url: format!("file://{}", remote.display()),
        opts: Options::default(),
        restore_url: Box::new(|prefix| format!("{url}/{prefix}")),
        restore_env: vec![("PATH", path.as_str())],
        secrets: vec![],
        litestream: ls.map(|bin| -> LitestreamRestore {
            let (url, ssh) = (url.clone(), &ssh);
            Box::new(move |db: &Path, prefix: &str, out: &Path| {
                let yml = format!(
                    "dbs:\n  - path: {}\n    replica:\n      url: {url}/{prefix}\n      key-path: {}\n      host-key: {}\n",
                    db.display(),
                    ssh.key.display(),
                    ssh.host_key
                );
                let cfg = out.with_extension("yml");
                std::fs::write(&cfg, yml).unwrap_or_else(|e| panic!("{e}"));
                let args: Vec<PathBuf> =
                    vec!["restore".into(), "-config".into(), cfg, "-o".into(), out.into(), db.into()];
                run_litestream(&bin, &args, &[], LITESTREAM_TIMEOUT)
            })
        }),
    };
    replicate_and_restore(case);
}
