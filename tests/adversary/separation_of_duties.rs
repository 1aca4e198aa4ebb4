//! Separation of duties: the accountable owner of an AgentIdentity, as a user
//! or through the group that owns it, never counts as an approver of the
//! agent's requests unless the policy says `ownerMayApprove`.

use std::time::Duration;

use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_jit::api::{AccessApproval, AccessRequest, AgentIdentity, Phase};
use serde_json::json;

use crate::support::operator::Operator;
use crate::support::scenario::{self, Agent};
use crate::support::{self, Cluster};

/// An approval of `request` by `approver`, naming `groups` and the request's uid.
fn approval(request: &AccessRequest, approver: &str, groups: &[&str]) -> AccessApproval {
    serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessApproval",
        "metadata": {"name": support::unique_name("approval")},
        "spec": {"request": request.metadata.name, "requestUID": request.metadata.uid, "decision": "Approve",
                 "approver": approver, "groups": groups, "reason": "looks fine"}}))
    .unwrap()
}

/// A stage where `planner` asks, for itself, under a Manual policy that names
/// `approvers`; its AgentIdentity is owned by `owner`.
struct Stage {
    cluster: Cluster,
    admin: Client,
    agent: Agent,
    _operator: Operator,
}

async fn stage(owner: &str, approvers: serde_json::Value, owner_may_approve: bool) -> Stage {
    let cluster = Cluster::dedicated();
    let admin = cluster.admin();
    let mut policy = scenario::auto_policy();
    policy["approval"] =
        json!({"mode": "Manual", "required": 1, "approvers": approvers, "ownerMayApprove": owner_may_approve});
    let agent = scenario::stage(&cluster, &admin, policy).await;
    let identity: AgentIdentity = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "metadata": {"name": "planner", "namespace": "agents"},
        "spec": {"type": "ai-agent", "owner": owner, "serviceAccountName": "planner"}}))
    .unwrap();
    Api::<AgentIdentity>::namespaced(admin.clone(), "agents")
        .patch("planner", &PatchParams::apply("kube-jit-tests"), &Patch::Apply(&identity))
        .await
        .expect("AgentIdentity");
    scenario::grant_approver_role(&admin, "agents", &["alice", "bob", "carol"]).await;
    let operator = Operator::start(&cluster, &[]).await;
    operator.wait_started().await;
    Stage { cluster, admin, agent, _operator: operator }
}

impl Stage {
    /// `planner` asks for `view` in team-a as its AgentIdentity, and the request waits for approval.
    async fn ask(&self, name: &str) -> AccessRequest {
        let mut spec = scenario::view_request("5m");
        spec["forAgent"] = json!("planner");
        self.agent.request(name, spec).await;
        scenario::wait_phase(&self.admin, "agents", name, Phase::Pending, Duration::from_secs(30)).await
    }

    /// `planner`'s ServiceAccount asks for itself, naming no AgentIdentity.
    async fn ask_as_service_account(&self, name: &str) -> AccessRequest {
        self.agent.request(name, scenario::view_request("5m")).await;
        scenario::wait_phase(&self.admin, "agents", name, Phase::Pending, Duration::from_secs(30)).await
    }

    /// An AccessApproval by `user` (in `groups`, which it names), with that user's own rights.
    async fn approve(&self, request: &AccessRequest, user: &str, groups: &[&str]) {
        self.create_approval(user, groups, &approval(request, user, groups))
            .await
            .expect("an approver may create an AccessApproval");
    }

    /// Creates `approval` as `user`, in `groups`.
    async fn create_approval(
        &self,
        user: &str,
        groups: &[&str],
        approval: &AccessApproval,
    ) -> Result<AccessApproval, kube::Error> {
        Api::<AccessApproval>::namespaced(self.cluster.impersonate(user, groups), "agents")
            .create(&PostParams::default(), approval)
            .await
    }

    /// Waits until the request's Approved condition says `approver`'s approval was
    /// set aside for `reason`, and checks nothing was granted.
    async fn assert_not_counted(&self, name: &str, approver: &str, reason: &str) {
        let requests = Api::<AccessRequest>::namespaced(self.admin.clone(), "agents");
        let message = || async {
            let r = requests.get(name).await.ok()?;
            let status = r.status?;
            let approved = status.conditions.iter().find(|c| c.type_ == "Approved")?;
            Some((status.phase, approved.message.clone()))
        };
        let expected = format!("{approver}: {reason}");
        let seen = support::eventually(Duration::from_secs(30), || async {
            message().await.is_some_and(|(_, m)| m.contains(&expected))
        })
        .await;
        let (phase, said) = message().await.unwrap_or((Phase::Pending, String::new()));
        assert!(seen, "{name}: expected \"{expected}\" on Approved, got {said:?}");
        assert_eq!(phase, Phase::Pending, "{name}: {said}");
        assert!(scenario::managed_objects(&self.admin).await.is_empty(), "{name}: something was granted");
    }
}

/// Case 8: alice owns the agent and is one of its policy's approvers; her
/// approval alone does not grant her agent `edit`-like access, bob's does.
#[tokio::test]
async fn the_owner_of_an_agent_cannot_approve_its_requests() {
    let s = stage("alice", json!({"users": ["alice", "bob"]}), false).await;
    let r = s.ask("owner-approves").await;
    s.approve(&r, "alice", &[]).await;
    s.assert_not_counted(
        "owner-approves",
        "alice",
        "the owner of the requesting AgentIdentity cannot approve its requests",
    )
    .await;
    s.approve(&r, "bob", &[]).await;
    let granted =
        scenario::wait_phase(&s.admin, "agents", "owner-approves", Phase::Granted, Duration::from_secs(30)).await;
    assert_eq!(granted.status.unwrap().approvals.unwrap().approved_by, ["bob"]);
}

/// An agent owned by a team: a member of that team who approves through the
/// group does not count, though the group is an approver group.
#[tokio::test]
async fn a_member_of_the_owning_team_cannot_approve_through_it() {
    let s = stage("team-x", json!({"groups": ["team-x"], "users": ["bob"]}), false).await;
    let r = s.ask("team-approves").await;
    s.approve(&r, "carol", &["team-x"]).await;
    s.assert_not_counted(
        "team-approves",
        "carol",
        "a member of the group owning the requesting AgentIdentity cannot approve its requests",
    )
    .await;
    s.approve(&r, "bob", &[]).await;
    scenario::wait_phase(&s.admin, "agents", "team-approves", Phase::Granted, Duration::from_secs(30)).await;
}

/// The owner named as a user is also refused when approving under another
/// approver group it belongs to; a policy that says `ownerMayApprove` lets
/// the owner count.
#[tokio::test]
async fn only_a_policy_that_says_so_lets_the_owner_approve() {
    let s = stage("alice", json!({"groups": ["sre"]}), false).await;
    let r = s.ask("owner-in-sre").await;
    s.approve(&r, "alice", &["sre"]).await;
    s.assert_not_counted(
        "owner-in-sre",
        "alice",
        "the owner of the requesting AgentIdentity cannot approve its requests",
    )
    .await;

    let allowing = stage("alice", json!({"users": ["alice"]}), true).await;
    let r = allowing.ask("owner-allowed").await;
    allowing.approve(&r, "alice", &[]).await;
    let granted =
        scenario::wait_phase(&allowing.admin, "agents", "owner-allowed", Phase::Granted, Duration::from_secs(30)).await;
    assert_eq!(granted.status.unwrap().approvals.unwrap().approved_by, ["alice"]);
}

/// The owner cannot step around the rule by having the agent's ServiceAccount
/// ask without naming its AgentIdentity.
#[tokio::test]
async fn the_owner_cannot_approve_a_request_that_names_no_agent() {
    let s = stage("alice", json!({"users": ["alice", "bob"]}), false).await;
    let r = s.ask_as_service_account("unnamed").await;
    s.approve(&r, "alice", &[]).await;
    s.assert_not_counted("unnamed", "alice", "the owner of the requesting AgentIdentity cannot approve its requests")
        .await;
}

/// The owning team's member cannot hide the team: an approval must list every
/// group its creator is in, so the conflict is always seen.
#[tokio::test]
async fn an_approver_cannot_hide_a_group() {
    let s = stage("team-x", json!({"users": ["carol", "bob"]}), false).await;
    let r = s.ask("hidden-team").await;
    let refused = s.create_approval("carol", &["team-x"], &approval(&r, "carol", &[])).await;
    crate::assert_refused(refused, "kube-jit-approver-is-creator", "carol approves without naming team-x");
    // Naming it, the approval is made and set aside.
    s.approve(&r, "carol", &["team-x"]).await;
    s.assert_not_counted(
        "hidden-team",
        "carol",
        "a member of the group owning the requesting AgentIdentity cannot approve its requests",
    )
    .await;
}

/// An approval that names no request uid may have been meant for an earlier
/// request of the same name (one deleted and made again, broader): it does
/// not count; naming the uid, it does.
#[tokio::test]
async fn an_approval_without_the_request_uid_does_not_count() {
    let s = stage("alice", json!({"users": ["bob"]}), false).await;
    let r = s.ask("swapped").await;
    let mut without_uid = approval(&r, "bob", &[]);
    without_uid.spec.request_uid = None;
    s.create_approval("bob", &[], &without_uid).await.expect("an approval without a uid is admitted");
    s.assert_not_counted(
        "swapped",
        "bob",
        "names no requestUID, so it may be meant for an earlier request of this name",
    )
    .await;
    s.approve(&r, "bob", &[]).await;
    scenario::wait_phase(&s.admin, "agents", "swapped", Phase::Granted, Duration::from_secs(30)).await;
}
