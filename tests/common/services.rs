//! Storage emulators on 127.0.0.1 for `tests/services.rs`, each a child process killed
//! on drop: Azurite (Azure Blob), gcp-storage-emulator (GCS), OpenSSH's sshd (SFTP).
//! The binaries come from environment variables that `scripts/test.sh` exports; when one is missing the helper
//! returns `None` and prints why, except with `CI=true`, where it panics.

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

// ───────────────────────────── GCS ─────────────────────────────

/// gcp-storage-emulator (`LITEFLEET_GCS_EMULATOR`: its script, from PyPI), in memory,
/// with one bucket. It speaks the JSON API opendal uses and the XML download path
/// Google's Go client (Litestream) reads with, ranges included.
pub struct GcsEmulator {
    pub proc: Proc,
}

impl GcsEmulator {
    /// Starts the emulator with `bucket`. `None` (with a printed reason) when
    /// `LITEFLEET_GCS_EMULATOR` is unset outside CI.
    pub fn start(bucket: &str) -> Option<GcsEmulator> {
        let bin = tool_from_env("LITEFLEET_GCS_EMULATOR")?;
        let proc = start_with_retries("gcp-storage-emulator", || {
            let dir = tempfile::Builder::new().prefix("litefleet-gcs-").tempdir().map_err(|e| e.to_string())?;
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["start", "--host", "127.0.0.1", "--port", &port.to_string(), "--in-memory", "--quiet"])
                .args(["--default-bucket", bucket]);
            let ready = |port: u16| {
                let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                http_request(addr, "GET", &format!("/storage/v1/b/{bucket}"), &[], b"", Duration::from_secs(2))
                    .is_ok_and(|r| r.status == 200)
            };
            Proc::spawn(cmd, dir, port, ready)
        });
        Some(GcsEmulator { proc })
    }

    /// `127.0.0.1:PORT`, as `STORAGE_EMULATOR_HOST` takes it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.proc.port)
    }

    /// `http://127.0.0.1:PORT`, as `[storage] endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.host())
    }
}

// ───────────────────────────── SFTP ─────────────────────────────

/// OpenSSH's `sshd` (`LITEFLEET_SSHD`) on a free port of 127.0.0.1, with a throwaway
/// host key and one client key, serving SFTP to the current user. Clients reach it
/// through [`SshServer::path_with_ssh`]: a folder whose `ssh` runs the system's with
/// this server's own config (its known host, the client key), so nothing is read from
/// or written to the user's `~/.ssh`.
pub struct SshServer {
    pub proc: Proc,
    /// The login (the user running the tests).
    pub user: String,
    /// The client's private key.
    pub key: PathBuf,
    /// The host's public key line (`ssh-ed25519 AAAA…`).
    pub host_key: String,
}

impl SshServer {
    /// Starts sshd. `None` (with a printed reason) when `LITEFLEET_SSHD` is unset outside
    /// CI.
    pub fn start() -> Option<SshServer> {
        let sshd = tool_from_env("LITEFLEET_SSHD")?;
        Some(start_with_retries("sshd", || SshServer::try_start(&sshd)))
    }

    fn try_start(sshd: &Path) -> Result<SshServer, String> {
        let dir = tempfile::Builder::new().prefix("litefleet-sshd-").tempdir().map_err(|e| e.to_string())?;
        let d = dir.path();
        for name in ["host_key", "client_key"] {
            let o = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "litefleet-test", "-f"])
                .arg(d.join(name))
                .output()
                .map_err(|e| format!("ssh-keygen: {e}"))?;
            if !o.status.success() {
                return Err(format!("ssh-keygen: {}", String::from_utf8_lossy(&o.stderr)));
            }
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).map_err(|e| e.to_string())?;
        // sshd wants its privilege-separation folder, as its package's service creates.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = free_port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n\
             UsePAM no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n",
            d = d.display()
        );
        std::fs::write(d.join("sshd_config"), config).map_err(|e| e.to_string())?;
        let host_key = std::fs::read_to_string(d.join("host_key.pub")).map_err(|e| e.to_string())?;
        let host_key = host_key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        // The client side: known host, key, no prompt; `bin/ssh` applies it.
        std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port} {host_key}\n")).map_err(|e| e.to_string())?;
        let client = format!(
            "Host *\n  UserKnownHostsFile {d}/known_hosts\n  GlobalKnownHostsFile /dev/null\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  BatchMode yes\n",
            d = d.display()
        );
        std::fs::write(d.join("ssh_config"), client).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(d.join("bin")).map_err(|e| e.to_string())?;
        let wrapper = d.join("bin/ssh");
        std::fs::write(&wrapper, format!("#!/bin/sh\nexec /usr/bin/ssh -F {}/ssh_config \"$@\"\n", d.display()))
            .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        let user = Command::new("id").arg("-un").output().map_err(|e| format!("id -un: {e}"))?;
        let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
        let mut cmd = Command::new(sshd);
        cmd.args(["-D", "-e", "-f"]).arg(d.join("sshd_config"));
        let ready = |port: u16| {
            use std::io::Read as _;
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut banner = [0u8; 4];
            s.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
        };
        let key = d.join("client_key");
        Ok(SshServer { proc: Proc::spawn(cmd, dir, port, ready)?, user, key, host_key })
    }

    /// `PATH` with this server's `ssh` wrapper first.
    pub fn path_with_ssh(&self) -> String {
        format!("{}:{}", self.proc.dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default())
    }

    /// An empty folder on the server (the machine running the tests) for replicas.
    pub fn remote_dir(&self) -> PathBuf {
        let p = self.proc.dir.path().join("remote");
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("{e}"));
        p
    }
}
