//! The HTTP API, driven through poem's test client (and, for binding and shutdown, a
//! real socket on 127.0.0.1): the seed's `/api/status` field by field, the richer
//! endpoints, 400/404, the token, the OpenAPI document, escaping, metrics, probes.

mod common;

use common::boards;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use litefleet::config::{HttpConfig, Secret};
use litefleet::http;
use litefleet::status::{Board, TenantState};
use litefleet::storage::{Options, Storage};
use poem::http::StatusCode;
use poem::test::TestClient;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    storage: Storage,
    storage_url: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("clients");
    std::fs::create_dir_all(&dir).unwrap();
    let storage_url = format!("file://{}", tmp.path().join("replicas").display());
    let storage = Storage::from_url(&storage_url, &Options::default()).unwrap();
    Fixture { dir, storage, storage_url, _tmp: tmp }
}

fn cfg(token: Option<&str>) -> HttpConfig {
    HttpConfig { token: token.map(Secret::new), ..HttpConfig::default() }
}

fn client(f: &Fixture, board: Arc<Board>, token: Option<&str>) -> TestClient<poem::endpoint::BoxEndpoint<'static>> {
    let metrics = Some(litefleet::metrics::install());
    TestClient::new(http::router(&cfg(token), board, f.storage.clone(), metrics, CancellationToken::new()))
}

async fn body(resp: poem::test::TestResponse) -> String {
    resp.0.into_body().into_string().await.unwrap()
}

async fn get_json(cli: &TestClient<poem::endpoint::BoxEndpoint<'static>>, uri: &str) -> Value {
    let resp = cli.get(uri).send().await;
    resp.assert_status_is_ok();
    serde_json::from_str(&body(resp).await).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

fn is_rfc3339_seconds(s: &str) -> bool {
    // 2025-01-15T08:30:45Z
    s.len() == 20
        && s.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b'T',
            13 | 16 => b == b':',
            19 => b == b'Z',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn api_status_has_the_seeds_shape_field_by_field() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "saas-backups", 3);
    let cli = client(&f, board.clone(), None);
    let resp = cli.get("/api/status").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("application/json; charset=utf-8");
    let v: Value = serde_json::from_str(&body(resp).await).unwrap();

    assert_eq!(keys(&v), ["activeClients", "bucket", "clients", "totalClients", "watchDirs"]);
    assert_eq!(v["bucket"], "saas-backups");
    assert_eq!(v["watchDirs"], serde_json::json!([f.dir.display().to_string()]));
    // 3 + acme + beta(error) + gamma(lagging) + starting + conflict = 8 entries.
    assert_eq!(v["totalClients"], 8);
    // active (4) + lagging (1) + starting (1); not error, not conflict.
    assert_eq!(v["activeClients"], 6);
    let clients = v["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 8);
    for c in clients {
        assert_eq!(keys(c), ["clientId", "createdAt", "databasePath", "s3Path", "status"], "{c}");
        let id = c["clientId"].as_str().unwrap();
        assert_eq!(c["s3Path"], format!("databases/{id}"), "s3Path is the prefix without bucket");
        assert!(c["databasePath"].as_str().unwrap().ends_with(&format!("{id}.db")));
        assert!(is_rfc3339_seconds(c["createdAt"].as_str().unwrap()), "{c}");
    }
    let status_of = |id: &str, dir: &Path| {
        let p = dir.join(format!("{id}.db")).display().to_string();
        clients.iter().find(|c| c["databasePath"] == p.as_str()).map(|c| c["status"].as_str().unwrap().to_owned())
    };
    assert_eq!(status_of(boards::ACME, &f.dir).as_deref(), Some("active"));
    assert_eq!(status_of(boards::BETA, &f.dir).as_deref(), Some("error"));
    assert_eq!(status_of(boards::GAMMA, &f.dir).as_deref(), Some("lagging"), "lag past the threshold shows");
    assert_eq!(status_of(boards::ACME, &f.dir.join("staging")).as_deref(), Some("conflict"));
}

#[tokio::test]
async fn clients_filter_search_and_page() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 120);
    let cli = client(&f, board, None);

    let v = get_json(&cli, "/api/clients").await;
    assert_eq!((v["page"].as_u64(), v["perPage"].as_u64(), v["pages"].as_u64()), (Some(1), Some(50), Some(3)));
    assert_eq!(v["matching"], 125);
    assert_eq!(v["clients"].as_array().unwrap().len(), 50);
    assert_eq!(v["counts"]["error"], 1);
    assert_eq!(v["counts"]["skipped"], 1);
    assert_eq!(v["counts"]["total"], 125);

    let v = get_json(&cli, "/api/clients?page=3").await;
    assert_eq!(v["clients"].as_array().unwrap().len(), 25);
    let v = get_json(&cli, "/api/clients?page=99").await;
    assert_eq!(v["page"], 3, "a page past the end shows the last page");

    let v = get_json(&cli, "/api/clients?status=error").await;
    let c = &v["clients"][0];
    assert_eq!((v["matching"].as_u64(), c["clientId"].as_str()), (Some(1), Some(boards::BETA)));
    assert_eq!(c["lastError"], "storage refused the upload: 403 Forbidden");
    assert_eq!(c["txid"], 42);
    assert!(c["lastSyncAgeSeconds"].as_f64().unwrap() >= 3.0);

    // Search by id fragment (any case) and by path fragment.
    let v = get_json(&cli, "/api/clients?q=ABCDEF01").await;
    assert_eq!(v["matching"], 1);
    assert_eq!(v["clients"][0]["clientId"], boards::GAMMA);
    assert!(v["clients"][0]["lagSeconds"].as_f64().unwrap() >= 42.0);
    let v = get_json(&cli, "/api/clients?q=staging/").await;
    assert_eq!(v["matching"], 1);
    assert_eq!(v["clients"][0]["status"], "conflict");
    assert!(v["clients"][0]["conflictWith"].as_str().unwrap().ends_with(&format!("clients/{}.db", boards::ACME)));

    // The issue's own spelling, with every parameter empty, means "no filter".
    let v = get_json(&cli, "/api/clients?status=&q=&page=").await;
    assert_eq!((v["matching"].as_u64(), v["page"].as_u64()), (Some(125), Some(1)));

    let v = get_json(&cli, "/api/clients?per_page=500").await;
    assert_eq!(v["clients"].as_array().unwrap().len(), 125);
    for bad in ["/api/clients?status=happy", "/api/clients?page=0", "/api/clients?per_page=501", "/api/clients?page=x"]
    {
        cli.get(bad).send().await.assert_status(StatusCode::BAD_REQUEST);
    }

    let v = get_json(&cli, "/api/skipped").await;
    assert_eq!(v[0]["reason"], "not a GUID (non_guid = \"skip\")");
}

#[tokio::test]
async fn one_client_404_unknown_400_malformed() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 1);
    let cli = client(&f, board, None);
    cli.get("/api/clients/00000000-0000-4000-8000-000000000000").send().await.assert_status(StatusCode::NOT_FOUND);
    cli.get("/api/clients/not-there").send().await.assert_status(StatusCode::NOT_FOUND);
    for bad in ["/api/clients/%3Cscript%3E", "/api/clients/a%20b", "/api/clients/.hidden", "/api/clients/a%2Fb"] {
        cli.get(bad).send().await.assert_status(StatusCode::BAD_REQUEST);
    }
    cli.get("/tenants/%3Cscript%3E").send().await.assert_status(StatusCode::BAD_REQUEST);
    cli.get("/tenants/00000000-0000-4000-8000-000000000000").send().await.assert_status(StatusCode::NOT_FOUND);

    // Uppercase GUIDs find the lowercase tenant; a conflict lists both files.
    let v = get_json(&cli, &format!("/api/clients/{}", boards::ACME.to_uppercase())).await;
    assert_eq!(v["client"]["status"], "active");
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(v["conflicts"][0]["status"], "conflict");
    assert_eq!(v["levels"], serde_json::json!([]), "nothing in the replica yet");
    assert_eq!(v["restoreWindow"], Value::Null);
}

/// A real database replicated by the real replicator: the tenant endpoint and page list
/// its files per level, its restore window and the exact commands.
#[tokio::test]
async fn tenant_detail_lists_files_window_and_restore_commands() {
    let f = fixture();
    let id = boards::ACME;
    let db = f.dir.join(format!("{id}.db"));
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.pragma_update(None, "journal_mode", "wal").unwrap();
        c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    }
    let replica = f.storage.replica(format!("databases/{id}"));
    let mut r = litefleet::replicate::Replicator::new(&db, replica.clone(), Default::default());
    r.sync().await.unwrap();
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);").unwrap();
    }
    r.sync().await.unwrap();
    let latest = r.remote_txid().unwrap();
    r.shutdown().await.unwrap();

    let board = Arc::new(Board::new(boards::info(&f.dir, &f.storage_url, "replicas")));
    let mut t = boards::tenant(&f.dir, &f.storage_url, id, TenantState::Active);
    t.replica_url = replica.url();
    t.txid = Some(latest);
    board.upsert(t);
    let cli = client(&f, board, None);

    let v = get_json(&cli, &format!("/api/clients/{id}")).await;
    let l0 = v["levels"].as_array().unwrap().iter().find(|l| l["level"] == 0).expect("L0 files");
    assert!(l0["count"].as_u64().unwrap() >= 2, "{l0}");
    assert!(l0["files"][0]["name"].as_str().unwrap().ends_with(".ltx"));
    let w = &v["restoreWindow"];
    assert_eq!(w["latestTxid"], latest, "{v}");
    assert_eq!(w["earliestTxid"], l0["files"][0]["maxTxid"], "{v}");
    assert!(is_rfc3339_seconds(w["latestAt"].as_str().unwrap()), "{w}");
    let url = replica.url();
    assert_eq!(v["commands"]["litefleet"], format!("litefleet restore {url} -o {id}.db"));
    assert_eq!(v["commands"]["litestream"], format!("litestream restore -o {id}.db {url}"));
    assert_eq!(v["replicaError"], Value::Null);

    let resp = cli.get(format!("/tenants/{id}")).send().await;
    resp.assert_status_is_ok();
    let html = body(resp).await;
    assert!(html.contains(&format!("litefleet restore {url} -o {id}.db")), "{html}");
    assert!(html.contains(&format!("litestream restore -o {id}.db {url}")));
    assert!(html.contains(&format!("{latest:016x}")), "the latest TXID in hex");
    assert!(html.contains("<th scope=\"row\">L0</th>"));
}

#[tokio::test]
async fn token_guards_everything_but_healthz_and_never_leaks() {
    const TOKEN: &str = "s3cr3t-t0ken;with=odd&chars";
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 2);
    let cli = client(&f, board, Some(TOKEN));
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/", "/api/status", "/api/clients", "/metrics", "/readyz", "/api/openapi.json", "/assets/dashboard.js"]
    {
        let resp = cli.get(path).send().await;
        resp.assert_status(StatusCode::UNAUTHORIZED);
        resp.assert_header("www-authenticate", "Bearer realm=\"litefleet\"");
        cli.get(path).header("authorization", "Bearer wrong").send().await.assert_status(StatusCode::UNAUTHORIZED);
        cli.get(path)
            .header("authorization", &bearer[..bearer.len() - 1])
            .send()
            .await
            .assert_status(StatusCode::UNAUTHORIZED);
    }
    cli.get("/healthz").send().await.assert_status_is_ok();

    // The right token opens everything, and no response ever contains it.
    for path in
        ["/", "/api/status", "/api/clients", "/metrics", "/api/openapi.json", &format!("/tenants/{}", boards::ACME)]
    {
        let resp = cli.get(path).header("authorization", &bearer).send().await;
        resp.assert_status_is_ok();
        let text = body(resp).await;
        assert!(!text.contains("s3cr3t"), "{path} shows the token");
    }

    // A browser link with ?token= sets an HttpOnly cookie and drops the token from the URL.
    let q: String = url::form_urlencoded::byte_serialize(TOKEN.as_bytes()).collect();
    let resp = cli.get(format!("/?status=error&token={q}")).send().await;
    resp.assert_status(StatusCode::SEE_OTHER);
    resp.assert_header("location", "/?status=error");
    let cookie = resp.0.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap().to_owned();
    cli.get("/api/status").header("cookie", &pair).send().await.assert_status_is_ok();
    cli.get("/api/status")
        .header("cookie", "litefleet_token=nope")
        .send()
        .await
        .assert_status(StatusCode::UNAUTHORIZED);
    cli.get("/?token=nope").send().await.assert_status(StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_document_describes_the_api_and_docs_page_loads() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 1);
    let cli = client(&f, board, None);
    let v = get_json(&cli, "/api/openapi.json").await;
    // For an external validator: LITEFLEET_OPENAPI_OUT=/tmp/openapi.json.
    if let Some(out) = std::env::var_os("LITEFLEET_OPENAPI_OUT") {
        std::fs::write(out, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
    assert!(v["openapi"].as_str().unwrap().starts_with("3."), "{}", v["openapi"]);
    assert_eq!(v["info"]["title"], "litefleet");
    assert_eq!(v["servers"][0]["url"], "/api");
    for p in ["/status", "/clients", "/clients/{id}", "/skipped", "/events"] {
        assert!(v["paths"][p]["get"].is_object(), "path {p} missing: {}", v["paths"]);
    }
    // Every $ref resolves, and the seed's document lists exactly its fields.
    let text = v.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(v["components"]["schemas"][name].is_object(), "dangling $ref {name}");
    }
    let seed = &v["components"]["schemas"]["SeedStatus"];
    assert_eq!(keys(&seed["properties"]), ["activeClients", "bucket", "clients", "totalClients", "watchDirs"]);
    let responses = &v["paths"]["/clients/{id}"]["get"]["responses"];
    assert!(responses["200"].is_object() && responses["400"].is_object() && responses["404"].is_object());
    assert!(v["paths"]["/events"]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    // Restore jobs: every status a start can answer, and the job's fields.
    let start = &v["paths"]["/clients/{id}/restores"]["post"];
    for code in ["202", "400", "404", "409", "422", "429", "503"] {
        assert!(start["responses"][code].is_object(), "POST restores lacks {code}: {start}");
    }
    assert!(start["requestBody"]["content"]["application/json; charset=utf-8"].is_object(), "{start}");
    assert!(v["paths"]["/clients/{id}/restores"]["get"].is_object());
    assert!(v["paths"]["/restores"]["get"].is_object());
    for m in ["get", "delete"] {
        assert!(v["paths"]["/restores/{job}"][m]["responses"]["404"].is_object(), "{m} /restores/{{job}}");
    }
    let job = &v["components"]["schemas"]["RestoreJob"]["properties"];
    for k in ["id", "state", "progress", "txid", "restoredAt", "output", "sha256", "integrity", "error", "forkId"] {
        assert!(job[k].is_object(), "RestoreJob lacks {k}: {job}");
    }
    let req = &v["components"]["schemas"]["RestoreRequest"]["properties"];
    assert_eq!(keys(req), ["integrityCheck", "target", "timestamp", "txid", "watchDir"]);

    let resp = cli.get("/api/docs").send().await;
    resp.assert_status_is_ok();
    assert!(body(resp).await.contains("swagger"), "docs page is Swagger UI");
}

#[tokio::test]
async fn pages_escape_paths_and_carry_a_strict_csp() {
    let f = fixture();
    let evil_dir = f.dir.join("<script>alert(1)</script>");
    let board = Arc::new(Board::new(boards::info(&evil_dir, &f.storage_url, "b\"><img src=x>")));
    let mut t = boards::tenant(&evil_dir, &f.storage_url, boards::ACME, TenantState::Error);
    t.last_error = Some("<b>boom</b> & 'quotes'".to_owned());
    board.upsert(t);
    board.skip(&evil_dir.join("<i>x</i>.db"), "<u>reason</u>");
    let cli = client(&f, board, None);
    for path in ["/".to_owned(), format!("/tenants/{}", boards::ACME)] {
        let resp = cli.get(&path).send().await;
        resp.assert_status_is_ok();
        let csp = resp.0.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        resp.assert_header("x-content-type-options", "nosniff");
        let html = body(resp).await;
        for raw in ["<script>alert", "<b>boom", "<img src=x>", "<i>x</i>", "<u>reason"] {
            assert!(!html.contains(raw), "{path}: unescaped {raw:?}");
        }
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}: escaped path shown");
        assert!(!html.contains("<script>") || html.matches("<script").count() == 1, "only our own script tag");
    }
}

#[tokio::test]
async fn dashboard_renders_counts_and_first_page_server_side() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "saas-backups", 60);
    let cli = client(&f, board, None);
    let resp = cli.get("/").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/html; charset=utf-8");
    let html = body(resp).await;
    assert!(html.contains("<dd id=\"bucket\">saas-backups</dd>"));
    assert!(html.contains("<span class=\"n\" id=\"n-total\">65</span>"), "totals at the top");
    assert!(html.contains("<span class=\"n\" id=\"n-error\">1</span>"));
    assert!(html.contains("<span class=\"n\" id=\"n-skipped\">1</span>"));
    assert!(html.contains("<span class=\"n\" id=\"n-conflict\">1</span>"));
    assert!(html.contains("<span class=\"n\" id=\"n-lagging\">1</span>"));
    assert!(html.contains("2h 34m"), "uptime");
    assert_eq!(html.matches("<tr data-id=").count(), 50, "first page only");
    assert!(html.contains("Page 1 of 2"));
    assert!(html.contains("Usage tips") && html.contains("xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"));
    assert!(html.contains("3 s ago"), "last sync as an age");

    let html = body(cli.get("/?q=abcdef01&status=lagging").send().await).await;
    assert_eq!(html.matches("<tr data-id=").count(), 1);
    assert!(html.contains(&format!("data-id=\"{}\"", boards::GAMMA)));
    let js = cli.get("/assets/dashboard.js").send().await;
    js.assert_status_is_ok();
    js.assert_content_type("text/javascript; charset=utf-8");
}

#[tokio::test]
async fn metrics_show_fleet_totals_and_storage_operations() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 4);
    let cli = client(&f, board, None);
    // A storage listing through the tenant page feeds opendal's metrics layer.
    cli.get(format!("/api/clients/{}", boards::ACME)).send().await.assert_status_is_ok();
    let resp = cli.get("/metrics").send().await;
    resp.assert_status_is_ok();
    let text = body(resp).await;
    assert!(text.contains("litefleet_tenants{state=\"active\"} 5"), "{text}");
    assert!(text.contains("litefleet_tenants{state=\"error\"} 1"), "{text}");
    assert!(text.contains("litefleet_tenants{state=\"conflict\"} 1"), "{text}");
    assert!(text.contains("litefleet_skipped_files 1"), "{text}");
    assert!(text.contains("litefleet_ready 1"), "{text}");
    assert!(text.contains("opendal_operation_duration_seconds"), "storage operations share the registry: {text}");
}

#[tokio::test]
async fn readyz_needs_the_initial_scan_and_reachable_storage() {
    let f = fixture();
    let board = Arc::new(Board::new(boards::info(&f.dir, &f.storage_url, "b")));
    let cli = client(&f, board.clone(), None);
    cli.get("/healthz").send().await.assert_status_is_ok();
    let resp = cli.get("/readyz").send().await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert!(body(resp).await.contains("initial scan"));
    board.set_ready(true);
    cli.get("/readyz").send().await.assert_status_is_ok();

    // S3 on a closed local port: not ready, within the probe timeout.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let opts = Options {
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        access_key_id: Some("AKIDEXAMPLE".into()),
        secret_access_key: Some("wJalrXUtnFEMI-example-secret".into()),
        ..Options::default()
    };
    let s3 = Storage::from_url("s3://bkt/path", &opts).unwrap();
    let cli = TestClient::new(http::router(&cfg(None), board, s3, None, CancellationToken::new()));
    let started = Instant::now();
    let resp = cli.get("/readyz").send().await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    let text = body(resp).await;
    assert!(text.contains("storage unreachable"), "{text}");
    assert!(!text.contains("wJalrXUtnFEMI"), "no credential in a response");
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
}

#[tokio::test]
async fn events_stream_changes_and_end_on_shutdown() {
    let f = fixture();
    let board = Arc::new(Board::new(boards::info(&f.dir, &f.storage_url, "b")));
    let shutdown = CancellationToken::new();
    let cli = TestClient::new(http::router(&cfg(None), board.clone(), f.storage.clone(), None, shutdown.clone()));
    let resp = cli.get("/api/events").send().await;
    resp.assert_status_is_ok();
    resp.assert_content_type("text/event-stream");
    let mut s = resp.0.into_body().into_bytes_stream();
    let mut seen = String::new();
    let mut read_until = async |want: &str, seen: &mut String| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !seen.contains(want) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, s.next()).await {
                Ok(Some(Ok(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("waiting for {want:?}: {other:?}; saw {seen}"),
            }
        }
    };
    read_until("event: summary", &mut seen).await;
    board.upsert(boards::tenant(&f.dir, &f.storage_url, boards::GAMMA, TenantState::Starting));
    read_until("event: tenant", &mut seen).await;
    read_until(&format!("\"clientId\":\"{}\"", boards::GAMMA), &mut seen).await;
    // A summary with the change follows within the throttle interval.
    seen.clear();
    read_until("\"changes\":1", &mut seen).await;
    assert!(seen.contains("\"total\":1"), "{seen}");

    let cancelled = Instant::now();
    shutdown.cancel();
    let end = tokio::time::timeout(Duration::from_secs(2), async { while let Some(Ok(_)) = s.next().await {} }).await;
    assert!(end.is_ok(), "stream still open after shutdown");
    assert!(cancelled.elapsed() < Duration::from_millis(500), "{:?}", cancelled.elapsed());
}

/// The real server: binds before returning, refuses a port in use with a clear error,
/// and shuts down promptly with an event stream open.
#[tokio::test]
async fn serve_binds_fails_fast_and_shuts_down_with_sse_open() {
    let f = fixture();
    let board = Arc::new(Board::new(boards::info(&f.dir, &f.storage_url, "b")));
    let shutdown = CancellationToken::new();
    let mut c = cfg(None);
    c.listen = "127.0.0.1:0".parse().unwrap();
    let (server, task) = http::serve(&c, board.clone(), f.storage.clone(), None, shutdown.clone()).await.unwrap();
    assert_ne!(server.local_addr.port(), 0);

    c.listen = server.local_addr;
    let err = http::serve(&c, board, f.storage.clone(), None, CancellationToken::new()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&server.local_addr.to_string()) && msg.contains("cannot listen"), "{msg}");

    let mut sock = tokio::net::TcpStream::connect(server.local_addr).await.unwrap();
    sock.write_all(b"GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = String::new();
    while !got.contains("event: summary") {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(3), task).await.expect("server stopped").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "shutdown took {:?}", started.elapsed());
}

/// Issue 14: requests that change state (starting or cancelling a restore) are refused
/// with 403 naming `[http] token` when none is configured; with the token they reach
/// the handler (which, in a server without restore jobs, says so).
#[tokio::test]
async fn writes_need_a_token_and_say_which_setting() {
    let f = fixture();
    let (board, _) = boards::populated(&f.dir, &f.storage_url, "b", 1);
    let open = client(&f, board.clone(), None);
    for (method, path) in
        [("POST", format!("/api/clients/{}/restores", boards::ACME)), ("DELETE", "/api/restores/x".into())]
    {
        let req = if method == "POST" { open.post(&path).body("{}") } else { open.delete(&path) };
        let resp = req.send().await;
        resp.assert_status(StatusCode::FORBIDDEN);
        let text = body(resp).await;
        assert!(text.contains("[http] token") && text.contains("none is configured"), "{text}");
    }
    open.get("/api/status").send().await.assert_status_is_ok();

    let guarded = client(&f, board, Some("t0ken"));
    let path = format!("/api/clients/{}/restores", boards::ACME);
    guarded.post(&path).body("{}").send().await.assert_status(StatusCode::UNAUTHORIZED);
    let resp = guarded
        .post(&path)
        .header("authorization", "Bearer t0ken")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    resp.assert_status(StatusCode::SERVICE_UNAVAILABLE);
    assert!(body(resp).await.contains("runs no restore jobs"));
}
