//! The operator's Prometheus metrics (OpenMetrics text, served by `http`).
//! One process-wide registry, so the reconcilers record with a one-line call
//! and need no extra plumbing; the names are a contract with alerting rules.

use std::sync::{Mutex, OnceLock};

use jiff::Timestamp;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::access_request::{AccessRequest, GrantStatus, Phase};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// Every metric kube-jit exports.
pub struct Metrics {
    registry: Registry,
    live_grants: Gauge,
    requests: Family<OutcomeLabels, Counter>,
    grant_latency: Histogram,
    revocation_lag: Histogram,
    reconcile_errors: Family<KindLabels, Counter>,
    leader: Gauge,
    workload_watches: Gauge,
    workload_pods: Gauge,
    /// The leader's request cache, counted at scrape time; none on a standby.
    requests_cache: Mutex<Option<Store<AccessRequest>>>,
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let live_grants = Gauge::default();
        registry.register(
            "kube_jit_live_grants",
            "Grants currently Granted, from the leader's cache (0 on a standby)",
            live_grants.clone(),
        );
        let requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "kube_jit_requests",
            "Grants made and requests ended, by outcome (granted, denied, expired, revoked, failed) and condition reason",
            requests.clone(),
        );
        // Manual approvals can take an hour; automatic grants well under a second.
        let grant_latency =
            Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]);
        registry.register(
            "kube_jit_grant_latency_seconds",
            "From an AccessRequest's creation to its grant being recorded Granted",
            grant_latency.clone(),
        );
        let revocation_lag =
            Histogram::new([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]);
        registry.register(
            "kube_jit_revocation_lag_seconds",
            "For expiries: when the grant's objects were deleted minus its expiresAt",
            revocation_lag.clone(),
        );
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            "kube_jit_reconcile_errors",
            "Reconciles that failed (write conflicts retried at once excluded), by kind",
            reconcile_errors.clone(),
        );
        // Present from the start, so `rate()` and `increase()` see the first error.
        for kind in ["AccessRequest", "AgentIdentity"] {
            let _ = reconcile_errors.get_or_create(&KindLabels { kind });
        }
        let leader = Gauge::default();
        registry.register("kube_jit_leader", "1 while this replica holds the lease and acts, else 0", leader.clone());
        let workload_watches = Gauge::default();
        registry.register(
            "kube_jit_workload_pod_watches",
            "Pod watches kept for workload-bound requests and grants: one per (namespace, ServiceAccount) of a pinned agent",
            workload_watches.clone(),
        );
        let workload_pods = Gauge::default();
        registry.register(
            "kube_jit_workload_watched_pods",
            "Pods held by those watches (trimmed to what attestation reads)",
            workload_pods.clone(),
        );
        Metrics {
            registry,
            live_grants,
            requests,
            grant_latency,
            revocation_lag,
            reconcile_errors,
            leader,
            workload_watches,
            workload_pods,
            requests_cache: Mutex::new(None),
        }
    }

    /// How many Pod watches workload-bound grants keep, and how many Pods they hold.
    pub fn set_workload_watches(&self, watches: usize, pods: usize) {
        self.workload_watches.set(watches as i64);
        self.workload_pods.set(pods as i64);
    }

    /// A grant was recorded Granted: count it and how long it took since the request was made.
    pub fn granted(&self, request: &AccessRequest, at: Timestamp) {
        self.count(Phase::Granted, crate::conditions::reasons::GRANTED);
        if let Some(created) = &request.metadata.creation_timestamp {
            self.grant_latency.observe(seconds_between(created.0, at));
        }
    }

    /// A request reached a terminal phase for the first time; for expiries,
    /// how late the revocation came.
    pub fn ended(&self, phase: Phase, reason: &str, grant: Option<&GrantStatus>) {
        self.count(phase, reason);
        let at = |t: Option<&Time>| t.map(|t| t.0);
        let times = grant.map(|g| (at(g.expires_at.as_ref()), at(g.revoked_at.as_ref())));
        if let (Phase::Expired, Some((Some(expires), Some(revoked)))) = (phase, times) {
            self.revocation_lag.observe(seconds_between(expires, revoked));
        }
    }

    fn count(&self, phase: Phase, reason: &str) {
        let outcome = match phase {
            Phase::Granted => "granted",
            Phase::Denied => "denied",
            Phase::Expired => "expired",
            Phase::Revoked => "revoked",
            Phase::Failed => "failed",
            Phase::Pending | Phase::Approved => return,
        };
        self.requests.get_or_create(&OutcomeLabels { outcome, reason: reason.to_string() }).inc();
    }

    /// A reconcile of `kind` (AccessRequest, AgentIdentity) failed.
    pub fn reconcile_error(&self, kind: &'static str) {
        self.reconcile_errors.get_or_create(&KindLabels { kind }).inc();
    }

    /// Whether this replica acts; the leader's request cache feeds `kube_jit_live_grants`.
    pub fn set_leader(&self, requests: Option<Store<AccessRequest>>) {
        self.leader.set(i64::from(requests.is_some()));
        *self.requests_cache.lock().unwrap_or_else(|e| e.into_inner()) = requests;
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let live = self.requests_cache.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map_or(0, |store| {
            store.state().iter().filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Phase::Granted)).count()
        });
        self.live_grants.set(live as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }
}

/// `to - from` in seconds, never negative (a revocation a few ms early is on time).
fn seconds_between(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_contracted_names() {
        let m = Metrics::new();
        let grant = GrantStatus {
            expires_at: Some(Time(Timestamp::from_second(100).unwrap())),
            revoked_at: Some(Time(Timestamp::from_second(101).unwrap())),
            ..GrantStatus::default()
        };
        m.ended(Phase::Expired, "Expired", Some(&grant));
        m.ended(Phase::Pending, "AwaitingApproval", None);
        m.reconcile_error("AccessRequest");
        let text = m.encode();
        for name in [
            "kube_jit_live_grants 0",
            r#"kube_jit_requests_total{outcome="expired",reason="Expired"} 1"#,
            "kube_jit_grant_latency_seconds_count 0",
            "kube_jit_revocation_lag_seconds_sum 1.0",
            r#"kube_jit_reconcile_errors_total{kind="AccessRequest"} 1"#,
            "kube_jit_leader 0",
        ] {
            assert!(text.contains(name), "{name} missing from\n{text}");
        }
        assert!(!text.contains("pending"), "non-terminal phases are not outcomes");
    }
}
