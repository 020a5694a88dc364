//! `litefleet daemon`: the fleet, its metrics, its restore jobs and its HTTP server,
//! wired together and run until a shutdown future resolves; reloads come from a channel.
//!
//! [`Daemon::start`] does everything that can fail at start-up *before* the first
//! write to any replica: the config is validated and the HTTP socket bound first, so a
//! second daemon started by mistake (its port in use) stops without touching storage.
//! Tests run the real daemon in process with `[http] listen = "127.0.0.1:0"` and their
//! own shutdown future, as `cli` runs it with SIGINT/SIGTERM and SIGHUP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::errors::Chain;
use crate::fleet::{self, Fleet, ShutdownReport};
use crate::http;
use crate::recovery::jobs::Restores;
use crate::status::Board;

/// Why the daemon could not start or did not finish cleanly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Http(#[from] http::HttpError),
    #[error(transparent)]
    Fleet(#[from] fleet::Error),
    /// Some final syncs did not finish in time.
    #[error(
        "{} tenant(s) did not finish their final sync within the shutdown timeout (their unshipped commits are still in their WAL and ship at the next start): {}",
        .0.len(),
        .0.join(", ")
    )]
    Unfinished(Vec<String>),
}

/// A running daemon.
pub struct Daemon {
    fleet: Fleet,
    /// Restore jobs started through the API.
    restores: Restores,
    /// Where the dashboard and API listen.
    http_addr: SocketAddr,
    /// Ends the HTTP server (its live streams first).
    http_stop: CancellationToken,
    http_task: tokio::task::JoinHandle<()>,
    /// The config file a reload reads again (`None` in the seed's flag mode).
    config_path: Option<PathBuf>,
}

impl Daemon {
    /// Validates `config`, binds the HTTP socket, installs metrics, starts the fleet and
    /// serves. `config_path` is what a reload reads.
    pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Daemon, Error> {
        config.validate()?;
        let listener = http::bind(config.http.listen).await?;
        let metrics = crate::metrics::install();
        crate::metrics::set_per_tenant(config.http.per_tenant_metrics);
        let http_config = config.http.clone();
        let fleet = Fleet::start(config.clone()).await?;
        let restores = Restores::new(&config, fleet.storage().clone(), fleet.board());
        let http_stop = CancellationToken::new();
        let served = http::serve_on(
            listener,
            &http_config,
            fleet.board(),
            fleet.storage().clone(),
            Some(metrics),
            Some(restores.clone()),
            http_stop.clone(),
        );
        let (server, http_task) = match served {
            Ok(s) => s,
            Err(e) => {
                fleet.shutdown().await;
                return Err(e.into());
            }
        };
        Ok(Daemon { fleet, restores, http_addr: server.local_addr, http_stop, http_task, config_path })
    }

    /// Where the dashboard and API listen (the real port when `listen` had port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The status board.
    pub fn board(&self) -> Arc<Board> {
        self.fleet.board()
    }

    /// Reads the config file again and applies what can change while running (logged:
    /// a bad file is refused and the running configuration kept).
    pub async fn reload(&self) {
        let Some(path) = &self.config_path else {
            tracing::warn!("SIGHUP: flag mode has no config file to reload");
            return;
        };
        tracing::info!("SIGHUP: reloading {}", path.display());
        match Config::load(path) {
            Err(e) => tracing::error!("config reload refused, keeping the running configuration: {}", Chain(&e)),
            Ok(c) => match self.fleet.reload(c.clone()).await {
                Ok(restart) if restart.is_empty() => {
                    self.restores.set_watch(c.watch);
                    tracing::info!("configuration reloaded")
                }
                Ok(restart) => {
                    self.restores.set_watch(c.watch);
                    tracing::warn!(
                        "configuration reloaded; changes to [{}] take effect after a restart",
                        restart.join("], [")
                    )
                }
                Err(e) => tracing::error!("config reload failed, keeping the running configuration: {}", Chain(&e)),
            },
        }
    }

    /// Runs until `shutdown` resolves, reloading on every message of `reloads`; then
    /// stops the HTTP server and gives every tenant its final sync.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        mut reloads: mpsc::Receiver<()>,
    ) -> Result<ShutdownReport, Error> {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(()) = reloads.recv() => self.reload().await,
            }
        }
        // The dashboard's live streams end now; the final syncs need no dashboard.
        self.http_stop.cancel();
        // Running restores stop and remove their partial files.
        self.restores.shutdown().await;
        let report = self.fleet.shutdown().await;
        let _ = self.http_task.await;
        tracing::info!(
            stopped = report.stopped,
            final_syncs = report.final_syncs,
            failed = report.failed.len(),
            "👋 stopped"
        );
        if !report.timed_out.is_empty() {
            return Err(Error::Unfinished(report.timed_out));
        }
        Ok(report)
    }
}

/// Starts the daemon and runs it until `shutdown` (see [`Daemon`]).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<()>,
) -> Result<ShutdownReport, Error> {
    Daemon::start(config, config_path).await?.run(shutdown, reloads).await
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::config::{StorageUrl, WatchConfig};

    const ID: &str = "12345678-1234-5678-9abc-123456789012";

    fn config(dir: &Path) -> Config {
        let mut c = Config { watch: vec![WatchConfig::new(dir.join("clients"))], ..Config::default() };
        c.storage.url = StorageUrl::File { path: dir.join("replicas") };
        c.replication.state_dir = Some(dir.join("state"));
        c.replication.sync_interval = Duration::from_millis(50);
        c.http.listen = "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}"));
        c
    }

    fn tenant_db(dir: &Path) -> PathBuf {
        let clients = dir.join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let db = clients.join(format!("{ID}.db"));
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1);")
            .unwrap_or_else(|e| panic!("{e}"));
        db
    }

    /// One `GET` to the daemon, bounded in time; the body.
    async fn get(addr: SocketAddr, path: &str) -> String {
        let exchange = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        let out = tokio::time::timeout(Duration::from_secs(10), exchange).await;
        let out = out.unwrap_or_else(|_| panic!("GET {path} timed out")).unwrap_or_else(|e| panic!("GET {path}: {e}"));
        out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.path().is_dir() { todo.push(e.path()) } else { out.push(e.path()) }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_daemon_runs_in_process_on_port_0_and_stops_on_its_shutdown_future() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        tenant_db(dir.path());
        let daemon = Daemon::start(config(dir.path()), None).await.unwrap_or_else(|e| panic!("{e}"));
        let addr = daemon.http_addr();
        assert_ne!(addr.port(), 0, "the real port is reported");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (_reload, reloads) = mpsc::channel(1);
        let running = tokio::spawn(daemon.run(async { stopped.await.unwrap_or(()) }, reloads));

        let mut status = String::new();
        for _ in 0..400 {
            status = get(addr, "/api/status").await;
            if status.contains(ID) && status.contains("\"active\"") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(status.contains(ID) && status.contains("\"active\""), "{status}");
        let _ = stop.send(());
        let report = tokio::time::timeout(Duration::from_secs(30), running).await;
        let report = report.unwrap_or_else(|_| panic!("the daemon did not stop")).unwrap_or_else(|e| panic!("{e}"));
        let report = report.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.stopped, report.failed.len(), report.timed_out.len()), (1, 0, 0), "{report:?}");
        let shipped = files_under(&dir.path().join("replicas"));
        assert!(shipped.iter().any(|f| f.extension().is_some_and(|x| x == "ltx")), "{shipped:?}");
        assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the HTTP server still listens");
    }

    /// Regression (issue 18): a second daemon started by mistake with the same config,
    /// its port already in use, registered the tenants and shipped an L0 file before it
    /// exited on the bind error. Everything that can fail at start-up fails before the
    /// first write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_daemon_whose_port_is_taken_writes_nothing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        tenant_db(dir.path());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let mut c = config(dir.path());
        c.http.listen = taken.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let err = Daemon::start(c, None).await.err().unwrap_or_else(|| panic!("started on a taken port"));
        assert!(matches!(err, Error::Http(_)), "{err}");
        assert!(Chain(&err).to_string().contains(&taken.local_addr().unwrap_or_else(|e| panic!("{e}")).to_string()));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(files_under(&dir.path().join("replicas")), Vec::<PathBuf>::new(), "the replica was written");
        assert_eq!(files_under(&dir.path().join("state")), Vec::<PathBuf>::new(), "the state dir was written");
    }
}
