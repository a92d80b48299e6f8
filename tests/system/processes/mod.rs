//! The services as separate processes, the way a cluster runs them, and an OTLP
//! collector in the test that receives their spans.
//!
//! Each binary comes from the target directory this test was built in (`cargo nextest
//! run --workspace` and `cargo test --workspace` build them). Every process listens on
//! free ports (`127.0.0.1:0`) and says which in its JSON "serving" log line, so no port
//! is guessed, and gets SIGTERM at the end, which flushes its spans.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::sync::oneshot;

/// Bounds every wait: generous for a loaded 2-core machine, never reached when healthy.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// The directory of the service binaries: the target profile directory this test
/// binary (`target/debug/deps/…`) was built into.
pub(crate) fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join(bin_name("gateway")).is_file())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "no service binaries (gateway, orders, …) next to {}: build them first with \
                 `cargo build --workspace --bins` (`cargo nextest run --workspace` does)",
                exe.display()
            )
        })
}

fn bin_name(name: &str) -> String {
    format!("{name}{}", std::env::consts::EXE_SUFFIX)
}

/// One span as the collector received it, with its resource's `service.name`.
#[derive(Clone, Debug)]
pub(crate) struct Span {
    pub(crate) service: String,
    pub(crate) name: String,
    pub(crate) kind: SpanKind,
    pub(crate) trace_id: String,
    pub(crate) span_id: String,
    pub(crate) parent_span_id: String,
    pub(crate) attributes: HashMap<String, String>,
    /// `Unset`, `Ok` or `Error`.
    pub(crate) status: String,
}

impl Span {
    pub(crate) fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), value(kv.value.as_ref())))
        .collect()
}

/// An OTLP/gRPC trace receiver on a free port, keeping every span it gets.
#[derive(Debug)]
pub(crate) struct Collector {
    pub(crate) addr: SocketAddr,
    spans: Arc<Mutex<Vec<Span>>>,
    _stop: oneshot::Sender<()>,
}

#[derive(Clone, Debug, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Span {
                    service: service.clone(),
                    kind: span.kind(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                    status: span
                        .status
                        .map(|s| {
                            match s.code() {
                                opentelemetry_proto::tonic::trace::v1::status::StatusCode::Unset => "Unset",
                                opentelemetry_proto::tonic::trace::v1::status::StatusCode::Ok => "Ok",
                                opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error => "Error",
                            }
                            .to_owned()
                        })
                        .unwrap_or_else(|| "Unset".to_owned()),
                    name: span.name,
                });
            }
        }
        self.spans.lock().unwrap().extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver::default();
        let spans = receiver.spans.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(receiver))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        Self {
            addr,
            spans,
            _stop: stop,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the services.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}

/// A running service binary.
#[derive(Debug)]
pub(crate) struct Process {
    pub(crate) name: &'static str,
    child: Child,
    /// The gRPC or HTTP address and the admin (`/metrics`) address it bound.
    pub(crate) addr: SocketAddr,
    pub(crate) admin_addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

/// `binary` on one CPU, as the pods of `k8s/` are limited to one, so that it runs on
/// the runtime it has there (`shared::runtime`): through `taskset` where there is one
/// (Linux), the processes taking the CPUs in turn.
fn on_one_cpu(binary: &Path) -> Command {
    static NEXT_CPU: AtomicUsize = AtomicUsize::new(0);
    let taskset = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("taskset"))
        .find(|path| path.is_file());
    let Some(taskset) = taskset else {
        return Command::new(binary);
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = NEXT_CPU.fetch_add(1, Ordering::Relaxed) % cpus;
    let mut command = Command::new(taskset);
    command.arg("--cpu-list").arg(cpu.to_string()).arg(binary);
    command
}

impl Process {
    /// Starts binary `name` with exactly `env` plus free listen ports and JSON logs, and
    /// waits (bounded) for its "serving" line.
    pub(crate) async fn start(name: &'static str, env: &[(&str, String)]) -> Self {
        let binary = bin_dir().join(bin_name(name));
        let mut child = on_one_cpu(&binary)
            .env_clear()
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("ADMIN_LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (serving_tx, serving_rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        let kept = lines.clone();
        // Reads every line for the test to search later; the "serving" one is also sent.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // Kept before it is sent: the test may look for it once started.
                kept.lock().unwrap().push(line.clone());
                if line.contains("\"serving ") {
                    let _ = serving_tx.send(line);
                }
            }
        });
        let line = tokio::task::spawn_blocking(move || serving_rx.recv_timeout(PATIENCE))
            .await
            .unwrap();
        let line = match line {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "{name} did not log that it serves within {PATIENCE:?}; its output:\n{}",
                    lines.lock().unwrap().join("\n")
                );
            }
        };
        let log: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
        let addr = |key: &str| -> SocketAddr {
            log[key]
                .as_str()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("{name}: no {key} in {line}"))
        };
        Self {
            name,
            addr: addr("addr"),
            admin_addr: addr("admin_addr"),
            child,
            lines,
        }
    }

    /// The runtime the process serves on, from its "serving" log line.
    pub(crate) fn runtime(&self) -> Option<String> {
        self.log_lines().iter().find_map(|line| {
            let log: serde_json::Value = serde_json::from_str(line).ok()?;
            let serving = log["message"].as_str()?.starts_with("serving ");
            serving.then(|| log["runtime"].as_str().map(str::to_owned))?
        })
    }

    /// `http://addr`, for the upstream variables of other services.
    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every line it wrote to stdout so far.
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// SIGKILL: the process dies at once, mid-work, as in a crash or an OOM kill.
    /// Returns what it wrote until then.
    pub(crate) fn kill(mut self) -> Vec<String> {
        self.child.kill().expect("the process can be killed");
        self.child.wait().expect("the killed process is reaped");
        self.log_lines()
    }

    /// SIGSTOP: the process freezes, as one that hangs; its sockets still accept
    /// connections and requests, which wait unanswered until [`Process::resume`].
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT: a paused process goes on where it stopped.
    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGTERM, then waits (bounded) for a clean exit: spans are flushed by then.
    pub(crate) async fn stop(self) -> Vec<String> {
        self.terminate();
        self.exited().await
    }

    /// SIGTERM, without waiting: the shutdown sequence begins.
    pub(crate) fn terminate(&self) {
        self.signal("-TERM");
    }

    /// Waits (bounded) for the process to exit by itself, asserts that it exited
    /// cleanly, and returns its log lines.
    pub(crate) async fn exited(mut self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("{} did not exit within {PATIENCE:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert!(
            status.success(),
            "{} exited with {status}; its output:\n{}",
            self.name,
            self.log_lines().join("\n")
        );
        self.log_lines()
    }
}

impl Drop for Process {
    /// A failed test leaves no process behind.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The whole system, one process per service, sending spans to `otlp` with `env`
/// added to each.
#[derive(Debug)]
pub(crate) struct System {
    pub(crate) inventory: Process,
    pub(crate) payments: Process,
    pub(crate) notifications: Process, // remove-service: notifications
    pub(crate) orders: Process,
    pub(crate) gateway: Process,
    /// The services this file does not name (one `make new-service` added), each with
    /// its defaults: the gateway routes to them too.
    pub(crate) others: Vec<Process>,
}

/// The services of `services/` that [`System`] does not start by name.
fn other_services() -> Vec<&'static str> {
    let known = [
        "gateway",
        "inventory",
        "payments",
        "orders",
        "notifications", // remove-service: notifications
    ];
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("services");
    let mut names: Vec<&'static str> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| !known.contains(&name.as_str()))
        .map(|name| &*Box::leak(name.into_boxed_str()))
        .collect();
    names.sort_unstable();
    names
}

impl System {
    pub(crate) async fn start(otlp: &str, env: &[(&str, String)]) -> Self {
        let mut all = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.to_owned())];
        all.extend(env.iter().cloned());
        Self::start_with(&all).await
    }

    /// The system exporting no spans.
    pub(crate) async fn start_without_traces() -> Self {
        Self::start_with(&[]).await
    }

    /// The system exporting no spans, with `env` added to each process.
    pub(crate) async fn start_with(env: &[(&str, String)]) -> Self {
        let with = |extra: Vec<(&'static str, String)>| -> Vec<(&str, String)> {
            let mut all = env.to_vec();
            all.extend(extra);
            all
        };
        let plain = with(vec![]);
        let (inventory, payments) = tokio::join!(
            Process::start("inventory", &plain),
            Process::start("payments", &plain),
        );
        let notifications = Process::start("notifications", &plain).await; // remove-service: notifications
        let orders = Process::start(
            "orders",
            &with(vec![
                ("INVENTORY_ADDR", inventory.uri()),
                ("PAYMENTS_ADDR", payments.uri()),
            ]),
        )
        .await;
        let mut others = Vec::new();
        for name in other_services() {
            others.push(Process::start(name, &plain).await);
        }
        let mut upstreams = vec![
            ("ORDERS_ADDR".to_owned(), orders.uri()),
            ("INVENTORY_ADDR".to_owned(), inventory.uri()),
            ("NOTIFICATIONS_ADDR".to_owned(), notifications.uri()), // remove-service: notifications
        ];
        upstreams.extend(
            others
                .iter()
                .map(|p| (format!("{}_ADDR", p.name.to_ascii_uppercase()), p.uri())),
        );
        let mut gateway_env = env.to_vec();
        gateway_env.extend(upstreams.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let gateway = Process::start("gateway", &gateway_env).await;
        Self {
            inventory,
            payments,
            notifications, // remove-service: notifications
            orders,
            gateway,
            others,
        }
    }

    /// Stops every process (SIGTERM, all at once, as `kubectl delete` does) and returns
    /// each one's log lines by name.
    pub(crate) async fn stop(self) -> HashMap<&'static str, Vec<String>> {
        let mut all = vec![
            self.gateway,
            self.orders,
            self.inventory,
            self.payments,
            self.notifications, // remove-service: notifications
        ];
        all.extend(self.others);
        let mut stopping = tokio::task::JoinSet::new();
        for process in all {
            stopping.spawn(async move { (process.name, process.stop().await) });
        }
        // A process that fails to stop panics its task, and join_all passes the panic on.
        stopping.join_all().await.into_iter().collect()
    }
}
