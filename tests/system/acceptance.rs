//! Acceptance: the real grpcurl and `buf curl` work against every gRPC service of the
//! stack, as users run them; the grpcurl cookbook (`docs/grpcurl.md`) and the README's
//! quick start work as printed, and the docs name only files that exist.
//!
//! Each test starts the whole stack in-process on free ports and runs the tools as
//! external processes against it. What every service must answer is data, in
//! `acceptance/specs.rs`; what the protos declare (RPCs, fields) is read from the
//! descriptor set `build.rs` compiles from `proto/`. The docs' examples are marked
//! and run as described in `acceptance/cookbook.rs`; their links and paths are checked
//! as `acceptance/docs.rs` says.
//!
//! A tool that is missing fails the suite (run `scripts/tools.sh`, or `make test`);
//! so does a service of `proto/` without a spec. Every check compares what the tool
//! printed, not only its exit code: JSON responses field by field (volatile values
//! such as times and server-assigned ids by their shape), error statuses with their
//! message and google.rpc details, `list` and `describe` line by line.

#[path = "acceptance/mod.rs"]
mod suite;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde_json::json;

use suite::calls::{BUF_FLAGS, Tool};
use suite::cookbook::{self, COOKBOOK, QUICK_START};
use suite::harness::{self, Part, Running};
use suite::schema::{self, Schema};
use suite::tools::{self, Invocation, Output, Tools};
use suite::web::{self, Answer, Http};
use suite::{docs, specs};

/// The services every server registers next to its own (`shared::server`).
const STANDARD_SERVICES: [&str; 3] = [
    specs::HEALTH,
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The google.rpc error details the services send; reflection serves them so that
/// tools can print them by name.
const ERROR_DETAILS: [&str; 4] = [
    "google.rpc.BadRequest",
    "google.rpc.ErrorInfo",
    "google.rpc.PreconditionFailure",
    "google.rpc.ResourceInfo",
];

fn fail_if_any(failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} failure(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A clean run: exit 0 and nothing on stderr.
fn clean(output: &Output) -> Result<(), String> {
    ensure(
        output.code == Some(0) && output.stderr.trim().is_empty(),
        || "expected exit code 0 and an empty stderr".into(),
    )
}

/// A clean run that printed exactly the lines `expected`, in any order.
fn prints_lines(output: &Output, mut expected: Vec<String>) -> Result<(), String> {
    clean(output)?;
    let mut lines: Vec<&str> = output
        .stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    expected.sort();
    ensure(lines == expected, || {
        format!("expected the lines {expected:?}")
    })
}

fn ensure(ok: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(problem()) }
}

#[test]
fn every_proto_service_has_a_spec_that_covers_each_rpc() {
    let schema = Schema::load();
    let specs = specs::all();
    let mut problems = Vec::new();
    assert!(
        !schema.services.is_empty(),
        "no services found in the descriptor set of proto/"
    );

    for service in &schema.services {
        let Some(spec) = specs.iter().find(|s| s.service == service.name) else {
            problems.push(format!(
                "{} (proto/) has no spec in tests/system/acceptance/specs.rs: add one with a call of each RPC",
                service.name
            ));
            continue;
        };
        let package_root = service.name.split('.').next().unwrap_or_default();
        if spec.name != package_root {
            problems.push(format!(
                "spec {:?} must be named {package_root:?}, as its package",
                spec.name
            ));
        }
        let called: BTreeSet<&str> = spec
            .scenarios
            .iter()
            .flatten()
            .filter_map(|call| call.method.strip_prefix(&format!("{}/", service.name)))
            .collect();
        for method in &service.methods {
            let uncalled = spec.uncalled.iter().any(|(name, _)| *name == method.name);
            match (called.contains(method.name.as_str()), uncalled) {
                (false, false) => problems.push(format!(
                    "the spec of {} calls no {} (call it, or say in `uncalled` why not)",
                    service.name, method.name
                )),
                (true, true) => problems.push(format!(
                    "the spec of {} calls {}, which it lists as uncalled",
                    service.name, method.name
                )),
                _ => {}
            }
        }
        for (name, _) in spec.uncalled {
            if service.method(name).is_none() {
                problems.push(format!(
                    "{} has no RPC {name} (listed as uncalled)",
                    service.name
                ));
            }
        }
    }
    for spec in &specs {
        if schema.service(spec.service).is_none() {
            problems.push(format!(
                "spec {:?} is for {}, which proto/ does not declare",
                spec.name, spec.service
            ));
        }
        for call in spec.scenarios.iter().flatten() {
            let (service, method) = call
                .method
                .split_once('/')
                .expect("methods are pkg.Service/Method");
            let Some(declared) = schema.service(service).and_then(|s| s.method(method)) else {
                problems.push(format!(
                    "spec {:?} calls {}, which proto/ does not declare",
                    spec.name, call.method
                ));
                continue;
            };
            if !declared.client_streaming && call.requests.len() != 1 {
                problems.push(format!("{} takes exactly one request", call.method));
            }
        }
    }
    let mut ports: Vec<u16> = specs.iter().map(|s| s.local_port).collect();
    ports.sort_unstable();
    ports.dedup();
    if ports.len() != specs.len() {
        problems.push("two specs share a local port".into());
    }
    fail_if_any(problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_and_describes_every_service_and_message() {
    let tools = Tools::locate();
    let schema = Schema::load();
    let running = Running::start(&schema).await;

    // (invocation, check of its output) for every service of the stack.
    type Check = Box<dyn Fn(&Output) -> Result<(), String> + Send>;
    let mut runs: Vec<(Invocation, Check)> = Vec::new();
    for (spec, addr) in &running.services {
        let service = schema
            .service(spec.service)
            .expect("specs name proto services")
            .clone();
        let grpcurl = |args: &[&str]| {
            let mut all = vec!["-plaintext".to_owned(), addr.to_string()];
            all.extend(args.iter().map(|a| (*a).to_owned()));
            Invocation::new(&tools.grpcurl, all)
        };

        let mut listed: Vec<String> = STANDARD_SERVICES.iter().map(|s| (*s).to_owned()).collect();
        listed.push(service.name.clone());
        runs.push((
            grpcurl(&["list"]),
            Box::new(move |output| prints_lines(output, listed.clone())),
        ));

        let methods: Vec<String> = service
            .methods
            .iter()
            .map(|m| format!("{}.{}", service.name, m.name))
            .collect();
        runs.push((
            grpcurl(&["list", &service.name]),
            Box::new(move |output| prints_lines(output, methods.clone())),
        ));

        let header = format!("{} is a service:", service.name);
        let rpc_lines: Vec<String> = service
            .methods
            .iter()
            .map(schema::Method::describe_line)
            .collect();
        runs.push((
            grpcurl(&["describe", &service.name]),
            Box::new(move |output| {
                clean(output)?;
                expect_lines(output, &header, &rpc_lines)?;
                let rpcs = output
                    .stdout
                    .lines()
                    .filter(|l| l.trim_start().starts_with("rpc "))
                    .count();
                ensure(rpcs == rpc_lines.len(), || {
                    format!("expected {} rpc lines, got {rpcs}", rpc_lines.len())
                })
            }),
        ));

        let messages = service
            .methods
            .iter()
            .flat_map(|m| [m.input.as_str(), m.output.as_str()]);
        let all_messages = schema.closure(messages.chain(ERROR_DETAILS));
        for message in &all_messages {
            let header = format!("{message} is a message:");
            // A message missing from the compiled set (build.rs left out an import)
            // fails below, after grpcurl has said what it makes of it.
            let fields = schema.field_lines(message);
            let lost = message.clone();
            runs.push((
                grpcurl(&["describe", message]),
                Box::new(move |output| {
                    clean(output)?;
                    let fields = fields.as_ref().ok_or(format!(
                        "{lost} is missing from contracts::FILE_DESCRIPTOR_SET (build.rs must include imports)"
                    ))?;
                    expect_lines(output, &header, fields)?;
                    // Top-level members (two spaces in) that end with `;` are fields.
                    let members = output
                        .stdout
                        .lines()
                        .filter(|l| {
                            l.starts_with("  ") && !l.starts_with("   ") && l.ends_with(';')
                        })
                        .filter(|l| !l.trim_start().starts_with("//"))
                        .count();
                    ensure(members == fields.len(), || {
                        format!("expected {} fields, got {members}", fields.len())
                    })
                }),
            ));
        }
    }

    let (invocations, checks): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    let outputs = tools::run_all(invocations).await;
    let failures = outputs
        .iter()
        .zip(checks)
        .filter_map(|(output, check)| check(output).err().map(|e| format!("{e}\n{output}")))
        .collect();
    running.stop().await;
    fail_if_any(failures);
}

/// `header` is the first line of the output and every one of `lines` is a line of it
/// (a line ending with ` [`, the start of one).
fn expect_lines(output: &Output, header: &str, lines: &[String]) -> Result<(), String> {
    let printed: BTreeSet<&str> = output.stdout.lines().map(str::trim).collect();
    if output.stdout.lines().next() != Some(header) {
        return Err(format!("expected the first line {header:?}"));
    }
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| {
            if l.ends_with(" [") {
                !printed.iter().any(|p| p.starts_with(l.as_str()))
            } else {
                !printed.contains(l.as_str())
            }
        })
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing lines {missing:?}"))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_calls_every_rpc_of_every_service() {
    let schema = Schema::load();
    let running = Running::start(&schema).await;
    let failures = harness::run_specs(Tool::Grpcurl, &running, &schema, Part::Rpcs).await;
    running.stop().await;
    fail_if_any(failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_calls_every_rpc_of_every_service_over_reflection_v1() {
    let schema = Schema::load();
    let running = Running::start(&schema).await;
    let failures = harness::run_specs(Tool::Buf, &running, &schema, Part::Rpcs).await;
    running.stop().await;
    fail_if_any(failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn buf_curl_lists_every_service_and_method_over_reflection_v1() {
    let tools = Tools::locate();
    let schema = Schema::load();
    let running = Running::start(&schema).await;

    let mut runs = Vec::new();
    for (spec, addr) in &running.services {
        let service = schema
            .service(spec.service)
            .expect("specs name proto services");
        let buf = |flag: &str| {
            let args = ["curl"].into_iter().chain(BUF_FLAGS).chain([flag]);
            Invocation::new(
                &tools.buf,
                args.map(str::to_owned).chain([format!("http://{addr}")]),
            )
        };
        let mut services: Vec<String> = STANDARD_SERVICES.iter().map(|s| (*s).to_owned()).collect();
        services.push(service.name.clone());
        let mut methods: Vec<String> = service
            .methods
            .iter()
            .map(|m| format!("{}/{}", service.name, m.name))
            .collect();
        methods.extend(["Check", "Watch"].map(|m| format!("{}/{m}", specs::HEALTH)));
        methods.extend(
            STANDARD_SERVICES[1..]
                .iter()
                .map(|s| format!("{s}/ServerReflectionInfo")),
        );
        runs.push((buf("--list-services"), services));
        runs.push((buf("--list-methods"), methods));
    }
    let (invocations, expected): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    let outputs = tools::run_all(invocations).await;
    let failures = outputs
        .iter()
        .zip(expected)
        .filter_map(|(output, expected)| {
            let problem = prints_lines(output, expected).err();
            problem.map(|e| format!("{e}\n{output}"))
        })
        .collect();
    running.stop().await;
    fail_if_any(failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_and_buf_curl_check_the_health_of_every_service() {
    let schema = Schema::load();
    let running = Running::start(&schema).await;
    let (grpcurl, buf) = tokio::join!(
        harness::run_specs(Tool::Grpcurl, &running, &schema, Part::Health),
        harness::run_specs(Tool::Buf, &running, &schema, Part::Health),
    );
    running.stop().await;
    fail_if_any(grpcurl.into_iter().chain(buf).collect());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_reflection_switched_off_both_tools_say_so() {
    let tools = Tools::locate();
    let schema = Schema::load();
    let env = shared::Env::default().with("GRPC_REFLECTION", "false");
    let running = Running::start_with(&schema, env).await;

    let mut runs = Vec::new();
    for (_, addr) in &running.services {
        let grpcurl = ["-plaintext".to_owned(), addr.to_string(), "list".to_owned()];
        runs.push((
            Invocation::new(&tools.grpcurl, grpcurl),
            "Failed to list services: server does not support the reflection API",
        ));
        let buf = ["curl"]
            .into_iter()
            .chain(BUF_FLAGS)
            .chain(["--list-services"]);
        let buf = buf.map(str::to_owned).chain([format!("http://{addr}")]);
        runs.push((Invocation::new(&tools.buf, buf), "Failure: unimplemented"));
    }
    let (invocations, expected): (Vec<_>, Vec<_>) = runs.into_iter().unzip();
    let outputs = tools::run_all(invocations).await;
    let failures = outputs
        .iter()
        .zip(expected)
        .filter(|(output, expected)| output.code != Some(1) || output.stderr.trim() != *expected)
        .map(|(output, expected)| format!("expected exit code 1 and {expected:?}\n{output}"))
        .collect();
    running.stop().await;
    fail_if_any(failures);
}

/// RPCs the cookbook must show, by the text of their command.
const COOKBOOK_MUST_SHOW: [&str; 11] = [
    " list",
    " describe ",
    "inventory.v1.InventoryService/GetProduct",
    "\"page_size\"",
    "inventory.v1.InventoryService/ReserveStock",
    "inventory.v1.InventoryService/CommitReservation",
    "inventory.v1.InventoryService/RestockProducts",
    "tok_visa",
    "payments.v1.PaymentService/GetPayment",
    "grpc.health.v1.Health/Check",
    "-v ",
];

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_cookbook_runs_as_printed() {
    Tools::locate(); // a clear message if grpcurl is missing, before any example runs
    let schema = Schema::load();
    let path = COOKBOOK.path;
    let text = std::fs::read_to_string(tools::root().join(path))
        .unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    let examples = cookbook::examples(COOKBOOK, &text).unwrap_or_else(|e| panic!("{e}"));
    let running = Running::start(&schema).await;
    let ports: Vec<(u16, SocketAddr)> = running
        .services
        .iter()
        .map(|(s, addr)| (s.local_port, *addr))
        .collect();

    let mut problems = Vec::new();
    let all_scripts: String = examples
        .iter()
        .map(|e| e.script.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for must in COOKBOOK_MUST_SHOW {
        if !all_scripts.contains(must) {
            problems.push(format!("the cookbook shows no command with {must:?}"));
        }
    }
    for (spec, _) in &running.services {
        if !all_scripts.contains(&format!("localhost:{}", spec.local_port)) {
            problems.push(format!(
                "the cookbook has no example for {} (localhost:{})",
                spec.name, spec.local_port
            ));
        }
    }
    if !examples
        .iter()
        .any(|e| e.fails_with == Some(tonic::Code::NotFound))
    {
        problems.push("the cookbook shows no NotFound error".into());
    }

    // In the page's order, one after another: later examples use what earlier ones did
    // (a reservation to commit).
    for example in &examples {
        let script = match cookbook::rewrite(&example.script, &ports) {
            Ok(script) => script,
            Err(e) => {
                problems.push(format!("{path}:{}: {e}", example.line));
                continue;
            }
        };
        let invocation =
            Invocation::new(std::path::Path::new("sh"), ["-eu", "-c", script.as_str()])
                .env("PATH", Tools::shell_path());
        let output = tools::run_one(invocation).await;
        let verdict = match example.fails_with {
            None => clean(&output).and_then(|()| {
                ensure(!output.stdout.trim().is_empty(), || {
                    "printed nothing".into()
                })
            }),
            Some(code) => {
                let exit = 64 + code as i32;
                let shown = format!("Code: {code:?}");
                ensure(
                    output.code == Some(exit) && output.stderr.contains(&shown),
                    || {
                        format!(
                            "expected grpcurl's {code:?} error: exit code {exit} and {shown:?} on stderr"
                        )
                    },
                )
            }
        };
        if let Err(e) = verdict {
            problems.push(format!("{path}:{}: {e}\n{output}", example.line));
        }
    }
    running.stop().await;
    fail_if_any(problems);
}

/// The README's three calls through the gateway, as printed, against a fresh stack:
/// each block exits 0, prints JSON on stdout, nothing on stderr, and no gateway error
/// (`{"error": …}`; `curl -s` exits 0 on a 4xx).
#[tokio::test(flavor = "multi_thread")]
async fn readme_quick_start_runs_as_printed() {
    let path = QUICK_START.path;
    let text = std::fs::read_to_string(tools::root().join(path))
        .unwrap_or_else(|e| panic!("{path} is readable: {e}"));
    let examples = cookbook::examples(QUICK_START, &text).unwrap_or_else(|e| panic!("{e}"));
    assert!(!examples.is_empty(), "{path} shows no curl call");
    let stack =
        stack::testing::TestStack::start(&shared::Env::default(), &stack::Wiring::default()).await;
    let ports = [(8080, stack.addr("gateway"))];
    let mut problems = Vec::new();
    for example in &examples {
        let script = cookbook::rewrite(&example.script, &ports)
            .unwrap_or_else(|e| panic!("{path}:{}: {e}", example.line));
        let invocation =
            Invocation::new(std::path::Path::new("sh"), ["-eu", "-c", script.as_str()])
                .env("PATH", Tools::shell_path());
        let output = tools::run_one(invocation).await;
        let verdict = clean(&output).and_then(|()| {
            ensure(
                output.stdout.trim_start().starts_with('{') && !output.stdout.contains("\"error\""),
                || "expected JSON answers and no error".into(),
            )
        });
        if let Err(e) = verdict {
            problems.push(format!("{path}:{}: {e}\n{output}", example.line));
        }
    }
    stack.stop().await.expect("the stack stops");
    fail_if_any(problems);
}

/// README.md, docs/*.md and k8s/README.md name only what exists: every relative link's file (and its
/// `#anchor`'s heading), every repository path in backticks, every `scripts/…` and
/// `make <target>` of their shell blocks. Files move; the docs must follow.
#[test]
fn the_docs_name_only_files_that_exist() {
    fail_if_any(docs::problems(tools::root()));
}

/// docs/configuration.md lists every environment variable the services read, and only
/// those.
#[test]
fn the_configuration_page_lists_every_variable_read() {
    fail_if_any(docs::configuration(tools::root()));
}

/// gRPC-Web with Connect's client for Node, as a program calls the services with no
/// proxy in front: a unary call, a server stream to its end, and an error with its code,
/// message and google.rpc details, each as the services answer them over gRPC.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_clients_call_the_services_directly() {
    let schema = Schema::load();
    let running = Running::start(&schema).await;
    let inventory = web::addr(&running, "inventory");
    let orders = web::addr(&running, "orders");
    const INVENTORY: &str = "inventory.v1.InventoryService";
    const ORDERS: &str = "orders.v1.OrderService";

    let product = web::call(
        inventory,
        Http::V2,
        INVENTORY,
        "GetProduct",
        json!({"sku": "SKU-001"}),
    )
    .await;
    let Answer::Messages(product) = product else {
        panic!("GetProduct failed over gRPC-Web: {product:?}");
    };
    assert_eq!(product.len(), 1, "{product:?}");
    assert_eq!(product[0]["product"]["sku"], "SKU-001", "{product:?}");
    assert_eq!(
        product[0]["product"]["price"]["amountMinor"], "2400",
        "int64 as a string: {product:?}"
    );

    let placed = web::call(
        orders,
        Http::V2,
        ORDERS,
        "PlaceOrder",
        json!({"requestId": "grpc-web", "customerId": "grpc-web", "items": [{"sku": "SKU-006", "quantity": 1}], "cardToken": "tok_visa"}),
    )
    .await;
    let Answer::Messages(placed) = placed else {
        panic!("PlaceOrder failed over gRPC-Web: {placed:?}");
    };
    let order_id = placed[0]["order"]["orderId"]
        .as_str()
        .expect("an order id")
        .to_owned();
    // Server streaming: the order as it is (final, so the stream ends after it).
    let watched = web::call(
        orders,
        Http::V2,
        ORDERS,
        "WatchOrder",
        json!({"orderId": order_id}),
    )
    .await;
    let Answer::Messages(watched) = watched else {
        panic!("WatchOrder failed over gRPC-Web: {watched:?}");
    };
    assert_eq!(watched.len(), 1, "{watched:?}");
    assert_eq!(
        watched[0]["order"]["orderId"],
        order_id.as_str(),
        "{watched:?}"
    );
    assert_eq!(
        watched[0]["order"]["status"], "ORDER_STATUS_CONFIRMED",
        "{watched:?}"
    );

    let missing = web::call(
        inventory,
        Http::V2,
        INVENTORY,
        "GetProduct",
        json!({"sku": "SKU-404"}),
    )
    .await;
    let Answer::Error {
        code,
        message,
        details,
    } = missing
    else {
        panic!("GetProduct of an unknown SKU succeeded over gRPC-Web: {missing:?}");
    };
    assert_eq!(code, tonic::Code::NotFound as i64, "{message}");
    assert_eq!(message, "product \"SKU-404\" not found");
    assert_eq!(details, ["google.rpc.ResourceInfo"]);

    // Every gRPC service speaks it, not only those above: the order's payment.
    let payments = web::call(
        web::addr(&running, "payments"),
        Http::V2,
        "payments.v1.PaymentService",
        "ListPayments",
        json!({"orderId": order_id, "pageSize": 10}),
    )
    .await;
    assert!(
        matches!(&payments, Answer::Messages(m) if m[0]["payments"][0]["orderId"] == order_id.as_str()),
        "{payments:?}"
    );

    running.stop().await;
}

/// CORS is off by default: a browser's preflight gets no `access-control-allow-origin`,
/// so the browser refuses the call. With `GRPC_WEB_CORS_ORIGINS`, the named origins
/// pass the preflight (others still do not), and a browser's HTTP/1.1 call works.
#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_cors_is_off_by_default_and_allows_only_the_configured_origins() {
    const PATH: &str = "/inventory.v1.InventoryService/GetProduct";
    const APP: &str = "http://app.example.test:5173";
    let allowed =
        |answer: &http::Response<()>| answer.headers().get("access-control-allow-origin").cloned();
    let schema = Schema::load();

    let running = Running::start(&schema).await;
    let inventory = web::addr(&running, "inventory");
    let answer = web::preflight(inventory, PATH, APP).await;
    assert_eq!(allowed(&answer), None, "CORS off: {answer:?}");
    running.stop().await;

    let env = shared::Env::default().with("GRPC_WEB_CORS_ORIGINS", APP);
    let running = Running::start_with(&schema, env).await;
    let inventory = web::addr(&running, "inventory");
    let answer = web::preflight(inventory, PATH, APP).await;
    assert!(answer.status().is_success(), "{answer:?}");
    assert_eq!(
        allowed(&answer).as_ref().map(|v| v.as_bytes()),
        Some(APP.as_bytes()),
        "{answer:?}"
    );
    let methods = answer.headers().get("access-control-allow-methods");
    assert_eq!(
        methods.map(|v| v.as_bytes()),
        Some(&b"POST"[..]),
        "{answer:?}"
    );
    // What a page may read of an answer: the status, when it comes in the headers.
    let answer = web::empty_call(inventory, PATH, APP).await;
    assert_eq!(
        allowed(&answer).as_ref().map(|v| v.as_bytes()),
        Some(APP.as_bytes()),
        "{answer:?}"
    );
    let exposed = answer
        .headers()
        .get("access-control-expose-headers")
        .map(|v| v.to_str().unwrap());
    assert!(
        exposed.is_some_and(|v| v.contains("grpc-status") && v.contains("grpc-message")),
        "{answer:?}"
    );

    let other = web::preflight(inventory, PATH, "http://evil.example.test").await;
    assert_eq!(allowed(&other), None, "another origin: {other:?}");

    let product = web::call(
        inventory,
        Http::V1,
        "inventory.v1.InventoryService",
        "GetProduct",
        json!({"sku": "SKU-001"}),
    )
    .await;
    assert!(
        matches!(&product, Answer::Messages(m) if m[0]["product"]["sku"] == "SKU-001"),
        "HTTP/1.1: {product:?}"
    );
    running.stop().await;
}

/// The OpenAPI document: the gateway serves the checked-in one, an independent
/// validator (`openapi-spec-validator`) finds it valid OpenAPI 3.1, and a property-based
/// tester (`schemathesis`) generates requests from it against the live stack, for at
/// most a minute: no answer is a 5xx, and every answer has a documented
/// status, content type, headers and schema. (Authentication is off in this stack: the
/// scopes are `tests/` gateway `auth` tests' job. Requests the services refuse as
/// invalid are fine, as proto3 cannot say which fields a service requires; streams
/// that never end are left out.)
#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_valid_and_the_live_gateway_keeps_to_it() {
    let stack =
        stack::testing::TestStack::start(&shared::Env::default(), &stack::Wiring::default()).await;
    let gateway = stack.addr("gateway");
    let served = stack.http().get("/openapi.json").await;
    assert_eq!(served.status, http::StatusCode::OK);
    let checked_in = std::fs::read_to_string(tools::root().join("docs/openapi.json"))
        .expect("docs/openapi.json");
    assert!(
        served.body == checked_in.as_bytes(),
        "GET /openapi.json differs from docs/openapi.json: regenerate it with \
         `UPDATE_OPENAPI=1 cargo test -p gateway --lib openapi`"
    );

    let validator = tools::locate("openapi-spec-validator");
    let validated =
        tools::run_one(Invocation::new(&validator, ["docs/openapi.json"]).dir(tools::root())).await;
    assert!(
        validated.code == Some(0) && validated.stdout.contains("OK"),
        "{validated}"
    );

    let schemathesis = tools::locate("schemathesis");
    let work = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("schemathesis");
    std::fs::create_dir_all(&work).expect("a working directory");
    let checks = "not_a_server_error,status_code_conformance,content_type_conformance,\
                  response_headers_conformance,response_schema_conformance";
    let run = Invocation::new(
        &schemathesis,
        [
            "run".to_owned(),
            format!("http://{gateway}/openapi.json"),
            format!("--checks={checks}"),
            "--exclude-path-regex=/stream$".to_owned(),
            "--max-examples=25".to_owned(),
            "--max-time=60".to_owned(),
            "--request-timeout=10".to_owned(),
            "--generation-database=none".to_owned(),
            "--no-color".to_owned(),
            "--warnings=off".to_owned(),
        ],
    )
    .env("SCHEMATHESIS_HOOKS", "")
    .dir(&work)
    .deadline(std::time::Duration::from_secs(150));
    let fuzzed = tools::run_one(run).await;
    assert!(fuzzed.code == Some(0), "{fuzzed}");
    assert!(fuzzed.stdout.contains("Tested:"), "{fuzzed}");
    stack.stop().await.expect("the stack stops");
}

/// The API explorer at `/docs`, in a real headless Chromium: the page loads with
/// nothing from elsewhere, lists every route of the OpenAPI document, and "Try it out"
/// on `GET /v1/products` shows 200 with the catalog. Its Swagger UI files are those of
/// the pinned npm package.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_explorer_lists_the_routes_and_tries_one_in_a_browser() {
    let assets = tools::root().join("services/gateway/assets/swagger-ui");
    let package = tools::root().join("tests/web/node_modules/swagger-ui-dist");
    web::node(); // the packages are installed
    for file in ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE"] {
        let embedded = std::fs::read(assets.join(file)).expect("a checked-in file");
        let pinned = std::fs::read(package.join(file)).expect("a file of the package");
        assert!(
            embedded == pinned,
            "services/gateway/assets/swagger-ui/{file} is not that of the swagger-ui-dist \
             pinned in tests/web/package.json: copy it over (assets/swagger-ui/README.md)"
        );
    }

    let stack =
        stack::testing::TestStack::start(&shared::Env::default(), &stack::Wiring::default()).await;
    let shown = web::explorer(stack.addr("gateway")).await;
    assert_eq!(shown["problems"], json!([]), "{shown:#}");

    let document: serde_json::Value =
        serde_json::from_slice(&stack.http().get("/openapi.json").await.body)
            .expect("the document is JSON");
    let mut documented: Vec<String> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, ops)| {
            let ops = ops.as_object().expect("operations");
            ops.keys()
                .map(move |verb| format!("{} {path}", verb.to_uppercase()))
        })
        .collect();
    let mut listed: Vec<String> = shown["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .map(|r| r.as_str().expect("a route").to_owned())
        .collect();
    documented.sort();
    listed.sort();
    assert_eq!(
        listed, documented,
        "the explorer lists every route of /openapi.json"
    );
    assert!(
        listed.contains(&"GET /v1/products".to_owned()),
        "{listed:?}"
    );

    assert_eq!(shown["tryIt"]["status"], "200", "{shown:#}");
    let body: serde_json::Value =
        serde_json::from_str(shown["tryIt"]["body"].as_str().expect("a body"))
            .expect("the explorer shows the JSON answer");
    let skus: Vec<&str> = body["products"]
        .as_array()
        .expect("products")
        .iter()
        .filter_map(|p| p["sku"].as_str())
        .collect();
    assert!(skus.starts_with(&["SKU-001", "SKU-002"]), "{body:#}");
    stack.stop().await.expect("the stack stops");
}
