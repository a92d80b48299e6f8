//! The server processes of a run: started on [`SERVER_CPU`] with the environment a
//! deployment gives them, killed when dropped, polled until ready; and the start-up
//! part of the report (time to SERVING, idle memory).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bench::procfs;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::calls::{get_product_size, http_status};
use crate::{Error, PATIENCE, SDK_DISABLED, SERVER_CPU};

/// The services: every folder of `services/` (the driver runs at the repository's
/// root), upstreams first: orders calls the others, the gateway calls orders.
pub(crate) fn services() -> Result<Vec<String>, Error> {
    let mut names: Vec<String> = std::fs::read_dir("services")?
        .filter_map(Result::ok)
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    names.sort_by_key(|name| {
        let rank = match name.as_str() {
            "orders" => 1,
            "gateway" => 2,
            _ => 0,
        };
        (rank, name.clone())
    });
    Ok(names)
}

/// `<NAME>_ADDR` of every running service: the upstream variables of the next one
/// (each service reads those it needs).
pub(crate) fn upstreams(running: &[Server]) -> Vec<(String, String)> {
    running
        .iter()
        .map(|s| (format!("{}_ADDR", s.name.to_uppercase()), s.uri()))
        .collect()
}

/// A server process on [`SERVER_CPU`], killed when dropped (also on error or panic).
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) started: Instant,
    pub(crate) addr: SocketAddr,
    pub(crate) admin: Option<SocketAddr>,
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_addr() -> Result<SocketAddr, Error> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Starts processes and remembers their ids in `<logs>/pids`, so that the script
/// can kill what is left should this process die without unwinding.
#[derive(Clone, Debug)]
pub(crate) struct Launcher {
    pub(crate) logs: PathBuf,
    pub(crate) bin_dir: PathBuf,
    pub(crate) otlp: String,
    /// The binaries are the old build's (`--old-bin-dir`): logs go to `old-<name>.log`.
    pub(crate) old: bool,
}

impl Launcher {
    pub(crate) fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        addr: SocketAddr,
        admin: Option<SocketAddr>,
    ) -> Result<Server, Error> {
        let prefix = if self.old { "old-" } else { "" };
        let log = std::fs::File::create(self.logs.join(format!("{prefix}{name}.log")))?;
        let started = Instant::now();
        let child = Command::new("taskset")
            .args(["-c", SERVER_CPU])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let mut pids = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.logs.join("pids"))?;
        std::io::Write::write_all(&mut pids, format!("{}\n", child.id()).as_bytes())?;
        Ok(Server {
            name: name.to_owned(),
            child,
            started,
            addr,
            admin,
        })
    }

    /// Service binary `name` on free ports, logs at info in `log_format` (`text`, the
    /// default, or `json` as in k8s/base), spans to the sink as `sampler` (an
    /// `OTEL_TRACES_SAMPLER`) decides, or no tracing at all with [`SDK_DISABLED`].
    pub(crate) fn service(
        &self,
        name: &str,
        sampler: &str,
        log_format: &str,
        upstreams: &[(String, String)],
    ) -> Result<Server, Error> {
        let (addr, admin) = (free_addr()?, free_addr()?);
        let mut env = vec![
            ("LISTEN_ADDR", addr.to_string()),
            ("ADMIN_LISTEN_ADDR", admin.to_string()),
            ("LOG_FORMAT", log_format.to_owned()),
            ("RUST_LOG", "info".to_owned()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", self.otlp.clone()),
            // The load generator is one client at thousands of requests per second:
            // the gateway's limit per client (read by it alone) would measure itself.
            ("GATEWAY_RATE_LIMIT", "0".to_owned()),
        ];
        if sampler == SDK_DISABLED {
            env.push(("OTEL_SDK_DISABLED", "true".to_owned()));
        } else {
            env.push(("OTEL_TRACES_SAMPLER", sampler.to_owned()));
        }
        env.extend(upstreams.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let program = self.bin_dir.join(name);
        self.spawn(name, &program, &[], &env, addr, Some(admin))
    }
}

/// Polls (every millisecond) until `server` answers as ready; returns the time since
/// it was spawned. gRPC services: health `Check` SERVING; the gateway: `/readyz` 200;
/// the baseline and the peer (no health service): a successful GetProduct.
pub(crate) async fn wait_ready(server: &Server) -> Result<Duration, Error> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = match server.name.as_str() {
            "gateway" => http_status(&format!("{}/readyz", server.uri()))
                .await
                .is_ok_and(|s| s == 200),
            "baseline" | "python" => get_product_size(&server.uri()).await.is_ok(),
            _ => serving(&server.uri()).await,
        };
        if ready {
            return Ok(server.started.elapsed());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} not ready within {PATIENCE:?}; see its log in target/bench/",
                server.name
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

pub(crate) async fn serving(uri: &str) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(uri.to_owned()) else {
        return false;
    };
    let Ok(channel) = endpoint.connect().await else {
        return false;
    };
    HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .is_ok_and(|r| r.get_ref().status == ServingStatus::Serving as i32)
}

/// What the start-up part measured of one service.
#[derive(Debug)]
pub(crate) struct Startup {
    pub(crate) name: String,
    pub(crate) to_serving: Duration,
    pub(crate) idle_rss_kib: u64,
    pub(crate) threads: u64,
    pub(crate) binary_bytes: u64,
}

/// Starts each service alone on the server core (upstreams first, so that the
/// gateway's `/readyz` can succeed), times it to SERVING, then reads its idle RSS.
pub(crate) async fn startups(launcher: &Launcher) -> Result<Vec<Startup>, Error> {
    let mut running: Vec<Server> = Vec::new();
    let mut results = Vec::new();
    for name in services()? {
        let server =
            launcher.service(&name, "parentbased_always_on", "json", &upstreams(&running))?;
        let to_serving = wait_ready(&server).await?;
        running.push(server);
        results.push((name, to_serving));
    }
    // Idle: started, served their readiness checks, nothing since.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut startups = Vec::new();
    for ((name, to_serving), server) in results.into_iter().zip(&running) {
        startups.push(Startup {
            binary_bytes: std::fs::metadata(launcher.bin_dir.join(&name))?.len(),
            name,
            to_serving,
            idle_rss_kib: procfs::status_kib(server.pid(), "VmRSS")?,
            threads: procfs::threads(server.pid())?,
        });
    }
    Ok(startups)
}
