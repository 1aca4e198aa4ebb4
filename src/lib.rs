//! kube-jit: just-in-time, time-boxed Kubernetes access for AI agents and other
//! non-human identities. The binaries in `src/main.rs` and `src/bin/` only parse
//! arguments and call into this library.
//!
//! Decisions are pure modules (`policy`, `rbac`, `grant`, `durations`, `names`);
//! `controller` is where the cluster is touched; `client` is the requester's
//! side of it, for agents written in Rust.
#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod audit;
pub mod cli;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod durations;
pub mod error;
pub mod grant;
pub mod http;
pub mod leadership;
pub mod metrics;
pub mod names;
pub mod policy;
pub mod rbac;
pub mod telemetry;

pub use error::{Error, Result};
