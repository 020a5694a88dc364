//! The dashboard in a real browser: headless Chromium driven over the DevTools protocol,
//! so the page's own script runs while the test changes the fleet.
//!
//! Against the real daemon binary: a new tenant database created on disk appears as a
//! row without a reload, within a second, and the search finds it. Against the HTTP
//! layer over a filled board: every state, filters, the tenant page, and the
//! screenshot shown in the README. The image
//! goes to `$CARGO_TARGET_TMPDIR/dashboard.png`, and to `docs/img/dashboard.png` when
//! `LITEFLEET_UPDATE_SCREENSHOT=1`.
//!
//! Chromium comes from `LITEFLEET_CHROMIUM` or `PATH` (see `common/browser.rs`).

mod common;

use common::boards;
use common::browser::{STEP_TIMEOUT, base64_decode, chromium_or_skip, launch};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use litefleet::config::HttpConfig;
use litefleet::status::{Board, TenantState};
use litefleet::storage::{Options, Storage};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The promise: a new tenant shows within a second of its registration.
const LIVE_UPDATE_BOUND: Duration = Duration::from_secs(1);

/// The server under test for the UI-detail test: `http::serve` in this process over a
/// board the test fills (every state on one page, for the screenshot). The daemon
/// binary itself is driven by `daemon_dashboard_shows_a_new_tenant_database_live`.
async fn start_server(board: Arc<Board>, storage: Storage, shutdown: CancellationToken) -> String {
    let cfg = HttpConfig { listen: "127.0.0.1:0".parse().unwrap(), ..HttpConfig::default() };
    let metrics = Some(litefleet::metrics::install());
    let (server, _task) = litefleet::http::serve(&cfg, board, storage, metrics, shutdown).await.unwrap();
    format!("http://{}", server.local_addr)
}

/// Types `text` into the search box and waits until the table shows only tenant `id`.
async fn search_finds_only(page: &mut common::browser::Page, text: &str, id: &str) {
    page.eval("document.getElementById('q').focus()").await;
    page.call("Input.insertText", json!({ "text": text })).await;
    page.wait_for(
        &format!(
            "(() => {{ const r = document.querySelectorAll('#tenants tbody tr'); \
             return r.length === 1 && r[0].dataset.id === '{id}'; }})()"
        ),
        "the search result",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_tenant_appears_live_and_search_filters() {
    let Some(bin) = chromium_or_skip("new_tenant_appears_live_and_search_filters") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new("/data/clients");
    let storage_url = format!("file://{}", tmp.path().join("replicas").display());
    let storage = Storage::from_url(&storage_url, &Options::default()).unwrap();
    // A realistic small fleet: 7 + 5 tenants (one error, one lagging, one starting,
    // one conflict) and one skipped file.
    let (board, _) = boards::populated(dir, "s3://saas-backups", "saas-backups", 7);
    let shutdown = CancellationToken::new();
    let base = start_server(board.clone(), storage, shutdown.clone()).await;

    let profile = tmp.path().join("profile");
    let (_browser, mut page) = launch(&bin, &profile).await;
    page.call("Page.navigate", json!({ "url": format!("{base}/") })).await;
    page.wait_for("document.querySelectorAll('#tenants tbody tr').length === 12", "the first page").await;
    page.wait_for("document.getElementById('live').textContent === 'live'", "the event stream").await;
    assert_eq!(page.eval("document.getElementById('n-total').textContent").await, "12");
    page.eval("window.__sameDocument = 42").await;

    // A new tenant registers: its row and the new totals appear without a reload.
    let new_id = "0badc0de-1111-4222-8333-444455556666";
    board.upsert(boards::tenant(dir, "s3://saas-backups", new_id, TenantState::Starting));
    let took = page.wait_for(&format!("!!document.querySelector('tr[data-id=\"{new_id}\"]')"), "the new row").await;
    eprintln!("new tenant row appeared {} ms after registration", took.as_millis());
    assert!(took <= LIVE_UPDATE_BOUND, "row took {took:?}");
    page.wait_for("document.getElementById('n-total').textContent === '13'", "the new total").await;
    page.wait_for("document.getElementById('n-starting').textContent === '2'", "the starting count").await;
    assert_eq!(page.eval("window.__sameDocument").await, 42, "the page reloaded");

    // Typing in the search box filters to the one tenant.
    search_finds_only(&mut page, "0badc0de", new_id).await;
    assert_eq!(page.eval("document.getElementById('matching').textContent").await, "Showing 1–1 of 1 matching tenants");
    assert_eq!(page.eval("location.search").await, "?page=1&q=0badc0de", "the search is in the URL");

    // Searching a path fragment; then clear and filter by a total.
    page.eval("const q = document.getElementById('q'); q.value = ''; q.dispatchEvent(new Event('input'))").await;
    page.wait_for("document.querySelectorAll('#tenants tbody tr').length === 13", "all rows back").await;
    // Clicks that may navigate run after the evaluation has answered.
    page.eval("setTimeout(() => document.querySelector('a.t-error').click(), 0)").await;
    page.wait_for(
        &format!(
            "(() => {{ const r = document.querySelectorAll('#tenants tbody tr'); \
             return r.length === 1 && r[0].dataset.id === '{}'; }})()",
            boards::BETA
        ),
        "the error filter",
    )
    .await;

    // Following a tenant's link opens its page with the restore commands.
    page.eval(&format!("setTimeout(() => document.querySelector('tr[data-id=\"{}\"] a').click(), 0)", boards::BETA))
        .await;
    page.wait_for(
        &format!(
            "location.pathname === '/tenants/{id}' && document.getElementById('cmd-litestream').textContent === \
             'litestream restore -o {id}.db s3://saas-backups/databases/{id}'",
            id = boards::BETA
        ),
        "the tenant page",
    )
    .await;
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    std::fs::write(
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tenant.png"),
        base64_decode(shot["data"].as_str().unwrap()),
    )
    .unwrap();

    // The screenshot of the whole fleet for the README.
    page.call("Page.navigate", json!({ "url": format!("{base}/") })).await;
    page.wait_for("document.getElementById('live').textContent === 'live'", "the reloaded page").await;
    board.remove(&dir.join(format!("{new_id}.db")));
    page.wait_for("document.querySelectorAll('#tenants tbody tr').length === 12", "the removal").await;
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
    let png = base64_decode(shot["data"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&out, &png).unwrap();
    eprintln!("screenshot: {} ({} bytes)", out.display(), png.len());
    if std::env::var("LITEFLEET_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/dashboard.png");
        std::fs::create_dir_all(docs.parent().unwrap()).unwrap();
        std::fs::write(&docs, &png).unwrap();
        eprintln!("updated {}", docs.display());
    }
    shutdown.cancel();
}

/// First paint of the dashboard with 10,000 tenants, from the browser's own timings,
/// and the time from typing a search to the filtered table. Ignored by default
/// (docs/benchmarks.md, "Dashboard and API"):
/// `cargo test --release --test dashboard -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn first_paint_with_ten_thousand_tenants() {
    let Some(bin) = chromium_or_skip("first_paint_with_ten_thousand_tenants") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = Path::new("/data/clients");
    let storage = Storage::from_url(&format!("file://{}", tmp.path().display()), &Options::default()).unwrap();
    let board = Arc::new(Board::new(boards::info(dir, "s3://saas-backups", "saas-backups")));
    for i in 0..10_000 {
        board.upsert(boards::tenant(dir, "s3://saas-backups", &boards::guid(i + 1), TenantState::Active));
    }
    board.set_ready(true);
    let shutdown = CancellationToken::new();
    let base = start_server(board.clone(), storage, shutdown.clone()).await;
    let (_browser, mut page) = launch(&bin, &tmp.path().join("profile")).await;
    for run in 0..3 {
        page.call("Page.navigate", json!({ "url": format!("{base}/?run={run}") })).await;
        page.wait_for(
            "document.readyState === 'complete' && document.getElementById('live').textContent === 'live'",
            "load",
        )
        .await;
        let t = page
            .eval(
                "(() => { const n = performance.getEntriesByType('navigation')[0]; \
                 const p = performance.getEntriesByName('first-contentful-paint')[0]; \
                 return { ttfb: n.responseStart, response: n.responseEnd, dcl: n.domContentLoadedEventEnd, \
                 fcp: p ? p.startTime : null, bytes: n.transferSize, rows: document.querySelectorAll('#tenants tbody tr').length, \
                 total: document.getElementById('n-total').textContent }; })()",
            )
            .await;
        eprintln!("run {run}: {t}");
        assert_eq!(t["rows"], 50);
        assert_eq!(t["total"], "10000");
    }
    let typed = Instant::now();
    page.eval("document.getElementById('q').focus()").await;
    page.call("Input.insertText", json!({ "text": &boards::guid(7777)[..13] })).await;
    page.wait_for("document.querySelectorAll('#tenants tbody tr').length === 1", "the search").await;
    eprintln!("search typed -> 1 row: {} ms (includes the 120 ms typing debounce)", typed.elapsed().as_millis());
    shutdown.cancel();
}

/// The real daemon: `litefleet daemon --config` on temp folders, its dashboard in the
/// browser, and a new tenant database created on disk by a separate process. Its row
/// must appear without a reload within a second of the file (plus the writer's own
/// start-up), then the search finds it; a garbage `<GUID>.db` shows as an error and a
/// non-GUID file as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_dashboard_shows_a_new_tenant_database_live() {
    let Some(bin) = chromium_or_skip("daemon_dashboard_shows_a_new_tenant_database_live") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let clients = tmp.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    let writer = env!("CARGO_BIN_EXE_litefleet-writer");
    let make_db = |path: &Path| {
        let script = tmp.path().join("script.txt");
        std::fs::write(&script, format!("open {}\ninsert t 3 200\n", path.display())).unwrap();
        let st = Command::new(writer).args(["--script", script.to_str().unwrap()]).stdout(Stdio::null()).status();
        assert!(st.is_ok_and(|s| s.success()), "writer failed for {}", path.display());
    };
    for i in 1..=3 {
        make_db(&clients.join(format!("{}.db", boards::guid(i))));
    }
    std::fs::write(clients.join(format!("{}.db", boards::guid(9))), b"this is not a database, it is text").unwrap();
    std::fs::write(clients.join("regular-name.db"), b"").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = tmp.path().join("fleet.toml");
    std::fs::write(
        &config,
        format!(
            "[[watch]]\ndir = {:?}\n[storage]\nurl = \"file://{}\"\n[replication]\nsync_interval = \"100ms\"\nstate_dir = {:?}\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            clients.display().to_string(),
            tmp.path().join("replicas").display(),
            tmp.path().join("state").display().to_string()
        ),
    )
    .unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_litefleet"))
        .args(["daemon", "--config", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    let ready = {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break true;
            }
            if Instant::now() > deadline || daemon.try_wait().ok().flatten().is_some() {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let daemon_guard = Kill(daemon);
    assert!(ready, "the daemon's dashboard never listened on {base}");

    let profile = tmp.path().join("profile");
    let (_browser, mut page) = launch(&bin, &profile).await;
    page.call("Page.navigate", json!({ "url": format!("{base}/") })).await;
    page.wait_for("document.getElementById('live').textContent === 'live'", "the event stream").await;
    page.wait_for("document.getElementById('n-total').textContent === '4'", "four registered files").await;
    page.wait_for("document.getElementById('n-error').textContent === '1'", "the garbage file as an error").await;
    page.wait_for("document.getElementById('n-skipped').textContent === '1'", "the skipped file").await;
    page.eval("window.__sameDocument = 7").await;

    // A new tenant database, created on disk by a separate process.
    let new_id = "0badc0de-1111-4222-8333-444455556666";
    let created = Instant::now();
    make_db(&clients.join(format!("{new_id}.db")));
    let writer_took = created.elapsed();
    let took = page.wait_for(&format!("!!document.querySelector('tr[data-id=\"{new_id}\"]')"), "the new row").await;
    eprintln!("row appeared {} ms after the file (writer took {} ms)", took.as_millis(), writer_took.as_millis());
    assert!(took <= LIVE_UPDATE_BOUND, "the row took {took:?} after the writer finished");
    page.wait_for("document.getElementById('n-total').textContent === '5'", "the new total").await;
    assert_eq!(page.eval("window.__sameDocument").await, 7, "the page reloaded");

    // Search for it.
    search_finds_only(&mut page, "0badc0de", new_id).await;
    drop(daemon_guard);
}
