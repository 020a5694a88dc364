//! One tenant's state machine: the only thing that decides when a tenant syncs.
//!
//! A task sleeps on stop, wake, a validation request and — only when set — one timer:
//! its next sync, else its idle deadline. Its life: a first sync at registration
//! (holding a start-up slot and a connection slot), then cold unless a write arrived;
//! woken by a write, it syncs at once or when its pacing allows (a GCRA: one upload per
//! `sync_interval` on average, bursts of two); after `idle_after` without writes — or
//! at once when another tenant waits for a connection slot — it ships what is left,
//! checkpoints and closes its connection. A wake-up of a cold tenant whose [`Stamp`]
//! says nothing was committed since its last sync costs nothing. Errors back off from
//! 1 s to 60 s. When stopped it makes a final sync if it may hold unshipped commits.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedMutexGuard, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::settle::{Settle, wal_mark};
use super::{MAX_BACKOFF, MIN_BACKOFF, Shared, panic_message};
use crate::errors::chain;
use crate::replicate::{Replicator, SyncReport};
use crate::sqlite::Stamp;
use crate::status::{Board, TenantState};
use crate::tenant::{Prefix, TenantId};

/// How a tenant task ended: its final sync (`None`: none was needed), or the panic
/// that stopped it.
pub(super) struct TaskEnd {
    pub(super) path: PathBuf,
    pub(super) id: TenantId,
    pub(super) outcome: Result<Option<Result<SyncReport, String>>, String>,
}

/// The running tenant tasks, with the file each one replicates.
#[derive(Default)]
pub(super) struct Tasks {
    set: JoinSet<TaskEnd>,
    /// Task → (file, tenant), to name a task that panicked or did not finish.
    names: HashMap<tokio::task::Id, (PathBuf, TenantId)>,
}

impl Tasks {
    /// Runs a tenant's task.
    pub(super) fn spawn(&mut self, path: &Path, id: &TenantId, task: impl Future<Output = TaskEnd> + Send + 'static) {
        let handle = self.set.spawn(task);
        self.names.insert(handle.id(), (path.to_path_buf(), id.clone()));
    }

    /// The next task to end (a panic becomes an `Err` outcome); `None` if none runs.
    pub(super) async fn join_next(&mut self) -> Option<TaskEnd> {
        loop {
            match self.set.join_next_with_id().await? {
                Ok((tid, end)) => {
                    self.names.remove(&tid);
                    return Some(end);
                }
                Err(e) => {
                    let Some((path, id)) = self.names.remove(&e.id()) else { continue };
                    let what = if e.is_panic() { panic_message(e.into_panic()) } else { "cancelled".to_owned() };
                    return Some(TaskEnd { path, id, outcome: Err(what) });
                }
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// The tenants whose task still runs, sorted.
    pub(super) fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self.names.values().map(|(_, id)| id.to_string()).collect();
        v.sort();
        v
    }

    pub(super) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}

/// Requests to a tenant task other than "your files changed", as bits behind one
/// notify (a few bytes per tenant, however many kinds of request there are).
#[derive(Default)]
pub(super) struct Asks {
    notify: Notify,
    bits: std::sync::atomic::AtomicU8,
}

impl Asks {
    /// Validate the replica (`[validation]`).
    pub(super) const VALIDATE: u8 = 1;
    /// Ship a full-page file: the lifecycle repairs a damaged replica with it.
    pub(super) const REPAIR: u8 = 2;

    /// Asks the task for `what` (one of the constants above).
    pub(super) fn ask(&self, what: u8) {
        self.bits.fetch_or(what, Ordering::AcqRel);
        self.notify.notify_one();
    }

    fn take(&self) -> u8 {
        self.bits.swap(0, Ordering::AcqRel)
    }
}

/// Whether a task holds a timer, counted on the board (see [`Board::scheduled`]); the
/// count is given back when the task ends, however it ends.
struct Armed<'a> {
    board: &'a Board,
    on: bool,
}

impl<'a> Armed<'a> {
    fn new(board: &'a Board) -> Armed<'a> {
        Armed { board, on: false }
    }

    fn set(&mut self, on: bool) {
        if on != self.on {
            self.on = on;
            self.board.set_scheduled(on);
        }
    }
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// One tenant's replication loop.
pub(super) struct TenantTask {
    pub(super) shared: Arc<Shared>,
    /// As the watcher names it (the board's key).
    pub(super) path: PathBuf,
    /// The database file itself: `path`'s target if it is a symlink, whose `-wal` lies
    /// beside the target. Replicated, stamped and armed.
    file: PathBuf,
    pub(super) id: TenantId,
    prefix: Prefix,
    /// Notified on a write to the tenant's files (by the watcher: an event, or the
    /// armed file's write itself, [`crate::watch::Writes::arm`]).
    wake: Arc<Notify>,
    /// Created once the prefix lock is held.
    pub(super) r: Option<Replicator>,
    permit: Option<OwnedSemaphorePermit>,
    /// When the oldest change not yet shipped was seen.
    dirty_since: Option<SystemTime>,
    /// When the next sync runs (`None`: nothing to do, no timer).
    due: Option<Instant>,
    /// When the idle hot connection is released (`None`: cold, no timer).
    idle_at: Option<Instant>,
    pub(super) backoff: Duration,
    /// Upload pacing (a GCRA): the theoretical time of the next upload. A sync may run
    /// from `paced_until - sync_interval` on, and each one that uploads something moves
    /// it `sync_interval` on — at most one upload per interval on average, with bursts
    /// of two, so a tenant's second commit within a second ships at once too while a
    /// continuously written one is coalesced. A bulk upload spends the burst
    /// ([`paced_after`]). A sync that found nothing to ship (it ran before the commit was
    /// complete) moves nothing.
    paced_until: Option<Instant>,
    /// Stamp taken before the last successful sync.
    stamp: Option<Stamp>,
    synced_once: bool,
    /// When the first sync is due: no sync before it, however many writes wake the task
    /// meanwhile (later than the start for a database that just appeared, see
    /// `new_tenant_settle`). Cleared by the first sync.
    not_before: Option<Instant>,
    /// Another host owns the prefix (`crate::ownership`): `Some(false)` held — asked
    /// again every heartbeat interval —, `Some(true)` fenced — this host lost it and
    /// writes nothing more until the tenant is registered again.
    held: Option<bool>,
    /// Opened while the application was still writing: the due sync waits for it to
    /// pause (`super::settle`). Boxed: a task rests in memory once per tenant, and
    /// only a few settle at once.
    settle: Option<Box<Settle>>,
    /// A parking slot (`max_parked_tenants`) and when the parked connection closes
    /// ([`TenantTask::go_idle`]). Kept while the tenant is hot again, so it parks again
    /// when it goes idle. Boxed, like `settle`.
    parked: Option<Box<(OwnedSemaphorePermit, Instant)>>,
}

impl TenantTask {
    pub(super) fn new(
        shared: Arc<Shared>,
        path: PathBuf,
        id: TenantId,
        prefix: Prefix,
        wake: Arc<Notify>,
    ) -> TenantTask {
        TenantTask {
            shared,
            file: crate::sqlite::real_file(&path),
            path,
            id,
            prefix,
            wake,
            r: None,
            permit: None,
            dirty_since: None,
            due: None,
            idle_at: None,
            backoff: Duration::ZERO,
            paced_until: None,
            stamp: None,
            synced_once: false,
            not_before: None,
            held: None,
            settle: None,
            parked: None,
        }
    }

    pub(super) async fn run(
        mut self,
        asks: Arc<Asks>,
        stop: CancellationToken,
        lock: Arc<tokio::sync::Mutex<()>>,
        delay: Duration,
        settle: Duration,
    ) -> TaskEnd {
        // Never two replicators under one prefix: wait for the previous owner's final
        // sync to finish.
        let _guard: OwnedMutexGuard<()> = tokio::select! {
            g = lock.lock_owned() => g,
            _ = stop.cancelled() => return self.end(None),
        };
        if !delay.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.cancelled() => return self.end(None),
            }
        }
        let replica = self.shared.storage.replica(&self.prefix).claiming();
        self.r = Some(Replicator::new(&self.file, replica, self.shared.settings.clone()));
        // The first sync, `settle` from now (a stop meanwhile still runs it as the final one).
        let first = Instant::now() + settle;
        self.not_before = Some(first);
        self.due = Some(first);
        self.dirty_since = Some(SystemTime::now());
        let shared = self.shared.clone();
        let wake = self.wake.clone();
        let mut armed = Armed::new(&shared.board);
        loop {
            // One timer at most: the next sync, else the release of an idle connection.
            let timer = match (self.due, self.idle_at) {
                (Some(at), _) => Some((at, true)),
                (None, Some(at)) => Some((at, false)),
                (None, None) => None,
            };
            // A parked connection's release is a timer too.
            armed.set(timer.is_some() || self.parked.is_some());
            let far = Instant::now() + Duration::from_secs(86_400);
            // A cold tenant's sync that is due already runs at once: it opens the
            // database, and the sooner its read mark is taken after the commit that
            // woke it, the less the application's next checkpoint has to copy.
            let cold = timer.is_some_and(|t| t.1) && !self.is_hot();
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = wake.notified() => self.on_wake(),
                // The work is boxed: this future rests in memory once per tenant (100,000
                // of them), while a sync's own state is needed only while it runs.
                _ = due_at(timer.map_or(far, |t| t.0), cold), if timer.is_some() => {
                    if timer.is_some_and(|t| t.1) {
                        // Two boxes: a sync's state (~10 KB) is allocated only once the
                        // tenant holds its slots. A start-up of 100,000 tenants has them
                        // all waiting for one of `startup_concurrency` slots at once,
                        // and the waiting is a few hundred bytes each.
                        if let Some(startup) = Box::pin(self.admit(&stop)).await {
                            Box::pin(self.sync_now(startup)).await;
                        }
                    } else {
                        Box::pin(self.go_idle()).await;
                    }
                }
                _ = tokio::time::sleep_until(self.parked.as_ref().map_or(far, |p| p.1)), if timer.is_none() && self.parked.is_some() => {
                    Box::pin(self.unpark()).await;
                }
                _ = shared.slot_wanted.notified(), if self.permit.is_some() && self.due.is_none() => {
                    // Another tenant needs a connection slot and this one is idle.
                    Box::pin(self.go_idle()).await;
                }
                _ = asks.notify.notified() => {
                    let asked = asks.take();
                    if asked & Asks::REPAIR != 0 {
                        self.repair();
                    }
                    if asked & Asks::VALIDATE != 0 {
                        Box::pin(self.validate(&stop)).await;
                    }
                }
            }
        }
        armed.set(false);
        let result = Box::pin(self.finish()).await;
        self.end(result)
    }

    fn end(&self, final_sync: Option<Result<SyncReport, String>>) -> TaskEnd {
        TaskEnd { path: self.path.clone(), id: self.id.clone(), outcome: Ok(final_sync) }
    }

    pub(super) fn replicator(&mut self) -> &mut Replicator {
        self.r.as_mut().unwrap_or_else(|| unreachable!("created before the loop"))
    }

    fn is_hot(&self) -> bool {
        self.r.as_ref().is_some_and(|r| r.is_hot())
    }

    /// The lifecycle found this tenant's replica damaged: the next sync (now, unless
    /// backing off) ships a full-page file for the repair snapshot.
    fn repair(&mut self) {
        if self.held.is_some() {
            return;
        }
        tracing::warn!(tenant = %self.id, "shipping a full-page file to repair the replica");
        self.replicator().request_snapshot();
        if self.backoff.is_zero() {
            self.due = Some(Instant::now());
        }
    }

    fn on_wake(&mut self) {
        if self.held.is_some() {
            // Held: asked again on its own timer; fenced: nothing more.
            return;
        }
        let now = Instant::now();
        // Only a wake-up that may be ignored arms again; otherwise the sync it leads to does.
        let ignorable = !self.is_hot() && self.backoff.is_zero() && self.due.is_none();
        if ignorable && self.stamp.is_some_and(|s| s.nothing_committed_since(&self.look())) {
            // Cold and nothing committed since the last sync: our own checkpoint, a
            // rescan's repeat, or an `-shm` touch. No connection, no request.
            return;
        }
        if self.dirty_since.is_none() {
            let t = SystemTime::now();
            self.dirty_since = Some(t);
            self.shared.board.update(&self.path, |s| s.pending_since = Some(t));
        }
        if self.backoff.is_zero() {
            self.pace(now);
        }
    }

    /// Looks at the database and its `-wal`, first arming them so that a commit after
    /// this look wakes the task (the watcher reports one write per arming).
    fn look(&self) -> Stamp {
        self.shared.writes.arm(&self.path, &self.file, &self.wake);
        Stamp::of(&self.file)
    }

    /// Schedules a sync as early as the upload pacing allows.
    fn pace(&mut self, now: Instant) {
        let interval = self.shared.sync_interval;
        let earliest = self.paced_until.and_then(|t| t.checked_sub(interval)).map_or(now, |t| t.max(now));
        let earliest = self.not_before.map_or(earliest, |t| t.max(earliest));
        if self.due.is_none_or(|d| d > earliest) {
            self.due = Some(earliest);
        }
    }

    /// Takes a hot slot (a connection may be opened). `false` if stopped meanwhile.
    pub(super) async fn take_slot(&mut self, stop: Option<&CancellationToken>) -> bool {
        if self.permit.is_some() {
            return true;
        }
        let slots = self.shared.hot_slots.clone();
        if let Ok(p) = slots.clone().try_acquire_owned() {
            self.permit = Some(p);
            return true;
        }
        self.shared.waiting.fetch_add(1, Ordering::AcqRel);
        self.shared.slot_wanted.notify_waiters();
        let got = match stop {
            Some(stop) => tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = stop.cancelled() => None,
            },
            None => slots.acquire_owned().await.ok(),
        };
        self.shared.waiting.fetch_sub(1, Ordering::AcqRel);
        self.permit = got;
        self.permit.is_some()
    }

    /// Waits for what a sync needs before it may run: this host's ownership of the
    /// prefix (asked again if held), a start-up slot for the first sync (returned, held
    /// for the sync) and a connection slot. `None`: not now (held, or stopped).
    pub(super) async fn admit(&mut self, stop: &CancellationToken) -> Option<Option<OwnedSemaphorePermit>> {
        if self.held.is_some() && !Box::pin(self.owner_again()).await {
            return None;
        }
        let startup = if self.synced_once {
            None
        } else {
            let slots = self.shared.startup_slots.clone();
            tokio::select! {
                p = slots.acquire_owned() => p.ok(),
                _ = stop.cancelled() => return None,
            }
        };
        self.take_slot(Some(stop)).await.then_some(startup)
    }

    /// A sync once [`admit`](Self::admit)ted; `startup` is released when it is done.
    pub(super) async fn sync_now(&mut self, startup: Option<OwnedSemaphorePermit>) {
        let first = !self.synced_once;
        if !first && self.settling().await {
            return;
        }
        let result = self.sync_once().await;
        drop(startup);
        if result.is_ok() {
            if first && self.dirty_since.is_none() && self.is_hot() {
                // An existing tenant found at start-up (or a new one) is probably idle:
                // release its connection now rather than after `idle_after`, so a
                // start-up of 100,000 tenants holds `startup_concurrency` connections,
                // not 100,000. Its next write reopens it.
                self.go_idle().await;
            } else {
                self.after_sync().await;
            }
        }
    }

    /// Whether the due sync waits for the application to pause (`super::settle`): a
    /// cold tenant opens first, and waits if its `-wal` changed meanwhile; a settling
    /// one looks at its `-wal` again. `true`: the next look is scheduled.
    async fn settling(&mut self) -> bool {
        let cap = self.shared.sync_interval;
        let starting = self.settle.is_none();
        let next = match self.settle.take() {
            Some(s) => s.look(wal_mark(&self.file), Instant::now(), cap).map(Box::new),
            // A hot tenant's syncs are paced already: no look at all.
            None if self.is_hot() => None,
            None => {
                let before = wal_mark(&self.file);
                // An open that fails is left to the sync, which reports it.
                let opened = matches!(self.replicator().open().await, Ok(true));
                opened.then(|| Settle::after_open(before, wal_mark(&self.file), Instant::now())).flatten().map(Box::new)
            }
        };
        let Some(s) = next else { return false };
        if starting {
            tracing::debug!(target: "litefleet::timeline", tenant = %self.id, "settle");
        }
        self.due = Some(s.recheck_at(Instant::now(), cap));
        self.settle = Some(s);
        true
    }

    /// One sync with a slot held: ships everything committed, records the outcome.
    pub(super) async fn sync_once(&mut self) -> Result<SyncReport, String> {
        self.settle = None;
        self.due = None;
        self.not_before = None;
        let stamp = self.look();
        let waited_since = self.dirty_since.take();
        if let Some(t) = waited_since {
            crate::metrics::lag(self.id.as_str(), SystemTime::now().duration_since(t).unwrap_or_default());
        }
        let started = Instant::now();
        match self.replicator().sync().await {
            Ok(rep) => {
                if rep.uploaded > 0 {
                    self.paced_until = Some(paced_after(self.paced_until, started, self.shared.sync_interval, &rep));
                }
                if rep.more {
                    // A writer outran the sync: the rest ships within the pacing, even
                    // if no event comes (those of its commits may already be consumed).
                    self.dirty_since.get_or_insert(SystemTime::now() - started.elapsed());
                    self.pace(Instant::now());
                }
                crate::metrics::sync_ok(
                    self.id.as_str(),
                    rep.uploaded,
                    rep.bytes,
                    rep.snapshots.len() as u64,
                    started.elapsed(),
                );
                self.succeeded(&rep, stamp);
                Ok(rep)
            }
            Err(e) => {
                self.dirty_since = match (waited_since, self.dirty_since) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let message = chain(&e);
                self.sync_failed(&e, message.clone()).await;
                Err(message)
            }
        }
    }

    /// After a successful sync: keep the connection for `idle_after`, or give it up.
    pub(super) async fn after_sync(&mut self) {
        if !self.is_hot() {
            // An empty (touched) file: nothing is open.
            self.permit = None;
            self.idle_at = None;
        } else if self.shared.waiting.load(Ordering::Acquire) > 0 {
            // Others wait for a connection slot: go cold now.
            self.go_idle().await;
        } else {
            self.idle_at = Some(Instant::now() + self.shared.idle_after);
        }
    }

    /// Records a successful sync (or idle) on the task and the board. `before`: the
    /// stamp taken before it; what is kept adds the database file as the sync's own
    /// checkpoint left it ([`Stamp::then_our_checkpoint`]).
    fn succeeded(&mut self, rep: &SyncReport, before: Stamp) {
        self.backoff = Duration::ZERO;
        self.synced_once = true;
        self.stamp = Some(before.then_our_checkpoint(Stamp::of(&self.file)));
        let txid = self.r.as_ref().and_then(|r| r.remote_txid()).filter(|t| *t > 0);
        let hot = self.is_hot();
        let pending = self.dirty_since;
        if rep.uploaded > 0 {
            tracing::debug!(tenant = %self.id, txid = txid.unwrap_or(0), files = rep.uploaded, bytes = rep.bytes, "synced");
        }
        self.shared.lifecycle.shipped(self.prefix.as_str(), rep.files.clone(), &rep.full_pages);
        if let Some(c) = &self.shared.changes {
            c.shipped(self.prefix.as_str(), &rep.files);
        }
        let now = SystemTime::now();
        self.shared.board.update(&self.path, |s| {
            s.state = TenantState::Active;
            s.held_by = None;
            s.txid = txid.or(s.txid);
            s.files_shipped += rep.uploaded;
            s.bytes_shipped += rep.bytes;
            s.snapshots_shipped += rep.snapshots.len() as u64;
            s.syncs += 1;
            s.last_sync_at = Some(now);
            s.pending_since = pending;
            s.last_error = None;
            s.hot = hot;
        });
    }

    /// A sync failed: another host owns the prefix, or a plain failure (backoff).
    async fn sync_failed(&mut self, e: &crate::replicate::Error, message: String) {
        let storage_error = match e {
            crate::replicate::Error::Storage(se) => Some(se),
            _ => None,
        };
        if let Some((host, fenced)) = storage_error.and_then(|se| se.not_owner()) {
            let host = host.map(str::to_owned);
            return self.not_owner(host, fenced, message).await;
        }
        if matches!(storage_error, Some(crate::storage::Error::Exists { .. })) {
            // A name this host was about to write is taken, yet the prefix is still
            // ours (a late write of an earlier owner): learn the replica again.
            let _ = self.replicator().forget_replica().await;
        }
        self.failed(message).await;
    }

    /// Another host owns the prefix: nothing is written; a held tenant asks again every
    /// heartbeat interval, a fenced one stops.
    async fn not_owner(&mut self, host: Option<String>, fenced: bool, message: String) {
        let first = self.held != Some(fenced);
        self.held = Some(fenced);
        // What was prepared was numbered after the replica as this host knew it.
        let _ = self.replicator().forget_replica().await;
        self.permit = None;
        self.idle_at = None;
        self.backoff = Duration::ZERO;
        self.due = (!fenced).then(|| Instant::now() + self.shared.heartbeat_interval);
        let owner = host.clone().unwrap_or_else(|| "another host".to_owned());
        let error = if fenced {
            format!(
                "fenced: {owner} took this tenant's prefix over while this host could not renew its heartbeat (paused or cut off); nothing more is written from here. Make sure the database lives on one host only, then restart litefleet (or move the file out and back) to replicate it from this host again"
            )
        } else {
            message
        };
        if fenced {
            tracing::error!(tenant = %self.id, owner = %owner, "{}: {error}", self.path.display());
        } else if first {
            tracing::warn!(tenant = %self.id, owner = %owner, "{} is held by {owner}, which replicates this tenant: not replicated from here until {owner} releases it or stops", self.path.display());
        }
        let state = if fenced { TenantState::Fenced } else { TenantState::Held };
        self.shared.board.update(&self.path, |s| {
            s.state = state;
            s.held_by = host;
            s.last_error = Some(error);
            s.hot = false;
        });
    }

    /// A held tenant's timer: may this host write now (the owner released the prefix
    /// or died)? If not, the timer is set again.
    async fn owner_again(&mut self) -> bool {
        if self.held == Some(true) {
            return false;
        }
        let asked = self.replicator().replica().may_write().await;
        match asked {
            Ok(()) => {
                tracing::info!(tenant = %self.id, "{} is replicated from this host now", self.path.display());
                self.held = None;
                self.shared.board.update(&self.path, |s| s.held_by = None);
                true
            }
            Err(e) => match e.not_owner() {
                Some((host, fenced)) => {
                    let host = host.map(str::to_owned);
                    self.not_owner(host, fenced, chain(&e)).await;
                    false
                }
                None => {
                    // Storage did not answer: ask again later.
                    self.due = Some(Instant::now() + self.shared.heartbeat_interval);
                    false
                }
            },
        }
    }

    async fn failed(&mut self, error: String) {
        crate::metrics::sync_failed(self.id.as_str());
        self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
        self.due = Some(Instant::now() + self.backoff);
        self.idle_at = None;
        tracing::warn!(tenant = %self.id, retry_in = ?self.backoff, "sync of {} failed: {error}", self.path.display());
        // Free the connection slot while waiting to retry.
        if let Some(r) = self.r.as_mut() {
            let _ = r.release().await;
        }
        let pending = self.dirty_since;
        self.shared.board.update(&self.path, |s| {
            s.state = TenantState::Error;
            s.errors += 1;
            s.last_error = Some(error);
            s.pending_since = pending;
            s.hot = false;
        });
        self.permit = None;
    }

    /// Ships what is left, checkpoints and releases the connection: parked (kept open
    /// with no transaction, `Engine::park`) for `idle_after` if this tenant holds a
    /// parking slot or one is free, else closed. A parked tenant costs three
    /// descriptors and no CPU; its application's next connection is then not the
    /// database's first, and writes into a `-wal` that exists (benchmarks §8,
    /// "Thirteenth run").
    async fn go_idle(&mut self) {
        self.idle_at = None;
        let stamp = self.look();
        let slot = self.parked.take().map(|p| p.0).or_else(|| self.shared.park_slots.clone().try_acquire_owned().ok());
        let result = self.replicator().idle(slot.is_some()).await;
        if self.replicator().is_parked() {
            self.parked = slot.map(|s| Box::new((s, Instant::now() + self.shared.idle_after)));
        }
        match result {
            Ok(rep) => {
                let pending = self.dirty_since.take();
                self.succeeded(&rep, stamp);
                // A change seen while idling: sync it (the connection reopens).
                if let Some(p) = pending {
                    self.dirty_since = Some(p);
                    self.due = Some(Instant::now());
                }
            }
            Err(e) => self.sync_failed(&e, chain(&e)).await,
        }
        // Only now, with the board saying cold, may another tenant take the slot.
        self.permit = None;
        self.shared.released.notify_one();
    }

    /// Closes a parked connection whose time is up, and gives its slot back.
    async fn unpark(&mut self) {
        self.parked = None;
        if !self.is_hot()
            && self.replicator().is_parked()
            && let Err(e) = self.replicator().release().await
        {
            tracing::debug!(tenant = %self.id, error = %chain(&e), "closing a parked connection");
        }
    }

    /// After stop: the final sync when one can be needed.
    async fn finish(&mut self) -> Option<Result<SyncReport, String>> {
        let shutting_down = self.shared.shutdown.is_cancelled();
        let result = self.final_sync(shutting_down).await;
        // Unregistered (not a shutdown): another host may take the prefix over now.
        if !shutting_down && let Some(o) = &self.shared.ownership {
            o.release(self.prefix.as_str()).await;
        }
        // The database was deleted: a standby stops following the tenant.
        if !shutting_down
            && self.held.is_none()
            && !self.path.exists()
            && let (Some(c), Some(txid)) = (&self.shared.changes, self.r.as_ref().and_then(|r| r.remote_txid()))
        {
            c.removed(self.prefix.as_str(), txid);
        }
        result
    }

    async fn final_sync(&mut self, shutting_down: bool) -> Option<Result<SyncReport, String>> {
        if self.held.is_some() {
            if let Some(r) = self.r.as_mut() {
                let _ = r.release().await;
            }
            return None;
        }
        let exists = self.path.exists();
        let needed = exists
            && (self.is_hot()
                || self.dirty_since.is_some()
                || !self.synced_once
                || !self.stamp.is_some_and(|s| s.nothing_committed_since(&Stamp::of(&self.file))));
        if !needed {
            if let Some(r) = self.r.as_mut() {
                let _ = r.release().await;
            }
            return None;
        }
        if !shutting_down {
            tracing::info!(tenant = %self.id, "final sync of {} before it stops replicating", self.path.display());
        }
        self.take_slot(None).await;
        let r = self.replicator().shutdown().await.map_err(|e| chain(&e));
        self.permit = None;
        Some(r)
    }
}

/// Ready at `at`; with `now_if_passed`, at once if it has passed (tokio's timer rounds
/// a deadline up to its next millisecond tick). Only for a cold tenant's sync, which
/// opens its connection: a hot one's syncs keep the tick, so a sync that finds more to
/// do at once cannot spin.
async fn due_at(at: Instant, now_if_passed: bool) {
    if !now_if_passed || at > Instant::now() {
        tokio::time::sleep_until(at).await;
    }
}

/// WAL frames (1 MiB at 4 KiB pages) from which one sync's upload is a bulk one:
/// [`paced_after`].
const BULK_FRAMES: u64 = 256;

/// The pacing's theoretical time of the next upload (`paced_until`) after a sync that
/// began at `started` and uploaded `rep`; a sync may run from that time minus `interval`.
///
/// A bulk upload (≥ [`BULK_FRAMES`] frames of WAL read: one large commit, or many small
/// ones since the last sync) spends both tokens, so the next sync waits a whole
/// `interval`: its writer is most likely still writing, and a second sync at once would
/// compete with it for a core and the disk — and checkpoint in the middle of its burst.
/// That wait counts from `started`, not from the debt of earlier uploads: added to it, a
/// tenant written continuously would wait one interval more after every sync. Small
/// uploads spend one token, which keeps the burst of two for sporadic commits.
pub(super) fn paced_after(
    paced_until: Option<Instant>,
    started: Instant,
    interval: Duration,
    rep: &SyncReport,
) -> Instant {
    if rep.frames >= BULK_FRAMES {
        started + interval * 2
    } else {
        paced_until.map_or(started, |t| t.max(started)) + interval
    }
}
