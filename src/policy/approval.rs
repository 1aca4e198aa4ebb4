//! Counts approvals for a request. The protocol: only approvers the matched
//! policy names count; the requester never counts for its own request; each
//! approver counts once; one authorized denial ends the request.

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

/// Counts `approvals` (in creation order) for a request by `requester` that
/// needs `required` distinct approvals from `approvers`.
pub fn count<'a>(
    approvals: impl IntoIterator<Item = &'a AccessApprovalSpec>,
    requester: &str,
    approvers: &Approvers,
    required: i32,
) -> Count {
    let mut tally = ApprovalTally { required, ..ApprovalTally::default() };
    let mut ignored = Vec::new();
    for approval in approvals {
        let who = &approval.approver;
        if who == requester {
            ignored.push(Ignored { approver: who.clone(), reason: "the requester cannot approve its own request" });
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
            let c = count(&approvals, "agent", &who, required);
            assert_eq!(c.satisfied(), satisfied, "{name}: satisfied");
            assert_eq!(c.denied(), denied, "{name}: denied");
            assert_eq!(c.tally.approved_by.len(), counted, "{name}: counted");
        }
    }
}
