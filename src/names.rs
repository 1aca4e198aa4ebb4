//! Names, labels and annotations of the objects kube-jit creates. Names are
//! deterministic from the request, so every step is idempotent across retries
//! and restarts, and always valid DNS-1123 labels (at most 63 characters).

use sha2::{Digest, Sha256};

/// Label on every object kube-jit creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY_VALUE: &str = "kube-jit";
/// Label selector for everything kube-jit manages.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=kube-jit";
/// Label carrying the grant id.
pub const GRANT_ID_LABEL: &str = "kubejit.io/grant-id";
/// Annotation: `namespace/name` of the AccessRequest behind the object.
pub const REQUEST_ANNOTATION: &str = "kubejit.io/request";
/// Annotation: when the grant ends (RFC 3339). The sweep deletes any managed
/// object past this instant, whatever state the request is in.
pub const EXPIRES_AT_ANNOTATION: &str = "kubejit.io/expires-at";
pub const REQUESTER_ANNOTATION: &str = "kubejit.io/requester";
pub const AGENT_ANNOTATION: &str = "kubejit.io/agent";
pub const PURPOSE_ANNOTATION: &str = "kubejit.io/purpose";
/// Annotation on a grant identity: its delegation chain (JSON, oldest first).
/// On a grant ServiceAccount: the one username (besides the operator) that
/// admission lets mint tokens for it (`kube-jit-grant-tokens`).
pub const TOKEN_MINTER_ANNOTATION: &str = "kubejit.io/token-minter";
/// On a grant ServiceAccount: the audiences (comma-separated) its tokens may carry.
pub const TOKEN_AUDIENCES_ANNOTATION: &str = "kubejit.io/token-audiences";
/// On a grant ServiceAccount bound to a workload: the uid of the attested Pod,
/// the only caller (by its pod-bound token) admission lets mint tokens for it.
pub const WORKLOAD_POD_UID_ANNOTATION: &str = "kubejit.io/workload-pod-uid";
/// On a grant ServiceAccount bound to a workload: the Secret beside it that
/// every token for it must be bound to (deleted when the Pod ends).
pub const TOKEN_BOUND_SECRET_ANNOTATION: &str = "kubejit.io/token-bound-secret";
pub const CHAIN_ANNOTATION: &str = "kubejit.io/delegation-chain";
/// Where grant identities live unless `--grants-namespace` says otherwise: a
/// namespace only the operator writes to (the chart creates it, with a quota
/// of no Pods), so no tenant holds namespace-wide rights (`edit`, `create
/// pods`, `impersonate`) over a grant identity.
pub const DEFAULT_GRANTS_NAMESPACE: &str = "kube-jit-grants";
/// The operator's namespace unless installed elsewhere (the chart's and
/// `deploy/operator-rbac.yaml`'s): never granted in, wherever it runs.
pub const DEFAULT_OPERATOR_NAMESPACE: &str = "kube-jit-system";
/// Label (value `true`) on the grants namespace: how admission
/// (`kube-jit-grant-subjects`) knows it. The operator grants nothing without it.
pub const GRANTS_NAMESPACE_LABEL: &str = "kubejit.io/grants-namespace";
/// Finalizer that holds an AccessRequest until its grant is revoked.
pub const FINALIZER: &str = "kubejit.io/revoke";

/// Hex characters of the grant id: 48 bits.
const ID_LEN: usize = 12;
const PREFIX: &str = "jit-";
const MAX_NAME: usize = 63;

/// The grant id: a hash of the request's identity, including its uid, so a
/// request re-created under the same name gets a new id.
pub fn grant_id(namespace: &str, name: &str, uid: &str) -> String {
    let mut hasher = Sha256::new();
    for part in [namespace, name, uid] {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    digest.iter().take(ID_LEN / 2).map(|b| format!("{b:02x}")).collect()
}

/// Name of an object of a grant: `jit-<readable part of the request name>-<grant id>`.
/// `qualifier` (may be empty) distinguishes several objects of one grant.
pub fn object_name(request_name: &str, qualifier: &str, grant_id: &str) -> String {
    let readable = if qualifier.is_empty() { request_name.to_string() } else { format!("{qualifier}-{request_name}") };
    let budget = MAX_NAME - PREFIX.len() - 1 - grant_id.len();
    let mut part: String = sanitize(&readable).chars().take(budget).collect();
    while part.ends_with('-') {
        part.pop();
    }
    if part.is_empty() { format!("{PREFIX}{grant_id}") } else { format!("{PREFIX}{part}-{grant_id}") }
}

/// Whether `name` has the shape [`object_name`] gives: `jit-`, then a grant id
/// of 12 lowercase hex characters at the end. A shape, not a proof: anyone
/// may name an object so.
pub fn is_grant_object_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else { return false };
    let id = rest.rsplit('-').next().unwrap_or_default();
    id.len() == ID_LEN && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` is one [`object_name`] gives for grant `grant_id`: what a
/// request's own grant may consist of, whatever its status records.
pub fn is_object_of_grant(name: &str, grant_id: &str) -> bool {
    name.strip_prefix(PREFIX).is_some_and(|rest| rest == grant_id || rest.ends_with(&format!("-{grant_id}")))
}

/// Lowercase letters, digits and single dashes; everything else becomes a dash.
fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out
}

/// Whether `name` is a DNS-1123 label.
pub fn is_dns1123_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The username the API server gives a ServiceAccount.
pub fn service_account_username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Splits `system:serviceaccount:<ns>:<name>` into its namespace and name.
pub fn parse_service_account_username(user: &str) -> Option<(&str, &str)> {
    let rest = user.strip_prefix("system:serviceaccount:")?;
    let (ns, name) = rest.split_once(':')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains(':')).then_some((ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_read_well_and_fit() {
        let id = grant_id("agents", "deploy-staging", "0b5e");
        assert_eq!(id.len(), 12);
        assert_eq!(object_name("deploy-staging", "", &id), format!("jit-deploy-staging-{id}"));
        assert_eq!(object_name("deploy-staging", "token", &id), format!("jit-token-deploy-staging-{id}"));
        let long = "a".repeat(253);
        assert_eq!(object_name(&long, "", &id).len(), 63);
        assert_eq!(object_name("My.Request..Name", "", &id), format!("jit-my-request-name-{id}"));
        assert_eq!(object_name("...", "", &id), format!("jit-{id}"));
        for name in [object_name("deploy-staging", "", &id), object_name("x", "token", &id), format!("jit-{id}")] {
            assert!(is_grant_object_name(&name), "{name}");
        }
        for name in ["jit-deploy", "planner", "jit-abc", "jit-x-ABCDEF012345", &format!("x-{id}")] {
            assert!(!is_grant_object_name(name), "{name}");
        }
    }

    #[test]
    fn reused_names_get_new_ids() {
        assert_ne!(grant_id("ns", "r", "uid-1"), grant_id("ns", "r", "uid-2"));
        // The separator keeps ("a", "bc") and ("ab", "c") apart.
        assert_ne!(grant_id("a", "bc", "u"), grant_id("ab", "c", "u"));
    }

    #[test]
    fn service_account_usernames() {
        assert_eq!(parse_service_account_username("system:serviceaccount:ns:sa"), Some(("ns", "sa")));
        for bad in ["system:serviceaccount:ns", "system:serviceaccount::sa", "alice", "system:serviceaccount:a:b:c"] {
            assert_eq!(parse_service_account_username(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn object_names_are_always_dns1123_labels(name in "\\PC{0,300}", qualifier in "[a-z]{0,8}", uid in "\\PC{0,40}") {
            let id = grant_id("ns", &name, &uid);
            let object = object_name(&name, &qualifier, &id);
            prop_assert!(is_dns1123_label(&object), "{object:?}");
            prop_assert!(object.ends_with(&id));
        }

        #[test]
        fn distinct_requests_get_distinct_names(a in "[a-z0-9.-]{1,80}", b in "[a-z0-9.-]{1,80}", ua in "[a-f0-9-]{36}", ub in "[a-f0-9-]{36}") {
            prop_assume!((a.as_str(), ua.as_str()) != (b.as_str(), ub.as_str()));
            let na = object_name(&a, "", &grant_id("ns", &a, &ua));
            let nb = object_name(&b, "", &grant_id("ns", &b, &ub));
            prop_assert_ne!(na, nb);
        }
    }
}
