//! Plots of a run (`--plot out.svg`, or `out.png` with the `png` feature): throughput by
//! status class and p50/p90/p99 latency over time, plus, with `--mix`, per step the offered rate
//! and goodput of each class and the fraction of each class served; and, for `capacity`,
//! achieved rate and latency against offered rate with the SLO, the knee and the maximum
//! sustainable rate marked.
//!
//! plotters without its system-font feature: the font is vendored (DejaVu Sans, under its own
//! free licence in `assets/`) so plots render the same on any machine and the build links no
//! freetype/fontconfig.

use crate::capacity::CapacityResult;
use crate::report::Report;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 800;

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw plot {path}: {why}")]
pub struct PlotError {
    /// Output file.
    pub path: String,
    /// What went wrong.
    pub why: String,
}

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The vendored font is a valid TTF; if it were not, text would be missing, not a crash.
        let _ = register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// Colour of a status class in every plot.
fn class_colour(class: &str) -> RGBColor {
    match class {
        "2xx" => RGBColor(46, 139, 87),
        "3xx" => RGBColor(65, 105, 225),
        "4xx" => RGBColor(230, 140, 0),
        "5xx" => RGBColor(200, 30, 30),
        _ => RGBColor(60, 60, 60),
    }
}

type DrawResult = Result<(), String>;

/// Draws a chart's series legend, the same way on every chart: upper left, on white.
fn draw_legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> DrawResult {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)
}

/// Reads one percentile off a timeline point.
type Pick = fn(&crate::report::TimelinePoint) -> Option<f64>;

fn err(e: impl std::fmt::Debug) -> String {
    format!("{e:?}")
}

macro_rules! with_backend {
    ($path:expr, $height:expr, $body:ident, $($arg:expr),*) => {{
        register();
        let path: &Path = $path;
        let fail = |why: String| PlotError { path: path.display().to_string(), why };
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
            Some("svg") => {
                let root = SVGBackend::new(path, (WIDTH, $height)).into_drawing_area();
                $body(&root, $($arg),*).map_err(fail)?;
                root.present().map_err(|e| fail(err(e)))
            }
            #[cfg(feature = "png")]
            Some("png") => {
                let root = BitMapBackend::new(path, (WIDTH, $height)).into_drawing_area();
                $body(&root, $($arg),*).map_err(fail)?;
                root.present().map_err(|e| fail(err(e)))
            }
            #[cfg(not(feature = "png"))]
            Some("png") => Err(fail(crate::cli::PNG_NEEDS_FEATURE.into())),
            _ => Err(fail("the file name must end in .svg or .png".into())),
        }
    }};
}

/// Plots `report`'s timeline to `path` (`.svg` or `.png`); with a mix, twice as tall, with the
/// per-class charts below.
pub fn plot_report(report: &Report, path: &Path) -> Result<(), PlotError> {
    let height = if report.overall.classes.is_empty() { HEIGHT } else { 2 * HEIGHT };
    with_backend!(path, height, draw_report, report)
}

/// Colour of the `k`-th class of a mix.
fn mix_colour(k: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(230, 140, 0),
        RGBColor(65, 105, 225),
        RGBColor(46, 139, 87),
        RGBColor(148, 0, 211),
        RGBColor(200, 30, 30),
        RGBColor(0, 139, 139),
    ];
    PALETTE[k % PALETTE.len()]
}

/// Per step: offered rate (dashed) and goodput (solid) of each class, then the fraction of each
/// class served. The x axis is the step's intended rate when every step has one (a ramp), else
/// the step number.
fn draw_classes<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, report: &Report) -> DrawResult {
    let by_rate = report.steps.iter().all(|s| s.target_rate.is_some());
    let x_of = |s: &crate::report::StepReport| {
        if by_rate {
            s.target_rate.unwrap_or(0.0)
        } else {
            s.step.unwrap_or(0) as f64 + 1.0
        }
    };
    let x_max = report.steps.iter().map(x_of).fold(1.0, f64::max) * 1.05;
    let x_desc = if by_rate { "offered rate of the step (rps)" } else { "step" };
    let classes: Vec<&str> = report.overall.classes.iter().map(|c| c.class.as_str()).collect();
    let header = report.mix_header.as_deref().unwrap_or("class");
    let (top, bottom) = area.split_vertically(area.dim_in_pixel().1 / 2);

    let y_max = report
        .steps
        .iter()
        .flat_map(|s| s.classes.iter().map(|c| c.offered_rate.unwrap_or(0.0).max(c.goodput)))
        .chain(report.steps.iter().map(|s| s.goodput))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("offered (dashed) and goodput (2xx/s, solid) per {header}"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("requests/s")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            LineSeries::new(
                report.steps.iter().map(|s| (x_of(s), s.goodput)),
                BLACK.stroke_width(2),
            )
            .point_size(3),
        )
        .map_err(err)?
        .label("goodput, all classes")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    for (k, class) in classes.iter().enumerate() {
        let colour = mix_colour(k);
        let goodput =
            report.steps.iter().filter_map(|s| s.classes.get(k).map(|c| (x_of(s), c.goodput)));
        chart
            .draw_series(LineSeries::new(goodput, colour.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(format!("{class} goodput"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
        let offered: Vec<(f64, f64)> = report
            .steps
            .iter()
            .filter_map(|s| s.classes.get(k)?.offered_rate.map(|r| (x_of(s), r)))
            .collect();
        if !offered.is_empty() {
            chart
                .draw_series(DashedLineSeries::new(offered, 6, 4, colour.stroke_width(1)))
                .map_err(err)?;
        }
    }
    draw_legend(&mut chart)?;

    let mut chart = ChartBuilder::on(&bottom)
        .caption(format!("fraction served (2xx / sent) per {header}"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..1.1f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("served")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (k, class) in classes.iter().enumerate() {
        let colour = mix_colour(k);
        let served = report
            .steps
            .iter()
            .filter_map(|s| s.classes.get(k).map(|c| (x_of(s), c.served_fraction)));
        chart
            .draw_series(LineSeries::new(served, colour.stroke_width(2)).point_size(3))
            .map_err(err)?
            .label(*class)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)?;
    Ok(())
}

/// Plots a capacity search to `path` (`.svg` or `.png`).
pub fn plot_capacity(result: &CapacityResult, path: &Path) -> Result<(), PlotError> {
    with_backend!(path, HEIGHT, draw_capacity, result)
}

fn draw_report<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let mode = match report.mode {
        crate::report::Mode::Open => "open loop",
        crate::report::Mode::Closed => "closed loop",
        crate::report::Mode::Replay => "replay",
    };
    let title = format!("{} — {} {mode}", report.target, report.http_version);
    let root = root.titled(&title, ("sans-serif", 22)).map_err(err)?;
    let root = if report.overall.classes.is_empty() {
        root
    } else {
        let (timeline, classes) = root.split_vertically(HEIGHT - 20);
        draw_classes(&classes, report)?;
        timeline
    };
    let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);
    let t_max =
        report.timeline.last().map_or(report.duration_s, |p| p.t_s).max(report.duration_s).max(0.1);

    // Throughput, stacked by class so the total height is the response rate.
    let classes = ["2xx", "3xx", "4xx", "5xx", "errors"];
    let total = |p: &crate::report::TimelinePoint| {
        classes.iter().map(|c| p.rates.get(*c).copied().unwrap_or(0.0)).sum::<f64>()
    };
    let y_max = report
        .timeline
        .iter()
        .map(|p| total(p).max(p.sent_rate).max(p.target_rate.unwrap_or(0.0)))
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&top)
        .caption("throughput (responses/s by status class)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("requests/s")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    for (i, class) in classes.iter().enumerate().rev() {
        let cumulative = |p: &crate::report::TimelinePoint| {
            classes[..=i].iter().map(|c| p.rates.get(*c).copied().unwrap_or(0.0)).sum::<f64>()
        };
        let colour = class_colour(class);
        if report.timeline.iter().all(|p| p.rates.get(*class).copied().unwrap_or(0.0) == 0.0) {
            continue;
        }
        chart
            .draw_series(
                AreaSeries::new(
                    report.timeline.iter().map(|p| (p.t_s, cumulative(p))),
                    0.0,
                    colour.mix(0.55),
                )
                .border_style(colour),
            )
            .map_err(err)?
            .label(*class)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
    }
    if report.timeline.iter().any(|p| p.target_rate.is_some()) {
        let target = report.timeline.iter().filter_map(|p| p.target_rate.map(|r| (p.t_s, r)));
        chart
            .draw_series(LineSeries::new(target, BLACK.stroke_width(2)))
            .map_err(err)?
            .label("target rate")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.stroke_width(2)));
    }
    draw_legend(&mut chart)?;

    // Latency percentiles.
    let lat_max =
        report.timeline.iter().filter_map(|p| p.p99_ms).fold(0.0, f64::max).max(0.01) * 1.15;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency of responses (ms)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..t_max, 0f64..lat_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let series: [(&str, Pick, RGBColor); 3] = [
        ("p50", |p| p.p50_ms, RGBColor(65, 105, 225)),
        ("p90", |p| p.p90_ms, RGBColor(230, 140, 0)),
        ("p99", |p| p.p99_ms, RGBColor(200, 30, 30)),
    ];
    for (name, value, colour) in series {
        chart
            .draw_series(LineSeries::new(
                report.timeline.iter().filter_map(|p| value(p).map(|v| (p.t_s, v))),
                colour.stroke_width(2),
            ))
            .map_err(err)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(2))
            });
    }
    draw_legend(&mut chart)?;
    Ok(())
}

fn draw_capacity<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    result: &CapacityResult,
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let title = format!("capacity of {} — SLO {}", result.target, result.slo);
    let root = root.titled(&title, ("sans-serif", 22)).map_err(err)?;
    let (top, bottom) = root.split_vertically(HEIGHT / 2 - 20);
    // Steps run in search order; lines read left to right.
    let mut steps = result.steps.clone();
    steps.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    let x_max = steps.iter().map(|s| s.offered).fold(1.0, f64::max) * 1.05;

    let mut chart = ChartBuilder::on(&top)
        .caption("achieved vs offered rate", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..x_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered (rps)")
        .y_desc("rps")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(vec![(0.0, 0.0), (x_max, x_max)], BLACK.mix(0.3)))
        .map_err(err)?
        .label("ideal")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], BLACK.mix(0.3)));
    let green = class_colour("2xx");
    chart
        .draw_series(
            LineSeries::new(steps.iter().map(|s| (s.offered, s.goodput)), green.stroke_width(2))
                .point_size(4),
        )
        .map_err(err)?
        .label("goodput (2xx/3xx per s)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], green.stroke_width(2)));
    draw_markers(&mut chart, result, x_max)?;
    draw_legend(&mut chart)?;

    let y_max = steps.iter().map(|s| s.latency_ms).fold(result.slo.max_latency_ms, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("{} latency vs offered rate", result.slo.percentile_label()),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("offered (rps)")
        .y_desc("ms")
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(err)?;
    let red = class_colour("5xx");
    chart
        .draw_series(
            LineSeries::new(
                steps.iter().map(|s| (s.offered, s.latency_ms)),
                RGBColor(65, 105, 225).stroke_width(2),
            )
            .point_size(4),
        )
        .map_err(err)?
        .label(result.slo.percentile_label())
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 14, y)], RGBColor(65, 105, 225).stroke_width(2))
        });
    let slo = result.slo.max_latency_ms;
    chart
        .draw_series(LineSeries::new(vec![(0.0, slo), (x_max, slo)], red.stroke_width(2)))
        .map_err(err)?
        .label("SLO")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], red.stroke_width(2)));
    draw_markers(&mut chart, result, y_max)?;
    draw_legend(&mut chart)?;
    Ok(())
}

/// Vertical lines at the knee and at the maximum sustainable rate.
fn draw_markers<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    result: &CapacityResult,
    y_max: f64,
) -> DrawResult {
    let markers = [
        ("knee", result.knee_rate, RGBColor(230, 140, 0)),
        ("max sustainable", result.max_rate, RGBColor(46, 139, 87)),
    ];
    for (label, rate, colour) in markers {
        let Some(rate) = rate else { continue };
        chart
            .draw_series(LineSeries::new(vec![(rate, 0.0), (rate, y_max)], colour.stroke_width(1)))
            .map_err(err)?
            .label(format!("{label} {rate:.0} rps"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], colour.stroke_width(1))
            });
    }
    Ok(())
}
