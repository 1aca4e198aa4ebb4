//! Claims are trusted only if admission was in force when they were made. A
//! request, approval or extension created while a kube-jit admission policy
//! or binding was missing, lenient or edited is never decided on the claims
//! it carries: not when the policies return, and not after a restart. The
//! proof is stateless: the admission objects' own creation and managedFields
//! times against the object's `creationTimestamp`.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_jit::api::{AccessApproval, AccessRequest, Phase};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

/// The request's Approved condition: (reason, message).
async fn approved_condition(admin: &Client, name: &str) -> Option<(String, String)> {
    let r = Api::<AccessRequest>::namespaced(admin.clone(), "agents").get(name).await.ok()?;
    let c = r.status?.conditions.into_iter().find(|c| c.type_ == "Approved")?;
    Some((c.reason, c.message))
}

/// Waits until `name` ends Denied with reason AdmissionNotProven.
async fn assert_not_proven(admin: &Client, name: &str) {
    let r = scenario::wait_phase(admin, "agents", name, Phase::Denied, Duration::from_secs(30)).await;
    let (reason, message) = approved_condition(admin, name).await.unwrap_or_default();
    assert_eq!(reason, "AdmissionNotProven", "{name}: {message} ({:?})", r.status);
}

/// Removes the binding of `policy`, as an admin might by mistake (or a
/// compromised admin on purpose), and waits until the API server admits what
/// `probe` (a dry run) makes.
async fn unbind<F, Fut>(cluster: &Cluster, policy: &str, probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    cluster.kubectl(&["delete", "validatingadmissionpolicybinding", policy]);
    let open = support::eventually(Duration::from_secs(30), probe).await;
    assert!(open, "{policy} still enforced 30 s after its binding was deleted");
}

fn dry_run() -> PostParams {
    PostParams { dry_run: true, ..PostParams::default() }
}

/// `planner` may have `edit` in team-a only through the group `sre` (which it
/// is not in); the policy needs one approval from `bob` for `view`.
async fn stage(cluster: &Cluster, admin: &Client) -> Agent {
    let planner = scenario::stage(cluster, admin, scenario::auto_policy()).await;
    scenario::apply_policy(
        admin,
        "sre-edit",
        json!({"subjects": {"groups": ["sre"]},
               "grants": {"clusterRoles": ["edit"], "namespaces": {"names": ["team-a"]}},
               "duration": {"default": "5m", "max": "1h"}}),
    )
    .await;
    scenario::apply_policy(
        admin,
        "agents-read",
        json!({"subjects": {"serviceAccounts": [{"namespace": "agents", "name": "planner"}]},
               "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}},
               "duration": {"default": "5m", "max": "1h"},
               "extension": {"allowed": true},
               "approval": {"mode": "Manual", "required": 1, "approvers": {"users": ["bob"]}}}),
    )
    .await;
    scenario::grant_approver_role(admin, "agents", &["bob", "mallory"]).await;
    planner
}

fn edit_request() -> serde_json::Value {
    json!({"role": {"kind": "ClusterRole", "name": "edit"}, "namespaces": ["team-a"], "duration": "5m",
           "purpose": "roll back a broken deploy"})
}

#[tokio::test]
async fn claims_made_without_admission_prove_nothing() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = stage(&cluster, &admin).await;
    let mut operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    // Control: made with admission in force, bob's approval grants.
    planner.request("control", scenario::view_request("5m")).await;
    let control = scenario::wait_phase(&admin, "agents", "control", Phase::Pending, Duration::from_secs(30)).await;
    approve(&cluster, &control, "bob").await;
    scenario::wait_phase(&admin, "agents", "control", Phase::Granted, Duration::from_secs(30)).await;

    // Case 2: with requester-is-creator unbound, planner claims the group sre.
    let mut spec = edit_request();
    spec["requester"] = json!({"user": planner.user, "groups": ["sre"]});
    let claim: AccessRequest = serde_json::from_value(
        json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "claims-sre"}, "spec": spec}),
    )
    .unwrap();
    let requests = Api::<AccessRequest>::namespaced(planner.client.clone(), "agents");
    unbind(&cluster, "kube-jit-requester-is-creator", || async { requests.create(&dry_run(), &claim).await.is_ok() })
        .await;
    Api::<AccessRequest>::namespaced(planner.client.clone(), "agents")
        .create(&PostParams::default(), &claim)
        .await
        .expect("nothing checks the claim while the binding is gone");
    let held = support::eventually(Duration::from_secs(30), || async {
        approved_condition(&admin, "claims-sre").await.is_some_and(|(reason, _)| reason == "AdmissionPoliciesMissing")
    })
    .await;
    assert!(held, "claims-sre not held: {:?}", approved_condition(&admin, "claims-sre").await);
    // And an extension of the control grant by someone who is not its
    // requester, with request-integrity unbound too.
    let intruder = Agent::create(&cluster, &admin, "agents", "intruder").await;
    let theirs = Api::<AccessRequest>::namespaced(intruder.client.clone(), "agents");
    let extend = Patch::Merge(json!({"spec": {"extensions": ["30m"]}}));
    let dry = PatchParams { dry_run: true, ..PatchParams::default() };
    unbind(&cluster, "kube-jit-request-integrity", || async { theirs.patch("control", &dry, &extend).await.is_ok() })
        .await;
    theirs
        .patch("control", &PatchParams::default(), &extend)
        .await
        .expect("nothing checks who extends while the bindings are gone");

    // The policies return, and the operator restarts: nothing was stored.
    cluster.install_crds_and_admission();
    operator.kill();
    operator.restart();
    assert_not_proven(&admin, "claims-sre").await;
    let refused = support::eventually(Duration::from_secs(30), || async {
        let r = Api::<AccessRequest>::namespaced(admin.clone(), "agents").get("control").await.unwrap();
        r.status.is_some_and(|s| s.extensions.first().is_some_and(|e| !e.granted && e.message.contains("unproven")))
    })
    .await;
    assert!(refused, "an extension made without admission was not refused");

    // An approval made while approver-is-creator was unbound names bob, but mallory made it.
    planner.request("approved-by-mallory", scenario::view_request("5m")).await;
    let pending =
        scenario::wait_phase(&admin, "agents", "approved-by-mallory", Phase::Pending, Duration::from_secs(30)).await;
    let approvals = Api::<AccessApproval>::namespaced(cluster.impersonate("mallory", &[]), "agents");
    let probe = spoofed_approval(&pending, "bob");
    unbind(&cluster, "kube-jit-approver-is-creator", || async { approvals.create(&dry_run(), &probe).await.is_ok() })
        .await;
    approve_claiming(&cluster, &pending, "mallory", "bob").await;
    cluster.install_crds_and_admission();
    let ignored = support::eventually(Duration::from_secs(30), || async {
        approved_condition(&admin, "approved-by-mallory")
            .await
            .is_some_and(|(_, m)| m.contains("bob: made before kube-jit-approver-is-creator was in force"))
    })
    .await;
    assert!(ignored, "a spoofed approval counted: {:?}", approved_condition(&admin, "approved-by-mallory").await);
    // bob's own approval, made now, counts.
    approve(&cluster, &pending, "bob").await;
    scenario::wait_phase(&admin, "agents", "approved-by-mallory", Phase::Granted, Duration::from_secs(30)).await;

    // A policy made lenient for a moment (failurePolicy Ignore, then back):
    // what was created meanwhile is not trusted either.
    cluster.kubectl(&[
        "patch",
        "validatingadmissionpolicy",
        "kube-jit-requester-is-creator",
        "--type=merge",
        "-p",
        r#"{"spec":{"failurePolicy":"Ignore"}}"#,
    ]);
    planner.request("while-lenient", scenario::view_request("5m")).await;
    cluster.install_crds_and_admission();
    assert_not_proven(&admin, "while-lenient").await;
}

async fn approve(cluster: &Cluster, request: &AccessRequest, user: &str) {
    approve_claiming(cluster, request, user, user).await
}

/// An approval made by `user` that names `approver`.
async fn approve_claiming(cluster: &Cluster, request: &AccessRequest, user: &str, approver: &str) {
    Api::<AccessApproval>::namespaced(cluster.impersonate(user, &[]), "agents")
        .create(&PostParams::default(), &spoofed_approval(request, approver))
        .await
        .expect("approval");
}

/// An approval of `request` that names `approver`, whoever makes it.
fn spoofed_approval(request: &AccessRequest, approver: &str) -> AccessApproval {
    serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": support::unique_name("approval")},
        "spec": {"request": request.metadata.name, "requestUID": request.metadata.uid, "decision": "Approve",
                 "approver": approver, "reason": "fine"}}))
    .unwrap()
}
