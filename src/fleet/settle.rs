//! Waiting for a bulk write to finish before shipping it.
//!
//! A cold tenant woken by a write opens its connection at once: its read mark is taken
//! and what the application wrote while we were closed is backfilled (`checkpoint.rs`,
//! "early backfill"), so the application's next auto-checkpoint has nothing to copy. If
//! the `-wal` changed while that open ran, the application is still writing — a bulk
//! import, a burst of large commits — and shipping now would encode and upload its
//! first megabytes on the cores and the disk its next commits need (benchmarks §8,
//! "Twelfth run"). So the sync waits until the `-wal` has stopped changing for
//! [`QUIET`], at most one `sync_interval` after the open, then ships the whole burst
//! in one go. A single commit, however large, is complete when it wakes us and ships
//! at once; a writer that never pauses is shipped every `sync_interval` as before.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use crate::sqlite::{FileMark, wal_path};

/// How long the `-wal` must stay unchanged before a settling tenant ships (coarse file
/// times tick every 1–4 ms; a 1 MiB commit takes 2 ms on the benchmark machine).
pub(super) const QUIET: Duration = Duration::from_millis(10);

/// The `-wal` as seen now (`None`: there is none).
pub(super) fn wal_mark(db: &Path) -> Option<FileMark> {
    FileMark::at(&wal_path(db))
}

/// A tenant waiting for its writer to pause before it ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Settle {
    /// When the open found the application writing.
    since: Instant,
    /// The `-wal` at the last look.
    wal: Option<FileMark>,
}

impl Settle {
    /// After a cold tenant's open: `before` and `after` are the `-wal` around it.
    /// `Some`: the application wrote meanwhile, wait ([`Settle::recheck_at`]).
    pub(super) fn after_open(before: Option<FileMark>, after: Option<FileMark>, now: Instant) -> Option<Settle> {
        (after != before).then_some(Settle { since: now, wal: after })
    }

    /// When to look again.
    pub(super) fn recheck_at(&self, now: Instant, cap: Duration) -> Instant {
        (now + QUIET).min(self.since + cap)
    }

    /// A look at the `-wal` at `now`: `Some` while the application is still writing
    /// (the `-wal` changed since the last look) and the wait has not reached `cap`
    /// (`sync_interval`); `None`: ship now.
    pub(super) fn look(self, wal: Option<FileMark>, now: Instant, cap: Duration) -> Option<Settle> {
        (wal != self.wal && now < self.since + cap).then_some(Settle { since: self.since, wal })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(len: u64, ms: u64) -> Option<FileMark> {
        Some(FileMark { dev: 1, ino: 2, len, mtime: Some(std::time::UNIX_EPOCH + Duration::from_millis(ms)) })
    }

    #[test]
    fn a_wal_unchanged_by_the_open_ships_at_once() {
        let now = Instant::now();
        assert_eq!(Settle::after_open(mark(8, 1), mark(8, 1), now), None);
        assert_eq!(Settle::after_open(None, None, now), None);
    }

    #[test]
    fn a_wal_written_during_the_open_waits_until_it_is_quiet() {
        let cap = Duration::from_secs(1);
        let t0 = Instant::now();
        // Grown, created, or rewritten in place (same size, newer time): still writing.
        for (before, after) in [(mark(8, 1), mark(16, 2)), (None, mark(8, 1)), (mark(8, 1), mark(8, 5))] {
            let s = Settle::after_open(before, after, t0).unwrap_or_else(|| panic!("{before:?} -> {after:?}"));
            assert_eq!(s.recheck_at(t0, cap), t0 + QUIET);
        }
        let s = Settle::after_open(mark(8, 1), mark(16, 2), t0).unwrap_or_else(|| panic!("settles"));
        // Still growing at the next look: wait again, from the same start.
        let t1 = t0 + QUIET;
        let s = s.look(mark(32, 12), t1, cap).unwrap_or_else(|| panic!("still writing"));
        assert_eq!(s.recheck_at(t1, cap), t1 + QUIET);
        // Unchanged for QUIET: ship.
        assert_eq!(s.look(mark(32, 12), t1 + QUIET, cap), None);
    }

    #[test]
    fn a_writer_that_never_pauses_is_shipped_after_one_interval() {
        let cap = Duration::from_millis(50);
        let t0 = Instant::now();
        let mut s = Settle::after_open(mark(0, 0), mark(1, 1), t0).unwrap_or_else(|| panic!("settles"));
        let mut now = t0;
        let mut looks = 0;
        loop {
            let at = s.recheck_at(now, cap);
            assert!(at <= t0 + cap, "a look after the cap");
            now = at;
            looks += 1;
            match s.look(mark(looks + 1, looks + 1), now, cap) {
                Some(next) => s = next,
                None => break,
            }
        }
        assert_eq!(now, t0 + cap);
        assert_eq!(looks, 5, "looks every QUIET until the cap");
    }
}
