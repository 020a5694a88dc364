//! Keeping secrets out of everything litefleet prints.
//!
//! A credential or token is a [`Secret`]: usable through [`Secret::expose`] by the one
//! place that must send it (a request signer, a token comparison), printed as `***` by
//! `Debug` and `Display`, so it can never reach a log line, an error or a page by
//! accident.
//!
//! It knows no other module.

use std::fmt;

use serde::Deserialize;

/// A credential or token (see the module doc).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it. Never format it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `text` with the user information of every URL in it (`scheme://user:password@`)
/// replaced by `***@`: how a URL someone wrote credentials into is shown in an error.
pub fn userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', quote or white space.
        let end =
            tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace()).unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(i) => {
                out.push_str("***");
                rest = &tail[i..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Whether `text` holds a URL with user information (`scheme://…@`).
pub fn has_userinfo(text: &str) -> bool {
    userinfo(text) != text
}

/// Whether `text` holds a URL with a password (`scheme://user:password@`). A user
/// alone (`abs://account@container`, `sftp://user@host`) is no secret.
pub fn has_password(text: &str) -> bool {
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let tail = &rest[at + 3..];
        let end =
            tail.find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '\'') || c.is_whitespace()).unwrap_or(tail.len());
        if tail[..end].rfind('@').is_some_and(|i| tail[..i].contains(':')) {
            return true;
        }
        rest = &tail[end..];
    }
    false
}

/// Secret values registered at start-up (keys, tokens): [`scrub`] replaces them in
/// every log line, whoever formatted it (a library's debug output included).
static REGISTERED: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// Values shorter than this are not scrubbed (they would mask ordinary words; no real
/// key or token is that short).
pub const MIN_SCRUBBED_LEN: usize = 6;

/// Registers a secret value for [`scrub`].
pub fn register(value: &str) {
    if value.len() < MIN_SCRUBBED_LEN {
        return;
    }
    let mut r = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|v| v == value) {
        r.push(value.to_owned());
        // Longest first, so a secret containing another is replaced whole.
        r.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `line` with every registered secret replaced by `***`.
pub fn scrub(line: &str) -> std::borrow::Cow<'_, str> {
    let r = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
    if !r.iter().any(|v| line.contains(v.as_str())) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = line.to_owned();
    for v in r.iter() {
        out = out.replace(v.as_str(), "***");
    }
    std::borrow::Cow::Owned(out)
}

/// One formatted log line made safe to print: secrets scrubbed, and every control
/// character but the final newline escaped (`\n`, `\r`, `\x1b`…), so a file name
/// carrying a newline cannot forge a second log line, nor an escape sequence repaint
/// the terminal.
pub fn log_line(line: &str) -> String {
    let line = scrub(line);
    let (body, newline) = match line.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (&line[..], ""),
    };
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push_str(newline);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_in_every_url_and_nothing_else_changes() {
        assert_eq!(userinfo("s3://AKIA:s3cr3t@bucket/path?x=1"), "s3://***@bucket/path?x=1");
        assert_eq!(
            userinfo("endpoint \"http://u:p@127.0.0.1:9000\" and https://h/x@y"),
            "endpoint \"http://***@127.0.0.1:9000\" and https://h/x@y"
        );
        assert_eq!(userinfo("file:///a/b"), "file:///a/b");
        assert!(has_userinfo("s3://k:s@b") && !has_userinfo("s3://b/p@q"));
    }

    #[test]
    fn registered_secrets_are_scrubbed_and_control_characters_escaped() {
        register("wJalrXUtnFEMI-scrub-test");
        register("abc"); // too short to scrub
        assert_eq!(
            log_line("StaticCredentialProvider { secret: \"wJalrXUtnFEMI-scrub-test\" } abc\n"),
            "StaticCredentialProvider { secret: \"***\" } abc\n"
        );
        assert_eq!(
            log_line("📁 Database created: /d/evil\n✅ Client registered: forged.db\n"),
            "📁 Database created: /d/evil\\n✅ Client registered: forged.db\n"
        );
        assert_eq!(log_line("a\rb\x1b[2Jc"), "a\\rb\\x1b[2Jc");
    }
}
