//! `kubectl-jit`: the kubectl plugin (`kubectl jit …`). Parses arguments and
//! hands over to `kube_jit::cli`.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use kube_jit::cli::{self, CliError};

/// Request, approve and inspect just-in-time access grants.
///
/// Installed on PATH as `kubectl-jit`, it runs as `kubectl jit`. It uses your
/// kubeconfig (KUBECONFIG) and asks the API server who you are.
#[derive(Parser)]
#[command(name = "kubectl-jit", bin_name = "kubectl jit", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Ask for access as yourself; optionally wait and get a token or kubeconfig for the grant.
    ///
    /// Examples:
    ///   kubectl jit request --cluster-role view -n payments --for 15m --purpose "INC-42: debug" --wait
    ///   kubectl jit request --rules rules.yaml -n staging --for 30m --purpose "deploy 1.4" -o kubeconfig > grant.kubeconfig
    ///   KUBECONFIG=grant.kubeconfig kubectl get pods -n staging
    #[command(verbatim_doc_comment)]
    Request(cli::request::RequestArgs),
    /// List AccessRequests (state, agent, role, namespaces, time left, purpose).
    ///
    /// Examples:
    ///   kubectl jit get
    ///   kubectl jit get -A --watch
    ///   kubectl jit get deploy-1 -o yaml
    #[command(verbatim_doc_comment, alias = "list")]
    Get(cli::get::GetArgs),
    /// Show a request in full: conditions, policies tried, approvals, chain, objects, Events.
    ///
    /// Example: kubectl jit describe deploy-1 -n agents
    #[command(verbatim_doc_comment)]
    Describe(cli::explain::ExplainArgs),
    /// Say why a request is pending or denied: each policy tried and its reason.
    ///
    /// Example: kubectl jit explain deploy-1
    #[command(verbatim_doc_comment)]
    Explain(cli::explain::ExplainArgs),
    /// Approve a request (counts only if the matched policy names you as an approver).
    ///
    /// Example: kubectl jit approve deploy-1 -n agents --reason "change CHG-7 approved"
    #[command(verbatim_doc_comment)]
    Approve(cli::approve::DecisionArgs),
    /// Deny a request; one authorized denial ends it.
    ///
    /// Example: kubectl jit deny deploy-1 -n agents --reason "not during the freeze"
    #[command(verbatim_doc_comment)]
    Deny(cli::approve::DecisionArgs),
    /// End a grant now (cannot be undone).
    ///
    /// Example: kubectl jit revoke deploy-1 -n agents
    #[command(verbatim_doc_comment)]
    Revoke(cli::revoke::RevokeArgs),
    /// Ask for more time on a live grant you requested; waits for the operator's answer.
    ///
    /// Granted only where the matched policy allows extension (spec.extension), at
    /// most maxExtensions times, and never past the policy's maximum duration counted
    /// from the grant's start (nor past the parent grant of a delegated one). Exit 0
    /// extended, 1 refused (the message says why), 2 bad input, 3 cluster error.
    ///
    /// Example: kubectl jit extend deploy-1 -n agents --by 15m
    #[command(verbatim_doc_comment)]
    Extend(cli::extend::ExtendArgs),
    /// Who you are to the API server, the AgentIdentity that registers you, your live grants.
    Whoami(cli::whoami::WhoamiArgs),
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

fn main() {
    let command = Cli::parse().command;
    let result = match command {
        Command::Check(args) => cli::check::run(&args),
        cluster => match tokio::runtime::Runtime::new() {
            Ok(rt) => rt.block_on(run(cluster)),
            Err(e) => Err(CliError::cluster(format!("starting the async runtime: {e}"))),
        },
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.code);
        }
    }
}

async fn run(command: Command) -> Result<i32, CliError> {
    match command {
        Command::Request(a) => cli::request::run(&a).await,
        Command::Get(a) => cli::get::run(&a).await,
        Command::Describe(a) => cli::explain::run(&a, true).await,
        Command::Explain(a) => cli::explain::run(&a, false).await,
        Command::Approve(a) => cli::approve::run(&a, true).await,
        Command::Deny(a) => cli::approve::run(&a, false).await,
        Command::Revoke(a) => cli::revoke::run(&a).await,
        Command::Extend(a) => cli::extend::run(&a).await,
        Command::Whoami(a) => cli::whoami::run(&a).await,
        Command::Check(a) => cli::check::run(&a),
        Command::Inventory(a) => cli::inventory::run(&a).await,
    }
}
