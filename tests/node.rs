//! kube-jit as users run it, on a real node (`hack/local-cluster.sh up
//! --node`: kubelet, containerd, runc, CNI, kube-proxy): the image built by
//! `hack/image.sh`, the chart installed by helm with its default values, two
//! operator Pods, the example agent as a Pod with its kubelet-projected token,
//! failover between the operator Pods, and `helm uninstall` with its pre-delete
//! Job.
//!
//! The tests need root (network namespaces, mounts, cgroups) and take minutes,
//! so `cargo test` skips them; `hack/test.sh` starts a node and runs them with
//! `cargo test --test node -- --ignored`. They share one node and one release
//! name, so they take turns.
//! Figures are printed as `measure:` lines (`-- --nocapture`).
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;
use support::Cluster;
use support::node::{self, RELEASE_NAMESPACE};
use support::scenario::{self, view_request};

/// The tests share the node and the release name: one at a time.
static CHART: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `planner` in `agents` may have `view` in `team-a`, delivered either way.
fn node_policy() -> serde_json::Value {
    let mut policy = scenario::auto_policy();
    policy["delivery"] = json!({"requesterServiceAccount": true});
    policy
}

#[tokio::test]
#[ignore = "needs a node and root: hack/test.sh runs it (cargo test --test node -- --ignored)"]
async fn chart_on_a_node_runs_agents_as_pods_and_uninstalls_cleanly() {
    let _turn = CHART.lock().await;
    let cluster = Cluster::with_node();
    node::reset(cluster);
    let admin = cluster.admin();
    let (built, imported) = node::import_images(cluster);
    eprintln!("measure: hack/image.sh build {built:?}; import into the node's containerd {imported:?}");

    // helm install with default values and the image: two Pods, Ready, one leader.
    let installed = node::install(cluster, &[]);
    eprintln!("measure: helm install --wait until the Deployment is Ready {installed:?}");
    let (leader, standby) = node::one_leader(cluster, &admin, Duration::from_secs(60)).await;
    eprintln!("leader {}, standby {}", leader.name_any(), standby.name_any());
    for pod in [&leader, &standby] {
        for path in ["/healthz", "/readyz"] {
            assert_eq!(node::pod_http_status(cluster, pod, path), 200, "{} {path}", pod.name_any());
        }
    }

    // The NetworkPolicy (nothing enforces it on this node) lets the operator
    // reach the API server where kube-proxy sends it: the port of the
    // `kubernetes` Service's endpoints, after NAT.
    let slices = Api::<EndpointSlice>::namespaced(admin.clone(), "default")
        .list(&ListParams::default().labels("kubernetes.io/service-name=kubernetes"))
        .await
        .expect("list the kubernetes EndpointSlices");
    let port = slices.items[0].ports.as_ref().and_then(|p| p[0].port).expect("endpoint port");
    let policy = Api::<NetworkPolicy>::namespaced(admin.clone(), RELEASE_NAMESPACE).get("kube-jit").await.unwrap();
    let egress = policy.spec.unwrap().egress.unwrap_or_default();
    let allows = egress.iter().any(|rule| {
        rule.to.as_ref().is_none_or(Vec::is_empty)
            && rule
                .ports
                .iter()
                .flatten()
                .any(|p| p.port == Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)))
    });
    assert!(allows, "the NetworkPolicy's egress does not allow the API server's endpoint port {port}: {egress:?}");

    // The agent as a Pod, asking with the token the kubelet projected.
    let agent = scenario::stage(cluster, &admin, node_policy()).await;
    cluster.wait_admission_settled();
    let common = ["--namespace", "agents", "--target-namespace", "team-a", "--purpose", "read pods to debug a rollout"];
    for (pod, delivery) in
        [("agent-ephemeral", "ephemeral-service-account"), ("agent-requester-sa", "requester-service-account")]
    {
        let args = [&common[..], &["--duration", "15s", "--until-expiry", "--delivery", delivery]].concat();
        let (ok, log) = node::run_agent_pod(cluster, &admin, pod, &agent.name, &args, Duration::from_secs(180)).await;
        assert!(ok, "agent pod {pod} failed:\n{log}");
        assert!(log.contains("agent: authenticated as system:serviceaccount:agents:planner"), "{log}");
        let first = node::millis_after(&log, "request → first call: ");
        let refused = node::millis_after(&log, "expiresAt → refused: ");
        eprintln!("measure: agent pod ({delivery}): request → first call {first} ms; expiresAt → refused {refused} ms");
        assert!(refused <= 5_000, "the grant outlived expiresAt by {refused} ms:\n{log}");
    }

    // A live grant when uninstalling: the pre-delete Job revokes it.
    agent.request("held", view_request("10m")).await;
    let granted = scenario::wait_phase(&admin, "agents", "held", Phase::Granted, Duration::from_secs(60)).await;
    let grant = cluster.client_with_token(&agent.mint(&granted).await.expect("mint"));
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
    let audit_from = cluster.audit_position();
    // The agent keeps asking while the release goes: nothing may be granted
    // after the pre-delete Job's sweep and then left without an operator.
    let uninstalling = tokio::task::spawn_blocking(|| node::uninstall(Cluster::with_node()));
    let mut asked = 0;
    while !uninstalling.is_finished() {
        let request = scenario::request_body(&agent.user, &format!("during-{asked}"), view_request("20m"));
        let created = Api::<AccessRequest>::namespaced(agent.client.clone(), "agents")
            .create(&PostParams::default(), &request)
            .await;
        asked += usize::from(created.is_ok());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let uninstalled = uninstalling.await.expect("helm uninstall");
    eprintln!(
        "measure: helm uninstall --wait (pre-delete Job included) {uninstalled:?}; {asked} requests made meanwhile"
    );
    assert!(asked > 0, "no request was made during the uninstall");
    let calls = cluster.api_calls_since(audit_from, &format!("system:serviceaccount:{RELEASE_NAMESPACE}:kube-jit"));
    assert!(
        cluster.kubectl(&["get", "pods", "-A", "-o", "name"]).lines().all(|p| !p.contains("kube-jit-uninstall")),
        "the uninstall Job's pod is still there"
    );
    let job_ran = audit_lines(cluster, audit_from, "\"resource\":\"jobs\"", "\"name\":\"kube-jit-uninstall\"");
    assert!(job_ran > 0, "no trace of the pre-delete Job in the audit log; operator calls: {calls:?}");
    assert_ne!(scenario::list_pods_status(&grant, "team-a").await, 200, "the grant survived helm uninstall");
    scenario::assert_nothing_managed(&admin).await;
    let left = cluster.kubectl(&["get", "rolebindings,clusterrolebindings", "-A", "-o", "name"]);
    assert!(!left.contains("jit-"), "bindings left behind:\n{left}");
    // A request left with kube-jit's finalizer would hold its CRD in deletion forever.
    let crds_gone = support::eventually(Duration::from_secs(60), || async {
        !cluster.kubectl(&["get", "crds", "-o", "name"]).contains("kubejit.io")
    })
    .await;
    let crds = cluster.kubectl(&["get", "crds", "-o", "name"]);
    assert!(crds_gone, "CRDs left behind (and with them objects and finalizers):\n{crds}");
    node::reset(cluster);
}

/// Audit lines since `position` that contain every one of `needles`.
fn audit_lines(cluster: &Cluster, position: u64, needle: &str, also: &str) -> usize {
    let log = std::fs::read(cluster.dir.join("logs/audit.log")).unwrap_or_default();
    let log = String::from_utf8_lossy(&log[position as usize..]).into_owned();
    log.lines().filter(|l| l.contains(needle) && l.contains(also) && l.contains("\"verb\":\"create\"")).count()
}

#[tokio::test]
#[ignore = "needs a node and root: hack/test.sh runs it (cargo test --test node -- --ignored)"]
async fn operator_pods_fail_over_and_revoke_on_time() {
    const LEASE_SECS: u64 = 5;
    let _turn = CHART.lock().await;
    let cluster = Cluster::with_node();
    node::reset(cluster);
    let admin = cluster.admin();
    node::import_images(cluster);
    node::install(cluster, &[&format!("leaderElection.leaseDuration={LEASE_SECS}")]);
    let agent = scenario::stage(cluster, &admin, scenario::auto_policy()).await;
    cluster.wait_admission_settled();
    let pods: Api<Pod> = Api::namespaced(admin.clone(), RELEASE_NAMESPACE);

    for (round, how) in ["delete the leader Pod", "kill -9 the leader's process"].iter().enumerate() {
        let (leader, _) = node::one_leader(cluster, &admin, Duration::from_secs(120)).await;
        // A grant whose expiry falls inside the failover.
        let name = format!("failover-{round}");
        agent.request(&name, view_request("10s")).await;
        let granted = scenario::wait_phase(&admin, "agents", &name, Phase::Granted, Duration::from_secs(30)).await;
        let grant = cluster.client_with_token(&agent.mint(&granted).await.expect("mint"));
        scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
        let expires = scenario::expires_at(&granted);
        scenario::sleep_until(expires - jiff::SignedDuration::from_secs(3)).await;

        let (started, at) = (Instant::now(), jiff::Timestamp::now());
        if round == 0 {
            pods.delete(&leader.name_any(), &DeleteParams::default()).await.expect("delete the leader pod");
        } else {
            let pid = node::container_pid(&leader);
            let status = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap();
            assert!(status.success(), "kill -9 {pid}");
        }
        let (mut takeover, mut forbidden) = (None, None);
        while (takeover.is_none() || forbidden.is_none()) && started.elapsed() < Duration::from_secs(60) {
            if takeover.is_none()
                && let Some(holder) = node::lease_holder(&admin).await
                && let Ok(pod) = pods.get(&holder).await
                && (holder != leader.name_any() || restarted(&pod, &leader))
                && node::pod_leader_metric(cluster, &pod) == Some(1.0)
            {
                takeover = Some((started.elapsed(), holder));
            }
            if forbidden.is_none() && scenario::list_pods_status(&grant, "team-a").await == 403 {
                forbidden = Some(jiff::Timestamp::now());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (took, by) = takeover.unwrap_or_else(|| panic!("{how}: no replica acts as leader after 60 s"));
        let forbidden = forbidden.unwrap_or_else(|| panic!("{how}: the grant was not revoked"));
        let from = if expires > at { expires } else { at };
        let lag = forbidden.duration_since(from);
        let who = if by == leader.name_any() { "the same Pod, its container restarted" } else { "the other Pod" };
        eprintln!("measure: {how}: a replica acts after {took:?} ({who}); max(expiresAt, fault) → 403 {lag:?}");
        let bound = Duration::from_secs(LEASE_SECS + 1);
        assert!(lag <= jiff::SignedDuration::try_from(bound).unwrap(), "{how}: revoked {lag:?} after expiry/fault");
        if round == 0 {
            assert_ne!(by, leader.name_any(), "a deleted Pod cannot lead");
        }
        scenario::wait_phase(&admin, "agents", &name, Phase::Expired, Duration::from_secs(30)).await;
    }
    node::uninstall(cluster);
    node::reset(cluster);
}

/// Whether `now` is `before` with its container restarted since.
fn restarted(now: &Pod, before: &Pod) -> bool {
    let restarts =
        |p: &Pod| p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |c| c[0].restart_count);
    restarts(now) > restarts(before)
}
