//! Unit tests of the storage layer on a folder (the other services are tested on real
//! servers in `tests/services.rs`).

use super::*;

#[test]
fn urls_and_layouts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::from_url(&format!("file://{}", dir.path().display()), &Options::default()).unwrap();
    let r = s.replica("databases/abc");
    assert_eq!(r.url(), format!("file://{}/databases/abc", dir.path().display()));
    assert_eq!(r.key(0, 1, 1), "databases/abc/ltx/0/0000000000000001-0000000000000001.ltx");
    assert_eq!(r.key(9, 1, 0x1f), "databases/abc/ltx/9/0000000000000001-000000000000001f.ltx");
    let s3 = Storage::from_url(
        "s3://bkt/base/path?endpoint=http://127.0.0.1:9&region=eu-west-1&force-path-style=true",
        &Options { access_key_id: Some("a".into()), secret_access_key: Some("b".into()), ..Default::default() },
    )
    .unwrap();
    let r = s3.replica("databases/abc/");
    assert_eq!(r.key(1, 2, 3), "base/path/databases/abc/0001/0000000000000002-0000000000000003.ltx");
    assert_eq!(r.key(9, 1, 3), "base/path/databases/abc/0009/0000000000000001-0000000000000003.ltx");
    assert_eq!(
        r.url(),
        "s3://bkt/base/path/databases/abc?endpoint=http://127.0.0.1:9&region=eu-west-1&force-path-style=true"
    );
    assert!(Storage::from_url("gopher://x", &Options::default()).is_err());
    assert!(Storage::from_url("s3:///x", &Options::default()).is_err());
}

/// A small tmpfs mounted for one test (CI runs as root); `None` where mounting is
/// not allowed, with the reason printed.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir)),
            Ok(o) => {
                eprintln!("skipping: cannot mount a tmpfs: {}", String::from_utf8_lossy(&o.stderr).trim());
                None
            }
            Err(e) => {
                eprintln!("skipping: cannot run mount: {e}");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.0.path()).status();
    }
}

/// Regression (issue 18): on a full disk the folder replica wrote straight to the
/// final name and left 0-byte `.ltx` files, which made the whole backup
/// unrestorable. Now an upload that cannot complete leaves nothing under its name
/// (and no temporary file either), and the next upload after space is freed works.
#[tokio::test]
async fn full_disk_on_a_folder_replica_leaves_no_torn_ltx() {
    let Some(fs) = Tmpfs::mount("256k") else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI runs as root and must test this");
        return;
    };
    let s = Storage::from_url(fs.0.path().to_str().unwrap_or_default(), &Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let r = s.replica("t");
    r.put(0, 1, 1, vec![7; 1000], 1).await.unwrap_or_else(|e| panic!("{e}"));
    let filler = fs.0.path().join("filler");
    let _ = std::fs::write(&filler, vec![0u8; 512 << 10]); // fails part-way: the disk is full
    let err = r.put(0, 2, 2, vec![9; 64 << 10], 2).await.err().unwrap_or_else(|| panic!("the disk was not full"));
    let shown = crate::errors::chain(&err);
    assert!(shown.contains("0000000000000002-0000000000000002.ltx") && shown.contains("No space"), "{shown}");
    let names: Vec<String> = std::fs::read_dir(fs.0.path().join("t/ltx/0"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["0000000000000001-0000000000000001.ltx"], "a torn or temporary file is left");
    std::fs::remove_file(&filler).unwrap_or_else(|e| panic!("{e}"));
    r.put(0, 2, 2, vec![9; 64 << 10], 2).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.list(0).await.unwrap_or_default().iter().map(|f| f.size).collect::<Vec<_>>(), [1000, 64 << 10]);
}

#[tokio::test]
async fn stale_temporary_files_are_found_and_removed_fresh_ones_are_left() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let s = Storage::from_url(dir.path().to_str().unwrap_or_default(), &Options::default())
        .unwrap_or_else(|e| panic!("{e}"));
    s.replica("a").put(0, 1, 1, vec![1; 200], 1).await.unwrap_or_else(|e| panic!("{e}"));
    let level = dir.path().join("a/ltx/0");
    let stale = level.join("0000000000000002-0000000000000002.ltx.99-0.tmp");
    let fresh = level.join("0000000000000003-0000000000000003.ltx.99-1.tmp");
    std::fs::write(&stale, b"half").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&fresh, b"half").unwrap_or_else(|e| panic!("{e}"));
    let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .and_then(|f| f.set_modified(old))
        .unwrap_or_else(|e| panic!("{e}"));
    let (tree, temps) = s.list_tree_and_temps("").await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tree.keys().collect::<Vec<_>>(), ["a"], "temporary files are not replica files");
    assert_eq!(tree["a"].len(), 1);
    assert_eq!(temps, ["a/ltx/0/0000000000000002-0000000000000002.ltx.99-0.tmp"]);
    assert_eq!(s.remove_temps(&temps).await, 1);
    assert!(!stale.exists() && fresh.exists());
}

#[tokio::test]
async fn put_list_read_delete_on_a_folder_sets_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let s = Storage::from_url(dir.path().to_str().unwrap(), &Options::default()).unwrap();
    let r = s.replica("t1");
    r.put(0, 1, 1, vec![1, 2, 3], 1_700_000_000_123).await.unwrap();
    r.put(0, 2, 2, vec![4], 1_700_000_001_000).await.unwrap();
    let files = r.list(0).await.unwrap();
    assert_eq!(files.iter().map(|f| (f.min_txid, f.size)).collect::<Vec<_>>(), vec![(1, 3), (2, 1)]);
    let mtime = std::fs::metadata(dir.path().join("t1/ltx/0/0000000000000001-0000000000000001.ltx"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
    assert_eq!(r.read(&files[0]).await.unwrap().to_vec(), vec![1, 2, 3]);
    assert_eq!(r.read_range(&files[0], 1..3).await.unwrap().to_vec(), vec![2, 3]);
    assert!(r.list(1).await.unwrap().is_empty());
    r.delete(&files[..1]).await.unwrap();
    assert_eq!(r.list(0).await.unwrap().len(), 1);
    assert_eq!(s.discover("").await.unwrap(), vec!["t1".to_string()]);
    assert!(s.counters().total() >= 6);
}

#[test]
fn azure_urls_and_every_secret_is_registered() {
    let conn = "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=c2VjcmV0LWtleS1pbi1jb25u;BlobEndpoint=http://127.0.0.1:9/acct;";
    let opts = Options { connection_string: Some(conn.to_owned()), ..Default::default() };
    let s = Storage::from_url("abs://fleet/base", &opts).unwrap_or_else(|e| panic!("{}", crate::errors::chain(&e)));
    assert_eq!(s.service(), Service::Azure);
    assert_eq!(s.replica("databases/t").key(0, 1, 1), "base/databases/t/ltx/0/0000000000000001-0000000000000001.ltx");
    // A library that prints the key alone (taken out of the connection string) prints `***`.
    let line = crate::redact::scrub("signing with c2VjcmV0LWtleS1pbi1jb25u now").into_owned();
    assert!(!line.contains("c2VjcmV0LWtleS1pbi1jb25u"), "{line}");
    let e = Storage::from_url("abs://fleet", &Options::default()).err().map(|e| e.to_string()).unwrap_or_default();
    let ambient =
        ["AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_CONNECTION_STRING"].iter().any(|v| std::env::var_os(v).is_some());
    assert!(ambient || e.contains("no storage account"), "{e}");
    assert!(Storage::from_url("abs://acct:key@fleet", &Options::default()).is_err());
    let g =
        Storage::from_url("gs://bkt/p", &Options { endpoint: Some("http://127.0.0.1:9".into()), ..Default::default() })
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(g.url(), "gs://bkt/p?endpoint=http://127.0.0.1:9");
    let f = Storage::from_url("sftp://me@127.0.0.1:2222/srv/b", &Options::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((f.service(), f.url()), (Service::Sftp, "sftp://me@127.0.0.1:2222/srv/b".to_owned()));
    assert!(Storage::from_url("sftp://127.0.0.1/srv", &Options::default()).is_err(), "no user");
}
