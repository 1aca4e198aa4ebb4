//! Status conditions, merged so `lastTransitionTime` changes only on a real
//! transition, and the condition types and reasons kube-jit uses.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types of an AccessRequest. Invariants: Approved and Denied never
/// both True; once a terminal condition (Denied, Expired, Revoked, Failed) is
/// True the request never changes again.
pub mod types {
    pub const APPROVED: &str = "Approved";
    pub const DENIED: &str = "Denied";
    pub const GRANTED: &str = "Granted";
    pub const EXPIRED: &str = "Expired";
    pub const REVOKED: &str = "Revoked";
    pub const FAILED: &str = "Failed";
    /// The latest extension's answer (True: extended; False: refused, grant unchanged).
    pub const EXTENDED: &str = "Extended";
}

/// Reasons, as constants so tests, Events and metrics agree.
pub mod reasons {
    pub const POLICY_ALLOWS: &str = "PolicyAllows";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const APPROVALS_MET: &str = "ApprovalsMet";
    pub const NO_POLICY_ALLOWS: &str = "NoPolicyAllows";
    pub const INVALID_REQUEST: &str = "InvalidRequest";
    pub const DENIED_BY_APPROVER: &str = "DeniedByApprover";
    pub const GRANTED: &str = "Granted";
    pub const GRANT_PENDING: &str = "GrantPending";
    pub const EXPIRED: &str = "Expired";
    pub const REVOKE_REQUESTED: &str = "RevokeRequested";
    pub const REQUEST_DELETED: &str = "RequestDeleted";
    pub const MANAGED_OBJECT_DELETED: &str = "ManagedObjectDeleted";
    pub const POLICY_WITHDRAWN: &str = "PolicyWithdrawn";
    pub const GRANT_FAILED: &str = "GrantFailed";
    pub const ADMISSION_POLICIES_MISSING: &str = "AdmissionPoliciesMissing";
    /// The request (or an extension) was made before kube-jit's admission
    /// policies were last (re)installed or changed: its claims were never checked.
    pub const ADMISSION_NOT_PROVEN: &str = "AdmissionNotProven";
    pub const RATE_LIMITED: &str = "RateLimited";
    pub const AGENT_SUSPENDED: &str = "AgentSuspended";
    pub const PARENT_REVOKED: &str = "ParentRevoked";
    pub const DELEGATION_DENIED: &str = "DelegationDenied";
    pub const DELEGATED: &str = "Delegated";
    pub const EXTENDED: &str = "Extended";
    pub const EXTENSION_REFUSED: &str = "ExtensionRefused";
    /// `kube-jit uninstall` revoked the grant before kube-jit was removed.
    pub const UNINSTALLED: &str = "Uninstalled";
    /// The agent requires `spec.workload` and the request was not made from a
    /// live Pod of it (no pod-bound token; the Pod gone, replaced or not Running).
    pub const WORKLOAD_NOT_ATTESTED: &str = "WorkloadNotAttested";
    /// The Pod the request was made from does not match the agent's
    /// `spec.workload` (ServiceAccount, labels, image digests, node).
    pub const WORKLOAD_MISMATCH: &str = "WorkloadMismatch";
    /// The Pod the request was made from is still starting (Pending, or a
    /// container without a digest yet): the request waits for it a while.
    pub const WORKLOAD_NOT_READY: &str = "WorkloadNotReady";
    /// The Pod a grant is bound to was deleted, replaced or finished.
    pub const WORKLOAD_GONE: &str = "WorkloadGone";
    /// The Pod a grant is bound to no longer matches (labels, containers, digests, phase).
    pub const WORKLOAD_CHANGED: &str = "WorkloadChanged";
}

/// Sets a condition, keeping `lastTransitionTime` when the status is unchanged.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: jiff::Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// Whether the condition of `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_a_transition() {
        let t0 = jiff::Timestamp::from_second(1_000).unwrap();
        let t1 = jiff::Timestamp::from_second(2_000).unwrap();
        let mut cs = Vec::new();
        set(&mut cs, types::APPROVED, false, reasons::AWAITING_APPROVAL, "0/1", Some(1), t0);
        set(&mut cs, types::APPROVED, false, reasons::AWAITING_APPROVAL, "still 0/1", Some(1), t1);
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time.0, t0);
        assert_eq!(cs[0].message, "still 0/1");
        set(&mut cs, types::APPROVED, true, reasons::APPROVALS_MET, "1/1", Some(1), t1);
        assert_eq!(cs[0].last_transition_time.0, t1);
        assert!(is_true(&cs, types::APPROVED));
    }
}
