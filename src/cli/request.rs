//! `kubectl jit request`: ask for access as yourself (the API server says who
//! you are), optionally wait until it is granted, and hand over the grant as a
//! token or a ready kubeconfig.

use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::json;

use super::session::Session;
use super::{CliError, output};
use crate::api::{AccessRequest, Phase};

/// Options of `kubectl jit request`.
#[derive(clap::Args, Debug)]
pub struct RequestArgs {
    /// Name of the AccessRequest (default: generated from your name and the time).
    pub name: Option<String>,
    /// Bind this ClusterRole in the target namespaces.
    #[arg(long, group = "what", value_name = "NAME")]
    pub cluster_role: Option<String>,
    /// Bind the Role of this name in each target namespace.
    #[arg(long, group = "what", value_name = "NAME")]
    pub role: Option<String>,
    /// Ask for inline RBAC rules (a YAML list of PolicyRules).
    #[arg(long, group = "what", value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Target namespaces, comma-separated.
    #[arg(long = "namespace", short = 'n', value_delimiter = ',', required = true, value_name = "NS[,NS…]")]
    pub namespaces: Vec<String>,
    /// How long: 90s, 15m, 1h30m (default: the policy's default).
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,
    /// Why you need it; recorded on every object and audit line.
    #[arg(long)]
    pub purpose: Option<String>,
    /// Ask on behalf of this AgentIdentity (you must be its ServiceAccount, or hold a delegating grant).
    #[arg(long)]
    pub for_agent: Option<String>,
    /// Namespace to create the request in (default: your ServiceAccount's, or the kubeconfig's).
    #[arg(long = "in", value_name = "NS")]
    pub request_namespace: Option<String>,
    /// Wait until the request is granted or refused, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub timeout: String,
    /// What to print: the name, the object, a token for the grant, or a kubeconfig using it.
    #[arg(long, short = 'o', value_enum, default_value_t = RequestOutput::Name)]
    pub output: RequestOutput,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestOutput {
    Name,
    Yaml,
    Json,
    Token,
    Kubeconfig,
}

pub async fn run(args: &RequestArgs) -> Result<i32, CliError> {
    let session = Session::connect().await?;
    let ns = session.request_namespace(args.request_namespace.as_deref());
    let mut spec = json!({
        "requester": {"user": session.user},
        "namespaces": args.namespaces,
    });
    match (&args.cluster_role, &args.role, &args.rules) {
        (Some(r), _, _) => spec["role"] = json!({"kind": "ClusterRole", "name": r}),
        (_, Some(r), _) => spec["role"] = json!({"kind": "Role", "name": r}),
        (_, _, Some(file)) => {
            let text =
                std::fs::read_to_string(file).map_err(|e| CliError::bad_input(format!("{}: {e}", file.display())))?;
            let rules: serde_json::Value = serde_yaml::from_str(&text)
                .map_err(|e| CliError::bad_input(format!("{}: not a YAML list of rules: {e}", file.display())))?;
            spec["rules"] = rules;
        }
        _ => return Err(CliError::bad_input("say what you need: --cluster-role, --role or --rules")),
    }
    for (key, value) in [("duration", &args.duration), ("purpose", &args.purpose), ("forAgent", &args.for_agent)] {
        if let Some(v) = value {
            spec[key] = json!(v);
        }
    }
    // Without a name, the API server picks a unique one (two requests in the same second never collide).
    let metadata = match &args.name {
        Some(name) => json!({"name": name, "namespace": ns}),
        None => json!({"generateName": name_prefix(&session.user), "namespace": ns}),
    };
    let request: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": metadata, "spec": spec}))
    .map_err(|e| CliError::bad_input(format!("invalid request: {e}")))?;
    let api: Api<AccessRequest> = Api::namespaced(session.client.clone(), &ns);
    let mut created = api.create(&PostParams::default(), &request).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let wants_grant = matches!(args.output, RequestOutput::Token | RequestOutput::Kubeconfig);
    if args.wait || wants_grant {
        let timeout =
            crate::durations::parse(&args.timeout).map_err(|e| CliError::bad_input(format!("--timeout: {e}")))?;
        created = wait(&api, &name, timeout).await?;
    }
    match args.output {
        RequestOutput::Name => println!("accessrequest.kubejit.io/{name}"),
        RequestOutput::Yaml => print!("{}", output::structured(&created, output::Format::Yaml)),
        RequestOutput::Json => print!("{}", output::structured(&created, output::Format::Json)),
        RequestOutput::Token => println!("{}", mint(&session, &created).await?),
        RequestOutput::Kubeconfig => print!("{}", kubeconfig(&session, &mint(&session, &created).await?)?),
    }
    Ok(super::exit::OK)
}

/// `<who>-`, from the last part of the username, for `generateName`.
fn name_prefix(user: &str) -> String {
    let who: String = user
        .rsplit(':')
        .next()
        .unwrap_or("req")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(30)
        .collect::<String>()
        .to_lowercase();
    format!("{}-", if who.is_empty() { "req".to_string() } else { who })
}

/// Waits for Granted; a refusal is an error saying why. Progress goes to stderr.
pub async fn wait(api: &Api<AccessRequest>, name: &str, timeout: Duration) -> Result<AccessRequest, CliError> {
    let start = std::time::Instant::now();
    let mut last = String::new();
    loop {
        let r = api.get(name).await?;
        let status = r.status.clone().unwrap_or_default();
        let latest = status.conditions.iter().max_by_key(|c| c.last_transition_time.0);
        let line = format!("{:?}{}", status.phase, latest.map(|c| format!(": {}", c.message)).unwrap_or_default());
        if line != last {
            eprintln!("{name}: {line}");
            last = line;
        }
        match status.phase {
            Phase::Granted => return Ok(r),
            p if p.is_terminal() => {
                return Err(CliError::denied(format!(
                    "{name} ended {p:?}: {}",
                    latest.map(|c| c.message.as_str()).unwrap_or("")
                )));
            }
            _ => {}
        }
        if start.elapsed() > timeout {
            return Err(CliError::denied(format!(
                "{name} not granted after {}: {last}",
                crate::durations::format(timeout)
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Mints a token for the grant's ServiceAccount (only the requester may), with
/// the same retry an agent gets while the API server's authorizer catches up.
pub async fn mint(session: &Session, request: &AccessRequest) -> Result<String, CliError> {
    match crate::client::mint_grant_token(&session.client, request, Duration::from_secs(600)).await {
        Ok(token) => Ok(token),
        Err(crate::Error::Kube(e)) => Err(e.into()),
        Err(crate::Error::MissingField(_)) => Err(CliError::cluster("the request has no grant identity yet")),
        Err(other) => Err(CliError::cluster(other.to_string())),
    }
}

/// A kubeconfig for the same cluster that authenticates with `token` only.
fn kubeconfig(session: &Session, token: &str) -> Result<String, CliError> {
    let server = session.config.cluster_url.to_string();
    let ca = session.config.root_cert.as_ref().and_then(|certs| certs.first()).map(|der| {
        use base64::Engine;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            base64::engine::general_purpose::STANDARD.encode(der)
        );
        base64::engine::general_purpose::STANDARD.encode(pem)
    });
    let cluster = match ca {
        Some(ca) => json!({"server": server, "certificate-authority-data": ca}),
        None => json!({"server": server}),
    };
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "jit", "cluster": cluster}],
        "users": [{"name": "jit-grant", "user": {"token": token}}],
        "contexts": [{"name": "jit", "context": {"cluster": "jit", "user": "jit-grant"}}],
        "current-context": "jit",
    });
    serde_yaml::to_string(&config).map_err(|e| CliError::cluster(e.to_string()))
}
