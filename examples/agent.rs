//! An example agent in Rust: asks kube-jit for a role in one namespace, waits
//! for the grant, lists pods there with a token minted for the grant identity,
//! then revokes the grant early and checks the token no longer works.
//!
//!   KUBECONFIG=agent.kubeconfig cargo run --example agent -- \
//!     --target-namespace payments --purpose "find why the rollout fails"
//!
//! The kubeconfig (or the in-cluster ServiceAccount token) authenticates as the
//! agent's own ServiceAccount, which may only ask (examples/rbac/requester.yaml).
//! With `--until-expiry` it keeps the grant to its end instead and reports how
//! long after `status.grant.expiresAt` the API server first refused it; with
//! `--delivery requester-service-account` the rights come to its own token;
//! with `--hold` it keeps using the grant until it stops working.
//! Exit status: 0 done; 1 denied, failed, timed out or any other error.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Client, Config, ResourceExt};
use kube_jit::api::access_request::{Delivery, DeliveryMode, Requester, RoleKind, RoleRef};
use kube_jit::api::{AccessRequest, AccessRequestSpec, Phase};
use kube_jit::client;

#[derive(Parser, Debug)]
#[command(about = "Ask kube-jit for time-boxed access, use it to list pods, and give it back")]
struct Args {
    /// Namespace of the agent's ServiceAccount; the AccessRequest is created there.
    #[arg(long, default_value = "agents")]
    namespace: String,
    /// Namespace to read pods in.
    #[arg(long)]
    target_namespace: String,
    /// ClusterRole to ask for.
    #[arg(long, default_value = "view")]
    role: String,
    /// How long the grant should last (90s, 15m, 1h30m).
    #[arg(long, default_value = "5m")]
    duration: String,
    /// Why the access is needed; recorded on every object and audit line.
    #[arg(long)]
    purpose: String,
    /// Seconds to wait for a decision before giving up.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Keep the grant until it expires (rather than revoking it early), then
    /// report when the API server first refused it.
    #[arg(long)]
    until_expiry: bool,
    /// How the rights arrive: on a fresh ServiceAccount per grant
    /// (`ephemeral-service-account`), or on the agent's own ServiceAccount
    /// (`requester-service-account`; the policy must allow it).
    #[arg(long, value_enum, default_value = "ephemeral-service-account")]
    delivery: DeliveryArg,
    /// Ask for this AgentIdentity (in `--namespace`) rather than for the
    /// ServiceAccount itself. An agent pinned to its workload
    /// (`spec.workload`) must run as a matching Pod: its pod-bound token is the proof.
    #[arg(long)]
    for_agent: Option<String>,
    /// Keep the grant and use it until it ends (expiry, revocation, or the
    /// Pod's end for a workload-bound grant) instead of revoking it early;
    /// says when it stopped working.
    #[arg(long)]
    hold: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum DeliveryArg {
    EphemeralServiceAccount,
    RequesterServiceAccount,
}

fn say(message: impl std::fmt::Display) {
    println!("agent: {message}");
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    // KUBECONFIG, else the in-cluster ServiceAccount token.
    let config = Config::infer().await.context("no kubeconfig or in-cluster credentials")?;
    let agent = Client::try_from(config.clone())?;
    let me = client::whoami(&agent).await.context("asking the API server who we are")?;
    say(format_args!("authenticated as {me}"));

    let requests: Api<AccessRequest> = Api::namespaced(agent.clone(), &args.namespace);
    let request = AccessRequest {
        // generateName: each run gets a fresh request; the spec is immutable anyway.
        metadata: ObjectMeta { generate_name: Some("agent-".into()), ..ObjectMeta::default() },
        spec: AccessRequestSpec {
            // Admission refuses a requester other than the authenticated creator.
            requester: Requester { user: me, ..Requester::default() },
            for_agent: args.for_agent.clone(),
            role: Some(RoleRef { kind: RoleKind::ClusterRole, name: args.role.clone() }),
            rules: None,
            namespaces: vec![args.target_namespace.clone()],
            cluster_wide: false,
            duration: Some(args.duration.clone()),
            purpose: Some(args.purpose.clone()),
            delivery: Delivery {
                mode: match args.delivery {
                    DeliveryArg::EphemeralServiceAccount => DeliveryMode::EphemeralServiceAccount,
                    DeliveryArg::RequesterServiceAccount => DeliveryMode::RequesterServiceAccount,
                },
                ..Delivery::default()
            },
            extensions: Vec::new(),
            revoke: false,
        },
        status: None,
    };
    let asked = Instant::now();
    let created = requests.create(&PostParams::default(), &request).await.context("creating the AccessRequest")?;
    let name = created.name_any();
    say(format_args!(
        "requested {}: ClusterRole/{} in {} for {} ({:?})",
        client::describe(&created),
        args.role,
        args.target_namespace,
        args.duration,
        args.purpose
    ));

    say(format_args!("waiting up to {}s for a decision", args.timeout));
    let granted =
        match client::wait_for_phase(&requests, &name, Phase::Granted, Duration::from_secs(args.timeout)).await {
            Ok(granted) => granted,
            Err(e) => {
                // A request that is still pending could be granted after we left:
                // withdraw it so no grant outlives the agent.
                if matches!(e, client::WaitError::Timeout { .. }) && client::revoke(&requests, &name).await.is_ok() {
                    say(format_args!("withdrew {name}"));
                }
                return Err(e.into());
            }
        };
    let grant = granted.status.as_ref().and_then(|s| s.grant.as_ref()).context("Granted without status.grant")?;
    let sa = grant.service_account.as_ref().context("Granted without status.grant.serviceAccount")?;
    let expires_at = grant.expires_at.as_ref().map(|t| t.0).context("Granted without status.grant.expiresAt")?;
    say(format_args!("granted: grant {} as {}/{} until {expires_at}", grant.id, sa.namespace, sa.name));
    if let Some(w) = granted.status.as_ref().and_then(|s| s.workload.as_ref()) {
        say(format_args!(
            "bound to this Pod: {}/{} (uid {}) on {}, {}",
            w.namespace, w.pod, w.pod_uid, w.node, w.spiffe_id
        ));
    }

    if args.hold {
        let token = use_grant(&agent, &config, &granted, &args.target_namespace).await?;
        let grant_client = client::client_with_token(&config, &token)?;
        say("holding the grant");
        return confirm_expired(&grant_client, &args.target_namespace, expires_at, "the grant token").await;
    }

    if args.until_expiry {
        // The rights are on the agent's own token, or on one minted for the grant identity.
        let (grant_client, how) = match args.delivery {
            DeliveryArg::RequesterServiceAccount => (agent.clone(), "the agent's own token"),
            DeliveryArg::EphemeralServiceAccount => {
                let token = client::mint_grant_token(&agent, &granted, Duration::from_secs(600))
                    .await
                    .context("minting a token for the grant identity")?;
                (client::client_with_token(&config, &token)?, "the grant token")
            }
        };
        let pods = list_pods(&grant_client, &args.target_namespace).await?;
        say(format_args!(
            "request → first call: {} ms (with {how}: {} pod(s) in {})",
            asked.elapsed().as_millis(),
            pods.len(),
            args.target_namespace
        ));
        return confirm_expired(&grant_client, &args.target_namespace, expires_at, how).await;
    }

    // Whatever happens with the grant, give it back before exiting.
    let used = use_grant(&agent, &config, &granted, &args.target_namespace).await;
    say(format_args!("revoking {name} early"));
    client::revoke(&requests, &name).await.context("setting spec.revoke")?;
    let token = used?;
    let ended = match client::wait_for_phase(&requests, &name, Phase::Revoked, Duration::from_secs(30)).await {
        Ok(revoked) => revoked,
        // As good as revoked: the grant ran out while we worked.
        Err(client::WaitError::Ended { phase: Phase::Expired, request, .. }) => *request,
        Err(e) => return Err(e.into()),
    };
    say(format_args!("request is {:?}: {}", client::phase(&ended), client::explain(&ended)));
    confirm_revoked(&client::client_with_token(&config, &token)?, &args.target_namespace).await
}

/// Mints the grant token and lists pods with it; returns the token for the
/// check after revocation.
async fn use_grant(agent: &Client, config: &Config, granted: &AccessRequest, ns: &str) -> anyhow::Result<String> {
    let token = client::mint_grant_token(agent, granted, Duration::from_secs(600))
        .await
        .context("minting a token for the grant identity")?;
    say("minted a token for the grant identity");
    let grant = client::client_with_token(config, &token)?;
    let pods = list_pods(&grant, ns).await?;
    let listed: Vec<String> = pods
        .iter()
        .map(|p| format!("{} ({})", p.name_any(), p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default()))
        .collect();
    let listed = if listed.is_empty() { String::new() } else { format!(": {}", listed.join(", ")) };
    say(format_args!("{} pod(s) in {ns}{listed}", pods.len()));
    Ok(token)
}

/// Lists pods, retrying 403 for a few seconds: the API server's RBAC cache can
/// lag the new RoleBinding by a moment after the request turns Granted.
async fn list_pods(grant: &Client, ns: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(grant.clone(), ns);
    let start = Instant::now();
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(list) => return Ok(list.items),
            Err(kube::Error::Api(s)) if s.code == 403 && start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e).context(format!("listing pods in {ns} with the grant token")),
        }
    }
}

/// Lists pods every 10 ms until the API server refuses (403 once the bindings
/// are gone, 401 once the identity is), and says how long after `expires_at`
/// that was. Gives up 60 s after `expires_at`.
async fn confirm_expired(grant: &Client, ns: &str, expires_at: jiff::Timestamp, how: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(grant.clone(), ns);
    loop {
        let result = pods.list(&ListParams::default().limit(1)).await;
        let now = jiff::Timestamp::now();
        match result {
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                let after = now.duration_since(expires_at).as_millis();
                if after < 0 {
                    // Ended early: revoked, or (bound to this Pod) the Pod stopped matching.
                    say(format_args!("grant ended {} ms before expiresAt ({how}, HTTP {})", -after, s.code));
                } else {
                    say(format_args!("expiresAt → refused: {after} ms ({how}, HTTP {})", s.code));
                }
                return Ok(());
            }
            Ok(_) if now < expires_at + jiff::SignedDuration::from_secs(60) => {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Ok(_) => bail!("{how} still lists pods in {ns} 60 s after expiresAt {expires_at}"),
            Err(e) => return Err(e).context("checking the grant after expiry"),
        }
    }
}

/// Checks that the grant token can no longer list pods (403 once the bindings
/// are gone, 401 once the identity is).
async fn confirm_revoked(grant: &Client, ns: &str) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::namespaced(grant.clone(), ns);
    let start = Instant::now();
    loop {
        match pods.list(&ListParams::default().limit(1)).await {
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                say(format_args!("confirmed: the grant token can no longer list pods in {ns} (HTTP {})", s.code));
                return Ok(());
            }
            Ok(_) if start.elapsed() < Duration::from_secs(10) => tokio::time::sleep(Duration::from_millis(100)).await,
            Ok(_) => bail!("the grant token still lists pods in {ns} 10s after revocation"),
            Err(e) => return Err(e).context("checking the grant token after revocation"),
        }
    }
}
