//! The operator's I/O side: caches (reflectors) fed by watches, the
//! AccessRequest controller, and the safety nets, wired together by `run`.

pub mod access_request;
pub mod agent_identity;
pub mod context;
pub mod delegation;
pub mod extension;
pub mod objects;
pub mod sweep;
pub mod transitions;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, channel::mpsc};
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::access_approval::AccessApproval;
use crate::api::access_policy::AccessPolicy;
use crate::api::access_request::AccessRequest;
use crate::api::agent_identity::AgentIdentity;
use crate::error::{Error, Result};
use crate::names;
use context::{Context, Stores};

/// Operator settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How often the sweep looks for managed objects that outlived their grant.
    pub sweep_interval: Duration,
    /// Trust domain of default SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
    pub trust_domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self { sweep_interval: Duration::from_secs(30), trust_domain: "cluster.local".into() }
    }
}

/// Starts a reflector for `K` in its own task, sending each changed object on.
fn cache<K>(api: Api<K>, changes: Option<mpsc::UnboundedSender<K>>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream =
        reflector::reflector(writer, watcher(api, watcher::Config::default())).default_backoff().touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(object) => {
                    if let Some(tx) = &changes {
                        let _ = tx.unbounded_send(object);
                    }
                }
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch error; retrying"),
            }
        }
    });
    store
}

/// Maps a managed object to the AccessRequest it belongs to.
fn owner_request<K: Resource>(object: K) -> Option<ObjectRef<AccessRequest>> {
    let (ns, name) = object.meta().annotations.as_ref()?.get(names::REQUEST_ANNOTATION)?.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// Runs the operator until SIGTERM or Ctrl-C.
pub async fn run(client: Client, settings: Settings) -> Result<()> {
    // Policy and identity changes re-decide every request; approvals only theirs.
    let (policy_tx, policy_rx) = mpsc::unbounded();
    let policies = cache(Api::<AccessPolicy>::all(client.clone()), Some(policy_tx));
    let (agent_tx, agent_rx) = mpsc::unbounded();
    let agents = cache(Api::<AgentIdentity>::all(client.clone()), Some(agent_tx));
    let (vap_tx, vap_rx) = mpsc::unbounded();
    let admission_policies = cache(Api::<ValidatingAdmissionPolicy>::all(client.clone()), Some(vap_tx));
    let (vapb_tx, vapb_rx) = mpsc::unbounded();
    let admission_bindings = cache(Api::<ValidatingAdmissionPolicyBinding>::all(client.clone()), Some(vapb_tx));
    // Standing-privilege checks read every binding.
    let (rb_tx, rb_rx) = mpsc::unbounded();
    let role_bindings = cache(Api::<RoleBinding>::all(client.clone()), Some(rb_tx));
    let (crb_tx, crb_rx) = mpsc::unbounded();
    let cluster_role_bindings = cache(Api::<ClusterRoleBinding>::all(client.clone()), Some(crb_tx));
    let rbac_rx = futures::stream::select(rb_rx.map(|_| ()), crb_rx.map(|_| ()));
    let (approval_tx, approval_rx) = mpsc::unbounded();
    let approvals = cache(Api::<AccessApproval>::all(client.clone()), Some(approval_tx));
    let (ns_store, ns_writer) = reflector::store();
    let ns_stream = reflector::reflector(
        ns_writer,
        watcher(Api::<PartialObjectMeta<Namespace>>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(ns_stream.for_each(|_| async {}));

    let requests_api = Api::<AccessRequest>::all(client.clone());
    let controller = Controller::new(requests_api, watcher::Config::default());
    let stores = Stores {
        policies: policies.clone(),
        approvals: approvals.clone(),
        agents: agents.clone(),
        namespaces: ns_store.clone(),
        requests: controller.store(),
        admission_policies: admission_policies.clone(),
        admission_bindings: admission_bindings.clone(),
        role_bindings: role_bindings.clone(),
        cluster_role_bindings: cluster_role_bindings.clone(),
    };
    let ctx = Arc::new(Context::new(client.clone(), stores, settings.trust_domain.clone()));

    // Decisions read these caches: never decide on a cache that has not synced.
    policies.wait_until_ready().await.map_err(|_| Error::MissingField("policy cache"))?;
    agents.wait_until_ready().await.map_err(|_| Error::MissingField("agent cache"))?;
    approvals.wait_until_ready().await.map_err(|_| Error::MissingField("approval cache"))?;
    ns_store.wait_until_ready().await.map_err(|_| Error::MissingField("namespace cache"))?;
    admission_policies.wait_until_ready().await.map_err(|_| Error::MissingField("admission policy cache"))?;
    admission_bindings.wait_until_ready().await.map_err(|_| Error::MissingField("admission binding cache"))?;
    role_bindings.wait_until_ready().await.map_err(|_| Error::MissingField("rolebinding cache"))?;
    cluster_role_bindings.wait_until_ready().await.map_err(|_| Error::MissingField("clusterrolebinding cache"))?;
    if let Err(why) = ctx.admission_ready() {
        tracing::error!(why, "admission policies missing: no grant will be made until they are installed");
    }

    // Before anything else: revoke what expired while no operator ran.
    let overdue = sweep::revoke_overdue(&ctx, Duration::ZERO).await?;
    let swept = sweep::sweep(&client).await?;
    tracing::info!(overdue_revoked = overdue, orphans_deleted = swept, "start-up revocation done");

    let sweeper = {
        let ctx = ctx.clone();
        let interval = settings.sweep_interval;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.tick().await;
            loop {
                tick.tick().await;
                // The controller revokes on time; this only catches what it missed.
                if let Err(e) = sweep::revoke_overdue(&ctx, Duration::from_secs(2)).await {
                    tracing::warn!(error = %e, "periodic revocation check failed");
                }
                match sweep::sweep(&ctx.client).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(deleted = n, "sweep deleted managed objects that outlived their grant"),
                    Err(e) => tracing::warn!(error = %e, "sweep failed"),
                }
            }
        })
    };

    let managed = watcher::Config::default().labels(names::MANAGED_SELECTOR);
    let approval_triggers = approval_rx.filter_map(|a: AccessApproval| async move {
        Some(ObjectRef::<AccessRequest>::new(&a.spec.request).within(&a.namespace()?))
    });
    let everything = futures::stream::select_all([
        policy_rx.map(|_| ()).boxed(),
        agent_rx.map(|_| ()).boxed(),
        vap_rx.map(|_| ()).boxed(),
        vapb_rx.map(|_| ()).boxed(),
    ]);
    let agents_controller = Controller::new(Api::<AgentIdentity>::all(client.clone()), watcher::Config::default())
        .watches(Api::<AccessRequest>::all(client.clone()), watcher::Config::default(), |r: AccessRequest| {
            Some(ObjectRef::<AgentIdentity>::new(r.spec.for_agent.as_deref()?).within(&r.namespace()?))
        })
        .reconcile_all_on(rbac_rx)
        .shutdown_on_signal()
        .run(agent_identity::reconcile, agent_error_policy, ctx.clone())
        .for_each(|_| async {});
    let requests_controller = controller
        .watches(Api::<RoleBinding>::all(client.clone()), managed.clone(), owner_request)
        .watches(Api::<ClusterRoleBinding>::all(client.clone()), managed.clone(), owner_request)
        .watches(Api::<ServiceAccount>::all(client.clone()), managed, owner_request)
        .reconcile_on(approval_triggers)
        .reconcile_all_on(everything)
        .shutdown_on_signal()
        .run(access_request::reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Reconciler errors are logged (and retried) by error_policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) | Ok(_) => {}
                // Anything else means a scheduled reconcile did not run: say so.
                Err(e) => tracing::warn!(error = %e, "controller could not run a reconcile"),
            }
        });
    futures::future::join(requests_controller, agents_controller).await;
    sweeper.abort();
    tracing::info!("operator stopped");
    Ok(())
}

fn agent_error_policy(agent: Arc<AgentIdentity>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(agent = %agent.name_any(), error = %error, "AgentIdentity reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Retries soon on conflicts (a decision made on a stale cache), later on other errors.
fn error_policy(request: Arc<AccessRequest>, error: &Error, _ctx: Arc<Context>) -> Action {
    let conflict = matches!(error, Error::Kube(kube::Error::Api(s)) if s.code == 409)
        || matches!(error, Error::Finalizer(f) if matches!(f.as_ref(), kube::runtime::finalizer::Error::ApplyFailed(Error::Kube(kube::Error::Api(s)))|kube::runtime::finalizer::Error::CleanupFailed(Error::Kube(kube::Error::Api(s))) if s.code == 409));
    if conflict {
        return Action::requeue(Duration::from_millis(100));
    }
    tracing::warn!(request = %request.name_any(), namespace = request.namespace().unwrap_or_default(), error = %error, label = error.metric_label(), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(1))
}
