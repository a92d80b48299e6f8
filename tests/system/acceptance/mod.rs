//! The machinery of `tests/system/acceptance.rs`.
//!
//! - `tools`: finding the pinned tools (`scripts/tools.sh`) and running them;
//! - `calls`: one RPC with grpcurl or `buf curl`, and reading its output back;
//! - `json`: comparing JSON output with expectations;
//! - `schema`: services, RPCs and fields, from the descriptor set of `proto/`;
//! - `specs`: what each service must answer;
//! - `harness`: the stack on free ports, and running the specs against it;
//! - `cookbook`: the docs' marked examples (the grpcurl cookbook, the README's curl calls);
//! - `docs`: the links and paths that README.md and docs/*.md name;
//! - `web`: gRPC-Web calls with Connect's client for Node, and CORS preflights.

pub(crate) mod calls;
pub(crate) mod cookbook;
pub(crate) mod docs;
pub(crate) mod harness;
pub(crate) mod json;
pub(crate) mod schema;
pub(crate) mod specs;
pub(crate) mod tools;
pub(crate) mod web;
