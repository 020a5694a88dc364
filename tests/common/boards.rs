//! Status boards for the HTTP tests: a fleet description and tenants in every state,
//! filled the way the fleet fills them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use litefleet::status::{Board, FleetInfo, TenantState, TenantStatus};

/// The seed's sample GUIDs.
pub const ACME: &str = "12345678-1234-5678-9abc-123456789012";
pub const BETA: &str = "98765432-4321-8765-cba9-876543210987";
pub const GAMMA: &str = "abcdef01-2345-6789-abcd-ef0123456789";

/// Fleet facts for a board whose tenants live in `watch_dir` and replicate to `storage_url`.
pub fn info(watch_dir: &Path, storage_url: &str, bucket: &str) -> FleetInfo {
    FleetInfo {
        storage_url: storage_url.to_owned(),
        bucket: bucket.to_owned(),
        root: "databases".to_owned(),
        watch_dirs: vec![watch_dir.to_path_buf()],
        started_at: SystemTime::now() - Duration::from_secs(2 * 3600 + 34 * 60),
        lag_threshold: Duration::from_secs(10),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        encryption: None,
    }
}

/// A GUID made from a number (distinct, sortable, valid).
pub fn guid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-{:012x}", u64::from(n) * 7919)
}

/// A tenant `id` in `dir`, in `state`, with plausible counters.
pub fn tenant(dir: &Path, storage_url: &str, id: &str, state: TenantState) -> TenantStatus {
    let path = dir.join(format!("{id}.db"));
    let prefix = litefleet::tenant::Prefix::parse(&format!("databases/{id}")).unwrap();
    let id = litefleet::tenant::TenantId::from_stem(id).unwrap();
    let mut t = TenantStatus::new(&id, &path, dir, &prefix, &format!("{storage_url}/{prefix}"));
    t.state = state;
    t.registered_at = SystemTime::now() - Duration::from_secs(3600);
    if state != TenantState::Starting && state != TenantState::Conflict {
        t.last_sync_at = Some(SystemTime::now() - Duration::from_secs(3));
        t.txid = Some(42);
        t.syncs = 41;
        t.files_shipped = 42;
        t.bytes_shipped = 42 * 4096;
    }
    if state == TenantState::Error {
        t.errors = 3;
        t.last_error = Some("storage refused the upload: 403 Forbidden".to_owned());
    }
    t
}

/// A board like a small production fleet: `n` active tenants plus one error, one
/// lagging, one starting, one conflict (same GUID in a second directory) and one
/// skipped file. Returns the board and the conflicting GUID.
pub fn populated(dir: &Path, storage_url: &str, bucket: &str, n: u32) -> (Arc<Board>, String) {
    let board = Arc::new(Board::new(info(dir, storage_url, bucket)));
    for i in 0..n {
        board.upsert(tenant(dir, storage_url, &guid(i + 1), TenantState::Active));
    }
    board.upsert(tenant(dir, storage_url, ACME, TenantState::Active));
    board.upsert(tenant(dir, storage_url, BETA, TenantState::Error));
    let mut lag = tenant(dir, storage_url, GAMMA, TenantState::Active);
    lag.pending_since = Some(SystemTime::now() - Duration::from_secs(42));
    board.upsert(lag);
    board.upsert(tenant(dir, storage_url, "fedcba98-7654-3210-fedc-ba9876543210", TenantState::Starting));
    let staging = dir.join("staging");
    let mut conflict = tenant(&staging, storage_url, ACME, TenantState::Conflict);
    conflict.conflict_with = Some(dir.join(format!("{ACME}.db")));
    board.upsert(conflict);
    board.skip(&dir.join("regular-name.db"), "not a GUID (non_guid = \"skip\")");
    board.set_ready(true);
    (board, ACME.to_owned())
}

/// Paths of every tenant entry.
pub fn paths(board: &Board) -> Vec<PathBuf> {
    board.snapshot().tenants.into_iter().map(|t| t.database_path).collect()
}
