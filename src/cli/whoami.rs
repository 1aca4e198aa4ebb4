//! `kubectl jit whoami`: who the API server says you are, the AgentIdentity
//! that registers you (if any), and your live grants.

use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::CliError;
use super::session::Session;
use crate::api::{AccessRequest, AgentIdentity, Phase};
use crate::names;

#[derive(clap::Args, Debug)]
pub struct WhoamiArgs {}

pub async fn run(_args: &WhoamiArgs) -> Result<i32, CliError> {
    let session = Session::connect().await?;
    println!("User:    {}", session.user);
    println!("Groups:  {}", session.groups.join(", "));
    if let Some((ns, _)) = names::parse_service_account_username(&session.user) {
        match &session.pod {
            Some((name, uid, node)) => {
                let node = node.as_deref().map(|n| format!(", node {n}")).unwrap_or_default();
                println!("Pod:     {ns}/{name} (uid {uid}{node}): this token is bound to that Pod");
            }
            None => {
                println!("Pod:     none (this token is not bound to a Pod: agents that require a workload deny it)")
            }
        }
    }
    if let Some((ns, sa)) = names::parse_service_account_username(&session.user) {
        let agents = Api::<AgentIdentity>::namespaced(session.client.clone(), ns).list(&ListParams::default()).await;
        match agents.map(|l| l.items.into_iter().find(|a| a.spec.service_account_name == sa)) {
            Ok(Some(a)) => {
                println!("Agent:   AgentIdentity {ns}/{} (owner {})", a.name_any(), a.spec.owner);
                if let Some(w) = &a.spec.workload {
                    let pinned = if w.required { "required" } else { "checked when asked from a Pod" };
                    println!("         workload {pinned}: images {}", w.images.join(", "));
                    if let Some(labels) = w.pod_selector.as_ref().and_then(|s| s.match_labels.as_ref()) {
                        let labels: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("         Pods labelled {}", labels.join(","));
                    }
                }
            }
            Ok(None) => println!("Agent:   none registers this ServiceAccount"),
            Err(_) => println!("Agent:   (not allowed to read AgentIdentities)"),
        }
    }
    // Every namespace if allowed, else where this identity makes its requests.
    let mine = match Api::<AccessRequest>::all(session.client.clone()).list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Api::<AccessRequest>::namespaced(session.client.clone(), &session.request_namespace(None))
                .list(&ListParams::default())
                .await
        }
        other => other,
    };
    match mine {
        Ok(list) => {
            let live: Vec<_> = list
                .items
                .iter()
                .filter(|r| r.spec.requester.user == session.user)
                .filter(|r| r.status.as_ref().is_some_and(|s| s.phase == Phase::Granted))
                .collect();
            println!("Grants:  {} live", live.len());
            for r in live {
                let row = super::get::row(r, true);
                println!("  {}/{} {} in {} (expires in {})", row[0], row[1], row[4], row[5], row[6]);
                if let Some(w) = r.status.as_ref().and_then(|s| s.workload.as_ref()) {
                    println!(
                        "    bound to Pod {}/{} (uid {}) on {}; {}",
                        w.namespace, w.pod, w.pod_uid, w.node, w.spiffe_id
                    );
                }
            }
        }
        Err(e) => println!("Grants:  (could not list AccessRequests: {e})"),
    }
    Ok(super::exit::OK)
}
