//! Safety nets that do not trust the reconcile loop: on start, revoke every
//! overdue grant before anything else; while running, revoke any grant still
//! live shortly after its expiry, from a fresh list; and periodically delete
//! any object of kube-jit's whose grant is over or whose request is gone
//! (kube-jit's by what grants recorded, never by labels: `grant::ownership`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectMeta};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};

use super::context::Context;
use super::objects;
use crate::api::access_request::{AccessRequest, Phase};
use crate::conditions::reasons;
use crate::error::{Error, Result};
use crate::grant::ownership::{self, Verdict};
use crate::names;

/// Revokes every grant of `requests` (listed from the API server) whose expiry
/// is more than `grace` past: the operator was down, or crashed, across it.
/// Every overdue grant is tried; the first failure, if any, is returned.
pub async fn revoke_overdue(ctx: &Context, requests: &[AccessRequest], grace: Duration) -> Result<usize> {
    let (revoked, failure) =
        revoke_listed(ctx, requests, grace, "while the operator was not running; revoked on start").await;
    failure.map_or(Ok(revoked), Err)
}

/// The grant of `request` if it is live: (expiry, or `None` when unreadable).
fn live_grant(request: &AccessRequest) -> Option<Option<Timestamp>> {
    let grant = request.status.as_ref()?.grant.as_ref()?;
    grant.revoked_at.is_none().then(|| grant.expires_at.as_ref().map(|t| t.0))
}

fn overdue(expiry: Option<Timestamp>, grace: Duration, now: Timestamp) -> bool {
    expiry.is_none_or(|t| t + SignedDuration::try_from(grace).unwrap_or_default() <= now)
}

/// Overdue grants ended concurrently by the start-up revocation and the safety net.
const REVOCATIONS_AT_ONCE: usize = 64;

/// Ends every listed request whose grant is live `grace` after its expiry;
/// `how` finishes the message recorded on it.
async fn revoke_listed(
    ctx: &Context,
    requests: &[AccessRequest],
    grace: Duration,
    how: &str,
) -> (usize, Option<Error>) {
    let now = Timestamp::now();
    let due: Vec<_> =
        requests.iter().filter_map(|r| live_grant(r).filter(|e| overdue(*e, grace, now)).map(|e| (r, e))).collect();
    // Many at once (the deletes share one limit, bindings first); the first
    // failure is kept.
    let mut results = Vec::with_capacity(due.len());
    for batch in due.chunks(REVOCATIONS_AT_ONCE) {
        results.extend(futures::future::join_all(batch.iter().map(|(r, e)| end_overdue(ctx, r, *e, how))).await);
    }
    let (mut revoked, mut failure) = (0, None);
    for (request, result) in results {
        match result {
            Ok(_) => revoked += 1,
            // The controller ended it meanwhile: its write came first.
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 409 => {}
            Err(e) => {
                tracing::warn!(request = %request.name_any(), error = %e, "could not revoke an overdue grant");
                failure.get_or_insert(e);
            }
        }
    }
    (revoked, failure)
}

async fn end_overdue<'a>(
    ctx: &Context,
    request: &'a AccessRequest,
    expiry: Option<Timestamp>,
    how: &str,
) -> (&'a AccessRequest, Result<kube::runtime::controller::Action>) {
    let phase = request.status.as_ref().map(|s| s.phase).filter(|p| p.is_terminal()).unwrap_or(Phase::Expired);
    let message = format!("expired at {} {how}", fmt_expiry(expiry));
    (request, super::transitions::end(request, ctx, phase, reasons::EXPIRED, message).await)
}

/// Watches for grants still live `grace` after their expiry and revokes them
/// from a fresh list, whatever held up the controller's own timer (a cache
/// frozen by a broken watch, a lost requeue, a throttled call). Expiries come
/// from the controller's cache and from this net's last list, which it
/// refreshes at least every `interval`; a list is made only when something
/// looks overdue, and at most once a second.
pub async fn guard_expiries(ctx: &Context, cache: Store<AccessRequest>, grace: Duration, interval: Duration) {
    let min_gap = Duration::from_secs(1);
    let tick = Duration::from_millis(250);
    // uid → expiry of live grants, and uids whose grant a list showed ended.
    let mut listed: HashMap<String, Option<Timestamp>> = HashMap::new();
    let mut ended: HashSet<String> = HashSet::new();
    let mut last_list: Option<tokio::time::Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let since = last_list.map(|t| t.elapsed());
        if since.is_some_and(|s| s < min_gap) {
            // No list is allowed yet: spare the scan below.
            continue;
        }
        let stale = since.is_none_or(|s| s >= interval);
        if !stale && !looks_overdue(&cache, &listed, &ended, grace) {
            continue;
        }
        last_list = Some(tokio::time::Instant::now());
        // Held of each request: its expiry, or that it ended; whole copies
        // only of those overdue.
        let (mut now_listed, mut now_ended) = (HashMap::new(), HashSet::new());
        let now = Timestamp::now();
        let listing = each_request(&ctx.client, |r| {
            let uid = r.uid().unwrap_or_default();
            match live_grant(&r) {
                Some(expiry) => {
                    now_listed.insert(uid, expiry);
                    overdue(expiry, grace, now).then_some(r)
                }
                None => {
                    if r.status.as_ref().and_then(|s| s.grant.as_ref()).is_some() {
                        now_ended.insert(uid);
                    }
                    None
                }
            }
        })
        .await;
        let due = match listing {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "expiry safety net could not list requests; retrying");
                continue;
            }
        };
        let how = "and was still live; revoked by the expiry safety net";
        let (revoked, _) = revoke_listed(ctx, &due, grace, how).await;
        if revoked > 0 {
            tracing::warn!(revoked, "expiry safety net revoked grants the controller had not revoked on time");
        }
        (listed, ended) = (now_listed, now_ended);
    }
}

/// Reads every AccessRequest from the API server, a page at a time
/// ([`for_each_page`]), and keeps what `keep` returns for each (its
/// managedFields dropped first). A safety net over thousands of grants then
/// holds what it needs of them, not every request whole at once (which set
/// the operator's peak memory).
pub async fn each_request<T>(client: &Client, mut keep: impl FnMut(AccessRequest) -> Option<T>) -> Result<Vec<T>> {
    let api = Api::<AccessRequest>::all(client.clone());
    let mut kept = Vec::new();
    for_each_page(
        &ListParams::default(),
        |page| {
            let api = api.clone();
            async move { api.list(&page).await }
        },
        |mut r| {
            r.metadata.managed_fields = None;
            kept.extend(keep(r));
        },
    )
    .await?;
    Ok(kept)
}

/// Whether a listed request needs the start of a term: its grant is overdue
/// (revoked first), or it was approved and not yet made (resumed).
pub fn needs_start_up(request: &AccessRequest) -> bool {
    let now = Timestamp::now();
    live_grant(request).is_some_and(|expiry| {
        overdue(expiry, Duration::ZERO, now) || request.status.as_ref().is_some_and(|s| s.phase == Phase::Approved)
    })
}

/// Whether some grant not known to have ended is live `grace` past its expiry,
/// by the controller's cache (which wins, being newer) or the last list.
fn looks_overdue(
    cache: &Store<AccessRequest>,
    listed: &HashMap<String, Option<Timestamp>>,
    ended: &HashSet<String>,
    grace: Duration,
) -> bool {
    let now = Timestamp::now();
    let cached = cache.state();
    let mut in_cache = HashSet::with_capacity(cached.len());
    for r in &cached {
        let Some(uid) = r.metadata.uid.as_deref() else { continue };
        if let Some(expiry) = live_grant(r) {
            in_cache.insert(uid);
            if !ended.contains(uid) && overdue(expiry, grace, now) {
                return true;
            }
        }
    }
    listed.iter().any(|(uid, e)| !in_cache.contains(uid.as_str()) && !ended.contains(uid) && overdue(*e, grace, now))
}

fn fmt_expiry(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "an unknown time".into())
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Swept {
    /// Objects of ended or vanished grants it deleted.
    pub deleted: usize,
    /// Objects labelled as kube-jit's that no grant recorded (`Kind ns/name`):
    /// reported, never deleted.
    pub foreign: Vec<String>,
}

/// The labelled objects judged by [`ownership::verdict`]: those kube-jit
/// should delete (with why), bindings first, and the foreign ones
/// (`Kind ns/name`). The ledger of what grants recorded is read first, then
/// the objects a page at a time, each judged as it comes and only the doomed
/// kept: the sweep's memory does not grow with the live grants' objects. An
/// object made (and recorded) after the ledger was read is young, and left
/// for a later sweep ([`ownership::UNRECORDED_GRACE`]).
async fn judge(
    client: &Client,
    grants_namespace: &str,
    grace: Duration,
) -> Result<(Vec<(String, ObjectMeta, &'static str)>, Vec<String>)> {
    let now = Timestamp::now();
    let mut ledger = ownership::Ledger::default();
    each_request(client, |r| {
        ledger.add(&r, now);
        None::<()>
    })
    .await?;
    let (mut doomed, mut foreign) = (Vec::new(), Vec::new());
    let mut judge_one =
        |kind: &str, meta: ObjectMeta| match ownership::verdict(kind, &meta, &ledger, grants_namespace, now, grace) {
            Verdict::Keep => {}
            Verdict::Foreign => foreign.push(describe(kind, &meta)),
            Verdict::Delete(why) => doomed.push((kind.to_string(), meta, why)),
        };
    let lp = ListParams::default().labels(names::MANAGED_SELECTOR);
    each_managed::<RoleBinding>(client, &lp, &mut judge_one).await?;
    each_managed::<ClusterRoleBinding>(client, &lp, &mut judge_one).await?;
    each_managed::<ServiceAccount>(client, &lp, &mut judge_one).await?;
    each_managed::<Role>(client, &lp, &mut judge_one).await?;
    each_managed::<ClusterRole>(client, &lp, &mut judge_one).await?;
    for (kind, meta) in grant_secrets(client, grants_namespace).await {
        judge_one(&kind, meta);
    }
    Ok((doomed, foreign))
}

/// Deletes every object of kube-jit's whose grant is over or gone, bindings
/// first, and reports the labelled objects that are not kube-jit's
/// ([`judge`]). Each delete names the uid listed: an object replaced
/// meanwhile is left for the next sweep to judge.
pub async fn sweep(client: &Client, grants_namespace: &str) -> Result<Swept> {
    let (doomed, foreign) = judge(client, grants_namespace, ownership::UNRECORDED_GRACE).await?;
    let mut swept = Swept { deleted: 0, foreign };
    for (kind, meta, why) in doomed {
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        // One failure must not stop the sweep of everything else.
        match objects::delete_exact(client, &kind, &ns, &name, meta.uid.as_deref()).await {
            Ok(true) => {
                tracing::warn!(kind, namespace = ns, name, why, "sweep deleted a managed object");
                swept.deleted += 1;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(kind, namespace = ns, name, error = %e, "sweep could not delete a managed object")
            }
        }
    }
    Ok(swept)
}

/// The objects of kube-jit's that no live grant holds (what [`sweep`]
/// deletes), for uninstall; `foreign` hears of each labelled object that is
/// not kube-jit's.
pub async fn owned_leftovers(
    client: &Client,
    grants_namespace: &str,
    foreign: &dyn Fn(String),
) -> Result<Vec<(String, ObjectMeta)>> {
    // The operator is stopped: nothing is being made, so nothing is young.
    let (doomed, others) = judge(client, grants_namespace, Duration::ZERO).await?;
    others.into_iter().for_each(foreign);
    Ok(doomed.into_iter().map(|(kind, meta, _)| (kind, meta)).collect())
}

fn describe(kind: &str, meta: &kube::api::ObjectMeta) -> String {
    match (meta.namespace.as_deref().unwrap_or_default(), meta.name.as_deref().unwrap_or_default()) {
        ("", name) => format!("{kind} {name}"),
        (ns, name) => format!("{kind} {ns}/{name}"),
    }
}

/// The token Secrets in the grants namespace (the only Secrets the operator
/// may list); none, with a warning, if it may not list them there.
async fn grant_secrets(client: &Client, grants_namespace: &str) -> Vec<(String, kube::api::ObjectMeta)> {
    let api = Api::<Secret>::namespaced(client.clone(), grants_namespace);
    match api.list_metadata(&ListParams::default().labels(names::MANAGED_SELECTOR)).await {
        Ok(list) => list
            .items
            .into_iter()
            .map(|i| {
                let mut meta = i.metadata;
                meta.managed_fields = None;
                ("Secret".to_string(), meta)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(namespace = grants_namespace, error = %e, "sweep could not list token Secrets");
            Vec::new()
        }
    }
}

/// Objects per page of the safety nets' and the sweep's lists: each page's
/// `managedFields` (a decoded tree per field manager) are dropped before the
/// next is read, so a pass over thousands of grants holds what it keeps, not
/// every object at once.
const PAGE: u32 = 250;

/// Calls `each` with every item `list` returns for `lp`, [`PAGE`] at a time,
/// following the API server's continue tokens.
async fn for_each_page<T, Fut>(
    lp: &ListParams,
    mut list: impl FnMut(ListParams) -> Fut,
    mut each: impl FnMut(T),
) -> Result<()>
where
    T: Clone + serde::de::DeserializeOwned,
    Fut: std::future::Future<Output = kube::Result<kube::core::ObjectList<T>>>,
{
    let mut page = lp.clone().limit(PAGE);
    loop {
        let listed = list(page.clone()).await?;
        listed.items.into_iter().for_each(&mut each);
        match listed.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => page = page.continue_token(&token),
            None => return Ok(()),
        }
    }
}

/// Calls `each` with the (kind, metadata) of every object of kind `K` that
/// `lp` selects, a page at a time, managedFields dropped.
async fn each_managed<K>(client: &Client, lp: &ListParams, each: &mut impl FnMut(&str, ObjectMeta)) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    let api = Api::<K>::all(client.clone());
    for_each_page(
        lp,
        |page| {
            let api = api.clone();
            async move { api.list_metadata(&page).await }
        },
        |item: PartialObjectMeta<K>| {
            let mut meta = item.metadata;
            meta.managed_fields = None;
            each(&K::kind(&()), meta);
        },
    )
    .await
}
