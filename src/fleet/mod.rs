//! The fleet: every tenant database found in the watched directories, each replicated
//! to its own prefix (`<root>/<id>/`) of one storage — or, for the seed's `-dsn` mode
//! and `litefleet replicate`, a fleet of one.
//!
//! Read in this order: this file (the [`Fleet`] handle, what the tenants share, config →
//! engine settings), `registry` (the supervisor: watcher events → registrations, one
//! map of per-path entries, conflicts, crashes, shutdown), `tenant_task` (the one state
//! machine of a tenant: asleep until woken, pacing, backoff, hot and cold, final sync),
//! `validation` (restore validation rounds), `reload` (SIGHUP: watch directories added
//! and removed without a restart).
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

mod registry;
mod reload;
mod settle;
mod tenant_task;
#[cfg(test)]
mod tests;
mod validation;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use self::registry::Supervisor;
use crate::changes::ChangeLog;
use crate::config::{self, Config, StorageUrl};
use crate::hooks::Hooks;
use crate::lifecycle::{Policy, Scheduler};
use crate::ownership::{self, Ownership};
use crate::replicate::Settings;
use crate::status::{Board, FleetInfo};
use crate::storage::{self, Storage};
use crate::watch::{self, WatchOptions};

/// Longest wait between retries of a failing tenant.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// First retry delay of a failing tenant.
pub const MIN_BACKOFF: Duration = Duration::from_secs(1);

/// The longest a database created while the daemon runs waits before its first sync
/// ([`new_tenant_settle`]).
const MAX_NEW_TENANT_SETTLE: Duration = Duration::from_secs(1);

/// How long a database that appears while the daemon runs settles before its first
/// sync: `sync_interval`, at most [`MAX_NEW_TENANT_SETTLE`]. The application that
/// created it is most likely still writing its schema or a first import; syncing at
/// once shipped the empty database and then the rest (two uploads and a compaction
/// input instead of one file).
fn new_tenant_settle(sync_interval: Duration) -> Duration {
    sync_interval.min(MAX_NEW_TENANT_SETTLE)
}
/// Watch events buffered between the watcher and the supervisor.
const EVENT_BUFFER: usize = 4096;
/// After a tenant releases its connection, the heap is trimmed this much later (one trim
/// for a whole burst of releases, such as the first syncs of a start-up).
const TRIM_DELAY: Duration = Duration::from_secs(10);

/// Why the fleet could not start, reload or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The storage URL or its options are unusable.
    #[error("storage")]
    Storage(#[from] storage::Error),
    /// A watch directory cannot be watched.
    #[error(transparent)]
    Watch(#[from] watch::WatchError),
    /// The single database (`-dsn`, `litefleet replicate`) is unusable.
    #[error("{}: {reason}", path.display())]
    Single {
        /// The database path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The hook module could not be loaded at start.
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
    /// Ownership of prefixes could not start (see `crate::ownership`).
    #[error(transparent)]
    Ownership(#[from] ownership::Error),
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
    watcher: Arc<crate::watch::WatchHandle>,
    #[cfg(test)]
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    supervisor: tokio::task::JoinHandle<()>,
    heartbeat: Heartbeat,
    /// The change log a standby reads (`[change_log] enabled`).
    changes: Option<ChangeLog>,
}

/// This host's heartbeat (when prefixes have owners): marked stopped by a clean
/// shutdown, and only halted — as a crash would leave it — when the fleet is dropped.
struct Heartbeat(Option<Ownership>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(o) = &self.0 {
            o.halt();
        }
    }
}

/// A request to the supervisor.
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
        if config.watch.is_empty() && config.single.is_none() {
            let e = std::io::Error::other(
                "no [[watch]] directory configured (a standby's config: run `litefleet standby`)",
            );
            return Err(Error::Config(config.error_at("watch", e)));
        }
        let keyring = load_keyring(&config)?;
        let storage = open_plain_storage(&config)?;
        let storage = match keyring {
            Some(k) => storage.with_keyring(k),
            None => storage,
        };
        let board = Arc::new(Board::new(fleet_info(&config, &storage)));
        let shutdown = CancellationToken::new();
        // Everything that can fail does so before anything is written: the hook module
        // loads and every watch directory is usable before the lifecycle lists (and
        // cleans) the storage or a tenant task starts.
        let hooks = match &config.hooks {
            Some(h) => match Hooks::start(h, shutdown.child_token()).await {
                Ok(hooks) => Some(hooks),
                Err(e) => {
                    shutdown.cancel();
                    return Err(hook_error(&config, e));
                }
            },
            None => None,
        };
        let mut keys = reload::DirKeys::default();
        let (tx, events) = mpsc::channel(EVENT_BUFFER);
        let watch_token = CancellationToken::new();
        let opts = WatchOptions {
            rescan_interval: config.fleet.rescan_interval,
            poll: config.fleet.poll,
            poll_interval: config.fleet.poll_interval,
        };
        let watched = reload::watch_plan(&config, &mut keys).and_then(|(dirs, single)| {
            let watcher = watch::spawn(dirs, opts, tx, watch_token.clone()).map_err(|e| watch_error(&config, e))?;
            Ok((watcher, single))
        });
        let (watcher, single) = match watched {
            Ok(w) => w,
            Err(e) => {
                shutdown.cancel();
                return Err(e);
            }
        };
        let watcher = Arc::new(watcher);
        let local_dirs = [
            ("replication.state_dir", config.replication.state_dir.as_ref()),
            ("validation.temp_dir", config.validation.temp_dir.as_ref().filter(|_| config.validation.enabled)),
        ];
        for (key, dir) in local_dirs {
            if let Some(dir) = dir
                && let Err(e) = crate::durable::check_writable(dir)
            {
                shutdown.cancel();
                watch_token.cancel();
                let e = std::io::Error::new(e.kind(), format!("cannot write in {}: {e}", dir.display()));
                return Err(Error::Config(config.error_at(key, e)));
            }
        }
        // Keys: refuse to start on files encrypted with a key the keyring lacks.
        if let Err(e) = check_key_records(&storage).await {
            shutdown.cancel();
            watch_token.cancel();
            return Err(Error::Storage(e));
        }
        // The first write to storage: a probe of conditional creates and a heartbeat.
        let ownership = match Ownership::start(&storage, &ownership_settings(&config)).await {
            Ok(o) => o,
            Err(e) => {
                shutdown.cancel();
                watch_token.cancel();
                return Err(ownership_error(&config, e));
            }
        };
        let storage = match &ownership {
            Some(o) => storage.with_gate(Arc::new(o.clone())),
            None => storage,
        };
        banner(&config, &storage);
        let changes = config.change_log.enabled.then(|| {
            let c = &config.change_log;
            ChangeLog::start(storage.clone(), config.fleet.host_id.clone(), c.interval, c.retention)
        });
        let (damage_tx, damage) = mpsc::unbounded_channel();
        let (lifecycle, _) = Scheduler::start(
            storage.clone(),
            config.storage.root.to_string(),
            policy(&config),
            config.lifecycle.concurrency,
            shutdown.child_token(),
            damage_tx,
            ownership.clone(),
        );
        let released = Arc::new(Notify::new());
        tokio::spawn(trim_heap_after_releases(released.clone(), shutdown.child_token()));
        let shared = Arc::new(Shared {
            board: board.clone(),
            storage: storage.clone(),
            settings: settings(&config),
            sync_interval: config.replication.sync_interval,
            idle_after: config.replication.idle_after,
            hot_slots: Arc::new(Semaphore::new(config.replication.max_open_tenants.max(1))),
            park_slots: Arc::new(Semaphore::new(config.replication.max_parked_tenants)),
            startup_slots: Arc::new(Semaphore::new(config.fleet.startup_concurrency.max(1))),
            waiting: AtomicUsize::new(0),
            slot_wanted: Notify::new(),
            shutdown,
            lifecycle,
            released,
            validation: config.validation.enabled.then(|| validation::Validator::new(&config.validation)),
            ownership: ownership.clone(),
            heartbeat_interval: config.fleet.heartbeat_interval,
            changes: changes.clone(),
            writes: watcher.writes(),
        });
        let (commands, command_rx) = mpsc::channel(4);
        #[cfg(test)]
        let for_tests = shared.clone();
        let sup = Supervisor::new(shared, config, keys, single, watcher.clone(), watch_token, hooks);
        let supervisor = tokio::spawn(sup.run(events, command_rx, damage));
        #[cfg(not(test))]
        drop(watcher);
        Ok(Fleet {
            board,
            storage,
            heartbeat: Heartbeat(ownership),
            changes,
            #[cfg(test)]
            watcher,
            #[cfg(test)]
            shared: for_tests,
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
        // The final syncs' files are logged before the host's heartbeat says it stopped.
        if let Some(c) = &self.changes {
            c.stop().await;
        }
        // After the final syncs: this host's prefixes may be taken over at once.
        if let Some(o) = &self.heartbeat.0 {
            o.stop().await;
        }
        report
    }
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
    /// One permit per parked connection (`max_parked_tenants`): released tenants kept
    /// open with no transaction (`TenantTask::go_idle`).
    park_slots: Arc<Semaphore>,
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
    validation: Option<validation::Validator>,
    /// Signalled when a tenant releases its connection (see [`trim_heap_after_releases`]).
    released: Arc<Notify>,
    /// Who owns which prefix, when several hosts share the storage.
    ownership: Option<Ownership>,
    /// How often a tenant held by another host asks again.
    heartbeat_interval: Duration,
    /// Told about every L0 file shipped, when a standby's change log is on.
    changes: Option<ChangeLog>,
    /// Arms a tenant's files so that its next write wakes it.
    writes: crate::watch::Writes,
}

/// A watch directory that cannot be used, named by its place in the config.
fn watch_error(config: &Config, e: watch::WatchError) -> Error {
    let at = e.path().and_then(|p| {
        config.watch.iter().position(|w| w.dir == p || std::fs::canonicalize(&w.dir).is_ok_and(|c| c == p))
    });
    match at {
        Some(i) => Error::Config(config.error_at(&format!("watch[{i}].dir"), e)),
        None => Error::Watch(e),
    }
}

/// Ownership that cannot start, named by its place in the config.
fn ownership_error(config: &Config, e: ownership::Error) -> Error {
    match e {
        ownership::Error::Unsupported(_) => Error::Config(config.error_at("fleet.ownership", e)),
        ownership::Error::Twin { .. } => Error::Config(config.error_at("fleet.host_id", e)),
        other => Error::Ownership(other),
    }
}

/// The ownership settings of a config.
pub fn ownership_settings(config: &Config) -> ownership::Settings {
    let f = &config.fleet;
    ownership::Settings {
        mode: f.ownership,
        host_id: f.host_id.clone(),
        heartbeat_interval: f.heartbeat_interval,
        expiry: f.owner_expiry,
    }
}

/// A hook module that cannot be used, named by its place in the config.
fn hook_error(config: &Config, e: crate::hooks::HookError) -> Error {
    use crate::hooks::HookError;
    match e {
        HookError::Read { .. } | HookError::Load { .. } | HookError::Watch { .. } => {
            Error::Config(config.error_at("hooks.module", e))
        }
        other => Error::Hooks(other),
    }
}

/// Builds the storage of a config, with its `[encryption]` keyring if it has one.
pub fn open_storage(config: &Config) -> Result<Storage, storage::Error> {
    let storage = open_plain_storage(config)?;
    match load_keyring(config).map_err(|e| storage::Error::Keys(e.to_string()))? {
        Some(k) => Ok(storage.with_keyring(k)),
        None => Ok(storage),
    }
}

/// The keyring of `[encryption]` (read from its file or environment variable), with
/// the key new files are sealed with chosen; `None` without `[encryption]`. Errors
/// name the config's line and key, and the keyring's line, never a key.
pub fn load_keyring(config: &Config) -> Result<Option<Arc<storage::Keyring>>, config::ConfigError> {
    let Some(e) = &config.encryption else { return Ok(None) };
    let err = |key: &str, msg: String| config.error_at(key, std::io::Error::other(msg));
    let ring = match (&e.keys_file, &e.keys_env) {
        (Some(path), _) => storage::Keyring::read(path)
            .map_err(|m| err("encryption.keys_file", format!("the keyring {}: {m}", path.display())))?,
        (None, Some(var)) => {
            let text = std::env::var(var).map_err(|_| {
                err("encryption.keys_env", format!("the environment variable {var} is not set (or not UTF-8)"))
            })?;
            let text = zeroize::Zeroizing::new(text);
            storage::Keyring::parse(&text)
                .map_err(|m| err("encryption.keys_env", format!("the keyring in ${var}: {m}")))?
        }
        (None, None) => return Err(err("encryption", "names no keyring".to_owned())),
    };
    let ring = ring.seal_with(e.key_id.as_deref()).map_err(|m| {
        let key = if e.key_id.is_some() { "encryption.key_id" } else { "encryption" };
        err(key, m)
    })?;
    Ok(Some(Arc::new(ring)))
}

/// The folder of `_litefleet/` recording which keys encrypted files in this storage.
pub const KEY_RECORDS: &str = "keys";

/// At start-up, with a keyring: refuses to start when the storage records files
/// encrypted with a key the keyring lacks (`_litefleet/keys/<id>`, one small LIST),
/// then records the key new files will be encrypted with. Without a keyring: refuses
/// when any key is recorded (encrypted files the daemon could not compact or
/// restore). `litefleet reencrypt` removes the records of keys no file uses any more.
pub async fn check_key_records(storage: &Storage) -> Result<(), storage::Error> {
    let recorded = storage.meta_list(KEY_RECORDS).await?;
    let missing: Vec<&String> =
        recorded.iter().filter(|id| storage.keyring().is_none_or(|k| !k.has(id.as_str()))).collect();
    if !missing.is_empty() {
        let ids = missing.iter().map(|id| format!("\"{id}\"")).collect::<Vec<_>>().join(", ");
        let held = storage.keyring().map(|k| format!("the keyring holds {}", k.list()));
        return Err(storage::Error::Keys(format!(
            "{} holds files encrypted with key {ids} (recorded in {}/{}/{KEY_RECORDS}/), and {}: add the key to the \
             keyring, or rewrite those files with `litefleet reencrypt` first",
            storage.location(),
            storage.location(),
            storage::meta::META_DIR,
            held.as_deref().unwrap_or("[encryption] is not configured"),
        )));
    }
    if let Some(id) = storage.sealing_key()
        && !recorded.iter().any(|r| r == id)
    {
        storage
            .meta_put(&format!("{KEY_RECORDS}/{id}"), id.as_bytes().to_vec(), crate::durable::Existing::Replace)
            .await?;
    }
    Ok(())
}

/// Builds the storage of a config, without its keyring.
fn open_plain_storage(config: &Config) -> Result<Storage, storage::Error> {
    let s = &config.storage;
    let url = match &s.url {
        // One process-wide store per daemon: tests run several fleets in one process.
        StorageUrl::Memory => format!("memory://fleet-{}", std::process::id()),
        other => other.to_string(),
    };
    let secret = |v: &Option<config::Secret>| v.as_ref().map(|k| k.expose().to_owned());
    let opts = storage::Options {
        endpoint: s.endpoint.clone(),
        region: s.region.clone(),
        force_path_style: s.force_path_style,
        access_key_id: secret(&s.access_key_id),
        secret_access_key: secret(&s.secret_access_key),
        credentials_file: s.credentials_file.as_ref().map(|p| p.display().to_string()),
        account_key: secret(&s.account_key),
        sas_token: secret(&s.sas_token),
        connection_string: secret(&s.connection_string),
        ssh_key: s.ssh_key.clone(),
        strict_host_key_checking: s.strict_host_key_checking.clone(),
    };
    Storage::from_url(&url, &opts)
}

/// Replicator settings from a config.
pub fn settings(config: &Config) -> Settings {
    let r = &config.replication;
    Settings {
        sync_interval: r.sync_interval,
        checkpoint_interval: r.checkpoint_interval,
        min_checkpoint_pages: r.min_checkpoint_pages,
        truncate_pages: r.truncate_pages,
        busy_timeout: r.busy_timeout,
        page_encoding: r.page_encoding,
        state_dir: r.state_dir.clone(),
        refuse_rollback_journal: r.refuse_rollback_journal,
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
        encoding: config.replication.page_encoding,
    }
}

/// `active` tenants are shown as `lagging` once a change waits this long.
pub fn lag_threshold(sync_interval: Duration) -> Duration {
    (sync_interval * 5).max(Duration::from_secs(10))
}

fn fleet_info(config: &Config, storage: &Storage) -> FleetInfo {
    let bucket = config.storage.url.bucket();
    FleetInfo {
        storage_url: storage.location().to_owned(),
        bucket,
        root: config.storage.root.to_string(),
        watch_dirs: watch_dirs_shown(config),
        started_at: SystemTime::now(),
        lag_threshold: lag_threshold(config.replication.sync_interval),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        encryption: storage.sealing_key().map(str::to_owned),
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

/// `malloc_trim(0)` where the C library has it (also the standby's, after a listing
/// of the whole storage).
pub fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The text of a panic payload.
fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}
