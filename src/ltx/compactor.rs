//! K-way merge of contiguous LTX files into one (Litestream's `ltx.Compactor`).
//!
//! Owns the compaction rules: inputs ordered by TXID and contiguous
//! (`min <= prev_max + 1 && max > prev_max`, overlaps allowed), equal page
//! sizes, newest version of each page wins, pages beyond the final commit are
//! dropped, and the output header is `min = first.min`, `max = last.max`,
//! `timestamp = last.timestamp`, `pre_apply = first.pre_apply`,
//! `flags = NoChecksum`, WAL fields and node id zero, `commit = last.commit`.
//! It streams: it must never hold more than one page per input in memory, and
//! must never report success unless every input verified (checksums, index).

use std::io::{Read, Write};

use super::{Decoder, Encoder, Error, HEADER_FLAG_NO_CHECKSUM, Header, PageEncoding, Trailer, TxId};

/// `true` when a file `min..=max` can follow a chain ending at `prev_max`
/// (Litestream's `IsContiguous`).
pub fn is_contiguous(prev_max: TxId, min: TxId, max: TxId) -> bool {
    min <= prev_max.saturating_add(1) && max > prev_max
}

struct Input<R: Read> {
    dec: Decoder<R>,
    /// Page number currently held in `buf`, `None` once the input is exhausted.
    pgno: Option<u32>,
    buf: Vec<u8>,
}

impl<R: Read> Input<R> {
    fn advance(&mut self, index: usize) -> Result<(), Error> {
        self.pgno = self.dec.decode_page(&mut self.buf).map_err(|e| in_input(index, e))?;
        Ok(())
    }
}

/// `e` attributed to compaction input `index`.
fn in_input(index: usize, e: Error) -> Error {
    Error::Input { index, source: Box::new(e) }
}

/// Merges N LTX inputs (ordered by TXID) into one LTX file.
pub struct Compactor<R: Read> {
    inputs: Vec<Input<R>>,
    header: Header,
}

impl<R: Read> std::fmt::Debug for Compactor<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compactor").field("inputs", &self.inputs.len()).field("header", &self.header).finish()
    }
}

impl<R: Read> Compactor<R> {
    /// Reads each input's header, checks page sizes and TXID contiguity, and
    /// derives the output header.
    pub fn new(readers: impl IntoIterator<Item = R>) -> Result<Self, Error> {
        let decoders = readers
            .into_iter()
            .enumerate()
            .map(|(i, r)| Decoder::new(r).map_err(|e| in_input(i, e)))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_decoders(decoders)
    }

    /// Like [`Compactor::new`] for decoders that have not decoded any page yet.
    pub fn from_decoders(decoders: Vec<Decoder<R>>) -> Result<Self, Error> {
        let (first, last) = match (decoders.first(), decoders.last()) {
            (Some(f), Some(l)) => (f.header(), l.header()),
            _ => return Err(Error::NoInputs),
        };
        for (i, pair) in decoders.windows(2).enumerate() {
            let (prev, cur) = (pair[0].header(), pair[1].header());
            if cur.page_size != first.page_size {
                return Err(in_input(i + 1, Error::PageSizeMismatch { want: first.page_size, got: cur.page_size }));
            }
            if !is_contiguous(prev.max_txid, cur.min_txid, cur.max_txid) {
                let e = Error::NonContiguous { prev_max: prev.max_txid, min: cur.min_txid, max: cur.max_txid };
                return Err(in_input(i + 1, e));
            }
        }
        let header = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: first.page_size,
            commit: last.commit,
            min_txid: first.min_txid,
            max_txid: last.max_txid,
            timestamp_ms: last.timestamp_ms,
            pre_apply_checksum: first.pre_apply_checksum,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        };
        header.validate()?;
        let ps = header.page_size as usize;
        let inputs = decoders.into_iter().map(|dec| Input { dec, pgno: None, buf: vec![0u8; ps] }).collect();
        Ok(Self { inputs, header })
    }

    /// The header the output file will carry.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Makes the output a snapshot (`MinTXID = 1`) of the state at the last input's
    /// TXID. Only inputs that together hold every page up to the commit make one (a
    /// full-page file does, alone): otherwise [`Compactor::compact`] fails with
    /// `NonsequentialSnapshotPage` or `SnapshotIncomplete` and nothing is produced.
    pub fn into_snapshot(mut self) -> Self {
        self.header.min_txid = 1;
        self.header.pre_apply_checksum = 0;
        self
    }

    /// Streams the merged file to `w` using `encoding` for its pages, verifies
    /// every input to its trailer, and returns the writer and output trailer.
    /// On error the output is incomplete and must be discarded.
    pub fn compact<W: Write>(mut self, w: W, encoding: PageEncoding) -> Result<(W, Trailer), Error> {
        let mut enc = Encoder::new(w, &self.header, encoding)?;
        let commit = self.header.commit;
        for (i, input) in self.inputs.iter_mut().enumerate() {
            input.advance(i)?;
        }
        while let Some(pgno) = self.inputs.iter().filter_map(|i| i.pgno).min() {
            if pgno <= commit
                && let Some(newest) = self.inputs.iter().rev().find(|i| i.pgno == Some(pgno))
            {
                enc.encode_page(pgno, &newest.buf)?;
            }
            for (i, input) in self.inputs.iter_mut().enumerate() {
                if input.pgno == Some(pgno) {
                    input.advance(i)?;
                }
            }
        }
        for (i, input) in self.inputs.into_iter().enumerate() {
            input.dec.finish().map_err(|e| in_input(i, e))?;
        }
        enc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(ps: u32, min: TxId, max: TxId, commit: u32, ts: i64, pages: &[(u32, u8)]) -> Vec<u8> {
        let h = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: ps,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: ts,
            wal_offset: 32,
            wal_size: 4096,
            wal_salt1: 7,
            wal_salt2: 8,
            ..Header::default()
        };
        let mut e = Encoder::new(Vec::new(), &h, PageEncoding::Lz4Frame).unwrap();
        for &(p, v) in pages {
            e.encode_page(p, &vec![v; ps as usize]).unwrap();
        }
        e.finish().unwrap().0
    }

    fn read_all(b: &[u8]) -> (Header, Vec<(u32, u8)>) {
        let mut d = Decoder::new(b).unwrap();
        let h = d.header().clone();
        let mut buf = vec![0u8; h.page_size as usize];
        let mut out = Vec::new();
        while let Some(p) = d.decode_page(&mut buf).unwrap() {
            assert!(buf.iter().all(|&x| x == buf[0]));
            out.push((p, buf[0]));
        }
        d.finish().unwrap();
        (h, out)
    }

    #[test]
    fn merges_newest_wins_and_truncates() {
        let a = file(512, 1, 1, 4, 10, &[(1, 1), (2, 1), (3, 1), (4, 1)]);
        let b = file(512, 2, 3, 6, 20, &[(2, 2), (5, 2), (6, 2)]);
        let c = file(512, 4, 4, 5, 30, &[(1, 3), (5, 3)]);
        let comp = Compactor::new([&a[..], &b[..], &c[..]]).unwrap();
        let want = Header {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 5,
            min_txid: 1,
            max_txid: 4,
            timestamp_ms: 30,
            ..Header::default()
        };
        assert_eq!(comp.header(), &want);
        for enc in [PageEncoding::Lz4Block, PageEncoding::Lz4Frame] {
            let comp = Compactor::new([&a[..], &b[..], &c[..]]).unwrap();
            let (out, trailer) = comp.compact(Vec::new(), enc).unwrap();
            assert_eq!(trailer.post_apply_checksum, 0);
            let (h, pages) = read_all(&out);
            assert_eq!(h, want);
            assert_eq!(pages, vec![(1, 3), (2, 2), (3, 1), (4, 1), (5, 3)]);
        }
        // Incremental-only compaction (not a snapshot) keeps only touched pages.
        let (out, _) = Compactor::new([&b[..], &c[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block).unwrap();
        let (h, pages) = read_all(&out);
        assert_eq!((h.min_txid, h.max_txid, h.commit, h.timestamp_ms), (2, 4, 5, 30));
        assert_eq!(pages, vec![(1, 3), (2, 2), (5, 3)]);
    }

    #[test]
    fn single_input_and_overlap() {
        let a = file(512, 3, 5, 2, 10, &[(2, 9)]);
        let b = file(512, 4, 7, 2, 11, &[(1, 8)]); // overlapping but contiguous
        let (out, _) = Compactor::new([&a[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block).unwrap();
        assert_eq!(read_all(&out).1, vec![(2, 9)]);
        let (out, _) = Compactor::new([&a[..], &b[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block).unwrap();
        let (h, pages) = read_all(&out);
        assert_eq!((h.min_txid, h.max_txid), (3, 7));
        assert_eq!(pages, vec![(1, 8), (2, 9)]);
    }

    #[test]
    fn a_full_page_file_alone_becomes_a_snapshot_and_a_partial_one_does_not() {
        let full = file(512, 7, 7, 3, 70, &[(1, 1), (2, 2), (3, 3)]);
        let (out, _) =
            Compactor::new([&full[..]]).unwrap().into_snapshot().compact(Vec::new(), PageEncoding::Lz4Block).unwrap();
        let (h, pages) = read_all(&out);
        assert_eq!((h.min_txid, h.max_txid, h.commit, h.timestamp_ms), (1, 7, 3, 70));
        assert_eq!(pages, vec![(1, 1), (2, 2), (3, 3)]);
        let partial = file(512, 8, 8, 3, 80, &[(2, 9)]);
        let err = Compactor::new([&partial[..]])
            .unwrap()
            .into_snapshot()
            .compact(Vec::new(), PageEncoding::Lz4Block)
            .unwrap_err();
        assert!(matches!(err, Error::NonsequentialSnapshotPage { .. } | Error::SnapshotIncomplete { .. }), "{err:?}");
    }

    #[test]
    fn rejects_bad_inputs() {
        let a = file(512, 1, 2, 1, 1, &[(1, 1)]);
        let gap = file(512, 4, 4, 1, 2, &[(1, 2)]);
        let stale = file(512, 2, 2, 1, 2, &[(1, 2)]);
        let big = file(1024, 3, 3, 1, 2, &[(1, 2)]);
        let inner = |r: Result<Compactor<&[u8]>, Error>| match r {
            Err(Error::Input { index, source }) => (index, *source),
            other => panic!("not an input error: {other:?}"),
        };
        assert!(matches!(
            inner(Compactor::new([&a[..], &gap[..]])),
            (1, Error::NonContiguous { prev_max: 2, min: 4, max: 4 })
        ));
        assert!(matches!(
            inner(Compactor::new([&a[..], &stale[..]])),
            (1, Error::NonContiguous { prev_max: 2, min: 2, max: 2 })
        ));
        assert!(matches!(
            inner(Compactor::new([&a[..], &big[..]])),
            (1, Error::PageSizeMismatch { want: 512, got: 1024 })
        ));
        assert!(matches!(Compactor::<&[u8]>::new([]), Err(Error::NoInputs)));
        // A corrupt input fails the compaction even though its pages merged.
        let b = file(512, 3, 3, 1, 2, &[(1, 2)]);
        let mut bad = b.clone();
        let n = bad.len();
        bad[n - 1] ^= 1;
        let err = Compactor::new([&a[..], &bad[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block).unwrap_err();
        assert_eq!(err.input(), Some(1), "the corrupt input is named: {err:?}");
        assert!(matches!(err, Error::Input { source, .. } if matches!(*source, Error::ChecksumMismatch { .. })));
        // A torn (empty) input is named too.
        let torn = Compactor::new([&a[..], &[][..]]).unwrap_err();
        assert_eq!(torn.input(), Some(1), "{torn:?}");
        // A snapshot-range output with a hole cannot be produced.
        let holey = file(512, 1, 1, 2, 1, &[(1, 1), (2, 1)]);
        let grow = file(512, 2, 2, 4, 1, &[(4, 1)]);
        assert!(matches!(
            Compactor::new([&holey[..], &grow[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block),
            Err(Error::NonsequentialSnapshotPage { prev: 2, pgno: 4 })
        ));
        assert!(is_contiguous(0, 1, 1));
        assert!(is_contiguous(u64::MAX - 1, u64::MAX, u64::MAX));
        assert!(!is_contiguous(u64::MAX, 1, u64::MAX));
    }
}
