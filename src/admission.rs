//! The admission policies kube-jit depends on (shipped in
//! `crds/kube-jit.admission.yaml`), and the check that they are installed,
//! bound and enforcing. Without them anyone could claim to be a requester or
//! an approver, so the operator grants nothing until this check passes.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};

/// Each policy is bound by a binding of the same name.
pub const REQUIRED_POLICIES: [&str; 2] = ["kube-jit-requester-is-creator", "kube-jit-approver-is-creator"];

/// `Ok` when every required policy exists, fails closed, and is bound with `Deny`;
/// otherwise what is wrong, in words an admin can act on.
pub fn check<'a>(
    policies: impl IntoIterator<Item = &'a ValidatingAdmissionPolicy> + Clone,
    bindings: impl IntoIterator<Item = &'a ValidatingAdmissionPolicyBinding> + Clone,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for name in REQUIRED_POLICIES {
        let policy = policies.clone().into_iter().find(|p| p.metadata.name.as_deref() == Some(name));
        match policy {
            None => problems.push(format!("ValidatingAdmissionPolicy {name} is missing")),
            Some(p) => {
                let failure = p.spec.as_ref().and_then(|s| s.failure_policy.as_deref()).unwrap_or("Fail");
                if failure != "Fail" {
                    problems.push(format!("ValidatingAdmissionPolicy {name} has failurePolicy {failure}, not Fail"));
                }
            }
        }
        let bound = bindings.clone().into_iter().any(|b| {
            let s = &b.spec;
            s.policy_name == name
                && s.validation_actions.iter().any(|a| a == "Deny")
                && s.match_resources.is_none()
                && s.param_ref.is_none()
        });
        if !bound {
            problems.push(format!("no ValidatingAdmissionPolicyBinding binds {name} with validationActions [Deny]"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}; apply crds/kube-jit.admission.yaml (or install the chart) so requesters and approvers cannot be spoofed",
            problems.join("; ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> (Vec<ValidatingAdmissionPolicy>, Vec<ValidatingAdmissionPolicyBinding>) {
        let text = include_str!("../crds/kube-jit.admission.yaml");
        let (mut policies, mut bindings) = (Vec::new(), Vec::new());
        for doc in serde_yaml::Deserializer::from_str(text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            match value["kind"].as_str() {
                Some("ValidatingAdmissionPolicy") => policies.push(serde_yaml::from_value(value).unwrap()),
                Some("ValidatingAdmissionPolicyBinding") => bindings.push(serde_yaml::from_value(value).unwrap()),
                other => panic!("unexpected kind {other:?}"),
            }
        }
        (policies, bindings)
    }

    use serde::Deserialize;

    #[test]
    fn the_shipped_policies_pass() {
        let (p, b) = shipped();
        assert_eq!(check(&p, &b), Ok(()));
    }

    #[test]
    fn missing_unbound_or_lenient_policies_fail() {
        let (p, b) = shipped();
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
    }
}
