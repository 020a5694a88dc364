//! A tenant-naming hook: replicas of tenant `ab12…` go under `tenants/ab/ab12…`
//! instead of `databases/ab12…`, spreading tenants over 256 shard prefixes, with a
//! `shard` label on the dashboard. Ids that do not start with two hex digits (stems,
//! with `non_guid = "stem"`) keep litefleet's default prefix.

wit_bindgen::generate!({ path: "../../wit", world: "hook" });

use litefleet::hooks::host::{Level, log};

struct ShardPrefix;

impl Guest for ShardPrefix {
    fn on_register(tenant: Tenant) -> Result<Decision, String> {
        let shard = tenant.id.get(..2).filter(|s| s.bytes().all(|b| b.is_ascii_hexdigit()));
        let Some(shard) = shard else {
            log(Level::Info, &format!("{}: not a GUID, keeping {}", tenant.id, tenant.default_prefix));
            return Ok(Decision::Accept(Accept { prefix: None, labels: Vec::new() }));
        };
        let shard = shard.to_ascii_lowercase();
        let prefix = format!("tenants/{shard}/{}", tenant.id);
        log(Level::Debug, &format!("{} -> {prefix}", tenant.id));
        Ok(Decision::Accept(Accept { prefix: Some(prefix), labels: vec![("shard".to_owned(), shard)] }))
    }

    fn on_unregister(_tenant: Tenant) -> Result<(), String> {
        Ok(())
    }
}

export!(ShardPrefix);
