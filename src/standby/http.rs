//! The standby's own page, JSON API and metrics (the primary's dashboard is
//! `crate::http`; the standby has no tenants of its own to show there).
//!
//! * `/` — totals and every tenant (copy TXID vs the primary's, lag), refreshed every
//!   2 s by the browser; tenants behind or failed first.
//! * `/api/standby` — the totals as JSON; `/api/standby/tenants` — every tenant.
//! * `/metrics` — Prometheus: `litefleet_standby_*` and the storage requests.
//! * `/healthz` — the process answers; `/readyz` — the first listing is done.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use poem::endpoint::BoxEndpoint;
use poem::listener::{Acceptor, TcpAcceptor};
use poem::web::{Data, Json};
use poem::{EndpointExt, Response, Route, get, handler};
use tokio_util::sync::CancellationToken;

use super::{Board, M_TENANTS, TenantView};
use crate::http::HttpError;
use crate::http::html::esc;
use crate::redact::Secret;
use crate::storage::Storage;

/// Tenant rows drawn on the page (the API has them all).
const PAGE_ROWS: usize = 500;

#[derive(Clone)]
struct State {
    board: Arc<Board>,
    storage: Storage,
    metrics: PrometheusHandle,
}

/// Serves on `listener` until `stop`; returns the address and the server's task.
/// With `token` (the config's `[http] token`) everything but `/healthz` needs it, as on
/// the primary's dashboard.
pub fn serve(
    listener: tokio::net::TcpListener,
    board: Arc<Board>,
    storage: Storage,
    metrics: PrometheusHandle,
    token: Option<Secret>,
    stop: CancellationToken,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), HttpError> {
    let addr = listener.local_addr().map_err(|source| HttpError::Bind { addr: ([0, 0, 0, 0], 0).into(), source })?;
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|source| HttpError::Bind { addr, source })?;
    let local = acceptor.local_addr().first().and_then(|a| a.as_socket_addr().copied()).unwrap_or(addr);
    if crate::http::exposed_without_token(local, token.as_ref()) {
        tracing::warn!(
            "standby: page and API on {local} (not loopback, no [http] token): anyone who can reach it sees every tenant prefix"
        );
    }
    let app = router(board, storage, metrics, token);
    let task = tokio::spawn(async move {
        let server = poem::Server::new_with_acceptor(acceptor).name("litefleet-standby");
        let grace = Some(std::time::Duration::from_secs(2));
        if let Err(e) = server.run_with_graceful_shutdown(app, stop.cancelled_owned(), grace).await {
            tracing::error!("http: server stopped: {e}");
        }
    });
    Ok((local, task))
}

/// The page's style: a file of its own, for the security headers allow no inline style.
const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:1.5rem;color:#222} table{border-collapse:collapse}
td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left} .num{text-align:right}
.failed{color:#b00020} .behind{color:#a15c00} .cards span{display:inline-block;margin:0 1.2rem .8rem 0}
.cards b{display:block;font-size:1.4rem}
";

#[handler]
fn style() -> Response {
    Response::builder().content_type("text/css; charset=utf-8").body(STYLE)
}

/// The standby's page and API, behind the primary's token check and security headers.
fn router(
    board: Arc<Board>,
    storage: Storage,
    metrics: PrometheusHandle,
    token: Option<Secret>,
) -> BoxEndpoint<'static> {
    let app = Route::new()
        .at("/", get(page))
        .at("/assets/standby.css", get(style))
        .at("/api/standby", get(totals))
        .at("/api/standby/tenants", get(tenants))
        .at("/metrics", get(metrics_page))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .data(State { board, storage, metrics });
    crate::http::guarded(app, token)
}

#[handler]
fn totals(state: Data<&State>) -> Json<super::Totals> {
    Json(state.board.totals(&state.storage))
}

#[handler]
fn tenants(state: Data<&State>) -> Json<Vec<TenantView>> {
    Json(state.board.tenants())
}

#[handler]
fn healthz() -> &'static str {
    "ok\n"
}

#[handler]
fn readyz(state: Data<&State>) -> Response {
    let ready = state.board.totals(&state.storage).ready_ms.is_some();
    let (status, text) = if ready {
        (poem::http::StatusCode::OK, "ready\n")
    } else {
        (poem::http::StatusCode::SERVICE_UNAVAILABLE, "not ready: the first listing of the storage is not done\n")
    };
    Response::builder().status(status).content_type("text/plain; charset=utf-8").body(text)
}

#[handler]
fn metrics_page(state: Data<&State>) -> Response {
    let t = state.board.totals(&state.storage);
    for (s, n) in [
        ("following", t.following),
        ("restoring", t.restoring),
        ("failed", t.failed),
        ("removed", t.removed),
        ("behind", t.behind),
    ] {
        metrics::gauge!(M_TENANTS, "state" => s).set(n as f64);
    }
    Response::builder().content_type("text/plain; version=0.0.4; charset=utf-8").body(state.metrics.render())
}

/// Milliseconds as people read them.
fn ms(v: Option<i64>) -> String {
    match v {
        None => "–".to_owned(),
        Some(v) if v.abs() < 10_000 => format!("{v} ms"),
        Some(v) => format!("{:.1} s", v as f64 / 1000.0),
    }
}

#[handler]
fn page(state: Data<&State>) -> poem::web::Html<String> {
    let t = state.board.totals(&state.storage);
    let mut rows = state.board.tenants();
    // What needs attention first: failed, then behind, then by prefix.
    rows.sort_by_key(|v| (v.state != "failed", v.copy_txid >= v.primary_txid, v.prefix.clone()));
    let mut h = String::with_capacity(4096 + rows.len().min(PAGE_ROWS) * 256);
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">
<title>litefleet standby</title><link rel="stylesheet" href="/assets/standby.css"></head><body>
<h1>litefleet standby</h1>
<p>Copies of every tenant of <code>{storage}</code> in <code>{dir}</code>. {log}</p>
<div class="cards" id="totals"><span><b id="t-tenants">{tenants}</b>tenants</span><span><b id="t-following">{following}</b>following</span>
<span><b id="t-behind">{behind}</b>behind</span><span><b id="t-restoring">{restoring}</b>restoring</span><span><b id="t-failed">{failed}</b>failed</span><span><b id="t-removed">{removed}</b>removed</span>
<span><b id="t-lag-p50">{p50}</b>lag p50</span><span><b id="t-lag-p99">{p99}</b>lag p99</span><span><b id="t-requests">{lists} / {gets} / {log_requests}</b>LIST / GET / change-log requests since start</span></div>
<table id="tenants"><thead><tr><th>tenant prefix</th><th>state</th><th class="num">primary TXID</th><th class="num">copy TXID</th><th class="num">last lag</th><th>copy</th><th>error</th></tr></thead><tbody>
"#,
        storage = esc(&t.storage),
        dir = esc(&t.dir.display().to_string()),
        log = if t.change_log {
            "Following the primary's change log."
        } else {
            "No change log found: listing the storage every scan interval."
        },
        tenants = t.tenants,
        following = t.following,
        behind = t.behind,
        restoring = t.restoring,
        failed = t.failed,
        removed = t.removed,
        p50 = ms(t.lag_p50_ms),
        p99 = ms(t.lag_p99_ms),
        lists = t.lists,
        gets = t.gets,
        log_requests = t.log_requests,
    );
    for v in rows.iter().take(PAGE_ROWS) {
        let class = if v.state == "failed" {
            "failed"
        } else if v.state != "removed" && v.copy_txid < v.primary_txid {
            "behind"
        } else {
            ""
        };
        let _ = writeln!(
            h,
            "<tr class=\"{class}\" data-prefix=\"{p}\"><td>{p}</td><td>{state}</td><td class=\"num\">{pt:016x}</td><td class=\"num\">{ct:016x}</td><td class=\"num\">{lag}</td><td><code>{copy}</code></td><td>{err}</td></tr>",
            p = esc(&v.prefix),
            state = v.state,
            pt = v.primary_txid,
            ct = v.copy_txid,
            lag = ms(v.lag_ms),
            copy = esc(&v.copy.display().to_string()),
            err = esc(v.last_error.as_deref().or(v.removed.as_deref()).unwrap_or("")),
        );
    }
    if rows.len() > PAGE_ROWS {
        let _ = write!(
            h,
            "<tr><td colspan=\"7\">… and {} more (see /api/standby/tenants)</td></tr>",
            rows.len() - PAGE_ROWS
        );
    }
    h.push_str("</tbody></table></body></html>\n");
    poem::web::Html(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::StatusCode;
    use poem::test::TestClient;

    fn client(token: Option<&str>) -> TestClient<BoxEndpoint<'static>> {
        let storage =
            Storage::from_url("memory://standby-http-test", &Default::default()).unwrap_or_else(|e| panic!("{e}"));
        let metrics = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder().handle();
        TestClient::new(router(Arc::new(Board::default()), storage, metrics, token.map(Secret::new)))
    }

    /// A standby's page names every tenant prefix: with `[http] token` set, the page, its
    /// style, the API, `/metrics` and `/readyz` need the token, as on the primary;
    /// `/healthz` does not. A browser link with `?token=` leaves it in a cookie.
    #[tokio::test]
    async fn the_token_guards_the_standby_as_it_guards_the_dashboard() {
        let cli = client(Some("s3cret"));
        for path in ["/", "/assets/standby.css", "/api/standby", "/api/standby/tenants", "/metrics", "/readyz"] {
            cli.get(path).send().await.assert_status(StatusCode::UNAUTHORIZED);
            cli.get(path).header("authorization", "Bearer wrong").send().await.assert_status(StatusCode::UNAUTHORIZED);
            let with = cli.get(path).header("authorization", "Bearer s3cret").send().await;
            assert_ne!(with.0.status(), StatusCode::UNAUTHORIZED, "{path}");
            let cookie = cli.get(path).header("cookie", "litefleet_token=s3cret").send().await;
            assert_ne!(cookie.0.status(), StatusCode::UNAUTHORIZED, "{path} with the cookie");
        }
        cli.get("/healthz").send().await.assert_status_is_ok();
        let link = cli.get("/?token=s3cret").send().await;
        link.assert_status(StatusCode::SEE_OTHER);
        link.assert_header("location", "/");
        let html = cli.get("/").header("authorization", "Bearer s3cret").send().await;
        html.assert_status_is_ok();
        html.assert_header("content-security-policy", crate::http::CSP);
        assert!(html.0.into_body().into_string().await.unwrap_or_default().contains("/assets/standby.css"));

        // No token configured: open, as before (a warning when not on loopback).
        client(None).get("/api/standby").send().await.assert_status_is_ok();
    }
}
