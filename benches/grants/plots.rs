//! SVG plots of a run: latency distributions (kube-jit beside the floor),
//! latency and throughput against requests in flight, operator memory against
//! live grants, and the timeline of live grants and operator memory.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

/// One curve of a distribution plot.
pub struct Curve<'a> {
    pub label: String,
    pub samples: &'a [f64],
    pub color: RGBColor,
    /// The floor is drawn thin, kube-jit thick.
    pub thick: bool,
}

const COLORS: [RGBColor; 4] =
    [RGBColor(0x1f, 0x77, 0xb4), RGBColor(0xd6, 0x27, 0x28), RGBColor(0x2c, 0xa0, 0x2c), RGBColor(0x94, 0x67, 0xbd)];

pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

/// Cumulative distributions (x: milliseconds on a log scale, y: share of samples).
pub fn distribution(path: &Path, title: &str, x_desc: &str, curves: &[Curve]) -> anyhow::Result<()> {
    let all = curves.iter().flat_map(|c| c.samples.iter().copied()).filter(|v| v.is_finite());
    let (lo, hi) = all.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = if hi <= 0.0 { (1.0, 10.0) } else { ((lo * 0.8).max(0.1), hi * 1.25) };
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..1.0)?;
    chart.configure_mesh().x_desc(x_desc).y_desc("share of samples ≤ x").draw()?;
    for curve in curves {
        let mut v: Vec<f64> = curve.samples.iter().copied().filter(|v| v.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let n = v.len().max(1) as f64;
        let points: Vec<(f64, f64)> = v.iter().enumerate().map(|(i, x)| (x.max(lo), (i + 1) as f64 / n)).collect();
        let style = if curve.thick { curve.color.stroke_width(3) } else { curve.color.mix(0.55).stroke_width(1) };
        chart
            .draw_series(LineSeries::new(points, style))?
            .label(curve.label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
    }
    finish(&mut chart, &root, SeriesLabelPosition::LowerRight)
}

/// One sample of the run's timeline.
#[derive(Clone, Copy, Debug)]
pub struct Tick {
    pub seconds: f64,
    pub live_grants: usize,
    pub rss_mib: f64,
}

/// Live grants (top) and operator resident memory (bottom) over the run,
/// with the sections of the run marked.
pub fn timeline(path: &Path, ticks: &[Tick], sections: &[(f64, String)]) -> anyhow::Result<()> {
    let end = ticks.last().map(|t| t.seconds).unwrap_or(1.0).max(1.0);
    let max_live = ticks.iter().map(|t| t.live_grants).max().unwrap_or(1).max(1) as f64;
    let max_rss = ticks.iter().map(|t| t.rss_mib).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (1100, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(420);
    let mut live = ChartBuilder::on(&top)
        .caption("live grants over the run (as the requester's watch sees them)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..max_live * 1.1)?;
    live.configure_mesh().x_desc("seconds since the operator started").y_desc("Granted requests").draw()?;
    live.draw_series(LineSeries::new(
        ticks.iter().map(|t| (t.seconds, t.live_grants as f64)),
        color(0).stroke_width(2),
    ))?;
    for (i, (at, name)) in sections.iter().enumerate() {
        let y = max_live * (1.05 - 0.07 * (i % 4) as f64);
        live.draw_series(LineSeries::new([(*at, 0.0), (*at, max_live * 1.1)], BLACK.mix(0.3)))?;
        live.draw_series([Text::new(name.clone(), (*at, y), ("sans-serif", 13))])?;
    }
    let mut rss = ChartBuilder::on(&bottom)
        .caption("operator resident memory (VmRSS)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..max_rss * 1.15)?;
    rss.configure_mesh().x_desc("seconds since the operator started").y_desc("MiB").draw()?;
    rss.draw_series(LineSeries::new(
        ticks.iter().filter(|t| t.rss_mib.is_finite()).map(|t| (t.seconds, t.rss_mib)),
        color(1).stroke_width(2),
    ))?;
    root.present()?;
    Ok(())
}

/// One level of requests in flight in the grant-latency rounds.
#[derive(Clone, Copy, Debug)]
pub struct Level {
    pub in_flight: usize,
    /// Grant latency percentiles, ms.
    pub operator_p50: f64,
    pub operator_p99: f64,
    pub floor_p50: f64,
    pub floor_p99: f64,
    /// Grants completed per second in the round.
    pub operator_rate: f64,
    pub floor_rate: f64,
}

/// Which figure of a level a line or bar shows.
type Pick = fn(&Level) -> f64;

/// The in-flight axis (log scale) around the levels measured.
fn in_flight_range(levels: &[Level]) -> std::ops::Range<f64> {
    let lo = levels.iter().map(|l| l.in_flight).min().unwrap_or(1).max(1) as f64;
    let hi = levels.iter().map(|l| l.in_flight).max().unwrap_or(1).max(1) as f64;
    lo / 1.8..hi * 1.8
}

/// A white chart on `root` with requests in flight (log scale) across and
/// 0..`max` (with headroom) up, its mesh drawn (`x_mesh`: vertical lines too).
fn in_flight_axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    levels: &[Level],
    max: f64,
    y_desc: &str,
    x_mesh: bool,
) -> anyhow::Result<
    ChartContext<
        'a,
        SVGBackend<'b>,
        Cartesian2d<plotters::coord::combinators::LogCoord<f64>, plotters::coord::types::RangedCoordf64>,
    >,
> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(in_flight_range(levels).log_scale(), 0f64..max * 1.2)?;
    let mut mesh = chart.configure_mesh();
    if !x_mesh {
        mesh.disable_x_mesh();
    }
    mesh.x_desc("requests in flight (log scale)")
        .y_desc(y_desc)
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    Ok(chart)
}

/// Draws the legend (at `position`, on white) and writes the file.
fn finish<'a, 'b: 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    root: &DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()> {
    chart.configure_series_labels().position(position).background_style(WHITE.mix(0.85)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

/// Grant latency p50 and p99 against requests in flight: kube-jit and the
/// floor, four lines.
pub fn latency_vs_inflight(path: &Path, levels: &[Level]) -> anyhow::Result<()> {
    let max = levels
        .iter()
        .flat_map(|l| [l.operator_p50, l.operator_p99, l.floor_p50, l.floor_p99])
        .filter(|v| v.is_finite())
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let caption = "grant latency against requests in flight (dashed: p99)";
    let mut chart = in_flight_axes(&root, caption, levels, max, "ms, request created → first in-scope 200", true)?;
    let lines: [(&str, Pick, RGBColor, bool); 4] = [
        ("kube-jit p50", |l| l.operator_p50, color(0), false),
        ("kube-jit p99", |l| l.operator_p99, color(0), true),
        ("floor p50", |l| l.floor_p50, color(1), false),
        ("floor p99", |l| l.floor_p99, color(1), true),
    ];
    for (label, value, c, dashed) in lines {
        let points: Vec<(f64, f64)> =
            levels.iter().map(|l| (l.in_flight as f64, value(l))).filter(|p| p.1.is_finite()).collect();
        let style = c.stroke_width(if dashed { 2 } else { 3 });
        if dashed {
            chart
                .draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))?
                .label(label)
                .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, style));
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), style))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        // A marker and the value at each level (p99 above the point, p50 below).
        // kube-jit's right of the point, the floor's left; p99 above, p50 below.
        let dx = if label.starts_with("kube-jit") { 6 } else { -32 };
        let dy = if dashed { -16 } else { 6 };
        chart.draw_series(points.iter().map(|&p| {
            EmptyElement::at(p)
                + Circle::new((0, 0), 4, c.filled())
                + Text::new(format!("{:.0}", p.1), (dx, dy), ("sans-serif", 12).into_font().color(&c))
        }))?;
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

/// Grants completed per second against requests in flight, kube-jit's bar
/// beside the floor's, with kube-jit's target (a share of the floor's) marked
/// where it applies.
pub fn throughput_vs_inflight(path: &Path, levels: &[Level], share: f64, from: usize) -> anyhow::Result<()> {
    let max = levels.iter().flat_map(|l| [l.operator_rate, l.floor_rate]).filter(|v| v.is_finite()).fold(1.0, f64::max);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    let caption = "throughput against requests in flight: grants completed per second";
    let mut chart = in_flight_axes(&root, caption, levels, max, "grants per second", false)?;
    // Bars of equal width on the log axis: kube-jit left of the level, the floor right.
    const WIDTH: f64 = 1.35;
    let sides: [(&str, Pick, RGBColor, bool); 2] =
        [("kube-jit", |l| l.operator_rate, color(0), true), ("floor", |l| l.floor_rate, color(1), false)];
    for (label, value, c, left) in sides {
        let bars: Vec<_> = levels
            .iter()
            .filter(|l| value(l).is_finite())
            .map(|l| {
                let x = l.in_flight as f64;
                let (x0, x1) = if left { (x / WIDTH, x) } else { (x, x * WIDTH) };
                (x0, x1, value(l))
            })
            .collect();
        chart
            .draw_series(bars.iter().map(|&(x0, x1, v)| Rectangle::new([(x0, 0.0), (x1, v)], c.mix(0.8).filled())))?
            .label(label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.mix(0.8).filled()));
        chart.draw_series(bars.iter().map(|&(x0, _, v)| {
            EmptyElement::at((x0, v)) + Text::new(format!("{v:.1}"), (2, -16), ("sans-serif", 12))
        }))?;
    }
    let judged: Vec<_> = levels.iter().filter(|l| l.in_flight >= from && l.floor_rate.is_finite()).collect();
    if !judged.is_empty() {
        let style = BLACK.stroke_width(2);
        for l in &judged {
            let (x, y) = (l.in_flight as f64, l.floor_rate * share);
            chart.draw_series(DashedLineSeries::new([(x / WIDTH / 1.05, y), (x * 1.02, y)], 5, 3, style))?;
        }
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
            .label(format!("target: kube-jit ≥ {:.0} % of the floor's (from {from} in flight)", share * 100.0))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 5, 3, style));
    }
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

/// The operator's resident memory against live grants (scale section, read
/// once settled at each checkpoint), with the target as a horizontal line and
/// the restarted process's memory as a point of its own.
pub fn rss_vs_grants(
    path: &Path,
    points: &[(f64, f64)],
    after_restart: Option<(f64, f64)>,
    target_mib: f64,
    target_at: usize,
) -> anyhow::Result<()> {
    let all = points.iter().chain(after_restart.iter());
    let max_x = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_y = all.map(|p| p.1).filter(|v| v.is_finite()).fold(target_mib, f64::max);
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("operator resident memory (VmRSS, settled) against live grants", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max_x * 1.1, 0f64..max_y * 1.2)?;
    chart
        .configure_mesh()
        .x_desc("live grants")
        .y_desc("MiB")
        .x_label_formatter(&|x| thousands(*x as u64))
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let line = color(0).stroke_width(3);
    chart
        .draw_series(LineSeries::new(points.iter().copied().filter(|p| p.1.is_finite()), line))?
        .label("kube-jit while making grants (making paused at each point)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
    chart.draw_series(points.iter().filter(|p| p.1.is_finite()).map(|&p| {
        EmptyElement::at(p)
            + Circle::new((0, 0), 5, color(0).filled())
            + Text::new(format!("{:.0} MiB", p.1), (6, -18), ("sans-serif", 12))
    }))?;
    if let Some(p) = after_restart.filter(|p| p.1.is_finite()) {
        let c = color(2);
        chart
            .draw_series([EmptyElement::at(p)
                + TriangleMarker::new((0, 0), 7, c.filled())
                + Text::new(format!("{:.0} MiB", p.1), (8, 4), ("sans-serif", 12))])?
            .label("after a restart with the same grants (fresh process)")
            .legend(move |(x, y)| TriangleMarker::new((x + 12, y), 6, c.filled()));
    }
    let target = color(1).stroke_width(2);
    chart
        .draw_series(DashedLineSeries::new([(0.0, target_mib), (max_x * 1.1, target_mib)], 10, 6, target))?
        .label(format!("target: ≤ {target_mib:.0} MiB at {} live grants", thousands(target_at as u64)))
        .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, target));
    finish(&mut chart, &root, SeriesLabelPosition::UpperLeft)
}

/// 10000 → "10,000".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
