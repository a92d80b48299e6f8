//! The tests of `shared` against real servers: the resilient channel, and
//! `shared::events` on a real `nats-server`.
//!
//! One integration-test binary per crate, a module per subject: each binary links the
//! whole stack, so a new test goes into a module here rather than a new file in tests/.

mod client;
mod jetstream;
