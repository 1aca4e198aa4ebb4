//! kube-jit's own objects are those its grants recorded, never those that
//! merely carry its labels: a binding labelled as kube-jit's (or as a
//! Kubernetes default) that gives an agent's ServiceAccount rights is
//! standing privilege, and is reported as such.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_jit::api::AgentIdentity;
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario;
use crate::support::{self, Cluster};

/// The AgentIdentity `planner`'s StandingPrivilege condition: (status, message).
async fn standing(admin: &Client) -> Option<(String, String)> {
    let agent = Api::<AgentIdentity>::namespaced(admin.clone(), "agents").get("planner").await.ok()?;
    let c = agent.status?.conditions.into_iter().find(|c| c.type_ == "StandingPrivilege")?;
    Some((c.status, c.message))
}

/// Waits until the condition is True and names `binding`.
async fn assert_flagged(admin: &Client, binding: &str) {
    let flagged = support::eventually(Duration::from_secs(30), || async {
        standing(admin).await.is_some_and(|(s, m)| s == "True" && m.contains(binding))
    })
    .await;
    assert!(flagged, "{binding} not reported as standing privilege: {:?}", standing(admin).await);
}

/// Case 4: the admin of team-b (holding `admin` there, nothing more) binds
/// `planner`'s own ServiceAccount to `admin` with kube-jit's labels; admission
/// refuses that, and made anyway, the labels hide nothing; nor do the bootstrap label on a ClusterRoleBinding or
/// a forged grant id and request annotation.
#[tokio::test]
async fn labels_do_not_hide_standing_privilege() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    scenario::register_agent(&admin, "agents", "planner").await;
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "team-b-admin",
        "-n",
        "team-b",
        "--clusterrole",
        "admin",
        "--user",
        "dana",
    ]);
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;
    let clean = support::eventually(Duration::from_secs(30), || async {
        standing(&admin).await.is_some_and(|(s, _)| s == "False")
    })
    .await;
    assert!(clean, "planner should start without standing privilege: {:?}", standing(&admin).await);

    // As dana, who runs team-b.
    let dana = cluster.impersonate("dana", &[]);
    let labelled: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "jit-helper-0123456789ab", "namespace": "team-b",
                     "labels": {"app.kubernetes.io/managed-by": "kube-jit", "kubejit.io/grant-id": "0123456789ab"},
                     "annotations": {"kubejit.io/request": "agents/debug", "kubejit.io/expires-at": "2099-01-01T00:00:00Z"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "planner", "namespace": "agents"}]}))
    .unwrap();
    let refused = Api::<RoleBinding>::namespaced(dana, "team-b").create(&PostParams::default(), &labelled).await;
    crate::assert_refused(refused, "kube-jit-grant-objects", "team-b's admin makes a binding labelled as kube-jit's");
    // Made anyway (by an admin here, as if while admission was off): the
    // labels hide nothing.
    Api::<RoleBinding>::namespaced(admin.clone(), "team-b")
        .create(&PostParams::default(), &labelled)
        .await
        .expect("an admin may make it");
    assert_flagged(&admin, "RoleBinding team-b/jit-helper-0123456789ab").await;

    // The bootstrap label on a ClusterRoleBinding (made by the admin here:
    // a tenant cannot, but the label must not be what decides).
    let defaults: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "system:looks-default", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts:agents", "apiGroup": "rbac.authorization.k8s.io"}]}))
    .unwrap();
    Api::<ClusterRoleBinding>::all(admin.clone())
        .patch("system:looks-default", &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&defaults))
        .await
        .expect("ClusterRoleBinding");
    assert_flagged(&admin, "ClusterRoleBinding system:looks-default").await;
    // Kubernetes' own default bindings (discovery, basic user) are still not standing privilege.
    let (_, message) = standing(&admin).await.unwrap();
    assert!(!message.contains("system:discovery") && !message.contains("system:basic-user"), "{message}");
}
