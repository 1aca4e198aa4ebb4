//! The admission policies kube-jit depends on (shipped in
//! `crds/kube-jit.admission.yaml`), the check that they are installed as
//! shipped, bound and enforcing, and the moment since when they have been.
//!
//! Without them anyone could claim to be a requester or an approver, edit
//! what the operator trusts, or mint long-lived tokens for grant identities,
//! so the operator grants nothing until [`check`] passes, and decides on no
//! claim made before [`in_force_since`] (plus [`ADMISSION_SETTLE`]).

use std::sync::LazyLock;
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingAdmissionPolicy, MutatingAdmissionPolicyBinding, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
};
use serde::Deserialize;

/// The shipped file, compiled in: what "installed as shipped" means.
const SHIPPED_YAML: &str = include_str!("../crds/kube-jit.admission.yaml");

/// How long after a policy or binding is written the API server may still
/// admit without it: its admission informers pick changes up asynchronously
/// (typically well under a second on one API server). Objects created within
/// this window after the last change are treated as made without admission.
pub const ADMISSION_SETTLE: Duration = Duration::from_secs(5);

/// The shipped policies and bindings.
pub struct Shipped {
    pub policies: Vec<ValidatingAdmissionPolicy>,
    pub bindings: Vec<ValidatingAdmissionPolicyBinding>,
    /// `kube-jit-requester-pod`, which records the Pod of a pod-bound creator
    /// on its request. Not required: without it requests carry no Pod, which
    /// only agents pinned to a workload need (they are then denied).
    pub mutating: Vec<MutatingAdmissionPolicy>,
    pub mutating_bindings: Vec<MutatingAdmissionPolicyBinding>,
}

/// The shipped policies and bindings, parsed once.
pub fn shipped() -> &'static Shipped {
    static SHIPPED: LazyLock<Shipped> = LazyLock::new(|| {
        let (mut policies, mut bindings, mut mutating, mut mutating_bindings) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for doc in serde_yaml::Deserializer::from_str(SHIPPED_YAML) {
            let value = serde_yaml::Value::deserialize(doc).expect("the shipped admission file is YAML");
            match value["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => {
                    policies.push(serde_yaml::from_value(value).expect("a shipped ValidatingAdmissionPolicy"))
                }
                Some("ValidatingAdmissionPolicyBinding") => {
                    bindings.push(serde_yaml::from_value(value).expect("a shipped ValidatingAdmissionPolicyBinding"))
                }
                Some("MutatingAdmissionPolicy") => {
                    mutating.push(serde_yaml::from_value(value).expect("a shipped MutatingAdmissionPolicy"))
                }
                Some("MutatingAdmissionPolicyBinding") => mutating_bindings
                    .push(serde_yaml::from_value(value).expect("a shipped MutatingAdmissionPolicyBinding")),
                other => panic!("unexpected kind {other:?} in crds/kube-jit.admission.yaml"),
            }
        }
        Shipped { policies, bindings, mutating, mutating_bindings }
    });
    &SHIPPED
}

/// The names of the required policies; each is bound by a binding of the same name.
pub fn required_policies() -> impl Iterator<Item = &'static str> {
    shipped().policies.iter().filter_map(|p| p.metadata.name.as_deref())
}

/// The CEL a policy enforces: its variables, match conditions and
/// validations, as (name or message, expression). The API server defaults
/// other fields, so these are what is compared with the shipped file.
fn expressions(policy: &ValidatingAdmissionPolicy) -> Vec<(String, String)> {
    let Some(spec) = policy.spec.as_ref() else { return Vec::new() };
    let variables = spec.variables.iter().flatten().map(|v| (v.name.clone(), v.expression.clone()));
    let conditions = spec.match_conditions.iter().flatten().map(|c| (c.name.clone(), c.expression.clone()));
    let validations = spec.validations.iter().flatten().map(|v| (String::new(), v.expression.clone()));
    variables.chain(conditions).chain(validations).collect()
}

/// What a policy matches, ignoring what the API server defaults: each rule's
/// groups, versions, operations and resources, and whether anything narrows
/// them (resource names, exclusions, namespace or object selectors). An
/// edited policy that matches less proves nothing about what it no longer sees.
fn matches(policy: &ValidatingAdmissionPolicy) -> (Vec<[Vec<String>; 4]>, bool) {
    let Some(constraints) = policy.spec.as_ref().and_then(|s| s.match_constraints.as_ref()) else {
        return (Vec::new(), false);
    };
    let rules = constraints
        .resource_rules
        .iter()
        .flatten()
        .map(|r| {
            let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
            [list(&r.api_groups), list(&r.api_versions), list(&r.operations), list(&r.resources)]
        })
        .collect();
    let selective = |s: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>| {
        s.as_ref().is_some_and(|s| {
            s.match_labels.as_ref().is_some_and(|l| !l.is_empty())
                || s.match_expressions.as_ref().is_some_and(|e| !e.is_empty())
        })
    };
    let narrowed =
        constraints.resource_rules.iter().flatten().any(|r| r.resource_names.as_ref().is_some_and(|n| !n.is_empty()))
            || constraints.exclude_resource_rules.as_ref().is_some_and(|e| !e.is_empty())
            || selective(&constraints.namespace_selector)
            || selective(&constraints.object_selector);
    (rules, narrowed)
}

/// `Ok` when every shipped policy exists with the shipped expressions and
/// parameter kind, fails closed, and is bound with `Deny` to every object (and
/// to the shipped parameters); otherwise what is wrong, in words an admin can act on.
pub fn check<'a>(
    policies: impl IntoIterator<Item = &'a ValidatingAdmissionPolicy> + Clone,
    bindings: impl IntoIterator<Item = &'a ValidatingAdmissionPolicyBinding> + Clone,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for want in &shipped().policies {
        let name = want.metadata.name.as_deref().unwrap_or_default();
        let policy = policies.clone().into_iter().find(|p| p.metadata.name.as_deref() == Some(name));
        match policy {
            None => problems.push(format!("ValidatingAdmissionPolicy {name} is missing")),
            Some(p) => {
                let failure = p.spec.as_ref().and_then(|s| s.failure_policy.as_deref()).unwrap_or("Fail");
                if failure != "Fail" {
                    problems.push(format!("ValidatingAdmissionPolicy {name} has failurePolicy {failure}, not Fail"));
                }
                let param_kind = |p: &ValidatingAdmissionPolicy| p.spec.as_ref().and_then(|s| s.param_kind.clone());
                if expressions(p) != expressions(want)
                    || param_kind(p) != param_kind(want)
                    || matches(p) != matches(want)
                {
                    problems.push(format!("ValidatingAdmissionPolicy {name} differs from the shipped one"));
                }
            }
        }
        let shipped_ref =
            shipped().bindings.iter().find(|b| b.spec.policy_name == name).and_then(|b| b.spec.param_ref.clone());
        let bound = bindings.clone().into_iter().any(|b| {
            let s = &b.spec;
            s.policy_name == name
                && s.validation_actions.iter().any(|a| a == "Deny")
                && s.match_resources.is_none()
                && s.param_ref == shipped_ref
        });
        if !bound {
            problems.push(format!(
                "no ValidatingAdmissionPolicyBinding binds {name} as shipped, with validationActions [Deny]"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; apply crds/kube-jit.admission.yaml (or install the chart) so requesters, approvers and grant objects cannot be spoofed",
            problems.join("; ")
        ))
    }
}

/// Which claims an object carries, and so which policy must have been in
/// force when it was made for them to be proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Claims {
    /// An AccessRequest's requester (user and groups) or an extension
    /// appended to it: `kube-jit-requester-is-creator`.
    Requester,
    /// An AccessApproval's approver and groups: `kube-jit-approver-is-creator`.
    Approver,
}

impl Claims {
    /// The policy (and binding) that checks these claims.
    pub fn policy(self) -> &'static str {
        match self {
            Claims::Requester => "kube-jit-requester-is-creator",
            Claims::Approver => "kube-jit-approver-is-creator",
        }
    }
}

/// The last time the policy checking `claims`, or its binding, was created or
/// written (its `creationTimestamp` and every `managedFields[].time` but
/// those of its status, all set by the API server's clock). Claims made
/// before this moment (plus [`ADMISSION_SETTLE`]) may have been admitted
/// while the policy was missing, lenient or different, so they prove
/// nothing; nothing needs to be stored to know it, even across restarts. The
/// price of statelessness: claims made under an earlier installation of the
/// policy are not proven either. `None` when neither is present.
pub fn in_force_since<'a>(
    claims: Claims,
    policies: impl IntoIterator<Item = &'a ValidatingAdmissionPolicy>,
    bindings: impl IntoIterator<Item = &'a ValidatingAdmissionPolicyBinding>,
) -> Option<jiff::Timestamp> {
    let name = claims.policy();
    let metas = policies
        .into_iter()
        .filter(|p| p.metadata.name.as_deref() == Some(name))
        .map(|p| &p.metadata)
        .chain(bindings.into_iter().filter(|b| b.spec.policy_name == name).map(|b| &b.metadata));
    metas
        .flat_map(|m| {
            let created = m.creation_timestamp.iter().map(|t| t.0);
            // Status writes (the API server's type checking) change no enforcement.
            let written = m
                .managed_fields
                .iter()
                .flatten()
                .filter(|f| f.subresource.as_deref().unwrap_or_default() != "status")
                .filter_map(|f| f.time.as_ref().map(|t| t.0));
            created.chain(written).collect::<Vec<_>>()
        })
        .max()
}

/// The first instant from which new claims of every kind are proven (the
/// later of the two claim policies' [`in_force_since`], plus
/// [`ADMISSION_SETTLE`]): what to wait for after installing the policies.
/// `None` when neither is installed.
pub fn claims_proven_from<'a>(
    policies: &'a [ValidatingAdmissionPolicy],
    bindings: &'a [ValidatingAdmissionPolicyBinding],
) -> Option<jiff::Timestamp> {
    let settle = jiff::SignedDuration::try_from(ADMISSION_SETTLE).unwrap_or_default();
    [Claims::Requester, Claims::Approver]
        .into_iter()
        .filter_map(|claims| in_force_since(claims, policies, bindings))
        .max()
        .map(|since| since + settle)
}

/// Whether an object created at `created` was admitted with every policy in
/// force since `since` (seconds resolution, as the API server writes both).
pub fn admitted_under(created: jiff::Timestamp, since: Option<jiff::Timestamp>) -> bool {
    let settle = jiff::SignedDuration::try_from(ADMISSION_SETTLE).unwrap_or_default();
    since.is_some_and(|since| created >= since + settle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn installed() -> (Vec<ValidatingAdmissionPolicy>, Vec<ValidatingAdmissionPolicyBinding>) {
        (shipped().policies.clone(), shipped().bindings.clone())
    }

    #[test]
    fn the_shipped_policies_pass() {
        let (p, b) = installed();
        assert_eq!(check(&p, &b), Ok(()));
        assert!(required_policies().count() >= 5);
        let names =
            |m: &[MutatingAdmissionPolicy]| m.iter().filter_map(|p| p.metadata.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&shipped().mutating), ["kube-jit-requester-pod"]);
        assert_eq!(
            shipped().mutating_bindings[0].spec.as_ref().map(|s| s.policy_name.as_deref()),
            Some(Some("kube-jit-requester-pod"))
        );
    }

    #[test]
    fn missing_unbound_lenient_or_edited_policies_fail() {
        let (p, b) = installed();
        assert!(check(&p[..1], &b).unwrap_err().contains("kube-jit-approver-is-creator is missing"));
        assert!(
            check(&p, &b[..1]).unwrap_err().contains("no ValidatingAdmissionPolicyBinding binds kube-jit-approver")
        );
        let mut warn_only = b.clone();
        warn_only[0].spec.validation_actions = vec!["Warn".into()];
        assert!(check(&p, &warn_only).is_err());
        let mut lenient = p.clone();
        lenient[0].spec.as_mut().unwrap().failure_policy = Some("Ignore".into());
        assert!(check(&lenient, &b).unwrap_err().contains("failurePolicy Ignore"));
        let mut edited = p.clone();
        edited[0].spec.as_mut().unwrap().validations.as_mut().unwrap()[0].expression = "true".into();
        assert!(check(&edited, &b).unwrap_err().contains("kube-jit-requester-is-creator differs from the shipped one"));
        let mut narrowed = p.clone();
        let rules =
            narrowed[0].spec.as_mut().unwrap().match_constraints.as_mut().unwrap().resource_rules.as_mut().unwrap();
        rules[0].operations = Some(vec!["UPDATE".into()]);
        assert!(
            check(&narrowed, &b).unwrap_err().contains("kube-jit-requester-is-creator differs from the shipped one")
        );
        let mut selective = p.clone();
        let constraints = selective[0].spec.as_mut().unwrap().match_constraints.as_mut().unwrap();
        constraints.object_selector =
            Some(serde_json::from_value(serde_json::json!({"matchLabels": {"checked": "yes"}})).unwrap());
        assert!(check(&selective, &b).is_err(), "an object selector narrows what is checked");
        let mut unparameterised = b.clone();
        for binding in unparameterised.iter_mut() {
            binding.spec.param_ref = None;
        }
        assert!(check(&p, &unparameterised).unwrap_err().contains("binds kube-jit-grant-tokens as shipped"));
    }

    fn at(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    #[test]
    fn in_force_since_is_the_last_write_of_the_claims_policy_or_its_binding() {
        let (mut p, mut b) = installed();
        let requester = Claims::Requester;
        assert_eq!(in_force_since(requester, &p, &b), None, "nothing has a time");
        for (i, policy) in p.iter_mut().enumerate() {
            policy.metadata.creation_timestamp = Some(at(&format!("2026-01-01T00:00:0{i}Z")));
        }
        let index = |name: &str| b.iter().position(|b| b.spec.policy_name == name).unwrap();
        let (mine, other) = (index(requester.policy()), index(Claims::Approver.policy()));
        b[mine].metadata.creation_timestamp = Some(at("2026-01-01T00:01:00Z"));
        assert_eq!(in_force_since(requester, &p, &b), Some("2026-01-01T00:01:00Z".parse().unwrap()));
        // Re-installing the approver policy proves nothing about requesters.
        b[other].metadata.creation_timestamp = Some(at("2026-01-05T00:00:00Z"));
        assert_eq!(in_force_since(requester, &p, &b), Some("2026-01-01T00:01:00Z".parse().unwrap()));
        assert_eq!(in_force_since(Claims::Approver, &p, &b), Some("2026-01-05T00:00:00Z".parse().unwrap()));
        let policy = p.iter().position(|p| p.metadata.name.as_deref() == Some(requester.policy())).unwrap();
        p[policy].metadata.managed_fields = Some(vec![
            ManagedFieldsEntry { time: Some(at("2026-01-02T00:00:00Z")), ..Default::default() },
            // The API server's type checking writes status later: no change of enforcement.
            ManagedFieldsEntry {
                time: Some(at("2026-01-03T00:00:00Z")),
                subresource: Some("status".into()),
                ..Default::default()
            },
        ]);
        let since = in_force_since(requester, &p, &b);
        assert_eq!(since, Some("2026-01-02T00:00:00Z".parse().unwrap()));
        // New claims of both kinds are proven 5 s after the later of the two.
        assert_eq!(claims_proven_from(&p, &b), Some("2026-01-05T00:00:05Z".parse().unwrap()));

        let cases = [
            ("2026-01-02T00:00:04Z", false), // within the settle time
            ("2026-01-02T00:00:05Z", true),
            ("2026-01-01T23:59:59Z", false), // before the last change
        ];
        for (created, admitted) in cases {
            assert_eq!(admitted_under(created.parse().unwrap(), since), admitted, "{created}");
        }
        assert!(!admitted_under("2030-01-01T00:00:00Z".parse().unwrap(), None), "no policies: nothing proven");
    }
}
