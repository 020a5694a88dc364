//! Restore validation in the fleet (`[validation]`): every `interval`, the `tenants`
//! replicating tenants validated longest ago are asked to prove that their replica
//! restores to what their live database holds (`restore::validate`).
//!
//! A tenant task pins a TXID — sync, open a read transaction, sync again: when the
//! second sync ships nothing, the read transaction sees exactly the state at the
//! replica's newest TXID — hashes the live pages, then hands the slow part (restore and
//! compare) to a task of its own, so replication goes on meanwhile.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::registry::{Kind, Supervisor};
use super::tenant_task::{Asks, TenantTask};
use crate::config::ValidationConfig;
use crate::errors::chain;
use crate::restore::validate::{self, Image};
use crate::status::{Outcome, Validation};
use crate::tenant::TenantId;

/// Sync / open a read transaction / sync rounds a validation tries before giving up on
/// a tenant that keeps committing.
const PIN_ATTEMPTS: usize = 5;

/// What tenant tasks need to validate their replica.
pub(super) struct Validator {
    /// Where restored copies are written (and removed).
    temp_dir: PathBuf,
    /// Restores running at once (`[validation] concurrency`).
    slots: Arc<Semaphore>,
}

impl Validator {
    pub(super) fn new(c: &ValidationConfig) -> Validator {
        Validator {
            temp_dir: c.temp_dir.clone().unwrap_or_else(std::env::temp_dir),
            slots: Arc::new(Semaphore::new(c.concurrency.max(1))),
        }
    }
}

impl Supervisor {
    /// Asks the `[validation] tenants` replicating tenants validated longest ago (never
    /// first) to validate their replica.
    pub(super) fn request_validations(&mut self) {
        self.round += 1;
        let round = self.round;
        let mut due: Vec<_> = self.registry.active().collect();
        let n = self.config.validation.tenants.min(due.len());
        if n == 0 {
            return;
        }
        due.select_nth_unstable_by(n - 1, |a, b| a.1.validated.cmp(&b.1.validated).then_with(|| a.0.cmp(b.0)));
        for (_, entry) in &mut due[..n] {
            if let Kind::Active(r) = &entry.kind {
                r.asks.ask(Asks::VALIDATE);
            }
            entry.validated = round;
        }
        tracing::debug!(round, tenants = n, "validation round");
    }
}

impl TenantTask {
    /// Restore validation: pins the live database at the replica's newest TXID, then
    /// restores and compares off this task so replication goes on.
    pub(super) async fn validate(&mut self, stop: &CancellationToken) {
        let Some(v) = &self.shared.validation else { return };
        let slots = v.slots.clone();
        if !self.path.exists() || !self.take_slot(Some(stop)).await {
            return;
        }
        let pinned = self.pin().await;
        if self.backoff.is_zero() {
            self.after_sync().await;
        }
        let image = match pinned {
            Ok(image) => image,
            Err(why) => return record(&self.shared, &self.path, &self.id, Validation::skipped(why)),
        };
        let (shared, path, id) = (self.shared.clone(), self.path.clone(), self.id.clone());
        let replica = self.replicator().replica().clone();
        tokio::spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let Some(temp_dir) = shared.validation.as_ref().map(|v| v.temp_dir.clone()) else { return };
            let result = tokio::select! {
                r = validate::check(&replica, &image, &temp_dir) => r,
                _ = shared.shutdown.cancelled() => return,
            };
            let v = result.unwrap_or_else(|e| {
                let e = chain(&e);
                tracing::error!(tenant = %id, "restore validation could not run: {e}");
                Validation { txid: Some(image.txid), ..Validation::skipped(e) }
            });
            record(&shared, &path, &id, v);
        });
    }

    /// Syncs, opens a read transaction, syncs again: when the second sync ships nothing,
    /// the read transaction sees exactly the state at the replica's newest TXID.
    async fn pin(&mut self) -> Result<Image, String> {
        let busy = self.shared.settings.busy_timeout;
        let joined = |e: tokio::task::JoinError| e.to_string();
        for _ in 0..PIN_ATTEMPTS {
            self.sync_once().await.map_err(|e| format!("sync failed: {e}"))?;
            let path = self.path.clone();
            let snap = tokio::task::spawn_blocking(move || validate::Snapshot::open(&path, busy))
                .await
                .map_err(joined)?
                .map_err(|e| chain(&e))?;
            match self.sync_once().await {
                Ok(rep) if rep.uploaded == 0 => {
                    let Some(txid) = self.r.as_ref().and_then(|r| r.remote_txid()).filter(|t| *t > 0) else {
                        return Err("nothing to validate: the database is empty".into());
                    };
                    return tokio::task::spawn_blocking(move || snap.read(txid))
                        .await
                        .map_err(joined)?
                        .map_err(|e| chain(&e));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("sync failed: {e}")),
            }
        }
        Err(format!("the database kept changing through {PIN_ATTEMPTS} attempts to pin a TXID"))
    }
}

/// Records a validation's outcome: board, metric, log (a failure loudly).
fn record(shared: &Shared, path: &Path, id: &TenantId, v: Validation) {
    crate::metrics::validation(id.as_str(), v.outcome);
    match v.outcome {
        Outcome::Passed => tracing::info!(tenant = %id, took = ?v.took, "🔍 validation passed: {}", v.detail),
        Outcome::Failed => tracing::error!(tenant = %id, "❌ validation FAILED for {}: {}", path.display(), v.detail),
        Outcome::Skipped => tracing::info!(tenant = %id, "🔍 validation skipped: {}", v.detail),
    }
    shared.board.update(path, |s| s.validation = Some(v));
}
