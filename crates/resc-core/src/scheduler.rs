//! Placement of physical components on nodes.
//!
//! # Contract
//!
//! - [`Scheduler::place`] puts a physical component on a node of the
//!   requested [`Pool`] and reserves at least the demand there
//!   ([`Placement::demand`]: a scheduler may round it up, to size classes for
//!   example); it never over-commits a node, and fails with
//!   [`ScheduleError::NoCapacity`] when, and only when, no node of the pool
//!   has room for that reservation.
//! - [`Scheduler::release`] returns exactly what a placement reserved.
//! - Placement is deterministic for a given scheduler state and request
//!   sequence (randomness, if any, comes from a seeded generator).
//!
//! The full two-level, warm-start- and locality-aware scheduler lives in
//! `resc-sched`; [`PoolAwareScheduler`] is the simple in-process policy.

use crate::ids::{NodeId, RackId};
use crate::resources::Resources;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use thiserror::Error;

/// A resource pool. A node may serve several (virtual pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pool {
    /// Compute components with small local memory.
    Compute,
    /// Memory components.
    Memory,
    /// Aggregated components, and compute components that need much local memory.
    Balanced,
}

/// A node and what it offers in each pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The node.
    pub id: NodeId,
    /// Its rack.
    pub rack: RackId,
    /// Capacity per pool it serves.
    pub pools: BTreeMap<Pool, Resources>,
}

/// The nodes of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// Every node.
    pub nodes: Vec<NodeSpec>,
}

impl ClusterSpec {
    /// `racks` racks of `nodes_per_rack` nodes, every node serving `pools`.
    pub fn uniform(racks: u32, nodes_per_rack: u32, pools: &BTreeMap<Pool, Resources>) -> Self {
        let nodes = (0..racks)
            .flat_map(|rack| {
                (0..nodes_per_rack).map(move |i| NodeSpec {
                    id: NodeId(rack * nodes_per_rack + i),
                    rack: RackId(rack),
                    pools: pools.clone(),
                })
            })
            .collect();
        ClusterSpec { nodes }
    }
}

/// What to place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementRequest {
    /// The application.
    pub app: String,
    /// The virtual component the physical one belongs to.
    pub component: String,
    /// The pool it must run in.
    pub pool: Pool,
    /// What it needs.
    pub demand: Resources,
    /// Whether it is the first component of its graph (warm-start placement).
    pub first_in_graph: bool,
    /// Where the component that triggered it runs (rack locality).
    pub triggered_from: Option<NodeId>,
    /// Where components it communicates with already run (node locality).
    pub peers_on: Vec<NodeId>,
}

/// Where a physical component was placed and what it holds there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The node.
    pub node: NodeId,
    /// Its rack.
    pub rack: RackId,
    /// The pool.
    pub pool: Pool,
    /// The reservation.
    pub demand: Resources,
}

/// Why placement failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ScheduleError {
    /// No node of the pool has room.
    #[error("no node of the {pool:?} pool has room for {demand:?} (component `{component}`)")]
    NoCapacity {
        /// The pool.
        pool: Pool,
        /// The demand.
        demand: Resources,
        /// The component.
        component: String,
    },
}

/// A placement policy. See the [module documentation](self) for the contract.
pub trait Scheduler: Send {
    /// Places and reserves one physical component.
    fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError>;
    /// Returns a placement's reservation.
    fn release(&mut self, placement: &Placement);
    /// Free capacity of a node in a pool.
    fn free(&self, node: NodeId, pool: Pool) -> Resources;
}

/// Pool-aware placement in the spirit of the paper's §5.1, without the
/// rack/global split: a peer's node when it fits, then a hash of (app,
/// component) for the first component, then the triggering component's
/// rack, then a random node with room.
#[derive(Debug, Clone)]
pub struct PoolAwareScheduler {
    nodes: Vec<NodeSpec>,
    free: Vec<BTreeMap<Pool, Resources>>,
    rng: rand::rngs::StdRng,
}

impl PoolAwareScheduler {
    /// A scheduler over `cluster`, with random choices drawn from `seed`.
    pub fn new(cluster: &ClusterSpec, seed: u64) -> Self {
        PoolAwareScheduler {
            free: cluster.nodes.iter().map(|n| n.pools.clone()).collect(),
            nodes: cluster.nodes.clone(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    fn index(&self, node: NodeId) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == node)
    }

    fn fits(&self, i: usize, pool: Pool, demand: &Resources) -> bool {
        self.free[i].get(&pool).is_some_and(|f| f.fits(demand))
    }

    fn choose(&mut self, request: &PlacementRequest) -> Option<usize> {
        let (pool, demand) = (request.pool, &request.demand);
        let fitting: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.fits(i, pool, demand)).collect();
        if fitting.is_empty() {
            return None;
        }
        // 1. Next to a running peer.
        if let Some(i) = request.peers_on.iter().filter_map(|&n| self.index(n)).find(|i| fitting.contains(i)) {
            return Some(i);
        }
        // 2. Warm start: a stable node per (app, component).
        if request.first_in_graph {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            (&request.app, &request.component).hash(&mut hasher);
            return Some(fitting[(hasher.finish() % fitting.len() as u64) as usize]);
        }
        // 3. The triggering component's rack: its node first, then the least loaded.
        if let Some(from) = request.triggered_from.and_then(|n| self.index(n)) {
            if fitting.contains(&from) {
                return Some(from);
            }
            let rack = self.nodes[from].rack;
            let most_free = fitting
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].rack == rack)
                .max_by_key(|&i| self.free[i].get(&pool).map_or(0, |f| f.memory_bytes));
            if most_free.is_some() {
                return most_free;
            }
        }
        // 4. Any node with room.
        Some(fitting[self.rng.random_range(0..fitting.len())])
    }
}

impl Scheduler for PoolAwareScheduler {
    fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
        let i = self.choose(request).ok_or_else(|| ScheduleError::NoCapacity {
            pool: request.pool,
            demand: request.demand,
            component: request.component.clone(),
        })?;
        if let Some(free) = self.free[i].get_mut(&request.pool) {
            *free = *free - request.demand;
        }
        Ok(Placement { node: self.nodes[i].id, rack: self.nodes[i].rack, pool: request.pool, demand: request.demand })
    }

    fn release(&mut self, placement: &Placement) {
        if let Some(i) = self.index(placement.node) {
            let capacity = self.nodes[i].pools.get(&placement.pool).copied().unwrap_or_default();
            if let Some(free) = self.free[i].get_mut(&placement.pool) {
                let restored = *free + placement.demand;
                // Never above capacity, even if a placement is released twice.
                *free = Resources::new(
                    restored.millicores.min(capacity.millicores),
                    restored.memory_bytes.min(capacity.memory_bytes),
                );
            }
        }
    }

    fn free(&self, node: NodeId, pool: Pool) -> Resources {
        self.index(node).and_then(|i| self.free[i].get(&pool).copied()).unwrap_or_default()
    }
}
