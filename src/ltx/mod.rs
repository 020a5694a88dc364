//! LTX v3 file format as written and read by Litestream v0.5 (`superfly/ltx` v0.5.x).
//!
//! This module owns the byte layout of LTX files: the 100-byte header, the page
//! block (6-byte page headers followed by LZ4-compressed pages, in either the
//! LZ4-block or the older per-page LZ4-frame encoding), the uvarint page index,
//! the 16-byte trailer, the CRC-64/GO-ISO file checksum, file naming, and the
//! k-way [`Compactor`] that merges contiguous LTX files into one.
//!
//! It is pure code over [`std::io::Read`]/[`std::io::Write`]: it must never touch
//! the filesystem, the network, SQLite, clocks or async runtimes, must never
//! panic on input-derived data, and must never write anything Litestream v0.5
//! would reject (header flags are always `NoChecksum`, pre/post-apply checksums
//! zero, lock page never encoded).
//!
//! Layout reference: `shared/design/litestream-v0.5.md` section 2.

mod checksum;
mod compactor;
mod decoder;
mod encoder;
mod error;
mod header;
mod index;
mod page;

#[cfg(test)]
mod interop_tests;

pub use checksum::{CHECKSUM_FLAG, Crc64, checksum_page, crc64};
pub use compactor::{Compactor, is_contiguous};
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use error::Error;
pub use header::{Header, PageHeader, Trailer};
pub use index::{PageIndexEntry, decode_uvarint, encode_uvarint, read_page_index};
pub use page::{PageEncoding, decode_page_frame};

/// Transaction ID: one Litestream sync. Files cover the inclusive range `min..=max`.
pub type TxId = u64;

/// File magic at offset 0 of every LTX file.
pub const MAGIC: [u8; 4] = *b"LTX1";
/// Size of the fixed file header in bytes.
pub const HEADER_SIZE: usize = 100;
/// Size of the fixed file trailer in bytes.
pub const TRAILER_SIZE: usize = 16;
/// No LTX file is shorter than a header and a trailer: a listed object smaller than
/// this is torn (an interrupted write) and can be judged without reading it.
pub const MIN_FILE_SIZE: u64 = (HEADER_SIZE + TRAILER_SIZE) as u64;
/// Size of a page header (u32 pgno, u16 flags) in bytes.
pub const PAGE_HEADER_SIZE: usize = 6;
/// Header flag: the rolling database checksum is not tracked. The only valid
/// header flag, and Litestream v0.5 always sets it.
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x2;
/// Mask of all header flags a valid file may carry.
pub const HEADER_FLAG_MASK: u32 = HEADER_FLAG_NO_CHECKSUM;
/// Page header flag: a u32 compressed size follows and the payload is an LZ4 block.
pub const PAGE_FLAG_SIZE: u16 = 0x1;
/// Level that holds full snapshots (`MinTXID == 1`).
pub const SNAPSHOT_LEVEL: u32 = 9;
/// Smallest valid SQLite page size.
pub const MIN_PAGE_SIZE: u32 = 512;
/// Largest valid SQLite page size.
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Page number of SQLite's lock page (the page holding byte offset 1 GiB,
/// `PENDING_BYTE`), which is never stored in an LTX file.
///
/// `page_size` must be non-zero; a zero page size returns `u32::MAX` (no page
/// can match it).
pub fn lock_pgno(page_size: u32) -> u32 {
    match 0x4000_0000u32.checked_div(page_size) {
        Some(n) => n + 1,
        None => u32::MAX,
    }
}

/// Whether `page_size` is a power of two in `512..=65536`.
pub fn is_valid_page_size(page_size: u32) -> bool {
    page_size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&page_size)
}

/// Canonical file name of an LTX file: `%016x-%016x.ltx` (lowercase hex).
pub fn format_filename(min: TxId, max: TxId) -> String {
    format!("{min:016x}-{max:016x}.ltx")
}

/// Parses a canonical LTX file name back into `(min, max)`.
///
/// Accepts exactly 16 hex digits (either case), a dash, 16 hex digits and
/// `.ltx`; anything else (including a directory prefix) returns `None`.
pub fn parse_filename(name: &str) -> Option<(TxId, TxId)> {
    let stem = name.strip_suffix(".ltx")?;
    let (a, b) = stem.split_once('-')?;
    Some((parse_txid(a)?, parse_txid(b)?))
}

/// Parses a 16-hex-digit TXID as used in file names and `-txid` flags.
pub fn parse_txid(s: &str) -> Option<TxId> {
    if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_page_numbers() {
        assert_eq!(lock_pgno(4096), 262_145);
        assert_eq!(lock_pgno(512), 2_097_153);
        assert_eq!(lock_pgno(65536), 16_385);
        assert_eq!(lock_pgno(0), u32::MAX);
    }

    #[test]
    fn page_sizes() {
        for ps in [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(is_valid_page_size(ps), "{ps}");
        }
        for ps in [0, 1, 256, 511, 513, 4095, 131_072, u32::MAX] {
            assert!(!is_valid_page_size(ps), "{ps}");
        }
    }

    #[test]
    fn filenames() {
        assert_eq!(format_filename(1, 0x2a), "0000000000000001-000000000000002a.ltx");
        assert_eq!(parse_filename("0000000000000001-000000000000002a.ltx"), Some((1, 0x2a)));
        assert_eq!(parse_filename(&format_filename(u64::MAX, u64::MAX)), Some((u64::MAX, u64::MAX)));
        for bad in [
            "",
            ".ltx",
            "1-2.ltx",
            "0000000000000001-000000000000002a",
            "0000000000000001_000000000000002a.ltx",
            "000000000000000g-000000000000002a.ltx",
            "+000000000000001-000000000000002a.ltx",
            "ltx/0/0000000000000001-0000000000000001.ltx",
            "0000000000000001-000000000000002a.ltx.tmp",
        ] {
            assert_eq!(parse_filename(bad), None, "{bad}");
        }
    }
}
