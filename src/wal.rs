//! Reading a SQLite `-wal` file: the 32-byte header, 24-byte frame headers, salts,
//! SQLite's cumulative checksum in both byte orders, and commit boundaries.
//!
//! This module only reads. It never writes to a WAL, never takes SQLite locks, and
//! never trusts a frame whose salts or chained checksum do not match: the first such
//! frame is where the valid log ends (anything after it is a leftover of an earlier
//! generation or a torn write).

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Size of the WAL file header.
pub const HEADER_SIZE: u64 = 32;
/// Size of each frame header that precedes a page image.
pub const FRAME_HEADER_SIZE: u64 = 24;
/// Magic number of a WAL whose checksums use little-endian words.
pub const MAGIC_LE: u32 = 0x377f_0682;
/// Magic number of a WAL whose checksums use big-endian words.
pub const MAGIC_BE: u32 = 0x377f_0683;
/// The only WAL format version SQLite has ever written.
pub const VERSION: u32 = 3_007_000;

/// Errors from reading a WAL.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wal i/o")]
    Io(#[from] io::Error),
    #[error("wal header: bad magic {0:#010x}")]
    BadMagic(u32),
    #[error("wal header: unsupported version {0}")]
    BadVersion(u32),
    #[error("wal header: invalid page size {0}")]
    BadPageSize(u32),
    #[error("wal header: checksum mismatch")]
    HeaderChecksum,
}

/// The WAL file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// `MAGIC_LE` or `MAGIC_BE`: selects the checksum byte order.
    pub magic: u32,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Checkpoint sequence number: incremented by SQLite each time the log restarts.
    pub checkpoint_seq: u32,
    /// Salt-1: incremented by one on every restart; identifies the generation.
    pub salt1: u32,
    /// Salt-2: a fresh random value on every restart.
    pub salt2: u32,
    /// Cumulative checksum over the first 24 header bytes; it seeds the first frame.
    pub checksum: (u32, u32),
}

impl Header {
    /// Reads and validates the header. `Ok(None)` when the file is shorter than a header
    /// (SQLite has not written one yet, or the log was truncated).
    pub fn read(f: &File) -> Result<Option<Header>, Error> {
        let mut b = [0u8; HEADER_SIZE as usize];
        match f.read_exact_at(&mut b, 0) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        Header::decode(&b).map(Some)
    }

    /// Decodes and validates a 32-byte header.
    pub fn decode(b: &[u8; HEADER_SIZE as usize]) -> Result<Header, Error> {
        let magic = be32(&b[0..4]);
        if magic != MAGIC_LE && magic != MAGIC_BE {
            return Err(Error::BadMagic(magic));
        }
        let version = be32(&b[4..8]);
        if version != VERSION {
            return Err(Error::BadVersion(version));
        }
        let mut page_size = be32(&b[8..12]);
        if page_size == 1 {
            page_size = 65536;
        }
        if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
            return Err(Error::BadPageSize(page_size));
        }
        let checksum = (be32(&b[24..28]), be32(&b[28..32]));
        if checksum_words(magic == MAGIC_BE, (0, 0), &b[0..24]) != checksum {
            return Err(Error::HeaderChecksum);
        }
        Ok(Header {
            magic,
            page_size,
            checkpoint_seq: be32(&b[12..16]),
            salt1: be32(&b[16..20]),
            salt2: be32(&b[20..24]),
            checksum,
        })
    }

    /// Bytes occupied by one frame (header plus page image).
    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }

    /// Whether checksums are computed over big-endian words.
    pub fn big_endian(&self) -> bool {
        self.magic == MAGIC_BE
    }
}

/// One frame header as read from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Page number this frame carries.
    pub pgno: u32,
    /// For a commit frame, the database size in pages after the commit; otherwise 0.
    pub commit: u32,
    /// Salts copied from the WAL header when the frame was written.
    pub salt1: u32,
    pub salt2: u32,
    /// Cumulative checksum up to and including this frame.
    pub checksum: (u32, u32),
}

impl FrameHeader {
    fn decode(b: &[u8]) -> FrameHeader {
        FrameHeader {
            pgno: be32(&b[0..4]),
            commit: be32(&b[4..8]),
            salt1: be32(&b[8..12]),
            salt2: be32(&b[12..16]),
            checksum: (be32(&b[16..20]), be32(&b[20..24])),
        }
    }
}

/// Reads the frame header stored at `offset`, if the file is long enough.
pub fn read_frame_header(f: &File, offset: u64) -> Result<Option<FrameHeader>, Error> {
    let mut b = [0u8; FRAME_HEADER_SIZE as usize];
    match f.read_exact_at(&mut b, offset) {
        Ok(()) => Ok(Some(FrameHeader::decode(&b))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether the frame after the `max_frame` committed ones is written with the log's
/// current salts: a transaction in flight (or rolled back) wrote it, not an older
/// generation. `false` when the WAL cannot be read.
pub fn frame_after_commits(wal: &Path, max_frame: u32) -> bool {
    let Ok(f) = File::open(wal) else { return false };
    let Ok(Some(h)) = Header::read(&f) else { return false };
    let offset = HEADER_SIZE + u64::from(max_frame) * h.frame_size();
    matches!(read_frame_header(&f, offset), Ok(Some(fh)) if (fh.salt1, fh.salt2) == (h.salt1, h.salt2))
}

/// SQLite's WAL checksum: a Fibonacci-weighted sum over pairs of 32-bit words,
/// continued from `seed`. `data.len()` must be a multiple of 8.
pub fn checksum_words(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for pair in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (be32(&pair[0..4]), be32(&pair[4..8]))
        } else {
            (
                u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]),
                u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// A position in the log: the byte offset just after a commit frame, and the running
/// checksum there (the seed for the next frame).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    pub offset: u64,
    pub checksum: (u32, u32),
}

impl Cursor {
    /// The start of the log: just after the header, seeded by the header checksum.
    pub fn start(h: &Header) -> Cursor {
        Cursor { offset: HEADER_SIZE, checksum: h.checksum }
    }
}

/// What a scan of committed frames found.
#[derive(Debug, Default)]
pub struct Segment {
    /// Latest frame offset (of the page image) for every page changed by a committed
    /// transaction in the scanned range.
    pub pages: BTreeMap<u32, u64>,
    /// Database size in pages after the last commit in the range (0: no commit found).
    pub commit: u32,
    /// Where the scan stopped: just after the last commit frame.
    pub end: Option<Cursor>,
    /// Number of committed transactions in the range.
    pub transactions: u64,
    /// Number of frames in the committed range.
    pub frames: u64,
}

/// How a frame scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// End of file, a torn frame, or a frame of another generation: the log ends here.
    EndOfLog,
    /// The byte budget was reached at a commit boundary; more committed frames follow.
    Budget,
}

/// Scans committed frames starting at `from`, validating salts and the checksum chain,
/// and collects the latest version of every page. Frames after the last commit frame
/// (an open transaction) are not included. Stops at a commit boundary once more than
/// `max_bytes` of frames have been collected (one transaction is never split).
pub fn scan(f: &File, h: &Header, from: Cursor, max_bytes: u64) -> Result<(Segment, Stop), Error> {
    let fs = h.frame_size();
    let mut seg = Segment::default();
    let mut pending: Vec<(u32, u64)> = Vec::new();
    let mut buf = vec![0u8; fs as usize];
    let mut off = from.offset;
    let mut ck = from.checksum;
    let mut pending_frames = 0u64;
    loop {
        match f.read_exact_at(&mut buf, off) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok((seg, Stop::EndOfLog)),
            Err(e) => return Err(e.into()),
        }
        let fh = FrameHeader::decode(&buf[..FRAME_HEADER_SIZE as usize]);
        if fh.salt1 != h.salt1 || fh.salt2 != h.salt2 || fh.pgno == 0 {
            return Ok((seg, Stop::EndOfLog));
        }
        let c = checksum_words(h.big_endian(), ck, &buf[0..8]);
        let c = checksum_words(h.big_endian(), c, &buf[FRAME_HEADER_SIZE as usize..]);
        if c != fh.checksum {
            return Ok((seg, Stop::EndOfLog));
        }
        ck = c;
        pending.push((fh.pgno, off + FRAME_HEADER_SIZE));
        pending_frames += 1;
        off += fs;
        if fh.commit != 0 {
            for (pgno, at) in pending.drain(..) {
                seg.pages.insert(pgno, at);
            }
            seg.commit = fh.commit;
            seg.end = Some(Cursor { offset: off, checksum: ck });
            seg.transactions += 1;
            seg.frames += pending_frames;
            pending_frames = 0;
            if seg.frames * fs >= max_bytes {
                return Ok((seg, Stop::Budget));
            }
        }
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(dir: &std::path::Path, page_size: u32) -> rusqlite::Connection {
        let c = rusqlite::Connection::open(dir.join("t.db")).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size={page_size}; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;"
        ))
        .unwrap();
        c
    }

    #[test]
    fn checksum_known_answer_both_orders() {
        // Two words 1, 2: s0 = 1, s1 = 2 + 1 = 3.
        let le = [1u8, 0, 0, 0, 2, 0, 0, 0];
        let be = [0u8, 0, 0, 1, 0, 0, 0, 2];
        assert_eq!(checksum_words(false, (0, 0), &le), (1, 3));
        assert_eq!(checksum_words(true, (0, 0), &be), (1, 3));
        // Seeded and wrapping.
        // s0 = MAX + 1 + 1 wraps to 1; s1 = 1 + 2 + 1 = 4.
        assert_eq!(checksum_words(true, (u32::MAX, 1), &be), (1, 4));
    }

    #[test]
    fn counts_commits_and_pages_of_a_real_wal() {
        for page_size in [512u32, 4096, 65536] {
            let dir = tempfile::tempdir().unwrap();
            let c = wal_db(dir.path(), page_size);
            c.execute_batch("CREATE TABLE t(x)").unwrap();
            for i in 0..10 {
                c.execute("INSERT INTO t VALUES(?1)", [i]).unwrap();
            }
            let f = File::open(dir.path().join("t.db-wal")).unwrap();
            let h = Header::read(&f).unwrap().unwrap();
            assert_eq!(h.page_size, page_size);
            let (seg, stop) = scan(&f, &h, Cursor::start(&h), u64::MAX).unwrap();
            assert_eq!(stop, Stop::EndOfLog);
            assert_eq!(seg.transactions, 11, "page size {page_size}");
            assert_eq!(seg.commit as u64 * page_size as u64, {
                let n: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
                n as u64 * page_size as u64
            });
            assert_eq!(seg.end.unwrap().offset, std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len());
        }
    }

    #[test]
    fn resumes_at_an_offset_with_the_running_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let c = wal_db(dir.path(), 4096);
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        let f = File::open(dir.path().join("t.db-wal")).unwrap();
        let h = Header::read(&f).unwrap().unwrap();
        let (first, _) = scan(&f, &h, Cursor::start(&h), u64::MAX).unwrap();
        let cur = first.end.unwrap();
        c.execute("INSERT INTO t VALUES(1)", []).unwrap();
        let (second, _) = scan(&f, &h, cur, u64::MAX).unwrap();
        assert_eq!(second.transactions, 1);
        // A wrong seed finds nothing: the chain does not validate.
        let bad = Cursor { offset: cur.offset, checksum: (1, 2) };
        let (none, _) = scan(&f, &h, bad, u64::MAX).unwrap();
        assert_eq!(none.transactions, 0);
    }

    #[test]
    fn open_transaction_frames_are_not_included_and_budget_cuts_at_commits() {
        let dir = tempfile::tempdir().unwrap();
        let c = wal_db(dir.path(), 4096);
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES(?1)", [i]).unwrap();
        }
        let f = File::open(dir.path().join("t.db-wal")).unwrap();
        let h = Header::read(&f).unwrap().unwrap();
        let (seg, stop) = scan(&f, &h, Cursor::start(&h), 1).unwrap();
        assert_eq!((seg.transactions, stop), (1, Stop::Budget));
        // Truncate the file in the middle of the last frame: that commit is dropped.
        let len = std::fs::metadata(dir.path().join("t.db-wal")).unwrap().len();
        let copy = dir.path().join("copy-wal");
        std::fs::copy(dir.path().join("t.db-wal"), &copy).unwrap();
        let cf = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        cf.set_len(len - 10).unwrap();
        let (seg, _) = scan(&File::open(&copy).unwrap(), &h, Cursor::start(&h), u64::MAX).unwrap();
        assert_eq!(seg.transactions, 5);
    }

    #[test]
    fn restart_changes_salt1_by_one_and_old_frames_stop_the_scan() {
        let dir = tempfile::tempdir().unwrap();
        let c = wal_db(dir.path(), 4096);
        c.execute_batch("CREATE TABLE t(x)").unwrap();
        for i in 0..5 {
            c.execute("INSERT INTO t VALUES(?1)", [i]).unwrap();
        }
        let f = File::open(dir.path().join("t.db-wal")).unwrap();
        let h1 = Header::read(&f).unwrap().unwrap();
        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())).unwrap();
        c.execute("INSERT INTO t VALUES(99)", []).unwrap();
        let h2 = Header::read(&f).unwrap().unwrap();
        assert_eq!(h2.salt1, h1.salt1.wrapping_add(1));
        assert_eq!(h2.checkpoint_seq, h1.checkpoint_seq + 1);
        let (seg, _) = scan(&f, &h2, Cursor::start(&h2), u64::MAX).unwrap();
        assert_eq!(seg.transactions, 1, "leftover frames of the old generation are not read");
    }

    #[test]
    fn rejects_garbage_header() {
        let mut b = [0u8; 32];
        b[0..4].copy_from_slice(b"PK\x03\x04");
        assert!(matches!(Header::decode(&b), Err(Error::BadMagic(_))));
    }
}
