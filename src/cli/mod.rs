//! `kubectl jit`: one module per command, each with its options, validation,
//! run and examples; `main` in `src/bin/kubectl-jit.rs` only dispatches.

pub mod check;
pub mod inventory;

/// Exit codes shared by the commands.
pub mod exit {
    /// Success (for `check`: the request would be allowed).
    pub const OK: i32 = 0;
    /// The answer is no (for `check`: the request would be denied).
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

    pub fn cluster(message: impl Into<String>) -> Self {
        CliError { message: message.into(), code: exit::CLUSTER }
    }
}
