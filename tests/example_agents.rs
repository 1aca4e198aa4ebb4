//! The example agents (examples/agent.rs, examples/agents/python/agent.py) run
//! as a user runs them, on a dedicated control plane with the real operator and
//! the example policy: each gets, uses and gives back a grant, and is refused clearly.
//!
//! hack/test.sh builds target/debug/examples/agent and exports KUBE_JIT_PYTHON
//! (a venv with examples/agents/python/requirements.txt) before `cargo test`.
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;
use support::operator::Operator;
use support::scenario::{self, Agent};
use support::{Cluster, repo_root};

/// Fields drop in order: the operator stops before its cluster does.
struct World {
    _operator: Operator,
    admin: Client,
    /// A kubeconfig that authenticates with the agent's own ServiceAccount token.
    kubeconfig: PathBuf,
    _cluster: Cluster,
}

/// What hack/demo.sh sets up: the agent `agents/deploy-bot` may only ask; the
/// example policy lets it read namespaces labelled debuggable (`payments`,
/// which has one pod), not `billing`.
async fn world() -> World {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    scenario::create_namespace(&admin, "agents", json!({})).await;
    scenario::create_namespace(&admin, "payments", json!({"kubejit.io/debuggable": "true"})).await;
    scenario::create_namespace(&admin, "billing", json!({})).await;
    cluster.kubectl(&["apply", "-f", "examples/rbac/requester.yaml"]);
    let agent = Agent::create(&cluster, &admin, "agents", "deploy-bot").await;
    cluster.kubectl(&["apply", "-f", "examples/policies/read-only-debugging.yaml"]);
    create_pod(&admin, "payments", "web-0").await;
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;
    let kubeconfig = cluster.dir.join("deploy-bot.kubeconfig");
    std::fs::write(&kubeconfig, cluster.token_kubeconfig(&agent.token)).expect("write agent kubeconfig");
    World { _operator: operator, admin, kubeconfig, _cluster: cluster }
}

/// A pod for the agents to find. No kubelet runs, so it stays Pending; the
/// namespace's default ServiceAccount (which admission needs) appears shortly.
async fn create_pod(admin: &Client, ns: &str, name: &str) {
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]}}))
    .unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), ns);
    let created = support::eventually(Duration::from_secs(30), || async {
        pods.create(&PostParams::default(), &pod).await.is_ok()
    })
    .await;
    assert!(created, "could not create pod {ns}/{name}");
}

/// Runs an agent to completion (at most 3 minutes) with the agent's
/// kubeconfig; returns (exit success, stdout, stderr) and echoes both.
async fn run_agent(w: &World, program: &Path, pre_args: &[&str], target: &str) -> (bool, String, String) {
    let mut command = tokio::process::Command::new(program);
    command
        .args(pre_args)
        .args(["--namespace", "agents", "--target-namespace", target, "--role", "view", "--duration", "5m"])
        .args(["--purpose", "read pods to find why the payments rollout is failing", "--timeout", "60"])
        .env("KUBECONFIG", &w.kubeconfig)
        .current_dir(repo_root())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {pre_args:?} did not finish within 3 minutes", program.display()))
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let (stdout, stderr) =
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    eprintln!("--- {} {pre_args:?} → {target}: {}\n{stdout}{stderr}", program.display(), out.status);
    (out.status.success(), stdout, stderr)
}

/// The name of the request the agent created, from its `requested agents/<name>:` line.
fn request_name(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("agent: requested agents/")?.split(':').next())
        .unwrap_or_else(|| panic!("no 'requested' line in:\n{stdout}"))
        .to_string()
}

/// The agent ran the whole story: found the pod, revoked early, was locked out,
/// and nothing granted is left.
async fn assert_full_story(w: &World, (ok, stdout, stderr): (bool, String, String)) {
    assert!(ok, "the agent failed:\n{stdout}{stderr}");
    assert!(stdout.contains("agent: authenticated as system:serviceaccount:agents:deploy-bot"), "{stdout}");
    assert!(stdout.contains("agent: 1 pod(s) in payments: web-0 (Pending)"), "no pod list in:\n{stdout}");
    assert!(stdout.contains("agent: confirmed: the grant token can no longer list pods in payments"), "{stdout}");
    let name = request_name(&stdout);
    let request = Api::<AccessRequest>::namespaced(w.admin.clone(), "agents").get(&name).await.expect("request");
    let status = request.status.as_ref().expect("status");
    assert_eq!(status.phase, Phase::Revoked, "{status:#?}");
    assert_eq!(status.policy.as_deref(), Some("read-only-debugging"));
    assert!(kube_jit::client::explain(&request).starts_with("RevokeRequested"), "{status:#?}");
    assert_eq!(request.spec.requester.user, "system:serviceaccount:agents:deploy-bot");
    assert_nothing_managed(&w.admin).await;
}

/// Out of policy: the agent exits non-zero and says why.
async fn assert_denied(w: &World, (ok, stdout, stderr): (bool, String, String)) {
    assert!(!ok, "the agent succeeded out of policy:\n{stdout}");
    assert!(stderr.contains("ended Denied: NoPolicyAllows"), "no clear denial in:\n{stderr}");
    let name = request_name(&stdout);
    let request = Api::<AccessRequest>::namespaced(w.admin.clone(), "agents").get(&name).await.expect("request");
    assert_eq!(request.status.map(|s| s.phase), Some(Phase::Denied));
    assert_nothing_managed(&w.admin).await;
}

async fn assert_nothing_managed(admin: &Client) {
    scenario::assert_nothing_managed(admin).await;
    let live = Api::<AccessRequest>::namespaced(admin.clone(), "agents").list(&ListParams::default()).await.unwrap();
    assert!(
        live.items.iter().all(|r| r.status.as_ref().is_some_and(|s| s.phase.is_terminal())),
        "a request is still live"
    );
}

/// target/debug/examples/agent, next to this test's own target directory
/// (so CARGO_TARGET_DIR is honoured). Refuses a binary older than its sources:
/// `cargo test` alone does not rebuild it.
fn rust_agent() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let agent = profile_dir.join("examples").join(format!("agent{}", std::env::consts::EXE_SUFFIX));
    let built = std::fs::metadata(&agent).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!("{} is missing: run `cargo build --examples` first (hack/test.sh does)", agent.display())
    });
    let newest = newest_source(&repo_root().join("src")).max(modified(&repo_root().join("examples/agent.rs")));
    assert!(
        built >= newest,
        "{} is older than its sources: run `cargo build --examples` first (hack/test.sh does)",
        agent.display()
    );
    agent
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

fn newest_source(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { newest_source(&e.path()) } else { modified(&e.path()) })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// $KUBE_JIT_PYTHON: a Python with examples/agents/python/requirements.txt installed.
fn python() -> PathBuf {
    let python = std::env::var_os("KUBE_JIT_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "KUBE_JIT_PYTHON is not set: run this test through hack/test.sh, which makes a venv with \
             examples/agents/python/requirements.txt and exports it, or set it to such a python"
        )
    });
    assert!(python.exists(), "KUBE_JIT_PYTHON={} does not exist", python.display());
    python
}

#[tokio::test]
async fn example_agents_rust_gets_uses_and_gives_back_a_grant() {
    let agent = rust_agent();
    let w = world().await;
    assert_full_story(&w, run_agent(&w, &agent, &[], "payments").await).await;
    assert_denied(&w, run_agent(&w, &agent, &[], "billing").await).await;
}

#[tokio::test]
async fn example_agents_python_gets_uses_and_gives_back_a_grant() {
    let python = python();
    let w = world().await;
    let script = "examples/agents/python/agent.py";
    assert_full_story(&w, run_agent(&w, &python, &[script], "payments").await).await;
    assert_denied(&w, run_agent(&w, &python, &[script], "billing").await).await;
}
