//! LTX files of any size in bounded memory: an [`Upload`] written piece by piece (a
//! full-page file of a 1 GB database, a compaction of many files) and a
//! [`RangeReader`] that reads a stored file in ranged requests from a blocking thread.
//!
//! An object at its final name is always complete: on S3 a multipart upload (on GCS a
//! resumable upload, on Azure a block list) becomes visible only when it completes; on
//! SFTP the bytes go to a temporary name renamed when complete; on a folder the pieces go to a temporary file of
//! this upload's own in the final directory, which is fsynced and renamed over the
//! final name, then the directory fsynced (the recipe of [`durable::publish`]). An
//! upload that fails, is aborted or dropped leaves no object behind (at most an
//! unfinished multipart upload that S3's lifecycle rules clean up, or a temporary
//! file that no reader takes for an LTX file and the lifecycle's sweep removes).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use super::{Error, FileInfo, Replica, Result, Service, rfc3339_nanos};
use crate::durable;
use crate::ltx::{self, TxId};

/// Part size of a streamed upload to S3 (multipart parts must be ≥ 5 MiB).
pub const UPLOAD_PART: usize = 8 << 20;
/// Bytes a producer hands the upload at a time; two such chunks are in flight.
const CHUNK: usize = 2 << 20;

/// An LTX file being uploaded; see the module documentation.
pub struct Upload {
    replica: Replica,
    key: String,
    /// Where the bytes go until [`Upload::finish`] (`None` once finished or aborted).
    sink: Option<Sink>,
    written: u64,
    timestamp_ms: i64,
}

enum Sink {
    /// An object store: a multipart (resumable, block) upload of the final key.
    Object(opendal::Writer),
    /// SFTP: an upload of a temporary key, renamed over the final key when complete.
    Renamed { writer: opendal::Writer, tmp: String },
    /// A folder: a temporary file of this upload's own beside the final name.
    File { file: tokio::fs::File, tmp: PathBuf, path: PathBuf },
    /// The memory store: buffered, written whole at the end.
    Memory(Vec<u8>),
}

impl Replica {
    /// Starts an upload of the LTX file `level/min-max` (with the `litestream-timestamp`
    /// metadata on S3, the header time as mtime on a folder). Write it with
    /// [`Upload::write`], then [`Upload::finish`] or [`Upload::abort`].
    pub async fn upload(&self, level: u32, min: TxId, max: TxId, timestamp_ms: i64) -> Result<Upload> {
        let key = self.key(level, min, max);
        let sink = if let Some(root) = &self.storage.fs_root {
            let path = root.join(&key);
            let tmp = durable::unique_temp_path(&path);
            let t = tmp.clone();
            let opened = tokio::task::spawn_blocking(move || {
                durable::create_dirs(durable::parent_dir(&t))?;
                std::fs::File::options().write(true).create_new(true).open(&t)
            })
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            let file =
                opened.map_err(|source| Error::Local { what: format!("upload {}", self.describe(&key)), source })?;
            Sink::File { file: tokio::fs::File::from_std(file), tmp, path }
        } else if self.storage.service.renames() {
            // SFTP: written under a temporary name of its own, renamed when complete.
            let tmp = durable::unique_temp_path(std::path::Path::new(&key)).to_string_lossy().into_owned();
            let w = self.storage.op.writer_with(&tmp).chunk(UPLOAD_PART).await;
            let w = w.map_err(|e| Error::Op { what: format!("upload {}", self.describe(&key)), source: e })?;
            Sink::Renamed { writer: w, tmp }
        } else if self.storage.service == Service::Memory {
            Sink::Memory(Vec::new())
        } else {
            // S3 multipart, a GCS resumable upload, Azure blocks: each becomes visible
            // only when the upload completes.
            let ts = UNIX_EPOCH + Duration::from_millis(timestamp_ms.max(0) as u64);
            let mut w = self.storage.op.writer_with(&key).chunk(UPLOAD_PART);
            if let Some(meta) = self.storage.service.timestamp_key() {
                w = w.user_metadata([(meta.to_string(), rfc3339_nanos(ts))]);
            }
            Sink::Object(w.await.map_err(|e| Error::Op { what: format!("upload {}", self.describe(&key)), source: e })?)
        };
        Ok(Upload { replica: self.clone(), key, sink: Some(sink), written: 0, timestamp_ms })
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

    fn failed_local(&self, source: std::io::Error) -> Error {
        Error::Local { what: format!("upload {}", self.replica.describe(&self.key)), source }
    }

    /// Appends bytes.
    pub async fn write(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.written += bytes.len() as u64;
        let r = match &mut self.sink {
            Some(Sink::Object(w) | Sink::Renamed { writer: w, .. }) => w.write(bytes).await.map_err(Err),
            Some(Sink::File { file, .. }) => file.write_all(&bytes).await.map_err(Ok),
            Some(Sink::Memory(buf)) => {
                buf.extend_from_slice(&bytes);
                Ok(())
            }
            None => Err(Ok(std::io::Error::other("the upload is over"))),
        };
        r.map_err(|e| match e {
            Ok(io) => self.failed_local(io),
            Err(op) => self.failed(op),
        })
    }

    /// Completes the upload: the file appears at its final name, complete. Returns its
    /// size. On error nothing appears (and nothing is left behind).
    pub async fn finish(mut self) -> Result<u64> {
        let storage = self.replica.storage.clone();
        storage.counters.puts.fetch_add(1, Ordering::Relaxed);
        match self.sink.take() {
            Some(Sink::Object(mut w)) => {
                if let Err(e) = w.close().await {
                    let _ = w.abort().await;
                    return Err(self.failed(e));
                }
            }
            Some(Sink::Renamed { mut writer, tmp }) => {
                let op = &storage.op;
                let moved = match writer.close().await {
                    Ok(_) => op.rename(&tmp, &self.key).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = moved {
                    // Best effort: one left behind is removed by the lifecycle later.
                    let _ = op.delete(&tmp).await;
                    return Err(self.failed(e));
                }
            }
            Some(Sink::File { mut file, tmp, path }) => {
                let flushed = file.flush().await;
                let file = file.into_std().await;
                let ts = UNIX_EPOCH + Duration::from_millis(self.timestamp_ms.max(0) as u64);
                let placed = tokio::task::spawn_blocking(move || {
                    let r = flushed
                        .and_then(|()| file.set_modified(ts))
                        .and_then(|()| file.sync_all())
                        .and_then(|()| durable::replace(&tmp, &path));
                    if r.is_err() {
                        let _ = std::fs::remove_file(&tmp);
                    }
                    r
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
                placed.map_err(|e| self.failed_local(e))?;
            }
            Some(Sink::Memory(data)) => {
                let r = storage.op.write(&self.key, data).await;
                r.map_err(|e| self.failed(e))?;
            }
            None => return Err(self.failed_local(std::io::Error::other("the upload is over"))),
        }
        storage.counters.bytes_put.fetch_add(self.written, Ordering::Relaxed);
        Ok(self.written)
    }

    /// Gives the upload up: nothing appears at the final name.
    pub async fn abort(mut self) {
        match self.sink.take() {
            Some(Sink::Object(mut w)) => {
                let _ = w.abort().await;
            }
            Some(Sink::File { file, tmp, .. }) => {
                drop(file);
                let _ = tokio::fs::remove_file(tmp).await;
            }
            Some(Sink::Renamed { mut writer, tmp }) => {
                let _ = writer.abort().await;
                let _ = self.replica.storage.op.delete(&tmp).await;
            }
            Some(Sink::Memory(_)) | None => {}
        }
    }
}

impl Drop for Upload {
    /// An upload dropped half-way (its task cancelled) leaves no temporary file.
    fn drop(&mut self) {
        if let Some(Sink::File { tmp, .. }) = &self.sink {
            let _ = std::fs::remove_file(tmp);
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
            // A range past the object's end (416 on S3): the object is shorter than
            // listed, which is the object's fault, not a failed request.
            let short =
                matches!(&got, Err(Error::Op { source, .. }) if source.kind() == opendal::ErrorKind::RangeNotSatisfied);
            let got = if short {
                opendal::Buffer::new()
            } else {
                got.map_err(|e| std::io::Error::other(ReadFailure(crate::errors::chain(&e))))?
            };
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

/// A storage request of a [`RangeReader`] failed: the file may be fine (a network
/// error, a timeout), unlike bytes that fail to decode.
#[derive(Debug)]
struct ReadFailure(String);

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReadFailure {}

/// Whether an LTX error while decoding from a [`RangeReader`] is a failed storage
/// request (retry later) rather than damage in the file's bytes.
pub fn is_read_failure(e: &ltx::Error) -> bool {
    match e {
        ltx::Error::Input { source, .. } => is_read_failure(source),
        ltx::Error::Io(io) => io.get_ref().is_some_and(|r| r.is::<ReadFailure>()),
        _ => false,
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
