//! Tenants are adversaries too: attacks by people who hold ordinary rights
//! around a grant (their own requester role, approver rights, `edit` in a
//! namespace), each made with their own credentials (a ServiceAccount token,
//! or a user impersonated by the admin so the API server sees that user)
//! against the real operator under its shipped RBAC. One module per kind of
//! attack; every row names what it tries and what must stop it.
#[path = "../support/mod.rs"]
mod support;

mod admission_gaps;
mod grant_identities;
mod grant_tokens;
mod half_made;
mod metadata_integrity;
mod owned_objects;
mod paused_leader;
mod redecide;
mod revoke_race;
mod separation_of_duties;

/// Asserts `result` is a refusal (403) by the admission policy `policy`, for
/// the row `what`. `policy` may list several, `a|b`, where each refuses it
/// (the API server names the first that did).
#[track_caller]
pub fn assert_refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, policy: &str, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && policy.split('|').any(|p| s.message.contains(p)) => {}
        other => panic!("{what}: expected a 403 from {policy}, got {other:?}"),
    }
}
