//! Damaged replicas: finding unusable files, verifying before trusting, and repairing.
//!
//! A replica file is *damaged* when its listed size is too small for any LTX file (an
//! interrupted write of an older version or another tool left it torn under its final
//! name) or when its bytes fail to decode (a merge read it, or a verification did). A
//! damaged file stays where it is — its name keeps its TXIDs from ever being reused —
//! but the catalog leaves it out of every chain, merge and coverage rule, and the log
//! names it once.
//!
//! Damage that leaves the restore window broken (a gap no other file bridges) is
//! repaired with a level-9 snapshot made from a *full-page* L0 file above the gap — a
//! file holding every page of the database at its TXID, which is exactly a snapshot's
//! content with `MinTXID = 1`. Our replicators mark the full-page files they ship; when
//! none exists above the gap, the pass asks (through [`Outcome::needs_snapshot`]) for
//! the tenant to ship one, and the next pass turns it into the repair snapshot. From
//! then on a restore to the newest TXID works again; points inside the damaged range
//! stay unreachable, which the window (and the error of a restore aimed there) says.

use std::time::SystemTime;

use super::{Error, Outcome};
use crate::ltx::{self, Decoder};
use crate::storage::catalog::{Catalog, Unrestorable};
use crate::storage::{self, FileInfo, Replica};

/// Marks `bad` damaged because of `why`, reports it in `out` and logs it, naming the
/// object.
pub(super) fn found_damage(replica: &Replica, cat: &mut Catalog, bad: &FileInfo, why: &ltx::Error, out: &mut Outcome) {
    cat.mark_damaged(bad);
    let why = crate::errors::chain(why);
    tracing::error!(
        "replica file {} is damaged ({why}); it is left out of compactions, restores and retention",
        replica.describe_file(bad)
    );
    out.damaged.push((bad.clone(), why));
}

/// Whether `f`'s bytes can be trusted: written by this process or verified before, or
/// downloaded now and decoded to its trailer checksum. A file that fails is marked
/// damaged (`false`); a storage error is the pass's error.
pub(super) async fn verified(
    replica: &Replica,
    cat: &mut Catalog,
    f: &FileInfo,
    out: &mut Outcome,
) -> Result<bool, Error> {
    if cat.is_verified(f) {
        return Ok(true);
    }
    if cat.is_damaged(f) {
        return Ok(false);
    }
    // Read in ranges, so a snapshot of any size is checked in bounded memory.
    let reader = replica.range_reader(f, super::MERGE_CHUNK, tokio::runtime::Handle::current());
    let checked =
        tokio::task::spawn_blocking(move || decode_whole(reader)).await.map_err(|e| Error::Join(e.to_string()))?;
    match checked {
        Ok(()) => {
            cat.mark_verified(f);
            Ok(true)
        }
        Err(e) if storage::is_read_failure(&e) => Err(Error::Ltx { file: replica.describe_file(f), source: e }),
        Err(e) => {
            found_damage(replica, cat, f, &e, out);
            Ok(false)
        }
    }
}

/// Decodes every page of an LTX file and its trailer (checksums included).
fn decode_whole(body: impl std::io::Read) -> Result<(), ltx::Error> {
    let mut d = Decoder::new(body)?;
    let mut page = vec![0u8; d.header().page_size as usize];
    while d.decode_page(&mut page)?.is_some() {}
    d.finish().map(|_| ())
}

/// Repairs a broken restore window from a full-page L0 file above the break (see the
/// module doc), or asks for one. Does nothing while the window is whole.
pub(super) async fn repair(
    replica: &Replica,
    cat: &mut Catalog,
    encoding: ltx::PageEncoding,
    now: SystemTime,
    out: &mut Outcome,
) -> Result<(), Error> {
    let broken_after = match cat.window() {
        Ok(_) | Err(Unrestorable::Empty) => return Ok(()),
        Err(Unrestorable::Gap { after, .. }) => after,
        Err(Unrestorable::NoStart { .. }) => 0,
    };
    if cat.damaged().next().is_none() {
        // A gap nothing of ours explains (files deleted by hand, another tool's
        // replica): not ours to paper over.
        return Ok(());
    }
    let candidate = cat.full_pages(0).rfind(|f| f.min_txid > broken_after).cloned();
    let Some(source) = candidate else {
        out.needs_snapshot = true;
        return Ok(());
    };
    // Streamed like any merge; a source that is not a full-page file after all is
    // marked damaged there, and never trusted again.
    let Some(snap) =
        super::write_merged(replica, cat, ltx::SNAPSHOT_LEVEL, std::slice::from_ref(&source), encoding, now, out)
            .await?
    else {
        out.needs_snapshot = true;
        return Ok(());
    };
    tracing::warn!(
        "replica {} repaired: snapshot {} made from the full-page file {}; restores reach TXID {:016x} again",
        replica.url(),
        replica.describe_file(&snap),
        replica.describe_file(&source),
        snap.max_txid
    );
    out.written.push(snap.clone());
    out.repaired = Some(snap);
    Ok(())
}
