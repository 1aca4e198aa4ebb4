//! Measuring without asking the operator: percentiles, the operator process
//! from /proc, and who called the API server from its audit log.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Percentiles (nearest rank) of samples in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Summary {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if v.is_empty() {
                return f64::NAN;
            }
            let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
            v[rank - 1]
        };
        Summary { n: v.len(), p50: pick(0.50), p90: pick(0.90), p99: pick(0.99), max: pick(1.0) }
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "p50_ms": round(self.p50), "p90_ms": round(self.p90), "p99_ms": round(self.p99), "max_ms": round(self.max)})
    }
}

pub fn round(x: f64) -> Value {
    if x.is_finite() { json!((x * 10.0).round() / 10.0) } else { Value::Null }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Signed milliseconds from `from` to `to` (wall clock).
pub fn ms_between(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64() * 1000.0
}

/// Resident memory of a process: (VmRSS, VmHWM) in MiB.
pub fn memory_mib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resident memory once it settles: two reads 1 s apart within 1 %, for at
/// most `limit` (one read a second). Returns (VmRSS in MiB, whether it
/// settled); the last read when it never did.
pub async fn settled_rss(pid: u32, limit: Duration) -> (f64, bool) {
    let mut last = memory_mib(pid).0;
    for _ in 0..limit.as_secs().max(1) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = memory_mib(pid).0;
        if (now - last).abs() <= last * 0.01 {
            return (now, true);
        }
        last = now;
    }
    (last, false)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(f64::NAN);
    (ticks(11) + ticks(12)) / clock_ticks()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// One request from the API server's audit log (stage ResponseComplete).
#[derive(Clone, Debug)]
pub struct Call {
    pub user: String,
    /// `verb resource[/subresource]`.
    pub what: String,
    pub verb: String,
    /// The resource alone (no subresource).
    pub resource: String,
    pub namespace: String,
    pub name: String,
    pub code: u16,
    pub at: jiff::Timestamp,
}

/// Bytes in the audit log so far: a position to read from.
pub fn audit_position(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// Requests by any of `users` since `position`, one per audit id. Watches
/// count once; long-running requests are logged when they start.
pub fn calls_since(log: &Path, position: u64, users: &[&str]) -> Vec<Call> {
    let mut position = position;
    read_calls(log, &mut position, users)
}

/// [`calls_since`], advancing `position` past the complete lines read.
pub fn read_calls(log: &Path, position: &mut u64, users: &[&str]) -> Vec<Call> {
    let Ok(mut file) = std::fs::File::open(log) else { return Vec::new() };
    let _ = file.seek(std::io::SeekFrom::Start(*position));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    // A line still being written is left for the next read.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    *position += complete as u64;
    let text = String::from_utf8_lossy(&bytes[..complete]);
    let mut seen = std::collections::HashSet::new();
    let mut calls = Vec::new();
    for line in text.lines() {
        if !users.iter().any(|u| line.contains(u)) {
            continue;
        }
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        let user = e["user"]["username"].as_str().unwrap_or_default();
        if !users.contains(&user) || !seen.insert(e["auditID"].as_str().unwrap_or_default().to_string()) {
            continue;
        }
        let r = &e["objectRef"];
        let resource = r["resource"].as_str().unwrap_or("-").to_string();
        let mut what = resource.clone();
        if let Some(sub) = r["subresource"].as_str() {
            what = format!("{what}/{sub}");
        }
        let verb = e["verb"].as_str().unwrap_or("?").to_string();
        calls.push(Call {
            user: user.to_string(),
            what: format!("{verb} {what}"),
            verb,
            resource,
            namespace: r["namespace"].as_str().unwrap_or_default().to_string(),
            name: r["name"].as_str().unwrap_or_default().to_string(),
            code: e["responseStatus"]["code"].as_u64().unwrap_or(0) as u16,
            at: e["stageTimestamp"].as_str().and_then(|t| t.parse().ok()).unwrap_or_default(),
        });
    }
    calls
}

/// Calls of `user`, counted by `verb resource`, most frequent first.
pub fn breakdown(calls: &[Call], user: &str) -> Vec<(String, usize)> {
    let mut counts = BTreeMap::<String, usize>::new();
    for c in calls.iter().filter(|c| c.user == user) {
        *counts.entry(c.what.clone()).or_default() += 1;
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

pub fn breakdown_json(counts: &[(String, usize)], per: usize) -> Value {
    let per = per.max(1) as f64;
    Value::Object(
        counts
            .iter()
            .map(|(k, n)| (k.clone(), json!({"total": n, "per_grant": (*n as f64 / per * 100.0).round() / 100.0})))
            .collect(),
    )
}

/// When each RoleBinding in `namespace` was deleted by `user` (name → time).
pub fn binding_deletions(calls: &[Call], user: &str, namespace: &str) -> HashMap<String, jiff::Timestamp> {
    calls
        .iter()
        .filter(|c| c.user == user && c.verb == "delete" && c.what == "delete rolebindings" && c.namespace == namespace)
        .filter(|c| c.code < 300)
        .map(|c| (c.name.clone(), c.at))
        .collect()
}
