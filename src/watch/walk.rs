//! Walking a folder tree of a watch directory: every database-named entry, with what a
//! look at it found, handed over one at a time (nothing per file is kept).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};

use super::tracker::{Dir, Seen, evaluate};

/// The result of walking one folder tree (the database files themselves go to the
/// walk's callback, one at a time: nothing per file is kept).
#[derive(Default)]
pub(super) struct Walk {
    /// Folders that exist but could not be read.
    pub(super) unreadable: Vec<PathBuf>,
    /// The same folders with the reason, for `Refused`.
    pub(super) unreadable_reasons: Vec<(PathBuf, String)>,
    /// Why the starting folder itself could not be read (including "not found").
    pub(super) root_error: Option<String>,
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
    pub(super) fn run(&mut self, dir: &Dir, start: &Path, found: &mut dyn FnMut(&Path, Result<Seen, String>)) {
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
                    if !dir.spec.wants(&name) {
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
