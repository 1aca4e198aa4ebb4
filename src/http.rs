//! The operator's HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz`
//! (the process and its event loop are alive) and `/readyz` (the caches have
//! synced; a standby waiting for the lease is ready too).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

/// A heartbeat older than this means the event loop is stuck.
const STALE_AFTER: Duration = Duration::from_secs(10);

/// What the probes report.
pub struct Health {
    ready: AtomicBool,
    heartbeat: std::sync::Mutex<Instant>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        let health =
            Arc::new(Health { ready: AtomicBool::new(false), heartbeat: std::sync::Mutex::new(Instant::now()) });
        // A task on the same runtime as the reconcilers: if it cannot run, neither can they.
        let beat = health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                *beat.heartbeat.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
            }
        });
        health
    }

    /// The caches the decisions read from have synced.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn alive(&self) -> bool {
        self.heartbeat.lock().unwrap_or_else(|e| e.into_inner()).elapsed() < STALE_AFTER
    }
}

/// Binds `addr` (so a taken port fails the start) and serves in a task of its own.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health);
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    }))
}

async fn metrics() -> impl IntoResponse {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], crate::metrics::global().encode())
}

async fn healthz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.alive() { (StatusCode::OK, "ok\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "event loop stalled\n") }
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
    }
}
