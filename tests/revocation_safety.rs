//! Revocation that does not depend on the controller's own timer, on the real
//! control plane: the expiry safety net revokes a grant the controller never
//! acted on within 2 s of its expiry, and the operator's revocation calls run
//! in an API priority level of their own (deploy/operator-rbac.yaml), so a
//! throttling API server does not queue them behind the operator's re-lists.
mod support;

use std::time::Duration;

use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::flowcontrol::v1::PriorityLevelConfiguration;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use kube_jit::api::{AccessRequest, Phase};
use kube_jit::controller::context::{Context, Stores};
use serde_json::json;
use support::Cluster;

async fn allowed(admin: &Client, user: &str, namespace: &str) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({"spec": {"user": user,
        "resourceAttributes": {"namespace": namespace, "verb": "list", "resource": "pods"}}}))
    .unwrap();
    let api = Api::<SubjectAccessReview>::all(admin.clone());
    api.create(&PostParams::default(), &review).await.unwrap().status.is_some_and(|s| s.allowed)
}

/// Caches nothing feeds, but for the requests one, which a real watch keeps.
fn stores(requests: reflector::Store<AccessRequest>) -> Stores {
    Stores {
        policies: reflector::store().0,
        approvals: reflector::store().0,
        agents: reflector::store().0,
        namespaces: reflector::store().0,
        requests,
        admission_policies: reflector::store().0,
        admission_bindings: reflector::store().0,
        role_bindings: reflector::store().0,
        cluster_role_bindings: reflector::store().0,
        roles: reflector::store().0,
        cluster_roles: reflector::store().0,
    }
}

/// A grant whose controller timer never fires (no controller runs at all:
/// the case of a lost requeue, or of a reconcile stuck behind a frozen cache)
/// is revoked by the safety net alone, within 2 s of its expiry.
#[tokio::test]
async fn the_safety_net_revokes_a_grant_the_controller_missed() {
    // The cache sees the grant; the net's own list, never after its start.
    revoked_by_the_safety_net(true, Duration::from_secs(600)).await;
}

/// The same when the controller's cache never saw the grant (a watch broken
/// before it was made): the net's periodic list finds it, and a read of the
/// grant alone confirms it overdue.
#[tokio::test]
async fn the_safety_net_revokes_a_grant_the_cache_never_saw() {
    revoked_by_the_safety_net(false, Duration::from_secs(2)).await;
}

/// A grant made by hand as the operator records it, with no controller, and
/// the safety net running with the requests cache fed by a watch (`fed`) or
/// frozen empty, and listing every `interval`.
async fn revoked_by_the_safety_net(fed: bool, interval: Duration) {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    for ns in ["agents", "work"] {
        support::scenario::create_namespace(&admin, ns, json!({})).await;
    }
    let requests: Api<AccessRequest> = Api::namespaced(admin.clone(), "agents");
    let (cache, writer) = reflector::store();
    if fed {
        let feed = reflector::reflector(writer, watcher(Api::all(admin.clone()), watcher::Config::default()));
        tokio::spawn(feed.default_backoff().for_each(|_| async {}));
    }
    let ctx = Context::new(admin.clone(), stores(cache.clone()), "cluster.local".into());
    let net = tokio::spawn(async move {
        kube_jit::controller::sweep::guard_expiries(&ctx, cache, Duration::from_millis(750), interval).await
    });

    // A grant as the operator records it, with its binding, and no operator.
    let r: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "missed"},
        "spec": {"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
                 "namespaces": ["work"], "duration": "10s", "purpose": "safety net"}}))
    .unwrap();
    let created = requests.create(&PostParams::default(), &r).await.unwrap();
    // Named as the operator names a grant's objects: revocation deletes
    // nothing else, whatever a status records.
    let id = kube_jit::names::grant_id("agents", "missed", &created.metadata.uid.clone().unwrap());
    let binding_name = kube_jit::names::object_name("missed", "", &id);
    let user = "missed-grant-identity";
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": binding_name, "namespace": "work",
                     "labels": {"app.kubernetes.io/managed-by": "kube-jit", "kubejit.io/grant-id": id}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "work").create(&PostParams::default(), &binding).await.unwrap();
    let expires_at = Timestamp::now() + SignedDuration::from_secs(4);
    let status = json!({"status": {"phase": "Granted", "grant": {"id": id, "expiresAt": expires_at.to_string(),
        "username": user, "objects": [{"kind": "RoleBinding", "namespace": "work", "name": binding_name}]}}});
    requests.patch_status("missed", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert!(allowed(&admin, user, "work").await, "the grant works before its expiry");

    support::scenario::sleep_until(expires_at).await;
    let revoked = support::eventually(Duration::from_secs(10), || async { !allowed(&admin, user, "work").await }).await;
    let lag = Timestamp::now().duration_since(expires_at);
    assert!(revoked, "still authorized 10 s after expiry");
    assert!(lag < SignedDuration::from_secs(2), "authorized {lag:?} after expiry");
    let ended = support::eventually(Duration::from_secs(30), || async {
        requests.get("missed").await.unwrap().status.is_some_and(|s| s.phase == Phase::Expired)
    })
    .await;
    assert!(ended, "the request was not recorded Expired: {:?}", requests.get("missed").await.unwrap().status);
    let message = requests.get("missed").await.unwrap().status.unwrap().conditions;
    assert!(message.iter().any(|c| c.message.contains("safety net")), "{message:?}");
    net.abort();
}

/// `(FlowSchema, PriorityLevel)` uids the API server classified a call into, from its response headers.
fn classified(cluster: &Cluster, token: &str, method: &str, path: &str) -> (String, String) {
    let admin = std::fs::read_to_string(cluster.kubeconfig()).unwrap();
    let server = admin.lines().find_map(|l| l.trim().strip_prefix("server: ")).unwrap().to_string();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-D", "-", "-X", method, "--cacert"])
        .arg(cluster.dir.join("pki/ca.crt"))
        .args(["-H", &format!("Authorization: Bearer {token}"), &format!("{server}{path}")])
        .output()
        .expect("run curl");
    let headers = String::from_utf8_lossy(&out.stdout).to_lowercase();
    let header = |name: &str| {
        headers.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim().to_string()).unwrap_or_default()
    };
    (header("x-kubernetes-pf-flowschema-uid:"), header("x-kubernetes-pf-prioritylevel-uid:"))
}

/// The shipped API priority puts the operator's deletes (and the list that
/// finds overdue grants) in a level of their own, its other calls in another.
#[tokio::test]
async fn revocation_calls_have_a_priority_level_of_their_own() {
    let cluster = Cluster::shared();
    cluster.kubectl(&["apply", "--server-side", "-f", "deploy/operator-rbac.yaml"]);
    let admin = cluster.admin();
    let token = support::service_account_token(&admin, "kube-jit-system", "kube-jit").await;
    let levels = Api::<PriorityLevelConfiguration>::all(admin.clone());
    let uid = |name: &'static str| {
        let levels = levels.clone();
        async move { levels.get(name).await.unwrap().uid().unwrap() }
    };
    let (revocation, operator) = (uid("kube-jit-revocation").await, uid("kube-jit").await);
    let delete = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings/jit-absent";
    // The API server applies new FlowSchemas within moments: wait for them.
    let ok = support::eventually(Duration::from_secs(30), || async {
        classified(cluster, &token, "DELETE", delete).1 == revocation
    })
    .await;
    assert!(
        ok,
        "a delete by the operator is not in kube-jit-revocation: {:?}",
        classified(cluster, &token, "DELETE", delete)
    );
    // Likewise for the other classifications (kube-jit is a FlowSchema of its own).
    let overdue = "/apis/kubejit.io/v1alpha1/accessrequests";
    let ok = support::eventually(Duration::from_secs(30), || async {
        classified(cluster, &token, "GET", overdue).1 == revocation
    })
    .await;
    assert!(ok, "listing requests is not in kube-jit-revocation: {:?}", classified(cluster, &token, "GET", overdue));
    let relist = "/apis/rbac.authorization.k8s.io/v1/rolebindings";
    let ok = support::eventually(Duration::from_secs(30), || async {
        classified(cluster, &token, "GET", relist).1 == operator
    })
    .await;
    assert!(ok, "other lists are not in kube-jit: {:?}", classified(cluster, &token, "GET", relist));
}
