//! inotify that never asks the kernel for a folder's writes (Linux).
//!
//! notify's inotify watcher asks for `IN_MODIFY` on every folder it watches. The kernel
//! then queues an event from inside every `write()` to any file in it, and SQLite writes
//! a WAL frame with two: a 1 MiB commit made 516 events, which cost the application
//! ~0.4 ms of a ~1.7 ms commit (docs/benchmarks.md §8, "Every write() paid for our
//! watch"). This watcher asks folders for names only (created, deleted, moved), and
//! asks a tenant's `-wal` (its database file when it has none) for **one** write
//! (`IN_MODIFY | IN_ONESHOT`) when the tenant's task arms it
//! ([`Writes::arm`](super::Writes::arm)), which it does before every look at its files.
//! So a tenant costs at most one event per sync, and the application's other writes cost
//! only the kernel's check that nobody listens.
//!
//! Names only, not attributes or closes either: a folder asked for *any* event of its
//! files (`IN_ATTRIB`, `IN_CLOSE_WRITE`) makes every `write()` to every file in it take
//! and drop a reference on the folder's dentry to ask whether the folder cares — one
//! atomic on one cache line that every tenant's writer shares. Measured: 3.4 % of a 1 MiB
//! writer's CPU, and +20 % on two concurrent writers of 1 KiB blocks in one folder
//! (+4 % with names only; benchmarks §8, tenth run). A copy into the folder is a new
//! name, a rename over a tenant's database too; a copy *over* it (same file, new bytes)
//! is seen by its armed database if it has no `-wal`, else by the next rescan.
//!
//! If the kernel refuses a file watch (`fs.inotify.max_user_watches`, for one), every
//! folder asks for `IN_MODIFY` again from then on, as notify's do: the old cost, no
//! wake-up lost. It implements [`notify::Watcher`], so the tracker drives it like
//! notify's own; folders below a recursive watch are added as they appear, skipping
//! hidden ones and never following a symlink, as the tracker's walk does.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use notify::event::{CreateKind, DataChange, EventKind, Flag, MetadataKind, ModifyKind, RemoveKind, RenameMode};
use notify::{Config, Event, EventHandler, RecursiveMode, Watcher, WatcherKind};
use tokio::sync::Notify;

use crate::sqlite;

/// What a folder is asked for: names (no event of its files, see the module's doc),
/// and with `wide` its files' writes, attributes and closes, as notify's watcher asks.
fn folder_mask(wide: bool) -> WatchMask {
    let names = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR;
    if wide { names | WatchMask::MODIFY | WatchMask::ATTRIB | WatchMask::CLOSE_WRITE } else { names }
}

/// The watcher: folders for names, armed files for one write each.
pub(super) struct Lean {
    inner: Arc<Inner>,
    reader: Option<JoinHandle<()>>,
}

/// What the reader thread, the tracker and the tenant tasks share.
struct Inner {
    state: Mutex<State>,
    /// Set when the watcher is dropped: the reader thread returns.
    stop: AtomicBool,
    /// An eventfd written to wake the reader thread for `stop`.
    wake: OwnedFd,
}

struct State {
    watches: Watches,
    /// Folder watches: the folder, and whether folders created in it are watched too.
    folders: HashMap<WatchDescriptor, (PathBuf, bool)>,
    /// Armed files (one write each): the name they are armed under, and the task
    /// their write wakes.
    files: HashMap<WatchDescriptor, (PathBuf, Arc<Notify>)>,
    /// The databases among them (armed while they had no `-wal`): disarmed when their
    /// `-wal` is armed, so that a tenant holds one watch.
    dbs: HashMap<PathBuf, WatchDescriptor>,
    /// The kernel refused a file watch: folders report their files' writes instead.
    wide: bool,
}

impl Lean {
    /// Arms tenants' files through this watcher (see [`super::Writes`]).
    pub(super) fn writes(&self) -> super::Writes {
        let inner = Arc::clone(&self.inner);
        super::Writes::new(move |db: &Path, file: &Path, wake: &Arc<Notify>| inner.arm(db, file, wake))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.lock()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for the next write to `file`'s `-wal` (to `file` itself when it has no
    /// `-wal`: a rollback-journal or empty database is written in place), once, and
    /// hands it to `wake` from the reader thread itself (`file` is `db`'s target when
    /// `db` is a symlink). A `-wal` that appears later is a folder event.
    fn arm(&self, db: &Path, file: &Path, wake: &Arc<Notify>) {
        let mut st = self.lock();
        if st.wide {
            return;
        }
        let armed =
            [(sqlite::wal_path(file), sqlite::wal_path(db), false), (file.to_path_buf(), db.to_path_buf(), true)];
        for (path, named, is_db) in armed {
            match st.watches.add(&path, WatchMask::MODIFY | WatchMask::ONESHOT) {
                Ok(wd) => {
                    if is_db {
                        st.dbs.insert(named.clone(), wd.clone());
                    } else if let Some(old) = st.dbs.remove(db) {
                        st.files.remove(&old);
                        let _ = st.watches.remove(old);
                    }
                    st.files.insert(wd, (named, Arc::clone(wake)));
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(
                        "cannot watch {} for writes ({e}); from now on every watched folder reports its files' writes, \
                         which costs applications a little on each write (raise fs.inotify.max_user_watches)",
                        path.display()
                    );
                    st.widen();
                    return;
                }
            }
        }
    }
}

impl State {
    /// Watches `folder` and, if `recursive`, every folder below it (hidden ones and
    /// symlinks excepted). Fails only if `folder` itself cannot be watched.
    fn add_tree(&mut self, folder: &Path, recursive: bool) -> io::Result<()> {
        let wd = self.watches.add(folder, folder_mask(self.wide))?;
        self.folders.insert(wd, (folder.to_path_buf(), recursive));
        if !recursive {
            return Ok(());
        }
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Ok(()); // gone or unreadable meanwhile: the tracker's walk says so
        };
        for entry in entries.flatten() {
            let hidden = entry.file_name().as_encoded_bytes().first() == Some(&b'.');
            if !hidden && entry.file_type().is_ok_and(|t| t.is_dir()) {
                let sub = entry.path();
                if let Err(e) = self.add_tree(&sub, true) {
                    tracing::debug!("cannot watch {}: {e}", sub.display());
                }
            }
        }
        Ok(())
    }

    /// Stops watching `folder` and every folder below it.
    fn drop_tree(&mut self, folder: &Path) {
        let gone: Vec<WatchDescriptor> =
            self.folders.iter().filter(|(_, (p, _))| p.starts_with(folder)).map(|(wd, _)| wd.clone()).collect();
        for wd in gone {
            self.folders.remove(&wd);
            let _ = self.watches.remove(wd);
        }
    }

    /// Every folder asks for its files' writes from now on.
    fn widen(&mut self) {
        self.wide = true;
        let folders: Vec<PathBuf> = self.folders.values().map(|(p, _)| p.clone()).collect();
        for folder in folders {
            if let Err(e) = self.watches.add(&folder, folder_mask(true) | WatchMask::MASK_ADD) {
                tracing::debug!("cannot widen the watch of {}: {e}", folder.display());
            }
        }
    }

    /// One kernel event as notify's (none for the kernel's own bookkeeping).
    fn translate(
        &mut self,
        wd: &WatchDescriptor,
        mask: EventMask,
        name: Option<&OsStr>,
    ) -> Option<notify::Result<Event>> {
        if mask.contains(EventMask::Q_OVERFLOW) {
            return Some(Ok(Event::new(EventKind::Other).set_flag(Flag::Rescan)));
        }
        if let Some((_, wake)) = self.files.get(wd) {
            // Straight to the tenant's task: no hop through the watcher task, its
            // blocking-pool pass and the fleet (each a thread to wake while the
            // application keeps the cores busy; the wake-up came 3–10 ms late in about
            // one burst in five).
            if mask.contains(EventMask::MODIFY) {
                wake.notify_one();
            }
            if mask.contains(EventMask::IGNORED)
                && let Some((path, _)) = self.files.remove(wd)
                && self.dbs.get(&path) == Some(wd)
            {
                self.dbs.remove(&path);
            }
            return None;
        }
        let (folder, recursive) = self.folders.get(wd)?.clone();
        if mask.contains(EventMask::IGNORED) {
            self.folders.remove(wd);
            return None;
        }
        let Some(name) = name else {
            // The folder itself was deleted or moved: the tracker looks at it again.
            let gone = mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF);
            return gone.then(|| Ok(Event::new(EventKind::Remove(RemoveKind::Folder)).add_path(folder)));
        };
        let path = folder.join(name);
        let is_folder = mask.contains(EventMask::ISDIR);
        let watch_it = is_folder && recursive && name.as_encoded_bytes().first() != Some(&b'.');
        let kind = if mask.contains(EventMask::CREATE) {
            if watch_it && let Err(e) = self.add_tree(&path, true) {
                tracing::debug!("cannot watch {}: {e}", path.display());
            }
            EventKind::Create(if is_folder { CreateKind::Folder } else { CreateKind::File })
        } else if mask.contains(EventMask::DELETE) {
            EventKind::Remove(if is_folder { RemoveKind::Folder } else { RemoveKind::File })
        } else if mask.contains(EventMask::MOVED_FROM) {
            if is_folder {
                self.drop_tree(&path); // its watches would report under the old name
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::From))
        } else if mask.contains(EventMask::MOVED_TO) {
            if watch_it && let Err(e) = self.add_tree(&path, true) {
                tracing::debug!("cannot watch {}: {e}", path.display());
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::To))
        } else if mask.contains(EventMask::ATTRIB) {
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))
        } else if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE) {
            return Some(Ok(written(path)));
        } else {
            return None;
        };
        Some(Ok(Event::new(kind).add_path(path)))
    }
}

fn written(path: PathBuf) -> Event {
    Event::new(EventKind::Modify(ModifyKind::Data(DataChange::Any))).add_path(path)
}

fn watch_error(e: io::Error, path: &Path) -> notify::Error {
    let kind = if e.raw_os_error() == Some(libc::ENOSPC) {
        notify::ErrorKind::MaxFilesWatch
    } else if e.kind() == io::ErrorKind::NotFound {
        notify::ErrorKind::PathNotFound
    } else {
        notify::ErrorKind::Io(e)
    };
    notify::Error::new(kind).add_path(path.to_path_buf())
}

/// The reader thread: waits for the kernel's events (or `stop`), translates them under
/// the lock, hands them on outside it (the handler may pause, and tenants arm meanwhile).
fn read_events(mut inotify: Inotify, inner: Arc<Inner>, mut handler: impl EventHandler) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd { fd: inotify.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: inner.wake.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfds, both fds open for as long as this thread runs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if inner.stop.load(Ordering::Acquire) {
            return;
        }
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            handler.handle_event(Err(notify::Error::io(e)));
            return;
        }
        match inotify.read_events(&mut buf) {
            Ok(events) => {
                let mut st = inner.lock();
                out.extend(events.filter_map(|e| st.translate(&e.wd, e.mask, e.name)));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                handler.handle_event(Err(notify::Error::io(e)));
                return;
            }
        }
        for event in out.drain(..) {
            handler.handle_event(event);
        }
    }
}

impl Watcher for Lean {
    fn new<F: EventHandler>(handler: F, _config: Config) -> notify::Result<Self> {
        let inotify = Inotify::init().map_err(notify::Error::io)?;
        // SAFETY: eventfd returns a new descriptor that nothing else owns, or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(notify::Error::io(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a valid descriptor owned by nobody else.
        let wake = unsafe { OwnedFd::from_raw_fd(fd) };
        let state = State {
            watches: inotify.watches(),
            folders: HashMap::new(),
            files: HashMap::new(),
            dbs: HashMap::new(),
            wide: false,
        };
        let inner = Arc::new(Inner { state: Mutex::new(state), stop: AtomicBool::new(false), wake });
        let reader = std::thread::Builder::new()
            .name("litefleet-inotify".into())
            .spawn({
                let inner = Arc::clone(&inner);
                move || read_events(inotify, inner, handler)
            })
            .map_err(notify::Error::io)?;
        Ok(Lean { inner, reader: Some(reader) })
    }

    fn watch(&mut self, path: &Path, mode: RecursiveMode) -> notify::Result<()> {
        let recursive = matches!(mode, RecursiveMode::Recursive);
        self.lock().add_tree(path, recursive).map_err(|e| watch_error(e, path))
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        self.lock().drop_tree(path);
        Ok(())
    }

    fn kind() -> WatcherKind {
        WatcherKind::Inotify
    }
}

impl Drop for Lean {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to the eventfd.
        unsafe { libc::write(self.inner.wake.as_raw_fd(), (&raw const one).cast(), 8) };
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}
