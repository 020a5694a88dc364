//! Command-line interface: clap's subcommands, logging set-up, signals, dispatch. The
//! seed's flag mode is parsed by `config::legacy`; the daemon is `daemon`.
//!
//! Errors reach the user once, at the edge, as one line with their whole chain
//! (`error: <what failed>: <why>`), and the exit code is 1 (2 for a flag the seed's
//! flag mode does not know, as Go's `flag` package does).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::legacy::{FlagMode, SEED_USAGE, flag_mode};
use crate::config::{self, Config, LogFormat, PageEncoding, SingleDb};
use crate::errors::Chain;
use crate::ltx::TxId;
use crate::restore::{self, IntegrityCheck, Target};
use crate::storage::{self, Storage};
use crate::tenant::Prefix;

/// litefleet — continuous SQLite backups for every tenant, in Litestream's format.
#[derive(Parser, Debug)]
#[command(name = "litefleet", version, about, long_about = None, after_help = FLAG_MODE_HELP)]
pub struct Cli {
    /// Log format (default: the config's `[log] format`, else text).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log level filter (also `RUST_LOG`), e.g. `info`, `debug`, `litefleet=debug`
    /// (default: the config's `[log] level`, else info).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// Shown at the end of `--help`.
const FLAG_MODE_HELP: &str = "Flag mode (the original request's flags, single or double dash):
  litefleet -watch-dir data/clients -bucket backups
  litefleet -watch-dir data/prod,data/staging -bucket backups
  litefleet -dsn /data/single.db -bucket backups [-db-name legacy-system]
Run `litefleet -h` for those flags.

Encryption: with [encryption] in the config, every replica file is encrypted before
upload; only litefleet with the keyring restores such replicas (`litestream restore`
cannot). See `litefleet keygen` and `litefleet reencrypt`.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the fleet daemon: replicate every tenant database in the configured watch
    /// directories until SIGINT/SIGTERM (SIGHUP reloads the config). With
    /// `[encryption]`, replica files are encrypted: `litestream restore` cannot restore
    /// them, only litefleet with the keyring.
    Daemon(DaemonArgs),
    /// List every tenant the storage holds (local file or not), with its latest TXID.
    Tenants(TenantsArgs),
    /// Replicate one database in the foreground until SIGINT/SIGTERM, then make a
    /// final sync and exit.
    Replicate(ReplicateArgs),
    /// Restore a database from a replica (latest, or a point in time); with -f, keep
    /// following it. Encrypted
    /// replicas need their keyring (`--keys-file`, or the config's `[encryption]`);
    /// `litestream restore` cannot restore them.
    Restore(RestoreArgs),
    /// Rewrite replica files with the current `[encryption]` key, file by file: after
    /// a key rotation (so the old key can leave the keyring), or to encrypt files
    /// written before encryption was turned on. Safe to run while the daemon runs, and
    /// to run again after an interruption.
    Reencrypt(ReencryptArgs),
    /// Print a new random 256-bit encryption key as a keyring line (`<id> <64 hex
    /// digits>`), for `[encryption] keys_file`.
    Keygen(KeygenArgs),
    /// Keep a current copy of every tenant under the config's storage (a warm standby),
    /// with its own page, API and metrics, until SIGINT/SIGTERM. See docs/operations.md.
    Standby(DaemonArgs),
}

/// `litefleet reencrypt`.
#[derive(clap::Args, Debug)]
pub struct ReencryptArgs {
    /// The daemon's config file: its storage, and its `[encryption]` keyring, whose
    /// `key_id` files are rewritten with (any key of the keyring opens the old ones).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Only the replicas below this prefix of the storage (e.g. `databases/<GUID>`);
    /// default: every replica. Key records are cleaned only by a whole run.
    #[arg(long)]
    pub prefix: Option<String>,
}

/// `litefleet keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The key's id, recorded in every file it encrypts (default: today's date,
    /// `YYYY-MM-DD`).
    #[arg(long)]
    pub id: Option<String>,
}

/// `litefleet replicate`.
#[derive(clap::Args, Debug)]
pub struct ReplicateArgs {
    /// The SQLite database to replicate.
    pub db: PathBuf,
    /// Where to: `file:///path`, `s3://bucket/path?endpoint=…&region=…`, `memory://x`.
    pub replica_url: String,
    /// Busy databases ship at most this often; the first change after idle ships at once
    /// [default: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub sync_interval: Option<Duration>,
    /// Time-based checkpoint trigger; 0s disables it [default: 1m].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Option<Duration>,
    /// WAL pages that trigger a PASSIVE checkpoint [default: 1000].
    #[arg(long)]
    pub min_checkpoint_pages: Option<u64>,
    /// WAL pages that trigger the emergency TRUNCATE checkpoint [default: 121359].
    #[arg(long)]
    pub truncate_pages: Option<u64>,
    /// Page compression inside LTX files: `block` (Litestream >= 0.5.16) or `frame`
    /// (every Litestream 0.5.x).
    #[arg(long, default_value = "block")]
    pub page_encoding: PageEncoding,
    /// Local position cache (never next to the database). Without it, a restart
    /// recovers the position from the replica and ships one snapshot.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Refuse databases in rollback-journal mode instead of switching them to WAL.
    #[arg(long)]
    pub no_wal_switch: bool,
    /// How long the final sync may take at shutdown [default: 30s].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,
}

/// `litefleet daemon`.
#[derive(clap::Args, Debug)]
pub struct DaemonArgs {
    /// The TOML configuration file (see config.example.toml).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Validate the configuration, print a summary and exit.
    #[arg(long)]
    pub check: bool,
}

/// `litefleet tenants`.
#[derive(clap::Args, Debug)]
pub struct TenantsArgs {
    /// The daemon's TOML configuration file (its storage and watch directories).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `litefleet restore`.
#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    /// The replica: `file:///path`, `s3://bucket/path?endpoint=…`,
    /// `gs://bucket/path[?endpoint=…]`, `abs://account@container/path[?endpoint=…]`,
    /// `sftp://user@host[:port]/path`, `memory://x`; or, with `--config`, a tenant id (its
    /// GUID). Not with `--all`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub replica_url: Option<String>,
    /// The daemon's config file: restore tenant REPLICA_URL (an id) through its storage
    /// and naming, or every tenant with `--all`.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Output database path (must not exist unless --force). Not with `--all`.
    #[arg(short = 'o', long = "output", required_unless_present = "all", conflicts_with = "all")]
    pub output: Option<PathBuf>,
    /// Restore up to this TXID (16 hex digits, as in file names).
    #[arg(long, value_parser = parse_txid, conflicts_with_all = ["timestamp", "all"])]
    pub txid: Option<TxId>,
    /// Restore the state as of this time (RFC 3339, e.g. 2026-01-02T15:04:05Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
    pub timestamp: Option<std::time::SystemTime>,
    /// Print the plan (which files, which levels; with --all, per tenant and the bytes to
    /// fetch) and exit without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Check the restored database with SQLite before it replaces the output
    /// [default: none; full with --all].
    #[arg(long, value_enum)]
    pub integrity_check: Option<IntegrityCheck>,
    /// Overwrite an existing output (and its -wal/-shm); with --all, write into an output
    /// directory that holds files but no restore journal.
    #[arg(long)]
    pub force: bool,
    /// Print the restored database's SHA-256.
    #[arg(long, conflicts_with = "all")]
    pub sha256: bool,
    /// Follow: after the restore, keep applying the replica's new files as they appear
    /// (checked every --interval) until SIGINT/SIGTERM. The output stays readable by
    /// SQLite (each step is one transaction); `<output>-follow` records where it is, so
    /// a rerun (even after kill -9) continues. Follows Litestream's replicas too.
    #[arg(short = 'f', long, conflicts_with_all = ["all", "txid", "timestamp", "dry_run", "sha256", "integrity_check"])]
    pub follow: bool,
    /// With -f: how often the replica is listed for new files.
    #[arg(long, requires = "follow", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// The keyring that opens an encrypted replica (one `<id> <key>` per line, as
    /// `litefleet keygen` prints them). With `--config`, its `[encryption]` keyring is
    /// used instead. `litestream restore` cannot restore encrypted replicas.
    #[arg(long, env = "LITEFLEET_KEYS_FILE", conflicts_with = "config")]
    pub keys_file: Option<PathBuf>,
    /// Restore every tenant the storage of --config holds (local file or not) into
    /// --output-dir, laid out like the watch directories.
    #[arg(long, requires_all = ["config", "output_dir"])]
    pub all: bool,
    /// With --all: where the restored databases go (`<dir prefix>/<id>.db`).
    #[arg(long, requires = "all")]
    pub output_dir: Option<PathBuf>,
    /// With --all: a TXID per tenant, lines of `<tenant id or prefix> <hex TXID>` (or the
    /// JSON lines of `litefleet tenants --json`); tenants not in it restore to latest.
    #[arg(long, requires = "all", conflicts_with = "timestamp")]
    pub txid_file: Option<PathBuf>,
    /// With --all: only tenants whose local database (in the config's watch
    /// directories) is absent.
    #[arg(long, requires = "all")]
    pub only_missing: bool,
    /// With --all: tenants restored at once.
    #[arg(long, requires = "all", default_value_t = crate::recovery::all::DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// With --all: the JSON report [default: <output-dir>/.litefleet-restore-report.json].
    #[arg(long, requires = "all")]
    pub report: Option<PathBuf>,
}

fn parse_txid(s: &str) -> Result<TxId, String> {
    TxId::from_str_radix(s.trim_start_matches("0x"), 16).map_err(|e| format!("{s:?} is not a hex TXID: {e}"))
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    quiet_library_backtraces();
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode) = flag_mode(&args[1..]) {
        return match mode {
            FlagMode::Help => {
                print!("{SEED_USAGE}");
                ExitCode::SUCCESS
            }
            FlagMode::Bad(message) => {
                eprint!("{message}\n{SEED_USAGE}");
                ExitCode::from(2)
            }
            FlagMode::Run(flags) => {
                let config = match flags.config() {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("error: {}", Chain(&e));
                        return ExitCode::from(2);
                    }
                };
                init_logging(flags.log_format.unwrap_or(config.log.format), &config.log.level);
                block_on(run_daemon(config, None))
            }
        };
    }
    let cli = Cli::parse();
    let (format, level) = (cli.log_format, cli.log_level);
    let log = |default: &config::LogConfig| {
        init_logging(format.unwrap_or(default.format), level.as_deref().unwrap_or(&default.level));
    };
    match cli.command {
        Command::Daemon(a) => {
            let config = match load_or_check(&a) {
                Ok(c) => c,
                Err(code) => return code,
            };
            log(&config.log);
            block_on(run_daemon(config, Some(a.config)))
        }
        Command::Tenants(a) => {
            log(&config::LogConfig::default());
            block_on(run_tenants(a))
        }
        Command::Replicate(a) => {
            log(&config::LogConfig::default());
            block_on(run_replicate(a))
        }
        Command::Restore(a) => {
            log(&config::LogConfig::default());
            block_on(run_restore(a))
        }
        Command::Standby(a) => {
            let config = match load_or_check(&a) {
                Ok(c) => c,
                Err(code) => return code,
            };
            log(&config.log);
            block_on(run_standby(config))
        }
        Command::Reencrypt(a) => {
            log(&config::LogConfig::default());
            block_on(run_reencrypt(a))
        }
        Command::Keygen(a) => {
            let id = a.id.unwrap_or_else(|| {
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()[..10].to_owned()
            });
            match storage::crypt::Key::generate(&id) {
                Ok(k) => {
                    println!("{}", k.keyring_line());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Loads `--config` for `daemon` and `standby`; with `--check`, also reads the keyring
/// (a missing file, a bad line or a key_id it lacks is found now, not at start-up),
/// prints the summary and ends: `Err` is the exit status to return.
fn load_or_check(a: &DaemonArgs) -> Result<Config, ExitCode> {
    let config = Config::load(&a.config).map_err(|e| {
        eprintln!("error: {}", Chain(&e));
        ExitCode::FAILURE
    })?;
    if !a.check {
        return Ok(config);
    }
    match crate::fleet::load_keyring(&config) {
        Err(e) => {
            eprintln!("error: {}", Chain(&e));
            return Err(ExitCode::FAILURE);
        }
        Ok(Some(k)) => {
            println!("encryption: keyring holds {}; new files use \"{}\"", k.list(), k.current_id().unwrap_or_default())
        }
        Ok(None) => {}
    }
    println!("{}: ok", a.config.display());
    println!("{}", config.redacted_summary());
    Err(ExitCode::SUCCESS)
}

/// Runs the standby until SIGINT/SIGTERM (caught before it starts).
async fn run_standby(config: Config) -> anyhow::Result<()> {
    let stop = ShutdownSignals::install()?.into_token(None);
    crate::standby::run(config, stop).await?;
    Ok(())
}

/// Storage errors (opendal's) capture a backtrace when `RUST_BACKTRACE` is set, and the
/// log line of every retried request then printed ~100 frames; symbolizing them loaded
/// the binary's debug info for good (a standby on an overloaded S3 server went from ~30
/// to ~290 MB resident). Unless `RUST_LIB_BACKTRACE` says otherwise, errors carry no
/// backtrace; a panic still prints one under `RUST_BACKTRACE`.
fn quiet_library_backtraces() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
}

fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sets up tracing on stderr, text or JSON.
///
/// Every line goes through [`redact::log_line`](crate::redact::log_line): registered
/// secrets are scrubbed and control characters escaped (no colours, so no escape
/// sequence of ours or of a file name reaches the terminal). The credential providers'
/// debug lines are never enabled, at any level.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let filter = ["reqsign_core=info", "reqsign_aws_v4=info", "reqsign_azure_storage=info", "reqsign_google=info"]
        .into_iter()
        .fold(filter, |f, d| f.add_directive(d.parse().unwrap_or_else(|e| unreachable!("{e}"))));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| SafeStderr(Vec::new()))
        .with_target(false)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// One log event, collected and written to stderr made safe when dropped (the
/// formatter writes an event, then drops its writer).
struct SafeStderr(Vec<u8>);

impl std::io::Write for SafeStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SafeStderr {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let line = crate::redact::log_line(&String::from_utf8_lossy(&self.0));
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        }
    }
}

/// Runs the daemon until SIGINT/SIGTERM; SIGHUP reloads `config_path`. A second
/// SIGINT/SIGTERM during the final syncs exits at once (status 130). The signals are
/// caught before the daemon starts: a SIGTERM that arrives while it is still starting
/// stops it cleanly instead of killing it by the default action.
async fn run_daemon(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut signals = ShutdownSignals::install()?;
    let mut hup = signal(SignalKind::hangup())?;
    let daemon = crate::daemon::Daemon::start(config, config_path).await?;
    let (reload, reloads) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let _ = reload.try_send(());
        }
    });
    let stop = async move {
        signals.recv().await;
        tokio::spawn(async move {
            signals.recv().await;
            eprintln!("second signal: exiting without waiting for the final syncs");
            std::process::exit(130);
        });
    };
    daemon.run(stop, reloads).await?;
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment this is made (tokio replaces the default
/// action, which would kill the process, as soon as a handler is registered; one made
/// lazily leaves a window in which a SIGTERM kills a process that has already written).
pub struct ShutdownSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self { term: signal(SignalKind::terminate())?, int: signal(SignalKind::interrupt())? })
    }

    /// Resolves on the next SIGINT or SIGTERM (one that arrived since `install` counts).
    pub async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }

    /// A token cancelled by the next SIGINT or SIGTERM (after printing `note`, if any).
    pub fn into_token(mut self, note: Option<&'static str>) -> tokio_util::sync::CancellationToken {
        let stop = tokio_util::sync::CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            self.recv().await;
            if let Some(n) = note {
                eprintln!("{n}");
            }
            on_signal.cancel();
        });
        stop
    }
}

async fn run_tenants(a: TenantsArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let tenants = crate::inventory::inventory(&config).await?;
    let hosts = crate::inventory::hosts(&config).await?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if a.json {
        for t in &tenants {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        }
        for h in &hosts {
            writeln!(out, "{}", serde_json::to_string(&serde_json::json!({ "hostHeartbeat": h }))?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:>16} {:<20} {:<20} {:>6} {:>10}  {:<16} LOCAL",
        "TENANT", "TXID", "RESTORABLE FROM", "LATEST", "FILES", "BYTES", "OWNER"
    )?;
    let time = |t: Option<std::time::SystemTime>| {
        t.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_else(|| "-".into())
    };
    for t in &tenants {
        let local = t.local.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(file gone)".into());
        writeln!(
            out,
            "{:<40} {:016x} {:<20} {:<20} {:>6} {:>10}  {:<16} {local}",
            t.prefix,
            t.latest_txid,
            time(t.earliest_at),
            time(t.latest_at),
            t.files,
            t.bytes,
            t.owner.as_deref().unwrap_or("-"),
        )?;
    }
    writeln!(out, "{} tenant(s) in {}", tenants.len(), crate::fleet::open_storage(&config)?.location())?;
    if !hosts.is_empty() {
        writeln!(out, "\n{:<24} {:<20} {:<8} {:>8}  VERSION", "HOST", "LAST HEARTBEAT", "STATE", "PID")?;
        for h in &hosts {
            let state = if h.stopped { "stopped" } else { "running" };
            writeln!(out, "{:<24} {:<20} {:<8} {:>8}  {}", h.host, time(h.heartbeat_at), state, h.pid, h.version)?;
        }
    }
    Ok(())
}

/// `litefleet replicate DB URL`: a fleet of one, whose replica is the URL itself, with
/// no dashboard and no compaction (as before: the files stay as L0).
async fn run_replicate(a: ReplicateArgs) -> anyhow::Result<()> {
    let mut config = Config::default();
    config.storage = config::StorageConfig::from_url(&a.replica_url).map_err(anyhow::Error::msg)?;
    config.storage.root = Prefix::none();
    config.single = Some(SingleDb { path: a.db, name: Prefix::none() });
    let r = &mut config.replication;
    r.sync_interval = a.sync_interval.unwrap_or(r.sync_interval);
    r.checkpoint_interval = a.checkpoint_interval.unwrap_or(r.checkpoint_interval);
    r.min_checkpoint_pages = a.min_checkpoint_pages.unwrap_or(r.min_checkpoint_pages);
    r.truncate_pages = a.truncate_pages.unwrap_or(r.truncate_pages);
    r.page_encoding = a.page_encoding;
    r.state_dir = a.state_dir;
    r.refuse_rollback_journal = a.no_wal_switch;
    config.lifecycle.levels.clear();
    config.lifecycle.snapshot_interval = Duration::ZERO;
    let shutdown_timeout = a.shutdown_timeout.unwrap_or(config.fleet.shutdown_timeout);
    config.fleet.shutdown_timeout = shutdown_timeout;
    config.validate()?;
    let mut signals = ShutdownSignals::install()?;
    let fleet = crate::fleet::Fleet::start(config).await?;
    signals.recv().await;
    let report = fleet.shutdown().await;
    if let Some((id, e)) = report.failed.first() {
        anyhow::bail!("final sync of {id} failed: {e}");
    }
    if !report.timed_out.is_empty() {
        anyhow::bail!("the final sync did not finish within {shutdown_timeout:?}");
    }
    Ok(())
}

async fn run_restore(a: RestoreArgs) -> anyhow::Result<()> {
    if a.all {
        return run_restore_all(a).await;
    }
    let (Some(source), Some(output)) = (a.replica_url.as_deref(), a.output.as_deref()) else {
        anyhow::bail!("give a replica URL (or, with --config, a tenant id) and -o <output>, or --all");
    };
    let replica = match &a.config {
        Some(path) => {
            let config = Config::load(path)?;
            let prefix = crate::inventory::find_tenant(&config, source).await?;
            let replica = crate::fleet::open_storage(&config)?.replica(&prefix);
            eprintln!("restoring tenant {source} from {}", replica.url());
            replica
        }
        None => {
            let storage = Storage::from_url(source, &storage::Options::default())?;
            let storage = match &a.keys_file {
                Some(path) => {
                    let ring = storage::Keyring::read(path)
                        .map_err(|e| anyhow::anyhow!("--keys-file {}: {e}", path.display()))?;
                    storage.with_keyring(std::sync::Arc::new(ring))
                }
                None => storage,
            };
            storage.replica("")
        }
    };
    if a.follow {
        return run_follow(replica, output, a.force, a.interval).await;
    }
    let target = Target { txid: a.txid, timestamp: a.timestamp };
    if a.dry_run {
        let steps = restore::plan(&replica, &target).await?;
        for line in restore::describe_plan(&replica, &steps) {
            println!("{line}");
        }
        return Ok(());
    }
    let opts = restore::Options {
        target,
        integrity: a.integrity_check.unwrap_or_default(),
        force: a.force,
        progress: true,
        sha256: a.sha256,
    };
    let summary = restore::restore(&replica, output, &opts).await?;
    restore::print_summary(output, &summary, std::io::stdout())?;
    Ok(())
}

/// `litefleet restore -f`: restore (or resume) a follow copy, then apply new files every
/// `interval` until SIGINT/SIGTERM (the batch being applied finishes first).
async fn run_follow(replica: storage::Replica, out: &Path, force: bool, interval: Duration) -> anyhow::Result<()> {
    use crate::restore::follow::{Error as FollowError, Follower};
    let stop = ShutdownSignals::install()?.into_token(None);
    let mut lock_path = out.as_os_str().to_owned();
    lock_path.push("-follow.lock");
    let _lock = crate::restore::follow::lock(Path::new(&lock_path))?;
    let mut f = match Follower::start(replica, out, None, force, &stop).await {
        Err(FollowError::Cancelled) => return Ok(()),
        r => r?,
    };
    eprintln!("following {} into {} (at TXID {:016x})", f.replica().url(), out.display(), f.txid());
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(interval) => {}
        }
        match f.poll(&stop).await {
            Ok(a) => {
                if failing {
                    eprintln!("following again");
                    failing = false;
                }
                if a.files > 0 {
                    tracing::info!(
                        files = a.files,
                        pages = a.pages,
                        txid = format_args!("{:016x}", f.txid()),
                        "applied"
                    );
                }
            }
            Err(FollowError::Cancelled) => break,
            Err(e) if e.needs_restore() => {
                eprintln!("{}; restoring again", Chain(&e));
                f.restore(None, &stop).await?;
            }
            // Storage unreachable, a file that failed its checks: the copy stays as it
            // was; try again next interval.
            Err(e) => {
                if !failing {
                    eprintln!("error (retrying every {}): {}", humantime::format_duration(interval), Chain(&e));
                }
                failing = true;
            }
        }
    }
    println!("stopped following {} at TXID {:016x}", out.display(), f.txid());
    Ok(())
}

/// `litefleet restore --config FILE --all --output-dir DIR`: fleet-wide disaster
/// recovery (`recovery::all`). SIGINT/SIGTERM stops the tenants still running (their
/// partial files are removed); a rerun resumes.
async fn run_restore_all(a: RestoreArgs) -> anyhow::Result<()> {
    use crate::recovery::all::{self, Points, TxidFile};
    let (Some(config), Some(output_dir)) = (&a.config, a.output_dir) else {
        anyhow::bail!("--all needs --config and --output-dir");
    };
    let config = Config::load(config)?;
    let points = match (a.timestamp, &a.txid_file) {
        (Some(t), _) => Points::Time(t),
        (None, Some(f)) => Points::Txids(TxidFile::load(f)?),
        (None, None) => Points::Latest,
    };
    let opts = all::Options {
        output_dir,
        points,
        only_missing: a.only_missing,
        dry_run: a.dry_run,
        concurrency: a.concurrency.max(1),
        integrity: a.integrity_check.unwrap_or(IntegrityCheck::Full),
        report: a.report,
        force: a.force,
    };
    let stop = ShutdownSignals::install()?.into_token(Some(
        "\nstopping: tenants still restoring are abandoned (their partial files removed); rerun to resume",
    ));
    let report = all::restore_all(&config, &opts, &stop, std::io::stdout()).await?;
    if stop.is_cancelled() {
        anyhow::bail!(
            "interrupted: {} of {} tenant(s) restored; rerun the same command to resume",
            report.restored + report.skipped,
            report.tenants
        );
    }
    if report.failed > 0 {
        anyhow::bail!("{} of {} tenant(s) failed (listed above and in the report)", report.failed, report.tenants);
    }
    Ok(())
}

async fn run_reencrypt(a: ReencryptArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let storage = crate::fleet::open_storage(&config)?;
    let report =
        crate::reencrypt::reencrypt(&storage, a.prefix.as_deref(), |name| eprintln!("re-encrypted {name}")).await?;
    for d in &report.damaged {
        eprintln!("left as it is (damaged): {d}");
    }
    println!(
        "{} replica(s): {} file(s) re-encrypted with key \"{}\", {} already were, {} deleted meanwhile, {} damaged",
        report.replicas,
        report.rewritten,
        storage.sealing_key().unwrap_or_default(),
        report.current,
        report.vanished,
        report.damaged.len()
    );
    if !report.retired.is_empty() {
        println!("no file uses key(s) {} any more: they may leave the keyring", report.retired.join(", "));
    }
    Ok(())
}
