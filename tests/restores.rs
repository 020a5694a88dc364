//! Restore jobs over the API, against the real daemon in this process: tenants written
//! by `litefleet-writer` processes and replicated by the fleet, restored through
//! `POST /api/clients/{id}/restores` into copies and forks. Every restored file is
//! compared with the checkpointed source at its point, and the same replica is restored
//! by `litestream restore` too. Every bad input of issue 14 gets its status code; faults
//! are real (a full tmpfs, a read-only tmpfs, a slow TCP link for cancellation).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::live::{self, Live, SlowLink, Tmpfs, sha256, write};
use common::*;
use serde_json::{Value, json};

const G1: &str = "12345678-1234-5678-9abc-123456789012";
const G2: &str = "98765432-4321-8765-cba9-876543210987";
const UNKNOWN: &str = "0badc0de-0000-4000-8000-000000000000";

fn db(dir: &Path, id: &str) -> PathBuf {
    dir.join("clients").join(format!("{id}.db"))
}

/// `litestream restore` of tenant `id`'s folder replica at `args`; its bytes.
fn litestream_bytes(dir: &Path, id: &str, args: &[&str]) -> Option<Vec<u8>> {
    let bin = litestream_bin()?;
    let out = dir.join(format!("litestream-{}.db", args.join("-")));
    let _ = std::fs::remove_file(&out);
    let url = format!("file://{}/databases/{id}", dir.join("replicas").display());
    let o = run_litestream_restore(&bin, &url, &out, args);
    assert!(o.status.success(), "litestream restore {args:?}: {}", describe_output(&o));
    Some(std::fs::read(&out).unwrap())
}

fn same(what: &str, got: &[u8], want: &[u8]) {
    assert!(
        got == want,
        "{what}: {} bytes vs {}; first difference {:?}",
        got.len(),
        want.len(),
        first_difference(got, want, 4096)
    );
}

fn done(job: &Value) -> PathBuf {
    assert_eq!(job["state"], "done", "{job}");
    let out = PathBuf::from(job["output"].as_str().unwrap());
    assert_eq!(job["sha256"].as_str(), Some(sha256(&out).as_str()), "the job's SHA-256 is the file's");
    assert_eq!(job["size"].as_u64(), Some(std::fs::metadata(&out).unwrap().len()));
    assert_eq!(job["integrity"], "ok", "{job}");
    let p = &job["progress"];
    assert_eq!((p["phase"].as_str(), p["bytesDone"].as_u64()), (Some("done"), p["bytesTotal"].as_u64()), "{job}");
    assert_eq!(p["pagesDone"], p["pagesTotal"], "{job}");
    assert!(p["pagesTotal"].as_u64().unwrap() > 0, "{job}");
    out
}

/// The support case: ACME as of a TXID, as of a time and now, next to the live
/// database; each copy equals the source at its point, and so does Litestream's restore
/// of the same replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_at_a_txid_a_time_and_latest_equal_the_source_by_both_tools() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = Live::start(live::config(dir)).await;
    let src = db(dir, G1);
    write(&src, &["insert t 40 300"]);
    let t1 = live.shipped(&src, 0).await;
    let at_t1 = checkpointed_bytes(&src);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(30)).await;
    write(&src, &["update t 10 300", "delete t 5", "insert t 30 900"]);
    let t2 = live.shipped(&src, t1).await;
    let at_t2 = checkpointed_bytes(&src);

    let job = live.restore(G1, json!({ "txid": t1 })).await;
    assert_eq!((job["state"].as_str(), job["txid"].as_u64()), (Some("queued"), Some(t1)), "{job}");
    assert!(job["restoredAt"].is_string(), "the state's time is known when accepted: {job}");
    let by_txid = live.finished(job["id"].as_str().unwrap()).await;
    let out = done(&by_txid);
    assert_eq!(out, dir.join("copies").join(format!("{G1}-txid-{t1:016x}.db")));
    same("copy at TXID", &std::fs::read(&out).unwrap(), &at_t1);

    let ts = humantime::format_rfc3339_millis(between).to_string();
    let job = live.restore(G1, json!({ "timestamp": ts, "integrityCheck": "quick" })).await;
    let by_time = live.finished(job["id"].as_str().unwrap()).await;
    let out = PathBuf::from(by_time["output"].as_str().unwrap());
    assert!(out.file_name().unwrap().to_string_lossy().starts_with(&format!("{G1}-at-")), "{by_time}");
    assert_eq!((by_time["state"].as_str(), by_time["txid"].as_u64()), (Some("done"), Some(t1)), "{by_time}");
    same("copy as of a time", &std::fs::read(&out).unwrap(), &at_t1);

    let latest = live.finished(live.restore(G1, json!({})).await["id"].as_str().unwrap()).await;
    assert_eq!(latest["point"], format!("TXID {t2:016x}"), "latest is pinned when accepted");
    same("copy of latest", &std::fs::read(done(&latest)).unwrap(), &at_t2);

    if let Some(theirs) = litestream_bytes(dir, G1, &["-txid", &format!("{t1:016x}")]) {
        same("litestream -txid", &theirs, &at_t1);
        same("litestream latest", &litestream_bytes(dir, G1, &[]).unwrap(), &at_t2);
    }
    // The same point again: its copy exists.
    let (status, text) = live.call("POST", &format!("/api/clients/{G1}/restores"), Some(&json!({ "txid": t1 }))).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("exists already"), "{text}");
    let listed = live.json(&format!("/api/clients/{G1}/restores")).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(live.json("/api/restores").await.as_array().unwrap().len(), 3);
    let copies = live::files_under(&dir.join("copies"));
    assert_eq!(copies.len(), 3, "three complete copies, no temporary file: {copies:?}");
    live.stop().await;
}

/// A fork is a new tenant: a fresh GUID database in a watch directory, which the fleet
/// registers and replicates like any other; writes to it replicate too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_is_a_new_tenant_that_the_fleet_replicates() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = Live::start(live::config(dir)).await;
    let src = db(dir, G1);
    write(&src, &["insert t 20 500"]);
    let t1 = live.shipped(&src, 0).await;
    let at_t1 = checkpointed_bytes(&src);
    write(&src, &["delete t 15"]);
    live.shipped(&src, t1).await;

    let job = live.restore(G1, json!({ "txid": t1, "target": "fork" })).await;
    let fork_id = job["forkId"].as_str().unwrap().to_owned();
    let job = live.finished(job["id"].as_str().unwrap()).await;
    let fork = done(&job);
    assert_eq!(fork, db(dir, &fork_id));
    same("fork", &std::fs::read(&fork).unwrap(), &at_t1);
    // The fleet registers it and ships it to its own replica; a write to it ships too.
    let f1 = live.shipped(&fork, 0).await;
    write(&fork, &["insert t 3 100"]);
    live.shipped(&fork, f1).await;
    let detail = live.json(&format!("/api/clients/{fork_id}")).await;
    assert_eq!(detail["client"]["status"], "active", "{detail}");
    let want = checkpointed_bytes(&fork);
    if let Some(theirs) = litestream_bytes(dir, &fork_id, &[]) {
        same("litestream restore of the fork's own replica", &theirs, &want);
    }
    // A fork into a directory that is not watched is refused.
    let (status, text) = live
        .call("POST", &format!("/api/clients/{G1}/restores"), Some(&json!({ "target": "fork", "watchDir": "/etc" })))
        .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("is not a watch directory"), "{text}");
    live.stop().await;
}

/// Every bad input of the issue, each with its status code and a message that says
/// what is wrong; meanwhile the other tenant keeps replicating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_specific_errors_and_the_fleet_keeps_replicating() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let live = Live::start(live::config(dir)).await;
    let (a, b) = (db(dir, G1), db(dir, G2));
    write(&a, &["insert t 10 200"]);
    write(&b, &["insert t 10 200"]);
    let ta = live.shipped(&a, 0).await;
    let mut tb = live.shipped(&b, 0).await;
    let post = |id: &str| format!("/api/clients/{id}/restores");
    let expect = |(status, text): (u16, String), want: u16, needle: &str| {
        assert_eq!(status, want, "{text}");
        assert!(text.contains(needle), "{needle:?} not in {text:?}");
    };

    // Who: an unknown tenant, a malformed id.
    expect(live.call("POST", &post(UNKNOWN), Some(&json!({}))).await, 404, &format!("no tenant {UNKNOWN}"));
    expect(live.call("POST", &post("a%20b"), Some(&json!({}))).await, 400, "malformed tenant id");
    // What: malformed bodies.
    expect(live.call_raw("POST", &post(G1), "{not json").await, 400, "");
    expect(live.call("POST", &post(G1), Some(&json!({ "target": "elsewhere" }))).await, 400, "");
    expect(live.call("POST", &post(G1), Some(&json!({ "txid": "2a" }))).await, 400, "");
    expect(live.call("POST", &post(G1), Some(&json!({ "path": "/etc/passwd" }))).await, 400, "");
    expect(
        live.call("POST", &post(G1), Some(&json!({ "txid": 1, "timestamp": "2026-01-01T00:00:00Z" }))).await,
        400,
        "not both",
    );
    expect(live.call("POST", &post(G1), Some(&json!({ "timestamp": "yesterday" }))).await, 400, "not an RFC 3339 time");
    expect(live.call("POST", &post(G1), Some(&json!({ "watchDir": "/tmp" }))).await, 400, "for target \"fork\" only");
    // When: outside the window, which the message states.
    let window = format!("TXID {:016x}", 1);
    let r = live.call("POST", &post(G1), Some(&json!({ "txid": ta + 5 }))).await;
    expect(r.clone(), 422, "outside the restore window");
    assert!(r.1.contains(&window) && r.1.contains(&format!("TXID {ta:016x}")), "{}", r.1);
    expect(
        live.call("POST", &post(G1), Some(&json!({ "timestamp": "2001-01-01T00:00:00Z" }))).await,
        422,
        "oldest state",
    );
    expect(
        live.call("POST", &post(G1), Some(&json!({ "timestamp": "2999-01-01T00:00:00Z" }))).await,
        422,
        "in the future",
    );
    // Jobs that do not exist or have finished.
    expect(live.call("GET", "/api/restores/nope", None).await, 404, "no restore job nope");
    expect(live.call("DELETE", "/api/restores/nope", None).await, 404, "no restore job nope");
    let job = live.finished(live.restore(G1, json!({})).await["id"].as_str().unwrap()).await;
    expect(
        live.call("DELETE", &format!("/api/restores/{}", job["id"].as_str().unwrap()), None).await,
        409,
        "already finished (done)",
    );
    // Where: the copy directory missing.
    std::fs::remove_dir(dir.join("copies")).unwrap_or_else(|_| std::fs::remove_dir_all(dir.join("copies")).unwrap());
    expect(live.call("POST", &post(G1), Some(&json!({ "txid": 1 }))).await, 409, "does not exist");
    std::fs::create_dir(dir.join("copies")).unwrap();
    // Tokens: missing or wrong.
    expect(live.call_as("POST", &post(G1), None, Some(&json!({}))).await, 401, "Unauthorized");
    expect(live.call_as("POST", &post(G1), Some("wrong"), Some(&json!({}))).await, 401, "Unauthorized");
    expect(live.call_as("DELETE", "/api/restores/x", Some("wrong"), None).await, 401, "Unauthorized");

    // A read-only restore directory (a read-only tmpfs refuses even root).
    if let Some(_ro) = Tmpfs::mount(&dir.join("copies"), "1m", true) {
        expect(live.call("POST", &post(G1), Some(&json!({ "txid": 1 }))).await, 409, "is not writable");
    }
    // A full disk mid-restore: the job fails saying why, and leaves nothing.
    write(&a, &["insert t 200 4000"]);
    let ta2 = live.shipped(&a, ta).await;
    if let Some(_small) = Tmpfs::mount(&dir.join("copies"), "256k", false) {
        let job = live.restore(G1, json!({ "txid": ta2 })).await;
        let job = live.finished(job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "failed", "{job}");
        let err = job["error"].as_str().unwrap();
        assert!(err.contains("No space left on device") && err.contains(".db.tmp"), "{err}");
        assert_eq!(live::files_under(&dir.join("copies")), Vec::<PathBuf>::new(), "no partial output");
    }
    // The other tenant replicated throughout.
    write(&b, &["insert t 5 200"]);
    tb = live.shipped(&b, tb).await;
    assert!(tb >= 2);
    live.stop().await;
}

/// Without `[http] token`, every state-changing request is refused with 403 naming the
/// setting; reads keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_writes_are_forbidden_and_say_which_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = live::config(tmp.path());
    c.http.token = None;
    let live = Live::start(c).await;
    let src = db(tmp.path(), G1);
    write(&src, &["insert t 1 10"]);
    live.shipped(&src, 0).await;
    for (method, path) in [("POST", format!("/api/clients/{G1}/restores")), ("DELETE", "/api/restores/x".to_owned())] {
        let (status, text) = live.call(method, &path, Some(&json!({}))).await;
        assert_eq!(status, 403, "{method} {path}: {text}");
        assert!(text.contains("[http] token") && text.contains("none is configured"), "{text}");
    }
    assert_eq!(live.json("/api/restores").await, json!([]), "reads are open, and nothing started");
    let (status, page) = live.call("GET", &format!("/tenants/{G1}"), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("id=\"restore-locked\"") && page.contains("[http] token"), "the form says why it is off");
    live.stop().await;
}

/// Cancellation over a slow link (what the storage sends back is paced): a running job
/// is cancelled mid-download and a queued one before it starts; neither leaves a file,
/// and at most `[restore] concurrency` jobs ever run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_jobs_leave_nothing_and_concurrency_is_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let s3 = S3Server::start();
    let slow = SlowLink::start(s3.addr(), 2 << 20);
    let mut c = live::on_s3(live::config(dir), &s3, "restores", slow.endpoint());
    c.restore.concurrency = 1;
    // Written before the daemon starts: one 12 MiB full-page file.
    let src = db(dir, G1);
    write(&src, &["big t 12"]);
    let live = Live::start(c).await;
    live.shipped(&src, 0).await;

    let first = live.restore(G1, json!({ "integrityCheck": "none" })).await;
    let (status, text) = live.call("POST", &format!("/api/clients/{G1}/restores"), Some(&json!({ "txid": 1 }))).await;
    assert_eq!(status, 409, "the same output as a job in progress: {text}");
    assert!(text.contains("in progress"), "{text}");
    let second = live.restore(G1, json!({ "integrityCheck": "none", "target": "fork" })).await;
    let (id1, id2) = (first["id"].as_str().unwrap().to_owned(), second["id"].as_str().unwrap().to_owned());
    // The first runs (and downloads), the second waits for the one slot.
    let started = Instant::now();
    loop {
        let jobs = live.json("/api/restores").await;
        let running = jobs.as_array().unwrap().iter().filter(|j| j["state"] == "running").count();
        assert!(running <= 1, "{jobs}");
        let one = jobs.as_array().unwrap().iter().find(|j| j["id"] == id1.as_str()).unwrap().clone();
        if one["progress"]["bytesDone"].as_u64().unwrap_or(0) > 0 {
            let two = jobs.as_array().unwrap().iter().find(|j| j["id"] == id2.as_str()).unwrap().clone();
            assert_eq!(two["state"], "queued", "{jobs}");
            break;
        }
        assert!(started.elapsed() < live::WAIT, "the first job never downloaded: {jobs}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in [&id2, &id1] {
        let (status, text) = live.call("DELETE", &format!("/api/restores/{id}"), None).await;
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["state"], "cancelled", "{v}");
    }
    assert_eq!(live::files_under(&dir.join("copies")), Vec::<PathBuf>::new(), "a cancelled job leaves no file");
    let fork = db(dir, second["forkId"].as_str().unwrap());
    assert!(!fork.exists() && !Path::new(&format!("{}.tmp", fork.display())).exists(), "nor does a cancelled fork");
    live.stop().await;
}

/// A job's changes reach `/api/events` (`mode=restores` carries only them): queued,
/// running, done, with its progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_their_progress_appear_on_the_event_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let live = Live::start(live::config(tmp.path())).await;
    let src = db(tmp.path(), G1);
    write(&src, &["insert t 50 1000"]);
    live.shipped(&src, 0).await;
    let mut sock = tokio::net::TcpStream::connect(live.addr).await.unwrap();
    let req = format!(
        "GET /api/events?mode=restores HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        live.addr,
        live::TOKEN
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The stream's first event (a summary) says it is open; then start the job.
    while !seen.contains("event: summary") {
        let n = tokio::time::timeout(live::WAIT, sock.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let id = live.restore(G1, json!({})).await["id"].as_str().unwrap().to_owned();
    let mut states: Vec<String> = Vec::new();
    let mut last = Value::Null;
    while states.last().map(String::as_str) != Some("done") {
        let n = tokio::time::timeout(live::WAIT, sock.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        for line in seen.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
            assert_ne!(v["kind"], "tenant", "mode=restores carries no tenant changes");
            if v["kind"] == "restore" && v["restore"]["id"] == id.as_str() {
                let s = v["restore"]["state"].as_str().unwrap().to_owned();
                if states.last() != Some(&s) {
                    states.push(s);
                }
                last = v["restore"].clone();
            }
        }
        seen = seen.rsplit_once("\n\n").map(|(_, rest)| rest.to_owned()).unwrap_or(seen);
    }
    assert_eq!(states, ["queued", "running", "done"]);
    assert_eq!(last["progress"]["bytesDone"], last["progress"]["bytesTotal"], "{last}");
    assert!(last["sha256"].is_string(), "{last}");
    live.stop().await;
}
