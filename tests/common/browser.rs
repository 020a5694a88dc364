//! Headless Chromium driven over the DevTools protocol, for the dashboard tests: launch
//! it on a fresh profile, attach to a page, call methods, evaluate script, wait for a
//! condition, click like a user, take screenshots.
//!
//! Chromium comes from `LITEFLEET_CHROMIUM` or `PATH` (`scripts/test.sh` installs
//! Debian's `chromium`). Without it a test prints why and passes, unless `CI=true`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// Bound on every DevTools command and on each wait.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

pub fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LITEFLEET_CHROMIUM").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|d| ["chromium", "chromium-browser"].map(|n| d.join(n))).find(|p| p.is_file())
}

/// A Chromium process, killed when dropped.
pub struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A DevTools connection attached to one page.
pub struct Page {
    ws: tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    next_id: u64,
    session: Option<String>,
}

impl Page {
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params).await {
            Ok(v) => v,
            Err(e) => panic!("{method}: {e}"),
        }
    }

    /// [`Page::call`], with the protocol's error as `Err`.
    pub async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = &self.session {
            msg["sessionId"] = json!(s);
        }
        self.ws.send(Message::Text(msg.to_string().into())).await.unwrap();
        let reply = tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                let m = self.ws.next().await.expect("devtools closed").expect("devtools read");
                let Message::Text(t) = m else { continue };
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    return v;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{method}: no answer within {STEP_TIMEOUT:?}"));
        if reply["error"].is_null() { Ok(reply["result"].clone()) } else { Err(reply["error"].clone()) }
    }

    /// Evaluates `expr` in the page and returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self.call("Runtime.evaluate", json!({ "expression": expr, "returnByValue": true })).await;
        assert!(r["exceptionDetails"].is_null(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is `true`; returns how long that took. Exceptions and a
    /// navigation in progress count as "not yet" (the document may still be loading).
    pub async fn wait_for(&mut self, expr: &str, what: &str) -> Duration {
        let started = Instant::now();
        let guarded = format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return false; }} }})()");
        loop {
            // A page navigating (a link the test clicked) answers "Inspected target
            // navigated or closed" until the new document exists: not yet.
            let r = self.try_call("Runtime.evaluate", json!({ "expression": guarded, "returnByValue": true })).await;
            match r {
                Ok(v) if v["result"]["value"] == json!(true) => return started.elapsed(),
                Ok(_) => {}
                Err(e) if e["message"].as_str().is_some_and(|m| m.contains("navigated") || m.contains("context")) => {}
                Err(e) => panic!("{what}: {e}"),
            }
            assert!(started.elapsed() < STEP_TIMEOUT, "timed out waiting for {what} ({expr})");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

pub async fn launch(bin: &Path, profile: &Path) -> (Browser, Page) {
    let child = Command::new(bin)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=1600,1000",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let browser = Browser { child };
    let port_file = profile.join("DevToolsActivePort");
    let started = Instant::now();
    let text = loop {
        if let Ok(t) = std::fs::read_to_string(&port_file)
            && t.lines().count() >= 2
        {
            break t;
        }
        assert!(started.elapsed() < STEP_TIMEOUT, "chromium wrote no DevToolsActivePort");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut lines = text.lines();
    let (port, path) = (lines.next().unwrap().trim(), lines.next().unwrap().trim());
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}{path}")).await.unwrap();
    let mut page = Page { ws, next_id: 0, session: None };
    let target = page.call("Target.createTarget", json!({ "url": "about:blank" })).await;
    let attached = page.call("Target.attachToTarget", json!({ "targetId": target["targetId"], "flatten": true })).await;
    page.session = Some(attached["sessionId"].as_str().unwrap().to_owned());
    page.call("Page.enable", json!({})).await;
    page.call("Runtime.enable", json!({})).await;
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": false }),
    )
    .await;
    (browser, page)
}

/// Chromium, or `None` after printing why the test skips (a panic when `CI=true`).
pub fn chromium_or_skip(test: &str) -> Option<PathBuf> {
    let bin = chromium();
    if bin.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true and no chromium: install it (scripts/test.sh does) or set LITEFLEET_CHROMIUM");
        }
        eprintln!("SKIP {test}: chromium not found (set LITEFLEET_CHROMIUM or install Debian's chromium)");
    }
    bin
}

/// Standard base64 (DevTools returns screenshots in it).
pub fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let v: Vec<u32> = chunk.iter().map(|&c| u32::from(val(c))).collect();
        let n = v.iter().enumerate().fold(0u32, |acc, (i, &x)| acc | (x << (18 - 6 * i)));
        out.push((n >> 16) as u8);
        if v.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if v.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

impl Page {
    /// Clicks at the centre of the element `selector` finds (scrolled into view), with
    /// real mouse events; returns where (CSS pixels).
    pub async fn click(&mut self, selector: &str) -> (f64, f64) {
        let sel = serde_json::to_string(selector).unwrap();
        let at = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({sel}); e.scrollIntoView({{block: 'center'}}); \
                 const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (at[0].as_f64().unwrap(), at[1].as_f64().unwrap());
        self.click_at(x, y).await;
        (x, y)
    }

    /// A left click at (x, y) in CSS pixels of the viewport.
    pub async fn click_at(&mut self, x: f64, y: f64) {
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// A PNG screenshot of the whole page.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({ "format": "png", "captureBeyondViewport": true })).await;
        let png = base64_decode(shot["data"].as_str().unwrap());
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        png
    }
}
