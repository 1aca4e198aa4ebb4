//! SVG plots of a run: latency distributions (kube-jit beside the floor) and
//! the timeline of live grants and operator memory.

use std::path::Path;

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
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
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
