//! CRC-64/GO-ISO checksums as used by LTX (Go `hash/crc64` with the ISO table).
//!
//! Owns the file-checksum digest and the per-page rolling-checksum helper. It
//! must never use another CRC variant (Litestream's own docs wrongly say ECMA)
//! and must never apply [`CHECKSUM_FLAG`] implicitly inside [`crc64`].

use crc_fast::CrcAlgorithm::Crc64GoIso;

/// Bit 63, OR-ed into every stored checksum so a valid checksum is never zero.
pub const CHECKSUM_FLAG: u64 = 1 << 63;

/// Plain CRC-64/GO-ISO of `data` (no flag bit).
pub fn crc64(data: &[u8]) -> u64 {
    crc_fast::checksum(Crc64GoIso, data)
}

/// Rolling-checksum contribution of one page:
/// `CHECKSUM_FLAG | crc64(be32(pgno) ‖ data)`. Only needed for files without
/// the `NoChecksum` flag (Litestream v0.5 never writes those).
pub fn checksum_page(pgno: u32, data: &[u8]) -> u64 {
    let mut d = Crc64::new();
    d.update(&pgno.to_be_bytes());
    d.update(data);
    CHECKSUM_FLAG | d.finish()
}

/// Incremental CRC-64/GO-ISO digest.
pub struct Crc64 {
    digest: crc_fast::Digest,
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64").finish_non_exhaustive()
    }
}

impl Crc64 {
    /// A fresh digest.
    pub fn new() -> Self {
        Self { digest: crc_fast::Digest::new(Crc64GoIso) }
    }

    /// Feeds `data` into the digest.
    pub fn update(&mut self, data: &[u8]) {
        self.digest.update(data);
    }

    /// The CRC of everything fed so far (no flag bit); the digest stays usable.
    pub fn finish(&self) -> u64 {
        self.digest.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answer() {
        assert_eq!(crc64(b"123456789"), 0xb909_56c7_75a4_1001);
        assert_eq!(crc64(b""), 0);
    }

    #[test]
    fn incremental_matches_one_shot() {
        let mut d = Crc64::new();
        d.update(b"1234");
        assert_eq!(d.finish(), crc64(b"1234"));
        d.update(b"56789");
        assert_eq!(d.finish(), 0xb909_56c7_75a4_1001);
    }

    #[test]
    fn page_checksum_has_flag() {
        let page = [7u8; 512];
        let ck = checksum_page(3, &page);
        assert_ne!(ck & CHECKSUM_FLAG, 0);
        let mut buf = 3u32.to_be_bytes().to_vec();
        buf.extend_from_slice(&page);
        assert_eq!(ck, CHECKSUM_FLAG | crc64(&buf));
    }
}
