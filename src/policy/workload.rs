//! Workload binding, free of I/O: whether a request made from a Pod may act
//! as an agent whose `spec.workload` pins the Pods allowed ([`attest`]), and
//! whether a live grant's Pod still is that Pod and still matches
//! ([`recheck`]). The caller gathers the live Pod (and its Node) and acts on
//! the verdict.
//!
//! The evidence is what the API server authenticated: a pod-bound token's
//! `authentication.kubernetes.io/pod-name` and `pod-uid`, recorded on the
//! request at admission (`spec.requester.pod`), checked against the live Pod
//! (uid, phase, ServiceAccount, labels, and the image digests its runtime
//! reported). SPIFFE's Kubernetes workload attestor reads the same facts.
//! Source: <https://kubernetes.io/docs/reference/access-authn-authz/service-accounts-admin/#bound-service-account-tokens>

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::evaluate::selector_matches;
use crate::api::access_request::{AccessRequestSpec, AttestedImage, RequesterPod, WorkloadAttestation};
use crate::api::agent_identity::{AgentIdentity, Workload};
use crate::conditions::reasons;
use crate::names;

/// Why a Pod may not act as the agent (or no longer may): a condition reason
/// (`WorkloadNotAttested`, `WorkloadMismatch`, `WorkloadGone`,
/// `WorkloadChanged`) and the facts, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

fn refuse(reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { reason, message: message.into() }
}

/// An agent whose `spec.workload` applies to a request: the one it names
/// (`spec.forAgent`), or one registered on the ServiceAccount that asks.
#[derive(Clone, Debug)]
pub struct Pinned<'a> {
    /// `namespace/name` of the AgentIdentity.
    pub agent: String,
    pub namespace: &'a str,
    pub service_account: &'a str,
    pub workload: &'a Workload,
    /// The trust domain of the agent's SPIFFE ID (its own, or the operator's).
    pub trust_domain: String,
}

/// The agents whose workload rules a request in `namespace` must meet, among
/// `agents`: every pinned AgentIdentity registered on the ServiceAccount the
/// request is for (that of the AgentIdentity it names, which mints its
/// tokens) or made by (asking for itself does not step around the pin). A
/// pin is on the ServiceAccount: another AgentIdentity registered on it
/// without a pin does not open a way around it.
pub fn pinned<'a>(
    namespace: &str,
    spec: &AccessRequestSpec,
    agents: &'a [std::sync::Arc<AgentIdentity>],
    trust_domain: &str,
) -> Vec<Pinned<'a>> {
    let requester = names::parse_service_account_username(&spec.requester.user);
    let named = spec.for_agent.as_deref().and_then(|name| {
        let agent = agents
            .iter()
            .find(|a| a.metadata.namespace.as_deref() == Some(namespace) && a.metadata.name.as_deref() == Some(name))?;
        Some((namespace, agent.spec.service_account_name.as_str()))
    });
    agents
        .iter()
        .filter_map(|a| {
            let ns = a.metadata.namespace.as_deref()?;
            let name = a.metadata.name.as_deref()?;
            let workload = a.spec.workload.as_ref()?;
            let account = Some((ns, a.spec.service_account_name.as_str()));
            (account == named || account == requester).then(|| Pinned {
                agent: format!("{ns}/{name}"),
                namespace: ns,
                service_account: &a.spec.service_account_name,
                workload,
                trust_domain: a.spec.spiffe_id.as_deref().and_then(trust_domain_of).unwrap_or(trust_domain).to_string(),
            })
        })
        .collect()
}

/// The trust domain of a SPIFFE ID (`spiffe://<trust-domain>/...`).
pub fn trust_domain_of(spiffe_id: &str) -> Option<&str> {
    let rest = spiffe_id.strip_prefix("spiffe://")?;
    let domain = rest.split('/').next()?;
    (!domain.is_empty()).then_some(domain)
}

/// The SPIFFE ID of a Kubernetes workload, in the form SPIRE and Istio use:
/// `spiffe://<trust-domain>/ns/<namespace>/sa/<serviceAccount>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// The `sha256:<hex>` digest in a container status' `imageID`: the runtime
/// reports `<repository>@sha256:<hex>` (a repository digest), a bare
/// `sha256:<hex>`, or either behind a scheme (`docker-pullable://`).
pub fn digest_of(image_id: &str) -> Option<&str> {
    let digest = image_id.rsplit('@').next()?;
    let digest = digest.rsplit("//").next()?;
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(digest)
}

/// Every container the Pod's spec names (init, app, ephemeral), with its
/// image, and the digest its status reports (None while it reports none).
fn containers(pod: &Pod) -> Vec<(String, String, Option<String>)> {
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let mut reported: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(s) = status {
        let all = [&s.init_container_statuses, &s.container_statuses, &s.ephemeral_container_statuses];
        for c in all.into_iter().flatten().flatten() {
            reported.insert(c.name.as_str(), c.image_id.as_str());
        }
    }
    let mut named: Vec<(String, String)> = Vec::new();
    if let Some(spec) = spec {
        for c in spec.init_containers.iter().flatten().chain(spec.containers.iter()) {
            named.push((c.name.clone(), c.image.clone().unwrap_or_default()));
        }
        for c in spec.ephemeral_containers.iter().flatten() {
            named.push((c.name.clone(), c.image.clone().unwrap_or_default()));
        }
    }
    named
        .into_iter()
        .map(|(name, image)| {
            let digest = reported.get(name.as_str()).and_then(|id| digest_of(id)).map(str::to_string);
            (name, image, digest)
        })
        .collect()
}

/// How long after a request a Pod it was made from may still be starting
/// (Pending, or a container reporting no digest yet) before the request is
/// denied: an agent asks as soon as it runs, and the kubelet reports the
/// Pod's status a moment later.
pub const READY_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

/// Why a Pod does not (yet) qualify: the words, and whether it may still be
/// starting (and so qualify once the kubelet reports it).
type Unfit = (String, bool);

/// Checks the Pod against one agent's workload rules (labels, ServiceAccount,
/// digests); `Err` says what does not match.
fn matches(pin: &Pinned<'_>, pod: &Pod) -> Result<Vec<AttestedImage>, Unfit> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let pod_ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let sa = pod.spec.as_ref().and_then(|s| s.service_account_name.as_deref()).unwrap_or("default");
    if pod_ns != pin.namespace || sa != pin.service_account {
        let why = format!(
            "Pod {pod_ns}/{pod_name} runs as ServiceAccount {pod_ns}/{sa}, not {}/{} of AgentIdentity {}",
            pin.namespace, pin.service_account, pin.agent
        );
        return Err((why, false));
    }
    if let Some(selector) = &pin.workload.pod_selector {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        match selector_matches(selector, &labels) {
            Ok(true) => {}
            Ok(false) => {
                let why = format!(
                    "Pod {pod_ns}/{pod_name}'s labels {labels:?} do not match AgentIdentity {}'s spec.workload.podSelector",
                    pin.agent
                );
                return Err((why, false));
            }
            Err(why) => return Err((format!("AgentIdentity {}'s spec.workload.podSelector: {why}", pin.agent), false)),
        }
    }
    let mut images = Vec::new();
    for (container, image, digest) in containers(pod) {
        let Some(digest) = digest else {
            let why = format!(
                "container {container} of Pod {pod_ns}/{pod_name} reports no image digest yet; only a Pod whose every container runs an allowed digest may act as AgentIdentity {}",
                pin.agent
            );
            return Err((why, true));
        };
        if !pin.workload.images.iter().filter_map(|allowed| digest_of(allowed)).any(|allowed| allowed == digest) {
            let why = format!(
                "container {container} of Pod {pod_ns}/{pod_name} runs {image} at {digest}, which AgentIdentity {}'s spec.workload.images does not allow",
                pin.agent
            );
            return Err((why, false));
        }
        images.push(AttestedImage { container, image, digest });
    }
    if images.is_empty() {
        return Err((format!("Pod {pod_ns}/{pod_name} has no containers"), false));
    }
    Ok(images)
}

/// Whether the Pod is live: Running and not being deleted. `Err` says why
/// not, and whether it may still be starting (Pending).
fn live(pod: &Pod) -> Result<(), Unfit> {
    let name = format!(
        "Pod {}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    if let Some(t) = &pod.metadata.deletion_timestamp {
        return Err((format!("{name} is being deleted (to be gone by {})", t.0), false));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase != "Running" {
        return Err((format!("{name} is {phase}, not Running"), phase == "Pending"));
    }
    Ok(())
}

/// The verdict on a request that `pins` apply to (see [`pinned`]), made from
/// the Pod `claim` names (`spec.requester.pod`, written by admission), whose
/// live state is `pod` (None: not found) on a Node labelled `node_labels`
/// (None: not read, or not found).
///
/// - `Ok(None)`: nothing binds the request to a workload (no agent pins it,
///   or none requires it and it was not made from a Pod).
/// - `Ok(Some(attestation))`: made from a live, matching Pod; the grant is bound to it.
/// - `Err`: `WorkloadNotAttested` (no pod-bound token where one is required,
///   the Pod is gone, replaced or not Running) or `WorkloadMismatch` (the
///   Pod does not match: ServiceAccount, labels, digests, node), or, within
///   [`READY_GRACE`] of `asked_at`, `WorkloadNotReady` for a Pod still
///   starting (Pending, or a container without a digest yet): ask again.
pub fn attest(
    pins: &[Pinned<'_>],
    claim: Option<&RequesterPod>,
    pod: Option<&Pod>,
    node_labels: Option<&BTreeMap<String, String>>,
    asked_at: Timestamp,
    now: Timestamp,
) -> Result<Option<WorkloadAttestation>, Refusal> {
    let grace = jiff::SignedDuration::try_from(READY_GRACE).unwrap_or_default();
    let unfit = |reason: &'static str, (why, starting): Unfit| {
        if !starting {
            refuse(reason, why)
        } else if now < asked_at + grace {
            refuse(
                reasons::WORKLOAD_NOT_READY,
                format!("{why}; waiting up to {}s from the request", READY_GRACE.as_secs()),
            )
        } else {
            refuse(reason, format!("{why}, {}s after the request", READY_GRACE.as_secs()))
        }
    };
    let Some(first) = pins.first() else { return Ok(None) };
    let Some(claim) = claim else {
        return match pins.iter().find(|p| p.workload.required) {
            Some(p) => Err(refuse(
                reasons::WORKLOAD_NOT_ATTESTED,
                format!(
                    "AgentIdentity {} requires spec.workload: the request must be made from one of its Pods, \
                     with the Pod's own (pod-bound) ServiceAccount token; this one was not (made by a person, \
                     a grant identity or a token not bound to a Pod, or while MutatingAdmissionPolicy \
                     kube-jit-requester-pod was not installed)",
                    p.agent
                ),
            )),
            None => Ok(None),
        };
    };
    let Some(pod) = pod else {
        return Err(refuse(
            reasons::WORKLOAD_NOT_ATTESTED,
            format!("the Pod the request was made from ({}/{}) no longer exists", first.namespace, claim.name),
        ));
    };
    if pod.metadata.uid.as_deref() != Some(claim.uid.as_str()) {
        return Err(refuse(
            reasons::WORKLOAD_NOT_ATTESTED,
            format!(
                "Pod {}/{} is not the one the request was made from (uid {}, now {}): it was replaced",
                first.namespace,
                claim.name,
                claim.uid,
                pod.metadata.uid.as_deref().unwrap_or("?")
            ),
        ));
    }
    live(pod).map_err(|unfit_| unfit(reasons::WORKLOAD_NOT_ATTESTED, unfit_))?;
    // A debug container shares the Pod's token volume: whoever may add one
    // could read the token, whatever image it runs.
    if let Some(debug) = pod.spec.as_ref().and_then(|s| s.ephemeral_containers.as_ref()).and_then(|c| c.first()) {
        return Err(refuse(
            reasons::WORKLOAD_MISMATCH,
            format!(
                "Pod {}/{} has an ephemeral container ({}): a Pod that was debugged does not act as an agent",
                first.namespace, claim.name, debug.name
            ),
        ));
    }
    let mut images = Vec::new();
    for pin in pins {
        images = matches(pin, pod).map_err(|unfit_| unfit(reasons::WORKLOAD_MISMATCH, unfit_))?;
        if let Some(selector) = &pin.workload.node_selector {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or_default();
            let labels = node_labels.ok_or_else(|| {
                refuse(reasons::WORKLOAD_MISMATCH, format!("Node {node:?} of the Pod could not be read"))
            })?;
            match selector_matches(selector, labels) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(refuse(
                        reasons::WORKLOAD_MISMATCH,
                        format!("Node {node} does not match AgentIdentity {}'s spec.workload.nodeSelector", pin.agent),
                    ));
                }
                Err(why) => {
                    let why = format!("AgentIdentity {}'s spec.workload.nodeSelector: {why}", pin.agent);
                    return Err(refuse(reasons::WORKLOAD_MISMATCH, why));
                }
            }
        }
    }
    Ok(Some(WorkloadAttestation {
        namespace: first.namespace.to_string(),
        pod: claim.name.clone(),
        pod_uid: claim.uid.clone(),
        service_account: first.service_account.to_string(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default(),
        images,
        spiffe_id: spiffe_id(&first.trust_domain, first.namespace, first.service_account),
        attested_at: Some(Time(now)),
    }))
}

/// Whether a request bound to a workload may be delivered as it asks: a
/// token Secret (`delivery.tokenSecret`) is readable with any token of the
/// agent's ServiceAccount, so it would carry the grant to Pods the pin
/// excludes. `Err` is an `InvalidRequest`.
pub fn delivery_allowed(spec: &AccessRequestSpec) -> Result<(), Refusal> {
    if spec.delivery.token_secret {
        return Err(refuse(
            reasons::INVALID_REQUEST,
            "delivery.tokenSecret cannot be used for an agent pinned to its workload: any token of its \
             ServiceAccount could read the Secret; mint tokens from the Pod instead",
        ));
    }
    Ok(())
}

/// Whether a live grant bound to `attested` may go on, given the Pod of that
/// name as the watch last saw it (None: gone) and the agents' workload rules
/// as they are now (`pins`). `WorkloadGone`: deleted, being deleted,
/// replaced, or finished. `WorkloadChanged`: still there but no longer
/// matching (labels, a container added or at another digest, not Running).
pub fn recheck(attested: &WorkloadAttestation, pins: &[Pinned<'_>], pod: Option<&Pod>) -> Result<(), Refusal> {
    let name = format!("Pod {}/{}", attested.namespace, attested.pod);
    let gone = |why: String| refuse(reasons::WORKLOAD_GONE, why);
    let Some(pod) = pod else { return Err(gone(format!("{name} (uid {}) was deleted", attested.pod_uid))) };
    if pod.metadata.uid.as_deref() != Some(attested.pod_uid.as_str()) {
        return Err(gone(format!("{name} (uid {}) was replaced by another Pod of that name", attested.pod_uid)));
    }
    if let Some(t) = &pod.metadata.deletion_timestamp {
        return Err(gone(format!("{name} is being deleted (to be gone by {})", t.0)));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(gone(format!("{name} has finished ({phase})")));
    }
    let changed = |why: String| refuse(reasons::WORKLOAD_CHANGED, why);
    if phase != "Running" {
        return Err(changed(format!("{name} is {phase}, not Running")));
    }
    // Containers added since (an ephemeral debug container) or now at another digest.
    let now: Vec<(String, Option<String>)> = containers(pod).into_iter().map(|(c, _, d)| (c, d)).collect();
    let then: Vec<(String, Option<String>)> =
        attested.images.iter().map(|i| (i.container.clone(), Some(i.digest.clone()))).collect();
    if now != then {
        let describe = |v: &[(String, Option<String>)]| {
            v.iter()
                .map(|(c, d)| format!("{c}@{}", d.as_deref().unwrap_or("(no digest)")))
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(changed(format!(
            "{name}'s containers changed: attested [{}], now [{}]",
            describe(&then),
            describe(&now)
        )));
    }
    for pin in pins {
        matches(pin, pod).map_err(|(why, _)| changed(why))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GOOD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const BAD: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn agent(workload: serde_json::Value) -> std::sync::Arc<AgentIdentity> {
        std::sync::Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "kubejit.io/v1alpha1", "kind": "AgentIdentity",
                "metadata": {"name": "planner", "namespace": "agents"},
                "spec": {"owner": "alice", "serviceAccountName": "planner", "workload": workload}
            }))
            .unwrap(),
        )
    }

    fn workload(required: bool) -> serde_json::Value {
        json!({"required": required, "podSelector": {"matchLabels": {"app": "planner"}}, "images": [GOOD]})
    }

    fn spec(user: &str, for_agent: Option<&str>) -> AccessRequestSpec {
        serde_json::from_value(json!({
            "requester": {"user": user},
            "forAgent": for_agent,
            "role": {"kind": "ClusterRole", "name": "view"},
            "namespaces": ["team-a"]
        }))
        .unwrap()
    }

    fn pod(uid: &str, phase: &str, labels: serde_json::Value, digest: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "planner-0", "namespace": "agents", "uid": uid, "labels": labels},
            "spec": {"serviceAccountName": "planner", "nodeName": "node0",
                     "containers": [{"name": "agent", "image": "kube-jit-agent:local"}]},
            "status": {"phase": phase, "containerStatuses": [{
                "name": "agent", "image": "kube-jit-agent:local", "imageID": format!("docker.io/library/kube-jit-agent@{digest}"),
                "ready": true, "restartCount": 0}]}
        }))
        .unwrap()
    }

    fn claim(uid: &str) -> RequesterPod {
        RequesterPod { name: "planner-0".into(), uid: uid.into() }
    }

    const AGENT_SA: &str = "system:serviceaccount:agents:planner";

    /// [`attest`] a minute after the request: past [`READY_GRACE`].
    fn late(
        pins: &[Pinned<'_>],
        claim: Option<&RequesterPod>,
        pod: Option<&Pod>,
        node: Option<&BTreeMap<String, String>>,
    ) -> Result<Option<WorkloadAttestation>, Refusal> {
        let asked = Timestamp::UNIX_EPOCH;
        attest(pins, claim, pod, node, asked, asked + jiff::SignedDuration::from_secs(60))
    }

    #[test]
    fn a_pod_still_starting_is_waited_for_until_the_grace_ends() {
        let agents = vec![agent(workload(true))];
        let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "td");
        let asked = Timestamp::UNIX_EPOCH;
        let at = |secs| asked + jiff::SignedDuration::from_secs(secs);
        let pending = pod("u1", "Pending", json!({"app": "planner"}), GOOD);
        let mut no_digest = pod("u1", "Running", json!({"app": "planner"}), GOOD);
        no_digest.status.as_mut().unwrap().container_statuses.as_mut().unwrap()[0].image_id = String::new();
        let failed = pod("u1", "Failed", json!({"app": "planner"}), GOOD);
        let cases = [
            ("Pending, just asked", &pending, 1, reasons::WORKLOAD_NOT_READY),
            ("Pending, 30 s on", &pending, 30, reasons::WORKLOAD_NOT_ATTESTED),
            ("no digest yet, just asked", &no_digest, 5, reasons::WORKLOAD_NOT_READY),
            ("no digest, 31 s on", &no_digest, 31, reasons::WORKLOAD_MISMATCH),
            ("Failed is not starting", &failed, 1, reasons::WORKLOAD_NOT_ATTESTED),
        ];
        for (case, pod, secs, reason) in cases {
            let refused = attest(&pins, Some(&claim("u1")), Some(pod), None, asked, at(secs)).unwrap_err();
            assert_eq!(refused.reason, reason, "{case}: {}", refused.message);
        }
    }

    #[test]
    fn which_agents_pin_a_request() {
        let agents = vec![agent(workload(true))];
        let pins =
            |user: &str, for_agent: Option<&str>, ns: &str| pinned(ns, &spec(user, for_agent), &agents, "td").len();
        assert_eq!(pins("alice", Some("planner"), "agents"), 1, "named by forAgent");
        assert_eq!(pins(AGENT_SA, None, "agents"), 1, "its ServiceAccount asking for itself");
        assert_eq!(pins(AGENT_SA, None, "elsewhere"), 1, "wherever the request is made");
        assert_eq!(pins("alice", Some("planner"), "other"), 0, "another namespace's planner");
        assert_eq!(pins("alice", None, "agents"), 0);
        let unpinned = vec![std::sync::Arc::new({
            let mut a = (*agent(workload(true))).clone();
            a.spec.workload = None;
            a
        })];
        assert!(pinned("agents", &spec(AGENT_SA, Some("planner")), &unpinned, "td").is_empty());
        // A second, unpinned AgentIdentity on the pinned ServiceAccount: the pin still holds.
        let mut twin = (*unpinned[0]).clone();
        twin.metadata.name = Some("twin".into());
        let agents = vec![agent(workload(true)), std::sync::Arc::new(twin)];
        let grant_identity = "system:serviceaccount:kube-jit-grants:jit-parent-0123456789ab";
        assert_eq!(pinned("agents", &spec(grant_identity, Some("twin")), &agents, "td").len(), 1);
        assert_eq!(pinned("agents", &spec("alice", Some("twin")), &agents, "td").len(), 1);
    }

    #[test]
    fn a_debugged_pod_does_not_act_as_the_agent_and_pinned_grants_have_no_token_secret() {
        let agents = vec![agent(workload(true))];
        let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "td");
        let mut debugged = pod("u1", "Running", json!({"app": "planner"}), GOOD);
        debugged.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![serde_json::from_value(json!({"name": "debugger", "image": "agent"})).unwrap()]);
        debugged.status.as_mut().unwrap().ephemeral_container_statuses = Some(vec![
            serde_json::from_value(json!({"name": "debugger", "image": "agent", "imageID": format!("agent@{GOOD}"),
                "ready": false, "restartCount": 0}))
            .unwrap(),
        ]);
        let refused = late(&pins, Some(&claim("u1")), Some(&debugged), None).unwrap_err();
        assert_eq!(refused.reason, reasons::WORKLOAD_MISMATCH);
        assert!(refused.message.contains("ephemeral container (debugger)"), "{refused:?}");
        let mut secret = spec(AGENT_SA, Some("planner"));
        assert!(delivery_allowed(&secret).is_ok());
        secret.delivery.token_secret = true;
        assert_eq!(delivery_allowed(&secret).unwrap_err().reason, reasons::INVALID_REQUEST);
    }

    #[test]
    fn attestation_verdicts() {
        let labels = json!({"app": "planner"});
        let good = pod("u1", "Running", labels.clone(), GOOD);
        let node = BTreeMap::from([("zone".to_string(), "a".to_string())]);
        // (case, required, claim, pod, expected reason or None for attested)
        type Case = (&'static str, bool, Option<RequesterPod>, Option<Pod>, Option<&'static str>);
        let cases: Vec<Case> = vec![
            ("matching Pod", true, Some(claim("u1")), Some(good.clone()), None),
            ("no pod-bound token, required", true, None, Some(good.clone()), Some(reasons::WORKLOAD_NOT_ATTESTED)),
            ("Pod gone", true, Some(claim("u1")), None, Some(reasons::WORKLOAD_NOT_ATTESTED)),
            ("Pod replaced", true, Some(claim("u0")), Some(good.clone()), Some(reasons::WORKLOAD_NOT_ATTESTED)),
            (
                "Pod not Running",
                true,
                Some(claim("u1")),
                Some(pod("u1", "Pending", labels.clone(), GOOD)),
                Some(reasons::WORKLOAD_NOT_ATTESTED),
            ),
            (
                "other labels",
                true,
                Some(claim("u1")),
                Some(pod("u1", "Running", json!({"app": "other"}), GOOD)),
                Some(reasons::WORKLOAD_MISMATCH),
            ),
            (
                "other digest",
                true,
                Some(claim("u1")),
                Some(pod("u1", "Running", labels.clone(), BAD)),
                Some(reasons::WORKLOAD_MISMATCH),
            ),
            ("optional, no Pod claimed", false, None, None, Some("unbound")),
            (
                "optional, Pod claimed and wrong",
                false,
                Some(claim("u1")),
                Some(pod("u1", "Running", labels.clone(), BAD)),
                Some(reasons::WORKLOAD_MISMATCH),
            ),
        ];
        for (case, required, claim, pod, expected) in cases {
            let agents = vec![agent(workload(required))];
            let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "cluster.local");
            let verdict = late(&pins, claim.as_ref(), pod.as_ref(), Some(&node));
            match (expected, verdict) {
                (None, Ok(Some(a))) => {
                    assert_eq!(a.pod_uid, "u1", "{case}");
                    assert_eq!(a.node, "node0", "{case}");
                    assert_eq!(a.images[0].digest, GOOD, "{case}");
                    assert_eq!(a.spiffe_id, "spiffe://cluster.local/ns/agents/sa/planner", "{case}");
                }
                (Some("unbound"), Ok(None)) => {}
                (Some(reason), Err(r)) => assert_eq!(r.reason, reason, "{case}: {}", r.message),
                (expected, got) => panic!("{case}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_pod_must_run_as_the_agents_service_account_and_on_a_matching_node() {
        let mut w = workload(true);
        w["nodeSelector"] = json!({"matchLabels": {"zone": "a"}});
        let agents = vec![agent(w)];
        let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "td");
        let good = pod("u1", "Running", json!({"app": "planner"}), GOOD);
        let zone = |z: &str| BTreeMap::from([("zone".to_string(), z.to_string())]);
        assert!(late(&pins, Some(&claim("u1")), Some(&good), Some(&zone("a"))).is_ok());
        let other_zone = late(&pins, Some(&claim("u1")), Some(&good), Some(&zone("b"))).unwrap_err();
        assert!(other_zone.message.contains("nodeSelector"), "{other_zone:?}");
        assert!(late(&pins, Some(&claim("u1")), Some(&good), None).is_err(), "node unread: no");
        let mut other_sa = good.clone();
        other_sa.spec.as_mut().unwrap().service_account_name = Some("builder".into());
        let refused = late(&pins, Some(&claim("u1")), Some(&other_sa), Some(&zone("a"))).unwrap_err();
        assert_eq!(refused.reason, reasons::WORKLOAD_MISMATCH);
        assert!(refused.message.contains("runs as ServiceAccount agents/builder"), "{refused:?}");
    }

    #[test]
    fn every_container_must_report_an_allowed_digest() {
        let agents = vec![agent(workload(true))];
        let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "td");
        let mut sidecar = pod("u1", "Running", json!({"app": "planner"}), GOOD);
        sidecar.spec.as_mut().unwrap().init_containers =
            Some(vec![serde_json::from_value(json!({"name": "setup", "image": "busybox"})).unwrap()]);
        let refused = late(&pins, Some(&claim("u1")), Some(&sidecar), None).unwrap_err();
        assert!(refused.message.contains("container setup") && refused.message.contains("no image digest"));
        sidecar.status.as_mut().unwrap().init_container_statuses = Some(vec![
            serde_json::from_value(json!({"name": "setup", "image": "busybox", "imageID": format!("busybox@{BAD}"),
                "ready": false, "restartCount": 0}))
            .unwrap(),
        ]);
        let refused = late(&pins, Some(&claim("u1")), Some(&sidecar), None).unwrap_err();
        assert!(refused.message.contains("does not allow"), "{refused:?}");
    }

    #[test]
    fn recheck_verdicts() {
        let agents = vec![agent(workload(true))];
        let pins = pinned("agents", &spec(AGENT_SA, Some("planner")), &agents, "td");
        let labels = json!({"app": "planner"});
        let good = pod("u1", "Running", labels.clone(), GOOD);
        let attested = late(&pins, Some(&claim("u1")), Some(&good), None).unwrap().unwrap();
        let mut deleting = good.clone();
        deleting.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let mut debugged = good.clone();
        debugged.spec.as_mut().unwrap().ephemeral_containers =
            Some(vec![serde_json::from_value(json!({"name": "debug", "image": "busybox"})).unwrap()]);
        let cases: Vec<(&str, Option<Pod>, Option<&str>)> = vec![
            ("unchanged", Some(good.clone()), None),
            ("deleted", None, Some(reasons::WORKLOAD_GONE)),
            ("being deleted", Some(deleting), Some(reasons::WORKLOAD_GONE)),
            ("replaced", Some(pod("u2", "Running", labels.clone(), GOOD)), Some(reasons::WORKLOAD_GONE)),
            ("finished", Some(pod("u1", "Succeeded", labels.clone(), GOOD)), Some(reasons::WORKLOAD_GONE)),
            ("relabelled", Some(pod("u1", "Running", json!({"app": "x"}), GOOD)), Some(reasons::WORKLOAD_CHANGED)),
            ("another digest", Some(pod("u1", "Running", labels.clone(), BAD)), Some(reasons::WORKLOAD_CHANGED)),
            ("a debug container", Some(debugged), Some(reasons::WORKLOAD_CHANGED)),
            ("not Running", Some(pod("u1", "Unknown", labels.clone(), GOOD)), Some(reasons::WORKLOAD_CHANGED)),
        ];
        for (case, pod, expected) in cases {
            match (recheck(&attested, &pins, pod.as_ref()), expected) {
                (Ok(()), None) => {}
                (Err(r), Some(reason)) => assert_eq!(r.reason, reason, "{case}: {}", r.message),
                (got, expected) => panic!("{case}: expected {expected:?}, got {got:?}"),
            }
        }
        // The agent's rules gone: the Pod is still checked against its attestation.
        assert!(recheck(&attested, &[], Some(&good)).is_ok());
        assert!(recheck(&attested, &[], None).is_err());
    }

    #[test]
    fn digests_are_read_from_every_form_of_image_id() {
        let hex = &GOOD["sha256:".len()..];
        for id in [
            format!("docker.io/library/agent@sha256:{hex}"),
            format!("sha256:{hex}"),
            format!("docker-pullable://agent@sha256:{hex}"),
        ] {
            assert_eq!(digest_of(&id), Some(GOOD), "{id}");
        }
        for id in ["", "agent:latest", "sha256:abc", "sha512:00", &format!("sha256:{}", "AB".repeat(32))] {
            assert_eq!(digest_of(id), None, "{id}");
        }
        assert_eq!(trust_domain_of("spiffe://example.org/agents/planner"), Some("example.org"));
        assert_eq!(trust_domain_of("https://example.org"), None);
    }
}
