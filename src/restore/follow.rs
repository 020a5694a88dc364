//! Follow: a restored copy that keeps applying the replica's new files as they appear
//! (`litefleet restore -f`, and every tenant of `litefleet standby`).
//!
//! The copy is an ordinary SQLite database in WAL mode that readers may open while it
//! follows. New files are applied *through SQLite*: their pages are written with the
//! `sqlite_dbpage` virtual table and the database is shrunk to the last file's size,
//! all in one write transaction per batch, so a reader sees the copy either before or
//! after a batch, never between, and a `kill -9` at any moment leaves what SQLite's own
//! journal guarantees: the last committed batch.
//!
//! Which TXID the copy is at lives beside it, in `<out>-follow` (JSON, replaced
//! atomically). It is written *before* a batch with the files about to be applied
//! (`applying`) and again after the commit. On a restart an `applying` record means
//! the commit may or may not have happened; the same files are applied again, which is
//! safe either way: a file holding the newest version of every page it touches, applied
//! to any state between its first TXID − 1 and its last, gives the state at its last
//! TXID (the same argument that lets Litestream's restore plan mix levels).
//!
//! What is applied is chosen as a restore plan continues: from the copy's TXID, the
//! file of any level below the snapshots that is contiguous with it and reaches the
//! highest TXID, repeatedly; when retention has removed the files the copy needs, the
//! newest snapshot (it holds every page). A replica that went *behind* the copy (it was
//! reset), a page size that changed, or a gap nothing bridges is an error that says so;
//! the standby restores such a tenant again.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Error as RestoreError, Job, Progress, Target};
use crate::ltx::{self, TxId};
use crate::storage::{FileInfo, Replica};

/// Files above this size are spooled to a temporary file instead of memory.
const IN_MEMORY: u64 = 16 << 20;
/// Bytes of LTX files applied in one transaction, at most (a larger file is applied
/// alone).
const BATCH_BYTES: u64 = 64 << 20;
/// Ranged reads of a spooled file.
const CHUNK: u64 = 8 << 20;
/// How long the applying connection waits for a lock (a reader never blocks a WAL
/// writer; another writer on the copy would).
const BUSY: Duration = Duration::from_secs(10);

/// Errors of a follow; each names the copy or the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    #[error("{path}: {what}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unreadable follow state: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("{0}: exists and is not a follow copy (no -follow state beside it); use --force to replace it")]
    NotACopy(PathBuf),
    #[error("{path}: follows {recorded}, not {given}; use --force to restore it from {given}")]
    OtherReplica { path: PathBuf, recorded: String, given: String },
    #[error("{replica}: the replica is behind the copy (newest TXID {newest:016x}, copy at {copy:016x}): it was reset")]
    Behind { replica: String, newest: TxId, copy: TxId },
    #[error("{replica}: no file continues the copy at TXID {copy:016x} (next file starts at {next:016x})")]
    Gap { replica: String, copy: TxId, next: TxId },
    #[error("{0}: the copy is gone")]
    Missing(PathBuf),
    #[error("{file}: page size {got} differs from the copy's {want}")]
    PageSize { file: String, want: u32, got: u32 },
    #[error("{0}: held by another process (a follower or standby already runs here)")]
    Locked(PathBuf),
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Whether restoring the copy again from scratch is the remedy (the replica was
    /// reset, rewritten with another page size, or lost the files the copy needs; the
    /// copy was deleted).
    pub fn needs_restore(&self) -> bool {
        matches!(self, Error::Behind { .. } | Error::Gap { .. } | Error::PageSize { .. } | Error::Missing(_))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// The `-follow` record beside a copy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct State {
    /// The replica followed (its URL).
    replica: String,
    /// The TXID the copy is at (when `applying` is empty).
    txid: TxId,
    /// The LTX header time of the newest file applied (the primary's commit time).
    timestamp_ms: i64,
    /// A restore from scratch is under way: the copy is not usable.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    restoring: bool,
    /// Files being applied in one transaction that may or may not have committed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    applying: Vec<Planned>,
    /// Bytes 24..28 and 92..100 of the primary's page 1 at `txid`, in hex (see
    /// [`settle`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stamp: Option<String>,
}

/// A file of a batch, as the state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Planned {
    level: u32,
    min: TxId,
    max: TxId,
    size: u64,
}

impl Planned {
    fn of(f: &FileInfo) -> Planned {
        Planned { level: f.level, min: f.min_txid, max: f.max_txid, size: f.size }
    }

    fn file(&self) -> FileInfo {
        FileInfo { level: self.level, min_txid: self.min, max_txid: self.max, size: self.size, created: None }
    }
}

/// What one [`Follower::catch_up`] applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Advance {
    /// LTX files applied (0: the copy was current).
    pub files: usize,
    /// Pages written.
    pub pages: u64,
    /// Bytes downloaded.
    pub bytes: u64,
}

/// A follow copy of one replica.
#[derive(Debug)]
pub struct Follower {
    replica: Replica,
    out: PathBuf,
    state: State,
}

/// Takes the lock file `path` (created if needed) for as long as the returned file is
/// open, so two followers never write one copy: a second one gets [`Error::Locked`].
pub fn lock(path: &Path) -> Result<std::fs::File> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    crate::durable::create_dirs(crate::durable::parent_dir(path)).map_err(io)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map_err(io)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// `<out>-follow`.
pub fn state_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push("-follow");
    PathBuf::from(s)
}

impl Follower {
    /// Opens the follow copy of `replica` at `out`: resumes one that exists (finishing a
    /// batch a crash interrupted), or restores it first. An existing `out` that is not
    /// a follow copy of this replica is refused unless `force`. `files`, a listing of
    /// the replica made already, spares a listing.
    pub async fn start(
        replica: Replica,
        out: &Path,
        files: Option<Vec<FileInfo>>,
        force: bool,
        cancel: &CancellationToken,
    ) -> Result<Follower> {
        let path = state_path(out);
        let url = replica.url();
        let recorded = match std::fs::read(&path) {
            Ok(b) => Some(
                serde_json::from_slice::<State>(&b)
                    .map_err(|e| Error::State { path: path.clone(), reason: e.to_string() })?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Io { path, source }),
        };
        let mut f =
            Follower { replica, out: out.to_path_buf(), state: State { replica: url.clone(), ..State::default() } };
        match recorded {
            Some(s) if s.replica != url && !force => {
                return Err(Error::OtherReplica { path: out.to_path_buf(), recorded: s.replica, given: url });
            }
            Some(s) if s.replica == url && !s.restoring && out.exists() => {
                f.state = s;
                if !f.state.applying.is_empty() {
                    f.finish_interrupted(cancel).await?;
                } else if let Some(stamp) = f.state.stamp.as_deref().and_then(unhex) {
                    let out = f.out.clone();
                    tokio::task::spawn_blocking(move || settle(&open(&out)?, &out, &stamp))
                        .await
                        .map_err(|e| Error::Io { path: f.out.clone(), source: std::io::Error::other(e) })??;
                }
            }
            None if out.exists() && !force => return Err(Error::NotACopy(out.to_path_buf())),
            _ => f.restore(files, cancel).await?,
        }
        Ok(f)
    }

    /// The TXID the copy is at.
    pub fn txid(&self) -> TxId {
        self.state.txid
    }

    /// The LTX header time (ms since the epoch) of the newest file applied.
    pub fn timestamp_ms(&self) -> i64 {
        self.state.timestamp_ms
    }

    pub fn out(&self) -> &Path {
        &self.out
    }

    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Restores the copy from scratch (over whatever is at `out`), then records it.
    pub async fn restore(&mut self, files: Option<Vec<FileInfo>>, cancel: &CancellationToken) -> Result<()> {
        self.state = State { replica: self.replica.url(), restoring: true, ..State::default() };
        self.save()?;
        let plan = match files {
            Some(files) => Some(super::plan_from(&self.replica, files, &Target::default()).await?),
            None => None,
        };
        let job = Job { force: true, plan, ..Job::new(self.replica.clone(), Target::default(), &self.out) };
        let summary = job.run(&Arc::new(Progress::default()), cancel).await?;
        let stamp = read_stamp(&self.out).map_err(|source| Error::Io { path: self.out.clone(), source })?;
        self.state = State {
            replica: self.replica.url(),
            txid: summary.txid,
            timestamp_ms: summary.timestamp_ms,
            stamp: Some(hex(&stamp)),
            ..State::default()
        };
        self.save()
    }

    /// Lists the replica and applies what is new ([`Follower::catch_up`]).
    pub async fn poll(&mut self, cancel: &CancellationToken) -> Result<Advance> {
        let files = self.replica.list_all().await?;
        self.catch_up(&files, cancel).await
    }

    /// Applies every file of `files` (a listing of the replica) that continues the copy,
    /// in batches of one transaction each.
    pub async fn catch_up(&mut self, files: &[FileInfo], cancel: &CancellationToken) -> Result<Advance> {
        let plan = self.plan(files)?;
        let mut done = Advance::default();
        let mut rest = plan.as_slice();
        while !rest.is_empty() {
            let mut n = 1;
            let mut bytes = rest[0].size;
            while n < rest.len() && bytes + rest[n].size <= BATCH_BYTES {
                bytes += rest[n].size;
                n += 1;
            }
            let a = self.apply(&rest[..n], cancel).await?;
            done.files += a.files;
            done.pages += a.pages;
            done.bytes += a.bytes;
            rest = &rest[n..];
        }
        Ok(done)
    }

    /// The files that take the copy from its TXID to the newest one `files` reach.
    fn plan(&self, files: &[FileInfo]) -> Result<Vec<FileInfo>> {
        let usable: Vec<&FileInfo> = files.iter().filter(|f| !f.is_torn()).collect();
        let newest = usable.iter().map(|f| f.max_txid).max().unwrap_or(0);
        let mut cur = self.state.txid;
        if newest < cur {
            return Err(Error::Behind { replica: self.replica.url(), newest, copy: cur });
        }
        let mut plan = Vec::new();
        loop {
            let below = usable
                .iter()
                .filter(|f| f.level < ltx::SNAPSHOT_LEVEL && ltx::is_contiguous(cur, f.min_txid, f.max_txid))
                .max_by(|a, b| {
                    a.max_txid.cmp(&b.max_txid).then(b.min_txid.cmp(&a.min_txid)).then(a.level.cmp(&b.level))
                });
            let next = below.or_else(|| {
                usable
                    .iter()
                    .filter(|f| f.level == ltx::SNAPSHOT_LEVEL && f.min_txid == 1 && f.max_txid > cur)
                    .max_by_key(|f| f.max_txid)
            });
            match next {
                Some(f) => {
                    cur = f.max_txid;
                    plan.push((*f).clone());
                }
                None => break,
            }
        }
        if cur < newest {
            let next = usable.iter().filter(|f| f.max_txid > cur).map(|f| f.min_txid).min().unwrap_or(newest);
            return Err(Error::Gap { replica: self.replica.url(), copy: cur, next });
        }
        Ok(plan)
    }

    /// Re-applies the batch a crash interrupted (see the module doc); if its files are
    /// gone (compacted away meanwhile), restores the copy from scratch.
    async fn finish_interrupted(&mut self, cancel: &CancellationToken) -> Result<()> {
        let batch: Vec<FileInfo> = self.state.applying.iter().map(Planned::file).collect();
        tracing::info!(copy = %self.out.display(), files = batch.len(), "finishing a follow batch interrupted by a crash");
        match self.apply(&batch, cancel).await {
            Err(Error::Storage(e)) if e.is_not_found() => {
                tracing::warn!(copy = %self.out.display(), "the interrupted batch's files are gone: restoring the copy again");
                self.restore(None, cancel).await
            }
            r => r.map(|_| ()),
        }
    }

    /// Downloads `batch`, records it as `applying`, applies it in one transaction, and
    /// records the new TXID.
    async fn apply(&mut self, batch: &[FileInfo], cancel: &CancellationToken) -> Result<Advance> {
        if !self.out.exists() {
            return Err(Error::Missing(self.out.clone()));
        }
        let mut sources = Vec::with_capacity(batch.len());
        let mut bytes = 0;
        for f in batch {
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let s = self.download(f).await?;
            bytes += s.len;
            sources.push(s);
        }
        self.state.applying = batch.iter().map(Planned::of).collect();
        self.save()?;
        let (out, names) = (self.out.clone(), batch.iter().map(|f| self.replica.describe_file(f)).collect());
        let files = batch.to_vec();
        let stamp = self.state.stamp.as_deref().and_then(unhex);
        let applied = tokio::task::spawn_blocking(move || apply_blocking(&out, &files, sources, names, stamp))
            .await
            .map_err(|e| Error::Io { path: self.out.clone(), source: std::io::Error::other(e) })??;
        self.state.applying.clear();
        self.state.txid = applied.txid;
        self.state.timestamp_ms = applied.timestamp_ms;
        self.state.stamp = Some(hex(&applied.stamp));
        self.save()?;
        Ok(Advance { files: batch.len(), pages: applied.pages, bytes })
    }

    /// One file of a batch, whole in memory or spooled to `<out>-follow-<n>.ltx`.
    async fn download(&self, f: &FileInfo) -> Result<Source> {
        if f.size <= IN_MEMORY {
            let b = self.replica.read(f).await?;
            return Ok(Source { len: b.len() as u64, body: Body::Memory(b.to_vec()) });
        }
        let spool = crate::durable::unique_temp_path(&state_path(&self.out));
        let io = |source| Error::Io { path: spool.clone(), source };
        let mut file = std::fs::File::create(&spool).map_err(io)?;
        let guard = Spool(spool.clone());
        let mut at = 0;
        while at < f.size {
            let end = (at + CHUNK).min(f.size);
            let b = self.replica.read_range(f, at..end).await?;
            std::io::Write::write_all(&mut file, &b.to_vec()).map_err(io)?;
            at = end;
        }
        Ok(Source { len: f.size, body: Body::Spooled(guard) })
    }

    /// Writes the state durably.
    fn save(&self) -> Result<()> {
        let path = state_path(&self.out);
        let json = serde_json::to_vec_pretty(&self.state)
            .map_err(|e| Error::State { path: path.clone(), reason: e.to_string() })?;
        crate::durable::write(&path, &json).map_err(|source| Error::Io { path, source })
    }
}

/// A downloaded file.
struct Source {
    len: u64,
    body: Body,
}

enum Body {
    Memory(Vec<u8>),
    Spooled(Spool),
}

/// A spooled download, removed when dropped.
struct Spool(PathBuf);

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Source {
    fn reader(&self) -> std::io::Result<Box<dyn Read + '_>> {
        Ok(match &self.body {
            Body::Memory(b) => Box::new(b.as_slice()),
            Body::Spooled(s) => Box::new(std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&s.0)?)),
        })
    }
}

struct Applied {
    txid: TxId,
    timestamp_ms: i64,
    pages: u64,
    /// The primary's stamp on page 1 after the batch.
    stamp: Stamp,
}

/// Bytes 24..28 (the file change counter) and 92..100 (the counter the version number
/// is valid for, and SQLite's version number) of page 1. SQLite writes its own values
/// there whenever it writes page 1, so a copy applied through SQLite differs from the
/// primary in these 12 bytes only; [`settle`] puts the primary's back.
type Stamp = [u8; 12];

fn stamp_of(page1: &[u8]) -> Stamp {
    let mut s = [0u8; 12];
    s[..4].copy_from_slice(&page1[24..28]);
    s[4..].copy_from_slice(&page1[92..100]);
    s
}

fn read_stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; 100];
    std::fs::File::open(path)?.read_exact_at(&mut head, 0)?;
    Ok(stamp_of(&head))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Stamp> {
    let mut out = [0u8; 12];
    if s.len() != 24 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Opens the copy for applying (read-write, never created).
fn open(out: &Path) -> Result<rusqlite::Connection> {
    let sql = |source| Error::Sqlite { path: out.to_path_buf(), what: "open", source };
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(out, flags).map_err(sql)?;
    conn.busy_timeout(BUSY).map_err(sql)?;
    Ok(conn)
}

/// Checkpoints the copy's WAL (PASSIVE: readers are never waited for) and, when every
/// frame is in the database file, writes the primary's `stamp` over SQLite's own in
/// page 1 of the file, so the copy is byte-identical to the primary's database at the
/// same TXID. Done after every batch and on resume; a reader that keeps the checkpoint
/// from finishing only delays it. Readers never look at these bytes in WAL mode.
fn settle(conn: &rusqlite::Connection, out: &Path, stamp: &Stamp) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .map_err(|source| Error::Sqlite { path: out.to_path_buf(), what: "checkpoint", source })?;
    if busy != 0 || log != done {
        return Ok(());
    }
    let io = |source| Error::Io { path: out.to_path_buf(), source };
    if read_stamp(out).map_err(io)? == *stamp {
        return Ok(());
    }
    let f = std::fs::OpenOptions::new().write(true).open(out).map_err(io)?;
    f.write_all_at(&stamp[..4], 24).map_err(io)?;
    f.write_all_at(&stamp[4..], 92).map_err(io)?;
    f.sync_data().map_err(io)
}

/// Applies the files in one write transaction through `sqlite_dbpage`; commits only
/// when every file decoded and verified (checksums included).
fn apply_blocking(
    out: &Path,
    files: &[FileInfo],
    sources: Vec<Source>,
    names: Vec<String>,
    stamp: Option<Stamp>,
) -> Result<Applied> {
    let sql = |what| move |source| Error::Sqlite { path: out.to_path_buf(), what, source };
    let conn = open(out)?;
    let page_size: u32 = conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(sql("page_size"))?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(sql("begin"))?;
    let result = (|| {
        let mut write =
            conn.prepare("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, ?2)").map_err(sql("prepare"))?;
        let mut done = Applied { txid: 0, timestamp_ms: 0, pages: 0, stamp: [0; 12] };
        let mut page1 = None;
        let mut commit = 0;
        let mut buf = vec![0u8; page_size as usize];
        for ((f, src), name) in files.iter().zip(&sources).zip(&names) {
            let bad = |source| Error::Restore(RestoreError::BadFile { file: name.clone(), source });
            let reader = src.reader().map_err(|e| Error::Io { path: PathBuf::from(name), source: e })?;
            let mut dec = ltx::Decoder::new(reader).map_err(bad)?;
            let h = dec.header().clone();
            if (h.min_txid, h.max_txid) != (f.min_txid, f.max_txid) {
                return Err(Error::Restore(RestoreError::Inconsistent {
                    file: name.clone(),
                    reason: format!("header TXIDs {:016x}-{:016x} do not match the file name", h.min_txid, h.max_txid),
                }));
            }
            if h.page_size != page_size {
                return Err(Error::PageSize { file: name.clone(), want: page_size, got: h.page_size });
            }
            while let Some(pgno) = dec.decode_page(&mut buf).map_err(bad)? {
                write.execute(rusqlite::params![pgno, &buf]).map_err(sql("write page"))?;
                if pgno == 1 {
                    page1 = Some(stamp_of(&buf));
                }
                done.pages += 1;
            }
            dec.finish().map_err(bad)?;
            done.txid = h.max_txid;
            done.timestamp_ms = h.timestamp_ms;
            commit = h.commit;
        }
        let pages: u32 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).map_err(sql("page_count"))?;
        if commit > 0 && pages > commit {
            // Shrinks the database to `commit` pages (must be the transaction's last write).
            conn.execute("INSERT INTO sqlite_dbpage(pgno, data) VALUES (?1, NULL)", [commit + 1])
                .map_err(sql("truncate"))?;
        }
        // Page 1 untouched by the batch: the stamp is what it was.
        match page1.or(stamp) {
            Some(s) => done.stamp = s,
            None => done.stamp = read_stamp(out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?,
        }
        Ok(done)
    })();
    match result {
        Ok(done) => {
            conn.execute_batch("COMMIT").map_err(sql("commit"))?;
            settle(&conn, out, &done.stamp)?;
            conn.close().map_err(|(_, e)| sql("close")(e))?;
            Ok(done)
        }
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}
