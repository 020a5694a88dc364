//! Restore: from a replica (ours or Litestream's) to a database file.
//!
//! The plan is Litestream's: the newest level-9 snapshot within the bound, then,
//! repeatedly across levels, the file contiguous with what the plan holds that reaches
//! the highest TXID. Files are downloaded in order, verified (checksums, TXID
//! continuity, page size), and applied page by page to `<out>.tmp`, which is truncated
//! to the final commit, fsynced, checked with SQLite if asked, renamed over `<out>`, and
//! the directory is fsynced. Any failure removes the temporary file: no partial output.

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::ltx::{self, TxId};
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
    #[error("{file}: {source}")]
    BadFile {
        file: String,
        #[source]
        source: ltx::Error,
    },
    #[error("{file}: {reason}")]
    Inconsistent { file: String, reason: String },
    #[error("{0}: output exists (use --force to overwrite)")]
    OutputExists(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: integrity check failed: {detail}")]
    Integrity { path: PathBuf, detail: String },
    #[error("{0}")]
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

/// Litestream's `CalcRestorePlan` chain over `files`: the newest snapshot (level 9,
/// `min = 1`), then repeatedly the file at any lower level that is contiguous with the
/// chain and reaches the highest TXID (ties: lower `min`, then higher level). The
/// caller checks that it starts at TXID 1 and reaches far enough.
pub fn chain(files: &[FileInfo]) -> Vec<FileInfo> {
    let mut chain: Vec<FileInfo> = Vec::new();
    let mut cur: TxId = 0;
    if let Some(snap) =
        files.iter().filter(|f| f.level == ltx::SNAPSHOT_LEVEL && f.min_txid == 1).max_by_key(|f| f.max_txid)
    {
        cur = snap.max_txid;
        chain.push(snap.clone());
    }
    loop {
        let best = files
            .iter()
            .filter(|f| f.level < ltx::SNAPSHOT_LEVEL && ltx::is_contiguous(cur, f.min_txid, f.max_txid))
            .max_by(|a, b| a.max_txid.cmp(&b.max_txid).then(b.min_txid.cmp(&a.min_txid)).then(a.level.cmp(&b.level)));
        match best {
            Some(f) => {
                cur = f.max_txid;
                chain.push(f.clone());
            }
            None => break,
        }
    }
    chain
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
            let h = ltx::Header::decode(&head)
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
    let chain = chain(&files);
    let cur: TxId = chain.last().map_or(0, |f| f.max_txid);
    let Some(first) = chain.first() else {
        let first = files.iter().map(|f| f.min_txid).min().unwrap_or(0);
        return Err(Error::NoStart { replica: url, first });
    };
    if first.min_txid != 1 {
        return Err(Error::NoStart { replica: url, first: first.min_txid });
    }
    match target.txid {
        Some(t) if cur < t => return Err(Error::Unreachable { replica: url, want: t, got: cur }),
        None if target.timestamp.is_none() => {
            if let Some(next) = files.iter().filter(|f| f.max_txid > cur).map(|f| f.min_txid).min() {
                return Err(Error::Gap { replica: url, after: cur, next });
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
    let tmp = tmp_path(out);
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
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    if opts.force {
        for suffix in ["-wal", "-shm"] {
            let mut side = out.as_os_str().to_owned();
            side.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(side));
        }
    }
    std::fs::rename(&tmp, out).map_err(io(out))?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(Summary { elapsed: started.elapsed(), ..summary })
}

fn tmp_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

async fn apply(replica: &Replica, steps: &[Step], tmp: &Path, opts: &Options) -> Result<Summary> {
    let io = |source| Error::Io { path: tmp.to_path_buf(), source };
    let f = File::create(tmp).map_err(io)?;
    let mut page_size: Option<u32> = None;
    let mut prev_max: TxId = 0;
    let mut commit = 0u32;
    let mut pages = 0u64;
    let mut downloaded = 0u64;
    let mut timestamp_ms = 0;
    let show = opts.progress && std::io::stderr().is_terminal();
    // Download the next file while the current one is applied.
    let mut next = steps.first().map(|s| fetch(replica, s.file.clone()));
    for (i, step) in steps.iter().enumerate() {
        let data = match next.take() {
            Some(h) => h.await.map_err(|e| Error::Inconsistent {
                file: replica.describe_file(&step.file),
                reason: e.to_string(),
            })??,
            None => break,
        };
        next = steps.get(i + 1).map(|s| fetch(replica, s.file.clone()));
        let name = replica.describe_file(&step.file);
        downloaded += data.len() as u64;
        let bad = |source| Error::BadFile { file: name.clone(), source };
        let mut dec = ltx::Decoder::new(&data[..]).map_err(bad)?;
        let h = dec.header().clone();
        if (h.min_txid, h.max_txid) != (step.file.min_txid, step.file.max_txid) {
            return Err(Error::Inconsistent {
                file: name,
                reason: format!("header TXIDs {:016x}-{:016x} do not match the file name", h.min_txid, h.max_txid),
            });
        }
        if i > 0 && !(h.min_txid <= prev_max + 1 && h.max_txid > prev_max) {
            return Err(Error::Inconsistent {
                file: name,
                reason: format!("not contiguous with TXID {prev_max:016x}"),
            });
        }
        if *page_size.get_or_insert(h.page_size) != h.page_size {
            return Err(Error::Inconsistent {
                file: name,
                reason: format!("page size {} differs from {}", h.page_size, page_size.unwrap_or(0)),
            });
        }
        let mut buf = vec![0u8; h.page_size as usize];
        let data_pages = apply_file(&mut dec, &f, &mut buf).map_err(|e| match e {
            ApplyError::Ltx(source) => Error::BadFile { file: name.clone(), source },
            ApplyError::Io(source) => Error::Io { path: tmp.to_path_buf(), source },
        })?;
        dec.finish().map_err(bad)?;
        pages += data_pages;
        prev_max = h.max_txid;
        commit = h.commit;
        timestamp_ms = h.timestamp_ms;
        if show {
            eprint!("\rrestoring: {}/{} files, {} MB downloaded", i + 1, steps.len(), downloaded >> 20);
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
        bytes_downloaded: downloaded,
        elapsed: Default::default(),
        timestamp_ms,
    })
}

fn fetch(replica: &Replica, f: FileInfo) -> tokio::task::JoinHandle<Result<Vec<u8>>> {
    let r = replica.clone();
    tokio::spawn(async move { Ok(r.read(&f).await?) })
}

enum ApplyError {
    Ltx(ltx::Error),
    Io(std::io::Error),
}

fn apply_file<R: std::io::Read>(
    dec: &mut ltx::Decoder<R>,
    out: &File,
    buf: &mut [u8],
) -> std::result::Result<u64, ApplyError> {
    let mut n = 0;
    while let Some(pgno) = dec.decode_page(buf).map_err(ApplyError::Ltx)? {
        out.write_all_at(buf, u64::from(pgno - 1) * buf.len() as u64).map_err(ApplyError::Io)?;
        n += 1;
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
