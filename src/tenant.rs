//! Tenants: who a database file belongs to, and where its replica may live.
//!
//! This module owns the naming rules of the fleet: the strict GUID form of a tenant id
//! (and the seed's "stem" fallback for other names), which file names are tenant
//! databases at all (`classify`), what a storage prefix may look like
//! (`validate_prefix`, applied to config values and to anything a hook returns) and the
//! [`Prefix`] it yields, the default prefix `<root>[/<dir prefix>]/<id>`, and the
//! path-safety check that keeps a
//! symlink from leading a tenant outside its watch directory (`inside`).
//!
//! It is pure: no I/O except `inside`, which canonicalizes a path. It must never open a
//! database, touch storage, log, or depend on any other module of ours — every other
//! room asks it, it asks no one.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The storage root used when the config names none: replicas live under
/// `databases/<id>/`, exactly as the seed shows (`s3://bucket/databases/<GUID>/`).
pub const DEFAULT_ROOT: &str = "databases";

/// The file extensions that mark a tenant database when the config names none
/// (the seed's list: `.db` recommended, `.sqlite`, `.sqlite3`).
pub const DEFAULT_EXTENSIONS: [&str; 3] = ["db", "sqlite", "sqlite3"];

/// Longest stem accepted as a fallback tenant id: long enough for any sane name, short
/// enough that `<root>/<prefix>/<id>/` stays far below S3's 1024-byte key limit.
pub const MAX_STEM_LEN: usize = 128;

/// Longest storage prefix accepted (bytes); leaves room below S3's 1024-byte key limit
/// for the `<level>/<min>-<max>.ltx` names the replica layout appends.
pub const MAX_PREFIX_LEN: usize = 512;

/// Length of the canonical GUID text `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const GUID_LEN: usize = 36;

/// Byte offsets of the four hyphens in a GUID.
const GUID_HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// File-name suffixes SQLite writes next to a database; never databases themselves.
const SQLITE_SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Extensions of temporary and editor files that may sit in a watch directory.
const TEMP_EXTENSIONS: [&str; 6] = ["tmp", "temp", "swp", "swo", "swx", "part"];

/// Prefix SQLite gives its own temporary files (`etilqs_…`, "sqlite" backwards).
const SQLITE_TEMP_PREFIX: &str = "etilqs_";

/// How a tenant id was formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TenantKind {
    /// A strict GUID, normalized to lowercase.
    Guid,
    /// A sanitized file stem (the seed's fallback for non-GUID names, `non_guid = "stem"`).
    Stem,
}

/// The identity of one tenant: a GUID (normalized to lowercase), or — only when the
/// config says `non_guid = "stem"` — a sanitized file stem.
///
/// GUIDs are normalized to lowercase so that `ABCDEF01-….db` and `abcdef01-….db` are
/// the same tenant (and collide loudly instead of writing two replicas whose names
/// differ only by case). Its text is its storage name: `databases/<id>/`.
#[derive(Clone)]
pub struct TenantId {
    /// The id as stored and shown (lowercase for GUIDs, as written for stems).
    text: Box<str>,
    /// Whether `text` is a GUID or a stem; a function of `text`, kept to avoid re-parsing.
    kind: TenantKind,
}

/// Why a string is not a tenant id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TenantIdError {
    /// The string is not `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex).
    #[error("{0:?} is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, hex digits)")]
    NotGuid(String),
    /// The stem is empty or longer than [`MAX_STEM_LEN`].
    #[error("{0:?} is not a usable tenant name: it must be 1 to {MAX_STEM_LEN} characters long")]
    StemLength(String),
    /// The stem is `.` or `..`.
    #[error("{0:?} is not a usable tenant name")]
    StemDots(String),
    /// The stem holds a character outside `[A-Za-z0-9._-]`.
    #[error("{stem:?} is not a usable tenant name: {ch:?} is not allowed (only A-Z a-z 0-9 . _ -)")]
    StemChar {
        /// The refused stem.
        stem: String,
        /// The first character outside the allowed set.
        ch: char,
    },
}

impl TenantId {
    /// Parses a strict GUID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, hex digits, no
    /// braces, no `urn:uuid:`), normalized to lowercase.
    pub fn guid(s: &str) -> Result<TenantId, TenantIdError> {
        if !is_guid(s) {
            return Err(TenantIdError::NotGuid(s.to_owned()));
        }
        Ok(TenantId { text: s.to_ascii_lowercase().into_boxed_str(), kind: TenantKind::Guid })
    }

    /// Builds an id from a file stem for the seed's fallback mode (`non_guid = "stem"`):
    /// `[A-Za-z0-9._-]`, 1 to [`MAX_STEM_LEN`] characters, not `.` or `..`. A stem that
    /// is a GUID yields the GUID id, so one tenant never has two spellings.
    pub fn from_stem(stem: &str) -> Result<TenantId, TenantIdError> {
        if is_guid(stem) {
            return TenantId::guid(stem);
        }
        if stem.is_empty() || stem.len() > MAX_STEM_LEN {
            return Err(TenantIdError::StemLength(stem.to_owned()));
        }
        if stem == "." || stem == ".." {
            return Err(TenantIdError::StemDots(stem.to_owned()));
        }
        if let Some(ch) = stem.chars().find(|c| !is_name_char(*c)) {
            return Err(TenantIdError::StemChar { stem: stem.to_owned(), ch });
        }
        Ok(TenantId { text: stem.into(), kind: TenantKind::Stem })
    }

    /// The id's text: what logs, the API and storage prefixes show.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the id is a GUID or a fallback stem.
    pub fn kind(&self) -> TenantKind {
        self.kind
    }

    /// True for GUID ids.
    pub fn is_guid(&self) -> bool {
        self.kind == TenantKind::Guid
    }
}

// Equality, order and hash use the text only: `kind` is derived from it.
impl PartialEq for TenantId {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}
impl Eq for TenantId {}
impl Hash for TenantId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}
impl PartialOrd for TenantId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TenantId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.text.cmp(&other.text)
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        &*self.text == other
    }
}
impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        &*self.text == *other
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.text)
    }
}

/// Parses a GUID (strict), or else a valid stem — the inverse of `Display`, so ids
/// round-trip through JSON, state files and the command line.
impl FromStr for TenantId {
    type Err = TenantIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantId::from_stem(s)
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// True if `s` is exactly `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` with hex digits.
fn is_guid(s: &str) -> bool {
    s.len() == GUID_LEN
        && s.bytes().enumerate().all(|(i, b)| if GUID_HYPHENS.contains(&i) { b == b'-' } else { b.is_ascii_hexdigit() })
}

/// The character set of stems and prefix segments: `[A-Za-z0-9._-]`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// What to do with a database file whose stem is not a GUID (config `fleet.non_guid`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonGuidPolicy {
    /// Do not replicate it; list it as skipped (the default; the seed's `regular-name.db`).
    #[default]
    Skip,
    /// Use the sanitized file stem as the tenant id (the seed's "fallback").
    Stem,
}

/// What a file in a watch directory is, as far as the fleet cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classified {
    /// A tenant database.
    Tenant(TenantId),
    /// A database file (right extension) that will not be replicated; `reason` says why,
    /// for one warning in the log and a line in the status.
    Skipped {
        /// Why it is skipped, written for an operator.
        reason: String,
    },
    /// Not a database at all: another extension, a SQLite sidecar (`-wal`, `-shm`,
    /// `-journal`), a dotfile, or a temporary/editor file. Not worth a log line.
    Ignored,
}

/// Classifies one path by its file name only (no I/O).
///
/// `extensions` are compared case-insensitively, with or without a leading dot. Hidden
/// files, SQLite sidecars and temp files are `Ignored`; a database name whose stem is
/// not a GUID is `Skipped` under [`NonGuidPolicy::Skip`] and becomes a stem id under
/// [`NonGuidPolicy::Stem`] (or `Skipped`, if the stem is not a usable name).
pub fn classify(path: &Path, extensions: &[String], non_guid: NonGuidPolicy) -> Classified {
    let Some(stem) = candidate_stem(path, extensions) else {
        return Classified::Ignored;
    };
    let Some(stem) = stem.to_str() else {
        return Classified::Skipped { reason: format!("file name {:?} is not valid UTF-8", stem) };
    };
    match TenantId::guid(stem) {
        Ok(id) => Classified::Tenant(id),
        Err(err) => match non_guid {
            NonGuidPolicy::Skip => {
                Classified::Skipped { reason: format!("{err}; set fleet.non_guid = \"stem\" to replicate it anyway") }
            }
            NonGuidPolicy::Stem => match TenantId::from_stem(stem) {
                Ok(id) => Classified::Tenant(id),
                Err(err) => Classified::Skipped { reason: err.to_string() },
            },
        },
    }
}

/// True if `path` names a database file by the rules of [`classify`] — a tenant or a
/// skipped one, not `Ignored`. The watcher uses it to decide what to report.
pub fn is_candidate(path: &Path, extensions: &[String]) -> bool {
    candidate_stem(path, extensions).is_some()
}

/// The stem of `path` if its name is a database name (see [`classify`]), else `None`.
fn candidate_stem<'p>(path: &'p Path, extensions: &[String]) -> Option<&'p std::ffi::OsStr> {
    let name = path.file_name()?;
    // Ignore rules work on the bytes that are valid text; a non-UTF-8 name can still be
    // a candidate (it is then skipped with a reason rather than silently dropped).
    let lossy = name.to_string_lossy();
    if is_noise_name(&lossy) {
        return None;
    }
    let ext = path.extension()?.to_string_lossy();
    let wanted = extensions.iter().any(|e| e.trim_start_matches('.').eq_ignore_ascii_case(&ext));
    if !wanted {
        return None;
    }
    path.file_stem()
}

/// Names that are never databases: dotfiles (`.#x.db`, `.x.db.swp`), backups (`x.db~`),
/// emacs autosaves (`#x.db#`), SQLite sidecars and temp files, editor swap files.
fn is_noise_name(name: &str) -> bool {
    if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
        return true;
    }
    if name.starts_with(SQLITE_TEMP_PREFIX) {
        return true;
    }
    if SQLITE_SIDECARS.iter().any(|s| name.ends_with(s)) {
        return true;
    }
    match name.rsplit_once('.') {
        Some((_, ext)) => TEMP_EXTENSIONS.iter().any(|t| t.eq_ignore_ascii_case(ext)),
        None => false,
    }
}

/// The database a `<db>-wal` path belongs to (`x.db-wal` → `x.db`), or `None` if `path`
/// is not a WAL file. Writes to the WAL are what tell a replicator to sync.
pub fn wal_owner(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let db = name.strip_suffix("-wal")?;
    if db.is_empty() {
        return None;
    }
    Some(path.with_file_name(db))
}

/// Why a storage prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Nothing left after trimming one trailing slash.
    #[error("prefix is empty")]
    Empty,
    /// Longer than [`MAX_PREFIX_LEN`] bytes.
    #[error("prefix is {len} bytes long; the limit is {MAX_PREFIX_LEN}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// Starts with `/`: prefixes are relative to the storage root.
    #[error("prefix {0:?} starts with '/'; it must be relative (like \"prod/eu\")")]
    Absolute(String),
    /// Still ends with `/` after one trailing slash was trimmed.
    #[error("prefix {0:?} ends with more than one '/'")]
    TrailingSlash(String),
    /// Two slashes in a row.
    #[error("prefix {0:?} has an empty segment (\"//\")")]
    EmptySegment(String),
    /// A `.` or `..` segment.
    #[error("prefix {prefix:?} has a {segment:?} segment; relative path segments are not allowed")]
    DotSegment {
        /// The refused prefix.
        prefix: String,
        /// The offending segment, `.` or `..`.
        segment: String,
    },
    /// A character outside `[A-Za-z0-9._-]` (or `/` between segments).
    #[error("prefix {prefix:?} contains {ch:?}; only A-Z a-z 0-9 . _ - and '/' between segments are allowed")]
    BadChar {
        /// The refused prefix.
        prefix: String,
        /// The first offending character.
        ch: char,
    },
}

/// Validates a storage prefix that came from user input (config, a flag, or a
/// WebAssembly hook) and returns it normalized (one trailing `/` trimmed).
///
/// A prefix is relative, made of `/`-separated segments of `[A-Za-z0-9._-]`, none empty,
/// `.` or `..`, at most [`MAX_PREFIX_LEN`] bytes in all.
pub fn validate_prefix(p: &str) -> Result<String, PrefixError> {
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if trimmed.is_empty() {
        return Err(PrefixError::Empty);
    }
    if trimmed.len() > MAX_PREFIX_LEN {
        return Err(PrefixError::TooLong { len: trimmed.len() });
    }
    if trimmed.starts_with('/') {
        return Err(PrefixError::Absolute(p.to_owned()));
    }
    if trimmed.ends_with('/') {
        return Err(PrefixError::TrailingSlash(p.to_owned()));
    }
    for segment in trimmed.split('/') {
        if segment.is_empty() {
            return Err(PrefixError::EmptySegment(p.to_owned()));
        }
        if segment == "." || segment == ".." {
            return Err(PrefixError::DotSegment { prefix: p.to_owned(), segment: segment.to_owned() });
        }
        if let Some(ch) = segment.chars().find(|c| !is_name_char(*c)) {
            return Err(PrefixError::BadChar { prefix: p.to_owned(), ch });
        }
    }
    Ok(trimmed.to_owned())
}

/// A storage prefix: where one replica lives below the storage root of a URL
/// (`databases/<id>`). Always valid by [`validate_prefix`]'s rules, except the empty
/// [`Prefix::none`]: a replica at the storage URL itself (`litefleet replicate DB URL`).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix(Box<str>);

impl Prefix {
    /// Validates user input ([`validate_prefix`]).
    pub fn parse(p: &str) -> Result<Prefix, PrefixError> {
        validate_prefix(p).map(|p| Prefix(p.into()))
    }

    /// The empty prefix: the storage URL itself.
    pub fn none() -> Prefix {
        Prefix::default()
    }

    /// Its text, without a trailing slash (`""` for [`Prefix::none`]).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether it is [`Prefix::none`].
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }

    /// The last segment (a tenant's id in a default prefix).
    pub fn last_segment(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    /// `self/rest` (either may be empty).
    pub fn join(&self, rest: &Prefix) -> Prefix {
        match (self.is_none(), rest.is_none()) {
            (_, true) => self.clone(),
            (true, false) => rest.clone(),
            (false, false) => Prefix(format!("{}/{}", self.0, rest.0).into()),
        }
    }

    /// The default prefix of a tenant: `<root>/<id>`, or `<root>/<dir_prefix>/<id>` when
    /// its watch directory has a prefix of its own (empty parts are left out).
    pub fn of_tenant(root: &Prefix, dir_prefix: Option<&Prefix>, id: &TenantId) -> Prefix {
        let base = match dir_prefix {
            Some(d) => root.join(d),
            None => root.clone(),
        };
        base.join(&Prefix(id.as_str().into()))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prefix({:?})", &*self.0)
    }
}

impl std::ops::Deref for Prefix {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Prefix {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}
impl PartialEq<&str> for Prefix {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl AsRef<str> for Prefix {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// `""` is [`Prefix::none`]; anything else must be a valid prefix.
impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = Cow::<'de, str>::deserialize(deserializer)?;
        if s.is_empty() { Ok(Prefix::none()) } else { Prefix::parse(&s).map_err(serde::de::Error::custom) }
    }
}

/// Why a path was refused by [`inside`].
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path could not be resolved (missing, a dangling symlink, no permission).
    #[error("cannot resolve {}", path.display())]
    Resolve {
        /// The path as given.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path resolves to somewhere outside its watch directory (a symlink escaping it).
    #[error("{} leads to {}, outside the watch directory {}", path.display(), target.display(), dir.display())]
    Outside {
        /// The path as given.
        path: PathBuf,
        /// Where it really leads.
        target: PathBuf,
        /// The canonical watch directory it must stay in.
        dir: PathBuf,
    },
}

/// Canonicalizes `path` and returns the real path, refusing it if it leads outside
/// `dir_canonical` (which must itself be canonical). This is the "Path Validation:
/// prevents directory traversal" of the seed: a symlink may point to another place in
/// the watch directory, never out of it.
pub fn inside(dir_canonical: &Path, path: &Path) -> Result<PathBuf, PathError> {
    let target =
        std::fs::canonicalize(path).map_err(|source| PathError::Resolve { path: path.to_path_buf(), source })?;
    if target.starts_with(dir_canonical) && target != dir_canonical {
        Ok(target)
    } else {
        Err(PathError::Outside { path: path.to_path_buf(), target, dir: dir_canonical.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exts() -> Vec<String> {
        DEFAULT_EXTENSIONS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn guid_parse_is_strict_and_lowercases() {
        let id = TenantId::guid("ABCDEF01-2345-6789-ABCD-EF0123456789").unwrap();
        assert_eq!(id.as_str(), "abcdef01-2345-6789-abcd-ef0123456789");
        assert!(id.is_guid());
        for bad in [
            "invalid-guid",
            "regular-name",
            "",
            "12345678-1234-5678-9abc-12345678901",   // short
            "12345678-1234-5678-9abc-1234567890123", // long
            "12345678_1234-5678-9abc-123456789012",  // wrong separator
            "1234567g-1234-5678-9abc-123456789012",  // not hex
            "{12345678-1234-5678-9abc-123456789012}",
            "123456781234567890ab123456789012",
            "12345678-1234-5678-9abc-12345678901é",
        ] {
            assert!(TenantId::guid(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn stem_rules() {
        let id = TenantId::from_stem("regular-name").unwrap();
        assert_eq!(id.kind(), TenantKind::Stem);
        assert_eq!(id.to_string(), "regular-name");
        let guid = TenantId::from_stem("12345678-1234-5678-9ABC-123456789012").unwrap();
        assert!(guid.is_guid());
        assert_eq!(guid.as_str(), "12345678-1234-5678-9abc-123456789012");
        assert_eq!(TenantId::from_stem(""), Err(TenantIdError::StemLength(String::new())));
        assert!(TenantId::from_stem(&"a".repeat(MAX_STEM_LEN)).is_ok());
        assert!(TenantId::from_stem(&"a".repeat(MAX_STEM_LEN + 1)).is_err());
        assert!(matches!(TenantId::from_stem(".."), Err(TenantIdError::StemDots(_))));
        let err = TenantId::from_stem("a b").unwrap_err();
        assert_eq!(err.to_string(), "\"a b\" is not a usable tenant name: ' ' is not allowed (only A-Z a-z 0-9 . _ -)");
        assert!(TenantId::from_stem("a/b").is_err());
    }

    #[test]
    fn display_fromstr_serde_roundtrip() {
        for s in ["12345678-1234-5678-9abc-123456789012", "legacy-system"] {
            let id: TenantId = s.parse().unwrap();
            assert_eq!(id.to_string(), s);
            let json = format!("\"{s}\"");
            let back: TenantId = toml::Value::String(s.into()).try_into().unwrap();
            assert_eq!(back, id);
            assert_eq!(toml::Value::try_from(&id).unwrap(), toml::Value::String(s.into()), "{json}");
        }
        assert!("no spaces please".parse::<TenantId>().is_err());
        let a = TenantId::guid("AAAAAAAA-1234-5678-9abc-123456789012").unwrap();
        let b = TenantId::guid("aaaaaaaa-1234-5678-9abc-123456789012").unwrap();
        assert_eq!(a, b);
        let mut set = std::collections::BTreeSet::new();
        set.insert(a);
        assert!(!set.insert(b));
    }

    #[test]
    fn classify_seed_examples() {
        let e = exts();
        let guid = "12345678-1234-5678-9abc-123456789012";
        for name in [format!("{guid}.db"), format!("{guid}.sqlite"), format!("{guid}.sqlite3"), format!("{guid}.DB")] {
            let got = classify(Path::new(&name), &e, NonGuidPolicy::Skip);
            assert_eq!(got, Classified::Tenant(TenantId::guid(guid).unwrap()), "{name}");
        }
        match classify(Path::new("/d/regular-name.db"), &e, NonGuidPolicy::Skip) {
            Classified::Skipped { reason } => {
                assert!(reason.contains("\"regular-name\" is not a GUID"), "{reason}")
            }
            other => panic!("got {other:?}"),
        }
        assert_eq!(
            classify(Path::new("/d/regular-name.db"), &e, NonGuidPolicy::Stem),
            Classified::Tenant(TenantId::from_stem("regular-name").unwrap())
        );
        assert!(matches!(classify(Path::new("/d/bad name.db"), &e, NonGuidPolicy::Stem), Classified::Skipped { .. }));
    }

    #[test]
    fn classify_ignores_noise() {
        let e = exts();
        let guid = "12345678-1234-5678-9abc-123456789012";
        for name in [
            format!("{guid}.db-wal"),
            format!("{guid}.db-shm"),
            format!("{guid}.db-journal"),
            format!(".{guid}.db"),
            format!(".{guid}.db.swp"),
            format!("{guid}.db~"),
            format!("#{guid}.db#"),
            format!("{guid}.db.tmp"),
            format!("{guid}.tmp"),
            "etilqs_abc123.db".to_string(),
            "notes.txt".to_string(),
            "x.db.bak".to_string(),
            "Makefile".to_string(),
            ".db".to_string(),
        ] {
            assert_eq!(classify(Path::new(&name), &e, NonGuidPolicy::Stem), Classified::Ignored, "{name}");
        }
        // Custom extension lists, with or without the dot.
        let custom = vec![".sdb".to_string()];
        assert!(is_candidate(Path::new("a.sdb"), &custom));
        assert!(!is_candidate(Path::new("a.db"), &custom));
    }

    #[test]
    fn wal_owner_maps_only_wal() {
        assert_eq!(wal_owner(Path::new("/d/x.db-wal")), Some(PathBuf::from("/d/x.db")));
        assert_eq!(wal_owner(Path::new("/d/x.db-shm")), None);
        assert_eq!(wal_owner(Path::new("/d/x.db")), None);
        assert_eq!(wal_owner(Path::new("/d/-wal")), None);
    }

    #[test]
    fn prefix_validation() {
        assert_eq!(validate_prefix("prod").unwrap(), "prod");
        assert_eq!(validate_prefix("prod/eu-1/").unwrap(), "prod/eu-1");
        assert_eq!(validate_prefix("a.b_c-d").unwrap(), "a.b_c-d");
        let cases: [(&str, PrefixError); 9] = [
            ("", PrefixError::Empty),
            ("/", PrefixError::Empty),
            ("/abs", PrefixError::Absolute("/abs".into())),
            ("a//", PrefixError::TrailingSlash("a//".into())),
            ("a//b", PrefixError::EmptySegment("a//b".into())),
            ("a/../b", PrefixError::DotSegment { prefix: "a/../b".into(), segment: "..".into() }),
            ("./a", PrefixError::DotSegment { prefix: "./a".into(), segment: ".".into() }),
            ("a b", PrefixError::BadChar { prefix: "a b".into(), ch: ' ' }),
            ("a\\b", PrefixError::BadChar { prefix: "a\\b".into(), ch: '\\' }),
        ];
        for (input, want) in cases {
            assert_eq!(validate_prefix(input), Err(want), "{input:?}");
        }
        let long = "a".repeat(MAX_PREFIX_LEN + 1);
        assert_eq!(validate_prefix(&long), Err(PrefixError::TooLong { len: MAX_PREFIX_LEN + 1 }));
        assert!(validate_prefix(&"a".repeat(MAX_PREFIX_LEN)).is_ok());
        assert_eq!(
            validate_prefix("a b").unwrap_err().to_string(),
            "prefix \"a b\" contains ' '; only A-Z a-z 0-9 . _ - and '/' between segments are allowed"
        );
    }

    #[test]
    fn default_prefix_layout() {
        let id = TenantId::guid("12345678-1234-5678-9abc-123456789012").unwrap();
        let p = |s: &str| if s.is_empty() { Prefix::none() } else { Prefix::parse(s).unwrap() };
        assert_eq!(
            Prefix::of_tenant(&p(DEFAULT_ROOT), None, &id).as_str(),
            "databases/12345678-1234-5678-9abc-123456789012"
        );
        assert_eq!(
            Prefix::of_tenant(&p("databases"), Some(&p("prod")), &id).as_str(),
            "databases/prod/12345678-1234-5678-9abc-123456789012"
        );
        assert_eq!(
            Prefix::of_tenant(&p(""), Some(&p("staging")), &id).as_str(),
            "staging/12345678-1234-5678-9abc-123456789012"
        );
        assert_eq!(Prefix::of_tenant(&p(""), None, &id).last_segment(), id.as_str());
    }

    #[cfg(unix)]
    #[test]
    fn inside_refuses_escaping_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("watch");
        std::fs::create_dir(&dir).unwrap();
        let dir = std::fs::canonicalize(&dir).unwrap();
        let outside = tmp.path().join("secret.db");
        std::fs::write(&outside, b"").unwrap();
        let inner = dir.join("real.db");
        std::fs::write(&inner, b"").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("escape.db")).unwrap();
        std::os::unix::fs::symlink(&inner, dir.join("alias.db")).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), dir.join("dangling.db")).unwrap();

        assert_eq!(inside(&dir, &dir.join("real.db")).unwrap(), inner);
        assert_eq!(inside(&dir, &dir.join("alias.db")).unwrap(), inner);
        let err = inside(&dir, &dir.join("escape.db")).unwrap_err();
        assert!(matches!(err, PathError::Outside { .. }), "{err}");
        assert!(err.to_string().contains("outside the watch directory"));
        assert!(matches!(inside(&dir, &dir.join("dangling.db")), Err(PathError::Resolve { .. })));
        assert!(inside(&dir, &dir.join("../secret.db")).is_err());
    }
}
