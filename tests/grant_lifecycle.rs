//! The grant lifecycle end to end, on a real control plane with the real
//! operator binary: an agent that authenticates with its own ServiceAccount
//! token asks, is granted, uses the grant, and loses it — on expiry, on
//! revoke, on deletion, and across an operator outage.
mod support;

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_jit::api::{AccessApproval, AccessRequest, Phase};
use serde_json::json;
use support::Cluster;
use support::operator::Operator;
use support::scenario::{self, Agent, auto_policy, view_request};

/// Fields drop in order: the operator stops before its cluster does.
struct World {
    operator: Operator,
    agent: Agent,
    admin: Client,
    cluster: Cluster,
}

/// A dedicated control plane with the operator running, namespaces `agents`,
/// `team-a`, `team-b`, an agent `planner` in `agents`, and `policy`.
async fn world(policy: serde_json::Value) -> World {
    world_with(policy, "2").await
}

async fn world_with(policy: serde_json::Value, sweep_interval: &str) -> World {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let agent = scenario::stage(&cluster, &admin, policy).await;
    let operator = Operator::start(&cluster, &["--sweep-interval", sweep_interval]).await;
    operator.wait_started().await;
    World { operator, agent, admin, cluster }
}

#[tokio::test]
async fn auto_approved_grant_works_in_scope_only_and_ends_at_expiry() {
    // A long sweep interval keeps the API-call count to the grant's own calls.
    let w = world_with(auto_policy(), "3600").await;
    // Zero standing privilege: the agent itself can read nothing.
    assert_eq!(scenario::list_pods_status(&w.agent.client, "team-a").await, 403);

    let audit_from = w.cluster.audit_position();
    let created = Instant::now();
    w.agent.request("debug", view_request("15s")).await;
    let granted = scenario::wait_phase(&w.admin, "agents", "debug", Phase::Granted, Duration::from_secs(20)).await;
    let token = w.agent.mint(&granted).await.expect("the requester may mint a token for its grant");
    let grant = w.cluster.client_with_token(&token);
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
    eprintln!("measure: grant latency (created → first in-scope 200) {:?}", created.elapsed());

    // Out of scope: another namespace, another verb.
    assert_eq!(scenario::list_pods_status(&grant, "team-b").await, 403);
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    .unwrap();
    let create = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(grant.clone(), "team-a")
        .create(&PostParams::default(), &pod)
        .await;
    assert!(matches!(create, Err(kube::Error::Api(ref s)) if s.code == 403), "{create:?}");
    // Nobody but the requester may mint tokens for the grant identity.
    let other = Agent::create(&w.cluster, &w.admin, "agents", "intruder").await;
    assert!(matches!(other.mint_once(&granted).await, Err(kube::Error::Api(ref s)) if s.code == 403));

    // Expiry: forbidden within 2 s of expiresAt (the documented promise: no
    // grant stays authorized more than 2 s past it); unauthenticated once the SA is gone.
    let expires = scenario::expires_at(&granted);
    scenario::sleep_until(expires - jiff::SignedDuration::from_millis(500)).await;
    let forbidden = scenario::wait_pods_status(&grant, "team-a", 403, Duration::from_secs(5)).await;
    let lag_403 =
        jiff::Timestamp::now().duration_since(expires) - jiff::SignedDuration::try_from(forbidden.elapsed()).unwrap();
    eprintln!("measure: expiresAt → 403 {lag_403:?}");
    assert!(lag_403 < jiff::SignedDuration::from_secs(2), "403 came {lag_403:?} after expiresAt");
    scenario::wait_pods_status(&grant, "team-a", 401, Duration::from_secs(30)).await;
    let lag_401 = jiff::Timestamp::now().duration_since(expires);
    eprintln!("measure: expiresAt → 401 {lag_401:?}");

    let ended = scenario::wait_phase(&w.admin, "agents", "debug", Phase::Expired, Duration::from_secs(30)).await;
    let calls = w.cluster.api_calls_since(audit_from, support::operator::OPERATOR_USER);
    let total: usize = calls.iter().map(|c| c.1).sum();
    eprintln!("measure: operator API requests for one grant lifecycle: {total} {calls:?}");
    let id = ended.status.as_ref().unwrap().grant.as_ref().unwrap().id.clone();
    assert_eq!(w.operator.audit_events(&id), ["requested", "approved", "granted", "expired"]);
    scenario::assert_nothing_managed(&w.admin).await;
}

/// Creates an AccessApproval as `approver` (impersonated: admission checks the creator).
async fn approve(cluster: &Cluster, request: &str, approver: &str, decision: &str) {
    let client = cluster.impersonate(approver, &[]);
    let name = support::unique_name("approval");
    let uid = Api::<AccessRequest>::namespaced(cluster.admin(), "agents").get(request).await.unwrap().metadata.uid;
    let a: AccessApproval = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval", "metadata": {"name": name},
        "spec": {"request": request, "requestUID": uid, "decision": decision, "approver": approver, "reason": "checked"}}))
    .unwrap();
    Api::<AccessApproval>::namespaced(client, "agents").create(&PostParams::default(), &a).await.expect("approval");
}

#[tokio::test]
async fn approval_threshold_self_approval_and_denial() {
    let mut policy = auto_policy();
    policy["approval"] = json!({"mode": "Manual", "required": 2, "approvers": {"users": ["alice", "bob", "carol"]}});
    let w = world(policy).await;
    scenario::grant_approver_role(&w.admin, "agents", &["alice", "bob", "carol", "mallory", &w.agent.user]).await;

    w.agent.request("needs-two", view_request("5m")).await;
    let pending = scenario::wait_phase(&w.admin, "agents", "needs-two", Phase::Pending, Duration::from_secs(30)).await;
    assert!(pending.status.as_ref().unwrap().grant.is_none());
    // The requester's own approval does not count; nor does a stranger's.
    approve(&w.cluster, "needs-two", &w.agent.user, "Approve").await;
    approve(&w.cluster, "needs-two", "mallory", "Approve").await;
    approve(&w.cluster, "needs-two", "alice", "Approve").await;
    // Alice's approval is the last of the three: once the tally counts it, the
    // operator has decided on all three.
    let requests = Api::<AccessRequest>::namespaced(w.admin.clone(), "agents");
    let counted = support::eventually(Duration::from_secs(30), || async {
        let r = requests.get("needs-two").await.unwrap();
        r.status.and_then(|s| s.approvals).is_some_and(|t| t.approved_by.iter().any(|u| u == "alice"))
    })
    .await;
    assert!(counted, "alice's approval not counted: {:#?}", requests.get("needs-two").await.unwrap().status);
    let still = requests.get("needs-two").await.unwrap();
    assert_eq!(still.status.as_ref().unwrap().phase, Phase::Pending);
    let tally = still.status.as_ref().unwrap().approvals.clone().unwrap();
    assert_eq!(tally.approved_by, ["alice"]);
    assert!(scenario::managed_objects(&w.admin).await.is_empty(), "nothing is granted before the threshold");

    approve(&w.cluster, "needs-two", "bob", "Approve").await;
    let granted = scenario::wait_phase(&w.admin, "agents", "needs-two", Phase::Granted, Duration::from_secs(30)).await;
    assert_eq!(granted.status.unwrap().approvals.unwrap().approved_by, ["alice", "bob"]);

    // A denial ends a request.
    w.agent.request("denied", view_request("5m")).await;
    scenario::wait_phase(&w.admin, "agents", "denied", Phase::Pending, Duration::from_secs(30)).await;
    approve(&w.cluster, "denied", "alice", "Approve").await;
    approve(&w.cluster, "denied", "carol", "Deny").await;
    let denied = scenario::wait_phase(&w.admin, "agents", "denied", Phase::Denied, Duration::from_secs(30)).await;
    assert_eq!(denied.status.unwrap().approvals.unwrap().denied_by.as_deref(), Some("carol"));

    Api::<AccessRequest>::namespaced(w.admin.clone(), "agents")
        .delete("needs-two", &DeleteParams::default())
        .await
        .unwrap();
    scenario::assert_nothing_managed(&w.admin).await;
}

#[tokio::test]
async fn deleting_the_request_revokes_at_once() {
    let w = world(auto_policy()).await;
    w.agent.request("doomed", view_request("10m")).await;
    let granted = scenario::wait_phase(&w.admin, "agents", "doomed", Phase::Granted, Duration::from_secs(20)).await;
    let grant = w.cluster.client_with_token(&w.agent.mint(&granted).await.unwrap());
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;

    let deleted = Instant::now();
    Api::<AccessRequest>::namespaced(w.admin.clone(), "agents")
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let forbidden = scenario::wait_pods_status(&grant, "team-a", 403, Duration::from_secs(5)).await;
    let lag = forbidden - deleted;
    eprintln!("measure: delete → 403 {lag:?}");
    // Within 2 s: the documented bound (README), which revoke and deletion share with expiry.
    assert!(lag < Duration::from_secs(2), "deletion took {lag:?} to revoke");
    let gone = support::eventually(Duration::from_secs(30), || async {
        Api::<AccessRequest>::namespaced(w.admin.clone(), "agents").get_opt("doomed").await.unwrap().is_none()
    })
    .await;
    assert!(gone, "the request's finalizer was not released");
    scenario::assert_nothing_managed(&w.admin).await;
}

#[tokio::test]
async fn a_grant_that_expires_while_the_operator_is_down_is_revoked_on_start() {
    let mut w = world(auto_policy()).await;
    w.agent.request("outage", view_request("6s")).await;
    let granted = scenario::wait_phase(&w.admin, "agents", "outage", Phase::Granted, Duration::from_secs(20)).await;
    // The token is minted once the operator has made the grant usable (right
    // after Granted); then it goes down before the 6 s run out, however slow
    // the machine: the grant's RoleBinding needs no operator to keep working.
    let grant = w.cluster.client_with_token(&w.agent.mint(&granted).await.unwrap());
    w.operator.kill();
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
    let expires = scenario::expires_at(&granted);
    scenario::sleep_until(expires + jiff::SignedDuration::from_secs(2)).await;
    // Nobody revoked it while the operator was down (the safety net is the restart).
    assert_eq!(scenario::list_pods_status(&grant, "team-a").await, 200);

    let restarted = Instant::now();
    w.operator.restart();
    scenario::wait_pods_status(&grant, "team-a", 403, Duration::from_secs(30)).await;
    eprintln!("measure: operator restart → 403 for an overdue grant {:?}", restarted.elapsed());
    scenario::wait_phase(&w.admin, "agents", "outage", Phase::Expired, Duration::from_secs(30)).await;
    scenario::assert_nothing_managed(&w.admin).await;
}

#[tokio::test]
async fn requester_mode_gives_and_takes_the_agents_own_rights() {
    let w = world(auto_policy()).await;
    assert_eq!(scenario::list_pods_status(&w.agent.client, "team-a").await, 403);
    let mut spec = view_request("10m");
    spec["delivery"] = json!({"mode": "RequesterServiceAccount"});
    // Only a policy that says so binds the requester's own ServiceAccount:
    // the rights would reach whatever can act as it.
    w.agent.request("not-allowed", spec.clone()).await;
    let denied = scenario::wait_phase(&w.admin, "agents", "not-allowed", Phase::Denied, Duration::from_secs(20)).await;
    let why = &denied.status.unwrap().policy_evaluations[0].reason;
    assert!(why.contains("delivery.requesterServiceAccount"), "{why}");
    let mut policy = auto_policy();
    policy["delivery"] = json!({"requesterServiceAccount": true});
    scenario::apply_policy(&w.admin, "agents-read", policy).await;
    w.agent.request("own", spec).await;
    let granted = scenario::wait_phase(&w.admin, "agents", "own", Phase::Granted, Duration::from_secs(20)).await;
    assert_eq!(
        granted.status.as_ref().unwrap().grant.as_ref().unwrap().username.as_deref(),
        Some(w.agent.user.as_str())
    );
    scenario::wait_pods_status(&w.agent.client, "team-a", 200, Duration::from_secs(30)).await;
    assert_eq!(scenario::list_pods_status(&w.agent.client, "team-b").await, 403);

    // Early revoke by the requester.
    let revoked = Instant::now();
    Api::<AccessRequest>::namespaced(w.agent.client.clone(), "agents")
        .patch("own", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}})))
        .await
        .expect("revoke");
    let forbidden = scenario::wait_pods_status(&w.agent.client, "team-a", 403, Duration::from_secs(5)).await;
    let lag = forbidden - revoked;
    eprintln!("measure: revoke → 403 {lag:?}");
    // Within 2 s: the documented bound (README), which revoke and deletion share with expiry.
    assert!(lag < Duration::from_secs(2), "revocation took {lag:?}");
    scenario::wait_phase(&w.admin, "agents", "own", Phase::Revoked, Duration::from_secs(30)).await;
    // The agent's own ServiceAccount survives: only the binding was the grant's.
    assert_eq!(scenario::list_pods_status(&w.agent.client, "team-a").await, 403);
    scenario::assert_nothing_managed(&w.admin).await;
}

#[tokio::test]
async fn fails_closed_on_no_policy_and_on_hand_deleted_objects() {
    let w = world(auto_policy()).await;
    // Out of policy: another namespace.
    let mut spec = view_request("5m");
    spec["namespaces"] = json!(["team-b"]);
    w.agent.request("elsewhere", spec).await;
    let denied = scenario::wait_phase(&w.admin, "agents", "elsewhere", Phase::Denied, Duration::from_secs(30)).await;
    let status = denied.status.unwrap();
    assert_eq!(status.policy_evaluations[0].reason, "namespace team-b is not among its namespaces");
    let condition = status.conditions.iter().find(|c| c.type_ == "Denied").unwrap();
    assert_eq!(condition.reason, "NoPolicyAllows");

    // A token Secret; deleting it (a managed object) ends the grant.
    let mut spec = view_request("10m");
    spec["delivery"] = json!({"tokenSecret": true});
    w.agent.request("with-secret", spec).await;
    let granted =
        scenario::wait_phase(&w.admin, "agents", "with-secret", Phase::Granted, Duration::from_secs(20)).await;
    let secret_name = granted.status.as_ref().unwrap().grant.as_ref().unwrap().service_account.clone().unwrap().name;
    let token = scenario::token_from_secret(&w.agent.client, &granted).await;
    let grant = w.cluster.client_with_token(&token);
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(w.admin.clone(), "team-a")
        .delete(&secret_name, &DeleteParams::default())
        .await
        .expect("delete the grant's RoleBinding by hand");
    let ended = scenario::wait_phase(&w.admin, "agents", "with-secret", Phase::Revoked, Duration::from_secs(30)).await;
    let condition = ended.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Revoked").unwrap();
    assert_eq!(condition.reason, "ManagedObjectDeleted");
    scenario::assert_nothing_managed(&w.admin).await;
}

#[tokio::test]
async fn grants_nothing_while_the_admission_policies_are_missing() {
    let w = world(auto_policy()).await;
    w.cluster.kubectl(&["delete", "validatingadmissionpolicybinding", "kube-jit-requester-is-creator"]);
    let requests = Api::<AccessRequest>::namespaced(w.admin.clone(), "agents");
    let held = |r: &AccessRequest| {
        r.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.reason == "AdmissionPoliciesMissing"))
    };
    // The operator learns of the deletion from its own watch: probe until a
    // request is held for it. A probe granted before then is deleted (which
    // revokes it); the request under test comes after the first one held.
    let probing = Instant::now();
    for i in 0.. {
        assert!(probing.elapsed() < Duration::from_secs(60), "no request held after {i} probes");
        let name = format!("probe-{i}");
        w.agent.request(&name, view_request("5m")).await;
        let r = loop {
            let r = requests.get(&name).await.unwrap();
            if held(&r) || r.status.as_ref().is_some_and(|s| s.phase == Phase::Granted) {
                break r;
            }
            assert!(probing.elapsed() < Duration::from_secs(60), "{name} neither held nor granted: {:#?}", r.status);
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if held(&r) {
            break;
        }
        requests.delete(&name, &DeleteParams::default()).await.unwrap();
    }
    w.agent.request("unguarded", view_request("5m")).await;
    let ok = support::eventually(Duration::from_secs(30), || async { held(&requests.get("unguarded").await.unwrap()) })
        .await;
    assert!(ok, "the request was not held for missing admission policies");
    let r = requests.get("unguarded").await.unwrap();
    let status = r.status.unwrap();
    assert_eq!(status.phase, Phase::Pending);
    assert!(status.grant.is_none());
    let message = &status.conditions.iter().find(|c| c.type_ == "Approved").unwrap().message;
    assert!(message.contains("no ValidatingAdmissionPolicyBinding binds kube-jit-requester-is-creator"), "{message}");
    // Nothing is granted (probes granted before the operator knew are revoked by now).
    scenario::assert_nothing_managed(&w.admin).await;
    let events = w.cluster.kubectl(&["get", "events", "-n", "agents", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("AdmissionPoliciesMissing"), "{events}");
    assert!(
        w.operator
            .log_lines()
            .iter()
            .any(|l| l["message"] == "not granting" && l["reason"] == "AdmissionPoliciesMissing")
    );

    // Restored: the held request was made while nothing checked its claims,
    // so it is denied for that; one made now is granted.
    w.cluster.install_crds_and_admission();
    let denied = scenario::wait_phase(&w.admin, "agents", "unguarded", Phase::Denied, Duration::from_secs(30)).await;
    let reason = denied.status.unwrap().conditions.iter().find(|c| c.type_ == "Approved").map(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("AdmissionNotProven"));
    w.agent.request("guarded", view_request("5m")).await;
    scenario::wait_phase(&w.admin, "agents", "guarded", Phase::Granted, Duration::from_secs(30)).await;
}
