//! The `notifications` binary's start-up with `NATS_URL`: what stops it, and that the
//! message names the problem without the credentials a URL may carry.

use std::process::Command;

fn start(env: &[(&str, &str)]) -> Command {
    shared::testing::service_command(env!("CARGO_BIN_EXE_notifications"), env)
}

/// The error output of a start-up that failed, after checking that no line logged or
/// printed shows the password `hunter2`.
fn failed_start_up(env: &[(&str, &str)]) -> String {
    let output = start(env).output().unwrap();
    assert!(!output.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    stderr.into_owned()
}

#[test]
fn a_bad_nats_url_stops_start_up_with_its_name_and_no_password() {
    let stderr = failed_start_up(&[
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("NATS_URL", "http://events:hunter2@nats:4222"),
    ]);
    assert!(
        stderr.contains("NATS_URL=\"http://***@nats:4222\""),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_nats_stops_start_up_after_the_connect_timeout() {
    let closed = shared::testing::ClosedPort::new();
    let url = format!("nats://events:hunter2@{}", closed.addr);
    let stderr = failed_start_up(&[
        ("LISTEN_ADDR", "127.0.0.1:0"),
        ("ADMIN_LISTEN_ADDR", "127.0.0.1:0"),
        ("NATS_URL", &url),
        ("NATS_CONNECT_TIMEOUT", "1s"),
    ]);
    assert!(
        stderr.contains(&format!(
            "cannot connect to NATS at nats://***@{} within 1s",
            closed.addr
        )),
        "{stderr}"
    );
}
