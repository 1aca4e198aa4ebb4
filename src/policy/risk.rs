//! Risk class of a non-human identity from what it holds without asking: its
//! standing RBAC (the rules of the roles bound to it) and legacy long-lived
//! tokens. Pure: `kubectl jit inventory` gathers the facts, this decides.

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde::Serialize;

use super::standing_privilege::Finding;

/// How much an identity can do if its credentials leak, worst first.
/// `Managed` is kube-jit's own grant identities: time-boxed by construction.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Critical,
    High,
    Medium,
    Low,
    Managed,
}

impl Risk {
    pub const ALL: [Risk; 5] = [Risk::Critical, Risk::High, Risk::Medium, Risk::Low, Risk::Managed];

    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Critical => "critical",
            Risk::High => "high",
            Risk::Medium => "medium",
            Risk::Low => "low",
            Risk::Managed => "managed",
        }
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One standing binding with the rules of the role it names; `rules` is
/// `None` when that role does not exist (the binding grants nothing yet).
pub struct BoundRole<'a> {
    pub finding: &'a Finding,
    pub rules: Option<&'a [PolicyRule]>,
}

/// The class and the one fact that decided it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    pub risk: Risk,
    pub reason: String,
}

const READ_VERBS: [&str; 3] = ["get", "list", "watch"];
/// Verbs that are privilege escalation by design: bypassing RBAC's
/// escalation check (`escalate`, `bind`) or acting as someone else.
const ESCALATION_VERBS: [&str; 3] = ["escalate", "bind", "impersonate"];

fn has(list: &Option<Vec<String>>, item: &str) -> bool {
    list.iter().flatten().any(|x| x == item)
}

/// The worst thing one role's rules allow, with a phrase saying what it is.
fn role_risk(role: &str, rules: &[PolicyRule]) -> (Risk, String) {
    // Checked by name too: cluster-admin is the one role every reader knows.
    if role == "ClusterRole/cluster-admin" {
        return (Risk::Critical, "standing cluster-admin".into());
    }
    let mut worst = (Risk::Low, String::new());
    let mut writes: Vec<&str> = Vec::new();
    let note = |risk: Risk, why: String, worst: &mut (Risk, String)| {
        if risk < worst.0 {
            *worst = (risk, why);
        }
    };
    for rule in rules {
        let verbs: Vec<&str> = rule.verbs.iter().map(String::as_str).collect();
        if verbs.contains(&"*") {
            note(Risk::Critical, "wildcard verb".into(), &mut worst);
        }
        if has(&rule.resources, "*") {
            note(Risk::Critical, "wildcard resource".into(), &mut worst);
        }
        if let Some(v) = verbs.iter().find(|v| ESCALATION_VERBS.contains(v)) {
            note(Risk::Critical, format!("can {v}"), &mut worst);
        }
        // list and watch return Secret contents too, not only get.
        let core = has(&rule.api_groups, "") || has(&rule.api_groups, "*");
        if core && has(&rule.resources, "secrets") && verbs.iter().any(|v| READ_VERBS.contains(v)) {
            note(Risk::Critical, "can read secrets".into(), &mut worst);
        }
        for v in &verbs {
            // Any verb that is not a read changes something (create, patch, approve, use…).
            if !READ_VERBS.contains(v) && *v != "*" && !writes.contains(v) {
                writes.push(v);
            }
        }
        if !verbs.is_empty() {
            note(Risk::Medium, "read-only RBAC".into(), &mut worst);
        }
    }
    if !writes.is_empty() {
        note(Risk::High, format!("can {}", writes.join("/")), &mut worst);
    }
    worst
}

/// Classifies one ServiceAccount.
pub fn classify(managed: bool, bound: &[BoundRole], legacy_tokens: &[&str]) -> Assessment {
    if managed {
        return Assessment { risk: Risk::Managed, reason: "kube-jit grant identity, revoked at expiry".into() };
    }
    let mut worst: Option<(Risk, String)> = None;
    let mut consider = |risk: Risk, reason: String| {
        if worst.as_ref().is_none_or(|(w, _)| risk < *w) {
            worst = Some((risk, reason));
        }
    };
    let mut dangling = Vec::new();
    for b in bound {
        let Some(rules) = b.rules else {
            dangling.push(b);
            continue;
        };
        let (risk, what) = role_risk(&b.finding.role, rules);
        if risk < Risk::Low {
            let f = b.finding;
            consider(risk, format!("{what} via {} → {} ({})", f.binding, f.role, f.via));
        }
    }
    if !legacy_tokens.is_empty() {
        consider(Risk::High, format!("legacy long-lived token Secret {}", legacy_tokens.join(", ")));
    }
    if let Some((risk, reason)) = worst {
        return Assessment { risk, reason };
    }
    let reason = match dangling.first() {
        Some(b) => {
            format!("{} names missing {}: grants nothing until it is created", b.finding.binding, b.finding.role)
        }
        None => "no standing RBAC, no long-lived token".into(),
    };
    Assessment { risk: Risk::Low, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A standing binding of `role` (reached `via`) whose role has `rules`
    /// (`null`: the role does not exist).
    fn bound(role: &str, via: &str, rules: serde_json::Value) -> (Finding, Option<Vec<PolicyRule>>) {
        let finding = Finding { binding: "RoleBinding ns/b".into(), role: role.into(), via: via.into() };
        (finding, serde_json::from_value(rules).unwrap())
    }

    fn direct(role: &str, rules: serde_json::Value) -> (Finding, Option<Vec<PolicyRule>>) {
        bound(role, "directly", rules)
    }

    #[test]
    fn classification_table() {
        let view = json!([{"apiGroups": ["", "apps"], "resources": ["pods", "deployments"], "verbs": ["get", "list", "watch"]}]);
        let edit = json!([
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "update", "patch", "delete"]}]);
        let secrets = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]);
        let n = json!(null);
        // (name, managed, standing bindings, legacy tokens, class, reason substring)
        type Row = (&'static str, bool, Vec<(Finding, Option<Vec<PolicyRule>>)>, Vec<&'static str>, Risk, &'static str);
        let rows: Vec<Row> = vec![
            ("nothing", false, vec![], vec![], Risk::Low, "no standing RBAC, no long-lived token"),
            (
                "cluster-admin by name",
                false,
                vec![direct("ClusterRole/cluster-admin", json!([]))],
                vec![],
                Risk::Critical,
                "standing cluster-admin via RoleBinding ns/b",
            ),
            (
                "read secrets",
                false,
                vec![direct("Role/s", secrets.clone())],
                vec![],
                Risk::Critical,
                "can read secrets via RoleBinding ns/b → Role/s (directly)",
            ),
            (
                "watch secrets in any group",
                false,
                vec![direct("Role/s", json!([{"apiGroups": ["*"], "resources": ["secrets"], "verbs": ["watch"]}]))],
                vec![],
                Risk::Critical,
                "can read secrets",
            ),
            (
                "secrets of another group",
                false,
                vec![direct(
                    "Role/o",
                    json!([{"apiGroups": ["example.com"], "resources": ["secrets"], "verbs": ["get"]}]),
                )],
                vec![],
                Risk::Medium,
                "read-only RBAC",
            ),
            (
                "write-only secrets",
                false,
                vec![direct("Role/ws", json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]))],
                vec![],
                Risk::High,
                "can create via",
            ),
            (
                "wildcard verb",
                false,
                vec![direct("Role/v", json!([{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["*"]}]))],
                vec![],
                Risk::Critical,
                "wildcard verb",
            ),
            (
                "wildcard resource",
                false,
                vec![direct("Role/r", json!([{"apiGroups": ["apps"], "resources": ["*"], "verbs": ["get"]}]))],
                vec![],
                Risk::Critical,
                "wildcard resource",
            ),
            (
                "impersonate",
                false,
                vec![direct("Role/i", json!([{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}]))],
                vec![],
                Risk::Critical,
                "can impersonate",
            ),
            (
                "write verbs",
                false,
                vec![direct("Role/w", edit.clone())],
                vec![],
                Risk::High,
                "can create/update/patch/delete via RoleBinding ns/b → Role/w",
            ),
            (
                "read-only",
                false,
                vec![direct("ClusterRole/view", view.clone())],
                vec![],
                Risk::Medium,
                "read-only RBAC via RoleBinding ns/b → ClusterRole/view (directly)",
            ),
            (
                "read-only via group",
                false,
                vec![bound("ClusterRole/view", "via group system:serviceaccounts:ns", view.clone())],
                vec![],
                Risk::Medium,
                "(via group system:serviceaccounts:ns)",
            ),
            (
                "non-resource read",
                false,
                vec![direct("Role/m", json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]))],
                vec![],
                Risk::Medium,
                "read-only",
            ),
            ("legacy token", false, vec![], vec!["bot-token"], Risk::High, "legacy long-lived token Secret bot-token"),
            (
                "legacy token beats read-only",
                false,
                vec![direct("ClusterRole/view", view.clone())],
                vec!["t"],
                Risk::High,
                "legacy",
            ),
            (
                "worst binding wins",
                false,
                vec![
                    direct("ClusterRole/view", view.clone()),
                    direct("Role/w", edit.clone()),
                    direct("Role/s", secrets.clone()),
                ],
                vec!["t"],
                Risk::Critical,
                "can read secrets",
            ),
            ("role without rules", false, vec![direct("Role/empty", json!([]))], vec![], Risk::Low, "no standing RBAC"),
            (
                "missing role",
                false,
                vec![direct("Role/gone", n.clone())],
                vec![],
                Risk::Low,
                "RoleBinding ns/b names missing Role/gone",
            ),
            (
                "managed wins over everything",
                true,
                vec![direct("ClusterRole/cluster-admin", json!([]))],
                vec!["t"],
                Risk::Managed,
                "kube-jit grant identity",
            ),
        ];
        for (name, managed, standing, tokens, risk, reason) in rows {
            let bound: Vec<BoundRole> =
                standing.iter().map(|(finding, rules)| BoundRole { finding, rules: rules.as_deref() }).collect();
            let got = classify(managed, &bound, &tokens);
            assert_eq!(got.risk, risk, "{name}: {got:?}");
            assert!(got.reason.contains(reason), "{name}: {:?} lacks {reason:?}", got.reason);
        }
    }

    #[test]
    fn classes_order_worst_first() {
        assert!(Risk::Critical < Risk::High && Risk::High < Risk::Medium && Risk::Medium < Risk::Low);
        assert_eq!(serde_json::to_value(Risk::Critical).unwrap(), "critical");
    }
}
