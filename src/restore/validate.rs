//! Restore validation: prove that a tenant's replica restores to what the live database
//! holds, at the same TXID.
//!
//! The fleet (see `fleet/validation.rs`) pins a TXID like this: sync, open a
//! read transaction on the live database ([`Snapshot::open`]), sync again. When the
//! second sync ships nothing, no transaction committed between the end of the first
//! sync and the start of the second, so the read transaction — which began in between —
//! sees exactly the state at the replica's newest TXID. The live pages are then read
//! through SQLite's `sqlite_dbpage` table inside that transaction (so WAL frames are
//! applied exactly as SQLite applies them, independently of our own WAL reader) and
//! hashed page by page ([`Snapshot::read`]). The connection is closed before the slow
//! part: [`check`] restores the replica at that TXID into a temporary file, through the
//! same plan `litefleet restore` and `litestream restore` use, and compares every page.
//!
//! Page hashes are LTX's page checksums (CRC-64/GO-ISO of page number and content), and
//! the database checksum shown in logs is their XOR, as in an LTX trailer. SQLite's lock
//! page (the page holding byte offset 1 GiB) is never written by SQLite nor by LTX and is
//! left out on both sides.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::Connection;

use super::{IntegrityCheck, Options, Target};
use crate::ltx::{checksum_page, lock_pgno};
use crate::sqlite;
use crate::status::{Outcome, Validation};
use crate::storage::Replica;

/// How many differing pages a failure names.
const SHOWN_PAGES: usize = 8;

/// Why a validation could not run (a replica that does not restore is not an error:
/// it is a failed validation).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the live database {path}")]
    Live {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "cannot read the live database {path}: this build's SQLite has no sqlite_dbpage table \
         (build with LIBSQLITE3_FLAGS=-DSQLITE_ENABLE_DBPAGE_VTAB, as .cargo/config.toml does)"
    )]
    NoDbPage { path: PathBuf },
    #[error("cannot use the temporary directory {dir}")]
    Temp {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading the restored copy")]
    Read(#[source] std::io::Error),
}

/// The live database at a pinned TXID: one checksum per page (0 for the lock page).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub txid: u64,
    pub page_size: u32,
    pub pages: Vec<u64>,
}

impl Image {
    /// The database checksum (XOR of the page checksums, as in an LTX trailer).
    pub fn checksum(&self) -> u64 {
        self.pages.iter().fold(0, |a, p| a ^ p)
    }
}

/// An open read transaction on a live database.
pub struct Snapshot {
    conn: Connection,
    path: PathBuf,
}

impl Snapshot {
    /// Opens `db` and starts a read transaction (its snapshot is taken here). Closing
    /// the connection neither checkpoints nor deletes the WAL.
    pub fn open(db: &Path, busy_timeout: Duration) -> Result<Snapshot, Error> {
        let err = |source| Error::Live { path: db.to_path_buf(), source };
        let conn = sqlite::open_quiet(db, busy_timeout).map_err(err)?;
        conn.execute_batch("PRAGMA query_only = 1").map_err(err)?;
        sqlite::begin_read(&conn).map_err(err)?;
        Ok(Snapshot { conn, path: db.to_path_buf() })
    }

    /// Hashes every page of the snapshot; `txid` is the TXID it was pinned at.
    pub fn read(self, txid: u64) -> Result<Image, Error> {
        let path = self.path.clone();
        let err = |source| Error::Live { path: path.clone(), source };
        let page_size: u32 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0)).map_err(err)?;
        let lock_page = lock_pgno(page_size);
        let mut stmt = match self.conn.prepare("SELECT pgno, data FROM sqlite_dbpage('main') ORDER BY pgno") {
            Ok(s) => s,
            Err(e) if e.to_string().contains("no such table") => return Err(Error::NoDbPage { path }),
            Err(e) => return Err(err(e)),
        };
        let mut rows = stmt.query([]).map_err(err)?;
        let mut pages = Vec::new();
        while let Some(row) = rows.next().map_err(err)? {
            let pgno: u32 = row.get(0).map_err(err)?;
            let data = row.get_ref(1).map_err(err)?.as_blob_or_null().map_err(|e| err(e.into()))?;
            pages.resize(pgno as usize, 0);
            if pgno != lock_page {
                pages[pgno as usize - 1] = checksum_page(pgno, data.unwrap_or(&[]));
            }
        }
        drop(rows);
        drop(stmt);
        let _ = self.conn.execute_batch("COMMIT");
        Ok(Image { txid, page_size, pages })
    }
}

/// Restores `replica` at `image.txid` into a temporary file under `temp_dir`, compares it
/// with `image` page by page and removes it.
pub async fn check(replica: &Replica, image: &Image, temp_dir: &Path) -> Result<Validation, Error> {
    let started = Instant::now();
    let out = temp_dir.join(format!("litefleet-validate-{}.db", uuid::Uuid::new_v4()));
    // Remove the copy however this ends (error, cancellation, panic).
    let _cleanup = crate::durable::RemoveOnDrop::new(out.clone());
    let opts = Options {
        target: Target { txid: Some(image.txid), timestamp: None },
        integrity: IntegrityCheck::None,
        force: false,
        progress: false,
        sha256: false,
    };
    let done = |outcome, detail: String| Validation {
        outcome,
        at: SystemTime::now(),
        txid: Some(image.txid),
        detail,
        took: started.elapsed(),
    };
    // (A file compacted away between the plan and its download is planned again by the
    // job itself.)
    let summary = match super::restore(replica, &out, &opts).await {
        Ok(s) => s,
        // Writing the copy failed (missing directory, disk full): not the replica's fault.
        // The restore writes `<out>.tmp` then renames it, so the path is in `temp_dir`.
        Err(super::Error::Io { path, source }) if path.parent() == Some(temp_dir) => {
            return Err(Error::Temp { dir: temp_dir.to_path_buf(), source });
        }
        Err(e) => {
            return Ok(done(
                Outcome::Failed,
                format!("the replica does not restore at TXID {}: {}", image.txid, crate::errors::Chain(&e)),
            ));
        }
    };
    if summary.txid != image.txid {
        return Ok(done(
            Outcome::Failed,
            format!("the restore stopped at TXID {} instead of {}", summary.txid, image.txid),
        ));
    }
    let compared = {
        let out = out.clone();
        let image = image.clone();
        tokio::task::spawn_blocking(move || compare(&out, &image))
            .await
            .map_err(|e| Error::Read(std::io::Error::other(e.to_string())))??
    };
    Ok(match compared {
        None => done(
            Outcome::Passed,
            format!(
                "restored {} pages from {} files at TXID {}, equal to the live database (checksum {:016x})",
                image.pages.len(),
                summary.files,
                image.txid,
                image.checksum()
            ),
        ),
        Some(diff) => {
            done(Outcome::Failed, format!("restore at TXID {} differs from the live database: {diff}", image.txid))
        }
    })
}

/// Compares a restored file with the live image; `None` when equal, else what differs.
pub fn compare(restored: &Path, image: &Image) -> Result<Option<String>, Error> {
    let f = File::open(restored).map_err(Error::Read)?;
    let len = f.metadata().map_err(Error::Read)?.len();
    let ps = u64::from(image.page_size);
    let restored_pages = len / ps;
    let lock_page = lock_pgno(image.page_size);
    let mut buf = vec![0u8; image.page_size as usize];
    let mut differ = Vec::new();
    let mut count = 0usize;
    let (mut live_sum, mut restored_sum) = (0u64, 0u64);
    for (i, live) in image.pages.iter().enumerate().take(restored_pages as usize) {
        let pgno = i as u32 + 1;
        if pgno == lock_page {
            continue;
        }
        f.read_exact_at(&mut buf, i as u64 * ps).map_err(Error::Read)?;
        let got = checksum_page(pgno, &buf);
        live_sum ^= live;
        restored_sum ^= got;
        if got != *live {
            count += 1;
            if differ.len() < SHOWN_PAGES {
                differ.push(pgno.to_string());
            }
        }
    }
    let mut problems = Vec::new();
    if len % ps != 0 || restored_pages != image.pages.len() as u64 {
        problems.push(format!(
            "size {len} bytes, the live database has {} pages of {ps} bytes ({} bytes)",
            image.pages.len(),
            image.pages.len() as u64 * ps
        ));
    }
    if count > 0 {
        let more = if count > differ.len() { format!(" and {} more", count - differ.len()) } else { String::new() };
        problems.push(format!(
            "{count} page(s) differ: {}{more} (checksum of the compared pages {restored_sum:016x}, live {live_sum:016x})",
            differ.join(", ")
        ));
    }
    Ok(if problems.is_empty() { None } else { Some(problems.join("; ")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with_rows(path: &Path, rows: usize) -> Connection {
        let c = Connection::open(path).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)").unwrap();
        for _ in 0..rows {
            c.execute("INSERT INTO t(v) VALUES (randomblob(300))", []).unwrap();
        }
        c
    }

    #[test]
    fn the_snapshot_sees_the_state_when_it_began_including_wal_frames() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let writer = db_with_rows(&db, 50);
        // The state S, checkpointed into a copy: copy the db and its WAL, then
        // checkpoint the copy (that is what a restore produces).
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::copy(dir.path().join("a.db-wal"), dir.path().join("copy.db-wal")).unwrap();
        Connection::open(&copy).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();

        let snap = Snapshot::open(&db, Duration::from_secs(1)).unwrap();
        // Committed after the snapshot began: not part of it.
        writer.execute("INSERT INTO t(v) VALUES (randomblob(3000))", []).unwrap();
        let image = snap.read(7).unwrap();
        assert_eq!(image.txid, 7);
        assert_eq!(compare(&copy, &image).unwrap(), None);
        // The newer state is different, and seen by a newer snapshot.
        let newer = Snapshot::open(&db, Duration::from_secs(1)).unwrap().read(8).unwrap();
        assert!(compare(&copy, &newer).unwrap().is_some());
        // Closing the snapshot's connection neither deleted nor checkpointed the WAL.
        assert!(std::fs::metadata(dir.path().join("a.db-wal")).unwrap().len() > 0);
    }

    #[test]
    fn a_difference_names_the_pages_and_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let writer = db_with_rows(&db, 200);
        writer.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
        let image = Snapshot::open(&db, Duration::from_secs(1)).unwrap().read(1).unwrap();
        let copy = dir.path().join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        assert_eq!(compare(&copy, &image).unwrap(), None);

        let f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.write_all_at(b"flipped", 2 * u64::from(image.page_size) + 100).unwrap();
        let diff = compare(&copy, &image).unwrap().expect("a difference");
        assert!(diff.starts_with("1 page(s) differ: 3 (checksum"), "{diff}");

        f.set_len(u64::from(image.page_size) * 2).unwrap();
        let diff = compare(&copy, &image).unwrap().expect("a difference");
        assert!(diff.starts_with(&format!("size {} bytes", image.page_size * 2)), "{diff}");
    }

    #[tokio::test]
    async fn a_missing_temp_dir_is_its_own_error_not_a_failed_replica() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let _w = db_with_rows(&db, 3);
        let storage = crate::storage::Storage::from_url(
            &format!("file://{}", dir.path().join("r").display()),
            &Default::default(),
        )
        .unwrap();
        let mut r = crate::replicate::Replicator::new(&db, storage.replica(""), Default::default());
        r.shutdown().await.unwrap();
        let txid = r.remote_txid().unwrap();
        let image = Snapshot::open(&db, Duration::from_secs(1)).unwrap().read(txid).unwrap();
        let ok = check(&storage.replica(""), &image, dir.path()).await.unwrap();
        assert_eq!(ok.outcome, Outcome::Passed, "{}", ok.detail);
        let err = check(&storage.replica(""), &image, &dir.path().join("missing")).await.err().unwrap();
        assert!(matches!(err, Error::Temp { .. }), "{err}");
    }

    /// The bug this pins: a validation stopped half-way (the daemon shutting down drops
    /// it) left its restore's `litefleet-validate-<uuid>.db.tmp` in the temp dir for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_validation_dropped_half_way_leaves_no_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let w = db_with_rows(&db, 0);
        w.execute_batch("BEGIN").unwrap();
        for _ in 0..40_000 {
            w.execute("INSERT INTO t(v) VALUES (randomblob(1000))", []).unwrap();
        }
        w.execute_batch("COMMIT").unwrap();
        let url = format!("file://{}", dir.path().join("r").display());
        let storage = crate::storage::Storage::from_url(&url, &Default::default()).unwrap();
        let mut r = crate::replicate::Replicator::new(&db, storage.replica(""), Default::default());
        r.shutdown().await.unwrap();
        let image = Snapshot::open(&db, Duration::from_secs(1)).unwrap().read(r.remote_txid().unwrap()).unwrap();
        let temp = dir.path().join("tmp");
        std::fs::create_dir(&temp).unwrap();
        let left = || std::fs::read_dir(&temp).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>();
        let replica = storage.replica("");
        let mut check = Box::pin(check(&replica, &image, &temp));
        let deadline = Instant::now() + Duration::from_secs(30);
        while left().is_empty() {
            assert!(Instant::now() < deadline, "the restore never started writing");
            tokio::select! {
                r = &mut check => panic!("finished before it could be stopped: {:?}", r.map(|v| v.outcome)),
                _ = tokio::time::sleep(Duration::from_micros(200)) => {}
            }
        }
        drop(check);
        // The blocking half of a step in flight finishes on its own thread.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(left().is_empty(), "left behind: {:?}", left());
    }

    #[test]
    fn this_build_has_sqlite_dbpage() {
        // .cargo/config.toml enables it; without it validation fails with `NoDbPage`.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("a.db");
        let _w = db_with_rows(&db, 1);
        assert!(Snapshot::open(&db, Duration::from_secs(1)).unwrap().read(1).is_ok());
    }
}
