//! Encryption through the storage layer on a real folder: every read and write path
//! (`put`, streamed `Upload`, `read`, `read_range`, `reader`, `RangeReader`), ranges
//! across chunk boundaries (a property test), mixed plain and sealed replicas, and the
//! error of every way an object can be wrong, naming the object.

use std::io::Read;
use std::sync::Arc;

use proptest::prelude::*;

use super::crypt::{self, Keyring};
use super::*;

const KA: &str = "ka 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const KB: &str = "kb 1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100";

fn ring(text: &str, current: &str) -> Arc<Keyring> {
    Arc::new(Keyring::parse(text).and_then(|k| k.seal_with(Some(current))).unwrap_or_else(|e| panic!("{e}")))
}

fn data(n: usize, seed: u32) -> Vec<u8> {
    (0..n as u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect()
}

fn folder(dir: &tempfile::TempDir) -> Storage {
    Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn err_text(e: Option<Error>) -> String {
    e.map(|e| crate::errors::chain(&e)).unwrap_or_else(|| "no error".to_owned())
}

async fn read_all(r: &Replica, f: &FileInfo, step: u64) -> Result<Vec<u8>> {
    let mut reader = r.reader(f, step);
    let mut out = Vec::new();
    while let Some(b) = reader.next().await? {
        out.extend_from_slice(&b.to_vec());
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_seals_and_opens_and_plain_files_still_read() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let plain = folder(&dir);
    let sealed = folder(&dir).with_keyring(ring(KA, "ka"));
    let (p, s) = (plain.replica("t"), sealed.replica("t"));
    let old = data(70_000, 1);
    p.put(0, 1, 1, old.clone(), 1_700_000_000_000).await.unwrap_or_else(|e| panic!("{e}"));
    let small = data(3_000, 2);
    s.put(0, 2, 2, small.clone(), 1_700_000_001_000).await.unwrap_or_else(|e| panic!("{e}"));
    let big = data(5_000_000, 3);
    let b = big.clone();
    let up = s
        .upload_from(1, 1, 3, 1_700_000_002_000, move |w| std::io::Write::write_all(w, &b).map_err(|e| e.to_string()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(up.map(|(_, n)| n), Ok(crypt::sealed_len(big.len() as u64)));
    let files = s.list_all().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.len(), 3);
    let on_disk = std::fs::read(dir.path().join("t/ltx/1/0000000000000001-0000000000000003.ltx")).unwrap_or_default();
    assert!(on_disk.starts_with(b"LFE1") && on_disk.len() as u64 == files[2].size);
    assert!(!on_disk.windows(64).any(|w| big.windows(64).next() == Some(w)), "plaintext in the stored object");
    for (f, want) in files.iter().zip([&old, &small, &big]) {
        assert!(s.read(f).await.unwrap_or_else(|e| panic!("{e}")).to_vec() == *want, "read of {f:?}");
        for step in [1 << 20, 8 << 20] {
            assert!(read_all(&s, f, step).await.unwrap_or_else(|e| panic!("{e}")) == *want, "reader of {f:?}");
        }
        let got = s.read_range(f, 0..100).await.unwrap_or_else(|e| panic!("{e}")).to_vec();
        assert_eq!(got, want[..100]);
    }
    // The blocking reader the lifecycle merges with.
    let (r, f, handle) = (s.clone(), files[2].clone(), tokio::runtime::Handle::current());
    let back = tokio::task::spawn_blocking(move || {
        let mut v = Vec::new();
        r.range_reader(&f, 1 << 20, handle).read_to_end(&mut v).map(|_| v)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"))
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(back == big);
    // Without a keyring the plain file reads, the sealed ones are refused by name.
    assert!(p.read(&files[0]).await.map(|b| b.to_vec() == old).unwrap_or(false));
    let e = err_text(p.read_range(&files[1], 0..100).await.err());
    assert!(
        e.contains("0000000000000002-0000000000000002.ltx") && e.contains("no encryption keys are configured"),
        "{e}"
    );
    let e = err_text(read_all(&p, &files[2], 8 << 20).await.err());
    assert!(e.contains("0000000000000001-0000000000000003.ltx") && e.contains("key \"ka\""), "{e}");
    assert_eq!(s.sealed_with(&files[0]).await.ok(), Some(None));
    assert_eq!(s.sealed_with(&files[1]).await.ok(), Some(Some("ka".to_owned())));
}

#[tokio::test]
async fn wrong_missing_tampered_truncated_and_swapped_objects_are_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = folder(&dir).with_keyring(ring(KA, "ka"));
    let r = s.replica("t");
    let body = data(300_000, 4);
    r.put(0, 1, 1, body.clone(), 1).await.unwrap_or_else(|e| panic!("{e}"));
    r.put(0, 2, 2, body.clone(), 2).await.unwrap_or_else(|e| panic!("{e}"));
    let path = |n: u32| dir.path().join(format!("t/ltx/0/{:016x}-{:016x}.ltx", n, n));
    let name = |n: u32| format!("t/ltx/0/{:016x}-{:016x}.ltx", n, n);
    let original = std::fs::read(path(1)).unwrap_or_default();
    // Each case through read, reader and (for the first chunks) read_range.
    let cases: Vec<(&str, Vec<u8>, Arc<Keyring>, &str)> = vec![
        (
            "wrong key",
            original.clone(),
            ring("ka ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", "ka"),
            "does not open it",
        ),
        ("missing key id", original.clone(), ring(KB, "kb"), "which is not in the keyring"),
        (
            "flipped byte",
            {
                let mut b = original.clone();
                b[crypt::HEADER_LEN + 10] ^= 0x40;
                b
            },
            ring(KA, "ka"),
            "fails authentication",
        ),
        (
            "truncated",
            {
                let mut b = original.clone();
                b.truncate(b.len() - 100);
                b
            },
            ring(KA, "ka"),
            "truncated",
        ),
        (
            "cut at a chunk boundary",
            {
                let mut b = original.clone();
                b.truncate(crypt::sealed_len(crypt::FIRST + 2 * crypt::CHUNK) as usize);
                b
            },
            ring(KA, "ka"),
            "fails authentication",
        ),
        (
            "chunks of another object",
            {
                let other = std::fs::read(path(2)).unwrap_or_default();
                let mut b = original.clone();
                let at = (crypt::HEADER_LEN as u64 + crypt::FIRST + crypt::TAG) as usize;
                b[at..].copy_from_slice(&other[at..]);
                b
            },
            ring(KA, "ka"),
            "fails authentication",
        ),
        ("renamed from another file", std::fs::read(path(2)).unwrap_or_default(), ring(KA, "ka"), "does not open it"),
    ];
    for (what, bytes, keyring, want) in cases {
        std::fs::write(path(1), &bytes).unwrap_or_else(|e| panic!("{e}"));
        let s = folder(&dir).with_keyring(keyring);
        let r = s.replica("t");
        let f = FileInfo { level: 0, min_txid: 1, max_txid: 1, size: bytes.len() as u64, created: None };
        let mut errors = vec![r.read(&f).await.err(), read_all(&r, &f, 1 << 20).await.err()];
        // A header read opens chunk 0 only: its bytes are authentic even when a later
        // chunk was altered or cut off, which the whole file's read finds.
        if !matches!(what, "chunks of another object" | "truncated" | "cut at a chunk boundary") {
            errors.push(r.read_range(&f, 0..100).await.err());
        }
        for (i, e) in errors.into_iter().enumerate() {
            let damage = e.as_ref().is_some_and(Error::is_damage);
            let e = err_text(e);
            assert!(e.contains(&name(1)) && e.contains(want), "{what}, path {i}: {e}");
            // Only the object's own faults are damage; a key problem is not.
            assert_eq!(damage, !want.contains("key") && !want.contains("does not open"), "{what}: {e}");
        }
    }
    // Chunks 1 and 2 swapped inside the object.
    let mut swapped = original.clone();
    let c1 = (crypt::HEADER_LEN as u64 + crypt::FIRST + crypt::TAG) as usize;
    let n = (crypt::CHUNK + crypt::TAG) as usize;
    let (a, b) = (original[c1..c1 + n].to_vec(), original[c1 + n..c1 + 2 * n].to_vec());
    swapped[c1..c1 + n].copy_from_slice(&b);
    swapped[c1 + n..c1 + 2 * n].copy_from_slice(&a);
    std::fs::write(path(1), &swapped).unwrap_or_else(|e| panic!("{e}"));
    let f = FileInfo { level: 0, min_txid: 1, max_txid: 1, size: swapped.len() as u64, created: None };
    let e = err_text(read_all(&r, &f, 1 << 20).await.err());
    assert!(e.contains(&name(1)) && e.contains("chunk 1 fails authentication"), "{e}");
    // 70,000 is in chunk 2 (chunk 1 holds 1,024..66,560).
    let e = err_text(r.read_range(&f, 70_000..70_010).await.err());
    assert!(e.contains("chunk 2 fails authentication"), "{e}");
}

#[tokio::test]
async fn an_object_replaced_while_it_is_read_is_a_retry_not_damage() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = folder(&dir).with_keyring(ring(KA, "ka"));
    let r = s.replica("t");
    let body = data(1_000_000, 9);
    r.put(0, 1, 1, body.clone(), 1).await.unwrap_or_else(|e| panic!("{e}"));
    let f = r.list(0).await.unwrap_or_else(|e| panic!("{e}")).remove(0);
    // The first range read, then the same bytes sealed again under the same name (a
    // new salt, as `litefleet reencrypt` writes it), then the next range.
    let mut reader = r.reader(&f, 200_000);
    assert!(reader.next().await.is_ok_and(|b| b.is_some()));
    r.put(0, 1, 1, body.clone(), 1).await.unwrap_or_else(|e| panic!("{e}"));
    let e = reader.next().await.err();
    assert!(e.as_ref().is_some_and(|e| !e.is_damage()), "{e:?}");
    let e = err_text(e);
    assert!(e.contains("0000000000000001-0000000000000001.ltx") && e.contains("replaced while it was read"), "{e}");
    // Read again: whole.
    assert!(read_all(&r, &f, 200_000).await.unwrap_or_else(|e| panic!("{e}")) == body);
    // A real change in a later chunk is still damage.
    let path = dir.path().join("t/ltx/0/0000000000000001-0000000000000001.ltx");
    let mut bytes = std::fs::read(&path).unwrap_or_default();
    bytes[700_000] ^= 1;
    std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let e = read_all(&r, &f, 200_000).await.err();
    assert!(e.as_ref().is_some_and(Error::is_damage), "{e:?}");
    let e = r.read_range(&f, 690_000..690_010).await.err();
    assert!(e.as_ref().is_some_and(Error::is_damage), "{e:?}");
}

fn ranges() -> impl Strategy<Value = (usize, u64, u64)> {
    (0usize..200_000, 0u64..210_000, 0u64..140_000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any plaintext range of any sealed file reads back exactly (one request, or two),
    /// across the first small chunk and the 64 KiB ones.
    #[test]
    fn ranged_reads_match_the_plaintext((len, start, n) in ranges()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let s = folder(&dir).with_keyring(ring(KA, "ka"));
        let r = s.replica("p");
        let body = data(len, len as u32);
        let (start, end) = (start.min(len as u64), (start + n).min(len as u64 + 5));
        let got = rt.block_on(async {
            r.put(3, 5, 9, body.clone(), 1).await?;
            let f = r.list(3).await?.remove(0);
            r.read_range(&f, start..end).await
        });
        let got = got.unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e))).to_vec();
        let want = &body[start as usize..(end as usize).min(len)];
        prop_assert_eq!(got.len(), want.len());
        prop_assert!(got == want);
    }
}
