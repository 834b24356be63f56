//! Runs the `resc bench ilp` measurement: ours and the Python baselines.
//!
//! ```text
//! cargo run --release -p resc-ilp --features python --example ilp_bench -- \
//!     [--quick] [--no-python] [--script scripts/ilp_baselines.py]
//! ```
//!
//! Prints the report as JSON on stdout and a summary on stderr.

use resc_ilp::bench::{self, BaselineRunner, BenchOptions, PythonBaselines};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let no_python = args.iter().any(|a| a == "--no-python");
    let script = args
        .iter()
        .position(|a| a == "--script")
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/ilp_baselines.py").to_string());
    let options = if quick { BenchOptions::quick() } else { BenchOptions::default() };
    let mut runner = PythonBaselines::new(script);
    let baselines: Option<&mut dyn BaselineRunner> = if no_python { None } else { Some(&mut runner) };
    let report = bench::run(&options, baselines, &mut |what| eprintln!("... {what}"))?;
    for r in &report.results {
        eprintln!(
            "{:>6} x {:<3} {:<20} {:<15} median {:>10} ms  objective {:>18}  gap {:>9}  {}",
            r.n,
            r.k,
            r.kind,
            r.solver,
            r.median_ms.map_or("-".into(), |m| format!("{m:.3}")),
            r.objective.map_or("-".into(), |o| format!("{o:.0}")),
            r.gap.map_or("-".into(), |g| format!("{g:.1e}")),
            r.skipped.as_deref().unwrap_or(""),
        );
    }
    for c in &report.checks {
        eprintln!("[{}] {}: {}", if c.passed { "pass" } else { "FAIL" }, c.name, c.detail);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
