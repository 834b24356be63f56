//! Conformance checks for [`Scheduler`]: see the contract in
//! [`crate::scheduler`].
//!
//! The checks build their own clusters and ask a factory for a fresh
//! scheduler over each, so one factory serves every check:
//!
//! ```
//! use resc_core::scheduler::{PoolAwareScheduler, Scheduler};
//! resc_core::testkit::scheduler::scheduler_suite(|cluster| {
//!     Box::new(PoolAwareScheduler::new(cluster, 7)) as Box<dyn Scheduler>
//! });
//! ```

use crate::ids::{NodeId, RackId};
use crate::resources::{Resources, MIB};
use crate::scheduler::{ClusterSpec, NodeSpec, Placement, PlacementRequest, Pool, ScheduleError, Scheduler};
use std::collections::BTreeMap;

/// Builds a fresh scheduler over a cluster.
pub type Factory<'a> = &'a dyn Fn(&ClusterSpec) -> Box<dyn Scheduler>;

const POOLS: [Pool; 3] = [Pool::Compute, Pool::Memory, Pool::Balanced];

/// Runs every scheduler check.
pub fn scheduler_suite(factory: impl Fn(&ClusterSpec) -> Box<dyn Scheduler>) {
    let factory: Factory<'_> = &factory;
    check_placement_in_requested_pool(factory);
    check_never_overcommits(factory);
    check_no_capacity(factory);
    check_release_restores(factory);
    check_deterministic(factory);
}

/// Two racks of three nodes; the pools a node serves differ, and so do capacities.
fn cluster() -> ClusterSpec {
    let compute = |cores: u32, mib: u64| (Pool::Compute, Resources::new(cores * 1000, mib * MIB));
    let memory = |mib: u64| (Pool::Memory, Resources::new(0, mib * MIB));
    let balanced = |cores: u32, mib: u64| (Pool::Balanced, Resources::new(cores * 1000, mib * MIB));
    let node = |id: u32, rack: u32, pools: Vec<(Pool, Resources)>| NodeSpec {
        id: NodeId(id),
        rack: RackId(rack),
        pools: pools.into_iter().collect(),
    };
    ClusterSpec {
        nodes: vec![
            node(0, 0, vec![compute(4, 1024)]),
            node(1, 0, vec![memory(4096)]),
            node(2, 0, vec![compute(2, 512), memory(2048), balanced(4, 2048)]),
            node(3, 1, vec![compute(8, 2048)]),
            node(4, 1, vec![memory(1024)]),
            node(5, 1, vec![balanced(8, 4096)]),
        ],
    }
}

fn capacity(spec: &ClusterSpec, node: NodeId, pool: Pool) -> Option<Resources> {
    spec.nodes.iter().find(|n| n.id == node).and_then(|n| n.pools.get(&pool).copied())
}

fn request(pool: Pool, component: &str, demand: Resources) -> PlacementRequest {
    PlacementRequest {
        app: "testkit".into(),
        component: component.into(),
        pool,
        demand,
        first_in_graph: false,
        triggered_from: None,
        peers_on: Vec::new(),
    }
}

/// A demand that fits some node of `pool` in the testkit cluster. Its
/// memory is a power of two from 64 MiB, so a scheduler that rounds up to
/// size classes reserves it as asked, and the NoCapacity check (which can
/// only know the demand) holds for it too.
fn demand(pool: Pool, i: usize) -> Resources {
    let mib = [64, 128, 256][i % 3];
    match pool {
        Pool::Memory => Resources::memory(mib * MIB),
        Pool::Compute | Pool::Balanced => Resources::new([250, 500, 1000][i % 3], mib * MIB),
    }
}

/// Requests of every shape for `pool`: plain, first in graph, triggered from
/// a node (also one outside the pool), with peers (also outside the pool).
fn varied_requests(pool: Pool, count: usize) -> Vec<PlacementRequest> {
    (0..count).map(|i| varied_request(pool, i)).collect()
}

/// The `i`-th of [`varied_requests`].
fn varied_request(pool: Pool, i: usize) -> PlacementRequest {
    let mut r = request(pool, &format!("c{}", i % 5), demand(pool, i));
    match i % 4 {
        0 => {}
        1 => r.first_in_graph = true,
        2 => r.triggered_from = Some(NodeId((i % 6) as u32)),
        _ => r.peers_on = vec![NodeId(((i + 1) % 6) as u32), NodeId(((i + 3) % 6) as u32)],
    }
    r
}

fn assert_valid(spec: &ClusterSpec, request: &PlacementRequest, placement: &Placement, check: &str) {
    let node = spec
        .nodes
        .iter()
        .find(|n| n.id == placement.node)
        .unwrap_or_else(|| panic!("{check}: placed on {}, which is not in the cluster", placement.node));
    assert!(
        node.pools.contains_key(&request.pool),
        "{check}: a {:?} component was placed on {}, which does not serve that pool (peers_on {:?}, triggered_from {:?})",
        request.pool,
        node.id,
        request.peers_on,
        request.triggered_from
    );
    assert_eq!(placement.pool, request.pool, "{check}: the placement names another pool than requested");
    assert_eq!(
        placement.rack, node.rack,
        "{check}: the placement names {} but {} is in {}",
        placement.rack, node.id, node.rack
    );
    assert!(
        placement.demand.fits(&request.demand),
        "{check}: the placement reserved {:?}, less than the {:?} requested",
        placement.demand,
        request.demand
    );
}

/// Placements land in the requested pool, on nodes that serve it, whatever
/// locality hints the request carries.
pub fn check_placement_in_requested_pool(factory: Factory<'_>) {
    const CHECK: &str = "scheduler/placement_in_requested_pool";
    let spec = cluster();
    let mut scheduler = factory(&spec);
    for pool in POOLS {
        let mut placed = Vec::new();
        for request in varied_requests(pool, 12) {
            let placement = scheduler
                .place(&request)
                .unwrap_or_else(|e| panic!("{CHECK}: placing {request:?} on an almost empty cluster failed: {e}"));
            assert_valid(&spec, &request, &placement, CHECK);
            placed.push(placement);
        }
        for p in &placed {
            scheduler.release(p);
        }
    }
}

/// Reserved amounts per (node, pool), from the placements a check made.
type Ledger = BTreeMap<(NodeId, Pool), Resources>;

fn reserved(ledger: &Ledger, node: NodeId, pool: Pool) -> Resources {
    ledger.get(&(node, pool)).copied().unwrap_or_default()
}

/// Placing until `NoCapacity` never reserves more than a node's capacity in a
/// pool, `free` reports capacity minus reservations, and `NoCapacity` comes
/// only when no node has room.
pub fn check_never_overcommits(factory: Factory<'_>) {
    const CHECK: &str = "scheduler/never_overcommits";
    let spec = cluster();
    let mut scheduler = factory(&spec);
    let mut ledger = Ledger::new();
    for pool in POOLS {
        let total: u64 = spec.nodes.iter().filter_map(|n| n.pools.get(&pool)).map(|r| r.memory_bytes).sum();
        // Bounded: every placement takes at least 64 MiB.
        let limit = (total / (64 * MIB)) as usize + 10;
        let mut refused = 0;
        for (i, request) in varied_requests(pool, limit).into_iter().enumerate() {
            match scheduler.place(&request) {
                Ok(placement) => {
                    assert_valid(&spec, &request, &placement, CHECK);
                    let entry = ledger.entry((placement.node, pool)).or_default();
                    *entry += placement.demand;
                    let cap = capacity(&spec, placement.node, pool).unwrap_or_default();
                    assert!(
                        cap.fits(entry),
                        "{CHECK}: placement {i} over-commits {} in the {pool:?} pool: {entry:?} reserved of {cap:?}",
                        placement.node
                    );
                }
                Err(ScheduleError::NoCapacity { pool: p, .. }) => {
                    assert_eq!(p, pool, "{CHECK}: NoCapacity names the wrong pool");
                    refused += 1;
                    for node in spec.nodes.iter().filter(|n| n.pools.contains_key(&pool)) {
                        let left = node.pools[&pool] - reserved(&ledger, node.id, pool);
                        assert!(
                            !left.fits(&request.demand),
                            "{CHECK}: NoCapacity for {:?} in the {pool:?} pool although {} has {left:?} free",
                            request.demand,
                            node.id
                        );
                    }
                }
            }
            for node in &spec.nodes {
                if let Some(cap) = node.pools.get(&pool) {
                    let expected = *cap - reserved(&ledger, node.id, pool);
                    assert_eq!(
                        scheduler.free(node.id, pool),
                        expected,
                        "{CHECK}: free({}, {pool:?}) disagrees with capacity minus reservations",
                        node.id
                    );
                }
            }
        }
        assert!(
            refused > 0,
            "{CHECK}: {limit} placements of at least 64 MiB fit into {total} bytes of the {pool:?} pool"
        );
    }
}

/// A demand no node can hold, or a pool no node serves, is `NoCapacity`, and
/// the refusal reserves nothing.
pub fn check_no_capacity(factory: Factory<'_>) {
    const CHECK: &str = "scheduler/no_capacity";
    let spec = cluster();
    let mut scheduler = factory(&spec);
    let before: Vec<Resources> = spec.nodes.iter().flat_map(|n| POOLS.map(|p| scheduler.free(n.id, p))).collect();
    let huge = request(Pool::Memory, "huge", Resources::memory(1 << 50));
    match scheduler.place(&huge) {
        Err(ScheduleError::NoCapacity { pool, demand, component }) => {
            assert_eq!(
                (pool, demand, component.as_str()),
                (Pool::Memory, huge.demand, "huge"),
                "{CHECK}: NoCapacity misdescribes the request"
            );
        }
        other => panic!("{CHECK}: a demand larger than every node returned {other:?}, expected NoCapacity"),
    }
    let cores = request(Pool::Compute, "cores", Resources::new(1_000_000, MIB));
    assert!(
        matches!(scheduler.place(&cores), Err(ScheduleError::NoCapacity { .. })),
        "{CHECK}: a CPU demand larger than every node was placed"
    );
    let after: Vec<Resources> = spec.nodes.iter().flat_map(|n| POOLS.map(|p| scheduler.free(n.id, p))).collect();
    assert_eq!(before, after, "{CHECK}: a refused placement changed free capacity");

    let mut no_balanced = cluster();
    for node in &mut no_balanced.nodes {
        node.pools.remove(&Pool::Balanced);
    }
    no_balanced.nodes.retain(|n| !n.pools.is_empty());
    let mut scheduler = factory(&no_balanced);
    let result = scheduler.place(&request(Pool::Balanced, "agg", Resources::new(100, MIB)));
    assert!(
        matches!(result, Err(ScheduleError::NoCapacity { pool: Pool::Balanced, .. })),
        "{CHECK}: a component for a pool no node serves returned {result:?}, expected NoCapacity"
    );
}

/// Releasing a placement returns exactly its reservation, in any order.
pub fn check_release_restores(factory: Factory<'_>) {
    const CHECK: &str = "scheduler/release_restores";
    let spec = cluster();
    let mut scheduler = factory(&spec);
    let mut placed = Vec::new();
    for pool in POOLS {
        for request in varied_requests(pool, 8) {
            let placement =
                scheduler.place(&request).unwrap_or_else(|e| panic!("{CHECK}: placing {request:?} failed: {e}"));
            placed.push(placement);
        }
    }
    // Release every other placement first, then the rest backwards.
    let order: Vec<usize> = (0..placed.len()).step_by(2).chain((1..placed.len()).step_by(2).rev()).collect();
    for i in order {
        let p = placed[i];
        let before = scheduler.free(p.node, p.pool);
        scheduler.release(&p);
        assert_eq!(
            scheduler.free(p.node, p.pool),
            before + p.demand,
            "{CHECK}: releasing {:?} on {} did not return exactly its reservation",
            p.demand,
            p.node
        );
    }
    for node in &spec.nodes {
        for (pool, cap) in &node.pools {
            assert_eq!(
                scheduler.free(node.id, *pool),
                *cap,
                "{CHECK}: after releasing everything {} is not back to its capacity",
                node.id
            );
        }
    }
    // Everything fits again.
    for request in varied_requests(Pool::Memory, 8) {
        scheduler.place(&request).unwrap_or_else(|e| panic!("{CHECK}: placing after releasing everything failed: {e}"));
    }
}

/// Two schedulers over the same cluster, given the same requests and
/// releases, make the same placements.
pub fn check_deterministic(factory: Factory<'_>) {
    const CHECK: &str = "scheduler/deterministic";
    let spec = cluster();
    let run = || {
        let mut scheduler = factory(&spec);
        let mut results = Vec::new();
        let mut live: Vec<Placement> = Vec::new();
        for (i, pool) in POOLS.iter().cycle().take(90).enumerate() {
            let request = varied_request(*pool, i);
            let result = scheduler.place(&request);
            if let Ok(p) = &result {
                live.push(*p);
            }
            results.push(result);
            if i % 3 == 2 && !live.is_empty() {
                let p = live.remove(i % live.len());
                scheduler.release(&p);
            }
        }
        results
    };
    let (first, second) = (run(), run());
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_eq!(a, b, "{CHECK}: request {i}: two schedulers over the same cluster placed differently");
    }
    assert!(first.iter().any(Result::is_ok), "{CHECK}: no request was placed at all");
}
