//! The JSON API under `/api`, described by an OpenAPI document generated from this code
//! (poem-openapi): the seed's `/api/status`, paged and filtered `/api/clients`, one
//! tenant with its replica, skipped files, and live events (Server-Sent Events).
//!
//! Handlers only read the board (and, for one tenant, list its replica); they never
//! change anything (restore jobs are `restores`'). The event stream carries the board's
//! changes and restore jobs' progress, and ends when the daemon shuts down, so graceful
//! shutdown never waits for a connected dashboard.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, stream};
use poem::web::sse::Event;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::{EventStream, Json, PlainText};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use super::State;
use super::restores::RestoreJob;
use super::view::{self, Client, ClientDetail, ClientPage, FleetCounts, SeedStatus, SkippedFile, StatusFilter};
use crate::recovery::jobs::JobView;
use crate::status::{Board, Change};

/// Keep-alive comments on an idle event stream (proxies drop silent connections).
pub const SSE_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Summary events are sent at most this often (a busy fleet changes thousands of times a
/// second; a dashboard needs a nudge, not every change).
pub const SUMMARY_EVERY: Duration = Duration::from_millis(250);

#[derive(Tags)]
enum Tag {
    /// The fleet and its tenants.
    Fleet,
    /// Live updates.
    Events,
}

/// The `/api` endpoints.
pub struct Api {
    pub(super) state: State,
}

#[derive(ApiResponse)]
enum DetailResponse {
    /// The tenant, its replica's files and how to restore it.
    #[oai(status = 200)]
    Ok(Json<Box<ClientDetail>>),
    /// The id is not a GUID or a plain file stem.
    #[oai(status = 400)]
    BadRequest(PlainText<String>),
    /// No registered database has this id.
    #[oai(status = 404)]
    NotFound(PlainText<String>),
}

/// The modes of `/api/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum EventMode {
    /// Every change (`tenant`, `removed`, `skipped`, `unskipped`, `fleet`, `resync`)
    /// plus `summary` events.
    All,
    /// Only `summary` events, at most 4 a second: what a dashboard needs.
    Summary,
    /// A `summary` first, then only `restore` events: what a restore page needs.
    Restores,
}

/// One Server-Sent Event; its SSE event type is `kind`.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct LiveEvent {
    /// `summary` (counts, sent first and then at most every 250 ms after changes),
    /// `tenant` (registered or changed), `removed`, `skipped`, `unskipped`, `fleet`
    /// (readiness or watch directories changed), `restore` (a restore job changed or
    /// progressed, at most every 250 ms per job), `resync` (changes were missed: re-read).
    pub kind: String,
    /// For `tenant`: the tenant now.
    pub client: Option<Client>,
    /// For `removed`, `skipped`, `unskipped`: the database file.
    pub path: Option<String>,
    /// For `removed`: the tenant id.
    pub id: Option<String>,
    /// For `skipped`: why.
    pub reason: Option<String>,
    /// For `summary`: counts over the fleet.
    pub counts: Option<FleetCounts>,
    /// For `summary`: whether the initial scan is done.
    pub ready: Option<bool>,
    /// For `summary`: changes since the previous summary.
    pub changes: Option<u64>,
    /// For `restore`: the job now.
    pub restore: Option<RestoreJob>,
}

impl LiveEvent {
    fn new(kind: &str) -> LiveEvent {
        LiveEvent {
            kind: kind.to_owned(),
            client: None,
            path: None,
            id: None,
            reason: None,
            counts: None,
            ready: None,
            changes: None,
            restore: None,
        }
    }

    fn restore(job: JobView) -> LiveEvent {
        LiveEvent { restore: Some(job.into()), ..LiveEvent::new("restore") }
    }

    fn summary(board: &Board, changes: u64) -> LiveEvent {
        LiveEvent {
            counts: Some(board.counts().into()),
            ready: Some(board.is_ready()),
            changes: Some(changes),
            ..LiveEvent::new("summary")
        }
    }

    fn of(change: Change, board: &Board) -> LiveEvent {
        match change {
            Change::Tenant(t) => {
                let info = board.info();
                LiveEvent {
                    client: Some(Client::new(&t, std::time::SystemTime::now(), info.lag_threshold)),
                    ..LiveEvent::new("tenant")
                }
            }
            Change::Removed { path, id } => LiveEvent {
                path: Some(path.display().to_string()),
                id: Some(id.to_string()),
                ..LiveEvent::new("removed")
            },
            Change::Skipped(s) => LiveEvent {
                path: Some(s.path.display().to_string()),
                reason: Some(s.reason),
                ..LiveEvent::new("skipped")
            },
            Change::Unskipped { path } => {
                LiveEvent { path: Some(path.display().to_string()), ..LiveEvent::new("unskipped") }
            }
            Change::Fleet => LiveEvent::new("fleet"),
        }
    }
}

/// State of one event stream.
struct Feed {
    board: Arc<Board>,
    rx: tokio::sync::broadcast::Receiver<Change>,
    /// Restore jobs' changes (none in a server without jobs).
    jobs: Option<tokio::sync::broadcast::Receiver<JobView>>,
    shutdown: tokio_util::sync::CancellationToken,
    mode: EventMode,
    queue: VecDeque<LiveEvent>,
    /// Changes not yet reported by a summary.
    changes: u64,
    /// When the pending summary is due (`None`: nothing to report).
    due: Option<Instant>,
    last_summary: Instant,
}

impl Feed {
    fn note_changes(&mut self, n: u64) {
        self.changes += n;
        if self.due.is_none() {
            self.due = Some((self.last_summary + SUMMARY_EVERY).max(Instant::now()));
        }
    }

    async fn next(mut self) -> Option<(LiveEvent, Feed)> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some((e, self));
            }
            let due = self.due;
            let tick = async move {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            let jobs_rx = &mut self.jobs;
            let jobs = async {
                match jobs_rx.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            let all = self.mode == EventMode::All;
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return None,
                r = jobs => match r {
                    Ok(job) if self.mode != EventMode::Summary => return Some((LiveEvent::restore(job), self)),
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) if self.mode == EventMode::Restores => {
                        return Some((LiveEvent::new("resync"), self));
                    }
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => self.jobs = None,
                },
                _ = tick => {
                    self.due = None;
                    self.last_summary = Instant::now();
                    let n = std::mem::take(&mut self.changes);
                    return Some((LiveEvent::summary(&self.board, n), self));
                }
                r = self.rx.recv() => match r {
                    // A restore page needs no tenant changes.
                    _ if self.mode == EventMode::Restores => {}
                    Ok(change) => {
                        self.note_changes(1);
                        if all {
                            return Some((LiveEvent::of(change, &self.board), self));
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        self.note_changes(n);
                        if all {
                            return Some((LiveEvent::new("resync"), self));
                        }
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }
}

/// Live events from `board` (and restore jobs, when given) until `shutdown`: a
/// `summary` first, then changes.
pub fn live_events(
    board: Arc<Board>,
    jobs: Option<tokio::sync::broadcast::Receiver<JobView>>,
    shutdown: tokio_util::sync::CancellationToken,
    mode: EventMode,
) -> BoxStream<'static, LiveEvent> {
    let rx = board.subscribe();
    let first = LiveEvent::summary(&board, 0);
    let feed = Feed {
        board,
        rx,
        jobs,
        shutdown,
        mode,
        queue: VecDeque::from([first]),
        changes: 0,
        due: None,
        last_summary: Instant::now(),
    };
    stream::unfold(feed, Feed::next).boxed()
}

#[OpenApi(tag = "Tag::Fleet")]
impl Api {
    /// The seed's status document: bucket, watched directories, counts and every tenant.
    ///
    /// Field names and shape are exactly the seed's. `status` is the tenant's state;
    /// `activeClients` counts `active`, `lagging` and `starting`; `s3Path` is the
    /// storage prefix without bucket; `createdAt` is when the daemon registered it.
    #[oai(path = "/status", method = "get", operation_id = "status")]
    async fn status(&self) -> Json<SeedStatus> {
        Json(SeedStatus::from_snapshot(&self.state.board.snapshot()))
    }

    /// Tenants, filtered and paged, with fleet counts.
    #[oai(path = "/clients", method = "get", operation_id = "clients")]
    async fn clients(
        &self,
        /// Only tenants in this state.
        status: Query<Option<StatusFilter>>,
        /// Case-insensitive substring of the id, database path or storage prefix.
        q: Query<Option<String>>,
        /// Page, from 1.
        #[oai(validator(minimum(value = "1")))]
        page: Query<Option<u64>>,
        /// Tenants per page (default 50, at most 500).
        #[oai(validator(minimum(value = "1"), maximum(value = "500")))]
        per_page: Query<Option<u64>>,
    ) -> Json<ClientPage> {
        let query = view::Query {
            status: status.0,
            q: q.0.unwrap_or_default(),
            page: page.0.unwrap_or(1) as usize,
            per_page: per_page.0.unwrap_or(0) as usize,
        };
        Json(query.page_of(&self.state.board.snapshot()))
    }

    /// One tenant: its board entries (conflicting files too), its replica's files per
    /// level, its restore window, and the commands that restore it.
    #[oai(path = "/clients/:id", method = "get", operation_id = "client")]
    async fn client(&self, id: Path<String>) -> DetailResponse {
        let Some(id) = view::parse_id(&id.0) else {
            return DetailResponse::BadRequest(PlainText(view::MALFORMED_ID.to_owned()));
        };
        let entries = self.state.board.by_id(&id);
        let threshold = self.state.board.info().lag_threshold;
        match view::detail(&self.state.storage, &entries, threshold).await {
            Some(d) => DetailResponse::Ok(Json(Box::new(d))),
            None => DetailResponse::NotFound(PlainText(format!("no tenant {id}"))),
        }
    }

    /// Database files that are not replicated, and why.
    #[oai(path = "/skipped", method = "get", operation_id = "skipped")]
    async fn skipped(&self) -> Json<Vec<SkippedFile>> {
        Json(self.state.board.snapshot().skipped.iter().map(SkippedFile::from).collect())
    }

    /// Live updates (Server-Sent Events): a `summary` event first, then one event per
    /// change and restore job progress (`mode=all`, the default), only throttled
    /// summaries (`mode=summary`), or only restore jobs (`mode=restores`). Each event's
    /// data is a `LiveEvent` in JSON and its SSE type is its `kind`.
    #[oai(path = "/events", method = "get", operation_id = "events", tag = "Tag::Events")]
    async fn events(&self, mode: Query<Option<EventMode>>) -> EventStream<BoxStream<'static, LiveEvent>> {
        let jobs = self.state.restores.as_ref().map(|r| r.subscribe());
        let s =
            live_events(self.state.board.clone(), jobs, self.state.shutdown.clone(), mode.0.unwrap_or(EventMode::All));
        EventStream::new(s)
            .keep_alive(SSE_KEEP_ALIVE)
            .to_event(|e| Event::message(e.to_json_string()).event_type(e.kind.clone()))
    }
}
