//! Authentication, scopes and rate limits at the gateway, over real HTTP in front of
//! the real services, all in-process, with tokens signed by a key made for the test.

use crate::support;

use contracts::orders::v1::order_service_client::OrderServiceClient;
use contracts::orders::v1::{GetOrderRequest, ListOrdersRequest};
use gateway::testing::{HttpClient, HttpResponse, TokenIssuer, now, unsigned};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use shared::Env;
use stack::Wiring;
use stack::testing::TestStack;
use support::{error, order};

/// The whole stack, its gateway with authentication by `issuer` and `extra` settings.
async fn start(issuer: &TokenIssuer, extra: &[(&str, &str)]) -> TestStack {
    let env = issuer.env();
    let pairs = env
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied());
    let env: Env = pairs.collect();
    TestStack::start(&env, &Wiring::default()).await
}

async fn get(http: &HttpClient, path: &str, token: Option<&str>) -> HttpResponse {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|b| ("authorization", b.as_str()))
        .collect();
    http.send(Method::GET, path, &headers, "").await
}

/// Asserts a 401 whose challenge names `problem` (or none, for a missing token).
fn assert_unauthenticated(response: &HttpResponse, problem: Option<&str>, case: &str) {
    assert_eq!(
        response.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {:?}",
        response.body
    );
    let error = error(response, StatusCode::UNAUTHORIZED, "UNAUTHENTICATED");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    match problem {
        None => assert_eq!(challenge, r#"Bearer realm="gateway""#, "{case}"),
        Some(problem) => {
            assert!(
                challenge.starts_with(r#"Bearer realm="gateway", error="invalid_token""#),
                "{case}: {challenge}"
            );
            assert!(challenge.contains(problem), "{case}: {challenge}");
            assert!(
                error["message"].as_str().unwrap().contains(problem),
                "{case}: {error}"
            );
        }
    }
}

fn claims(overrides: Value) -> Value {
    let now = now();
    let mut claims = json!({
        "iss": gateway::testing::TEST_ISSUER, "aud": gateway::testing::TEST_AUDIENCE,
        "sub": "alice", "scope": "inventory:read", "iat": now, "exp": now + 600,
    });
    for (k, v) in overrides.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

#[tokio::test]
async fn tokens_that_prove_nothing_get_401() {
    let issuer = TokenIssuer::new("key-1");
    let stack = start(&issuer, &[]).await;
    let http = stack.http();
    let now = now() as i64;
    // Signed by a key of the same id that the gateway does not have.
    let forger = TokenIssuer::new("key-1");
    let stranger = TokenIssuer::new("key-2");
    // An HMAC over the token with the public keys as the secret: the classic
    // algorithm confusion.
    let hs256 = {
        let message = unsigned(
            &json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}),
            &claims(json!({})),
        );
        let secret = std::fs::read(issuer.jwks_file()).unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let tag = ring::hmac::sign(&key, message.as_bytes());
        use base64::Engine as _;
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
        format!("{message}.{tag}")
    };
    let none = format!(
        "{}.",
        unsigned(&json!({"alg": "none", "typ": "JWT"}), &claims(json!({})))
    );
    let cases: Vec<(&str, Option<String>, Option<&str>)> = vec![
        ("no token", None, None),
        (
            "expired",
            Some(issuer.sign(&claims(json!({"exp": now - 120})))),
            Some("expired"),
        ),
        (
            "not yet valid",
            Some(issuer.sign(&claims(json!({"nbf": now + 600})))),
            Some("not yet valid"),
        ),
        (
            "forged",
            Some(forger.sign(&claims(json!({})))),
            Some("bad signature"),
        ),
        (
            "unknown key",
            Some(stranger.sign(&claims(json!({})))),
            Some("unknown signing key"),
        ),
        ("alg none", Some(none), Some("malformed")),
        (
            "HS256 with the public key",
            Some(hs256),
            Some("algorithm not accepted"),
        ),
        (
            "wrong issuer",
            Some(issuer.sign(&claims(json!({"iss": "https://evil.test"})))),
            Some("wrong issuer"),
        ),
        (
            "wrong audience",
            Some(issuer.sign(&claims(json!({"aud": "another-api"})))),
            Some("wrong audience"),
        ),
        (
            "no exp",
            Some(issuer.sign(&claims(json!({"exp": null})))),
            Some("a required claim"),
        ),
        (
            "no sub",
            Some(issuer.sign(&claims(json!({"sub": null})))),
            Some("a required claim"),
        ),
        // A string where a number belongs must not read as "no expiry".
        (
            "exp as a string",
            Some(issuer.sign(&claims(json!({"exp": "99999999999"})))),
            Some("a required claim"),
        ),
        ("not a JWT", Some("not-a-jwt".to_owned()), Some("malformed")),
        (
            "signature of another token",
            Some({
                let a = issuer.sign(&claims(json!({})));
                let b = issuer.sign(&claims(json!({"sub": "mallory"})));
                let (message, _) = b.rsplit_once('.').unwrap();
                let (_, signature) = a.rsplit_once('.').unwrap();
                format!("{message}.{signature}")
            }),
            Some("bad signature"),
        ),
    ];
    for (case, token, problem) in cases {
        let response = get(&http, "/v1/products", token.as_deref()).await;
        assert_unauthenticated(&response, problem, case);
    }
    // Another scheme is no bearer token at all.
    let response = http
        .send(
            Method::GET,
            "/v1/products",
            &[("authorization", "Basic YTpi")],
            "",
        )
        .await;
    assert_unauthenticated(&response, None, "basic");
    // Unknown routes are no way around it.
    let response = get(&http, "/v1/secrets", None).await;
    assert_unauthenticated(&response, None, "unknown route");

    // Within the leeway of 30 s an expired token still passes: clocks drift.
    let response = get(
        &http,
        "/v1/products",
        Some(&issuer.sign(&claims(json!({"exp": now - 5})))),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);

    let metrics = shared::metrics::render();
    for reason in [
        "missing",
        "expired",
        "signature",
        "algorithm",
        "issuer",
        "audience",
    ] {
        let line = format!(r#"gateway_auth_failures_total{{reason="{reason}"}}"#);
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn each_route_needs_its_scope() {
    let issuer = TokenIssuer::new("key-1");
    let stack = start(&issuer, &[]).await;
    let http = stack.http();
    let everything = issuer.token(
        "alice",
        "inventory:read orders:read orders:write notifications:read",
    );

    // Products: inventory:read.
    let response = get(
        &http,
        "/v1/products/SKU-001",
        Some(&issuer.token("alice", "orders:read orders:write")),
    )
    .await;
    error(&response, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    assert_eq!(
        response.header("www-authenticate"),
        Some(r#"Bearer realm="gateway", error="insufficient_scope", scope="inventory:read""#)
    );
    let response = get(
        &http,
        "/v1/products/SKU-001",
        Some(&issuer.token("alice", "inventory:read")),
    )
    .await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    assert_eq!(response.json()["sku"], "SKU-001");
    // A scope is a whole word: a prefix or a longer scope is not it.
    for scope in ["inventory", "inventory:readwrite", "INVENTORY:READ"] {
        let response = get(&http, "/v1/products", Some(&issuer.token("alice", scope))).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{scope}");
    }

    // Orders: orders:write to place one, orders:read to read it (for the token's
    // subject: the customer).
    let body = order("alice", "SKU-001", 1);
    let place = |token: String| {
        let http = http.clone();
        let body = body.clone();
        async move {
            let bearer = format!("Bearer {token}");
            http.post_json(
                "/v1/orders",
                &[("Idempotency-Key", "auth-1"), ("authorization", &bearer)],
                &body,
            )
            .await
        }
    };
    let response = place(issuer.token("alice", "orders:read inventory:read")).await;
    let problem = error(&response, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains("orders:write"),
        "{problem}"
    );
    let response = place(issuer.token("alice", "orders:write")).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    let path = format!(
        "/v1/orders/{}",
        response.json()["orderId"].as_str().unwrap()
    );
    let response = get(&http, &path, Some(&issuer.token("alice", "orders:write"))).await;
    error(&response, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let response = get(&http, &path, Some(&issuer.token("alice", "orders:read"))).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);

    // remove-service: notifications {
    // Notifications: notifications:read.
    let path = "/v1/customers/alice/notifications";
    let response = get(&http, path, Some(&issuer.token("alice", "orders:read"))).await;
    error(&response, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    let response = get(&http, path, Some(&everything)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    // remove-service: notifications }

    // With a valid token, an unknown route is a plain 404.
    let response = get(&http, "/v1/secrets", Some(&everything)).await;
    error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");
}

/// Issue 15, finding 3: with authentication on, the token's subject is the customer.
/// Alice can neither place an order for bob (403) nor read his order or his
/// notifications (404, as if they did not exist), and her `Idempotency-Key`s are her
/// own: bob's key neither replays his order for her nor tells her it exists (409). A
/// token with `orders:admin` and `notifications:admin` acts for anyone. A direct gRPC
/// call that names alice as its caller is held to the same rules.
#[tokio::test]
async fn a_customer_cannot_act_for_another() {
    let issuer = TokenIssuer::new("key-1");
    let stack = start(&issuer, &[]).await;
    let http = stack.http();
    let scopes = "orders:read orders:write notifications:read";
    let alice = issuer.token("alice", scopes);
    let bob = issuer.token("bob", scopes);
    let support = issuer.token(
        "support",
        "orders:read orders:write orders:admin notifications:read notifications:admin",
    );
    let place = |token: &str, key: &str, customer: &str, quantity: i32| {
        let (http, bearer, key) = (http.clone(), format!("Bearer {token}"), key.to_owned());
        let body = order(customer, "SKU-001", quantity);
        async move {
            http.post_json(
                "/v1/orders",
                &[("Idempotency-Key", &key), ("authorization", &bearer)],
                &body,
            )
            .await
        }
    };

    let response = place(&bob, "key-1", "bob", 1).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    let bobs_order = response.json()["orderId"].as_str().unwrap().to_owned();
    let bobs_path = format!("/v1/orders/{bobs_order}");

    // Not for bob.
    let response = place(&alice, "key-2", "bob", 1).await;
    let problem = error(&response, StatusCode::FORBIDDEN, "PERMISSION_DENIED");
    assert!(
        problem["message"].as_str().unwrap().contains("bob"),
        "{problem}"
    );
    // Not bob's order nor his notifications: 404, the answer of an unknown order.
    let response = get(&http, &bobs_path, Some(&alice)).await;
    error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");
    let unknown = get(&http, "/v1/orders/ord_unknown", Some(&alice)).await;
    error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND");
    // remove-service: notifications {
    let response = get(&http, "/v1/customers/bob/notifications", Some(&alice)).await;
    error(&response, StatusCode::NOT_FOUND, "NOT_FOUND");
    let response = get(&http, "/v1/customers/alice/notifications", Some(&alice)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    // remove-service: notifications }

    // Bob's key is not alice's: the same key and body place her own order, and her
    // retry gets hers back.
    let response = place(&alice, "key-1", "alice", 1).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    let alices_order = response.json()["orderId"].as_str().unwrap().to_owned();
    assert_ne!(alices_order, bobs_order);
    let response = place(&alice, "key-1", "alice", 1).await;
    assert_eq!(response.json()["orderId"], alices_order.as_str());
    // Her own key reused for another order is still a conflict.
    let response = place(&alice, "key-1", "alice", 2).await;
    error(&response, StatusCode::CONFLICT, "ALREADY_EXISTS");

    // Bob still reads his own order.
    let response = get(&http, &bobs_path, Some(&bob)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    assert_eq!(response.json()["customerId"], "bob");

    // The admin scopes act for anyone.
    let response = place(&support, "key-3", "bob", 1).await;
    assert_eq!(response.status, StatusCode::CREATED, "{:?}", response.body);
    assert_eq!(response.json()["customerId"], "bob");
    let response = get(&http, &bobs_path, Some(&support)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    // remove-service: notifications {
    let response = get(&http, "/v1/customers/bob/notifications", Some(&support)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    // remove-service: notifications }

    // Defence in depth: orders holds a direct call that names alice to the same rules.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", stack.addr("orders")))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut orders = OrderServiceClient::new(channel);
    fn as_alice<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request
            .metadata_mut()
            .insert(shared::identity::SUBJECT, "alice".parse().unwrap());
        request
    }
    let status = orders
        .get_order(as_alice(GetOrderRequest {
            order_id: bobs_order.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    let status = orders
        .list_orders(as_alice(ListOrdersRequest {
            customer_id: "bob".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // Without a caller (inside the trust boundary), as before.
    let found = orders
        .get_order(GetOrderRequest {
            order_id: bobs_order,
        })
        .await
        .unwrap();
    assert_eq!(found.into_inner().order.unwrap().customer_id, "bob");
}

#[tokio::test]
async fn clients_over_their_rate_get_429_and_others_do_not() {
    let issuer = TokenIssuer::new("key-1");
    // One request per 10 s after a burst of 2: no request of this test waits that long.
    let stack = start(
        &issuer,
        &[
            ("GATEWAY_RATE_LIMIT", "0.1"),
            ("GATEWAY_RATE_LIMIT_BURST", "2"),
        ],
    )
    .await;
    let http = stack.http();
    let alice = issuer.token("alice", "inventory:read");
    for _ in 0..2 {
        let response = get(&http, "/v1/products/SKU-001", Some(&alice)).await;
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    }
    let response = get(&http, "/v1/products/SKU-001", Some(&alice)).await;
    error(
        &response,
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
    );
    let retry_after: u64 = response
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!(
        (1..=10).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    // A new token of the same subject is the same client.
    let again = issuer.token("alice", "inventory:read orders:read");
    let response = get(&http, "/v1/products/SKU-001", Some(&again)).await;
    assert_eq!(response.status, StatusCode::TOO_MANY_REQUESTS);

    // Another subject, from the same address, has a rate of its own.
    let bob = issuer.token("bob", "inventory:read");
    let response = get(&http, "/v1/products/SKU-001", Some(&bob)).await;
    assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);

    // Without a valid token, requests count against the peer's address: a flood of
    // bad tokens is limited too.
    for _ in 0..2 {
        let response = get(&http, "/v1/products", Some("not-a-jwt")).await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    }
    let response = get(&http, "/v1/products", None).await;
    error(
        &response,
        StatusCode::TOO_MANY_REQUESTS,
        "RESOURCE_EXHAUSTED",
    );

    // The probes are never limited nor authenticated.
    for _ in 0..10 {
        assert_eq!(get(&http, "/healthz", None).await.status, StatusCode::OK);
        assert_eq!(get(&http, "/readyz", None).await.status, StatusCode::OK);
    }

    let metrics = shared::metrics::render();
    for client in ["subject", "peer_ip"] {
        let line = format!(r#"gateway_rate_limited_total{{client="{client}"}}"#);
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
}
