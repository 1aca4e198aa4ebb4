//! Reconciles AgentIdentities: what kube-jit observes about each non-human
//! identity — live grants, request counts, its SPIFFE ID, and whether its base
//! ServiceAccount holds standing privilege (so zero standing privilege is
//! visible, not assumed). Suspension and expiry end its grants: the request
//! reconciler does that as soon as the identity changes.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::objects::FIELD_MANAGER;
use crate::api::access_request::Phase;
use crate::api::agent_identity::{AgentIdentity, AgentIdentityStatus};
use crate::conditions;
use crate::error::Result;
use crate::policy::standing_privilege;

/// Condition types of an AgentIdentity.
pub mod types {
    pub const READY: &str = "Ready";
    pub const SUSPENDED: &str = "Suspended";
    pub const EXPIRED: &str = "Expired";
    pub const STANDING_PRIVILEGE: &str = "StandingPrivilege";
    pub const RATE_LIMITED: &str = "RateLimited";
}

pub async fn reconcile(agent: Arc<AgentIdentity>, ctx: Arc<Context>) -> Result<Action> {
    let ns = agent.namespace().unwrap_or_default();
    let name = agent.name_any();
    let now = Timestamp::now();
    let mut status = agent.status.clone().unwrap_or_default();
    let generation = agent.meta().generation;

    let requests: Vec<_> = ctx
        .stores
        .requests
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(&ns) && r.spec.for_agent.as_deref() == Some(&name))
        .collect();
    let phase = |r: &crate::api::AccessRequest| r.status.as_ref().map(|s| s.phase).unwrap_or_default();
    status.live_grants =
        requests.iter().filter(|r| matches!(phase(r), Phase::Granted | Phase::Approved)).count() as i32;
    status.request_count = requests.len() as i64;
    status.last_request_time = requests.iter().filter_map(|r| r.creation_timestamp()).max_by_key(|t| t.0);
    status.last_grant_time =
        requests.iter().filter_map(|r| r.status.as_ref()?.grant.as_ref()?.started_at.clone()).max_by_key(|t| t.0);
    status.spiffe_id =
        Some(agent.spec.spiffe_id.clone().unwrap_or_else(|| {
            format!("spiffe://{}/ns/{ns}/sa/{}", ctx.trust_domain, agent.spec.service_account_name)
        }));

    let expired = agent.spec.expires_at.as_ref().is_some_and(|t| t.0 <= now);
    let suspended = agent.spec.suspended;
    let set = |status: &mut AgentIdentityStatus, t: &str, on: bool, reason: &str, message: String| {
        conditions::set(&mut status.conditions, t, on, reason, message, generation, now)
    };
    set(
        &mut status,
        types::SUSPENDED,
        suspended,
        if suspended { "Suspended" } else { "Active" },
        if suspended {
            "suspended: live grants are revoked and new requests denied".into()
        } else {
            "not suspended".into()
        },
    );
    set(
        &mut status,
        types::EXPIRED,
        expired,
        if expired { "Expired" } else { "NotExpired" },
        match &agent.spec.expires_at {
            Some(t) => format!("expires at {}", t.0),
            None => "no expiry set".into(),
        },
    );

    let role_bindings = ctx.stores.role_bindings.state();
    let cluster_role_bindings = ctx.stores.cluster_role_bindings.state();
    // kube-jit's bindings are those live grants recorded, never those merely
    // labelled as kube-jit's: anyone who writes bindings can set a label.
    let requests = ctx.stores.requests.state();
    let recorded = standing_privilege::Recorded::of(requests.iter().map(|r| r.as_ref()));
    let findings = standing_privilege::findings(
        &ns,
        &agent.spec.service_account_name,
        role_bindings.iter().map(|b| b.as_ref()),
        cluster_role_bindings.iter().map(|b| b.as_ref()),
        |kind: &str, meta: &kube::api::ObjectMeta| recorded.contains(kind, meta),
    );
    let was_flagged = conditions::is_true(&status.conditions, types::STANDING_PRIVILEGE);
    if findings.is_empty() {
        set(
            &mut status,
            types::STANDING_PRIVILEGE,
            false,
            "None",
            "the base ServiceAccount holds no standing RBAC".into(),
        );
    } else {
        let list = findings.iter().map(|f| f.to_string()).collect::<Vec<_>>().join("; ");
        set(
            &mut status,
            types::STANDING_PRIVILEGE,
            true,
            "BindingsFound",
            format!("the base ServiceAccount holds standing RBAC: {list}"),
        );
        if !was_flagged {
            tracing::warn!(agent = %name, namespace = %ns, findings = %list, "standing privilege found");
            publish(&ctx, &agent, "StandingPrivilege", format!("standing RBAC found: {list}")).await;
        }
    }
    let ready = !suspended && !expired;
    set(
        &mut status,
        types::READY,
        ready,
        if ready {
            "Active"
        } else if suspended {
            "Suspended"
        } else {
            "Expired"
        },
        if ready { "may request access".into() } else { "may not request access".into() },
    );
    status.observed_generation = generation;

    if agent.status.as_ref() != Some(&status) {
        write_status(&ctx, &agent, &status).await?;
    }
    // Re-check at expiry, and now and then for bindings made elsewhere.
    let next = match &agent.spec.expires_at {
        Some(t) if t.0 > now => {
            Duration::try_from(t.0.duration_since(now)).unwrap_or_default().min(Duration::from_secs(300))
        }
        _ => Duration::from_secs(300),
    };
    Ok(Action::requeue(next))
}

async fn write_status(ctx: &Context, agent: &AgentIdentity, status: &AgentIdentityStatus) -> Result<()> {
    let api: Api<AgentIdentity> = Api::namespaced(ctx.client.clone(), &agent.namespace().unwrap_or_default());
    let mut status = status.clone();
    // The RateLimited condition belongs to the rate guard's own field manager.
    status.conditions.retain(|c| c.type_ != types::RATE_LIMITED);
    let patch = json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "status": status});
    api.patch_status(&agent.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Field manager of the RateLimited condition, so the status reconciler
/// (which does not decide rate limits) never drops it.
const RATE_GUARD_MANAGER: &str = "kube-jit-rate-guard";

async fn publish(ctx: &Context, agent: &AgentIdentity, reason: &str, note: String) {
    if let Err(e) = ctx.events.publish(&agent.object_ref(&()), true, "Observe", reason, note).await {
        tracing::warn!(error = %e, "could not publish Event");
    }
}

/// Marks an identity that went over a policy's request cap (condition and
/// Event) and, where the policy says so, suspends it.
pub async fn flag_rate_limited(ctx: &Context, agent: &AgentIdentity, why: &str, suspend: bool) {
    let api: Api<AgentIdentity> = Api::namespaced(ctx.client.clone(), &agent.namespace().unwrap_or_default());
    let mut conditions = Vec::new();
    let (generation, now) = (agent.meta().generation, Timestamp::now());
    conditions::set(&mut conditions, types::RATE_LIMITED, true, "OverRequestCap", why.to_string(), generation, now);
    let patch =
        json!({"apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity", "status": {"conditions": conditions}});
    let params = PatchParams::apply(RATE_GUARD_MANAGER).force();
    if let Err(e) = api.patch_status(&agent.name_any(), &params, &Patch::Apply(&patch)).await {
        tracing::warn!(error = %e, agent = %agent.name_any(), "could not flag rate limit");
    }
    publish(ctx, agent, "RateLimited", why.to_string()).await;
    if suspend && !agent.spec.suspended {
        let patch = json!({"spec": {"suspended": true}});
        let params = PatchParams { field_manager: Some(RATE_GUARD_MANAGER.into()), ..PatchParams::default() };
        match api.patch(&agent.name_any(), &params, &Patch::Merge(&patch)).await {
            Ok(_) => publish(ctx, agent, "Suspended", format!("suspended automatically: {why}")).await,
            Err(e) => tracing::warn!(error = %e, agent = %agent.name_any(), "could not suspend"),
        }
    }
}
