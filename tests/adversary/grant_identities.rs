//! Nothing runs as a grant identity, and nothing holds a long-lived token for
//! one: neither a Pod naming it (made directly or by a workload controller)
//! nor a legacy token Secret. Kubernetes lets anyone who creates Pods in a
//! namespace run them as any of its ServiceAccounts, and anyone who creates
//! Secrets get a non-expiring token for one; admission refuses both for grant
//! identities.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, PostParams};
use kube_jit::api::Phase;
use serde_json::json;

use crate::assert_refused;
use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

const POLICY: &str = "kube-jit-grant-identities";

fn pod(name: &str, service_account: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"serviceAccountName": service_account, "containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap()
}

#[tokio::test]
async fn nothing_runs_as_a_grant_identity() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    // agent-2 may create Pods, Deployments and Secrets in `agents`, nothing more.
    let other = Agent::create(&cluster, &admin, "agents", "agent-2").await;
    cluster.kubectl(&[
        "create",
        "role",
        "workloads",
        "-n",
        "agents",
        "--verb=create,get,list",
        "--resource=pods,deployments.apps,secrets",
    ]);
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "agent-2-workloads",
        "-n",
        "agents",
        "--role=workloads",
        "--serviceaccount=agents:agent-2",
    ]);
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    planner.request("r3", scenario::view_request("10m")).await;
    let r3 = scenario::wait_phase(&admin, "agents", "r3", Phase::Granted, Duration::from_secs(30)).await;
    let grant_sa = r3.status.unwrap().grant.unwrap().service_account.unwrap().name;

    // Case 3: a Pod running as planner's grant identity.
    let pods = Api::<Pod>::namespaced(other.client.clone(), "agents");
    let r = pods.create(&PostParams::default(), &pod("borrow", &grant_sa)).await;
    assert_refused(r, POLICY, "agent-2 runs a Pod as planner's grant identity");
    // Control: a Pod as agent-2's own ServiceAccount is admitted (no node runs it here).
    pods.create(&PostParams::default(), &pod("own", "agent-2")).await.expect("a Pod as its own identity");

    // Through a Deployment: the ReplicaSet controller's Pods are refused too.
    let deployment: Deployment = serde_json::from_value(json!({"metadata": {"name": "borrow"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "borrow"}},
            "template": {"metadata": {"labels": {"app": "borrow"}},
                "spec": {"serviceAccountName": grant_sa, "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap();
    Api::<Deployment>::namespaced(other.client.clone(), "agents")
        .create(&PostParams::default(), &deployment)
        .await
        .expect("a Deployment is only a wish");
    let refused = support::eventually(Duration::from_secs(30), || async {
        let sets = Api::<ReplicaSet>::namespaced(admin.clone(), "agents")
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
    let running_as_grant = Api::<Pod>::namespaced(admin.clone(), "agents").list(&ListParams::default()).await.unwrap();
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
    let r = Api::<Secret>::namespaced(other.client.clone(), "agents").create(&PostParams::default(), &legacy).await;
    assert_refused(r, POLICY, "agent-2 makes a legacy token Secret for the grant identity");
}
