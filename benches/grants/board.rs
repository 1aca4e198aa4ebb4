//! What the requester sees: one watch on its AccessRequests, shared by every
//! waiter, so waiting for thousands of grants costs one connection and no
//! polling load on the API server the figures are measured against.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use kube_jit::api::{AccessRequest, Phase};
use tokio::sync::oneshot;

type Waiter = (Phase, oneshot::Sender<AccessRequest>);

#[derive(Default)]
struct Inner {
    /// Waits the watch did not answer in time, settled by reading the request directly.
    read_directly: usize,
    latest: HashMap<String, AccessRequest>,
    waiters: HashMap<String, Vec<Waiter>>,
}

#[derive(Clone)]
pub struct Board {
    inner: Arc<Mutex<Inner>>,
    api: Api<AccessRequest>,
}

fn phase(r: &AccessRequest) -> Phase {
    kube_jit::client::phase(r)
}

impl Board {
    /// Starts watching the requests in `ns` as `client` sees them.
    pub fn watch(client: Client, ns: &str) -> Board {
        let api: Api<AccessRequest> = Api::namespaced(client, ns);
        let board = Board { inner: Arc::default(), api: api.clone() };
        let inner = board.inner.clone();
        tokio::spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default());
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(Event::Apply(r) | Event::InitApply(r)) => update(&inner, r),
                    Ok(Event::Delete(r)) => {
                        inner.lock().unwrap_or_else(|e| e.into_inner()).latest.remove(&r.name_any());
                    }
                    Ok(_) => {}
                    Err(e) => eprintln!("watch error (retrying): {e}"),
                }
            }
        });
        board
    }

    /// Waits until request `name` reaches `wanted`; fails if it ends otherwise.
    /// A watch can fall behind on a loaded API server: a wait it has not
    /// answered within a few seconds reads the request directly (counted).
    pub async fn wait(&self, name: &str, wanted: Phase, limit: Duration) -> anyhow::Result<AccessRequest> {
        let start = tokio::time::Instant::now();
        let mut rx = {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = inner.latest.get(name)
                && (phase(r) == wanted || phase(r).is_terminal())
            {
                return settle(r.clone(), wanted);
            }
            let (tx, rx) = oneshot::channel();
            inner.waiters.entry(name.to_string()).or_default().push((wanted, tx));
            rx
        };
        loop {
            match tokio::time::timeout(Duration::from_secs(10), &mut rx).await {
                Ok(Ok(r)) => return settle(r, wanted),
                Ok(Err(_)) => anyhow::bail!("watch for {name} ended"),
                Err(_) => {
                    if let Some(r) = self.api.get_opt(name).await?
                        && (phase(&r) == wanted || phase(&r).is_terminal())
                    {
                        self.inner.lock().unwrap_or_else(|e| e.into_inner()).read_directly += 1;
                        return settle(r, wanted);
                    }
                    let last = self.inner.lock().unwrap_or_else(|e| e.into_inner()).latest.get(name).map(phase);
                    anyhow::ensure!(
                        start.elapsed() < limit,
                        "{name} not {wanted:?} after {limit:?} (last seen {last:?})"
                    );
                }
            }
        }
    }

    /// Waits the watch did not answer in time and a direct read settled.
    pub fn read_directly(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).read_directly
    }

    /// How many requests are Granted now, and how many are known at all.
    pub fn counts(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.latest.values().filter(|r| phase(r) == Phase::Granted).count(), inner.latest.len())
    }
}

fn settle(r: AccessRequest, wanted: Phase) -> anyhow::Result<AccessRequest> {
    if phase(&r) == wanted {
        Ok(r)
    } else {
        anyhow::bail!("{} ended {:?}: {}", r.name_any(), phase(&r), kube_jit::client::explain(&r))
    }
}

fn update(inner: &Mutex<Inner>, r: AccessRequest) {
    let mut inner = inner.lock().unwrap_or_else(|e| e.into_inner());
    let name = r.name_any();
    let now = phase(&r);
    if let Some(waiters) = inner.waiters.remove(&name) {
        let mut still = Vec::new();
        for (wanted, tx) in waiters {
            if now == wanted || now.is_terminal() {
                let _ = tx.send(r.clone());
            } else {
                still.push((wanted, tx));
            }
        }
        if !still.is_empty() {
            inner.waiters.insert(name.clone(), still);
        }
    }
    inner.latest.insert(name, r);
}
