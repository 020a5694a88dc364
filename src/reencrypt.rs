//! `litefleet reencrypt`: rewrites a storage's replica files with the keyring's current
//! key, file by file, so an old key can leave the keyring — or encrypts a replica that
//! was written before `[encryption]` was turned on.
//!
//! Each file is streamed (opened with whatever key of the keyring sealed it, or read
//! as it is if plain), sealed with the current key as it streams, and uploaded under
//! its own name by the one upload path ([`crate::storage::Upload`]): on every service
//! the name holds the old object or the new one, complete, never a mix. Files already
//! sealed with the current key are skipped after one small ranged read of their
//! header, so an interrupted run is simply run again. The daemon may keep running: a
//! file is rewritten with the same LTX bytes, and one that retention deletes meanwhile
//! is left deleted (it is looked up again right before the upload completes; a file
//! resurrected in the remaining window is an older duplicate the lifecycle removes
//! again).
//!
//! A whole run (no prefix) that leaves no file with another key also removes the
//! storage's records of the keys no file uses any more (`_litefleet/keys/`, see
//! `crate::fleet::check_key_records`), and reports them: they may leave the keyring.
//!
//! It must never change what a file holds, and never delete a replica file.

use crate::fleet::KEY_RECORDS;
use crate::ltx;
use crate::storage::{self, FileInfo, Replica, Storage};

/// Bytes read per ranged request.
const STEP: u64 = 8 << 20;

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Files rewritten with the current key.
    pub rewritten: usize,
    /// Files already sealed with the current key.
    pub current: usize,
    /// Files that were gone by the time their turn came (deleted by retention).
    pub vanished: usize,
    /// Files left as they are because they are damaged (altered or torn), with why.
    pub damaged: Vec<String>,
    /// Replicas walked.
    pub replicas: usize,
    /// Keys no file uses any more, whose records were removed (a whole run only).
    pub retired: Vec<String>,
}

/// Why a run stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no current key to seal with.
    #[error("no key to encrypt with: the config has no [encryption]")]
    NoKey,
    /// Storage failed, or a file could not be opened (named in the chain).
    #[error(transparent)]
    Storage(#[from] storage::Error),
}

/// Rewrites every file below `prefix` (default: the whole storage) not sealed with the
/// storage's current key. `progress` is called after each rewritten file with its name.
pub async fn reencrypt(
    storage: &Storage,
    prefix: Option<&str>,
    mut progress: impl FnMut(&str),
) -> Result<Report, Error> {
    let current = storage.sealing_key().ok_or(Error::NoKey)?.to_owned();
    let mut report = Report::default();
    for (path, files) in storage.list_tree(prefix.unwrap_or("")).await? {
        report.replicas += 1;
        let replica = storage.replica(&path);
        for f in files.iter().filter(|f| !f.is_torn()) {
            match replica.sealed_with(f).await {
                Ok(Some(k)) if k == current => {
                    report.current += 1;
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {
                    report.vanished += 1;
                    continue;
                }
                Err(e) if e.is_damage() => {
                    report.damaged.push(crate::errors::chain(&e));
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            match rewrite(&replica, f).await {
                Ok(Rewrite::Done) => {
                    report.rewritten += 1;
                    progress(&replica.describe_file(f));
                }
                Ok(Rewrite::Vanished) => report.vanished += 1,
                Ok(Rewrite::Damaged(why)) => report.damaged.push(why),
                Err(e) => return Err(e.into()),
            }
        }
    }
    if prefix.is_none() && report.damaged.is_empty() {
        // Every file now uses the current key: the other records go.
        for id in storage.meta_list(KEY_RECORDS).await? {
            if id != current {
                storage.meta_delete(&format!("{KEY_RECORDS}/{id}")).await?;
                report.retired.push(id);
            }
        }
    }
    let record = format!("{KEY_RECORDS}/{current}");
    if !storage.meta_exists(&record).await? {
        storage.meta_put(&record, current.as_bytes().to_vec(), crate::durable::Existing::Replace).await?;
    }
    Ok(report)
}

enum Rewrite {
    Done,
    Vanished,
    Damaged(String),
}

/// Streams `f` through a sealing upload of its own name.
async fn rewrite(replica: &Replica, f: &FileInfo) -> Result<Rewrite, storage::Error> {
    let mut reader = replica.reader(f, STEP);
    let first = match reader.next().await {
        Ok(b) => b.unwrap_or_default(),
        Err(e) if e.is_not_found() => return Ok(Rewrite::Vanished),
        Err(e) if e.is_damage() => return Ok(Rewrite::Damaged(crate::errors::chain(&e))),
        Err(e) => return Err(e),
    };
    let head = first.slice(..first.len().min(ltx::HEADER_SIZE)).to_vec();
    let timestamp_ms = match ltx::Header::decode(&head) {
        Ok(h) => h.timestamp_ms,
        Err(e) => return Ok(Rewrite::Damaged(format!("{}: {}", replica.describe_file(f), crate::errors::chain(&e)))),
    };
    let mut up = replica.upload(f.level, f.min_txid, f.max_txid, timestamp_ms).await?;
    let mut next = Some(first);
    while let Some(piece) = next {
        if let Err(e) = up.write(piece.to_vec()).await {
            up.abort().await;
            return Err(e);
        }
        next = match reader.next().await {
            Ok(n) => n,
            Err(e) => {
                up.abort().await;
                if e.is_damage() {
                    return Ok(Rewrite::Damaged(crate::errors::chain(&e)));
                }
                return Err(e);
            }
        };
    }
    // Deleted by retention meanwhile: leave it deleted.
    if !replica.exists(f).await? {
        up.abort().await;
        return Ok(Rewrite::Vanished);
    }
    up.finish().await?;
    Ok(Rewrite::Done)
}
