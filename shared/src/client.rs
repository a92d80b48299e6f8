//! Channels to other services. Every generated client in the workspace is built on
//! [`channel`], so timeouts, tracing and metrics are set in one place.

use http::Uri;
use tonic::transport::Endpoint;

use crate::ClientConfig;
use crate::rpc::ClientRpc;

/// A connection to another service, shared by all its clients; cheap to clone. Every
/// call through it gets a client span, carries the trace context to the server, and
/// is measured in `rpc_client_call_duration_seconds`.
pub type Channel = ClientRpc<tonic::transport::Channel>;

/// A lazily connected channel to `uri`: nothing is dialled until the first call, so a
/// service starts even while its upstreams are still coming up, and reconnects on its
/// own when they restart.
pub fn channel(uri: Uri, config: &ClientConfig) -> Channel {
    let host = uri.host().unwrap_or_default().to_owned();
    let port = uri.port_u16();
    let endpoint = Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        // Detect dead peers (a node gone without a FIN) instead of waiting for TCP.
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10));
    // TLS for https:// upstreams (GRPC_CLIENT_TLS_*); http:// ones stay plaintext.
    let channel = crate::tls::client_endpoint(endpoint, &host, config).connect_lazy();
    ClientRpc::new(channel, &host, port)
}
