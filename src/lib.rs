//! litefleet: continuous, point-in-time backups of every tenant SQLite database in a
//! folder, in Litestream v0.5's LTX layout.
//!
//! Every module knows only the modules above it in this list (the bottom of the
//! house first); `docs/architecture.md` walks through them in the order a change
//! travels, and a test (`tests/layout.rs`, `module_graph_flows_down`) keeps the order true:
//! a module that names a module below it in `crate::…` fails it.
//!
//! | module | owns |
//! |---|---|
//! | [`ltx`] | the LTX file format: header, pages, index, trailer, checksums, compactor |
//! | [`wal`] | reading SQLite's write-ahead log: header, frames, salts, checksums |
//! | [`errors`] | how errors read: each level once, the chain printed whole |
//! | [`redact`] | secrets that never print |
//! | [`durable`] | temp file, fsync, rename, fsync directory: the one write recipe |
//! | [`sqlite`] | the quiet connection, `-wal`/`-shm` paths, file stamps |
//! | [`tenant`] | tenant ids, prefixes, which file names are tenants |
//! | [`storage`] | opendal, the replica layout, (`catalog`) what a listing means, (`crypt`) encrypted files |
//! | [`status`] | the status board every reader reads |
//! | [`metrics`] | Prometheus metrics, fed from the tenant tasks |
//! | [`replicate`] | one database's replicator: WAL → L0 files |
//! | [`restore`] | replica → database file, follow copies, and restore validation |
//! | [`changes`] | the fleet change log a standby reads instead of listing every tenant |
//! | [`ownership`] | many hosts, one bucket: heartbeats, one owner per prefix, fencing |
//! | [`lifecycle`] | compaction, snapshots, retention; the fleet-wide scheduler |
//! | [`hooks`] | sandboxed WebAssembly tenant hooks and their webhooks |
//! | [`watch`] | finding tenant files: notify events and rescans |
//! | [`config`] | the TOML model, its validation, the seed's flags |
//! | [`fleet`] | the registry and one state machine per tenant |
//! | [`inventory`] | what the storage holds, seen from a config (`tenants`, restore by id) |
//! | [`recovery`] | restore as an operation: the daemon's restore jobs, `restore --all` |
//! | [`reencrypt`] | `litefleet reencrypt`: every replica file rewritten with the current key |
//! | [`http`] | the dashboard, the JSON API, probes |
//! | [`standby`] | `litefleet standby`: a follow copy of every tenant, its API and page |
//! | [`daemon`] | fleet + metrics + HTTP + reload, run until shutdown |
//! | [`cli`] | arguments, logging, signals, dispatch |

pub mod ltx;
pub mod wal;

pub mod durable;
pub mod errors;
pub mod redact;
pub mod sqlite;
pub mod tenant;

pub mod status;
pub mod storage;

pub mod metrics;

pub mod changes;
pub mod lifecycle;
pub mod ownership;
pub mod replicate;
pub mod restore;

pub mod hooks;
pub mod watch;

pub mod config;

pub mod fleet;
pub mod inventory;

pub mod recovery;
pub mod reencrypt;

pub mod http;
pub mod standby;

pub mod cli;
pub mod daemon;
