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
    /// Where its `/metrics`, `/healthz` and `/readyz` answer (127.0.0.1).
    pub port: u16,
}

/// The username the operator authenticates as in tests.
pub const OPERATOR_USER: &str = "system:serviceaccount:kube-jit-system:kube-jit";

impl Operator {
    /// Gives the operator its shipped identity and least-privilege RBAC, and starts it.
    pub async fn start(cluster: &Cluster, args: &[&str]) -> Operator {
        cluster.kubectl(&["apply", "--server-side", "-f", "deploy/operator-rbac.yaml"]);
        Self::start_as(cluster, args, "kube-jit-system", "kube-jit").await
    }

    /// [`Self::start`], reaching the API server at `server` (a proxy in front of it).
    pub async fn start_through(cluster: &Cluster, args: &[&str], server: &str) -> Operator {
        cluster.kubectl(&["apply", "--server-side", "-f", "deploy/operator-rbac.yaml"]);
        let kubeconfig = operator_kubeconfig_at(cluster, "kube-jit-system", "kube-jit", Some(server)).await;
        Self::start_with(cluster, args, kubeconfig)
    }

    /// Starts the operator as the existing ServiceAccount `namespace/name`,
    /// with whatever RBAC it was given.
    pub async fn start_as(cluster: &Cluster, args: &[&str], namespace: &str, name: &str) -> Operator {
        let kubeconfig = operator_kubeconfig(cluster, namespace, name).await;
        Self::start_with(cluster, args, kubeconfig)
    }

    fn start_with(cluster: &Cluster, args: &[&str], kubeconfig: PathBuf) -> Operator {
        let log = cluster.dir.join(format!("operator-{}.log", super::unique_name("run")));
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        // Its own port on loopback, never the default 0.0.0.0:8080 several operators would share.
        let port = free_port();
        if !args.iter().any(|a| a == "--http-addr") {
            args.extend(["--http-addr".to_string(), format!("127.0.0.1:{port}")]);
        }
        let mut op = Operator { child: None, log, kubeconfig, args, port };
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

    /// SIGTERM, then waits (up to `limit`) for the process to exit; returns its exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("operator running");
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
        assert!(sent.success(), "kill -TERM {pid} failed");
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the operator") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                panic!("operator did not exit within {limit:?} of SIGTERM; its log ends:\n{}", self.log_tail(40));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `lines` lines of the operator's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// SIGKILL: the operator gets no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while running (a `--leader-elect` identity outside a cluster ends in `-<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self) {
        let port = self.port;
        let ok = super::eventually(Duration::from_secs(60), || async { http_get(port, "/readyz").0 == 200 }).await;
        assert!(ok, "operator not ready; log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
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
        let ok = super::eventually(Duration::from_secs(60), || async {
            self.log_lines().iter().any(|l| l["message"] == "start-up revocation done")
        })
        .await;
        assert!(ok, "operator did not start; log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

/// Runs `kube-jit <args>` to completion as the operator's ServiceAccount.
pub async fn run_as_operator(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    cluster.kubectl(&["apply", "--server-side", "-f", "deploy/operator-rbac.yaml"]);
    let kubeconfig = operator_kubeconfig(cluster, "kube-jit-system", "kube-jit").await;
    Command::new(env!("CARGO_BIN_EXE_kube-jit"))
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .stdin(Stdio::null())
        .output()
        .expect("run kube-jit")
}

/// A TCP port on 127.0.0.1 nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// `GET http://127.0.0.1:<port><path>`: (status code, body); (0, "") if nothing answers.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let code = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

/// The value of the sample `series` (name with labels, exactly as exposed) in metrics text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A kubeconfig that authenticates as the operator's ServiceAccount
/// `namespace/name` and nothing else.
async fn operator_kubeconfig(cluster: &Cluster, namespace: &str, name: &str) -> PathBuf {
    operator_kubeconfig_at(cluster, namespace, name, None).await
}

/// [`operator_kubeconfig`], reaching the API server at `server` when given.
async fn operator_kubeconfig_at(cluster: &Cluster, namespace: &str, name: &str, server: Option<&str>) -> PathBuf {
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
    let (path, text) = match server {
        Some(server) => (cluster.dir.join("operator-proxied.kubeconfig"), cluster.token_kubeconfig_at(&token, server)),
        None => (cluster.dir.join("operator.kubeconfig"), cluster.token_kubeconfig(&token)),
    };
    std::fs::write(&path, text).expect("write operator kubeconfig");
    path
}
