//! `kube-jit`: the operator. Parses arguments and hands over to the library.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};

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
    /// Run the operator against the cluster of the current kubeconfig (or in-cluster config).
    ///
    /// On start it first revokes every grant that expired while no operator ran, and
    /// deletes managed objects whose grant is gone; then it reconciles AccessRequests.
    ///
    /// Examples:
    ///   kube-jit run
    ///   KUBECONFIG=~/.kube/staging kube-jit run --log-level kube_jit=debug,info
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Print every kube-jit CustomResourceDefinition as YAML.
    ///
    /// Example: kube-jit crds | kubectl apply --server-side -f -
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Log filter: a level (error, warn, info, debug, trace) or tracing directives.
    #[arg(long, env = "KUBE_JIT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: JSON lines (for collectors) or text (for people).
    #[arg(long, env = "KUBE_JIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// How often to look for managed objects that outlived their grant, in seconds.
    #[arg(long, env = "KUBE_JIT_SWEEP_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    sweep_interval: u64,
    /// Trust domain of default SPIFFE IDs: spiffe://<trust-domain>/ns/<namespace>/sa/<serviceaccount>.
    #[arg(long, env = "KUBE_JIT_TRUST_DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", kube_jit::api::crds_yaml()?),
        Command::Run(args) => {
            kube_jit::telemetry::init(&args.log_level, matches!(args.log_format, LogFormat::Json));
            let client = kube::Client::try_default().await.context("connecting to the cluster")?;
            let settings = kube_jit::controller::Settings {
                sweep_interval: Duration::from_secs(args.sweep_interval),
                trust_domain: args.trust_domain,
            };
            kube_jit::controller::run(client, settings).await?;
        }
    }
    Ok(())
}
