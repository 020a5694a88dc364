//! The page table: one CRC-64 per page of a database as its replica holds it at a
//! [`Position`], kept by the replicator next to its position cache.
//!
//! After a gap in which the WAL cannot prove what happened — the application's last
//! connection closed while the tenant was cold (SQLite checkpoints and deletes the
//! WAL), the daemon restarted, a TRUNCATE checkpoint — the replicator used to ship
//! every page. With a table that describes the replica at the current position it
//! reads the database instead and ships only the pages whose CRC differs (none: no
//! upload at all). Correctness rests on one rule: a table is used only when its
//! position equals the replicator's, and the replicator updates both together from
//! the very bytes it encodes.
//!
//! Small databases get no table: below [`MIN_PAGES`] a full-page file is about as
//! cheap as a diff (one PUT either way), and 100,000 small tenants then cost no extra
//! files. On disk (`<state file>.pages`, written when the tenant is released):
//! `LFPAGES1`, u32 LE length of the position's JSON, the JSON, u64 LE page count, one
//! u64 LE CRC per page (0 for the lock page), and a u64 LE CRC-64 of all of it.

use std::path::Path;

use super::plan::Position;
use crate::ltx;

/// Tables of databases smaller than this many pages (1 MiB at 4 KiB) live only in
/// memory: after a release or a restart the replica's [`digest`] in the position cache
/// stands for them (reading ≤ 1 MiB to compare is as cheap as reading a table file).
pub const MIN_PAGES: u32 = 256;

const MAGIC: &[u8; 8] = b"LFPAGES1";

/// CRC-64 of every page of the replica's database at `pos` (index: page number − 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageTable {
    /// The position the CRCs describe.
    pub pos: Position,
    pub crcs: Vec<u64>,
    /// Changed since it was loaded or saved.
    pub dirty: bool,
}

/// One CRC-64 over a whole table: the page size, the page count and every page's CRC
/// in order. Two databases with the same digest hold the same bytes in every page (up
/// to CRC-64 collisions, the same assumption the table itself makes).
pub fn digest(page_size: u32, crcs: &[u64]) -> u64 {
    let mut b = Vec::with_capacity(12 + crcs.len() * 8);
    b.extend_from_slice(&page_size.to_le_bytes());
    b.extend_from_slice(&(crcs.len() as u64).to_le_bytes());
    for c in crcs {
        b.extend_from_slice(&c.to_le_bytes());
    }
    ltx::crc64(&b)
}

impl PageTable {
    /// The CRC a page is tracked by.
    pub fn crc(page: &[u8]) -> u64 {
        ltx::crc64(page)
    }

    /// Whether page `pgno` (1-based) is recorded with exactly this CRC.
    pub fn same(&self, pgno: u32, crc: u64) -> bool {
        self.crcs.get(pgno as usize - 1) == Some(&crc)
    }

    /// Records page `pgno`'s CRC, growing the table if needed.
    pub fn set(&mut self, pgno: u32, crc: u64) {
        let i = pgno as usize - 1;
        if self.crcs.len() <= i {
            self.crcs.resize(i + 1, 0);
        }
        self.crcs[i] = crc;
        self.dirty = true;
    }

    /// The file's bytes.
    fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&self.pos).unwrap_or_default();
        let mut b = Vec::with_capacity(8 + 4 + json.len() + 8 + self.crcs.len() * 8 + 8);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&(json.len() as u32).to_le_bytes());
        b.extend_from_slice(&json);
        b.extend_from_slice(&(self.crcs.len() as u64).to_le_bytes());
        for c in &self.crcs {
            b.extend_from_slice(&c.to_le_bytes());
        }
        let sum = ltx::crc64(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// Parses a file; `None` for anything damaged or of another format.
    fn decode(b: &[u8]) -> Option<PageTable> {
        let (body, sum) = b.split_at_checked(b.len().checked_sub(8)?)?;
        if ltx::crc64(body) != u64::from_le_bytes(sum.try_into().ok()?) {
            return None;
        }
        let rest = body.strip_prefix(MAGIC)?;
        let (len, rest) = rest.split_at_checked(4)?;
        let (json, rest) = rest.split_at_checked(u32::from_le_bytes(len.try_into().ok()?) as usize)?;
        let pos: Position = serde_json::from_slice(json).ok()?;
        let (n, rest) = rest.split_at_checked(8)?;
        let n = usize::try_from(u64::from_le_bytes(n.try_into().ok()?)).ok()?;
        if rest.len() != n.checked_mul(8)? {
            return None;
        }
        let crcs = rest.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default())).collect();
        Some(PageTable { pos, crcs, dirty: false })
    }

    /// Writes the table atomically (temp file, then rename).
    pub fn save(&mut self, path: &Path) -> std::io::Result<()> {
        crate::durable::write(path, &self.encode())?;
        self.dirty = false;
        Ok(())
    }

    /// The table saved at `path` if it describes exactly `pos`. A table for any other
    /// position can never become right again (positions only move on), so it is
    /// removed.
    pub fn load(path: &Path, pos: &Position) -> Option<PageTable> {
        let bytes = std::fs::read(path).ok()?;
        match PageTable::decode(&bytes) {
            Some(t) if t.pos == *pos => Some(t),
            _ => {
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(txid: u64) -> Position {
        Position {
            txid,
            salt1: 1,
            salt2: 2,
            offset: 4152,
            checksum: (3, 4),
            page_size: 4096,
            commit: 3,
            dev: 5,
            ino: 6,
            digest: Some(9),
        }
    }

    #[test]
    fn saved_table_loads_only_for_its_position_and_damage_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("t.pages");
        let mut t = PageTable { pos: pos(7), crcs: vec![], dirty: false };
        t.set(3, 30);
        t.set(1, 10);
        assert_eq!(t.crcs, [10, 0, 30]);
        assert!(t.dirty && t.same(3, 30) && !t.same(2, 30) && !t.same(4, 0));
        t.save(&path).unwrap();
        assert!(!t.dirty);
        assert_eq!(PageTable::load(&path, &pos(7)), Some(t.clone()));

        // One flipped bit anywhere: not a table.
        let good = std::fs::read(&path).unwrap();
        for i in [0, 9, 20, good.len() - 12, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert_eq!(PageTable::decode(&bad), None, "byte {i}");
        }
        assert_eq!(PageTable::decode(&good[..good.len() - 8]), None);

        // Another position: not used, and removed for good.
        assert_eq!(PageTable::load(&path, &pos(8)), None);
        assert!(!path.exists());
        assert_eq!(PageTable::load(&path, &pos(7)), None);
    }
}
