//! The event settings of a service: NATS JetStream when `NATS_URL` is set, and how
//! consumers retry.

use std::fmt;
use std::time::Duration;

use async_nats::ServerAddr;

use super::handling::RetryPolicy;
use crate::env::{ConfigError, Env};

/// `NATS_URL`: the NATS servers, e.g. `nats://nats:4222` (a comma-separated list for a
/// cluster). Unset: the in-process bus.
pub const NATS_URL: &str = "NATS_URL";

/// The event settings of a service that publishes or consumes events.
#[derive(Clone, Debug, Default)]
pub struct EventsConfig {
    /// JetStream, when `NATS_URL` is set.
    pub nats: Option<NatsConfig>,
    /// How consumers retry an event that failed (both buses).
    pub retry: RetryPolicy,
}

/// How to reach JetStream.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `NATS_URL`.
    pub urls: NatsUrls,
    /// `NATS_CONNECT_TIMEOUT`: how long start-up keeps trying to connect (default `30s`).
    pub connect_timeout: Duration,
    /// `NATS_PUBLISH_TIMEOUT`: how long a publish waits for JetStream to acknowledge
    /// storing the event before it fails (default `5s`).
    pub publish_timeout: Duration,
    /// `NATS_ACK_WAIT`: how long JetStream waits for a consumer to acknowledge a
    /// delivery before it delivers the event again (default `30s`).
    pub ack_wait: Duration,
}

/// NATS server URLs, `nats://` or `tls://`, with host and port. Displayed without the
/// credentials a URL may carry (`nats://user:***@host:4222`).
#[derive(Clone)]
pub struct NatsUrls(Vec<ServerAddr>);

impl NatsUrls {
    fn parse(value: &str) -> Option<Self> {
        let urls = value
            .split(',')
            .map(|url| {
                let url = url.trim();
                let uri: http::Uri = url.parse().ok()?;
                let scheme_ok = matches!(uri.scheme_str(), Some("nats" | "tls"));
                let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
                let host_ok = uri.host().is_some_and(|h| !h.is_empty());
                (scheme_ok && path_ok && host_ok && uri.port_u16().is_some())
                    .then(|| url.parse::<ServerAddr>().ok())
                    .flatten()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Self(urls))
    }

    pub(super) fn server_addrs(&self) -> Vec<ServerAddr> {
        self.0.clone()
    }
}

impl fmt::Display for NatsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            let credentials = if addr.username().is_some() || addr.password().is_some() {
                "***@"
            } else {
                ""
            };
            let separator = if i == 0 { "" } else { "," };
            write!(
                f,
                "{separator}{}://{credentials}{}:{}",
                addr.scheme(),
                addr.host(),
                addr.port()
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for NatsUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl EventsConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_deliver: env.int_in("EVENTS_MAX_DELIVER", defaults.max_deliver, 1, 1000)?,
            backoff: env.positive_duration("EVENTS_RETRY_BACKOFF", defaults.backoff)?,
            max_backoff: defaults.max_backoff,
        };
        let nats = match env.get(NATS_URL) {
            None => None,
            Some(value) => Some(NatsConfig {
                urls: NatsUrls::parse(value.trim()).ok_or_else(|| ConfigError {
                    var: NATS_URL.to_owned(),
                    // Never echo a password or token back into the logs.
                    value: redact(value),
                    expected: "nats:// or tls:// URLs with host and port, comma-separated, \
                               like nats://nats:4222"
                        .to_owned(),
                })?,
                connect_timeout: env
                    .positive_duration("NATS_CONNECT_TIMEOUT", Duration::from_secs(30))?,
                publish_timeout: env
                    .positive_duration("NATS_PUBLISH_TIMEOUT", Duration::from_secs(5))?,
                ack_wait: env.positive_duration("NATS_ACK_WAIT", Duration::from_secs(30))?,
            }),
        };
        Ok(Self { nats, retry })
    }
}

/// `value` with whatever stands before an `@` in each URL hidden.
fn redact(value: &str) -> String {
    value
        .split(',')
        .map(|url| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            (None, Some(at)) => format!("***{}", &url[at..]),
            _ => url.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    #[test]
    fn without_nats_url_the_bus_is_in_process_with_default_retries() {
        let config = EventsConfig::from_env(&env(&[(NATS_URL, "")])).unwrap();
        assert!(config.nats.is_none());
        assert_eq!(config.retry, RetryPolicy::default());
    }

    #[test]
    fn zero_timeouts_and_backoffs_are_refused_by_name() {
        for name in [
            "NATS_CONNECT_TIMEOUT",
            "NATS_PUBLISH_TIMEOUT",
            "NATS_ACK_WAIT",
            "EVENTS_RETRY_BACKOFF",
        ] {
            let error =
                EventsConfig::from_env(&env(&[(NATS_URL, "nats://nats:4222"), (name, "0s")]))
                    .unwrap_err();
            assert_eq!(error.var, name);
            let message = error.to_string();
            assert!(
                message.contains(name) && message.contains("above zero"),
                "{message}"
            );
        }
    }

    #[test]
    fn nats_settings_are_parsed() {
        let config = EventsConfig::from_env(&env(&[
            (
                NATS_URL,
                "nats://nats:4222, tls://user:secret@nats-2.example:4443",
            ),
            ("NATS_CONNECT_TIMEOUT", "2s"),
            ("NATS_ACK_WAIT", "500ms"),
            ("EVENTS_MAX_DELIVER", "3"),
            ("EVENTS_RETRY_BACKOFF", "10ms"),
        ]))
        .unwrap();
        let nats = config.nats.unwrap();
        assert_eq!(
            nats.urls.to_string(),
            "nats://nats:4222,tls://***@nats-2.example:4443"
        );
        assert!(!format!("{nats:?}").contains("secret"));
        assert_eq!(nats.connect_timeout, Duration::from_secs(2));
        assert_eq!(nats.publish_timeout, Duration::from_secs(5));
        assert_eq!(nats.ack_wait, Duration::from_millis(500));
        assert_eq!(config.retry.max_deliver, 3);
        assert_eq!(config.retry.backoff, Duration::from_millis(10));
    }

    #[test]
    fn bad_urls_are_named_without_their_credentials() {
        for value in [
            "nats:4222",
            "http://nats:4222",
            "nats://nats",
            "nats://:4222",
            "nats://nats:4222/path",
            "nats://nats:4222,",
            "nats://user:hunter2@nats",
            "user:hunter2@nats:4222",
        ] {
            let err = EventsConfig::from_env(&env(&[(NATS_URL, value)])).unwrap_err();
            let message = err.to_string();
            assert!(message.contains(NATS_URL), "{message}");
            assert!(message.contains("nats://"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn bad_knobs_are_named() {
        for (var, value) in [
            ("NATS_CONNECT_TIMEOUT", "soon"),
            ("NATS_ACK_WAIT", "-1s"),
            ("NATS_PUBLISH_TIMEOUT", "5 s"),
        ] {
            let e = env(&[(NATS_URL, "nats://127.0.0.1:4222"), (var, value)]);
            let message = EventsConfig::from_env(&e).unwrap_err().to_string();
            assert!(message.contains(var), "{message}");
        }
        for value in ["0", "many"] {
            let message = EventsConfig::from_env(&env(&[("EVENTS_MAX_DELIVER", value)]))
                .unwrap_err()
                .to_string();
            assert!(message.contains("EVENTS_MAX_DELIVER"), "{message}");
        }
    }

    #[test]
    fn redaction_hides_what_stands_before_the_at() {
        assert_eq!(redact("nats://a:b@h:1"), "nats://***@h:1");
        assert_eq!(redact("a:b@h:1,nats://h:2"), "***@h:1,nats://h:2");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
    }
}
