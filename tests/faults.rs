//! Fault injection: the real `litefleet` daemon, tenant databases written by separate
//! `litefleet-writer` processes that record every commit they were told succeeded (a
//! ledger), and real faults — `kill -9`, a TCP proxy in front of the S3 server that
//! refuses, swallows, resets, delays or corrupts, small tmpfs mounts that fill up, and
//! tenant files replaced, renamed, deleted, truncated, vacuumed and switched out of WAL
//! under the running daemon.
//!
//! Every scenario ends the same way: both restorers (`litefleet restore` and the real
//! `litestream restore`) produce byte-identical copies of the checkpointed sources,
//! every object under a final `.ltx` name decodes whole, and no ledger row that was
//! acknowledged before the last successful sync is missing. Recovery times after an
//! outage or a freed disk are printed against `sync_interval` + the retry backoff.
//!
//! `LITEFLEET_FAULTS_LONG=1` runs more rounds and longer faults (minutes);
//! `LITEFLEET_FAULTS_SEED=<n>` replays a run's random choices (each test prints its seed).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::{Daemon, api};
use common::faults::*;
use common::proxy::{FaultProxy, Mode};
use common::*;

const G1: &str = "11111111-1111-4111-8111-111111111111";
const G2: &str = "22222222-2222-4222-8222-222222222222";
const G3: &str = "33333333-3333-4333-8333-333333333333";
const G4: &str = "44444444-4444-4444-8444-444444444444";
const G5: &str = "55555555-5555-4555-8555-555555555555";
const G6: &str = "66666666-6666-4666-8666-666666666666";
const BUCKET: &str = "faults";
/// The daemon's `sync_interval` in these tests.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// Compaction, snapshots and L0 retention in seconds, so every scenario also runs them.
const FAST_LIFECYCLE: &str =
    "[lifecycle]\nlevels = [\"2s\", \"6s\"]\nsnapshot_interval = \"10s\"\nl0_retention = \"3s\"\n";

/// Where the daemon under test replicates to.
enum Store {
    /// The S3 server, directly.
    S3,
    /// The S3 server through the fault proxy.
    Proxied,
    /// A replica folder.
    Folder(PathBuf),
}

/// A scenario's world: a temp dir with the watched folder, an S3 server with the
/// bucket, the fault proxy in front of it, the daemon's API port.
struct World {
    dir: tempfile::TempDir,
    s3: S3Server,
    proxy: FaultProxy,
    port: u16,
}

impl World {
    fn new() -> World {
        let s3 = S3Server::start();
        s3.create_bucket(BUCKET);
        let proxy = FaultProxy::start(s3.addr());
        let dir = tempfile::Builder::new().prefix("litefleet-faults-").tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        World { dir, s3, proxy, port: free_port() }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn db(&self, id: &str) -> PathBuf {
        self.path(&format!("data/{id}.db"))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A config watching `data/` and replicating to `store`; `extra` is appended.
    fn config(&self, store: &Store, state_dir: &Path, extra: &str) -> PathBuf {
        let mut t = format!("[[watch]]\ndir = {:?}\n", self.path("data").display().to_string());
        match store {
            Store::S3 | Store::Proxied => {
                let endpoint = if matches!(store, Store::S3) { self.s3.endpoint() } else { self.proxy.endpoint() };
                t.push_str(&format!(
                    "[storage]\nurl = \"s3://{BUCKET}\"\nendpoint = {endpoint:?}\nregion = \"us-east-1\"\n\
                     force_path_style = true\naccess_key_id = {:?}\nsecret_access_key = {:?}\n",
                    S3Server::ACCESS_KEY,
                    S3Server::SECRET_KEY
                ));
            }
            Store::Folder(p) => t.push_str(&format!("[storage]\nurl = \"file://{}\"\n", p.display())),
        }
        t.push_str(&format!(
            "[replication]\nsync_interval = \"{}ms\"\nidle_after = \"2s\"\nstate_dir = {:?}\n",
            SYNC_INTERVAL.as_millis(),
            state_dir.display().to_string()
        ));
        t.push_str(&format!("[http]\nlisten = \"127.0.0.1:{}\"\n", self.port));
        t.push_str(extra);
        let p = self.path("litefleet.toml");
        std::fs::write(&p, t).unwrap();
        p
    }

    /// A tenant's replica on the S3 server, read directly (not through the proxy).
    fn s3_loc(&self, id: &str) -> Location {
        Location::s3(&self.s3, &self.s3.endpoint(), BUCKET, &format!("databases/{id}"))
    }

    /// The bucket's directory on disk (s3s-fs keeps one file per object).
    fn bucket_dir(&self) -> PathBuf {
        self.s3.root().join(BUCKET)
    }

    /// Starts the daemon and waits for its first scan.
    fn daemon(&self, config: &Path) -> Daemon {
        let d = Daemon::config(config, self.dir.path());
        d.expect("🎯 Monitoring");
        d
    }

    /// Waits until `id` is registered and has shipped something.
    fn wait_replicating(&self, id: &str) {
        let ok = wait_until(Duration::from_secs(30), Duration::from_millis(50), || {
            look(self.addr(), id).is_some_and(|l| l.syncs > 0 && l.status == "active")
        });
        assert!(ok, "{id} never replicated: {:?}", api(self.addr(), "/api/status"));
    }

    /// Stops `load`, waits until the daemon shipped all of it, and asserts that both
    /// restorers give the checkpointed source and every acknowledged row since `first`.
    fn settle_and_compare(&self, what: &str, id: &str, load: Load, first: u64) -> (Writer, Vec<Ack>) {
        let (w, acks) = load.stop();
        let last = acks.last().map_or(SystemTime::now(), |a| a.wall);
        wait_shipped(self.addr(), id, last, Duration::from_secs(60));
        self.compare(what, id, first, &acks);
        (w, acks)
    }

    /// Both restorers equal the checkpointed source; its ledger is `first..` every ack.
    fn compare(&self, what: &str, id: &str, first: u64, acks: &[Ack]) {
        let source = checkpointed_bytes(&self.db(id));
        let ours = assert_restores_to(what, &self.s3_loc(id), self.dir.path(), &source);
        let rows = ledger_of(&ours);
        let acked: Vec<u64> = acks.iter().map(|a| a.seq).filter(|s| *s >= first).collect();
        assert_eq!(rows, acked, "{what}: the restored ledger is not exactly the acknowledged rows");
    }
}

/// The backoff the daemon's log announced last (`retry_in=4s`), if any.
fn last_backoff(log: &str) -> Option<Duration> {
    let at = log.rfind("retry_in=")?;
    let v: String = log[at + 9..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '.').collect();
    if let Some(ms) = v.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|x| Duration::from_secs_f64(x / 1000.0));
    }
    v.strip_suffix('s').and_then(|s| s.parse::<f64>().ok()).map(Duration::from_secs_f64)
}

/// Restores `loc` (litefleet, every 250 ms) until its ledger reaches `seq`; returns how
/// long that took. This is recovery as a user sees it: the acknowledged commit is in
/// the backup.
fn time_until_restorable(loc: &Location, seq: u64, scratch: &Path, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let out = scratch.join("recovery-probe.db");
    let mut last = Ok(None);
    while t0.elapsed() < timeout {
        match litefleet_restore(loc, &out, &[]) {
            Ok(_) => {
                let rows = ledger_of(&out);
                last = Ok(rows.last().copied());
                if rows.last().is_some_and(|l| *l >= seq) {
                    return t0.elapsed();
                }
            }
            Err(e) => last = Err(e),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("{} never held ledger row {seq} within {timeout:?}; last restore: {last:?}", loc.litefleet_url());
}

/// During a fault: the replica still restores (both tools), to a prefix of the ledger
/// that holds every row acknowledged before the tenant's last successful sync.
fn check_mid_fault(w: &World, what: &str, id: &str, watch: &SyncWatch, load: &Load) {
    let acks = load.acks();
    let must = watch.synced(id, &acks);
    let ours = restore_both(what, &w.s3_loc(id), w.dir.path());
    let k = assert_ledger_prefix(what, &ledger_of(&ours), 1, must);
    eprintln!(
        "{what}: restores to ledger row {k:?} (synced bound {must:?}, acknowledged {:?})",
        acks.last().map(|a| a.seq)
    );
}

// ───────────────────────────── kill -9 ─────────────────────────────

/// `kill -9` of the daemon at random moments of a write load, several rounds (start-up
/// included): after each kill the replica restores with both tools to a prefix of the
/// ledger holding every row acknowledged before the last successful sync; after the
/// last, a restarted daemon catches up and both restores equal the sources.
#[test]
fn kill_9_of_the_daemon_at_random_moments_loses_nothing_acknowledged() {
    let seed = seed("kill_9_of_the_daemon");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::new();
    let config = w.config(&Store::S3, &w.path("state"), FAST_LIFECYCLE);
    let ids = [G1, G2];
    let heavy = Mix { pause: Duration::from_millis(10), max_row: 6000, churn: true };
    let loads = [Load::start(&w.db(G1), 1, seed, Mix::default()), Load::start(&w.db(G2), 1, seed ^ 1, heavy)];
    let rounds = if long() { 25 } else { 4 };
    for round in 0..rounds {
        let d = Daemon::config(&config, w.dir.path());
        let watch = SyncWatch::start(w.addr(), &ids);
        let life = Duration::from_millis(rng.u64(200..4000));
        std::thread::sleep(life);
        d.kill9();
        for (id, load) in ids.iter().zip(&loads) {
            let what = format!("round {round} ({life:?} after start) {id}");
            if w.s3.objects(BUCKET).iter().all(|k| !k.contains(id)) {
                eprintln!("{what}: killed before the first upload");
                continue;
            }
            check_mid_fault(&w, &what, id, &watch, load);
        }
        assert_no_torn_objects(&format!("round {round}"), &w.bucket_dir());
    }
    let d = w.daemon(&config);
    for (id, load) in ids.iter().zip(loads) {
        let (writer, _) = w.settle_and_compare(&format!("after {rounds} kills {id}"), id, load, 1);
        writer.quit();
    }
    let t = assert_no_torn_objects("after the kills", &w.bucket_dir());
    eprintln!("{} whole LTX objects after {rounds} kill -9 rounds", t.whole);
    print_warnings("after the kills", &d.stop());
}

/// `kill -9` of `litefleet restore` half-way (slowed by the proxy): no output appears
/// (or the old one is left whole, with `--force`), a rerun succeeds, and both restorers
/// still give the source.
#[test]
fn kill_9_of_a_restore_leaves_no_partial_output_and_a_rerun_succeeds() {
    let seed = seed("kill_9_of_a_restore");
    let mut rng = fastrand::Rng::with_seed(seed);
    let w = World::new();
    let db = w.db(G1);
    let mut wr = Writer::open(&db);
    wr.cmd("big t 16");
    wr.cmd("insert t 50 1000");
    wr.quit();
    let source = checkpointed_bytes(&db);
    let config = w.config(&Store::S3, &w.path("state"), "");
    let d = w.daemon(&config);
    wait_shipped(w.addr(), G1, SystemTime::now(), Duration::from_secs(60));
    d.stop();
    let through_proxy = w.s3_loc(G1).via(&w.proxy.endpoint());
    let out = w.path("restored.db");
    let old = b"the previous restore, which must survive a killed --force restore".to_vec();
    for force in [false, true] {
        let _ = std::fs::remove_file(&out);
        if force {
            std::fs::write(&out, &old).unwrap();
        }
        // 16 MiB at 4 MiB/s: the restore runs ~4 s; kill it somewhere inside.
        w.proxy.set(Mode::Throttle(4 << 20));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litefleet"));
        cmd.args(["restore", &through_proxy.litefleet_url(), "-o", out.to_str().unwrap()]);
        if force {
            cmd.arg("--force");
        }
        for (k, v) in through_proxy.env() {
            cmd.env(k, v);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let after = Duration::from_millis(rng.u64(300..3500));
        std::thread::sleep(after);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!finished, "the restore finished within {after:?}: the throttle did not slow it");
        if force {
            assert_eq!(std::fs::read(&out).unwrap(), old, "a killed --force restore damaged the existing output");
        } else {
            assert!(!out.exists(), "a killed restore left a partial output at {}", out.display());
        }
        w.proxy.set(Mode::Pass);
        let extra: &[&str] = if force { &["--force"] } else { &[] };
        let (got, _) = litefleet_restore(&through_proxy, &out, extra)
            .unwrap_or_else(|e| panic!("rerun after kill -9 (force={force}, at {after:?}): {e}"));
        assert!(got == source, "rerun differs from the source at {:?}", first_difference(&got, &source, 4096));
        let leftovers: Vec<_> = std::fs::read_dir(w.dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("restored.db") && n != "restored.db")
            .collect();
        assert!(leftovers.is_empty(), "files left next to the output after the rerun: {leftovers:?}");
        eprintln!("restore killed after {after:?} (force={force}): no partial output; the rerun succeeded");
    }
    // As every scenario ends: both restorers give the source (the replica was never
    // touched by the killed restores).
    assert_restores_to("after the killed restores", &w.s3_loc(G1), w.dir.path(), &source);
}

// ───────────────────────────── storage outages ─────────────────────────────

/// The storage goes away and comes back through the proxy: connections refused, a
/// blackhole, uploads reset half-way, 5 s of latency. The daemon is never restarted;
/// during each fault the replica stays restorable, after it the daemon catches up by
/// itself (the time it took is printed against sync_interval + the backoff it was in).
#[test]
fn storage_outages_through_a_proxy_recover_without_a_restart() {
    let seed = seed("storage_outages");
    let w = World::new();
    let config = w.config(&Store::Proxied, &w.path("state"), FAST_LIFECYCLE);
    let ids = [G1, G2];
    let loads = [
        Load::start(&w.db(G1), 1, seed, Mix::default()),
        Load::start(&w.db(G2), 1, seed ^ 1, Mix { max_row: 12_000, ..Mix::default() }),
    ];
    let d = w.daemon(&config);
    for id in ids {
        w.wait_replicating(id);
    }
    let watch = SyncWatch::start(w.addr(), &ids);
    let (short, long_run) = (Duration::from_secs(5), long());
    let scale = if long_run { 6 } else { 1 };
    let mut faults = vec![
        ("connections refused", Mode::Refuse, short * scale),
        ("blackhole", Mode::Blackhole, short * scale),
        ("uploads reset half-way", Mode::ResetUploads, short * scale),
        ("5 s latency", Mode::Latency(Duration::from_secs(5)), short * 2 * scale),
    ];
    if long_run {
        // Longer than the storage I/O timeout (30 s): requests time out and are retried.
        faults.push(("blackhole past the I/O timeout", Mode::Blackhole, Duration::from_secs(45)));
    }
    let mut report = Vec::new();
    for (name, mode, how_long) in faults {
        let log_before = d.log().len();
        w.proxy.set(mode);
        std::thread::sleep(how_long);
        for (id, load) in ids.iter().zip(&loads) {
            check_mid_fault(&w, &format!("during {name}: {id}"), id, &watch, load);
        }
        let backoff = last_backoff(&d.log()[log_before..]).unwrap_or_default();
        let pending: Vec<u64> = loads.iter().map(|l| l.last().map_or(0, |a| a.seq)).collect();
        w.proxy.set(Mode::Pass);
        for (id, seq) in ids.iter().zip(pending) {
            let took = time_until_restorable(&w.s3_loc(id), seq, w.dir.path(), Duration::from_secs(120));
            let bound = SYNC_INTERVAL + backoff;
            report.push(format!("{name}: {id} recovered in {took:.1?} (sync_interval {SYNC_INTERVAL:?} + backoff {backoff:?} = {bound:?})"));
            // Restores poll every 250 ms and take a moment each; the storage layer's own
            // retries (up to ~3 s) come on top of the daemon's backoff.
            assert!(took <= bound + Duration::from_secs(8), "{}", report.last().unwrap());
        }
    }
    for line in &report {
        eprintln!("{line}");
    }
    for (id, load) in ids.iter().zip(loads) {
        w.settle_and_compare(&format!("after the outages {id}"), id, load, 1).0.quit();
    }
    assert_no_torn_objects("after the outages", &w.bucket_dir());
    let stats = w.proxy.stats();
    eprintln!("proxy: {stats:?}");
    assert!(stats.uploads_cut.load(std::sync::atomic::Ordering::Relaxed) > 0, "no upload was cut half-way");
    print_warnings("storage outages", &d.stop());
}

/// Storage answering garbage: the proxy flips a byte in every GET of an `.ltx`
/// object. Restores through it fail with a checksum error and leave no output; the
/// daemon's compactions and snapshots read the same garbage and must not build on it.
/// Once storage answers truly again, everything restores to the sources.
#[test]
fn storage_answering_garbage_is_caught_by_checksums() {
    let seed = seed("storage_answering_garbage");
    let w = World::new();
    let config = w.config(&Store::Proxied, &w.path("state"), FAST_LIFECYCLE);
    let load = Load::start(&w.db(G1), 1, seed, Mix::default());
    let d = w.daemon(&config);
    w.wait_replicating(G1);
    load.wait_rows(40);
    w.proxy.set(Mode::FlipLtxGets);
    let through_proxy = w.s3_loc(G1).via(&w.proxy.endpoint());
    let out = w.path("garbage.db");
    let mut detected = 0;
    for attempt in 0..3 {
        let before = w.proxy.stats().bytes_flipped.load(std::sync::atomic::Ordering::Relaxed);
        let result = litefleet_restore(&through_proxy, &out, &[]);
        let flipped = w.proxy.stats().bytes_flipped.load(std::sync::atomic::Ordering::Relaxed) - before;
        match result {
            Err(e) => {
                assert!(e.contains(".ltx"), "the error does not name the object: {e}");
                assert!(!out.exists(), "a failed restore left output");
                eprintln!("litefleet restore through garbage: {}", e.trim().lines().last().unwrap_or(""));
                detected += 1;
            }
            Ok((got, _)) => {
                // A flip the decoder cannot see decodes to the very same page bytes (a
                // match offset into zeros): then the restore must be the true one.
                let (truth, _) = litefleet_restore(&w.s3_loc(G1), &w.path("truth.db"), &[]).expect("direct restore");
                let rows = ledger_of(&out);
                assert!(
                    !got.is_empty()
                        && truth.len() >= got.len() / 2
                        && ledger_of(&w.path("truth.db")).starts_with(&rows),
                    "attempt {attempt}: litefleet restore returned garbage through {flipped} flipped bytes"
                );
            }
        }
    }
    assert!(detected > 0, "no restore through flipped bytes was refused");
    if let Some(r) = litestream_restore(&through_proxy, &w.path("garbage-litestream.db"), None) {
        match r {
            Err(e) => {
                eprintln!("litestream restore through garbage fails too: {}", e.trim().lines().last().unwrap_or(""))
            }
            Ok(_) => eprintln!("NOTE: litestream restore accepted flipped bytes"),
        }
    }
    // The lifecycle keeps compacting and snapshotting through the garbage for a while.
    std::thread::sleep(Duration::from_secs(if long() { 60 } else { 8 }));
    let flipped = w.proxy.stats().bytes_flipped.load(std::sync::atomic::Ordering::Relaxed);
    assert!(flipped > 0, "the proxy flipped nothing");
    w.proxy.set(Mode::Pass);
    let (wr, acks) = w.settle_and_compare("after garbage", G1, load, 1);
    // Once more after the lifecycle has run on true bytes (snapshots merge the chain).
    std::thread::sleep(Duration::from_secs(12));
    w.compare("after garbage and a clean lifecycle pass", G1, 1, &acks);
    // What the dashboard shows once storage answers truly (docs/operations.md): back to
    // `active` when the garbage was repaired with a snapshot; `error` with `replica
    // damaged: …; restores go around it` while a file read as garbage is bridged.
    if let Some(l) = look(w.addr(), G1) {
        eprintln!("after garbage the dashboard shows {} (lastError {:?})", l.status, l.last_error);
    }
    wr.quit();
    assert_no_torn_objects("after garbage", &w.bucket_dir());
    let log = d.stop();
    eprintln!("{flipped} bytes flipped; daemon log mentions of checksum errors: {}", log.matches("checksum").count());
    print_warnings("storage answering garbage", &log);
}

// ───────────────────────────── full disks ─────────────────────────────

/// A folder replica on a small tmpfs that fills up while tenants write: no torn file
/// under a final name (the lifecycle's compaction output included), no temp file left,
/// and after the disk is freed the daemon catches up by itself.
#[test]
fn a_full_disk_under_a_folder_replica_leaves_no_torn_file_and_recovers() {
    let seed = seed("full_disk_folder_replica");
    let w = World::new();
    let Some(disk) = tmpfs_or_skip("the folder-replica full-disk scenario", &w.path("replica-disk"), "24m") else {
        return;
    };
    let replicas = disk.dir.join("replicas");
    let config = w.config(&Store::Folder(replicas.clone()), &w.path("state"), FAST_LIFECYCLE);
    let ids = [G1, G2];
    let loads = [
        Load::start(&w.db(G1), 1, seed, Mix { max_row: 8000, ..Mix::default() }),
        Load::start(&w.db(G2), 1, seed ^ 1, Mix { max_row: 30_000, ..Mix::default() }),
    ];
    let d = w.daemon(&config);
    for id in ids {
        w.wait_replicating(id);
    }
    let ballast = disk.fill(16 << 10);
    eprintln!("replica disk full ({} bytes free)", disk.free());
    let full_for = Duration::from_secs(if long() { 60 } else { 6 });
    std::thread::sleep(full_for);
    let errors: Vec<String> = ids.iter().filter_map(|id| look(w.addr(), id).and_then(|l| l.last_error)).collect();
    eprintln!("while full, the dashboard shows: {errors:?}");
    assert!(d.log().contains("No space left on device"), "the full disk was never reported:\n{}", d.log());
    // What the full disk left under final names: nothing torn, whatever failed.
    assert_no_torn_objects("the replica folder while its disk is full", &replicas);
    let backoff = last_backoff(&d.log()).unwrap_or_default();
    let pending: Vec<u64> = loads.iter().map(|l| l.last().map_or(0, |a| a.seq)).collect();
    std::fs::remove_file(&ballast).unwrap();
    for (id, seq) in ids.iter().zip(pending) {
        let loc = Location::Folder(replicas.join(format!("databases/{id}")));
        let took = time_until_restorable(&loc, seq, w.dir.path(), Duration::from_secs(120));
        eprintln!(
            "freed disk: {id} recovered in {took:.1?} (sync_interval {SYNC_INTERVAL:?} + backoff {backoff:?} = {:?})",
            SYNC_INTERVAL + backoff
        );
        assert!(took <= SYNC_INTERVAL + backoff + Duration::from_secs(8));
    }
    for (id, load) in ids.iter().zip(loads) {
        let (wr, acks) = load.stop();
        wait_shipped(w.addr(), id, acks.last().unwrap().wall, Duration::from_secs(60));
        let loc = Location::Folder(replicas.join(format!("databases/{id}")));
        let ours = assert_restores_to(
            &format!("after the full disk {id}"),
            &loc,
            w.dir.path(),
            &checkpointed_bytes(&w.db(id)),
        );
        assert_eq!(ledger_of(&ours), acks.iter().map(|a| a.seq).collect::<Vec<_>>());
        wr.quit();
    }
    print_warnings("full disk under a folder replica", &d.stop());
    let t = assert_no_torn_objects("the replica folder after a full disk", &replicas);
    assert!(t.temps.is_empty(), "temporary files left in the replica folder: {:?}", t.temps);
    drop(disk);
}

/// The state directory on a small tmpfs that fills up: position files and page tables
/// cannot be written. Replication must go on or fail visibly, a `kill -9` while it is
/// full must lose nothing, and after the disk is freed everything restores.
#[test]
fn a_full_state_directory_loses_nothing() {
    let seed = seed("full_state_directory");
    let w = World::new();
    let Some(disk) = tmpfs_or_skip("the state-directory full-disk scenario", &w.path("state-disk"), "2m") else {
        return;
    };
    let state = disk.dir.join("state");
    let config = w.config(&Store::S3, &state, FAST_LIFECYCLE);
    let ids = [G1, G2];
    let loads = [Load::start(&w.db(G1), 1, seed, Mix::default()), Load::start(&w.db(G2), 1, seed ^ 1, Mix::default())];
    let d = w.daemon(&config);
    for id in ids {
        w.wait_replicating(id);
    }
    let watch = SyncWatch::start(w.addr(), &ids);
    let ballast = disk.fill(0);
    std::thread::sleep(Duration::from_secs(if long() { 60 } else { 5 }));
    for (id, load) in ids.iter().zip(&loads) {
        check_mid_fault(&w, &format!("state dir full: {id}"), id, &watch, load);
    }
    // A crash while the state cannot be written, and a start-up on the full disk.
    d.kill9();
    drop(watch);
    let d = Daemon::config(&config, w.dir.path());
    std::thread::sleep(Duration::from_secs(3));
    eprintln!("start-up on a full state directory:\n{}", d.log().lines().take(30).collect::<Vec<_>>().join("\n"));
    let log_before = d.log();
    let backoff = last_backoff(&log_before).unwrap_or_default();
    let pending: Vec<u64> = loads.iter().map(|l| l.last().map_or(0, |a| a.seq)).collect();
    std::fs::remove_file(&ballast).unwrap();
    let freed = Instant::now();
    // The daemon may have refused to start on a full state directory; then a restart
    // after freeing it is what an operator (or systemd's Restart=on-failure) does.
    let d = if d.log().contains("🎯 Monitoring") {
        d
    } else {
        eprintln!("the daemon did not start on a full state directory; restarting it after freeing the disk");
        drop(d);
        w.daemon(&config)
    };
    for (id, seq) in ids.iter().zip(pending) {
        let took = time_until_restorable(&w.s3_loc(id), seq, w.dir.path(), Duration::from_secs(120));
        eprintln!("freed state dir: {id} has every acknowledged row {took:.1?} later (backoff {backoff:?})");
    }
    eprintln!("state dir freed {:.1?} ago", freed.elapsed());
    for (id, load) in ids.iter().zip(loads) {
        w.settle_and_compare(&format!("after the full state dir {id}"), id, load, 1).0.quit();
    }
    assert_no_torn_objects("after the full state dir", &w.bucket_dir());
    print_warnings("full state directory", &d.stop());
    drop(disk);
}

// ───────────────────────────── the tenant file changes under the daemon ─────────────────────────────

/// Quits the application's writer (it closes its connection), waits until the daemon
/// shipped everything, and returns the next ledger row.
fn app_stops(w: &World, id: &str, load: Load) -> u64 {
    let (wr, acks) = load.stop();
    wr.quit();
    let last = acks.last().expect("rows were written");
    wait_shipped(w.addr(), id, last.wall, Duration::from_secs(60));
    last.seq + 1
}

/// Removes a database's `-wal` and `-shm` (as docs/operations.md says to when a file is
/// put in place by hand).
fn remove_sidecars(db: &Path) {
    let _ = std::fs::remove_file(wal_path(db));
    let _ = std::fs::remove_file(shm_path(db));
}

/// Waits until the daemon's API has `id` (`true`) or does not (`false`).
fn wait_registered(w: &World, id: &str, registered: bool) {
    let ok =
        wait_until(Duration::from_secs(30), Duration::from_millis(50), || look(w.addr(), id).is_some() == registered);
    assert!(ok, "{id} registered={registered} never true: {:?}", api(w.addr(), "/api/status"));
}

const RUN: Duration = Duration::from_millis(1500);

/// Replaced by a rename over it (a new file built from a copy, as a restore puts one back).
fn game_replaced_by_rename(w: &World, seed: u64) -> (Load, u64) {
    let (id, db) = (G1, w.db(G1));
    let load = Load::start(&db, 1, seed, Mix::default());
    std::thread::sleep(RUN);
    let (mut wr, acks) = load.stop();
    let staged = w.path("staging/replacement.db");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    wr.cmd(&format!("exec VACUUM INTO '{}'", staged.display()));
    wr.quit();
    wait_shipped(w.addr(), id, acks.last().unwrap().wall, Duration::from_secs(60));
    remove_sidecars(&db);
    std::fs::rename(&staged, &db).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    (Load::start(&db, acks.last().unwrap().seq + 1, seed ^ 7, Mix::default()), 1)
}

/// Renamed out of the watched folder and back.
fn game_renamed_away_and_back(w: &World, seed: u64) -> (Load, u64) {
    let (id, db) = (G2, w.db(G2));
    let load = Load::start(&db, 1, seed, Mix::default());
    std::thread::sleep(RUN);
    let next = app_stops(w, id, load);
    let away = w.path(&format!("away/{id}.db"));
    std::fs::create_dir_all(away.parent().unwrap()).unwrap();
    for (from, to) in [(wal_path(&db), wal_path(&away)), (shm_path(&db), shm_path(&away)), (db.clone(), away.clone())] {
        if from.exists() {
            std::fs::rename(from, to).unwrap();
        }
    }
    wait_registered(w, id, false);
    for (from, to) in [(wal_path(&away), wal_path(&db)), (shm_path(&away), shm_path(&db)), (away.clone(), db.clone())] {
        if from.exists() {
            std::fs::rename(from, to).unwrap();
        }
    }
    wait_registered(w, id, true);
    (Load::start(&db, next, seed ^ 7, Mix::default()), 1)
}

/// Deleted, then a new database created under the same name.
fn game_deleted_and_recreated(w: &World, seed: u64) -> (Load, u64) {
    let (id, db) = (G3, w.db(G3));
    let load = Load::start(&db, 1, seed, Mix::default());
    std::thread::sleep(RUN);
    app_stops(w, id, load);
    std::fs::remove_file(&db).unwrap();
    remove_sidecars(&db);
    wait_registered(w, id, false);
    let first = 1_000_000;
    (Load::start(&db, first, seed ^ 7, Mix::default()), first)
}

/// Truncated to nothing, then written afresh.
fn game_truncated(w: &World, seed: u64) -> (Load, u64) {
    let (id, db) = (G4, w.db(G4));
    let load = Load::start(&db, 1, seed, Mix::default());
    std::thread::sleep(RUN);
    app_stops(w, id, load);
    remove_sidecars(&db);
    std::fs::OpenOptions::new().write(true).open(&db).unwrap().set_len(0).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let first = 2_000_000;
    (Load::start(&db, first, seed ^ 7, Mix::default()), first)
}

/// VACUUMed (shrinking it) three times between bursts of writes.
fn game_vacuumed(w: &World, seed: u64) -> (Load, u64) {
    let db = w.db(G5);
    let mut load = Load::start(&db, 1, seed, Mix::default());
    for i in 0..3u64 {
        std::thread::sleep(RUN / 2);
        let (mut wr, acks) = load.stop();
        wr.cmd("insert t 200 2000");
        wr.cmd("delete t 180");
        wr.cmd("vacuum");
        load = Load::resume(wr, acks.last().map_or(1, |a| a.seq + 1), seed ^ i, Mix::default());
    }
    (load, 1)
}

/// Switched to rollback-journal mode (written in it) and back to WAL.
fn game_journal_mode(w: &World, seed: u64) -> (Load, u64) {
    let db = w.db(G6);
    let load = Load::start(&db, 1, seed, Mix::default());
    std::thread::sleep(RUN);
    let (mut wr, acks) = load.stop();
    let mut next = acks.last().map_or(1, |a| a.seq + 1);
    // The daemon's read lock blocks the switch until it goes idle (idle_after = 2 s).
    let switched = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        wr.try_cmd("pragma journal_mode=DELETE").is_ok_and(|m| m.eq_ignore_ascii_case("delete"))
    });
    assert!(switched, "the application could not leave WAL mode");
    for _ in 0..20 {
        wr.cmd(&format!("exec INSERT INTO ledger(seq, v) VALUES ({next}, randomblob(300))"));
        next += 1;
    }
    // Either the daemon switched it back to WAL already, or the application does.
    let back = wait_until(Duration::from_secs(30), Duration::from_millis(100), || {
        wr.try_cmd("pragma journal_mode=WAL").is_ok_and(|m| m.eq_ignore_ascii_case("wal"))
    });
    assert!(back, "the application could not return to WAL mode");
    // The rows written in rollback mode were acknowledged too: the new load's ledger
    // starts after them, and compare() checks the whole range.
    (Load::resume(wr, next, seed ^ 7, Mix::default()), 1)
}

/// Every way the tenant file can change under the running daemon, one tenant each, at
/// once: replaced by rename, renamed away and back, deleted and recreated, truncated,
/// VACUUMed, switched to rollback-journal mode and back.
#[test]
fn tenant_files_replaced_renamed_recreated_truncated_vacuumed_and_switched_out_of_wal() {
    let seed = seed("tenant_file_changes");
    let w = World::new();
    let config = w.config(&Store::S3, &w.path("state"), FAST_LIFECYCLE);
    let d = w.daemon(&config);
    type Game = fn(&World, u64) -> (Load, u64);
    let games: [(&str, &str, Game); 6] = [
        ("replaced by rename", G1, game_replaced_by_rename),
        ("renamed away and back", G2, game_renamed_away_and_back),
        ("deleted and recreated", G3, game_deleted_and_recreated),
        ("truncated", G4, game_truncated),
        ("vacuumed", G5, game_vacuumed),
        ("journal mode switched", G6, game_journal_mode),
    ];
    let results: Vec<(&str, &str, Load, u64)> = std::thread::scope(|s| {
        let handles: Vec<_> = games
            .iter()
            .enumerate()
            .map(|(i, (name, id, game))| {
                let w = &w;
                s.spawn(move || {
                    let (load, first) = game(w, seed.wrapping_add(i as u64));
                    (*name, *id, load, first)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
    });
    std::thread::sleep(RUN);
    for (name, id, load, first) in results {
        let (wr, acks) = load.stop();
        wait_shipped(w.addr(), id, acks.last().unwrap().wall, Duration::from_secs(60));
        // The ledger check covers what this incarnation of the file holds.
        let source = checkpointed_bytes(&w.db(id));
        let ours = assert_restores_to(name, &w.s3_loc(id), w.dir.path(), &source);
        let rows = ledger_of(&ours);
        let last = acks.last().unwrap().seq;
        assert_eq!(rows, (first..=last).collect::<Vec<_>>(), "{name}: the restored ledger is not {first}..={last}");
        wr.quit();
        eprintln!("{name}: restores equal the source, ledger {first}..={last}");
    }
    assert_no_torn_objects("after the tenant file changes", &w.bucket_dir());
    print_warnings("tenant file changes", &d.stop());
}
