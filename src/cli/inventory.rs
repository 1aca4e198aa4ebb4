//! `kubectl jit inventory`: every ServiceAccount of the live cluster with what
//! it holds without asking (standing RBAC, legacy long-lived tokens) and a risk
//! class. This module lists; `policy::risk` decides; `build` joins them, purely.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectList, ObjectMeta, PartialObjectMeta};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde::Serialize;

use super::{CliError, exit};
use crate::api::{AccessRequest, AgentIdentity};
use crate::policy::risk::{self, BoundRole, Risk};
use crate::policy::standing_privilege::{self, Finding};

/// Secret type of the legacy, never-expiring ServiceAccount tokens.
const LEGACY_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation naming the ServiceAccount a legacy token Secret belongs to.
const LEGACY_TOKEN_SA_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Label the API server sets (a date) when a legacy token is used.
const LEGACY_TOKEN_LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";

/// Options of `kubectl jit inventory`.
#[derive(clap::Args, Debug)]
pub struct InventoryArgs {
    /// Every namespace (default: the namespace of the current context).
    #[arg(long, short = 'A', conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// The namespace whose ServiceAccounts to list.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Table without the header line and the summary.
    #[arg(long)]
    pub no_headers: bool,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

/// The inventory, as `-o json` prints it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    pub service_accounts: Vec<Identity>,
    pub summary: BTreeMap<&'static str, usize>,
}

/// One ServiceAccount and what it holds.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Identity {
    pub namespace: String,
    pub name: String,
    pub risk: Risk,
    pub reason: String,
    pub standing: Vec<Standing>,
    pub legacy_tokens: Vec<LegacyToken>,
    /// The AgentIdentity (same namespace) registering this ServiceAccount.
    pub agent_identity: Option<String>,
    /// Whether kube-jit created it (an ephemeral grant identity).
    pub managed: bool,
}

#[derive(Serialize, Debug)]
pub struct Standing {
    pub binding: String,
    pub role: String,
    pub via: String,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct LegacyToken {
    pub name: String,
    pub last_used: Option<String>,
}

/// Everything the inventory reads from the cluster.
#[derive(Default)]
pub struct Snapshot {
    pub service_accounts: Vec<ObjectMeta>,
    /// Metadata only: the token values never leave the API server.
    pub token_secrets: Vec<ObjectMeta>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub cluster_roles: Vec<ClusterRole>,
    pub agents: Vec<AgentIdentity>,
    /// Every AccessRequest: the objects their live grants recorded are
    /// kube-jit's (its label alone proves nothing).
    pub requests: Vec<AccessRequest>,
}

/// Runs the command; returns the exit code.
pub async fn run(args: &InventoryArgs) -> Result<i32, CliError> {
    let client = client(args).await?;
    let namespace = match (&args.namespace, args.all_namespaces) {
        (_, true) => None,
        (Some(ns), false) => Some(ns.clone()),
        (None, false) => Some(client.default_namespace().to_string()),
    };
    let inventory = build(&fetch(&client, namespace.as_deref()).await?);
    match args.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&inventory).expect("inventory serialises")),
        Format::Table if inventory.service_accounts.is_empty() => match &namespace {
            Some(ns) => eprintln!("No ServiceAccounts found in namespace {ns}."),
            None => eprintln!("No ServiceAccounts found."),
        },
        Format::Table => print!("{}", table(&inventory, namespace.is_none(), args.no_headers)),
    }
    Ok(exit::OK)
}

async fn client(args: &InventoryArgs) -> Result<Client, CliError> {
    let failed = |e: &dyn std::fmt::Display| CliError::cluster(format!("cannot load the kubeconfig: {e}"));
    if args.kubeconfig.is_none() && args.context.is_none() {
        // kube's own resolution: $KUBECONFIG (a path list), ~/.kube/config, in-cluster.
        return Client::try_default().await.map_err(|e| failed(&e));
    }
    let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| failed(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        None => Config::from_kubeconfig(&options).await,
    }
    .map_err(|e| failed(&e))?;
    Client::try_from(config).map_err(|e| failed(&e))
}

/// Lists what the inventory needs. Bindings and roles are read in every
/// namespace even for `-n`: a RoleBinding elsewhere can name this namespace's
/// ServiceAccounts, and inventory must not miss it.
pub async fn fetch(client: &Client, namespace: Option<&str>) -> Result<Snapshot, CliError> {
    fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let lp = ListParams::default();
    let failed = |what: &str, where_: &str, e: kube::Error| {
        let detail = match e {
            kube::Error::Api(s) => s.message,
            other => other.to_string(),
        };
        CliError::cluster(format!("cannot list {what}{where_}: {detail}"))
    };
    let where_ = namespace.map(|ns| format!(" in namespace {ns}")).unwrap_or_else(|| " in all namespaces".into());
    let all = " in all namespaces";
    let tokens = ListParams::default().fields(&format!("type={LEGACY_TOKEN_TYPE}"));
    let sa_api = scoped::<ServiceAccount>(client, namespace);
    let secret_api = scoped::<Secret>(client, namespace);
    let agent_api = scoped::<AgentIdentity>(client, namespace);
    let (rb_api, crb_api) = (Api::<RoleBinding>::all(client.clone()), Api::<ClusterRoleBinding>::all(client.clone()));
    let (role_api, cr_api) = (Api::<Role>::all(client.clone()), Api::<ClusterRole>::all(client.clone()));
    let (service_accounts, token_secrets, role_bindings, cluster_role_bindings, roles, cluster_roles, agents) = futures::join!(
        sa_api.list_metadata(&lp),
        secret_api.list_metadata(&tokens),
        rb_api.list(&lp),
        crb_api.list(&lp),
        role_api.list(&lp),
        cr_api.list(&lp),
        agent_api.list(&lp),
    );

    // Every namespace: a grant made from elsewhere may bind here.
    let requests = match Api::<AccessRequest>::all(client.clone()).list(&lp).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(failed("accessrequests", all, e)),
    };
    let agents = match agents {
        Ok(list) => list.items,
        // Without kube-jit's CRDs there are no AgentIdentities; the rest still stands.
        Err(kube::Error::Api(s)) if s.code == 404 => Vec::new(),
        Err(e) => return Err(failed("agentidentities", &where_, e)),
    };
    fn metas<K: Clone>(list: ObjectList<PartialObjectMeta<K>>) -> Vec<ObjectMeta> {
        list.items.into_iter().map(|m| m.metadata).collect()
    }
    Ok(Snapshot {
        service_accounts: metas(service_accounts.map_err(|e| failed("serviceaccounts", &where_, e))?),
        token_secrets: metas(token_secrets.map_err(|e| failed("secrets", &where_, e))?),
        role_bindings: role_bindings.map_err(|e| failed("rolebindings", all, e))?.items,
        cluster_role_bindings: cluster_role_bindings.map_err(|e| failed("clusterrolebindings", "", e))?.items,
        roles: roles.map_err(|e| failed("roles", all, e))?.items,
        cluster_roles: cluster_roles.map_err(|e| failed("clusterroles", "", e))?.items,
        agents,
        requests,
    })
}

/// The inventory of a snapshot: who holds what, and how risky that is.
pub fn build(snapshot: &Snapshot) -> Inventory {
    let empty: &[PolicyRule] = &[];
    let cluster_roles: HashMap<&str, &[PolicyRule]> = snapshot
        .cluster_roles
        .iter()
        .map(|r| (r.metadata.name.as_deref().unwrap_or(""), r.rules.as_deref().unwrap_or(empty)))
        .collect();
    let roles: HashMap<(&str, &str), &[PolicyRule]> = snapshot
        .roles
        .iter()
        .map(|r| {
            let key = (r.metadata.namespace.as_deref().unwrap_or(""), r.metadata.name.as_deref().unwrap_or(""));
            (key, r.rules.as_deref().unwrap_or(empty))
        })
        .collect();
    // A Role lives in its RoleBinding's namespace, which a Finding spells
    // `RoleBinding <ns>/<name>` (namespaces cannot contain '/').
    let rules_of = |f: &Finding| -> Option<&[PolicyRule]> {
        let (kind, name) = f.role.split_once('/')?;
        match kind {
            "ClusterRole" => cluster_roles.get(name).copied(),
            _ => {
                let ns = f.binding.strip_prefix("RoleBinding ")?.split_once('/')?.0;
                roles.get(&(ns, name)).copied()
            }
        }
    };
    let mut agents: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for a in &snapshot.agents {
        let ns = a.metadata.namespace.as_deref().unwrap_or("");
        agents.entry((ns, &a.spec.service_account_name)).or_default().push(a.metadata.name.as_deref().unwrap_or(""));
    }
    let recorded = standing_privilege::Recorded::of(&snapshot.requests);
    let mut identities = Vec::new();
    for sa in &snapshot.service_accounts {
        let (ns, name) = (sa.namespace.as_deref().unwrap_or(""), sa.name.as_deref().unwrap_or(""));
        let managed = recorded.contains("ServiceAccount", sa);
        let findings = standing_privilege::findings(
            ns,
            name,
            &snapshot.role_bindings,
            &snapshot.cluster_role_bindings,
            |kind: &str, meta: &ObjectMeta| recorded.contains(kind, meta),
        );
        let bound: Vec<BoundRole> = findings.iter().map(|f| BoundRole { finding: f, rules: rules_of(f) }).collect();
        let legacy_tokens: Vec<LegacyToken> = snapshot
            .token_secrets
            .iter()
            .filter(|s| {
                s.namespace.as_deref() == Some(ns)
                    && s.annotations.as_ref().and_then(|a| a.get(LEGACY_TOKEN_SA_ANNOTATION)).map(String::as_str)
                        == Some(name)
            })
            .map(|s| LegacyToken {
                name: s.name.clone().unwrap_or_default(),
                last_used: s.labels.as_ref().and_then(|l| l.get(LEGACY_TOKEN_LAST_USED_LABEL)).cloned(),
            })
            .collect();
        // Whether a leaked token was ever used is what an operator asks next.
        let token_labels: Vec<String> = legacy_tokens
            .iter()
            .map(|t| match &t.last_used {
                Some(day) => format!("{} (last used {day})", t.name),
                None => format!("{} (no use recorded)", t.name),
            })
            .collect();
        let token_refs: Vec<&str> = token_labels.iter().map(String::as_str).collect();
        let assessment = risk::classify(managed, &bound, &token_refs);
        identities.push(Identity {
            namespace: ns.to_string(),
            name: name.to_string(),
            risk: assessment.risk,
            reason: assessment.reason,
            standing: findings
                .iter()
                .map(|f| Standing { binding: f.binding.clone(), role: f.role.clone(), via: f.via.clone() })
                .collect(),
            legacy_tokens,
            agent_identity: agents.get(&(ns, name)).map(|a| a.join(",")),
            managed,
        });
    }
    identities.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut summary: BTreeMap<&'static str, usize> = Risk::ALL.iter().map(|r| (r.as_str(), 0)).collect();
    for i in &identities {
        *summary.entry(i.risk.as_str()).or_default() += 1;
    }
    summary.insert("total", identities.len());
    Inventory { service_accounts: identities, summary }
}

/// A kubectl-style table: columns padded to their widest cell, the last one free.
pub fn table(inventory: &Inventory, with_namespace: bool, no_headers: bool) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if !no_headers {
        let header = ["NAMESPACE", "SERVICEACCOUNT", "RISK", "STANDING", "LEGACY-TOKENS", "AGENT", "MANAGED", "REASON"];
        rows.push(header.iter().skip(usize::from(!with_namespace)).map(|h| h.to_string()).collect());
    }
    for i in &inventory.service_accounts {
        let mut standing: Vec<String> = Vec::new();
        for s in &i.standing {
            let cell = if s.via.starts_with("via group") { format!("{}(group)", s.role) } else { s.role.clone() };
            if !standing.contains(&cell) {
                standing.push(cell);
            }
        }
        let mut row = if with_namespace { vec![i.namespace.clone()] } else { Vec::new() };
        row.extend([
            i.name.clone(),
            i.risk.to_string(),
            if standing.is_empty() { "<none>".into() } else { standing.join(",") },
            i.legacy_tokens.len().to_string(),
            i.agent_identity.clone().unwrap_or_else(|| "<none>".into()),
            i.managed.to_string(),
            i.reason.clone(),
        ]);
        rows.push(row);
    }
    let columns = rows.first().map(Vec::len).unwrap_or(0);
    let widths: Vec<usize> =
        (0..columns).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| if c + 1 == columns { cell.clone() } else { format!("{cell:<w$}", w = widths[c]) })
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    if !no_headers {
        let counts: Vec<String> = Risk::ALL.iter().map(|r| format!("{} {r}", inventory.summary[r.as_str()])).collect();
        out.push_str(&format!("\n{} ServiceAccounts: {}\n", inventory.summary["total"], counts.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn joins_bindings_roles_tokens_and_agents() {
        let sa = |ns: &str, name: &str, labels: serde_json::Value| -> ObjectMeta {
            from(json!({"namespace": ns, "name": name, "labels": labels}))
        };
        let snapshot = Snapshot {
            service_accounts: vec![
                sa("a", "bot", json!({})),
                sa("a", "idle", json!({})),
                sa("a", "jit-x-1", json!({"app.kubernetes.io/managed-by": "kube-jit"})),
                sa("a", "jit-forged", json!({"app.kubernetes.io/managed-by": "kube-jit"})),
            ],
            token_secrets: vec![from(json!({"namespace": "a", "name": "bot-token",
                "annotations": {"kubernetes.io/service-account.name": "bot"},
                "labels": {"kubernetes.io/legacy-token-last-used": "2026-05-01"}}))],
            role_bindings: vec![from(json!({"metadata": {"namespace": "b", "name": "reads"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "bot", "namespace": "a"}]}))],
            roles: vec![
                from(json!({"metadata": {"namespace": "b", "name": "reader"},
                    "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}]})),
                // Same name in the SA's own namespace: must not be the one resolved.
                from(json!({"metadata": {"namespace": "a", "name": "reader"}, "rules": []})),
            ],
            agents: vec![from(json!({"metadata": {"namespace": "a", "name": "deployer"},
                "spec": {"owner": "team", "serviceAccountName": "bot"}}))],
            // jit-x-1 is a live grant's identity; "jit-forged" only carries the label.
            requests: vec![from(json!({"metadata": {"namespace": "a", "name": "r"},
                "spec": {"requester": {"user": "u"}, "role": {"kind": "ClusterRole", "name": "view"}, "namespaces": ["b"]},
                "status": {"phase": "Granted", "grant": {"id": "x", "objects": [
                    {"kind": "ServiceAccount", "namespace": "a", "name": "jit-x-1"}]}}}))],
            ..Snapshot::default()
        };
        let inv = build(&snapshot);
        let got: Vec<(&str, Risk)> = inv.service_accounts.iter().map(|i| (i.name.as_str(), i.risk)).collect();
        assert_eq!(
            got,
            [("bot", Risk::Critical), ("idle", Risk::Low), ("jit-forged", Risk::Low), ("jit-x-1", Risk::Managed)]
        );
        let bot = &inv.service_accounts[0];
        assert_eq!(bot.reason, "can read secrets via RoleBinding b/reads → Role/reader (directly)");
        assert_eq!(bot.agent_identity.as_deref(), Some("deployer"));
        assert_eq!(bot.legacy_tokens[0].last_used.as_deref(), Some("2026-05-01"));
        assert_eq!(inv.summary["critical"], 1);
        assert_eq!(inv.summary["total"], 4);

        let text = table(&inv, false, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("SERVICEACCOUNT   RISK       STANDING      LEGACY-TOKENS   AGENT"), "{text}");
        assert!(lines[1].starts_with("bot              critical   Role/reader   1               deployer"), "{text}");
        assert_eq!(lines.last().unwrap(), &"4 ServiceAccounts: 1 critical, 0 high, 0 medium, 2 low, 1 managed");
        let bare = table(&inv, true, true);
        assert!(bare.starts_with("a   bot "), "{bare}");
        assert_eq!(bare.lines().count(), 4);
    }
}
