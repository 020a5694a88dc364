//! The fleet: one daemon replicating every tenant database found in the watched
//! directories, each to its own prefix (`<root>/<id>/`) of one storage.
//!
//! This module owns the *registry* — which database file replicates where — and the
//! life of one task per tenant. A supervisor task turns [`watch`] events into
//! registrations (`Present`), unregistrations (`Gone`) and wake-ups (`Changed`), and
//! answers reloads and shutdown. Every tenant task owns one [`Replicator`] and sleeps
//! until it is woken: an idle tenant holds no timer, no SQLite connection and sends no
//! storage request.
//!
//! Invariants it keeps:
//! - At most one replicator writes under a storage prefix, ever: a second file that
//!   maps to a taken prefix is a `conflict` (both paths named), and a replacement task
//!   for a prefix starts only after the previous one has finished its final sync (a
//!   per-prefix lock held for the whole life of a task).
//! - At most `max_open_tenants` tenants hold a SQLite connection; tenants waiting for a
//!   slot make holders release right after their next sync.
//! - One tenant's failure (a garbage file, an unreadable one, storage refusing its
//!   prefix, a panic in its replicator) is contained: that tenant is `error`, retried
//!   with backoff, and every other tenant carries on.
//! - Shutdown stops intake, then gives every tenant that may hold unshipped commits a
//!   final sync, all within the shutdown timeout.
//!
//! It must never delete or rewrite anything in a replica (removal of a tenant stops
//! replication and leaves its backups as they are), never touch a file outside a watch
//! directory, and never log a credential.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedMutexGuard, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, StorageUrl, WatchConfig};
use crate::hooks::{Decision, HookTenant, Hooks, Verdict};
use crate::lifecycle::{Policy, Scheduler};
use crate::ltx::PageEncoding;
use crate::replicate::{Replicator, Settings, SyncReport};
use crate::status::{Board, FleetInfo, TenantState, TenantStatus};
use crate::storage::{self, Storage};
use crate::tenant::{self, Classified};
use crate::validate::{self, Outcome, Validation};
use crate::watch::{self, WatchDir, WatchEvent, WatchHandle, WatchOptions};

/// Longest wait between retries of a failing tenant.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First retry delay of a failing tenant.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);
/// Watch events buffered between the watcher and the supervisor.
const EVENT_BUFFER: usize = 4096;
/// After a tenant releases its connection, the heap is trimmed this much later (one trim
/// for a whole burst of releases, such as the first syncs of a start-up).
const TRIM_DELAY: Duration = Duration::from_secs(10);
/// Sync / open a read transaction / sync rounds a validation tries before giving up on
/// a tenant that keeps committing.
const PIN_ATTEMPTS: usize = 5;

/// Why the fleet could not start, reload or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The storage URL or its options are unusable.
    #[error("storage: {0}")]
    Storage(#[from] storage::Error),
    /// A watch directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The single database of the legacy mode (`-dsn`) is unusable.
    #[error("{}: {reason}", path.display())]
    Single {
        /// The `-dsn` path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The hook module could not be loaded at start.
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    /// The fleet has already stopped.
    #[error("the fleet has stopped")]
    Stopped,
}

/// What shutdown achieved.
#[derive(Debug, Default, Clone)]
pub struct ShutdownReport {
    /// Tenants whose replicator stopped (after a final sync where one was needed).
    pub stopped: usize,
    /// Final syncs that ran.
    pub final_syncs: usize,
    /// Tenants whose final sync failed, with the reason.
    pub failed: Vec<(String, String)>,
    /// Tenants still syncing when the shutdown timeout expired (their task was
    /// aborted; what they had not uploaded is still in their WAL).
    pub timed_out: Vec<String>,
}

/// A running fleet. Dropping it without [`Fleet::shutdown`] aborts replication
/// without final syncs.
pub struct Fleet {
    board: Arc<Board>,
    storage: Storage,
    #[cfg(test)]
    watcher: Arc<WatchHandle>,
    commands: mpsc::Sender<Command>,
    supervisor: tokio::task::JoinHandle<()>,
}

enum Command {
    Reload(Box<Config>, oneshot::Sender<Result<Vec<String>, Error>>),
    Shutdown(oneshot::Sender<ShutdownReport>),
}

impl Fleet {
    /// Validates `config`, opens storage, starts watching and returns at once; the
    /// initial scan runs in the background (the board says `ready` when it is done).
    /// Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Fleet, Error> {
        config.validate()?;
        let storage = open_storage(&config)?;
        let info = fleet_info(&config, &storage);
        let board = Arc::new(Board::new(info));
        let shutdown = CancellationToken::new();
        let (lifecycle, _) = Scheduler::start(
            storage.clone(),
            config.storage.root.clone(),
            policy(&config),
            config.lifecycle.concurrency,
            shutdown.child_token(),
        );
        let hooks = match &config.hooks {
            Some(h) => Some(Hooks::start(h, shutdown.child_token()).await?),
            None => None,
        };
        let released = Arc::new(Notify::new());
        tokio::spawn(trim_heap_after_releases(released.clone(), shutdown.child_token()));
        let shared = Arc::new(Shared {
            board: board.clone(),
            storage: storage.clone(),
            settings: settings(&config),
            sync_interval: config.replication.sync_interval,
            idle_after: config.replication.idle_after,
            hot_slots: Arc::new(Semaphore::new(config.replication.max_open_tenants.max(1))),
            startup_slots: Arc::new(Semaphore::new(config.fleet.startup_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            slot_wanted: Notify::new(),
            shutdown,
            lifecycle,
            released: released.clone(),
            validation: config.validation.enabled.then(|| Validator {
                temp_dir: config.validation.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
                slots: Arc::new(Semaphore::new(config.validation.concurrency.max(1))),
            }),
        });
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let watch_token = CancellationToken::new();
        let mut keys = DirKeys::default();
        let (dirs, single) = watch_plan(&config, &mut keys)?;
        let opts = WatchOptions {
            rescan_interval: config.fleet.rescan_interval,
            poll: config.fleet.poll,
            poll_interval: config.fleet.poll_interval,
        };
        banner(&config, &storage);
        let watcher = Arc::new(watch::spawn(dirs, opts, tx, watch_token.clone())?);
        let (commands, command_rx) = mpsc::channel(4);
        let sup = Supervisor {
            shared,
            config,
            keys,
            single,
            #[cfg(test)]
            watcher: Some(watcher.clone()),
            #[cfg(not(test))]
            watcher: Some(watcher),
            watch_token,
            entries: HashMap::new(),
            owners: HashMap::new(),
            skipped: BTreeSet::new(),
            locks: HashMap::new(),
            tasks: JoinSet::new(),
            task_paths: HashMap::new(),
            crashes: HashMap::new(),
            ready: false,
            hooks,
            deciding: JoinSet::new(),
            pending: HashMap::new(),
            generation: 0,
            validated: HashMap::new(),
            round: 0,
        };
        let supervisor = tokio::spawn(sup.run(events, command_rx));
        Ok(Fleet {
            board,
            storage,
            #[cfg(test)]
            watcher,
            commands,
            supervisor,
        })
    }

    /// The status board (for the dashboard, the API and tests).
    pub fn board(&self) -> Arc<Board> {
        self.board.clone()
    }

    /// The storage every replica lives in.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Applies a new configuration: watch directories are added and removed without a
    /// restart (their tenants registered or unregistered); `non_guid` changes
    /// re-evaluate every file. Returns the settings that changed but need a restart
    /// (`storage`, `replication`, `http`, …), for a warning. An invalid config is
    /// refused and the running one kept.
    pub async fn reload(&self, config: Config) -> Result<Vec<String>, Error> {
        config.validate()?;
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Reload(Box::new(config), tx)).await.map_err(|_| Error::Stopped)?;
        rx.await.map_err(|_| Error::Stopped)?
    }

    /// Stops intake, makes a final sync of every tenant that may hold unshipped
    /// commits (bounded by `fleet.shutdown_timeout`), and stops.
    pub async fn shutdown(self) -> ShutdownReport {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_err() {
            return ShutdownReport::default();
        }
        let report = rx.await.unwrap_or_default();
        let _ = self.supervisor.await;
        report
    }
}

/// Builds the storage of a config.
pub fn open_storage(config: &Config) -> Result<Storage, storage::Error> {
    let s = &config.storage;
    let url = match &s.url {
        // One process-wide store per daemon: tests run several fleets in one process.
        StorageUrl::Memory => format!("memory://fleet-{}", std::process::id()),
        other => other.to_string(),
    };
    let opts = storage::Options {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        force_path_style: s.force_path_style,
        access_key_id: s.access_key_id.as_ref().map(|k| k.expose().to_owned()),
        secret_access_key: s.secret_access_key.as_ref().map(|k| k.expose().to_owned()),
    };
    Storage::from_url(&url, &opts)
}

/// Replicator settings from a config.
pub fn settings(config: &Config) -> Settings {
    let r = &config.replication;
    Settings {
        sync_interval: r.sync_interval,
        checkpoint_interval: r.checkpoint_interval,
        min_checkpoint_pages: u64::from(r.min_checkpoint_pages),
        truncate_pages: u64::from(r.truncate_pages),
        busy_timeout: r.busy_timeout,
        page_encoding: match r.page_encoding {
            config::PageEncoding::Block => PageEncoding::Lz4Block,
            config::PageEncoding::Frame => PageEncoding::Lz4Frame,
        },
        state_dir: Some(r.state_dir.clone()),
        ..Settings::default()
    }
}

/// The lifecycle policy of a config.
pub fn policy(config: &Config) -> Policy {
    let l = &config.lifecycle;
    Policy {
        levels: l.levels.clone(),
        snapshot_interval: l.snapshot_interval,
        snapshot_retention: l.snapshot_retention,
        l0_retention: l.l0_retention,
        retention: l.retention,
        encoding: settings(config).page_encoding,
    }
}

/// `active` tenants are shown as `lagging` once a change waits this long.
pub fn lag_threshold(sync_interval: Duration) -> Duration {
    (sync_interval * 5).max(Duration::from_secs(10))
}

fn fleet_info(config: &Config, storage: &Storage) -> FleetInfo {
    let bucket = match &config.storage.url {
        StorageUrl::S3 { bucket, .. } => bucket.clone(),
        StorageUrl::File { path } => path.display().to_string(),
        StorageUrl::Memory => "memory".to_owned(),
    };
    FleetInfo {
        storage_url: storage.url().split('?').next().unwrap_or_default().to_owned(),
        bucket,
        root: config.storage.root.clone(),
        watch_dirs: watch_dirs_shown(config),
        started_at: SystemTime::now(),
        lag_threshold: lag_threshold(config.replication.sync_interval),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

fn watch_dirs_shown(config: &Config) -> Vec<PathBuf> {
    match &config.single {
        Some(s) => vec![s.path.clone()],
        None => config.watch.iter().map(|w| w.dir.clone()).collect(),
    }
}

/// The seed's start-up lines.
fn banner(config: &Config, storage: &Storage) {
    let mode = if config.single.is_some() { "Legacy Mode" } else { "Directory Mode" };
    tracing::info!("🏢 litefleet Multi-Client Manager ({mode}) v{}", env!("CARGO_PKG_VERSION"));
    match &config.storage.url {
        StorageUrl::S3 { bucket, .. } => tracing::info!("📦 S3 Bucket: {bucket}"),
        _ => tracing::info!("📦 Storage: {}", storage.url()),
    }
    tracing::info!("{}", config.redacted_summary());
    let dirs: Vec<String> = watch_dirs_shown(config).iter().map(|d| d.display().to_string()).collect();
    if config.single.is_none() {
        tracing::info!("👀 Watching Directories: [{}]", dirs.join(", "));
        for d in &dirs {
            tracing::info!("👀 Watching directory: {d}");
        }
    }
}

/// Stable keys for watch directories across reloads: an unchanged `[[watch]]` entry
/// keeps its key (its tenants keep running); a changed one gets a new key (its
/// tenants are unregistered and registered again under the new rules).
#[derive(Default)]
struct DirKeys {
    next: usize,
    by_key: BTreeMap<usize, WatchConfig>,
}

impl DirKeys {
    fn assign(&mut self, wanted: &[WatchConfig], rekey_all: bool) -> Vec<(usize, WatchConfig)> {
        let mut out = Vec::new();
        let mut kept = BTreeMap::new();
        for w in wanted {
            let existing =
                if rekey_all { None } else { self.by_key.iter().find(|(k, c)| *c == w && !kept.contains_key(*k)) };
            let key = match existing {
                Some((k, _)) => *k,
                None => {
                    self.next += 1;
                    self.next
                }
            };
            kept.insert(key, w.clone());
            out.push((key, w.clone()));
        }
        self.by_key = kept;
        out
    }
}

/// The legacy mode's one database: its canonical path, id and prefix.
#[derive(Clone)]
struct SingleSpec {
    path: PathBuf,
    id: String,
    prefix: String,
}

/// What to hand the watcher: the `[[watch]]` directories, or the legacy database's
/// folder.
fn watch_plan(config: &Config, keys: &mut DirKeys) -> Result<(Vec<WatchDir>, Option<SingleSpec>), Error> {
    if let Some(single) = &config.single {
        let bad = |reason: String| Error::Single { path: single.path.clone(), reason };
        let name = single.path.file_name().ok_or_else(|| bad("names no file".into()))?.to_owned();
        let parent = match single.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::fs::canonicalize(&parent).map_err(|e| bad(format!("cannot use its folder: {e}")))?;
        let ext = Path::new(&name).extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        if ext.is_empty() {
            return Err(bad("has no file extension (the watcher needs one, e.g. .db)".into()));
        }
        let spec =
            SingleSpec { path: dir.join(&name), id: single.name.clone(), prefix: single.prefix(&config.storage.root) };
        let mut wd = WatchDir::new(0, dir);
        wd.extensions = vec![ext];
        return Ok((vec![wd], Some(spec)));
    }
    let dirs = keys
        .assign(&config.watch, false)
        .into_iter()
        .map(|(key, w)| WatchDir { key, path: w.dir.clone(), recursive: w.recursive, extensions: w.extensions.clone() })
        .collect();
    Ok((dirs, None))
}

/// Everything the tenant tasks share.
struct Shared {
    board: Arc<Board>,
    storage: Storage,
    settings: Settings,
    sync_interval: Duration,
    idle_after: Duration,
    /// One permit per open SQLite connection (`max_open_tenants`).
    hot_slots: Arc<Semaphore>,
    /// Bounds first syncs running at once (start-up of 10,000 existing files).
    startup_slots: Arc<Semaphore>,
    /// Tasks waiting for a hot slot: holders release right after their next sync.
    waiting: AtomicUsize,
    /// Signalled when a task starts waiting for a hot slot: idle holders (hot, nothing
    /// scheduled) release theirs at once instead of at `idle_after`.
    slot_wanted: Notify,
    /// Fleet shutdown: every task makes its final sync and ends.
    shutdown: CancellationToken,
    /// Compaction, snapshots and retention, told about every upload.
    lifecycle: Scheduler,
    /// Restore validation (`[validation] enabled`).
    validation: Option<Validator>,
    /// Signalled when a tenant releases its connection (see [`trim_heap_after_releases`]).
    released: Arc<Notify>,
}

/// What tenant tasks need to validate their replica.
struct Validator {
    temp_dir: PathBuf,
    /// Restores running at once (`[validation] concurrency`).
    slots: Arc<Semaphore>,
}

/// A registered database file.
enum Entry {
    /// Replicating: its task runs.
    Active(Registered),
    /// Refused because `owner` replicates under the same prefix.
    Conflict { id: String },
    /// Not replicated because the hook failed and `on_error = "refuse"`.
    Refused { id: String },
}

/// A hook's answer about a new file, back in the supervisor.
struct Decided {
    path: PathBuf,
    generation: u64,
    id: String,
    watch_dir: PathBuf,
    verdict: Verdict,
}

struct Registered {
    id: String,
    prefix: String,
    wake: Arc<Notify>,
    /// Asks the task to validate its replica.
    validate: Arc<Notify>,
    stop: CancellationToken,
}

/// How a tenant task ended.
struct TaskEnd {
    path: PathBuf,
    id: String,
    final_sync: Option<Result<SyncReport, String>>,
}

struct Supervisor {
    shared: Arc<Shared>,
    config: Config,
    keys: DirKeys,
    single: Option<SingleSpec>,
    watcher: Option<Arc<WatchHandle>>,
    watch_token: CancellationToken,
    /// Every registered file (replicating or in conflict), by canonical path.
    entries: HashMap<PathBuf, Entry>,
    /// Which file owns each storage prefix.
    owners: HashMap<String, PathBuf>,
    /// Database files skipped (name, or refused by the watcher).
    skipped: BTreeSet<PathBuf>,
    /// Per-prefix locks: a task holds its prefix's lock for its whole life.
    locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
    tasks: JoinSet<TaskEnd>,
    task_paths: HashMap<tokio::task::Id, (PathBuf, String)>,
    /// Panics per path, for the restart backoff.
    crashes: HashMap<PathBuf, u32>,
    ready: bool,
    /// The tenant hook, if configured.
    hooks: Option<Hooks>,
    /// Hook calls in flight for new files.
    deciding: JoinSet<Decided>,
    /// Files waiting for their hook's answer, with the generation of the request (a
    /// `Gone` in between, or a newer `Present`, makes an answer stale).
    pending: HashMap<PathBuf, u64>,
    generation: u64,
    /// Restore validation: the round in which each tenant was last asked to validate.
    validated: HashMap<PathBuf, u64>,
    round: u64,
}

impl Supervisor {
    async fn run(mut self, mut events: mpsc::Receiver<WatchEvent>, mut commands: mpsc::Receiver<Command>) {
        let mut watching = true;
        let mut rounds = self.shared.validation.as_ref().map(|_| {
            let every = self.config.validation.interval;
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                _ = async { rounds.as_mut().unwrap_or_else(|| unreachable!()).tick().await }, if rounds.is_some() => {
                    self.request_validations();
                }
                ev = events.recv(), if watching => match ev {
                    Some(ev) => self.on_event(ev),
                    None => {
                        tracing::error!("the directory watcher stopped; no new tenants will be found until restart");
                        watching = false;
                    }
                },
                Some(res) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.on_task_end(res),
                Some(done) = self.deciding.join_next(), if !self.deciding.is_empty() => match done {
                    Ok(d) => self.on_decided(d),
                    Err(e) => tracing::error!("hook call task failed: {e}"),
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload(config, reply)) => {
                        let r = self.reload(*config).await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Shutdown(reply)) => {
                        let report = self.shutdown().await;
                        let _ = reply.send(report);
                        return;
                    }
                    None => {
                        // The Fleet was dropped: stop without final syncs.
                        self.watch_token.cancel();
                        self.tasks.abort_all();
                        return;
                    }
                },
            }
        }
    }

    /// Asks the `[validation] tenants` replicating tenants validated longest ago (never
    /// first) to validate their replica.
    fn request_validations(&mut self) {
        self.round += 1;
        let mut due: Vec<(u64, &PathBuf, &Registered)> = self
            .entries
            .iter()
            .filter_map(|(p, e)| match e {
                Entry::Active(r) => Some((self.validated.get(p).copied().unwrap_or(0), p, r)),
                _ => None,
            })
            .collect();
        let n = self.config.validation.tenants.min(due.len());
        if n == 0 {
            return;
        }
        due.select_nth_unstable_by(n - 1, |a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
        let chosen: Vec<PathBuf> = due[..n]
            .iter()
            .map(|(_, p, r)| {
                r.validate.notify_one();
                (*p).clone()
            })
            .collect();
        tracing::debug!(round = self.round, tenants = n, "validation round");
        for p in chosen {
            self.validated.insert(p, self.round);
        }
    }

    fn dir_config(&self, key: usize) -> Option<&WatchConfig> {
        self.keys.by_key.get(&key)
    }

    fn on_event(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Present { path, dir } => self.on_present(path, dir),
            WatchEvent::Gone { path, .. } => self.on_gone(&path),
            WatchEvent::Changed { path } => {
                if let Some(Entry::Active(r)) = self.entries.get(&path) {
                    r.wake.notify_one();
                }
            }
            WatchEvent::Refused { path, reason, .. } => {
                tracing::warn!("⚠️  Refused {}: {reason}", path.display());
                self.skipped.insert(path.clone());
                self.shared.board.skip(&path, &reason);
            }
            WatchEvent::ScanComplete { dirs, files } => {
                if !self.ready {
                    self.ready = true;
                    self.shared.board.set_ready(true);
                    let clients = self.entries.values().filter(|e| matches!(e, Entry::Active(_))).count();
                    tracing::info!("🎯 Monitoring {clients} clients across {dirs} directories");
                } else {
                    tracing::debug!(dirs, files, "rescan complete");
                }
            }
        }
    }

    fn on_present(&mut self, path: PathBuf, dir: usize) {
        if self.entries.contains_key(&path) || self.pending.contains_key(&path) {
            return;
        }
        let (id, prefix, watch_dir) = if let Some(single) = &self.single {
            if path != single.path {
                return;
            }
            (single.id.clone(), single.prefix.clone(), single.path.clone())
        } else {
            let Some(w) = self.dir_config(dir) else { return };
            match tenant::classify(&path, &w.extensions, self.config.fleet.non_guid) {
                Classified::Ignored => return,
                Classified::Skipped { reason } => {
                    if self.skipped.insert(path.clone()) {
                        tracing::warn!("⏭️  Skipped {}: {reason}", path.display());
                    }
                    self.shared.board.skip(&path, &reason);
                    return;
                }
                Classified::Tenant(id) => {
                    let prefix = tenant::default_prefix(&self.config.storage.root, w.prefix.as_deref(), &id);
                    (id.as_str().to_owned(), prefix, w.dir.clone())
                }
            }
        };
        if self.skipped.remove(&path) {
            self.shared.board.unskip(&path);
        }
        if self.ready {
            tracing::info!("📁 Database created: {}", path.display());
        }
        if let Some(hooks) = &self.hooks {
            // The hook decides the prefix (or refuses); its answer comes back through
            // `deciding`, so a slow hook never holds up the watcher or other tenants.
            self.generation += 1;
            let generation = self.generation;
            self.pending.insert(path.clone(), generation);
            let (hooks, t) = (
                hooks.clone(),
                HookTenant {
                    id: id.clone(),
                    database_path: path.clone(),
                    watch_dir: watch_dir.clone(),
                    default_prefix: prefix,
                },
            );
            self.deciding.spawn(async move {
                let verdict = hooks.on_register(&t).await;
                Decided { path: t.database_path, generation, id: t.id, watch_dir: t.watch_dir, verdict }
            });
            return;
        }
        self.register(path, id, prefix, watch_dir, BTreeMap::new());
    }

    fn on_decided(&mut self, d: Decided) {
        if self.pending.get(&d.path) != Some(&d.generation) {
            return; // gone (or replaced) while the hook ran
        }
        self.pending.remove(&d.path);
        let Decided { path, id, watch_dir, verdict, .. } = d;
        match verdict.decision {
            Decision::Accept { prefix, labels } => {
                if let Some(e) = &verdict.hook_error {
                    tracing::warn!(tenant = %id, "hook failed, using the default prefix (on_error = \"default\"): {e}");
                }
                self.register(path, id, prefix, watch_dir, labels);
            }
            Decision::Refuse { reason } => match verdict.hook_error {
                Some(e) => {
                    tracing::error!(tenant = %id, "hook failed, not replicating {} (on_error = \"refuse\"): {e}", path.display());
                    let mut status = TenantStatus::new(&id, &path, &watch_dir, "", "");
                    status.state = TenantState::Error;
                    status.last_error = Some(format!("hook failed: {e}"));
                    self.shared.board.upsert(status);
                    self.entries.insert(path, Entry::Refused { id });
                }
                None => {
                    let reason = format!("refused by the hook: {reason}");
                    tracing::warn!("⏭️  Skipped {}: {reason}", path.display());
                    self.skipped.insert(path.clone());
                    self.shared.board.skip(&path, &reason);
                }
            },
        }
    }

    /// Registers `path` under `prefix` (or records a conflict with the prefix's owner).
    fn register(
        &mut self,
        path: PathBuf,
        id: String,
        prefix: String,
        watch_dir: PathBuf,
        labels: BTreeMap<String, String>,
    ) {
        let replica = self.shared.storage.replica(&prefix);
        let shown = replica_shown(&replica);
        let mut status = TenantStatus::new(&id, &path, &watch_dir, &prefix, &replica.url());
        status.labels = labels;
        if let Some(owner) = self.owners.get(&prefix).filter(|o| **o != path) {
            let reason = format!(
                "{} and {} would both replicate to {shown}; only the first replicates (give their watch directories their own `prefix`)",
                owner.display(),
                path.display()
            );
            tracing::error!("❌ Conflict: {reason}");
            status.state = TenantState::Conflict;
            status.conflict_with = Some(owner.clone());
            status.last_error = Some(reason);
            self.shared.board.upsert(status);
            self.entries.insert(path, Entry::Conflict { id });
            return;
        }
        self.shared.board.upsert(status);
        tracing::info!("✅ Client registered: {id} -> {shown}/");
        self.owners.insert(prefix.clone(), path.clone());
        let reg = self.spawn(path.clone(), id, prefix, Duration::ZERO);
        self.entries.insert(path, Entry::Active(reg));
    }

    fn spawn(&mut self, path: PathBuf, id: String, prefix: String, delay: Duration) -> Registered {
        let wake = Arc::new(Notify::new());
        let validate = Arc::new(Notify::new());
        let stop = self.shared.shutdown.child_token();
        let lock = self.locks.entry(prefix.clone()).or_default().clone();
        let task = TenantTask::new(self.shared.clone(), path.clone(), id.clone(), prefix.clone());
        let handle = self.tasks.spawn(task.run(wake.clone(), validate.clone(), stop.clone(), lock, delay));
        self.task_paths.insert(handle.id(), (path, id.clone()));
        Registered { id, prefix, wake, validate, stop }
    }

    fn on_gone(&mut self, path: &Path) {
        if self.skipped.remove(path) {
            self.shared.board.unskip(path);
        }
        self.pending.remove(path);
        self.validated.remove(path);
        let Some(entry) = self.entries.remove(path) else { return };
        tracing::info!("🗑️  Database removed: {}", path.display());
        self.shared.board.remove(path);
        match entry {
            Entry::Active(r) => {
                r.stop.cancel();
                if self.owners.get(&r.prefix).is_some_and(|o| o == path) {
                    self.owners.remove(&r.prefix);
                }
                tracing::info!("❌ Client unregistered: {}", r.id);
                if let Some(hooks) = &self.hooks {
                    let (hooks, t) = (
                        hooks.clone(),
                        HookTenant {
                            id: r.id.clone(),
                            database_path: path.to_path_buf(),
                            watch_dir: PathBuf::new(),
                            default_prefix: r.prefix.clone(),
                        },
                    );
                    tokio::spawn(async move { hooks.on_unregister(&t).await });
                }
            }
            Entry::Conflict { id } => tracing::info!("❌ Client unregistered: {id} (was in conflict)"),
            Entry::Refused { id } => tracing::info!("❌ Client unregistered: {id} (was refused)"),
        }
    }

    fn on_task_end(&mut self, res: Result<(tokio::task::Id, TaskEnd), tokio::task::JoinError>) {
        match res {
            Ok((tid, end)) => {
                self.task_paths.remove(&tid);
                if let Some(Err(e)) = &end.final_sync {
                    tracing::error!(tenant = %end.id, "final sync of {} failed: {e}", end.path.display());
                }
            }
            Err(e) => {
                let Some((path, id)) = self.task_paths.remove(&e.id()) else { return };
                let what = if e.is_panic() { panic_message(e.into_panic()) } else { "cancelled".to_owned() };
                // Still registered (not a task we stopped)? Restart it after a pause.
                let prefix = match self.entries.get(&path) {
                    Some(Entry::Active(r)) if !r.stop.is_cancelled() => r.prefix.clone(),
                    _ => return,
                };
                let n = self.crashes.entry(path.clone()).or_insert(0);
                *n += 1;
                let delay = (MIN_BACKOFF * 2u32.saturating_pow(*n)).min(MAX_BACKOFF);
                tracing::error!(tenant = %id, "replicator of {} crashed ({what}); restarting in {delay:?}", path.display());
                self.shared.board.update(&path, |s| {
                    s.state = TenantState::Error;
                    s.errors += 1;
                    s.hot = false;
                    s.last_error = Some(format!("replicator crashed: {what}; restarting in {}s", delay.as_secs()));
                });
                let reg = self.spawn(path.clone(), id, prefix, delay);
                self.entries.insert(path, Entry::Active(reg));
            }
        }
    }

    async fn reload(&mut self, config: Config) -> Result<Vec<String>, Error> {
        let old = &self.config;
        let mut restart = Vec::new();
        if old.storage != config.storage {
            restart.push("storage".to_owned());
        }
        if old.replication != config.replication {
            restart.push("replication".to_owned());
        }
        if old.http != config.http {
            restart.push("http".to_owned());
        }
        if old.log != config.log {
            restart.push("log".to_owned());
        }
        if old.lifecycle != config.lifecycle {
            restart.push("lifecycle".to_owned());
        }
        if old.validation != config.validation {
            restart.push("validation".to_owned());
        }
        if old.hooks != config.hooks {
            restart.push("hooks".to_owned());
        } else if let Some(h) = &self.hooks
            && let Err(e) = h.reload().await
        {
            tracing::warn!("hook reload failed, the running hook stays: {e}");
        }
        let f = (&old.fleet, &config.fleet);
        if f.0.rescan_interval != f.1.rescan_interval
            || f.0.poll != f.1.poll
            || f.0.poll_interval != f.1.poll_interval
            || f.0.startup_concurrency != f.1.startup_concurrency
            || f.0.shutdown_timeout != f.1.shutdown_timeout
        {
            restart.push("fleet (except non_guid)".to_owned());
        }
        if self.single.is_none() {
            let rekey = old.fleet.non_guid != config.fleet.non_guid;
            let mut keys = DirKeys { next: self.keys.next, by_key: self.keys.by_key.clone() };
            let dirs: Vec<WatchDir> = keys
                .assign(&config.watch, rekey)
                .into_iter()
                .map(|(key, w)| WatchDir {
                    key,
                    path: w.dir.clone(),
                    recursive: w.recursive,
                    extensions: w.extensions.clone(),
                })
                .collect();
            let watcher = self.watcher.as_ref().ok_or(Error::Stopped)?;
            // Events about the new directories may arrive before set_dirs returns:
            // switch the rules first, restore them if the watcher refuses.
            let old_keys = std::mem::replace(&mut self.keys, keys);
            let old_non_guid = std::mem::replace(&mut self.config.fleet.non_guid, config.fleet.non_guid);
            if let Err(e) = watcher.set_dirs(dirs).await {
                if matches!(e, watch::WatchError::Dir { .. } | watch::WatchError::NotADirectory { .. }) {
                    self.keys = old_keys;
                    self.config.fleet.non_guid = old_non_guid;
                }
                return Err(e.into());
            }
            self.shared.board.set_watch_dirs(config.watch.iter().map(|w| w.dir.clone()).collect());
            // A `non_guid` change rekeys every directory: the watcher reports each
            // file Gone then Present, and every name is classified again.
        }
        // Keep what needs a restart as it runs; take the rest.
        let mut next = config;
        next.storage = self.config.storage.clone();
        next.replication = self.config.replication.clone();
        next.http = self.config.http.clone();
        next.log = self.config.log.clone();
        next.hooks = self.config.hooks.clone();
        next.lifecycle = self.config.lifecycle.clone();
        next.single = self.config.single.clone();
        self.config = next;
        Ok(restart)
    }

    async fn shutdown(mut self) -> ShutdownReport {
        let timeout = self.config.fleet.shutdown_timeout;
        tracing::info!(tenants = self.tasks.len(), timeout = ?timeout, "shutting down: final sync of every tenant");
        self.watch_token.cancel();
        self.shared.shutdown.cancel();
        let mut report = ShutdownReport::default();
        let deadline = Instant::now() + timeout;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next_with_id()).await {
                Ok(Some(Ok((tid, end)))) => {
                    self.task_paths.remove(&tid);
                    report.stopped += 1;
                    match end.final_sync {
                        Some(Ok(_)) => report.final_syncs += 1,
                        Some(Err(e)) => {
                            tracing::error!(tenant = %end.id, "final sync of {} failed: {e}", end.path.display());
                            report.final_syncs += 1;
                            report.failed.push((end.id, e));
                        }
                        None => {}
                    }
                }
                Ok(Some(Err(e))) => {
                    if let Some((path, id)) = self.task_paths.remove(&e.id()) {
                        let what = if e.is_panic() { panic_message(e.into_panic()) } else { "cancelled".into() };
                        report.failed.push((id, format!("{}: replicator crashed: {what}", path.display())));
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    report.timed_out = self.task_paths.values().map(|(_, id)| id.clone()).collect();
                    report.timed_out.sort();
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        if let Some(w) = self.watcher.take().and_then(|w| Arc::try_unwrap(w).ok()) {
            w.join().await;
        }
        report
    }
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// The replica's location as the seed's log line shows it (no query string).
fn replica_shown(replica: &storage::Replica) -> String {
    replica.url().split('?').next().unwrap_or_default().to_owned()
}

/// What a commit changes: the WAL (identity, size, mtime) and the database's identity
/// and size. Our own checkpoints write the database in place, never the WAL, so an
/// unchanged stamp after a wake-up means nothing was committed since it was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    db: Option<(u64, u64, u64)>,
    wal: Option<(u64, u64, u64, Option<SystemTime>)>,
}

impl Stamp {
    fn of(db: &Path) -> Stamp {
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        Stamp {
            db: std::fs::metadata(db).ok().map(|m| (m.dev(), m.ino(), m.len())),
            wal: std::fs::metadata(PathBuf::from(wal)).ok().map(|m| (m.dev(), m.ino(), m.len(), m.modified().ok())),
        }
    }
}

/// One tenant's replication loop.
struct TenantTask {
    shared: Arc<Shared>,
    path: PathBuf,
    id: String,
    prefix: String,
    /// Created once the prefix lock is held.
    r: Option<Replicator>,
    permit: Option<OwnedSemaphorePermit>,
    /// When the oldest change not yet shipped was seen.
    dirty_since: Option<SystemTime>,
    /// When the next sync runs (`None`: nothing to do, no timer).
    due: Option<Instant>,
    /// When the idle hot connection is released (`None`: cold, no timer).
    idle_at: Option<Instant>,
    backoff: Duration,
    /// Upload pacing (a GCRA): the theoretical time of the next upload. A sync may run
    /// from `paced_until - sync_interval` on, and each one that uploads something moves
    /// it `sync_interval` on — at most one upload per interval on average, with bursts
    /// of two, so a tenant's second commit within a second ships at once too while a
    /// continuously written one is coalesced. A sync that found nothing to ship (it
    /// ran before the commit was complete) moves nothing.
    paced_until: Option<Instant>,
    /// Stamp taken before the last successful sync.
    stamp: Option<Stamp>,
    synced_once: bool,
}

impl TenantTask {
    fn new(shared: Arc<Shared>, path: PathBuf, id: String, prefix: String) -> TenantTask {
        TenantTask {
            shared,
            path,
            id,
            prefix,
            r: None,
            permit: None,
            dirty_since: None,
            due: None,
            idle_at: None,
            backoff: Duration::ZERO,
            paced_until: None,
            stamp: None,
            synced_once: false,
        }
    }

    async fn run(
        mut self,
        wake: Arc<Notify>,
        validate: Arc<Notify>,
        stop: CancellationToken,
        lock: Arc<tokio::sync::Mutex<()>>,
        delay: Duration,
    ) -> TaskEnd {
        // Never two replicators under one prefix: wait for the previous owner's final
        // sync to finish.
        let _guard: OwnedMutexGuard<()> = tokio::select! {
            g = lock.lock_owned() => g,
            _ = stop.cancelled() => return self.end(None),
        };
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return self.end(None),
            }
        }
        let replica = self.shared.storage.replica(&self.prefix);
        self.r = Some(Replicator::new(&self.path, replica, self.shared.settings.clone()));
        self.due = Some(Instant::now());
        self.dirty_since = Some(SystemTime::now());
        let shared = self.shared.clone();
        loop {
            // One timer at most: the next sync, else the release of an idle connection.
            let timer = match (self.due, self.idle_at) {
                (Some(at), _) => Some((at, true)),
                (None, Some(at)) => Some((at, false)),
                (None, None) => None,
            };
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = wake.notified() => self.on_wake(),
                // The work is boxed: this future rests in memory once per tenant (100,000
                // of them), while a sync's own state is needed only while it runs.
                _ = tokio::time::sleep_until(timer.map_or(far, |t| t.0)), if timer.is_some() => {
                    if timer.is_some_and(|t| t.1) {
                        Box::pin(self.sync_now(&stop)).await;
                    } else {
                        Box::pin(self.go_idle()).await;
                    }
                }
                _ = shared.slot_wanted.notified(), if self.permit.is_some() && self.due.is_none() => {
                    // Another tenant needs a connection slot and this one is idle.
                    Box::pin(self.go_idle()).await;
                }
                _ = validate.notified() => Box::pin(self.validate(&stop)).await,
            }
        }
        let result = Box::pin(self.finish()).await;
        self.end(result)
    }

    fn end(&self, final_sync: Option<Result<SyncReport, String>>) -> TaskEnd {
        TaskEnd { path: self.path.clone(), id: self.id.clone(), final_sync }
    }

    fn replicator(&mut self) -> &mut Replicator {
        self.r.as_mut().unwrap_or_else(|| unreachable!("created before the loop"))
    }

    fn is_hot(&self) -> bool {
        self.r.as_ref().is_some_and(|r| r.is_hot())
    }

    fn on_wake(&mut self) {
        let now = Instant::now();
        if !self.is_hot() && self.backoff.is_zero() && self.due.is_none() && self.stamp == Some(Stamp::of(&self.path)) {
            // Cold and nothing committed since the last sync: our own checkpoint, a
            // rescan's repeat, or an `-shm` touch. No connection, no request.
            return;
        }
        if self.dirty_since.is_none() {
            let t = SystemTime::now();
            self.dirty_since = Some(t);
            self.shared.board.update(&self.path, |s| s.pending_since = Some(t));
        }
        if self.backoff.is_zero() {
            let interval = self.shared.sync_interval;
            let earliest = self.paced_until.and_then(|t| t.checked_sub(interval)).map_or(now, |t| t.max(now));
            if self.due.is_none_or(|d| d > earliest) {
                self.due = Some(earliest);
            }
        }
    }

    /// Takes a hot slot (a connection may be opened). `false` if stopped meanwhile.
    async fn take_slot(&mut self, stop: Option<&CancellationToken>) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let slots = self.shared.hot_slots.clone();
        if let Ok(p) = slots.clone().try_acquire_owned() {
            self.permit = Some(p);
            return true;
        }
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        self.shared.slot_wanted.notify_waiters();
        let got = match stop {
            Some(stop) => tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = stop.cancelled() => None,
            },
            None => slots.acquire_owned().await.ok(),
        };
        self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
        self.permit = got;
        self.permit.is_some()
    }

    async fn sync_now(&mut self, stop: &CancellationToken) {
        let startup = if self.synced_once {
            None
        } else {
            let slots = self.shared.startup_slots.clone();
            tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = stop.cancelled() => return,
            }
        };
        if !self.take_slot(Some(stop)).await {
            return;
        }
        let first = !self.synced_once;
        let result = self.sync_once().await;
        drop(startup);
        if result.is_ok() {
            if first && self.dirty_since.is_none() && self.is_hot() {
                // An existing tenant found at start-up (or a new one) is probably idle:
                // release its connection now rather than after `idle_after`, so a
                // start-up of 100,000 tenants holds `startup_concurrency` connections,
                // not 100,000. Its next write reopens it.
                self.go_idle().await;
            } else {
                self.after_sync().await;
            }
        }
    }

    /// One sync with a slot held: ships everything committed, records the outcome.
    async fn sync_once(&mut self) -> Result<SyncReport, String> {
        self.due = None;
        let stamp = Stamp::of(&self.path);
        let waited_since = self.dirty_since.take();
        if let Some(t) = waited_since {
            crate::metrics::lag(&self.id, SystemTime::now().duration_since(t).unwrap_or_default());
        }
        let started = Instant::now();
        match self.replicator().sync().await {
            Ok(rep) => {
                if rep.uploaded > 0 {
                    let from = self.paced_until.map_or(started, |t| t.max(started));
                    self.paced_until = Some(from + self.shared.sync_interval);
                }
                crate::metrics::sync_ok(
                    &self.id,
                    rep.uploaded,
                    rep.bytes,
                    rep.snapshots.len() as u64,
                    started.elapsed(),
                );
                self.succeeded(&rep, stamp);
                Ok(rep)
            }
            Err(e) => {
                self.dirty_since = match (waited_since, self.dirty_since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let message = e.to_string();
                self.failed(message.clone()).await;
                Err(message)
            }
        }
    }

    /// After a successful sync: keep the connection for `idle_after`, or give it up.
    async fn after_sync(&mut self) {
        if !self.is_hot() {
            // An empty (touched) file: nothing is open.
            self.permit = None;
            self.idle_at = None;
        } else if self.shared.waiting.load(Ordering::Acquire) > 0 {
            // Others wait for a connection slot: go cold now.
            self.go_idle().await;
        } else {
            self.idle_at = Some(Instant::now() + self.shared.idle_after);
        }
    }

    /// Restore validation: pins the live database at the replica's newest TXID (see
    /// `validate`), then restores and compares off this task so replication goes on.
    async fn validate(&mut self, stop: &CancellationToken) {
        let Some(v) = &self.shared.validation else { return };
        let slots = v.slots.clone();
        if !self.path.exists() || !self.take_slot(Some(stop)).await {
            return;
        }
        let pinned = self.pin().await;
        if self.backoff.is_zero() {
            self.after_sync().await;
        }
        let image = match pinned {
            Ok(image) => image,
            Err(why) => return record_validation(&self.shared, &self.path, &self.id, Validation::skipped(why)),
        };
        let (shared, path, id) = (self.shared.clone(), self.path.clone(), self.id.clone());
        let replica = self.replicator().replica().clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let Some(temp_dir) = shared.validation.as_ref().map(|v| v.temp_dir.clone()) else { return };
            let result = tokio::select! {
                r = validate::check(&replica, &image, &temp_dir) => r,
                _ = shared.shutdown.cancelled() => return,
            };
            let v = result.unwrap_or_else(|e| {
                tracing::error!(tenant = %id, "restore validation could not run: {e}");
                Validation { txid: Some(image.txid), ..Validation::skipped(e.to_string()) }
            });
            record_validation(&shared, &path, &id, v);
        });
    }

    /// Syncs, opens a read transaction, syncs again: when the second sync ships nothing,
    /// the read transaction sees exactly the state at the replica's newest TXID.
    async fn pin(&mut self) -> Result<validate::Image, String> {
        let busy = self.shared.settings.busy_timeout;
        for _ in 0..PIN_ATTEMPTS {
            self.sync_once().await.map_err(|e| format!("sync failed: {e}"))?;
            let path = self.path.clone();
            let snap = tokio::task::spawn_blocking(move || validate::Snapshot::open(&path, busy))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let second = self.sync_once().await;
            match second {
                Ok(rep) if rep.uploaded == 0 => {
                    let Some(txid) = self.r.as_ref().and_then(|r| r.remote_txid()).filter(|t| *t > 0) else {
                        return Err("nothing to validate: the database is empty".into());
                    };
                    return tokio::task::spawn_blocking(move || snap.read(txid))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string());
                }
                Ok(_) => {}
                Err(e) => return Err(format!("sync failed: {e}")),
            }
        }
        Err(format!("the database kept changing through {PIN_ATTEMPTS} attempts to pin a TXID"))
    }

    fn succeeded(&mut self, rep: &SyncReport, stamp: Stamp) {
        self.backoff = Duration::ZERO;
        self.synced_once = true;
        self.stamp = Some(stamp);
        let txid = self.r.as_ref().and_then(|r| r.remote_txid()).filter(|t| *t > 0);
        let hot = self.is_hot();
        let pending = self.dirty_since;
        if rep.uploaded > 0 {
            tracing::debug!(tenant = %self.id, txid = txid.unwrap_or(0), files = rep.uploaded, bytes = rep.bytes, "synced");
        }
        self.shared.lifecycle.shipped(&self.prefix, rep.files.clone());
        let now = SystemTime::now();
        self.shared.board.update(&self.path, |s| {
            s.state = TenantState::Active;
            s.txid = txid.or(s.txid);
            s.files_shipped += rep.uploaded;
            s.bytes_shipped += rep.bytes;
            s.snapshots_shipped += rep.snapshots.len() as u64;
            s.syncs += 1;
            s.last_sync_at = Some(now);
            s.pending_since = pending;
            s.last_error = None;
            s.hot = hot;
        });
    }

    async fn failed(&mut self, error: String) {
        crate::metrics::sync_failed(&self.id);
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.due = Some(Instant::now() + self.backoff);
        self.idle_at = None;
        tracing::warn!(tenant = %self.id, retry_in = ?self.backoff, "sync of {} failed: {error}", self.path.display());
        // Free the connection slot while waiting to retry.
        if let Some(r) = self.r.as_mut() {
            let _ = r.release().await;
        }
        let pending = self.dirty_since;
        self.shared.board.update(&self.path, |s| {
            s.state = TenantState::Error;
            s.errors += 1;
            s.last_error = Some(error);
            s.pending_since = pending;
            s.hot = false;
        });
        self.permit = None;
    }

    /// Ships what is left, checkpoints and releases the connection.
    async fn go_idle(&mut self) {
        self.idle_at = None;
        let stamp = Stamp::of(&self.path);
        let result = self.replicator().idle().await;
        match result {
            Ok(rep) => {
                let pending = self.dirty_since.take();
                self.succeeded(&rep, stamp);
                // A change seen while idling: sync it (the connection reopens).
                if let Some(p) = pending {
                    self.dirty_since = Some(p);
                    self.due = Some(Instant::now());
                }
            }
            Err(e) => self.failed(e.to_string()).await,
        }
        // Only now, with the board saying cold, may another tenant take the slot.
        self.permit = None;
        self.shared.released.notify_one();
    }

    /// After stop: the final sync when one can be needed.
    async fn finish(&mut self) -> Option<Result<SyncReport, String>> {
        let shutting_down = self.shared.shutdown.is_cancelled();
        let exists = self.path.exists();
        let needed = exists
            && (self.is_hot()
                || self.dirty_since.is_some()
                || !self.synced_once
                || self.stamp != Some(Stamp::of(&self.path)));
        if !needed {
            if let Some(r) = self.r.as_mut() {
                let _ = r.release().await;
            }
            return None;
        }
        if !shutting_down {
            tracing::info!(tenant = %self.id, "final sync of {} before it stops replicating", self.path.display());
        }
        self.take_slot(None).await;
        let r = self.replicator().shutdown().await.map_err(|e| e.to_string());
        self.permit = None;
        Some(r)
    }
}

/// Gives freed heap back to the OS after tenants release their connections.
///
/// glibc keeps memory freed in the middle of its heap: after a start-up burst (hundreds
/// of connections opened, used and closed at once) a daemon whose live heap is ~20 MB
/// kept ~150 MB resident. One `malloc_trim(0)` per burst returns it. No timer runs while
/// nothing is released.
async fn trim_heap_after_releases(released: Arc<Notify>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = released.notified() => {}
            _ = stop.cancelled() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(TRIM_DELAY) => {}
            _ = stop.cancelled() => return,
        }
        let _ = tokio::task::spawn_blocking(trim_heap).await;
    }
}

/// `malloc_trim(0)` where the C library has it.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Records a validation's outcome: board, metric, log (a failure loudly).
fn record_validation(shared: &Shared, path: &Path, id: &str, v: Validation) {
    crate::metrics::validation(id, v.outcome);
    match v.outcome {
        Outcome::Passed => tracing::info!(tenant = %id, took = ?v.took, "🔍 validation passed: {}", v.detail),
        Outcome::Failed => tracing::error!(tenant = %id, "❌ validation FAILED for {}: {}", path.display(), v.detail),
        Outcome::Skipped => tracing::info!(tenant = %id, "🔍 validation skipped: {}", v.detail),
    }
    shared.board.update(path, |s| s.validation = Some(v));
}

/// One replica found in storage by [`inventory`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTenant {
    /// The replica's prefix under the storage (`databases/<id>`).
    pub prefix: String,
    /// The tenant id: the prefix's last segment.
    pub id: String,
    /// The replica URL, as `litefleet restore` and `litestream restore` take it.
    pub replica_url: String,
    /// Newest TXID held, across every level.
    pub latest_txid: u64,
    /// When the newest file was written (storage's time for it).
    #[serde(with = "humantime_serde")]
    pub latest_at: Option<SystemTime>,
    /// Start of the restore window: when the oldest file a restore can start from (a
    /// snapshot, or a file starting at TXID 1) was written. `None`: no file starts a
    /// restore (the replica is incomplete).
    #[serde(with = "humantime_serde")]
    pub earliest_at: Option<SystemTime>,
    /// LTX files held, every level.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// The local database file that replicates there now, if any is in a watch
    /// directory (`None`: its file is gone, the backups remain).
    pub local: Option<PathBuf>,
}

/// Every replica under the config's storage root, with its newest TXID, its restore
/// window and the local file (found by walking the watch directories) that maps to
/// it. Reads only: one recursive listing of the root.
pub async fn inventory(config: &Config) -> Result<Vec<StoredTenant>, Error> {
    let storage = open_storage(config)?;
    let local = local_prefixes(config);
    let tree = storage.list_tree(search_root(config)).await?;
    let mut out = Vec::with_capacity(tree.len());
    for (prefix, files) in tree {
        let newest = files.iter().max_by_key(|f| (f.max_txid, f.level));
        let earliest_at = files.iter().filter(|f| f.min_txid == 1).filter_map(|f| f.created).min();
        out.push(StoredTenant {
            id: prefix.rsplit('/').next().unwrap_or(&prefix).to_owned(),
            replica_url: storage.replica(&prefix).url(),
            latest_txid: newest.map_or(0, |f| f.max_txid),
            latest_at: files.iter().filter_map(|f| f.created).max(),
            earliest_at,
            files: files.len(),
            bytes: files.iter().map(|f| f.size).sum(),
            local: local.get(&prefix).cloned(),
            prefix,
        });
    }
    Ok(out)
}

/// Where [`inventory`] and [`find_tenant`] look: the storage root, or the whole storage
/// when a hook may name prefixes outside it.
fn search_root(config: &Config) -> &str {
    if config.hooks.is_some() { "" } else { &config.storage.root }
}

/// The replica of tenant `id` under the config's storage and naming: the replicas whose
/// last segment is `id`, plus, with a hook, the prefix the hook gives `id` in each watch
/// directory (when that replica exists). Errors list the candidates when there are
/// several (the same GUID under `prod/` and `staging/`) and say where it looked when none.
pub async fn find_tenant(config: &Config, id: &str) -> Result<String, FindError> {
    let storage = open_storage(config).map_err(Error::from)?;
    let id = tenant::TenantId::from_stem(id).map_err(|e| FindError::BadId(e.to_string()))?;
    let mut found: BTreeSet<String> = storage
        .discover(search_root(config))
        .await
        .map_err(Error::from)?
        .into_iter()
        .filter(|p| p.rsplit('/').next() == Some(id.as_str()))
        .collect();
    if let Some(h) = &config.hooks {
        let token = CancellationToken::new();
        match Hooks::start(h, token.clone()).await {
            Ok(hooks) => found.extend(hook_prefixes(config, &storage, &hooks, &id).await?),
            // The listing above still finds replicas named `…/<id>`.
            Err(e) => tracing::warn!("cannot ask the hook for the tenant's prefix: {e}"),
        }
        token.cancel();
    }
    match found.len() {
        1 => Ok(found.into_iter().next().unwrap_or_default()),
        0 => Err(FindError::NotFound { id: id.as_str().to_owned(), place: storage.url().to_owned() }),
        _ => Err(FindError::Ambiguous { id: id.as_str().to_owned(), prefixes: found.into_iter().collect() }),
    }
}

/// The prefixes `hooks` gives tenant `id` in each watch directory that hold a replica.
async fn hook_prefixes(
    config: &Config,
    storage: &Storage,
    hooks: &Hooks,
    id: &tenant::TenantId,
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for w in &config.watch {
        let ext = w.extensions.first().map_or("db", String::as_str);
        let t = HookTenant {
            id: id.as_str().to_owned(),
            database_path: w.dir.join(format!("{}.{ext}", id.as_str())),
            watch_dir: w.dir.clone(),
            default_prefix: tenant::default_prefix(&config.storage.root, w.prefix.as_deref(), id),
        };
        if let Decision::Accept { prefix, .. } = hooks.on_register(&t).await.decision
            && !storage.replica(&prefix).list_all().await?.is_empty()
        {
            out.push(prefix);
        }
    }
    Ok(out)
}

/// Why [`find_tenant`] found no single replica.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// Storage could not be opened or listed.
    #[error(transparent)]
    Fleet(#[from] Error),
    /// The id is not a tenant id.
    #[error("{0}")]
    BadId(String),
    /// No replica has that id.
    #[error("no replica of tenant {id} under {place} (litefleet tenants --config … lists them)")]
    NotFound {
        /// The id.
        id: String,
        /// Where it looked.
        place: String,
    },
    /// Several replicas have that id.
    #[error("tenant {id} has several replicas: {}; restore one by its URL", prefixes.join(", "))]
    Ambiguous {
        /// The id.
        id: String,
        /// Their prefixes.
        prefixes: Vec<String>,
    },
}

/// Prefix → local database file, for every tenant file in the watch directories (the
/// first directory wins a shared prefix, as in the daemon).
fn local_prefixes(config: &Config) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    if let Some(single) = &config.single {
        out.insert(single.prefix(&config.storage.root), single.path.clone());
        return out;
    }
    for w in &config.watch {
        let mut stack = vec![w.dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                let path = e.path();
                let Ok(ft) = e.file_type() else { continue };
                if ft.is_dir() {
                    if w.recursive && !e.file_name().to_string_lossy().starts_with('.') {
                        stack.push(path);
                    }
                    continue;
                }
                if let Classified::Tenant(id) = tenant::classify(&path, &w.extensions, config.fleet.non_guid) {
                    let prefix = tenant::default_prefix(&config.storage.root, w.prefix.as_deref(), &id);
                    out.entry(prefix).or_insert(path);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::WatchConfig;

    const GA: &str = "11111111-2222-3333-4444-555555555555";
    const GB: &str = "22222222-3333-4444-5555-666666666666";
    const GC: &str = "33333333-4444-5555-6666-777777777777";

    fn test_config(dir: &Path, replicas: &Path) -> Config {
        let mut c = Config { watch: vec![WatchConfig::new(dir.join("clients"))], ..Config::default() };
        c.storage.url = StorageUrl::File { path: replicas.to_path_buf() };
        c.replication.state_dir = dir.join("state");
        c.replication.sync_interval = Duration::from_millis(50);
        c.fleet.shutdown_timeout = Duration::from_secs(20);
        c
    }

    fn write(db: &Path, rows: u32) {
        let c = rusqlite::Connection::open(db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE IF NOT EXISTS t(v BLOB)")
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..rows {
            c.execute("INSERT INTO t VALUES (randomblob(300))", []).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    async fn wait(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..600 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    /// Replication alone: no compaction, no snapshots (the lifecycle is tested elsewhere).
    fn without_lifecycle(config: &mut Config) {
        config.lifecycle.levels.clear();
        config.lifecycle.snapshot_interval = Duration::ZERO;
    }

    /// Shuts the fleet down and asserts every final sync succeeded in time.
    async fn stop_fleet(fleet: Fleet) {
        let report = fleet.shutdown().await;
        assert!(report.failed.is_empty() && report.timed_out.is_empty(), "{report:?}");
    }

    fn synced(board: &Board, db: &Path) -> bool {
        board.get(db).is_some_and(|s| s.state == TenantState::Active && s.pending_since.is_none() && s.txid.is_some())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenant_created_while_events_are_lost_is_found_by_the_rescan() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(dir.path().join("clients")).unwrap_or_else(|e| panic!("{e}"));
        let fleet =
            Fleet::start(test_config(dir.path(), &dir.path().join("replicas"))).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        wait("ready", || board.is_ready()).await;
        // Every notify event is lost from now on, as in a kernel queue overflow.
        fleet.watcher.drop_events(true);
        let db = std::fs::canonicalize(dir.path().join("clients"))
            .unwrap_or_else(|e| panic!("{e}"))
            .join(format!("{GA}.db"));
        write(&db, 5);
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(board.get(&db).is_none(), "no event should have reached the fleet");
        // The overflow's rescan finds it.
        fleet.watcher.rescan_now();
        wait("registered and synced after the rescan", || synced(&board, &db)).await;
        stop_fleet(fleet).await;
        assert!(dir.path().join(format!("replicas/databases/{GA}/ltx/0")).is_dir());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_stay_within_max_open_tenants_and_everyone_ships() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let mut config = test_config(dir.path(), &dir.path().join("replicas"));
        config.replication.max_open_tenants = 1;
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        wait("ready", || board.is_ready()).await;
        let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
        let dbs: Vec<PathBuf> = [GA, GB, GC].iter().map(|g| clients.join(format!("{g}.db"))).collect();
        let mut max_hot = 0;
        for round in 0..8 {
            for db in &dbs {
                write(db, 1 + round);
                max_hot = max_hot.max(board.counts().hot);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
            max_hot = max_hot.max(board.counts().hot);
        }
        for db in &dbs {
            let want = rusqlite::Connection::open(db)
                .and_then(|c| c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)))
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(want, (1..=8).sum::<i64>());
            wait("every tenant synced", || synced(&board, db)).await;
            max_hot = max_hot.max(board.counts().hot);
        }
        assert!(max_hot <= 1, "{max_hot} tenants were hot at once with max_open_tenants = 1");
        // One tenant hot and idle (idle_after is 30 s), another written: the idle holder
        // gives up its slot at once instead of after idle_after.
        write(&dbs[0], 1);
        wait("a hot, idle tenant", || dbs.iter().all(|d| synced(&board, d)) && board.counts().hot == 1).await;
        let cold = dbs.iter().find(|d| board.get(d).is_some_and(|s| !s.hot)).cloned().unwrap_or_default();
        let before = board.get(&cold).and_then(|s| s.txid);
        let asked = std::time::Instant::now();
        write(&cold, 1);
        wait("the cold tenant's write to ship", || {
            board.get(&cold).is_some_and(|s| s.txid > before && s.pending_since.is_none())
        })
        .await;
        assert!(asked.elapsed() < Duration::from_secs(10), "took {:?}", asked.elapsed());
        stop_fleet(fleet).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_tenant_holds_no_connection_and_sends_no_request() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let mut config = test_config(dir.path(), &dir.path().join("replicas"));
        config.replication.idle_after = Duration::from_millis(300);
        // Replication alone; the lifecycle's idle cost is asserted in tests/lifecycle.rs.
        without_lifecycle(&mut config);
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GB}.db"));
        write(&db, 3);
        wait("synced", || synced(&board, &db)).await;
        wait("cold", || board.get(&db).is_some_and(|s| !s.hot)).await;
        // Our own idle checkpoint may wake it once; let that settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let counters = fleet.storage().counters().clone();
        let before = counters.total();
        let txid = board.get(&db).and_then(|s| s.txid);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(counters.total(), before, "an idle tenant sent storage requests");
        assert!(board.get(&db).is_some_and(|s| !s.hot), "an idle tenant reopened its database");
        // A write wakes it and ships.
        write(&db, 1);
        wait("the next write ships", || board.get(&db).is_some_and(|s| s.txid > txid && s.pending_since.is_none()))
            .await;
        stop_fleet(fleet).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn validation_passes_while_writing_and_fails_loudly_on_a_damaged_replica() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let replicas = dir.path().join("replicas");
        let mut config = test_config(dir.path(), &replicas);
        // Keep every L0 file where it is: the test damages one.
        without_lifecycle(&mut config);
        config.validation.enabled = true;
        config.validation.interval = Duration::from_secs(1);
        config.validation.tenants = 2;
        config.validation.temp_dir = Some(dir.path().join("tmp"));
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap_or_else(|e| panic!("{e}"));
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        let clients = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}"));
        let (busy, quiet) = (clients.join(format!("{GA}.db")), clients.join(format!("{GB}.db")));
        write(&quiet, 20);
        write(&busy, 1);
        // A writer commits to `busy` every 150 ms while validations run.
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (stop, busy) = (stop.clone(), busy.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    write(&busy, 1);
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        };
        let passed = |db: &Path| {
            board.get(db).and_then(|s| s.validation).is_some_and(|v| v.outcome == Outcome::Passed && v.txid.is_some())
        };
        wait("both tenants validated", || passed(&busy) && passed(&quiet)).await;
        let v = board.get(&busy).and_then(|s| s.validation).unwrap_or_else(|| unreachable!());
        assert!(v.detail.contains("equal to the live database"), "{}", v.detail);
        // No restored copy is left behind.
        wait("temporary copies removed", || {
            std::fs::read_dir(dir.path().join("tmp")).map(|d| d.count() == 0).unwrap_or(false)
        })
        .await;

        // Damage the quiet tenant's newest L0 file: the next validation fails, loudly.
        let l0 = replicas.join(format!("databases/{GB}/ltx/0"));
        let newest = std::fs::read_dir(&l0)
            .unwrap_or_else(|e| panic!("{e}"))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .max()
            .unwrap_or_else(|| panic!("no L0 file"));
        let mut bytes = std::fs::read(&newest).unwrap_or_else(|e| panic!("{e}"));
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&newest, bytes).unwrap_or_else(|e| panic!("{e}"));
        wait("the damage found", || {
            board.get(&quiet).is_some_and(|s| s.validation.is_some_and(|v| v.outcome == Outcome::Failed))
        })
        .await;
        let s = board.get(&quiet).unwrap_or_else(|| unreachable!());
        assert_eq!(s.state_at(SystemTime::now(), Duration::from_secs(10)), TenantState::Error);
        let shown = s.error_shown().unwrap_or_default();
        assert!(shown.starts_with("validation failed: the replica does not restore at TXID"), "{shown}");
        assert!(shown.contains(&newest.file_name().unwrap_or_default().to_string_lossy().to_string()), "{shown}");
        // The busy tenant is unaffected.
        assert!(passed(&busy));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap_or_else(|_| panic!("writer panicked"));
        stop_fleet(fleet).await;
    }

    /// A wake-up can come before the commit is complete (the writer's first WAL frames):
    /// that sync finds nothing, and the commit itself must then ship at once, not one
    /// `sync_interval` later.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sync_that_found_nothing_does_not_delay_the_commit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let mut config = test_config(dir.path(), &dir.path().join("replicas"));
        config.replication.sync_interval = Duration::from_secs(3);
        config.replication.idle_after = Duration::from_millis(300);
        without_lifecycle(&mut config);
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GC}.db"));
        // One application connection for the whole test: closing the last connection
        // would checkpoint and delete the WAL, and the next sync would then (rightly)
        // ship a full-page file instead of nothing.
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v BLOB); INSERT INTO t VALUES (randomblob(300));")
            .unwrap_or_else(|e| panic!("{e}"));
        // Everything written has shipped and the tenant is cold (its writes may have been
        // shipped by more than one sync: wait until nothing moves).
        let mut last = None;
        wait("synced, cold and settled", || {
            let now = board.get(&db).filter(|s| !s.hot && s.pending_since.is_none()).map(|s| (s.syncs, s.txid));
            let settled = now.is_some() && now == last;
            last = now;
            settled
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (syncs, txid) = board.get(&db).map(|s| (s.syncs, s.txid)).unwrap_or_default();
        assert_eq!(last, Some((syncs, txid)), "still syncing");
        // A transaction bigger than a one-page cache spills frames into the WAL before
        // its commit: the tenant wakes and syncs, finding no commit.
        c.execute_batch("PRAGMA cache_size = 1; BEGIN; INSERT INTO t SELECT randomblob(4000) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3 UNION SELECT 4);")
            .unwrap_or_else(|e| panic!("{e}"));
        wait("a sync that finds nothing", || board.get(&db).is_some_and(|s| s.syncs > syncs)).await;
        assert_eq!(board.get(&db).and_then(|s| s.txid), txid, "nothing was committed yet: {:?}", board.get(&db));
        let committed = std::time::Instant::now();
        c.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        wait("the commit shipped", || board.get(&db).is_some_and(|s| s.txid > txid)).await;
        let took = committed.elapsed();
        assert!(took < Duration::from_millis(1500), "the commit waited {took:?} (sync_interval is 3 s)");
        drop(c);
        stop_fleet(fleet).await;
    }

    /// Upload pacing: two commits in a row both ship at once (burst of two), the third
    /// waits for the interval: one upload per `sync_interval` on average.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn uploads_are_paced_with_bursts_of_two() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let clients = dir.path().join("clients");
        std::fs::create_dir_all(&clients).unwrap_or_else(|e| panic!("{e}"));
        let mut config = test_config(dir.path(), &dir.path().join("replicas"));
        config.replication.sync_interval = Duration::from_secs(4);
        without_lifecycle(&mut config);
        let fleet = Fleet::start(config).await.unwrap_or_else(|e| panic!("{e}"));
        let board = fleet.board();
        let db = std::fs::canonicalize(&clients).unwrap_or_else(|e| panic!("{e}")).join(format!("{GA}.db"));
        let c = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v BLOB);").unwrap_or_else(|e| panic!("{e}"));
        wait("first sync", || synced(&board, &db)).await;
        // Let the pacing of the first sync run out.
        tokio::time::sleep(Duration::from_secs(8)).await;
        let mut lags = Vec::new();
        for _ in 0..3 {
            let before = board.get(&db).and_then(|s| s.txid);
            let t = std::time::Instant::now();
            c.execute("INSERT INTO t VALUES (randomblob(100))", []).unwrap_or_else(|e| panic!("{e}"));
            wait("shipped", || board.get(&db).is_some_and(|s| s.txid > before)).await;
            lags.push(t.elapsed());
        }
        assert!(lags[0] < Duration::from_secs(2) && lags[1] < Duration::from_secs(2), "{lags:?}");
        assert!(lags[2] > Duration::from_secs(2), "the third upload in a row was not paced: {lags:?}");
        drop(c);
        stop_fleet(fleet).await;
    }

    #[test]
    fn unchanged_watch_entries_keep_their_keys_across_reloads() {
        let mut keys = DirKeys::default();
        let a = WatchConfig::new("a");
        let b = WatchConfig::new("b");
        let first = keys.assign(&[a.clone(), b.clone()], false);
        assert_eq!(first.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [1, 2]);
        // Remove a, change b's prefix, add c: b gets a new key (its tenants move).
        let mut b2 = b.clone();
        b2.prefix = Some("staging".into());
        let c = WatchConfig::new("c");
        let second = keys.assign(&[b2, c], false);
        assert_eq!(second.iter().map(|(k, _)| *k).collect::<Vec<_>>(), [3, 4]);
        // Unchanged: same keys.
        let again: Vec<WatchConfig> = second.iter().map(|(_, w)| w.clone()).collect();
        assert_eq!(keys.assign(&again, false).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [3, 4]);
        // Rekey everything (non_guid changed).
        assert_eq!(keys.assign(&again, true).iter().map(|(k, _)| *k).collect::<Vec<_>>(), [5, 6]);
    }

    #[test]
    fn stamps_see_wal_appends_but_not_database_rewrites_in_place() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"x".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        let s0 = Stamp::of(&db);
        // Rewriting the database in place (a checkpoint) keeps the stamp.
        std::fs::write(&db, b"y".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Stamp::of(&db), s0);
        // A WAL appearing or growing changes it.
        let wal = dir.path().join("a.db-wal");
        std::fs::write(&wal, b"w").unwrap_or_else(|e| panic!("{e}"));
        let s1 = Stamp::of(&db);
        assert_ne!(s1, s0);
        std::fs::write(&wal, b"ww").unwrap_or_else(|e| panic!("{e}"));
        assert_ne!(Stamp::of(&db), s1);
    }

    #[test]
    fn lag_threshold_is_at_least_ten_seconds() {
        assert_eq!(lag_threshold(Duration::from_secs(1)), Duration::from_secs(10));
        assert_eq!(lag_threshold(Duration::from_secs(10)), Duration::from_secs(50));
    }
}
