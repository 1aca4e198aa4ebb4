//! kube-jit: just-in-time, time-boxed Kubernetes access for AI agents and other
//! non-human identities. The binaries in `src/main.rs` and `src/bin/` only parse
//! arguments and call into this library.
#![forbid(unsafe_code)]

pub mod api;
pub mod durations;
