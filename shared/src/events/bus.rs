//! Which bus a service uses, chosen by configuration: NATS JetStream when `NATS_URL` is
//! set, otherwise the in-process bus the caller hands in (the `stack` launcher's shared
//! one, or a private one in a lone binary). Services see the same [`Bus`] either way.

use std::sync::Arc;

use super::config::EventsConfig;
use super::consume::{Source, SourceKind};
use super::handling::RetryPolicy;
use super::jetstream::{JetStream, StreamSpec};
use super::{EventPublisher, EventsError, InProcessBus};

/// The bus of one service: publishers and consumers come from it.
#[derive(Clone, Debug)]
pub struct Bus {
    kind: Kind,
    retry: RetryPolicy,
}

#[derive(Clone, Debug)]
enum Kind {
    InProcess(InProcessBus),
    // Boxed: a JetStream context is large, and a bus is cloned into each publisher.
    JetStream(Box<JetStream>),
}

impl Bus {
    /// JetStream when `config.nats` is set (connecting, and creating or updating
    /// `streams`, those the service publishes to or consumes from, and the dead
    /// letters' stream), otherwise `local`. `app` names the connection in NATS's
    /// monitoring.
    pub async fn connect(
        config: &EventsConfig,
        app: &str,
        streams: &[StreamSpec],
        local: &InProcessBus,
    ) -> Result<Self, EventsError> {
        let kind = match &config.nats {
            Some(nats) => {
                let jetstream = JetStream::connect(nats, app, streams).await?;
                Kind::JetStream(Box::new(jetstream))
            }
            None => Kind::InProcess(local.clone()),
        };
        Ok(Self {
            kind,
            retry: config.retry,
        })
    }

    /// Where to publish. On JetStream, `Ok` means the stream stored the event.
    pub fn publisher(&self) -> Arc<dyn EventPublisher> {
        match &self.kind {
            Kind::InProcess(bus) => Arc::new(bus.clone()),
            Kind::JetStream(jetstream) => jetstream.publisher(),
        }
    }

    /// The events of `subject` (held by one of the streams given to
    /// [`connect`](Self::connect)) for consumer `name`, to run [`super::consume`] on. On
    /// JetStream, a durable consumer: what was published while the service was down
    /// is delivered when it is back, and instances with the same name share the work.
    /// In-process, a subscription from now on.
    pub async fn consumer(&self, name: &str, subject: &str) -> Result<Source, EventsError> {
        let kind = match &self.kind {
            Kind::InProcess(bus) => SourceKind::InProcess {
                subscription: bus.subscribe(subject),
                bus: bus.clone(),
            },
            Kind::JetStream(jetstream) => SourceKind::JetStream(Box::new(
                jetstream.consumer(name, subject, &self.retry).await?,
            )),
        };
        Ok(Source {
            consumer: name.to_owned(),
            policy: self.retry,
            kind,
        })
    }

    /// Whether this is JetStream (for banners and logs).
    pub fn is_jetstream(&self) -> bool {
        matches!(self.kind, Kind::JetStream(_))
    }
}
