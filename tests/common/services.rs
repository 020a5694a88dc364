//! Storage emulators on 127.0.0.1 for `tests/services.rs`, each a child process killed
//! on drop: Azurite (Azure Blob). The binaries come from environment variables that
//! `scripts/test.sh` exports; when one is missing the helper returns `None` and prints
//! why, except with `CI=true`, where it panics.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use hmac::{KeyInit, Mac};
use tempfile::TempDir;

use super::{free_port, http_request, tool_from_env, wait_until};

/// How long an emulator may take to answer after it is spawned.
pub const STARTUP: Duration = Duration::from_secs(30);

/// A child process with its log in a temporary folder (also its data folder).
pub struct Proc {
    child: Child,
    pub dir: TempDir,
    pub port: u16,
    /// How long it took to answer its first request.
    pub startup: Duration,
}

impl Proc {
    /// Spawns `cmd` (its output to `<dir>/log`) and waits until `ready` or it exits.
    fn spawn(mut cmd: Command, dir: TempDir, port: u16, ready: impl Fn(u16) -> bool) -> Result<Proc, String> {
        let log = std::fs::File::create(dir.path().join("log")).map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child =
            cmd.stdin(Stdio::null()).stdout(log).stderr(log2).spawn().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
        let mut p = Proc { child, dir, port, startup: Duration::ZERO };
        let mut exited = false;
        let up = wait_until(STARTUP, Duration::from_millis(100), || {
            if let Ok(Some(_)) = p.child.try_wait() {
                exited = true;
                return true;
            }
            ready(port)
        });
        if exited || !up {
            return Err(format!(
                "{cmd:?} {} after {:?}; log:\n{}",
                if exited { "exited" } else { "did not answer" },
                t0.elapsed(),
                p.log()
            ));
        }
        p.startup = t0.elapsed();
        Ok(p)
    }

    /// The process's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server up to three times (a free port may be taken meanwhile).
fn start_with_retries<T>(what: &str, mut start: impl FnMut() -> Result<T, String>) -> T {
    let mut last = String::new();
    for _ in 0..3 {
        match start() {
            Ok(t) => return t,
            Err(e) => last = e,
        }
    }
    panic!("{what} did not start: {last}");
}

// ───────────────────────────── Azurite ─────────────────────────────

/// Azurite's Blob service (`LITEFLEET_AZURITE`: its `azurite-blob` script), with the
/// development account `devstoreaccount1` and its documented key.
pub struct Azurite {
    pub proc: Proc,
}

impl Azurite {
    pub const ACCOUNT: &str = "devstoreaccount1";
    /// Azurite's well-known development key (public, in Microsoft's docs).
    pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    /// Starts Azurite and creates `containers`. `None` (with a printed reason) when
    /// `LITEFLEET_AZURITE` is unset outside CI.
    pub fn start(containers: &[&str]) -> Option<Azurite> {
        let bin = tool_from_env("LITEFLEET_AZURITE")?;
        let az = start_with_retries("azurite", || Azurite::try_start(&bin));
        for c in containers {
            az.create_container(c);
        }
        Some(az)
    }

    fn try_start(bin: &Path) -> Result<Azurite, String> {
        let dir = tempfile::Builder::new().prefix("litefleet-azurite-").tempdir().map_err(|e| e.to_string())?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"]).arg(dir.path()).args([
            "--silent",
            "--disableTelemetry",
            "--skipApiVersionCheck",
            "--loose",
        ]);
        let ready = |port: u16| {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            http_request(addr, "GET", "/", &[], b"", Duration::from_secs(2)).is_ok()
        };
        Ok(Azurite { proc: Proc::spawn(cmd, dir, port, ready)? })
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`: the account's endpoint, path-style.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{}", self.proc.port, Self::ACCOUNT)
    }

    /// The connection string Azure's tools print for this server.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
            Self::ACCOUNT,
            Self::KEY,
            self.endpoint()
        )
    }

    /// Creates a container: `PUT /<account>/<name>?restype=container`, signed with the
    /// account's Shared Key (Azurite refuses anonymous requests).
    pub fn create_container(&self, name: &str) {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let version = "2021-08-06";
        // Verb, eleven empty standard headers (Content-Length 0 is signed as empty), the
        // x-ms-* headers, and the resource: path-style, so the account appears twice.
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{a}/{a}/{name}\nrestype:container",
            a = Self::ACCOUNT
        );
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b64.decode(Self::KEY).unwrap_or_else(|e| panic!("{e}"));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap_or_else(|e| panic!("{e}"));
        mac.update(to_sign.as_bytes());
        let auth = format!("SharedKey {}:{}", Self::ACCOUNT, b64.encode(mac.finalize().into_bytes()));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.proc.port));
        let path = format!("/{}/{name}?restype=container", Self::ACCOUNT);
        let headers = [("x-ms-date", date.as_str()), ("x-ms-version", version), ("Authorization", auth.as_str())];
        let r = http_request(addr, "PUT", &path, &headers, b"", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("creating container {name} on Azurite: {e}"));
        assert_eq!(r.status, 201, "creating container {name}: {}", String::from_utf8_lossy(&r.body));
    }

    /// A Litestream config restoring `db` from `container/path` on this server (only a
    /// config file can give Litestream a custom Azure endpoint).
    pub fn litestream_config(&self, dir: &Path, db: &Path, container: &str, path: &str) -> PathBuf {
        let yml = format!(
            "dbs:\n  - path: {}\n    replica:\n      type: abs\n      account-name: {}\n      account-key: {}\n      bucket: {container}\n      path: {path}\n      endpoint: {}\n",
            db.display(),
            Self::ACCOUNT,
            Self::KEY,
            self.endpoint()
        );
        let p = dir.join("litestream-abs.yml");
        std::fs::write(&p, yml).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}
