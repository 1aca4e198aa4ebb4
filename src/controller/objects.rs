//! Where grants touch the cluster: applying the objects of a plan, checking
//! they still exist, and deleting them in revocation order. Every call is
//! idempotent: an object is created, and applied (server-side apply) only when
//! it already exists; deletes tolerate absence.

use std::fmt::Debug;
use std::time::Duration;

use futures::future::try_join_all;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::{ByteString, ClusterResourceScope, NamespaceResourceScope};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ObjectRef;
use crate::error::{Error, Result};
use crate::grant::{Managed, Part, Plan, Stage};

/// The field manager of everything kube-jit writes.
pub const FIELD_MANAGER: &str = "kube-jit";

fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Creates `obj`, or, when it already exists (a retry after an interruption),
/// applies it. A create costs the API server a fraction of a server-side
/// apply (no merge of managed fields), and almost every object is new: one
/// request either way.
async fn create_or_apply<K>(api: Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let create = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    match api.create(&create, obj).await {
        Err(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists" => {
            let name = obj.meta().name.as_deref().unwrap_or_default();
            Ok(api.patch(name, &apply_params(), &Patch::Apply(obj)).await?)
        }
        other => Ok(other?),
    }
}

async fn apply_namespaced<K>(client: &Client, obj: &K, params: &PatchParams) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
{
    let meta = obj.meta();
    let api: Api<K> = Api::namespaced(client.clone(), meta.namespace.as_deref().unwrap_or_default());
    Ok(api.patch(meta.name.as_deref().unwrap_or_default(), params, &Patch::Apply(obj)).await?)
}

async fn make_namespaced<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
{
    create_or_apply(Api::namespaced(client.clone(), obj.meta().namespace.as_deref().unwrap_or_default()), obj).await
}

async fn make_cluster<K>(client: &Client, obj: &K) -> Result<K>
where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
{
    create_or_apply(Api::all(client.clone()), obj).await
}

/// Makes one object; returns the token Secret as the API server holds it
/// (the only object whose state the caller needs back).
async fn make_one(client: &Client, object: &Managed) -> Result<Option<Secret>> {
    match object {
        Managed::ServiceAccount(o) => make_namespaced(client, o).await.map(|_| None),
        Managed::Secret(o) => make_namespaced(client, o).await.map(Some),
        Managed::Role(o) => make_namespaced(client, o).await.map(|_| None),
        Managed::RoleBinding(o) => make_namespaced(client, o).await.map(|_| None),
        Managed::ClusterRole(o) => make_cluster(client, o).await.map(|_| None),
        Managed::ClusterRoleBinding(o) => make_cluster(client, o).await.map(|_| None),
    }
}

/// Makes every object of the plan, both parts (see [`make_part`]).
pub async fn make(client: &Client, plan: &Plan) -> Result<Option<Secret>> {
    make_part(client, plan, Part::Access).await?;
    make_part(client, plan, Part::Usable).await
}

/// Makes the objects of one part of the plan: its roles first, so a binding
/// never names a role that is missing, then the identity and the bindings
/// together (a binding may name the identity a moment before it exists: only
/// the operator can make a ServiceAccount of that name, so nobody else can
/// step into it). Returns the token Secret, if the part has it.
pub async fn make_part(client: &Client, plan: &Plan, part: Part) -> Result<Option<Secret>> {
    let (roles, rest): (Vec<&Managed>, Vec<&Managed>) =
        plan.part(part).into_iter().partition(|o| o.stage() == Stage::Roles);
    let mut secret = None;
    for wave in [roles, rest] {
        for made in try_join_all(wave.into_iter().map(|o| make_one(client, o))).await? {
            secret = secret.or(made);
        }
    }
    Ok(secret)
}

/// The roles `spec` binds by name with their rules now, and the names of
/// those that do not exist: what a grant records when it is decided
/// ([`crate::policy::role_content`]). Binding a missing role would leave a
/// binding that grants whatever is later created under that name.
///
/// A ClusterRole is read from `cluster_roles` (the operator's cache: only
/// cluster admins write ClusterRoles) and from the API server when the cache
/// does not show it (made a moment ago). A namespaced Role, which a tenant
/// running that namespace writes, is always read from the API server.
pub async fn granted_roles(
    client: &Client,
    cluster_roles: &kube::runtime::reflector::Store<k8s_openapi::api::rbac::v1::ClusterRole>,
    spec: &crate::api::AccessRequestSpec,
) -> Result<(Vec<crate::api::access_request::GrantedRole>, Vec<String>)> {
    use crate::api::access_request::{GrantedRole, RoleKind};
    use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
    let Some(role) = &spec.role else { return Ok((Vec::new(), Vec::new())) };
    let (mut found, mut missing) = (Vec::new(), Vec::new());
    let record =
        |kind: &str, namespace: &str, rules: Option<Vec<k8s_openapi::api::rbac::v1::PolicyRule>>| GrantedRole {
            kind: kind.into(),
            namespace: namespace.into(),
            name: role.name.clone(),
            rules: std::sync::Arc::new(rules.unwrap_or_default()),
        };
    match role.kind {
        RoleKind::ClusterRole => {
            let cached = cluster_roles.get(&kube::runtime::reflector::ObjectRef::new(&role.name));
            let current = match cached {
                Some(r) => Some(r.rules.clone()),
                None => Api::<ClusterRole>::all(client.clone()).get_opt(&role.name).await?.map(|r| r.rules),
            };
            match current {
                Some(rules) => found.push(record("ClusterRole", "", rules)),
                None => missing.push(format!("ClusterRole {}", role.name)),
            }
        }
        RoleKind::Role => {
            for ns in &spec.namespaces {
                match Api::<Role>::namespaced(client.clone(), ns).get_opt(&role.name).await? {
                    Some(r) => found.push(record("Role", ns, r.rules)),
                    None => missing.push(format!("Role {ns}/{}", role.name)),
                }
            }
        }
    }
    Ok((found, missing))
}

/// Deletes the recorded objects of a grant in revocation order: the bindings
/// that give the rights (outside the identity's namespace), then the identity
/// with the bindings beside it (the requester's right to mint), then roles;
/// absent objects are fine. Across grants ending together, every grant's
/// rights go before any identity ([`DELETES`] serves first come, first served).
pub async fn delete_refs(client: &Client, refs: &[ObjectRef]) -> Result<usize> {
    let identity_ns = refs.iter().find(|r| r.kind == "ServiceAccount").map(|r| r.namespace.as_str());
    let wave = |r: &ObjectRef| match Stage::of_kind(&r.kind) {
        Stage::Bindings if Some(r.namespace.as_str()) != identity_ns || r.namespace.is_empty() => 0,
        Stage::Bindings | Stage::Identity => 1,
        Stage::Roles => 2,
    };
    let mut deleted = 0;
    for stage in 0..3 {
        let batch = refs.iter().filter(|r| wave(r) == stage);
        let results = try_join_all(batch.map(|r| async move {
            match delete_by_ref(client, &r.kind, &r.namespace, &r.name).await {
                // The right to delete token Secrets comes from a RoleBinding in
                // their namespace, which may be gone (a namespace being deleted):
                // the Secret is owned by the request, so the garbage collector
                // removes it, and its token died with the grant's ServiceAccount.
                Err(Error::Kube(kube::Error::Api(s))) if s.code == 403 && r.kind == "Secret" => {
                    tracing::warn!(namespace = %r.namespace, name = %r.name, "may not delete the token Secret; left to the garbage collector");
                    Ok(false)
                }
                other => other,
            }
        }))
        .await?;
        deleted += results.into_iter().filter(|d| *d).count();
    }
    Ok(deleted)
}

/// Whether a recorded object exists, asking the API server. Secrets count as
/// present: the operator holds no read access to Secrets.
pub async fn exists_ref(client: &Client, r: &ObjectRef) -> Result<bool> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let (ns, name) = (r.namespace.as_str(), r.name.as_str());
    let found = match r.kind.as_str() {
        "ServiceAccount" => {
            Api::<ServiceAccount>::namespaced(client.clone(), ns).get_metadata_opt(name).await?.is_some()
        }
        "Role" => Api::<Role>::namespaced(client.clone(), ns).get_metadata_opt(name).await?.is_some(),
        "RoleBinding" => Api::<RoleBinding>::namespaced(client.clone(), ns).get_metadata_opt(name).await?.is_some(),
        "ClusterRole" => Api::<ClusterRole>::all(client.clone()).get_metadata_opt(name).await?.is_some(),
        "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone()).get_metadata_opt(name).await?.is_some(),
        _ => true,
    };
    Ok(found)
}

/// Revocation deletes in flight at once across all grants: enough to keep the
/// API server busy, few enough that a thousand grants ending together stay
/// under its in-flight limit instead of being refused (429) and retried.
const DELETES_IN_FLIGHT: usize = 200;
static DELETES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(DELETES_IN_FLIGHT);

/// How long a delete refused as too many requests (429) is retried here,
/// rather than failing the whole revocation into a requeue.
const THROTTLED_RETRY_FOR: Duration = Duration::from_secs(5);

/// Deletes one managed object by kind, namespace and name; `Ok(false)` if it
/// was already gone. A 429 is retried with backoff for a few seconds.
pub async fn delete_by_ref(client: &Client, kind: &str, namespace: &str, name: &str) -> Result<bool> {
    delete_exact(client, kind, namespace, name, None).await
}

/// [`delete_by_ref`], of the object with `uid` only (when given): `Ok(false)`
/// if the object of that name is now another one (a uid precondition,
/// answered 409 by the API server).
pub async fn delete_exact(client: &Client, kind: &str, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool> {
    let give_up = tokio::time::Instant::now() + THROTTLED_RETRY_FOR;
    let mut wait = Duration::from_millis(50);
    loop {
        let result = {
            let _permit = DELETES.acquire().await.expect("the delete semaphore is never closed");
            delete_once(client, kind, namespace, name, uid).await
        };
        match result {
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 429 && tokio::time::Instant::now() + wait < give_up => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(800));
            }
            other => return other,
        }
    }
}

async fn delete_once(client: &Client, kind: &str, namespace: &str, name: &str, uid: Option<&str>) -> Result<bool> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    // Background propagation: the object goes now, dependants after.
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: uid.map(|uid| kube::api::Preconditions { uid: Some(uid.to_string()), resource_version: None }),
        ..DeleteParams::default()
    };
    let result = match kind {
        "ServiceAccount" => {
            Api::<ServiceAccount>::namespaced(client.clone(), namespace).delete(name, &dp).await.map(|_| ())
        }
        "Secret" => Api::<Secret>::namespaced(client.clone(), namespace).delete(name, &dp).await.map(|_| ()),
        "Role" => Api::<Role>::namespaced(client.clone(), namespace).delete(name, &dp).await.map(|_| ()),
        "RoleBinding" => Api::<RoleBinding>::namespaced(client.clone(), namespace).delete(name, &dp).await.map(|_| ()),
        "ClusterRole" => Api::<ClusterRole>::all(client.clone()).delete(name, &dp).await.map(|_| ()),
        "ClusterRoleBinding" => Api::<ClusterRoleBinding>::all(client.clone()).delete(name, &dp).await.map(|_| ()),
        other => {
            tracing::warn!(kind = other, name, "unknown managed kind; not deleted");
            return Ok(false);
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        // The uid precondition failed: the name now belongs to another object.
        Err(kube::Error::Api(s)) if s.code == 409 && uid.is_some() => Ok(false),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// For clients that cannot call TokenRequest: mints a token for the grant's
/// ServiceAccount bound to the grant's Secret (deleting the Secret kills the
/// token) and stores it there, under its own field manager so re-applying the
/// Secret's metadata never drops it. `applied` is the Secret as `make` left it;
/// returns false when it already holds a token.
pub async fn fill_token_secret(client: &Client, plan: &Plan, applied: &Secret, remaining_secs: i64) -> Result<bool> {
    if applied.data.as_ref().is_some_and(|d| d.contains_key("token")) {
        return Ok(false);
    }
    mint_into_secret(client, plan, applied, remaining_secs).await
}

/// Mints a fresh Secret-bound token into the grant's Secret, replacing any
/// token there (after an extension, so the token lasts as long as the grant).
pub async fn mint_into_secret(client: &Client, plan: &Plan, applied: &Secret, remaining_secs: i64) -> Result<bool> {
    let (Some(sa), Some(secret)) = (plan.service_account(), plan.token_secret()) else { return Ok(false) };
    let ns = secret.metadata.namespace.clone().unwrap_or_default();
    let name = secret.metadata.name.clone().unwrap_or_default();
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            // The API server's floor is 10 minutes; revocation does not rely on
            // expiry but on the ServiceAccount and Secret being deleted.
            expiration_seconds: Some(remaining_secs.max(600)),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Secret".into()),
                name: Some(name.clone()),
                uid: applied.metadata.uid.clone(),
            }),
            audiences: None,
        }),
        ..TokenRequest::default()
    };
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let minted = sas
        .create_token_request(sa.metadata.name.as_deref().unwrap_or_default(), &PostParams::default(), &request)
        .await?;
    let token = minted.status.and_then(|s| s.token).ok_or(Error::NoToken)?;
    let filled = Secret {
        metadata: kube::api::ObjectMeta { name: Some(name), namespace: Some(ns.clone()), ..Default::default() },
        data: Some(
            [
                ("token".to_string(), ByteString(token.into_bytes())),
                ("namespace".to_string(), ByteString(ns.into_bytes())),
            ]
            .into(),
        ),
        ..Secret::default()
    };
    apply_namespaced(client, &filled, &PatchParams::apply(TOKEN_FIELD_MANAGER).force()).await?;
    Ok(true)
}

/// The field manager that owns a token Secret's data.
const TOKEN_FIELD_MANAGER: &str = "kube-jit-token";
