//! The seed's flag mode: its four flags (`-watch-dir`, `-bucket`, `-dsn`, `-db-name`)
//! and litefleet's few additions, in every spelling Go's `flag` package accepts (one or
//! two dashes, `-f v` or `-f=v`), mapped onto the same [`Config`] a file gives. Every
//! error names the flag.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError, LogFormat, SingleDb, StorageConfig, StorageUrl, WatchConfig, validate_bucket};
use crate::tenant::Prefix;

impl Config {
    /// Builds a config from the seed's flags.
    ///
    /// - `watch_dirs`: each `-watch-dir` value, comma separated (`"data/prod,data/staging"`),
    ///   entries trimmed; an empty entry is an error.
    /// - `bucket`: `-bucket NAME` is the S3 bucket `s3://NAME` (endpoint and region come
    ///   from `AWS_ENDPOINT_URL` / `AWS_REGION` at run time); a URL (`file://…`, `s3://…`,
    ///   `memory://`) is used as it is; absent means the default `file://./replicas`.
    /// - `dsn` (+ `db_name`): legacy single-database mode, stored under
    ///   `<root>/<db-name or file stem>/`; cannot be combined with `-watch-dir`.
    ///
    /// Every error names the flag.
    pub fn from_legacy(
        watch_dirs: &[String],
        bucket: Option<&str>,
        dsn: Option<&str>,
        db_name: Option<&str>,
    ) -> Result<Config, ConfigError> {
        let flag = |flag: &'static str, message: String| ConfigError::Flag { flag, message };
        let mut config = Config::default();
        for value in watch_dirs {
            for (i, entry) in value.split(',').enumerate() {
                let entry = entry.trim();
                if entry.is_empty() {
                    return Err(flag(
                        "-watch-dir",
                        format!("entry {} of {value:?} is empty (separate directories with single commas)", i + 1),
                    ));
                }
                config.watch.push(WatchConfig::new(entry));
            }
        }
        match (dsn, config.watch.is_empty()) {
            (Some(_), false) => {
                return Err(flag("-dsn", "cannot be combined with -watch-dir (use one mode at a time)".into()));
            }
            (None, true) => {
                return Err(flag(
                    "-watch-dir",
                    "give -watch-dir DIR[,DIR...] (directory mode) or -dsn FILE (legacy single-database mode)".into(),
                ));
            }
            _ => {}
        }
        if let (Some(_), None) = (db_name, dsn) {
            return Err(flag("-db-name", "only applies together with -dsn".into()));
        }
        if let Some(dsn) = dsn {
            let dsn = dsn.trim();
            if dsn.is_empty() {
                return Err(flag("-dsn", "is empty".into()));
            }
            let name = match db_name {
                Some(name) => Prefix::parse(name).map_err(|e| flag("-db-name", e.to_string()))?,
                None => {
                    Path::new(dsn).file_stem().and_then(|s| s.to_str()).and_then(|s| Prefix::parse(s).ok()).ok_or_else(
                        || flag("-dsn", format!("cannot derive a storage name from {dsn:?}; give -db-name NAME")),
                    )?
                }
            };
            config.single = Some(SingleDb { path: PathBuf::from(dsn), name });
        }
        if let Some(bucket) = bucket {
            let bucket = bucket.trim();
            config.storage.url = if bucket.contains("://") {
                StorageUrl::parse(bucket)
            } else {
                validate_bucket(bucket).map(|()| StorageUrl::S3 { bucket: bucket.to_owned(), path: String::new() })
            }
            .map_err(|m| flag("-bucket", m))?;
        }
        if let Some(p) = config.first_problem() {
            return Err(flag(flag_of(&p.key), p.message));
        }
        config.origin = super::Origin::flags();
        Ok(config)
    }
}

/// The seed's flag that sets the config key `key` (a dotted path).
pub fn flag_of(key: &str) -> &'static str {
    match key.split(['.', '[']).next().unwrap_or("") {
        "watch" => "-watch-dir",
        "storage" => "-bucket",
        "single" => "-dsn",
        "http" => "-listen",
        _ => "flags",
    }
}

/// The seed's usage text for its flags (`-h`), then litefleet's additions.
pub const SEED_USAGE: &str = "Usage:
  -watch-dir string
        directory to watch for GUID.db files (comma-separated for multiple)
  -bucket string
        s3 replica bucket
  -dsn string
        datasource name (legacy mode)
  -db-name string
        database name for organizing in S3 (optional)

litefleet additions:
  -listen string
        dashboard and API address (default \"127.0.0.1:8080\")
  -state-dir string
        local working state (default \".litefleet\")
  -log-format string
        text or json (default \"text\")
  -log-level string
        log filter, e.g. info or debug (default \"info\")

-bucket NAME is an S3 bucket (endpoint and region from AWS_ENDPOINT_URL and
AWS_REGION, credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); a URL
(file://./replicas, s3://bucket/path) is accepted too. Without -bucket, replicas go
to ./replicas. For everything else use a config file: litefleet daemon --config FILE
(litefleet --help lists every command).
";

/// The seed's flags, as given.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeedFlags {
    /// Each `-watch-dir` value (comma separated directories).
    pub watch_dirs: Vec<String>,
    /// `-bucket`.
    pub bucket: Option<String>,
    /// `-dsn`.
    pub dsn: Option<String>,
    /// `-db-name`.
    pub db_name: Option<String>,
    /// `-listen`.
    pub listen: Option<String>,
    /// `-state-dir`.
    pub state_dir: Option<String>,
    /// `-log-format`.
    pub log_format: Option<LogFormat>,
    /// `-log-level`.
    pub log_level: Option<String>,
}

impl SeedFlags {
    /// The configuration these flags describe.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut c = Config::from_legacy(
            &self.watch_dirs,
            self.bucket.as_deref(),
            self.dsn.as_deref(),
            self.db_name.as_deref(),
        )?;
        let flag = |flag: &'static str, message: String| ConfigError::Flag { flag, message };
        if let Some(l) = &self.listen {
            c.http.listen = l.parse().map_err(|e| flag("-listen", format!("{l:?} is not an address: {e}")))?;
        }
        if let Some(d) = &self.state_dir {
            c.replication.state_dir = Some(PathBuf::from(d));
        }
        if let Some(l) = &self.log_level {
            c.log.level = l.clone();
        }
        c.validate()?;
        Ok(c)
    }
}

/// What the command line asks for when it uses the seed's flags.
#[derive(Debug, PartialEq, Eq)]
pub enum FlagMode {
    /// `-h` / `-help`: print the seed's usage.
    Help,
    /// Run the daemon with these flags.
    Run(SeedFlags),
    /// A mistake, with Go's `flag` wording.
    Bad(String),
}

/// Recognizes the seed's flag mode: any of its flags (one or two dashes, `-f v` or
/// `-f=v`) anywhere, or a lone `-h`/`-help`. `None`: use the subcommands.
pub fn flag_mode(args: &[String]) -> Option<FlagMode> {
    const SEED: [&str; 4] = ["watch-dir", "bucket", "dsn", "db-name"];
    let name = |a: &str| -> Option<String> {
        let bare = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
        Some(bare.split('=').next().unwrap_or(bare).to_owned())
    };
    if let [one] = args
        && matches!(one.as_str(), "-h" | "-help")
    {
        return Some(FlagMode::Help);
    }
    if !args.iter().any(|a| name(a).is_some_and(|n| SEED.contains(&n.as_str()))) {
        return None;
    }
    let mut flags = SeedFlags::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(n) = name(arg) else {
            return Some(FlagMode::Bad(format!("unexpected argument {arg:?} (flags only)")));
        };
        if n == "h" || n == "help" {
            return Some(FlagMode::Help);
        }
        let value = match arg.split_once('=') {
            Some((_, v)) => v.to_owned(),
            None => {
                i += 1;
                match args.get(i) {
                    Some(v) => v.clone(),
                    None => return Some(FlagMode::Bad(format!("flag needs an argument: -{n}"))),
                }
            }
        };
        match n.as_str() {
            "watch-dir" => flags.watch_dirs.push(value),
            "bucket" => flags.bucket = Some(value),
            "dsn" => flags.dsn = Some(value),
            "db-name" => flags.db_name = Some(value),
            "listen" => flags.listen = Some(value),
            "state-dir" => flags.state_dir = Some(value),
            "log-level" => flags.log_level = Some(value),
            "log-format" => {
                flags.log_format = Some(match value.as_str() {
                    "text" => LogFormat::Text,
                    "json" => LogFormat::Json,
                    _ => {
                        return Some(FlagMode::Bad(format!(
                            "invalid value {value:?} for flag -log-format: text or json"
                        )));
                    }
                })
            }
            _ => return Some(FlagMode::Bad(format!("flag provided but not defined: -{n}"))),
        }
        i += 1;
    }
    Some(FlagMode::Run(flags))
}

impl StorageConfig {
    /// A `[storage]` table from one replica URL, as `litefleet replicate` and `-bucket`
    /// take it: a bare path or `file://…` (a folder), `s3://bucket/path` with an optional
    /// `?endpoint=…&region=…&force-path-style=…` (Litestream's `forcePathStyle` too), or
    /// `memory://`. Credentials still come from the environment.
    pub fn from_url(url: &str) -> Result<StorageConfig, String> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let parsed = if base.contains("://") {
            StorageUrl::parse(base)?
        } else if base.is_empty() {
            return Err("the replica URL is empty".to_owned());
        } else {
            StorageUrl::File { path: PathBuf::from(base) }
        };
        let mut c = StorageConfig { url: parsed, root: Prefix::none(), ..StorageConfig::default() };
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let v = url::form_urlencoded::parse(format!("v={v}").as_bytes()).map(|(_, v)| v.into_owned()).next();
            let v = v.unwrap_or_default();
            if k == "endpoint" && matches!(c.url.scheme(), "s3" | "gs" | "abs") {
                c.endpoint = Some(v.trim_end_matches('/').to_owned());
                continue;
            }
            if !c.url.is_s3() {
                return Err(format!("{url:?}: query parameters other than endpoint only apply to s3:// urls"));
            }
            match k {
                "region" => c.region = Some(v),
                "force-path-style" | "forcePathStyle" | "force_path_style" => {
                    c.force_path_style = Some(match v.as_str() {
                        "" | "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(format!("{url:?}: {k} must be true or false")),
                    })
                }
                // Litestream's other S3 options (sign-payload, skip-verify, …) do not
                // change where the replica is.
                _ => {}
            }
        }
        Ok(c)
    }
}
