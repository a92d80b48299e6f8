//! The cross-service tests: the whole system, in-process or as separate processes,
//! against its public interfaces. One test binary (one link of the whole stack instead
//! of one per file), a module per subject:
//!
//! - `acceptance`: grpcurl, `buf curl`, gRPC-Web and the README's cookbook against
//!   every service; the OpenAPI document of the gateway;
//! - `order_flow`, `stack` and a module per service with flows of its own: the flows
//!   through the gateway, on the in-process and on the durable backends;
//! - `durable`, `resilience`, `shutdown`, `metrics`, `tracing`: the services as
//!   separate processes (`processes`): restarts and replicas, faults, SIGTERM under
//!   load, `/metrics`, OpenTelemetry end to end; `hostile` is the system fuzz test;
//! - `bad_input`, `server_limits`, `tls`: one server against clients that misbehave,
//!   overload it or speak TLS.
//!
//! `tests/alloc_budget.rs` is a binary of its own: its counting global allocator
//! would count every test of this one.
//!
//! nextest runs each test in a process of its own; `cargo test` runs them as threads
//! of one process, so the few tests that change what is global to a process (a panic
//! hook, the tracing subscriber, the metrics registry they count series of) start
//! with [`alone`].

/// `if !alone!() { return; }` at the start of a test: [`alone`], for the test it is
/// written in.
macro_rules! alone {
    () => {{
        fn here() {}
        $crate::alone(std::any::type_name_of_val(&here))
    }};
}

#[path = "acceptance.rs"] // not acceptance/mod.rs: that is `acceptance::suite`
mod acceptance;
mod bad_input;
mod durable;
mod hostile;
mod metrics;
mod notifications; // remove-service: notifications
mod order_flow;
mod processes;
mod resilience;
mod server_limits;
mod shutdown;
mod stack;
mod support;
mod tls;
mod tracing;

/// Whether the calling test runs alone in its process, as a test that installs
/// process-wide state needs: true under nextest (a process per test). Under `cargo
/// test` (a thread per test, all in one process) the test runs itself in a child
/// process, asserts that it passed there, and answers false: the caller then returns.
/// `here` is the path of a function inside the test ([`alone!`]), such as
/// `system::bad_input::a_test::{{closure}}::here`.
pub(crate) fn alone(here: &str) -> bool {
    const CHILD: &str = "SYSTEM_TEST_ALONE";
    let own_process =
        std::env::var_os("NEXTEST_EXECUTION_MODE").is_some_and(|mode| mode == "process-per-test");
    if own_process || std::env::var_os(CHILD).is_some() {
        return true;
    }
    // Test names are module paths without the crate's name: `bad_input::a_test`.
    let name = here
        .split("::")
        .skip(1)
        .take_while(|segment| !matches!(*segment, "{{closure}}" | "here"))
        .collect::<Vec<_>>()
        .join("::");
    let exe = std::env::current_exe().expect("the test knows its own path");
    let child = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&child.stdout);
    assert!(
        child.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in a process of its own: {}\n{stdout}{}",
        child.status,
        String::from_utf8_lossy(&child.stderr)
    );
    false
}
