//! Delegation chains and AgentIdentity on the real control plane: an
//! orchestrator agent delegates part of its grant to a CI agent, which
//! delegates part of that to a scanner; each token works within and only
//! within its own scope; widening is refused; revoking the root ends the tree;
//! suspending an identity ends its grants; standing privilege is flagged.
mod support;

use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_jit::api::{AccessRequest, AgentIdentity, Phase};
use serde_json::json;
use support::Cluster;
use support::operator::Operator;
use support::scenario::{self, Agent};

struct World {
    operator: Operator,
    orchestrator: Agent,
    ci: Agent,
    scanner: Agent,
    admin: Client,
    cluster: Cluster,
}

async fn world() -> World {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    for ns in ["agents", "team-a", "team-b", "team-c"] {
        scenario::create_namespace(&admin, ns, json!({})).await;
    }
    scenario::install_requester_role(&admin).await;
    let orchestrator = Agent::create(&cluster, &admin, "agents", "orchestrator").await;
    let ci = Agent::create(&cluster, &admin, "agents", "ci").await;
    let scanner = Agent::create(&cluster, &admin, "agents", "scanner").await;
    for name in ["orchestrator", "ci", "scanner", "helper"] {
        scenario::register_agent(&admin, "agents", name).await;
    }
    scenario::apply_policy(
        &admin,
        "orchestration",
        json!({
            "subjects": {"agents": [{"namespace": "agents", "name": "orchestrator"}]},
            "grants": {"clusterRoles": ["edit"], "namespaces": {"names": ["team-a", "team-b"]}},
            "duration": {"default": "10m", "max": "1h"},
            "delegation": {"allowed": true, "maxDepth": 2}
        }),
    )
    .await;
    let operator = Operator::start(&cluster, &["--sweep-interval", "5"]).await;
    operator.wait_started().await;
    World { operator, orchestrator, ci, scanner, admin, cluster }
}

fn pods_rule(verbs: &[&str]) -> serde_json::Value {
    json!({"apiGroups": [""], "resources": ["pods"], "verbs": verbs})
}

async fn denied_reason(admin: &Client, name: &str) -> String {
    let r = scenario::wait_phase(admin, "agents", name, Phase::Denied, Duration::from_secs(15)).await;
    let c = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Denied").unwrap();
    format!("{}: {}", c.reason, c.message)
}

#[tokio::test]
async fn three_hop_chain_narrows_each_hop_and_dies_with_its_root() {
    let w = world().await;
    let t = Duration::from_secs(20);

    // Hop 0: the orchestrator, for itself: edit in team-a and team-b.
    w.orchestrator
        .request(
            "orch",
            json!({"forAgent": "orchestrator", "role": {"kind": "ClusterRole", "name": "edit"},
            "namespaces": ["team-a", "team-b"], "duration": "10m", "purpose": "release 1.4"}),
        )
        .await;
    let orch = scenario::wait_phase(&w.admin, "agents", "orch", Phase::Granted, t).await;
    let orch_grant = w.cluster.client_with_token(&w.orchestrator.mint(&orch).await.unwrap());

    // Hop 1: authenticated as its grant, the orchestrator delegates pods read/create in team-a to CI.
    scenario::request_as(
        &orch_grant,
        &scenario::grant_user(&orch),
        "ci-build",
        json!({"forAgent": "ci",
        "rules": [pods_rule(&["get", "list", "create"])], "namespaces": ["team-a"], "duration": "5m",
        "purpose": "build and test the release"}),
    )
    .await
    .expect("the grant identity may delegate");
    let ci_build = scenario::wait_phase(&w.admin, "agents", "ci-build", Phase::Granted, t).await;
    // Only the delegatee (CI's own ServiceAccount) may mint for the delegated
    // grant. Its mint first: once the authorizer knows the mint binding, the
    // delegator's refusal can only mean it holds no such right.
    let ci_grant = w.cluster.client_with_token(&w.ci.mint(&ci_build).await.unwrap());
    assert!(w.orchestrator.mint_once(&ci_build).await.is_err(), "the delegator must not mint the delegatee's token");

    // Hop 2: CI delegates read-only pods in team-a to the scanner.
    scenario::request_as(
        &ci_grant,
        &scenario::grant_user(&ci_build),
        "scan",
        json!({"forAgent": "scanner",
        "rules": [pods_rule(&["get", "list"])], "namespaces": ["team-a"], "duration": "2m",
        "purpose": "scan the built images"}),
    )
    .await
    .expect("CI's grant may delegate further");
    let scan = scenario::wait_phase(&w.admin, "agents", "scan", Phase::Granted, t).await;
    let scan_grant = w.cluster.client_with_token(&w.scanner.mint(&scan).await.unwrap());

    // Each token works within and only within its own scope.
    for (who, client) in [("orchestrator", &orch_grant), ("ci", &ci_grant), ("scanner", &scan_grant)] {
        scenario::wait_pods_status(client, "team-a", 200, Duration::from_secs(30)).await;
        assert_eq!(scenario::list_pods_status(client, "team-c").await, 403, "{who} outside its namespaces");
    }
    assert_eq!(scenario::list_pods_status(&orch_grant, "team-b").await, 200);
    assert_eq!(scenario::list_pods_status(&ci_grant, "team-b").await, 403);
    assert_eq!(scenario::list_pods_status(&scan_grant, "team-b").await, 403);
    let can = |client: &Client, verb: &str| {
        let review: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": "team-a", "verb": verb, "resource": "pods"}}}))
        .unwrap();
        let api = Api::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>::all(client.clone());
        async move { api.create(&PostParams::default(), &review).await.unwrap().status.unwrap().allowed }
    };
    assert!(can(&ci_grant, "create").await);
    assert!(!can(&ci_grant, "delete").await);
    assert!(!can(&scan_grant, "create").await);

    // The chain is recorded, oldest first, in status, on the identity and in audit lines.
    let chain = scan.status.as_ref().unwrap().delegation_chain.clone();
    let delegators: Vec<_> = chain.iter().map(|h| h.delegator.clone()).collect();
    assert_eq!(delegators, [w.orchestrator.user.clone(), scenario::grant_user(&orch), scenario::grant_user(&ci_build)]);
    assert_eq!(chain[2].delegatee, "AgentIdentity agents/scanner");
    assert!(chain.iter().all(|h| !h.purpose.is_empty() && h.delegated_at.is_some()));
    let sa = scan.status.as_ref().unwrap().grant.as_ref().unwrap().service_account.clone().unwrap();
    let annotations =
        w.cluster.kubectl(&["get", "sa", &sa.name, "-n", &sa.namespace, "-o", "jsonpath={.metadata.annotations}"]);
    assert!(annotations.contains("kubejit.io/delegation-chain"), "{annotations}");
    let scan_id = scan.status.as_ref().unwrap().grant.as_ref().unwrap().id.clone();
    let granted_line = w
        .operator
        .log_lines()
        .into_iter()
        .find(|l| l["event"] == "granted" && l["grant_id"] == scan_id.as_str())
        .unwrap();
    assert_eq!(granted_line["chain"].as_str().unwrap().matches(" | ").count(), 2, "{granted_line}");

    // Widening is refused, each with its reason (CI's grant delegating).
    let attempts = [
        (
            "widen-verbs",
            json!({"rules": [pods_rule(&["delete"])], "namespaces": ["team-a"], "duration": "1m"}),
            "rules exceed the parent grant",
        ),
        (
            "extend-time",
            json!({"rules": [pods_rule(&["get"])], "namespaces": ["team-a"], "duration": "6m"}),
            "after its parent grant",
        ),
        (
            "add-namespace",
            json!({"rules": [pods_rule(&["get"])], "namespaces": ["team-a", "team-b"], "duration": "1m"}),
            "namespace team-b is outside",
        ),
        (
            "other-role",
            json!({"role": {"kind": "ClusterRole", "name": "edit"}, "namespaces": ["team-a"], "duration": "1m"}),
            "not the parent grant's role",
        ),
        (
            "no-purpose",
            json!({"rules": [pods_rule(&["get"])], "namespaces": ["team-a"], "duration": "1m"}),
            "needs a purpose",
        ),
    ];
    for (name, mut spec, _) in attempts.clone() {
        spec["forAgent"] = json!("scanner");
        if name != "no-purpose" {
            spec["purpose"] = json!("try");
        }
        scenario::request_as(&ci_grant, &scenario::grant_user(&ci_build), name, spec).await.unwrap();
    }
    for (name, _, expected) in attempts {
        let reason = denied_reason(&w.admin, name).await;
        assert!(reason.starts_with("DelegationDenied") && reason.contains(expected), "{name}: {reason}");
    }
    // Too deep: the scanner's grant (depth 2 of 2) cannot delegate further.
    scenario::request_as(
        &scan_grant,
        &scenario::grant_user(&scan),
        "too-deep",
        json!({"forAgent": "helper",
        "rules": [pods_rule(&["get"])], "namespaces": ["team-a"], "duration": "1m", "purpose": "more"}),
    )
    .await
    .unwrap();
    assert!(denied_reason(&w.admin, "too-deep").await.contains("exceeds policy orchestration's maximum of 2"));
    // Without holding the parent grant: CI's own ServiceAccount asks for the scanner.
    w.ci.request(
        "no-grant",
        json!({"forAgent": "scanner", "rules": [pods_rule(&["get"])],
        "namespaces": ["team-a"], "duration": "1m", "purpose": "sneak"}),
    )
    .await;
    let reason = denied_reason(&w.admin, "no-grant").await;
    assert!(reason.contains("must come from its ServiceAccount"), "{reason}");

    // Revoking the root ends every descendant at once.
    let revoked = Instant::now();
    Api::<AccessRequest>::namespaced(w.orchestrator.client.clone(), "agents")
        .patch("orch", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}})))
        .await
        .unwrap();
    let (a, b, c) = tokio::join!(
        scenario::wait_pods_status(&orch_grant, "team-a", 403, Duration::from_secs(5)),
        scenario::wait_pods_status(&ci_grant, "team-a", 403, Duration::from_secs(5)),
        scenario::wait_pods_status(&scan_grant, "team-a", 403, Duration::from_secs(5)),
    );
    let slowest = [a, b, c].into_iter().max().unwrap() - revoked;
    eprintln!("measure: revoke root → every grant in a 3-grant tree forbidden in {slowest:?}");
    // Within 2 s: the documented bound (README), which revoke shares with expiry.
    assert!(slowest < Duration::from_secs(2), "tree revocation took {slowest:?}");
    for name in ["ci-build", "scan"] {
        let r = scenario::wait_phase(&w.admin, "agents", name, Phase::Revoked, Duration::from_secs(30)).await;
        let c = r.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Revoked").unwrap();
        assert_eq!(c.reason, "ParentRevoked", "{name}");
    }
    // A revoked parent cannot delegate: its identity lost the right to ask. The
    // API server's authorizer learns of deleted bindings from its own watch:
    // wait until it says no (or the identity is gone), then ask.
    let refused = support::eventually(Duration::from_secs(10), || async {
        let review: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": "agents", "verb": "create",
                                            "group": "kubejit.io", "resource": "accessrequests"}}}))
        .unwrap();
        let api = Api::<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview>::all(ci_grant.clone());
        match api.create(&PostParams::default(), &review).await {
            Ok(r) => !r.status.unwrap().allowed,
            Err(kube::Error::Api(s)) => s.code == 401,
            Err(e) => panic!("SelfSubjectAccessReview: {e}"),
        }
    })
    .await;
    assert!(refused, "CI's grant identity may still create AccessRequests long after the revoke");
    let late = scenario::request_as(
        &ci_grant,
        &scenario::grant_user(&ci_build),
        "late",
        json!({"forAgent": "scanner",
        "rules": [pods_rule(&["get"])], "namespaces": ["team-a"], "duration": "1m", "purpose": "late"}),
    )
    .await;
    assert!(matches!(late, Err(kube::Error::Api(ref s)) if s.code == 403 || s.code == 401), "{late:?}");
    scenario::assert_nothing_managed(&w.admin).await;
}

/// A cluster-wide grant reaches every namespace, but what it delegates never
/// lands in kube-jit's own: the grants namespace (other grants' identities
/// and token Secrets) or the operator's (its token).
#[tokio::test]
async fn nothing_is_delegated_into_kube_jits_own_namespaces() {
    let w = world().await;
    scenario::apply_policy(
        &w.admin,
        "orchestration",
        json!({
            "subjects": {"agents": [{"namespace": "agents", "name": "orchestrator"}]},
            "grants": {"clusterRoles": ["view"], "clusterWide": true},
            "duration": {"default": "10m", "max": "1h"},
            "delegation": {"allowed": true, "maxDepth": 2}
        }),
    )
    .await;
    w.orchestrator
        .request(
            "wide",
            json!({"forAgent": "orchestrator", "role": {"kind": "ClusterRole", "name": "view"},
            "clusterWide": true, "duration": "10m", "purpose": "survey"}),
        )
        .await;
    let wide = scenario::wait_phase(&w.admin, "agents", "wide", Phase::Granted, Duration::from_secs(20)).await;
    let wide_grant = w.cluster.client_with_token(&w.orchestrator.mint(&wide).await.unwrap());
    for (name, ns) in [("into-grants", kube_jit::names::DEFAULT_GRANTS_NAMESPACE), ("into-operator", "kube-jit-system")]
    {
        scenario::request_as(
            &wide_grant,
            &scenario::grant_user(&wide),
            name,
            json!({"forAgent": "ci", "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": [ns],
                   "duration": "5m", "purpose": "look around"}),
        )
        .await
        .expect("the grant identity may ask");
        let why = denied_reason(&w.admin, name).await;
        assert!(why.starts_with("DelegationDenied") && why.contains("is kube-jit's own"), "{name}: {why}");
    }
}

#[tokio::test]
async fn suspending_an_identity_revokes_its_grants_and_standing_privilege_is_flagged() {
    let w = world().await;
    w.orchestrator
        .request(
            "orch",
            json!({"forAgent": "orchestrator", "role": {"kind": "ClusterRole", "name": "edit"},
            "namespaces": ["team-a"], "duration": "10m", "purpose": "release"}),
        )
        .await;
    let orch = scenario::wait_phase(&w.admin, "agents", "orch", Phase::Granted, Duration::from_secs(20)).await;
    let grant = w.cluster.client_with_token(&w.orchestrator.mint(&orch).await.unwrap());
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;

    let agents: Api<AgentIdentity> = Api::namespaced(w.admin.clone(), "agents");
    let live = support::eventually(Duration::from_secs(30), || async {
        agents.get("orchestrator").await.unwrap().status.is_some_and(|s| s.live_grants == 1)
    })
    .await;
    assert!(live, "AgentIdentity status does not count the live grant");
    let status = agents.get("orchestrator").await.unwrap().status.unwrap();
    assert_eq!(status.spiffe_id.as_deref(), Some("spiffe://cluster.local/ns/agents/sa/orchestrator"));
    assert!(status.conditions.iter().any(|c| c.type_ == "StandingPrivilege" && c.status == "False"));

    let suspended = Instant::now();
    agents
        .patch("orchestrator", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspended": true}})))
        .await
        .unwrap();
    let forbidden = scenario::wait_pods_status(&grant, "team-a", 403, Duration::from_secs(5)).await;
    let lag = forbidden - suspended;
    eprintln!("measure: suspend → 403 {lag:?}");
    // Within 2 s: the documented bound (README), which revocation on suspension shares with expiry.
    assert!(lag < Duration::from_secs(2), "suspension took {lag:?} to revoke");
    let r = scenario::wait_phase(&w.admin, "agents", "orch", Phase::Revoked, Duration::from_secs(30)).await;
    assert_eq!(
        r.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Revoked").unwrap().reason,
        "AgentSuspended"
    );
    // New requests are denied while suspended.
    w.orchestrator
        .request(
            "while-suspended",
            json!({"forAgent": "orchestrator", "role": {"kind": "ClusterRole", "name": "edit"},
            "namespaces": ["team-a"], "duration": "1m", "purpose": "again"}),
        )
        .await;
    let reason = denied_reason(&w.admin, "while-suspended").await;
    assert!(reason.contains("is suspended"), "{reason}");

    // A standing RoleBinding on the scanner's base ServiceAccount is flagged.
    w.cluster.kubectl(&[
        "create",
        "rolebinding",
        "legacy-scanner",
        "-n",
        "team-c",
        "--clusterrole",
        "view",
        "--serviceaccount",
        "agents:scanner",
    ]);
    let flagged = support::eventually(Duration::from_secs(30), || async {
        agents.get("scanner").await.unwrap().status.is_some_and(|s| {
            s.conditions.iter().any(|c| {
                c.type_ == "StandingPrivilege" && c.status == "True" && c.message.contains("team-c/legacy-scanner")
            })
        })
    })
    .await;
    assert!(flagged, "standing privilege not flagged: {:?}", agents.get("scanner").await.unwrap().status);
}

#[tokio::test]
async fn an_identity_over_its_request_cap_is_denied_flagged_and_suspended() {
    let w = world().await;
    scenario::apply_policy(
        &w.admin,
        "capped",
        json!({
            "subjects": {"agents": [{"namespace": "agents", "name": "ci"}]},
            "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}},
            "limits": {"maxRequestsPerWindow": 2, "window": "10m", "suspendOnExceed": true}
        }),
    )
    .await;
    let spec = json!({"forAgent": "ci", "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"],
        "duration": "5m", "purpose": "poll"});
    for name in ["first", "second"] {
        w.ci.request(name, spec.clone()).await;
        scenario::wait_phase(&w.admin, "agents", name, Phase::Granted, Duration::from_secs(20)).await;
    }
    w.ci.request("third", spec.clone()).await;
    let reason = denied_reason(&w.admin, "third").await;
    assert!(reason.starts_with("RateLimited") && reason.contains("2 requests in the last 10m"), "{reason}");

    let agents: Api<AgentIdentity> = Api::namespaced(w.admin.clone(), "agents");
    let suspended = support::eventually(Duration::from_secs(30), || async {
        let a = agents.get("ci").await.unwrap();
        a.spec.suspended
            && a.status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "RateLimited" && c.status == "True"))
    })
    .await;
    assert!(suspended, "not flagged and suspended: {:?}", agents.get("ci").await.unwrap());
    // Suspension ends the grants it already held.
    for name in ["first", "second"] {
        let r = scenario::wait_phase(&w.admin, "agents", name, Phase::Revoked, Duration::from_secs(30)).await;
        assert_eq!(
            r.status.unwrap().conditions.into_iter().find(|c| c.type_ == "Revoked").unwrap().reason,
            "AgentSuspended"
        );
    }
    let events = w.cluster.kubectl(&["get", "events", "-n", "agents", "-o", "jsonpath={.items[*].reason}"]);
    assert!(events.contains("RateLimited"), "{events}");
}
