//! Standing privilege: which RBAC bindings give a ServiceAccount rights that
//! exist whether or not it asked — directly, or through the groups every
//! ServiceAccount belongs to. Not standing privilege: the bindings of live
//! kube-jit grants (as the caller proves them, never by a label anyone who
//! writes bindings can set), the requester role (the right to ask), and
//! bindings to the few ClusterRoles every authenticated identity holds by
//! Kubernetes' defaults (recognised by the role they grant, not by the
//! `kubernetes.io/bootstrapping` label, which anyone can set).

use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding, RoleRef, Subject};
use kube::api::ObjectMeta;

use crate::names;

/// ClusterRole that only lets an identity ask kube-jit for access.
pub const REQUESTER_ROLE: &str = "kube-jit-requester";

/// One binding that gives a ServiceAccount standing rights.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// `RoleBinding ns/name` or `ClusterRoleBinding name`.
    pub binding: String,
    /// `ClusterRole/name` or `Role/name`.
    pub role: String,
    /// How the ServiceAccount is a subject: `directly` or `via group G`.
    pub via: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {} ({})", self.binding, self.role, self.via)
    }
}

/// How `subject` names the ServiceAccount `namespace/name`, if it does.
/// `default_ns` is the binding's namespace (a RoleBinding's ServiceAccount
/// subject without a namespace means that one).
fn names_sa(subject: &Subject, namespace: &str, name: &str, default_ns: Option<&str>) -> Option<String> {
    match subject.kind.as_str() {
        "ServiceAccount" => {
            let ns = subject.namespace.as_deref().or(default_ns).unwrap_or("");
            (subject.name == name && ns == namespace).then(|| "directly".to_string())
        }
        "Group" => {
            let groups = [
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ];
            groups.contains(&subject.name).then(|| format!("via group {}", subject.name))
        }
        "User" => (subject.name == names::service_account_username(namespace, name)).then(|| "directly".to_string()),
        _ => None,
    }
}

/// ClusterRoles that Kubernetes binds to every authenticated identity (or to
/// every ServiceAccount) by default, granting only discovery, self-review and
/// public information: holding them is not standing privilege. Source: the
/// default ClusterRoleBindings in the Kubernetes RBAC docs ("Default roles and
/// role bindings", API discovery roles) and `system:service-account-issuer-discovery`
/// (KEP-1393).
pub const DEFAULT_ROLES: [&str; 4] =
    ["system:basic-user", "system:discovery", "system:public-info-viewer", "system:service-account-issuer-discovery"];

/// Whether a binding kube-jit made: `kind` and the binding's metadata, answered
/// by the caller from what live grants recorded (see [`Recorded`]).
pub trait Ours: Fn(&str, &ObjectMeta) -> bool {}
impl<F: Fn(&str, &ObjectMeta) -> bool> Ours for F {}

/// The objects live grants recorded in their status, as (kind, namespace,
/// name): what kube-jit made and still answers for. Only the operator writes
/// status, so unlike a label this is not a tenant's claim.
#[derive(Debug, Default)]
pub struct Recorded<'a>(std::collections::BTreeSet<(&'a str, &'a str, &'a str)>);

impl<'a> Recorded<'a> {
    pub fn of(requests: impl IntoIterator<Item = &'a crate::api::AccessRequest>) -> Recorded<'a> {
        let live = requests
            .into_iter()
            .filter_map(|r| r.status.as_ref())
            .filter(|s| !s.phase.is_terminal())
            .filter_map(|s| s.grant.as_ref())
            .filter(|g| g.revoked_at.is_none());
        Recorded(
            live.flat_map(|g| g.objects.iter().map(|o| (o.kind.as_str(), o.namespace.as_str(), o.name.as_str())))
                .collect(),
        )
    }

    /// Whether the object of `kind` with `meta` is one of them: an [`Ours`].
    pub fn contains(&self, kind: &str, meta: &ObjectMeta) -> bool {
        self.0.contains(&(kind, meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref().unwrap_or("")))
    }
}

fn excluded(kind: &str, meta: &ObjectMeta, role: &RoleRef, ours: &impl Ours) -> bool {
    let default_role = role.kind == "ClusterRole" && DEFAULT_ROLES.contains(&role.name.as_str());
    default_role || (role.kind == "ClusterRole" && role.name == REQUESTER_ROLE) || ours(kind, meta)
}

/// Every binding giving ServiceAccount `namespace/name` standing rights, less
/// those `ours` says belong to live kube-jit grants.
pub fn findings<'a>(
    namespace: &str,
    name: &str,
    role_bindings: impl IntoIterator<Item = &'a RoleBinding>,
    cluster_role_bindings: impl IntoIterator<Item = &'a ClusterRoleBinding>,
    ours: impl Ours,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for rb in role_bindings {
        if excluded("RoleBinding", &rb.metadata, &rb.role_ref, &ours) {
            continue;
        }
        let rb_ns = rb.metadata.namespace.as_deref();
        if let Some(via) = rb.subjects.iter().flatten().find_map(|s| names_sa(s, namespace, name, rb_ns)) {
            out.push(Finding {
                binding: format!("RoleBinding {}/{}", rb_ns.unwrap_or(""), rb.metadata.name.as_deref().unwrap_or("")),
                role: format!("{}/{}", rb.role_ref.kind, rb.role_ref.name),
                via,
            });
        }
    }
    for crb in cluster_role_bindings {
        if excluded("ClusterRoleBinding", &crb.metadata, &crb.role_ref, &ours) {
            continue;
        }
        if let Some(via) = crb.subjects.iter().flatten().find_map(|s| names_sa(s, namespace, name, None)) {
            out.push(Finding {
                binding: format!("ClusterRoleBinding {}", crb.metadata.name.as_deref().unwrap_or("")),
                role: format!("{}/{}", crb.role_ref.kind, crb.role_ref.name),
                via,
            });
        }
    }
    out.sort_by(|a, b| a.binding.cmp(&b.binding));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rb(ns: &str, name: &str, role: &str, subjects: serde_json::Value, labels: serde_json::Value) -> RoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}))
        .unwrap()
    }

    fn crb(name: &str, role: &str, subjects: serde_json::Value, labels: serde_json::Value) -> ClusterRoleBinding {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}))
        .unwrap()
    }

    #[test]
    fn finds_direct_and_group_bindings_and_ignores_the_rest() {
        let sa = json!([{"kind": "ServiceAccount", "name": "bot", "namespace": "agents"}]);
        let sa_no_ns = json!([{"kind": "ServiceAccount", "name": "bot"}]);
        let rbs = vec![
            rb("agents", "direct", "edit", sa.clone(), json!({})),
            rb("agents", "implicit-ns", "view", sa_no_ns.clone(), json!({})),
            rb("other", "implicit-other-ns", "view", sa_no_ns, json!({})),
            rb("agents", "asks", REQUESTER_ROLE, sa.clone(), json!({})),
            // A live grant's binding, as the grant recorded it: not standing.
            rb("team", "jit-real", "view", sa.clone(), json!({"app.kubernetes.io/managed-by": "kube-jit"})),
            // kube-jit's labels on a binding no grant recorded prove nothing.
            rb("team", "forged", "admin", sa.clone(), json!({"app.kubernetes.io/managed-by": "kube-jit"})),
            rb(
                "team",
                "ns-group",
                "view",
                json!([{"kind": "Group", "name": "system:serviceaccounts:agents"}]),
                json!({}),
            ),
            rb(
                "team",
                "other-ns-group",
                "view",
                json!([{"kind": "Group", "name": "system:serviceaccounts:other"}]),
                json!({}),
            ),
        ];
        let crbs = vec![
            crb("all-sas", "cluster-admin", json!([{"kind": "Group", "name": "system:serviceaccounts"}]), json!({})),
            crb(
                "basic",
                "system:basic-user",
                json!([{"kind": "Group", "name": "system:authenticated"}]),
                json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            ),
            crb("as-user", "view", json!([{"kind": "User", "name": "system:serviceaccount:agents:bot"}]), json!({})),
            // The bootstrap label does not hide a binding: the role decides.
            crb(
                "looks-default",
                "cluster-admin",
                json!([{"kind": "Group", "name": "system:authenticated"}]),
                json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
            ),
            crb(
                "issuer",
                "system:service-account-issuer-discovery",
                json!([{"kind": "Group", "name": "system:serviceaccounts"}]),
                json!({}),
            ),
        ];
        let ours = |kind: &str, meta: &ObjectMeta| {
            kind == "RoleBinding"
                && meta.namespace.as_deref() == Some("team")
                && meta.name.as_deref() == Some("jit-real")
        };
        let found: Vec<String> = findings("agents", "bot", &rbs, &crbs, ours).iter().map(|f| f.to_string()).collect();
        assert_eq!(
            found,
            [
                "ClusterRoleBinding all-sas → ClusterRole/cluster-admin (via group system:serviceaccounts)",
                "ClusterRoleBinding as-user → ClusterRole/view (directly)",
                "ClusterRoleBinding looks-default → ClusterRole/cluster-admin (via group system:authenticated)",
                "RoleBinding agents/direct → ClusterRole/edit (directly)",
                "RoleBinding agents/implicit-ns → ClusterRole/view (directly)",
                "RoleBinding team/forged → ClusterRole/admin (directly)",
                "RoleBinding team/ns-group → ClusterRole/view (via group system:serviceaccounts:agents)",
            ]
        );
    }
}
