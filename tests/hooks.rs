//! Hooks, judged at module level: components built from WebAssembly text at test time
//! (no wasm toolchain needed) and the committed Rust examples, run through the same
//! bindings, limits and failure policy the daemon uses. Network traffic goes only to a
//! receiver on 127.0.0.1 started by the test.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::hook_wat::{Behaviour, component};
use litefleet::hooks::{Decision, HookTenant, Hooks, HooksConfig, OnError, Verdict, WebhookConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const GUID: &str = "ab12cd34-0000-4000-8000-00000000000f";
const OTHER: &str = "0f12cd34-0000-4000-8000-0000000000aa";

/// A storage prefix from text the test knows is valid.
fn pre(s: &str) -> litefleet::tenant::Prefix {
    litefleet::tenant::Prefix::parse(s).unwrap()
}

fn tenant(id: &str) -> HookTenant {
    HookTenant {
        id: litefleet::tenant::TenantId::from_stem(id).unwrap(),
        database_path: PathBuf::from(format!("/data/clients/{id}.db")),
        watch_dir: PathBuf::from("/data/clients"),
        default_prefix: pre(&format!("databases/{id}")),
    }
}

/// A temp dir holding `hook.wasm` built from `b`, and a config pointing at it.
fn setup(b: &Behaviour) -> (tempfile::TempDir, HooksConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hook.wasm");
    std::fs::write(&path, component(b)).unwrap();
    let mut cfg = HooksConfig::new(&path);
    cfg.watch = false;
    (dir, cfg)
}

async fn start(cfg: &HooksConfig) -> (Hooks, CancellationToken) {
    let shutdown = CancellationToken::new();
    let hooks = Hooks::start(cfg, shutdown.clone()).await.unwrap_or_else(|e| panic!("start: {e}"));
    (hooks, shutdown)
}

fn accepted(prefix: &str) -> Decision {
    Decision::Accept { prefix: pre(prefix), labels: BTreeMap::new() }
}

/// Polls `cond` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn accept_with_prefix_and_labels() {
    let labels = vec![("plan".to_owned(), "pro".to_owned()), ("region".to_owned(), "eu-west".to_owned())];
    let (_dir, cfg) = setup(&Behaviour::Prefix { prefix: "tenants/ab/x".into(), labels });
    let (hooks, _s) = start(&cfg).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    let want_labels =
        BTreeMap::from([("plan".to_owned(), "pro".to_owned()), ("region".to_owned(), "eu-west".to_owned())]);
    let want =
        Verdict { decision: Decision::Accept { prefix: pre("tenants/ab/x"), labels: want_labels }, hook_error: None };
    assert_eq!(got, want);
    assert_eq!(hooks.stats().calls, 1);
    assert_eq!(hooks.stats().failures, 0);
}

#[tokio::test]
async fn no_prefix_means_default_and_naming_hook_sees_the_tenant() {
    let (_d1, cfg) = setup(&Behaviour::AcceptDefault);
    let (hooks, _s) = start(&cfg).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    assert_eq!(got, Verdict { decision: accepted(&format!("databases/{GUID}")), hook_error: None });

    let (_d2, cfg) = setup(&Behaviour::PrefixWithId { base: "tenants/shard".into() });
    let (hooks, _s) = start(&cfg).await;
    for id in [GUID, OTHER] {
        let got = hooks.on_register(&tenant(id)).await;
        assert_eq!(got.decision, accepted(&format!("tenants/shard/{id}")));
        assert_eq!(got.hook_error, None);
    }
}

#[tokio::test]
async fn refuse_is_a_decision_not_an_error() {
    let (_dir, cfg) = setup(&Behaviour::Refuse("billing account closed".into()));
    let (hooks, _s) = start(&cfg).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    assert_eq!(
        got,
        Verdict { decision: Decision::Refuse { reason: "billing account closed".into() }, hook_error: None }
    );
    assert_eq!(hooks.stats().failures, 0);
}

/// Runs `b` under both policies; checks the verdict follows the policy, the message
/// contains `want_msg`, and `counter` of the stats went to 1.
async fn fails_under_both_policies(b: Behaviour, want_msg: &str, counter: fn(&litefleet::hooks::HookStats) -> u64) {
    for policy in [OnError::Default, OnError::Refuse] {
        let (_dir, mut cfg) = setup(&b);
        cfg.on_error = policy;
        cfg.fuel = u64::MAX; // the fuel budget has its own test
        let (hooks, _s) = start(&cfg).await;
        let got = hooks.on_register(&tenant(GUID)).await;
        let err = got.hook_error.clone().unwrap_or_else(|| panic!("{b:?}: no hook_error in {got:?}"));
        assert!(err.contains(want_msg), "{b:?}: message {err:?} lacks {want_msg:?}");
        match policy {
            OnError::Default => assert_eq!(got.decision, accepted(&format!("databases/{GUID}")), "{b:?}"),
            OnError::Refuse => assert_eq!(got.decision, Decision::Refuse { reason: err.clone() }, "{b:?}"),
        }
        let stats = hooks.stats();
        assert_eq!((stats.failures, counter(&stats)), (1, 1), "{b:?}: {stats:?}");
        assert!(stats.last_error.as_deref().is_some_and(|e| e.contains(want_msg)), "{stats:?}");
    }
}

#[tokio::test]
async fn err_result_follows_the_policy() {
    fails_under_both_policies(Behaviour::Err("no such customer".into()), "returned an error: no such customer", |s| {
        s.errors
    })
    .await;
}

#[tokio::test]
async fn trap_is_reported_and_follows_the_policy() {
    fails_under_both_policies(Behaviour::Trap, "unreachable", |s| s.traps).await;
}

#[tokio::test]
async fn memory_growth_past_the_cap_is_stopped() {
    fails_under_both_policies(Behaviour::GrowMemory, "memory cap exceeded", |s| s.memory_exceeded).await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_within_its_deadline() {
    fails_under_both_policies(Behaviour::Loop, "timed out", |s| s.timeouts).await;

    let (_dir, mut cfg) = setup(&Behaviour::Loop);
    cfg.fuel = u64::MAX; // only the wall clock can stop it
    let (hooks, _s) = start(&cfg).await;
    for timeout_ms in [100] {
        let started = Instant::now();
        let got = hooks.on_register(&tenant(GUID)).await;
        let took = started.elapsed();
        // Epoch interruption stops it a tick or two before the timeout; on a loaded
        // machine the epoch thread may be late and the host abandons the call instead.
        assert!(got.hook_error.as_deref().is_some_and(|e| e.contains("timed out")), "{got:?}");
        assert!(
            took >= Duration::from_millis(timeout_ms) - litefleet::hooks::EPOCH_TICK * 3,
            "stopped early: {took:?}"
        );
        assert!(took < Duration::from_millis(timeout_ms + 250), "stopped late: {took:?}");
    }
}

#[tokio::test]
async fn fuel_budget_stops_compute_before_the_deadline() {
    let (_dir, mut cfg) = setup(&Behaviour::Loop);
    cfg.fuel = 1_000_000;
    cfg.timeout = Duration::from_secs(5);
    let (hooks, _s) = start(&cfg).await;
    let started = Instant::now();
    let got = hooks.on_register(&tenant(GUID)).await;
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    assert!(
        got.hook_error.as_deref().is_some_and(|e| e.contains("out of fuel: fuel budget of 1000000 used up")),
        "{got:?}"
    );
    assert_eq!(hooks.stats().fuel_exhausted, 1);
}

#[tokio::test]
async fn a_misbehaving_call_leaves_other_tenants_working() {
    // One hook that loops for tenants starting with 'a', traps for 'b', grows memory for
    // 'c', and names everyone else; 30 concurrent registrations.
    let good = Behaviour::PrefixWithId { base: "ok".into() };
    let b = Behaviour::Split {
        first: b'a',
        bad: Box::new(Behaviour::Loop),
        good: Box::new(Behaviour::Split {
            first: b'b',
            bad: Box::new(Behaviour::Trap),
            good: Box::new(Behaviour::Split {
                first: b'c',
                bad: Box::new(Behaviour::GrowMemory),
                good: Box::new(good),
            }),
        }),
    };
    let (_dir, mut cfg) = setup(&b);
    cfg.on_error = OnError::Refuse;
    cfg.fuel = u64::MAX;
    let (hooks, _s) = start(&cfg).await;
    let ids: Vec<String> =
        (0..30).map(|i| format!("{}{i:07x}-0000-4000-8000-000000000000", ['a', 'b', 'c', 'd', 'e'][i % 5])).collect();
    let started = Instant::now();
    let verdicts = futures::future::join_all(ids.iter().map(|id| {
        let hooks = hooks.clone();
        let t = tenant(id);
        async move { hooks.on_register(&t).await }
    }))
    .await;
    for (id, v) in ids.iter().zip(&verdicts) {
        match id.as_bytes()[0] {
            b'a' | b'b' | b'c' => {
                assert!(matches!(v.decision, Decision::Refuse { .. }) && v.hook_error.is_some(), "{id}: {v:?}")
            }
            _ => assert_eq!(v, &Verdict { decision: accepted(&format!("ok/{id}")), hook_error: None }, "{id}"),
        }
    }
    let s = hooks.stats();
    assert_eq!((s.calls, s.timeouts, s.traps, s.memory_exceeded, s.failures), (30, 6, 6, 6, 18), "{s:?}");
    // Concurrent calls: six loops of 100 ms must not add up to 600 ms.
    assert!(started.elapsed() < Duration::from_millis(2000), "took {:?}", started.elapsed());
    // And the hook still answers afterwards.
    let after = hooks.on_register(&tenant(OTHER)).await;
    assert_eq!(after.decision, accepted(&format!("ok/{OTHER}")));
}

#[tokio::test]
async fn unusable_prefixes_are_refused() {
    let bad = [
        "../other-tenant",
        "/etc/passwd",
        "databases/../x",
        "a//b",
        "a/./b",
        ".",
        "",
        "white space",
        "tenants/ü",
        "a\\b",
    ];
    let long = "x".repeat(600);
    for prefix in bad.iter().copied().chain([long.as_str()]) {
        for policy in [OnError::Default, OnError::Refuse] {
            let (_dir, mut cfg) = setup(&Behaviour::Prefix { prefix: prefix.into(), labels: vec![] });
            cfg.on_error = policy;
            let (hooks, _s) = start(&cfg).await;
            let got = hooks.on_register(&tenant(GUID)).await;
            let err = got.hook_error.clone().unwrap_or_else(|| panic!("{prefix:?} accepted: {got:?}"));
            assert!(err.contains("unusable prefix"), "{prefix:?}: {err}");
            match policy {
                OnError::Default => assert_eq!(got.decision, accepted(&format!("databases/{GUID}"))),
                OnError::Refuse => assert!(matches!(got.decision, Decision::Refuse { .. })),
            }
            assert_eq!(hooks.stats().invalid, 1);
        }
    }
    // One trailing slash is trimmed, like everywhere else prefixes are accepted.
    let (_dir, cfg) = setup(&Behaviour::Prefix { prefix: "tenants/ab/".into(), labels: vec![] });
    let (hooks, _s) = start(&cfg).await;
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted("tenants/ab"));
}

#[tokio::test]
async fn unusable_labels_are_refused() {
    let too_many: Vec<(String, String)> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let cases = [
        (too_many, "17 labels"),
        (vec![("bad key".into(), "v".into())], "label key"),
        (vec![("k".into(), "line\nbreak".into())], "control characters"),
        (vec![("k".into(), "v".repeat(300))], "over 256"),
        (vec![("k".into(), "1".into()), ("k".into(), "2".into())], "twice"),
    ];
    for (labels, want) in cases {
        let (_dir, cfg) = setup(&Behaviour::Prefix { prefix: "p".into(), labels });
        let (hooks, _s) = start(&cfg).await;
        let got = hooks.on_register(&tenant(GUID)).await;
        assert!(got.hook_error.as_deref().is_some_and(|e| e.contains(want)), "want {want:?}: {got:?}");
        assert_eq!(got.decision, accepted(&format!("databases/{GUID}")));
    }
}

#[tokio::test]
async fn unregister_failures_are_counted_not_fatal() {
    let (_dir, cfg) = setup(&Behaviour::Trap);
    let (hooks, _s) = start(&cfg).await;
    hooks.on_unregister(&tenant(GUID)).await;
    let s = hooks.stats();
    assert_eq!((s.calls, s.failures, s.traps), (1, 1, 1), "{s:?}");

    let (_dir, cfg) = setup(&Behaviour::AcceptDefault);
    let (hooks, _s) = start(&cfg).await;
    hooks.on_unregister(&tenant(GUID)).await;
    assert_eq!((hooks.stats().calls, hooks.stats().failures), (1, 0));
}

#[tokio::test]
async fn a_bad_module_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.wasm");
    let err = Hooks::start(&HooksConfig::new(&missing), CancellationToken::new()).await.err().unwrap().to_string();
    assert!(err.contains("missing.wasm") && err.contains("cannot read"), "{err}");

    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let err = Hooks::start(&HooksConfig::new(&garbage), CancellationToken::new()).await.err().unwrap().to_string();
    assert!(err.contains("garbage.wasm") && err.contains("not a usable hook component"), "{err}");

    // A valid component of another world: it exports nothing we call.
    let other = dir.path().join("other.wasm");
    std::fs::write(&other, wat::parse_str("(component (import \"evil:net/socket\" (func)))").unwrap()).unwrap();
    let err = Hooks::start(&HooksConfig::new(&other), CancellationToken::new()).await.err().unwrap().to_string();
    assert!(err.contains("other.wasm") && err.contains("not a usable hook component"), "{err}");
}

/// Replaces a file the way deploy tools do: write beside it, then rename over it.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn replacing_the_module_renames_the_next_tenant_and_garbage_keeps_the_old() {
    let (dir, mut cfg) = setup(&Behaviour::PrefixWithId { base: "v1".into() });
    cfg.watch = true;
    let (hooks, _s) = start(&cfg).await;
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted(&format!("v1/{GUID}")));
    let loaded_at = hooks.stats().loaded_at;

    replace(&dir.path().join("hook.wasm"), &component(&Behaviour::PrefixWithId { base: "v2".into() }));
    eventually(Duration::from_secs(10), "the reload", || hooks.stats().reloads == 1).await;
    assert_eq!(hooks.on_register(&tenant(OTHER)).await.decision, accepted(&format!("v2/{OTHER}")));
    assert!(hooks.stats().loaded_at > loaded_at);

    // Garbage, then a component that does not fit our world: both refused, v2 stays.
    replace(&dir.path().join("hook.wasm"), b"\0asm garbage");
    eventually(Duration::from_secs(10), "the refused reload", || hooks.stats().reload_failures == 1).await;
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted(&format!("v2/{GUID}")));
    let last = hooks.stats().last_error.unwrap_or_default();
    assert!(last.contains("hook.wasm") && last.contains("previous version keeps running"), "{last}");

    // Written in place (truncate + write) rather than renamed: still picked up.
    std::fs::write(dir.path().join("hook.wasm"), component(&Behaviour::PrefixWithId { base: "v3".into() })).unwrap();
    eventually(Duration::from_secs(10), "the in-place reload", || hooks.stats().reloads == 2).await;
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted(&format!("v3/{GUID}")));
    assert_eq!(hooks.stats().reloads, 2);
}

/// Regression: notify reports our own open of the module as an event; reacting to it
/// made every reload trigger the next, reading the file every 150 ms forever.
#[tokio::test]
async fn the_watcher_does_not_react_to_its_own_reads() {
    let (dir, mut cfg) = setup(&Behaviour::PrefixWithId { base: "v1".into() });
    cfg.watch = true;
    let (hooks, _s) = start(&cfg).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(hooks.stats().reload_checks, 0, "{:?}", hooks.stats());
    replace(&dir.path().join("hook.wasm"), &component(&Behaviour::PrefixWithId { base: "v2".into() }));
    eventually(Duration::from_secs(10), "the reload", || hooks.stats().reloads == 1).await;
    let checks = hooks.stats().reload_checks;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hooks.stats().reload_checks, checks, "reads went on after the reload: {:?}", hooks.stats());
    assert!(checks <= 2, "{checks} reads for one change");
}

#[tokio::test]
async fn explicit_reload_reports_and_keeps_the_old_version() {
    let (dir, cfg) = setup(&Behaviour::PrefixWithId { base: "v1".into() });
    let (hooks, _s) = start(&cfg).await;
    assert!(!hooks.reload().await.unwrap(), "unchanged file must not reload");
    std::fs::write(dir.path().join("hook.wasm"), b"garbage").unwrap();
    let err = hooks.reload().await.unwrap_err().to_string();
    assert!(err.contains("not a usable hook component"), "{err}");
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted(&format!("v1/{GUID}")));
    std::fs::write(dir.path().join("hook.wasm"), component(&Behaviour::PrefixWithId { base: "v2".into() })).unwrap();
    assert!(hooks.reload().await.unwrap());
    assert_eq!(hooks.on_register(&tenant(GUID)).await.decision, accepted(&format!("v2/{GUID}")));
    let s = hooks.stats();
    assert_eq!((s.reloads, s.reload_failures), (1, 1));
}

/// What the receiver saw: one entry per request.
#[derive(Debug, Clone)]
struct Received {
    headers: BTreeMap<String, String>,
    body: String,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 that answers 500 to the first `fail_first`
/// requests and 200 afterwards (or never answers, with `hang`), recording every request.
async fn receiver(fail_first: usize, hang: bool) -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, length) = loop {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_string();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + length {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let headers = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                    .collect();
                let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
                let n = {
                    let mut seen = log.lock().unwrap();
                    seen.push(Received { headers, body });
                    seen.len()
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let status = if n <= fail_first { "500 Internal Server Error" } else { "200 OK" };
                let reply = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

fn webhook(url: &str) -> WebhookConfig {
    let mut cfg: WebhookConfig = toml::from_str(&format!("url = {url:?}")).unwrap();
    cfg.backoff = Duration::from_millis(50);
    cfg.timeout = Duration::from_millis(500);
    cfg
}

#[tokio::test]
async fn notification_reaches_the_receiver_with_retries() {
    let (url, seen) = receiver(2, false).await;
    let payload = r#"{"text":"tenant appeared"}"#;
    let (_dir, mut cfg) = setup(&Behaviour::Notify { channel: "ops".into(), payload: payload.into() });
    let mut ops = webhook(&url);
    // cargo sets CARGO_PKG_NAME for the test process: a variable we need not set.
    ops.headers_from_env = BTreeMap::from([("X-Token".to_owned(), "CARGO_PKG_NAME".to_owned())]);
    cfg.webhooks.insert("ops".into(), ops);
    let (hooks, _s) = start(&cfg).await;

    let got = hooks.on_register(&tenant(GUID)).await;
    let labels = BTreeMap::from([("notified".to_owned(), "yes".to_owned())]);
    assert_eq!(got.decision, Decision::Accept { prefix: pre(&format!("databases/{GUID}")), labels });
    eventually(Duration::from_secs(10), "the delivery", || hooks.stats().notifications.delivered == 1).await;

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "two 500s then a 200: {seen:?}");
    for r in &seen {
        assert_eq!(r.body, payload);
        assert_eq!(r.headers.get("content-type").map(String::as_str), Some("application/json"));
        assert_eq!(r.headers.get("x-litefleet-channel").map(String::as_str), Some("ops"));
        assert_eq!(r.headers.get("x-litefleet-event").map(String::as_str), Some("register"));
        assert_eq!(r.headers.get("x-litefleet-tenant").map(String::as_str), Some(GUID));
        assert_eq!(r.headers.get("x-token").map(String::as_str), Some(env!("CARGO_PKG_NAME")));
    }
    let ids: Vec<_> = seen.iter().map(|r| r.headers.get("x-litefleet-delivery").cloned()).collect();
    assert!(ids.iter().all(|i| i.is_some() && *i == ids[0]), "same delivery id on retries: {ids:?}");
    let n = hooks.stats().notifications;
    assert_eq!((n.queued, n.delivered, n.retried, n.failed, n.dropped), (1, 1, 2, 0, 0), "{n:?}");

    // Unregister notifies too, with its event name.
    hooks.on_unregister(&tenant(GUID)).await;
    eventually(Duration::from_secs(10), "the second delivery", || hooks.stats().notifications.delivered == 2).await;
}

#[tokio::test]
async fn notification_to_an_unknown_channel_or_a_dead_receiver() {
    let (_dir, cfg) = setup(&Behaviour::Notify { channel: "nowhere".into(), payload: "x".into() });
    let (hooks, _s) = start(&cfg).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    let labels = BTreeMap::from([("notified".to_owned(), "no".to_owned())]);
    assert_eq!(got.decision, Decision::Accept { prefix: pre(&format!("databases/{GUID}")), labels });
    assert_eq!(hooks.stats().notifications.unknown_channel, 1);

    // A receiver that never answers: every attempt times out, then it is given up.
    let (url, seen) = receiver(0, true).await;
    let (_dir, mut cfg) = setup(&Behaviour::Notify { channel: "ops".into(), payload: "x".into() });
    let mut ops = webhook(&url);
    ops.timeout = Duration::from_millis(200);
    ops.retries = 1;
    cfg.webhooks.insert("ops".into(), ops);
    let (hooks, _s) = start(&cfg).await;
    let started = Instant::now();
    hooks.on_register(&tenant(GUID)).await;
    assert!(started.elapsed() < Duration::from_millis(500), "the call must not wait for the webhook");
    eventually(Duration::from_secs(10), "giving up", || hooks.stats().notifications.failed == 1).await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_missing_header_variable_stops_the_start_without_its_value() {
    let (_dir, mut cfg) = setup(&Behaviour::AcceptDefault);
    let mut ops = webhook("http://127.0.0.1:9/");
    ops.headers_from_env = BTreeMap::from([("Authorization".to_owned(), "LITEFLEET_TEST_SURELY_UNSET_VAR".to_owned())]);
    cfg.webhooks.insert("ops".into(), ops);
    let err = Hooks::start(&cfg, CancellationToken::new()).await.err().unwrap().to_string();
    assert_eq!(
        err,
        "hooks.webhooks.ops: header Authorization: environment variable LITEFLEET_TEST_SURELY_UNSET_VAR is not set"
    );
    // And the URL (often a token) never shows in the config's Debug.
    assert!(!format!("{cfg:?}").contains("127.0.0.1:9"));
}

/// A committed example hook, built from `hooks/examples/<name>/` (see its README).
fn example(name: &str) -> HooksConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("hooks/examples/{name}/{name}.wasm"));
    let mut cfg = HooksConfig::new(path);
    cfg.watch = false;
    cfg
}

#[tokio::test]
async fn example_shard_prefix_names_tenants_by_shard() {
    let (hooks, _s) = start(&example("shard-prefix")).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    let labels = BTreeMap::from([("shard".to_owned(), "ab".to_owned())]);
    assert_eq!(
        got,
        Verdict { decision: Decision::Accept { prefix: pre(&format!("tenants/ab/{GUID}")), labels }, hook_error: None }
    );
    // A stem id keeps the default prefix.
    let got = hooks.on_register(&tenant("legacy-system")).await;
    assert_eq!(got, Verdict { decision: accepted("databases/legacy-system"), hook_error: None });
    hooks.on_unregister(&tenant(GUID)).await;
    assert_eq!(hooks.stats().failures, 0, "{:?}", hooks.stats());
}

#[tokio::test]
async fn example_notify_posts_a_slack_message() {
    let (url, seen) = receiver(1, false).await;
    let mut cfg = example("notify");
    cfg.webhooks.insert("tenants".into(), webhook(&url));
    let (hooks, _s) = start(&cfg).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    let labels = BTreeMap::from([("notified".to_owned(), "yes".to_owned())]);
    assert_eq!(
        got,
        Verdict { decision: Decision::Accept { prefix: pre(&format!("databases/{GUID}")), labels }, hook_error: None }
    );
    eventually(Duration::from_secs(10), "the delivery", || hooks.stats().notifications.delivered == 1).await;
    let body = seen.lock().unwrap().last().unwrap().body.clone();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    let want = format!("New tenant {GUID} (/data/clients/{GUID}.db), replicated to databases/{GUID}");
    assert_eq!(json, serde_json::json!({ "text": want }));

    // Without the channel configured, notify returns false and the hook says so.
    let (hooks, _s) = start(&example("notify")).await;
    let got = hooks.on_register(&tenant(GUID)).await;
    let labels = BTreeMap::from([("notified".to_owned(), "no".to_owned())]);
    assert_eq!(got.decision, Decision::Accept { prefix: pre(&format!("databases/{GUID}")), labels });
    hooks.on_unregister(&tenant(GUID)).await;
    assert_eq!(hooks.stats().errors, 1, "unregister returned err: {:?}", hooks.stats());
}

#[tokio::test]
async fn a_rust_guest_finds_no_files_environment_network_or_clock() {
    // A listener the guest is told to connect to: the sandbox must refuse the socket
    // before any connection reaches it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let db = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(db.path(), b"SQLite format 3\0").unwrap();
    let (hooks, _s) = start(&example("sandbox-probe")).await;
    let t = HookTenant {
        id: litefleet::tenant::TenantId::guid(GUID).unwrap(),
        database_path: db.path().to_path_buf(),
        watch_dir: PathBuf::from(&addr),
        default_prefix: pre(&format!("databases/{GUID}")),
    };
    let got = hooks.on_register(&t).await;
    let Decision::Refuse { reason } = got.decision else { panic!("{got:?}") };
    assert_eq!(reason, "fs=NotFound root=NotFound env=0 net=PermissionDenied clock=0 args=0");
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "the guest reached the listener");
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_without_waiting() {
    let (url, _seen) = receiver(0, true).await; // never answers: deliveries pile up
    let (_dir, mut cfg) = setup(&Behaviour::Notify { channel: "ops".into(), payload: "x".into() });
    cfg.queue = 1;
    let mut ops = webhook(&url);
    ops.timeout = Duration::from_secs(20);
    cfg.webhooks.insert("ops".into(), ops);
    let (hooks, _s) = start(&cfg).await;
    let mut refused = 0;
    for _ in 0..20 {
        let started = Instant::now();
        let got = hooks.on_register(&tenant(GUID)).await;
        assert!(started.elapsed() < Duration::from_millis(500), "notify waited for the queue");
        if let Decision::Accept { labels, .. } = &got.decision
            && labels.get("notified").map(String::as_str) == Some("no")
        {
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let n = hooks.stats().notifications;
    assert!(n.dropped >= 1, "{n:?}");
    assert_eq!((n.queued + n.dropped, n.dropped), (20, refused), "{n:?}");
}

/// The fleet calls one `Hooks` from many tasks at once (every registration is its own
/// task): concurrent calls each get their own tenant's answer, none is lost, and the
/// call counter sees every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_from_many_tasks_each_get_their_own_answer() {
    let (_dir, cfg) = setup(&Behaviour::PrefixWithId { base: "tenants".into() });
    let (hooks, _s) = start(&cfg).await;
    let ids: Vec<String> = (0..24).map(|i| format!("{i:08x}-1111-2222-3333-444455556666")).collect();
    let mut calls = tokio::task::JoinSet::new();
    for id in ids.clone() {
        let hooks = hooks.clone();
        calls.spawn(async move { (id.clone(), hooks.on_register(&tenant(&id)).await) });
    }
    let mut answered = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (id, verdict) = done.unwrap();
        assert_eq!(verdict.hook_error, None, "{id}");
        assert_eq!(verdict.decision, accepted(&format!("tenants/{id}")), "{id} got another tenant's answer");
        answered.push(id);
    }
    answered.sort();
    assert_eq!(answered, ids);
    assert_eq!(hooks.stats().calls, ids.len() as u64);
}

/// `restore --config <GUID>` goes through the hook's naming: a replica under a prefix the
/// hook gives (not ending in the id, outside the storage root) is found by id; a broken
/// module leaves only the listing, which cannot know that prefix.
#[tokio::test]
async fn a_tenant_is_found_by_id_under_the_prefix_its_hook_gives() {
    use litefleet::config::{Config, StorageUrl, WatchConfig};
    use litefleet::fleet::open_storage;
    use litefleet::inventory::{Error as FindError, find_tenant};

    const ID: &str = "0badcafe-1111-2222-3333-444455556666";
    let (dir, mut hook) =
        setup(&Behaviour::Prefix { prefix: "special/tenant-db".into(), labels: vec![("k".into(), "v".into())] });
    hook.watch = false;
    let clients = dir.path().join("clients");
    std::fs::create_dir_all(&clients).unwrap();
    let mut config = Config { watch: vec![WatchConfig::new(clients.clone())], ..Config::default() };
    config.storage.url = StorageUrl::File { path: dir.path().join("replicas") };
    config.hooks = Some(hook.clone());

    let err = find_tenant(&config, ID).await.err().unwrap();
    assert!(matches!(err, FindError::NotFound { .. }), "{err}");

    // Replicate the tenant where the hook names it.
    let db = clients.join(format!("{ID}.db"));
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap();
    let replica = open_storage(&config).unwrap().replica("special/tenant-db");
    let mut r = litefleet::replicate::Replicator::new(&db, replica, litefleet::replicate::Settings::default());
    r.shutdown().await.unwrap();
    assert_eq!(find_tenant(&config, ID).await.unwrap(), "special/tenant-db");

    // A module that does not load: a warning, and the listing alone finds nothing.
    std::fs::write(&hook.module, b"not a component").unwrap();
    let err = find_tenant(&config, ID).await.err().unwrap();
    assert!(matches!(err, FindError::NotFound { .. }), "{err}");
}
