//! Figure 1: grant latency, AccessRequest created → first successful in-scope
//! call with the grant's token, at a fixed number of requests in flight,
//! beside the floor at the same concurrency.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::board::Board;
use crate::grants::{self, clean_slate};
use crate::measure::{Summary, ms};
use crate::world::World;

/// Targets against the floor in the same round: p50 and p99 ratios from 10 in
/// flight up (at 1 the ratio is reported, not judged), and kube-jit's
/// throughput as a share of the floor's from 100 in flight up.
pub const P50_RATIO_TARGET: f64 = 1.5;
pub const P99_RATIO_TARGET: f64 = 2.0;
pub const RATIO_TARGETS_FROM: usize = 10;
pub const THROUGHPUT_SHARE_TARGET: f64 = 0.5;
pub const THROUGHPUT_TARGET_FROM: usize = 100;

pub struct Round {
    pub concurrency: usize,
    pub operator: Vec<f64>,
    pub floor: Vec<f64>,
    /// Grants completed per second through kube-jit in this round (its part
    /// of the round: first request made → last grant usable).
    pub operator_rate: f64,
    /// The same for the floor.
    pub floor_rate: f64,
    /// Grants whose first TokenRequest after Granted was refused (authorizer lag).
    pub mint_refused: usize,
    /// Median ms from the start to each step (kube-jit: request created,
    /// Granted seen, token minted, first 200; floor: ServiceAccount,
    /// RoleBinding, token, first 200), and the median in-scope calls.
    pub operator_steps: [f64; 4],
    pub floor_steps: [f64; 4],
    pub operator_calls: f64,
    pub floor_calls: f64,
}

/// The median of each step across samples.
fn median_steps(steps: &[[f64; 4]]) -> [f64; 4] {
    let mut out = [0.0; 4];
    for (i, o) in out.iter_mut().enumerate() {
        *o = crate::measure::round(Summary::of(&steps.iter().map(|s| s[i]).collect::<Vec<_>>()).p50)
            .as_f64()
            .unwrap_or(f64::NAN);
    }
    out
}

impl Round {
    pub fn json(&self) -> Value {
        let (o, f) = (Summary::of(&self.operator), Summary::of(&self.floor));
        let (r50, r99, share) = (o.p50 / f.p50, o.p99 / f.p99, self.operator_rate / self.floor_rate);
        let judged = self.concurrency >= RATIO_TARGETS_FROM;
        let throughput_judged = self.concurrency >= THROUGHPUT_TARGET_FROM;
        let meets = |judged: bool, ok: bool| if judged { json!(ok) } else { Value::Null };
        json!({
            "concurrency": self.concurrency,
            "operator": o.json(), "floor": f.json(),
            "ratio_p50": crate::measure::round(r50), "ratio_p99": crate::measure::round(r99),
            "operator_grants_per_s": crate::measure::round(self.operator_rate),
            "floor_grants_per_s": crate::measure::round(self.floor_rate),
            // Grants completed per second in the round, kube-jit over the floor.
            "grants_per_s_share_of_floor": crate::measure::round(share * 100.0).as_f64().map(|p| p / 100.0),
            // Targets (null where none applies at this concurrency) and whether they are met.
            "targets": {
                "ratio_p50_max": judged.then_some(P50_RATIO_TARGET),
                "ratio_p99_max": judged.then_some(P99_RATIO_TARGET),
                "grants_per_s_share_of_floor_min": throughput_judged.then_some(THROUGHPUT_SHARE_TARGET),
            },
            "meets": {
                "ratio_p50": meets(judged, r50 <= P50_RATIO_TARGET),
                "ratio_p99": meets(judged, r99 <= P99_RATIO_TARGET),
                "grants_per_s_share_of_floor": meets(throughput_judged, share >= THROUGHPUT_SHARE_TARGET),
            },
            "operator_first_token_request_refused": self.mint_refused,
            "operator_steps_p50_ms": {"request_created": self.operator_steps[0], "granted_seen": self.operator_steps[1],
                                      "token_minted": self.operator_steps[2], "first_200": self.operator_steps[3],
                                      "in_scope_calls": self.operator_calls},
            "floor_steps_p50_ms": {"service_account": self.floor_steps[0], "role_binding": self.floor_steps[1],
                                   "token_minted": self.floor_steps[2], "first_200": self.floor_steps[3],
                                   "in_scope_calls": self.floor_calls},
            "operator_samples_ms": self.operator, "floor_samples_ms": self.floor,
        })
    }
}

/// `samples` grants each way with `concurrency` in flight: floor first, then
/// kube-jit, each from a clean slate.
pub async fn round(w: &World, board: &Board, concurrency: usize, samples: usize) -> anyhow::Result<Round> {
    let started = Instant::now();
    let floor_held: Vec<(f64, [f64; 4], u32)> = futures::stream::iter(0..samples)
        .map(|i| async move { grants::floor_grant(w, &format!("floor-c{concurrency}-{i}"), true).await })
        .buffer_unordered(concurrency)
        .map_ok(|h| (ms(h.latency), h.steps, h.calls))
        .try_collect()
        .await?;
    let floor = floor_held.iter().map(|h| h.0).collect();
    let floor_steps = median_steps(&floor_held.iter().map(|h| h.1).collect::<Vec<_>>());
    let floor_calls = Summary::of(&floor_held.iter().map(|h| h.2 as f64).collect::<Vec<_>>()).p50;
    let floor_rate = samples as f64 / started.elapsed().as_secs_f64();
    clean_slate(w, Duration::from_secs(120)).await?;

    let started = Instant::now();
    let held: Vec<(f64, u32, [f64; 4], u32)> = futures::stream::iter(0..samples)
        .map(|i| async move { grants::operator_grant(w, board, &format!("lat-c{concurrency}-{i}"), "10m").await })
        .buffer_unordered(concurrency)
        .map_ok(|h| (ms(h.latency), h.mint_retries, h.steps, h.calls))
        .try_collect()
        .await?;
    let operator = held.iter().map(|h| h.0).collect();
    let mint_refused = held.iter().filter(|h| h.1 > 0).count();
    let operator_steps = median_steps(&held.iter().map(|h| h.2).collect::<Vec<_>>());
    let operator_calls = Summary::of(&held.iter().map(|h| h.3 as f64).collect::<Vec<_>>()).p50;
    eprintln!(
        "   steps (p50 ms from the start): kube-jit requested {:?} → granted seen {:?} → minted {:?} → 200 {:?} ({operator_calls} calls); floor SA {:?} → binding {:?} → token {:?} → 200 {:?} ({floor_calls} calls)",
        operator_steps[0],
        operator_steps[1],
        operator_steps[2],
        operator_steps[3],
        floor_steps[0],
        floor_steps[1],
        floor_steps[2],
        floor_steps[3]
    );
    let operator_rate = samples as f64 / started.elapsed().as_secs_f64();
    clean_slate(w, Duration::from_secs(300)).await?;
    Ok(Round {
        concurrency,
        operator,
        floor,
        operator_rate,
        floor_rate,
        mint_refused,
        operator_steps,
        floor_steps,
        operator_calls,
        floor_calls,
    })
}
