//! The CRDs on a real API server: they install and become Established, and
//! their schema rules (CEL) reject bad objects at admission.
mod support;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{Cluster, TestNamespace};

#[tokio::test]
async fn every_crd_is_established_and_listed_in_the_jit_category() {
    let cluster = Cluster::shared();
    let client = cluster.admin();
    let installed = support::installed_crds(&client).await;
    let mut names: Vec<_> = installed.iter().map(|c| c.spec.names.kind.clone()).collect();
    names.sort();
    assert_eq!(names, ["AccessApproval", "AccessPolicy", "AccessRequest", "AgentIdentity"]);
    for crd in &installed {
        let established = crd
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
        assert!(established, "{} is not Established", crd.spec.names.kind);
    }
    // `kubectl get jit` resolves the category across all kinds, once discovery
    // has caught up with the new CRDs.
    let listed = support::eventually(std::time::Duration::from_secs(20), || async {
        cluster.kubectl_output(&["get", "jit", "-A"]).status.success()
    })
    .await;
    assert!(listed, "kubectl get jit: {:?}", cluster.kubectl_output(&["get", "jit", "-A"]));
}

fn dynamic(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kubejit.io", "v1alpha1", kind))
}

/// Creates the object and returns the API server's error message (or None if accepted).
async fn create(client: &kube::Client, ns: Option<&str>, kind: &str, body: serde_json::Value) -> Option<String> {
    let ar = dynamic(kind);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut obj: DynamicObject = serde_json::from_value(body).unwrap();
    obj.types = Some(kube::core::TypeMeta { api_version: "kubejit.io/v1alpha1".into(), kind: kind.into() });
    match api.create(&PostParams::default(), &obj).await {
        Ok(_) => None,
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "expected a validation error, got {status:?}");
            Some(status.message)
        }
        Err(e) => panic!("unexpected error: {e}"),
    }
}

fn request(name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn schema_rules_reject_bad_access_requests_at_admission() {
    let cluster = Cluster::shared();
    let client = cluster.admin();
    let ns = TestNamespace::create(&client, cluster, "crd-cel").await;
    let ns = Some(ns.name.as_str());
    let ok = json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
                    "namespaces": ["default"], "duration": "15m", "purpose": "debug"});

    assert_eq!(create(&client, ns, "AccessRequest", request("good", ok.clone())).await, None);

    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "both-role-and-rules",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}], "namespaces": ["x"]}),
            "set exactly one of spec.role or spec.rules",
        ),
        (
            "neither-role-nor-rules",
            json!({"requester": {"user": "kube-jit-admin"}, "namespaces": ["x"]}),
            "set exactly one of spec.role or spec.rules",
        ),
        (
            "zero-duration",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
            "namespaces": ["x"], "duration": "0s"}),
            "duration must be more than zero",
        ),
        (
            "negative-duration",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
            "namespaces": ["x"], "duration": "-5m"}),
            "duration must look like",
        ),
        (
            "no-namespaces",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"}}),
            "must name at least one namespace",
        ),
        (
            "cluster-wide-role",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "Role", "name": "r"},
            "clusterWide": true}),
            "spec.clusterWide needs a ClusterRole",
        ),
        (
            "bidi-purpose",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
            "namespaces": ["x"], "purpose": "fix \u{202E}evil"}),
            "purpose must be plain text",
        ),
        (
            "bad-namespace-name",
            json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
            "namespaces": ["Not_A_Namespace"]}),
            "spec.namespaces[0]",
        ),
    ];
    for (name, spec, expected) in cases {
        let message = create(&client, ns, "AccessRequest", request(name, spec)).await;
        let message = message.unwrap_or_else(|| panic!("{name}: accepted, expected rejection"));
        assert!(message.contains(expected), "{name}: message {message:?} lacks {expected:?}");
    }
}

#[tokio::test]
async fn access_request_spec_is_immutable_except_revoke_and_appended_extensions() {
    let cluster = Cluster::shared();
    let client = cluster.admin();
    let ns = TestNamespace::create(&client, cluster, "crd-immutable").await;
    let spec = json!({"requester": {"user": "kube-jit-admin"}, "role": {"kind": "ClusterRole", "name": "view"},
                      "namespaces": ["default"], "duration": "15m"});
    assert_eq!(create(&client, Some(&ns.name), "AccessRequest", request("r", spec)).await, None);

    let patch =
        |p: &str| cluster.kubectl_output(&["patch", "accessrequest", "r", "-n", &ns.name, "--type=merge", "-p", p]);
    let widened = patch(r#"{"spec":{"role":{"name":"admin"}}}"#);
    assert!(!widened.status.success());
    assert!(String::from_utf8_lossy(&widened.stderr).contains("spec is immutable after creation"));
    let longer = patch(r#"{"spec":{"duration":"9h"}}"#);
    assert!(!longer.status.success());

    // Extensions may only be appended, each a valid non-zero duration.
    assert!(patch(r#"{"spec":{"extensions":["15m"]}}"#).status.success());
    assert!(patch(r#"{"spec":{"extensions":["15m","5m"]}}"#).status.success());
    for (rewrite, why) in [
        (r#"{"spec":{"extensions":["5m"]}}"#, "spec is immutable after creation"),
        (r#"{"spec":{"extensions":["1h","5m"]}}"#, "spec is immutable after creation"),
        (r#"{"spec":{"extensions":null}}"#, "spec is immutable after creation"),
        (r#"{"spec":{"extensions":["15m","5m","0s"]}}"#, "each extension must look like 90s"),
        (r#"{"spec":{"extensions":["15m","5m","soon"]}}"#, "each extension must look like 90s"),
    ] {
        let out = patch(rewrite);
        assert!(!out.status.success(), "{rewrite} was accepted");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(why),
            "{rewrite}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    assert!(patch(r#"{"spec":{"revoke":true}}"#).status.success());
    let unrevoke = patch(r#"{"spec":{"revoke":false}}"#);
    assert!(!unrevoke.status.success());
    assert!(String::from_utf8_lossy(&unrevoke.stderr).contains("cannot be un-revoked"));
}

#[tokio::test]
async fn policy_and_identity_rules_reject_bad_objects() {
    let cluster = Cluster::shared();
    let client = cluster.admin();
    let policy = json!({"metadata": {"name": support::unique_name("bad-policy")}, "spec": {
        "subjects": {"users": ["a"]}, "grants": {"clusterRoles": ["view"]},
        "approval": {"mode": "Manual"}}});
    let message = create(&client, None, "AccessPolicy", policy).await.expect("manual without approvers accepted");
    assert!(message.contains("manual approval needs approvers"), "{message}");

    let empty_grants = json!({"metadata": {"name": support::unique_name("bad-policy")}, "spec": {
        "subjects": {"users": ["a"]}, "grants": {}}});
    let message = create(&client, None, "AccessPolicy", empty_grants).await.expect("empty grants accepted");
    assert!(message.contains("grants must list clusterRoles, roles or a rules ceiling"), "{message}");

    let ns = TestNamespace::create(&client, cluster, "crd-agent").await;
    let agent = json!({"metadata": {"name": "a"}, "spec": {"owner": "team-a", "serviceAccountName": "a",
        "spiffeId": "https://example.org/not-spiffe"}});
    let message = create(&client, Some(&ns.name), "AgentIdentity", agent).await.expect("bad spiffe accepted");
    assert!(message.contains("spiffeId must be spiffe://"), "{message}");
}

#[tokio::test]
async fn a_workload_pin_names_images_by_digest() {
    let cluster = Cluster::shared();
    let client = cluster.admin();
    let ns = TestNamespace::create(&client, cluster, "crd-workload").await;
    let pinned = |images: serde_json::Value| {
        json!({"metadata": {"name": "a"}, "spec": {"owner": "team-a", "serviceAccountName": "a",
            "workload": {"required": true, "images": images}}})
    };
    let message = create(&client, Some(&ns.name), "AgentIdentity", pinned(json!(["agent:latest"])))
        .await
        .expect("a tag accepted as a digest");
    assert!(message.contains("spec.workload.images[0]") && message.contains("sha256"), "{message}");
    let message = create(&client, Some(&ns.name), "AgentIdentity", pinned(json!([]))).await.expect("no image accepted");
    assert!(message.contains("spec.workload.images"), "{message}");
    let digest = format!("sha256:{}", "0".repeat(64));
    // As the runtime reports it, repository and all, or the digest alone.
    let image_id = format!("registry.example/agent@{digest}");
    assert_eq!(create(&client, Some(&ns.name), "AgentIdentity", pinned(json!([digest, image_id]))).await, None);
}

#[tokio::test]
async fn every_example_manifest_is_accepted_by_the_api_server() {
    let cluster = Cluster::shared();
    let _ = cluster.kubectl_output(&["create", "namespace", "agents"]);
    // deploy/operator-rbac.yaml is applied for real by every end-to-end test.
    for file in
        ["examples/policies", "examples/rbac", "examples/delegation/agents.yaml", "examples/agents/pinned-agent.yaml"]
    {
        let out = cluster.kubectl_output(&["apply", "--dry-run=server", "-f", file]);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
    }
}
