//! What the fault-injection suite (`tests/faults.rs`) and the soak (`benches/soak.rs`)
//! share: a writer process that records every commit it was told succeeded (a
//! *ledger*), restores with both tools, the "acknowledged before the last successful
//! sync" bound read from the daemon's API, a check that every LTX object in a replica
//! is whole, and small tmpfs mounts for full disks.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use litefleet::errors::chain;

use super::daemon::api;
use super::{Writer, describe_output, litestream_bin, run_litestream_restore_env, run_with_timeout, wait_until};

/// `LITEFLEET_FAULTS_LONG=1`: more rounds, longer faults (minutes instead of seconds).
pub fn long() -> bool {
    std::env::var("LITEFLEET_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// The random seed of a scenario: `LITEFLEET_FAULTS_SEED`, else the clock. Printed, so
/// a failure can be replayed.
pub fn seed(scenario: &str) -> u64 {
    let seed = std::env::var("LITEFLEET_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64));
    eprintln!("{scenario}: LITEFLEET_FAULTS_SEED={seed}");
    seed
}

// ───────────────────────────── the ledger writer ─────────────────────────────

/// One commit the writer process reported as done.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    pub seq: u64,
    pub at: Instant,
    pub wall: SystemTime,
}

/// How a [`Load`] writes, besides its ledger rows.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    /// Pause between two commands.
    pub pause: Duration,
    /// Largest ledger row payload, in bytes.
    pub max_row: usize,
    /// Also update/delete/bulk-insert another table and checkpoint now and then.
    pub churn: bool,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { pause: Duration::from_millis(30), max_row: 1500, churn: true }
    }
}

/// A `litefleet-writer` process writing one database from a thread: every ledger row
/// `seq` is one transaction, recorded once the writer answered `ok` — the application
/// was told it committed.
pub struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    handle: Option<JoinHandle<Writer>>,
}

/// The ledger table every load writes.
pub const LEDGER_DDL: &str = "CREATE TABLE IF NOT EXISTS ledger(seq INTEGER PRIMARY KEY, v BLOB)";

impl Load {
    /// Opens `db` in a new writer process and starts writing at `first_seq`.
    pub fn start(db: &Path, first_seq: u64, seed: u64, mix: Mix) -> Load {
        let w = Writer::open(db);
        Load::resume(w, first_seq, seed, mix)
    }

    /// Goes on with a writer that has its database open.
    pub fn resume(mut w: Writer, first_seq: u64, seed: u64, mix: Mix) -> Load {
        w.cmd(&format!("exec {LEDGER_DDL}"));
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (st, ak) = (stop.clone(), acks.clone());
        let handle = std::thread::spawn(move || {
            let mut rng = fastrand::Rng::with_seed(seed);
            let mut seq = first_seq;
            while !st.load(Ordering::SeqCst) {
                let n = rng.usize(16..=mix.max_row.max(16));
                // Retried on a busy database (an application would): the ledger must hold
                // exactly the rows the writer acknowledged.
                match w.try_cmd(&format!("exec INSERT INTO ledger(seq, v) VALUES ({seq}, randomblob({n}))")) {
                    Ok(_) => {
                        ak.lock().unwrap().push(Ack { seq, at: Instant::now(), wall: SystemTime::now() });
                        seq += 1;
                    }
                    Err(e) if e.contains("locked") || e.contains("busy") => {}
                    Err(e) => panic!("ledger insert {seq} failed: {e}"),
                }
                if mix.churn {
                    // Another table changes too, and the application checkpoints now and
                    // then (its checkpoints cannot pass the daemon's read lock; a TRUNCATE
                    // one waits for it up to the busy timeout, so it is rare).
                    let _ = match rng.u32(0..1000) {
                        0..=99 => w.try_cmd(&format!("insert t {} {}", rng.usize(1..20), rng.usize(10..3000))),
                        100..=149 => w.try_cmd(&format!("update t {} {}", rng.usize(1..10), rng.usize(10..3000))),
                        150..=179 => w.try_cmd("delete t 3"),
                        180..=199 => w.try_cmd("checkpoint passive"),
                        200..=202 => w.try_cmd("checkpoint truncate"),
                        _ => Ok(String::new()),
                    };
                }
                std::thread::sleep(mix.pause);
            }
            w
        });
        Load { stop, acks, handle: Some(handle) }
    }

    /// Every acknowledged commit so far, in order.
    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().unwrap().clone()
    }

    /// The newest acknowledged ledger row (`None` before the first).
    pub fn last(&self) -> Option<Ack> {
        self.acks.lock().unwrap().last().copied()
    }

    /// Waits until at least `n` more rows are acknowledged (bounded).
    pub fn wait_rows(&self, n: usize) {
        let have = self.acks.lock().unwrap().len();
        let ok = wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
            self.acks.lock().unwrap().len() >= have + n
        });
        assert!(ok, "the writer did not commit {n} rows within 60 s");
    }

    /// Stops writing and hands back the writer (database still open) and the acks.
    pub fn stop(mut self) -> (Writer, Vec<Ack>) {
        self.stop.store(true, Ordering::SeqCst);
        let w = self.handle.take().expect("running").join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let acks = self.acks.lock().unwrap().clone();
        (w, acks)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The ledger rows of a database file (no WAL next to it: a restore's output).
pub fn ledger_of(path: &Path) -> Vec<u64> {
    let uri = format!("file:{}?immutable=1", path.display());
    let c = rusqlite::Connection::open_with_flags(
        &uri,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let has: bool = c
        .query_row("SELECT count(*) FROM sqlite_schema WHERE name = 'ledger'", [], |r| r.get::<_, i64>(0))
        .map(|n| n > 0)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if !has {
        return Vec::new();
    }
    let mut st = c.prepare("SELECT seq FROM ledger ORDER BY seq").expect("prepare");
    st.query_map([], |r| r.get::<_, i64>(0)).expect("ledger").map(|r| r.expect("seq") as u64).collect()
}

/// Asserts that `rows` (a restore's ledger) are exactly `first..=k` for some `k` at
/// least `must_have` (`None`: nothing required): a prefix of the history, holding
/// every row acknowledged before the last successful sync. Returns `k`.
pub fn assert_ledger_prefix(what: &str, rows: &[u64], first: u64, must_have: Option<u64>) -> Option<u64> {
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(*r, first + i as u64, "{what}: the ledger has a hole or a stranger at row {i}: {rows:?}");
    }
    let k = rows.last().copied();
    if let Some(m) = must_have {
        assert!(
            k.is_some_and(|k| k >= m),
            "{what}: lost acknowledged transactions: the restore ends at {k:?}, but ledger row {m} was \
             acknowledged before the last successful sync"
        );
    }
    k
}

// ───────────────────────────── restores ─────────────────────────────

/// Where a replica is, as both restore tools take it.
#[derive(Clone, Debug)]
pub enum Location {
    /// `s3://<bucket>/<prefix>` on an S3 endpoint, with credentials in `env`.
    S3 { endpoint: String, bucket: String, prefix: String, env: Vec<(String, String)> },
    /// A replica folder (`file://<path>`).
    Folder(PathBuf),
}

impl Location {
    pub fn s3(s3: &super::S3Server, endpoint: &str, bucket: &str, prefix: &str) -> Location {
        Location::S3 {
            endpoint: endpoint.to_string(),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            env: s3.litestream_env(),
        }
    }

    /// The same replica through another endpoint (a proxy).
    pub fn via(&self, endpoint: &str) -> Location {
        match self {
            Location::S3 { bucket, prefix, env, .. } => Location::S3 {
                endpoint: endpoint.into(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                env: env.clone(),
            },
            other => other.clone(),
        }
    }

    pub fn litefleet_url(&self) -> String {
        match self {
            Location::S3 { endpoint, bucket, prefix, .. } => {
                format!("s3://{bucket}/{prefix}?endpoint={endpoint}&region=us-east-1&force-path-style=true")
            }
            Location::Folder(p) => format!("file://{}", p.display()),
        }
    }

    pub fn litestream_url(&self) -> String {
        match self {
            Location::S3 { endpoint, bucket, prefix, .. } => {
                format!("s3://{bucket}/{prefix}?endpoint={endpoint}&region=us-east-1&forcePathStyle=true")
            }
            Location::Folder(p) => format!("file://{}", p.display()),
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Location::S3 { env, .. } => env.clone(),
            Location::Folder(_) => Vec::new(),
        }
    }
}

/// `litefleet restore <loc> -o <out> --integrity-check quick [extra]`: the restored
/// bytes and the TXID they are at, or the tool's output as the error.
pub fn litefleet_restore(loc: &Location, out: &Path, extra: &[&str]) -> Result<(Vec<u8>, u64), String> {
    let _ = std::fs::remove_file(out);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
    cmd.args(["restore", &loc.litefleet_url(), "-o", out.to_str().unwrap(), "--integrity-check", "quick"]);
    cmd.args(extra);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in loc.env() {
        cmd.env(k, v);
    }
    let o = run_with_timeout(&mut cmd, Duration::from_secs(120));
    if !o.status.success() {
        return Err(describe_output(&o));
    }
    // "restored <out> to TXID <16 hex> from …"
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    let txid = said
        .split("to TXID ")
        .nth(1)
        .and_then(|r| u64::from_str_radix(r.get(..16)?, 16).ok())
        .ok_or_else(|| format!("no TXID in litefleet restore's output: {said}"))?;
    let bytes = std::fs::read(out).map_err(|e| format!("reading {}: {e}", out.display()))?;
    Ok((bytes, txid))
}

/// `litestream restore -o <out> [-txid <txid>] <loc>` (None when litestream is not
/// installed, outside CI).
pub fn litestream_restore(loc: &Location, out: &Path, txid: Option<u64>) -> Option<Result<Vec<u8>, String>> {
    let bin = litestream_bin()?;
    let _ = std::fs::remove_file(out);
    let t = txid.map(|t| format!("{t:016x}"));
    let args: Vec<&str> = match &t {
        Some(t) => vec!["-txid", t],
        None => vec![],
    };
    let o = run_litestream_restore_env(&bin, &loc.litestream_url(), out, &args, &loc.env());
    if !o.status.success() {
        return Some(Err(describe_output(&o)));
    }
    Some(std::fs::read(out).map_err(|e| format!("reading {}: {e}", out.display())))
}

/// Restores `loc` with both tools into `dir` and asserts that both succeed with the same
/// bytes, which pass SQLite's check; returns the path of litefleet's copy. The replica
/// may be live: litestream restores the TXID litefleet reached (a few tries, should the
/// lifecycle compact that point away in between).
pub fn restore_both(what: &str, loc: &Location, dir: &Path) -> PathBuf {
    let ours = dir.join(format!("{}-litefleet.db", sanitize(what)));
    let theirs = dir.join(format!("{}-litestream.db", sanitize(what)));
    let mut tries = 0;
    loop {
        tries += 1;
        let (a, txid) =
            litefleet_restore(loc, &ours, &[]).unwrap_or_else(|e| panic!("{what}: litefleet restore failed: {e}"));
        match litestream_restore(loc, &theirs, Some(txid)) {
            None => break,
            Some(Err(e)) if tries < 3 => eprintln!("{what}: litestream restore -txid {txid:016x} failed, again: {e}"),
            Some(Err(e)) => panic!("{what}: litestream restore -txid {txid:016x} failed: {e}"),
            Some(Ok(b)) => {
                assert!(
                    a == b,
                    "{what}: at TXID {txid:016x} litefleet and litestream restore different bytes (first difference at {:?})",
                    super::first_difference(&a, &b, 4096)
                );
                break;
            }
        }
    }
    assert!(super::integrity_ok(&ours), "{what}: the restore fails SQLite's integrity check");
    ours
}

/// Restores `loc` with both tools and asserts both equal `source` (checkpointed bytes).
pub fn assert_restores_to(what: &str, loc: &Location, dir: &Path, source: &[u8]) -> PathBuf {
    let ours = restore_both(what, loc, dir);
    let got = std::fs::read(&ours).unwrap();
    assert!(
        got == source,
        "{what}: the restore differs from the source (first difference at {:?}; {} vs {} bytes)",
        super::first_difference(&got, source, 4096),
        got.len(),
        source.len()
    );
    ours
}

fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
}

// ───────────────────────────── whole objects ─────────────────────────────

/// What [`check_ltx_tree`] found.
#[derive(Debug, Default)]
pub struct TreeCheck {
    /// LTX files decoded and verified (header, pages, index, trailer, checksum).
    pub whole: usize,
    /// Files under a final `.ltx` name that do not decode: `(path, error)`.
    pub torn: Vec<(PathBuf, String)>,
    /// Files listed but deleted (by the running daemon's retention) before they were read.
    pub gone: usize,
    /// Temporary files (`*.tmp`, s3s-fs's `.tmp.*`), which no restore reads.
    pub temps: Vec<PathBuf>,
}

/// Decodes every `*.ltx` file below `root` (a replica folder, or an s3s-fs bucket
/// directory) with full verification.
pub fn check_ltx_tree(root: &Path) -> TreeCheck {
    let mut out = TreeCheck::default();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if p.is_dir() {
                todo.push(p);
            } else if name.starts_with(".tmp.") || name.ends_with(".tmp") {
                out.temps.push(p);
            } else if name.ends_with(".ltx") {
                match decode_file(&p, &name) {
                    Ok(()) => out.whole += 1,
                    // Listed, then deleted by the running daemon's retention before we
                    // read it: gone whole, not torn.
                    Err(e) if e.kind == Some(std::io::ErrorKind::NotFound) => out.gone += 1,
                    Err(e) => out.torn.push((p, e.what)),
                }
            }
        }
    }
    out
}

/// Why a file under a final `.ltx` name did not check out.
struct Unwhole {
    what: String,
    /// Set when the file could not be read at all.
    kind: Option<std::io::ErrorKind>,
}

impl From<String> for Unwhole {
    fn from(what: String) -> Unwhole {
        Unwhole { what, kind: None }
    }
}

fn decode_file(p: &Path, name: &str) -> Result<(), Unwhole> {
    let bytes = std::fs::read(p).map_err(|e| Unwhole { what: e.to_string(), kind: Some(e.kind()) })?;
    let dec = litefleet::ltx::Decoder::new(&bytes[..]).map_err(|e| format!("{} bytes: {}", bytes.len(), chain(&e)))?;
    let (min, max) = (dec.header().min_txid, dec.header().max_txid);
    dec.finish().map_err(|e| format!("{} bytes: {}", bytes.len(), chain(&e)))?;
    if litefleet::ltx::parse_filename(name) != Some((min, max)) {
        return Err(format!("header says TXIDs {min:016x}-{max:016x}").into());
    }
    Ok(())
}

/// Asserts that no final `.ltx` name below `root` holds a torn or corrupt file.
pub fn assert_no_torn_objects(what: &str, root: &Path) -> TreeCheck {
    let t = check_ltx_tree(root);
    assert!(t.torn.is_empty(), "{what}: torn or corrupt objects under final names: {:#?}", t.torn);
    t
}

// ───────────────────────────── the daemon's view ─────────────────────────────

/// One look at a tenant in the daemon's API.
#[derive(Clone, Debug)]
pub struct Look {
    /// When the request was sent.
    pub sent: Instant,
    pub sent_wall: SystemTime,
    pub status: String,
    pub syncs: u64,
    pub errors: u64,
    pub hot: bool,
    pub lag: f64,
    /// Lower bound of when its last successful sync finished.
    pub last_sync: Option<SystemTime>,
    pub last_error: Option<String>,
}

/// The tenant `id` in `/api/clients` now (the board only: this sends no storage
/// request, unlike `/api/clients/<id>`, which lists the replica).
pub fn look(addr: SocketAddr, id: &str) -> Option<Look> {
    let sent = Instant::now();
    let sent_wall = SystemTime::now();
    let page = api(addr, &format!("/api/clients?q={id}"))?;
    let v = page["clients"].as_array()?.iter().find(|c| c["clientId"] == id)?.clone();
    let age = v["lastSyncAgeSeconds"].as_f64();
    Some(Look {
        sent,
        sent_wall,
        status: v["status"].as_str().unwrap_or("").to_string(),
        syncs: v["syncs"].as_u64().unwrap_or(0),
        errors: v["errors"].as_u64().unwrap_or(0),
        hot: v["hot"].as_bool().unwrap_or(false),
        lag: v["lagSeconds"].as_f64().unwrap_or(0.0),
        last_sync: age.and_then(|a| sent_wall.checked_sub(Duration::from_secs_f64(a))),
        last_error: v["lastError"].as_str().map(str::to_owned),
    })
}

/// Polls tenants' API entries in the background, to tell afterwards which commits a
/// *successful sync* must have shipped: a sync that completed after the `n+2`-th was
/// started after the `n+1`-th finished, so after any look that saw `n` syncs — every
/// commit acknowledged before that look is in the replica.
pub struct SyncWatch {
    stop: Arc<AtomicBool>,
    looks: Arc<Mutex<Vec<(String, Look)>>>,
    handle: Option<JoinHandle<()>>,
}

impl SyncWatch {
    pub fn start(addr: SocketAddr, ids: &[&str]) -> SyncWatch {
        let ids: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let looks = Arc::new(Mutex::new(Vec::new()));
        let (st, lk) = (stop.clone(), looks.clone());
        let handle = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for id in &ids {
                    if let Some(l) = look(addr, id) {
                        lk.lock().unwrap().push((id.clone(), l));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        SyncWatch { stop, looks, handle: Some(handle) }
    }

    /// The newest ledger row of `acks` that a successful sync of `id` must have shipped.
    pub fn synced(&self, id: &str, acks: &[Ack]) -> Option<u64> {
        let looks: Vec<Look> =
            self.looks.lock().unwrap().iter().filter(|(i, _)| i == id).map(|(_, l)| l.clone()).collect();
        let last = looks.last()?.syncs;
        let pin = looks.iter().rev().find(|l| l.syncs + 2 <= last)?;
        acks.iter().rev().find(|a| a.at < pin.sent).map(|a| a.seq)
    }

    /// Every look at `id` so far.
    pub fn looks(&self, id: &str) -> Vec<Look> {
        self.looks.lock().unwrap().iter().filter(|(i, _)| i == id).map(|(_, l)| l.clone()).collect()
    }
}

impl Drop for SyncWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Waits (bounded by `timeout`) until the daemon has shipped everything committed to
/// `id` before `last_write`: the tenant went cold (its idle sync reads the whole WAL
/// and starts after the last wake) after `last_write`, with nothing pending and no error.
/// Returns how long it took.
pub fn wait_shipped(addr: SocketAddr, id: &str, last_write: SystemTime, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let mut seen = None;
    let ok = wait_until(timeout, Duration::from_millis(50), || {
        seen = look(addr, id);
        seen.as_ref().is_some_and(|l| {
            l.status == "active" && !l.hot && l.lag == 0.0 && l.last_sync.is_some_and(|t| t > last_write)
        })
    });
    assert!(ok, "tenant {id} did not ship everything within {timeout:?}; last look: {seen:?}");
    t0.elapsed()
}

// ───────────────────────────── full disks ─────────────────────────────

/// A small tmpfs mounted on a directory, unmounted on drop (lazily if it is busy).
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    /// `mount -t tmpfs -o size=<size> tmpfs <dir>`. `Err` (with the reason) where this
    /// process may not mount (not root, no CAP_SYS_ADMIN): the caller skips.
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !o.status.success() {
            return Err(format!("mount -t tmpfs on {}: {}", dir.display(), String::from_utf8_lossy(&o.stderr).trim()));
        }
        Ok(Tmpfs { dir: dir.to_path_buf() })
    }

    /// Fills the file system with a ballast file until it is full, then gives back
    /// `leave` bytes (so some writes still half-succeed). Returns the ballast's path.
    pub fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let p = self.dir.join("ballast");
        let mut f = std::fs::File::create(&p).expect("ballast");
        let chunk = vec![0x55u8; 64 << 10];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc_enospc()) => break,
                Err(e) => panic!("filling {}: {e}", self.dir.display()),
            }
        }
        let _ = f.flush();
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        f.set_len(len.saturating_sub(leave)).expect("shrinking ballast");
        p
    }

    /// Bytes free.
    pub fn free(&self) -> u64 {
        let o = Command::new("df").args(["-B1", "--output=avail"]).arg(&self.dir).output().expect("df");
        String::from_utf8_lossy(&o.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or(0)
    }
}

fn libc_enospc() -> i32 {
    28 // ENOSPC on Linux
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..50 {
            match Command::new("umount").arg(&self.dir).output() {
                Ok(o) if o.status.success() => return,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        let _ = Command::new("umount").arg("-l").arg(&self.dir).output();
    }
}

/// Mounts a tmpfs for a scenario, or prints why the scenario is skipped.
pub fn tmpfs_or_skip(scenario: &str, dir: &Path, size: &str) -> Option<Tmpfs> {
    match Tmpfs::mount(dir, size) {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("skipping {scenario}: cannot mount a tmpfs here ({e}); it needs root (CI runs as root)");
            None
        }
    }
}

// ───────────────────────────── what the log said ─────────────────────────────

/// One example of each kind of WARN/ERROR line in a daemon log (timestamps cut, lines
/// grouped by their text with digits and paths blurred), for the scenario's output and
/// for docs/operations.md.
pub fn distinct_warnings(log: &str) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for line in log.lines() {
        let Some(at) = line.find(" WARN ").or_else(|| line.find(" ERROR ")) else { continue };
        let text = line[at + 1..].to_string();
        let shape: String = text
            .split_whitespace()
            .map(|w| if w.contains('/') || w.chars().any(|c| c.is_ascii_digit()) { "_" } else { w })
            .take(8)
            .collect::<Vec<_>>()
            .join(" ");
        if seen.insert(shape) {
            out.push(text);
        }
    }
    out
}

/// Prints [`distinct_warnings`] under a heading.
pub fn print_warnings(scenario: &str, log: &str) {
    let w = distinct_warnings(log);
    eprintln!("{scenario}: {} kinds of WARN/ERROR lines", w.len());
    for line in w.iter().take(20) {
        eprintln!("    {}", line.chars().take(400).collect::<String>());
    }
}
