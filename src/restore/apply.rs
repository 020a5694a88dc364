//! Applying a plan: LTX files streamed in order (ranged reads of 8 MiB, a few ahead of
//! the decoder, so no file is held whole in memory), each verified (checksums, header
//! TXIDs against its name, TXID continuity, page size) and decoded straight into a
//! temporary output file, one write per run of consecutive pages.
//!
//! It reports what it has done to a [`Progress`] and stops at the next page batch once
//! its cancellation token fires. It writes only the file it is given; making that file
//! the output (fsync, checks, rename) is [`super::job`]'s.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::job::Progress;
use super::{Error, Result, Step};
use crate::ltx::{self, TxId};
use crate::storage::{FileInfo, Replica};

/// Bytes per ranged read of an LTX file: files are streamed, never held whole.
const CHUNK: u64 = 8 << 20;
/// Chunks downloaded ahead of the decoder.
const AHEAD: usize = 4;
/// Consecutive pages gathered into one write.
const WRITE_BATCH: usize = 1 << 20;

/// What [`apply`] wrote.
#[derive(Debug, Clone, Copy)]
pub(super) struct Applied {
    /// The TXID the output is at.
    pub txid: TxId,
    /// The header time of the last file applied.
    pub timestamp_ms: i64,
    /// Page frames applied (a page written by several files counts each time).
    pub pages: u64,
    /// Bytes downloaded.
    pub bytes: u64,
    /// The output's size in pages.
    pub commit: u32,
    /// Its page size.
    pub page_size: u32,
}

/// What the download task hands the decoder: the bytes of the current file in order,
/// then `End` once per file.
enum Piece {
    Data(opendal::Buffer),
    End,
}

/// Applies `steps` to `out` (created or truncated), truncates it to the final database
/// size and fsyncs it. Stops with [`Error::Cancelled`] soon after `cancel` fires.
pub(super) async fn apply(
    replica: &Replica,
    steps: &[Step],
    out: &Path,
    progress: &std::sync::Arc<Progress>,
    cancel: &CancellationToken,
) -> Result<Applied> {
    // The download runs ahead (at most AHEAD chunks) while a blocking thread decodes
    // and writes; both stop when the other side goes away.
    let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
    let download = tokio::spawn(download(replica.clone(), steps.iter().map(|s| s.file.clone()).collect(), tx));
    let (r, st, o, p, c) = (replica.clone(), steps.to_vec(), out.to_path_buf(), progress.clone(), cancel.clone());
    let mut applying = tokio::task::spawn_blocking(move || apply_blocking(&r, &st, &o, &p, &c, rx));
    // A cancellation stops the download at once (the decoder then sees its feed end);
    // the decoder is always waited for, so nothing writes to `out` after we return.
    let joined = tokio::select! {
        r = &mut applying => r,
        _ = cancel.cancelled() => {
            download.abort();
            applying.await
        }
    };
    download.abort();
    let result = joined.map_err(|e| Error::Inconsistent { file: replica.url(), reason: e.to_string() })?;
    match result {
        Err(_) if cancel.is_cancelled() => Err(Error::Cancelled),
        r => r,
    }
}

async fn download(replica: Replica, files: Vec<FileInfo>, tx: tokio::sync::mpsc::Sender<Result<Piece>>) {
    for f in files {
        // Ranged reads of CHUNK bytes (a sealed file's opened chunk by chunk).
        let mut reader = replica.reader(&f, CHUNK);
        loop {
            let r = match reader.next().await {
                Ok(Some(b)) => Ok(Piece::Data(b)),
                Ok(None) => break,
                Err(e) => Err(Error::from(e)),
            };
            let failed = r.is_err();
            if tx.send(r).await.is_err() || failed {
                return;
            }
        }
        if tx.send(Ok(Piece::End)).await.is_err() {
            return;
        }
    }
}

/// `Read` over one file's chunks as the download task delivers them.
struct Feed<'p> {
    rx: tokio::sync::mpsc::Receiver<Result<Piece>>,
    /// What is left of the current chunk.
    cur: opendal::Buffer,
    at_end: bool,
    bytes: u64,
    /// A download error, reported instead of the decoder's resulting I/O error.
    failed: Option<Error>,
    progress: &'p Progress,
}

impl Feed<'_> {
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

impl std::io::Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            if self.at_end {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(Piece::Data(v))) => {
                    self.bytes += v.len() as u64;
                    self.progress.add_bytes(v.len() as u64);
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

/// The page numbers written so far, for [`Progress`]'s distinct-page count.
#[derive(Default)]
struct Written {
    bits: Vec<u64>,
}

impl Written {
    /// Marks `n` pages from `first`; returns how many were new.
    fn mark(&mut self, first: u32, n: u32) -> u64 {
        let mut new = 0;
        for pgno in first..first.saturating_add(n) {
            let (word, bit) = ((pgno / 64) as usize, pgno % 64);
            if word >= self.bits.len() {
                self.bits.resize(word + 1, 0);
            }
            if self.bits[word] & (1 << bit) == 0 {
                self.bits[word] |= 1 << bit;
                new += 1;
            }
        }
        new
    }
}

/// Where decoded pages go: the output file, the write batch and the progress counters.
struct Sink<'a> {
    out: &'a File,
    batch: &'a mut Vec<u8>,
    written: &'a mut Written,
    progress: &'a Progress,
    cancel: &'a CancellationToken,
}

impl Sink<'_> {
    /// Writes `len` bytes of the batch as pages from `first`.
    fn flush(&mut self, len: usize, first: u32, ps: usize) -> std::result::Result<(), ApplyError> {
        if self.cancel.is_cancelled() {
            return Err(ApplyError::Cancelled);
        }
        self.out.write_all_at(&self.batch[..len], u64::from(first - 1) * ps as u64).map_err(ApplyError::Io)?;
        let new = self.written.mark(first, (len / ps) as u32);
        self.progress.add_pages(new);
        Ok(())
    }
}

fn apply_blocking(
    replica: &Replica,
    steps: &[Step],
    out: &Path,
    progress: &Progress,
    cancel: &CancellationToken,
    rx: tokio::sync::mpsc::Receiver<Result<Piece>>,
) -> Result<Applied> {
    let io = |source| Error::Io { path: out.to_path_buf(), source };
    let f = File::create(out).map_err(io)?;
    let mut page_size: Option<u32> = None;
    let mut done = Applied { txid: 0, timestamp_ms: 0, pages: 0, bytes: 0, commit: 0, page_size: 0 };
    let mut feed = Feed { rx, cur: opendal::Buffer::new(), at_end: false, bytes: 0, failed: None, progress };
    let (mut batch, mut written) = (Vec::new(), Written::default());
    let last = steps.len().saturating_sub(1);
    for (i, step) in steps.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(Error::Cancelled);
        }
        feed.next_file();
        let read_before = feed.bytes;
        let name = replica.describe_file(&step.file);
        let mut sink = Sink { out: &f, batch: &mut batch, written: &mut written, progress, cancel };
        let r = apply_one(&mut feed, step, i, &mut sink, &mut page_size, done.txid, &name, out, i == last);
        if let Some(e) = feed.failed.take() {
            return Err(e);
        }
        let (h, pages) = r?;
        feed.drain().map_err(|e| feed.failed.take().unwrap_or(Error::Io { path: out.to_path_buf(), source: e }))?;
        done.pages += pages;
        done.txid = h.max_txid;
        done.commit = h.commit;
        done.timestamp_ms = h.timestamp_ms;
        // Progress counts the plan's stored bytes: an encrypted file's envelope (its
        // header and tags) is stored but never handed to the decoder.
        progress.add_bytes(step.file.size.saturating_sub(feed.bytes - read_before));
        progress.file_done();
    }
    let ps = page_size.unwrap_or(4096);
    f.set_len(u64::from(done.commit) * u64::from(ps)).map_err(io)?;
    f.sync_all().map_err(io)?;
    Ok(Applied { bytes: feed.bytes, page_size: ps, ..done })
}

/// Verifies and applies one file of the plan; returns its header and the pages written.
#[allow(clippy::too_many_arguments)]
fn apply_one(
    feed: &mut Feed<'_>,
    step: &Step,
    i: usize,
    sink: &mut Sink<'_>,
    page_size: &mut Option<u32>,
    prev_max: TxId,
    name: &str,
    out: &Path,
    last: bool,
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
    if last {
        // The output's size in pages is known once the last file's header is read (or
        // before, when the plan read it).
        sink.progress.set_pages_total(u64::from(h.commit));
    }
    let n = apply_file(&mut dec, sink, h.page_size as usize).map_err(|e| match e {
        ApplyError::Ltx(source) => Error::BadFile { file: name.to_string(), source },
        ApplyError::Io(source) => Error::Io { path: out.to_path_buf(), source },
        ApplyError::Cancelled => Error::Cancelled,
    })?;
    dec.finish().map_err(bad)?;
    Ok((h, n))
}

enum ApplyError {
    Ltx(ltx::Error),
    Io(std::io::Error),
    Cancelled,
}

/// Decodes every page of a file into the output, one write per run of consecutive
/// pages (up to WRITE_BATCH bytes). Pages of a file come in ascending order. The batch
/// is sized once and reused, so pages are decoded straight into it without zeroing.
fn apply_file<R: std::io::Read>(
    dec: &mut ltx::Decoder<R>,
    sink: &mut Sink<'_>,
    ps: usize,
) -> std::result::Result<u64, ApplyError> {
    // A run never holds more pages than the database has: a small tenant's batch is a
    // few pages, not 1 MiB to zero (a fleet-wide recovery restores thousands of them).
    let commit = (dec.header().commit as usize).max(1);
    let full = (WRITE_BATCH / ps).max(1).min(commit) * ps;
    if sink.batch.len() < full + ps {
        sink.batch.resize(full + ps, 0);
    }
    let (mut n, mut len) = (0, 0);
    let mut first: u32 = 0; // page number of batch[0..ps]
    while let Some(pgno) = dec.decode_page(&mut sink.batch[len..len + ps]).map_err(ApplyError::Ltx)? {
        n += 1;
        if len == 0 {
            first = pgno;
        } else if u64::from(pgno) != u64::from(first) + (len / ps) as u64 {
            sink.flush(len, first, ps)?;
            sink.batch.copy_within(len..len + ps, 0);
            len = 0;
            first = pgno;
        }
        len += ps;
        if len >= full {
            sink.flush(len, first, ps)?;
            len = 0;
        }
    }
    if len > 0 {
        sink.flush(len, first, ps)?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::Written;

    #[test]
    fn distinct_pages_are_counted_once() {
        let mut w = Written::default();
        assert_eq!(w.mark(1, 3), 3);
        assert_eq!(w.mark(2, 3), 1, "pages 2 and 3 were written already");
        assert_eq!(w.mark(200, 1), 1);
        assert_eq!(w.mark(200, 1), 0);
    }
}
