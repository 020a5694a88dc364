//! The single error type of the `ltx` module.
//!
//! Owns the [`Error`] enum: every variant carries the offending values so a
//! caller can log a precise reason. It must never wrap errors from outside the
//! module other than [`std::io::Error`], and must never carry borrowed data.

use super::TxId;

/// Everything that can go wrong while encoding, decoding or compacting LTX files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Underlying reader/writer failed (including unexpected end of file).
    #[error("ltx i/o")]
    Io(#[from] std::io::Error),
    /// The first four bytes are not `LTX1`.
    #[error("ltx: bad magic {got:02x?}, want \"LTX1\"")]
    BadMagic {
        /// The bytes found at offset 0.
        got: [u8; 4],
    },
    /// Header flags other than `NoChecksum` (0x2) are set.
    #[error("ltx: invalid header flags 0x{flags:08x}")]
    BadHeaderFlags {
        /// The flags found.
        flags: u32,
    },
    /// Page size is not a power of two in 512..=65536.
    #[error("ltx: invalid page size {page_size}")]
    BadPageSize {
        /// The page size found.
        page_size: u32,
    },
    /// `min_txid` is 0 or greater than `max_txid`.
    #[error("ltx: invalid transaction id range {min:016x}-{max:016x}")]
    BadTxIdRange {
        /// Header MinTXID.
        min: TxId,
        /// Header MaxTXID.
        max: TxId,
    },
    /// A header rule about checksums or WAL fields is violated.
    #[error("ltx: invalid header: {reason}")]
    InvalidHeader {
        /// Which rule.
        reason: &'static str,
    },
    /// A trailer rule about checksums is violated.
    #[error("ltx: invalid trailer: {reason}")]
    InvalidTrailer {
        /// Which rule.
        reason: &'static str,
    },
    /// The file checksum stored in the trailer does not match the contents.
    #[error("ltx: file checksum mismatch: trailer has {want:016x}, contents give {got:016x}")]
    ChecksumMismatch {
        /// Value stored in the file.
        want: u64,
        /// Value computed over the contents.
        got: u64,
    },
    /// A page header carries flags other than `PAGE_FLAG_SIZE`.
    #[error("ltx: page {pgno}: invalid page flags 0x{flags:04x}")]
    BadPageFlags {
        /// Page number of the frame.
        pgno: u32,
        /// The flags found.
        flags: u16,
    },
    /// A page header has page number 0 but is not the all-zero terminator.
    #[error("ltx: page header with page number 0 and flags 0x{flags:04x}")]
    ZeroPageNumber {
        /// The flags found.
        flags: u16,
    },
    /// Page numbers are not strictly ascending.
    #[error("ltx: out-of-order page numbers: {prev} then {pgno}")]
    PageOutOfOrder {
        /// Previous page number.
        prev: u32,
        /// Offending page number.
        pgno: u32,
    },
    /// A page number exceeds the header's commit (database size in pages).
    #[error("ltx: page {pgno} beyond commit size {commit}")]
    PageBeyondCommit {
        /// Offending page number.
        pgno: u32,
        /// Header commit.
        commit: u32,
    },
    /// The SQLite lock page was present.
    #[error("ltx: lock page {pgno} must not be stored")]
    LockPagePresent {
        /// The lock page number.
        pgno: u32,
    },
    /// A snapshot (MinTXID 1) skips or repeats a page.
    #[error("ltx: nonsequential page numbers in snapshot: {prev} then {pgno}")]
    NonsequentialSnapshotPage {
        /// Previous page number (0 = none yet).
        prev: u32,
        /// Offending page number.
        pgno: u32,
    },
    /// A snapshot ended before reaching its commit page.
    #[error("ltx: snapshot ends at page {last} but commit is {commit}")]
    SnapshotIncomplete {
        /// Last page written/read (0 = none).
        last: u32,
        /// Header commit.
        commit: u32,
    },
    /// A page buffer does not have exactly `page_size` bytes.
    #[error("ltx: page buffer is {got} bytes, page size is {want}")]
    PageBufferSize {
        /// Page size.
        want: usize,
        /// Buffer length given.
        got: usize,
    },
    /// A compressed page does not decompress to exactly `page_size` bytes.
    #[error("ltx: page {pgno} decompresses to {got} bytes, want {want}")]
    DecompressedSize {
        /// Page number of the frame.
        pgno: u32,
        /// Page size.
        want: usize,
        /// Bytes produced (may be a lower bound when the data overflowed).
        got: usize,
    },
    /// A compressed payload is larger than any valid compression of a page.
    #[error("ltx: page {pgno} compressed size {size} exceeds limit {max}")]
    CompressedSizeTooLarge {
        /// Page number of the frame.
        pgno: u32,
        /// Size found.
        size: u64,
        /// Largest acceptable size.
        max: u64,
    },
    /// LZ4 data is malformed (bad block, bad frame header, bad xxhash, ...).
    #[error("ltx: page {pgno}: bad lz4 data: {reason}")]
    Lz4 {
        /// Page number of the frame.
        pgno: u32,
        /// Description from the LZ4 layer.
        reason: String,
    },
    /// LZ4 compression failed (should not happen with a correctly sized buffer).
    #[error("ltx: page {pgno}: lz4 compression failed: {reason}")]
    Compress {
        /// Page number being encoded.
        pgno: u32,
        /// Description from the LZ4 layer.
        reason: String,
    },
    /// The page index is malformed or disagrees with the page frames.
    #[error("ltx: page index mismatch: {reason}")]
    IndexMismatch {
        /// What disagreed.
        reason: String,
    },
    /// A ranged read did not include the whole page index; fetch at least
    /// `needed` bytes from the end of the file and retry.
    #[error("ltx: page index needs the last {needed} bytes of the file, got {got}")]
    IndexTruncated {
        /// Tail length required.
        needed: u64,
        /// Tail length supplied.
        got: u64,
    },
    /// A frame handed to [`decode_page_frame`](super::decode_page_frame) has a
    /// different length than its contents imply.
    #[error("ltx: page frame is {got} bytes, contents imply {want}")]
    FrameLength {
        /// Length implied by the frame's contents.
        want: u64,
        /// Length given.
        got: u64,
    },
    /// Compaction inputs are not contiguous: `min <= prev_max + 1 && max > prev_max` fails.
    #[error("ltx: non-contiguous compaction input {min:016x}-{max:016x} after max {prev_max:016x}")]
    NonContiguous {
        /// MaxTXID of the previous input.
        prev_max: TxId,
        /// MinTXID of the offending input.
        min: TxId,
        /// MaxTXID of the offending input.
        max: TxId,
    },
    /// Compaction inputs have different page sizes.
    #[error("ltx: compaction input page size {got} differs from {want}")]
    PageSizeMismatch {
        /// Page size of the first input.
        want: u32,
        /// Page size of the offending input.
        got: u32,
    },
    /// The compactor was given no inputs.
    #[error("ltx: compaction needs at least one input")]
    NoInputs,
    /// One compaction input is unreadable (the others may be fine): which one, and why.
    #[error("ltx: compaction input {index}")]
    Input {
        /// Position of the input in the list given to the compactor.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    /// The compaction input this error is about, if it is about one.
    pub fn input(&self) -> Option<usize> {
        match self {
            Error::Input { index, .. } => Some(*index),
            _ => None,
        }
    }
}
