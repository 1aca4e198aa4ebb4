//! Test support: the real local control plane (hack/local-cluster.sh) for
//! integration tests, with a fresh namespace per test and cleanup that runs
//! even when a test panics.
//!
//! A run started by `hack/test.sh` shares one cluster (`KUBE_JIT_TEST_CLUSTER_DIR`);
//! a bare `cargo test` starts one for the test process, which stops itself
//! when that process exits, however it exits.
#![allow(dead_code)]

pub mod helm;
pub mod node;
pub mod operator;
pub mod partition;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A running control plane.
pub struct Cluster {
    pub dir: PathBuf,
    /// Whether this handle started it (and so stops it on drop).
    owned: bool,
    _tmp: Option<tempfile::TempDir>,
    _permit: Option<ClusterPermit>,
}

/// Limits how many dedicated control planes a test process runs at once
/// (`KUBE_JIT_TEST_CLUSTERS`, default 3), so timing-sensitive tests are not
/// starved of CPU on small machines.
struct ClusterPermit;

static RUNNING: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static FREED: std::sync::Condvar = std::sync::Condvar::new();

impl ClusterPermit {
    fn acquire() -> ClusterPermit {
        let limit = std::env::var("KUBE_JIT_TEST_CLUSTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3usize);
        let mut running = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= limit {
            running = FREED.wait(running).unwrap_or_else(|e| e.into_inner());
        }
        *running += 1;
        ClusterPermit
    }
}

impl Drop for ClusterPermit {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        FREED.notify_one();
    }
}

impl Cluster {
    /// The cluster shared by every test of this process.
    pub fn shared() -> &'static Cluster {
        static SHARED: OnceLock<Cluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = match std::env::var_os("KUBE_JIT_TEST_CLUSTER_DIR") {
                Some(dir) => Cluster::start(PathBuf::from(dir), false, None, "", false),
                None => Cluster::dedicated_inner(false, ""),
            };
            cluster.install_crds_and_admission();
            cluster
        })
    }

    /// The cluster with a node (`hack/local-cluster.sh up --node`) shared by
    /// every test of this process: `KUBE_JIT_NODE_CLUSTER_DIR` (hack/test.sh
    /// starts it), else one of its own that stops when the process exits.
    /// Nothing of kube-jit is installed on it: tests install the chart.
    pub fn with_node() -> &'static Cluster {
        static NODE: OnceLock<Cluster> = OnceLock::new();
        NODE.get_or_init(|| match std::env::var_os("KUBE_JIT_NODE_CLUSTER_DIR") {
            Some(dir) => Cluster::start(PathBuf::from(dir), false, None, "", true),
            None => {
                let tmp = tempfile::Builder::new().prefix("kube-jit-node-cluster-").tempdir().expect("temp dir");
                let dir = tmp.path().join("cluster");
                // Not owned: the cluster stops itself when this process exits.
                Cluster::start(dir, false, Some(tmp), "", true)
            }
        })
    }

    /// A control plane of the test's own, stopped when the handle drops
    /// (for tests that restart or break parts of it).
    pub fn dedicated() -> Cluster {
        let cluster = Self::dedicated_inner(true, "");
        cluster.install_crds_and_admission();
        cluster
    }

    /// A dedicated control plane without kube-jit's CRDs and admission
    /// policies (for tests that install them another way).
    pub fn dedicated_empty() -> Cluster {
        Self::dedicated_inner(true, "")
    }

    /// A dedicated control plane whose kube-apiserver gets extra flags (for
    /// example a low `--max-requests-inflight`); they stay across restarts.
    pub fn dedicated_with_apiserver_args(args: &str) -> Cluster {
        let cluster = Self::dedicated_inner(true, args);
        cluster.install_crds_and_admission();
        cluster
    }

    fn dedicated_inner(owned: bool, apiserver_args: &str) -> Cluster {
        let permit = if owned { Some(ClusterPermit::acquire()) } else { None };
        let tmp = tempfile::Builder::new().prefix("kube-jit-test-cluster-").tempdir().expect("temp dir");
        let dir = tmp.path().join("cluster");
        let mut cluster = Cluster::start(dir, owned, Some(tmp), apiserver_args, false);
        cluster._permit = permit;
        cluster
    }

    fn start(dir: PathBuf, owned: bool, tmp: Option<tempfile::TempDir>, apiserver_args: &str, node: bool) -> Cluster {
        let mut up = Command::new(repo_root().join("hack/local-cluster.sh"));
        if !apiserver_args.is_empty() {
            up.env("KUBE_JIT_APISERVER_ARGS", apiserver_args);
        }
        up.arg("up");
        if node {
            up.arg("--node");
        }
        let status = up
            .env("KUBE_JIT_CLUSTER_DIR", &dir)
            // The cluster stops itself when this process exits, even on abort.
            .env("KUBE_JIT_CLUSTER_OWNER_PID", std::process::id().to_string())
            .status()
            .expect("run hack/local-cluster.sh up");
        assert!(status.success(), "hack/local-cluster.sh up failed");
        Cluster { dir, owned, _tmp: tmp, _permit: None }
    }

    /// Applies `crds/` (CRDs and admission policies) and waits until the CRDs
    /// are Established and the anti-spoofing policy is enforced.
    pub fn install_crds_and_admission(&self) {
        self.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"]);
        self.wait_for_crds_and_admission();
    }

    /// Waits until kube-jit's CRDs are Established and the anti-spoofing
    /// policy is enforced, however they were installed.
    pub fn wait_for_crds_and_admission(&self) {
        self.kubectl(&["wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/kube-jit.crds.yaml"]);
        // Admission policies take effect shortly after creation: probe with a
        // dry-run spoofed request until it is refused.
        let spoof = r#"{"apiVersion":"kubejit.io/v1alpha1","kind":"AccessRequest","metadata":{"name":"probe","namespace":"default"},"spec":{"requester":{"user":"probe-spoof"},"role":{"kind":"ClusterRole","name":"view"},"namespaces":["default"]}}"#;
        let probe = self.dir.join("admission-probe.json");
        std::fs::write(&probe, spoof).unwrap();
        for _ in 0..200 {
            let out = self.kubectl_output(&["create", "--dry-run=server", "-f", probe.to_str().unwrap()]);
            if String::from_utf8_lossy(&out.stderr).contains("kube-jit-requester-is-creator") {
                self.wait_admission_settled();
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("admission policy kube-jit-requester-is-creator not enforced after 20 s");
    }

    /// Waits until the operator counts kube-jit's admission policies as in
    /// force (`kube_jit::admission::admitted_under`): requests made earlier
    /// are denied `AdmissionNotProven`, by design.
    pub fn wait_admission_settled(&self) {
        let proven = self.claims_proven_from();
        // Object times have whole seconds: one more covers the truncation.
        while jiff::Timestamp::now() < proven + jiff::SignedDuration::from_secs(1) {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// From when new claims are proven ([`kube_jit::admission::claims_proven_from`]),
    /// by the admission objects as the API server recorded them.
    pub fn claims_proven_from(&self) -> jiff::Timestamp {
        let items = |kind: &str| -> Vec<serde_json::Value> {
            let list: serde_json::Value =
                serde_json::from_str(&self.kubectl(&["get", kind, "-o", "json", "--show-managed-fields"])).expect(kind);
            list["items"].as_array().cloned().unwrap_or_default()
        };
        let policies: Vec<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy> =
            items("validatingadmissionpolicies").into_iter().map(|p| serde_json::from_value(p).unwrap()).collect();
        let bindings: Vec<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicyBinding> =
            items("validatingadmissionpolicybindings")
                .into_iter()
                .map(|b| serde_json::from_value(b).unwrap())
                .collect();
        kube_jit::admission::claims_proven_from(&policies, &bindings).expect("kube-jit admission installed")
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// Bytes in the API server's audit log so far (a position to count from).
    pub fn audit_position(&self) -> u64 {
        std::fs::metadata(self.dir.join("logs/audit.log")).map(|m| m.len()).unwrap_or(0)
    }

    /// How many requests of `user` since `position` the API server answered with `code` (429: throttled).
    pub fn api_calls_with_code_since(&self, position: u64, user: &str, code: u16) -> usize {
        self.audit_events_since(position)
            .filter(|e| e["user"]["username"] == user && e["responseStatus"]["code"] == code)
            .count()
    }

    /// The API server's audit events since `position`, one per request (its final stage).
    fn audit_events_since(&self, position: u64) -> impl Iterator<Item = serde_json::Value> {
        use std::io::{Read, Seek};
        let mut file = std::fs::File::open(self.dir.join("logs/audit.log")).expect("audit log");
        file.seek(std::io::SeekFrom::Start(position)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let mut seen = std::collections::HashSet::new();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(move |e| seen.insert(e["auditID"].as_str().unwrap_or("").to_string()))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// Writes (create, update, patch, delete) since `position` whose
    /// User-Agent contains `agent`, other than Lease writes, as
    /// `verb resource[/subresource] namespace/name (time)`.
    pub fn writes_by_agent_since(&self, position: u64, agent: &str) -> Vec<String> {
        let writes = ["create ", "update ", "patch ", "delete ", "deletecollection "];
        self.calls_by_agent_since(position, agent)
            .into_iter()
            .filter(|c| writes.iter().any(|w| c.starts_with(w)))
            .collect()
    }

    /// Every request since `position` whose User-Agent contains `agent`, as
    /// `verb resource[/subresource] namespace/name (time)`. (Leases are not
    /// audited here: see hack/local-cluster.sh.)
    pub fn calls_by_agent_since(&self, position: u64, agent: &str) -> Vec<String> {
        self.audit_events_since(position)
            .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.contains(agent)))
            .filter(|e| e["objectRef"]["resource"] != "leases")
            .map(|e| {
                let r = &e["objectRef"];
                let sub = r["subresource"].as_str().map(|s| format!("/{s}")).unwrap_or_default();
                format!(
                    "{} {}{sub} {}/{} ({})",
                    e["verb"].as_str().unwrap_or("?"),
                    r["resource"].as_str().unwrap_or("-"),
                    r["namespace"].as_str().unwrap_or(""),
                    r["name"].as_str().unwrap_or(""),
                    e["stageTimestamp"].as_str().unwrap_or("")
                )
            })
            .collect()
    }

    /// Requests `user` made since `position`, from the API server's audit log,
    /// as (`verb resource[/subresource]`, count), most frequent first.
    /// Watches are counted once (when they start).
    pub fn api_calls_since(&self, position: u64, user: &str) -> Vec<(String, usize)> {
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for e in self.audit_events_since(position) {
            if e["user"]["username"] != user {
                continue;
            }
            let r = &e["objectRef"];
            let mut what = r["resource"].as_str().unwrap_or("-").to_string();
            if let Some(sub) = r["subresource"].as_str() {
                what = format!("{what}/{sub}");
            }
            *counts.entry(format!("{} {what}", e["verb"].as_str().unwrap_or("?"))).or_default() += 1;
        }
        let mut v: Vec<_> = counts.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    }

    /// The API server's URL, as the admin kubeconfig gives it.
    pub fn server(&self) -> String {
        let admin = std::fs::read_to_string(self.kubeconfig()).expect("admin kubeconfig");
        admin.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server").to_string()
    }

    /// The API server's address (`https://127.0.0.1:<port>`'s socket address).
    pub fn api_server_addr(&self) -> std::net::SocketAddr {
        let server = self.server();
        server.trim_start_matches("https://").trim_end_matches('/').parse().expect("server is ip:port")
    }

    /// A kubeconfig (YAML text) for this cluster that authenticates with `token`.
    pub fn token_kubeconfig(&self, token: &str) -> String {
        self.token_kubeconfig_at(token, &self.server())
    }

    /// [`Self::token_kubeconfig`], reaching the API server at `server` (a proxy in front of it).
    pub fn token_kubeconfig_at(&self, token: &str, server: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
            self.dir.join("pki/ca.crt").display()
        )
    }

    /// The built kubectl, as admin, from the repository root. Panics on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = self.kubectl_output(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kubectl_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .current_dir(repo_root())
            .output()
            .expect("run kubectl")
    }

    pub fn config(&self) -> Config {
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig()).expect("read kubeconfig");
        // Config building is async only for exec plugins; certificates need none.
        futures::executor::block_on(Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()))
            .expect("kubeconfig")
    }

    /// An admin client (system:masters).
    pub fn admin(&self) -> Client {
        Client::try_from(self.config()).expect("admin client")
    }

    /// An admin client impersonating `user` (and `groups`): the API server sees them.
    pub fn impersonate(&self, user: &str, groups: &[&str]) -> Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
        }
        Client::try_from(config).expect("impersonating client")
    }

    /// A client that authenticates with nothing but a bearer token.
    pub fn client_with_token(&self, token: &str) -> Client {
        let mut config = self.config();
        config.auth_info = AuthInfo { token: Some(token.to_string().into()), ..AuthInfo::default() };
        Client::try_from(config).expect("token client")
    }

    pub fn run(&self, args: &[&str]) {
        let status = Command::new(repo_root().join("hack/local-cluster.sh"))
            .args(args)
            .env("KUBE_JIT_CLUSTER_DIR", &self.dir)
            .status()
            .expect("run hack/local-cluster.sh");
        assert!(status.success(), "hack/local-cluster.sh {args:?} failed");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            self.run(&["down"]);
        }
    }
}

/// The kubectl that hack/local-cluster.sh built.
pub fn kubectl_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo_root().join("hack/local-cluster.sh"))
            .arg("bin-dir")
            .output()
            .expect("hack/local-cluster.sh bin-dir");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("kubectl")
    })
    .clone()
}

/// A namespace for one test, deleted when the guard drops (also on panic).
pub struct TestNamespace {
    pub name: String,
    kubeconfig: PathBuf,
}

impl TestNamespace {
    pub async fn create(client: &Client, cluster: &Cluster, prefix: &str) -> TestNamespace {
        let name = unique_name(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("kubejit.io/test".to_string(), "true".to_string())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.expect("create namespace");
        TestNamespace { name, kubeconfig: cluster.kubeconfig() }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous on purpose: Drop cannot await, and this must run on panic too.
        let _ = Command::new(kubectl_path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "namespace", &self.name, "--wait=false", "--ignore-not-found"])
            .output();
    }
}

/// A DNS-1123 name unique to this process and call: the prefix and at most
/// 29 more characters (pid and sub-second nanos in hex, a counter), each part
/// separated so that two different triples never spell the same name.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{prefix}-{:x}-{nanos:x}-{n}", std::process::id())
}

/// Creates a ServiceAccount and mints a token for it with TokenRequest.
pub async fn service_account_token(client: &Client, namespace: &str, name: &str) -> String {
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let sa = ServiceAccount {
        metadata: ObjectMeta { name: Some(name.to_string()), ..ObjectMeta::default() },
        ..ServiceAccount::default()
    };
    sas.patch(name, &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&sa)).await.expect("apply serviceaccount");
    let request = TokenRequest {
        spec: Some(k8s_openapi::api::authentication::v1::TokenRequestSpec {
            expiration_seconds: Some(600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let minted = sas.create_token_request(name, &PostParams::default(), &request).await.expect("TokenRequest");
    minted.status.and_then(|s| s.token).expect("minted token")
}

/// Polls `check` every 50 ms until it returns true or `limit` passes.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `check` (every 50 ms) until it gives a value; `None` after `limit`.
pub async fn eventually_value<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if start.elapsed() >= limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every CRD of the kubejit.io group, as installed.
pub async fn installed_crds(client: &Client) -> Vec<CustomResourceDefinition> {
    Api::<CustomResourceDefinition>::all(client.clone())
        .list(&Default::default())
        .await
        .expect("list crds")
        .items
        .into_iter()
        .filter(|c| c.spec.group == kube_jit::api::GROUP)
        .collect()
}
