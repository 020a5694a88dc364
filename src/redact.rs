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
