//! Tokens for grant identities stay within their grants: no longer than the
//! TokenRequest minimum (600 s) beyond the grant's end, only the API server's
//! audience, bound to nothing else, and minted by nobody but the requester
//! (and the operator, for a grant's token Secret). Every row asks with the
//! tenant's own credentials.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, PostParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;

use crate::assert_refused;
use crate::support::operator::Operator;
use crate::support::scenario;
use crate::support::{self, Cluster};

const POLICY: &str = "kube-jit-grant-tokens";
const GRANTS_NAMESPACE: &str = kube_jit::names::DEFAULT_GRANTS_NAMESPACE;

/// Asks for a token for `request`'s grant identity as `client`, with `spec`.
async fn token(client: &Client, request: &AccessRequest, spec: serde_json::Value) -> Result<TokenRequest, kube::Error> {
    let sa = request.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.service_account.clone()).unwrap();
    let tr: TokenRequest = serde_json::from_value(json!({"spec": spec})).unwrap();
    let api = Api::<ServiceAccount>::namespaced(client.clone(), &sa.namespace);
    // The requester's right to mint reaches the authorizer a moment after Granted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match api.create_token_request(&sa.name, &PostParams::default(), &tr).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && !s.message.contains(POLICY) && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// One attempt at [`token`], for refusals by RBAC (which [`token`] waits out).
async fn token_once(
    client: &Client,
    request: &AccessRequest,
    spec: serde_json::Value,
) -> Result<TokenRequest, kube::Error> {
    let sa = request.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.service_account.clone()).unwrap();
    let tr: TokenRequest = serde_json::from_value(json!({"spec": spec})).unwrap();
    Api::<ServiceAccount>::namespaced(client.clone(), &sa.namespace)
        .create_token_request(&sa.name, &PostParams::default(), &tr)
        .await
}

/// Asserts `result` is a refusal by RBAC (403, not by admission), for the row `what`.
#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && !s.message.contains("ValidatingAdmissionPolicy") => {}
        other => panic!("{what}: expected a 403 from RBAC, got {other:?}"),
    }
}

#[tokio::test]
async fn tokens_for_grant_identities_stay_within_the_grant() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    // olga owns `agents`: every verb there, serviceaccounts/token included.
    cluster.kubectl(&["create", "role", "owner", "-n", "agents", "--verb=*", "--resource=*.*"]);
    cluster.kubectl(&["create", "rolebinding", "olga-owner", "-n", "agents", "--role", "owner", "--user", "olga"]);
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    // A 5-minute grant: tokens may last 300 s + 600 s at most.
    planner.request("short", scenario::view_request("5m")).await;
    let short = scenario::wait_phase(&admin, "agents", "short", Phase::Granted, Duration::from_secs(30)).await;

    // Case 6: `kubectl create token <sa> --duration=720h`.
    let r = token(&planner.client, &short, json!({"expirationSeconds": 720 * 3600})).await;
    assert_refused(r, POLICY, "a 720h token for a 5m grant");
    let r = token(&planner.client, &short, json!({"expirationSeconds": 3600})).await;
    assert_refused(r, POLICY, "a 1h token for a 5m grant");
    let r = token(&planner.client, &short, json!({})).await;
    assert_refused(r, POLICY, "a token of the default lifetime (1h) for a 5m grant");
    let ok = token(&planner.client, &short, json!({"expirationSeconds": 600})).await;
    assert!(ok.is_ok(), "a 600 s token for a 5m grant is within it: {ok:?}");

    // Another audience (a token a relying party would accept as its own).
    let r = token(&planner.client, &short, json!({"expirationSeconds": 600, "audiences": ["vault"]})).await;
    assert_refused(r, POLICY, "a token for the audience vault");
    let r = token(
        &planner.client,
        &short,
        json!({"expirationSeconds": 600, "audiences": ["https://kubernetes.default.svc.cluster.local", "vault"]}),
    )
    .await;
    assert_refused(r, POLICY, "a token for the API server and vault");

    // Bound to an object of the requester's choosing (one an admin left in the
    // grants namespace, where a token's bound object must be), which outlives
    // nothing useful.
    let grants = GRANTS_NAMESPACE;
    let anchor: Secret = serde_json::from_value(json!({"metadata": {"name": "anchor"}})).unwrap();
    let anchor =
        Api::<Secret>::namespaced(admin.clone(), grants).create(&PostParams::default(), &anchor).await.unwrap();
    let bound = json!({"expirationSeconds": 600,
        "boundObjectRef": {"apiVersion": "v1", "kind": "Secret", "name": "anchor", "uid": anchor.metadata.uid}});
    cluster.kubectl(&[
        "create",
        "role",
        "read-anchor",
        "-n",
        grants,
        "--verb=get",
        "--resource=secrets",
        "--resource-name=anchor",
    ]);
    cluster.kubectl(&[
        "create",
        "rolebinding",
        "planner-anchor",
        "-n",
        grants,
        "--role=read-anchor",
        "--serviceaccount=agents:planner",
    ]);
    let r = token(&planner.client, &short, bound).await;
    assert_refused(r, POLICY, "a token bound to a Secret of the requester's choosing");

    // The owner of the requester's namespace: the grant identity is not there.
    let olga = cluster.impersonate("olga", &[]);
    let r = token_once(&olga, &short, json!({"expirationSeconds": 600})).await;
    assert_forbidden(r, "the owner of agents mints for planner's grant identity");
    // Given `create serviceaccounts/token` in the grants namespace by mistake,
    // she still cannot: admission names the one minter.
    cluster.kubectl(&["create", "role", "mint-any", "-n", grants, "--verb=create", "--resource=serviceaccounts/token"]);
    cluster.kubectl(&["create", "rolebinding", "olga-mint", "-n", grants, "--role=mint-any", "--user=olga"]);
    let r = token(&olga, &short, json!({"expirationSeconds": 600})).await;
    assert_refused(r, POLICY, "someone with the right to mint in the grants namespace mints for planner's grant");

    // The operator's own token Secret is still filled.
    let mut spec = scenario::view_request("15m");
    spec["delivery"] = json!({"tokenSecret": true});
    planner.request("secret", spec).await;
    let with_secret = scenario::wait_phase(&admin, "agents", "secret", Phase::Granted, Duration::from_secs(30)).await;
    let grant = with_secret.status.as_ref().unwrap().grant.clone().unwrap();
    let secret = grant.objects.iter().find(|o| o.kind == "Secret").expect("token Secret").clone();
    assert_eq!(secret.namespace, grants, "the token Secret lives beside the grant identity");
    let filled = support::eventually(Duration::from_secs(10), || async {
        Api::<Secret>::namespaced(admin.clone(), grants)
            .get(&secret.name)
            .await
            .is_ok_and(|s| s.data.is_some_and(|d| d.contains_key("token")))
    })
    .await;
    assert!(filled, "the operator could not fill the grant's token Secret");
    // And a longer grant allows a longer token, still within it.
    let ok = token(&planner.client, &with_secret, json!({"expirationSeconds": 1200})).await;
    assert!(ok.is_ok(), "a 20m token for a 15m grant ends within 600 s of it: {ok:?}");
    let r = token(&planner.client, &with_secret, json!({"expirationSeconds": 1600})).await;
    assert_refused(r, POLICY, "a 1600 s token for a 15m grant");
}
