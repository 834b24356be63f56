//! `resc bench swap`: the paper's Fig. 20 on this machine, measured by
//! `resc_swap::bench` (arrays of 0.5–2 GiB read through a far-memory region
//! with 200 or 400 MiB local, against the same reads all local), with the
//! eviction and fault-handler comparisons.

use resc_swap::bench::BenchReport;

/// Renders the report as text, with the bars at 1 GiB and 200 MiB.
pub fn table(report: &BenchReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ =
        writeln!(out, "array MiB  local MiB  pattern       work        seconds  all local  overhead   faults  regime");
    for c in &report.cases {
        let _ = writeln!(
            out,
            "{:>9} {:>10}  {:<13} {:<10} {:>8.3} {:>10.3} {:>8.1} % {:>8}  {}",
            c.array_mib,
            c.local_mib,
            c.pattern.name(),
            format!("{:?}", c.work).to_lowercase(),
            c.seconds,
            c.seconds_all_local,
            c.overhead * 100.0,
            c.faults,
            c.regime
        );
    }
    for e in &report.eviction {
        let _ = writeln!(out, "eviction {:?} on {}: {:.3} s", e.eviction, e.workload, e.seconds);
    }
    for h in &report.handler {
        let _ = writeln!(out, "handler {:?} on {}: overhead {:.1} %", h.handler, h.pattern.name(), h.overhead * 100.0);
    }
    for (pattern, bar) in [("seq", 0.30), ("block-random", 1.00)] {
        let case = report.cases.iter().find(|c| {
            c.array_mib == 1024
                && c.local_mib == 200
                && c.pattern.name() == pattern
                && format!("{:?}", c.work).to_lowercase() == "compute"
        });
        if let Some(c) = case {
            let verdict = if c.overhead <= bar { "reached" } else { "NOT reached" };
            let _ = writeln!(
                out,
                "bar: {pattern} at 1 GiB with 200 MiB local: {:.1} % (at most {:.0} %): {verdict}",
                c.overhead * 100.0,
                bar * 100.0
            );
        }
    }
    out
}
