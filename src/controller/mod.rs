//! The operator's I/O side: caches (reflectors) fed by watches, the
//! AccessRequest controller, and the safety nets, wired together by `run`.

pub mod access_request;
pub mod agent_identity;
pub mod api_client;
pub mod attestation;
pub mod backoff;
pub mod context;
pub mod delegation;
pub mod events;
pub mod extension;
pub mod index;
pub mod interned;
pub mod managed;
pub mod objects;
pub mod sweep;
pub mod transitions;
pub mod uninstall;
pub mod workloads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, Shared};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::{broadcast, watch};

use crate::api::access_approval::AccessApproval;
use crate::api::access_policy::AccessPolicy;
use crate::api::access_request::AccessRequest;
use crate::api::agent_identity::AgentIdentity;
use crate::error::{Error, Result};
use crate::leadership::{self, LeaseSettings};
use crate::names;
use context::{Context, Stores};

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the sweep looks for managed objects that outlived their grant.
    pub sweep_interval: Duration,
    /// Trust domain of default SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
    pub trust_domain: String,
    /// Act only while holding this Lease; `None`: always act (a single replica).
    pub leader_election: Option<LeaseSettings>,
    /// Where to serve `/metrics`, `/healthz` and `/readyz`; `None`: nowhere.
    pub http_addr: Option<SocketAddr>,
    /// The audiences tokens for grant identities may carry; empty: the API
    /// server's default audiences ([`api_client::api_server_audiences`]).
    pub token_audiences: Vec<String>,
    /// Where grant identities live ([`names::DEFAULT_GRANTS_NAMESPACE`] by default).
    pub grants_namespace: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_secs(30),
            trust_domain: "cluster.local".into(),
            leader_election: None,
            http_addr: None,
            token_audiences: Vec::new(),
            grants_namespace: names::DEFAULT_GRANTS_NAMESPACE.into(),
        }
    }
}

/// Logs the objects labelled as kube-jit's that no grant made: never deleted,
/// and where they bind a ServiceAccount, its standing privilege.
fn report_foreign(foreign: &[String]) {
    if !foreign.is_empty() {
        tracing::warn!(
            objects = ?foreign,
            "objects carry kube-jit's labels but no grant recorded them: left alone (someone else made them)"
        );
    }
}

/// Where nothing is granted: the grants namespace, and every namespace the
/// operator's own ServiceAccount, Lease or Pod may live in (whoever could
/// mint the operator's token would hold all it holds): the default
/// `kube-jit-system`, the Lease's, `$POD_NAMESPACE`, and the namespace of the
/// ServiceAccount the API server says the operator is.
async fn reserved_namespaces(client: &Client, settings: &Settings) -> Vec<String> {
    let mut reserved = vec![settings.grants_namespace.clone(), names::DEFAULT_OPERATOR_NAMESPACE.to_string()];
    reserved.extend(settings.leader_election.as_ref().map(|l| l.namespace.clone()));
    reserved.extend(std::env::var("POD_NAMESPACE").ok());
    match crate::client::whoami(client).await {
        Ok(user) => reserved.extend(names::parse_service_account_username(&user).map(|(ns, _)| ns.to_string())),
        Err(e) => tracing::warn!(error = %e, "could not learn the operator's own namespace (SelfSubjectReview)"),
    }
    reserved.retain(|ns| !ns.is_empty());
    reserved.sort();
    reserved.dedup();
    reserved
}

/// What a cache change asks the controllers to do.
#[derive(Clone, Debug)]
enum Change {
    /// Re-decide every request (policies, identities, admission policies).
    Decisions,
    /// Re-check every identity's standing privilege (bindings).
    Rbac,
    /// Re-decide one request (an approval of it changed).
    Approval(ObjectRef<AccessRequest>),
    /// Re-decide the requests that target or live in this namespace (its
    /// labels changed, or it came or went).
    Namespace(String),
    /// Re-decide the requests that bind this role by name (its rules changed):
    /// (kind, namespace, name), the namespace empty for a ClusterRole.
    Role(String, String, String),
}

/// A [`ChangeOf`] for roles: announces a role only when its rules change
/// (labels, annotations and the like do not re-decide anything).
fn on_rules_change<K: Resource + 'static>(
    kind: &'static str,
    rules: fn(&K) -> Option<&Vec<PolicyRule>>,
) -> impl ChangeOf<K> {
    let seen = std::sync::Mutex::new(std::collections::HashMap::new());
    move |role: &K| {
        let key = (role.meta().namespace.clone().unwrap_or_default(), role.meta().name.clone().unwrap_or_default());
        let now = serde_json::to_string(&rules(role)).unwrap_or_default();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let changed = seen.insert(key.clone(), now.clone()).is_some_and(|before| before != now);
        changed.then(|| Change::Role(kind.to_string(), key.0, key.1))
    }
}

/// Cached objects never need their managedFields (often most of an object's
/// size): dropping them keeps the operator's memory per object small.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// What the request cache keeps of an AccessRequest: all but its
/// managedFields and the copy of itself `kubectl apply` leaves in an
/// annotation (nothing reads them; status writes send the status alone).
pub(super) fn slim_request(request: &mut AccessRequest) {
    drop_managed_fields(request);
    if let Some(annotations) = request.metadata.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Starts a reflector for `K` in its own task, announcing each change `what` maps it to.
fn cache<K>(api: Api<K>, changes: &broadcast::Sender<Change>, what: impl ChangeOf<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    cache_selected(api, watcher::Config::default(), changes, what)
}

/// What a change of a cached object means to the controllers, if anything.
trait ChangeOf<K>: Fn(&K) -> Option<Change> + Send + 'static {}
impl<K, F: Fn(&K) -> Option<Change> + Send + 'static> ChangeOf<K> for F {}

/// [`cache`] of the objects `config` selects.
fn cache_selected<K>(
    api: Api<K>,
    config: watcher::Config,
    changes: &broadcast::Sender<Change>,
    what: impl ChangeOf<K>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflect(watcher(api, config).modify(drop_managed_fields), changes, what)
}

/// [`cache`] keeping managedFields: the admission objects' write times are
/// what proves since when admission has been in force (few, small objects).
fn cache_with_fields<K>(api: Api<K>, changes: &broadcast::Sender<Change>, what: impl ChangeOf<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    reflect(watcher(api, watcher::Config::default()), changes, what)
}

fn reflect<K>(
    events: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    changes: &broadcast::Sender<Change>,
    what: impl ChangeOf<K>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, events).backoff(backoff::watches()).touched_objects();
    let changes = changes.clone();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(object) => {
                    // No receiver on a standby: nothing acts on it.
                    if let Some(change) = what(&object) {
                        let _ = changes.send(change);
                    }
                }
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch error; retrying"),
            }
        }
    });
    store
}

/// Whether every subject of a binding is a ServiceAccount named as kube-jit
/// names grant identities (an empty binding counts too): such a binding gives
/// no agent's base ServiceAccount any right.
fn only_grant_identities(subjects: Option<&[k8s_openapi::api::rbac::v1::Subject]>) -> bool {
    subjects.unwrap_or_default().iter().all(|s| s.kind == "ServiceAccount" && names::is_grant_object_name(&s.name))
}

/// The cache of bindings of kind `K` that could give an agent's own
/// ServiceAccount a right, managedFields dropped; each change re-checks every
/// identity's standing privilege. A binding whose subjects (`subjects`) are all
/// grant identities ([`only_grant_identities`]) is left out of a relist, and an
/// update that makes a binding so removes it from the cache (as a deletion
/// would), so the cache never keeps an older copy of it.
fn standing_bindings<K>(
    client: &Client,
    changes: &broadcast::Sender<Change>,
    subjects: fn(&K) -> Option<&[k8s_openapi::api::rbac::v1::Subject]>,
) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let events = watcher(Api::<K>::all(client.clone()), watcher::Config::default()).modify(drop_managed_fields);
    let standing = events.filter_map(move |event| {
        let event = match event {
            Ok(watcher::Event::Apply(b)) if only_grant_identities(subjects(&b)) => Ok(watcher::Event::Delete(b)),
            Ok(watcher::Event::InitApply(b)) if only_grant_identities(subjects(&b)) => {
                return futures::future::ready(None);
            }
            other => other,
        };
        futures::future::ready(Some(event))
    });
    reflect(standing, changes, move |b: &K| (!only_grant_identities(subjects(b))).then_some(Change::Rbac))
}

/// Maps a managed object to the AccessRequest it belongs to.
fn owner_request<K: Resource>(object: K) -> Option<ObjectRef<AccessRequest>> {
    let (ns, name) = object.meta().annotations.as_ref()?.get(names::REQUEST_ANNOTATION)?.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// The caches decisions read from. Every replica keeps them, standbys too, so
/// a takeover starts on synced caches.
#[derive(Clone)]
struct Caches {
    policies: Store<AccessPolicy>,
    approvals: Store<AccessApproval>,
    agents: Store<AgentIdentity>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    admission_policies: Store<ValidatingAdmissionPolicy>,
    admission_bindings: Store<ValidatingAdmissionPolicyBinding>,
    role_bindings: Store<RoleBinding>,
    cluster_role_bindings: Store<ClusterRoleBinding>,
    roles: Store<Role>,
    cluster_roles: Store<ClusterRole>,
    changes: broadcast::Sender<Change>,
}

impl Caches {
    fn start(client: &Client) -> Caches {
        let (changes, _) = broadcast::channel(1024);
        Caches {
            policies: cache(Api::all(client.clone()), &changes, |_| Some(Change::Decisions)),
            agents: cache(Api::all(client.clone()), &changes, |_| Some(Change::Decisions)),
            admission_policies: cache_with_fields(Api::all(client.clone()), &changes, |_| Some(Change::Decisions)),
            admission_bindings: cache_with_fields(Api::all(client.clone()), &changes, |_| Some(Change::Decisions)),
            // Standing-privilege checks read every binding, kube-jit's labels
            // or not: a label proves nothing, what grants recorded does. A
            // binding whose subjects are all grant identities cannot give an
            // agent's own ServiceAccount anything, so grants coming and going
            // do not re-check every agent.
            // Such bindings (every grant's) are not kept either: thousands of
            // live grants would otherwise be thousands of cached bindings.
            role_bindings: standing_bindings(client, &changes, |b: &RoleBinding| b.subjects.as_deref()),
            cluster_role_bindings: standing_bindings(client, &changes, |b: &ClusterRoleBinding| b.subjects.as_deref()),
            // The rules of the roles grants bind by name: a role that gains
            // rights ends the grants holding it. kube-jit's own Roles (which
            // only the operator writes) are not watched.
            roles: cache_selected(
                Api::all(client.clone()),
                watcher::Config::default().labels(&format!("{}!={}", names::MANAGED_BY_LABEL, names::MANAGED_BY_VALUE)),
                &changes,
                on_rules_change("Role", |r: &Role| r.rules.as_ref()),
            ),
            cluster_roles: cache(
                Api::all(client.clone()),
                &changes,
                on_rules_change("ClusterRole", |r: &ClusterRole| r.rules.as_ref()),
            ),
            approvals: cache(Api::all(client.clone()), &changes, |a: &AccessApproval| {
                Some(Change::Approval(ObjectRef::new(&a.spec.request).within(&a.namespace()?)))
            }),
            namespaces: {
                // Policies select namespaces by label: a relabelled namespace
                // re-decides what targets it. Other updates (status, annotations) do not.
                let seen = std::sync::Mutex::new(std::collections::BTreeMap::new());
                cache(Api::all(client.clone()), &changes, move |ns: &PartialObjectMeta<Namespace>| {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = seen.insert(ns.name_any(), ns.labels().clone()).as_ref() != Some(ns.labels());
                    changed.then(|| Change::Namespace(ns.name_any()))
                })
            },
            changes,
        }
    }

    /// Decisions read these caches: never decide on a cache that has not synced.
    async fn synced(&self) -> Result<()> {
        self.policies.wait_until_ready().await.map_err(|_| Error::MissingField("policy cache"))?;
        self.agents.wait_until_ready().await.map_err(|_| Error::MissingField("agent cache"))?;
        self.approvals.wait_until_ready().await.map_err(|_| Error::MissingField("approval cache"))?;
        self.namespaces.wait_until_ready().await.map_err(|_| Error::MissingField("namespace cache"))?;
        self.roles.wait_until_ready().await.map_err(|_| Error::MissingField("role cache"))?;
        self.cluster_roles.wait_until_ready().await.map_err(|_| Error::MissingField("cluster role cache"))?;
        let admission = &self.admission_policies;
        admission.wait_until_ready().await.map_err(|_| Error::MissingField("admission policy cache"))?;
        let bindings = &self.admission_bindings;
        bindings.wait_until_ready().await.map_err(|_| Error::MissingField("admission binding cache"))?;
        self.role_bindings.wait_until_ready().await.map_err(|_| Error::MissingField("rolebinding cache"))?;
        let crbs = &self.cluster_role_bindings;
        crbs.wait_until_ready().await.map_err(|_| Error::MissingField("clusterrolebinding cache"))?;
        Ok(())
    }

    fn stores(&self, requests: Store<AccessRequest>) -> Stores {
        Stores {
            policies: self.policies.clone(),
            approvals: self.approvals.clone(),
            agents: self.agents.clone(),
            namespaces: self.namespaces.clone(),
            requests,
            admission_policies: self.admission_policies.clone(),
            admission_bindings: self.admission_bindings.clone(),
            role_bindings: self.role_bindings.clone(),
            cluster_role_bindings: self.cluster_role_bindings.clone(),
            roles: self.roles.clone(),
            cluster_roles: self.cluster_roles.clone(),
        }
    }

    /// The changes from now on that `pick` selects. A receiver that fell behind
    /// re-decides everything rather than miss a change.
    fn subscribe<T>(&self, pick: fn(Change) -> Option<T>, missed: Option<T>) -> BoxStream<'static, T>
    where
        T: Clone + Send + Sync + 'static,
    {
        futures::stream::unfold(self.changes.subscribe(), move |mut rx| {
            let missed = missed.clone();
            async move {
                loop {
                    match rx.recv().await {
                        Ok(change) => {
                            if let Some(t) = pick(change) {
                                return Some((t, rx));
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {
                            if let Some(t) = missed {
                                return Some((t, rx));
                            }
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        })
        .boxed()
    }
}

/// Resolves on SIGTERM or Ctrl-C. The handlers are installed now, not on first poll.
fn termination() -> Shared<BoxFuture<'static, ()>> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => futures::future::pending().await } } => {}
        }
        tracing::info!("shutting down: finishing reconciles in flight, taking no new work");
    }
    .boxed()
    .shared()
}

/// Runs the operator until SIGTERM or Ctrl-C: keeps the caches on every
/// replica, and acts (revocation on start, controllers, sweep) only while it
/// leads. On shutdown, reconciles in flight finish before the Lease is released.
pub async fn run(client: Client, settings: Settings) -> Result<()> {
    let stop = termination();
    let health = crate::http::Health::new();
    let server = match settings.http_addr {
        Some(addr) => Some(crate::http::serve(addr, health.clone()).await.map_err(Error::Http)?),
        None => None,
    };
    let caches = Caches::start(&client);
    tokio::select! {
        synced = caches.synced() => synced?,
        _ = stop.clone() => return Ok(()),
    }
    health.set_ready(true);

    let (acting_tx, mut acting) = watch::channel(settings.leader_election.is_none());
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    // Without election, `acting` stays true as long as its sender lives.
    let (election, always_acting) = match settings.leader_election.clone() {
        Some(lease) => {
            tracing::info!(lease = %lease.name, namespace = %lease.namespace, identity = %lease.identity, "waiting for the lease");
            let release = async move {
                let _ = release_rx.await;
            };
            (Some(tokio::spawn(leadership::elect(client.clone(), lease, acting_tx, release))), None)
        }
        None => (None, Some(acting_tx)),
    };
    // Audit lines of writes whose answer was lost, kept across terms.
    let held = context::HeldLines::default();
    let mut outcome = Ok(());
    loop {
        tokio::select! {
            _ = stop.clone() => break,
            led = acting.wait_for(|a| *a) => if led.is_err() { break },
        }
        tracing::info!("leading: acting");
        let mut term = tokio::spawn(act(client.clone(), caches.clone(), settings.clone(), stop.clone(), held.clone()));
        let lost = tokio::select! {
            _ = acting.wait_for(|a| !*a) => true,
            ended = &mut term => {
                outcome = ended.unwrap_or(Ok(()));
                break;
            }
        };
        if lost {
            // Before anyone else may take the Lease: the fence leaves a margin.
            term.abort();
            let _ = term.await;
            crate::metrics::global().set_leader(None);
            tracing::warn!("lost the lease: stopped acting, waiting to lead again");
            // Lines of writes that committed unanswered would otherwise wait
            // for this replica to lead again, which may never happen.
            // Bounded: a replica cut off from the API server must be ready to lead again.
            let settling = tokio::time::timeout(Duration::from_secs(5), context::settle_held_lines(&client, &held));
            if let Ok(settled @ 1..) = settling.await {
                tracing::info!(settled, "wrote the audit lines of writes that committed without an answer");
            }
        }
    }
    crate::metrics::global().set_leader(None);
    drop(always_acting);
    drop(release_tx);
    if let Some(election) = election {
        let _ = election.await;
    }
    if let Some(server) = server {
        server.abort();
    }
    tracing::info!("operator stopped");
    outcome
}

/// One term as leader: revoke what expired while nobody acted, then run the
/// controllers and the sweep until `stop` (graceful) or until aborted (lease lost).
async fn act(
    client: Client,
    caches: Caches,
    settings: Settings,
    stop: Shared<BoxFuture<'static, ()>>,
    held: context::HeldLines,
) -> Result<()> {
    let requests_api = Api::<AccessRequest>::all(client.clone());
    let (reader, writer) = reflector::store();
    // Requests deleted by any path that skipped the finalizer (stripped by an
    // admin, the garbage collector following an ownerReference set while
    // admission was off) still have their grants revoked, from the last copy.
    let (vanished_tx, mut vanished_rx) = tokio::sync::mpsc::unbounded_channel::<AccessRequest>();
    let index = Arc::new(index::RequestIndex::default());
    let indexed = index.clone();
    // A request made for an agent changed: its AgentIdentity's status counts
    // it. Taken from this watch rather than a second watch of every request.
    let (agent_tx, agent_triggers) = futures::channel::mpsc::unbounded::<ObjectRef<AgentIdentity>>();
    let interner = interned::Interner::default();
    let slim = watcher(requests_api, watcher::Config::default()).modify(move |r| {
        slim_request(r);
        interner.share(r);
    });
    let requests = reflector::reflector(writer, slim)
        .backoff(backoff::watches())
        .inspect(move |event| {
            if let Ok(event) = event {
                indexed.observe(event);
                if let watcher::Event::Apply(r) | watcher::Event::InitApply(r) | watcher::Event::Delete(r) = event
                    && let (Some(agent), Some(ns)) = (r.spec.for_agent.as_deref(), r.namespace())
                {
                    let _ = agent_tx.unbounded_send(ObjectRef::new(agent).within(&ns));
                }
            }
            if let Ok(watcher::Event::Delete(request)) = event {
                let _ = vanished_tx.send(request.clone());
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(requests, reader);
    let (managed_objects, managed_changes, _feeding) = managed::ManagedObjects::start(&client);
    let mut ctx = Context::new(client.clone(), caches.stores(controller.store()), settings.trust_domain.clone());
    ctx.index = index;
    ctx.token_audiences = settings.token_audiences.clone();
    ctx.grants_namespace = settings.grants_namespace.clone();
    ctx.reserved_namespaces = reserved_namespaces(&client, &settings).await;
    while ctx.token_audiences.is_empty() {
        // Grant identities record them; without them no token could be minted.
        match api_client::api_server_audiences(&client).await {
            Ok(audiences) => ctx.token_audiences = audiences,
            Err(e) => {
                tracing::warn!(error = %e, "could not learn the API server's token audiences (set --token-audiences); retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    let (workloads, touched) = workloads::Workloads::new(client.clone());
    let workloads = Arc::new(workloads);
    let ctx = Arc::new(ctx.with_managed(managed_objects).with_held_lines(held).with_workloads(workloads.clone()));
    crate::metrics::global().set_leader(Some(controller.store()));
    if let Err(why) = ctx.admission_ready() {
        tracing::error!(why, "admission policies missing: no grant will be made until they are installed");
    }
    if let Err(why) = ctx.grants_namespace_ready() {
        tracing::error!(why, "grants will fail until the grants namespace is ready");
    }

    // Before anything else: revoke what expired while no operator ran. The API
    // server may be restarting too: retry rather than exit with grants overdue.
    let start_up = async {
        loop {
            // In turn: overdue grants first (they are the privilege at risk).
            let done = async {
                let requests = sweep::each_request(&client, |r| sweep::needs_start_up(&r).then_some(r)).await?;
                let overdue = sweep::revoke_overdue(&ctx, &requests, Duration::ZERO).await?;
                let swept = sweep::sweep(&client, &ctx.grants_namespace).await?;
                Ok::<_, Error>((requests, overdue, swept))
            };
            match done.await {
                Ok(done) => break done,
                Err(e) => tracing::warn!(error = %e, "start-up revocation failed; retrying"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let (requests, overdue, swept) = tokio::select! {
        done = start_up => done,
        // Stopping while the API server stays unreachable: the next leader revokes.
        _ = past_grace(stop.clone()) => return Ok(()),
    };
    tracing::info!(overdue_revoked = overdue, orphans_deleted = swept.deleted, "start-up revocation done");
    // A live grant's reconcile checks its objects against these caches; before
    // their first list every object would be a GET, thousands at once after a
    // restart, queued ahead of new requests. They filled during the revocation.
    tokio::select! {
        _ = ctx.managed.as_ref().expect("set above").synced() => {}
        _ = past_grace(stop.clone()) => return Ok(()),
    }
    report_foreign(&swept.foreign);
    // The same list: those it shows overdue were just ended, the rest (approved, not made) are untouched.
    let resumed = access_request::resume_interrupted(&ctx, requests).await;
    if resumed > 0 {
        tracing::info!(resumed, "resumed grants approved but not made before this term");
    }

    let sweeper = {
        let ctx = ctx.clone();
        let interval = settings.sweep_interval;
        async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            let mut reported = swept.foreign;
            loop {
                tick.tick().await;
                match sweep::sweep(&ctx.client, &ctx.grants_namespace).await {
                    Ok(swept) => {
                        if swept.deleted > 0 {
                            tracing::warn!(
                                deleted = swept.deleted,
                                "sweep deleted managed objects that outlived their grant"
                            );
                        }
                        // Each finding once, not every sweep.
                        if swept.foreign != reported {
                            report_foreign(&swept.foreign);
                            reported = swept.foreign;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        }
    };

    // The controller revokes on time; this catches, within a second or so,
    // whatever it missed, from a fresh list rather than its cache.
    let expiries = {
        let ctx = ctx.clone();
        async move { sweep::guard_expiries(&ctx, ctx.stores.requests.clone(), EXPIRY_GRACE, settings.sweep_interval).await }
    };
    let vanished = {
        let ctx = ctx.clone();
        async move {
            while let Some(request) = vanished_rx.recv().await {
                access_request::revoke_vanished(&ctx, &request).await;
            }
        }
    };
    let approval_triggers = caches.subscribe(
        |c| match c {
            Change::Approval(r) => Some(r),
            _ => None,
        },
        None,
    );
    let everything = caches.subscribe(|c| matches!(c, Change::Decisions).then_some(()), Some(()));
    let namespace_triggers = {
        let requests = controller.store();
        // A missed change (the receiver fell behind) re-decides every open request.
        let changed = caches.subscribe(
            |c| match c {
                Change::Namespace(ns) => Some(Some(ns)),
                _ => None,
            },
            Some(None),
        );
        changed.flat_map(move |ns: Option<String>| {
            let affected: Vec<_> = requests
                .state()
                .iter()
                .filter(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                .filter(|r| {
                    ns.as_ref().is_none_or(|ns| r.spec.namespaces.contains(ns) || r.namespace().as_ref() == Some(ns))
                })
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect();
            futures::stream::iter(affected)
        })
    };
    let role_triggers = {
        let requests = controller.store();
        // A missed change re-decides every open request that binds a role.
        let changed = caches.subscribe(
            |c| match c {
                Change::Role(kind, ns, name) => Some(Some((kind, ns, name))),
                _ => None,
            },
            Some(None),
        );
        changed.flat_map(move |role: Option<(String, String, String)>| {
            let affected: Vec<_> = requests
                .state()
                .iter()
                .filter(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
                .filter(|r| {
                    let Some(bound) = &r.spec.role else { return false };
                    role.as_ref().is_none_or(|(kind, ns, name)| {
                        let kind_matches = match bound.kind {
                            crate::api::access_request::RoleKind::ClusterRole => kind == "ClusterRole",
                            crate::api::access_request::RoleKind::Role => {
                                kind == "Role" && r.spec.namespaces.contains(ns)
                            }
                        };
                        kind_matches && &bound.name == name
                    })
                })
                .map(|r| ObjectRef::from_obj(r.as_ref()))
                .collect();
            futures::stream::iter(affected)
        })
    };
    let rbac = caches.subscribe(|c| matches!(c, Change::Rbac).then_some(()), Some(()));
    // A watched Pod changed: re-check the requests that name it.
    let workload_triggers = {
        let requests = controller.store();
        touched.flat_map(move |t| futures::stream::iter(attestation::touched_requests(&requests, &t)))
    };
    // Watch the Pods of what is pending or live, and no others.
    let workload_watches = {
        let requests = controller.store();
        let workloads = workloads.clone();
        let agents = caches.agents.clone();
        async move {
            let _ = requests.wait_until_ready().await;
            let mut tick = tokio::time::interval(WORKLOAD_WATCH_REVIEW);
            loop {
                tick.tick().await;
                let needed = attestation::needed(&requests.state(), &agents.state());
                for (ns, sa) in &needed {
                    workloads.watched(ns, sa);
                }
                workloads.retain(&needed);
            }
        }
    };
    let agents_controller = Controller::new(Api::<AgentIdentity>::all(client.clone()), watcher::Config::default());
    let agents_stop = stop_once_ready(stop.clone(), agents_controller.store());
    let requests_stop = stop_once_ready(stop.clone(), controller.store());
    let agents_controller = agents_controller
        .reconcile_on(agent_triggers)
        .reconcile_all_on(rbac)
        .trigger_backoff(backoff::watches())
        .graceful_shutdown_on(agents_stop)
        .run(agent_identity::reconcile, agent_error_policy, ctx.clone())
        .for_each(|_| async {});
    let requests_controller = controller
        .reconcile_on(managed_changes)
        .reconcile_on(approval_triggers)
        .reconcile_on(namespace_triggers)
        .reconcile_on(role_triggers)
        .reconcile_on(workload_triggers)
        .reconcile_all_on(everything)
        .trigger_backoff(backoff::watches())
        .graceful_shutdown_on(requests_stop)
        .run(reconcile_request, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Reconciler errors are logged (and retried) by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                // A trigger (a grant object going) for a request already gone.
                Err(kube::runtime::controller::Error::ObjectNotFound(r)) => {
                    tracing::debug!(request = %r, "reconcile of a request no longer cached: nothing to do")
                }
                // Anything else means a scheduled reconcile did not run: say so.
                Err(e) => tracing::warn!(error = %e, "controller could not run a reconcile"),
            }
        });
    tokio::select! {
        _ = futures::future::join(requests_controller, agents_controller) => {}
        _ = sweeper => {}
        _ = expiries => {}
        _ = vanished => {}
        _ = workload_watches => {}
        _ = past_grace(stop) => {
            // As after a crash: the next leader finishes what these started.
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the shutdown grace: stopping them");
        }
    }
    Ok(())
}

/// How often the Pod watches are matched to the requests that need them
/// (starting missing ones, stopping unneeded ones). A new grant starts its
/// watch itself; this only catches up after restarts and stops old watches.
const WORKLOAD_WATCH_REVIEW: Duration = Duration::from_secs(10);

/// How long reconciles in flight may take to finish once shutdown begins:
/// well inside Kubernetes' default 30 s termination grace period.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Resolves [`SHUTDOWN_GRACE`] after `stop`.
async fn past_grace(stop: Shared<BoxFuture<'static, ()>>) {
    stop.await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}

/// `stop`, held until the controller's store has its first full list. A
/// controller told to stop before then never lets its runner start (the runner
/// waits for the store), so it would never finish; after it, in-flight
/// reconciles finish and the controller ends.
fn stop_once_ready<K>(
    stop: Shared<BoxFuture<'static, ()>>,
    store: reflector::Store<K>,
) -> Shared<BoxFuture<'static, ()>>
where
    K: kube::Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    async move {
        stop.await;
        let _ = store.wait_until_ready().await;
    }
    .boxed()
    .shared()
}

/// How long after its expiry a grant the controller has not revoked is
/// revoked by the safety net: well inside the 2 s kube-jit promises.
const EXPIRY_GRACE: Duration = Duration::from_millis(750);

/// Requests that `kube-jit uninstall` ended are no longer kube-jit's: leaving
/// them alone keeps their finalizer from coming back while CRDs are deleted.
async fn reconcile_request(request: Arc<AccessRequest>, ctx: Arc<Context>) -> Result<Action> {
    if uninstall::was_uninstalled(&request) {
        return Ok(Action::await_change());
    }
    let uid = request.uid().unwrap_or_default();
    let action = access_request::reconcile(request, ctx.clone()).await?;
    ctx.reconciled(&uid);
    Ok(action)
}

fn agent_error_policy(agent: Arc<AgentIdentity>, error: &Error, _ctx: Arc<Context>) -> Action {
    crate::metrics::global().reconcile_error("AgentIdentity");
    tracing::warn!(agent = %agent.name_any(), error = %error, "AgentIdentity reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Retries soon on conflicts (a decision made on a stale cache), backing off
/// while they repeat; later on other errors.
fn error_policy(request: Arc<AccessRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, Error::Kube(kube::Error::Api(s)) if s.code == 409)
        || matches!(error, Error::Finalizer(f) if matches!(f.as_ref(), kube::runtime::finalizer::Error::ApplyFailed(Error::Kube(kube::Error::Api(s)))|kube::runtime::finalizer::Error::CleanupFailed(Error::Kube(kube::Error::Api(s))) if s.code == 409));
    if conflict {
        return Action::requeue(ctx.conflict_backoff(&request.uid().unwrap_or_default()));
    }
    let gone = matches!(error, Error::Finalizer(f) if matches!(f.as_ref(), kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s)) if s.code == 404));
    if gone {
        // A second cleanup on an older copy, after the first let the request go.
        return Action::await_change();
    }
    crate::metrics::global().reconcile_error("AccessRequest");
    tracing::warn!(request = %request.name_any(), namespace = request.namespace().unwrap_or_default(), error = %error, label = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}
