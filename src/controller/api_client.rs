//! The operator's connection to the API server. kube's client speaks HTTP/1.1
//! with an unbounded connection pool: every request in flight holds its own
//! TLS connection, kept for 90 s after use. A burst of thousands of grants
//! (or a restart that checks thousands at once) opened thousands, at tens of
//! KiB each, and the API server gained nothing from that many in parallel.
//! A cap on requests in flight bounds both. Watches hold a slot only until
//! their response starts; their streams do not count.

use kube::client::ClientBuilder;
use kube::{Client, Config};
use tower::limit::ConcurrencyLimitLayer;

/// Requests the operator has in flight at most (queued in order beyond it).
pub const MAX_IN_FLIGHT: usize = 256;

/// A client for `config` with at most [`MAX_IN_FLIGHT`] requests in flight.
pub fn operator_client(config: Config) -> kube::Result<Client> {
    Ok(ClientBuilder::try_from(config)?.with_layer(&ConcurrencyLimitLayer::new(MAX_IN_FLIGHT)).build())
}
