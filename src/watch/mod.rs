//! Watching directories: finding every tenant database file that exists, appears,
//! disappears or is written, and saying so as a stream of [`WatchEvent`]s.
//!
//! This module owns the scan of every watch directory at start, the kernel watcher
//! (on Linux our own inotify, `lean.rs`, which reports a tenant's writes only when the
//! tenant arms its files, see [`Writes`]; notify's `PollWatcher` for network mounts;
//! notify's own watcher elsewhere), the set of database files it knows
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

#[cfg(target_os = "linux")]
mod lean;
mod tracker;
mod walk;

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::event::EventKind;
use notify::{Event, Watcher};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::tracker::{Dir, Tracker};
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
/// A stream of events keeps notify's thread busy at most this long before it pauses
/// (see [`Pacer`]).
const AWAKE: Duration = Duration::from_micros(200);
/// How long notify's thread pauses; also the gap that ends a stream of events.
const PAUSE: Duration = Duration::from_millis(5);
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
    /// Watch only this file name (a fleet of one: `-dsn`, `litefleet replicate`);
    /// `extensions` are then ignored.
    pub file: Option<OsString>,
}

impl WatchDir {
    /// A non-recursive watch of `path` with the default extensions.
    pub fn new(key: usize, path: impl Into<PathBuf>) -> WatchDir {
        WatchDir {
            key,
            path: path.into(),
            recursive: false,
            extensions: tenant::DEFAULT_EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
            file: None,
        }
    }

    /// Whether a file name is a database this watch reports.
    pub fn wants(&self, name: &OsStr) -> bool {
        match &self.file {
            Some(f) => f == name,
            None => tenant::is_candidate(Path::new(name), &self.extensions),
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
    #[error("cannot use watch directory {}", path.display())]
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
    #[error("cannot watch {}{}", path.display(), limit_hint(source))]
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

impl WatchError {
    /// The directory the error is about, if it is about one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            WatchError::Dir { path, .. } | WatchError::NotADirectory { path } | WatchError::Notify { path, .. } => {
                Some(path)
            }
            WatchError::Start(_) | WatchError::Stopped => None,
        }
    }
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
    /// Arms tenants' files for their next write.
    writes: Writes,
}

/// Arms a tenant's files for their next write ([`Writes::arm`]). On Linux the watcher
/// does not ask folders for their files' writes (each one cost the application a
/// kernel event, see `lean.rs`), so a tenant hears of a commit only through its own
/// armed file, whose write wakes its task directly. A no-op where the watcher reports
/// every write by itself as a [`WatchEvent::Changed`] (the polling watcher, other
/// systems, and every folder once the kernel refused a file watch). Cheap to clone.
#[derive(Clone, Default)]
pub struct Writes(Option<Arc<ArmFile>>);

/// What arms a database's files (the watcher's own code): the database as events name
/// it, the file itself, and what its write wakes.
type ArmFile = dyn Fn(&Path, &Path, &Arc<Notify>) + Send + Sync;

impl Writes {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    fn new(arm: impl Fn(&Path, &Path, &Arc<Notify>) + Send + Sync + 'static) -> Writes {
        Writes(Some(Arc::new(arm)))
    }

    /// Asks for the next write to the database's `-wal` (or to the database while it
    /// has none), once: it calls `wake.notify_one()` from the watcher's reader thread,
    /// with no event on the channel. `db` is the tenant's path; `file` the database
    /// file itself (`db`'s target when `db` is a symlink: SQLite keeps the `-wal`
    /// beside the target). A tenant arms before every look at its files, so a commit
    /// after the look always wakes it; one write wakes it once, however many follow
    /// until it arms again.
    pub fn arm(&self, db: &Path, file: &Path, wake: &Arc<Notify>) {
        if let Some(arm) = &self.0 {
            arm(db, file, wake);
        }
    }
}

impl std::fmt::Debug for Writes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Writes(armed files)" } else { "Writes(every write)" })
    }
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
    /// Arms tenants' files for their next write (see [`Writes`]).
    pub fn writes(&self) -> Writes {
        self.writes.clone()
    }

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
            tracing::error!("directory watcher task failed: {}", crate::errors::Chain(&e));
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
        let mut pacer = Pacer::new(!opts.poll);
        move |res: notify::Result<Event>| {
            hand_on(&shared, &raw_tx, res);
            pacer.after_event(std::time::Instant::now(), std::thread::sleep);
        }
    };
    let (watcher, writes): (Box<dyn Watcher + Send>, Writes) = if opts.poll {
        let config = notify::Config::default().with_poll_interval(opts.poll_interval);
        (Box::new(notify::PollWatcher::new(handler, config).map_err(WatchError::Start)?), Writes::default())
    } else {
        native(handler)?
    };
    let tracker = Tracker::new(watcher, dirs)?;
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
    Ok(WatchHandle { commands, shared, task, writes })
}

/// The kernel's watcher: ours on Linux (folders never asked for writes), notify's
/// elsewhere.
#[cfg(target_os = "linux")]
fn native(handler: impl notify::EventHandler) -> Result<(Box<dyn Watcher + Send>, Writes), WatchError> {
    let lean = lean::Lean::new(handler, notify::Config::default()).map_err(WatchError::Start)?;
    let writes = lean.writes();
    Ok((Box::new(lean), writes))
}

#[cfg(not(target_os = "linux"))]
fn native(handler: impl notify::EventHandler) -> Result<(Box<dyn Watcher + Send>, Writes), WatchError> {
    let w = notify::RecommendedWatcher::new(handler, notify::Config::default()).map_err(WatchError::Start)?;
    Ok((Box::new(w), Writes::default()))
}

/// What notify's thread does with one event: queue it for the watcher task.
fn hand_on(shared: &Shared, raw_tx: &mpsc::Sender<notify::Result<Event>>, res: notify::Result<Event>) {
    // Opens and closes (IN_OPEN/IN_CLOSE, every SQLite read) are noise: drop them here,
    // before they take a queue slot.
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

/// Paces notify's thread. It sleeps in `epoll_wait` until inotify has an event, and the
/// kernel wakes it from inside the `write()` that caused the event: an inter-processor
/// interrupt charged to the application's commit, every commit (a writer committing
/// 30,000 times a second spent 13 % of its CPU there). Once a stream of events (each
/// less than [`PAUSE`] after the last) has kept the thread busy for [`AWAKE`], it sleeps
/// [`PAUSE`] after handing on its event instead of waiting in `epoll_wait`: meanwhile
/// the kernel merges repeated events of a file and wakes nobody. Sporadic events never
/// pause it; during a stream a change is seen at most [`PAUSE`] later, and a burst of
/// new files still flows at about 200 events per pause. The `PollWatcher` is not paced.
struct Pacer {
    /// When the current stream of events began (`None`: right after a pause).
    awake_since: Option<std::time::Instant>,
    /// The last event.
    last: Option<std::time::Instant>,
    on: bool,
}

impl Pacer {
    fn new(on: bool) -> Pacer {
        Pacer { awake_since: None, last: None, on }
    }

    /// After each event: pause if a stream of events has kept the thread busy for
    /// [`AWAKE`].
    fn after_event(&mut self, now: std::time::Instant, sleep: impl FnOnce(Duration)) {
        if !self.on {
            return;
        }
        let quiet_before = self.last.is_none_or(|l| now.saturating_duration_since(l) > PAUSE);
        self.last = Some(now);
        match self.awake_since {
            _ if quiet_before => self.awake_since = Some(now),
            Some(since) if now.saturating_duration_since(since) >= AWAKE => {
                sleep(PAUSE);
                self.awake_since = None;
            }
            Some(_) => {}
            None => self.awake_since = Some(now),
        }
    }
}

/// Every database file in `dirs` right now, by the watcher's own rules (hidden folders
/// skipped, symlinks out of the directory refused), as (key, path): one walk, no
/// watcher. A directory that cannot be resolved is skipped with a warning. `litefleet
/// tenants` pairs replicas with local files this way.
pub fn list(dirs: Vec<WatchDir>) -> Vec<(usize, PathBuf)> {
    let mut out = Vec::new();
    for spec in dirs {
        let dir = match resolve_dirs(vec![spec]) {
            Ok(mut d) => d.remove(0),
            Err(e) => {
                tracing::warn!("{}", crate::errors::Chain(&e));
                continue;
            }
        };
        walk::Walk::default().run(&dir, &dir.root, &mut |path, found| {
            if found.is_ok() {
                out.push((dir.spec.key, path.to_path_buf()));
            }
        });
    }
    out
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
            tracing::error!("directory watcher stopped: {}", crate::errors::Chain(&e));
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

/// When the periodic rescan is next due, after a pass that ran from `began` to `now`.
fn next_rescan(began: tokio::time::Instant, now: tokio::time::Instant, interval: Duration) -> tokio::time::Instant {
    now + jittered(interval).max((now - began) * RESCAN_BUDGET)
}

/// `d` ± [`RESCAN_JITTER`].
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + RESCAN_JITTER * (2.0 * fastrand::f64() - 1.0))
}

#[cfg(test)]
mod tests;
