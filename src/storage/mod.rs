//! Object storage: building an opendal `Operator` from a replica URL, and the replica
//! layout below a replica path — Litestream v0.5's, so either tool can read the other's
//! backups:
//!
//! * S3: `<path>/<level as %04x>/<min %016x>-<max %016x>.ltx`
//! * a local folder (and memory): `<path>/ltx/<level decimal>/<min>-<max>.ltx`
//!
//! S3 objects carry `x-amz-meta-litestream-timestamp` (RFC 3339, the LTX header time);
//! files get the header time as their mtime. Every call goes through opendal's retry
//! (with backoff and jitter) and timeout layers, and opendal's metrics layer (durations,
//! bytes and errors per operation, in the shared `metrics` recorder). This module never interprets LTX bytes
//! beyond file names, and never deletes anything on its own initiative. What a list of
//! files means (the restore chain, the window) is [`catalog`]'s.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod catalog;

use opendal::layers::{MetricsLayer, RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator, services};

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
pub const CREDENTIALS_IN_URL: &str = "credentials in a URL are refused (they would be printed wherever the URL is shown): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or [storage] access_key_id and secret_access_key";
/// A temporary file (a write's staging copy on a folder replica) older than this was
/// left by a crash, and is removed by the lifecycle's first listing.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);
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
    /// A local file operation of a folder replica failed.
    #[error("{what}")]
    Local {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the object asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Op { source, .. } if source.kind() == ErrorKind::NotFound)
    }
}

type Result<T> = std::result::Result<T, Error>;

/// How LTX files are laid out below a replica path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `<path>/<level %04x>/…` — Litestream's S3 (and OSS) layout.
    Hex,
    /// `<path>/ltx/<level>/…` — Litestream's layout for files, GCS, ABS, SFTP, WebDAV.
    Dir,
}

/// Settings for building storage beyond what the URL says. Credentials fall back to
/// the standard `AWS_*` environment variables.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// S3 endpoint (`http://127.0.0.1:9000`); else `?endpoint=` or `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// S3 region; else `?region=`, `AWS_REGION`, `AWS_DEFAULT_REGION` or us-east-1.
    pub region: Option<String>,
    /// Path-style addressing (`http://host/bucket/key`). Default: true.
    pub force_path_style: Option<bool>,
    /// S3 access key; else `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// S3 secret key; else `AWS_SECRET_ACCESS_KEY`. Never logged.
    pub secret_access_key: Option<String>,
}

/// One storage location (a bucket and path, or a folder) holding any number of replicas.
#[derive(Clone)]
pub struct Storage {
    op: Operator,
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
}

/// Storage requests sent, by kind. Idle tenants must not move these.
#[derive(Debug, Default)]
pub struct Counters {
    pub puts: AtomicU64,
    pub gets: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    pub bytes_put: AtomicU64,
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
    /// path, `s3://bucket/prefix?endpoint=…&region=…&force-path-style=true`, or
    /// `memory://name` (process-local, for tests).
    pub fn from_url(url: &str, opts: &Options) -> Result<Storage> {
        let bad = |reason: &str| Error::Url { url: crate::redact::userinfo(url), reason: reason.to_string() };
        if crate::redact::has_userinfo(url) || opts.endpoint.as_deref().is_some_and(crate::redact::has_userinfo) {
            return Err(bad(CREDENTIALS_IN_URL));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (bucket, path) = loc.split_once('/').unwrap_or((loc, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket name"));
            }
            let mut q: HashMap<String, String> = HashMap::new();
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                q.insert(k.to_ascii_lowercase().replace('_', "-"), percent_decode(v));
            }
            let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
            let endpoint = opts
                .endpoint
                .clone()
                .or_else(|| q.get("endpoint").cloned())
                .or_else(|| env("AWS_ENDPOINT_URL_S3"))
                .or_else(|| env("AWS_ENDPOINT_URL"));
            let region = opts
                .region
                .clone()
                .or_else(|| q.get("region").cloned())
                .or_else(|| env("AWS_REGION"))
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| DEFAULT_REGION.to_string());
            let path_style = match opts.force_path_style {
                Some(b) => b,
                None => match q.get("force-path-style").map(String::as_str) {
                    None | Some("true") | Some("1") | Some("") => true,
                    Some("false") | Some("0") => false,
                    Some(_) => return Err(bad("force-path-style must be true or false")),
                },
            };
            let key = opts.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
            let secret = opts.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
            // Whatever prints them by mistake (a library's debug line), logs show `***`.
            for s in [&key, &secret, &env("AWS_SESSION_TOKEN")].into_iter().flatten() {
                crate::redact::register(s);
            }
            let mut b = services::S3::default()
                .bucket(bucket)
                .root("/")
                .region(&region)
                .disable_config_load()
                .disable_ec2_metadata();
            if let Some(ep) = &endpoint {
                b = b.endpoint(ep);
            }
            if !path_style {
                b = b.enable_virtual_host_style();
            }
            match (key, secret) {
                (Some(k), Some(s)) => {
                    b = b.access_key_id(&k).secret_access_key(&s);
                    if let Some(t) = env("AWS_SESSION_TOKEN") {
                        b = b.session_token(&t);
                    }
                }
                (None, None) => b = b.skip_signature(),
                _ => return Err(bad("set both an access key id and a secret access key, or neither")),
            }
            let op = Operator::new(b).map_err(|e| Error::Op { what: format!("s3 bucket {bucket}"), source: e })?;
            let base = normalize_dir(path);
            let location = format!("s3://{bucket}/{}", base.trim_end_matches('/'));
            let query = match &endpoint {
                Some(ep) => format!("endpoint={ep}&region={region}&force-path-style={path_style}"),
                None => String::new(),
            };
            return Ok(Storage::new(op, Layout::Hex, base, (location, query), None));
        }
        if let Some(name) = url.strip_prefix("memory://") {
            let op = memory_operator(name);
            return Ok(Storage::new(op, Layout::Dir, String::new(), (url.to_string(), String::new()), None));
        }
        let path = match url.strip_prefix("file://") {
            Some(p) => p,
            None if url.contains("://") => return Err(bad("unknown scheme (use file://, s3:// or memory://)")),
            None => url,
        };
        if path.is_empty() {
            return Err(bad("empty path"));
        }
        let dir = absolute(Path::new(path))?;
        // Nothing is created until the first upload (a daemon that fails to start
        // writes nothing): the operator is rooted at the deepest folder that exists,
        // and the rest of the path is the base of every key. A path that can never
        // hold a folder fails now.
        let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
        if !existing.is_dir() {
            return Err(bad(&format!("{} is not a folder", existing.display())));
        }
        let base = normalize_dir(&dir.strip_prefix(existing).unwrap_or(Path::new("")).to_string_lossy());
        let root = existing.to_string_lossy().to_string();
        let op = Operator::new(services::Fs::default().root(&root))
            .map_err(|e| Error::Op { what: format!("folder {root}"), source: e })?;
        let location = format!("file://{}", dir.display());
        Ok(Storage::new(op, Layout::Dir, base, (location, String::new()), Some(existing.to_path_buf())))
    }

    fn new(
        op: Operator,
        layout: Layout,
        base: String,
        (location, query): (String, String),
        fs_root: Option<PathBuf>,
    ) -> Storage {
        let op =
            op.layer(TimeoutLayer::new().with_timeout(DEFAULT_OP_TIMEOUT).with_io_timeout(DEFAULT_IO_TIMEOUT)).layer(
                RetryLayer::new()
                    .with_max_times(DEFAULT_RETRIES)
                    .with_jitter()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_delay(Duration::from_secs(5)),
            );
        // Outermost: one observation per call (retries included), into the global
        // `metrics` recorder that `/metrics` renders (a no-op until one is installed).
        let op = op.layer(MetricsLayer::default());
        Storage { op, layout, base, location, query, fs_root, counters: Arc::new(Counters::default()) }
    }

    /// The replica for a path below this storage (a tenant's prefix).
    pub fn replica(&self, prefix: impl AsRef<str>) -> Replica {
        let prefix = normalize_dir(prefix.as_ref());
        Replica { storage: self.clone(), path: format!("{}{}", self.base, prefix) }
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
                let old = e
                    .metadata()
                    .last_modified()
                    .map(SystemTime::from)
                    .is_none_or(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TEMP_AGE));
                if durable::is_temp(e.name()) && e.metadata().is_file() && old {
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

/// One replica: the LTX files of one database under one path.
#[derive(Clone, Debug)]
pub struct Replica {
    storage: Storage,
    /// Path inside the operator, ending in `/` (or empty).
    path: String,
}

impl Replica {
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

    /// Lists every level, 0 through 9.
    pub async fn list_all(&self) -> Result<Vec<FileInfo>> {
        let mut out = Vec::new();
        for level in 0..=MAX_LEVEL {
            out.extend(self.list(level).await?);
        }
        Ok(out)
    }

    /// Uploads one LTX file, complete or not at all: on S3 one PUT (or a multipart
    /// upload, which appears only when completed), carrying the `litestream-timestamp`
    /// metadata; on a folder a temporary file in the same directory, its mtime set to
    /// the header time, fsynced and renamed into place ([`durable::publish`]) — a full
    /// disk or a crash leaves at most a temporary file, never a torn `.ltx`.
    pub async fn put(&self, level: u32, min: TxId, max: TxId, data: Vec<u8>, timestamp_ms: i64) -> Result<()> {
        let key = self.key(level, min, max);
        let len = data.len() as u64;
        let ts = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
        self.storage.counters.puts.fetch_add(1, Ordering::Relaxed);
        let what = || format!("upload {}", self.describe(&key));
        if let Some(root) = &self.storage.fs_root {
            let path = root.join(&key);
            let written = tokio::task::spawn_blocking(move || {
                durable::publish(&path, &data, Some(ts), durable::Existing::Replace)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            written.map_err(|source| Error::Local { what: what(), source })?;
        } else {
            let mut w = self.storage.op.write_with(&key, data);
            if self.storage.layout == Layout::Hex {
                w = w.user_metadata([(TIMESTAMP_METADATA_KEY.to_string(), rfc3339_nanos(ts))]);
            }
            w.await.map_err(|source| Error::Op { what: what(), source })?;
        }
        self.storage.counters.bytes_put.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Downloads a whole LTX file.
    pub async fn read(&self, f: &FileInfo) -> Result<opendal::Buffer> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        self.storage.counters.gets.fetch_add(1, Ordering::Relaxed);
        let buf = self
            .storage
            .op
            .read(&key)
            .await
            .map_err(|e| Error::Op { what: format!("download {}", self.describe(&key)), source: e })?;
        Ok(buf)
    }

    /// Downloads a byte range of an LTX file (as opendal hands it over: no copy).
    pub async fn read_range(&self, f: &FileInfo, range: std::ops::Range<u64>) -> Result<opendal::Buffer> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        self.storage.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.storage
            .op
            .read_with(&key)
            .range(range)
            .await
            .map_err(|e| Error::Op { what: format!("download {}", self.describe(&key)), source: e })
    }

    /// Deletes LTX files. Only retention calls this; replication never deletes.
    pub async fn delete(&self, files: &[FileInfo]) -> Result<()> {
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
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
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
            Operator::new(services::Memory::default())
                .unwrap_or_else(|e| unreachable!("memory service always builds: {e}"))
        })
        .clone()
}

/// RFC 3339 with nanoseconds in UTC, as Go's `time.RFC3339Nano` prints it.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::from_url(&format!("file://{}", dir.path().display()), &Options::default()).unwrap();
        let r = s.replica("databases/abc");
        assert_eq!(r.url(), format!("file://{}/databases/abc", dir.path().display()));
        assert_eq!(r.key(0, 1, 1), "databases/abc/ltx/0/0000000000000001-0000000000000001.ltx");
        assert_eq!(r.key(9, 1, 0x1f), "databases/abc/ltx/9/0000000000000001-000000000000001f.ltx");
        let s3 = Storage::from_url(
            "s3://bkt/base/path?endpoint=http://127.0.0.1:9&region=eu-west-1&force-path-style=true",
            &Options { access_key_id: Some("a".into()), secret_access_key: Some("b".into()), ..Default::default() },
        )
        .unwrap();
        let r = s3.replica("databases/abc/");
        assert_eq!(r.key(1, 2, 3), "base/path/databases/abc/0001/0000000000000002-0000000000000003.ltx");
        assert_eq!(r.key(9, 1, 3), "base/path/databases/abc/0009/0000000000000001-0000000000000003.ltx");
        assert_eq!(
            r.url(),
            "s3://bkt/base/path/databases/abc?endpoint=http://127.0.0.1:9&region=eu-west-1&force-path-style=true"
        );
        assert!(Storage::from_url("gopher://x", &Options::default()).is_err());
        assert!(Storage::from_url("s3:///x", &Options::default()).is_err());
    }

    /// A small tmpfs mounted for one test (CI runs as root); `None` where mounting is
    /// not allowed, with the reason printed.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let dir = tempfile::tempdir().ok()?;
            let out = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output();
            match out {
                Ok(o) if o.status.success() => Some(Tmpfs(dir)),
                Ok(o) => {
                    eprintln!("skipping: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                    None
                }
                Err(e) => {
                    eprintln!("skipping: cannot run mount: {e}");
                    None
                }
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0.path()).status();
        }
    }

    /// Regression (issue 18): on a full disk the folder replica wrote straight to the
    /// final name and left 0-byte `.ltx` files, which made the whole backup
    /// unrestorable. Now an upload that cannot complete leaves nothing under its name
    /// (and no temporary file either), and the next upload after space is freed works.
    #[tokio::test]
    async fn full_disk_on_a_folder_replica_leaves_no_torn_ltx() {
        let Some(fs) = Tmpfs::mount("256k") else {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root and must test this");
            return;
        };
        let s = Storage::from_url(fs.0.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let r = s.replica("t");
        r.put(0, 1, 1, vec![7; 1000], 1).await.unwrap_or_else(|e| panic!("{e}"));
        let filler = fs.0.path().join("filler");
        let _ = std::fs::write(&filler, vec![0u8; 512 << 10]); // fails part-way: the disk is full
        let err = r.put(0, 2, 2, vec![9; 64 << 10], 2).await.err().unwrap_or_else(|| panic!("the disk was not full"));
        let shown = crate::errors::chain(&err);
        assert!(shown.contains("0000000000000002-0000000000000002.ltx") && shown.contains("No space"), "{shown}");
        let names: Vec<String> = std::fs::read_dir(fs.0.path().join("t/ltx/0"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["0000000000000001-0000000000000001.ltx"], "a torn or temporary file is left");
        std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
        r.put(0, 2, 2, vec![9; 64 << 10], 2).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.list(0).await.unwrap_or_default().iter().map(|f| f.size).collect::<Vec<_>>(), [1000, 64 << 10]);
    }

    #[tokio::test]
    async fn stale_temporary_files_are_found_and_removed_fresh_ones_are_left() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        s.replica("a").put(0, 1, 1, vec![1; 200], 1).await.unwrap_or_else(|e| panic!("{e}"));
        let level = dir.path().join("a/ltx/0");
        let stale = level.join("0000000000000002-0000000000000002.ltx.99-0.tmp");
        let fresh = level.join("0000000000000003-0000000000000003.ltx.99-1.tmp");
        std::fs::write(&stale, b"half").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&fresh, b"half").unwrap_or_else(|e| panic!("{e}"));
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .and_then(|f| f.set_modified(old))
            .unwrap_or_else(|e| panic!("{e}"));
        let (tree, temps) = s.list_tree_and_temps("").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tree.keys().collect::<Vec<_>>(), ["a"], "temporary files are not replica files");
        assert_eq!(tree["a"].len(), 1);
        assert_eq!(temps, ["a/ltx/0/0000000000000002-0000000000000002.ltx.99-0.tmp"]);
        assert_eq!(s.remove_temps(&temps).await, 1);
        assert!(!stale.exists() && fresh.exists());
    }

    #[tokio::test]
    async fn put_list_read_delete_on_a_folder_sets_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::from_url(dir.path().to_str().unwrap(), &Options::default()).unwrap();
        let r = s.replica("t1");
        r.put(0, 1, 1, vec![1, 2, 3], 1_700_000_000_123).await.unwrap();
        r.put(0, 2, 2, vec![4], 1_700_000_001_000).await.unwrap();
        let files = r.list(0).await.unwrap();
        assert_eq!(files.iter().map(|f| (f.min_txid, f.size)).collect::<Vec<_>>(), vec![(1, 3), (2, 1)]);
        let mtime = std::fs::metadata(dir.path().join("t1/ltx/0/0000000000000001-0000000000000001.ltx"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(mtime, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert_eq!(r.read(&files[0]).await.unwrap().to_vec(), vec![1, 2, 3]);
        assert_eq!(r.read_range(&files[0], 1..3).await.unwrap().to_vec(), vec![2, 3]);
        assert!(r.list(1).await.unwrap().is_empty());
        r.delete(&files[..1]).await.unwrap();
        assert_eq!(r.list(0).await.unwrap().len(), 1);
        assert_eq!(s.discover("").await.unwrap(), vec!["t1".to_string()]);
        assert!(s.counters().total() >= 6);
    }
}
