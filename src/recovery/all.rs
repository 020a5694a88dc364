//! Fleet-wide disaster recovery: `litefleet restore --config prod.toml --all
//! --output-dir DIR` restores every tenant the storage holds — including those whose
//! local file is gone — in parallel, laid out like the watch directories
//! ([`super::layout_path`]), so the daemon can be pointed at the result.
//!
//! One recursive listing of the storage finds every replica and its files (no LIST per
//! tenant); each tenant's plan is made from it, and at most `concurrency` tenants
//! restore at once through the one runner ([`crate::restore::Job`]: SHA-256 always,
//! SQLite's check as asked). Each output is renamed into place complete and verified;
//! the directories it lands in are fsynced once per second for all of them (not once
//! per tenant), just before the journal: each tenant that completes is recorded in a
//! journal in the output directory (`.litefleet-restore.jsonl`, fsynced at least every
//! second, after the directories that hold what it records); a
//! rerun skips a tenant whose output is still exactly what the journal recorded (same
//! TXID, size and SHA-256), so an interrupted recovery resumes where it stopped. A JSON
//! report of every tenant is written at the end; the caller exits non-zero when any
//! tenant failed.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{Point, from_epoch_ms, layout_path};
use crate::config::Config;
use crate::errors::chain;
use crate::inventory::{self, StoredReplica};
use crate::ltx::TxId;
use crate::restore::{self, IntegrityCheck, Progress, Step};
use crate::storage::Storage;

/// Tenants restored at once unless `--concurrency` says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// The journal of completed tenants, in the output directory.
pub const JOURNAL: &str = ".litefleet-restore.jsonl";
/// The report's default name, in the output directory.
pub const REPORT: &str = ".litefleet-restore-report.json";
/// The journal is fsynced at least this often (a crash loses at most this much of it:
/// those tenants are restored again).
const JOURNAL_SYNC: Duration = Duration::from_secs(1);
/// The progress line is redrawn this often on a terminal...
const TTY_EVERY: Duration = Duration::from_millis(200);
/// ...and printed this often otherwise.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// Failed tenants listed under the summary table (the report has them all).
const SHOWN_FAILURES: usize = 20;

/// Which state each tenant is restored to.
#[derive(Debug, Clone, PartialEq)]
pub enum Points {
    /// The newest each replica holds.
    Latest,
    /// The state of every tenant as of this time.
    Time(SystemTime),
    /// A TXID per tenant (`--txid-file`); tenants not in it are restored to their latest.
    Txids(TxidFile),
}

/// What `restore --all` does.
#[derive(Debug, Clone)]
pub struct Options {
    pub output_dir: PathBuf,
    pub points: Points,
    /// Only tenants whose local database (in a configured watch directory) is absent.
    pub only_missing: bool,
    /// Print the plan and the bytes to fetch; write nothing.
    pub dry_run: bool,
    /// Tenants restored at once.
    pub concurrency: usize,
    /// SQLite's check of every output before it takes its name.
    pub integrity: IntegrityCheck,
    /// Where the JSON report goes (default: [`REPORT`] in the output directory).
    pub report: Option<PathBuf>,
    /// Write into an output directory that holds files but no journal of ours.
    pub force: bool,
}

/// Why the recovery could not run at all (a tenant's failure is in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the storage")]
    Inventory(#[from] inventory::Error),
    #[error("output directory {}", .0.display())]
    OutputDir(PathBuf, #[source] std::io::Error),
    #[error(
        "output directory {} holds files but no restore journal ({JOURNAL}): restore into an empty directory, or pass --force to let restored files replace files there",
        .0.display()
    )]
    NotEmpty(PathBuf),
    #[error("{}:{line}: {message}", path.display())]
    TxidFile { path: PathBuf, line: usize, message: String },
    #[error("reading {}", .0.display())]
    ReadTxidFile(PathBuf, #[source] std::io::Error),
    #[error("writing {}", .0.display())]
    Write(PathBuf, #[source] std::io::Error),
}

/// Tenant → TXID, from a `--txid-file`: lines of `<tenant id or prefix> <TXID in hex>`,
/// or the JSON lines `litefleet tenants --json` prints (their `prefix` and
/// `latestTxid`); `#` starts a comment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TxidFile {
    by_key: HashMap<String, TxId>,
}

impl TxidFile {
    /// Reads and parses a TXID file; errors name the line.
    pub fn load(path: &Path) -> Result<TxidFile, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::ReadTxidFile(path.to_path_buf(), e))?;
        TxidFile::parse(&text).map_err(|(line, message)| Error::TxidFile { path: path.to_path_buf(), line, message })
    }

    /// Parses TXID file text; the error is the 1-based line and what is wrong.
    pub fn parse(text: &str) -> Result<TxidFile, (usize, String)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Line {
            prefix: String,
            latest_txid: TxId,
        }
        let mut by_key = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let (key, txid) = if line.starts_with('{') {
                let l: Line =
                    serde_json::from_str(raw.trim()).map_err(|e| (i + 1, format!("not a tenants --json line: {e}")))?;
                (l.prefix, l.latest_txid)
            } else {
                let mut words = line.split_whitespace();
                let (Some(key), Some(hex), None) = (words.next(), words.next(), words.next()) else {
                    return Err((i + 1, format!("expected \"<tenant> <TXID>\", got {line:?}")));
                };
                let txid = TxId::from_str_radix(hex.trim_start_matches("0x"), 16)
                    .map_err(|_| (i + 1, format!("{hex:?} is not a hex TXID (like 000000000000002a)")))?;
                (key.trim_matches('/').to_owned(), txid)
            };
            if by_key.insert(key.clone(), txid).is_some() {
                return Err((i + 1, format!("{key} is listed twice")));
            }
        }
        Ok(TxidFile { by_key })
    }

    /// The TXID for a replica: by its prefix, else by its tenant id (last segment).
    fn get(&self, prefix: &str) -> Option<TxId> {
        self.by_key.get(prefix).or_else(|| self.by_key.get(prefix.rsplit('/').next().unwrap_or(prefix))).copied()
    }
}

/// What happened to one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Restored and verified in this run.
    Restored,
    /// Restored and verified by an earlier run (its output is unchanged).
    Skipped,
    /// Not restored (the error says why); nothing written for it.
    Failed,
    /// `--dry-run`: would be restored.
    Planned,
}

/// One tenant of the report.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub id: String,
    pub prefix: String,
    /// The output file.
    pub output: PathBuf,
    pub outcome: Outcome,
    /// The point asked for (`latest`, `TXID …`, a time).
    pub point: String,
    /// The TXID restored (or planned).
    pub txid: Option<TxId>,
    /// When the restored state was committed.
    #[serde(with = "humantime_serde")]
    pub restored_at: Option<SystemTime>,
    /// LTX files in the plan.
    pub files: usize,
    /// Bytes the plan downloads (downloaded, for a restored tenant).
    pub bytes: u64,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    /// SQLite's check (`ok`) when one was asked.
    pub integrity: Option<String>,
    pub seconds: f64,
    pub error: Option<String>,
}

impl TenantReport {
    /// Bytes this tenant downloaded (or, in a dry run, would download).
    fn fetched(&self) -> u64 {
        match self.outcome {
            Outcome::Restored | Outcome::Planned => self.bytes,
            Outcome::Skipped | Outcome::Failed => 0,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub storage: String,
    pub output_dir: PathBuf,
    pub dry_run: bool,
    #[serde(with = "humantime_serde")]
    pub started_at: SystemTime,
    pub seconds: f64,
    pub tenants: usize,
    pub restored: usize,
    pub skipped: usize,
    pub failed: usize,
    /// Bytes downloaded by the tenants restored (to download, for a dry run).
    pub bytes: u64,
    pub results: Vec<TenantReport>,
}

/// One line of the journal: a tenant restored and verified.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Record {
    prefix: String,
    /// The output, relative to the output directory.
    output: PathBuf,
    txid: TxId,
    size: u64,
    sha256: String,
}

/// One tenant to restore.
struct Work {
    replica: StoredReplica,
    /// The output file, and the same relative to the output directory.
    output: PathBuf,
    relative: PathBuf,
    point: Point,
    /// Why it cannot run (an output path another replica has).
    refused: Option<String>,
}

/// Counters the progress line reads.
#[derive(Default)]
struct Counts {
    done: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

/// Runs a disaster recovery of `config`'s storage (see the module doc). Progress goes to
/// stderr, the summary table to `out`; `stop` cancels the tenants still running (their
/// temporary files are removed) and ends the run with what is done.
pub async fn restore_all(
    config: &Config,
    opts: &Options,
    stop: &CancellationToken,
    mut out: impl Write,
) -> Result<Report, Error> {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let storage = crate::fleet::open_storage(config).map_err(inventory::Error::from)?;
    // The ownership records (a read per tenant) are not in the report: not read.
    let mut replicas = inventory::replicas(config, false).await?;
    if opts.only_missing {
        replicas.retain(|r| r.tenant.local.is_none());
    }
    let journal_path = opts.output_dir.join(JOURNAL);
    let journal = if opts.dry_run { read_journal(&journal_path) } else { prepare_output(opts, &journal_path)? };
    let work = assign(config, opts, replicas);
    let counts = Arc::new(Counts::default());
    let total = work.len();
    let ticker = Ticker::start(total, counts.clone(), opts.dry_run);
    let journal = Arc::new(journal);
    let mut writer = if opts.dry_run { None } else { Some(JournalWriter::open(&journal_path)?) };
    let results: Vec<TenantReport> = {
        let tasks = futures::stream::iter(work).map(|w| {
            let (storage, journal, counts, ticker) = (storage.clone(), journal.clone(), counts.clone(), ticker.clone());
            let (opts, stop) = (opts.clone(), stop.clone());
            async move {
                let r = one(&storage, &w, &opts, &journal, &stop).await;
                counts.done.fetch_add(1, Ordering::Relaxed);
                counts.bytes.fetch_add(r.0.fetched(), Ordering::Relaxed);
                if r.0.outcome == Outcome::Failed {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    ticker.failure(&r.0);
                }
                r
            }
        });
        let mut tasks = tasks.buffer_unordered(opts.concurrency.max(1));
        let mut results = Vec::with_capacity(total);
        while let Some((report, record)) = tasks.next().await {
            if let (Some(w), Some(rec)) = (writer.as_mut(), record) {
                w.append(&rec, &report.output)?;
            }
            results.push(report);
        }
        results
    };
    if let Some(w) = writer.as_mut() {
        w.sync()?;
    }
    ticker.finish();
    let mut report = Report {
        storage: storage.location().to_owned(),
        output_dir: opts.output_dir.clone(),
        dry_run: opts.dry_run,
        started_at,
        seconds: started.elapsed().as_secs_f64(),
        tenants: results.len(),
        restored: results.iter().filter(|r| r.outcome == Outcome::Restored).count(),
        skipped: results.iter().filter(|r| r.outcome == Outcome::Skipped).count(),
        failed: results.iter().filter(|r| r.outcome == Outcome::Failed).count(),
        bytes: results.iter().map(TenantReport::fetched).sum(),
        results,
    };
    report.results.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    let report_path = opts.report.clone().unwrap_or_else(|| opts.output_dir.join(REPORT));
    if !opts.dry_run {
        let json = serde_json::to_vec_pretty(&report).map_err(|e| Error::Write(report_path.clone(), e.into()))?;
        crate::durable::write(&report_path, &json).map_err(|e| Error::Write(report_path.clone(), e))?;
    }
    print_summary(&report, (!opts.dry_run).then_some(report_path.as_path()), &mut out)
        .map_err(|e| Error::Write(PathBuf::from("stdout"), e))?;
    Ok(report)
}

/// Creates the output directory, refuses one that holds files but no journal of ours
/// (unless `--force`), and reads the journal of an earlier run.
fn prepare_output(opts: &Options, journal: &Path) -> Result<HashMap<String, Record>, Error> {
    let dir = &opts.output_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::OutputDir(dir.clone(), e))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::OutputDir(dir.clone(), e))?;
    if !journal.exists() && !opts.force && entries.next().is_some() {
        return Err(Error::NotEmpty(dir.clone()));
    }
    Ok(read_journal(journal))
}

/// Prefix → what an earlier run restored (the last line of a prefix wins).
fn read_journal(path: &Path) -> HashMap<String, Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    // A torn last line (a crash mid-write) is skipped: that tenant is restored again.
    text.lines().filter_map(|l| serde_json::from_str::<Record>(l).ok()).map(|r| (r.prefix.clone(), r)).collect()
}

/// Each replica's output path and point; refuses output paths two replicas share.
fn assign(config: &Config, opts: &Options, replicas: Vec<StoredReplica>) -> Vec<Work> {
    let mut by_output: BTreeMap<PathBuf, usize> = BTreeMap::new();
    let mut work: Vec<Work> = Vec::with_capacity(replicas.len());
    for replica in replicas {
        let relative = layout_path(&config.storage.root, &replica.tenant.prefix);
        let output = opts.output_dir.join(&relative);
        let point = match &opts.points {
            Points::Latest => Point::Latest,
            Points::Time(t) => Point::Time(*t),
            Points::Txids(f) => f.get(&replica.tenant.prefix).map_or(Point::Latest, Point::Txid),
        };
        let mut refused = None;
        if let Some(&other) = by_output.get(&output) {
            let theirs = work[other].replica.tenant.prefix.clone();
            let why = format!("output {} is also the output of replica {theirs}", output.display());
            work[other].refused.get_or_insert(format!(
                "output {} is also the output of replica {}",
                output.display(),
                replica.tenant.prefix
            ));
            refused = Some(why);
        } else {
            by_output.insert(output.clone(), work.len());
        }
        work.push(Work { replica, output, relative, point, refused });
    }
    work
}

/// Restores (or plans, or skips) one tenant; the journal record when it was restored.
async fn one(
    storage: &Storage,
    w: &Work,
    opts: &Options,
    journal: &HashMap<String, Record>,
    stop: &CancellationToken,
) -> (TenantReport, Option<Record>) {
    let started = Instant::now();
    let t = &w.replica.tenant;
    let mut report = TenantReport {
        id: t.id.clone(),
        prefix: t.prefix.clone(),
        output: w.output.clone(),
        outcome: Outcome::Failed,
        point: w.point.describe(),
        txid: None,
        restored_at: None,
        files: 0,
        bytes: 0,
        size: None,
        sha256: None,
        integrity: None,
        seconds: 0.0,
        error: None,
    };
    let fail = |mut report: TenantReport, e: String| {
        report.error = Some(e);
        report.seconds = started.elapsed().as_secs_f64();
        (report, None)
    };
    if let Some(why) = &w.refused {
        return fail(report, why.clone());
    }
    let replica = storage.replica(&t.prefix);
    let steps: Vec<Step> =
        match restore::plan_from(&replica, w.replica.catalog.files().to_vec(), &w.point.target()).await {
            Ok(s) => s,
            Err(e) => return fail(report, chain(&e)),
        };
    let txid = steps.last().map_or(0, |s| s.file.max_txid);
    report.txid = Some(txid);
    report.files = steps.len();
    report.bytes = steps.iter().map(|s| s.file.size).sum();
    report.restored_at = steps.last().and_then(|s| s.timestamp_ms).map(from_epoch_ms);
    let earlier = journal.get(&t.prefix).filter(|r| r.txid == txid && r.output == w.relative);
    if opts.dry_run {
        report.outcome = match earlier {
            Some(r) if file_size(&w.output) == Some(r.size) => Outcome::Skipped,
            _ => Outcome::Planned,
        };
        report.seconds = started.elapsed().as_secs_f64();
        return (report, None);
    }
    if let Some(r) = earlier
        && file_size(&w.output) == Some(r.size)
        && restore::job::sha256_file(&w.output, stop).await.ok().as_deref() == Some(r.sha256.as_str())
    {
        report.outcome = Outcome::Skipped;
        report.size = Some(r.size);
        report.sha256 = Some(r.sha256.clone());
        report.seconds = started.elapsed().as_secs_f64();
        return (report, None);
    }
    // Created durably once (the first tenant of a directory creates it; the others
    // find it with a stat, without locking the parent as a mkdir would).
    if let Err(e) = crate::durable::create_dirs(crate::durable::parent_dir(&w.output)) {
        return fail(report, format!("{}: {e}", crate::durable::parent_dir(&w.output).display()));
    }
    let job = restore::Job {
        integrity: opts.integrity,
        sha256: true,
        force: true,
        plan: Some(steps),
        // The journal writer fsyncs the directory before it records the tenant.
        sync_dir: false,
        ..restore::Job::new(replica, w.point.target(), &w.output)
    };
    match job.run(&Arc::new(Progress::default()), stop).await {
        Err(e) => fail(report, chain(&e)),
        Ok(s) => {
            report.outcome = Outcome::Restored;
            report.txid = Some(s.txid);
            report.restored_at = Some(from_epoch_ms(s.timestamp_ms));
            report.bytes = s.bytes_downloaded;
            report.size = Some(s.size);
            report.sha256 = s.sha256.clone();
            report.integrity = s.integrity;
            report.seconds = started.elapsed().as_secs_f64();
            let record = s.sha256.map(|sha256| Record {
                prefix: t.prefix.clone(),
                output: w.relative.clone(),
                txid: s.txid,
                size: s.size,
                sha256,
            });
            (report, record)
        }
    }
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len())
}

/// Appends journal records, fsyncing at least every [`JOURNAL_SYNC`] — first the
/// directories the recorded outputs were renamed into (the jobs leave that to it: one
/// fsync per directory and second instead of one per tenant), then the journal.
struct JournalWriter {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    synced: Instant,
    /// Directories holding outputs renamed since the last sync.
    dirs: std::collections::BTreeSet<PathBuf>,
}

impl JournalWriter {
    fn open(path: &Path) -> Result<JournalWriter, Error> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::Write(path.to_path_buf(), e))?;
        crate::durable::sync_dir(crate::durable::parent_dir(path)).map_err(|e| Error::Write(path.to_path_buf(), e))?;
        Ok(JournalWriter {
            path: path.to_path_buf(),
            file: std::io::BufWriter::new(file),
            synced: Instant::now(),
            dirs: Default::default(),
        })
    }

    /// Records a tenant restored to `output`.
    fn append(&mut self, r: &Record, output: &Path) -> Result<(), Error> {
        self.dirs.insert(crate::durable::parent_dir(output).to_path_buf());
        let line = serde_json::to_string(r).map_err(|e| Error::Write(self.path.clone(), e.into()))?;
        writeln!(self.file, "{line}").map_err(|e| Error::Write(self.path.clone(), e))?;
        if self.synced.elapsed() >= JOURNAL_SYNC {
            self.sync()?;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Error> {
        for dir in std::mem::take(&mut self.dirs) {
            crate::durable::sync_dir(&dir).map_err(|e| Error::Write(dir.clone(), e))?;
        }
        self.file.flush().map_err(|e| Error::Write(self.path.clone(), e))?;
        self.file.get_ref().sync_data().map_err(|e| Error::Write(self.path.clone(), e))?;
        self.synced = Instant::now();
        Ok(())
    }
}

/// The progress display on stderr: a redrawn line on a terminal (tenants done/total,
/// bytes, rate, ETA), a plain line every 10 s otherwise; each failure on its own line.
#[derive(Clone)]
struct Ticker {
    inner: Arc<TickerInner>,
}

struct TickerInner {
    tty: bool,
    total: usize,
    counts: Arc<Counts>,
    started: Instant,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Serializes writes to stderr.
    lock: std::sync::Mutex<()>,
}

impl Ticker {
    fn start(total: usize, counts: Arc<Counts>, quiet: bool) -> Ticker {
        let tty = std::io::stderr().is_terminal();
        let inner = Arc::new(TickerInner {
            tty,
            total,
            counts,
            started: Instant::now(),
            task: std::sync::Mutex::new(None),
            lock: std::sync::Mutex::new(()),
        });
        if !quiet {
            let me = inner.clone();
            let every = if tty { TTY_EVERY } else { PLAIN_EVERY };
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    me.draw();
                }
            });
            *inner.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        }
        Ticker { inner }
    }

    /// Prints a failed tenant on its own line.
    fn failure(&self, r: &TenantReport) {
        let _g = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        let clear = if self.inner.tty { "\r\x1b[K" } else { "" };
        eprintln!("{clear}failed: {}: {}", r.prefix, r.error.as_deref().unwrap_or("?"));
    }

    /// Stops redrawing and prints the final line.
    fn finish(&self) {
        if let Some(t) = self.inner.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
            self.inner.draw();
            if self.inner.tty {
                eprintln!();
            }
        }
    }
}

impl TickerInner {
    fn line(&self) -> String {
        let done = self.counts.done.load(Ordering::Relaxed);
        let failed = self.counts.failed.load(Ordering::Relaxed);
        let bytes = self.counts.bytes.load(Ordering::Relaxed);
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / secs;
        let left = self.total as u64 - done.min(self.total as u64);
        let eta = if rate > 0.0 && left > 0 { format!(", ETA {:.0} s", left as f64 / rate) } else { String::new() };
        let pct = if self.total == 0 { 100.0 } else { done as f64 * 100.0 / self.total as f64 };
        format!(
            "restoring: {done}/{} tenants ({pct:.0} %), {}, {}/s, {rate:.0} tenants/s{eta}, {failed} failed",
            self.total,
            human_bytes(bytes),
            human_bytes((bytes as f64 / secs) as u64),
        )
    }

    fn draw(&self) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.tty {
            eprint!("\r\x1b[K{}", self.line());
        } else {
            eprintln!("{}", self.line());
        }
    }
}

/// `12.3 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let (mut v, mut u) = (n as f64, 0);
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// The summary table (and the failed tenants) for people.
fn print_summary(r: &Report, report_path: Option<&Path>, out: &mut impl Write) -> std::io::Result<()> {
    let rate = if r.seconds > 0.0 { r.tenants as f64 / r.seconds } else { 0.0 };
    let title = if r.dry_run { "restore --all --dry-run" } else { "restore --all" };
    writeln!(out, "{title}: {} tenant(s) from {} into {}", r.tenants, r.storage, r.output_dir.display())?;
    writeln!(out, "{:<10} {:>9} {:>12}", "OUTCOME", "TENANTS", "BYTES")?;
    let bytes_of = |o: Outcome| human_bytes(r.results.iter().filter(|t| t.outcome == o).map(|t| t.bytes).sum());
    let rows: &[(Outcome, &str)] = if r.dry_run {
        &[(Outcome::Planned, "to fetch"), (Outcome::Skipped, "done before"), (Outcome::Failed, "")]
    } else {
        &[(Outcome::Restored, ""), (Outcome::Skipped, "already restored and verified"), (Outcome::Failed, "")]
    };
    for (o, note) in rows {
        let n = r.results.iter().filter(|t| t.outcome == *o).count();
        let name = serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let bytes = if *o == Outcome::Failed { String::new() } else { bytes_of(*o) };
        writeln!(out, "{}", format!("{name:<10} {n:>9} {bytes:>12}  {note}").trim_end())?;
    }
    writeln!(
        out,
        "{:<10} {:>9} {:>12}  in {:.1} s ({rate:.0} tenants/s)",
        "total",
        r.tenants,
        human_bytes(r.bytes),
        r.seconds
    )?;
    let failed: Vec<&TenantReport> = r.results.iter().filter(|t| t.outcome == Outcome::Failed).collect();
    if !failed.is_empty() {
        writeln!(out, "\nFAILED ({}):", failed.len())?;
        for t in failed.iter().take(SHOWN_FAILURES) {
            writeln!(out, "  {}: {}", t.prefix, t.error.as_deref().unwrap_or("?"))?;
        }
        if failed.len() > SHOWN_FAILURES {
            writeln!(out, "  … and {} more (see the report)", failed.len() - SHOWN_FAILURES)?;
        }
    }
    if let Some(p) = report_path {
        writeln!(out, "report: {}", p.display())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_files_take_hex_lines_and_tenants_json_and_name_bad_lines() {
        let f = TxidFile::parse(
            "# frozen at 09:13\nabc 2a\ndatabases/prod/x 0x10\n{\"prefix\":\"databases/y\",\"latestTxid\":7,\"id\":\"y\"}\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.get("databases/abc"), Some(0x2a), "by id");
        assert_eq!(f.get("databases/prod/x"), Some(0x10), "by prefix");
        assert_eq!(f.get("databases/y"), Some(7), "decimal in tenants --json");
        assert_eq!(f.get("databases/z"), None);
        assert_eq!(TxidFile::parse("a 2a\nb zz\n").unwrap_err().0, 2);
        assert_eq!(TxidFile::parse("a\n").unwrap_err().0, 1);
        assert_eq!(TxidFile::parse("a 1\na 2\n").unwrap_err(), (2, "a is listed twice".to_owned()));
    }
}
