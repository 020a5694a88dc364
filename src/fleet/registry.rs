//! The registry and its supervisor: which database file replicates where.
//!
//! The [`Registry`] is one map of per-path [`Entry`]s (replicating, waiting for the
//! hook, in conflict, refused, skipped — with the validation round and crash count of
//! each) and one map of storage prefixes (their owner and the lock a task holds for its
//! whole life). The [`Supervisor`] is the only task that changes it: it turns watcher
//! events into registrations (`Present`), unregistrations (`Gone`) and wake-ups
//! (`Changed`), collects hook answers and ended tasks, and answers reloads and
//! shutdown. Everything it does is quick; anything slow (a hook call, a sync) runs in a
//! task of its own and comes back as a message.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::reload::{DirKeys, SingleSpec};
use super::tenant_task::{Asks, TaskEnd, Tasks, TenantTask};
use super::{Command, MAX_BACKOFF, MIN_BACKOFF, Shared, ShutdownReport, new_tenant_settle};
use crate::config::{Config, WatchConfig};
use crate::hooks::{Decision, HookTenant, Hooks, Verdict};
use crate::lifecycle::Damage;
use crate::status::{TenantState, TenantStatus};
use crate::tenant::{self, Classified, Prefix, TenantId};
use crate::watch::{WatchEvent, WatchHandle};

/// Every database file the fleet knows of, and every storage prefix it has used.
#[derive(Default)]
pub(super) struct Registry {
    /// By canonical path.
    entries: HashMap<PathBuf, Entry>,
    /// By storage prefix.
    prefixes: HashMap<Prefix, PrefixSlot>,
}

/// One database file.
pub(super) struct Entry {
    /// What the fleet does with it.
    pub(super) kind: Kind,
    /// Restore validation: the round in which it was last asked to validate (0: never).
    pub(super) validated: u64,
    /// Crashes of its replicator so far, for the restart backoff.
    crashes: u32,
}

/// What the fleet does with one database file.
pub(super) enum Kind {
    /// Waiting for the hook's answer to the request numbered `generation` (a `Gone`
    /// in between, or a newer `Present`, makes an answer stale).
    Deciding { generation: u64 },
    /// Replicating: its task runs.
    Active(Registered),
    /// Not replicated because another file replicates under the same prefix.
    Conflict { id: TenantId },
    /// Not replicated because the hook failed and `on_error = "refuse"`.
    Refused { id: TenantId },
    /// Not a tenant (its name, a hook's refusal, or where it leads).
    Skipped,
}

/// A replicating file: the handles of its task.
pub(super) struct Registered {
    pub(super) id: TenantId,
    pub(super) prefix: Prefix,
    /// Wakes the task: its database or `-wal` changed.
    pub(super) wake: Arc<Notify>,
    /// Asks the task to validate its replica or ship a repair file.
    pub(super) asks: Arc<Asks>,
    /// Stops the task (after its final sync).
    pub(super) stop: CancellationToken,
}

/// One storage prefix.
#[derive(Default)]
struct PrefixSlot {
    /// The file that replicates there now.
    owner: Option<PathBuf>,
    /// Held by a tenant task for its whole life, so a replacement task for the prefix
    /// starts only after the previous one's final sync.
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl Registry {
    /// The entry of a path.
    pub(super) fn get(&self, path: &Path) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The replicating entries.
    pub(super) fn active(&mut self) -> impl Iterator<Item = (&PathBuf, &mut Entry)> {
        self.entries.iter_mut().filter(|(_, e)| matches!(e.kind, Kind::Active(_)))
    }

    /// How many files replicate.
    fn active_count(&self) -> usize {
        self.entries.values().filter(|e| matches!(e.kind, Kind::Active(_))).count()
    }

    /// Sets what the fleet does with `path` (keeping its counters).
    fn set(&mut self, path: &Path, kind: Kind) {
        match self.entries.get_mut(path) {
            Some(e) => e.kind = kind,
            None => {
                self.entries.insert(path.to_path_buf(), Entry { kind, validated: 0, crashes: 0 });
            }
        }
    }

    /// Forgets `path`; the prefix it owned is free again.
    fn remove(&mut self, path: &Path) -> Option<Entry> {
        let e = self.entries.remove(path)?;
        if let Kind::Active(r) = &e.kind
            && let Some(slot) = self.prefixes.get_mut(&r.prefix)
            && slot.owner.as_deref() == Some(path)
        {
            slot.owner = None;
        }
        Some(e)
    }

    /// The replicating entry (path and handles) under `prefix`, if any.
    fn active_under(&self, prefix: &str) -> Option<(&PathBuf, &Registered)> {
        let owner = self.prefixes.iter().find(|(p, _)| p.as_str() == prefix).and_then(|(_, s)| s.owner.as_ref())?;
        match self.entries.get(owner) {
            Some(Entry { kind: Kind::Active(r), .. }) => Some((owner, r)),
            _ => None,
        }
    }

    /// The file other than `path` that replicates under `prefix`.
    fn owner_other_than(&self, prefix: &Prefix, path: &Path) -> Option<&PathBuf> {
        self.prefixes.get(prefix).and_then(|s| s.owner.as_ref()).filter(|o| o.as_path() != path)
    }

    /// Makes `path` the owner of `prefix`; returns the prefix's lock.
    fn claim(&mut self, prefix: &Prefix, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        let slot = self.prefixes.entry(prefix.clone()).or_default();
        slot.owner = Some(path.to_path_buf());
        slot.lock.clone()
    }
}

/// A hook's answer about a new file, back in the supervisor.
struct Decided {
    path: PathBuf,
    generation: u64,
    id: TenantId,
    watch_dir: PathBuf,
    verdict: Verdict,
}

/// The supervisor: owns the registry, reacts to the watcher, the hook, the tasks and
/// the fleet's commands.
pub(super) struct Supervisor {
    pub(super) shared: Arc<Shared>,
    pub(super) config: Config,
    pub(super) keys: DirKeys,
    pub(super) single: Option<SingleSpec>,
    pub(super) watcher: Option<Arc<WatchHandle>>,
    watch_token: CancellationToken,
    pub(super) registry: Registry,
    tasks: Tasks,
    /// The initial scan has finished.
    ready: bool,
    /// The tenant hook, if configured.
    pub(super) hooks: Option<Hooks>,
    /// Hook calls in flight for new files.
    deciding: JoinSet<Decided>,
    /// Numbers hook requests (see [`Kind::Deciding`]).
    generation: u64,
    /// Restore validation rounds so far.
    pub(super) round: u64,
}

impl Supervisor {
    pub(super) fn new(
        shared: Arc<Shared>,
        config: Config,
        keys: DirKeys,
        single: Option<SingleSpec>,
        watcher: Arc<WatchHandle>,
        watch_token: CancellationToken,
        hooks: Option<Hooks>,
    ) -> Supervisor {
        Supervisor {
            shared,
            config,
            keys,
            single,
            watcher: Some(watcher),
            watch_token,
            registry: Registry::default(),
            tasks: Tasks::default(),
            ready: false,
            hooks,
            deciding: JoinSet::new(),
            generation: 0,
            round: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut events: mpsc::Receiver<WatchEvent>,
        mut commands: mpsc::Receiver<Command>,
        mut damage: mpsc::UnboundedReceiver<Damage>,
    ) {
        let mut watching = true;
        let mut rounds = self.shared.validation.as_ref().map(|_| {
            let every = self.config.validation.interval;
            let mut i = tokio::time::interval_at(Instant::now() + every, every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                _ = async { rounds.as_mut().unwrap_or_else(|| unreachable!()).tick().await }, if rounds.is_some() => {
                    self.request_validations();
                }
                ev = events.recv(), if watching => match ev {
                    Some(ev) => self.on_event(ev),
                    None => {
                        tracing::error!("the directory watcher stopped; no new tenants will be found until restart");
                        watching = false;
                    }
                },
                Some(end) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_task_end(end),
                Some(d) = damage.recv() => self.on_damage(d),
                Some(done) = self.deciding.join_next(), if !self.deciding.is_empty() => match done {
                    Ok(d) => self.on_decided(d),
                    Err(e) => tracing::error!("hook call task failed: {e}"),
                },
                cmd = commands.recv() => match cmd {
                    Some(Command::Reload(config, reply)) => {
                        let r = self.reload(*config).await;
                        let _ = reply.send(r);
                    }
                    Some(Command::Shutdown(reply)) => {
                        let report = self.shutdown().await;
                        let _ = reply.send(report);
                        return;
                    }
                    None => {
                        // The Fleet was dropped: stop without final syncs.
                        self.watch_token.cancel();
                        self.tasks.abort_all();
                        return;
                    }
                },
            }
        }
    }

    fn dir_config(&self, key: usize) -> Option<&WatchConfig> {
        self.keys.get(key)
    }

    fn on_event(&mut self, ev: WatchEvent) {
        match ev {
            WatchEvent::Present { path, dir } => self.on_present(path, dir),
            WatchEvent::Gone { path, .. } => self.on_gone(&path),
            WatchEvent::Changed { path } => {
                if let Some(Entry { kind: Kind::Active(r), .. }) = self.registry.get(&path) {
                    r.wake.notify_one();
                }
            }
            WatchEvent::Refused { path, reason, .. } => {
                tracing::warn!("⚠️  Refused {}: {reason}", path.display());
                self.skip(&path, &reason);
            }
            WatchEvent::ScanComplete { dirs, files } => {
                if !self.ready {
                    self.ready = true;
                    self.shared.board.set_ready(true);
                    let clients = self.registry.active_count();
                    tracing::info!("🎯 Monitoring {clients} clients across {dirs} directories");
                } else {
                    tracing::debug!(dirs, files, "rescan complete");
                }
            }
        }
    }

    /// Records `path` as skipped (on the board too).
    fn skip(&mut self, path: &Path, reason: &str) {
        self.registry.set(path, Kind::Skipped);
        self.shared.board.skip(path, reason);
    }

    fn on_present(&mut self, path: PathBuf, dir: usize) {
        let was_skipped = match self.registry.get(&path) {
            Some(Entry { kind: Kind::Skipped, .. }) => true,
            Some(_) => return,
            None => false,
        };
        let (id, prefix, watch_dir) = if let Some(single) = &self.single {
            if path != single.path {
                return;
            }
            (single.id.clone(), single.prefix.clone(), single.path.clone())
        } else {
            let Some(w) = self.dir_config(dir) else { return };
            match tenant::classify(&path, &w.extensions, self.config.fleet.non_guid) {
                Classified::Ignored => return,
                Classified::Skipped { reason } => {
                    if !was_skipped {
                        tracing::warn!("⏭️  Skipped {}: {reason}", path.display());
                    }
                    self.skip(&path, &reason);
                    return;
                }
                Classified::Tenant(id) => {
                    let prefix = Prefix::of_tenant(&self.config.storage.root, w.prefix.as_ref(), &id);
                    (id, prefix, w.dir.clone())
                }
            }
        };
        if was_skipped {
            self.registry.remove(&path);
            self.shared.board.unskip(&path);
        }
        if self.ready {
            tracing::info!("📁 Database created: {}", path.display());
        }
        if let Some(hooks) = &self.hooks {
            // The hook decides the prefix (or refuses); its answer comes back through
            // `deciding`, so a slow hook never holds up the watcher or other tenants.
            self.generation += 1;
            let generation = self.generation;
            self.registry.set(&path, Kind::Deciding { generation });
            let hooks = hooks.clone();
            let t = HookTenant { id, database_path: path, watch_dir, default_prefix: prefix };
            self.deciding.spawn(async move {
                let verdict = hooks.on_register(&t).await;
                Decided { path: t.database_path, generation, id: t.id, watch_dir: t.watch_dir, verdict }
            });
            return;
        }
        self.register(path, id, prefix, watch_dir, BTreeMap::new());
    }

    fn on_decided(&mut self, d: Decided) {
        let current = matches!(
            self.registry.get(&d.path),
            Some(Entry { kind: Kind::Deciding { generation }, .. }) if *generation == d.generation
        );
        if !current {
            return; // gone (or replaced) while the hook ran
        }
        self.registry.remove(&d.path);
        let Decided { path, id, watch_dir, verdict, .. } = d;
        match verdict.decision {
            Decision::Accept { prefix, labels } => {
                if let Some(e) = &verdict.hook_error {
                    tracing::warn!(tenant = %id, "hook failed, using the default prefix (on_error = \"default\"): {e}");
                }
                self.register(path, id, prefix, watch_dir, labels);
            }
            Decision::Refuse { reason } => match verdict.hook_error {
                Some(e) => {
                    tracing::error!(tenant = %id, "hook failed, not replicating {} (on_error = \"refuse\"): {e}", path.display());
                    let mut status = TenantStatus::new(&id, &path, &watch_dir, &Prefix::none(), "");
                    status.state = TenantState::Error;
                    status.last_error = Some(format!("hook failed: {e}"));
                    self.shared.board.upsert(status);
                    self.registry.set(&path, Kind::Refused { id });
                }
                None => {
                    let reason = format!("refused by the hook: {reason}");
                    tracing::warn!("⏭️  Skipped {}: {reason}", path.display());
                    self.skip(&path, &reason);
                }
            },
        }
    }

    /// Registers `path` under `prefix` (or records a conflict with the prefix's owner).
    fn register(
        &mut self,
        path: PathBuf,
        id: TenantId,
        prefix: Prefix,
        watch_dir: PathBuf,
        labels: BTreeMap<String, String>,
    ) {
        let replica = self.shared.storage.replica(&prefix);
        let shown = replica.location();
        let mut status = TenantStatus::new(&id, &path, &watch_dir, &prefix, &replica.url());
        status.labels = labels;
        if let Some(owner) = self.registry.owner_other_than(&prefix, &path) {
            let reason = format!(
                "{} and {} would both replicate to {shown}; only the first replicates (give their watch directories their own `prefix`)",
                owner.display(),
                path.display()
            );
            tracing::error!("❌ Conflict: {reason}");
            status.state = TenantState::Conflict;
            status.conflict_with = Some(owner.clone());
            status.last_error = Some(reason);
            self.shared.board.upsert(status);
            self.registry.set(&path, Kind::Conflict { id });
            return;
        }
        self.shared.board.upsert(status);
        tracing::info!("✅ Client registered: {id} -> {shown}/");
        // A database created while we run is most likely still being set up (its
        // schema, a first import): its first sync waits a moment, so it ships one file
        // rather than an empty database and then the rest. Found at start-up: at once.
        let settle = if self.ready { new_tenant_settle(self.shared.sync_interval) } else { Duration::ZERO };
        let reg = self.spawn(&path, id, prefix, Duration::ZERO, settle);
        self.registry.set(&path, Kind::Active(reg));
    }

    /// Starts the task of a tenant: after `delay` (a crashed task's backoff), with its
    /// first sync `settle` later (a database that just appeared).
    fn spawn(&mut self, path: &Path, id: TenantId, prefix: Prefix, delay: Duration, settle: Duration) -> Registered {
        let wake = Arc::new(Notify::new());
        let asks = Arc::new(Asks::default());
        let stop = self.shared.shutdown.child_token();
        let lock = self.registry.claim(&prefix, path);
        let task = TenantTask::new(self.shared.clone(), path.to_path_buf(), id.clone(), prefix.clone(), wake.clone());
        self.tasks.spawn(path, &id, task.run(asks.clone(), stop.clone(), lock, delay, settle));
        Registered { id, prefix, wake, asks, stop }
    }

    fn on_gone(&mut self, path: &Path) {
        let Some(entry) = self.registry.remove(path) else { return };
        match entry.kind {
            Kind::Skipped => {
                self.shared.board.unskip(path);
                return;
            }
            Kind::Deciding { .. } => return,
            _ => {}
        }
        tracing::info!("🗑️  Database removed: {}", path.display());
        self.shared.board.remove(path);
        match entry.kind {
            Kind::Active(r) => {
                r.stop.cancel();
                tracing::info!("❌ Client unregistered: {}", r.id);
                if let Some(hooks) = &self.hooks {
                    let hooks = hooks.clone();
                    let t = HookTenant {
                        id: r.id,
                        database_path: path.to_path_buf(),
                        watch_dir: PathBuf::new(),
                        default_prefix: r.prefix,
                    };
                    tokio::spawn(async move { hooks.on_unregister(&t).await });
                }
            }
            Kind::Conflict { id } => tracing::info!("❌ Client unregistered: {id} (was in conflict)"),
            Kind::Refused { id } => tracing::info!("❌ Client unregistered: {id} (was refused)"),
            Kind::Skipped | Kind::Deciding { .. } => {}
        }
    }

    /// The lifecycle found damage in a replica (or repaired it): shown on the tenant's
    /// board entry; the tenant is asked for a full-page file when the repair needs one.
    fn on_damage(&mut self, d: Damage) {
        let prefix = match &d {
            Damage::Found { prefix, .. } | Damage::Repaired { prefix, .. } => prefix,
        };
        let Some((path, r)) = self.registry.active_under(prefix) else {
            if let Damage::Found { files, .. } = &d {
                tracing::warn!(
                    "damaged replica {prefix} has no tenant replicating here to repair it: {}",
                    files.join("; ")
                );
            }
            return;
        };
        let path = path.clone();
        let shown = match d {
            Damage::Found { files, snapshot, .. } => {
                if snapshot {
                    r.asks.ask(Asks::REPAIR);
                }
                if files.is_empty() {
                    // Only the snapshot asked for again: the damage already shows.
                    return;
                }
                let todo = if snapshot {
                    "restores past it fail until a repair snapshot is written (a full-page file was requested)"
                } else {
                    "restores go around it"
                };
                Some(format!("replica damaged: {}; {todo}", files.join("; ")))
            }
            Damage::Repaired { .. } => None,
        };
        self.shared.board.update(&path, |s| s.damage = shown);
    }

    fn on_task_end(&mut self, end: TaskEnd) {
        let what = match end.outcome {
            Ok(final_sync) => {
                if let Some(Err(e)) = &final_sync {
                    tracing::error!(tenant = %end.id, "final sync of {} failed: {e}", end.path.display());
                }
                return;
            }
            Err(what) => what,
        };
        // Still registered (not a task we stopped)? Restart it after a pause.
        let Some(entry) = self.registry.entries.get_mut(&end.path) else { return };
        let Kind::Active(r) = &entry.kind else { return };
        if r.stop.is_cancelled() {
            return;
        }
        let prefix = r.prefix.clone();
        entry.crashes += 1;
        let delay = (MIN_BACKOFF * 2u32.saturating_pow(entry.crashes)).min(MAX_BACKOFF);
        tracing::error!(tenant = %end.id, "replicator of {} crashed ({what}); restarting in {delay:?}", end.path.display());
        self.shared.board.update(&end.path, |s| {
            s.state = TenantState::Error;
            s.errors += 1;
            s.hot = false;
            s.last_error = Some(format!("replicator crashed: {what}; restarting in {}s", delay.as_secs()));
        });
        let reg = self.spawn(&end.path, end.id, prefix, delay, Duration::ZERO);
        self.registry.set(&end.path, Kind::Active(reg));
    }

    /// Stops the watcher and every task, giving each the final sync it needs, within
    /// `fleet.shutdown_timeout`.
    async fn shutdown(mut self) -> ShutdownReport {
        let timeout = self.config.fleet.shutdown_timeout;
        tracing::info!(tenants = self.tasks.len(), timeout = ?timeout, "shutting down: final sync of every tenant");
        self.watch_token.cancel();
        self.shared.shutdown.cancel();
        let mut report = ShutdownReport::default();
        let deadline = Instant::now() + timeout;
        while !self.tasks.is_empty() {
            match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                Ok(Some(end)) => match end.outcome {
                    Ok(final_sync) => {
                        report.stopped += 1;
                        match final_sync {
                            Some(Ok(_)) => report.final_syncs += 1,
                            Some(Err(e)) => {
                                tracing::error!(tenant = %end.id, "final sync of {} failed: {e}", end.path.display());
                                report.final_syncs += 1;
                                report.failed.push((end.id.to_string(), e));
                            }
                            None => {}
                        }
                    }
                    Err(what) => report
                        .failed
                        .push((end.id.to_string(), format!("{}: replicator crashed: {what}", end.path.display()))),
                },
                Ok(None) => break,
                Err(_) => {
                    report.timed_out = self.tasks.running();
                    self.tasks.abort_all();
                    break;
                }
            }
        }
        if let Some(w) = self.watcher.take().and_then(|w| Arc::try_unwrap(w).ok()) {
            w.join().await;
        }
        report
    }
}
