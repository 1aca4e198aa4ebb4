//! `kubectl jit inventory`, run as the real binary against a dedicated control
//! plane seeded with one ServiceAccount per risk class: every one must be found,
//! with its standing bindings, legacy token, AgentIdentity and exact class.
mod support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::ResourceExt as _;
use kube::api::Api;
use serde_json::Value;
use support::Cluster;

const NS: &str = "inventory";
/// Every ServiceAccount of this namespace is bound to `view` through its group.
const GROUP_NS: &str = "inventory-group";

const SEED: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: inventory}
---
apiVersion: v1
kind: Namespace
metadata: {name: inventory-group}
---
apiVersion: v1
kind: List
items:
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: root, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: secret-reader, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: editor, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: deployer, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: viewer, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: cross, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: idle, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: legacy, namespace: inventory}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: agent, namespace: inventory}}
- apiVersion: v1
  kind: ServiceAccount
  metadata: {name: jit-grant-0a1b2c3d4e5f, namespace: inventory, labels: {app.kubernetes.io/managed-by: kube-jit}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: plain, namespace: inventory-group}}
- {apiVersion: v1, kind: ServiceAccount, metadata: {name: builder, namespace: inventory-group}}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata: {name: inventory-root}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
  subjects: [{kind: ServiceAccount, name: root, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {name: read-secrets, namespace: inventory}
  rules: [{apiGroups: [""], resources: [secrets], verbs: [get]}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: secret-reader, namespace: inventory}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-secrets}
  subjects: [{kind: ServiceAccount, name: secret-reader}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: editor, namespace: inventory}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
  subjects: [{kind: ServiceAccount, name: editor, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRole
  metadata: {name: inventory-deploy}
  rules:
  - {apiGroups: [apps], resources: [deployments], verbs: [get, list, create, update, patch, delete]}
  - {apiGroups: [""], resources: [configmaps], verbs: [get, create, deletecollection]}
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: deployer, namespace: inventory}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: inventory-deploy}
  subjects: [{kind: ServiceAccount, name: deployer, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: viewer, namespace: inventory}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
  subjects: [{kind: ServiceAccount, name: viewer, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: Role
  metadata: {name: read-config, namespace: inventory-group}
  rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: cross, namespace: inventory-group}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-config}
  subjects: [{kind: ServiceAccount, name: cross, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: agent-requester, namespace: inventory}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kube-jit-requester}
  subjects: [{kind: ServiceAccount, name: agent, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata:
    name: jit-grant-0a1b2c3d4e5f
    namespace: inventory
    labels: {app.kubernetes.io/managed-by: kube-jit}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
  subjects: [{kind: ServiceAccount, name: jit-grant-0a1b2c3d4e5f, namespace: inventory}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: ClusterRoleBinding
  metadata: {name: inventory-group-view}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
  subjects: [{kind: Group, name: "system:serviceaccounts:inventory-group", apiGroup: rbac.authorization.k8s.io}]
- apiVersion: rbac.authorization.k8s.io/v1
  kind: RoleBinding
  metadata: {name: builder, namespace: inventory-group}
  roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: inventory-deploy}
  subjects: [{kind: ServiceAccount, name: builder, namespace: inventory-group}]
- apiVersion: v1
  kind: Secret
  metadata:
    name: legacy-token
    namespace: inventory
    annotations: {kubernetes.io/service-account.name: legacy}
  type: kubernetes.io/service-account-token
- apiVersion: kubejit.io/v1alpha1
  kind: AgentIdentity
  metadata: {name: planner, namespace: inventory}
  spec: {type: ai-agent, owner: platform-team, serviceAccountName: agent}
"#;

fn inventory(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .arg("inventory")
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig())
        .output()
        .expect("run kubectl-jit")
}

fn json(cluster: &Cluster, args: &[&str]) -> Value {
    let out = inventory(cluster, args);
    assert!(out.status.success(), "inventory {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// name → the inventory entry, for one namespace's JSON.
fn by_name(report: &Value) -> BTreeMap<String, Value> {
    let entries = report["serviceAccounts"].as_array().expect("serviceAccounts");
    entries.iter().map(|e| (e["name"].as_str().unwrap().to_string(), e.clone())).collect()
}

/// Applies the seed and waits until the controllers have done their part: the
/// `default` ServiceAccounts exist and the legacy token is populated and used once.
async fn seed(cluster: &Cluster) -> String {
    let file = cluster.dir.join("inventory-seed.yaml");
    std::fs::write(&file, SEED).unwrap();
    cluster.kubectl(&["apply", "-f", file.to_str().unwrap()]);
    // The grant identity is kube-jit's because a live grant records it (its
    // label alone would prove nothing): a request whose status says so, as
    // the operator would write it.
    let me = cluster.kubectl(&["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"]);
    let request = serde_json::json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "grant", "namespace": NS},
        "spec": {"requester": {"user": me}, "role": {"kind": "ClusterRole", "name": "edit"}, "namespaces": [NS],
                 "duration": "1h", "purpose": "seeded"}});
    let request_file = cluster.dir.join("inventory-request.json");
    std::fs::write(&request_file, request.to_string()).unwrap();
    cluster.kubectl(&["create", "-f", request_file.to_str().unwrap()]);
    let status = serde_json::json!({"status": {"phase": "Granted", "grant": {"id": "0a1b2c3d4e5f", "objects": [
        {"kind": "ServiceAccount", "namespace": NS, "name": "jit-grant-0a1b2c3d4e5f"},
        {"kind": "RoleBinding", "namespace": NS, "name": "jit-grant-0a1b2c3d4e5f"}]}}});
    cluster.kubectl(&[
        "patch",
        "accessrequest",
        "grant",
        "-n",
        NS,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let admin = cluster.admin();
    for ns in [NS, GROUP_NS] {
        let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
        let made =
            support::eventually(Duration::from_secs(30), || async { sas.get_opt("default").await.unwrap().is_some() });
        assert!(made.await, "default ServiceAccount of {ns} not created");
    }
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), NS);
    let token_of = async || {
        let data = secrets.get("legacy-token").await.unwrap().data.unwrap_or_default();
        data.get("token").map(|t| String::from_utf8(t.0.clone()).unwrap())
    };
    assert!(support::eventually(Duration::from_secs(30), || async { token_of().await.is_some() }).await, "no token");
    // Any authenticated call marks the legacy token as used (authorization need not pass).
    let client = cluster.client_with_token(&token_of().await.unwrap());
    let _ = Api::<Secret>::namespaced(client, NS).list(&Default::default()).await;
    let used = async || {
        secrets.get("legacy-token").await.unwrap().labels().get("kubernetes.io/legacy-token-last-used").cloned()
    };
    assert!(
        support::eventually(Duration::from_secs(30), || async { used().await.is_some() }).await,
        "use not recorded"
    );
    used().await.unwrap()
}

#[tokio::test]
async fn inventory_finds_and_classifies_every_seeded_identity() {
    let cluster = Cluster::dedicated();
    let last_used = seed(&cluster).await;

    let report = json(&cluster, &["-n", NS, "-o", "json"]);
    let sas = by_name(&report);
    // (name, class, reason substring, roles of standing bindings, agent, managed)
    type Row = (&'static str, &'static str, &'static str, &'static [&'static str], Option<&'static str>, bool);
    let expected: [Row; 11] = [
        (
            "root",
            "critical",
            "standing cluster-admin via ClusterRoleBinding inventory-root",
            &["ClusterRole/cluster-admin"],
            None,
            false,
        ),
        (
            "secret-reader",
            "critical",
            "can read secrets via RoleBinding inventory/secret-reader → Role/read-secrets (directly)",
            &["Role/read-secrets"],
            None,
            false,
        ),
        // Kubernetes' `edit` aggregates get/list/watch on secrets: critical, not high.
        (
            "editor",
            "critical",
            "can read secrets via RoleBinding inventory/editor → ClusterRole/edit",
            &["ClusterRole/edit"],
            None,
            false,
        ),
        (
            "deployer",
            "high",
            "can create/update/patch/delete/deletecollection via RoleBinding inventory/deployer",
            &["ClusterRole/inventory-deploy"],
            None,
            false,
        ),
        ("legacy", "high", "legacy long-lived token Secret legacy-token (last used ", &[], None, false),
        (
            "viewer",
            "medium",
            "read-only RBAC via RoleBinding inventory/viewer → ClusterRole/view (directly)",
            &["ClusterRole/view"],
            None,
            false,
        ),
        (
            "cross",
            "medium",
            "read-only RBAC via RoleBinding inventory-group/cross → Role/read-config",
            &["Role/read-config"],
            None,
            false,
        ),
        ("idle", "low", "no standing RBAC, no long-lived token", &[], None, false),
        ("default", "low", "no standing RBAC", &[], None, false),
        // The right to ask (kube-jit-requester) is not standing privilege.
        ("agent", "low", "no standing RBAC", &[], Some("planner"), false),
        ("jit-grant-0a1b2c3d4e5f", "managed", "kube-jit grant identity", &[], None, true),
    ];
    assert_eq!(sas.len(), expected.len(), "{:#}", report);
    for (name, risk, reason, roles, agent, managed) in expected {
        let sa = sas.get(name).unwrap_or_else(|| panic!("{name} missing: {report:#}"));
        assert_eq!(sa["risk"], risk, "{name}: {sa:#}");
        assert!(sa["reason"].as_str().unwrap().contains(reason), "{name}: {sa:#}");
        let got: Vec<&str> = sa["standing"].as_array().unwrap().iter().map(|s| s["role"].as_str().unwrap()).collect();
        assert_eq!(got, roles, "{name}: {sa:#}");
        assert_eq!(sa["agentIdentity"].as_str(), agent, "{name}");
        assert_eq!(sa["managed"], managed, "{name}");
        assert_eq!(sa["namespace"], NS);
    }
    let legacy = &sas["legacy"]["legacyTokens"];
    assert_eq!(legacy[0]["name"], "legacy-token");
    assert_eq!(legacy[0]["lastUsed"], last_used.as_str());
    let summary = &report["summary"];
    let counts = [("critical", 3), ("high", 2), ("medium", 2), ("low", 3), ("managed", 1), ("total", 11)];
    for (class, n) in counts {
        assert_eq!(summary[class], n, "{class}: {summary}");
    }

    // The group binding shows up for every ServiceAccount of its namespace.
    let group = by_name(&json(&cluster, &["-n", GROUP_NS, "-o", "json"]));
    assert_eq!(group.keys().collect::<Vec<_>>(), ["builder", "default", "plain"]);
    for (name, sa) in &group {
        let via_group = sa["standing"].as_array().unwrap().iter().any(|s| {
            s["binding"] == "ClusterRoleBinding inventory-group-view"
                && s["via"] == "via group system:serviceaccounts:inventory-group"
        });
        assert!(via_group, "{name}: {sa:#}");
    }
    assert_eq!(group["plain"]["risk"], "medium");
    assert_eq!(group["default"]["risk"], "medium");
    assert_eq!(group["builder"]["risk"], "high", "its own write binding outranks the group's view");

    // The table: one line per ServiceAccount, then the summary.
    let out = inventory(&cluster, &["-n", NS]);
    let table = String::from_utf8(out.stdout).unwrap();
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["SERVICEACCOUNT", "RISK", "STANDING", "LEGACY-TOKENS", "AGENT", "MANAGED", "REASON"]);
    for (name, risk, _, _, agent, managed) in expected {
        let row = lines.iter().find(|l| l.split_whitespace().next() == Some(name)).expect(name);
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], risk, "{row}");
        assert_eq!(cells[3], if name == "legacy" { "1" } else { "0" }, "{row}");
        assert_eq!(cells[4], agent.unwrap_or("<none>"), "{row}");
        assert_eq!(cells[5], managed.to_string(), "{row}");
    }
    assert_eq!(lines.last().unwrap(), &"11 ServiceAccounts: 3 critical, 2 high, 2 medium, 3 low, 1 managed");
    let bare = String::from_utf8(inventory(&cluster, &["-n", NS, "--no-headers"]).stdout).unwrap();
    assert_eq!(bare.lines().count(), 11, "{bare}");

    // -A, with --kubeconfig instead of the environment: both namespaces, with a NAMESPACE column.
    let kubeconfig = cluster.kubeconfig();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .args(["inventory", "-A", "--kubeconfig", kubeconfig.to_str().unwrap()])
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    let all = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(all.starts_with("NAMESPACE "), "{all}");
    assert!(all.lines().any(|l| l.starts_with("inventory-group ") && l.contains(" plain ")), "{all}");
    assert!(all.lines().any(|l| l.starts_with("inventory ") && l.contains(" root ")), "{all}");
}

#[tokio::test]
async fn inventory_fails_loudly_when_it_cannot_see() {
    let cluster = Cluster::dedicated();
    // An identity with no rights cannot list the cluster's bindings: an error, not an empty inventory.
    let token = support::service_account_token(&cluster.admin(), "default", "nobody").await;
    let kubeconfig = cluster.dir.join("nobody.kubeconfig");
    std::fs::write(&kubeconfig, cluster.token_kubeconfig(&token)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .args(["inventory", "-n", "default"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.starts_with("error: cannot list ") && stderr.contains("forbidden"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = Command::new(env!("CARGO_BIN_EXE_kubectl-jit"))
        .args(["inventory", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot load the kubeconfig"));
}
