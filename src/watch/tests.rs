//! The watcher against real folders: events, rescans, symlinks, reloads.

use notify::event::ModifyKind;

use super::tracker::{Dir, Tracker};
use super::*;
use std::fs;
use std::os::unix::fs::FileExt;
use tokio::time::timeout;

/// Longest wait for any one expected event.
const WAIT: Duration = Duration::from_secs(5);
const G1: &str = "12345678-1234-5678-9abc-123456789012";
const G2: &str = "98765432-4321-8765-cba9-876543210987";
const G3: &str = "abcdef01-2345-6789-abcd-ef0123456789";
const G4: &str = "fedcba98-7654-3210-fedc-ba9876543210";

/// A running watcher over fresh temp folders.
struct Fixture {
    _tmp: tempfile::TempDir,
    /// Canonical base folder holding the watch folders.
    base: PathBuf,
    rx: mpsc::Receiver<WatchEvent>,
    handle: WatchHandle,
    shutdown: CancellationToken,
}

impl Fixture {
    /// Creates `base/<name>` for each name (prepared by `setup` before the watcher
    /// starts) and watches them with keys 0, 1, …
    async fn start(folders: &[(&str, bool)], opts: WatchOptions, setup: impl FnOnce(&Path)) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(tmp.path()).unwrap();
        for (name, _) in folders {
            fs::create_dir_all(base.join(name)).unwrap();
        }
        setup(&base);
        let dirs = folders
            .iter()
            .enumerate()
            .map(|(i, (name, recursive))| WatchDir { recursive: *recursive, ..WatchDir::new(i, base.join(name)) })
            .collect();
        let (tx, rx) = mpsc::channel(64);
        let shutdown = CancellationToken::new();
        let handle = spawn(dirs, opts, tx, shutdown.clone()).unwrap();
        Fixture { _tmp: tmp, base, rx, handle, shutdown }
    }

    /// A watch of `clients` where an application has created tenant `G1` in WAL mode
    /// (a table, a row) and keeps its connection; the `Present` and the events of the
    /// creation are consumed.
    async fn with_sqlite_tenant() -> (Fixture, PathBuf, rusqlite::Connection) {
        let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
        f.until_scan_complete().await;
        let path = f.base.join("clients").join(db(G1));
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
        f.expect("Present on open", |e| *e == present(&path, 0)).await;
        f.drain(Duration::from_millis(200)).await;
        (f, path, conn)
    }

    /// Next event, or a panic after `WAIT`.
    /// Arms a path the kernel will not watch (below a regular file; in production the
    /// `max_user_watches` limit refuses it), which widens every folder's watch.
    fn arm_what_cannot_be_armed(&self) {
        let not_a_folder = self.base.join("clients").join("notes.txt");
        fs::write(&not_a_folder, b"").unwrap();
        let beyond = not_a_folder.join(db(G2));
        self.handle.writes().arm(&beyond, &beyond, &Arc::new(Notify::new()));
    }

    async fn next(&mut self) -> WatchEvent {
        match timeout(WAIT, self.rx.recv()).await {
            Ok(Some(ev)) => ev,
            Ok(None) => panic!("watcher stopped"),
            Err(_) => panic!("no event within {WAIT:?}"),
        }
    }

    /// Events up to and including the next `ScanComplete`.
    async fn until_scan_complete(&mut self) -> Vec<WatchEvent> {
        let mut seen = Vec::new();
        loop {
            let ev = self.next().await;
            let done = matches!(ev, WatchEvent::ScanComplete { .. });
            seen.push(ev);
            if done {
                return seen;
            }
        }
    }

    /// Skips events until one satisfies `want`; returns the ones skipped too.
    async fn expect(&mut self, what: &str, want: impl Fn(&WatchEvent) -> bool) -> Vec<WatchEvent> {
        let mut skipped = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(ev)) if want(&ev) => return skipped,
                Ok(Some(ev)) => skipped.push(ev),
                Ok(None) => panic!("watcher stopped waiting for {what}; saw {skipped:?}"),
                Err(_) => panic!("no {what} within {WAIT:?}; saw {skipped:?}"),
            }
        }
    }

    /// Asserts that nothing but `Changed` arrives for `quiet`.
    async fn expect_quiet(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            assert!(matches!(ev, WatchEvent::Changed { .. }), "unexpected {ev:?}");
        }
    }

    /// Discards whatever arrives for `quiet`.
    /// Every event within `quiet` from now.
    async fn drain(&mut self, quiet: Duration) -> Vec<WatchEvent> {
        let deadline = tokio::time::Instant::now() + quiet;
        let mut seen = Vec::new();
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            seen.push(ev);
        }
        seen
    }

    /// Whether `wake` is notified within `within` (a notification given before the
    /// wait counts).
    async fn woken(wake: &Notify, within: Duration) -> bool {
        timeout(within, wake.notified()).await.is_ok()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.handle.join()).await.unwrap();
    }
}

fn present(path: &Path, dir: usize) -> WatchEvent {
    WatchEvent::Present { path: path.to_path_buf(), dir }
}

fn gone(path: &Path, dir: usize) -> WatchEvent {
    WatchEvent::Gone { path: path.to_path_buf(), dir }
}

fn db(name: &str) -> String {
    format!("{name}.db")
}

/// Quick rescans for tests that exercise the timer; long ones elsewhere so only
/// events are seen.
fn quiet_opts() -> WatchOptions {
    WatchOptions { rescan_interval: Duration::from_secs(3600), ..WatchOptions::default() }
}

#[tokio::test]
async fn initial_scan_reports_databases_and_ignores_the_rest() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        let d = base.join("clients");
        for name in [G1, G2, G3, "regular-name"] {
            fs::write(d.join(db(name)), b"").unwrap();
        }
        for noise in ["x.db-wal", "notes.txt", ".hidden.db", "x.db-shm", "y.db~", "z.db.tmp"] {
            fs::write(d.join(noise), b"").unwrap();
        }
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub").join(db(G4)), b"").unwrap(); // not recursive
    })
    .await;
    let mut seen = f.until_scan_complete().await;
    let last = seen.pop();
    assert_eq!(last, Some(WatchEvent::ScanComplete { dirs: 1, files: 4 }));
    let d = f.base.join("clients");
    let mut want: Vec<WatchEvent> = [G1, G2, G3, "regular-name"].iter().map(|n| present(&d.join(db(n)), 0)).collect();
    let key = |e: &WatchEvent| format!("{e:?}");
    seen.sort_by_key(key);
    want.sort_by_key(key);
    assert_eq!(seen, want);
    f.stop().await;
}

#[tokio::test]
async fn create_touch_write_remove() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
    assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
    let path = f.base.join("clients").join(db(G1));

    // `touch` a new tenant: Present.
    fs::File::create(&path).unwrap();
    f.expect("Present after touch", |e| *e == present(&path, 0)).await;

    // A write to its -wal: Changed, naming the database.
    let wal = f.base.join("clients").join(format!("{G1}.db-wal"));
    fs::write(&wal, b"frames").unwrap();
    f.expect("Changed after -wal write", |e| *e == WatchEvent::Changed { path: path.clone() }).await;

    // A write to the database itself, once its tenant armed it: the tenant is woken.
    f.drain(Duration::from_millis(200)).await;
    fs::remove_file(&wal).unwrap();
    f.drain(Duration::from_millis(200)).await;
    let wake = Arc::new(Notify::new());
    f.handle.writes().arm(&path, &path, &wake);
    fs::write(&path, b"pages").unwrap();
    assert!(Fixture::woken(&wake, WAIT).await, "an armed write woke nobody");

    // Remove: Gone, exactly once.
    fs::remove_file(&path).unwrap();
    let skipped = f.expect("Gone after remove", |e| *e == gone(&path, 0)).await;
    assert!(skipped.iter().all(|e| matches!(e, WatchEvent::Changed { .. })), "{skipped:?}");
    f.handle.rescan_now();
    let after = f.until_scan_complete().await;
    assert_eq!(after, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
    f.stop().await;
}

#[tokio::test]
async fn atomic_rename_in_and_move_out() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::create_dir(base.join("staging")).unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let clients = f.base.join("clients");

    // write a temp file inside the folder, then rename it to <GUID>.db
    let tmp = clients.join(format!("{G1}.db.tmp"));
    fs::write(&tmp, b"SQLite format 3\0").unwrap();
    let target = clients.join(db(G1));
    fs::rename(&tmp, &target).unwrap();
    f.expect("Present after rename in", |e| *e == present(&target, 0)).await;

    // rename from a folder outside the watch
    let outside = f.base.join("staging").join(db(G2));
    fs::write(&outside, b"").unwrap();
    let moved_in = clients.join(db(G2));
    fs::rename(&outside, &moved_in).unwrap();
    f.expect("Present after move in", |e| *e == present(&moved_in, 0)).await;

    // move out of the watched folder: only Name(From) from inotify
    fs::rename(&moved_in, f.base.join("staging").join(db(G2))).unwrap();
    f.expect("Gone after move out", |e| *e == gone(&moved_in, 0)).await;

    // rename inside: old Gone, new Present
    let renamed = clients.join(db(G3));
    fs::rename(&target, &renamed).unwrap();
    let mut pending = vec![gone(&target, 0), present(&renamed, 0)];
    while !pending.is_empty() {
        let ev = f.next().await;
        pending.retain(|p| *p != ev);
    }
    f.stop().await;
}

#[tokio::test]
async fn replacing_a_file_is_gone_then_present() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::write(base.join("clients").join(db(G1)), b"old").unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let path = f.base.join("clients").join(db(G1));
    let tmp = f.base.join("clients").join("restore.tmp");
    fs::write(&tmp, b"new").unwrap();
    fs::rename(&tmp, &path).unwrap();
    f.expect("Gone of the replaced file", |e| *e == gone(&path, 0)).await;
    let ev = f.next().await;
    assert_eq!(ev, present(&path, 0));
    f.stop().await;
}

#[tokio::test]
async fn recursive_watch_sees_db_created_right_after_its_folder() {
    let mut f = Fixture::start(&[("clients", true)], quiet_opts(), |_| {}).await;
    f.until_scan_complete().await;
    let sub = f.base.join("clients").join("eu").join("west");
    fs::create_dir_all(&sub).unwrap();
    let path = sub.join(db(G1));
    fs::write(&path, b"").unwrap();
    f.expect("Present in new subfolder", |e| *e == present(&path, 0)).await;
    // Moving the folder out makes its databases Gone.
    fs::rename(f.base.join("clients").join("eu"), f.base.join("elsewhere")).unwrap();
    f.expect("Gone after folder moved out", |e| *e == gone(&path, 0)).await;
    // Hidden folders are not watched.
    let hidden = f.base.join("clients").join(".state");
    fs::create_dir(&hidden).unwrap();
    fs::write(hidden.join(db(G2)), b"").unwrap();
    f.handle.rescan_now();
    let seen = f.until_scan_complete().await;
    assert_eq!(seen.last(), Some(&WatchEvent::ScanComplete { dirs: 1, files: 0 }), "{seen:?}");
    f.stop().await;
}

#[tokio::test]
async fn non_recursive_watch_ignores_subfolders() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |_| {}).await;
    f.until_scan_complete().await;
    let sub = f.base.join("clients").join("sub");
    fs::create_dir(&sub).unwrap();
    fs::write(sub.join(db(G1)), b"").unwrap();
    f.expect_quiet(Duration::from_millis(300)).await;
    f.handle.rescan_now();
    assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
    f.stop().await;
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_outside_are_refused_inside_accepted() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::write(base.join("secret.db"), b"").unwrap();
        std::os::unix::fs::symlink(base.join("secret.db"), base.join("clients").join(db(G1))).unwrap();
    })
    .await;
    let link = f.base.join("clients").join(db(G1));
    let seen = f.until_scan_complete().await;
    match &seen[..] {
        [WatchEvent::Refused { path, dir: 0, reason }, WatchEvent::ScanComplete { dirs: 1, files: 0 }] => {
            assert_eq!(path, &link);
            assert!(reason.contains("outside the watch directory"), "{reason}");
        }
        other => panic!("got {other:?}"),
    }
    // Not repeated by a rescan.
    f.handle.rescan_now();
    assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 0 }]);
    // Created while watching: refused too.
    let link2 = f.base.join("clients").join(db(G2));
    std::os::unix::fs::symlink(f.base.join("secret.db"), &link2).unwrap();
    f.expect("Refused for new escaping link", |e| matches!(e, WatchEvent::Refused { path, .. } if *path == link2))
        .await;
    // A link to a file inside the folder is fine.
    let real = f.base.join("clients").join("real.sqlite");
    fs::write(&real, b"").unwrap();
    f.expect("Present for real file", |e| *e == present(&real, 0)).await;
    let alias = f.base.join("clients").join(db(G3));
    std::os::unix::fs::symlink(&real, &alias).unwrap();
    f.expect("Present for inner link", |e| *e == present(&alias, 0)).await;
    f.stop().await;
}

#[tokio::test]
async fn rescan_now_finds_what_notify_dropped() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::write(base.join("clients").join(db(G1)), b"").unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let clients = f.base.join("clients");

    // Stop the world: notify events are lost, as in a queue overflow.
    f.handle.drop_events(true);
    fs::write(clients.join(db(G2)), b"").unwrap();
    fs::remove_file(clients.join(db(G1))).unwrap();
    f.expect_quiet(Duration::from_millis(300)).await;
    f.handle.drop_events(false);

    f.handle.rescan_now();
    let mut seen = f.until_scan_complete().await;
    seen.sort_by_key(|e| format!("{e:?}"));
    assert_eq!(
        seen,
        [
            gone(&clients.join(db(G1)), 0),
            present(&clients.join(db(G2)), 0),
            WatchEvent::ScanComplete { dirs: 1, files: 1 },
        ]
    );
    f.stop().await;
}

#[tokio::test]
async fn rescan_reports_writes_whose_events_were_lost() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::write(base.join("clients").join(db(G1)), b"").unwrap();
        fs::write(base.join("clients").join(db(G2)), b"").unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let path = f.base.join("clients").join(db(G1));
    f.handle.drop_events(true);
    fs::write(f.base.join("clients").join(format!("{G1}-wal")), b"x").unwrap(); // not its WAL
    fs::write(f.base.join("clients").join(format!("{G1}.db-wal")), b"frames").unwrap();
    f.expect_quiet(Duration::from_millis(200)).await;
    f.handle.drop_events(false);
    f.handle.rescan_now();
    assert_eq!(
        f.until_scan_complete().await,
        [WatchEvent::Changed { path: path.clone() }, WatchEvent::ScanComplete { dirs: 1, files: 2 }]
    );
    // An idle fleet: a rescan reports nothing but completion.
    f.handle.rescan_now();
    assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 2 }]);
    // The -wal grows, then goes (a checkpoint on close), each unseen by notify: the
    // rescan, which looks only at -wal files its listing shows, still reports both.
    let wal = f.base.join("clients").join(format!("{G1}.db-wal"));
    for change in [Some(b"frames and more frames".as_slice()), None] {
        f.handle.drop_events(true);
        match change {
            Some(bytes) => fs::write(&wal, bytes).unwrap(),
            None => fs::remove_file(&wal).unwrap(),
        }
        f.expect_quiet(Duration::from_millis(200)).await;
        f.handle.drop_events(false);
        f.handle.rescan_now();
        assert_eq!(
            f.until_scan_complete().await,
            [WatchEvent::Changed { path: path.clone() }, WatchEvent::ScanComplete { dirs: 1, files: 2 }]
        );
    }
    f.stop().await;
}

#[tokio::test]
async fn real_sqlite_writes_are_changed_never_gone() {
    let (mut f, path, conn) = Fixture::with_sqlite_tenant().await;
    let wake = Arc::new(Notify::new());
    f.handle.writes().arm(&path, &path, &wake);
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert!(Fixture::woken(&wake, WAIT).await, "a commit woke nobody");
    // Closing checkpoints and deletes -wal and -shm: the database stays Present.
    drop(conn);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, f.rx.recv()).await {
        assert_eq!(ev, WatchEvent::Changed { path: path.clone() });
    }
    // The first rescan after activity may repeat one `Changed` (stamps are only
    // taken by scans, not per event); once idle, a rescan reports nothing else.
    f.handle.rescan_now();
    let seen = f.until_scan_complete().await;
    assert!(seen.iter().all(|e| matches!(e, WatchEvent::Changed { .. } | WatchEvent::ScanComplete { .. })), "{seen:?}");
    f.handle.rescan_now();
    assert_eq!(f.until_scan_complete().await, [WatchEvent::ScanComplete { dirs: 1, files: 1 }]);
    f.stop().await;
}

/// A folder is never asked for its files' writes (on Linux each one would cost the
/// application a kernel event, 516 per 1 MiB commit): a commit is reported through an
/// armed file only, once per arming, straight to the tenant's task (no event on the
/// channel: no hop through the watcher task and the fleet).
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_commit_wakes_its_tenant_once_per_arming_and_only_then() {
    let (mut f, path, conn) = Fixture::with_sqlite_tenant().await;
    let commit = |n: i64| conn.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
    let quiet = Duration::from_millis(300);
    let wake = Arc::new(Notify::new());

    // Not armed: commits to the existing -wal wake nobody.
    (2..5).for_each(|n| _ = commit(n));
    assert!(!Fixture::woken(&wake, quiet).await);
    // Armed: the next commit wakes the task, once, however many follow.
    let writes = f.handle.writes();
    writes.arm(&path, &path, &wake);
    (5..10).for_each(|n| _ = commit(n));
    assert!(Fixture::woken(&wake, WAIT).await, "not woken after arming");
    assert!(!Fixture::woken(&wake, quiet).await, "woken twice for one arming");
    // Armed again: the next one wakes it again.
    writes.arm(&path, &path, &wake);
    commit(10);
    assert!(Fixture::woken(&wake, WAIT).await, "not woken after arming again");
    assert_eq!(f.drain(quiet).await, [], "an armed write also went through the channel");
    // Without a -wal (closing the last connection deletes it) the database itself is
    // armed, and a write in place wakes (here: byte 72 of the header, reserved and
    // zero, written with zero).
    drop(conn);
    f.drain(quiet).await;
    assert!(!crate::sqlite::wal_path(&path).exists());
    writes.arm(&path, &path, &wake);
    fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0], 72).unwrap();
    assert!(Fixture::woken(&wake, WAIT).await, "a write in place woke nobody");
    // Once it has a -wal again, arming disarms the database: one watch per tenant.
    writes.arm(&path, &path, &wake);
    assert_eq!(inotify_watches_on(&path), 1);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO t VALUES (11)", []).unwrap();
    writes.arm(&path, &path, &wake);
    assert_eq!((inotify_watches_on(&path), inotify_watches_on(&crate::sqlite::wal_path(&path))), (0, 1));
    drop(conn);
    f.stop().await;
}

/// inotify watches on `path`'s inode, over every inotify instance of this process.
#[cfg(target_os = "linux")]
fn inotify_watches_on(path: &Path) -> usize {
    inotify_masks_on(path).len()
}

/// The event masks of the inotify watches on `path`'s inode (`/proc/self/fdinfo`).
#[cfg(target_os = "linux")]
fn inotify_masks_on(path: &Path) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = format!(" ino:{:x} ", fs::metadata(path).unwrap().ino());
    let mask = |line: &str| {
        let hex = line.split_whitespace().find_map(|w| w.strip_prefix("mask:")).unwrap();
        u32::from_str_radix(hex, 16).unwrap()
    };
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == "anon_inode:inotify"))
        .filter_map(|fd| fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.file_name().to_string_lossy())).ok())
        .flat_map(|info| {
            info.lines().filter(|l| l.starts_with("inotify") && l.contains(&ino)).map(mask).collect::<Vec<_>>()
        })
        .collect()
}

/// A folder asked for any event of its files makes every `write()` to any of them take
/// and drop a reference on the folder's dentry, shared by every tenant's writer: the
/// folder is asked for names only, and an unarmed write in place, a change of
/// attributes or a close after writing wakes nobody. Once arming fails, the folder asks
/// for its files' writes again.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_folder_is_asked_for_names_only() {
    // IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE | IN_OPEN.
    const OF_ITS_FILES: u32 = 0x3f;
    let (mut f, path, conn) = Fixture::with_sqlite_tenant().await;
    let folder = f.base.join("clients");
    let masks = inotify_masks_on(&folder);
    assert!(masks.len() == 1 && masks[0] & OF_ITS_FILES == 0, "folder masks {masks:x?}");
    drop(conn);
    f.drain(Duration::from_millis(300)).await;
    assert!(!crate::sqlite::wal_path(&path).exists());
    fs::OpenOptions::new().write(true).open(&path).unwrap().write_all_at(&[0], 72).unwrap();
    let mut perms = fs::metadata(&path).unwrap().permissions();
    perms.set_readonly(true);
    fs::set_permissions(&path, perms.clone()).unwrap();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    fs::set_permissions(&path, perms).unwrap();
    assert_eq!(f.drain(Duration::from_millis(300)).await, []);
    // A new name is still an event.
    let other = folder.join(db(G2));
    fs::File::create(&other).unwrap();
    f.expect("Present after create", |e| *e == present(&other, 0)).await;

    f.arm_what_cannot_be_armed();
    let masks = inotify_masks_on(&folder);
    assert!(masks.len() == 1 && masks[0] & 0x2 != 0, "widened folder masks {masks:x?}");
    f.stop().await;
}

/// A file the kernel will not watch (here: a path below a regular file; in production
/// the `max_user_watches` limit) must not cost a wake-up: every folder then reports its
/// files' writes, armed or not.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn a_file_that_cannot_be_armed_makes_every_folder_report_writes() {
    let (mut f, path, conn) = Fixture::with_sqlite_tenant().await;
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    assert_eq!(f.drain(Duration::from_millis(300)).await, []);

    f.arm_what_cannot_be_armed();
    f.drain(Duration::from_millis(200)).await;
    for n in 3..5 {
        conn.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        f.expect("Changed without arming", |e| *e == WatchEvent::Changed { path: path.clone() }).await;
        f.drain(Duration::from_millis(200)).await;
    }
    f.stop().await;
}

#[tokio::test]
async fn periodic_rescan_reconciles_without_events() {
    let opts = WatchOptions { rescan_interval: Duration::from_millis(300), ..WatchOptions::default() };
    let mut f = Fixture::start(&[("clients", false)], opts, |_| {}).await;
    f.until_scan_complete().await;
    f.handle.drop_events(true);
    let path = f.base.join("clients").join(db(G1));
    fs::write(&path, b"").unwrap();
    f.expect("Present from the periodic rescan", |e| *e == present(&path, 0)).await;
    f.stop().await;
}

#[tokio::test]
async fn set_dirs_adds_and_removes_folders() {
    let mut f = Fixture::start(&[("prod", false)], quiet_opts(), |base| {
        fs::write(base.join("prod").join(db(G1)), b"").unwrap();
        fs::create_dir(base.join("staging")).unwrap();
        fs::write(base.join("staging").join(db(G1)), b"").unwrap();
        fs::write(base.join("staging").join(db(G2)), b"").unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let prod = WatchDir::new(0, f.base.join("prod"));
    let staging = WatchDir::new(1, f.base.join("staging"));

    f.handle.set_dirs(vec![prod.clone(), staging.clone()]).await.unwrap();
    let mut seen = f.until_scan_complete().await;
    seen.sort_by_key(|e| format!("{e:?}"));
    let s = f.base.join("staging");
    assert_eq!(
        seen,
        [present(&s.join(db(G1)), 1), present(&s.join(db(G2)), 1), WatchEvent::ScanComplete { dirs: 2, files: 3 },]
    );
    // New files in the added folder are seen live.
    fs::write(s.join(db(G3)), b"").unwrap();
    f.expect("Present in added folder", |e| *e == present(&s.join(db(G3)), 1)).await;
    f.drain(Duration::from_millis(200)).await; // and Changed when `fs::write` closes it

    // Removing prod: its file is Gone, staging untouched.
    f.handle.set_dirs(vec![staging]).await.unwrap();
    let seen = f.until_scan_complete().await;
    assert_eq!(seen, [gone(&f.base.join("prod").join(db(G1)), 0), WatchEvent::ScanComplete { dirs: 1, files: 3 },]);
    // And no longer watched.
    fs::write(f.base.join("prod").join(db(G4)), b"").unwrap();
    f.expect_quiet(Duration::from_millis(300)).await;

    // A missing folder is refused as a whole, nothing changes.
    let err = f.handle.set_dirs(vec![WatchDir::new(7, f.base.join("nope"))]).await.unwrap_err();
    assert!(matches!(err, WatchError::Dir { .. }), "{err}");
    f.stop().await;
}

#[tokio::test]
async fn poll_watcher_sees_new_files() {
    let opts = WatchOptions {
        rescan_interval: Duration::from_secs(3600),
        poll: true,
        poll_interval: Duration::from_millis(100),
    };
    let mut f = Fixture::start(&[("clients", false)], opts, |_| {}).await;
    f.until_scan_complete().await;
    let path = f.base.join("clients").join(db(G1));
    fs::write(&path, b"").unwrap();
    f.expect("Present via polling", |e| *e == present(&path, 0)).await;
    fs::remove_file(&path).unwrap();
    f.expect("Gone via polling", |e| *e == gone(&path, 0)).await;
    f.stop().await;
}

#[tokio::test]
async fn spawn_refuses_missing_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let err = spawn(
        vec![WatchDir::new(0, tmp.path().join("missing"))],
        WatchOptions::default(),
        tx,
        CancellationToken::new(),
    )
    .err()
    .unwrap();
    assert!(err.to_string().starts_with("cannot use watch directory"), "{err}");
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let err =
        spawn(vec![WatchDir::new(0, &file)], WatchOptions::default(), tx, CancellationToken::new()).err().unwrap();
    assert!(matches!(err, WatchError::NotADirectory { .. }), "{err}");
}

#[tokio::test]
async fn watch_dir_removed_and_recreated() {
    let mut f = Fixture::start(&[("clients", false)], quiet_opts(), |base| {
        fs::write(base.join("clients").join(db(G1)), b"").unwrap();
    })
    .await;
    f.until_scan_complete().await;
    let clients = f.base.join("clients");
    fs::remove_dir_all(&clients).unwrap();
    f.expect("Gone when the folder is deleted", |e| *e == gone(&clients.join(db(G1)), 0)).await;
    fs::create_dir(&clients).unwrap();
    fs::write(clients.join(db(G2)), b"").unwrap();
    f.handle.rescan_now();
    f.expect("Present after the folder came back", |e| *e == present(&clients.join(db(G2)), 0)).await;
    // Watched again: a new file is seen without a rescan.
    f.until_scan_complete().await;
    fs::write(clients.join(db(G3)), b"").unwrap();
    f.expect("Present live after re-watch", |e| *e == present(&clients.join(db(G3)), 0)).await;
    f.stop().await;
}

#[test]
fn covers_respects_recursion_and_hidden_folders() {
    let dir = |recursive| Dir {
        spec: WatchDir { recursive, ..WatchDir::new(0, "/w") },
        root: PathBuf::from("/w"),
        watching: true,
    };
    let flat = dir(false);
    let deep = dir(true);
    assert!(flat.covers(Path::new("/w/a.db")));
    assert!(!flat.covers(Path::new("/w/sub/a.db")));
    assert!(!flat.covers(Path::new("/w")));
    assert!(!flat.covers(Path::new("/elsewhere/a.db")));
    assert!(deep.covers(Path::new("/w/sub/a.db")));
    assert!(deep.covers(Path::new("/w/sub/deeper/a.db")));
    assert!(!deep.covers(Path::new("/w/.state/a.db")));
    assert!(deep.covers(Path::new("/w/.a.db")));
}

#[test]
fn overflow_and_errors_ask_for_a_rescan_access_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let root = fs::canonicalize(tmp.path()).unwrap();
    fs::write(root.join(db(G1)), b"").unwrap();
    let mut tracker = tracker_on(&root, 3);
    let mut out = Vec::new();
    let overflow = Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
    assert!(tracker.handle_events([Ok(overflow)].into_iter(), &mut out));
    let no_paths = Event::new(EventKind::Create(notify::event::CreateKind::File));
    assert!(tracker.handle_events([Ok(no_paths)].into_iter(), &mut out));
    let error = notify::Error::generic("boom");
    assert!(tracker.handle_events([Err(error)].into_iter(), &mut out));
    let access = Event::new(EventKind::Access(notify::event::AccessKind::Any)).add_path(root.join(db(G1)));
    assert!(!tracker.handle_events([Ok(access)].into_iter(), &mut out));
    assert!(out.is_empty(), "{out:?}");
    // A data write to an unknown database is how a missed create is caught.
    let write =
        Event::new(EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any))).add_path(root.join(db(G1)));
    assert!(!tracker.handle_events([Ok(write.clone())].into_iter(), &mut out));
    assert_eq!(out, [present(&root.join(db(G1)), 3)]);
    out.clear();
    assert!(!tracker.handle_events([Ok(write)].into_iter(), &mut out));
    assert_eq!(out, [WatchEvent::Changed { path: root.join(db(G1)) }]);
}

/// Cost of the periodic safety rescan when nothing changed, per database file:
/// `cargo test --release --lib rescan_cost -- --ignored --nocapture`
/// (`LITEFLEET_RESCAN_BENCH_N` files, default 100,000; recorded in docs/benchmarks.md).
#[test]
#[ignore = "benchmark"]
fn rescan_cost() {
    let n: usize = std::env::var("LITEFLEET_RESCAN_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    // Creating (and removing) 100,000 files takes ~40 s here; LITEFLEET_RESCAN_BENCH_DIR
    // names a folder to create them in once and keep, for repeated runs and profiles.
    let tmp = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let keep = std::env::var_os("LITEFLEET_RESCAN_BENCH_DIR").map(PathBuf::from);
    let root = keep.unwrap_or_else(|| tmp.path().to_path_buf());
    fs::create_dir_all(&root).unwrap();
    let root = fs::canonicalize(root).unwrap();
    for i in 0..n {
        let path = root.join(format!("{i:08x}-0000-4000-8000-{i:012x}.db"));
        if !path.exists() {
            fs::write(path, b"").unwrap();
        }
    }
    let mut tracker = tracker_on(&root, 0);
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    tracker.full_rescan(&mut out);
    println!("first scan of {n} files: {:?}", t.elapsed());
    assert_eq!(out.len(), n + 1);
    let mut best = Duration::MAX;
    for _ in 0..5 {
        out.clear();
        let t = std::time::Instant::now();
        tracker.full_rescan(&mut out);
        best = best.min(t.elapsed());
        assert_eq!(out, [WatchEvent::ScanComplete { dirs: 1, files: n }]);
    }
    println!("rescan, nothing changed: best of 5 {best:?} = {:.2} µs per file", best.as_secs_f64() * 1e6 / n as f64);
}

#[test]
fn a_slow_rescan_pushes_the_next_one_back() {
    let began = tokio::time::Instant::now();
    let minute = Duration::from_secs(60);
    let quick = next_rescan(began, began + Duration::from_millis(10), minute) - began;
    assert!(quick >= Duration::from_secs(54) && quick <= Duration::from_secs(67), "{quick:?}");
    // A rescan that took 1.5 s: the next one is at least 150 s after it ended.
    let end = began + Duration::from_millis(1500);
    assert_eq!(next_rescan(began, end, minute) - end, Duration::from_secs(150));
}

/// A tracker of one folder (key `key`) without a notify watcher.
fn tracker_on(root: &Path, key: usize) -> Tracker {
    let dir = Dir { spec: WatchDir::new(key, root), root: root.to_path_buf(), watching: false };
    Tracker::new(Box::new(notify::NullWatcher), vec![dir]).unwrap()
}

#[test]
fn jitter_stays_within_ten_percent() {
    for _ in 0..1000 {
        let j = jittered(Duration::from_secs(60));
        assert!(j >= Duration::from_secs(54) && j <= Duration::from_secs(66), "{j:?}");
    }
}

#[test]
fn notify_thread_pauses_once_awake_for_a_while_and_never_when_polling() {
    let t0 = std::time::Instant::now();
    let mut slept = Vec::new();
    let mut pacer = Pacer::new(true);
    // A burst within AWAKE: handed on without a pause.
    for us in [0, 50, 150] {
        pacer.after_event(t0 + Duration::from_micros(us), |d| slept.push(d));
    }
    assert!(slept.is_empty(), "{slept:?}");
    // Awake for AWAKE: one pause, then a new window starts.
    pacer.after_event(t0 + AWAKE, |d| slept.push(d));
    assert_eq!(slept, vec![PAUSE]);
    let later = t0 + AWAKE + PAUSE;
    pacer.after_event(later, |d| slept.push(d));
    pacer.after_event(later + AWAKE / 2, |d| slept.push(d));
    assert_eq!(slept.len(), 1);
    pacer.after_event(later + AWAKE * 3, |d| slept.push(d));
    assert_eq!(slept.len(), 2);
    // The PollWatcher hands on its whole sweep at once: never paced.
    let mut poll = Pacer::new(false);
    for ms in 0..10 {
        poll.after_event(t0 + Duration::from_millis(ms), |d| slept.push(d));
    }
    assert_eq!(slept.len(), 2);
    // Sporadic small commits (a few events within AWAKE, far apart) never pause it: a pause would
    // delay the rest of a commit's events, and the sync that sees the commit.
    let mut sporadic = Pacer::new(true);
    for commit in 0..20u64 {
        for us in [0, 40, 90, 150] {
            let at = t0 + Duration::from_millis(50 * commit) + Duration::from_micros(us);
            sporadic.after_event(at, |d| slept.push(d));
        }
    }
    assert_eq!(slept.len(), 2);
}
