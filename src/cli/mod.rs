//! `kubectl jit`: one module per command, each with its options, validation,
//! run and examples; `main` in `src/bin/kubectl-jit.rs` only dispatches.

pub mod approve;
pub mod check;
pub mod explain;
pub mod extend;
pub mod get;
pub mod inventory;
pub mod output;
pub mod request;
pub mod revoke;
pub mod session;
pub mod whoami;

/// Exit codes shared by the commands.
pub mod exit {
    /// Success (for `check`: the request would be allowed).
    pub const OK: i32 = 0;
    /// The answer is no: `check` would deny; a request ended without a grant.
    pub const DENIED: i32 = 1;
    /// Bad input: unreadable files, invalid YAML, missing fields.
    pub const BAD_INPUT: i32 = 2;
    /// The cluster could not be read: no kubeconfig, unreachable, or forbidden.
    pub const CLUSTER: i32 = 3;
}

/// An error the user can act on, with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub message: String,
    pub code: i32,
}

impl CliError {
    pub fn bad_input(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: exit::BAD_INPUT }
    }

    /// The cluster refused or could not be reached.
    pub fn cluster(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: exit::CLUSTER }
    }

    /// The answer is no (a request was denied, or a decision would have no effect).
    pub fn denied(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: exit::DENIED }
    }
}

impl From<kube::Error> for CliError {
    fn from(e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => CliError::cluster(s.message),
            other => CliError::cluster(other.to_string()),
        }
    }
}
