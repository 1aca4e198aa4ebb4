//! Extending a live grant: answers each new entry of `spec.extensions` with
//! `policy::extension`, moves the expiry on the grant's objects first and in
//! status second (so the sweep never sees an object outliving what status
//! says), and records the answer, an Event and an audit line.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::context::Context;
use super::objects;
use super::transitions::{self, replan, write_status};
use crate::admission::Claims;
use crate::api::access_request::{AccessRequest, AccessRequestStatus, ExtensionOutcome};
use crate::audit::{self, AuditEvent, Details};
use crate::conditions::{self, reasons, types};
use crate::error::Result;
use crate::policy::extension::{self, Facts};

/// Whether `spec.extensions` holds entries not yet answered.
pub fn pending(request: &AccessRequest, status: &AccessRequestStatus) -> bool {
    request.spec.extensions.len() > status.extensions.len()
}

/// Answers every unanswered extension of a live grant expiring at `expires_at`.
pub async fn extend(
    request: &AccessRequest,
    ctx: &Context,
    mut status: AccessRequestStatus,
    expires_at: Timestamp,
) -> Result<Action> {
    let policies = ctx.stores.policies.state();
    let policy_name = status.policy.clone().unwrap_or_default();
    let policy = policies.iter().find(|p| p.name_any() == policy_name);
    let parent_expires_at =
        if status.delegation_chain.len() > 1 { super::delegation::parent_expiry(ctx, &status) } else { None };
    let grant = status.grant.clone().unwrap_or_default();
    let granted_at = status
        .delegation_chain
        .last()
        .and_then(|h| h.delegated_at.as_ref())
        .or(grant.started_at.as_ref())
        .map_or(expires_at, |t| t.0);

    // Appended while admission was not in force, an extension may come from
    // anyone who can patch the request: it is refused, not decided on. While
    // admission is missing, at once (its author cannot be known later either:
    // the managedFields time read below is written by clients too);
    // otherwise when its field was last written before the cut-off.
    let unproven = match ctx.admission_ready() {
        Err(why) => Some(format!("kube-jit's admission policies are not in force ({why}), so its author is unproven")),
        Ok(()) => {
            let written_at = extensions_written_at(ctx, request).await?;
            (!ctx.admitted(Claims::Requester, written_at)).then(|| {
                format!(
                    "it was written at {}, before {} was last installed or changed (+{}s), so its author is unproven",
                    written_at.map_or("an unknown time".to_string(), |t| t.to_string()),
                    Claims::Requester.policy(),
                    crate::admission::ADMISSION_SETTLE.as_secs()
                )
            })
        }
    };
    let mut new_expiry = expires_at;
    let mut granted_before = status.extensions.iter().filter(|e| e.granted).count();
    let now = Timestamp::now();
    let mut answers = Vec::new();
    for by in &request.spec.extensions[status.extensions.len()..] {
        let facts = Facts {
            policy: policy.map(|p| (policy_name.as_str(), &p.spec)),
            granted_at,
            expires_at: new_expiry,
            granted_before,
            parent_expires_at,
            now,
        };
        let decision = match &unproven {
            Some(why) => Err(why.clone()),
            None => extension::decide(by, &facts),
        };
        let (granted, message) = match decision {
            Ok(t) => {
                new_expiry = t;
                granted_before += 1;
                (true, format!("extended by {by}: the grant now ends at {t}"))
            }
            Err(why) => (false, format!("extension by {by} refused: {why}; the grant still ends at {new_expiry}")),
        };
        answers.push(ExtensionOutcome {
            by: by.clone(),
            granted,
            message,
            decided_at: Some(Time(now)),
            expires_at: Some(Time(new_expiry)),
        });
    }

    if new_expiry != expires_at {
        // Objects first: an object annotated with the old expiry would be
        // swept as an orphan once that passes.
        let plan = replan(ctx, request, new_expiry)?;
        let secret = objects::make(&ctx.client, &plan).await?;
        if let Some(secret) = secret {
            let remaining = new_expiry.duration_since(Timestamp::now()).as_secs();
            objects::mint_into_secret(&ctx.client, &plan, &secret, remaining).await?;
        }
        if let Some(g) = status.grant.as_mut() {
            g.expires_at = Some(Time(new_expiry));
        }
    }
    let last = answers.last().cloned().expect("called only with pending extensions");
    let reason = if last.granted { reasons::EXTENDED } else { reasons::EXTENSION_REFUSED };
    let generation = request.meta().generation;
    conditions::set(
        &mut status.conditions,
        types::EXTENDED,
        last.granted,
        reason,
        last.message.clone(),
        generation,
        now,
    );
    status.extensions.extend(answers.iter().cloned());
    let written = write_status(ctx, request, &status).await?;
    for answer in &answers {
        let (event, reason) = if answer.granted {
            (AuditEvent::Extended, reasons::EXTENDED)
        } else {
            (AuditEvent::ExtensionRefused, reasons::EXTENSION_REFUSED)
        };
        let details = Details {
            policy: status.policy.as_deref(),
            reason: Some(reason),
            message: Some(&answer.message),
            expires_at: answer.expires_at.as_ref().map(|t| t.0.to_string()),
            ..Details::default()
        };
        audit::record(event, &written, details);
        ctx.event(&written, !answer.granted, reason, answer.message.clone()).await;
    }
    Ok(transitions::until(new_expiry))
}

/// When `spec.extensions` was last written, from the request's managedFields
/// (read fresh: the cache drops them). `None` if no entry owns it.
async fn extensions_written_at(ctx: &Context, request: &AccessRequest) -> Result<Option<Timestamp>> {
    let api: kube::Api<AccessRequest> =
        kube::Api::namespaced(ctx.client.clone(), &request.namespace().unwrap_or_default());
    let fresh = api.get(&request.name_any()).await?;
    Ok(fresh
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|f| {
            f.fields_v1.as_ref().is_some_and(|v| v.0.get("f:spec").and_then(|s| s.get("f:extensions")).is_some())
        })
        .filter_map(|f| f.time.as_ref().map(|t| t.0))
        .max())
}
