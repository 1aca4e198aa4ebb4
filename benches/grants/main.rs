//! The kube-jit benchmark: grant latency, revocation lag, burst economy and
//! scale, each beside a floor (a plain client doing the minimal API calls for
//! the same access) measured in the same run against the same API server.
//! Run it with `hack/bench.sh [--reduced] [--out DIR]`, which builds the
//! operator, starts a control plane of its own and calls this program; see
//! BENCHMARKS.md for the method and the figures.
#![forbid(unsafe_code)]

mod board;
mod economy;
mod grants;
mod latency;
mod measure;
mod plots;
mod report;
mod revocation;
mod workload;
mod world;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

/// How much of everything: the full run, or the reduced one CI runs so the
/// harness cannot rot (seconds, and no performance target asserted).
pub struct Counts {
    /// (requests in flight, samples) per latency round.
    pub latency: Vec<(usize, usize)>,
    /// Grants due in the same second, per revocation round.
    pub revocation: Vec<usize>,
    pub burst: usize,
    pub scale: usize,
    /// Grants that expire while the operator is down, and their duration.
    pub overdue: usize,
    pub overdue_for: &'static str,
    pub workload: workload::Sizes,
}

impl Counts {
    fn full() -> Counts {
        Counts {
            latency: vec![(1, 30), (10, 150), (100, 500)],
            revocation: vec![100, 1000],
            burst: 1000,
            scale: 10_000,
            overdue: 50,
            // Long enough to be minted at 10,000 live grants, where one
            // grant identity's TokenRequest costs the API server about 1.9 s
            // of CPU (BENCHMARKS.md): 50 at once took longer than 20 s.
            overdue_for: "3m",
            workload: workload::Sizes { agents: 50, siblings: 40, unrelated: 2000 },
        }
    }

    fn reduced() -> Counts {
        Counts {
            // 1 and 10 in flight: the levels where a ratio is printed alone and judged.
            latency: vec![(1, 5), (10, 20)],
            revocation: vec![20],
            burst: 50,
            scale: 100,
            overdue: 5,
            overdue_for: "8s",
            workload: workload::Sizes { agents: 3, siblings: 5, unrelated: 15 },
        }
    }
}

struct Args {
    reduced: bool,
    out: PathBuf,
    cluster_dir: PathBuf,
    operator: PathBuf,
    apiserver_args: String,
    profile: String,
    /// Overrides the number of live grants of the scale section.
    scale: Option<usize>,
    /// Overrides the revocation rounds (grants due together, comma separated).
    revocation: Option<Vec<usize>>,
    /// Sections to run (all when empty); grant latency is then a short calibration round.
    only: Vec<String>,
}

const SECTIONS: [&str; 5] = ["latency", "revocation", "burst", "scale", "workload"];

fn parse_args() -> anyhow::Result<Option<Args>> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench targets without `--bench`: build-checked, not run.
    if !argv.iter().any(|a| a == "--bench") {
        println!("the kube-jit benchmark runs with hack/bench.sh; nothing to do under cargo test");
        return Ok(None);
    }
    let value = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1)).cloned();
    let need = |flag: &str| value(flag).ok_or_else(|| anyhow::anyhow!("{flag} is required (use hack/bench.sh)"));
    Ok(Some(Args {
        reduced: argv.iter().any(|a| a == "--reduced"),
        out: PathBuf::from(need("--out")?),
        cluster_dir: PathBuf::from(need("--cluster-dir")?),
        operator: PathBuf::from(need("--operator")?),
        apiserver_args: value("--apiserver-args").unwrap_or_default(),
        profile: value("--profile").unwrap_or_else(|| "release".into()),
        scale: value("--scale").map(|v| v.parse()).transpose()?,
        revocation: value("--revocation").map(|v| v.split(',').map(str::parse).collect()).transpose()?,
        only: match value("--only") {
            None => Vec::new(),
            Some(list) => {
                let only: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    anyhow::bail!("--only {bad}: the sections are {}", SECTIONS.join(", "));
                }
                only
            }
        },
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Some(args) = parse_args()? else { return Ok(()) };
    let mut counts = if args.reduced { Counts::reduced() } else { Counts::full() };
    counts.scale = args.scale.unwrap_or(counts.scale);
    counts.revocation = args.revocation.clone().unwrap_or(counts.revocation);
    let runs = |section: &str| args.only.is_empty() || args.only.iter().any(|s| s == section);
    if !runs("latency") {
        // Later sections aim their durations with a grant latency seen in this run.
        counts.latency = vec![(10, 30)];
    }
    if !runs("revocation") {
        counts.revocation.clear();
    }
    std::fs::create_dir_all(&args.out)?;
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run_start = Instant::now();
    let mut world = world::World::set_up(&args.cluster_dir, &repo, &args.operator).await?;
    let board = board::Board::watch(world.agent.clone(), world::AGENTS_NS);
    let sampler = Sampler::start(board.clone(), world.operator.pid_cell.clone());
    let mut figures = serde_json::Map::new();
    // Each section's figures are written as soon as they exist, so a run that
    // breaks later still leaves what it measured.
    let partial = args.out.join("bench-results.partial.json");
    let save = |figures: &serde_json::Map<String, serde_json::Value>| {
        let _ = std::fs::write(&partial, serde_json::to_string_pretty(figures).unwrap_or_default());
    };

    sampler.section("latency");
    let mut rounds = Vec::new();
    for &(concurrency, samples) in &counts.latency {
        eprintln!("== grant latency: {samples} grants, {concurrency} in flight");
        rounds.push(latency::round(&world, &board, concurrency, samples).await?);
    }
    figures.insert("grant_latency".into(), rounds.iter().map(|r| r.json()).collect());
    save(&figures);

    sampler.section("revocation");
    let fastest = rounds.last().map(|r| r.operator_rate).unwrap_or(10.0);
    let mut revocations = Vec::new();
    for &n in &counts.revocation {
        eprintln!("== revocation lag: {n} grants due in the same second");
        // Aim durations with the latency seen at the nearest concurrency.
        let nearest = rounds.iter().min_by_key(|r| r.concurrency.abs_diff(n.min(50))).expect("a latency round");
        let expected = measure::Summary::of(&nearest.operator).p50;
        revocations.push(revocation::round(&world, &board, n, fastest, expected).await?);
    }
    figures.insert("revocation".into(), revocations.iter().map(|r| r.json()).collect());
    save(&figures);

    if runs("burst") {
        sampler.section("burst");
        eprintln!("== burst: {} requests", counts.burst);
        let burst = economy::burst(&world, &board, counts.burst).await?;
        figures.insert("burst".into(), burst);
        save(&figures);
    }

    if runs("scale") {
        sampler.section("scale");
        eprintln!("== scale: {} live grants, restart with {} overdue", counts.scale, counts.overdue);
        let scale = economy::scale(&mut world, &board, counts.scale, counts.overdue, counts.overdue_for).await?;
        figures.insert("scale".into(), scale);
        save(&figures);
    }
    if runs("workload") {
        sampler.section("workload");
        let w = &counts.workload;
        eprintln!(
            "== workload: {} pinned agents with a bound grant each, {} more Pods of theirs, {} unrelated Pods",
            w.agents,
            w.agents * w.siblings,
            w.unrelated
        );
        figures.insert("workload".into(), workload::run(&world, w).await?);
        save(&figures);
    }
    let (ticks, sections) = sampler.stop();

    let results = json!({
        "mode": if args.reduced { "reduced" } else { "full" },
        "sections": if args.only.is_empty() { SECTIONS.to_vec() } else { args.only.iter().map(String::as_str).collect() },
        "profile": args.profile,
        "started": jiff::Timestamp::now().to_string(),
        "duration_s": run_start.elapsed().as_secs_f64(),
        "machine": report::machine(&repo),
        "apiserver_args": args.apiserver_args,
        "operator_args": ["run", "--http-addr=127.0.0.1:<port>"],
        "figures": figures,
        "requester_waits_settled_by_direct_read": board.read_directly(),
        "timeline": ticks.iter().map(|t| json!([measure::round(t.seconds), t.live_grants, measure::round(t.rss_mib)])).collect::<Vec<_>>(),
    });
    std::fs::write(args.out.join("bench-results.json"), serde_json::to_string_pretty(&results)?)?;
    let _ = std::fs::remove_file(&partial);
    report::plots(&args.out, &rounds, &revocations, &ticks, &sections, &results)?;
    let summary = report::summary(&results);
    print!("{summary}");
    std::fs::write(args.out.join("summary.txt"), &summary)?;
    eprintln!("results in {}", args.out.display());

    // Correctness, not performance: a leak or an access that never ended fails the run.
    let problems = report::problems(&results);
    anyhow::ensure!(problems.is_empty(), "the benchmark found problems:\n  {}", problems.join("\n  "));
    Ok(())
}

/// Samples live grants and operator memory every 500 ms for the timeline.
struct Sampler {
    ticks: Arc<Mutex<Vec<plots::Tick>>>,
    sections: Arc<Mutex<Vec<(f64, String)>>>,
    start: Instant,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(board: board::Board, pid: Arc<std::sync::atomic::AtomicU32>) -> Sampler {
        let ticks = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let task = {
            let ticks = ticks.clone();
            tokio::spawn(async move {
                loop {
                    let (live_grants, _) = board.counts();
                    let (rss_mib, _) = measure::memory_mib(pid.load(std::sync::atomic::Ordering::Relaxed));
                    let tick = plots::Tick { seconds: start.elapsed().as_secs_f64(), live_grants, rss_mib };
                    ticks.lock().unwrap_or_else(|e| e.into_inner()).push(tick);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        Sampler { ticks, sections: Arc::default(), start, task }
    }

    fn section(&self, name: &str) {
        self.sections.lock().unwrap_or_else(|e| e.into_inner()).push((self.start.elapsed().as_secs_f64(), name.into()));
    }

    fn stop(self) -> (Vec<plots::Tick>, Vec<(f64, String)>) {
        self.task.abort();
        let ticks = self.ticks.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sections = self.sections.lock().unwrap_or_else(|e| e.into_inner()).clone();
        (ticks, sections)
    }
}
