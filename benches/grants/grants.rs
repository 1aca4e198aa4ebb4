//! The two ways to the same access: through kube-jit (an AccessRequest, the
//! operator makes the grant, the requester mints a token) and the floor (a
//! plain client creates a ServiceAccount and a RoleBinding and mints a token
//! itself). Plus the probe that watches a token lose its access.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::json;

use crate::board::Board;
use crate::world::{AGENT_USER, AGENTS_NS, FLOOR_LABEL, GRANTS_NS, TARGET_NS, World, in_scope_status, wait_status};

pub const GRANT_LIMIT: Duration = Duration::from_secs(600);

/// Creates an AccessRequest as the agent for `view` in the target namespace.
pub async fn request(w: &World, name: &str, duration: &str) -> anyhow::Result<()> {
    let request: AccessRequest = serde_json::from_value(json!({
        "apiVersion": "kubejit.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": name},
        "spec": {"requester": {"user": AGENT_USER}, "role": {"kind": "ClusterRole", "name": "view"},
                 "namespaces": [TARGET_NS], "duration": duration, "purpose": "benchmark"}}))?;
    Api::<AccessRequest>::namespaced(w.agent.clone(), AGENTS_NS).create(&PostParams::default(), &request).await?;
    Ok(())
}

/// A grant made through kube-jit, ready to use.
pub struct Held {
    pub name: String,
    pub request: AccessRequest,
    pub client: Client,
    /// AccessRequest created → first successful in-scope call.
    pub latency: Duration,
    /// TokenRequests refused (403) after Granted was visible, before one succeeded.
    pub mint_retries: u32,
    /// Where the time went, ms from the start: request created, Granted
    /// seen, token minted, first in-scope 200.
    pub steps: [f64; 4],
    /// In-scope calls until the first 200.
    pub calls: u32,
}

/// Asks, waits for Granted (watch), mints a token as the requester, and calls
/// until the call succeeds.
pub async fn operator_grant(w: &World, board: &Board, name: &str, duration: &str) -> anyhow::Result<Held> {
    let start = Instant::now();
    let since = |t: Instant| crate::measure::ms(t - start);
    request(w, name, duration).await?;
    let requested = Instant::now();
    let granted = board.wait(name, Phase::Granted, GRANT_LIMIT).await?;
    let seen = Instant::now();
    // Granted is recorded after the token RoleBinding is made, but the API
    // server's authorizer may not have seen that binding yet: retry a 403.
    let mut mint_retries = 0;
    let token = loop {
        match kube_jit::client::mint_grant_token(&w.agent, &granted, Duration::from_secs(600)).await {
            Err(kube_jit::Error::Kube(kube::Error::Api(s))) if s.code == 403 && mint_retries < 1000 => {
                mint_retries += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => break other?,
        }
    };
    let minted = Instant::now();
    let client = w.with_token(&token);
    let calls = wait_status(&client, 200, Duration::from_secs(30)).await?;
    let done = Instant::now();
    let steps = [since(requested), since(seen), since(minted), since(done)];
    Ok(Held { name: name.to_string(), request: granted, client, latency: done - start, mint_retries, steps, calls })
}

/// The floor: the minimal calls for the same access, by a plain client.
pub struct FloorHeld {
    pub name: String,
    pub client: Option<Client>,
    pub latency: Duration,
    /// ms from the start: ServiceAccount, RoleBinding, token, first 200.
    pub steps: [f64; 4],
    pub calls: u32,
}

/// ServiceAccount, RoleBinding to `view`, and, when `mint`, a TokenRequest and
/// the first successful call.
pub async fn floor_grant(w: &World, name: &str, mint: bool) -> anyhow::Result<FloorHeld> {
    let start = Instant::now();
    let pp = PostParams::default();
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {FLOOR_LABEL: "floor"}}, "automountServiceAccountToken": false}))?;
    // Where kube-jit keeps grant identities too.
    let sas = Api::<ServiceAccount>::namespaced(w.floor.clone(), GRANTS_NS);
    sas.create(&pp, &sa).await?;
    let sa_made = crate::measure::ms(start.elapsed());
    let rb: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {FLOOR_LABEL: "floor"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": GRANTS_NS}]}))?;
    Api::<RoleBinding>::namespaced(w.floor.clone(), TARGET_NS).create(&pp, &rb).await?;
    let rb_made = crate::measure::ms(start.elapsed());
    if !mint {
        let steps = [sa_made, rb_made, rb_made, rb_made];
        return Ok(FloorHeld { name: name.to_string(), client: None, latency: start.elapsed(), steps, calls: 0 });
    }
    let tr = serde_json::from_value(json!({"spec": {"expirationSeconds": 600}}))?;
    let minted = sas.create_token_request(name, &pp, &tr).await?;
    let token = minted.status.and_then(|s| s.token).ok_or_else(|| anyhow::anyhow!("no token"))?;
    let minted = crate::measure::ms(start.elapsed());
    let client = w.with_token(&token);
    let calls = wait_status(&client, 200, Duration::from_secs(30)).await?;
    let latency = start.elapsed();
    let steps = [sa_made, rb_made, minted, crate::measure::ms(latency)];
    Ok(FloorHeld { name: name.to_string(), client: Some(client), latency, steps, calls })
}

/// Revokes a floor grant as the operator would: binding first, then identity.
pub async fn floor_revoke_binding(w: &World, name: &str) -> anyhow::Result<()> {
    Api::<RoleBinding>::namespaced(w.floor.clone(), TARGET_NS).delete(name, &DeleteParams::background()).await?;
    Ok(())
}

pub async fn floor_revoke_identity(w: &World, name: &str) -> anyhow::Result<()> {
    Api::<ServiceAccount>::namespaced(w.floor.clone(), GRANTS_NS).delete(name, &DeleteParams::background()).await?;
    Ok(())
}

/// What a probe saw after the grant's end was due.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ended {
    /// Due → first 403 (or 401, whichever came first).
    pub forbidden: Option<Duration>,
    /// Due → first 401 (the identity is gone and its token no longer authenticates).
    pub unauthenticated: Option<Duration>,
    /// Whether the token worked at all before the first 403 (else the probe proves nothing).
    pub worked_before: bool,
    /// Whether an answer (200, 403 or 401) came back over 50 ms before `due`; if
    /// none did, the grant may have ended before probing could tell whether it worked.
    pub answered_before_due: bool,
}

/// How often probes call: `until_403`, then `until_401` (zero: stop at the
/// 403); `offset` spreads
/// the probes of many grants evenly over one interval.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    pub until_403: Duration,
    pub until_401: Duration,
    pub offset: Duration,
}

/// Probes the in-scope call from shortly before `due`: every
/// `cadence.until_403` until the first 403, then every `cadence.until_401`
/// until the first 401; gives up `limit` after `due`. Bounded in count and time.
pub async fn probe(client: Client, due: Instant, cadence: Cadence, limit: Duration) -> Ended {
    // Every probe starts before `due`, whatever its offset within the interval.
    let lead = Duration::from_millis(150) + cadence.until_403;
    tokio::time::sleep_until((due.checked_sub(lead).unwrap_or(due) + cadence.offset).into()).await;
    let mut ended = Ended::default();
    loop {
        let code = in_scope_status(&client).await;
        let now = Instant::now();
        let since = now.saturating_duration_since(due);
        // A revocation may land a few ms early (wall-clock expiry on a
        // monotonic timer): only an answer clear of that margin is before `due`.
        if now + Duration::from_millis(50) < due && matches!(code, 200 | 403 | 401) {
            ended.answered_before_due = true;
        }
        match code {
            200 if ended.forbidden.is_none() => ended.worked_before = true,
            403 | 401 if ended.forbidden.is_none() => ended.forbidden = Some(since),
            _ => {}
        }
        if code == 401 {
            ended.unauthenticated = Some(since);
            return ended;
        }
        // A zero `until_401` asks only for the 403.
        if since > limit || (ended.forbidden.is_some() && cadence.until_401.is_zero()) {
            return ended;
        }
        let wait = if ended.forbidden.is_some() { cadence.until_401 } else { cadence.until_403 };
        tokio::time::sleep(wait).await;
    }
}

/// The Instant of a wall-clock time (same machine, same clock).
pub fn instant_of(t: jiff::Timestamp) -> Instant {
    let delta = t.duration_since(jiff::Timestamp::now());
    let now = Instant::now();
    match Duration::try_from(delta) {
        Ok(ahead) => now + ahead,
        Err(_) => now.checked_sub(Duration::try_from(-delta).unwrap_or_default()).unwrap_or(now),
    }
}

pub fn expires_at(r: &AccessRequest) -> jiff::Timestamp {
    r.status
        .as_ref()
        .and_then(|s| s.grant.as_ref())
        .and_then(|g| g.expires_at.as_ref())
        .map(|t| t.0)
        .unwrap_or_default()
}

/// The grant's RoleBinding in the target namespace (the one that authorizes the call).
pub fn target_binding(r: &AccessRequest) -> String {
    let objects = r.status.as_ref().and_then(|s| s.grant.as_ref()).map(|g| g.objects.clone()).unwrap_or_default();
    objects
        .into_iter()
        .find(|o| o.kind == "RoleBinding" && o.namespace == TARGET_NS)
        .map(|o| o.name)
        .unwrap_or_default()
}

/// Deletes every AccessRequest and floor object, and waits until kube-jit has
/// revoked everything (nothing managed left) so the next section starts clean.
pub async fn clean_slate(w: &World, limit: Duration) -> anyhow::Result<()> {
    let dp = DeleteParams::background();
    let lp = ListParams::default();
    Api::<AccessRequest>::namespaced(w.admin.clone(), AGENTS_NS).delete_collection(&dp, &lp).await?;
    let floor = ListParams::default().labels(&format!("{FLOOR_LABEL}=floor"));
    Api::<RoleBinding>::namespaced(w.admin.clone(), TARGET_NS).delete_collection(&dp, &floor).await?;
    Api::<ServiceAccount>::namespaced(w.admin.clone(), GRANTS_NS).delete_collection(&dp, &floor).await?;
    let start = Instant::now();
    loop {
        let left = Api::<AccessRequest>::namespaced(w.admin.clone(), AGENTS_NS).list_metadata(&lp).await?.items.len();
        let managed = managed_objects(&w.admin).await?.len();
        if left == 0 && managed == 0 {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < limit, "{left} requests and {managed} managed objects left after {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every object labelled as managed by kube-jit, as `Kind ns/name`.
pub async fn managed_objects(admin: &Client) -> anyhow::Result<Vec<String>> {
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role};
    let lp = ListParams::default().labels(kube_jit::names::MANAGED_SELECTOR);
    let mut found = Vec::new();
    macro_rules! collect {
        ($k:ty, $kind:literal) => {
            for o in Api::<$k>::all(admin.clone()).list_metadata(&lp).await?.items {
                found.push(format!("{} {}/{}", $kind, o.namespace().unwrap_or_default(), o.name_any()));
            }
        };
    }
    collect!(ServiceAccount, "ServiceAccount");
    collect!(Secret, "Secret");
    collect!(Role, "Role");
    collect!(RoleBinding, "RoleBinding");
    collect!(ClusterRole, "ClusterRole");
    collect!(ClusterRoleBinding, "ClusterRoleBinding");
    Ok(found)
}
