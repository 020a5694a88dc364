//! Watching directories: finding every tenant database file that exists, appears,
//! disappears or is written, and saying so as a stream of [`WatchEvent`]s.
//!
//! This module owns the scan of every watch directory at start, the notify watcher
//! (inotify, or `PollWatcher` for network mounts), the set of database files it knows
//! of, and the reconciliation that keeps that set true: every notify event is only a
//! hint to look at one path again, and a full rescan — at start, after a queue overflow
//! or a notify error, on [`WatchHandle::rescan_now`], and every `rescan_interval` ±10% —
//! compares the set with `read_dir`. So a dropped event delays a tenant by one sweep at
//! most, and `Present`/`Gone` are each emitted once per change of the file at a path.
//!
//! It must never open a database, read file contents, talk to storage or decide what a
//! file name means beyond [`tenant::is_candidate`]: non-GUID names are reported as
//! `Present` like GUID ones, and the fleet classifies them with the configured policy
//! (so skipped files can be listed). It must never follow a symlink out of its watch
//! directory (that is `Refused`), and never block the async runtime: file system work
//! runs on tokio's blocking pool.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use notify::event::{EventKind, ModifyKind};
use notify::{Event, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::tenant;

/// Default period of the safety rescan (the config's `fleet.rescan_interval`).
pub const DEFAULT_RESCAN_INTERVAL: Duration = Duration::from_secs(60);
/// Default period of the polling watcher (the config's `fleet.poll_interval`).
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Raw notify events buffered between notify's thread and the watcher task; when it is
/// full the watcher stops queueing and does a full rescan instead (bounded memory, no
/// loss: the same contract as the kernel's own queue overflow).
pub const EVENT_QUEUE: usize = 4096;
/// Most raw events handled in one pass of the blocking pool.
const BATCH: usize = 256;
/// Relative jitter of the periodic rescan, so many daemons (or a restart storm) do not
/// sweep their disks in lockstep.
const RESCAN_JITTER: f64 = 0.10;
/// The periodic rescan waits at least this many times as long as the last one took,
/// so it never costs more than ~1 % of a core, however large the fleet (at 100,000
/// files a rescan takes about a second).
const RESCAN_BUDGET: u32 = 100;

/// One directory to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchDir {
    /// The caller's name for this directory, echoed in every event about its files as
    /// `dir` (the fleet uses its index in the config's watch list). Stable across
    /// [`WatchHandle::set_dirs`] as long as the caller keeps it so.
    pub key: usize,
    /// The directory; canonicalized by [`spawn`] and [`WatchHandle::set_dirs`], so
    /// relative paths are taken against the current directory then.
    pub path: PathBuf,
    /// Also watch subdirectories (except hidden ones, whose name starts with `.`).
    pub recursive: bool,
    /// File extensions that mark a database (see [`tenant::is_candidate`]).
    pub extensions: Vec<String>,
}

impl WatchDir {
    /// A non-recursive watch of `path` with the default extensions.
    pub fn new(key: usize, path: impl Into<PathBuf>) -> WatchDir {
        WatchDir {
            key,
            path: path.into(),
            recursive: false,
            extensions: tenant::DEFAULT_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// How to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchOptions {
    /// Period of the safety rescan, jittered ±10%.
    pub rescan_interval: Duration,
    /// Use notify's `PollWatcher` instead of inotify (NFS, CIFS, FUSE mounts).
    pub poll: bool,
    /// Period of the `PollWatcher` (only with `poll`).
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions { rescan_interval: DEFAULT_RESCAN_INTERVAL, poll: false, poll_interval: DEFAULT_POLL_INTERVAL }
    }
}

/// What the watcher saw. `dir` is the [`WatchDir::key`] of the directory the file is in.
///
/// Paths are the canonical watch directory joined with the file's path inside it (a
/// symlink keeps its own name). For one path, `Present` and `Gone` alternate: `Present`
/// when a database file appears (scan, create, `touch`, rename in, or first seen through
/// a write), `Gone` when it is removed or renamed away. A file *replaced* at the same
/// path (renamed over, deleted and re-created between two looks) is `Gone` then
/// `Present`. File names are not classified: a non-GUID `regular-name.db` is `Present`
/// too, and the consumer applies [`tenant::classify`] with its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A database file exists at `path`.
    Present {
        /// The database file.
        path: PathBuf,
        /// Key of its watch directory.
        dir: usize,
    },
    /// The database file at `path` is no longer there (removed, or renamed away).
    Gone {
        /// The database file.
        path: PathBuf,
        /// Key of its watch directory.
        dir: usize,
    },
    /// A known database, or its `-wal`, was written (or the `-wal` created or removed):
    /// time to sync. Bursts are frequent (two per commit); the consumer coalesces.
    Changed {
        /// The database file (never the `-wal` path).
        path: PathBuf,
    },
    /// A database name that will not be replicated because of where it leads or what it
    /// is (a symlink out of the watch directory, a dangling symlink, a FIFO), or a
    /// directory that cannot be read. Emitted once until the path changes.
    Refused {
        /// The refused file or directory.
        path: PathBuf,
        /// Key of its watch directory.
        dir: usize,
        /// Why, for an operator.
        reason: String,
    },
    /// A full scan finished: after the initial scan (readiness), after every full
    /// rescan, and after [`WatchHandle::set_dirs`]. `files` counts the database files
    /// known (GUID or not) across `dirs` directories.
    ScanComplete {
        /// Number of watch directories.
        dirs: usize,
        /// Number of known database files.
        files: usize,
    },
}

/// Why watching could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be resolved (missing, no permission).
    #[error("cannot use watch directory {}: {source}", path.display())]
    Dir {
        /// The directory as given.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The path is not a directory.
    #[error("watch directory {} is not a directory", path.display())]
    NotADirectory {
        /// The path as given.
        path: PathBuf,
    },
    /// notify refused to watch it (for inotify, often the watch limit).
    #[error("cannot watch {}: {source}{}", path.display(), limit_hint(source))]
    Notify {
        /// The canonical directory.
        path: PathBuf,
        /// notify's error.
        source: notify::Error,
    },
    /// notify could not start at all.
    #[error("cannot start the file watcher: {0}")]
    Start(notify::Error),
    /// The watcher task has stopped (shutdown, or the receiver of events was dropped).
    #[error("the directory watcher has stopped")]
    Stopped,
}

/// Advice for the one notify error an operator can fix with a sysctl.
fn limit_hint(e: &notify::Error) -> &'static str {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => " (raise fs.inotify.max_user_watches, or set fleet.poll = true)",
        _ => "",
    }
}

/// Control of a running watcher. Dropping it leaves the watcher running until the
/// shutdown token is cancelled.
pub struct WatchHandle {
    /// Requests to the watcher task (`set_dirs`).
    commands: mpsc::Sender<Command>,
    /// Flags shared with the task and notify's callback.
    shared: Arc<Shared>,
    /// The watcher task.
    task: JoinHandle<()>,
}

/// State shared between the handle, notify's callback thread and the watcher task.
struct Shared {
    /// Someone asked for a full rescan.
    rescan_requested: AtomicBool,
    /// The raw event queue overflowed: events were dropped, a rescan must follow.
    overflowed: AtomicBool,
    /// Wakes the task for the two flags above.
    wake: Notify,
    /// Test hook: drop every notify event, as a full kernel queue would.
    #[cfg(test)]
    drop_events: AtomicBool,
}

/// Where the answer to a `set_dirs` goes.
type Reply = oneshot::Sender<Result<(), WatchError>>;

/// A request to the watcher task.
enum Command {
    /// Replace the watch list; the reply says whether every new directory is watched.
    SetDirs(Vec<Dir>, Reply),
}

impl WatchHandle {
    /// Asks for a full rescan as soon as possible (SIGHUP, tests simulating an overflow).
    /// Requests coalesce; this never blocks.
    pub fn rescan_now(&self) {
        self.shared.rescan_requested.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }

    /// Replaces the watched directories (config reload). Directories no longer listed
    /// (or listed with another key, recursion or extension list) are unwatched and
    /// their files reported `Gone`; new ones are watched and scanned (`Present`), then
    /// `ScanComplete` follows. Fails without changing anything if a new directory cannot
    /// be resolved; if notify refuses one, the others are applied and the first error is
    /// returned (the refused one is retried at every rescan).
    pub async fn set_dirs(&self, dirs: Vec<WatchDir>) -> Result<(), WatchError> {
        let resolved =
            tokio::task::spawn_blocking(move || resolve_dirs(dirs)).await.map_err(|_| WatchError::Stopped)??;
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::SetDirs(resolved, reply)).await.map_err(|_| WatchError::Stopped)?;
        answer.await.map_err(|_| WatchError::Stopped)?
    }

    /// Waits for the watcher task to finish (after the shutdown token is cancelled, or
    /// once the event receiver is dropped).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("directory watcher task failed: {e}");
        }
    }

    /// Test hook: while set, notify events are dropped before they reach the task.
    #[cfg(test)]
    pub(crate) fn drop_events(&self, on: bool) {
        self.shared.drop_events.store(on, Ordering::Release);
    }
}

/// Starts watching `dirs` and returns at once; the initial scan runs in the background
/// and ends with [`WatchEvent::ScanComplete`]. Must be called inside a tokio runtime.
///
/// Fails if a directory cannot be resolved or watched. Events go to `tx` in order; when
/// the consumer is slow the watcher waits (and notify's queue, then ours, overflows into
/// a rescan). The watcher stops when `shutdown` is cancelled or `tx`'s receiver is
/// dropped.
pub fn spawn(
    dirs: Vec<WatchDir>,
    opts: WatchOptions,
    tx: mpsc::Sender<WatchEvent>,
    shutdown: CancellationToken,
) -> Result<WatchHandle, WatchError> {
    let dirs = resolve_dirs(dirs)?;
    let shared = Arc::new(Shared {
        rescan_requested: AtomicBool::new(false),
        overflowed: AtomicBool::new(false),
        wake: Notify::new(),
        #[cfg(test)]
        drop_events: AtomicBool::new(false),
    });
    let (raw_tx, raw_rx) = mpsc::channel(EVENT_QUEUE);
    let handler = {
        let shared = Arc::clone(&shared);
        move |res: notify::Result<Event>| {
            // Opens and closes (IN_OPEN/IN_CLOSE, every SQLite read) are noise: drop them
            // here, before they take a queue slot.
            if matches!(&res, Ok(ev) if matches!(ev.kind, EventKind::Access(_))) {
                return;
            }
            #[cfg(test)]
            if shared.drop_events.load(Ordering::Acquire) {
                return;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = raw_tx.try_send(res) {
                shared.overflowed.store(true, Ordering::Release);
                shared.wake.notify_one();
            }
        }
    };
    let watcher: Box<dyn Watcher + Send> = if opts.poll {
        let config = notify::Config::default().with_poll_interval(opts.poll_interval);
        Box::new(notify::PollWatcher::new(handler, config).map_err(WatchError::Start)?)
    } else {
        Box::new(notify::RecommendedWatcher::new(handler, notify::Config::default()).map_err(WatchError::Start)?)
    };
    let mut tracker = Tracker { dirs: Vec::new(), known: BTreeMap::new(), refused: BTreeSet::new(), walks: 0, watcher };
    for mut dir in dirs {
        watch_dir(tracker.watcher.as_mut(), &mut dir)?;
        tracker.dirs.push(dir);
    }
    let (commands, command_rx) = mpsc::channel(1);
    let task = tokio::spawn(run(
        Work { tracker, out: Vec::new(), batch: Vec::with_capacity(BATCH) },
        raw_rx,
        command_rx,
        Arc::clone(&shared),
        tx,
        opts.rescan_interval,
        shutdown,
    ));
    Ok(WatchHandle { commands, shared, task })
}

/// Canonicalizes every directory (all or nothing).
fn resolve_dirs(dirs: Vec<WatchDir>) -> Result<Vec<Dir>, WatchError> {
    dirs.into_iter()
        .map(|spec| {
            let root = std::fs::canonicalize(&spec.path)
                .map_err(|source| WatchError::Dir { path: spec.path.clone(), source })?;
            if !root.is_dir() {
                return Err(WatchError::NotADirectory { path: spec.path });
            }
            Ok(Dir { spec, root, watching: false })
        })
        .collect()
}

/// Everything the blocking pool needs for one pass, moved there and back.
struct Work {
    /// The watcher's state.
    tracker: Tracker,
    /// Events produced by the pass, sent afterwards (reused, not reallocated).
    out: Vec<WatchEvent>,
    /// Raw notify events for the pass (reused).
    batch: Vec<notify::Result<Event>>,
}

/// What one pass of the blocking pool does.
enum Pass {
    /// Handle `Work::batch`; a full rescan follows if it asks for one.
    Events,
    /// Full rescan of every directory.
    Rescan,
    /// Replace the directory list.
    SetDirs(Vec<Dir>),
}

/// The watcher task: wait for notify events, commands, rescan requests, the rescan
/// timer or shutdown; do the file system work on the blocking pool; send the events.
async fn run(
    mut work: Work,
    mut raw: mpsc::Receiver<notify::Result<Event>>,
    mut commands: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    tx: mpsc::Sender<WatchEvent>,
    rescan_interval: Duration,
    shutdown: CancellationToken,
) {
    let mut pass: Option<(Pass, Option<Reply>)> = Some((Pass::Rescan, None));
    let mut deadline = tokio::time::Instant::now() + jittered(rescan_interval);
    let mut commands_open = true;
    loop {
        if let Some((what, reply)) = pass.take() {
            let is_rescan = matches!(what, Pass::Rescan);
            let began = tokio::time::Instant::now();
            let Some((done, result)) = on_blocking_pool(work, what).await else {
                return;
            };
            work = done;
            if is_rescan || result.rescan_needed {
                deadline = next_rescan(began, tokio::time::Instant::now(), rescan_interval);
            }
            if !send_all(&tx, &mut work.out, &shutdown).await {
                return;
            }
            if let Some(reply) = reply {
                let _ = reply.send(result.set_dirs);
            }
            if result.rescan_needed {
                pass = Some((Pass::Rescan, None));
                continue;
            }
        }
        if shared.overflowed.swap(false, Ordering::AcqRel) | shared.rescan_requested.swap(false, Ordering::AcqRel) {
            pass = Some((Pass::Rescan, None));
            continue;
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            cmd = commands.recv(), if commands_open => match cmd {
                Some(Command::SetDirs(dirs, reply)) => pass = Some((Pass::SetDirs(dirs), Some(reply))),
                None => commands_open = false,
            },
            _ = shared.wake.notified() => {}
            n = raw.recv_many(&mut work.batch, BATCH) => {
                if n == 0 {
                    return; // notify's side is gone: nothing more will come
                }
                pass = Some((Pass::Events, None));
            }
            _ = tokio::time::sleep_until(deadline) => pass = Some((Pass::Rescan, None)),
        }
    }
}

/// What a pass reports besides its events.
struct PassResult {
    /// The events showed that some were lost: rescan.
    rescan_needed: bool,
    /// The outcome of a `SetDirs` pass (`Ok` for the others).
    set_dirs: Result<(), WatchError>,
}

/// Runs one pass on the blocking pool. `None` if it panicked (a bug): the watcher stops.
async fn on_blocking_pool(mut work: Work, what: Pass) -> Option<(Work, PassResult)> {
    let joined = tokio::task::spawn_blocking(move || {
        let mut result = PassResult { rescan_needed: false, set_dirs: Ok(()) };
        let Work { tracker, out, batch } = &mut work;
        match what {
            Pass::Events => result.rescan_needed = tracker.handle_events(batch.drain(..), out),
            Pass::Rescan => tracker.full_rescan(out),
            Pass::SetDirs(dirs) => result.set_dirs = tracker.set_dirs(dirs, out),
        }
        (work, result)
    })
    .await;
    match joined {
        Ok(done) => Some(done),
        Err(e) => {
            tracing::error!("directory watcher stopped: {e}");
            None
        }
    }
}

/// Sends every event in order, draining `out`; `false` if the watcher must stop.
async fn send_all(tx: &mpsc::Sender<WatchEvent>, out: &mut Vec<WatchEvent>, shutdown: &CancellationToken) -> bool {
    for ev in out.drain(..) {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return false,
            sent = tx.send(ev) => if sent.is_err() { return false },
        }
    }
    true
}

/// `d` ± [`RESCAN_JITTER`].
/// When the periodic rescan is next due, after a pass that ran from `began` to `now`.
fn next_rescan(began: tokio::time::Instant, now: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    now + jittered(interval).max((now - began) * RESCAN_BUDGET)
}

fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + RESCAN_JITTER * (2.0 * fastrand::f64() - 1.0))
}

/// A watched directory, resolved.
struct Dir {
    /// As the caller gave it.
    spec: WatchDir,
    /// Canonical path; every event path starts with it.
    root: PathBuf,
    /// notify is watching it (false after it vanished; retried at each rescan).
    watching: bool,
}

impl Dir {
    /// Same directory watched the same way (`set_dirs` keeps such a one untouched).
    fn same_as(&self, other: &Dir) -> bool {
        self.root == other.root
            && self.spec.key == other.spec.key
            && self.spec.recursive == other.spec.recursive
            && self.spec.extensions == other.spec.extensions
    }

    fn mode(&self) -> RecursiveMode {
        if self.spec.recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive }
    }

    /// Whether `path` (strictly below the root) is in this watch's scope: a direct
    /// child, or any descendant outside hidden folders if recursive.
    fn covers(&self, path: &Path) -> bool {
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        match rel.components().count() {
            0 => false,
            1 => true,
            // `rel` is `a/b/.../name`: all but the last component are folders.
            n => {
                self.spec.recursive
                    && rel.components().take(n - 1).all(|c| c.as_os_str().as_encoded_bytes().first() != Some(&b'.'))
            }
        }
    }
}

/// What the watcher knows of one database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    /// Key of its watch directory.
    key: usize,
    /// Identity and stamp at the last look.
    seen: Seen,
    /// Number of the last folder walk that found it ([`Tracker::walks`]): after a
    /// walk, a known file below the walked folder with an older number has vanished.
    walk: u64,
}

/// What one look at a database file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Device and inode of the file (of a symlink's target): a different identity at
    /// the same path means the file was replaced.
    ident: FileIdent,
    /// Size and mtime of the file and of its `-wal`: if a rescan finds them different,
    /// the database was written and the event was lost (or never sent, as on a mount
    /// without inotify), so the rescan reports `Changed`.
    stamp: Stamp,
}

/// Device and inode number.
type FileIdent = (u64, u64);

/// (mtime, size) of a database, and of its `-wal` if there is one.
type Stamp = ((Option<SystemTime>, u64), Option<(Option<SystemTime>, u64)>);

/// Looks at a database's real file and its `-wal`. `wal_listed` is false when a folder
/// listing just taken has no `-wal` next to the file: then there is none to look at
/// (one lookup fewer per idle tenant in a rescan; a `-wal` created since is an event).
fn seen(real: &Path, meta: &Metadata, wal_listed: bool) -> Seen {
    let mut wal = real.as_os_str().to_owned();
    wal.push("-wal");
    let wal = if wal_listed { std::fs::symlink_metadata(PathBuf::from(wal)).ok() } else { None };
    let wal = wal.map(|m| (m.modified().ok(), m.len()));
    Seen { ident: identity(meta), stamp: ((meta.modified().ok(), meta.len()), wal) }
}

#[cfg(unix)]
fn identity(m: &Metadata) -> FileIdent {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

#[cfg(not(unix))]
fn identity(_m: &Metadata) -> FileIdent {
    (0, 0)
}

/// The watcher's state, and all of its file system work (blocking; runs on the pool).
struct Tracker {
    /// Watched directories, in the caller's order.
    dirs: Vec<Dir>,
    /// Every database file known to exist, keyed by the path's bytes: byte order keeps
    /// a folder's files in one range (`folder/…`) and compares with `memcmp`. (`Path`'s
    /// own order compares component by component, which was half of the CPU time of a
    /// rescan of 100,000 files.)
    known: BTreeMap<OsString, Known>,
    /// Paths already reported `Refused`, so a rescan does not repeat them.
    refused: BTreeSet<PathBuf>,
    /// Folder walks so far (see [`Known::walk`]).
    walks: u64,
    /// The notify watcher; dropping it stops notify's thread.
    watcher: Box<dyn Watcher + Send>,
}

impl Tracker {
    /// Turns notify events into path reconciliations; true if events were lost and a
    /// full rescan is needed.
    fn handle_events(
        &mut self,
        events: impl Iterator<Item = notify::Result<Event>>,
        out: &mut Vec<WatchEvent>,
    ) -> bool {
        let mut rescan = false;
        for res in events {
            let ev = match res {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!("file watcher error, rescanning: {e}");
                    rescan = true;
                    continue;
                }
            };
            if ev.need_rescan() || ev.paths.is_empty() {
                tracing::warn!("file watcher lost events (queue overflow), rescanning");
                rescan = true;
                continue;
            }
            let wrote = match ev.kind {
                EventKind::Access(_) => continue,
                EventKind::Create(_) | EventKind::Remove(_) => false,
                EventKind::Modify(ModifyKind::Name(_)) => false,
                EventKind::Modify(_) | EventKind::Any | EventKind::Other => true,
            };
            for path in ev.paths {
                self.on_path(path, wrote, out);
            }
        }
        rescan
    }

    /// One path touched by an event: `-wal` activity means its database changed; a
    /// write to a known database is `Changed` without a syscall; anything else (create,
    /// remove, rename, first sight) is settled by looking at the path.
    fn on_path(&mut self, path: PathBuf, wrote: bool, out: &mut Vec<WatchEvent>) {
        if let Some(db) = tenant::wal_owner(&path) {
            if !self.known.contains_key(db.as_os_str()) {
                self.reconcile_path(&db, out);
            }
            if self.known.contains_key(db.as_os_str()) {
                out.push(WatchEvent::Changed { path: db });
            }
            return;
        }
        if wrote {
            if self.known.contains_key(path.as_os_str()) {
                out.push(WatchEvent::Changed { path });
                return;
            }
            // A write to something that is not a database name (`-shm`, `-journal`,
            // a log file) cannot matter; a folder is never written.
            let dbish = self.dir_of(&path).is_some_and(|i| tenant::is_candidate(&path, &self.dirs[i].spec.extensions));
            if !dbish {
                return;
            }
        }
        self.reconcile_path(&path, out);
    }

    /// Brings what is known about `path` (a file, or a folder and everything below it)
    /// in line with the file system.
    fn reconcile_path(&mut self, path: &Path, out: &mut Vec<WatchEvent>) {
        if let Some(i) = self.dirs.iter().position(|d| d.root == path) {
            self.reconcile_subtree(i, path, out);
            return;
        }
        let Some(i) = self.dir_of(path) else {
            return;
        };
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.forget_under(path, None, out),
            Err(e) => tracing::debug!("cannot look at {}: {e}", path.display()),
            Ok(meta) if meta.is_dir() => {
                if self.dirs[i].spec.recursive {
                    self.reconcile_subtree(i, path, out);
                }
            }
            Ok(meta) => {
                if tenant::is_candidate(path, &self.dirs[i].spec.extensions) {
                    let found = evaluate(&self.dirs[i].root, path, &meta, true);
                    self.apply(i, path.to_path_buf(), found, out);
                }
            }
        }
    }

    /// The watch directory whose scope holds `path` (the deepest, if several do).
    fn dir_of(&self, path: &Path) -> Option<usize> {
        self.dirs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.covers(path))
            .max_by_key(|(_, d)| d.root.as_os_str().len())
            .map(|(i, _)| i)
    }

    /// Rescans every directory, re-watching any that had vanished, then `ScanComplete`.
    fn full_rescan(&mut self, out: &mut Vec<WatchEvent>) {
        for dir in &mut self.dirs {
            if !dir.watching
                && dir.root.is_dir()
                && let Err(e) = watch_dir(self.watcher.as_mut(), dir)
            {
                tracing::warn!("{e}");
            }
        }
        for i in 0..self.dirs.len() {
            let root = self.dirs[i].root.clone();
            self.reconcile_subtree(i, &root, out);
        }
        out.push(self.scan_complete());
    }

    fn scan_complete(&self) -> WatchEvent {
        WatchEvent::ScanComplete { dirs: self.dirs.len(), files: self.known.len() }
    }

    /// Walks `sub` (the root of dir `i`, or a folder below it) and reconciles every
    /// database file in it: new → `Present`, replaced → `Gone` + `Present`, vanished →
    /// `Gone`. Files below a folder that cannot be read (other than for being gone) are
    /// left as they were: a transient error must not unregister a fleet.
    fn reconcile_subtree(&mut self, i: usize, sub: &Path, out: &mut Vec<WatchEvent>) {
        // Every file found is stamped with this walk's number; an unchanged known file
        // is settled right there, anything else is applied after the walk. The files
        // that vanished are then the known ones below `sub` with an older number.
        self.walks += 1;
        let number = self.walks;
        let dir = &self.dirs[i];
        let key = dir.spec.key;
        let known = &mut self.known;
        let mut changed = Vec::new();
        let mut walk = Walk::default();
        walk.run(dir, sub, &mut |path, result| {
            if let Ok(seen) = &result
                && let Some(k) = known.get_mut(path.as_os_str())
                && k.key == key
                && k.seen == *seen
            {
                k.walk = number;
                return;
            }
            changed.push((path.to_path_buf(), result));
        });

        if sub == dir.root {
            match &walk.root_error {
                Some(e) => {
                    let reason = format!("watch directory cannot be read: {e}");
                    if self.dirs[i].watching {
                        // The kernel dropped the watch with the directory; retried at rescan.
                        let _ = self.watcher.unwatch(sub);
                        self.dirs[i].watching = false;
                    }
                    if self.refused.insert(sub.to_path_buf()) {
                        out.push(WatchEvent::Refused { path: sub.to_path_buf(), dir: key, reason });
                    }
                }
                None => {
                    self.refused.remove(sub);
                }
            }
        }
        for (path, reason) in walk.unreadable_reasons {
            if self.refused.insert(path.clone()) {
                out.push(WatchEvent::Refused { path, dir: key, reason });
            }
        }
        // Changes are applied first, their events held back so that the files that
        // vanished (not under an unreadable folder) are reported before them, as `Gone`
        // before any `Present`.
        let refused_now: HashSet<PathBuf> =
            changed.iter().filter(|(_, r)| r.is_err()).map(|(p, _)| p.clone()).collect();
        let mut found_events = Vec::new();
        for (path, result) in changed {
            self.apply(i, path, result, &mut found_events);
        }
        let vanished: Vec<PathBuf> = self
            .under(sub)
            .filter(|(_, k)| k.walk != number)
            .filter(|(p, _)| !walk.unreadable.iter().any(|u| p.starts_with(u)))
            .map(|(p, _)| p.to_path_buf())
            .collect();
        for path in vanished {
            if let Some(k) = self.known.remove(path.as_os_str()) {
                out.push(WatchEvent::Gone { path, dir: k.key });
            }
        }
        out.append(&mut found_events);
        // Refusals below `sub` of paths this walk did not find again are forgotten.
        let stale_refusals: Vec<PathBuf> = self
            .refused
            .range(sub.to_path_buf()..)
            .take_while(|p| p.starts_with(sub))
            .filter(|p| p.as_path() != sub)
            .filter(|p| !refused_now.contains(p.as_path()))
            .filter(|p| !walk.unreadable.iter().any(|u| p.starts_with(u)))
            .cloned()
            .collect();
        for p in stale_refusals {
            self.refused.remove(&p);
        }
    }

    /// Known files at or below `path`: `path` itself, then `path/…` in byte order.
    fn under<'a>(&'a self, path: &'a Path) -> impl Iterator<Item = (&'a Path, &'a Known)> {
        let mut folder = path.as_os_str().to_owned();
        folder.push("/");
        let itself = self.known.get_key_value(path.as_os_str());
        let below = self
            .known
            .range(folder.clone()..)
            .take_while(move |(p, _)| p.as_encoded_bytes().starts_with(folder.as_encoded_bytes()));
        itself.into_iter().chain(below).map(|(p, k)| (Path::new(p), k))
    }

    /// Forgets every known file at or below `path` (optionally only those of dir key
    /// `only_key`), reporting each `Gone`; refusals there are dropped silently.
    fn forget_under(&mut self, path: &Path, only_key: Option<usize>, out: &mut Vec<WatchEvent>) {
        let gone: Vec<PathBuf> = self
            .under(path)
            .filter(|(_, k)| only_key.is_none_or(|key| k.key == key))
            .map(|(p, _)| p.to_path_buf())
            .collect();
        for p in gone {
            if let Some(k) = self.known.remove(p.as_os_str()) {
                out.push(WatchEvent::Gone { path: p, dir: k.key });
            }
        }
        let refused: Vec<PathBuf> =
            self.refused.range(path.to_path_buf()..).take_while(|p| p.starts_with(path)).cloned().collect();
        for p in refused {
            self.refused.remove(&p);
        }
    }

    /// Records what was found at `path` in dir `i` and reports the difference.
    fn apply(&mut self, i: usize, path: PathBuf, found: Result<Seen, String>, out: &mut Vec<WatchEvent>) {
        let key = self.dirs[i].spec.key;
        match found {
            Ok(seen) => {
                self.refused.remove(&path);
                let now = Known { key, seen, walk: self.walks };
                match self.known.get_mut(path.as_os_str()) {
                    Some(before) if before.key == key && before.seen.ident == seen.ident => {
                        before.walk = self.walks;
                        if before.seen.stamp != seen.stamp {
                            before.seen.stamp = seen.stamp;
                            out.push(WatchEvent::Changed { path });
                        }
                    }
                    Some(before) => {
                        let before = std::mem::replace(before, now);
                        out.push(WatchEvent::Gone { path: path.clone(), dir: before.key });
                        out.push(WatchEvent::Present { path, dir: key });
                    }
                    None => {
                        out.push(WatchEvent::Present { path: path.clone(), dir: key });
                        self.known.insert(path.into_os_string(), now);
                    }
                }
            }
            Err(reason) => {
                if let Some(before) = self.known.remove(path.as_os_str()) {
                    out.push(WatchEvent::Gone { path: path.clone(), dir: before.key });
                }
                if self.refused.insert(path.clone()) {
                    out.push(WatchEvent::Refused { path, dir: key, reason });
                }
            }
        }
    }

    /// Replaces the directory list (see [`WatchHandle::set_dirs`]).
    fn set_dirs(&mut self, new: Vec<Dir>, out: &mut Vec<WatchEvent>) -> Result<(), WatchError> {
        let old = std::mem::take(&mut self.dirs);
        let mut kept: Vec<Option<Dir>> = Vec::with_capacity(old.len());
        for dir in old {
            if new.iter().any(|n| n.same_as(&dir)) {
                kept.push(Some(dir));
            } else {
                if dir.watching {
                    let _ = self.watcher.unwatch(&dir.root);
                }
                self.forget_under(&dir.root.clone(), Some(dir.spec.key), out);
            }
        }
        let mut first_error = None;
        let mut added = Vec::new();
        for mut dir in new {
            let previous = kept.iter_mut().find(|k| k.as_ref().is_some_and(|k| k.same_as(&dir))).and_then(Option::take);
            match previous {
                Some(previous) => self.dirs.push(previous),
                None => {
                    if let Err(e) = watch_dir(self.watcher.as_mut(), &mut dir) {
                        tracing::warn!("{e}");
                        first_error.get_or_insert(e);
                    }
                    added.push(self.dirs.len());
                    self.dirs.push(dir);
                }
            }
        }
        for i in added {
            let root = self.dirs[i].root.clone();
            self.reconcile_subtree(i, &root, out);
        }
        out.push(self.scan_complete());
        first_error.map_or(Ok(()), Err)
    }
}

/// Starts notify on `dir` and records whether it worked.
fn watch_dir(watcher: &mut dyn Watcher, dir: &mut Dir) -> Result<(), WatchError> {
    match watcher.watch(&dir.root, dir.mode()) {
        Ok(()) => {
            dir.watching = true;
            Ok(())
        }
        Err(source) => Err(WatchError::Notify { path: dir.root.clone(), source }),
    }
}

/// Decides whether a database-named entry can be replicated: a regular file, or a
/// symlink to one inside the watch directory. `meta` is from `symlink_metadata`;
/// `wal_listed` as for [`seen`] (a symlink's target is always looked at).
fn evaluate(root: &Path, path: &Path, meta: &Metadata, wal_listed: bool) -> Result<Seen, String> {
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(seen(path, meta, wal_listed));
    }
    if !kind.is_symlink() {
        return Err("not a regular file".to_owned());
    }
    let target = tenant::inside(root, path).map_err(|e| e.to_string())?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_file() => Ok(seen(&target, &m, true)),
        Ok(_) => Err(format!("symlink to {}, which is not a regular file", target.display())),
        Err(e) => Err(format!("cannot read {}: {e}", target.display())),
    }
}

/// The result of walking one folder tree (the database files themselves go to the
/// walk's callback, one at a time: nothing per file is kept).
#[derive(Default)]
struct Walk {
    /// Folders that exist but could not be read.
    unreadable: Vec<PathBuf>,
    /// The same folders with the reason, for `Refused`.
    unreadable_reasons: Vec<(PathBuf, String)>,
    /// Why the starting folder itself could not be read (including "not found").
    root_error: Option<String>,
}

impl Walk {
    /// Walks `start` (recursively if the watch is), skipping hidden folders and never
    /// following symlinked folders (no loops, no escapes), and hands every
    /// database-named entry to `found` with its identity or why it is refused.
    ///
    /// Each folder is listed twice: first for the names of its `-wal` files (a database
    /// whose `-wal` is not listed has none to look at), then for the databases, each
    /// looked at (`lstat` relative to the open folder) and handed over at once, so a
    /// rescan of 100,000 files allocates nothing per unchanged file.
    fn run(&mut self, dir: &Dir, start: &Path, found: &mut dyn FnMut(&Path, Result<Seen, String>)) {
        let mut stack = vec![start.to_path_buf()];
        while let Some(folder) = stack.pop() {
            let Some(wals) = self.list(&folder, start, |entries| {
                let mut wals: HashSet<OsString> = HashSet::new();
                for entry in entries.flatten() {
                    let name = entry.file_name();
                    if let Some(db) = name.as_encoded_bytes().strip_suffix(b"-wal") {
                        // SAFETY: cut right before an ASCII suffix of bytes from an `OsStr`.
                        wals.insert(unsafe { OsStr::from_encoded_bytes_unchecked(db) }.to_owned());
                    }
                }
                wals
            }) else {
                continue;
            };
            let mut path = folder.clone();
            self.list(&folder, start, |entries| {
                for entry in entries {
                    let entry = match entry {
                        Ok(entry) => entry,
                        Err(e) => return Err(e),
                    };
                    let name = entry.file_name();
                    if name.as_encoded_bytes().ends_with(b"-wal") {
                        continue;
                    }
                    let Ok(kind) = entry.file_type() else {
                        continue; // vanished between readdir and stat
                    };
                    if kind.is_dir() {
                        let hidden = name.as_encoded_bytes().first() == Some(&b'.');
                        if dir.spec.recursive && !hidden {
                            stack.push(entry.path());
                        }
                        continue;
                    }
                    if !tenant::is_candidate(Path::new(&name), &dir.spec.extensions) {
                        continue;
                    }
                    path.push(&name);
                    // `DirEntry::metadata` is an lstat relative to the open folder: no
                    // walk of the whole path per file.
                    match entry.metadata() {
                        Ok(meta) if meta.is_dir() => {} // replaced by a folder meanwhile
                        Ok(meta) => found(&path, evaluate(&dir.root, &path, &meta, wals.contains(&name))),
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => found(&path, Err(format!("cannot read: {e}"))),
                    }
                    path.pop();
                }
                Ok(())
            })
            .and_then(|listed| listed.map_err(|e| self.cannot_list(&folder, e)).ok());
        }
    }

    /// Lists `folder` through `each`, or records why it cannot be read.
    fn list<T>(&mut self, folder: &Path, start: &Path, each: impl FnOnce(std::fs::ReadDir) -> T) -> Option<T> {
        match std::fs::read_dir(folder) {
            Ok(entries) => Some(each(entries)),
            Err(e) => {
                if folder == start {
                    self.root_error = Some(e.to_string());
                }
                if e.kind() != io::ErrorKind::NotFound {
                    self.unreadable_reasons.push((folder.to_path_buf(), format!("cannot read folder: {e}")));
                    self.unreadable.push(folder.to_path_buf());
                }
                None
            }
        }
    }

    /// A listing broke off: the folder's files are left as they were.
    fn cannot_list(&mut self, folder: &Path, e: io::Error) {
        self.unreadable_reasons.push((folder.to_path_buf(), format!("cannot list folder: {e}")));
        self.unreadable.push(folder.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use tokio::time::timeout;

    /// Longest wait for any one expected event.
    const WAIT: Duration = Duration::from_secs(5);
    const G1: &str = "12345678-1234-5678-9abc-123456789012";
    const G2: &str = "98765432-4321-8765-cba9-876543210987";
    const G3: &str = "abcdef01-2345-6789-abcd-ef0123456789";
    const G4: &str = "fedcba98-7654-3210-fedc-ba9876543210";

    /// A running watcher over fresh temp folders.
    struct Fixture {
        _tmp: tempfile::TempDir,
        /// Canonical base folder holding the watch folders.
        base: PathBuf,
        rx: mpsc::Receiver<WatchEvent>,
        handle: WatchHandle,
        shutdown: CancellationToken,
    }

    impl Fixture {
        /// Creates `base/<name>` for each name (prepared by `setup` before the watcher
        /// starts) and watches them with keys 0, 1, …
        async fn start(folders: &[(&str, bool)], opts: WatchOptions, setup: impl FnOnce(&Path)) -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let base = fs::canonicalize(tmp.path()).unwrap();
            for (name, _) in folders {
                fs::create_dir_all(base.join(name)).unwrap();
            }
            setup(&base);
            let dirs = folders
                .iter()
                .enumerate()
                .map(|(i, (name, recursive))| WatchDir { recursive: *recursive, ..WatchDir::new(i, base.join(name)) })
                .collect();
            let (tx, rx) = mpsc::channel(64);
            let shutdown = CancellationToken::new();
            let handle = spawn(dirs, opts, tx, shutdown.clone()).unwrap();
            Fixture { _tmp: tmp, base, rx, handle, shutdown }
        }

        /// Next event, or a panic after `WAIT`.
        async fn next(&mut self) -> WatchEvent {
            match timeout(WAIT, self.rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => panic!("watcher stopped"),
                Err(_) => panic!("no event within {WAIT:?}"),
            }
        }

        /// Events up to and including the next `ScanComplete`.
        async fn until_scan_complete(&mut self) -> Vec<WatchEvent> {
            let mut seen = Vec::new();
            loop {
                let ev = self.next().await;
                let done = matches!(ev, WatchEvent::ScanComplete { .. });
                seen.push(ev);
                if done {
                    return seen;
                }
            }
        }

        /// Skips events until one satisfies `want`; returns the ones skipped too.
        async fn expect(&mut self, what: &str, want: impl Fn(&WatchEvent) -> bool) -> Vec<WatchEvent> {
            let mut skipped = Vec::new();
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(ev)) if want(&ev) => return skipped,
                    Ok(Some(ev)) => skipped.push(ev),
                    Ok(None) => panic!("watcher stopped waiting for {what}; saw {skipped:?}"),
                    Err(_) => panic!("no {what} within {WAIT:?}; saw {skipped:?}"),
                }
            }
        }

        /// Asserts that nothing but `Changed` arrives for `quiet`.
        async fn expect_quiet(&mut self, quiet: Duration) {
            let deadline = tokio::time::Instant::now() + quiet;
            while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
                assert!(matches!(ev, WatchEvent::Changed { .. }), "unexpected {ev:?}");
            }
        }

        /// Discards whatever arrives for `quiet`.
        async fn drain(&mut self, quiet: Duration) {
            let deadline = tokio::time::Instant::now() + quiet;
            while let Ok(Some(_)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {}
        }

        async fn stop(self) {
            self.shutdown.cancel();
            timeout(WAIT, self.handle.join()).await.unwrap();
        }
    }

    fn present(path: &Path, dir: usize) -> WatchEvent {
        WatchEvent::Present { path: path.to_path_buf(), dir }
    }

    fn gone(path: &Path, dir: usize) -> WatchEvent {
        WatchEvent::Gone { path: path.to_path_buf(), dir }
    }

    fn db(name: &str) -> String {
        format!("{name}.db")
    }

    /// Quick rescans for tests that exercise the timer; long ones elsewhere so only
    /// events are seen.
    fn quiet_opts() -> WatchOptions {
        WatchOptions { rescan_interval: Duration::from_secs(3600), ..WatchOptions::default() }
    }

    #[tokio::test]
    async fn initial_scan_reports_databases_and_ignores_the_rest() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            let d = base.join("clients");
            for name in [G1, G2, G3, "regular-name"] {
                fs::write(d.join(db(name)), b"").unwrap();
            }
            for noise in ["x.db-wal", "notes.txt", ".hidden.db", "x.db-shm", "y.db~", "z.db.tmp"] {
                fs::write(d.join(noise), b"").unwrap();
            }
            fs::create_dir(d.join("sub")).unwrap();
            fs::write(d.join("sub").join(db(G4)), b"").unwrap(); // not recursive
        })
        .await;
        let mut seen = f.until_scan_complete().await;
        let last = seen.pop();
        assert_eq!(last, Some(WatchEvent::ScanComplete { dirs: 1, files: 4 }));
        let d = f.base.join("clients");
        let mut want: Vec<WatchEvent> =
            [G1, G2, G3, "regular-name"].iter().map(|n| present(&d.join(db(n)), 0)).collect();
        let key = |e: &WatchEvent| format!("{e:?}");
        seen.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(seen, want);
        f.stop().await;
    }

    #[tokio::test]
    async fn create_touch_write_remove() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
        assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
        let path = f.base.join("clients").join(db(G1));

        // `touch` a new tenant: Present.
        fs::File::create(&path).unwrap();
        f.expect("Present after touch", |e| *e == present(&path, 0)).await;

        // A write to its -wal: Changed, naming the database.
        let wal = f.base.join("clients").join(format!("{G1}.db-wal"));
        fs::write(&wal, b"frames").unwrap();
        f.expect("Changed after -wal write", |e| *e == WatchEvent::Changed { path: path.clone() }).await;

        // A write to the database itself: Changed too.
        f.drain(Duration::from_millis(200)).await;
        fs::write(&path, b"pages").unwrap();
        f.expect("Changed after db write", |e| *e == WatchEvent::Changed { path: path.clone() }).await;

        // Remove: Gone, exactly once.
        fs::remove_file(&wal).unwrap();
        fs::remove_file(&path).unwrap();
        let skipped = f.expect("Gone after remove", |e| *e == gone(&path, 0)).await;
        assert!(skipped.iter().all(|e| matches!(e, WatchEvent::Changed { .. })), "{skipped:?}");
        f.handle.rescan_now();
        let after = f.until_scan_complete().await;
        assert_eq!(after, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
        f.stop().await;
    }

    #[tokio::test]
    async fn atomic_rename_in_and_move_out() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::create_dir(base.join("staging")).unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let clients = f.base.join("clients");

        // write a temp file inside the folder, then rename it to <GUID>.db
        let tmp = clients.join(format!("{G1}.db.tmp"));
        fs::write(&tmp, b"SQLite format 3\0").unwrap();
        let target = clients.join(db(G1));
        fs::rename(&tmp, &target).unwrap();
        f.expect("Present after rename in", |e| *e == present(&target, 0)).await;

        // rename from a folder outside the watch
        let outside = f.base.join("staging").join(db(G2));
        fs::write(&outside, b"").unwrap();
        let moved_in = clients.join(db(G2));
        fs::rename(&outside, &moved_in).unwrap();
        f.expect("Present after move in", |e| *e == present(&moved_in, 0)).await;

        // move out of the watched folder: only Name(From) from inotify
        fs::rename(&moved_in, f.base.join("staging").join(db(G2))).unwrap();
        f.expect("Gone after move out", |e| *e == gone(&moved_in, 0)).await;

        // rename inside: old Gone, new Present
        let renamed = clients.join(db(G3));
        fs::rename(&target, &renamed).unwrap();
        let mut pending = vec![gone(&target, 0), present(&renamed, 0)];
        while !pending.is_empty() {
            let ev = f.next().await;
            pending.retain(|p| *p != ev);
        }
        f.stop().await;
    }

    #[tokio::test]
    async fn replacing_a_file_is_gone_then_present() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::write(base.join("clients").join(db(G1)), b"old").unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let path = f.base.join("clients").join(db(G1));
        let tmp = f.base.join("clients").join("restore.tmp");
        fs::write(&tmp, b"new").unwrap();
        fs::rename(&tmp, &path).unwrap();
        f.expect("Gone of the replaced file", |e| *e == gone(&path, 0)).await;
        let ev = f.next().await;
        assert_eq!(ev, present(&path, 0));
        f.stop().await;
    }

    #[tokio::test]
    async fn recursive_watch_sees_db_created_right_after_its_folder() {
        let mut f = Fixture::start(&[("clients", true)], quiet_opts(), |_| {}).await;
        f.until_scan_complete().await;
        let sub = f.base.join("clients").join("eu").join("west");
        fs::create_dir_all(&sub).unwrap();
        let path = sub.join(db(G1));
        fs::write(&path, b"").unwrap();
        f.expect("Present in new subfolder", |e| *e == present(&path, 0)).await;
        // Moving the folder out makes its databases Gone.
        fs::rename(f.base.join("clients").join("eu"), f.base.join("elsewhere")).unwrap();
        f.expect("Gone after folder moved out", |e| *e == gone(&path, 0)).await;
        // Hidden folders are not watched.
        let hidden = f.base.join("clients").join(".state");
        fs::create_dir(&hidden).unwrap();
        fs::write(hidden.join(db(G2)), b"").unwrap();
        f.handle.rescan_now();
        let seen = f.until_scan_complete().await;
        assert_eq!(seen.last(), Some(&WatchEvent::ScanComplete { dirs: 1, files: 0 }), "{seen:?}");
        f.stop().await;
    }

    #[tokio::test]
    async fn non_recursive_watch_ignores_subfolders() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
        f.until_scan_complete().await;
        let sub = f.base.join("clients").join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join(db(G1)), b"").unwrap();
        f.expect_quiet(Duration::from_millis(300)).await;
        f.handle.rescan_now();
        assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
        f.stop().await;
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn symlinks_outside_are_refused_inside_accepted() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::write(base.join("secret.db"), b"").unwrap();
            std::os::unix::fs::symlink(base.join("secret.db"), base.join("clients").join(db(G1))).unwrap();
        })
        .await;
        let link = f.base.join("clients").join(db(G1));
        let seen = f.until_scan_complete().await;
        match &seen[..] {
            [WatchEvent::Refused { path, dir: 0, reason }, WatchEvent::ScanComplete { dirs: 1, files: 0 }] => {
                assert_eq!(path, &link);
                assert!(reason.contains("outside the watch directory"), "{reason}");
            }
            other => panic!("got {other:?}"),
        }
        // Not repeated by a rescan.
        f.handle.rescan_now();
        assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
        // Created while watching: refused too.
        let link2 = f.base.join("clients").join(db(G2));
        std::os::unix::fs::symlink(f.base.join("secret.db"), &link2).unwrap();
        f.expect("Refused for new escaping link", |e| matches!(e, WatchEvent::Refused { path, .. } if *path == link2))
            .await;
        // A link to a file inside the folder is fine.
        let real = f.base.join("clients").join("real.sqlite");
        fs::write(&real, b"").unwrap();
        f.expect("Present for real file", |e| *e == present(&real, 0)).await;
        let alias = f.base.join("clients").join(db(G3));
        std::os::unix::fs::symlink(&real, &alias).unwrap();
        f.expect("Present for inner link", |e| *e == present(&alias, 0)).await;
        f.stop().await;
    }

    #[tokio::test]
    async fn rescan_now_finds_what_notify_dropped() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::write(base.join("clients").join(db(G1)), b"").unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let clients = f.base.join("clients");

        // Stop the world: notify events are lost, as in a queue overflow.
        f.handle.drop_events(true);
        fs::write(clients.join(db(G2)), b"").unwrap();
        fs::remove_file(clients.join(db(G1))).unwrap();
        f.expect_quiet(Duration::from_millis(300)).await;
        f.handle.drop_events(false);

        f.handle.rescan_now();
        let mut seen = f.until_scan_complete().await;
        seen.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(
            seen,
            [
                gone(&clients.join(db(G1)), 0),
                present(&clients.join(db(G2)), 0),
                WatchEvent::ScanComplete { dirs: 1, files: 1 },
            ]
        );
        f.stop().await;
    }

    #[tokio::test]
    async fn rescan_reports_writes_whose_events_were_lost() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::write(base.join("clients").join(db(G1)), b"").unwrap();
            fs::write(base.join("clients").join(db(G2)), b"").unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let path = f.base.join("clients").join(db(G1));
        f.handle.drop_events(true);
        fs::write(f.base.join("clients").join(format!("{G1}-wal")), b"x").unwrap(); // not its WAL
        fs::write(f.base.join("clients").join(format!("{G1}.db-wal")), b"frames").unwrap();
        f.expect_quiet(Duration::from_millis(200)).await;
        f.handle.drop_events(false);
        f.handle.rescan_now();
        assert_eq!(
            f.until_scan_complete().await,
            [WatchEvent::Changed { path: path.clone() }, WatchEvent::ScanComplete { dirs: 1, files: 2 }]
        );
        // An idle fleet: a rescan reports nothing but completion.
        f.handle.rescan_now();
        assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 2 }]);
        // The -wal grows, then goes (a checkpoint on close), each unseen by notify: the
        // rescan, which looks only at -wal files its listing shows, still reports both.
        let wal = f.base.join("clients").join(format!("{G1}.db-wal"));
        for change in [Some(b"frames and more frames".as_slice()), None] {
            f.handle.drop_events(true);
            match change {
                Some(bytes) => fs::write(&wal, bytes).unwrap(),
                None => fs::remove_file(&wal).unwrap(),
            }
            f.expect_quiet(Duration::from_millis(200)).await;
            f.handle.drop_events(false);
            f.handle.rescan_now();
            assert_eq!(
                f.until_scan_complete().await,
                [WatchEvent::Changed { path: path.clone() }, WatchEvent::ScanComplete { dirs: 1, files: 2 }]
            );
        }
        f.stop().await;
    }

    #[tokio::test]
    async fn real_sqlite_writes_are_changed_never_gone() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
        f.until_scan_complete().await;
        let path = f.base.join("clients").join(db(G1));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        f.expect("Present on open", |e| *e == present(&path, 0)).await;
        f.drain(Duration::from_millis(200)).await;
        conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
        f.expect("Changed on commit", |e| *e == WatchEvent::Changed { path: path.clone() }).await;
        // Closing checkpoints and deletes -wal and -shm: the database stays Present.
        drop(conn);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, f.rx.recv()).await {
            assert_eq!(ev, WatchEvent::Changed { path: path.clone() });
        }
        // The first rescan after activity may repeat one `Changed` (stamps are only
        // taken by scans, not per event); once idle, a rescan reports nothing else.
        f.handle.rescan_now();
        let seen = f.until_scan_complete().await;
        assert!(
            seen.iter().all(|e| matches!(e, WatchEvent::Changed { .. } | WatchEvent::ScanComplete { .. })),
            "{seen:?}"
        );
        f.handle.rescan_now();
        assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 1 }]);
        f.stop().await;
    }

    #[tokio::test]
    async fn periodic_rescan_reconciles_without_events() {
        let opts = WatchOptions { rescan_interval: Duration::from_millis(300), ..WatchOptions::default() };
        let mut f = Fixture::start(&[("clients", false)], opts, |_| {}).await;
        f.until_scan_complete().await;
        f.handle.drop_events(true);
        let path = f.base.join("clients").join(db(G1));
        fs::write(&path, b"").unwrap();
        f.expect("Present from the periodic rescan", |e| *e == present(&path, 0)).await;
        f.stop().await;
    }

    #[tokio::test]
    async fn set_dirs_adds_and_removes_folders() {
        let mut f = Fixture::start(&[("prod", false)], quiet_opts(), |base| {
            fs::write(base.join("prod").join(db(G1)), b"").unwrap();
            fs::create_dir(base.join("staging")).unwrap();
            fs::write(base.join("staging").join(db(G1)), b"").unwrap();
            fs::write(base.join("staging").join(db(G2)), b"").unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let prod = WatchDir::new(0, f.base.join("prod"));
        let staging = WatchDir::new(1, f.base.join("staging"));

        f.handle.set_dirs(vec![prod.clone(), staging.clone()]).await.unwrap();
        let mut seen = f.until_scan_complete().await;
        seen.sort_by_key(|e| format!("{e:?}"));
        let s = f.base.join("staging");
        assert_eq!(
            seen,
            [present(&s.join(db(G1)), 1), present(&s.join(db(G2)), 1), WatchEvent::ScanComplete { dirs: 2, files: 3 },]
        );
        // New files in the added folder are seen live.
        fs::write(s.join(db(G3)), b"").unwrap();
        f.expect("Present in added folder", |e| *e == present(&s.join(db(G3)), 1)).await;

        // Removing prod: its file is Gone, staging untouched.
        f.handle.set_dirs(vec![staging]).await.unwrap();
        let seen = f.until_scan_complete().await;
        assert_eq!(seen, [gone(&f.base.join("prod").join(db(G1)), 0), WatchEvent::ScanComplete { dirs: 1, files: 3 },]);
        // And no longer watched.
        fs::write(f.base.join("prod").join(db(G4)), b"").unwrap();
        f.expect_quiet(Duration::from_millis(300)).await;

        // A missing folder is refused as a whole, nothing changes.
        let err = f.handle.set_dirs(vec![WatchDir::new(7, f.base.join("nope"))]).await.unwrap_err();
        assert!(matches!(err, WatchError::Dir { .. }), "{err}");
        f.stop().await;
    }

    #[tokio::test]
    async fn poll_watcher_sees_new_files() {
        let opts = WatchOptions {
            rescan_interval: Duration::from_secs(3600),
            poll: true,
            poll_interval: Duration::from_millis(100),
        };
        let mut f = Fixture::start(&[("clients", false)], opts, |_| {}).await;
        f.until_scan_complete().await;
        let path = f.base.join("clients").join(db(G1));
        fs::write(&path, b"").unwrap();
        f.expect("Present via polling", |e| *e == present(&path, 0)).await;
        fs::remove_file(&path).unwrap();
        f.expect("Gone via polling", |e| *e == gone(&path, 0)).await;
        f.stop().await;
    }

    #[tokio::test]
    async fn spawn_refuses_missing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let err = spawn(
            vec![WatchDir::new(0, tmp.path().join("missing"))],
            WatchOptions::default(),
            tx,
            CancellationToken::new(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().starts_with("cannot use watch directory"), "{err}");
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let err =
            spawn(vec![WatchDir::new(0, &file)], WatchOptions::default(), tx, CancellationToken::new()).err().unwrap();
        assert!(matches!(err, WatchError::NotADirectory { .. }), "{err}");
    }

    #[tokio::test]
    async fn watch_dir_removed_and_recreated() {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
            fs::write(base.join("clients").join(db(G1)), b"").unwrap();
        })
        .await;
        f.until_scan_complete().await;
        let clients = f.base.join("clients");
        fs::remove_dir_all(&clients).unwrap();
        f.expect("Gone when the folder is deleted", |e| *e == gone(&clients.join(db(G1)), 0)).await;
        fs::create_dir(&clients).unwrap();
        fs::write(clients.join(db(G2)), b"").unwrap();
        f.handle.rescan_now();
        f.expect("Present after the folder came back", |e| *e == present(&clients.join(db(G2)), 0)).await;
        // Watched again: a new file is seen without a rescan.
        f.until_scan_complete().await;
        fs::write(clients.join(db(G3)), b"").unwrap();
        f.expect("Present live after re-watch", |e| *e == present(&clients.join(db(G3)), 0)).await;
        f.stop().await;
    }

    #[test]
    fn covers_respects_recursion_and_hidden_folders() {
        let dir = |recursive| Dir {
            spec: WatchDir { recursive, ..WatchDir::new(0, "/w") },
            root: PathBuf::from("/w"),
            watching: true,
        };
        let flat = dir(false);
        let deep = dir(true);
        assert!(flat.covers(Path::new("/w/a.db")));
        assert!(!flat.covers(Path::new("/w/sub/a.db")));
        assert!(!flat.covers(Path::new("/w")));
        assert!(!flat.covers(Path::new("/elsewhere/a.db")));
        assert!(deep.covers(Path::new("/w/sub/a.db")));
        assert!(deep.covers(Path::new("/w/sub/deeper/a.db")));
        assert!(!deep.covers(Path::new("/w/.state/a.db")));
        assert!(deep.covers(Path::new("/w/.a.db")));
    }

    #[test]
    fn overflow_and_errors_ask_for_a_rescan_access_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::write(root.join(db(G1)), b"").unwrap();
        let mut tracker = tracker_on(&root, 3);
        let mut out = Vec::new();
        let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(tracker.handle_events([Ok(overflow)].into_iter(), &mut out));
        let no_paths = Event::new(EventKind::Create(notify::event::CreateKind::File));
        assert!(tracker.handle_events([Ok(no_paths)].into_iter(), &mut out));
        let error = notify::Error::generic("boom");
        assert!(tracker.handle_events([Err(error)].into_iter(), &mut out));
        let access = Event::new(EventKind::Access(notify::event::AccessKind::Any)).add_path(root.join(db(G1)));
        assert!(!tracker.handle_events([Ok(access)].into_iter(), &mut out));
        assert!(out.is_empty(), "{out:?}");
        // A data write to an unknown database is how a missed create is caught.
        let write =
            Event::new(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any))).add_path(root.join(db(G1)));
        assert!(!tracker.handle_events([Ok(write.clone())].into_iter(), &mut out));
        assert_eq!(out, [present(&root.join(db(G1)), 3)]);
        out.clear();
        assert!(!tracker.handle_events([Ok(write)].into_iter(), &mut out));
        assert_eq!(out, [WatchEvent::Changed { path: root.join(db(G1)) }]);
    }

    /// Cost of the periodic safety rescan when nothing changed, per database file:
    /// `cargo test --release --lib rescan_cost -- --ignored --nocapture`
    /// (`LITEFLEET_RESCAN_BENCH_N` files, default 100,000; recorded in docs/benchmarks.md).
    #[test]
    #[ignore = "benchmark"]
    fn rescan_cost() {
        let n: usize = std::env::var("LITEFLEET_RESCAN_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
        // Creating (and removing) 100,000 files takes ~40 s here; LITEFLEET_RESCAN_BENCH_DIR
        // names a folder to create them in once and keep, for repeated runs and profiles.
        let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
        let keep = std::env::var_os("LITEFLEET_RESCAN_BENCH_DIR").map(PathBuf::from);
        let root = keep.unwrap_or_else(|| tmp.path().to_path_buf());
        fs::create_dir_all(&root).unwrap();
        let root = fs::canonicalize(root).unwrap();
        for i in 0..n {
            let path = root.join(format!("{i:08x}-0000-4000-8000-{i:012x}.db"));
            if !path.exists() {
                fs::write(path, b"").unwrap();
            }
        }
        let mut tracker = tracker_on(&root, 0);
        let mut out = Vec::new();
        let t = std::time::Instant::now();
        tracker.full_rescan(&mut out);
        println!("first scan of {n} files: {:?}", t.elapsed());
        assert_eq!(out.len(), n + 1);
        let mut best = Duration::MAX;
        for _ in 0..5 {
            out.clear();
            let t = std::time::Instant::now();
            tracker.full_rescan(&mut out);
            best = best.min(t.elapsed());
            assert_eq!(out, [WatchEvent::ScanComplete { dirs: 1, files: n }]);
        }
        println!(
            "rescan, nothing changed: best of 5 {best:?} = {:.2} µs per file",
            best.as_secs_f64() * 1e6 / n as f64
        );
    }

    #[test]
    fn a_slow_rescan_pushes_the_next_one_back() {
        let began = tokio::time::Instant::now();
        let minute = Duration::from_secs(60);
        let quick = next_rescan(began, began + Duration::from_millis(10), minute) - began;
        assert!(quick >= Duration::from_secs(54) && quick <= Duration::from_secs(67), "{quick:?}");
        // A rescan that took 1.5 s: the next one is at least 150 s after it ended.
        let end = began + Duration::from_millis(1500);
        assert_eq!(next_rescan(began, end, minute) - end, Duration::from_secs(150));
    }

    /// A tracker of one folder (key `key`) without a notify watcher.
    fn tracker_on(root: &Path, key: usize) -> Tracker {
        Tracker {
            dirs: vec![Dir { spec: WatchDir::new(key, root), root: root.to_path_buf(), watching: true }],
            known: BTreeMap::new(),
            refused: BTreeSet::new(),
            walks: 0,
            watcher: Box::new(notify::NullWatcher),
        }
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(60));
            assert!(j >= Duration::from_secs(54) && j <= Duration::from_secs(66), "{j:?}");
        }
    }
}
