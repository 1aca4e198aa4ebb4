//! A requester revokes (`spec.revoke`, its own right) while its request is
//! being decided, again and again, at delays of a few milliseconds: whatever
//! the operator made for the request must still be taken down. With
//! `RequesterServiceAccount` delivery the grant's binding names the
//! requester's own, already usable, ServiceAccount: a binding made before the
//! request recorded it, then left behind when the write that would have
//! recorded it lost to the revocation, was access nobody granted, audited or
//! would ever end. The grant is recorded before anything is made.

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario;
use crate::support::{self, Cluster};

/// The delays (ms) between creating a request and revoking it: fixed, so a
/// failure replays; they straddle the few ms the operator takes to decide.
const DELAYS_MS: [u64; 10] = [0, 1, 2, 3, 4, 5, 6, 8, 10, 15];

#[tokio::test]
async fn revoking_while_the_grant_is_made_leaves_nothing_behind() {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let mut policy = scenario::auto_policy();
    policy["delivery"] = json!({"requesterServiceAccount": true});
    let planner = scenario::stage(&cluster, &admin, policy).await;
    let operator = Operator::start(&cluster, &["--sweep-interval", "1"]).await;
    operator.wait_started().await;
    let requests = Api::<AccessRequest>::namespaced(planner.client.clone(), "agents");

    let mut names = Vec::new();
    for mode in ["RequesterServiceAccount", "EphemeralServiceAccount"] {
        for (i, delay) in DELAYS_MS.iter().enumerate() {
            let name = format!("race-{}-{i}", if mode.starts_with('R') { "own" } else { "eph" });
            let mut spec = scenario::view_request("5m");
            spec["delivery"] = json!({"mode": mode});
            planner.request(&name, spec).await;
            tokio::time::sleep(Duration::from_millis(*delay)).await;
            requests
                .patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}})))
                .await
                .expect("the requester revokes its own request");
            names.push(name);
        }
    }
    for name in &names {
        let ended = support::eventually(Duration::from_secs(30), || async {
            requests.get(name).await.ok().and_then(|r| r.status).is_some_and(|s| s.phase.is_terminal())
        })
        .await;
        assert!(ended, "{name} did not end:\n{}", operator.log_tail(20));
        let r = requests.get(name).await.expect("get");
        let phase = r.status.as_ref().map(|s| s.phase);
        assert_eq!(phase, Some(Phase::Revoked), "{name}: {:#?}", r.status);
    }
    // Every object the operator made for them is gone: none was made without
    // its record, so revocation knew of each.
    scenario::assert_nothing_managed(&admin).await;
    assert_eq!(scenario::list_pods_status(&planner.client, "team-a").await, 403, "the requester kept access");
}
