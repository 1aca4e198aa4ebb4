//! `kubectl jit extend`: ask for more time on a live grant. The operator
//! grants it only where the matched policy allows extension, and never past
//! the policy's maximum counted from the grant's start.

use kube::api::Api;

use super::CliError;
use super::session::Session;
use crate::api::{AccessRequest, Phase};
use crate::client::{self, WaitError};
use crate::durations;

/// Options of `kubectl jit extend`.
#[derive(clap::Args, Debug)]
pub struct ExtendArgs {
    /// The AccessRequest whose grant to extend (you must be its requester).
    pub name: String,
    /// How much longer: `90s`, `15m`, `1h30m`.
    #[arg(long, value_name = "DURATION")]
    pub by: String,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// How long to wait for the operator's answer.
    #[arg(long, default_value = "30s", value_name = "DURATION")]
    pub timeout: String,
}

pub async fn run(args: &ExtendArgs) -> Result<i32, CliError> {
    durations::parse(&args.by).map_err(|e| CliError::bad_input(format!("--by: {e}")))?;
    let timeout = durations::parse(&args.timeout).map_err(|e| CliError::bad_input(format!("--timeout: {e}")))?;
    let session = Session::connect().await?;
    let ns = session.request_namespace(args.namespace.as_deref());
    let api: Api<AccessRequest> = Api::namespaced(session.client.clone(), &ns);
    let current = api.get(&args.name).await?;
    let phase = current.status.as_ref().map(|s| s.phase).unwrap_or_default();
    if phase != Phase::Granted {
        return Err(CliError::denied(format!("only a live grant can be extended; {} is {phase:?}", args.name)));
    }
    let count = client::extend(&api, &args.name, &args.by).await?;
    let answered = client::wait_for_extension(&api, &args.name, count, timeout).await.map_err(|e| match e {
        WaitError::Kube(e) => CliError::from(e),
        other => CliError::cluster(other.to_string()),
    })?;
    let status = answered.status.unwrap_or_default();
    match status.extensions.get(count - 1) {
        Some(answer) if answer.granted => {
            println!("accessrequest.kubejit.io/{} {}", args.name, answer.message);
            Ok(super::exit::OK)
        }
        Some(answer) => Err(CliError::denied(answer.message.clone())),
        None => {
            Err(CliError::denied(format!("{} ended {:?} before the extension was answered", args.name, status.phase)))
        }
    }
}
