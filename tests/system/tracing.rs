//! OpenTelemetry end to end: the services as separate processes export their spans over
//! OTLP/gRPC to a collector in the test, and one order is one trace across every hop.

use crate::processes;

use std::collections::HashMap;
use std::time::{Duration, Instant}; // remove-service: notifications

use gateway::testing::HttpClient;
use http::StatusCode;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use processes::{Collector, Span, System};
use serde_json::json;

/// The caller's span: a W3C `traceparent` as a browser or another service sends it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn traceparent() -> String {
    format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
}

fn order(customer: &str) -> serde_json::Value {
    json!({"customerId": customer, "items": [{"sku": "SKU-001", "quantity": 1}], "cardToken": "tok_visa"})
}

/// Lists the spans, one per line, for failure messages.
fn dump(spans: &[&Span]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "  {} {:?} {} span={} parent={} {:?}",
                s.service, s.kind, s.name, s.span_id, s.parent_span_id, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn one<'a>(spans: &[&'a Span], what: &str, matches: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<_> = spans.iter().copied().filter(|s| matches(s)).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {what}, found {}:\n{}",
        found.len(),
        dump(spans)
    );
    found[0]
}

/// Asserts that every gRPC server span of `trace` is the child of the client span that
/// made the call (same method, another process), and returns the server spans.
fn assert_calls_are_linked<'a>(trace: &[&'a Span]) -> Vec<&'a Span> {
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let servers: Vec<_> = trace
        .iter()
        .copied()
        .filter(|s| s.kind == SpanKind::Server && s.attr("rpc.system") == Some("grpc"))
        .collect();
    assert!(!servers.is_empty(), "no gRPC server span:\n{}", dump(trace));
    for server in &servers {
        let parent = by_id
            .get(server.parent_span_id.as_str())
            .unwrap_or_else(|| {
                panic!(
                    "the parent of {} in {} is not in the trace:\n{}",
                    server.name,
                    server.service,
                    dump(trace)
                )
            });
        assert_eq!(parent.kind, SpanKind::Client, "{}", dump(trace));
        assert_eq!(parent.name, server.name, "{}", dump(trace));
        assert_ne!(parent.service, server.service, "{}", dump(trace));
    }
    servers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_order_is_one_trace_across_every_process() {
    let collector = Collector::start().await;
    let system = System::start(&collector.endpoint(), &[]).await;
    let http = HttpClient::new(system.gateway.addr);

    // An order, continuing the caller's trace.
    let traceparent = traceparent();
    let placed = http
        .post_json(
            "/v1/orders",
            &[
                ("Idempotency-Key", "trace-1"),
                ("traceparent", traceparent.as_str()),
            ],
            &order("cus_trace"),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.json());
    assert_eq!(placed.json()["status"], "ORDER_STATUS_CONFIRMED");
    // A failed call, in a trace of its own.
    let missing = http.get("/v1/products/SKU-404").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // SIGTERM flushes every process's spans before it exits.
    let logs = system.stop().await;
    let spans = collector.spans();
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();

    // The gateway's HTTP server span continues the caller's span.
    let http_span = one(&trace, "gateway HTTP span", |s| {
        s.service == "gateway" && s.kind == SpanKind::Server && s.name == "POST /v1/orders"
    });
    assert_eq!(http_span.parent_span_id, CALLER_SPAN, "{}", dump(&trace));
    assert_eq!(http_span.attr("http.response.status_code"), Some("201"));

    // Every hop: gateway → orders → inventory and payments, each server span the child
    // of its client span, each process under its own service.name.
    let servers = assert_calls_are_linked(&trace);
    let served: Vec<(&str, &str)> = servers
        .iter()
        .map(|s| (s.service.as_str(), s.name.as_str()))
        .collect();
    for (service, method) in [
        ("orders", "orders.v1.OrderService/PlaceOrder"),
        ("inventory", "inventory.v1.InventoryService/GetProduct"),
        ("inventory", "inventory.v1.InventoryService/ReserveStock"),
        (
            "inventory",
            "inventory.v1.InventoryService/CommitReservation",
        ),
        ("payments", "payments.v1.PaymentService/Charge"),
    ] {
        assert!(
            served.contains(&(service, method)),
            "no {method} served by {service} in the trace:\n{}",
            dump(&trace)
        );
    }
    for server in &servers {
        assert_eq!(
            server.attr("rpc.grpc.status_code"),
            Some("0"),
            "{}",
            dump(&trace)
        );
        assert_eq!(server.attr("app.service"), Some(server.service.as_str()));
    }
    let place = one(&trace, "PlaceOrder client span", |s| {
        s.kind == SpanKind::Client && s.name == "orders.v1.OrderService/PlaceOrder"
    });
    assert_eq!(place.service, "gateway");
    assert!(
        trace
            .iter()
            .any(|s| s.span_id == place.parent_span_id && s.service == "gateway"),
        "the gateway's client call belongs to its request:\n{}",
        dump(&trace)
    );
    // Orders publishes its events inside the trace, with the context in their headers.
    let published: Vec<_> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Producer && s.service == "orders")
        .collect();
    assert_eq!(
        published.len(),
        2,
        "placed and confirmed:\n{}",
        dump(&trace)
    );
    assert!(
        published
            .iter()
            .all(|s| s.name == "publish orders.v1.events")
    );

    // The failed call: the NOT_FOUND of inventory, on both ends of the call.
    let not_found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == "inventory.v1.InventoryService/GetProduct")
        .filter(|s| s.attr("rpc.grpc.status_code") == Some("5"))
        .collect();
    let server = one(&not_found, "NOT_FOUND server span", |s| {
        s.kind == SpanKind::Server
    });
    let client = one(&not_found, "NOT_FOUND client span", |s| {
        s.kind == SpanKind::Client
    });
    assert_eq!(
        (server.service.as_str(), client.service.as_str()),
        ("inventory", "gateway")
    );
    assert_eq!(server.parent_span_id, client.span_id);
    assert_eq!(server.trace_id, client.trace_id);
    assert_ne!(
        server.trace_id, CALLER_TRACE,
        "a request without traceparent starts a trace"
    );
    // NOT_FOUND is the caller's error, not the server's (OpenTelemetry RPC conventions).
    assert_eq!(
        (server.status.as_str(), client.status.as_str()),
        ("Unset", "Error")
    );
    // Up the chain (the handler's own span, then the request's) to the root.
    let failed: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == client.trace_id)
        .collect();
    let mut root = client;
    while !root.parent_span_id.is_empty() {
        root = one(&failed, "parent in the failed call's trace", |s| {
            s.span_id == root.parent_span_id
        });
    }
    assert_eq!(
        (root.service.as_str(), root.kind, root.name.as_str()),
        ("gateway", SpanKind::Server, "GET /v1/products/{sku}"),
        "the gateway's request span is the root:\n{}",
        dump(&failed)
    );

    // Logs and traces join: orders logged the order with the trace's id.
    let joined = logs["orders"].iter().any(|line| {
        serde_json::from_str::<serde_json::Value>(line)
            .is_ok_and(|log| log["message"] == "order placed" && log["trace_id"] == CALLER_TRACE)
    });
    assert!(
        joined,
        "no 'order placed' line with trace_id {CALLER_TRACE}:\n{}",
        logs["orders"].join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sampling_ratio_of_zero_exports_nothing() {
    let collector = Collector::start().await;
    let sampler = [
        ("OTEL_TRACES_SAMPLER", "traceidratio".to_owned()),
        ("OTEL_TRACES_SAMPLER_ARG", "0".to_owned()),
    ];
    let system = System::start(&collector.endpoint(), &sampler).await;
    let http = HttpClient::new(system.gateway.addr);
    let traceparent = traceparent();
    let placed = http
        .post_json(
            "/v1/orders",
            &[
                ("Idempotency-Key", "unsampled-1"),
                ("traceparent", traceparent.as_str()),
            ],
            &order("cus_unsampled"),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    assert_eq!(
        http.get("/v1/products/SKU-404").await.status,
        StatusCode::NOT_FOUND
    );
    let logs = system.stop().await;
    let spans = collector.spans();
    assert!(
        spans.is_empty(),
        "exported:\n{}",
        dump(&spans.iter().collect::<Vec<_>>())
    );
    // Not because nothing ran: the order went through and was logged.
    assert!(logs["orders"].iter().any(|l| l.contains("order placed")));
}

// remove-service: notifications {
/// Each service its own process, events through NATS JetStream: notifications gets the
/// order's events from another process, and its consumer spans continue the trace of
/// orders' producer spans across the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_processes_events_go_through_jetstream_and_join_the_order_trace() {
    let nats = shared::testing::NatsServer::start().await;
    let collector = Collector::start().await;
    let system = System::start(&collector.endpoint(), &[("NATS_URL", nats.url())]).await;
    let http = HttpClient::new(system.gateway.addr);
    let traceparent = traceparent();
    let placed = http
        .post_json(
            "/v1/orders",
            &[
                ("Idempotency-Key", "trace-nats-1"),
                ("traceparent", traceparent.as_str()),
            ],
            &order("cus_nats"),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED, "{:?}", placed.json());
    let deadline = Instant::now() + processes::PATIENCE;
    loop {
        let page = http
            .get("/v1/customers/cus_nats/notifications")
            .await
            .json();
        if page["notifications"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no notifications: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    system.stop().await;

    let spans = collector.spans();
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    let consumed: Vec<_> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    assert_eq!(consumed.len(), 2, "placed and confirmed:\n{}", dump(&trace));
    for consumer in consumed {
        assert_eq!(consumer.service, "notifications");
        let producer = one(&trace, "producer of a consumed event", |s| {
            s.span_id == consumer.parent_span_id
        });
        assert_eq!(
            (producer.kind, producer.service.as_str()),
            (SpanKind::Producer, "orders"),
            "{}",
            dump(&trace)
        );
        assert_eq!(
            producer.attr("messaging.message.id"),
            consumer.attr("messaging.message.id")
        );
    }
}
// remove-service: notifications }

/// The `stack` launcher runs every service in one process, with one tracer provider:
/// every span has `service.name=stack`, and `app.service` tells the services apart. The
/// in-process bus carries the trace from orders to the notifications consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_one_process_spans_name_their_service_and_events_join_the_order_trace() {
    if !alone!() {
        return;
    }
    spans_name_their_service_and_events_join_the_order_trace(&shared::Env::default()).await;
}

/// The same through NATS JetStream: the trace context crosses the broker in the
/// messages' headers, and the consumer span is the producer span's child.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_through_jetstream_join_the_order_trace() {
    if !alone!() {
        return;
    }
    let nats = shared::testing::NatsServer::start().await;
    let stack_env = shared::Env::default().with("NATS_URL", nats.url());
    spans_name_their_service_and_events_join_the_order_trace(&stack_env).await;
}

/// Places an order through a stack configured by `stack_env`, then checks its trace.
async fn spans_name_their_service_and_events_join_the_order_trace(stack_env: &shared::Env) {
    let collector = Collector::start().await;
    // Spans of the RPC layers, the event helpers and the gateway's routes; no log noise.
    let env: shared::Env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()),
        (
            "RUST_LOG",
            "off,shared::observe=info,shared::events=info,gateway::http=info".to_owned(),
        ),
    ]
    .into_iter()
    .collect();
    let telemetry =
        shared::telemetry::init("stack", &env).expect("the only telemetry of this test process");
    let stack = stack::testing::TestStack::start(stack_env, &stack::Wiring::default()).await;
    let http = stack.http();
    let traceparent = traceparent();
    let placed = http
        .post_json(
            "/v1/orders",
            &[
                ("Idempotency-Key", "stack-1"),
                ("traceparent", traceparent.as_str()),
            ],
            &order("cus_stack"),
        )
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);
    // remove-service: notifications {
    // The consumer made both notifications (placed, confirmed): a bounded poll.
    let deadline = Instant::now() + processes::PATIENCE;
    loop {
        let page = http
            .get("/v1/customers/cus_stack/notifications")
            .await
            .json();
        if page["notifications"]
            .as_array()
            .is_some_and(|n| n.len() == 2)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no notifications: {page}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // remove-service: notifications }
    // Stopping drains the consumer (its spans end), then the provider flushes them.
    stack.stop().await.unwrap();
    telemetry.shutdown().await;

    let spans = collector.spans();
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == CALLER_TRACE)
        .collect();
    assert!(
        !trace.is_empty() && trace.iter().all(|s| s.service == "stack"),
        "{}",
        dump(&trace)
    );
    let servers: Vec<_> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Server)
        .collect();
    assert!(servers.len() >= 2, "gateway and services: {}", dump(&trace));
    for server in servers {
        let want = match server.attr("rpc.service") {
            Some(service) => service.split('.').next().unwrap(),
            None => "gateway",
        };
        assert_eq!(server.attr("app.service"), Some(want), "{}", dump(&trace));
    }
    // remove-service: notifications {
    let consumed: Vec<_> = trace
        .iter()
        .filter(|s| s.kind == SpanKind::Consumer)
        .collect();
    assert_eq!(consumed.len(), 2, "placed and confirmed:\n{}", dump(&trace));
    for consumer in consumed {
        assert_eq!(consumer.name, "process orders.v1.events");
        assert_eq!(consumer.attr("app.service"), Some("notifications"));
        let producer = one(&trace, "producer of a consumed event", |s| {
            s.span_id == consumer.parent_span_id
        });
        assert_eq!(producer.kind, SpanKind::Producer, "{}", dump(&trace));
        assert_eq!(producer.attr("app.service"), Some("orders"));
        assert_eq!(
            producer.attr("messaging.message.id"),
            consumer.attr("messaging.message.id")
        );
    }
    // remove-service: notifications }
}
