//! Checkpoints without stalling the application. The replicator is the database's
//! checkpointer (applications' own checkpoints cannot pass its read lock), and it
//! never holds the application's write lock for longer than a copy of the last few
//! frames: no encode, no upload, no large copy and no `fsync` of a backlog.
//!
//! A checkpoint that lets the log restart needs one moment in which every frame of
//! the WAL is shipped and backfilled and nobody holds a read mark. A writer that
//! commits continuously never provides that moment, so the replicator makes one with a
//! *write barrier* (a second connection in `BEGIN IMMEDIATE`). The costly parts run
//! before it, while writers run; `Replicator::checkpoint` (in `mod.rs`) drives the
//! steps and uploads between them:
//!
//! 1. **Catch up** (no lock): every committed frame is prepared.
//! 2. **Hand-off** ([`Engine::hand_off`], a barrier of microseconds): copy the frames
//!    committed since step 1 into memory, end our read transaction and begin a new one
//!    — its read mark is the end of the WAL — and release the barrier. The barrier
//!    connection's own read snapshot is held across the switch.
//! 3. **Backfill** (same call, no lock): a PASSIVE checkpoint from the second
//!    connection copies the WAL into the database up to our new read mark and `fsync`s
//!    both files. It starts right after the barrier is released, before any writer
//!    that the barrier made sleep in its busy handler (≥ 1 ms) has committed, so it
//!    holds SQLite's checkpoint lock and the application's own auto-checkpoint returns
//!    at once instead of doing this copy inside one of its commits. Then the copy of
//!    step 2 is encoded.
//! 4. **Restart** ([`Engine::restart`], a barrier): copy what committed during step 3,
//!    end our read transaction, PASSIVE-checkpoint the few frames step 3 did not cover,
//!    begin a new read transaction, release the barrier. The next writer restarts the log.
//!
//! Steps 2 and 3 repeat (at most [`HAND_OFF_ROUNDS`] times) while step 3 leaves more
//! than [`QUIET_TAIL_FRAMES`]; if it still does, step 4 waits for a later checkpoint
//! (the log keeps growing, backfilled, until the application pauses) unless the WAL
//! holds [`FORCE_RESTART_FACTOR`] × `min_checkpoint_pages` and step 3 left at most
//! [`MAX_TAIL_FRAMES`]. A barrier never copies more than [`MAX_TAIL_FRAMES`], neither
//! into memory nor into the database: with more, it is released at once and the
//! replicator catches up first — an application that writes faster than the replicator
//! ships or backfills is never throttled (as with Litestream, its WAL grows meanwhile).
//! (A forced step 4 once backfilled whatever step 3 left, and `fsync`ed it, under its
//! barrier: an unbounded stall of the application.)
//!
//! Why nothing is lost (the invariant `docs/architecture.md` relies on: *the log can
//! restart only when every frame of its generation has been prepared*): SQLite restarts
//! the log only when every frame is backfilled and no reader holds a read mark, and it
//! backfills no frame past a reader's mark; a reader that began when everything was
//! backfilled holds mark 0, which forbids any backfill. At every moment one of our
//! connections holds a read transaction: outside the barriers the main connection;
//! during its switch in steps 2 and 4 the barrier connection, whose `BEGIN IMMEDIATE`
//! took a snapshot too. Everything committed before the barrier is copied into memory
//! before the main connection's new read transaction begins, and the position moves
//! only once that copy is encoded, so when the log restarts every frame of the old
//! generation is in an L0 file or in memory on its way there.
//!
//! **Read mark 0.** Step 4 begins our read transaction on a fully backfilled WAL, so
//! SQLite gives it read mark 0: it lets the next writer restart the log, and forbids
//! any backfill until it ends. Held while the application writes on, it makes every
//! one of the application's auto-checkpoints (one per commit once the WAL holds 1,000
//! frames) sort every frame of the WAL to find that it may copy none — quadratic in the
//! WAL's size: 10,000 commits took 3.3 s instead of 0.3 s behind a reader on mark 0. So
//! once the new generation holds a commit, [`Engine::reanchor`] moves our read
//! transaction to a non-zero mark without a barrier (see [`Anchor`] for why that is
//! safe), and — once [`EARLY_BACKFILL_FRAMES`] below it are not backfilled — backfills
//! up to it itself ([`Engine::backfill_early`], also run right after an open).
//!
//! TRUNCATE is only the emergency brake when a log past `truncate_pages` could not be
//! restarted because an application reader held old frames; it is followed by a
//! full-page file. RESTART is never used (it blocks applications: litestream issue 724).

use std::time::Instant;

use rusqlite::Connection;

use super::engine::Engine;
use super::plan::SnapshotReason;
use super::prepare::Job;
use super::{Pending, Result};
use crate::ltx::TxId;
use crate::{sqlite, wal};

/// The log is restarted under a barrier even while the application writes
/// continuously once the WAL holds this many times `min_checkpoint_pages`.
pub const FORCE_RESTART_FACTOR: u64 = 8;
/// Step 4 runs when step 3 left at most this many frames for it to copy.
pub const QUIET_TAIL_FRAMES: u64 = 256;
/// A barrier copies at most this many frames (the in-flight transaction of a writer
/// that commits 1 MiB at a time fits); with more, the replicator catches up first.
pub const MAX_TAIL_FRAMES: u64 = 1024;
/// Hand-off and backfill rounds before step 4.
pub const HAND_OFF_ROUNDS: usize = 3;

/// Frames below our read mark not yet copied into the database from which we copy
/// them as soon as the mark is taken (after an open, and when it leaves 0): left to
/// the application, its next auto-checkpoint would copy them and `fsync` the WAL inside
/// one of its commits (see [`Engine::backfill_early`]).
pub const EARLY_BACKFILL_FRAMES: u32 = 256;

/// Polls (1 ms apart) after step 4 for the application's first commit in the restarted
/// log, to move our read mark off 0 before the WAL grows.
pub const REANCHOR_POLLS: u32 = 20;

/// The WAL as it was when our read transaction began, where that may have been on
/// read mark 0: `frames` bounds the frames of generation `salts` committed then
/// (`salts` (0, 0): no WAL then).
///
/// Why moving off mark 0 needs no barrier: while we hold mark 0 nobody can backfill, so
/// the backfilled count stays what it was (≤ `frames`, or 0 in a log restarted since).
/// Once the WAL holds a commit past that — a commit in another generation, or our own
/// position beyond `frames` in this one — a read transaction begun on a second
/// connection gets a non-zero mark (SQLite gives mark 0 only to a fully backfilled WAL).
/// We begin it before ending the old one, and a non-zero mark forbids any restart, so
/// no frame we have not prepared can be overwritten. If we held a non-zero mark after
/// all, nothing changes: the backfilled count is bounded by our mark, itself bounded by
/// `frames`, and the log cannot restart meanwhile.
#[derive(Clone, Copy, Debug)]
pub(super) struct Anchor {
    salts: (u32, u32),
    frames: u64,
}

/// What one barrier step did.
pub(super) enum Step {
    /// Done; the frames copied under the barrier, encoded (upload them in order).
    Done(Vec<Pending>),
    /// The barrier could not be had within the busy timeout.
    Busy,
    /// More than [`MAX_TAIL_FRAMES`] committed since the last catch-up: released at
    /// once, nothing done.
    Behind,
}

/// What `PRAGMA wal_checkpoint` reported.
#[derive(Clone, Copy, Debug)]
pub(super) struct Outcome {
    /// SQLite returned `SQLITE_BUSY` (another checkpointer, or readers in the way).
    pub(super) busy: bool,
    /// Frames in the WAL (-1: another connection held the checkpoint lock).
    pub(super) log: i64,
    /// Frames backfilled into the database.
    pub(super) done: i64,
}

fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<Outcome> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok(Outcome { busy: r.get::<_, i64>(0)? != 0, log: r.get(1)?, done: r.get(2)? })
    })
}

fn timeline(what: &str, since: Instant) {
    tracing::debug!(target: "litefleet::timeline", dur_us = since.elapsed().as_micros() as u64, "{what}");
}

impl Engine {
    /// Frames of the WAL up to our position (the logical size Litestream uses too).
    pub(super) fn wal_frames(&self) -> u64 {
        let Some(pos) = &self.pos else { return 0 };
        pos.offset.saturating_sub(wal::HEADER_SIZE) / (u64::from(pos.page_size) + wal::FRAME_HEADER_SIZE)
    }

    /// Whether a checkpoint is due: the WAL holds `min_checkpoint_pages`, or
    /// `checkpoint_interval` passed, or `force` (going idle) — in every case only if
    /// something was shipped since the last checkpoint: a leftover WAL that is already
    /// backfilled costs nothing, however large.
    pub(super) fn checkpoint_due(&self, force: bool) -> bool {
        if self.pos.is_none() || self.hot.is_none() || !self.shipped_since_checkpoint {
            return false;
        }
        let frames = self.wal_frames();
        let interval_due = !self.settings.checkpoint_interval.is_zero()
            && self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
        frames > 1 && (force || interval_due || frames >= self.settings.min_checkpoint_pages)
    }

    /// Whether step 4 should run now, `left` frames behind step 3's backfill.
    /// A forced restart still copies at most [`MAX_TAIL_FRAMES`] under its barrier: the
    /// copy and its `fsync` are what the application waits for.
    pub(super) fn restart_now(&self, left: u64, force: bool) -> bool {
        let forced = force || self.wal_frames() >= self.settings.min_checkpoint_pages * FORCE_RESTART_FACTOR;
        left <= QUIET_TAIL_FRAMES || forced && left <= MAX_TAIL_FRAMES
    }

    /// Frames step 4 would copy after a backfill that reported `o`.
    pub(super) fn unbackfilled(&self, o: &Outcome) -> u64 {
        self.wal_frames().saturating_sub(u64::try_from(o.done).unwrap_or(0))
    }

    /// Frames committed (or being written) after our position, counted by their
    /// headers up to `limit + 1`.
    fn frames_after_us(&self) -> u64 {
        let Some(pos) = &self.pos else { return 0 };
        let Some((f, h)) = self.wal_now() else { return 0 };
        let mut at = if (h.salt1, h.salt2) == (pos.salt1, pos.salt2) {
            pos.offset.max(wal::HEADER_SIZE)
        } else {
            wal::HEADER_SIZE
        };
        let mut n = 0;
        while n <= MAX_TAIL_FRAMES {
            match wal::read_frame_header(&f, at) {
                Ok(Some(fh)) if (fh.salt1, fh.salt2) == (h.salt1, h.salt2) => n += 1,
                _ => break,
            }
            at += h.frame_size();
        }
        n
    }

    /// Takes the write barrier on `side`, then copies into memory every page
    /// committed before it. `Err(step)`: busy, or too much to copy (the barrier is
    /// released at once).
    fn barrier(&mut self, side: &Connection, next: TxId) -> Result<std::result::Result<Vec<Job>, Step>> {
        // Behind already: do not take the lock only to find out (each take makes a
        // writer sleep in its busy handler, 1 ms at least).
        if self.frames_after_us() > MAX_TAIL_FRAMES {
            return Ok(Err(Step::Behind));
        }
        let t = Instant::now();
        let got = side.execute_batch("BEGIN IMMEDIATE");
        timeline("barrier acquire", t);
        if let Err(e) = got {
            tracing::debug!(db = %self.path.display(), error = %e, "checkpoint skipped: writer busy");
            return Ok(Err(Step::Busy));
        }
        if self.frames_after_us() > MAX_TAIL_FRAMES {
            let _ = side.execute_batch("ROLLBACK");
            return Ok(Err(Step::Behind));
        }
        // One file: under the barrier nothing commits and nothing is cut by size.
        let copied = self.plan_file(next, true).and_then(|(job, _)| match job {
            Some(mut job) => self.capture(&mut job).map(|_| vec![job]),
            None => Ok(Vec::new()),
        });
        match copied {
            Ok(jobs) => Ok(Ok(jobs)),
            Err(e) => {
                let _ = side.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// Encodes the copies a barrier took and makes them ours.
    fn encode_copies(&mut self, jobs: Vec<Job>) -> Result<Vec<Pending>> {
        jobs.into_iter().map(|job| self.finish_in_memory(job)).collect()
    }

    /// Runs `f`; on error closes the connection, so nothing goes on as if our read
    /// transaction had been held.
    fn or_close<T>(&mut self, f: impl FnOnce(&mut Engine) -> Result<T>) -> Result<T> {
        let r = f(self);
        if r.is_err() {
            self.close();
        }
        r
    }

    /// The second connection: the barrier's, and the backfill's.
    fn side(&self) -> Result<Connection> {
        let mut c = sqlite::open_quiet(&self.path, self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
        sqlite::retry_often(&mut c, self.settings.busy_timeout).map_err(|e| self.err_sql(e))?;
        Ok(c)
    }

    /// Steps 2 and 3: the hand-off moves our read mark to the end of the WAL, then
    /// the backfill up to it starts at once, while writers run (before a writer the
    /// barrier put to sleep can commit and start the same copy in its own commit).
    pub(super) fn hand_off(&mut self, next: TxId) -> Result<(Step, Option<Outcome>)> {
        self.or_close(|e| {
            let side = e.side()?;
            let jobs = match e.barrier(&side, next)? {
                Ok(jobs) => jobs,
                Err(step) => return Ok((step, None)),
            };
            let held = Instant::now();
            let hot = e.hot.as_ref().unwrap_or_else(|| unreachable!("hot: a barrier was taken"));
            let switched = hot.conn.execute_batch("COMMIT").and_then(|_| sqlite::begin_read(&hot.conn));
            let _ = side.execute_batch("ROLLBACK");
            timeline("barrier held (hand-off)", held);
            switched.map_err(|err| e.err_sql(err))?;
            let t = Instant::now();
            let o = checkpoint(&side, "PASSIVE").map_err(|err| e.err_sql(err))?;
            timeline("backfill", t);
            tracing::debug!(db = %e.path.display(), ?o, "backfill");
            let files = e.encode_copies(jobs)?;
            e.last_checkpoint = Instant::now();
            e.shipped_since_checkpoint = false;
            Ok((Step::Done(files), Some(o)))
        })
    }

    /// Step 4, the restart: every frame backfilled and our new read transaction begun
    /// while writers wait, so the next writer restarts the log.
    pub(super) fn restart(&mut self, next: TxId) -> Result<Step> {
        self.or_close(|e| {
            let side = e.side()?;
            let jobs = match e.barrier(&side, next)? {
                Ok(jobs) => jobs,
                Err(step) => return Ok(step),
            };
            let held = Instant::now();
            let hot = e.hot.as_ref().unwrap_or_else(|| unreachable!("hot: a barrier was taken"));
            let r = (|| -> rusqlite::Result<Outcome> {
                hot.conn.execute_batch("COMMIT")?;
                let r = checkpoint(&hot.conn, "PASSIVE");
                sqlite::begin_read(&hot.conn)?;
                r
            })();
            // Read under the barrier: the log cannot restart before it is released.
            let salts = e.wal_salts();
            let _ = side.execute_batch("ROLLBACK");
            timeline("barrier held (restart)", held);
            drop(side);
            let o = r.map_err(|err| e.err_sql(err))?;
            tracing::debug!(db = %e.path.display(), ?o, "passive checkpoint");
            if !o.busy && o.log >= 0 && o.done == o.log {
                e.zero_mark = Some(Anchor { salts, frames: o.log.unsigned_abs() });
            }
            let files = e.encode_copies(jobs)?;
            // The copies belong to the generation just backfilled.
            e.shipped_since_checkpoint = false;
            if e.wal_frames() >= e.settings.truncate_pages && o.log >= 0 && (o.busy || o.done < o.log) {
                e.truncate()?;
            }
            Ok(Step::Done(files))
        })
    }

    /// The emergency brake: PASSIVE could not restart a log past `truncate_pages`
    /// because a reader holds old frames. TRUNCATE waits for readers; commits racing it
    /// may have been backfilled unseen, so the next file is a full-page file.
    fn truncate(&mut self) -> Result<()> {
        tracing::warn!(db = %self.path.display(), wal_pages = self.wal_frames(), "WAL past the truncate threshold; running TRUNCATE checkpoint");
        let hot = self.hot.as_ref().unwrap_or_else(|| unreachable!("hot: checked by the caller"));
        let r = (|| -> rusqlite::Result<()> {
            hot.conn.execute_batch("COMMIT")?;
            let r = checkpoint(&hot.conn, "TRUNCATE").map(|_| ());
            sqlite::begin_read(&hot.conn)?;
            r
        })();
        r.map_err(|e| self.err_sql(e))?;
        self.continuous = false;
        self.force_snapshot = Some(SnapshotReason::AfterTruncate);
        self.zero_mark = Some(Anchor { salts: (0, 0), frames: 0 });
        Ok(())
    }
}

impl Engine {
    /// The WAL and its header as they are now (`None`: no WAL, no header, or unreadable).
    fn wal_now(&self) -> Option<(std::fs::File, wal::Header)> {
        let f = std::fs::File::open(&self.wal_path).ok()?;
        let h = wal::Header::read(&f).ok().flatten()?;
        Some((f, h))
    }

    /// Where the WAL ends now: its generation's salts and the file's length. A paced
    /// sync ships up to here and no further (see [`Engine::past_horizon`]).
    pub(super) fn wal_horizon(&self) -> Option<((u32, u32), u64)> {
        let (f, h) = self.wal_now()?;
        let len = f.metadata().ok()?.len();
        Some(((h.salt1, h.salt2), len))
    }

    /// Whether our position has passed `horizon`: beyond its length in its generation,
    /// or in another generation (the log restarted since).
    pub(super) fn past_horizon(&self, horizon: ((u32, u32), u64)) -> bool {
        let (salts, len) = horizon;
        self.pos.as_ref().is_some_and(|p| (p.salt1, p.salt2) != salts || p.offset >= len)
    }

    /// Salts of the WAL's current generation ((0, 0): no WAL header).
    fn wal_salts(&self) -> (u32, u32) {
        self.wal_now().map_or((0, 0), |(_, h)| (h.salt1, h.salt2))
    }

    /// Whether the WAL provably holds a commit past `a` (see [`Anchor`]).
    fn past(&self, a: &Anchor) -> Result<bool> {
        let wal_err = |e| super::Error::Wal { path: self.wal_path.clone(), source: e };
        let Ok(f) = std::fs::File::open(&self.wal_path) else { return Ok(false) };
        let Some(h) = wal::Header::read(&f).map_err(wal_err)? else { return Ok(false) };
        if (h.salt1, h.salt2) == a.salts {
            // Our own position: every frame before it is committed.
            return Ok(self
                .pos
                .as_ref()
                .is_some_and(|p| (p.salt1, p.salt2) == a.salts && self.wal_frames() > a.frames));
        }
        // Another generation: its first transaction, if committed.
        let (seg, _) = wal::scan(&f, &h, wal::Cursor::start(&h), 1).map_err(wal_err)?;
        Ok(seg.transactions > 0)
    }

    /// Anchors the read transaction `open` began: it is on mark 0 if the application
    /// had just backfilled the whole WAL (its auto-checkpoint, while the tenant was
    /// cold), and would stay there until our next checkpoint, with the application's
    /// checkpoints sorting the WAL for nothing. Called after a catch-up: it read every
    /// frame committed before the transaction began, so our position bounds them.
    pub(super) fn anchor_after_open(&mut self) {
        if !std::mem::take(&mut self.unanchored) || self.zero_mark.is_some() {
            return;
        }
        if let Some(p) = &self.pos {
            self.zero_mark = Some(Anchor { salts: (p.salt1, p.salt2), frames: self.wal_frames() });
        }
    }

    /// Copies the WAL into the database up to our read mark, now, if at least
    /// [`EARLY_BACKFILL_FRAMES`] are not yet copied (a PASSIVE checkpoint from `conn`,
    /// which holds no read transaction, else from a new second connection; SQLite copies
    /// nothing past our mark). A copy that fails is left to our next checkpoint. Called
    /// right after the mark is taken, when it may lie far past what was backfilled: a
    /// tenant that woke on a bulk write (the application committed while it was cold,
    /// before our connection opened), or a mark leaving 0 after a burst. Otherwise the
    /// application's next auto-checkpoint (once its WAL holds 1,000 frames) does this
    /// copy, with its two `fsync`s, inside one of its commits; ours runs beside its
    /// commits, and while it does the application's auto-checkpoint finds the checkpoint
    /// lock taken and returns at once. A small gap waits for our next checkpoint: two
    /// `fsync`s per wake-up are not worth it for a few frames.
    pub(super) fn backfill_early(&self, conn: Option<&Connection>) {
        let Some(p) = self.hot.as_ref().and_then(|h| sqlite::wal_progress(&h.conn)) else { return };
        if p.not_backfilled() < EARLY_BACKFILL_FRAMES {
            return;
        }
        let t = Instant::now();
        let copied = match conn {
            Some(c) => checkpoint(c, "PASSIVE").map_err(|e| self.err_sql(e)),
            None => self.side().and_then(|c| checkpoint(&c, "PASSIVE").map_err(|e| self.err_sql(e))),
        };
        match copied {
            Ok(o) => tracing::debug!(db = %self.path.display(), before = ?p, ?o, "backfilled up to our new read mark"),
            Err(e) => {
                tracing::warn!("backfill up to our read mark left to the next checkpoint: {}", crate::errors::Chain(&e))
            }
        }
        timeline("early backfill", t);
    }

    /// Moves our read transaction off read mark 0 once that is safe (see [`Anchor`]),
    /// then backfills up to the new mark if a bulk lies below it
    /// ([`Engine::backfill_early`]). `true`: done, or
    /// nothing to do.
    pub(super) fn reanchor(&mut self) -> Result<bool> {
        let Some(a) = self.zero_mark else { return Ok(true) };
        if self.hot.is_none() {
            self.zero_mark = None;
            return Ok(true);
        }
        if !self.past(&a)? {
            return Ok(false);
        }
        self.or_close(|e| {
            let t = Instant::now();
            let fresh = e.side()?;
            sqlite::begin_read(&fresh).map_err(|err| e.err_sql(err))?;
            let hot = e.hot.as_mut().unwrap_or_else(|| unreachable!("hot: checked above"));
            let old = std::mem::replace(&mut hot.conn, fresh);
            e.zero_mark = None;
            old.execute_batch("COMMIT").map_err(|err| e.err_sql(err))?;
            timeline("re-anchor", t);
            e.backfill_early(Some(&old));
            Ok(true)
        })
    }
}
