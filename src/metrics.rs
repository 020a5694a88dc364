//! Prometheus metrics: the names, the helpers the fleet calls after each sync, and the
//! fleet gauges computed from the status board at scrape time.
//!
//! Everything goes through the global `metrics` recorder that [`install`] sets up once,
//! which opendal's `MetricsLayer` (see `storage`) shares, so storage operations appear
//! in the same `/metrics` page. Fleet totals (tenants by state, skipped files, readiness)
//! are not maintained by the fleet: [`record_board`] reads them from the
//! [`Board`](crate::status::Board) just before each render, so they are always right.
//!
//! Per-tenant labels multiply series by the number of tenants, so they are added only
//! when `[http] per_tenant_metrics` is on ([`set_per_tenant`]). This module never holds
//! tenant state of its own and never blocks: every helper is a few atomic operations.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::status::{Board, TenantState};

/// Successful syncs (counter; `tenant` label when per-tenant metrics are on).
pub const SYNCS: &str = "litefleet_syncs_total";
/// Failed syncs (counter).
pub const SYNC_ERRORS: &str = "litefleet_sync_errors_total";
/// LTX files uploaded (counter).
pub const FILES_SHIPPED: &str = "litefleet_files_shipped_total";
/// Bytes of LTX files uploaded (counter).
pub const BYTES_SHIPPED: &str = "litefleet_bytes_shipped_total";
/// Snapshot (full-page) L0 files among the uploads (counter).
pub const SNAPSHOTS_SHIPPED: &str = "litefleet_snapshots_shipped_total";
/// How long a successful sync took (histogram, seconds).
pub const SYNC_DURATION: &str = "litefleet_sync_duration_seconds";
/// Replication lag observed when a sync starts: how long the oldest unshipped change
/// had waited (histogram, seconds).
pub const LAG: &str = "litefleet_replication_lag_seconds";
/// Registered tenants by `state` (gauge, from the board at scrape time).
pub const TENANTS: &str = "litefleet_tenants";
/// Database files skipped (gauge, from the board).
pub const SKIPPED: &str = "litefleet_skipped_files";
/// Tenants holding an open SQLite connection (gauge, from the board).
pub const HOT: &str = "litefleet_hot_tenants";
/// Tenants holding a timer: a sync due or a hot connection's idle deadline (gauge, from
/// the board). 0 means no tenant does anything until one of its files changes.
pub const SCHEDULED: &str = "litefleet_scheduled_tenants";
/// 1 when the initial scan is done (gauge, from the board).
pub const READY: &str = "litefleet_ready";
/// Seconds since the daemon started (gauge, from the board).
pub const UPTIME: &str = "litefleet_uptime_seconds";
/// Restore validations by `result` (`passed`, `failed`, `skipped`) (counter; `tenant`
/// label when per-tenant metrics are on).
pub const VALIDATIONS: &str = "litefleet_validations_total";
/// Dashboard/API requests refused for a missing or wrong token (counter).
pub const HTTP_UNAUTHORIZED: &str = "litefleet_http_unauthorized_total";
/// Restore jobs of the daemon by `result` (`done`, `failed`, `cancelled`) (counter).
pub const RESTORE_JOBS: &str = "litefleet_restore_jobs_total";
/// Bytes downloaded by restore jobs that finished (counter).
pub const RESTORE_BYTES: &str = "litefleet_restore_bytes_total";

/// Buckets of [`SYNC_DURATION`] (and opendal's `*_seconds` histograms).
const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// Buckets of [`LAG`]: from "shipped on the next tick" to "storage down for an hour".
const LAG_BUCKETS: &[f64] = &[0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static PER_TENANT: AtomicBool = AtomicBool::new(false);

/// Installs the global Prometheus recorder (once; later calls return the same handle)
/// and describes litefleet's metrics. If some other recorder was installed first, the
/// handle still renders litefleet's fleet gauges but nothing recorded elsewhere.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LAG.to_owned()), LAG_BUCKETS)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), DURATION_BUCKETS));
            let builder = match builder {
                Ok(b) => b,
                // Only an empty bucket list fails, and ours are constants.
                Err(e) => {
                    tracing::warn!("metrics: {e}; histograms render as summaries");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if let Err(e) = metrics::set_global_recorder(recorder) {
                tracing::warn!("metrics: another recorder is installed ({e}); /metrics shows fleet gauges only");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(SYNCS, "Successful syncs (WAL read, LTX files uploaded).");
    describe_counter!(SYNC_ERRORS, "Failed syncs (retried with backoff).");
    describe_counter!(FILES_SHIPPED, "LTX files uploaded.");
    describe_counter!(VALIDATIONS, "Restore validations by result (passed, failed, skipped).");
    describe_counter!(BYTES_SHIPPED, Unit::Bytes, "Bytes of LTX files uploaded.");
    describe_counter!(SNAPSHOTS_SHIPPED, "Full-page snapshot files among the uploads.");
    describe_histogram!(SYNC_DURATION, Unit::Seconds, "Duration of successful syncs.");
    describe_histogram!(LAG, Unit::Seconds, "How long the oldest unshipped change had waited when a sync started.");
    describe_gauge!(TENANTS, "Registered tenant databases by state.");
    describe_gauge!(SKIPPED, "Database files not replicated (name or location refused).");
    describe_gauge!(HOT, "Tenants holding an open SQLite connection.");
    describe_gauge!(SCHEDULED, "Tenants holding a timer (a sync due or an idle deadline); 0 when every tenant rests.");
    describe_gauge!(READY, "1 once the initial scan of the watch directories is done.");
    describe_gauge!(UPTIME, Unit::Seconds, "Seconds since the daemon started.");
    describe_counter!(HTTP_UNAUTHORIZED, "Dashboard and API requests refused for a missing or wrong token.");
    describe_counter!(RESTORE_JOBS, "Restore jobs of the daemon by result (done, failed, cancelled).");
    describe_counter!(RESTORE_BYTES, Unit::Bytes, "Bytes downloaded by the daemon's restore jobs.");
}

/// Turns per-tenant labels on or off (from `[http] per_tenant_metrics`). Call once at
/// startup, before the first sync.
pub fn set_per_tenant(on: bool) {
    PER_TENANT.store(on, Ordering::Relaxed);
}

/// Whether per-tenant labels are on.
pub fn per_tenant() -> bool {
    PER_TENANT.load(Ordering::Relaxed)
}

/// Labels of a per-tenant series: the tenant id when per-tenant metrics are on, else none.
fn labels(tenant: &str) -> Vec<(&'static str, String)> {
    if per_tenant() { vec![("tenant", tenant.to_owned())] } else { Vec::new() }
}

/// A sync of `tenant` succeeded: it uploaded `files` LTX files (`snapshots` of them full
/// snapshots) totalling `bytes`, in `took`.
pub fn sync_ok(tenant: &str, files: u64, bytes: u64, snapshots: u64, took: Duration) {
    let l = labels(tenant);
    counter!(SYNCS, &l).increment(1);
    counter!(FILES_SHIPPED, &l).increment(files);
    counter!(BYTES_SHIPPED, &l).increment(bytes);
    counter!(SNAPSHOTS_SHIPPED, &l).increment(snapshots);
    histogram!(SYNC_DURATION, &l).record(took.as_secs_f64());
}

/// A sync of `tenant` failed (its error is on the board).
pub fn sync_failed(tenant: &str) {
    counter!(SYNC_ERRORS, &labels(tenant)).increment(1);
}

/// The oldest unshipped change of `tenant` had waited `lag` when its sync started.
pub fn lag(tenant: &str, lag: Duration) {
    histogram!(LAG, &labels(tenant)).record(lag.as_secs_f64());
}

/// A restore validation of `tenant` ended with `outcome`.
pub fn validation(tenant: &str, outcome: crate::status::Outcome) {
    let mut l = labels(tenant);
    l.push(("result", outcome.as_str().to_owned()));
    counter!(VALIDATIONS, &l).increment(1);
}

/// A dashboard or API request was refused for its token.
pub fn unauthorized() {
    counter!(HTTP_UNAUTHORIZED).increment(1);
}

/// A restore job of the daemon ended with `result` (`done`, `failed`, `cancelled`)
/// after downloading `bytes`.
pub fn restore_job(result: &'static str, bytes: u64) {
    counter!(RESTORE_JOBS, "result" => result).increment(1);
    counter!(RESTORE_BYTES).increment(bytes);
}

/// Sets the fleet gauges from the board: call just before rendering.
pub fn record_board(board: &Board) {
    let c = board.counts();
    for s in TenantState::ALL {
        let n = match s {
            TenantState::Starting => c.starting,
            TenantState::Active => c.active,
            TenantState::Lagging => c.lagging,
            TenantState::Error => c.error,
            TenantState::Conflict => c.conflict,
            TenantState::Held => c.held,
            TenantState::Fenced => c.fenced,
        };
        gauge!(TENANTS, "state" => s.as_str()).set(n as f64);
    }
    gauge!(SKIPPED).set(c.skipped as f64);
    gauge!(HOT).set(c.hot as f64);
    gauge!(SCHEDULED).set(board.scheduled() as f64);
    gauge!(READY).set(if board.is_ready() { 1.0 } else { 0.0 });
    let up = SystemTime::now().duration_since(board.info().started_at).unwrap_or_default();
    gauge!(UPTIME).set(up.as_secs_f64());
}

/// The `/metrics` page: fleet gauges from `board`, then everything recorded.
pub fn render(handle: &PrometheusHandle, board: &Board) -> String {
    record_board(board);
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{FleetInfo, TenantStatus};
    use crate::tenant::{Prefix, TenantId};
    use std::path::{Path, PathBuf};

    fn tenant(id: &str) -> TenantStatus {
        let (id, prefix) = (TenantId::from_stem(id).unwrap(), Prefix::parse(&format!("databases/{id}")).unwrap());
        TenantStatus::new(&id, Path::new(&format!("/d/{id}.db")), Path::new("/d"), &prefix, &format!("file:///r/{id}"))
    }

    fn board() -> Board {
        Board::new(FleetInfo {
            storage_url: "file:///r".into(),
            bucket: "/r".into(),
            root: "databases".into(),
            watch_dirs: vec![PathBuf::from("/d")],
            started_at: SystemTime::now() - Duration::from_secs(90),
            lag_threshold: Duration::from_secs(10),
            version: "test".into(),
            encryption: None,
        })
    }

    /// Value of the first sample line of `name` whose labels contain `labels`.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']) && l.contains(labels))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    // One test: the recorder and the per-tenant switch are process-wide.
    #[test]
    fn fleet_gauges_come_from_the_board_and_per_tenant_labels_follow_the_switch() {
        let handle = install();
        let b = board();
        let mut t = tenant("a");
        t.state = TenantState::Error;
        b.upsert(t);
        b.upsert(tenant("b"));
        b.skip(Path::new("/d/x.db"), "not a GUID");
        b.set_ready(true);

        set_per_tenant(false);
        sync_ok("a", 3, 1000, 1, Duration::from_millis(20));
        sync_failed("a");
        lag("a", Duration::from_secs(2));
        let text = render(&handle, &b);
        assert_eq!(sample(&text, TENANTS, "state=\"error\""), Some(1.0), "{text}");
        assert_eq!(sample(&text, TENANTS, "state=\"starting\""), Some(1.0), "{text}");
        assert_eq!(sample(&text, TENANTS, "state=\"active\""), Some(0.0), "{text}");
        assert_eq!(sample(&text, SKIPPED, ""), Some(1.0), "{text}");
        assert_eq!(sample(&text, READY, ""), Some(1.0), "{text}");
        assert!(sample(&text, UPTIME, "").is_some_and(|v| v >= 90.0), "{text}");
        assert!(sample(&text, BYTES_SHIPPED, "").is_some_and(|v| v >= 1000.0), "{text}");
        assert!(text.contains("litefleet_replication_lag_seconds_bucket{le=\"2\"}"), "lag is a histogram: {text}");
        assert!(text.contains("litefleet_sync_duration_seconds_bucket"), "{text}");
        assert!(!text.contains("tenant=\"a\""), "no tenant labels unless enabled: {text}");
        assert!(install().render().contains(BYTES_SHIPPED), "install again: same registry");

        set_per_tenant(true);
        sync_ok("a", 1, 10, 0, Duration::from_millis(5));
        let text = render(&handle, &b);
        set_per_tenant(false);
        assert_eq!(sample(&text, SYNCS, "tenant=\"a\""), Some(1.0), "{text}");
    }
}
