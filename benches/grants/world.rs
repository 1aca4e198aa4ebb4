//! The benchmark's cluster side: CRDs and admission policies, the operator as
//! a separate process under its shipped least-privilege RBAC, the requesting
//! agent (examples/rbac/requester.yaml), the floor client, and the policy.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

pub const AGENTS_NS: &str = "bench-agents";
/// Where grant identities live (the operator's default, made by deploy/operator-rbac.yaml).
pub const GRANTS_NS: &str = kube_jit::names::DEFAULT_GRANTS_NAMESPACE;
pub const TARGET_NS: &str = "bench-target";
pub const OPERATOR_USER: &str = "system:serviceaccount:kube-jit-system:kube-jit";
pub const FLOOR_USER: &str = "system:serviceaccount:kube-jit-system:bench-floor";
pub const AGENT_USER: &str = "system:serviceaccount:bench-agents:bench-agent";
/// kube-controller-manager's garbage collector: hack/local-cluster.sh runs the
/// controllers with `--use-service-account-credentials`, so its writes and
/// owner look-ups carry this user (its informers' lists and watches carry
/// `system:kube-controller-manager`).
pub const GC_USER: &str = "system:serviceaccount:kube-system:generic-garbage-collector";
/// Label on everything the floor client makes, so cleanup finds it.
pub const FLOOR_LABEL: &str = "kubejit.io/bench";

pub struct World {
    pub dir: PathBuf,
    pub config: Config,
    pub admin: Client,
    /// The requester: the agent's own ServiceAccount token, requester RBAC only.
    pub agent: Client,
    /// The floor: a ServiceAccount with exactly the operator's ClusterRole, so
    /// its calls meet the same authorizer and the same API server limits.
    pub floor: Client,
    pub operator: Operator,
}

impl World {
    pub async fn set_up(dir: &Path, repo: &Path, operator_bin: &Path) -> anyhow::Result<World> {
        let kubeconfig = Kubeconfig::read_from(dir.join("admin.kubeconfig"))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        let admin = Client::try_from(config.clone())?;
        let kubectl = kubectl_path(repo)?;
        let run = |args: &[&str]| -> anyhow::Result<std::process::Output> {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(dir.join("admin.kubeconfig"))
                .args(args)
                .current_dir(repo)
                .output()?;
            Ok(out)
        };
        let must = |args: &[&str]| -> anyhow::Result<()> {
            let out = run(args)?;
            anyhow::ensure!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            Ok(())
        };
        must(&["apply", "--server-side", "--force-conflicts", "-f", "crds/"])?;
        must(&["wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/kube-jit.crds.yaml"])?;
        must(&["apply", "--server-side", "--force-conflicts", "-f", "deploy/operator-rbac.yaml"])?;
        must(&["apply", "--server-side", "--force-conflicts", "-f", "examples/rbac/requester.yaml"])?;
        wait_admission_enforced(&run, dir)?;
        wait_admission_settled(&admin).await?;

        for ns in [AGENTS_NS, TARGET_NS] {
            let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
            Api::<Namespace>::all(admin.clone())
                .patch(ns, &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&namespace))
                .await?;
        }
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "bench-agent-requester"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-jit-requester"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench-agent", "namespace": AGENTS_NS}]}))?;
        Api::<RoleBinding>::namespaced(admin.clone(), AGENTS_NS)
            .patch("bench-agent-requester", &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&binding))
            .await?;
        let floor_binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "bench-floor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-jit-operator"},
            "subjects": [{"kind": "ServiceAccount", "name": "bench-floor", "namespace": "kube-jit-system"}]}))?;
        Api::<ClusterRoleBinding>::all(admin.clone())
            .patch("bench-floor", &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&floor_binding))
            .await?;
        let agent_token = service_account_token(&admin, AGENTS_NS, "bench-agent", true).await?;
        let floor_token = service_account_token(&admin, "kube-jit-system", "bench-floor", true).await?;
        let operator_token = service_account_token(&admin, "kube-jit-system", "kube-jit", false).await?;

        let policy: kube_jit::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "bench"},
        "spec": {
            "subjects": {"serviceAccounts": [{"namespace": AGENTS_NS, "name": "bench-agent"}]},
            "grants": {"clusterRoles": ["view"], "namespaces": {"names": [TARGET_NS]}},
            "duration": {"default": "5m", "max": "1h"}
        }}))?;
        Api::<kube_jit::api::AccessPolicy>::all(admin.clone())
            .patch("bench", &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&policy))
            .await?;

        let operator_kubeconfig = dir.join("operator.kubeconfig");
        std::fs::write(&operator_kubeconfig, token_kubeconfig(dir, &config, &operator_token))?;
        let mut operator = Operator {
            bin: operator_bin.to_path_buf(),
            kubeconfig: operator_kubeconfig,
            dir: dir.to_path_buf(),
            child: None,
            starts: 0,
            pid_cell: Default::default(),
            http_port: free_port()?,
        };
        operator.start()?;
        operator.wait_ready(Duration::from_secs(120)).await?;
        Ok(World {
            dir: dir.to_path_buf(),
            agent: kube_jit::client::client_with_token(&config, &agent_token)?,
            floor: kube_jit::client::client_with_token(&config, &floor_token)?,
            admin,
            config,
            operator,
        })
    }

    /// A client holding nothing but `token`.
    pub fn with_token(&self, token: &str) -> Client {
        kube_jit::client::client_with_token(&self.config, token).expect("token client")
    }

    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("logs/audit.log")
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// The operator binary as its own process, authenticated as its ServiceAccount.
pub struct Operator {
    bin: PathBuf,
    kubeconfig: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    /// The running process's id, for samplers (0 while it is down).
    pub pid_cell: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Where it serves /metrics (loopback), for the sections that read gauges.
    pub http_port: u16,
}

impl Operator {
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "operator already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log())?;
        let child = Command::new(&self.bin)
            // Metrics on loopback only: the workload section reads its gauges.
            .args(["run", &format!("--http-addr=127.0.0.1:{}", self.http_port)])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBE_JIT_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.pid_cell.store(child.id(), std::sync::atomic::Ordering::Relaxed);
        // hack/bench.sh stops this pid if the benchmark itself is killed.
        std::fs::write(self.dir.join("operator.pid"), child.id().to_string())?;
        self.child = Some(child);
        Ok(())
    }

    /// The log of the current (or last) start.
    pub fn log(&self) -> PathBuf {
        self.dir.join(format!("operator-{}.log", self.starts))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL: no chance to clean up, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.pid_cell.store(0, std::sync::atomic::Ordering::Relaxed);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the start-up line; returns the wall-clock time it was logged.
    /// Reads only what the log gained, every 10 ms, so a request made "at
    /// ready" follows the line by at most that.
    pub async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<jiff::Timestamp> {
        let start = Instant::now();
        let mut position = 0;
        loop {
            if let Some(at) = ready_line(&self.log(), &mut position) {
                return Ok(at);
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                anyhow::bail!("operator exited ({status}) before it was ready; log:\n{text}");
            }
            if start.elapsed() >= limit {
                let text = std::fs::read_to_string(self.log()).unwrap_or_default();
                anyhow::bail!("operator not ready after {limit:?}; log:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The time of the operator's `start-up revocation done` line, if the complete
/// lines of `log` past `position` have it; advances `position` past them.
fn ready_line(log: &Path, position: &mut u64) -> Option<jiff::Timestamp> {
    use std::io::{Read, Seek};
    let mut file = std::fs::File::open(log).ok()?;
    file.seek(std::io::SeekFrom::Start(*position)).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    // A line still being written is left for the next read.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *position += complete as u64;
    let text = String::from_utf8_lossy(&bytes[..complete]);
    text.lines().filter(|l| l.contains("start-up revocation done")).find_map(|line| {
        let v = serde_json::from_str::<serde_json::Value>(line).ok()?;
        (v["message"] == "start-up revocation done")
            .then(|| v["timestamp"].as_str().and_then(|t| t.parse().ok()).unwrap_or_else(jiff::Timestamp::now))
    })
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kubectl_path(repo: &Path) -> anyhow::Result<PathBuf> {
    let out = Command::new(repo.join("hack/local-cluster.sh")).arg("bin-dir").output()?;
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()).join("kubectl"))
}

/// Admission policies take effect shortly after creation: probe with a
/// dry-run spoofed request until it is refused (as the tests do).
fn wait_admission_enforced(
    run: &dyn Fn(&[&str]) -> anyhow::Result<std::process::Output>,
    dir: &Path,
) -> anyhow::Result<()> {
    let spoof = r#"{"apiVersion":"kubejit.io/v1alpha1","kind":"AccessRequest","metadata":{"name":"probe","namespace":"default"},"spec":{"requester":{"user":"probe-spoof"},"role":{"kind":"ClusterRole","name":"view"},"namespaces":["default"]}}"#;
    let probe = dir.join("admission-probe.json");
    std::fs::write(&probe, spoof)?;
    for _ in 0..300 {
        let out = run(&["create", "--dry-run=server", "-f", probe.to_str().unwrap_or_default()])?;
        if String::from_utf8_lossy(&out.stderr).contains("kube-jit-requester-is-creator") {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("admission policy kube-jit-requester-is-creator not enforced after 30 s")
}

/// Waits until the operator counts the claim-checking policies as in force
/// (`kube_jit::admission::admitted_under`): a request made earlier is denied
/// `AdmissionNotProven`, by design.
async fn wait_admission_settled(admin: &Client) -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
    let policies = Api::<ValidatingAdmissionPolicy>::all(admin.clone()).list(&Default::default()).await?.items;
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone()).list(&Default::default()).await?.items;
    let proven = kube_jit::admission::claims_proven_from(&policies, &bindings)
        .ok_or_else(|| anyhow::anyhow!("kube-jit's admission policies are not installed"))?;
    // Object times have whole seconds: one more covers the truncation.
    let ready = proven + jiff::SignedDuration::from_secs(1);
    while jiff::Timestamp::now() < ready {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Creates (if needed) a ServiceAccount and mints a token for it. Long-lived
/// identities of the run get two hours; the operator's too.
async fn service_account_token(admin: &Client, ns: &str, name: &str, create: bool) -> anyhow::Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), ns);
    if create {
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        sas.patch(name, &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&sa)).await?;
    }
    let request: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 7200}}))?;
    let minted = sas.create_token_request(name, &PostParams::default(), &request).await?;
    minted.status.and_then(|s| s.token).ok_or_else(|| anyhow::anyhow!("no token for {ns}/{name}"))
}

fn token_kubeconfig(dir: &Path, config: &Config, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\ncurrent-context: c\n",
        config.cluster_url,
        dir.join("pki/ca.crt").display()
    )
}

/// HTTP status of the in-scope call: list pods in the target namespace, at
/// any resourceVersion. A consistent list (the default) waits for the API
/// server's watch cache of Pods to catch up with etcd, which in a namespace
/// whose Pods never change takes until etcd's next progress notification
/// (about 100 ms, and seconds under load): that wait is the cache's, not the
/// authorization's, and it is the same whoever calls.
pub async fn in_scope_status(client: &Client) -> u16 {
    match Api::<Pod>::namespaced(client.clone(), TARGET_NS)
        .list_metadata(&ListParams::default().limit(1).match_any())
        .await
    {
        Ok(_) => 200,
        Err(kube::Error::Api(s)) => s.code,
        Err(_) => 0,
    }
}

/// Polls the in-scope call every 10 ms until it returns `code`; returns how
/// many calls it took.
pub async fn wait_status(client: &Client, code: u16, limit: Duration) -> anyhow::Result<u32> {
    let start = Instant::now();
    let mut calls = 0u32;
    loop {
        calls += 1;
        let last = match Api::<Pod>::namespaced(client.clone(), TARGET_NS)
            .list_metadata(&ListParams::default().limit(1).match_any())
            .await
        {
            Ok(_) if code == 200 => return Ok(calls),
            Err(kube::Error::Api(s)) if s.code == code => return Ok(calls),
            Ok(_) => "200".to_string(),
            Err(e) => e.to_string(),
        };
        anyhow::ensure!(
            start.elapsed() < limit,
            "in-scope call did not return {code} within {limit:?} ({calls} calls, the last: {last})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
