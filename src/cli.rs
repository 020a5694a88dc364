//! Command-line interface: subcommands, the seed's flag mode, logging set-up, signal
//! handling, dispatch.
//!
//! Errors reach the user once, at the edge, as one line with their whole chain
//! (`error: <what failed>: <why>`), and the exit code is 1 (2 for a flag the seed's
//! flag mode does not know, as Go's `flag` package does).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::fleet::Fleet;
use crate::ltx::{PageEncoding, TxId};
use crate::replicate::{self, Settings};
use crate::restore::{self, IntegrityCheck, Target};
use crate::storage::{self, Storage};

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

/// Shown at the end of `--help`.
const FLAG_MODE_HELP: &str = "Flag mode (the original request's flags, single or double dash):
  litefleet -watch-dir data/clients -bucket backups
  litefleet -watch-dir data/prod,data/staging -bucket backups
  litefleet -dsn /data/single.db -bucket backups [-db-name legacy-system]
Run `litefleet -h` for those flags.";

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the fleet daemon: replicate every tenant database in the configured watch
    /// directories until SIGINT/SIGTERM (SIGHUP reloads the config).
    Daemon(DaemonArgs),
    /// List every tenant the storage holds (local file or not), with its latest TXID.
    Tenants(TenantsArgs),
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
    /// The replica: `file:///path`, `s3://bucket/path?endpoint=…`, `memory://x`; or,
    /// with `--config`, a tenant id (its GUID).
    pub replica_url: String,
    /// The daemon's config file: restore tenant REPLICA_URL (an id) through its storage
    /// and naming.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
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
                        eprintln!("error: {e}");
                        return ExitCode::from(2);
                    }
                };
                init_logging(flags.log_format.unwrap_or(config.log.format.into()), &config.log.level);
                block_on(run_daemon(config, None))
            }
        };
    }
    let cli = Cli::parse();
    let (format, level) = (cli.log_format, cli.log_level);
    let log = |default: &config::LogConfig| {
        init_logging(format.unwrap_or(default.format.into()), level.as_deref().unwrap_or(&default.level));
    };
    match cli.command {
        Command::Daemon(a) => {
            let config = match Config::load(&a.config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if a.check {
                println!("{}: ok", a.config.display());
                println!("{}", config.redacted_summary());
                return ExitCode::SUCCESS;
            }
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

impl From<config::LogFormat> for LogFormat {
    fn from(f: config::LogFormat) -> Self {
        match f {
            config::LogFormat::Text => LogFormat::Text,
            config::LogFormat::Json => LogFormat::Json,
        }
    }
}

/// Sets up tracing on stderr, text or JSON.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Text => b.try_init(),
        LogFormat::Json => b.json().try_init(),
    };
}

/// The seed's usage text for its flags (`-h`), then litefleet's additions.
pub const SEED_USAGE: &str = "Usage:
  -watch-dir string
        directory to watch for GUID.db files (comma-separated for multiple)
  -bucket string
        s3 replica bucket
  -dsn string
        datasource name (legacy mode)
  -db-name string
        database name for organizing in S3 (optional)

litefleet additions:
  -listen string
        dashboard and API address (default \"127.0.0.1:8080\")
  -state-dir string
        local working state (default \".litefleet\")
  -log-format string
        text or json (default \"text\")
  -log-level string
        log filter, e.g. info or debug (default \"info\")

-bucket NAME is an S3 bucket (endpoint and region from AWS_ENDPOINT_URL and
AWS_REGION, credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); a URL
(file://./replicas, s3://bucket/path) is accepted too. Without -bucket, replicas go
to ./replicas. For everything else use a config file: litefleet daemon --config FILE
(litefleet --help lists every command).
";

/// The seed's flags, as given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedFlags {
    /// Each `-watch-dir` value (comma separated directories).
    pub watch_dirs: Vec<String>,
    /// `-bucket`.
    pub bucket: Option<String>,
    /// `-dsn`.
    pub dsn: Option<String>,
    /// `-db-name`.
    pub db_name: Option<String>,
    /// `-listen`.
    pub listen: Option<String>,
    /// `-state-dir`.
    pub state_dir: Option<String>,
    /// `-log-format`.
    pub log_format: Option<LogFormat>,
    /// `-log-level`.
    pub log_level: Option<String>,
}

impl SeedFlags {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<Config, config::ConfigError> {
        let mut c = Config::from_legacy(
            &self.watch_dirs,
            self.bucket.as_deref(),
            self.dsn.as_deref(),
            self.db_name.as_deref(),
        )?;
        let flag = |flag: &'static str, message: String| config::ConfigError::Flag { flag, message };
        if let Some(l) = &self.listen {
            c.http.listen = l.parse().map_err(|e| flag("-listen", format!("{l:?} is not an address: {e}")))?;
        }
        if let Some(d) = &self.state_dir {
            c.replication.state_dir = PathBuf::from(d);
        }
        if let Some(l) = &self.log_level {
            c.log.level = l.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// What the command line asks for when it uses the seed's flags.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagMode {
    /// `-h` / `-help`: print the seed's usage.
    Help,
    /// Run the daemon with these flags.
    Run(SeedFlags),
    /// A mistake, with Go's `flag` wording.
    Bad(String),
}

/// Recognizes the seed's flag mode: any of its flags (one or two dashes, `-f v` or
/// `-f=v`) anywhere, or a lone `-h`/`-help`. `None`: use the subcommands.
pub fn flag_mode(args: &[String]) -> Option<FlagMode> {
    const SEED: [&str; 4] = ["watch-dir", "bucket", "dsn", "db-name"];
    let name = |a: &str| -> Option<String> {
        let bare = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
        Some(bare.split('=').next().unwrap_or(bare).to_owned())
    };
    if let [one] = args
        && matches!(one.as_str(), "-h" | "-help")
    {
        return Some(FlagMode::Help);
    }
    if !args.iter().any(|a| name(a).is_some_and(|n| SEED.contains(&n.as_str()))) {
        return None;
    }
    let mut flags = SeedFlags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(n) = name(arg) else {
            return Some(FlagMode::Bad(format!("unexpected argument {arg:?} (flags only)")));
        };
        if n == "h" || n == "help" {
            return Some(FlagMode::Help);
        }
        let value = match arg.split_once('=') {
            Some((_, v)) => v.to_owned(),
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => v.clone(),
                    None => return Some(FlagMode::Bad(format!("flag needs an argument: -{n}"))),
                }
            }
        };
        match n.as_str() {
            "watch-dir" => flags.watch_dirs.push(value),
            "bucket" => flags.bucket = Some(value),
            "dsn" => flags.dsn = Some(value),
            "db-name" => flags.db_name = Some(value),
            "listen" => flags.listen = Some(value),
            "state-dir" => flags.state_dir = Some(value),
            "log-level" => flags.log_level = Some(value),
            "log-format" => {
                flags.log_format = Some(match value.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => {
                        return Some(FlagMode::Bad(format!(
                            "invalid value {value:?} for flag -log-format: text or json"
                        )));
                    }
                })
            }
            _ => return Some(FlagMode::Bad(format!("flag provided but not defined: -{n}"))),
        }
        i += 1;
    }
    Some(FlagMode::Run(flags))
}

/// Runs the fleet until SIGINT/SIGTERM; SIGHUP reloads `config_path`. A second
/// SIGINT/SIGTERM during the final syncs exits at once (status 130).
async fn run_daemon(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let http_config = config.http.clone();
    let fleet = Fleet::start(config).await?;
    let metrics = crate::metrics::install();
    crate::metrics::set_per_tenant(http_config.per_tenant_metrics);
    let http_stop = tokio_util::sync::CancellationToken::new();
    let (_server, http_task) = match crate::http::serve(
        &http_config,
        fleet.board(),
        fleet.storage().clone(),
        Some(metrics),
        http_stop.clone(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            // Nothing has been replicated yet worth a final sync; stop cleanly.
            fleet.shutdown().await;
            return Err(e.into());
        }
    };
    let mut hup = signal(SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = hup.recv() => {
                let Some(path) = &config_path else {
                    tracing::warn!("SIGHUP: flag mode has no config file to reload");
                    continue;
                };
                tracing::info!("SIGHUP: reloading {}", path.display());
                match Config::load(path) {
                    Err(e) => tracing::error!("config reload refused, keeping the running configuration: {e}"),
                    Ok(c) => match fleet.reload(c).await {
                        Ok(restart) if restart.is_empty() => tracing::info!("configuration reloaded"),
                        Ok(restart) => tracing::warn!(
                            "configuration reloaded; changes to [{}] take effect after a restart",
                            restart.join("], [")
                        ),
                        Err(e) => tracing::error!("config reload failed, keeping the running configuration: {e}"),
                    },
                }
            }
        }
    }
    tokio::spawn(async {
        shutdown_signal().await;
        eprintln!("second signal: exiting without waiting for the final syncs");
        std::process::exit(130);
    });
    // The dashboard's live streams end now; the final syncs need no dashboard.
    http_stop.cancel();
    let report = fleet.shutdown().await;
    let _ = http_task.await;
    tracing::info!(
        stopped = report.stopped,
        final_syncs = report.final_syncs,
        failed = report.failed.len(),
        "👋 stopped"
    );
    if !report.timed_out.is_empty() {
        anyhow::bail!(
            "{} tenant(s) did not finish their final sync within the shutdown timeout (their unshipped commits are still in their WAL and ship at the next start): {}",
            report.timed_out.len(),
            report.timed_out.join(", ")
        );
    }
    Ok(())
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

async fn run_tenants(a: TenantsArgs) -> anyhow::Result<()> {
    let config = Config::load(&a.config)?;
    let tenants = crate::fleet::inventory(&config).await?;
    let mut out = std::io::stdout().lock();
    use std::io::Write;
    if a.json {
        for t in &tenants {
            writeln!(out, "{}", serde_json::to_string(t)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<40} {:>16} {:<20} {:<20} {:>6} {:>10}  LOCAL",
        "TENANT", "TXID", "RESTORABLE FROM", "LATEST", "FILES", "BYTES"
    )?;
    let time = |t: Option<std::time::SystemTime>| {
        t.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_else(|| "-".into())
    };
    for t in &tenants {
        let local = t.local.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(file gone)".into());
        writeln!(
            out,
            "{:<40} {:016x} {:<20} {:<20} {:>6} {:>10}  {local}",
            t.prefix,
            t.latest_txid,
            time(t.earliest_at),
            time(t.latest_at),
            t.files,
            t.bytes
        )?;
    }
    writeln!(
        out,
        "{} tenant(s) in {}",
        tenants.len(),
        crate::fleet::open_storage(&config)?.url().split('?').next().unwrap_or_default()
    )?;
    Ok(())
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
    let replica = match &a.config {
        Some(path) => {
            let config = Config::load(path)?;
            let prefix = crate::fleet::find_tenant(&config, &a.replica_url).await?;
            let replica = crate::fleet::open_storage(&config)?.replica(&prefix);
            eprintln!("restoring tenant {} from {}", a.replica_url, replica.url());
            replica
        }
        None => Storage::from_url(&a.replica_url, &storage::Options::default())?.replica(""),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn seed_flags_are_recognized_in_every_spelling() {
        let Some(FlagMode::Run(f)) =
            flag_mode(&args(&["-watch-dir", "data/prod,data/staging", "--bucket=backups", "-log-format", "json"]))
        else {
            panic!("not flag mode")
        };
        assert_eq!(f.watch_dirs, ["data/prod,data/staging"]);
        assert_eq!(f.bucket.as_deref(), Some("backups"));
        assert_eq!(f.log_format, Some(LogFormat::Json));
        let c = f.config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.watch.len(), 2);
        assert_eq!(c.storage.url.to_string(), "s3://backups");

        let Some(FlagMode::Run(f)) = flag_mode(&args(&["-dsn", "/data/legacy.db", "-db-name", "legacy-system"])) else {
            panic!("not flag mode")
        };
        let c = f.config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.single.map(|s| s.prefix("databases")).as_deref(), Some("databases/legacy-system"));
    }

    #[test]
    fn subcommands_are_not_flag_mode_and_mistakes_are_named() {
        assert_eq!(flag_mode(&args(&["daemon", "--config", "x.toml"])), None);
        assert_eq!(flag_mode(&args(&["--help"])), None);
        assert_eq!(flag_mode(&args(&["-h"])), Some(FlagMode::Help));
        assert_eq!(flag_mode(&args(&["-watch-dir", "a", "-help"])), Some(FlagMode::Help));
        assert_eq!(
            flag_mode(&args(&["-watch-dir", "a", "-nope", "1"])),
            Some(FlagMode::Bad("flag provided but not defined: -nope".into()))
        );
        assert_eq!(
            flag_mode(&args(&["-bucket", "b", "-watch-dir"])),
            Some(FlagMode::Bad("flag needs an argument: -watch-dir".into()))
        );
        let Some(FlagMode::Run(f)) = flag_mode(&args(&["-watch-dir", "a", "-listen", "nowhere"])) else { panic!() };
        assert!(f.config().unwrap_err().to_string().contains("-listen"));
    }
}
