//! What the storage holds, seen from a daemon's config: `litefleet tenants` (every
//! replica, with its restore window and the local file that replicates there now) and
//! restore by tenant id (`litefleet restore --config FILE <id>`).
//!
//! It only reads: one recursive listing of the storage root, one of the ownership
//! records (and one read per owned prefix), and one walk of the watch directories by
//! the watcher's own rules.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::errors::Chain;
use crate::fleet::open_storage;
use crate::hooks::{Decision, HookTenant, Hooks};
use crate::ownership::Ownership;
use crate::storage::catalog::Catalog;
use crate::storage::{self, Storage};
use crate::tenant::{self, Classified, Prefix, TenantId};
use crate::watch::{self, WatchDir};

/// One replica found in storage by [`inventory`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredTenant {
    /// The replica's prefix under the storage (`databases/<id>`).
    pub prefix: String,
    /// The tenant id: the prefix's last segment.
    pub id: String,
    /// The replica URL, as `litefleet restore` and `litestream restore` take it.
    pub replica_url: String,
    /// Newest TXID held, across every level.
    pub latest_txid: u64,
    /// When the newest file was written (storage's time for it).
    #[serde(with = "humantime_serde")]
    pub latest_at: Option<SystemTime>,
    /// Start of the restore window: when the file a restore can first stop at was
    /// written. `None`: the replica restores to nothing (no chain from TXID 1, or a gap).
    #[serde(with = "humantime_serde")]
    pub earliest_at: Option<SystemTime>,
    /// LTX files held, every level.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// The local database file that replicates there now, if any is in a watch
    /// directory (`None`: its file is gone, the backups remain).
    pub local: Option<PathBuf>,
    /// The host that owns the prefix when several hosts share the storage (see
    /// `crate::ownership`); `None`: no owner recorded (single host, or released).
    pub owner: Option<String>,
    /// The ownership epoch (how many times the prefix changed hands, plus one).
    pub owner_epoch: Option<u64>,
}

/// A host's heartbeat, as `litefleet tenants` shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredHost {
    pub host: String,
    /// When the storage last saw its heartbeat written.
    #[serde(with = "humantime_serde")]
    pub heartbeat_at: Option<SystemTime>,
    /// It shut down cleanly (its prefixes are free).
    pub stopped: bool,
    pub pid: u32,
    pub version: String,
}

/// Why the storage could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("storage")]
    Storage(#[from] storage::Error),
    /// The id is not a tenant id.
    #[error(transparent)]
    BadId(#[from] tenant::TenantIdError),
    /// No replica has that id.
    #[error("no replica of tenant {id} under {place} (litefleet tenants --config … lists them)")]
    NotFound {
        /// The id.
        id: String,
        /// Where it looked.
        place: String,
    },
    /// Several replicas have that id.
    #[error("tenant {id} has several replicas: {}; restore one by its URL", prefixes.join(", "))]
    Ambiguous {
        /// The id.
        id: String,
        /// Their prefixes.
        prefixes: Vec<String>,
    },
}

/// A replica found in storage, with its files as the listing showed them.
#[derive(Debug, Clone)]
pub struct StoredReplica {
    /// What `litefleet tenants` shows of it.
    pub tenant: StoredTenant,
    /// Its LTX files, by level then TXID.
    pub catalog: Catalog,
}

/// Every replica under the config's storage root, with its newest TXID, its restore
/// window and the local file that maps to it. Reads only: one recursive listing.
pub async fn inventory(config: &Config) -> Result<Vec<StoredTenant>, Error> {
    Ok(replicas(config, true).await?.into_iter().map(|r| r.tenant).collect())
}

/// [`inventory`] with each replica's files (what `restore --all` plans from). With
/// `owners` false the ownership records are not read (a read and a stat per tenant:
/// 20,000 requests for 10,000 tenants) and every tenant's `owner` is `None`.
pub async fn replicas(config: &Config, owners: bool) -> Result<Vec<StoredReplica>, Error> {
    let storage = open_storage(config)?;
    let local = local_prefixes(config);
    let tree = storage.list_tree(search_root(config)).await?;
    // Owners are extra information: a storage that cannot list them still lists replicas.
    let owners = if owners {
        Ownership::records(&storage).await.unwrap_or_else(|e| {
            tracing::warn!("cannot read the ownership records: {}", Chain(&e));
            Default::default()
        })
    } else {
        Default::default()
    };
    let mut out = Vec::with_capacity(tree.len());
    for (prefix, files) in tree {
        let catalog = Catalog::new(files);
        let window = catalog.window().ok();
        let tenant = StoredTenant {
            id: prefix.rsplit('/').next().unwrap_or(&prefix).to_owned(),
            replica_url: storage.replica(&prefix).url(),
            latest_txid: catalog.newest().unwrap_or(0),
            latest_at: catalog.files().iter().filter_map(|f| f.created).max(),
            earliest_at: window.and_then(|w| w.earliest_at),
            files: catalog.files().len(),
            bytes: catalog.files().iter().map(|f| f.size).sum(),
            local: local.get(prefix.as_str()).cloned(),
            owner: owners.get(&prefix).filter(|r| !r.released).map(|r| r.host.clone()),
            owner_epoch: owners.get(&prefix).map(|r| r.epoch),
            prefix,
        };
        out.push(StoredReplica { tenant, catalog });
    }
    Ok(out)
}

/// Every host that keeps a heartbeat in the config's storage (hosts sharing it).
pub async fn hosts(config: &Config) -> Result<Vec<StoredHost>, Error> {
    let storage = open_storage(config)?;
    let hosts = Ownership::hosts(&storage).await.unwrap_or_else(|e| {
        tracing::warn!("cannot read the hosts' heartbeats: {}", Chain(&e));
        Vec::new()
    });
    let mut out: Vec<StoredHost> = hosts
        .into_iter()
        .map(|(hb, at)| StoredHost {
            host: hb.host,
            heartbeat_at: at,
            stopped: hb.stopped,
            pid: hb.pid,
            version: hb.version,
        })
        .collect();
    out.sort_by(|a, b| a.host.cmp(&b.host));
    Ok(out)
}

/// Where [`inventory`] and [`find_tenant`] look: the storage root, or the whole storage
/// when a hook may name prefixes outside it.
fn search_root(config: &Config) -> &str {
    if config.hooks.is_some() { "" } else { config.storage.root.as_str() }
}

/// The replica of tenant `id` under the config's storage and naming: the replicas whose
/// last segment is `id`, plus, with a hook, the prefix the hook gives `id` in each watch
/// directory (when that replica exists). Errors list the candidates when there are
/// several (the same GUID under `prod/` and `staging/`) and say where it looked when none.
pub async fn find_tenant(config: &Config, id: &str) -> Result<Prefix, Error> {
    let storage = open_storage(config)?;
    let id = TenantId::from_stem(id)?;
    let mut found: BTreeSet<String> = storage
        .discover(search_root(config))
        .await?
        .into_iter()
        .filter(|p| p.rsplit('/').next() == Some(id.as_str()))
        .collect();
    if let Some(h) = &config.hooks {
        let token = CancellationToken::new();
        match Hooks::start(h, token.clone()).await {
            Ok(hooks) => found.extend(hook_prefixes(config, &storage, &hooks, &id).await?),
            // The listing above still finds replicas named `…/<id>`.
            Err(e) => tracing::warn!("cannot ask the hook for the tenant's prefix: {}", Chain(&e)),
        }
        token.cancel();
    }
    match found.len() {
        1 => Ok(found.into_iter().next().and_then(|p| Prefix::parse(&p).ok()).unwrap_or_default()),
        0 => Err(Error::NotFound { id: id.to_string(), place: storage.location().to_owned() }),
        _ => Err(Error::Ambiguous { id: id.to_string(), prefixes: found.into_iter().collect() }),
    }
}

/// The prefixes `hooks` gives tenant `id` in each watch directory that hold a replica.
async fn hook_prefixes(config: &Config, storage: &Storage, hooks: &Hooks, id: &TenantId) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for w in &config.watch {
        let ext = w.extensions.first().map_or("db", String::as_str);
        let t = HookTenant {
            id: id.clone(),
            database_path: w.dir.join(format!("{id}.{ext}")),
            watch_dir: w.dir.clone(),
            default_prefix: Prefix::of_tenant(&config.storage.root, w.prefix.as_ref(), id),
        };
        if let Decision::Accept { prefix, .. } = hooks.on_register(&t).await.decision
            && !storage.replica(&prefix).list_all().await?.is_empty()
        {
            out.push(prefix.to_string());
        }
    }
    Ok(out)
}

/// Prefix → local database file, for every tenant file in the watch directories (the
/// first directory wins a shared prefix, as in the daemon).
fn local_prefixes(config: &Config) -> HashMap<String, PathBuf> {
    let mut out = HashMap::new();
    if let Some(single) = &config.single {
        out.insert(single.prefix(&config.storage.root).to_string(), single.path.clone());
        return out;
    }
    let dirs: Vec<WatchDir> = config
        .watch
        .iter()
        .enumerate()
        .map(|(i, w)| WatchDir { recursive: w.recursive, extensions: w.extensions.clone(), ..WatchDir::new(i, &w.dir) })
        .collect();
    for (key, path) in watch::list(dirs) {
        let w = &config.watch[key];
        if let Classified::Tenant(id) = tenant::classify(&path, &w.extensions, config.fleet.non_guid) {
            let prefix = Prefix::of_tenant(&config.storage.root, w.prefix.as_ref(), &id);
            out.entry(prefix.to_string()).or_insert(path);
        }
    }
    out
}
