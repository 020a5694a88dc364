//! Restore: from a replica (ours or Litestream's) to a database file; and
//! [`validate`], which proves a live tenant's replica restores to what it holds.
//!
//! Read in this order: this file (what to restore — [`Target`] —, the plan, the public
//! entry points), [`job`] (the one runner: plan → apply → verify → rename, with progress
//! and cancellation; `litefleet restore`, the daemon's restore jobs and `restore --all`
//! all run it), `apply` (streaming the plan's files into the output), [`validate`].
//!
//! The plan is Litestream's: the newest level-9 snapshot within the bound, then,
//! repeatedly across levels, the file contiguous with what the plan holds that reaches
//! the highest TXID. Files are streamed in order (ranged reads of 8 MiB, a few ahead
//! of the decoder, so no file is held whole in memory), verified (checksums, TXID
//! continuity, page size), and applied to `<out>.tmp` (runs of consecutive pages in
//! one write), which is truncated to the final commit, fsynced, hashed and checked with
//! SQLite if asked, renamed over `<out>`, and the directory is fsynced
//! ([`crate::durable`]). Any failure removes the temporary file: no partial output.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

mod apply;
pub mod follow;
pub mod job;
pub mod validate;

pub use job::{Job, Phase, Progress, ProgressView};

use crate::ltx::{self, TxId};
use crate::storage::catalog::chain;
use crate::storage::{FileInfo, Replica};

/// LTX headers read at once while planning a restore to a point in time.
const HEADER_READS: usize = 16;

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
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
}

type Result<T> = std::result::Result<T, Error>;

/// How thoroughly to check the restored database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IntegrityCheck {
    #[default]
    None,
    Quick,
    Full,
}

impl IntegrityCheck {
    /// Lowercase name, as on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            IntegrityCheck::None => "none",
            IntegrityCheck::Quick => "quick",
            IntegrityCheck::Full => "full",
        }
    }
}

/// What to restore.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Target {
    /// Restore up to and including this TXID.
    pub txid: Option<TxId>,
    /// Restore the state as of this time (files created strictly before it).
    pub timestamp: Option<SystemTime>,
}

/// A file of the plan, with what is known of its header.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub file: FileInfo,
    /// Its LTX header time, when the plan read its header.
    pub timestamp_ms: Option<i64>,
    /// The database size in pages after it, when the plan read its header.
    pub commit: Option<u32>,
}

/// Options of [`restore`].
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub target: Target,
    pub integrity: IntegrityCheck,
    pub force: bool,
    /// Print progress on stderr when it is a terminal.
    pub progress: bool,
    /// Compute the output's SHA-256 (printed with the summary).
    pub sha256: bool,
}

/// What a restore did.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// The TXID the output is at.
    pub txid: TxId,
    /// LTX files applied.
    pub files: usize,
    /// Page frames applied.
    pub pages: u64,
    pub bytes_downloaded: u64,
    pub elapsed: std::time::Duration,
    /// The LTX header time of the last file applied: when the restored state was
    /// committed.
    pub timestamp_ms: i64,
    /// The output's size in bytes.
    pub size: u64,
    /// Its page size.
    pub page_size: u32,
    /// Its SHA-256 in hex, when asked.
    pub sha256: Option<String>,
    /// `Some("ok")` when SQLite's check was asked and passed.
    pub integrity: Option<String>,
}

/// Computes the restore plan (see the module doc): lists every level once, then
/// [`plan_from`].
pub async fn plan(replica: &Replica, target: &Target) -> Result<Vec<Step>> {
    let files = replica.list_all().await?;
    plan_from(replica, files, target).await
}

/// The restore plan over `files`, a listing of `replica` made already (one recursive
/// listing for a whole fleet, or a catalog). With a timestamp bound it reads the header
/// of every file for its time (16 at once); otherwise it does no I/O.
pub async fn plan_from(replica: &Replica, mut files: Vec<FileInfo>, target: &Target) -> Result<Vec<Step>> {
    let url = replica.url();
    if files.is_empty() {
        return Err(Error::NoBackups(url));
    }
    let mut heads: std::collections::HashMap<(u32, TxId, TxId), ltx::Header> = Default::default();
    if let Some(ts) = target.timestamp {
        let bound = ts.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        let read: Vec<(FileInfo, ltx::Header)> = futures::stream::iter(files)
            .map(|f| async move {
                let h = read_header(replica, &f).await?;
                Ok::<_, Error>((f, h))
            })
            .buffered(HEADER_READS)
            .try_collect()
            .await?;
        files = Vec::new();
        for (f, h) in read {
            if h.timestamp_ms < bound {
                heads.insert((f.level, f.min_txid, f.max_txid), h);
                files.push(f);
            }
        }
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
            let h = heads.get(&(f.level, f.min_txid, f.max_txid));
            Step { timestamp_ms: h.map(|h| h.timestamp_ms), commit: h.map(|h| h.commit), file: f }
        })
        .collect())
}

/// Reads the 100-byte LTX header of one file (one ranged read).
pub async fn read_header(replica: &Replica, f: &FileInfo) -> Result<ltx::Header> {
    let head = replica.read_range(f, 0..ltx::HEADER_SIZE as u64).await?;
    ltx::Header::decode(&head.to_bytes()).map_err(|e| Error::BadFile { file: replica.describe_file(f), source: e })
}

/// Reads the last step's header when the plan did not (one ranged read), so the time
/// and size of the state a plan restores are known before it runs.
pub async fn read_last_header(replica: &Replica, steps: &mut [Step]) -> Result<()> {
    if let Some(last) = steps.last_mut().filter(|s| s.commit.is_none()) {
        let h = read_header(replica, &last.file).await?;
        last.timestamp_ms = Some(h.timestamp_ms);
        last.commit = Some(h.commit);
    }
    Ok(())
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

/// Restores `replica` to `out` (a [`Job`] with these options; progress on stderr when
/// asked and stderr is a terminal).
pub async fn restore(replica: &Replica, out: &Path, opts: &Options) -> Result<Summary> {
    let job = Job {
        integrity: opts.integrity,
        sha256: opts.sha256,
        force: opts.force,
        ..Job::new(replica.clone(), opts.target.clone(), out)
    };
    let progress = Arc::new(Progress::default());
    let shown = (opts.progress && std::io::stderr().is_terminal()).then(|| {
        let p = progress.clone();
        tokio::spawn(async move {
            loop {
                let v = p.view();
                eprint!("\rrestoring: {}/{} files, {} MB downloaded", v.files_done, v.files_total, v.bytes_done >> 20);
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        })
    });
    let result = job.run(&progress, &CancellationToken::new()).await;
    if let Some(task) = shown {
        task.abort();
        let v = progress.view();
        eprintln!("\rrestoring: {}/{} files, {} MB downloaded", v.files_done, v.files_total, v.bytes_done >> 20);
    }
    result
}

/// Opens a restored file read-only without creating sidecar files.
fn open_immutable(path: &Path) -> Result<rusqlite::Connection> {
    let uri = format!("file:{}?immutable=1", path.display());
    rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| Error::Integrity { path: path.to_path_buf(), detail: e.to_string() })
}

/// Runs `quick_check` or `integrity_check` on an open restored file.
fn run_check(conn: &rusqlite::Connection, path: &Path, level: IntegrityCheck) -> Result<()> {
    let pragma = match level {
        IntegrityCheck::None => return Ok(()),
        IntegrityCheck::Quick => "PRAGMA quick_check",
        IntegrityCheck::Full => "PRAGMA integrity_check",
    };
    let fail = |detail: String| Error::Integrity { path: path.to_path_buf(), detail };
    let mut stmt = conn.prepare(pragma).map_err(|e| fail(e.to_string()))?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| fail(e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if rows.len() == 1 && rows[0] == "ok" { Ok(()) } else { Err(fail(rows.join("; "))) }
}

/// Runs SQLite's integrity check on a restored file without creating sidecar files.
pub fn check_integrity(path: &Path, level: IntegrityCheck) -> Result<()> {
    if level == IntegrityCheck::None {
        return Ok(());
    }
    run_check(&open_immutable(path)?, path, level)
}

/// Writes a summary line for humans (and the SHA-256 when computed).
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
    )?;
    if let Some(h) = &s.sha256 {
        writeln!(w, "sha256 {h}  {}", out.display())?;
    }
    Ok(())
}
