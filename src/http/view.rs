//! What the API and the dashboard show, computed from the status board and (for one
//! tenant) from its replica: the JSON objects of the OpenAPI document, filtering and
//! paging, the restore window and the restore commands.
//!
//! Both the JSON API and the HTML pages render these same values, so the page and the
//! API never disagree. Nothing here writes to the board or to storage.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use poem_openapi::{Enum, Object};

use crate::errors::chain;
use crate::ltx;
use crate::status::{Counts, Skipped, Snapshot, TenantState, TenantStatus};
use crate::storage::Storage;
use crate::storage::catalog::{Catalog, Unrestorable, Window};

/// Tenants per page unless `per_page` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 50;
/// The most tenants one page may hold.
pub const MAX_PER_PAGE: usize = 500;
/// Files listed per level on a tenant page (the newest ones; counts cover all).
pub const MAX_FILES_PER_LEVEL: usize = 100;
/// How long a tenant page waits for its replica listing.
pub const REPLICA_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted tenant id (GUIDs are 36; file stems may be longer).
pub const MAX_ID_LEN: usize = 128;
/// What a malformed tenant id is told (400).
pub const MALFORMED_ID: &str =
    "malformed tenant id: expected a GUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) or a file stem";

/// RFC 3339 with seconds, as the seed shows (`2025-01-15T08:30:45Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// One client of the seed's `/api/status`, field for field.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct SeedClient {
    /// Tenant id (the GUID of `<GUID>.db`).
    pub client_id: String,
    /// The database file.
    pub database_path: String,
    /// Storage prefix of its replica, without bucket (`databases/<id>`).
    pub s3_path: String,
    /// `active`, `lagging`, `starting`, `error` or `conflict`.
    pub status: String,
    /// When the daemon registered it (RFC 3339).
    pub created_at: String,
}

/// The seed's `/api/status` document.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct SeedStatus {
    /// The S3 bucket (or the replica folder for `file://`).
    pub bucket: String,
    /// The watched directories, as configured.
    pub watch_dirs: Vec<String>,
    /// Registered tenant databases (every state).
    pub total_clients: u64,
    /// Tenants `active`, `lagging` or `starting`.
    pub active_clients: u64,
    /// Every registered tenant, sorted by database path.
    pub clients: Vec<SeedClient>,
}

impl SeedStatus {
    /// The seed's document from a snapshot.
    pub fn from_snapshot(s: &Snapshot) -> SeedStatus {
        let c = &s.counts;
        SeedStatus {
            bucket: s.info.bucket.clone(),
            watch_dirs: s.info.watch_dirs.iter().map(|d| d.display().to_string()).collect(),
            total_clients: c.total as u64,
            active_clients: (c.active + c.lagging + c.starting) as u64,
            clients: s
                .tenants
                .iter()
                .map(|t| SeedClient {
                    client_id: t.id.to_string(),
                    database_path: t.database_path.display().to_string(),
                    s3_path: t.prefix.to_string(),
                    status: t.state_at(s.taken_at, s.info.lag_threshold).as_str().to_owned(),
                    created_at: rfc3339(t.registered_at),
                })
                .collect(),
        }
    }
}

/// Tenant counts by state, plus skipped files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Object)]
#[oai(rename_all = "camelCase")]
pub struct FleetCounts {
    /// Registered tenant databases.
    pub total: u64,
    /// `active`: replicating, nothing waiting past the lag threshold.
    pub active: u64,
    /// `starting`: first sync not finished yet.
    pub starting: u64,
    /// `lagging`: a change has waited longer than the lag threshold.
    pub lagging: u64,
    /// `error`: the last sync failed.
    pub error: u64,
    /// `conflict`: another file owns the same storage prefix.
    pub conflict: u64,
    /// `held`: another host sharing the storage owns the prefix.
    pub held: u64,
    /// `fenced`: another host took the prefix over from this one.
    pub fenced: u64,
    /// Database files not replicated (name or location refused).
    pub skipped: u64,
    /// Tenants holding an open SQLite connection.
    pub hot: u64,
}

impl From<Counts> for FleetCounts {
    fn from(c: Counts) -> FleetCounts {
        FleetCounts {
            total: c.total as u64,
            active: c.active as u64,
            starting: c.starting as u64,
            lagging: c.lagging as u64,
            error: c.error as u64,
            conflict: c.conflict as u64,
            held: c.held as u64,
            fenced: c.fenced as u64,
            skipped: c.skipped as u64,
            hot: c.hot as u64,
        }
    }
}

/// Everything the board knows about one registered database file.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct Client {
    /// Tenant id.
    pub client_id: String,
    /// The database file.
    pub database_path: String,
    /// The watch directory it was found in.
    pub watch_dir: String,
    /// Storage prefix of its replica (`databases/<id>`).
    pub s3_path: String,
    /// Full replica URL, as `litefleet restore` and `litestream restore` take it.
    pub replica_url: String,
    /// State now: `active`, `lagging`, `starting`, `error` or `conflict`.
    pub status: String,
    /// When the daemon registered it (RFC 3339).
    pub created_at: String,
    /// When its last successful sync finished (RFC 3339).
    pub last_sync_at: Option<String>,
    /// Seconds since its last successful sync.
    pub last_sync_age_seconds: Option<f64>,
    /// TXID of the newest file in its replica (decimal; file names show it as 16 hex digits).
    pub txid: Option<u64>,
    /// Replication lag: seconds the oldest unshipped change has waited (0: none waiting).
    pub lag_seconds: f64,
    /// LTX files uploaded by this daemon.
    pub files_shipped: u64,
    /// Bytes uploaded by this daemon.
    pub bytes_shipped: u64,
    /// Snapshot files among them.
    pub snapshots_shipped: u64,
    /// Successful syncs.
    pub syncs: u64,
    /// Failed syncs.
    pub errors: u64,
    /// Why the last sync failed (cleared by the next success), else why its last restore
    /// validation failed.
    pub last_error: Option<String>,
    /// For `conflict`: the database file that owns the prefix.
    pub conflict_with: Option<String>,
    /// For `held` and `fenced`: the host that owns the prefix.
    pub held_by: Option<String>,
    /// Holds an open SQLite connection.
    pub hot: bool,
    /// Labels set by a hook.
    pub labels: BTreeMap<String, String>,
    /// Its last restore validation, when `[validation]` is on and one has run.
    pub validation: Option<ValidationView>,
}

/// The last restore validation of a tenant.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct ValidationView {
    /// `passed`, `failed` (the restore differs from the live database or does not
    /// restore) or `skipped` (no TXID could be pinned: the tenant kept writing).
    pub outcome: String,
    /// When it finished (RFC 3339).
    pub at: String,
    /// The TXID compared.
    pub txid: Option<u64>,
    /// What was compared, or what differs.
    pub detail: String,
    /// Seconds the restore and comparison took.
    pub took_seconds: f64,
}

impl From<&crate::status::Validation> for ValidationView {
    fn from(v: &crate::status::Validation) -> Self {
        ValidationView {
            outcome: v.outcome.as_str().to_owned(),
            at: rfc3339(v.at),
            txid: v.txid,
            detail: v.detail.clone(),
            took_seconds: secs(v.took),
        }
    }
}

impl Client {
    /// The view of `t` at `now`.
    pub fn new(t: &TenantStatus, now: SystemTime, lag_threshold: Duration) -> Client {
        Client {
            client_id: t.id.to_string(),
            database_path: t.database_path.display().to_string(),
            watch_dir: t.watch_dir.display().to_string(),
            s3_path: t.prefix.to_string(),
            replica_url: t.replica_url.clone(),
            status: t.state_at(now, lag_threshold).as_str().to_owned(),
            created_at: rfc3339(t.registered_at),
            last_sync_at: t.last_sync_at.map(rfc3339),
            last_sync_age_seconds: t.last_sync_at.map(|at| secs(now.duration_since(at).unwrap_or_default())),
            txid: t.txid,
            lag_seconds: secs(t.lag_at(now)),
            files_shipped: t.files_shipped,
            bytes_shipped: t.bytes_shipped,
            snapshots_shipped: t.snapshots_shipped,
            syncs: t.syncs,
            errors: t.errors,
            last_error: t.error_shown(),
            conflict_with: t.conflict_with.as_ref().map(|p| p.display().to_string()),
            held_by: t.held_by.clone(),
            hot: t.hot,
            labels: t.labels.clone(),
            validation: t.validation.as_ref().map(ValidationView::from),
        }
    }
}

/// The `status` filter of `/api/clients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum StatusFilter {
    /// Replicating normally.
    Active,
    /// First sync not done.
    Starting,
    /// A change waits past the lag threshold.
    Lagging,
    /// Last sync failed.
    Error,
    /// Same prefix as another file.
    Conflict,
    /// Another host owns the prefix.
    Held,
    /// Another host took the prefix over from this one.
    Fenced,
}

impl StatusFilter {
    /// The matching tenant state.
    pub fn state(self) -> TenantState {
        match self {
            StatusFilter::Active => TenantState::Active,
            StatusFilter::Starting => TenantState::Starting,
            StatusFilter::Lagging => TenantState::Lagging,
            StatusFilter::Error => TenantState::Error,
            StatusFilter::Conflict => TenantState::Conflict,
            StatusFilter::Held => TenantState::Held,
            StatusFilter::Fenced => TenantState::Fenced,
        }
    }

    /// Parses the lowercase name (the dashboard's query string).
    pub fn parse(s: &str) -> Option<StatusFilter> {
        [
            StatusFilter::Active,
            StatusFilter::Starting,
            StatusFilter::Lagging,
            StatusFilter::Error,
            StatusFilter::Conflict,
        ]
        .into_iter()
        .find(|f| f.state().as_str() == s)
    }
}

/// A page of `/api/clients`.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct ClientPage {
    /// This page (1-based).
    pub page: u64,
    /// Tenants per page.
    pub per_page: u64,
    /// Pages of matching tenants (at least 1).
    pub pages: u64,
    /// Tenants matching the filter (every page).
    pub matching: u64,
    /// Counts over the whole fleet, whatever the filter.
    pub counts: FleetCounts,
    /// The tenants of this page, sorted by database path.
    pub clients: Vec<Client>,
}

/// Filter and page parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Only this state.
    pub status: Option<StatusFilter>,
    /// Case-insensitive substring of the id, the database path or the storage prefix.
    pub q: String,
    /// 1-based page; 0 is read as 1.
    pub page: usize,
    /// Tenants per page, 1..=[`MAX_PER_PAGE`] (0: default).
    pub per_page: usize,
}

impl Query {
    fn matches(&self, t: &TenantStatus, state: TenantState, needle: &str) -> bool {
        if self.status.is_some_and(|f| f.state() != state) {
            return false;
        }
        needle.is_empty()
            || t.id.as_str().to_lowercase().contains(needle)
            || t.database_path.to_string_lossy().to_lowercase().contains(needle)
            || t.prefix.as_str().to_lowercase().contains(needle)
    }

    /// The page of `s` this query asks for.
    pub fn page_of(&self, s: &Snapshot) -> ClientPage {
        let per_page = match self.per_page {
            0 => DEFAULT_PER_PAGE,
            n => n.min(MAX_PER_PAGE),
        };
        let needle = self.q.trim().to_lowercase();
        let threshold = s.info.lag_threshold;
        let matching: Vec<&TenantStatus> =
            s.tenants.iter().filter(|t| self.matches(t, t.state_at(s.taken_at, threshold), &needle)).collect();
        let pages = matching.len().div_ceil(per_page).max(1);
        let page = self.page.clamp(1, pages);
        let clients = matching
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|t| Client::new(t, s.taken_at, threshold))
            .collect();
        ClientPage {
            page: page as u64,
            per_page: per_page as u64,
            pages: pages as u64,
            matching: matching.len() as u64,
            counts: s.counts.into(),
            clients,
        }
    }
}

/// A skipped database file.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct SkippedFile {
    /// The file.
    pub path: String,
    /// Why it is not replicated.
    pub reason: String,
}

impl From<&Skipped> for SkippedFile {
    fn from(s: &Skipped) -> SkippedFile {
        SkippedFile { path: s.path.display().to_string(), reason: s.reason.clone() }
    }
}

/// Whether `id` can name a tenant: a GUID, or a file stem of letters, digits, `.`, `_`
/// and `-` (not starting with `.`), at most [`MAX_ID_LEN`] bytes. Returns the id as the
/// board keys it (GUIDs lowercase).
pub fn parse_id(id: &str) -> Option<String> {
    if let Ok(u) = uuid::Uuid::try_parse(id)
        && id.len() == 36
    {
        return Some(u.hyphenated().to_string());
    }
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    ok.then(|| id.to_owned())
}

/// One LTX file of a replica.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct LtxFile {
    /// File name (`<min>-<max>.ltx`, TXIDs in 16 hex digits).
    pub name: String,
    /// First TXID it holds.
    pub min_txid: u64,
    /// Last TXID it holds.
    pub max_txid: u64,
    /// Size in bytes.
    pub size: u64,
}

/// The files of one level.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct Level {
    /// Level (0: every sync; 1–8: compactions; 9: snapshots).
    pub level: u32,
    /// Files at this level.
    pub count: u64,
    /// Their total size in bytes.
    pub bytes: u64,
    /// The newest of them (at most 100), oldest first.
    pub files: Vec<LtxFile>,
}

/// The span a tenant can be restored to.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct RestoreWindow {
    /// The earliest TXID a `--txid` restore can reach (the end of the smallest file that
    /// starts at TXID 1).
    pub earliest_txid: u64,
    /// Its header time (RFC 3339).
    pub earliest_at: Option<String>,
    /// The latest TXID (a plain restore's result).
    pub latest_txid: u64,
    /// Its header time (RFC 3339).
    pub latest_at: Option<String>,
    /// Files a plain restore downloads.
    pub files: u64,
    /// Bytes a plain restore downloads.
    pub bytes: u64,
}

impl From<Window> for RestoreWindow {
    fn from(w: Window) -> RestoreWindow {
        RestoreWindow {
            earliest_txid: w.earliest_txid,
            earliest_at: w.earliest_at.map(rfc3339),
            latest_txid: w.latest_txid,
            latest_at: w.latest_at.map(rfc3339),
            files: w.files as u64,
            bytes: w.bytes,
        }
    }
}

/// Commands that restore a tenant, ready to paste into a shell.
#[derive(Debug, Clone, PartialEq, Eq, Object)]
#[oai(rename_all = "camelCase")]
pub struct RestoreCommands {
    /// `litefleet restore <url> -o <file>`.
    pub litefleet: String,
    /// `litestream restore -o <file> <url>` (Litestream 0.5).
    pub litestream: String,
    /// litefleet, to a point in time (the latest file's time as an example).
    pub litefleet_at_time: String,
    /// litestream, to a point in time.
    pub litestream_at_time: String,
}

/// A tenant with its replica.
#[derive(Debug, Clone, PartialEq, Object)]
#[oai(rename_all = "camelCase")]
pub struct ClientDetail {
    /// The replicating entry (or the first of several conflicting files).
    pub client: Client,
    /// Other database files with the same id (state `conflict`).
    pub conflicts: Vec<Client>,
    /// Its replica's files by level (levels with files only).
    pub levels: Vec<Level>,
    /// What a restore can reach; absent when the replica is empty or broken.
    pub restore_window: Option<RestoreWindow>,
    /// The restore window as a timeline of its files; absent with the window.
    pub timeline: Option<super::timeline::Timeline>,
    /// Why the listing or the window could not be computed.
    pub replica_error: Option<String>,
    /// How to restore it.
    pub commands: RestoreCommands,
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b)) {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The replica URL as Litestream 0.5 spells it: the same, except that its S3 query
/// parameter for path-style addressing is `forcePathStyle` (litefleet's URLs say
/// `force-path-style`), and a GCS or Azure URL has no query (Litestream takes a custom
/// endpoint only from `STORAGE_EMULATOR_HOST` or a config file).
pub fn litestream_url(replica_url: &str) -> String {
    match replica_url.split_once('?') {
        Some((base, query)) if replica_url.starts_with("s3://") => {
            let query: Vec<String> = query
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some(("force-path-style", v)) => format!("forcePathStyle={v}"),
                    _ => kv.to_owned(),
                })
                .collect();
            format!("{base}?{}", query.join("&"))
        }
        Some((base, _)) if replica_url.starts_with("abs://") || replica_url.starts_with("gs://") => base.to_owned(),
        _ => replica_url.to_owned(),
    }
}

/// The restore commands for a replica URL, writing `<id>.db` in the current directory.
pub fn commands(id: &str, replica_url: &str, example_time: Option<&str>) -> RestoreCommands {
    let url = shell_quote(replica_url);
    let ls_url = shell_quote(&litestream_url(replica_url));
    let out = shell_quote(&format!("{id}.db"));
    let at = example_time.map(str::to_owned).unwrap_or_else(|| rfc3339(SystemTime::now()));
    RestoreCommands {
        litefleet: format!("litefleet restore {url} -o {out}"),
        litestream: format!("litestream restore -o {out} {ls_url}"),
        litefleet_at_time: format!("litefleet restore {url} -o {out} --timestamp {at}"),
        litestream_at_time: format!("litestream restore -o {out} -timestamp {at} {ls_url}"),
    }
}

/// What a tenant page shows of its replica.
#[derive(Debug, Default)]
pub struct ReplicaDetail {
    /// Files per level.
    pub levels: Vec<Level>,
    /// The restore window.
    pub window: Option<RestoreWindow>,
    /// The window as a timeline.
    pub timeline: Option<super::timeline::Timeline>,
    /// Why the listing or the window could not be computed.
    pub error: Option<String>,
}

/// Lists `t`'s replica (files per level) and computes its restore window and timeline.
pub async fn replica_detail(storage: &Storage, t: &TenantStatus) -> ReplicaDetail {
    let replica = storage.replica(&t.prefix);
    let work = async {
        let cat = Catalog::load(&replica).await.map_err(|e| (Vec::new(), chain(&e)))?;
        let levels = (0..=ltx::SNAPSHOT_LEVEL)
            .map(|level| cat.level(level))
            .filter(|files| !files.is_empty())
            .map(|files| Level {
                level: files[0].level,
                count: files.len() as u64,
                bytes: files.iter().map(|f| f.size).sum(),
                files: files[files.len().saturating_sub(MAX_FILES_PER_LEVEL)..]
                    .iter()
                    .map(|f| LtxFile {
                        name: ltx::format_filename(f.min_txid, f.max_txid),
                        min_txid: f.min_txid,
                        max_txid: f.max_txid,
                        size: f.size,
                    })
                    .collect(),
            })
            .collect();
        match cat.window() {
            Ok(w) => {
                let timeline = super::timeline::Timeline::new(&cat, &w, SystemTime::now());
                Ok(ReplicaDetail { levels, window: Some(RestoreWindow::from(w)), timeline, error: None })
            }
            Err(Unrestorable::Empty) => Ok(ReplicaDetail { levels, ..ReplicaDetail::default() }),
            Err(e) => Err((levels, e.to_string())),
        }
    };
    match tokio::time::timeout(REPLICA_TIMEOUT, work).await {
        Ok(Ok(d)) => d,
        Ok(Err((levels, e))) => ReplicaDetail { levels, error: Some(e), ..ReplicaDetail::default() },
        Err(_) => ReplicaDetail {
            error: Some(format!("storage did not answer within {}s", REPLICA_TIMEOUT.as_secs())),
            ..ReplicaDetail::default()
        },
    }
}

/// The detail of tenant `id` from the entries the board holds for it (replicating one
/// first); `None` when there are none.
pub async fn detail(storage: &Storage, entries: &[TenantStatus], lag_threshold: Duration) -> Option<ClientDetail> {
    let (main, rest) = entries.split_first()?;
    let now = SystemTime::now();
    let r = replica_detail(storage, main).await;
    let at = r.window.as_ref().and_then(|w| w.latest_at.clone());
    Some(ClientDetail {
        client: Client::new(main, now, lag_threshold),
        conflicts: rest.iter().map(|t| Client::new(t, now, lag_threshold)).collect(),
        levels: r.levels,
        restore_window: r.window,
        timeline: r.timeline,
        replica_error: r.error,
        commands: commands(main.id.as_str(), &main.replica_url, at.as_deref()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_guids_or_plain_stems() {
        let g = "12345678-1234-5678-9ABC-123456789012";
        assert_eq!(parse_id(g).as_deref(), Some("12345678-1234-5678-9abc-123456789012"));
        assert_eq!(parse_id("legacy_db.v2").as_deref(), Some("legacy_db.v2"));
        for bad in ["", "..", ".hidden", "a/b", "a b", "<script>", "a%2fb", &"x".repeat(129)] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn litestream_commands_spell_path_style_its_way() {
        let url = "s3://bkt/databases/a?endpoint=http://127.0.0.1:9000&region=us-east-1&force-path-style=true";
        let c = commands("a", url, Some("2026-01-02T03:04:05Z"));
        assert_eq!(c.litefleet, format!("litefleet restore '{url}' -o a.db"));
        assert_eq!(
            c.litestream,
            "litestream restore -o a.db 's3://bkt/databases/a?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true'"
        );
        assert_eq!(
            c.litestream_at_time,
            "litestream restore -o a.db -timestamp 2026-01-02T03:04:05Z 's3://bkt/databases/a?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true'"
        );
        assert_eq!(litestream_url("file:///r/databases/a"), "file:///r/databases/a");
        // Litestream takes a GCS emulator from STORAGE_EMULATOR_HOST, an Azure endpoint
        // from a config file only.
        assert_eq!(litestream_url("gs://b/databases/a?endpoint=http://127.0.0.1:1"), "gs://b/databases/a");
        assert_eq!(
            litestream_url("abs://acct@c/databases/a?endpoint=http://127.0.0.1:1/acct"),
            "abs://acct@c/databases/a"
        );
    }

    #[test]
    fn shell_quoting_survives_quotes_and_spaces() {
        assert_eq!(shell_quote("s3://b/databases/x"), "s3://b/databases/x");
        assert_eq!(shell_quote("file:///my dir/x"), "'file:///my dir/x'");
        assert_eq!(shell_quote("a'b"), r"'a'\''b'");
        assert_eq!(
            shell_quote("s3://b/x?endpoint=http://h:9000&region=r"),
            "'s3://b/x?endpoint=http://h:9000&region=r'"
        );
    }
}
