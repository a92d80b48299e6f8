//! The notifications consumer on a real `nats-server` with JetStream: duplicates,
//! poison messages and a consumer that was down lose or double nothing.

use std::sync::Arc;
use std::time::Duration;

use contracts::orders::v1::{self as pb, order_event::Kind};
use orders::events::{ORDER_EVENTS, ORDER_EVENTS_STREAM};
use prost::Message;
use shared::PageRequest;
use shared::events::{
    Bus, DEAD_LETTER_ATTEMPTS, DEAD_LETTER_REASON, DEAD_LETTER_STREAM_SEQUENCE, Event,
    EventsConfig, InProcessBus, consume, dead_letter_subject,
};
use shared::testing::{NatsServer, eventually};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::OrderEvents;
use crate::store::{MemoryStore, Store};

/// The bus of `server`, with quick retries and redeliveries for tests.
async fn bus(server: &NatsServer) -> Bus {
    let url = server.url();
    let env: shared::Env = [
        ("NATS_URL", url.as_str()),
        ("NATS_ACK_WAIT", "2s"),
        ("EVENTS_RETRY_BACKOFF", "10ms"),
        ("EVENTS_MAX_DELIVER", "3"),
    ]
    .into_iter()
    .collect();
    let config = EventsConfig::from_env(&env).unwrap();
    Bus::connect(
        &config,
        crate::NAME,
        &[ORDER_EVENTS_STREAM],
        &InProcessBus::new(),
    )
    .await
    .unwrap()
}

/// The consumer `notifications` running on `store` until [`Running::stop`].
struct Running {
    draining: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    async fn start(bus: &Bus, store: Arc<MemoryStore>) -> Self {
        let source = bus.consumer(crate::NAME, ORDER_EVENTS).await.unwrap();
        let draining = CancellationToken::new();
        let task = tokio::spawn(consume(
            crate::NAME,
            source,
            draining.clone(),
            OrderEvents { store },
        ));
        Self { draining, task }
    }

    async fn stop(self) {
        self.draining.cancel();
        self.task.await.unwrap();
    }
}

fn placed(order_id: &str) -> Event {
    let message = pb::OrderEvent {
        event_id: format!("{order_id}.placed"),
        occur_time: None,
        order: Some(pb::Order {
            order_id: order_id.into(),
            customer_id: "cus-1".into(),
            ..Default::default()
        }),
        kind: Some(Kind::Placed(pb::OrderPlaced {})),
    };
    Event::new(
        ORDER_EVENTS,
        message.event_id.clone(),
        message.encode_to_vec(),
    )
}

/// The event ids of the customer's notifications, oldest first.
async fn notified(store: &MemoryStore) -> Vec<String> {
    let page = PageRequest::new(1000, "").unwrap();
    let mut ids: Vec<String> = store
        .notifications("cus-1", &page)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, n)| n.event_id)
        .collect();
    ids.reverse();
    ids
}

async fn wait_for(store: &Arc<MemoryStore>, count: usize) {
    eventually(&format!("{count} notifications"), || {
        let store = store.clone();
        async move { notified(&store).await.len() >= count }
    })
    .await;
}

#[tokio::test]
async fn an_event_published_twice_is_stored_once_and_notified_once() {
    let server = NatsServer::start().await;
    let bus = bus(&server).await;
    let store = Arc::new(MemoryStore::default());
    let consumer = Running::start(&bus, store.clone()).await;
    let publisher = bus.publisher();
    publisher.publish(placed("ord_1")).await.unwrap();
    publisher.publish(placed("ord_1")).await.unwrap();
    publisher.publish(placed("ord_2")).await.unwrap();

    wait_for(&store, 2).await;
    consumer.stop().await;
    let stored: Vec<_> = server
        .stored(ORDER_EVENTS)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(stored, ["ord_1.placed", "ord_2.placed"]);
    assert_eq!(notified(&store).await, ["ord_1.placed", "ord_2.placed"]);
}

#[tokio::test]
async fn an_undecodable_event_is_dead_lettered_at_once_and_blocks_nothing() {
    let server = NatsServer::start().await;
    let bus = bus(&server).await;
    let store = Arc::new(MemoryStore::default());
    let consumer = Running::start(&bus, store.clone()).await;
    let publisher = bus.publisher();
    let mut poison = Event::new(ORDER_EVENTS, "junk", vec![0xff, 0xff]);
    poison.headers.push((
        "traceparent".into(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
    ));
    publisher.publish(poison).await.unwrap();
    publisher.publish(placed("ord_1")).await.unwrap();

    wait_for(&store, 1).await;
    let subject = dead_letter_subject(crate::NAME, ORDER_EVENTS);
    eventually("the dead letter", || {
        let (server, subject) = (&server, subject.clone());
        async move { !server.stored(&subject).await.is_empty() }
    })
    .await;
    consumer.stop().await;
    assert_eq!(notified(&store).await, ["ord_1.placed"]);
    let letters = server.stored(&subject).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.payload.as_ref(), [0xff, 0xff]);
    let header = |name: &str| {
        letter
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header(DEAD_LETTER_ATTEMPTS), Some("1"), "rejected at once");
    assert_eq!(header(DEAD_LETTER_STREAM_SEQUENCE), Some("ORDER_EVENTS 1"));
    assert!(header(DEAD_LETTER_REASON).unwrap().contains("rejected"));
    assert!(
        header("traceparent").is_some(),
        "the original headers are kept"
    );
}

#[tokio::test]
async fn events_published_while_the_consumer_is_down_are_all_notified_once() {
    let server = NatsServer::start().await;
    let bus = bus(&server).await;
    let store = Arc::new(MemoryStore::default());
    // The durable consumer exists, then stops.
    let consumer = Running::start(&bus, store.clone()).await;
    bus.publisher().publish(placed("ord_0")).await.unwrap();
    wait_for(&store, 1).await;
    consumer.stop().await;

    let publisher = bus.publisher();
    for i in 1..=100 {
        publisher
            .publish(placed(&format!("ord_{i}")))
            .await
            .unwrap();
    }
    assert!(
        notified(&store).await.len() == 1,
        "nothing is consumed while down"
    );

    let consumer = Running::start(&bus, store.clone()).await;
    wait_for(&store, 101).await;
    // Anything redelivered by now would have shown up as a second notification.
    tokio::time::timeout(Duration::from_secs(10), consumer.stop())
        .await
        .expect("the consumer stops");
    let mut ids = notified(&store).await;
    ids.sort();
    let mut expected: Vec<String> = (0..=100).map(|i| format!("ord_{i}.placed")).collect();
    expected.sort();
    assert_eq!(ids, expected, "each event once");
}
