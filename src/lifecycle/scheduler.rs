//! The lifecycle's scheduler: which replica gets a pass when, for a whole fleet, with
//! no timer for a replica that has nothing to do.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use super::{Policy, maintain, next_due};
use crate::ltx;
use crate::storage::catalog::Catalog;
use crate::storage::{self, FileInfo};

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
    tx: tokio::sync::mpsc::UnboundedSender<(String, Vec<(FileInfo, bool)>)>,
}

/// What the lifecycle tells the fleet about a replica's health (see `repair`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Files of the replica under `prefix` are unusable (named, with why). `snapshot`:
    /// the restore window is broken and no full-page file exists above the break, so the
    /// tenant replicating there should ship one.
    Found { prefix: String, files: Vec<String>, snapshot: bool },
    /// A repair snapshot made the replica restorable to its newest TXID again.
    Repaired { prefix: String, snapshot: String },
}

impl Scheduler {
    /// Starts the scheduler for replicas below `root` of `storage`. It stops when
    /// `shutdown` is cancelled (a pass in flight is abandoned; every step of a pass is
    /// safe to abandon). Damage found and repaired is sent to `damage`.
    pub fn start(
        storage: storage::Storage,
        root: String,
        policy: Policy,
        concurrency: usize,
        shutdown: tokio_util::sync::CancellationToken,
        damage: tokio::sync::mpsc::UnboundedSender<Damage>,
    ) -> (Scheduler, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run_scheduler(storage, root, policy, concurrency.max(1), shutdown, rx, damage));
        (Scheduler { tx }, task)
    }

    /// Reports L0 files a replicator uploaded under `prefix` (relative to the storage);
    /// `full_pages` are the TXIDs of those that hold every page.
    pub fn shipped(&self, prefix: &str, files: Vec<FileInfo>, full_pages: &[ltx::TxId]) {
        if !files.is_empty() {
            let files = files.into_iter().map(|f| (f.clone(), full_pages.contains(&f.max_txid))).collect();
            let _ = self.tx.send((prefix.trim_matches('/').to_owned(), files));
        }
    }
}

/// Records a file one of our replicators shipped.
fn add_shipped(cat: &mut Catalog, (f, full_page): (FileInfo, bool)) {
    if full_page { cat.add_full_page(f) } else { cat.add_verified(f) }
}

#[derive(Default)]
struct Life {
    cat: Option<Catalog>,
    /// Files reported while the catalog was away (listing not done, or a pass running).
    extra: Vec<(FileInfo, bool)>,
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
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<(FileInfo, bool)>)>,
    damage: tokio::sync::mpsc::UnboundedSender<Damage>,
) {
    let mut lives: HashMap<String, Life> = HashMap::new();
    let mut queue: BTreeSet<(SystemTime, String)> = BTreeSet::new();
    let mut passes = tokio::task::JoinSet::new();
    let mut listed = false;
    let list = |storage: &storage::Storage, root: &String| {
        let (s, r) = (storage.clone(), root.clone());
        tokio::spawn(async move {
            let (tree, temps) = s.list_tree_and_temps(&r).await?;
            if !temps.is_empty() {
                let removed = s.remove_temps(&temps).await;
                tracing::info!("lifecycle: removed {removed} temporary file(s) a crash left in {}", s.location());
            }
            Ok::<_, storage::Error>(tree)
        })
    };
    let mut listing = Some(list(&storage, &root));
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
                            for f in life.extra.drain(..) { add_shipped(&mut cat, f); }
                            // Damage seen in the listing (torn files) gets a pass now:
                            // reported once, and repaired where it can be.
                            let damaged = cat.damaged().next().is_some();
                            let at = if damaged { Some(now) } else { next_due(&cat, &policy, now) };
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
                listing = Some(list(&storage, &root));
            }
            msg = rx.recv() => {
                let Some((prefix, files)) = msg else { return };
                let life = lives.entry(prefix.clone()).or_default();
                match (&mut life.cat, life.running, listed) {
                    (Some(cat), false, _) => {
                        for f in files { add_shipped(cat, f); }
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
                        None => match Catalog::load_sweeping(&replica).await {
                            Ok(c) => c,
                            Err(e) => return (prefix, None, Err(e.into())),
                        },
                    };
                    for f in extra { add_shipped(&mut cat, f); }
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
                        for f in life.extra.drain(..) { add_shipped(&mut cat, f); }
                        let replica = storage.replica(&prefix);
                        if !outcome.damaged.is_empty() || outcome.needs_snapshot {
                            let files = outcome.damaged.iter().map(|(f, why)| format!("{}: {why}", replica.describe_file(f))).collect();
                            let _ = damage.send(Damage::Found { prefix: prefix.clone(), files, snapshot: outcome.needs_snapshot });
                        }
                        if let Some(snap) = &outcome.repaired {
                            let _ = damage.send(Damage::Repaired { prefix: prefix.clone(), snapshot: replica.describe_file(snap) });
                        }
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
