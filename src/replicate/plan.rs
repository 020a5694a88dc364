//! Where a sync starts: the [`Position`] a replicator recorded, and the continuity
//! argument that decides whether the WAL still holds every frame committed after it.
//!
//! SQLite overwrites WAL frames only when the log *restarts* (a new generation at
//! offset 32, salt-1 incremented by one, a fresh salt-2), and a restart needs every
//! frame backfilled and no reader holding a WAL read mark. The replicator holds a read
//! transaction at all times except inside its own barrier-protected checkpoint, so:
//!
//! * same salts and the frame before our offset still carries our recorded checksum:
//!   every frame after the offset is new, and the checksum chain continues from ours;
//! * exactly one restart (salt-1 + 1) while our read transaction was held: everything
//!   of the old generation had shipped (see the barrier in `engine.rs`);
//! * after a gap (restart of the daemon, the tenant released while idle), exactly one
//!   restart is accepted only if the old generation provably did not grow past our
//!   offset: the WAL is at least as long as our offset, the new generation's frames end
//!   before it, and the bytes there are not a committed continuation of the old chain.
//!
//! Anything else — a truncated or deleted WAL, salt-1 jumping by more, a new inode, a
//! changed page size — is a [`Plan::Snapshot`]: every page is compared with the page
//! table, or shipped. `docs/architecture.md` has the whole argument.

use std::fs::File;

use serde::{Deserialize, Serialize};

use super::engine::Engine;
use super::{Error, Result};
use crate::ltx::TxId;
use crate::wal;

/// What was last shipped (prepared, and uploaded once `pending` drains): the TXID and
/// where in the WAL the next frame must continue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// TXID of the last L0 file.
    pub txid: TxId,
    /// WAL salts of the generation the position is in (0, 0: no WAL at the time).
    pub salt1: u32,
    pub salt2: u32,
    /// WAL byte offset just after the last shipped commit frame (32: nothing of this
    /// generation shipped yet; 0: no WAL).
    pub offset: u64,
    /// SQLite's running checksum at `offset` (the seed of the next frame).
    pub checksum: (u32, u32),
    /// Database page size.
    pub page_size: u32,
    /// Database size in pages at `txid`.
    pub commit: u32,
    /// Identity of the database file (device, inode) the position belongs to.
    pub dev: u64,
    pub ino: u64,
    /// Digest of every page of the replica's database at `txid`
    /// ([`pages::digest`](super::pages::digest)), when known: after a gap, a database
    /// whose pages give the same digest is the replica's and nothing ships.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<u64>,
}

/// Why a sync shipped a full-page file instead of an incremental one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    FirstSync,
    NoPosition,
    FileReplaced,
    WalMissing,
    WalOverwritten,
    SaltReset,
    RestartUnproven,
    PageSizeChanged,
    AfterTruncate,
    ReplicaRepair,
}

impl std::fmt::Display for SnapshotReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotReason::FirstSync => "first sync of this replica",
            SnapshotReason::NoPosition => "no known position (restart without state, or replica ahead of local state)",
            SnapshotReason::FileReplaced => "database file replaced (new inode)",
            SnapshotReason::WalMissing => "wal missing or truncated since the last sync",
            SnapshotReason::WalOverwritten => "last shipped wal frame changed (wal overwritten by another process)",
            SnapshotReason::SaltReset => "wal header salt reset",
            SnapshotReason::RestartUnproven => "wal restarted and continuity cannot be proven",
            SnapshotReason::PageSizeChanged => "page size changed",
            SnapshotReason::AfterTruncate => "checkpoint boundary after TRUNCATE",
            SnapshotReason::ReplicaRepair => "asked for by the lifecycle to repair a damaged replica",
        })
    }
}

/// What a sync does.
pub(super) enum Plan {
    /// Nothing was committed since the position.
    Nothing,
    /// Ship the committed frames after this cursor.
    Incremental(wal::Cursor),
    /// Continuity cannot be proven: compare or ship every page.
    Snapshot(SnapshotReason),
}

/// Whether a frame with the header's salts sits at `offset` (part of that generation,
/// committed or not).
fn frame_of(f: &File, h: &wal::Header, offset: u64) -> std::result::Result<bool, wal::Error> {
    Ok(wal::read_frame_header(f, offset)?.is_some_and(|fh| (fh.salt1, fh.salt2) == (h.salt1, h.salt2)))
}

impl Engine {
    /// Decides between nothing to do, an incremental file from a cursor, or a snapshot.
    pub(super) fn plan(&self, wal_file: Option<&File>, header: Option<&wal::Header>, txid: TxId) -> Result<Plan> {
        if let Some(r) = &self.force_snapshot {
            return Ok(Plan::Snapshot(r.clone()));
        }
        let Some(pos) = &self.pos else {
            return Ok(Plan::Snapshot(if txid == 1 { SnapshotReason::FirstSync } else { SnapshotReason::NoPosition }));
        };
        let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("plan runs hot"));
        if (pos.dev, pos.ino) != (hot.dev, hot.ino) {
            return Ok(Plan::Snapshot(SnapshotReason::FileReplaced));
        }
        if pos.page_size != hot.page_size {
            return Ok(Plan::Snapshot(SnapshotReason::PageSizeChanged));
        }
        let (Some(f), Some(h)) = (wal_file, header) else {
            // No WAL now. With our read transaction held since `pos`, nothing could be
            // checkpointed into the database file, so nothing changed.
            let unchanged = self.continuous && pos.offset == 0;
            return Ok(if unchanged { Plan::Nothing } else { Plan::Snapshot(SnapshotReason::WalMissing) });
        };
        let wal_err = |e| Error::Wal { path: self.wal_path.clone(), source: e };
        if pos.offset == 0 {
            // We last saw no WAL; a WAL appeared. Continuous: the database file was
            // frozen by our read lock, so the whole new log is the change.
            return Ok(if self.continuous {
                Plan::Incremental(wal::Cursor::start(h))
            } else {
                Plan::Snapshot(SnapshotReason::WalMissing)
            });
        }
        if (h.salt1, h.salt2) == (pos.salt1, pos.salt2) {
            if pos.offset == wal::HEADER_SIZE {
                return Ok(if pos.checksum == h.checksum {
                    Plan::Incremental(wal::Cursor::start(h))
                } else {
                    Plan::Snapshot(SnapshotReason::WalOverwritten)
                });
            }
            let last = wal::read_frame_header(f, pos.offset - h.frame_size()).map_err(wal_err)?;
            return Ok(match last {
                Some(fh) if (fh.salt1, fh.salt2) == (pos.salt1, pos.salt2) && fh.checksum == pos.checksum => {
                    Plan::Incremental(wal::Cursor { offset: pos.offset, checksum: pos.checksum })
                }
                _ => Plan::Snapshot(SnapshotReason::WalOverwritten),
            });
        }
        if h.salt1 != pos.salt1.wrapping_add(1) {
            return Ok(Plan::Snapshot(SnapshotReason::SaltReset));
        }
        if self.continuous {
            return Ok(Plan::Incremental(wal::Cursor::start(h)));
        }
        // After a gap: one restart. The old generation must not have grown past
        // `pos.offset` with a committed transaction, and the new generation must not
        // have reached `pos.offset` (else it may have overwritten such frames).
        let len = f.metadata().map_err(|e| Error::Io { path: self.wal_path.clone(), source: e })?.len();
        if len < pos.offset {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        let (new_gen, _) = wal::scan(f, h, wal::Cursor::start(h), u64::MAX).map_err(wal_err)?;
        let new_end = new_gen.end.map(|c| c.offset).unwrap_or(wal::HEADER_SIZE);
        // Frames of an open transaction may lie past the last commit, so compare with
        // the physical frames of the new generation, committed or not.
        if new_end >= pos.offset || frame_of(f, h, pos.offset).map_err(wal_err)? {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        let old = wal::Header { salt1: pos.salt1, salt2: pos.salt2, ..*h };
        let (lost, _) = wal::scan(f, &old, wal::Cursor { offset: pos.offset, checksum: pos.checksum }, u64::MAX)
            .map_err(wal_err)?;
        if lost.transactions > 0 {
            return Ok(Plan::Snapshot(SnapshotReason::RestartUnproven));
        }
        Ok(Plan::Incremental(wal::Cursor::start(h)))
    }
}
