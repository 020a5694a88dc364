//! The watcher's state: which database files exist, reconciled with the file system
//! by events (one path at a time) and by walks (a folder tree at a time). All of it is
//! blocking file system work, run on tokio's blocking pool by the watcher task.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::path::{Path, PathBuf};

use notify::event::{EventKind, ModifyKind};
use notify::{Event, RecursiveMode, Watcher};

use super::walk::Walk;
use super::{WatchDir, WatchError, WatchEvent};
use crate::sqlite::{self, FileMark, Stamp};
use crate::tenant;

/// A watched directory, resolved.
pub(super) struct Dir {
    /// As the caller gave it.
    pub(super) spec: WatchDir,
    /// Canonical path; every event path starts with it.
    pub(super) root: PathBuf,
    /// notify is watching it (false after it vanished; retried at each rescan).
    pub(super) watching: bool,
}

impl Dir {
    /// Same directory watched the same way (`set_dirs` keeps such a one untouched).
    fn same_as(&self, other: &Dir) -> bool {
        self.root == other.root
            && self.spec.key == other.spec.key
            && self.spec.recursive == other.spec.recursive
            && self.spec.extensions == other.spec.extensions
            && self.spec.file == other.spec.file
    }

    /// Whether `path`'s file name is a database of this watch.
    pub(super) fn wants(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.spec.wants(n))
    }

    fn mode(&self) -> RecursiveMode {
        if self.spec.recursive { RecursiveMode::Recursive } else { RecursiveMode::NonRecursive }
    }

    /// Whether `path` (strictly below the root) is in this watch's scope: a direct
    /// child, or any descendant outside hidden folders if recursive.
    pub(super) fn covers(&self, path: &Path) -> bool {
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

/// What one look at a database file found: the identity, size and mtime of the file
/// (of a symlink's target) and of its `-wal`. A different identity at the same path
/// means the file was replaced; a different size or mtime that it was written, and if
/// a rescan is what finds that, the event was lost (or never sent, as on a mount
/// without inotify), so the rescan reports `Changed`.
pub(super) type Seen = Stamp;

/// Identity (device, inode) of what a look found.
fn ident(seen: &Seen) -> Option<(u64, u64)> {
    seen.db.map(|m| m.ident())
}

/// Looks at a database's real file and its `-wal`. `wal_listed` is false when a folder
/// listing just taken has no `-wal` next to the file: then there is none to look at
/// (one lookup fewer per idle tenant in a rescan; a `-wal` created since is an event).
fn seen(real: &Path, meta: &Metadata, wal_listed: bool) -> Seen {
    let wal = if wal_listed { std::fs::symlink_metadata(sqlite::wal_path(real)).ok() } else { None };
    Stamp { db: Some(FileMark::of(meta)), wal: wal.map(|m| FileMark::of(&m)) }
}

/// The watcher's state, and all of its file system work (blocking; runs on the pool).
pub(super) struct Tracker {
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
    /// A tracker for `dirs`, each watched by `watcher` (fails on the first that
    /// cannot be); nothing is known until the first rescan.
    pub(super) fn new(watcher: Box<dyn Watcher + Send>, dirs: Vec<Dir>) -> Result<Tracker, WatchError> {
        let mut t = Tracker { dirs: Vec::new(), known: BTreeMap::new(), refused: BTreeSet::new(), walks: 0, watcher };
        for mut dir in dirs {
            watch_dir(t.watcher.as_mut(), &mut dir)?;
            t.dirs.push(dir);
        }
        Ok(t)
    }

    /// Turns notify events into path reconciliations; true if events were lost and a
    /// full rescan is needed.
    pub(super) fn handle_events(
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
            let dbish = self.dir_of(&path).is_some_and(|i| self.dirs[i].wants(&path));
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
                if self.dirs[i].wants(path) {
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
    pub(super) fn full_rescan(&mut self, out: &mut Vec<WatchEvent>) {
        for dir in &mut self.dirs {
            if !dir.watching
                && dir.root.is_dir()
                && let Err(e) = watch_dir(self.watcher.as_mut(), dir)
            {
                tracing::warn!("{}", crate::errors::Chain(&e));
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
                    Some(before) if before.key == key && ident(&before.seen) == ident(&seen) => {
                        before.walk = self.walks;
                        if before.seen != seen {
                            before.seen = seen;
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
    pub(super) fn set_dirs(&mut self, new: Vec<Dir>, out: &mut Vec<WatchEvent>) -> Result<(), WatchError> {
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
                        tracing::warn!("{}", crate::errors::Chain(&e));
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
pub(super) fn watch_dir(watcher: &mut dyn Watcher, dir: &mut Dir) -> Result<(), WatchError> {
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
pub(super) fn evaluate(root: &Path, path: &Path, meta: &Metadata, wal_listed: bool) -> Result<Seen, String> {
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(seen(path, meta, wal_listed));
    }
    if !kind.is_symlink() {
        return Err("not a regular file".to_owned());
    }
    let target = tenant::inside(root, path).map_err(|e| crate::errors::chain(&e))?;
    match std::fs::metadata(&target) {
        Ok(m) if m.is_file() => Ok(seen(&target, &m, true)),
        Ok(_) => Err(format!("symlink to {}, which is not a regular file", target.display())),
        Err(e) => Err(format!("cannot read {}: {e}", target.display())),
    }
}
