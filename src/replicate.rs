//! One database's replicator: WAL frames → one L0 LTX file per sync → storage.
//!
//! It owns a SQLite connection (autocheckpoint off, a long read transaction so nobody
//! can restart the WAL behind our back), reads committed frames straight from the
//! `-wal` file, and ships them as L0 files with TXIDs contiguous from 1. Whenever it
//! cannot prove that the frames it is about to read continue what it shipped last, it
//! ships a full-page file instead (a "snapshot L0"). It is the database's checkpointer.
//!
//! It never writes to the tenant's database except through SQLite's own checkpoints,
//! never creates tables there, and never deletes anything from storage. The full
//! correctness argument is in `docs/architecture.md`; the short version is at
//! [`Engine::plan`].

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};

use crate::ltx::{self, PageEncoding, TxId};
use crate::pages::{self, PageTable};
use crate::storage::{self, Replica};
use crate::wal;

/// Busy databases ship at most this often; the first change after idle ships at once.
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// A PASSIVE checkpoint runs when this much time passed since the last one and
/// something was shipped since (Litestream's `checkpoint-interval`).
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// A PASSIVE checkpoint runs once the WAL holds this many pages (~4 MB at 4 KiB).
pub const DEFAULT_MIN_CHECKPOINT_PAGES: u64 = 1000;
/// Emergency brake: past this many WAL pages (~500 MB at 4 KiB) a TRUNCATE
/// checkpoint runs if PASSIVE could not restart the log. Followed by a snapshot.
pub const DEFAULT_TRUNCATE_PAGES: u64 = 121_359;
/// How long our connection waits for SQLite locks.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(1);
/// One L0 file covers at most this many WAL bytes (cut at commit boundaries only;
/// a single larger transaction still ships whole).
pub const DEFAULT_MAX_SYNC_WAL_BYTES: u64 = 64 << 20;
/// Prepared but not yet uploaded L0 bytes we keep in memory before we stop
/// checkpointing (so the WAL keeps everything storage has not acknowledged).
pub const MAX_PENDING_BYTES: usize = 256 << 20;

/// SQLite's 16-byte file header magic.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Tunables of one replicator.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Minimum spacing of syncs for a continuously written database.
    pub sync_interval: Duration,
    /// Time-based PASSIVE checkpoint trigger.
    pub checkpoint_interval: Duration,
    /// Page-count PASSIVE checkpoint trigger.
    pub min_checkpoint_pages: u64,
    /// Page-count TRUNCATE trigger (emergency brake).
    pub truncate_pages: u64,
    /// SQLite busy timeout of our connections.
    pub busy_timeout: Duration,
    /// Upper bound of WAL bytes per L0 file.
    pub max_sync_wal_bytes: u64,
    /// How pages are compressed inside LTX files.
    pub page_encoding: PageEncoding,
    /// Where the position cache lives (never next to the tenant's database). `None`:
    /// no local state; the position is recovered from the replica after a restart.
    pub state_dir: Option<PathBuf>,
    /// Refuse (instead of converting) databases in rollback-journal mode.
    pub refuse_rollback_journal: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_interval: DEFAULT_SYNC_INTERVAL,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            min_checkpoint_pages: DEFAULT_MIN_CHECKPOINT_PAGES,
            truncate_pages: DEFAULT_TRUNCATE_PAGES,
            busy_timeout: DEFAULT_BUSY_TIMEOUT,
            max_sync_wal_bytes: DEFAULT_MAX_SYNC_WAL_BYTES,
            page_encoding: PageEncoding::Lz4Block,
            state_dir: None,
            refuse_rollback_journal: false,
        }
    }
}

/// Errors of one replicator. Each names the database.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not a SQLite database (header is \"{header}\")")]
    NotSqlite { path: PathBuf, header: String },
    #[error("{path}: database is in rollback-journal mode and converting it to WAL is disabled")]
    RollbackJournal { path: PathBuf },
    #[error("{path}: database file is missing")]
    Missing { path: PathBuf },
    #[error("{path}: sqlite: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Wal {
        path: PathBuf,
        #[source]
        source: wal::Error,
    },
    #[error("{path}: encoding LTX: {source}")]
    Ltx {
        path: PathBuf,
        #[source]
        source: ltx::Error,
    },
    #[error("{0}")]
    Storage(#[from] storage::Error),
    #[error("replicator task failed: {0}")]
    Join(String),
}

type Result<T> = std::result::Result<T, Error>;

/// What was last shipped (prepared, and uploaded once `pending` drains): the TXID and
/// where in the WAL the next frame must continue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// TXID of the last L0 file.
    pub txid: TxId,
    /// WAL salts of the generation the position is in (0, 0: no WAL at the time).
    pub salt1: u32,
    pub salt2: u32,
    /// WAL byte offset just after the last shipped commit frame (32: nothing of this
    /// generation shipped yet; 0: no WAL).
    pub offset: u64,
    /// SQLite's running checksum at `offset` (the seed of the next frame).
    pub checksum: (u32, u32),
    /// Database page size.
    pub page_size: u32,
    /// Database size in pages at `txid`.
    pub commit: u32,
    /// Identity of the database file (device, inode) the position belongs to.
    pub dev: u64,
    pub ino: u64,
}

/// Why a sync shipped a full-page file instead of an incremental one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    FirstSync,
    NoPosition,
    FileReplaced,
    WalMissing,
    WalOverwritten,
    SaltReset,
    RestartUnproven,
    PageSizeChanged,
    AfterTruncate,
}

impl std::fmt::Display for SnapshotReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotReason::FirstSync => "first sync of this replica",
            SnapshotReason::NoPosition => "no known position (restart without state, or replica ahead of local state)",
            SnapshotReason::FileReplaced => "database file replaced (new inode)",
            SnapshotReason::WalMissing => "wal missing or truncated since the last sync",
            SnapshotReason::WalOverwritten => "last shipped wal frame changed (wal overwritten by another process)",
            SnapshotReason::SaltReset => "wal header salt reset",
            SnapshotReason::RestartUnproven => "wal restarted and continuity cannot be proven",
            SnapshotReason::PageSizeChanged => "page size changed",
            SnapshotReason::AfterTruncate => "checkpoint boundary after TRUNCATE",
        })
    }
}

/// An L0 file prepared locally and waiting for upload.
#[derive(Debug)]
pub struct Pending {
    pub txid: TxId,
    pub bytes: Vec<u8>,
    pub timestamp_ms: i64,
    pub snapshot: Option<SnapshotReason>,
    pub pages: u32,
    pub transactions: u64,
}

/// What one call to [`Replicator::sync`] did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// L0 files uploaded.
    pub uploaded: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// TXID of the newest uploaded file.
    pub txid: Option<TxId>,
    /// Full-page files among them, with the reason.
    pub snapshots: Vec<String>,
    /// SQLite transactions shipped.
    pub transactions: u64,
    /// Whether a checkpoint ran.
    pub checkpointed: bool,
    /// The L0 files uploaded, for the lifecycle's catalog.
    pub files: Vec<storage::FileInfo>,
}

/// A hot database: an open connection holding a read transaction.
struct Hot {
    conn: Connection,
    /// A long-lived descriptor on the database file. Closing any descriptor of a file
    /// drops every POSIX lock this process holds on it, SQLite's included, so we keep
    /// ours open as long as the connection and close it after.
    db: File,
    dev: u64,
    ino: u64,
    page_size: u32,
}

/// The blocking half of a replicator: SQLite, the WAL and LTX encoding. Runs on
/// tokio's blocking pool.
struct Engine {
    path: PathBuf,
    wal_path: PathBuf,
    settings: Settings,
    state_file: Option<PathBuf>,
    hot: Option<Hot>,
    /// Last prepared position.
    pos: Option<Position>,
    /// Whether our read transaction has been held without a gap since `pos` was
    /// recorded (our own barrier-protected checkpoints do not count as gaps).
    continuous: bool,
    /// Set after a TRUNCATE checkpoint: the next file must be a snapshot.
    force_snapshot: Option<SnapshotReason>,
    /// CRC of every page of the replica at `pos` (databases of `pages::MIN_PAGES` or
    /// more), so a sync after a gap ships only the pages that differ. Saved to the
    /// state dir and dropped when the tenant is released.
    table: Option<Box<PageTable>>,
    last_checkpoint: Instant,
    shipped_since_checkpoint: bool,
}

/// One database's replicator.
pub struct Replicator {
    engine: Arc<Mutex<Engine>>,
    replica: Replica,
    /// Prepared L0 files, oldest first; uploaded strictly in order.
    pending: VecDeque<Pending>,
    /// Newest TXID known to be in the replica (None until listed).
    remote_max: Option<TxId>,
    /// Position as of the last upload, saved to the state file.
    uploaded_pos: Option<Position>,
    last_sync: Option<Instant>,
}

impl Replicator {
    /// A replicator for `db` shipping to `replica`. Opens nothing yet.
    pub fn new(db: &Path, replica: Replica, settings: Settings) -> Replicator {
        let path = db.to_path_buf();
        let state_file = settings.state_dir.as_ref().map(|d| d.join(state_file_name(&path, &replica)));
        let mut wal_path = path.clone().into_os_string();
        wal_path.push("-wal");
        let engine = Engine {
            path,
            wal_path: PathBuf::from(wal_path),
            settings,
            state_file,
            hot: None,
            pos: None,
            continuous: false,
            force_snapshot: None,
            table: None,
            last_checkpoint: Instant::now(),
            shipped_since_checkpoint: false,
        };
        Replicator {
            engine: Arc::new(Mutex::new(engine)),
            replica,
            pending: VecDeque::new(),
            remote_max: None,
            uploaded_pos: None,
            last_sync: None,
        }
    }

    /// The replica this replicator writes to.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// TXID of the newest file known to be in the replica.
    pub fn remote_txid(&self) -> Option<TxId> {
        self.remote_max
    }

    /// When the last sync ran (successful or not).
    pub fn last_sync(&self) -> Option<Instant> {
        self.last_sync
    }

    /// Whether a SQLite connection is currently open.
    pub fn is_hot(&self) -> bool {
        self.with_engine(|e| e.hot.is_some())
    }

    fn with_engine<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> T {
        let mut g = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&mut Engine) -> T + Send + 'static) -> Result<T> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            let mut g = engine.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut g)
        })
        .await
        .map_err(|e| Error::Join(e.to_string()))
    }

    /// Learns the replica's newest TXID (one LIST of level 0; all levels only when L0
    /// is empty) and reconciles it with the local position cache.
    async fn recover(&mut self) -> Result<()> {
        let mut max = self.replica.list(0).await?.last().map(|f| f.max_txid);
        if max.is_none() {
            for level in 1..=storage::MAX_LEVEL {
                if let Some(f) = self.replica.list(level).await?.iter().max_by_key(|f| f.max_txid) {
                    max = Some(max.unwrap_or(0).max(f.max_txid));
                }
            }
        }
        let remote = max.unwrap_or(0);
        self.remote_max = Some(remote);
        let pos = self.blocking(move |e| e.load_state(remote)).await?;
        self.uploaded_pos = pos;
        Ok(())
    }

    /// Ships everything committed since the last sync: zero or more L0 files (more than
    /// one only when the WAL holds more than `max_sync_wal_bytes`), then checkpoints if
    /// a threshold is reached. Retrying after an error is always safe.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        self.sync_with(false).await
    }

    /// Ships what is waiting, checkpoints whatever was shipped since the last
    /// checkpoint (whatever the thresholds say), and releases the connection: how a
    /// tenant goes cold after `idle_after` without writes, leaving a small WAL behind.
    pub async fn idle(&mut self) -> Result<SyncReport> {
        let r = self.sync_with(true).await;
        self.release().await?;
        r
    }

    async fn sync_with(&mut self, force_checkpoint: bool) -> Result<SyncReport> {
        self.last_sync = Some(Instant::now());
        if self.remote_max.is_none() {
            self.recover().await?;
        }
        let mut report = SyncReport::default();
        // Upload what an earlier, failed sync prepared.
        self.flush(&mut report).await?;
        loop {
            let next = self.remote_max.unwrap_or(0) + self.pending.len() as u64 + 1;
            let (pending, more) = self.blocking(move |e| e.prepare(next, false)).await??;
            if let Some(p) = pending {
                self.pending.push_back(p);
            }
            self.flush(&mut report).await?;
            if !more {
                break;
            }
        }
        let pending_bytes: usize = self.pending.iter().map(|p| p.bytes.len()).sum();
        if pending_bytes < MAX_PENDING_BYTES {
            let next = self.remote_max.unwrap_or(0) + self.pending.len() as u64 + 1;
            let (ready, ran) = self.blocking(move |e| e.checkpoint_if_needed(next, force_checkpoint)).await??;
            report.checkpointed = ran;
            self.pending.extend(ready);
            self.flush(&mut report).await?;
            if ran && self.with_engine(|e| e.force_snapshot.is_some()) {
                // A TRUNCATE checkpoint: take the checkpoint-boundary snapshot now.
                let next = self.remote_max.unwrap_or(0) + self.pending.len() as u64 + 1;
                let (pending, _) = self.blocking(move |e| e.prepare(next, false)).await??;
                if let Some(p) = pending {
                    self.pending.push_back(p);
                }
                self.flush(&mut report).await?;
            }
        }
        Ok(report)
    }

    /// Uploads pending files in TXID order; stops at the first error (kept for retry).
    async fn flush(&mut self, report: &mut SyncReport) -> Result<()> {
        while let Some(p) = self.pending.front() {
            self.replica.put(0, p.txid, p.txid, p.bytes.clone(), p.timestamp_ms).await?;
            let p = self.pending.pop_front().unwrap_or_else(|| unreachable!("front exists"));
            report.uploaded += 1;
            report.bytes += p.bytes.len() as u64;
            report.txid = Some(p.txid);
            report.files.push(storage::FileInfo {
                level: 0,
                min_txid: p.txid,
                max_txid: p.txid,
                size: p.bytes.len() as u64,
                created: Some(std::time::SystemTime::now()),
            });
            report.transactions += p.transactions;
            if let Some(r) = &p.snapshot {
                report.snapshots.push(r.to_string());
                tracing::info!(db = %self.with_engine(|e| e.path.display().to_string()), txid = p.txid, pages = p.pages, reason = %r, "shipped full-page L0");
            }
            self.remote_max = Some(p.txid);
        }
        // Everything prepared is uploaded: the prepared position is durable.
        let pos = self.with_engine(|e| e.pos.clone());
        if pos != self.uploaded_pos {
            self.uploaded_pos = pos.clone();
            self.blocking(move |e| e.save_state(pos.as_ref())).await?;
        }
        Ok(())
    }

    /// Releases the SQLite connection and file descriptors (an idle tenant keeps only
    /// its position in memory). The next sync re-attaches and proves continuity or
    /// ships a snapshot.
    pub async fn release(&mut self) -> Result<()> {
        self.blocking(|e| e.close()).await
    }

    /// Final sync, then release. Used at shutdown and when a tenant is unregistered.
    pub async fn shutdown(&mut self) -> Result<SyncReport> {
        let r = if self.with_engine(|e| e.path.exists()) { self.sync().await } else { Ok(SyncReport::default()) };
        self.release().await?;
        r
    }
}

impl Engine {
    fn err_sql(&self, source: rusqlite::Error) -> Error {
        Error::Sqlite { path: self.path.clone(), source }
    }
    fn err_io(&self, source: std::io::Error) -> Error {
        Error::Io { path: self.path.clone(), source }
    }

    /// Reads the local position cache and accepts it only if it matches the replica.
    fn load_state(&mut self, remote_max: TxId) -> Option<Position> {
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

    fn save_state(&self, pos: Option<&Position>) {
        let (Some(file), Some(pos)) = (&self.state_file, pos) else { return };
        if let Err(e) = write_atomic(file, &serde_json::to_vec(pos).unwrap_or_default()) {
            // The cache only saves a snapshot after a restart; losing it is safe.
            tracing::warn!(db = %self.path.display(), error = %e, "cannot write position cache");
        }
    }

    fn close(&mut self) {
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
    fn current_table(&mut self) -> Option<Box<PageTable>> {
        let pos = self.pos.as_ref().filter(|p| p.commit >= pages::MIN_PAGES)?;
        match self.table.take() {
            Some(t) if t.pos == *pos => Some(t),
            _ => self.table_path().and_then(|p| PageTable::load(&p, pos)).map(Box::new),
        }
    }

    /// Opens the database: checks it is SQLite, switches it to WAL if needed, turns
    /// autocheckpoint off on our connection, keeps the WAL file on close, and starts the
    /// long read transaction. `Ok(false)`: the file is empty (a `touch`ed tenant); there
    /// is nothing to ship until its first write.
    fn open(&mut self) -> Result<bool> {
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
        if n < 100 || &head[..16] != SQLITE_MAGIC {
            return Err(Error::NotSqlite { path: self.path.clone(), header: printable(&head[..n.min(16)]) });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(|e| self.err_sql(e))?;
        conn.busy_timeout(self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
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
        conn.execute_batch("PRAGMA wal_autocheckpoint=0").map_err(|e| self.err_sql(e))?;
        // Closing our connection must not write the database (SQLite checkpoints when
        // the last connection closes): that write would wake this tenant again right
        // after it went idle. Checkpoints are ours to run, under the write barrier.
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
            .map_err(|e| self.err_sql(e))?;
        persist_wal(&conn);
        let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(|e| self.err_sql(e))?;
        begin_read(&conn).map_err(|e| self.err_sql(e))?;
        self.hot = Some(Hot { conn, db, dev: meta.dev(), ino: meta.ino(), page_size });
        self.continuous = false;
        Ok(true)
    }

    /// Prepares the next L0 file, if there is anything to ship. Returns the file and
    /// whether more committed frames are waiting (the byte budget was reached).
    ///
    /// Continuity argument, in short: an incremental file is built only when the WAL
    /// provably still holds every frame committed after `pos` — same salts and the
    /// frame before `pos.offset` still carries our recorded checksum; or exactly one
    /// restart happened (salt-1 + 1) while we held our read transaction (nothing can
    /// be backfilled past it, so a restart implies nothing was appended to the old
    /// generation); or, after a gap, one restart happened and the old generation's
    /// bytes at `pos.offset` are intact and hold no committed continuation. Anything
    /// else ships every page.
    fn prepare(&mut self, txid: TxId, under_barrier: bool) -> Result<(Option<Pending>, bool)> {
        if self.hot.is_none() && !self.open()? {
            return Ok((None, false));
        }
        // The path now names another file: start over on the new one.
        let replaced = match std::fs::metadata(&self.path) {
            Ok(m) => self.hot.as_ref().is_some_and(|h| (h.dev, h.ino) != (m.dev(), m.ino())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing { path: self.path.clone() });
            }
            Err(e) => return Err(self.err_io(e)),
        };
        if replaced && !under_barrier {
            self.close();
            if !self.open()? {
                return Ok((None, false));
            }
            self.force_snapshot = Some(SnapshotReason::FileReplaced);
        }
        let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("opened above"));
        let (dev, ino, page_size) = (hot.dev, hot.ino, hot.page_size);
        let wal_file = match File::open(&self.wal_path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.err_io(e)),
        };
        let header = match &wal_file {
            Some(f) => wal::Header::read(f).map_err(|e| Error::Wal { path: self.wal_path.clone(), source: e })?,
            None => None,
        };
        let header = header.filter(|h| h.page_size == page_size);
        let plan = self.plan(wal_file.as_ref(), header.as_ref(), txid)?;
        let (from, reason) = match plan {
            Plan::Nothing => return Ok((None, false)),
            Plan::Incremental(c) => (Some(c), None),
            Plan::Snapshot(r) => (None, Some(r)),
        };
        let budget = if reason.is_some() { u64::MAX } else { self.settings.max_sync_wal_bytes };
        let (seg, stop) = match (&wal_file, &header) {
            (Some(f), Some(h)) => {
                let start = from.unwrap_or_else(|| wal::Cursor::start(h));
                wal::scan(f, h, start, budget).map_err(|e| Error::Wal { path: self.wal_path.clone(), source: e })?
            }
            _ => (wal::Segment::default(), wal::Stop::EndOfLog),
        };
        if reason.is_none() && seg.transactions == 0 {
            return Ok((None, false));
        }
        // The page table of the replica at `pos`, if one is known (see below).
        let base = self.current_table();
        let db = &self.hot.as_ref().unwrap_or_else(|| unreachable!("opened above")).db;
        let commit = if seg.commit > 0 {
            seg.commit
        } else {
            let len = db.metadata().map_err(|e| self.err_io(e))?.len();
            u32::try_from(len / u64::from(page_size)).unwrap_or(u32::MAX)
        };
        let start = match (&from, &header) {
            (Some(c), _) => c.offset,
            (None, Some(_)) => wal::HEADER_SIZE,
            (None, None) => 0,
        };
        let end = seg.end.map(|c| c.offset).unwrap_or(start);
        let (salt1, salt2) = header.map(|h| (h.salt1, h.salt2)).unwrap_or((0, 0));
        let timestamp_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let lh = ltx::Header {
            flags: ltx::HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms,
            wal_offset: if end > start { start } else { 0 },
            wal_size: end.saturating_sub(start),
            wal_salt1: if end > start { salt1 } else { 0 },
            wal_salt2: if end > start { salt2 } else { 0 },
            ..Default::default()
        };
        let lock = ltx::lock_pgno(page_size);
        let lerr = |e| Error::Ltx { path: self.path.clone(), source: e };
        let mut enc = ltx::Encoder::new(Vec::new(), &lh, self.settings.page_encoding).map_err(lerr)?;
        let mut buf = vec![0u8; page_size as usize];
        let prev_commit = self.pos.as_ref().map(|p| p.commit).unwrap_or(0);
        // With a page table of the replica at `pos`, a sync after a gap compares every
        // page with it and ships only those that differ (page 1 too when the size
        // changed: a file must carry at least one page). The table follows every file.
        let diff = reason.is_some() && base.as_ref().is_some_and(|t| t.pos.page_size == page_size);
        let mut crcs = match base {
            Some(t) if diff || reason.is_none() => Some(t.crcs),
            _ if reason.is_some() && commit >= pages::MIN_PAGES => Some(Vec::with_capacity(commit as usize)),
            _ => None,
        };
        let mut pages = 0u32;
        let pgnos: Box<dyn Iterator<Item = u32>> = if reason.is_some() {
            Box::new(1..=commit)
        } else {
            // Changed pages plus growth pages that never went through the WAL.
            let growth = (prev_commit + 1..=commit).filter(|p| !seg.pages.contains_key(p));
            let mut v: Vec<u32> = seg.pages.keys().copied().filter(|&p| p <= commit).chain(growth).collect();
            v.sort_unstable();
            Box::new(v.into_iter())
        };
        for pgno in pgnos {
            if pgno == lock {
                continue;
            }
            match (seg.pages.get(&pgno), &wal_file) {
                (Some(&at), Some(wf)) => wf.read_exact_at(&mut buf, at).map_err(|e| self.err_io(e))?,
                _ => read_page(db, pgno, &mut buf).map_err(|e| self.err_io(e))?,
            }
            if let Some(c) = crcs.as_mut() {
                let (i, crc) = (pgno as usize - 1, PageTable::crc(&buf));
                let same = diff && c.get(i) == Some(&crc) && (pgno != 1 || commit == prev_commit);
                if c.len() <= i {
                    c.resize(i + 1, 0);
                }
                c[i] = crc;
                if same {
                    continue;
                }
            }
            enc.encode_page(pgno, &buf).map_err(lerr)?;
            pages += 1;
        }
        if let Some(c) = crcs.as_mut() {
            c.truncate(commit as usize);
        }
        let shipped = !diff || pages > 0;
        let (bytes, _) = enc.finish().map_err(lerr)?;
        // The frames we read must not have been overwritten by a WAL restart while we
        // read them: the first frame of the range is checked again.
        if let (Some(wf), Some(h)) = (&wal_file, &header)
            && end > start
        {
            let first_then = wal::read_frame_header(wf, start).ok().flatten();
            let h_now = wal::Header::read(wf).ok().flatten();
            if h_now.map(|x| (x.salt1, x.salt2)) != Some((h.salt1, h.salt2))
                || first_then.map(|f| (f.salt1, f.salt2)) != Some((h.salt1, h.salt2))
            {
                self.continuous = false;
                return Err(self.err_io(std::io::Error::other("wal restarted while it was being read; retrying")));
            }
        }
        let cursor = seg.end.unwrap_or(match (&from, &header) {
            (Some(c), _) => *c,
            (None, Some(h)) => wal::Cursor::start(h),
            (None, None) => wal::Cursor { offset: 0, checksum: (0, 0) },
        });
        let pos = Position {
            txid: if shipped { txid } else { self.pos.as_ref().map_or(txid, |p| p.txid) },
            salt1,
            salt2,
            offset: cursor.offset,
            checksum: cursor.checksum,
            page_size,
            commit,
            dev,
            ino,
        };
        self.table = crcs
            .filter(|_| commit >= pages::MIN_PAGES)
            .map(|crcs| Box::new(PageTable { pos: pos.clone(), crcs, dirty: true }));
        self.pos = Some(pos);
        self.continuous = true;
        self.force_snapshot = None;
        let why = reason.as_ref().map(ToString::to_string).unwrap_or_default();
        if !shipped {
            tracing::info!(db = %self.path.display(), commit, reason = %why, "after a gap the database matches the replica page for page: nothing to ship");
            return Ok((None, false));
        }
        self.shipped_since_checkpoint = true;
        let snapshot = if diff {
            tracing::info!(db = %self.path.display(), txid, pages, commit, reason = %why, "after a gap: shipping only the pages that differ from the replica");
            None
        } else {
            reason
        };
        Ok((
            Some(Pending { txid, bytes, timestamp_ms, snapshot, pages, transactions: seg.transactions }),
            stop == wal::Stop::Budget,
        ))
    }

    /// Decides between nothing to do, an incremental file from a cursor, or a snapshot.
    fn plan(&self, wal_file: Option<&File>, header: Option<&wal::Header>, txid: TxId) -> Result<Plan> {
        if let Some(r) = &self.force_snapshot {
            return Ok(Plan::Snapshot(r.clone()));
        }
        let Some(pos) = &self.pos else {
            return Ok(Plan::Snapshot(if txid == 1 { SnapshotReason::FirstSync } else { SnapshotReason::NoPosition }));
        };
        let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("plan runs hot"));
        if (pos.dev, pos.ino) != (hot.dev, hot.ino) {
            return Ok(Plan::Snapshot(SnapshotReason::FileReplaced));
        }
        if pos.page_size != hot.page_size {
            return Ok(Plan::Snapshot(SnapshotReason::PageSizeChanged));
        }
        let (Some(f), Some(h)) = (wal_file, header) else {
            // No WAL now. With our read transaction held since `pos`, nothing could be
            // checkpointed into the database file, so nothing changed.
            let unchanged = self.continuous && pos.offset == 0;
            return Ok(if unchanged { Plan::Nothing } else { Plan::Snapshot(SnapshotReason::WalMissing) });
        };
        let wal_err = |e| Error::Wal { path: self.wal_path.clone(), source: e };
        if pos.offset == 0 {
            // We last saw no WAL; a WAL appeared. Continuous: the database file was
            // frozen by our read lock, so the whole new log is the change.
            return Ok(if self.continuous {
                Plan::Incremental(wal::Cursor::start(h))
            } else {
                Plan::Snapshot(SnapshotReason::WalMissing)
            });
        }
        if (h.salt1, h.salt2) == (pos.salt1, pos.salt2) {
            if pos.offset == wal::HEADER_SIZE {
                return Ok(if pos.checksum == h.checksum {
                    Plan::Incremental(wal::Cursor::start(h))
                } else {
                    Plan::Snapshot(SnapshotReason::WalOverwritten)
                });
            }
            let last = wal::read_frame_header(f, pos.offset - h.frame_size()).map_err(wal_err)?;
            return Ok(match last {
                Some(fh) if (fh.salt1, fh.salt2) == (pos.salt1, pos.salt2) && fh.checksum == pos.checksum => {
                    Plan::Incremental(wal::Cursor { offset: pos.offset, checksum: pos.checksum })
                }
                _ => Plan::Snapshot(SnapshotReason::WalOverwritten),
            });
        }
        if h.salt1 != pos.salt1.wrapping_add(1) {
            return Ok(Plan::Snapshot(SnapshotReason::SaltReset));
        }
        if self.continuous {
            return Ok(Plan::Incremental(wal::Cursor::start(h)));
        }
        // After a gap: one restart. The old generation must not have grown past
        // `pos.offset` with a committed transaction, and the new generation must not
        // have reached `pos.offset` (else it may have overwritten such frames).
        let len = f.metadata().map_err(|e| Error::Io { path: self.wal_path.clone(), source: e })?.len();
        if len < pos.offset {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        let (new_gen, _) = wal::scan(f, h, wal::Cursor::start(h), u64::MAX).map_err(wal_err)?;
        let new_end = new_gen.end.map(|c| c.offset).unwrap_or(wal::HEADER_SIZE);
        // Frames of an open transaction may lie past the last commit, so compare with
        // the physical frames of the new generation, committed or not.
        if new_end >= pos.offset || frame_of(f, h, pos.offset)? {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        let old = wal::Header { salt1: pos.salt1, salt2: pos.salt2, ..*h };
        let (lost, _) = wal::scan(f, &old, wal::Cursor { offset: pos.offset, checksum: pos.checksum }, u64::MAX)
            .map_err(wal_err)?;
        if lost.transactions > 0 {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        Ok(Plan::Incremental(wal::Cursor::start(h)))
    }

    /// Runs a checkpoint when a threshold is reached. PASSIVE runs under a write
    /// barrier (a second connection in `BEGIN IMMEDIATE`) so no transaction can commit
    /// between our last read of the WAL and the checkpoint; whatever committed before
    /// the barrier is prepared first (returned for upload). TRUNCATE is only an
    /// emergency brake and is followed by a snapshot. RESTART is never used.
    fn checkpoint_if_needed(&mut self, txid: TxId, force: bool) -> Result<(Vec<Pending>, bool)> {
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
        let barrier = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.err_sql(e))?;
        barrier.busy_timeout(self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
        barrier.execute_batch("PRAGMA wal_autocheckpoint=0").map_err(|e| self.err_sql(e))?;
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
            begin_read(&hot.conn)?;
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
                begin_read(&hot.conn)?;
                r
            })();
            r.map_err(|e| self.err_sql(e))?;
            self.continuous = false;
            self.force_snapshot = Some(SnapshotReason::AfterTruncate);
        }
        Ok((ready, true))
    }
}

enum Plan {
    Nothing,
    Incremental(wal::Cursor),
    Snapshot(SnapshotReason),
}

/// Whether a frame with the header's salts sits at `offset` (part of that generation,
/// committed or not).
fn frame_of(f: &File, h: &wal::Header, offset: u64) -> Result<bool> {
    Ok(wal::read_frame_header(f, offset)
        .map_err(|e| Error::Wal { path: PathBuf::new(), source: e })?
        .is_some_and(|fh| (fh.salt1, fh.salt2) == (h.salt1, h.salt2)))
}

/// Starts a read transaction: `BEGIN` is lazy, the read makes SQLite take its read lock.
fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN")?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
}

/// Reads page `pgno` from the database file; bytes past the end read as zeros.
fn read_page(db: &File, pgno: u32, buf: &mut [u8]) -> std::io::Result<()> {
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

/// Asks SQLite to keep the `-wal` file when our connection is the last to close, so a
/// released tenant's WAL generation survives and the next attach can continue it.
pub(crate) fn persist_wal(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: `conn.handle()` is a valid open connection for the duration of the call,
    // "main" is NUL-terminated, and SQLITE_FCNTL_PERSIST_WAL reads and writes one int.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        );
    }
}

fn printable(b: &[u8]) -> String {
    b.iter()
        .map(|&c| if c.is_ascii_graphic() || c == b' ' { (c as char).to_string() } else { format!("\\x{c:02x}") })
        .collect()
}

/// Writes a file of local state atomically: `<path>.tmp` next to it, then a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// The position cache's file name: stable per (database path, replica).
fn state_file_name(db: &Path, replica: &Replica) -> String {
    let key = format!("{}\n{}", db.display(), replica.url());
    let stem = db.file_name().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let stem: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    format!("{stem}.{:016x}.pos.json", ltx::crc64(key.as_bytes()))
}

/// Runs one replicator in the foreground until `shutdown` resolves, then makes a final
/// sync (bounded by `shutdown_timeout`) and releases the database.
///
/// Changes to the `-wal` file (inotify) wake it: the first change after idle ships at
/// once, a continuously written database ships at most once per `sync_interval`. A
/// poll every `sync_interval` catches what the kernel did not report. Errors are
/// logged and retried with exponential backoff (1 s doubling to 60 s).
pub async fn run(
    db: &Path,
    replica: Replica,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
    shutdown_timeout: Duration,
) -> Result<()> {
    use tokio::time::Instant as TInstant;
    let wake = Arc::new(tokio::sync::Notify::new());
    let _watcher = watch_db(db, wake.clone());
    let interval = settings.sync_interval;
    let mut r = Replicator::new(db, replica, settings);
    let mut due = Some(TInstant::now());
    let mut last = TInstant::now() - interval;
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let at = due.unwrap_or(last + interval.max(Duration::from_millis(10)));
        tokio::select! {
            _ = &mut shutdown => break,
            _ = wake.notified() => {
                let earliest = (last + interval).max(TInstant::now());
                if due.is_none_or(|d| d > earliest) && backoff.is_zero() {
                    due = Some(earliest);
                }
            }
            _ = tokio::time::sleep_until(at) => {
                last = TInstant::now();
                due = None;
                match r.sync().await {
                    Ok(rep) => {
                        backoff = Duration::ZERO;
                        if rep.uploaded > 0 {
                            tracing::info!(db = %db.display(), txid = rep.txid.unwrap_or(0), files = rep.uploaded, bytes = rep.bytes, transactions = rep.transactions, "synced");
                        }
                    }
                    Err(e) => {
                        backoff = (backoff * 2).clamp(Duration::from_secs(1), Duration::from_secs(60));
                        tracing::error!(db = %db.display(), error = %e, retry_in = ?backoff, "sync failed");
                        due = Some(TInstant::now() + backoff);
                    }
                }
            }
        }
    }
    tracing::info!(db = %db.display(), "shutting down: final sync");
    match tokio::time::timeout(shutdown_timeout, r.shutdown()).await {
        Ok(Ok(rep)) => {
            tracing::info!(db = %db.display(), txid = ?r.remote_txid(), files = rep.uploaded, "final sync done");
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Io {
            path: db.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("final sync did not finish within {shutdown_timeout:?}"),
            ),
        }),
    }
}

/// Watches the database's directory and wakes `wake` on writes to the database or its
/// WAL. `None` (with a warning) when inotify is unavailable; polling still works.
fn watch_db(db: &Path, wake: Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let name = db.file_name()?.to_os_string();
    let mut wal_name = name.clone();
    wal_name.push("-wal");
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else {
            wake.notify_one();
            return;
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            return;
        }
        if ev.paths.is_empty() || ev.paths.iter().any(|p| p.file_name().is_some_and(|n| n == name || n == wal_name)) {
            wake.notify_one();
        }
    };
    match notify::recommended_watcher(handler).and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|_| w)) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on polling");
            None
        }
    }
}
