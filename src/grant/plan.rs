//! The objects one grant consists of, computed from the request alone, so
//! that making, checking and revoking a grant are all idempotent and survive
//! restarts: whatever happened before, the same request yields the same plan.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::ObjectRef;
use crate::api::access_request::{AccessRequest, DeliveryMode, RoleKind};
use crate::names::{self, parse_service_account_username};

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// One object of a grant.
#[derive(Clone, Debug, PartialEq)]
pub enum Managed {
    ServiceAccount(ServiceAccount),
    Secret(Secret),
    Role(Role),
    RoleBinding(RoleBinding),
    ClusterRole(ClusterRole),
    ClusterRoleBinding(ClusterRoleBinding),
}

/// The order revocation follows: authorization first, then identity, then roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Bindings,
    Identity,
    Roles,
}

impl Stage {
    /// The stage of a managed kind; unknown kinds go last.
    pub fn of_kind(kind: &str) -> Stage {
        match kind {
            "RoleBinding" | "ClusterRoleBinding" => Stage::Bindings,
            "ServiceAccount" | "Secret" => Stage::Identity,
            _ => Stage::Roles,
        }
    }
}

impl Managed {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Managed::ServiceAccount(o) => &o.metadata,
            Managed::Secret(o) => &o.metadata,
            Managed::Role(o) => &o.metadata,
            Managed::RoleBinding(o) => &o.metadata,
            Managed::ClusterRole(o) => &o.metadata,
            Managed::ClusterRoleBinding(o) => &o.metadata,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Managed::ServiceAccount(_) => "ServiceAccount",
            Managed::Secret(_) => "Secret",
            Managed::Role(_) => "Role",
            Managed::RoleBinding(_) => "RoleBinding",
            Managed::ClusterRole(_) => "ClusterRole",
            Managed::ClusterRoleBinding(_) => "ClusterRoleBinding",
        }
    }

    pub fn stage(&self) -> Stage {
        Stage::of_kind(self.kind())
    }

    pub fn object_ref(&self) -> ObjectRef {
        let m = self.metadata();
        ObjectRef {
            kind: self.kind().to_string(),
            namespace: m.namespace.clone().unwrap_or_default(),
            name: m.name.clone().unwrap_or_default(),
        }
    }
}

/// Everything a grant consists of.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub grant_id: String,
    /// The identity holding the rights: the ephemeral ServiceAccount, or the
    /// requester's own.
    pub holder: ObjectRef,
    pub objects: Vec<Managed>,
    /// The name of the token Role and RoleBinding (the requester's right to
    /// mint tokens for the grant identity), if the grant has them.
    pub mint_right: Option<String>,
    /// The Secret every token for the grant identity must be bound to, for a
    /// grant bound to a workload (the same Secret holds the token, if asked for).
    pub token_bound_to: Option<String>,
    /// Whether the grant's Secret holds a token the operator mints (`delivery.tokenSecret`).
    pub holds_token: bool,
}

/// The two parts of a grant, made in this order with the `Granted` record
/// between them: nobody can use the grant identity (no token can be minted
/// for it) until the grant is recorded and audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Roles, the identity and its bindings: the rights, unusable without a
    /// token. The token Role is made here too: unbound, it gives nobody
    /// anything, and making it early leaves one request after the record.
    Access,
    /// The requester's right to mint tokens (the token RoleBinding) and the
    /// token Secret: what makes the identity usable.
    Usable,
}

impl Plan {
    /// Objects in the order they are made: roles, identity, then bindings, so
    /// a binding never points at something missing.
    pub fn creation_order(&self) -> Vec<&Managed> {
        let mut v: Vec<&Managed> = self.objects.iter().collect();
        v.sort_by_key(|o| std::cmp::Reverse(o.stage()));
        v
    }

    /// Which part of the grant `object` belongs to.
    pub fn part_of(&self, kind: &str, name: &str) -> Part {
        let mint_right = kind == "RoleBinding" && self.mint_right.as_deref() == Some(name);
        if mint_right || kind == "Secret" { Part::Usable } else { Part::Access }
    }

    /// The objects of `part`, in creation order.
    pub fn part(&self, part: Part) -> Vec<&Managed> {
        let name = |o: &Managed| o.metadata().name.clone().unwrap_or_default();
        self.creation_order().into_iter().filter(|o| self.part_of(o.kind(), &name(o)) == part).collect()
    }

    /// The ephemeral ServiceAccount, if the grant has one.
    pub fn service_account(&self) -> Option<&ServiceAccount> {
        self.objects.iter().find_map(|o| match o {
            Managed::ServiceAccount(sa) => Some(sa),
            _ => None,
        })
    }

    /// The Secret that holds a token minted by the operator, if the grant has one.
    pub fn token_secret(&self) -> Option<&Secret> {
        if !self.holds_token {
            return None;
        }
        self.objects.iter().find_map(|o| match o {
            Managed::Secret(s) => Some(s),
            _ => None,
        })
    }
}

/// Why a request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the request has no uid yet")]
    NoUid,
    #[error("delivery mode RequesterServiceAccount needs a ServiceAccount requester, not {0}")]
    RequesterNotServiceAccount(String),
}

/// Who holds what beyond the bindings: decided by the caller from the agent
/// and the matched policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Holders {
    /// The namespace grant identities live in (`--grants-namespace`): their
    /// ServiceAccount, the right to mint tokens for it and the token Secret.
    pub grants_namespace: String,
    /// Username allowed to mint tokens for the grant identity: the agent's base
    /// ServiceAccount for requests made for an agent, else the requester.
    pub token_minter: Option<String>,
    /// Whether the grant identity may delegate (create AccessRequests in the
    /// request's namespace), because the policy allows delegation.
    pub may_delegate: bool,
    /// The delegation chain, recorded on the grant identity.
    pub chain_json: Option<String>,
    /// The audiences tokens for the grant identity may carry (the API
    /// server's own), recorded on it for admission to enforce.
    pub token_audiences: Vec<String>,
    /// The uid of the Pod the grant is bound to (an attested workload): only
    /// that Pod may mint tokens for the grant identity, and only tokens bound
    /// to the grant's Secret, which the operator deletes when the Pod ends.
    pub workload_pod_uid: Option<String>,
}

impl Default for Holders {
    fn default() -> Self {
        Holders {
            grants_namespace: names::DEFAULT_GRANTS_NAMESPACE.to_string(),
            token_minter: None,
            may_delegate: false,
            chain_json: None,
            token_audiences: Vec::new(),
            workload_pod_uid: None,
        }
    }
}

/// The ClusterRole bound to grant identities that may delegate.
pub const DELEGATOR_CLUSTER_ROLE: &str = "kube-jit-delegator";

/// Computes the plan of a request whose grant ends at `expires_at` (RFC 3339).
pub fn plan(request: &AccessRequest, expires_at: &str) -> Result<Plan, PlanError> {
    plan_with(request, expires_at, &Holders::default())
}

/// [`plan`], with the token minter, delegation right and chain given.
pub fn plan_with(request: &AccessRequest, expires_at: &str, holders: &Holders) -> Result<Plan, PlanError> {
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    let name = request.metadata.name.clone().unwrap_or_default();
    let uid = request.metadata.uid.clone().ok_or(PlanError::NoUid)?;
    let spec = &request.spec;
    let id = names::grant_id(&namespace, &name, &uid);
    let base_name = names::object_name(&name, "", &id);

    let mut labels = BTreeMap::new();
    labels.insert(names::MANAGED_BY_LABEL.to_string(), names::MANAGED_BY_VALUE.to_string());
    labels.insert(names::GRANT_ID_LABEL.to_string(), id.clone());
    let mut annotations = BTreeMap::new();
    annotations.insert(names::REQUEST_ANNOTATION.to_string(), format!("{namespace}/{name}"));
    annotations.insert(names::EXPIRES_AT_ANNOTATION.to_string(), expires_at.to_string());
    annotations.insert(names::REQUESTER_ANNOTATION.to_string(), spec.requester.user.clone());
    if let Some(agent) = &spec.for_agent {
        annotations.insert(names::AGENT_ANNOTATION.to_string(), agent.clone());
    }
    if let Some(purpose) = &spec.purpose {
        annotations.insert(names::PURPOSE_ANNOTATION.to_string(), purpose.clone());
    }
    // Objects in the request's own namespace are also owned by it, so the
    // garbage collector removes them should everything else fail.
    let owner = request.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = None;
        o
    });
    let meta = |name: &str, ns: Option<&str>| ObjectMeta {
        name: Some(name.to_string()),
        namespace: ns.map(str::to_string),
        labels: Some(labels.clone()),
        annotations: Some(annotations.clone()),
        owner_references: match (ns, &owner) {
            (Some(n), Some(o)) if n == namespace => Some(vec![o.clone()]),
            _ => None,
        },
        ..ObjectMeta::default()
    };

    let mut objects = Vec::new();
    let holder = match spec.delivery.mode {
        DeliveryMode::EphemeralServiceAccount => {
            // The identity and what makes it usable live where no tenant holds
            // namespace-wide rights: nobody can run a Pod as it, impersonate it
            // with `edit`, or mint for it beyond the one RoleBinding below.
            let grants_ns = holders.grants_namespace.as_str();
            let mut sa_meta = meta(&base_name, Some(grants_ns));
            let minter = holders.token_minter.as_deref().unwrap_or(&spec.requester.user);
            let sa_annotations = sa_meta.annotations.get_or_insert_default();
            if let Some(chain) = &holders.chain_json {
                sa_annotations.insert(names::CHAIN_ANNOTATION.to_string(), chain.clone());
            }
            // What admission (kube-jit-grant-tokens) holds tokens for it to.
            sa_annotations.insert(names::TOKEN_MINTER_ANNOTATION.to_string(), minter.to_string());
            sa_annotations.insert(names::TOKEN_AUDIENCES_ANNOTATION.to_string(), holders.token_audiences.join(","));
            if let Some(uid) = &holders.workload_pod_uid {
                // What admission holds tokens to: minted by that Pod, bound to the Secret.
                sa_annotations.insert(names::WORKLOAD_POD_UID_ANNOTATION.to_string(), uid.clone());
                sa_annotations.insert(names::TOKEN_BOUND_SECRET_ANNOTATION.to_string(), base_name.clone());
            }
            objects.push(Managed::ServiceAccount(ServiceAccount {
                metadata: sa_meta,
                automount_service_account_token: Some(false),
                ..ServiceAccount::default()
            }));
            // The requester, and nobody else, may mint tokens for this one
            // identity (and read its token Secret, if it has one).
            let token_name = names::object_name(&name, "token", &id);
            let mut rules = vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["serviceaccounts/token".into()]),
                resource_names: Some(vec![base_name.clone()]),
                verbs: vec!["create".into()],
                ..PolicyRule::default()
            }];
            if spec.delivery.token_secret {
                rules.push(PolicyRule {
                    api_groups: Some(vec![String::new()]),
                    resources: Some(vec!["secrets".into()]),
                    resource_names: Some(vec![base_name.clone()]),
                    verbs: vec!["get".into()],
                    ..PolicyRule::default()
                });
            }
            objects.push(Managed::Role(Role { metadata: meta(&token_name, Some(grants_ns)), rules: Some(rules) }));
            objects.push(Managed::RoleBinding(RoleBinding {
                metadata: meta(&token_name, Some(grants_ns)),
                role_ref: role_ref("Role", &token_name),
                subjects: Some(vec![requester_subject(minter)]),
            }));
            if holders.may_delegate {
                // Possession of this grant is proven by authenticating as it:
                // only then may it ask for part of it for another agent.
                let delegate_name = names::object_name(&name, "delegate", &id);
                objects.push(Managed::RoleBinding(RoleBinding {
                    metadata: meta(&delegate_name, Some(&namespace)),
                    role_ref: role_ref("ClusterRole", DELEGATOR_CLUSTER_ROLE),
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: base_name.clone(),
                        namespace: Some(grants_ns.to_string()),
                        api_group: None,
                    }]),
                }));
            }
            if spec.delivery.token_secret || holders.workload_pod_uid.is_some() {
                // Beside the identity: a token can be bound only to an object
                // in its ServiceAccount's namespace. For a workload-bound
                // grant, every token is bound to it, and it goes with the Pod.
                objects.push(Managed::Secret(Secret {
                    metadata: meta(&base_name, Some(grants_ns)),
                    type_: Some("Opaque".into()),
                    ..Secret::default()
                }));
            }
            ObjectRef { kind: "ServiceAccount".into(), namespace: grants_ns.to_string(), name: base_name.clone() }
        }
        DeliveryMode::RequesterServiceAccount => {
            let (ns, sa) = parse_service_account_username(&spec.requester.user)
                .ok_or_else(|| PlanError::RequesterNotServiceAccount(spec.requester.user.clone()))?;
            ObjectRef { kind: "ServiceAccount".into(), namespace: ns.into(), name: sa.into() }
        }
    };
    let holder_subject = Subject {
        kind: "ServiceAccount".into(),
        name: holder.name.clone(),
        namespace: Some(holder.namespace.clone()),
        api_group: None,
    };

    if spec.cluster_wide {
        let crb_name = names::object_name(&format!("{namespace}-{name}"), "", &id);
        let target = match (&spec.role, &spec.rules) {
            (Some(role), _) => role.name.clone(),
            (None, Some(rules)) => {
                objects.push(Managed::ClusterRole(ClusterRole {
                    metadata: meta(&crb_name, None),
                    rules: Some(rules.clone()),
                    aggregation_rule: None,
                }));
                crb_name.clone()
            }
            (None, None) => String::new(),
        };
        objects.push(Managed::ClusterRoleBinding(ClusterRoleBinding {
            metadata: meta(&crb_name, None),
            role_ref: role_ref("ClusterRole", &target),
            subjects: Some(vec![holder_subject.clone()]),
        }));
    } else {
        for target_ns in &spec.namespaces {
            let (kind, role_name) = match (&spec.role, &spec.rules) {
                (Some(role), _) => {
                    (if role.kind == RoleKind::ClusterRole { "ClusterRole" } else { "Role" }, role.name.clone())
                }
                (None, Some(rules)) => {
                    objects.push(Managed::Role(Role {
                        metadata: meta(&base_name, Some(target_ns)),
                        rules: Some(rules.clone()),
                    }));
                    ("Role", base_name.clone())
                }
                (None, None) => continue,
            };
            objects.push(Managed::RoleBinding(RoleBinding {
                metadata: meta(&base_name, Some(target_ns)),
                role_ref: role_ref(kind, &role_name),
                subjects: Some(vec![holder_subject.clone()]),
            }));
        }
    }
    let ephemeral = matches!(spec.delivery.mode, DeliveryMode::EphemeralServiceAccount);
    let mint_right = ephemeral.then(|| names::object_name(&name, "token", &id));
    let token_bound_to = (ephemeral && holders.workload_pod_uid.is_some()).then(|| base_name.clone());
    let holds_token = ephemeral && spec.delivery.token_secret;
    Ok(Plan { grant_id: id, holder, objects, mint_right, token_bound_to, holds_token })
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef { api_group: Some(RBAC_GROUP.into()), kind: kind.into(), name: name.into() }
}

/// The RBAC subject for an authenticated username.
fn requester_subject(user: &str) -> Subject {
    match parse_service_account_username(user) {
        Some((ns, name)) => {
            Subject { kind: "ServiceAccount".into(), name: name.into(), namespace: Some(ns.into()), api_group: None }
        }
        None => Subject { kind: "User".into(), name: user.into(), namespace: None, api_group: Some(RBAC_GROUP.into()) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_request::{AccessRequestSpec, Delivery, Requester, RoleRef as ReqRoleRef};

    fn request(spec: AccessRequestSpec) -> AccessRequest {
        let mut r = AccessRequest::new("deploy", spec);
        r.metadata.namespace = Some("agents".into());
        r.metadata.uid = Some("1234".into());
        r
    }

    fn spec() -> AccessRequestSpec {
        AccessRequestSpec {
            requester: Requester { user: "system:serviceaccount:agents:planner".into(), ..Requester::default() },
            for_agent: None,
            role: Some(ReqRoleRef { kind: RoleKind::ClusterRole, name: "edit".into() }),
            rules: None,
            namespaces: vec!["staging".into(), "qa".into()],
            cluster_wide: false,
            duration: Some("15m".into()),
            purpose: Some("deploy".into()),
            delivery: Delivery::default(),
            extensions: Vec::new(),
            revoke: false,
        }
    }

    #[test]
    fn ephemeral_grant_binds_a_fresh_identity_in_each_namespace() {
        let p = plan(&request(spec()), "2026-01-01T00:00:00Z").unwrap();
        let refs: Vec<String> = p.objects.iter().map(|o| format!("{:?}", o.object_ref())).collect();
        assert_eq!(p.objects.len(), 5, "{refs:#?}");
        // The identity and the right to mint for it live in the grants
        // namespace, out of reach of anyone with rights in `agents`.
        assert_eq!(p.holder.namespace, names::DEFAULT_GRANTS_NAMESPACE);
        for o in &p.objects {
            let ns = o.metadata().namespace.clone().unwrap_or_default();
            let in_grants = matches!(o.kind(), "ServiceAccount" | "Role" | "Secret")
                || o.metadata().name.as_deref() == p.mint_right.as_deref();
            assert_eq!(ns == names::DEFAULT_GRANTS_NAMESPACE, in_grants, "{:?}", o.object_ref());
            assert_ne!(ns, "agents", "nothing of the grant in the requester's namespace: {:?}", o.object_ref());
        }
        let bindings = p.objects.iter().filter(|o| o.stage() == Stage::Bindings).count();
        assert_eq!(bindings, 3, "two grant bindings and the token binding");
        for o in &p.objects {
            let m = o.metadata();
            assert!(names::is_dns1123_label(m.name.as_deref().unwrap()));
            assert_eq!(m.labels.as_ref().unwrap()[names::GRANT_ID_LABEL], p.grant_id);
            assert_eq!(m.annotations.as_ref().unwrap()[names::EXPIRES_AT_ANNOTATION], "2026-01-01T00:00:00Z");
            let owned = m.owner_references.is_some();
            assert_eq!(owned, m.namespace.as_deref() == Some("agents"), "{:?}", o.object_ref());
        }
        // Tokens: only the requester may mint, only for this identity.
        let token_binding = p
            .objects
            .iter()
            .find_map(|o| match o {
                Managed::RoleBinding(rb) if rb.role_ref.kind == "Role" => Some(rb),
                _ => None,
            })
            .unwrap();
        assert_eq!(token_binding.subjects.as_ref().unwrap()[0].name, "planner");
    }

    #[test]
    fn a_workload_bound_grant_binds_every_token_to_a_secret_beside_the_identity() {
        let holders = Holders { workload_pod_uid: Some("pod-uid".into()), ..Holders::default() };
        let p = plan_with(&request(spec()), "t", &holders).unwrap();
        let sa = p.service_account().unwrap();
        let bound = p.token_bound_to.clone().expect("a binding Secret");
        assert_eq!(sa.metadata.name.as_deref(), Some(bound.as_str()), "named as the identity");
        let annotations = sa.metadata.annotations.as_ref().unwrap();
        assert_eq!(annotations[names::WORKLOAD_POD_UID_ANNOTATION], "pod-uid");
        assert_eq!(annotations[names::TOKEN_BOUND_SECRET_ANNOTATION], bound);
        let secret = p.objects.iter().find(|o| o.kind() == "Secret").expect("the Secret is made");
        assert_eq!(secret.metadata().namespace, sa.metadata.namespace, "beside the identity");
        assert_eq!(p.part_of("Secret", &bound), Part::Usable, "made with what makes the grant usable");
        assert!(p.token_secret().is_none(), "it holds no token unless delivery.tokenSecret asks");
        // Unbound grants have neither; the requester's own ServiceAccount has no Secret to bind to.
        let unbound = plan_with(&request(spec()), "t", &Holders::default()).unwrap();
        assert!(unbound.token_bound_to.is_none() && unbound.objects.iter().all(|o| o.kind() != "Secret"));
        let mut own = spec();
        own.delivery.mode = DeliveryMode::RequesterServiceAccount;
        let own = plan_with(&request(own), "t", &holders).unwrap();
        assert!(own.token_bound_to.is_none() && own.objects.iter().all(|o| o.kind() != "Secret"));
    }

    #[test]
    fn a_token_secret_sits_beside_the_identity_and_only_the_requester_reads_it() {
        let mut s = spec();
        s.delivery.token_secret = true;
        let holders = Holders { grants_namespace: "grants".into(), ..Holders::default() };
        let p = plan_with(&request(s), "t", &holders).unwrap();
        let secret = p.token_secret().unwrap();
        assert_eq!(secret.metadata.namespace.as_deref(), Some("grants"));
        assert_eq!(p.part_of("Secret", secret.metadata.name.as_deref().unwrap()), Part::Usable);
        let mint = p.mint_right.clone().unwrap();
        // Bound, the right is usable; the Role alone gives nothing.
        assert_eq!(p.part_of("RoleBinding", &mint), Part::Usable);
        assert_eq!(p.part_of("Role", &mint), Part::Access);
        let role = p
            .objects
            .iter()
            .find_map(|o| match o {
                Managed::Role(r) if r.metadata.name.as_deref() == Some(mint.as_str()) => Some(r),
                _ => None,
            })
            .unwrap();
        assert_eq!(role.metadata.namespace.as_deref(), Some("grants"));
        let rules = role.rules.as_ref().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].resources.as_deref(), Some(&["secrets".to_string()][..]));
        assert_eq!(rules[1].resource_names, secret.metadata.name.clone().map(|n| vec![n]));
        assert_eq!(rules[1].verbs, vec!["get".to_string()]);
    }

    #[test]
    fn requester_mode_binds_the_requesters_own_account() {
        let mut s = spec();
        s.delivery.mode = DeliveryMode::RequesterServiceAccount;
        let p = plan(&request(s), "t").unwrap();
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.holder.name, "planner");
        assert!(p.service_account().is_none());

        let mut s = spec();
        s.delivery.mode = DeliveryMode::RequesterServiceAccount;
        s.requester.user = "alice".into();
        assert!(plan(&request(s), "t").is_err());
    }

    #[test]
    fn inline_rules_get_a_generated_role_per_namespace() {
        let mut s = spec();
        s.role = None;
        s.rules = Some(vec![PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec!["pods".into()]),
            verbs: vec!["list".into()],
            ..PolicyRule::default()
        }]);
        let p = plan(&request(s), "t").unwrap();
        let roles = p.objects.iter().filter(|o| matches!(o, Managed::Role(_))).count();
        assert_eq!(roles, 3, "one per target namespace plus the token role");
        let order = p.creation_order();
        assert_eq!(order.last().unwrap().stage(), Stage::Bindings);
        assert_eq!(order.first().unwrap().stage(), Stage::Roles);
    }

    #[test]
    fn cluster_wide_uses_one_cluster_role_binding() {
        let mut s = spec();
        s.namespaces.clear();
        s.cluster_wide = true;
        let p = plan(&request(s), "t").unwrap();
        assert_eq!(p.objects.iter().filter(|o| matches!(o, Managed::ClusterRoleBinding(_))).count(), 1);
        assert_eq!(p.objects.iter().filter(|o| o.kind() == "RoleBinding").count(), 1, "only the token binding");
    }
}
