//! Object storage: building an opendal `Operator` from a replica URL (`services`), and
//! the replica layout below a replica path — Litestream v0.5's, so either tool can read
//! the other's backups:
//!
//! * S3: `<path>/<level as %04x>/<min %016x>-<max %016x>.ltx`
//! * a local folder, GCS, Azure Blob, SFTP (and memory):
//!   `<path>/ltx/<level decimal>/<min>-<max>.ltx`
//!
//! S3 and GCS objects carry the `litestream-timestamp` metadata (RFC 3339, the LTX
//! header time), Azure blobs `x-ms-meta-litestreamtimestamp`; folder files get the
//! header time as their mtime. Every call goes through opendal's retry (with backoff
//! and jitter) and timeout layers, and opendal's metrics layer (durations, bytes and
//! errors per operation, in the shared `metrics` recorder). This module never
//! interprets LTX bytes beyond file names, and never deletes anything on its own
//! initiative. What a list of files means (the restore chain, the window) is
//! [`catalog`]'s.
//!
//! With a keyring ([`Storage::with_keyring`], `[encryption]`) every LTX file is sealed
//! ([`crypt`]) before upload, by [`Replica::put`] and [`Upload`] alike, and every read
//! ([`Replica::read`], [`Replica::read_range`], [`Replica::reader`], [`RangeReader`])
//! opens what it finds sealed with whichever key of the keyring sealed it; plain LTX
//! files (written before encryption was turned on) read as before. A sealed object
//! found without a keyring is an error naming it, never bytes handed on. Objects keep
//! their `.ltx` names and timestamp metadata; a listing's sizes are stored sizes.
//! litefleet's own objects under `_litefleet/` ([`meta`]) stay plain.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod catalog;
pub mod crypt;
#[cfg(test)]
mod crypt_tests;
pub mod meta;
mod reads;
mod services;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::{ChunkWriter, ObjectReader, RangeReader, UPLOAD_PART, Upload, is_read_failure};

use opendal::layers::{MetricsLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator, services as odal};

pub use self::crypt::Keyring;
pub use self::services::Service;
use crate::durable;
use crate::ltx::{self, TxId};

/// Timeout of a whole storage call (a large upload included).
pub const DEFAULT_OP_TIMEOUT: Duration = Duration::from_secs(120);
/// Timeout of one network read or write inside a call.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed call before its error is returned (opendal retries only
/// temporary errors: timeouts, 5xx, throttling, connection resets).
pub const DEFAULT_RETRIES: usize = 4;
/// S3 region when neither the URL, the config nor `AWS_REGION` gives one.
pub const DEFAULT_REGION: &str = "us-east-1";
/// User-metadata key Litestream reads for `-timestamp` restores.
pub const TIMESTAMP_METADATA_KEY: &str = "litestream-timestamp";
/// Why a URL with `user:password@` is refused (it would be printed in every place the
/// URL is shown).
pub const CREDENTIALS_IN_URL: &str = "credentials in a URL are refused (they would be printed wherever the URL is shown): set them in [storage] or the environment (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_KEY…)";
/// A temporary file (a write's staging copy on a folder replica) older than this was
/// left by a crash, and is removed by the lifecycle's first listing.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
/// Objects larger than this are sealed and opened on a blocking thread, not on the
/// runtime's.
const BLOCKING_CRYPT: usize = 1 << 20;
/// The highest level a replica can hold (Litestream's snapshot level).
pub const MAX_LEVEL: u32 = ltx::SNAPSHOT_LEVEL;

/// Errors from storage. `Op` names the operation and the object; opendal's error is
/// its source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("replica url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("{what}")]
    Op {
        what: String,
        #[source]
        source: opendal::Error,
    },
    /// A conditional create found its name taken.
    #[error("{what}: the name is taken")]
    Exists { what: String },
    /// Another host owns the prefix (see `crate::ownership`): this host must not write.
    /// `fenced`: this host owned it and lost it (taken over while it was paused or cut
    /// off); otherwise it is held by the other host.
    #[error(
        "{prefix}: {} {}",
        if *fenced { "fenced: taken over by" } else { "held by" },
        host.as_deref().unwrap_or("another host")
    )]
    NotOwner { prefix: String, host: Option<String>, fenced: bool },
    /// The ownership of prefixes keeps this host from writing (not established yet,
    /// or it cannot be).
    #[error("{0}")]
    Gate(String),
    /// A local file operation of a folder replica failed.
    #[error("{what}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// An object could not be sealed or opened: a key missing or wrong, or the
    /// object altered or torn ([`Error::is_damage`]). `what` names the object.
    #[error("{what}")]
    Crypt {
        what: String,
        #[source]
        source: crypt::Error,
    },
    /// The keyring cannot be loaded (`[encryption]`); the message names where.
    #[error("{0}")]
    Keys(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// When this error says another host owns the prefix: that host (if known) and
    /// whether this host was fenced (it owned the prefix and lost it).
    pub fn not_owner(&self) -> Option<(Option<&str>, bool)> {
        match self {
            Error::NotOwner { host, fenced, .. } => Some((host.as_deref(), *fenced)),
            _ => None,
        }
    }

    /// Whether the object's bytes are damaged: an encrypted object altered, torn or
    /// extended (not a key missing from the keyring, nor a failed request).
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Crypt { source, .. } if source.is_damage())
    }

    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Op { source, .. } if source.kind() == ErrorKind::NotFound)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// How LTX files are laid out below a replica path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `<path>/<level %04x>/…` — Litestream's S3 (and OSS) layout.
    Hex,
    /// `<path>/ltx/<level>/…` — Litestream's layout for files, GCS, ABS, SFTP, WebDAV.
    Dir,
}

/// Settings for building storage beyond what the URL says (`[storage]`). Whatever is
/// left out falls back to each ecosystem's environment variables (see `services`).
/// Secrets here never print: `Debug` shows which are set, not their values.
#[derive(Clone, Default)]
pub struct Options {
    /// Endpoint of an S3-compatible server, a GCS emulator or Azurite
    /// (`http://127.0.0.1:9000`); else `?endpoint=`, `AWS_ENDPOINT_URL` (S3) or
    /// `STORAGE_EMULATOR_HOST` (GCS).
    pub endpoint: Option<String>,
    /// S3 region; else `?region=`, `AWS_REGION`, `AWS_DEFAULT_REGION` or us-east-1.
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`). Default: true.
    pub force_path_style: Option<bool>,
    /// S3 access key; else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// S3 secret key; else `AWS_SECRET_ACCESS_KEY`. Never logged.
    pub secret_access_key: Option<String>,
    /// GCS service-account key file; else `GOOGLE_APPLICATION_CREDENTIALS`.
    pub credentials_file: Option<String>,
    /// Azure shared key; else `AZURE_STORAGE_KEY`. Never logged.
    pub account_key: Option<String>,
    /// Azure SAS token; else `AZURE_STORAGE_SAS_TOKEN`. Never logged.
    pub sas_token: Option<String>,
    /// Azure connection string; else `AZURE_STORAGE_CONNECTION_STRING`. Never logged.
    pub connection_string: Option<String>,
    /// SSH private key file for SFTP; else ssh's own choice (agent, `~/.ssh`).
    pub ssh_key: Option<PathBuf>,
    /// ssh's `StrictHostKeyChecking` for SFTP: `yes` (default), `accept-new`, `no`.
    pub strict_host_key_checking: Option<String>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "***");
        f.debug_struct("Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("access_key_id", &set(&self.access_key_id))
            .field("secret_access_key", &set(&self.secret_access_key))
            .field("credentials_file", &self.credentials_file)
            .field("account_key", &set(&self.account_key))
            .field("sas_token", &set(&self.sas_token))
            .field("connection_string", &set(&self.connection_string))
            .field("ssh_key", &self.ssh_key)
            .field("strict_host_key_checking", &self.strict_host_key_checking)
            .finish()
    }
}

/// One storage location (a bucket and path, or a folder) holding any number of replicas.
#[derive(Clone)]
pub struct Storage {
    op: Operator,
    service: Service,
    layout: Layout,
    /// Path inside the operator below which replicas live ("" or "a/b/").
    base: String,
    /// Printable URL of the base without its query (no credentials), e.g. `s3://bkt/path`.
    location: String,
    /// The URL's query as `litefleet restore` needs it (`endpoint=…&region=…`), or "".
    query: String,
    /// Local root folder for the file backend (to set mtimes).
    fs_root: Option<PathBuf>,
    counters: Arc<Counters>,
    /// Asked before every replica write (see [`meta::Gate`]); `None`: single host.
    gate: Option<Arc<dyn meta::Gate>>,
    /// Keys that open sealed objects, and (when it has a current key) seal new ones.
    keyring: Option<Arc<Keyring>>,
}

/// Storage requests sent, by kind. Idle tenants must not move these.
#[derive(Debug, Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub bytes_put: AtomicU64,
    /// Requests for litefleet's own objects (heartbeats, ownership records): per host,
    /// not per tenant, and not in [`Counters::total`].
    pub meta: AtomicU64,
}

impl Counters {
    /// Total requests of every kind.
    pub fn total(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
            + self.gets.load(Ordering::Relaxed)
            + self.lists.load(Ordering::Relaxed)
            + self.deletes.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").field("url", &self.location).finish()
    }
}

/// An LTX file in a replica.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub level: u32,
    pub min_txid: TxId,
    pub max_txid: TxId,
    pub size: u64,
    /// When the object was written, as the listing reports it (S3 `LastModified`, the
    /// file's mtime — which `put` sets to the LTX header time on a folder); `None` when
    /// unknown. Retention ages files by it.
    pub created: Option<SystemTime>,
}

impl FileInfo {
    /// Whether the listed size is too small for any LTX file: the object was torn by an
    /// interrupted write (of an older version, or another tool) and is unusable.
    pub fn is_torn(&self) -> bool {
        self.size < ltx::MIN_FILE_SIZE
    }
}

impl Storage {
    /// Builds storage from a replica URL: `file:///abs/path`, `file://./relative`, a bare
    /// path, `s3://bucket/prefix?endpoint=…&region=…&force-path-style=true`,
    /// `gs://bucket/prefix`, `abs://[account@]container/prefix`,
    /// `sftp://user@host[:port]/path`, or `memory://name`
    /// (process-local, for tests). See `services` for credentials.
    pub fn from_url(url: &str, opts: &Options) -> Result<Storage> {
        let b = services::build(url, opts)?;
        let op =
            b.op.layer(TimeoutLayer::new().with_timeout(DEFAULT_OP_TIMEOUT).with_io_timeout(DEFAULT_IO_TIMEOUT)).layer(
                RetryLayer::new()
                    .with_max_times(DEFAULT_RETRIES)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5)),
            );
        // Outermost: one observation per call (retries included), into the global
        // `metrics` recorder that `/metrics` renders (a no-op until one is installed).
        let op = op.layer(MetricsLayer::default());
        Ok(Storage {
            op,
            service: b.service,
            layout: b.layout,
            base: b.base,
            location: b.location,
            query: b.query,
            fs_root: b.fs_root,
            counters: Arc::new(Counters::default()),
            gate: None,
            keyring: None,
        })
    }

    /// This storage with every replica write asking `gate` first, and uploads made
    /// conditional creates.
    pub fn with_gate(mut self, gate: Arc<dyn meta::Gate>) -> Storage {
        self.gate = Some(gate);
        self
    }

    /// This storage with a keyring: objects found sealed are opened with its keys, and
    /// when it has a current key every file uploaded from now on is sealed with it.
    pub fn with_keyring(mut self, keyring: Arc<Keyring>) -> Storage {
        self.keyring = Some(keyring);
        self
    }

    /// The keyring, if any.
    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_deref()
    }

    /// The id of the key new files are sealed with; `None`: uploads are plain LTX.
    pub fn sealing_key(&self) -> Option<&str> {
        self.keyring.as_deref().and_then(Keyring::current_id)
    }

    /// The service this storage is on.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The replica for a path below this storage (a tenant's prefix).
    pub fn replica(&self, prefix: impl AsRef<str>) -> Replica {
        let prefix = normalize_dir(prefix.as_ref());
        let rel = prefix.trim_end_matches('/').to_owned();
        Replica { storage: self.clone(), path: format!("{}{}", self.base, prefix), rel, claim: false }
    }

    /// The storage base's URL as `litefleet restore` takes it (no credentials; an S3
    /// endpoint, region and addressing style in its query).
    pub fn url(&self) -> String {
        with_query(&self.location, &self.query)
    }

    /// The storage base's URL without its query, for people (`s3://bkt/path`).
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Request counters (shared by every replica of this storage).
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// Replica paths (relative to the base) that hold LTX files, found by listing the
    /// storage recursively. Used by `tenants` to show replicas whose local file is gone.
    pub async fn discover(&self, prefix: &str) -> Result<Vec<String>> {
        Ok(self.list_tree(prefix).await?.into_keys().collect())
    }

    /// Every LTX file below `prefix`, grouped by replica path (relative to the base), in
    /// one recursive listing — a few paginated LISTs for a whole fleet instead of ten per
    /// tenant. Keys that are not LTX files in a level folder are ignored.
    pub async fn list_tree(&self, prefix: &str) -> Result<BTreeMap<String, Vec<FileInfo>>> {
        Ok(self.list_tree_and_temps(prefix).await?.0)
    }

    /// [`Storage::list_tree`], plus the keys of temporary files a crash left behind
    /// ([`durable::is_temp`], ours or Litestream's) that are older than
    /// [`STALE_TEMP_AGE`]: no write in progress takes that long, so they are garbage
    /// ([`Storage::remove_temps`]). Object stores have none (a PUT is atomic).
    pub async fn list_tree_and_temps(&self, prefix: &str) -> Result<(BTreeMap<String, Vec<FileInfo>>, Vec<String>)> {
        let start = format!("{}{}", self.base, normalize_dir(prefix));
        self.counters.lists.fetch_add(1, Ordering::Relaxed);
        let entries = self
            .op
            .list_with(&start)
            .recursive(true)
            .await
            .or_else(|e| if e.kind() == ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) })
            .map_err(|e| Error::Op { what: format!("list {}", self.location), source: e })?;
        let mut out: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
        let mut temps = Vec::new();
        let now = SystemTime::now();
        for e in entries {
            let Some((replica, level, min, max)) = self.split_key(e.path()) else {
                if is_stale_temp(&e, now) {
                    temps.push(e.path().to_owned());
                }
                continue;
            };
            let meta = e.metadata();
            let created = meta.last_modified().map(SystemTime::from);
            let rel = replica.strip_prefix(self.base.as_str()).unwrap_or(replica).trim_end_matches('/').to_owned();
            out.entry(rel).or_default().push(FileInfo {
                level,
                min_txid: min,
                max_txid: max,
                size: meta.content_length(),
                created,
            });
        }
        for files in out.values_mut() {
            files.sort_by_key(|f| (f.level, f.min_txid, f.max_txid));
        }
        Ok((out, temps))
    }

    /// Deletes temporary files found by [`Storage::list_tree_and_temps`] (best effort:
    /// one that is gone already is fine). Returns how many were removed.
    pub async fn remove_temps(&self, keys: &[String]) -> usize {
        let mut removed = 0;
        for key in keys {
            self.counters.deletes.fetch_add(1, Ordering::Relaxed);
            match self.op.delete(key).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove the stale temporary file {}/{key}: {e}", self.location),
            }
        }
        removed
    }

    /// `<replica>/<0000>/<min>-<max>.ltx` (Hex) or `<replica>/ltx/<0>/<min>-<max>.ltx`
    /// (Dir) → (replica path with trailing `/`, level, min, max).
    fn split_key<'k>(&self, key: &'k str) -> Option<(&'k str, u32, TxId, TxId)> {
        let (dir, file) = key.rsplit_once('/')?;
        let (min, max) = ltx::parse_filename(file)?;
        let (parent, level) = dir.rsplit_once('/').unwrap_or(("", dir));
        let (replica, level) = match self.layout {
            Layout::Hex if level.len() == 4 => (parent, u32::from_str_radix(level, 16).ok()?),
            Layout::Dir => {
                let replica = match parent.rsplit_once('/') {
                    Some((r, "ltx")) => r,
                    None if parent == "ltx" => "",
                    _ => return None,
                };
                (replica, level.parse().ok()?)
            }
            _ => return None,
        };
        if level > MAX_LEVEL {
            return None;
        }
        // Keep the trailing slash (empty for a replica at the root).
        let end = replica.len() + usize::from(!replica.is_empty());
        Some((&key[..end], level, min, max))
    }
}

/// Whether a listed entry is a temporary file ([`durable::is_temp`], ours or
/// Litestream's) older than [`STALE_TEMP_AGE`]: left by a crash, garbage.
fn is_stale_temp(e: &opendal::Entry, now: SystemTime) -> bool {
    let meta = e.metadata();
    let old = meta
        .last_modified()
        .map(SystemTime::from)
        .is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TEMP_AGE));
    durable::is_temp(e.name()) && meta.is_file() && old
}

/// One replica: the LTX files of one database under one path.
#[derive(Clone, Debug)]
pub struct Replica {
    storage: Storage,
    /// Path inside the operator, ending in `/` (or empty).
    path: String,
    /// The prefix relative to the storage base, without slashes at its ends.
    rel: String,
    /// Its writer replicates the tenant and may claim the prefix (see [`meta::Gate`]).
    claim: bool,
}

impl Replica {
    /// This replica for the tenant's replicator: a write may claim the prefix for this
    /// host (compaction and retention write only where this host owns it already).
    pub fn claiming(mut self) -> Replica {
        self.claim = true;
        self
    }

    /// Asks the gate, if any, whether this host may write here now (claiming the
    /// prefix if this is a [`Replica::claiming`] one and it is free):
    /// [`Error::NotOwner`] if not.
    pub async fn may_write(&self) -> Result<()> {
        match &self.storage.gate {
            Some(g) => g.check(&self.rel, self.claim).await,
            None => Ok(()),
        }
    }

    /// The replica's URL, as `litefleet restore` and `litestream restore` take it.
    pub fn url(&self) -> String {
        with_query(&self.location(), &self.storage.query)
    }

    /// The replica's URL without its query, for people (the seed's log lines).
    pub fn location(&self) -> String {
        let rel = self.path.strip_prefix(self.storage.base.as_str()).unwrap_or(&self.path);
        let mut u = format!("{}/{}", self.storage.location.trim_end_matches('/'), rel.trim_end_matches('/'));
        if u.ends_with('/') {
            u.pop();
        }
        u
    }

    /// The storage this replica lives in.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    fn level_dir(&self, level: u32) -> String {
        match self.storage.layout {
            Layout::Hex => format!("{}{level:04x}/", self.path),
            Layout::Dir => format!("{}ltx/{level}/", self.path),
        }
    }

    fn key(&self, level: u32, min: TxId, max: TxId) -> String {
        format!("{}{}", self.level_dir(level), ltx::format_filename(min, max))
    }

    /// Lists the LTX files at one level, sorted by (min, max). Keys that are not LTX
    /// file names are ignored, as Litestream does.
    pub async fn list(&self, level: u32) -> Result<Vec<FileInfo>> {
        let dir = self.level_dir(level);
        self.storage.counters.lists.fetch_add(1, Ordering::Relaxed);
        let entries = match self.storage.op.list(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::Op { what: format!("list {}", self.describe(&dir)), source: e }),
        };
        let mut out = Vec::new();
        for e in entries {
            let name = e.name();
            if let Some((min, max)) = ltx::parse_filename(name) {
                let meta = e.metadata();
                let created = meta.last_modified().map(SystemTime::from);
                out.push(FileInfo { level, min_txid: min, max_txid: max, size: meta.content_length(), created });
            }
        }
        out.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(out)
    }

    /// Lists every level, 0 through 9, in one recursive listing of the replica's path
    /// (one request per 1,000 files on S3, instead of one per level), sorted by
    /// (level, min, max).
    pub async fn list_all(&self) -> Result<Vec<FileInfo>> {
        Ok(self.list_all_and_temps().await?.0)
    }

    /// [`Replica::list_all`], plus the keys of stale temporary files under the
    /// replica's path (as [`Storage::list_tree_and_temps`] finds them), from the same
    /// listing.
    pub async fn list_all_and_temps(&self) -> Result<(Vec<FileInfo>, Vec<String>)> {
        self.storage.counters.lists.fetch_add(1, Ordering::Relaxed);
        let entries = match self.storage.op.list_with(&self.path).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::Op { what: format!("list {}", self.describe(&self.path)), source: e }),
        };
        let (mut out, mut temps, now) = (Vec::new(), Vec::new(), SystemTime::now());
        for e in entries {
            // Keys of replicas nested below this one's path belong to them.
            let Some((replica, level, min, max)) = self.storage.split_key(e.path()) else {
                if is_stale_temp(&e, now) {
                    temps.push(e.path().to_owned());
                }
                continue;
            };
            if replica == self.path {
                let meta = e.metadata();
                let created = meta.last_modified().map(SystemTime::from);
                out.push(FileInfo { level, min_txid: min, max_txid: max, size: meta.content_length(), created });
            }
        }
        out.sort_by_key(|f| (f.level, f.min_txid, f.max_txid));
        Ok((out, temps))
    }

    /// Deletes temporary files found by [`Replica::list_all_and_temps`]; see
    /// [`Storage::remove_temps`].
    pub async fn remove_temps(&self, keys: &[String]) -> usize {
        self.storage.remove_temps(keys).await
    }

    /// Uploads one LTX file, complete or not at all: on S3 one PUT (or a multipart
    /// upload, which appears only when completed), on GCS one upload, on Azure one Put
    /// Blob (each committed whole or not at all), all carrying the timestamp metadata
    /// Litestream reads; over SFTP under a temporary name in the same folder, then
    /// renamed over the final name; on a folder a temporary file in the same directory,
    /// its mtime set to the header time, fsynced and renamed into place
    /// ([`durable::publish`]) — a full disk or a crash leaves at most a temporary file,
    /// never a torn `.ltx`. Returns the stored size (the listed one: larger than
    /// `data` when the storage encrypts).
    pub async fn put(&self, level: u32, min: TxId, max: TxId, data: Vec<u8>, timestamp_ms: i64) -> Result<u64> {
        let key = self.key(level, min, max);
        let data = match self.storage.keyring.clone().filter(|k| k.current_id().is_some()) {
            Some(keyring) => {
                let id = crypt::Identity { level, min_txid: min, max_txid: max };
                let sealed = if data.len() > BLOCKING_CRYPT {
                    tokio::task::spawn_blocking(move || crypt::seal(&keyring, id, &data))
                        .await
                        .unwrap_or(Err(crypt::Error::Crypto))
                } else {
                    crypt::seal(&keyring, id, &data)
                };
                sealed.map_err(|source| Error::Crypt { what: format!("upload {}", self.describe(&key)), source })?
            }
            None => data,
        };
        let len = data.len() as u64;
        let ts = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
        self.may_write().await?;
        self.storage.counters.puts.fetch_add(1, Ordering::Relaxed);
        let metadata = match self.storage.service.timestamp_key() {
            Some(k) if self.storage.fs_root.is_none() => vec![(k.to_string(), rfc3339_nanos(ts))],
            _ => Vec::new(),
        };
        // With several hosts, never overwrite: a taken TXID is a fence.
        let fenced = self.storage.gate.as_ref().is_some_and(|g| g.fences());
        let existing = if fenced { durable::Existing::Keep } else { durable::Existing::Replace };
        match self.storage.write_object(&key, data, existing, Some(ts), metadata).await {
            Ok(()) => {}
            Err(Error::Exists { what }) => {
                if let Some(g) = &self.storage.gate {
                    g.taken(&self.rel).await?;
                }
                return Err(Error::Exists { what });
            }
            Err(e) => return Err(e),
        }
        self.storage.counters.bytes_put.fetch_add(len, Ordering::Relaxed);
        Ok(len)
    }

    /// Deletes LTX files. Only retention calls this; replication never deletes.
    pub async fn delete(&self, files: &[FileInfo]) -> Result<()> {
        if !files.is_empty() {
            self.may_write().await?;
        }
        for f in files {
            let key = self.key(f.level, f.min_txid, f.max_txid);
            self.storage.counters.deletes.fetch_add(1, Ordering::Relaxed);
            self.storage
                .op
                .delete(&key)
                .await
                .map_err(|e| Error::Op { what: format!("delete {}", self.describe(&key)), source: e })?;
        }
        Ok(())
    }

    /// Human name of an object for error messages: `<replica url>/<key below it>`.
    pub fn describe(&self, key: &str) -> String {
        let rel = key.strip_prefix(self.path.as_str()).unwrap_or(key);
        format!("{}/{}", self.location(), rel)
    }

    /// The display name of one file, for plans and errors.
    pub fn describe_file(&self, f: &FileInfo) -> String {
        self.describe(&self.key(f.level, f.min_txid, f.max_txid))
    }
}

/// `location?query`, or `location` when there is no query.
fn with_query(location: &str, query: &str) -> String {
    if query.is_empty() { location.to_owned() } else { format!("{location}?{query}") }
}

/// `a/b` → `a/b/`; `` → ``; leading slashes removed.
fn normalize_dir(p: &str) -> String {
    let p = p.trim_matches('/');
    if p.is_empty() { String::new() } else { format!("{p}/") }
}

/// `p` made absolute against the current directory, without `.` components (so URLs
/// shown to people and to `litestream restore` read `file:///srv/replicas`, not
/// `file:///srv/./replicas`).
fn absolute(p: &Path) -> Result<PathBuf> {
    Ok(std::path::absolute(p)?.components().filter(|c| !matches!(c, std::path::Component::CurDir)).collect())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        // Two hex digits, looked at as bytes: a `%` before a multi-byte character is
        // kept as it is (slicing the `str` there panicked: tests/fuzz.rs).
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let Some((hi, lo)) = b.get(i + 1).and_then(|&h| hex(h)).zip(b.get(i + 2).and_then(|&l| hex(l)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Process-wide named memory operators, so `memory://x` means the same store everywhere
/// in one process (replicator and restore in tests).
fn memory_operator(name: &str) -> Operator {
    static OPS: OnceLock<Mutex<HashMap<String, Operator>>> = OnceLock::new();
    let mut map = OPS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(name.to_string())
        .or_insert_with(|| {
            Operator::new(odal::Memory::default()).unwrap_or_else(|e| unreachable!("memory service always builds: {e}"))
        })
        .clone()
}

/// RFC 3339 with nanoseconds in UTC, as Go's `time.RFC3339Nano` prints it.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}
