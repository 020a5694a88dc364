//! Preparing one L0 file, in three steps that can run apart:
//!
//! * [`Engine::plan_file`] scans the WAL from the planned cursor and decides which
//!   pages the file carries and where each is read from (a WAL frame or the database
//!   file); after a gap it compares every page with the page table (or the replica's
//!   digest) and may find that nothing needs to ship at all.
//! * [`Engine::capture`] (only under a write barrier) copies those pages into memory,
//!   so the barrier covers a copy of the last few frames, never an encode.
//! * [`Engine::encode`] reads the pages, records their CRCs in the page table and
//!   writes the LTX file to any `Write` — a `Vec` for small files, an upload stream for
//!   large ones; it then checks that no WAL restart overwrote the frames while they
//!   were read. [`Engine::commit`] makes the file's position the replicator's.
//!
//! The position moves only in `commit`, after the bytes exist (in memory, or in
//! storage for a streamed file), so a failed stream leaves the replicator where it was.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::engine::{Engine, read_page};
use super::pages::{self, PageTable};
use super::plan::{Plan, Position, SnapshotReason};
use super::{Carried, Error, Pending, Result};
use crate::ltx::{self, TxId};
use crate::wal;

/// Where a page of a planned file is read from.
#[derive(Clone, Copy, Debug)]
enum Src {
    /// The page image of the WAL frame at this offset.
    Wal(u64),
    /// The database file.
    Db,
    /// The job's captured bytes, at this index × page size.
    Mem(usize),
}

/// One L0 file planned: every decision taken, no page read yet.
pub(super) struct Job {
    pub(super) header: ltx::Header,
    /// Pages to write, ascending, with their source.
    pages: Vec<(u32, Src)>,
    /// Captured page images (see [`Engine::capture`]).
    mem: Vec<u8>,
    wal: Option<File>,
    /// The WAL header the frames belong to and the offset of the first one: checked
    /// again after reading.
    check: Option<(wal::Header, u64)>,
    /// The page table after this file (`None`: not tracked), and whether it is already
    /// complete (else `encode` records the CRCs of the pages it writes).
    crcs: Option<Vec<u64>>,
    crcs_final: bool,
    /// The position after this file (its digest is filled in by `commit`).
    pos: Position,
    /// Why every page ships (`None`: an incremental file, or only the pages that differ).
    pub(super) snapshot: Option<SnapshotReason>,
    /// Only the pages that differ from the replica (after a gap, with a page table).
    diff: Option<SnapshotReason>,
    pub(super) transactions: u64,
    /// WAL frames read for it (a measure of how much the writer wrote).
    pub(super) frames: u64,
}

impl Job {
    /// What the file carries once encoded with `pages` pages, for the report.
    pub(super) fn carried(&self, pages: u32) -> Carried {
        Carried { pages, transactions: self.transactions, frames: self.frames }
    }

    /// Uncompressed bytes of the pages the file carries.
    pub(super) fn raw_bytes(&self) -> u64 {
        self.pages.len() as u64 * u64::from(self.header.page_size)
    }
}

/// Reads and checks the WAL header; `None` when there is no WAL (or no header yet).
fn wal_header(engine: &Engine, f: &File) -> Result<Option<wal::Header>> {
    wal::Header::read(f).map_err(|e| Error::Wal { path: engine.wal_path.clone(), source: e })
}

impl Engine {
    /// Plans the next L0 file, if there is anything to ship. Returns it and whether
    /// more committed frames are waiting (the byte budget was reached).
    ///
    /// Continuity argument, in short: an incremental file is built only when the WAL
    /// provably still holds every frame committed after `pos` — same salts and the
    /// frame before `pos.offset` still carries our recorded checksum; or exactly one
    /// restart happened (salt-1 + 1) while we held our read transaction (see
    /// `checkpoint.rs`); or, after a gap, one restart happened and the old generation's
    /// bytes at `pos.offset` are intact and hold no committed continuation. Anything
    /// else compares every page with what the replica holds (page table, digest) or
    /// ships every page.
    pub(super) fn plan_file(&mut self, txid: TxId, under_barrier: bool) -> Result<(Option<Job>, bool)> {
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
            Some(f) => wal_header(self, f)?,
            None => None,
        };
        let header = header.filter(|h| h.page_size == page_size);
        let plan = self.plan(wal_file.as_ref(), header.as_ref(), txid)?;
        let (from, reason) = match plan {
            Plan::Nothing => return Ok((None, false)),
            Plan::Incremental(c) => (Some(c), None),
            Plan::Snapshot(r) => (None, Some(r)),
        };
        let t_scan = Instant::now();
        let wal_err = |e| Error::Wal { path: self.wal_path.clone(), source: e };
        // Under a barrier everything committed goes into one file (the tail is small).
        let budget = if reason.is_some() || under_barrier { u64::MAX } else { self.settings.max_sync_wal_bytes };
        let (seg, stop) = match (&wal_file, &header) {
            (Some(f), Some(h)) => {
                let start = from.unwrap_or_else(|| wal::Cursor::start(h));
                wal::scan(f, h, start, budget).map_err(wal_err)?
            }
            _ => (wal::Segment::default(), wal::Stop::EndOfLog),
        };
        tracing::debug!(target: "litefleet::timeline", dur_us = t_scan.elapsed().as_micros() as u64, frames = seg.frames, under_barrier, "scan");
        if reason.is_none() && seg.transactions == 0 {
            return Ok((None, false));
        }
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
        let cursor = seg.end.unwrap_or(match (&from, &header) {
            (Some(c), _) => *c,
            (None, Some(h)) => wal::Cursor::start(h),
            (None, None) => wal::Cursor { offset: 0, checksum: (0, 0) },
        });
        let pos = Position {
            txid,
            salt1,
            salt2,
            offset: cursor.offset,
            checksum: cursor.checksum,
            page_size,
            commit,
            dev,
            ino,
            digest: None,
        };
        let lock = ltx::lock_pgno(page_size);
        let src = |pgno: u32| seg.pages.get(&pgno).map_or(Src::Db, |&at| Src::Wal(at));
        // The page table of the replica at `pos`, if one is known.
        let base = self.current_table().filter(|t| t.pos.page_size == page_size);
        let mut job = Job {
            header: lh,
            pages: Vec::new(),
            mem: Vec::new(),
            wal: None,
            check: header.filter(|_| end > start).map(|h| (h, start)),
            crcs: None,
            crcs_final: false,
            pos,
            snapshot: None,
            diff: None,
            transactions: seg.transactions,
            frames: seg.frames,
        };
        let more = stop == wal::Stop::Budget;
        if let Some(reason) = reason {
            // Every page, unless the replica's own state is known (page table or
            // digest): then compare first, and ship what differs (or nothing). A
            // repair needs every page (the lifecycle turns the file into a snapshot).
            let every = (1..=commit).filter(|&p| p != lock).map(|p| (p, src(p)));
            let known = self.pos.as_ref().and_then(|p| p.digest.filter(|_| p.page_size == page_size));
            if reason == SnapshotReason::ReplicaRepair || base.is_none() && known.is_none() {
                job.pages = every.collect();
                job.crcs = Some(vec![0; commit as usize]);
                job.snapshot = Some(reason);
            } else {
                let crcs = self.page_crcs(wal_file.as_ref(), commit, &src)?;
                let prev_commit = self.pos.as_ref().map_or(0, |p| p.commit);
                let unchanged = match &base {
                    Some(t) => {
                        // Page 1 ships when the size changed: a file carries at least one page.
                        let same = |p: u32| t.same(p, crcs[p as usize - 1]) && (p != 1 || commit == prev_commit);
                        job.pages = every.filter(|&(p, _)| !same(p)).collect();
                        job.diff = Some(reason.clone());
                        job.pages.is_empty()
                    }
                    None => {
                        job.pages = every.collect();
                        job.snapshot = Some(reason.clone());
                        known == Some(pages::digest(page_size, &crcs))
                    }
                };
                job.crcs = Some(crcs);
                job.crcs_final = true;
                if unchanged {
                    // The database is the replica's, page for page: move the position
                    // to the current WAL and ship nothing.
                    let why = reason.to_string();
                    tracing::info!(db = %self.path.display(), commit, reason = %why, "after a gap the database matches the replica page for page: nothing to ship");
                    job.pos.txid = self.pos.as_ref().map_or(txid, |p| p.txid);
                    self.settle(job);
                    return Ok((None, false));
                }
            }
        } else {
            // Changed pages plus growth pages that never went through the WAL.
            let prev_commit = self.pos.as_ref().map_or(0, |p| p.commit);
            let growth = (prev_commit + 1..=commit).filter(|p| !seg.pages.contains_key(p));
            let mut v: Vec<u32> = seg.pages.keys().copied().filter(|&p| p <= commit).chain(growth).collect();
            v.sort_unstable();
            job.pages = v.into_iter().filter(|&p| p != lock).map(|p| (p, src(p))).collect();
            job.crcs = match base {
                Some(t) => Some(t.crcs),
                // No table (a small database after a release or a restart, a large one
                // after a crash): rebuild it at the new position — every page read once —
                // when the scan reached the end of the log (the database file then holds
                // no page newer than that), so the position carries a digest again.
                None if !more => {
                    job.crcs_final = true;
                    self.rebuild_crcs(wal_file.as_ref(), header.as_ref(), end, commit, &src)?
                }
                None => None,
            };
        }
        job.wal = wal_file;
        Ok((Some(job), more))
    }

    /// CRC of every page 1..=`commit` as the database holds it at the planned position
    /// (the lock page's is 0). Reads every page once.
    fn page_crcs(&self, wal: Option<&File>, commit: u32, src: &dyn Fn(u32) -> Src) -> Result<Vec<u64>> {
        let page_size = self.hot.as_ref().map_or(4096, |h| h.page_size);
        let lock = ltx::lock_pgno(page_size);
        let mut buf = vec![0u8; page_size as usize];
        let mut crcs = vec![0u64; commit as usize];
        for pgno in (1..=commit).filter(|&p| p != lock) {
            self.read_src(src(pgno), pgno, wal, &[], &mut buf)?;
            crcs[pgno as usize - 1] = PageTable::crc(&buf);
        }
        Ok(crcs)
    }

    /// The table of a small database at WAL offset `end`: the latest frame of every
    /// page in this generation up to `end`, else the database file.
    fn rebuild_crcs(
        &self,
        wal: Option<&File>,
        header: Option<&wal::Header>,
        end: u64,
        commit: u32,
        src: &dyn Fn(u32) -> Src,
    ) -> Result<Option<Vec<u64>>> {
        let whole = match (wal, header) {
            (Some(f), Some(h)) if end > wal::HEADER_SIZE => {
                let (seg, _) = wal::scan(f, h, wal::Cursor::start(h), end - wal::HEADER_SIZE)
                    .map_err(|e| Error::Wal { path: self.wal_path.clone(), source: e })?;
                if seg.end.map(|c| c.offset) != Some(end) {
                    return Ok(None);
                }
                seg.pages
            }
            _ => Default::default(),
        };
        let at = |p: u32| whole.get(&p).map_or_else(|| src(p), |&o| Src::Wal(o));
        self.page_crcs(wal, commit, &at).map(Some)
    }

    fn read_src(&self, src: Src, pgno: u32, wal: Option<&File>, mem: &[u8], buf: &mut [u8]) -> Result<()> {
        let n = buf.len();
        match (src, wal) {
            (Src::Wal(at), Some(wf)) => wf.read_exact_at(buf, at).map_err(|e| self.err_io(e)),
            (Src::Mem(i), _) => {
                buf.copy_from_slice(&mem[i * n..(i + 1) * n]);
                Ok(())
            }
            _ => {
                let db = &self.hot.as_ref().unwrap_or_else(|| unreachable!("hot while preparing")).db;
                read_page(db, pgno, buf).map_err(|e| self.err_io(e))
            }
        }
    }

    /// Copies every page of `job` into memory (under a write barrier: the copy is the
    /// only work done while writers wait), and checks the frames were not overwritten.
    pub(super) fn capture(&self, job: &mut Job) -> Result<()> {
        let n = job.header.page_size as usize;
        let mut mem = vec![0u8; job.pages.len() * n];
        for (i, (pgno, src)) in job.pages.iter_mut().enumerate() {
            self.read_src(*src, *pgno, job.wal.as_ref(), &[], &mut mem[i * n..(i + 1) * n])?;
            *src = Src::Mem(i);
        }
        job.mem = mem;
        self.check_frames(job)?;
        // The copy is what ships now; the WAL may restart before it is encoded.
        job.check = None;
        job.wal = None;
        Ok(())
    }

    /// The frames read must not have been overwritten by a WAL restart meanwhile: the
    /// header and the first frame of the range are read again.
    fn check_frames(&self, job: &Job) -> Result<()> {
        let (Some(wf), Some((h, start))) = (&job.wal, &job.check) else { return Ok(()) };
        let first = wal::read_frame_header(wf, *start).ok().flatten();
        let now = wal::Header::read(wf).ok().flatten();
        if now.map(|x| (x.salt1, x.salt2)) != Some((h.salt1, h.salt2))
            || first.map(|f| (f.salt1, f.salt2)) != Some((h.salt1, h.salt2))
        {
            return Err(self.err_io(std::io::Error::other("wal restarted while it was being read; retrying")));
        }
        Ok(())
    }

    /// Writes `job` as an LTX file to `w` and returns the writer and the number of
    /// pages written. The page table records the CRC of every page written.
    pub(super) fn encode<W: Write>(&self, job: &mut Job, w: W) -> Result<(W, u32)> {
        let t = Instant::now();
        let lerr = |e| Error::Ltx { path: self.path.clone(), source: e };
        let mut enc = ltx::Encoder::new(w, &job.header, self.settings.page_encoding).map_err(lerr)?;
        let mut buf = vec![0u8; job.header.page_size as usize];
        let track = !job.crcs_final;
        for &(pgno, src) in &job.pages {
            self.read_src(src, pgno, job.wal.as_ref(), &job.mem, &mut buf)?;
            if track && let Some(c) = job.crcs.as_mut() {
                let i = pgno as usize - 1;
                if c.len() <= i {
                    c.resize(i + 1, 0);
                }
                c[i] = PageTable::crc(&buf);
            }
            enc.encode_page(pgno, &buf).map_err(lerr)?;
        }
        if let Some(c) = job.crcs.as_mut() {
            c.resize(job.header.commit as usize, 0);
        }
        let (w, _) = enc.finish().map_err(lerr)?;
        self.check_frames(job)?;
        tracing::debug!(target: "litefleet::timeline", dur_us = t.elapsed().as_micros() as u64, pages = job.pages.len(), "encode");
        Ok((w, job.pages.len() as u32))
    }

    /// The file of `job` exists (prepared in memory, or uploaded): its position becomes
    /// ours. Returns what to report of it.
    pub(super) fn commit(&mut self, job: Job) {
        if let Some(reason) = &job.diff {
            let why = reason.to_string();
            tracing::info!(db = %self.path.display(), txid = job.header.min_txid, pages = job.pages.len(), commit = job.header.commit, reason = %why, "after a gap: shipping only the pages that differ from the replica");
        }
        self.shipped_since_checkpoint = true;
        self.settle(job);
    }

    /// Takes the position (and page table) of `job` as ours.
    fn settle(&mut self, job: Job) {
        let Job { mut pos, crcs, .. } = job;
        pos.digest = crcs.as_ref().map(|c| pages::digest(pos.page_size, c));
        self.table = crcs.map(|crcs| Box::new(PageTable { pos: pos.clone(), crcs, dirty: true }));
        self.pos = Some(pos);
        self.continuous = true;
        self.force_snapshot = None;
    }

    /// Encodes a planned (or captured) file into memory and commits it.
    pub(super) fn finish_in_memory(&mut self, mut job: Job) -> Result<Pending> {
        let (bytes, pages) = self.encode(&mut job, Vec::new())?;
        let pending = Pending {
            txid: job.header.min_txid,
            bytes,
            timestamp_ms: job.header.timestamp_ms,
            snapshot: job.snapshot.clone(),
            carried: job.carried(pages),
        };
        self.commit(job);
        Ok(pending)
    }
}
