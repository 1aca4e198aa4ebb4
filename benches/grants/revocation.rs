//! Figure 2: revocation lag, expiresAt → first 403 (bindings gone) and → first
//! 401 (identity gone, after the API server's token cache), for `n` grants
//! due in the same second; beside the floor: the same bindings, then the same
//! ServiceAccounts, deleted by a parallel client at one instant.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use crate::board::Board;
use crate::grants::{self, Cadence, Ended, Held, clean_slate, expires_at, instant_of, probe, target_binding};
use crate::measure::{self, Summary, ms, ms_between};
use crate::world::{FLOOR_USER, OPERATOR_USER, TARGET_NS, World};

/// Lags in ms for one side (kube-jit or floor).
#[derive(Default)]
pub struct Lags {
    pub forbidden: Vec<f64>,
    pub unauthenticated: Vec<f64>,
    /// expiresAt → the binding's delete committed (API server audit log).
    pub binding_deleted: Vec<f64>,
    /// The same two lags from the sub-second expiry in the operator's granted
    /// audit line (the floor's expiry is exact, so there they are the same).
    /// status.grant.expiresAt is serialized in whole seconds, and a reconcile
    /// that reads it back revokes at that whole second: these can be negative.
    pub forbidden_from_own_expiry: Vec<f64>,
    pub binding_deleted_from_own_expiry: Vec<f64>,
    /// Grants whose probe saw no 403 in time (counted, not hidden).
    pub never_forbidden: usize,
    pub never_unauthenticated: usize,
    /// Grants whose token was refused before expiry.
    pub not_working_before: usize,
    /// Grants whose probe had no answer back before expiry (started too late
    /// to tell whether the token worked): counted, not hidden.
    pub expired_before_probing: usize,
}

impl Lags {
    fn add(&mut self, ended: &Ended) {
        match ended.forbidden {
            Some(d) => self.forbidden.push(ms(d)),
            None => self.never_forbidden += 1,
        }
        match ended.unauthenticated {
            Some(d) => self.unauthenticated.push(ms(d)),
            None => self.never_unauthenticated += 1,
        }
        if !ended.answered_before_due {
            self.expired_before_probing += 1;
        } else if !ended.worked_before {
            self.not_working_before += 1;
        }
    }

    fn json(&self) -> Value {
        json!({
            "to_403": Summary::of(&self.forbidden).json(),
            "to_401": Summary::of(&self.unauthenticated).json(),
            "to_binding_deleted": Summary::of(&self.binding_deleted).json(),
            "to_403_from_own_expiry": Summary::of(&self.forbidden_from_own_expiry).json(),
            "to_binding_deleted_from_own_expiry": Summary::of(&self.binding_deleted_from_own_expiry).json(),
            "never_403": self.never_forbidden, "never_401": self.never_unauthenticated,
            "not_working_just_before_expiry": self.not_working_before,
            "expired_before_probing": self.expired_before_probing,
            "to_403_samples_ms": self.forbidden, "to_binding_deleted_samples_ms": self.binding_deleted,
        })
    }
}

pub struct Round {
    pub n: usize,
    pub operator: Lags,
    pub floor: Lags,
    pub cadence: Cadence,
    /// Spread of the operator grants' expiresAt (p1 → p99), ms.
    pub expiry_spread_ms: f64,
    /// Share of the operator grants whose expiresAt fell in the target second.
    pub in_target_second: f64,
    /// Each operator grant's expiresAt less the start of the target second, ms.
    pub expiry_offsets: Vec<f64>,
}

impl Round {
    pub fn json(&self) -> Value {
        json!({
            "grants": self.n,
            "probe_interval_until_403_ms": ms(self.cadence.until_403),
            "probe_interval_until_401_ms": ms(self.cadence.until_401),
            "operator_expiry_spread_p1_p99_ms": measure::round(self.expiry_spread_ms),
            "operator_expiries_in_target_second": measure::round(self.in_target_second),
            "operator_expiry_offsets_ms": self.expiry_offsets,
            "operator_expired_before_probing": self.operator.expired_before_probing,
            "operator": self.operator.json(), "floor": self.floor.json(),
        })
    }
}

/// Probe cadence for `n` grants: the whole set offers at most ~2,000 calls/s
/// before the 403 and ~1,000/s after it, so probing does not become the load.
pub fn cadence(n: usize) -> Cadence {
    let until_403 = Duration::from_micros((n as u64 * 500).clamp(10_000, 500_000));
    let until_401 = Duration::from_millis((n as u64).clamp(500, 1_000));
    Cadence { until_403, until_401, offset: Duration::ZERO }
}

const PROBE_LIMIT: Duration = Duration::from_secs(45);

/// `expected_grant_ms`: grant latency seen earlier at similar load, to aim
/// each request's whole-second duration at the same expiry second.
pub async fn round(
    w: &World,
    board: &Board,
    n: usize,
    grants_per_s: f64,
    expected_grant_ms: f64,
) -> anyhow::Result<Round> {
    let cadence = cadence(n);
    let create = n.min(50);
    let mut floor = Lags::default();

    // The floor: n grants, one instant, parallel deletes.
    let held: Vec<grants::FloorHeld> = futures::stream::iter(0..n)
        .map(|i| async move { grants::floor_grant(w, &format!("rfloor-{n}-{i}"), true).await })
        .buffer_unordered(create)
        .try_collect()
        .await?;
    let position = measure::audit_position(&w.audit_log());
    let due_wall = Timestamp::now() + SignedDuration::from_secs(2);
    let due = instant_of(due_wall);
    let probes: Vec<_> = held
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let client = h.client.clone().expect("floor token client");
            let c = Cadence { offset: cadence.until_403.mul_f64(i as f64 / n as f64), ..cadence };
            tokio::spawn(probe(client, due, c, PROBE_LIMIT))
        })
        .collect();
    tokio::time::sleep_until(due.into()).await;
    let bindings = futures::future::join_all(held.iter().map(|h| grants::floor_revoke_binding(w, &h.name))).await;
    let identities = futures::future::join_all(held.iter().map(|h| grants::floor_revoke_identity(w, &h.name))).await;
    bindings.into_iter().chain(identities).collect::<anyhow::Result<Vec<()>>>()?;
    for p in probes {
        floor.add(&p.await?);
    }
    let calls = measure::calls_since(&w.audit_log(), position, &[FLOOR_USER]);
    let deleted = measure::binding_deletions(&calls, FLOOR_USER, TARGET_NS);
    floor.binding_deleted =
        held.iter().filter_map(|h| deleted.get(&h.name)).map(|t| ms_between(due_wall, *t)).collect();
    // The floor's expiry is exact: its own instant is the one it advertised.
    floor.forbidden_from_own_expiry = floor.forbidden.clone();
    floor.binding_deleted_from_own_expiry = floor.binding_deleted.clone();
    clean_slate(w, Duration::from_secs(120)).await?;

    // kube-jit: n grants aimed at the middle of one second.
    let prep = Duration::from_secs_f64(n as f64 / grants_per_s.max(1.0) * 2.0 + 4.0);
    let target_second = (Timestamp::now() + SignedDuration::try_from(prep)?).round(jiff::Unit::Second)?;
    let target = target_second + SignedDuration::from_millis(500);
    let seen = Arc::new(Mutex::new(vec![expected_grant_ms]));
    let held: Vec<Held> = futures::stream::iter(0..n)
        .map(|i| {
            let seen = seen.clone();
            async move {
                let expected = {
                    let s = seen.lock().unwrap_or_else(|e| e.into_inner());
                    Summary::of(&s).p50
                };
                let approve_at = Timestamp::now() + SignedDuration::from_secs_f64(expected / 1000.0);
                let secs = (target.duration_since(approve_at).as_secs_f64().round() as i64).max(1);
                let h = grants::operator_grant(w, board, &format!("rev-{n}-{i}"), &format!("{secs}s")).await?;
                seen.lock().unwrap_or_else(|e| e.into_inner()).push(ms(h.latency));
                anyhow::Ok(h)
            }
        })
        .buffer_unordered(create)
        .try_collect()
        .await?;
    let position = measure::audit_position(&w.audit_log());
    let own = own_expiries(&w.operator.log());
    let own_expiry = |h: &Held| own.get(&h.name).copied().unwrap_or_else(|| expires_at(&h.request));
    let offsets: Vec<f64> = held.iter().map(|h| ms_between(target_second, own_expiry(h))).collect();
    let in_target_second = offsets.iter().filter(|o| (0.0..1000.0).contains(*o)).count() as f64 / n as f64;
    let spread = Summary::of(&offsets);
    let p1 = {
        let neg: Vec<f64> = offsets.iter().map(|o| -o).collect();
        -Summary::of(&neg).p99
    };
    // Grants already past expiry when probing starts would overstate their lag:
    // counted (Lags::expired_before_probing), not hidden.
    let probes: Vec<_> = held
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let c = Cadence { offset: cadence.until_403.mul_f64(i as f64 / n as f64), ..cadence };
            tokio::spawn(probe(h.client.clone(), instant_of(expires_at(&h.request)), c, PROBE_LIMIT))
        })
        .collect();
    let mut operator = Lags::default();
    for (h, p) in held.iter().zip(probes) {
        let ended = p.await?;
        operator.add(&ended);
        let rounding = ms_between(expires_at(&h.request), own_expiry(h));
        if let Some(d) = ended.forbidden {
            operator.forbidden_from_own_expiry.push(ms(d) - rounding);
        }
    }
    let calls = measure::calls_since(&w.audit_log(), position, &[OPERATOR_USER]);
    let deleted = measure::binding_deletions(&calls, OPERATOR_USER, TARGET_NS);
    for h in &held {
        if let Some(t) = deleted.get(&target_binding(&h.request)) {
            operator.binding_deleted.push(ms_between(expires_at(&h.request), *t));
            operator.binding_deleted_from_own_expiry.push(ms_between(own_expiry(h), *t));
        }
    }
    for h in &held {
        board.wait(&h.name, kube_jit::api::Phase::Expired, Duration::from_secs(300)).await?;
    }
    clean_slate(w, Duration::from_secs(300)).await?;
    Ok(Round {
        n,
        operator,
        floor,
        cadence,
        expiry_spread_ms: spread.p99 - p1,
        in_target_second,
        expiry_offsets: offsets,
    })
}

/// Each grant's expiry as the operator holds it (sub-second), from its
/// `granted` audit lines: request name → expires_at.
fn own_expiries(log: &std::path::Path) -> std::collections::HashMap<String, Timestamp> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("\"event\":\"granted\""))
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let name = v["request"].as_str()?.rsplit('/').next()?.to_string();
            Some((name, v["expires_at"].as_str()?.parse().ok()?))
        })
        .collect()
}
