//! The Helm chart on a real control plane: every object it renders is
//! accepted by the API server, and the operator, running with nothing but the
//! chart's ServiceAccount and RBAC, carries grants through their whole
//! lifecycle. And what is generated from the chart, or included by it, has
//! not drifted.
mod support;

use std::time::Duration;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;
use serde_yaml::Value;
use support::operator::Operator;
use support::scenario::{self, Agent};
use support::{Cluster, helm};

/// `(kind, name)` of a rendered object.
fn key(object: &Value) -> (String, String) {
    let field = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (field(&object["kind"]), field(&object["metadata"]["name"]))
}

fn file_objects(path: &str) -> Vec<Value> {
    helm::documents(&std::fs::read_to_string(support::repo_root().join(path)).expect(path))
}

#[test]
fn deploy_operator_rbac_is_the_charts_rendering() {
    let committed = std::fs::read_to_string(support::repo_root().join("deploy/operator-rbac.yaml")).unwrap();
    assert!(
        committed == helm::helm_sh(&["operator-rbac"]),
        "deploy/operator-rbac.yaml differs from the chart's RBAC; regenerate with:\n    hack/helm.sh generate"
    );
}

#[test]
fn chart_renders_the_committed_crds_and_admission_policies() {
    let find = |rendered: &[Value], wanted: &Value| rendered.iter().find(|o| key(o) == key(wanted)).cloned();
    let committed: Vec<Value> =
        ["crds/kube-jit.crds.yaml", "crds/kube-jit.admission.yaml"].iter().flat_map(|f| file_objects(f)).collect();
    assert_eq!(committed.len(), 20, "4 CRDs, 7 validating and 1 mutating admission policies and their bindings");

    // Default values: each object as committed, plus the release's labels.
    let rendered = helm::documents(&helm::template(&[]));
    for object in &committed {
        let mut got = find(&rendered, object).unwrap_or_else(|| panic!("{:?} not rendered", key(object)));
        let metadata = got["metadata"].as_mapping_mut().unwrap();
        let labels = metadata.remove("labels").expect("release labels");
        assert_eq!(labels["app.kubernetes.io/instance"].as_str(), Some("kube-jit"));
        assert_eq!(&got, object, "{:?} differs from crds/", key(object));
    }

    // crds.keep protects the CRDs (and with them every request) from uninstall.
    let kept = helm::documents(&helm::template(&["--set", "crds.keep=true"]));
    for object in committed.iter().filter(|o| o["kind"] == "CustomResourceDefinition") {
        let got = find(&kept, object).unwrap();
        assert_eq!(got["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(), Some("keep"));
    }

    // Both can be left out, for clusters that install them another way.
    let without =
        helm::documents(&helm::template(&["--set", "crds.install=false", "--set", "admissionPolicies.install=false"]));
    assert!(committed.iter().all(|o| find(&without, o).is_none()));
}

#[test]
fn values_outside_the_schema_are_refused() {
    for bad in ["replicaCount=0", "unknownKey=1", "image.pullPolicy=Sometimes", "crds.install=maybe"] {
        let out = std::process::Command::new(support::repo_root().join("hack/helm.sh"))
            .args(["template", "--set", bad])
            .output()
            .expect("hack/helm.sh template");
        assert!(!out.status.success(), "--set {bad} was accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("schema"), "{bad}: not refused by the schema");
    }
}

/// Applies what `helm install --namespace kube-jit-system --create-namespace`
/// would create (the pre-delete hook only with a server-side dry run: Helm
/// creates it at uninstall), and checks the API server accepted every object.
fn install_chart(cluster: &Cluster, values: &[&str]) -> Vec<Value> {
    let objects = helm::documents(&helm::template(values));
    let (hooks, release): (Vec<_>, Vec<_>) = objects.iter().cloned().partition(helm::is_hook);
    cluster.kubectl(&["create", "namespace", "kube-jit-system"]);
    for (objects, extra) in [(&release, None), (&hooks, Some("--dry-run=server"))] {
        let file = cluster.dir.join(format!("chart-{}.yaml", support::unique_name("objects")));
        let yaml: Vec<String> = objects.iter().map(|o| serde_yaml::to_string(o).unwrap()).collect();
        std::fs::write(&file, yaml.join("---\n")).unwrap();
        let mut args = vec!["apply", "--server-side", "--field-manager=helm", "-f", file.to_str().unwrap()];
        args.extend(extra);
        let applied = cluster.kubectl(&args);
        assert_eq!(applied.lines().count(), objects.len(), "every object accepted:\n{applied}");
    }
    objects
}

#[tokio::test]
async fn chart_installs_and_its_rbac_carries_the_whole_grant_lifecycle() {
    let cluster = Cluster::dedicated_empty();
    let admin = cluster.admin();
    let objects = install_chart(&cluster, &["--set", "rbac.grantableClusterRoles={view,edit}"]);
    let mut kinds: Vec<_> = objects.iter().map(|o| key(o).0).collect();
    kinds.dedup();
    for kind in ["Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Role", "Job"] {
        assert!(kinds.iter().any(|k| k == kind), "no {kind} rendered: {kinds:?}");
    }
    cluster.wait_for_crds_and_admission();

    for ns in ["agents", "team-a", "team-b"] {
        scenario::create_namespace(&admin, ns, json!({})).await;
    }
    scenario::install_requester_role(&admin).await;
    let planner = Agent::create(&cluster, &admin, "agents", "planner").await;
    let orchestrator = Agent::create(&cluster, &admin, "agents", "orchestrator").await;
    let ci = Agent::create(&cluster, &admin, "agents", "ci").await;
    for name in ["orchestrator", "ci"] {
        scenario::register_agent(&admin, "agents", name).await;
    }
    let planner_subject = json!({"serviceAccounts": [{"namespace": "agents", "name": "planner"}]});
    scenario::apply_policy(
        &admin,
        "planner-reads",
        json!({"subjects": planner_subject, "duration": {"default": "5m", "max": "1h"},
               "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}}}),
    )
    .await;
    scenario::apply_policy(
        &admin,
        "planner-inline",
        json!({"subjects": planner_subject, "duration": {"default": "5m", "max": "1h"},
               "grants": {"rules": [pods_rule()], "namespaces": {"names": ["team-b"]}}}),
    )
    .await;
    cluster.kubectl(&["apply", "-f", "examples/policies/delegating-orchestrator.yaml"]);

    // The chart's identity and nothing else: no deploy/operator-rbac.yaml here.
    let operator = Operator::start_as(&cluster, &["--sweep-interval", "2"], "kube-jit-system", "kube-jit").await;
    operator.wait_started().await;
    let t = Duration::from_secs(20);

    // An auto-approved role grant works in scope, and ends at expiry.
    planner
        .request(
            "read",
            json!({"role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"],
                   "duration": "10s", "purpose": "read pods to debug a rollout"}),
        )
        .await;
    let read = scenario::wait_phase(&admin, "agents", "read", Phase::Granted, t).await;
    let read_grant = cluster.client_with_token(&planner.mint(&read).await.expect("mint"));
    scenario::wait_pods_status(&read_grant, "team-a", 200, Duration::from_secs(30)).await;
    assert_eq!(scenario::list_pods_status(&read_grant, "team-b").await, 403);

    // Inline rules: a generated Role (escalate and bind on Roles), revoked on demand.
    planner
        .request(
            "inline",
            json!({"rules": [pods_rule()], "namespaces": ["team-b"], "duration": "5m", "purpose": "tail a pod"}),
        )
        .await;
    let inline = scenario::wait_phase(&admin, "agents", "inline", Phase::Granted, t).await;
    let inline_grant = cluster.client_with_token(&planner.mint(&inline).await.expect("mint"));
    scenario::wait_pods_status(&inline_grant, "team-b", 200, Duration::from_secs(30)).await;
    assert_eq!(scenario::list_pods_status(&inline_grant, "team-a").await, 403);
    Api::<AccessRequest>::namespaced(admin.clone(), "agents")
        .patch("inline", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}})))
        .await
        .expect("revoke");
    scenario::wait_pods_status(&inline_grant, "team-b", 403, Duration::from_secs(5)).await;
    scenario::wait_phase(&admin, "agents", "inline", Phase::Revoked, t).await;

    // Delegation: the orchestrator's grant asks for part of itself for CI
    // (bind on kube-jit-delegator); ending the parent ends the child.
    orchestrator
        .request(
            "orch",
            json!({"forAgent": "orchestrator", "role": {"kind": "ClusterRole", "name": "edit"},
                   "namespaces": ["team-a"], "duration": "10m", "purpose": "release 1.4"}),
        )
        .await;
    let orch = scenario::wait_phase(&admin, "agents", "orch", Phase::Granted, t).await;
    let orch_grant = cluster.client_with_token(&orchestrator.mint(&orch).await.expect("mint"));
    scenario::request_as(
        &orch_grant,
        &scenario::grant_user(&orch),
        "ci-build",
        json!({"forAgent": "ci", "rules": [pods_rule()], "namespaces": ["team-a"], "duration": "5m",
               "purpose": "build the release"}),
    )
    .await
    .expect("the grant may delegate");
    let child = scenario::wait_phase(&admin, "agents", "ci-build", Phase::Granted, t).await;
    let child_grant = cluster.client_with_token(&ci.mint(&child).await.expect("mint"));
    scenario::wait_pods_status(&child_grant, "team-a", 200, Duration::from_secs(30)).await;
    assert_eq!(scenario::list_pods_status(&child_grant, "team-b").await, 403);
    Api::<AccessRequest>::namespaced(admin.clone(), "agents").delete("orch", &DeleteParams::default()).await.unwrap();
    scenario::wait_pods_status(&child_grant, "team-a", 403, Duration::from_secs(5)).await;
    scenario::wait_phase(&admin, "agents", "ci-build", Phase::Revoked, t).await;

    // By now the first grant has expired.
    scenario::sleep_until(scenario::expires_at(&read)).await;
    scenario::wait_pods_status(&read_grant, "team-a", 403, Duration::from_secs(5)).await;
    scenario::wait_phase(&admin, "agents", "read", Phase::Expired, Duration::from_secs(30)).await;

    scenario::assert_nothing_managed(&admin).await;
    let refused: Vec<_> = operator
        .log_lines()
        .into_iter()
        .filter(|l| l.to_string().contains("forbidden"))
        .map(|l| l["message"].to_string())
        .collect();
    assert!(refused.is_empty(), "the chart's RBAC refused the operator: {refused:?}");
}

fn pods_rule() -> serde_json::Value {
    json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]})
}
