//! Property-based fuzzing (proptest) of everything that reads hostile bytes or text:
//! the WAL reader (`src/wal.rs`), the LTX decoder, page index, page frames and compactor
//! (`src/ltx/`), the config parser and the seed's flags (`src/config/`), storage URLs,
//! tenant file names, and the validation of what a hook returns (`src/hooks`).
//!
//! Each property feeds generated input — random bytes, and valid files or configs with
//! random damage — and asserts that the code returns a result or an error, never
//! panics, and never accepts garbage (a damaged file that decodes must decode to the
//! original pages; a WAL frame after damage is never read as committed).
//!
//! `cargo test --test fuzz` runs a short pass (a few hundred cases per property, a few
//! seconds). The long run is the same tests with more cases, e.g.
//!
//! ```sh
//! PROPTEST_CASES=200000 cargo test --release --locked --test fuzz -- --test-threads 2
//! ```
//!
//! (docs/operations.md, "Fuzzing"). A failing case is printed shrunk; it becomes a
//! regression test below, named after the bug, and the bug is fixed.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use litefleet::config::Config;
use litefleet::hooks::{Decision, MAX_LABEL_KEY, MAX_LABEL_VALUE, MAX_LABELS, check_accept};
use litefleet::ltx::{self, Decoder, Encoder, Header, PageEncoding};
use litefleet::tenant::{self, NonGuidPolicy, Prefix, TenantId};
use litefleet::wal;
use proptest::prelude::*;
use proptest::test_runner::Config as Runner;

/// `cases` per property, unless `PROPTEST_CASES` says otherwise (the long run).
fn runner(cases: u32) -> Runner {
    let mut c = Runner::default();
    if std::env::var("PROPTEST_CASES").is_err() {
        c.cases = cases;
    }
    c.failure_persistence = None;
    c
}

/// Damage done to a valid input.
#[derive(Clone, Debug)]
enum Damage {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize, len: usize },
    Overwrite { at: usize, bytes: Vec<u8> },
    Append { bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(at, mask)| Damage::Flip { at, mask }),
        2 => any::<usize>().prop_map(|at| Damage::Truncate { at }),
        1 => (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Damage::Insert { at, byte }),
        1 => (any::<usize>(), 1usize..64).prop_map(|(at, len)| Damage::Remove { at, len }),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Damage::Overwrite { at, bytes }),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(|bytes| Damage::Append { bytes }),
    ]
}

/// Applies `d` to `b`; returns the first byte offset that changed.
fn apply(b: &mut Vec<u8>, d: &Damage) -> usize {
    let n = b.len().max(1);
    match d {
        Damage::Flip { at, mask } => {
            let at = at % n;
            if let Some(x) = b.get_mut(at) {
                *x ^= mask;
            }
            at
        }
        Damage::Truncate { at } => {
            let at = at % n;
            b.truncate(at);
            at
        }
        Damage::Insert { at, byte } => {
            let at = at % (b.len() + 1);
            b.insert(at, *byte);
            at
        }
        Damage::Remove { at, len } => {
            let at = at % n;
            let end = (at + len).min(b.len());
            b.drain(at.min(end)..end);
            at
        }
        Damage::Overwrite { at, bytes } => {
            let at = at % n;
            for (i, x) in bytes.iter().enumerate() {
                if let Some(y) = b.get_mut(at + i) {
                    *y = *x;
                }
            }
            at
        }
        Damage::Append { bytes } => {
            let at = b.len();
            b.extend_from_slice(bytes);
            at
        }
    }
}

// ───────────────────────────── WAL ─────────────────────────────

/// A frame of a synthesized WAL: page number, commit size (0: not a commit), page seed.
type Frame = (u32, u32, u8);

/// Writes a valid WAL: the header and every frame with SQLite's checksums, in either
/// byte order.
fn synth_wal(big_endian: bool, page_size: u32, salts: (u32, u32), frames: &[Frame]) -> Vec<u8> {
    let magic = if big_endian { wal::MAGIC_BE } else { wal::MAGIC_LE };
    let mut b = Vec::new();
    b.extend_from_slice(&magic.to_be_bytes());
    b.extend_from_slice(&wal::VERSION.to_be_bytes());
    b.extend_from_slice(&(if page_size == 65536 { 1 } else { page_size }).to_be_bytes());
    b.extend_from_slice(&7u32.to_be_bytes());
    b.extend_from_slice(&salts.0.to_be_bytes());
    b.extend_from_slice(&salts.1.to_be_bytes());
    let mut ck = wal::checksum_words(big_endian, (0, 0), &b[..24]);
    b.extend_from_slice(&ck.0.to_be_bytes());
    b.extend_from_slice(&ck.1.to_be_bytes());
    for &(pgno, commit, seed) in frames {
        let page: Vec<u8> = (0..page_size).map(|i| (i as u8).wrapping_mul(seed) ^ seed).collect();
        let mut h = Vec::new();
        h.extend_from_slice(&pgno.to_be_bytes());
        h.extend_from_slice(&commit.to_be_bytes());
        ck = wal::checksum_words(big_endian, ck, &h);
        ck = wal::checksum_words(big_endian, ck, &page);
        h.extend_from_slice(&salts.0.to_be_bytes());
        h.extend_from_slice(&salts.1.to_be_bytes());
        h.extend_from_slice(&ck.0.to_be_bytes());
        h.extend_from_slice(&ck.1.to_be_bytes());
        b.extend_from_slice(&h);
        b.extend_from_slice(&page);
    }
    b
}

fn frames() -> impl Strategy<Value = Vec<Frame>> {
    prop::collection::vec((1u32..40, prop_oneof![3 => Just(0u32), 1 => 1u32..60], any::<u8>()), 0..24)
}

fn temp_file(bytes: &[u8]) -> (tempfile::NamedTempFile, std::fs::File) {
    let mut t = tempfile::NamedTempFile::new().expect("temp file");
    t.write_all(bytes).expect("write");
    t.flush().expect("flush");
    let f = std::fs::File::open(t.path()).expect("open");
    (t, f)
}

/// The committed pages (page → frame offset of its page image) of the first `n`
/// transactions of `frames`, as the reader must report them.
fn committed(frames: &[Frame], page_size: u32, n: u64) -> BTreeMap<u32, u64> {
    let fs = u64::from(page_size) + wal::FRAME_HEADER_SIZE;
    let (mut out, mut pending, mut seen) = (BTreeMap::new(), Vec::new(), 0);
    for (i, &(pgno, commit, _)) in frames.iter().enumerate() {
        if seen == n {
            break;
        }
        pending.push((pgno, wal::HEADER_SIZE + i as u64 * fs + wal::FRAME_HEADER_SIZE));
        if commit != 0 {
            out.extend(pending.drain(..));
            seen += 1;
        }
    }
    out
}

/// The scan's own invariants: everything it reports lies inside the file and after `from`.
fn check_segment(seg: &wal::Segment, h: &wal::Header, from: u64, len: u64) {
    let fs = h.frame_size();
    if let Some(end) = seg.end {
        assert!(end.offset <= len && end.offset >= from, "end {} outside {from}..={len}", end.offset);
        assert_eq!(end.offset - from, seg.frames * fs, "frames and end disagree");
    }
    assert!(seg.transactions <= seg.frames);
    for (&pgno, &at) in &seg.pages {
        assert!(pgno > 0 && at >= from && at + u64::from(h.page_size) <= len, "page {pgno} at {at}");
    }
}

proptest! {
    #![proptest_config(runner(256))]

    /// Any 32 bytes: a header or an error.
    #[test]
    fn wal_header_of_random_bytes(b in prop::array::uniform32(any::<u8>())) {
        let _ = wal::Header::decode(&b);
    }

    /// A valid WAL in either byte order reads back exactly; with damage anywhere, no
    /// frame at or after the damage is ever taken as committed.
    #[test]
    fn wal_scan_of_damaged_logs(
        be in any::<bool>(),
        ps in prop::sample::select(vec![512u32, 1024, 4096]),
        salts in any::<(u32, u32)>(),
        fr in frames(),
        d in damage(),
        budget in prop_oneof![Just(u64::MAX), 1u64..100_000],
    ) {
        let good = synth_wal(be, ps, salts, &fr);
        let commits = fr.iter().filter(|f| f.1 != 0).count() as u64;
        let (_t, f) = temp_file(&good);
        let h = wal::Header::read(&f).unwrap().expect("a header");
        let (seg, _) = wal::scan(&f, &h, wal::Cursor::start(&h), u64::MAX).unwrap();
        prop_assert_eq!(seg.transactions, commits);
        prop_assert_eq!(&seg.pages, &committed(&fr, ps, commits));

        let mut bad = good.clone();
        apply(&mut bad, &d);
        // Where the bytes really differ first (an overwrite may write what was there).
        let at = good.iter().zip(&bad).position(|(a, b)| a != b).unwrap_or(good.len().min(bad.len())) as u64;
        let (_t2, f2) = temp_file(&bad);
        let Ok(Some(h2)) = wal::Header::read(&f2) else { return Ok(()) };
        let Ok((seg2, _)) = wal::scan(&f2, &h2, wal::Cursor::start(&h2), budget) else { return Ok(()) };
        check_segment(&seg2, &h2, wal::HEADER_SIZE, bad.len() as u64);
        if h2 == h && at >= wal::HEADER_SIZE {
            // Damage past the header: what is read is a prefix of the true history that
            // ends before the damaged frame.
            prop_assert_eq!(&seg2.pages, &committed(&fr, ps, seg2.transactions));
            if let Some(end) = seg2.end {
                prop_assert!(end.offset <= at, "read a damaged frame: end {} damage {at}", end.offset);
            }
        }
    }

    /// Resuming at any offset with any running checksum: no panic, nothing outside the file.
    #[test]
    fn wal_scan_from_any_cursor(
        bytes in prop::collection::vec(any::<u8>(), 0..20_000),
        fr in frames(),
        offset in prop_oneof![0u64..20_000, any::<u64>()],
        checksum in any::<(u32, u32)>(),
    ) {
        let mut b = synth_wal(false, 512, (1, 2), &fr);
        b.extend_from_slice(&bytes);
        let (_t, f) = temp_file(&b);
        let h = wal::Header::read(&f).unwrap().expect("a header");
        if let Ok((seg, _)) = wal::scan(&f, &h, wal::Cursor { offset, checksum }, u64::MAX) {
            check_segment(&seg, &h, offset, b.len() as u64);
        }
        let _ = wal::read_frame_header(&f, offset);
    }
}

// ───────────────────────────── LTX ─────────────────────────────

/// A valid LTX file: its header, its pages, and its bytes.
#[derive(Clone, Debug)]
struct LtxCase {
    header: Header,
    pages: Pages,
    encoding: PageEncoding,
}

fn ltx_case() -> impl Strategy<Value = LtxCase> {
    (
        prop::sample::select(vec![512u32, 1024, 4096]),
        1u32..24,
        any::<bool>(),
        1u64..1000,
        0u64..5,
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 24),
    )
        .prop_map(|(ps, commit, snapshot, min, span, frame, seeds)| {
            let min_txid = if snapshot { 1 } else { min + 1 };
            let header = Header {
                flags: ltx::HEADER_FLAG_NO_CHECKSUM,
                page_size: ps,
                commit,
                min_txid,
                max_txid: min_txid + span,
                timestamp_ms: 1_700_000_000_000,
                ..Header::default()
            };
            let pgnos: Vec<u32> = if snapshot {
                (1..=commit).collect()
            } else {
                (1..=commit).filter(|p| seeds[*p as usize % seeds.len()] % 3 != 0).collect()
            };
            let pages = pgnos
                .into_iter()
                .map(|p| {
                    let s = seeds[p as usize % seeds.len()];
                    // Half compressible (runs), half noise.
                    let data = (0..ps as usize)
                        .map(|i| if i < ps as usize / 2 { s } else { (i as u8).wrapping_mul(s | 1) ^ (p as u8) })
                        .collect();
                    (p, data)
                })
                .collect();
            let encoding = if frame { PageEncoding::Lz4Frame } else { PageEncoding::Lz4Block };
            LtxCase { header, pages, encoding }
        })
}

fn encode(c: &LtxCase) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), &c.header, c.encoding).expect("encoder");
    for (p, d) in &c.pages {
        e.encode_page(*p, d).expect("page");
    }
    e.finish().expect("finish").0
}

/// Page numbers and contents, in file order.
type Pages = Vec<(u32, Vec<u8>)>;

/// Header and pages of a file, or the decoder's error.
fn decode_all(b: &[u8]) -> Result<(Header, Pages), ltx::Error> {
    let mut d = Decoder::new(b)?;
    let header = d.header().clone();
    let mut pages = Vec::new();
    let mut buf = vec![0u8; header.page_size as usize];
    while let Some(p) = d.decode_page(&mut buf)? {
        pages.push((p, buf.clone()));
    }
    d.finish()?;
    Ok((header, pages))
}

proptest! {
    #![proptest_config(runner(256))]

    /// A valid file decodes to what was encoded; a damaged one is refused, or (a change
    /// the LZ4 payload absorbs) decodes to exactly the same pages — never to garbage.
    #[test]
    fn ltx_decoder_never_accepts_garbage(c in ltx_case(), ds in prop::collection::vec(damage(), 1..4)) {
        let good = encode(&c);
        let (h, pages) = decode_all(&good).expect("valid file");
        prop_assert_eq!(&h, &c.header);
        prop_assert_eq!(&pages, &c.pages);
        let mut bad = good.clone();
        for d in &ds {
            apply(&mut bad, d);
        }
        if let Ok((h2, p2)) = decode_all(&bad) {
            prop_assert_eq!(h2, h);
            prop_assert_eq!(p2, pages);
        }
    }

    /// Random bytes behind a real magic (and a plausible header): errors, never panics.
    #[test]
    fn ltx_decoder_of_random_bytes(
        head in prop::collection::vec(any::<u8>(), 0..100),
        body in prop::collection::vec(any::<u8>(), 0..4000),
        c in ltx_case(),
        real_header in any::<bool>(),
    ) {
        let mut b = if real_header { c.header.encode().to_vec() } else { b"LTX1".to_vec() };
        if !real_header {
            b.extend_from_slice(&head);
            b.resize(100, 0);
        }
        b.extend_from_slice(&body);
        let _ = decode_all(&b);
        let _ = Header::decode(&b).map(|h| h.validate());
    }

    /// The page index read from any tail of a file (as ranged reads do): the decoder's
    /// index, a "need more" answer, or an error — and random tails never panic.
    #[test]
    fn ltx_page_index_from_any_tail(
        c in ltx_case(),
        cut in any::<usize>(),
        junk in prop::collection::vec(any::<u8>(), 0..200),
        claimed in any::<u64>(),
        d in damage(),
    ) {
        let good = encode(&c);
        let mut dec = Decoder::new(&good[..]).unwrap();
        let mut buf = vec![0u8; c.header.page_size as usize];
        while dec.decode_page(&mut buf).unwrap().is_some() {}
        let want = dec.page_index().to_vec();
        let k = cut % (good.len() + 1);
        match ltx::read_page_index(&good[good.len() - k..], good.len() as u64) {
            Ok(idx) => prop_assert_eq!(idx, want),
            Err(ltx::Error::IndexTruncated { needed, got }) => prop_assert!(needed > got),
            Err(e) => prop_assert!(false, "valid tail of {k} bytes refused: {e}"),
        }
        let _ = ltx::read_page_index(&junk, claimed);
        let _ = ltx::read_page_index(&junk, junk.len() as u64);
        let mut bad = good.clone();
        apply(&mut bad, &d);
        if let Ok(entries) = ltx::read_page_index(&bad, bad.len() as u64) {
            // Every entry points inside the file: a ranged read of it is in bounds.
            for e in entries {
                prop_assert!(e.offset + e.size <= bad.len() as u64);
                let frame = &bad[e.offset as usize..(e.offset + e.size) as usize];
                let mut out = vec![0u8; c.header.page_size as usize];
                let _ = ltx::decode_page_frame(frame, c.header.page_size, &mut out);
            }
        }
    }

    /// Single page frames (ranged reads) of any bytes and any page size.
    #[test]
    fn ltx_page_frame_of_random_bytes(
        frame in prop::collection::vec(any::<u8>(), 0..3000),
        ps in prop_oneof![prop::sample::select(vec![512u32, 1024, 4096, 65536]), any::<u32>()],
        out_len in prop_oneof![Just(None), (0usize..70_000).prop_map(Some)],
    ) {
        let n = out_len.unwrap_or(if ltx::is_valid_page_size(ps) { ps as usize } else { 512 });
        let mut out = vec![0u8; n];
        let _ = ltx::decode_page_frame(&frame, ps, &mut out);
    }

    /// Compacting damaged inputs: an error, or an output that decodes.
    #[test]
    fn ltx_compactor_of_damaged_inputs(
        a in ltx_case(),
        extra in 1u32..10,
        d in damage(),
        which in any::<bool>(),
    ) {
        // Two contiguous files over the same page size.
        let mut b = a.clone();
        b.header.min_txid = a.header.max_txid + 1;
        b.header.max_txid = b.header.min_txid;
        b.header.commit = a.header.commit + extra;
        // Some old pages change; the pages it grew by are all there (as a WAL ships them).
        b.pages = (1..=b.header.commit)
            .filter(|p| p % 2 == 1 || *p > a.header.commit)
            .map(|p| (p, vec![p as u8; a.header.page_size as usize]))
            .collect();
        let (ga, gb) = (encode(&a), encode(&b));
        let (want, _) = ltx::Compactor::new(vec![&ga[..], &gb[..]]).unwrap().compact(Vec::new(), PageEncoding::Lz4Block).unwrap();
        let want = decode_all(&want).expect("the compaction of valid files decodes");
        let (mut fa, mut fb) = (ga.clone(), gb.clone());
        apply(if which { &mut fa } else { &mut fb }, &d);
        if let Ok(c) = ltx::Compactor::new(vec![&fa[..], &fb[..]])
            && let Ok((out, _)) = c.compact(Vec::new(), PageEncoding::Lz4Block)
        {
            // Built only on verified inputs: the same pages as from the undamaged ones.
            let got = decode_all(&out).map_err(|e| TestCaseError::fail(format!("the compactor wrote a file that does not decode: {e}")))?;
            prop_assert_eq!(got, want, "the compactor built on damaged input");
        }
    }
}

// ───────────────────────────── config ─────────────────────────────

const TABLES: &[&str] = &[
    "[[watch]]",
    "[storage]",
    "[replication]",
    "[fleet]",
    "[http]",
    "[log]",
    "[lifecycle]",
    "[validation]",
    "[hooks]",
    "[hooks.webhooks.ops]",
    "[watch]",
    "[[storage]]",
];
const KEYS: &[&str] = &[
    "dir",
    "recursive",
    "prefix",
    "extensions",
    "url",
    "endpoint",
    "region",
    "force_path_style",
    "access_key_id",
    "secret_access_key",
    "root",
    "sync_interval",
    "checkpoint_interval",
    "min_checkpoint_pages",
    "truncate_pages",
    "busy_timeout",
    "page_encoding",
    "max_open_tenants",
    "idle_after",
    "state_dir",
    "non_guid",
    "rescan_interval",
    "startup_concurrency",
    "shutdown_timeout",
    "poll",
    "poll_interval",
    "listen",
    "token",
    "per_tenant_metrics",
    "format",
    "level",
    "levels",
    "snapshot_interval",
    "snapshot_retention",
    "l0_retention",
    "retention",
    "concurrency",
    "enabled",
    "interval",
    "tenants",
    "temp_dir",
    "module",
    "on_error",
    "timeout",
    "fuel",
    "max_memory_mib",
    "watch",
    "queue",
    "headers",
    "bogus",
    "dir.x",
    "\"quoted key\"",
];

fn toml_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "1s",
            "0s",
            "250ms",
            "1 sek",
            "60",
            "",
            "data/clients",
            "/",
            "..",
            "s3://b/p",
            "file://./r",
            "memory://",
            "gs://x",
            "block",
            "frame",
            "stem",
            "skip",
            "json",
            "text",
            "127.0.0.1:0",
            "[::1]:8080",
            "refuse",
            "default",
            "99999999999999999999h",
            "584942417355y",
            "1000000000000 years",
            "18446744073709551615s",
            "http://u:p@h/",
            "s3://b?endpoint=%a\u{e9}",
            "a/../b",
            "\u{202e}x",
            "x\ny",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,24}",
        "[0-9]{1,25}(ns|us|ms|s|m|h|d|w|y| years| months)",
    ]
}

fn toml_value() -> impl Strategy<Value = String> {
    let scalar = prop_oneof![
        3 => toml_string().prop_map(|s| format!("{s:?}")),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => prop::sample::select(vec!["0", "1", "-1", "18446744073709551615", "1e400", "nan", "inf", "0x10", "1_000"]).prop_map(str::to_owned),
        1 => any::<bool>().prop_map(|b| b.to_string()),
        1 => "[\\PC]{0,12}",
    ];
    scalar.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..3).prop_map(|v| format!(
                "{{ {} }}",
                v.iter().map(|(k, x)| format!("{k} = {x}")).collect::<Vec<_>>().join(", ")
            )),
        ]
    })
}

fn toml_doc() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        1 => prop::sample::select(TABLES).prop_map(str::to_owned),
        5 => (prop::sample::select(KEYS), toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\PC{0,30}",
    ];
    prop::collection::vec(line, 0..16).prop_map(|mut lines| {
        lines.insert(0, "[[watch]]\ndir = \"data/clients\"".to_owned());
        lines.join("\n")
    })
}

/// Every duration a valid config sets, by key.
fn durations(c: &Config) -> Vec<(&'static str, Duration)> {
    let r = &c.replication;
    let mut v = vec![
        ("replication.sync_interval", r.sync_interval),
        ("replication.checkpoint_interval", r.checkpoint_interval),
        ("replication.busy_timeout", r.busy_timeout),
        ("replication.idle_after", r.idle_after),
        ("fleet.rescan_interval", c.fleet.rescan_interval),
        ("fleet.shutdown_timeout", c.fleet.shutdown_timeout),
        ("fleet.poll_interval", c.fleet.poll_interval),
        ("lifecycle.snapshot_interval", c.lifecycle.snapshot_interval),
        ("lifecycle.snapshot_retention", c.lifecycle.snapshot_retention),
        ("lifecycle.l0_retention", c.lifecycle.l0_retention),
        ("validation.interval", c.validation.interval),
    ];
    v.extend(c.lifecycle.levels.iter().map(|d| ("lifecycle.levels", *d)));
    if let Some(h) = &c.hooks {
        v.push(("hooks.timeout", h.timeout));
    }
    v
}

/// What a config that parsed is used for at start-up must not panic either: settings,
/// the lifecycle policy, the lag threshold; and no duration is past
/// [`litefleet::config::MAX_DURATION`], so clocks moved by it (several times) never
/// overflow.
fn use_config(c: &Config) {
    let _ = litefleet::fleet::settings(c);
    let _ = litefleet::fleet::policy(c);
    let _ = litefleet::fleet::lag_threshold(c.replication.sync_interval);
    let _ = c.redacted_summary();
    let now = Instant::now();
    for (key, d) in durations(c) {
        assert!(d <= litefleet::config::MAX_DURATION, "{key} = {d:?} is accepted");
        assert!(now.checked_add(d * 64).is_some(), "{key} = {d:?} overflows a clock");
    }
    assert!(c.replication.busy_timeout <= litefleet::config::MAX_BUSY_TIMEOUT);
}

fn check_config_error(text: &str, e: &litefleet::config::ConfigError) {
    let shown = e.to_string();
    assert!(!shown.is_empty());
    if let Some(line) = e.line() {
        let lines = text.split('\n').count();
        assert!((1..=lines + 1).contains(&line), "line {line} outside 1..={lines}: {shown}");
        assert!(shown.starts_with("fuzz.toml:"), "{shown}");
    }
}

proptest! {
    #![proptest_config(runner(512))]

    /// Config files made of real tables and keys with hostile values: a config or an
    /// error that names a line inside the file; a config that parses can be used.
    #[test]
    fn config_of_hostile_documents(text in toml_doc()) {
        match Config::parse(&text, "fuzz.toml") {
            Ok(c) => use_config(&c),
            Err(e) => check_config_error(&text, &e),
        }
    }

    /// Any text at all.
    #[test]
    fn config_of_random_text(text in "\\PC{0,400}") {
        match Config::parse(&text, "fuzz.toml") {
            Ok(c) => use_config(&c),
            Err(e) => check_config_error(&text, &e),
        }
    }

    /// The seed's flags with hostile values.
    #[test]
    fn legacy_flags_of_hostile_arguments(
        args in prop::collection::vec(prop_oneof![
            prop::sample::select(vec!["-watch-dir", "--watch-dir", "-bucket", "-dsn", "-db-name", "-listen", "-state-dir",
                "-log-format", "-log-level", "-h", "-watch-dir=", "-bucket=s3://", "--", "-", "-x"]).prop_map(str::to_owned),
            toml_string(),
        ], 0..8),
    ) {
        let args: Vec<String> = std::iter::once("litefleet".to_owned()).chain(args).collect();
        if let Some(litefleet::config::legacy::FlagMode::Run(flags)) = litefleet::config::legacy::flag_mode(&args)
            && let Ok(c) = flags.config()
        {
            use_config(&c);
        }
    }

    /// Storage URLs (as `litefleet restore` and `[storage] url` take them), tenant ids and
    /// prefixes from any text; nothing here may touch the disk, so only `s3://` URLs
    /// reach the storage builder.
    #[test]
    fn urls_ids_and_prefixes_of_random_text(s in "\\PC{0,80}", raw in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = litefleet::config::StorageUrl::parse(&s);
        let _ = litefleet::config::validate_bucket(&s);
        let _ = litefleet::storage::Storage::from_url(&format!("s3://{s}"), &Default::default());
        let _ = litefleet::storage::Storage::from_url(&format!("s3://b/p?endpoint={s}&region={s}"), &Default::default());
        let _ = TenantId::guid(&s);
        let _ = TenantId::from_stem(&s);
        if let Ok(p) = Prefix::parse(&s) {
            let again = tenant::validate_prefix(p.as_str());
            prop_assert_eq!(again.as_deref().ok(), Some(p.as_str()));
        }
        // Tenant file names straight from a directory listing: any bytes.
        let name = OsStr::from_bytes(&raw);
        let exts = vec!["db".to_owned(), "sqlite".to_owned()];
        for policy in [NonGuidPolicy::Skip, NonGuidPolicy::Stem] {
            let _ = tenant::classify(&Path::new("/data").join(name), &exts, policy);
        }
        let _ = tenant::is_candidate(&Path::new("/data").join(name), &exts);
        let _ = tenant::wal_owner(&Path::new("/data").join(name));
    }
}

// ───────────────────────────── hook results ─────────────────────────────

/// The rules of docs/hooks.md, written again independently of `check_accept`.
fn label_ok(k: &str, v: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_LABEL_KEY
        && k.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
        && v.chars().count() <= MAX_LABEL_VALUE
        && !v.chars().any(char::is_control)
}

fn hook_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9._/-]{0,20}",
        "\\PC{0,30}",
        prop::sample::select(vec![
            "",
            "/",
            "a//b",
            "a/./b",
            "..",
            "a/..",
            "tenants/ab/x",
            "ok/",
            "ok//",
            "é",
            "\u{0}",
            "a\nb"
        ])
        .prop_map(str::to_owned),
        "[a-z]{500,520}",
    ]
}

proptest! {
    #![proptest_config(runner(512))]

    /// What a hook returns: accepted exactly when every rule holds, and then the prefix
    /// is valid and the labels are what was returned.
    #[test]
    fn hook_results_are_validated(
        prefix in prop::option::of(hook_text()),
        labels in prop::collection::vec((hook_text(), prop_oneof!["\\PC{0,40}", "[a-z]{250,260}", "a\u{7}b"]), 0..20),
    ) {
        let default = Prefix::parse("databases/11111111-1111-4111-8111-111111111111").unwrap();
        let got = check_accept(prefix.as_deref(), labels.clone(), &default);
        let unique = labels.iter().map(|(k, _)| k).collect::<std::collections::BTreeSet<_>>().len() == labels.len();
        let want_ok = prefix.as_deref().is_none_or(|p| tenant::validate_prefix(p).is_ok())
            && labels.len() <= MAX_LABELS
            && labels.iter().all(|(k, v)| label_ok(k, v))
            && unique;
        match got {
            Ok(Decision::Accept { prefix: p, labels: l }) => {
                prop_assert!(want_ok, "accepted {prefix:?} {labels:?}");
                let expect = prefix.as_deref().map_or(default.clone(), |s| Prefix::parse(s).unwrap());
                prop_assert_eq!(&p, &expect);
                prop_assert!(!p.as_str().split('/').any(|s| s == ".." || s == "." || s.is_empty()));
                prop_assert_eq!(l, labels.into_iter().collect::<BTreeMap<_, _>>());
            }
            Ok(Decision::Refuse { .. }) => prop_assert!(false, "check_accept never refuses"),
            Err(m) => {
                prop_assert!(!want_ok, "refused a valid result: {m}");
                prop_assert!(m.starts_with("returned"), "{m}");
            }
        }
    }
}

// ───────────────────────────── regressions found by the properties above ─────────────────────────────

/// `urls_ids_and_prefixes_of_random_text` found it: a `%` followed by a multi-byte
/// character in an S3 URL's query (`litefleet restore "s3://b/p?endpoint=%é"`, or
/// `[storage] url`) sliced a `str` inside the character and panicked.
#[test]
fn percent_sign_before_a_multibyte_character_in_a_storage_url_does_not_panic() {
    for url in ["s3://b/p?endpoint=%\u{10efc}", "s3://b/p?region=%a\u{e9}", "s3://b/p?endpoint=%", "s3://b?region=%4"] {
        let _ = litefleet::storage::Storage::from_url(url, &Default::default());
    }
    // Percent-encoding still decodes: the endpoint below is http://127.0.0.1:9.
    let s = litefleet::storage::Storage::from_url(
        "s3://b/p?endpoint=http%3A%2F%2F127.0.0.1%3a9&region=x",
        &Default::default(),
    )
    .expect("a valid url");
    assert!(s.url().contains("endpoint=http://127.0.0.1:9&"), "{}", s.url());
}

/// `config_of_hostile_documents` found it (on purpose, once its durations were checked
/// against use): a duration humantime accepts but no clock can hold —
/// `sync_interval = "18446744073709551615s"` passed `--check`, then the daemon panicked
/// at start-up ("overflow when multiplying duration by scalar"); the other keys panicked
/// in a task, and a huge `busy_timeout` made every sync fail ("too big"). Each is now
/// refused with its line and key.
#[test]
fn durations_too_long_for_a_clock_are_refused_by_the_config() {
    let keys = [
        ("replication", "sync_interval"),
        ("replication", "checkpoint_interval"),
        ("replication", "busy_timeout"),
        ("replication", "idle_after"),
        ("fleet", "rescan_interval"),
        ("fleet", "shutdown_timeout"),
        ("fleet", "poll_interval"),
        ("lifecycle", "snapshot_interval"),
        ("lifecycle", "snapshot_retention"),
        ("lifecycle", "l0_retention"),
        ("validation", "interval"),
    ];
    for (table, key) in keys {
        for value in ["18446744073709551615s", "500000000000 years", "11years"] {
            let text = format!("[[watch]]\ndir = \"d\"\n[{table}]\n{key} = \"{value}\"\n");
            let e = Config::parse(&text, "fuzz.toml").expect_err(&format!("{table}.{key} = {value:?} accepted"));
            assert_eq!(e.line(), Some(4), "{e}");
            assert_eq!(e.key(), Some(format!("{table}.{key}").as_str()), "{e}");
        }
    }
    let e = Config::parse("[[watch]]\ndir = \"d\"\n[lifecycle]\nlevels = [\"1s\", \"99999years\"]\n", "fuzz.toml")
        .unwrap_err();
    assert_eq!(e.key(), Some("lifecycle.levels[1]"), "{e}");
    let e =
        Config::parse("[[watch]]\ndir = \"d\"\n[replication]\nbusy_timeout = \"30days\"\n", "fuzz.toml").unwrap_err();
    assert!(e.to_string().contains("busy_timeout"), "{e}");
    // The longest sensible values still pass.
    Config::parse("[[watch]]\ndir = \"d\"\n[lifecycle]\nsnapshot_retention = \"3650days\"\n", "fuzz.toml").unwrap();
    Config::parse("[[watch]]\ndir = \"d\"\n[replication]\nbusy_timeout = \"24days\"\n", "fuzz.toml").unwrap();
}
