//! kube-jit's own objects are those its grants recorded, never those that
//! merely carry its labels: a binding labelled as kube-jit's (or as a
//! Kubernetes default) that gives an agent's ServiceAccount rights is
//! standing privilege, and is reported as such; neither the sweep nor
//! `kube-jit uninstall` ever deletes it.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_jit::api::{AccessRequest, AgentIdentity, Phase};
use serde_json::json;

use crate::support::operator::{self, Operator};
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
/// refuses that, and made anyway, the labels hide nothing; nor do the
/// bootstrap label on a ClusterRoleBinding or a forged grant id and request
/// annotation. The sweep reports the binding and leaves it, and so does
/// uninstall, while it deletes what kube-jit did make.
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
    let operator = Operator::start(&cluster, &["--sweep-interval", "1"]).await;
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

    // The sweep (every second here) judges it, reports it, and leaves it: it
    // names a grant id no request has, and expires in 2099.
    let forged = "RoleBinding team-b/jit-helper-0123456789ab";
    let reported = support::eventually(Duration::from_secs(30), || async {
        operator.log_lines().iter().any(|l| {
            l["message"].as_str().is_some_and(|m| m.contains("no grant recorded them"))
                && l["objects"].as_str().is_some_and(|o| o.contains(forged))
        })
    })
    .await;
    assert!(reported, "the sweep did not report {forged}:\n{}", operator.log_tail(30));
    let bindings = Api::<RoleBinding>::namespaced(admin.clone(), "team-b");
    assert!(bindings.get_opt("jit-helper-0123456789ab").await.unwrap().is_some(), "the sweep deleted {forged}");

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

/// Uninstall deletes what kube-jit made and nothing else: a binding that only
/// carries its labels is named and left alone.
#[tokio::test]
async fn uninstall_deletes_only_what_kube_jit_made() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;
    planner.request("real", scenario::view_request("10m")).await;
    let real = scenario::wait_phase(&admin, "agents", "real", Phase::Granted, Duration::from_secs(30)).await;
    // Made by an admin (as if while admission was off).
    let labelled: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "jit-helper-0123456789ab", "namespace": "team-b",
                     "labels": {"app.kubernetes.io/managed-by": "kube-jit", "kubejit.io/grant-id": "0123456789ab"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "dana", "apiGroup": "rbac.authorization.k8s.io"}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "team-b").create(&PostParams::default(), &labelled).await.unwrap();
    drop(operator);

    let out = operator::run_as_operator(&cluster, &["uninstall", "--log-format", "text"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "uninstall failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("left alone: RoleBinding team-b/jit-helper-0123456789ab"), "{stdout}");
    assert!(
        Api::<RoleBinding>::namespaced(admin.clone(), "team-b")
            .get_opt("jit-helper-0123456789ab")
            .await
            .unwrap()
            .is_some()
    );
    // kube-jit's own grant is gone, every object of it.
    let grant = real.status.unwrap().grant.unwrap();
    for o in &grant.objects {
        let found = kube_jit::controller::objects::exists_ref(&admin, o).await.unwrap();
        assert!(!found || o.kind == "Secret", "{o:?} survived uninstall:\n{stdout}");
    }
    let ended = Api::<AccessRequest>::namespaced(admin.clone(), "agents").get("real").await.unwrap();
    assert_eq!(ended.status.unwrap().phase, Phase::Revoked);
}
