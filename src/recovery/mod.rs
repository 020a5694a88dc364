//! Restore as an operation of the fleet: the daemon's restore jobs ([`jobs`]: any
//! tenant, any moment of its restore window, into a copy or a new tenant, over the
//! API) and fleet-wide disaster recovery ([`all`]: `litefleet restore --config … --all`).
//!
//! Both run the one restore runner, [`crate::restore::Job`] (plan, streaming apply,
//! SHA-256, SQLite check, `<out>.tmp` → fsync → rename → fsync directory), with
//! bounded concurrency and its progress; this module decides *what* to restore and
//! *where*: which replica a tenant id names, whether a point lies in its restore
//! window ([`crate::storage::catalog::Window`]), which file name a copy gets, how the
//! output of a disaster recovery is laid out.
//!
//! It never writes anywhere but a configured place (`[restore] dir`, a configured watch
//! directory, the output directory given on the command line), never into a tenant's
//! live database, and never leaves a partial file.

pub mod all;
pub mod jobs;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::ltx::TxId;
use crate::restore::Target;
use crate::tenant::{Prefix, TenantId};

/// A moment of a tenant's history to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The newest state the backups hold.
    Latest,
    /// The state right after this TXID.
    Txid(TxId),
    /// The state as of this time (the newest commit strictly before it).
    Time(SystemTime),
}

impl Point {
    /// The restore target of this point.
    pub fn target(self) -> Target {
        match self {
            Point::Latest => Target::default(),
            Point::Txid(t) => Target { txid: Some(t), timestamp: None },
            Point::Time(t) => Target { txid: None, timestamp: Some(t) },
        }
    }

    /// `latest`, `TXID 000000000000002a`, `2026-01-02T15:04:05.123Z`.
    pub fn describe(self) -> String {
        match self {
            Point::Latest => "latest".to_owned(),
            Point::Txid(t) => format!("TXID {t:016x}"),
            Point::Time(t) => humantime::format_rfc3339_millis(t).to_string(),
        }
    }

    /// The point as a file-name part: `txid-000000000000002a`, `at-20260102T150405.123Z`
    /// (UTC), `latest`.
    pub fn file_part(self) -> String {
        match self {
            Point::Latest => "latest".to_owned(),
            Point::Txid(t) => format!("txid-{t:016x}"),
            Point::Time(t) => {
                let s = humantime::format_rfc3339_millis(t).to_string();
                let s = s.replace(['-', ':'], "");
                format!("at-{}", s.replace(".000Z", "Z"))
            }
        }
    }
}

/// The file a `copy` restore of tenant `id` at `point` gets in `[restore] dir`:
/// `<id>-<point>.db`. Only the id (a validated GUID or stem) and the point make it up,
/// so no request can name a path.
pub fn copy_name(id: &TenantId, point: Point) -> String {
    format!("{}-{}.db", id.as_str(), point.file_part())
}

/// Where a disaster recovery writes the replica at `prefix`, relative to the output
/// directory: laid out like the watch directories that fed it — `<id>.db` for
/// `<root>/<id>`, `<dir prefix>/<id>.db` for `<root>/<dir prefix>/<id>` — so the daemon
/// can watch the result (`[[watch]] dir = "<out>/<dir prefix>"`, `prefix = "<dir prefix>"`).
/// A prefix outside the root (given by a hook) keeps its whole path.
pub fn layout_path(root: &Prefix, prefix: &str) -> PathBuf {
    let below = if root.is_none() {
        Some(prefix)
    } else {
        prefix.strip_prefix(root.as_str()).and_then(|rest| rest.strip_prefix('/'))
    };
    let rel = below.unwrap_or(prefix);
    let (dirs, id) = rel.rsplit_once('/').unwrap_or(("", rel));
    Path::new(dirs).join(format!("{id}.db"))
}

/// Seconds since the epoch of `t` as milliseconds (0 before it).
pub(crate) fn epoch_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The time an LTX header's milliseconds stand for.
pub(crate) fn from_epoch_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}

/// Whether files can be created in `dir`: it exists, is a directory, and a probe file
/// can be created and removed in it (as root, permission bits say nothing; a read-only
/// or full file system still refuses). The error says which.
pub fn check_writable(dir: &Path) -> Result<(), String> {
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("does not exist".to_owned()),
        Err(e) => return Err(format!("cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return Err("is not a directory".to_owned()),
        Ok(_) => {}
    }
    let probe = dir.join(format!(".litefleet-probe-{}{}", uuid::Uuid::new_v4().simple(), crate::durable::TEMP_SUFFIX));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(format!("is not writable: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_names_come_from_the_id_and_the_point_only() {
        let id = TenantId::guid("12345678-1234-5678-9ABC-123456789012").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy_name(&id, Point::Txid(42)), "12345678-1234-5678-9abc-123456789012-txid-000000000000002a.db");
        let t = humantime::parse_rfc3339("2026-01-02T15:04:05Z").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(copy_name(&id, Point::Time(t)), "12345678-1234-5678-9abc-123456789012-at-20260102T150405Z.db");
        let t = humantime::parse_rfc3339("2026-01-02T15:04:05.250Z").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(Point::Time(t).file_part(), "at-20260102T150405.250Z");
    }

    #[test]
    fn disaster_recovery_output_is_laid_out_like_the_watch_directories() {
        let root = Prefix::parse("databases").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(layout_path(&root, "databases/abc"), Path::new("abc.db"));
        assert_eq!(layout_path(&root, "databases/prod/abc"), Path::new("prod/abc.db"));
        assert_eq!(layout_path(&root, "special/tenant-db"), Path::new("special/tenant-db.db"), "outside the root");
        assert_eq!(layout_path(&root, "databasesx/abc"), Path::new("databasesx/abc.db"), "a sibling, not the root");
        assert_eq!(layout_path(&Prefix::none(), "abc"), Path::new("abc.db"));
    }

    #[test]
    fn a_missing_or_unusable_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_writable(tmp.path()), Ok(()));
        assert_eq!(std::fs::read_dir(tmp.path()).map(|d| d.count()).unwrap_or(9), 0, "the probe is gone");
        assert_eq!(check_writable(&tmp.path().join("nope")), Err("does not exist".to_owned()));
        std::fs::write(tmp.path().join("f"), b"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(check_writable(&tmp.path().join("f")), Err("is not a directory".to_owned()));
    }
}
