//! `resc demo adjust`: the paper's Fig. 23–24 on synthetic memory profiles.
//!
//! Three kinds of application, as the paper picks from the Azure Functions
//! trace: mostly small, mostly large, and widely varying peak memory per
//! invocation. Each runs `invocations` times under three policies for its
//! one memory component:
//! - **fixed**: 256 MiB initial, 64 MiB increments (the paper's default);
//! - **peak**: the largest peak seen so far, rounded up to the smallest
//!   class, as one initial allocation (what provisioning for the peak does),
//!   64 MiB increments beyond it;
//! - **dynamic**: the [adjuster](super::adjust::memory_sizes), starting from
//!   the fixed sizes and re-sizing every K invocations from the EMA history.
//!
//! **The model is time-aware**, because that is what on-demand growth is for
//! (paper §5.2.1: no "upfront commitment of peak memory usage"; Fig. 19:
//! allocation follows usage as it grows). An invocation runs `run_ms` of
//! work; its memory component fills at a steady rate to its peak during the
//! first `fill_share` of the work and holds the peak until the end. The
//! component gets the initial size when the invocation starts and one
//! increment each time the data outgrows what it has; memory is held from
//! allocation until the invocation ends. Each growth step stalls the
//! invocation for `step_ms` while it holds what it has: 10 ms by default, to
//! place and allocate a physical memory component on a cluster (between the
//! embedded platform's well under 1 ms and a new RDMA connection's 34 ms,
//! paper §4.3).
//! - **Memory utilization** = Σ memory-time the work needs (the fill-up,
//!   then the peak, over the stall-free run) ÷ Σ memory-time allocated
//!   (including stalls). A stall lowers utilization: the memory held while
//!   the invocation waits does no work.
//! - **Slowdown** = growth steps × `step_ms` ÷ `run_ms`.
//!
//! Counting only the final allocation against the peak (a static model)
//! makes the fine 64 MiB increments of the fixed policy look nearly free;
//! it hides both the memory held while a large initial size waits to be
//! filled and the stalls of many small steps, which are the two sides of
//! the paper's trade-off. The report also re-runs the comparison at a
//! cheaper and a dearer growth step (2 ms and the paper's 34 ms QP setup),
//! since the step cost decides where the trade lands.

use super::adjust::memory_sizes;
use rand::SeedableRng;
use resc_core::resources::MIB;
use resc_core::size_class::SizeClasses;
use resc_core::usage::{Observation, UsageHistory};
use resc_sched::sim::LogNormal;
use serde::Serialize;

/// What to simulate.
#[derive(Debug, Clone, Serialize)]
pub struct AdjustDemoOptions {
    /// Invocations per application and policy.
    pub invocations: u32,
    /// The dynamic policy re-sizes every this many invocations (K).
    pub every: u32,
    /// EMA weight of the newest invocation.
    pub alpha: f64,
    /// Cost of one on-demand growth step, ms.
    pub step_ms: f64,
    /// An invocation's run time without growth, ms.
    pub run_ms: f64,
    /// Share of the run during which the memory component fills to its peak.
    pub fill_share: f64,
    /// Seed of the profiles.
    pub seed: u64,
}

impl Default for AdjustDemoOptions {
    fn default() -> Self {
        AdjustDemoOptions {
            invocations: 10_000,
            every: 100,
            alpha: 0.5,
            step_ms: 10.0,
            run_ms: 1000.0,
            fill_share: 0.5,
            seed: 23,
        }
    }
}

/// One application under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    /// `small`, `large` or `varying`.
    pub app: String,
    /// `fixed`, `peak` or `dynamic`.
    pub policy: String,
    /// Σ memory-time needed ÷ Σ memory-time allocated.
    pub utilization: f64,
    /// Memory-time needed, MiB·s.
    pub needed_mib_s: f64,
    /// Memory-time allocated, MiB·s.
    pub allocated_mib_s: f64,
    /// Mean growth steps per invocation.
    pub steps_per_invocation: f64,
    /// Mean slowdown from growth steps (0.01 = 1 %).
    pub slowdown: f64,
    /// Median peak need, MiB.
    pub median_need_mib: f64,
}

/// Everything the demo measured, with the check the issue sets.
#[derive(Debug, Clone, Serialize)]
pub struct AdjustReport {
    /// The settings.
    pub options: AdjustDemoOptions,
    /// Per application and policy.
    pub results: Vec<PolicyResult>,
    /// Utilization over all three applications together, per policy.
    pub overall: Vec<(String, f64)>,
    /// The bar: the dynamic policy beats fixed sizes on memory
    /// utilization, for every application.
    pub dynamic_beats_fixed: bool,
    /// The dynamic policy beats fixed sizes on utilization over the three
    /// applications together.
    pub dynamic_beats_fixed_overall: bool,
    /// Per application, whether the dynamic policy beats fixed sizes on
    /// utilization and on growth steps: (app, utilization, fewer steps).
    pub per_app: Vec<(String, bool, bool)>,
    /// The same comparison at other growth-step costs: (step_ms, app,
    /// fixed utilization, dynamic utilization).
    pub sensitivity: Vec<(f64, String, f64, f64)>,
}

/// A profile: peak memory needs per invocation, bytes.
fn needs(app: &str, n: u32, seed: u64) -> Vec<f64> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mib = MIB as f64;
    let draw: Box<dyn Fn(&mut rand::rngs::StdRng) -> f64> = match app {
        "small" => {
            let d = LogNormal::from_median_p90(60.0 * mib, 110.0 * mib);
            Box::new(move |r| d.sample(r))
        }
        "large" => {
            let d = LogNormal::from_median_p90(1200.0 * mib, 1700.0 * mib);
            Box::new(move |r| d.sample(r))
        }
        _ => Box::new(|r| rand::Rng::random_range(r, 32.0 * mib..2048.0 * mib)),
    };
    (0..n).map(|_| draw(&mut rng).max(mib)).collect()
}

/// One invocation needing `need` bytes at its peak under (initial,
/// increment): (memory-time needed, memory-time allocated, growth steps),
/// in bytes·ms, walking the growth steps of the model in the module docs.
fn invocation(need: f64, initial: u64, increment: u64, options: &AdjustDemoOptions) -> (f64, f64, u64) {
    let run = options.run_ms.max(0.0);
    let fill = run * options.fill_share.clamp(0.0, 1.0);
    let needed = need * (run - fill / 2.0);
    let increment = increment.max(1) as f64;
    let (mut have, mut allocated, mut since, mut steps) = (initial as f64, 0.0, 0.0, 0u64);
    while have < need {
        // Work time at which the data reaches what the component has.
        let full_at = if need > 0.0 { fill * have / need } else { 0.0 };
        allocated += have * (full_at - since) + have * options.step_ms;
        since = full_at;
        have += increment;
        steps += 1;
    }
    allocated += have * (run - since);
    (needed, allocated, steps)
}

fn simulate(
    app: &str,
    policy: &str,
    needs: &[f64],
    options: &AdjustDemoOptions,
    classes: &SizeClasses,
) -> PolicyResult {
    let (fixed_initial, fixed_increment) = (256 * MIB, 64 * MIB);
    let (mut initial, mut increment) = (fixed_initial, fixed_increment);
    let mut history = UsageHistory::new(options.alpha);
    let mut peak = 0.0f64;
    let (mut needed, mut allocated, mut steps) = (0.0, 0.0, 0u64);
    for (i, &need) in needs.iter().enumerate() {
        if policy == "peak" && i > 0 {
            // Several physical components when the peak passes the largest class.
            initial = (peak.ceil() as u64).div_ceil(classes.smallest()) * classes.smallest();
        }
        let (need_time, held, grew) = invocation(need, initial, increment, options);
        needed += need_time;
        allocated += held;
        steps += grew;
        peak = peak.max(need);
        history.fold([("m", Observation { memory_bytes: need, ..Observation::default() })]);
        if policy == "dynamic" && (i as u64 + 1) % u64::from(options.every.max(1)) == 0 {
            if let Some(h) = history.component("m") {
                (initial, increment) = memory_sizes(h, classes);
            }
        }
    }
    let n = needs.len().max(1) as f64;
    let mut sorted = needs.to_vec();
    sorted.sort_by(f64::total_cmp);
    PolicyResult {
        app: app.to_owned(),
        policy: policy.to_owned(),
        utilization: needed / allocated.max(1.0),
        needed_mib_s: needed / MIB as f64 / 1000.0,
        allocated_mib_s: allocated / MIB as f64 / 1000.0,
        steps_per_invocation: steps as f64 / n,
        slowdown: steps as f64 / n * options.step_ms / options.run_ms,
        median_need_mib: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) / MIB as f64,
    }
}

const APPS: [&str; 3] = ["small", "large", "varying"];
const POLICIES: [&str; 3] = ["fixed", "peak", "dynamic"];

fn results(options: &AdjustDemoOptions, classes: &SizeClasses) -> Vec<PolicyResult> {
    let mut results = Vec::new();
    for (k, app) in APPS.into_iter().enumerate() {
        let needs = needs(app, options.invocations, options.seed + k as u64);
        for policy in POLICIES {
            results.push(simulate(app, policy, &needs, options, classes));
        }
    }
    results
}

fn find<'a>(results: &'a [PolicyResult], app: &str, policy: &str) -> Option<&'a PolicyResult> {
    results.iter().find(|r| r.app == app && r.policy == policy)
}

/// Runs the three applications under the three policies.
pub fn run(options: &AdjustDemoOptions) -> AdjustReport {
    // 64 MiB … 1 GiB, the paper's classes.
    let classes = SizeClasses::default();
    let results = results(options, &classes);
    let utilization = |app: &str, policy: &str| find(&results, app, policy).map_or(0.0, |r| r.utilization);
    let steps = |app: &str, policy: &str| find(&results, app, policy).map_or(f64::INFINITY, |r| r.steps_per_invocation);
    let per_app: Vec<(String, bool, bool)> = APPS
        .iter()
        .map(|&app| {
            (
                app.to_owned(),
                utilization(app, "dynamic") > utilization(app, "fixed"),
                steps(app, "dynamic") < steps(app, "fixed"),
            )
        })
        .collect();
    let overall: Vec<(String, f64)> = POLICIES
        .iter()
        .map(|&policy| {
            let (needed, allocated) = results
                .iter()
                .filter(|r| r.policy == policy)
                .fold((0.0, 0.0), |(n, a), r| (n + r.needed_mib_s, a + r.allocated_mib_s));
            (policy.to_owned(), needed / allocated.max(f64::MIN_POSITIVE))
        })
        .collect();
    let overall_of = |policy: &str| overall.iter().find(|(p, _)| p == policy).map_or(0.0, |(_, u)| *u);
    let dynamic_beats_fixed = per_app.iter().all(|(_, utilization, _)| *utilization);
    let dynamic_beats_fixed_overall = overall_of("dynamic") > overall_of("fixed");
    let mut sensitivity = Vec::new();
    for step_ms in [2.0, 34.0] {
        let other = results_at(options, step_ms, &classes);
        for app in APPS {
            let u = |policy| find(&other, app, policy).map_or(0.0, |r| r.utilization);
            sensitivity.push((step_ms, app.to_owned(), u("fixed"), u("dynamic")));
        }
    }
    AdjustReport {
        options: options.clone(),
        results,
        overall,
        dynamic_beats_fixed,
        dynamic_beats_fixed_overall,
        per_app,
        sensitivity,
    }
}

fn results_at(options: &AdjustDemoOptions, step_ms: f64, classes: &SizeClasses) -> Vec<PolicyResult> {
    results(&AdjustDemoOptions { step_ms, ..options.clone() }, classes)
}

/// Renders the report as text.
pub fn table(report: &AdjustReport) -> String {
    use std::fmt::Write;
    let o = &report.options;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} invocations per application; dynamic re-sizes every {} (EMA α = {}); memory fills over the first {:.0} % \
         of a {} ms run; a growth step stalls {} ms",
        o.invocations,
        o.every,
        o.alpha,
        o.fill_share * 100.0,
        o.run_ms,
        o.step_ms
    );
    let _ = writeln!(out, "app       median MiB  policy    utilization  steps/inv  slowdown");
    for r in &report.results {
        let _ = writeln!(
            out,
            "{:<9} {:>10.0}  {:<8} {:>11.3} {:>10.2} {:>8.2} %",
            r.app,
            r.median_need_mib,
            r.policy,
            r.utilization,
            r.steps_per_invocation,
            r.slowdown * 100.0
        );
    }
    let overall: Vec<String> = report.overall.iter().map(|(p, u)| format!("{p} {u:.3}")).collect();
    let _ = writeln!(out, "overall utilization (all three applications' memory-time): {}", overall.join(", "));
    for (app, utilization, steps) in &report.per_app {
        let said = |yes: bool, what: &str| {
            if yes {
                format!("beats fixed on {what}")
            } else {
                format!("does NOT beat fixed on {what}")
            }
        };
        let _ = writeln!(out, "{app}: dynamic {}, {}", said(*utilization, "utilization"), said(*steps, "growth steps"));
    }
    for (step_ms, app, fixed, dynamic) in &report.sensitivity {
        let _ = writeln!(out, "at {step_ms} ms a step: {app:<8} utilization fixed {fixed:.3}, dynamic {dynamic:.3}");
    }
    let verdict = |yes: bool| if yes { "reached" } else { "NOT reached" };
    let _ = writeln!(
        out,
        "bar: the dynamic policy beats fixed sizes on memory utilization for every application: {}; overall: {}",
        verdict(report.dynamic_beats_fixed),
        verdict(report.dynamic_beats_fixed_overall)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> AdjustDemoOptions {
        AdjustDemoOptions { run_ms: 1000.0, step_ms: 10.0, fill_share: 0.5, ..AdjustDemoOptions::default() }
    }

    #[test]
    fn an_invocation_that_fits_holds_its_initial_size_for_the_run() {
        let (needed, allocated, steps) = invocation(100.0, 256, 64, &options());
        assert_eq!(steps, 0);
        assert_eq!(allocated, 256.0 * 1000.0);
        assert_eq!(needed, 100.0 * 750.0, "fills over the first 500 ms, then holds");
    }

    #[test]
    fn growth_steps_hold_each_level_until_the_next_and_stall() {
        // 256 → 320 → 384: full at 256 (t = 333⅓ ms), at 320 (t = 416⅔ ms).
        let (_, allocated, steps) = invocation(384.0, 256, 64, &options());
        assert_eq!(steps, 2);
        let expected = 256.0 * (1000.0 / 3.0 + 10.0) + 320.0 * (250.0 / 3.0 + 10.0) + 384.0 * (1750.0 / 3.0);
        assert!((allocated - expected).abs() < 1e-6, "{allocated} vs {expected}");
        // Without a fill-up (the data is there at once) only the stalls and rounding remain.
        let at_once = AdjustDemoOptions { fill_share: 0.0, ..options() };
        let (needed, allocated, _) = invocation(384.0, 256, 64, &at_once);
        assert_eq!((needed, allocated), (384.0 * 1000.0, 256.0 * 10.0 + 320.0 * 10.0 + 384.0 * 1000.0));
    }

    #[test]
    fn every_application_and_policy_is_reported() {
        let report = run(&AdjustDemoOptions { invocations: 300, every: 50, ..AdjustDemoOptions::default() });
        assert_eq!(report.results.len(), 9);
        assert!(report.results.iter().all(|r| r.utilization > 0.0 && r.utilization <= 1.0));
        // Peak provisioning never grows after the first invocation's peak.
        let peak_small = find(&report.results, "small", "peak").map(|r| r.steps_per_invocation);
        assert!(peak_small.is_some_and(|s| s < 1.0));
        assert_eq!(report.sensitivity.len(), 6);
    }

    #[test]
    fn the_dynamic_policy_beats_fixed_sizes() {
        for seed in [23, 1, 2] {
            the_dynamic_policy_beats_fixed_sizes_with(seed);
        }
    }

    fn the_dynamic_policy_beats_fixed_sizes_with(seed: u64) {
        let report = run(&AdjustDemoOptions { invocations: 3000, seed, ..AdjustDemoOptions::default() });
        let get = |app, policy| find(&report.results, app, policy).expect("reported").clone();
        for app in APPS {
            let (fixed, dynamic) = (get(app, "fixed"), get(app, "dynamic"));
            assert!(dynamic.utilization > fixed.utilization, "{app}: {dynamic:?} vs {fixed:?}");
        }
        for app in ["large", "varying"] {
            let (fixed, dynamic) = (get(app, "fixed"), get(app, "dynamic"));
            assert!(
                dynamic.steps_per_invocation < 0.5 * fixed.steps_per_invocation,
                "{app}: far fewer steps: {dynamic:?} vs {fixed:?}"
            );
        }
        // The small application trades: fixed 256 MiB never grows, dynamic
        // starts at 64 MiB and grows about every other invocation.
        assert!(get("small", "dynamic").steps_per_invocation < 1.0);
        assert!(report.dynamic_beats_fixed && report.dynamic_beats_fixed_overall);
        assert!(table(&report).contains("every application: reached"));
    }
}
