//! Delegated requests: recognising one (its requester is a live grant's own
//! identity), deciding it with `policy::delegation`, and ending every grant
//! below one that ends.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::context::Context;
use super::transitions::{self, Approval};
use crate::api::access_request::{AccessRequest, AccessRequestStatus, Phase, RoleKind};
use crate::conditions::reasons;
use crate::durations;
use crate::error::Result;
use crate::names;
use crate::policy::delegation::{self, Parent};

/// The request whose grant identity made `request`, if a grant identity did.
pub fn parent_of(ctx: &Context, request: &AccessRequest) -> Option<Arc<AccessRequest>> {
    let (_, sa) = names::parse_service_account_username(&request.spec.requester.user)?;
    if !sa.starts_with("jit-") {
        return None;
    }
    ctx.stores.requests.state().into_iter().find(|r| {
        r.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.username.as_ref())
            == Some(&request.spec.requester.user)
    })
}

/// Decides a delegated request: allowed only within its parent's scope and
/// time, under a policy that allows delegation, to an agent not yet in the chain.
pub async fn decide(
    request: &AccessRequest,
    ctx: &Context,
    status: AccessRequestStatus,
    parent: &AccessRequest,
) -> Result<Action> {
    let ns = request.namespace().unwrap_or_default();
    if let Err(why) = agent_usable(ctx, request) {
        return transitions::deny(request, ctx, status, reasons::DELEGATION_DENIED, why).await;
    }
    if let Some(why) = crate::policy::evaluate::reserved_namespace(&request.spec, &ctx.reserved_namespaces) {
        return transitions::deny(request, ctx, status, reasons::DELEGATION_DENIED, why).await;
    }
    // An agent pinned to its workload acts only from its Pods: a grant
    // identity (no Pod) cannot delegate to one that requires it.
    let workload = match super::attestation::attest(ctx, request).await? {
        Ok(workload) => workload,
        Err(refused) => return transitions::deny(request, ctx, status, refused.reason, refused.message).await,
    };
    let now = Timestamp::now();
    let parent_expiry = parent.status.as_ref().and_then(|s| s.grant.as_ref()).and_then(|g| g.expires_at.as_ref());
    let duration = match &request.spec.duration {
        Some(d) => durations::parse(d).map_err(|e| e.to_string()),
        // Without a duration, a delegation lasts as long as its parent.
        None => Ok(parent_expiry
            .map(|t| t.0.duration_since(now))
            .and_then(|d| std::time::Duration::try_from(d).ok())
            .unwrap_or_default()),
    };
    let duration = match duration {
        Ok(d) => d,
        Err(why) => return transitions::deny(request, ctx, status, reasons::DELEGATION_DENIED, why).await,
    };
    let policy_name = parent.status.as_ref().and_then(|s| s.policy.clone()).unwrap_or_default();
    let policies = ctx.stores.policies.state();
    let policy = policies.iter().find(|p| p.name_any() == policy_name);
    let role_rules = match (&parent.spec.role, &request.spec.rules) {
        (Some(role), Some(_)) if role.kind == RoleKind::ClusterRole => {
            Api::<ClusterRole>::all(ctx.client.clone()).get_opt(&role.name).await?.and_then(|r| r.rules)
        }
        _ => None,
    };
    let facts = Parent { request: parent, policy: policy.map(|p| p.as_ref()), role_rules };
    match delegation::check(&ns, &request.spec, duration, now, &facts) {
        Err(why) => transitions::deny(request, ctx, status, reasons::DELEGATION_DENIED, why).await,
        Ok((policy, chain_above)) => {
            let parent_id = chain_above.last().map(|h| h.grant_id.clone()).unwrap_or_default();
            let approval = Approval {
                message: format!(
                    "delegated by {} from grant {parent_id} under policy {policy}",
                    request.spec.requester.user
                ),
                policy,
                duration,
                reason: reasons::DELEGATED,
                chain_above,
                workload,
            };
            transitions::approve(request, ctx, status, approval).await
        }
    }
}

/// The AgentIdentity a delegation is for must exist and be neither suspended nor expired.
fn agent_usable(ctx: &Context, request: &AccessRequest) -> Result<(), String> {
    let Some(name) = &request.spec.for_agent else { return Ok(()) };
    let agent = ctx.agent_of(request).ok_or_else(|| format!("AgentIdentity {name} does not exist"))?;
    if agent.spec.suspended {
        return Err(format!("AgentIdentity {name} is suspended"));
    }
    if agent.spec.expires_at.as_ref().is_some_and(|t| t.0 <= Timestamp::now()) {
        return Err(format!("AgentIdentity {name} has expired"));
    }
    Ok(())
}

/// The request holding grant `id`, among `requests`.
fn holding(requests: &[Arc<AccessRequest>], id: &str) -> Option<Arc<AccessRequest>> {
    requests.iter().find(|r| r.status.as_ref().and_then(|s| s.grant.as_ref()).is_some_and(|g| g.id == id)).cloned()
}

/// Whether the status shows grant `id` live; if not, why.
fn still_live(id: &str, status: &AccessRequestStatus) -> Result<(), String> {
    let live = status.phase == Phase::Granted && status.grant.as_ref().is_some_and(|g| g.revoked_at.is_none());
    if live { Ok(()) } else { Err(format!("parent grant {id} is {:?}", status.phase)) }
}

/// The request holding the parent grant of a delegated grant, from the cache.
fn parent_grant(ctx: &Context, status: &AccessRequestStatus) -> (String, Option<Arc<AccessRequest>>) {
    let chain = &status.delegation_chain;
    let parent_id = chain[chain.len().saturating_sub(2)].grant_id.clone();
    let parent = holding(&ctx.stores.requests.state(), &parent_id);
    (parent_id, parent)
}

/// When the parent grant of a delegated grant ends.
pub fn parent_expiry(ctx: &Context, status: &AccessRequestStatus) -> Option<Timestamp> {
    let (_, parent) = parent_grant(ctx, status);
    parent?.status.as_ref()?.grant.as_ref()?.expires_at.as_ref().map(|t| t.0)
}

/// Like [`parent_still_live`], but reading every ancestor (parent first, up
/// to the root) from the API server, not the cache: for deciding why a
/// delegated grant's objects vanished. An ancestor ending takes its whole
/// subtree down before the cache, or even the nearer ancestors' status, shows it.
pub async fn parent_live_now(ctx: &Context, status: &AccessRequestStatus) -> Result<(), String> {
    let chain = &status.delegation_chain;
    let ancestors = chain[..chain.len().saturating_sub(1)].iter().rev();
    let cached = ctx.stores.requests.state();
    for hop in ancestors {
        let id = &hop.grant_id;
        let Some(ancestor) = holding(&cached, id) else {
            return Err(format!("parent grant {id} no longer exists"));
        };
        let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &ancestor.namespace().unwrap_or_default());
        match api.get_opt(&ancestor.name_any()).await {
            Ok(Some(fresh)) => still_live(id, &fresh.status.unwrap_or_default())?,
            Ok(None) => return Err(format!("parent grant {id} no longer exists")),
            // Unknown: the caller's own reason stands.
            Err(_) => return Ok(()),
        }
    }
    Ok(())
}

/// A delegated grant's parent must still be live.
pub fn parent_still_live(ctx: &Context, status: &AccessRequestStatus) -> Result<(), String> {
    let (parent_id, parent) = parent_grant(ctx, status);
    let parent = parent.ok_or_else(|| format!("parent grant {parent_id} no longer exists"))?;
    still_live(&parent_id, &parent.status.clone().unwrap_or_default())
}

/// Ends, at once and in parallel, every live grant delegated (at any depth)
/// from grant `grant_id`.
pub async fn end_descendants(ctx: &Context, grant_id: &str, name: &str) {
    let below: Vec<_> = ctx
        .stores
        .requests
        .state()
        .into_iter()
        .filter(|r| {
            let Some(s) = &r.status else { return false };
            let own = s.grant.as_ref().map(|g| g.id.as_str());
            !s.phase.is_terminal() && own != Some(grant_id) && s.delegation_chain.iter().any(|h| h.grant_id == grant_id)
        })
        .collect();
    let ends = below.iter().map(|r| {
        let why = format!("its parent grant {grant_id} ({name}) ended");
        transitions::end_one(r, ctx, Phase::Revoked, reasons::PARENT_REVOKED, why)
    });
    for (r, result) in below.iter().zip(futures::future::join_all(ends).await) {
        if let Err(e) = result {
            // The child's own reconcile (parent check) and the sweep catch it.
            tracing::warn!(request = %r.name_any(), error = %e, "could not end a delegated grant");
        }
    }
}
