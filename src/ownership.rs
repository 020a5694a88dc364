//! Many hosts, one bucket: which daemon may write a tenant's prefix.
//!
//! Several daemons may replicate into one storage (a SaaS whose app runs on several
//! hosts); a tenant moves between them. Two writers under one prefix would interleave
//! TXIDs and corrupt the replica silently, so every prefix has one owner, decided with
//! the only distributed primitive every object store offers: the *conditional create*
//! (`If-None-Match: *` on S3, a hard link on a folder). Nothing else is needed: no
//! `If-Match`, no clocks compared across hosts, no lock service.
//!
//! Objects (below `<base>/_litefleet/`, which Litestream never lists):
//!
//! * `hosts/<host id>.json` — a host's heartbeat: its boot id and a counter, rewritten
//!   every `heartbeat_interval` (one PUT per host per interval, never per tenant), and
//!   marked `stopped` at a clean shutdown.
//! * `owners/<prefix>/<epoch %016x>.json` — one record per change of ownership: the host
//!   (and its boot) that owns the prefix from this epoch on, or `released`. Records are
//!   created, never rewritten: the owner is the record with the highest epoch, and
//!   whoever takes a prefix over must create the *next* epoch, which only one host can.
//!
//! Rules:
//!
//! * **Claim** (before the first upload of a tenant in this process): create epoch 1.
//!   Taken: read the highest record. Ours (this host id, any boot: a restart) — owned.
//!   Released, or its host dead — create the next epoch (one racer wins). Otherwise the
//!   prefix is *held by* that host: nothing is written, and the claim is retried.
//! * **Liveness without clocks**: a host is dead once its heartbeat has not changed for
//!   `owner_expiry` as *we* watched it (our monotonic clock; the first sight starts the
//!   watch), or it says `stopped`, or it is missing.
//! * **Fencing**: a host may write without asking storage while its *lease* holds:
//!   `owner_expiry − heartbeat_interval` after the start of its last successful
//!   heartbeat. Anyone taking over waited at least `owner_expiry` after first seeing
//!   that heartbeat, which was written after that start: the lease always ends first. A
//!   host whose lease ran out (paused, partitioned, storage down) checks that epoch + 1
//!   still does not exist before its next write to each prefix — also after the
//!   heartbeat renewed the lease, once per prefix per lapse; if it does, the prefix is
//!   lost and the tenant is `fenced`. And every upload is a conditional create of its TXID-named key,
//!   so even a write in flight across a takeover can never overwrite the new owner's.
//! * **Release**: a tenant whose file is gone gets a `released` record (the next epoch);
//!   a clean shutdown marks only the heartbeat `stopped` (one write, not one per tenant),
//!   which frees all of the host's prefixes for takeover at once.
//!
//! Costs: an idle tenant costs nothing; a new tenant one conditional PUT; a restart
//! nothing until a tenant uploads, then a refused PUT, a LIST and a GET once; a held
//! tenant asks again once per heartbeat interval (a refused PUT, a LIST, two GETs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::durable::Existing;
use crate::storage::meta::Gate;
use crate::storage::{self, Storage};

/// How often a host rewrites its heartbeat.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// A heartbeat unchanged this long (as another host watches it) means its host is dead.
pub const DEFAULT_OWNER_EXPIRY: Duration = Duration::from_secs(60);

/// Whether prefixes have owners (`[fleet] ownership`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// On where the storage honours conditional creates (probed at start), else one
    /// host as before, with a warning.
    #[default]
    Auto,
    /// On; refuse to start on storage without conditional creates.
    On,
    /// Off: this daemon assumes it is the only writer.
    Off,
}

/// Settings of [`Ownership::start`].
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// This daemon's name among the hosts sharing the storage.
    pub host_id: String,
    pub heartbeat_interval: Duration,
    pub expiry: Duration,
}

/// Why ownership could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "[fleet] ownership = \"on\", but {0} does not honour conditional creates (If-None-Match): it cannot keep two hosts from writing one prefix"
    )]
    Unsupported(String),
    #[error(
        "host id {host:?} is in use by another running daemon (its heartbeat in {place} changed while this one waited); give every daemon its own [fleet] host_id"
    )]
    Twin { host: String, place: String },
    #[error("ownership")]
    Storage(#[from] storage::Error),
}

/// A host's heartbeat object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Heartbeat {
    pub host: String,
    /// Random per process: tells two processes with one host id apart.
    pub boot: String,
    /// Incremented by every heartbeat.
    pub seq: u64,
    /// The host's own clock at the write (RFC 3339; for people only).
    pub at: String,
    pub pid: u32,
    /// The machine the process runs on (`/etc/machine-id`, else the host name).
    #[serde(default)]
    pub machine: String,
    pub version: String,
    /// Written at a clean shutdown: the host's prefixes may be taken over at once.
    pub stopped: bool,
}

/// An ownership record (`owners/<prefix>/<epoch>.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub host: String,
    pub boot: String,
    pub epoch: u64,
    /// The host's clock at the write (for people only).
    pub at: String,
    /// The host gave the prefix up (the tenant's file went away there).
    pub released: bool,
}

/// What this host may do with a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// It owns it from `epoch` on.
    Owned { epoch: u64 },
    /// Another host owns it (`None`: not known without asking storage).
    HeldBy { host: Option<String> },
    /// This host owned it and lost it while its lease had run out.
    Lost { host: Option<String> },
}

/// How far ownership got at start (the storage may not answer yet).
#[derive(Debug, Clone)]
enum Phase {
    /// Not established yet: replica writes wait.
    Pending,
    /// Established: writes are fenced.
    On,
    /// `auto` on storage that does not honour conditional creates: one host as before.
    Off,
    /// It cannot be (a twin, or `on` without conditional creates): nothing is written.
    Failed(String),
}

/// `auto` on storage without conditional creates: a warning; `on`: an error.
fn unsupported(storage: &Storage, mode: Mode) -> Result<(), Error> {
    if mode == Mode::On {
        return Err(Error::Unsupported(storage.location().to_owned()));
    }
    tracing::warn!(
        "{} does not honour conditional creates: ownership of prefixes is off, so this daemon must be the only one writing there ([fleet] ownership = \"on\" refuses to start instead)",
        storage.location()
    );
    Ok(())
}

/// Another host's heartbeat as this host watched it.
struct Watched {
    /// What it said last.
    seen: Option<(String, u64, bool)>,
    /// When (our clock) it last changed (or was first seen).
    changed: Instant,
    /// When it was last read.
    read: Instant,
}

/// The ownership of prefixes for one daemon (cheap to clone).
#[derive(Clone)]
pub struct Ownership {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Storage,
    host: String,
    boot: String,
    mode: Mode,
    /// Whether ownership is established (see [`Phase`]).
    phase: Mutex<Phase>,
    interval: Duration,
    expiry: Duration,
    /// Writes need no check before this instant (see the module doc).
    lease: Mutex<Option<Instant>>,
    /// Prefixes this host owns, with their epoch.
    /// Prefixes this host owns: their epoch, and the lease lapse after which this host
    /// last made sure no one took them over.
    owned: Mutex<HashMap<String, (u64, u64)>>,
    /// Times the lease ran out before the heartbeat renewed it (a pause, a partition).
    lapses: std::sync::atomic::AtomicU64,
    /// Other hosts' heartbeats.
    watched: tokio::sync::Mutex<HashMap<String, Watched>>,
    seq: std::sync::atomic::AtomicU64,
    /// Ends the heartbeat loop.
    stopping: CancellationToken,
    /// One heartbeat write at a time: the `stopped` one is the last.
    beating: tokio::sync::Mutex<()>,
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn host_key(host: &str) -> String {
    format!("hosts/{host}.json")
}

fn owners_dir(prefix: &str) -> String {
    match prefix.trim_matches('/') {
        // A replica at the storage's base (`litefleet replicate DB URL`).
        "" => "owners/@base".to_owned(),
        p => format!("owners/{p}"),
    }
}

fn record_key(prefix: &str, epoch: u64) -> String {
    format!("{}/{epoch:016x}.json", owners_dir(prefix))
}

/// The epoch of a record's file name.
fn epoch_of(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".json")?;
    (hex.len() == 16).then(|| u64::from_str_radix(hex, 16).ok()).flatten()
}

/// This machine's identity, to tell a heartbeat of a dead local process.
fn machine_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/etc/machine-id")
            .map(|s| s.trim().to_owned())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_host_id)
    })
    .clone()
}

/// Whether `hb` was written by a process of this machine that is gone (or by this very
/// process: an earlier fleet of it, as in tests), so no twin can be writing it.
fn gone_from_this_machine(hb: &Heartbeat) -> bool {
    hb.machine == machine_id()
        && (hb.pid == std::process::id() || !std::path::Path::new(&format!("/proc/{}", hb.pid)).exists())
}

/// The default host id: the machine's host name.
pub fn default_host_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    if name.is_empty() { "localhost".to_owned() } else { name.to_owned() }
}

/// Whether `id` is usable as a host id (it becomes an object name).
pub fn valid_host_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Ownership {
    /// Starts ownership on `storage` per `settings`: `None` when it is off, or `auto`
    /// on storage that cannot fence (said in the log). Otherwise checks that no other
    /// running daemon uses this host id, writes the first heartbeat and keeps it going
    /// until [`Ownership::stop`].
    pub async fn start(storage: &Storage, settings: &Settings) -> Result<Option<Ownership>, Error> {
        if settings.mode == Mode::Off {
            return Ok(None);
        }
        if !storage.supports_conditional_create() {
            return unsupported(storage, settings.mode).map(|()| None);
        }
        let o = Ownership {
            inner: Arc::new(Inner {
                storage: storage.clone(),
                host: settings.host_id.clone(),
                boot: uuid::Uuid::new_v4().simple().to_string(),
                mode: settings.mode,
                interval: settings.heartbeat_interval,
                expiry: settings.expiry,
                phase: Mutex::new(Phase::Pending),
                lease: Mutex::new(None),
                owned: Mutex::new(HashMap::new()),
                lapses: std::sync::atomic::AtomicU64::new(0),
                watched: tokio::sync::Mutex::new(HashMap::new()),
                seq: std::sync::atomic::AtomicU64::new(0),
                stopping: CancellationToken::new(),
                beating: tokio::sync::Mutex::new(()),
            }),
        };
        match o.establish().await {
            Ok(()) => {}
            Err(Error::Storage(e)) => tracing::warn!(
                "ownership of prefixes: {} does not answer ({}); no replica is written until it does",
                storage.location(),
                crate::errors::Chain(&e)
            ),
            Err(e) => return Err(e),
        }
        tokio::spawn(o.clone().heartbeats(o.inner.stopping.clone()));
        Ok(Some(o))
    }

    /// Probes conditional creates, refuses a twin and writes the first heartbeat.
    async fn establish(&self) -> Result<(), Error> {
        let s = &self.inner.storage;
        let fences = s.probe_conditional_create(&format!("probe/{}-{}", self.inner.host, self.inner.boot)).await?;
        if !fences {
            unsupported(s, self.inner.mode)?;
            self.set_phase(Phase::Off);
            return Ok(());
        }
        self.refuse_twin().await?;
        self.beat(false).await?;
        self.set_phase(Phase::On);
        tracing::info!(
            host = %self.inner.host,
            interval = ?self.inner.interval,
            expiry = ?self.inner.expiry,
            "🔐 ownership of prefixes on: one writer per tenant among the hosts sharing {}",
            s.location()
        );
        Ok(())
    }

    fn phase(&self) -> Phase {
        self.inner.phase.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_phase(&self, p: Phase) {
        *self.inner.phase.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Whether writes are fenced (conditional creates; the phase is `On`).
    pub fn fences(&self) -> bool {
        matches!(self.phase(), Phase::On)
    }

    /// `Err` while writes must wait (ownership not established, or it cannot be).
    fn ready(&self) -> Result<bool, storage::Error> {
        match self.phase() {
            Phase::On => Ok(true),
            Phase::Off => Ok(false),
            Phase::Pending => Err(storage::Error::Gate(
                "ownership of prefixes is not established yet (the storage has not answered since start-up)".to_owned(),
            )),
            Phase::Failed(why) => Err(storage::Error::Gate(why)),
        }
    }

    /// This host's id.
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// The storage it keeps its objects in.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Fails if another live process writes our host's heartbeat (same host id): read
    /// it, and unless it says stopped or was written by a process of this machine that
    /// no longer runs (a crash, `kill -9`), read it again after an interval.
    async fn refuse_twin(&self) -> Result<(), Error> {
        let s = &self.inner.storage;
        let read = || async {
            Ok::<_, storage::Error>(
                s.meta_get(&host_key(&self.inner.host))
                    .await?
                    .and_then(|(b, _)| serde_json::from_slice::<Heartbeat>(&b).ok()),
            )
        };
        let Some(first) = read().await? else { return Ok(()) };
        if first.stopped || gone_from_this_machine(&first) {
            return Ok(());
        }
        tracing::info!(
            host = %self.inner.host,
            "the previous heartbeat of this host id was not stopped cleanly: making sure no other daemon uses it"
        );
        tokio::time::sleep(self.inner.interval + Duration::from_millis(500)).await;
        match read().await? {
            Some(second)
                if (second.boot.as_str(), second.seq) != (first.boot.as_str(), first.seq) && !second.stopped =>
            {
                Err(Error::Twin { host: self.inner.host.clone(), place: s.location().to_owned() })
            }
            _ => Ok(()),
        }
    }

    /// Writes the heartbeat; a success renews the lease from the moment it was sent.
    async fn beat(&self, stopped: bool) -> Result<(), storage::Error> {
        let _one = self.inner.beating.lock().await;
        if !stopped && self.inner.stopping.is_cancelled() {
            return Ok(());
        }
        let sent = Instant::now();
        let seq = self.inner.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let hb = Heartbeat {
            host: self.inner.host.clone(),
            boot: self.inner.boot.clone(),
            seq,
            at: now_rfc3339(),
            pid: std::process::id(),
            machine: machine_id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            stopped,
        };
        let bytes = serde_json::to_vec_pretty(&hb).unwrap_or_default();
        self.inner.storage.meta_put(&host_key(&self.inner.host), bytes, Existing::Replace).await?;
        let lease =
            if stopped { None } else { sent.checked_add(self.inner.expiry.saturating_sub(self.inner.interval)) };
        let mut held = self.inner.lease.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some_and(|l| l <= sent) {
            // The lease ran out before this renewal: every owned prefix is checked once
            // before its next write, or a host resumed from a pause would write on.
            self.inner.lapses.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        *held = lease;
        Ok(())
    }

    async fn heartbeats(self, shutdown: CancellationToken) {
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.inner.interval) => {}
                _ = shutdown.cancelled() => break,
            }
            match self.phase() {
                Phase::On => {}
                Phase::Off | Phase::Failed(_) => break,
                Phase::Pending => {
                    match self.establish().await {
                        Ok(()) | Err(Error::Storage(_)) => {}
                        Err(e) => {
                            tracing::error!(
                                "ownership of prefixes: {}; nothing is replicated",
                                crate::errors::Chain(&e)
                            );
                            self.set_phase(Phase::Failed(e.to_string()));
                        }
                    }
                    continue;
                }
            }
            match self.beat(false).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("heartbeat written again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(
                        "heartbeat failed, writes will check their ownership until it works again: {}",
                        crate::errors::Chain(&e)
                    );
                }
                Err(_) => {}
            }
        }
    }

    /// Stops the heartbeat without marking it stopped (what a crash leaves: the host's
    /// prefixes are taken over after the expiry).
    pub fn halt(&self) {
        self.inner.stopping.cancel();
    }

    /// Marks this host stopped: its prefixes may be taken over at once. Called at a
    /// clean shutdown, after the final syncs.
    pub async fn stop(&self) {
        self.inner.stopping.cancel();
        if let Err(e) = self.beat(true).await {
            tracing::warn!("could not mark this host stopped: {}", crate::errors::Chain(&e));
        }
    }

    fn lease_holds(&self) -> bool {
        self.inner.lease.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|l| Instant::now() < l)
    }

    fn owned_epoch(&self, prefix: &str) -> Option<u64> {
        self.owned_entry(prefix).map(|(e, _)| e)
    }

    fn owned_entry(&self, prefix: &str) -> Option<(u64, u64)> {
        self.inner.owned.lock().unwrap_or_else(|e| e.into_inner()).get(prefix.trim_matches('/')).copied()
    }

    fn lapses(&self) -> u64 {
        self.inner.lapses.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_owned(&self, prefix: &str, epoch: Option<u64>) {
        let mut owned = self.inner.owned.lock().unwrap_or_else(|e| e.into_inner());
        let prefix = prefix.trim_matches('/');
        match epoch {
            Some(e) => owned.insert(prefix.to_owned(), (e, self.lapses())),
            None => owned.remove(prefix),
        };
    }

    /// Whether this host owns `prefix` (as far as it knows without asking storage).
    pub fn owns(&self, prefix: &str) -> bool {
        self.owned_epoch(prefix).is_some()
    }

    /// Prefixes this host owns, with their epoch.
    pub fn owned(&self) -> Vec<(String, u64)> {
        let mut v: Vec<_> =
            self.inner.owned.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(p, e)| (p.clone(), e.0)).collect();
        v.sort();
        v
    }

    /// What this host may do with `prefix` now; claims it if `claim` and it is free.
    pub async fn standing(&self, prefix: &str, claim: bool) -> Result<Standing, storage::Error> {
        if let Some((epoch, checked)) = self.owned_entry(prefix) {
            let lapses = self.lapses();
            if self.lease_holds() && checked == lapses {
                return Ok(Standing::Owned { epoch });
            }
            // The lease ran out (a pause, a partition), now or since the last check:
            // has anyone taken over meanwhile?
            if !self.inner.storage.meta_exists(&record_key(prefix, epoch + 1)).await? {
                if self.lease_holds() {
                    self.set_owned(prefix, Some(epoch));
                }
                return Ok(Standing::Owned { epoch });
            }
            self.set_owned(prefix, None);
            let host = self.current(prefix).await.ok().flatten().map(|r| r.host);
            tracing::error!(
                prefix,
                epoch,
                owner = host.as_deref().unwrap_or("?"),
                "fenced: this prefix was taken over while this host's lease had run out (paused or cut off); it writes nothing more there"
            );
            return Ok(Standing::Lost { host });
        }
        if !claim {
            // Compaction and retention: only where this host already owns the prefix.
            return Ok(Standing::HeldBy { host: None });
        }
        self.claim(prefix).await
    }

    /// Whether this host owns `prefix`, learning it from storage when this process has
    /// not written there yet (a restart: the record names this host). Costs nothing for
    /// a prefix known to be owned, else one listing and one read. Compaction and
    /// retention ask this before a pass: they never claim.
    pub async fn adopt(&self, prefix: &str) -> Result<bool, storage::Error> {
        if !self.ready()? || self.owns(prefix) {
            return Ok(true);
        }
        match self.current(prefix).await? {
            Some(r) if r.host == self.inner.host && !r.released => {
                self.set_owned(prefix, Some(r.epoch));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The highest ownership record of `prefix`, if any.
    pub async fn current(&self, prefix: &str) -> Result<Option<Record>, storage::Error> {
        let s = &self.inner.storage;
        let names = s.meta_list(&owners_dir(prefix)).await?;
        let Some(epoch) = names.iter().filter_map(|n| epoch_of(n)).max() else { return Ok(None) };
        let Some((bytes, _)) = s.meta_get(&record_key(prefix, epoch)).await? else { return Ok(None) };
        let record = serde_json::from_slice::<Record>(&bytes).map_err(|e| storage::Error::Url {
            url: s.location().to_owned(),
            reason: format!("ownership record {} is not valid: {e}", record_key(prefix, epoch)),
        })?;
        Ok(Some(record))
    }

    async fn create(&self, prefix: &str, epoch: u64, released: bool) -> Result<bool, storage::Error> {
        let r =
            Record { host: self.inner.host.clone(), boot: self.inner.boot.clone(), epoch, at: now_rfc3339(), released };
        let bytes = serde_json::to_vec_pretty(&r).unwrap_or_default();
        match self.inner.storage.meta_put(&record_key(prefix, epoch), bytes, Existing::Keep).await {
            Ok(()) => Ok(true),
            Err(storage::Error::Exists { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn claim(&self, prefix: &str) -> Result<Standing, storage::Error> {
        if self.create(prefix, 1, false).await? {
            self.set_owned(prefix, Some(1));
            return Ok(Standing::Owned { epoch: 1 });
        }
        // Two rounds: a racer may create the epoch we read as the next one.
        for _ in 0..2 {
            let Some(r) = self.current(prefix).await? else { continue };
            let free = if r.released {
                true
            } else if r.host == self.inner.host {
                // Ours: this process, or an earlier run of this host.
                self.set_owned(prefix, Some(r.epoch));
                return Ok(Standing::Owned { epoch: r.epoch });
            } else {
                !self.alive(&r.host).await?
            };
            if !free {
                return Ok(Standing::HeldBy { host: Some(r.host) });
            }
            if self.create(prefix, r.epoch + 1, false).await? {
                tracing::info!(
                    prefix,
                    epoch = r.epoch + 1,
                    from = %r.host,
                    "took the prefix over ({})",
                    if r.released { "released" } else { "its host is gone" }
                );
                self.set_owned(prefix, Some(r.epoch + 1));
                return Ok(Standing::Owned { epoch: r.epoch + 1 });
            }
        }
        Ok(match self.current(prefix).await? {
            Some(r) if r.host == self.inner.host && !r.released => {
                self.set_owned(prefix, Some(r.epoch));
                Standing::Owned { epoch: r.epoch }
            }
            Some(r) => Standing::HeldBy { host: Some(r.host) },
            None => Standing::HeldBy { host: None },
        })
    }

    /// Whether `host` is alive as this host watches its heartbeat (module doc).
    async fn alive(&self, host: &str) -> Result<bool, storage::Error> {
        let mut watched = self.inner.watched.lock().await;
        let now = Instant::now();
        let due = watched.get(host).is_none_or(|w| now.duration_since(w.read) >= self.inner.interval);
        if due {
            let hb = self
                .inner
                .storage
                .meta_get(&host_key(host))
                .await?
                .and_then(|(b, _)| serde_json::from_slice::<Heartbeat>(&b).ok());
            let seen = hb.map(|h| (h.boot, h.seq, h.stopped));
            let w = watched.entry(host.to_owned()).or_insert(Watched { seen: None, changed: now, read: now });
            if w.seen != seen {
                w.seen = seen;
                w.changed = now;
            }
            w.read = now;
        }
        let w = &watched[host];
        Ok(match &w.seen {
            None => false,
            Some((_, _, true)) => false,
            Some(_) => now.duration_since(w.changed) < self.inner.expiry,
        })
    }

    /// Gives `prefix` up (its file went away here): the next epoch says `released`.
    pub async fn release(&self, prefix: &str) {
        let Some(epoch) = self.owned_epoch(prefix) else { return };
        self.set_owned(prefix, None);
        match self.create(prefix, epoch + 1, true).await {
            Ok(true) => tracing::info!(prefix, epoch = epoch + 1, "released the prefix"),
            Ok(false) => tracing::info!(prefix, "not released: another host had taken it over"),
            Err(e) => tracing::warn!(prefix, "could not release the prefix: {}", crate::errors::Chain(&e)),
        }
    }

    /// Forgets that this host owns `prefix` (it was fenced).
    pub fn forget(&self, prefix: &str) {
        self.set_owned(prefix, None);
    }

    /// Every host with a heartbeat in the storage.
    pub async fn hosts(storage: &Storage) -> Result<Vec<(Heartbeat, Option<SystemTime>)>, storage::Error> {
        let mut out = Vec::new();
        for name in storage.meta_list("hosts").await? {
            let Some(host) = name.strip_suffix(".json") else { continue };
            if let Some((b, when)) = storage.meta_get(&host_key(host)).await?
                && let Ok(hb) = serde_json::from_slice::<Heartbeat>(&b)
            {
                out.push((hb, when));
            }
        }
        Ok(out)
    }

    /// The owner record of every prefix that has one: one recursive listing, then one
    /// read per prefix (32 at a time).
    pub async fn records(storage: &Storage) -> Result<HashMap<String, Record>, storage::Error> {
        use futures::StreamExt;
        let mut newest: HashMap<String, u64> = HashMap::new();
        for key in storage.meta_list_tree("owners").await? {
            let Some((prefix, name)) = key.rsplit_once('/') else { continue };
            if let Some(e) = epoch_of(name) {
                let n = newest.entry(prefix.to_owned()).or_insert(e);
                *n = (*n).max(e);
            }
        }
        let reads = futures::stream::iter(newest).map(|(prefix, epoch)| async move {
            let got = storage.meta_get(&record_key(&prefix, epoch)).await?;
            let record = got.and_then(|(b, _)| serde_json::from_slice::<Record>(&b).ok());
            let prefix = if prefix == "@base" { String::new() } else { prefix };
            Ok::<_, storage::Error>(record.map(|r| (prefix, r)))
        });
        let mut out = HashMap::new();
        let mut reads = reads.buffer_unordered(32);
        while let Some(r) = reads.next().await {
            if let Some((prefix, record)) = r? {
                out.insert(prefix, record);
            }
        }
        Ok(out)
    }
}

/// The gate every replica write of this daemon passes (see `storage::meta::Gate`).
impl Gate for Ownership {
    fn check<'a>(&'a self, prefix: &'a str, claim: bool) -> BoxFuture<'a, storage::Result<()>> {
        async move {
            if !self.ready()? {
                return Ok(());
            }
            match self.standing(prefix, claim).await? {
                Standing::Owned { .. } => Ok(()),
                Standing::HeldBy { host } => {
                    Err(storage::Error::NotOwner { prefix: prefix.to_owned(), host, fenced: false })
                }
                Standing::Lost { host } => {
                    Err(storage::Error::NotOwner { prefix: prefix.to_owned(), host, fenced: true })
                }
            }
        }
        .boxed()
    }

    fn fences(&self) -> bool {
        Ownership::fences(self)
    }

    fn taken<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, storage::Result<()>> {
        async move {
            let Some(epoch) = self.owned_epoch(prefix) else {
                return Err(storage::Error::NotOwner { prefix: prefix.to_owned(), host: None, fenced: true });
            };
            if self.inner.storage.meta_exists(&record_key(prefix, epoch + 1)).await? {
                self.set_owned(prefix, None);
                let host = self.current(prefix).await.ok().flatten().map(|r| r.host);
                tracing::error!(
                    prefix,
                    owner = host.as_deref().unwrap_or("?"),
                    "fenced: another host took this prefix over; this host writes nothing more there"
                );
                return Err(storage::Error::NotOwner { prefix: prefix.to_owned(), host, fenced: true });
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Options;

    fn settings(host: &str) -> Settings {
        Settings {
            mode: Mode::On,
            host_id: host.to_owned(),
            heartbeat_interval: Duration::from_millis(200),
            expiry: Duration::from_millis(600),
        }
    }

    async fn start(s: &Storage, host: &str) -> Ownership {
        match Ownership::start(s, &settings(host)).await {
            Ok(Some(o)) => o,
            other => panic!("ownership did not start: {:?}", other.err()),
        }
    }

    #[tokio::test]
    async fn one_owner_per_prefix_release_takeover_after_expiry_and_fencing() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let (a, b) = (start(&s, "a").await, start(&s, "b").await);
        let p = "databases/t1";
        assert_eq!(a.standing(p, true).await.ok(), Some(Standing::Owned { epoch: 1 }));
        assert_eq!(b.standing(p, true).await.ok(), Some(Standing::HeldBy { host: Some("a".into()) }));
        // Compaction never claims: nothing for a prefix b does not own.
        assert!(!b.adopt(p).await.unwrap_or(true));
        // Released: the next claim takes epoch 3 (2 is the release).
        a.release(p).await;
        assert_eq!(b.standing(p, true).await.ok(), Some(Standing::Owned { epoch: 3 }));
        assert_eq!(a.standing(p, true).await.ok(), Some(Standing::HeldBy { host: Some("b".into()) }));
        // b stops cleanly: its prefixes are free at once.
        b.stop().await;
        // (a reads another host's heartbeat at most once per interval.)
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(a.standing(p, true).await.ok(), Some(Standing::Owned { epoch: 4 }));
        // a dies (its heartbeat stops changing): b2 takes over only after the expiry,
        // and a, resumed, finds itself fenced before any write.
        a.halt();
        let b2 = start(&s, "b").await;
        assert_eq!(b2.standing(p, true).await.ok(), Some(Standing::HeldBy { host: Some("a".into()) }));
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(b2.standing(p, true).await.ok(), Some(Standing::Owned { epoch: 5 }));
        assert_eq!(a.standing(p, true).await.ok(), Some(Standing::Lost { host: Some("b".into()) }));
        assert!(!a.owns(p));
        // A restarted b adopts what its record names; the records tell `tenants` who owns what.
        let b3 = start(&s, "b").await;
        assert!(b3.adopt(p).await.unwrap_or(false));
        let records = Ownership::records(&s).await.unwrap_or_default();
        assert_eq!(records.get(p).map(|r| (r.host.as_str(), r.epoch)), Some(("b", 5)));
        let mut hosts: Vec<String> =
            Ownership::hosts(&s).await.unwrap_or_default().into_iter().map(|h| h.0.host).collect();
        hosts.sort();
        assert_eq!(hosts, ["a", "b"]);
        // Litestream's view of the storage is untouched: no replica, no stray file.
        assert!(s.list_tree("").await.unwrap_or_default().is_empty());
    }

    #[tokio::test]
    async fn a_second_live_daemon_with_the_same_host_id_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        // A heartbeat of "a" written by another machine, still changing.
        async fn put(s: &Storage, seq: u64) -> storage::Result<()> {
            let hb = Heartbeat {
                host: "a".into(),
                boot: "elsewhere".into(),
                seq,
                at: now_rfc3339(),
                pid: 1,
                machine: "another-machine".into(),
                version: "0".into(),
                stopped: false,
            };
            s.meta_put(&host_key("a"), serde_json::to_vec(&hb).unwrap_or_default(), Existing::Replace).await
        }
        put(&s, 1).await.unwrap_or_else(|e| panic!("{e}"));
        let s2 = s.clone();
        let beating = tokio::spawn(async move {
            for seq in 2..40 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = put(&s2, seq).await;
            }
        });
        let got = Ownership::start(&s, &settings("a")).await;
        beating.abort();
        assert!(matches!(got, Err(Error::Twin { .. })), "{:?}", got.err());
    }
}
