//! `kube-jit uninstall`: removing kube-jit must never orphan a grant. Every
//! request is ended (grants revoked, reason `Uninstalled`, with an audit line),
//! every object of kube-jit's that is left is deleted (kube-jit's by what its
//! grants recorded or by living in the grants namespace, never by labels:
//! others that carry its labels are named and left alone), and every kube-jit
//! finalizer is removed so deleting the CRDs cannot hang once no operator runs.
//! Run by Helm's pre-delete hook, it first stops the operator's Deployment
//! ([`stop_deployment`]): a request made during the uninstall is then never
//! granted, instead of granted after the sweep and left without an operator.

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::context::{Context, Stores};
use super::{objects, sweep, transitions};
use crate::api::access_request::{AccessRequest, Phase};
use crate::conditions::reasons;
use crate::error::Result;
use crate::names::FINALIZER;

/// Set on each request uninstall has ended: the operator leaves it alone from
/// then on, so it does not put the finalizer back.
pub const UNINSTALLED_ANNOTATION: &str = "kubejit.io/uninstalled";

/// Whether `kube-jit uninstall` has ended this request.
pub fn was_uninstalled(request: &AccessRequest) -> bool {
    request.annotations().contains_key(UNINSTALLED_ANNOTATION)
}

/// Scales the Deployment `namespace/name` (the operator's) to 0 replicas and
/// waits, up to `limit`, until none of its Pods is left, so nothing is granted
/// after the sweep that follows. Pods are the Deployment's when a ReplicaSet
/// named after it owns them (the uninstall Job's Pod shares their labels).
/// Errors: the Deployment cannot be read or scaled, or Pods remain at `limit`
/// ([`crate::error::Error::OperatorStillRunning`]); uninstall then stops
/// before changing anything else.
pub async fn stop_deployment(
    client: &Client,
    namespace: &str,
    name: &str,
    limit: std::time::Duration,
    say: &dyn Fn(String),
) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get(name).await?;
    deployments.patch_scale(name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await?;
    say(format!("scaled Deployment {namespace}/{name} to 0 replicas; waiting for its Pods to exit"));
    let selector = deployment
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let prefix = format!("{name}-");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let start = std::time::Instant::now();
    loop {
        let left: Vec<String> = pods
            .list(&ListParams::default().labels(&selector))
            .await?
            .items
            .into_iter()
            .filter(|p| p.owner_references().iter().any(|o| o.kind == "ReplicaSet" && o.name.starts_with(&prefix)))
            .map(|p| p.name_any())
            .collect();
        if left.is_empty() {
            say(format!("no Pod of Deployment {namespace}/{name} is left ({}s)", start.elapsed().as_secs()));
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(crate::error::Error::OperatorStillRunning {
                deployment: format!("{namespace}/{name}"),
                waited_secs: limit.as_secs(),
                pods: left.join(", "),
            });
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// What uninstall did, and what it could not do.
#[derive(Debug, Default)]
pub struct Report {
    pub requests_ended: usize,
    pub grants_revoked: usize,
    pub objects_deleted: usize,
    pub finalizers_removed: usize,
    pub failures: Vec<String>,
}

/// Ends every request, deletes every managed object, removes every finalizer;
/// `say` receives one line per step. Idempotent: a second run finds nothing to do.
pub async fn uninstall(client: &Client, grants_namespace: &str, say: &dyn Fn(String)) -> Result<Report> {
    let mut report = Report::default();
    let ctx = Context::new(client.clone(), empty_stores(), String::new());
    let all = Api::<AccessRequest>::all(client.clone());

    for request in all.list(&ListParams::default()).await?.items {
        let id = format!("{}/{}", request.namespace().unwrap_or_default(), request.name_any());
        match end(&ctx, &request).await {
            Ok(None) => {}
            Ok(Some(grant)) => {
                report.requests_ended += 1;
                if let Some(grant) = grant {
                    report.grants_revoked += 1;
                    say(format!("revoked grant {grant} of AccessRequest {id}"));
                } else {
                    say(format!("ended AccessRequest {id} (no grant)"));
                }
            }
            Err(e) => report.failures.push(format!("AccessRequest {id}: could not end it: {}", e.user_message())),
        }
    }

    // Whatever of kube-jit's is left, whichever request it came from.
    for (kind, meta) in sweep::owned_leftovers(client, grants_namespace, &|foreign| {
        say(format!("left alone: {foreign} (labelled as kube-jit's, but no grant made it)"))
    })
    .await?
    {
        let (ns, name) = (meta.namespace.unwrap_or_default(), meta.name.unwrap_or_default());
        match objects::delete_exact(client, &kind, &ns, &name, meta.uid.as_deref()).await {
            Ok(true) => {
                report.objects_deleted += 1;
                say(format!("deleted {kind} {}", qualified(&ns, &name)));
            }
            Ok(false) => {}
            Err(e) => report.failures.push(format!("{kind} {}: {}", qualified(&ns, &name), e.user_message())),
        }
    }

    for request in all.list(&ListParams::default()).await?.items {
        if !request.finalizers().iter().any(|f| f == FINALIZER) {
            continue;
        }
        let id = format!("{}/{}", request.namespace().unwrap_or_default(), request.name_any());
        match remove_finalizer(client, &request).await {
            Ok(()) => {
                report.finalizers_removed += 1;
                say(format!("removed the finalizer of AccessRequest {id}"));
            }
            Err(e) => report.failures.push(format!("AccessRequest {id}: finalizer not removed: {}", e.user_message())),
        }
    }

    // Check, rather than trust, that nothing is left.
    for (kind, meta) in sweep::owned_leftovers(client, grants_namespace, &|_| {}).await? {
        let (ns, name) = (meta.namespace.unwrap_or_default(), meta.name.unwrap_or_default());
        report.failures.push(format!("{kind} {} is still there", qualified(&ns, &name)));
    }
    report.failures.dedup();
    Ok(report)
}

/// Marks the request as uninstalled (so a running operator leaves it alone)
/// and ends it unless it has ended, revoking any grant it holds. `None`: it had
/// ended; `Some(grant id)` when a grant was revoked.
async fn end(ctx: &Context, request: &AccessRequest) -> Result<Option<Option<String>>> {
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &request.namespace().unwrap_or_default());
    let mark = json!({"metadata": {"annotations": {UNINSTALLED_ANNOTATION: Timestamp::now().to_string()}}});
    // An operator still running may write between reads: retry on conflicts.
    let mut attempt = 0;
    loop {
        let marked = api.patch(&request.name_any(), &PatchParams::default(), &Patch::Merge(&mark)).await?;
        let status = marked.status.clone().unwrap_or_default();
        let holds = status.grant.as_ref().is_some_and(|g| g.revoked_at.is_none());
        if status.phase.is_terminal() && !holds {
            return Ok(None);
        }
        let phase = if status.phase.is_terminal() { status.phase } else { Phase::Revoked };
        let why = "kube-jit was uninstalled; its grants are revoked".to_string();
        match transitions::end_one(&marked, ctx, phase, reasons::UNINSTALLED, why).await {
            Ok(_) => return Ok(Some(status.grant.filter(|_| holds).map(|g| g.id))),
            Err(crate::Error::Kube(kube::Error::Api(s))) if s.code == 409 && attempt < 5 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// Removes kube-jit's finalizer, conditional on the version read.
async fn remove_finalizer(client: &Client, request: &AccessRequest) -> Result<()> {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), &request.namespace().unwrap_or_default());
    let mut current = request.clone();
    let mut attempt = 0;
    loop {
        let rest: Vec<_> = current.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": current.resource_version()}});
        match api.patch(&current.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            // Changed since read (an operator still running): read again.
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 5 => {
                attempt += 1;
                match api.get_opt(&current.name_any()).await? {
                    Some(fresh) => current = fresh,
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn qualified(ns: &str, name: &str) -> String {
    if ns.is_empty() { name.to_string() } else { format!("{ns}/{name}") }
}

fn empty<K>() -> Store<K>
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    reflector::store().0
}

/// Uninstall ends each request by itself, so it needs no caches.
fn empty_stores() -> Stores {
    Stores {
        policies: empty(),
        approvals: empty(),
        agents: empty(),
        namespaces: empty(),
        requests: empty(),
        admission_policies: empty(),
        admission_bindings: empty(),
        role_bindings: empty(),
        cluster_role_bindings: empty(),
        roles: empty(),
        cluster_roles: empty(),
    }
}
