//! Scheduler configuration and small shared value types.

use crate::accounting::{Accounting, Fit};
use resc_core::resources::Resources;
use resc_core::size_class::SizeClasses;
use serde::{Deserialize, Serialize};

/// How a [`RackScheduler`](crate::RackScheduler) or
/// [`TwoLevelScheduler`](crate::TwoLevelScheduler) reserves and chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedConfig {
    /// How reservations are computed (size classes by default).
    pub accounting: Accounting,
    /// How a node is chosen when no locality rule applies (random by default).
    pub fit: Fit,
    /// Seed of every random choice: the same seed, cluster and request
    /// sequence give the same placements.
    pub seed: u64,
}

impl Default for SchedConfig {
    /// The paper's policy: default size classes, random fit, seed 0.
    fn default() -> Self {
        SchedConfig { accounting: Accounting::default(), fit: Fit::Random, seed: 0 }
    }
}

impl SchedConfig {
    /// The paper's policy with these size classes.
    pub fn size_classes(classes: SizeClasses) -> Self {
        SchedConfig { accounting: Accounting::SizeClasses(classes), ..SchedConfig::default() }
    }

    /// The function-centric baseline: exact bytes, first node that fits.
    pub fn whole_first_fit() -> Self {
        SchedConfig { accounting: Accounting::Exact, fit: Fit::FirstFit, seed: 0 }
    }

    /// The same configuration with another seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// Aggregate capacity and free amount of one pool over a set of nodes (a
/// rack, or the cluster). Sums are 64-bit, so they do not overflow where a
/// [`Resources`] would.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolTotals {
    /// Nodes serving the pool.
    pub nodes: u32,
    /// Sum of capacities, millicores.
    pub capacity_millicores: u64,
    /// Sum of capacities, bytes.
    pub capacity_bytes: u64,
    /// Sum of free amounts, millicores.
    pub free_millicores: u64,
    /// Sum of free amounts, bytes.
    pub free_bytes: u64,
}

impl PoolTotals {
    /// Whether the sum of free amounts covers `demand` (necessary, not
    /// sufficient, for some node to fit it).
    #[inline]
    pub fn may_fit(&self, demand: &Resources) -> bool {
        u64::from(demand.millicores) <= self.free_millicores && demand.memory_bytes <= self.free_bytes
    }

    /// Reserved bytes (capacity minus free).
    pub fn used_bytes(&self) -> u64 {
        self.capacity_bytes.saturating_sub(self.free_bytes)
    }

    /// Reserved millicores (capacity minus free).
    pub fn used_millicores(&self) -> u64 {
        self.capacity_millicores.saturating_sub(self.free_millicores)
    }

    /// Adds another set of nodes' totals.
    pub fn merge(&mut self, other: &PoolTotals) {
        self.nodes += other.nodes;
        self.capacity_millicores += other.capacity_millicores;
        self.capacity_bytes += other.capacity_bytes;
        self.free_millicores += other.free_millicores;
        self.free_bytes += other.free_bytes;
    }
}

/// `demand` fits in `free` in every dimension.
#[inline]
pub(crate) fn fits(free: &Resources, demand: &Resources) -> bool {
    demand.millicores <= free.millicores && demand.memory_bytes <= free.memory_bytes
}

/// How many placements each rule of the policy made, and how many requests
/// were refused or re-routed. Counting is a few additions per placement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementStats {
    /// Successful placements.
    pub placed: u64,
    /// Placed on a running peer's node.
    pub peer_node: u64,
    /// Placed by the (app, component) hash (first components).
    pub warm_hash: u64,
    /// Placed on the triggering component's node.
    pub trigger_node: u64,
    /// Placed on a random (or first-fit) node with room.
    pub any_node: u64,
    /// Placed in another rack than the global scheduler's first choice.
    pub rerouted: u64,
    /// Refused with `NoCapacity`.
    pub refused: u64,
}

impl PlacementStats {
    pub(crate) fn count(&mut self, rule: crate::rack::Rule) {
        use crate::rack::Rule;
        self.placed += 1;
        match rule {
            Rule::PeerNode => self.peer_node += 1,
            Rule::WarmHash => self.warm_hash += 1,
            Rule::TriggerNode => self.trigger_node += 1,
            Rule::AnyNode => self.any_node += 1,
        }
    }
}
