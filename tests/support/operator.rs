//! The operator as the tests run it: the real `kube-jit` binary, as a child
//! process with its own identity, killed when the handle drops.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::json;

use super::Cluster;

/// A running `kube-jit run`.
pub struct Operator {
    child: Option<Child>,
    pub log: PathBuf,
    kubeconfig: PathBuf,
    args: Vec<String>,
}

/// The username the operator authenticates as in tests.
pub const OPERATOR_USER: &str = "system:serviceaccount:kube-jit-system:kube-jit";

impl Operator {
    /// Gives the operator its shipped identity and least-privilege RBAC, and starts it.
    pub async fn start(cluster: &Cluster, args: &[&str]) -> Operator {
        cluster.kubectl(&["apply", "--server-side", "-f", "deploy/operator-rbac.yaml"]);
        Self::start_as(cluster, args, "kube-jit-system", "kube-jit").await
    }

    /// Starts the operator as the existing ServiceAccount `namespace/name`,
    /// with whatever RBAC it was given.
    pub async fn start_as(cluster: &Cluster, args: &[&str], namespace: &str, name: &str) -> Operator {
        let kubeconfig = operator_kubeconfig(cluster, namespace, name).await;
        let log = cluster.dir.join(format!("operator-{}.log", super::unique_name("run")));
        let mut op = Operator { child: None, log, kubeconfig, args: args.iter().map(|s| s.to_string()).collect() };
        op.restart();
        op
    }

    /// Starts the process again (after `kill`), appending to the same log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "operator already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-jit"))
            .arg("run")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBE_JIT_LOG_LEVEL", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kube-jit run");
        self.child = Some(child);
    }

    /// SIGKILL: the operator gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The operator's log lines (JSON).
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Audit lines for one grant id, as event names in order.
    pub fn audit_events(&self, grant_id: &str) -> Vec<String> {
        self.log_lines()
            .into_iter()
            .filter(|l| l["target"] == "kube_jit::audit" && l["grant_id"] == grant_id)
            .map(|l| l["event"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits until the operator has logged that start-up revocation finished.
    pub async fn wait_started(&self) {
        let ok = super::eventually(Duration::from_secs(30), || async {
            self.log_lines().iter().any(|l| l["message"] == "start-up revocation done")
        })
        .await;
        assert!(ok, "operator did not start; log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A kubeconfig that authenticates as the operator's ServiceAccount
/// `namespace/name` and nothing else.
async fn operator_kubeconfig(cluster: &Cluster, namespace: &str, name: &str) -> PathBuf {
    let sas: Api<ServiceAccount> = Api::namespaced(cluster.admin(), namespace);
    let request: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 7200}})).unwrap();
    let token = sas
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .expect("operator token")
        .status
        .and_then(|s| s.token)
        .expect("token");
    let path = cluster.dir.join("operator.kubeconfig");
    std::fs::write(&path, cluster.token_kubeconfig(&token)).expect("write operator kubeconfig");
    path
}
