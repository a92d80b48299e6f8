//! The orders service's tests: its API with real inventory and payments servers
//! behind it, and the order flow with every service on PostgreSQL.
//!
//! One integration-test binary per crate, a module per subject: each binary links the
//! whole stack, so a new test goes into a module here rather than a new file in tests/.

mod api;
mod postgres;
