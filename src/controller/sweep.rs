//! Safety nets that do not trust the reconcile loop: on start, revoke every
//! overdue grant before anything else; then, periodically, delete any
//! kube-jit-managed object whose grant is over or whose request is gone.

use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams};
use kube::core::PartialObjectMeta;
use kube::{Client, Resource, ResourceExt};

use super::context::Context;
use super::objects;
use crate::api::access_request::{AccessRequest, Phase};
use crate::conditions::reasons;
use crate::error::Result;
use crate::names;

/// Revokes every grant whose expiry is more than `grace` past (the operator
/// was down, or crashed, across it). Runs before the controller starts, and
/// periodically after in case a scheduled revocation was missed.
pub async fn revoke_overdue(ctx: &Context, grace: std::time::Duration) -> Result<usize> {
    let requests = Api::<AccessRequest>::all(ctx.client.clone()).list(&ListParams::default()).await?;
    let now = Timestamp::now() - jiff::SignedDuration::try_from(grace).unwrap_or_default();
    let mut revoked = 0;
    for request in requests.items {
        let Some(status) = &request.status else { continue };
        let Some(grant) = &status.grant else { continue };
        let overdue = grant.expires_at.as_ref().is_none_or(|t| t.0 <= now);
        if overdue && grant.revoked_at.is_none() {
            let phase = if status.phase.is_terminal() { status.phase } else { Phase::Expired };
            let message = format!(
                "expired at {} while the operator was not running; revoked on start",
                fmt_expiry(grant.expires_at.as_ref().map(|t| t.0))
            );
            super::transitions::end(&request, ctx, phase, reasons::EXPIRED, message).await?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

fn fmt_expiry(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "an unknown time".into())
}

/// Why a managed object must go, if it must.
fn verdict(meta: &kube::api::ObjectMeta, live: &HashMap<String, String>, now: Timestamp) -> Option<&'static str> {
    let annotations = meta.annotations.clone().unwrap_or_default();
    let expired = annotations
        .get(names::EXPIRES_AT_ANNOTATION)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_none_or(|t| t <= now);
    if expired {
        return Some("expired or unreadable expiry");
    }
    let grant_id = meta.labels.as_ref().and_then(|l| l.get(names::GRANT_ID_LABEL));
    let request = annotations.get(names::REQUEST_ANNOTATION);
    match (request, grant_id) {
        (Some(r), Some(id)) if live.get(r) == Some(id) => None,
        _ => Some("its grant is not live"),
    }
}

/// Deletes every managed object whose grant is over or gone, bindings first.
/// Objects are listed before requests: a grant's status is recorded before its
/// objects are made, so every object seen here has its grant visible below.
pub async fn sweep(client: &Client) -> Result<usize> {
    let found = managed_objects(client).await?;

    // Live grants: request `namespace/name` → grant id.
    let requests = Api::<AccessRequest>::all(client.clone()).list(&ListParams::default()).await?;
    let live: HashMap<String, String> = requests
        .items
        .iter()
        .filter_map(|r| {
            let s = r.status.as_ref()?;
            let g = s.grant.as_ref()?;
            (!s.phase.is_terminal() && g.revoked_at.is_none())
                .then(|| (format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any()), g.id.clone()))
        })
        .collect();
    let now = Timestamp::now();
    let mut deleted = 0;
    for (kind, meta) in found {
        if let Some(why) = verdict(&meta, &live, now) {
            let ns = meta.namespace.clone().unwrap_or_default();
            let name = meta.name.clone().unwrap_or_default();
            // One failure must not stop the sweep of everything else.
            match objects::delete_by_ref(client, &kind, &ns, &name).await {
                Ok(true) => {
                    tracing::warn!(kind, namespace = ns, name, why, "sweep deleted a managed object");
                    deleted += 1;
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(kind, namespace = ns, name, error = %e, "sweep could not delete a managed object")
                }
            }
        }
    }
    Ok(deleted)
}

/// Every object labelled as kube-jit's, as (kind, metadata), bindings first.
/// Secrets are not listed: the operator holds no read access to them; the
/// garbage collector removes token Secrets with their (owning) request.
pub async fn managed_objects(client: &Client) -> Result<Vec<(String, kube::api::ObjectMeta)>> {
    let lp = ListParams::default().labels(names::MANAGED_SELECTOR);
    let mut found = Vec::new();
    found.extend(list_kind::<RoleBinding>(client, &lp).await?);
    found.extend(list_kind::<ClusterRoleBinding>(client, &lp).await?);
    found.extend(list_kind::<ServiceAccount>(client, &lp).await?);
    found.extend(list_kind::<Role>(client, &lp).await?);
    found.extend(list_kind::<ClusterRole>(client, &lp).await?);
    Ok(found)
}

async fn list_kind<K>(client: &Client, lp: &ListParams) -> Result<Vec<(String, kube::api::ObjectMeta)>>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let list = Api::<K>::all(client.clone()).list_metadata(lp).await?;
    Ok(list.items.into_iter().map(|i: PartialObjectMeta<K>| (K::kind(&()).to_string(), i.metadata)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn meta(expires: &str, request: &str, id: &str) -> ObjectMeta {
        ObjectMeta {
            labels: Some([(names::GRANT_ID_LABEL.to_string(), id.to_string())].into()),
            annotations: Some(
                [
                    (names::EXPIRES_AT_ANNOTATION.to_string(), expires.to_string()),
                    (names::REQUEST_ANNOTATION.to_string(), request.to_string()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn sweep_verdicts() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        let live: HashMap<String, String> = [("ns/r".to_string(), "abc".to_string())].into();
        assert_eq!(verdict(&meta("2026-01-01T12:05:00Z", "ns/r", "abc"), &live, now), None);
        assert!(verdict(&meta("2026-01-01T11:59:59Z", "ns/r", "abc"), &live, now).is_some(), "expired");
        assert!(verdict(&meta("garbage", "ns/r", "abc"), &live, now).is_some(), "unreadable expiry");
        assert!(verdict(&meta("2026-01-01T12:05:00Z", "ns/gone", "abc"), &live, now).is_some(), "request gone");
        assert!(verdict(&meta("2026-01-01T12:05:00Z", "ns/r", "old"), &live, now).is_some(), "name reused");
        assert!(verdict(&ObjectMeta::default(), &live, now).is_some(), "no annotations");
    }
}
