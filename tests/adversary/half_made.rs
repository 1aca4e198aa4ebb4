//! No usable access without a recorded grant: the grant identity's rights
//! are made first, `Granted` and its audit line are recorded next, and only
//! then the requester's right to mint a token. A grant that cannot be made
//! (here: a failing webhook blocks part of it) ends `Failed` with the API
//! server's message within `MAKE_DEADLINE` (30 s) of its approval, and
//! nothing of it is left.

use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

/// A webhook nobody serves (the API server answers 500 "failed calling
/// webhook") on `resource` in the namespace `namespace`.
async fn broken_webhook(admin: &Client, name: &str, group: &str, resource: &str, namespace: &str) {
    let webhook: ValidatingWebhookConfiguration = serde_json::from_value(json!({
        "metadata": {"name": name},
        "webhooks": [{"name": format!("{name}.example.com"), "clientConfig": {"url": "https://127.0.0.1:1/"},
            "rules": [{"apiGroups": [group], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"], "resources": [resource]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail", "sideEffects": "None", "admissionReviewVersions": ["v1"], "timeoutSeconds": 1}]}))
    .unwrap();
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .create(&PostParams::default(), &webhook)
        .await
        .expect("webhook");
}

/// Polls every 100 ms until `name` ends or is Granted: each time, minting
/// first and reading the phase after. A token minted while the request, read
/// afterwards, is still not Granted would be usable access nobody recorded.
/// Returns the phase it reached and when.
async fn watch_minting(admin: &Client, agent: &Agent, name: &str, limit: Duration) -> (AccessRequest, Instant) {
    let api = Api::<AccessRequest>::namespaced(admin.clone(), "agents");
    let start = Instant::now();
    loop {
        let before = api.get(name).await.expect("get");
        let minted = match before.status.as_ref().and_then(|s| s.grant.as_ref()) {
            Some(_) => agent.mint_once(&before).await.ok(),
            None => None,
        };
        let after = api.get(name).await.expect("get");
        let phase = after.status.as_ref().map(|s| s.phase).unwrap_or_default();
        assert!(
            minted.is_none() || phase == Phase::Granted || phase.is_terminal(),
            "{name}: a token was minted while the request was {phase:?}, with no grant recorded"
        );
        if phase == Phase::Granted || phase.is_terminal() {
            return (after, Instant::now());
        }
        assert!(start.elapsed() < limit, "{name} still {phase:?} after {limit:?}: {:#?}", after.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn two_namespaces() -> serde_json::Value {
    json!({"role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a", "team-b"], "duration": "10m",
           "purpose": "compare two teams' rollouts"})
}

#[tokio::test]
async fn nothing_is_usable_before_the_grant_is_recorded() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let mut policy = scenario::auto_policy();
    policy["grants"]["namespaces"] = json!({"names": ["team-a", "team-b"]});
    let planner = scenario::stage(&cluster, &admin, policy).await;
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;
    let limit = Duration::from_secs(60);

    // Case 7: RoleBindings in team-b fail; team-a's are made. The request
    // never says Granted, no token can be minted meanwhile, and it ends
    // Failed with the API server's message, with nothing left.
    broken_webhook(&admin, "broken-rolebindings", "rbac.authorization.k8s.io", "rolebindings", "team-b").await;
    planner.request("half", two_namespaces()).await;
    let started = Instant::now();
    let (half, at) = watch_minting(&admin, &planner, "half", limit).await;
    let status = half.status.clone().unwrap_or_default();
    assert_eq!(status.phase, Phase::Failed, "{:#?}", status);
    let failed = status.conditions.iter().find(|c| c.type_ == "Failed").map(|c| c.message.clone()).unwrap_or_default();
    assert!(failed.contains("failed calling webhook"), "{failed}");
    eprintln!("half: Failed {} ms after the request: {failed}", (at - started).as_millis());
    let id = status.grant.as_ref().map(|g| g.id.clone()).unwrap_or_default();
    assert!(
        !operator.audit_events(&id).iter().any(|e| e == "granted" || e == "token-issued"),
        "{:?}",
        operator.audit_events(&id)
    );
    scenario::assert_nothing_managed(&admin).await;

    // The same with the identity itself blocked.
    Api::<ValidatingWebhookConfiguration>::all(admin.clone())
        .delete("broken-rolebindings", &DeleteParams::default())
        .await
        .unwrap();
    broken_webhook(&admin, "broken-serviceaccounts", "", "serviceaccounts", kube_jit::names::DEFAULT_GRANTS_NAMESPACE)
        .await;
    planner.request("no-identity", two_namespaces()).await;
    let (r, _) = watch_minting(&admin, &planner, "no-identity", limit).await;
    assert_eq!(r.status.as_ref().map(|s| s.phase), Some(Phase::Failed), "{:#?}", r.status);
    scenario::assert_nothing_managed(&admin).await;

    // The webhook is fixed a few seconds in: the grant is made, and the
    // first token comes only once it is recorded Granted.
    planner.request("fixed", two_namespaces()).await;
    let fix = async {
        scenario::wait_phase(&admin, "agents", "fixed", Phase::Approved, limit).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .delete("broken-serviceaccounts", &DeleteParams::default())
            .await
            .unwrap();
    };
    let ((r, _), ()) = tokio::join!(watch_minting(&admin, &planner, "fixed", limit), fix);
    assert_eq!(r.status.as_ref().map(|s| s.phase), Some(Phase::Granted), "{:#?}", r.status);
    let holder = cluster.client_with_token(&planner.mint(&r).await.expect("mint once Granted"));
    for ns in ["team-a", "team-b"] {
        let ok = support::eventually(Duration::from_secs(15), || async {
            scenario::list_pods_status(&holder, ns).await == 200
        })
        .await;
        assert!(ok, "the grant identity cannot list pods in {ns}");
    }
}
