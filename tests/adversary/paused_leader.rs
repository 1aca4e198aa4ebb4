//! A paused leader writes nothing. A leader stopped (SIGSTOP) while it holds
//! the Lease resumes (SIGCONT) after the other replica took over, with a
//! grant's expiry due and new requests in its watch: it makes no write and
//! re-creates no object. The same for a leader cut off from the API server
//! (a partition) that keeps running and reconnects after the takeover. Writes are told apart by the User-Agent each replica
//! sends (`kube-jit/<version> (<identity>)`), as the API server's audit log records it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube_jit::api::Phase;

use crate::support::operator::Operator;
use crate::support::partition::Partition;
use crate::support::scenario;
use crate::support::{self, Cluster};

async fn holder(admin: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(admin.clone(), "kube-jit-system").get_opt("kube-jit").await.ok()??;
    lease.spec?.holder_identity
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill").success();
    assert!(ok, "kill {sig} {pid}");
}

/// Log lines of `operator` that mention `text` anywhere (message or fields).
fn logged(operator: &Operator, text: &str) -> usize {
    operator.log_lines().iter().filter(|l| l.to_string().contains(text)).count()
}

/// The standby `b` takes over once the Lease runs out, revokes "due" on time
/// and grants a new request, "fresh".
async fn takes_over(admin: &Client, planner: &scenario::Agent, b: &Operator) {
    let b_acts =
        support::eventually(Duration::from_secs(30), || async { logged(b, "start-up revocation done") > 0 }).await;
    assert!(b_acts, "the standby did not take over:\n{}", b.log_tail(20));
    planner.request("fresh", scenario::view_request("10m")).await;
    scenario::wait_phase(admin, "agents", "fresh", Phase::Granted, Duration::from_secs(30)).await;
    scenario::wait_phase(admin, "agents", "due", Phase::Expired, Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_paused_leader_writes_nothing_after_it_resumes() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    let args = ["--leader-elect", "--lease-duration", "4", "--sweep-interval", "1"];
    let mut a = Operator::start(&cluster, &args).await;
    a.wait_started().await;
    let a_pid = a.pid().unwrap();
    let b = Operator::start(&cluster, &args).await;
    b.wait_ready().await;
    let a_suffix = format!("-{a_pid}");
    assert!(holder(&admin).await.is_some_and(|h| h.ends_with(&a_suffix)), "a should lead: {:?}", holder(&admin).await);

    // A grant whose expiry falls due while `a` is stopped: `a` has it scheduled.
    planner.request("due", scenario::view_request("15s")).await;
    scenario::wait_phase(&admin, "agents", "due", Phase::Granted, Duration::from_secs(30)).await;

    signal(a_pid, "-STOP");
    takes_over(&admin, &planner, &b).await;

    let position = cluster.audit_position();
    signal(a_pid, "-CONT");
    // `a` runs again: it notices it lost the Lease, and anything it had due runs too.
    let noticed = support::eventually(Duration::from_secs(30), || async {
        logged(&a, "lost the lease") > 0 && support::operator::http_get(a.port, "/healthz").0 == 200
    })
    .await;
    assert!(noticed, "the resumed replica did not notice it lost the lease:\n{}", a.log_tail(20));
    // A round of work for a standby that believed it led: `b` still leads.
    let b_suffix = format!("-{}", b.pid().unwrap());
    let b_leads = support::eventually(Duration::from_secs(10), || async {
        holder(&admin).await.is_some_and(|h| h.ends_with(&b_suffix))
    })
    .await;
    assert!(b_leads, "b should still lead: {:?}", holder(&admin).await);
    let writes = cluster.writes_by_agent_since(position, &format!("{a_suffix})"));
    assert!(writes.is_empty(), "the resumed replica wrote after losing the lease: {writes:#?}");
    eprintln!("paused leader: {} write(s) refused by the fence after SIGCONT", logged(&a, "does not hold the lease"));
    a.kill();
}

/// A partition rather than a pause: the leader keeps running (its timers,
/// its queue) but reaches nothing while the standby takes over, revokes a
/// grant due meanwhile and grants a new request; when the network heals,
/// the old leader writes nothing.
#[tokio::test]
async fn a_partitioned_leader_writes_nothing_after_the_partition_heals() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let planner = scenario::stage(&cluster, &admin, scenario::auto_policy()).await;
    let partition = Partition::start(cluster.api_server_addr());
    let args = ["--leader-elect", "--lease-duration", "4", "--sweep-interval", "1"];
    let mut a = Operator::start_through(&cluster, &args, &format!("https://{}", partition.addr)).await;
    a.wait_started().await;
    let a_suffix = format!("-{}", a.pid().unwrap());
    let b = Operator::start(&cluster, &args).await;
    b.wait_ready().await;
    assert!(holder(&admin).await.is_some_and(|h| h.ends_with(&a_suffix)), "a should lead: {:?}", holder(&admin).await);

    planner.request("due", scenario::view_request("15s")).await;
    let due = scenario::wait_phase(&admin, "agents", "due", Phase::Granted, Duration::from_secs(30)).await;
    // `a` has finished with it (the right to mint is the last thing made): a
    // write `a` sent before the cut would land after the heal, which no
    // client-side fence can stop (README: not defended against).
    planner.mint(&due).await.expect("the requester mints once the grant is usable");

    partition.cut();
    takes_over(&admin, &planner, &b).await;
    // `a`'s own clock closed its fence when its Lease ran out, unrenewed.
    let fenced = support::eventually(Duration::from_secs(30), || async { logged(&a, "lost the lease") > 0 }).await;
    assert!(fenced, "the partitioned replica did not notice it lost the lease:\n{}", a.log_tail(20));

    let position = cluster.audit_position();
    partition.heal();
    // Its watches reconnect and deliver what happened meanwhile; `b` still leads.
    let b_suffix = format!("-{}", b.pid().unwrap());
    let settled = support::eventually(Duration::from_secs(30), || async {
        support::operator::http_get(a.port, "/healthz").0 == 200
            && holder(&admin).await.is_some_and(|h| h.ends_with(&b_suffix))
    })
    .await;
    assert!(settled, "after the partition: a alive and b leading: {:?}", holder(&admin).await);
    // Its watches reconnected (what it would act on has reached it).
    let caught_up = support::eventually(Duration::from_secs(30), || async {
        cluster
            .calls_by_agent_since(position, &format!("{a_suffix})"))
            .iter()
            .any(|c| c.starts_with("watch") || c.starts_with("list"))
    })
    .await;
    assert!(
        caught_up,
        "the healed replica made no call: {:?}",
        cluster.calls_by_agent_since(position, &format!("{a_suffix})"))
    );
    let writes = cluster.writes_by_agent_since(position, &format!("{a_suffix})"));
    assert!(writes.is_empty(), "the healed replica wrote after losing the lease: {writes:#?}");
    a.kill();
}

/// The fence itself, on the real API server: through a client whose fence is
/// closed (no Lease held, or its deadline passed), a write never reaches the
/// API server, whoever asks for it and however it is retried; reads and the
/// Lease's own writes (how a replica competes again) still do.
#[tokio::test]
async fn a_closed_fence_sends_no_write() {
    let cluster = Cluster::shared();
    let admin = cluster.admin();
    let identity = format!("fence-{}", support::unique_name("probe"));
    let fence = kube_jit::leadership::Fence::default();
    assert!(!fence.open());
    let client = kube_jit::controller::api_client::operator_client(cluster.config(), &identity, Some(fence)).unwrap();
    let position = cluster.audit_position();

    let map: k8s_openapi::api::core::v1::ConfigMap =
        serde_json::from_value(serde_json::json!({"metadata": {"name": identity}})).unwrap();
    let configmaps = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), "default");
    let refused = configmaps.create(&Default::default(), &map).await;
    assert!(
        matches!(&refused, Err(kube::Error::Service(e)) if e.to_string().contains("does not hold the lease")),
        "{refused:?}"
    );
    let deleted = configmaps.delete("kube-root-ca.crt", &Default::default()).await;
    assert!(deleted.is_err(), "a delete passed a closed fence");
    configmaps.list(&Default::default()).await.expect("reads pass");
    let lease: Lease = serde_json::from_value(serde_json::json!({"metadata": {"name": identity}})).unwrap();
    Api::<Lease>::namespaced(client, "default")
        .create(&Default::default(), &lease)
        .await
        .expect("the Lease's writes pass");

    // The API server saw this client's read (its audit log records it by
    // User-Agent; Leases are not audited there) and no write.
    let agent = format!("({identity})");
    let seen = support::eventually(Duration::from_secs(10), || async {
        cluster.calls_by_agent_since(position, &agent).iter().any(|c| c.starts_with("list configmaps"))
    })
    .await;
    assert!(seen, "the read did not reach the audit log: {:?}", cluster.calls_by_agent_since(position, &agent));
    let writes = cluster.writes_by_agent_since(position, &agent);
    assert!(writes.is_empty(), "writes went through a closed fence: {writes:#?}");
    Api::<Lease>::namespaced(admin, "default").get(&identity).await.expect("the Lease was written");
    Api::<Lease>::namespaced(cluster.admin(), "default").delete(&identity, &Default::default()).await.ok();
}
