//! Durable local files: how every file litefleet writes on this machine reaches its
//! final name complete or not at all.
//!
//! The one recipe, used everywhere (position caches, page tables, restore outputs,
//! replica files on a folder): write a temporary file *in the same directory* (a rename
//! across file systems is a copy), `fsync` it, rename it over the final name, `fsync`
//! the directory so the rename itself survives a power cut. A reader therefore sees the
//! old file or the new one, never a torn one; a crash leaves at most a temporary file,
//! whose name ([`is_temp`]) no reader of ours — and no Litestream reader, which wants
//! `<16 hex>-<16 hex>.ltx` — mistakes for a real one.
//!
//! It owns nothing else and knows no other module.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Suffix of the temporary file a write goes through (`<name>.tmp`).
pub const TEMP_SUFFIX: &str = ".tmp";

/// `path` with [`TEMP_SUFFIX`] appended: where [`write`] stages its bytes.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(TEMP_SUFFIX);
    PathBuf::from(s)
}

/// `path` with a name of its own for one writer (`<name>.<pid>-<n>.tmp`), so two
/// writers of the same final name (two daemons by mistake, a retried upload racing
/// the first) never share a temporary file.
pub fn unique_temp_path(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(format!(".{}-{}{TEMP_SUFFIX}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    PathBuf::from(s)
}

/// A file removed when the guard is dropped (an error, a panic, a future dropped
/// half-way), unless [`RemoveOnDrop::keep`] was called.
pub struct RemoveOnDrop {
    path: PathBuf,
    keep: bool,
}

impl RemoveOnDrop {
    /// Guards `path`.
    pub fn new(path: PathBuf) -> RemoveOnDrop {
        RemoveOnDrop { path, keep: false }
    }

    /// The file is wanted after all (installed, renamed away): leave it.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Whether a file name is one of our temporary files (left behind by a crash).
pub fn is_temp(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
}

/// What [`publish`] does when the final name is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Replace it (a rename over it).
    Replace,
    /// Leave it and fail with [`io::ErrorKind::AlreadyExists`]: the first writer wins,
    /// atomically (a hard link, which the kernel refuses when the name exists).
    Keep,
}

/// Writes `bytes` to `path` so that `path` is complete or absent, whatever happens: a
/// temporary file of its own in the same directory gets the bytes (and `mtime`, if
/// given), is fsynced, and is renamed (or linked, for [`Existing::Keep`]) to `path`;
/// then the directory is fsynced. Missing directories are created, and their parents
/// fsynced. On any error the temporary file is removed and `path` is as it was.
pub fn publish(path: &Path, bytes: &[u8], mtime: Option<SystemTime>, existing: Existing) -> io::Result<()> {
    create_dirs(parent_dir(path))?;
    let tmp = unique_temp_path(path);
    let staged = (|| {
        let mut f = File::options().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        if let Some(t) = mtime {
            f.set_modified(t)?;
        }
        f.sync_all()
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    install(&tmp, path, existing)
}

/// Puts the complete, already fsynced `tmp` at `path` — renamed over it, or (with
/// [`Existing::Keep`]) linked only if `path` does not exist (`AlreadyExists`) — and
/// fsyncs the directory. `tmp` is gone afterwards, whatever happened.
pub fn install(tmp: &Path, path: &Path, existing: Existing) -> io::Result<()> {
    match existing {
        Existing::Replace => replace(tmp, path),
        Existing::Keep => {
            let linked = std::fs::hard_link(tmp, path);
            let _ = std::fs::remove_file(tmp);
            linked?;
            sync_dir(parent_dir(path))
        }
    }
}

/// Creates `dir` and any missing parents, fsyncing the parent of each directory it
/// creates so the new names survive a power cut.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent_dir(dir)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The directory holding `path` (`.` for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Writes `bytes` to `path` durably: `<path>.tmp`, fsync, rename, fsync the directory.
/// Creates the directory if needed. On error the temporary file is removed and `path`
/// is left as it was.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    create_dirs(dir)?;
    let tmp = temp_path(path);
    let staged = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = staged {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    replace(&tmp, path)
}

/// Renames the complete, already fsynced `tmp` over `path` and fsyncs the directory.
/// On error `tmp` is removed.
pub fn replace(tmp: &Path, path: &Path) -> io::Result<()> {
    replace_unsynced(tmp, path)?;
    sync_dir(parent_dir(path))
}

/// [`replace`] without the directory's fsync, for a caller that renames many files
/// into one directory and fsyncs it once for all of them ([`sync_dir`]) before it
/// relies on the new names (a crash before that leaves each name as it was or as the
/// complete new file, never a torn one). On error `tmp` is removed.
pub fn replace_unsynced(tmp: &Path, path: &Path) -> io::Result<()> {
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    Ok(())
}

/// Creates `dir` if needed and proves that files can be created in it (a probe file,
/// removed at once): how start-up checks a directory before anything depends on it.
pub fn check_writable(dir: &Path) -> io::Result<()> {
    create_dirs(dir)?;
    let probe = unique_temp_path(&dir.join(".litefleet-probe"));
    File::options().write(true).create_new(true).open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Fsyncs a directory, so the names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("sub/state.json");
        write(&p, b"one").unwrap_or_else(|e| panic!("{e}"));
        write(&p, b"two!").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&p).unwrap_or_default(), b"two!");
        assert!(!temp_path(&p).exists());
        assert!(is_temp("0000000000000001-0000000000000001.ltx.tmp"));
        assert!(!is_temp("0000000000000001-0000000000000001.ltx"));
    }

    #[test]
    fn publish_replaces_or_keeps_and_sets_the_mtime_before_the_name_appears() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("a/b/0000000000000001-0000000000000001.ltx");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        publish(&p, b"first", Some(t), Existing::Keep).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::metadata(&p).and_then(|m| m.modified()).ok(), Some(t));
        let err = publish(&p, b"second", None, Existing::Keep).err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::AlreadyExists), "the first writer wins");
        assert_eq!(std::fs::read(&p).unwrap_or_default(), b"first");
        publish(&p, b"third", None, Existing::Replace).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read(&p).unwrap_or_default(), b"third");
        let left: Vec<_> =
            std::fs::read_dir(parent_dir(&p)).into_iter().flatten().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 1, "temporary files left: {left:?}");
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("state.json");
        write(&p, b"old").unwrap_or_else(|e| panic!("{e}"));
        // The temporary name is taken by a directory: staging fails.
        std::fs::create_dir(temp_path(&p)).unwrap_or_else(|e| panic!("{e}"));
        assert!(write(&p, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap_or_default(), b"old");
    }
}
