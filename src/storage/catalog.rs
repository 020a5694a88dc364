//! What a replica holds, read from one listing: its files by level, the restore chain
//! and the restore window.
//!
//! This is the one place that turns a list of LTX files into answers: the lifecycle
//! keeps a [`Catalog`] per replica and decides compactions from it; restore plans with
//! [`chain`]; `litefleet tenants`, the tenant page and the API show [`Window`]. None of
//! it reads a file's bytes — times are what the listing reports (`FileInfo::created`:
//! the object's upload time on S3, the LTX header time that `put` sets as the mtime on
//! a folder) — so a window costs the LISTs of one replica and nothing more.

use std::time::SystemTime;

use super::{FileInfo, Replica, Result};
use crate::ltx::{self, TxId};

/// A replica's files, by level, as last listed plus our own writes and deletes.
///
/// Each file also carries what is known of its bytes: *verified* (written by this
/// process, or downloaded and decoded to its trailer checksum) or *damaged* (torn by an
/// interrupted write of an older version or another tool, or failing to decode). A
/// damaged file is never part of a restore chain or a compaction; nothing is ever
/// deleted on the strength of a file that is not verified.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Every file, sorted by (level, min TXID, max TXID): one allocation per tenant
    /// (a map of per-level vectors cost ~1 KB per idle tenant at 100,000).
    files: Vec<FileInfo>,
    /// [`VERIFIED`] / [`DAMAGED`] bits of `files[i]` (one byte per file).
    marks: Vec<u8>,
}

/// The file's bytes are known to be a complete, valid LTX file.
const VERIFIED: u8 = 1;
/// The file's bytes are known to be unusable.
const DAMAGED: u8 = 2;
/// The file holds every page of the database at its TXID (a full-page L0 file a
/// replicator of ours reported): a snapshot's content.
const FULL_PAGE: u8 = 4;

/// The order of a catalog.
fn sort_key(f: &FileInfo) -> (u32, TxId, TxId) {
    (f.level, f.min_txid, f.max_txid)
}

impl Catalog {
    /// A catalog of these files.
    pub fn new(files: impl IntoIterator<Item = FileInfo>) -> Catalog {
        let mut c = Catalog::default();
        for f in files {
            c.add(f);
        }
        c
    }

    /// Lists every level of `replica` (one recursive listing).
    pub async fn load(replica: &Replica) -> Result<Catalog> {
        Ok(Catalog::new(replica.list_all().await?))
    }

    /// [`Catalog::load`] for the lifecycle: also removes the stale temporary files a
    /// crash left under the replica (found by the same listing).
    pub async fn load_sweeping(replica: &Replica) -> Result<Catalog> {
        let (files, temps) = replica.list_all_and_temps().await?;
        if !temps.is_empty() {
            let removed = replica.remove_temps(&temps).await;
            tracing::info!("lifecycle: removed {removed} temporary file(s) a crash left in {}", replica.location());
        }
        Ok(Catalog::new(files))
    }

    /// Records a file learned of by a listing (its bytes unknown; a torn one — shorter
    /// than any LTX file — is damaged at once).
    pub fn add(&mut self, f: FileInfo) {
        let mark = if f.is_torn() { DAMAGED } else { 0 };
        self.insert(f, mark);
    }

    /// Records a file this process wrote (or read whole and verified).
    pub fn add_verified(&mut self, f: FileInfo) {
        self.insert(f, VERIFIED);
    }

    /// Records a full-page file a replicator of ours wrote (see [`Catalog::full_pages`]).
    pub fn add_full_page(&mut self, f: FileInfo) {
        self.insert(f, VERIFIED | FULL_PAGE);
    }

    fn insert(&mut self, f: FileInfo, mark: u8) {
        match self.files.binary_search_by_key(&sort_key(&f), sort_key) {
            Ok(i) => {
                self.files[i] = f;
                self.marks[i] = mark;
            }
            Err(i) => {
                self.files.insert(i, f);
                self.marks.insert(i, mark);
            }
        }
    }

    /// Forgets a file (deleted).
    pub fn remove(&mut self, f: &FileInfo) {
        if let Ok(i) = self.files.binary_search_by_key(&sort_key(f), sort_key) {
            self.files.remove(i);
            self.marks.remove(i);
        }
        // A settled replica keeps a handful of files: give back what a backlog grew.
        if self.files.capacity() > 2 * self.files.len() + 4 {
            self.files.shrink_to_fit();
            self.marks.shrink_to_fit();
        }
    }

    fn mark(&self, f: &FileInfo) -> u8 {
        self.files.binary_search_by_key(&sort_key(f), sort_key).map_or(0, |i| self.marks[i])
    }

    fn set_mark(&mut self, f: &FileInfo, mark: u8) {
        if let Ok(i) = self.files.binary_search_by_key(&sort_key(f), sort_key) {
            self.marks[i] = mark;
        }
    }

    /// Records that a file's bytes were read whole and are a valid LTX file.
    pub fn mark_verified(&mut self, f: &FileInfo) {
        let m = self.mark(f);
        self.set_mark(f, (m & FULL_PAGE) | VERIFIED);
    }

    /// Records that a file is unusable (it stays listed, so its TXIDs are never reused,
    /// but no chain, compaction or deletion builds on it).
    pub fn mark_damaged(&mut self, f: &FileInfo) {
        self.set_mark(f, DAMAGED);
    }

    /// Whether a file's bytes are known to be valid.
    pub fn is_verified(&self, f: &FileInfo) -> bool {
        self.mark(f) & VERIFIED != 0
    }

    /// Whether a file is known to be unusable.
    pub fn is_damaged(&self, f: &FileInfo) -> bool {
        self.mark(f) & DAMAGED != 0
    }

    /// The damaged files, by level then TXID.
    pub fn damaged(&self) -> impl Iterator<Item = &FileInfo> {
        self.files.iter().zip(&self.marks).filter(|(_, m)| **m & DAMAGED != 0).map(|(f, _)| f)
    }

    /// Files at one level that are not damaged, sorted by TXID.
    pub fn usable(&self, level: u32) -> impl DoubleEndedIterator<Item = &FileInfo> {
        let (start, end) = self.bounds(level);
        self.files[start..end].iter().zip(&self.marks[start..end]).filter(|(_, m)| **m & DAMAGED == 0).map(|(f, _)| f)
    }

    /// Usable files at one level known to hold every page at their TXID, by TXID.
    pub fn full_pages(&self, level: u32) -> impl DoubleEndedIterator<Item = &FileInfo> {
        let (start, end) = self.bounds(level);
        let files = self.files[start..end].iter().zip(&self.marks[start..end]);
        files.filter(|(_, m)| **m & (DAMAGED | FULL_PAGE) == FULL_PAGE).map(|(f, _)| f)
    }

    fn usable_all(&self) -> Vec<FileInfo> {
        self.files.iter().zip(&self.marks).filter(|(_, m)| **m & DAMAGED == 0).map(|(f, _)| f.clone()).collect()
    }

    fn bounds(&self, level: u32) -> (usize, usize) {
        (self.files.partition_point(|f| f.level < level), self.files.partition_point(|f| f.level <= level))
    }

    /// Files at one level (damaged ones too), sorted by TXID.
    pub fn level(&self, level: u32) -> &[FileInfo] {
        let (start, end) = self.bounds(level);
        &self.files[start..end]
    }

    /// Every file, by level then TXID.
    pub fn files(&self) -> &[FileInfo] {
        &self.files
    }

    /// Whether it holds no file.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Newest TXID at one level, of the usable files.
    pub fn max_txid(&self, level: u32) -> Option<TxId> {
        self.usable(level).map(|f| f.max_txid).max()
    }

    /// Newest TXID anywhere.
    pub fn newest(&self) -> Option<TxId> {
        self.files.iter().map(|f| f.max_txid).max()
    }

    /// The restore chain to the newest TXID ([`chain`]); `None` if no chain starts at
    /// TXID 1.
    pub fn chain(&self) -> Option<Vec<FileInfo>> {
        let chain = chain(&self.usable_all());
        chain.first().is_some_and(|f| f.min_txid == 1).then_some(chain)
    }

    /// What a restore can reach, or why nothing can be restored.
    pub fn window(&self) -> std::result::Result<Window, Unrestorable> {
        if self.files.is_empty() {
            return Err(Unrestorable::Empty);
        }
        let usable = self.usable_all();
        let chain = chain(&usable);
        let Some(first) = chain.first().filter(|f| f.min_txid == 1) else {
            let first = usable.iter().map(|f| f.min_txid).min().unwrap_or(0);
            return Err(Unrestorable::NoStart { first });
        };
        let last = chain.last().unwrap_or(first);
        if let Some(next) = self.files.iter().filter(|f| f.max_txid > last.max_txid).map(|f| f.min_txid).min() {
            return Err(Unrestorable::Gap { after: last.max_txid, next });
        }
        // The earliest point a restore by TXID can stop at: the end of the smallest file
        // that starts at TXID 1.
        let earliest = usable.iter().filter(|f| f.min_txid == 1).min_by_key(|f| f.max_txid).unwrap_or(first);
        Ok(Window {
            earliest_txid: earliest.max_txid,
            earliest_at: earliest.created,
            latest_txid: last.max_txid,
            latest_at: last.created,
            files: chain.len(),
            bytes: chain.iter().map(|f| f.size).sum(),
        })
    }
}

/// The span a replica can be restored to, from its listing alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The earliest TXID a restore can stop at (the end of the smallest file that starts
    /// at TXID 1).
    pub earliest_txid: TxId,
    /// When that file was written (listing time).
    pub earliest_at: Option<SystemTime>,
    /// The latest TXID (what a plain restore reaches).
    pub latest_txid: TxId,
    /// When the file holding it was written.
    pub latest_at: Option<SystemTime>,
    /// Files a plain restore downloads.
    pub files: usize,
    /// Bytes a plain restore downloads.
    pub bytes: u64,
}

/// Why a replica's files restore to nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrestorable {
    /// No LTX file at all.
    #[error("no backups found")]
    Empty,
    /// No chain of files starts at TXID 1.
    #[error("the backup chain does not start at TXID 1 (first file starts at {first:016x})")]
    NoStart {
        /// The lowest TXID any file starts at.
        first: TxId,
    },
    /// The chain stops before the newest file.
    #[error("gap in the backup chain after TXID {after:016x} (next file starts at {next:016x})")]
    Gap {
        /// Where the chain stops.
        after: TxId,
        /// Where the next file starts.
        next: TxId,
    },
}

/// Litestream's `CalcRestorePlan` chain over `files`: the newest snapshot (level 9,
/// `min = 1`), then repeatedly the file at any lower level that is contiguous with the
/// chain and reaches the highest TXID (ties: lower `min`, then higher level). Torn
/// files (shorter than any LTX file) are never chosen, so a restore goes around them
/// through the older files that cover the same TXIDs, where those still exist. The
/// caller checks that it starts at TXID 1 and reaches far enough.
pub fn chain(files: &[FileInfo]) -> Vec<FileInfo> {
    let files: Vec<&FileInfo> = files.iter().filter(|f| !f.is_torn()).collect();
    let mut chain: Vec<FileInfo> = Vec::new();
    let mut cur: TxId = 0;
    if let Some(snap) =
        files.iter().filter(|f| f.level == ltx::SNAPSHOT_LEVEL && f.min_txid == 1).max_by_key(|f| f.max_txid)
    {
        cur = snap.max_txid;
        chain.push((*snap).clone());
    }
    loop {
        let best = files
            .iter()
            .filter(|f| f.level < ltx::SNAPSHOT_LEVEL && ltx::is_contiguous(cur, f.min_txid, f.max_txid))
            .max_by(|a, b| a.max_txid.cmp(&b.max_txid).then(b.min_txid.cmp(&a.min_txid)).then(a.level.cmp(&b.level)));
        match best {
            Some(f) => {
                cur = f.max_txid;
                chain.push((*f).clone());
            }
            None => break,
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn f(level: u32, min: TxId, max: TxId) -> FileInfo {
        FileInfo { level, min_txid: min, max_txid: max, size: 200, created: Some(UNIX_EPOCH) }
    }

    /// Regression (issue 18): a full disk left a 0-byte L1 file under its final name; the
    /// chain took it (it reaches furthest), so the whole backup was unrestorable, and the
    /// lifecycle counted it as covering the L0 files it then deleted. A torn file is
    /// damaged from the listing on: the chain goes around it, nothing counts on it.
    #[test]
    fn a_torn_file_is_damaged_and_the_chain_goes_around_it() {
        let torn = FileInfo { size: 0, ..f(1, 1, 7) };
        let cat = Catalog::new([f(0, 1, 1), f(0, 2, 2), f(0, 3, 7), torn.clone(), f(0, 8, 8)]);
        assert!(cat.is_damaged(&torn) && !cat.is_verified(&torn));
        assert_eq!(cat.damaged().cloned().collect::<Vec<_>>(), std::slice::from_ref(&torn));
        assert_eq!(cat.max_txid(1), None, "a damaged file covers nothing");
        let chain: Vec<TxId> = cat.chain().unwrap_or_default().iter().map(|f| f.max_txid).collect();
        assert_eq!(chain, [1, 2, 7, 8]);
        assert_eq!(cat.window().map(|w| w.latest_txid), Ok(8));
        // A damaged file that nothing covers breaks the window, and says where.
        let mut broken = Catalog::new([f(0, 1, 1), f(0, 2, 2), f(0, 3, 3)]);
        broken.mark_damaged(&f(0, 2, 2));
        assert_eq!(broken.window(), Err(Unrestorable::Gap { after: 1, next: 2 }));
        broken.mark_verified(&f(0, 2, 2));
        assert!(broken.window().is_ok());
    }

    #[test]
    fn catalog_keeps_levels_apart_in_txid_order_and_replaces_by_name() {
        let mut c = Catalog::new([f(1, 1, 4), f(0, 6, 6), f(9, 1, 4), f(0, 5, 5), f(1, 5, 6)]);
        assert_eq!(c.level(0), [f(0, 5, 5), f(0, 6, 6)]);
        assert_eq!(c.level(1), [f(1, 1, 4), f(1, 5, 6)]);
        assert_eq!(c.level(2), []);
        assert_eq!(c.level(9), [f(9, 1, 4)]);
        let mut bigger = f(0, 6, 6);
        bigger.size = 99;
        c.add(bigger.clone());
        assert_eq!(c.level(0), [f(0, 5, 5), bigger]);
        c.remove(&f(0, 5, 5));
        c.remove(&f(3, 1, 1)); // not there: nothing happens
        assert_eq!(c.files().len(), 4);
        assert_eq!(c.files().iter().map(|f| f.level).collect::<Vec<_>>(), [0, 1, 1, 9]);
    }

    #[test]
    fn the_chain_prefers_snapshots_and_the_longest_contiguous_files() {
        let cat = Catalog::new([f(9, 1, 2), f(1, 1, 4), f(0, 3, 3), f(0, 4, 4), f(0, 5, 5), f(0, 6, 6)]);
        let chain: Vec<(u32, TxId, TxId)> =
            cat.chain().unwrap_or_default().iter().map(|f| (f.level, f.min_txid, f.max_txid)).collect();
        // Litestream's observed plan for the same files: L9 1-2, L1 1-4, L0 5, L0 6.
        assert_eq!(chain, [(9, 1, 2), (1, 1, 4), (0, 5, 5), (0, 6, 6)]);
        assert!(Catalog::new([f(0, 2, 2)]).chain().is_none(), "no chain without TXID 1");
    }

    #[test]
    fn the_window_spans_the_first_restorable_point_to_the_newest_and_names_gaps() {
        let at = |s: u64| Some(UNIX_EPOCH + Duration::from_secs(s));
        let cat = Catalog::new([
            FileInfo { created: at(10), ..f(1, 1, 3) },
            FileInfo { created: at(5), ..f(0, 1, 1) },
            FileInfo { created: at(20), ..f(0, 4, 4) },
        ]);
        let w = cat.window().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((w.earliest_txid, w.earliest_at, w.latest_txid, w.latest_at), (1, at(5), 4, at(20)));
        assert_eq!((w.files, w.bytes), (2, 400), "L1 1-3 then L0 4");
        let gap = Catalog::new([f(0, 1, 1), f(0, 3, 3)]);
        assert_eq!(gap.window(), Err(Unrestorable::Gap { after: 1, next: 3 }));
        assert_eq!(Catalog::new([f(0, 2, 2)]).window(), Err(Unrestorable::NoStart { first: 2 }));
        assert_eq!(Catalog::default().window(), Err(Unrestorable::Empty));
    }
}
