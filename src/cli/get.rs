//! `kubectl jit get` / `list`: requests as a table that reads at a glance
//! (state, agent, role, namespaces, time left, purpose), or as JSON/YAML.

use futures::StreamExt;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::CliError;
use super::output::{self, Format};
use super::session::Session;
use crate::api::AccessRequest;

/// Options of `kubectl jit get`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// One request by name (default: all in the namespace).
    pub name: Option<String>,
    /// Namespace of the requests (default: your ServiceAccount's, or the kubeconfig's).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Requests in every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Keep printing rows as requests change.
    #[arg(long, short = 'w')]
    pub watch: bool,
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Print the table without its header row.
    #[arg(long)]
    pub no_headers: bool,
}

const HEADERS: [&str; 8] = ["NAMESPACE", "NAME", "STATE", "AGENT", "ROLE", "NAMESPACES", "EXPIRES-IN", "PURPOSE"];

/// One table row of a request.
pub fn row(r: &AccessRequest, with_namespace: bool) -> Vec<String> {
    let status = r.status.clone().unwrap_or_default();
    let role = match (&r.spec.role, &r.spec.rules) {
        (Some(role), _) => role.name.clone(),
        (None, Some(rules)) => format!("<{} rules>", rules.len()),
        _ => String::new(),
    };
    let expires = match (status.phase.is_terminal(), status.grant.as_ref().and_then(|g| g.expires_at.as_ref())) {
        (false, Some(t)) => output::until(t.0),
        _ => "-".into(),
    };
    let mut row = vec![
        r.metadata.name.clone().unwrap_or_default(),
        format!("{:?}", status.phase),
        r.spec.for_agent.clone().unwrap_or_else(|| "-".into()),
        role,
        if r.spec.cluster_wide { "*".into() } else { r.spec.namespaces.join(",") },
        expires,
        r.spec.purpose.clone().unwrap_or_default().chars().take(40).collect(),
    ];
    if with_namespace {
        row.insert(0, r.metadata.namespace.clone().unwrap_or_default());
    }
    row
}

pub async fn run(args: &GetArgs) -> Result<i32, CliError> {
    let session = Session::connect().await?;
    let api: Api<AccessRequest> = if args.all_namespaces {
        Api::all(session.client.clone())
    } else {
        Api::namespaced(session.client.clone(), &session.request_namespace(args.namespace.as_deref()))
    };
    let items = match &args.name {
        Some(name) => vec![api.get(name).await?],
        None => api.list(&ListParams::default()).await?.items,
    };
    print(&items, args);
    if args.watch {
        let stream = watcher(api, watcher::Config::default()).applied_objects().default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            let r = event.map_err(|e| CliError::cluster(e.to_string()))?;
            if args.name.as_ref().is_none_or(|n| Some(n) == r.metadata.name.as_ref()) {
                print(&[r], &GetArgs { no_headers: true, ..clone_args(args) });
            }
        }
    }
    Ok(super::exit::OK)
}

fn clone_args(a: &GetArgs) -> GetArgs {
    GetArgs { name: a.name.clone(), namespace: a.namespace.clone(), ..*a }
}

fn print(items: &[AccessRequest], args: &GetArgs) {
    match args.output {
        Format::Table => {
            let headers: Vec<&str> = if args.all_namespaces { HEADERS.to_vec() } else { HEADERS[1..].to_vec() };
            let rows: Vec<_> = items.iter().map(|r| row(r, args.all_namespaces)).collect();
            print!("{}", output::table(&headers, &rows, args.no_headers));
        }
        Format::Name => items
            .iter()
            .for_each(|r| println!("accessrequest.kubejit.io/{}", r.metadata.name.clone().unwrap_or_default())),
        format if items.len() == 1 && args.name.is_some() => print!("{}", output::structured(&items[0], format)),
        format => print!(
            "{}",
            output::structured(&serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}), format)
        ),
    }
}
