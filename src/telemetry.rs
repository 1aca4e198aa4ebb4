//! Logging: JSON lines on stderr, level from `--log-level` or `RUST_LOG`.
//! Audit lines share the stream under their own target (`kube_jit::audit`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is an `EnvFilter` directive such as
/// `info` or `kube_jit=debug,info`.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}
