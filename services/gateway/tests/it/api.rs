//! The REST API over real HTTP, in front of the real services, all in-process: the
//! stack on free ports, whose gateway is the one under test; gateways with other
//! settings run in front of the same services.

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gateway::testing::HttpClient;
use http::{Method, StatusCode};
use serde_json::json;
use shared::testing::{ClosedPort, eventually};
use stack::testing::TestStack;
use support::{error, fields, order, place, start};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A gateway of its own on a free port, configured by `pairs`.
struct TestGateway {
    addr: SocketAddr,
    http: HttpClient,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), shared::Error>>,
}

impl TestGateway {
    async fn start(pairs: &[(&str, &str)]) -> Self {
        shared::testing::init_logs();
        let env = shared::testing::env(pairs.iter().copied());
        let server = gateway::build(gateway::Config::from_env(&env).expect("valid test config"))
            .await
            .expect("the gateway binds");
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(shutdown.clone().cancelled_owned()));
        Self {
            addr,
            http: HttpClient::new(addr),
            shutdown,
            task,
        }
    }

    /// A gateway in front of `stack`'s services (each one's `{NAME}_ADDR`, a scaffolded
    /// service's too), with `pairs` on top.
    async fn in_front_of(stack: &TestStack, pairs: &[(&str, &str)]) -> Self {
        let upstreams: Vec<(String, String)> = stack
            .services()
            .filter(|(name, _)| *name != "gateway")
            .map(|(name, addr)| (format!("{}_ADDR", name.to_ascii_uppercase()), url(addr)))
            .collect();
        let mut all: Vec<(&str, &str)> = upstreams
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        all.extend_from_slice(pairs);
        Self::start(&all).await
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

#[tokio::test]
async fn products_are_listed_page_by_page() {
    let stack = start().await;
    let http = stack.http();
    let mut skus = Vec::new();
    let mut path = "/v1/products?page_size=3".to_owned();
    loop {
        let response = http.get(&path).await;
        assert_eq!(response.status, StatusCode::OK);
        let page = response.json();
        let products = page["products"].as_array().unwrap();
        assert!(products.len() <= 3);
        skus.extend(
            products
                .iter()
                .map(|p| p["sku"].as_str().unwrap().to_owned()),
        );
        match page["nextPageToken"].as_str() {
            Some(token) => path = format!("/v1/products?page_size=3&page_token={token}"),
            None => break,
        }
    }
    let expected: Vec<String> = (1..=8).map(|i| format!("SKU-00{i}")).collect();
    assert_eq!(skus, expected);
}

#[tokio::test]
async fn a_product_reads_like_proto3_json_without_internal_stock_buckets() {
    let stack = start().await;
    let response = stack.http().get("/v1/products/SKU-001").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.json(),
        json!({
            "sku": "SKU-001",
            "name": "Espresso beans, 1 kg",
            "description": "Dark roast, whole beans.",
            "price": {"currencyCode": "USD", "amountMinor": "2400"},
            "available": "100",
        })
    );
}

#[tokio::test]
async fn a_missing_product_is_404_in_the_error_shape() {
    let stack = start().await;
    let response = stack.http().get("/v1/products/SKU-404").await;
    assert_eq!(response.status, StatusCode::NOT_FOUND);
    assert_eq!(
        response.json(),
        json!({"error": {"code": 404, "status": "NOT_FOUND", "message": "product \"SKU-404\" not found"}})
    );
}

#[tokio::test]
async fn bad_page_parameters_are_400_naming_the_parameter() {
    let stack = start().await;
    let http = stack.http();
    for query in ["page_size=ten", "page_size=-1", "page_token=forged"] {
        let response = http.get(&format!("/v1/products?{query}")).await;
        let error = error(&response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
        let parameter = query.split('=').next().unwrap();
        assert_eq!(fields(&error), [parameter], "{query}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let stack = start().await;
    let http = stack.http();
    let response = http.get("/v2/products").await;
    error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");

    let response = http.send(Method::DELETE, "/v1/products", &[], "").await;
    error(&response, StatusCode::METHOD_NOT_ALLOWED, "UNIMPLEMENTED");
    assert_eq!(response.header("allow"), Some("GET,HEAD"));
}

#[tokio::test]
async fn an_order_is_created_and_read_back() {
    let stack = start().await;
    let http = stack.http();
    let created = place(&http, "gw-create-1", &order("cus_gw_1", "SKU-001", 2)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let order = created.json();
    let id = order["orderId"].as_str().unwrap();
    assert!(id.starts_with("ord_"), "{order}");
    assert_eq!(
        created.header("location"),
        Some(format!("/v1/orders/{id}").as_str())
    );
    assert_eq!(order["status"], "ORDER_STATUS_CONFIRMED");
    assert_eq!(order["customerId"], "cus_gw_1");
    assert_eq!(
        order["items"],
        json!([{"sku": "SKU-001", "quantity": 2, "unitPrice": {"currencyCode": "USD", "amountMinor": "2400"}}])
    );
    assert_eq!(
        order["total"],
        json!({"currencyCode": "USD", "amountMinor": "4800"})
    );
    assert!(
        order["paymentId"]
            .as_str()
            .is_some_and(|p| p.starts_with("pay_")),
        "{order}"
    );
    assert!(order.get("statusReason").is_none(), "{order}");
    for time in ["createTime", "updateTime"] {
        let text = order[time].as_str().unwrap();
        assert!(
            text.parse::<prost_types::Timestamp>().is_ok(),
            "{time} is RFC 3339: {text}"
        );
    }

    let read = http.get(&format!("/v1/orders/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.json(), order);

    let missing = http.get("/v1/orders/ord_missing").await;
    error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// `WatchOrder` on HTTP: Server-Sent Events of the order's states, ending with the
/// final one; an unknown order is a 404 in the error shape, before any stream.
#[tokio::test]
async fn an_order_is_watched_as_server_sent_events_until_final() {
    let stack = start().await;
    let http = stack.http();
    let created = place(&http, "gw-watch-1", &order("cus_gw_w", "SKU-002", 1)).await;
    let order = created.json();
    let id = order["orderId"].as_str().unwrap();
    let mut stream = http.events(&format!("/v1/orders/{id}/watch"), &[]).await;
    assert_eq!(stream.status, StatusCode::OK);
    let event = stream.next().await.expect("the order's state");
    assert_eq!(event.json(), order);
    assert_eq!(
        stream.next().await,
        None,
        "the stream ends once the order is final"
    );

    let missing = http.get("/v1/orders/ord_missing/watch").await;
    error(&missing, StatusCode::NOT_FOUND, "NOT_FOUND");
}

#[tokio::test]
async fn a_declined_card_is_a_created_order_that_was_rejected() {
    let stack = start().await;
    let mut body = order("cus_gw_2", "SKU-003", 1);
    body["cardToken"] = json!("tok_declined");
    let response = place(&stack.http(), "gw-declined-1", &body).await;
    assert_eq!(response.status, StatusCode::CREATED);
    let order = response.json();
    assert_eq!(order["status"], "ORDER_STATUS_REJECTED");
    assert!(
        order["statusReason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{order}"
    );
}

#[tokio::test]
async fn the_same_key_gets_the_same_order_and_another_body_is_409() {
    let stack = start().await;
    let http = stack.http();
    let first = place(&http, "gw-retry-1", &order("cus_gw_3", "SKU-002", 1)).await;
    let again = place(&http, "gw-retry-1", &order("cus_gw_3", "SKU-002", 1)).await;
    assert_eq!(
        (first.status, again.status),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(first.body, again.body);

    let other = place(&http, "gw-retry-1", &order("cus_gw_3", "SKU-002", 2)).await;
    let error = error(&other, StatusCode::CONFLICT, "ALREADY_EXISTS");
    assert_eq!(fields(&error), ["Idempotency-Key"]);
}

#[tokio::test]
async fn bad_orders_are_4xx_naming_what_to_fix() {
    let stack = start().await;
    let http = stack.http();
    let valid = order("cus_gw_4", "SKU-003", 1).to_string();
    // Every case is an INVALID_ARGUMENT: its HTTP status, and the fields it names.
    let expect =
        async |headers: &[(&str, &str)], body: &str, code: StatusCode, expected: &[&str]| {
            let response = http
                .send(Method::POST, "/v1/orders", headers, body.to_owned())
                .await;
            let error = error(&response, code, "INVALID_ARGUMENT");
            assert_eq!(fields(&error), expected, "{headers:?} {body}: {error}");
        };
    let json = ("content-type", "application/json");
    let key = ("Idempotency-Key", "gw-bad-1");
    let bad = StatusCode::BAD_REQUEST;

    // The Idempotency-Key header: required, once, a printable id of at most 128 characters.
    let long_key = "k".repeat(129);
    for keys in [
        vec![],
        vec!["has space"],
        vec![long_key.as_str()],
        vec!["gw-bad-1", "gw-bad-2"],
    ] {
        let headers: Vec<_> = std::iter::once(json)
            .chain(keys.iter().map(|k| ("Idempotency-Key", *k)))
            .collect();
        expect(&headers, &valid, bad, &["Idempotency-Key"]).await;
    }
    // A JSON body, declared as such.
    expect(&[key], &valid, StatusCode::UNSUPPORTED_MEDIA_TYPE, &[]).await;
    expect(
        &[key, ("content-type", "text/plain")],
        &valid,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &[],
    )
    .await;
    expect(&[json, key], r#"{"customerId": "#, bad, &[]).await;
    expect(&[json, key], "[]", bad, &[]).await;
    // Unknown fields and wrong types, named by their path.
    expect(
        &[json, key],
        r#"{"customerId": "c", "coupon": "FREE"}"#,
        bad,
        &["coupon"],
    )
    .await;
    let quantity_as_text = r#"{"items": [{"sku": "SKU-001", "quantity": "two"}]}"#;
    expect(&[json, key], quantity_as_text, bad, &["items[0].quantity"]).await;
    // The rest reach orders, whose violations are named as in the JSON body.
    let negative = order("cus_gw_4", "SKU-003", -1).to_string();
    expect(&[json, key], &negative, bad, &["items[0].quantity"]).await;
    let anonymous = json!({"items": [{"sku": "SKU-003", "quantity": 1}]}).to_string();
    expect(&[json, key], &anonymous, bad, &["customerId", "cardToken"]).await;
    expect(
        &[json, key],
        r#"{"customerId": "c", "cardToken": "t"}"#,
        bad,
        &["items"],
    )
    .await;
    let unknown_sku = order("cus_gw_4", "SKU-404", 1).to_string();
    expect(&[json, key], &unknown_sku, bad, &["items[0].sku"]).await;

    // None of it harmed the gateway or the services.
    let response = place(&http, "gw-bad-ok", &order("cus_gw_4", "SKU-003", 1)).await;
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.json()["status"], "ORDER_STATUS_CONFIRMED");
}

/// Issue 15: 110 empty items (about 400 bytes) got 503, and two such requests opened
/// the breaker in front of orders for every client. The answer is 400 with a bounded
/// list of violations; the breaker stays closed and valid orders go through.
#[tokio::test]
async fn many_empty_items_are_400_with_bounded_details_and_leave_the_breaker_closed() {
    let stack = start().await;
    let http = stack.http();
    let empty = vec![json!({}); 110];
    let body = json!({"customerId": "cus_gw_many", "items": empty, "cardToken": "tok_visa"});
    // More than enough to open the breaker (5 failures), were any attempt counted.
    for i in 0..6 {
        let response = place(&http, &format!("gw-many-{i}"), &body).await;
        let error = error(&response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
        assert_eq!(fields(&error), ["items"], "{error}");
    }
    // 100 invalid items (each: no sku, no quantity, and the sku repeated but for the
    // first: 299 violations): 20 of them, then how many more.
    let bad_items = vec![json!({"sku": "", "quantity": 0}); 100];
    let body = json!({"customerId": "cus_gw_many", "items": bad_items, "cardToken": "tok_visa"});
    let response = place(&http, "gw-many-bad", &body).await;
    let error = error(&response, StatusCode::BAD_REQUEST, "INVALID_ARGUMENT");
    let details = error["details"].as_array().unwrap();
    assert_eq!(details.len(), 21, "{error}");
    assert_eq!(details[0]["field"], "items[0].sku");
    assert_eq!(
        details[20],
        json!({"field": "", "description": "279 more violations not listed"})
    );

    let response = place(&http, "gw-many-ok", &order("cus_gw_many", "SKU-002", 1)).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    let orders = format!("{}/", stack.addr("orders"));
    let metrics = shared::metrics::render();
    let ours = |line: &&str| line.contains(&orders);
    let state = metrics
        .lines()
        .filter(ours)
        .find(|l| l.starts_with("rpc_client_breaker_state{"))
        .unwrap_or_else(|| panic!("no breaker for {orders}:\n{metrics}"));
    assert!(state.ends_with(" 0"), "closed: {state}");
    let opened = metrics
        .lines()
        .filter(ours)
        .find(|l| l.starts_with("rpc_client_breaker_transitions_total{") && l.contains("open\""));
    assert_eq!(opened, None, "the breaker never opened");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let stack = start().await;
    let gateway = TestGateway::in_front_of(&stack, &[("GATEWAY_MAX_BODY_BYTES", "1024")]).await;
    let mut body = order("cus_gw_5", "SKU-001", 1);
    body["customerId"] = json!("c".repeat(2048));
    let response = place(&gateway.http, "gw-huge-1", &body).await;
    let error = error(&response, StatusCode::PAYLOAD_TOO_LARGE, "INVALID_ARGUMENT");
    assert!(
        error["message"].as_str().unwrap().contains("1024 bytes"),
        "{error}"
    );

    let response = place(&gateway.http, "gw-huge-2", &order("cus_gw_5", "SKU-001", 1)).await;
    assert_eq!(response.status, StatusCode::CREATED);
}

#[tokio::test]
async fn readyz_is_200_once_every_upstream_serves() {
    let stack = start().await;
    let http = stack.http();
    eventually("readiness", || async {
        http.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    let readiness = http.get("/readyz").await.json();
    assert_eq!(readiness["status"], "SERVING", "{readiness}");
    let upstreams = readiness["upstreams"].as_object().unwrap();
    assert!(
        ["inventory", "orders"]
            .iter()
            .all(|u| upstreams.contains_key(*u)),
        "{readiness}"
    );
    assert!(upstreams.values().all(|s| s == "SERVING"), "{readiness}");
    let health = http.get("/healthz").await;
    assert_eq!(
        (health.status, health.json()),
        (StatusCode::OK, json!({"status": "SERVING"}))
    );
}

#[tokio::test]
async fn an_upstream_down_makes_readyz_503_naming_it_and_its_calls_503() {
    let stack = start().await;
    let orders = ClosedPort::new();
    let gateway = TestGateway::in_front_of(&stack, &[("ORDERS_ADDR", &orders.url())]).await;
    let readyz = || async {
        let response = gateway.http.get("/readyz").await;
        assert_eq!(response.status, StatusCode::SERVICE_UNAVAILABLE);
        response.json()
    };
    eventually("the other upstreams to serve", || async {
        let readiness = readyz().await;
        let upstreams = readiness["upstreams"].as_object().unwrap().iter();
        upstreams
            .filter(|(name, _)| *name != "orders")
            .all(|(_, status)| status == "SERVING")
    })
    .await;
    let readiness = readyz().await;
    assert_eq!(readiness["status"], "NOT_SERVING");
    assert_eq!(readiness["upstreams"]["orders"], "UNAVAILABLE");
    // Liveness does not depend on upstreams: restarting the gateway would not help.
    assert_eq!(gateway.http.get("/healthz").await.status, StatusCode::OK);

    let response = gateway.http.get("/v1/orders/ord_1").await;
    let error = error(&response, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    let message = error["message"].as_str().unwrap();
    let port = orders.addr.port().to_string();
    assert!(
        !message.contains(&port) && !message.contains("127.0.0.1"),
        "leaks the address: {message}"
    );
}

#[tokio::test]
async fn shutdown_turns_readyz_off_while_still_serving() {
    let stack = start().await;
    // A long delay: the test looks at the gateway during it, then drops it.
    let gateway = TestGateway::in_front_of(&stack, &[("SHUTDOWN_DELAY", "1h")]).await;
    let http = &gateway.http;
    eventually("readiness", || async {
        http.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    gateway.shutdown.cancel();
    eventually("readyz to turn 503", || async {
        http.get("/readyz").await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    assert_eq!(
        http.get("/readyz").await.json(),
        json!({"status": "NOT_SERVING", "reason": "shutting down"})
    );
    assert_eq!(http.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(
        http.get("/v1/products/SKU-001").await.status,
        StatusCode::OK
    );
    gateway.task.abort();
}

#[tokio::test]
async fn shutdown_waits_for_in_flight_requests() {
    // An "orders" that accepts connections and never answers: the request stays in
    // flight until the test hangs up on the gateway's connection.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let orders = url(black_hole.local_addr().unwrap());
    let gateway = TestGateway::start(&[("ORDERS_ADDR", &orders)]).await;
    let http = gateway.http.clone();
    let in_flight = tokio::spawn(async move { http.get("/v1/orders/ord_1").await });
    let (upstream_connection, _) = black_hole.accept().await.unwrap();

    gateway.shutdown.cancel();
    eventually("the gateway to stop accepting", || async {
        TcpStream::connect(gateway.addr).await.is_err()
    })
    .await;
    assert!(
        !gateway.task.is_finished(),
        "the drain must wait for the request in flight"
    );

    // Hanging up (with the request unread: a reset) fails the call with UNAVAILABLE,
    // and its retries find no "orders" listening any more: the caller gets a 503.
    drop(black_hole);
    drop(upstream_connection);
    let response = in_flight.await.unwrap();
    error(&response, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    gateway.task.await.unwrap().expect("a clean stop");
}

/// A request that outlasts `GATEWAY_REQUEST_TIMEOUT` is 504 on time, although the
/// upstream call's own deadline (`GRPC_CLIENT_TIMEOUT`) is far off: the request's
/// deadline bounds the calls it makes.
#[tokio::test]
async fn a_request_over_the_timeout_is_504_on_time() {
    // An "orders" that accepts connections and never answers.
    let black_hole = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let orders = url(black_hole.local_addr().unwrap());
    let gateway = TestGateway::start(&[
        ("ORDERS_ADDR", &orders),
        ("GATEWAY_REQUEST_TIMEOUT", "300ms"),
        ("GRPC_CLIENT_TIMEOUT", "30s"),
        ("GRPC_CLIENT_CONNECT_TIMEOUT", "30s"),
    ])
    .await;
    let start = Instant::now();
    let response = gateway.http.get("/v1/orders/ord_1").await;
    let elapsed = start.elapsed();
    error(&response, StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED");
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

/// Past `GATEWAY_CONCURRENCY_LIMIT` requests in flight, the next is 503 at once with
/// `Retry-After`, the probes still answer, and once the load is gone requests are
/// served again.
#[tokio::test]
async fn past_the_concurrency_limit_requests_are_503_and_the_probes_still_answer() {
    let stack = start().await;
    let gateway = TestGateway::in_front_of(&stack, &[("GATEWAY_CONCURRENCY_LIMIT", "2")]).await;
    // Two orders whose bodies never arrive: in flight until their clients hang up.
    let mut slow = Vec::new();
    for key in ["slow-1", "slow-2"] {
        let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let head = format!(
            "POST /v1/orders HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
             idempotency-key: {key}\r\ncontent-length: 100\r\n\r\n{{"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        slow.push(tcp);
    }
    let product = "/v1/products/SKU-001";
    eventually("a request over the limit to be refused", || async {
        gateway.http.get(product).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let refused = gateway.http.get(product).await;
    error(&refused, StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert_eq!(gateway.http.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(gateway.http.get("/readyz").await.status, StatusCode::OK);

    drop(slow);
    eventually("requests to be served again", || async {
        gateway.http.get(product).await.status == StatusCode::OK
    })
    .await;
}

/// Bounds each wait on a connection the gateway is expected to close: far above the
/// timeouts the tests set, never reached when the gateway cuts the connection.
const PATIENCE: Duration = Duration::from_secs(20);

/// Waits until the gateway closes `tcp` (end of stream or reset); the bytes it sent
/// first, e.g. an answer. Panics after [`PATIENCE`].
async fn closed_by_server(tcp: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.expect("the gateway to close the connection");
    received
}

/// The value of the gateway's own metric line `line` (name and labels), 0 if absent.
fn metric(line: &str) -> f64 {
    shared::metrics::render()
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A keep-alive HTTP/1.1 `GET /healthz` on `tcp`; returns once the answer is in.
async fn healthz_on(tcp: &mut TcpStream) {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.ends_with(b"}") {
        let n = tokio::time::timeout(PATIENCE, tcp.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_ne!(n, 0, "closed: {}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
}

/// Issue 15, finding 2: a client that sends its request head a byte at a time
/// (slowloris) is cut off after `GATEWAY_HEADER_READ_TIMEOUT`, however steadily it
/// sends, and the cut is counted.
#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let gateway = TestGateway::start(&[("GATEWAY_HEADER_READ_TIMEOUT", "300ms")]).await;
    let cut = r#"gateway_connections_cut_total{reason="header_read_timeout"}"#;
    let before = metric(cut);
    let mut slow = TcpStream::connect(gateway.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    // One byte of a header every 50 ms: never a complete head.
    let dribble = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(50));
        loop {
            ticks.tick().await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 1024];
        while matches!(reader.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    closed.await.expect("the gateway to cut the slow head off");
    dribble.abort();
    assert!(metric(cut) > before);
    // Others are served meanwhile and after.
    assert_eq!(gateway.http.get("/healthz").await.status, StatusCode::OK);
}

/// A kept-alive connection that stays silent is closed after `GATEWAY_IDLE_TIMEOUT`.
#[tokio::test]
async fn idle_connections_are_closed() {
    let gateway = TestGateway::start(&[
        ("GATEWAY_HEADER_READ_TIMEOUT", "60s"),
        ("GATEWAY_IDLE_TIMEOUT", "300ms"),
    ])
    .await;
    let cut = r#"gateway_connections_cut_total{reason="idle_timeout"}"#;
    let before = metric(cut);
    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    healthz_on(&mut tcp).await;
    assert!(closed_by_server(&mut tcp).await.is_empty());
    assert!(metric(cut) > before);
}

/// Past `GATEWAY_MAX_CONNECTIONS` open connections, a new one is closed at once,
/// counted; once one of the others ends, a new one is served again.
#[tokio::test]
async fn connections_past_the_cap_are_closed_at_once() {
    let gateway = TestGateway::start(&[("GATEWAY_MAX_CONNECTIONS", "2")]).await;
    let over = r#"gateway_connections_cut_total{reason="over_limit"}"#;
    let before = metric(over);
    let mut first = TcpStream::connect(gateway.addr).await.unwrap();
    healthz_on(&mut first).await;
    let mut second = TcpStream::connect(gateway.addr).await.unwrap();
    healthz_on(&mut second).await;
    assert_eq!(metric("gateway_connections_open"), 2.0);

    let mut third = TcpStream::connect(gateway.addr).await.unwrap();
    // Closed before a byte is read: whatever it sends is never answered.
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n")
        .await;
    assert!(closed_by_server(&mut third).await.is_empty());
    assert!(metric(over) > before);

    drop(first);
    eventually("a connection to be served again", || async {
        let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
        let _ = tcp
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
            .await;
        closed_by_server(&mut tcp)
            .await
            .starts_with(b"HTTP/1.1 200")
    })
    .await;
    healthz_on(&mut second).await;
}

/// `/readyz` answers from the upstreams' health as last asked, refreshed about once
/// a second: a burst of probes costs the upstreams no more health checks than the
/// seconds it lasts (three upstreams, one check each per second), where each probe
/// used to cost three.
#[tokio::test]
async fn readyz_asks_the_upstreams_at_most_once_a_second() {
    let stack = start().await;
    let http = stack.http();
    eventually("readyz to be 200", || async {
        http.get("/readyz").await.status == StatusCode::OK
    })
    .await;
    // The gateway's calls, as its channels count them.
    let checks = || {
        shared::metrics::render()
            .lines()
            .filter(|l| l.starts_with("rpc_client_call_duration_seconds_count{"))
            .filter(|l| l.contains(r#"rpc_service="grpc.health.v1.Health""#))
            .filter(|l| l.contains(r#"rpc_method="Check""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let (before, start) = (checks(), Instant::now());
    let probes = 60;
    for _ in 0..probes {
        assert_eq!(http.get("/readyz").await.status, StatusCode::OK);
    }
    let (asked, seconds) = (checks() - before, start.elapsed().as_secs_f64());
    // Rounds that began before the burst may end inside it: one more second of them.
    let most = 3.0 * (seconds.ceil() + 1.0);
    assert!(
        asked <= most,
        "{asked} health checks for {probes} probes in {seconds:.1}s (at most {most})"
    );
}

/// A body the client sends too slowly is its own fault: 408, not the 504 of a slow
/// upstream.
#[tokio::test]
async fn a_body_sent_too_slowly_is_408() {
    let gateway = TestGateway::start(&[("GATEWAY_REQUEST_TIMEOUT", "300ms")]).await;
    let mut tcp = TcpStream::connect(gateway.addr).await.unwrap();
    let head = "POST /v1/orders HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n\
                idempotency-key: slow\r\ncontent-length: 100\r\n\r\n{";
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = closed_by_server(&mut tcp).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("GATEWAY_REQUEST_TIMEOUT"), "{answer}");
}
