//! Restore: from a replica (ours or Litestream's) to a database file; and
//! [`validate`], which proves a live tenant's replica restores to what it holds.
//!
//! The plan is Litestream's: the newest level-9 snapshot within the bound, then,
//! repeatedly across levels, the file contiguous with what the plan holds that reaches
//! the highest TXID. Files are streamed in order (ranged reads of 8 MiB, a few ahead
//! of the decoder, so no file is held whole in memory), verified (checksums, TXID
//! continuity, page size), and applied to `<out>.tmp` (runs of consecutive pages in
//! one write), which is truncated to the final commit, fsynced, checked with SQLite if
//! asked, renamed over `<out>`, and the directory is fsynced ([`crate::durable`]). Any
//! failure removes the temporary file: no partial output.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub mod validate;

use crate::durable;
use crate::ltx::{self, TxId};
use crate::storage::catalog::chain;
use crate::storage::{FileInfo, Replica};

/// Errors of a restore; each names the file or replica at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no backups found in {0}")]
    NoBackups(String),
    #[error("{replica}: the backup chain does not start at TXID 1 (first file starts at {first:016x})")]
    NoStart { replica: String, first: TxId },
    #[error("{replica}: gap in the backup chain after TXID {after:016x} (next file starts at {next:016x})")]
    Gap { replica: String, after: TxId, next: TxId },
    #[error("{replica}: TXID {want:016x} is not in the backups (latest reachable is {got:016x})")]
    Unreachable { replica: String, want: TxId, got: TxId },
    #[error("{replica}: no backup at or before {when}")]
    TooEarly { replica: String, when: String },
    #[error(
        "{replica}: the backup chain breaks after TXID {after:016x} at torn file(s) {} (shorter than any LTX file: an interrupted upload); restores up to TXID {after:016x} still work",
        torn.join(", ")
    )]
    Torn { replica: String, after: TxId, torn: Vec<String> },
    #[error("{file}")]
    BadFile {
        file: String,
        #[source]
        source: ltx::Error,
    },
    #[error("{file}: {reason}")]
    Inconsistent { file: String, reason: String },
    #[error("{0}: output exists (use --force to overwrite)")]
    OutputExists(PathBuf),
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: integrity check failed: {detail}")]
    Integrity { path: PathBuf, detail: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// How thoroughly to check the restored database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum IntegrityCheck {
    #[default]
    None,
    Quick,
    Full,
}

/// What to restore.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Restore up to and including this TXID.
    pub txid: Option<TxId>,
    /// Restore the state as of this time (files created strictly before it).
    pub timestamp: Option<SystemTime>,
}

/// A file of the plan, with its header time when known.
#[derive(Clone, Debug)]
pub struct Step {
    pub file: FileInfo,
    pub timestamp_ms: Option<i64>,
}

/// Options of [`restore`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub target: Target,
    pub integrity: IntegrityCheck,
    pub force: bool,
    /// Print progress on stderr when it is a terminal.
    pub progress: bool,
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub txid: TxId,
    pub files: usize,
    pub pages: u64,
    pub bytes_downloaded: u64,
    pub elapsed: std::time::Duration,
    pub timestamp_ms: i64,
}

/// Computes the restore plan (see the module doc). Lists every level once; with a
/// timestamp bound it also reads each candidate's header for its time.
pub async fn plan(replica: &Replica, target: &Target) -> Result<Vec<Step>> {
    let mut files = replica.list_all().await?;
    let url = replica.url();
    if files.is_empty() {
        return Err(Error::NoBackups(url));
    }
    let mut times: std::collections::HashMap<(u32, TxId, TxId), i64> = Default::default();
    if let Some(ts) = target.timestamp {
        let bound = ts.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let mut keep = Vec::new();
        for f in files {
            let head = replica.read_range(&f, 0..ltx::HEADER_SIZE as u64).await?;
            let h = ltx::Header::decode(&head.to_bytes())
                .map_err(|e| Error::BadFile { file: replica.describe_file(&f), source: e })?;
            if h.timestamp_ms < bound {
                times.insert((f.level, f.min_txid, f.max_txid), h.timestamp_ms);
                keep.push(f);
            }
        }
        files = keep;
        if files.is_empty() {
            return Err(Error::TooEarly { replica: url, when: humantime::format_rfc3339_millis(ts).to_string() });
        }
    }
    if let Some(t) = target.txid {
        files.retain(|f| f.max_txid <= t);
    }
    // Torn files (see `FileInfo::is_torn`) are never in a chain; name them when the
    // chain cannot reach past them.
    let torn_after = |after: TxId| {
        let torn: Vec<String> = files
            .iter()
            .filter(|f| f.is_torn() && f.max_txid > after)
            .map(|f| format!("{} ({} bytes)", replica.describe_file(f), f.size))
            .collect();
        (!torn.is_empty()).then(|| Error::Torn { replica: url.clone(), after, torn })
    };
    let chain = chain(&files);
    let cur: TxId = chain.last().map_or(0, |f| f.max_txid);
    if chain.first().is_none_or(|f| f.min_txid != 1) {
        let first = files.iter().filter(|f| !f.is_torn()).map(|f| f.min_txid).min().unwrap_or(0);
        return Err(torn_after(0).unwrap_or(Error::NoStart { replica: url, first }));
    }
    match target.txid {
        Some(t) if cur < t => {
            return Err(torn_after(cur).unwrap_or(Error::Unreachable { replica: url, want: t, got: cur }));
        }
        None if target.timestamp.is_none() => {
            if let Some(next) = files.iter().filter(|f| f.max_txid > cur).map(|f| f.min_txid).min() {
                return Err(torn_after(cur).unwrap_or(Error::Gap { replica: url, after: cur, next }));
            }
        }
        _ => {}
    }
    Ok(chain
        .into_iter()
        .map(|f| {
            let timestamp_ms = times.get(&(f.level, f.min_txid, f.max_txid)).copied();
            Step { file: f, timestamp_ms }
        })
        .collect())
}

/// Human-readable plan lines, as `--dry-run` prints them.
pub fn describe_plan(replica: &Replica, steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            format!(
                "L{} {:016x}-{:016x} {} bytes {}",
                s.file.level,
                s.file.min_txid,
                s.file.max_txid,
                s.file.size,
                replica.describe_file(&s.file)
            )
        })
        .collect()
}

/// Restores `replica` to `out`.
pub async fn restore(replica: &Replica, out: &Path, opts: &Options) -> Result<Summary> {
    let started = Instant::now();
    if out.exists() && !opts.force {
        return Err(Error::OutputExists(out.to_path_buf()));
    }
    let steps = plan(replica, &opts.target).await?;
    let tmp = durable::temp_path(out);
    let result = apply(replica, &steps, &tmp, opts).await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = check_integrity(&tmp, opts.integrity) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if opts.force {
        let _ = std::fs::remove_file(crate::sqlite::wal_path(out));
        let _ = std::fs::remove_file(crate::sqlite::shm_path(out));
    }
    durable::replace(&tmp, out).map_err(|source| Error::Io { path: out.to_path_buf(), source })?;
    Ok(Summary { elapsed: started.elapsed(), ..summary })
}

/// Bytes per ranged read of an LTX file: files are streamed, never held whole.
const CHUNK: u64 = 8 << 20;
/// Chunks downloaded ahead of the decoder.
const AHEAD: usize = 4;
/// Consecutive pages gathered into one write.
const WRITE_BATCH: usize = 1 << 20;

/// What the download task hands the decoder: the bytes of the current file in order,
/// then `End` once per file.
enum Piece {
    Data(opendal::Buffer),
    End,
}

async fn apply(replica: &Replica, steps: &[Step], tmp: &Path, opts: &Options) -> Result<Summary> {
    // The download runs ahead (at most AHEAD chunks) while a blocking thread decodes
    // and writes; both stop when the other side goes away.
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    let download = tokio::spawn(download(replica.clone(), steps.iter().map(|s| s.file.clone()).collect(), tx));
    let show = opts.progress && std::io::stderr().is_terminal();
    let (r, st, out) = (replica.clone(), steps.to_vec(), tmp.to_path_buf());
    let result = tokio::task::spawn_blocking(move || apply_blocking(&r, &st, &out, show, rx)).await;
    download.abort();
    result.map_err(|e| Error::Inconsistent { file: replica.url(), reason: e.to_string() })?
}

async fn download(replica: Replica, files: Vec<FileInfo>, tx: tokio::sync::mpsc::Sender<Result<Piece>>) {
    for f in files {
        if f.size == 0 {
            // Size unknown from the listing: one read of the whole file.
            let r = replica.read(&f).await.map(Piece::Data).map_err(Error::from);
            let failed = r.is_err();
            if tx.send(r).await.is_err() || failed {
                return;
            }
        } else {
            let mut at = 0;
            while at < f.size {
                let end = (at + CHUNK).min(f.size);
                let r = replica.read_range(&f, at..end).await.map(Piece::Data).map_err(Error::from);
                let failed = r.is_err();
                if tx.send(r).await.is_err() || failed {
                    return;
                }
                at = end;
            }
        }
        if tx.send(Ok(Piece::End)).await.is_err() {
            return;
        }
    }
}

/// `Read` over one file's chunks as the download task delivers them.
struct Feed {
    rx: tokio::sync::mpsc::Receiver<Result<Piece>>,
    /// What is left of the current chunk.
    cur: opendal::Buffer,
    at_end: bool,
    bytes: u64,
    /// A download error, reported instead of the decoder's resulting I/O error.
    failed: Option<Error>,
}

impl Feed {
    /// Starts the next file.
    fn next_file(&mut self) {
        self.cur = opendal::Buffer::new();
        self.at_end = false;
    }

    /// Skips what the decoder did not read of the current file (nothing, for a
    /// well-formed file) up to its end.
    fn drain(&mut self) -> std::io::Result<()> {
        let mut sink = [0u8; 4096];
        while std::io::Read::read(self, &mut sink)? > 0 {}
        Ok(())
    }
}

impl std::io::Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.at_end {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Data(v))) => {
                    self.bytes += v.len() as u64;
                    self.cur = v;
                }
                Some(Ok(Piece::End)) => self.at_end = true,
                Some(Err(e)) => {
                    let msg = crate::errors::chain(&e);
                    self.failed = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Err(std::io::Error::other("download stopped")),
            }
        }
        std::io::Read::read(&mut self.cur, buf)
    }
}

fn apply_blocking(
    replica: &Replica,
    steps: &[Step],
    tmp: &Path,
    show: bool,
    rx: tokio::sync::mpsc::Receiver<Result<Piece>>,
) -> Result<Summary> {
    let io = |source| Error::Io { path: tmp.to_path_buf(), source };
    let f = File::create(tmp).map_err(io)?;
    let mut page_size: Option<u32> = None;
    let mut prev_max: TxId = 0;
    let mut commit = 0u32;
    let mut pages = 0u64;
    let mut timestamp_ms = 0;
    let mut feed = Feed { rx, cur: opendal::Buffer::new(), at_end: false, bytes: 0, failed: None };
    let mut batch = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        feed.next_file();
        let name = replica.describe_file(&step.file);
        let r = apply_one(&mut feed, step, i, &f, &mut batch, &mut page_size, prev_max, &name, tmp);
        if let Some(e) = feed.failed.take() {
            return Err(e);
        }
        let h = r?;
        feed.drain().map_err(|e| feed.failed.take().unwrap_or(Error::Io { path: tmp.to_path_buf(), source: e }))?;
        pages += h.1;
        let h = h.0;
        prev_max = h.max_txid;
        commit = h.commit;
        timestamp_ms = h.timestamp_ms;
        if show {
            eprint!("\rrestoring: {}/{} files, {} MB downloaded", i + 1, steps.len(), feed.bytes >> 20);
        }
    }
    if show {
        eprintln!();
    }
    let ps = u64::from(page_size.unwrap_or(4096));
    f.set_len(u64::from(commit) * ps).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(Summary {
        txid: prev_max,
        files: steps.len(),
        pages,
        bytes_downloaded: feed.bytes,
        elapsed: Default::default(),
        timestamp_ms,
    })
}

/// Verifies and applies one file of the plan; returns its header and the pages written.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    feed: &mut Feed,
    step: &Step,
    i: usize,
    out: &File,
    batch: &mut Vec<u8>,
    page_size: &mut Option<u32>,
    prev_max: TxId,
    name: &str,
    tmp: &Path,
) -> Result<(ltx::Header, u64)> {
    let bad = |source| Error::BadFile { file: name.to_string(), source };
    let mut dec = ltx::Decoder::new(&mut *feed).map_err(bad)?;
    let h = dec.header().clone();
    if (h.min_txid, h.max_txid) != (step.file.min_txid, step.file.max_txid) {
        return Err(Error::Inconsistent {
            file: name.to_string(),
            reason: format!("header TXIDs {:016x}-{:016x} do not match the file name", h.min_txid, h.max_txid),
        });
    }
    if i > 0 && !(h.min_txid <= prev_max + 1 && h.max_txid > prev_max) {
        return Err(Error::Inconsistent {
            file: name.to_string(),
            reason: format!("not contiguous with TXID {prev_max:016x}"),
        });
    }
    if *page_size.get_or_insert(h.page_size) != h.page_size {
        return Err(Error::Inconsistent {
            file: name.to_string(),
            reason: format!("page size {} differs from {}", h.page_size, page_size.unwrap_or(0)),
        });
    }
    let n = apply_file(&mut dec, out, h.page_size as usize, batch).map_err(|e| match e {
        ApplyError::Ltx(source) => Error::BadFile { file: name.to_string(), source },
        ApplyError::Io(source) => Error::Io { path: tmp.to_path_buf(), source },
    })?;
    dec.finish().map_err(bad)?;
    Ok((h, n))
}

enum ApplyError {
    Ltx(ltx::Error),
    Io(std::io::Error),
}

/// Decodes every page of a file into `out`, one write per run of consecutive pages
/// (up to WRITE_BATCH bytes). Pages of a file come in ascending order. `batch` is
/// sized once and reused, so pages are decoded straight into it without zeroing.
fn apply_file<R: std::io::Read>(
    dec: &mut ltx::Decoder<R>,
    out: &File,
    ps: usize,
    batch: &mut Vec<u8>,
) -> std::result::Result<u64, ApplyError> {
    let full = (WRITE_BATCH / ps).max(1) * ps;
    if batch.len() < full + ps {
        batch.resize(full + ps, 0);
    }
    let flush = |batch: &[u8], first: u32| out.write_all_at(batch, u64::from(first - 1) * ps as u64);
    let (mut n, mut len) = (0, 0);
    let mut first: u32 = 0; // page number of batch[0..ps]
    while let Some(pgno) = dec.decode_page(&mut batch[len..len + ps]).map_err(ApplyError::Ltx)? {
        n += 1;
        if len == 0 {
            first = pgno;
        } else if u64::from(pgno) != u64::from(first) + (len / ps) as u64 {
            flush(&batch[..len], first).map_err(ApplyError::Io)?;
            batch.copy_within(len..len + ps, 0);
            len = 0;
            first = pgno;
        }
        len += ps;
        if len >= full {
            flush(&batch[..len], first).map_err(ApplyError::Io)?;
            len = 0;
        }
    }
    if len > 0 {
        flush(&batch[..len], first).map_err(ApplyError::Io)?;
    }
    Ok(n)
}

/// Runs SQLite's integrity check on a restored file without creating sidecar files.
pub fn check_integrity(path: &Path, level: IntegrityCheck) -> Result<()> {
    let pragma = match level {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "PRAGMA quick_check",
        IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    let fail = |detail: String| Error::Integrity { path: path.to_path_buf(), detail };
    let uri = format!("file:{}?immutable=1", path.display());
    let conn = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| fail(e.to_string()))?;
    let mut stmt = conn.prepare(pragma).map_err(|e| fail(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| fail(e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if rows.len() == 1 && rows[0] == "ok" { Ok(()) } else { Err(fail(rows.join("; "))) }
}

/// Writes a summary line for humans.
pub fn print_summary(out: &Path, s: &Summary, mut w: impl Write) -> std::io::Result<()> {
    writeln!(
        w,
        "restored {} to TXID {:016x} from {} files ({} pages, {} bytes downloaded) in {:.2?}",
        out.display(),
        s.txid,
        s.files,
        s.pages,
        s.bytes_downloaded,
        s.elapsed
    )
}
