//! Where a mistake is: the 1-based line and dotted key of a serde error or a semantic
//! problem, from toml's spanned parse tree, with serde's phrasing reworded for a
//! person editing the file.

use std::ops::Range;

use super::{ConfigError, Problem};

/// Where each key of a TOML document is: built from toml's spanned parse tree, it maps
/// an error's byte span to a line and a dotted key path, and a key path to a line.
pub(super) struct Locator<'a> {
    /// The source text.
    src: &'a str,
    /// Every key and array element, with the spans of its key and value.
    entries: Vec<Entry>,
}

/// One key (or array element) of the document.
struct Entry {
    /// Dotted path: `replication.sync_interval`, `watch[1].dir`, `watch[1]`.
    path: String,
    /// Span of the key (for array elements, of the element).
    key: Range<usize>,
    /// Span of the value (for tables opened by a header, of the header).
    value: Range<usize>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(src: &'a str) -> Locator<'a> {
        let mut entries = Vec::new();
        // A document with syntax errors still yields the keys before and around them;
        // the errors themselves are reported by `toml::from_str` with their own spans.
        let (root, _errors) = toml::de::DeTable::parse_recoverable(src);
        collect_table(root.get_ref(), "", &mut entries);
        Locator { src, entries }
    }

    /// 1-based line of a byte offset.
    fn line_at(&self, offset: usize) -> usize {
        let end = offset.min(self.src.len());
        self.src.as_bytes()[..end].iter().filter(|b| **b == b'\n').count() + 1
    }

    /// The most specific key whose key or value span holds `offset`.
    fn path_at(&self, offset: usize) -> Option<&str> {
        let within = |r: &Range<usize>| r.contains(&offset) || (r.is_empty() && r.start == offset);
        self.entries
            .iter()
            .filter_map(|e| {
                let len = [&e.key, &e.value].into_iter().filter(|r| within(r)).map(|r| r.len()).min()?;
                Some((len, std::cmp::Reverse(e.path.len()), e.path.as_str()))
            })
            .min()
            .map(|(_, _, p)| p)
    }

    /// The dotted path of a key that is not in the tree (a duplicate key is dropped by
    /// the parser): the table whose header last precedes `span`, plus the key's text.
    fn path_near(&self, span: &Range<usize>) -> Option<String> {
        let name = self.src.get(span.clone())?.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return None;
        }
        let table = self
            .entries
            .iter()
            .filter(|e| {
                e.value.start <= span.start && self.src.get(e.value.clone()).is_some_and(|t| t.starts_with('['))
            })
            .max_by_key(|e| (e.value.start, e.path.len()));
        Some(match table {
            Some(t) => format!("{}.{name}", t.path),
            None => name.to_owned(),
        })
    }

    /// The line of `path`'s key, or of its nearest parent present in the file.
    pub(super) fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(e) = self.entries.iter().find(|e| e.path == p) {
                return Some(self.line_at(e.key.start));
            }
            p = &p[..p.rfind(['.', '['])?];
        }
    }

    pub(super) fn problem_error(&self, origin: &str, p: Problem) -> ConfigError {
        let line = if self.src.is_empty() { None } else { Some(self.line_of(&p.key).unwrap_or(1)) };
        ConfigError::Invalid {
            origin: origin.to_owned(),
            line,
            message: format!("{}: {}", p.key, p.message),
            key: Some(p.key),
        }
    }

    /// Turns a toml/serde error into `origin:line: key: message`, rewording serde's
    /// phrasing into what a person editing the file needs.
    pub(super) fn serde_error(&self, origin: &str, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let line = span.as_ref().map(|s| self.line_at(s.start));
        let key = span.as_ref().and_then(|s| self.path_at(s.start).map(str::to_owned).or_else(|| self.path_near(s)));
        let raw = e.message().trim();
        let value = span.as_ref().and_then(|s| self.src.get(s.clone())).unwrap_or("");
        let message = match &key {
            Some(key) => match unknown_key_message(raw, key) {
                Some(m) => m,
                None => format!("{key}: {}", reword(raw, value)),
            },
            None => raw.to_owned(),
        };
        ConfigError::Invalid { origin: origin.to_owned(), line, key, message }
    }
}

fn collect_table(table: &toml::de::DeTable<'_>, base: &str, out: &mut Vec<Entry>) {
    for (k, v) in table.iter() {
        let path = if base.is_empty() { k.get_ref().to_string() } else { format!("{base}.{}", k.get_ref()) };
        out.push(Entry { path: path.clone(), key: k.span(), value: v.span() });
        collect_value(v.get_ref(), &path, out);
    }
}

fn collect_value(value: &toml::de::DeValue<'_>, path: &str, out: &mut Vec<Entry>) {
    match value {
        toml::de::DeValue::Table(t) => collect_table(t, path, out),
        toml::de::DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                out.push(Entry { path: item_path.clone(), key: item.span(), value: item.span() });
                collect_value(item.get_ref(), &item_path, out);
            }
        }
        _ => {}
    }
}

/// The words between backticks in a serde message, in order.
fn backticked(msg: &str) -> Vec<&str> {
    msg.split('`').skip(1).step_by(2).collect()
}

/// `unknown key "recursiv" in [[watch]] (expected one of dir, recursive, …)` for serde's
/// "unknown field" errors; `None` for any other error.
fn unknown_key_message(raw: &str, key: &str) -> Option<String> {
    if !raw.starts_with("unknown field") {
        return None;
    }
    let words = backticked(raw);
    let (name, expected) = words.split_first()?;
    let parent = key.rfind('.').map(|i| &key[..i]);
    let place = match parent {
        None => "at the top level".to_owned(),
        Some(p) => match p.strip_suffix(']').and_then(|p| p.rsplit_once('[')) {
            Some((array, _)) => format!("in [[{array}]]"),
            None => format!("in [{p}]"),
        },
    };
    let expected = if expected.is_empty() {
        "no keys are allowed here".to_owned()
    } else {
        format!("expected one of {}", expected.join(", "))
    };
    Some(format!("unknown key \"{name}\" {place} ({expected})"))
}

/// Rewords serde's messages: durations get an example, missing fields and unknown
/// variants read like the file.
fn reword(raw: &str, value: &str) -> String {
    if raw.ends_with("expected a duration") {
        let bare = value.trim_matches(['"', '\'']);
        let digits: String = bare.chars().take_while(|c| c.is_ascii_digit()).collect();
        let hint = if digits.is_empty() { "1" } else { &digits };
        return format!("{value} is not a duration (try \"{hint}s\", or units like 500ms, 2m, 1h)");
    }
    if raw.starts_with("missing field") {
        let words = backticked(raw);
        return format!("missing key \"{}\"", words.first().copied().unwrap_or("?"));
    }
    if raw.starts_with("unknown variant") {
        let words = backticked(raw);
        if let Some((got, allowed)) = words.split_first() {
            return format!("\"{got}\" is not one of: {}", allowed.join(", "));
        }
    }
    raw.to_owned()
}
