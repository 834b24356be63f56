//! The adjuster: every K invocations of an application, new initial and
//! incremental sizes for its memory components, and compute components that
//! outgrow the compute pool moved to the balanced pool (paper §5.3.1).
//!
//! Memory components: with `m̄` the EMA of a component's peak length and `d̄`
//! the EMA of its deviation from `m̄`, the initial size is `m̄ − d̄` rounded
//! up to a multiple of the smallest class (it may be several physical
//! components), and the increment is the smallest class. A steady component
//! then starts at about what it needs and rarely grows; a varying one starts
//! below what most invocations need and grows in fine steps, which keeps
//! utilization high at the price of growth steps (`resc demo adjust` shows
//! the trade).
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

/// Initial and incremental sizes for a memory component with this history.
pub fn memory_sizes(history: &ComponentHistory, classes: &SizeClasses) -> (u64, u64) {
    let smallest = classes.smallest();
    let initial = (history.memory_bytes - history.memory_deviation_bytes).max(smallest as f64).ceil() as u64;
    // The initial allocation may be several physical components, so it is
    // rounded to the smallest class, not up to one class.
    let initial = initial.div_ceil(smallest) * smallest;
    (initial, smallest)
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
    pub fn decide(&self, graph: &ResourceGraph, history: &UsageHistory) -> Vec<Decision> {
        let mut decisions = Vec::new();
        for memory in graph.memory_components() {
            let Some(h) = history.component(&memory.name) else { continue };
            let (initial, increment) = memory_sizes(h, &self.classes);
            if (initial, increment) == (memory.initial_bytes, memory.increment_bytes) {
                continue;
            }
            let reason = format!(
                "peak length averages {:.0} MiB and deviates by {:.0} MiB (EMA over {} invocations)",
                h.memory_bytes / 1048576.0,
                h.memory_deviation_bytes / 1048576.0,
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

    #[test]
    fn a_steady_memory_component_starts_at_what_it_needs() {
        let graph = resc_core::template::parse(APP).expect("template");
        let classes = SizeClasses::default();
        let mib = |m: u64| (m * MIB) as f64;
        let h = history(&[mib(700), mib(700), mib(710), mib(700)], &Observation::default());
        let decisions = Adjuster::new(AdjustConfig::default(), classes).decide(&graph, &h);
        let [Decision::ResizeMemory { initial_bytes, increment_bytes, .. }] = decisions.as_slice() else {
            panic!("one resize expected: {decisions:?}");
        };
        assert_eq!(*initial_bytes, 704 * MIB, "about 698 MiB, rounded up to 64 MiB (11 of the smallest class)");
        assert_eq!(*increment_bytes, 64 * MIB, "grows by the smallest class");
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
