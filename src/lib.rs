//! litefleet: continuous, point-in-time backups of every tenant SQLite database in a
//! folder, in Litestream v0.5's LTX layout.
//!
//! Modules, each knowing only those below it: `ltx` (the file format), `wal` (reading
//! SQLite's write-ahead log), `storage` (opendal and the replica layout), `replicate`
//! (one database's replicator), `restore` (plans and applies a replica to a file),
//! `status` (the board every tenant reports to), `metrics` and `http` (dashboard, JSON
//! API and Prometheus metrics, reading the board), and `cli` (argument parsing and
//! dispatch). `docs/architecture.md` walks through them in
//! the order a change travels.

pub mod cli;
pub mod config;
pub mod fleet;
pub mod hooks;
pub mod http;
pub mod lifecycle;
pub mod ltx;
pub mod metrics;
pub mod pages;
pub mod replicate;
pub mod restore;
pub mod status;
pub mod storage;
pub mod tenant;
pub mod validate;
pub mod wal;
pub mod watch;
