//! Nothing outside a request's spec is a tenant's to write: labels,
//! annotations, finalizers and ownerReferences of kube-jit's objects change
//! only by the operator; only the requester (or a holder of the verb
//! `revoke`) changes a request; a grant's objects are made and changed only
//! by the operator; and a request deleted by any path has its grant revoked.
//! Every row attacks with the tenant's own credentials.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_jit::api::{AccessApproval, AccessRequest, Phase};
use serde_json::json;

use crate::assert_refused;
use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

/// Merge-patches `name` in `agents` as `client`.
async fn patch_request(client: &Client, name: &str, patch: serde_json::Value) -> Result<AccessRequest, kube::Error> {
    Api::<AccessRequest>::namespaced(client.clone(), "agents")
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
}

async fn granted(agent: &Agent, admin: &Client, name: &str) -> AccessRequest {
    agent.request(name, scenario::view_request("10m")).await;
    scenario::wait_phase(admin, "agents", name, Phase::Granted, Duration::from_secs(30)).await
}

/// The tenants: `planner` (requester), `intruder` (another requester in the
/// same namespace), `olga` (every verb on every resource in `agents`, as the
/// namespace's owner), `dana` (`admin` in team-a, where grants bind) and
/// `alice` (an approver, who may revoke).
#[tokio::test]
async fn nothing_outside_the_spec_is_writable_by_tenants() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    let intruder = Agent::create(&cluster, &admin, "agents", "intruder").await;
    cluster.kubectl(&["create", "role", "owner", "-n", "agents", "--verb=*", "--resource=*.*"]);
    cluster.kubectl(&["create", "rolebinding", "olga-owner", "-n", "agents", "--role", "owner", "--user", "olga"]);
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "dana-admin",
        "-n",
        "team-a",
        "--clusterrole",
        "admin",
        "--user",
        "dana",
    ]);
    scenario::grant_approver_role(&admin, "agents", &["alice"]).await;
    let olga = cluster.impersonate("olga", &[]);
    let dana = cluster.impersonate("dana", &[]);
    let alice = cluster.impersonate("alice", &[]);
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    let mine = granted(&planner, &admin, "mine").await;
    let integrity = "kube-jit-request-integrity";

    // Case 5: the requester drops the finalizer, or adds an owner for the
    // garbage collector to follow; so does the namespace's owner.
    for (who, client) in [("planner", &planner.client), ("olga", &olga)] {
        let r = patch_request(client, "mine", json!({"metadata": {"finalizers": null}})).await;
        assert_refused(r, integrity, &format!("{who} drops the finalizer"));
        let owner = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"});
        let r = patch_request(client, "mine", json!({"metadata": {"ownerReferences": [owner]}})).await;
        assert_refused(r, integrity, &format!("{who} adds an ownerReference"));
        let r = patch_request(client, "mine", json!({"metadata": {"labels": {"team": "x"}}})).await;
        assert_refused(r, integrity, &format!("{who} labels a request"));
        let r = patch_request(client, "mine", json!({"metadata": {"annotations": {"kubejit.io/agent": "x"}}})).await;
        assert_refused(r, integrity, &format!("{who} sets a kubejit.io/ annotation on a request"));
        // The status the operator acts on (its grant id, expiry, objects).
        let forged =
            json!({"status": {"phase": "Approved", "grant": {"id": "x", "expiresAt": "2099-01-01T00:00:00Z"}}});
        let r = Api::<AccessRequest>::namespaced(client.clone(), "agents")
            .patch_status("mine", &PatchParams::default(), &Patch::Merge(&forged))
            .await;
        match r {
            // The requester role holds no rights on the status subresource at all.
            Err(kube::Error::Api(s)) if s.code == 403 && who == "planner" => {}
            other => assert_refused(other, integrity, &format!("{who} writes a request's status")),
        }
    }
    // Other annotations are the requester's (kubectl apply keeps its own there).
    patch_request(&planner.client, "mine", json!({"metadata": {"annotations": {"note": "x"}}}))
        .await
        .expect("a plain annotation");

    // A grant identity made before the operator makes it would carry the
    // maker's tokens into the grant: the names are reserved.
    let early: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "jit-next-0123456789ab"}})).unwrap();
    let r = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(olga.clone(), "agents")
        .create(&PostParams::default(), &early)
        .await;
    assert_refused(
        r,
        "kube-jit-grant-objects",
        "the namespace's owner makes a ServiceAccount named as a grant identity",
    );

    // The agent's owner is who approvals are checked against: the namespace's
    // owner may neither change it nor register the agent again under another.
    scenario::register_agent(&admin, "agents", "planner").await;
    let agents = Api::<kube_jit::api::AgentIdentity>::namespaced(olga.clone(), "agents");
    let r = agents.patch("planner", &PatchParams::default(), &Patch::Merge(json!({"spec": {"owner": "ghost"}}))).await;
    assert_refused(r, integrity, "the namespace's owner changes an agent's owner");
    let ghost: kube_jit::api::AgentIdentity = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "planner-2"},
        "spec": {"type": "ai-agent", "owner": "ghost", "serviceAccountName": "planner"}}))
    .unwrap();
    let r = agents.create(&PostParams::default(), &ghost).await;
    assert_refused(r, integrity, "the namespace's owner registers an agent owned by someone else");

    // Created with a finalizer of its own, or with kube-jit's labels.
    for (what, metadata) in [
        ("a foreign finalizer", json!({"name": "held", "finalizers": ["example.com/hold"]})),
        ("kube-jit's labels", json!({"name": "labelled", "labels": {"app.kubernetes.io/managed-by": "kube-jit"}})),
        (
            "a kubejit.io/ annotation",
            json!({"name": "annotated", "annotations": {"kubejit.io/request": "agents/mine"}}),
        ),
    ] {
        let mut spec = scenario::view_request("5m");
        spec["requester"] = json!({"user": planner.user});
        let request: AccessRequest = serde_json::from_value(
            json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": metadata, "spec": spec}),
        )
        .unwrap();
        let r = Api::<AccessRequest>::namespaced(planner.client.clone(), "agents")
            .create(&PostParams::default(), &request)
            .await;
        assert_refused(r, integrity, &format!("a request created with {what}"));
    }

    // Another requester of the namespace revokes someone else's grant.
    let r = patch_request(&intruder.client, "mine", json!({"spec": {"revoke": true}})).await;
    assert_refused(r, integrity, "another requester revokes planner's grant");

    // An approval, once made, is not relabelled or re-annotated, even by the
    // namespace's owner (its spec is immutable by the CRD's own rule).
    let approval: AccessApproval = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval", "metadata": {"name": "a-1"},
        "spec": {"request": "mine", "requestUID": mine.uid(), "decision": "Approve", "approver": "alice", "reason": "ok"}}))
    .unwrap();
    Api::<AccessApproval>::namespaced(alice.clone(), "agents")
        .create(&PostParams::default(), &approval)
        .await
        .expect("approval");
    let r = Api::<AccessApproval>::namespaced(olga.clone(), "agents")
        .patch("a-1", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
        .await;
    assert_refused(r, integrity, "the namespace's owner labels an approval");

    // The grant's own objects: team-a's admin may not widen, relabel or
    // forge them (she may delete them: that only ends the grant).
    let grant = mine.status.as_ref().unwrap().grant.clone().unwrap();
    let binding = grant.objects.iter().find(|o| o.kind == "RoleBinding" && o.namespace == "team-a").expect("binding");
    let bindings = Api::<RoleBinding>::namespaced(dana.clone(), "team-a");
    let dana_subject = json!({"kind": "User", "name": "dana", "apiGroup": "rbac.authorization.k8s.io"});
    let sa = grant.service_account.clone().unwrap();
    let grant_subject = json!({"kind": "ServiceAccount", "name": sa.name, "namespace": sa.namespace});
    let r = bindings
        .patch(
            &binding.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"subjects": [grant_subject, dana_subject]})),
        )
        .await;
    let both = "kube-jit-grant-objects|kube-jit-grant-subjects";
    assert_refused(r, both, "team-a's admin adds herself to a grant's RoleBinding");
    let r = bindings
        .patch(
            &binding.name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": null}}})),
        )
        .await;
    assert_refused(r, both, "team-a's admin strips a grant RoleBinding's labels");
    let forged: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "jit-forged-0123456789ab", "labels": {"app.kubernetes.io/managed-by": "kube-jit"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "ServiceAccount", "name": "planner", "namespace": "agents"}]}))
    .unwrap();
    let r = bindings.create(&PostParams::default(), &forged).await;
    assert_refused(r, "kube-jit-grant-objects", "team-a's admin forges a labelled RoleBinding");

    // Revoking: the requester may, and an approver (verb `revoke`) may.
    patch_request(&planner.client, "mine", json!({"spec": {"revoke": true}})).await.expect("the requester revokes");
    scenario::wait_phase(&admin, "agents", "mine", Phase::Revoked, Duration::from_secs(30)).await;
    granted(&planner, &admin, "theirs").await;
    patch_request(&alice, "theirs", json!({"spec": {"revoke": true}})).await.expect("an approver revokes");
    scenario::wait_phase(&admin, "agents", "theirs", Phase::Revoked, Duration::from_secs(30)).await;

    // Deleted behind the operator's back: an admin strips the finalizer and
    // deletes. The grant still ends, from the last copy, and is audited.
    let doomed = granted(&planner, &admin, "doomed").await;
    let id = doomed.status.as_ref().unwrap().grant.as_ref().unwrap().id.clone();
    let holder = cluster.client_with_token(&planner.mint(&doomed).await.expect("mint"));
    assert_eq!(scenario::list_pods_status(&holder, "team-a").await, 200);
    patch_request(&admin, "doomed", json!({"metadata": {"finalizers": null}}))
        .await
        .expect("admin strips the finalizer");
    Api::<AccessRequest>::namespaced(admin.clone(), "agents")
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete");
    let ended = support::eventually(Duration::from_secs(10), || async {
        scenario::list_pods_status(&holder, "team-a").await != 200
            && !scenario::managed_objects(&admin).await.iter().any(|o| o.contains(&id))
            && operator.audit_events(&id).iter().any(|e| e == "revoked")
    })
    .await;
    assert!(
        ended,
        "a request deleted without its finalizer kept its grant: {:?}, audit {:?}",
        scenario::managed_objects(&admin).await,
        operator.audit_events(&id)
    );
}
