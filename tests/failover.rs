//! High availability on the real control plane: two `kube-jit run
//! --leader-elect` replicas, exactly one acting. Killing the leader (SIGKILL, no
//! release) hands over within the lease duration, and a grant that expires
//! during the failover is still revoked on time; SIGTERM hands over by release,
//! before the Lease could have expired.
//! The lease lasts 5 s here (15 s by default) to keep the test short.
mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::Client;
use kube::api::Api;
use kube_jit::api::Phase;
use support::Cluster;
use support::operator::{Operator, http_get, metric};
use support::scenario::{self, auto_policy, view_request};

const LEASE_SECS: u64 = 5;

struct Replica {
    operator: Operator,
}

impl Replica {
    async fn start(cluster: &Cluster) -> Replica {
        let lease = LEASE_SECS.to_string();
        let args = ["--leader-elect", "--lease-duration", &lease, "--sweep-interval", "2"];
        Replica { operator: Operator::start(cluster, &args).await }
    }

    fn identity_suffix(&self) -> String {
        format!("-{}", self.operator.pid().expect("running"))
    }

    fn leader_metric(&self) -> Option<f64> {
        metric(&http_get(self.operator.port, "/metrics").1, "kube_jit_leader")
    }
}

/// The Lease's spec as it stands.
async fn lease(admin: &Client) -> LeaseSpec {
    let lease =
        Api::<Lease>::namespaced(admin.clone(), "kube-jit-system").get("kube-jit").await.expect("get the Lease");
    lease.spec.expect("Lease spec")
}

async fn holder(admin: &Client) -> Option<String> {
    let lease = Api::<Lease>::namespaced(admin.clone(), "kube-jit-system").get_opt("kube-jit").await.ok()??;
    lease.spec?.holder_identity
}

async fn holds(admin: &Client, replica: &Replica) -> bool {
    holder(admin).await.is_some_and(|h| h.ends_with(&replica.identity_suffix()))
}

/// Waits until exactly one of the two leads, by the Lease and by both metrics; returns its index.
async fn one_leader(admin: &Client, replicas: &[&Replica; 2]) -> usize {
    let start = Instant::now();
    loop {
        let by_lease = [holds(admin, replicas[0]).await, holds(admin, replicas[1]).await];
        let by_metric = [replicas[0].leader_metric(), replicas[1].leader_metric()];
        match (by_lease, by_metric) {
            ([true, false], [Some(1.0), Some(0.0)]) => return 0,
            ([false, true], [Some(0.0), Some(1.0)]) => return 1,
            _ => {}
        }
        let why = format!("lease {by_lease:?}, metric {by_metric:?}, holder {:?}", holder(admin).await);
        assert!(start.elapsed() < Duration::from_secs(30), "not exactly one leader: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn standby_takes_over_on_kill_and_on_sigterm() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let agent = scenario::stage(&cluster, &admin, auto_policy()).await;
    let mut a = Replica::start(&cluster).await;
    let mut b = Replica::start(&cluster).await;
    a.operator.wait_ready().await;
    b.operator.wait_ready().await;
    assert_eq!(http_get(a.operator.port, "/healthz").0, 200);
    let first = one_leader(&admin, &[&a, &b]).await;
    let (leader, standby) = if first == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };

    // A grant whose expiry falls inside the failover window.
    agent.request("failover", view_request("8s")).await;
    let granted = scenario::wait_phase(&admin, "agents", "failover", Phase::Granted, Duration::from_secs(20)).await;
    let grant = cluster.client_with_token(&agent.mint(&granted).await.unwrap());
    scenario::wait_pods_status(&grant, "team-a", 200, Duration::from_secs(30)).await;
    let expires = scenario::expires_at(&granted);
    scenario::sleep_until(expires - jiff::SignedDuration::from_secs(3)).await;

    leader.operator.kill();
    let (killed, killed_at) = (Instant::now(), jiff::Timestamp::now());
    let (mut takeover, mut forbidden) = (None, None);
    while (takeover.is_none() || forbidden.is_none()) && killed.elapsed() < Duration::from_secs(20) {
        if takeover.is_none() && holds(&admin, standby).await {
            takeover = Some(killed.elapsed());
        }
        if forbidden.is_none() && scenario::list_pods_status(&grant, "team-a").await == 403 {
            forbidden = Some(jiff::Timestamp::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = takeover.expect("the standby did not take the lease over");
    let forbidden = forbidden.expect("the grant was not revoked after the failover");
    let from = if expires > killed_at { expires } else { killed_at };
    let lag = forbidden.duration_since(from);
    eprintln!("measure: lease {LEASE_SECS}s; kill → standby holds the lease {takeover:?}");
    eprintln!("measure: expiresAt {expires}, kill {killed_at}: max(expiresAt, kill) → 403 {lag:?}");
    let bound = Duration::from_secs(LEASE_SECS + 1);
    assert!(takeover <= bound, "takeover took {takeover:?}");
    assert!(lag <= jiff::SignedDuration::try_from(bound).unwrap(), "revocation came {lag:?} after expiry/kill");
    let ended = scenario::wait_phase(&admin, "agents", "failover", Phase::Expired, Duration::from_secs(30)).await;
    assert!(ended.status.unwrap().grant.unwrap().revoked_at.is_some());
    assert_eq!(standby.leader_metric(), Some(1.0));
    scenario::assert_nothing_managed(&admin).await;

    // The old leader comes back as a standby; SIGTERM on the acting one hands over at once.
    leader.operator.restart();
    leader.operator.wait_ready().await;
    assert_eq!(one_leader(&admin, &[standby, leader]).await, 0, "the acting replica keeps the lease");
    // Without a release, the other replica could take the Lease over no sooner
    // than its last renewal plus its duration (a renewal after this read only
    // pushes that later).
    let before = lease(&admin).await;
    let runs_out = before.renew_time.expect("renewTime").0
        + jiff::SignedDuration::from_secs(before.lease_duration_seconds.expect("leaseDurationSeconds").into());
    let terminated = Instant::now();
    let status = standby.operator.terminate(Duration::from_secs(20));
    let exited = terminated.elapsed();
    assert!(status.success(), "SIGTERM must exit 0, got {status:?}");
    let handed = support::eventually(Duration::from_secs(30), || async { holds(&admin, leader).await }).await;
    let handover = terminated.elapsed();
    eprintln!("measure: SIGTERM → leader exited {exited:?}; SIGTERM → other replica holds the lease {handover:?}");
    assert!(handed, "the lease was not taken over after SIGTERM");
    // Taken over before the old Lease ran out: released, not left to expire.
    let acquired = lease(&admin).await.acquire_time.expect("acquireTime").0;
    assert!(acquired < runs_out, "the lease was acquired at {acquired}, after it ran out at {runs_out}: not released");
    // The new leader acts.
    agent.request("after", view_request("1m")).await;
    scenario::wait_phase(&admin, "agents", "after", Phase::Granted, Duration::from_secs(30)).await;
    assert_eq!(leader.leader_metric(), Some(1.0));
}
