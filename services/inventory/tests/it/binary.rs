//! The `inventory` binary as Kubernetes runs it: configured by environment variables,
//! stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use contracts::inventory::v1::GetProductRequest;
use contracts::inventory::v1::inventory_service_client::InventoryServiceClient;

fn start(env: &[(&str, &str)]) -> Command {
    shared::testing::service_command(env!("CARGO_BIN_EXE_inventory"), env)
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_cleanly() {
    let mut child = start(&[("LISTEN_ADDR", "127.0.0.1:0"), ("LOG_FORMAT", "json")])
        .spawn()
        .unwrap();
    // The JSON log line announcing the server carries the bound address.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the binary logs before serving")
            .unwrap();
        if line.contains("serving gRPC") {
            let log: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            break log["addr"].as_str().unwrap().to_owned();
        }
    };

    let mut client = InventoryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let product = client
        .get_product(GetProductRequest {
            sku: "SKU-001".into(),
        })
        .await
        .unwrap();
    assert_eq!(product.into_inner().product.unwrap().sku, "SKU-001");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = shared::testing::wait_exit(&mut child, Duration::from_secs(5)).await;
    assert!(status.success(), "exit status {status:?}");
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(
        rest.iter().any(|l| l.contains("received SIGTERM")),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

#[test]
fn a_bad_variable_stops_start_up_with_its_name() {
    let output = start(&[("GRPC_MAX_CONCURRENT_STREAMS", "lots")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr
            .contains("GRPC_MAX_CONCURRENT_STREAMS=\"lots\": expected an integer from 1 to 10000"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_database_stops_start_up_with_the_cause() {
    let closed = shared::testing::ClosedPort::new();
    let url = format!("postgres://app:s3cret@{}/shop", closed.addr);
    let output = start(&[("DATABASE_URL", &url), ("DATABASE_CONNECT_TIMEOUT", "1s")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot connect to PostgreSQL at {}", closed.addr)),
        "{stderr}"
    );
    assert!(
        stderr.contains("caused by"),
        "the cause is printed: {stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

#[test]
fn a_taken_port_stops_start_up_with_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = start(&[("LISTEN_ADDR", &addr)]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}
