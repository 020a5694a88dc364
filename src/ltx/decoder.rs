//! Streaming LTX reader with full verification.
//!
//! Owns the read path: header validation, page frames in both encodings (LZ4
//! block with size prefix, or a complete LZ4 frame per page), page-order rules,
//! and at [`Decoder::finish`] the page index, trailer and file checksum. It must
//! never read past the trailer's end, never buffer more than one page (plus the
//! small page index at the end), and never report success for a file whose
//! checksum, index or structure is wrong. After any error the decoder must be
//! dropped.

use std::io::Read;

use super::encoder::check_page_order;
use super::index::{MAX_VARINT_LEN, parse_index_block};
use super::page::{decompress_block, decompress_frame, max_block_len, read_frame};
use super::{
    CHECKSUM_FLAG, Crc64, Error, HEADER_SIZE, Header, PAGE_HEADER_SIZE, PageHeader, PageIndexEntry, TRAILER_SIZE,
    Trailer, checksum_page,
};

/// Reads one LTX file from `R`: [`Decoder::new`] (header), then
/// [`Decoder::decode_page`] until it returns `None`, then [`Decoder::finish`].
///
/// Reads are small (6-byte headers, payloads); wrap files in a `BufReader`.
#[derive(Debug)]
pub struct Decoder<R: Read> {
    r: R,
    header: Header,
    hash: Crc64,
    offset: u64,
    prev_pgno: u32,
    frames: Vec<PageIndexEntry>,
    done: bool,
    rolling: u64,
    scratch: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the 100-byte header.
    pub fn new(mut r: R) -> Result<Self, Error> {
        let mut b = [0u8; HEADER_SIZE];
        r.read_exact(&mut b)?;
        let header = Header::decode(&b)?;
        header.validate()?;
        let mut hash = Crc64::new();
        hash.update(&b);
        Ok(Self {
            r,
            header,
            hash,
            offset: HEADER_SIZE as u64,
            prev_pgno: 0,
            frames: Vec::new(),
            done: false,
            rolling: 0,
            scratch: Vec::new(),
        })
    }

    /// The file header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Frames read so far as `(pgno, offset, size)`; after the terminator this
    /// is what the file's page index must contain.
    pub fn page_index(&self) -> &[PageIndexEntry] {
        &self.frames
    }

    /// Decodes the next page into `buf` (exactly `page_size` bytes) and returns
    /// its page number, or `None` once the page block's terminator is reached
    /// (and on every call after that). Both page encodings are accepted, page by
    /// page. Order, commit bound, lock page and snapshot sequencing are enforced.
    pub fn decode_page(&mut self, buf: &mut [u8]) -> Result<Option<u32>, Error> {
        let ps = self.header.page_size as usize;
        if buf.len() != ps {
            return Err(Error::PageBufferSize { want: ps, got: buf.len() });
        }
        if self.done {
            return Ok(None);
        }
        let mut hb = [0u8; PAGE_HEADER_SIZE];
        self.r.read_exact(&mut hb)?;
        self.hash.update(&hb);
        let ph = PageHeader::decode(&hb);
        if ph.is_terminator() {
            self.offset += PAGE_HEADER_SIZE as u64;
            self.done = true;
            return Ok(None);
        }
        ph.validate()?;
        check_page_order(&self.header, self.prev_pgno, ph.pgno)?;

        let frame_len = if ph.has_size() {
            let mut sb = [0u8; 4];
            self.r.read_exact(&mut sb)?;
            self.hash.update(&sb);
            let size = u32::from_be_bytes(sb) as usize;
            let max = max_block_len(ps);
            if size > max {
                return Err(Error::CompressedSizeTooLarge { pgno: ph.pgno, size: size as u64, max: max as u64 });
            }
            self.scratch.clear();
            self.scratch.resize(size, 0);
            self.r.read_exact(&mut self.scratch)?;
            decompress_block(ph.pgno, &self.scratch, buf)?;
            PAGE_HEADER_SIZE + 4 + size
        } else {
            read_frame(&mut self.r, ph.pgno, ps, &mut self.scratch)?;
            decompress_frame(ph.pgno, &self.scratch, buf)?;
            PAGE_HEADER_SIZE + self.scratch.len()
        };
        self.hash.update(buf);
        if self.header.is_snapshot() && !self.header.no_checksum() {
            self.rolling ^= checksum_page(ph.pgno, buf);
        }
        self.frames.push(PageIndexEntry { pgno: ph.pgno, offset: self.offset, size: frame_len as u64 });
        self.offset += frame_len as u64;
        self.prev_pgno = ph.pgno;
        Ok(Some(ph.pgno))
    }

    /// Reads (and verifies) any remaining pages, then the page index and
    /// trailer to end of input; verifies the file checksum, the trailer rules,
    /// snapshot completeness, and that the index matches the frames read.
    pub fn finish(mut self) -> Result<Trailer, Error> {
        if !self.done {
            let mut buf = vec![0u8; self.header.page_size as usize];
            while self.decode_page(&mut buf)?.is_some() {}
        }
        if self.header.is_snapshot() && self.prev_pgno != self.header.last_snapshot_pgno() {
            return Err(Error::SnapshotIncomplete { last: self.prev_pgno, commit: self.header.commit });
        }

        // The rest is the varint index, its u64 size and the trailer; bound it
        // by the largest index the frames read could need.
        let fixed = 8 + TRAILER_SIZE;
        let limit = (self.frames.len() * 3 + 1) * MAX_VARINT_LEN + fixed;
        let mut rest = Vec::new();
        (&mut self.r).take(limit as u64 + 1).read_to_end(&mut rest)?;
        if rest.len() > limit {
            return Err(Error::IndexMismatch { reason: format!("more than {limit} bytes after the page block") });
        }
        if rest.len() < fixed + 1 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "ltx file ends inside the page index or trailer",
            )));
        }
        let t = rest.len() - TRAILER_SIZE;
        let trailer = Trailer::decode(&rest[t..])?;
        self.hash.update(&rest[..t + 8]);
        let got = CHECKSUM_FLAG | self.hash.finish();
        if got != trailer.file_checksum {
            return Err(Error::ChecksumMismatch { want: trailer.file_checksum, got });
        }
        trailer.validate(&self.header)?;
        if self.header.is_snapshot()
            && !self.header.no_checksum()
            && trailer.post_apply_checksum != CHECKSUM_FLAG | self.rolling
        {
            return Err(Error::InvalidTrailer { reason: "post-apply checksum does not match the snapshot's pages" });
        }

        let mut sb = [0u8; 8];
        sb.copy_from_slice(&rest[t - 8..t]);
        let block_size = u64::from_be_bytes(sb);
        if block_size != (t - 8) as u64 {
            return Err(Error::IndexMismatch {
                reason: format!("index size field says {block_size} bytes, found {}", t - 8),
            });
        }
        let index = parse_index_block(&rest[..t - 8])?;
        if index != self.frames {
            let diff = index
                .iter()
                .zip(&self.frames)
                .find(|(a, b)| a != b)
                .map(|(a, b)| format!("index has {a:?}, frame is {b:?}"))
                .unwrap_or_else(|| format!("index has {} entries, file has {} frames", index.len(), self.frames.len()));
            return Err(Error::IndexMismatch { reason: diff });
        }
        Ok(trailer)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        Encoder, HEADER_FLAG_NO_CHECKSUM, PAGE_FLAG_SIZE, PageEncoding, index::encode_index, read_page_index,
    };
    use super::*;

    fn header(ps: u32, commit: u32, min: u64) -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: ps,
            commit,
            min_txid: min,
            max_txid: min,
            timestamp_ms: 1,
            ..Header::default()
        }
    }

    fn encode(h: &Header, enc: PageEncoding, pgnos: &[u32]) -> Vec<u8> {
        let mut e = Encoder::new(Vec::new(), h, enc).unwrap();
        for &p in pgnos {
            e.encode_page(p, &vec![p as u8; h.page_size as usize]).unwrap();
        }
        e.finish().unwrap().0
    }

    /// Hand-assembles a file (valid checksum) from raw frames, bypassing the
    /// encoder's checks, to test the decoder's own.
    fn assemble(h: &Header, pages: &[(u32, u16)]) -> Vec<u8> {
        let ps = h.page_size as usize;
        let mut f = h.encode().to_vec();
        let mut hash = Crc64::new();
        hash.update(&f);
        let mut idx = Vec::new();
        for &(pgno, flags) in pages {
            let off = f.len() as u64;
            let data = vec![pgno as u8; ps];
            let ph = PageHeader { pgno, flags }.encode();
            f.extend_from_slice(&ph);
            hash.update(&ph);
            let mut c = Vec::new();
            super::super::page::compress_block(pgno, &data, &mut c).unwrap();
            let sz = (c.len() as u32).to_be_bytes();
            f.extend_from_slice(&sz);
            hash.update(&sz);
            f.extend_from_slice(&c);
            hash.update(&data);
            idx.push(PageIndexEntry { pgno, offset: off, size: f.len() as u64 - off });
        }
        let term = [0u8; 6];
        f.extend_from_slice(&term);
        hash.update(&term);
        let ib = encode_index(&idx);
        f.extend_from_slice(&ib);
        hash.update(&ib);
        hash.update(&[0u8; 8]);
        let t = Trailer { post_apply_checksum: 0, file_checksum: CHECKSUM_FLAG | hash.finish() };
        f.extend_from_slice(&t.encode());
        f
    }

    fn decode_all(b: &[u8]) -> Result<Trailer, Error> {
        Decoder::new(b)?.finish()
    }

    #[test]
    fn assembled_file_is_valid() {
        let h = header(512, 4, 2);
        decode_all(&assemble(&h, &[(1, PAGE_FLAG_SIZE), (4, PAGE_FLAG_SIZE)])).unwrap();
    }

    #[test]
    fn decoder_enforces_page_rules() {
        let h = header(512, 4, 2);
        let f = |pages: &[(u32, u16)]| decode_all(&assemble(&h, pages));
        assert!(matches!(f(&[(2, 1), (2, 1)]), Err(Error::PageOutOfOrder { prev: 2, pgno: 2 })));
        assert!(matches!(f(&[(3, 1), (1, 1)]), Err(Error::PageOutOfOrder { prev: 3, pgno: 1 })));
        assert!(matches!(f(&[(5, 1)]), Err(Error::PageBeyondCommit { pgno: 5, commit: 4 })));
        assert!(matches!(f(&[(1, 3)]), Err(Error::BadPageFlags { pgno: 1, flags: 3 })));
        assert!(matches!(f(&[(0, 1)]), Err(Error::ZeroPageNumber { flags: 1 })));
        let snap = header(512, 3, 1);
        assert!(matches!(
            decode_all(&assemble(&snap, &[(1, 1), (3, 1)])),
            Err(Error::NonsequentialSnapshotPage { prev: 1, pgno: 3 })
        ));
        assert!(matches!(
            decode_all(&assemble(&snap, &[(1, 1), (2, 1)])),
            Err(Error::SnapshotIncomplete { last: 2, commit: 3 })
        ));
        let big = header(4096, 262_150, 5);
        assert!(matches!(decode_all(&assemble(&big, &[(262_145, 1)])), Err(Error::LockPagePresent { pgno: 262_145 })));
    }

    #[test]
    fn decoder_detects_damage() {
        let h = header(512, 4, 2);
        let good = encode(&h, PageEncoding::Lz4Block, &[1, 3]);
        decode_all(&good).unwrap();
        // Truncation anywhere fails.
        for cut in [0, 50, 100, 106, good.len() - 17, good.len() - 1] {
            assert!(decode_all(&good[..cut]).is_err(), "cut {cut}");
        }
        // Trailing garbage fails.
        let mut long = good.clone();
        long.push(0);
        assert!(decode_all(&long).is_err());
        // Flipping any single byte outside the compressed payloads fails. (A
        // flip inside an LZ4 payload can decode to identical bytes, e.g. another
        // match offset into uniform data; the checksum covers decompressed data.)
        let payloads: Vec<_> = read_page_index(&good, good.len() as u64)
            .unwrap()
            .iter()
            .map(|e| e.offset + 10..e.offset + e.size)
            .collect();
        for i in 0..good.len() {
            if payloads.iter().any(|r| r.contains(&(i as u64))) {
                continue;
            }
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            assert!(decode_all(&bad).is_err(), "flip at {i} undetected");
        }
        // Bad magic.
        let mut bad = good.clone();
        bad[1] = b'X';
        assert!(matches!(decode_all(&bad), Err(Error::BadMagic { .. })));
        // Reserved header bytes are covered by the checksum.
        let mut bad = good.clone();
        bad[90] = 1;
        assert!(matches!(decode_all(&bad), Err(Error::ChecksumMismatch { .. })));
    }

    #[test]
    fn decoder_buffer_and_repeat() {
        let h = header(512, 2, 2);
        let b = encode(&h, PageEncoding::Lz4Frame, &[2]);
        let mut d = Decoder::new(&b[..]).unwrap();
        assert!(matches!(d.decode_page(&mut [0u8; 511]), Err(Error::PageBufferSize { want: 512, got: 511 })));
        let mut buf = [0u8; 512];
        assert_eq!(d.decode_page(&mut buf).unwrap(), Some(2));
        assert_eq!(buf, [2u8; 512]);
        assert_eq!(d.decode_page(&mut buf).unwrap(), None);
        assert_eq!(d.page_index().len(), 1);
        d.finish().unwrap();
        // finish() without reading pages drains and verifies them.
        decode_all(&b).unwrap();
    }

    #[test]
    fn mixed_encodings_in_one_file() {
        // A file whose pages use both encodings decodes (decoders accept both per page).
        let h = header(512, 3, 2);
        let ps = 512usize;
        let mut f = h.encode().to_vec();
        let mut hash = Crc64::new();
        hash.update(&f);
        let mut idx = Vec::new();
        for (pgno, enc) in [(1u32, PageEncoding::Lz4Frame), (3, PageEncoding::Lz4Block)] {
            let off = f.len() as u64;
            let data = vec![pgno as u8 + 1; ps];
            let mut c = Vec::new();
            let flags = match enc {
                PageEncoding::Lz4Frame => {
                    super::super::page::compress_frame(pgno, &data, &mut c).unwrap();
                    0
                }
                PageEncoding::Lz4Block => {
                    super::super::page::compress_block(pgno, &data, &mut c).unwrap();
                    PAGE_FLAG_SIZE
                }
            };
            let ph = PageHeader { pgno, flags }.encode();
            f.extend_from_slice(&ph);
            hash.update(&ph);
            if flags != 0 {
                let sz = (c.len() as u32).to_be_bytes();
                f.extend_from_slice(&sz);
                hash.update(&sz);
            }
            f.extend_from_slice(&c);
            hash.update(&data);
            idx.push(PageIndexEntry { pgno, offset: off, size: f.len() as u64 - off });
        }
        f.extend_from_slice(&[0u8; 6]);
        hash.update(&[0u8; 6]);
        let ib = encode_index(&idx);
        f.extend_from_slice(&ib);
        hash.update(&ib);
        hash.update(&[0u8; 8]);
        f.extend_from_slice(&Trailer { post_apply_checksum: 0, file_checksum: CHECKSUM_FLAG | hash.finish() }.encode());
        let mut d = Decoder::new(&f[..]).unwrap();
        let mut buf = vec![0u8; ps];
        assert_eq!(d.decode_page(&mut buf).unwrap(), Some(1));
        assert_eq!(buf, vec![2u8; ps]);
        assert_eq!(d.decode_page(&mut buf).unwrap(), Some(3));
        assert_eq!(buf, vec![4u8; ps]);
        d.finish().unwrap();
    }

    #[test]
    fn tracked_snapshot_post_apply_checksum_verified() {
        let h = Header { flags: 0, ..header(512, 2, 1) };
        let pages: Vec<Vec<u8>> = (1..=2u32).map(|p| vec![p as u8; 512]).collect();
        let ck = CHECKSUM_FLAG | (checksum_page(1, &pages[0]) ^ checksum_page(2, &pages[1]));
        for (post, ok) in [(ck, true), (ck ^ 1, false)] {
            let mut e = Encoder::new(Vec::new(), &h, PageEncoding::Lz4Block).unwrap();
            e.encode_page(1, &pages[0]).unwrap();
            e.encode_page(2, &pages[1]).unwrap();
            e.set_post_apply_checksum(post);
            let (b, _) = e.finish().unwrap();
            assert_eq!(decode_all(&b).is_ok(), ok);
        }
    }
}
