//! Decisions are re-made when what they read changes: a namespace's labels,
//! the policy, the approvers, the AgentIdentity, the rules of a role granted
//! by name. A grant (or a request
//! waiting for approval) that is no longer allowed ends `PolicyWithdrawn`,
//! driven by the change itself, not by a periodic re-check (the requeue of a
//! live grant is minutes away, so each bound below tells the two apart).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube_jit::api::{AccessRequest, AgentIdentity, Phase};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

/// How soon a change must end what it no longer allows. The operator reacts
/// to the watch event; this leaves room for a loaded CI machine.
const BOUND: Duration = Duration::from_secs(5);

async fn merge<K>(api: &Api<K>, name: &str, patch: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
}

/// Waits until `name` ends in `phase` with `reason` on its condition, within [`BOUND`] of `since`.
async fn assert_ended(admin: &Client, name: &str, phase: Phase, reason: &str, since: Instant) {
    let r = scenario::wait_phase(admin, "agents", name, phase, BOUND + Duration::from_secs(25)).await;
    let took = since.elapsed();
    let status = r.status.clone().unwrap_or_default();
    let said = status.conditions.iter().find(|c| c.reason == reason).map(|c| c.message.clone());
    assert!(said.is_some(), "{name}: ended {phase:?} without reason {reason}: {:#?}", status.conditions);
    assert!(took <= BOUND, "{name}: ended {took:?} after the change (bound {BOUND:?})");
    eprintln!("{name}: {phase:?}/{reason} {} ms after the change: {}", took.as_millis(), said.unwrap_or_default());
}

#[tokio::test]
async fn decisions_are_remade_when_their_inputs_change() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    // Policy p-dev: namespaces labelled env=dev, no approval.
    let planner = scenario::stage(
        &cluster,
        &admin,
        json!({"subjects": {"serviceAccounts": [{"namespace": "agents", "name": "planner"}]},
               "grants": {"clusterRoles": ["view"], "namespaces": {"selector": {"matchLabels": {"env": "dev"}}}},
               "duration": {"default": "10m", "max": "1h"}}),
    )
    .await;
    scenario::create_namespace(&admin, "team-a", json!({"team": "team-a", "env": "dev"})).await;
    scenario::create_namespace(&admin, "team-c", json!({"team": "team-c", "env": "dev"})).await;
    let namespaces = Api::<Namespace>::all(admin.clone());
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    // Case 1: team-a is relabelled env=prod under a live grant.
    planner.request("relabelled", scenario::view_request("10m")).await;
    let r = scenario::wait_phase(&admin, "agents", "relabelled", Phase::Granted, Duration::from_secs(30)).await;
    let holder = cluster.client_with_token(&planner.mint(&r).await.expect("mint"));
    assert_eq!(scenario::list_pods_status(&holder, "team-a").await, 200);
    let since = Instant::now();
    merge(&namespaces, "team-a", json!({"metadata": {"labels": {"env": "prod"}}})).await;
    assert_ended(&admin, "relabelled", Phase::Revoked, "PolicyWithdrawn", since).await;
    let denied = support::eventually(Duration::from_secs(15), || async {
        scenario::list_pods_status(&holder, "team-a").await != 200
    })
    .await;
    assert!(denied, "the grant identity still lists pods in team-a");
    // A namespace change that keeps its labels (an annotation) ends nothing.
    merge(&namespaces, "team-c", json!({"metadata": {"annotations": {"note": "hello"}}})).await;

    // The policy is narrowed (a selector that no longer matches team-c).
    let mut spec = scenario::view_request("10m");
    spec["namespaces"] = json!(["team-c"]);
    planner.request("narrowed", spec.clone()).await;
    scenario::wait_phase(&admin, "agents", "narrowed", Phase::Granted, Duration::from_secs(30)).await;
    let policies = Api::<kube_jit::api::AccessPolicy>::all(admin.clone());
    let since = Instant::now();
    merge(
        &policies,
        "agents-read",
        json!({"spec": {"grants": {"namespaces": {"selector": {"matchLabels": {"env": "dev", "tier": "1"}}}}}}),
    )
    .await;
    assert_ended(&admin, "narrowed", Phase::Revoked, "PolicyWithdrawn", since).await;

    // Manual approval by bob; then the approvers change, or the agent's owner
    // becomes bob, and the grant no longer has the approvals it stands on.
    merge(
        &policies,
        "agents-read",
        json!({"spec": {"grants": {"namespaces": {"selector": {"matchLabels": {"env": "dev", "tier": null}}}},
                        "approval": {"mode": "Manual", "required": 1, "approvers": {"users": ["bob", "carol"]}}}}),
    )
    .await;
    scenario::grant_approver_role(&admin, "agents", &["bob", "carol"]).await;
    scenario::register_agent(&admin, "agents", "planner").await;
    let approved = |name: &'static str, spec: serde_json::Value| {
        let (planner, admin, cluster) = (&planner, &admin, &cluster);
        async move {
            let mut spec = spec;
            spec["forAgent"] = json!("planner");
            planner.request(name, spec).await;
            let r = scenario::wait_phase(admin, "agents", name, Phase::Pending, Duration::from_secs(30)).await;
            approve(cluster, &r, "bob").await;
            scenario::wait_phase(admin, "agents", name, Phase::Granted, Duration::from_secs(30)).await
        }
    };
    approved("approver-removed", spec.clone()).await;
    let since = Instant::now();
    merge(&policies, "agents-read", json!({"spec": {"approval": {"approvers": {"users": ["carol"]}}}})).await;
    assert_ended(&admin, "approver-removed", Phase::Revoked, "PolicyWithdrawn", since).await;

    merge(&policies, "agents-read", json!({"spec": {"approval": {"approvers": {"users": ["bob", "carol"]}}}})).await;
    approved("owner-changed", spec.clone()).await;
    let agents = Api::<AgentIdentity>::namespaced(admin.clone(), "agents");
    let since = Instant::now();
    merge(&agents, "planner", json!({"spec": {"owner": "bob"}})).await;
    assert_ended(&admin, "owner-changed", Phase::Revoked, "PolicyWithdrawn", since).await;

    // A request waiting for approval whose namespace is relabelled is
    // withdrawn too, before anyone approves it.
    merge(&agents, "planner", json!({"spec": {"owner": "platform-team"}})).await;
    planner
        .request(
            "waiting",
            json!({"forAgent": "planner", "role": {"kind": "ClusterRole", "name": "view"},
        "namespaces": ["team-c"], "duration": "10m", "purpose": "read pods"}),
        )
        .await;
    scenario::wait_phase(&admin, "agents", "waiting", Phase::Pending, Duration::from_secs(30)).await;
    let since = Instant::now();
    merge(&namespaces, "team-c", json!({"metadata": {"labels": {"env": "prod"}}})).await;
    assert_ended(&admin, "waiting", Phase::Denied, "PolicyWithdrawn", since).await;

    // Suspending the agent ends its grants.
    merge(&namespaces, "team-c", json!({"metadata": {"labels": {"env": "dev"}}})).await;
    approved("suspended", spec.clone()).await;
    let since = Instant::now();
    merge(&agents, "planner", json!({"spec": {"suspended": true}})).await;
    assert_ended(&admin, "suspended", Phase::Revoked, "AgentSuspended", since).await;
    let _: &Agent = &planner;
}

async fn approve(cluster: &Cluster, request: &AccessRequest, user: &str) {
    let approval: kube_jit::api::AccessApproval = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": support::unique_name("approval")},
        "spec": {"request": request.metadata.name, "requestUID": request.metadata.uid, "decision": "Approve",
                 "approver": user, "reason": "fine"}}))
    .unwrap();
    Api::<kube_jit::api::AccessApproval>::namespaced(cluster.impersonate(user, &[]), "agents")
        .create(&kube::api::PostParams::default(), &approval)
        .await
        .expect("approval");
}

/// A Role granted by name is what was decided: team-a's admin, who may edit
/// Roles there, widens it under a live grant, and the grant ends. Edits that
/// add no right (an annotation, fewer verbs) end nothing.
#[tokio::test]
async fn a_role_that_gains_rights_ends_the_grants_holding_it() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(
        &cluster,
        &admin,
        json!({"subjects": {"serviceAccounts": [{"namespace": "agents", "name": "planner"}]},
               "grants": {"roles": ["deployer"], "namespaces": {"names": ["team-a"]}},
               "duration": {"default": "10m", "max": "1h"}}),
    )
    .await;
    cluster.kubectl(&["create", "rolebinding", "dana-admin", "-n", "team-a", "--clusterrole=admin", "--user=dana"]);
    let dana = cluster.impersonate("dana", &[]);
    let roles = Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(dana.clone(), "team-a");
    let deployer: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "deployer"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]}))
    .unwrap();
    roles.create(&kube::api::PostParams::default(), &deployer).await.expect("dana makes the Role");
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    let request = json!({"role": {"kind": "Role", "name": "deployer"}, "namespaces": ["team-a"],
                         "duration": "10m", "purpose": "roll out"});
    planner.request("held", request.clone()).await;
    let r = scenario::wait_phase(&admin, "agents", "held", Phase::Granted, Duration::from_secs(30)).await;
    let recorded = &r.status.as_ref().unwrap().grant.as_ref().unwrap().roles;
    assert_eq!(recorded.len(), 1, "the grant records the Role it binds: {recorded:?}");
    let holder = cluster.client_with_token(&planner.mint(&r).await.expect("mint"));
    assert_eq!(scenario::list_pods_status(&holder, "team-a").await, 200);

    // No new right: an annotation, then one verb fewer.
    merge(&roles, "deployer", json!({"metadata": {"annotations": {"note": "hello"}}})).await;
    merge(&roles, "deployer", json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})).await;
    // Widened: delete on pods, and secrets.
    let since = Instant::now();
    merge(
        &roles,
        "deployer",
        json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
                         {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}),
    )
    .await;
    assert_ended(&admin, "held", Phase::Revoked, "PolicyWithdrawn", since).await;
    let ended = Api::<AccessRequest>::namespaced(admin.clone(), "agents").get("held").await.unwrap();
    let message = ended.status.unwrap().conditions.into_iter().find(|c| c.reason == "PolicyWithdrawn").unwrap().message;
    // Not the narrowing: the widening, by the rights it added.
    assert!(message.contains("Role team-a/deployer gained rights"), "{message}");
    assert!(message.contains("delete") || message.contains("secrets"), "{message}");
    let denied = support::eventually(Duration::from_secs(15), || async {
        scenario::list_pods_status(&holder, "team-a").await != 200
    })
    .await;
    assert!(denied, "the grant identity still lists pods in team-a");

    // A grant decided on the widened Role holds it, until it widens again.
    planner.request("after", request).await;
    scenario::wait_phase(&admin, "agents", "after", Phase::Granted, Duration::from_secs(30)).await;
    let since = Instant::now();
    merge(
        &roles,
        "deployer",
        json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
                         {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
                         {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"]}]}),
    )
    .await;
    assert_ended(&admin, "after", Phase::Revoked, "PolicyWithdrawn", since).await;
}
