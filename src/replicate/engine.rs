//! The blocking half of a replicator: the SQLite connection and its read transaction,
//! the write barrier and checkpoints, the position cache and page table on disk. Runs
//! on tokio's blocking pool, one call at a time (`Replicator` holds it in a mutex).
//!
//! It never writes to the tenant's database except through SQLite's own checkpoints
//! and never creates tables there.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::Connection;

use super::pages::{self, PageTable};
use super::plan::{Position, SnapshotReason};
use super::{Error, MAX_PENDING_BYTES, Pending, Result, Settings};
use crate::ltx::{self, TxId};
use crate::storage::Replica;
use crate::{durable, sqlite, wal};

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
    /// Last prepared position.
    pub(super) pos: Option<Position>,
    /// Whether our read transaction has been held without a gap since `pos` was
    /// recorded (our own barrier-protected checkpoints do not count as gaps).
    pub(super) continuous: bool,
    /// Set after a TRUNCATE checkpoint: the next file must be a snapshot.
    pub(super) force_snapshot: Option<SnapshotReason>,
    /// CRC of every page of the replica at `pos` (databases of `pages::MIN_PAGES` or
    /// more), so a sync after a gap ships only the pages that differ. Saved to the
    /// state dir and dropped when the tenant is released.
    pub(super) table: Option<Box<PageTable>>,
    last_checkpoint: Instant,
    pub(super) shipped_since_checkpoint: bool,
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
            pos: None,
            continuous: false,
            force_snapshot: None,
            table: None,
            last_checkpoint: Instant::now(),
            shipped_since_checkpoint: false,
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

    pub(super) fn close(&mut self) {
        if let Some(hot) = self.hot.take() {
            let Hot { conn, db, .. } = hot;
            let _ = conn.execute_batch("ROLLBACK");
            drop(conn);
            drop(db);
        }
        self.continuous = false;
        // A released tenant keeps its page table on disk, not in memory (without a
        // state dir it stays in memory).
        if let Some(path) = self.table_path()
            && let Some(mut t) = self.table.take()
            && t.dirty
            && let Err(e) = t.save(&path)
        {
            // Losing it only means the next gap ships every page.
            tracing::warn!(db = %self.path.display(), error = %e, "cannot write page table");
        }
    }

    /// Where the page table is saved: next to the position cache.
    fn table_path(&self) -> Option<PathBuf> {
        self.state_file.as_ref().map(|f| f.with_extension("pages"))
    }

    /// The page table of the replica at `pos`, from memory or the state dir (small
    /// databases have none: no file to look for on each of their syncs).
    pub(super) fn current_table(&mut self) -> Option<Box<PageTable>> {
        let pos = self.pos.as_ref().filter(|p| p.commit >= pages::MIN_PAGES)?;
        match self.table.take() {
            Some(t) if t.pos == *pos => Some(t),
            _ => self.table_path().and_then(|p| PageTable::load(&p, pos)).map(Box::new),
        }
    }

    /// Opens the database: checks it is SQLite, opens the quiet connection
    /// ([`sqlite::open_quiet`]), switches the database to WAL if needed, and starts the
    /// long read transaction. `Ok(false)`: the file is empty (a `touch`ed tenant); there
    /// is nothing to ship until its first write.
    pub(super) fn open(&mut self) -> Result<bool> {
        let db = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing { path: self.path.clone() });
            }
            Err(e) => return Err(self.err_io(e)),
        };
        let meta = db.metadata().map_err(|e| self.err_io(e))?;
        if meta.len() == 0 {
            return Ok(false);
        }
        let mut head = [0u8; 100];
        let n = db.read_at(&mut head, 0).map_err(|e| self.err_io(e))?;
        sqlite::check_header(&head[..n]).map_err(|header| Error::NotSqlite { path: self.path.clone(), header })?;
        let conn = sqlite::open_quiet(&self.path, self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
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
        sqlite::begin_read(&conn).map_err(|e| self.err_sql(e))?;
        self.hot = Some(Hot { conn, db, dev: meta.dev(), ino: meta.ino(), page_size });
        self.continuous = false;
        Ok(true)
    }

    /// Runs a checkpoint when a threshold is reached. PASSIVE runs under a write
    /// barrier (a second connection in `BEGIN IMMEDIATE`) so no transaction can commit
    /// between our last read of the WAL and the checkpoint; whatever committed before
    /// the barrier is prepared first (returned for upload). TRUNCATE is only an
    /// emergency brake and is followed by a snapshot. RESTART is never used.
    pub(super) fn checkpoint_if_needed(&mut self, txid: TxId, force: bool) -> Result<(Vec<Pending>, bool)> {
        let (Some(pos), Some(_)) = (&self.pos, &self.hot) else { return Ok((Vec::new(), false)) };
        let fs = u64::from(pos.page_size) + wal::FRAME_HEADER_SIZE;
        let wal_pages = pos.offset.saturating_sub(wal::HEADER_SIZE) / fs;
        let interval_due = !self.settings.checkpoint_interval.is_zero()
            && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
        let due = self.shipped_since_checkpoint && wal_pages > 1 && (force || interval_due);
        if wal_pages < self.settings.min_checkpoint_pages && !due {
            return Ok((Vec::new(), false));
        }
        // Catch up outside the barrier first, so the write lock below covers only what
        // commits in the last moment (a large backlog under it would stall writers).
        let mut ready = Vec::new();
        let mut txid = txid;
        let mut bytes = 0usize;
        while let (Some(p), _) = self.prepare(txid, false)? {
            bytes += p.bytes.len();
            txid += 1;
            ready.push(p);
            if bytes >= MAX_PENDING_BYTES {
                return Ok((ready, false));
            }
        }
        let barrier = sqlite::open_quiet(&self.path, self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
        if let Err(e) = barrier.execute_batch("BEGIN IMMEDIATE") {
            tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped: writer busy");
            return Ok((ready, false));
        }
        // Everything committed before the barrier must be prepared before the
        // checkpoint: frames left behind could be lost at the next log restart.
        loop {
            match self.prepare(txid, true) {
                Ok((p, more)) => {
                    if let Some(p) = p {
                        txid += 1;
                        ready.push(p);
                    }
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    let _ = barrier.execute_batch("ROLLBACK");
                    return Err(e);
                }
            }
        }
        let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("hot above"));
        let r = (|| -> rusqlite::Result<(i64, i64, i64)> {
            hot.conn.execute_batch("COMMIT")?;
            let r = hot.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
            sqlite::begin_read(&hot.conn)?;
            r
        })();
        let _ = barrier.execute_batch("ROLLBACK");
        drop(barrier);
        let (busy, log, done) = r.map_err(|e| self.err_sql(e))?;
        tracing::debug!(db = %self.path.display(), busy, log, done, "passive checkpoint");
        self.last_checkpoint = Instant::now();
        self.shipped_since_checkpoint = false;
        if wal_pages >= self.settings.truncate_pages && (busy != 0 || done < log) {
            // PASSIVE could not restart the log (a reader holds old frames): TRUNCATE
            // waits for readers, then the next file is a full snapshot because commits
            // racing the checkpoint may have been backfilled unseen.
            tracing::warn!(db = %self.path.display(), wal_pages, "WAL past the truncate threshold; running TRUNCATE checkpoint");
            let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("hot above"));
            let r = (|| -> rusqlite::Result<()> {
                hot.conn.execute_batch("COMMIT")?;
                let r = hot.conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
                sqlite::begin_read(&hot.conn)?;
                r
            })();
            r.map_err(|e| self.err_sql(e))?;
            self.continuous = false;
            self.force_snapshot = Some(SnapshotReason::AfterTruncate);
        }
        Ok((ready, true))
    }
}

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
