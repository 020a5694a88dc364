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
//! It must never delete a file whose TXIDs are not covered by a file that stays, never
//! write a level file that is not a contiguous merge, and never touch the tenant's
//! database.

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

/// L0 files retention may delete once old enough: covered by level 1, not the newest.
fn l0_expirable(cat: &Catalog) -> impl Iterator<Item = &FileInfo> {
    let l1 = cat.max_txid(1).unwrap_or(0);
    let newest = cat.max_txid(0).unwrap_or(0);
    cat.level(0).iter().filter(move |f| f.max_txid <= l1 && f.max_txid < newest)
}

/// Snapshots retention may delete once old enough: every one but the newest.
fn snapshots_expirable(cat: &Catalog) -> impl Iterator<Item = &FileInfo> {
    let newest = cat.max_txid(ltx::SNAPSHOT_LEVEL).unwrap_or(0);
    cat.level(ltx::SNAPSHOT_LEVEL).iter().filter(move |f| f.max_txid < newest)
}

/// Runs one lifecycle pass over `replica` at time `now`, updating `cat`: every due
/// compaction (lowest level first), a due snapshot, then retention.
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
        if let Some(f) = compact_level(replica, cat, level, policy.encoding, now).await? {
            out.written.push(f);
        }
    }
    let newest = cat.newest().unwrap_or(0);
    if !policy.snapshot_interval.is_zero()
        && newest > cat.max_txid(ltx::SNAPSHOT_LEVEL).unwrap_or(0)
        && last_write(cat, ltx::SNAPSHOT_LEVEL).is_none_or(|w| w < boundary(now, policy.snapshot_interval))
        && let Some(f) = snapshot(replica, cat, policy.encoding, now).await?
    {
        out.written.push(f);
    }
    if policy.retention {
        out.deleted = retain(replica, cat, policy, now).await?;
    }
    out.next = next_due(cat, policy, now).map(|t| if t <= now { now + Duration::from_secs(1) } else { t });
    Ok(out)
}

/// Merges the contiguous level-`level-1` files above `max(level)` into one level file.
async fn compact_level(
    replica: &Replica,
    cat: &mut Catalog,
    level: u32,
    encoding: ltx::PageEncoding,
    now: SystemTime,
) -> Result<Option<FileInfo>, Error> {
    let have = cat.max_txid(level).unwrap_or(0);
    let mut inputs: Vec<FileInfo> = Vec::new();
    for f in cat.level(level - 1).iter().filter(|f| f.min_txid > have) {
        match inputs.last() {
            None => inputs.push(f.clone()),
            Some(prev) if ltx::is_contiguous(prev.max_txid, f.min_txid, f.max_txid) => inputs.push(f.clone()),
            Some(_) => break,
        }
    }
    if inputs.is_empty() {
        return Ok(None);
    }
    write_merged(replica, cat, level, &inputs, encoding, now).await.map(Some)
}

/// Merges the restore chain into a level-9 snapshot (`min = 1`).
async fn snapshot(
    replica: &Replica,
    cat: &mut Catalog,
    encoding: ltx::PageEncoding,
    now: SystemTime,
) -> Result<Option<FileInfo>, Error> {
    let Some(chain) = cat.chain() else { return Ok(None) };
    if chain.len() == 1 && chain[0].level == ltx::SNAPSHOT_LEVEL {
        return Ok(None);
    }
    write_merged(replica, cat, ltx::SNAPSHOT_LEVEL, &chain, encoding, now).await.map(Some)
}

/// Bytes per ranged read of each input of a merge (k inputs hold k such chunks).
const MERGE_CHUNK: u64 = 1 << 20;

/// Merges `inputs` into one level file, streamed: each input is read in ranged
/// requests and the output uploaded as it is written, so memory holds a chunk per
/// input and a few of the output, whatever the files' sizes.
async fn write_merged(
    replica: &Replica,
    cat: &mut Catalog,
    level: u32,
    inputs: &[FileInfo],
    encoding: ltx::PageEncoding,
    now: SystemTime,
) -> Result<FileInfo, Error> {
    let names: Vec<String> = inputs.iter().map(|f| replica.describe_file(f)).collect();
    let ltx_err = move |source| Error::Ltx { file: names.join(", "), source };
    let (Some(first), Some(last)) = (inputs.first(), inputs.last()) else {
        return Err(ltx_err(ltx::Error::NoInputs));
    };
    // The output carries the newest input's time: read its header first (the bytes
    // read are the start of that input's stream, not an extra request).
    let head = if last.size == 0 {
        replica.read(last).await?
    } else {
        replica.read_range(last, 0..last.size.min(MERGE_CHUNK)).await?
    };
    let timestamp_ms = match ltx::Header::decode(&head.to_vec()) {
        Ok(h) => h.timestamp_ms,
        Err(e) => return Err(ltx_err(e)),
    };
    let handle = tokio::runtime::Handle::current();
    let mut readers: Vec<storage::RangeReader> =
        inputs[..inputs.len() - 1].iter().map(|f| replica.range_reader(f, MERGE_CHUNK, handle.clone(), None)).collect();
    readers.push(replica.range_reader(last, MERGE_CHUNK, handle, Some(head)));
    let (min, max) = (first.min_txid, last.max_txid);
    let merged = replica
        .upload_from(level, min, max, timestamp_ms, move |w| {
            let comp = Compactor::new(readers)?;
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
    let (h, size) = merged.map_err(ltx_err)?;
    let f = FileInfo { level, min_txid: h.min_txid, max_txid: h.max_txid, size, created: Some(now) };
    cat.add(f.clone());
    tracing::debug!(replica = %replica.url(), level, min = h.min_txid, max = h.max_txid, inputs = inputs.len(), "compacted");
    Ok(f)
}

/// Deletes what retention allows at `now`.
async fn retain(
    replica: &Replica,
    cat: &mut Catalog,
    policy: &Policy,
    now: SystemTime,
) -> Result<Vec<FileInfo>, Error> {
    let mut doomed: Vec<FileInfo> =
        l0_expirable(cat).filter(|f| created(f) + policy.l0_retention <= now).cloned().collect();
    let expired: Vec<FileInfo> =
        snapshots_expirable(cat).filter(|f| created(f) + policy.snapshot_retention <= now).cloned().collect();
    // Files of levels 1-8 below the newest deleted snapshot were only needed to restore
    // to points before it.
    if let Some(floor) = expired.iter().map(|f| f.max_txid).max() {
        for level in 1..=MAX_COMPACTION_LEVEL {
            doomed.extend(cat.level(level).iter().filter(|f| f.max_txid < floor).cloned());
        }
    }
    doomed.extend(expired);
    if doomed.is_empty() {
        return Ok(doomed);
    }
    replica.delete(&doomed).await?;
    for f in &doomed {
        cat.remove(f);
    }
    Ok(doomed)
}

/// The one lifecycle scheduler of a fleet.
///
/// It learns every replica's files from one recursive listing of the storage root at
/// start (a few paginated LISTs for the whole fleet, retried on error) and from the
/// replicators' reports of what they uploaded ([`Scheduler::shipped`]); it keeps each
/// replica's [`Catalog`] and a queue ordered by [`next_due`]. A replica that shipped
/// nothing since its last pass is not in the queue: no timer, no request. At most
/// `concurrency` passes run at once, never two for one replica. After a failed pass the
/// replica's catalog is dropped and re-listed by its next pass, a minute later.
#[derive(Clone)]
pub struct Scheduler {
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<FileInfo>)>,
}

impl Scheduler {
    /// Starts the scheduler for replicas below `root` of `storage`. It stops when
    /// `shutdown` is cancelled (a pass in flight is abandoned; every step of a pass is
    /// safe to abandon).
    pub fn start(
        storage: storage::Storage,
        root: String,
        policy: Policy,
        concurrency: usize,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> (Scheduler, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run_scheduler(storage, root, policy, concurrency.max(1), shutdown, rx));
        (Scheduler { tx }, task)
    }

    /// Reports L0 files a replicator uploaded under `prefix` (relative to the storage).
    pub fn shipped(&self, prefix: &str, files: Vec<FileInfo>) {
        if !files.is_empty() {
            let _ = self.tx.send((prefix.trim_matches('/').to_owned(), files));
        }
    }
}

#[derive(Default)]
struct Life {
    cat: Option<Catalog>,
    /// Files reported while the catalog was away (listing not done, or a pass running).
    extra: Vec<FileInfo>,
    next: Option<SystemTime>,
    running: bool,
}

/// How long a failed pass or listing waits before trying again.
const RETRY: Duration = Duration::from_secs(60);

async fn run_scheduler(
    storage: storage::Storage,
    root: String,
    policy: Policy,
    concurrency: usize,
    shutdown: tokio_util::sync::CancellationToken,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<FileInfo>)>,
) {
    use std::collections::{BTreeSet, HashMap};
    let mut lives: HashMap<String, Life> = HashMap::new();
    let mut queue: BTreeSet<(SystemTime, String)> = BTreeSet::new();
    let mut passes = tokio::task::JoinSet::new();
    let mut listed = false;
    let mut listing = Some(tokio::spawn({
        let (s, r) = (storage.clone(), root.clone());
        async move { s.list_tree(&r).await }
    }));
    let mut relist_at: Option<tokio::time::Instant> = None;
    let policy = std::sync::Arc::new(policy);

    fn schedule(
        lives: &mut HashMap<String, Life>,
        queue: &mut BTreeSet<(SystemTime, String)>,
        prefix: &str,
        at: Option<SystemTime>,
    ) {
        let life = lives.entry(prefix.to_owned()).or_default();
        if let Some(old) = life.next.take() {
            queue.remove(&(old, prefix.to_owned()));
        }
        if let Some(t) = at {
            life.next = Some(t);
            queue.insert((t, prefix.to_owned()));
        }
    }
    let to_instant =
        |t: SystemTime| tokio::time::Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default();

    loop {
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let first = queue.first().map(|(t, _)| to_instant(*t));
        let can_run = passes.len() < concurrency;
        tokio::select! {
            _ = shutdown.cancelled() => {
                passes.abort_all();
                if let Some(l) = listing.take() { l.abort(); }
                return;
            }
            res = async { listing.as_mut().unwrap_or_else(|| unreachable!()).await }, if listing.is_some() => {
                listing = None;
                match res {
                    Ok(Ok(tree)) => {
                        listed = true;
                        let now = SystemTime::now();
                        for (prefix, files) in tree {
                            let life = lives.entry(prefix.clone()).or_default();
                            let mut cat = Catalog::new(files);
                            for f in life.extra.drain(..) { cat.add(f); }
                            let at = next_due(&cat, &policy, now);
                            life.cat = Some(cat);
                            schedule(&mut lives, &mut queue, &prefix, at);
                        }
                        // Replicas reported but not in the listing (new, or outside the
                        // root through a hook's prefix): their first pass lists them.
                        let pending: Vec<String> = lives.iter().filter(|(_, l)| l.cat.is_none() && !l.extra.is_empty()).map(|(p, _)| p.clone()).collect();
                        for prefix in pending {
                            schedule(&mut lives, &mut queue, &prefix, Some(now));
                        }
                        tracing::debug!(replicas = lives.len(), "lifecycle: storage listed");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!("lifecycle: listing {} failed, retrying in {}s: {}", storage.url(), RETRY.as_secs(), crate::errors::Chain(&e));
                        relist_at = Some(tokio::time::Instant::now() + RETRY);
                    }
                    Err(e) => tracing::error!("lifecycle: listing task failed: {e}"),
                }
            }
            _ = tokio::time::sleep_until(relist_at.unwrap_or(far)), if relist_at.is_some() => {
                relist_at = None;
                let (s, r) = (storage.clone(), root.clone());
                listing = Some(tokio::spawn(async move { s.list_tree(&r).await }));
            }
            msg = rx.recv() => {
                let Some((prefix, files)) = msg else { return };
                let life = lives.entry(prefix.clone()).or_default();
                match (&mut life.cat, life.running, listed) {
                    (Some(cat), false, _) => {
                        for f in files { cat.add(f); }
                        let at = next_due(cat, &policy, SystemTime::now());
                        // Keep an earlier wake-up (retention) if there is one.
                        let at = match (life.next, at) { (Some(a), Some(b)) => Some(a.min(b)), (a, b) => a.or(b) };
                        schedule(&mut lives, &mut queue, &prefix, at);
                    }
                    (None, false, true) => {
                        // New replica (or one whose catalog was dropped after an error and
                        // is due for a re-list): a pass without a catalog lists it first.
                        life.extra.extend(files);
                        if life.next.is_none() {
                            let at = Some(SystemTime::now());
                            schedule(&mut lives, &mut queue, &prefix, at);
                        }
                    }
                    _ => life.extra.extend(files),
                }
            }
            _ = tokio::time::sleep_until(first.unwrap_or(far)), if first.is_some() && can_run => {
                let Some((_, prefix)) = queue.pop_first() else { continue };
                let life = lives.entry(prefix.clone()).or_default();
                life.next = None;
                if life.running || (life.cat.is_none() && !listed) {
                    continue;
                }
                life.running = true;
                let cat = life.cat.take();
                let extra = std::mem::take(&mut life.extra);
                let replica = storage.replica(&prefix);
                let policy = policy.clone();
                passes.spawn(async move {
                    let mut cat = match cat {
                        Some(c) => c,
                        None => match Catalog::load(&replica).await {
                            Ok(c) => c,
                            Err(e) => return (prefix, None, Err(e.into())),
                        },
                    };
                    for f in extra { cat.add(f); }
                    let r = maintain(&replica, &mut cat, &policy, SystemTime::now()).await;
                    (prefix, Some(cat), r)
                });
            }
            Some(done) = passes.join_next(), if !passes.is_empty() => {
                let Ok((prefix, cat, result)) = done else { continue };
                let life = lives.entry(prefix.clone()).or_default();
                life.running = false;
                match result {
                    Ok(outcome) => {
                        let mut cat = cat.unwrap_or_default();
                        for f in life.extra.drain(..) { cat.add(f); }
                        if !outcome.written.is_empty() || !outcome.deleted.is_empty() {
                            tracing::debug!(replica = %prefix, written = outcome.written.len(), deleted = outcome.deleted.len(), "lifecycle pass");
                        }
                        let at = next_due(&cat, &policy, SystemTime::now()).map(|t| t.max(SystemTime::now() + Duration::from_millis(200)));
                        life.cat = Some(cat);
                        schedule(&mut lives, &mut queue, &prefix, at);
                    }
                    Err(e) => {
                        tracing::warn!(replica = %prefix, "lifecycle pass failed, retrying in {}s: {}", RETRY.as_secs(), crate::errors::Chain(&e));
                        life.cat = None;
                        schedule(&mut lives, &mut queue, &prefix, Some(SystemTime::now() + RETRY));
                    }
                }
            }
        }
    }
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
