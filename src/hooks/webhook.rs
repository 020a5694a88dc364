//! Webhook deliveries: what a hook's `notify(channel, payload)` turns into.
//!
//! This module owns the bounded queue between a hook call and the network, and the
//! worker that empties it: an HTTP POST per notification to the URL configured for its
//! channel, the payload as the body (exactly as the hook wrote it, so a hook can speak
//! Slack's or any other receiver's JSON), with a timeout per attempt and retries with
//! doubling backoff. It must never block a hook call (a full queue drops the
//! notification and counts it), never follow a redirect, and never log a URL or a
//! header value (webhook URLs and tokens are secrets).
//!
//! Each POST carries `Content-Type` (from the config), the configured headers, and
//! `X-Litefleet-Channel`, `X-Litefleet-Event` (`register`/`unregister`),
//! `X-Litefleet-Tenant` and `X-Litefleet-Delivery` (a number unique within the process,
//! the same on every retry, so a receiver can drop duplicates).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::config::HooksConfig;
use super::{Event, HookError};

/// Deliveries in flight at once; the rest wait in the queue.
const MAX_IN_FLIGHT: usize = 8;
/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Counters of the notification pipeline, for the dashboard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NotifyStats {
    /// Notifications accepted into the queue.
    pub queued: u64,
    /// Delivered (a 2xx answer).
    pub delivered: u64,
    /// Attempts that failed and were retried.
    pub retried: u64,
    /// Given up after every retry failed.
    pub failed: u64,
    /// Refused because the queue was full.
    pub dropped: u64,
    /// Refused because no webhook has that channel name.
    pub unknown_channel: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicU64,
    delivered: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    unknown_channel: AtomicU64,
}

/// One notification on its way.
struct Delivery {
    /// Its number (the `X-Litefleet-Delivery` header).
    id: u64,
    /// The channel, a key of `webhooks`.
    channel: String,
    /// The body, as the hook wrote it.
    payload: String,
    /// The tenant whose call queued it.
    tenant: String,
    /// The call that queued it.
    event: Event,
}

/// A channel's endpoint, resolved at start-up (headers read from the environment).
struct Endpoint {
    /// The URL; never printed.
    url: String,
    /// Content-Type and configured headers.
    headers: HeaderMap,
    /// Per attempt.
    timeout: Duration,
    /// Attempts after the first.
    retries: u32,
    /// First pause between attempts.
    backoff: Duration,
}

/// The sending side of the queue, handed to every hook call. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    /// The queue; bounded.
    tx: mpsc::Sender<Delivery>,
    /// The configured channel names.
    channels: Arc<BTreeMap<String, Arc<Endpoint>>>,
    /// Shared with the worker.
    counters: Arc<Counters>,
    /// Next delivery number.
    next_id: Arc<AtomicU64>,
}

impl Outbox {
    /// Queues a notification; false (and counted) when the channel is unknown or the
    /// queue is full. Never waits.
    pub fn enqueue(&self, channel: &str, payload: String, tenant: &str, event: Event) -> bool {
        if !self.channels.contains_key(channel) {
            self.counters.unknown_channel.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                tenant,
                channel,
                "hook notification refused: no webhook named {channel:?} in [hooks.webhooks]"
            );
            return false;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let d = Delivery { id, channel: channel.to_owned(), payload, tenant: tenant.to_owned(), event };
        match self.tx.try_send(d) {
            Ok(()) => {
                self.counters.queued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(tenant, channel, "hook notification dropped: the webhook queue is full");
                false
            }
        }
    }

    /// The counters now.
    pub fn stats(&self) -> NotifyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NotifyStats {
            queued: get(&c.queued),
            delivered: get(&c.delivered),
            retried: get(&c.retried),
            failed: get(&c.failed),
            dropped: get(&c.dropped),
            unknown_channel: get(&c.unknown_channel),
        }
    }
}

/// Resolves every webhook (reading its header variables from the environment), builds
/// the HTTP client and starts the delivery worker, which stops on `shutdown`
/// (abandoning what is still queued).
pub fn start(cfg: &HooksConfig, shutdown: CancellationToken) -> Result<Outbox, HookError> {
    let mut channels = BTreeMap::new();
    for (name, w) in &cfg.webhooks {
        let mut headers = HeaderMap::new();
        let content_type = HeaderValue::from_str(&w.content_type).map_err(|_| HookError::Header {
            channel: name.clone(),
            header: "Content-Type".into(),
            why: "is not a valid header value".into(),
        })?;
        headers.insert(CONTENT_TYPE, content_type);
        for (header, var) in &w.headers_from_env {
            let bad = |why: String| HookError::Header { channel: name.clone(), header: header.clone(), why };
            let value = std::env::var(var).map_err(|_| bad(format!("environment variable {var} is not set")))?;
            let hname = HeaderName::from_bytes(header.as_bytes()).map_err(|_| bad("is not a header name".into()))?;
            let mut hvalue = HeaderValue::from_str(&value)
                .map_err(|_| bad(format!("the value of {var} is not a valid header value")))?;
            hvalue.set_sensitive(true);
            crate::redact::register(&value);
            headers.insert(hname, hvalue);
        }
        // A webhook URL often carries its credential (Slack's do).
        crate::redact::register(w.url.expose());
        let endpoint = Endpoint {
            url: w.url.expose().to_owned(),
            headers,
            timeout: w.timeout,
            retries: w.retries,
            backoff: w.backoff,
        };
        channels.insert(name.clone(), Arc::new(endpoint));
    }
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| HookError::Http(e.without_url().to_string()))?;
    let (tx, rx) = mpsc::channel(cfg.queue);
    let outbox = Outbox {
        tx,
        channels: Arc::new(channels),
        counters: Arc::new(Counters::default()),
        next_id: Arc::new(AtomicU64::new(1)),
    };
    tokio::spawn(worker(rx, client, outbox.channels.clone(), outbox.counters.clone(), shutdown));
    Ok(outbox)
}

/// Takes deliveries off the queue, at most [`MAX_IN_FLIGHT`] at a time.
async fn worker(
    mut rx: mpsc::Receiver<Delivery>,
    client: reqwest::Client,
    channels: Arc<BTreeMap<String, Arc<Endpoint>>>,
    counters: Arc<Counters>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let d = tokio::select! {
            _ = shutdown.cancelled() => break,
            d = rx.recv() => match d { Some(d) => d, None => break },
        };
        let Some(endpoint) = channels.get(&d.channel).cloned() else { continue };
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (client, counters, shutdown) = (client.clone(), counters.clone(), shutdown.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = deliver(&client, &endpoint, &d, &counters) => {}
            }
            drop(permit);
        });
    }
}

/// POSTs one notification until a 2xx answer or the retries are spent.
async fn deliver(client: &reqwest::Client, e: &Endpoint, d: &Delivery, counters: &Counters) {
    let mut pause = e.backoff;
    let mut last = String::new();
    for attempt in 0..=e.retries {
        if attempt > 0 {
            counters.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
        let sent = client
            .post(&e.url)
            .headers(e.headers.clone())
            .header("x-litefleet-channel", &d.channel)
            .header("x-litefleet-event", d.event.as_str())
            .header("x-litefleet-tenant", &d.tenant)
            .header("x-litefleet-delivery", d.id.to_string())
            .body(d.payload.clone())
            .timeout(e.timeout)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(channel = d.channel, tenant = d.tenant, delivery = d.id, attempt, "webhook delivered");
                return;
            }
            Ok(r) => last = format!("answered HTTP {}", r.status()),
            Err(err) => last = err.without_url().to_string(),
        }
        tracing::debug!(
            channel = d.channel,
            tenant = d.tenant,
            delivery = d.id,
            attempt,
            "webhook attempt failed: {last}"
        );
    }
    counters.failed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        channel = d.channel,
        tenant = d.tenant,
        delivery = d.id,
        "webhook notification given up after {} attempts: {last}",
        e.retries + 1
    );
}
