//! Restores on the dashboard, in headless Chromium against the real daemon in this
//! process: the tenant page draws the restore window as a timeline (snapshots,
//! compacted files, the L0 tail), a click on a file fills the TXID and a click on a
//! moment fills the time, the form starts a job whose progress bar moves live (the
//! storage answers over a slow link), the finished job shows its output, SHA-256 and
//! integrity result, and `/restores` lists every job. The screenshot goes to
//! `$CARGO_TARGET_TMPDIR/restore.png`, and to `docs/img/restore.png` with
//! `LITEFLEET_UPDATE_SCREENSHOT=1`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::browser::{chromium_or_skip, launch};
use common::live::{self, Live, SlowLink, sha256, write};
use common::*;
use serde_json::json;

const SMALL: &str = "12345678-1234-5678-9abc-123456789012";
const BIG: &str = "98765432-4321-8765-cba9-876543210987";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_fills_the_form_and_jobs_progress_live() {
    let Some(bin) = chromium_or_skip("the_timeline_fills_the_form_and_jobs_progress_live") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s3 = S3Server::start();
    let slow = SlowLink::start(s3.addr(), 8 << 20);
    let mut c = live::on_s3(live::config(dir), &s3, "backups", slow.endpoint());
    c.lifecycle.levels = vec![Duration::from_secs(2)];
    c.lifecycle.snapshot_interval = Duration::from_secs(3);
    let (small, big) = (dir.join("clients").join(format!("{SMALL}.db")), dir.join("clients").join(format!("{BIG}.db")));
    // The big tenant exists before the daemon starts: one 24 MiB full-page file, which
    // downloads in three ranged reads of 8 MiB.
    write(&big, &["big t 24"]);
    let live = Live::start(c).await;
    live.shipped(&big, 0).await;
    // The small one changes in rounds, so its files spread over the window: a snapshot,
    // compacted files, an L0 tail.
    let mut txid = 0;
    for round in 0..8 {
        write(&small, &[&format!("insert t {} 200", 3 + round)]);
        txid = live.shipped(&small, txid).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let lanes = |d: &serde_json::Value| {
        let marks = d["timeline"]["marks"].as_array().cloned().unwrap_or_default();
        ["snapshot", "compacted", "l0"].map(|l| marks.iter().filter(|m| m["lane"] == l).count())
    };
    let mut detail = live.json(&format!("/api/clients/{SMALL}")).await;
    for _ in 0..100 {
        if lanes(&detail).iter().all(|&n| n > 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        detail = live.json(&format!("/api/clients/{SMALL}")).await;
    }
    assert!(lanes(&detail).iter().all(|&n| n > 0), "snapshots, compacted files and L0 files: {}", detail["timeline"]);

    let base = format!("http://{}", live.addr);
    let (_browser, mut page) = launch(&bin, &dir.join("profile")).await;
    // The token once, as a link: it becomes a cookie the page's requests carry.
    page.call("Page.navigate", json!({ "url": format!("{base}/?token={}", live::TOKEN) })).await;
    page.wait_for(
        "document.getElementById('live') && document.getElementById('live').textContent === 'live'",
        "the dashboard",
    )
    .await;
    page.call("Page.navigate", json!({ "url": format!("{base}/tenants/{SMALL}") })).await;
    page.wait_for("document.querySelectorAll('#timeline .tl-snapshot').length > 0", "the timeline").await;
    for lane in ["tl-compacted", "tl-l0"] {
        let n = page.eval(&format!("document.querySelectorAll('#timeline .{lane}').length")).await;
        assert!(n.as_u64().unwrap() > 0, "{lane}: {n}");
    }
    // A click on the newest L0 file picks its TXID.
    let want = page
        .eval(
            "(() => { const m = [...document.querySelectorAll('#timeline .tl-l0')].pop(); m.id = 'newest-l0'; \
             return Number(m.dataset.txid).toString(16).padStart(16, '0'); })()",
        )
        .await;
    page.click("#newest-l0").await;
    page.wait_for(
        &format!("document.getElementById('restore-txid').value === {want} && document.querySelector('input[name=point][value=txid]').checked"),
        "the TXID filled from the timeline",
    )
    .await;
    // A click on an empty moment of the window picks that time.
    let svg = page.eval("(() => { const r = document.getElementById('timeline').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()").await;
    let (x, y, w, h) =
        (svg[0].as_f64().unwrap(), svg[1].as_f64().unwrap(), svg[2].as_f64().unwrap(), svg[3].as_f64().unwrap());
    page.click_at(x + w * 0.55, y + h * 0.93).await;
    page.wait_for(
        "/^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$/.test(document.getElementById('restore-time').value) \
         && document.querySelector('input[name=point][value=time]').checked",
        "the time filled from the timeline",
    )
    .await;
    let picked = page.eval("document.getElementById('restore-time').value").await;
    let at = humantime::parse_rfc3339(picked.as_str().unwrap()).unwrap();
    let from = detail["timeline"]["fromMs"].as_i64().unwrap();
    let at_ms = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(at_ms > from, "the moment lies in the window: {picked} vs {from}");

    // Restore that moment into a copy from the form.
    page.click("#restore-form button[type=submit]").await;
    page.wait_for(
        "!!document.querySelector('#restore-jobs li.job.st-done, #restore-jobs li.job.st-failed') \
         || document.getElementById('restore-msg').className === 'err'",
        "the job's end",
    )
    .await;
    let ended = page.eval("document.getElementById('restore-msg').textContent + ' | ' + document.getElementById('restore-jobs').textContent").await;
    assert!(page.eval("!!document.querySelector('#restore-jobs li.job.st-done')").await == true, "{ended}");
    let sha = page.eval("document.querySelector('#restore-jobs li.job.st-done .sha').textContent").await;
    let out = page.eval("document.querySelector('#restore-jobs li.job.st-done .path').textContent").await;
    let out = PathBuf::from(out.as_str().unwrap());
    assert!(out.starts_with(dir.join("copies")), "{}", out.display());
    assert_eq!(sha.as_str(), Some(sha256(&out).as_str()), "the page shows the output's SHA-256");
    let integrity =
        page.eval("[...document.querySelectorAll('#restore-jobs li.job.st-done dd')].map(d => d.textContent)").await;
    assert!(integrity.as_array().unwrap().iter().any(|d| d == "ok (full check)"), "{integrity}");
    // The picture for docs/restore.md: the window, the moment picked, the finished job.
    page.eval("document.getElementById('timeline').scrollIntoView({block: 'start'}); window.scrollBy(0, -90)").await;
    let shot = page.call("Page.captureScreenshot", json!({ "format": "png" })).await;
    let shot = common::browser::base64_decode(shot["data"].as_str().unwrap());
    std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("restore.png"), &shot).unwrap();

    // The big tenant's restore downloads over the slow link: its bar moves live.
    page.call("Page.navigate", json!({ "url": format!("{base}/tenants/{BIG}") })).await;
    page.wait_for("!!document.getElementById('restore-form')", "the big tenant's page").await;
    page.eval("document.querySelector('input[name=target][value=fork]').checked = true").await;
    page.click("#restore-form button[type=submit]").await;
    page.wait_for(
        "(() => { const p = document.querySelector('#restore-jobs li.job.st-running progress'); \
         return p && p.value > 0 && p.value < p.max; })()",
        "a progress bar part way",
    )
    .await;
    page.wait_for("!!document.querySelector('#restore-jobs li.job.st-done')", "the fork done").await;
    let fork = page.eval("document.querySelector('#restore-jobs li.job.st-done .path').textContent").await;
    assert!(Path::new(fork.as_str().unwrap()).exists());

    // The Restores view lists both, with their tenants.
    page.call("Page.navigate", json!({ "url": format!("{base}/restores") })).await;
    page.wait_for("document.querySelectorAll('#restore-jobs li.job.st-done').length === 2", "the Restores view").await;
    for id in [SMALL, BIG] {
        let found = page.eval(&format!("!!document.querySelector('#restore-jobs a[href=\"/tenants/{id}\"]')")).await;
        assert_eq!(found, true, "{id} listed");
    }
    if std::env::var("LITEFLEET_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/img/restore.png");
        std::fs::write(&docs, &shot).unwrap();
        eprintln!("updated {}", docs.display());
    }
    live.stop().await;
}
