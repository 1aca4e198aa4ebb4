//! A grant that binds a role by name (`spec.role`) was decided on what that
//! role held at the time: whoever may edit the role (a namespace's `admin`
//! edits its Roles; aggregation widens ClusterRoles when labelled roles
//! appear) could otherwise widen a live grant without anyone deciding it.
//! A role that gains any right the recorded rules do not cover, with
//! Kubernetes' RBAC covering semantics (`rbac::covers`), ends the grant; a
//! role that narrows, or stays the same, does not. A deleted role grants
//! nothing, so it ends nothing here.

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::api::access_request::GrantedRole;
use crate::rbac;

/// Why the grant must end, if a recorded role gained rights. `current` gives
/// a role's rules now (`kind`, `namespace`, `name`), `None` if it is gone.
pub fn widened(
    recorded: &[GrantedRole],
    current: impl Fn(&str, &str, &str) -> Option<Vec<PolicyRule>>,
) -> Option<String> {
    for role in recorded {
        let Some(now) = current(&role.kind, &role.namespace, &role.name) else { continue };
        let gained = rbac::uncovered(&role.rules, &now);
        if let Some(first) = gained.first() {
            let which = if role.namespace.is_empty() {
                format!("{} {}", role.kind, role.name)
            } else {
                format!("{} {}/{}", role.kind, role.namespace, role.name)
            };
            let more = if gained.len() > 1 { format!(" (and {} more)", gained.len() - 1) } else { String::new() };
            return Some(format!(
                "{which} gained rights after the grant was decided: {}{more}; ask again",
                rbac::covers::describe(first)
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(verbs: &[&str], resources: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(resources.iter().map(|r| r.to_string()).collect()),
            verbs: verbs.iter().map(|v| v.to_string()).collect(),
            ..PolicyRule::default()
        }
    }

    fn role(kind: &str, namespace: &str, rules: Vec<PolicyRule>) -> GrantedRole {
        GrantedRole { kind: kind.into(), namespace: namespace.into(), name: "r".into(), rules: rules.into() }
    }

    /// (row, recorded role, its rules now, what the verdict must say).
    type Case<'a> = (&'a str, GrantedRole, Option<Vec<PolicyRule>>, Option<&'a str>);

    #[test]
    fn only_a_role_that_gains_rights_ends_the_grant() {
        let read = vec![rule(&["get", "list"], &["pods", "configmaps"])];
        let cases: &[Case] = &[
            ("unchanged", role("Role", "team-a", read.clone()), Some(read.clone()), None),
            ("narrowed", role("Role", "team-a", read.clone()), Some(vec![rule(&["get"], &["pods"])]), None),
            ("emptied", role("ClusterRole", "", read.clone()), Some(vec![]), None),
            ("deleted", role("ClusterRole", "", read.clone()), None, None),
            (
                "a new verb",
                role("Role", "team-a", read.clone()),
                Some(vec![rule(&["get", "list", "delete"], &["pods"])]),
                Some("Role team-a/r gained rights after the grant was decided"),
            ),
            (
                "a new resource",
                role("ClusterRole", "", read.clone()),
                Some(vec![rule(&["get"], &["secrets"])]),
                Some("ClusterRole r gained rights after the grant was decided"),
            ),
            (
                "a wildcard",
                role("Role", "team-a", read.clone()),
                Some(vec![rule(&["*"], &["*"])]),
                Some("Role team-a/r gained rights"),
            ),
        ];
        for (name, recorded, now, want) in cases {
            let got = widened(std::slice::from_ref(recorded), |_, _, _| now.clone());
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.contains(w) => {}
                _ => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }
}
