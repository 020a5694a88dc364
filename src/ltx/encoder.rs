//! Streaming LTX writer.
//!
//! Owns the write path: header, page frames in either [`PageEncoding`], the
//! terminator, page index, trailer and file checksum, enforcing page ordering,
//! commit bounds, lock-page exclusion and snapshot completeness. It must never
//! seek, never buffer more than one compressed page, and never emit a file that
//! its own [`Decoder`](super::Decoder) or Litestream would reject. After any
//! error the partially written output is garbage and must be discarded.

use std::io::Write;

use super::index::encode_index;
use super::page::{compress_block, compress_frame};
use super::{CHECKSUM_FLAG, Crc64, Error, Header, PAGE_FLAG_SIZE, PageEncoding, PageHeader, PageIndexEntry, Trailer};

/// Writes one LTX file to `W`: [`Encoder::new`], then [`Encoder::encode_page`]
/// for each page in ascending order, then [`Encoder::finish`].
///
/// Writes are small (page header, size prefix, payload); wrap files in a
/// `BufWriter`.
#[derive(Debug)]
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    encoding: PageEncoding,
    hash: Crc64,
    offset: u64,
    prev_pgno: u32,
    index: Vec<PageIndexEntry>,
    post_apply_checksum: u64,
    scratch: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it. Litestream-compatible files need
    /// `flags = HEADER_FLAG_NO_CHECKSUM` and `pre_apply_checksum = 0`.
    pub fn new(mut w: W, header: &Header, encoding: PageEncoding) -> Result<Self, Error> {
        header.validate()?;
        let b = header.encode();
        w.write_all(&b)?;
        let mut hash = Crc64::new();
        hash.update(&b);
        Ok(Self {
            w,
            header: header.clone(),
            encoding,
            hash,
            offset: b.len() as u64,
            prev_pgno: 0,
            index: Vec::new(),
            post_apply_checksum: 0,
            scratch: Vec::new(),
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// Number of pages encoded so far.
    pub fn page_count(&self) -> usize {
        self.index.len()
    }

    /// Sets the trailer's post-apply checksum. Only for files *without* the
    /// `NoChecksum` flag (never used with Litestream); [`Encoder::finish`]
    /// validates it against the header.
    pub fn set_post_apply_checksum(&mut self, checksum: u64) {
        self.post_apply_checksum = checksum;
    }

    /// Compresses and writes page `pgno`.
    ///
    /// `data.len()` must equal the page size; page numbers must be strictly
    /// ascending, `<= commit`, never the lock page; a snapshot (`min_txid == 1`)
    /// must be exactly `1..=commit` minus the lock page.
    pub fn encode_page(&mut self, pgno: u32, data: &[u8]) -> Result<(), Error> {
        let ps = self.header.page_size as usize;
        if data.len() != ps {
            return Err(Error::PageBufferSize { want: ps, got: data.len() });
        }
        check_page_order(&self.header, self.prev_pgno, pgno)?;

        let flags = match self.encoding {
            PageEncoding::Lz4Block => {
                compress_block(pgno, data, &mut self.scratch)?;
                PAGE_FLAG_SIZE
            }
            PageEncoding::Lz4Frame => {
                compress_frame(pgno, data, &mut self.scratch)?;
                0
            }
        };
        let ph = PageHeader { pgno, flags }.encode();
        let start = self.offset;
        self.w.write_all(&ph)?;
        self.hash.update(&ph);
        let mut frame_len = ph.len() + self.scratch.len();
        if flags & PAGE_FLAG_SIZE != 0 {
            let size = u32::try_from(self.scratch.len())
                .map_err(|_| Error::Compress { pgno, reason: "compressed page larger than 4 GiB".into() })?
                .to_be_bytes();
            self.w.write_all(&size)?;
            self.hash.update(&size);
            frame_len += size.len();
        }
        self.w.write_all(&self.scratch)?;
        self.hash.update(data); // the checksum covers the uncompressed page
        self.offset += frame_len as u64;
        self.prev_pgno = pgno;
        self.index.push(PageIndexEntry { pgno, offset: start, size: frame_len as u64 });
        Ok(())
    }

    /// Writes the terminator, page index and trailer, flushes, and returns the
    /// writer with the trailer. Fails if a snapshot is missing trailing pages.
    pub fn finish(mut self) -> Result<(W, Trailer), Error> {
        if self.header.is_snapshot() && self.prev_pgno != self.header.last_snapshot_pgno() {
            return Err(Error::SnapshotIncomplete { last: self.prev_pgno, commit: self.header.commit });
        }
        let term = PageHeader::default().encode();
        self.w.write_all(&term)?;
        self.hash.update(&term);
        let idx = encode_index(&self.index);
        self.w.write_all(&idx)?;
        self.hash.update(&idx);
        let post = self.post_apply_checksum.to_be_bytes();
        self.hash.update(&post);
        let trailer = Trailer {
            post_apply_checksum: self.post_apply_checksum,
            file_checksum: CHECKSUM_FLAG | self.hash.finish(),
        };
        trailer.validate(&self.header)?;
        self.w.write_all(&trailer.encode())?;
        self.w.flush()?;
        Ok((self.w, trailer))
    }
}

/// Shared page-order rules of the encoder and decoder (`prev == 0`: no page yet).
pub(crate) fn check_page_order(header: &Header, prev: u32, pgno: u32) -> Result<(), Error> {
    if pgno == 0 {
        return Err(Error::ZeroPageNumber { flags: 0 });
    }
    if pgno > header.commit {
        return Err(Error::PageBeyondCommit { pgno, commit: header.commit });
    }
    let lock = header.lock_pgno();
    if pgno == lock {
        return Err(Error::LockPagePresent { pgno });
    }
    if header.is_snapshot() {
        let want = if prev.checked_add(1) == Some(lock) { prev.saturating_add(2) } else { prev.saturating_add(1) };
        if pgno != want {
            return Err(Error::NonsequentialSnapshotPage { prev, pgno });
        }
    } else if pgno <= prev {
        return Err(Error::PageOutOfOrder { prev, pgno });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{Decoder, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, lock_pgno};
    use super::*;

    fn header(ps: u32, commit: u32, min: u64, max: u64) -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: ps,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1_700_000_000_000,
            ..Header::default()
        }
    }

    fn page(ps: u32, pgno: u32) -> Vec<u8> {
        (0..ps)
            .map(|i| (i.wrapping_mul(31) ^ pgno.wrapping_mul(17)) as u8 & if i % 64 < 40 { 0 } else { 0xff })
            .collect()
    }

    fn round_trip(ps: u32, enc: PageEncoding, h: Header, pgnos: &[u32]) {
        let mut e = Encoder::new(Vec::new(), &h, enc).unwrap();
        for &p in pgnos {
            e.encode_page(p, &page(ps, p)).unwrap();
        }
        assert_eq!(e.page_count(), pgnos.len());
        let written = e.bytes_written();
        let (bytes, trailer) = e.finish().unwrap();
        assert!(bytes.len() as u64 > written);
        assert_eq!(trailer.post_apply_checksum, 0);
        assert_ne!(trailer.file_checksum & CHECKSUM_FLAG, 0);

        let mut d = Decoder::new(&bytes[..]).unwrap();
        assert_eq!(d.header(), &h);
        let mut buf = vec![0u8; ps as usize];
        for &p in pgnos {
            assert_eq!(d.decode_page(&mut buf).unwrap(), Some(p));
            assert_eq!(buf, page(ps, p), "page {p}");
        }
        assert_eq!(d.decode_page(&mut buf).unwrap(), None);
        assert_eq!(d.decode_page(&mut buf).unwrap(), None);
        let index = d.page_index().to_vec();
        assert_eq!(d.finish().unwrap(), trailer);

        // The index from the tail matches and each ranged frame decodes.
        let idx = super::super::read_page_index(&bytes, bytes.len() as u64).unwrap();
        assert_eq!(idx, index);
        for e in idx {
            let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
            assert_eq!(super::super::decode_page_frame(frame, ps, &mut buf).unwrap(), e.pgno);
            assert_eq!(buf, page(ps, e.pgno));
            let flags = u16::from_be_bytes([frame[4], frame[5]]);
            assert_eq!(flags, if enc == PageEncoding::Lz4Block { 1 } else { 0 });
        }
    }

    #[test]
    fn encoder_decoder_round_trips() {
        for ps in [512u32, 4096, 65536] {
            for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
                round_trip(ps, enc, header(ps, 5, 1, 1), &[1, 2, 3, 4, 5]);
                round_trip(ps, enc, header(ps, 9, 4, 7), &[2, 5, 9]);
                round_trip(ps, enc, header(ps, 9, 4, 4), &[]);
            }
        }
    }

    #[test]
    fn snapshot_skips_lock_page() {
        // 65536-byte pages put the lock page at 16385: check the ordering rule
        // directly rather than encoding 16k pages.
        let ps = 65536u32;
        let lock = lock_pgno(ps);
        let h = header(ps, lock + 5, 1, 3);
        check_page_order(&h, lock - 1, lock + 1).unwrap();
        assert!(matches!(check_page_order(&h, lock - 1, lock), Err(Error::LockPagePresent { .. })));
        assert!(matches!(check_page_order(&h, lock - 1, lock + 2), Err(Error::NonsequentialSnapshotPage { .. })));
        assert_eq!(h.last_snapshot_pgno(), lock + 5);
        assert_eq!(header(ps, lock, 1, 3).last_snapshot_pgno(), lock - 1);
        let inc = header(ps, lock + 1, 2, 3);
        check_page_order(&inc, 3, lock + 1).unwrap();
        assert!(matches!(check_page_order(&inc, 3, lock), Err(Error::LockPagePresent { .. })));
    }

    #[test]
    fn encoder_refuses_bad_pages() {
        let ps = 4096u32;
        let p = page(ps, 1);
        // Out of order / duplicate.
        let mut e = Encoder::new(Vec::new(), &header(ps, 10, 2, 2), PageEncoding::Lz4Block).unwrap();
        e.encode_page(3, &p).unwrap();
        assert!(matches!(e.encode_page(3, &p), Err(Error::PageOutOfOrder { prev: 3, pgno: 3 })));
        assert!(matches!(e.encode_page(2, &p), Err(Error::PageOutOfOrder { prev: 3, pgno: 2 })));
        // Beyond commit.
        assert!(matches!(e.encode_page(11, &p), Err(Error::PageBeyondCommit { pgno: 11, commit: 10 })));
        // Page zero.
        assert!(matches!(e.encode_page(0, &p), Err(Error::ZeroPageNumber { .. })));
        // Wrong buffer sizes.
        assert!(matches!(e.encode_page(4, &p[..4095]), Err(Error::PageBufferSize { want: 4096, got: 4095 })));
        assert!(matches!(e.encode_page(4, &vec![0u8; 8192]), Err(Error::PageBufferSize { want: 4096, got: 8192 })));
        e.encode_page(4, &p).unwrap();
        e.finish().unwrap();

        // Lock page (non-snapshot, large commit).
        let lock = lock_pgno(ps);
        let mut e = Encoder::new(Vec::new(), &header(ps, lock + 5, 2, 2), PageEncoding::Lz4Frame).unwrap();
        assert!(matches!(e.encode_page(lock, &p), Err(Error::LockPagePresent { pgno }) if pgno == lock));
        e.encode_page(lock + 1, &p).unwrap();
        e.finish().unwrap();
    }

    #[test]
    fn snapshot_must_be_complete_and_sequential() {
        let ps = 512u32;
        let p = page(ps, 1);
        // Must start at 1.
        let mut e = Encoder::new(Vec::new(), &header(ps, 3, 1, 1), PageEncoding::Lz4Block).unwrap();
        assert!(matches!(e.encode_page(2, &p), Err(Error::NonsequentialSnapshotPage { prev: 0, pgno: 2 })));
        // Gap.
        e.encode_page(1, &p).unwrap();
        assert!(matches!(e.encode_page(3, &p), Err(Error::NonsequentialSnapshotPage { prev: 1, pgno: 3 })));
        e.encode_page(2, &p).unwrap();
        // Missing the last page.
        assert!(matches!(e.finish(), Err(Error::SnapshotIncomplete { last: 2, commit: 3 })));
        // Empty snapshot with commit 0 is fine (nothing to contain).
        let (b, _) = Encoder::new(Vec::new(), &header(ps, 0, 1, 1), PageEncoding::Lz4Block).unwrap().finish().unwrap();
        Decoder::new(&b[..]).unwrap().finish().unwrap();
    }

    #[test]
    fn header_is_validated_and_written() {
        let bad = Header { flags: 1, ..header(4096, 1, 1, 1) };
        assert!(matches!(
            Encoder::new(Vec::new(), &bad, PageEncoding::Lz4Block),
            Err(Error::BadHeaderFlags { flags: 1 })
        ));
        let h = header(4096, 1, 1, 1);
        let e = Encoder::new(Vec::new(), &h, PageEncoding::Lz4Block).unwrap();
        assert_eq!(e.bytes_written(), HEADER_SIZE as u64);
        assert_eq!(e.header(), &h);
    }

    #[test]
    fn checksum_tracking_files() {
        // Flags 0 (checksums tracked): post-apply must be provided with the flag bit.
        let h = Header { flags: 0, pre_apply_checksum: CHECKSUM_FLAG | 42, ..header(512, 2, 2, 2) };
        let mut e = Encoder::new(Vec::new(), &h, PageEncoding::Lz4Block).unwrap();
        e.encode_page(2, &page(512, 2)).unwrap();
        assert!(matches!(e.finish(), Err(Error::InvalidTrailer { .. })));
        let mut e = Encoder::new(Vec::new(), &h, PageEncoding::Lz4Block).unwrap();
        e.encode_page(2, &page(512, 2)).unwrap();
        e.set_post_apply_checksum(CHECKSUM_FLAG | 7);
        let (b, t) = e.finish().unwrap();
        assert_eq!(t.post_apply_checksum, CHECKSUM_FLAG | 7);
        assert_eq!(Decoder::new(&b[..]).unwrap().finish().unwrap(), t);
    }
}
