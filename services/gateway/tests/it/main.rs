//! The gateway's tests: the REST API over real HTTP in front of the real services,
//! all in-process, and the `gateway` binary as Kubernetes runs it.
//!
//! One integration-test binary per crate, a module per subject: each binary links the
//! whole stack, so a new test goes into a module here rather than a new file in tests/.

mod api;
mod auth;
mod binary;
mod notifications; // remove-service: notifications
mod support;
