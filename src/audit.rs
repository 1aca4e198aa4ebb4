//! The audit trail: one JSON line per lifecycle event of a grant, on its own
//! log target (`kube_jit::audit`) so it can be shipped to a SIEM apart from
//! operational logs.

use crate::api::access_request::AccessRequest;

/// The log target of audit lines.
pub const TARGET: &str = "kube_jit::audit";

/// Lifecycle events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditEvent {
    Requested,
    Approved,
    Denied,
    Granted,
    TokenIssued,
    Revoked,
    Expired,
    Extended,
    ExtensionRefused,
}

impl AuditEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::Requested => "requested",
            AuditEvent::Approved => "approved",
            AuditEvent::Denied => "denied",
            AuditEvent::Granted => "granted",
            AuditEvent::TokenIssued => "token-issued",
            AuditEvent::Revoked => "revoked",
            AuditEvent::Expired => "expired",
            AuditEvent::Extended => "extended",
            AuditEvent::ExtensionRefused => "extension-refused",
        }
    }
}

/// Extra facts of one audit line.
#[derive(Default)]
pub struct Details<'a> {
    pub grant_id: Option<&'a str>,
    pub policy: Option<&'a str>,
    pub expires_at: Option<String>,
    pub identity: Option<String>,
    pub reason: Option<&'a str>,
    pub message: Option<&'a str>,
}

/// Text safe to record anywhere (status, annotations, logs): every control or
/// invisible formatting character becomes U+FFFD. Admission already refuses
/// them in purposes; this keeps a record writable should one slip through.
pub fn plain_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            let invisible = matches!(c, '\u{AD}' | '\u{61C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{E0000}'..='\u{E007F}');
            if c.is_control() || invisible { '\u{FFFD}' } else { c }
        })
        .collect()
}

/// Writes one audit line: who, for whom, what, where, when, why, the grant
/// id, and the Pod it was asked from (with its node and image digests once attested).
pub fn record(event: AuditEvent, request: &AccessRequest, details: Details<'_>) {
    let spec = &request.spec;
    // The grant id is derived from the request, so even lines before the grant carry it.
    let derived = crate::names::grant_id(
        request.metadata.namespace.as_deref().unwrap_or(""),
        request.metadata.name.as_deref().unwrap_or(""),
        request.metadata.uid.as_deref().unwrap_or(""),
    );
    let what = match (&spec.role, &spec.rules) {
        (Some(role), _) => format!("{:?}/{}", role.kind, role.name),
        (None, Some(rules)) => serde_json::to_string(rules).unwrap_or_default(),
        (None, None) => String::new(),
    };
    // The delegation chain, root first: `delegator>delegatee[grant id]`.
    let chain = request
        .status
        .as_ref()
        .map(|s| {
            s.delegation_chain
                .iter()
                .map(|h| match &h.workload {
                    // `@pod-uid`: the hop was asked from that attested Pod.
                    Some(w) => format!("{}@{}>{}[{}]", h.delegator, w.pod_uid, h.delegatee, h.grant_id),
                    None => format!("{}>{}[{}]", h.delegator, h.delegatee, h.grant_id),
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default();
    let where_ = if spec.cluster_wide { "*".to_string() } else { spec.namespaces.join(",") };
    // The Pod it was asked from: as attested, else as admission recorded it (not yet verified).
    let attested = request.status.as_ref().and_then(|s| s.workload.as_ref());
    let claimed = spec.requester.pod.as_ref();
    let requester_ns = crate::names::parse_service_account_username(&spec.requester.user).map(|(ns, _)| ns);
    let pod = match (attested, claimed) {
        (Some(w), _) => format!("{}/{}", w.namespace, w.pod),
        (None, Some(p)) => format!("{}/{}", requester_ns.unwrap_or_default(), p.name),
        (None, None) => String::new(),
    };
    let pod_uid = attested.map(|w| w.pod_uid.as_str()).or(claimed.map(|p| p.uid.as_str())).unwrap_or_default();
    let node = attested.map(|w| w.node.as_str()).unwrap_or_default();
    let digests = attested
        .map(|w| w.images.iter().map(|i| format!("{}={}", i.container, i.digest)).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    tracing::info!(
        target: TARGET,
        event = event.as_str(),
        grant_id = details.grant_id.unwrap_or(&derived),
        request = format!(
            "{}/{}",
            request.metadata.namespace.as_deref().unwrap_or(""),
            request.metadata.name.as_deref().unwrap_or("")
        ),
        requester = spec.requester.user.as_str(),
        agent = spec.for_agent.as_deref().unwrap_or(""),
        what = what.as_str(),
        namespaces = where_.as_str(),
        purpose = plain_text(spec.purpose.as_deref().unwrap_or("")).as_str(),
        policy = details.policy.unwrap_or(""),
        expires_at = details.expires_at.as_deref().unwrap_or(""),
        identity = details.identity.as_deref().unwrap_or(""),
        reason = details.reason.unwrap_or(""),
        message = details.message.unwrap_or(""),
        chain = chain.as_str(),
        pod = pod.as_str(),
        pod_uid,
        pod_attested = attested.is_some(),
        node,
        image_digests = digests.as_str(),
        "audit"
    );
}
