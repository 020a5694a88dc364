//! Soak: a fleet of tenants written for a long time under injected faults, with a
//! random sample restored and compared every few minutes (docs/benchmarks.md, "Soak").
//!
//!     cargo bench --bench soak -- --minutes 240            # 4 hours, 1,000 tenants
//!     cargo bench --bench soak -- --minutes 45 --tenants 1000 --sample 10 --restore-every 180
//!
//! `cargo test --all-targets` runs it too (without `--bench`): then it runs a short smoke
//! pass (a dozen tenants, about half a minute) so the soak keeps working.
//!
//! What runs: the real daemon (`litefleet daemon`; lifecycle levels of 10 s and 1 min,
//! snapshots every 3 min kept 15 min, L0 files kept 30 s, so the bucket stays bounded
//! over hours) replicating
//! to an in-process S3 server through the fault proxy; `--writers` `litefleet-writer`
//! processes writing ledger rows (one transaction each, recorded once acknowledged),
//! other rows, application checkpoints, each batch opening and closing the tenant's
//! database (an application that closes its last connection after each request). Every
//! `--fault-every` seconds one fault: `kill -9` of the daemon (restarted after a pause),
//! a storage outage (refused, blackhole, uploads reset half-way, 5 s latency), storage
//! answering garbage (flipped GET bytes), tenant churn (deleted tenants, new ones,
//! renamed away and back), VACUUM, application TRUNCATE checkpoints. Every
//! `--restore-every` seconds, with the faults healed, `--sample` random tenants are
//! paused, the daemon is given time to ship (it must go cold after its last write),
//! and each is restored with `litefleet restore` (every other one with `litestream
//! restore` too) and compared with its checkpointed source, byte for byte, and with its
//! ledger. A mismatch is counted and described, never hidden; the run fails if any.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::daemon::Daemon;
use common::faults::{LEDGER_DDL, Location, ledger_of, litefleet_restore, litestream_restore, look};
use common::proxy::{FaultProxy, Mode};
use common::{S3Server, Writer, checkpointed_bytes, first_difference, wait_until};

const BUCKET: &str = "soak";

struct Args {
    minutes: f64,
    tenants: usize,
    writers: usize,
    sample: usize,
    restore_every: u64,
    fault_every: u64,
    seed: u64,
}

impl Args {
    fn parse() -> Args {
        let benching = std::env::args().any(|a| a == "--bench");
        let mut a = if benching {
            Args { minutes: 60.0, tenants: 1000, writers: 4, sample: 10, restore_every: 180, fault_every: 45, seed: 0 }
        } else {
            Args { minutes: 0.3, tenants: 12, writers: 2, sample: 3, restore_every: 8, fault_every: 4, seed: 0 }
        };
        a.seed = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        let argv: Vec<String> = std::env::args().collect();
        let mut i = 1;
        while i < argv.len() {
            let v = argv.get(i + 1).cloned().unwrap_or_default();
            let used = match argv[i].as_str() {
                "--minutes" => v.parse().map(|x| a.minutes = x).is_ok(),
                "--tenants" => v.parse().map(|x| a.tenants = x).is_ok(),
                "--writers" => v.parse().map(|x| a.writers = x).is_ok(),
                "--sample" => v.parse().map(|x| a.sample = x).is_ok(),
                "--restore-every" => v.parse().map(|x| a.restore_every = x).is_ok(),
                "--fault-every" => v.parse().map(|x| a.fault_every = x).is_ok(),
                "--seed" => v.parse().map(|x| a.seed = x).is_ok(),
                _ => false,
            };
            i += if used { 2 } else { 1 };
        }
        a
    }
}

/// One tenant database and what its writers were told.
struct Tenant {
    id: String,
    path: PathBuf,
    /// First ledger row of this file.
    first: u64,
    /// Newest acknowledged ledger row (rows `first..=acked` were acknowledged).
    acked: u64,
    last_write: Option<SystemTime>,
    /// Being compared: writers leave it alone.
    frozen: bool,
    /// Deleted by churn.
    gone: bool,
}

impl Tenant {
    /// A new tenant with a random GUID in `data` (its file is created by the first write).
    fn new(data: &Path, rng: &mut fastrand::Rng) -> Tenant {
        let h = |n: usize, rng: &mut fastrand::Rng| (0..n).map(|_| format!("{:x}", rng.u8(0..16))).collect::<String>();
        let id = format!("{}-{}-4{}-8{}-{}", h(8, rng), h(4, rng), h(3, rng), h(3, rng), h(12, rng));
        Tenant {
            path: data.join(format!("{id}.db")),
            id,
            first: 1,
            acked: 0,
            last_write: None,
            frozen: false,
            gone: false,
        }
    }
}

type Shared = Arc<Mutex<Vec<Arc<Mutex<Tenant>>>>>;

#[derive(Default)]
struct Counts {
    commits: AtomicU64,
    restores_litefleet: AtomicU64,
    restores_litestream: AtomicU64,
    kills: AtomicU64,
    outages: AtomicU64,
    garbage: AtomicU64,
    churned: AtomicU64,
    vacuums: AtomicU64,
    truncates: AtomicU64,
    write_errors: AtomicU64,
    restore_retries: AtomicU64,
}

/// One batch of writes to one tenant: open, ledger rows, churn, close.
fn write_batch(w: &mut Writer, t: &mut Tenant, rng: &mut fastrand::Rng, counts: &Counts) {
    if w.try_cmd(&format!("open {}", t.path.display())).is_err() || w.try_cmd(&format!("exec {LEDGER_DDL}")).is_err() {
        counts.write_errors.fetch_add(1, Ordering::Relaxed);
        let _ = w.try_cmd("close");
        return;
    }
    for _ in 0..rng.usize(1..6) {
        let seq = t.acked + 1;
        let n = rng.usize(16..3000);
        match w.try_cmd(&format!("exec INSERT INTO ledger(seq, v) VALUES ({seq}, randomblob({n}))")) {
            Ok(_) => {
                t.acked = seq;
                t.last_write = Some(SystemTime::now());
                counts.commits.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                counts.write_errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    let _ = match rng.u32(0..100) {
        0..=14 => w.try_cmd(&format!("insert t {} {}", rng.usize(1..10), rng.usize(10..4000))),
        15..=19 => w.try_cmd("update t 3 500"),
        20..=22 => w.try_cmd("delete t 2"),
        23..=25 => w.try_cmd("checkpoint passive"),
        _ => Ok(String::new()),
    };
    let _ = w.try_cmd("close");
}

fn writer_loop(tenants: Shared, stop: Arc<AtomicBool>, counts: Arc<Counts>, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut w = Writer::spawn_with_args(&["--seed", &seed.to_string()]);
    w.timeout = Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        let t = {
            let all = tenants.lock().unwrap();
            all[rng.usize(0..all.len())].clone()
        };
        if let Ok(mut t) = t.try_lock()
            && !t.frozen
            && !t.gone
        {
            write_batch(&mut w, &mut t, &mut rng, &counts);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(20..120)));
    }
    w.quit();
}

/// A sample tenant compared with its restore; `Err` describes a mismatch.
fn compare(
    t: &Arc<Mutex<Tenant>>,
    s3: &S3Server,
    addr: std::net::SocketAddr,
    scratch: &Path,
    with_litestream: bool,
    counts: &Counts,
) -> Result<(), String> {
    let (id, path, first, acked, last) = {
        let mut g = t.lock().unwrap();
        g.frozen = true;
        (g.id.clone(), g.path.clone(), g.first, g.acked, g.last_write)
    };
    let result = (|| {
        let since = last.unwrap_or_else(SystemTime::now);
        let shipped = wait_until(Duration::from_secs(180), Duration::from_millis(100), || {
            look(addr, &id).is_some_and(|l| {
                l.status == "active" && !l.hot && l.lag == 0.0 && l.last_sync.is_some_and(|s| s > since)
            })
        });
        if !shipped {
            return Err(format!("{id}: not shipped within 180 s of its last write: {:?}", look(addr, &id)));
        }
        let source = checkpointed_bytes(&path);
        let loc = Location::s3(s3, &s3.endpoint(), BUCKET, &format!("databases/{id}"));
        let out = scratch.join("soak-restore.db");
        // A restore races the lifecycle (an L0 file deleted between the listing and the
        // download, or between listing level 1 and level 0 in Litestream's planner): a
        // failure is retried (counted); different bytes never are.
        let (got, _) = retried(counts, || litefleet_restore(&loc, &out, &[]))
            .map_err(|e| format!("{id}: litefleet restore failed 3 times: {e}"))?;
        counts.restores_litefleet.fetch_add(1, Ordering::Relaxed);
        if got != source {
            return Err(format!("{id}: litefleet restore differs at {:?}", first_difference(&got, &source, 4096)));
        }
        let rows = ledger_of(&out);
        let want: Vec<u64> = if acked >= first { (first..=acked).collect() } else { Vec::new() };
        if rows != want {
            return Err(format!(
                "{id}: ledger {}..{:?} ({} rows), acknowledged {first}..={acked}",
                rows.first().unwrap_or(&0),
                rows.last(),
                rows.len()
            ));
        }
        let theirs_out = scratch.join("soak-litestream.db");
        if with_litestream && common::litestream_bin().is_some() {
            let theirs = retried(counts, || litestream_restore(&loc, &theirs_out, None).unwrap_or(Err(String::new())))
                .map_err(|e| format!("{id}: litestream restore failed 3 times: {e}"))?;
            counts.restores_litestream.fetch_add(1, Ordering::Relaxed);
            if theirs != source {
                return Err(format!(
                    "{id}: litestream restore differs at {:?}",
                    first_difference(&theirs, &source, 4096)
                ));
            }
        }
        Ok(())
    })();
    t.lock().unwrap().frozen = false;
    result
}

/// `f` until it succeeds, at most 3 times (1 s apart); every failed try is counted (a
/// restore that hangs past its bound panics in the helper: that is a failed try too).
fn retried<T>(counts: &Counts, mut f: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let mut last = String::new();
    for _ in 0..3 {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut f))
            .unwrap_or_else(|p| Err(p.downcast_ref::<String>().cloned().unwrap_or_else(|| "panicked".to_owned())));
        match r {
            Ok(v) => return Ok(v),
            Err(e) => {
                counts.restore_retries.fetch_add(1, Ordering::Relaxed);
                eprintln!("soak: restore failed, trying again: {}", e.trim().lines().last().unwrap_or(""));
                last = e;
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last)
}

fn config(dir: &Path, proxy: &FaultProxy, port: u16) -> PathBuf {
    let text = format!(
        "[[watch]]\ndir = {:?}\n[storage]\nurl = \"s3://{BUCKET}\"\nendpoint = {:?}\nregion = \"us-east-1\"\n\
         force_path_style = true\naccess_key_id = {:?}\nsecret_access_key = {:?}\n\
         [replication]\nsync_interval = \"500ms\"\nidle_after = \"3s\"\nstate_dir = {:?}\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\n\
         [lifecycle]\nlevels = [\"10s\", \"1m\"]\nsnapshot_interval = \"3m\"\nsnapshot_retention = \"15m\"\n\
         l0_retention = \"30s\"\n",
        dir.join("data").display().to_string(),
        proxy.endpoint(),
        S3Server::ACCESS_KEY,
        S3Server::SECRET_KEY,
        dir.join("state").display().to_string(),
    );
    let p = dir.join("soak.toml");
    std::fs::write(&p, text).expect("config");
    p
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let a = Args::parse();
    let mut rng = fastrand::Rng::with_seed(a.seed);
    eprintln!(
        "soak: {} min, {} tenants, {} writers, sample {} every {} s, a fault every {} s, seed {}",
        a.minutes, a.tenants, a.writers, a.sample, a.restore_every, a.fault_every, a.seed
    );
    let s3 = S3Server::start();
    s3.create_bucket(BUCKET);
    let proxy = FaultProxy::start(s3.addr());
    let dir = tempfile::Builder::new().prefix("litefleet-soak-").tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let port = common::free_port();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let counts = Arc::new(Counts::default());

    // The fleet, each tenant with a first row.
    let started = Instant::now();
    let tenants: Shared = Arc::new(Mutex::new(Vec::new()));
    {
        let mut w = Writer::spawn();
        let mut all = tenants.lock().unwrap();
        for _ in 0..a.tenants {
            let mut t = Tenant::new(&data, &mut rng);
            write_batch(&mut w, &mut t, &mut rng, &counts);
            all.push(Arc::new(Mutex::new(t)));
        }
        w.quit();
    }
    eprintln!("soak: {} tenants created in {:.1?}", a.tenants, started.elapsed());
    let cfg = config(dir.path(), &proxy, port);
    let mut daemon = Some(Daemon::config(&cfg, dir.path()));
    let up = wait_until(Duration::from_secs(600), Duration::from_millis(200), || {
        daemon.as_ref().is_some_and(|d| d.log().contains("🎯 Monitoring"))
    });
    assert!(up, "the daemon did not finish its start-up scan");
    eprintln!("soak: daemon up after {:.1?}", started.elapsed());

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..a.writers)
        .map(|i| {
            let (t, s, c) = (tenants.clone(), stop.clone(), counts.clone());
            let seed = a.seed.wrapping_add(i as u64 + 1);
            std::thread::spawn(move || writer_loop(t, s, c, seed))
        })
        .collect();

    let deadline = started + Duration::from_secs_f64(a.minutes * 60.0);
    let mut next_sample = Instant::now() + Duration::from_secs(a.restore_every);
    let mut mismatches: Vec<String> = Vec::new();
    let mut samples = 0u64;
    let mut max_rss = 0u64;
    let mut order: Vec<u64> = vec![5, 4, 3, 2, 1];
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(a.fault_every).min(deadline.saturating_duration_since(Instant::now())));
        if let Some(d) = &daemon {
            max_rss = max_rss.max(rss_kib(d.child.id()));
        }
        // One fault, healed before anything is compared.
        // Every kind once per cycle of six, in a random order.
        if order.is_empty() {
            order = (0..6).collect();
            rng.shuffle(&mut order);
        }
        let kind = order.pop().unwrap_or(0);
        match kind {
            0 => {
                daemon.take().expect("running").kill9();
                counts.kills.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(rng.u64(0..3000)));
                daemon = Some(Daemon::config(&cfg, dir.path()));
            }
            1 => {
                let mode = match rng.u32(0..4) {
                    0 => Mode::Refuse,
                    1 => Mode::Blackhole,
                    2 => Mode::ResetUploads,
                    _ => Mode::Latency(Duration::from_secs(5)),
                };
                proxy.set(mode);
                std::thread::sleep(Duration::from_secs(rng.u64(3..(a.fault_every / 2).max(4))));
                proxy.set(Mode::Pass);
                counts.outages.fetch_add(1, Ordering::Relaxed);
            }
            2 => {
                proxy.set(Mode::FlipLtxGets);
                std::thread::sleep(Duration::from_secs(rng.u64(3..(a.fault_every / 3).max(4))));
                proxy.set(Mode::Pass);
                counts.garbage.fetch_add(1, Ordering::Relaxed);
            }
            3 => {
                // Churn: delete some, add as many new, rename some away and back.
                let picked: Vec<Arc<Mutex<Tenant>>> = {
                    let all = tenants.lock().unwrap();
                    (0..3).map(|_| all[rng.usize(0..all.len())].clone()).collect()
                };
                for (i, t) in picked.iter().enumerate() {
                    let Ok(mut g) = t.lock() else { continue };
                    if g.gone || g.frozen {
                        continue;
                    }
                    let sidecars = |p: &Path| {
                        [
                            p.to_path_buf(),
                            PathBuf::from(format!("{}-wal", p.display())),
                            PathBuf::from(format!("{}-shm", p.display())),
                        ]
                    };
                    if i == 0 {
                        for p in sidecars(&g.path) {
                            let _ = std::fs::remove_file(p);
                        }
                        g.gone = true;
                        let t = Tenant::new(&data, &mut rng);
                        tenants.lock().unwrap().push(Arc::new(Mutex::new(t)));
                    } else {
                        let away = dir.path().join(format!("away-{}.db", g.id));
                        let (from, to) = (sidecars(&g.path), sidecars(&away));
                        for (f, t) in from.iter().zip(&to) {
                            let _ = std::fs::rename(f, t);
                        }
                        std::thread::sleep(Duration::from_secs(2));
                        for (f, t) in to.iter().zip(&from) {
                            let _ = std::fs::rename(f, t);
                        }
                    }
                    counts.churned.fetch_add(1, Ordering::Relaxed);
                }
            }
            4 | 5 => {
                let picked: Vec<Arc<Mutex<Tenant>>> = {
                    let all = tenants.lock().unwrap();
                    (0..3).map(|_| all[rng.usize(0..all.len())].clone()).collect()
                };
                let mut w = Writer::spawn();
                for t in picked {
                    let Ok(g) = t.lock() else { continue };
                    if g.gone || g.frozen || g.acked < g.first {
                        continue;
                    }
                    if w.try_cmd(&format!("open {}", g.path.display())).is_ok() {
                        if kind == 4 {
                            let _ = w.try_cmd("delete t 5");
                            let _ = w.try_cmd("vacuum");
                            counts.vacuums.fetch_add(1, Ordering::Relaxed);
                        } else {
                            let _ = w.try_cmd("checkpoint truncate");
                            counts.truncates.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let _ = w.try_cmd("close");
                }
                w.quit();
            }
            _ => {}
        }
        if Instant::now() >= next_sample || Instant::now() >= deadline {
            next_sample = Instant::now() + Duration::from_secs(a.restore_every);
            samples += 1;
            let sample: Vec<Arc<Mutex<Tenant>>> = {
                let all = tenants.lock().unwrap();
                let live: Vec<_> = all.iter().filter(|t| t.lock().is_ok_and(|g| !g.gone)).cloned().collect();
                (0..a.sample.min(live.len())).map(|_| live[rng.usize(0..live.len())].clone()).collect()
            };
            for (i, t) in sample.iter().enumerate() {
                if let Err(e) = compare(t, &s3, addr, dir.path(), i % 2 == 0, &counts) {
                    eprintln!("soak MISMATCH: {e}");
                    mismatches.push(e);
                }
            }
            let c = &counts;
            eprintln!(
                "soak: {:.0?} in: {} commits, {} restores compared (+{} by litestream), {} mismatches",
                started.elapsed(),
                c.commits.load(Ordering::Relaxed),
                c.restores_litefleet.load(Ordering::Relaxed),
                c.restores_litestream.load(Ordering::Relaxed),
                mismatches.len()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.join();
    }
    if let Some(d) = daemon.take() {
        max_rss = max_rss.max(rss_kib(d.child.id()));
        d.stop();
    }
    let torn = common::faults::check_ltx_tree(&s3.root().join(BUCKET));
    for (p, e) in &torn.torn {
        mismatches.push(format!("torn object {}: {e}", p.display()));
    }
    let c = &counts;
    let l = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let faults = l(&c.kills) + l(&c.outages) + l(&c.garbage) + l(&c.churned) + l(&c.vacuums) + l(&c.truncates);
    println!(
        "| duration | tenants | commits | sample rounds | restores compared (litefleet + litestream) | faults (kill -9 / outage / garbage / churn / vacuum / app TRUNCATE) | objects verified | mismatches | daemon max RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} min | {} (+{} churned) | {} | {} | {} + {} | {} ({} / {} / {} / {} / {} / {}) | {} | {} | {} MiB |",
        started.elapsed().as_secs_f64() / 60.0,
        a.tenants,
        l(&c.churned),
        l(&c.commits),
        samples,
        l(&c.restores_litefleet),
        l(&c.restores_litestream),
        faults,
        l(&c.kills),
        l(&c.outages),
        l(&c.garbage),
        l(&c.churned),
        l(&c.vacuums),
        l(&c.truncates),
        torn.whole,
        mismatches.len(),
        max_rss / 1024,
    );
    eprintln!(
        "soak: {} write errors (busy databases, retried by the next batch); {} restore tries failed and were retried",
        l(&c.write_errors),
        l(&c.restore_retries)
    );
    assert!(mismatches.is_empty(), "{} mismatches:\n{}", mismatches.len(), mismatches.join("\n"));
}
