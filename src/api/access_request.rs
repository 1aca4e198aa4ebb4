//! `AccessRequest`: an agent or a person asks for a role or rules, in some
//! namespaces, for a while, for a reason. The spec is immutable once created
//! (only `revoke` may flip to true); the operator answers in `status`.

use k8s_openapi::api::rbac::v1::PolicyRule;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::core::{Reason, Rule};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ObjectRef;

/// Asks for time-boxed access. Created by the requester itself; admission
/// checks that `spec.requester` is the identity that created it.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubejit.io",
    version = "v1alpha1",
    kind = "AccessRequest",
    namespaced,
    status = "AccessRequestStatus",
    shortname = "areq",
    shortname = "jitreq",
    category = "jit",
    doc = "A request for time-boxed access: a role or rules, in some namespaces, for a duration, with a purpose.",
    printcolumn(name = "State", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Requester", type_ = "string", json_path = ".spec.requester.user"),
    printcolumn(name = "Agent", type_ = "string", json_path = ".spec.forAgent"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role.name"),
    printcolumn(name = "Namespaces", type_ = "string", json_path = ".spec.namespaces"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.grant.expiresAt"),
    printcolumn(name = "Purpose", type_ = "string", json_path = ".spec.purpose", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("has(self.role) != has(self.rules)")
        .message("set exactly one of spec.role or spec.rules").reason(Reason::FieldValueInvalid),
    validation = Rule::new("self.clusterWide || size(self.namespaces) > 0")
        .message("spec.namespaces must name at least one namespace unless spec.clusterWide is true"),
    validation = Rule::new("!self.clusterWide || size(self.namespaces) == 0")
        .message("spec.clusterWide grants everywhere; leave spec.namespaces empty"),
    validation = Rule::new("!self.clusterWide || !has(self.role) || self.role.kind == 'ClusterRole'")
        .message("spec.clusterWide needs a ClusterRole (a Role exists in one namespace only)"),
    validation = Rule::new("!has(self.rules) || self.rules.all(r, size(r.verbs) > 0 && ((has(r.resources) && size(r.resources) > 0 && has(r.apiGroups) && size(r.apiGroups) > 0) || (has(r.nonResourceURLs) && size(r.nonResourceURLs) > 0)))")
        .message("every rule needs verbs, and apiGroups with resources (or nonResourceURLs)"),
    validation = Rule::new("self.clusterWide || !has(self.rules) || self.rules.all(r, !has(r.nonResourceURLs) || size(r.nonResourceURLs) == 0)")
        .message("nonResourceURLs can only be granted cluster-wide (spec.clusterWide: true)"),
    validation = immutable_spec(),
)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestSpec {
    /// Who asks. Must be the authenticated user that creates the request
    /// (checked at admission); `kubectl jit request` fills it in.
    pub requester: Requester,

    /// Name of an AgentIdentity in this namespace the access is for. Empty: the
    /// requester itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub for_agent: Option<String>,

    /// An existing ClusterRole or Role to bind. Exactly one of `role` and `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleRef>,

    /// Inline RBAC rules; kube-jit generates a Role holding exactly these.
    /// Exactly one of `role` and `rules`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub rules: Option<Vec<PolicyRule>>,

    /// Namespaces the access applies in.
    #[serde(default)]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))
    )]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub namespaces: Vec<String>,

    /// Grant across the whole cluster (a ClusterRoleBinding). Only where the
    /// matched policy allows it.
    #[serde(default)]
    pub cluster_wide: bool,

    /// How long the access lasts once granted, as hours, minutes and seconds:
    /// `90s`, `15m`, `1h30m`. Empty: the matched policy's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new(format!("self.matches('{}')", crate::durations::PATTERN))
            .message("duration must look like 90s, 15m or 1h30m: whole hours (up to 4 digits), minutes and seconds"),
        validation = Rule::new(format!("!self.matches('{}') || duration(self) > duration('0s')", crate::durations::PATTERN))
            .message("duration must be more than zero"),
    )]
    pub duration: Option<String>,

    /// Why the access is needed; recorded on every object and audit line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    #[x_kube(validation = Rule::new(crate::api::access_request::PLAIN_TEXT_RULE)
        .message("purpose must be plain text: no control, zero-width or bidirectional-override characters"))]
    pub purpose: Option<String>,

    /// How the grant is handed to the requester.
    #[serde(default)]
    pub delivery: Delivery,

    /// Extensions of the live grant, oldest first (`kubectl jit extend NAME --by 15m`).
    /// Append-only, and only the requester may append; the operator answers each
    /// in `status.extensions`, granting it only where the matched policy allows
    /// extension and the grant's whole life stays within the policy's maximum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10), inner(length(min = 1, max = 20)))]
    #[x_kube(validation = Rule::new(format!("self.all(e, e.matches('{}') && duration(e) > duration('0s'))", crate::durations::PATTERN))
        .message("each extension must look like 90s, 15m or 1h30m and be more than zero"))]
    pub extensions: Vec<String>,

    /// Set to true to end the grant now. It cannot be set back.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self || !oldSelf").message("a revoked request cannot be un-revoked"))]
    pub revoke: bool,
}

/// CEL that holds for text without control, zero-width or bidi-override characters.
/// C0 and C1 controls, DEL, soft hyphen, Arabic letter mark, Mongolian vowel
/// separator, zero-width and bidi controls, line/paragraph separators, BOM,
/// and the invisible tag characters that can hide text from human readers.
pub(crate) const PLAIN_TEXT_RULE: &str = r"!self.matches('[\\x00-\\x1f\\x7f-\\x9f\\x{AD}\\x{61C}\\x{180E}\\x{200B}-\\x{200F}\\x{2028}-\\x{202E}\\x{2060}-\\x{206F}\\x{FEFF}\\x{FFF9}-\\x{FFFB}\\x{E0000}-\\x{E007F}]')";

/// The spec may change only by setting `revoke`; everything else is fixed at
/// creation so an approval always approves what it saw.
fn immutable_spec() -> Rule {
    let optional = ["forAgent", "role", "rules", "duration", "purpose"];
    let mut parts: Vec<String> = optional
        .iter()
        .map(|f| format!("has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f})"))
        .collect();
    for f in ["requester", "namespaces", "clusterWide", "delivery"] {
        parts.push(format!("self.{f} == oldSelf.{f}"));
    }
    // Extensions may only be appended.
    parts.push(
        "(!has(oldSelf.extensions) || (has(self.extensions) && size(self.extensions) >= size(oldSelf.extensions) \
         && self.extensions.slice(0, size(oldSelf.extensions)) == oldSelf.extensions))"
            .into(),
    );
    Rule::new(parts.join(" && "))
        .message("spec is immutable after creation (only spec.revoke may be set to true, and spec.extensions appended to); create a new AccessRequest instead")
        .reason(Reason::FieldValueForbidden)
}

/// The identity that created the request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Requester {
    /// Username as the API server authenticated it, for example
    /// `system:serviceaccount:agents:planner` or `alice@example.com`.
    #[schemars(length(min = 1, max = 512))]
    pub user: String,
    /// Groups of that user that policies may match on; each must be one the
    /// API server reported for the creator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 512)))]
    pub groups: Vec<String>,
    /// The Pod the request was made from, when the creator authenticated with
    /// a pod-bound (kubelet-projected) ServiceAccount token. Written at
    /// admission from the token's `authentication.kubernetes.io/pod-name`
    /// and `pod-uid` (MutatingAdmissionPolicy `kube-jit-requester-pod`);
    /// a value that is not the creator's own Pod is refused
    /// (`kube-jit-requester-is-creator`). Leave it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<RequesterPod>,
}

/// The Pod behind a pod-bound token, as the API server authenticated it
/// (`userInfo.extra`; see
/// <https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens>).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequesterPod {
    /// `authentication.kubernetes.io/pod-name`.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `authentication.kubernetes.io/pod-uid`.
    #[schemars(length(min = 1, max = 64))]
    pub uid: String,
}

/// What the operator verified about the Pod a workload-bound grant belongs
/// to, read from the live Pod (its status for image digests) when the grant
/// was decided. The grant ends when this Pod ends or stops matching.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadAttestation {
    /// Namespace of the Pod (the agent's namespace).
    pub namespace: String,
    /// Name of the Pod.
    pub pod: String,
    /// Uid of the Pod: a Pod of the same name made later is another workload.
    pub pod_uid: String,
    /// The ServiceAccount the Pod runs as.
    pub service_account: String,
    /// The node the Pod runs on (`spec.nodeName`).
    pub node: String,
    /// Every container of the Pod (init, app and ephemeral) and the image
    /// digest its runtime reported (`status.*ContainerStatuses[].imageID`).
    #[serde(default)]
    pub images: Vec<AttestedImage>,
    /// The workload's SPIFFE ID, from the attested namespace and
    /// ServiceAccount: `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.
    pub spiffe_id: String,
    /// When the Pod was verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attested_at: Option<Time>,
}

/// One container of an attested Pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttestedImage {
    pub container: String,
    /// The image as the Pod names it (`spec.containers[].image`).
    pub image: String,
    /// `sha256:<64 hex digits>`, from the runtime's report.
    pub digest: String,
}

/// The role to bind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// `ClusterRole` (bound per namespace with RoleBindings, or cluster-wide)
    /// or `Role` (the Role of that name in each target namespace).
    pub kind: RoleKind,
    /// Name of the role.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Kinds of role a request can name.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RoleKind {
    ClusterRole,
    Role,
}

/// How a grant reaches the requester.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `EphemeralServiceAccount` (default): a fresh ServiceAccount per grant,
    /// in the operator's grants namespace (`kube-jit-grants` unless
    /// `--grants-namespace` says otherwise), for which only the requester may
    /// mint tokens while the grant lasts.
    /// `RequesterServiceAccount`: bind the requester's own ServiceAccount,
    /// so an in-cluster agent's projected token carries the rights only
    /// during the window. Only under a policy with
    /// `delivery.requesterServiceAccount: true`: the rights then reach
    /// everything that can act as that ServiceAccount (its Pods, and anyone
    /// who may create Pods or tokens in its namespace).
    #[serde(default)]
    pub mode: DeliveryMode,
    /// Also write a token into a Secret beside the grant identity, bound to
    /// that Secret, for clients that cannot call TokenRequest. Only the
    /// requester may read it (`status.grant.objects` names it).
    #[serde(default)]
    pub token_secret: bool,
}

/// See [`Delivery::mode`].
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeliveryMode {
    #[default]
    EphemeralServiceAccount,
    RequesterServiceAccount,
}

/// Where a request stands. Terminal phases never change again.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Waiting for a policy decision or for approvals.
    #[default]
    Pending,
    /// Approved; the grant is being made.
    Approved,
    /// Live: the bindings exist until `status.grant.expiresAt`.
    Granted,
    /// Refused by policy or by an approver. Terminal.
    Denied,
    /// Ran to its end and was revoked on time. Terminal.
    Expired,
    /// Ended early (revoke, deletion, suspended identity, revoked parent). Terminal.
    Revoked,
    /// Could not be made or kept; nothing is left granted. Terminal.
    Failed,
}

impl Phase {
    /// Terminal phases never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Denied | Phase::Expired | Phase::Revoked | Phase::Failed)
    }
}

/// The operator's answer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// Summary for printer columns; the conditions are authoritative.
    #[serde(default)]
    pub phase: Phase,
    /// Approved, Denied, Granted, Expired, Revoked, Failed, each with a reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::api::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The AccessPolicy that allowed the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Why each policy that did not match said no.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_evaluations: Vec<PolicyEvaluation>,
    /// Approvals counted towards the policy's threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalTally>,
    /// The grant, once made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<GrantStatus>,
    /// Every grant from the root of the delegation chain to this one, oldest
    /// first; a request nobody delegated has a chain of one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delegation_chain: Vec<DelegationHop>,
    /// The answer to each of `spec.extensions`, in the same order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<ExtensionOutcome>,
    /// The Pod the grant is bound to, for an agent with `spec.workload`: the
    /// grant ends (`WorkloadGone`, `WorkloadChanged`) when it ends or stops matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadAttestation>,
}

/// The operator's answer to one extension.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionOutcome {
    /// The extension asked for (`15m`).
    pub by: String,
    /// Whether the grant was extended.
    pub granted: bool,
    /// Why, in words.
    pub message: String,
    /// When it was decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Time>,
    /// The grant's expiry after this answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
}

/// One hop of a delegation chain.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelegationHop {
    /// Who asked: a person, an agent's ServiceAccount, or a parent grant's identity.
    pub delegator: String,
    /// Whom the grant is for: `AgentIdentity namespace/name`, or the requester.
    pub delegatee: String,
    /// What and where, in words (`ClusterRole/view in team-a`).
    pub scope: String,
    pub purpose: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegated_at: Option<Time>,
    pub grant_id: String,
    /// The Pod the delegator asked from, where the hop was bound to a workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadAttestation>,
}

/// One policy's verdict on a request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyEvaluation {
    pub policy: String,
    pub allowed: bool,
    pub reason: String,
}

/// Approvals counted for a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalTally {
    /// Distinct approvers the policy requires.
    pub required: i32,
    /// Distinct, authorized approvers who approved (self-approvals never count).
    #[serde(default)]
    pub approved_by: Vec<String>,
    /// Who denied, if anyone; a denial ends the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_by: Option<String>,
}

/// What was granted and until when.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantStatus {
    /// Stable id of the grant, on every object and audit line.
    pub id: String,
    /// When the bindings were made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the grant ends; revocation is scheduled for this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// When revocation completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Time>,
    /// The identity holding the rights (`namespace/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ObjectRef>,
    /// The username the API server sees for that identity; join key for the
    /// API server's audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Every object created for the grant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRef>,
    /// For a grant bound to a workload: the object every token for the grant
    /// identity must be bound to (TokenRequest `boundObjectRef`; admission
    /// refuses others). The operator deletes it as soon as the attested Pod
    /// ends, and every token bound to it stops authenticating.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_bound_to: Option<ObjectRef>,
    /// The rules of each role the grant binds by name (`spec.role`), as they
    /// were when the grant was decided: a role that gains rights afterwards
    /// ends the grant (`PolicyWithdrawn`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<GrantedRole>,
}

/// A role a grant binds by name, and its rules when the grant was decided.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrantedRole {
    /// `ClusterRole` or `Role`.
    pub kind: String,
    /// The Role's namespace; empty for a ClusterRole.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub name: String,
    /// Its rules then.
    // Shared (`Arc`): thousands of grants of one role hold the same rules,
    // and the operator's cache keeps one copy of them (`controller::interned`).
    #[serde(default)]
    pub rules: std::sync::Arc<Vec<PolicyRule>>,
}
