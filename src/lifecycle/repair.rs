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
use crate::ltx::{self, Compactor, Decoder};
use crate::storage::catalog::{Catalog, Unrestorable};
use crate::storage::{FileInfo, Replica};

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
    let body = replica.read(f).await?.to_bytes();
    let checked =
        tokio::task::spawn_blocking(move || decode_whole(&body)).await.map_err(|e| Error::Join(e.to_string()))?;
    match checked {
        Ok(()) => {
            cat.mark_verified(f);
            Ok(true)
        }
        Err(e) => {
            found_damage(replica, cat, f, &e, out);
            Ok(false)
        }
    }
}

/// Decodes every page of an LTX file and its trailer (checksums included).
fn decode_whole(body: &[u8]) -> Result<(), ltx::Error> {
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
    let body = replica.read(&source).await?.to_bytes();
    let made = tokio::task::spawn_blocking(move || {
        let comp = Compactor::new([&body[..]])?.into_snapshot();
        let header = comp.header().clone();
        let (bytes, _) = comp.compact(Vec::new(), encoding)?;
        Ok::<_, ltx::Error>((header, bytes))
    })
    .await
    .map_err(|e| Error::Join(e.to_string()))?;
    let (h, bytes) = match made {
        Ok(m) => m,
        Err(e) => {
            // It was marked full-page but is not usable as one: never trust it again.
            found_damage(replica, cat, &source, &e, out);
            out.needs_snapshot = true;
            return Ok(());
        }
    };
    let size = bytes.len() as u64;
    replica.put(ltx::SNAPSHOT_LEVEL, h.min_txid, h.max_txid, bytes, h.timestamp_ms).await?;
    let snap =
        FileInfo { level: ltx::SNAPSHOT_LEVEL, min_txid: h.min_txid, max_txid: h.max_txid, size, created: Some(now) };
    cat.add_verified(snap.clone());
    tracing::warn!(
        "replica {} repaired: snapshot {} made from the full-page file {}; restores reach TXID {:016x} again",
        replica.url(),
        replica.describe_file(&snap),
        replica.describe_file(&source),
        h.max_txid
    );
    out.written.push(snap.clone());
    out.repaired = Some(snap);
    Ok(())
}
