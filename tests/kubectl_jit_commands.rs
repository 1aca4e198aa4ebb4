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
    let pods = Command::new(support::kubectl_path())
        .args(["get", "pods", "-n", "team-a"])
        .env("KUBECONFIG", &grant_kc)
        .output()
        .unwrap();
    assert!(pods.status.success(), "the grant kubeconfig does not work: {}", String::from_utf8_lossy(&pods.stderr));

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
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Pending, Duration::from_secs(10)).await;
    let why = ok(jit(&bot_kc, &["explain", "write-pods"]));
    assert!(why.contains("AwaitingApproval") && why.contains("0/1 approvals under policy write"), "{why}");
    assert!(why.contains("denies  read: ClusterRole edit is not grantable under it"), "{why}");
    let self_approval = ok(jit(&bot_kc, &["approve", "write-pods", "--reason", "me"]));
    assert!(self_approval.contains("approve write-pods"), "{self_approval}");
    ok(jit(&approver_kc, &["approve", "write-pods", "-n", "agents", "--reason", "CHG-7"]));
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Granted, Duration::from_secs(10)).await;
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
    scenario::wait_phase(&admin, "agents", "write-again", Phase::Pending, Duration::from_secs(10)).await;
    let no_reason = jit(&approver_kc, &["deny", "write-again", "-n", "agents"]);
    assert_eq!(no_reason.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_reason.stderr).contains("deny needs --reason"));
    ok(jit(&approver_kc, &["deny", "write-again", "-n", "agents", "--reason", "freeze"]));
    scenario::wait_phase(&admin, "agents", "write-again", Phase::Denied, Duration::from_secs(10)).await;
    let late = jit(&approver_kc, &["approve", "write-again", "-n", "agents"]);
    assert!(!late.status.success() && String::from_utf8_lossy(&late.stderr).contains("already ended Denied"));

    // revoke ends grants.
    ok(jit(&bot_kc, &["revoke", "read-pods"]));
    ok(jit(&bot_kc, &["revoke", "write-pods"]));
    scenario::wait_phase(&admin, "agents", "read-pods", Phase::Revoked, Duration::from_secs(10)).await;
    scenario::wait_phase(&admin, "agents", "write-pods", Phase::Revoked, Duration::from_secs(10)).await;
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
