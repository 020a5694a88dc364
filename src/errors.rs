//! How errors read.
//!
//! Every error type of litefleet says what *its own level* was doing ("upload
//! s3://b/databases/x/0000/….ltx", "prod.toml:14: replication.sync_interval") and hands
//! the cause below it to [`std::error::Error::source`]; it never repeats the cause in
//! its own message. Whoever shows an error to a person prints the whole chain once,
//! with [`Chain`]: `upload …: connection refused`.

use std::error::Error;
use std::fmt;

/// Displays an error and every cause below it, joined by `": "` (what `anyhow`'s `{:#}`
/// prints).
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// The whole chain of `e` as one line.
pub fn chain(e: &dyn Error) -> String {
    Chain(e).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("upload x.ltx")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_level_is_printed_once() {
        let e = Outer(std::io::Error::other("connection refused"));
        assert_eq!(chain(&e), "upload x.ltx: connection refused");
    }
}
