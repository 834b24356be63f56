//! Usage history: what each component used, folded into exponential moving
//! averages (the paper's equations (1)–(2)).
//!
//! Per component and invocation the platform observes a CPU figure, a
//! memory figure (local memory plus what it swapped out), how much it
//! swapped, and the bytes it exchanged with each peer. The history keeps,
//! per component, the EMA of each, `x̄ ← α·x + (1 − α)·x̄` (the first
//! observation taken as is), plus the EMA of the memory figure's deviation
//! from its average, so that the adjuster can tell steady components from
//! varying ones. Metadata is O(components + peers), never a time series.
//!
//! ```
//! use resc_core::usage::{Observation, UsageHistory};
//! let mut history = UsageHistory::new(0.5);
//! history.fold([("train", Observation { memory_bytes: 100.0, ..Observation::default() })]);
//! history.fold([("train", Observation { memory_bytes: 300.0, ..Observation::default() })]);
//! let train = history.component("train").expect("observed");
//! assert_eq!(train.memory_bytes, 200.0);
//! assert_eq!(history.invocations(), 2);
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One component's usage in one invocation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// CPU time, seconds (summed over its instances).
    pub cpu_s: f64,
    /// Peak memory, bytes: for a compute component its local memory plus
    /// what it swapped out; for a memory component its length.
    pub memory_bytes: f64,
    /// Bytes swapped out to remote memory (compute components).
    pub swap_bytes: f64,
    /// Pages or blocks swapped out (compute components).
    pub swaps: f64,
    /// Bytes exchanged with each peer component, by name.
    pub network_bytes: BTreeMap<String, f64>,
}

/// A component's averages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComponentHistory {
    /// Observations folded in.
    pub observations: u64,
    /// EMA of the CPU time, seconds.
    pub cpu_s: f64,
    /// EMA of the peak memory, bytes.
    pub memory_bytes: f64,
    /// EMA of |peak memory − its EMA before the observation|, bytes.
    pub memory_deviation_bytes: f64,
    /// Largest peak memory observed, bytes.
    pub memory_max_bytes: f64,
    /// EMA of the bytes swapped out.
    pub swap_bytes: f64,
    /// EMA of the swap count.
    pub swaps: f64,
    /// EMA of the bytes exchanged with each peer (absent in an observation: 0).
    pub network_bytes: BTreeMap<String, f64>,
}

/// Per-component EMAs of an application's usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageHistory {
    alpha: f64,
    invocations: u64,
    components: BTreeMap<String, ComponentHistory>,
}

fn ema(alpha: f64, old: f64, new: f64) -> f64 {
    alpha * new + (1.0 - alpha) * old
}

impl UsageHistory {
    /// An empty history with weight `alpha` for the newest observation
    /// (clamped into (0, 1]; the paper uses 0.5).
    pub fn new(alpha: f64) -> Self {
        let alpha = if alpha.is_nan() { 0.5 } else { alpha.clamp(f64::EPSILON, 1.0) };
        UsageHistory { alpha, invocations: 0, components: BTreeMap::new() }
    }

    /// The weight of the newest observation.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// Invocations folded in.
    pub fn invocations(&self) -> u64 {
        self.invocations
    }

    /// One component's averages, if it was ever observed.
    pub fn component(&self, name: &str) -> Option<&ComponentHistory> {
        self.components.get(name)
    }

    /// Every component's averages, by name.
    pub fn components(&self) -> impl Iterator<Item = (&str, &ComponentHistory)> {
        self.components.iter().map(|(name, h)| (name.as_str(), h))
    }

    /// Folds in one invocation's observations.
    pub fn fold<'a>(&mut self, observations: impl IntoIterator<Item = (&'a str, Observation)>) {
        self.invocations += 1;
        let alpha = self.alpha;
        for (name, o) in observations {
            let h = self.components.entry(name.to_owned()).or_default();
            if h.observations == 0 {
                *h = ComponentHistory {
                    observations: 1,
                    cpu_s: o.cpu_s,
                    memory_bytes: o.memory_bytes,
                    memory_deviation_bytes: 0.0,
                    memory_max_bytes: o.memory_bytes,
                    swap_bytes: o.swap_bytes,
                    swaps: o.swaps,
                    network_bytes: o.network_bytes,
                };
                continue;
            }
            h.observations += 1;
            h.memory_deviation_bytes = ema(alpha, h.memory_deviation_bytes, (o.memory_bytes - h.memory_bytes).abs());
            h.cpu_s = ema(alpha, h.cpu_s, o.cpu_s);
            h.memory_bytes = ema(alpha, h.memory_bytes, o.memory_bytes);
            h.memory_max_bytes = h.memory_max_bytes.max(o.memory_bytes);
            h.swap_bytes = ema(alpha, h.swap_bytes, o.swap_bytes);
            h.swaps = ema(alpha, h.swaps, o.swaps);
            for (peer, bytes) in h.network_bytes.iter_mut() {
                *bytes = ema(alpha, *bytes, o.network_bytes.get(peer).copied().unwrap_or(0.0));
            }
            for (peer, bytes) in o.network_bytes {
                h.network_bytes.entry(peer).or_insert(alpha * bytes);
            }
        }
    }

    /// Folds in one invocation's communication only (bytes per peer), for
    /// runs that measured nothing else per component: an aggregated
    /// group's components share one sandbox, so their memory and CPU are
    /// not told apart, while their traffic still is. The other averages
    /// keep their values.
    pub fn fold_communication<'a>(&mut self, traffic: impl IntoIterator<Item = (&'a str, BTreeMap<String, f64>)>) {
        self.invocations += 1;
        let alpha = self.alpha;
        for (name, observed) in traffic {
            let h = self.components.entry(name.to_owned()).or_default();
            // A component's first traffic is taken as is, like any first
            // observation; a new peer of a known component starts from 0.
            let first = h.observations == 0 && h.network_bytes.is_empty();
            for (peer, bytes) in h.network_bytes.iter_mut() {
                *bytes = ema(alpha, *bytes, observed.get(peer).copied().unwrap_or(0.0));
            }
            for (peer, bytes) in observed {
                h.network_bytes.entry(peer).or_insert(if first { bytes } else { alpha * bytes });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(bytes: f64) -> Observation {
        Observation { memory_bytes: bytes, ..Observation::default() }
    }

    #[test]
    fn the_first_observation_is_taken_as_is_then_alpha_weighs_the_newest() {
        let mut h = UsageHistory::new(0.25);
        h.fold([("c", Observation { cpu_s: 4.0, ..memory(100.0) })]);
        h.fold([("c", Observation { cpu_s: 8.0, ..memory(200.0) })]);
        let c = h.component("c").expect("observed");
        assert_eq!((c.cpu_s, c.memory_bytes, c.observations), (5.0, 125.0, 2));
        assert_eq!(c.memory_deviation_bytes, 25.0, "0.25 × |200 − 100|");
        assert_eq!(c.memory_max_bytes, 200.0);
    }

    #[test]
    fn a_peer_missing_from_an_observation_decays_toward_zero() {
        let mut h = UsageHistory::new(0.5);
        let with_peer =
            |bytes| Observation { network_bytes: BTreeMap::from([("m".to_owned(), bytes)]), ..Observation::default() };
        h.fold([("c", with_peer(64.0))]);
        h.fold([("c", Observation::default())]);
        h.fold([("c", with_peer(64.0))]);
        assert_eq!(h.component("c").expect("observed").network_bytes["m"], 48.0, "64 → 32 → 48");
    }

    #[test]
    fn folding_communication_leaves_the_other_averages_alone() {
        let mut h = UsageHistory::new(0.5);
        let traffic = |bytes| BTreeMap::from([("m".to_owned(), bytes)]);
        h.fold([("c", Observation { network_bytes: traffic(100.0), ..memory(64.0) })]);
        h.fold_communication([("c", traffic(300.0))]);
        let c = h.component("c").expect("observed");
        assert_eq!((c.memory_bytes, c.network_bytes["m"]), (64.0, 200.0));
        assert_eq!(h.invocations(), 2);
    }

    #[test]
    fn alpha_is_clamped_into_its_range() {
        assert_eq!(UsageHistory::new(7.0).alpha(), 1.0);
        assert!(UsageHistory::new(-1.0).alpha() > 0.0);
        assert_eq!(UsageHistory::new(f64::NAN).alpha(), 0.5);
    }
}
