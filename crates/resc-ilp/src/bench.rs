//! Measurements for `resc bench ilp --json`: our solver and the Python
//! baselines (python-mip with CBC, OR-Tools CP-SAT, HiGHS) side by side on
//! the same seeded instances, in one run.
//!
//! Unlike the rest of the crate, these functions read the clock. Our time
//! is the median over [`BenchOptions::repetitions`] calls of
//! [`AggregationProblem::solve`], which includes building the instance
//! from the candidates' communication matrices and usage vectors
//! (validation, savings, totals, overlap detection). The baselines' time,
//! measured by `scripts/ilp_baselines.py`, likewise includes computing the
//! savings and totals from the matrices (with numpy) and building the model;
//! only parsing the JSON is excluded on both sides.
//!
//! The baselines run through a [`BaselineRunner`]: the crate builds the
//! request (JSON, [`baseline_request`]) and parses the answer
//! ([`parse_baseline_output`]); the runner carries it to the script. With
//! the `python` feature, `PythonBaselines` runs `python3 <script>` as a
//! child process. A baseline whose Python package is missing is reported as
//! skipped, with the reason; so is every baseline when the runner fails.
//!
//! ```
//! use resc_ilp::bench::{self, BenchOptions};
//! let report = bench::run(&BenchOptions::quick(), None, &mut |_| {})?;
//! let ours = report.results.iter().find(|r| r.solver == "resc").expect("measured");
//! assert!(ours.median_ms.is_some() && ours.gap.is_some());
//! let json = serde_json::to_string(&report).expect("serializable");
//! assert!(json.contains("\"median_ms\""));
//! # Ok::<(), resc_ilp::IlpError>(())
//! ```

use crate::generate::{aggregation_instance, InstanceKind, InstanceSpec};
use crate::model::{AggregationProblem, Capacity, CommMatrix, SolveOptions};
use crate::IlpError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Our solver's name in the results.
pub const RESC: &str = "resc";

/// The baseline solvers `scripts/ilp_baselines.py` runs, by the names the
/// results use.
pub const BASELINES: [&str; 3] = ["python-mip-cbc", "ortools-cpsat", "highspy"];

/// What to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchOptions {
    /// The instances (all disjoint-candidate aggregation problems).
    pub instances: Vec<InstanceSpec>,
    /// Timed solves per instance, ours.
    pub repetitions: u32,
    /// Timed solves per instance and baseline.
    pub baseline_repetitions: u32,
    /// Time limit of every solve, ours and the baselines'.
    pub time_limit: Duration,
    /// Relative gap every solver stops at (0: prove optimality).
    pub rel_gap: f64,
}

impl Default for BenchOptions {
    /// The issue's instances: 10,000 × 32 and 1,000 × 32, random and
    /// strongly correlated (seed 1); 21 solves of ours, 3 of each
    /// baseline, 10 s limit, gap 0.
    fn default() -> Self {
        let mut instances = Vec::new();
        for n in [10_000, 1_000] {
            for kind in [InstanceKind::Random, InstanceKind::StronglyCorrelated] {
                instances.push(InstanceSpec::new(n, 32, kind, 1));
            }
        }
        BenchOptions {
            instances,
            repetitions: 21,
            baseline_repetitions: 3,
            time_limit: Duration::from_secs(10),
            rel_gap: 0.0,
        }
    }
}

impl BenchOptions {
    /// A smoke test: 200 × 8, both kinds, 3 solves, 1 baseline solve.
    pub fn quick() -> Self {
        BenchOptions {
            instances: vec![
                InstanceSpec::new(200, 8, InstanceKind::Random, 1),
                InstanceSpec::new(200, 8, InstanceKind::StronglyCorrelated, 1),
            ],
            repetitions: 3,
            baseline_repetitions: 1,
            time_limit: Duration::from_secs(5),
            rel_gap: 0.0,
        }
    }
}

/// One instance and solver: the JSON object of `resc bench ilp --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// Candidates.
    pub n: usize,
    /// Components per candidate.
    pub k: usize,
    /// `random` or `strongly-correlated`.
    pub kind: String,
    /// The instance's seed.
    pub seed: u64,
    /// `resc` (ours) or a baseline's name.
    pub solver: String,
    /// Median wall-clock time of one solve, building included, ms; `null`
    /// when skipped.
    pub median_ms: Option<f64>,
    /// Fastest solve, ms.
    #[serde(default)]
    pub min_ms: Option<f64>,
    /// The communication left over (bytes; lower is better).
    pub objective: Option<f64>,
    /// The solver's proven lower bound on the communication left over.
    #[serde(default)]
    pub bound: Option<f64>,
    /// `(objective − bound) / max(objective, 1)`.
    pub gap: Option<f64>,
    /// Whether the solver proved optimality.
    #[serde(default)]
    pub optimal: Option<bool>,
    /// Timed solves.
    #[serde(default)]
    pub runs: u32,
    /// Why the solver did not run (a missing package, a failed runner).
    #[serde(default)]
    pub skipped: Option<String>,
    /// The solver's version, when known.
    #[serde(default)]
    pub version: Option<String>,
    /// The solver's own status, or what went wrong with its answer.
    #[serde(default)]
    pub note: Option<String>,
}

impl BenchRecord {
    fn skipped(spec: &InstanceSpec, solver: &str, reason: &str) -> Self {
        BenchRecord {
            n: spec.n,
            k: spec.k,
            kind: spec.kind.to_string(),
            seed: spec.seed,
            solver: solver.to_string(),
            median_ms: None,
            min_ms: None,
            objective: None,
            bound: None,
            gap: None,
            optimal: None,
            runs: 0,
            skipped: Some(reason.to_string()),
            version: None,
            note: None,
        }
    }
}

/// One of the issue's bars, checked on a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchCheck {
    /// What is checked.
    pub name: String,
    /// Whether it holds (vacuously true when nothing was measured for it).
    pub passed: bool,
    /// The figures behind the verdict.
    pub detail: String,
    /// A goal rather than a bar.
    pub goal: bool,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// One object per instance and solver.
    pub results: Vec<BenchRecord>,
    /// The bars and goals, checked on `results`.
    pub checks: Vec<BenchCheck>,
}

/// Carries a baseline request (JSON) to the baseline solvers and brings back
/// their answer (JSON).
pub trait BaselineRunner {
    /// Runs the request; `Err` says why nothing ran.
    ///
    /// # Errors
    /// A human-readable reason: every baseline is then reported as skipped
    /// with it.
    fn run(&mut self, request: &str) -> Result<String, String>;
}

/// Runs `scripts/ilp_baselines.py` as a child process (feature `python`).
#[cfg(feature = "python")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PythonBaselines {
    /// The interpreter (default `python3`).
    pub python: std::path::PathBuf,
    /// The script.
    pub script: std::path::PathBuf,
}

#[cfg(feature = "python")]
impl PythonBaselines {
    /// `python3 <script>`.
    pub fn new(script: impl Into<std::path::PathBuf>) -> Self {
        PythonBaselines { python: "python3".into(), script: script.into() }
    }
}

#[cfg(feature = "python")]
impl BaselineRunner for PythonBaselines {
    fn run(&mut self, request: &str) -> Result<String, String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(&self.python)
            .arg(&self.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} {}: {e}", self.python.display(), self.script.display()))?;
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let body = request.to_owned();
        let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
        let out = child.wait_with_output().map_err(|e| format!("waiting for the baseline script: {e}"))?;
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("writing the request: {e}")),
            Err(_) => return Err("the request writer panicked".into()),
        }
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let tail: String =
                err.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join(" | ");
            return Err(format!("the baseline script failed ({}): {tail}", out.status));
        }
        String::from_utf8(out.stdout).map_err(|e| format!("the baseline script's output is not UTF-8: {e}"))
    }
}

#[derive(Serialize)]
struct RequestCandidate<'a> {
    cpu: &'a [u64],
    memory: &'a [u64],
    communication: &'a CommMatrix,
}

#[derive(Serialize)]
struct RequestInstance<'a> {
    n: usize,
    k: usize,
    kind: String,
    seed: u64,
    capacity: Capacity,
    candidates: Vec<RequestCandidate<'a>>,
}

#[derive(Serialize)]
struct Request<'a> {
    time_limit_s: f64,
    repetitions: u32,
    rel_gap: f64,
    solvers: &'a [&'a str],
    instances: Vec<RequestInstance<'a>>,
}

/// The JSON request for the baseline script: the options and, per
/// instance, the capacity and each candidate's `cpu`, `memory` and
/// `communication` (`[from, to, bytes]` triples). Component identities are
/// left out: benchmark candidates are disjoint.
///
/// # Errors
/// Never in practice (the types serialize); a serializer error is passed on.
pub fn baseline_request(
    instances: &[(InstanceSpec, &AggregationProblem)],
    options: &BenchOptions,
) -> Result<String, String> {
    let request = Request {
        time_limit_s: options.time_limit.as_secs_f64(),
        repetitions: options.baseline_repetitions,
        rel_gap: options.rel_gap,
        solvers: &BASELINES,
        instances: instances
            .iter()
            .map(|(spec, problem)| RequestInstance {
                n: spec.n,
                k: spec.k,
                kind: spec.kind.to_string(),
                seed: spec.seed,
                capacity: problem.balanced_capacity,
                candidates: problem
                    .candidates
                    .iter()
                    .map(|c| RequestCandidate { cpu: &c.cpu, memory: &c.memory, communication: &c.communication })
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string(&request).map_err(|e| e.to_string())
}

/// Parses the baseline script's answer: a JSON array of [`BenchRecord`]s.
///
/// # Errors
/// A description of the malformed JSON.
pub fn parse_baseline_output(json: &str) -> Result<Vec<BenchRecord>, String> {
    serde_json::from_str(json).map_err(|e| format!("malformed baseline output: {e}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len();
    if m == 0 {
        f64::NAN
    } else if m % 2 == 1 {
        v[m / 2]
    } else {
        0.5 * (v[m / 2 - 1] + v[m / 2])
    }
}

/// Times our solver on one instance: `repetitions` solves after one
/// warm-up.
///
/// # Errors
/// A malformed instance.
pub fn measure_resc(
    spec: &InstanceSpec,
    problem: &AggregationProblem,
    repetitions: u32,
    options: &SolveOptions,
) -> Result<BenchRecord, IlpError> {
    let mut last = problem.solve(options)?;
    let mut times = Vec::with_capacity(repetitions as usize);
    for _ in 0..repetitions.max(1) {
        let t = Instant::now();
        last = problem.solve(options)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let min = times.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(BenchRecord {
        n: spec.n,
        k: spec.k,
        kind: spec.kind.to_string(),
        seed: spec.seed,
        solver: RESC.to_string(),
        median_ms: Some(median(&mut times)),
        min_ms: Some(min),
        objective: Some(last.objective),
        bound: Some(last.bound),
        gap: Some(last.gap),
        optimal: Some(last.optimal),
        runs: times.len() as u32,
        skipped: None,
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
        note: Some(format!("{:?}, {:?}", last.status, last.method)),
    })
}

/// Measures every instance with our solver and, when a runner is given,
/// the baselines; then checks the bars.
///
/// # Errors
/// A malformed generated instance (a bug). Baseline failures are not
/// errors: those solvers are reported as skipped.
pub fn run(
    options: &BenchOptions,
    baselines: Option<&mut dyn BaselineRunner>,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, IlpError> {
    let solve_options = SolveOptions::default().with_time_limit(options.time_limit).with_rel_gap(options.rel_gap);
    let mut problems = Vec::with_capacity(options.instances.len());
    for spec in &options.instances {
        progress(&format!("generating {} x {} {}", spec.n, spec.k, spec.kind));
        problems.push((*spec, aggregation_instance(spec)));
    }
    let mut results = Vec::new();
    for (spec, problem) in &problems {
        progress(&format!("resc on {} x {} {}", spec.n, spec.k, spec.kind));
        results.push(measure_resc(spec, problem, options.repetitions, &solve_options)?);
    }
    if let Some(runner) = baselines {
        progress("the Python baselines");
        let borrowed: Vec<(InstanceSpec, &AggregationProblem)> = problems.iter().map(|(s, p)| (*s, p)).collect();
        let answer = baseline_request(&borrowed, options)
            .and_then(|request| runner.run(&request))
            .and_then(|out| parse_baseline_output(&out));
        match answer {
            Ok(records) => {
                // Keep the script's records for our instances; report any
                // baseline it left out as skipped.
                for (spec, _) in &problems {
                    for solver in BASELINES {
                        let found = records.iter().find(|r| {
                            r.solver == solver && r.n == spec.n && r.k == spec.k && r.kind == spec.kind.to_string()
                        });
                        results.push(match found {
                            Some(r) => r.clone(),
                            None => BenchRecord::skipped(spec, solver, "no result from the baseline script"),
                        });
                    }
                }
            }
            Err(reason) => {
                for (spec, _) in &problems {
                    for solver in BASELINES {
                        results.push(BenchRecord::skipped(spec, solver, &reason));
                    }
                }
            }
        }
    }
    let checks = checks(&results);
    Ok(BenchReport { results, checks })
}

/// The issue's bars and goals, checked on a run's records:
///
/// * bar: on every 10,000-candidate instance our median is ≤ 15 ms and our
///   gap ≤ 1e-4;
/// * bar: on every instance our objective is no worse than the best
///   baseline's (within half a byte);
/// * goal: our median ≤ 5 ms on 10,000 candidates;
/// * goal: ≥ 10× faster than the fastest baseline, per instance.
pub fn checks(records: &[BenchRecord]) -> Vec<BenchCheck> {
    let ours: Vec<&BenchRecord> = records.iter().filter(|r| r.solver == RESC && r.skipped.is_none()).collect();
    let big: Vec<&&BenchRecord> = ours.iter().filter(|r| r.n >= 10_000).collect();
    let label = |r: &BenchRecord| format!("{}x{} {}", r.n, r.k, r.kind);
    let mut out = Vec::new();
    let bar15 = big.iter().all(|r| r.median_ms.is_some_and(|m| m <= 15.0) && r.gap.is_some_and(|g| g <= 1e-4));
    out.push(BenchCheck {
        name: "resc median <= 15 ms and gap <= 1e-4 on 10,000 candidates".into(),
        passed: bar15,
        detail: big
            .iter()
            .map(|r| {
                format!(
                    "{}: {:.2} ms, gap {:.1e}",
                    label(r),
                    r.median_ms.unwrap_or(f64::NAN),
                    r.gap.unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        goal: false,
    });
    let peers = |r: &BenchRecord| -> Vec<&BenchRecord> {
        records
            .iter()
            .filter(|b| {
                b.solver != RESC
                    && b.skipped.is_none()
                    && b.n == r.n
                    && b.k == r.k
                    && b.kind == r.kind
                    && b.seed == r.seed
            })
            .collect()
    };
    let mut detail = Vec::new();
    let mut not_worse = true;
    for r in &ours {
        let best = peers(r).iter().filter_map(|b| b.objective).fold(f64::INFINITY, f64::min);
        if best.is_finite() {
            let mine = r.objective.unwrap_or(f64::INFINITY);
            not_worse &= mine <= best + 0.5;
            detail.push(format!("{}: {mine} vs best baseline {best}", label(r)));
        }
    }
    out.push(BenchCheck {
        name: "resc objective never worse than the best baseline's".into(),
        passed: not_worse,
        detail: if detail.is_empty() { "no baseline ran".into() } else { detail.join("; ") },
        goal: false,
    });
    out.push(BenchCheck {
        name: "goal: resc median <= 5 ms on 10,000 candidates".into(),
        passed: big.iter().all(|r| r.median_ms.is_some_and(|m| m <= 5.0)),
        detail: big
            .iter()
            .map(|r| format!("{}: {:.2} ms", label(r), r.median_ms.unwrap_or(f64::NAN)))
            .collect::<Vec<_>>()
            .join("; "),
        goal: true,
    });
    let mut detail = Vec::new();
    let mut fast = true;
    for r in &ours {
        let fastest = peers(r).iter().filter_map(|b| b.median_ms).fold(f64::INFINITY, f64::min);
        if let (true, Some(m)) = (fastest.is_finite(), r.median_ms) {
            let speedup = fastest / m.max(1e-9);
            fast &= speedup >= 10.0;
            detail.push(format!("{}: {speedup:.0}x", label(r)));
        }
    }
    out.push(BenchCheck {
        name: "goal: resc >= 10x faster than the fastest baseline".into(),
        passed: fast,
        detail: if detail.is_empty() { "no baseline ran".into() } else { detail.join("; ") },
        goal: true,
    });
    out
}
