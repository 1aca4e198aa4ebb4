//! Counts approvals for a request. The protocol: only approvers the matched
//! policy names count; nobody with a conflict of interest counts (the
//! requester, and unless the policy allows it the owner of the requesting
//! AgentIdentity: separation of duties, NIST SP 800-53 AC-5); each approver
//! counts once; one authorized denial ends the request. (A delegated request
//! counts no approvals: its parent grant decides it.)

use crate::api::access_approval::{AccessApprovalSpec, Decision};
use crate::api::access_policy::Approvers;
use crate::api::access_request::ApprovalTally;

/// Why an approval was not counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    pub approver: String,
    pub reason: &'static str,
}

/// The tally and the approvals it set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    pub tally: ApprovalTally,
    pub ignored: Vec<Ignored>,
}

impl Count {
    pub fn denied(&self) -> bool {
        self.tally.denied_by.is_some()
    }
    pub fn satisfied(&self) -> bool {
        !self.denied() && self.tally.approved_by.len() as i64 >= i64::from(self.tally.required)
    }
}

/// Who may not approve a request, whatever the policy's approvers say, and why.
/// A conflict keeps an approval from counting; only the requester's own
/// denial is ignored too (an owner's denial, if the owner is an approver,
/// still ends the request: it can only take access away).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Conflicts {
    /// The requester: neither approves nor denies its own request.
    requester: String,
    /// Users who may not approve.
    users: Vec<(String, &'static str)>,
    /// Groups whose members (as an approval names its groups) may not approve.
    groups: Vec<(String, &'static str)>,
}

impl Conflicts {
    /// The conflicts of a request by `requester`.
    pub fn of_requester(requester: &str) -> Conflicts {
        let reason = "the requester cannot approve its own request";
        Conflicts { requester: requester.to_string(), users: vec![(requester.to_string(), reason)], groups: Vec::new() }
    }

    /// Adds the owner of the requesting AgentIdentity: `owner` is a person or a
    /// team, so it is matched as a user and as a group.
    pub fn with_owner(mut self, owner: &str) -> Conflicts {
        if !owner.is_empty() {
            self.users
                .push((owner.to_string(), "the owner of the requesting AgentIdentity cannot approve its requests"));
            let reason = "a member of the group owning the requesting AgentIdentity cannot approve its requests";
            self.groups.push((owner.to_string(), reason));
        }
        self
    }

    /// Why `approval` may not count, if it may not.
    fn of(&self, approval: &AccessApprovalSpec) -> Option<&'static str> {
        let user = self.users.iter().find(|(u, _)| *u == approval.approver);
        let group = || self.groups.iter().find(|(g, _)| approval.groups.contains(g));
        user.or_else(group).map(|(_, reason)| *reason)
    }
}

/// Counts `approvals` (in creation order) for a request that needs `required`
/// distinct approvals from `approvers`, none from anyone in `conflicts`.
pub fn count<'a>(
    approvals: impl IntoIterator<Item = &'a AccessApprovalSpec>,
    conflicts: &Conflicts,
    approvers: &Approvers,
    required: i32,
) -> Count {
    let mut tally = ApprovalTally { required, ..ApprovalTally::default() };
    let mut ignored = Vec::new();
    for approval in approvals {
        let who = &approval.approver;
        if let Some(reason) = conflicts.of(approval)
            && (approval.decision == Decision::Approve || *who == conflicts.requester)
        {
            ignored.push(Ignored { approver: who.clone(), reason });
            continue;
        }
        let authorized =
            approvers.users.iter().any(|u| u == who) || approval.groups.iter().any(|g| approvers.groups.contains(g));
        if !authorized {
            ignored.push(Ignored { approver: who.clone(), reason: "not an approver under the matched policy" });
            continue;
        }
        match approval.decision {
            Decision::Deny => {
                if tally.denied_by.is_none() {
                    tally.denied_by = Some(who.clone());
                }
            }
            Decision::Approve => {
                if !tally.approved_by.contains(who) {
                    tally.approved_by.push(who.clone());
                }
            }
        }
    }
    Count { tally, ignored }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(who: &str, decision: Decision, groups: &[&str]) -> AccessApprovalSpec {
        AccessApprovalSpec {
            request: "r".into(),
            request_uid: None,
            decision,
            approver: who.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            reason: None,
        }
    }

    fn approvers(users: &[&str], groups: &[&str]) -> Approvers {
        Approvers {
            users: users.iter().map(|u| u.to_string()).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn protocol_table() {
        use Decision::*;
        let who = approvers(&["alice", "bob", "carol"], &["sre"]);
        // (name, approvals, required, satisfied, denied, counted)
        type Row = (&'static str, Vec<AccessApprovalSpec>, i32, bool, bool, usize);
        let rows: Vec<Row> = vec![
            ("none yet", vec![], 1, false, false, 0),
            ("one of one", vec![approval("alice", Approve, &[])], 1, true, false, 1),
            ("one of two", vec![approval("alice", Approve, &[])], 2, false, false, 1),
            (
                "same approver twice",
                vec![approval("alice", Approve, &[]), approval("alice", Approve, &[])],
                2,
                false,
                false,
                1,
            ),
            ("two distinct", vec![approval("alice", Approve, &[]), approval("bob", Approve, &[])], 2, true, false, 2),
            ("self-approval ignored", vec![approval("agent", Approve, &["sre"])], 1, false, false, 0),
            ("stranger ignored", vec![approval("mallory", Approve, &[])], 1, false, false, 0),
            ("by group", vec![approval("dave", Approve, &["sre"])], 1, true, false, 1),
            ("denial wins", vec![approval("alice", Approve, &[]), approval("bob", Deny, &[])], 1, false, true, 1),
            ("denial first", vec![approval("bob", Deny, &[]), approval("alice", Approve, &[])], 1, false, true, 1),
            (
                "stranger cannot deny",
                vec![approval("mallory", Deny, &[]), approval("alice", Approve, &[])],
                1,
                true,
                false,
                1,
            ),
            (
                "requester cannot deny",
                vec![approval("agent", Deny, &[]), approval("alice", Approve, &[])],
                1,
                true,
                false,
                1,
            ),
        ];
        for (name, approvals, required, satisfied, denied, counted) in rows {
            let c = count(&approvals, &Conflicts::of_requester("agent"), &who, required);
            assert_eq!(c.satisfied(), satisfied, "{name}: satisfied");
            assert_eq!(c.denied(), denied, "{name}: denied");
            assert_eq!(c.tally.approved_by.len(), counted, "{name}: counted");
        }
    }

    #[test]
    fn conflicts_of_interest_never_count() {
        use Decision::*;
        let who = approvers(&["alice", "bob"], &["sre", "team-x"]);
        let conflicts = Conflicts::of_requester("agent").with_owner("alice");
        let team = Conflicts::of_requester("agent").with_owner("team-x");
        // (name, conflicts, approvals, satisfied, denied, ignored reason of the first)
        type Row = (&'static str, Conflicts, Vec<AccessApprovalSpec>, bool, bool, Option<&'static str>);
        let rows: Vec<Row> = vec![
            ("owner approves", conflicts.clone(), vec![approval("alice", Approve, &[])], false, false, Some("owner")),
            (
                "owner by an approver group",
                conflicts.clone(),
                vec![approval("alice", Approve, &["sre"])],
                false,
                false,
                Some("owner"),
            ),
            (
                "the owner's denial still ends it",
                conflicts.clone(),
                vec![approval("alice", Deny, &[])],
                false,
                true,
                None,
            ),
            ("another approver", conflicts.clone(), vec![approval("bob", Approve, &[])], true, false, None),
            (
                "member of the owning group",
                team.clone(),
                vec![approval("carol", Approve, &["team-x"])],
                false,
                false,
                Some("group"),
            ),
            (
                "owning group member in another group too",
                team.clone(),
                vec![approval("carol", Approve, &["sre", "team-x"])],
                false,
                false,
                Some("group"),
            ),
            (
                "owner allowed (no owner conflict)",
                Conflicts::of_requester("agent"),
                vec![approval("alice", Approve, &[])],
                true,
                false,
                None,
            ),
            (
                "owner then another",
                conflicts,
                vec![approval("alice", Approve, &[]), approval("bob", Approve, &[])],
                true,
                false,
                Some("owner"),
            ),
        ];
        for (name, conflicts, approvals, satisfied, denied, reason) in rows {
            let c = count(&approvals, &conflicts, &who, 1);
            assert_eq!(c.satisfied(), satisfied, "{name}: satisfied");
            assert_eq!(c.denied(), denied, "{name}: denied");
            let first = c.ignored.first().map(|i| i.reason);
            match reason {
                None => assert_eq!(first, None, "{name}"),
                Some(word) => assert!(first.is_some_and(|r| r.contains(word)), "{name}: {first:?}"),
            }
        }
    }
}
