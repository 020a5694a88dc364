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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// Every file, sorted by (level, min TXID, max TXID): one allocation per tenant
    /// (a map of per-level vectors cost ~1 KB per idle tenant at 100,000).
    files: Vec<FileInfo>,
}

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

    /// Lists every level of `replica` (ten LISTs).
    pub async fn load(replica: &Replica) -> Result<Catalog> {
        Ok(Catalog::new(replica.list_all().await?))
    }

    /// Records a file we wrote (or learned of).
    pub fn add(&mut self, f: FileInfo) {
        match self.files.binary_search_by_key(&sort_key(&f), sort_key) {
            Ok(i) => self.files[i] = f,
            Err(i) => self.files.insert(i, f),
        }
    }

    /// Forgets a file (deleted).
    pub fn remove(&mut self, f: &FileInfo) {
        if let Ok(i) = self.files.binary_search_by_key(&sort_key(f), sort_key) {
            self.files.remove(i);
        }
        // A settled replica keeps a handful of files: give back what a backlog grew.
        if self.files.capacity() > 2 * self.files.len() + 4 {
            self.files.shrink_to_fit();
        }
    }

    /// Files at one level, sorted by TXID.
    pub fn level(&self, level: u32) -> &[FileInfo] {
        let start = self.files.partition_point(|f| f.level < level);
        let end = self.files.partition_point(|f| f.level <= level);
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

    /// Newest TXID at one level.
    pub fn max_txid(&self, level: u32) -> Option<TxId> {
        self.level(level).iter().map(|f| f.max_txid).max()
    }

    /// Newest TXID anywhere.
    pub fn newest(&self) -> Option<TxId> {
        self.files.iter().map(|f| f.max_txid).max()
    }

    /// The restore chain to the newest TXID ([`chain`]); `None` if no chain starts at
    /// TXID 1.
    pub fn chain(&self) -> Option<Vec<FileInfo>> {
        let chain = chain(&self.files);
        chain.first().is_some_and(|f| f.min_txid == 1).then_some(chain)
    }

    /// What a restore can reach, or why nothing can be restored.
    pub fn window(&self) -> std::result::Result<Window, Unrestorable> {
        if self.files.is_empty() {
            return Err(Unrestorable::Empty);
        }
        let chain = chain(&self.files);
        let Some(first) = chain.first().filter(|f| f.min_txid == 1) else {
            let first = self.files.iter().map(|f| f.min_txid).min().unwrap_or(0);
            return Err(Unrestorable::NoStart { first });
        };
        let last = chain.last().unwrap_or(first);
        if let Some(next) = self.files.iter().filter(|f| f.max_txid > last.max_txid).map(|f| f.min_txid).min() {
            return Err(Unrestorable::Gap { after: last.max_txid, next });
        }
        // The earliest point a restore by TXID can stop at: the end of the smallest file
        // that starts at TXID 1.
        let earliest = self.files.iter().filter(|f| f.min_txid == 1).min_by_key(|f| f.max_txid).unwrap_or(first);
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn f(level: u32, min: TxId, max: TxId) -> FileInfo {
        FileInfo { level, min_txid: min, max_txid: max, size: 1, created: Some(UNIX_EPOCH) }
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
        assert_eq!((w.files, w.bytes), (2, 2), "L1 1-3 then L0 4");
        let gap = Catalog::new([f(0, 1, 1), f(0, 3, 3)]);
        assert_eq!(gap.window(), Err(Unrestorable::Gap { after: 1, next: 3 }));
        assert_eq!(Catalog::new([f(0, 2, 2)]).window(), Err(Unrestorable::NoStart { first: 2 }));
        assert_eq!(Catalog::default().window(), Err(Unrestorable::Empty));
    }
}
