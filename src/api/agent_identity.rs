//! `AgentIdentity`: registers a non-human identity — what it is, who answers
//! for it, and the base ServiceAccount it authenticates as (which holds no
//! privilege of its own beyond asking).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A registered non-human identity.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kubejit.io",
    version = "v1alpha1",
    kind = "AgentIdentity",
    namespaced,
    status = "AgentIdentityStatus",
    shortname = "agent",
    shortname = "agents",
    category = "jit",
    doc = "A non-human identity (AI agent, CI runner, service) that asks kube-jit for access.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Owner", type_ = "string", json_path = ".spec.owner"),
    printcolumn(name = "ServiceAccount", type_ = "string", json_path = ".spec.serviceAccountName"),
    printcolumn(name = "Suspended", type_ = "boolean", json_path = ".spec.suspended"),
    printcolumn(name = "Grants", type_ = "integer", json_path = ".status.liveGrants"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model", priority = 1),
    printcolumn(name = "Workload", type_ = "boolean", json_path = ".spec.workload.required", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentitySpec {
    /// What kind of identity this is.
    #[serde(rename = "type", default)]
    pub agent_type: AgentType,
    /// The accountable owner: a person or team.
    #[schemars(length(min = 1, max = 253))]
    pub owner: String,
    /// The ServiceAccount (in this namespace) the agent authenticates as.
    /// It should hold no RBAC of its own beyond creating AccessRequests.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub service_account_name: String,
    /// For AI agents: the model (OIDC-A `agent_model`), e.g. `claude-sonnet-4`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub model: Option<String>,
    /// For AI agents: the provider (OIDC-A `agent_provider`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub provider: Option<String>,
    /// The agent's own version (OIDC-A `agent_version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub agent_version: Option<String>,
    /// What the agent is for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,
    /// Declared capabilities, e.g. `deploy`, `read-logs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 128)))]
    pub capabilities: Vec<String>,
    /// SPIFFE ID; default `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccountName>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(r"self.matches('^spiffe://[a-z0-9._-]+(/[A-Za-z0-9._-]+)*$')")
        .message("spiffeId must be spiffe://<trust-domain>/<path> (lowercase trust domain; path segments of letters, digits, '.', '-', '_')"))]
    pub spiffe_id: Option<String>,
    /// After this instant the identity is expired: its grants are revoked and
    /// new requests are denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// Kill switch: revokes every live grant of this identity and denies new
    /// requests while true.
    #[serde(default)]
    pub suspended: bool,
    /// Which Pods may act as this agent. With it, a request made from a Pod
    /// (a pod-bound token) is granted only if that Pod matches, and the grant
    /// is bound to the Pod: it ends when the Pod ends or stops matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
}

/// The Pods that may act as an agent (SPIFFE's Kubernetes workload
/// attestation reads the same facts: namespace, ServiceAccount, labels,
/// image digests, node). The Pod must run in the agent's namespace as its
/// ServiceAccount, be Running and not terminating.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    /// Only requests made from a matching Pod are granted: a request made
    /// with any other credential (a person, a `kubectl create token` token)
    /// is denied `WorkloadNotAttested`.
    #[serde(default)]
    pub required: bool,
    /// Labels the Pod must carry. Labels are whatever those who may edit the
    /// Pod write: they narrow, the digests and the ServiceAccount pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<LabelSelector>,
    /// The image digests allowed, as the container runtime reports them in
    /// the Pod's status (`status.containerStatuses[].imageID`): `sha256:<64
    /// hex digits>`, or that `imageID` whole (`<repository>@sha256:…`; only
    /// the digest is compared). Every init and app container must report
    /// one of them; a Pod with an ephemeral container is refused.
    #[schemars(length(min = 1, max = 64), inner(regex(pattern = r"^([^@\s]+@)?sha256:[0-9a-f]{64}$")))]
    pub images: Vec<String>,
    /// Labels the Pod's Node must carry. Prefer labels under
    /// `node-restriction.kubernetes.io/`, which a node cannot set on itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
}

/// Kinds of non-human identity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AgentType {
    #[default]
    AiAgent,
    CiRunner,
    Service,
    Other,
}

/// What the operator observed about the identity.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentIdentityStatus {
    /// Ready, Suspended, Expired, StandingPrivilege.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::api::conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Grants live now.
    #[serde(default)]
    pub live_grants: i32,
    /// Requests made for this identity.
    #[serde(default)]
    pub request_count: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_grant_time: Option<Time>,
    /// The SPIFFE ID in effect (given or defaulted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spiffe_id: Option<String>,
}
