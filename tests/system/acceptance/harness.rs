//! The stack on ephemeral ports, and running specs against it with one tool.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use stack::{Ports, Stack};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use super::calls::{Reply, Rpc, Tool};
use super::json::{self, Vars};
use super::schema::Schema;
use super::specs::{self, Call, Expect, ServiceSpec};
use super::tools::{self, Tools};

/// The whole stack serving in this process, every service SERVING.
#[derive(Debug)]
pub(crate) struct Running {
    /// The specs of the services the stack runs, with their addresses, in spec order.
    pub(crate) services: Vec<(ServiceSpec, SocketAddr)>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), shared::Error>>,
}

impl Running {
    /// Binds the stack on free ports, serves it, and waits until every service says
    /// SERVING. Panics if the stack runs a gRPC service of `proto/` that has no spec.
    pub(crate) async fn start(schema: &Schema) -> Self {
        Self::start_with(schema, shared::Env::default()).await
    }

    /// [`Running::start`] with settings for every service, e.g. `GRPC_REFLECTION`.
    pub(crate) async fn start_with(schema: &Schema, env: shared::Env) -> Self {
        shared::testing::init_logs();
        let env = env.with("SHUTDOWN_GRACE_PERIOD", "2s");
        let stack = Stack::bind(&env, &Ports::Ephemeral)
            .await
            .expect("the stack binds");

        let specs = specs::all();
        // One name everywhere: the stack calls the service of package `orders.v1` `orders`.
        for service in &schema.services {
            let name = service.name.split('.').next().unwrap_or_default();
            let has_spec = specs.iter().any(|s| s.service == service.name);
            assert!(
                has_spec || stack.addr(name).is_none(),
                "the stack runs {name} ({}) but tests/system/acceptance/specs.rs has no spec for it",
                service.name
            );
        }
        let services: Vec<_> = specs
            .into_iter()
            .filter_map(|spec| stack.addr(spec.name).map(|addr| (spec, addr)))
            .collect();
        assert!(
            !services.is_empty(),
            "the stack runs none of the specified services"
        );

        let (shutdown, stop) = oneshot::channel();
        let task = tokio::spawn(stack.serve(async {
            let _ = stop.await;
        }));
        // Each server turns SERVING once its serve task runs. The service's own name is
        // asked, not `""`, so that a broken overall status fails the health test with
        // the tools' output rather than this wait.
        for (spec, addr) in &services {
            let channel = Endpoint::from_shared(format!("http://{addr}"))
                .expect("a socket address makes a valid URI")
                .connect_lazy();
            shared::testing::eventually(&format!("{} to be SERVING", spec.name), || {
                let channel = channel.clone();
                async move { health_check(channel, spec.service).await == Some(SERVING) }
            })
            .await;
        }
        Self {
            services,
            shutdown,
            task,
        }
    }

    /// The address of the service a method (`pkg.Service/Method`) belongs to; `None`
    /// for a service that is not part of the stack.
    fn addr_of(&self, method: &str) -> Option<SocketAddr> {
        let service = method.split('/').next().unwrap_or_default();
        self.services
            .iter()
            .find(|(s, _)| s.service == service)
            .map(|(_, addr)| *addr)
    }

    /// Shuts the stack down gracefully and waits until it stopped.
    pub(crate) async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task
            .await
            .expect("stack task panicked")
            .expect("the stack stops cleanly");
    }
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: i32 = 1;

/// `Health/Check(service)` over a plain tonic client: readiness must not depend on
/// the tools under test.
async fn health_check(channel: Channel, service: &str) -> Option<i32> {
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckRequest {
        #[prost(string, tag = "1")]
        service: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct HealthCheckResponse {
        #[prost(int32, tag = "1")]
        status: i32,
    }
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.ok()?;
    let response = grpc
        .unary::<_, HealthCheckResponse, _>(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_owned(),
            }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .ok()?;
    Some(response.into_inner().status)
}

/// Which scenarios of a spec to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// The service's own RPCs.
    Rpcs,
    /// The health checks every server must pass.
    Health,
}

/// Runs the scenarios of every service of the stack with `tool`, concurrently, except
/// that the scenarios of a spec that `runs_first` run before all others. Returns every
/// failure, each with the command to reproduce it and what the tool printed.
pub(crate) async fn run_specs(
    tool: Tool,
    running: &Running,
    schema: &Schema,
    part: Part,
) -> Vec<String> {
    let tools = Tools::locate();
    // Batches run one after the other, the scenarios of a batch concurrently.
    let batch = |include: fn(&ServiceSpec) -> bool| -> Vec<(&ServiceSpec, SocketAddr, Vec<Call>)> {
        let services = running.services.iter().filter(|(spec, _)| include(spec));
        services
            .flat_map(|(spec, addr)| {
                let scenarios = match part {
                    Part::Rpcs => spec.scenarios.clone(),
                    Part::Health => specs::health(spec),
                };
                scenarios.into_iter().map(move |s| (spec, *addr, s))
            })
            .collect()
    };
    let batches = match part {
        Part::Rpcs => vec![batch(|s| s.runs_first), batch(|s| !s.runs_first)],
        Part::Health => vec![batch(|_| true)],
    };
    let mut failures = Vec::new();
    for batch in batches {
        let tasks: Vec<_> = batch
            .into_iter()
            .map(|(spec, addr, scenario)| {
                // Each call goes to its own service (a scenario may need another one
                // first); health calls go to the service under test.
                let targets: Vec<SocketAddr> = scenario
                    .iter()
                    .map(|call| running.addr_of(&call.method).unwrap_or(addr))
                    .collect();
                let streaming: Vec<bool> = scenario
                    .iter()
                    .map(|call| client_streaming(schema, &call.method))
                    .collect();
                let tools = tools.clone();
                let name = spec.name;
                let task = tokio::spawn(async move {
                    run_scenario(tool, &tools, &scenario, &targets, &streaming).await
                });
                (name, task)
            })
            .collect();
        for (name, task) in tasks {
            if let Err(failure) = task.await.expect("scenario task panicked") {
                failures.push(format!("{name} ({}): {failure}", tool.name()));
            }
        }
    }
    failures
}

/// Whether `method` takes a client stream, from the protos (health takes none).
fn client_streaming(schema: &Schema, method: &str) -> bool {
    let (service, name) = method
        .split_once('/')
        .expect("methods are pkg.Service/Method");
    if service == specs::HEALTH {
        return false;
    }
    schema
        .service(service)
        .and_then(|s| s.method(name))
        .unwrap_or_else(|| panic!("a spec calls {method}, which proto/ does not declare"))
        .client_streaming
}

async fn run_scenario(
    tool: Tool,
    tools: &Tools,
    calls: &[Call],
    targets: &[SocketAddr],
    streaming: &[bool],
) -> Result<(), String> {
    let mut vars = Vars::new();
    for ((call, addr), client_streaming) in calls.iter().zip(targets).zip(streaming) {
        let requests: Vec<Value> = call
            .requests
            .iter()
            .map(|r| json::substitute(r, &vars))
            .collect();
        let rpc = Rpc {
            method: &call.method,
            requests: &requests,
            client_streaming: *client_streaming,
            verbose: call.verbose,
        };
        let invocation = tool.call(tools, *addr, &rpc);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let output = tools::run_one(invocation.clone()).await;
            match tool
                .reply(&output, call.verbose)
                .and_then(|reply| check_reply(&reply, &call.expect, &vars))
            {
                Ok(first) => {
                    for (name, pointer) in &call.captures {
                        let message = first.as_ref().ok_or_else(|| {
                            format!("{}: no response to capture {name} from", call.method)
                        })?;
                        let value = json::string_at(message, pointer)
                            .map_err(|e| format!("{}: {e}", call.method))?;
                        vars.insert((*name).to_owned(), value);
                    }
                    break;
                }
                Err(_) if call.eventually && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(problem) => return Err(format!("{}: {problem}\n{output}", call.method)),
            }
        }
    }
    Ok(())
}

/// Compares a reply with the expectation; returns the first message (for captures).
fn check_reply(reply: &Reply, expect: &Expect, vars: &Vars) -> Result<Option<Value>, String> {
    let check_messages = |actual: &[Value], expected: &[Value]| -> Result<(), String> {
        if actual.len() != expected.len() {
            return Err(format!(
                "expected {} response messages, got {}",
                expected.len(),
                actual.len()
            ));
        }
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            json::check(a, &json::substitute(e, vars))
                .map_err(|e| format!("response {}: {e}", i + 1))?;
        }
        Ok(())
    };
    match (reply, expect) {
        (Reply::Messages(actual), Expect::Messages(expected)) => {
            check_messages(actual, expected)?;
            Ok(actual.first().cloned())
        }
        (
            Reply::Status {
                messages,
                code,
                message,
                details,
            },
            Expect::Status {
                code: expected_code,
                message: expected_message,
                details: expected_details,
            },
        ) => {
            if code != expected_code {
                return Err(format!("expected status {expected_code:?}, got {code:?}"));
            }
            let expected_message = json::substitute_str(expected_message, vars);
            if *message != expected_message {
                return Err(format!(
                    "expected message {expected_message:?}, got {message:?}"
                ));
            }
            check_messages(messages, &[])?;
            json::check(
                &Value::Array(details.clone()),
                &json::substitute(&Value::Array(expected_details.clone()), vars),
            )
            .map_err(|e| format!("error details: {e}"))?;
            Ok(None)
        }
        (Reply::Messages(_), Expect::Status { code, .. }) => {
            Err(format!("expected status {code:?}, but the call succeeded"))
        }
        (Reply::Status { code, message, .. }, Expect::Messages(_)) => {
            Err(format!("expected success, got status {code:?}: {message}"))
        }
    }
}
