//! One shared copy of what many cached requests hold alike: the rules of the
//! roles their grants bind (`status.grant.roles[].rules`). Thousands of
//! grants of `view` would otherwise each keep their own copy of its rules,
//! most of a cached request's memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use k8s_openapi::api::rbac::v1::PolicyRule;

use crate::api::access_request::AccessRequest;

/// Rule sets by their JSON, held weakly: a set goes when the last request
/// holding it does.
#[derive(Default)]
pub struct Interner {
    sets: Mutex<HashMap<String, Weak<Vec<PolicyRule>>>>,
}

/// Sets at which dead entries are swept out.
const PRUNE_AT: usize = 1024;

impl Interner {
    /// `request` with each granted role's rules replaced by the shared copy
    /// of equal rules, if one is held.
    pub fn share(&self, request: &mut AccessRequest) {
        let Some(grant) = request.status.as_mut().and_then(|s| s.grant.as_mut()) else { return };
        let mut sets = self.sets.lock().unwrap_or_else(|e| e.into_inner());
        for role in &mut grant.roles {
            let Ok(key) = serde_json::to_string(&role.rules) else { continue };
            match sets.get(&key).and_then(Weak::upgrade) {
                Some(shared) => role.rules = shared,
                None => {
                    if sets.len() >= PRUNE_AT {
                        sets.retain(|_, w| w.strong_count() > 0);
                    }
                    sets.insert(key, Arc::downgrade(&role.rules));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::access_request::{AccessRequestStatus, GrantStatus, GrantedRole};

    fn granted(rules: Vec<PolicyRule>) -> AccessRequest {
        let mut r: AccessRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "r"},
            "spec": {"requester": {"user": "u"}, "namespaces": ["a"]}}))
        .unwrap();
        let roles = vec![GrantedRole {
            kind: "ClusterRole".into(),
            name: "view".into(),
            rules: Arc::new(rules),
            ..Default::default()
        }];
        r.status = Some(AccessRequestStatus {
            grant: Some(GrantStatus { roles, ..GrantStatus::default() }),
            ..AccessRequestStatus::default()
        });
        r
    }

    fn rules_of(r: &AccessRequest) -> &Arc<Vec<PolicyRule>> {
        &r.status.as_ref().unwrap().grant.as_ref().unwrap().roles[0].rules
    }

    #[test]
    fn equal_rules_are_held_once_and_others_apart() {
        let read = |verb: &str| PolicyRule {
            verbs: vec![verb.into()],
            resources: Some(vec!["pods".into()]),
            ..Default::default()
        };
        let interner = Interner::default();
        let (mut a, mut b, mut c) =
            (granted(vec![read("get")]), granted(vec![read("get")]), granted(vec![read("list")]));
        for r in [&mut a, &mut b, &mut c] {
            interner.share(r);
        }
        assert!(Arc::ptr_eq(rules_of(&a), rules_of(&b)), "equal rules: one copy");
        assert!(!Arc::ptr_eq(rules_of(&a), rules_of(&c)), "other rules: their own");
        assert_eq!(**rules_of(&c), vec![read("list")], "the rules themselves are unchanged");
        // Once nobody holds a set, a new request keeps its own.
        drop((a, b));
        let mut d = granted(vec![read("get")]);
        let before = Arc::as_ptr(rules_of(&d));
        interner.share(&mut d);
        assert_eq!(Arc::as_ptr(rules_of(&d)), before);
    }
}
