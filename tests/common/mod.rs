//! Shared helpers for litefleet's integration tests: every test file says `mod common;`
//! and takes what it needs (`boards`: status boards filled the way the fleet fills them;
//! `browser`: headless Chromium over the DevTools protocol; `hook_wat`: hook components
//! written in WebAssembly text; `live`: the daemon in process with real tenants, a slow
//! TCP link and tmpfs mounts; `daemon`: the `litefleet` binary as a child process;
//! `proxy`: a TCP proxy that injects storage faults; `faults`: ledger writers, restores
//! with both tools, whole-object checks, tmpfs).
//!
//! Everything here talks to 127.0.0.1 only, and every wait is bounded.
//!
//! External tools come from environment variables that `scripts/test.sh`
//! exports (`LITEFLEET_LITESTREAM_BIN`, `LITEFLEET_LITESTREAM_015_BIN`,
//! `LITEFLEET_MOTO_SERVER`). When one is missing the helper returns `None`
//! and prints why, so the calling test can skip, unless `CI=true`, where a
//! missing tool panics: in CI tests fail, they never skip.
#![allow(dead_code)]

pub mod boards;
pub mod browser;
pub mod daemon;
pub mod faults;
pub mod hook_wat;
pub mod live;
pub mod proxy;
pub mod services;

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener as StdTcpListener, TcpStream as StdTcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags};
use tempfile::TempDir;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

// ───────────────────────────── environment ─────────────────────────────

/// `CI=true` in the environment.
pub fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// An executable named by environment variable `var`. `None` (with a printed
/// reason) when unset or missing; panics instead when `CI=true`.
pub fn tool_from_env(var: &str) -> Option<PathBuf> {
    let problem = match std::env::var_os(var) {
        None => format!("{var} is not set"),
        Some(v) if v.is_empty() => format!("{var} is empty"),
        Some(v) => {
            let p = PathBuf::from(v);
            if p.is_file() {
                return Some(p);
            }
            format!("{var}={} does not exist", p.display())
        }
    };
    if in_ci() {
        panic!("CI=true but {problem}: run the tests through scripts/test.sh");
    }
    eprintln!("skipping: {problem} (run scripts/test.sh to install it)");
    None
}

/// Litestream 0.5.17 (`LITEFLEET_LITESTREAM_BIN`).
pub fn litestream_bin() -> Option<PathBuf> {
    tool_from_env("LITEFLEET_LITESTREAM_BIN")
}

/// Litestream 0.5.15 (`LITEFLEET_LITESTREAM_015_BIN`).
pub fn litestream_015_bin() -> Option<PathBuf> {
    tool_from_env("LITEFLEET_LITESTREAM_015_BIN")
}

/// moto's `moto_server` (`LITEFLEET_MOTO_SERVER`).
pub fn moto_server_bin() -> Option<PathBuf> {
    tool_from_env("LITEFLEET_MOTO_SERVER")
}

// ───────────────────────────── small utilities ─────────────────────────────

/// Polls `f` every `every` until it returns true or `timeout` passes.
/// Returns whether it became true.
pub fn wait_until(timeout: Duration, every: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("bind 127.0.0.1:0").port()
}

/// The answer to [`http_request`].
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One plain HTTP/1.1 request to a loopback address (`Connection: close`),
/// bounded by `timeout` for connecting and for each read/write.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> std::io::Result<HttpResponse> {
    assert!(addr.ip().is_loopback(), "tests only talk to loopback, not {addr}");
    let mut sock = StdTcpStream::connect_timeout(&addr, timeout)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes())?;
    sock.write_all(body)?;
    sock.flush()?;
    let mut raw = Vec::new();
    sock.read_to_end(&mut raw)?;
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| bad("no end of HTTP head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("bad status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Ok(HttpResponse { status, headers, body })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// Runs `cmd` with piped stdout/stderr and returns its output, or panics
/// (after killing it) when it runs longer than `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_t.join().unwrap_or_default();
                let stderr = err_t.join().unwrap_or_default();
                panic!(
                    "{cmd:?} still running after {timeout:?}; killed.\nstdout:\n{}\nstderr:\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    Output { status, stdout: out_t.join().unwrap_or_default(), stderr: err_t.join().unwrap_or_default() }
}

// ───────────────────────────── litestream ─────────────────────────────

/// Default bound for one litestream invocation.
pub const LITESTREAM_TIMEOUT: Duration = Duration::from_secs(120);

/// `bin args...` with extra environment variables, bounded by `timeout`.
///
/// Every inherited `AWS_*` variable is removed first: this machine sets
/// `AWS_CA_BUNDLE`, which makes litestream 0.5 fail at start with "unable to
/// add custom RootCAs HTTPClient", and an ambient profile or endpoint must
/// not leak into a test.
pub fn run_litestream<S: AsRef<OsStr>>(bin: &Path, args: &[S], envs: &[(String, String)], timeout: Duration) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, timeout)
}

/// `litestream restore -o <out> [extra_args...] <replica_url>`, bounded by
/// [`LITESTREAM_TIMEOUT`]. The caller checks `status` and prints
/// stdout/stderr on failure.
pub fn run_litestream_restore(bin: &Path, replica_url: &str, out: &Path, extra_args: &[&str]) -> Output {
    run_litestream_restore_env(bin, replica_url, out, extra_args, &[])
}

/// [`run_litestream_restore`] with extra environment variables (S3
/// credentials: see [`S3Server::litestream_env`], [`MotoServer::litestream_env`]).
pub fn run_litestream_restore_env(
    bin: &Path,
    replica_url: &str,
    out: &Path,
    extra_args: &[&str],
    envs: &[(String, String)],
) -> Output {
    let mut args: Vec<&OsStr> = vec![OsStr::new("restore"), OsStr::new("-o"), out.as_os_str()];
    args.extend(extra_args.iter().map(OsStr::new));
    args.push(OsStr::new(replica_url));
    run_litestream(bin, &args, envs, LITESTREAM_TIMEOUT)
}

/// Formats a process output for assertion messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Environment for an S3 client (litestream, the AWS SDK) talking to a test
/// server with these credentials.
fn aws_env(access_key: &str, secret_key: &str, region: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID".into(), access_key.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret_key.into()),
        ("AWS_REGION".into(), region.into()),
        ("AWS_DEFAULT_REGION".into(), region.into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

/// `s3://bucket/path?endpoint=...&region=...&forcePathStyle=true`, the form
/// of replica URL litestream 0.5 takes for an S3-compatible endpoint.
fn litestream_s3_url(endpoint: &str, region: &str, bucket: &str, path: &str) -> String {
    let path = path.trim_matches('/');
    format!("s3://{bucket}/{path}?endpoint={endpoint}&region={region}&forcePathStyle=true")
}

// ───────────────────────────── in-process S3 (s3s-fs) ─────────────────────────────

/// Counts the signed requests s3s authenticates (one secret-key lookup each).
struct CountingAuth {
    inner: s3s::auth::SimpleAuth,
    count: Arc<AtomicU64>,
}

// `S3Auth` is an `async_trait`; this is its desugared form, so the tests need
// no `async-trait` dependency.
impl s3s::auth::S3Auth for CountingAuth {
    fn get_secret_key<'life0, 'life1, 'async_trait>(
        &'life0 self,
        access_key: &'life1 str,
    ) -> Pin<Box<dyn Future<Output = s3s::S3Result<s3s::auth::SecretKey>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        'life1: 'async_trait,
        Self: 'async_trait,
    {
        self.count.fetch_add(1, Ordering::SeqCst);
        self.inner.get_secret_key(access_key)
    }
}

/// Finds final (non-1xx) HTTP/1.x status lines in a byte stream.
#[derive(Default)]
struct StatusLineMatcher {
    state: usize,
}

impl StatusLineMatcher {
    const PAT: &'static [u8; 9] = b"HTTP/1.x ";

    fn feed(&mut self, b: u8) -> bool {
        if self.state == Self::PAT.len() {
            self.state = 0;
            return b.is_ascii_digit() && b != b'1';
        }
        let ok = if self.state == 7 { b.is_ascii_digit() } else { b == Self::PAT[self.state] };
        if ok {
            self.state += 1;
        } else {
            self.state = usize::from(b == b'H');
        }
        false
    }
}

/// A socket that counts the HTTP responses written through it.
struct CountingStream {
    inner: tokio::net::TcpStream,
    matcher: StatusLineMatcher,
    responses: Arc<AtomicU64>,
}

impl CountingStream {
    fn saw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.matcher.feed(b) {
                self.responses.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl AsyncRead for CountingStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.saw(&buf[..n]);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(mut n)) = res {
            for b in bufs {
                if n == 0 {
                    break;
                }
                let take = n.min(b.len());
                this.saw(&b[..take]);
                n -= take;
            }
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// An in-process S3 server (s3s-fs over a temp dir) on `127.0.0.1:<port>`.
///
/// It runs on its own tokio runtime and threads, so it keeps serving while
/// a test blocks (e.g. in [`run_litestream_restore`]) and it works from both
/// sync and `#[tokio::test]` tests. Dropping it stops it.
pub struct S3Server {
    root: TempDir,
    addr: SocketAddr,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    responses: Arc<AtomicU64>,
    signed: Arc<AtomicU64>,
    connections: Arc<AtomicU64>,
    task: Option<tokio::task::JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl S3Server {
    pub const ACCESS_KEY: &'static str = "litefleet-test-ak";
    pub const SECRET_KEY: &'static str = "litefleet-test-sk";
    pub const REGION: &'static str = "us-east-1";

    /// Starts a server with [`Self::ACCESS_KEY`]/[`Self::SECRET_KEY`] and no bucket.
    pub fn start() -> S3Server {
        Self::start_with(Self::ACCESS_KEY, Self::SECRET_KEY)
    }

    pub fn start_with(access_key: &str, secret_key: &str) -> S3Server {
        let root = tempfile::Builder::new().prefix("litefleet-s3-").tempdir().expect("temp dir for S3 server");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s_fs::FileSystem::new");
        let signed = Arc::new(AtomicU64::new(0));
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(CountingAuth {
            inner: s3s::auth::SimpleAuth::from_single(access_key, secret_key),
            count: signed.clone(),
        });
        let service = builder.build();

        let std_listener = StdTcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        std_listener.set_nonblocking(true).expect("set_nonblocking");
        let addr = std_listener.local_addr().expect("local_addr");

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .expect("tokio runtime for S3 server");
        let responses = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (resp2, conn2) = (responses.clone(), connections.clone());
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("tokio TcpListener");
            loop {
                let Ok((sock, _peer)) = listener.accept().await else {
                    continue;
                };
                conn2.fetch_add(1, Ordering::SeqCst);
                let _ = sock.set_nodelay(true);
                let io =
                    CountingStream { inner: sock, matcher: StatusLineMatcher::default(), responses: resp2.clone() };
                let svc = service.clone();
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(io), svc).await;
                });
            }
        });
        S3Server {
            root,
            addr,
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            region: Self::REGION.to_string(),
            responses,
            signed,
            connections,
            task: Some(task),
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The directory s3s-fs serves: bucket `b`, key `k` is `root/b/k`.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Creates a bucket (a directory for s3s-fs).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.path().join(name)).unwrap_or_else(|e| panic!("creating bucket {name}: {e}"));
    }

    /// The file holding object `key` of `bucket`.
    pub fn object_path(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.path().join(bucket).join(key)
    }

    /// Keys of all objects in `bucket`, sorted (read from disk, no request).
    pub fn objects(&self, bucket: &str) -> Vec<String> {
        let base = self.root.path().join(bucket);
        let mut out = Vec::new();
        let mut todo = VecDeque::from([base.clone()]);
        while let Some(dir) = todo.pop_front() {
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let p = entry.path();
                if p.is_dir() {
                    todo.push_back(p);
                } else if let Ok(rel) = p.strip_prefix(&base) {
                    let key = rel.to_string_lossy().replace('\\', "/");
                    if !key.rsplit('/').next().unwrap_or("").starts_with(".tmp.") {
                        out.push(key);
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// HTTP responses (final, non-1xx) the server has written, signed or not.
    pub fn request_count(&self) -> u64 {
        self.responses.load(Ordering::SeqCst)
    }

    /// Requests that carried a signature (s3s looked up their secret key).
    pub fn signed_request_count(&self) -> u64 {
        self.signed.load(Ordering::SeqCst)
    }

    /// TCP connections accepted.
    pub fn connection_count(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Env vars giving an S3 client this server's credentials and region.
    pub fn litestream_env(&self) -> Vec<(String, String)> {
        aws_env(&self.access_key, &self.secret_key, &self.region)
    }

    /// Replica URL for litestream: `s3://bucket/path?endpoint=…&forcePathStyle=true`.
    pub fn litestream_url(&self, bucket: &str, path: &str) -> String {
        litestream_s3_url(&self.endpoint(), &self.region, bucket, path)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ───────────────────────────── moto ─────────────────────────────

/// How long `moto_server` may take to answer after it is spawned.
pub const MOTO_STARTUP: Duration = Duration::from_secs(10);

/// A `moto_server` child process on 127.0.0.1 with one bucket; killed on drop.
pub struct MotoServer {
    child: Child,
    port: u16,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// How long it took to answer its first request.
    pub startup: Duration,
    log_dir: TempDir,
}

impl MotoServer {
    /// Starts moto and creates `bucket`. `None` (with a printed reason) when
    /// `LITEFLEET_MOTO_SERVER` is unset outside CI; panics in CI, or when
    /// moto does not come up.
    pub fn start(bucket: &str) -> Option<MotoServer> {
        let bin = moto_server_bin()?;
        let mut last_err = String::new();
        for _attempt in 0..3 {
            match Self::try_start(&bin, bucket) {
                Ok(m) => return Some(m),
                Err(e) => last_err = e,
            }
        }
        panic!("moto_server did not start: {last_err}");
    }

    fn try_start(bin: &Path, bucket: &str) -> Result<MotoServer, String> {
        let port = free_port();
        let log_dir = tempfile::Builder::new().prefix("litefleet-moto-").tempdir().map_err(|e| e.to_string())?;
        let log_path = log_dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", bin.display()))?;
        let mut moto = MotoServer {
            child,
            port,
            bucket: bucket.to_string(),
            access_key: "test".into(),
            secret_key: "test".into(),
            region: "us-east-1".into(),
            startup: Duration::ZERO,
            log_dir,
        };
        let addr = moto.addr();
        let mut exited = false;
        let up = wait_until(MOTO_STARTUP, Duration::from_millis(50), || {
            if let Ok(Some(_)) = moto.child.try_wait() {
                exited = true;
                return true;
            }
            http_request(addr, "GET", "/", &[], b"", Duration::from_secs(2)).is_ok()
        });
        if exited || !up {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(format!(
                "{} on port {port} {} after {:?}; log:\n{log}",
                bin.display(),
                if exited { "exited" } else { "did not answer" },
                t0.elapsed()
            ));
        }
        moto.startup = t0.elapsed();
        moto.create_bucket(bucket);
        Ok(moto)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Creates a bucket with a plain (unsigned) PUT; moto does not check
    /// signatures.
    pub fn create_bucket(&self, name: &str) {
        let resp = http_request(self.addr(), "PUT", &format!("/{name}"), &[], b"", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("PUT /{name} to moto: {e}"));
        assert!(
            resp.status == 200,
            "creating bucket {name} on moto: HTTP {}: {}",
            resp.status,
            String::from_utf8_lossy(&resp.body)
        );
    }

    /// moto's stdout/stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_dir.path().join("moto.log")).unwrap_or_default()
    }

    pub fn litestream_env(&self) -> Vec<(String, String)> {
        aws_env(&self.access_key, &self.secret_key, &self.region)
    }

    pub fn litestream_url(&self, path: &str) -> String {
        litestream_s3_url(&self.endpoint(), &self.region, &self.bucket, path)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ───────────────────────────── the writer process ─────────────────────────────

/// Path of the `litefleet-writer` binary cargo built for these tests.
pub fn writer_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_litefleet-writer"))
}

/// A `litefleet-writer` child process driven line by line; killed on drop.
pub struct Writer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Bound on each answer; `cmd_timeout` overrides it once.
    pub timeout: Duration,
}

impl Writer {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

    pub fn spawn() -> Writer {
        Self::spawn_with_args(&[])
    }

    /// Spawns with extra arguments (e.g. `["--seed", "7"]`).
    pub fn spawn_with_args(args: &[&str]) -> Writer {
        let mut child = Command::new(writer_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", writer_bin().display()));
        let stdout = child.stdout.take().expect("writer stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Writer { child, stdin, lines: rx, timeout: Self::DEFAULT_TIMEOUT }
    }

    /// Spawns a writer and opens `db` in it (`open <db>`).
    pub fn open(db: &Path) -> Writer {
        let mut w = Self::spawn();
        w.cmd(&format!("open {}", db.display()));
        w
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one command; `Ok(data)` for `ok [data]`, `Err(msg)` for
    /// `err msg`. Panics when the process is gone or does not answer in time.
    pub fn try_cmd_timeout(&mut self, line: &str, timeout: Duration) -> Result<String, String> {
        assert!(!line.contains('\n'), "one command per line: {line:?}");
        let stdin = self.stdin.as_mut().expect("writer stdin closed");
        if let Err(e) = writeln!(stdin, "{line}").and_then(|_| stdin.flush()) {
            panic!("writer gone while sending {line:?}: {e}");
        }
        let answer = match self.lines.recv_timeout(timeout) {
            Ok(a) => a,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("writer did not answer {line:?} within {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("writer exited ({:?}) before answering {line:?}", self.child.try_wait())
            }
        };
        if let Some(rest) = answer.strip_prefix("ok") {
            Ok(rest.trim_start().to_string())
        } else if let Some(rest) = answer.strip_prefix("err") {
            Err(rest.trim_start().to_string())
        } else {
            panic!("writer answered {line:?} with {answer:?}")
        }
    }

    pub fn try_cmd(&mut self, line: &str) -> Result<String, String> {
        self.try_cmd_timeout(line, self.timeout)
    }

    /// Sends one command and returns the data after `ok`; panics on `err`.
    pub fn cmd(&mut self, line: &str) -> String {
        self.cmd_timeout(line, self.timeout)
    }

    pub fn cmd_timeout(&mut self, line: &str, timeout: Duration) -> String {
        match self.try_cmd_timeout(line, timeout) {
            Ok(data) => data,
            Err(msg) => panic!("writer: {line:?} failed: {msg}"),
        }
    }

    /// Transactions committed by this writer so far.
    pub fn txcount(&mut self) -> u64 {
        let s = self.cmd("txcount");
        s.parse().unwrap_or_else(|_| panic!("bad txcount answer {s:?}"))
    }

    /// `checkpoint <mode>` → (busy, log, checkpointed).
    pub fn checkpoint(&mut self, mode: &str) -> (i64, i64, i64) {
        let s = self.cmd(&format!("checkpoint {mode}"));
        let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().expect("checkpoint answer")).collect();
        assert_eq!(v.len(), 3, "checkpoint answer {s:?}");
        (v[0], v[1], v[2])
    }

    /// Sends `quit` and waits (bounded) for a clean exit.
    pub fn quit(mut self) {
        let _ = self.try_cmd_timeout("quit", Duration::from_secs(30));
        self.stdin.take();
        let exited = wait_until(Duration::from_secs(10), Duration::from_millis(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited, "writer did not exit after quit");
    }

    /// Kills the process without letting SQLite close (a crash).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ───────────────────────────── SQLite comparisons ─────────────────────────────

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `<path>-wal`
pub fn wal_path(path: &Path) -> PathBuf {
    sidecar(path, "-wal")
}

/// `<path>-shm`
pub fn shm_path(path: &Path) -> PathBuf {
    sidecar(path, "-shm")
}

/// Takes a consistent copy of a live database at `src` into `dst`, then
/// checkpoints the copy, leaving `dst` a single file with no WAL.
///
/// Pages are copied verbatim (no VACUUM, no backup API, which both rewrite
/// page 1's header), so `fs::read(dst)` equals what a correct restore of the
/// same transaction produces. While copying it holds the write lock on `src`
/// (`BEGIN IMMEDIATE`), so no commit can land mid-copy, and it disables the
/// checkpoint-on-close, so `src` and its WAL are left as they were.
/// Writers wait for it through their busy timeout.
pub fn snapshot_db(src: &Path, dst: &Path) {
    for p in [dst.to_path_buf(), wal_path(dst), shm_path(dst)] {
        let _ = std::fs::remove_file(p);
    }
    let conn = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .unwrap_or_else(|e| panic!("opening {}: {e}", src.display()));
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true).expect("SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE");
    conn.busy_timeout(Duration::from_secs(60)).expect("busy_timeout");
    conn.execute_batch("BEGIN IMMEDIATE").unwrap_or_else(|e| panic!("BEGIN IMMEDIATE on {}: {e}", src.display()));
    std::fs::copy(src, dst).unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
    let src_wal = wal_path(src);
    if src_wal.exists() {
        std::fs::copy(&src_wal, wal_path(dst)).unwrap_or_else(|e| panic!("copying WAL: {e}"));
    }
    conn.execute_batch("ROLLBACK").expect("ROLLBACK");
    conn.close().map_err(|(_, e)| e).expect("closing source");

    let copy = Connection::open(dst).unwrap_or_else(|e| panic!("opening copy: {e}"));
    let (busy, _, _): (i64, i64, i64) = copy
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("checkpointing the copy");
    assert_eq!(busy, 0, "checkpoint of the private copy was blocked");
    copy.close().map_err(|(_, e)| e).expect("closing copy");
    for p in [wal_path(dst), shm_path(dst)] {
        let _ = std::fs::remove_file(p);
    }
}

/// The bytes of `path` as one file with every WAL frame checkpointed into
/// it. If `<path>-wal` exists the db is treated as live and copied through
/// [`snapshot_db`]; otherwise the file is read as it is. Never modifies
/// `path`.
pub fn checkpointed_bytes(path: &Path) -> Vec<u8> {
    if wal_path(path).exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = dir.path().join("snapshot.db");
        snapshot_db(path, &copy);
        std::fs::read(&copy).expect("reading snapshot")
    } else {
        std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }
}

/// Opens a private, checkpointed copy of `path` (see [`checkpointed_bytes`]).
fn open_private_copy(path: &Path) -> (TempDir, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("copy.db");
    if wal_path(path).exists() {
        snapshot_db(path, &copy);
    } else {
        std::fs::copy(path, &copy).unwrap_or_else(|e| panic!("copying {}: {e}", path.display()));
    }
    let conn = Connection::open(&copy).expect("opening private copy");
    (dir, conn)
}

/// `PRAGMA integrity_check` rows of `path` (on a private copy).
pub fn integrity_check(path: &Path) -> Vec<String> {
    let (_dir, conn) = open_private_copy(path);
    let mut stmt = conn.prepare("PRAGMA integrity_check").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0))
        .expect("integrity_check")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("integrity_check rows")
}

/// `PRAGMA integrity_check` says `ok`.
pub fn integrity_ok(path: &Path) -> bool {
    integrity_check(path) == ["ok"]
}

type Dump = Vec<(String, String, Option<String>, Vec<Vec<Value>>)>;

/// Schema and every row of every table, in a deterministic order.
fn logical_dump(path: &Path) -> Dump {
    let (_dir, conn) = open_private_copy(path);
    let schema: Vec<(String, String, Option<String>)> = {
        let mut stmt =
            conn.prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name").expect("reading schema");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .expect("schema")
            .collect::<rusqlite::Result<_>>()
            .expect("schema rows")
    };
    let mut out = Vec::new();
    for (ty, name, sql) in schema {
        let is_virtual = sql.as_deref().is_some_and(|s| s.to_ascii_uppercase().starts_with("CREATE VIRTUAL"));
        let mut rows = Vec::new();
        if ty == "table" && !is_virtual {
            let quoted = format!("\"{}\"", name.replace('"', "\"\""));
            let ncols = conn.prepare(&format!("SELECT * FROM {quoted}")).expect("prepare").column_count();
            let order = (1..=ncols).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
            let mut stmt = conn.prepare(&format!("SELECT * FROM {quoted} ORDER BY {order}")).expect("prepare");
            let mut q = stmt.query([]).expect("query");
            while let Some(row) = q.next().expect("row") {
                let mut vals = Vec::with_capacity(ncols);
                for i in 0..ncols {
                    vals.push(row.get::<_, Value>(i).expect("value"));
                }
                rows.push(vals);
            }
        }
        out.push((ty, name, sql, rows));
    }
    out
}

/// `None` when `a` and `b` hold the same schema and rows; otherwise a short
/// description of the first difference.
pub fn sqlite_logical_diff(a: &Path, b: &Path) -> Option<String> {
    let (da, db) = (logical_dump(a), logical_dump(b));
    if da.len() != db.len() {
        let names = |d: &Dump| d.iter().map(|e| e.1.clone()).collect::<Vec<_>>();
        return Some(format!("schema differs: {:?} vs {:?}", names(&da), names(&db)));
    }
    for (x, y) in da.iter().zip(db.iter()) {
        if (&x.0, &x.1, &x.2) != (&y.0, &y.1, &y.2) {
            return Some(format!("schema entry {:?} vs {:?}", (&x.0, &x.1, &x.2), (&y.0, &y.1, &y.2)));
        }
        if x.3.len() != y.3.len() {
            return Some(format!("table {}: {} rows vs {} rows", x.1, x.3.len(), y.3.len()));
        }
        if let Some(i) = (0..x.3.len()).find(|&i| x.3[i] != y.3[i]) {
            return Some(format!("table {}: row #{i} (in sort order) differs", x.1));
        }
    }
    None
}

/// `a` and `b` hold the same schema and rows (pages may differ).
pub fn sqlite_logical_eq(a: &Path, b: &Path) -> bool {
    sqlite_logical_diff(a, b).is_none()
}

/// Byte offset and page number of the first difference between two
/// checkpointed images, for assertion messages.
/// Panics unless a restored database equals its source byte for byte, naming the
/// first difference.
pub fn same(what: &str, got: &[u8], want: &[u8], page_size: usize) {
    if got != want {
        panic!(
            "{what}: restored {} bytes, source {} bytes; first difference (page, byte) = {:?}",
            got.len(),
            want.len(),
            first_difference(got, want, page_size)
        );
    }
}

pub fn first_difference(a: &[u8], b: &[u8], page_size: usize) -> Option<(usize, usize)> {
    let n = a.len().min(b.len());
    let off = (0..n).find(|&i| a[i] != b[i]).or(if a.len() != b.len() { Some(n) } else { None })?;
    Some((off, off / page_size.max(1) + 1))
}
