//! The adjuster: every K invocations of an application, new initial and
//! incremental sizes for its memory components, and compute components that
//! outgrow the compute pool moved to the balanced pool (paper §5.3.1).
//!
//! Memory components: [`memory_sizes`] picks the initial size (a multiple of
//! the smallest class, placed as several physical components) and the
//! incremental size (one class) that minimize the **expected memory-time**
//! of one invocation plus a **price per growth step**, under a distribution
//! of the component's peak fitted to the three figures the history keeps:
//! the EMA `m̄` of the peak, the EMA `d̄` of its deviation and the largest
//! peak seen. The model it optimizes is the one `resc demo adjust` measures:
//! - a component fills at a steady rate during the first half of the
//!   invocation ([`ASSUMED_FILL_SHARE`]) and holds its peak until the end;
//! - everything allocated is held from when it is allocated until the
//!   invocation ends (memory components only grow);
//! - a growth step stalls the invocation for [`STEP_SHARE`] of its run
//!   while it holds what the component has so far **and** the compute
//!   component's local memory (one compute slot).
//!
//! The objective is memory-time × run time per invocation (the memory
//! analogue of the energy–delay product): a 1 % slowdown weighs as much as
//! 1 % more memory-time. Written as a price, each growth step costs the
//! memory-time its stall holds plus [`STEP_SHARE`] of the invocation's
//! memory-time. Pure memory-time alone would accept a step for any saving
//! larger than the stall, and grow a 1 GiB component in ten or more steps.
//!
//! The peak is taken as normal with mean `m̄` and standard deviation
//! `d̄·√(π/2)` (what a mean absolute deviation `d̄` means for a normal),
//! clipped to [0, largest peak seen], and the expectation is a 48-point
//! quantile average. A steady small component gets the smallest initial and
//! increment; a component that fills slowly and varies gets a small initial
//! and a larger increment, which bounds its steps; a steadier or larger one
//! trades between the two where the price of a step says so.
//!
//! Compute components: one whose footprint including swap stays above the
//! compute pool's limit while it swaps at least `swaps_threshold` times per
//! invocation (both as EMAs) moves to the balanced pool with local memory =
//! swapped bytes + its slot, rounded up to a size class.
//!
//! Every decision is a [`Decision`] with its reason, and a `tracing` event.

use resc_core::graph::ResourceGraph;
use resc_core::size_class::SizeClasses;
use resc_core::usage::{ComponentHistory, UsageHistory};
use serde::Serialize;
use statrs::distribution::{ContinuousCDF, Normal};

/// When and how the adjuster acts.
#[derive(Debug, Clone, Serialize)]
pub struct AdjustConfig {
    /// Adjust every this many invocations (the paper's K).
    pub every: u64,
    /// Local memory a compute component may use in the compute pool, bytes
    /// (the paper: 256 MB).
    pub compute_limit_bytes: u64,
    /// Swaps per invocation (EMA) that count as swapping often.
    pub swaps_threshold: f64,
}

impl Default for AdjustConfig {
    /// K = 1000, a 256 MiB limit, 100 swaps per invocation.
    fn default() -> Self {
        AdjustConfig { every: 1000, compute_limit_bytes: 256 << 20, swaps_threshold: 100.0 }
    }
}

/// One adjustment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    /// A memory component's new sizes.
    ResizeMemory {
        /// The component.
        component: String,
        /// New initial size, bytes.
        initial_bytes: u64,
        /// New incremental size, bytes.
        increment_bytes: u64,
        /// Why.
        reason: String,
    },
    /// A compute component moves to the balanced pool.
    MoveToBalanced {
        /// The component.
        component: String,
        /// Its local memory there, bytes.
        local_bytes: u64,
        /// Why.
        reason: String,
    },
}

/// Share of an invocation during which a memory component is assumed to
/// fill, at a steady rate, before it holds its peak.
pub const ASSUMED_FILL_SHARE: f64 = 0.5;

/// Assumed cost of one growth step as a share of the invocation's run:
/// about 10 ms to place and allocate a physical memory component on a
/// cluster (between the embedded platform's well under 1 ms and a new RDMA
/// connection's 34 ms, paper §4.3; connections to a node already serving
/// the component are reused) in a function that runs about a second.
pub const STEP_SHARE: f64 = 0.01;

/// Quantile points the expectation averages over.
const QUANTILES: usize = 48;

/// Most initial sizes tried; beyond, the grid coarsens by whole smallest classes.
const MAX_INITIAL_CANDIDATES: u64 = 1024;

/// Initial and incremental sizes for a memory component with this history:
/// the pair that minimizes the expected memory-time × run time of an
/// invocation, i.e. memory-time plus a price per growth step (see the
/// module docs). Both are whole
/// multiples of the smallest class; the increment is one class.
pub fn memory_sizes(history: &ComponentHistory, classes: &SizeClasses) -> (u64, u64) {
    let smallest = classes.smallest();
    let mean = history.memory_bytes.max(0.0);
    let max = history.memory_max_bytes.max(mean);
    if max.is_nan() || max <= 0.0 || max.is_infinite() {
        return (smallest, smallest);
    }
    let sigma = history.memory_deviation_bytes.max(0.0) * std::f64::consts::FRAC_PI_2.sqrt();
    let normal = Normal::standard();
    let peaks: Vec<f64> = (0..QUANTILES)
        .map(|k| (mean + sigma * normal.inverse_cdf((k as f64 + 0.5) / QUANTILES as f64)).clamp(0.0, max))
        .collect();
    let slot = classes.compute_slot() as f64;
    let top = (max.ceil() as u64).div_ceil(smallest).max(1);
    let stride = top.div_ceil(MAX_INITIAL_CANDIDATES).max(1);
    let mut best = (f64::INFINITY, smallest, smallest);
    for &increment in classes.memory_classes() {
        for units in (1..=top).step_by(stride as usize) {
            let initial = units * smallest;
            let cost: f64 =
                peaks.iter().map(|&peak| expected_cost(peak, initial as f64, increment as f64, slot)).sum::<f64>()
                    / QUANTILES as f64;
            if cost < best.0 {
                best = (cost, initial, increment);
            }
        }
    }
    (best.1, best.2)
}

/// Memory-time (bytes × runs, stalls included) × run time (runs) of one
/// invocation peaking at `peak` under (`initial`, `increment`): the model
/// of the module docs.
fn expected_cost(peak: f64, initial: f64, increment: f64, slot: f64) -> f64 {
    if peak <= initial {
        return initial;
    }
    let steps = ((peak - initial) / increment).ceil();
    let last = initial + steps * increment;
    // While filling, time is proportional to the bytes filled: the component
    // holds `initial` until it is full, then each level until the next.
    let full = steps - 1.0;
    let filling = initial * initial
        + increment * (full * initial + increment * full * (full + 1.0) / 2.0)
        + last * (peak - initial - full * increment);
    let held = ASSUMED_FILL_SHARE * filling / peak + (1.0 - ASSUMED_FILL_SHARE) * last;
    // Step k stalls while holding initial + (k − 1)·increment and the slot.
    let stalled = STEP_SHARE * (steps * (initial + slot) + increment * steps * full / 2.0);
    // Memory-time × run time: a step's 1 % slowdown weighs as much as 1 %
    // more memory-time (the memory analogue of the energy–delay product).
    (held + stalled) * (1.0 + STEP_SHARE * steps)
}

/// Decides adjustments.
#[derive(Debug, Clone)]
pub struct Adjuster {
    config: AdjustConfig,
    classes: SizeClasses,
}

impl Adjuster {
    /// An adjuster rounding to `classes`.
    pub fn new(config: AdjustConfig, classes: SizeClasses) -> Self {
        Adjuster { config, classes }
    }

    /// Whether `history` has reached an adjustment point (every K invocations).
    pub fn due(&self, history: &UsageHistory) -> bool {
        let every = self.config.every.max(1);
        history.invocations() > 0 && history.invocations() % every == 0
    }

    /// The adjustments `graph` needs, from `history`; each is also traced.
    /// A memory component gets the sizes of [`memory_sizes`] (least expected
    /// memory-time × run time) when they differ from its own.
    pub fn decide(&self, graph: &ResourceGraph, history: &UsageHistory) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for memory in graph.memory_components() {
            let Some(h) = history.component(&memory.name) else { continue };
            let (initial, increment) = memory_sizes(h, &self.classes);
            if (initial, increment) == (memory.initial_bytes, memory.increment_bytes) {
                continue;
            }
            let reason = format!(
                "peak length averages {:.0} MiB, deviates by {:.0} MiB and peaked at {:.0} MiB (EMA over {} \
                 invocations): these sizes minimize expected memory-time × run time with growth steps stalling",
                h.memory_bytes / 1048576.0,
                h.memory_deviation_bytes / 1048576.0,
                h.memory_max_bytes / 1048576.0,
                h.observations
            );
            decisions.push(Decision::ResizeMemory {
                component: memory.name.clone(),
                initial_bytes: initial,
                increment_bytes: increment,
                reason,
            });
        }
        let limit = self.config.compute_limit_bytes as f64;
        for compute in graph.compute_components() {
            let Some(h) = history.component(&compute.name) else { continue };
            if h.memory_bytes <= limit || h.swaps < self.config.swaps_threshold {
                continue;
            }
            let local = self.classes.round_up((h.swap_bytes + self.classes.compute_slot() as f64).ceil() as u64);
            let reason = format!(
                "footprint with swap averages {:.0} MiB, over the {:.0} MiB limit, with {:.0} swaps per invocation",
                h.memory_bytes / 1048576.0,
                limit / 1048576.0,
                h.swaps
            );
            decisions.push(Decision::MoveToBalanced { component: compute.name.clone(), local_bytes: local, reason });
        }
        for decision in &decisions {
            match decision {
                Decision::ResizeMemory { component, initial_bytes, increment_bytes, reason } => {
                    tracing::info!(
                        app = graph.app(),
                        component,
                        initial_bytes,
                        increment_bytes,
                        reason,
                        "resize memory component"
                    );
                }
                Decision::MoveToBalanced { component, local_bytes, reason } => {
                    tracing::info!(app = graph.app(), component, local_bytes, reason, "move to the balanced pool");
                }
            }
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resc_core::resources::MIB;
    use resc_core::usage::Observation;

    const APP: &str = r#"{"app":"a","budget_mib":4096,
        "compute":[{"name":"c","code":"x"}],
        "memory":[{"name":"m","initial_mib":256,"increment_mib":64}],
        "edges":[{"kind":"access","from":"c","to":"m"}]}"#;

    fn history(memory: &[f64], compute: &Observation) -> UsageHistory {
        let mut h = UsageHistory::new(0.5);
        for &bytes in memory {
            h.fold([("m", Observation { memory_bytes: bytes, ..Observation::default() }), ("c", compute.clone())]);
        }
        h
    }

    fn steady(mib: f64, deviation_mib: f64, max_mib: f64) -> ComponentHistory {
        let m = MIB as f64;
        ComponentHistory {
            observations: 1000,
            memory_bytes: mib * m,
            memory_deviation_bytes: deviation_mib * m,
            memory_max_bytes: max_mib * m,
            ..ComponentHistory::default()
        }
    }

    /// Growth steps for a peak of `mib` under (initial, increment).
    fn steps(mib: u64, (initial, increment): (u64, u64)) -> u64 {
        (mib * MIB).saturating_sub(initial).div_ceil(increment)
    }

    #[test]
    fn a_small_steady_component_gets_the_smallest_sizes() {
        let sizes = memory_sizes(&steady(40.0, 2.0, 50.0), &SizeClasses::default());
        assert_eq!(sizes, (64 * MIB, 64 * MIB), "one smallest component holds every invocation");
    }

    #[test]
    fn a_large_steady_component_grows_in_few_coarse_steps() {
        let classes = SizeClasses::default();
        let sizes = memory_sizes(&steady(1200.0, 10.0, 1240.0), &classes);
        assert!(sizes.1 > classes.smallest(), "coarser than the smallest class: {sizes:?}");
        assert!(steps(1240, sizes) <= 6, "bounded steps at the largest peak: {sizes:?}");
        assert!(steps(1240, sizes) < steps(1240, (256 * MIB, 64 * MIB)), "fewer than the fixed 256/64");
        let slot = classes.compute_slot() as f64;
        let cost = |(i, d): (u64, u64)| expected_cost(1200.0 * MIB as f64, i as f64, d as f64, slot);
        assert!(cost(sizes) < cost((256 * MIB, 64 * MIB)), "cheaper than the fixed sizes in its own model");
        assert!(cost(sizes) < cost((1216 * MIB, 64 * MIB)), "cheaper than provisioning the peak up front");
    }

    #[test]
    fn a_varying_component_has_bounded_steps() {
        let sizes = memory_sizes(&steady(1000.0, 500.0, 2048.0), &SizeClasses::default());
        assert!(sizes.1 >= 128 * MIB, "a coarser increment: {sizes:?}");
        assert!(steps(2048, sizes) <= 16, "at most 16 steps even at the largest peak seen: {sizes:?}");
        assert!(steps(1000, sizes) < steps(1000, (256 * MIB, 64 * MIB)), "fewer steps than fixed at the mean");
    }

    #[test]
    fn a_component_never_seen_large_gets_the_smallest_sizes() {
        let classes = SizeClasses::default();
        assert_eq!(memory_sizes(&ComponentHistory::default(), &classes), (64 * MIB, 64 * MIB));
        // A wide deviation cannot push the initial size past the largest peak seen.
        let (initial, _) = memory_sizes(&steady(300.0, 400.0, 320.0), &classes);
        assert!(initial <= 320 * MIB, "{initial}");
    }

    #[test]
    fn decide_resizes_a_memory_component_with_a_reason() {
        let graph = resc_core::template::parse(APP).expect("template");
        let classes = SizeClasses::default();
        let mib = |m: u64| (m * MIB) as f64;
        let h = history(&[mib(40), mib(41), mib(40), mib(42)], &Observation::default());
        let decisions = Adjuster::new(AdjustConfig::default(), classes).decide(&graph, &h);
        let [Decision::ResizeMemory { initial_bytes, increment_bytes, reason, .. }] = decisions.as_slice() else {
            panic!("one resize expected: {decisions:?}");
        };
        assert_eq!((*initial_bytes, *increment_bytes), (64 * MIB, 64 * MIB), "down from 256/64");
        assert!(reason.contains("41 MiB"), "{reason}");
    }

    #[test]
    fn a_swapping_compute_component_moves_to_the_balanced_pool() {
        let graph = resc_core::template::parse(APP).expect("template");
        let classes = SizeClasses::default();
        let swapping = Observation {
            memory_bytes: (600 * MIB) as f64,
            swap_bytes: (350 * MIB) as f64,
            swaps: 5000.0,
            ..Observation::default()
        };
        let h = history(&[(256 * MIB) as f64], &swapping);
        let decisions = Adjuster::new(AdjustConfig::default(), classes).decide(&graph, &h);
        assert!(
            decisions.iter().any(|d| matches!(d, Decision::MoveToBalanced { component, local_bytes, .. } if component == "c" && *local_bytes == 1024 * MIB)),
            "350 MiB swapped + the 256 MiB slot round up to 1 GiB: {decisions:?}"
        );
        let quiet = history(&[(256 * MIB) as f64], &Observation { swaps: 1.0, ..swapping_like() });
        assert!(Adjuster::new(AdjustConfig::default(), SizeClasses::default())
            .decide(&graph, &quiet)
            .iter()
            .all(|d| !matches!(d, Decision::MoveToBalanced { .. })));
    }

    fn swapping_like() -> Observation {
        Observation { memory_bytes: (600 * MIB) as f64, swap_bytes: (350 * MIB) as f64, ..Observation::default() }
    }

    #[test]
    fn adjustments_are_due_every_k_invocations() {
        let adjuster = Adjuster::new(AdjustConfig { every: 3, ..AdjustConfig::default() }, SizeClasses::default());
        let mut h = UsageHistory::new(0.5);
        let mut due = Vec::new();
        for _ in 0..7 {
            h.fold([("m", Observation::default())]);
            due.push(adjuster.due(&h));
        }
        assert_eq!(due, [false, false, true, false, false, true, false]);
    }
}
