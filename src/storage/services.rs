//! One opendal `Operator` per storage service, from a replica URL spelled as Litestream
//! spells it, plus what the URL cannot hold ([`Options`]: `[storage]` keys, else each
//! ecosystem's usual environment variables). Credentials are registered with
//! [`crate::redact`] so no log line can show them; a URL with a password in it is
//! refused (a user name is fine where the service has one: `abs://account@…`,
//! `sftp://user@…`).
//!
//! | URL | service | layout |
//! |---|---|---|
//! | `file:///path`, a bare path | a local folder | `ltx/<level>/` |
//! | `s3://bucket/path?endpoint=…&region=…&force-path-style=…` | S3 and compatibles | `<level %04x>/` |
//! | `gs://bucket/path` | Google Cloud Storage | `ltx/<level>/` |
//! | `abs://[account@]container/path` | Azure Blob Storage | `ltx/<level>/` |
//! | `sftp://user@host[:port]/path` | SFTP (through the system's `ssh`) | `ltx/<level>/` |
//! | `memory://name` | process memory (tests) | `ltx/<level>/` |

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use opendal::{Operator, services};

use super::{CREDENTIALS_IN_URL, DEFAULT_REGION, Error, Layout, Options, Result};

/// The kind of service a storage lives on: how an object reaches its final name
/// complete, and where its time goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// A local folder: `durable::publish` (temporary file, fsync, rename, fsync dir).
    Folder,
    /// S3: one PUT; `x-amz-meta-litestream-timestamp`.
    S3,
    /// Google Cloud Storage: one upload; `x-goog-meta-litestream-timestamp`.
    Gcs,
    /// Azure Blob Storage: one Put Blob; `x-ms-meta-litestreamtimestamp`.
    Azure,
    /// SFTP: a temporary name, then a rename over the final name.
    Sftp,
    /// Process memory (tests).
    Memory,
}

impl Service {
    /// The URL scheme.
    pub fn scheme(self) -> &'static str {
        match self {
            Service::Folder => "file",
            Service::S3 => "s3",
            Service::Gcs => "gs",
            Service::Azure => "abs",
            Service::Sftp => "sftp",
            Service::Memory => "memory",
        }
    }

    /// Whether a file is published under a temporary name and then renamed: the
    /// service's own write is not atomic.
    pub fn renames(self) -> bool {
        self == Service::Sftp
    }

    /// The user-metadata key Litestream reads a file's time from, where it has one.
    pub fn timestamp_key(self) -> Option<&'static str> {
        match self {
            Service::S3 | Service::Gcs => Some(super::TIMESTAMP_METADATA_KEY),
            // Azure metadata names are C# identifiers: no hyphen.
            Service::Azure => Some("litestreamtimestamp"),
            _ => None,
        }
    }
}

/// What `from_url` builds: the operator and where replicas live in it.
pub(super) struct Built {
    pub op: Operator,
    pub service: Service,
    pub layout: Layout,
    /// Path inside the operator below which replicas live ("" or "a/b/").
    pub base: String,
    /// Printable URL of the base (no credentials, no query).
    pub location: String,
    /// The query `litefleet restore` needs (`endpoint=…`), or "".
    pub query: String,
    /// The local root folder of a folder replica.
    pub fs_root: Option<PathBuf>,
}

/// A URL's parts: `scheme://[user@]host[:port]/path?query`.
struct Parts<'u> {
    user: Option<&'u str>,
    host: &'u str,
    port: Option<u16>,
    path: &'u str,
    query: HashMap<String, String>,
}

fn parts<'u>(rest: &'u str, bad: &dyn Fn(&str) -> Error) -> Result<Parts<'u>> {
    let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = loc.split_once('/').unwrap_or((loc, ""));
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, _)) if u.contains(':') => return Err(bad(CREDENTIALS_IN_URL)),
        Some(("", _)) => return Err(bad("an empty user name before '@'")),
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.parse::<u16>().map_err(|_| bad(&format!("port {p:?} is not a number")))?)),
        None => (hostport, None),
    };
    if host.is_empty() {
        return Err(bad("no host, bucket or container name"));
    }
    let mut q = HashMap::new();
    for kv in query.split('&').filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        q.insert(k.to_ascii_lowercase().replace('_', "-"), super::percent_decode(v));
    }
    Ok(Parts { user, host, port, path, query: q })
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Registers credentials for log scrubbing.
fn secret(values: &[&Option<String>]) {
    for v in values.iter().copied().flatten() {
        crate::redact::register(v);
    }
}

fn op_err(what: String) -> impl FnOnce(opendal::Error) -> Error {
    move |source| Error::Op { what, source }
}

/// Builds the operator of a replica URL (see the module doc).
pub(super) fn build(url: &str, opts: &Options) -> Result<Built> {
    let bad = |reason: &str| Error::Url { url: crate::redact::userinfo(url), reason: reason.to_string() };
    if opts.endpoint.as_deref().is_some_and(crate::redact::has_userinfo) {
        return Err(bad(CREDENTIALS_IN_URL));
    }
    let Some((scheme, rest)) = url.split_once("://") else { return folder(url, &bad) };
    // Only these services have a user; everywhere else a '@' is a credential.
    let user_allowed = matches!(scheme, "abs" | "sftp");
    if !user_allowed && crate::redact::has_userinfo(url) {
        return Err(bad(CREDENTIALS_IN_URL));
    }
    match scheme {
        "file" => folder(rest, &bad),
        "memory" => Ok(Built {
            op: super::memory_operator(rest),
            service: Service::Memory,
            layout: Layout::Dir,
            base: String::new(),
            location: url.to_string(),
            query: String::new(),
            fs_root: None,
        }),
        "s3" => s3(parts(rest, &bad)?, opts, &bad),
        "gs" => gcs(parts(rest, &bad)?, opts),
        "abs" => azure(parts(rest, &bad)?, opts, &bad),
        "sftp" => sftp(parts(rest, &bad)?, opts, &bad),
        _ => Err(bad("unknown scheme (use file://, s3://, gs://, abs://, sftp:// or memory://)")),
    }
}

fn folder(path: &str, bad: &dyn Fn(&str) -> Error) -> Result<Built> {
    if path.is_empty() {
        return Err(bad("empty path"));
    }
    let dir = super::absolute(Path::new(path))?;
    // Nothing is created until the first upload (a daemon that fails to start writes
    // nothing): the operator is rooted at the deepest folder that exists, and the rest
    // of the path is the base of every key. A path that can never hold a folder fails
    // now.
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(bad(&format!("{} is not a folder", existing.display())));
    }
    let base = super::normalize_dir(&dir.strip_prefix(existing).unwrap_or(Path::new("")).to_string_lossy());
    let root = existing.to_string_lossy().to_string();
    let op = Operator::new(services::Fs::default().root(&root)).map_err(op_err(format!("folder {root}")))?;
    Ok(Built {
        op,
        service: Service::Folder,
        layout: Layout::Dir,
        base,
        location: format!("file://{}", dir.display()),
        query: String::new(),
        fs_root: Some(existing.to_path_buf()),
    })
}

fn s3(p: Parts, opts: &Options, bad: &dyn Fn(&str) -> Error) -> Result<Built> {
    let bucket = p.host;
    let q = &p.query;
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| q.get("endpoint").cloned())
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"));
    let region = opts
        .region
        .clone()
        .or_else(|| q.get("region").cloned())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let path_style = match opts.force_path_style {
        Some(b) => b,
        None => match q.get("force-path-style").map(String::as_str) {
            None | Some("true") | Some("1") | Some("") => true,
            Some("false") | Some("0") => false,
            Some(_) => return Err(bad("force-path-style must be true or false")),
        },
    };
    let key = opts.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret_key = opts.secret_access_key.clone().or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let token = env("AWS_SESSION_TOKEN");
    secret(&[&key, &secret_key, &token]);
    let mut b =
        services::S3::default().bucket(bucket).root("/").region(&region).disable_config_load().disable_ec2_metadata();
    if let Some(ep) = &endpoint {
        b = b.endpoint(ep);
    }
    if !path_style {
        b = b.enable_virtual_host_style();
    }
    match (key, secret_key) {
        (Some(k), Some(s)) => {
            b = b.access_key_id(&k).secret_access_key(&s);
            if let Some(t) = &token {
                b = b.session_token(t);
            }
        }
        (None, None) => b = b.skip_signature(),
        _ => return Err(bad("set both an access key id and a secret access key, or neither")),
    }
    let op = Operator::new(b).map_err(op_err(format!("s3 bucket {bucket}")))?;
    let base = super::normalize_dir(p.path);
    let query = match &endpoint {
        Some(ep) => format!("endpoint={ep}&region={region}&force-path-style={path_style}"),
        None => String::new(),
    };
    Ok(Built {
        op,
        service: Service::S3,
        layout: Layout::Hex,
        location: format!("s3://{bucket}/{}", base.trim_end_matches('/')),
        base,
        query,
        fs_root: None,
    })
}

/// `gs://bucket/path`. Credentials: `[storage] credentials_file`, else
/// `GOOGLE_APPLICATION_CREDENTIALS`, else gcloud's application-default credentials or
/// the VM's metadata server. An emulator: `[storage] endpoint` or `STORAGE_EMULATOR_HOST`
/// (as Google's own clients), with no credentials.
fn gcs(p: Parts, opts: &Options) -> Result<Built> {
    let bucket = p.host;
    let emulator = env("STORAGE_EMULATOR_HOST")
        .map(|h| if h.contains("://") { h } else { format!("http://{h}") })
        .map(|h| h.trim_end_matches('/').to_owned());
    let endpoint = opts.endpoint.clone().or_else(|| p.query.get("endpoint").cloned()).or(emulator);
    let credentials = opts.credentials_file.clone().or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS"));
    let mut b = services::Gcs::default().bucket(bucket).root("/");
    if let Some(ep) = &endpoint {
        b = b.endpoint(ep);
    }
    match &credentials {
        Some(path) => b = b.credential_path(path).disable_vm_metadata(),
        // An emulator wants no token, and there is no metadata server to ask.
        None if endpoint.is_some() => b = b.skip_signature().disable_vm_metadata().disable_config_load(),
        None => {}
    }
    let op = Operator::new(b).map_err(op_err(format!("gs bucket {bucket}")))?;
    let base = super::normalize_dir(p.path);
    Ok(Built {
        op,
        service: Service::Gcs,
        layout: Layout::Dir,
        location: format!("gs://{bucket}/{}", base.trim_end_matches('/')),
        base,
        query: endpoint.map(|e| format!("endpoint={e}")).unwrap_or_default(),
        fs_root: None,
    })
}

/// `abs://[account@]container/path`. The account: the URL's user, else
/// `AZURE_STORAGE_ACCOUNT` (or the connection string's). Credentials, first found:
/// `[storage] connection_string` / `AZURE_STORAGE_CONNECTION_STRING`; `sas_token` /
/// `AZURE_STORAGE_SAS_TOKEN`; `account_key` / `AZURE_STORAGE_KEY` (Litestream's
/// `LITESTREAM_AZURE_ACCOUNT_KEY` too). The endpoint: `[storage] endpoint` (Azurite:
/// `http://127.0.0.1:10000/devstoreaccount1`), else the connection string's, else
/// `https://<account>.blob.core.windows.net`.
fn azure(p: Parts, opts: &Options, bad: &dyn Fn(&str) -> Error) -> Result<Built> {
    let container = p.host;
    if p.port.is_some() {
        return Err(bad("a container name has no port (the endpoint goes in [storage] endpoint)"));
    }
    let conn = opts.connection_string.clone().or_else(|| env("AZURE_STORAGE_CONNECTION_STRING"));
    let sas =
        opts.sas_token.clone().or_else(|| env("AZURE_STORAGE_SAS_TOKEN")).or_else(|| env("LITESTREAM_AZURE_SAS_TOKEN"));
    let key =
        opts.account_key.clone().or_else(|| env("AZURE_STORAGE_KEY")).or_else(|| env("LITESTREAM_AZURE_ACCOUNT_KEY"));
    secret(&[&conn, &sas, &key]);
    // The key or SAS inside a connection string is a secret by itself too.
    for part in conn.iter().flat_map(|c| c.split(';')) {
        if let Some((k, v)) = part.split_once('=')
            && matches!(k.trim(), "AccountKey" | "SharedAccessSignature")
        {
            secret(&[&Some(v.trim().to_owned())]);
        }
    }
    let account = p.user.map(str::to_owned).or_else(|| env("AZURE_STORAGE_ACCOUNT"));
    let mut b = match &conn {
        Some(c) => services::Azblob::from_connection_string(c)
            .map_err(|e| Error::Op { what: "the Azure connection string".into(), source: e })?,
        None => services::Azblob::default(),
    };
    b = b.container(container).root("/");
    if let Some(a) = &account {
        b = b.account_name(a);
    }
    let given = opts.endpoint.clone().or_else(|| p.query.get("endpoint").cloned());
    let endpoint = match (&given, &account, &conn) {
        (Some(ep), _, _) => Some(ep.clone()),
        (None, Some(a), None) => Some(format!("https://{a}.blob.core.windows.net")),
        (None, _, Some(_)) => None,
        (None, None, None) => {
            return Err(bad("no storage account: write abs://<account>@<container>/… or set AZURE_STORAGE_ACCOUNT"));
        }
    };
    if let Some(ep) = &endpoint {
        b = b.endpoint(ep);
    }
    if let Some(s) = &sas {
        b = b.sas_token(s);
    } else if let Some(k) = &key {
        b = b.account_key(k);
    }
    let op = Operator::new(b).map_err(op_err(format!("abs container {container}")))?;
    let base = super::normalize_dir(p.path);
    let at = account.map(|a| format!("{a}@")).unwrap_or_default();
    Ok(Built {
        op,
        service: Service::Azure,
        layout: Layout::Dir,
        location: format!("abs://{at}{container}/{}", base.trim_end_matches('/')),
        base,
        query: given.map(|e| format!("endpoint={e}")).unwrap_or_default(),
        fs_root: None,
    })
}

/// `sftp://user@host[:port]/path` (the path is absolute on the server, as
/// Litestream's). opendal runs the system's `ssh`, so `~/.ssh/config`, the agent
/// (`SSH_AUTH_SOCK`) and `~/.ssh/known_hosts` apply as for any ssh command; `[storage]
/// ssh_key` picks one private key, `strict_host_key_checking` is ssh's option of that
/// name (`yes`, the default; `accept-new`; `no`).
fn sftp(p: Parts, opts: &Options, bad: &dyn Fn(&str) -> Error) -> Result<Built> {
    let Some(user) = p.user else { return Err(bad("no user: write sftp://<user>@<host>/<path>")) };
    let strategy = match opts.strict_host_key_checking.as_deref().unwrap_or("yes") {
        "yes" => "strict",
        "accept-new" => "add",
        "no" => "accept",
        other => return Err(bad(&format!("strict_host_key_checking {other:?}: use yes, accept-new or no"))),
    };
    let endpoint = match p.port {
        Some(port) => format!("ssh://{user}@{}:{port}", p.host),
        None => format!("ssh://{user}@{}", p.host),
    };
    let mut b = services::Sftp::default().endpoint(&endpoint).user(user).root("/").known_hosts_strategy(strategy);
    if let Some(k) = &opts.ssh_key {
        b = b.key(&k.to_string_lossy());
    }
    let op = Operator::new(b).map_err(op_err(format!("sftp host {}", p.host)))?;
    let base = super::normalize_dir(p.path);
    let port = p.port.map(|p| format!(":{p}")).unwrap_or_default();
    Ok(Built {
        op,
        service: Service::Sftp,
        layout: Layout::Dir,
        location: format!("sftp://{user}@{}{port}/{}", p.host, base.trim_end_matches('/')),
        base,
        query: String::new(),
        fs_root: None,
    })
}
