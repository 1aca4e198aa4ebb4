//! Every cluster-facing `kubectl jit` command, run as the real binary by an
//! agent and an approver that authenticate with ServiceAccount tokens, against
//! a real control plane and the real operator.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use kube_jit::api::Phase;
use serde_json::json;
use support::Cluster;
use support::operator::Operator;
use support::scenario::{self, Agent};

fn jit(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .expect("run kubectl-jit")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn kubeconfig_for(cluster: &Cluster, agent: &Agent) -> PathBuf {
    let path = cluster.dir.join(format!("{}.kubeconfig", agent.name));
    std::fs::write(&path, cluster.token_kubeconfig(&agent.token)).unwrap();
    path
}

#[tokio::test]
async fn request_get_whoami_explain_approve_deny_describe_revoke() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    for ns in ["agents", "team-a"] {
        scenario::create_namespace(&admin, ns, json!({})).await;
    }
    scenario::install_requester_role(&admin).await;
    let bot = Agent::create(&cluster, &admin, "agents", "deploy-bot").await;
    let approver = Agent::create(&cluster, &admin, "agents", "approver").await;
    // The bot may create approvals too, to show its own never counts.
    scenario::grant_approver_role(&admin, "agents", &[&approver.user, &bot.user]).await;
    scenario::apply_policy(
        &admin,
        "read",
        json!({
        "subjects": {"serviceAccounts": [{"namespace": "agents", "name": "deploy-bot"}]},
        "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}}}),
    )
    .await;
    scenario::apply_policy(
        &admin,
        "write",
        json!({
        "subjects": {"serviceAccounts": [{"namespace": "agents", "name": "deploy-bot"}]},
        "grants": {"clusterRoles": ["edit"], "namespaces": {"names": ["team-a"]}},
        "approval": {"mode": "Manual", "required": 1, "approvers": {"users": [approver.user.clone()]}}}),
    )
    .await;
    let operator = Operator::start(&cluster, &["--sweep-interval", "5"]).await;
    operator.wait_started().await;
    let bot_kc = kubeconfig_for(&cluster, &bot);
    let approver_kc = kubeconfig_for(&cluster, &approver);

    // request --wait -o kubeconfig: a ready kubeconfig for the grant.
    let grant_kc_text = ok(jit(
        &bot_kc,
        &[
            "request",
            "read-pods",
            "--cluster-role",
            "view",
            "-n",
            "team-a",
            "--for",
            "2m",
            "--purpose",
            "INC-1: debug",
            "--wait",
            "-o",
            "kubeconfig",
        ],
    ));
    let grant_kc = cluster.dir.join("grant.kubeconfig");
    std::fs::write(&grant_kc, &grant_kc_text).unwrap();
    let get_pods = || {
        Command::new(support::kubectl_path())
            .args(["get", "pods", "-n", "team-a"])
            .env("KUBECONFIG", &grant_kc)
            .output()
            .unwrap()
    };
    // The grant's RoleBinding reaches the API server's authorizer (its own
    // watch) a moment after the request says Granted.
    let works = support::eventually(Duration::from_secs(30), || async { get_pods().status.success() }).await;
    assert!(works, "the grant kubeconfig does not work: {}", String::from_utf8_lossy(&get_pods().stderr));

    // get: a table that reads at a glance; -o json for machines.
    let table = ok(jit(&bot_kc, &["get"]));
    assert!(table.starts_with("NAME"), "{table}");
    let line = table.lines().find(|l| l.starts_with("read-pods")).expect("row");
    assert!(
        line.contains("Granted") && line.contains("view") && line.contains("team-a") && line.contains("INC-1: debug"),
        "{line}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(jit(&bot_kc, &["get", "-o", "json"]))).unwrap();
    assert_eq!(json["items"][0]["status"]["phase"], "Granted");
    assert!(ok(jit(&bot_kc, &["get", "--no-headers"])).starts_with("read-pods"));

    // whoami: identity and live grants.
    let me = ok(jit(&bot_kc, &["whoami"]));
    assert!(me.contains("system:serviceaccount:agents:deploy-bot") && me.contains("1 live"), "{me}");

    // A request that needs approval: explain says why it waits; approve grants it.
    ok(jit(
        &bot_kc,
        &["request", "write-pods", "--cluster-role", "edit", "-n", "team-a", "--for", "2m", "--purpose", "deploy"],
    ));
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Pending, Duration::from_secs(30)).await;
    let why = ok(jit(&bot_kc, &["explain", "write-pods"]));
    assert!(why.contains("AwaitingApproval") && why.contains("0/1 approvals under policy write"), "{why}");
    assert!(why.contains("denies  read: ClusterRole edit is not grantable under it"), "{why}");
    let self_approval = ok(jit(&bot_kc, &["approve", "write-pods", "--reason", "me"]));
    assert!(self_approval.contains("approve write-pods"), "{self_approval}");
    ok(jit(&approver_kc, &["approve", "write-pods", "-n", "agents", "--reason", "CHG-7"]));
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Granted, Duration::from_secs(30)).await;
    let described = ok(jit(&bot_kc, &["describe", "write-pods"]));
    for expected in [
        "Matched policy: write",
        "Approvals: 1/1 (system:serviceaccount:agents:approver)",
        "RoleBinding team-a/jit-write-pods-",
        "Events:",
        "ApprovalsMet",
    ] {
        assert!(described.contains(expected), "describe lacks {expected:?}:\n{described}");
    }

    // deny needs a reason, and ends a request.
    ok(jit(
        &bot_kc,
        &["request", "write-again", "--cluster-role", "edit", "-n", "team-a", "--for", "1m", "--purpose", "again"],
    ));
    scenario::wait_phase(&admin, "agents", "write-again", Phase::Pending, Duration::from_secs(30)).await;
    let no_reason = jit(&approver_kc, &["deny", "write-again", "-n", "agents"]);
    assert_eq!(no_reason.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("deny needs --reason"));
    ok(jit(&approver_kc, &["deny", "write-again", "-n", "agents", "--reason", "freeze"]));
    scenario::wait_phase(&admin, "agents", "write-again", Phase::Denied, Duration::from_secs(30)).await;
    let late = jit(&approver_kc, &["approve", "write-again", "-n", "agents"]);
    assert!(!late.status.success() && String::from_utf8_lossy(&late.stderr).contains("already ended Denied"));

    // revoke ends grants.
    ok(jit(&bot_kc, &["revoke", "read-pods"]));
    ok(jit(&bot_kc, &["revoke", "write-pods"]));
    scenario::wait_phase(&admin, "agents", "read-pods", Phase::Revoked, Duration::from_secs(30)).await;
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Revoked, Duration::from_secs(30)).await;
    let refused = jit(
        &bot_kc,
        &["request", "--cluster-role", "admin", "-n", "team-a", "--for", "1m", "--purpose", "x", "--wait"],
    );
    assert_eq!(refused.status.code(), Some(1), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("ended Denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    drop(operator);
}

#[tokio::test]
async fn extend_moves_the_expiry_only_as_far_as_the_policy_allows() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    for ns in ["agents", "team-a", "team-b"] {
        scenario::create_namespace(&admin, ns, json!({})).await;
    }
    scenario::install_requester_role(&admin).await;
    let bot = Agent::create(&cluster, &admin, "agents", "deploy-bot").await;
    let other = Agent::create(&cluster, &admin, "agents", "other-bot").await;
    let subjects = json!({"serviceAccounts": [
        {"namespace": "agents", "name": "deploy-bot"}, {"namespace": "agents", "name": "other-bot"}]});
    scenario::apply_policy(
        &admin,
        "extendable",
        json!({"subjects": subjects, "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}},
               "duration": {"default": "20s", "max": "50s"}, "extension": {"allowed": true, "maxExtensions": 2}}),
    )
    .await;
    scenario::apply_policy(
        &admin,
        "fixed",
        json!({"subjects": subjects, "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-b"]}},
               "duration": {"default": "1m", "max": "1h"}}),
    )
    .await;
    let operator = Operator::start(&cluster, &["--sweep-interval", "2"]).await;
    operator.wait_started().await;
    let bot_kc = kubeconfig_for(&cluster, &bot);
    let other_kc = kubeconfig_for(&cluster, &other);
    let ask = |name: &'static str, ns: &'static str, duration: &'static str| {
        ["request", name, "--cluster-role", "view", "-n", ns, "--for", duration, "--purpose", "INC-9", "--wait"]
    };

    ok(jit(&bot_kc, &ask("short", "team-a", "20s")));
    let granted = scenario::wait_phase(&admin, "agents", "short", Phase::Granted, Duration::from_secs(30)).await;
    let first_expiry = scenario::expires_at(&granted);
    let token = bot.mint(&granted).await.unwrap();
    let grant_client = cluster.client_with_token(&token);

    // Bad input and other identities are refused before anything changes.
    let bad = jit(&bot_kc, &["extend", "short", "--by", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let stranger = jit(&other_kc, &["extend", "short", "--by", "10s"]);
    assert_eq!(stranger.status.code(), Some(3), "{}", String::from_utf8_lossy(&stranger.stderr));
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("only the requester"), "{stranger:?}");

    // Within the maximum: extended, on status and on every object.
    let extended = ok(jit(&bot_kc, &["extend", "short", "--by", "20s"]));
    assert!(extended.contains("extended by 20s: the grant now ends at"), "{extended}");
    let r = scenario::wait_phase(&admin, "agents", "short", Phase::Granted, Duration::from_secs(1)).await;
    let new_expiry = scenario::expires_at(&r);
    assert_eq!(new_expiry.duration_since(first_expiry).as_secs(), 20, "{first_expiry} -> {new_expiry}");
    let objects = &r.status.as_ref().unwrap().grant.as_ref().unwrap().objects;
    for o in objects.iter().filter(|o| o.kind == "RoleBinding" || o.kind == "ServiceAccount") {
        let annotations = match o.kind.as_str() {
            "RoleBinding" => {
                let api = kube::Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(admin.clone(), &o.namespace);
                api.get(&o.name).await.unwrap().metadata.annotations.unwrap_or_default()
            }
            _ => {
                let api =
                    kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(admin.clone(), &o.namespace);
                api.get(&o.name).await.unwrap().metadata.annotations.unwrap_or_default()
            }
        };
        assert_eq!(annotations[kube_jit::names::EXPIRES_AT_ANNOTATION], new_expiry.to_string(), "{o:?}");
    }

    // Past the maximum (20s + 20s + 20s > 50s): refused, expiry unchanged.
    let refused = jit(&bot_kc, &["extend", "short", "--by", "20s"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("more than policy extendable's maximum 50s"), "{why}");
    let r = scenario::wait_phase(&admin, "agents", "short", Phase::Granted, Duration::from_secs(1)).await;
    assert_eq!(scenario::expires_at(&r), new_expiry);
    let described = ok(jit(&bot_kc, &["describe", "short"]));
    assert!(described.contains("Extensions:") && described.contains("refused  extension by 20s"), "{described}");

    // A policy without extension refuses it.
    ok(jit(&bot_kc, &ask("fixed-one", "team-b", "1m")));
    let no = jit(&bot_kc, &["extend", "fixed-one", "--by", "1m"]);
    assert_eq!(no.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no.stderr).contains("policy fixed does not allow extension"), "{no:?}");

    // The extension is real: the token still works after the first expiry,
    // and stops at the new one.
    scenario::sleep_until(first_expiry + jiff::SignedDuration::from_secs(2)).await;
    assert_eq!(scenario::list_pods_status(&grant_client, "team-a").await, 200, "revoked at the old expiry");
    scenario::sleep_until(new_expiry).await;
    scenario::wait_pods_status(&grant_client, "team-a", 403, Duration::from_secs(5)).await;
    let lag = jiff::Timestamp::now().duration_since(new_expiry);
    println!("extended grant: new expiresAt -> 403 in {} ms", lag.as_millis());
    scenario::wait_phase(&admin, "agents", "short", Phase::Expired, Duration::from_secs(30)).await;

    // An ended grant cannot be extended.
    let late = jit(&bot_kc, &["extend", "short", "--by", "10s"]);
    assert_eq!(late.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&late.stderr).contains("only a live grant can be extended"), "{late:?}");
    ok(jit(&bot_kc, &["revoke", "fixed-one"]));
    scenario::wait_phase(&admin, "agents", "fixed-one", Phase::Revoked, Duration::from_secs(30)).await;
    assert_eq!(scenario::managed_objects(&admin).await, Vec::<String>::new());
    drop(operator);
}
