//! `kubectl jit approve` / `deny`: record your decision on a request as an
//! AccessApproval. Admission checks you are who the approval names; the
//! operator counts it only if the matched policy names you.

use kube::api::{Api, PostParams};
use serde_json::json;

use super::CliError;
use super::session::Session;
use crate::api::{AccessApproval, AccessRequest};

/// Options of `kubectl jit approve` and `kubectl jit deny`.
#[derive(clap::Args, Debug)]
pub struct DecisionArgs {
    /// The AccessRequest to decide on.
    pub name: String,
    /// Namespace of the request (default: your ServiceAccount's, or the kubeconfig's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Why; shown to the requester and recorded in the audit trail (required to deny).
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn run(args: &DecisionArgs, approve: bool) -> Result<i32, CliError> {
    if !approve && args.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
        return Err(CliError::bad_input("deny needs --reason: the requester deserves to know why"));
    }
    let session = Session::connect().await?;
    let ns = session.request_namespace(args.namespace.as_deref());
    let request = Api::<AccessRequest>::namespaced(session.client.clone(), &ns).get(&args.name).await?;
    if let Some(phase) = request.status.as_ref().map(|s| s.phase).filter(|p| p.is_terminal()) {
        return Err(CliError::denied(format!(
            "{} already ended {phase:?}; a decision would have no effect",
            args.name
        )));
    }
    let decision = if approve { "Approve" } else { "Deny" };
    let approval: AccessApproval = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval",
        "metadata": {"generateName": format!("{}-", args.name.chars().take(50).collect::<String>()), "namespace": ns},
        "spec": {"request": args.name, "requestUID": request.metadata.uid, "decision": decision,
                 "approver": session.user, "groups": session.groups, "reason": args.reason}}))
    .map_err(|e| CliError::bad_input(e.to_string()))?;
    let created = Api::<AccessApproval>::namespaced(session.client.clone(), &ns)
        .create(&PostParams::default(), &approval)
        .await?;
    println!(
        "accessapproval.kubejit.io/{} created: {} {} by {}",
        created.metadata.name.unwrap_or_default(),
        decision.to_lowercase(),
        args.name,
        session.user
    );
    Ok(super::exit::OK)
}
