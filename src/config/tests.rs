//! Config files and flags: every key, every mistake with its line, every secret hidden.

use super::legacy::{FlagMode, flag_mode};
use super::*;
use crate::tenant::Prefix;

/// The example config of the repository, as shipped.
const EXAMPLE: &str = include_str!("../../config.example.toml");

/// Parses `text` expecting an error; returns (line, key, display).
fn fail(text: &str) -> (Option<usize>, Option<String>, String) {
    match Config::parse(text, "prod.toml") {
        Ok(c) => panic!("parsed, want an error: {c:?}"),
        Err(e) => (e.line(), e.key().map(str::to_owned), e.to_string()),
    }
}

fn assert_fails(text: &str, want_line: usize, want_key: &str, want_msg: &str) {
    let (line, key, msg) = fail(text);
    assert_eq!(line, Some(want_line), "line; got message {msg}");
    assert_eq!(key.as_deref(), Some(want_key), "key; got message {msg}");
    assert_eq!(msg, want_msg);
}

const MINIMAL: &str = "[[watch]]\ndir = \"data/clients\"\n";

#[test]
fn example_file_is_default_with_one_watch_dir() {
    let got = Config::parse(EXAMPLE, "config.example.toml").unwrap();
    let want = Config { watch: vec![WatchConfig::new("data/clients")], ..Config::default() };
    assert_eq!(got, want);
    assert_eq!(got.storage.url.to_string(), DEFAULT_STORAGE_URL);
    assert_eq!(got.http.listen.to_string(), "127.0.0.1:8080");
}

#[test]
fn minimal_file_gets_every_default() {
    let c = Config::parse(MINIMAL, "min.toml").unwrap();
    assert_eq!(c.watch, vec![WatchConfig::new("data/clients")]);
    assert_eq!(c.storage, StorageConfig::default());
    assert_eq!(c.storage.root, "databases");
    assert_eq!(c.replication.sync_interval, crate::replicate::DEFAULT_SYNC_INTERVAL);
    assert_eq!(c.replication.truncate_pages, 121_359);
    assert_eq!(c.fleet.non_guid, NonGuidPolicy::Skip);
    assert_eq!(c.http.listen, DEFAULT_LISTEN);
    assert!(c.single.is_none());
}

#[test]
fn full_s3_file_parses() {
    let text = r#"
[[watch]]
dir = "/data/prod/"
prefix = "prod/"
recursive = true
extensions = [".db", "sqlite"]

[[watch]]
dir = "/data/staging"
prefix = "staging"

[storage]
url = "s3://saas-backups/litefleet"
endpoint = "http://127.0.0.1:9000/"
region = "us-east-1"
force_path_style = true
access_key_id = "AKIAEXAMPLE"
secret_access_key = "wJalrXUtnFEMI/K7MDENG"
root = ""

[replication]
sync_interval = "250ms"
page_encoding = "frame"
truncate_pages = 0

[fleet]
non_guid = "stem"
poll = true

[http]
listen = "0.0.0.0:9090"
token = "hunter2"
per_tenant_metrics = true

[log]
format = "json"
"#;
    let c = Config::parse(text, "s3.toml").unwrap();
    assert_eq!(c.watch[0].prefix.as_deref(), Some("prod"));
    assert_eq!(c.watch[0].extensions, vec!["db", "sqlite"]);
    assert_eq!(c.storage.url, StorageUrl::S3 { bucket: "saas-backups".into(), path: "litefleet".into() });
    assert_eq!(c.storage.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.storage.root, "");
    assert_eq!(c.replication.sync_interval, Duration::from_millis(250));
    assert_eq!(c.replication.page_encoding, PageEncoding::Lz4Frame);
    assert_eq!(c.fleet.non_guid, NonGuidPolicy::Stem);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.http.token.as_ref().map(Secret::expose), Some("hunter2"));
    assert!(c.http.per_tenant_metrics);

    // Secrets never show, not in Debug, not in the summary.
    let debug = format!("{c:?}");
    let summary = c.redacted_summary();
    for text in [&debug, &summary] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("wJalrXUtnFEMI"), "{text}");
        assert!(!text.contains("AKIAEXAMPLE"), "{text}");
    }
    assert!(summary.contains("storage=s3://saas-backups/litefleet"), "{summary}");
    assert!(summary.contains("credentials=from-config"), "{summary}");
    assert!(summary.contains("token=set"), "{summary}");
    assert!(summary.contains("/data/prod/ (recursive) (prefix prod)"), "{summary}");
}

#[test]
fn empty_token_means_none() {
    let c = Config::parse(&format!("{MINIMAL}[http]\ntoken = \"\"\n"), "t.toml").unwrap();
    assert_eq!(c.http.token, None);
}

#[test]
fn unknown_keys_name_line_table_and_choices() {
    assert_fails(
        "[[watch]]\ndir = \"a\"\nrecursiv = true\n",
        3,
        "watch[0].recursiv",
        "prod.toml:3: unknown key \"recursiv\" in [[watch]] (expected one of dir, recursive, prefix, extensions)",
    );
    assert_fails(
        &format!("{MINIMAL}\n[replication]\nsync_intervl = \"1s\"\n"),
        5,
        "replication.sync_intervl",
        "prod.toml:5: unknown key \"sync_intervl\" in [replication] (expected one of sync_interval, checkpoint_interval, min_checkpoint_pages, truncate_pages, busy_timeout, page_encoding, max_open_tenants, max_parked_tenants, idle_after, state_dir)",
    );
    let (line, key, msg) = fail(&format!("{MINIMAL}[replicaton]\n"));
    assert_eq!((line, key.as_deref()), (Some(3), Some("replicaton")));
    assert!(
        msg.starts_with(
            "prod.toml:3: unknown key \"replicaton\" at the top level (expected one of watch, storage, encryption, replication,"
        ),
        "{msg}"
    );
    // The second [[watch]] table is named by its index.
    assert_fails(
        "[[watch]]\ndir = \"a\"\n[[watch]]\ndir = \"b\"\nprefx = \"p\"\n",
        5,
        "watch[1].prefx",
        "prod.toml:5: unknown key \"prefx\" in [[watch]] (expected one of dir, recursive, prefix, extensions)",
    );
}

#[test]
fn bad_values_name_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[watch]]\ndir = \"a\"\n\n[replication]\nsync_interval = \"1 sek\"\n",
            5,
            "replication.sync_interval",
            "prod.toml:5: replication.sync_interval: \"1 sek\" is not a duration (try \"1s\", or units like 500ms, 2m, 1h)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[fleet]\nrescan_interval = 60\n",
            4,
            "fleet.rescan_interval",
            "prod.toml:4: fleet.rescan_interval: 60 is not a duration (try \"60s\", or units like 500ms, 2m, 1h)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\npage_encoding = \"zstd\"\n",
            4,
            "replication.page_encoding",
            "prod.toml:4: replication.page_encoding: \"zstd\" is not one of: block, frame",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[fleet]\nnon_guid = \"fallback\"\n",
            4,
            "fleet.non_guid",
            "prod.toml:4: fleet.non_guid: \"fallback\" is not one of: skip, stem",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[http]\nlisten = \"localhost\"\n",
            4,
            "http.listen",
            "prod.toml:4: http.listen: invalid socket address syntax",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[http]\nper_tenant_metrics = \"yes\"\n",
            4,
            "http.per_tenant_metrics",
            "prod.toml:4: http.per_tenant_metrics: invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"gcs://bucket\"\n",
            4,
            "storage.url",
            "prod.toml:4: storage.url: unknown scheme \"gcs\" in \"gcs://bucket\" (expected file://, s3://, gs://, abs://, sftp:// or memory://)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"replicas\"\n",
            4,
            "storage.url",
            "prod.toml:4: storage.url: \"replicas\" is not a URL (try \"file://replicas\" for a local folder or \"s3://replicas\" for a bucket)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"s3://Bad_Bucket\"\n",
            4,
            "storage.url",
            "prod.toml:4: storage.url: \"Bad_Bucket\" is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)",
        ),
        (
            "[[watch]]\ndir = \"a\"\nprefix = \"../up\"\n",
            3,
            "watch[0].prefix",
            "prod.toml:3: watch[0].prefix: prefix \"../up\" has a \"..\" segment; relative path segments are not allowed",
        ),
        (
            "[[watch]]\ndir = \"a\"\nextensions = []\n",
            3,
            "watch[0].extensions",
            "prod.toml:3: watch[0].extensions: is empty (the default is [\"db\", \"sqlite\", \"sqlite3\"])",
        ),
        (
            "[[watch]]\ndir = \"a\"\nextensions = [\"db\", \"d b\"]\n",
            3,
            "watch[0].extensions",
            "prod.toml:3: watch[0].extensions: extension \"d b\" must be 1 to 16 letters or digits (like \"db\")",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\nmax_open_tenants = -1\n",
            4,
            "replication.max_open_tenants",
            "prod.toml:4: replication.max_open_tenants: invalid value: integer `-1`, expected usize",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nendpoint = \"127.0.0.1:9000\"\n",
            4,
            "storage.endpoint",
            "prod.toml:4: storage.endpoint: \"127.0.0.1:9000\" is not an http(s) URL (like \"http://127.0.0.1:9000\")",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nroot = \"/abs\"\n",
            4,
            "storage.root",
            "prod.toml:4: storage.root: prefix \"/abs\" starts with '/'; it must be relative (like \"prod/eu\")",
        ),
        ("# my fleet\n\n[[watch]]\nrecursive = true\n", 3, "watch[0]", "prod.toml:3: watch[0]: missing key \"dir\""),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\nsync_interval = \"1s\"\nsync_interval = \"2s\"\n",
            5,
            "replication.sync_interval",
            "prod.toml:5: replication.sync_interval: duplicate key",
        ),
        ("watch = 3\n", 1, "watch", "prod.toml:1: watch: invalid type: integer `3`, expected a sequence"),
    ];
    for (text, line, key, msg) in cases {
        assert_fails(text, *line, key, msg);
    }
}

/// A standby's config needs no watch directory; its `[standby]` and `[change_log]`
/// keys parse with their defaults.
#[test]
fn standby_and_change_log_tables_parse() {
    let c = Config::parse(
        "[storage]\nurl = \"s3://backups\"\n[standby]\ndir = \"/srv/copies\"\npoll_interval = \"500ms\"\n[change_log]\nenabled = true\n",
        "standby.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(c.watch.is_empty());
    assert_eq!(c.standby.dir.as_deref(), Some(std::path::Path::new("/srv/copies")));
    assert_eq!(c.standby.poll_interval, Duration::from_millis(500));
    assert_eq!(c.standby.full_scan_interval, Duration::from_secs(3600));
    assert!(c.change_log.enabled);
    assert_eq!(c.change_log.interval, Duration::from_secs(1));
    assert!(!Config::default().change_log.enabled, "off unless asked");
}

#[test]
fn syntax_error_names_line() {
    let (line, key, msg) = fail("[[watch]]\ndir = \"a\"\n[replication\n");
    assert_eq!(line, Some(3), "{msg}");
    assert_eq!(key, None);
    assert!(msg.starts_with("prod.toml:3: "), "{msg}");
}

#[test]
fn semantic_errors_name_line_and_key() {
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "[[watch]]\ndir = \"d\"\n[fleet]\nheartbeat_interval = \"30s\"\nowner_expiry = \"1m\"\n",
            5,
            "fleet.owner_expiry",
            "prod.toml:5: fleet.owner_expiry: must be at least three heartbeat intervals (1m 30s): a host is taken for dead after missing that many",
        ),
        (
            "[[watch]]\ndir = \"d\"\n[fleet]\nhost_id = \"web 1/a\"\n",
            4,
            "fleet.host_id",
            "prod.toml:4: fleet.host_id: \"web 1/a\" must be 1 to 64 letters, digits, '.', '_' or '-'",
        ),
        (
            "# nothing to watch\n[storage]\nroot = \"x\"\n",
            1,
            "watch",
            "prod.toml:1: watch: no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")",
        ),
        (
            "[[watch]]\ndir = \"data/prod\"\n\n[[watch]]\ndir = \"data/prod/\"\n",
            5,
            "watch[1].dir",
            "prod.toml:5: watch[1].dir: \"data/prod/\" is the same directory as watch[0] (\"data/prod\")",
        ),
        (
            "[[watch]]\ndir = \"data\"\nrecursive = true\n[[watch]]\ndir = \"./data/prod\"\n",
            5,
            "watch[1].dir",
            "prod.toml:5: watch[1].dir: \"./data/prod\" overlaps watch[0] (\"data\") and one of them is recursive; a database would be watched twice",
        ),
        ("[[watch]]\ndir = \"\"\n", 2, "watch[0].dir", "prod.toml:2: watch[0].dir: is empty"),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"file://./r\"\nregion = \"us-east-1\"\n",
            5,
            "storage.region",
            "prod.toml:5: storage.region: only applies to s3:// urls (storage.url is \"file://./r\")",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[storage]\nurl = \"s3://bucket\"\naccess_key_id = \"AK\"\n",
            5,
            "storage.access_key_id",
            "prod.toml:5: storage.access_key_id: is set but storage.secret_access_key is not (set both, or neither to use AWS_* variables)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\n\nmax_open_tenants = 0\n",
            5,
            "replication.max_open_tenants",
            "prod.toml:5: replication.max_open_tenants: must be at least 1 (it bounds open connections, it does not disable replication)",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\nsync_interval = \"0s\"\n",
            4,
            "replication.sync_interval",
            "prod.toml:4: replication.sync_interval: must be longer than 0s",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\nmin_checkpoint_pages = 0\n",
            4,
            "replication.min_checkpoint_pages",
            "prod.toml:4: replication.min_checkpoint_pages: must be at least 1",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[replication]\nmin_checkpoint_pages = 500\ntruncate_pages = 100\n",
            5,
            "replication.truncate_pages",
            "prod.toml:5: replication.truncate_pages: 100 is below min_checkpoint_pages (500); use a larger value, or 0 to disable",
        ),
        (
            "[[watch]]\ndir = \"data\"\nrecursive = true\n[replication]\nstate_dir = \"data/.state\"\n",
            5,
            "replication.state_dir",
            "prod.toml:5: replication.state_dir: \"data/.state\" is inside watch[0] (\"data\"); keep local state away from tenant databases",
        ),
        (
            "[[watch]]\ndir = \".litefleet\"\n",
            1,
            "replication.state_dir",
            "prod.toml:1: replication.state_dir: \".litefleet\" is inside watch[0] (\".litefleet\"); keep local state away from tenant databases",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[fleet]\nrescan_interval = \"100ms\"\n",
            4,
            "fleet.rescan_interval",
            "prod.toml:4: fleet.rescan_interval: must be at least 1s",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[fleet]\nstartup_concurrency = 0\n",
            4,
            "fleet.startup_concurrency",
            "prod.toml:4: fleet.startup_concurrency: must be at least 1",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[fleet]\npoll_interval = \"0s\"\n",
            4,
            "fleet.poll_interval",
            "prod.toml:4: fleet.poll_interval: must be longer than 0s",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[validation]\nenabled = true\ntenants = 0\n",
            5,
            "validation.tenants",
            "prod.toml:5: validation.tenants: must be at least 1",
        ),
        (
            "[storage]\nurl = \"file:///r\"\n[standby]\ndir = \"copies\"\nconcurrency = 0\n",
            5,
            "standby.concurrency",
            "prod.toml:5: standby.concurrency: must be at least 1",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[change_log]\nenabled = true\ninterval = \"10s\"\nretention = \"1m\"\n",
            6,
            "change_log.retention",
            "prod.toml:6: change_log.retention: must be at least 10× change_log.interval (1m 40s)",
        ),
        (
            "[storage]\nurl = \"file:///r\"\n[standby]\npoll_interval = \"5s\"\n",
            1,
            "watch",
            "prod.toml:1: watch: no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")",
        ),
        (
            "[[watch]]\ndir = \"a\"\n[log]\nlevel = \" \"\n",
            4,
            "log.level",
            "prod.toml:4: log.level: is empty (try \"info\" or \"litefleet=debug,info\")",
        ),
    ];
    for (text, line, key, msg) in cases {
        assert_fails(text, *line, key, msg);
    }
}

#[test]
fn inline_watch_array_is_located_too() {
    assert_fails(
        "watch = [\n  { dir = \"a\" },\n  { dir = \"a\" },\n]\n",
        3,
        "watch[1].dir",
        "prod.toml:3: watch[1].dir: \"a\" is the same directory as watch[0] (\"a\")",
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("prod.toml");
    std::fs::write(&path, "[[watch]]\ndir = \"a\"\n[fleet]\nbogus = 1\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert_eq!(err.line(), Some(4));
    assert!(err.to_string().starts_with(&format!("{}:4: unknown key \"bogus\" in [fleet]", path.display())), "{err}");
    let missing = tmp.path().join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(err.to_string().contains("missing.toml: cannot read config"), "{err}");
}

#[test]
fn validate_on_built_config_has_no_line() {
    let err = Config::default().validate().unwrap_err();
    assert_eq!(err.line(), None);
    assert_eq!(
        err.to_string(),
        "config: watch: no [[watch]] directory configured (add one: [[watch]] then dir = \"data/clients\")"
    );
}

const HOOKS: &str = "[[watch]]\ndir = \"a\"\n\n[hooks]\nmodule = \"hooks/examples/shard-prefix/shard-prefix.wasm\"\non_error = \"refuse\"\ntimeout = \"250ms\"\nfuel = 1000000\nmax_memory_mib = 32\nwatch = false\nqueue = 10\n\n[hooks.webhooks.ops]\nurl = \"https://hooks.example.com/T000/secret-token\"\nheaders_from_env = { Authorization = \"OPS_AUTH\" }\ntimeout = \"2s\"\nretries = 5\nbackoff = \"1s\"\n";

#[test]
fn hooks_table_parses() {
    let c = Config::parse(HOOKS, "prod.toml").unwrap();
    let h = c.hooks.expect("hooks");
    assert_eq!(h.module, PathBuf::from("hooks/examples/shard-prefix/shard-prefix.wasm"));
    assert_eq!(h.on_error, crate::hooks::OnError::Refuse);
    assert_eq!(
        (h.timeout, h.fuel, h.max_memory_mib, h.watch, h.queue),
        (Duration::from_millis(250), 1_000_000, 32, false, 10)
    );
    let ops = &h.webhooks["ops"];
    assert_eq!(ops.url.expose(), "https://hooks.example.com/T000/secret-token");
    assert_eq!(ops.headers_from_env.get("Authorization").map(String::as_str), Some("OPS_AUTH"));
    assert_eq!(ops.content_type, "application/json");
    assert_eq!((ops.timeout, ops.retries, ops.backoff), (Duration::from_secs(2), 5, Duration::from_secs(1)));
    // The webhook URL carries a token: never in Debug or the startup summary.
    let c = Config::parse(HOOKS, "prod.toml").unwrap();
    assert!(!format!("{c:?}").contains("secret-token"));
    assert!(!c.redacted_summary().contains("secret-token"));
    assert!(c.redacted_summary().contains("hooks=hooks/examples/shard-prefix/shard-prefix.wasm"));
    // Defaults: only `module` is required.
    let c = Config::parse("[[watch]]\ndir = \"a\"\n[hooks]\nmodule = \"h.wasm\"\n", "min.toml").unwrap();
    assert_eq!(c.hooks, Some(crate::hooks::HooksConfig::new("h.wasm")));
    assert_eq!(Config::parse(MINIMAL, "min.toml").unwrap().hooks, None);
}

#[test]
fn hooks_mistakes_name_line_and_key() {
    let w = "[[watch]]\ndir = \"a\"\n[hooks]\nmodule = \"h.wasm\"\n";
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (
            "[[watch]]\ndir = \"a\"\n[hooks]\non_error = \"refuse\"\n".into(),
            3,
            "hooks",
            "prod.toml:3: hooks: missing key \"module\"",
        ),
        (
            format!("{w}timeout = \"0s\""),
            5,
            "hooks.timeout",
            "prod.toml:5: hooks.timeout: must be longer than 0s and at most 10s",
        ),
        (
            format!("{w}timeout = \"1 sek\""),
            5,
            "hooks.timeout",
            "prod.toml:5: hooks.timeout: \"1 sek\" is not a duration (try \"1s\", or units like 500ms, 2m, 1h)",
        ),
        (
            format!("{w}on_error = \"ignore\""),
            5,
            "hooks.on_error",
            "prod.toml:5: hooks.on_error: \"ignore\" is not one of: default, refuse",
        ),
        (
            format!("{w}max_memory_mib = 0"),
            5,
            "hooks.max_memory_mib",
            "prod.toml:5: hooks.max_memory_mib: must be 1 to 1024",
        ),
        (
            format!("{w}fule = 1"),
            5,
            "hooks.fule",
            "prod.toml:5: unknown key \"fule\" in [hooks] (expected one of module, on_error, timeout, fuel, max_memory_mib, watch, queue, webhooks)",
        ),
        (
            format!("{w}[hooks.webhooks.ops]\nurl = \"ftp://x/secret\"\n"),
            6,
            "hooks.webhooks.ops.url",
            "prod.toml:6: hooks.webhooks.ops.url: must be an http:// or https:// URL with a host",
        ),
        (
            format!(
                "{w}[hooks.webhooks.ops]\nurl = \"https://x\"\nheaders_from_env = {{ Authorization = \"not a var\" }}\n"
            ),
            7,
            "hooks.webhooks.ops.headers_from_env",
            "prod.toml:7: hooks.webhooks.ops.headers_from_env: Authorization: \"not a var\" is not an environment variable name (like \"SLACK_AUTH\")",
        ),
        (
            format!("{w}[hooks.webhooks.\"a b\"]\nurl = \"https://x\"\n"),
            5,
            "hooks.webhooks.a b",
            "prod.toml:5: hooks.webhooks.a b: channel name \"a b\" must be 1 to 64 of A-Z a-z 0-9 . _ -",
        ),
    ];
    for (text, line, key, msg) in &cases {
        assert_fails(text, *line, key, msg);
    }
}

#[test]
fn secret_never_prints() {
    let s = Secret::new("p@ss");
    assert_eq!(format!("{s} {s:?}"), "*** ***");
    assert_eq!(s.expose(), "p@ss");
}

#[test]
fn legacy_directory_mode() {
    let c = Config::from_legacy(&["data/clients".into()], Some("backups"), None, None).unwrap();
    assert_eq!(c.watch, vec![WatchConfig::new("data/clients")]);
    assert_eq!(c.storage.url, StorageUrl::S3 { bucket: "backups".into(), path: String::new() });
    assert_eq!(c.storage.endpoint, None);
    assert_eq!(c.storage.root, "databases");

    let c = Config::from_legacy(
        &[" /data/prod/ , /data/staging/".into(), "data/dev".into()],
        Some("file://./out"),
        None,
        None,
    )
    .unwrap();
    let dirs: Vec<_> = c.watch.iter().map(|w| w.dir.clone()).collect();
    assert_eq!(dirs, [PathBuf::from("/data/prod/"), PathBuf::from("/data/staging/"), PathBuf::from("data/dev")]);
    assert_eq!(c.storage.url, StorageUrl::File { path: "./out".into() });
    // No bucket: the default local folder.
    let c = Config::from_legacy(&["d".into()], None, None, None).unwrap();
    assert_eq!(c.storage.url.to_string(), DEFAULT_STORAGE_URL);
}

#[test]
fn legacy_single_mode() {
    let c = Config::from_legacy(&[], Some("backups"), Some("/data/single.db"), None).unwrap();
    let single = c.single.clone().unwrap();
    assert_eq!(single.path, PathBuf::from("/data/single.db"));
    assert_eq!(single.prefix(&c.storage.root), "databases/single");
    assert!(c.watch.is_empty());

    let c = Config::from_legacy(&[], Some("backups"), Some("/data/legacy.db"), Some("legacy-system")).unwrap();
    let single = c.single.unwrap();
    assert_eq!(single.prefix(&Prefix::parse("databases").unwrap()), "databases/legacy-system");
}

#[test]
fn legacy_errors_name_the_flag() {
    let cases: Vec<(Result<Config, ConfigError>, &str)> = vec![
        (
            Config::from_legacy(&["a,,b".into()], None, None, None),
            "-watch-dir: entry 2 of \"a,,b\" is empty (separate directories with single commas)",
        ),
        (
            Config::from_legacy(&["a,".into()], None, None, None),
            "-watch-dir: entry 2 of \"a,\" is empty (separate directories with single commas)",
        ),
        (
            Config::from_legacy(&[], None, None, None),
            "-watch-dir: give -watch-dir DIR[,DIR...] (directory mode) or -dsn FILE (legacy single-database mode)",
        ),
        (
            Config::from_legacy(&["a".into()], None, Some("x.db"), None),
            "-dsn: cannot be combined with -watch-dir (use one mode at a time)",
        ),
        (Config::from_legacy(&["a".into()], None, None, Some("n")), "-db-name: only applies together with -dsn"),
        (
            Config::from_legacy(&[], None, Some("x.db"), Some("../up")),
            "-db-name: prefix \"../up\" has a \"..\" segment; relative path segments are not allowed",
        ),
        (
            Config::from_legacy(&[], None, Some("/data/dé jà.db"), None),
            "-dsn: cannot derive a storage name from \"/data/dé jà.db\"; give -db-name NAME",
        ),
        (
            Config::from_legacy(&["a".into()], Some("My Bucket"), None, None),
            "-bucket: \"My Bucket\" is not a valid S3 bucket name (3 to 63 characters of a-z 0-9 . -, starting and ending with a letter or digit)",
        ),
        (
            Config::from_legacy(&["a".into()], Some("gcs://b"), None, None),
            "-bucket: unknown scheme \"gcs\" in \"gcs://b\" (expected file://, s3://, gs://, abs://, sftp:// or memory://)",
        ),
        (
            Config::from_legacy(&["a,a/".into()], None, None, None),
            "-watch-dir: \"a/\" is the same directory as watch[0] (\"a\")",
        ),
    ];
    for (got, want) in cases {
        match got {
            Ok(c) => panic!("accepted, want {want:?}: {c:?}"),
            Err(e) => {
                assert!(matches!(e, ConfigError::Flag { .. }), "{e:?}");
                assert_eq!(e.to_string(), want);
            }
        }
    }
}

#[test]
fn storage_urls_roundtrip() {
    for s in ["file://./replicas", "file:///var/backups", "s3://bucket", "s3://bucket/a/b", "memory://"] {
        assert_eq!(StorageUrl::parse(s).unwrap().to_string(), s);
    }
    assert_eq!(StorageUrl::parse("s3://bucket/a/").unwrap().to_string(), "s3://bucket/a");
    assert!(StorageUrl::parse("file://").is_err());
    assert!(StorageUrl::parse("memory://x").is_err());
    assert!(StorageUrl::parse("s3://bucket//x").is_err());
    assert!(StorageUrl::parse("s3://key:secret@bucket").is_err());
}

#[test]
fn sftp_urls_and_keys() {
    for s in ["sftp://me@host/srv/backups", "sftp://me@10.0.0.2:2222/srv", "sftp://me@host"] {
        assert_eq!(StorageUrl::parse(s).unwrap_or_else(|e| panic!("{e}")).to_string(), s);
    }
    assert_eq!(
        StorageUrl::parse("sftp://me@host:2222/srv/b").ok(),
        Some(StorageUrl::Sftp { user: "me".into(), host: "host".into(), port: Some(2222), path: "srv/b".into() })
    );
    assert!(StorageUrl::parse("sftp://host/srv").unwrap_err().contains("names no user"));
    let e = StorageUrl::parse("sftp://me:pw@host/srv").unwrap_err();
    assert!(e.contains("refused") && !e.contains("pw@"), "{e}");
    assert!(StorageUrl::parse("sftp://me@host:ssh/srv").unwrap_err().contains("not a number"));
    let ok = Config::parse(
        &format!("{MINIMAL}[storage]\nurl = \"sftp://me@host/srv\"\nssh_key = \"/k\"\nstrict_host_key_checking = \"accept-new\"\n"),
        "prod.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.storage.strict_host_key_checking.as_deref(), Some("accept-new"));
    assert!(ok.redacted_summary().contains("credentials=from-config"), "{}", ok.redacted_summary());
    let (line, key, msg) =
        fail(&format!("{MINIMAL}[storage]\nurl = \"sftp://me@host/srv\"\nstrict_host_key_checking = \"maybe\"\n"));
    assert_eq!((line, key.as_deref()), (Some(5), Some("storage.strict_host_key_checking")), "{msg}");
    assert!(msg.contains("accept-new"), "{msg}");
    assert_fails(
        &format!("{MINIMAL}[storage]\nurl = \"s3://bkt\"\nssh_key = \"/k\"\n"),
        5,
        "storage.ssh_key",
        "prod.toml:5: storage.ssh_key: only applies to sftp:// urls (storage.url is \"s3://bkt\")",
    );
}

#[test]
fn gcs_urls_and_keys() {
    for s in ["gs://bkt", "gs://bkt/a/b"] {
        assert_eq!(StorageUrl::parse(s).unwrap_or_else(|e| panic!("{e}")).to_string(), s);
    }
    assert!(StorageUrl::parse("gs://user@bkt").unwrap_err().contains("refused"));
    assert!(StorageUrl::parse("gs://bkt:443/a").unwrap_err().contains("no user or port"));
    let ok = Config::parse(
        &format!("{MINIMAL}[storage]\nurl = \"gs://bkt\"\ncredentials_file = \"/etc/key.json\"\nendpoint = \"http://127.0.0.1:9023\"\n"),
        "prod.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.storage.url, StorageUrl::Gcs { bucket: "bkt".into(), path: String::new() });
    assert!(ok.redacted_summary().contains("credentials=from-config"), "{}", ok.redacted_summary());
    assert_fails(
        &format!("{MINIMAL}[storage]\nurl = \"s3://bkt\"\ncredentials_file = \"k.json\"\n"),
        5,
        "storage.credentials_file",
        "prod.toml:5: storage.credentials_file: only applies to gs:// urls (storage.url is \"s3://bkt\")",
    );
}

#[test]
fn azure_urls_and_keys() {
    for s in ["abs://acct@backups", "abs://acct@backups/a/b", "abs://backups"] {
        assert_eq!(StorageUrl::parse(s).unwrap_or_else(|e| panic!("{e}")).to_string(), s);
    }
    assert_eq!(
        StorageUrl::parse("abs://acct@backups/a").ok(),
        Some(StorageUrl::Azure { account: Some("acct".into()), container: "backups".into(), path: "a".into() })
    );
    // The account is a name; a key in the URL is refused, and shown as `***`.
    let e = StorageUrl::parse("abs://acct:s3cr3t@backups").unwrap_err();
    assert!(e.contains("refused") && e.contains("abs://***@backups") && !e.contains("s3cr3t"), "{e}");
    assert!(StorageUrl::parse("abs://acct@backups:10000").unwrap_err().contains("no port"));
    assert!(StorageUrl::parse("abs://@backups").is_err());
    let ok = Config::parse(
        &format!("{MINIMAL}[storage]\nurl = \"abs://acct@backups\"\nendpoint = \"http://127.0.0.1:10000/acct\"\naccount_key = \"k\"\n"),
        "prod.toml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.storage.account_key.as_ref().map(|k| k.expose()), Some("k"));
    assert!(ok.redacted_summary().contains("credentials=from-config"), "{}", ok.redacted_summary());
    assert_fails(
        &format!("{MINIMAL}[storage]\nurl = \"s3://bkt\"\naccount_key = \"k\"\n"),
        5,
        "storage.account_key",
        "prod.toml:5: storage.account_key: only applies to abs:// urls (storage.url is \"s3://bkt\")",
    );
    assert_fails(
        &format!("{MINIMAL}[storage]\nurl = \"abs://a@b\"\nregion = \"x\"\n"),
        5,
        "storage.region",
        "prod.toml:5: storage.region: only applies to s3:// urls (storage.url is \"abs://a@b\")",
    );
    assert_fails(
        &format!("{MINIMAL}[storage]\nurl = \"abs://a@b\"\naccount_key = \"k\"\nsas_token = \"t\"\n"),
        5,
        "storage.account_key",
        "prod.toml:5: storage.account_key: set one of connection_string, sas_token and account_key (they are alternatives)",
    );
}

// The seed's flag mode (`legacy`).
fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn seed_flags_are_recognized_in_every_spelling() {
    let Some(FlagMode::Run(f)) =
        flag_mode(&args(&["-watch-dir", "data/prod,data/staging", "--bucket=backups", "-log-format", "json"]))
    else {
        panic!("not flag mode")
    };
    assert_eq!(f.watch_dirs, ["data/prod,data/staging"]);
    assert_eq!(f.bucket.as_deref(), Some("backups"));
    assert_eq!(f.log_format, Some(LogFormat::Json));
    let c = f.config().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.watch.len(), 2);
    assert_eq!(c.storage.url.to_string(), "s3://backups");

    let Some(FlagMode::Run(f)) = flag_mode(&args(&["-dsn", "/data/legacy.db", "-db-name", "legacy-system"])) else {
        panic!("not flag mode")
    };
    let c = f.config().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        c.single.map(|s| s.prefix(&Prefix::parse("databases").unwrap())).as_deref(),
        Some("databases/legacy-system")
    );
}

#[test]
fn subcommands_are_not_flag_mode_and_mistakes_are_named() {
    assert_eq!(flag_mode(&args(&["daemon", "--config", "x.toml"])), None);
    assert_eq!(flag_mode(&args(&["--help"])), None);
    assert_eq!(flag_mode(&args(&["-h"])), Some(FlagMode::Help));
    assert_eq!(flag_mode(&args(&["-watch-dir", "a", "-help"])), Some(FlagMode::Help));
    assert_eq!(
        flag_mode(&args(&["-watch-dir", "a", "-nope", "1"])),
        Some(FlagMode::Bad("flag provided but not defined: -nope".into()))
    );
    assert_eq!(
        flag_mode(&args(&["-bucket", "b", "-watch-dir"])),
        Some(FlagMode::Bad("flag needs an argument: -watch-dir".into()))
    );
    let Some(FlagMode::Run(f)) = flag_mode(&args(&["-watch-dir", "a", "-listen", "nowhere"])) else { panic!() };
    assert!(f.config().unwrap_err().to_string().contains("-listen"));
}

#[test]
fn restore_section_is_checked_by_key() {
    let c = Config::parse("[[watch]]\ndir = \"a\"\n[restore]\ndir = \"/srv/restores\"\nconcurrency = 3\n", "prod.toml")
        .unwrap();
    assert_eq!((c.restore.dir.as_deref(), c.restore.concurrency), (Some(std::path::Path::new("/srv/restores")), 3));
    assert_eq!(Config::parse(MINIMAL, "x").unwrap().restore.concurrency, super::DEFAULT_RESTORE_CONCURRENCY);
    assert_fails(
        "[[watch]]\ndir = \"a\"\n[restore]\nconcurrency = 0\n",
        4,
        "restore.concurrency",
        "prod.toml:4: restore.concurrency: must be at least 1",
    );
    assert_fails(
        "[[watch]]\ndir = \"data\"\nrecursive = true\n[restore]\ndir = \"data/copies\"\n",
        5,
        "restore.dir",
        "prod.toml:5: restore.dir: \"data/copies\" is inside watch[0] (\"data\"); a restored copy there would become a tenant",
    );
    assert_fails(
        "[[watch]]\ndir = \"data\"\n[restore]\ndir = \"data/\"\n",
        4,
        "restore.dir",
        "prod.toml:4: restore.dir: \"data/\" is inside watch[0] (\"data\"); a restored copy there would become a tenant",
    );
}
