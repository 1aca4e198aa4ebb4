//! Figures 3 and 4: a burst of grants (time to all granted, to all revoked,
//! API requests per grant lifecycle, leaks), and scale (many live grants:
//! memory, CPU per grant, a restart with grants expiring while it is down).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams};
use kube_jit::api::{AccessRequest, Phase};
use serde_json::{Value, json};

use crate::board::Board;
use crate::grants::{self, Cadence, clean_slate, expires_at, instant_of, managed_objects, probe};
use crate::measure::{self, Call, Summary, breakdown, breakdown_json, ms, ms_between};
use crate::world::{AGENTS_NS, FLOOR_USER, GC_USER, OPERATOR_USER, World};

const BURST_CONCURRENCY: usize = 100;
/// The operator's API requests per grant lifecycle, at most (burst).
pub const REQUESTS_PER_LIFECYCLE_TARGET: f64 = 8.0;
/// Live grants at which the scale section pauses to read the operator's
/// memory (those below N, and N itself).
const RSS_CHECKPOINTS: [usize; 3] = [1_000, 3_000, 10_000];
/// How long a checkpoint waits for memory to settle before taking the last read.
const RSS_SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// Resident memory target, MiB, and the live grants it applies at.
pub const RSS_TARGET_MIB: f64 = 200.0;
pub const RSS_TARGET_AT: usize = 10_000;
/// Outage grants of the restart step made (and minted) at once.
const OUTAGE_MINTS_AT_ONCE: usize = 5;
/// TokenRequests timed at each checkpoint, each way.
const MINT_SAMPLES: usize = 9;
/// A request made when a restarted operator is ready is granted within this, ms.
pub const CANARY_TARGET_MS: f64 = 2_000.0;

/// `n` requests at once (100 in flight): until all are Granted; then every
/// one revoked at once (`spec.revoke`, as the requester would) until all are
/// Revoked. The floor makes and deletes the same ServiceAccounts and bindings.
pub async fn burst(w: &World, board: &Board, n: usize) -> anyhow::Result<Value> {
    let pid = w.operator.pid();
    let cpu0 = measure::cpu_seconds(pid);
    let position = measure::audit_position(&w.audit_log());
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| async move {
            let name = format!("burst-{i}");
            grants::request(w, &name, "30m").await?;
            board.wait(&name, Phase::Granted, grants::GRANT_LIMIT).await
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let all_granted = start.elapsed();
    let revoke_start = Instant::now();
    let requests = Api::<AccessRequest>::namespaced(w.agent.clone(), AGENTS_NS);
    futures::stream::iter(0..n)
        .map(|i| {
            let requests = requests.clone();
            async move {
                let name = format!("burst-{i}");
                let patch = json!({"spec": {"revoke": true}});
                requests.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                board.wait(&name, Phase::Revoked, grants::GRANT_LIMIT).await
            }
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let all_revoked = revoke_start.elapsed();
    let cpu = measure::cpu_seconds(pid) - cpu0;
    // Leaks: whatever is still managed once the revocations are recorded
    // (every request is Revoked, so nothing should be). The operator deletes
    // before it records, so this is normally empty at once; polled for up to
    // 5 s only, as the periodic sweep (every 30 s) would delete, and hide, a leak.
    let settling = Instant::now();
    let leaked = loop {
        let left = managed_objects(&w.admin).await?;
        if left.is_empty() || settling.elapsed() > Duration::from_secs(5) {
            break left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let calls = measure::calls_since(&w.audit_log(), position, &[OPERATOR_USER, GC_USER]);
    let operator_calls = breakdown(&calls, OPERATOR_USER);
    let (gc_managed, gc_all) = garbage_collector_calls(&calls);
    clean_slate(w, Duration::from_secs(300)).await?;

    let position = measure::audit_position(&w.audit_log());
    let start = Instant::now();
    let floor: Vec<grants::FloorHeld> = futures::stream::iter(0..n)
        .map(|i| async move { grants::floor_grant(w, &format!("bfloor-{i}"), false).await })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect()
        .await?;
    let floor_granted = start.elapsed();
    let revoke_start = Instant::now();
    futures::stream::iter(floor.iter())
        .map(|h| async move {
            grants::floor_revoke_binding(w, &h.name).await?;
            grants::floor_revoke_identity(w, &h.name).await
        })
        .buffer_unordered(BURST_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let floor_revoked = revoke_start.elapsed();
    let floor_calls = breakdown(&measure::calls_since(&w.audit_log(), position, &[FLOOR_USER]), FLOOR_USER);
    clean_slate(w, Duration::from_secs(120)).await?;

    let total = |c: &[(String, usize)]| c.iter().map(|(_, n)| n).sum::<usize>() as f64 / n as f64;
    Ok(json!({
        "grants": n, "in_flight": BURST_CONCURRENCY,
        "operator": {"all_granted_s": all_granted.as_secs_f64(), "all_revoked_s": all_revoked.as_secs_f64(),
                     "api_requests_per_lifecycle": measure::round(total(&operator_calls)),
                     "api_requests_per_lifecycle_target": REQUESTS_PER_LIFECYCLE_TARGET,
                     "api_requests": breakdown_json(&operator_calls, n),
                     "cpu_seconds_per_lifecycle": measure::round(cpu / n as f64 * 1000.0).as_f64().map(|v| v / 1000.0),
                     "leaked_objects": leaked.len(), "leaked": leaked},
        "floor": {"all_granted_s": floor_granted.as_secs_f64(), "all_revoked_s": floor_revoked.as_secs_f64(),
                  "api_requests_per_lifecycle": measure::round(total(&floor_calls)),
                  "api_requests": breakdown_json(&floor_calls, n)},
        // Not the operator's requests, so not in its figure: what the garbage
        // collector does on the operator's objects over the same span.
        "garbage_collector": {"user": GC_USER,
                              "requests_per_lifecycle_on_managed_objects": measure::round(total(&gc_managed)),
                              "api_requests_on_managed_objects": breakdown_json(&gc_managed, n),
                              "requests_per_lifecycle_in_span": measure::round(total(&gc_all)),
                              "api_requests_in_span": breakdown_json(&gc_all, n)},
    }))
}

/// Requests counted by `verb resource`, as [`breakdown`] gives them.
type Counts = Vec<(String, usize)>;

/// Kinds of object kube-jit labels as its own (what `managed_objects` lists).
const MANAGED_RESOURCES: [&str; 6] =
    ["serviceaccounts", "secrets", "roles", "rolebindings", "clusterroles", "clusterrolebindings"];

/// The garbage collector's requests among `calls`, counted by verb and
/// resource: (those on objects of a managed kind that the operator wrote or
/// deleted in the same span, every one of them). The audit log is at
/// Metadata level, so an object is known by resource, namespace and name.
fn garbage_collector_calls(calls: &[Call]) -> (Counts, Counts) {
    let key = |c: &Call| (c.resource.clone(), c.namespace.clone(), c.name.clone());
    let written = ["create", "update", "patch", "delete"];
    let managed: HashSet<_> = calls
        .iter()
        .filter(|c| c.user == OPERATOR_USER && written.contains(&c.verb.as_str()) && !c.name.is_empty())
        .filter(|c| MANAGED_RESOURCES.contains(&c.resource.as_str()))
        .map(key)
        .collect();
    let on_managed: Vec<Call> =
        calls.iter().filter(|c| c.user == GC_USER && managed.contains(&key(c))).cloned().collect();
    (breakdown(&on_managed, GC_USER), breakdown(calls, GC_USER))
}

/// `n` live grants (100 in flight while making them): the operator's memory
/// once it settles at 1,000, 3,000 and 10,000 live grants (those up to `n`)
/// and at `n`, making paused while it is read, and CPU per grant; then a restart, with `overdue` grants expiring while it
/// is down: time to ready, to caught up, and to revoking the overdue ones.
pub async fn scale(w: &mut World, board: &Board, n: usize, overdue: usize, overdue_for: &str) -> anyhow::Result<Value> {
    let pid = w.operator.pid();
    let (rss0, _) = measure::memory_mib(pid);
    let cpu0 = measure::cpu_seconds(pid);
    // Made in steps up to each checkpoint; making pauses while memory settles.
    let mut marks: Vec<usize> = RSS_CHECKPOINTS.into_iter().filter(|&c| c < n).collect();
    marks.push(n);
    let (mut made, mut made_in, mut cpu_making) = (0, Duration::ZERO, 0.0);
    let mut checkpoints = Vec::new();
    let mut mint_costs = Vec::new();
    let floor_sa = floor_service_account(w).await?;
    for mark in marks {
        let (start, cpu_start) = (Instant::now(), measure::cpu_seconds(pid));
        let w = &*w;
        let granted = futures::stream::iter(made..mark)
            .map(|i| async move {
                let name = format!("scale-{i}");
                grants::request(w, &name, "1h").await?;
                board.wait(&name, Phase::Granted, grants::GRANT_LIMIT).await
            })
            .buffer_unordered(BURST_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        made_in += start.elapsed();
        cpu_making += measure::cpu_seconds(pid) - cpu_start;
        made = mark;
        let waited = Instant::now();
        let (rss, settled) = measure::settled_rss(pid, RSS_SETTLE_LIMIT).await;
        eprintln!(
            "   {mark} live grants: VmRSS {rss:.1} MiB ({})",
            if settled { "settled" } else { "not settled in 30 s" }
        );
        checkpoints.push((mark, rss, settled, waited.elapsed()));
        if let Some(granted) = granted.first() {
            let (grant, floor) = mint_cost(w, granted, &floor_sa).await?;
            eprintln!(
                "   {mark} live grants: a TokenRequest takes {grant:.1} ms for a grant identity, {floor:.1} ms for the floor's"
            );
            mint_costs.push(json!([mark, measure::round(grant), measure::round(floor)]));
        }
    }
    // The last checkpoint is N: memory once the last grants' follow-ups settled.
    let (_, rss, _, _) = checkpoints.last().copied().unwrap_or((n, f64::NAN, false, Duration::ZERO));
    let hwm = measure::memory_mib(pid).1;
    let cpu_settled = measure::cpu_seconds(pid) - cpu0;
    let at_target = checkpoints.iter().find(|c| c.0 == RSS_TARGET_AT).map(|c| c.1);

    // Grants that will expire while the operator is down. A few at a time:
    // at 10,000 live grants each one's TokenRequest costs the API server
    // about 1.9 s of CPU, and 50 at once all ran into its 34 s timeout.
    let short: Vec<grants::Held> = {
        let w = &*w;
        futures::stream::iter(0..overdue)
            .map(|i| async move { grants::operator_grant(w, board, &format!("outage-{i}"), overdue_for).await })
            .buffer_unordered(OUTAGE_MINTS_AT_ONCE)
            .try_collect()
            .await?
    };
    w.operator.kill();
    let latest = short.iter().map(|h| expires_at(&h.request)).max().unwrap_or_default();
    tokio::time::sleep_until(instant_of(latest + jiff::SignedDuration::from_secs(1)).into()).await;
    let mut still_working = 0;
    for h in &short {
        if crate::world::in_scope_status(&h.client).await == 200 {
            still_working += 1;
        }
    }

    let position = measure::audit_position(&w.audit_log());
    let restarted_wall = jiff::Timestamp::now();
    let restarted = Instant::now();
    w.operator.start()?;
    // Every 10 ms, the resolution of every latency the benchmark reports; each
    // probe stops at its 403, which the start-up pass makes before ready.
    let cadence = Cadence { until_403: Duration::from_millis(10), until_401: Duration::ZERO, offset: Duration::ZERO };
    let probes: Vec<_> = short
        .iter()
        .map(|h| tokio::spawn(probe(h.client.clone(), restarted, cadence, Duration::from_secs(300))))
        .collect();
    let ready_wall = w.operator.wait_ready(Duration::from_secs(600)).await?;
    let ready_ms = ms_between(restarted_wall, ready_wall);
    // A request made right after the restart: how long it waits behind the catch-up.
    let canary_start = Instant::now();
    grants::request(w, "canary", "10m").await?;
    board.wait("canary", Phase::Granted, grants::GRANT_LIMIT).await?;
    let canary_ms = ms(canary_start.elapsed());
    let caught_up = quiet_after(w, position, restarted_wall, Duration::from_secs(3), Duration::from_secs(600)).await;
    let mut overdue_403 = Vec::new();
    for p in probes {
        if let Some(d) = p.await?.forbidden {
            overdue_403.push(ms(d));
        }
    }
    let calls = measure::calls_since(&w.audit_log(), position, &[OPERATOR_USER]);
    let catch_up_calls = breakdown(&calls, OPERATOR_USER);
    let (rss_after, hwm_after) = measure::memory_mib(w.operator.pid());
    // No clean-up: revoking every live grant is not measured, and the run's
    // control plane goes with the run.

    Ok(json!({
        "live_grants": n, "in_flight": BURST_CONCURRENCY,
        "made_in_s": made_in.as_secs_f64(), "grants_per_s": measure::round(n as f64 / made_in.as_secs_f64()),
        "rss_mib_before": measure::round(rss0), "rss_mib": measure::round(rss), "hwm_mib": measure::round(hwm),
        // [live grants, VmRSS MiB] once settled (making paused), at each checkpoint.
        "rss_at_live_grants": checkpoints.iter().map(|c| json!([c.0, measure::round(c.1)])).collect::<Vec<_>>(),
        "rss_at_live_grants_settled": checkpoints.iter().map(|c| c.2).collect::<Vec<_>>(),
        "rss_at_live_grants_waited_s": checkpoints.iter().map(|c| measure::round(c.3.as_secs_f64())).collect::<Vec<_>>(),
        "rss_target_mib": RSS_TARGET_MIB, "rss_target_at_live_grants": RSS_TARGET_AT,
        "rss_meets_target": at_target.map(|r| r <= RSS_TARGET_MIB),
        // [live grants, p50 ms of a TokenRequest for a grant identity, p50 ms
        // of one for a plain ServiceAccount beside it], at each checkpoint.
        "token_request_ms_at_live_grants": mint_costs,
        "cpu_ms_per_grant_made": measure::round(cpu_making / n as f64 * 1000.0),
        "cpu_ms_per_grant_settled": measure::round(cpu_settled / n as f64 * 1000.0),
        "restart": {
            "overdue_grants": overdue, "overdue_still_working_while_down": still_working,
            "ready_ms": measure::round(ready_ms),
            "caught_up_ms": caught_up.map(measure::round),
            "canary_grant_ms": measure::round(canary_ms),
            "canary_grant_target_ms": CANARY_TARGET_MS,
            "canary_grant_meets_target": canary_ms <= CANARY_TARGET_MS,
            "overdue_to_403_ms": Summary::of(&overdue_403).json(),
            "overdue_never_403": overdue - overdue_403.len(),
            "api_requests": breakdown_json(&catch_up_calls, n),
            "rss_mib_after": measure::round(rss_after), "hwm_mib_after": measure::round(hwm_after),
        },
    }))
}

/// Milliseconds from the restart to the operator's last API call before a
/// pause of `gap`: when the restart's catch-up wave ended.
async fn quiet_after(
    w: &World,
    mut position: u64,
    restarted: jiff::Timestamp,
    gap: Duration,
    limit: Duration,
) -> Option<f64> {
    let start = Instant::now();
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = measure::read_calls(&w.audit_log(), &mut position, &[OPERATOR_USER]);
        last = calls.iter().map(|c| c.at).max().max(last);
        if let Some(last) = last
            && jiff::Timestamp::now().duration_since(last).as_secs_f64() >= gap.as_secs_f64()
        {
            return Some(ms_between(restarted, last));
        }
        if start.elapsed() > limit {
            return None;
        }
    }
}

/// A plain ServiceAccount of the floor's in the grants namespace, to mint beside grant identities.
async fn floor_service_account(w: &World) -> anyhow::Result<String> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let name = "floor-mint".to_string();
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {crate::world::FLOOR_LABEL: "floor"}}, "automountServiceAccountToken": false}))?;
    let sas = Api::<ServiceAccount>::namespaced(w.floor.clone(), crate::world::GRANTS_NS);
    match sas.create(&Default::default(), &sa).await {
        Ok(_) => Ok(name),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(name),
        Err(e) => Err(e.into()),
    }
}

/// p50 ms of [`MINT_SAMPLES`] TokenRequests made one after another: for the
/// identity of `granted`, as its requester; and for `floor_sa`, as the floor.
/// Both are in the grants namespace, both 600 s; only admission tells them
/// apart (the grant-tokens policy, which checks a grant identity's token
/// against the identity's recorded limits).
async fn mint_cost(w: &World, granted: &AccessRequest, floor_sa: &str) -> anyhow::Result<(f64, f64)> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let (mut grant, mut floor) = (Vec::new(), Vec::new());
    let sas = Api::<ServiceAccount>::namespaced(w.floor.clone(), crate::world::GRANTS_NS);
    let tr: k8s_openapi::api::authentication::v1::TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 600}}))?;
    for _ in 0..MINT_SAMPLES {
        let start = Instant::now();
        kube_jit::client::mint_grant_token(&w.agent, granted, Duration::from_secs(600)).await?;
        grant.push(ms(start.elapsed()));
        let start = Instant::now();
        sas.create_token_request(floor_sa, &Default::default(), &tr).await?;
        floor.push(ms(start.elapsed()));
    }
    Ok((Summary::of(&grant).p50, Summary::of(&floor).p50))
}
