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
    /// List every ServiceAccount with its standing rights, legacy tokens and a risk class.
    ///
    /// The non-human identity inventory of the live cluster (current kubeconfig):
    /// for each ServiceAccount, the RoleBindings and ClusterRoleBindings that give it
    /// rights without asking (directly or through system:serviceaccounts groups;
    /// kube-jit's own and Kubernetes' bootstrap bindings aside), legacy long-lived
    /// token Secrets and when they were last used, the AgentIdentity registering it,
    /// and whether kube-jit manages it.
    ///
    /// Risk classes, from the rules of the bound roles:
    ///   critical  cluster-admin, reading Secrets, any wildcard verb or resource,
    ///             escalate/bind/impersonate
    ///   high      standing write verbs, or a legacy long-lived token
    ///   medium    standing read-only RBAC
    ///   low       nothing standing
    ///   managed   kube-jit's time-boxed grant identities
    ///
    /// Needs list on serviceaccounts and secrets (metadata only; token values are
    /// never read) in the namespace(s), and on roles, rolebindings, clusterroles and
    /// clusterrolebindings cluster-wide (a binding anywhere can name a ServiceAccount).
    ///
    /// Examples:
    ///   kubectl jit inventory
    ///   kubectl jit inventory -n payments
    ///   kubectl jit inventory -A -o json | jq '.serviceAccounts[] | select(.risk == "critical")'
    ///   kubectl jit inventory -A --no-headers | awk '$3 == "high"'
    #[command(verbatim_doc_comment)]
    Inventory(cli::inventory::InventoryArgs),
}

/// Runs a command that talks to the cluster; offline commands stay synchronous.
fn on_cluster(command: impl std::future::Future<Output = Result<i32, cli::CliError>>) -> Result<i32, cli::CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| cli::CliError::cluster(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(command)
}

fn main() {
    let code = match Cli::parse().command {
        Command::Check(args) => cli::check::run(&args),
        Command::Inventory(args) => on_cluster(cli::inventory::run(&args)),
    };
    match code {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.code);
        }
    }
}
