//! The two-level scheduler: a [`GlobalScheduler`] routing to one
//! [`RackScheduler`] per rack, as one [`Scheduler`].
//!
//! # Order of the rules
//!
//! For a compute or balanced component:
//!
//! 1. the node of a running peer ([`peers_on`](PlacementRequest::peers_on),
//!    in order), in whatever rack, when it serves the pool and has room;
//! 2. the global scheduler's [route](GlobalScheduler::route): the
//!    triggering component's rack, else (first components) the hashed rack,
//!    else the least-loaded rack; within that rack, the rack policy: the
//!    hashed node for first components, else the triggering node, else a
//!    random node with room;
//! 3. if that rack has no node with room, the [re-route](GlobalScheduler::reroute)
//!    order: the least-loaded rack, then every other rack that may fit.
//!
//! A memory component skips rule 1 and the node-level hash and trigger rules
//! (it goes to a random node with room), but keeps rack locality: the rack of
//! its triggering component when that rack has room.
//!
//! `NoCapacity` comes when, and only when, no node of the pool has room for
//! the reservation: every rack whose aggregate may fit is tried.

use crate::accounting::{pool_index, Accounting};
use crate::config::{PlacementStats, PoolTotals, SchedConfig};
use crate::error::BuildError;
use crate::global::GlobalScheduler;
use crate::hash::component_hash;
use crate::rack::{no_capacity, Chosen, RackScheduler};
use resc_core::ids::{NodeId, RackId};
use resc_core::resources::Resources;
use resc_core::scheduler::{ClusterSpec, NodeSpec, Placement, PlacementRequest, Pool, ScheduleError, Scheduler};
use std::collections::BTreeMap;

/// Whether [`TwoLevelScheduler::place_virtual`] splits a piece that finds no
/// room into smaller size classes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Never: the pieces are the tight decomposition.
    #[default]
    Never,
    /// Split into the classes below, down to the smallest.
    OnFailure,
}

/// The paper's two-level scheduler. See the [module documentation](self).
///
/// ```
/// use resc_core::resources::{Resources, GIB, MIB};
/// use resc_core::scheduler::{ClusterSpec, PlacementRequest, Pool, Scheduler};
/// use resc_sched::{SchedConfig, TwoLevelScheduler};
///
/// let pools = [(Pool::Compute, Resources::new(8000, 4 * GIB)), (Pool::Memory, Resources::memory(16 * GIB))];
/// let cluster = ClusterSpec::uniform(4, 8, &pools.into_iter().collect());
/// let mut scheduler = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(1))?;
/// let request = PlacementRequest {
///     app: "shop".into(),
///     component: "checkout".into(),
///     pool: Pool::Compute,
///     demand: Resources::new(500, 200 * MIB),
///     first_in_graph: true,
///     triggered_from: None,
///     peers_on: vec![],
/// };
/// let placement = scheduler.place(&request)?;
/// // Rounded up to the 256 MiB size class; released exactly.
/// assert_eq!(placement.demand, Resources::new(500, 256 * MIB));
/// scheduler.release(&placement);
/// // Same (app, component), same node: the sandbox stays warm there.
/// assert_eq!(scheduler.place(&request)?.node, placement.node);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct TwoLevelScheduler {
    global: GlobalScheduler,
    racks: Vec<RackScheduler>,
    accounting: Accounting,
    stats: PlacementStats,
}

impl TwoLevelScheduler {
    /// A scheduler over `cluster` with every node free.
    pub fn new(cluster: &ClusterSpec, config: SchedConfig) -> Result<TwoLevelScheduler, BuildError> {
        let global = GlobalScheduler::new(cluster)?;
        let mut members: BTreeMap<RackId, Vec<NodeSpec>> = BTreeMap::new();
        for node in &cluster.nodes {
            members.entry(node.rack).or_default().push(node.clone());
        }
        // BTreeMap order is ascending RackId: the global scheduler's indices.
        let racks = members
            .values()
            .enumerate()
            .map(|(i, nodes)| RackScheduler::with_stream(nodes, &config, i as u64 + 1))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TwoLevelScheduler { global, racks, accounting: config.accounting, stats: PlacementStats::default() })
    }

    /// The global scheduler (routing state and per-rack aggregates).
    pub fn global(&self) -> &GlobalScheduler {
        &self.global
    }

    /// The rack schedulers, by the global scheduler's rack index.
    pub fn racks(&self) -> &[RackScheduler] {
        &self.racks
    }

    /// How reservations are computed.
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// What each rule placed so far.
    pub fn stats(&self) -> &PlacementStats {
        &self.stats
    }

    /// The aggregate of `pool` over the cluster.
    pub fn totals(&self, pool: Pool) -> PoolTotals {
        self.global.cluster_totals(pool)
    }

    /// Capacity of `node` in `pool`, or `None` if the node is unknown or does
    /// not serve the pool.
    pub fn capacity(&self, node: NodeId, pool: Pool) -> Option<Resources> {
        let (rack, local) = self.global.locate(node)?;
        self.racks[rack].capacity_local(local, pool_index(pool))
    }

    /// Places a *virtual* component: its memory is split into physical
    /// pieces by the accounting ([`Accounting::pieces`]: tight size-class
    /// pieces, or one whole piece with exact accounting), each placed by the
    /// policy with the request's hints; CPU goes with the first piece.
    ///
    /// With [`Split::OnFailure`] (size classes only), a piece of class `c`
    /// that finds no room anywhere is split into pieces of the classes below
    /// `c` ([`tight_pieces_up_to`](crate::accounting::tight_pieces_up_to)),
    /// down to the smallest class: the virtual component then fills whatever
    /// leftovers the nodes have, at the price of more physical components.
    /// The internal fragmentation stays below the smallest class.
    ///
    /// All or nothing: if a piece finds no room, the pieces already placed
    /// are released and the request is refused.
    pub fn place_virtual(&mut self, request: &PlacementRequest, split: Split) -> Result<Vec<Placement>, ScheduleError> {
        let mut placed: Vec<Placement> = Vec::new();
        let accounting = self.accounting.clone();
        let mut pending: Vec<u64> = Vec::new();
        let mut pieces = accounting.pieces(request.demand.memory_bytes);
        let mut cpu = request.demand.millicores;
        while let Some(bytes) = pending.pop().or_else(|| pieces.next()) {
            match self.place_reserved(request, Resources::new(cpu, bytes)) {
                Some(p) => {
                    cpu = 0;
                    placed.push(p);
                }
                None => {
                    let smaller = match (split, accounting.classes()) {
                        (Split::OnFailure, Some(classes)) => crate::accounting::class_below(classes, bytes)
                            .filter(|_| classes.memory_classes().contains(&bytes))
                            .map(|below| (classes, below)),
                        _ => None,
                    };
                    if let Some((classes, below)) = smaller {
                        let parts: Vec<u64> = crate::accounting::tight_pieces_up_to(classes, bytes, below).collect();
                        pending.extend(parts.into_iter().rev());
                        continue;
                    }
                    for p in &placed {
                        self.release(p);
                    }
                    self.stats.refused += 1;
                    return Err(no_capacity(request));
                }
            }
        }
        Ok(placed)
    }

    /// Places `request` reserving exactly `demand`.
    fn place_reserved(&mut self, request: &PlacementRequest, demand: Resources) -> Option<Placement> {
        let pool = request.pool;
        let p = pool_index(pool);
        // 1. A peer's node, in any rack.
        if pool != Pool::Memory {
            for &peer in &request.peers_on {
                if let Some((rack, local)) = self.global.locate(peer) {
                    if let Some(chosen) = self.racks[rack].fits_on(local, p, &demand) {
                        return Some(self.commit(rack, p, chosen, demand));
                    }
                }
            }
        }
        let first =
            (request.first_in_graph && pool != Pool::Memory).then(|| component_hash(&request.app, &request.component));
        let trigger = request.triggered_from.and_then(|n| self.global.locate(n));
        // 2. The global scheduler's first choice.
        let first_rack = self.global.route(pool, &demand, request.triggered_from, first).map(|r| r.rack);
        if let Some(rack) = first_rack {
            if let Some(chosen) = try_rack(&mut self.racks[rack], rack, p, pool, &demand, first, trigger) {
                return Some(self.commit(rack, p, chosen, demand));
            }
        }
        // 3. Re-route.
        let tried = [first_rack.unwrap_or(usize::MAX)];
        let racks = &mut self.racks;
        let found = self.global.reroute(pool, &demand, &tried).find_map(|rack| {
            try_rack(&mut racks[rack], rack, p, pool, &demand, first, trigger).map(|chosen| (rack, chosen))
        });
        let (rack, chosen) = found?;
        if first_rack.is_some() {
            self.stats.rerouted += 1;
        }
        Some(self.commit(rack, p, chosen, demand))
    }

    fn commit(&mut self, rack: usize, p: usize, chosen: Chosen, demand: Resources) -> Placement {
        self.stats.count(chosen.rule);
        let placement = self.racks[rack].commit(p, chosen, demand);
        self.global.update(rack, placement.pool, self.racks[rack].totals(placement.pool));
        placement
    }
}

/// The rack policy in rack `index`, with the trigger hint if it is there.
fn try_rack(
    rack: &mut RackScheduler,
    index: usize,
    p: usize,
    pool: Pool,
    demand: &Resources,
    first: Option<u64>,
    trigger: Option<(usize, usize)>,
) -> Option<Chosen> {
    let trigger_local = trigger.filter(|&(r, _)| r == index).map(|(_, local)| local);
    rack.choose_local(p, demand, pool, first, std::iter::empty(), trigger_local)
}

impl Scheduler for TwoLevelScheduler {
    fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
        let demand = self.accounting.reservation(request.demand);
        match self.place_reserved(request, demand) {
            Some(placement) => Ok(placement),
            None => {
                self.stats.refused += 1;
                Err(no_capacity(request))
            }
        }
    }

    /// Returns the placement's reservation to its node. A placement of an
    /// unknown node or pool is ignored; free never exceeds capacity (so a
    /// second release of the same placement on an otherwise empty node is
    /// harmless, but in general it cannot be detected: a [`Placement`]
    /// carries no identity).
    fn release(&mut self, placement: &Placement) {
        if let Some((rack, local)) = self.global.locate(placement.node) {
            let p = pool_index(placement.pool);
            let applied = self.racks[rack].release_local(local, p, placement.demand);
            if applied != Resources::ZERO {
                self.global.update(rack, placement.pool, self.racks[rack].totals(placement.pool));
            }
        }
    }

    fn free(&self, node: NodeId, pool: Pool) -> Resources {
        self.global
            .locate(node)
            .map_or(Resources::ZERO, |(rack, local)| self.racks[rack].free_local(local, pool_index(pool)))
    }
}
