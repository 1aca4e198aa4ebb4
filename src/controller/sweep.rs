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
/// from a fresh read, whatever held up the controller's own timer (a cache
/// frozen by a broken watch, a lost requeue, a throttled call).
///
/// Expiries come from the controller's cache and from this net's own reads: a
/// list of every request at least every `interval` (which finds grants the
/// cache never saw), and a GET of each grant that looks overdue ([`suspects`]),
/// at most once a second. Listing every request when one grant looked overdue
/// cost the API server 40 pages a second at 10,000 grants, for as long as that
/// grant stayed overdue; a GET costs one read per suspect.
pub async fn guard_expiries(ctx: &Context, cache: Store<AccessRequest>, grace: Duration, interval: Duration) {
    let min_gap = Duration::from_secs(1);
    let tick = Duration::from_millis(250);
    let mut seen = Seen::default();
    let (mut last_list, mut last_check): (Option<tokio::time::Instant>, Option<tokio::time::Instant>) = (None, None);
    loop {
        tokio::time::sleep(tick).await;
        if last_list.is_none_or(|t| t.elapsed() >= interval) {
            last_list = Some(tokio::time::Instant::now());
            match list_grants(ctx, grace).await {
                Ok((now_seen, due)) => {
                    seen = now_seen;
                    revoke_due(ctx, &due, grace).await;
                }
                Err(e) => tracing::warn!(error = %e, "expiry safety net could not list requests; retrying"),
            }
            continue;
        }
        if last_check.is_some_and(|t| t.elapsed() < min_gap) {
            continue;
        }
        let suspects = suspects(&cache.state(), &seen, grace, Timestamp::now());
        if suspects.is_empty() {
            continue;
        }
        last_check = Some(tokio::time::Instant::now());
        let due = check(ctx, &suspects, &mut seen, grace).await;
        revoke_due(ctx, &due, grace).await;
    }
}

/// What the safety net last read of each request with a grant, by uid: where
/// the request is and its expiry while the grant is live, or that it ended.
#[derive(Debug, Default)]
struct Seen {
    live: HashMap<String, (String, String, Option<Timestamp>)>,
    ended: HashSet<String>,
}

impl Seen {
    fn record(&mut self, r: &AccessRequest) {
        let uid = r.uid().unwrap_or_default();
        match live_grant(r) {
            Some(expiry) => {
                self.live.insert(uid, (r.namespace().unwrap_or_default(), r.name_any(), expiry));
            }
            None if r.status.as_ref().and_then(|s| s.grant.as_ref()).is_some() => {
                self.live.remove(&uid);
                self.ended.insert(uid);
            }
            None => {}
        }
    }
}

/// A request to read again: (namespace, name, uid).
type Suspect = (String, String, String);

/// The requests whose grant may be live `grace` past its expiry: those that
/// every source holding them (the controller's cache, the net's last read)
/// shows live and overdue, and that no read showed ended. Expiries only move
/// later (an extension), so a source that shows a grant not yet due is the
/// newer one and wins.
fn suspects(cached: &[std::sync::Arc<AccessRequest>], seen: &Seen, grace: Duration, now: Timestamp) -> Vec<Suspect> {
    let mut out = Vec::new();
    let mut in_cache = HashSet::with_capacity(cached.len());
    for r in cached {
        let Some(uid) = r.metadata.uid.as_deref() else { continue };
        let Some(expiry) = live_grant(r) else { continue };
        in_cache.insert(uid);
        let read_due = seen.live.get(uid).is_none_or(|(_, _, e)| overdue(*e, grace, now));
        if overdue(expiry, grace, now) && read_due && !seen.ended.contains(uid) {
            out.push((r.namespace().unwrap_or_default(), r.name_any(), uid.to_string()));
        }
    }
    for (uid, (namespace, name, expiry)) in &seen.live {
        if !in_cache.contains(uid.as_str()) && !seen.ended.contains(uid) && overdue(*expiry, grace, now) {
            out.push((namespace.clone(), name.clone(), uid.clone()));
        }
    }
    out
}

/// Lists every request (in pages): what it shows of each grant, and whole
/// copies of those overdue.
async fn list_grants(ctx: &Context, grace: Duration) -> Result<(Seen, Vec<AccessRequest>)> {
    let now = Timestamp::now();
    let mut seen = Seen::default();
    let due = each_request(&ctx.client, |r| {
        seen.record(&r);
        live_grant(&r).is_some_and(|e| overdue(e, grace, now)).then_some(r)
    })
    .await?;
    Ok((seen, due))
}

/// Reads each suspect from the API server, records what it shows, and returns
/// those still live and overdue. A request gone, or replaced by another of the
/// same name, holds nothing any more.
async fn check(ctx: &Context, suspects: &[Suspect], seen: &mut Seen, grace: Duration) -> Vec<AccessRequest> {
    let mut due = Vec::new();
    for batch in suspects.chunks(REVOCATIONS_AT_ONCE) {
        let reads = futures::future::join_all(batch.iter().map(|(namespace, name, _)| async move {
            Api::<AccessRequest>::namespaced(ctx.client.clone(), namespace).get_opt(name).await
        }))
        .await;
        let now = Timestamp::now();
        for ((namespace, name, uid), read) in batch.iter().zip(reads) {
            match read {
                Ok(Some(r)) if r.metadata.uid.as_deref() == Some(uid.as_str()) => {
                    seen.record(&r);
                    if let Some(expiry) = live_grant(&r).filter(|e| overdue(*e, grace, now)) {
                        tracing::info!(request = %format!("{namespace}/{name}"), expiry = %fmt_expiry(expiry), "expiry safety net: a grant is live past its expiry");
                        due.push(r);
                    }
                }
                Ok(_) => {
                    seen.live.remove(uid);
                    seen.ended.insert(uid.clone());
                }
                Err(e) => {
                    tracing::warn!(request = %format!("{namespace}/{name}"), error = %e, "expiry safety net could not read a request");
                }
            }
        }
    }
    due
}

async fn revoke_due(ctx: &Context, due: &[AccessRequest], grace: Duration) {
    let how = "and was still live; revoked by the expiry safety net";
    let (revoked, _) = revoke_listed(ctx, due, grace, how).await;
    if revoked > 0 {
        tracing::warn!(revoked, "expiry safety net revoked grants the controller had not revoked on time");
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A request `uid` whose grant expires at second `expires` (`None`: an
    /// unreadable expiry), revoked when `ended`.
    fn request(uid: &str, expires: Option<i64>, ended: bool) -> AccessRequest {
        let time = |s: i64| serde_json::json!(Timestamp::from_second(s).unwrap().to_string());
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("r-{uid}"), "namespace": "n", "uid": uid},
            "spec": {"requester": {"user": "u"}, "namespaces": ["a"], "duration": "1m"},
            "status": {"phase": if ended { "Expired" } else { "Granted" }, "grant": {"id": "g",
                "expiresAt": expires.map(time), "revokedAt": ended.then(|| time(0))}},
        }))
        .unwrap()
    }

    fn seen(reads: &[AccessRequest]) -> Seen {
        let mut seen = Seen::default();
        reads.iter().for_each(|r| seen.record(r));
        seen
    }

    #[test]
    fn a_grant_is_read_again_only_when_every_source_shows_it_overdue() {
        let grace = Duration::from_millis(750);
        let now = Timestamp::from_second(100).unwrap();
        let due = Some(100); // at its expiry: within the grace
        let (past, future) = (Some(90), Some(200));
        // (case, the controller's cache, the net's last reads, the suspects)
        type Case<'a> = (&'a str, &'a [AccessRequest], &'a [AccessRequest], &'a [&'a str]);
        let cases: &[Case] = &[
            ("nothing known", &[], &[], &[]),
            ("cache: overdue", &[request("a", past, false)], &[], &["a"]),
            ("cache: not due yet", &[request("a", future, false)], &[], &[]),
            ("cache: within the grace", &[request("a", due, false)], &[], &[]),
            ("cache: unreadable expiry", &[request("a", None, false)], &[], &["a"]),
            ("cache: ended", &[request("a", past, true)], &[], &[]),
            ("cache and read agree", &[request("a", past, false)], &[request("a", past, false)], &["a"]),
            ("a read shows it extended", &[request("a", past, false)], &[request("a", future, false)], &[]),
            ("a read shows it ended", &[request("a", past, false)], &[request("a", past, true)], &[]),
            ("the cache shows it extended", &[request("a", future, false)], &[request("a", past, false)], &[]),
            ("only read: overdue", &[], &[request("a", past, false)], &["a"]),
            ("only read: not due", &[], &[request("a", future, false)], &[]),
            (
                "several",
                &[request("a", past, false), request("b", future, false)],
                &[request("c", past, false), request("d", past, true)],
                &["a", "c"],
            ),
        ];
        for (case, cached, read, want) in cases {
            let cached: Vec<_> = cached.iter().cloned().map(Arc::new).collect();
            let mut got: Vec<_> =
                suspects(&cached, &seen(read), grace, now).into_iter().map(|(_, _, uid)| uid).collect();
            got.sort();
            assert_eq!(got, *want, "{case}");
        }
    }

    #[test]
    fn a_suspect_is_read_where_it_lives() {
        let read = seen(&[request("a", Some(1), false)]);
        let got = suspects(&[], &read, Duration::ZERO, Timestamp::from_second(100).unwrap());
        assert_eq!(got, vec![("n".to_string(), "r-a".to_string(), "a".to_string())]);
    }
}
