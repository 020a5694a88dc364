//! One database's replicator: WAL frames → one L0 LTX file per sync → storage.
//!
//! It owns a SQLite connection (autocheckpoint off, a long read transaction so nobody
//! can restart the WAL behind our back), reads committed frames straight from the
//! `-wal` file, and ships them as L0 files with TXIDs contiguous from 1. Whenever it
//! cannot prove that the frames it is about to read continue what it shipped last, it
//! ships a full-page file instead (a "snapshot L0"). It is the database's checkpointer.
//!
//! Read in this order: [`plan`] (the [`Position`] and the continuity argument),
//! `prepare` (scan → encode → verify one L0 file), `engine` (the connection, the write
//! barrier and checkpoints, the position cache), [`pages`] (the page table), and this
//! file, the async [`Replicator`] that uploads prepared files in TXID order. When to
//! sync is not decided here: the fleet's tenant task does that.
//!
//! It never writes to the tenant's database except through SQLite's own checkpoints,
//! never creates tables there, and never deletes anything from storage. The full
//! correctness argument is in `docs/architecture.md`.

mod checkpoint;
mod engine;
pub mod pages;
pub mod plan;
mod prepare;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use self::engine::Engine;
pub use self::plan::{Position, SnapshotReason};
use crate::ltx::{self, PageEncoding, TxId};
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
/// Files carrying more than this many bytes of pages are encoded while they upload
/// (bounded memory) instead of in memory first.
pub const STREAM_BYTES: u64 = 8 << 20;

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

/// Errors of one replicator. Each names the database; the cause is its source.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: not a SQLite database (header is \"{header}\")")]
    NotSqlite { path: PathBuf, header: String },
    #[error("{path}: database is in rollback-journal mode and converting it to WAL is disabled")]
    RollbackJournal { path: PathBuf },
    #[error("{path}: database file is missing")]
    Missing { path: PathBuf },
    #[error("{path}: sqlite")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}")]
    Wal {
        path: PathBuf,
        #[source]
        source: wal::Error,
    },
    #[error("{path}: encoding LTX")]
    Ltx {
        path: PathBuf,
        #[source]
        source: ltx::Error,
    },
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("replicator task failed: {0}")]
    Join(String),
}

type Result<T> = std::result::Result<T, Error>;

/// An L0 file prepared locally and waiting for upload.
#[derive(Debug)]
pub struct Pending {
    pub txid: TxId,
    pub bytes: Vec<u8>,
    pub timestamp_ms: i64,
    pub snapshot: Option<SnapshotReason>,
    pub carried: Carried,
}

/// What one L0 file carries, for the [`SyncReport`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Carried {
    /// Pages in the file.
    pub pages: u32,
    /// SQLite transactions.
    pub transactions: u64,
    /// WAL frames read for it.
    pub frames: u64,
}

/// What one call to [`Replicator::sync`] did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// L0 files uploaded.
    pub uploaded: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// WAL frames read for the uploaded files: how much the application wrote (unlike
    /// their pages, it counts a page written by ten commits ten times).
    pub frames: u64,
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
    /// TXIDs of the uploaded files that hold every page of the database.
    pub full_pages: Vec<TxId>,
    /// Commits that landed while the sync ran were left for the next one (a writer
    /// outran it); the caller schedules it within its pacing.
    pub more: bool,
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
        let engine = Engine::new(db, &replica, settings);
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

    /// Learns the replica's newest TXID (one recursive LIST of the replica: a new
    /// tenant costs this one request before its first upload) and reconciles it with
    /// the local position cache.
    async fn recover(&mut self) -> Result<()> {
        let remote = self.replica.list_all().await?.iter().map(|f| f.max_txid).max().unwrap_or(0);
        self.remote_max = Some(remote);
        let pos = self.blocking(move |e| e.load_state(remote)).await?;
        self.uploaded_pos = pos;
        Ok(())
    }

    /// Ships what was committed when it began (more exactly, when its first file was
    /// planned): zero or more L0 files (more than one only when the WAL holds more than
    /// `max_sync_wal_bytes`), then checkpoints if a threshold is reached. Commits that
    /// land while it runs are left to the next sync
    /// (`SyncReport::more`), so a writer that outruns us is paced by the caller's
    /// `sync_interval` instead of being chased in one endless sync that competes with
    /// it for the CPU. Retrying after an error is always safe.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        self.sync_with(false, true).await
    }

    /// Opens the connection if it is closed, without shipping: the read transaction
    /// keeps what is not shipped yet in the WAL, and what the application wrote while
    /// we were closed is backfilled now rather than by its next auto-checkpoint.
    /// `Ok(false)`: an empty file, nothing opened.
    pub async fn open(&mut self) -> Result<bool> {
        self.blocking(|e| if e.hot.is_some() { Ok(true) } else { e.open() }).await?
    }

    /// Ships everything committed, checkpoints whatever was shipped since the last
    /// checkpoint (whatever the thresholds say), and releases the connection: how a
    /// tenant goes cold after `idle_after` without writes, leaving a small WAL behind.
    pub async fn idle(&mut self, park: bool) -> Result<SyncReport> {
        let r = self.sync_with(true, false).await;
        if park && r.is_ok() {
            self.blocking(|e| e.park()).await?;
        } else {
            self.release().await?;
        }
        r
    }

    /// Whether the connection is parked: released, but open with no transaction
    /// (`Engine::park`), until the next sync takes it up or [`Replicator::release`]
    /// closes it.
    pub fn is_parked(&self) -> bool {
        self.with_engine(|e| e.parked.is_some())
    }

    async fn sync_with(&mut self, force_checkpoint: bool, paced: bool) -> Result<SyncReport> {
        self.last_sync = Some(Instant::now());
        if self.remote_max.is_none() {
            self.recover().await?;
        }
        let mut report = SyncReport::default();
        // Upload what an earlier, failed sync prepared.
        self.flush(&mut report).await?;
        report.more = !self.catch_up(&mut report, paced).await?;
        if self.with_engine(|e| e.zero_mark.is_some() || e.unanchored) {
            self.blocking(|e| {
                e.anchor_after_open();
                e.reanchor()
            })
            .await??;
        }
        // Behind a writer: the checkpoint would find too much to copy under a barrier.
        if !report.more && self.pending.is_empty() && self.with_engine(|e| e.checkpoint_due(force_checkpoint)) {
            self.checkpoint(force_checkpoint, paced, &mut report).await?;
        }
        // A position that moved without an upload (after a gap, the database matched
        // the replica) is saved too, so the next restart starts from it.
        self.save_position().await?;
        Ok(report)
    }

    /// The TXID of the next file to prepare.
    fn next_txid(&self) -> TxId {
        self.remote_max.unwrap_or(0) + self.pending.len() as u64 + 1
    }

    /// Ships everything committed — or, `paced`, what the WAL held when its first file
    /// was planned (`Ok(false)`: commits that landed since were left for the next sync).
    /// Files up to `STREAM_BYTES` of pages are encoded in memory and uploaded, larger
    /// ones (a full-page file of a large database, a big transaction) while they upload.
    async fn catch_up(&mut self, report: &mut SyncReport, paced: bool) -> Result<bool> {
        let mut horizon = None;
        loop {
            let next = self.next_txid();
            // The WAL's end is looked up only when a file was cut by size (nothing to
            // look up on the usual sync, whose first file holds everything).
            let want = paced && horizon.is_none();
            let (job, more, end) = self
                .blocking(move |e| {
                    let (job, more) = e.plan_file(next, false)?;
                    let end = if want && more { e.wal_horizon() } else { None };
                    Ok::<_, Error>((job, more, end))
                })
                .await??;
            horizon = horizon.or(end);
            if let Some(job) = job {
                if job.raw_bytes() > STREAM_BYTES && self.pending.is_empty() {
                    self.stream(job, report).await?;
                } else {
                    let p = self.blocking(move |e| e.finish_in_memory(job)).await??;
                    self.pending.push_back(p);
                    self.flush(report).await?;
                }
            }
            if !more {
                return Ok(true);
            }
            if horizon.is_some_and(|h| self.with_engine(|e| e.past_horizon(h))) {
                return Ok(false);
            }
        }
    }

    /// Encodes `job` on a blocking thread straight into an upload: memory holds a few
    /// chunks, not the file. The position moves only once the upload completed.
    async fn stream(&mut self, job: prepare::Job, report: &mut SyncReport) -> Result<()> {
        let (txid, timestamp_ms) = (job.header.min_txid, job.header.timestamp_ms);
        let snapshot = job.snapshot.clone();
        let engine = self.engine.clone();
        let t = Instant::now();
        let produced = self
            .replica
            .upload_from(0, txid, txid, timestamp_ms, move |w| {
                let g = engine.lock().unwrap_or_else(|e| e.into_inner());
                let mut job = job;
                let (_, pages) = g.encode(&mut job, w)?;
                Ok::<_, Error>((job, pages))
            })
            .await?;
        let ((job, pages), size) = produced?;
        let carried = job.carried(pages);
        tracing::debug!(target: "litefleet::timeline", dur_us = t.elapsed().as_micros() as u64, bytes = size, "stream");
        self.blocking(move |e| e.commit(job)).await?;
        self.shipped(report, txid, size, snapshot.as_ref(), carried);
        self.save_position().await
    }

    /// Checkpoints while writers run; see `checkpoint.rs` for the steps and why they
    /// lose nothing. Files prepared on the way are uploaded between the steps.
    async fn checkpoint(&mut self, force: bool, paced: bool, report: &mut SyncReport) -> Result<()> {
        use self::checkpoint::{HAND_OFF_ROUNDS, QUIET_TAIL_FRAMES, Step};
        let mut left = None;
        for _ in 0..HAND_OFF_ROUNDS {
            let next = self.next_txid();
            let (step, backfill) = self.blocking(move |e| e.hand_off(next)).await??;
            match step {
                Step::Done(files) => {
                    self.pending.extend(files);
                    self.flush(report).await?;
                }
                Step::Busy => break,
                Step::Behind if paced => {
                    // Outrun since the catch-up: the next sync, within the pacing.
                    report.more = true;
                    return Ok(());
                }
                Step::Behind => {
                    self.catch_up(report, false).await?;
                    continue;
                }
            }
            report.checkpointed = true;
            if !self.catch_up(report, paced).await? {
                // Outrun: the log restarts at a later checkpoint.
                report.more = true;
                return Ok(());
            }
            let n = backfill.map_or(u64::MAX, |o| self.with_engine(|e| e.unbackfilled(&o)));
            left = Some(n);
            if n <= QUIET_TAIL_FRAMES || !self.pending.is_empty() {
                break;
            }
        }
        let Some(left) = left else { return Ok(()) };
        if !self.pending.is_empty() || !self.with_engine(|e| e.restart_now(left, force)) {
            // The application is writing: the log restarts at a later checkpoint.
            tracing::debug!(db = %self.with_engine(|e| e.path.display().to_string()), left, "log restart deferred: the application is writing");
            self.with_engine(|e| e.shipped_since_checkpoint = true);
            return Ok(());
        }
        let next = self.next_txid();
        match self.blocking(move |e| e.restart(next)).await?? {
            Step::Done(files) => {
                self.pending.extend(files);
                self.flush(report).await?;
                if !force {
                    self.reanchor_soon().await?;
                }
            }
            Step::Busy | Step::Behind => self.with_engine(|e| e.shipped_since_checkpoint = true),
        }
        if self.with_engine(|e| e.force_snapshot.is_some()) {
            // A TRUNCATE checkpoint: take the checkpoint-boundary snapshot now.
            self.catch_up(report, false).await?;
        }
        Ok(())
    }

    /// After step 4 of a checkpoint the application is probably writing: wait a few
    /// milliseconds for its first commit in the restarted log, and move our read mark
    /// off 0 then (see `checkpoint.rs`). If it does not come, the next sync does it.
    async fn reanchor_soon(&mut self) -> Result<()> {
        for _ in 0..checkpoint::REANCHOR_POLLS {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.blocking(|e| e.reanchor()).await?? {
                break;
            }
        }
        Ok(())
    }

    /// Uploads pending files in TXID order; stops at the first error (kept for retry).
    async fn flush(&mut self, report: &mut SyncReport) -> Result<()> {
        while let Some(p) = self.pending.front() {
            let t = Instant::now();
            // The stored size: what listings say, and what readers of the file expect.
            let size = self.replica.put(0, p.txid, p.txid, p.bytes.clone(), p.timestamp_ms).await?;
            tracing::debug!(target: "litefleet::timeline", dur_us = t.elapsed().as_micros() as u64, bytes = size, "upload");
            let p = self.pending.pop_front().unwrap_or_else(|| unreachable!("front exists"));
            self.shipped(report, p.txid, size, p.snapshot.as_ref(), p.carried);
        }
        self.save_position().await
    }

    /// Records one uploaded L0 file.
    fn shipped(
        &mut self,
        report: &mut SyncReport,
        txid: TxId,
        size: u64,
        snapshot: Option<&SnapshotReason>,
        carried: Carried,
    ) {
        let Carried { pages, transactions, frames } = carried;
        report.uploaded += 1;
        report.bytes += size;
        report.frames += frames;
        report.txid = Some(txid);
        report.files.push(storage::FileInfo {
            level: 0,
            min_txid: txid,
            max_txid: txid,
            size,
            created: Some(std::time::SystemTime::now()),
        });
        report.transactions += transactions;
        if let Some(r) = snapshot {
            report.snapshots.push(r.to_string());
            report.full_pages.push(txid);
            tracing::info!(db = %self.with_engine(|e| e.path.display().to_string()), txid, pages, reason = %r, "shipped full-page L0");
        }
        self.remote_max = Some(txid);
    }

    /// Once everything prepared is uploaded, the prepared position is durable: saved to
    /// the position cache.
    async fn save_position(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            return Ok(());
        }
        let pos = self.with_engine(|e| e.pos.clone());
        if pos != self.uploaded_pos {
            self.uploaded_pos = pos.clone();
            self.blocking(move |e| e.save_state(pos.as_ref())).await?;
        }
        Ok(())
    }

    /// Makes the next sync ship a full-page file (every page, whatever the page table
    /// says): the lifecycle turns it into a snapshot that repairs a damaged replica.
    pub fn request_snapshot(&mut self) {
        self.with_engine(|e| {
            if e.force_snapshot.is_none() {
                e.force_snapshot = Some(SnapshotReason::ReplicaRepair);
            }
        });
    }

    /// Forgets what it knew of the replica and drops what it prepared: another host
    /// wrote there (or may have), so the next sync lists it again, and continues from
    /// its own position only if the replica still ends exactly there — else it ships a
    /// full-page file after the newest TXID it finds.
    pub async fn forget_replica(&mut self) -> Result<()> {
        self.pending.clear();
        self.remote_max = None;
        self.uploaded_pos = None;
        self.release().await
    }

    /// Releases the SQLite connection and file descriptors (an idle tenant keeps only
    /// its position in memory). The next sync re-attaches and proves continuity or
    /// ships a snapshot.
    pub async fn release(&mut self) -> Result<()> {
        self.blocking(|e| e.close()).await
    }

    /// Final sync, then release. Used at shutdown and when a tenant is unregistered.
    pub async fn shutdown(&mut self) -> Result<SyncReport> {
        let r = if self.with_engine(|e| e.path.exists()) {
            self.sync_with(false, false).await
        } else {
            Ok(SyncReport::default())
        };
        self.release().await?;
        r
    }
}
