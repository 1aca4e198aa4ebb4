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

pub struct Round {
    pub concurrency: usize,
    pub operator: Vec<f64>,
    pub floor: Vec<f64>,
    /// Grants per second through kube-jit at this concurrency.
    pub operator_rate: f64,
    pub floor_rate: f64,
    /// Grants whose first TokenRequest after Granted was refused (authorizer lag).
    pub mint_refused: usize,
}

impl Round {
    pub fn json(&self) -> Value {
        let (o, f) = (Summary::of(&self.operator), Summary::of(&self.floor));
        json!({
            "concurrency": self.concurrency,
            "operator": o.json(), "floor": f.json(),
            "ratio_p50": crate::measure::round(o.p50 / f.p50), "ratio_p99": crate::measure::round(o.p99 / f.p99),
            "operator_grants_per_s": crate::measure::round(self.operator_rate),
            "floor_grants_per_s": crate::measure::round(self.floor_rate),
            "operator_first_token_request_refused": self.mint_refused,
            "operator_samples_ms": self.operator, "floor_samples_ms": self.floor,
        })
    }
}

/// `samples` grants each way with `concurrency` in flight: floor first, then
/// kube-jit, each from a clean slate.
pub async fn round(w: &World, board: &Board, concurrency: usize, samples: usize) -> anyhow::Result<Round> {
    let started = Instant::now();
    let floor: Vec<f64> = futures::stream::iter(0..samples)
        .map(|i| async move { grants::floor_grant(w, &format!("floor-c{concurrency}-{i}"), true).await })
        .buffer_unordered(concurrency)
        .map_ok(|h| ms(h.latency))
        .try_collect()
        .await?;
    let floor_rate = samples as f64 / started.elapsed().as_secs_f64();
    clean_slate(w, Duration::from_secs(120)).await?;

    let started = Instant::now();
    let held: Vec<(f64, u32)> = futures::stream::iter(0..samples)
        .map(|i| async move { grants::operator_grant(w, board, &format!("lat-c{concurrency}-{i}"), "10m").await })
        .buffer_unordered(concurrency)
        .map_ok(|h| (ms(h.latency), h.mint_retries))
        .try_collect()
        .await?;
    let operator = held.iter().map(|h| h.0).collect();
    let mint_refused = held.iter().filter(|h| h.1 > 0).count();
    let operator_rate = samples as f64 / started.elapsed().as_secs_f64();
    clean_slate(w, Duration::from_secs(300)).await?;
    Ok(Round { concurrency, operator, floor, operator_rate, floor_rate, mint_refused })
}
