//! `kubectl jit explain` / `describe`: why a request stands where it does —
//! each policy tried and its reason, approvals, the delegation chain, the
//! objects of the grant, and the Events of its life.

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};

use super::CliError;
use super::session::Session;
use crate::api::AccessRequest;

/// Options of `kubectl jit explain` and `kubectl jit describe`.
#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    pub name: String,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

pub async fn run(args: &ExplainArgs, full: bool) -> Result<i32, CliError> {
    let session = Session::connect().await?;
    let ns = session.request_namespace(args.namespace.as_deref());
    let r = Api::<AccessRequest>::namespaced(session.client.clone(), &ns).get(&args.name).await?;
    let status = r.status.clone().unwrap_or_default();
    let mut out = format!("{}/{}: {:?}\n", ns, args.name, status.phase);
    for c in &status.conditions {
        out.push_str(&format!("  {}={} ({}): {}\n", c.type_, c.status, c.reason, c.message));
    }
    if let Some(p) = &status.policy {
        out.push_str(&format!("Matched policy: {p}\n"));
    }
    if !status.policy_evaluations.is_empty() {
        out.push_str("Policies tried:\n");
        for v in &status.policy_evaluations {
            out.push_str(&format!("  {:<7} {}: {}\n", if v.allowed { "allows" } else { "denies" }, v.policy, v.reason));
        }
    }
    if let Some(t) = &status.approvals {
        out.push_str(&format!("Approvals: {}/{} ({})", t.approved_by.len(), t.required, t.approved_by.join(", ")));
        out.push_str(&t.denied_by.as_ref().map(|d| format!("; denied by {d}\n")).unwrap_or_else(|| "\n".into()));
    }
    if let Some(w) = &status.workload {
        out.push_str(&workload(w));
    } else if let Some(pod) = &r.spec.requester.pod {
        out.push_str(&format!("Asked from Pod {} (uid {}); not bound to it\n", pod.name, pod.uid));
    }
    if full {
        if status.delegation_chain.len() > 1 {
            out.push_str("Delegation chain (root first):\n");
            for h in &status.delegation_chain {
                out.push_str(&format!(
                    "  {} → {}: {} [{}] \"{}\"\n",
                    h.delegator, h.delegatee, h.scope, h.grant_id, h.purpose
                ));
                if let Some(w) = &h.workload {
                    out.push_str(&format!(
                        "    asked from Pod {}/{} (uid {}) on {}\n",
                        w.namespace, w.pod, w.pod_uid, w.node
                    ));
                }
            }
        }
        if let Some(g) = &status.grant {
            out.push_str(&format!("Grant {}: identity {}\n", g.id, g.username.as_deref().unwrap_or("-")));
            for t in [("started", &g.started_at), ("expires", &g.expires_at), ("revoked", &g.revoked_at)] {
                if let Some(at) = t.1 {
                    out.push_str(&format!("  {} {}\n", t.0, at.0));
                }
            }
            for o in &g.objects {
                out.push_str(&format!("  {} {}/{}\n", o.kind, o.namespace, o.name));
            }
            if let Some(o) = &g.token_bound_to {
                out.push_str(&format!(
                    "  tokens must be bound to {} {}/{} (boundObjectRef), deleted when the Pod ends\n",
                    o.kind, o.namespace, o.name
                ));
            }
        }
        if !status.extensions.is_empty() {
            out.push_str("Extensions:\n");
            for e in &status.extensions {
                out.push_str(&format!("  {:<8} {}\n", if e.granted { "granted" } else { "refused" }, e.message));
            }
        }
        let events = match Api::<Event>::namespaced(session.client.clone(), &ns)
            .list(&ListParams::default().fields(&format!("regarding.name={}", args.name)))
            .await
        {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 403 => {
                out.push_str("Events: (not allowed to list events in this namespace)\n");
                kube::core::ObjectList { types: Default::default(), metadata: Default::default(), items: Vec::new() }
            }
            Err(e) => return Err(e.into()),
        };
        if !events.items.is_empty() {
            out.push_str("Events:\n");
            let mut items = events.items;
            items.sort_by_key(|e| e.event_time.as_ref().map(|t| t.0));
            for e in items {
                let at = e.event_time.map(|t| t.0.to_string()).unwrap_or_default();
                out.push_str(&format!("  {at}  {:<22} {}\n", e.reason.unwrap_or_default(), e.note.unwrap_or_default()));
            }
        }
    }
    print!("{out}");
    Ok(super::exit::OK)
}

/// The attestation of a workload-bound grant, in lines.
fn workload(w: &crate::api::access_request::WorkloadAttestation) -> String {
    let mut out = format!(
        "Workload: Pod {}/{} (uid {}) on node {}, ServiceAccount {}\n  SPIFFE ID: {}\n",
        w.namespace, w.pod, w.pod_uid, w.node, w.service_account, w.spiffe_id
    );
    for i in &w.images {
        out.push_str(&format!("  container {}: {} @ {}\n", i.container, i.image, i.digest));
    }
    if let Some(t) = &w.attested_at {
        out.push_str(&format!("  attested at {}\n", t.0));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attestation_reads_as_the_pod_its_node_digests_and_spiffe_id() {
        let w: crate::api::access_request::WorkloadAttestation = serde_json::from_value(serde_json::json!({
            "namespace": "agents", "pod": "planner-0", "podUid": "u1", "serviceAccount": "planner", "node": "node0",
            "images": [{"container": "agent", "image": "agent:1", "digest": "sha256:ab"}],
            "spiffeId": "spiffe://cluster.local/ns/agents/sa/planner", "attestedAt": "2026-01-01T00:00:00Z"}))
        .unwrap();
        let text = workload(&w);
        for needle in [
            "Pod agents/planner-0 (uid u1) on node node0, ServiceAccount planner",
            "SPIFFE ID: spiffe://cluster.local/ns/agents/sa/planner",
            "container agent: agent:1 @ sha256:ab",
            "attested at 2026-01-01T00:00:00Z",
        ] {
            assert!(text.contains(needle), "{needle:?} in {text}");
        }
    }
}
