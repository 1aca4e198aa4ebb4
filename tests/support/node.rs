//! kube-jit as users run it, on the node of `hack/local-cluster.sh up --node`:
//! images built by `hack/image.sh` and imported into the node's containerd,
//! the chart installed by helm, agents run as Pods with the kubelet's
//! projected tokens. The node's network lives in a namespace of its own;
//! [`in_node_netns`] runs a command there (to reach Pod addresses).

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::{Cluster, repo_root};

/// Where the chart is installed, as the README says.
pub const RELEASE: &str = "kube-jit";
pub const RELEASE_NAMESPACE: &str = "kube-jit-system";
/// The images `hack/image.sh build` writes (`hack/image.sh names`).
pub const OPERATOR_IMAGE: &str = "docker.io/library/kube-jit:local";
pub const AGENT_IMAGE: &str = "docker.io/library/kube-jit-agent:local";

/// Builds the images (once per process; `hack/image.sh` caches the compiled
/// dependencies) and imports them into the node's containerd. Returns how
/// long the build and the import took.
pub fn import_images(cluster: &Cluster) -> (Duration, Duration) {
    static BUILT: OnceLock<(PathBuf, Duration)> = OnceLock::new();
    let (dir, built) = BUILT.get_or_init(|| {
        let dir = repo_root().join("target/images");
        let start = Instant::now();
        let out = Command::new(repo_root().join("hack/image.sh"))
            .args(["build", "--out"])
            .arg(&dir)
            .output()
            .expect("run hack/image.sh");
        assert!(out.status.success(), "hack/image.sh build failed: {}", String::from_utf8_lossy(&out.stderr));
        (dir, start.elapsed())
    });
    let start = Instant::now();
    let tars = ["kube-jit.tar", "kube-jit-agent.tar"].map(|t| dir.join(t).display().to_string());
    cluster.run(&[&["import"], &tars.each_ref().map(String::as_str)[..]].concat());
    (*built, start.elapsed())
}

/// `helm <args>` against this cluster (helm built by hack/helm.sh).
pub fn helm(cluster: &Cluster, args: &[&str]) -> Output {
    Command::new(repo_root().join("hack/helm.sh"))
        .arg("exec")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run hack/helm.sh exec")
}

/// `helm install` of charts/kube-jit with its default values, the local
/// image, and `values` (`key=value` for `--set`); waits for the Deployment to
/// be Ready. Returns how long that took.
pub fn install(cluster: &Cluster, values: &[&str]) -> Duration {
    let mut args = vec![
        "install",
        RELEASE,
        "charts/kube-jit",
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--set",
        "image.repository=docker.io/library/kube-jit,image.tag=local,image.pullPolicy=Never",
        "--wait",
        "--timeout",
        "5m",
    ];
    for v in values {
        args.extend(["--set", v]);
    }
    let start = Instant::now();
    let out = helm(cluster, &args);
    let took = start.elapsed();
    if !out.status.success() {
        let pods = cluster.kubectl_output(&["get", "pods", "-A", "-o", "wide"]);
        let events = cluster.kubectl_output(&["get", "events", "-n", RELEASE_NAMESPACE]);
        // A Pod that stays Pending names a taint but not which: show the
        // node's taints and conditions too.
        let node = cluster.kubectl_output(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} taints={.spec.taints} conditions={range .status.conditions[*]}{.type}={.status}({.reason}) {end}{\"\\n\"}{end}",
        ]);
        panic!(
            "helm install failed: {}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&events.stdout),
            String::from_utf8_lossy(&node.stdout)
        );
    }
    took
}

/// `helm uninstall --wait`; panics on failure.
pub fn uninstall(cluster: &Cluster) -> Duration {
    let start = Instant::now();
    let out = helm(cluster, &["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "5m"]);
    assert!(out.status.success(), "helm uninstall failed: {}", String::from_utf8_lossy(&out.stderr));
    start.elapsed()
}

/// Removes what a failed test may have left: the release, then the operator's
/// namespaces (so the next test starts from an empty cluster).
pub fn reset(cluster: &Cluster) {
    let _ = helm(cluster, &["uninstall", RELEASE, "--namespace", RELEASE_NAMESPACE, "--wait", "--timeout", "5m"]);
    let _ = cluster.kubectl_output(&["delete", "namespace", "agents", "team-a", "team-b", "--ignore-not-found"]);
}

/// Runs `program args` inside the node's network namespace (named in the
/// state directory's `netns`, as `hack/local-cluster.sh netns` prints it).
pub fn in_node_netns(cluster: &Cluster, program: &str, args: &[&str]) -> Output {
    let netns = std::fs::read_to_string(cluster.dir.join("netns")).expect("a cluster with a node");
    Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", netns.trim()))
        .arg(program)
        .args(args)
        .output()
        .expect("run nsenter")
}

/// HTTP status of `GET http://<pod IP>:8080<path>`, from the node's network.
pub fn pod_http_status(cluster: &Cluster, pod: &Pod, path: &str) -> u16 {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
    let url = format!("http://{ip}:8080{path}");
    let out = in_node_netns(cluster, "curl", &["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5", &url]);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

/// `kube_jit_leader` of an operator Pod, from its /metrics.
pub fn pod_leader_metric(cluster: &Cluster, pod: &Pod) -> Option<f64> {
    pod_metric(cluster, pod, "kube_jit_leader")
}

/// The operator's Pods that are Running and Ready (not being deleted).
pub async fn ready_operator_pods(admin: &Client) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    let selector =
        ListParams::default().labels("app.kubernetes.io/name=kube-jit,app.kubernetes.io/component!=uninstall");
    pods.list(&selector)
        .await
        .expect("list operator pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .collect()
}

/// The Lease's holder (the chart names the Lease after the release).
pub async fn lease_holder(admin: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);
    leases.get_opt(RELEASE).await.ok()??.spec?.holder_identity
}

/// Waits (up to `limit`) until two operator Pods are Ready, the Lease names one
/// of them, and that one alone reports `kube_jit_leader 1`; returns (leader, standby).
pub async fn one_leader(cluster: &Cluster, admin: &Client, limit: Duration) -> (Pod, Pod) {
    let start = Instant::now();
    loop {
        let pods = ready_operator_pods(admin).await;
        let holder = lease_holder(admin).await;
        let metrics: Vec<_> = pods.iter().map(|p| pod_leader_metric(cluster, p)).collect();
        if pods.len() == 2 {
            let leaders: Vec<_> = pods.iter().zip(&metrics).filter(|(_, m)| **m == Some(1.0)).map(|(p, _)| p).collect();
            let standbys = metrics.iter().filter(|m| **m == Some(0.0)).count();
            if let [leader] = leaders[..]
                && standbys == 1
                && holder.as_deref() == Some(leader.name_any().as_str())
            {
                let standby = pods.iter().find(|p| p.name_any() != leader.name_any()).unwrap().clone();
                return (leader.clone(), standby);
            }
        }
        let names: Vec<_> = pods.iter().map(ResourceExt::name_any).collect();
        assert!(
            start.elapsed() < limit,
            "not exactly one leader among two Ready pods after {limit:?}: pods {names:?}, metrics {metrics:?}, Lease holder {holder:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the example agent as a Pod of `service_account` in `agents`, with
/// `args`, until it ends (at most `limit`); returns whether it succeeded and
/// its log (read through the API server from the kubelet, as `kubectl logs`).
pub async fn run_agent_pod(
    cluster: &Cluster,
    admin: &Client,
    name: &str,
    service_account: &str,
    args: &[&str],
    limit: Duration,
) -> (bool, String) {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "agents");
    let pod = pod_body(name, service_account, json!({}), AGENT_IMAGE, args);
    pods.create(&PostParams::default(), &pod).await.expect("create the agent pod");
    let ended = super::eventually_value(limit, || async {
        let phase = pods.get(name).await.ok()?.status?.phase?;
        matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase)
    })
    .await;
    let log = cluster.kubectl_output(&["logs", "-n", "agents", name]);
    let log = format!("{}{}", String::from_utf8_lossy(&log.stdout), String::from_utf8_lossy(&log.stderr));
    let phase = ended.unwrap_or_else(|| panic!("agent pod {name} did not finish within {limit:?}; log:\n{log}"));
    (phase == "Succeeded", log)
}

/// The number after `prefix` on the agent's log line that has it (`… -12 ms …`).
pub fn millis_after(log: &str, prefix: &str) -> i64 {
    let rest = log.lines().find_map(|l| l.split_once(prefix).map(|(_, r)| r.to_string()));
    let rest = rest.unwrap_or_else(|| panic!("no {prefix:?} in the agent's log:\n{log}"));
    let digits: String = rest
        .trim_start()
        .chars()
        .enumerate()
        .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
        .map(|(_, c)| c)
        .collect();
    digits.parse().unwrap_or_else(|_| panic!("no number after {prefix:?} in {rest:?}"))
}

/// The host process id of the first container of `pod` (found by the
/// container id in the processes' cgroups).
pub fn container_pid(pod: &Pod) -> u32 {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.container_id.clone())
        .expect("a running container");
    let id = id.rsplit('/').next().unwrap().to_string();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        // The container's first process: in its cgroup, and pid 1 of its own pid namespace.
        let ns_pid_one =
            status.lines().find(|l| l.starts_with("NSpid:")).is_some_and(|l| l.trim_end().ends_with("\t1"));
        if cgroup.contains(&id) && ns_pid_one {
            return pid;
        }
    }
    panic!("no process of container {id}");
}

/// The sandbox image every node Pod already has (`hack/image.sh build-pause`):
/// a container that runs until stopped, at a digest no agent runs.
pub const PAUSE_IMAGE: &str = "docker.io/library/kube-jit-pause:local";

/// Creates a Pod `name` in `agents` running as `service_account`, labelled
/// `labels`, with one container of `image` and `args`; waits (up to `limit`)
/// until it is Running and returns it.
pub async fn start_pod(
    admin: &Client,
    name: &str,
    service_account: &str,
    labels: serde_json::Value,
    image: &str,
    args: &[&str],
    limit: Duration,
) -> Pod {
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "agents");
    let pod = pod_body(name, service_account, labels, image, args);
    pods.create(&PostParams::default(), &pod).await.expect("create the pod");
    let running = super::eventually_value(limit, || async {
        let pod = pods.get(name).await.ok()?;
        let phase = pod.status.as_ref()?.phase.clone()?;
        (phase == "Running").then_some(pod)
    })
    .await;
    running.unwrap_or_else(|| panic!("pod {name} is not Running after {limit:?}"))
}

/// A Pod `name` running as `service_account`, labelled `labels`, with one
/// container `agent` of `image` (never pulled: imported into the node) and
/// `args`, under Pod Security's restricted rules.
fn pod_body(name: &str, service_account: &str, labels: serde_json::Value, image: &str, args: &[&str]) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "serviceAccountName": service_account,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "agent",
                "image": image,
                "imagePullPolicy": "Never",
                "args": args,
                "securityContext": {
                    "runAsNonRoot": true, "runAsUser": 65532, "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"}
                }
            }]
        }
    }))
    .unwrap()
}

/// The ServiceAccount token the kubelet projected into `pod` (bound to the
/// Pod), read from the node's disk as anyone who copied it out of the Pod would have it.
pub fn projected_token(cluster: &Cluster, pod: &Pod) -> String {
    let uid = pod.metadata.uid.as_deref().expect("pod uid");
    let dir = cluster.dir.join("node/kubelet/pods").join(uid).join("volumes/kubernetes.io~projected");
    for volume in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        if let Ok(token) = std::fs::read_to_string(volume.path().join("token")) {
            return token.trim().to_string();
        }
    }
    panic!("no projected token under {}", dir.display());
}

/// The `sha256:…` digest the runtime reported for the first container of `pod`.
pub fn image_digest(pod: &Pod) -> String {
    let id = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.image_id.clone())
        .expect("a container status");
    kube_jit::policy::workload::digest_of(&id).unwrap_or_else(|| panic!("no digest in imageID {id:?}")).to_string()
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A metric of an operator Pod, from its /metrics.
pub fn pod_metric(cluster: &Cluster, pod: &Pod, name: &str) -> Option<f64> {
    let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone())?;
    let out = in_node_netns(cluster, "curl", &["-s", "--max-time", "5", &format!("http://{ip}:8080/metrics")]);
    super::operator::metric(&String::from_utf8_lossy(&out.stdout), name)
}
