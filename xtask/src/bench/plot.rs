//! SVG plots of a run, drawn with `plotters`: the wake-latency
//! distribution of every subject, and fan-in throughput against the number
//! of children.

use std::path::Path;

use plotters::prelude::*;

use super::report::Runs;
use super::subjects::Workload;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// The colour of the `i`-th series.
fn colour(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 12] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(0, 0, 0),
        RGBColor(120, 60, 160),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Wake latency against "nines" of the quantile (0 = p0, 1 = p90, 2 = p99,
/// 3 = p99.9), one line per subject, latency on a log scale.
pub(crate) fn wake_latency(path: &Path, runs: &[Runs]) -> PlotResult {
    let series: Vec<(&str, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|r| r.workload == Workload::WakeLatency)
        .map(|r| {
            let pts =
                r.cdf().into_iter().map(|(q, ns)| (-(1.0 - q).max(1e-6).log10(), (ns / 1000.0).max(0.1))).collect();
            (r.subject.name, pts)
        })
        .filter(|(_, pts): &(&str, Vec<(f64, f64)>)| !pts.is_empty())
        .collect();
    let all = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (lo, hi) = all.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if lo <= hi { (lo / 1.5, hi * 1.5) } else { (0.1, 10.0) };
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(1.0, f64::max);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("wake latency: master asleep in poll, one update", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("quantile, in nines (0 = p0, 1 = p90, 2 = p99, 3 = p99.9)")
        .y_desc("latency (µs, log)")
        .draw()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::UpperLeft)?;
    root.present()?;
    Ok(())
}

/// Fan-in throughput (median updates/s) against children, both on log
/// scales, one line per subject.
pub(crate) fn fan_in(path: &Path, runs: &[Runs]) -> PlotResult {
    let mut names: Vec<&str> = Vec::new();
    for r in runs.iter().filter(|r| r.workload == Workload::FanIn) {
        if !names.contains(&r.subject.name) {
            names.push(r.subject.name);
        }
    }
    let series: Vec<(&str, Vec<(f64, f64)>)> = names
        .into_iter()
        .map(|name| {
            let mut pts: Vec<(f64, f64)> = runs
                .iter()
                .filter(|r| r.workload == Workload::FanIn && r.subject.name == name)
                .filter_map(|r| {
                    #[allow(clippy::cast_precision_loss, reason = "a child count on a plot axis")]
                    let x = r.children as f64;
                    Some((x, r.median("updates_per_sec")?))
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (name, pts)
        })
        .filter(|(_, pts)| !pts.is_empty())
        .collect();
    let ys = series.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (lo, hi) = ys.fold((f64::MAX, f64::MIN), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if lo <= hi && lo > 0.0 { (lo / 1.5, hi * 1.5) } else { (1.0, 1e7) };
    let x_max = series.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x)).fold(2.0, f64::max);

    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("fan-in: updates/s at the master", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..x_max * 1.2).log_scale(), (lo..hi).log_scale())?;
    chart.configure_mesh().x_desc("children (log)").y_desc("updates/s (log)").draw()?;
    draw_lines(&mut chart, series, SeriesLabelPosition::LowerLeft)?;
    root.present()?;
    Ok(())
}

/// Draws one coloured line per subject, with a legend at `legend`.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    series: Vec<(&str, Vec<(f64, f64)>)>,
    legend: SeriesLabelPosition,
) -> PlotResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().position(legend).border_style(BLACK).draw()?;
    Ok(())
}
