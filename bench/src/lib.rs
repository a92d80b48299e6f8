//! The benchmark harness of `make bench`: what it measures and why is in
//! `docs/benchmarks.md`.
//!
//! - `baseline.rs`: `inventory.v1.InventoryService/GetProduct` on bare tonic, the ceiling.
//! - `loadgen.rs`: fixed-rate (open-loop) load timed from each request's intended send
//!   time, and closed-loop load for calls h2load cannot make (unique idempotency keys).
//! - `sink.rs`: an OTLP/gRPC trace receiver that only counts spans.
//! - `h2load.rs`: runs h2load (closed-loop throughput) and reads its summary.
//! - `procfs.rs`: a process's CPU time and memory, from `/proc`.
//! - `frame.rs`: gRPC's length-prefixed message framing, for h2load's request body.
//! - `report.rs`: the results table.
//!
//! The binaries: `baseline` (the bare server), `loadgen` (one fixed-rate run, by hand)
//! and `bench` (the driver `make bench` runs).
#![forbid(unsafe_code)]

pub mod baseline;
pub mod frame;
pub mod h2load;
pub mod loadgen;
pub mod procfs;
pub mod report;
pub mod sink;
