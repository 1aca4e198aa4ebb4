//! The objects kube-jit made, as label-selected metadata-only caches: a
//! deleted one triggers its request's reconcile, and a live grant's objects are
//! checked against the caches instead of one GET each per reconcile.

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use crate::api::{AccessRequest, ObjectRef as GrantObject};
use crate::names;

/// Metadata caches of every kube-jit-managed object, by kind.
#[derive(Clone)]
pub struct ManagedObjects {
    service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    roles: Store<PartialObjectMeta<Role>>,
    role_bindings: Store<PartialObjectMeta<RoleBinding>>,
    cluster_roles: Store<PartialObjectMeta<ClusterRole>>,
    cluster_role_bindings: Store<PartialObjectMeta<ClusterRoleBinding>>,
}

/// A metadata reflector of `K`'s managed objects, and the requests its changes concern.
fn watch<K>(client: &Client) -> (Store<PartialObjectMeta<K>>, BoxStream<'static, ObjectRef<AccessRequest>>)
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(names::MANAGED_SELECTOR);
    let objects = watcher(Api::<PartialObjectMeta<K>>::all(client.clone()), config).modify(keep_what_is_read);
    let stream = reflector::reflector(writer, objects)
        .backoff(super::backoff::watches())
        .touched_objects()
        .filter_map(|o| async move { super::owner_request(o.ok()?) })
        .boxed();
    (store, stream)
}

/// What these caches read is whether an object exists and which request it
/// belongs to: the rest of its metadata (managedFields above all, a tree per
/// field manager) goes, or it would be most of the operator's memory.
fn keep_what_is_read<K>(object: &mut PartialObjectMeta<K>) {
    let meta = &mut object.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.retain(|k, _| k == names::REQUEST_ANNOTATION);
    }
}

/// The task feeding the caches; stopped when dropped (the end of a term as leader).
pub struct Feeding(tokio::task::JoinHandle<()>);

impl Drop for Feeding {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl ManagedObjects {
    /// Starts the caches, fed by a task of their own (so they fill before any
    /// reconcile runs); the stream names the request of every managed object
    /// that changed or went (drive it, for example with `reconcile_on`). The
    /// caches stop being fed when the returned [`Feeding`] is dropped.
    pub fn start(client: &Client) -> (ManagedObjects, BoxStream<'static, ObjectRef<AccessRequest>>, Feeding) {
        let (service_accounts, a) = watch::<ServiceAccount>(client);
        let (roles, b) = watch::<Role>(client);
        let (role_bindings, c) = watch::<RoleBinding>(client);
        let (cluster_roles, d) = watch::<ClusterRole>(client);
        let (cluster_role_bindings, e) = watch::<ClusterRoleBinding>(client);
        let objects = ManagedObjects { service_accounts, roles, role_bindings, cluster_roles, cluster_role_bindings };
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut changes = futures::stream::select_all([a, b, c, d, e]);
        let task = tokio::spawn(async move {
            while let Some(request) = changes.next().await {
                if tx.unbounded_send(request).is_err() {
                    return;
                }
            }
        });
        (objects, rx.boxed(), Feeding(task))
    }

    /// Whether every cache has its first full list: until then, an object
    /// missing from a cache says nothing.
    pub async fn synced(&self) {
        let _ = self.service_accounts.wait_until_ready().await;
        let _ = self.roles.wait_until_ready().await;
        let _ = self.role_bindings.wait_until_ready().await;
        let _ = self.cluster_roles.wait_until_ready().await;
        let _ = self.cluster_role_bindings.wait_until_ready().await;
    }

    /// Whether the cache shows the object. `false` is not proof it is gone (a
    /// just-made object may not be cached yet): ask the API server then.
    pub fn contains(&self, object: &GrantObject) -> bool {
        fn has<K: Resource<DynamicType = ()> + Clone>(
            store: &Store<PartialObjectMeta<K>>,
            ns: &str,
            name: &str,
        ) -> bool {
            let key = ObjectRef::new(name);
            let key = if ns.is_empty() { key } else { key.within(ns) };
            store.get(&key).is_some()
        }
        let (ns, name) = (object.namespace.as_str(), object.name.as_str());
        match object.kind.as_str() {
            "ServiceAccount" => has(&self.service_accounts, ns, name),
            "Role" => has(&self.roles, ns, name),
            "RoleBinding" => has(&self.role_bindings, ns, name),
            "ClusterRole" => has(&self.cluster_roles, "", name),
            "ClusterRoleBinding" => has(&self.cluster_role_bindings, "", name),
            _ => false,
        }
    }
}
