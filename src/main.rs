//! `kube-jit`: the operator. Parses arguments and hands over to the library.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

/// Just-in-time, time-boxed Kubernetes access for AI agents and other non-human identities.
///
/// kube-jit watches AccessRequests, checks them against AccessPolicies, and turns
/// approved ones into short-lived ServiceAccounts and RoleBindings that it revokes
/// on expiry, on demand, and after crashes.
#[derive(Parser)]
#[command(name = "kube-jit", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print every kube-jit CustomResourceDefinition as YAML.
    ///
    /// Example: kube-jit crds | kubectl apply -f -
    Crds,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", kube_jit::api::crds_yaml()?),
    }
    Ok(())
}
