//! Restore jobs over the API (see [`crate::recovery::jobs`]): start one for a tenant,
//! list them, follow one, cancel one. Starting and cancelling change state, so they
//! need `[http] token` (the guard in `http/mod.rs` refuses them without one).
//!
//! | route | what |
//! |---|---|
//! | `POST /api/clients/{id}/restores` | start a job: 202 and the job, or the reason it cannot run |
//! | `GET /api/clients/{id}/restores` | that tenant's jobs, newest first |
//! | `GET /api/restores` | every job kept, newest first |
//! | `GET /api/restores/{job}` | one job |
//! | `DELETE /api/restores/{job}` | cancel it (its partial file is removed) |

use std::time::{Duration, Instant, SystemTime};

use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use super::State;
use super::view::{self, rfc3339};
use crate::recovery::Point;
use crate::recovery::jobs::{CancelError, Destination, JobView, Request, Restores, SubmitError};
use crate::restore::{IntegrityCheck, ProgressView};
use crate::tenant::TenantId;

/// How long `DELETE /api/restores/{job}` waits for the job to stop.
pub const CANCEL_WAIT: Duration = Duration::from_secs(5);

#[derive(Tags)]
enum Tag {
    /// Restores of a tenant into a copy or a new tenant.
    Restores,
}

/// The restore routes.
pub struct RestoreApi {
    pub(super) state: State,
}

/// Where a restore goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RestoreTarget {
    /// A new file in `[restore] dir`, named `<id>-txid-<TXID>.db` or `<id>-at-<time>.db`.
    Copy,
    /// A new tenant: `<new GUID>.db` in a watch directory, registered and replicated by
    /// the daemon like any other.
    Fork,
}

/// The check run on the output before it takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum IntegrityLevel {
    /// `PRAGMA integrity_check` (the default).
    Full,
    /// `PRAGMA quick_check`.
    Quick,
    /// No SQLite check (the LTX checksums are always verified).
    None,
}

/// A restore request. With neither `txid` nor `timestamp`, the newest state (pinned to
/// the newest TXID when the job is accepted).
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase", deny_unknown_fields)]
pub struct RestoreRequest {
    /// The state right after this TXID (decimal, like `txid` elsewhere in the API).
    pub txid: Option<u64>,
    /// The state as of this time (RFC 3339): the newest commit strictly before it.
    pub timestamp: Option<String>,
    /// `copy` (default) or `fork`.
    pub target: Option<RestoreTarget>,
    /// For `fork`: one of the daemon's watch directories (default: the tenant's own).
    pub watch_dir: Option<String>,
    /// `full` (default), `quick` or `none`.
    pub integrity_check: Option<IntegrityLevel>,
}

/// A job's progress.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct RestoreProgress {
    /// `planning`, `restoring`, `verifying` or `done`.
    pub phase: String,
    /// LTX files of the plan applied / in the plan.
    pub files_done: u64,
    pub files_total: u64,
    /// Bytes downloaded / the plan's bytes.
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Distinct pages of the output written / its size in pages (0 until known).
    pub pages_done: u64,
    pub pages_total: u64,
}

impl From<ProgressView> for RestoreProgress {
    fn from(p: ProgressView) -> Self {
        RestoreProgress {
            phase: p.phase.as_str().to_owned(),
            files_done: p.files_done,
            files_total: p.files_total,
            bytes_done: p.bytes_done,
            bytes_total: p.bytes_total,
            pages_done: p.pages_done,
            pages_total: p.pages_total,
        }
    }
}

/// A restore job.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct RestoreJob {
    /// The job's id.
    pub id: String,
    /// The tenant restored.
    pub tenant: String,
    /// Its replica's storage prefix.
    pub prefix: String,
    /// Its replica's URL.
    pub replica_url: String,
    /// The point: `latest`, `TXID <16 hex>` or an RFC 3339 time (`latest` requests show
    /// the TXID they were pinned to).
    pub point: String,
    /// `copy` or `fork`.
    pub target: String,
    /// The output database file.
    pub output: String,
    /// For a fork: the new tenant's id (`/api/clients/{forkId}` once registered).
    pub fork_id: Option<String>,
    /// The SQLite check asked for: `full`, `quick` or `none`.
    pub integrity_check: String,
    /// `queued`, `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub progress: RestoreProgress,
    /// The TXID restored (decimal; known when accepted for a TXID or `latest`).
    pub txid: Option<u64>,
    /// When the restored state was committed (RFC 3339 with milliseconds).
    pub restored_at: Option<String>,
    /// The output's size in bytes (when done).
    pub size: Option<u64>,
    /// The output's SHA-256 in hex (when done).
    pub sha256: Option<String>,
    /// The SQLite check's result, `ok` (when done and one was asked).
    pub integrity: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

fn millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl From<JobView> for RestoreJob {
    fn from(v: JobView) -> Self {
        RestoreJob {
            id: v.id,
            tenant: v.tenant,
            prefix: v.prefix,
            replica_url: v.replica_url,
            point: v.point.describe(),
            target: v.destination.to_owned(),
            output: v.output.display().to_string(),
            fork_id: v.fork_id,
            integrity_check: v.integrity_check.as_str().to_owned(),
            state: v.state.as_str().to_owned(),
            created_at: rfc3339(v.created_at),
            started_at: v.started_at.map(rfc3339),
            finished_at: v.finished_at.map(rfc3339),
            progress: v.progress.into(),
            txid: v.txid,
            restored_at: v.restored_at.map(millis),
            size: v.size,
            sha256: v.sha256,
            integrity: v.integrity,
            error: v.error,
        }
    }
}

#[derive(ApiResponse)]
enum StartResponse {
    /// Accepted: the job is queued (follow it on `/api/restores/{id}` or `/api/events`).
    #[oai(status = 202)]
    Accepted(Json<Box<RestoreJob>>),
    /// The body or the id is malformed, or `watchDir` is not a watch directory.
    #[oai(status = 400)]
    BadRequest(PlainText<String>),
    /// No such tenant (neither registered nor in storage).
    #[oai(status = 404)]
    NotFound(PlainText<String>),
    /// The daemon cannot write it: no `[restore] dir`, a destination directory missing
    /// or not writable, the output exists or a job in progress writes it, or the id
    /// names several replicas.
    #[oai(status = 409)]
    Conflict(PlainText<String>),
    /// The point is outside the tenant's restore window (the message says the window),
    /// or the replica restores to nothing.
    #[oai(status = 422)]
    Unprocessable(PlainText<String>),
    /// Too many jobs are waiting.
    #[oai(status = 429)]
    TooMany(PlainText<String>),
    /// Storage did not answer, the daemon is stopping, or this server runs no jobs.
    #[oai(status = 503)]
    Unavailable(PlainText<String>),
}

#[derive(ApiResponse)]
enum JobResponse {
    /// The job.
    #[oai(status = 200)]
    Ok(Json<Box<RestoreJob>>),
    /// No such job (jobs live in memory: a restarted daemon has none).
    #[oai(status = 404)]
    NotFound(PlainText<String>),
    /// The job has already finished (for `DELETE`).
    #[oai(status = 409)]
    Conflict(PlainText<String>),
    /// This server runs no restore jobs.
    #[oai(status = 503)]
    Unavailable(PlainText<String>),
}

#[derive(ApiResponse)]
enum ListResponse {
    /// The jobs, newest first.
    #[oai(status = 200)]
    Ok(Json<Vec<RestoreJob>>),
    /// The id is malformed.
    #[oai(status = 400)]
    BadRequest(PlainText<String>),
    /// This server runs no restore jobs.
    #[oai(status = 503)]
    Unavailable(PlainText<String>),
}

/// Why a server has no jobs (a router built without the daemon's).
const NO_JOBS: &str = "this server runs no restore jobs (they run in `litefleet daemon`)";

/// The point a request asks for, or why the body is wrong.
fn point_of(req: &RestoreRequest) -> Result<Point, String> {
    match (req.txid, req.timestamp.as_deref()) {
        (Some(_), Some(_)) => Err("give txid or timestamp, not both".to_owned()),
        (Some(0), None) => Err("txid 0 is before the first transaction (TXIDs start at 1)".to_owned()),
        (Some(t), None) => Ok(Point::Txid(t)),
        (None, Some(s)) => humantime::parse_rfc3339_weak(s)
            .map(Point::Time)
            .map_err(|e| format!("timestamp {s:?} is not an RFC 3339 time like 2026-01-02T15:04:05Z ({e})")),
        (None, None) => Ok(Point::Latest),
    }
}

impl RestoreApi {
    fn jobs(&self) -> Option<&Restores> {
        self.state.restores.as_ref()
    }
}

#[OpenApi(tag = "Tag::Restores")]
impl RestoreApi {
    /// Starts a restore of tenant `id`: to a point (`txid`, `timestamp`, or the newest
    /// state) into a copy in `[restore] dir` or a fork (a new tenant in a watch
    /// directory). Needs `[http] token`. The job is checked (tenant, window, directory)
    /// before it is accepted and runs in the background; its output appears complete or
    /// not at all.
    #[oai(path = "/clients/:id/restores", method = "post", operation_id = "startRestore")]
    async fn start(&self, id: Path<String>, body: Json<RestoreRequest>) -> StartResponse {
        let Some(jobs) = self.jobs() else { return StartResponse::Unavailable(PlainText(NO_JOBS.to_owned())) };
        let Some(id) = view::parse_id(&id.0).and_then(|i| TenantId::from_stem(&i).ok()) else {
            return StartResponse::BadRequest(PlainText(view::MALFORMED_ID.to_owned()));
        };
        let point = match point_of(&body.0) {
            Ok(p) => p,
            Err(e) => return StartResponse::BadRequest(PlainText(e)),
        };
        let destination = match (body.0.target.unwrap_or(RestoreTarget::Copy), body.0.watch_dir) {
            (RestoreTarget::Copy, Some(_)) => {
                return StartResponse::BadRequest(PlainText("watchDir is for target \"fork\" only".to_owned()));
            }
            (RestoreTarget::Copy, None) => Destination::Copy,
            (RestoreTarget::Fork, dir) => Destination::Fork { watch_dir: dir.map(Into::into) },
        };
        let integrity = match body.0.integrity_check.unwrap_or(IntegrityLevel::Full) {
            IntegrityLevel::Full => IntegrityCheck::Full,
            IntegrityLevel::Quick => IntegrityCheck::Quick,
            IntegrityLevel::None => IntegrityCheck::None,
        };
        match jobs.submit(&id, Request { point, destination, integrity }).await {
            Ok(v) => StartResponse::Accepted(Json(Box::new(v.into()))),
            Err(e) => {
                let text = PlainText(crate::errors::chain(&e));
                match e {
                    SubmitError::UnknownTenant { .. } => StartResponse::NotFound(text),
                    SubmitError::NotAWatchDir { .. } => StartResponse::BadRequest(text),
                    SubmitError::Ambiguous { .. }
                    | SubmitError::NoCopyDir
                    | SubmitError::Directory { .. }
                    | SubmitError::OutputExists(_)
                    | SubmitError::SameOutput { .. } => StartResponse::Conflict(text),
                    SubmitError::NotRestorable { .. } | SubmitError::OutsideWindow { .. } => {
                        StartResponse::Unprocessable(text)
                    }
                    SubmitError::QueueFull(_) => StartResponse::TooMany(text),
                    SubmitError::Storage { .. } | SubmitError::Stopping => StartResponse::Unavailable(text),
                }
            }
        }
    }

    /// Tenant `id`'s restore jobs, newest first.
    #[oai(path = "/clients/:id/restores", method = "get", operation_id = "tenantRestores")]
    async fn tenant_jobs(&self, id: Path<String>) -> ListResponse {
        let Some(jobs) = self.jobs() else { return ListResponse::Unavailable(PlainText(NO_JOBS.to_owned())) };
        let Some(id) = view::parse_id(&id.0) else {
            return ListResponse::BadRequest(PlainText(view::MALFORMED_ID.to_owned()));
        };
        ListResponse::Ok(Json(jobs.list(Some(&id)).into_iter().map(Into::into).collect()))
    }

    /// Every restore job the daemon keeps (running, queued, and the last 200 finished),
    /// newest first; `tenant` keeps one tenant's.
    #[oai(path = "/restores", method = "get", operation_id = "restores")]
    async fn list(&self, tenant: Query<Option<String>>) -> ListResponse {
        let Some(jobs) = self.jobs() else { return ListResponse::Unavailable(PlainText(NO_JOBS.to_owned())) };
        ListResponse::Ok(Json(jobs.list(tenant.0.as_deref()).into_iter().map(Into::into).collect()))
    }

    /// One restore job.
    #[oai(path = "/restores/:job", method = "get", operation_id = "restore")]
    async fn get(&self, job: Path<String>) -> JobResponse {
        let Some(jobs) = self.jobs() else { return JobResponse::Unavailable(PlainText(NO_JOBS.to_owned())) };
        match jobs.get(&job.0) {
            Some(v) => JobResponse::Ok(Json(Box::new(v.into()))),
            None => JobResponse::NotFound(PlainText(format!("no restore job {}", job.0))),
        }
    }

    /// Cancels a queued or running restore job and waits (up to 5 s) until it has
    /// stopped and removed its partial file. Needs `[http] token`.
    #[oai(path = "/restores/:job", method = "delete", operation_id = "cancelRestore")]
    async fn cancel(&self, job: Path<String>) -> JobResponse {
        let Some(jobs) = self.jobs() else { return JobResponse::Unavailable(PlainText(NO_JOBS.to_owned())) };
        match jobs.cancel(&job.0) {
            Err(e @ CancelError::Unknown(_)) => JobResponse::NotFound(PlainText(e.to_string())),
            Err(e @ CancelError::Finished { .. }) => JobResponse::Conflict(PlainText(e.to_string())),
            Ok(mut v) => {
                let started = Instant::now();
                while !v.state.is_finished() && started.elapsed() < CANCEL_WAIT {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    v = jobs.get(&job.0).unwrap_or(v);
                }
                JobResponse::Ok(Json(Box::new(v.into())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(txid: Option<u64>, ts: Option<&str>) -> RestoreRequest {
        RestoreRequest { txid, timestamp: ts.map(str::to_owned), target: None, watch_dir: None, integrity_check: None }
    }

    #[test]
    fn a_request_names_one_point_or_none() {
        assert_eq!(point_of(&req(None, None)), Ok(Point::Latest));
        assert_eq!(point_of(&req(Some(42), None)), Ok(Point::Txid(42)));
        assert!(point_of(&req(Some(1), Some("2026-01-02T00:00:00Z"))).unwrap_err().contains("not both"));
        assert!(point_of(&req(Some(0), None)).unwrap_err().contains("TXIDs start at 1"));
        assert!(point_of(&req(None, Some("yesterday"))).unwrap_err().contains("not an RFC 3339 time"));
        assert!(matches!(point_of(&req(None, Some("2026-01-02T15:04:05.5Z"))), Ok(Point::Time(_))));
    }
}
