//! Reading LTX files out of a replica, sealed or not: whole ([`Replica::read`]), a
//! range ([`Replica::read_range`]), the key a file is sealed with
//! ([`Replica::sealed_with`]). Streaming a whole file in ranges is `stream`'s
//! [`ObjectReader`](super::ObjectReader). A sealed object found without a keyring, with
//! a key the keyring lacks, or altered, is an error naming the object
//! ([`Error::Crypt`]); its bytes are never handed on.

use std::sync::atomic::Ordering;

use opendal::ErrorKind;

use super::{BLOCKING_CRYPT, Error, FileInfo, Replica, Result, crypt};

impl Replica {
    fn identity(f: &FileInfo) -> crypt::Identity {
        crypt::Identity { level: f.level, min_txid: f.min_txid, max_txid: f.max_txid }
    }

    /// Wraps a [`crypt::Error`] of the object `key` in the error that names it.
    pub(super) fn crypt_error(&self, key: &str) -> impl FnOnce(crypt::Error) -> Error + use<> {
        let what = format!("download {}", self.describe(key));
        move |source| Error::Crypt { what, source }
    }

    /// Downloads a stored byte range as it is (sealed or not).
    pub(super) async fn raw_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<opendal::Buffer> {
        self.storage.counters.gets.fetch_add(1, Ordering::Relaxed);
        self.storage
            .op
            .read_with(key)
            .range(range)
            .await
            .map_err(|e| Error::Op { what: format!("download {}", self.describe(key)), source: e })
    }

    /// The stored size of `f`: the listed one, or (when the listing had none) a stat.
    pub(super) async fn stored_size(&self, key: &str, f: &FileInfo) -> Result<u64> {
        if f.size > 0 {
            return Ok(f.size);
        }
        self.storage.counters.gets.fetch_add(1, Ordering::Relaxed);
        let meta = self
            .storage
            .op
            .stat(key)
            .await
            .map_err(|e| Error::Op { what: format!("look up {}", self.describe(key)), source: e })?;
        Ok(meta.content_length())
    }

    /// After chunks of `key` failed to open: [`crypt::Error::Rewritten`] when the object
    /// now starts with another header than `open`'s (it was replaced between the
    /// header's request and the chunks'), else `e` as it is. A rewrite is no damage.
    pub(super) async fn recheck(&self, key: &str, open: &crypt::Opener, e: crypt::Error) -> Error {
        if matches!(e, crypt::Error::Tampered { .. } | crypt::Error::Cut { .. }) {
            let now = self.raw_range(key, 0..crypt::HEADER_LEN as u64).await.map(|b| b.to_vec());
            if now.is_ok_and(|h| h[..] != open.header()[..]) {
                return self.crypt_error(key)(crypt::Error::Rewritten);
            }
        }
        self.crypt_error(key)(e)
    }

    /// The opener of a sealed object whose stored bytes begin with `head`.
    pub(super) fn opener(&self, key: &str, f: &FileInfo, head: &[u8], stored_len: u64) -> Result<crypt::Opener> {
        crypt::Opener::new(self.storage.keyring.as_deref(), Self::identity(f), head, stored_len)
            .map_err(self.crypt_error(key))
    }

    /// Downloads a whole LTX file (opened, if it was sealed).
    pub async fn read(&self, f: &FileInfo) -> Result<opendal::Buffer> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        self.storage.counters.gets.fetch_add(1, Ordering::Relaxed);
        let buf = self
            .storage
            .op
            .read(&key)
            .await
            .map_err(|e| Error::Op { what: format!("download {}", self.describe(&key)), source: e })?;
        if !crypt::is_sealed(&buf.slice(..buf.len().min(crypt::MAGIC.len())).to_vec()) {
            return Ok(buf);
        }
        let (keyring, id, stored) = (self.storage.keyring.clone(), Self::identity(f), buf.to_vec());
        let opened = if stored.len() > BLOCKING_CRYPT {
            tokio::task::spawn_blocking(move || crypt::open(keyring.as_deref(), id, stored))
                .await
                .unwrap_or(Err(crypt::Error::Crypto))
        } else {
            crypt::open(keyring.as_deref(), id, stored)
        };
        opened.map(opendal::Buffer::from).map_err(self.crypt_error(&key))
    }

    /// Downloads a byte range of an LTX file: of the LTX file inside, for a sealed
    /// object (the header and the whole chunks covering the range are downloaded and
    /// opened: one request when the range starts in the first KiB, else two). A plain
    /// object's range is handed over as opendal delivers it (no copy). For streaming a
    /// whole file, [`Replica::reader`] reads the header once.
    pub async fn read_range(&self, f: &FileInfo, range: std::ops::Range<u64>) -> Result<opendal::Buffer> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        let magic = crypt::MAGIC.len();
        if self.storage.keyring.is_none() {
            // No keyring: the range as it is, unless it shows a sealed object.
            let buf = self.raw_range(&key, range.clone()).await?;
            if range.start == 0 && crypt::is_sealed(&buf.slice(..buf.len().min(magic)).to_vec()) {
                let head = buf.slice(..buf.len().min(crypt::HEADER_LEN)).to_vec();
                let e = match crypt::key_id(&head) {
                    Ok(key_id) => crypt::Error::NoKeys { key_id },
                    Err(e) => e,
                };
                return Err(self.crypt_error(&key)(e));
            }
            return Ok(buf);
        }
        let h = crypt::HEADER_LEN as u64;
        // From the start, as far as the chunks covering the range reach if the object
        // is sealed (which also covers the range if it is not).
        let starts_early = range.start < crypt::FIRST;
        let head_end = if starts_early { crypt::sealed_len(range.end) } else { h };
        let stored_len = self.stored_size(&key, f).await?;
        let head = self.raw_range(&key, 0..head_end.min(stored_len)).await?;
        if !crypt::is_sealed(&head.slice(..head.len().min(magic)).to_vec()) {
            if starts_early {
                let n = head.len() as u64;
                return Ok(head.slice(range.start.min(n) as usize..range.end.min(n) as usize));
            }
            return self.raw_range(&key, range).await;
        }
        let first = head.slice(..head.len().min(crypt::HEADER_LEN)).to_vec();
        let open = self.opener(&key, f, &first, stored_len)?;
        let (stored, first_chunk) = open.stored_range(&range);
        let mut data = if stored.end <= head.len() as u64 {
            head.slice(stored.start as usize..stored.end as usize).to_vec()
        } else {
            self.raw_range(&key, stored.clone()).await?.to_vec()
        };
        if (data.len() as u64) < stored.end - stored.start {
            return Err(self.crypt_error(&key)(crypt::Error::Length { got: stored.start + data.len() as u64 }));
        }
        let n = match open.open_chunks(first_chunk, &mut data) {
            Ok(n) => n,
            // Chunks of a second request: the object may have been replaced meanwhile.
            Err(e) if stored.end > head.len() as u64 => return Err(self.recheck(&key, &open, e).await),
            Err(e) => return Err(self.crypt_error(&key)(e)),
        };
        data.truncate(n);
        let base = open.plain_start(first_chunk);
        let from = range.start.saturating_sub(base).min(n as u64) as usize;
        let to = range.end.min(open.len()).saturating_sub(base).clamp(from as u64, n as u64) as usize;
        Ok(opendal::Buffer::from(data).slice(from..to))
    }

    /// The id of the key a stored file was sealed with, `None` for a plain LTX file:
    /// one small ranged read of its header (`litefleet reencrypt`).
    pub async fn sealed_with(&self, f: &FileInfo) -> Result<Option<String>> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        let head = self.raw_range(&key, 0..crypt::HEADER_LEN as u64).await?.to_vec();
        if !crypt::is_sealed(&head) {
            return Ok(None);
        }
        crypt::key_id(&head).map(Some).map_err(self.crypt_error(&key))
    }

    /// Whether the file is (still) there: one HEAD / stat.
    pub async fn exists(&self, f: &FileInfo) -> Result<bool> {
        let key = self.key(f.level, f.min_txid, f.max_txid);
        match self.storage.op.stat(&key).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::Op { what: format!("look up {}", self.describe(&key)), source: e }),
        }
    }
}
