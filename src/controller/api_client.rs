//! The operator's connection to the API server.
//!
//! - kube's client speaks HTTP/1.1 with an unbounded connection pool: every
//!   request in flight holds its own TLS connection, kept for 90 s after use.
//!   A burst of thousands of grants (or a restart that checks thousands at
//!   once) opened thousands, at tens of KiB each, and the API server gained
//!   nothing from that many in parallel. A cap on requests in flight bounds
//!   both. Watches hold a slot only until their response starts; their
//!   streams do not count.
//! - kube's default retry of 429, 503 and 504 waits up to 15 times, doubling
//!   from 5 ms without a useful cap and honouring `Retry-After`: one request
//!   to a throttling or restarting API server could hold its reconcile for
//!   tens of seconds, and with it the revocation or grant behind it, while
//!   nothing was logged. The operator retries briefly here instead
//!   ([`retry_policy`]) and leaves longer waits to its reconcilers, whose
//!   errors are logged and requeued after a second.

use std::time::Duration;

use kube::client::ClientBuilder;
use kube::client::retry::RetryPolicy;
use kube::{Client, Config};

use crate::leadership::Fence;
use tower::buffer::BufferLayer;
use tower::filter::FilterLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::retry::RetryLayer;

/// Requests the operator has in flight at most (queued in order beyond it).
pub const MAX_IN_FLIGHT: usize = 256;

/// How a request answered 429 (too many requests), 503 or 504 is retried:
/// at most 4 times, after 50–150, 100–300, 200–600 and 400–1000 ms (kube's
/// exponential backoff with jitter, capped at 1 s), so one request gives up
/// within about 2 s. `Retry-After` is not waited for: the API server's 1 s
/// would put revocations behind it.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(50), Duration::from_secs(1), 4, false)
        .expect("the minimum delay is below the maximum")
}

/// A client for `config` with at most [`MAX_IN_FLIGHT`] requests in flight,
/// retrying throttled requests as [`retry_policy`] says. (A retry resends a
/// request, so the service under it must be cloneable: a `Buffer` of the
/// same depth as the cap makes it so.)
///
/// Every request carries `identity` in its User-Agent (the API server's audit
/// log then tells replicas apart). With a `fence` (leader election), a write
/// (anything but GET) other than the Lease's own is sent only while the fence
/// is open, checked just before each attempt goes on the wire: a leader that
/// was paused and resumed after losing the Lease sends nothing.
pub fn operator_client(mut config: Config, identity: &str, fence: Option<Fence>) -> kube::Result<Client> {
    config.default_retry = false;
    let user_agent = axum::http::HeaderValue::from_str(&format!("kube-jit/{} ({identity})", env!("CARGO_PKG_VERSION")))
        .map_err(|e| kube::Error::HttpError(e.into()))?;
    let fenced = FilterLayer::new(move |mut request: axum::http::Request<kube::client::Body>| {
        request.headers_mut().insert(axum::http::header::USER_AGENT, user_agent.clone());
        let read = request.method() == axum::http::Method::GET;
        let lease = request.uri().path().starts_with("/apis/coordination.k8s.io/");
        match &fence {
            Some(fence) if !read && !lease && !fence.open() => Err(NotLeading),
            _ => Ok(request),
        }
    });
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&fenced)
        .with_layer(&BufferLayer::new(MAX_IN_FLIGHT))
        .with_layer(&RetryLayer::new(retry_policy()))
        .with_layer(&ConcurrencyLimitLayer::new(MAX_IN_FLIGHT))
        .build())
}

/// A write refused by the fence: this replica does not hold the Lease.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this replica does not hold the lease (it was paused or cut off, and another may lead)")]
pub struct NotLeading;

/// The audiences the API server puts in tokens by default: its
/// `--api-audiences`, which default to the ServiceAccount issuer it
/// publishes at `/.well-known/openid-configuration` (readable by every
/// ServiceAccount through the default `system:service-account-issuer-discovery`
/// binding). Source: https://kubernetes.io/docs/reference/command-line-tools-reference/kube-apiserver/
/// (`--api-audiences`). An API server with explicit `--api-audiences` needs
/// the operator's `--token-audiences` instead.
pub async fn api_server_audiences(client: &Client) -> Result<Vec<String>, kube::Error> {
    let request = axum::http::Request::get("/.well-known/openid-configuration")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    let discovery: serde_json::Value = client.request(request).await?;
    match discovery["issuer"].as_str() {
        Some(issuer) if !issuer.is_empty() => Ok(vec![issuer.to_string()]),
        _ => Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(
            "issuer in /.well-known/openid-configuration".into(),
        ))),
    }
}
