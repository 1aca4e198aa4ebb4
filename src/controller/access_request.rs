//! Reconciles one AccessRequest: decide (policy, approvals), make the grant,
//! schedule its revocation for the second it expires, and revoke it on
//! expiry, on demand, on deletion, or when anything it stands on goes away.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::Context;
use super::objects;
use crate::api::access_request::{AccessRequest, AccessRequestStatus, GrantStatus, Phase};
use crate::audit::{self, AuditEvent, Details};
use crate::conditions::{self, reasons, types};
use crate::error::{Error, Result};
use crate::grant::{self, Plan};
use crate::names::{self, FINALIZER};
use crate::policy::{self, approval};

pub async fn reconcile(request: Arc<AccessRequest>, ctx: Arc<Context>) -> Result<Action> {
    let ns = request.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, request, |event| async {
        match event {
            Finalizer::Apply(r) => apply(&r, &ctx).await,
            Finalizer::Cleanup(r) => cleanup(&r, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Deletion revokes everything before the request goes.
async fn cleanup(request: &AccessRequest, ctx: &Context) -> Result<Action> {
    let phase = request.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if !phase.is_terminal() || needs_revocation(request) {
        end(request, ctx, Phase::Revoked, reasons::REQUEST_DELETED, "the AccessRequest was deleted".into()).await?;
    }
    Ok(Action::await_change())
}

/// A terminal request whose grant objects may still exist (a crash between
/// deleting and recording).
fn needs_revocation(request: &AccessRequest) -> bool {
    request.status.as_ref().and_then(|s| s.grant.as_ref()).is_some_and(|g| g.revoked_at.is_none())
}

async fn apply(request: &AccessRequest, ctx: &Context) -> Result<Action> {
    let status = request.status.clone().unwrap_or_default();
    if status.phase.is_terminal() {
        if needs_revocation(request) {
            end(request, ctx, status.phase, reasons::GRANT_FAILED, "revocation resumed after an interruption".into())
                .await?;
        }
        return Ok(Action::await_change());
    }
    if request.status.is_none() {
        audit::record(AuditEvent::Requested, request, Details::default());
    }
    match status.grant.clone() {
        Some(grant) => live(request, ctx, status, grant).await,
        None => decide(request, ctx, status).await,
    }
}

/// A request without a grant yet: policy, approvals, then make the grant.
async fn decide(request: &AccessRequest, ctx: &Context, mut status: AccessRequestStatus) -> Result<Action> {
    if request.spec.revoke {
        return end(request, ctx, Phase::Revoked, reasons::REVOKE_REQUESTED, "revoked before it was granted".into())
            .await;
    }
    if let Err(why) = ctx.admission_ready() {
        // Fail closed: without these, the requester field could be spoofed.
        let now = Timestamp::now();
        let generation = request.meta().generation;
        conditions::set(
            &mut status.conditions,
            types::APPROVED,
            false,
            reasons::ADMISSION_POLICIES_MISSING,
            why.clone(),
            generation,
            now,
        );
        status.phase = Phase::Pending;
        if request.status.as_ref() != Some(&status) {
            tracing::warn!(request = %request.name_any(), why, "not granting: admission policies missing");
            write_status(ctx, request, &status).await?;
            ctx.event(request, true, reasons::ADMISSION_POLICIES_MISSING, why).await;
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let agent = ctx.agent_of(request);
    let facts = ctx.facts_for(request, agent.as_deref());
    let policies = ctx.policies.state();
    let policy_refs: Vec<_> = policies.iter().map(|p| p.as_ref()).collect();
    let evaluation = policy::evaluate(&request.namespace().unwrap_or_default(), &request.spec, &policy_refs, &facts);
    status.policy_evaluations = evaluation.verdicts.clone();
    let Some(allowed) = evaluation.allowed.clone() else {
        let reason = if evaluation.invalid.is_some() { reasons::INVALID_REQUEST } else { reasons::NO_POLICY_ALLOWS };
        return deny(request, ctx, status, reason, evaluation.denial_summary()).await;
    };
    status.policy = Some(allowed.policy.clone());

    if allowed.approvals_required > 0 {
        let policy = policies.iter().find(|p| p.name_any() == allowed.policy).expect("allowed policy is cached");
        let count = count_approvals(request, ctx, &policy.spec.approval.approvers, allowed.approvals_required);
        status.approvals = Some(count.tally.clone());
        if let Some(by) = &count.tally.denied_by {
            return deny(request, ctx, status, reasons::DENIED_BY_APPROVER, format!("denied by {by}")).await;
        }
        if !count.satisfied() {
            let message = format!(
                "{}/{} approvals under policy {}",
                count.tally.approved_by.len(),
                allowed.approvals_required,
                allowed.policy
            );
            let now = Timestamp::now();
            conditions::set(
                &mut status.conditions,
                types::APPROVED,
                false,
                reasons::AWAITING_APPROVAL,
                message,
                request.meta().generation,
                now,
            );
            status.phase = Phase::Pending;
            if request.status.as_ref() != Some(&status) {
                write_status(ctx, request, &status).await?;
                ctx.event(request, false, reasons::AWAITING_APPROVAL, message_of(&status, types::APPROVED)).await;
            }
            return Ok(Action::await_change());
        }
    }

    // Approved: record the grant (id and expiry) before making anything, so a
    // crash from here on always leaves a known expiry behind.
    let now = Timestamp::now();
    let expires_at = now + jiff::SignedDuration::try_from(allowed.duration).unwrap_or(jiff::SignedDuration::ZERO);
    let plan = plan_of(request, expires_at)?;
    let message = match &status.approvals {
        Some(t) => format!("approved by {} under policy {}", t.approved_by.join(", "), allowed.policy),
        None => format!("allowed by policy {} without approval", allowed.policy),
    };
    let reason = if status.approvals.is_some() { reasons::APPROVALS_MET } else { reasons::POLICY_ALLOWS };
    conditions::set(
        &mut status.conditions,
        types::APPROVED,
        true,
        reason,
        message.clone(),
        request.meta().generation,
        now,
    );
    status.phase = Phase::Approved;
    status.grant = Some(GrantStatus {
        id: plan.grant_id.clone(),
        expires_at: Some(Time(expires_at)),
        service_account: Some(plan.holder.clone()),
        username: Some(names::service_account_username(&plan.holder.namespace, &plan.holder.name)),
        objects: plan.objects.iter().map(|o| o.object_ref()).collect(),
        ..GrantStatus::default()
    });
    let written = write_status(ctx, request, &status).await?;
    ctx.event(request, false, reason, message.clone()).await;
    audit::record(
        AuditEvent::Approved,
        request,
        Details {
            grant_id: Some(&plan.grant_id),
            policy: Some(&allowed.policy),
            reason: Some(reason),
            message: Some(&message),
            ..Details::default()
        },
    );
    make_grant(&written, ctx, status, plan, expires_at).await
}

/// Makes the objects and marks the request Granted; schedules expiry.
async fn make_grant(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    plan: Plan,
    expires_at: Timestamp,
) -> Result<Action> {
    let made = async {
        let secret = objects::make(&ctx.client, &plan).await?;
        let remaining = expires_at.duration_since(Timestamp::now()).as_secs();
        match secret {
            Some(secret) => objects::fill_token_secret(&ctx.client, &plan, &secret, remaining).await,
            None => Ok(false),
        }
    };
    let token_issued = match made.await {
        Ok(issued) => issued,
        Err(e) => {
            // Fail closed: take down whatever was made, and say why.
            tracing::warn!(error = %e, request = %request.name_any(), "making the grant failed; revoking");
            let why = format!("could not make the grant: {e}");
            return end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, why).await;
        }
    };
    if token_issued {
        audit::record(
            AuditEvent::TokenIssued,
            request,
            Details {
                grant_id: Some(&plan.grant_id),
                identity: Some(plan.holder.name.clone()),
                expires_at: Some(expires_at.to_string()),
                ..Details::default()
            },
        );
    }
    let now = Timestamp::now();
    let message = format!(
        "{} holds the rights until {expires_at}",
        names::service_account_username(&plan.holder.namespace, &plan.holder.name)
    );
    conditions::set(
        &mut status.conditions,
        types::GRANTED,
        true,
        reasons::GRANTED,
        message.clone(),
        request.meta().generation,
        now,
    );
    status.phase = Phase::Granted;
    if let Some(g) = status.grant.as_mut() {
        g.started_at = Some(Time(now));
    }
    write_status(ctx, request, &status).await?;
    audit::record(
        AuditEvent::Granted,
        request,
        Details {
            grant_id: Some(&plan.grant_id),
            policy: status.policy.as_deref(),
            expires_at: Some(expires_at.to_string()),
            identity: Some(names::service_account_username(&plan.holder.namespace, &plan.holder.name)),
            ..Details::default()
        },
    );
    ctx.event(request, false, reasons::GRANTED, message).await;
    Ok(until(expires_at))
}

/// A request with a grant: keep it while everything holds, end it otherwise.
async fn live(
    request: &AccessRequest,
    ctx: &Context,
    status: AccessRequestStatus,
    grant: GrantStatus,
) -> Result<Action> {
    let Some(expires_at) = grant.expires_at.as_ref().map(|t| t.0) else {
        return end(request, ctx, Phase::Failed, reasons::GRANT_FAILED, "the grant has no expiry".into()).await;
    };
    if Timestamp::now() >= expires_at {
        return end(request, ctx, Phase::Expired, reasons::EXPIRED, format!("expired at {expires_at}")).await;
    }
    if request.spec.revoke {
        return end(request, ctx, Phase::Revoked, reasons::REVOKE_REQUESTED, "revoked on request".into()).await;
    }
    // The grant must stay allowed by a current policy, and undenied.
    let agent = ctx.agent_of(request);
    let facts = ctx.facts_for(request, agent.as_deref());
    let policies = ctx.policies.state();
    let refs: Vec<_> = policies.iter().map(|p| p.as_ref()).collect();
    let evaluation = policy::evaluate(&request.namespace().unwrap_or_default(), &request.spec, &refs, &facts);
    let still_allowed = evaluation.verdicts.iter().any(|v| v.allowed && Some(&v.policy) == status.policy.as_ref());
    if !still_allowed {
        let why = format!(
            "policy {} no longer allows it: {}",
            status.policy.as_deref().unwrap_or("?"),
            evaluation.denial_summary()
        );
        return end(request, ctx, Phase::Revoked, reasons::POLICY_WITHDRAWN, why).await;
    }
    if let Some(policy) = policies.iter().find(|p| Some(p.name_any()) == status.policy)
        && policy.spec.approval.mode == crate::api::access_policy::ApprovalMode::Manual
    {
        let count = count_approvals(request, ctx, &policy.spec.approval.approvers, policy.spec.approval.required);
        if let Some(by) = count.tally.denied_by {
            return end(
                request,
                ctx,
                Phase::Revoked,
                reasons::DENIED_BY_APPROVER,
                format!("denied by {by} after it was granted"),
            )
            .await;
        }
    }

    let plan = plan_of(request, expires_at)?;
    if status.phase == Phase::Approved {
        // Interrupted between recording and making: finish making it.
        return make_grant(request, ctx, status, plan, expires_at).await;
    }
    for object in &plan.objects {
        if !objects::exists(&ctx.client, object).await? {
            let r = object.object_ref();
            let why = format!(
                "{} {}/{} of the grant was deleted; the grant is revoked rather than restored",
                r.kind, r.namespace, r.name
            );
            return end(request, ctx, Phase::Revoked, reasons::MANAGED_OBJECT_DELETED, why).await;
        }
    }
    Ok(until(expires_at))
}

/// Ends a request: revokes whatever it holds (bindings, identity, roles, in
/// that order), then records the terminal phase.
pub async fn end(
    request: &AccessRequest,
    ctx: &Context,
    phase: Phase,
    reason: &str,
    message: String,
) -> Result<Action> {
    let mut status = request.status.clone().unwrap_or_default();
    let now = Timestamp::now();
    if let Some(grant) = status.grant.as_mut() {
        let expires_at = grant.expires_at.as_ref().map(|t| t.0).unwrap_or(now);
        let plan = plan_of(request, expires_at)?;
        objects::delete(&ctx.client, &plan).await?;
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
    write_status(ctx, request, &status).await?;
    if first_time {
        let event = match phase {
            Phase::Expired => AuditEvent::Expired,
            Phase::Denied => AuditEvent::Denied,
            _ => AuditEvent::Revoked,
        };
        let grant_id = status.grant.as_ref().map(|g| g.id.clone());
        audit::record(
            event,
            request,
            Details {
                grant_id: grant_id.as_deref(),
                policy: status.policy.as_deref(),
                reason: Some(reason),
                message: Some(&message),
                ..Details::default()
            },
        );
        ctx.event(request, phase != Phase::Expired, reason, message).await;
    }
    Ok(Action::await_change())
}

async fn deny(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    reason: &str,
    message: String,
) -> Result<Action> {
    let now = Timestamp::now();
    conditions::set(
        &mut status.conditions,
        types::APPROVED,
        false,
        reason,
        message.clone(),
        request.meta().generation,
        now,
    );
    let mut with_decision = request.clone();
    with_decision.status = Some(status);
    end(&with_decision, ctx, Phase::Denied, reason, message).await
}

fn count_approvals(
    request: &AccessRequest,
    ctx: &Context,
    approvers: &crate::api::access_policy::Approvers,
    required: i32,
) -> approval::Count {
    let ns = request.namespace();
    let name = request.name_any();
    let mut approvals: Vec<_> = ctx
        .approvals
        .state()
        .into_iter()
        .filter(|a| a.namespace() == ns && a.spec.request == name)
        // Approvals made before the request existed belong to an earlier request of that name.
        .filter(|a| a.creation_timestamp() >= request.creation_timestamp())
        .collect();
    approvals.sort_by_key(|a| (a.creation_timestamp().map(|t| t.0), a.name_any()));
    approval::count(approvals.iter().map(|a| &a.spec), &request.spec.requester.user, approvers, required)
}

fn message_of(status: &AccessRequestStatus, type_: &str) -> String {
    status.conditions.iter().find(|c| c.type_ == type_).map(|c| c.message.clone()).unwrap_or_default()
}

fn plan_of(request: &AccessRequest, expires_at: Timestamp) -> Result<Plan> {
    Ok(grant::plan(request, &expires_at.to_string())?)
}

/// Requeue at the instant of expiry: a timer, not a poll.
fn until(expires_at: Timestamp) -> Action {
    let wait = expires_at.duration_since(Timestamp::now()).as_millis().max(0) as u64;
    Action::requeue(Duration::from_millis(wait))
}

/// Writes the status with server-side apply under kube-jit's field manager,
/// conditional on the resourceVersion the decision was made on, so a decision
/// taken on a stale cache is retried rather than written.
async fn write_status(ctx: &Context, request: &AccessRequest, status: &AccessRequestStatus) -> Result<AccessRequest> {
    let api: Api<AccessRequest> = Api::namespaced(ctx.client.clone(), &request.namespace().unwrap_or_default());
    let mut status = status.clone();
    status.observed_generation = request.meta().generation;
    let patch = json!({
        "apiVersion": "kubejit.io/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"resourceVersion": request.resource_version()},
        "status": status,
    });
    let written = api
        .patch_status(&request.name_any(), &PatchParams::apply(objects::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(written)
}
