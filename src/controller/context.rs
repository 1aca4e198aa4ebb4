//! What every reconcile shares: the client, the caches (reflector stores) the
//! decisions read from, and the Event publisher.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt, core::PartialObjectMeta};

use crate::admission::Claims;
use crate::api::access_approval::AccessApproval;
use crate::api::access_policy::AccessPolicy;
use crate::api::access_request::{AccessRequest, AccessRequestStatus};
use crate::api::agent_identity::AgentIdentity;
use crate::policy::ClusterFacts;

/// resourceVersions are opaque to clients, but the API server's are etcd
/// revisions; where one does not parse, nothing is skipped.
fn resource_version(request: &AccessRequest) -> Option<u64> {
    request.metadata.resource_version.as_deref()?.parse().ok()
}

/// Audit lines held back for status writes whose answer never came, by
/// request uid. They outlive a term as leader: a term cut short (lease lost)
/// leaves them to [`settle_held_lines`] and to the process's next term.
pub type HeldLines = std::sync::Arc<std::sync::Mutex<BTreeMap<String, AuditLine>>>;

/// Reads each request behind a held line once and writes the lines whose write
/// committed after all; drops those whose write surely did not (whoever acts
/// next redoes that transition and writes its line). Lines whose request
/// cannot be read stay held. Read-only, so a replica that lost its lease may
/// run it; returns how many lines it wrote.
pub async fn settle_held_lines(client: &Client, held: &HeldLines) -> usize {
    let lines: Vec<(String, AuditLine)> =
        std::mem::take(&mut *held.lock().unwrap_or_else(|e| e.into_inner())).into_iter().collect();
    let mut written = 0;
    for (uid, line) in lines {
        let (ns, name) = (line.recorded.namespace().unwrap_or_default(), line.recorded.name_any());
        match kube::Api::<AccessRequest>::namespaced(client.clone(), &ns).get_opt(&name).await {
            Ok(Some(copy)) if copy.uid().as_deref() == Some(uid.as_str()) => {
                if line.committed_in(&copy) {
                    line.record();
                    written += 1;
                }
            }
            // Gone, or another request of that name: nothing shows the write.
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(request = %name, namespace = %ns, error = %e, "could not read a request to settle its audit line; kept");
                held.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, line);
            }
        }
    }
    written
}

/// The audit line of a status write: written once the write is known to have
/// committed, at once when it answered, later (see [`Context::hold_line`]) when
/// it failed without an answer.
pub struct AuditLine {
    pub event: crate::audit::AuditEvent,
    /// The request as written.
    pub recorded: AccessRequest,
    pub policy: Option<String>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub expires_at: Option<String>,
    pub identity: Option<String>,
}

impl AuditLine {
    /// The line of `event` for `status` written on `request`, with its policy.
    pub fn of(event: crate::audit::AuditEvent, request: &AccessRequest, status: &AccessRequestStatus) -> AuditLine {
        let mut recorded = request.clone();
        recorded.status = Some(status.clone());
        AuditLine {
            event,
            recorded,
            policy: status.policy.clone(),
            reason: None,
            message: None,
            expires_at: None,
            identity: None,
        }
    }

    /// Whether `copy` carries the write: same phase, and the same `startedAt`
    /// (a grant) or `revokedAt` (an ending), which the write set to the second.
    fn committed_in(&self, copy: &AccessRequest) -> bool {
        let (Some(written), Some(seen)) = (self.recorded.status.as_ref(), copy.status.as_ref()) else { return false };
        let second = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| t.map(|t| t.0.as_second());
        let marker = |s: &AccessRequestStatus| {
            let g = s.grant.as_ref();
            (second(g.and_then(|g| g.started_at.as_ref())), second(g.and_then(|g| g.revoked_at.as_ref())))
        };
        written.phase == seen.phase && marker(written) == marker(seen)
    }

    pub fn record(&self) {
        let details = crate::audit::Details {
            policy: self.policy.as_deref(),
            reason: self.reason.as_deref(),
            message: self.message.as_deref(),
            expires_at: self.expires_at.clone(),
            identity: self.identity.clone(),
            ..crate::audit::Details::default()
        };
        crate::audit::record(self.event, &self.recorded, details);
    }
}

/// Whether a failed write may still have been applied: the request reached
/// the API server, or may have, but no answer came back; or the answer was a
/// 504 (the API server timed out waiting for etcd, which may still commit).
fn outcome_unknown(error: &crate::Error) -> bool {
    match error {
        crate::Error::Kube(kube::Error::Api(status)) => status.code == 504,
        crate::Error::Kube(_) => true,
        _ => false,
    }
}

/// How a cached copy at `cached` stands to this process's write `w`.
fn behind(cached: u64, w: &Written) -> Option<Behind> {
    if cached >= w.resource_version {
        None
    } else if w.terminal {
        Some(Behind::Ended)
    } else {
        (w.at.elapsed() < CACHE_CATCH_UP).then_some(Behind::Catching)
    }
}

/// The retry delay after `n` conflicts in a row (n ≥ 1).
fn conflict_delay(n: u32) -> std::time::Duration {
    let doubled = std::time::Duration::from_millis(100).saturating_mul(1 << n.saturating_sub(1).min(10));
    doubled.min(CONFLICT_BACKOFF_MAX)
}

/// How a cached request is behind this process's own last write of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behind {
    /// The write ended the request: the older copy needs nothing.
    Ended,
    /// The watch has not delivered a recent write yet.
    Catching,
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    /// The caches decisions read from.
    pub stores: Stores,
    pub events: super::events::Publisher,
    /// Trust domain of default SPIFFE IDs.
    pub trust_domain: String,
    /// The audiences tokens for grant identities may carry (see [`super::Settings::token_audiences`]).
    pub token_audiences: Vec<String>,
    /// Where grant identities live (see [`super::Settings::grants_namespace`]).
    pub grants_namespace: String,
    /// Where nothing is granted: the grants namespace and the operator's own.
    pub reserved_namespaces: Vec<String>,
    /// A lock per subject, held while one of its requests is decided
    /// ([`Context::decision_lock`]).
    decisions: std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// The request cache's index by subject, kept from its watch.
    pub index: std::sync::Arc<super::index::RequestIndex>,
    /// Grants approved by this process that the cache may not show yet:
    /// request uid → (subject, policy).
    pub pending: std::sync::Mutex<BTreeMap<String, (String, String)>>,
    /// The resourceVersion of each request's last status write by this
    /// process, and when: a reconcile of an older cached copy would redo work
    /// already done and then fail its conditional write.
    written: std::sync::Mutex<BTreeMap<String, Written>>,
    /// Conflicts (409) in a row per request uid, for the retry backoff.
    conflicts: std::sync::Mutex<BTreeMap<String, u32>>,
    /// Audit lines of status writes whose outcome this process does not know
    /// (the connection failed after sending): written once a copy shows the
    /// write committed. Shared with the process's later terms.
    unaudited: HeldLines,
    /// Metadata caches of the objects kube-jit made (while the controllers run).
    pub managed: Option<super::managed::ManagedObjects>,
    /// The Pod watches of workload-bound requests (while the controllers run).
    pub workloads: Option<std::sync::Arc<super::workloads::Workloads>>,
}

/// A status write by this process.
struct Written {
    resource_version: u64,
    at: std::time::Instant,
    /// It ended the request: no older copy can call for more work.
    terminal: bool,
}

impl Written {
    /// The object is gone (its finalizer removed on deletion): every copy of
    /// it, however new, is behind.
    fn gone() -> Self {
        Written { resource_version: u64::MAX, at: std::time::Instant::now(), terminal: true }
    }
}

/// How long a reconcile waits for the cache to show this process's own
/// non-terminal write before acting anyway (every write is conditional, so
/// acting on a stale copy is safe, only wasteful). On an API server at full
/// CPU the watch ran 4.7 s behind (100 grants in flight, 2 cores); with 2 s
/// here, stale copies then re-approved grants already made, and the doomed
/// writes and repeated creates added to the load that delayed the watch.
/// Expiries do not wait on this: the expiry safety net reads the grant itself.
const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a terminal write is remembered, once [`PRUNE_AT`] entries are held.
const TERMINAL_REMEMBERED: std::time::Duration = std::time::Duration::from_secs(600);

/// The window of a rate cap whose window does not parse (as evaluate reads it).
const RATE_WINDOW_FALLBACK: std::time::Duration = std::time::Duration::from_secs(3600);

/// Size at which the per-request maps are pruned.
const PRUNE_AT: usize = 4096;

/// Retry delays after conflicts in a row: 100 ms, doubling, at most this.
const CONFLICT_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(5);

impl Context {
    pub fn new(client: Client, stores: Stores, trust_domain: String) -> Context {
        Context {
            events: super::events::Publisher::new(client.clone(), "kube-jit", std::env::var("POD_NAME").ok()),
            client,
            stores,
            trust_domain,
            token_audiences: Vec::new(),
            grants_namespace: crate::names::DEFAULT_GRANTS_NAMESPACE.into(),
            reserved_namespaces: vec![
                crate::names::DEFAULT_GRANTS_NAMESPACE.into(),
                crate::names::DEFAULT_OPERATOR_NAMESPACE.into(),
            ],
            decisions: std::sync::Mutex::new(std::collections::HashMap::new()),
            index: std::sync::Arc::default(),
            pending: std::sync::Mutex::new(BTreeMap::new()),
            written: std::sync::Mutex::new(BTreeMap::new()),
            conflicts: std::sync::Mutex::new(BTreeMap::new()),
            unaudited: HeldLines::default(),
            managed: None,
            workloads: None,
        }
    }

    /// The same context, holding back audit lines in `held` (shared across terms).
    pub fn with_held_lines(mut self, held: HeldLines) -> Context {
        self.unaudited = held;
        self
    }

    /// The same context, checking grant objects against `managed`.
    pub fn with_managed(mut self, managed: super::managed::ManagedObjects) -> Context {
        self.managed = Some(managed);
        self
    }

    pub fn with_workloads(mut self, workloads: std::sync::Arc<super::workloads::Workloads>) -> Context {
        self.workloads = Some(workloads);
        self
    }

    /// Whether a grant's object exists: the cache when it shows it, else the API server.
    pub async fn object_exists(&self, object: &crate::api::ObjectRef) -> crate::Result<bool> {
        if self.managed.as_ref().is_some_and(|m| m.contains(object)) {
            return Ok(true);
        }
        super::objects::exists_ref(&self.client, object).await
    }

    /// Records the resourceVersion a status write returned (see [`Context::cache_behind`]).
    pub fn wrote(&self, written: &AccessRequest) {
        let (Some(uid), Some(resource_version)) = (written.uid(), resource_version(written)) else { return };
        let terminal = written.status.as_ref().is_some_and(|s| s.phase.is_terminal());
        let mut map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(uid, Written { resource_version, at: std::time::Instant::now(), terminal });
        if map.len() > PRUNE_AT {
            map.retain(|_, w| w.at.elapsed() < if w.terminal { TERMINAL_REMEMBERED } else { CACHE_CATCH_UP });
        }
    }

    /// Records that `request`, being deleted, had kube-jit's finalizer
    /// removed by this process: the object is gone, and no copy of it still
    /// in the cache calls for anything (a reconcile of one would only remove
    /// the finalizer again, and meet a 404).
    pub fn finalized(&self, request: &AccessRequest) {
        let Some(uid) = request.uid() else { return };
        self.written.lock().unwrap_or_else(|e| e.into_inner()).insert(uid, Written::gone());
    }

    /// Whether the cached `request` is older than this process's last write
    /// of it, so that its reconcile would redo work already done and then
    /// fail its conditional write: always after a write that ended the
    /// request (nothing older can call for more), and for
    /// [`CACHE_CATCH_UP`] after any other write (the watch is merely slow).
    pub fn cache_behind(&self, request: &AccessRequest) -> Option<Behind> {
        let (Some(uid), Some(cached)) = (request.uid(), resource_version(request)) else { return None };
        let map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        behind(cached, map.get(&uid)?)
    }

    /// The delay before retrying a request whose write met a conflict:
    /// doubling with each conflict in a row, so a cache that stays behind
    /// does not turn into a storm of doomed writes.
    pub fn conflict_backoff(&self, uid: &str) -> std::time::Duration {
        let mut map = self.conflicts.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > PRUNE_AT {
            map.clear();
        }
        let n = map.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        conflict_delay(*n)
    }

    /// After a status write of `request` failed with `error`: keeps its audit
    /// line for [`Context::audit_if_committed`] if the write may still have
    /// been applied (no answer came back); drops it if it surely was not.
    pub fn hold_line(&self, error: &crate::Error, request: &AccessRequest, line: AuditLine) {
        if !outcome_unknown(error) {
            return;
        }
        let mut map = self.unaudited.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > PRUNE_AT {
            map.clear();
        }
        map.insert(request.uid().unwrap_or_default(), line);
    }

    /// Writes the audit line kept for `request` if this copy shows that the
    /// write it belongs to committed after all.
    pub fn audit_if_committed(&self, request: &AccessRequest) {
        let Some(uid) = request.uid() else { return };
        let mut map = self.unaudited.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&uid).is_some_and(|line| line.committed_in(request))
            && let Some(line) = map.remove(&uid)
        {
            line.record();
        }
    }

    /// A reconcile of `uid` succeeded: its conflict backoff starts over.
    pub fn reconciled(&self, uid: &str) {
        self.conflicts.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
    }

    /// Publishes an Event on the request; failures are logged, never fatal.
    pub async fn event(&self, request: &AccessRequest, warning: bool, reason: &str, note: String) {
        if let Err(e) = self.events.publish(&request.object_ref(&()), warning, "Reconcile", reason, note).await {
            tracing::warn!(error = %e, request = %request.name_any(), "could not publish Event");
        }
    }

    /// The cluster facts a policy decision about `request` needs, from the
    /// caches and the request index (one subject's requests, not all).
    pub fn facts_for<'a>(&self, request: &AccessRequest, agent: Option<&'a AgentIdentity>) -> ClusterFacts<'a> {
        let namespace_labels: BTreeMap<_, _> =
            self.stores.namespaces.state().iter().map(|ns| (ns.name_any(), ns.labels().clone())).collect();
        let now = jiff::Timestamp::now();
        // Earlier requests count against a rate cap only within the widest
        // window any policy sets (evaluate counts each policy's own).
        let widest = self
            .stores
            .policies
            .state()
            .iter()
            .filter(|p| p.spec.limits.max_requests_per_window.is_some())
            .map(|p| {
                crate::durations::parse(p.spec.limits.window.as_deref().unwrap_or("1h")).unwrap_or(RATE_WINDOW_FALLBACK)
            })
            .max();
        let since = widest.map(|w| now - jiff::SignedDuration::try_from(w).unwrap_or_default());
        let subject = subject_key(request);
        let my_uid = request.uid().unwrap_or_default();
        let known = self.index.subject_facts(request, since);
        let mut live_grants = known.live_grants;
        // Approved by this process, not yet shown by the cache: counted once.
        for (uid, (s, policy)) in self.pending.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *uid != my_uid && *s == subject && !self.index.is_live(uid) {
                *live_grants.entry(policy.clone()).or_insert(0) += 1;
            }
        }
        ClusterFacts {
            agent,
            namespace_labels,
            live_grants,
            namespaces_known: true,
            recent_requests: known.earlier_requests,
            now: Some(now),
            reserved_namespaces: self.reserved_namespaces.clone(),
        }
    }

    /// The lock held while a request of `subject` is decided: decisions of one
    /// subject see each other's grants (its limits are per subject), those of
    /// different subjects run at once.
    pub fn decision_lock(&self, subject: &str) -> std::sync::Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > PRUNE_AT {
            // Only locks nobody holds or waits for go.
            locks.retain(|_, l| std::sync::Arc::strong_count(l) > 1);
        }
        locks.entry(subject.to_string()).or_default().clone()
    }

    /// Whether the admission policies that make requesters and approvers
    /// unspoofable are installed, bound and enforcing.
    pub fn admission_ready(&self) -> Result<(), String> {
        let policies = self.stores.admission_policies.state();
        let bindings = self.stores.admission_bindings.state();
        crate::admission::check(policies.iter().map(|p| p.as_ref()), bindings.iter().map(|b| b.as_ref()))
    }

    /// Since when the policy checking `claims` has been in force as shipped
    /// (see [`crate::admission::in_force_since`]): claims made earlier prove nothing.
    pub fn admission_in_force_since(&self, claims: Claims) -> Option<jiff::Timestamp> {
        let policies = self.stores.admission_policies.state();
        let bindings = self.stores.admission_bindings.state();
        crate::admission::in_force_since(
            claims,
            policies.iter().map(|p| p.as_ref()),
            bindings.iter().map(|b| b.as_ref()),
        )
    }

    /// Since when `claims` are proven by admission: `None` (nothing proven)
    /// while any policy is missing, edited or lenient now. Pass it to
    /// [`crate::admission::admitted_under`] for each claim.
    pub fn claims_proven_since(&self, claims: Claims) -> Option<jiff::Timestamp> {
        self.admission_ready().ok()?;
        self.admission_in_force_since(claims)
    }

    /// Whether `claims` made at `created` were admitted under their policy.
    pub fn admitted(&self, claims: Claims, created: Option<jiff::Timestamp>) -> bool {
        created.is_some_and(|c| crate::admission::admitted_under(c, self.claims_proven_since(claims)))
    }

    /// The AgentIdentity a request is for, from the cache.
    /// The rules of a role now (`kind` `Role` or `ClusterRole`; `namespace`
    /// empty for a ClusterRole), by the caches; `None` if there is none.
    pub fn role_rules(&self, kind: &str, namespace: &str, name: &str) -> Option<Vec<PolicyRule>> {
        let rules = match kind {
            "ClusterRole" => self.stores.cluster_roles.get(&ObjectRef::new(name))?.rules.clone(),
            _ => self.stores.roles.get(&ObjectRef::new(name).within(namespace))?.rules.clone(),
        };
        Some(rules.unwrap_or_default())
    }

    /// Whether the grants namespace is ready: it exists and carries
    /// [`crate::names::GRANTS_NAMESPACE_LABEL`], by which admission protects
    /// its ServiceAccounts. Why not, otherwise.
    pub fn grants_namespace_ready(&self) -> Result<(), String> {
        let ns = &self.grants_namespace;
        let found = self.stores.namespaces.state().into_iter().find(|n| &n.name_any() == ns);
        match found {
            None => Err(format!("the grants namespace {ns} does not exist (see --grants-namespace)")),
            Some(n) if n.labels().get(crate::names::GRANTS_NAMESPACE_LABEL).map(String::as_str) != Some("true") => {
                Err(format!(
                    "the grants namespace {ns} lacks the label {}=true, by which admission keeps others from binding roles to grant identities",
                    crate::names::GRANTS_NAMESPACE_LABEL
                ))
            }
            Some(_) => Ok(()),
        }
    }

    pub fn agent_of(&self, request: &AccessRequest) -> Option<std::sync::Arc<AgentIdentity>> {
        let name = request.spec.for_agent.as_ref()?;
        let ns = request.namespace()?;
        self.stores.agents.get(&ObjectRef::new(name).within(&ns))
    }
}

/// Who a grant counts against: the agent if there is one, else the requester.
pub fn subject_key(request: &AccessRequest) -> String {
    match &request.spec.for_agent {
        Some(agent) => format!("agent:{}/{agent}", request.namespace().unwrap_or_default()),
        None => format!("user:{}", request.spec.requester.user),
    }
}

/// The caches the operator keeps.
pub struct Stores {
    pub policies: Store<AccessPolicy>,
    pub approvals: Store<AccessApproval>,
    pub agents: Store<AgentIdentity>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    pub requests: Store<AccessRequest>,
    pub admission_policies: Store<ValidatingAdmissionPolicy>,
    pub admission_bindings: Store<ValidatingAdmissionPolicyBinding>,
    pub role_bindings: Store<RoleBinding>,
    pub cluster_role_bindings: Store<ClusterRoleBinding>,
    /// Roles not made by kube-jit, and every ClusterRole: what grants bind by name.
    pub roles: Store<Role>,
    pub cluster_roles: Store<ClusterRole>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use std::time::{Duration, Instant};

    fn write(rv: u64, ago: Duration, terminal: bool) -> Written {
        Written { resource_version: rv, at: Instant::now() - ago, terminal }
    }

    #[test]
    fn an_older_copy_than_an_ending_write_is_never_worked_on() {
        let ended = write(10, Duration::from_secs(300), true);
        assert_eq!(behind(9, &ended), Some(Behind::Ended), "however long the watch lags");
        assert_eq!(behind(10, &ended), None, "the written copy itself");
        assert_eq!(behind(11, &ended), None, "a newer change (a deletion, say) is worked on");
    }

    #[test]
    fn no_copy_of_a_finalized_request_is_worked_on() {
        for cached in [0, 10, u64::MAX - 1] {
            assert_eq!(behind(cached, &Written::gone()), Some(Behind::Ended), "copy at {cached}");
        }
    }

    #[test]
    fn an_older_copy_than_another_write_waits_only_a_while() {
        assert_eq!(behind(9, &write(10, Duration::ZERO, false)), Some(Behind::Catching));
        assert_eq!(behind(9, &write(10, CACHE_CATCH_UP + Duration::from_millis(1), false)), None);
    }

    fn request(phase: Phase, started: Option<i64>, revoked: Option<i64>) -> AccessRequest {
        let time = |s: i64| serde_json::json!(jiff::Timestamp::from_second(s).unwrap().to_string());
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "r", "namespace": "n", "uid": "u"},
            "spec": {"requester": {"user": "u"}, "namespaces": ["a"], "duration": "1m"},
            "status": {"phase": phase, "grant": {"id": "g",
                "startedAt": started.map(time), "revokedAt": revoked.map(time)}},
        }))
        .unwrap()
    }

    #[test]
    fn a_held_back_line_matches_only_the_write_it_belongs_to() {
        let line = |recorded| AuditLine {
            event: crate::audit::AuditEvent::Expired,
            recorded,
            policy: None,
            reason: None,
            message: None,
            expires_at: None,
            identity: None,
        };
        let ended = line(request(Phase::Expired, Some(100), Some(160)));
        assert!(ended.committed_in(&request(Phase::Expired, Some(100), Some(160))));
        assert!(!ended.committed_in(&request(Phase::Granted, Some(100), None)), "the write did not commit");
        assert!(!ended.committed_in(&request(Phase::Expired, Some(100), Some(161))), "another writer ended it");
        let granted = line(request(Phase::Granted, Some(100), None));
        assert!(granted.committed_in(&request(Phase::Granted, Some(100), None)));
        assert!(!granted.committed_in(&request(Phase::Approved, None, None)));
    }

    #[test]
    fn only_errors_without_a_final_answer_leave_a_write_unknown() {
        let answered = |code| kube::Error::Api(kube::core::Status::failure("x", "X").with_code(code).boxed());
        for (code, unknown) in [(409, false), (429, false), (403, false), (500, false), (504, true)] {
            assert_eq!(outcome_unknown(&crate::Error::Kube(answered(code))), unknown, "{code}");
        }
        let lost = kube::Error::Service("connection reset".into());
        assert!(outcome_unknown(&crate::Error::Kube(lost)));
    }

    #[test]
    fn conflicts_back_off_doubling_to_a_cap() {
        let ms: Vec<u128> = (1..=8).map(|n| conflict_delay(n).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(conflict_delay(u32::MAX), CONFLICT_BACKOFF_MAX);
    }
}
