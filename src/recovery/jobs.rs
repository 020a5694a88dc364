//! The daemon's restore jobs: `POST /api/clients/{id}/restores` and friends.
//!
//! A request names a tenant, a [`Point`] and a destination: a `copy` (a new file in
//! `[restore] dir`, named from the tenant id and the point only) or a `fork` (a new
//! tenant: `<fresh GUID>.db` in a watch directory, which the fleet then registers and
//! replicates like any other file). [`Restores::submit`] checks everything that can be
//! checked before any byte moves — the tenant, the point against its restore window,
//! the destination directory, the queue — and answers with a queued job or a specific
//! [`SubmitError`]. Jobs then run at most `[restore] concurrency` at a time, fleet-wide,
//! through the one runner ([`crate::restore::Job`]); each can be cancelled, and a
//! cancelled, failed or interrupted job leaves no file.
//!
//! Every change of a job (and its progress, at most every 250 ms while it runs) is
//! broadcast to [`Restores::subscribe`]rs: `/api/events` and the dashboard. Jobs live
//! in memory (the newest [`KEPT_FINISHED`] finished ones are kept); their outputs stay.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{Point, check_writable, copy_name, epoch_ms, from_epoch_ms};
use crate::config::{Config, WatchConfig};
use crate::errors::chain;
use crate::ltx::TxId;
use crate::restore::{self, IntegrityCheck, Progress, ProgressView, Step};
use crate::status::Board;
use crate::storage::catalog::{Catalog, Window};
use crate::storage::{self, Storage};
use crate::tenant::{Prefix, TenantId};

/// Jobs that may wait for a slot; one more is refused ([`SubmitError::QueueFull`]).
pub const MAX_QUEUED: usize = 64;
/// Finished jobs kept for `GET /api/restores` (the oldest are forgotten first).
pub const KEPT_FINISHED: usize = 200;
/// A running job's progress is broadcast at most this often.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// How long [`Restores::shutdown`] waits for cancelled jobs to remove their files.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Job events buffered per subscriber before it lags.
const EVENT_BUFFER: usize = 1024;

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A new file in `[restore] dir`.
    Copy,
    /// A new tenant in a watch directory (by default the tenant's own).
    Fork {
        /// One of the configured watch directories, as configured (or the same
        /// directory spelled otherwise).
        watch_dir: Option<PathBuf>,
    },
}

/// A restore request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub point: Point,
    pub destination: Destination,
    /// SQLite's check of the output before it takes its name.
    pub integrity: IntegrityCheck,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Waiting for a slot.
    Queued,
    /// Restoring.
    Running,
    /// The output is complete and verified at its final name.
    Done,
    /// Stopped by an error (`error` says which); no output.
    Failed,
    /// Cancelled (or the daemon stopped); no output.
    Cancelled,
}

impl State {
    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    /// Whether the job has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, State::Done | State::Failed | State::Cancelled)
    }
}

/// Everything known about one job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobView {
    /// The job's id (a UUID).
    pub id: String,
    /// The tenant restored.
    pub tenant: String,
    /// Its replica's prefix.
    pub prefix: String,
    /// Its replica's URL.
    pub replica_url: String,
    /// The point asked for (`latest` is pinned to the newest TXID when submitted).
    pub point: Point,
    /// `copy` or `fork`.
    pub destination: &'static str,
    /// The output database.
    pub output: PathBuf,
    /// For a fork: the new tenant's id.
    pub fork_id: Option<String>,
    /// The check asked for.
    pub integrity_check: IntegrityCheck,
    pub state: State,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub progress: ProgressView,
    /// The TXID restored (known at submission for a TXID or `latest`, else when done).
    pub txid: Option<TxId>,
    /// When the restored state was committed (its last LTX file's header time).
    pub restored_at: Option<SystemTime>,
    /// The output's size in bytes, when done.
    pub size: Option<u64>,
    /// The output's SHA-256, when done.
    pub sha256: Option<String>,
    /// The SQLite check's result (`ok`), when one was asked and the job is done.
    pub integrity: Option<String>,
    /// Why the job failed.
    pub error: Option<String>,
}

/// Why a request was refused; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("no tenant {id}: no registered database has this id, and no replica of it is under {place}")]
    UnknownTenant { id: String, place: String },
    #[error("tenant {id} has several replicas ({}); restore one with `litefleet restore <url>`", prefixes.join(", "))]
    Ambiguous { id: String, prefixes: Vec<String> },
    #[error("tenant {id} has nothing to restore: {reason}")]
    NotRestorable { id: String, reason: String },
    #[error("{point} is outside the restore window of tenant {id} ({window}): {why}")]
    OutsideWindow { id: String, point: String, window: String, why: String },
    #[error("copy restores need a directory: set [restore] dir in the daemon's config (none is set)")]
    NoCopyDir,
    #[error("{what} {} {reason}", dir.display())]
    Directory { what: &'static str, dir: PathBuf, reason: String },
    #[error("{} is not a watch directory of this daemon (they are: {})", dir.display(), choices.join(", "))]
    NotAWatchDir { dir: PathBuf, choices: Vec<String> },
    #[error("{} exists already (a restore of the same point); remove it to restore again", .0.display())]
    OutputExists(PathBuf),
    #[error("restore job {job} writes {} already (a restore of the same point in progress)", output.display())]
    SameOutput { job: String, output: PathBuf },
    #[error("{0} restore jobs are waiting already (at most {MAX_QUEUED}); try again when some have finished")]
    QueueFull(usize),
    #[error("listing the replica of tenant {id}")]
    Storage {
        id: String,
        #[source]
        source: Box<storage::Error>,
    },
    #[error("the daemon is shutting down")]
    Stopping,
}

/// Why a job could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error("no restore job {0}")]
    Unknown(String),
    #[error("restore job {id} has already finished ({})", state.as_str())]
    Finished { id: String, state: State },
}

/// One job in the table.
struct Entry {
    view: JobView,
    progress: Arc<Progress>,
    cancel: CancellationToken,
}

impl Entry {
    fn view(&self) -> JobView {
        JobView { progress: self.progress.view(), ..self.view.clone() }
    }
}

/// The daemon's restore jobs (cheap to clone).
#[derive(Clone)]
pub struct Restores {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    board: Arc<Board>,
    root: Prefix,
    copy_dir: Option<PathBuf>,
    /// The watch directories (replaced on reload).
    watch: RwLock<Vec<WatchConfig>>,
    slots: Arc<Semaphore>,
    /// Every job kept, oldest first.
    jobs: Mutex<Vec<Entry>>,
    events: broadcast::Sender<JobView>,
    stop: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

/// The replica a request restores, and where its tenant lives.
struct Resolved {
    prefix: Prefix,
    /// The tenant's watch directory (a fork's default).
    watch_dir: Option<PathBuf>,
}

impl Restores {
    /// Restore jobs for the fleet of `config`, whose replicas are in `storage` and whose
    /// tenants are on `board`.
    pub fn new(config: &Config, storage: Storage, board: Arc<Board>) -> Restores {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Restores {
            inner: Arc::new(Inner {
                storage,
                board,
                root: config.storage.root.clone(),
                copy_dir: config.restore.dir.clone(),
                watch: RwLock::new(config.watch.clone()),
                slots: Arc::new(Semaphore::new(config.restore.concurrency.max(1))),
                jobs: Mutex::new(Vec::new()),
                events,
                stop: CancellationToken::new(),
                tasks: Mutex::new(JoinSet::new()),
            }),
        }
    }

    /// Job changes from now on (a job's whole view each time).
    pub fn subscribe(&self) -> broadcast::Receiver<JobView> {
        self.inner.events.subscribe()
    }

    /// Replaces the watch directories forks may go to (config reload).
    pub fn set_watch(&self, watch: Vec<WatchConfig>) {
        *self.inner.watch.write().unwrap_or_else(|e| e.into_inner()) = watch;
    }

    /// Every job kept, newest first; only tenant `tenant`'s when given.
    pub fn list(&self, tenant: Option<&str>) -> Vec<JobView> {
        let jobs = self.inner.lock_jobs();
        jobs.iter().rev().filter(|e| tenant.is_none_or(|t| e.view.tenant == t)).map(Entry::view).collect()
    }

    /// One job.
    pub fn get(&self, id: &str) -> Option<JobView> {
        self.inner.lock_jobs().iter().find(|e| e.view.id == id).map(Entry::view)
    }

    /// Cancels a queued or running job; it ends `cancelled` once its files are removed.
    pub fn cancel(&self, id: &str) -> Result<JobView, CancelError> {
        let jobs = self.inner.lock_jobs();
        let e = jobs.iter().find(|e| e.view.id == id).ok_or_else(|| CancelError::Unknown(id.to_owned()))?;
        if e.view.state.is_finished() {
            return Err(CancelError::Finished { id: id.to_owned(), state: e.view.state });
        }
        e.cancel.cancel();
        tracing::info!(job = id, tenant = %e.view.tenant, "restore job cancelled");
        Ok(e.view())
    }

    /// Cancels every job and waits (bounded) until each has removed its files.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(SHUTDOWN_WAIT, all).await.is_err() {
            tracing::warn!("restore jobs did not stop within {SHUTDOWN_WAIT:?}");
        }
    }

    /// Checks a request for tenant `id` and queues it; see [`SubmitError`] for every
    /// refusal.
    pub async fn submit(&self, id: &TenantId, req: Request) -> Result<JobView, SubmitError> {
        let inner = &self.inner;
        if inner.stop.is_cancelled() {
            return Err(SubmitError::Stopping);
        }
        let resolved = self.resolve(id).await?;
        let replica = inner.storage.replica(&resolved.prefix);
        let storage_err = |source| SubmitError::Storage { id: id.to_string(), source: Box::new(source) };
        let cat = Catalog::load(&replica).await.map_err(storage_err)?;
        let window =
            cat.window().map_err(|e| SubmitError::NotRestorable { id: id.to_string(), reason: e.to_string() })?;
        let (point, plan) = self.check_point(id, &replica, &cat, &window, req.point).await?;
        let (output, fork_id) = self.destination(id, &resolved, &req.destination, point)?;
        let progress = Arc::new(Progress::default());
        let last = plan.as_ref().and_then(|p| p.last());
        let view = JobView {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: id.to_string(),
            prefix: resolved.prefix.to_string(),
            replica_url: replica.url(),
            point,
            destination: match req.destination {
                Destination::Copy => "copy",
                Destination::Fork { .. } => "fork",
            },
            output: output.clone(),
            fork_id: fork_id.clone(),
            integrity_check: req.integrity,
            state: State::Queued,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
            progress: ProgressView::default(),
            txid: last.map(|s| s.file.max_txid),
            restored_at: last.and_then(|s| s.timestamp_ms).map(from_epoch_ms),
            size: None,
            sha256: None,
            integrity: None,
            error: None,
        };
        let job = restore::Job {
            integrity: req.integrity,
            sha256: true,
            plan,
            ..restore::Job::new(replica, point.target(), output)
        };
        let cancel = inner.stop.child_token();
        {
            let mut jobs = inner.lock_jobs();
            let queued = jobs.iter().filter(|e| e.view.state == State::Queued).count();
            if queued >= MAX_QUEUED {
                return Err(SubmitError::QueueFull(queued));
            }
            if let Some(e) = jobs.iter().find(|e| !e.view.state.is_finished() && e.view.output == view.output) {
                return Err(SubmitError::SameOutput { job: e.view.id.clone(), output: view.output.clone() });
            }
            jobs.push(Entry { view: view.clone(), progress: progress.clone(), cancel: cancel.clone() });
        }
        tracing::info!(
            job = %view.id, tenant = %id, point = %point.describe(), output = %view.output.display(),
            "restore job queued ({})", view.destination
        );
        let _ = inner.events.send(view.clone());
        let mut tasks = inner.tasks.lock().unwrap_or_else(|e| e.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(run(inner.clone(), view.id.clone(), job, progress, cancel));
        Ok(view)
    }

    /// The replica tenant `id` names: its registered database's, else the one a watch
    /// directory would give it (a tenant whose file is gone).
    async fn resolve(&self, id: &TenantId) -> Result<Resolved, SubmitError> {
        let inner = &self.inner;
        if let Some(t) = inner.board.by_id(id.as_str()).into_iter().next() {
            return Ok(Resolved { prefix: t.prefix, watch_dir: Some(t.watch_dir) });
        }
        let watch = inner.watch.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut found: Vec<Resolved> = Vec::new();
        for w in &watch {
            let prefix = Prefix::of_tenant(&inner.root, w.prefix.as_ref(), id);
            if found.iter().any(|r| r.prefix == prefix) {
                continue;
            }
            let cat = Catalog::load(&inner.storage.replica(&prefix))
                .await
                .map_err(|source| SubmitError::Storage { id: id.to_string(), source: Box::new(source) })?;
            if !cat.is_empty() {
                found.push(Resolved { prefix, watch_dir: Some(w.dir.clone()) });
            }
        }
        match found.len() {
            0 => Err(SubmitError::UnknownTenant {
                id: id.to_string(),
                place: format!("{}/{}", inner.storage.location(), inner.root),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(SubmitError::Ambiguous {
                id: id.to_string(),
                prefixes: found.into_iter().map(|r| r.prefix.to_string()).collect(),
            }),
        }
    }

    /// Checks `point` against the window; pins `latest` to the newest TXID. Returns the
    /// point the job restores and, for TXIDs, its plan (made from the listing, with the
    /// last file's header read so the state's time and size are known).
    async fn check_point(
        &self,
        id: &TenantId,
        replica: &storage::Replica,
        cat: &Catalog,
        window: &Window,
        point: Point,
    ) -> Result<(Point, Option<Vec<Step>>), SubmitError> {
        let outside = |why: String| SubmitError::OutsideWindow {
            id: id.to_string(),
            point: point.describe(),
            window: describe_window(window),
            why,
        };
        let storage_err = |e: restore::Error| match e {
            restore::Error::Storage(source) => SubmitError::Storage { id: id.to_string(), source: Box::new(source) },
            other => SubmitError::NotRestorable { id: id.to_string(), reason: chain(&other) },
        };
        let txid = match point {
            Point::Latest => window.latest_txid,
            Point::Txid(t) if t < window.earliest_txid => {
                return Err(outside("it is older than the oldest state the backups hold".into()));
            }
            Point::Txid(t) if t > window.latest_txid => {
                return Err(outside("it is newer than the newest TXID the backups hold".into()));
            }
            Point::Txid(t) => t,
            Point::Time(t) => {
                if t > SystemTime::now() {
                    return Err(outside("it is in the future".into()));
                }
                // The window starts when its first restorable file was committed: its
                // header time, which the listing time is never before.
                let first = cat
                    .files()
                    .iter()
                    .find(|f| f.min_txid == 1 && f.max_txid == window.earliest_txid)
                    .filter(|f| f.created.is_none_or(|c| c >= t));
                if let Some(f) = first {
                    let h = restore::read_header(replica, f).await.map_err(storage_err)?;
                    if epoch_ms(t) <= h.timestamp_ms {
                        return Err(outside(format!(
                            "the oldest state the backups hold was committed at {}",
                            humantime::format_rfc3339_millis(from_epoch_ms(h.timestamp_ms))
                        )));
                    }
                }
                return Ok((point, None));
            }
        };
        let target = Point::Txid(txid).target();
        let mut steps = match restore::plan_from(replica, cat.files().to_vec(), &target).await {
            Ok(s) => s,
            Err(restore::Error::Unreachable { got, .. }) => {
                return Err(outside(format!(
                    "no file of the backups ends at it (once L0 files are compacted, a restore by TXID stops at \
                     compacted files' ends; the nearest before it is {got:016x}); restore to a time instead"
                )));
            }
            Err(e) => return Err(storage_err(e)),
        };
        restore::read_last_header(replica, &mut steps).await.map_err(storage_err)?;
        Ok((Point::Txid(txid), Some(steps)))
    }

    /// The output path of a request (and a fork's new id), after checking its directory.
    fn destination(
        &self,
        id: &TenantId,
        resolved: &Resolved,
        dest: &Destination,
        point: Point,
    ) -> Result<(PathBuf, Option<String>), SubmitError> {
        let usable = |what: &'static str, dir: &Path| {
            check_writable(dir).map_err(|reason| SubmitError::Directory { what, dir: dir.to_path_buf(), reason })
        };
        match dest {
            Destination::Copy => {
                let dir = self.inner.copy_dir.as_ref().ok_or(SubmitError::NoCopyDir)?;
                usable("[restore] dir", dir)?;
                let out = dir.join(copy_name(id, point));
                if out.exists() {
                    return Err(SubmitError::OutputExists(out));
                }
                Ok((out, None))
            }
            Destination::Fork { watch_dir } => {
                let watch = self.inner.watch.read().unwrap_or_else(|e| e.into_inner()).clone();
                let w = match watch_dir.as_ref().or(resolved.watch_dir.as_ref()) {
                    Some(want) => {
                        watch.iter().find(|w| same_dir(&w.dir, want)).ok_or_else(|| SubmitError::NotAWatchDir {
                            dir: want.clone(),
                            choices: watch.iter().map(|w| w.dir.display().to_string()).collect(),
                        })?
                    }
                    None => watch
                        .first()
                        .ok_or_else(|| SubmitError::NotAWatchDir { dir: PathBuf::new(), choices: Vec::new() })?,
                };
                usable("watch directory", &w.dir)?;
                let new_id = uuid::Uuid::new_v4().hyphenated().to_string();
                let ext = w.extensions.first().map_or("db", String::as_str);
                Ok((w.dir.join(format!("{new_id}.{ext}")), Some(new_id)))
            }
        }
    }
}

impl Inner {
    fn lock_jobs(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes job `id` and broadcasts it.
    fn update(&self, id: &str, f: impl FnOnce(&mut JobView)) {
        let view = {
            let mut jobs = self.lock_jobs();
            let Some(e) = jobs.iter_mut().find(|e| e.view.id == id) else { return };
            f(&mut e.view);
            let view = e.view();
            // Forget the oldest finished jobs beyond what is kept.
            let finished = jobs.iter().filter(|e| e.view.state.is_finished()).count();
            if finished > KEPT_FINISHED
                && let Some(i) = jobs.iter().position(|e| e.view.state.is_finished())
            {
                jobs.remove(i);
            }
            view
        };
        let _ = self.events.send(view);
    }
}

/// Runs one job: waits for a slot, restores, records the outcome.
async fn run(inner: Arc<Inner>, id: String, job: restore::Job, progress: Arc<Progress>, cancel: CancellationToken) {
    let slot = tokio::select! {
        s = inner.slots.clone().acquire_owned() => s.ok(),
        _ = cancel.cancelled() => None,
    };
    let result = match slot {
        None => Err(restore::Error::Cancelled),
        Some(_slot) => {
            inner.update(&id, |v| {
                v.state = State::Running;
                v.started_at = Some(SystemTime::now());
            });
            let running = job.run(&progress, &cancel);
            tokio::pin!(running);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut shown = progress.view();
            loop {
                tokio::select! {
                    r = &mut running => break r,
                    _ = tick.tick() => {
                        let now = progress.view();
                        if now != shown {
                            shown = now;
                            inner.update(&id, |_| {});
                        }
                    }
                }
            }
        }
    };
    let (state, outcome) = match &result {
        Ok(_) => (State::Done, "done"),
        Err(restore::Error::Cancelled) => (State::Cancelled, "cancelled"),
        Err(_) => (State::Failed, "failed"),
    };
    crate::metrics::restore_job(outcome, result.as_ref().map_or(0, |s| s.bytes_downloaded));
    match &result {
        Ok(s) => tracing::info!(
            job = %id, txid = %format!("{:016x}", s.txid), bytes = s.size, took = ?s.elapsed,
            "♻️ restore job done: {}", job.out.display()
        ),
        Err(restore::Error::Cancelled) => tracing::info!(job = %id, "restore job cancelled; nothing written"),
        Err(e) => tracing::error!(job = %id, "restore job failed: {}", chain(e)),
    }
    inner.update(&id, |v| {
        v.state = state;
        v.finished_at = Some(SystemTime::now());
        match result {
            Ok(s) => {
                v.txid = Some(s.txid);
                v.restored_at = Some(from_epoch_ms(s.timestamp_ms));
                v.size = Some(s.size);
                v.sha256 = s.sha256;
                v.integrity = s.integrity;
            }
            Err(restore::Error::Cancelled) => {}
            Err(e) => v.error = Some(chain(&e)),
        }
    });
}

/// `TXID 0000000000000001 (2026-01-02T15:04:05Z) to TXID 00000000000000ff (…)`.
pub fn describe_window(w: &Window) -> String {
    let at = |t: Option<SystemTime>| {
        t.map_or("time unknown".to_owned(), |t| humantime::format_rfc3339_seconds(t).to_string())
    };
    format!(
        "TXID {:016x} ({}) to TXID {:016x} ({})",
        w.earliest_txid,
        at(w.earliest_at),
        w.latest_txid,
        at(w.latest_at)
    )
}

/// Whether two spellings name the same directory (canonical paths when both exist).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}
