//! Channels to other services. Every generated client in the workspace is built on
//! [`channel`], so timeouts and (later) tracing and resilience are set in one place.

use http::Uri;
use tonic::transport::Endpoint;

use crate::ClientConfig;

/// A connection to another service, shared by all its clients; cheap to clone.
pub type Channel = tonic::transport::Channel;

/// A lazily connected channel to `uri`: nothing is dialled until the first call, so a
/// service starts even while its upstreams are still coming up, and reconnects on its
/// own when they restart.
pub fn channel(uri: Uri, config: &ClientConfig) -> Channel {
    Endpoint::from(uri)
        .connect_timeout(config.connect_timeout)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        // Detect dead peers (a node gone without a FIN) instead of waiting for TCP.
        .http2_keep_alive_interval(std::time::Duration::from_secs(30))
        .keep_alive_timeout(std::time::Duration::from_secs(10))
        .connect_lazy()
}
