//! The rack-level scheduler: maps physical components to the nodes of one
//! rack (paper §5.1, DESIGN.md §6).
//!
//! # Policy
//!
//! For a compute or balanced component, the first rule that yields a node of
//! the requested pool with room wins:
//!
//! 1. **node locality**: a node of [`peers_on`](PlacementRequest::peers_on)
//!    in this rack, in the request's order;
//! 2. **warm start**: for the [first component of a
//!    graph](PlacementRequest::first_in_graph), the node at position
//!    `hash(app, component) mod n` among the pool's nodes, probing forward to
//!    the next node with room, so repeated invocations land on the node that
//!    keeps their sandbox warm (the hash is stable across runs and Rust
//!    versions);
//! 3. **trigger locality**: the [`triggered_from`](PlacementRequest::triggered_from)
//!    node, when it is in this rack;
//! 4. **pool awareness**: a node with room, chosen by the [`Fit`]: at random
//!    (three uniform probes, then a scan from a random position) or first-fit.
//!
//! A memory component always takes rule 4: it has no environment to keep
//! warm and runs on any node of the memory pool.
//!
//! # Cost
//!
//! Nodes are indexed densely; each pool keeps its members' free amounts in a
//! contiguous array plus the rack's aggregate, so a placement is a handful
//! of comparisons (at most one pass over the pool's nodes), allocates
//! nothing, and looks node ids up in a direct table.

use crate::accounting::{pool_index, Accounting, Fit, POOLS};
use crate::config::{fits, PlacementStats, PoolTotals, SchedConfig};
use crate::error::BuildError;
use crate::hash::{component_hash, mix, reduce};
use crate::lookup::NodeLookup;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resc_core::ids::{NodeId, RackId};
use resc_core::resources::Resources;
use resc_core::scheduler::{ClusterSpec, NodeSpec, Placement, PlacementRequest, Pool, ScheduleError, Scheduler};
use serde::{Deserialize, Serialize};

/// "Not a member of this pool."
const ABSENT: u32 = u32::MAX;

/// Random probes before the scan in [`Fit::Random`].
const PROBES: usize = 3;

/// The nodes of one pool within a rack, structure-of-arrays.
#[derive(Debug, Clone, Default)]
struct PoolNodes {
    /// The node (local index) of each member.
    local: Vec<u32>,
    /// Free amount of each member.
    free: Vec<Resources>,
    /// Capacity of each member.
    cap: Vec<Resources>,
    /// Aggregates over the members.
    totals: PoolTotals,
}

/// A chosen member of a pool and the rule that chose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// Member position in the pool.
    pub(crate) member: usize,
    /// The rule.
    pub(crate) rule: Rule,
}

/// The placement rule that chose a node (the steps of the rack policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// 1. The node of a running peer.
    PeerNode,
    /// 2. The hash of (app, component), for the first component of a graph.
    WarmHash,
    /// 3. The node of the triggering component.
    TriggerNode,
    /// 4. A node with room (random or first-fit).
    AnyNode,
}

/// Places physical components on the nodes of one rack. See the [module
/// documentation](self) for the policy.
///
/// It is usable alone (it implements [`Scheduler`]), and is the per-rack
/// half of [`TwoLevelScheduler`](crate::TwoLevelScheduler).
#[derive(Debug, Clone)]
pub struct RackScheduler {
    ids: Vec<NodeId>,
    racks: Vec<RackId>,
    /// Member position of each node in each pool, or `ABSENT`.
    pos: Vec<[u32; 3]>,
    pools: [PoolNodes; 3],
    lookup: NodeLookup,
    accounting: Accounting,
    fit: Fit,
    rng: ChaCha8Rng,
    stats: PlacementStats,
}

impl RackScheduler {
    /// A rack scheduler over `nodes` (normally the nodes of one rack; each
    /// placement names its node's own rack, so a flat scheduler over a whole
    /// cluster works too).
    pub fn new(nodes: &[NodeSpec], config: &SchedConfig) -> Result<RackScheduler, BuildError> {
        Self::with_stream(nodes, config, 0)
    }

    /// A flat rack scheduler over every node of `cluster`.
    pub fn from_cluster(cluster: &ClusterSpec, config: &SchedConfig) -> Result<RackScheduler, BuildError> {
        Self::new(&cluster.nodes, config)
    }

    /// As [`new`](Self::new), with the random stream `stream` of the seed
    /// (one per rack of a two-level scheduler).
    pub(crate) fn with_stream(nodes: &[NodeSpec], config: &SchedConfig, stream: u64) -> Result<Self, BuildError> {
        let ids: Vec<NodeId> = nodes.iter().map(|n| n.id).collect();
        let lookup = NodeLookup::new(&ids).map_err(BuildError::DuplicateNode)?;
        let mut pools: [PoolNodes; 3] = Default::default();
        let mut pos = vec![[ABSENT; 3]; nodes.len()];
        for (local, node) in nodes.iter().enumerate() {
            for (pool, cap) in &node.pools {
                let p = pool_index(*pool);
                let members = &mut pools[p];
                pos[local][p] = members.local.len() as u32;
                members.local.push(local as u32);
                members.free.push(*cap);
                members.cap.push(*cap);
                let t = &mut members.totals;
                t.nodes += 1;
                t.capacity_millicores += u64::from(cap.millicores);
                t.capacity_bytes = t.capacity_bytes.saturating_add(cap.memory_bytes);
            }
        }
        for members in &mut pools {
            members.totals.free_millicores = members.totals.capacity_millicores;
            members.totals.free_bytes = members.totals.capacity_bytes;
        }
        Ok(RackScheduler {
            ids,
            racks: nodes.iter().map(|n| n.rack).collect(),
            pos,
            pools,
            lookup,
            accounting: config.accounting.clone(),
            fit: config.fit,
            rng: ChaCha8Rng::seed_from_u64(mix(config.seed ^ mix(stream))),
            stats: PlacementStats::default(),
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the rack has no node.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The node ids, in the order given at construction.
    pub fn nodes(&self) -> &[NodeId] {
        &self.ids
    }

    /// Capacity and free amount of `pool` summed over the rack's nodes.
    pub fn totals(&self, pool: Pool) -> PoolTotals {
        self.pools[pool_index(pool)].totals
    }

    /// What each rule placed so far (placements through
    /// [`place_request`](Self::place_request) / [`Scheduler::place`]).
    pub fn stats(&self) -> &PlacementStats {
        &self.stats
    }

    /// How reservations are computed.
    pub fn accounting(&self) -> &Accounting {
        &self.accounting
    }

    /// Places `request` by the rack policy; on success the reservation (the
    /// rounded demand) is held until [`release`](Scheduler::release).
    pub fn place_request(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
        let demand = self.accounting.reservation(request.demand);
        let p = pool_index(request.pool);
        let first = (request.first_in_graph && request.pool != Pool::Memory)
            .then(|| component_hash(&request.app, &request.component));
        let lookup = &self.lookup;
        let peers = request.peers_on.iter().filter_map(|&n| lookup.get(n));
        let trigger = request.triggered_from.and_then(|n| self.lookup.get(n));
        let chosen =
            choose(&self.pools[p], &self.pos, p, &demand, request.pool, first, peers, trigger, self.fit, &mut self.rng);
        match chosen {
            Some(c) => {
                self.stats.count(c.rule);
                Ok(self.commit(p, c, demand))
            }
            None => {
                self.stats.refused += 1;
                Err(no_capacity(request))
            }
        }
    }

    /// Chooses a member of pool `p` by the rack policy, with node hints as
    /// local indices. Reserves nothing.
    pub(crate) fn choose_local(
        &mut self,
        p: usize,
        demand: &Resources,
        pool: Pool,
        first: Option<u64>,
        peers: impl Iterator<Item = usize>,
        trigger: Option<usize>,
    ) -> Option<Chosen> {
        choose(&self.pools[p], &self.pos, p, demand, pool, first, peers, trigger, self.fit, &mut self.rng)
    }

    /// The member position of node `local` in pool `p` if it fits `demand`.
    #[inline]
    pub(crate) fn fits_on(&self, local: usize, p: usize, demand: &Resources) -> Option<Chosen> {
        let m = *self.pos.get(local)?.get(p)?;
        (m != ABSENT && fits(&self.pools[p].free[m as usize], demand))
            .then_some(Chosen { member: m as usize, rule: Rule::PeerNode })
    }

    /// Reserves `demand` on a chosen member of pool `p`.
    pub(crate) fn commit(&mut self, p: usize, chosen: Chosen, demand: Resources) -> Placement {
        let members = &mut self.pools[p];
        let m = chosen.member;
        let free = &mut members.free[m];
        *free = *free - demand;
        members.totals.free_millicores -= u64::from(demand.millicores);
        members.totals.free_bytes -= demand.memory_bytes;
        let local = members.local[m] as usize;
        Placement { node: self.ids[local], rack: self.racks[local], pool: POOLS[p], demand }
    }

    /// Returns `amount` to node `local` in pool `p`, never above capacity.
    /// Returns what was actually returned.
    pub(crate) fn release_local(&mut self, local: usize, p: usize, amount: Resources) -> Resources {
        let Some(&m) = self.pos.get(local).and_then(|pos| pos.get(p)) else {
            return Resources::ZERO;
        };
        if m == ABSENT {
            return Resources::ZERO;
        }
        let members = &mut self.pools[p];
        let (cap, free) = (members.cap[m as usize], &mut members.free[m as usize]);
        let restored = Resources::new(
            free.millicores.saturating_add(amount.millicores).min(cap.millicores),
            free.memory_bytes.saturating_add(amount.memory_bytes).min(cap.memory_bytes),
        );
        let applied = restored - *free;
        *free = restored;
        members.totals.free_millicores += u64::from(applied.millicores);
        members.totals.free_bytes += applied.memory_bytes;
        applied
    }

    /// Free amount of node `local` in pool `p` (zero if it does not serve it).
    pub(crate) fn free_local(&self, local: usize, p: usize) -> Resources {
        match self.pos.get(local).map(|pos| pos[p]) {
            Some(m) if m != ABSENT => self.pools[p].free[m as usize],
            _ => Resources::ZERO,
        }
    }

    /// Capacity of node `local` in pool `p` (`None` if it does not serve it).
    pub(crate) fn capacity_local(&self, local: usize, p: usize) -> Option<Resources> {
        match self.pos.get(local).map(|pos| pos[p]) {
            Some(m) if m != ABSENT => Some(self.pools[p].cap[m as usize]),
            _ => None,
        }
    }

    /// Capacity of `node` in `pool`, or `None` if the node is not here or
    /// does not serve the pool.
    pub fn capacity(&self, node: NodeId, pool: Pool) -> Option<Resources> {
        self.capacity_local(self.lookup.get(node)?, pool_index(pool))
    }
}

/// The rack policy over one pool (see the module docs).
#[allow(clippy::too_many_arguments)]
#[inline]
fn choose(
    members: &PoolNodes,
    pos: &[[u32; 3]],
    p: usize,
    demand: &Resources,
    pool: Pool,
    first: Option<u64>,
    peers: impl Iterator<Item = usize>,
    trigger: Option<usize>,
    fit: Fit,
    rng: &mut ChaCha8Rng,
) -> Option<Chosen> {
    let n = members.free.len();
    if n == 0 || !members.totals.may_fit(demand) {
        return None;
    }
    let member_fits = |local: usize, rule: Rule| -> Option<Chosen> {
        let m = *pos.get(local)?.get(p)?;
        (m != ABSENT && fits(&members.free[m as usize], demand)).then_some(Chosen { member: m as usize, rule })
    };
    if pool != Pool::Memory {
        // 1. Node locality.
        for local in peers {
            if let Some(c) = member_fits(local, Rule::PeerNode) {
                return Some(c);
            }
        }
        // 2. Warm start: hash, then probe forward.
        if let Some(hash) = first {
            return scan_from(&members.free, reduce(hash, n), demand, Rule::WarmHash);
        }
        // 3. The triggering node.
        if let Some(c) = trigger.and_then(|local| member_fits(local, Rule::TriggerNode)) {
            return Some(c);
        }
    }
    // 4. Any node with room.
    match fit {
        Fit::FirstFit => scan_from(&members.free, 0, demand, Rule::AnyNode),
        Fit::Random => {
            if n > PROBES {
                for _ in 0..PROBES {
                    let m = reduce(rng.next_u64(), n);
                    if fits(&members.free[m], demand) {
                        return Some(Chosen { member: m, rule: Rule::AnyNode });
                    }
                }
            }
            scan_from(&members.free, reduce(rng.next_u64(), n), demand, Rule::AnyNode)
        }
    }
}

/// The first member at or after `start` (wrapping) that fits.
#[inline]
fn scan_from(free: &[Resources], start: usize, demand: &Resources, rule: Rule) -> Option<Chosen> {
    let (tail, head) = free.split_at(start.min(free.len()));
    head.iter()
        .position(|f| fits(f, demand))
        .map(|i| i + start)
        .or_else(|| tail.iter().position(|f| fits(f, demand)))
        .map(|member| Chosen { member, rule })
}

/// The error for a request no node can take.
pub(crate) fn no_capacity(request: &PlacementRequest) -> ScheduleError {
    ScheduleError::NoCapacity { pool: request.pool, demand: request.demand, component: request.component.clone() }
}

impl Scheduler for RackScheduler {
    fn place(&mut self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
        self.place_request(request)
    }

    fn release(&mut self, placement: &Placement) {
        if let Some(local) = self.lookup.get(placement.node) {
            self.release_local(local, pool_index(placement.pool), placement.demand);
        }
    }

    fn free(&self, node: NodeId, pool: Pool) -> Resources {
        self.lookup.get(node).map_or(Resources::ZERO, |local| self.free_local(local, pool_index(pool)))
    }
}
