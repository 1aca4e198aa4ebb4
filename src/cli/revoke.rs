//! `kubectl jit revoke`: end a grant now (sets spec.revoke; it cannot be undone).

use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::CliError;
use super::session::Session;
use crate::api::AccessRequest;

/// Options of `kubectl jit revoke`.
#[derive(clap::Args, Debug)]
pub struct RevokeArgs {
    /// The AccessRequest whose grant to end.
    pub name: String,
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
}

pub async fn run(args: &RevokeArgs) -> Result<i32, CliError> {
    let session = Session::connect().await?;
    let ns = session.request_namespace(args.namespace.as_deref());
    let api: Api<AccessRequest> = Api::namespaced(session.client.clone(), &ns);
    api.patch(&args.name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoke": true}}))).await?;
    println!("accessrequest.kubejit.io/{} revoked", args.name);
    Ok(super::exit::OK)
}
