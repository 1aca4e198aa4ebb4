//! Which objects are kube-jit's own, and so which the operator may delete.
//! Labels are never the proof: anyone who writes bindings can set them. An
//! object is a grant's when the grant recorded it in its status (which only
//! the operator writes) under a name derived from the grant's own id (which
//! comes from the request's namespace, name and uid, never from its status),
//! or when it sits in the grants namespace, where only the operator writes.
//! Anything else that carries kube-jit's labels is foreign: it is reported,
//! never deleted.

use std::collections::HashMap;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::ObjectMeta;

use crate::api::AccessRequest;
use crate::names;

/// Every object recorded by a grant, with whether that grant is still live.
#[derive(Debug, Default)]
pub struct Ledger(HashMap<(String, String, String), bool>);

/// A grant is live until it ends, is revoked or reaches its expiry (a grant
/// without a readable expiry is not live).
fn live(request: &AccessRequest, now: Timestamp) -> bool {
    let Some(status) = request.status.as_ref() else { return false };
    let Some(grant) = status.grant.as_ref() else { return false };
    !status.phase.is_terminal() && grant.revoked_at.is_none() && grant.expires_at.as_ref().is_some_and(|t| t.0 > now)
}

impl Ledger {
    /// The ledger of `requests` at `now`: a grant records its objects before
    /// it makes them, so an object seen after the ledger was read either has
    /// its record here or is young ([`UNRECORDED_GRACE`]).
    pub fn of<'a>(requests: impl IntoIterator<Item = &'a AccessRequest>, now: Timestamp) -> Ledger {
        let mut ledger = Ledger::default();
        for request in requests {
            ledger.add(request, now);
        }
        ledger
    }

    /// Adds what `request`'s grant recorded (for a ledger built a page of
    /// requests at a time).
    pub fn add(&mut self, request: &AccessRequest, now: Timestamp) {
        let Some(grant) = request.status.as_ref().and_then(|s| s.grant.as_ref()) else { return };
        let id = names::grant_id(
            &request.namespace().unwrap_or_default(),
            &request.name_any(),
            &request.uid().unwrap_or_default(),
        );
        let live = live(request, now);
        for o in grant.objects.iter().filter(|o| names::is_object_of_grant(&o.name, &id)) {
            let entry = self.0.entry((o.kind.clone(), o.namespace.clone(), o.name.clone())).or_insert(false);
            *entry |= live;
        }
    }

    /// Whether a grant recorded the object, and if so whether that grant is live.
    pub fn grant_of(&self, kind: &str, namespace: &str, name: &str) -> Option<bool> {
        self.0.get(&(kind.to_string(), namespace.to_string(), name.to_string())).copied()
    }
}

/// What the sweep does with an object labelled as kube-jit's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A live grant's.
    Keep,
    /// kube-jit's, and its grant is over or gone: delete it (why).
    Delete(&'static str),
    /// Not kube-jit's, whatever its labels say: report it, never delete it.
    Foreign,
}

/// How long the sweep leaves alone an object no grant records, after it was
/// created. The sweep reads the requests (the ledger) before it lists the
/// objects, so an object made, and recorded, after that read is seen without
/// its record: it is judged once older than this, by which time its record
/// is in the next sweep's ledger. Well past the time between a grant's record
/// and its objects, even under load (2.7 s at most with 100 requests in
/// flight in the benchmark).
pub const UNRECORDED_GRACE: std::time::Duration = std::time::Duration::from_secs(15);

/// The verdict on the object of `kind` with `meta` at `now`, leaving alone
/// for `grace` after creation a grant-shaped object no grant records
/// ([`UNRECORDED_GRACE`] for the sweep; none for uninstall, which runs with
/// the operator stopped).
pub fn verdict(
    kind: &str,
    meta: &ObjectMeta,
    ledger: &Ledger,
    grants_namespace: &str,
    now: Timestamp,
    grace: std::time::Duration,
) -> Verdict {
    let namespace = meta.namespace.as_deref().unwrap_or_default();
    let name = meta.name.as_deref().unwrap_or_default();
    // The API server sets creationTimestamp; nobody can make an object older.
    let grace = jiff::SignedDuration::try_from(grace).unwrap_or_default();
    let young = meta.creation_timestamp.as_ref().is_none_or(|t| t.0 + grace > now);
    match ledger.grant_of(kind, namespace, name) {
        Some(true) => Verdict::Keep,
        Some(false) => Verdict::Delete("its grant is over"),
        None if young && names::is_grant_object_name(name) => Verdict::Keep,
        None if namespace == grants_namespace && names::is_grant_object_name(name) => {
            Verdict::Delete("it is in the grants namespace and no grant records it")
        }
        None => Verdict::Foreign,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ObjectRef;
    use crate::api::access_request::{AccessRequestSpec, AccessRequestStatus, GrantStatus, Phase, Requester};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const GRANTS: &str = "kube-jit-grants";

    fn request(name: &str, phase: Phase, expires: i64, objects: &[(&str, &str, &str)]) -> AccessRequest {
        let spec = AccessRequestSpec {
            requester: Requester { user: "u".into(), ..Requester::default() },
            for_agent: None,
            role: None,
            rules: None,
            namespaces: vec![],
            cluster_wide: false,
            duration: None,
            purpose: None,
            delivery: Default::default(),
            extensions: vec![],
            revoke: false,
        };
        let mut r = AccessRequest::new(name, spec);
        r.metadata.namespace = Some("agents".into());
        r.metadata.uid = Some(format!("uid-{name}"));
        let id = names::grant_id("agents", name, &format!("uid-{name}"));
        r.status = Some(AccessRequestStatus {
            phase,
            grant: Some(GrantStatus {
                id: id.clone(),
                expires_at: Some(Time(Timestamp::from_second(1_800_000_000 + expires).unwrap())),
                objects: objects
                    .iter()
                    .map(|(kind, ns, n)| ObjectRef {
                        kind: kind.to_string(),
                        namespace: ns.to_string(),
                        // `@` stands for the grant's own id.
                        name: n.replace('@', &id),
                    })
                    .collect(),
                ..GrantStatus::default()
            }),
            ..AccessRequestStatus::default()
        });
        r
    }

    /// Made long before the sweep's `now`.
    fn meta(ns: &str, name: &str) -> ObjectMeta {
        let created = Timestamp::from_second(1_700_000_000).unwrap();
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            creation_timestamp: Some(Time(created)),
            ..ObjectMeta::default()
        }
    }

    /// Made `ago` seconds before the sweep's `now`.
    fn made(ns: &str, name: &str, ago: i64) -> ObjectMeta {
        let created = Timestamp::from_second(1_800_000_000 - ago).unwrap();
        ObjectMeta { creation_timestamp: Some(Time(created)), ..meta(ns, name) }
    }

    fn id(name: &str) -> String {
        names::grant_id("agents", name, &format!("uid-{name}"))
    }

    #[test]
    fn only_what_a_grant_recorded_or_the_grants_namespace_holds_is_deleted() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let requests = [
            request(
                "live",
                Phase::Granted,
                60,
                &[("RoleBinding", "team-a", "jit-live-@"), ("ServiceAccount", GRANTS, "jit-live-@")],
            ),
            request("ended", Phase::Expired, -60, &[("RoleBinding", "team-a", "jit-ended-@")]),
            request("overdue", Phase::Granted, -1, &[("RoleBinding", "team-a", "jit-overdue-@")]),
            // A status naming someone else's object (or an object of no grant)
            // proves nothing.
            request(
                "liar",
                Phase::Expired,
                -60,
                &[("RoleBinding", "team-b", "admins"), ("RoleBinding", "team-a", "jit-live-@")],
            ),
        ];
        let ledger = Ledger::of(&requests, now);
        let (live, ended, overdue) = (id("live"), id("ended"), id("overdue"));
        let table: &[(&str, ObjectMeta, Verdict)] = &[
            ("RoleBinding", meta("team-a", &format!("jit-live-{live}")), Verdict::Keep),
            ("ServiceAccount", meta(GRANTS, &format!("jit-live-{live}")), Verdict::Keep),
            ("RoleBinding", meta("team-a", &format!("jit-ended-{ended}")), Verdict::Delete("its grant is over")),
            ("RoleBinding", meta("team-a", &format!("jit-overdue-{overdue}")), Verdict::Delete("its grant is over")),
            // Same name, another kind or namespace: not what was recorded.
            ("ClusterRoleBinding", meta("", &format!("jit-live-{live}")), Verdict::Foreign),
            ("RoleBinding", meta("team-b", &format!("jit-ended-{ended}")), Verdict::Foreign),
            ("RoleBinding", meta("team-b", "admins"), Verdict::Foreign),
            // Labelled as kube-jit's, with a grant-shaped name nobody recorded.
            ("RoleBinding", meta("team-b", "jit-helper-0123456789ab"), Verdict::Foreign),
            // In the grants namespace, only the operator writes: a grant-shaped
            // name whose grant is gone is an orphan of kube-jit's.
            (
                "ServiceAccount",
                meta(GRANTS, "jit-gone-0123456789ab"),
                Verdict::Delete("it is in the grants namespace and no grant records it"),
            ),
            ("ConfigMap", meta(GRANTS, "kube-root-ca.crt"), Verdict::Foreign),
            // Objects recorded after the sweep read its ledger look unrecorded:
            // left alone while young, judged once older than the grace.
            ("ServiceAccount", made(GRANTS, "jit-new-0123456789ab", 5), Verdict::Keep),
            ("RoleBinding", made("team-b", "jit-new-0123456789ab", 5), Verdict::Keep),
            (
                "ServiceAccount",
                made(GRANTS, "jit-new-0123456789ab", 16),
                Verdict::Delete("it is in the grants namespace and no grant records it"),
            ),
            ("RoleBinding", made("team-b", "jit-new-0123456789ab", 16), Verdict::Foreign),
            // Young or not, a name of no grant's shape is never kube-jit's.
            ("RoleBinding", made("team-b", "admins", 5), Verdict::Foreign),
        ];
        for (kind, m, want) in table {
            assert_eq!(verdict(kind, m, &ledger, GRANTS, now, UNRECORDED_GRACE), *want, "{kind} {m:?}");
        }
        // Uninstall judges with no grace: a young object is judged at once.
        let young = made(GRANTS, "jit-new-0123456789ab", 5);
        let zero = std::time::Duration::ZERO;
        assert_eq!(
            verdict("ServiceAccount", &young, &ledger, GRANTS, now, zero),
            Verdict::Delete("it is in the grants namespace and no grant records it")
        );
    }
}
