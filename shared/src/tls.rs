//! TLS and mutual TLS between services (rustls, through tonic), configured from PEM
//! files: off unless `GRPC_TLS_CERT_FILE` is set, so the local run stays plaintext.
//!
//! - [`ServerTls`]: the server's identity, and with `GRPC_TLS_CLIENT_CA_FILE` the CA
//!   whose client certificates it requires. A client without a valid certificate (none,
//!   another CA, expired) fails the handshake: no request of it ever reaches a handler.
//!   A handshake must finish within `GRPC_TLS_HANDSHAKE_TIMEOUT`, so a client that
//!   opens TCP and stays silent holds nothing for long; handshakes run beside the
//!   accept loop, never blocking it.
//! - [`ClientTls`]: the CA a client trusts and, for mutual TLS, its own identity;
//!   applied to `https://` upstreams, while `http://` ones stay plaintext.
//!
//! Every file is read and checked at start-up (PEM, certificate and key that match,
//! a usable CA), and a bad one stops the service with an error naming its variable.
//! Certificates are loaded once: rotating them means restarting the service (in
//! Kubernetes, a rolling restart after the Secret changed).
//!
//! Only a private CA is trusted, never a public root store: between services, any
//! certificate a public CA issued for some other name must not be enough, and a build
//! without a bundled root store stays lean.

use std::fmt;
use std::time::Duration;

use http::Uri;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, ServerTlsConfig};

use crate::env::{ConfigError, ConfigFile, Env};

/// `GRPC_TLS_HANDSHAKE_TIMEOUT` when unset: a handshake takes a few round trips, so
/// this only ever ends clients that stall.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS settings of a server (`GRPC_TLS_*`).
#[derive(Clone)]
pub struct ServerTls {
    config: ServerTlsConfig,
    mutual: bool,
    handshake_timeout: Duration,
}

impl ServerTls {
    /// Reads `GRPC_TLS_CERT_FILE`, `GRPC_TLS_KEY_FILE`, `GRPC_TLS_CLIENT_CA_FILE` and
    /// `GRPC_TLS_HANDSHAKE_TIMEOUT`; `None` when no certificate is configured.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let cert = env.file("GRPC_TLS_CERT_FILE")?;
        let key = env.file("GRPC_TLS_KEY_FILE")?;
        let client_ca = env.file("GRPC_TLS_CLIENT_CA_FILE")?;
        let handshake_timeout =
            env.positive_duration("GRPC_TLS_HANDSHAKE_TIMEOUT", DEFAULT_HANDSHAKE_TIMEOUT)?;
        let Some(identity) = identity(cert, key, "GRPC_TLS_CERT_FILE", "GRPC_TLS_KEY_FILE")? else {
            if let Some(client_ca) = client_ca {
                return Err(client_ca.invalid("to be set together with GRPC_TLS_CERT_FILE"));
            }
            return Ok(None);
        };
        let mut config = ServerTlsConfig::new()
            .identity(identity)
            .timeout(handshake_timeout);
        let client_ca = client_ca.map(certificates).transpose()?;
        let mutual = client_ca.is_some();
        if let Some(client_ca) = client_ca {
            // Required, not optional: a client without a certificate is refused.
            config = config.client_ca_root(client_ca);
        }
        // Builds the rustls configuration once now, so that a key that does not match
        // its certificate stops start-up here rather than the first handshake.
        tonic::transport::Server::builder()
            .tls_config(config.clone())
            .map_err(|error| {
                invalid(
                    env,
                    "GRPC_TLS_CERT_FILE",
                    format!(
                        "a certificate matching GRPC_TLS_KEY_FILE and a usable \
                         GRPC_TLS_CLIENT_CA_FILE ({error})"
                    ),
                )
            })?;
        Ok(Some(Self {
            config,
            mutual,
            handshake_timeout,
        }))
    }

    /// Whether clients must present a certificate of `GRPC_TLS_CLIENT_CA_FILE`.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// How long a client may take to finish its handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// The tonic configuration, for `Server::tls_config`.
    pub fn config(&self) -> ServerTlsConfig {
        self.config.clone()
    }
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The TLS settings of a client (`GRPC_CLIENT_TLS_*`), used for `https://` upstreams.
#[derive(Clone)]
pub struct ClientTls {
    config: ClientTlsConfig,
    mutual: bool,
}

impl ClientTls {
    /// Reads `GRPC_CLIENT_TLS_CA_FILE` (the CA the upstreams' certificates must come
    /// from) and, for mutual TLS, `GRPC_CLIENT_TLS_CERT_FILE` with
    /// `GRPC_CLIENT_TLS_KEY_FILE`; `None` when no CA is configured.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let ca = env.file("GRPC_CLIENT_TLS_CA_FILE")?;
        let cert = env.file("GRPC_CLIENT_TLS_CERT_FILE")?;
        let key = env.file("GRPC_CLIENT_TLS_KEY_FILE")?;
        let (cert_var, key_var) = ("GRPC_CLIENT_TLS_CERT_FILE", "GRPC_CLIENT_TLS_KEY_FILE");
        let identity = identity(cert, key, cert_var, key_var)?;
        let Some(ca) = ca.map(certificates).transpose()? else {
            if identity.is_some() {
                return Err(invalid(
                    env,
                    cert_var,
                    "to be set together with GRPC_CLIENT_TLS_CA_FILE",
                ));
            }
            return Ok(None);
        };
        let mutual = identity.is_some();
        let mut config = ClientTlsConfig::new().ca_certificate(ca);
        if let Some(identity) = identity {
            config = config.identity(identity);
        }
        // As on the server: a mismatched key or an unusable CA stops start-up now.
        Endpoint::from_static("https://localhost")
            .tls_config(config.clone())
            .map_err(|error| {
                invalid(
                    env,
                    "GRPC_CLIENT_TLS_CA_FILE",
                    format!(
                        "a usable CA, and a GRPC_CLIENT_TLS_CERT_FILE matching \
                         GRPC_CLIENT_TLS_KEY_FILE ({error})"
                    ),
                )
            })?;
        Ok(Some(Self { config, mutual }))
    }

    /// Whether this client presents a certificate of its own.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// `endpoint`, whose URL is `https://`, speaking TLS: the server's certificate must
    /// come from the CA and be valid for `server_name`, which is also sent as SNI; the
    /// handshake is bounded by `handshake_timeout`. The name is the upstream's host as
    /// configured, not the endpoint's: behind a load balancer over resolved addresses, an
    /// endpoint's URL holds an IP while the certificate names the Service.
    pub fn apply(
        &self,
        endpoint: Endpoint,
        server_name: &str,
        handshake_timeout: Duration,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let config = self
            .config
            .clone()
            .domain_name(unbracketed(server_name))
            .timeout(handshake_timeout);
        endpoint.tls_config(config)
    }
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

/// Whether `uri`'s host can name a TLS server: a DNS name or an IP address.
pub(crate) fn is_valid_server_name(uri: &Uri) -> bool {
    ServerName::try_from(unbracketed(uri.host().unwrap_or_default())).is_ok()
}

/// A URI host as a TLS server name: an IPv6 address without its brackets.
fn unbracketed(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// The identity in a certificate and a key file: both or neither.
fn identity(
    cert: Option<ConfigFile>,
    key: Option<ConfigFile>,
    cert_var: &str,
    key_var: &str,
) -> Result<Option<Identity>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), None) => Err(cert.invalid(format!("to be set together with {key_var}"))),
        (None, Some(key)) => Err(key.invalid(format!("to be set together with {cert_var}"))),
        (Some(cert), Some(key)) => {
            let cert = certificates(cert)?;
            PrivateKeyDer::from_pem_slice(&key.contents).map_err(|error| {
                key.invalid(format!(
                    "a PEM private key (PKCS#8, PKCS#1 or SEC1): {error}"
                ))
            })?;
            Ok(Some(Identity::from_pem(cert.into_inner(), key.contents)))
        }
    }
}

/// The certificates of `file`: one or more in PEM.
fn certificates(file: ConfigFile) -> Result<Certificate, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(&file.contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file.invalid(format!("PEM certificates: {error}")))?;
    if certs.is_empty() {
        return Err(file.invalid("a PEM file with at least one CERTIFICATE"));
    }
    Ok(Certificate::from_pem(file.contents))
}

fn invalid(env: &Env, var: &str, expected: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.to_owned(),
        value: env.get(var).unwrap_or_default().to_owned(),
        expected: expected.into(),
    }
}

/// `endpoint` ready for its URL: TLS with `tls` for `https://`, checking the
/// server's certificate against `server_name` (the upstream's configured host), or
/// unchanged for `http://`. The handshake is bounded by `GRPC_CLIENT_CONNECT_TIMEOUT`,
/// like the TCP connect before it. An `https://` endpoint without client TLS (which
/// [`Env::upstream`] does not let through) fails every call rather than falling back to
/// plaintext.
pub fn client_endpoint(
    endpoint: Endpoint,
    server_name: &str,
    tls: Option<&ClientTls>,
    connect_timeout: Duration,
) -> Endpoint {
    if endpoint.uri().scheme_str() != Some("https") {
        return endpoint;
    }
    let Some(tls) = tls else {
        tracing::error!(uri = %endpoint.uri(), "https upstream without GRPC_CLIENT_TLS_CA_FILE: calls will fail");
        return endpoint;
    };
    match tls.apply(endpoint.clone(), server_name, connect_timeout) {
        Ok(endpoint) => endpoint,
        // Checked at start-up (ClientTls::from_env, Env::upstream): this cannot happen
        // with a configuration read from the environment.
        Err(error) => {
            tracing::error!(uri = %endpoint.uri(), %error, "cannot configure TLS: calls will fail");
            endpoint
        }
    }
}

/// tonic's server builder, terminating TLS when `tls` is set.
pub(crate) fn server_builder(
    tls: Option<&ServerTls>,
) -> Result<tonic::transport::Server, tonic::transport::Error> {
    let builder = tonic::transport::Server::builder();
    match tls {
        Some(tls) => {
            tracing::info!(
                mutual = tls.mutual,
                handshake_timeout = ?tls.handshake_timeout,
                "serving TLS"
            );
            builder.tls_config(tls.config())
        }
        None => Ok(builder),
    }
}
