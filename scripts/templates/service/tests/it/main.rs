//! The {{name}} service's tests: its API on a real server in-process.
//!
//! One integration-test binary per crate, a module per subject: each binary links the
//! whole stack, so a new test goes into a module here rather than a new file in tests/.

mod api;
