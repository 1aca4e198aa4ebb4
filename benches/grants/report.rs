//! What a run leaves behind: the machine it ran on, the summary table (each
//! figure beside its floor and target), the plots, and the problems that
//! fail the run (leaks and accesses that never ended; never performance).

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::economy::{CANARY_TARGET_MS, REQUESTS_PER_LIFECYCLE_TARGET, RSS_TARGET_AT, RSS_TARGET_MIB};
use crate::latency::{
    self, P50_RATIO_TARGET, P99_RATIO_TARGET, RATIO_TARGETS_FROM, THROUGHPUT_SHARE_TARGET, THROUGHPUT_TARGET_FROM,
};
use crate::measure::Summary;
use crate::plots::{self, Curve, Tick};
use crate::revocation;

pub fn machine(repo: &Path) -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let output = |cmd: &mut Command| {
        cmd.output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    };
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|v| v.trim_start_matches([' ', '\t', ':'])),
        "memory": meminfo.lines().find(|l| l.starts_with("MemTotal")).map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ")),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "load_average_at_end": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "rustc": output(Command::new("rustc").arg("-V")),
        "control_plane": output(Command::new(repo.join("hack/local-cluster.sh")).arg("versions")).replace('\n', ", "),
    })
}

pub fn plots(
    out: &Path,
    rounds: &[latency::Round],
    revocations: &[revocation::Round],
    ticks: &[Tick],
    sections: &[(f64, String)],
    results: &Value,
) -> anyhow::Result<()> {
    let levels: Vec<plots::Level> = rounds
        .iter()
        .map(|r| {
            let (o, fl) = (Summary::of(&r.operator), Summary::of(&r.floor));
            plots::Level {
                in_flight: r.concurrency,
                operator_p50: o.p50,
                operator_p99: o.p99,
                floor_p50: fl.p50,
                floor_p99: fl.p99,
                operator_rate: r.operator_rate,
                floor_rate: r.floor_rate,
            }
        })
        .collect();
    plots::latency_vs_inflight(&out.join("latency-vs-inflight.svg"), &levels)?;
    plots::throughput_vs_inflight(
        &out.join("throughput-vs-inflight.svg"),
        &levels,
        THROUGHPUT_SHARE_TARGET,
        THROUGHPUT_TARGET_FROM,
    )?;
    // Memory against live grants, when the scale section ran.
    if let Some(sc) = results["figures"].get("scale") {
        let points: Vec<(f64, f64)> = sc["rss_at_live_grants"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p[0].as_f64().unwrap_or(f64::NAN), p[1].as_f64().unwrap_or(f64::NAN)))
            .collect();
        let after = sc["restart"]["rss_mib_after"].as_f64().and_then(|r| Some((sc["live_grants"].as_f64()?, r)));
        plots::rss_vs_grants(&out.join("rss-vs-grants.svg"), &points, after, RSS_TARGET_MIB, RSS_TARGET_AT)?;
    }
    let mut curves = Vec::new();
    for (i, r) in rounds.iter().enumerate() {
        let c = r.concurrency;
        curves.push(Curve {
            label: format!("kube-jit, {c} in flight"),
            samples: &r.operator,
            color: plots::color(i),
            thick: true,
        });
        curves.push(Curve {
            label: format!("floor, {c} in flight"),
            samples: &r.floor,
            color: plots::color(i),
            thick: false,
        });
    }
    plots::distribution(
        &out.join("grant-latency.svg"),
        "grant latency: request created → first in-scope call succeeds (thin: floor)",
        "milliseconds (log scale)",
        &curves,
    )?;
    let mut curves = Vec::new();
    for (i, r) in revocations.iter().enumerate() {
        let n = r.n;
        curves.push(Curve {
            label: format!("kube-jit, {n} due together"),
            samples: &r.operator.forbidden,
            color: plots::color(i),
            thick: true,
        });
        curves.push(Curve {
            label: format!("floor, {n} deleted together"),
            samples: &r.floor.forbidden,
            color: plots::color(i),
            thick: false,
        });
    }
    plots::distribution(
        &out.join("revocation-lag.svg"),
        "revocation lag: expiresAt → first 403 on the in-scope call (thin: floor)",
        "milliseconds (log scale)",
        &curves,
    )?;
    plots::timeline(&out.join("timeline.svg"), ticks, sections)
}

fn f(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x >= 100.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.1}"),
        None => "-".into(),
    }
}

/// A verdict recorded in the results (`true`/`false`), or nothing where no target applies.
fn judged(meets: &Value) -> &'static str {
    match meets.as_bool() {
        Some(true) => "meets",
        Some(false) => "MISSES",
        None => "-",
    }
}

fn verdict(value: f64, limit: f64) -> &'static str {
    if !value.is_finite() {
        "n/a"
    } else if value <= limit {
        "meets"
    } else {
        "MISSES"
    }
}

/// The summary table, from the results JSON.
pub fn summary(r: &Value) -> String {
    let mut s = String::new();
    let m = &r["machine"];
    let _ = writeln!(
        s,
        "kube-jit benchmark ({} run, {} build) on {} cores, {}, kernel {}; {}",
        r["mode"].as_str().unwrap_or("?"),
        r["profile"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory"].as_str().unwrap_or("?"),
        m["kernel"].as_str().unwrap_or("?"),
        m["control_plane"].as_str().unwrap_or("?")
    );
    let _ = writeln!(s, "kube-apiserver extra flags: {}", r["apiserver_args"].as_str().unwrap_or(""));
    let fig = &r["figures"];
    let _ = writeln!(
        s,
        "\n1. Grant latency, AccessRequest created → first in-scope 200 (ms; floor = plain client: SA, RoleBinding, TokenRequest, call)"
    );
    let _ = writeln!(
        s,
        "{:>9} {:>7}  {:>22}  {:>22}  {:>18}  {:>18}  grants/s kube-jit / floor",
        "in flight",
        "samples",
        "kube-jit p50/p90/p99",
        "floor p50/p90/p99",
        format!("p50 ratio (≤{P50_RATIO_TARGET}×)"),
        format!("p99 ratio (≤{P99_RATIO_TARGET}×)")
    );
    for l in fig["grant_latency"].as_array().into_iter().flatten() {
        let (o, fl) = (&l["operator"], &l["floor"]);
        let trio = |x: &Value| format!("{}/{}/{}", f(&x["p50_ms"]), f(&x["p90_ms"]), f(&x["p99_ms"]));
        let (r50, r99) = (l["ratio_p50"].as_f64().unwrap_or(f64::NAN), l["ratio_p99"].as_f64().unwrap_or(f64::NAN));
        let share = l["grants_per_s_share_of_floor"].as_f64().unwrap_or(f64::NAN) * 100.0;
        let throughput = match judged(&l["meets"]["grants_per_s_share_of_floor"]) {
            "-" => format!("({share:.0} %)"),
            v => format!("({share:.0} %, ≥ {:.0} %: {v})", THROUGHPUT_SHARE_TARGET * 100.0),
        };
        let _ = writeln!(
            s,
            "{:>9} {:>7}  {:>22}  {:>22}  {:>11.2} {:>6}  {:>11.2} {:>6}  {:>6} / {:>6} {}",
            l["concurrency"].to_string(),
            o["n"].to_string(),
            trio(o),
            trio(fl),
            r50,
            judged(&l["meets"]["ratio_p50"]),
            r99,
            judged(&l["meets"]["ratio_p99"]),
            f(&l["operator_grants_per_s"]),
            f(&l["floor_grants_per_s"]),
            throughput
        );
    }
    let _ = writeln!(
        s,
        "  targets: p50 ≤ {P50_RATIO_TARGET}× and p99 ≤ {P99_RATIO_TARGET}× the floor's from {RATIO_TARGETS_FROM} in flight (none below); \
         from {THROUGHPUT_TARGET_FROM} in flight, kube-jit grants/s ≥ {:.0} % of the floor's",
        THROUGHPUT_SHARE_TARGET * 100.0
    );
    let refused: Vec<String> = fig["grant_latency"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            format!(
                "{} of {} at {} in flight",
                l["operator_first_token_request_refused"], l["operator"]["n"], l["concurrency"]
            )
        })
        .collect();
    let _ = writeln!(
        s,
        "  first TokenRequest after Granted refused (403, authorizer not caught up; retried): {}",
        refused.join(", ")
    );
    let _ = writeln!(
        s,
        "\n2. Revocation lag, expiresAt → first 403 / 401 (ms; floor = the same bindings, then ServiceAccounts, deleted at one instant by a parallel client)"
    );
    for v in fig["revocation"].as_array().into_iter().flatten() {
        let (o, fl) = (&v["operator"], &v["floor"]);
        let n = v["grants"].as_u64().unwrap_or(0);
        let (op99, fl99) =
            (o["to_403"]["p99_ms"].as_f64().unwrap_or(f64::NAN), fl["to_403"]["p99_ms"].as_f64().unwrap_or(f64::NAN));
        let target = if n <= 100 {
            format!("p99 ≤ 1000 ms: {}", verdict(op99, 1000.0))
        } else {
            format!("p99 ≤ 1.5× floor: {:.2} {}", op99 / fl99, verdict(op99 / fl99, 1.5))
        };
        let _ = writeln!(
            s,
            "  {n} grants (probe every {} ms; kube-jit expiries spread {} ms p1→p99, {}% in the target second)",
            f(&v["probe_interval_until_403_ms"]),
            f(&v["operator_expiry_spread_p1_p99_ms"]),
            f(&json!(v["operator_expiries_in_target_second"].as_f64().unwrap_or(0.0) * 100.0))
        );
        let _ = writeln!(
            s,
            "    → 403           kube-jit p50 {:>6} p99 {:>6}   floor p50 {:>6} p99 {:>6}   {target}",
            f(&o["to_403"]["p50_ms"]),
            f(&o["to_403"]["p99_ms"]),
            f(&fl["to_403"]["p50_ms"]),
            f(&fl["to_403"]["p99_ms"])
        );
        let _ = writeln!(
            s,
            "    → binding gone  kube-jit p50 {:>6} p99 {:>6}   floor p50 {:>6} p99 {:>6}   (API server audit log)",
            f(&o["to_binding_deleted"]["p50_ms"]),
            f(&o["to_binding_deleted"]["p99_ms"]),
            f(&fl["to_binding_deleted"]["p50_ms"]),
            f(&fl["to_binding_deleted"]["p99_ms"])
        );
        let _ = writeln!(
            s,
            "    → 401           kube-jit p50 {:>6} p99 {:>6}   floor p50 {:>6} p99 {:>6}   (token cache ≈10 s)",
            f(&o["to_401"]["p50_ms"]),
            f(&o["to_401"]["p99_ms"]),
            f(&fl["to_401"]["p50_ms"]),
            f(&fl["to_401"]["p99_ms"])
        );
        let _ = writeln!(
            s,
            "    never 403: kube-jit {} floor {}; never 401: kube-jit {} floor {}",
            o["never_403"], fl["never_403"], o["never_401"], fl["never_401"]
        );
    }
    if let Some(b) = fig.get("burst") {
        burst_summary(&mut s, b);
    }
    if let Some(sc) = fig.get("scale") {
        scale_summary(&mut s, sc);
    }
    if let Some(w) = fig.get("workload") {
        let rss = &w["rss_mib"];
        let _ = writeln!(
            s,
            "\n5. Workload-bound grants: {} pinned agents granted in {} s, {} Pod watch(es)\n   \
             RSS {} MiB before, {} MiB granted, {} MiB holding {} Pods ({} KiB per held Pod), \
             {} MiB with {} unrelated Pods added ({} KiB per unrelated Pod; still holding {})\n   \
             a Pod is {} bytes of JSON as the API server returns it, {} as the watch keeps it",
            w["agents"],
            f(&w["granted_in_s"]),
            w["watches"],
            f(&rss["before"]),
            f(&rss["granted"]),
            f(&rss["siblings_held"]),
            w["held_pods"],
            f(&w["rss_per_held_pod_kib"]),
            f(&rss["unrelated_added"]),
            w["unrelated_pods"],
            f(&w["rss_per_unrelated_pod_kib"]),
            w["held_after_unrelated"],
            w["pod_json_bytes"]["as_returned"],
            w["pod_json_bytes"]["as_kept"]
        );
    }
    let _ = writeln!(s, "\nrun took {} s", f(&r["duration_s"]));
    s
}

fn burst_summary(s: &mut String, b: &Value) {
    let (bo, bf) = (&b["operator"], &b["floor"]);
    let _ = writeln!(s, "\n3. Burst of {} requests ({} in flight)", b["grants"], b["in_flight"]);
    let _ = writeln!(
        s,
        "    all granted      kube-jit {:>7} s   floor {:>7} s   ({:.2}×)",
        f(&bo["all_granted_s"]),
        f(&bf["all_granted_s"]),
        bo["all_granted_s"].as_f64().unwrap_or(f64::NAN) / bf["all_granted_s"].as_f64().unwrap_or(f64::NAN)
    );
    let _ = writeln!(
        s,
        "    all revoked      kube-jit {:>7} s   floor {:>7} s   ({:.2}×)",
        f(&bo["all_revoked_s"]),
        f(&bf["all_revoked_s"]),
        bo["all_revoked_s"].as_f64().unwrap_or(f64::NAN) / bf["all_revoked_s"].as_f64().unwrap_or(f64::NAN)
    );
    let per_lifecycle = bo["api_requests_per_lifecycle"].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "    API requests per grant lifecycle: kube-jit {} (≤ {}: {}; floor {}); CPU {} s per lifecycle; leaked objects: {}",
        f(&bo["api_requests_per_lifecycle"]),
        REQUESTS_PER_LIFECYCLE_TARGET,
        verdict(per_lifecycle, REQUESTS_PER_LIFECYCLE_TARGET),
        f(&bf["api_requests_per_lifecycle"]),
        bo["cpu_seconds_per_lifecycle"],
        bo["leaked_objects"]
    );
    for (what, c) in bo["api_requests"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "      {:>8} per grant  {what}", f(&c["per_grant"]));
    }
    // Requests the operator's deletes cause in kube-controller-manager: not the operator's, so not above.
    let gc = &b["garbage_collector"];
    let _ = writeln!(
        s,
        "    garbage collector requests per lifecycle: {} on kube-jit's objects ({} in all in the same span; {})",
        f(&gc["requests_per_lifecycle_on_managed_objects"]),
        f(&gc["requests_per_lifecycle_in_span"]),
        gc["user"].as_str().unwrap_or("?")
    );
    for (what, c) in gc["api_requests_on_managed_objects"].as_object().into_iter().flatten() {
        let _ = writeln!(s, "      {:>8} per grant  {what}", f(&c["per_grant"]));
    }
}

fn scale_summary(s: &mut String, sc: &Value) {
    let rs = &sc["restart"];
    let _ = writeln!(
        s,
        "\n4. Scale: {} live grants made in {} s ({} grants/s)",
        sc["live_grants"],
        f(&sc["made_in_s"]),
        f(&sc["grants_per_s"])
    );
    let settled = sc["rss_at_live_grants_settled"].as_array().cloned().unwrap_or_default();
    let points: Vec<String> = sc["rss_at_live_grants"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, p)| {
            let star = if settled.get(i).and_then(Value::as_bool) == Some(false) { "*" } else { "" };
            format!("{} → {} MiB{star}", plots::thousands(p[0].as_u64().unwrap_or(0)), f(&p[1]))
        })
        .collect();
    let target = match sc["rss_meets_target"].as_bool() {
        Some(ok) => format!(
            "; ≤ {RSS_TARGET_MIB:.0} MiB at {}: {}",
            plots::thousands(RSS_TARGET_AT as u64),
            if ok { "meets" } else { "MISSES" }
        ),
        None => String::new(),
    };
    let _ = writeln!(s, "    operator VmRSS by live grants (settled, making paused): {}{target}", points.join(", "));
    if settled.iter().any(|v| v.as_bool() == Some(false)) {
        let _ = writeln!(s, "      * did not settle (two reads 1 s apart within 1 %) within 30 s: the last read");
    }
    let _ = writeln!(
        s,
        "    with {} live: VmRSS {} MiB, VmHWM {} MiB; {} MiB before; CPU {} ms per grant made ({} ms with follow-ups)",
        sc["live_grants"],
        f(&sc["rss_mib"]),
        f(&sc["hwm_mib"]),
        f(&sc["rss_mib_before"]),
        f(&sc["cpu_ms_per_grant_made"]),
        f(&sc["cpu_ms_per_grant_settled"])
    );
    let mints: Vec<String> = sc["token_request_ms_at_live_grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{} → {} ms (floor {} ms)", plots::thousands(p[0].as_u64().unwrap_or(0)), f(&p[1]), f(&p[2])))
        .collect();
    if !mints.is_empty() {
        let _ = writeln!(s, "    a grant identity's TokenRequest (p50) by live grants: {}", mints.join(", "));
    }
    let caught = rs["caught_up_ms"].as_f64().unwrap_or(f64::NAN);
    let canary = rs["canary_grant_ms"].as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        s,
        "    restart: ready {} ms, caught up {} ms (≤ 60 s: {}), a request made at ready granted in {} ms (≤ {CANARY_TARGET_MS:.0} ms: {})",
        f(&rs["ready_ms"]),
        f(&rs["caught_up_ms"]),
        verdict(caught, 60_000.0),
        f(&rs["canary_grant_ms"]),
        verdict(canary, CANARY_TARGET_MS)
    );
    let _ = writeln!(
        s,
        "    {} grants expired while down ({} still worked then): restart → 403 p50 {} ms, max {} ms; never revoked: {}",
        rs["overdue_grants"],
        rs["overdue_still_working_while_down"],
        f(&rs["overdue_to_403_ms"]["p50_ms"]),
        f(&rs["overdue_to_403_ms"]["max_ms"]),
        rs["overdue_never_403"]
    );
    let _ =
        writeln!(s, "    after restart: VmRSS {} MiB, VmHWM {} MiB", f(&rs["rss_mib_after"]), f(&rs["hwm_mib_after"]));
}

/// What fails a run: leaks, and accesses that never ended.
pub fn problems(r: &Value) -> Vec<String> {
    let fig = &r["figures"];
    let mut p = Vec::new();
    let leaked = fig.get("burst").map_or(0, |b| b["operator"]["leaked_objects"].as_u64().unwrap_or(1));
    if leaked > 0 {
        p.push(format!("{leaked} managed objects leaked after the burst: {}", fig["burst"]["operator"]["leaked"]));
    }
    for v in fig["revocation"].as_array().into_iter().flatten() {
        for side in ["operator", "floor"] {
            let never = v[side]["never_403"].as_u64().unwrap_or(1);
            if never > 0 {
                p.push(format!("{never} of {} {side} grants still worked {PROBE} after expiry", v["grants"]));
            }
            let cold = v[side]["not_working_just_before_expiry"].as_u64().unwrap_or(1);
            if cold > 0 {
                p.push(format!("{cold} of {} {side} grants did not work right before expiry (harness)", v["grants"]));
            }
        }
    }
    if let Some(w) = fig.get("workload")
        && w["held_after_unrelated"] != w["held_pods"]
    {
        p.push(format!(
            "the operator's Pod watches hold {} Pods, not the {} of the pinned agents' ServiceAccounts",
            w["held_after_unrelated"], w["held_pods"]
        ));
    }
    let never = fig.get("scale").map_or(0, |sc| sc["restart"]["overdue_never_403"].as_u64().unwrap_or(1));
    if never > 0 {
        p.push(format!("{never} grants that expired while the operator was down were not revoked after the restart"));
    }
    p
}

const PROBE: &str = "45 s";
