//! LTX files of any size in bounded memory: an [`Upload`] written piece by piece (a
//! full-page file of a 1 GB database, a compaction of many files) and a
//! [`RangeReader`] that reads a stored file in ranged requests from a blocking thread.
//!
//! An object at its final name is always complete: on S3 a multipart upload becomes
//! visible only when it completes; on a folder the pieces go to `<name>.tmp`, which is
//! fsynced, renamed over the final name and the directory fsynced (the recipe of
//! `crate::durable`); an upload that is aborted or dropped leaves no object behind (at
//! most an unfinished multipart upload that S3's lifecycle rules clean up, or a
//! `.tmp` file that no reader takes for an LTX file).

use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use super::{Error, FileInfo, Layout, Replica, Result, TIMESTAMP_METADATA_KEY, rfc3339_nanos};
use crate::durable;
use crate::ltx::TxId;

/// Part size of a streamed upload to S3 (multipart parts must be ≥ 5 MiB).
pub const UPLOAD_PART: usize = 8 << 20;
/// Bytes a producer hands the upload at a time; two such chunks are in flight.
const CHUNK: usize = 2 << 20;

/// An LTX file being uploaded; see the module documentation.
pub struct Upload {
    replica: Replica,
    key: String,
    /// Where the bytes go until [`Upload::finish`]: the final key on S3, `<key>.tmp`
    /// on a folder; `None` for the memory store (buffered, written at the end).
    writer: Option<opendal::Writer>,
    buffered: Vec<u8>,
    written: u64,
    timestamp_ms: i64,
}

impl Replica {
    /// Starts an upload of the LTX file `level/min-max` (with the `litestream-timestamp`
    /// metadata on S3, the header time as mtime on a folder). Write it with
    /// [`Upload::write`], then [`Upload::finish`] or [`Upload::abort`].
    pub async fn upload(&self, level: u32, min: TxId, max: TxId, timestamp_ms: i64) -> Result<Upload> {
        let key = self.key(level, min, max);
        let writer = if self.storage.fs_root.is_some() {
            let tmp = format!("{key}{}", durable::TEMP_SUFFIX);
            let w = self.storage.op.writer(&tmp).await;
            Some(w.map_err(|e| Error::Op { what: format!("upload {}", self.describe(&tmp)), source: e })?)
        } else if self.storage.layout == Layout::Hex {
            let ts = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
            let w = self
                .storage
                .op
                .writer_with(&key)
                .chunk(UPLOAD_PART)
                .user_metadata([(TIMESTAMP_METADATA_KEY.to_string(), rfc3339_nanos(ts))])
                .await;
            Some(w.map_err(|e| Error::Op { what: format!("upload {}", self.describe(&key)), source: e })?)
        } else {
            None
        };
        Ok(Upload { replica: self.clone(), key, writer, buffered: Vec::new(), written: 0, timestamp_ms })
    }

    /// Uploads the LTX file `level/min-max` that `produce` writes on a blocking thread,
    /// in bounded memory (a couple of chunks in flight). The file appears only if
    /// `produce` succeeds and the upload completes: `Err` is the upload's failure (then
    /// `produce` saw its writes fail), `Ok(Err(..))` the producer's own.
    pub async fn upload_from<T, E>(
        &self,
        level: u32,
        min: TxId,
        max: TxId,
        timestamp_ms: i64,
        produce: impl FnOnce(&mut ChunkWriter) -> std::result::Result<T, E> + Send + 'static,
    ) -> Result<std::result::Result<(T, u64), E>>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        let mut up = self.upload(level, min, max, timestamp_ms).await?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
        let task = tokio::task::spawn_blocking(move || {
            let mut w = ChunkWriter { buf: Vec::with_capacity(CHUNK), tx };
            let r = produce(&mut w);
            if r.is_ok() {
                // Only a failed upload refuses it, and that failure is reported below.
                let _ = w.send();
            }
            r
        });
        let mut failed = None;
        while let Some(chunk) = rx.recv().await {
            if let Err(e) = up.write(chunk).await {
                failed = Some(e);
                break;
            }
        }
        // The producer's next write fails from here on.
        drop(rx);
        let produced = task.await.map_err(|e| Error::Io(std::io::Error::other(format!("upload producer: {e}"))))?;
        if let Some(e) = failed {
            up.abort().await;
            return Err(e);
        }
        match produced {
            Ok(t) => Ok(Ok((t, up.finish().await?))),
            Err(e) => {
                up.abort().await;
                Ok(Err(e))
            }
        }
    }

    /// A blocking reader of `f` in ranged requests of `chunk` bytes, for code running
    /// on a blocking thread (`handle` is the runtime the requests run on). `first`:
    /// the file's first bytes, already read.
    pub fn range_reader(
        &self,
        f: &FileInfo,
        chunk: u64,
        handle: tokio::runtime::Handle,
        first: Option<opendal::Buffer>,
    ) -> RangeReader {
        let cur = first.unwrap_or_default();
        RangeReader { replica: self.clone(), file: f.clone(), chunk: chunk.max(1), handle, at: cur.len() as u64, cur }
    }
}

impl Upload {
    fn failed(&self, source: opendal::Error) -> Error {
        Error::Op { what: format!("upload {}", self.replica.describe(&self.key)), source }
    }

    /// Appends bytes.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.written += bytes.len() as u64;
        match &mut self.writer {
            Some(w) => {
                let r = w.write(bytes).await;
                r.map_err(|e| self.failed(e))
            }
            None => {
                self.buffered.extend_from_slice(&bytes);
                Ok(())
            }
        }
    }

    /// Completes the upload: the file appears at its final name, complete. Returns its
    /// size.
    pub async fn finish(mut self) -> Result<u64> {
        let storage = self.replica.storage.clone();
        storage.counters.puts.fetch_add(1, Ordering::Relaxed);
        match self.writer.take() {
            Some(mut w) => {
                if let Err(e) = w.close().await {
                    let _ = w.abort().await;
                    return Err(self.failed(e));
                }
            }
            None => {
                let data = std::mem::take(&mut self.buffered);
                let r = storage.op.write(&self.key, data).await;
                r.map_err(|e| self.failed(e))?;
            }
        }
        if let Some(root) = &storage.fs_root {
            let tmp = root.join(format!("{}{}", self.key, durable::TEMP_SUFFIX));
            let path = root.join(&self.key);
            let ts = UNIX_EPOCH + Duration::from_millis(self.timestamp_ms.max(0) as u64);
            let placed = tokio::task::spawn_blocking(move || {
                std::fs::File::options().write(true).open(&tmp)?.set_modified(ts)?;
                durable::replace(&tmp, &path)
            })
            .await
            .map_err(std::io::Error::other)?;
            placed?;
        }
        storage.counters.bytes_put.fetch_add(self.written, Ordering::Relaxed);
        Ok(self.written)
    }

    /// Gives the upload up: nothing appears at the final name.
    pub async fn abort(mut self) {
        if let Some(mut w) = self.writer.take() {
            let _ = w.abort().await;
        }
        if let Some(root) = &self.replica.storage.fs_root {
            let _ = tokio::fs::remove_file(root.join(format!("{}{}", self.key, durable::TEMP_SUFFIX))).await;
        }
    }
}

/// The `Write` end of [`Replica::upload_from`]: bytes go to the upload in chunks.
pub struct ChunkWriter {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx.blocking_send(chunk).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload stopped"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `Read` over a stored file, fetched `chunk` bytes at a time (see
/// [`Replica::range_reader`]). Holds at most one chunk.
pub struct RangeReader {
    replica: Replica,
    file: FileInfo,
    chunk: u64,
    handle: tokio::runtime::Handle,
    at: u64,
    cur: opendal::Buffer,
}

impl std::io::Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            let unknown = self.file.size == 0;
            if !unknown && self.at >= self.file.size || unknown && self.at > 0 {
                return Ok(0);
            }
            let (replica, file) = (&self.replica, &self.file);
            let got = if unknown {
                self.handle.block_on(replica.read(file))
            } else {
                let end = (self.at + self.chunk).min(file.size);
                self.handle.block_on(replica.read_range(file, self.at..end))
            };
            let got = got.map_err(|e| std::io::Error::other(crate::errors::chain(&e)))?;
            if got.is_empty() {
                let what = self.replica.describe_file(&self.file);
                return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{what}: ends early")));
            }
            self.at += got.len() as u64;
            self.cur = got;
        }
        std::io::Read::read(&mut self.cur, buf)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::super::{Options, Storage};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_appears_whole_or_not_at_all_and_reads_back_in_ranges() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let r = s.replica("t");
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        // A producer that fails half-way: nothing at the final name, no temporary file.
        let d = data.clone();
        let failed = r
            .upload_from(0, 1, 1, 1_700_000_000_000, move |w| {
                w.write_all(&d[..3_000_000]).map_err(|e| e.to_string())?;
                Err::<(), _>("stopped".to_owned())
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(failed, Err("stopped".to_owned()));
        assert!(r.list_all().await.unwrap_or_else(|e| panic!("{e}")).is_empty());
        let left = std::fs::read_dir(dir.path().join("t/ltx/0")).map(|d| d.flatten().count()).unwrap_or(0);
        assert_eq!(left, 0, "an aborted upload left a file behind");
        // A complete one: listed with its size and time, read back in small ranges.
        let d = data.clone();
        let ok = r
            .upload_from(0, 1, 1, 1_700_000_000_000, move |w| w.write_all(&d).map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok, Ok(((), data.len() as u64)));
        let files = r.list_all().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, data.len() as u64);
        let f = files[0].clone();
        let handle = tokio::runtime::Handle::current();
        let back = tokio::task::spawn_blocking(move || {
            let mut v = Vec::new();
            r.range_reader(&f, 333_333, handle, None).read_to_end(&mut v).map(|_| v)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(back == data, "read back differs");
    }

    #[tokio::test]
    async fn a_replica_lists_its_own_files_not_those_of_a_replica_nested_below_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let (outer, inner) = (s.replica("a"), s.replica("a/b"));
        for (r, level) in [(&outer, 0), (&outer, 3), (&inner, 0), (&inner, 9)] {
            r.put(level, 1, 2, vec![1], 1_700_000_000_000).await.unwrap_or_else(|e| panic!("{e}"));
        }
        let got: Vec<u32> = outer.list_all().await.unwrap_or_else(|e| panic!("{e}")).iter().map(|f| f.level).collect();
        assert_eq!(got, vec![0, 3]);
        let got: Vec<u32> = inner.list_all().await.unwrap_or_else(|e| panic!("{e}")).iter().map(|f| f.level).collect();
        assert_eq!(got, vec![0, 9]);
    }
}
