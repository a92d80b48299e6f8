//! The `gateway` binary as Kubernetes runs it: configured by environment variables,
//! stopped by SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::Duration;

use gateway::testing::HttpClient;
use http::StatusCode;

fn start(env: &[(&str, &str)]) -> Command {
    shared::testing::service_command(env!("CARGO_BIN_EXE_gateway"), env)
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_cleanly() {
    let env = [("LISTEN_ADDR", "127.0.0.1:0"), ("LOG_FORMAT", "json")];
    let mut child = start(&env).spawn().unwrap();
    // The JSON log line announcing the server carries the bound address.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the binary logs before serving")
            .unwrap();
        if line.contains("serving HTTP") {
            let log: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            break log["addr"].as_str().unwrap().parse().unwrap();
        }
    };

    // Liveness needs no upstream (none runs here).
    let response = HttpClient::new(addr).get("/healthz").await;
    assert_eq!(response.status, StatusCode::OK);

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
    let output = start(&[("INVENTORY_ADDR", "inventory:50052")])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("INVENTORY_ADDR=\"inventory:50052\": expected an address like"),
        "{stderr}"
    );
}
