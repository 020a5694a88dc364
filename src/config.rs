//! Configuration: the TOML model of `litefleet daemon --config <file>`, its defaults,
//! its validation, and the seed's flag mode (`-watch-dir`, `-bucket`, `-dsn`,
//! `-db-name`) mapped onto the same model.
//!
//! This module owns turning text (a file or flags) into a [`Config`] that is known to be
//! valid, and saying exactly where a mistake is: every error names the file, the
//! 1-based line and the key (`prod.toml:14: replication.sync_interval: "1 sek" is not a
//! duration (try "1s")`), or the flag. Every table and key is optional except at least
//! one `[[watch]]` directory; unknown keys are errors, so a typo never passes silently.
//!
//! It must never do I/O beyond reading the config file (directories need not exist
//! yet; relative paths stay relative to the current directory and are resolved by
//! whoever opens them), never read the environment (storage reads `AWS_*` itself), and
//! never let a credential reach `Debug`, `Display` or a log line: those are [`Secret`]s.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::hooks::HooksConfig;
use crate::tenant::{self, NonGuidPolicy};

/// Replica location when the config names none: a `replicas` folder in the current
/// directory, so a minimal config (and `config.example.toml`) runs with no cloud at all.
pub const DEFAULT_STORAGE_URL: &str = "file://./replicas";
/// Busy tenants ship at most this often (Litestream's default sync interval); the first
/// change after idle ships at once.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Time-based passive checkpoint of a busy tenant (Litestream's `checkpoint-interval`).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// WAL size in pages that triggers a passive checkpoint (Litestream's `min-checkpoint-page-n`).
pub const DEFAULT_MIN_CHECKPOINT_PAGES: u32 = 1000;
/// WAL size in pages that forces a TRUNCATE checkpoint (~500 MB at 4 KiB pages;
/// Litestream's `truncate-page-n`). 0 disables it.
pub const DEFAULT_TRUNCATE_PAGES: u32 = 121_359;
/// How long our SQLite connection waits for a lock (Litestream's `busy-timeout`).
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// Tenants that may hold an open SQLite connection at once ("hot" tenants); the seed
/// recommends ~1000 clients per instance, we keep that many hot, not that many total.
pub const DEFAULT_MAX_OPEN_TENANTS: usize = 1000;
/// A tenant with no writes for this long is checkpointed and releases its connection.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(30);
/// Local working state (positions, temp files), relative to the current directory.
pub const DEFAULT_STATE_DIR: &str = ".litefleet";
/// Safety sweep that reconciles the registry with `read_dir`, jittered ±10%: notify is
/// a latency optimisation, not the source of truth.
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Tenants opened in parallel at start-up, so 10,000 existing files don't stampede.
pub const DEFAULT_STARTUP_CONCURRENCY: usize = 32;
/// Time allowed for the final sync of every tenant after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the polling watcher (`fleet.poll = true`, for NFS/CIFS) walks the folders.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Dashboard and API address: loopback only unless the operator says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// Log filter (tracing `EnvFilter` syntax).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Shortest allowed rescan interval: a sweep of 10,000 files every second would be the
/// polling this design exists to avoid.
pub const MIN_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest accepted file extension (without the dot).
const MAX_EXTENSION_LEN: usize = 16;

/// The whole configuration of a `litefleet daemon`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directories of tenant databases, one `[[watch]]` table each (the seed's
    /// `-watch-dir a,b` is two of them). At least one is required unless `single` is set.
    pub watch: Vec<WatchConfig>,
    /// Where replicas go.
    pub storage: StorageConfig,
    /// How each tenant is replicated.
    pub replication: ReplicationConfig,
    /// How the fleet of tenants is discovered and managed.
    pub fleet: FleetConfig,
    /// Dashboard and JSON API.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// Compaction, snapshots and retention of every replica.
    pub lifecycle: LifecycleConfig,
    /// Periodic restore validation (`[validation]`), off by default.
    pub validation: ValidationConfig,
    /// A sandboxed WebAssembly hook called when tenants appear and go (`[hooks]`);
    /// unset means no hook. See `crate::hooks` and docs/hooks.md.
    pub hooks: Option<HooksConfig>,
    /// The seed's legacy single-database mode (`-dsn PATH [-db-name NAME]`); only the
    /// flag mode sets it, never the file.
    #[serde(skip)]
    pub single: Option<SingleDb>,
}

/// One watched directory (`[[watch]]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// The directory, relative to the current directory unless absolute (like the seed's
    /// `-watch-dir "data/clients"`). It must exist when the daemon starts.
    pub dir: PathBuf,
    /// Also watch subdirectories (hidden ones, starting with `.`, are skipped).
    #[serde(default)]
    pub recursive: bool,
    /// Replicas of this directory's tenants go under `<root>/<prefix>/<id>/` instead of
    /// `<root>/<id>/` — how two directories holding the same GUID (prod and staging in
    /// the seed) can both replicate. Validated like any storage prefix.
    #[serde(default, deserialize_with = "de_opt_prefix")]
    pub prefix: Option<String>,
    /// File extensions (without the dot) that mark a database; compared
    /// case-insensitively.
    #[serde(default = "default_extensions", deserialize_with = "de_extensions")]
    pub extensions: Vec<String>,
}

impl WatchConfig {
    /// A watch entry for `dir` with every other field at its default.
    pub fn new(dir: impl Into<PathBuf>) -> WatchConfig {
        WatchConfig { dir: dir.into(), recursive: false, prefix: None, extensions: default_extensions() }
    }
}

/// Where replicas go (`[storage]`). Credentials left out here come from the standard
/// `AWS_*` environment variables, read by the storage module at run time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file://<path>`, `s3://<bucket>[/<path>]` or `memory://` (tests).
    pub url: StorageUrl,
    /// S3 endpoint for S3-compatible servers (MinIO, Garage, R2…); unset means AWS, or
    /// `AWS_ENDPOINT_URL`. S3 only.
    #[serde(deserialize_with = "de_opt_endpoint")]
    pub endpoint: Option<String>,
    /// S3 region; unset means `AWS_REGION`. S3 only.
    #[serde(deserialize_with = "de_opt_word")]
    pub region: Option<String>,
    /// Address buckets as `<endpoint>/<bucket>` rather than `<bucket>.<endpoint>` (most
    /// self-hosted S3 servers need it); unset leaves the storage layer's default. S3 only.
    pub force_path_style: Option<bool>,
    /// S3 access key id; unset means `AWS_ACCESS_KEY_ID`. Never printed.
    pub access_key_id: Option<Secret>,
    /// S3 secret access key; unset means `AWS_SECRET_ACCESS_KEY`. Never printed.
    pub secret_access_key: Option<Secret>,
    /// Prefix under the bucket or folder for every replica (the seed's `databases/`).
    /// `""` puts tenants at the top.
    #[serde(deserialize_with = "de_root")]
    pub root: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            url: StorageUrl::File { path: PathBuf::from("./replicas") },
            endpoint: None,
            region: None,
            force_path_style: None,
            access_key_id: None,
            secret_access_key: None,
            root: tenant::DEFAULT_ROOT.to_owned(),
        }
    }
}

/// A parsed replica URL.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum StorageUrl {
    /// `file://<path>`: a local folder; everything after `file://` is the path, relative
    /// to the current directory unless it starts with `/` (`file://./replicas`,
    /// `file:///var/backups`).
    File {
        /// The folder.
        path: PathBuf,
    },
    /// `s3://<bucket>[/<path>]`.
    S3 {
        /// The bucket name.
        bucket: String,
        /// A validated prefix inside the bucket, `""` for none; the root and tenant
        /// prefixes go below it.
        path: String,
    },
    /// `memory://`: an in-process store for tests; lost at exit.
    Memory,
}

impl StorageUrl {
    /// Parses `file://…`, `s3://…` or `memory://`, with a message that says what to write
    /// instead when it is wrong.
    pub fn parse(s: &str) -> Result<StorageUrl, String> {
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(format!(
                "{s:?} is not a URL (try \"file://{s}\" for a local folder or \"s3://{s}\" for a bucket)"
            ));
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(format!("{s:?} names no folder (try \"file://./replicas\")"));
                }
                Ok(StorageUrl::File { path: PathBuf::from(rest) })
            }
            "s3" => {
                let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
                validate_bucket(bucket)?;
                let path = if path.is_empty() {
                    String::new()
                } else {
                    tenant::validate_prefix(path).map_err(|e| format!("in {s:?}: {e}"))?
                };
                Ok(StorageUrl::S3 { bucket: bucket.to_owned(), path })
            }
            "memory" if rest.is_empty() => Ok(StorageUrl::Memory),
            "memory" => Err(format!("{s:?}: write just \"memory://\"")),
            other => Err(format!("unknown scheme \"{other}\" in {s:?} (expected file://, s3:// or memory://)")),
        }
    }

    /// True for `s3://` URLs, the only ones the S3 keys of `[storage]` apply to.
    pub fn is_s3(&self) -> bool {
        matches!(self, StorageUrl::S3 { .. })
    }
}

impl TryFrom<String> for StorageUrl {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StorageUrl::parse(&s)
    }
}

impl fmt::Display for StorageUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageUrl::File { path } => write!(f, "file://{}", path.display()),
            StorageUrl::S3 { bucket, path } if path.is_empty() => write!(f, "s3://{bucket}"),
            StorageUrl::S3 { bucket, path } => write!(f, "s3://{bucket}/{path}"),
            StorageUrl::Memory => f.write_str("memory://"),
        }
    }
}

/// Checks an S3 bucket name by AWS's rules: 3 to 63 characters of `a-z 0-9 . -`,
/// starting and ending with a letter or digit.
pub fn validate_bucket(name: &str) -> Result<(), String> {
    let ok_len = (3..=63).contains(&name.len());
    let ok_chars = name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ok_ends =
        name.starts_with(|c: char| c.is_ascii_alphanumeric()) && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)"
        ))
    }
}

/// How each tenant is replicated (`[replication]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Busy tenants ship at most this often (bounded PUT cost); the first change after
    /// idle ships at once (low lag).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// A busy tenant gets a passive checkpoint at least this often.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// WAL pages that trigger a passive checkpoint.
    pub min_checkpoint_pages: u32,
    /// WAL pages that force a TRUNCATE checkpoint, so a WAL never grows without bound;
    /// 0 disables it.
    pub truncate_pages: u32,
    /// How long our connection waits on a locked database.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// How LTX page frames are compressed.
    pub page_encoding: PageEncoding,
    /// At most this many tenants hold an open SQLite connection ("hot"); the others are
    /// cold and cost no file descriptor.
    pub max_open_tenants: usize,
    /// A tenant with no writes for this long is checkpointed and released (goes cold).
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Local working state, relative to the current directory unless absolute; never
    /// inside a watch directory.
    pub state_dir: PathBuf,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            sync_interval: DEFAULT_SYNC_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            min_checkpoint_pages: DEFAULT_MIN_CHECKPOINT_PAGES,
            truncate_pages: DEFAULT_TRUNCATE_PAGES,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            page_encoding: PageEncoding::default(),
            max_open_tenants: DEFAULT_MAX_OPEN_TENANTS,
            idle_after: DEFAULT_IDLE_AFTER,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// Compression of LTX page frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PageEncoding {
    /// LZ4 block per page: smaller, needs Litestream ≥ 0.5.16 to restore.
    #[default]
    Block,
    /// LZ4 frame per page: readable by every Litestream 0.5.x.
    Frame,
}

/// How the fleet of tenants is discovered and managed (`[fleet]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// What to do with database files whose name is not a GUID.
    pub non_guid: NonGuidPolicy,
    /// Period of the jittered (±10%) safety rescan that catches anything the kernel
    /// dropped.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Tenants opened in parallel at start-up.
    pub startup_concurrency: usize,
    /// Time allowed for the final sync of every tenant on shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Watch by polling instead of inotify (for NFS, CIFS and FUSE mounts, where inotify
    /// sees nothing).
    pub poll: bool,
    /// How often the polling watcher walks the directories (only with `poll = true`).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            non_guid: NonGuidPolicy::default(),
            rescan_interval: DEFAULT_RESCAN_INTERVAL,
            startup_concurrency: DEFAULT_STARTUP_CONCURRENCY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            poll: false,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// Dashboard and JSON API (`[http]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer token required by the API and dashboard; `""` or unset means none.
    /// Never printed.
    #[serde(deserialize_with = "de_opt_token")]
    pub token: Option<Secret>,
    /// Label Prometheus series with the tenant id (one series per tenant per metric).
    /// Off by default: with thousands of tenants that is a lot of series for a scraper.
    pub per_tenant_metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { listen: DEFAULT_LISTEN, token: None, per_tenant_metrics: false }
    }
}

/// Compaction, snapshots and retention (`[lifecycle]`), Litestream v0.5's defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Compaction interval of level 1, 2, … (at most 8 levels); `[]` disables compaction.
    #[serde(with = "humantime_serde_vec")]
    pub levels: Vec<Duration>,
    /// How often a full snapshot (level 9) is written; `"0s"` disables snapshots.
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
    /// How long snapshots are kept (the newest always is); the restore window.
    #[serde(with = "humantime_serde")]
    pub snapshot_retention: Duration,
    /// How long L0 files stay once a level-1 file covers them.
    #[serde(with = "humantime_serde")]
    pub l0_retention: Duration,
    /// `false`: never delete anything (rely on the bucket's lifecycle rules).
    pub retention: bool,
    /// Lifecycle passes (compaction, snapshot, clean-up) running at once, fleet-wide.
    pub concurrency: usize,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            levels: crate::lifecycle::DEFAULT_LEVELS.to_vec(),
            snapshot_interval: crate::lifecycle::DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: crate::lifecycle::DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: crate::lifecycle::DEFAULT_L0_RETENTION,
            retention: true,
            concurrency: DEFAULT_LIFECYCLE_CONCURRENCY,
        }
    }
}

/// Lifecycle passes at once across the fleet.
pub const DEFAULT_LIFECYCLE_CONCURRENCY: usize = 4;

/// Periodic restore validation (`[validation]`): every `interval`, up to `tenants`
/// tenants (those validated longest ago first) have their replica restored at the TXID
/// the live database is at, and the two are compared page by page.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    /// Off by default: a validation reads the whole live database and downloads the
    /// replica's restore plan.
    pub enabled: bool,
    /// Time between validation rounds.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Tenants validated per round.
    pub tenants: usize,
    /// Restores running at once.
    pub concurrency: usize,
    /// Where restored copies are written (and removed); the system temp dir when unset.
    pub temp_dir: Option<PathBuf>,
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            enabled: false,
            interval: DEFAULT_VALIDATION_INTERVAL,
            tenants: DEFAULT_VALIDATION_TENANTS,
            concurrency: 1,
            temp_dir: None,
        }
    }
}

/// Time between validation rounds.
pub const DEFAULT_VALIDATION_INTERVAL: Duration = Duration::from_secs(600);
/// Tenants validated per round: 10 every 10 minutes is 1,440 a day.
pub const DEFAULT_VALIDATION_TENANTS: usize = 10;

/// `["30s", "5m"]` ⇄ `Vec<Duration>`.
mod humantime_serde_vec {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let v: Vec<String> = Vec::deserialize(d)?;
        v.iter()
            .map(|s| {
                humantime::parse_duration(s)
                    .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration ({e}); try \"30s\"")))
            })
            .collect()
    }
}

/// Logging (`[log]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` for people (the seed's emoji lines), `json` for machines.
    pub format: LogFormat,
    /// Filter in tracing's `EnvFilter` syntax (`info`, `litefleet=debug,info`);
    /// `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::default(), level: DEFAULT_LOG_LEVEL.to_owned() }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The seed's legacy mode: replicate one database, named by `-db-name` or its file stem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleDb {
    /// The database file (`-dsn`), relative to the current directory unless absolute.
    pub path: PathBuf,
    /// Its storage name, a validated prefix: `-db-name`, or else the file stem.
    pub name: String,
}

impl SingleDb {
    /// Its storage prefix: `<root>/<name>`.
    pub fn prefix(&self, root: &str) -> String {
        if root.is_empty() { self.name.clone() } else { format!("{root}/{}", self.name) }
    }
}

/// A credential or token: usable through [`Secret::expose`], printed as `***` by `Debug`
/// and `Display` so it can never leak into a log line or an error.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself, for the one place that must send it (a request signer, a
    /// token comparison). Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A configuration mistake, or a config file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A mistake in a config: `origin:line: message`, where the message starts with the
    /// key (`replication.sync_interval: …`) or names it (`unknown key "x" in [fleet]`).
    #[error("{origin}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Invalid {
        /// The file name (or `config` for one built in code).
        origin: String,
        /// 1-based line of the mistake; `None` when there is no source text.
        line: Option<usize>,
        /// Dotted path of the key (`watch[1].prefix`, `storage.url`); `None` for a
        /// syntax error that is not about one key.
        key: Option<String>,
        /// What is wrong, for a person.
        message: String,
    },
    /// A mistake in the seed's flags: `-watch-dir: …`.
    #[error("{flag}: {message}")]
    Flag {
        /// The flag, as the seed spells it (`-watch-dir`).
        flag: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl ConfigError {
    /// The 1-based line of the mistake, if it came from a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => *line,
            _ => None,
        }
    }
    /// The dotted key path of the mistake, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            _ => None,
        }
    }
}

/// A semantic mistake found after parsing: the key it is about, and what is wrong.
struct Problem {
    /// Dotted path (`watch[1].dir`).
    key: String,
    /// What is wrong (without the key).
    message: String,
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem { key: key.into(), message: message.into() }
}

impl Config {
    /// Reads and validates a config file; errors name `path` as it was given.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Config::parse(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `origin` names it in errors (a file name).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let locator = Locator::new(text);
        let config: Config = toml::from_str(text).map_err(|e| locator.serde_error(origin, &e))?;
        config.first_problem().map_or(Ok(()), |p| Err(locator.problem_error(origin, p)))?;
        Ok(config)
    }

    /// Validates a config built in code (errors have no line; their origin is `config`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.first_problem() {
            None => Ok(()),
            Some(p) => Err(Locator::new("").problem_error("config", p)),
        }
    }

    /// Builds a config from the seed's flags.
    ///
    /// - `watch_dirs`: each `-watch-dir` value, comma separated (`"data/prod,data/staging"`),
    ///   entries trimmed; an empty entry is an error.
    /// - `bucket`: `-bucket NAME` is the S3 bucket `s3://NAME` (endpoint and region come
    ///   from `AWS_ENDPOINT_URL` / `AWS_REGION` at run time); a URL (`file://…`, `s3://…`,
    ///   `memory://`) is used as it is; absent means the default `file://./replicas`.
    /// - `dsn` (+ `db_name`): legacy single-database mode, stored under
    ///   `<root>/<db-name or file stem>/`; cannot be combined with `-watch-dir`.
    ///
    /// Every error names the flag.
    pub fn from_legacy(
        watch_dirs: &[String],
        bucket: Option<&str>,
        dsn: Option<&str>,
        db_name: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let flag = |flag: &'static str, message: String| ConfigError::Flag { flag, message };
        let mut config = Config::default();
        for value in watch_dirs {
            for (i, entry) in value.split(',').enumerate() {
                let entry = entry.trim();
                if entry.is_empty() {
                    return Err(flag(
                        "-watch-dir",
                        format!("entry {} of {value:?} is empty (separate directories with single commas)", i + 1),
                    ));
                }
                config.watch.push(WatchConfig::new(entry));
            }
        }
        match (dsn, config.watch.is_empty()) {
            (Some(_), false) => {
                return Err(flag("-dsn", "cannot be combined with -watch-dir (use one mode at a time)".into()));
            }
            (None, true) => {
                return Err(flag(
                    "-watch-dir",
                    "give -watch-dir DIR[,DIR...] (directory mode) or -dsn FILE (legacy single-database mode)".into(),
                ));
            }
            _ => {}
        }
        if let (Some(_), None) = (db_name, dsn) {
            return Err(flag("-db-name", "only applies together with -dsn".into()));
        }
        if let Some(dsn) = dsn {
            let dsn = dsn.trim();
            if dsn.is_empty() {
                return Err(flag("-dsn", "is empty".into()));
            }
            let name = match db_name {
                Some(name) => tenant::validate_prefix(name).map_err(|e| flag("-db-name", e.to_string()))?,
                None => Path::new(dsn)
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| tenant::validate_prefix(s).ok())
                    .ok_or_else(|| {
                        flag("-dsn", format!("cannot derive a storage name from {dsn:?}; give -db-name NAME"))
                    })?,
            };
            config.single = Some(SingleDb { path: PathBuf::from(dsn), name });
        }
        if let Some(bucket) = bucket {
            let bucket = bucket.trim();
            config.storage.url = if bucket.contains("://") {
                StorageUrl::parse(bucket)
            } else {
                validate_bucket(bucket).map(|()| StorageUrl::S3 { bucket: bucket.to_owned(), path: String::new() })
            }
            .map_err(|m| flag("-bucket", m))?;
        }
        if let Some(p) = config.first_problem() {
            let name = match p.key.split(['.', '[']).next().unwrap_or("") {
                "watch" => "-watch-dir",
                "storage" => "-bucket",
                "single" => "-dsn",
                _ => "flags",
            };
            return Err(flag(name, p.message));
        }
        Ok(config)
    }

    /// One line for the startup log: what will be watched and where replicas go, with
    /// every credential and token shown only as "set" or "unset".
    pub fn redacted_summary(&self) -> String {
        let s = &self.storage;
        let mut out = format!("storage={}", s.url);
        if !s.root.is_empty() {
            out.push_str(&format!(" root={}", s.root));
        }
        if let Some(e) = &s.endpoint {
            out.push_str(&format!(" endpoint={e}"));
        }
        if let Some(r) = &s.region {
            out.push_str(&format!(" region={r}"));
        }
        if let Some(p) = s.force_path_style {
            out.push_str(&format!(" force_path_style={p}"));
        }
        if s.url.is_s3() {
            let creds = match (&s.access_key_id, &s.secret_access_key) {
                (Some(_), Some(_)) => "config",
                _ => "environment",
            };
            out.push_str(&format!(" credentials=from-{creds}"));
        }
        let watches: Vec<String> = self
            .watch
            .iter()
            .map(|w| {
                let mut d = w.dir.display().to_string();
                if w.recursive {
                    d.push_str(" (recursive)");
                }
                if let Some(p) = &w.prefix {
                    d.push_str(&format!(" (prefix {p})"));
                }
                d
            })
            .collect();
        if !watches.is_empty() {
            out.push_str(&format!(" watch=[{}]", watches.join(", ")));
        }
        if let Some(single) = &self.single {
            out.push_str(&format!(" single={} -> {}", single.path.display(), single.prefix(&s.root)));
        }
        let r = &self.replication;
        let f = &self.fleet;
        out.push_str(&format!(
            " sync_interval={} max_open_tenants={} idle_after={} state_dir={} page_encoding={:?} non_guid={:?} rescan_interval={}{} http={} token={} log={:?}/{}",
            humantime::format_duration(r.sync_interval),
            r.max_open_tenants,
            humantime::format_duration(r.idle_after),
            r.state_dir.display(),
            r.page_encoding,
            f.non_guid,
            humantime::format_duration(f.rescan_interval),
            if f.poll { " poll" } else { "" },
            self.http.listen,
            if self.http.token.is_some() { "set" } else { "unset" },
            self.log.format,
            self.log.level,
        ));
        if let Some(h) = &self.hooks {
            out.push_str(&format!(
                " hooks={} on_error={:?} webhooks={}",
                h.module.display(),
                h.on_error,
                h.webhooks.len()
            ));
        }
        out
    }

    /// The first semantic mistake, in file order as far as possible.
    fn first_problem(&self) -> Option<Problem> {
        self.watch_problem()
            .or_else(|| self.storage_problem())
            .or_else(|| self.replication_problem())
            .or_else(|| self.fleet_problem())
            .or_else(|| self.log_problem())
            .or_else(|| self.lifecycle_problem())
            .or_else(|| self.validation_problem())
            .or_else(|| self.hooks_problem())
    }

    fn watch_problem(&self) -> Option<Problem> {
        if self.watch.is_empty() && self.single.is_none() {
            return Some(problem(
                "watch",
                "no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")",
            ));
        }
        let normalized: Vec<PathBuf> = self.watch.iter().map(|w| normalize(&w.dir)).collect();
        for (i, w) in self.watch.iter().enumerate() {
            if w.dir.as_os_str().is_empty() {
                return Some(problem(format!("watch[{i}].dir"), "is empty"));
            }
            for (j, other) in self.watch.iter().enumerate().take(i) {
                let (mine, theirs) = (&normalized[i], &normalized[j]);
                if mine == theirs {
                    return Some(problem(
                        format!("watch[{i}].dir"),
                        format!("{:?} is the same directory as watch[{j}] ({:?})", w.dir, other.dir),
                    ));
                }
                let nested = (other.recursive && mine.starts_with(theirs)) || (w.recursive && theirs.starts_with(mine));
                if nested {
                    return Some(problem(
                        format!("watch[{i}].dir"),
                        format!(
                            "{:?} overlaps watch[{j}] ({:?}) and one of them is recursive; a database would be watched twice",
                            w.dir, other.dir
                        ),
                    ));
                }
            }
        }
        None
    }

    fn storage_problem(&self) -> Option<Problem> {
        let s = &self.storage;
        if !s.url.is_s3() {
            let s3_only = [
                ("endpoint", s.endpoint.is_some()),
                ("region", s.region.is_some()),
                ("force_path_style", s.force_path_style.is_some()),
                ("access_key_id", s.access_key_id.is_some()),
                ("secret_access_key", s.secret_access_key.is_some()),
            ];
            if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Some(problem(
                    format!("storage.{key}"),
                    format!("only applies to s3:// urls (storage.url is \"{}\")", s.url),
                ));
            }
        }
        match (&s.access_key_id, &s.secret_access_key) {
            (Some(_), None) => Some(problem(
                "storage.access_key_id",
                "is set but storage.secret_access_key is not (set both, or neither to use AWS_* variables)",
            )),
            (None, Some(_)) => Some(problem(
                "storage.secret_access_key",
                "is set but storage.access_key_id is not (set both, or neither to use AWS_* variables)",
            )),
            _ => None,
        }
    }

    fn replication_problem(&self) -> Option<Problem> {
        let r = &self.replication;
        let positive = [
            ("sync_interval", r.sync_interval),
            ("checkpoint_interval", r.checkpoint_interval),
            ("idle_after", r.idle_after),
        ];
        if let Some((key, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Some(problem(format!("replication.{key}"), "must be longer than 0s"));
        }
        if r.min_checkpoint_pages == 0 {
            return Some(problem("replication.min_checkpoint_pages", "must be at least 1"));
        }
        if r.truncate_pages != 0 && r.truncate_pages < r.min_checkpoint_pages {
            return Some(problem(
                "replication.truncate_pages",
                format!(
                    "{} is below min_checkpoint_pages ({}); use a larger value, or 0 to disable",
                    r.truncate_pages, r.min_checkpoint_pages
                ),
            ));
        }
        if r.max_open_tenants == 0 {
            return Some(problem(
                "replication.max_open_tenants",
                "must be at least 1 (it bounds open connections, it does not disable replication)",
            ));
        }
        if r.state_dir.as_os_str().is_empty() {
            return Some(problem("replication.state_dir", "is empty"));
        }
        let state = normalize(&r.state_dir);
        for (i, w) in self.watch.iter().enumerate() {
            let dir = normalize(&w.dir);
            let clash = state == dir || (state.starts_with(&dir) && w.recursive);
            if clash {
                return Some(problem(
                    "replication.state_dir",
                    format!(
                        "{:?} is inside watch[{i}] ({:?}); keep local state away from tenant databases",
                        r.state_dir, w.dir
                    ),
                ));
            }
        }
        None
    }

    fn fleet_problem(&self) -> Option<Problem> {
        let f = &self.fleet;
        if f.rescan_interval < MIN_RESCAN_INTERVAL {
            return Some(problem(
                "fleet.rescan_interval",
                format!("must be at least {}", humantime::format_duration(MIN_RESCAN_INTERVAL)),
            ));
        }
        if f.startup_concurrency == 0 {
            return Some(problem("fleet.startup_concurrency", "must be at least 1"));
        }
        if f.poll_interval.is_zero() {
            return Some(problem("fleet.poll_interval", "must be longer than 0s"));
        }
        None
    }

    fn lifecycle_problem(&self) -> Option<Problem> {
        let l = &self.lifecycle;
        if l.levels.len() > crate::lifecycle::MAX_COMPACTION_LEVEL as usize {
            return Some(problem(
                "lifecycle.levels",
                format!(
                    "{} levels given; at most {} (level 9 is for snapshots)",
                    l.levels.len(),
                    crate::lifecycle::MAX_COMPACTION_LEVEL
                ),
            ));
        }
        if let Some(i) = l.levels.iter().position(|d| d.is_zero()) {
            return Some(problem(format!("lifecycle.levels[{i}]"), "must be longer than 0s"));
        }
        if l.l0_retention.is_zero() && l.retention {
            return Some(problem("lifecycle.l0_retention", "must be longer than 0s"));
        }
        if l.snapshot_retention.is_zero() && l.retention {
            return Some(problem(
                "lifecycle.snapshot_retention",
                "must be longer than 0s (the newest snapshot is always kept)",
            ));
        }
        if l.concurrency == 0 {
            return Some(problem("lifecycle.concurrency", "must be at least 1"));
        }
        None
    }

    fn validation_problem(&self) -> Option<Problem> {
        let v = &self.validation;
        if v.interval < Duration::from_secs(1) {
            return Some(problem("validation.interval", "must be at least 1s"));
        }
        if v.tenants == 0 {
            return Some(problem("validation.tenants", "must be at least 1"));
        }
        if v.concurrency == 0 {
            return Some(problem("validation.concurrency", "must be at least 1"));
        }
        if v.temp_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Some(problem("validation.temp_dir", "is empty (leave it out for the system temp dir)"));
        }
        None
    }

    fn hooks_problem(&self) -> Option<Problem> {
        let (key, message) = self.hooks.as_ref()?.problem()?;
        Some(problem(format!("hooks.{key}"), message))
    }

    fn log_problem(&self) -> Option<Problem> {
        if self.log.level.trim().is_empty() {
            return Some(problem("log.level", "is empty (try \"info\" or \"litefleet=debug,info\")"));
        }
        None
    }
}

/// A lexical normal form of a directory for comparing config entries (no I/O: the
/// directories need not exist yet). Relative paths are taken against the current
/// directory when it is known; `.` components and trailing slashes vanish, `..` pops.
fn normalize(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn default_extensions() -> Vec<String> {
    tenant::DEFAULT_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect()
}

fn de_opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let p = String::deserialize(d)?;
    tenant::validate_prefix(&p).map(Some).map_err(serde::de::Error::custom)
}

fn de_root<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let p = String::deserialize(d)?;
    if p.is_empty() {
        return Ok(p);
    }
    tenant::validate_prefix(&p).map_err(serde::de::Error::custom)
}

fn de_extensions<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    if list.is_empty() {
        return Err(serde::de::Error::custom("is empty (the default is [\"db\", \"sqlite\", \"sqlite3\"])"));
    }
    list.into_iter()
        .map(|e| {
            let bare = e.strip_prefix('.').unwrap_or(&e);
            let ok =
                !bare.is_empty() && bare.len() <= MAX_EXTENSION_LEN && bare.chars().all(|c| c.is_ascii_alphanumeric());
            if ok {
                Ok(bare.to_owned())
            } else {
                Err(serde::de::Error::custom(format!(
                    "extension {e:?} must be 1 to {MAX_EXTENSION_LEN} letters or digits (like \"db\")"
                )))
            }
        })
        .collect()
}

fn de_opt_endpoint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let e = String::deserialize(d)?;
    let ok = (e.starts_with("http://") || e.starts_with("https://"))
        && e.len() > "https://".len()
        && !e.contains(char::is_whitespace);
    if ok {
        Ok(Some(e.trim_end_matches('/').to_owned()))
    } else {
        Err(serde::de::Error::custom(format!("{e:?} is not an http(s) URL (like \"http://127.0.0.1:9000\")")))
    }
}

fn de_opt_word<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let w = String::deserialize(d)?;
    if w.is_empty() || w.contains(char::is_whitespace) {
        return Err(serde::de::Error::custom(format!("{w:?} is not a region name (like \"us-east-1\")")));
    }
    Ok(Some(w))
}

fn de_opt_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    let t = String::deserialize(d)?;
    Ok(if t.is_empty() { None } else { Some(Secret(t)) })
}

/// Where each key of a TOML document is: built from toml's spanned parse tree, it maps
/// an error's byte span to a line and a dotted key path, and a key path to a line.
struct Locator<'a> {
    /// The source text.
    src: &'a str,
    /// Every key and array element, with the spans of its key and value.
    entries: Vec<Entry>,
}

/// One key (or array element) of the document.
struct Entry {
    /// Dotted path: `replication.sync_interval`, `watch[1].dir`, `watch[1]`.
    path: String,
    /// Span of the key (for array elements, of the element).
    key: Range<usize>,
    /// Span of the value (for tables opened by a header, of the header).
    value: Range<usize>,
}

impl<'a> Locator<'a> {
    fn new(src: &'a str) -> Locator<'a> {
        let mut entries = Vec::new();
        // A document with syntax errors still yields the keys before and around them;
        // the errors themselves are reported by `toml::from_str` with their own spans.
        let (root, _errors) = toml::de::DeTable::parse_recoverable(src);
        collect_table(root.get_ref(), "", &mut entries);
        Locator { src, entries }
    }

    /// 1-based line of a byte offset.
    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// The most specific key whose key or value span holds `offset`.
    fn path_at(&self, offset: usize) -> Option<&str> {
        let within = |r: &Range<usize>| r.contains(&offset) || (r.is_empty() && r.start == offset);
        self.entries
            .iter()
            .filter_map(|e| {
                let len = [&e.key, &e.value].into_iter().filter(|r| within(r)).map(|r| r.len()).min()?;
                Some((len, std::cmp::Reverse(e.path.len()), e.path.as_str()))
            })
            .min()
            .map(|(_, _, p)| p)
    }

    /// The dotted path of a key that is not in the tree (a duplicate key is dropped by
    /// the parser): the table whose header last precedes `span`, plus the key's text.
    fn path_near(&self, span: &Range<usize>) -> Option<String> {
        let name = self.src.get(span.clone())?.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return None;
        }
        let table = self
            .entries
            .iter()
            .filter(|e| {
                e.value.start <= span.start && self.src.get(e.value.clone()).is_some_and(|t| t.starts_with('['))
            })
            .max_by_key(|e| (e.value.start, e.path.len()));
        Some(match table {
            Some(t) => format!("{}.{name}", t.path),
            None => name.to_owned(),
        })
    }

    /// The line of `path`'s key, or of its nearest parent present in the file.
    fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.iter().find(|e| e.path == p) {
                return Some(self.line_at(e.key.start));
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }

    fn problem_error(&self, origin: &str, p: Problem) -> ConfigError {
        let line = if self.src.is_empty() { None } else { Some(self.line_of(&p.key).unwrap_or(1)) };
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            message: format!("{}: {}", p.key, p.message),
            key: Some(p.key),
        }
    }

    /// Turns a toml/serde error into `origin:line: key: message`, rewording serde's
    /// phrasing into what a person editing the file needs.
    fn serde_error(&self, origin: &str, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let line = span.as_ref().map(|s| self.line_at(s.start));
        let key = span.as_ref().and_then(|s| self.path_at(s.start).map(str::to_owned).or_else(|| self.path_near(s)));
        let raw = e.message().trim();
        let value = span.as_ref().and_then(|s| self.src.get(s.clone())).unwrap_or("");
        let message = match &key {
            Some(key) => match unknown_key_message(raw, key) {
                Some(m) => m,
                None => format!("{key}: {}", reword(raw, value)),
            },
            None => raw.to_owned(),
        };
        ConfigError::Invalid { origin: origin.to_owned(), line, key, message }
    }
}

fn collect_table(table: &toml::de::DeTable<'_>, base: &str, out: &mut Vec<Entry>) {
    for (k, v) in table.iter() {
        let path = if base.is_empty() { k.get_ref().to_string() } else { format!("{base}.{}", k.get_ref()) };
        out.push(Entry { path: path.clone(), key: k.span(), value: v.span() });
        collect_value(v.get_ref(), &path, out);
    }
}

fn collect_value(value: &toml::de::DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        toml::de::DeValue::Table(t) => collect_table(t, path, out),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                out.push(Entry { path: item_path.clone(), key: item.span(), value: item.span() });
                collect_value(item.get_ref(), &item_path, out);
            }
        }
        _ => {}
    }
}

/// The words between backticks in a serde message, in order.
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

/// `unknown key "recursiv" in [[watch]] (expected one of dir, recursive, …)` for serde's
/// "unknown field" errors; `None` for any other error.
fn unknown_key_message(raw: &str, key: &str) -> Option<String> {
    if !raw.starts_with("unknown field") {
        return None;
    }
    let words = backticked(raw);
    let (name, expected) = words.split_first()?;
    let parent = key.rfind('.').map(|i| &key[..i]);
    let place = match parent {
        None => "at the top level".to_owned(),
        Some(p) => match p.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((array, _)) => format!("in [[{array}]]"),
            None => format!("in [{p}]"),
        },
    };
    let expected = if expected.is_empty() {
        "no keys are allowed here".to_owned()
    } else {
        format!("expected one of {}", expected.join(", "))
    };
    Some(format!("unknown key \"{name}\" {place} ({expected})"))
}

/// Rewords serde's messages: durations get an example, missing fields and unknown
/// variants read like the file.
fn reword(raw: &str, value: &str) -> String {
    if raw.ends_with("expected a duration") {
        let bare = value.trim_matches(['"', '\'']);
        let digits: String = bare.chars().take_while(|c| c.is_ascii_digit()).collect();
        let hint = if digits.is_empty() { "1" } else { &digits };
        return format!("{value} is not a duration (try \"{hint}s\", or units like 500ms, 2m, 1h)");
    }
    if raw.starts_with("missing field") {
        let words = backticked(raw);
        return format!("missing key \"{}\"", words.first().copied().unwrap_or("?"));
    }
    if raw.starts_with("unknown variant") {
        let words = backticked(raw);
        if let Some((got, allowed)) = words.split_first() {
            return format!("\"{got}\" is not one of: {}", allowed.join(", "));
        }
    }
    raw.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example config of the repository, as shipped.
    const EXAMPLE: &str = include_str!("../config.example.toml");

    /// Parses `text` expecting an error; returns (line, key, display).
    fn fail(text: &str) -> (Option<usize>, Option<String>, String) {
        match Config::parse(text, "prod.toml") {
            Ok(c) => panic!("parsed, want an error: {c:?}"),
            Err(e) => (e.line(), e.key().map(str::to_owned), e.to_string()),
        }
    }

    fn assert_fails(text: &str, want_line: usize, want_key: &str, want_msg: &str) {
        let (line, key, msg) = fail(text);
        assert_eq!(line, Some(want_line), "line; got message {msg}");
        assert_eq!(key.as_deref(), Some(want_key), "key; got message {msg}");
        assert_eq!(msg, want_msg);
    }

    const MINIMAL: &str = "[[watch]]\ndir = \"data/clients\"\n";

    #[test]
    fn example_file_is_default_with_one_watch_dir() {
        let got = Config::parse(EXAMPLE, "config.example.toml").unwrap();
        let want = Config { watch: vec![WatchConfig::new("data/clients")], ..Config::default() };
        assert_eq!(got, want);
        assert_eq!(got.storage.url.to_string(), DEFAULT_STORAGE_URL);
        assert_eq!(got.http.listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let c = Config::parse(MINIMAL, "min.toml").unwrap();
        assert_eq!(c.watch, vec![WatchConfig::new("data/clients")]);
        assert_eq!(c.storage, StorageConfig::default());
        assert_eq!(c.storage.root, "databases");
        assert_eq!(c.replication.sync_interval, DEFAULT_SYNC_INTERVAL);
        assert_eq!(c.replication.truncate_pages, 121_359);
        assert_eq!(c.fleet.non_guid, NonGuidPolicy::Skip);
        assert_eq!(c.http.listen, DEFAULT_LISTEN);
        assert!(c.single.is_none());
    }

    #[test]
    fn full_s3_file_parses() {
        let text = r#"
[[watch]]
dir = "/data/prod/"
prefix = "prod/"
recursive = true
extensions = [".db", "sqlite"]

[[watch]]
dir = "/data/staging"
prefix = "staging"

[storage]
url = "s3://saas-backups/litefleet"
endpoint = "http://127.0.0.1:9000/"
region = "us-east-1"
force_path_style = true
access_key_id = "AKIAEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG"
root = ""

[replication]
sync_interval = "250ms"
page_encoding = "frame"
truncate_pages = 0

[fleet]
non_guid = "stem"
poll = true

[http]
listen = "0.0.0.0:9090"
token = "hunter2"
per_tenant_metrics = true

[log]
format = "json"
"#;
        let c = Config::parse(text, "s3.toml").unwrap();
        assert_eq!(c.watch[0].prefix.as_deref(), Some("prod"));
        assert_eq!(c.watch[0].extensions, vec!["db", "sqlite"]);
        assert_eq!(c.storage.url, StorageUrl::S3 { bucket: "saas-backups".into(), path: "litefleet".into() });
        assert_eq!(c.storage.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(c.storage.root, "");
        assert_eq!(c.replication.sync_interval, Duration::from_millis(250));
        assert_eq!(c.replication.page_encoding, PageEncoding::Frame);
        assert_eq!(c.fleet.non_guid, NonGuidPolicy::Stem);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.http.token.as_ref().map(Secret::expose), Some("hunter2"));
        assert!(c.http.per_tenant_metrics);

        // Secrets never show, not in Debug, not in the summary.
        let debug = format!("{c:?}");
        let summary = c.redacted_summary();
        for text in [&debug, &summary] {
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
            assert!(!text.contains("AKIAEXAMPLE"), "{text}");
        }
        assert!(summary.contains("storage=s3://saas-backups/litefleet"), "{summary}");
        assert!(summary.contains("credentials=from-config"), "{summary}");
        assert!(summary.contains("token=set"), "{summary}");
        assert!(summary.contains("/data/prod/ (recursive) (prefix prod)"), "{summary}");
    }

    #[test]
    fn empty_token_means_none() {
        let c = Config::parse(&format!("{MINIMAL}[http]\ntoken = \"\"\n"), "t.toml").unwrap();
        assert_eq!(c.http.token, None);
    }

    #[test]
    fn unknown_keys_name_line_table_and_choices() {
        assert_fails(
            "[[watch]]\ndir = \"a\"\nrecursiv = true\n",
            3,
            "watch[0].recursiv",
            "prod.toml:3: unknown key \"recursiv\" in [[watch]] (expected one of dir, recursive, prefix, extensions)",
        );
        assert_fails(
            &format!("{MINIMAL}\n[replication]\nsync_intervl = \"1s\"\n"),
            5,
            "replication.sync_intervl",
            "prod.toml:5: unknown key \"sync_intervl\" in [replication] (expected one of sync_interval, checkpoint_interval, min_checkpoint_pages, truncate_pages, busy_timeout, page_encoding, max_open_tenants, idle_after, state_dir)",
        );
        let (line, key, msg) = fail(&format!("{MINIMAL}[replicaton]\n"));
        assert_eq!((line, key.as_deref()), (Some(3), Some("replicaton")));
        assert!(
            msg.starts_with(
                "prod.toml:3: unknown key \"replicaton\" at the top level (expected one of watch, storage, replication,"
            ),
            "{msg}"
        );
        // The second [[watch]] table is named by its index.
        assert_fails(
            "[[watch]]\ndir = \"a\"\n[[watch]]\ndir = \"b\"\nprefx = \"p\"\n",
            5,
            "watch[1].prefx",
            "prod.toml:5: unknown key \"prefx\" in [[watch]] (expected one of dir, recursive, prefix, extensions)",
        );
    }

    #[test]
    fn bad_values_name_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "[[watch]]\ndir = \"a\"\n\n[replication]\nsync_interval = \"1 sek\"\n",
                5,
                "replication.sync_interval",
                "prod.toml:5: replication.sync_interval: \"1 sek\" is not a duration (try \"1s\", or units like 500ms, 2m, 1h)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[fleet]\nrescan_interval = 60\n",
                4,
                "fleet.rescan_interval",
                "prod.toml:4: fleet.rescan_interval: 60 is not a duration (try \"60s\", or units like 500ms, 2m, 1h)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\npage_encoding = \"zstd\"\n",
                4,
                "replication.page_encoding",
                "prod.toml:4: replication.page_encoding: \"zstd\" is not one of: block, frame",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[fleet]\nnon_guid = \"fallback\"\n",
                4,
                "fleet.non_guid",
                "prod.toml:4: fleet.non_guid: \"fallback\" is not one of: skip, stem",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[http]\nlisten = \"localhost\"\n",
                4,
                "http.listen",
                "prod.toml:4: http.listen: invalid socket address syntax",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[http]\nper_tenant_metrics = \"yes\"\n",
                4,
                "http.per_tenant_metrics",
                "prod.toml:4: http.per_tenant_metrics: invalid type: string \"yes\", expected a boolean",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"gs://bucket\"\n",
                4,
                "storage.url",
                "prod.toml:4: storage.url: unknown scheme \"gs\" in \"gs://bucket\" (expected file://, s3:// or memory://)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"replicas\"\n",
                4,
                "storage.url",
                "prod.toml:4: storage.url: \"replicas\" is not a URL (try \"file://replicas\" for a local folder or \"s3://replicas\" for a bucket)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"s3://Bad_Bucket\"\n",
                4,
                "storage.url",
                "prod.toml:4: storage.url: \"Bad_Bucket\" is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)",
            ),
            (
                "[[watch]]\ndir = \"a\"\nprefix = \"../up\"\n",
                3,
                "watch[0].prefix",
                "prod.toml:3: watch[0].prefix: prefix \"../up\" has a \"..\" segment; relative path segments are not allowed",
            ),
            (
                "[[watch]]\ndir = \"a\"\nextensions = []\n",
                3,
                "watch[0].extensions",
                "prod.toml:3: watch[0].extensions: is empty (the default is [\"db\", \"sqlite\", \"sqlite3\"])",
            ),
            (
                "[[watch]]\ndir = \"a\"\nextensions = [\"db\", \"d b\"]\n",
                3,
                "watch[0].extensions",
                "prod.toml:3: watch[0].extensions: extension \"d b\" must be 1 to 16 letters or digits (like \"db\")",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\nmax_open_tenants = -1\n",
                4,
                "replication.max_open_tenants",
                "prod.toml:4: replication.max_open_tenants: invalid value: integer `-1`, expected usize",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nendpoint = \"127.0.0.1:9000\"\n",
                4,
                "storage.endpoint",
                "prod.toml:4: storage.endpoint: \"127.0.0.1:9000\" is not an http(s) URL (like \"http://127.0.0.1:9000\")",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nroot = \"/abs\"\n",
                4,
                "storage.root",
                "prod.toml:4: storage.root: prefix \"/abs\" starts with '/'; it must be relative (like \"prod/eu\")",
            ),
            (
                "# my fleet\n\n[[watch]]\nrecursive = true\n",
                3,
                "watch[0]",
                "prod.toml:3: watch[0]: missing key \"dir\"",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\nsync_interval = \"1s\"\nsync_interval = \"2s\"\n",
                5,
                "replication.sync_interval",
                "prod.toml:5: replication.sync_interval: duplicate key",
            ),
            ("watch = 3\n", 1, "watch", "prod.toml:1: watch: invalid type: integer `3`, expected a sequence"),
        ];
        for (text, line, key, msg) in cases {
            assert_fails(text, *line, key, msg);
        }
    }

    #[test]
    fn syntax_error_names_line() {
        let (line, key, msg) = fail("[[watch]]\ndir = \"a\"\n[replication\n");
        assert_eq!(line, Some(3), "{msg}");
        assert_eq!(key, None);
        assert!(msg.starts_with("prod.toml:3: "), "{msg}");
    }

    #[test]
    fn semantic_errors_name_line_and_key() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "# nothing to watch\n[storage]\nroot = \"x\"\n",
                1,
                "watch",
                "prod.toml:1: watch: no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")",
            ),
            (
                "[[watch]]\ndir = \"data/prod\"\n\n[[watch]]\ndir = \"data/prod/\"\n",
                5,
                "watch[1].dir",
                "prod.toml:5: watch[1].dir: \"data/prod/\" is the same directory as watch[0] (\"data/prod\")",
            ),
            (
                "[[watch]]\ndir = \"data\"\nrecursive = true\n[[watch]]\ndir = \"./data/prod\"\n",
                5,
                "watch[1].dir",
                "prod.toml:5: watch[1].dir: \"./data/prod\" overlaps watch[0] (\"data\") and one of them is recursive; a database would be watched twice",
            ),
            ("[[watch]]\ndir = \"\"\n", 2, "watch[0].dir", "prod.toml:2: watch[0].dir: is empty"),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"file://./r\"\nregion = \"us-east-1\"\n",
                5,
                "storage.region",
                "prod.toml:5: storage.region: only applies to s3:// urls (storage.url is \"file://./r\")",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"s3://bucket\"\naccess_key_id = \"AK\"\n",
                5,
                "storage.access_key_id",
                "prod.toml:5: storage.access_key_id: is set but storage.secret_access_key is not (set both, or neither to use AWS_* variables)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\n\nmax_open_tenants = 0\n",
                5,
                "replication.max_open_tenants",
                "prod.toml:5: replication.max_open_tenants: must be at least 1 (it bounds open connections, it does not disable replication)",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\nsync_interval = \"0s\"\n",
                4,
                "replication.sync_interval",
                "prod.toml:4: replication.sync_interval: must be longer than 0s",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\nmin_checkpoint_pages = 0\n",
                4,
                "replication.min_checkpoint_pages",
                "prod.toml:4: replication.min_checkpoint_pages: must be at least 1",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[replication]\nmin_checkpoint_pages = 500\ntruncate_pages = 100\n",
                5,
                "replication.truncate_pages",
                "prod.toml:5: replication.truncate_pages: 100 is below min_checkpoint_pages (500); use a larger value, or 0 to disable",
            ),
            (
                "[[watch]]\ndir = \"data\"\nrecursive = true\n[replication]\nstate_dir = \"data/.state\"\n",
                5,
                "replication.state_dir",
                "prod.toml:5: replication.state_dir: \"data/.state\" is inside watch[0] (\"data\"); keep local state away from tenant databases",
            ),
            (
                "[[watch]]\ndir = \".litefleet\"\n",
                1,
                "replication.state_dir",
                "prod.toml:1: replication.state_dir: \".litefleet\" is inside watch[0] (\".litefleet\"); keep local state away from tenant databases",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[fleet]\nrescan_interval = \"100ms\"\n",
                4,
                "fleet.rescan_interval",
                "prod.toml:4: fleet.rescan_interval: must be at least 1s",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[fleet]\nstartup_concurrency = 0\n",
                4,
                "fleet.startup_concurrency",
                "prod.toml:4: fleet.startup_concurrency: must be at least 1",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[fleet]\npoll_interval = \"0s\"\n",
                4,
                "fleet.poll_interval",
                "prod.toml:4: fleet.poll_interval: must be longer than 0s",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[validation]\nenabled = true\ntenants = 0\n",
                5,
                "validation.tenants",
                "prod.toml:5: validation.tenants: must be at least 1",
            ),
            (
                "[[watch]]\ndir = \"a\"\n[log]\nlevel = \" \"\n",
                4,
                "log.level",
                "prod.toml:4: log.level: is empty (try \"info\" or \"litefleet=debug,info\")",
            ),
        ];
        for (text, line, key, msg) in cases {
            assert_fails(text, *line, key, msg);
        }
    }

    #[test]
    fn inline_watch_array_is_located_too() {
        assert_fails(
            "watch = [\n  { dir = \"a\" },\n  { dir = \"a\" },\n]\n",
            3,
            "watch[1].dir",
            "prod.toml:3: watch[1].dir: \"a\" is the same directory as watch[0] (\"a\")",
        );
    }

    #[test]
    fn load_reads_files_and_names_them() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("prod.toml");
        std::fs::write(&path, "[[watch]]\ndir = \"a\"\n[fleet]\nbogus = 1\n").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert_eq!(err.line(), Some(4));
        assert!(
            err.to_string().starts_with(&format!("{}:4: unknown key \"bogus\" in [fleet]", path.display())),
            "{err}"
        );
        let missing = tmp.path().join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.toml: cannot read config"), "{err}");
    }

    #[test]
    fn validate_on_built_config_has_no_line() {
        let err = Config::default().validate().unwrap_err();
        assert_eq!(err.line(), None);
        assert_eq!(
            err.to_string(),
            "config: watch: no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")"
        );
    }

    const HOOKS: &str = "[[watch]]\ndir = \"a\"\n\n[hooks]\nmodule = \"hooks/examples/shard-prefix/shard-prefix.wasm\"\non_error = \"refuse\"\ntimeout = \"250ms\"\nfuel = 1000000\nmax_memory_mib = 32\nwatch = false\nqueue = 10\n\n[hooks.webhooks.ops]\nurl = \"https://hooks.example.com/T000/secret-token\"\nheaders_from_env = { Authorization = \"OPS_AUTH\" }\ntimeout = \"2s\"\nretries = 5\nbackoff = \"1s\"\n";

    #[test]
    fn hooks_table_parses() {
        let c = Config::parse(HOOKS, "prod.toml").unwrap();
        let h = c.hooks.expect("hooks");
        assert_eq!(h.module, PathBuf::from("hooks/examples/shard-prefix/shard-prefix.wasm"));
        assert_eq!(h.on_error, crate::hooks::OnError::Refuse);
        assert_eq!(
            (h.timeout, h.fuel, h.max_memory_mib, h.watch, h.queue),
            (Duration::from_millis(250), 1_000_000, 32, false, 10)
        );
        let ops = &h.webhooks["ops"];
        assert_eq!(ops.url.expose(), "https://hooks.example.com/T000/secret-token");
        assert_eq!(ops.headers_from_env.get("Authorization").map(String::as_str), Some("OPS_AUTH"));
        assert_eq!(ops.content_type, "application/json");
        assert_eq!((ops.timeout, ops.retries, ops.backoff), (Duration::from_secs(2), 5, Duration::from_secs(1)));
        // The webhook URL carries a token: never in Debug or the startup summary.
        let c = Config::parse(HOOKS, "prod.toml").unwrap();
        assert!(!format!("{c:?}").contains("secret-token"));
        assert!(!c.redacted_summary().contains("secret-token"));
        assert!(c.redacted_summary().contains("hooks=hooks/examples/shard-prefix/shard-prefix.wasm"));
        // Defaults: only `module` is required.
        let c = Config::parse("[[watch]]\ndir = \"a\"\n[hooks]\nmodule = \"h.wasm\"\n", "min.toml").unwrap();
        assert_eq!(c.hooks, Some(crate::hooks::HooksConfig::new("h.wasm")));
        assert_eq!(Config::parse(MINIMAL, "min.toml").unwrap().hooks, None);
    }

    #[test]
    fn hooks_mistakes_name_line_and_key() {
        let w = "[[watch]]\ndir = \"a\"\n[hooks]\nmodule = \"h.wasm\"\n";
        let cases: Vec<(String, usize, &str, &str)> = vec![
            (
                "[[watch]]\ndir = \"a\"\n[hooks]\non_error = \"refuse\"\n".into(),
                3,
                "hooks",
                "prod.toml:3: hooks: missing key \"module\"",
            ),
            (
                format!("{w}timeout = \"0s\""),
                5,
                "hooks.timeout",
                "prod.toml:5: hooks.timeout: must be longer than 0s and at most 10s",
            ),
            (
                format!("{w}timeout = \"1 sek\""),
                5,
                "hooks.timeout",
                "prod.toml:5: hooks.timeout: \"1 sek\" is not a duration (try \"1s\", or units like 500ms, 2m, 1h)",
            ),
            (
                format!("{w}on_error = \"ignore\""),
                5,
                "hooks.on_error",
                "prod.toml:5: hooks.on_error: \"ignore\" is not one of: default, refuse",
            ),
            (
                format!("{w}max_memory_mib = 0"),
                5,
                "hooks.max_memory_mib",
                "prod.toml:5: hooks.max_memory_mib: must be 1 to 1024",
            ),
            (
                format!("{w}fule = 1"),
                5,
                "hooks.fule",
                "prod.toml:5: unknown key \"fule\" in [hooks] (expected one of module, on_error, timeout, fuel, max_memory_mib, watch, queue, webhooks)",
            ),
            (
                format!("{w}[hooks.webhooks.ops]\nurl = \"ftp://x/secret\"\n"),
                6,
                "hooks.webhooks.ops.url",
                "prod.toml:6: hooks.webhooks.ops.url: must be an http:// or https:// URL with a host",
            ),
            (
                format!(
                    "{w}[hooks.webhooks.ops]\nurl = \"https://x\"\nheaders_from_env = {{ Authorization = \"not a var\" }}\n"
                ),
                7,
                "hooks.webhooks.ops.headers_from_env",
                "prod.toml:7: hooks.webhooks.ops.headers_from_env: Authorization: \"not a var\" is not an environment variable name (like \"SLACK_AUTH\")",
            ),
            (
                format!("{w}[hooks.webhooks.\"a b\"]\nurl = \"https://x\"\n"),
                5,
                "hooks.webhooks.a b",
                "prod.toml:5: hooks.webhooks.a b: channel name \"a b\" must be 1 to 64 of A-Z a-z 0-9 . _ -",
            ),
        ];
        for (text, line, key, msg) in &cases {
            assert_fails(text, *line, key, msg);
        }
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("p@ss");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "p@ss");
    }

    #[test]
    fn legacy_directory_mode() {
        let c = Config::from_legacy(&["data/clients".into()], Some("backups"), None, None).unwrap();
        assert_eq!(c.watch, vec![WatchConfig::new("data/clients")]);
        assert_eq!(c.storage.url, StorageUrl::S3 { bucket: "backups".into(), path: String::new() });
        assert_eq!(c.storage.endpoint, None);
        assert_eq!(c.storage.root, "databases");

        let c = Config::from_legacy(
            &[" /data/prod/ , /data/staging/".into(), "data/dev".into()],
            Some("file://./out"),
            None,
            None,
        )
        .unwrap();
        let dirs: Vec<_> = c.watch.iter().map(|w| w.dir.clone()).collect();
        assert_eq!(dirs, [PathBuf::from("/data/prod/"), PathBuf::from("/data/staging/"), PathBuf::from("data/dev")]);
        assert_eq!(c.storage.url, StorageUrl::File { path: "./out".into() });
        // No bucket: the default local folder.
        let c = Config::from_legacy(&["d".into()], None, None, None).unwrap();
        assert_eq!(c.storage.url.to_string(), DEFAULT_STORAGE_URL);
    }

    #[test]
    fn legacy_single_mode() {
        let c = Config::from_legacy(&[], Some("backups"), Some("/data/single.db"), None).unwrap();
        let single = c.single.clone().unwrap();
        assert_eq!(single.path, PathBuf::from("/data/single.db"));
        assert_eq!(single.prefix(&c.storage.root), "databases/single");
        assert!(c.watch.is_empty());

        let c = Config::from_legacy(&[], Some("backups"), Some("/data/legacy.db"), Some("legacy-system")).unwrap();
        let single = c.single.unwrap();
        assert_eq!(single.prefix("databases"), "databases/legacy-system");
    }

    #[test]
    fn legacy_errors_name_the_flag() {
        let cases: Vec<(Result<Config, ConfigError>, &str)> = vec![
            (
                Config::from_legacy(&["a,,b".into()], None, None, None),
                "-watch-dir: entry 2 of \"a,,b\" is empty (separate directories with single commas)",
            ),
            (
                Config::from_legacy(&["a,".into()], None, None, None),
                "-watch-dir: entry 2 of \"a,\" is empty (separate directories with single commas)",
            ),
            (
                Config::from_legacy(&[], None, None, None),
                "-watch-dir: give -watch-dir DIR[,DIR...] (directory mode) or -dsn FILE (legacy single-database mode)",
            ),
            (
                Config::from_legacy(&["a".into()], None, Some("x.db"), None),
                "-dsn: cannot be combined with -watch-dir (use one mode at a time)",
            ),
            (Config::from_legacy(&["a".into()], None, None, Some("n")), "-db-name: only applies together with -dsn"),
            (
                Config::from_legacy(&[], None, Some("x.db"), Some("../up")),
                "-db-name: prefix \"../up\" has a \"..\" segment; relative path segments are not allowed",
            ),
            (
                Config::from_legacy(&[], None, Some("/data/dé jà.db"), None),
                "-dsn: cannot derive a storage name from \"/data/dé jà.db\"; give -db-name NAME",
            ),
            (
                Config::from_legacy(&["a".into()], Some("My Bucket"), None, None),
                "-bucket: \"My Bucket\" is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)",
            ),
            (
                Config::from_legacy(&["a".into()], Some("gs://b"), None, None),
                "-bucket: unknown scheme \"gs\" in \"gs://b\" (expected file://, s3:// or memory://)",
            ),
            (
                Config::from_legacy(&["a,a/".into()], None, None, None),
                "-watch-dir: \"a/\" is the same directory as watch[0] (\"a\")",
            ),
        ];
        for (got, want) in cases {
            match got {
                Ok(c) => panic!("accepted, want {want:?}: {c:?}"),
                Err(e) => {
                    assert!(matches!(e, ConfigError::Flag { .. }), "{e:?}");
                    assert_eq!(e.to_string(), want);
                }
            }
        }
    }

    #[test]
    fn storage_urls_roundtrip() {
        for s in ["file://./replicas", "file:///var/backups", "s3://bucket", "s3://bucket/a/b", "memory://"] {
            assert_eq!(StorageUrl::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(StorageUrl::parse("s3://bucket/a/").unwrap().to_string(), "s3://bucket/a");
        assert!(StorageUrl::parse("file://").is_err());
        assert!(StorageUrl::parse("memory://x").is_err());
        assert!(StorageUrl::parse("s3://bucket//x").is_err());
        assert!(StorageUrl::parse("s3://key:secret@bucket").is_err());
    }
}
