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
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
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

/// `planner` pinned to its Pods: labelled `app=planner`, running the agent
/// image at `digest`.
fn pinned_agent(digest: &str) -> serde_json::Value {
    json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity",
        "metadata": {"name": "planner", "namespace": "agents"},
        "spec": {"type": "ai-agent", "owner": "platform-team", "serviceAccountName": "planner",
                 "workload": {"required": true, "podSelector": {"matchLabels": {"app": "planner"}},
                              "images": [digest]}}
    })
}

/// The request made from `pod` (its `spec.requester.pod`), once there is one.
async fn request_from_pod(admin: &Client, pod: &Pod, limit: Duration) -> AccessRequest {
    let requests: Api<AccessRequest> = Api::namespaced(admin.clone(), "agents");
    let uid = pod.metadata.uid.clone();
    let found = support::eventually_value(limit, || async {
        let list = requests.list(&ListParams::default()).await.ok()?;
        list.items.into_iter().find(|r| r.spec.requester.pod.as_ref().is_some_and(|p| Some(&p.uid) == uid.as_ref()))
    })
    .await;
    found.unwrap_or_else(|| panic!("no request made from Pod {} within {limit:?}", pod.name_any()))
}

/// Starts Pod `name` of `planner` (labelled `labels`, running the agent with
/// `args`), and returns it with the request it made, once decided.
async fn ask_from_pod(admin: &Client, name: &str, labels: serde_json::Value, args: &[&str]) -> (Pod, AccessRequest) {
    let limit = Duration::from_secs(60);
    let pod = node::start_pod(admin, name, "planner", labels, node::AGENT_IMAGE, args, limit).await;
    let request = request_from_pod(admin, &pod, limit).await;
    let request = settled(admin, &request.name_any(), limit).await;
    (pod, request)
}

/// Waits until the request reaches a terminal phase or `phase`; returns it.
async fn settled(admin: &Client, name: &str, limit: Duration) -> AccessRequest {
    let requests: Api<AccessRequest> = Api::namespaced(admin.clone(), "agents");
    let done = support::eventually_value(limit, || async {
        let r = requests.get(name).await.ok()?;
        let phase = r.status.as_ref()?.phase;
        (phase == Phase::Granted || phase.is_terminal()).then_some(r)
    })
    .await;
    done.unwrap_or_else(|| panic!("request {name} undecided after {limit:?}"))
}

fn reason_of(r: &AccessRequest, type_: &str) -> (String, String) {
    let c = r.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == type_).expect("condition");
    (c.reason.clone(), c.message.clone())
}

/// Mints a token for the grant identity of `granted` as `client`, bound to
/// `bound` (a Secret name) or to nothing.
async fn mint(client: &Client, granted: &AccessRequest, bound: Option<&str>) -> Result<String, kube::Error> {
    let sa = granted.status.as_ref().unwrap().grant.as_ref().unwrap().service_account.clone().unwrap();
    let mut spec = json!({"expirationSeconds": 600});
    if let Some(name) = bound {
        spec["boundObjectRef"] = json!({"apiVersion": "v1", "kind": "Secret", "name": name});
    }
    let tr: k8s_openapi::api::authentication::v1::TokenRequest = serde_json::from_value(json!({"spec": spec})).unwrap();
    let minted = Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), &sa.namespace)
        .create_token_request(&sa.name, &PostParams::default(), &tr)
        .await?;
    Ok(minted.status.and_then(|s| s.token).unwrap())
}

/// Polls every 10 ms until `client` gets `code` listing pods in team-a;
/// returns when (None after `limit`).
async fn until_status(client: &Client, code: u16, limit: Duration) -> Option<Instant> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if scenario::list_pods_status(client, "team-a").await == code {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

#[tokio::test]
#[ignore = "needs a node and root: hack/test.sh runs it (cargo test --test node -- --ignored)"]
async fn grants_bound_to_the_workload_end_with_the_pod() {
    let _turn = CHART.lock().await;
    let cluster = Cluster::with_node();
    node::reset(cluster);
    let admin = cluster.admin();
    node::import_images(cluster);
    node::install(cluster, &[]);
    let (leader, _) = node::one_leader(cluster, &admin, Duration::from_secs(120)).await;
    let mut policy = node_policy();
    policy["subjects"]["agents"] = json!([{"namespace": "agents"}]);
    policy["delegation"] = json!({"allowed": true, "maxDepth": 2});
    let agent = scenario::stage(cluster, &admin, policy).await;
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "agents");
    let agents: Api<kube_jit::api::AgentIdentity> = Api::namespaced(admin.clone(), "agents");
    let rss_before = node::rss_kib(node::container_pid(&leader));

    // The pause image's digest, as the runtime reports it: first the agent is
    // pinned to it, so a Pod running the agent image runs another digest.
    let probe =
        node::start_pod(&admin, "digest-probe", "default", json!({}), node::PAUSE_IMAGE, &[], Duration::from_secs(60))
            .await;
    let pause_digest = node::image_digest(&probe);
    pods.delete("digest-probe", &DeleteParams::default()).await.unwrap();
    let hold = [
        "--namespace",
        "agents",
        "--target-namespace",
        "team-a",
        "--purpose",
        "debug the rollout",
        "--for-agent",
        "planner",
        "--duration",
        "10m",
        "--hold",
    ];
    agents.create(&PostParams::default(), &serde_json::from_value(pinned_agent(&pause_digest)).unwrap()).await.unwrap();
    cluster.wait_admission_settled();

    // A Pod of the agent's ServiceAccount, labelled, at another digest: denied with the reason.
    let (a, first) = ask_from_pod(&admin, "planner-a", json!({"app": "planner"}), &hold).await;
    let agent_digest = node::image_digest(&a);
    assert_ne!(agent_digest, pause_digest);
    let (reason, message) = reason_of(&first, "Approved");
    assert_eq!(reason, "WorkloadMismatch", "{message}");
    assert!(message.contains(&agent_digest) && message.contains("spec.workload.images"), "{message}");
    eprintln!("denied (another digest): {message}");
    let _ = pods.delete("planner-a", &DeleteParams::default()).await;
    support::eventually(Duration::from_secs(60), || async { pods.get_opt("planner-a").await.ok().flatten().is_none() })
        .await;
    agents
        .patch(
            "planner",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"workload": {"images": [agent_digest]}}})),
        )
        .await
        .unwrap();

    // Pinned to the agent image's digest: a labelled Pod running it is granted.
    let (a, granted) = ask_from_pod(&admin, "planner-a", json!({"app": "planner"}), &hold).await;
    let status = granted.status.clone().unwrap();
    assert_eq!(status.phase, Phase::Granted, "{:?}", status.conditions);
    let attested = status.workload.clone().expect("the attestation");
    assert_eq!((attested.pod.as_str(), Some(attested.pod_uid.as_str())), ("planner-a", a.metadata.uid.as_deref()));
    assert_eq!(attested.node, a.spec.as_ref().unwrap().node_name.clone().unwrap());
    assert_eq!(attested.images[0].digest, agent_digest);
    assert_eq!(attested.spiffe_id, "spiffe://cluster.local/ns/agents/sa/planner");
    assert_eq!(status.delegation_chain[0].workload.as_ref(), Some(&attested), "the chain records it");
    let bound = status.grant.as_ref().unwrap().token_bound_to.clone().expect("tokens bound to a Secret");
    assert_eq!(bound.kind, "Secret");

    // Another Pod of the same ServiceAccount, not labelled as the agent, is denied.
    let (c, other) = ask_from_pod(&admin, "planner-c", json!({"app": "other"}), &hold).await;
    let (reason, message) = reason_of(&other, "Approved");
    assert_eq!(reason, "WorkloadMismatch", "{message}");
    assert!(message.contains("podSelector"), "{message}");
    eprintln!("denied (other labels): {message}");
    drop(c);

    // A token not bound to a Pod (kubectl create token) asks and mints in vain.
    let plain = cluster.client_with_token(&agent.token);
    let unbound = scenario::request_as(
        &plain,
        &agent.user,
        "not-from-a-pod",
        json!({
        "forAgent": "planner", "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"],
        "duration": "5m", "purpose": "from outside any Pod"}),
    )
    .await
    .expect("create");
    assert!(unbound.spec.requester.pod.is_none());
    let unbound = settled(&admin, "not-from-a-pod", Duration::from_secs(60)).await;
    let (reason, message) = reason_of(&unbound, "Approved");
    assert_eq!(reason, "WorkloadNotAttested", "{message}");
    let refused = mint(&plain, &granted, Some(&bound.name)).await.expect_err("minting from outside the Pod");
    assert!(refused.to_string().contains("only that Pod"), "{refused}");

    // The Pod's own token, copied off the node: it mints only tokens bound to the Secret.
    let pod_client = cluster.client_with_token(&node::projected_token(cluster, &a));
    let refused = mint(&pod_client, &granted, None).await.expect_err("an unbound token");
    assert!(refused.to_string().contains("must be bound to Secret"), "{refused}");
    let copied =
        cluster.client_with_token(&mint(&pod_client, &granted, Some(&bound.name)).await.expect("a bound token"));
    scenario::wait_pods_status(&copied, "team-a", 200, Duration::from_secs(30)).await;

    // Delegation from the grant keeps the Pod's attestation in the chain.
    scenario::register_agent(&admin, "agents", "helper").await;
    let child = scenario::request_as(
        &copied,
        &scenario::grant_user(&granted),
        "delegated",
        json!({
        "forAgent": "helper", "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["team-a"],
        "duration": "5m", "purpose": "read the rollout's pods"}),
    )
    .await
    .expect("delegate");
    let child = settled(&admin, &child.name_any(), Duration::from_secs(60)).await;
    let chain = child.status.as_ref().unwrap().delegation_chain.clone();
    assert_eq!(child.status.as_ref().unwrap().phase, Phase::Granted, "{:?}", child.status);
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].workload.as_ref(), Some(&attested), "the delegator's attestation");

    // Memory: the watches hold the agent's Pods only.
    let watches = node::pod_metric(cluster, &leader, "kube_jit_workload_pod_watches");
    let watched = node::pod_metric(cluster, &leader, "kube_jit_workload_watched_pods");
    let all = admin_pods(&admin).await;
    let rss_after = node::rss_kib(node::container_pid(&leader));
    eprintln!(
        "measure: {watches:?} Pod watch(es) holding {watched:?} Pods of {all} in the cluster; leader RSS {rss_before} KiB → {rss_after} KiB"
    );
    assert_eq!(watches, Some(1.0));
    assert!(watched.unwrap_or(0.0) < all as f64);

    // The Pod goes: the grant ends with it, and the copied tokens stop working.
    let start = Instant::now();
    pods.delete("planner-a", &DeleteParams::default()).await.unwrap();
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(admin.clone(), &bound.namespace);
    let secret_gone = async {
        while secrets.get_opt(&bound.name).await.ok().flatten().is_some() && start.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Instant::now()
    };
    let (forbidden, secret_gone) = tokio::join!(until_status(&copied, 403, Duration::from_secs(30)), secret_gone);
    let forbidden = forbidden.expect("403 after the Pod's deletion");
    let to_secret_gone = secret_gone.duration_since(start);
    assert!(secrets.get_opt(&bound.name).await.unwrap().is_none(), "the Secret tokens are bound to outlived the Pod");
    let ended =
        scenario::wait_phase(&admin, "agents", &granted.name_any(), Phase::Revoked, Duration::from_secs(30)).await;
    let (reason, message) = reason_of(&ended, "Revoked");
    assert_eq!(reason, "WorkloadGone", "{message}");
    let unauthorized = until_status(&copied, 401, Duration::from_secs(60)).await.expect("401: the token dies");
    let pod_token_dead =
        until_status(&pod_client, 401, Duration::from_secs(60)).await.expect("the Pod's own token dies");
    scenario::wait_phase(&admin, "agents", "delegated", Phase::Revoked, Duration::from_secs(30)).await;
    let to_403 = forbidden.duration_since(start);
    eprintln!(
        "measure: Pod deleted → copied grant token 403 {to_403:?}, its Secret gone {to_secret_gone:?}, 401 {:?}; the Pod's own token 401 {:?}",
        unauthorized.duration_since(start),
        pod_token_dead.duration_since(start)
    );
    assert!(to_403 <= Duration::from_secs(3), "the grant outlived its Pod by {to_403:?}");
    assert!(to_secret_gone <= Duration::from_secs(3), "the tokens' Secret outlived the Pod by {to_secret_gone:?}");

    // The agent's own ServiceAccount as the grant: relabelling the Pod ends it.
    let own = [&hold[..], &["--delivery", "requester-service-account"]].concat();
    let (d, held) = ask_from_pod(&admin, "planner-d", json!({"app": "planner"}), &own).await;
    assert_eq!(held.status.as_ref().unwrap().phase, Phase::Granted, "{:?}", held.status);
    assert!(held.status.as_ref().unwrap().workload.is_some());
    let own_token = cluster.client_with_token(&node::projected_token(cluster, &d));
    scenario::wait_pods_status(&own_token, "team-a", 200, Duration::from_secs(30)).await;
    let start = Instant::now();
    pods.patch(
        "planner-d",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await
    .unwrap();
    let forbidden = until_status(&own_token, 403, Duration::from_secs(30)).await.expect("403 after relabelling");
    let ended = scenario::wait_phase(&admin, "agents", &held.name_any(), Phase::Revoked, Duration::from_secs(30)).await;
    let (reason, message) = reason_of(&ended, "Revoked");
    assert_eq!(reason, "WorkloadChanged", "{message}");
    let to_403 = forbidden.duration_since(start);
    eprintln!("measure: RequesterServiceAccount grant: Pod relabelled → 403 {to_403:?} ({message})");
    assert!(to_403 <= Duration::from_secs(3), "the grant outlived its match by {to_403:?}");

    node::uninstall(cluster);
    node::reset(cluster);
}

/// Every Pod in the cluster.
async fn admin_pods(admin: &Client) -> usize {
    Api::<Pod>::all(admin.clone()).list(&ListParams::default()).await.map(|l| l.items.len()).unwrap_or(0)
}
