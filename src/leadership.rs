//! Leader election through a `coordination.k8s.io/v1` Lease, so that of several
//! replicas exactly one acts. `kube-lease-manager` acquires, renews and releases
//! the Lease; this module adds what acting safely needs on top of it:
//!
//! - **A fence.** The crate reports losing the Lease only when a renewal call
//!   returns; a replica cut off from the API server would never hear it. So this
//!   replica acts only while a Lease it has *seen* (on a watch) names it with a
//!   renewTime — written with its own clock — less than `duration - margin` ago,
//!   and stops at that deadline unless a renewal shows up, before any other
//!   replica may take the Lease over.
//! - **A fence on writes, too.** A replica stopped (SIGSTOP, a long pause, a
//!   partition) while it led resumes with reconciles half-way and timers due;
//!   they may run before this module notices the Lease is gone. The
//!   operator's client therefore asks [`Fence::open`] before each write
//!   reaches the wire: past the deadline, nothing is sent, whatever the tasks
//!   believe (the monotonic clock keeps running while a process is stopped).
//! - **Prompt takeover on release.** The crate's standby sleeps until the expiry it
//!   last read; when the watch shows the Lease released (a graceful shutdown), the
//!   standby competes at once instead.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Future, StreamExt};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use tokio::sync::watch;
use tokio::time::Instant;

/// Which Lease, who this replica is, and how long a Lease lasts unrenewed.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// Seconds, at least 2.
    pub duration_secs: u64,
    /// Set by [`elect`]; the operator's client sends writes only while it is open.
    pub fence: Fence,
}

/// Until when this replica may write: the same deadline that keeps it acting
/// (a Lease seen naming it, renewed less than `duration - margin` ago).
/// Closed until then, and closed again the moment the Lease is lost or the
/// deadline passes, whether or not anything has run since.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl Fence {
    /// Whether a write may be sent now.
    pub fn open(&self) -> bool {
        let until = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        until.is_some_and(|u| std::time::Instant::now() < u)
    }

    fn set(&self, until: Option<Instant>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = until.map(Instant::into_std);
    }
}

/// `POD_NAME` in a cluster; `<hostname>-<pid>` elsewhere.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "kube-jit".into());
    format!("{host}-{}", std::process::id())
}

type Changed = Pin<Box<dyn Future<Output = kube_lease_manager::Result<bool>> + Send>>;

/// Competes for the Lease until `stop` resolves, keeping `acting` true only
/// while this replica holds it with time to spare; then releases it if held,
/// so a standby takes over at once.
pub async fn elect(client: Client, lease: LeaseSettings, acting: watch::Sender<bool>, stop: impl Future<Output = ()>) {
    let duration = Duration::from_secs(lease.duration_secs);
    // Stop acting this long before the Lease could expire: room for clock skew
    // between replicas and for calls already on the wire.
    let margin = duration / 5;
    tokio::pin!(stop);
    let mut manager = tokio::select! {
        m = build_until_ok(&client, &lease) => m,
        _ = &mut stop => return,
    };
    let mut changed = compete(manager.clone(), Duration::ZERO);
    let api: Api<Lease> = Api::namespaced(client.clone(), &lease.namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={}", lease.name));
    let events = watcher(api, config).backoff(crate::controller::backoff::watches()).applied_objects();
    tokio::pin!(events);
    // What the crate says, and until when a Lease seen on the watch lets us act.
    let mut holds = false;
    let mut valid_until: Option<Instant> = None;
    loop {
        let deadline = valid_until.filter(|_| holds);
        tokio::select! {
            _ = &mut stop => break,
            result = &mut changed => {
                let retry = match result {
                    Ok(now_holds) => {
                        holds = now_holds;
                        tracing::info!(lease = %lease.name, identity = %lease.identity, holds, "lease holder changed");
                        Duration::ZERO
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, lease = %lease.name, "lease election error; retrying");
                        Duration::from_secs(1)
                    }
                };
                changed = compete(manager.clone(), retry);
            }
            Some(event) = events.next() => match event {
                Ok(seen) => {
                    let spec = seen.spec.unwrap_or_default();
                    let mine = spec.holder_identity.as_deref() == Some(lease.identity.as_str());
                    valid_until = if mine { spec.renew_time.and_then(|t| deadline_of(t.0, duration, margin)) } else { None };
                    if spec.holder_identity.is_none() && !holds {
                        // Released: compete now rather than at the old expiry.
                        if let Ok(fresh) = build(&client, &lease).await {
                            manager = Arc::new(fresh);
                            changed = compete(manager.clone(), Duration::ZERO);
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, lease = %lease.name, "lease watch error; retrying"),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                tracing::warn!(lease = %lease.name, "lease renewal not seen in time: stopping to act");
                valid_until = None;
            }
        }
        let now_acting = holds && valid_until.is_some_and(|u| Instant::now() < u);
        lease.fence.set(valid_until.filter(|_| now_acting));
        acting.send_if_modified(|a| std::mem::replace(a, now_acting) != now_acting);
    }
    lease.fence.set(None);
    acting.send_replace(false);
    drop(changed);
    if holds {
        match tokio::time::timeout(Duration::from_secs(3), manager.release()).await {
            Ok(Ok(())) => tracing::info!(lease = %lease.name, "lease released"),
            Ok(Err(e)) => tracing::warn!(error = %e, "could not release the lease; it expires on its own"),
            Err(_) => tracing::warn!("releasing the lease timed out; it expires on its own"),
        }
    }
}

/// The instant to stop acting for a Lease renewed at `renewed` (this replica's clock).
fn deadline_of(renewed: Timestamp, duration: Duration, margin: Duration) -> Option<Instant> {
    let end = renewed + SignedDuration::try_from(duration.saturating_sub(margin)).ok()?;
    let left = Duration::try_from(end.duration_since(Timestamp::now())).ok()?;
    Some(Instant::now() + left)
}

fn compete(manager: Arc<LeaseManager>, after: Duration) -> Changed {
    Box::pin(async move {
        tokio::time::sleep(after).await;
        manager.changed().await
    })
}

async fn build(client: &Client, lease: &LeaseSettings) -> kube_lease_manager::Result<LeaseManager> {
    // Renew at half the duration, leaving the other half to retry in.
    let grace = (lease.duration_secs / 2).clamp(1, lease.duration_secs.saturating_sub(1).max(1));
    LeaseManagerBuilder::new(client.clone(), &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration_secs)
        .with_grace(grace)
        .build()
        .await
}

async fn build_until_ok(client: &Client, lease: &LeaseSettings) -> Arc<LeaseManager> {
    loop {
        match build(client, lease).await {
            Ok(m) => return Arc::new(m),
            Err(e) => {
                tracing::warn!(error = %e, lease = %lease.name, namespace = %lease.namespace, "cannot use the lease; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acts_until_duration_minus_margin_after_renewal() {
        let (d, m) = (Duration::from_secs(5), Duration::from_secs(1));
        let t0 = Instant::now();
        let until = deadline_of(Timestamp::now(), d, m).unwrap();
        let t1 = Instant::now();
        // 4 s after the renewal, which fell between t0 and t1 however long this
        // thread was descheduled (1 ms for wall and monotonic clocks' rates).
        let slack = Duration::from_millis(1);
        assert!(until <= t1 + d - m + slack, "{:?} after t1", until - t1);
        assert!(until + (t1 - t0) + slack >= t0 + d - m, "{:?} after t0", until - t0);
        assert!(deadline_of(Timestamp::now() - SignedDuration::from_secs(5), d, m).is_none(), "already past");
    }

    #[test]
    fn the_fence_is_open_only_until_its_deadline() {
        let fence = Fence::default();
        assert!(!fence.open(), "closed until a Lease is held");
        fence.set(Some(Instant::now() + Duration::from_secs(60)));
        assert!(fence.open());
        fence.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!fence.open(), "closed once the deadline passed, with nothing else run");
        fence.set(None);
        assert!(!fence.open());
    }
}
