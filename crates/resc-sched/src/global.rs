//! The global scheduler: coarse load balancing across racks (paper §5.1).
//!
//! It knows the cluster's topology (which rack each node is in) and, per
//! rack and pool, the aggregate capacity and free amount the rack schedulers
//! report ([`GlobalScheduler::update`]). It never looks at single nodes.
//!
//! # Routing
//!
//! [`GlobalScheduler::route`] picks the first rack to try for a request:
//!
//! 1. the rack of [`triggered_from`](PlacementRequest::triggered_from), if
//!    it serves the pool and its aggregate free amount covers the demand
//!    (rack locality);
//! 2. for the first component of a graph, the rack at position
//!    `hash(app, component) mod n` among the racks serving the pool, if it
//!    may fit (warm start: the same rack, and within it the same node, every
//!    time);
//! 3. otherwise the least-loaded rack of the pool: the one with the largest
//!    free fraction of its scarcer resource (CPU or memory), kept in a
//!    tournament tree so the choice is O(1) and an update O(log racks).
//!
//! When the chosen rack's scheduler finds no node with room (its aggregate
//! can cover a demand no single node can), the request is re-routed
//! ([`GlobalScheduler::reroute`]): to the least-loaded rack, then to every
//! other rack whose aggregate may fit, in a fixed order.

use crate::accounting::pool_index;
use crate::config::PoolTotals;
use crate::error::BuildError;
use crate::hash::{component_hash, reduce};
use crate::lookup::NodeLookup;
use resc_core::ids::{NodeId, RackId};
use resc_core::resources::Resources;
use resc_core::scheduler::{ClusterSpec, PlacementRequest, Pool};
use std::collections::BTreeMap;

/// Why the global scheduler picked a rack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// The triggering component's rack.
    TriggerRack,
    /// The hash of (app, component).
    WarmHash,
    /// The least-loaded rack of the pool.
    LeastLoaded,
}

/// A routing decision: the rack (dense index, see
/// [`GlobalScheduler::rack_ids`]) and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index of the rack in [`GlobalScheduler::rack_ids`].
    pub rack: usize,
    /// Why it was chosen.
    pub reason: RouteReason,
}

/// Per pool: every rack's totals, the racks serving the pool, and a
/// tournament tree over the racks' load scores.
#[derive(Debug, Clone)]
struct PoolLoads {
    totals: Vec<PoolTotals>,
    serving: Vec<u32>,
    tree: MaxTree,
}

/// The global (cross-rack) scheduler. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct GlobalScheduler {
    racks: Vec<RackId>,
    /// Per dense node index: (rack index, index within the rack).
    nodes: Vec<(u32, u32)>,
    lookup: NodeLookup,
    pools: [PoolLoads; 3],
}

impl GlobalScheduler {
    /// A global scheduler over `cluster`, with every node free. Racks are
    /// indexed in ascending [`RackId`] order; within a rack, nodes keep the
    /// cluster's order.
    pub fn new(cluster: &ClusterSpec) -> Result<GlobalScheduler, BuildError> {
        let mut by_rack: BTreeMap<RackId, u32> = BTreeMap::new();
        for node in &cluster.nodes {
            by_rack.entry(node.rack).or_insert(0);
        }
        for (i, index) in by_rack.values_mut().enumerate() {
            *index = i as u32;
        }
        let racks: Vec<RackId> = by_rack.keys().copied().collect();
        let ids: Vec<NodeId> = cluster.nodes.iter().map(|n| n.id).collect();
        let lookup = NodeLookup::new(&ids).map_err(BuildError::DuplicateNode)?;
        let mut per_rack = vec![0u32; racks.len()];
        let mut nodes = Vec::with_capacity(cluster.nodes.len());
        let mut totals = vec![vec![PoolTotals::default(); racks.len()]; 3];
        for node in &cluster.nodes {
            let rack = by_rack.get(&node.rack).copied().unwrap_or_default();
            nodes.push((rack, per_rack[rack as usize]));
            per_rack[rack as usize] += 1;
            for (pool, cap) in &node.pools {
                let t = &mut totals[pool_index(*pool)][rack as usize];
                t.nodes += 1;
                t.capacity_millicores += u64::from(cap.millicores);
                t.capacity_bytes = t.capacity_bytes.saturating_add(cap.memory_bytes);
                t.free_millicores += u64::from(cap.millicores);
                t.free_bytes = t.free_bytes.saturating_add(cap.memory_bytes);
            }
        }
        let mut totals = totals.into_iter();
        let pools = [(); 3].map(|()| {
            let totals = totals.next().unwrap_or_default();
            let serving = (0..totals.len() as u32).filter(|&r| totals[r as usize].nodes > 0).collect();
            let mut tree = MaxTree::new(totals.len());
            for (r, t) in totals.iter().enumerate() {
                tree.set(r, key(r, t));
            }
            PoolLoads { totals, serving, tree }
        });
        Ok(GlobalScheduler { racks, nodes, lookup, pools })
    }

    /// The racks, by dense index.
    pub fn rack_ids(&self) -> &[RackId] {
        &self.racks
    }

    /// The dense index of `rack`.
    pub fn rack_index(&self, rack: RackId) -> Option<usize> {
        self.racks.binary_search(&rack).ok()
    }

    /// The rack (dense index) of `node` and its index within the rack.
    #[inline]
    pub fn locate(&self, node: NodeId) -> Option<(usize, usize)> {
        let &(rack, local) = self.nodes.get(self.lookup.get(node)?)?;
        Some((rack as usize, local as usize))
    }

    /// The aggregate of `pool` in rack `rack` (dense index), as last reported.
    pub fn totals(&self, rack: usize, pool: Pool) -> PoolTotals {
        self.pools[pool_index(pool)].totals.get(rack).copied().unwrap_or_default()
    }

    /// The aggregate of `pool` over the whole cluster (O(racks)).
    pub fn cluster_totals(&self, pool: Pool) -> PoolTotals {
        let mut sum = PoolTotals::default();
        for t in &self.pools[pool_index(pool)].totals {
            sum.merge(t);
        }
        sum
    }

    /// Racks (dense indices) serving `pool`.
    pub fn serving(&self, pool: Pool) -> &[u32] {
        &self.pools[pool_index(pool)].serving
    }

    /// Records a rack's new aggregate for a pool (a rack scheduler's report).
    #[inline]
    pub fn update(&mut self, rack: usize, pool: Pool, totals: PoolTotals) {
        let loads = &mut self.pools[pool_index(pool)];
        if let Some(slot) = loads.totals.get_mut(rack) {
            *slot = totals;
            loads.tree.set(rack, key(rack, &totals));
        }
    }

    /// The least-loaded rack of `pool` (see the module docs), if any rack
    /// serves it.
    #[inline]
    pub fn least_loaded(&self, pool: Pool) -> Option<usize> {
        let top = self.pools[pool_index(pool)].tree.max();
        (top != 0).then(|| rack_of_key(top))
    }

    /// The first rack to try for a request of `pool` reserving `demand`.
    /// `trigger` is the node of the triggering component, `first` the
    /// [`warm_key`](crate::warm_key) of a first component. `None` when no
    /// rack's aggregate covers the demand.
    pub fn route(&self, pool: Pool, demand: &Resources, trigger: Option<NodeId>, first: Option<u64>) -> Option<Route> {
        let loads = &self.pools[pool_index(pool)];
        let may_fit = |r: usize| loads.totals.get(r).is_some_and(|t| t.nodes > 0 && t.may_fit(demand));
        if let Some((rack, _)) = trigger.and_then(|n| self.locate(n)) {
            if may_fit(rack) {
                return Some(Route { rack, reason: RouteReason::TriggerRack });
            }
        }
        if let Some(hash) = first {
            if !loads.serving.is_empty() {
                let rack = loads.serving[reduce(hash, loads.serving.len())] as usize;
                if may_fit(rack) {
                    return Some(Route { rack, reason: RouteReason::WarmHash });
                }
            }
        }
        let rack = self.least_loaded(pool)?;
        may_fit(rack).then_some(Route { rack, reason: RouteReason::LeastLoaded })
    }

    /// [`route`](Self::route) for a placement request whose reservation is
    /// `reservation` (see [`Accounting::reservation`](crate::Accounting::reservation)).
    pub fn route_request(&self, request: &PlacementRequest, reservation: &Resources) -> Option<Route> {
        let first = (request.first_in_graph && request.pool != Pool::Memory)
            .then(|| component_hash(&request.app, &request.component));
        self.route(request.pool, reservation, request.triggered_from, first)
    }

    /// The racks to try, in order, after the racks in `tried` found no node
    /// with room: the least-loaded rack, then every serving rack in index
    /// order; only racks whose aggregate may fit, none twice, none of `tried`.
    pub fn reroute<'a>(
        &'a self,
        pool: Pool,
        demand: &'a Resources,
        tried: &'a [usize],
    ) -> impl Iterator<Item = usize> + 'a {
        let loads = &self.pools[pool_index(pool)];
        let best = self.least_loaded(pool);
        best.into_iter()
            .chain(loads.serving.iter().map(|&r| r as usize).filter(move |&r| Some(r) != best))
            .filter(move |r| !tried.contains(r))
            .filter(move |&r| loads.totals[r].may_fit(demand))
    }
}

/// Tree key of a rack: 0 when it serves nothing, else its load score in the
/// high half and the complement of its index in the low half (so ties go to
/// the lower index).
fn key(rack: usize, t: &PoolTotals) -> u64 {
    if t.nodes == 0 {
        return 0;
    }
    let frac = |free: u64, cap: u64| if cap == 0 { 1.0 } else { free as f64 / cap as f64 };
    let score = frac(t.free_millicores, t.capacity_millicores).min(frac(t.free_bytes, t.capacity_bytes));
    // 1 ..= 2^31: never zero, so a serving rack is told from no rack.
    let score = 1 + (score.clamp(0.0, 1.0) * f64::from(1u32 << 31)) as u64;
    (score << 32) | u64::from(!(rack as u32))
}

fn rack_of_key(key: u64) -> usize {
    !(key as u32) as usize
}

/// A max tournament tree over `n` leaves.
#[derive(Debug, Clone)]
struct MaxTree {
    size: usize,
    nodes: Vec<u64>,
}

impl MaxTree {
    fn new(n: usize) -> MaxTree {
        let size = n.max(1).next_power_of_two();
        MaxTree { size, nodes: vec![0; 2 * size] }
    }

    #[inline]
    fn set(&mut self, leaf: usize, value: u64) {
        let mut i = self.size + leaf;
        if i >= self.nodes.len() {
            return;
        }
        self.nodes[i] = value;
        while i > 1 {
            i /= 2;
            let m = self.nodes[2 * i].max(self.nodes[2 * i + 1]);
            if self.nodes[i] == m {
                break;
            }
            self.nodes[i] = m;
        }
    }

    #[inline]
    fn max(&self) -> u64 {
        self.nodes[1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_tree_tracks_updates() {
        let mut t = MaxTree::new(5);
        for (i, v) in [3, 9, 4, 1, 7].into_iter().enumerate() {
            t.set(i, v);
        }
        assert_eq!(t.max(), 9);
        t.set(1, 2);
        assert_eq!(t.max(), 7);
        t.set(4, 0);
        assert_eq!(t.max(), 4);
        t.set(99, 100);
        assert_eq!(t.max(), 4);
    }

    #[test]
    fn key_orders_by_free_fraction_then_index() {
        let t = |free: u64| PoolTotals {
            nodes: 1,
            capacity_millicores: 0,
            capacity_bytes: 100,
            free_millicores: 0,
            free_bytes: free,
        };
        assert!(key(0, &t(50)) > key(1, &t(40)));
        assert!(key(0, &t(50)) > key(1, &t(50)));
        assert!(key(3, &t(0)) > 0);
        assert_eq!(key(3, &PoolTotals::default()), 0);
        assert_eq!(rack_of_key(key(3, &t(10))), 3);
    }
}
