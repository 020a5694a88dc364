//! The fleet change log: how a standby learns which tenants changed without listing
//! every tenant (`[change_log]`; design and failure cases in docs/architecture.md,
//! "Follow and the standby").
//!
//! Each daemon with the log enabled collects the L0 files its tenants ship and writes
//! one object — at once after a quiet spell, then at most once per `interval` while
//! tenants keep shipping —
//! `_litefleet/changes/<host>/<boot>-<seq>.json` (boot: the process's start in ms, 16
//! hex digits; seq: 16 hex digits from 0) naming each changed prefix and its files.
//! Nothing is written while the fleet is idle. At start it writes entry 0 (no tenants:
//! "this host started") and deletes its entries of earlier boots; entries older than
//! `retention` are deleted as it goes. Litestream never looks under `_litefleet/`.
//!
//! A tenant whose database was deleted on the primary is logged too (`removed`, with
//! the last TXID it shipped), and leaves a marker `_litefleet/removed/<prefix>/<TXID>`
//! (empty; [`removed_markers`] reads them all with one listing) so that a standby that
//! missed the entry still knows, at its next listing, not to bring the tenant back. A
//! replica holding files beyond the marker's TXID was created again since.
//!
//! A reader ([`Cursor`]) lists the folder (one LIST), reads the entries it has not seen
//! (one GET each), and asks for a listing of the whole storage ([`Poll::rescan`])
//! whenever an entry may have been missed: a gap in a boot's sequence (an entry lost or
//! expired before it was read), or a boot it has not seen before (the host restarted, so
//! files shipped just before a crash may never have been logged).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::errors::Chain;
use crate::storage::{self, FileInfo, Storage};

/// The folder under `_litefleet/`.
pub const DIR: &str = "changes";
/// The folder of removal markers under `_litefleet/`.
pub const REMOVED: &str = "removed";

/// One object of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub host: String,
    pub boot: u64,
    pub seq: u64,
    /// When the host wrote it (its clock, ms since the epoch; for people and lag).
    pub written_ms: i64,
    /// Changed prefixes (relative to the storage), each with its new L0 files as
    /// `[min TXID, max TXID, size]`, oldest first.
    pub tenants: BTreeMap<String, Vec<[u64; 3]>>,
    /// Prefixes whose database was deleted on the host, with the last TXID shipped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed: BTreeMap<String, u64>,
}

impl Entry {
    /// The files an entry names for one prefix, as a listing would show them.
    pub fn files(spec: &[[u64; 3]]) -> Vec<FileInfo> {
        spec.iter()
            .map(|[min, max, size]| FileInfo { level: 0, min_txid: *min, max_txid: *max, size: *size, created: None })
            .collect()
    }
}

/// The key of entry `seq` of `boot` of `host`, relative to `_litefleet/`.
pub fn key(host: &str, boot: u64, seq: u64) -> String {
    format!("{DIR}/{host}/{boot:016x}-{seq:016x}.json")
}

/// `(host, boot, seq)` from a key relative to `_litefleet/changes/`.
fn parse(rel: &str) -> Option<(String, u64, u64)> {
    let (host, name) = rel.rsplit_once('/')?;
    let (boot, seq) = name.strip_suffix(".json")?.split_once('-')?;
    if boot.len() != 16 || seq.len() != 16 {
        return None;
    }
    Some((host.to_owned(), u64::from_str_radix(boot, 16).ok()?, u64::from_str_radix(seq, 16).ok()?))
}

/// The removal marker of `prefix` at `txid`, relative to `_litefleet/`.
pub fn removed_key(prefix: &str, txid: u64) -> String {
    format!("{REMOVED}/{prefix}/{txid:016x}")
}

/// Every prefix with a removal marker, with the newest marker's TXID (one listing of
/// the markers).
pub async fn removed_markers(storage: &Storage) -> Result<HashMap<String, u64>, storage::Error> {
    let mut out: HashMap<String, u64> = HashMap::new();
    for k in storage.meta_list_tree(REMOVED).await? {
        let Some((prefix, hex)) = k.rsplit_once('/') else { continue };
        if hex.len() != 16 {
            continue;
        }
        if let Ok(txid) = u64::from_str_radix(hex, 16) {
            let e = out.entry(prefix.to_owned()).or_insert(txid);
            *e = (*e).max(txid);
        }
    }
    Ok(out)
}

/// Now, in ms since the epoch.
fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What waits for the next entry.
#[derive(Debug, Clone, Default)]
struct Pending {
    /// Files shipped, per prefix.
    tenants: BTreeMap<String, Vec<[u64; 3]>>,
    /// Prefixes removed, with their last TXID.
    removed: BTreeMap<String, u64>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.removed.is_empty()
    }

    /// Puts back a batch that could not be written, before what came since.
    fn put_back(&mut self, older: Pending) {
        for (prefix, files) in older.tenants.into_iter().rev() {
            let slot = self.tenants.entry(prefix).or_default();
            let newer = std::mem::take(slot);
            *slot = files;
            slot.extend(newer);
        }
        for (prefix, txid) in older.removed {
            let e = self.removed.entry(prefix).or_insert(txid);
            *e = (*e).max(txid);
        }
    }
}

/// The writing side, shared by every tenant task of a daemon (cheap to clone).
#[derive(Clone)]
pub struct ChangeLog {
    pending: Arc<Mutex<Pending>>,
    /// Wakes the writer when something is pending.
    wake: Arc<tokio::sync::Notify>,
    stop: CancellationToken,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl ChangeLog {
    /// Starts the writer of `host`'s log in `storage`.
    pub fn start(storage: Storage, host: String, interval: Duration, retention: Duration) -> ChangeLog {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let stop = CancellationToken::new();
        let boot = epoch_ms().max(0) as u64;
        let writer = Writer { storage, host, boot, seq: 0, written: VecDeque::new(), retention, failing: false };
        let wake = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(writer.run(pending.clone(), wake.clone(), interval, stop.clone()));
        ChangeLog { pending, wake, stop, task: Arc::new(Mutex::new(Some(task))) }
    }

    /// Records the L0 files a tenant shipped (other levels are ignored: compaction
    /// changes no tenant's state).
    pub fn shipped(&self, prefix: &str, files: &[FileInfo]) {
        let new: Vec<[u64; 3]> =
            files.iter().filter(|f| f.level == 0).map(|f| [f.min_txid, f.max_txid, f.size]).collect();
        if new.is_empty() {
            return;
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.tenants.entry(prefix.to_owned()).or_default().extend(new);
        drop(p);
        self.wake.notify_one();
    }

    /// Records that a tenant's database was deleted here after it shipped `txid` (its
    /// replica stays; a standby stops following it).
    pub fn removed(&self, prefix: &str, txid: u64) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).removed.insert(prefix.to_owned(), txid);
        self.wake.notify_one();
    }

    /// Writes what is pending and stops the writer (after the fleet's final syncs).
    pub async fn stop(&self) {
        self.stop.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

/// At most this many files are named per prefix in one entry; a tenant with more is
/// named with its newest files only, and a reader that finds them not contiguous with
/// its copy lists that one replica.
const FILES_PER_PREFIX: usize = 64;

struct Writer {
    storage: Storage,
    host: String,
    boot: u64,
    seq: u64,
    /// Entries of this boot, oldest first, with when they were written.
    written: VecDeque<(String, Instant)>,
    retention: Duration,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
}

impl Writer {
    /// Writes an entry as soon as something is pending after a quiet spell, then at
    /// most one per `interval` while tenants keep shipping (a failed write is retried
    /// an interval later, merged before anything newer); expires old entries.
    async fn run(
        mut self,
        pending: Arc<Mutex<Pending>>,
        wake: Arc<tokio::sync::Notify>,
        interval: Duration,
        stop: CancellationToken,
    ) {
        // Entry 0 tells readers this host (re)started; then earlier boots' entries go.
        while !self.write(Pending::default()).await {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
        self.delete_earlier_boots().await;
        let mut last = Instant::now();
        loop {
            let stopping = tokio::select! {
                _ = stop.cancelled() => true,
                _ = wake.notified() => false,
                // Expiry goes on while the fleet is idle.
                _ = tokio::time::sleep(self.retention / 10) => false,
            };
            if !stopping {
                let wait = interval.saturating_sub(last.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
            if !batch.is_empty() {
                last = Instant::now();
                if !self.write(batch.clone()).await {
                    pending.lock().unwrap_or_else(|e| e.into_inner()).put_back(batch);
                    if !stopping {
                        wake.notify_one();
                    }
                }
            }
            self.expire().await;
            if stopping || stop.is_cancelled() {
                // One last try for what the final syncs shipped.
                let batch = std::mem::take(&mut *pending.lock().unwrap_or_else(|e| e.into_inner()));
                if !batch.is_empty() {
                    self.write(batch).await;
                }
                return;
            }
        }
    }

    /// Writes the removal markers, then the next entry; false (logged) if the storage
    /// refused.
    async fn write(&mut self, batch: Pending) -> bool {
        let Pending { mut tenants, removed } = batch;
        for files in tenants.values_mut() {
            if files.len() > FILES_PER_PREFIX {
                files.drain(..files.len() - FILES_PER_PREFIX);
            }
        }
        let mut put = Ok(());
        for (prefix, txid) in &removed {
            put =
                self.storage.meta_put(&removed_key(prefix, *txid), Vec::new(), crate::durable::Existing::Replace).await;
            if put.is_err() {
                break;
            }
        }
        let entry =
            Entry { host: self.host.clone(), boot: self.boot, seq: self.seq, written_ms: epoch_ms(), tenants, removed };
        let key = key(&self.host, self.boot, self.seq);
        let bytes = serde_json::to_vec(&entry).unwrap_or_default();
        if put.is_ok() {
            put = self.storage.meta_put(&key, bytes, crate::durable::Existing::Replace).await;
        }
        match put {
            Ok(()) => {
                if self.failing {
                    tracing::info!("change log: writing again");
                }
                self.failing = false;
                self.seq += 1;
                self.written.push_back((key, Instant::now()));
                true
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!("change log: cannot write {key} (retrying every interval): {}", Chain(&e));
                }
                self.failing = true;
                false
            }
        }
    }

    /// Deletes this boot's entries older than the retention, except the newest: while
    /// this host lives its boot stays in the log, so a reader that starts during a
    /// quiet spell knows the boot and its sequence number (no needless listing later).
    async fn expire(&mut self) {
        while let Some((key, at)) = self.written.front() {
            if at.elapsed() < self.retention || self.written.len() == 1 {
                break;
            }
            if self.storage.meta_delete(key).await.is_err() {
                break;
            }
            self.written.pop_front();
        }
    }

    /// Deletes this host's entries from its earlier boots (entry 0 of this boot is
    /// written, so a reader knows it restarted and lists the storage).
    async fn delete_earlier_boots(&mut self) {
        let names = match self.storage.meta_list(&format!("{DIR}/{}", self.host)).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("change log: cannot list earlier entries: {}", Chain(&e));
                return;
            }
        };
        for name in names {
            if let Some((_, boot, seq)) = parse(&format!("{}/{name}", self.host))
                && boot != self.boot
            {
                let _ = self.storage.meta_delete(&key(&self.host, boot, seq)).await;
            }
        }
    }
}

/// What one [`Cursor::poll`] found.
#[derive(Debug, Default)]
pub struct Poll {
    /// New entries, in order per host and boot.
    pub entries: Vec<Entry>,
    /// Why the whole storage must be listed now (an entry may have been missed).
    pub rescan: Option<String>,
    /// The log has at least one entry (a primary with `[change_log]` on writes here).
    pub present: bool,
}

/// The reading side: what a standby has seen of every host's log.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Last sequence number seen per (host, boot).
    seen: HashMap<(String, u64), u64>,
    /// Whether a first poll has happened (its entries are covered by the listing of
    /// the whole storage that a standby makes at start).
    started: bool,
}

impl Cursor {
    /// Lists the log and reads the entries not seen yet.
    pub async fn poll(&mut self, storage: &Storage) -> Result<Poll, storage::Error> {
        let keys = storage.meta_list_tree(DIR).await?;
        let mut groups: BTreeMap<(String, u64), Vec<u64>> = BTreeMap::new();
        for k in &keys {
            if let Some((host, boot, seq)) = parse(k) {
                groups.entry((host, boot)).or_default().push(seq);
            }
        }
        let mut out = Poll { present: !groups.is_empty(), ..Poll::default() };
        let first = !self.started;
        self.started = true;
        for ((host, boot), mut seqs) in groups {
            seqs.sort_unstable();
            let newest = *seqs.last().unwrap_or(&0);
            let group = (host.clone(), boot);
            let Some(&last) = self.seen.get(&group) else {
                if !first {
                    out.rescan.get_or_insert(format!("host {host} started (boot {boot:016x})"));
                }
                self.seen.insert(group, newest);
                continue;
            };
            let unseen: Vec<u64> = seqs.into_iter().filter(|s| *s > last).collect();
            if unseen.first().is_some_and(|s| *s != last + 1) {
                out.rescan.get_or_insert(format!("entries of host {host} were missed (after {last})"));
            } else {
                for seq in &unseen {
                    match storage.meta_get(&key(&host, boot, *seq)).await? {
                        Some((bytes, _)) => match serde_json::from_slice::<Entry>(&bytes) {
                            Ok(e) => out.entries.push(e),
                            Err(e) => {
                                out.rescan.get_or_insert(format!("unreadable entry {}: {e}", key(&host, boot, *seq)));
                            }
                        },
                        None => {
                            out.rescan.get_or_insert(format!("entry {} vanished", key(&host, boot, *seq)));
                        }
                    }
                }
            }
            self.seen.insert(group, newest.max(last));
        }
        // A boot is forgotten once its host has a newer one in the log (its entries may
        // all expire meanwhile: it is still the host's current boot).
        let newest_boot: HashMap<&str, u64> = self.seen.keys().fold(HashMap::new(), |mut m, (h, b)| {
            let e = m.entry(h.as_str()).or_insert(*b);
            *e = (*e).max(*b);
            m
        });
        let newest_boot: HashMap<String, u64> = newest_boot.into_iter().map(|(h, b)| (h.to_owned(), b)).collect();
        self.seen.retain(|(h, b), _| newest_boot.get(h) == Some(b));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls until entries arrive (2 s at most); no poll may ask for a rescan.
    async fn next_entries(cursor: &mut Cursor, storage: &Storage) -> Vec<Entry> {
        let mut got = Vec::new();
        for _ in 0..200 {
            let p = cursor.poll(storage).await.unwrap_or_else(|e| panic!("{e}"));
            assert!(p.rescan.is_none(), "{p:?}");
            got.extend(p.entries);
            if !got.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        got
    }

    #[test]
    fn keys_round_trip_and_sort_by_sequence() {
        let k = key("host-a", 0x18c, 2);
        let rel = k.strip_prefix("changes/").unwrap_or_else(|| panic!("{k}"));
        assert_eq!(parse(rel), Some(("host-a".to_owned(), 0x18c, 2)));
        assert!(key("h", 1, 9) < key("h", 1, 10), "fixed-width hex sorts numerically");
        assert_eq!(parse("h/zz-00.json"), None);
    }

    #[tokio::test]
    async fn a_removal_is_logged_and_leaves_a_marker_a_later_reader_finds() {
        let storage = Storage::from_url("memory://removed-test", &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let log = ChangeLog::start(storage.clone(), "a".into(), Duration::from_millis(20), Duration::from_secs(60));
        let mut cursor = Cursor::default();
        cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}"));
        let f = FileInfo { level: 0, min_txid: 1, max_txid: 3, size: 200, created: None };
        log.shipped("db/t1", &[f]);
        log.removed("db/t1", 3);
        let (mut files, mut removed) = (Vec::new(), BTreeMap::new());
        for _ in 0..200 {
            for e in cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}")).entries {
                files.extend(e.tenants.into_values().flatten());
                removed.extend(e.removed);
            }
            if !removed.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(files, vec![[1, 3, 200]]);
        assert_eq!(removed, BTreeMap::from([("db/t1".to_owned(), 3)]));
        // The marker outlives the entry; the newest of a prefix's markers counts.
        log.removed("db/t1", 9);
        log.removed("db/x/t2", 4);
        log.stop().await;
        let markers = removed_markers(&storage).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(markers, HashMap::from([("db/t1".to_owned(), 9), ("db/x/t2".to_owned(), 4)]));
        // Entries written before removals were logged still read.
        let old: Entry = serde_json::from_str(r#"{"host":"h","boot":1,"seq":0,"written_ms":0,"tenants":{}}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(old.removed.is_empty());
    }

    #[tokio::test]
    async fn a_reader_sees_entries_in_order_and_asks_for_a_rescan_when_one_is_missed() {
        let storage = Storage::from_url("memory://changes-test", &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let log = ChangeLog::start(storage.clone(), "a".into(), Duration::from_millis(20), Duration::from_secs(60));
        let mut cursor = Cursor::default();
        // Entry 0 (the start marker) is written at once; a reader's first poll takes
        // what exists as covered by its own first listing.
        for _ in 0..200 {
            if !storage.meta_list_tree(DIR).await.unwrap_or_default().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(p.present && p.rescan.is_none() && p.entries.is_empty(), "{p:?}");
        let f = |min, max| FileInfo { level: 0, min_txid: min, max_txid: max, size: 200, created: None };
        log.shipped("db/t1", &[f(1, 1), f(2, 3)]);
        log.shipped("db/t2", &[FileInfo { level: 1, ..f(1, 9) }]);
        let got = next_entries(&mut cursor, &storage).await;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].tenants.get("db/t1"), Some(&vec![[1, 1, 200], [2, 3, 200]]));
        assert!(!got[0].tenants.contains_key("db/t2"), "only L0 files are logged");
        // Every entry read so far expires: the boot is still this host's current one,
        // so its next entry is read without a listing of the storage.
        let boot = got[0].boot;
        for seq in 0..2 {
            storage.meta_delete(&key("a", boot, seq)).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert!(cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}")).rescan.is_none());
        log.shipped("db/t1", &[f(4, 4)]);
        let next = next_entries(&mut cursor, &storage).await;
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].seq, 2);
        // Two more entries; the first is lost before the reader gets to it: a rescan.
        log.shipped("db/t1", &[f(5, 5)]);
        tokio::time::sleep(Duration::from_millis(100)).await;
        log.shipped("db/t1", &[f(6, 6)]);
        log.stop().await;
        storage.meta_delete(&key("a", boot, 3)).await.unwrap_or_else(|e| panic!("{e}"));
        let p = cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(p.rescan.as_deref().is_some_and(|r| r.contains("missed")), "{p:?}");
        // A restarted host: a boot the reader has not seen asks for a rescan too.
        let again = ChangeLog::start(storage.clone(), "a".into(), Duration::from_millis(20), Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(2)).await;
        let mut rescan = None;
        for _ in 0..200 {
            let p = cursor.poll(&storage).await.unwrap_or_else(|e| panic!("{e}"));
            if p.rescan.is_some() {
                rescan = p.rescan;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        again.stop().await;
        assert!(rescan.as_deref().is_some_and(|r| r.contains("started")), "{rescan:?}");
    }
}
