//! What each gRPC service must answer: one [`ServiceSpec`] per service of `proto/`.
//!
//! The suite runs a spec when the stack serves its service. A service of `proto/`
//! without a spec fails the suite (the test `every_proto_service_has_a_spec_that_covers_
//! each_rpc`, and every test that starts the stack), so adding a service to the protos
//! or to the stack forces its acceptance spec.
//!
//! Scenarios run concurrently on the one stack of the test, so each touches its own
//! data: the inventory scenarios use distinct skus and check stock levels, so they run
//! first (`runs_first`); the order flows, which take stock, run after them.

use serde_json::{Value, json};
use tonic::Code;

/// The acceptance spec of one gRPC service.
#[derive(Clone, Debug)]
pub(crate) struct ServiceSpec {
    /// The name in the stack, the package and the folder: `inventory`.
    pub(crate) name: &'static str,
    /// The service's local port (`make run`), as the README's commands use it.
    pub(crate) local_port: u16,
    /// The proto service: `inventory.v1.InventoryService`.
    pub(crate) service: &'static str,
    /// Its scenarios check state that other services change (stock levels, which
    /// orders take): they run first, before any other service's.
    pub(crate) runs_first: bool,
    /// RPCs the spec does not call, each with the reason. Every other RPC must be called.
    pub(crate) uncalled: &'static [(&'static str, &'static str)],
    /// Sequences of calls; each sequence runs in order, the sequences concurrently.
    pub(crate) scenarios: Vec<Vec<Call>>,
}

/// One call and what it must answer.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    /// `pkg.Service/Method`; another service of the stack when a scenario needs it
    /// (what an event consumer answers needs an order first).
    pub(crate) method: String,
    /// One JSON body, or the messages of a client stream.
    pub(crate) requests: Vec<Value>,
    pub(crate) expect: Expect,
    /// `(name, JSON pointer into the first response)`: values later calls use as `${name}`.
    pub(crate) captures: Vec<(&'static str, &'static str)>,
    /// Run with `-v` / `--verbose` (error calls only: that is where users need it).
    pub(crate) verbose: bool,
    /// The answer comes from an asynchronous consumer: repeat until it matches (10 s).
    pub(crate) eventually: bool,
}

/// What a call must answer (see `json.rs` for the placeholders of volatile values).
#[derive(Clone, Debug)]
pub(crate) enum Expect {
    /// These response messages, in this order.
    Messages(Vec<Value>),
    /// This status, and no response message.
    Status {
        code: Code,
        message: String,
        details: Vec<Value>,
    },
}

impl Call {
    fn new(method: String, requests: Vec<Value>) -> Self {
        Self {
            method,
            requests,
            expect: Expect::Messages(Vec::new()),
            captures: Vec::new(),
            verbose: false,
            eventually: false,
        }
    }

    /// One response message.
    fn returns(self, response: Value) -> Self {
        self.streams(vec![response])
    }

    /// The messages of a server stream, which then ends with OK.
    fn streams(mut self, responses: Vec<Value>) -> Self {
        self.expect = Expect::Messages(responses);
        self
    }

    /// An error status with google.rpc error details.
    fn fails(mut self, code: Code, message: &str, details: Vec<Value>) -> Self {
        self.expect = Expect::Status {
            code,
            message: message.to_owned(),
            details,
        };
        self
    }

    fn verbose(mut self) -> Self {
        self.verbose = true;
        self
    }

    fn capture(mut self, name: &'static str, pointer: &'static str) -> Self {
        self.captures.push((name, pointer));
        self
    }

    #[allow(
        dead_code,
        reason = "for specs of asynchronous consumers, which a system may lack"
    )]
    fn eventually(mut self) -> Self {
        self.eventually = true;
        self
    }
}

/// A unary or server-streaming call of `service` with one JSON body.
fn call(service: &str, method: &str, request: Value) -> Call {
    Call::new(format!("{service}/{method}"), vec![request])
}

/// A client-streaming call: `requests` are the stream's messages.
fn stream(service: &str, method: &str, requests: Vec<Value>) -> Call {
    Call::new(format!("{service}/{method}"), requests)
}

/// Calls that depend on nothing: one scenario each, so that they run concurrently.
fn independent(calls: Vec<Call>) -> impl Iterator<Item = Vec<Call>> {
    calls.into_iter().map(|call| vec![call])
}

/// The health service every server runs.
pub(crate) const HEALTH: &str = "grpc.health.v1.Health";

/// The health checks every service must pass: the server as a whole (`""`), the probe
/// names and the service by name are SERVING; an unknown name is NOT_FOUND. (`Watch`
/// is left out: it never ends while the server serves, and a client deadline short
/// enough for a test also cuts reflection short on a busy machine.)
pub(crate) fn health(spec: &ServiceSpec) -> Vec<Vec<Call>> {
    let check = |service: &str| call(HEALTH, "Check", json!({"service": service}));
    let unknown = check("no.such.Service").fails(
        Code::NotFound,
        "unknown service \"no.such.Service\"",
        vec![],
    );
    ["", "liveness", "readiness", spec.service]
        .map(|name| vec![check(name).returns(json!({"status": "SERVING"}))])
        .into_iter()
        .chain([vec![unknown]])
        .collect()
}

/// The specs of every gRPC service of the system.
pub(crate) fn all() -> Vec<ServiceSpec> {
    vec![
        inventory(),
        payments(),
        orders(),
        notifications(),
        // new-service: `make new-service` adds each new service's spec above this line.
    ]
}

fn product(sku: &str, name: &str, description: &str, cents: &str, stock: Value) -> Value {
    let mut product = json!({
        "sku": sku,
        "name": name,
        "description": description,
        "price": {"currencyCode": "USD", "amountMinor": cents},
        "updateTime": "<timestamp>",
    });
    let fields = product.as_object_mut().expect("an object");
    fields.extend(
        stock
            .as_object()
            .cloned()
            .expect("stock levels are an object"),
    );
    product
}

fn not_found(kind: &str, name: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ResourceInfo",
        "resourceType": kind,
        "resourceName": name,
        "description": "not found",
    })
}

fn bad_request(violations: &[(&str, &str)]) -> Value {
    let violations: Vec<Value> = violations
        .iter()
        .map(|(field, description)| json!({"field": field, "description": description}))
        .collect();
    json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations})
}

fn inventory() -> ServiceSpec {
    const S: &str = "inventory.v1.InventoryService";
    let espresso = || {
        product(
            "SKU-001",
            "Espresso beans, 1 kg",
            "Dark roast, whole beans.",
            "2400",
            json!({"available": "100"}),
        )
    };
    let kettle = product(
        "SKU-002",
        "Pour-over kettle",
        "Gooseneck, 1 litre.",
        "4500",
        json!({"available": "25"}),
    );
    let mug = product(
        "SKU-003",
        "Ceramic mug",
        "350 ml, dishwasher safe.",
        "1250",
        json!({"available": "200"}),
    );
    let grinder = product(
        "SKU-004",
        "Burr grinder",
        "Conical burrs, 40 settings.",
        "12900",
        json!({"available": "10"}),
    );
    let tumbler = |stock| {
        product(
            "SKU-007",
            "Travel tumbler",
            "Insulated, 450 ml.",
            "2200",
            stock,
        )
    };
    let dripper = |stock| {
        product(
            "SKU-008",
            "Limited edition dripper",
            "Numbered series.",
            "8900",
            stock,
        )
    };
    let reservation = |id: &str, sku: &str, quantity: i32, state: &str| {
        json!({"reservation": {
            "reservationId": id,
            "items": [{"sku": sku, "quantity": quantity}],
            "state": state,
            "createTime": "<timestamp>",
            "updateTime": "<timestamp>",
        }})
    };
    let reserve = |id: &str, sku: &str, quantity: i32| {
        call(
            S,
            "ReserveStock",
            json!({"reservation_id": id, "items": [{"sku": sku, "quantity": quantity}]}),
        )
    };

    ServiceSpec {
        name: "inventory",
        local_port: 50052,
        service: S,
        runs_first: true,
        uncalled: &[],
        scenarios: vec![
            // The catalog: one product, then two pages of two.
            vec![
                call(S, "GetProduct", json!({"sku": "SKU-001"})).returns(json!({"product": espresso()})),
                call(S, "ListProducts", json!({"page_size": 2}))
                    .returns(json!({"products": [espresso(), kettle], "nextPageToken": "<nonempty>"}))
                    .capture("page_2", "/nextPageToken"),
                call(S, "ListProducts", json!({"page_size": 2, "page_token": "${page_2}"}))
                    .returns(json!({"products": [mug, grinder], "nextPageToken": "<nonempty>"})),
            ],
            // Reserve, then commit: stock moves available → reserved → sold.
            vec![
                reserve("acceptance-commit", "SKU-007", 2).returns(reservation(
                    "acceptance-commit",
                    "SKU-007",
                    2,
                    "RESERVATION_STATE_RESERVED",
                )),
                call(S, "GetProduct", json!({"sku": "SKU-007"}))
                    .returns(json!({"product": tumbler(json!({"available": "38", "reserved": "2"}))})),
                call(S, "CommitReservation", json!({"reservation_id": "acceptance-commit"})).returns(reservation(
                    "acceptance-commit",
                    "SKU-007",
                    2,
                    "RESERVATION_STATE_COMMITTED",
                )),
                call(S, "GetProduct", json!({"sku": "SKU-007"}))
                    .returns(json!({"product": tumbler(json!({"available": "38", "sold": "2"}))})),
            ],
            // Reserve, then release: the stock comes back.
            vec![
                reserve("acceptance-release", "SKU-008", 1).returns(reservation(
                    "acceptance-release",
                    "SKU-008",
                    1,
                    "RESERVATION_STATE_RESERVED",
                )),
                call(S, "ReleaseReservation", json!({"reservation_id": "acceptance-release"})).returns(reservation(
                    "acceptance-release",
                    "SKU-008",
                    1,
                    "RESERVATION_STATE_RELEASED",
                )),
                call(S, "GetProduct", json!({"sku": "SKU-008"}))
                    .returns(json!({"product": dripper(json!({"available": "3"}))})),
            ],
            // Client streaming: three deliveries, applied together when the stream ends.
            vec![
                stream(
                    S,
                    "RestockProducts",
                    vec![
                        json!({"sku": "SKU-005", "quantity": 10}),
                        json!({"sku": "SKU-006", "quantity": 5}),
                        json!({"sku": "SKU-005", "quantity": 1}),
                    ],
                )
                .returns(json!({
                    "itemCount": 3,
                    "unitsAdded": "16",
                    "products": [
                        product("SKU-005", "Paper filters", "Pack of 100.", "699", json!({"available": "511"})),
                        product("SKU-006", "Milk frother", "Handheld, battery powered.", "3990", json!({"available": "20"})),
                    ],
                })),
            ],
        ]
        .into_iter()
        // Errors, with the details users see (field violations with -v).
        .chain(independent(vec![
                call(S, "GetProduct", json!({"sku": "SKU-404"})).fails(
                    Code::NotFound,
                    "product \"SKU-404\" not found",
                    vec![not_found("product", "SKU-404")],
                ),
                call(S, "GetProduct", json!({"sku": ""})).verbose().fails(
                    Code::InvalidArgument,
                    "invalid request: sku: is required",
                    vec![bad_request(&[("sku", "is required")])],
                ),
                call(
                    S,
                    "ReserveStock",
                    json!({"reservation_id": "acceptance-invalid", "items": [{"sku": "SKU-004", "quantity": 0}, {"sku": "SKU-004", "quantity": 1}]}),
                )
                .verbose()
                .fails(
                    Code::InvalidArgument,
                    "invalid request: items[0].quantity: must be from 1 to 10000; items[1].sku: appears more than once",
                    vec![bad_request(&[
                        ("items[0].quantity", "must be from 1 to 10000"),
                        ("items[1].sku", "appears more than once"),
                    ])],
                ),
                reserve("acceptance-short", "SKU-004", 11).fails(
                    Code::FailedPrecondition,
                    "not enough stock for SKU-004",
                    vec![json!({
                        "@type": "type.googleapis.com/google.rpc.PreconditionFailure",
                        "violations": [{"type": "STOCK", "subject": "SKU-004", "description": "requested 11, available 10"}],
                    })],
                ),
                call(S, "CommitReservation", json!({"reservation_id": "acceptance-unknown"})).fails(
                    Code::NotFound,
                    "reservation \"acceptance-unknown\" not found",
                    vec![not_found("reservation", "acceptance-unknown")],
                ),
        ]))
        .collect(),
    }
}

fn payments() -> ServiceSpec {
    const S: &str = "payments.v1.PaymentService";
    let charge = |request_id: &str, order_id: &str, card_token: &str| {
        call(
            S,
            "Charge",
            json!({
                "request_id": request_id,
                "order_id": order_id,
                "customer_id": "acceptance-customer",
                "amount": {"currency_code": "USD", "amount_minor": 1999},
                "card_token": card_token,
            }),
        )
    };
    let payment = |status: &str, extra: Value| {
        let mut payment = json!({
            "paymentId": "${payment_id}",
            "requestId": "acceptance-charge",
            "orderId": "acceptance-order",
            "customerId": "acceptance-customer",
            "amount": {"currencyCode": "USD", "amountMinor": "1999"},
            "status": status,
            "createTime": "<timestamp>",
            "updateTime": "<timestamp>",
        });
        let fields = payment.as_object_mut().expect("an object");
        fields.extend(extra.as_object().cloned().unwrap_or_default());
        payment
    };

    ServiceSpec {
        name: "payments",
        local_port: 50053,
        service: S,
        runs_first: false,
        uncalled: &[],
        scenarios: vec![
            // Charge, look up, list, refund; a retried charge returns the same payment.
            vec![
                charge("acceptance-charge", "acceptance-order", "tok_visa")
                    .capture("payment_id", "/payment/paymentId")
                    .returns(json!({"payment": payment("PAYMENT_STATUS_CAPTURED", json!({"paymentId": "<id:pay_>"}))})),
                call(S, "GetPayment", json!({"payment_id": "${payment_id}"}))
                    .returns(json!({"payment": payment("PAYMENT_STATUS_CAPTURED", json!({}))})),
                call(S, "ListPayments", json!({"order_id": "acceptance-order", "page_size": 10}))
                    .returns(json!({"payments": [payment("PAYMENT_STATUS_CAPTURED", json!({}))]})),
                call(S, "Refund", json!({"payment_id": "${payment_id}", "reason": "customer asked"})).returns(
                    json!({"payment": payment("PAYMENT_STATUS_REFUNDED", json!({"statusReason": "customer asked"}))}),
                ),
                charge("acceptance-charge", "acceptance-order", "tok_visa").returns(
                    json!({"payment": payment("PAYMENT_STATUS_REFUNDED", json!({"statusReason": "customer asked"}))}),
                ),
            ],
            // A declined card: FAILED_PRECONDITION with an ErrorInfo naming the payment.
            vec![charge("acceptance-declined", "acceptance-declined-order", "tok_declined").fails(
                Code::FailedPrecondition,
                "card declined: card declined by the issuer",
                vec![json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "CARD_DECLINED",
                    "domain": "payments.v1",
                    "metadata": {"payment_id": "<id:pay_>"},
                })],
            )],
        ]
        .into_iter()
        .chain(independent(vec![
                call(S, "GetPayment", json!({"payment_id": "pay_missing"})).fails(
                    Code::NotFound,
                    "payment \"pay_missing\" not found",
                    vec![not_found("payment", "pay_missing")],
                ),
                call(S, "Charge", json!({})).verbose().fails(
                    Code::InvalidArgument,
                    "invalid request: request_id: is required; order_id: is required; customer_id: is required; \
                     amount: is required; card_token: is required",
                    vec![bad_request(&[
                        ("request_id", "is required"),
                        ("order_id", "is required"),
                        ("customer_id", "is required"),
                        ("amount", "is required"),
                        ("card_token", "is required"),
                    ])],
                ),
        ]))
        .collect(),
    }
}

/// A confirmed order of `quantity` × SKU-006 (USD 39.90 each) for `customer`;
/// `order_id` is the id or its placeholder.
fn confirmed_order(order_id: &str, request_id: &str, customer: &str, quantity: i64) -> Value {
    json!({
        "orderId": order_id,
        "requestId": request_id,
        "customerId": customer,
        "items": [{
            "sku": "SKU-006",
            "quantity": quantity,
            "unitPrice": {"currencyCode": "USD", "amountMinor": "3990"},
        }],
        "total": {"currencyCode": "USD", "amountMinor": (3990 * quantity).to_string()},
        "status": "ORDER_STATUS_CONFIRMED",
        "paymentId": "<id:pay_>",
        "createTime": "<timestamp>",
        "updateTime": "<timestamp>",
    })
}

/// PlaceOrder with tok_visa, which confirms the order; captures `order_id`.
fn place_order(request_id: &str, customer: &str, quantity: i64) -> Call {
    call(
        ORDERS,
        "PlaceOrder",
        json!({
            "request_id": request_id,
            "customer_id": customer,
            "items": [{"sku": "SKU-006", "quantity": quantity}],
            "card_token": "tok_visa",
        }),
    )
    .returns(json!({"order": confirmed_order("<id:ord_>", request_id, customer, quantity)}))
    .capture("order_id", "/order/orderId")
}

const ORDERS: &str = "orders.v1.OrderService";

fn orders() -> ServiceSpec {
    const S: &str = ORDERS;
    let order = || confirmed_order("${order_id}", "acceptance-order", "acceptance-customer", 2);
    ServiceSpec {
        name: "orders",
        local_port: 50051,
        service: S,
        runs_first: false,
        uncalled: &[],
        scenarios: vec![
            // The saga runs to the end before PlaceOrder answers: the order is final.
            vec![
                place_order("acceptance-order", "acceptance-customer", 2),
                call(S, "GetOrder", json!({"order_id": "${order_id}"}))
                    .returns(json!({"order": order()})),
                call(
                    S,
                    "ListOrders",
                    json!({"customer_id": "acceptance-customer", "page_size": 10}),
                )
                .returns(json!({"orders": [order()]})),
                // Server streaming: the current state, then the stream ends (it is final).
                call(S, "WatchOrder", json!({"order_id": "${order_id}"}))
                    .streams(vec![json!({"order": order()})]),
            ],
            vec![
                call(S, "GetOrder", json!({"order_id": "ord_missing"})).fails(
                    Code::NotFound,
                    "order \"ord_missing\" not found",
                    vec![not_found("order", "ord_missing")],
                ),
            ],
        ],
    }
}

// remove-service: notifications {
fn notifications() -> ServiceSpec {
    const S: &str = "notifications.v1.NotificationService";
    let notification = |event: &str, text: &str| {
        json!({
            "notificationId": "<id:ntf_>",
            "customerId": "acceptance-notified",
            "orderId": "${order_id}",
            "eventId": format!("${{order_id}}.{event}"),
            "message": text,
            "createTime": "<timestamp>",
        })
    };
    ServiceSpec {
        name: "notifications",
        local_port: 50054,
        service: S,
        runs_first: false,
        uncalled: &[(
            "StreamNotifications",
            "it never ends while the server serves, and a deadline short enough for a test \
             also cuts reflection short on a busy machine; tests/system/notifications.rs covers it",
        )],
        scenarios: vec![vec![
            place_order("acceptance-notified", "acceptance-notified", 1),
            // One notification per order event (newest first), made asynchronously: poll
            // until both are in.
            call(
                S,
                "ListNotifications",
                json!({"customer_id": "acceptance-notified", "page_size": 10}),
            )
            .eventually()
            .returns(json!({"notifications": [
                notification("confirmed", "Order ${order_id} confirmed"),
                notification("placed", "Order ${order_id} placed: USD 39.90"),
            ]})),
        ]],
    }
}
// remove-service: notifications }
