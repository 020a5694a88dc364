//! Per-page LZ4 compression in the two encodings found in LTX v3 files.
//!
//! Owns [`PageEncoding`], page compression, exact-length parsing of a per-page
//! LZ4 frame out of a stream (so the next page header is never over-read), and
//! [`decode_page_frame`] for single frames fetched by ranged reads. It must
//! never accept a page that does not decompress to exactly `page_size` bytes and
//! must never buffer more than a bounded multiple of the page size.

use std::io::{Read, Write};

use lz4_flex::block::DecompressError;
use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

use super::{Error, PAGE_HEADER_SIZE, PageHeader, is_valid_page_size};

/// How page payloads are compressed on write. Decoding accepts both, per page.
///
/// Spelled `block` and `frame` in configs and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum PageEncoding {
    /// Page flag `0x1`, u32 BE compressed size, then a raw LZ4 block
    /// (`superfly/ltx` ≥ v0.5.2, Litestream ≥ 0.5.16). Older Litestream rejects it.
    #[default]
    Lz4Block,
    /// Page flag `0`, each page a complete LZ4 frame (64 KiB max block,
    /// independent blocks, content checksum): readable by every Litestream v0.5.x.
    Lz4Frame,
}

impl std::str::FromStr for PageEncoding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "block" => Ok(PageEncoding::Lz4Block),
            "frame" => Ok(PageEncoding::Lz4Frame),
            _ => Err(format!("\"{s}\" is not one of: block, frame")),
        }
    }
}

impl TryFrom<String> for PageEncoding {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl PageEncoding {
    /// `block` or `frame`.
    pub fn as_str(self) -> &'static str {
        match self {
            PageEncoding::Lz4Block => "block",
            PageEncoding::Lz4Frame => "frame",
        }
    }
}

const LZ4F_MAGIC: u32 = 0x184D_2204;
const FLG_BLOCK_CHECKSUM: u8 = 0x10;
const FLG_CONTENT_SIZE: u8 = 0x08;
const FLG_CONTENT_CHECKSUM: u8 = 0x04;
const FLG_DICT_ID: u8 = 0x01;
const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

/// Largest acceptable LZ4-block payload for one page.
pub(crate) fn max_block_len(page_size: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(page_size)
}

/// Largest acceptable LZ4 frame for one page (generous: frame header, any
/// block split, checksums).
pub(crate) fn max_frame_len(page_size: usize) -> usize {
    2 * page_size + 1024
}

fn lz4_err(pgno: u32, e: impl std::fmt::Display) -> Error {
    Error::Lz4 { pgno, reason: e.to_string() }
}

/// Compresses `data` as a raw LZ4 block into `out` (cleared first).
pub(crate) fn compress_block(pgno: u32, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.clear();
    out.resize(max_block_len(data.len()), 0);
    let n = lz4_flex::block::compress_into(data, out).map_err(|e| Error::Compress { pgno, reason: e.to_string() })?;
    out.truncate(n);
    Ok(())
}

/// Compresses `data` as one LZ4 frame (the options Go's pierrec/lz4 writer
/// used in ltx ≤ v0.5.1: 64 KiB blocks, independent, content checksum) into
/// `out` (cleared first).
pub(crate) fn compress_frame(pgno: u32, data: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.clear();
    let info =
        FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Independent).content_checksum(true);
    let mut enc = FrameEncoder::with_frame_info(info, std::mem::take(out));
    let res = enc.write_all(data).map_err(|e| Error::Compress { pgno, reason: e.to_string() });
    let res = res.and_then(|()| enc.finish().map_err(|e| Error::Compress { pgno, reason: e.to_string() }));
    *out = res?;
    Ok(())
}

/// Decompresses a raw LZ4 block into `out`, which must be filled exactly.
pub(crate) fn decompress_block(pgno: u32, block: &[u8], out: &mut [u8]) -> Result<(), Error> {
    match lz4_flex::block::decompress_into(block, out) {
        Ok(n) if n == out.len() => Ok(()),
        Ok(n) => Err(Error::DecompressedSize { pgno, want: out.len(), got: n }),
        Err(DecompressError::OutputTooSmall { expected, .. }) => {
            Err(Error::DecompressedSize { pgno, want: out.len(), got: expected.max(out.len() + 1) })
        }
        Err(e) => Err(lz4_err(pgno, e)),
    }
}

fn read_append<R: Read>(r: &mut R, buf: &mut Vec<u8>, n: usize) -> Result<(), Error> {
    let start = buf.len();
    buf.resize(start + n, 0);
    r.read_exact(&mut buf[start..])?;
    Ok(())
}

/// Reads exactly one LZ4 frame from `r`, appending its raw bytes to `buf`
/// (cleared first). Parses the frame structure (descriptor, block sizes,
/// optional block/content checksums) so that nothing past the frame is read.
pub(crate) fn read_frame<R: Read>(r: &mut R, pgno: u32, page_size: usize, buf: &mut Vec<u8>) -> Result<(), Error> {
    buf.clear();
    let limit = max_frame_len(page_size);
    read_append(r, buf, 6)?; // magic, FLG, BD
    let magic = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if magic != LZ4F_MAGIC {
        return Err(lz4_err(pgno, format_args!("bad lz4 frame magic 0x{magic:08x}")));
    }
    let flg = buf[4];
    if flg >> 6 != 0b01 {
        return Err(lz4_err(pgno, format_args!("unsupported lz4 frame version in FLG 0x{flg:02x}")));
    }
    if flg & FLG_DICT_ID != 0 {
        return Err(lz4_err(pgno, "lz4 frame dictionaries are not supported"));
    }
    let mut descriptor_rest = 1; // header checksum byte
    if flg & FLG_CONTENT_SIZE != 0 {
        descriptor_rest += 8;
    }
    read_append(r, buf, descriptor_rest)?;
    loop {
        let at = buf.len();
        read_append(r, buf, 4)?;
        let info = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        if info == 0 {
            break; // EndMark
        }
        let len = (info & !BLOCK_UNCOMPRESSED) as usize;
        let extra = if flg & FLG_BLOCK_CHECKSUM != 0 { 4 } else { 0 };
        if buf.len() + len + extra > limit {
            return Err(Error::CompressedSizeTooLarge {
                pgno,
                size: (buf.len() + len + extra) as u64,
                max: limit as u64,
            });
        }
        read_append(r, buf, len + extra)?;
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        read_append(r, buf, 4)?;
    }
    Ok(())
}

/// Decompresses one complete LZ4 frame (verifying its header, block and
/// content checksums where present) into `out`, which must be filled exactly.
pub(crate) fn decompress_frame(pgno: u32, frame: &[u8], out: &mut [u8]) -> Result<(), Error> {
    let mut dec = FrameDecoder::new(frame);
    let mut filled = 0usize;
    while filled < out.len() {
        let n = dec.read(&mut out[filled..]).map_err(|e| lz4_err(pgno, e))?;
        if n == 0 {
            return Err(Error::DecompressedSize { pgno, want: out.len(), got: filled });
        }
        filled += n;
    }
    // Reading on past the data consumes the EndMark and verifies the content checksum.
    let mut extra = [0u8; 1];
    let n = dec.read(&mut extra).map_err(|e| lz4_err(pgno, e))?;
    if n != 0 {
        return Err(Error::DecompressedSize { pgno, want: out.len(), got: out.len() + n });
    }
    Ok(())
}

/// Decodes a single page frame obtained by a ranged read (exactly the bytes
/// `offset..offset+size` of a [`PageIndexEntry`](super::PageIndexEntry)) into
/// `out` (`page_size` bytes) and returns its page number. Accepts both
/// encodings. No file checksum can be verified for a lone frame.
pub fn decode_page_frame(frame: &[u8], page_size: u32, out: &mut [u8]) -> Result<u32, Error> {
    if !is_valid_page_size(page_size) {
        return Err(Error::BadPageSize { page_size });
    }
    let ps = page_size as usize;
    if out.len() != ps {
        return Err(Error::PageBufferSize { want: ps, got: out.len() });
    }
    let hb: &[u8; PAGE_HEADER_SIZE] = frame
        .get(..PAGE_HEADER_SIZE)
        .and_then(|s| s.try_into().ok())
        .ok_or(Error::FrameLength { want: PAGE_HEADER_SIZE as u64, got: frame.len() as u64 })?;
    let ph = PageHeader::decode(hb);
    ph.validate()?;
    let body = &frame[PAGE_HEADER_SIZE..];
    if ph.has_size() {
        let size_bytes: [u8; 4] = body
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::FrameLength { want: (PAGE_HEADER_SIZE + 4) as u64, got: frame.len() as u64 })?;
        let size = u32::from_be_bytes(size_bytes) as usize;
        let want = PAGE_HEADER_SIZE + 4 + size;
        if frame.len() != want {
            return Err(Error::FrameLength { want: want as u64, got: frame.len() as u64 });
        }
        decompress_block(ph.pgno, &body[4..], out)?;
    } else {
        let mut rest = body;
        let mut buf = Vec::new();
        read_frame(&mut rest, ph.pgno, ps, &mut buf)?;
        if !rest.is_empty() {
            return Err(Error::FrameLength { want: (PAGE_HEADER_SIZE + buf.len()) as u64, got: frame.len() as u64 });
        }
        decompress_frame(ph.pgno, &buf, out)?;
    }
    Ok(ph.pgno)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ps: usize, seed: u8) -> Vec<u8> {
        (0..ps).map(|i| ((i / 7) as u8).wrapping_mul(seed) ^ (i as u8 & 3)).collect()
    }

    #[test]
    fn block_round_trip() {
        let data = page(4096, 3);
        let mut c = Vec::new();
        compress_block(1, &data, &mut c).unwrap();
        assert!(c.len() < data.len());
        let mut out = vec![0u8; 4096];
        decompress_block(1, &c, &mut out).unwrap();
        assert_eq!(out, data);
        // Wrong page size in either direction.
        let mut small = vec![0u8; 2048];
        assert!(matches!(decompress_block(1, &c, &mut small), Err(Error::DecompressedSize { .. })));
        let mut big = vec![0u8; 8192];
        assert!(matches!(
            decompress_block(1, &c, &mut big),
            Err(Error::DecompressedSize { want: 8192, got: 4096, .. })
        ));
    }

    #[test]
    fn frame_round_trip_and_exact_read() {
        for ps in [512usize, 4096, 65536] {
            let data = page(ps, 5);
            let mut f = Vec::new();
            compress_frame(2, &data, &mut f).unwrap();
            assert_eq!(&f[..4], &[0x04, 0x22, 0x4d, 0x18]);
            assert_eq!(f[4], 0x64, "FLG: version 1, independent blocks, content checksum");
            assert_eq!(f[5], 0x40, "BD: 64 KiB max block");
            let mut stream = f.clone();
            stream.extend_from_slice(b"NEXT");
            let mut r = &stream[..];
            let mut buf = Vec::new();
            read_frame(&mut r, 2, ps, &mut buf).unwrap();
            assert_eq!(buf, f);
            assert_eq!(r, b"NEXT");
            let mut out = vec![0u8; ps];
            decompress_frame(2, &buf, &mut out).unwrap();
            assert_eq!(out, data);
        }
    }

    #[test]
    fn frame_with_block_checksums_and_content_size() {
        let data = page(4096, 9);
        let info = FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(4096));
        let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
        enc.write_all(&data).unwrap();
        let f = enc.finish().unwrap();
        let mut r = &f[..];
        let mut buf = Vec::new();
        read_frame(&mut r, 1, 4096, &mut buf).unwrap();
        assert!(r.is_empty());
        let mut out = vec![0u8; 4096];
        decompress_frame(1, &buf, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn frame_corruption_detected() {
        let data = page(4096, 11);
        let mut f = Vec::new();
        compress_frame(1, &data, &mut f).unwrap();
        let mut out = vec![0u8; 4096];
        // Corrupt content checksum.
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(matches!(decompress_frame(1, &bad, &mut out), Err(Error::Lz4 { .. })));
        // Corrupt magic.
        let mut bad = f.clone();
        bad[0] ^= 1;
        assert!(matches!(read_frame(&mut &bad[..], 1, 4096, &mut Vec::new()), Err(Error::Lz4 { .. })));
        // Truncated.
        assert!(matches!(read_frame(&mut &f[..f.len() - 1], 1, 4096, &mut Vec::new()), Err(Error::Io(_))));
    }

    #[test]
    fn single_frames() {
        let data = page(512, 13);
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let mut payload = Vec::new();
            let mut frame = Vec::new();
            match enc {
                PageEncoding::Lz4Block => {
                    compress_block(7, &data, &mut payload).unwrap();
                    frame.extend_from_slice(&PageHeader { pgno: 7, flags: 1 }.encode());
                    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                }
                PageEncoding::Lz4Frame => {
                    compress_frame(7, &data, &mut payload).unwrap();
                    frame.extend_from_slice(&PageHeader { pgno: 7, flags: 0 }.encode());
                }
            }
            frame.extend_from_slice(&payload);
            let mut out = vec![0u8; 512];
            assert_eq!(decode_page_frame(&frame, 512, &mut out).unwrap(), 7);
            assert_eq!(out, data);
            let mut longer = frame.clone();
            longer.push(0);
            assert!(matches!(decode_page_frame(&longer, 512, &mut out), Err(Error::FrameLength { .. })));
            assert!(decode_page_frame(&frame[..frame.len() - 1], 512, &mut out).is_err());
            assert!(matches!(decode_page_frame(&frame, 1000, &mut out), Err(Error::BadPageSize { .. })));
            assert!(matches!(
                decode_page_frame(&frame, 1024, &mut out),
                Err(Error::PageBufferSize { want: 1024, got: 512 })
            ));
        }
        assert!(decode_page_frame(&[0, 0, 0], 512, &mut [0u8; 512]).is_err());
    }
}
