//! `kubectl-jit`: the kubectl plugin (`kubectl jit …`).
#![forbid(unsafe_code)]

use clap::Parser;

/// Request, approve and inspect just-in-time access grants.
///
/// Installed on PATH as `kubectl-jit`, it runs as `kubectl jit`.
#[derive(Parser)]
#[command(name = "kubectl-jit", bin_name = "kubectl jit", version, about, long_about)]
struct Cli {}

fn main() {
    Cli::parse();
}
