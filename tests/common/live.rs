//! The daemon in this process, for API tests: a fleet on temp folders, its HTTP API on
//! 127.0.0.1:0, tenant databases written by `litefleet-writer` processes, and what the
//! restore tests inject for real — a slow link (a TCP proxy that paces what a server
//! sends back) and small or read-only tmpfs mounts.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litefleet::config::{Config, Secret, StorageUrl, WatchConfig};
use litefleet::daemon::Daemon;
use litefleet::status::Board;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{http_request, in_ci};

/// Bound on every wait of these helpers.
pub const WAIT: Duration = Duration::from_secs(60);
/// The token of [`Live::config`].
pub const TOKEN: &str = "restore-test-token";

/// A daemon running in this process until [`Live::stop`].
pub struct Live {
    pub addr: SocketAddr,
    pub board: Arc<Board>,
    /// The token requests carry (`None`: the daemon has none).
    pub token: Option<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// A config for a daemon on `dir`: watch `dir/clients`, replicas in `dir/replicas`,
/// state in `dir/state`, restore copies in `dir/copies` (created), syncs every 50 ms,
/// [`TOKEN`], no compaction.
pub fn config(dir: &Path) -> Config {
    let mut c = Config { watch: vec![WatchConfig::new(dir.join("clients"))], ..Config::default() };
    std::fs::create_dir_all(dir.join("clients")).unwrap();
    std::fs::create_dir_all(dir.join("copies")).unwrap();
    c.storage.url = StorageUrl::File { path: dir.join("replicas") };
    c.replication.state_dir = Some(dir.join("state"));
    c.replication.sync_interval = Duration::from_millis(50);
    c.http.listen = "127.0.0.1:0".parse().unwrap();
    c.http.token = Some(Secret::new(TOKEN));
    c.restore.dir = Some(dir.join("copies"));
    c.lifecycle.levels.clear();
    c.lifecycle.snapshot_interval = Duration::ZERO;
    c
}

/// `c` with its replicas in bucket `bucket` of `s3` (created), reached at `endpoint`
/// (a [`SlowLink`] to it, or the server itself).
pub fn on_s3(mut c: Config, s3: &super::S3Server, bucket: &str, endpoint: String) -> Config {
    s3.create_bucket(bucket);
    c.storage.url = StorageUrl::S3 { bucket: bucket.into(), path: String::new() };
    c.storage.endpoint = Some(endpoint);
    c.storage.force_path_style = Some(true);
    c.storage.access_key_id = Some(Secret::new(super::S3Server::ACCESS_KEY));
    c.storage.secret_access_key = Some(Secret::new(super::S3Server::SECRET_KEY));
    c
}

impl Live {
    /// Starts the daemon of `config`.
    pub async fn start(config: Config) -> Live {
        let token = config.http.token.as_ref().map(|t| t.expose().to_owned());
        let daemon = Daemon::start(config, None).await.unwrap_or_else(|e| panic!("daemon: {e}"));
        let (addr, board) = (daemon.http_addr(), daemon.board());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (_reload, reloads) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(async move {
            let _keep = _reload;
            let r = daemon.run(async { stopped.await.unwrap_or(()) }, reloads).await;
            if let Err(e) = r {
                eprintln!("daemon stopped with an error: {e}");
            }
        });
        Live { addr, board, token, stop: Some(stop), task: Some(task) }
    }

    /// Stops the daemon and waits for it (bounded).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t).await.expect("the daemon did not stop").expect("daemon task");
        }
    }

    /// A request with the daemon's token; the status and the body.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        self.call_as(method, path, self.token.as_deref(), body).await
    }

    /// A request with `token` (or none).
    pub async fn call_as(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, String) {
        let (addr, method, path) = (self.addr, method.to_owned(), path.to_owned());
        let auth = token.map(|t| format!("Bearer {t}"));
        let body = body.map(|b| b.to_string());
        tokio::task::spawn_blocking(move || raw(addr, &method, &path, auth.as_deref(), body.as_deref().unwrap_or("")))
            .await
            .unwrap()
    }

    /// A request with a raw body (malformed JSON and the like).
    pub async fn call_raw(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let (addr, method, path, body) = (self.addr, method.to_owned(), path.to_owned(), body.to_owned());
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || raw(addr, &method, &path, auth.as_deref(), &body)).await.unwrap()
    }

    /// `GET path` as JSON (must be 200).
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.call("GET", path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// Starts a restore of `tenant`; the job (202 expected).
    pub async fn restore(&self, tenant: &str, body: Value) -> Value {
        let (status, text) = self.call("POST", &format!("/api/clients/{tenant}/restores"), Some(&body)).await;
        assert_eq!(status, 202, "POST restore {body}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls job `id` until it has finished; the job.
    pub async fn finished(&self, id: &str) -> Value {
        let started = Instant::now();
        loop {
            let v = self.json(&format!("/api/restores/{id}")).await;
            if matches!(v["state"].as_str(), Some("done" | "failed" | "cancelled")) {
                return v;
            }
            assert!(started.elapsed() < WAIT, "job {id} did not finish: {v}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `db`'s replica holds a TXID above `above`, nothing waits to ship, and
    /// both stay so for [`SETTLE`] (the watcher has seen every write of a writer that
    /// has exited by then); that TXID.
    pub async fn shipped(&self, db: &Path, above: u64) -> u64 {
        let started = Instant::now();
        let mut since: Option<(u64, Instant)> = None;
        loop {
            let now = self.board.get(db).and_then(|t| t.txid.filter(|&x| x > above && t.pending_since.is_none()));
            since = match (now, since) {
                (Some(t), Some((s, at))) if t == s => {
                    if at.elapsed() >= SETTLE {
                        return t;
                    }
                    Some((s, at))
                }
                (Some(t), _) => Some((t, Instant::now())),
                (None, _) => None,
            };
            assert!(
                started.elapsed() < WAIT,
                "{} never shipped past TXID {above}: {:?}",
                db.display(),
                self.board.get(db)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a tenant's TXID must stay put for [`Live::shipped`].
pub const SETTLE: Duration = Duration::from_millis(300);

/// One HTTP/1.1 request (bounded); the status and the body as text.
fn raw(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = auth {
        headers.push(("authorization", a));
    }
    let r = http_request(addr, method, path, &headers, body.as_bytes(), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (r.status, String::from_utf8_lossy(&r.body).into_owned())
}

/// Runs a `litefleet-writer` script on `db` (each line a command); panics if it fails.
pub fn write(db: &Path, lines: &[&str]) {
    let script = db.with_extension("script");
    let mut text = format!("open {}\n", db.display());
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    std::fs::write(&script, text).unwrap();
    let out = super::run_with_timeout(
        std::process::Command::new(super::writer_bin()).args(["--script", script.to_str().unwrap()]),
        WAIT,
    );
    assert!(out.status.success(), "writer on {}: {}", db.display(), super::describe_output(&out));
    let _ = std::fs::remove_file(script);
}

/// SHA-256 of a file in hex.
pub fn sha256(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() { todo.push(e.path()) } else { out.push(e.path()) }
        }
    }
    out.sort();
    out
}

/// A TCP proxy on 127.0.0.1 whose answers come back at most `bytes_per_sec` (requests
/// go through at full speed): downloads through it are slow, uploads are not.
pub struct SlowLink {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl SlowLink {
    pub fn start(to: SocketAddr, bytes_per_sec: u64) -> SlowLink {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(to).await else { return };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut cr, &mut sw).await;
                        let _ = sw.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    while let Ok(n) = sr.read(&mut buf).await {
                        if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs_f64(n as f64 / bytes_per_sec as f64)).await;
                    }
                    let _ = cw.shutdown().await;
                });
            }
        });
        SlowLink { addr, runtime: Some(runtime) }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// A tmpfs mounted for a test (unmounted on drop): a small one fills up for real, a
/// read-only one refuses writes even to root.
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"256k"`) at `path` (created); `None` after printing why
    /// when this process may not mount (not root) — a panic when `CI=true`.
    pub fn mount(path: &Path, size: &str, read_only: bool) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).unwrap();
        let mut opts = format!("size={size}");
        if read_only {
            opts.push_str(",ro");
        }
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &opts, "tmpfs", path.to_str().unwrap()])
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs { path: path.to_path_buf() }),
            other => {
                let why = format!("cannot mount a tmpfs at {} ({other:?}); this test needs root", path.display());
                if in_ci() {
                    panic!("CI=true: {why}");
                }
                eprintln!("skipping: {why}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.path).status();
    }
}
