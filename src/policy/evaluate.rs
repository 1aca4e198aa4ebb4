//! Decides whether some AccessPolicy allows an AccessRequest, and if not, why
//! each policy said no. Pure: the caller supplies everything it needs to know
//! about the cluster (policies, the agent, namespace labels, live grants), so
//! the operator and `kubectl jit check` run the very same decision.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::api::access_policy::{AccessPolicy, ApprovalMode};
use crate::api::access_request::{AccessRequestSpec, DeliveryMode, PolicyEvaluation, RoleKind};
use crate::api::agent_identity::AgentIdentity;
use crate::durations;
use crate::names::{parse_service_account_username, service_account_username};
use crate::rbac;

/// What the evaluation knows about the cluster.
#[derive(Default)]
pub struct ClusterFacts<'a> {
    /// The AgentIdentity named by `spec.forAgent`, if it exists.
    pub agent: Option<&'a AgentIdentity>,
    /// Labels of existing namespaces; a target namespace missing here does not exist.
    pub namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Live grants of the request's subject, per policy name.
    pub live_grants: BTreeMap<String, usize>,
    /// Whether namespace facts are known (false offline: namespaces are then
    /// checked by name only and selectors cannot match).
    pub namespaces_known: bool,
    /// Creation times of the subject's earlier requests (for rate caps).
    pub recent_requests: Vec<jiff::Timestamp>,
    /// Now, as the decision sees it.
    pub now: Option<jiff::Timestamp>,
    /// Namespaces kube-jit keeps for itself (the grants namespace, the
    /// operator's own): nothing is granted in them, whatever a policy selects,
    /// or a grant could reach other grants' identities and token Secrets.
    pub reserved_namespaces: Vec<String>,
}

/// A policy that allows the request, with what it implies.
#[derive(Debug, Clone, PartialEq)]
pub struct Allowed {
    pub policy: String,
    pub duration: Duration,
    /// Distinct approvals needed; 0 when approval is automatic.
    pub approvals_required: i32,
}

/// The outcome: the chosen policy (if any) and every policy's verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub allowed: Option<Allowed>,
    pub verdicts: Vec<PolicyEvaluation>,
    /// Set when the request itself is unusable whatever the policies say.
    pub invalid: Option<String>,
    /// Policies whose per-identity request cap the subject has exceeded, and
    /// whether each wants the identity suspended.
    pub rate_limited: Vec<(String, bool)>,
}

impl Evaluation {
    /// One line listing why each policy said no.
    pub fn denial_summary(&self) -> String {
        if let Some(invalid) = &self.invalid {
            return invalid.clone();
        }
        if self.verdicts.is_empty() {
            return "no AccessPolicy exists".to_string();
        }
        self.verdicts
            .iter()
            .filter(|v| !v.allowed)
            .map(|v| format!("{}: {}", v.policy, v.reason))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Evaluates a request (in `namespace`) against every policy.
pub fn evaluate(
    namespace: &str,
    spec: &AccessRequestSpec,
    policies: &[&AccessPolicy],
    facts: &ClusterFacts<'_>,
) -> Evaluation {
    if let Err(reason) = check_request(namespace, spec, facts) {
        return Evaluation { allowed: None, verdicts: Vec::new(), invalid: Some(reason), rate_limited: Vec::new() };
    }
    let mut sorted: Vec<&AccessPolicy> = policies.to_vec();
    sorted.sort_by_key(|p| p.metadata.name.clone().unwrap_or_default());
    let mut verdicts = Vec::new();
    let mut candidates = Vec::new();
    let mut rate_limited = Vec::new();
    for policy in sorted {
        let name = policy.metadata.name.clone().unwrap_or_default();
        if subject_matches(namespace, spec, policy, facts) && rate_exceeded(policy, facts).is_some() {
            rate_limited.push((name.clone(), policy.spec.limits.suspend_on_exceed));
        }
        match check_policy(namespace, spec, policy, facts) {
            Ok(allowed) => {
                verdicts.push(PolicyEvaluation { policy: name, allowed: true, reason: "allows".into() });
                candidates.push(allowed);
            }
            Err(reason) => verdicts.push(PolicyEvaluation { policy: name, allowed: false, reason }),
        }
    }
    // Of several allowing policies, the one needing fewest approvals wins; ties by name.
    let allowed = candidates
        .into_iter()
        .min_by(|a, b| a.approvals_required.cmp(&b.approvals_required).then_with(|| a.policy.cmp(&b.policy)));
    Evaluation { allowed, verdicts, invalid: None, rate_limited }
}

/// Why the subject is over the policy's request cap, if it is.
fn rate_exceeded(policy: &AccessPolicy, facts: &ClusterFacts<'_>) -> Option<String> {
    let limits = &policy.spec.limits;
    let max = limits.max_requests_per_window?;
    let window_text = limits.window.as_deref().unwrap_or("1h");
    let window = durations::parse(window_text).unwrap_or(Duration::from_secs(3600));
    let now = facts.now.unwrap_or_else(jiff::Timestamp::now);
    let since = now - jiff::SignedDuration::try_from(window).unwrap_or_default();
    let recent = facts.recent_requests.iter().filter(|t| **t > since).count();
    (recent >= max.max(0) as usize)
        .then(|| format!("rate limit: {recent} requests in the last {window_text} already (at most {max})"))
}

/// Why `spec` may not be granted, if it targets one of kube-jit's own
/// namespaces (`reserved`): delegated requests, which no policy decides, are
/// held to this too.
pub fn reserved_namespace(spec: &AccessRequestSpec, reserved: &[String]) -> Option<String> {
    let ns = spec.namespaces.iter().find(|ns| reserved.contains(ns))?;
    Some(format!(
        "namespace {ns} is kube-jit's own (grant identities or the operator live there); nothing is granted in it"
    ))
}

/// Checks that hold whatever the policies say.
fn check_request(namespace: &str, spec: &AccessRequestSpec, facts: &ClusterFacts<'_>) -> Result<(), String> {
    if let Some(agent_name) = &spec.for_agent {
        let agent = facts.agent.ok_or_else(|| format!("AgentIdentity {namespace}/{agent_name} does not exist"))?;
        let base = service_account_username(namespace, &agent.spec.service_account_name);
        if spec.requester.user != base {
            return Err(format!(
                "requests for AgentIdentity {agent_name} must come from its ServiceAccount {base}, not {}",
                spec.requester.user
            ));
        }
        if agent.spec.suspended {
            return Err(format!("AgentIdentity {agent_name} is suspended"));
        }
        if let Some(expires) = &agent.spec.expires_at
            && expires.0 <= jiff::Timestamp::now()
        {
            return Err(format!("AgentIdentity {agent_name} expired at {}", expires.0));
        }
    }
    if spec.delivery.mode == DeliveryMode::RequesterServiceAccount
        && parse_service_account_username(&spec.requester.user).is_none()
    {
        return Err(format!(
            "delivery mode RequesterServiceAccount needs a ServiceAccount requester; {} is not one",
            spec.requester.user
        ));
    }
    if spec.delivery.token_secret && spec.delivery.mode == DeliveryMode::RequesterServiceAccount {
        return Err("delivery.tokenSecret needs delivery mode EphemeralServiceAccount: \
             a RequesterServiceAccount grant has no identity of its own to hold a token for"
            .into());
    }
    if let Some(why) = reserved_namespace(spec, &facts.reserved_namespaces) {
        return Err(why);
    }
    if let Some(d) = &spec.duration {
        durations::parse(d).map_err(|e| e.to_string())?;
    }
    if facts.namespaces_known {
        for ns in &spec.namespaces {
            if !facts.namespace_labels.contains_key(ns) {
                return Err(format!("namespace {ns} does not exist"));
            }
        }
    }
    Ok(())
}

/// One policy's verdict: `Ok` with what it allows, or the reason it says no.
fn check_policy(
    namespace: &str,
    spec: &AccessRequestSpec,
    policy: &AccessPolicy,
    facts: &ClusterFacts<'_>,
) -> Result<Allowed, String> {
    let p = &policy.spec;
    let name = policy.metadata.name.clone().unwrap_or_default();
    if !subject_matches(namespace, spec, policy, facts) {
        return Err(format!("subject {} is not among its subjects", subject_label(spec)));
    }

    // What is asked for.
    if let Some(role) = &spec.role {
        let (allowed, kind) = match role.kind {
            RoleKind::ClusterRole => (&p.grants.cluster_roles, "ClusterRole"),
            RoleKind::Role => (&p.grants.roles, "Role"),
        };
        if !allowed.iter().any(|r| r == &role.name) {
            return Err(format!("{kind} {} is not grantable under it", role.name));
        }
    }
    if let Some(rules) = &spec.rules {
        if p.grants.rules.is_empty() {
            return Err("it grants no inline rules".into());
        }
        let missing = rbac::uncovered(&p.grants.rules, rules);
        if let Some(first) = missing.first() {
            return Err(format!(
                "rules exceed its ceiling: {}{}",
                rbac::covers::describe(first),
                if missing.len() > 1 { format!(" (and {} more)", missing.len() - 1) } else { String::new() }
            ));
        }
    }

    // To whom: a fresh identity in the grants namespace, unless the policy
    // lets the rights reach the requester's own ServiceAccount.
    if spec.delivery.mode == DeliveryMode::RequesterServiceAccount && !p.delivery.requester_service_account {
        return Err("it does not allow delivery to the requester's own ServiceAccount \
             (delivery.requesterServiceAccount)"
            .into());
    }

    // Where.
    if spec.cluster_wide && !p.grants.cluster_wide {
        return Err("it does not allow cluster-wide grants".into());
    }
    if let Some(max) = p.grants.max_namespaces
        && spec.namespaces.len() > max.max(0) as usize
    {
        return Err(format!("{} namespaces requested, at most {max} allowed", spec.namespaces.len()));
    }
    for ns in &spec.namespaces {
        if !namespace_allowed(ns, &p.grants.namespaces.names, p.grants.namespaces.selector.as_ref(), facts)? {
            return Err(format!("namespace {ns} is not among its namespaces"));
        }
    }

    // How long.
    let max = durations::parse(&p.duration.max).map_err(|e| format!("its maximum duration is invalid: {e}"))?;
    let duration = match &spec.duration {
        Some(d) => durations::parse(d).map_err(|e| e.to_string())?,
        None => {
            durations::parse(&p.duration.default).map_err(|e| format!("its default duration is invalid: {e}"))?.min(max)
        }
    };
    if duration > max {
        return Err(format!("duration {} exceeds its maximum {}", durations::format(duration), durations::format(max)));
    }

    // Why.
    let purpose = spec.purpose.as_deref().unwrap_or("").trim();
    if p.purpose.required && purpose.is_empty() {
        return Err("it requires a purpose".into());
    }
    if let Some(pattern) = &p.purpose.pattern {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|_| "its purpose pattern is not a valid regular expression".to_string())?;
        if !re.is_match(purpose) {
            return Err(format!("purpose does not match its pattern {pattern:?}"));
        }
    }

    // How many.
    if let Some(max) = p.limits.max_live_grants_per_subject {
        let live = facts.live_grants.get(&name).copied().unwrap_or(0);
        if live >= max.max(0) as usize {
            return Err(format!("subject already holds {live} live grants under it (at most {max})"));
        }
    }

    if let Some(why) = rate_exceeded(policy, facts) {
        return Err(why);
    }

    let approvals_required = match p.approval.mode {
        ApprovalMode::Automatic => 0,
        ApprovalMode::Manual => p.approval.required.max(1),
    };
    Ok(Allowed { policy: name, duration, approvals_required })
}

fn subject_label(spec: &AccessRequestSpec) -> String {
    match &spec.for_agent {
        Some(agent) => format!("agent {agent} (requested by {})", spec.requester.user),
        None => spec.requester.user.clone(),
    }
}

fn subject_matches(namespace: &str, spec: &AccessRequestSpec, policy: &AccessPolicy, facts: &ClusterFacts<'_>) -> bool {
    let s = &policy.spec.subjects;
    if let (Some(_), Some(agent)) = (&spec.for_agent, facts.agent) {
        let agent_name = agent.metadata.name.as_deref().unwrap_or_default();
        let labels = agent.metadata.labels.clone().unwrap_or_default();
        let matched = s.agents.iter().any(|a| {
            a.namespace.as_deref().is_none_or(|n| n == namespace)
                && a.name.as_deref().is_none_or(|n| n == agent_name)
                && a.selector.as_ref().is_none_or(|sel| selector_matches(sel, &labels).unwrap_or(false))
        });
        if matched {
            return true;
        }
    }
    let requester = &spec.requester;
    s.users.iter().any(|u| u == &requester.user)
        || s.groups.iter().any(|g| requester.groups.contains(g))
        || s.service_accounts.iter().any(|sa| service_account_username(&sa.namespace, &sa.name) == requester.user)
}

fn namespace_allowed(
    ns: &str,
    names: &[String],
    selector: Option<&LabelSelector>,
    facts: &ClusterFacts<'_>,
) -> Result<bool, String> {
    if names.iter().any(|n| n == ns) {
        return Ok(true);
    }
    match (selector, facts.namespace_labels.get(ns)) {
        (Some(sel), Some(labels)) => selector_matches(sel, labels),
        _ => Ok(false),
    }
}

/// Label selector semantics of Kubernetes; an invalid selector is an error
/// (the policy then says no), never a match.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    if let Some(required) = &selector.match_labels {
        for (k, v) in required {
            if labels.get(k) != Some(v) {
                return Ok(false);
            }
        }
    }
    for expr in selector.match_expressions.iter().flatten() {
        let values = expr.values.clone().unwrap_or_default();
        let value = labels.get(&expr.key);
        let ok = match expr.operator.as_str() {
            "In" if !values.is_empty() => value.is_some_and(|v| values.contains(v)),
            "NotIn" if !values.is_empty() => value.is_none_or(|v| !values.contains(v)),
            "Exists" if values.is_empty() => value.is_some(),
            "DoesNotExist" if values.is_empty() => value.is_none(),
            op => return Err(format!("its selector is invalid (operator {op:?} with values {values:?})")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}
