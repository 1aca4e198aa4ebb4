//! `kubectl-jit`: the kubectl plugin (`kubectl jit …`). Parses arguments and
//! hands over to `kube_jit::cli`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use kube_jit::cli;

/// Request, approve and inspect just-in-time access grants.
///
/// Installed on PATH as `kubectl-jit`, it runs as `kubectl jit`.
#[derive(Parser)]
#[command(name = "kubectl-jit", bin_name = "kubectl jit", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check offline whether policies would allow a request (exit 0 allowed, 1 denied, 2 bad input).
    ///
    /// Evaluates an AccessRequest against AccessPolicy files with the very code the
    /// operator runs; no cluster is needed. Use it in your policy repository's CI.
    ///
    /// Namespace label selectors can only match namespaces whose labels you give with
    /// --namespace-labels; live facts (existing namespaces, live grants, rate caps)
    /// are not known offline.
    ///
    /// Examples:
    ///   kubectl jit check --policy policies/ --request request.yaml
    ///   kubectl jit check -p read-only.yaml -p break-glass.yaml -r request.yaml -o json
    ///   kubectl jit check -p p.yaml -r r.yaml --agent agent.yaml --namespace-labels payments:tier=prod
    #[command(verbatim_doc_comment)]
    Check(cli::check::CheckArgs),
}

fn main() {
    let code = match Cli::parse().command {
        Command::Check(args) => cli::check::run(&args),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.code);
        }
    }
}
