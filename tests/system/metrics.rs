//! `/metrics` of every service, as Prometheus scrapes it from the separate processes:
//! valid text exposition, and RPC counters that move with the calls, on both ends.

use crate::processes;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use gateway::testing::HttpClient;
use http::StatusCode;
use processes::System;

/// Checks `text` with the reference Python parser of the format (prometheus-client,
/// pinned in scripts/requirements.txt), plus what it lets through: every sample's
/// family declared by `# TYPE` before it, histogram buckets cumulative, `+Inf` = `_count`.
/// Returns `_count` of each histogram series, as `name{labels}` → value.
fn parse(text: &str) -> std::collections::HashMap<String, f64> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/python");
    assert!(
        python.is_file(),
        "no {}: run scripts/tools.sh (it installs prometheus-client, the parser this test uses)",
        python.display()
    );
    const SCRIPT: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
counts = {}
for family in text_string_to_metric_families(text):
    assert family.type != "unknown", f"{family.name} has no # TYPE"
    assert family.documentation, f"{family.name} has no # HELP"
    if family.type != "histogram":
        continue
    series = {}
    for s in family.samples:
        key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
        series.setdefault(key, {"buckets": [], "count": None})
        if s.name.endswith("_bucket"):
            series[key]["buckets"].append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            series[key]["count"] = s.value
    for key, s in series.items():
        buckets = sorted(s["buckets"])
        assert buckets and buckets[-1][0] == float("inf"), f"{family.name}{key}: no +Inf bucket"
        values = [v for _, v in buckets]
        assert values == sorted(values), f"{family.name}{key}: buckets not cumulative"
        assert values[-1] == s["count"], f"{family.name}{key}: +Inf != _count"
        labels = ",".join(f'{k}="{v}"' for k, v in key)
        counts[f"{family.name}_count{{{labels}}}"] = s["count"]
print(json.dumps(counts))
"#;
    let mut child = Command::new(&python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "/metrics is not valid exposition: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn scrape(http: &HttpClient) -> String {
    let response = http.get("/metrics").await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    String::from_utf8(response.body.to_vec()).unwrap()
}

fn count(counts: &std::collections::HashMap<String, f64>, series: &str) -> f64 {
    counts.get(series).copied().unwrap_or(0.0)
}

const GET_PRODUCT_OK: &str = r#"rpc_server_call_duration_seconds_count{rpc_grpc_status_code="0",rpc_method="GetProduct",rpc_service="inventory.v1.InventoryService",rpc_system="grpc"}"#;
const GET_PRODUCT_NOT_FOUND: &str = r#"rpc_server_call_duration_seconds_count{rpc_grpc_status_code="5",rpc_method="GetProduct",rpc_service="inventory.v1.InventoryService",rpc_system="grpc"}"#;
const CLIENT_GET_PRODUCT_OK: &str = r#"rpc_client_call_duration_seconds_count{rpc_grpc_status_code="0",rpc_method="GetProduct",rpc_service="inventory.v1.InventoryService",rpc_system="grpc"}"#;
const CLIENT_GET_PRODUCT_NOT_FOUND: &str = r#"rpc_client_call_duration_seconds_count{rpc_grpc_status_code="5",rpc_method="GetProduct",rpc_service="inventory.v1.InventoryService",rpc_system="grpc"}"#;
const PLACE_ORDER_OK: &str = r#"rpc_server_call_duration_seconds_count{rpc_grpc_status_code="0",rpc_method="PlaceOrder",rpc_service="orders.v1.OrderService",rpc_system="grpc"}"#;
const CLIENT_PLACE_ORDER_OK: &str = r#"rpc_client_call_duration_seconds_count{rpc_grpc_status_code="0",rpc_method="PlaceOrder",rpc_service="orders.v1.OrderService",rpc_system="grpc"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_exposition_and_count_calls_on_both_ends() {
    // No collector: spans are not exported, metrics do not depend on it.
    let system = System::start_without_traces().await;
    let http = HttpClient::new(system.gateway.addr);
    let admin = |p: &processes::Process| HttpClient::new(p.admin_addr);
    let (gateway, inventory, orders) = (
        admin(&system.gateway),
        admin(&system.inventory),
        admin(&system.orders),
    );

    let before_inventory = parse(&scrape(&inventory).await);
    let before_gateway = parse(&scrape(&gateway).await);
    for _ in 0..3 {
        assert_eq!(
            http.get("/v1/products/SKU-001").await.status,
            StatusCode::OK
        );
    }
    assert_eq!(
        http.get("/v1/products/SKU-404").await.status,
        StatusCode::NOT_FOUND
    );
    let order = serde_json::json!({"customerId": "cus_metrics", "items": [{"sku": "SKU-002", "quantity": 1}], "cardToken": "tok_visa"});
    let placed = http
        .post_json("/v1/orders", &[("Idempotency-Key", "metrics-1")], &order)
        .await;
    assert_eq!(placed.status, StatusCode::CREATED);

    let after_inventory = parse(&scrape(&inventory).await);
    let after_gateway = parse(&scrape(&gateway).await);
    let after_orders = parse(&scrape(&orders).await);
    let moved = |before: &std::collections::HashMap<String, f64>,
                 after: &std::collections::HashMap<String, f64>,
                 series: &str| count(after, series) - count(before, series);
    // Inventory served the gateway's 3 + 1 calls, and orders' pricing call.
    assert_eq!(
        moved(&before_inventory, &after_inventory, GET_PRODUCT_OK),
        4.0
    );
    assert_eq!(
        moved(&before_inventory, &after_inventory, GET_PRODUCT_NOT_FOUND),
        1.0
    );
    // The gateway counted its upstream calls as a client.
    assert_eq!(
        moved(&before_gateway, &after_gateway, CLIENT_GET_PRODUCT_OK),
        3.0
    );
    assert_eq!(
        moved(
            &before_gateway,
            &after_gateway,
            CLIENT_GET_PRODUCT_NOT_FOUND
        ),
        1.0
    );
    assert_eq!(
        moved(&before_gateway, &after_gateway, CLIENT_PLACE_ORDER_OK),
        1.0
    );
    // Orders served the order, and called inventory as a client to price it.
    assert_eq!(count(&after_orders, PLACE_ORDER_OK), 1.0);
    assert_eq!(count(&after_orders, CLIENT_GET_PRODUCT_OK), 1.0);
    // Process metrics are there too.
    assert!(
        scrape(&orders)
            .await
            .contains("process_resident_memory_bytes")
    );

    // Every other service's endpoint is valid exposition too.
    for process in [
        &system.payments,
        &system.notifications, // remove-service: notifications
    ] {
        parse(&scrape(&admin(process)).await);
    }
    system.stop().await;
}
