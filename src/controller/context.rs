//! What every reconcile shares: the client, the caches (reflector stores) the
//! decisions read from, and the Event recorder.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt, core::PartialObjectMeta};

use crate::api::access_approval::AccessApproval;
use crate::api::access_policy::AccessPolicy;
use crate::api::access_request::{AccessRequest, Phase};
use crate::api::agent_identity::AgentIdentity;
use crate::policy::ClusterFacts;

/// resourceVersions are opaque to clients, but the API server's are etcd
/// revisions; where one does not parse, nothing is skipped.
fn resource_version(request: &AccessRequest) -> Option<u64> {
    request.metadata.resource_version.as_deref()?.parse().ok()
}

/// Shared state of the reconcilers.
pub struct Context {
    pub client: Client,
    /// The caches decisions read from.
    pub stores: Stores,
    pub recorder: Recorder,
    /// Trust domain of default SPIFFE IDs.
    pub trust_domain: String,
    /// Held while a request is decided, so concurrent decisions see each
    /// other's grants when enforcing per-subject limits.
    pub decisions: tokio::sync::Mutex<()>,
    /// Grants approved by this process that the cache may not show yet:
    /// request uid → (subject, policy).
    pub pending: std::sync::Mutex<BTreeMap<String, (String, String)>>,
    /// The resourceVersion of each request's last status write by this
    /// process, and when: a reconcile of an older cached copy would redo work
    /// already done and then fail its conditional write.
    written: std::sync::Mutex<BTreeMap<String, (u64, std::time::Instant)>>,
    /// Metadata caches of the objects kube-jit made (while the controllers run).
    pub managed: Option<super::managed::ManagedObjects>,
}

/// How long a reconcile waits for the cache to show this process's own write
/// before acting anyway (every write is conditional, so acting on a stale copy
/// is safe, only wasteful).
const CACHE_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

impl Context {
    pub fn new(client: Client, stores: Stores, trust_domain: String) -> Context {
        let reporter = Reporter { controller: "kube-jit".into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            trust_domain,
            decisions: tokio::sync::Mutex::new(()),
            pending: std::sync::Mutex::new(BTreeMap::new()),
            written: std::sync::Mutex::new(BTreeMap::new()),
            managed: None,
        }
    }

    /// The same context, checking grant objects against `managed`.
    pub fn with_managed(mut self, managed: super::managed::ManagedObjects) -> Context {
        self.managed = Some(managed);
        self
    }

    /// Whether a grant's object exists: the cache when it shows it, else the API server.
    pub async fn object_exists(&self, object: &crate::api::ObjectRef) -> crate::Result<bool> {
        if self.managed.as_ref().is_some_and(|m| m.contains(object)) {
            return Ok(true);
        }
        super::objects::exists_ref(&self.client, object).await
    }

    /// Records the resourceVersion a status write returned.
    pub fn wrote(&self, written: &AccessRequest) {
        let (Some(uid), Some(rv)) = (written.uid(), resource_version(written)) else { return };
        let mut map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if written.status.as_ref().is_some_and(|s| s.phase.is_terminal()) {
            map.remove(&uid);
        } else {
            map.insert(uid, (rv, std::time::Instant::now()));
        }
    }

    /// Whether the cached `request` is older than this process's last write of
    /// it (made less than [`CACHE_CATCH_UP`] ago): its reconcile should wait
    /// for the watch to deliver the newer copy instead of redoing that work.
    pub fn cache_behind(&self, request: &AccessRequest) -> bool {
        let (Some(uid), Some(cached)) = (request.uid(), resource_version(request)) else { return false };
        let map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&uid).is_some_and(|(rv, at)| cached < *rv && at.elapsed() < CACHE_CATCH_UP)
    }

    /// Publishes an Event on the request; failures are logged, never fatal.
    pub async fn event(&self, request: &AccessRequest, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &request.object_ref(&())).await {
            tracing::warn!(error = %e, request = %request.name_any(), "could not publish Event");
        }
    }

    /// The cluster facts a policy decision about `request` needs, from the caches.
    pub fn facts_for<'a>(&self, request: &AccessRequest, agent: Option<&'a AgentIdentity>) -> ClusterFacts<'a> {
        let namespace_labels: BTreeMap<_, _> =
            self.stores.namespaces.state().iter().map(|ns| (ns.name_any(), ns.labels().clone())).collect();
        let subject = subject_key(request);
        let my_uid = request.uid().unwrap_or_default();
        let mut live_grants = BTreeMap::new();
        let mut recent_requests = Vec::new();
        // Uids the cache already shows live, so pending grants are not counted twice.
        let mut cached_live = std::collections::BTreeSet::new();
        let order = |r: &AccessRequest| (r.creation_timestamp().map(|t| t.0), r.name_any());
        for other in self.stores.requests.state() {
            let uid = other.uid().unwrap_or_default();
            let live = other.status.as_ref().is_some_and(|s| matches!(s.phase, Phase::Granted | Phase::Approved));
            if live {
                cached_live.insert(uid.clone());
            }
            if uid == my_uid || subject_key(&other) != subject {
                continue;
            }
            // Only earlier requests count against a cap (creation time, then
            // name, as timestamps have whole seconds), so a later request never
            // withdraws a grant already made.
            if order(&other) < order(request)
                && let Some(t) = other.creation_timestamp()
            {
                recent_requests.push(t.0);
            }
            if live && let Some(policy) = other.status.as_ref().and_then(|s| s.policy.as_ref()) {
                *live_grants.entry(policy.clone()).or_insert(0) += 1;
            }
        }
        for (uid, (s, policy)) in self.pending.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if *uid != my_uid && *s == subject && !cached_live.contains(uid) {
                *live_grants.entry(policy.clone()).or_insert(0) += 1;
            }
        }
        ClusterFacts {
            agent,
            namespace_labels,
            live_grants,
            namespaces_known: true,
            recent_requests,
            now: Some(jiff::Timestamp::now()),
        }
    }

    /// Whether the admission policies that make requesters and approvers
    /// unspoofable are installed, bound and enforcing.
    pub fn admission_ready(&self) -> Result<(), String> {
        let policies = self.stores.admission_policies.state();
        let bindings = self.stores.admission_bindings.state();
        crate::admission::check(policies.iter().map(|p| p.as_ref()), bindings.iter().map(|b| b.as_ref()))
    }

    /// The AgentIdentity a request is for, from the cache.
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
}
