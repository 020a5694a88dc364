//! Command-line interface: subcommands, logging set-up, signal handling, dispatch.
//!
//! Errors reach the user once, at the edge, as one line with their whole chain
//! (`error: <what failed>: <why>`), and the exit code is 1.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::ltx::{PageEncoding, TxId};
use crate::replicate::{self, Settings};
use crate::restore::{self, IntegrityCheck, Target};
use crate::storage::{self, Storage};

/// litefleet — continuous SQLite backups for every tenant, in Litestream's format.
#[derive(Parser, Debug)]
#[command(name = "litefleet", version, about, long_about = None)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level filter (also `RUST_LOG`), e.g. `info`, `debug`, `litefleet=debug`.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Page compression inside LTX files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Encoding {
    /// LZ4 block per page (Litestream >= 0.5.16).
    Block,
    /// LZ4 frame per page (readable by every Litestream 0.5.x).
    Frame,
}

impl From<Encoding> for PageEncoding {
    fn from(e: Encoding) -> Self {
        match e {
            Encoding::Block => PageEncoding::Lz4Block,
            Encoding::Frame => PageEncoding::Lz4Frame,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Replicate one database in the foreground until SIGINT/SIGTERM, then make a
    /// final sync and exit.
    Replicate(ReplicateArgs),
    /// Restore a database from a replica (latest, or a point in time).
    Restore(RestoreArgs),
}

/// `litefleet replicate`.
#[derive(clap::Args, Debug)]
pub struct ReplicateArgs {
    /// The SQLite database to replicate.
    pub db: PathBuf,
    /// Where to: `file:///path`, `s3://bucket/path?endpoint=…&region=…`, `memory://x`.
    pub replica_url: String,
    /// Busy databases ship at most this often; the first change after idle ships at once.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub sync_interval: Duration,
    /// Time-based checkpoint trigger (0s disables it).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub checkpoint_interval: Duration,
    /// WAL pages that trigger a PASSIVE checkpoint.
    #[arg(long, default_value_t = replicate::DEFAULT_MIN_CHECKPOINT_PAGES)]
    pub min_checkpoint_pages: u64,
    /// WAL pages that trigger the emergency TRUNCATE checkpoint.
    #[arg(long, default_value_t = replicate::DEFAULT_TRUNCATE_PAGES)]
    pub truncate_pages: u64,
    /// Page compression inside LTX files.
    #[arg(long, value_enum, default_value_t = Encoding::Block)]
    pub page_encoding: Encoding,
    /// Local position cache (never next to the database). Without it, a restart
    /// recovers the position from the replica and ships one snapshot.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Refuse databases in rollback-journal mode instead of switching them to WAL.
    #[arg(long)]
    pub no_wal_switch: bool,
    /// How long the final sync may take at shutdown.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub shutdown_timeout: Duration,
}

/// `litefleet restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The replica: `file:///path`, `s3://bucket/path?endpoint=…`, `memory://x`.
    pub replica_url: String,
    /// Output database path (must not exist unless --force).
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Restore up to this TXID (16 hex digits, as in file names).
    #[arg(long, value_parser = parse_txid, conflicts_with = "timestamp")]
    pub txid: Option<TxId>,
    /// Restore the state as of this time (RFC 3339, e.g. 2026-01-02T15:04:05Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub timestamp: Option<std::time::SystemTime>,
    /// Print the plan (which files, which levels) and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Check the restored database with SQLite before it replaces the output.
    #[arg(long, value_enum, default_value_t = IntegrityCheck::None)]
    pub integrity_check: IntegrityCheck,
    /// Overwrite an existing output (and its -wal/-shm).
    #[arg(long)]
    pub force: bool,
}

fn parse_txid(s: &str) -> Result<TxId, String> {
    TxId::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?} is not a hex TXID: {e}"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, &cli.log_level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Replicate(a) => run_replicate(a).await,
            Command::Restore(a) => run_restore(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up tracing on stderr, text or JSON.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run_replicate(a: ReplicateArgs) -> anyhow::Result<()> {
    let storage = Storage::from_url(&a.replica_url, &storage::Options::default())?;
    let replica = storage.replica("");
    let settings = Settings {
        sync_interval: a.sync_interval,
        checkpoint_interval: a.checkpoint_interval,
        min_checkpoint_pages: a.min_checkpoint_pages,
        truncate_pages: a.truncate_pages,
        page_encoding: a.page_encoding.into(),
        state_dir: a.state_dir,
        refuse_rollback_journal: a.no_wal_switch,
        ..Settings::default()
    };
    tracing::info!(db = %a.db.display(), replica = %replica.url(), "replicating");
    replicate::run(&a.db, replica, settings, shutdown_signal(), a.shutdown_timeout).await?;
    Ok(())
}

async fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    let storage = Storage::from_url(&a.replica_url, &storage::Options::default())?;
    let replica = storage.replica("");
    let target = Target { txid: a.txid, timestamp: a.timestamp };
    if a.dry_run {
        let steps = restore::plan(&replica, &target).await?;
        for line in restore::describe_plan(&replica, &steps) {
            println!("{line}");
        }
        return Ok(());
    }
    let opts = restore::Options { target, integrity: a.integrity_check, force: a.force, progress: true };
    let summary = restore::restore(&replica, &a.output, &opts).await?;
    restore::print_summary(&a.output, &summary, std::io::stdout())?;
    Ok(())
}
