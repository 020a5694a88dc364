//! The `[hooks]` table: which WebAssembly component runs on tenant register/unregister,
//! its limits, its failure policy, and the webhooks its `notify` calls may reach.
//!
//! This module owns the shape of that table, its defaults and its validation
//! ([`HooksConfig::problem`], called by `config.rs` so that mistakes carry a line and a
//! key like every other key). Like the rest of the config it never does I/O and never
//! reads the environment: header values are *names* of environment variables, read by
//! the hooks runtime when it starts, and a webhook URL (which often embeds a token, as
//! Slack's do) is a [`Secret`] that no `Debug`, `Display` or log line shows.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::redact::Secret;

/// Wall-clock budget of one hook call (the 100 ms).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// WebAssembly fuel per call: roughly one unit per instruction, so 50 M is some tens
/// of milliseconds of pure compute — far more than naming a tenant needs (the Rust
/// shard-prefix example needs 5–10 k per call), far less than a loop could burn.
pub const DEFAULT_FUEL: u64 = 50_000_000;
/// Linear memory a hook instance may grow to, in MiB (the 16 MiB).
pub const DEFAULT_MAX_MEMORY_MIB: u32 = 16;
/// Notifications waiting for delivery at most; more are dropped and counted.
pub const DEFAULT_QUEUE: usize = 1000;
/// Time allowed for one webhook POST (connect, send, response head).
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts after the first failed one before a notification is given up.
pub const DEFAULT_WEBHOOK_RETRIES: u32 = 3;
/// Pause before the first retry; doubles on each further retry (capped at 30 s).
pub const DEFAULT_WEBHOOK_BACKOFF: Duration = Duration::from_millis(500);
/// Longest wall-clock budget accepted: a hook sits on the path of every new tenant.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest memory cap accepted, in MiB.
pub const MAX_MEMORY_MIB: u32 = 1024;
/// Most retries accepted for one notification.
pub const MAX_WEBHOOK_RETRIES: u32 = 20;

/// `[hooks]`: a WebAssembly component called when a tenant appears or goes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// The component (`.wasm`), relative to the current directory unless absolute. It
    /// is watched: a new version is compiled off the hot path and swapped in; one that
    /// does not compile or instantiate leaves the old one running.
    pub module: PathBuf,
    /// What a failed call (trap, timeout, memory or fuel exhausted, an `err`, an
    /// invalid prefix or label) means for the tenant.
    #[serde(default)]
    pub on_error: OnError,
    /// Wall-clock budget of one call, enforced by epoch interruption.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Fuel (about one unit per WebAssembly instruction) per call.
    #[serde(default = "default_fuel")]
    pub fuel: u64,
    /// Linear memory cap of the hook, in MiB; growing past it stops the call.
    #[serde(default = "default_max_memory_mib")]
    pub max_memory_mib: u32,
    /// Reload the module when its file changes.
    #[serde(default = "default_true")]
    pub watch: bool,
    /// Notifications waiting for delivery at most (over all channels); more are dropped
    /// and counted.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Webhooks by channel name, as `[hooks.webhooks.<channel>]` tables; a hook's
    /// `notify(channel, payload)` reaches only these.
    #[serde(default)]
    pub webhooks: BTreeMap<String, WebhookConfig>,
}

/// What a failed hook call means for the tenant (`hooks.on_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Replicate under the default prefix and log the failure (backups come first).
    #[default]
    Default,
    /// Do not replicate the tenant; its status is `error` with the hook's message.
    Refuse,
}

/// One webhook (`[hooks.webhooks.<channel>]`): where a channel's notifications go.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the payload is POSTed to. Never printed: webhook
    /// URLs often carry their token.
    #[serde(deserialize_with = "de_url")]
    pub url: Secret,
    /// Extra request headers, each taken from an environment variable at start-up:
    /// `{ Authorization = "SLACK_AUTH" }` sends `Authorization: <value of $SLACK_AUTH>`.
    /// Values are never logged; a variable that is unset stops the start.
    #[serde(default)]
    pub headers_from_env: BTreeMap<String, String>,
    /// `Content-Type` of the POST (the payload is sent as the body, as the hook wrote it).
    #[serde(default = "default_content_type")]
    pub content_type: String,
    /// Time allowed for one attempt.
    #[serde(default = "default_webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts after a failed first one (connection error, timeout, or a status other
    /// than 2xx) before the notification is given up and logged.
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Pause before the first retry; doubles each time, at most 30 s.
    #[serde(default = "default_webhook_backoff", with = "humantime_serde")]
    pub backoff: Duration,
}

impl HooksConfig {
    /// A config for `module` with every other key at its default.
    pub fn new(module: impl Into<PathBuf>) -> HooksConfig {
        HooksConfig {
            module: module.into(),
            on_error: OnError::default(),
            timeout: DEFAULT_TIMEOUT,
            fuel: DEFAULT_FUEL,
            max_memory_mib: DEFAULT_MAX_MEMORY_MIB,
            watch: true,
            queue: DEFAULT_QUEUE,
            webhooks: BTreeMap::new(),
        }
    }

    /// The first mistake, as (key below `hooks.`, message): `("timeout", "must be …")`.
    /// `config.rs` turns it into `file:line: hooks.timeout: must be …`.
    pub fn problem(&self) -> Option<(String, String)> {
        let p = |k: &str, m: String| Some((k.to_owned(), m));
        if self.module.as_os_str().is_empty() {
            return p("module", "is empty (the path of a .wasm component)".into());
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return p(
                "timeout",
                format!("must be longer than 0s and at most {}", humantime::format_duration(MAX_TIMEOUT)),
            );
        }
        if self.fuel == 0 {
            return p("fuel", "must be at least 1".into());
        }
        if self.max_memory_mib == 0 || self.max_memory_mib > MAX_MEMORY_MIB {
            return p("max_memory_mib", format!("must be 1 to {MAX_MEMORY_MIB}"));
        }
        if self.queue == 0 {
            return p("queue", "must be at least 1".into());
        }
        for (name, w) in &self.webhooks {
            let key = |k: &str| format!("webhooks.{name}.{k}");
            if !is_channel_name(name) {
                return Some((
                    format!("webhooks.{name}"),
                    format!("channel name {name:?} must be 1 to 64 of A-Z a-z 0-9 . _ -"),
                ));
            }
            for (header, var) in &w.headers_from_env {
                if !is_header_name(header) {
                    return Some((key("headers_from_env"), format!("{header:?} is not an HTTP header name")));
                }
                if !is_env_name(var) {
                    return Some((
                        key("headers_from_env"),
                        format!("{header}: {var:?} is not an environment variable name (like \"SLACK_AUTH\")"),
                    ));
                }
            }
            if w.content_type.is_empty() || w.content_type.chars().any(|c| c.is_control()) {
                return Some((key("content_type"), format!("{:?} is not a media type", w.content_type)));
            }
            if w.timeout.is_zero() {
                return Some((key("timeout"), "must be longer than 0s".into()));
            }
            if w.retries > MAX_WEBHOOK_RETRIES {
                return Some((key("retries"), format!("must be at most {MAX_WEBHOOK_RETRIES}")));
            }
        }
        None
    }

    /// The memory cap in bytes.
    pub fn max_memory_bytes(&self) -> usize {
        (self.max_memory_mib as usize) << 20
    }
}

/// A channel name: what a hook passes to `notify`.
pub fn is_channel_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// An HTTP header name (RFC 9110 token characters).
fn is_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    let u = String::deserialize(d)?;
    // The message must not echo the URL: it may hold a token.
    let parsed = url::Url::parse(&u).map_err(|e| serde::de::Error::custom(format!("is not a URL ({e})")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(serde::de::Error::custom("must be an http:// or https:// URL with a host"));
    }
    Ok(Secret::new(u))
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_fuel() -> u64 {
    DEFAULT_FUEL
}
fn default_max_memory_mib() -> u32 {
    DEFAULT_MAX_MEMORY_MIB
}
fn default_true() -> bool {
    true
}
fn default_queue() -> usize {
    DEFAULT_QUEUE
}
fn default_content_type() -> String {
    "application/json".to_owned()
}
fn default_webhook_timeout() -> Duration {
    DEFAULT_WEBHOOK_TIMEOUT
}
fn default_webhook_retries() -> u32 {
    DEFAULT_WEBHOOK_RETRIES
}
fn default_webhook_backoff() -> Duration {
    DEFAULT_WEBHOOK_BACKOFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_channels_headers_and_variables() {
        for ok in ["ops", "slack.tenants", "a_b-c", &"x".repeat(64)] {
            assert!(is_channel_name(ok), "{ok:?}");
        }
        for bad in ["", "a b", "ü", "a/b", &"x".repeat(65)] {
            assert!(!is_channel_name(bad), "{bad:?}");
        }
        assert!(is_header_name("Authorization") && is_header_name("X-Api-Key"));
        assert!(!is_header_name("") && !is_header_name("Bad Header") && !is_header_name("a:b"));
        assert!(is_env_name("SLACK_AUTH") && is_env_name("_x1"));
        assert!(!is_env_name("") && !is_env_name("1X") && !is_env_name("A-B") && !is_env_name("A B"));
    }

    #[test]
    fn defaults_are_valid_and_limits_are_checked() {
        let c = HooksConfig::new("h.wasm");
        assert_eq!(c.problem(), None);
        assert_eq!(c.max_memory_bytes(), 16 << 20);
        let with = |f: &dyn Fn(&mut HooksConfig)| {
            let mut c = HooksConfig::new("h.wasm");
            f(&mut c);
            c.problem().map(|(k, _)| k)
        };
        assert_eq!(with(&|c| c.module = PathBuf::new()), Some("module".into()));
        assert_eq!(with(&|c| c.timeout = Duration::from_secs(11)), Some("timeout".into()));
        assert_eq!(with(&|c| c.fuel = 0), Some("fuel".into()));
        assert_eq!(with(&|c| c.max_memory_mib = 2048), Some("max_memory_mib".into()));
        assert_eq!(with(&|c| c.queue = 0), Some("queue".into()));
        let webhook = |f: &dyn Fn(&mut WebhookConfig)| {
            with(&|c| {
                let mut w: WebhookConfig = toml::from_str("url = \"https://example.com/x\"").unwrap();
                f(&mut w);
                c.webhooks.insert("ops".into(), w);
            })
        };
        assert_eq!(webhook(&|_| {}), None);
        assert_eq!(webhook(&|w| w.retries = 21), Some("webhooks.ops.retries".into()));
        assert_eq!(webhook(&|w| w.timeout = Duration::ZERO), Some("webhooks.ops.timeout".into()));
        assert_eq!(webhook(&|w| w.content_type = "a\nb".into()), Some("webhooks.ops.content_type".into()));
    }

    #[test]
    fn url_errors_do_not_echo_the_url() {
        for url in ["ftp://host/token123", "not a url token123", "https://"] {
            // The message proper (config.rs shows it with the file's line, not the line's text).
            let err = toml::from_str::<WebhookConfig>(&format!("url = {url:?}")).unwrap_err().message().to_owned();
            assert!(!err.contains("token123"), "{err}");
            assert!(err.contains("URL"), "{err}");
        }
    }
}
