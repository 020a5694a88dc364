//! Replica lifecycle: compaction levels, snapshots and retention, in Litestream v0.5's
//! shape, so a replica stays small, restores read few files, and `litestream restore`
//! still restores it.
//!
//! This module owns the *rules* for one replica — which files to merge into which
//! level, when a snapshot is due, which files may be deleted — applied to a
//! [`Catalog`] (`storage::catalog`: the replica's files, cached and updated by our own
//! writes, so a pass costs no LIST). [`maintain`] runs one pass at a given time and says when the replica
//! next needs attention; `None` means never again until new L0 files arrive: an idle
//! tenant costs nothing. The fleet's scheduler decides *when* to call it.
//!
//! Rules (Litestream v0.5; see `docs/architecture.md`):
//! - Level L (1 ≤ L ≤ 8) is compacted at wall-clock boundaries of its interval
//!   (`now` truncated to the interval) when its newest file was written before the
//!   boundary and level L-1 holds newer TXIDs: a k-way merge of the contiguous level L-1
//!   files with `min > max(L)`.
//! - Level 9 holds snapshots (`min = 1`): at a boundary of `snapshot_interval`, when
//!   the newest snapshot predates it and newer TXIDs exist, the restore chain up to the
//!   newest TXID is merged into one full snapshot.
//! - L0 files covered by level 1 and older than `l0_retention` are deleted, never the
//!   newest L0 (the replicator learns the next TXID from it). Snapshots older than
//!   `snapshot_retention` are deleted, never the newest; then files of levels 1–8 whose
//!   `max` is below the newest deleted snapshot's `max` go too. A restore to any time
//!   after the oldest kept snapshot keeps every file it needs.
//!
//! Damage (see `repair`): a file that is torn (shorter than any LTX file) or fails to
//! decode is marked damaged in the catalog and named in the log; no chain, compaction
//! or deletion builds on it. Nothing is deleted on the strength of a higher-level file
//! this process has not verified (written itself, or downloaded and decoded to its
//! trailer checksum). A damaged replica is repaired by a level-9 snapshot made from a
//! newer full-page file, which the tenant is asked to ship.
//!
//! It must never delete a file whose TXIDs are not covered by a file that stays, never
//! write a level file that is not a contiguous merge, and never touch the tenant's
//! database.

mod repair;
mod scheduler;

pub use scheduler::{Damage, Scheduler};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::ltx::{self, Compactor};
use crate::storage::catalog::Catalog;
use crate::storage::{self, FileInfo, Replica};

/// Highest compaction level below snapshots.
pub const MAX_COMPACTION_LEVEL: u32 = 8;
/// Litestream's default compaction intervals for L1, L2, L3.
pub const DEFAULT_LEVELS: [Duration; 3] =
    [Duration::from_secs(30), Duration::from_secs(5 * 60), Duration::from_secs(60 * 60)];
/// Litestream's default snapshot interval.
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
/// Litestream's default snapshot retention.
pub const DEFAULT_SNAPSHOT_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);
/// Litestream's default L0 retention.
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(5 * 60);

/// What to keep and how to compact.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Compaction intervals of levels 1, 2, …
    pub levels: Vec<Duration>,
    /// How often a full snapshot (level 9) is written.
    pub snapshot_interval: Duration,
    /// How long snapshots (and what they need) are kept; the newest always stays.
    pub snapshot_retention: Duration,
    /// How long L0 files stay after a level-1 file covers them.
    pub l0_retention: Duration,
    /// Whether anything is ever deleted (off: rely on the bucket's lifecycle rules).
    pub retention: bool,
    /// Page encoding of the files we write.
    pub encoding: ltx::PageEncoding,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            snapshot_retention: DEFAULT_SNAPSHOT_RETENTION,
            l0_retention: DEFAULT_L0_RETENTION,
            retention: true,
            encoding: ltx::PageEncoding::Lz4Block,
        }
    }
}

/// Errors of a lifecycle pass; each names the replica file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("{file}")]
    Ltx {
        file: String,
        #[source]
        source: ltx::Error,
    },
    #[error("compaction task failed: {0}")]
    Join(String),
}

/// What one pass did, and when the replica next needs a pass.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Files written (level, min, max).
    pub written: Vec<FileInfo>,
    /// Files deleted.
    pub deleted: Vec<FileInfo>,
    /// Files found damaged by this pass, with why.
    pub damaged: Vec<(FileInfo, String)>,
    /// The replica holds damage no snapshot covers yet, and no full-page file above it
    /// to make one from: the tenant should ship one (see `repair`).
    pub needs_snapshot: bool,
    /// A repair snapshot written by this pass: restores to the newest TXID work again.
    pub repaired: Option<FileInfo>,
    /// When to run again; `None`: nothing to do until new L0 files arrive.
    pub next: Option<SystemTime>,
}

/// `t` truncated to a multiple of `interval` since the epoch (Litestream's
/// `now.Truncate(interval)`).
pub fn boundary(t: SystemTime, interval: Duration) -> SystemTime {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let step = interval.as_nanos().max(1);
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(since - since % step).unwrap_or(u64::MAX))
}

fn created(f: &FileInfo) -> SystemTime {
    f.created.unwrap_or(UNIX_EPOCH)
}

/// The newest write time at a level (`None`: empty level).
fn last_write(cat: &Catalog, level: u32) -> Option<SystemTime> {
    cat.level(level).iter().map(created).max()
}

/// When `cat` next needs a pass at or after `now` (`now` itself if work is due), from
/// the catalog alone: no I/O. `None`: nothing to do until new L0 files arrive.
pub fn next_due(cat: &Catalog, policy: &Policy, now: SystemTime) -> Option<SystemTime> {
    let mut next: Option<SystemTime> = None;
    let mut at = |t: SystemTime| next = Some(next.map_or(t, |n: SystemTime| n.min(t)).max(now));
    let top = (policy.levels.len() as u32).min(MAX_COMPACTION_LEVEL);
    for level in 1..=top {
        let interval = policy.levels[level as usize - 1];
        if cat.max_txid(level - 1).is_some_and(|m| m > cat.max_txid(level).unwrap_or(0)) {
            let due = boundary(now, interval);
            at(if last_write(cat, level).is_some_and(|w| w >= due) { due + interval } else { now });
        }
    }
    if !policy.snapshot_interval.is_zero() && cat.newest().unwrap_or(0) > cat.max_txid(ltx::SNAPSHOT_LEVEL).unwrap_or(0)
    {
        // The first snapshot waits for the next boundary, as Litestream's snapshot ticker
        // does: a new replica starts with a full-page L0 file anyway, and a start-up of
        // 100,000 new tenants would otherwise snapshot every one of them at once.
        let due = boundary(now, policy.snapshot_interval);
        let written = match last_write(cat, ltx::SNAPSHOT_LEVEL) {
            Some(w) => w >= due,
            None => cat.files().iter().filter_map(|f| f.created).min().is_some_and(|first| first >= due),
        };
        at(if written { due + policy.snapshot_interval } else { now });
    }
    if policy.retention {
        for f in l0_expirable(cat) {
            at(created(f) + policy.l0_retention);
        }
        for f in snapshots_expirable(cat) {
            at(created(f) + policy.snapshot_retention);
        }
    }
    next
}

/// L0 files retention may delete once old enough: inside a usable level-1 file, and not
/// the newest L0 file, damaged or not (the replicator learns the next TXID from it).
fn l0_expirable(cat: &Catalog) -> impl Iterator<Item = &FileInfo> {
    let newest = cat.level(0).iter().map(|f| f.max_txid).max().unwrap_or(0);
    cat.level(0).iter().filter(move |f| f.max_txid < newest && l1_cover(cat, f).is_some())
}

/// Snapshots retention may delete once old enough: every one but the newest usable one.
fn snapshots_expirable(cat: &Catalog) -> impl Iterator<Item = &FileInfo> {
    let newest = cat.max_txid(ltx::SNAPSHOT_LEVEL).unwrap_or(0);
    cat.level(ltx::SNAPSHOT_LEVEL).iter().filter(move |f| f.max_txid < newest)
}

/// Runs one lifecycle pass over `replica` at time `now`, updating `cat`: every due
/// compaction (lowest level first), a due snapshot, a repair of damage, then retention.
/// A damaged input is not an error of the pass: it is marked, reported in the
/// outcome, and left out of everything that follows.
pub async fn maintain(
    replica: &Replica,
    cat: &mut Catalog,
    policy: &Policy,
    now: SystemTime,
) -> Result<Outcome, Error> {
    let mut out = Outcome::default();
    let top = (policy.levels.len() as u32).min(MAX_COMPACTION_LEVEL);
    for level in 1..=top {
        let interval = policy.levels[level as usize - 1];
        if cat.max_txid(level - 1).is_none_or(|m| m <= cat.max_txid(level).unwrap_or(0)) {
            continue;
        }
        if last_write(cat, level).is_some_and(|w| w >= boundary(now, interval)) {
            continue;
        }
        if let Some(f) = compact_level(replica, cat, level, policy.encoding, now, &mut out).await? {
            out.written.push(f);
        }
    }
    let newest = cat.newest().unwrap_or(0);
    if !policy.snapshot_interval.is_zero()
        && newest > cat.max_txid(ltx::SNAPSHOT_LEVEL).unwrap_or(0)
        && last_write(cat, ltx::SNAPSHOT_LEVEL).is_none_or(|w| w < boundary(now, policy.snapshot_interval))
        && let Some(f) = snapshot(replica, cat, policy.encoding, now, &mut out).await?
    {
        out.written.push(f);
    }
    repair::repair(replica, cat, policy.encoding, now, &mut out).await?;
    if policy.retention {
        out.deleted = retain(replica, cat, policy, now, &mut out).await?;
    }
    out.next = next_due(cat, policy, now).map(|t| if t <= now { now + Duration::from_secs(1) } else { t });
    Ok(out)
}

/// Merges the contiguous usable level-`level-1` files above `max(level)` into one level
/// file. Damaged files are left out: a merge never spans one.
async fn compact_level(
    replica: &Replica,
    cat: &mut Catalog,
    level: u32,
    encoding: ltx::PageEncoding,
    now: SystemTime,
    out: &mut Outcome,
) -> Result<Option<FileInfo>, Error> {
    let have = cat.max_txid(level).unwrap_or(0);
    let mut inputs: Vec<FileInfo> = Vec::new();
    for f in cat.level(level - 1).iter().filter(|f| f.min_txid > have) {
        if cat.is_damaged(f) {
            if inputs.is_empty() {
                continue;
            }
            break;
        }
        match inputs.last() {
            None => inputs.push(f.clone()),
            Some(prev) if ltx::is_contiguous(prev.max_txid, f.min_txid, f.max_txid) => inputs.push(f.clone()),
            Some(_) => break,
        }
    }
    if inputs.is_empty() {
        return Ok(None);
    }
    write_merged(replica, cat, level, &inputs, encoding, now, out).await
}

/// Merges the restore chain into a level-9 snapshot (`min = 1`).
async fn snapshot(
    replica: &Replica,
    cat: &mut Catalog,
    encoding: ltx::PageEncoding,
    now: SystemTime,
    out: &mut Outcome,
) -> Result<Option<FileInfo>, Error> {
    let Some(chain) = cat.chain() else { return Ok(None) };
    if chain.len() == 1 && chain[0].level == ltx::SNAPSHOT_LEVEL {
        return Ok(None);
    }
    write_merged(replica, cat, ltx::SNAPSHOT_LEVEL, &chain, encoding, now, out).await
}

/// Bytes per ranged read of each input of a merge (k inputs hold k such chunks).
const MERGE_CHUNK: u64 = 1 << 20;

/// Merges `inputs` into one file at `level` and uploads it, streamed: each input is
/// read in ranged requests and the output uploaded as it is written (visible at its
/// final name only when complete), so memory holds a chunk per input and a few of the
/// output, whatever the files' sizes. An input that turns out to be unreadable is
/// marked damaged (and reported in `out`) instead of failing the pass: `None`, nothing
/// written. A storage failure while reading is the pass's error, not damage.
async fn write_merged(
    replica: &Replica,
    cat: &mut Catalog,
    level: u32,
    inputs: &[FileInfo],
    encoding: ltx::PageEncoding,
    now: SystemTime,
    out: &mut Outcome,
) -> Result<Option<FileInfo>, Error> {
    let names = || inputs.iter().map(|f| replica.describe_file(f)).collect::<Vec<_>>().join(", ");
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Err(Error::Ltx { file: names(), source: ltx::Error::NoInputs });
    };
    // A snapshot of one full-page file (a repair's source, or a chain reduced to it).
    let snapshot_of_one = level == ltx::SNAPSHOT_LEVEL && inputs.len() == 1 && first.min_txid != 1;
    // The output carries the newest input's time: read its header first (the bytes
    // read are the start of that input's stream, not an extra request).
    let mut last_reader = replica.reader(last, MERGE_CHUNK);
    let head = match last_reader.next().await {
        Ok(head) => head.unwrap_or_default(),
        Err(e) if e.is_damage() => {
            let e = ltx::Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, crate::errors::chain(&e)));
            repair::found_damage(replica, cat, last, &e, out);
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let timestamp_ms = match ltx::Header::decode(&head.to_vec()) {
        Ok(h) => h.timestamp_ms,
        Err(e) => {
            repair::found_damage(replica, cat, last, &e, out);
            return Ok(None);
        }
    };
    let handle = tokio::runtime::Handle::current();
    let mut readers: Vec<storage::RangeReader> =
        inputs[..inputs.len() - 1].iter().map(|f| replica.range_reader(f, MERGE_CHUNK, handle.clone())).collect();
    readers.push(storage::RangeReader::new(last_reader, handle, Some(head)));
    let (min, max) = (if snapshot_of_one { 1 } else { first.min_txid }, last.max_txid);
    let merged = replica
        .upload_from(level, min, max, timestamp_ms, move |w| {
            let comp = Compactor::new(readers)?;
            let comp = if snapshot_of_one { comp.into_snapshot() } else { comp };
            let h = comp.header().clone();
            if (h.min_txid, h.max_txid, h.timestamp_ms) != (min, max, timestamp_ms) {
                return Err(ltx::Error::InvalidHeader {
                    reason: "compaction inputs' headers disagree with their file names",
                });
            }
            comp.compact(w, encoding)?;
            Ok(h)
        })
        .await?;
    let (h, size) = match merged {
        Ok(m) => m,
        // A snapshot of one file fails only because of that file (not full-page after all).
        Err(e) => match e.input().or(snapshot_of_one.then_some(0)).and_then(|i| inputs.get(i)) {
            Some(bad) if !storage::is_read_failure(&e) => {
                repair::found_damage(replica, cat, bad, &e, out);
                return Ok(None);
            }
            _ => return Err(Error::Ltx { file: names(), source: e }),
        },
    };
    for f in inputs {
        // Decoded to their trailers by the merge.
        cat.mark_verified(f);
    }
    let f = FileInfo { level, min_txid: h.min_txid, max_txid: h.max_txid, size, created: Some(now) };
    cat.add_verified(f.clone());
    tracing::debug!(replica = %replica.url(), level, min = h.min_txid, max = h.max_txid, inputs = inputs.len(), "compacted");
    Ok(Some(f))
}

/// Deletes what retention allows at `now`, but only on the strength of files whose
/// bytes are verified: before L0 files go because a level-1 file covers them, or older
/// snapshots and level files go because a newer snapshot stays, that file is read and
/// decoded to its trailer unless this process wrote it. One that fails is damaged, and
/// what it would have justified stays.
async fn retain(
    replica: &Replica,
    cat: &mut Catalog,
    policy: &Policy,
    now: SystemTime,
    out: &mut Outcome,
) -> Result<Vec<FileInfo>, Error> {
    let l0: Vec<FileInfo> = l0_expirable(cat).filter(|f| created(f) + policy.l0_retention <= now).cloned().collect();
    let mut doomed = Vec::new();
    for f in l0 {
        let cover = l1_cover(cat, &f).cloned();
        if let Some(cover) = cover
            && repair::verified(replica, cat, &cover, out).await?
        {
            doomed.push(f);
        }
    }
    let expired: Vec<FileInfo> =
        snapshots_expirable(cat).filter(|f| created(f) + policy.snapshot_retention <= now).cloned().collect();
    let newest = cat.usable(ltx::SNAPSHOT_LEVEL).next_back().cloned();
    let keeper = match newest {
        Some(n) if !expired.is_empty() => repair::verified(replica, cat, &n, out).await?,
        _ => false,
    };
    if keeper {
        // Files of levels 1-8 below the newest deleted snapshot were only needed to
        // restore to points before it.
        if let Some(floor) = expired.iter().map(|f| f.max_txid).max() {
            for level in 1..=MAX_COMPACTION_LEVEL {
                doomed.extend(cat.level(level).iter().filter(|f| f.max_txid < floor).cloned());
            }
        }
        doomed.extend(expired);
    }
    if doomed.is_empty() {
        return Ok(doomed);
    }
    replica.delete(&doomed).await?;
    for f in &doomed {
        cat.remove(f);
    }
    Ok(doomed)
}

/// The usable level-1 file whose TXIDs contain `f`'s, if one does.
fn l1_cover<'c>(cat: &'c Catalog, f: &FileInfo) -> Option<&'c FileInfo> {
    cat.usable(1).find(|c| c.min_txid <= f.min_txid && f.max_txid <= c.max_txid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::TxId;

    fn f(level: u32, min: TxId, max: TxId) -> FileInfo {
        FileInfo { level, min_txid: min, max_txid: max, size: 1, created: Some(UNIX_EPOCH) }
    }

    #[test]
    fn a_new_replica_gets_its_first_snapshot_at_the_next_boundary() {
        let day = Duration::from_secs(86_400);
        let policy = Policy { levels: Vec::new(), snapshot_interval: day, ..Policy::default() };
        let born = UNIX_EPOCH + day * 100 + Duration::from_secs(3_600);
        let cat = Catalog::new([FileInfo { created: Some(born), ..f(0, 1, 1) }]);
        // Born after today's boundary: tomorrow's boundary, not now.
        assert_eq!(next_due(&cat, &policy, born + Duration::from_secs(60)), Some(UNIX_EPOCH + day * 101));
        // Once a boundary has passed since it was born: due at once.
        let later = UNIX_EPOCH + day * 101 + Duration::from_secs(5);
        assert_eq!(next_due(&cat, &policy, later), Some(later));
    }

    #[test]
    fn boundaries_are_wall_clock_aligned() {
        let t = UNIX_EPOCH + Duration::from_secs(125);
        assert_eq!(boundary(t, Duration::from_secs(30)), UNIX_EPOCH + Duration::from_secs(120));
        assert_eq!(boundary(t, Duration::from_secs(3600)), UNIX_EPOCH);
    }
}
