//! Grant identities are out of reach. They live in the grants namespace
//! (`kube-jit-grants`), where no tenant holds rights: Kubernetes lets anyone
//! who creates Pods in a namespace run them as any of its ServiceAccounts,
//! anyone with `edit` there impersonate them, and anyone who creates Secrets
//! there get a non-expiring token for one. So nobody with rights in their own
//! namespace reaches a grant identity, nobody but the operator binds roles to
//! one, and no grant is made in the grants namespace; and should an admin hand out rights in
//! the grants namespace by mistake, admission still refuses a Pod (made
//! directly or by a workload controller) or a legacy token Secret for one.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube_jit::api::Phase;
use serde_json::json;

use crate::assert_refused;
use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

const POLICY: &str = "kube-jit-grant-identities";
const GRANTS: &str = kube_jit::names::DEFAULT_GRANTS_NAMESPACE;

/// A Pod running as `service_account` that the `restricted` Pod Security
/// level (the grants namespace's) admits, so only kube-jit's rule can refuse it.
fn pod(name: &str, service_account: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"serviceAccountName": service_account,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}))
    .unwrap()
}

/// Asserts `result` is a 403 (by whichever check), for the row `what`.
#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected a 403, got {other:?}"),
    }
}

/// Gives agent-2 create, get and list on Pods, Deployments and Secrets in `namespace`.
fn workloads_for_agent_2(cluster: &Cluster, namespace: &str) {
    cluster.kubectl(&[
        "create",
        "role",
        "workloads",
        "-n",
        namespace,
        "--verb=create,get,list",
        "--resource=pods,deployments.apps,secrets",
    ]);
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "agent-2-workloads",
        "-n",
        namespace,
        "--role=workloads",
        "--serviceaccount=agents:agent-2",
    ]);
}

#[tokio::test]
async fn nothing_runs_as_a_grant_identity() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    // agent-2 may create Pods, Deployments and Secrets in `agents`, and holds
    // `edit` there (which includes impersonating its ServiceAccounts).
    let other = Agent::create(&cluster, &admin, "agents", "agent-2").await;
    workloads_for_agent_2(&cluster, "agents");
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "agent-2-edit",
        "-n",
        "agents",
        "--clusterrole=edit",
        "--serviceaccount=agents:agent-2",
    ]);
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    planner.request("r3", scenario::view_request("10m")).await;
    let r3 = scenario::wait_phase(&admin, "agents", "r3", Phase::Granted, Duration::from_secs(30)).await;
    let grant_sa = r3.status.clone().unwrap().grant.unwrap().service_account.unwrap().name;

    let grant_user = scenario::grant_user(&r3);
    assert_eq!(grant_user, format!("system:serviceaccount:{GRANTS}:{grant_sa}"), "the identity lives in {GRANTS}");

    // Case 3: a Pod running as planner's grant identity, where agent-2 may make Pods.
    let pods = Api::<Pod>::namespaced(other.client.clone(), "agents");
    let r = pods.create(&PostParams::default(), &pod("borrow", &grant_sa)).await;
    assert_forbidden(r, "agent-2 runs a Pod in agents as planner's grant identity");
    // Control: a Pod as agent-2's own ServiceAccount is admitted (no node runs it here).
    pods.create(&PostParams::default(), &pod("own", "agent-2")).await.expect("a Pod as its own identity");
    // Where the identity lives, agent-2 may make nothing.
    let r = Api::<Pod>::namespaced(other.client.clone(), GRANTS)
        .create(&PostParams::default(), &pod("borrow", &grant_sa))
        .await;
    assert_forbidden(r, "agent-2 runs a Pod in the grants namespace");
    // `edit` in agents lets agent-2 impersonate agents' ServiceAccounts, not a grant identity.
    let mut config = cluster.config();
    config.auth_info = kube::config::AuthInfo {
        token: Some(other.token.clone().into()),
        impersonate: Some(grant_user.clone()),
        ..Default::default()
    };
    let as_grant = Client::try_from(config).unwrap();
    assert_eq!(scenario::list_pods_status(&as_grant, "team-a").await, 403, "agent-2 acts as the grant identity");

    // team-a's admin, who may bind any role she holds there to anyone, adds
    // rights to grant identities, one or all of them: no policy decided that.
    cluster.kubectl(&["create", "rolebinding", "dana-admin", "-n", "team-a", "--clusterrole=admin", "--user=dana"]);
    let dana = Api::<RoleBinding>::namespaced(cluster.impersonate("dana", &[]), "team-a");
    for (what, subject) in [
        ("planner's grant identity", json!({"kind": "ServiceAccount", "name": grant_sa, "namespace": GRANTS})),
        (
            "every grant identity",
            json!({"kind": "Group", "name": format!("system:serviceaccounts:{GRANTS}"),
                                        "apiGroup": "rbac.authorization.k8s.io"}),
        ),
        (
            "a grant identity, as a user",
            json!({"kind": "User", "name": grant_user, "apiGroup": "rbac.authorization.k8s.io"}),
        ),
    ] {
        let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "more"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [subject]}))
        .unwrap();
        let r = dana.create(&PostParams::default(), &binding).await;
        assert_refused(r, "kube-jit-grant-subjects", &format!("team-a's admin binds admin to {what}"));
    }

    // A policy whose namespace selector takes in the grants namespace does
    // not grant there: a grant in it would reach other grants' identities.
    let mut broad = scenario::auto_policy();
    broad["grants"]["namespaces"] = json!({"selector": {"matchExpressions":
        [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}});
    scenario::apply_policy(&admin, "broad", broad).await;
    let mut into_grants = scenario::view_request("10m");
    into_grants["namespaces"] = json!([GRANTS]);
    planner.request("into-grants", into_grants).await;
    let denied = scenario::wait_phase(&admin, "agents", "into-grants", Phase::Denied, Duration::from_secs(30)).await;
    let why = denied.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Denied").unwrap().message;
    assert!(why.contains("is kube-jit's own"), "{why}");
    // Nor in the operator's own, where a grant could mint the operator's token
    // (it runs here as kube-jit-system/kube-jit, without leader election).
    let mut into_operator = scenario::view_request("10m");
    into_operator["namespaces"] = json!(["kube-jit-system"]);
    planner.request("into-operator", into_operator).await;
    let denied = scenario::wait_phase(&admin, "agents", "into-operator", Phase::Denied, Duration::from_secs(30)).await;
    let why = denied.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Denied").unwrap().message;
    assert!(why.contains("namespace kube-jit-system is kube-jit's own"), "{why}");

    // An admin's mistake: agent-2 is given the same rights in the grants
    // namespace. Admission still refuses a Pod as a grant identity.
    workloads_for_agent_2(&cluster, GRANTS);
    let pods = Api::<Pod>::namespaced(other.client.clone(), GRANTS);
    let r = support::eventually_value(Duration::from_secs(10), || async {
        let r = pods.create(&PostParams::default(), &pod("borrow", &grant_sa)).await;
        // The new RoleBinding reaches the authorizer a moment later.
        (!matches!(&r, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("cannot create resource")))
            .then_some(r)
    })
    .await
    .expect("agent-2's rights in the grants namespace took effect");
    assert_refused(r, POLICY, "agent-2 runs a Pod as planner's grant identity");

    // Through a Deployment: the ReplicaSet controller's Pods are refused too.
    let deployment: Deployment = serde_json::from_value(json!({"metadata": {"name": "borrow"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "borrow"}},
            "template": {"metadata": {"labels": {"app": "borrow"}}, "spec": pod("t", &grant_sa).spec}}}))
    .unwrap();
    Api::<Deployment>::namespaced(other.client.clone(), GRANTS)
        .create(&PostParams::default(), &deployment)
        .await
        .expect("a Deployment is only a wish");
    let refused = support::eventually(Duration::from_secs(30), || async {
        let sets = Api::<ReplicaSet>::namespaced(admin.clone(), GRANTS)
            .list(&ListParams::default().labels("app=borrow"))
            .await;
        sets.is_ok_and(|l| {
            l.items.iter().any(|rs| {
                rs.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.type_ == "ReplicaFailure" && c.message.as_deref().is_some_and(|m| m.contains(POLICY))
                    })
                })
            })
        })
    })
    .await;
    assert!(refused, "the ReplicaSet controller was not refused a Pod as the grant identity");
    let running_as_grant = Api::<Pod>::namespaced(admin.clone(), GRANTS).list(&ListParams::default()).await.unwrap();
    assert!(
        running_as_grant
            .items
            .iter()
            .all(|p| p.spec.as_ref().and_then(|s| s.service_account_name.as_deref()) != Some(grant_sa.as_str())),
        "a Pod runs as the grant identity"
    );

    // A legacy token Secret, which the token controller would fill with a token that never expires.
    let legacy: Secret = serde_json::from_value(json!({"metadata": {"name": "forever",
        "annotations": {"kubernetes.io/service-account.name": grant_sa}},
        "type": "kubernetes.io/service-account-token"}))
    .unwrap();
    let r = Api::<Secret>::namespaced(other.client.clone(), GRANTS).create(&PostParams::default(), &legacy).await;
    assert_refused(r, POLICY, "agent-2 makes a legacy token Secret for the grant identity");
}
