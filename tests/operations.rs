//! Operating kube-jit on the real control plane: the metrics and health
//! endpoints after a grant, a denial and an expiry; and `kube-jit uninstall`,
//! run with only the operator's RBAC, leaving no grant, object or finalizer.
mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;
use support::Cluster;
use support::operator::{self, Operator, http_get, metric};
use support::scenario::{self, auto_policy, view_request};

#[tokio::test]
async fn metrics_and_health_after_a_grant_a_denial_and_an_expiry() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let agent = scenario::stage(&cluster, &admin, auto_policy()).await;
    let operator = Operator::start(&cluster, &[]).await;
    let port = operator.port;
    operator.wait_started().await;
    operator.wait_ready().await;
    assert_eq!(http_get(port, "/healthz").0, 200);
    let metrics = || http_get(port, "/metrics").1;
    assert_eq!(metric(&metrics(), "kube_jit_leader"), Some(1.0), "without --leader-elect it always acts");

    agent.request("short", view_request("10s")).await;
    let mut elsewhere = view_request("5m");
    elsewhere["namespaces"] = json!(["team-b"]);
    agent.request("elsewhere", elsewhere).await;
    scenario::wait_phase(&admin, "agents", "short", Phase::Granted, Duration::from_secs(20)).await;
    // The gauge counts Granted requests in the operator's cache, which sees its
    // own status write a moment after the API server does.
    let live = "kube_jit_live_grants";
    let one = support::eventually(Duration::from_secs(10), || async { metric(&metrics(), live) == Some(1.0) }).await;
    assert!(one, "{live} never read 1:\n{}", metrics());
    scenario::wait_phase(&admin, "agents", "elsewhere", Phase::Denied, Duration::from_secs(30)).await;
    scenario::wait_phase(&admin, "agents", "short", Phase::Expired, Duration::from_secs(30)).await;
    // The operator counts an ending right after writing it, and its cache sees
    // the write a moment later: the phase can be seen before the metrics move.
    let expired = r#"kube_jit_requests_total{outcome="expired",reason="Expired"}"#;
    let counted = support::eventually(Duration::from_secs(30), || async {
        let text = metrics();
        metric(&text, expired).is_some() && metric(&text, live) == Some(0.0)
    })
    .await;
    assert!(counted, "{expired} never appeared or {live} never read 0:\n{}", metrics());

    let text = metrics();
    eprintln!("{text}");
    let value = |series: &str| metric(&text, series).unwrap_or_else(|| panic!("{series} missing from\n{text}"));
    assert_eq!(value(r#"kube_jit_requests_total{outcome="granted",reason="Granted"}"#), 1.0);
    assert_eq!(value(r#"kube_jit_requests_total{outcome="expired",reason="Expired"}"#), 1.0);
    assert_eq!(value(r#"kube_jit_requests_total{outcome="denied",reason="NoPolicyAllows"}"#), 1.0);
    assert_eq!(value("kube_jit_live_grants"), 0.0);
    assert_eq!(value("kube_jit_grant_latency_seconds_count"), 1.0);
    // Creation timestamps have whole seconds: up to 1 s of latency is rounding.
    // No promise bounds it on a just-started operator: 10 s only catches nonsense.
    let latency = value("kube_jit_grant_latency_seconds_sum");
    assert!((0.0..10.0).contains(&latency), "grant latency {latency}");
    assert_eq!(value("kube_jit_revocation_lag_seconds_count"), 1.0);
    // Within 2 s: the documented bound on authorization past expiry (README).
    let lag = value("kube_jit_revocation_lag_seconds_sum");
    assert!((0.0..2.0).contains(&lag), "revocation lag {lag}");
    assert_eq!(value(r#"kube_jit_revocation_lag_seconds_bucket{le="2.0"}"#), 1.0);
    assert!(metric(&text, r#"kube_jit_reconcile_errors_total{kind="AccessRequest"}"#).is_some(), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "OpenMetrics text ends with # EOF");
    assert_eq!(http_get(port, "/readyz").0, 200);
}

#[tokio::test]
async fn uninstall_revokes_every_grant_and_leaves_nothing_behind() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let agent = scenario::stage(&cluster, &admin, auto_policy()).await;
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;

    agent.request("minted", view_request("10m")).await;
    let mut with_secret = view_request("10m");
    with_secret["delivery"] = json!({"tokenSecret": true});
    agent.request("with-secret", with_secret).await;
    let mut pending = view_request("5m");
    pending["namespaces"] = json!(["team-b"]);
    agent.request("denied", pending).await;
    let minted = scenario::wait_phase(&admin, "agents", "minted", Phase::Granted, Duration::from_secs(20)).await;
    let secret_grant =
        scenario::wait_phase(&admin, "agents", "with-secret", Phase::Granted, Duration::from_secs(20)).await;
    scenario::wait_phase(&admin, "agents", "denied", Phase::Denied, Duration::from_secs(30)).await;
    let minted_client = cluster.client_with_token(&agent.mint(&minted).await.unwrap());
    let secret_client = cluster.client_with_token(&scenario::token_from_secret(&agent.client, &secret_grant).await);
    for client in [&minted_client, &secret_client] {
        scenario::wait_pods_status(client, "team-a", 200, Duration::from_secs(30)).await;
    }

    // Run while the operator still runs, as a Helm pre-delete hook would.
    let out = operator::run_as_operator(&cluster, &["uninstall"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("uninstall stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "uninstall failed");
    assert!(stdout.contains("grants revoked: 2"), "{stdout}");

    // The API server's authorizer learns of the deleted bindings from its own watch.
    for client in [&minted_client, &secret_client] {
        let ended = support::eventually(Duration::from_secs(10), || async {
            matches!(scenario::list_pods_status(client, "team-a").await, 403 | 401)
        })
        .await;
        let code = scenario::list_pods_status(client, "team-a").await;
        assert!(ended, "a grant token still works after uninstall: {code}");
    }
    let requests = Api::<AccessRequest>::all(admin.clone()).list(&ListParams::default()).await.unwrap().items;
    for r in &requests {
        let status = r.status.clone().unwrap();
        assert!(r.finalizers().is_empty(), "{:?} keeps finalizers {:?}", r.metadata.name, r.finalizers());
        if r.metadata.name.as_deref() == Some("denied") {
            assert_eq!(status.phase, Phase::Denied, "an ended request stays as it ended");
            continue;
        }
        assert_eq!(status.phase, Phase::Revoked, "{:?}", r.metadata.name);
        let revoked = status.conditions.iter().find(|c| c.type_ == "Revoked").unwrap();
        assert_eq!(revoked.reason, "Uninstalled");
        let grant_id = status.grant.unwrap().id;
        // The audit line comes from the uninstall run itself.
        assert!(String::from_utf8_lossy(&out.stderr).contains(&grant_id), "no audit line for grant {grant_id}");
    }
    scenario::assert_nothing_managed(&admin).await;
    // The operator, still running, does not put the finalizers back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests = Api::<AccessRequest>::all(admin.clone()).list(&ListParams::default()).await.unwrap().items;
    assert!(requests.iter().all(|r| r.finalizers().is_empty()), "finalizers came back");

    // Idempotent: nothing left to do, and says so.
    let again = operator::run_as_operator(&cluster, &["uninstall"]).await;
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains("requests ended: 0, grants revoked: 0, objects deleted: 0, finalizers removed: 0"),
        "{stdout}"
    );
    // Without an operator, the CRDs go at once.
    drop(operator);
    cluster.kubectl(&["delete", "--timeout=30s", "-f", "crds/kube-jit.crds.yaml"]);
}

/// SIGTERM the moment an operator starts to act (start-up revocation running,
/// its controllers' first lists not yet back) ends it as promptly as at any
/// other moment: shutdown never waits on a controller that has not started.
#[tokio::test]
async fn sigterm_as_the_operator_starts_to_act_exits_promptly() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    scenario::stage(&cluster, &admin, auto_policy()).await;
    let mut operator = Operator::start(&cluster, &[]).await;
    for round in 0..3 {
        if round > 0 {
            operator.restart();
        }
        // Ready means the shared caches are synced; acting starts right after.
        let start = std::time::Instant::now();
        while http_get(operator.port, "/readyz").0 != 200 {
            assert!(start.elapsed() < Duration::from_secs(60), "never ready:\n{}", operator.log_tail(40));
            std::thread::sleep(Duration::from_millis(2));
        }
        let sent = std::time::Instant::now();
        let status = operator.terminate(Duration::from_secs(8));
        let took = sent.elapsed();
        eprintln!("measure: round {round}: SIGTERM right after ready → exited in {took:?}");
        assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
        assert!(took < Duration::from_secs(5), "shutdown took {took:?}:\n{}", operator.log_tail(20));
    }
}
