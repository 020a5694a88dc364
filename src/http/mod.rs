//! The daemon's HTTP server (poem): the dashboard, the JSON API with its OpenAPI
//! document, Prometheus metrics, and health probes.
//!
//! | path | what |
//! |---|---|
//! | `/` | dashboard (counts, search, paging; live via `/api/events`) |
//! | `/tenants/{id}` | one tenant: files per level, the restore window as a timeline, the restore form and its jobs |
//! | `/restores` | every restore job, live |
//! | `/api/status` | the seed's JSON document |
//! | `/api/clients`, `/api/clients/{id}`, `/api/skipped`, `/api/events` | richer API |
//! | `/api/clients/{id}/restores`, `/api/restores`, `/api/restores/{job}` | restore jobs ([`restores`]) |
//! | `/api/openapi.json`, `/api/docs` | OpenAPI document and its browsable page |
//! | `/metrics` | Prometheus text format |
//! | `/healthz`, `/readyz` | liveness, readiness |
//!
//! This module owns the listening socket, the bearer-token check (everything but
//! `/healthz`; and every request that changes state — a restore job started or
//! cancelled — is refused with 403 unless `[http] token` is set), the security headers,
//! and shutdown of its connections. It reads the status board and lists replicas, and
//! hands restore requests to [`crate::recovery::jobs`]; it never changes replication,
//! and it never puts a credential (the token, storage keys) in a page, a response or a
//! log line.

pub mod api;
pub mod html;
mod html_restore;
pub mod restores;
pub mod timeline;
pub mod view;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use poem::http::{HeaderValue, Method, StatusCode, header};
use poem::listener::{Acceptor, TcpAcceptor};
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, handler};
use poem_openapi::OpenApiService;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config;
use crate::recovery::jobs::Restores;
use crate::redact::Secret;
use crate::status::Board;
use crate::storage::Storage;

/// How long graceful shutdown waits for open requests (event streams end at once).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a storage probe result is reused by `/readyz`.
pub const READY_PROBE_TTL: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for storage to answer.
pub const READY_PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Cookie that carries the token for browsers (set by `/?token=…`).
pub const TOKEN_COOKIE: &str = "litefleet_token";
/// How often histogram samples are folded (metrics-exporter-prometheus needs upkeep).
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Content-Security-Policy of every page but the API docs: only our own script, style,
/// and same-origin fetches; no inline code, no frames, no plugins.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The API docs page (Swagger UI, embedded by poem-openapi) inlines its script and style.
const DOCS_CSP: &str = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http: cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// A running server.
#[derive(Debug)]
pub struct Server {
    /// The bound address (the real port when `listen` had port 0).
    pub local_addr: SocketAddr,
}

/// A storage probe: when it ran, and its error if it failed.
type Probe = (Instant, Result<(), String>);

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct State {
    pub(crate) board: Arc<Board>,
    pub(crate) storage: Storage,
    pub(crate) metrics: Option<PrometheusHandle>,
    pub(crate) shutdown: CancellationToken,
    /// The daemon's restore jobs (`None` in a server built without them).
    pub(crate) restores: Option<Restores>,
    /// Whether `[http] token` is set: requests that change state are refused without.
    pub(crate) writes_allowed: bool,
    /// Last storage probe of `/readyz`: when, and its error if it failed.
    probe: Arc<tokio::sync::Mutex<Option<Probe>>>,
}

/// Binds `cfg.listen` and serves until `shutdown` is cancelled. Returns once the socket
/// is bound (a port in use fails here, with the address in the error); the handle
/// finishes when the server has stopped.
pub async fn serve(
    cfg: &config::HttpConfig,
    board: Arc<Board>,
    storage: Storage,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> Result<(Server, tokio::task::JoinHandle<()>), HttpError> {
    let listener = bind(cfg.listen).await?;
    serve_on(listener, cfg, board, storage, metrics, None, shutdown)
}

/// Binds the listening socket (the daemon does this before anything else, so a port in
/// use stops it before it writes anything).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| HttpError::Bind { addr, source })
}

/// Serves on a bound socket until `shutdown` is cancelled, with the daemon's restore
/// jobs when given.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    cfg: &config::HttpConfig,
    board: Arc<Board>,
    storage: Storage,
    metrics: Option<PrometheusHandle>,
    restores: Option<Restores>,
    shutdown: CancellationToken,
) -> Result<(Server, tokio::task::JoinHandle<()>), HttpError> {
    let addr = listener.local_addr().unwrap_or(cfg.listen);
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|source| HttpError::Bind { addr, source })?;
    let local_addr = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(addr);
    if exposed_without_token(local_addr, cfg.token.as_ref()) {
        tracing::warn!(
            "http: listening on {local_addr} (not loopback) without a token: anyone who can reach it sees every tenant; set [http] token"
        );
    }
    if let Some(h) = &metrics {
        let (h, stop) = (h.clone(), shutdown.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(METRICS_UPKEEP);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = every.tick() => h.run_upkeep(),
                }
            }
        });
    }
    let app = router_with(cfg, board, storage, metrics, restores, shutdown.clone());
    tracing::info!("🌐 Dashboard on http://{local_addr}/ (API /api/status, docs /api/docs, metrics /metrics)");
    let task = tokio::spawn(async move {
        let server = poem::Server::new_with_acceptor(acceptor).name("litefleet");
        if let Err(e) = server.run_with_graceful_shutdown(app, shutdown.cancelled_owned(), Some(SHUTDOWN_GRACE)).await {
            tracing::error!("http: server stopped: {e}");
        }
    });
    Ok((Server { local_addr }, task))
}

/// Whether the server listens beyond this machine with no token (worth a warning).
pub(crate) fn exposed_without_token(addr: SocketAddr, token: Option<&Secret>) -> bool {
    token.is_none() && !addr.ip().is_loopback()
}

/// The whole application without restore jobs (also what tests drive with poem's test
/// client); see [`router_with`].
pub fn router(
    cfg: &config::HttpConfig,
    board: Arc<Board>,
    storage: Storage,
    metrics: Option<PrometheusHandle>,
    shutdown: CancellationToken,
) -> poem::endpoint::BoxEndpoint<'static> {
    router_with(cfg, board, storage, metrics, None, shutdown)
}

/// The whole application; the restore routes answer 503 without `restores`.
pub fn router_with(
    cfg: &config::HttpConfig,
    board: Arc<Board>,
    storage: Storage,
    metrics: Option<PrometheusHandle>,
    restores: Option<Restores>,
    shutdown: CancellationToken,
) -> poem::endpoint::BoxEndpoint<'static> {
    let writes_allowed = cfg.token.is_some();
    let state = State { board, storage, metrics, shutdown, restores, writes_allowed, probe: Arc::default() };
    let version = state.board.info().version;
    let apis = (api::Api { state: state.clone() }, restores::RestoreApi { state: state.clone() });
    let api = OpenApiService::new(apis, "litefleet", version)
        .description("Status of every replicated tenant database, and restore jobs. See docs/api.md.")
        .server("/api");
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let app = Route::new()
        .at("/", get(html::dashboard))
        .at("/tenants/:id", get(html::tenant))
        .at("/restores", get(html_restore::restores_page))
        .at("/assets/dashboard.js", get(html::script))
        .at("/assets/restore.js", get(html_restore::script))
        .at("/assets/dashboard.css", get(html::style))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/metrics", get(metrics_page))
        .at("/api/openapi.json", spec)
        .nest("/api/docs", docs)
        .nest("/api", api)
        .data(state);
    guarded(app, cfg.token.clone())
}

/// `app` behind the token check and security headers ([`guard`]), the token kept out
/// of every log line: the dashboard's and the standby's.
pub(crate) fn guarded(app: impl Endpoint + 'static, token: Option<Secret>) -> poem::endpoint::BoxEndpoint<'static> {
    if let Some(t) = &token {
        crate::redact::register(t.expose());
    }
    app.around(move |ep, req| {
        let token = token.clone();
        async move { guard(ep, req, token.as_ref()).await }
    })
    .boxed()
}

/// Whether `given` is the token, in time independent of where they differ.
fn token_matches(given: &str, want: &Secret) -> bool {
    bool::from(given.as_bytes().ct_eq(want.expose().as_bytes()))
}

/// The token a request carries: `Authorization: Bearer`, else the cookie.
fn presented_token(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return v.strip_prefix("Bearer ").map(|t| t.trim().to_owned());
    }
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == TOKEN_COOKIE)
        .map(|(_, v)| url::form_urlencoded::parse(format!("t={v}").as_bytes()).map(|(_, v)| v.into_owned()).collect())
}

/// Removes query parameters with an empty value (`?status=&q=&page=`), so they mean
/// "not given" rather than failing to parse as an enum or a number.
fn drop_empty_params(req: &mut Request) {
    let Some(query) = req.uri().query() else { return };
    if !query.split('&').any(|kv| kv.is_empty() || kv.ends_with('=') || !kv.contains('=')) {
        return;
    }
    let kept: Vec<&str> =
        query.split('&').filter(|kv| kv.split_once('=').is_some_and(|(_, v)| !v.is_empty())).collect();
    let mut pq = req.uri().path().to_owned();
    if !kept.is_empty() {
        pq.push('?');
        pq.push_str(&kept.join("&"));
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(p) = pq.parse() {
        parts.path_and_query = Some(p);
        if let Ok(uri) = poem::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Whether a request of this method may change state (start or cancel a restore).
fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Token check and security headers around every endpoint (see [`guarded`]).
async fn guard<E: Endpoint>(ep: Arc<E>, mut req: Request, token: Option<&Secret>) -> poem::Result<Response> {
    drop_empty_params(&mut req);
    let path = req.uri().path().to_owned();
    // Another site's page cannot use the token either: the cookie is `SameSite=Strict`,
    // and a bearer header across sites needs CORS, which is never granted.
    if changes_state(req.method()) && token.is_none() {
        return Ok(secure(forbidden(WRITES_NEED_TOKEN), &path));
    }
    if let Some(want) = token
        && path != "/healthz"
    {
        let query_token = (req.method() == Method::GET)
            .then(|| {
                url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.into_owned())
            })
            .flatten();
        if let Some(t) = query_token {
            if !token_matches(&t, want) {
                return Ok(secure(unauthorized(), &path));
            }
            // A browser link with the token: keep it in a cookie, drop it from the URL.
            let rest: Vec<(String, String)> = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k != "token")
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut location = path.clone();
            if !rest.is_empty() {
                location.push('?');
                location.push_str(&url::form_urlencoded::Serializer::new(String::new()).extend_pairs(rest).finish());
            }
            let cookie: String = url::form_urlencoded::byte_serialize(want.expose().as_bytes()).collect();
            let resp = Response::builder()
                .status(StatusCode::SEE_OTHER)
                .header(header::LOCATION, location)
                .header(header::SET_COOKIE, format!("{TOKEN_COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict"))
                .finish();
            return Ok(secure(resp, &path));
        }
        if !presented_token(&req).is_some_and(|t| token_matches(&t, want)) {
            return Ok(secure(unauthorized(), &path));
        }
    }
    let resp = match ep.call(req).await {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    Ok(secure(resp, &path))
}

/// What a state-changing request is told when no token is configured.
pub const WRITES_NEED_TOKEN: &str = "403 Forbidden: this request changes state (it starts or cancels a restore), \
     and requests that change state need a token: set [http] token in the daemon's config \
     (none is configured), then send `Authorization: Bearer <token>`\n";

fn forbidden(why: &'static str) -> Response {
    tracing::debug!("http: request refused: {}", why.trim_end());
    Response::builder().status(StatusCode::FORBIDDEN).content_type("text/plain; charset=utf-8").body(why)
}

fn unauthorized() -> Response {
    crate::metrics::unauthorized();
    tracing::debug!("http: request refused: missing or wrong token");
    Response::builder()
        .status(StatusCode::UNAUTHORIZED)
        .header(header::WWW_AUTHENTICATE, "Bearer realm=\"litefleet\"")
        .content_type("text/plain; charset=utf-8")
        .body("401 Unauthorized: send `Authorization: Bearer <token>`, or open /?token=<token> once in a browser\n")
}

/// Adds the security headers every response carries.
fn secure(mut resp: Response, path: &str) -> Response {
    let csp = if path.starts_with("/api/docs") { DOCS_CSP } else { CSP };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// Liveness: the process answers.
#[handler]
fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the initial scan is done and storage answers a listing (cached briefly).
#[handler]
async fn readyz(state: poem::web::Data<&State>) -> Response {
    let scanned = state.board.is_ready();
    let storage = probe_storage(state.0).await;
    let (status, text) = match (scanned, &storage) {
        (true, Ok(())) => (StatusCode::OK, "ready\n".to_owned()),
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: initial scan not finished\n".to_owned()),
        (true, Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: storage unreachable: {e}\n")),
    };
    Response::builder().status(status).content_type("text/plain; charset=utf-8").body(text)
}

/// Lists an empty level below the tenants' root: cheap on every backend, and it fails
/// when the bucket is missing, credentials are refused or the endpoint is down.
async fn probe_storage(state: &State) -> Result<(), String> {
    let mut last = state.probe.lock().await;
    if let Some((at, r)) = last.as_ref()
        && at.elapsed() < READY_PROBE_TTL
    {
        return r.clone();
    }
    let replica = state.storage.replica(&state.board.info().root);
    let r = match tokio::time::timeout(READY_PROBE_TIMEOUT, replica.list(0)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(crate::errors::chain(&e)),
        Err(_) => Err(format!("no answer within {}s", READY_PROBE_TIMEOUT.as_secs())),
    };
    *last = Some((Instant::now(), r.clone()));
    r
}

/// Prometheus text format: fleet gauges from the board, then everything recorded.
#[handler]
fn metrics_page(state: poem::web::Data<&State>) -> Response {
    let Some(h) = &state.metrics else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .content_type("text/plain; charset=utf-8")
            .body("metrics are not enabled in this process\n");
    };
    Response::builder()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(Body::from_string(crate::metrics::render(h, &state.board)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reachable_address_without_a_token_is_exposed() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        let token = Secret::new("t");
        assert!(exposed_without_token(addr("0.0.0.0:8080"), None));
        assert!(exposed_without_token(addr("[::]:8080"), None));
        assert!(exposed_without_token(addr("192.168.1.5:8080"), None));
        assert!(!exposed_without_token(addr("0.0.0.0:8080"), Some(&token)));
        assert!(!exposed_without_token(addr("127.0.0.1:8080"), None));
        assert!(!exposed_without_token(addr("[::1]:8080"), None));
    }

    #[test]
    fn empty_query_parameters_are_dropped() {
        let mut req = Request::builder().uri_str("/api/clients?status=&q=abc&page=").finish();
        drop_empty_params(&mut req);
        assert_eq!(req.uri().to_string(), "/api/clients?q=abc");
        let mut req = Request::builder().uri_str("/api/clients?status=&page=").finish();
        drop_empty_params(&mut req);
        assert_eq!(req.uri().to_string(), "/api/clients");
        let mut req = Request::builder().uri_str("/?q=a%26b").finish();
        drop_empty_params(&mut req);
        assert_eq!(req.uri().to_string(), "/?q=a%26b");
    }

    #[test]
    fn token_comparison_needs_the_whole_token() {
        let t = Secret::new("hunter2");
        assert!(token_matches("hunter2", &t));
        for wrong in ["", "hunter", "hunter22", "Hunter2"] {
            assert!(!token_matches(wrong, &t), "{wrong}");
        }
    }
}
