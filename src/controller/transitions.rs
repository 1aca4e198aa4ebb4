//! The transitions of an AccessRequest that touch the cluster: approve and
//! make a grant, end it (revoking bindings, identity, roles — and every grant
//! delegated from it), and the status writes that record each step.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::{AuditLine, Context};
use super::objects;
use crate::api::access_request::{
    AccessRequest, AccessRequestStatus, DelegationHop, GrantStatus, Phase, WorkloadAttestation,
};
use crate::audit::{self, AuditEvent, Details};
use crate::conditions::{self, reasons, types};
use crate::error::Result;
use crate::grant::{self, Holders, Part, Plan};
use crate::names;
use crate::policy::delegation;

/// What was decided for a request about to be granted.
pub struct Approval {
    pub policy: String,
    pub duration: std::time::Duration,
    pub reason: &'static str,
    pub message: String,
    /// The chain above this request (empty when nobody delegated it).
    pub chain_above: Vec<DelegationHop>,
    /// The Pod the request was made from, verified: the grant is bound to it.
    pub workload: Option<WorkloadAttestation>,
}

/// Records the approval — grant id, expiry, objects, chain — *before* making
/// anything, so a crash from here on always leaves a known expiry behind; then
/// makes the grant.
pub async fn approve(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    approval: Approval,
) -> Result<Action> {
    let now = Timestamp::now();
    let expires_at = now + jiff::SignedDuration::try_from(approval.duration).unwrap_or(jiff::SignedDuration::ZERO);
    // Status shows whole seconds: revoke at the instant it shows, never later
    // (rounding down shortens a grant by under a second).
    let expires_at = Timestamp::from_second(expires_at.as_second()).unwrap_or(expires_at);
    let ns = request.namespace().unwrap_or_default();
    let id = names::grant_id(&ns, &request.name_any(), &request.uid().unwrap_or_default());
    let mut chain = approval.chain_above;
    chain.push(DelegationHop {
        delegator: request.spec.requester.user.clone(),
        delegatee: match &request.spec.for_agent {
            Some(agent) => delegation::agent_label(&ns, agent),
            None => request.spec.requester.user.clone(),
        },
        scope: delegation::scope_of(&request.spec),
        purpose: crate::audit::plain_text(request.spec.purpose.as_deref().unwrap_or_default()),
        delegated_at: Some(Time(now)),
        grant_id: id,
        workload: approval.workload.clone(),
    });
    let pod_uid = approval.workload.as_ref().map(|w| w.pod_uid.as_str());
    let plan = plan_for(ctx, request, &approval.policy, &chain, expires_at, &ctx.grants_namespace, pod_uid)?;
    // The rules of the roles it binds, as decided: every one must exist now,
    // or a role made later (any rules) would be bound unrecorded.
    let (roles, missing) = objects::granted_roles(&ctx.client, &ctx.stores.cluster_roles, &request.spec).await?;
    if !missing.is_empty() {
        let why = format!("{} does not exist; nothing was granted", missing.join(", "));
        return end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, why).await;
    }
    let generation = request.meta().generation;
    conditions::set(
        &mut status.conditions,
        types::APPROVED,
        true,
        approval.reason,
        approval.message.clone(),
        generation,
        now,
    );
    status.phase = Phase::Approved;
    status.policy = Some(approval.policy.clone());
    status.delegation_chain = chain;
    status.workload = approval.workload.clone();
    let token_bound_to = plan.token_bound_to.as_ref().map(|name| crate::api::ObjectRef {
        kind: "Secret".into(),
        namespace: plan.holder.namespace.clone(),
        name: name.clone(),
    });
    status.grant = Some(GrantStatus {
        id: plan.grant_id.clone(),
        expires_at: Some(Time(expires_at)),
        service_account: Some(plan.holder.clone()),
        username: Some(names::service_account_username(&plan.holder.namespace, &plan.holder.name)),
        objects: plan.objects.iter().map(|o| o.object_ref()).collect(),
        roles,
        token_bound_to,
        ..GrantStatus::default()
    });
    // The record first, objects and expiry included: whatever happens from
    // here on (a crash, a revocation racing this reconcile, a failed write),
    // revocation and the sweep know every object to take down. Made before
    // their record, a requester's own ServiceAccount's bindings (already
    // usable) could be left behind by a write that then failed.
    let written = write_status(ctx, request, &status).await?;
    let details = Details {
        policy: Some(&approval.policy),
        reason: Some(approval.reason),
        message: Some(&approval.message),
        ..Details::default()
    };
    audit::record(AuditEvent::Approved, &written, details);
    make_checked(&written, ctx, status, plan, expires_at).await
}

/// The plan of a request: who may mint tokens (the agent's base ServiceAccount
/// for requests made for an agent), whether the grant may delegate (its policy
/// says so), and the chain recorded on the grant identity.
fn plan_for(
    ctx: &Context,
    request: &AccessRequest,
    policy: &str,
    chain: &[DelegationHop],
    expires_at: Timestamp,
    grants_namespace: &str,
    workload_pod_uid: Option<&str>,
) -> Result<Plan> {
    let ns = request.namespace().unwrap_or_default();
    let policy = ctx.stores.policies.state().into_iter().find(|p| p.name_any() == policy);
    let holders = Holders {
        grants_namespace: grants_namespace.to_string(),
        token_minter: ctx.agent_of(request).map(|a| names::service_account_username(&ns, &a.spec.service_account_name)),
        may_delegate: policy.is_some_and(|p| p.spec.delegation.allowed),
        chain_json: Some(serde_json::to_string(chain)?),
        token_audiences: ctx.token_audiences.clone(),
        workload_pod_uid: workload_pod_uid.map(str::to_string),
    };
    Ok(grant::plan::plan_with(request, &expires_at.to_string(), &holders)?)
}

/// The plan of a request already approved (to finish making it after an
/// interruption), where its grant identity was recorded: a grant made before
/// `--grants-namespace` changed (or before grant identities had a namespace
/// of their own) keeps its identity where it is.
pub fn replan(ctx: &Context, request: &AccessRequest, expires_at: Timestamp) -> Result<Plan> {
    let status = request.status.clone().unwrap_or_default();
    let recorded = status.grant.as_ref().and_then(|g| g.service_account.as_ref()).map(|sa| sa.namespace.clone());
    let grants_namespace = match request.spec.delivery.mode {
        crate::api::access_request::DeliveryMode::EphemeralServiceAccount => recorded,
        crate::api::access_request::DeliveryMode::RequesterServiceAccount => None,
    }
    .unwrap_or_else(|| ctx.grants_namespace.clone());
    let (policy, chain) = (status.policy.as_deref().unwrap_or(""), &status.delegation_chain);
    let pod_uid = status.workload.as_ref().map(|w| w.pod_uid.as_str());
    plan_for(ctx, request, policy, chain, expires_at, &grants_namespace, pod_uid)
}

/// How long making a grant may keep failing (from its approval) before the
/// operator gives up: everything made is removed and the request ends
/// `Failed` with the API server's last message.
pub const MAKE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// Makes a recorded grant in two parts with the `Granted` record between
/// them: the rights (identity, bindings: unusable, as nobody can mint a token
/// yet; the token Role, unbound, gives nothing either), then `Granted` and its
/// audit line, then what makes it usable (the requester's right to mint, the
/// token Secret). Schedules expiry.
pub async fn make(
    request: &AccessRequest,
    ctx: &Context,
    status: AccessRequestStatus,
    plan: Plan,
    expires_at: Timestamp,
) -> Result<Action> {
    // Resuming an approval recorded earlier: its roles must still exist.
    let (_, missing) = objects::granted_roles(&ctx.client, &ctx.stores.cluster_roles, &request.spec).await?;
    if !missing.is_empty() {
        let why = format!("{} does not exist; nothing was granted", missing.join(", "));
        return end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, why).await;
    }
    make_checked(request, ctx, status, plan, expires_at).await
}

/// [`make`], the roles it binds just checked.
async fn make_checked(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    plan: Plan,
    expires_at: Timestamp,
) -> Result<Action> {
    if plan.holder.namespace == ctx.grants_namespace
        && let Err(why) = ctx.grants_namespace_ready()
    {
        return end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, format!("{why}; nothing was granted")).await;
    }
    if let Err(e) = objects::make_part(&ctx.client, &plan, Part::Access).await {
        return making_failed(request, ctx, e).await;
    }
    let identity = names::service_account_username(&plan.holder.namespace, &plan.holder.name);
    let now = Timestamp::now();
    let message = format!("{identity} holds the rights until {expires_at}");
    let generation = request.meta().generation;
    conditions::set(&mut status.conditions, types::GRANTED, true, reasons::GRANTED, message.clone(), generation, now);
    status.phase = Phase::Granted;
    if let Some(g) = status.grant.as_mut() {
        g.started_at = Some(Time(now));
    }
    let line = AuditLine {
        expires_at: Some(expires_at.to_string()),
        identity: Some(identity),
        ..AuditLine::of(AuditEvent::Granted, request, &status)
    };
    let written = match write_status(ctx, request, &status).await {
        Ok(written) => written,
        Err(e) => {
            ctx.hold_line(&e, request, line);
            return Err(e);
        }
    };
    line.record();
    crate::metrics::global().granted(request, now);
    make_usable(&written, ctx, &plan, expires_at).await
}

/// Makes a recorded grant usable: the requester's right to mint tokens for
/// the grant identity, and the token Secret filled by the operator. Run after
/// `Granted` is written, and again by the live check while any of it is missing.
pub async fn make_usable(request: &AccessRequest, ctx: &Context, plan: &Plan, expires_at: Timestamp) -> Result<Action> {
    let issued = async {
        let secret = objects::make_part(&ctx.client, plan, Part::Usable).await?;
        let remaining = expires_at.duration_since(Timestamp::now()).as_secs();
        match secret {
            Some(secret) => objects::fill_token_secret(&ctx.client, plan, &secret, remaining).await,
            None => Ok(false),
        }
    };
    match issued.await {
        Ok(true) => {
            let details = Details {
                identity: Some(names::service_account_username(&plan.holder.namespace, &plan.holder.name)),
                expires_at: Some(expires_at.to_string()),
                ..Details::default()
            };
            audit::record(AuditEvent::TokenIssued, request, details);
        }
        Ok(false) => {}
        Err(e) => return making_failed(request, ctx, e).await,
    }
    Ok(until(expires_at))
}

/// A step of making failed. A transient error (the API server or etcd briefly
/// unavailable or throttling, a webhook failing) is retried with the
/// controller's backoff until [`MAKE_DEADLINE`] after the approval; any other
/// error, or one past the deadline, takes down whatever was made and ends
/// the request `Failed` with the API server's message.
async fn making_failed(request: &AccessRequest, ctx: &Context, e: crate::error::Error) -> Result<Action> {
    let status = request.status.clone().unwrap_or_default();
    let approved_at = status.conditions.iter().find(|c| c.type_ == types::APPROVED).map(|c| c.last_transition_time.0);
    let deadline = jiff::SignedDuration::try_from(MAKE_DEADLINE).unwrap_or_default();
    let within = approved_at.is_some_and(|t| Timestamp::now() < t + deadline);
    if e.is_transient() && within {
        tracing::warn!(error = %e, request = %request.name_any(), "making the grant hit a transient error; retrying");
        return Err(e);
    }
    tracing::warn!(error = %e, request = %request.name_any(), "making the grant failed; revoking");
    let why = if e.is_transient() {
        format!("could not make the grant within {}s: {}", MAKE_DEADLINE.as_secs(), e.user_message())
    } else {
        format!("could not make the grant: {}", e.user_message())
    };
    end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, why).await
}

/// Ends a request (see [`end_one`]) and every grant delegated from it.
pub async fn end(
    request: &AccessRequest,
    ctx: &Context,
    phase: Phase,
    reason: &str,
    message: String,
) -> Result<Action> {
    let action = end_one(request, ctx, phase, reason, message).await?;
    if let Some(grant) = request.status.as_ref().and_then(|s| s.grant.as_ref()) {
        super::delegation::end_descendants(ctx, &grant.id, &request.name_any()).await;
    }
    Ok(action)
}

/// Ends one request: revokes whatever it holds (bindings, identity, roles, in
/// that order), then records the terminal phase.
pub async fn end_one(
    request: &AccessRequest,
    ctx: &Context,
    phase: Phase,
    reason: &str,
    message: String,
) -> Result<Action> {
    ctx.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&request.uid().unwrap_or_default());
    let mut status = request.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if let Some(grant) = status.grant.as_mut() {
        objects::delete_refs(&ctx.client, &own_objects(request, &grant.objects)).await?;
        if grant.revoked_at.is_none() {
            grant.revoked_at = Some(Time(Timestamp::now()));
        }
    }
    let type_ = match phase {
        Phase::Expired => types::EXPIRED,
        Phase::Denied => types::DENIED,
        Phase::Failed => types::FAILED,
        _ => types::REVOKED,
    };
    let generation = request.meta().generation;
    if conditions::is_true(&status.conditions, types::GRANTED) {
        conditions::set(&mut status.conditions, types::GRANTED, false, reason, message.clone(), generation, now);
    }
    conditions::set(&mut status.conditions, type_, true, reason, message.clone(), generation, now);
    status.phase = phase;
    let first_time = request.status.as_ref().map(|s| s.phase) != Some(phase);
    let event = match phase {
        Phase::Expired => AuditEvent::Expired,
        Phase::Denied => AuditEvent::Denied,
        _ => AuditEvent::Revoked,
    };
    let line = AuditLine {
        reason: Some(reason.to_string()),
        message: Some(message.clone()),
        ..AuditLine::of(event, request, &status)
    };
    if let Err(e) = write_status(ctx, request, &status).await {
        if first_time {
            ctx.hold_line(&e, request, line);
        }
        return Err(e);
    }
    if first_time {
        line.record();
        crate::metrics::global().ended(phase, reason, status.grant.as_ref());
        if needs_attention(phase, reason) {
            ctx.event(request, true, reason, message).await;
        }
    }
    Ok(Action::await_change())
}

/// Whether an ending is one a person should look at, and so gets a Warning
/// Event: a denial, a failure, a grant taken away. An expiry, or a revocation
/// its requester asked for (by `spec.revoke` or by deleting the request), is
/// the lifecycle working as meant: recorded in the status conditions and the
/// audit log, with no Event (one request fewer per lifecycle).
pub fn needs_attention(phase: Phase, reason: &str) -> bool {
    match phase {
        Phase::Expired => false,
        Phase::Revoked => reason != reasons::REVOKE_REQUESTED && reason != reasons::REQUEST_DELETED,
        _ => true,
    }
}

/// Ends a request that was never granted, recording why on `Approved`.
pub async fn deny(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    reason: &str,
    message: String,
) -> Result<Action> {
    let now = Timestamp::now();
    let generation = request.meta().generation;
    conditions::set(&mut status.conditions, types::APPROVED, false, reason, message.clone(), generation, now);
    let mut with_decision = request.clone();
    with_decision.status = Some(status);
    end(&with_decision, ctx, Phase::Denied, reason, message).await
}

/// Requeue at the instant of expiry: a timer, not a poll.
pub fn until(expires_at: Timestamp) -> Action {
    let wait = expires_at.duration_since(Timestamp::now()).as_millis().max(0) as u64;
    Action::requeue(std::time::Duration::from_millis(wait))
}

/// Writes the status (an update of the status subresource), conditional on
/// the resourceVersion the decision was made on, so a decision taken on a
/// stale cache is refused (409) and retried rather than written. An update,
/// not a server-side apply: the API server does not merge field ownership,
/// which made status applies the costliest request of a grant.
pub async fn write_status(
    ctx: &Context,
    request: &AccessRequest,
    status: &AccessRequestStatus,
) -> Result<AccessRequest> {
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &request.namespace().unwrap_or_default());
    let mut status = status.clone();
    status.observed_generation = request.meta().generation;
    // Only the name, the resourceVersion (the precondition) and the status
    // count in a status update; the rest of the object is ignored.
    let mut body = AccessRequest::new(&request.name_any(), request.spec.clone());
    body.metadata.namespace = request.namespace();
    body.metadata.resource_version = request.resource_version();
    body.status = Some(status);
    let params = PostParams { field_manager: Some(objects::FIELD_MANAGER.into()), ..PostParams::default() };
    let written = api.replace_status(&request.name_any(), &params, &body).await?;
    ctx.wrote(&written);
    Ok(written)
}

/// The recorded objects `request`'s grant may consist of: named for the grant
/// id computed from the request itself (namespace, name, uid), never from
/// what its status says. Anything else recorded is logged and left alone:
/// revocation deletes nothing kube-jit did not name.
pub fn own_objects(request: &AccessRequest, recorded: &[crate::api::ObjectRef]) -> Vec<crate::api::ObjectRef> {
    let id = names::grant_id(
        &request.namespace().unwrap_or_default(),
        &request.name_any(),
        &request.uid().unwrap_or_default(),
    );
    let (own, foreign): (Vec<_>, Vec<_>) =
        recorded.iter().cloned().partition(|o| names::is_object_of_grant(&o.name, &id));
    for o in &foreign {
        tracing::warn!(request = %request.name_any(), kind = %o.kind, namespace = %o.namespace, name = %o.name,
            "status records an object this grant never names; not deleted");
    }
    own
}
