//! `kubectl jit check`, run as the real binary on files: a table of requests
//! against policies with the exit code and JSON verdict each must give.

use std::process::Command;

use serde_json::Value;

const POLICIES: &str = r#"
apiVersion: kubejit.io/v1alpha1
kind: AccessPolicy
metadata: {name: read-only}
spec:
  subjects: {serviceAccounts: [{namespace: agents, name: bot}]}
  grants:
    clusterRoles: [view]
    namespaces: {names: [payments, billing]}
    maxNamespaces: 1
  duration: {default: 10m, max: 30m}
  purpose: {required: true, pattern: "(JIRA|INC)-[0-9]+: .*"}
---
apiVersion: kubejit.io/v1alpha1
kind: AccessPolicy
metadata: {name: break-glass}
spec:
  subjects: {groups: [sre]}
  grants:
    clusterRoles: [admin]
    rules: [{apiGroups: [""], resources: [pods, pods/log], verbs: [get, list]}]
    namespaces: {selector: {matchLabels: {tier: prod}}}
  duration: {default: 15m, max: 1h}
  approval: {mode: Manual, required: 2, approvers: {groups: [sre-leads]}}
"#;

fn request(spec: &str) -> String {
    format!(
        "apiVersion: kubejit.io/v1alpha1\nkind: AccessRequest\nmetadata: {{name: r, namespace: agents}}\nspec:\n{spec}"
    )
}

fn check(policies: &str, request: &str, extra: &[&str]) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("policies.yaml");
    let r = dir.path().join("request.yaml");
    std::fs::write(&p, policies).unwrap();
    std::fs::write(&r, request).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .args(["check", "-o", "json", "--policy"])
        .arg(&p)
        .arg("--request")
        .arg(&r)
        .args(extra)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap(), json, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn check_table() {
    let bot = "  requester: {user: \"system:serviceaccount:agents:bot\"}\n";
    let sre = "  requester: {user: alice, groups: [sre]}\n";
    // (name, request spec, extra args, exit code, matched policy, approvals, reason substring)
    type Row = (&'static str, String, Vec<&'static str>, i32, Option<&'static str>, i64, &'static str);
    let rows: Vec<Row> = vec![
        (
            "allowed",
            format!(
                "{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments]\n  purpose: \"INC-42: debug\"\n"
            ),
            vec![],
            0,
            Some("read-only"),
            0,
            "allows",
        ),
        (
            "default duration",
            format!(
                "{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments]\n  purpose: \"JIRA-1: x\"\n"
            ),
            vec![],
            0,
            Some("read-only"),
            0,
            "allows",
        ),
        (
            "too long",
            format!(
                "{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments]\n  duration: 2h\n  purpose: \"INC-1: x\"\n"
            ),
            vec![],
            1,
            None,
            0,
            "duration 2h exceeds its maximum 30m",
        ),
        (
            "no purpose",
            format!("{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments]\n"),
            vec![],
            1,
            None,
            0,
            "it requires a purpose",
        ),
        (
            "purpose pattern",
            format!("{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments]\n  purpose: because\n"),
            vec![],
            1,
            None,
            0,
            "purpose does not match its pattern",
        ),
        (
            "other namespace",
            format!("{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [hr]\n  purpose: \"INC-1: x\"\n"),
            vec![],
            1,
            None,
            0,
            "namespace hr is not among its namespaces",
        ),
        (
            "too many namespaces",
            format!(
                "{bot}  role: {{kind: ClusterRole, name: view}}\n  namespaces: [payments, billing]\n  purpose: \"INC-1: x\"\n"
            ),
            vec![],
            1,
            None,
            0,
            "2 namespaces requested, at most 1 allowed",
        ),
        (
            "unknown role",
            format!(
                "{bot}  role: {{kind: ClusterRole, name: cluster-admin}}\n  namespaces: [payments]\n  purpose: \"INC-1: x\"\n"
            ),
            vec![],
            1,
            None,
            0,
            "ClusterRole cluster-admin is not grantable",
        ),
        (
            "stranger",
            "  requester: {user: mallory}\n  role: {kind: ClusterRole, name: view}\n  namespaces: [payments]\n"
                .to_string(),
            vec![],
            1,
            None,
            0,
            "subject mallory is not among its subjects",
        ),
        (
            "manual by selector",
            format!("{sre}  role: {{kind: ClusterRole, name: admin}}\n  namespaces: [shop]\n"),
            vec!["--namespace-labels", "shop:tier=prod"],
            0,
            Some("break-glass"),
            2,
            "allows",
        ),
        (
            "selector unknown offline",
            format!("{sre}  role: {{kind: ClusterRole, name: admin}}\n  namespaces: [shop]\n"),
            vec![],
            1,
            None,
            0,
            "namespace shop is not among its namespaces",
        ),
        (
            "rules within ceiling",
            format!(
                "{sre}  rules: [{{apiGroups: [\"\"], resources: [pods/log], verbs: [get]}}]\n  namespaces: [shop]\n"
            ),
            vec!["--namespace-labels", "shop:tier=prod"],
            0,
            Some("break-glass"),
            2,
            "allows",
        ),
        (
            "rules beyond ceiling",
            format!(
                "{sre}  rules: [{{apiGroups: [\"\"], resources: [pods/exec], verbs: [create]}}]\n  namespaces: [shop]\n"
            ),
            vec!["--namespace-labels", "shop:tier=prod"],
            1,
            None,
            0,
            "rules exceed its ceiling: create pods/exec",
        ),
        (
            "wildcard beyond ceiling",
            format!(
                "{sre}  rules: [{{apiGroups: [\"*\"], resources: [\"*\"], verbs: [\"*\"]}}]\n  namespaces: [shop]\n"
            ),
            vec!["--namespace-labels", "shop:tier=prod"],
            1,
            None,
            0,
            "rules exceed its ceiling",
        ),
    ];
    for (name, spec, extra, code, policy, approvals, reason) in rows {
        let (got, json, stderr) = check(POLICIES, &request(&spec), &extra);
        assert_eq!(got, code, "{name}: exit code; stderr {stderr}; {json}");
        assert_eq!(json["allowed"], code == 0, "{name}");
        assert_eq!(json["matchedPolicy"].as_str(), policy, "{name}");
        assert_eq!(json["approvalsRequired"], approvals, "{name}");
        let reasons = json["reasons"].to_string();
        assert!(reasons.contains(reason), "{name}: {reasons} lacks {reason:?}");
    }
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let (code, _, stderr) =
        check("kind: AccessPolicy\nspec: [not, a, map]\n", &request("  requester: {user: a}\n"), &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("invalid AccessPolicy"), "{stderr}");
    let (code, _, stderr) = check(POLICIES, "kind: ConfigMap\n", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no AccessRequest found"), "{stderr}");
    let (code, _, stderr) = check(POLICIES, &request("  requester: {user: a}\n"), &["--namespace-labels", "nocolon"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("expected NAMESPACE:key=value"), "{stderr}");
}

#[test]
fn the_shipped_example_policies_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["check", "--policy", "examples/policies", "--request", "/dev/stdin", "--namespace-labels", "payments:kubejit.io/debuggable=true"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(request("  requester: {user: \"system:serviceaccount:agents:deploy-bot\"}\n  role: {kind: ClusterRole, name: view}\n  namespaces: [payments]\n  purpose: debug\n").as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("ALLOWED by policy read-only-debugging for 10m, without approval"), "{text}");
}
