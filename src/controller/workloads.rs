//! The Pods workload-bound requests and grants name, and nothing else: one
//! watch per (namespace, ServiceAccount) of an agent with `spec.workload`
//! that has a pending request or a live grant, selected on the API server by
//! `spec.serviceAccountName`, keeping only what the verdicts read (uid,
//! labels, phase, containers and their digests). No cache of every Pod.
//!
//! Every change of a watched Pod (and every relist, which may hide a
//! deletion made while the watch was down) announces a [`Touched`], which
//! the controller maps to the requests that name the Pod.
//!
//! Decisions do not read these caches: a request is attested against the Pod
//! as the API server returns it then ([`pod`]); a live grant is re-checked
//! against its watch, or against the API server while the watch syncs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, EphemeralContainer, Node, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use super::backoff;
use crate::error::Result;

/// A watched Pod changed (`pod: Some`), or the watch of a ServiceAccount's
/// Pods (re)listed (`pod: None`: any of them may have gone meanwhile).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Touched {
    pub namespace: String,
    pub service_account: String,
    pub pod: Option<String>,
}

/// One (namespace, ServiceAccount) whose Pods are watched.
type Key = (String, String);

struct Watch {
    store: Store<Pod>,
    task: tokio::task::JoinHandle<()>,
}

/// The Pod watches of workload-bound requests; see the module docs.
pub struct Workloads {
    client: Client,
    watches: Mutex<BTreeMap<Key, Watch>>,
    touched: mpsc::UnboundedSender<Touched>,
}

impl Workloads {
    /// A registry whose watches announce changes on the returned receiver.
    pub fn new(client: Client) -> (Workloads, mpsc::UnboundedReceiver<Touched>) {
        let (touched, rx) = mpsc::unbounded();
        (Workloads { client, watches: Mutex::new(BTreeMap::new()), touched }, rx)
    }

    /// The watched Pods of `service_account` in `namespace`, starting the
    /// watch if there is none; `None` until its first list is in.
    pub fn watched(&self, namespace: &str, service_account: &str) -> Option<Store<Pod>> {
        let key = (namespace.to_string(), service_account.to_string());
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let watch = watches.entry(key).or_insert_with(|| self.start(namespace, service_account));
        let store = watch.store.clone();
        drop(watches);
        self.report();
        let ready = futures::FutureExt::now_or_never(store.wait_until_ready()).is_some_and(|r| r.is_ok());
        ready.then_some(store)
    }

    /// Stops the watches no pending request or live grant needs any more.
    pub fn retain(&self, needed: &BTreeSet<Key>) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        watches.retain(|key, watch| {
            let keep = needed.contains(key);
            if !keep {
                watch.task.abort();
            }
            keep
        });
        drop(watches);
        self.report();
    }

    fn start(&self, namespace: &str, service_account: &str) -> Watch {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let config = watcher::Config::default().fields(&format!("spec.serviceAccountName={service_account}"));
        let (store, writer) = reflector::store();
        let events = reflector::reflector(writer, watcher(api, config).modify(trim)).backoff(backoff::watches());
        let touched = self.touched.clone();
        let (ns, sa) = (namespace.to_string(), service_account.to_string());
        let task = tokio::spawn(async move {
            futures::pin_mut!(events);
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::Apply(p) | watcher::Event::Delete(p)) => Some(p.metadata.name),
                    Ok(watcher::Event::InitDone) => None,
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, namespace = %ns, service_account = %sa, "Pod watch error; retrying");
                        continue;
                    }
                };
                let change = Touched { namespace: ns.clone(), service_account: sa.clone(), pod: pod.flatten() };
                if touched.unbounded_send(change).is_err() {
                    return;
                }
            }
        });
        tracing::info!(namespace, service_account, "watching the Pods of a workload-bound agent");
        Watch { store, task }
    }

    /// Watches and the Pods they hold, as metrics: refreshed whenever a watch
    /// is asked for (every re-check, and every review of what is needed).
    fn report(&self) {
        let watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let pods: usize = watches.values().map(|w| w.store.len()).sum();
        crate::metrics::global().set_workload_watches(watches.len(), pods);
    }
}

impl Drop for Workloads {
    fn drop(&mut self) {
        for watch in self.watches.get_mut().unwrap_or_else(|e| e.into_inner()).values() {
            watch.task.abort();
        }
        crate::metrics::global().set_workload_watches(0, 0);
    }
}

/// What the workload verdicts read of a Pod, and nothing else: the rest of a
/// Pod (environment, volumes, probes, managedFields) is most of its size.
pub fn trim(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        labels: meta.labels,
        deletion_timestamp: meta.deletion_timestamp,
        resource_version: meta.resource_version,
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        service_account_name: spec.service_account_name,
        node_name: spec.node_name,
        containers: spec.containers.into_iter().map(container).collect(),
        init_containers: spec.init_containers.map(|c| c.into_iter().map(container).collect()),
        ephemeral_containers: spec.ephemeral_containers.map(|c| {
            c.into_iter()
                .map(|c| EphemeralContainer { name: c.name, image: c.image, ..EphemeralContainer::default() })
                .collect()
        }),
        ..PodSpec::default()
    });
    let statuses = |s: Option<Vec<ContainerStatus>>| {
        s.map(|s| {
            s.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    image: c.image,
                    image_id: c.image_id,
                    ..ContainerStatus::default()
                })
                .collect()
        })
    };
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        container_statuses: statuses(status.container_statuses),
        init_container_statuses: statuses(status.init_container_statuses),
        ephemeral_container_statuses: statuses(status.ephemeral_container_statuses),
        ..PodStatus::default()
    });
}

fn container(c: Container) -> Container {
    Container { name: c.name, image: c.image, ..Container::default() }
}

/// The Pod `namespace/name` as the API server has it now (None: not found).
pub async fn pod(client: &Client, namespace: &str, name: &str) -> Result<Option<Pod>> {
    Ok(Api::<Pod>::namespaced(client.clone(), namespace).get_opt(name).await?)
}

/// The labels of Node `name` (None: not found).
pub async fn node_labels(client: &Client, name: &str) -> Result<Option<BTreeMap<String, String>>> {
    let node = Api::<Node>::all(client.clone()).get_metadata_opt(name).await?;
    Ok(node.map(|n| n.metadata.labels.unwrap_or_default()))
}

/// The Pod `namespace/name` from a watch store.
pub fn cached(store: &Store<Pod>, namespace: &str, name: &str) -> Option<Pod> {
    store.get(&ObjectRef::new(name).within(namespace)).map(|p| (*p).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trimming_keeps_what_the_verdicts_read() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "agents", "uid": "u", "labels": {"app": "a"},
                         "annotations": {"big": "x".repeat(10_000)}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"serviceAccountName": "planner", "nodeName": "node0",
                     "containers": [{"name": "agent", "image": "img", "env": [{"name": "A", "value": "B"}]}],
                     "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                       "containerStatuses": [{"name": "agent", "image": "img", "imageID": "img@sha256:00",
                                              "ready": true, "restartCount": 3}]}
        }))
        .unwrap();
        let before = serde_json::to_vec(&pod).unwrap().len();
        trim(&mut pod);
        let after = serde_json::to_vec(&pod).unwrap().len();
        assert!(after * 10 < before, "{after} bytes of {before}");
        assert_eq!(pod.metadata.uid.as_deref(), Some("u"));
        assert_eq!(pod.metadata.labels.as_ref().unwrap()["app"], "a");
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!((spec.service_account_name.as_deref(), spec.node_name.as_deref()), (Some("planner"), Some("node0")));
        assert!(spec.containers[0].env.is_none() && spec.volumes.is_none());
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.container_statuses.as_ref().unwrap()[0].image_id, "img@sha256:00");
        assert!(status.pod_ip.is_none() && pod.metadata.annotations.is_none());
    }
}
