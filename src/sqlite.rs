//! What litefleet needs to know about SQLite's files and connections, in one place.
//!
//! * The files of a database: `<db>-wal`, `<db>-shm`, and the 16-byte header magic.
//! * The *quiet* connection every part of litefleet opens on a tenant's database (the
//!   replicator, its write barrier, restore validation): it never checkpoints on its
//!   own (`wal_autocheckpoint=0`), never checkpoints or deletes the WAL when it closes
//!   (`SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE`, `SQLITE_FCNTL_PERSIST_WAL`), and waits
//!   `busy_timeout` for locks. Checkpoints are the replicator's, under its barrier.
//! * A [`Stamp`]: the identity, size and mtime of a database and its `-wal`, as the
//!   watcher sees them (to notice writes it got no event for) and as a tenant task
//!   compares them (to ignore wake-ups after which nothing was committed).
//!
//! It must never write to a database except through SQLite, and never create a table.

use std::ffi::c_int;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags};

/// SQLite's 16-byte file header magic.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// `<db>-wal`.
pub fn wal_path(db: &Path) -> PathBuf {
    sidecar(db, "-wal")
}

/// The database file itself: `db`'s target if `db` is a symlink (SQLite resolves it,
/// and keeps the `-wal` and `-shm` beside the target), else `db`.
pub fn real_file(db: &Path) -> PathBuf {
    match std::fs::symlink_metadata(db) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(db).unwrap_or_else(|_| db.to_path_buf()),
        _ => db.to_path_buf(),
    }
}

/// `<db>-shm`.
pub fn shm_path(db: &Path) -> PathBuf {
    sidecar(db, "-shm")
}

fn sidecar(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Checks the first bytes of a database file; the error shows them, escaped.
pub fn check_header(head: &[u8]) -> Result<(), String> {
    if head.len() >= 100 && head.starts_with(MAGIC) {
        Ok(())
    } else {
        Err(printable(&head[..head.len().min(MAGIC.len())]))
    }
}

/// Bytes as text with everything but printable ASCII escaped (`PK\x03\x04`).
pub fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii_graphic() || c == b' ' { (c as char).to_string() } else { format!("\\x{c:02x}") })
        .collect()
}

/// Opens the quiet connection (see the module doc) read-write on `db`.
pub fn open_quiet(db: &Path, busy_timeout: Duration) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(db, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.execute_batch("PRAGMA wal_autocheckpoint=0")?;
    // Closing must not write the database: SQLite checkpoints when the last connection
    // closes, and that write would wake the tenant again right after it went idle.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)?;
    persist_wal(&conn);
    Ok(conn)
}

/// How often [`retry_often`] retries a lock.
const RETRY_EVERY: Duration = Duration::from_micros(100);

/// Makes `conn` retry a busy lock every 100 µs for up to `timeout`, instead of
/// SQLite's 1, 2, 5, 10, 15… ms: the replicator's write barrier has to catch the
/// microsecond gaps between the transactions of a writer that never pauses.
pub fn retry_often(conn: &mut Connection, timeout: Duration) -> rusqlite::Result<()> {
    let mut since = std::time::Instant::now();
    conn.busy_handler(Some(move |tries: i32| {
        if tries == 0 {
            since = std::time::Instant::now();
        }
        let go_on = since.elapsed() < timeout;
        if go_on {
            std::thread::sleep(RETRY_EVERY);
        }
        go_on
    }))
}

/// Asks SQLite to keep the `-wal` file when this connection is the last to close, so a
/// released tenant's WAL generation survives and the next attach can continue it.
fn persist_wal(conn: &Connection) {
    let mut on: c_int = 1;
    // SAFETY: `conn.handle()` is a valid open connection for the duration of the call,
    // "main" is NUL-terminated, and SQLITE_FCNTL_PERSIST_WAL reads and writes one int.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut c_int).cast(),
        );
    }
}

/// How far the WAL is written and backfilled, as SQLite's wal-index (`-shm`) says at
/// one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalProgress {
    /// The last valid frame of the WAL (`mxFrame`).
    pub max_frame: u32,
    /// Frames already copied into the database (`nBackfill`).
    pub backfilled: u32,
}

impl WalProgress {
    /// Frames of the WAL not yet copied into the database.
    pub fn not_backfilled(&self) -> u32 {
        self.max_frame.saturating_sub(self.backfilled)
    }
}

/// Reads [`WalProgress`] from the wal-index (`-shm`) as `conn` maps it (SQLite's file
/// format, "WAL-index format": the 48-byte header twice, `mxFrame` at byte 16, then
/// `nBackfill` at byte 96, native byte order). Through SQLite's own mapping, never a
/// file descriptor of ours: closing any descriptor of the `-shm` would drop every POSIX
/// lock this process holds on it, our read marks included (the log could then restart
/// under us). Read without SQLite's locks, so an estimate: it may decide whether a copy
/// is worth starting, never what is safe to copy (SQLite decides that). `conn` must be
/// in WAL mode and have read the database (it would open a `-shm` otherwise). `None`:
/// no wal-index mapped yet, or its header not initialised or being rewritten (its two
/// copies differ).
pub fn wal_progress(conn: &Connection) -> Option<WalProgress> {
    use rusqlite::ffi;
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn.handle()` is a valid open connection for the call, "main" is
    // NUL-terminated, and SQLITE_FCNTL_FILE_POINTER writes one `sqlite3_file*`, which
    // stays valid while `conn` is open and borrowed here.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return None;
    }
    // SAFETY: `file` is the connection's open database file; its methods table is
    // SQLite's (version 2 and later have `xShmMap`). Asking for region 0 without
    // extending (`bExtend` 0) returns the mapping SQLite already holds, or null.
    let region = unsafe {
        let methods = (*file).pMethods;
        if methods.is_null() || (*methods).iVersion < 2 {
            return None;
        }
        let shm_map = (*methods).xShmMap?;
        let mut region: *mut std::ffi::c_void = std::ptr::null_mut();
        if shm_map(file, 0, 32 * 1024, 0, &mut region) != ffi::SQLITE_OK || region.is_null() {
            return None;
        }
        region.cast::<u32>()
    };
    // SAFETY: region 0 is at least 32 KiB, mapped and page-aligned; other processes
    // write it concurrently, hence volatile reads of whole words.
    let w: [u32; 25] = std::array::from_fn(|i| unsafe { region.add(i).read_volatile() });
    let initialised = w[0] == crate::wal::VERSION && w[3].to_ne_bytes()[0] == 1;
    (initialised && w[..12] == w[12..24]).then(|| WalProgress { max_frame: w[4], backfilled: w[24] })
}

/// Whether `path` was modified within `window` (by its mtime; `false` if missing).
pub fn written_within(path: &Path, window: Duration) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t.elapsed().is_ok_and(|age| age < window) || t > SystemTime::now())
}

/// Starts a read transaction: `BEGIN` is lazy, the read makes SQLite take its read
/// lock (the snapshot is taken here).
pub fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
}

/// One file at one moment: identity, size, mtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMark {
    /// Device.
    pub dev: u64,
    /// Inode: another inode at the same path is another file.
    pub ino: u64,
    /// Size in bytes.
    pub len: u64,
    /// Modification time, when the file system keeps one.
    pub mtime: Option<SystemTime>,
}

impl FileMark {
    /// The mark of a file from its metadata.
    pub fn of(meta: &Metadata) -> FileMark {
        FileMark { dev: meta.dev(), ino: meta.ino(), len: meta.len(), mtime: meta.modified().ok() }
    }

    /// The file at `path` now (one `stat`; `None`: missing or unreadable).
    pub fn at(path: &Path) -> Option<FileMark> {
        std::fs::metadata(path).ok().map(|m| FileMark::of(&m))
    }

    /// (device, inode).
    pub fn ident(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
}

/// A database and its `-wal` at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The database file (`None`: missing).
    pub db: Option<FileMark>,
    /// Its `-wal` (`None`: none).
    pub wal: Option<FileMark>,
}

impl Stamp {
    /// Looks at `db` and `<db>-wal` (two `stat`s).
    pub fn of(db: &Path) -> Stamp {
        Stamp { db: FileMark::at(db), wal: FileMark::at(&wal_path(db)) }
    }

    /// Whether nothing can have been committed between `self` and `later`: the same
    /// database file (identity and size) and the same `-wal` (identity, size, mtime). A
    /// commit always writes the WAL; our own checkpoint writes only the database file,
    /// whose mtime this comparison leaves out — and whose size it may change, which
    /// [`Stamp::then_our_checkpoint`] accounts for.
    pub fn nothing_committed_since(&self, later: &Stamp) -> bool {
        let db = |s: &Stamp| s.db.map(|m| (m.ident(), m.len));
        db(self) == db(later) && self.wal == later.wal
    }

    /// The stamp of a sync that took `self` before it shipped and `after` once its
    /// checkpoint was done: the `-wal` as it was before (a commit meanwhile changed it,
    /// so the next look still sees that commit) and the database file as the checkpoint
    /// left it, for a backfill past the file's end grows it. Without that, the growth
    /// looked like a commit: after a bulk import, the tenant woke, reopened its database
    /// and synced nothing, three times, before it could rest. A database replaced
    /// meanwhile (another inode) keeps the stamp from before, so it is not taken for
    /// what was shipped.
    pub fn then_our_checkpoint(self, after: Stamp) -> Stamp {
        let db = match (self.db, after.db) {
            (Some(before), Some(now)) if before.ident() == now.ident() => Some(now),
            (before, _) => before,
        };
        Stamp { db, wal: self.wal }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_progress_is_read_from_the_shm_as_sqlite_keeps_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("a.db");
        let c = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        c.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..10 {
            c.execute("INSERT INTO t VALUES (randomblob(5000))", []).unwrap_or_else(|e| panic!("{e}"));
        }
        // A second connection (another process would do the same) sees the same.
        let other = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        begin_read(&other).unwrap_or_else(|e| panic!("{e}"));
        let before = wal_progress(&other).unwrap_or_else(|| panic!("no progress read"));
        other.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        let (log, done): (i64, i64) = c
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(before, WalProgress { max_frame: log as u32, backfilled: 0 });
        assert!(before.not_backfilled() > 10, "{before:?}");
        let after = wal_progress(&other).unwrap_or_else(|| panic!("no progress read"));
        assert_eq!(after, WalProgress { max_frame: log as u32, backfilled: done as u32 });
        assert_eq!(after.not_backfilled(), 0);
    }

    #[test]
    fn stamps_see_wal_appends_but_not_database_rewrites_in_place() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("a.db");
        std::fs::write(&db, b"x".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        let s0 = Stamp::of(&db);
        // Rewriting the database in place (a checkpoint) keeps the stamp.
        std::fs::write(&db, b"y".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        assert!(s0.nothing_committed_since(&Stamp::of(&db)));
        // A WAL appearing or growing changes it.
        let wal = wal_path(&db);
        std::fs::write(&wal, b"w").unwrap_or_else(|e| panic!("{e}"));
        let s1 = Stamp::of(&db);
        assert!(!s0.nothing_committed_since(&s1));
        std::fs::write(&wal, b"ww").unwrap_or_else(|e| panic!("{e}"));
        assert!(!s1.nothing_committed_since(&Stamp::of(&db)));
    }

    #[test]
    fn our_checkpoint_growing_the_database_is_not_a_commit_but_a_commit_meanwhile_is() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("a.db");
        let wal = wal_path(&db);
        std::fs::write(&db, b"x".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&wal, b"w".repeat(8192)).unwrap_or_else(|e| panic!("{e}"));
        // A sync: stamp, ship, then a checkpoint backfills past the database's end.
        let before = Stamp::of(&db);
        std::fs::write(&db, b"x".repeat(3 * 4096)).unwrap_or_else(|e| panic!("{e}"));
        assert!(!before.nothing_committed_since(&Stamp::of(&db)), "size alone looks like a commit");
        let stamp = before.then_our_checkpoint(Stamp::of(&db));
        assert!(stamp.nothing_committed_since(&Stamp::of(&db)), "our own backfill is not a commit");
        // A commit during the sync, after its last read: still seen afterwards.
        let before = Stamp::of(&db);
        std::fs::write(&wal, b"w".repeat(3 * 4096)).unwrap_or_else(|e| panic!("{e}"));
        let stamp = before.then_our_checkpoint(Stamp::of(&db));
        assert!(!stamp.nothing_committed_since(&Stamp::of(&db)), "a commit during the sync was lost");
        // The database replaced during the sync: not taken as shipped.
        let before = Stamp::of(&db);
        let other = dir.path().join("b.db");
        std::fs::write(&other, b"z".repeat(4096)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::rename(&other, &db).unwrap_or_else(|e| panic!("{e}"));
        let stamp = before.then_our_checkpoint(Stamp::of(&db));
        assert!(!stamp.nothing_committed_since(&Stamp::of(&db)), "a replaced database was taken as shipped");
    }

    #[test]
    fn a_header_that_is_not_sqlite_is_shown_escaped() {
        let mut ok = MAGIC.to_vec();
        ok.resize(100, 0);
        assert!(check_header(&ok).is_ok());
        assert_eq!(check_header(b"PK\x03\x04 zip").unwrap_err(), "PK\\x03\\x04 zip");
        assert_eq!(check_header(&ok[..50]).unwrap_err(), "SQLite format 3\\x00");
    }
}
