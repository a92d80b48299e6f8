//! NATS JetStream as the bus, when `NATS_URL` is set: streams that store events until
//! every consumer has taken them, de-duplicated by event id, and durable pull consumers
//! with explicit acknowledgements.
//!
//! Each service names the streams it publishes to or consumes from ([`StreamSpec`]s,
//! declared by the publisher next to its subject) when it connects, and they are
//! created (or updated to these settings) then, with the dead letters' stream: the
//! first service up creates them and the others find them, so there is no separate
//! set-up step to forget.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind, consumer, context, stream};
use async_trait::async_trait;
use tokio_stream::StreamExt as _;

use super::handling::{self, Decision, Handler, RetryPolicy};
use super::{Event, EventPublisher, EventsError, NatsConfig, PublishError};

/// The stream of every dead letter (`dlq.>`, see [`handling::dead_letter_subject`]).
pub const DEAD_LETTERS_STREAM: &str = "DEAD_LETTERS";

/// The header JetStream de-duplicates on: the event id.
const MSG_ID: &str = "Nats-Msg-Id";

/// One stream: its name, subjects and how long it keeps messages. Events are kept by
/// limits, not until acknowledged, so a new consumer can replay them and an outage of
/// a consumer shorter than `max_age` loses nothing. The de-duplication window of every
/// stream is [`DUPLICATE_WINDOW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static [&'static str],
    /// Messages older than this are deleted, acknowledged or not.
    pub max_age: Duration,
    /// Past this size the oldest messages are deleted.
    pub max_bytes: i64,
}

/// The stream of dead letters, created at every connect.
const DEAD_LETTERS: StreamSpec = StreamSpec {
    name: DEAD_LETTERS_STREAM,
    subjects: &["dlq.>"],
    max_age: Duration::from_secs(30 * 24 * 3600),
    max_bytes: 256 << 20,
};

/// How long JetStream remembers an event id: the same event published again within it
/// (a publisher retrying after a lost acknowledgement) is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// A connection to JetStream, with the streams in place.
#[derive(Clone, Debug)]
pub(super) struct JetStream {
    context: jetstream::Context,
    config: NatsConfig,
    /// The service's streams and the dead letters'.
    streams: Vec<StreamSpec>,
}

impl JetStream {
    /// Connects, retrying for up to `NATS_CONNECT_TIMEOUT` (in Kubernetes NATS may
    /// start after the service), and creates or updates `streams` and the dead
    /// letters' stream.
    pub(super) async fn connect(
        config: &NatsConfig,
        app: &str,
        streams: &[StreamSpec],
    ) -> Result<Self, EventsError> {
        let client = connect_within(config, app).await?;
        let mut context = jetstream::new(client);
        context.set_timeout(config.publish_timeout);
        let streams: Vec<StreamSpec> = streams.iter().copied().chain([DEAD_LETTERS]).collect();
        for spec in &streams {
            context
                .create_or_update_stream(stream_config(spec))
                .await
                .map_err(|e| {
                    EventsError::new(
                        format!(
                            "cannot create JetStream stream {} on {}",
                            spec.name, config.urls
                        ),
                        e,
                    )
                })?;
        }
        tracing::info!(servers = %config.urls, "connected to NATS JetStream");
        Ok(Self {
            context,
            config: config.clone(),
            streams,
        })
    }

    pub(super) fn publisher(&self) -> Arc<dyn EventPublisher> {
        Arc::new(Publisher {
            context: self.context.clone(),
            timeout: self.config.publish_timeout,
        })
    }

    /// The durable pull consumer `name` of `subject` (created, or updated to these
    /// settings): explicit acks, redelivery after `ack_wait`, bounded deliveries.
    pub(super) async fn consumer(
        &self,
        name: &str,
        subject: &str,
        policy: &RetryPolicy,
    ) -> Result<PullSource, EventsError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| {
            EventsError::new(
                format!("cannot create JetStream consumer {name} of {subject}"),
                e,
            )
        };
        let stream = self
            .context
            .get_stream(stream_of(&self.streams, subject).ok_or_else(|| {
                failed(format!("no stream given to Bus::connect holds {subject}").into())
            })?)
            .await
            .map_err(|e| failed(e.into()))?;
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: subject.to_owned(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: self.config.ack_wait,
                // One more than the handler's attempts: an event whose dead-lettering
                // failed, or whose consumer died on the last attempt, is delivered once
                // more to be dead-lettered, rather than left unprocessed in the stream.
                max_deliver: i64::from(policy.max_deliver) + 1,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(e.into()))?;
        Ok(PullSource {
            name: name.to_owned(),
            context: self.context.clone(),
            consumer,
            messages: None,
        })
    }
}

/// Tries to connect until it works or `connect_timeout` has passed.
async fn connect_within(config: &NatsConfig, app: &str) -> Result<async_nats::Client, EventsError> {
    let deadline = tokio::time::Instant::now() + config.connect_timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        let attempt = async_nats::ConnectOptions::new()
            .name(app)
            .connection_timeout(config.connect_timeout.min(Duration::from_secs(5)))
            .connect(config.urls.server_addrs())
            .await;
        match attempt {
            Ok(client) => return Ok(client),
            Err(error) if tokio::time::Instant::now() + delay < deadline => {
                tracing::warn!(servers = %config.urls, %error, "NATS not reachable yet: retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(error) => {
                return Err(EventsError::new(
                    format!(
                        "cannot connect to NATS at {} within {:?} (NATS_CONNECT_TIMEOUT)",
                        config.urls, config.connect_timeout
                    ),
                    error,
                ));
            }
        }
    }
}

fn stream_config(spec: &StreamSpec) -> stream::Config {
    stream::Config {
        name: spec.name.to_owned(),
        subjects: spec.subjects.iter().map(|s| (*s).to_owned()).collect(),
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::Old,
        max_age: spec.max_age,
        max_bytes: spec.max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// The stream of `streams` that holds `subject` (exactly, or by a `>` wildcard).
fn stream_of(streams: &[StreamSpec], subject: &str) -> Option<&'static str> {
    streams
        .iter()
        .find(|spec| {
            spec.subjects
                .iter()
                .any(|pattern| match pattern.strip_suffix('>') {
                    Some(prefix) => subject.starts_with(prefix) && subject.len() > prefix.len(),
                    None => *pattern == subject,
                })
        })
        .map(|spec| spec.name)
}

/// Publishes with the event id as `Nats-Msg-Id` and awaits JetStream's acknowledgement.
#[derive(Debug)]
struct Publisher {
    context: jetstream::Context,
    timeout: Duration,
}

#[async_trait]
impl EventPublisher for Publisher {
    async fn publish(&self, event: Event) -> Result<(), PublishError> {
        let failed =
            |event: &Event, source: Box<dyn std::error::Error + Send + Sync>| PublishError {
                subject: event.subject.clone(),
                event_id: event.id.clone(),
                source,
            };
        // Bounded as a whole: a disconnected client may also wait to send.
        match tokio::time::timeout(self.timeout, publish(&self.context, &event)).await {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    tracing::debug!(event_id = %event.id, "JetStream had this event already");
                }
                Ok(())
            }
            Ok(Err(error)) => Err(failed(&event, error.into())),
            Err(elapsed) => Err(failed(
                &event,
                format!(
                    "no JetStream acknowledgement within {:?}: {elapsed}",
                    self.timeout
                )
                .into(),
            )),
        }
    }
}

/// Publishes `event` and awaits its acknowledgement (the stream stored it).
async fn publish(
    context: &jetstream::Context,
    event: &Event,
) -> Result<jetstream::publish::PublishAck, context::PublishError> {
    let mut headers = HeaderMap::new();
    for (name, value) in &event.headers {
        headers.append(name.as_str(), value.as_str());
    }
    let message = PublishMessage::build()
        .payload(event.payload.clone())
        .headers(headers)
        .message_id(&event.id);
    context
        .send_publish(event.subject.clone(), message)
        .await?
        .await
}

/// The messages of one durable pull consumer, and what the consume loop does with them.
pub(super) struct PullSource {
    name: String,
    context: jetstream::Context,
    consumer: consumer::Consumer<consumer::pull::Config>,
    messages: Option<consumer::pull::Stream>,
}

impl std::fmt::Debug for PullSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullSource")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PullSource {
    /// The next message. Errors of the pull (e.g. missed heartbeats while NATS is
    /// unreachable) are logged and the pull goes on; it never ends by itself.
    pub(super) async fn next(&mut self) -> Option<jetstream::Message> {
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => match self
                    .consumer
                    .stream()
                    // Few at a time: what is pulled but not processed when the service
                    // stops waits `ack_wait` to be delivered again.
                    .max_messages_per_batch(10)
                    .messages()
                    .await
                {
                    Ok(messages) => self.messages.insert(messages),
                    Err(error) => {
                        tracing::warn!(consumer = %self.name, %error, "cannot pull from JetStream: retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => return Some(message),
                Some(Err(error)) => {
                    tracing::warn!(consumer = %self.name, %error, "pulling from JetStream");
                }
                None => self.messages = None,
            }
        }
    }

    /// Handles one message and acks, naks (with the backoff) or dead-letters it.
    pub(super) async fn process(
        &self,
        app: &'static str,
        policy: &RetryPolicy,
        handler: &impl Handler,
        message: jetstream::Message,
    ) {
        let (attempt, stream_sequence) = match message.info() {
            Ok(info) => (
                u32::try_from(info.delivered).unwrap_or(u32::MAX),
                format!("{} {}", info.stream, info.stream_sequence),
            ),
            Err(error) => {
                tracing::warn!(consumer = %self.name, %error, "not a JetStream message: skipped");
                return;
            }
        };
        let event = event_of(&message);
        let outcome = handling::handle(app, handler, &event, attempt).await;
        let ack = match handling::decide(&outcome, attempt, policy) {
            Decision::Ack => AckKind::Ack,
            Decision::Retry(delay) => AckKind::Nak(Some(delay)),
            Decision::DeadLetter(reason) => {
                self.dead_letter(&event, &reason, attempt, &stream_sequence, policy)
                    .await
            }
        };
        if let Err(error) = message.ack_with(ack).await {
            // It comes back after ack_wait; the handler is idempotent.
            tracing::warn!(consumer = %self.name, event_id = %event.id, %error, "cannot acknowledge");
        }
    }

    /// Publishes the dead letter of `event` and answers how to ack the original:
    /// terminate it once the dead letter is stored, or retry later if it could not be.
    async fn dead_letter(
        &self,
        event: &Event,
        reason: &str,
        attempts: u32,
        stream_sequence: &str,
        policy: &RetryPolicy,
    ) -> AckKind {
        let subject = handling::dead_letter_subject(&self.name, &event.subject);
        let mut headers = handling::dead_letter_headers(event, &self.name, reason, attempts);
        headers.push((
            handling::DEAD_LETTER_STREAM_SEQUENCE.to_owned(),
            stream_sequence.to_owned(),
        ));
        let letter = Event {
            // One dead letter per consumer and event, however often this runs.
            id: format!("{subject}:{}", event.id),
            subject: subject.clone(),
            headers,
            payload: event.payload.clone(),
        };
        match publish(&self.context, &letter).await {
            Ok(_) => {
                tracing::error!(event_id = %event.id, %subject, reason, "event dead-lettered");
                AckKind::Term
            }
            Err(error) => {
                tracing::error!(event_id = %event.id, %subject, %error, "cannot dead-letter: retrying later");
                AckKind::Nak(Some(policy.max_backoff))
            }
        }
    }
}

/// The event a JetStream message carries: its id is the `Nats-Msg-Id` it was
/// published with, its headers the others.
fn event_of(message: &jetstream::Message) -> Event {
    let mut id = String::new();
    let mut headers = Vec::new();
    if let Some(map) = &message.headers {
        for (name, values) in map.iter() {
            for value in values {
                if AsRef::<str>::as_ref(name) == MSG_ID {
                    id = value.as_str().to_owned();
                } else {
                    headers.push((name.to_string(), value.as_str().to_owned()));
                }
            }
        }
    }
    // The map has no order; keep the result stable.
    headers.sort();
    Event {
        id,
        subject: message.subject.to_string(),
        headers,
        payload: message.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_map_to_their_streams() {
        let events = StreamSpec {
            name: "SHOP_EVENTS",
            subjects: &["shop.v1.events"],
            ..DEAD_LETTERS
        };
        let streams = [events, DEAD_LETTERS];
        assert_eq!(stream_of(&streams, "shop.v1.events"), Some("SHOP_EVENTS"));
        assert_eq!(
            stream_of(&streams, "dlq.mailer.shop.v1.events"),
            Some(DEAD_LETTERS_STREAM)
        );
        assert_eq!(stream_of(&streams, "dlq."), None);
        assert_eq!(stream_of(&streams, "shop.v1.events.x"), None);
        assert_eq!(stream_of(&streams, "payments.v1.events"), None);
    }
}
