//! `AccessApproval`: one approver's decision on one AccessRequest. Approval is
//! an object an approver creates (so RBAC decides who may approve, and the
//! API server records who did), never a field anyone could edit.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An approver's decision on an AccessRequest in the same namespace.
/// Admission checks that `spec.approver` is the identity that created it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubejit.io",
    version = "v1alpha1",
    kind = "AccessApproval",
    namespaced,
    shortname = "aapr",
    shortname = "jitapproval",
    category = "jit",
    doc = "An approver's decision (Approve or Deny) on one AccessRequest in the same namespace.",
    printcolumn(name = "Request", type_ = "string", json_path = ".spec.request"),
    printcolumn(name = "Decision", type_ = "string", json_path = ".spec.decision"),
    printcolumn(name = "Approver", type_ = "string", json_path = ".spec.approver"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("an approval is immutable; delete it and create another")
    .reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase")]
pub struct AccessApprovalSpec {
    /// Name of the AccessRequest (same namespace).
    #[schemars(length(min = 1, max = 253))]
    pub request: String,
    /// uid of that AccessRequest (`kubectl jit approve` fills it in). An
    /// approval counts only with it, and only for that very request: whoever
    /// may delete and re-create a request could otherwise put a broader one
    /// under an approval meant for the first. A denial without it still counts
    /// for a request created at least a second before it.
    #[serde(default, rename = "requestUID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub request_uid: Option<String>,
    /// Approve or Deny. A single authorized Deny ends the request.
    pub decision: Decision,
    /// Username of the approver; must be the identity that creates this object.
    #[schemars(length(min = 1, max = 512))]
    pub approver: String,
    /// Groups of the approver that policies may match on; each must be one the
    /// API server reported for the creator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub groups: Vec<String>,
    /// Why; shown to the requester and recorded in the audit trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(crate::api::access_request::PLAIN_TEXT_RULE)
        .message("reason must be plain text: no control, zero-width or bidirectional-override characters"))]
    pub reason: Option<String>,
}

/// An approver's decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Decision {
    Approve,
    Deny,
}
