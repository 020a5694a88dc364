//! The configuration as one start-up line (`--check`, the daemon's log), with every
//! credential and token shown only as "set" or "unset".

use super::Config;

impl Config {
    /// One line for the startup log: what will be watched and where replicas go, with
    /// every credential and token shown only as "set" or "unset".
    pub fn redacted_summary(&self) -> String {
        let s = &self.storage;
        let mut out = format!("storage={}", s.url);
        if !s.root.is_none() {
            out.push_str(&format!(" root={}", s.root));
        }
        if let Some(e) = &s.endpoint {
            out.push_str(&format!(" endpoint={e}"));
        }
        if let Some(r) = &s.region {
            out.push_str(&format!(" region={r}"));
        }
        if let Some(p) = s.force_path_style {
            out.push_str(&format!(" force_path_style={p}"));
        }
        let in_config = match s.url.scheme() {
            "s3" => Some(s.access_key_id.is_some() && s.secret_access_key.is_some()),
            "gs" => Some(s.credentials_file.is_some()),
            "sftp" => Some(s.ssh_key.is_some()),
            "abs" => Some(s.account_key.is_some() || s.sas_token.is_some() || s.connection_string.is_some()),
            _ => None,
        };
        if let Some(c) = in_config {
            out.push_str(if c { " credentials=from-config" } else { " credentials=from-environment" });
        }
        if let Some(e) = &self.encryption {
            let keys = match (&e.keys_file, &e.keys_env) {
                (Some(f), _) => f.display().to_string(),
                (None, Some(v)) => format!("${v}"),
                (None, None) => "none".to_owned(),
            };
            let id = e.key_id.as_deref().unwrap_or("(the only key)");
            out.push_str(&format!(" encryption=on keys={keys} key_id={id}"));
        }
        let watches: Vec<String> = self
            .watch
            .iter()
            .map(|w| {
                let mut d = w.dir.display().to_string();
                if w.recursive {
                    d.push_str(" (recursive)");
                }
                if let Some(p) = &w.prefix {
                    d.push_str(&format!(" (prefix {p})"));
                }
                d
            })
            .collect();
        if !watches.is_empty() {
            out.push_str(&format!(" watch=[{}]", watches.join(", ")));
        }
        if let Some(single) = &self.single {
            out.push_str(&format!(" single={} -> {}", single.path.display(), single.prefix(&s.root)));
        }
        let r = &self.replication;
        let f = &self.fleet;
        out.push_str(&format!(
            " sync_interval={} max_open_tenants={} max_parked_tenants={} idle_after={} state_dir={} page_encoding={:?} non_guid={:?} rescan_interval={}{} http={} token={} log={:?}/{}",
            humantime::format_duration(r.sync_interval),
            r.max_open_tenants,
            r.max_parked_tenants,
            humantime::format_duration(r.idle_after),
            r.state_dir.as_deref().map_or("none".into(), |d| d.display().to_string()),
            r.page_encoding,
            f.non_guid,
            humantime::format_duration(f.rescan_interval),
            if f.poll { " poll" } else { "" },
            self.http.listen,
            if self.http.token.is_some() { "set" } else { "unset" },
            self.log.format,
            self.log.level,
        ));
        if let Some(h) = &self.hooks {
            out.push_str(&format!(
                " hooks={} on_error={:?} webhooks={}",
                h.module.display(),
                h.on_error,
                h.webhooks.len()
            ));
        }
        out
    }
}
