//! Workload binding on the cluster side: gathers the Pod a request was made
//! from (and its Node), asks [`policy::workload`](crate::policy::workload)
//! for the verdict, and maps Pod changes to the requests that name the Pod.

use std::collections::BTreeSet;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use super::context::Context;
use super::workloads::{self, Touched};
use crate::api::access_request::{AccessRequest, WorkloadAttestation};
use crate::error::Result;
use crate::names;
use crate::policy::workload::{self, Pinned, Refusal};

/// The agents whose `spec.workload` pins `request` (see [`workload::pinned`]).
fn pins<'a>(
    ctx: &Context,
    request: &AccessRequest,
    agents: &'a [std::sync::Arc<crate::api::AgentIdentity>],
) -> Vec<Pinned<'a>> {
    workload::pinned(&request.namespace().unwrap_or_default(), &request.spec, agents, &ctx.trust_domain)
}

/// Attests the Pod `request` was made from against the agents that pin it:
/// reads the Pod (and its Node, where a node selector asks) from the API
/// server now, and starts watching the agent's Pods so the grant can end
/// with the Pod. `Ok(Ok(None))`: nothing binds the request to a workload.
pub async fn attest(ctx: &Context, request: &AccessRequest) -> Result<Result<Option<WorkloadAttestation>, Refusal>> {
    let agents = ctx.stores.agents.state();
    let pins = pins(ctx, request, &agents);
    if pins.is_empty() {
        return Ok(Ok(None));
    }
    let claim = request.spec.requester.pod.as_ref();
    // The Pod behind a pod-bound token runs as the requester's ServiceAccount, in its namespace.
    let requester = names::parse_service_account_username(&request.spec.requester.user);
    let pod = match (claim, requester) {
        (Some(claim), Some((ns, _))) => workloads::pod(&ctx.client, ns, &claim.name).await?,
        _ => None,
    };
    let node = pod.as_ref().and_then(|p| p.spec.as_ref()).and_then(|s| s.node_name.clone());
    let node_labels = match node {
        Some(node) if pins.iter().any(|p| p.workload.node_selector.is_some()) => {
            workloads::node_labels(&ctx.client, &node).await?
        }
        _ => None,
    };
    let asked_at = request.metadata.creation_timestamp.as_ref().map_or_else(Timestamp::now, |t| t.0);
    let verdict = workload::attest(&pins, claim, pod.as_ref(), node_labels.as_ref(), asked_at, Timestamp::now())
        .and_then(|attested| match attested {
            Some(a) => workload::delivery_allowed(&request.spec).map(|()| Some(a)),
            None => Ok(None),
        });
    // Its Pod's changes re-decide a request waiting for it, and end the grant:
    // watched under the key `needed` keeps (the requester's ServiceAccount).
    if let (Some(_), Some((ns, sa)), Some(watches)) = (&pod, requester, &ctx.workloads) {
        watches.watched(ns, sa);
    }
    Ok(verdict)
}

/// Whether the Pod a live grant is bound to is still there and still
/// matches: read from its watch, or from the API server while the watch syncs.
pub async fn still_bound(
    ctx: &Context,
    request: &AccessRequest,
    attested: &WorkloadAttestation,
) -> Result<Result<(), Refusal>> {
    let agents = ctx.stores.agents.state();
    let pins = pins(ctx, request, &agents);
    let store = ctx.workloads.as_ref().and_then(|w| w.watched(&attested.namespace, &attested.service_account));
    let pod = match store {
        Some(store) => workloads::cached(&store, &attested.namespace, &attested.pod),
        None => workloads::pod(&ctx.client, &attested.namespace, &attested.pod).await?,
    };
    Ok(workload::recheck(attested, &pins, pod.as_ref()))
}

/// The (namespace, ServiceAccount) pairs whose Pods must be watched: those of
/// every live workload-bound grant, and of every pending request made from a
/// Pod for a pinned agent. `requests` and `agents` are the cached ones.
pub fn needed(
    requests: &[std::sync::Arc<AccessRequest>],
    agents: &[std::sync::Arc<crate::api::AgentIdentity>],
) -> BTreeSet<(String, String)> {
    requests
        .iter()
        .filter(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        .filter_map(|r| match r.status.as_ref().and_then(|s| s.workload.as_ref()) {
            Some(w) => Some((w.namespace.clone(), w.service_account.clone())),
            None if r.spec.requester.pod.is_some() => {
                let ns = r.namespace().unwrap_or_default();
                // The trust domain does not change which agents pin it.
                if workload::pinned(&ns, &r.spec, agents, "").is_empty() {
                    return None;
                }
                names::parse_service_account_username(&r.spec.requester.user)
                    .map(|(ns, sa)| (ns.to_string(), sa.to_string()))
            }
            None => None,
        })
        .collect()
}

/// The open requests a Pod change concerns: live grants bound to that Pod
/// (or to any Pod of that ServiceAccount, after a relist), and pending
/// requests made from it.
pub fn touched_requests(requests: &Store<AccessRequest>, touched: &Touched) -> Vec<ObjectRef<AccessRequest>> {
    let requester = names::service_account_username(&touched.namespace, &touched.service_account);
    requests
        .state()
        .iter()
        .filter(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
        .filter(|r| {
            let names_pod = |pod: &str| touched.pod.as_deref().is_none_or(|p| p == pod);
            match r.status.as_ref().and_then(|s| s.workload.as_ref()) {
                Some(w) => {
                    w.namespace == touched.namespace
                        && w.service_account == touched.service_account
                        && names_pod(&w.pod)
                }
                None => {
                    r.spec.requester.user == requester
                        && r.spec.requester.pod.as_ref().is_some_and(|p| names_pod(&p.name))
                }
            }
        })
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn request(name: &str, for_agent: &str, pod: bool, status: serde_json::Value) -> Arc<AccessRequest> {
        let mut requester = json!({"user": "system:serviceaccount:agents:planner"});
        if pod {
            requester["pod"] = json!({"name": "planner-0", "uid": "u1"});
        }
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": name, "namespace": "agents"},
                "spec": {"requester": requester, "forAgent": for_agent,
                         "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"]},
                "status": status
            }))
            .unwrap(),
        )
    }

    fn agent(name: &str, sa: &str, pinned: bool) -> Arc<crate::api::AgentIdentity> {
        let mut spec = json!({"owner": "o", "serviceAccountName": sa});
        if pinned {
            spec["workload"] = json!({"images": [format!("sha256:{}", "0".repeat(64))]});
        }
        Arc::new(
            serde_json::from_value(json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity",
                "metadata": {"name": name, "namespace": "agents"}, "spec": spec}))
            .unwrap(),
        )
    }

    #[test]
    fn only_pinned_pending_requests_and_bound_grants_need_a_watch() {
        let bound = json!({"phase": "Granted", "workload": {"namespace": "agents", "pod": "planner-0",
            "podUid": "u1", "serviceAccount": "planner", "node": "n", "spiffeId": "s"}});
        let key = ("agents".to_string(), "planner".to_string());
        let cases = [
            ("pending, made from a Pod, pinned agent", request("a", "pinned", true, json!({})), true),
            ("pending, made from a Pod, unpinned agent", request("b", "free", true, json!({})), false),
            ("pending, not made from a Pod", request("c", "pinned", false, json!({})), false),
            ("a grant bound to its Pod", request("d", "free", true, bound.clone()), true),
            ("a grant not bound", request("e", "free", true, json!({"phase": "Granted"})), false),
            ("ended", request("f", "pinned", true, json!({"phase": "Revoked", "workload": bound["workload"]})), false),
        ];
        // The pinned agent on another ServiceAccount, so only forAgent pins.
        let agents = vec![agent("pinned", "other-sa", true), agent("free", "another-sa", false)];
        for (case, r, watched) in cases {
            let needed = needed(&[r], &agents);
            assert_eq!(needed.contains(&key), watched, "{case}: {needed:?}");
        }
    }
}
