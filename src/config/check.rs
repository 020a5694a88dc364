//! Validation of a parsed [`Config`]: every semantic mistake named by its key, in file
//! order as far as possible. Nothing here does I/O: directories need not exist yet.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{Config, MAX_BUSY_TIMEOUT, MAX_DURATION, MIN_RESCAN_INTERVAL, Problem, problem};

impl Config {
    /// The first semantic mistake, in file order as far as possible.
    pub(super) fn first_problem(&self) -> Option<Problem> {
        self.watch_problem()
            .or_else(|| self.storage_problem())
            .or_else(|| self.encryption_problem())
            .or_else(|| self.replication_problem())
            .or_else(|| self.fleet_problem())
            .or_else(|| self.log_problem())
            .or_else(|| self.lifecycle_problem())
            .or_else(|| self.validation_problem())
            .or_else(|| self.restore_problem())
            .or_else(|| self.standby_problem())
            .or_else(|| self.hooks_problem())
            .or_else(|| self.duration_problem())
    }

    fn encryption_problem(&self) -> Option<Problem> {
        let e = self.encryption.as_ref()?;
        match (&e.keys_file, &e.keys_env) {
            (None, None) => {
                return Some(problem(
                    "encryption",
                    "names no keyring: set keys_file (a file) or keys_env (an environment variable)",
                ));
            }
            (Some(_), Some(_)) => return Some(problem("encryption.keys_env", "set keys_file or keys_env, not both")),
            (Some(f), None) if f.as_os_str().is_empty() => return Some(problem("encryption.keys_file", "is empty")),
            (None, Some(v)) if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                return Some(problem(
                    "encryption.keys_env",
                    format!("{v:?} is not an environment variable name (like \"LITEFLEET_KEYS\")"),
                ));
            }
            _ => {}
        }
        let id = e.key_id.as_deref()?;
        crate::storage::crypt::check_key_id(id).err().map(|m| problem("encryption.key_id", m))
    }

    /// Durations past what the daemon can put on a clock: `"18446744073709551615s"` or
    /// `"500000000000 years"` parse, then panicked at start-up or in a task (an `Instant`
    /// or a multiple overflowed; SQLite's busy timeout is an `int` of milliseconds).
    /// Found by `tests/fuzz.rs`.
    fn duration_problem(&self) -> Option<Problem> {
        let (r, f, l) = (&self.replication, &self.fleet, &self.lifecycle);
        let mut all = vec![
            ("replication.sync_interval".to_owned(), r.sync_interval, MAX_DURATION),
            ("replication.checkpoint_interval".to_owned(), r.checkpoint_interval, MAX_DURATION),
            ("replication.busy_timeout".to_owned(), r.busy_timeout, MAX_BUSY_TIMEOUT),
            ("replication.idle_after".to_owned(), r.idle_after, MAX_DURATION),
            ("fleet.rescan_interval".to_owned(), f.rescan_interval, MAX_DURATION),
            ("fleet.shutdown_timeout".to_owned(), f.shutdown_timeout, MAX_DURATION),
            ("fleet.poll_interval".to_owned(), f.poll_interval, MAX_DURATION),
            ("lifecycle.snapshot_interval".to_owned(), l.snapshot_interval, MAX_DURATION),
            ("lifecycle.snapshot_retention".to_owned(), l.snapshot_retention, MAX_DURATION),
            ("lifecycle.l0_retention".to_owned(), l.l0_retention, MAX_DURATION),
            ("validation.interval".to_owned(), self.validation.interval, MAX_DURATION),
            ("change_log.interval".to_owned(), self.change_log.interval, MAX_DURATION),
            ("change_log.retention".to_owned(), self.change_log.retention, MAX_DURATION),
            ("standby.poll_interval".to_owned(), self.standby.poll_interval, MAX_DURATION),
            ("standby.scan_interval".to_owned(), self.standby.scan_interval, MAX_DURATION),
            ("standby.full_scan_interval".to_owned(), self.standby.full_scan_interval, MAX_DURATION),
        ];
        all.extend(l.levels.iter().enumerate().map(|(i, d)| (format!("lifecycle.levels[{i}]"), *d, MAX_DURATION)));
        let (key, _, max) = all.into_iter().find(|(_, d, max)| d > max)?;
        Some(problem(key, format!("is longer than {} (the most it may be)", humantime::format_duration(max))))
    }

    fn watch_problem(&self) -> Option<Problem> {
        // A standby's config may name no watch directory (it watches the storage).
        if self.watch.is_empty() && self.single.is_none() && self.standby.dir.is_none() {
            return Some(problem(
                "watch",
                "no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")",
            ));
        }
        let normalized: Vec<PathBuf> = self.watch.iter().map(|w| normalize(&w.dir)).collect();
        for (i, w) in self.watch.iter().enumerate() {
            if w.dir.as_os_str().is_empty() {
                return Some(problem(format!("watch[{i}].dir"), "is empty"));
            }
            for (j, other) in self.watch.iter().enumerate().take(i) {
                let (mine, theirs) = (&normalized[i], &normalized[j]);
                if mine == theirs {
                    return Some(problem(
                        format!("watch[{i}].dir"),
                        format!("{:?} is the same directory as watch[{j}] ({:?})", w.dir, other.dir),
                    ));
                }
                let nested = (other.recursive && mine.starts_with(theirs)) || (w.recursive && theirs.starts_with(mine));
                if nested {
                    return Some(problem(
                        format!("watch[{i}].dir"),
                        format!(
                            "{:?} overlaps watch[{j}] ({:?}) and one of them is recursive; a database would be watched twice",
                            w.dir, other.dir
                        ),
                    ));
                }
            }
        }
        None
    }

    fn storage_problem(&self) -> Option<Problem> {
        let s = &self.storage;
        const S3: &[&str] = &["s3"];
        // Which services each key means something to.
        let keys: [(&str, bool, &[&str]); 11] = [
            ("endpoint", s.endpoint.is_some(), &["s3", "gs", "abs"]),
            ("region", s.region.is_some(), S3),
            ("force_path_style", s.force_path_style.is_some(), S3),
            ("access_key_id", s.access_key_id.is_some(), S3),
            ("secret_access_key", s.secret_access_key.is_some(), S3),
            ("credentials_file", s.credentials_file.is_some(), &["gs"]),
            ("account_key", s.account_key.is_some(), &["abs"]),
            ("sas_token", s.sas_token.is_some(), &["abs"]),
            ("connection_string", s.connection_string.is_some(), &["abs"]),
            ("ssh_key", s.ssh_key.is_some(), &["sftp"]),
            ("strict_host_key_checking", s.strict_host_key_checking.is_some(), &["sftp"]),
        ];
        let scheme = s.url.scheme();
        if let Some((key, _, schemes)) = keys.iter().find(|(_, set, schemes)| *set && !schemes.contains(&scheme)) {
            let names: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            let names = match names.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
                None => String::new(),
            };
            return Some(problem(
                format!("storage.{key}"),
                format!("only applies to {names} urls (storage.url is \"{}\")", s.url),
            ));
        }
        let azure = [
            ("connection_string", s.connection_string.is_some()),
            ("sas_token", s.sas_token.is_some()),
            ("account_key", s.account_key.is_some()),
        ];
        if let [(_, _), (second, _), ..] = azure.iter().filter(|(_, set)| *set).collect::<Vec<_>>()[..] {
            return Some(problem(
                format!("storage.{second}"),
                "set one of connection_string, sas_token and account_key (they are alternatives)",
            ));
        }
        match (&s.access_key_id, &s.secret_access_key) {
            (Some(_), None) => Some(problem(
                "storage.access_key_id",
                "is set but storage.secret_access_key is not (set both, or neither to use AWS_* variables)",
            )),
            (None, Some(_)) => Some(problem(
                "storage.secret_access_key",
                "is set but storage.access_key_id is not (set both, or neither to use AWS_* variables)",
            )),
            _ => None,
        }
    }

    fn replication_problem(&self) -> Option<Problem> {
        let r = &self.replication;
        let positive = [("sync_interval", r.sync_interval), ("idle_after", r.idle_after)];
        if let Some((key, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Some(problem(format!("replication.{key}"), "must be longer than 0s"));
        }
        if r.min_checkpoint_pages == 0 {
            return Some(problem("replication.min_checkpoint_pages", "must be at least 1"));
        }
        if r.truncate_pages != 0 && r.truncate_pages < r.min_checkpoint_pages {
            return Some(problem(
                "replication.truncate_pages",
                format!(
                    "{} is below min_checkpoint_pages ({}); use a larger value, or 0 to disable",
                    r.truncate_pages, r.min_checkpoint_pages
                ),
            ));
        }
        if r.max_open_tenants == 0 {
            return Some(problem(
                "replication.max_open_tenants",
                "must be at least 1 (it bounds open connections, it does not disable replication)",
            ));
        }
        let Some(state_dir) = &r.state_dir else { return None };
        if state_dir.as_os_str().is_empty() {
            return Some(problem("replication.state_dir", "is empty"));
        }
        let (i, w) = self.watch_holding(state_dir)?;
        Some(problem(
            "replication.state_dir",
            format!("{:?} is inside watch[{i}] ({:?}); keep local state away from tenant databases", state_dir, w.dir),
        ))
    }

    /// The watch directory whose tenants would include files in `dir` (the directory
    /// itself, or inside a recursive one).
    fn watch_holding(&self, dir: &Path) -> Option<(usize, &super::WatchConfig)> {
        let inner = normalize(dir);
        self.watch.iter().enumerate().find(|(_, w)| {
            let watched = normalize(&w.dir);
            inner == watched || (inner.starts_with(&watched) && w.recursive)
        })
    }

    fn restore_problem(&self) -> Option<Problem> {
        let r = &self.restore;
        if r.concurrency == 0 {
            return Some(problem("restore.concurrency", "must be at least 1"));
        }
        let dir = r.dir.as_ref()?;
        if dir.as_os_str().is_empty() {
            return Some(problem("restore.dir", "is empty (leave it out to refuse copy restores)"));
        }
        let (i, w) = self.watch_holding(dir)?;
        Some(problem(
            "restore.dir",
            format!("{:?} is inside watch[{i}] ({:?}); a restored copy there would become a tenant", dir, w.dir),
        ))
    }

    fn fleet_problem(&self) -> Option<Problem> {
        let f = &self.fleet;
        if f.rescan_interval < MIN_RESCAN_INTERVAL {
            return Some(problem(
                "fleet.rescan_interval",
                format!("must be at least {}", humantime::format_duration(MIN_RESCAN_INTERVAL)),
            ));
        }
        if f.startup_concurrency == 0 {
            return Some(problem("fleet.startup_concurrency", "must be at least 1"));
        }
        if f.poll_interval.is_zero() {
            return Some(problem("fleet.poll_interval", "must be longer than 0s"));
        }
        if !crate::ownership::valid_host_id(&f.host_id) {
            return Some(problem(
                "fleet.host_id",
                format!("{:?} must be 1 to 64 letters, digits, '.', '_' or '-'", f.host_id),
            ));
        }
        if f.heartbeat_interval.is_zero() {
            return Some(problem("fleet.heartbeat_interval", "must be longer than 0s"));
        }
        if f.owner_expiry < f.heartbeat_interval * 3 {
            return Some(problem(
                "fleet.owner_expiry",
                format!(
                    "must be at least three heartbeat intervals ({}): a host is taken for dead after missing that many",
                    humantime::format_duration(f.heartbeat_interval * 3)
                ),
            ));
        }
        None
    }

    fn lifecycle_problem(&self) -> Option<Problem> {
        let l = &self.lifecycle;
        if l.levels.len() > crate::lifecycle::MAX_COMPACTION_LEVEL as usize {
            return Some(problem(
                "lifecycle.levels",
                format!(
                    "{} levels given; at most {} (level 9 is for snapshots)",
                    l.levels.len(),
                    crate::lifecycle::MAX_COMPACTION_LEVEL
                ),
            ));
        }
        if let Some(i) = l.levels.iter().position(|d| d.is_zero()) {
            return Some(problem(format!("lifecycle.levels[{i}]"), "must be longer than 0s"));
        }
        if l.l0_retention.is_zero() && l.retention {
            return Some(problem("lifecycle.l0_retention", "must be longer than 0s"));
        }
        if l.snapshot_retention.is_zero() && l.retention {
            return Some(problem(
                "lifecycle.snapshot_retention",
                "must be longer than 0s (the newest snapshot is always kept)",
            ));
        }
        if l.concurrency == 0 {
            return Some(problem("lifecycle.concurrency", "must be at least 1"));
        }
        None
    }

    fn standby_problem(&self) -> Option<Problem> {
        let (c, s) = (&self.change_log, &self.standby);
        if c.interval < Duration::from_millis(100) {
            return Some(problem("change_log.interval", "must be at least 100ms"));
        }
        if c.retention < c.interval * 10 {
            return Some(problem(
                "change_log.retention",
                format!("must be at least 10× change_log.interval ({})", humantime::format_duration(c.interval * 10)),
            ));
        }
        if s.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Some(problem("standby.dir", "is empty"));
        }
        if s.poll_interval < Duration::from_millis(100) {
            return Some(problem("standby.poll_interval", "must be at least 100ms"));
        }
        if s.scan_interval < Duration::from_secs(1) {
            return Some(problem("standby.scan_interval", "must be at least 1s"));
        }
        if s.concurrency == 0 {
            return Some(problem("standby.concurrency", "must be at least 1"));
        }
        None
    }

    fn validation_problem(&self) -> Option<Problem> {
        let v = &self.validation;
        if v.interval < Duration::from_secs(1) {
            return Some(problem("validation.interval", "must be at least 1s"));
        }
        if v.tenants == 0 {
            return Some(problem("validation.tenants", "must be at least 1"));
        }
        if v.concurrency == 0 {
            return Some(problem("validation.concurrency", "must be at least 1"));
        }
        if v.temp_dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Some(problem("validation.temp_dir", "is empty (leave it out for the system temp dir)"));
        }
        None
    }

    fn hooks_problem(&self) -> Option<Problem> {
        let (key, message) = self.hooks.as_ref()?.problem()?;
        Some(problem(format!("hooks.{key}"), message))
    }

    fn log_problem(&self) -> Option<Problem> {
        if self.log.level.trim().is_empty() {
            return Some(problem("log.level", "is empty (try \"info\" or \"litefleet=debug,info\")"));
        }
        None
    }
}

/// A lexical normal form of a directory for comparing config entries (no I/O: the
/// directories need not exist yet). Relative paths are taken against the current
/// directory when it is known; `.` components and trailing slashes vanish, `..` pops.
fn normalize(p: &Path) -> PathBuf {
    let absolute = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}
