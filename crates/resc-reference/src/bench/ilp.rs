//! `resc bench ilp`: the aggregation ILP solved by `resc-ilp` and, side by
//! side on the same instances, by python-mip (CBC), OR-Tools and HiGHS
//! through `scripts/ilp_baselines.py` (a solver whose package is missing is
//! reported as skipped).

use resc_ilp::bench::{self, BenchOptions, BenchReport, PythonBaselines};
use std::path::PathBuf;

/// The baseline script of this repository.
pub fn default_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/ilp_baselines.py")
}

/// Runs the benchmark; `script: None` leaves the Python solvers out.
pub fn run(
    options: &BenchOptions,
    script: Option<PathBuf>,
    progress: &mut dyn FnMut(&str),
) -> Result<BenchReport, resc_ilp::IlpError> {
    let mut python = script.map(PythonBaselines::new);
    let runner = python.as_mut().map(|p| p as &mut dyn bench::BaselineRunner);
    bench::run(options, runner, progress)
}

/// Renders the report as text.
pub fn table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let fmt = |v: Option<f64>, digits: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"));
    let mut out = String::new();
    let _ = writeln!(out, "     n   k  kind                 solver      median ms          objective       gap");
    for r in &report.results {
        let _ = write!(
            out,
            "{:>6} {:>3}  {:<20} {:<10} {:>10} {:>18} {:>9}",
            r.n,
            r.k,
            r.kind,
            r.solver,
            fmt(r.median_ms, 2),
            fmt(r.objective, 0),
            fmt(r.gap, 6)
        );
        if let Some(why) = &r.skipped {
            let _ = write!(out, "  skipped: {why}");
        }
        let _ = writeln!(out);
    }
    for c in &report.checks {
        let kind = if c.goal { "goal" } else { "bar" };
        let verdict = if c.passed { "reached" } else { "NOT reached" };
        let _ = writeln!(out, "{kind}: {}: {verdict} ({})", c.name, c.detail);
    }
    out
}
