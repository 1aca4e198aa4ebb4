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
    /// On start (with --leader-elect: on taking the Lease over) it first revokes every
    /// grant that expired while no operator acted, and deletes its own objects whose
    /// grant is gone; then it reconciles AccessRequests. Grant identities live in the
    /// grants namespace (kube-jit-grants; deploy/operator-rbac.yaml and the chart
    /// create it). SIGTERM or Ctrl-C: no new work, reconciles in flight finish, the
    /// Lease is released, exit 0.
    ///
    /// Examples:
    ///   kube-jit run
    ///   KUBECONFIG=~/.kube/staging kube-jit run --log-level kube_jit=debug,info
    ///   kube-jit run --leader-elect --lease-duration 15 --http-addr 0.0.0.0:8080
    ///   kube-jit run --grants-namespace platform-grants --sweep-interval 10
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Revoke every grant and remove everything kube-jit made, before kube-jit is removed.
    ///
    /// Ends every AccessRequest (grants revoked: their bindings, ServiceAccounts,
    /// token Secrets and roles deleted; phase Revoked, reason Uninstalled; an audit
    /// line each), deletes any object of kube-jit's that is left (recorded by a
    /// grant, or in the grants namespace; others labelled
    /// app.kubernetes.io/managed-by=kube-jit are named and left alone), and
    /// removes kube-jit's finalizer from every AccessRequest so deleting the
    /// CRDs cannot hang without an operator. Requests it ended carry
    /// the annotation kubejit.io/uninstalled; a running operator leaves them alone.
    /// Safe to run again. Needs only the operator's RBAC (deploy/operator-rbac.yaml).
    /// With --stop-deployment, first scales the operator's Deployment to 0 and
    /// waits for its Pods to exit, so nothing is granted after the sweep (Helm's
    /// pre-delete hook does; it needs get and patch on that deployments/scale and
    /// list on pods there). Exits 1, listing what is left, if anything could not
    /// be removed.
    ///
    /// Examples:
    ///   kube-jit uninstall
    ///   kube-jit uninstall --stop-deployment kube-jit-system/kube-jit --stop-timeout 2m
    ///   KUBECONFIG=~/.kube/prod kube-jit uninstall && kubectl delete -f crds/
    #[command(verbatim_doc_comment)]
    Uninstall(UninstallArgs),
    /// Print every kube-jit CustomResourceDefinition as YAML.
    ///
    /// Example: kube-jit crds | kubectl apply --server-side -f -
    Crds,
}

#[derive(clap::Args)]
struct UninstallArgs {
    /// Log filter for the audit lines and warnings (on stderr; progress goes to stdout).
    #[arg(long, env = "KUBE_JIT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format: JSON lines (so audit lines reach the same collector as the operator's) or text.
    #[arg(long, env = "KUBE_JIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    log_format: LogFormat,
    /// Namespace where grant identities live (as given to `kube-jit run`).
    #[arg(long, env = "KUBE_JIT_GRANTS_NAMESPACE", default_value = kube_jit::names::DEFAULT_GRANTS_NAMESPACE)]
    grants_namespace: String,
    /// The operator's Deployment, as NAMESPACE/NAME: scaled to 0 replicas and
    /// waited for before anything else, so no grant is made after the sweep.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    stop_deployment: Option<String>,
    /// How long to wait for the stopped Deployment's Pods to exit (30s, 2m).
    #[arg(long, default_value = "2m", value_parser = kube_jit::durations::parse)]
    stop_timeout: std::time::Duration,
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
    /// Act only while holding a coordination.k8s.io/v1 Lease, so that of several
    /// replicas exactly one acts; the others keep their caches synced and wait.
    #[arg(long, env = "KUBE_JIT_LEADER_ELECT")]
    leader_elect: bool,
    /// Name of the Lease (with --leader-elect).
    #[arg(long, env = "KUBE_JIT_LEASE_NAME", default_value = "kube-jit")]
    lease_name: String,
    /// Namespace of the Lease (with --leader-elect) [default: $POD_NAMESPACE, else kube-jit-system].
    #[arg(long, env = "KUBE_JIT_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds a Lease lasts unrenewed: a standby takes over within this after the leader dies.
    #[arg(long, env = "KUBE_JIT_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=3600))]
    lease_duration: u64,
    /// Address of /metrics (OpenMetrics), /healthz (alive) and /readyz (caches
    /// synced; a synced standby waiting for the Lease is ready too). Empty: none.
    #[arg(long, env = "KUBE_JIT_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: String,
    /// Audiences (comma-separated) that tokens for grant identities may carry.
    /// Admission refuses any other. [default: the API server's ServiceAccount
    /// issuer, its default audience; set this if the API server runs with --api-audiences]
    #[arg(long, env = "KUBE_JIT_TOKEN_AUDIENCES", value_delimiter = ',')]
    token_audiences: Vec<String>,
    /// Namespace where grant identities live: their ServiceAccounts, the
    /// requester's right to mint tokens, token Secrets. It must exist, and no
    /// tenant may hold rights in it (the chart creates it with a quota of no Pods).
    #[arg(long, env = "KUBE_JIT_GRANTS_NAMESPACE", default_value = kube_jit::names::DEFAULT_GRANTS_NAMESPACE)]
    grants_namespace: String,
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
            let http_addr = match args.http_addr.trim() {
                "" => None,
                addr => Some(addr.parse().with_context(|| format!("--http-addr {addr}"))?),
            };
            let identity = kube_jit::leadership::default_identity();
            let leader_election = args.leader_elect.then(|| kube_jit::leadership::LeaseSettings {
                name: args.lease_name,
                namespace: args
                    .lease_namespace
                    .or_else(|| std::env::var("POD_NAMESPACE").ok().filter(|ns| !ns.is_empty()))
                    .unwrap_or_else(|| "kube-jit-system".into()),
                identity: identity.clone(),
                duration_secs: args.lease_duration,
                fence: kube_jit::leadership::Fence::default(),
            });
            let config = kube::Config::infer().await.context("reading the cluster's address and credentials")?;
            let fence = leader_election.as_ref().map(|l| l.fence.clone());
            let client = kube_jit::controller::api_client::operator_client(config, &identity, fence)
                .context("connecting to the cluster")?;
            let settings = kube_jit::controller::Settings {
                sweep_interval: Duration::from_secs(args.sweep_interval),
                trust_domain: args.trust_domain,
                leader_election,
                http_addr,
                token_audiences: args.token_audiences.into_iter().filter(|a| !a.is_empty()).collect(),
                grants_namespace: args.grants_namespace,
            };
            kube_jit::controller::run(client, settings).await?;
        }
        Command::Uninstall(args) => {
            kube_jit::telemetry::init(&args.log_level, matches!(args.log_format, LogFormat::Json));
            let client = kube::Client::try_default().await.context("connecting to the cluster")?;
            if let Some(deployment) = &args.stop_deployment {
                let (namespace, name) = deployment
                    .split_once('/')
                    .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
                    .context("--stop-deployment must be NAMESPACE/NAME")?;
                kube_jit::controller::uninstall::stop_deployment(
                    &client,
                    namespace,
                    name,
                    args.stop_timeout,
                    &|line| println!("{line}"),
                )
                .await
                .with_context(|| format!("stopping the operator ({deployment}) before the sweep"))?;
            }
            let report =
                kube_jit::controller::uninstall::uninstall(&client, &args.grants_namespace, &|line| println!("{line}"))
                    .await
                    .context("uninstalling")?;
            println!(
                "requests ended: {}, grants revoked: {}, objects deleted: {}, finalizers removed: {}",
                report.requests_ended, report.grants_revoked, report.objects_deleted, report.finalizers_removed
            );
            if !report.failures.is_empty() {
                for failure in &report.failures {
                    eprintln!("not removed: {failure}");
                }
                anyhow::bail!("{} thing(s) could not be removed (listed above)", report.failures.len());
            }
        }
    }
    Ok(())
}
