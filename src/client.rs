//! The requester's side of kube-jit, for agents written in Rust: ask who we
//! are, wait for a decision, mint a token for the grant identity, talk to the
//! API server as it, and end the grant early. `examples/agent.rs` uses all of it.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{BoundObjectReference, SelfSubjectReview, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::AuthInfo;
use kube::runtime::wait::await_condition;
use kube::{Client, Config, ResourceExt};

use crate::api::{AccessRequest, Phase};
use crate::conditions::types;

/// Why waiting for a request did not end in the phase asked for.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The request reached a terminal phase instead (Denied, Failed, ...).
    #[error("request {name} ended {phase:?}: {explanation}")]
    Ended { name: String, phase: Phase, explanation: String, request: Box<AccessRequest> },
    /// Still not there when the time ran out; `explanation` says what it waits for.
    #[error("request {name} is still {phase:?} after {timeout:?}: {explanation}")]
    Timeout { name: String, phase: Phase, timeout: Duration, explanation: String },
    /// Someone deleted the request while we waited.
    #[error("request {0} was deleted while waiting for it")]
    Deleted(String),
    #[error("watching the request: {0}")]
    Watch(#[from] kube::runtime::wait::Error),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// The username the API server authenticates `client` as (a SelfSubjectReview,
/// what `kubectl auth whoami` asks): the value `spec.requester.user` must hold.
pub async fn whoami(client: &Client) -> kube::Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    Ok(review.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default())
}

/// Waits until the request `name` reaches `wanted`, and returns it then.
///
/// Watches rather than polls, so waiting minutes for a human approval costs
/// one open connection. Ends early with [`WaitError::Ended`] when the request
/// reaches a terminal phase other than `wanted` (it never changes again).
pub async fn wait_for_phase(
    requests: &Api<AccessRequest>,
    name: &str,
    wanted: Phase,
    timeout: Duration,
) -> Result<AccessRequest, WaitError> {
    let settled = move |r: Option<&AccessRequest>| r.is_none_or(|r| phase(r) == wanted || phase(r).is_terminal());
    match tokio::time::timeout(timeout, await_condition(requests.clone(), name, settled)).await {
        Ok(Ok(Some(request))) if phase(&request) == wanted => Ok(request),
        Ok(Ok(Some(request))) => Err(WaitError::Ended {
            name: name.to_string(),
            phase: phase(&request),
            explanation: explain(&request),
            request: Box::new(request),
        }),
        Ok(Ok(None)) => Err(WaitError::Deleted(name.to_string())),
        Ok(Err(e)) => Err(e.into()),
        Err(_elapsed) => {
            // One more read, so the error can say what the request waits for
            // (approvals, a missing admission policy, ...).
            let request = requests.get(name).await?;
            Err(WaitError::Timeout {
                name: name.to_string(),
                phase: phase(&request),
                timeout,
                explanation: explain(&request),
            })
        }
    }
}

/// The request's phase (`Pending` before the operator has written status).
pub fn phase(request: &AccessRequest) -> Phase {
    request.status.as_ref().map(|s| s.phase).unwrap_or_default()
}

/// Why the request is where it is, in one line: the reason and message of the
/// condition that decided its phase (`Denied`, `Failed`, ... or, while it
/// waits, `Approved=False` with reasons like `AwaitingApproval`).
pub fn explain(request: &AccessRequest) -> String {
    let phase = phase(request);
    let wanted = match phase {
        Phase::Denied => types::DENIED,
        Phase::Failed => types::FAILED,
        Phase::Expired => types::EXPIRED,
        Phase::Revoked => types::REVOKED,
        Phase::Granted => types::GRANTED,
        Phase::Pending | Phase::Approved => types::APPROVED,
    };
    let conditions = request.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();
    match conditions.iter().find(|c| c.type_ == wanted) {
        Some(c) if c.message.is_empty() => c.reason.clone(),
        Some(c) => format!("{}: {}", c.reason, c.message),
        None => "the operator has not answered yet (is kube-jit running?)".to_string(),
    }
}

/// Mints a token for the grant's ServiceAccount (`status.grant.serviceAccount`)
/// with the TokenRequest API. Only the requester may do this, so `client` must
/// authenticate as the requester (for a grant bound to a workload: from the
/// attested Pod, with its own token; the token is then bound to
/// `status.grant.tokenBoundTo`). The API server enforces a minimum lifetime of
/// ten minutes; the grant's bindings end at `expiresAt` whatever the token says.
pub async fn mint_grant_token(client: &Client, request: &AccessRequest, lifetime: Duration) -> crate::Result<String> {
    let sa = request
        .status
        .as_ref()
        .and_then(|s| s.grant.as_ref())
        .and_then(|g| g.service_account.as_ref())
        .ok_or(crate::Error::MissingField("status.grant.serviceAccount"))?;
    // Admission refuses tokens that outlive the grant by more than the
    // TokenRequest minimum (600 s): ask for no more than that.
    let expires_at = request.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.expires_at.as_ref());
    let within_grant = expires_at.map_or(i64::MAX, |t| t.0.duration_since(jiff::Timestamp::now()).as_secs() + 600);
    // A grant bound to a workload takes only tokens bound to its Secret
    // (deleted when the Pod ends), minted from that Pod.
    let bound_to = request.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.token_bound_to.as_ref());
    let token_request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some((lifetime.as_secs() as i64).min(within_grant).max(600)),
            bound_object_ref: bound_to.map(|o| BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some(o.kind.clone()),
                name: Some(o.name.clone()),
                uid: None,
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &sa.namespace);
    // The RoleBinding that lets the requester mint exists before the request
    // says Granted, but the API server's authorizer learns of it from its own
    // watch a moment later: a 403 in the first seconds is retried.
    let deadline = std::time::Instant::now() + MINT_AUTHORIZATION_GRACE;
    // 10 ms, doubling to 100 ms: the binding is usually seen within milliseconds.
    let mut wait = Duration::from_millis(10);
    let minted = loop {
        match api.create_token_request(&sa.name, &PostParams::default(), &token_request).await {
            // Not a refusal by admission: that answer will not change.
            Err(kube::Error::Api(s))
                if s.code == 403
                    && !s.message.contains("ValidatingAdmissionPolicy")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(100));
            }
            other => break other?,
        }
    };
    minted.status.and_then(|s| s.token).filter(|t| !t.is_empty()).ok_or(crate::Error::NoToken)
}

/// How long [`mint_grant_token`] retries a 403 right after a grant (a loaded
/// API server's authorizer can take seconds to see a new binding).
const MINT_AUTHORIZATION_GRACE: Duration = Duration::from_secs(10);

/// `config` with its credentials replaced by `token`: same server, CA, TLS
/// name and timeouts. Every other credential (client certificate, exec
/// plugin, token file) is dropped, so calls are made as the token's identity only.
pub fn token_config(config: &Config, token: &str) -> Config {
    let mut config = config.clone();
    config.auth_info = AuthInfo { token: Some(token.to_string().into()), ..AuthInfo::default() };
    config
}

/// A client that authenticates with nothing but `token`, to the cluster `config` names.
pub fn client_with_token(config: &Config, token: &str) -> kube::Result<Client> {
    Client::try_from(token_config(config, token))
}

/// Ends the grant now by setting `spec.revoke: true` (the requester may; it
/// cannot be undone). The operator deletes the bindings first, then the
/// identity, and the request ends `Revoked`.
pub async fn revoke(requests: &Api<AccessRequest>, name: &str) -> kube::Result<AccessRequest> {
    let patch = serde_json::json!({"spec": {"revoke": true}});
    requests.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await
}

/// Asks to extend a live grant by `by` (`15m`), appending to `spec.extensions`
/// (only the requester may). Returns how many extensions the request now asks
/// for, the count [`wait_for_extension`] waits for. The append is conditional
/// on the resourceVersion read, so concurrent extensions are never lost.
pub async fn extend(requests: &Api<AccessRequest>, name: &str, by: &str) -> kube::Result<usize> {
    let mut attempts = 0;
    loop {
        let current = requests.get(name).await?;
        let mut extensions = current.spec.extensions.clone();
        extensions.push(by.to_string());
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.resource_version()},
            "spec": {"extensions": extensions},
        });
        match requests.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(extensions.len()),
            Err(kube::Error::Api(e)) if e.code == 409 && attempts < 5 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Waits until the operator has answered the `count`th extension; returns the
/// request with that answer in `status.extensions`.
pub async fn wait_for_extension(
    requests: &Api<AccessRequest>,
    name: &str,
    count: usize,
    timeout: Duration,
) -> Result<AccessRequest, WaitError> {
    let answered = move |r: Option<&AccessRequest>| {
        r.is_none_or(|r| {
            let status = r.status.as_ref();
            status.is_some_and(|s| s.extensions.len() >= count || s.phase.is_terminal())
        })
    };
    match tokio::time::timeout(timeout, await_condition(requests.clone(), name, answered)).await {
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => Err(WaitError::Deleted(name.to_string())),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let r = requests.get(name).await?;
            let explanation = "the operator has not answered the extension yet".to_string();
            Err(WaitError::Timeout { name: name.to_string(), phase: phase(&r), timeout, explanation })
        }
    }
}

/// `namespace/name` of a request, for messages.
pub fn describe(request: &AccessRequest) -> String {
    format!("{}/{}", request.namespace().unwrap_or_default(), request.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AccessRequestStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn request(phase: Phase, conditions: Vec<Condition>) -> AccessRequest {
        let mut r: AccessRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r", "namespace": "agents"},
            "spec": {"requester": {"user": "u"}, "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["a"]}}))
        .unwrap();
        r.status = Some(AccessRequestStatus { phase, conditions, ..AccessRequestStatus::default() });
        r
    }

    fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn explain_names_the_deciding_condition() {
        let denied = request(
            Phase::Denied,
            vec![
                condition("Approved", "False", "NoPolicyAllows", "no policy"),
                condition("Denied", "True", "NoPolicyAllows", "no AccessPolicy allows this request"),
            ],
        );
        assert_eq!(explain(&denied), "NoPolicyAllows: no AccessPolicy allows this request");
        let waiting = request(Phase::Pending, vec![condition("Approved", "False", "AwaitingApproval", "")]);
        assert_eq!(explain(&waiting), "AwaitingApproval");
        assert!(explain(&request(Phase::Pending, vec![])).contains("not answered"));
        assert_eq!(describe(&waiting), "agents/r");
    }

    #[test]
    fn token_config_keeps_the_cluster_and_drops_other_credentials() {
        let mut config = Config::new("https://127.0.0.1:6443".parse().unwrap());
        config.root_cert = Some(vec![b"ca".to_vec()]);
        config.tls_server_name = Some("kubernetes".into());
        config.auth_info.client_certificate_data = Some("cert".into());
        config.auth_info.token_file = Some("/var/run/token".into());
        let grant = token_config(&config, "grant-token");
        assert_eq!(grant.cluster_url, config.cluster_url);
        assert_eq!(grant.root_cert, config.root_cert);
        assert_eq!(grant.tls_server_name.as_deref(), Some("kubernetes"));
        assert!(grant.auth_info.client_certificate_data.is_none() && grant.auth_info.token_file.is_none());
        assert!(grant.auth_info.token.is_some());
    }
}
