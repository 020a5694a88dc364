//! Fixed-size LTX structures: the 100-byte file header, the 16-byte trailer and
//! the 6-byte page header, with their big-endian encodings and validation rules.
//!
//! Owns the validation rules of `superfly/ltx` v0.5.x (`Header.Validate`,
//! `Trailer.Validate`). It must never perform I/O and must never accept a
//! header the Go implementation would reject.

use super::{
    CHECKSUM_FLAG, Error, HEADER_FLAG_MASK, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, MAGIC, PAGE_FLAG_SIZE,
    PAGE_HEADER_SIZE, TRAILER_SIZE, TxId, is_valid_page_size, lock_pgno,
};

/// The 100-byte LTX file header. All integers are big-endian on disk.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Header flags; only [`HEADER_FLAG_NO_CHECKSUM`] is valid (and always set by Litestream).
    pub flags: u32,
    /// Database page size in bytes (power of two, 512..=65536).
    pub page_size: u32,
    /// Database size in pages after applying this file (0 = deletion file).
    pub commit: u32,
    /// First transaction covered (1 ⇒ snapshot: every page 1..=commit present).
    pub min_txid: TxId,
    /// Last transaction covered.
    pub max_txid: TxId,
    /// Creation time in milliseconds since the Unix epoch (for compacted files:
    /// the timestamp of the newest input).
    pub timestamp_ms: i64,
    /// Rolling database checksum before applying; 0 for snapshots and `NoChecksum` files.
    pub pre_apply_checksum: u64,
    /// Byte offset in the source WAL where this file's frames start (0 if not from a WAL).
    pub wal_offset: u64,
    /// Bytes of WAL covered (0 when `wal_offset` is 0).
    pub wal_size: u64,
    /// WAL header salt-1 of the source WAL (0 for compactions/snapshots).
    pub wal_salt1: u32,
    /// WAL header salt-2 of the source WAL (0 for compactions/snapshots).
    pub wal_salt2: u32,
    /// Node id of the writer; 0 in Litestream.
    pub node_id: u64,
}

impl Header {
    /// Serializes the header (magic, fields, 20 zero reserved bytes).
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses a header from the first [`HEADER_SIZE`] bytes of `b`.
    ///
    /// Checks only the length and the magic (like Go's `UnmarshalBinary`; the
    /// reserved bytes are ignored); call [`Header::validate`] for the rest.
    pub fn decode(b: &[u8]) -> Result<Header, Error> {
        let b: &[u8; HEADER_SIZE] = b
            .get(..HEADER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| short("ltx header shorter than 100 bytes"))?;
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(Error::BadMagic { got: magic });
        }
        Ok(Header {
            flags: be_u32(b, 4),
            page_size: be_u32(b, 8),
            commit: be_u32(b, 12),
            min_txid: be_u64(b, 16),
            max_txid: be_u64(b, 24),
            timestamp_ms: be_u64(b, 32) as i64,
            pre_apply_checksum: be_u64(b, 40),
            wal_offset: be_u64(b, 48),
            wal_size: be_u64(b, 56),
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: be_u64(b, 72),
        })
    }

    /// Applies the `superfly/ltx` header rules: flags ⊆ `NoChecksum`; valid page
    /// size; `1 <= min_txid <= max_txid`; WAL offset/size non-negative as i64,
    /// non-zero salts require a WAL offset, a WAL size requires a WAL offset;
    /// pre-apply checksum 0 for snapshots and `NoChecksum` files, otherwise
    /// present with the flag bit.
    pub fn validate(&self) -> Result<(), Error> {
        if self.flags & !HEADER_FLAG_MASK != 0 {
            return Err(Error::BadHeaderFlags { flags: self.flags });
        }
        if !is_valid_page_size(self.page_size) {
            return Err(Error::BadPageSize { page_size: self.page_size });
        }
        if self.min_txid == 0 || self.max_txid == 0 || self.min_txid > self.max_txid {
            return Err(Error::BadTxIdRange { min: self.min_txid, max: self.max_txid });
        }
        if self.wal_offset > i64::MAX as u64 {
            return Err(Error::InvalidHeader { reason: "wal offset cannot be negative" });
        }
        if self.wal_size > i64::MAX as u64 {
            return Err(Error::InvalidHeader { reason: "wal size cannot be negative" });
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(Error::InvalidHeader { reason: "wal offset required if salt exists" });
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err(Error::InvalidHeader { reason: "wal offset required if wal size exists" });
        }
        if self.is_snapshot() {
            if self.pre_apply_checksum != 0 {
                return Err(Error::InvalidHeader { reason: "pre-apply checksum must be zero on snapshots" });
            }
        } else if self.no_checksum() {
            if self.pre_apply_checksum != 0 {
                return Err(Error::InvalidHeader { reason: "pre-apply checksum not allowed with NoChecksum flag" });
            }
        } else if self.pre_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidHeader {
                reason: "pre-apply checksum required (with flag bit) on non-snapshot files",
            });
        }
        Ok(())
    }

    /// `true` when `min_txid == 1`: the file must contain every page `1..=commit`
    /// except the lock page.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    /// `true` when the `NoChecksum` flag is set (always, for Litestream v0.5 files).
    pub fn no_checksum(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM != 0
    }

    /// The lock page number for this header's page size.
    pub fn lock_pgno(&self) -> u32 {
        lock_pgno(self.page_size)
    }

    /// The last page number a snapshot with this header must contain
    /// (`commit`, or `commit - 1` when `commit` is the lock page; 0 when empty).
    pub(crate) fn last_snapshot_pgno(&self) -> u32 {
        if self.commit != 0 && self.commit == self.lock_pgno() { self.commit - 1 } else { self.commit }
    }
}

/// The 16-byte LTX trailer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Trailer {
    /// Rolling database checksum after applying; 0 for `NoChecksum` files.
    pub post_apply_checksum: u64,
    /// `CHECKSUM_FLAG | crc64` over the whole file up to (excluding) this field.
    pub file_checksum: u64,
}

impl Trailer {
    /// Serializes the trailer.
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    /// Parses a trailer from the first [`TRAILER_SIZE`] bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<Trailer, Error> {
        let b: &[u8; TRAILER_SIZE] = b
            .get(..TRAILER_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| short("ltx trailer shorter than 16 bytes"))?;
        Ok(Trailer { post_apply_checksum: be_u64(b, 0), file_checksum: be_u64(b, 8) })
    }

    /// Applies the `superfly/ltx` trailer rules against `header`: post-apply
    /// checksum 0 for `NoChecksum` files, else present with the flag bit; file
    /// checksum present with the flag bit.
    pub fn validate(&self, header: &Header) -> Result<(), Error> {
        if header.no_checksum() {
            if self.post_apply_checksum != 0 {
                return Err(Error::InvalidTrailer { reason: "post-apply checksum not allowed with NoChecksum flag" });
            }
        } else if self.post_apply_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidTrailer { reason: "post-apply checksum required (with flag bit)" });
        }
        if self.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(Error::InvalidTrailer { reason: "file checksum missing or without flag bit" });
        }
        Ok(())
    }
}

/// The 6-byte header that precedes each page frame. All zero = end of page block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PageHeader {
    /// 1-based page number (0 only in the terminator).
    pub pgno: u32,
    /// Page flags; only [`PAGE_FLAG_SIZE`] is valid.
    pub flags: u16,
}

impl PageHeader {
    /// Serializes the page header.
    pub fn encode(&self) -> [u8; PAGE_HEADER_SIZE] {
        let mut b = [0u8; PAGE_HEADER_SIZE];
        b[0..4].copy_from_slice(&self.pgno.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b
    }

    /// Parses a page header (no validation).
    pub fn decode(b: &[u8; PAGE_HEADER_SIZE]) -> PageHeader {
        PageHeader { pgno: u32::from_be_bytes([b[0], b[1], b[2], b[3]]), flags: u16::from_be_bytes([b[4], b[5]]) }
    }

    /// `true` for the all-zero terminator.
    pub fn is_terminator(&self) -> bool {
        self.pgno == 0 && self.flags == 0
    }

    /// Rejects unknown flags and a zero page number (the terminator is not
    /// validated with this).
    pub fn validate(&self) -> Result<(), Error> {
        if self.pgno == 0 {
            return Err(Error::ZeroPageNumber { flags: self.flags });
        }
        if self.flags & !PAGE_FLAG_SIZE != 0 {
            return Err(Error::BadPageFlags { pgno: self.pgno, flags: self.flags });
        }
        Ok(())
    }

    /// `true` when the LZ4-block encoding (size prefix) is used.
    pub fn has_size(&self) -> bool {
        self.flags & PAGE_FLAG_SIZE != 0
    }
}

fn short(msg: &'static str) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, msg))
}

fn be_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_be_bytes(a)
}

fn be_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 4096,
            commit: 6,
            min_txid: 2,
            max_txid: 2,
            timestamp_ms: 1_795_000_000_123,
            pre_apply_checksum: 0,
            wal_offset: 0x4080,
            wal_size: 0x3048,
            wal_salt1: 0xed32_b2be,
            wal_salt2: 0x249a_d725,
            node_id: 0,
        }
    }

    #[test]
    fn header_round_trip() {
        let h = sample();
        let b = h.encode();
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[4..8], &[0, 0, 0, 2]);
        assert_eq!(&b[8..12], &[0, 0, 0x10, 0]);
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::decode(&b).unwrap(), h);
        h.validate().unwrap();
        // Negative timestamps survive too.
        let h2 = Header { timestamp_ms: -5, node_id: u64::MAX, ..sample() };
        assert_eq!(Header::decode(&h2.encode()).unwrap(), h2);
    }

    #[test]
    fn header_decode_errors() {
        let mut b = sample().encode();
        assert!(matches!(Header::decode(&b[..99]), Err(Error::Io(_))));
        b[0] = b'X';
        assert!(matches!(
            Header::decode(&b),
            Err(Error::BadMagic { got }) if got == *b"XTX1"
        ));
    }

    #[test]
    fn header_validation() {
        let ok = sample();
        type Case = (Header, fn(&Error) -> bool);
        let cases: Vec<Case> = vec![
            (Header { flags: 0x1, ..ok.clone() }, |e| matches!(e, Error::BadHeaderFlags { flags: 1 })),
            (Header { flags: 0x3, ..ok.clone() }, |e| matches!(e, Error::BadHeaderFlags { flags: 3 })),
            (Header { page_size: 1000, ..ok.clone() }, |e| matches!(e, Error::BadPageSize { page_size: 1000 })),
            (Header { page_size: 256, ..ok.clone() }, |e| matches!(e, Error::BadPageSize { .. })),
            (Header { page_size: 131072, ..ok.clone() }, |e| matches!(e, Error::BadPageSize { .. })),
            (Header { min_txid: 0, ..ok.clone() }, |e| matches!(e, Error::BadTxIdRange { .. })),
            (Header { min_txid: 3, max_txid: 2, ..ok.clone() }, |e| {
                matches!(e, Error::BadTxIdRange { min: 3, max: 2 })
            }),
            (Header { wal_offset: 0, wal_size: 0, ..ok.clone() }, |e| matches!(e, Error::InvalidHeader { .. })),
            (Header { wal_offset: 0, wal_salt1: 0, wal_salt2: 0, ..ok.clone() }, |e| {
                matches!(e, Error::InvalidHeader { .. })
            }),
            (Header { pre_apply_checksum: CHECKSUM_FLAG | 5, ..ok.clone() }, |e| {
                matches!(e, Error::InvalidHeader { .. })
            }),
            (Header { min_txid: 1, pre_apply_checksum: CHECKSUM_FLAG | 5, ..ok.clone() }, |e| {
                matches!(e, Error::InvalidHeader { .. })
            }),
            (Header { flags: 0, ..ok.clone() }, |e| matches!(e, Error::InvalidHeader { .. })),
            (Header { flags: 0, pre_apply_checksum: 5, ..ok.clone() }, |e| matches!(e, Error::InvalidHeader { .. })),
            (Header { wal_offset: u64::MAX, ..ok.clone() }, |e| matches!(e, Error::InvalidHeader { .. })),
        ];
        for (h, want) in cases {
            let err = h.validate().expect_err(&format!("{h:?} should be invalid"));
            assert!(want(&err), "{h:?}: unexpected {err}");
        }
        // Valid variations.
        Header { wal_offset: 32, wal_size: 0, wal_salt1: 0, wal_salt2: 0, ..ok.clone() }.validate().unwrap();
        Header { wal_offset: 0, wal_size: 0, wal_salt1: 0, wal_salt2: 0, ..ok.clone() }.validate().unwrap();
        Header { flags: 0, pre_apply_checksum: CHECKSUM_FLAG | 5, ..ok.clone() }.validate().unwrap();
        Header { flags: 0, min_txid: 1, ..ok.clone() }.validate().unwrap();
        Header { commit: 0, ..ok }.validate().unwrap();
    }

    #[test]
    fn trailer_round_trip_and_validation() {
        let t = Trailer { post_apply_checksum: 0, file_checksum: CHECKSUM_FLAG | 0x1234 };
        let b = t.encode();
        assert_eq!(&b[..8], &[0; 8]);
        assert_eq!(Trailer::decode(&b).unwrap(), t);
        assert!(Trailer::decode(&b[..15]).is_err());
        let h = sample();
        t.validate(&h).unwrap();
        let bad_post = Trailer { post_apply_checksum: CHECKSUM_FLAG | 1, ..t };
        assert!(matches!(bad_post.validate(&h), Err(Error::InvalidTrailer { .. })));
        let bad_file = Trailer { file_checksum: 0x1234, ..t };
        assert!(matches!(bad_file.validate(&h), Err(Error::InvalidTrailer { .. })));
        let tracked = Header { flags: 0, pre_apply_checksum: CHECKSUM_FLAG, ..h };
        assert!(t.validate(&tracked).is_err());
        bad_post.validate(&tracked).unwrap();
    }

    #[test]
    fn page_header_round_trip() {
        let p = PageHeader { pgno: 0x0102_0304, flags: PAGE_FLAG_SIZE };
        let b = p.encode();
        assert_eq!(b, [1, 2, 3, 4, 0, 1]);
        assert_eq!(PageHeader::decode(&b), p);
        p.validate().unwrap();
        assert!(PageHeader::default().is_terminator());
        assert!(matches!(PageHeader { pgno: 0, flags: 1 }.validate(), Err(Error::ZeroPageNumber { flags: 1 })));
        assert!(matches!(PageHeader { pgno: 9, flags: 2 }.validate(), Err(Error::BadPageFlags { pgno: 9, flags: 2 })));
    }
}
