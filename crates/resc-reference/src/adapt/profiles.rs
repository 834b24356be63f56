//! `resc demo adjust`: the paper's Fig. 23–24 on synthetic memory profiles.
//!
//! Three kinds of application, as the paper picks from the Azure Functions
//! trace: mostly small, mostly large, and widely varying peak memory per
//! invocation. Each runs `invocations` times under three policies for its
//! one memory component:
//! - **fixed**: 256 MiB initial, 64 MiB increments (the paper's default);
//! - **peak**: the largest peak seen so far, as one initial allocation
//!   (what provisioning for the peak does), 64 MiB increments beyond it;
//! - **dynamic**: the [adjuster](super::adjust), starting from the fixed
//!   sizes and re-sizing every K invocations from the usage history.
//!
//! An invocation that needs `n` bytes gets the initial size, then as many
//! increments as it takes. **Memory utilization** is Σ needed ÷ Σ allocated.
//! **Slowdown** counts the growth steps: each one waits for a physical
//! component to be placed and allocated on demand, `step_ms` each (an input:
//! on the embedded platform a step takes well under a millisecond, on a
//! cluster a network round trip to the memory controller), relative to an
//! invocation of `run_ms`.

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
    /// Seed of the profiles.
    pub seed: u64,
}

impl Default for AdjustDemoOptions {
    fn default() -> Self {
        AdjustDemoOptions { invocations: 10_000, every: 100, alpha: 0.5, step_ms: 2.0, run_ms: 1000.0, seed: 23 }
    }
}

/// One application under one policy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyResult {
    /// `small`, `large` or `varying`.
    pub app: String,
    /// `fixed`, `peak` or `dynamic`.
    pub policy: String,
    /// Σ needed ÷ Σ allocated.
    pub utilization: f64,
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
    /// Whether the dynamic policy beats fixed sizes on utilization for every application.
    pub dynamic_beats_fixed: bool,
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

/// Bytes allocated and growth steps for a need under (initial, increment).
fn allocation(need: f64, initial: u64, increment: u64) -> (f64, u64) {
    if need <= initial as f64 {
        return (initial as f64, 0);
    }
    let steps = ((need - initial as f64) / increment.max(1) as f64).ceil() as u64;
    (initial as f64 + (steps * increment) as f64, steps)
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
            initial = classes.round_up(peak.ceil() as u64);
        }
        let (bytes, grew) = allocation(need, initial, increment);
        needed += need;
        allocated += bytes;
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
        steps_per_invocation: steps as f64 / n,
        slowdown: steps as f64 / n * options.step_ms / options.run_ms,
        median_need_mib: sorted.get(sorted.len() / 2).copied().unwrap_or(0.0) / MIB as f64,
    }
}

/// Runs the three applications under the three policies.
pub fn run(options: &AdjustDemoOptions) -> AdjustReport {
    // 64 MiB … 1 GiB, the paper's classes.
    let classes = SizeClasses::default();
    let mut results = Vec::new();
    for (k, app) in ["small", "large", "varying"].into_iter().enumerate() {
        let needs = needs(app, options.invocations, options.seed + k as u64);
        for policy in ["fixed", "peak", "dynamic"] {
            results.push(simulate(app, policy, &needs, options, &classes));
        }
    }
    let utilization = |app: &str, policy: &str| {
        results.iter().find(|r| r.app == app && r.policy == policy).map_or(0.0, |r| r.utilization)
    };
    let dynamic_beats_fixed =
        ["small", "large", "varying"].iter().all(|app| utilization(app, "dynamic") > utilization(app, "fixed"));
    AdjustReport { options: options.clone(), results, dynamic_beats_fixed }
}

/// Renders the report as text.
pub fn table(report: &AdjustReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} invocations per application; dynamic re-sizes every {}; a growth step costs {} ms of a {} ms run",
        report.options.invocations, report.options.every, report.options.step_ms, report.options.run_ms
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
    let verdict = if report.dynamic_beats_fixed { "reached" } else { "NOT reached" };
    let _ = writeln!(
        out,
        "bar: the dynamic policy beats fixed sizes on memory utilization for every application: {verdict}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocation_adds_whole_increments() {
        assert_eq!(allocation(100.0, 256, 64), (256.0, 0));
        assert_eq!(allocation(257.0, 256, 64), (320.0, 1));
        assert_eq!(allocation(400.0, 256, 64), (448.0, 3));
    }

    #[test]
    fn every_application_and_policy_is_reported() {
        let report = run(&AdjustDemoOptions { invocations: 300, every: 50, ..AdjustDemoOptions::default() });
        assert_eq!(report.results.len(), 9);
        assert!(report.results.iter().all(|r| r.utilization > 0.0 && r.utilization <= 1.0));
        // Peak provisioning never grows after the first invocation's peak.
        let peak_small =
            report.results.iter().find(|r| r.app == "small" && r.policy == "peak").map(|r| r.steps_per_invocation);
        assert!(peak_small.is_some_and(|s| s < 1.0));
    }
}
