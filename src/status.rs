//! The fleet's status board: what every tenant is doing, shared between the fleet
//! (which writes it) and the dashboard, the JSON API, metrics and `litefleet` logs
//! (which read it).
//!
//! The board is the single source of truth for "what does the daemon think": it holds
//! one [`TenantStatus`] per registered database file (keyed by its path, so two files
//! with the same GUID in two watch directories are two entries, one of them
//! `conflict`), the database files that were skipped and why, and facts about the
//! fleet itself. Readers take a [`Snapshot`] (a consistent copy) or subscribe to
//! [`Change`]s for live updates (Server-Sent Events).
//!
//! Writes are cheap (one short lock, one broadcast send) so the fleet can update after
//! every sync; a slow subscriber misses changes (it sees `Lagged` from the broadcast
//! channel and should re-read a snapshot) rather than slowing replication down.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::tenant::{Prefix, TenantId};

/// Changes buffered per subscriber before it lags (and must re-read a snapshot).
pub const CHANGE_BUFFER: usize = 4096;

/// What a tenant is doing, as shown by the dashboard and the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// Registered; its first sync has not finished yet.
    Starting,
    /// Replicating normally: everything written has shipped, or will within the sync
    /// interval. Idle (cold) tenants are active too.
    Active,
    /// Written but not shipped for longer than the lag threshold (storage slow or
    /// down, or the tenant is waiting for a connection slot).
    Lagging,
    /// Its last sync failed (garbage file, unreadable, storage refused); retried with
    /// backoff. `last_error` says why.
    Error,
    /// Not replicated: another file already replicates under the same storage prefix.
    /// `conflict_with` names it.
    Conflict,
    /// Not replicated here: another host sharing the storage owns the prefix
    /// (`held_by` names it); taken over when that host releases it or dies.
    Held,
    /// Not replicated here any more: this host owned the prefix and another host took
    /// it over (this one was paused or cut off); nothing more is written.
    Fenced,
}

impl TenantState {
    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TenantState::Starting => "starting",
            TenantState::Active => "active",
            TenantState::Lagging => "lagging",
            TenantState::Error => "error",
            TenantState::Conflict => "conflict",
            TenantState::Held => "held",
            TenantState::Fenced => "fenced",
        }
    }

    /// Every state, in display order.
    pub const ALL: [TenantState; 7] = [
        TenantState::Active,
        TenantState::Lagging,
        TenantState::Starting,
        TenantState::Error,
        TenantState::Conflict,
        TenantState::Held,
        TenantState::Fenced,
    ];
}

/// One registered database file.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Tenant id: a lowercase GUID, or a file stem under `non_guid = "stem"`.
    pub id: TenantId,
    /// The database file (canonical watch directory + name).
    pub database_path: PathBuf,
    /// The watch directory it was found in, as configured.
    pub watch_dir: PathBuf,
    /// Storage prefix of its replica, without a trailing slash (`databases/<id>`).
    pub prefix: Prefix,
    /// Full replica location for people and for `litestream restore`
    /// (`s3://bucket/databases/<id>`, `file:///abs/replicas/databases/<id>`).
    pub replica_url: String,
    /// What it is doing (as last recorded; see [`TenantStatus::state_at`] for lag).
    pub state: TenantState,
    /// When this daemon registered it.
    pub registered_at: SystemTime,
    /// When its last successful sync finished.
    pub last_sync_at: Option<SystemTime>,
    /// When the oldest change not yet shipped was seen (`None`: nothing waiting).
    pub pending_since: Option<SystemTime>,
    /// TXID of the newest file in its replica.
    pub txid: Option<u64>,
    /// LTX files uploaded by this daemon.
    pub files_shipped: u64,
    /// Bytes uploaded by this daemon.
    pub bytes_shipped: u64,
    /// Full-page (snapshot) L0 files among them.
    pub snapshots_shipped: u64,
    /// Successful syncs.
    pub syncs: u64,
    /// Failed syncs.
    pub errors: u64,
    /// Why the last sync failed, or why it is refused; cleared by the next success.
    pub last_error: Option<String>,
    /// For `conflict`: the file that owns the prefix.
    pub conflict_with: Option<PathBuf>,
    /// Whether it holds an open SQLite connection right now.
    pub hot: bool,
    /// Labels set by a hook, shown on the dashboard.
    pub labels: BTreeMap<String, String>,
    /// Its last restore validation (`[validation]`), if any ran.
    pub validation: Option<Validation>,
    /// Unusable files the lifecycle found in its replica (torn or corrupt), and what is
    /// being done about it; `None` once a repair snapshot made it whole again.
    pub damage: Option<String>,
    /// For `held` and `fenced`: the host that owns the prefix.
    pub held_by: Option<String>,
}

impl TenantStatus {
    /// A freshly registered tenant.
    pub fn new(
        id: &TenantId,
        database_path: &Path,
        watch_dir: &Path,
        prefix: &Prefix,
        replica_url: &str,
    ) -> TenantStatus {
        TenantStatus {
            id: id.clone(),
            database_path: database_path.to_path_buf(),
            watch_dir: watch_dir.to_path_buf(),
            prefix: prefix.clone(),
            replica_url: replica_url.to_owned(),
            state: TenantState::Starting,
            registered_at: SystemTime::now(),
            last_sync_at: None,
            pending_since: None,
            txid: None,
            files_shipped: 0,
            bytes_shipped: 0,
            snapshots_shipped: 0,
            syncs: 0,
            errors: 0,
            last_error: None,
            conflict_with: None,
            hot: false,
            labels: BTreeMap::new(),
            validation: None,
            damage: None,
            held_by: None,
        }
    }

    /// Replication lag at `now`: how long the oldest unshipped change has waited.
    pub fn lag_at(&self, now: SystemTime) -> Duration {
        self.pending_since.and_then(|t| now.duration_since(t).ok()).unwrap_or_default()
    }

    /// The state at `now`: `Active` and `Starting` become `Lagging` when a change has
    /// waited longer than `threshold`; a failed restore validation is an `Error` until a
    /// later validation passes, and damage in the replica until it is repaired.
    pub fn state_at(&self, now: SystemTime, threshold: Duration) -> TenantState {
        match self.state {
            TenantState::Active | TenantState::Starting | TenantState::Lagging
                if self.validation_failed() || self.damage.is_some() =>
            {
                TenantState::Error
            }
            TenantState::Active | TenantState::Starting if self.lag_at(now) > threshold => TenantState::Lagging,
            s => s,
        }
    }

    /// Whether its last restore validation failed.
    pub fn validation_failed(&self) -> bool {
        self.validation.as_ref().is_some_and(|v| v.outcome == Outcome::Failed)
    }

    /// The error to show: the last sync's, else damage in its replica, else a failed
    /// validation's.
    pub fn error_shown(&self) -> Option<String> {
        self.last_error.clone().or_else(|| self.damage.clone()).or_else(|| {
            self.validation
                .as_ref()
                .filter(|_| self.validation_failed())
                .map(|v| format!("validation failed: {}", v.detail))
        })
    }
}

/// What a validation concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The restore equals the live database at the same TXID.
    Passed,
    /// The restore differs from the live database, or the replica cannot be restored.
    Failed,
    /// No TXID could be pinned (the tenant kept committing, or its sync failed); nothing
    /// is known about the replica.
    Skipped,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The last restore validation of a tenant (`restore::validate`), as the board keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Validation {
    pub outcome: Outcome,
    /// When it finished.
    pub at: SystemTime,
    /// The TXID compared (when one was pinned).
    pub txid: Option<u64>,
    /// What was compared, or what differs.
    pub detail: String,
    /// How long the restore and comparison took.
    pub took: Duration,
}

impl Validation {
    pub fn skipped(detail: impl Into<String>) -> Validation {
        Validation {
            outcome: Outcome::Skipped,
            at: SystemTime::now(),
            txid: None,
            detail: detail.into(),
            took: Duration::ZERO,
        }
    }
}

/// A database file that is not replicated because of its name or where it leads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Skipped {
    /// The file.
    pub path: PathBuf,
    /// Why, for an operator.
    pub reason: String,
}

/// Facts about the fleet itself.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetInfo {
    /// Where replicas go, as shown to people (`s3://bucket/path`, `file://./replicas`).
    /// Never holds a credential.
    pub storage_url: String,
    /// The seed's `bucket`: the S3 bucket name, or the folder for `file://`.
    pub bucket: String,
    /// Prefix under the bucket for every tenant (`databases`).
    pub root: String,
    /// The watched directories, as configured.
    pub watch_dirs: Vec<PathBuf>,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// `active` tenants become `lagging` after a change waits this long.
    pub lag_threshold: Duration,
    /// litefleet's version.
    pub version: String,
    /// The id of the key new replica files are encrypted with (`[encryption]`);
    /// `None`: replicas are plain LTX files.
    pub encryption: Option<String>,
}

/// Tenant counts by state (states at snapshot time, lag included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Registered database files (every state).
    pub total: usize,
    /// `starting`.
    pub starting: usize,
    /// `active`.
    pub active: usize,
    /// `lagging`.
    pub lagging: usize,
    /// `error`.
    pub error: usize,
    /// `conflict`.
    pub conflict: usize,
    /// `held`.
    pub held: usize,
    /// `fenced`.
    pub fenced: usize,
    /// Skipped files (not tenants).
    pub skipped: usize,
    /// Tenants holding an open SQLite connection.
    pub hot: usize,
}

/// A consistent copy of the board.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Fleet facts.
    pub info: FleetInfo,
    /// The initial scan finished (readiness).
    pub ready: bool,
    /// When the snapshot was taken; lag and `state_at` are computed against it.
    pub taken_at: SystemTime,
    /// Counts by state.
    pub counts: Counts,
    /// Every registered database file, sorted by path.
    pub tenants: Vec<TenantStatus>,
    /// Skipped database files, sorted by path.
    pub skipped: Vec<Skipped>,
}

/// A live update for subscribers.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A tenant was registered or its status changed (the whole new status).
    Tenant(Box<TenantStatus>),
    /// A tenant was unregistered (its file is gone); its replica stays.
    Removed {
        /// Its database file.
        path: PathBuf,
        /// Its id.
        id: TenantId,
    },
    /// A file was skipped (or its skip reason changed).
    Skipped(Skipped),
    /// A skipped file went away or became a tenant.
    Unskipped {
        /// The file.
        path: PathBuf,
    },
    /// Readiness or fleet facts changed (initial scan done, config reloaded).
    Fleet,
}

/// The shared status board. Cheap to share (`Arc<Board>`); every method takes `&self`.
pub struct Board {
    inner: RwLock<Inner>,
    changes: broadcast::Sender<Change>,
    /// Tenant tasks holding a timer (a sync due, or a hot connection's idle deadline):
    /// what the fleet does without being woken. 0 once every tenant rests.
    scheduled: std::sync::atomic::AtomicUsize,
}

struct Inner {
    info: FleetInfo,
    ready: bool,
    tenants: BTreeMap<PathBuf, TenantStatus>,
    skipped: BTreeMap<PathBuf, String>,
}

impl Board {
    /// An empty board for a fleet described by `info`.
    pub fn new(info: FleetInfo) -> Board {
        let (changes, _) = broadcast::channel(CHANGE_BUFFER);
        Board {
            inner: RwLock::new(Inner { info, ready: false, tenants: BTreeMap::new(), skipped: BTreeMap::new() }),
            changes,
            scheduled: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// A tenant task armed (`true`) or dropped (`false`) its one timer.
    pub fn set_scheduled(&self, armed: bool) {
        use std::sync::atomic::Ordering;
        if armed {
            self.scheduled.fetch_add(1, Ordering::Relaxed);
        } else {
            self.scheduled.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Tenant tasks holding a timer right now (0: the fleet does nothing until a file
    /// changes).
    pub fn scheduled(&self) -> usize {
        self.scheduled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, change: Change) {
        // No subscriber is fine.
        let _ = self.changes.send(change);
    }

    /// Live changes from now on. Take a [`Board::snapshot`] after subscribing to
    /// start from a consistent state.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// Adds or replaces a tenant entry (keyed by `database_path`).
    pub fn upsert(&self, status: TenantStatus) {
        let copy = status.clone();
        {
            let mut g = self.write();
            g.skipped.remove(&status.database_path);
            g.tenants.insert(status.database_path.clone(), status);
        }
        self.emit(Change::Tenant(Box::new(copy)));
    }

    /// Changes a tenant entry in place; `false` if `path` is not registered.
    pub fn update(&self, path: &Path, f: impl FnOnce(&mut TenantStatus)) -> bool {
        let copy = {
            let mut g = self.write();
            let Some(t) = g.tenants.get_mut(path) else { return false };
            let before = t.clone();
            f(t);
            if *t == before {
                return true;
            }
            t.clone()
        };
        self.emit(Change::Tenant(Box::new(copy)));
        true
    }

    /// Removes a tenant entry; returns it.
    pub fn remove(&self, path: &Path) -> Option<TenantStatus> {
        let removed = self.write().tenants.remove(path);
        if let Some(t) = &removed {
            self.emit(Change::Removed { path: t.database_path.clone(), id: t.id.clone() });
        }
        removed
    }

    /// Records a skipped file (replacing any tenant entry at that path).
    pub fn skip(&self, path: &Path, reason: &str) {
        let changed = {
            let mut g = self.write();
            g.tenants.remove(path);
            g.skipped.insert(path.to_path_buf(), reason.to_owned()).as_deref() != Some(reason)
        };
        if changed {
            self.emit(Change::Skipped(Skipped { path: path.to_path_buf(), reason: reason.to_owned() }));
        }
    }

    /// Forgets a skipped file.
    pub fn unskip(&self, path: &Path) {
        if self.write().skipped.remove(path).is_some() {
            self.emit(Change::Unskipped { path: path.to_path_buf() });
        }
    }

    /// Marks the initial scan done (or not).
    pub fn set_ready(&self, ready: bool) {
        let changed = std::mem::replace(&mut self.write().ready, ready) != ready;
        if changed {
            self.emit(Change::Fleet);
        }
    }

    /// Replaces the watched directories (config reload).
    pub fn set_watch_dirs(&self, dirs: Vec<PathBuf>) {
        self.write().info.watch_dirs = dirs;
        self.emit(Change::Fleet);
    }

    /// Whether the initial scan has finished.
    pub fn is_ready(&self) -> bool {
        self.read().ready
    }

    /// Fleet facts.
    pub fn info(&self) -> FleetInfo {
        self.read().info.clone()
    }

    /// One tenant entry by database path.
    pub fn get(&self, path: &Path) -> Option<TenantStatus> {
        self.read().tenants.get(path).cloned()
    }

    /// Every entry with this tenant id: normally one; more when files conflict (the
    /// replicating one first).
    pub fn by_id(&self, id: &str) -> Vec<TenantStatus> {
        let mut v: Vec<TenantStatus> = self.read().tenants.values().filter(|t| t.id.as_str() == id).cloned().collect();
        v.sort_by_key(|t| t.state == TenantState::Conflict);
        v
    }

    /// Counts by state at `now`.
    pub fn counts(&self) -> Counts {
        let g = self.read();
        count(&g, SystemTime::now())
    }

    /// A consistent copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        let g = self.read();
        let now = SystemTime::now();
        Snapshot {
            info: g.info.clone(),
            ready: g.ready,
            taken_at: now,
            counts: count(&g, now),
            tenants: g.tenants.values().cloned().collect(),
            skipped: g.skipped.iter().map(|(p, r)| Skipped { path: p.clone(), reason: r.clone() }).collect(),
        }
    }
}

fn count(g: &Inner, now: SystemTime) -> Counts {
    let mut c = Counts { total: g.tenants.len(), skipped: g.skipped.len(), ..Counts::default() };
    for t in g.tenants.values() {
        match t.state_at(now, g.info.lag_threshold) {
            TenantState::Starting => c.starting += 1,
            TenantState::Active => c.active += 1,
            TenantState::Lagging => c.lagging += 1,
            TenantState::Error => c.error += 1,
            TenantState::Conflict => c.conflict += 1,
            TenantState::Held => c.held += 1,
            TenantState::Fenced => c.fenced += 1,
        }
        if t.hot {
            c.hot += 1;
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> FleetInfo {
        FleetInfo {
            storage_url: "file://./replicas".into(),
            bucket: "./replicas".into(),
            root: "databases".into(),
            watch_dirs: vec![PathBuf::from("data/clients")],
            started_at: SystemTime::now(),
            lag_threshold: Duration::from_secs(10),
            version: "test".into(),
            encryption: None,
        }
    }

    fn tenant(path: &str, id: &str) -> TenantStatus {
        let (id, prefix) = (TenantId::from_stem(id).unwrap(), Prefix::parse(&format!("databases/{id}")).unwrap());
        TenantStatus::new(&id, Path::new(path), Path::new("data"), &prefix, "file://x")
    }

    #[test]
    fn upsert_update_remove_emit_changes_and_counts_follow() {
        let board = Board::new(info());
        let mut rx = board.subscribe();
        board.upsert(tenant("/d/a.db", "a"));
        assert!(matches!(rx.try_recv(), Ok(Change::Tenant(t)) if t.id == "a"));
        assert!(board.update(Path::new("/d/a.db"), |t| t.state = TenantState::Active));
        assert!(matches!(rx.try_recv(), Ok(Change::Tenant(t)) if t.state == TenantState::Active));
        // An update that changes nothing is not broadcast.
        assert!(board.update(Path::new("/d/a.db"), |t| t.state = TenantState::Active));
        assert!(rx.try_recv().is_err());
        assert!(!board.update(Path::new("/d/none.db"), |_| {}));
        board.skip(Path::new("/d/regular.db"), "not a GUID");
        assert!(matches!(rx.try_recv(), Ok(Change::Skipped(s)) if s.reason == "not a GUID"));
        let c = board.counts();
        assert_eq!((c.total, c.active, c.skipped), (1, 1, 1));
        assert_eq!(board.remove(Path::new("/d/a.db")).map(|t| t.id.to_string()), Some("a".to_owned()));
        assert!(matches!(rx.try_recv(), Ok(Change::Removed { id, .. }) if id == "a"));
        assert_eq!(board.counts().total, 0);
    }

    #[test]
    fn a_change_waiting_past_the_threshold_is_lagging() {
        let board = Board::new(info());
        let mut t = tenant("/d/a.db", "a");
        t.state = TenantState::Active;
        t.pending_since = Some(SystemTime::now() - Duration::from_secs(11));
        board.upsert(t.clone());
        assert_eq!(board.counts().lagging, 1);
        assert_eq!(t.state_at(SystemTime::now(), Duration::from_secs(60)), TenantState::Active);
        // Errors stay errors, whatever the lag.
        t.state = TenantState::Error;
        assert_eq!(t.state_at(SystemTime::now(), Duration::from_secs(1)), TenantState::Error);
    }

    #[test]
    fn by_id_lists_the_replicating_entry_before_conflicts() {
        let board = Board::new(info());
        let mut second = tenant("/prod/a.db", "a");
        second.state = TenantState::Conflict;
        board.upsert(second);
        let mut first = tenant("/staging/a.db", "a");
        first.state = TenantState::Active;
        board.upsert(first);
        let v = board.by_id("a");
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].database_path, Path::new("/staging/a.db"));
        assert!(board.by_id("b").is_empty());
    }

    #[test]
    fn skipping_a_registered_path_replaces_it() {
        let board = Board::new(info());
        board.upsert(tenant("/d/a.db", "a"));
        board.skip(Path::new("/d/a.db"), "refused");
        let s = board.snapshot();
        assert!(s.tenants.is_empty());
        assert_eq!(s.skipped.len(), 1);
        board.upsert(tenant("/d/a.db", "a"));
        assert!(board.snapshot().skipped.is_empty());
    }
}
