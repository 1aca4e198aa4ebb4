//! `kubectl jit check`: evaluates a request against policy files offline,
//! with the very code the operator runs, so policy authors can test policies
//! in their own CI (as they use `kyverno apply` or `conftest`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{CliError, exit};
use crate::api::access_request::PolicyEvaluation;
use crate::api::{AccessPolicy, AccessRequest, AgentIdentity};
use crate::durations;
use crate::policy::{ClusterFacts, evaluate};

/// Options of `kubectl jit check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// AccessPolicy YAML files or directories (repeatable; multi-document files allowed).
    #[arg(long = "policy", short = 'p', required = true, value_name = "FILE")]
    pub policies: Vec<PathBuf>,
    /// The AccessRequest YAML file.
    #[arg(long, short = 'r', value_name = "FILE")]
    pub request: PathBuf,
    /// The AgentIdentity named by spec.forAgent, if any.
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,
    /// Labels of a target namespace, for policies that select namespaces by label:
    /// NAMESPACE:key=value[,key=value] (repeatable).
    #[arg(long = "namespace-labels", value_name = "NS:K=V,...")]
    pub namespace_labels: Vec<String>,
    /// Namespace of the request when its metadata has none.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// The verdict, as `-o json` prints it.
#[derive(Serialize, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    pub allowed: bool,
    pub approvals_required: i32,
    pub matched_policy: Option<String>,
    pub duration: Option<String>,
    pub reasons: Vec<PolicyEvaluation>,
    /// Why the request is unusable whatever the policies say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
}

/// Runs the command; returns the exit code.
pub fn run(args: &CheckArgs) -> Result<i32, CliError> {
    let verdict = verdict(args)?;
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&verdict).expect("verdict serialises")),
        Format::Text => print!("{}", text(&verdict)),
    }
    Ok(if verdict.allowed { exit::OK } else { exit::DENIED })
}

/// Evaluates the files named by `args`.
pub fn verdict(args: &CheckArgs) -> Result<Verdict, CliError> {
    let mut policies: Vec<AccessPolicy> = Vec::new();
    for path in &args.policies {
        for file in yaml_files(path)? {
            policies.extend(read_docs::<AccessPolicy>(&file, "AccessPolicy")?);
        }
    }
    let request = read_docs::<AccessRequest>(&args.request, "AccessRequest")?
        .into_iter()
        .next()
        .ok_or_else(|| CliError::bad_input(format!("{}: no AccessRequest found", args.request.display())))?;
    let agent = match &args.agent {
        Some(path) => read_docs::<AgentIdentity>(path, "AgentIdentity")?.into_iter().next(),
        None => None,
    };
    // Offline, kube-jit's namespaces are assumed to be the default ones.
    let mut facts = ClusterFacts {
        agent: agent.as_ref(),
        reserved_namespaces: vec![
            crate::names::DEFAULT_GRANTS_NAMESPACE.to_string(),
            crate::names::DEFAULT_OPERATOR_NAMESPACE.to_string(),
        ],
        ..ClusterFacts::default()
    };
    for entry in &args.namespace_labels {
        let (ns, labels) = parse_namespace_labels(entry)?;
        facts.namespace_labels.insert(ns, labels);
    }
    let namespace = request.metadata.namespace.clone().unwrap_or_else(|| args.namespace.clone());
    let refs: Vec<&AccessPolicy> = policies.iter().collect();
    let evaluation = evaluate(&namespace, &request.spec, &refs, &facts);
    let allowed = evaluation.allowed.clone();
    Ok(Verdict {
        allowed: allowed.is_some(),
        approvals_required: allowed.as_ref().map(|a| a.approvals_required).unwrap_or(0),
        matched_policy: allowed.as_ref().map(|a| a.policy.clone()),
        duration: allowed.as_ref().map(|a| durations::format(a.duration)),
        reasons: evaluation.verdicts,
        invalid: evaluation.invalid,
    })
}

fn text(v: &Verdict) -> String {
    let mut out = String::new();
    match (&v.matched_policy, &v.invalid) {
        (Some(p), _) if v.approvals_required > 0 => out.push_str(&format!(
            "ALLOWED by policy {p} for {} once {} approval(s) are given\n",
            v.duration.as_deref().unwrap_or("?"),
            v.approvals_required
        )),
        (Some(p), _) => out.push_str(&format!(
            "ALLOWED by policy {p} for {}, without approval\n",
            v.duration.as_deref().unwrap_or("?")
        )),
        (None, Some(why)) => out.push_str(&format!("DENIED: {why}\n")),
        (None, None) if v.reasons.is_empty() => out.push_str("DENIED: no AccessPolicy given\n"),
        (None, None) => out.push_str("DENIED by every policy\n"),
    }
    for r in &v.reasons {
        out.push_str(&format!("  {:<7} {}: {}\n", if r.allowed { "allows" } else { "denies" }, r.policy, r.reason));
    }
    out
}

fn parse_namespace_labels(entry: &str) -> Result<(String, BTreeMap<String, String>), CliError> {
    let bad = || CliError::bad_input(format!("--namespace-labels {entry:?}: expected NAMESPACE:key=value[,key=value]"));
    let (ns, rest) = entry.split_once(':').ok_or_else(bad)?;
    let mut labels = BTreeMap::new();
    for pair in rest.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or_else(bad)?;
        labels.insert(k.to_string(), v.to_string());
    }
    Ok((ns.to_string(), labels))
}

fn yaml_files(path: &PathBuf) -> Result<Vec<PathBuf>, CliError> {
    let meta = std::fs::metadata(path).map_err(|e| CliError::bad_input(format!("{}: {e}", path.display())))?;
    if !meta.is_dir() {
        return Ok(vec![path.clone()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| CliError::bad_input(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    files.sort();
    Ok(files)
}

/// Every document of `kind` in a YAML file; other kinds are skipped.
fn read_docs<T: serde::de::DeserializeOwned>(path: &PathBuf, kind: &str) -> Result<Vec<T>, CliError> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).map_err(|e| CliError::bad_input(format!("{}: {e}", path.display())))?;
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)
            .map_err(|e| CliError::bad_input(format!("{}: invalid YAML: {e}", path.display())))?;
        if value.is_null() || value["kind"].as_str() != Some(kind) {
            continue;
        }
        let parsed = serde_yaml::from_value(value)
            .map_err(|e| CliError::bad_input(format!("{}: invalid {kind}: {e}", path.display())))?;
        out.push(parsed);
    }
    Ok(out)
}
