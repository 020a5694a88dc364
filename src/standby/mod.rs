//! `litefleet standby --config standby.toml`: a follow copy ([`crate::restore::follow`])
//! of every tenant under a storage root, kept current, with its own page, API and
//! metrics ([`http`]).
//!
//! How it learns what changed (design and failure cases: docs/architecture.md, "Follow
//! and the standby"):
//! * At start, one listing of the whole storage (one request per 1,000 files): every
//!   prefix gets its copy restored, or resumed from its `-follow` state and caught up
//!   from that listing.
//! * Then, every `poll_interval`, the primary's change log ([`crate::changes`]): one
//!   LIST, one GET per new entry, and for each tenant it names the new L0 files are read
//!   directly by name — no listing of the tenant. A tenant whose named files do not
//!   continue its copy (an entry was trimmed, files were compacted away) lists its own
//!   replica once.
//! * A listing of the whole storage again when the log says one may have missed
//!   something (a host restarted, an entry was lost), every `full_scan_interval` as a
//!   safety net, and — when no change log exists (Litestream wrote the storage, or the
//!   primary has `[change_log]` off) — every `scan_interval`.
//!
//! A tenant whose database was deleted on the primary (the change log's `removed`, or
//! its removal marker at a listing) or whose prefix disappears from the storage stops
//! being followed: its copy moves to `.removed/` under the standby's directory, kept
//! as it was, where a daemon promoted onto the directory does not see it (the watcher
//! skips hidden folders). A tenant created again later is restored anew. A copy the
//! replica can no longer continue (reset, page size changed, files gone) is restored
//! again from scratch.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::changes::{self, Cursor, Entry};
use crate::config::Config;
use crate::errors::Chain;
use crate::restore::follow::{self, Follower};
use crate::storage::{FileInfo, Storage};
use crate::tenant::Prefix;

pub mod http;

/// Metric names.
pub const M_TENANTS: &str = "litefleet_standby_tenants";
pub const M_FILES: &str = "litefleet_standby_files_applied_total";
pub const M_LAG: &str = "litefleet_standby_lag_seconds";
pub const M_SCANS: &str = "litefleet_standby_scans_total";
pub const M_RESTORES: &str = "litefleet_standby_restores_total";
pub const M_ERRORS: &str = "litefleet_standby_errors_total";

/// The lock file in `[standby] dir` held while a standby runs there.
pub const LOCK: &str = ".litefleet-standby.lock";
/// Where the copies of removed tenants go, under `[standby] dir`.
pub const REMOVED_DIR: &str = ".removed";

/// Applies whose lag is kept for the percentiles on the page and API.
const LAG_WINDOW: usize = 4096;

/// Why the standby could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("storage")]
    Storage(#[from] crate::storage::Error),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
}

/// One tenant as the page and the API show it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantView {
    /// The replica's prefix under the storage.
    pub prefix: String,
    /// The copy, relative to `[standby] dir`.
    pub copy: PathBuf,
    /// `restoring`, `following`, `failed` or `removed` (deleted on the primary, or its
    /// prefix left the storage; the copy is under `.removed/`).
    pub state: &'static str,
    /// Newest TXID the primary is known to have shipped.
    pub primary_txid: u64,
    /// The TXID the copy is at.
    pub copy_txid: u64,
    /// When the primary committed the copy's newest state (LTX header time, ms).
    pub copy_committed_ms: i64,
    /// When the standby last applied something (ms since the epoch).
    pub applied_ms: Option<i64>,
    /// Commit → applied for the last apply, in ms (the two hosts' clocks).
    pub lag_ms: Option<i64>,
    pub files_applied: u64,
    pub last_error: Option<String>,
    /// Why a `removed` tenant is no longer followed.
    pub removed: Option<String>,
}

/// Totals for the page, the API and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub storage: String,
    pub dir: PathBuf,
    /// A change log was found (otherwise the standby lists the storage every
    /// `scan_interval`).
    pub change_log: bool,
    pub tenants: usize,
    pub following: usize,
    /// Tenants whose copy is behind what the primary is known to have shipped.
    pub behind: usize,
    pub restoring: usize,
    pub failed: usize,
    pub removed: usize,
    pub scans: u64,
    pub files_applied: u64,
    pub lag_p50_ms: Option<i64>,
    pub lag_p99_ms: Option<i64>,
    pub lag_max_ms: Option<i64>,
    /// Storage requests since start, for the cost of following: LISTs of replicas
    /// (a listing of the whole storage counts one per page of results), GETs of LTX
    /// files, PUTs (none: a standby only reads), and requests to the change log.
    pub lists: u64,
    pub gets: u64,
    pub puts: u64,
    pub log_requests: u64,
    /// When the initial listing of the storage finished (ms since the epoch).
    pub ready_ms: Option<i64>,
}

/// What the standby knows, shared with its HTTP server.
#[derive(Default)]
pub struct Board {
    inner: Mutex<BoardInner>,
}

#[derive(Default)]
struct BoardInner {
    tenants: BTreeMap<String, TenantView>,
    totals: Totals,
    lags: std::collections::VecDeque<i64>,
}

impl Board {
    fn with<T>(&self, f: impl FnOnce(&mut BoardInner) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Every tenant, by prefix.
    pub fn tenants(&self) -> Vec<TenantView> {
        self.with(|b| b.tenants.values().cloned().collect())
    }

    /// The totals, counted now.
    pub fn totals(&self, storage: &Storage) -> Totals {
        self.with(|b| {
            let mut t = b.totals.clone();
            t.tenants = b.tenants.len();
            let count = |s: &str| b.tenants.values().filter(|v| v.state == s).count();
            (t.following, t.restoring, t.failed, t.removed) =
                (count("following"), count("restoring"), count("failed"), count("removed"));
            t.behind = b.tenants.values().filter(|v| v.state != "removed" && v.copy_txid < v.primary_txid).count();
            let mut lags: Vec<i64> = b.lags.iter().copied().collect();
            lags.sort_unstable();
            let pct = |p: f64| lags.get(((lags.len() as f64 - 1.0) * p).round() as usize).copied();
            (t.lag_p50_ms, t.lag_p99_ms, t.lag_max_ms) = (pct(0.5), pct(0.99), lags.last().copied());
            let c = storage.counters();
            use std::sync::atomic::Ordering::Relaxed;
            (t.lists, t.gets, t.puts) = (c.lists.load(Relaxed), c.gets.load(Relaxed), c.puts.load(Relaxed));
            t.log_requests = c.meta.load(Relaxed);
            t
        })
    }

    fn update(&self, prefix: &str, f: impl FnOnce(&mut TenantView)) {
        self.with(|b| {
            let v = b.tenants.entry(prefix.to_owned()).or_insert_with(|| TenantView {
                prefix: prefix.to_owned(),
                state: "restoring",
                ..TenantView::default()
            });
            f(v);
        })
    }

    fn lag(&self, ms: i64) {
        self.with(|b| {
            if b.lags.len() == LAG_WINDOW {
                b.lags.pop_front();
            }
            b.lags.push_back(ms);
        })
    }
}

/// A listing of the whole storage: every prefix with its files, and the removal
/// markers (prefix → TXID at removal).
struct Tree {
    replicas: BTreeMap<String, Vec<FileInfo>>,
    removed: HashMap<String, u64>,
}

/// What a tenant's next step starts from.
enum Hint {
    /// A listing of its replica (from a listing of the whole storage).
    Listing(Vec<FileInfo>),
    /// The new L0 files the change log names.
    Files(Vec<FileInfo>),
}

/// The running standby.
struct Standby {
    storage: Storage,
    root: Prefix,
    /// Where replicas are searched: the root, or the whole storage when a hook names
    /// prefixes (as `litefleet tenants` does).
    search: String,
    dir: PathBuf,
    board: Arc<Board>,
    followers: Mutex<HashMap<String, Follower>>,
    stop: CancellationToken,
}

/// Runs the standby until `stop` is cancelled.
pub async fn run(config: Config, stop: CancellationToken) -> Result<(), Error> {
    let s = &config.standby;
    let Some(dir) = s.dir.clone() else {
        let e = std::io::Error::other("is required by `litefleet standby` (where the copies go)");
        return Err(config.error_at("standby.dir", e).into());
    };
    if let Err(e) = crate::durable::check_writable(&dir) {
        let e = std::io::Error::new(e.kind(), format!("cannot write in {}: {e}", dir.display()));
        return Err(config.error_at("standby.dir", e).into());
    }
    // One standby per directory.
    let _lock = follow::lock(&dir.join(LOCK)).map_err(|e| config.error_at("standby.dir", e))?;
    let listener = crate::http::bind(config.http.listen).await?;
    let storage = crate::fleet::open_storage(&config)?;
    let board = Arc::new(Board::default());
    board.with(|b| {
        b.totals.storage = storage.location().to_owned();
        b.totals.dir = dir.clone();
    });
    let metrics = crate::metrics::install();
    let http_stop = stop.child_token();
    let (addr, server) =
        http::serve(listener, board.clone(), storage.clone(), metrics, config.http.token.clone(), http_stop.clone())?;
    tracing::info!(
        storage = %storage.location(), dir = %dir.display(), poll = ?s.poll_interval,
        "🛟 standby: keeping a copy of every tenant (page on http://{addr}/)"
    );
    let standby = Arc::new(Standby {
        storage: storage.clone(),
        root: config.storage.root.clone(),
        search: if config.hooks.is_some() { String::new() } else { config.storage.root.as_str().to_owned() },
        dir,
        board,
        followers: Mutex::new(HashMap::new()),
        stop: stop.clone(),
    });
    standby.follow(&config).await;
    http_stop.cancel();
    let _ = server.await;
    tracing::info!("👋 standby stopped");
    Ok(())
}

impl Standby {
    async fn follow(self: &Arc<Self>, config: &Config) {
        let s = &config.standby;
        let mut cursor = Cursor::default();
        // What the log holds now is covered by the first listing.
        let mut log_present = match cursor.poll(&self.storage).await {
            Ok(p) => p.present,
            Err(e) => {
                tracing::warn!("standby: cannot read the change log: {}", Chain(&e));
                false
            }
        };
        let first = self.list("start").await;
        let mut last_scan = Instant::now();
        if let Some(tree) = first {
            self.apply_listing(tree, &HashSet::new(), s.concurrency).await;
        }
        self.board.with(|b| b.totals.ready_ms = Some(now_ms()));
        if !log_present {
            tracing::warn!(
                "standby: no change log in the storage; listing it every {} (turn [change_log] on in the primary's config)",
                humantime::format_duration(s.scan_interval)
            );
        }
        // A later listing runs in the background while the log keeps being followed;
        // prefixes the log caught up meanwhile skip it (they are at least as new).
        let mut listing: Option<tokio::task::JoinHandle<Option<Tree>>> = None;
        let mut touched: HashSet<String> = HashSet::new();
        let mut tick = tokio::time::interval(s.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut work: BTreeMap<String, Vec<FileInfo>> = BTreeMap::new();
            let mut removed: BTreeMap<String, u64> = BTreeMap::new();
            let mut rescan = None;
            match cursor.poll(&self.storage).await {
                Ok(p) => {
                    if p.present && !log_present {
                        tracing::info!("standby: change log found; following it");
                    }
                    log_present |= p.present;
                    rescan = p.rescan;
                    for e in p.entries {
                        merge(&mut work, &mut removed, e);
                    }
                }
                Err(e) => tracing::warn!("standby: cannot read the change log: {}", Chain(&e)),
            }
            self.board.with(|b| b.totals.change_log = log_present);
            let due = if log_present { s.full_scan_interval } else { s.scan_interval };
            let reason = rescan
                .or_else(|| (!due.is_zero() && last_scan.elapsed() >= due).then(|| "periodic listing".to_owned()));
            if let Some(reason) = reason
                && listing.is_none()
            {
                touched.clear();
                last_scan = Instant::now();
                let me = self.clone();
                listing = Some(tokio::spawn(async move { me.list(&reason).await }));
            }
            if listing.is_some() {
                touched.extend(work.keys().chain(removed.keys()).cloned());
            }
            let items = work.into_iter().map(|(p, f)| (p, Hint::Files(f)));
            self.run_all(items, s.concurrency).await;
            // After its last files: a tenant shipped nothing beyond its removal (else it
            // was created again since).
            for (prefix, txid) in removed {
                let again = self.board.with(|b| b.tenants.get(&prefix).is_some_and(|v| v.primary_txid > txid));
                if !again {
                    self.retire(&prefix, format!("deleted on the primary after TXID {txid:016x}")).await;
                }
            }
            if listing.as_ref().is_some_and(|h| h.is_finished())
                && let Some(h) = listing.take()
                && let Ok(Some(tree)) = h.await
            {
                self.apply_listing(tree, &touched, s.concurrency).await;
            }
        }
    }

    /// One listing of the whole storage and of the removal markers (`None`, logged, if
    /// either failed).
    async fn list(&self, reason: &str) -> Option<Tree> {
        metrics::counter!(M_SCANS).increment(1);
        self.board.with(|b| b.totals.scans += 1);
        let started = Instant::now();
        let listed = match self.storage.list_tree(&self.search).await {
            Ok(replicas) => changes::removed_markers(&self.storage).await.map(|removed| Tree { replicas, removed }),
            Err(e) => Err(e),
        };
        match listed {
            Ok(t) => {
                tracing::info!(
                    tenants = t.replicas.len(),
                    reason,
                    seconds = started.elapsed().as_secs_f64(),
                    "standby: listed the storage"
                );
                Some(t)
            }
            Err(e) => {
                tracing::warn!("standby: cannot list the storage ({reason}): {}", Chain(&e));
                None
            }
        }
    }

    /// Brings every prefix of a listing (but those in `skip`) up to it; retires the
    /// tenants gone from the storage or removed on the primary (a copy there is first
    /// brought to the tenant's last state); gives the listing's memory back.
    async fn apply_listing(self: &Arc<Self>, tree: Tree, skip: &HashSet<String>, concurrency: usize) {
        let Tree { replicas, removed } = tree;
        let gone: Vec<String> = self.board.with(|b| {
            b.tenants
                .iter()
                .filter(|(p, v)| v.state != "removed" && !replicas.contains_key(p.as_str()) && !skip.contains(*p))
                .map(|(p, _)| p.clone())
                .collect()
        });
        for p in gone {
            self.retire(&p, "its prefix left the storage".to_owned()).await;
        }
        let mut retiring: Vec<(String, u64)> = Vec::new();
        let mut items = Vec::with_capacity(replicas.len());
        for (prefix, files) in replicas {
            if skip.contains(&prefix) {
                continue;
            }
            if let Some(&txid) = removed.get(&prefix)
                && files.iter().filter(|f| !f.is_torn()).all(|f| f.max_txid <= txid)
            {
                let has_copy = self.followers.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&prefix)
                    || self.copy_of(&prefix).exists();
                retiring.push((prefix.clone(), txid));
                if !has_copy {
                    continue;
                }
            }
            items.push((prefix, Hint::Listing(files)));
        }
        self.run_all(items.into_iter(), concurrency).await;
        for (prefix, txid) in retiring {
            self.retire(&prefix, format!("deleted on the primary after TXID {txid:016x}")).await;
        }
        let _ = tokio::task::spawn_blocking(crate::fleet::trim_heap).await;
    }

    fn copy_of(&self, prefix: &str) -> PathBuf {
        copy_path(&self.dir, &self.root, prefix)
    }

    /// Stops following a tenant and moves its copy (at the state it reached) to
    /// `.removed/`; the board says why.
    async fn retire(&self, prefix: &str, why: String) {
        self.followers.lock().unwrap_or_else(|e| e.into_inner()).remove(prefix);
        let rel = crate::recovery::layout_path(&self.root, prefix);
        let (from, to) = (self.dir.join(&rel), self.dir.join(REMOVED_DIR).join(&rel));
        let moved = tokio::task::spawn_blocking({
            let (from, to) = (from.clone(), to.clone());
            move || move_copy(&from, &to)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let was = self.board.with(|b| b.tenants.get(prefix).map(|v| v.state));
        if was != Some("removed") {
            tracing::info!(prefix, copy = %to.display(), "standby: no longer following ({why})");
        }
        self.board.update(prefix, |v| {
            v.state = "removed";
            v.removed = Some(why);
            match moved {
                Ok(true) => v.copy = to.strip_prefix(&self.dir).unwrap_or(&to).to_path_buf(),
                Ok(false) => {}
                Err(e) => v.last_error = Some(format!("moving the copy {} to {}: {e}", from.display(), to.display())),
            }
        });
    }

    async fn run_all(self: &Arc<Self>, items: impl Iterator<Item = (String, Hint)>, concurrency: usize) {
        let tasks = futures::stream::iter(items).map(|(prefix, hint)| {
            let me = self.clone();
            async move { me.step(prefix, hint).await }
        });
        tasks.buffer_unordered(concurrency.max(1)).for_each(|_| async {}).await;
    }

    /// One tenant: start (restore or resume) its follower if needed, then apply what is
    /// new; a copy the replica cannot continue is restored again.
    async fn step(&self, prefix: String, hint: Hint) {
        if self.stop.is_cancelled() {
            return;
        }
        let known = match &hint {
            Hint::Listing(files) => files.iter().filter(|f| !f.is_torn()).map(|f| f.max_txid).max().unwrap_or(0),
            Hint::Files(files) => files.iter().map(|f| f.max_txid).max().unwrap_or(0),
        };
        self.board.update(&prefix, |v| v.primary_txid = v.primary_txid.max(known));
        let taken = self.followers.lock().unwrap_or_else(|e| e.into_inner()).remove(&prefix);
        let before = taken.as_ref().map(Follower::txid);
        let result = match taken {
            Some(f) => self.advance(f, hint).await,
            None => self.open(&prefix, hint).await,
        };
        match result {
            Ok((f, applied)) => {
                let now = now_ms();
                let moved = before != Some(f.txid());
                let lag = moved.then(|| now - f.timestamp_ms());
                if let Some(l) = lag {
                    self.board.lag(l);
                    metrics::histogram!(M_LAG).record(l.max(0) as f64 / 1000.0);
                }
                metrics::counter!(M_FILES).increment(applied as u64);
                self.board.with(|b| b.totals.files_applied += applied as u64);
                self.board.update(&prefix, |v| {
                    v.state = "following";
                    v.removed = None;
                    v.copy = f.out().strip_prefix(&self.dir).unwrap_or(f.out()).to_path_buf();
                    v.copy_txid = f.txid();
                    v.primary_txid = v.primary_txid.max(f.txid());
                    v.copy_committed_ms = f.timestamp_ms();
                    v.files_applied += applied as u64;
                    v.last_error = None;
                    if moved {
                        v.applied_ms = Some(now);
                        v.lag_ms = lag;
                    }
                });
                self.followers.lock().unwrap_or_else(|e| e.into_inner()).insert(prefix, f);
            }
            Err(follow::Error::Cancelled) => {}
            Err(e) => {
                metrics::counter!(M_ERRORS).increment(1);
                let msg = Chain(&e).to_string();
                tracing::warn!(prefix = %prefix, "standby: {msg}");
                self.board.update(&prefix, |v| {
                    v.state = "failed";
                    v.last_error = Some(msg);
                });
            }
        }
    }

    /// Starts the follower of a prefix seen for the first time since the standby
    /// started (restores its copy, or resumes it), then catches it up.
    async fn open(&self, prefix: &str, hint: Hint) -> follow::Result<(Follower, usize)> {
        let out = self.copy_of(prefix);
        let replica = self.storage.replica(prefix);
        let listing = match &hint {
            Hint::Listing(files) => Some(files.clone()),
            Hint::Files(_) => None,
        };
        let fresh = !follow::state_path(&out).exists();
        if fresh {
            metrics::counter!(M_RESTORES).increment(1);
            self.board.update(prefix, |v| v.state = "restoring");
        }
        let f = Follower::start(replica, &out, listing, false, &self.stop).await?;
        if fresh {
            tracing::info!(prefix, copy = %out.display(), txid = format_args!("{:016x}", f.txid()), "standby: restored");
        }
        self.advance(f, hint).await
    }

    /// Applies what `hint` shows beyond the copy; lists the replica when the named files
    /// do not continue it; restores again when the replica cannot continue it at all.
    async fn advance(&self, mut f: Follower, hint: Hint) -> follow::Result<(Follower, usize)> {
        let applied = match hint {
            Hint::Listing(files) => f.catch_up(&files, &self.stop).await,
            Hint::Files(files) => {
                let new: Vec<FileInfo> = files.into_iter().filter(|x| x.max_txid > f.txid()).collect();
                if new.is_empty() {
                    return Ok((f, 0));
                }
                match f.catch_up(&new, &self.stop).await {
                    Err(follow::Error::Gap { .. }) => f.poll(&self.stop).await,
                    Err(follow::Error::Storage(e)) if e.is_not_found() => f.poll(&self.stop).await,
                    r => r,
                }
            }
        };
        match applied {
            Ok(a) => Ok((f, a.files)),
            Err(e) if e.needs_restore() => {
                tracing::warn!(copy = %f.out().display(), "standby: {}; restoring the copy again", Chain(&e));
                metrics::counter!(M_RESTORES).increment(1);
                f.restore(None, &self.stop).await?;
                Ok((f, 0))
            }
            Err(e) => Err(e),
        }
    }
}

/// Adds an entry's files and removals to the work of this round.
fn merge(work: &mut BTreeMap<String, Vec<FileInfo>>, removed: &mut BTreeMap<String, u64>, e: Entry) {
    for (prefix, spec) in e.tenants {
        work.entry(prefix).or_default().extend(Entry::files(&spec));
    }
    for (prefix, txid) in e.removed {
        let r = removed.entry(prefix).or_insert(txid);
        *r = (*r).max(txid);
    }
}

/// Moves a copy out of the way: its WAL checkpointed into it first (so the database
/// file alone holds its state), then the database and its `-follow` state; false when
/// there is no copy. A copy a reader keeps open moves with its `-wal`.
fn move_copy(from: &Path, to: &Path) -> std::io::Result<bool> {
    let state = follow::state_path(from);
    if !from.exists() && !state.exists() {
        return Ok(false);
    }
    crate::durable::create_dirs(crate::durable::parent_dir(to))?;
    if from.exists() {
        if let Ok(c) = rusqlite::Connection::open(from) {
            let _ = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        }
        std::fs::rename(from, to)?;
        use crate::sqlite::{shm_path, wal_path};
        for (a, b) in [(wal_path(from), wal_path(to)), (shm_path(from), shm_path(to))] {
            if a.exists() {
                std::fs::rename(&a, &b)?;
            }
        }
    }
    if state.exists() {
        std::fs::rename(&state, follow::state_path(to))?;
    }
    crate::durable::sync_dir(crate::durable::parent_dir(to))?;
    Ok(to.exists())
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The copy of `prefix` under `dir` (as `restore --all` lays it out).
pub fn copy_path(dir: &Path, root: &Prefix, prefix: &str) -> PathBuf {
    dir.join(crate::recovery::layout_path(root, prefix))
}
