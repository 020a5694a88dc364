//! A notifying hook: posts a Slack-style message (`{"text": …}`) to the webhook
//! channel `tenants` when a tenant appears or goes, and labels the tenant with
//! whether the message was queued. It leaves the storage prefix alone.
//!
//! Config: `[hooks.webhooks.tenants]` with `url = "https://hooks.slack.com/services/…"`.

wit_bindgen::generate!({ path: "../../wit", world: "hook" });

use litefleet::hooks::host::{Level, log, notify};

/// The webhook channel this hook writes to.
const CHANNEL: &str = "tenants";

struct Notify;

impl Guest for Notify {
    fn on_register(tenant: Tenant) -> Result<Decision, String> {
        let text =
            format!("New tenant {} ({}), replicated to {}", tenant.id, tenant.database_path, tenant.default_prefix);
        let queued = notify(CHANNEL, &slack_message(&text));
        if !queued {
            log(Level::Warn, &format!("could not queue a notification on channel {CHANNEL:?}"));
        }
        let label = if queued { "yes" } else { "no" };
        Ok(Decision::Accept(Accept { prefix: None, labels: vec![("notified".to_owned(), label.to_owned())] }))
    }

    fn on_unregister(tenant: Tenant) -> Result<(), String> {
        let text = format!("Tenant {} is gone ({})", tenant.id, tenant.database_path);
        if notify(CHANNEL, &slack_message(&text)) {
            Ok(())
        } else {
            Err(format!("channel {CHANNEL:?} refused the message"))
        }
    }
}

/// `{"text": "<text>"}` with JSON string escaping.
fn slack_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str("{\"text\":\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str("\"}");
    out
}

export!(Notify);
