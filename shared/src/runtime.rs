//! The Tokio runtime a service runs on, sized to the CPUs the process may use.
//!
//! With one CPU (a pod limited to one CPU, as `k8s/` sets them, or `taskset -c 0`), a
//! single-threaded runtime: every task on the main thread. `#[tokio::main]` would make
//! a worker thread beside the main one, and on one CPU the hand-offs between the two
//! cost more than the calls: bare tonic serves about 60k calls a second that way
//! against 100k on one thread, inventory 32k against 57k (`docs/benchmarks.md`). With
//! more CPUs, a worker per CPU (`TOKIO_WORKER_THREADS` overrides the count, as Tokio
//! reads it).

use std::future::Future;

/// Runs `main` to its end on the runtime this process should have.
pub fn block_on<F: Future>(main: F) -> F::Output {
    let one_cpu = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder
        .enable_all()
        .build()
        .expect("the Tokio runtime (its I/O driver and timer)");
    runtime.block_on(main)
}

/// The kind of runtime running the caller, for the "serving" log line:
/// `current_thread` or `multi_thread`.
pub fn flavor() -> &'static str {
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    }
}
