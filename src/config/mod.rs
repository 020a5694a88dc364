//! Configuration: the TOML model of `litefleet daemon --config <file>` and its
//! defaults. Its validation is `check`, the line and key of a mistake `locate`, the
//! seed's flag mode (`-watch-dir`, `-bucket`, `-dsn`, `-db-name`) mapped onto the same
//! model `legacy`, and the start-up line that shows it without secrets `summary`.
//!
//! Defaults that belong to a part of the daemon are defined there and only referred
//! to here (`replicate::DEFAULT_SYNC_INTERVAL`, `watch::DEFAULT_RESCAN_INTERVAL`,
//! `lifecycle::DEFAULT_LEVELS`, …); the ones defined here are the fleet's and the
//! daemon's own.
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
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

mod check;
pub mod legacy;
mod locate;
mod summary;
#[cfg(test)]
mod tests;

use self::locate::Locator;
pub use crate::hooks::HooksConfig;
pub use crate::ltx::PageEncoding;
pub use crate::redact::Secret;
use crate::tenant::{self, NonGuidPolicy, Prefix, TenantId};
use crate::{lifecycle, ownership, replicate, watch};

/// Replica location when the config names none: a `replicas` folder in the current
/// directory, so a minimal config (and `config.example.toml`) runs with no cloud at all.
pub const DEFAULT_STORAGE_URL: &str = "file://./replicas";
/// Tenants that may hold an open SQLite connection at once ("hot" tenants); the seed
/// recommends ~1000 clients per instance, we keep that many hot, not that many total.
pub const DEFAULT_MAX_OPEN_TENANTS: usize = 1000;
/// Released tenants that keep their connection open with no transaction ("parked"),
/// so that their application's next burst does not start as the database's only
/// connection (benchmarks §8, "Thirteenth run"): three descriptors each.
pub const DEFAULT_MAX_PARKED_TENANTS: usize = 64;
/// A tenant with no writes for this long is checkpointed and releases its connection.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(30);
/// Local working state (positions, temp files), relative to the current directory.
pub const DEFAULT_STATE_DIR: &str = ".litefleet";
/// Tenants opened in parallel at start-up, so 10,000 existing files don't stampede.
pub const DEFAULT_STARTUP_CONCURRENCY: usize = 32;
/// Time allowed for the final sync of every tenant after SIGINT/SIGTERM.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Dashboard and API address: loopback only unless the operator says otherwise.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 8080));
/// Log filter (tracing `EnvFilter` syntax).
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Shortest allowed rescan interval: a sweep of 10,000 files every second would be the
/// polling this design exists to avoid.
pub const MIN_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest duration any key accepts: ten years is past every sensible setting, and far
/// from where adding it to a clock or multiplying it overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Longest `replication.busy_timeout`: SQLite takes it as an `int` of milliseconds.
pub const MAX_BUSY_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
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
    /// Client-side encryption of every replica file (`[encryption]`); unset means
    /// none. Encrypted replicas cannot be restored by `litestream restore`.
    pub encryption: Option<EncryptionConfig>,
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
    /// Restore jobs run by the daemon through its API (`[restore]`).
    pub restore: RestoreConfig,
    /// The fleet change log a standby reads (`[change_log]`), off by default.
    pub change_log: ChangeLogConfig,
    /// `litefleet standby` (`[standby]`): where it keeps its copies and how it polls.
    pub standby: StandbyConfig,
    /// A sandboxed WebAssembly hook called when tenants appear and go (`[hooks]`);
    /// unset means no hook. See `crate::hooks` and docs/hooks.md.
    pub hooks: Option<HooksConfig>,
    /// The seed's legacy single-database mode (`-dsn PATH [-db-name NAME]`); only the
    /// flag mode sets it, never the file.
    #[serde(skip)]
    pub single: Option<SingleDb>,
    /// Where this config came from, to name the line of a value found unusable later.
    #[serde(skip)]
    pub origin: Origin,
}

/// Where a config came from: a file's name and text, or the seed's flags. It lets a
/// value that turns out unusable at start-up (a watch directory that does not exist, a
/// hook module that cannot be read) be named by file, line and key like a parse error
/// ([`Config::error_at`]). Two configs are equal whatever their origin, and its `Debug`
/// shows the name only (the text holds credentials).
#[derive(Clone, Default)]
pub struct Origin {
    /// The file name as given (`""`: built in code).
    name: String,
    /// The file's text (empty for flags and configs built in code).
    text: std::sync::Arc<str>,
    /// Made from the seed's flags (keys are then named by their flag).
    flags: bool,
}

impl Origin {
    /// A config made from the seed's flags.
    pub fn flags() -> Origin {
        Origin { flags: true, ..Origin::default() }
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin").field("name", &self.name).field("flags", &self.flags).finish_non_exhaustive()
    }
}

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
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
    pub prefix: Option<Prefix>,
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

/// `[encryption]`: every LTX file is encrypted (AES-256-GCM, see
/// `crate::storage::crypt`) before it leaves the machine, with the key `key_id` of a
/// keyring read from `keys_file` or the environment variable `keys_env`. Every key of
/// the keyring opens the files it encrypted, so keys rotate by adding a key and
/// pointing `key_id` at it. The keyring itself is read by the daemon at start-up (this
/// module does no I/O): one `<id> <key>` per line, as `litefleet keygen` prints it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptionConfig {
    /// A file holding the keyring (mode 600, readable by the daemon only).
    pub keys_file: Option<PathBuf>,
    /// An environment variable holding the keyring text (one or more lines).
    pub keys_env: Option<String>,
    /// The id of the key new files are encrypted with; unset means the keyring's only
    /// key (an error when it holds several).
    pub key_id: Option<String>,
}

/// Where replicas go (`[storage]`). Credentials left out here come from each service's
/// usual environment variables (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`,
/// `AZURE_STORAGE_*`, ssh's own files and agent), read by the storage
/// module at run time. Each key applies to the services named in its doc; `check` refuses the rest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `file://<path>`, `s3://<bucket>[/<path>]`, `gs://<bucket>[/<path>]`,
    /// `abs://[<account>@]<container>[/<path>]`, `sftp://<user>@<host>[:<port>]/<path>`
    /// or `memory://` (tests).
    pub url: StorageUrl,
    /// Endpoint of an S3-compatible server (MinIO, Garage, R2…), a GCS emulator or
    /// Azurite (`http://127.0.0.1:10000/devstoreaccount1`); unset means the service
    /// itself (or `AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`). S3, GCS, Azure.
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
    /// GCS service-account key file (JSON); unset means `GOOGLE_APPLICATION_CREDENTIALS`,
    /// else gcloud's application-default credentials or the VM's metadata server. GCS.
    pub credentials_file: Option<PathBuf>,
    /// Azure storage account key; unset means `AZURE_STORAGE_KEY`. Never printed. Azure.
    pub account_key: Option<Secret>,
    /// Azure SAS token; unset means `AZURE_STORAGE_SAS_TOKEN`. Never printed. Azure.
    pub sas_token: Option<Secret>,
    /// Azure connection string; unset means `AZURE_STORAGE_CONNECTION_STRING`. Never
    /// printed. Azure.
    pub connection_string: Option<Secret>,
    /// SSH private key file; unset leaves the choice to ssh (agent, `~/.ssh/id_*`,
    /// `~/.ssh/config`). SFTP.
    pub ssh_key: Option<PathBuf>,
    /// ssh's `StrictHostKeyChecking`: `yes` (the host must be in `~/.ssh/known_hosts`),
    /// `accept-new` (trust on first use) or `no`. SFTP.
    #[serde(deserialize_with = "de_opt_host_key_checking")]
    pub strict_host_key_checking: Option<String>,
    /// Prefix under the bucket or folder for every replica (the seed's `databases/`).
    /// `""` puts tenants at the top.
    pub root: Prefix,
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
            credentials_file: None,
            account_key: None,
            sas_token: None,
            connection_string: None,
            ssh_key: None,
            strict_host_key_checking: None,
            root: Prefix::parse(tenant::DEFAULT_ROOT).unwrap_or_default(),
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
    /// `gs://<bucket>[/<path>]`: Google Cloud Storage.
    Gcs {
        /// The bucket name.
        bucket: String,
        /// A validated prefix inside the bucket, `""` for none.
        path: String,
    },
    /// `abs://[<account>@]<container>[/<path>]`: Azure Blob Storage.
    Azure {
        /// The storage account (else `AZURE_STORAGE_ACCOUNT`, or the connection
        /// string's).
        account: Option<String>,
        /// The container.
        container: String,
        /// A validated prefix inside the container, `""` for none.
        path: String,
    },
    /// `sftp://<user>@<host>[:<port>]/<path>`: a folder on an SSH server (the path is
    /// absolute there, as in Litestream).
    Sftp {
        /// The login user.
        user: String,
        /// Host name or address.
        host: String,
        /// TCP port; `None` means ssh's (22, or `~/.ssh/config`'s).
        port: Option<u16>,
        /// A validated path on the server, `""` for `/`.
        path: String,
    },
    /// `memory://`: an in-process store for tests; lost at exit.
    Memory,
}

impl StorageUrl {
    /// Parses a replica URL (the forms of [`StorageUrl`]), with a message that says
    /// what to write instead when it is wrong.
    pub fn parse(s: &str) -> Result<StorageUrl, String> {
        let Some((scheme, rest)) = s.split_once("://") else {
            if crate::redact::has_userinfo(s) {
                return Err(format!("{:?}: {}", crate::redact::userinfo(s), crate::storage::CREDENTIALS_IN_URL));
            }
            return Err(format!(
                "{s:?} is not a URL (try \"file://{s}\" for a local folder or \"s3://{s}\" for a bucket)"
            ));
        };
        // A user is part of the address on these services; a password never is.
        let with_user = matches!(scheme, "abs" | "sftp");
        let refused = if with_user { crate::redact::has_password(s) } else { crate::redact::has_userinfo(s) };
        if refused {
            return Err(format!("{:?}: {}", crate::redact::userinfo(s), crate::storage::CREDENTIALS_IN_URL));
        }
        let path_of = |path: &str| {
            if path.is_empty() {
                Ok(String::new())
            } else {
                tenant::validate_prefix(path).map_err(|e| format!("in {s:?}: {e}"))
            }
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // `[user@]host[:port]`, for the schemes that have one.
        let address = |what: &str| -> Result<(Option<String>, String, Option<u16>), String> {
            let (user, hostport) = match authority.rsplit_once('@') {
                Some((u, h)) => (Some(u.to_owned()), h),
                None => (None, authority),
            };
            let (host, port) = match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| format!("{s:?}: port {p:?} is not a number"))?)),
                None => (hostport, None),
            };
            if host.is_empty() || user.as_deref() == Some("") {
                return Err(format!("{s:?} names no {what}"));
            }
            Ok((user, host.to_owned(), port))
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(format!("{s:?} names no folder (try \"file://./replicas\")"));
                }
                Ok(StorageUrl::File { path: PathBuf::from(rest) })
            }
            "s3" => {
                validate_bucket(authority)?;
                Ok(StorageUrl::S3 { bucket: authority.to_owned(), path: path_of(path)? })
            }
            "gs" => match address("bucket (gs://<bucket>/<path>)")? {
                (None, bucket, None) => Ok(StorageUrl::Gcs { bucket, path: path_of(path)? }),
                _ => Err(format!("{s:?}: a bucket name has no user or port (gs://<bucket>/<path>)")),
            },
            "abs" => match address("container (abs://<account>@<container>/<path>)")? {
                (account, container, None) => Ok(StorageUrl::Azure { account, container, path: path_of(path)? }),
                _ => Err(format!("{s:?}: a container name has no port (abs://<account>@<container>/<path>)")),
            },
            "sftp" => match address("host (sftp://<user>@<host>[:<port>]/<path>)")? {
                (Some(user), host, port) => Ok(StorageUrl::Sftp { user, host, port, path: path_of(path)? }),
                (None, ..) => Err(format!("{s:?} names no user (sftp://<user>@<host>[:<port>]/<path>)")),
            },
            "memory" if rest.is_empty() => Ok(StorageUrl::Memory),
            "memory" => Err(format!("{s:?}: write just \"memory://\"")),
            other => Err(format!(
                "unknown scheme \"{other}\" in {s:?} (expected file://, s3://, gs://, abs://, sftp:// or memory://)"
            )),
        }
    }

    /// True for `s3://` URLs, the only ones the S3 keys of `[storage]` apply to.
    pub fn is_s3(&self) -> bool {
        matches!(self, StorageUrl::S3 { .. })
    }

    /// The URL's scheme (`s3`, `abs`, …).
    pub fn scheme(&self) -> &'static str {
        match self {
            StorageUrl::File { .. } => "file",
            StorageUrl::S3 { .. } => "s3",
            StorageUrl::Gcs { .. } => "gs",
            StorageUrl::Azure { .. } => "abs",
            StorageUrl::Sftp { .. } => "sftp",
            StorageUrl::Memory => "memory",
        }
    }

    /// The seed's `bucket` (status document, start-up line): the bucket or container,
    /// the host of SFTP, the folder of `file://`.
    pub fn bucket(&self) -> String {
        match self {
            StorageUrl::S3 { bucket, .. } | StorageUrl::Gcs { bucket, .. } => bucket.clone(),
            StorageUrl::Azure { container, .. } => container.clone(),
            StorageUrl::Sftp { host, .. } => host.clone(),
            StorageUrl::File { path } => path.display().to_string(),
            StorageUrl::Memory => "memory".to_owned(),
        }
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
        let slash = |p: &str| if p.is_empty() { String::new() } else { format!("/{p}") };
        let at = |u: &Option<String>| u.as_ref().map(|u| format!("{u}@")).unwrap_or_default();
        match self {
            StorageUrl::File { path } => write!(f, "file://{}", path.display()),
            StorageUrl::S3 { bucket, path } => write!(f, "s3://{bucket}{}", slash(path)),
            StorageUrl::Gcs { bucket, path } => write!(f, "gs://{bucket}{}", slash(path)),
            StorageUrl::Azure { account, container, path } => {
                write!(f, "abs://{}{container}{}", at(account), slash(path))
            }
            StorageUrl::Sftp { user, host, port, path } => {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                write!(f, "sftp://{user}@{host}{port}{}", slash(path))
            }
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
        return Ok(());
    }
    if let Some(at) = name.rfind('@') {
        // `user:password@bucket`: never echo what is before the '@'.
        return Err(format!("\"***{}\": {}", &name[at..], crate::storage::CREDENTIALS_IN_URL));
    }
    Err(format!(
        "{name:?} is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)"
    ))
}

/// How each tenant is replicated (`[replication]`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Busy tenants ship at most this often (bounded PUT cost); the first change after
    /// idle ships at once (low lag).
    #[serde(with = "humantime_serde")]
    pub sync_interval: Duration,
    /// A busy tenant gets a passive checkpoint at least this often; `"0s"` disables the
    /// time trigger (the page-count trigger remains).
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// WAL pages that trigger a passive checkpoint.
    pub min_checkpoint_pages: u64,
    /// WAL pages that force a TRUNCATE checkpoint, so a WAL never grows without bound;
    /// 0 disables it.
    pub truncate_pages: u64,
    /// How long our connection waits on a locked database.
    #[serde(with = "humantime_serde")]
    pub busy_timeout: Duration,
    /// How LTX page frames are compressed.
    pub page_encoding: PageEncoding,
    /// At most this many tenants hold an open SQLite connection ("hot"); the others are
    /// cold and cost no file descriptor.
    pub max_open_tenants: usize,
    /// At most this many released tenants keep their connection open with no
    /// transaction ("parked") for `idle_after`; 0: none.
    pub max_parked_tenants: usize,
    /// A tenant with no writes for this long is checkpointed and released (goes cold).
    #[serde(with = "humantime_serde")]
    pub idle_after: Duration,
    /// Local working state, relative to the current directory unless absolute; never
    /// inside a watch directory. `None` (only `litefleet replicate` without
    /// `--state-dir`): no local state, a restart recovers the position from the replica.
    pub state_dir: Option<PathBuf>,
    /// Refuse databases in rollback-journal mode instead of switching them to WAL (only
    /// `litefleet replicate --no-wal-switch` sets it).
    #[serde(skip)]
    pub refuse_rollback_journal: bool,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            sync_interval: replicate::DEFAULT_SYNC_INTERVAL,
            checkpoint_interval: replicate::DEFAULT_CHECKPOINT_INTERVAL,
            min_checkpoint_pages: replicate::DEFAULT_MIN_CHECKPOINT_PAGES,
            truncate_pages: replicate::DEFAULT_TRUNCATE_PAGES,
            busy_timeout: replicate::DEFAULT_BUSY_TIMEOUT,
            page_encoding: PageEncoding::default(),
            max_open_tenants: DEFAULT_MAX_OPEN_TENANTS,
            max_parked_tenants: DEFAULT_MAX_PARKED_TENANTS,
            idle_after: DEFAULT_IDLE_AFTER,
            state_dir: Some(PathBuf::from(DEFAULT_STATE_DIR)),
            refuse_rollback_journal: false,
        }
    }
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
    /// This daemon's name among the hosts sharing the storage (default: the host name).
    /// Every daemon writing to one storage needs its own.
    pub host_id: String,
    /// One writer per tenant prefix among hosts sharing the storage (`crate::ownership`):
    /// `auto` (where the storage can fence writers), `on` (refuse to start where it
    /// cannot), `off` (this daemon is the only writer).
    pub ownership: ownership::Mode,
    /// How often this host rewrites its heartbeat.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// A host whose heartbeat has not changed for this long is dead: its prefixes may
    /// be taken over. At least three heartbeat intervals.
    #[serde(with = "humantime_serde")]
    pub owner_expiry: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            non_guid: NonGuidPolicy::default(),
            rescan_interval: watch::DEFAULT_RESCAN_INTERVAL,
            startup_concurrency: DEFAULT_STARTUP_CONCURRENCY,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            poll: false,
            poll_interval: watch::DEFAULT_POLL_INTERVAL,
            host_id: ownership::default_host_id(),
            ownership: ownership::Mode::default(),
            heartbeat_interval: ownership::DEFAULT_HEARTBEAT_INTERVAL,
            owner_expiry: ownership::DEFAULT_OWNER_EXPIRY,
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
            levels: lifecycle::DEFAULT_LEVELS.to_vec(),
            snapshot_interval: lifecycle::DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: lifecycle::DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: lifecycle::DEFAULT_L0_RETENTION,
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

/// Restore jobs the daemon runs for `POST /api/clients/{id}/restores` (`[restore]`):
/// copies of a tenant at a point in time, and forks (a new tenant in a watch directory).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreConfig {
    /// Where `copy` restores are written (`<id>-<txid>.db`); unset: copy restores are
    /// refused. Never inside a watch directory (a copy would become a tenant).
    pub dir: Option<PathBuf>,
    /// Restore jobs running at once, fleet-wide; more wait in a queue.
    pub concurrency: usize,
}

impl Default for RestoreConfig {
    fn default() -> Self {
        RestoreConfig { dir: None, concurrency: DEFAULT_RESTORE_CONCURRENCY }
    }
}

/// Restore jobs running at once: a restore is bound by the network and one core.
pub const DEFAULT_RESTORE_CONCURRENCY: usize = 2;

/// The fleet change log (`[change_log]`, see `crate::changes`): every `interval` in
/// which tenants shipped files, one small object under `_litefleet/changes/` naming
/// them, so a standby learns what changed without listing every tenant.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChangeLogConfig {
    /// Off by default: it costs one PUT per interval in which something was written.
    pub enabled: bool,
    /// How often pending changes are written (one object each time, if any).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// How long an entry stays before this host deletes it (a standby down for longer
    /// lists the whole storage once when it comes back).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for ChangeLogConfig {
    fn default() -> Self {
        ChangeLogConfig { enabled: false, interval: Duration::from_secs(1), retention: Duration::from_secs(600) }
    }
}

/// `litefleet standby` (`[standby]`, see `crate::standby`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StandbyConfig {
    /// Where the copies live, laid out like `restore --all`'s output
    /// (`<dir prefix>/<id>.db`, each with its `-follow` state). Required by the standby.
    pub dir: Option<PathBuf>,
    /// How often the change log is read (one LIST, plus one GET per new entry).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Without a change log (a Litestream-written storage, or `[change_log]` off on the
    /// primary): how often the whole storage is listed to find changes.
    #[serde(with = "humantime_serde")]
    pub scan_interval: Duration,
    /// With a change log: a listing of the whole storage this often anyway, as a safety
    /// net ("0s": never).
    #[serde(with = "humantime_serde")]
    pub full_scan_interval: Duration,
    /// Tenants restored or caught up at once.
    pub concurrency: usize,
}

impl Default for StandbyConfig {
    fn default() -> Self {
        StandbyConfig {
            dir: None,
            poll_interval: Duration::from_secs(1),
            scan_interval: Duration::from_secs(60),
            full_scan_interval: Duration::from_secs(3600),
            concurrency: 16,
        }
    }
}

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

/// Log line format (`[log] format`, `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One database replicated on its own: the seed's legacy mode (`-dsn PATH [-db-name
/// NAME]`) and `litefleet replicate DB URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleDb {
    /// The database file, relative to the current directory unless absolute.
    pub path: PathBuf,
    /// Its replica's place below the storage root: `-db-name`, or else the file stem;
    /// [`Prefix::none`] for `litefleet replicate` (the URL is the replica).
    pub name: Prefix,
}

impl SingleDb {
    /// Its storage prefix: `<root>/<name>`.
    pub fn prefix(&self, root: &Prefix) -> Prefix {
        root.join(&self.name)
    }

    /// Its tenant id, as logs and the board show it: the name's last segment, else the
    /// file stem (sanitized), else `database`.
    pub fn id(&self) -> TenantId {
        let stem = self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let sanitized: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
            .collect();
        [self.name.last_segment(), &sanitized, "database"]
            .into_iter()
            .find_map(|s| TenantId::from_stem(s).ok())
            .unwrap_or_else(|| unreachable!("\"database\" is a valid tenant name"))
    }
}

/// A configuration mistake, or a config file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read config", path.display())]
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
    /// A value that parsed but cannot be used (`prod.toml:7: watch[0].dir: cannot use
    /// watch directory …: No such file or directory`): where it is; why is the source.
    #[error("{origin}{}: {key}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Unusable {
        /// The file name (`config` for one built in code, `flags` for the seed's flags).
        origin: String,
        /// 1-based line of the key, when there is a file.
        line: Option<usize>,
        /// Dotted path of the key, or the flag that set it.
        key: String,
        /// Why it cannot be used.
        source: Box<dyn std::error::Error + Send + Sync>,
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
            ConfigError::Invalid { line, .. } | ConfigError::Unusable { line, .. } => *line,
            _ => None,
        }
    }
    /// The dotted key path of the mistake, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => key.as_deref(),
            ConfigError::Unusable { key, .. } => Some(key),
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
        let mut config: Config = toml::from_str(text).map_err(|e| locator.serde_error(origin, &e))?;
        config.first_problem().map_or(Ok(()), |p| Err(locator.problem_error(origin, p)))?;
        config.origin = Origin { name: origin.to_owned(), text: text.into(), flags: false };
        Ok(config)
    }

    /// `source` as the reason the value at `key` (a dotted path: `watch[0].dir`,
    /// `hooks.module`) cannot be used, named by file and line — or by the flag that set
    /// it in the seed's flag mode.
    pub fn error_at(&self, key: &str, source: impl std::error::Error + Send + Sync + 'static) -> ConfigError {
        let o = &self.origin;
        let (origin, line, key) = if o.flags {
            ("flags".to_owned(), None, legacy::flag_of(key).to_owned())
        } else if o.text.is_empty() {
            ("config".to_owned(), None, key.to_owned())
        } else {
            (o.name.clone(), Locator::new(&o.text).line_of(key), key.to_owned())
        };
        ConfigError::Unusable { origin, line, key, source: Box::new(source) }
    }

    /// Validates a config built in code (errors have no line; their origin is `config`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.first_problem() {
            None => Ok(()),
            Some(p) => Err(Locator::new("").problem_error("config", p)),
        }
    }
}

fn default_extensions() -> Vec<String> {
    tenant::DEFAULT_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect()
}

fn de_opt_prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Prefix>, D::Error> {
    let p = String::deserialize(d)?;
    Prefix::parse(&p).map(Some).map_err(serde::de::Error::custom)
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
    if crate::redact::has_userinfo(&e) {
        return Err(serde::de::Error::custom(format!(
            "{:?}: {}",
            crate::redact::userinfo(&e),
            crate::storage::CREDENTIALS_IN_URL
        )));
    }
    let ok = (e.starts_with("http://") || e.starts_with("https://"))
        && e.len() > "https://".len()
        && !e.contains(char::is_whitespace);
    if ok {
        Ok(Some(e.trim_end_matches('/').to_owned()))
    } else {
        Err(serde::de::Error::custom(format!("{e:?} is not an http(s) URL (like \"http://127.0.0.1:9000\")")))
    }
}

fn de_opt_host_key_checking<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = String::deserialize(d)?;
    match v.as_str() {
        "yes" | "accept-new" | "no" => Ok(Some(v)),
        _ => Err(serde::de::Error::custom(format!(
            "{v:?}: use \"yes\", \"accept-new\" or \"no\" (ssh's StrictHostKeyChecking)"
        ))),
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
    Ok(if t.is_empty() { None } else { Some(Secret::new(t)) })
}
