//! `resc demo adapt`: the paper's Fig. 25 on the embedded platform.
//!
//! Three applications share the balanced pool:
//! - **stream** (chatty): `produce` writes 4 MiB to a memory component and
//!   `consume` reads it back four times: about 20 MiB of traffic per
//!   invocation between its components;
//! - **pipeline** (quieter): `first` writes 1 MiB, `second` reads it once:
//!   about 2 MiB per invocation;
//! - **monolith**: one piece that cannot be disaggregated; it always runs
//!   aggregated, and its load rises, holds, then falls.
//!
//! Each step, the [`Adaptive`] runner takes one controller step (the
//! balanced pool's load is each application's per-invocation demand times
//! the invocations it has in flight: one for stream and pipeline, the
//! scenario's curve for monolith), then runs one real invocation of each
//! application the way it runs now, measuring its latency and its traffic
//! (measured alike aggregated or not, so that the controller can decide
//! either way). The loads are the scenario's; the moves come from the ILP
//! controller and the latencies are measured.

use super::adaptive::{AdaptConfig, Adaptive, ManagedApp};
use super::watermark::Move;
use crate::embedded::{EmbeddedPlatform, PlatformConfig, PlatformError};
use resc_core::resources::{Resources, GIB, MIB};
use resc_core::runtime::{CodeError, Context};
use resc_core::sandbox::CodeRegistry;
use resc_core::scheduler::Pool;
use resc_core::size_class::SizeClasses;
use resc_ilp::Capacity;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptDemoOptions {
    /// Controller steps.
    pub steps: u32,
    /// The monolith's invocations in flight at its peak (1 at rest).
    pub peak_load: f64,
}

impl Default for AdaptDemoOptions {
    /// 60 steps, a peak of 5.2.
    fn default() -> Self {
        AdaptDemoOptions { steps: 60, peak_load: 5.2 }
    }
}

/// One application in one step.
#[derive(Debug, Clone, Serialize)]
pub struct AppStep {
    /// The application.
    pub app: String,
    /// Whether it ran aggregated.
    pub aggregated: bool,
    /// Its invocation's end-to-end latency, ms.
    pub latency_ms: f64,
    /// Bytes its components exchanged.
    pub traffic_bytes: u64,
}

/// One controller step.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// The step.
    pub t: u32,
    /// The monolith's load (invocations in flight).
    pub monolith_load: f64,
    /// Balanced-pool utilization before this step's moves.
    pub utilization_before: f64,
    /// And after them.
    pub utilization_after: f64,
    /// The moves.
    pub moves: Vec<Move>,
    /// Each application's invocation.
    pub apps: Vec<AppStep>,
}

/// What the demo showed, against the issue's bar.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptChecks {
    /// The first step above the watermark disaggregated something.
    pub disaggregated_at_watermark: bool,
    /// The first application split was the one with the least traffic.
    pub lowest_communication_first: bool,
    /// Every movable application ran aggregated again after the load fell.
    pub reaggregated_after_fall: bool,
}

/// The demo's result.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptReport {
    /// The settings.
    pub options: AdaptDemoOptions,
    /// The high watermark and the aggregation ceiling.
    pub watermark: (f64, f64),
    /// Every step.
    pub steps: Vec<Step>,
    /// The checks.
    pub checks: AdaptChecks,
}

const STREAM_BYTES: usize = 4 << 20;
const PIPELINE_BYTES: usize = 1 << 20;
const CHUNK: usize = 64 << 10;

fn fill(ctx: &mut Context, target: &str, bytes: usize) -> Result<(), CodeError> {
    let mut memory = ctx.channel(target)?;
    let seed = ctx.input().first().copied().unwrap_or(1);
    let chunk: Vec<u8> = (0..CHUNK).map(|i| (i as u8).wrapping_mul(seed)).collect();
    for offset in (0..bytes).step_by(CHUNK) {
        memory.write(offset as u64, &chunk)?;
    }
    memory.flush()?;
    Ok(())
}

fn checksum(ctx: &mut Context, target: &str, bytes: usize, passes: usize) -> Result<Vec<u8>, CodeError> {
    let mut memory = ctx.channel(target)?;
    let mut buf = vec![0u8; CHUNK];
    let mut sum = 0u64;
    for _ in 0..passes {
        for offset in (0..bytes).step_by(CHUNK) {
            memory.read(offset as u64, &mut buf)?;
            sum = buf.iter().fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        }
    }
    Ok(sum.to_le_bytes().to_vec())
}

/// The demo applications' code pieces.
pub fn registry() -> CodeRegistry {
    let mut code = CodeRegistry::new();
    code.register("stream.produce", |ctx: &mut Context| fill(ctx, "buf", STREAM_BYTES).map(|()| Vec::new()));
    code.register("stream.consume", |ctx: &mut Context| checksum(ctx, "buf", STREAM_BYTES, 4));
    code.register("pipeline.first", |ctx: &mut Context| fill(ctx, "tmp", PIPELINE_BYTES).map(|()| Vec::new()));
    code.register("pipeline.second", |ctx: &mut Context| checksum(ctx, "tmp", PIPELINE_BYTES, 1));
    code.register("monolith.work", |ctx: &mut Context| {
        let n = 200_000u64 + u64::from(ctx.input().first().copied().unwrap_or(0));
        Ok((0..n).fold(0u64, |a, i| a.wrapping_mul(6364136223846793005).wrapping_add(i)).to_le_bytes().to_vec())
    });
    code
}

const STREAM: &str = r#"{ "app": "stream", "budget_mib": 64,
  "compute": [{ "name": "produce", "code": "stream.produce", "cpu": 0.5 },
              { "name": "consume", "code": "stream.consume", "cpu": 0.5 }],
  "memory": [{ "name": "buf", "initial_mib": 4, "increment_mib": 1 }],
  "edges": [{ "kind": "trigger", "from": "produce", "to": "consume" },
            { "kind": "access", "from": "produce", "to": "buf" },
            { "kind": "access", "from": "consume", "to": "buf" }] }"#;

const PIPELINE: &str = r#"{ "app": "pipeline", "budget_mib": 64,
  "compute": [{ "name": "first", "code": "pipeline.first", "cpu": 0.5 },
              { "name": "second", "code": "pipeline.second", "cpu": 0.5 }],
  "memory": [{ "name": "tmp", "initial_mib": 1, "increment_mib": 1 }],
  "edges": [{ "kind": "trigger", "from": "first", "to": "second" },
            { "kind": "access", "from": "first", "to": "tmp" },
            { "kind": "access", "from": "second", "to": "tmp" }] }"#;

const MONOLITH: &str = r#"{ "app": "monolith", "budget_mib": 64,
  "compute": [{ "name": "work", "code": "monolith.work", "cpu": 1 }] }"#;

/// The platform the demo runs on: one rack of two nodes whose balanced pool
/// has 4 cores and 2 GiB each.
pub fn platform_config() -> Result<PlatformConfig, PlatformError> {
    let classes = SizeClasses::new([MIB, 4 * MIB, 16 * MIB], 64 * MIB)
        .map_err(|e| PlatformError::Config(format!("demo size classes: {e}")))?;
    let mut config = PlatformConfig { racks: 1, nodes_per_rack: 2, size_classes: classes, ..PlatformConfig::default() };
    config.node_pools.insert(Pool::Balanced, Resources::new(4000, 2 * GIB));
    Ok(config)
}

/// The monolith's load at step `t`: 1 at rest, ramping to the peak from
/// 1/6 to 5/12 of the run, holding until 7/12, back to 1 by 3/4.
fn monolith_load(t: u32, options: &AdaptDemoOptions) -> f64 {
    let x = f64::from(t) / f64::from(options.steps.max(1));
    let peak = options.peak_load.max(1.0);
    let ramp = |from: f64, to: f64| ((x - from) / (to - from)).clamp(0.0, 1.0);
    1.0 + (peak - 1.0) * (ramp(1.0 / 6.0, 5.0 / 12.0) - ramp(7.0 / 12.0, 0.75))
}

fn parse(text: &str) -> Result<resc_core::graph::ResourceGraph, PlatformError> {
    resc_core::template::parse(text).map_err(|e| PlatformError::Config(format!("demo template: {e}")))
}

/// Runs the scenario.
pub fn run(options: &AdaptDemoOptions) -> Result<AdaptReport, super::adaptive::AdaptError> {
    let platform = EmbeddedPlatform::new(platform_config()?, registry())?;
    let mut adaptive = Adaptive::new(&platform, AdaptConfig::default())?;
    let stream = adaptive.manage(platform.deploy(parse(STREAM)?)?);
    let pipeline = adaptive.manage(platform.deploy(parse(PIPELINE)?)?);
    let monolith = adaptive.manage(platform.deploy(parse(MONOLITH)?)?);
    adaptive.pin(monolith, true)?;
    let apps: [(ManagedApp, &str); 3] = [(stream, "stream"), (pipeline, "pipeline"), (monolith, "monolith")];
    let mut steps = Vec::new();
    for t in 0..options.steps {
        let load = monolith_load(t, options);
        // The monolith's share of the balanced pool: its declared CPU per
        // invocation in flight times its load (running aggregated, only its
        // traffic is folded into its history, so its memory counts nothing).
        let pinned: Capacity = adaptive.group(monolith, load)?.candidate.demand();
        let plan = adaptive.rebalance(&[(stream, 1.0), (pipeline, 1.0)], pinned)?;
        let mut app_steps = Vec::new();
        for (app, name) in apps {
            let report = adaptive.invoke(app, &[t as u8])?;
            app_steps.push(AppStep {
                app: name.to_owned(),
                aggregated: report.aggregated,
                latency_ms: report.wall.as_secs_f64() * 1e3,
                traffic_bytes: report.traffic.values().flat_map(BTreeMap::values).sum(),
            });
        }
        steps.push(Step {
            t,
            monolith_load: load,
            utilization_before: plan.utilization_before,
            utilization_after: plan.utilization_after,
            moves: plan.moves,
            apps: app_steps,
        });
    }
    let watermark = AdaptConfig::default().watermark;
    let checks = check(&steps, watermark.high);
    Ok(AdaptReport { options: options.clone(), watermark: (watermark.high, watermark.aggregate_below), steps, checks })
}

fn check(steps: &[Step], high: f64) -> AdaptChecks {
    let first_hot = steps.iter().position(|s| s.utilization_before > high);
    let disaggregated_at_watermark = first_hot
        .is_some_and(|i| steps[i].moves.iter().any(|m| matches!(m, Move::Disaggregate { .. })))
        && steps[..first_hot.unwrap_or(0)]
            .iter()
            .all(|s| s.moves.iter().all(|m| !matches!(m, Move::Disaggregate { .. })));
    let first_split = steps.iter().flat_map(|s| &s.moves).find_map(|m| match m {
        Move::Disaggregate { app, .. } => Some(app.clone()),
        Move::Aggregate { .. } => None,
    });
    // The movable application with the least traffic per invocation.
    let mut traffic: BTreeMap<&str, u64> = BTreeMap::new();
    for a in steps.iter().flat_map(|s| &s.apps).filter(|a| a.app != "monolith") {
        let t = traffic.entry(&a.app).or_default();
        *t = (*t).max(a.traffic_bytes);
    }
    let quietest = traffic.iter().min_by_key(|(_, &b)| b).map(|(a, _)| (*a).to_owned());
    let lowest_communication_first = first_split.is_some() && first_split == quietest;
    // Every application split during the peak was aggregated again after
    // it, and runs aggregated at the end.
    let split: std::collections::BTreeSet<&str> = steps
        .iter()
        .flat_map(|s| &s.moves)
        .filter_map(|m| match m {
            Move::Disaggregate { app, .. } => Some(app.as_str()),
            Move::Aggregate { .. } => None,
        })
        .collect();
    let peak_end = steps.iter().rposition(|s| s.utilization_before > high);
    let reaggregated_after_fall = !split.is_empty()
        && peak_end.is_some_and(|end| {
            split.iter().all(|&app| {
                let merged_after = steps[end + 1..]
                    .iter()
                    .flat_map(|s| &s.moves)
                    .any(|m| matches!(m, Move::Aggregate { app: a, .. } if a == app));
                let ends_aggregated =
                    steps.last().is_some_and(|last| last.apps.iter().any(|a| a.app == app && a.aggregated));
                merged_after && ends_aggregated
            })
        });
    AdaptChecks { disaggregated_at_watermark, lowest_communication_first, reaggregated_after_fall }
}

/// The timeline as CSV: one row per step and application.
pub fn csv(report: &AdaptReport) -> String {
    let mut out = String::from(
        "t,monolith_load,utilization_before,utilization_after,app,aggregated,latency_ms,traffic_bytes,moves\n",
    );
    for s in &report.steps {
        let moves: Vec<String> = s
            .moves
            .iter()
            .map(|m| format!("{} {}", if m.aggregates() { "aggregate" } else { "disaggregate" }, m.app()))
            .collect();
        for a in &s.apps {
            let _ = writeln!(
                out,
                "{},{:.3},{:.4},{:.4},{},{},{:.3},{},{}",
                s.t,
                s.monolith_load,
                s.utilization_before,
                s.utilization_after,
                a.app,
                a.aggregated,
                a.latency_ms,
                a.traffic_bytes,
                moves.join("; ")
            );
        }
    }
    out
}

/// The timeline as SVG: balanced-pool utilization with the watermark on
/// top, each application's latency below, shaded where it ran aggregated.
pub fn svg(report: &AdaptReport) -> String {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    const LEFT: f64 = 70.0;
    let n = report.steps.len().max(1) as f64;
    let x = |t: u32| LEFT + f64::from(t) / n * W;
    let apps = ["stream", "pipeline", "monolith"];
    let height = 60.0 + (H + 40.0) * (1.0 + apps.len() as f64);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="12">"#,
        W + LEFT + 40.0
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="20" font-size="14">Balanced-pool utilization and latency; shaded: aggregated (Fig. 25)</text>"#
    );
    // Utilization panel.
    let top = 40.0;
    let _ = writeln!(svg, r##"<rect x="{LEFT}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#999"/>"##);
    let y = |u: f64| top + H - u.clamp(0.0, 1.0) * H;
    let (high, ceiling) = report.watermark;
    for (value, label, colour) in [(high, "watermark", "#d62728"), (ceiling, "aggregation ceiling", "#ff7f0e")] {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" fill="{colour}">{label} {:.0} %</text>"##,
            LEFT + W,
            y(value),
            y(value),
            LEFT + 4.0,
            y(value) - 3.0,
            value * 100.0
        );
    }
    let points: Vec<String> = report
        .steps
        .iter()
        .flat_map(|s| [(x(s.t), y(s.utilization_before)), (x(s.t + 1), y(s.utilization_after))])
        .map(|(px, py)| format!("{px:.1},{py:.1}"))
        .collect();
    let _ =
        writeln!(svg, r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="2"/>"##, points.join(" "));
    let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">100 %</text>"#, LEFT - 4.0, top + 10.0);
    let _ = writeln!(svg, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#, LEFT - 4.0, top + H);
    // Latency panels.
    for (row, app) in apps.iter().enumerate() {
        let top = 40.0 + (H + 40.0) * (row as f64 + 1.0);
        let series: Vec<(u32, &AppStep)> =
            report.steps.iter().filter_map(|s| s.apps.iter().find(|a| a.app == *app).map(|a| (s.t, a))).collect();
        let max = series.iter().map(|(_, a)| a.latency_ms).fold(0.0f64, f64::max).max(1e-3);
        for (t, a) in &series {
            if a.aggregated {
                let _ = writeln!(
                    svg,
                    r##"<rect x="{:.1}" y="{top}" width="{:.1}" height="{H}" fill="#2ca02c" fill-opacity="0.15"/>"##,
                    x(*t),
                    x(t + 1) - x(*t)
                );
            }
        }
        let _ = writeln!(svg, r##"<rect x="{LEFT}" y="{top}" width="{W}" height="{H}" fill="none" stroke="#999"/>"##);
        let points: Vec<String> = series
            .iter()
            .map(|(t, a)| format!("{:.1},{:.1}", (x(*t) + x(t + 1)) / 2.0, top + H - a.latency_ms / max * H))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="#333" stroke-width="1.5"/>"##,
            points.join(" ")
        );
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="{:.1}">{app}: latency (max {max:.2} ms)</text>"#, top - 6.0);
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

/// The report as text.
pub fn table(report: &AdaptReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, " t  load  util→after  stream      pipeline    monolith    moves");
    for s in &report.steps {
        let cell = |name: &str| {
            s.apps
                .iter()
                .find(|a| a.app == name)
                .map_or(String::new(), |a| format!("{}{:>6.2}ms", if a.aggregated { "A " } else { "D " }, a.latency_ms))
        };
        let moves: Vec<String> =
            s.moves.iter().map(|m| format!("{}{}", if m.aggregates() { "+" } else { "-" }, m.app())).collect();
        let _ = writeln!(
            out,
            "{:>2} {:>5.2} {:>4.0}%→{:>3.0}%  {}  {}  {}  {}",
            s.t,
            s.monolith_load,
            s.utilization_before * 100.0,
            s.utilization_after * 100.0,
            cell("stream"),
            cell("pipeline"),
            cell("monolith"),
            moves.join(" ")
        );
    }
    let c = &report.checks;
    let verdict = |ok: bool| if ok { "yes" } else { "NO" };
    let _ = writeln!(
        out,
        "disaggregated at the watermark: {}; lowest communication first: {}; re-aggregated after the load fell: {}",
        verdict(c.disaggregated_at_watermark),
        verdict(c.lowest_communication_first),
        verdict(c.reaggregated_after_fall)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_rises_holds_and_falls() {
        let options = AdaptDemoOptions::default();
        let loads: Vec<f64> = (0..options.steps).map(|t| monolith_load(t, &options)).collect();
        assert_eq!(loads[0], 1.0);
        assert!((loads[30] - options.peak_load).abs() < 1e-9);
        assert_eq!(loads[59], 1.0);
    }
}
