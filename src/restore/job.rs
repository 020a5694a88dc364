//! One restore of a replica to a file, watched and stoppable: the runner behind
//! `litefleet restore`, the daemon's restore jobs (`POST /api/clients/{id}/restores`)
//! and fleet-wide disaster recovery (`restore --all`).
//!
//! A [`Job`] plans (unless given a plan), applies the plan to `<out>.tmp`
//! ([`super::apply`]), fsyncs it, verifies it — SHA-256 of the bytes, SQLite's
//! `quick_check` or `integrity_check` if asked, both on one blocking thread — and only
//! then renames it over `<out>` and fsyncs the directory ([`crate::durable`]; a caller
//! restoring many files into one directory may fsync it once for all, see
//! [`Job::sync_dir`]). Whatever stops it (an error, a full
//! disk, [`CancellationToken::cancel`]) removes the temporary file: an output at its
//! final name is always a complete, verified restore, and a stopped job leaves nothing.
//!
//! Progress goes to a shared [`Progress`] (atomics a watcher reads whenever it likes):
//! the phase, files and bytes of the plan done/total, and pages of the output written
//! so far/its size in pages.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::{Error, IntegrityCheck, Result, Step, Summary, Target, apply, plan};
use crate::durable;
use crate::storage::Replica;

/// Bytes read per step while hashing the output (a cancellation is seen between steps).
const HASH_CHUNK: usize = 1 << 20;

/// What a job is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Listing the replica and choosing the files.
    #[default]
    Planning,
    /// Downloading and applying the plan's files.
    Restoring,
    /// Hashing and checking the output.
    Verifying,
    /// The output is at its final name.
    Done,
}

impl Phase {
    /// Lowercase name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Planning => "planning",
            Phase::Restoring => "restoring",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
        }
    }

    fn from_u8(v: u8) -> Phase {
        match v {
            1 => Phase::Restoring,
            2 => Phase::Verifying,
            3 => Phase::Done,
            _ => Phase::Planning,
        }
    }
}

/// Live progress of one restore, shared between the job and whoever watches it.
#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    pages_done: AtomicU64,
    pages_total: AtomicU64,
}

/// A copy of a [`Progress`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressView {
    /// What the job is doing.
    pub phase: Phase,
    /// LTX files of the plan applied.
    pub files_done: u64,
    /// LTX files in the plan.
    pub files_total: u64,
    /// Bytes of the plan downloaded.
    pub bytes_done: u64,
    /// Bytes the plan downloads (as the listing reports the files' sizes).
    pub bytes_total: u64,
    /// Distinct pages of the output written so far.
    pub pages_done: u64,
    /// The output's size in pages (0 until known: from the plan when it read the last
    /// file's header, else once that file is reached).
    pub pages_total: u64,
}

impl Progress {
    /// Progress at this moment.
    pub fn view(&self) -> ProgressView {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (pages_done, pages_total) = (get(&self.pages_done), get(&self.pages_total));
        ProgressView {
            phase: Phase::from_u8(self.phase.load(Ordering::Relaxed)),
            files_done: get(&self.files_done),
            files_total: get(&self.files_total),
            bytes_done: get(&self.bytes_done),
            bytes_total: get(&self.bytes_total),
            // Pages written then cut off by a shrinking commit do not count past the end.
            pages_done: if pages_total > 0 { pages_done.min(pages_total) } else { pages_done },
            pages_total,
        }
    }

    fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// Starts (or restarts) the counters for `steps`.
    fn start(&self, steps: &[Step]) {
        let total_pages = steps.last().and_then(|s| s.commit).map_or(0, u64::from);
        for (a, v) in [
            (&self.files_total, steps.len() as u64),
            (&self.bytes_total, steps.iter().map(|s| s.file.size).sum()),
            (&self.pages_total, total_pages),
            (&self.files_done, 0),
            (&self.bytes_done, 0),
            (&self.pages_done, 0),
        ] {
            a.store(v, Ordering::Relaxed);
        }
        self.set_phase(Phase::Restoring);
    }

    pub(super) fn add_bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn add_pages(&self, n: u64) {
        self.pages_done.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn file_done(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn set_pages_total(&self, n: u64) {
        self.pages_total.store(n, Ordering::Relaxed);
    }

    /// Marks the restore complete (every page of the output written).
    fn finish(&self) {
        self.pages_done.store(self.pages_total.load(Ordering::Relaxed), Ordering::Relaxed);
        self.set_phase(Phase::Done);
    }
}

/// One restore of `replica` to `out`.
#[derive(Debug, Clone)]
pub struct Job {
    /// The replica to restore.
    pub replica: Replica,
    /// Which state of it.
    pub target: Target,
    /// The output database; written through `<out>.tmp`.
    pub out: PathBuf,
    /// Check the output with SQLite before it takes its name.
    pub integrity: IntegrityCheck,
    /// Compute the output's SHA-256 before it takes its name.
    pub sha256: bool,
    /// Replace an existing output (and remove its `-wal`/`-shm`).
    pub force: bool,
    /// A plan made already (from a listing the caller holds); `None` plans from a new
    /// listing. A plan whose file vanished meanwhile (compacted away) is made again.
    pub plan: Option<Vec<Step>>,
    /// Fsync the output's directory after the rename (the default). `false` leaves it
    /// to the caller, who must [`durable::sync_dir`] it before relying on the name
    /// (`restore --all` does it once per directory before its journal records them).
    pub sync_dir: bool,
}

impl Job {
    /// A job restoring `replica` at `target` to `out`, with no checks.
    pub fn new(replica: Replica, target: Target, out: impl Into<PathBuf>) -> Job {
        Job {
            replica,
            target,
            out: out.into(),
            integrity: IntegrityCheck::None,
            sha256: false,
            force: false,
            plan: None,
            sync_dir: true,
        }
    }

    /// Runs the job to the end, or until `cancel` fires ([`Error::Cancelled`]). On any
    /// error nothing is left at `out` or `<out>.tmp` that was not there before.
    pub async fn run(&self, progress: &Arc<Progress>, cancel: &CancellationToken) -> Result<Summary> {
        let started = Instant::now();
        if self.out.exists() && !self.force {
            return Err(Error::OutputExists(self.out.clone()));
        }
        let mut given = self.plan.clone();
        let mut replanned = false;
        loop {
            progress.set_phase(Phase::Planning);
            let steps = match given.take() {
                Some(s) => s,
                None => tokio::select! {
                    s = plan(&self.replica, &self.target) => s?,
                    _ = cancel.cancelled() => return Err(Error::Cancelled),
                },
            };
            progress.start(&steps);
            match self.attempt(&steps, progress, cancel).await {
                Ok(s) => {
                    progress.finish();
                    return Ok(Summary { elapsed: started.elapsed(), ..s });
                }
                // A lifecycle pass may delete a file between the plan and its download
                // (an L0 file that a new L1 file covers): plan once more.
                Err(Error::Storage(e)) if e.is_not_found() && !replanned => {
                    tracing::debug!("restore of {}: a planned file vanished, planning again", self.replica.url());
                    replanned = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies `steps` to `<out>.tmp`, verifies it and renames it over `out`; removes the
    /// temporary file on any error, and when the attempt is dropped unfinished.
    async fn attempt(&self, steps: &[Step], progress: &Arc<Progress>, cancel: &CancellationToken) -> Result<Summary> {
        let tmp = durable::temp_path(&self.out);
        // However the attempt ends — an error, or its future dropped (a shutdown that
        // does not wait) — the temporary output goes, unless it was installed.
        let mut guard = durable::RemoveOnDrop::new(tmp.clone());
        let result = async {
            let applied = apply::apply(&self.replica, steps, &tmp, progress, cancel).await?;
            progress.set_phase(Phase::Verifying);
            let (sha256, integrity) = verify(&tmp, self.sha256, self.integrity, cancel).await?;
            if cancel.is_cancelled() {
                return Err(Error::Cancelled);
            }
            let size = std::fs::metadata(&tmp).map_err(|source| Error::Io { path: tmp.clone(), source })?.len();
            Ok(Summary {
                txid: applied.txid,
                files: steps.len(),
                pages: applied.pages,
                bytes_downloaded: applied.bytes,
                elapsed: Default::default(),
                timestamp_ms: applied.timestamp_ms,
                size,
                page_size: applied.page_size,
                sha256,
                integrity,
            })
        }
        .await;
        let summary = result?;
        if self.force {
            // Looked up first: an unlink locks the directory for writing even when the
            // name is absent, and a fleet-wide recovery restores thousands of files
            // into one directory at once.
            for side in [crate::sqlite::wal_path(&self.out), crate::sqlite::shm_path(&self.out)] {
                if side.symlink_metadata().is_ok() {
                    let _ = std::fs::remove_file(&side);
                }
            }
        }
        let installed =
            if self.sync_dir { durable::replace(&tmp, &self.out) } else { durable::replace_unsynced(&tmp, &self.out) };
        installed.map_err(|source| Error::Io { path: self.out.clone(), source })?;
        guard.keep();
        Ok(summary)
    }
}

/// SHA-256 of a file, in lowercase hex, read in steps so a cancellation stops it.
pub async fn sha256_file(path: &Path, cancel: &CancellationToken) -> Result<String> {
    let (p, c) = (path.to_path_buf(), cancel.clone());
    tokio::task::spawn_blocking(move || hash_file(&p, &c))
        .await
        .map_err(|e| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?
}

/// [`sha256_file`] on the calling (blocking) thread. The buffer is no larger than the
/// file: a small tenant's 8 KiB are not hashed through 1 MiB of zeroed memory.
fn hash_file(p: &Path, c: &CancellationToken) -> Result<String> {
    let io = |source| Error::Io { path: p.to_path_buf(), source };
    let mut f = std::fs::File::open(p).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK.min(len as usize).max(4096)];
    loop {
        if c.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let n = f.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The output's SHA-256 (when `sha256`) and SQLite's check of it at `level`, on one
/// blocking thread (a small tenant's verification is mostly the hand-off to it);
/// interrupted when `cancel` fires. The check is `Some("ok")` when it passed, `None`
/// when not asked.
async fn verify(
    path: &Path,
    sha256: bool,
    level: IntegrityCheck,
    cancel: &CancellationToken,
) -> Result<(Option<String>, Option<String>)> {
    if !sha256 && level == IntegrityCheck::None {
        return Ok((None, None));
    }
    let conn = if level == IntegrityCheck::None { None } else { Some(super::open_immutable(path)?) };
    let interrupt = conn.as_ref().map(|c| c.get_interrupt_handle());
    let (p, c) = (path.to_path_buf(), cancel.clone());
    let mut task = tokio::task::spawn_blocking(move || {
        let hash = if sha256 { Some(hash_file(&p, &c)?) } else { None };
        if c.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let checked = match &conn {
            Some(conn) => {
                super::run_check(conn, &p, level)?;
                Some("ok".to_owned())
            }
            None => None,
        };
        Ok((hash, checked))
    });
    let joined = tokio::select! {
        r = &mut task => r,
        _ = cancel.cancelled() => {
            if let Some(i) = &interrupt {
                i.interrupt();
            }
            task.await
        }
    };
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    joined.map_err(|e| Error::Integrity { path: path.to_path_buf(), detail: e.to_string() })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_padded() {
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
    }

    #[test]
    fn files_of_any_size_hash_to_their_sha256() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        for len in [0, 1, 8192, HASH_CHUNK + 4097] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
            let p = dir.path().join(format!("{len}.db"));
            std::fs::write(&p, &bytes).unwrap_or_else(|e| panic!("{e}"));
            let got = hash_file(&p, &CancellationToken::new()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(got, hex(&sha2::Sha256::digest(&bytes)), "{len} bytes");
        }
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert!(matches!(hash_file(&dir.path().join("1.db"), &cancelled), Err(Error::Cancelled)));
    }

    #[test]
    fn pages_written_past_a_shrunken_end_do_not_count_past_it() {
        let p = Progress::default();
        p.add_pages(12);
        p.set_pages_total(10);
        assert_eq!((p.view().pages_done, p.view().pages_total), (10, 10));
    }
}
