//! An SVG chart of allocated against used memory over time, ReSC beside the
//! function-centric baseline, one row per input.

use crate::demo::LrReport;
use crate::metering::TimelinePoint;
use std::fmt::Write;

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 180.0;
const MARGIN: f64 = 72.0;
const ROW_H: f64 = PANEL_H + 70.0;

fn polyline(
    points: &[TimelinePoint],
    value: impl Fn(&TimelinePoint) -> u64,
    x0: f64,
    y0: f64,
    t_max: f64,
    y_max: f64,
) -> String {
    let mut path = String::new();
    let mut previous: Option<f64> = None;
    for p in points {
        let x = x0 + p.t_s / t_max * PANEL_W;
        let y = y0 + PANEL_H - value(p) as f64 / y_max * PANEL_H;
        // Step shape: hold the previous value until this point.
        if let Some(py) = previous {
            let _ = write!(path, "{x:.1},{py:.1} ");
        }
        let _ = write!(path, "{x:.1},{y:.1} ");
        previous = Some(y);
    }
    path
}

/// The chart as an SVG document. Both panels of a row share the time and
/// memory scales, so areas compare directly.
pub fn lr_memory_chart(report: &LrReport) -> String {
    let width = 2.0 * (PANEL_W + MARGIN) + MARGIN;
    let height = report.runs.len() as f64 * ROW_H + 40.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r##"<text x="{MARGIN}" y="20" font-size="14">Memory allocated (red) and used (blue) over time — ReSC vs function-centric baseline</text>"##
    );
    for (row, run) in report.runs.iter().enumerate() {
        let y0 = 40.0 + row as f64 * ROW_H;
        let t_max = run.resc.wall_s.max(run.baseline.wall_s).max(1e-9);
        let y_max = [&run.resc.timeline, &run.baseline.timeline]
            .iter()
            .flat_map(|t| t.iter())
            .map(|p| p.allocated_bytes.max(p.used_bytes))
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        for (col, (name, figures)) in [("ReSC", &run.resc), ("baseline", &run.baseline)].into_iter().enumerate() {
            let x0 = MARGIN + col as f64 * (PANEL_W + MARGIN);
            let _ = writeln!(
                svg,
                r##"<text x="{x0}" y="{:.1}">{name}, {} MB input: allocated {:.4} GiB·s, used {:.4} GiB·s, {:.3} s</text>"##,
                y0 + 14.0,
                run.input_mb,
                figures.allocated_gib_s,
                figures.used_gib_s,
                figures.wall_s
            );
            let top = y0 + 24.0;
            let _ = writeln!(
                svg,
                r##"<rect x="{x0}" y="{top:.1}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{:.0} MiB</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"##,
                x0 - 4.0,
                top + 10.0,
                y_max / (1u64 << 20) as f64,
                x0 - 4.0,
                top + PANEL_H
            );
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{t_max:.2} s</text>"##,
                x0 + PANEL_W,
                top + PANEL_H + 14.0
            );
            for (color, value) in [("#d62728", true), ("#1f77b4", false)] {
                let points = polyline(
                    &figures.timeline,
                    |p| if value { p.allocated_bytes } else { p.used_bytes },
                    x0,
                    top,
                    t_max,
                    y_max,
                );
                let _ =
                    writeln!(svg, r##"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>"##);
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}
