//! `resc bench sched`: the scheduler's throughput, scaling and stranding
//! (measured on the `resc-sched` state machines), and the paper's Table 1
//! analogue on the embedded platform: a chain of 10 components, each
//! sleeping 100 ms, started cold, cold with pre-warming, and warm.

use super::median;
use crate::apps::{self, chain::ChainJob, CHAIN_TEMPLATE};
use crate::embedded::{EmbeddedPlatform, PlatformConfig, PlatformError, WarmStartConfig, WarmUsage};
use resc_core::sandbox::CodeRegistry;
use resc_core::template;
use resc_sched::bench::{BenchConfig, SchedBench};
use serde::Serialize;
use std::time::Duration;
use thiserror::Error;

/// What to run.
#[derive(Debug, Clone)]
pub struct SchedBenchOptions {
    /// The scheduler measurements.
    pub scheduler: BenchConfig,
    /// Sleep per chain component, ms (the paper: 100).
    pub sleep_ms: u64,
    /// Code load per sandbox environment, ms: what a cold start costs beyond
    /// the environment (see [`apps::chain::register_with_load`]).
    pub load_ms: u64,
    /// Measured chain invocations per mode (after one that warms up).
    pub repeat: u32,
}

impl Default for SchedBenchOptions {
    fn default() -> Self {
        SchedBenchOptions { scheduler: BenchConfig::default(), sleep_ms: 100, load_ms: 20, repeat: 5 }
    }
}

impl SchedBenchOptions {
    /// A smoke test: toy scheduler runs, 1 ms sleeps, two invocations per mode.
    pub fn quick() -> Self {
        SchedBenchOptions { scheduler: BenchConfig::toy(), sleep_ms: 1, load_ms: 1, repeat: 2 }
    }
}

/// One start-up mode of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct StartupCase {
    /// `cold`, `cold+prewarm` or `warm`.
    pub mode: String,
    /// Components in the chain.
    pub components: usize,
    /// Sleep per component, ms.
    pub sleep_ms: u64,
    /// Code load per environment, ms.
    pub load_ms: u64,
    /// Median end-to-end latency, ms.
    pub end_to_end_ms: f64,
    /// Median latency beyond the components' sleep, ms: the Table 1 figure.
    pub overhead_ms: f64,
    /// Largest overhead of the measured invocations, ms.
    pub overhead_max_ms: f64,
    /// Warm and cold starts and idle warm memory, over the measured invocations.
    pub warm: WarmUsage,
}

/// A bar or goal of the issue, as measured.
#[derive(Debug, Clone, Serialize)]
pub struct SchedCheck {
    /// What is compared.
    pub name: String,
    /// The measured value.
    pub value: f64,
    /// What it is held against.
    pub bound: f64,
    /// Whether the value is within the bound.
    pub reached: bool,
}

/// Everything `resc bench sched` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SchedReport {
    /// Placement throughput, scaling and stranding.
    pub scheduler: SchedBench,
    /// The chain started three ways.
    pub startup: Vec<StartupCase>,
    /// The bars.
    pub checks: Vec<SchedCheck>,
}

/// Why the benchmark could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SchedBenchError {
    /// The simulated cluster could not be built.
    #[error("scheduler benchmark: {0}")]
    Cluster(#[from] resc_sched::BuildError),
    /// The platform refused or an invocation failed.
    #[error("chain: {0}")]
    Platform(#[from] PlatformError),
    /// The chain's template or input is broken.
    #[error("chain: {0}")]
    Chain(String),
}

/// Runs the chain `repeat` times after one warm-up invocation.
fn startup_case(
    mode: &str,
    warm: WarmStartConfig,
    options: &SchedBenchOptions,
) -> Result<StartupCase, SchedBenchError> {
    let mut registry = CodeRegistry::new();
    apps::chain::register_with_load(&mut registry, Duration::from_millis(options.load_ms));
    let platform = EmbeddedPlatform::new(PlatformConfig { warm, ..PlatformConfig::default() }, registry)?;
    let graph = template::parse(CHAIN_TEMPLATE).map_err(|e| SchedBenchError::Chain(e.to_string()))?;
    let deployment = platform.deploy(graph)?;
    let components = deployment.graph().compute_components().len();
    let job = serde_json::to_vec(&ChainJob { sleep_ms: options.sleep_ms })
        .map_err(|e| SchedBenchError::Chain(e.to_string()))?;
    // The first invocation fills the warm pool (when there is one) and
    // warms caches and allocators in every mode alike.
    platform.invoke(&deployment, &job)?;
    let sleep_ms = (components as u64 * options.sleep_ms) as f64;
    let (mut walls, mut overheads) = (Vec::new(), Vec::new());
    let mut usage = WarmUsage::default();
    for _ in 0..options.repeat {
        let report = platform.invoke(&deployment, &job)?;
        let wall_ms = report.wall.as_secs_f64() * 1e3;
        walls.push(wall_ms);
        overheads.push(wall_ms - sleep_ms);
        usage = usage.plus(&report.warm);
    }
    let overhead_max_ms = overheads.iter().copied().fold(f64::MIN, f64::max);
    Ok(StartupCase {
        mode: mode.to_owned(),
        components,
        sleep_ms: options.sleep_ms,
        load_ms: options.load_ms,
        end_to_end_ms: median(&mut walls),
        overhead_ms: median(&mut overheads),
        overhead_max_ms,
        warm: usage,
    })
}

/// The start-up modes of Table 1.
fn startup_modes() -> [(&'static str, WarmStartConfig); 3] {
    let cold = WarmStartConfig::cold();
    [
        ("cold", cold),
        ("cold+prewarm", WarmStartConfig { prewarm_next: true, ..cold }),
        ("warm", WarmStartConfig { keep_alive: Duration::from_secs(600), prewarm_next: true, ..cold }),
    ]
}

fn checks(scheduler: &SchedBench, startup: &[StartupCase]) -> Vec<SchedCheck> {
    let check =
        |name: &str, value: f64, bound: f64, reached: bool| SchedCheck { name: name.to_owned(), value, bound, reached };
    let overhead = |mode: &str| startup.iter().find(|c| c.mode == mode).map_or(f64::NAN, |c| c.overhead_ms);
    let mut out = vec![
        check(
            "bar: rack scheduler placements per second, one core (at least)",
            scheduler.rack.placements_per_sec,
            200_000.0,
            scheduler.rack.placements_per_sec >= 200_000.0,
        ),
        check("bar: warm chain overhead, ms (at most)", overhead("warm"), 10.0, overhead("warm") <= 10.0),
        check(
            "bar: cold with pre-warm faster than cold: overhead ms (cold's is the bound)",
            overhead("cold+prewarm"),
            overhead("cold"),
            overhead("cold+prewarm") < overhead("cold"),
        ),
    ];
    for report in &scheduler.stranding {
        let (classes, first_fit) = (&report.size_classes, &report.whole_first_fit);
        out.push(check(
            &format!(
                "bar: memory-pool utilization, size classes vs whole-component first fit ({})",
                describe(&report.config)
            ),
            classes.reserved_utilization,
            first_fit.reserved_utilization,
            classes.reserved_utilization > first_fit.reserved_utilization,
        ));
    }
    out
}

/// A stranding configuration in a few words.
fn describe(config: &resc_sched::sim::StrandingConfig) -> String {
    format!(
        "{} nodes × {} GiB, median {} MB, smallest class {} MiB",
        config.nodes,
        config.node_bytes >> 30,
        config.median_bytes / 1_000_000,
        config.classes.smallest() >> 20
    )
}

/// Runs every measurement.
pub fn run(options: &SchedBenchOptions, progress: &mut dyn FnMut(&str)) -> Result<SchedReport, SchedBenchError> {
    progress("scheduler");
    let scheduler = resc_sched::bench::run(&options.scheduler)?;
    let mut startup = Vec::new();
    for (mode, warm) in startup_modes() {
        progress(mode);
        startup.push(startup_case(mode, warm, options)?);
    }
    let checks = checks(&scheduler, &startup);
    Ok(SchedReport { scheduler, startup, checks })
}

/// Renders the report as text.
pub fn table(report: &SchedReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let s = &report.scheduler;
    let _ = writeln!(
        out,
        "rack scheduler ({} nodes): {:.0} placements/s ({:.0} ns per place+release)",
        s.rack.nodes, s.rack.placements_per_sec, s.rack.ns_per_placement
    );
    let _ = writeln!(
        out,
        "two-level scheduler ({} racks): {:.0} requests/s ({:.0} ns)",
        s.global.racks, s.global.placements_per_sec, s.global.ns_per_placement
    );
    let _ = writeln!(out, "scaling:  racks   two-level/s   routing/s");
    for point in &s.scaling {
        let _ = writeln!(
            out,
            "          {:>5}  {:>12.0}  {:>10.0}",
            point.racks, point.two_level.placements_per_sec, point.route_decisions_per_sec
        );
    }
    let _ = writeln!(out, "stranding at saturation (reserved / payload utilization):");
    for r in &s.stranding {
        let _ = writeln!(
            out,
            "  {}: size classes {:.3} / {:.3}, split {:.3} / {:.3}, first fit {:.3} / {:.3}",
            describe(&r.config),
            r.size_classes.reserved_utilization,
            r.size_classes.payload_utilization,
            r.size_classes_split.reserved_utilization,
            r.size_classes_split.payload_utilization,
            r.whole_first_fit.reserved_utilization,
            r.whole_first_fit.payload_utilization,
        );
    }
    let _ = writeln!(out, "chain start-up (Table 1):  mode           end-to-end ms  overhead ms  hits  misses");
    for c in &report.startup {
        let _ = writeln!(
            out,
            "                           {:<13} {:>13.1} {:>12.1} {:>5} {:>7}",
            c.mode, c.end_to_end_ms, c.overhead_ms, c.warm.hits, c.warm.misses
        );
    }
    for c in &report.checks {
        let verdict = if c.reached { "reached" } else { "NOT reached" };
        let _ = writeln!(out, "{}: {:.3} against {:.3}: {verdict}", c.name, c.value, c.bound);
    }
    out
}
