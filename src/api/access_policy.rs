//! `AccessPolicy` (cluster-scoped, written by cluster admins): who may ask for
//! what, where, for how long, and how it is approved. A request is allowed
//! when some policy allows it; none is granted otherwise.

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Who may request what, and how it is approved.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubejit.io",
    version = "v1alpha1",
    kind = "AccessPolicy",
    shortname = "apol",
    shortname = "jitpolicy",
    category = "jit",
    doc = "Cluster-wide rule: which subjects may request which roles or rules, in which namespaces, for how long, with what approval.",
    printcolumn(name = "Approval", type_ = "string", json_path = ".spec.approval.mode"),
    printcolumn(name = "Approvals", type_ = "integer", json_path = ".spec.approval.required"),
    printcolumn(name = "Max", type_ = "string", json_path = ".spec.duration.max"),
    printcolumn(name = "ClusterRoles", type_ = "string", json_path = ".spec.grants.clusterRoles"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Who may ask. A subject matches when any entry matches.
    pub subjects: Subjects,
    /// What may be granted, and where.
    pub grants: GrantScope,
    /// Default and maximum grant duration.
    #[serde(default)]
    pub duration: DurationLimits,
    /// How requests are approved.
    #[serde(default)]
    pub approval: Approval,
    /// Whether a purpose is required, and its shape.
    #[serde(default)]
    pub purpose: PurposeRule,
    /// Caps per subject.
    #[serde(default)]
    pub limits: Limits,
    /// Whether holders of grants from this policy may delegate part of them.
    #[serde(default)]
    pub delegation: DelegationRule,
    /// Whether a live grant may be extended (`kubectl jit extend`), and how often.
    /// An extended grant's whole life never exceeds `duration.max`.
    #[serde(default)]
    pub extension: ExtensionRule,
    /// How grants under this policy may be delivered.
    #[serde(default)]
    pub delivery: DeliveryRule,
}

/// Subjects a policy applies to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subjects {
    /// AgentIdentities, by namespace, name and/or labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agents: Vec<AgentSubject>,
    /// Usernames, exactly as the API server authenticates them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Groups of the requester.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// ServiceAccounts making requests for themselves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccountSubject>,
}

/// Matches AgentIdentities. Empty fields match anything; at least one must be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.namespace) || has(self.name) || has(self.selector)")
    .message("an agent subject needs a namespace, a name or a selector"))]
#[serde(rename_all = "camelCase")]
pub struct AgentSubject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A ServiceAccount by namespace and name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSubject {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What a policy can grant.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("size(self.clusterRoles) + size(self.roles) + size(self.rules) > 0")
    .message("grants must list clusterRoles, roles or a rules ceiling"))]
#[serde(rename_all = "camelCase")]
pub struct GrantScope {
    /// ClusterRoles that may be referenced by name.
    #[serde(default)]
    pub cluster_roles: Vec<String>,
    /// Roles (in the target namespaces) that may be referenced by name.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Ceiling for inline rules: a request's rules must be covered by these,
    /// with Kubernetes' own RBAC covering semantics.
    #[serde(default)]
    pub rules: Vec<PolicyRule>,
    /// Namespaces grants may target.
    #[serde(default)]
    pub namespaces: NamespaceScope,
    /// Most namespaces one request may target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_namespaces: Option<i32>,
    /// Whether cluster-wide grants (ClusterRoleBindings) are allowed.
    #[serde(default)]
    pub cluster_wide: bool,
}

/// Namespaces by name and/or labels; a namespace matching either is allowed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceScope {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Default and maximum durations, in kube-jit's form (`15m`, `1h30m`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurationLimits {
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && duration(self) > duration('0s')", crate::durations::PATTERN))
        .message("duration must look like 90s, 15m or 1h30m and be more than zero"))]
    #[schemars(length(min = 1, max = 20))]
    pub default: String,
    #[x_kube(validation = Rule::new(format!("self.matches('{}') && duration(self) > duration('0s')", crate::durations::PATTERN))
        .message("duration must look like 90s, 15m or 1h30m and be more than zero"))]
    #[schemars(length(min = 1, max = 20))]
    pub max: String,
}

impl Default for DurationLimits {
    fn default() -> Self {
        Self { default: "15m".into(), max: "1h".into() }
    }
}

/// How requests under a policy are approved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.mode == 'Automatic' || size(self.approvers.users) + size(self.approvers.groups) > 0")
    .message("manual approval needs approvers (users or groups)"))]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// `Automatic` grants as soon as the policy allows; `Manual` waits for
    /// `required` distinct approvers.
    #[serde(default)]
    pub mode: ApprovalMode,
    /// Distinct approvals needed under `Manual`.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub required: i32,
    /// Who may approve. The requester never counts for its own request; the
    /// requesting AgentIdentity's owner counts only with `ownerMayApprove`.
    #[serde(default)]
    pub approvers: Approvers,
    /// Whether the accountable owner of the requesting AgentIdentity (a user,
    /// or a group an approver names) may approve the agent's requests. Off by
    /// default: separation of duties, so an owner cannot grant their own agent
    /// access alone (NIST SP 800-53 AC-5).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_may_approve: bool,
}

fn one() -> i32 {
    1
}

impl Default for Approval {
    fn default() -> Self {
        Self { mode: ApprovalMode::default(), required: 1, approvers: Approvers::default(), owner_may_approve: false }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ApprovalMode {
    #[default]
    Automatic,
    Manual,
}

/// Approver users and groups.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approvers {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// Purpose requirements.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurposeRule {
    /// A non-empty purpose is required.
    #[serde(default)]
    pub required: bool,
    /// A regular expression the whole purpose must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub pattern: Option<String>,
}

/// Per-subject caps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Most grants one subject may hold at once under this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_live_grants_per_subject: Option<i32>,
    /// Most requests one AgentIdentity may make under this policy within `window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests_per_window: Option<i32>,
    /// The window for `maxRequestsPerWindow` (`1h`, `10m`); default `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20))]
    pub window: Option<String>,
    /// Suspend an AgentIdentity that goes over the cap (its grants are revoked).
    #[serde(default)]
    pub suspend_on_exceed: bool,
}

/// Delegation of grants made under a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationRule {
    /// Grant holders may create AccessRequests delegating part of their grant.
    #[serde(default)]
    pub allowed: bool,
    /// Most hops below the root of a chain (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_depth: Option<i32>,
}

/// Delivery of grants made under a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRule {
    /// Allow `spec.delivery.mode: RequesterServiceAccount`: the rights are
    /// bound to the requester's own ServiceAccount instead of a fresh grant
    /// identity in the grants namespace. Off by default: they then reach
    /// everything that can act as that ServiceAccount, which includes anyone
    /// who may create Pods in its namespace (Kubernetes lets them run Pods as
    /// any ServiceAccount there) or hold `edit` there (impersonation).
    #[serde(default)]
    pub requester_service_account: bool,
}

/// Extension of live grants made under a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionRule {
    /// The requester may extend a live grant; each extension is checked
    /// against this policy when it is asked for.
    #[serde(default)]
    pub allowed: bool,
    /// Most extensions one grant may receive (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub max_extensions: Option<i32>,
}

impl ExtensionRule {
    /// Extensions allowed when `maxExtensions` is not set.
    pub const DEFAULT_MAX: i32 = 3;
}
