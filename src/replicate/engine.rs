//! The blocking half of a replicator: the SQLite connection and its read transaction,
//! the write barrier and checkpoints, the position cache and page table on disk. Runs
//! on tokio's blocking pool, one call at a time (`Replicator` holds it in a mutex).
//!
//! It never writes to the tenant's database except through SQLite's own checkpoints
//! and never creates tables there.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::pages::{self, PageTable};
use super::plan::{Position, SnapshotReason};
use super::{Error, Result, Settings};
use crate::ltx::{self, TxId};
use crate::storage::Replica;
use crate::{durable, sqlite};

/// A hot database: an open connection holding a read transaction.
pub(super) struct Hot {
    pub(super) conn: Connection,
    /// A long-lived descriptor on the database file. Closing any descriptor of a file
    /// drops every POSIX lock this process holds on it, SQLite's included, so we keep
    /// ours open as long as the connection and close it after.
    pub(super) db: File,
    /// Identity of the database file when it was opened.
    pub(super) dev: u64,
    pub(super) ino: u64,
    pub(super) page_size: u32,
}

/// The blocking half of one replicator.
pub(super) struct Engine {
    pub(super) path: PathBuf,
    pub(super) wal_path: PathBuf,
    pub(super) settings: Settings,
    /// The position cache (`None`: no state dir).
    state_file: Option<PathBuf>,
    pub(super) hot: Option<Hot>,
    /// A released connection kept open with no transaction ([`Engine::park`]), which
    /// the next [`Engine::open`] of the same file takes up again.
    pub(super) parked: Option<Hot>,
    /// Last prepared position.
    pub(super) pos: Option<Position>,
    /// Whether our read transaction has been held without a gap since `pos` was
    /// recorded (our own barrier-protected checkpoints do not count as gaps).
    pub(super) continuous: bool,
    /// Set after a TRUNCATE checkpoint: the next file must be a snapshot.
    pub(super) force_snapshot: Option<SnapshotReason>,
    /// CRC of every page of the replica at `pos`, so a sync after a gap ships only the
    /// pages that differ. A large database's is saved to the state dir when the tenant
    /// is released; a small one's is dropped then (the position's digest remains).
    pub(super) table: Option<Box<PageTable>>,
    pub(super) last_checkpoint: Instant,
    pub(super) shipped_since_checkpoint: bool,
    /// Set when our read transaction began on a fully backfilled WAL (read mark 0):
    /// the WAL as it was then. See [`Anchor`](super::checkpoint::Anchor).
    pub(super) zero_mark: Option<super::checkpoint::Anchor>,
    /// Set by `open`: our read transaction began where we could not see the WAL's
    /// state (on mark 0 if the application had just backfilled it all); the first
    /// catch-up since anchors it (`Engine::anchor_after_open`).
    pub(super) unanchored: bool,
}

impl Engine {
    /// An engine for `db` replicating to `replica`; opens nothing.
    pub(super) fn new(db: &Path, replica: &Replica, settings: Settings) -> Engine {
        let state_file = settings.state_dir.as_ref().map(|d| d.join(state_file_name(db, replica)));
        Engine {
            path: db.to_path_buf(),
            wal_path: sqlite::wal_path(db),
            settings,
            state_file,
            hot: None,
            parked: None,
            pos: None,
            continuous: false,
            force_snapshot: None,
            table: None,
            last_checkpoint: Instant::now(),
            shipped_since_checkpoint: false,
            zero_mark: None,
            unanchored: false,
        }
    }

    pub(super) fn err_sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite { path: self.path.clone(), source }
    }
    pub(super) fn err_io(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }

    /// Reads the local position cache and accepts it only if it matches the replica.
    pub(super) fn load_state(&mut self, remote_max: TxId) -> Option<Position> {
        self.pos = None;
        self.continuous = false;
        let pos: Option<Position> =
            self.state_file.as_ref().and_then(|f| std::fs::read(f).ok()).and_then(|b| serde_json::from_slice(&b).ok());
        match pos {
            Some(p) if p.txid == remote_max && remote_max > 0 => {
                self.pos = Some(p.clone());
                Some(p)
            }
            Some(p) => {
                tracing::info!(db = %self.path.display(), local = p.txid, remote = remote_max, "position cache does not match the replica; next sync is a snapshot");
                None
            }
            None => None,
        }
    }

    pub(super) fn save_state(&self, pos: Option<&Position>) {
        let (Some(file), Some(pos)) = (&self.state_file, pos) else { return };
        if let Err(e) = durable::write(file, &serde_json::to_vec(pos).unwrap_or_default()) {
            // The cache only saves a snapshot after a restart; losing it is safe.
            tracing::warn!(db = %self.path.display(), error = %e, "cannot write position cache");
        }
    }

    /// Releases the database: ends the read transaction and closes the connection
    /// (a parked one too).
    pub(super) fn close(&mut self) {
        // A `Hot` drops its connection before its descriptor (field order).
        self.parked = None;
        if let Some(hot) = self.hot.take() {
            let Hot { conn, db, .. } = hot;
            let _ = conn.execute_batch("ROLLBACK");
            drop(conn);
            drop(db);
        }
        self.continuous = false;
        self.zero_mark = None;
        self.unanchored = false;
        // A released tenant keeps the page table of a large database on disk, not in
        // memory (without a state dir it stays in memory); a small one's is dropped:
        // the position's digest stands for it, and a cold tenant costs no table.
        if self.table.as_ref().is_some_and(|t| t.pos.commit < pages::MIN_PAGES) {
            self.table = None;
        }
        if let Some(path) = self.table_path()
            && let Some(mut t) = self.table.take()
            && t.dirty
            && let Err(e) = t.save(&path)
        {
            // Losing it only means the next gap ships every page.
            tracing::warn!(db = %self.path.display(), error = %e, "cannot write page table");
        }
    }

    /// Releases the database like [`Engine::close`] but keeps the connection open with
    /// no transaction. It holds no read mark, so it keeps nothing from the application's
    /// checkpoints; it does hold the `-shm` and the database's shared lock, so the
    /// application's next connection is not the database's first (no wal-index to
    /// rebuild) and its last close neither checkpoints nor deletes the `-wal`: the next
    /// burst writes into a WAL file that exists, as under a replicator that holds a
    /// connection for good (benchmarks §8, "Thirteenth run").
    pub(super) fn park(&mut self) {
        let hot = self.hot.take();
        self.close();
        if let Some(hot) = hot
            && hot.conn.execute_batch("ROLLBACK").is_ok()
        {
            self.parked = Some(hot);
        }
    }

    /// Where the page table is saved: next to the position cache.
    fn table_path(&self) -> Option<PathBuf> {
        self.state_file.as_ref().map(|f| f.with_extension("pages"))
    }

    /// The page table of the replica at `pos`, from memory or (databases of
    /// `pages::MIN_PAGES` or more) the state dir. Small databases keep theirs in memory
    /// only: after a release their position's digest stands for it.
    pub(super) fn current_table(&mut self) -> Option<Box<PageTable>> {
        let pos = self.pos.as_ref()?;
        match self.table.take() {
            Some(t) if t.pos == *pos => Some(t),
            _ if pos.commit >= pages::MIN_PAGES => {
                self.table_path().and_then(|p| PageTable::load(&p, pos)).map(Box::new)
            }
            _ => None,
        }
    }

    /// Opens the database: checks it is SQLite, opens the quiet connection
    /// ([`sqlite::open_quiet`]), switches the database to WAL if needed, and starts the
    /// long read transaction. `Ok(false)`: the file is empty (a `touch`ed tenant); there
    /// is nothing to ship until its first write.
    pub(super) fn open(&mut self) -> Result<bool> {
        // A parked connection is taken up again if the path still names its file; one
        // on a file replaced since is closed (a `Hot` drops its connection first).
        let now = sqlite::FileMark::at(&self.path).map(|m| m.ident());
        let parked = self.parked.take().filter(|p| now == Some((p.dev, p.ino)));
        // Bound in this order (and `conn` below), a connection is dropped before the
        // descriptor on error.
        let (db, parked) = match parked {
            Some(p) => (p.db, Some(p.conn)),
            None => match File::open(&self.path) {
                Ok(f) => (f, None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Error::Missing { path: self.path.clone() });
                }
                Err(e) => return Err(self.err_io(e)),
            },
        };
        let meta = db.metadata().map_err(|e| self.err_io(e))?;
        if meta.len() == 0 {
            return Ok(false);
        }
        let mut head = [0u8; 100];
        let n = db.read_at(&mut head, 0).map_err(|e| self.err_io(e))?;
        sqlite::check_header(&head[..n]).map_err(|header| Error::NotSqlite { path: self.path.clone(), header })?;
        let conn = match parked {
            Some(c) => c,
            None => sqlite::open_quiet(&self.path, self.settings.busy_timeout).map_err(|e| self.err_sql(e))?,
        };
        if head[18] == 1 || head[19] == 1 {
            if self.settings.refuse_rollback_journal {
                return Err(Error::RollbackJournal { path: self.path.clone() });
            }
            tracing::warn!(db = %self.path.display(), "database uses a rollback journal; switching it to WAL mode (as Litestream does) so it can be replicated");
        }
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).map_err(|e| self.err_sql(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(
                self.err_io(std::io::Error::other(format!("cannot switch to WAL mode (journal_mode is {mode})")))
            );
        }
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.err_sql(e))?;
        if sqlite::written_within(&self.wal_path, COMMIT_IN_FLIGHT) {
            let wal = &self.wal_path;
            let in_flight = |max_frame| crate::wal::frame_after_commits(wal, max_frame);
            begin_past_commit_in_flight(&conn, in_flight, || std::thread::sleep(Duration::from_millis(1)))
                .map_err(|e| self.err_sql(e))?;
        } else {
            sqlite::begin_read(&conn).map_err(|e| self.err_sql(e))?;
        }
        self.hot = Some(Hot { conn, db, dev: meta.dev(), ino: meta.ino(), page_size });
        self.continuous = false;
        self.unanchored = true;
        // What the application committed while we were closed lies below our mark now.
        self.backfill_early(None);
        Ok(true)
    }
}

/// Begins the long read transaction past the commit in flight, where a few
/// milliseconds allow. A cold tenant opens while the commit that woke it is still
/// being written (the kernel reports its first `write()`), and a read begun then
/// stops before it:
///
/// * On a fully backfilled WAL SQLite gives that reader read mark 0, which protects
///   nothing of ours (a writer may still restart the log behind it) while it forbids
///   every backfill: each auto-checkpoint of the application then sorts the whole WAL
///   for nothing, and once we move off 0 its next one copies everything up to our new
///   mark inside a commit (87 ms in one benchmark run).
/// * Otherwise the mark lies just before that commit's frames: too few to backfill
///   early (`checkpoint.rs`), so the application's first auto-checkpoint copies them
///   and `fsync`s both files inside its commit (6–8 ms of a 1 MiB burst).
///
/// So the transaction is begun again after `wait`, up to [`MARK_ZERO_RETRIES`] times,
/// while the WAL looks fully backfilled, or while `in_flight(max_frame)` says a frame
/// of the current generation follows the committed ones and no commit landed since the
/// first look. If nothing is committed meanwhile it stays where it began (on 0, the
/// anchor moves it later, `checkpoint.rs`). Only worth it while the application is
/// writing: `open` calls it when the WAL was written within [`COMMIT_IN_FLIGHT`], and
/// begins at once otherwise (a start-up of 100,000 idle tenants waits for no one).
fn begin_past_commit_in_flight(
    conn: &Connection,
    in_flight: impl Fn(u32) -> bool,
    mut wait: impl FnMut(),
) -> rusqlite::Result<()> {
    let t = Instant::now();
    let mut first = None;
    for retries in 0.. {
        sqlite::begin_read(conn)?;
        let progress = sqlite::wal_progress(conn);
        let again = progress.is_some_and(|p| {
            let unchanged = *first.get_or_insert(p.max_frame) == p.max_frame;
            p.not_backfilled() == 0 || (unchanged && in_flight(p.max_frame))
        });
        if retries == MARK_ZERO_RETRIES || !again {
            let dur_us = t.elapsed().as_micros() as u64;
            tracing::debug!(target: "litefleet::timeline", dur_us, retries, ?progress, "begin");
            return Ok(());
        }
        conn.execute_batch("COMMIT")?;
        wait();
    }
    unreachable!("returns once the retries are spent")
}

/// How many times [`begin_past_commit_in_flight`] begins again (1 ms apart when opening).
const MARK_ZERO_RETRIES: u32 = 5;

/// A WAL written this recently may hold a commit in flight (see [`begin_past_commit_in_flight`]).
const COMMIT_IN_FLIGHT: Duration = Duration::from_millis(100);

/// The position cache's file name: stable per (database path, replica).
fn state_file_name(db: &Path, replica: &Replica) -> String {
    let key = format!("{}\n{}", db.display(), replica.url());
    let stem = db.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    format!("{stem}.{:016x}.pos.json", ltx::crc64(key.as_bytes()))
}

/// Reads page `pgno` from the database file; bytes past the end read as zeros.
pub(super) fn read_page(db: &File, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
    let off = u64::from(pgno - 1) * buf.len() as u64;
    let mut done = 0;
    while done < buf.len() {
        let n = db.read_at(&mut buf[done..], off + done as u64)?;
        if n == 0 {
            buf[done..].fill(0);
            break;
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames a PASSIVE checkpoint of `app` backfills now (none while a reader holds
    /// read mark 0).
    fn backfill(app: &Connection) -> i64 {
        app.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(2)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opening in the middle of the commit that woke the tenant began our read
    /// transaction on a fully backfilled WAL, so on read mark 0: no backfill could pass
    /// it until we moved, and then the application's next checkpoint copied everything.
    #[test]
    fn a_read_begun_on_a_backfilled_wal_waits_for_the_commit_in_flight() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("t.db");
        let app = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        app.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(backfill(&app) > 0, "the whole WAL is backfilled: a reader beginning now gets mark 0");
        let ours = sqlite::open_quiet(&db, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let mut commits = 0;
        begin_past_commit_in_flight(
            &ours,
            |_| false,
            || {
                app.execute("INSERT INTO t VALUES (2)", []).unwrap_or_else(|e| panic!("{e}"));
                commits += 1;
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(commits, 1, "begun again once, after the commit in flight");
        assert!(backfill(&app) > 0, "our read mark is past 0: the application backfills up to it");

        // Nothing committed while it waits: it gives up and holds mark 0.
        ours.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        assert!(backfill(&app) > 0);
        let mut waits = 0;
        begin_past_commit_in_flight(&ours, |_| false, || waits += 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(waits, MARK_ZERO_RETRIES);
        app.execute("INSERT INTO t VALUES (3)", []).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(backfill(&app), 0, "on mark 0 nothing can be backfilled");
    }

    /// The commit that woke a cold tenant is usually still being written when its read
    /// begins: the mark stopped before that commit, too few frames to backfill early,
    /// and the application's first auto-checkpoint copied them inside a commit. A frame
    /// of an older generation past the committed ones is no commit in flight.
    #[test]
    fn a_read_begun_during_a_commit_begins_again_once_it_landed() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let db = dir.path().join("t.db");
        let wal = sqlite::wal_path(&db);
        let app = Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
        app.execute_batch("PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x);")
            .unwrap_or_else(|e| panic!("{e}"));
        // A large transaction spills its pages into the WAL before it commits.
        let spill = "PRAGMA cache_size=2; BEGIN; WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
                     WHERE i < 64) INSERT INTO t SELECT randomblob(4000) FROM n;";
        app.execute_batch(spill).unwrap_or_else(|e| panic!("{e}"));
        let ours = sqlite::open_quiet(&db, Duration::from_secs(5)).unwrap_or_else(|e| panic!("{e}"));
        let in_flight = |m| crate::wal::frame_after_commits(&wal, m);
        let mut commits = 0;
        begin_past_commit_in_flight(&ours, in_flight, || {
            app.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
            commits += 1;
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(commits, 1, "begun again once, after the commit in flight");
        let landed = sqlite::wal_progress(&ours).unwrap_or_else(|| panic!("no wal-index"));
        let (log, done): (i64, i64) = app
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(1)?, r.get(2)?)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((log, done), (i64::from(landed.max_frame), log), "our mark includes the commit");
        assert!(!in_flight(landed.max_frame), "nothing follows the last commit");

        // The log restarts: the next commit's frames are followed by the old ones.
        ours.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        app.execute("INSERT INTO t VALUES (1)", []).unwrap_or_else(|e| panic!("{e}"));
        sqlite::begin_read(&ours).unwrap_or_else(|e| panic!("{e}"));
        let restarted = sqlite::wal_progress(&ours).unwrap_or_else(|| panic!("no wal-index"));
        assert!(restarted.max_frame < landed.max_frame, "the log did not restart: {restarted:?}");
        assert!(!in_flight(restarted.max_frame), "an older generation's frame taken for a commit in flight");
        ours.execute_batch("COMMIT").unwrap_or_else(|e| panic!("{e}"));
        let mut waits = 0;
        begin_past_commit_in_flight(&ours, in_flight, || waits += 1).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(waits, 0, "waited with no commit in flight");
    }
}
