//! Building blocks of end-to-end scenarios: agents that authenticate with
//! their own ServiceAccount tokens, policies, requests, and waiting on them.

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_jit::api::{AccessPolicy, AccessRequest, AgentIdentity, Phase};
use serde_json::json;

use super::Cluster;

/// Applies the ClusterRole named `name` shipped in `examples/rbac/<file>`.
async fn apply_example_role(admin: &Client, file: &str, name: &str) {
    let path = super::repo_root().join("examples/rbac").join(file);
    let role: ClusterRole =
        serde_yaml::from_str(&std::fs::read_to_string(&path).expect("example role")).expect("example role YAML");
    Api::<ClusterRole>::all(admin.clone())
        .patch(name, &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&role))
        .await
        .expect("apply example role");
}

/// What agents may do with kube-jit itself: the role in examples/rbac/requester.yaml.
pub async fn install_requester_role(admin: &Client) {
    apply_example_role(admin, "requester.yaml", "kube-jit-requester").await;
}

/// Lets `users` create AccessApprovals in `namespace` (the role in examples/rbac/approver.yaml).
pub async fn grant_approver_role(admin: &Client, namespace: &str, users: &[&str]) {
    apply_example_role(admin, "approver.yaml", "kube-jit-approver").await;
    let subjects: Vec<_> = users
        .iter()
        .map(|u| match kube_jit::names::parse_service_account_username(u) {
            Some((ns, name)) => json!({"kind": "ServiceAccount", "name": name, "namespace": ns}),
            None => json!({"kind": "User", "name": u, "apiGroup": "rbac.authorization.k8s.io"}),
        })
        .collect();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "approvers"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-jit-approver"},
        "subjects": subjects}))
    .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), namespace)
        .patch("approvers", &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&binding))
        .await
        .expect("approver binding");
}

pub async fn create_namespace(admin: &Client, name: &str, labels: serde_json::Value) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
    Api::<Namespace>::all(admin.clone())
        .patch(name, &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&ns))
        .await
        .expect("namespace");
}

/// A non-human identity: a ServiceAccount that may only ask kube-jit for access.
pub struct Agent {
    pub namespace: String,
    pub name: String,
    pub user: String,
    pub client: Client,
    pub token: String,
}

impl Agent {
    pub async fn create(cluster: &Cluster, admin: &Client, namespace: &str, name: &str) -> Agent {
        let token = super::service_account_token(admin, namespace, name).await;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-requester")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-jit-requester"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]}))
        .unwrap();
        Api::<RoleBinding>::namespaced(admin.clone(), namespace)
            .patch(&format!("{name}-requester"), &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&binding))
            .await
            .expect("requester binding");
        Agent {
            namespace: namespace.into(),
            name: name.into(),
            user: format!("system:serviceaccount:{namespace}:{name}"),
            client: cluster.client_with_token(&token),
            token,
        }
    }

    /// Creates an AccessRequest as this agent.
    pub async fn request(&self, name: &str, spec: serde_json::Value) -> AccessRequest {
        let request = request_body(&self.user, name, spec);
        Api::<AccessRequest>::namespaced(self.client.clone(), &self.namespace)
            .create(&PostParams::default(), &request)
            .await
            .expect("create AccessRequest as the agent")
    }

    /// Mints a token for the grant's ServiceAccount, as this agent (see [`mint_as`]).
    pub async fn mint(&self, request: &AccessRequest) -> Result<String, kube::Error> {
        mint_as(&self.client, request).await
    }

    /// One attempt at minting, no retry: for asserting that minting is refused.
    pub async fn mint_once(&self, request: &AccessRequest) -> Result<String, kube::Error> {
        mint_attempt(&self.client, request).await
    }
}

/// An AccessRequest named `name` with `spec`, asked by `requester`.
pub fn request_body(requester: &str, name: &str, mut spec: serde_json::Value) -> AccessRequest {
    spec["requester"] = json!({"user": requester});
    serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": name}, "spec": spec}))
    .expect("request body")
}

/// How long [`mint_as`] retries a 403 right after a grant.
const MINT_AUTHORIZATION_GRACE: Duration = Duration::from_secs(10);

/// Mints a token for the grant's ServiceAccount as `client` (the requester).
/// The RoleBinding that lets the requester mint exists before the request says
/// Granted, but the API server's authorizer learns of it from its own watch a
/// moment later (as `kube_jit::client::mint_grant_token` knows): a 403 is
/// retried for up to 10 s.
pub async fn mint_as(client: &Client, request: &AccessRequest) -> Result<String, kube::Error> {
    let deadline = Instant::now() + MINT_AUTHORIZATION_GRACE;
    loop {
        match mint_attempt(client, request).await {
            Err(kube::Error::Api(s)) if s.code == 403 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

async fn mint_attempt(client: &Client, request: &AccessRequest) -> Result<String, kube::Error> {
    let sa = request
        .status
        .as_ref()
        .and_then(|s| s.grant.as_ref())
        .and_then(|g| g.service_account.clone())
        .expect("grant SA");
    let tr: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 600}})).unwrap();
    let minted = Api::<ServiceAccount>::namespaced(client.clone(), &sa.namespace)
        .create_token_request(&sa.name, &PostParams::default(), &tr)
        .await?;
    Ok(minted.status.and_then(|s| s.token).expect("token"))
}

/// Registers the ServiceAccount `namespace/name` as an AI agent (AgentIdentity of the same name).
pub async fn register_agent(admin: &Client, namespace: &str, name: &str) {
    let agent: AgentIdentity = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name, "namespace": namespace},
        "spec": {"type": "ai-agent", "owner": "platform-team", "serviceAccountName": name,
                 "model": "claude-sonnet-4", "provider": "anthropic"}}))
    .unwrap();
    Api::<AgentIdentity>::namespaced(admin.clone(), namespace)
        .patch(name, &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&agent))
        .await
        .expect("AgentIdentity");
}

/// Creates an AccessRequest in `agents` as `client`, naming `requester` (the
/// identity `client` authenticates as: a grant's, when delegating).
pub async fn request_as(
    client: &Client,
    requester: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<AccessRequest, kube::Error> {
    let mut spec = spec;
    spec["requester"] = json!({"user": requester});
    let r: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": name}, "spec": spec}))
    .unwrap();
    Api::<AccessRequest>::namespaced(client.clone(), "agents").create(&PostParams::default(), &r).await
}

/// The username of a granted request's identity (what its token authenticates as).
pub fn grant_user(r: &AccessRequest) -> String {
    r.status.as_ref().unwrap().grant.as_ref().unwrap().username.clone().unwrap()
}

pub async fn apply_policy(admin: &Client, name: &str, spec: serde_json::Value) {
    let policy: AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": name}, "spec": spec}))
    .expect("policy body");
    Api::<AccessPolicy>::all(admin.clone())
        .patch(name, &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&policy))
        .await
        .expect("apply policy");
}

/// Polls (every 20 ms) until the request reaches `phase`; panics after `limit`
/// or if it reaches another terminal phase.
pub async fn wait_phase(admin: &Client, ns: &str, name: &str, phase: Phase, limit: Duration) -> AccessRequest {
    let api: Api<AccessRequest> = Api::namespaced(admin.clone(), ns);
    let start = Instant::now();
    loop {
        let r = api.get(name).await.expect("get request");
        let current = r.status.as_ref().map(|s| s.phase);
        if current == Some(phase) {
            return r;
        }
        if let Some(p) = current
            && p.is_terminal()
        {
            panic!("{ns}/{name} ended {p:?}, expected {phase:?}: {:#?}", r.status);
        }
        assert!(start.elapsed() < limit, "{ns}/{name} not {phase:?} after {limit:?}: {:#?}", r.status);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// HTTP status of listing pods in `ns` with `client` (200 when allowed).
pub async fn list_pods_status(client: &Client, ns: &str) -> u16 {
    match Api::<Pod>::namespaced(client.clone(), ns).list(&ListParams::default().limit(1)).await {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(e) => panic!("unexpected error listing pods: {e}"),
    }
}

/// Polls until `list_pods_status` returns `code`; returns when it did.
pub async fn wait_pods_status(client: &Client, ns: &str, code: u16, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if list_pods_status(client, ns).await == code {
            return Instant::now();
        }
        assert!(start.elapsed() < limit, "list pods in {ns} did not return {code} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The token the operator wrote into `request`'s token Secret, read as
/// `client` (the requester: only it may read that Secret). It is written
/// right after the grant is recorded Granted (nothing is usable before), and
/// the requester's right to read it reaches the authorizer a moment later, so
/// this waits for it, up to 30 s.
pub async fn token_from_secret(client: &Client, request: &AccessRequest) -> String {
    let grant = request.status.as_ref().and_then(|s| s.grant.as_ref()).expect("a grant");
    let secret = grant.objects.iter().find(|o| o.kind == "Secret").expect("the grant has a token Secret");
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), &secret.namespace);
    let start = Instant::now();
    loop {
        let data = secrets.get(&secret.name).await.ok().and_then(|s| s.data).unwrap_or_default();
        if let Some(token) = data.get("token").filter(|t| !t.0.is_empty()) {
            return String::from_utf8(token.0.clone()).expect("token is UTF-8");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no token in Secret {}/{} after 30 s",
            secret.namespace,
            secret.name
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every object labelled as managed by kube-jit, as `Kind ns/name`.
pub async fn managed_objects(admin: &Client) -> Vec<String> {
    let lp = ListParams::default().labels(kube_jit::names::MANAGED_SELECTOR);
    let mut found = Vec::new();
    macro_rules! collect {
        ($k:ty, $kind:literal) => {
            for o in Api::<$k>::all(admin.clone()).list_metadata(&lp).await.expect("list managed").items {
                found.push(format!("{} {}/{}", $kind, o.namespace().unwrap_or_default(), o.name_any()));
            }
        };
    }
    collect!(ServiceAccount, "ServiceAccount");
    collect!(k8s_openapi::api::core::v1::Secret, "Secret");
    collect!(Role, "Role");
    collect!(RoleBinding, "RoleBinding");
    collect!(ClusterRole, "ClusterRole");
    collect!(ClusterRoleBinding, "ClusterRoleBinding");
    found
}

/// Waits (up to 30 s) until no object labelled as managed by kube-jit remains.
pub async fn assert_nothing_managed(admin: &Client) {
    let ok = super::eventually(Duration::from_secs(30), || async { managed_objects(admin).await.is_empty() }).await;
    assert!(ok, "managed objects left behind: {:?}", managed_objects(admin).await);
}

/// `expires_at` of a granted request as an Instant-comparable wall clock.
pub fn expires_at(request: &AccessRequest) -> jiff::Timestamp {
    request.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.expires_at.as_ref()).expect("expiresAt").0
}

/// Sleeps until the wall clock reaches `t`.
pub async fn sleep_until(t: jiff::Timestamp) {
    let wait = t.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait).unwrap()).await;
    }
}

/// The common stage: namespaces `agents`, `team-a`, `team-b` (labelled `team`),
/// the requester role, an agent `planner` in `agents`, `policy` as
/// `agents-read`.
pub async fn stage(cluster: &Cluster, admin: &Client, policy: serde_json::Value) -> Agent {
    for ns in ["agents", "team-a", "team-b"] {
        create_namespace(admin, ns, json!({"team": ns})).await;
    }
    install_requester_role(admin).await;
    let agent = Agent::create(cluster, admin, "agents", "planner").await;
    apply_policy(admin, "agents-read", policy).await;
    agent
}

/// `planner` may have `view` in `team-a` without approval.
pub fn auto_policy() -> serde_json::Value {
    json!({
        "subjects": {"serviceAccounts": [{"namespace": "agents", "name": "planner"}]},
        "grants": {"clusterRoles": ["view"], "namespaces": {"names": ["team-a"]}},
        "duration": {"default": "5m", "max": "1h"},
        "purpose": {"required": true}
    })
}

/// A request for `view` in `team-a` for `duration`.
pub fn view_request(duration: &str) -> serde_json::Value {
    json!({"role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"],
           "duration": duration, "purpose": "read pods to debug a failing rollout"})
}
