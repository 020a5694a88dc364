//! The LTX page index: Go-style unsigned varints (LEB128) and the index block
//! that follows the page-block terminator.
//!
//! Owns the index encoding (`(pgno, offset, size)` triples sorted by pgno, a
//! `0` terminator, then the u64 big-endian byte length of the varint block) and
//! its parsing for ranged reads. It must never trust an index entry that points
//! outside the page block.

use super::{Error, HEADER_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE};

/// One page-index entry: where a page's frame lives inside the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageIndexEntry {
    /// Page number.
    pub pgno: u32,
    /// Absolute byte offset of the frame's 6-byte page header.
    pub offset: u64,
    /// Frame size: page header + optional size prefix + compressed payload.
    pub size: u64,
}

/// Maximum length of a u64 uvarint.
pub(crate) const MAX_VARINT_LEN: usize = 10;

/// Appends `v` as an unsigned LEB128 varint (Go `binary.AppendUvarint`).
pub fn encode_uvarint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes an unsigned varint from the front of `b` (Go `binary.Uvarint`).
///
/// Returns the value and the number of bytes consumed, or `None` when `b` ends
/// mid-varint or the value overflows 64 bits.
pub fn decode_uvarint(b: &[u8]) -> Option<(u64, usize)> {
    let mut x: u64 = 0;
    let mut shift = 0u32;
    for (i, &byte) in b.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return None;
        }
        if byte < 0x80 {
            if i == MAX_VARINT_LEN - 1 && byte > 1 {
                return None;
            }
            return Some((x | (u64::from(byte) << shift), i + 1));
        }
        x |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    None
}

/// Encodes the complete index section: entries (must be sorted by pgno),
/// `0` terminator, u64 BE length of the varint block.
pub(crate) fn encode_index(entries: &[PageIndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 8 + 9);
    for e in entries {
        encode_uvarint(u64::from(e.pgno), &mut out);
        encode_uvarint(e.offset, &mut out);
        encode_uvarint(e.size, &mut out);
    }
    encode_uvarint(0, &mut out);
    let len = out.len() as u64;
    out.extend_from_slice(&len.to_be_bytes());
    out
}

fn index_err(reason: impl Into<String>) -> Error {
    Error::IndexMismatch { reason: reason.into() }
}

/// Parses the varint block (entries + `0` terminator, without the size field).
/// The terminator must be the block's last byte; pgnos must be strictly ascending.
pub(crate) fn parse_index_block(block: &[u8]) -> Result<Vec<PageIndexEntry>, Error> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let next = |pos: &mut usize, what: &str| -> Result<u64, Error> {
        let rest = block.get(*pos..).unwrap_or(&[]);
        let (v, n) =
            decode_uvarint(rest).ok_or_else(|| index_err(format!("bad varint for {what} at index byte {}", *pos)))?;
        *pos += n;
        Ok(v)
    };
    loop {
        let pgno = next(&mut pos, "pgno")?;
        if pgno == 0 {
            break;
        }
        let pgno = u32::try_from(pgno).map_err(|_| index_err(format!("pgno {pgno} > u32")))?;
        let offset = next(&mut pos, "offset")?;
        let size = next(&mut pos, "size")?;
        if let Some(prev) = entries.last().map(|e: &PageIndexEntry| e.pgno)
            && pgno <= prev
        {
            return Err(index_err(format!("index pgnos not ascending: {prev} then {pgno}")));
        }
        entries.push(PageIndexEntry { pgno, offset, size });
    }
    if pos != block.len() {
        return Err(index_err(format!("index terminator at byte {pos} but block is {} bytes", block.len())));
    }
    Ok(entries)
}

/// Parses the page index from the last `file_tail.len()` bytes of an LTX file
/// that is `file_len` bytes long (for ranged reads; Litestream fetches the last
/// 32 KiB first).
///
/// Returns [`Error::IndexTruncated`] with the tail length needed when the tail
/// is too short. Entries are validated to lie inside the page block. The file
/// checksum is *not* verified (it needs the whole file).
pub fn read_page_index(file_tail: &[u8], file_len: u64) -> Result<Vec<PageIndexEntry>, Error> {
    let tail_len = file_tail.len() as u64;
    if tail_len > file_len {
        return Err(index_err(format!("tail of {tail_len} bytes is longer than the file ({file_len})")));
    }
    let fixed = (TRAILER_SIZE + 8) as u64;
    if tail_len < fixed {
        return Err(Error::IndexTruncated { needed: fixed, got: tail_len });
    }
    let t = file_tail.len() - TRAILER_SIZE;
    let mut size_bytes = [0u8; 8];
    size_bytes.copy_from_slice(&file_tail[t - 8..t]);
    let block_size = u64::from_be_bytes(size_bytes);
    // Smallest valid file: header + terminator page header + index + size + trailer.
    let min_file = (HEADER_SIZE + PAGE_HEADER_SIZE) as u64;
    let needed = block_size
        .checked_add(fixed)
        .filter(|n| n.saturating_add(min_file) <= file_len)
        .ok_or_else(|| index_err(format!("index size {block_size} does not fit a file of {file_len} bytes")))?;
    if tail_len < needed {
        return Err(Error::IndexTruncated { needed, got: tail_len });
    }
    // `needed <= tail_len` so these conversions and slices are in range.
    let start = file_tail.len() - needed as usize;
    let entries = parse_index_block(&file_tail[start..t - 8])?;
    let block_end = file_len - needed - PAGE_HEADER_SIZE as u64; // end of last frame
    for e in &entries {
        let end = e.offset.checked_add(e.size);
        if e.offset < HEADER_SIZE as u64 || e.size < PAGE_HEADER_SIZE as u64 || end.is_none_or(|end| end > block_end) {
            return Err(index_err(format!(
                "entry for page {} (offset {}, size {}) lies outside the page block {}..{}",
                e.pgno, e.offset, e.size, HEADER_SIZE, block_end
            )));
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trips() {
        for v in [0u64, 1, 127, 128, 255, 300, 16_383, 16_384, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            encode_uvarint(v, &mut b);
            assert_eq!(decode_uvarint(&b), Some((v, b.len())), "{v}");
            // Trailing bytes are not consumed.
            b.push(0x55);
            assert_eq!(decode_uvarint(&b), Some((v, b.len() - 1)), "{v}");
        }
    }

    #[test]
    fn uvarint_known_encodings() {
        let enc = |v| {
            let mut b = Vec::new();
            encode_uvarint(v, &mut b);
            b
        };
        assert_eq!(enc(0), [0x00]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX), [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn uvarint_rejects_bad_input() {
        assert_eq!(decode_uvarint(&[]), None);
        assert_eq!(decode_uvarint(&[0x80]), None);
        assert_eq!(decode_uvarint(&[0xff; 9]), None);
        // Overflow: 10th byte > 1.
        assert_eq!(decode_uvarint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]), None);
        assert_eq!(decode_uvarint(&[0xff; 11]), None);
    }

    #[test]
    fn index_round_trip() {
        let entries =
            vec![PageIndexEntry { pgno: 1, offset: 100, size: 50 }, PageIndexEntry { pgno: 3, offset: 150, size: 300 }];
        let idx = encode_index(&entries);
        let block_len = idx.len() - 8;
        assert_eq!(u64::from_be_bytes(idx[block_len..].try_into().unwrap()), block_len as u64);
        assert_eq!(parse_index_block(&idx[..block_len]).unwrap(), entries);

        // Build a fake file tail: frames end at 450, terminator, index, trailer.
        let mut file = vec![0u8; 450 + PAGE_HEADER_SIZE];
        file.extend_from_slice(&idx);
        file.extend_from_slice(&[0u8; TRAILER_SIZE]);
        let len = file.len() as u64;
        assert_eq!(read_page_index(&file, len).unwrap(), entries);
        let tail = &file[file.len() - (idx.len() + TRAILER_SIZE)..];
        assert_eq!(read_page_index(tail, len).unwrap(), entries);
        let short = &file[file.len() - 30..];
        assert!(matches!(
            read_page_index(short, len),
            Err(Error::IndexTruncated { needed, got: 30 }) if needed == (idx.len() + TRAILER_SIZE) as u64
        ));
        // An entry pointing past the page block is refused.
        let bad = encode_index(&[PageIndexEntry { pgno: 1, offset: 100, size: 351 }]);
        let mut file = vec![0u8; 450 + PAGE_HEADER_SIZE];
        file.extend_from_slice(&bad);
        file.extend_from_slice(&[0u8; TRAILER_SIZE]);
        assert!(matches!(read_page_index(&file, file.len() as u64), Err(Error::IndexMismatch { .. })));
    }

    #[test]
    fn index_block_rejects_garbage() {
        // Not ascending.
        let idx = encode_index(&[
            PageIndexEntry { pgno: 3, offset: 100, size: 50 },
            PageIndexEntry { pgno: 2, offset: 150, size: 50 },
        ]);
        assert!(parse_index_block(&idx[..idx.len() - 8]).is_err());
        // Bytes after the terminator.
        assert!(parse_index_block(&[0, 0]).is_err());
        // Missing terminator.
        assert!(parse_index_block(&[1, 100, 50]).is_err());
        assert!(parse_index_block(&[]).is_err());
        // Huge size field.
        let mut tail = vec![0u8; 8];
        tail.extend_from_slice(&u64::MAX.to_be_bytes());
        tail.extend_from_slice(&[0u8; 16]);
        assert!(read_page_index(&tail, 1_000).is_err());
    }
}
