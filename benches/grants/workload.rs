//! What workload-bound grants cost the operator in memory: its resident set
//! with pinned agents granted (one Pod watch each), then with many more Pods
//! of those agents' ServiceAccounts (held by the watches), then with as many
//! unrelated Pods (not held). The figure is the resident growth per held Pod,
//! next to the size of a Pod as the API server returns it and as the watch
//! keeps it.
//!
//! There is no node here: the Pods are API objects whose status the harness
//! writes (Running, with an image digest), as a kubelet would. The node test
//! (`tests/node.rs`) proves the behaviour with real Pods; this only weighs it.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::board::Board;
use crate::measure;
use crate::world::{self, World};

pub const NS: &str = "bench-workload";
const DIGEST: &str = "sha256:4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a";
const IMAGE: &str = "registry.example/agent:1";

/// How many of each.
pub struct Sizes {
    /// Pinned agents, each with one granted Pod (and so one watch).
    pub agents: usize,
    /// Further Pods of each agent's ServiceAccount (held by its watch).
    pub siblings: usize,
    /// Pods of another ServiceAccount in the same namespace (not held).
    pub unrelated: usize,
}

fn pod(name: &str, service_account: &str, app: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": app, "team": "bench"},
                     "annotations": {"bench.kubejit.io/note": "a Pod as workloads have them: env, volumes, probes"}},
        "spec": {
            "serviceAccountName": service_account,
            "containers": [{
                "name": "agent", "image": IMAGE,
                "args": ["--namespace", NS, "--purpose", "benchmark"],
                "env": (0..8).map(|i| json!({"name": format!("SETTING_{i}"), "value": "x".repeat(40)})).collect::<Vec<_>>(),
                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                "volumeMounts": [{"name": "work", "mountPath": "/work"}]
            }],
            "volumes": [{"name": "work", "emptyDir": {}}]
        }
    }))
    .expect("pod body")
}

/// Creates `pods` with at most 32 in flight.
async fn create_all(api: &Api<Pod>, pods: Vec<Pod>) -> anyhow::Result<()> {
    futures::stream::iter(pods)
        .map(|p| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &p).await.map(|_| ()) }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The operator's metric `name` (0 when it cannot be read).
fn metric(port: u16, name: &str) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return 0.0 };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.split(' ').next()?.parse().ok()).unwrap_or(0.0)
}

/// Waits until the operator's `kube_jit_workload_watched_pods` is `pods`.
async fn wait_held(port: u16, pods: usize, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    while metric(port, "kube_jit_workload_watched_pods") as usize != pods {
        anyhow::ensure!(
            start.elapsed() < limit,
            "the operator holds {} watched Pods, not {pods}, after {limit:?}",
            metric(port, "kube_jit_workload_watched_pods")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Resident memory once it settles (two reads 1 s apart within 1 %, at most 20 s), MiB.
async fn settled_rss(pid: u32) -> f64 {
    measure::settled_rss(pid, Duration::from_secs(20)).await.0
}

pub async fn run(world: &World, sizes: &Sizes) -> anyhow::Result<Value> {
    let admin = &world.admin;
    let port = world.operator.http_port;
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}}))?;
    Api::<Namespace>::all(admin.clone())
        .patch(NS, &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&namespace))
        .await?;
    let policy: kube_jit::api::AccessPolicy = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "bench-workload"},
        "spec": {"subjects": {"agents": [{"namespace": NS}]},
                 "grants": {"clusterRoles": ["view"], "namespaces": {"names": [world::TARGET_NS]}},
                 "duration": {"default": "30m", "max": "1h"}}}))?;
    Api::<kube_jit::api::AccessPolicy>::all(admin.clone())
        .patch("bench-workload", &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&policy))
        .await?;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), NS);
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), NS);
    let agents: Api<kube_jit::api::AgentIdentity> = Api::namespaced(admin.clone(), NS);
    for i in 0..sizes.agents {
        let name = format!("pinned-{i}");
        let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        sas.patch(&name, &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&sa)).await?;
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-requester")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "kube-jit-requester"},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}]}))?;
        Api::<RoleBinding>::namespaced(admin.clone(), NS)
            .patch(&format!("{name}-requester"), &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&binding))
            .await?;
        let agent: kube_jit::api::AgentIdentity = serde_json::from_value(json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": name},
            "spec": {"owner": "bench", "serviceAccountName": name,
                     "workload": {"required": true, "podSelector": {"matchLabels": {"app": "pinned"}}, "images": [DIGEST]}}}))?;
        agents.patch(&name, &PatchParams::apply("kube-jit-bench"), &Patch::Apply(&agent)).await?;
    }
    let pid = world.operator.pid();
    let before = settled_rss(pid).await;
    let board = Board::watch(admin.clone(), NS);

    // One Running Pod per agent asks with its own pod-bound token.
    create_all(
        &pods,
        (0..sizes.agents).map(|i| pod(&format!("agent-{i}"), &format!("pinned-{i}"), "pinned")).collect(),
    )
    .await?;
    let started = Instant::now();
    for i in 0..sizes.agents {
        let name = format!("agent-{i}");
        let status = json!({"status": {"phase": "Running", "containerStatuses": [{
            "name": "agent", "image": IMAGE, "imageID": format!("{IMAGE}@{DIGEST}"), "ready": true, "restartCount": 0}]}});
        let written = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        let uid = written.metadata.uid.clone().unwrap_or_default();
        let tr: TokenRequest = serde_json::from_value(json!({"spec": {"expirationSeconds": 600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}}}))?;
        let token = sas.create_token_request(&format!("pinned-{i}"), &PostParams::default(), &tr).await?;
        let client = world.with_token(&token.status.and_then(|s| s.token).unwrap_or_default());
        let request: kube_jit::api::AccessRequest = serde_json::from_value(json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": format!("bound-{i}")},
            "spec": {"requester": {"user": format!("system:serviceaccount:{NS}:pinned-{i}")}, "forAgent": format!("pinned-{i}"),
                     "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": [world::TARGET_NS], "purpose": "benchmark"}}))?;
        Api::<kube_jit::api::AccessRequest>::namespaced(client, NS).create(&PostParams::default(), &request).await?;
    }
    // Each one Granted as a watch sees it: the time is the watch's, not a poll's.
    for i in 0..sizes.agents {
        let left = Duration::from_secs(300).saturating_sub(started.elapsed());
        board
            .wait(&format!("bound-{i}"), kube_jit::api::Phase::Granted, left)
            .await
            .map_err(|e| anyhow::anyhow!("workload-bound grants not made: {e}"))?;
    }
    let granted_in = started.elapsed();
    wait_held(port, sizes.agents, Duration::from_secs(120)).await?;
    let watches = metric(port, "kube_jit_workload_pod_watches") as usize;
    let granted = settled_rss(pid).await;

    // Many more Pods of the pinned ServiceAccounts: the watches hold them.
    let siblings: Vec<Pod> = (0..sizes.agents)
        .flat_map(|i| {
            (0..sizes.siblings).map(move |j| pod(&format!("sibling-{i}-{j}"), &format!("pinned-{i}"), "sibling"))
        })
        .collect();
    let held_pods = siblings.len();
    create_all(&pods, siblings).await?;
    wait_held(port, sizes.agents + held_pods, Duration::from_secs(300)).await?;
    let held = settled_rss(pid).await;

    // As many Pods of another ServiceAccount: nobody holds them.
    let unrelated: Vec<Pod> = (0..sizes.unrelated).map(|i| pod(&format!("other-{i}"), "default", "other")).collect();
    create_all(&pods, unrelated).await?;
    let listed = pods.list(&ListParams::default().limit(1)).await?;
    let total = sizes.agents + held_pods + sizes.unrelated;
    anyhow::ensure!(listed.metadata.remaining_item_count.unwrap_or(0) as usize + 1 == total, "not every Pod exists");
    let still_held = metric(port, "kube_jit_workload_watched_pods") as usize;
    let unrelated_rss = settled_rss(pid).await;

    // Sizes of one Pod: as the API server returns it, and as the watch keeps it.
    let mut sample = pods.get("sibling-0-0").await?;
    let full = serde_json::to_vec(&sample)?.len();
    kube_jit::controller::workloads::trim(&mut sample);
    let trimmed = serde_json::to_vec(&sample)?.len();

    // Done: the grants end with the namespace (and the operator stops watching).
    Api::<Namespace>::all(admin.clone()).delete(NS, &DeleteParams::default()).await?;
    let start = Instant::now();
    while Api::<Namespace>::all(admin.clone()).get_opt(NS).await?.is_some() {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(300), "namespace {NS} not gone after 300 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let per_pod_kib = (held - granted) * 1024.0 / held_pods.max(1) as f64;
    Ok(json!({
        "agents": sizes.agents,
        "watches": watches,
        "granted_in_s": measure::round(granted_in.as_secs_f64()),
        "held_pods": sizes.agents + held_pods,
        "unrelated_pods": sizes.unrelated,
        "held_after_unrelated": still_held,
        "rss_mib": {
            "before": measure::round(before),
            "granted": measure::round(granted),
            "siblings_held": measure::round(held),
            "unrelated_added": measure::round(unrelated_rss),
        },
        "rss_per_held_pod_kib": measure::round(per_pod_kib),
        "rss_per_unrelated_pod_kib": measure::round((unrelated_rss - held) * 1024.0 / sizes.unrelated.max(1) as f64),
        "pod_json_bytes": {"as_returned": full, "as_kept": trimmed},
    }))
}
