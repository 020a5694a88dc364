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

/// Suffix of the temporary file a write goes through (`<name>.tmp`).
pub const TEMP_SUFFIX: &str = ".tmp";

/// `path` with [`TEMP_SUFFIX`] appended: where [`write`] stages its bytes.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(TEMP_SUFFIX);
    PathBuf::from(s)
}

/// Whether a file name is one of our temporary files (left behind by a crash).
pub fn is_temp(name: &str) -> bool {
    name.ends_with(TEMP_SUFFIX)
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
    std::fs::create_dir_all(dir)?;
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
    if let Err(e) = std::fs::rename(tmp, path) {
        let _ = std::fs::remove_file(tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
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
