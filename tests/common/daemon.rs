//! The real `litefleet` binary as a child process: its log (stderr) collected line by
//! line, waits on what it logs, signals, `kill -9`, and its JSON API.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{http_request, wait_until};

/// Bound of every wait on the daemon's log.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a wait looks again.
pub const POLL: Duration = Duration::from_millis(25);

/// A running `litefleet` process whose stderr (the log) is collected.
pub struct Daemon {
    pub child: Child,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn spawn(args: &[&str], envs: &[(String, String)], cwd: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.args(args).current_dir(cwd).stdout(Stdio::null()).stderr(Stdio::piped());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env_remove("RUST_LOG");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawning litefleet: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut g = sink.lock().unwrap_or_else(|e| e.into_inner());
                g.push_str(&line);
                g.push('\n');
            }
        });
        Daemon { child, log }
    }

    /// `litefleet daemon --config <config>` run in `cwd`.
    pub fn config(config: &Path, cwd: &Path) -> Daemon {
        Daemon::spawn(&["daemon", "--config", config.to_str().unwrap()], &[], cwd)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    /// Waits until `needle` appears `n` times in the log; panics with the log if not.
    pub fn expect_n(&self, needle: &str, n: usize) {
        if !wait_until(WAIT, POLL, || self.count(needle) >= n) {
            panic!("log never showed {needle:?} ×{n}; log:\n{}", self.log());
        }
    }

    pub fn expect(&self, needle: &str) {
        self.expect_n(needle, 1);
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill -s {sig} failed");
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        let mut status = None;
        let exited = wait_until(Duration::from_secs(60), POLL, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        assert!(exited, "daemon did not exit; log:\n{}", self.log());
        status.unwrap_or_else(|| unreachable!())
    }

    /// SIGTERM, then asserts a clean exit (0).
    pub fn stop(mut self) -> String {
        self.signal("TERM");
        let status = self.wait_exit();
        let log = self.log();
        assert!(status.success(), "exit status {status}; log:\n{log}");
        log
    }

    /// `kill -9`: the process dies wherever it is (no final sync, no cleanup). Returns
    /// its log.
    pub fn kill9(mut self) -> String {
        self.signal("KILL");
        let status = self.wait_exit();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
        self.log()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on a daemon's API at `addr`, parsed as JSON; `None` while it does not
/// answer 200 (starting, stopped).
pub fn api(addr: SocketAddr, path: &str) -> Option<serde_json::Value> {
    let r = http_request(addr, "GET", path, &[], b"", Duration::from_secs(10)).ok()?;
    if r.status != 200 {
        return None;
    }
    serde_json::from_slice(&r.body).ok()
}
