//! What the watcher watches, and changing it without a restart (SIGHUP).
//!
//! Watch directories get stable keys ([`DirKeys`]): an unchanged `[[watch]]` entry keeps
//! its key across a reload, so its tenants keep running; a changed one gets a new key,
//! so the watcher reports its files `Gone` and `Present` again and they are registered
//! under the new rules. Everything else that changed is kept as it runs and named in
//! the reload's answer, for a warning: it takes effect after a restart.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::Error;
use super::registry::Supervisor;
use crate::config::{Config, WatchConfig};
use crate::tenant::{Prefix, TenantId};
use crate::watch::{self, WatchDir};

/// Stable keys for watch directories across reloads.
#[derive(Default, Clone)]
pub(super) struct DirKeys {
    next: usize,
    by_key: BTreeMap<usize, WatchConfig>,
}

impl DirKeys {
    /// Keys for `wanted`: the old key of an entry that did not change (unless
    /// `rekey_all`), a new one otherwise. Forgets entries no longer wanted.
    pub(super) fn assign(&mut self, wanted: &[WatchConfig], rekey_all: bool) -> Vec<(usize, WatchConfig)> {
        let mut out = Vec::new();
        let mut kept = BTreeMap::new();
        for w in wanted {
            let existing =
                if rekey_all { None } else { self.by_key.iter().find(|(k, c)| *c == w && !kept.contains_key(*k)) };
            let key = match existing {
                Some((k, _)) => *k,
                None => {
                    self.next += 1;
                    self.next
                }
            };
            kept.insert(key, w.clone());
            out.push((key, w.clone()));
        }
        self.by_key = kept;
        out
    }

    /// The entry with this key.
    pub(super) fn get(&self, key: usize) -> Option<&WatchConfig> {
        self.by_key.get(&key)
    }

    /// The watcher's directories for `wanted` (see [`DirKeys::assign`]).
    fn watch_dirs(&mut self, wanted: &[WatchConfig], rekey_all: bool) -> Vec<WatchDir> {
        self.assign(wanted, rekey_all)
            .into_iter()
            .map(|(key, w)| WatchDir { recursive: w.recursive, extensions: w.extensions, ..WatchDir::new(key, w.dir) })
            .collect()
    }
}

/// The one database of a fleet of one: its canonical path, id and prefix.
#[derive(Clone)]
pub(super) struct SingleSpec {
    pub(super) path: PathBuf,
    pub(super) id: TenantId,
    pub(super) prefix: Prefix,
}

/// What to hand the watcher: the `[[watch]]` directories, or the single database's
/// folder (watching that one file name).
pub(super) fn watch_plan(config: &Config, keys: &mut DirKeys) -> Result<(Vec<WatchDir>, Option<SingleSpec>), Error> {
    let Some(single) = &config.single else {
        return Ok((keys.watch_dirs(&config.watch, false), None));
    };
    let bad = |reason: String| Error::Single { path: single.path.clone(), reason };
    let name = single.path.file_name().ok_or_else(|| bad("names no file".into()))?.to_owned();
    let parent = crate::durable::parent_dir(&single.path);
    let dir = std::fs::canonicalize(parent).map_err(|e| bad(format!("cannot use its folder: {e}")))?;
    let spec = SingleSpec { path: dir.join(&name), id: single.id(), prefix: single.prefix(&config.storage.root) };
    let wd = WatchDir { file: Some(name), ..WatchDir::new(0, dir) };
    Ok((vec![wd], Some(spec)))
}

/// The sections of a config that a reload cannot change while running.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let f = (&old.fleet, &new.fleet);
    let fleet = f.0.rescan_interval != f.1.rescan_interval
        || f.0.poll != f.1.poll
        || f.0.poll_interval != f.1.poll_interval
        || f.0.startup_concurrency != f.1.startup_concurrency
        || f.0.shutdown_timeout != f.1.shutdown_timeout
        || f.0.host_id != f.1.host_id
        || f.0.ownership != f.1.ownership
        || f.0.heartbeat_interval != f.1.heartbeat_interval
        || f.0.owner_expiry != f.1.owner_expiry;
    [
        ("storage", old.storage != new.storage),
        ("encryption", old.encryption != new.encryption),
        ("replication", old.replication != new.replication),
        ("http", old.http != new.http),
        ("log", old.log != new.log),
        ("lifecycle", old.lifecycle != new.lifecycle),
        ("validation", old.validation != new.validation),
        ("restore", old.restore != new.restore),
        ("hooks", old.hooks != new.hooks),
        ("fleet (except non_guid)", fleet),
    ]
    .into_iter()
    .filter(|(_, changed)| *changed)
    .map(|(name, _)| name.to_owned())
    .collect()
}

impl Supervisor {
    /// Applies what a reload can change now (watch directories, `non_guid`, the hook
    /// module's file) and returns the sections that need a restart.
    pub(super) async fn reload(&mut self, config: Config) -> Result<Vec<String>, Error> {
        let restart = needs_restart(&self.config, &config);
        if self.config.hooks == config.hooks
            && let Some(h) = &self.hooks
            && let Err(e) = h.reload().await
        {
            tracing::warn!("hook reload failed, the running hook stays: {}", crate::errors::Chain(&e));
        }
        if self.single.is_none() {
            let rekey = self.config.fleet.non_guid != config.fleet.non_guid;
            let mut keys = self.keys.clone();
            let dirs = keys.watch_dirs(&config.watch, rekey);
            let watcher = self.watcher.as_ref().ok_or(Error::Stopped)?.clone();
            // Events about the new directories may arrive before set_dirs returns:
            // switch the rules first, restore them if the watcher refuses.
            let old_keys = std::mem::replace(&mut self.keys, keys);
            let old_non_guid = std::mem::replace(&mut self.config.fleet.non_guid, config.fleet.non_guid);
            if let Err(e) = watcher.set_dirs(dirs).await {
                if matches!(e, watch::WatchError::Dir { .. } | watch::WatchError::NotADirectory { .. }) {
                    self.keys = old_keys;
                    self.config.fleet.non_guid = old_non_guid;
                }
                return Err(e.into());
            }
            self.shared.board.set_watch_dirs(config.watch.iter().map(|w| w.dir.clone()).collect());
            // A `non_guid` change rekeys every directory: the watcher reports each
            // file Gone then Present, and every name is classified again.
        }
        // Keep what needs a restart as it runs; take the rest.
        let old = &self.config;
        let next = Config {
            storage: old.storage.clone(),
            encryption: old.encryption.clone(),
            replication: old.replication.clone(),
            http: old.http.clone(),
            log: old.log.clone(),
            hooks: old.hooks.clone(),
            lifecycle: old.lifecycle.clone(),
            single: old.single.clone(),
            ..config
        };
        self.config = next;
        Ok(restart)
    }
}
