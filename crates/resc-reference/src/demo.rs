//! The demos behind `resc demo`: logistic regression as a resource graph
//! against the function-centric baseline, and the start-up chain.

use crate::apps::chain::ChainJob;
use crate::apps::lr::{LrJob, LrResult};
use crate::apps::{self, CHAIN_TEMPLATE, LR_TEMPLATE};
use crate::embedded::{
    DataPath, Deployment, EmbeddedPlatform, InvocationReport, PlatformConfig, PlatformError, StartupTrace,
    WarmStartConfig,
};
use crate::metering::{ComponentUsage, Consumption, TimelinePoint, Usage};
use resc_core::memory::{CacheConfig, CacheStats};
use resc_core::resources::{format_bytes, MIB};
use resc_core::sandbox::CodeRegistry;
use resc_core::size_class::SizeClasses;
use resc_core::template::{self, TemplateError};
use serde::Serialize;
use thiserror::Error;

/// A FaaS provider's memory size step (AWS Lambda and others bill in steps;
/// 128 MiB is the common one).
pub const FUNCTION_SIZE_STEP: u64 = 128 * MIB;

/// Why a demo could not run.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The embedded template is invalid (a build defect).
    #[error("embedded template: {0}")]
    Template(#[from] TemplateError),
    /// The platform failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The options are inconsistent.
    #[error("{0}")]
    Options(String),
    /// An output could not be decoded.
    #[error("unexpected output: {0}")]
    Output(String),
}

/// Options of `resc demo lr`.
#[derive(Debug, Clone, Serialize)]
pub struct LrOptions {
    /// Data set sizes, in MB (10^6 bytes).
    pub inputs_mb: Vec<f64>,
    /// Measured runs per input and mode; the median by wall time is reported.
    pub repeat: u32,
    /// Local memory of one compute slot.
    pub slot_bytes: u64,
    /// Smallest and largest memory size class (powers of two in between).
    pub memory_classes: (u64, u64),
    /// Each compute instance's local cache.
    pub cache: CacheConfig,
    /// Training epochs.
    pub epochs: u32,
    /// How compute instances reach memory components.
    pub data_path: DataPath,
}

impl Default for LrOptions {
    /// The paper's two inputs, 12 MB and 44 MB, on a platform sized for
    /// Rust code pieces: a 4 MiB compute slot with a 1 MiB cache, and memory
    /// size classes from 1 MiB to 64 MiB (the paper's 64 MiB … 1 GiB is
    /// sized for GB-scale Python data; this data set is tens of MB).
    fn default() -> Self {
        LrOptions {
            inputs_mb: vec![12.0, 44.0],
            repeat: 5,
            slot_bytes: 4 * MIB,
            memory_classes: (MIB, 64 * MIB),
            cache: CacheConfig::new(MIB, 4096),
            epochs: 100,
            data_path: DataPath::InProcess,
        }
    }
}

/// One mode's figures for one input.
#[derive(Debug, Clone, Serialize)]
pub struct RunFigures {
    /// End-to-end wall time, seconds.
    pub wall_s: f64,
    /// Compute side.
    pub compute: Consumption,
    /// Memory side.
    pub memory: Consumption,
    /// Allocated GiB·s, both sides.
    pub allocated_gib_s: f64,
    /// Used GiB·s, both sides.
    pub used_gib_s: f64,
    /// Allocated but unused GiB·s.
    pub waste_gib_s: f64,
    /// Largest measured compute peak.
    pub compute_peak_bytes: u64,
    /// Per component.
    pub components: Vec<ComponentUsage>,
    /// Allocated and used bytes over time.
    #[serde(skip)]
    pub timeline: Vec<TimelinePoint>,
    /// The compute instances' local caches, summed: hits, misses, bytes moved.
    pub cache: CacheStats,
    /// How each compute instance started: code loading and connection set-up.
    pub startup: Vec<StartupTrace>,
}

impl RunFigures {
    fn of(usage: &Usage, cache: CacheStats, startup: Vec<StartupTrace>) -> Self {
        let total = usage.total();
        RunFigures {
            wall_s: usage.wall_s,
            compute: usage.compute,
            memory: usage.memory,
            allocated_gib_s: total.allocated_gib_s,
            used_gib_s: total.used_gib_s,
            waste_gib_s: total.waste_gib_s(),
            compute_peak_bytes: usage.compute_peak_bytes(),
            components: usage.components.clone(),
            timeline: usage.timeline.clone(),
            cache,
            startup,
        }
    }
}

/// One input's comparison.
#[derive(Debug, Clone, Serialize)]
pub struct LrRun {
    /// Data set size, MB.
    pub input_mb: f64,
    /// 1 − ReSC allocated GiB·s ÷ baseline allocated GiB·s.
    pub saving: f64,
    /// ReSC wall ÷ baseline wall − 1 (medians).
    pub overhead: f64,
    /// Validation accuracy reached by ReSC.
    pub accuracy_resc: f64,
    /// Validation accuracy reached by the baseline.
    pub accuracy_baseline: f64,
    /// The ReSC run (median by wall time).
    pub resc: RunFigures,
    /// The baseline run (median by wall time).
    pub baseline: RunFigures,
    /// Every measured wall time, seconds, ReSC then baseline.
    pub walls_s: (Vec<f64>, Vec<f64>),
    /// Where the saving comes from: the same comparison against functions
    /// sized less coarsely.
    pub saving_breakdown: SavingBreakdown,
}

/// The saving against baselines that give up one function-centric cost at a
/// time, so that what resource graphs save by design is not confused with
/// what the provider's size step costs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct SavingBreakdown {
    /// Against a function sized at the exact peak over all inputs (no 128 MiB step).
    pub vs_exact_peak_over_inputs: f64,
    /// Against a function sized at this input's own exact peak (a FaaS user
    /// who could pick a size per invocation, which no provider offers).
    pub vs_own_exact_peak: f64,
}

/// Everything `resc demo lr` measured.
#[derive(Debug, Clone, Serialize)]
pub struct LrReport {
    /// The compute slot used.
    pub slot_bytes: u64,
    /// The memory size classes used.
    pub memory_classes: Vec<u64>,
    /// The cache used.
    pub cache: CacheConfig,
    /// The function-centric baseline's size: the peak over all inputs,
    /// rounded up to [`FUNCTION_SIZE_STEP`].
    pub baseline_function_bytes: u64,
    /// The largest measured compute peak of any ReSC compute component.
    pub resc_compute_peak_bytes: u64,
    /// Whether every ReSC compute component stayed within its slot.
    pub within_slot: bool,
    /// Epochs trained.
    pub epochs: u32,
    /// One entry per input.
    pub runs: Vec<LrRun>,
}

/// What a demo reports while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    /// The number of invocations the demo will make.
    Total(u64),
    /// One more invocation finished.
    Step,
}

fn lr_registry() -> CodeRegistry {
    let mut registry = CodeRegistry::new();
    apps::lr::register(&mut registry);
    registry
}

fn accuracy(report: &InvocationReport) -> Result<f64, DemoError> {
    let output = report.outputs.first().ok_or_else(|| DemoError::Output("validate produced no output".into()))?;
    let result: LrResult = serde_json::from_slice(output).map_err(|e| DemoError::Output(e.to_string()))?;
    Ok(result.accuracy)
}

fn median_by_wall(mut reports: Vec<InvocationReport>) -> (InvocationReport, Vec<f64>) {
    reports.sort_by_key(|r| r.wall);
    let walls = reports.iter().map(|r| r.wall.as_secs_f64()).collect();
    let mid = reports.len() / 2;
    (reports.swap_remove(mid), walls)
}

/// Runs logistic regression at each input size as a resource graph and as
/// the function-centric baseline, on one embedded platform, and compares.
pub fn run_lr(options: &LrOptions, progress: &mut dyn FnMut(Progress)) -> Result<LrReport, DemoError> {
    if options.inputs_mb.is_empty() || options.inputs_mb.iter().any(|&mb| !(mb > 0.0 && mb.is_finite())) {
        return Err(DemoError::Options("input sizes must be positive numbers of MB".into()));
    }
    if options.repeat == 0 {
        return Err(DemoError::Options("repeat must be at least 1".into()));
    }
    let classes = SizeClasses::powers_of_two(options.memory_classes.0, options.memory_classes.1, options.slot_bytes)
        .map_err(|e| DemoError::Options(e.to_string()))?;
    let config = PlatformConfig {
        size_classes: classes.clone(),
        cache: options.cache,
        data_path: options.data_path,
        // Both sides start cold, as the baseline's function does: the
        // comparison is of one invocation's resources, and a warm pool's
        // idle slots belong to no single invocation.
        warm: WarmStartConfig::cold(),
        ..PlatformConfig::default()
    };
    let platform = EmbeddedPlatform::new(config, lr_registry())?;
    let deployment = platform.deploy(template::parse(LR_TEMPLATE)?)?;
    let jobs: Vec<Vec<u8>> = options
        .inputs_mb
        .iter()
        .map(|&mb| {
            let mut job = LrJob::new((mb * 1e6) as u64);
            job.epochs = options.epochs;
            serde_json::to_vec(&job).map_err(|e| DemoError::Output(e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    let n = jobs.len() as u64;
    progress(Progress::Total(n + 2 * n * u64::from(options.repeat)));

    // Size the function as its user must: run every input once, take the peak.
    let mut peak = 0;
    for job in &jobs {
        let sizing = platform.invoke_aggregated(&deployment, job, 0)?;
        peak = peak.max(sizing.usage.compute_peak_bytes());
        progress(Progress::Step);
    }
    let mut function_bytes = peak.div_ceil(FUNCTION_SIZE_STEP).max(1) * FUNCTION_SIZE_STEP;

    let mut measured: Vec<(Vec<InvocationReport>, Vec<InvocationReport>)> =
        jobs.iter().map(|_| (vec![], vec![])).collect();
    for round in 0..options.repeat {
        for (job, (resc, baseline)) in jobs.iter().zip(measured.iter_mut()) {
            // Alternate the order so that drift of the machine hits both modes alike.
            let run_resc = |platform: &EmbeddedPlatform, d: &Deployment| platform.invoke(d, job);
            if round % 2 == 0 {
                resc.push(run_resc(&platform, &deployment)?);
                progress(Progress::Step);
                baseline.push(platform.invoke_aggregated(&deployment, job, function_bytes)?);
            } else {
                baseline.push(platform.invoke_aggregated(&deployment, job, function_bytes)?);
                progress(Progress::Step);
                resc.push(run_resc(&platform, &deployment)?);
            }
            progress(Progress::Step);
        }
    }
    // The function must fit every run it served, measured ones included.
    let measured_peak =
        measured.iter().flat_map(|(_, b)| b.iter()).map(|r| r.usage.compute_peak_bytes()).max().unwrap_or(0);
    let exact_peak = peak.max(measured_peak);
    function_bytes = function_bytes.max(measured_peak.div_ceil(FUNCTION_SIZE_STEP) * FUNCTION_SIZE_STEP);

    let mut runs = Vec::new();
    let mut resc_peak = 0;
    let mut within_slot = true;
    for (&input_mb, (resc, baseline)) in options.inputs_mb.iter().zip(measured) {
        let (resc, resc_walls) = median_by_wall(resc);
        let (baseline, baseline_walls) = median_by_wall(baseline);
        let own_peak = baseline.usage.compute_peak_bytes();
        let baseline_usage = baseline.usage.with_compute_slot(function_bytes);
        let resc_figures = RunFigures::of(&resc.usage, resc.cache, resc.startup.clone());
        let baseline_figures = RunFigures::of(&baseline_usage, baseline.cache, Vec::new());
        resc_peak = resc_peak.max(resc_figures.compute_peak_bytes);
        within_slot &= resc.usage.components.iter().all(|c| !c.over_slot);
        let saving_against = |bytes: u64| {
            1.0 - resc_figures.allocated_gib_s / baseline.usage.with_compute_slot(bytes).total().allocated_gib_s
        };
        let saving_breakdown = SavingBreakdown {
            vs_exact_peak_over_inputs: saving_against(exact_peak),
            vs_own_exact_peak: saving_against(own_peak),
        };
        runs.push(LrRun {
            saving_breakdown,
            input_mb,
            saving: 1.0 - resc_figures.allocated_gib_s / baseline_figures.allocated_gib_s,
            overhead: resc_figures.wall_s / baseline_figures.wall_s - 1.0,
            accuracy_resc: accuracy(&resc)?,
            accuracy_baseline: accuracy(&baseline)?,
            resc: resc_figures,
            baseline: baseline_figures,
            walls_s: (resc_walls, baseline_walls),
        });
    }
    Ok(LrReport {
        slot_bytes: options.slot_bytes,
        memory_classes: classes.memory_classes().to_vec(),
        cache: options.cache,
        baseline_function_bytes: function_bytes,
        resc_compute_peak_bytes: resc_peak,
        within_slot,
        epochs: options.epochs,
        runs,
    })
}

/// Renders the report as text tables.
pub fn lr_table(report: &LrReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let classes = &report.memory_classes;
    let _ = writeln!(
        out,
        "ReSC platform: compute slot {} per instance, memory size classes {} … {}, cache {} of {} lines",
        format_bytes(report.slot_bytes),
        format_bytes(classes.first().copied().unwrap_or(0)),
        format_bytes(classes.last().copied().unwrap_or(0)),
        format_bytes(report.cache.capacity_bytes),
        format_bytes(report.cache.line_bytes),
    );
    let _ = writeln!(
        out,
        "  slot: the largest compute component peak measured was {}, its cache included ({}); code pieces stream their data in 1 MiB chunks, so a slot holds the cache ({}) and a chunk with room to spare. The paper's 256 MiB was sized for Python code pieces.",
        format_bytes(report.resc_compute_peak_bytes),
        if report.within_slot { "every instance stayed within its slot" } else { "SOME INSTANCE WENT OVER ITS SLOT" },
        format_bytes(report.cache.capacity_bytes),
    );
    let _ = writeln!(
        out,
        "  memory classes: the paper's 64 MiB … 1 GiB suit GB-scale data; this data set is tens of MB, so the classes are scaled down 64×."
    );
    let _ = writeln!(
        out,
        "Baseline: the same code pieces aggregated into one sandbox, provisioned at {} (peak over all inputs, rounded up to {}), held for the whole run.",
        format_bytes(report.baseline_function_bytes),
        format_bytes(FUNCTION_SIZE_STEP),
    );
    for run in &report.runs {
        let _ = writeln!(out, "\nLogistic regression, {} MB input, {} epochs", run.input_mb, report.epochs);
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>9}",
            "", "wall s", "cmp alloc", "cmp used", "mem alloc", "mem used", "waste", "accuracy"
        );
        for (name, f, acc) in
            [("ReSC", &run.resc, run.accuracy_resc), ("baseline", &run.baseline, run.accuracy_baseline)]
        {
            let _ = writeln!(
                out,
                "  {:<10} {:>8.3} {:>12.4} {:>12.4} {:>12.4} {:>12.4} {:>10.4} {:>9.4}",
                name,
                f.wall_s,
                f.compute.allocated_gib_s,
                f.compute.used_gib_s,
                f.memory.allocated_gib_s,
                f.memory.used_gib_s,
                f.waste_gib_s,
                acc
            );
        }
        let _ = writeln!(
            out,
            "  (GiB·s)   saving {:.1} % of allocated GiB·s, overhead {:+.1} % wall time (median of {} runs each)",
            run.saving * 100.0,
            run.overhead * 100.0,
            run.walls_s.0.len()
        );
        for trace in run.resc.startup.iter().filter(|t| t.connect_us.is_some()) {
            if let Some((from, to)) = trace.connect_us {
                let _ = writeln!(
                    out,
                    "  start of {}#{}: code ready at {:.0} µs; {} connection(s) set up from {:.0} to {:.0} µs{}",
                    trace.component,
                    trace.instance,
                    trace.code_ready_us,
                    trace.connections,
                    from,
                    to,
                    if trace.overlapped() { ", overlapping the code's start" } else { "" }
                );
            }
        }
        let _ = writeln!(
            out,
            "            without the {} size step the saving is {:.1} %; against a function sized exactly for this input alone, {:.1} %",
            format_bytes(FUNCTION_SIZE_STEP),
            run.saving_breakdown.vs_exact_peak_over_inputs * 100.0,
            run.saving_breakdown.vs_own_exact_peak * 100.0
        );
    }
    out
}

/// Options of `resc demo chain`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ChainOptions {
    /// How long each component sleeps.
    pub sleep_ms: u64,
    /// How many invocations.
    pub repeat: u32,
}

impl Default for ChainOptions {
    /// The paper's 100 ms per component, 5 invocations.
    fn default() -> Self {
        ChainOptions { sleep_ms: 100, repeat: 5 }
    }
}

/// One chain invocation's latency figures.
#[derive(Debug, Clone, Serialize)]
pub struct ChainRun {
    /// Which invocation (0 is the first, before anything was warm).
    pub round: u32,
    /// End-to-end latency, ms.
    pub end_to_end_ms: f64,
    /// Time inside the code pieces, summed, ms.
    pub compute_ms: f64,
    /// Platform overhead: end to end minus time inside code pieces, ms.
    pub overhead_ms: f64,
    /// Overhead per trigger (component start), µs.
    pub overhead_per_trigger_us: f64,
    /// The same chain aggregated into one sandbox: end-to-end latency, ms.
    pub baseline_end_to_end_ms: f64,
}

/// Everything `resc demo chain` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    /// Components in the chain.
    pub components: usize,
    /// Sleep per component, ms.
    pub sleep_ms: u64,
    /// One entry per invocation.
    pub runs: Vec<ChainRun>,
}

/// Runs the 10-component chain `repeat` times, as a graph and aggregated.
pub fn run_chain(options: &ChainOptions, progress: &mut dyn FnMut(Progress)) -> Result<ChainReport, DemoError> {
    let mut registry = CodeRegistry::new();
    apps::chain::register(&mut registry);
    let platform = EmbeddedPlatform::new(PlatformConfig::default(), registry)?;
    let deployment = platform.deploy(template::parse(CHAIN_TEMPLATE)?)?;
    let components = deployment.graph().compute_components().len();
    let job =
        serde_json::to_vec(&ChainJob { sleep_ms: options.sleep_ms }).map_err(|e| DemoError::Output(e.to_string()))?;
    progress(Progress::Total(2 * u64::from(options.repeat)));
    let mut runs = Vec::new();
    for round in 0..options.repeat {
        let resc = platform.invoke(&deployment, &job)?;
        progress(Progress::Step);
        let baseline = platform.invoke_aggregated(&deployment, &job, FUNCTION_SIZE_STEP)?;
        progress(Progress::Step);
        let end_to_end_ms = resc.wall.as_secs_f64() * 1e3;
        let compute_ms = resc.compute_wall.as_secs_f64() * 1e3;
        let overhead_ms = end_to_end_ms - compute_ms;
        runs.push(ChainRun {
            round,
            end_to_end_ms,
            compute_ms,
            overhead_ms,
            overhead_per_trigger_us: overhead_ms * 1e3 / components as f64,
            baseline_end_to_end_ms: baseline.wall.as_secs_f64() * 1e3,
        });
    }
    Ok(ChainReport { components, sleep_ms: options.sleep_ms, runs })
}

/// Renders the chain report as a text table.
pub fn chain_table(report: &ChainReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(out, "Chain of {} compute components, each sleeping {} ms", report.components, report.sleep_ms);
    let _ = writeln!(
        out,
        "  {:>5} {:>14} {:>12} {:>12} {:>20} {:>16}",
        "round", "end-to-end ms", "compute ms", "overhead ms", "per trigger µs", "aggregated ms"
    );
    for run in &report.runs {
        let _ = writeln!(
            out,
            "  {:>5} {:>14.2} {:>12.2} {:>12.3} {:>20.1} {:>16.2}",
            run.round,
            run.end_to_end_ms,
            run.compute_ms,
            run.overhead_ms,
            run.overhead_per_trigger_us,
            run.baseline_end_to_end_ms
        );
    }
    out
}
