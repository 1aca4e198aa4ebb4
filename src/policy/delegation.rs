//! Delegation: the holder of a live grant asks for part of it for another
//! agent. Scope only ever narrows per hop (rules covered, namespaces a subset,
//! expiry no later), every hop has a purpose, depth is bounded by the parent's
//! policy, and no agent appears twice in a chain.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::api::access_policy::AccessPolicy;
use crate::api::access_request::{AccessRequest, AccessRequestSpec, DelegationHop, Phase};
use crate::rbac;

/// What the decision knows about the parent grant.
pub struct Parent<'a> {
    pub request: &'a AccessRequest,
    /// The policy the parent was granted under (None if it is gone).
    pub policy: Option<&'a AccessPolicy>,
    /// The rules the parent's role holds, when the parent named a role and the
    /// child asks for inline rules.
    pub role_rules: Option<Vec<PolicyRule>>,
}

/// `AgentIdentity namespace/name`, as chains record delegatees.
pub fn agent_label(namespace: &str, name: &str) -> String {
    format!("AgentIdentity {namespace}/{name}")
}

/// Human summary of a request's scope.
pub fn scope_of(spec: &AccessRequestSpec) -> String {
    let what = match (&spec.role, &spec.rules) {
        (Some(r), _) => format!("{:?}/{}", r.kind, r.name),
        (None, Some(rules)) => rules.iter().map(rbac::covers::describe).collect::<Vec<_>>().join("; "),
        (None, None) => String::new(),
    };
    let place =
        if spec.cluster_wide { "cluster-wide".to_string() } else { format!("in {}", spec.namespaces.join(",")) };
    format!("{what} {place}")
}

/// Checks a delegated request (`child`, in `namespace`, for `duration`)
/// against its parent. `Ok` carries the parent's policy name and the chain so
/// far (the parent's); the caller appends the child's own hop.
pub fn check(
    namespace: &str,
    child: &AccessRequestSpec,
    duration: Duration,
    now: Timestamp,
    parent: &Parent<'_>,
) -> Result<(String, Vec<DelegationHop>), String> {
    let p = parent.request;
    let p_name =
        format!("{}/{}", p.metadata.namespace.as_deref().unwrap_or(""), p.metadata.name.as_deref().unwrap_or(""));
    let status = p.status.clone().unwrap_or_default();
    let grant = status.grant.clone().unwrap_or_default();
    if status.phase != Phase::Granted || grant.revoked_at.is_some() {
        return Err(format!("parent grant {p_name} is {:?}, not Granted: it cannot delegate", status.phase));
    }
    let parent_expiry = grant.expires_at.as_ref().map(|t| t.0).ok_or("parent grant has no expiry")?;
    if parent_expiry <= now {
        return Err(format!("parent grant {p_name} expired at {parent_expiry}"));
    }
    let policy = parent.policy.ok_or_else(|| format!("parent grant's policy {:?} no longer exists", status.policy))?;
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    if !policy.spec.delegation.allowed {
        return Err(format!("policy {policy_name} does not allow delegation"));
    }
    let Some(agent) = &child.for_agent else {
        return Err("a delegated request must name the AgentIdentity it is for (spec.forAgent)".into());
    };
    if child.purpose.as_deref().unwrap_or("").trim().is_empty() {
        return Err("every hop of a delegation needs a purpose".into());
    }
    let chain = if status.delegation_chain.is_empty() {
        vec![DelegationHop { grant_id: grant.id.clone(), ..DelegationHop::default() }]
    } else {
        status.delegation_chain.clone()
    };
    let max_depth = policy.spec.delegation.max_depth.unwrap_or(1).max(1) as usize;
    if chain.len() > max_depth {
        return Err(format!("delegation depth {} exceeds policy {policy_name}'s maximum of {max_depth}", chain.len()));
    }
    let delegatee = agent_label(namespace, agent);
    if chain.iter().any(|hop| hop.delegatee == delegatee) {
        return Err(format!("{delegatee} is already in this delegation chain: cycles are not allowed"));
    }

    // Scope only narrows.
    if child.cluster_wide && !p.spec.cluster_wide {
        return Err("the parent grant is not cluster-wide: a delegation cannot widen it".into());
    }
    if !p.spec.cluster_wide
        && let Some(extra) = child.namespaces.iter().find(|ns| !p.spec.namespaces.contains(ns))
    {
        return Err(format!("namespace {extra} is outside the parent grant ({})", p.spec.namespaces.join(",")));
    }
    match (&child.role, &child.rules) {
        (Some(role), _) => {
            if p.spec.role.as_ref() != Some(role) {
                return Err(format!(
                    "{:?}/{} is not the parent grant's role; delegate the same role or rules it covers",
                    role.kind, role.name
                ));
            }
        }
        (None, Some(rules)) => {
            let owned = match (&p.spec.rules, &parent.role_rules) {
                (Some(r), _) => r.clone(),
                (None, Some(r)) => r.clone(),
                (None, None) => Vec::new(),
            };
            let missing = rbac::uncovered(&owned, rules);
            if let Some(first) = missing.first() {
                return Err(format!("rules exceed the parent grant: {}", rbac::covers::describe(first)));
            }
        }
        (None, None) => return Err("set exactly one of spec.role or spec.rules".into()),
    }
    let expires = now + jiff::SignedDuration::try_from(duration).unwrap_or(jiff::SignedDuration::MAX);
    if expires > parent_expiry {
        return Err(format!("it would expire at {expires}, after its parent grant ({parent_expiry})"));
    }
    Ok((policy_name, chain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_policy::{AccessPolicySpec, DelegationRule, GrantScope, Subjects};
    use crate::api::access_request::{AccessRequestStatus, GrantStatus, Requester, RoleKind, RoleRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-01-01T12:00:00Z".parse().unwrap()
    }

    fn spec(role: Option<(&str, RoleKind)>, rules: Option<Vec<PolicyRule>>, ns: &[&str]) -> AccessRequestSpec {
        AccessRequestSpec {
            requester: Requester { user: "system:serviceaccount:agents:jit-parent-abc".into(), ..Requester::default() },
            for_agent: Some("ci".into()),
            role: role.map(|(n, k)| RoleRef { kind: k, name: n.into() }),
            rules,
            namespaces: ns.iter().map(|s| s.to_string()).collect(),
            cluster_wide: false,
            duration: Some("5m".into()),
            purpose: Some("build".into()),
            delivery: Default::default(),
            extensions: Vec::new(),
            revoke: false,
        }
    }

    fn parent(phase: Phase, expires_in_secs: i64, chain_len: usize) -> AccessRequest {
        let mut r = AccessRequest::new("parent", spec(Some(("edit", RoleKind::ClusterRole)), None, &["a", "b"]));
        r.metadata.namespace = Some("agents".into());
        r.spec.for_agent = Some("orchestrator".into());
        let chain = (0..chain_len)
            .map(|i| DelegationHop {
                delegatee: agent_label("agents", &format!("agent-{i}")),
                grant_id: format!("g{i}"),
                ..Default::default()
            })
            .collect();
        r.status = Some(AccessRequestStatus {
            phase,
            policy: Some("p".into()),
            grant: Some(GrantStatus {
                id: "g".into(),
                expires_at: Some(Time(now() + jiff::SignedDuration::from_secs(expires_in_secs))),
                ..Default::default()
            }),
            delegation_chain: chain,
            ..Default::default()
        });
        r
    }

    fn policy(allowed: bool, depth: i32) -> AccessPolicy {
        let mut p = AccessPolicy::new(
            "p",
            AccessPolicySpec {
                subjects: Subjects::default(),
                grants: GrantScope::default(),
                duration: Default::default(),
                approval: Default::default(),
                purpose: Default::default(),
                limits: Default::default(),
                delegation: DelegationRule { allowed, max_depth: Some(depth) },
                extension: Default::default(),
                delivery: Default::default(),
            },
        );
        p.metadata.name = Some("p".into());
        p
    }

    fn rule(verb: &str, resource: &str) -> PolicyRule {
        PolicyRule {
            api_groups: Some(vec!["".into()]),
            resources: Some(vec![resource.into()]),
            verbs: vec![verb.into()],
            ..Default::default()
        }
    }

    #[test]
    fn delegation_rules_table() {
        let edit = Some(("edit", RoleKind::ClusterRole));
        let five_min = Duration::from_secs(300);
        // (name, child spec, duration, parent, policy, role rules, Ok or error substring)
        type Row = (
            &'static str,
            AccessRequestSpec,
            Duration,
            AccessRequest,
            AccessPolicy,
            Option<Vec<PolicyRule>>,
            Result<(), &'static str>,
        );
        let mut no_purpose = spec(edit, None, &["a"]);
        no_purpose.purpose = Some("  ".into());
        let mut no_agent = spec(edit, None, &["a"]);
        no_agent.for_agent = None;
        let mut wider = spec(edit, None, &["a"]);
        wider.cluster_wide = true;
        wider.namespaces.clear();
        let mut cycle = spec(edit, None, &["a"]);
        cycle.for_agent = Some("agent-0".into());
        let rows: Vec<Row> = vec![
            (
                "same role, fewer namespaces",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Ok(()),
            ),
            (
                "another role",
                spec(Some(("admin", RoleKind::ClusterRole)), None, &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("not the parent grant's role"),
            ),
            (
                "extra namespace",
                spec(edit, None, &["a", "c"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("namespace c is outside"),
            ),
            (
                "longer than parent",
                spec(edit, None, &["a"]),
                Duration::from_secs(601),
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("after its parent grant"),
            ),
            (
                "parent expired",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Granted, -1, 1),
                policy(true, 2),
                None,
                Err("expired at"),
            ),
            (
                "parent revoked",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Revoked, 600, 1),
                policy(true, 2),
                None,
                Err("is Revoked, not Granted"),
            ),
            (
                "policy forbids",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(false, 2),
                None,
                Err("does not allow delegation"),
            ),
            (
                "too deep",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Granted, 600, 3),
                policy(true, 2),
                None,
                Err("delegation depth 3 exceeds policy p's maximum of 2"),
            ),
            (
                "depth at the limit",
                spec(edit, None, &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 1),
                None,
                Ok(()),
            ),
            (
                "no purpose",
                no_purpose,
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("needs a purpose"),
            ),
            (
                "no agent",
                no_agent,
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("must name the AgentIdentity"),
            ),
            (
                "widen to cluster",
                wider,
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                None,
                Err("cannot widen"),
            ),
            (
                "cycle",
                cycle,
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 3),
                None,
                Err("cycles are not allowed"),
            ),
            (
                "rules within role",
                spec(None, Some(vec![rule("get", "pods")]), &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                Some(vec![rule("*", "pods")]),
                Ok(()),
            ),
            (
                "rules beyond role",
                spec(None, Some(vec![rule("get", "secrets")]), &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                Some(vec![rule("*", "pods")]),
                Err("rules exceed the parent grant"),
            ),
            (
                "subresource beyond role",
                spec(None, Some(vec![rule("get", "pods/exec")]), &["a"]),
                five_min,
                parent(Phase::Granted, 600, 1),
                policy(true, 2),
                Some(vec![rule("*", "pods")]),
                Err("rules exceed the parent grant"),
            ),
        ];
        for (name, child, duration, parent_request, policy, role_rules, expected) in rows {
            let p = Parent { request: &parent_request, policy: Some(&policy), role_rules };
            let got = check("agents", &child, duration, now(), &p);
            match (expected, got) {
                (Ok(()), Ok(_)) => {}
                (Err(want), Err(got)) => assert!(got.contains(want), "{name}: {got:?} lacks {want:?}"),
                (want, got) => panic!("{name}: expected {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_chain_so_far_is_the_parents() {
        let parent_request = parent(Phase::Granted, 600, 0);
        let pol = policy(true, 2);
        let p = Parent { request: &parent_request, policy: Some(&pol), role_rules: None };
        let (policy_name, chain) = check(
            "agents",
            &spec(Some(("edit", RoleKind::ClusterRole)), None, &["a"]),
            Duration::from_secs(60),
            now(),
            &p,
        )
        .unwrap();
        assert_eq!(policy_name, "p");
        assert_eq!(chain.len(), 1);
        assert_eq!(chain[0].grant_id, "g");
    }
}
