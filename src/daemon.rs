//! `litefleet daemon`: the fleet, its metrics and its HTTP server, wired together and
//! run until a shutdown future resolves; reloads come from a channel.
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
        let fleet = Fleet::start(config).await?;
        let http_stop = CancellationToken::new();
        let served = http::serve_on(
            listener,
            &http_config,
            fleet.board(),
            fleet.storage().clone(),
            Some(metrics),
            http_stop.clone(),
        );
        let (server, http_task) = match served {
            Ok(s) => s,
            Err(e) => {
                fleet.shutdown().await;
                return Err(e.into());
            }
        };
        Ok(Daemon { fleet, http_addr: server.local_addr, http_stop, http_task, config_path })
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
            Ok(c) => match self.fleet.reload(c).await {
                Ok(restart) if restart.is_empty() => tracing::info!("configuration reloaded"),
                Ok(restart) => tracing::warn!(
                    "configuration reloaded; changes to [{}] take effect after a restart",
                    restart.join("], [")
                ),
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
