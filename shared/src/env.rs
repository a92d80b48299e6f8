//! The environment variables a process is configured with, and their typed readers.
//!
//! Everything is read through [`Env`], a snapshot of variables that tests build from
//! a literal map, so no test ever calls `std::env::set_var`. A bad value fails start-up
//! with a [`ConfigError`] that names the variable, the value and what was expected.
//! Each setting's reader lives with what it configures ([`crate::config`] for servers
//! and clients, `Env::upstream` with the channel's addresses in [`crate::client`]), so
//! that this module, which every other one uses, uses none of them.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use http::Uri;

/// A snapshot of environment variables. Empty values count as unset, because
/// Kubernetes manifests and shells often set `VAR=""` to mean "use the default".
#[derive(Clone, Debug, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// A variable whose value cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}={value:?}: expected {expected}")]
pub struct ConfigError {
    pub var: String,
    pub value: String,
    pub expected: String,
}

impl Env {
    /// The process environment. Variables that are not valid UTF-8 are skipped: none
    /// of ours can be.
    pub fn from_process() -> Self {
        std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect()
    }

    /// The value of `name`, or `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// A copy with `name` set to `value`, e.g. to give one service of the stack its port.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.vars.insert(name.to_owned(), value.into());
        self
    }

    /// Parses `name` with `parse`, or returns `default` when unset. `expected` describes
    /// a valid value for the error message, e.g. "a duration like 10s or 500ms".
    pub fn parse_with<T>(
        &self,
        name: &str,
        default: T,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<T, ConfigError> {
        match self.get(name) {
            None => Ok(default),
            Some(value) => parse(value.trim()).ok_or_else(|| ConfigError {
                var: name.to_owned(),
                value: value.to_owned(),
                expected: expected.to_owned(),
            }),
        }
    }

    /// Parses `name` with [`FromStr`], or returns `default` when unset.
    pub fn parse<T: FromStr>(
        &self,
        name: &str,
        default: T,
        expected: &str,
    ) -> Result<T, ConfigError> {
        self.parse_with(name, default, expected, |v| v.parse().ok())
    }

    /// A socket address such as `0.0.0.0:50052`.
    pub fn socket_addr(&self, name: &str, default: SocketAddr) -> Result<SocketAddr, ConfigError> {
        self.parse(name, default, "a socket address like 0.0.0.0:50052")
    }

    /// A duration such as `10s`, `500ms` or `2m` (a bare number is seconds).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, ConfigError> {
        self.parse_with(
            name,
            default,
            "a duration like 10s, 500ms or 2m",
            parse_duration,
        )
    }

    /// A duration like [`Self::duration`] but above zero: for a timeout or an interval,
    /// where zero would refuse everything or spin.
    pub fn positive_duration(
        &self,
        name: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.parse_with(
            name,
            default,
            "a duration above zero like 10s or 500ms",
            |v| parse_duration(v).filter(|d| !d.is_zero()),
        )
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    pub fn flag(&self, name: &str, default: bool) -> Result<bool, ConfigError> {
        self.parse_with(name, default, "true or false", |v| {
            match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Some(true),
                "false" | "0" | "no" | "off" => Some(false),
                _ => None,
            }
        })
    }

    /// An integer in `min..=max`.
    pub fn int_in<T>(&self, name: &str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        let expected = format!("an integer from {min} to {max}");
        self.parse_with(name, default, &expected, |v| {
            v.parse().ok().filter(|n| (min..=max).contains(n))
        })
    }

    /// The contents of the file whose path is in `name` (a PEM certificate, a key), or
    /// `None` when unset. Read whole at start-up: a missing or unreadable file fails
    /// there, naming the variable, and so do the errors of [`ConfigFile::invalid`].
    pub fn file(&self, name: &str) -> Result<Option<ConfigFile>, ConfigError> {
        let Some(path) = self.get(name) else {
            return Ok(None);
        };
        let file = ConfigFile {
            var: name.to_owned(),
            path: path.to_owned(),
            contents: Vec::new(),
        };
        match std::fs::read(path) {
            Ok(contents) => Ok(Some(ConfigFile { contents, ..file })),
            Err(error) => Err(file.invalid(format!("a readable file ({error})"))),
        }
    }

    /// One plaintext `http://host:port` address: for clients that are not built on
    /// [`crate::client::channel`] and so cannot speak TLS (the OTLP exporter).
    pub fn http_upstream(&self, name: &str, default: &str) -> Result<Uri, ConfigError> {
        let default = default.parse().expect("default address is a valid URI");
        self.parse_with(
            name,
            default,
            "an address like http://127.0.0.1:4317 (plaintext only)",
            |v| {
                let uri: Uri = v.parse().ok()?;
                let plain = uri.scheme_str() == Some("http");
                (plain && uri.host().is_some() && uri.port_u16().is_some()).then_some(uri)
            },
        )
    }
}

/// A file named by a variable ([`Env::file`]).
#[derive(Clone)]
pub struct ConfigFile {
    /// The variable holding the path.
    pub var: String,
    pub path: String,
    pub contents: Vec<u8>,
}

impl ConfigFile {
    /// An error saying what this file should have held.
    pub fn invalid(&self, expected: impl Into<String>) -> ConfigError {
        ConfigError {
            var: self.var.clone(),
            value: self.path.clone(),
            expected: expected.into(),
        }
    }
}

/// Paths only: the contents may be secret.
impl fmt::Debug for ConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigFile")
            .field("var", &self.var)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Env {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self {
            vars: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

pub(crate) fn parse_duration(value: &str) -> Option<Duration> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}
