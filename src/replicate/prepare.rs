//! Preparing one L0 file: scan the WAL from the planned cursor, encode the committed
//! pages (or every page, or only those that differ from the page table), and verify
//! that the frames read were not overwritten meanwhile.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{SystemTime, UNIX_EPOCH};

use super::engine::{Engine, read_page};
use super::pages::{self, PageTable};
use super::plan::{Plan, Position, SnapshotReason};
use super::{Error, Pending, Result};
use crate::ltx::{self, TxId};
use crate::wal;

impl Engine {
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
    pub(super) fn prepare(&mut self, txid: TxId, under_barrier: bool) -> Result<(Option<Pending>, bool)> {
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
        // A repair needs every page (the lifecycle turns the file into a snapshot).
        let diff = reason.as_ref().is_some_and(|r| *r != SnapshotReason::ReplicaRepair)
            && base.as_ref().is_some_and(|t| t.pos.page_size == page_size);
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
}
