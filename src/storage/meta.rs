//! litefleet's own objects in a storage, and the gate every replica write passes.
//!
//! Besides replicas, a storage holds a few small JSON documents of litefleet's under
//! `<base>/_litefleet/` (the hosts' heartbeats and the tenants' ownership records, see
//! `crate::ownership`). Litestream never lists there: it reads only the level folders
//! below one database's path. They are counted apart from replica requests
//! ([`Counters::meta`](super::Counters)), so what idle tenants cost stays visible.
//!
//! A [`Gate`] (the ownership of prefixes, when several hosts share a bucket) is asked
//! before every upload and deletion of a replica file; with a gate, uploads are
//! conditional creates, so a name already taken is never overwritten
//! ([`Error::Exists`]).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use futures::future::BoxFuture;
use opendal::ErrorKind;

use super::{Error, Result, Storage};
use crate::durable::{self, Existing};

/// The folder of litefleet's own objects, below the storage base.
pub const META_DIR: &str = "_litefleet";

/// Asked before a replica under `prefix` is written to. `claim`: the writer replicates
/// the tenant and may claim the prefix; otherwise (compaction, retention) it writes only
/// where this host already owns the prefix. An `Err` (normally [`Error::NotOwner`])
/// stops the write.
pub trait Gate: Send + Sync {
    /// May this host write under `prefix` now?
    fn check<'a>(&'a self, prefix: &'a str, claim: bool) -> BoxFuture<'a, Result<()>>;
    /// Whether uploads are conditional creates now (ownership established).
    fn fences(&self) -> bool;
    /// An upload under `prefix` found its name taken: was the prefix lost to another
    /// host ([`Error::NotOwner`]), or is it still ours (`Ok`: a write of an earlier owner
    /// landed late, and the writer must re-learn the replica)?
    fn taken<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<()>>;
}

impl Storage {
    /// The key of a litefleet object (`hosts/x.json` → `<base>_litefleet/hosts/x.json`).
    fn meta_key(&self, key: &str) -> String {
        format!("{}{META_DIR}/{}", self.base, key.trim_start_matches('/'))
    }

    /// Whether uploads can be conditional creates (`If-None-Match: *` on S3, a hard
    /// link on a folder), as the service says. Some servers claim it and ignore the
    /// header: [`Storage::probe_conditional_create`] checks for real.
    pub fn supports_conditional_create(&self) -> bool {
        self.fs_root.is_some() || (!self.service.renames() && self.op.info().capability().write_with_if_not_exists)
    }

    /// Writes `key` twice with a conditional create and expects the second to be
    /// refused; removes it. `false`: the service accepts the header but does not honour
    /// it (Garage and s3rver do that), so it cannot fence writers.
    pub async fn probe_conditional_create(&self, key: &str) -> Result<bool> {
        if !self.supports_conditional_create() {
            return Ok(false);
        }
        let first = self.meta_put(key, b"probe".to_vec(), Existing::Keep).await;
        let second = self.meta_put(key, b"probe".to_vec(), Existing::Keep).await;
        let _ = self.meta_delete(key).await;
        first?;
        match second {
            Err(Error::Exists { .. }) => Ok(true),
            Ok(()) => Ok(false),
            // Refused for good (the header is not implemented): no conditional creates.
            Err(Error::Op { source, .. }) if !source.is_temporary() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes a litefleet object, replacing it or (with [`Existing::Keep`]) only if the
    /// name is free: then a taken name is [`Error::Exists`].
    pub async fn meta_put(&self, key: &str, bytes: Vec<u8>, existing: Existing) -> Result<()> {
        let full = self.meta_key(key);
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        // A metadata entry where the service has them: some servers (the GCS emulator)
        // list an object without any as one they cannot describe.
        let kind = match self.service.timestamp_key() {
            Some(_) if self.fs_root.is_none() => vec![("litefleet".to_owned(), "meta".to_owned())],
            _ => Vec::new(),
        };
        self.write_object(&full, bytes, existing, None, kind).await
    }

    /// Reads a litefleet object: its bytes and when the storage last wrote it, or
    /// `None` if it does not exist.
    pub async fn meta_get(&self, key: &str) -> Result<Option<(Vec<u8>, Option<SystemTime>)>> {
        let full = self.meta_key(key);
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        match self.op.read(&full).await {
            Ok(b) => {
                let when = match self.op.stat(&full).await {
                    Ok(m) => m.last_modified().map(SystemTime::from),
                    Err(_) => None,
                };
                Ok(Some((b.to_vec(), when)))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Op { what: format!("read {}", self.describe_key(&full)), source: e }),
        }
    }

    /// Whether a litefleet object exists (one HEAD).
    pub async fn meta_exists(&self, key: &str) -> Result<bool> {
        let full = self.meta_key(key);
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        match self.op.stat(&full).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Op { what: format!("look up {}", self.describe_key(&full)), source: e }),
        }
    }

    /// The names of the litefleet objects directly in folder `dir` (not recursive).
    pub async fn meta_list(&self, dir: &str) -> Result<Vec<String>> {
        let full = format!("{}/", self.meta_key(dir).trim_end_matches('/'));
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        match self.op.list(&full).await {
            Ok(entries) => Ok(entries.iter().filter(|e| e.metadata().is_file()).map(|e| e.name().to_owned()).collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::Op { what: format!("list {}", self.describe_key(&full)), source: e }),
        }
    }

    /// Every litefleet object below folder `dir`, as keys relative to it.
    pub async fn meta_list_tree(&self, dir: &str) -> Result<Vec<String>> {
        let full = format!("{}/", self.meta_key(dir).trim_end_matches('/'));
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        match self.op.list_with(&full).recursive(true).await {
            Ok(entries) => Ok(entries
                .iter()
                .filter(|e| e.metadata().is_file())
                .filter_map(|e| e.path().strip_prefix(full.as_str()).map(str::to_owned))
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::Op { what: format!("list {}", self.describe_key(&full)), source: e }),
        }
    }

    /// Deletes a litefleet object (absent is fine).
    pub async fn meta_delete(&self, key: &str) -> Result<()> {
        let full = self.meta_key(key);
        self.counters.meta.fetch_add(1, Ordering::Relaxed);
        self.op
            .delete(&full)
            .await
            .map_err(|e| Error::Op { what: format!("delete {}", self.describe_key(&full)), source: e })
    }

    /// Writes any object of this storage, complete or not at all (see `Replica::put`);
    /// with [`Existing::Keep`] only if its name is free.
    pub(super) async fn write_object(
        &self,
        key: &str,
        data: Vec<u8>,
        existing: Existing,
        mtime: Option<SystemTime>,
        metadata: Vec<(String, String)>,
    ) -> Result<()> {
        let what = || format!("upload {}", self.describe_key(key));
        if let Some(root) = &self.fs_root {
            let path = root.join(key);
            let written = tokio::task::spawn_blocking(move || durable::publish(&path, &data, mtime, existing))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            return match written {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::Exists { what: what() }),
                Err(source) => Err(Error::Local { what: what(), source }),
            };
        }
        if self.service.renames() {
            // The service's own write is not atomic: publish under a temporary name.
            // (No conditional create here: `supports_conditional_create` says so.)
            let tmp = durable::unique_temp_path(std::path::Path::new(key)).to_string_lossy().into_owned();
            let moved = match self.op.write(&tmp, data).await {
                Ok(_) => self.op.rename(&tmp, key).await,
                Err(e) => Err(e),
            };
            if moved.is_err() {
                // Best effort: one left behind is removed by the lifecycle later.
                let _ = self.op.delete(&tmp).await;
            }
            return moved.map_err(|source| Error::Op { what: what(), source });
        }
        let mut w = self.op.write_with(key, data);
        if !metadata.is_empty() {
            w = w.user_metadata(metadata);
        }
        if existing == Existing::Keep {
            w = w.if_not_exists(true);
        }
        match w.await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Err(Error::Exists { what: what() }),
            Err(source) => Err(Error::Op { what: what(), source }),
        }
    }

    /// `<storage url>/<key below the base>`, for messages.
    pub(super) fn describe_key(&self, key: &str) -> String {
        let rel = key.strip_prefix(self.base.as_str()).unwrap_or(key);
        format!("{}/{}", self.location.trim_end_matches('/'), rel)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Options;
    use super::*;

    #[tokio::test]
    async fn meta_objects_on_a_folder_create_once_replace_list_and_delete() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.probe_conditional_create("probe").await.unwrap_or(false), "a folder fences by hard link");
        s.meta_put("owners/databases/a/1", b"one".to_vec(), Existing::Keep).await.unwrap_or_else(|e| panic!("{e}"));
        let again = s.meta_put("owners/databases/a/1", b"two".to_vec(), Existing::Keep).await;
        assert!(matches!(again, Err(Error::Exists { .. })), "{again:?}");
        let (bytes, when) = s.meta_get("owners/databases/a/1").await.ok().flatten().unwrap_or_default();
        assert_eq!((bytes.as_slice(), when.is_some()), (&b"one"[..], true));
        s.meta_put("hosts/h1", b"x".to_vec(), Existing::Replace).await.unwrap_or_else(|e| panic!("{e}"));
        s.meta_put("hosts/h1", b"y".to_vec(), Existing::Replace).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.meta_list("hosts").await.unwrap_or_default(), ["h1"]);
        assert_eq!(s.meta_list_tree("owners").await.unwrap_or_default(), ["databases/a/1"]);
        assert!(s.meta_exists("hosts/h1").await.unwrap_or(false));
        s.meta_delete("hosts/h1").await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!s.meta_exists("hosts/h1").await.unwrap_or(true));
        assert_eq!(s.meta_get("hosts/h1").await.ok().flatten(), None);
        // Replica listings never see them.
        assert!(s.list_tree("").await.unwrap_or_default().is_empty());
        assert!(dir.path().join("_litefleet/owners/databases/a/1").is_file());
    }
}
