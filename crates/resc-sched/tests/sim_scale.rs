//! Deterministic simulations at scale, every step checked against a model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resc_core::ids::NodeId;
use resc_core::resources::Resources;
use resc_core::scheduler::{ClusterSpec, Placement, PlacementRequest, Pool, ScheduleError, Scheduler};
use resc_sched::sim::{empty_request, mixed_cluster, RequestGen, RequestMix};
use resc_sched::{Accounting, SchedConfig, TwoLevelScheduler};

const POOLS: [Pool; 3] = [Pool::Compute, Pool::Memory, Pool::Balanced];

fn pi(pool: Pool) -> usize {
    match pool {
        Pool::Compute => 0,
        Pool::Memory => 1,
        Pool::Balanced => 2,
    }
}

/// What the scheduler should hold, per node (ids are 0..n) and pool.
struct Model {
    cap: Vec<[Option<Resources>; 3]>,
    reserved: Vec<[Resources; 3]>,
    /// Nodes serving each pool.
    serving: [Vec<usize>; 3],
    rack: Vec<u32>,
}

impl Model {
    fn new(cluster: &ClusterSpec) -> Model {
        let mut serving: [Vec<usize>; 3] = Default::default();
        let mut cap = Vec::new();
        for (i, n) in cluster.nodes.iter().enumerate() {
            assert_eq!(n.id, NodeId(i as u32), "the model indexes nodes by id");
            let mut c = [None; 3];
            for (pool, r) in &n.pools {
                c[pi(*pool)] = Some(*r);
                serving[pi(*pool)].push(i);
            }
            cap.push(c);
        }
        Model {
            reserved: vec![[Resources::ZERO; 3]; cap.len()],
            cap,
            serving,
            rack: cluster.nodes.iter().map(|n| n.rack.0).collect(),
        }
    }

    fn free(&self, node: usize, pool: Pool) -> Option<Resources> {
        let p = pi(pool);
        self.cap.get(node)?[p].map(|c| c - self.reserved[node][p])
    }

    fn has_room(&self, node: NodeId, pool: Pool, demand: &Resources) -> bool {
        self.free(node.0 as usize, pool).is_some_and(|f| f.fits(demand))
    }

    fn check_node(&self, s: &dyn Scheduler, node: usize, pool: Pool, step: usize) {
        let p = pi(pool);
        let cap = self.cap[node][p].expect("checked nodes serve the pool");
        assert!(cap.fits(&self.reserved[node][p]), "step {step}: node {node} over capacity in {pool:?}");
        assert_eq!(s.free(NodeId(node as u32), pool), cap - self.reserved[node][p], "step {step}: free of node {node}");
    }
}

/// 64 racks × 32 nodes (physical and virtual pools), 10^6 operations
/// (placements and releases) of a seeded workload whose load swings from
/// about 20 % to past saturation, every step checked:
/// - no node over capacity, and `free` = capacity − reservations for the
///   node touched (the others did not change), all nodes every 100,000 steps;
/// - memory components only on memory-pool nodes, every placement in its pool,
///   reservations are the size-class rounding of the demand;
/// - node locality whenever a peer's node has room, trigger-node locality
///   whenever no peer rule applies and the triggering node has room;
/// - `NoCapacity` only when no node of the pool has room.
#[test]
fn two_level_invariants_at_scale() {
    const OPS: usize = 1_000_000;
    let cluster = mixed_cluster(64, 32);
    let mut s = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(11)).expect("valid cluster");
    let accounting = Accounting::default();
    let mut model = Model::new(&cluster);
    let nodes: Vec<NodeId> = cluster.nodes.iter().map(|n| n.id).collect();
    let mut generator = RequestGen::new(RequestMix::default(), nodes, 5);
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let mut live: Vec<Placement> = Vec::new();
    let mut recent: Vec<NodeId> = Vec::new();
    let mut request: PlacementRequest = empty_request();
    let (mut placed, mut refused, mut peer_checks, mut trigger_checks) = (0u64, 0u64, 0u64, 0u64);
    for step in 0..OPS {
        // The live target swings between ~10 k and ~110 k placements.
        let phase = (step % 200_000) as f64 / 200_000.0;
        let target = 10_000.0 + 100_000.0 * (std::f64::consts::PI * phase).sin();
        let place = live.is_empty() || rng.random_bool(if (live.len() as f64) < target { 0.7 } else { 0.3 });
        if place {
            generator.next_into(&mut request, &recent);
            let demand = accounting.reservation(request.demand);
            let peer = if request.pool == Pool::Memory {
                None
            } else {
                request.peers_on.iter().copied().find(|&n| model.has_room(n, request.pool, &demand))
            };
            let trigger = request
                .triggered_from
                .filter(|_| peer.is_none() && !request.first_in_graph && request.pool != Pool::Memory)
                .filter(|&n| model.has_room(n, request.pool, &demand));
            match s.place(&request) {
                Ok(p) => {
                    placed += 1;
                    let node = p.node.0 as usize;
                    assert_eq!(p.pool, request.pool, "step {step}: placed in another pool");
                    assert!(
                        model.cap[node][pi(p.pool)].is_some(),
                        "step {step}: {:?} on a node outside the pool",
                        p.pool
                    );
                    assert_eq!(p.rack.0, model.rack[node], "step {step}: wrong rack");
                    assert_eq!(p.demand, demand, "step {step}: reservation is not the rounded demand");
                    if let Some(peer) = peer {
                        peer_checks += 1;
                        assert_eq!(p.node, peer, "step {step}: a peer's node had room: {request:?}");
                    }
                    if let Some(trigger) = trigger {
                        trigger_checks += 1;
                        assert_eq!(p.node, trigger, "step {step}: the triggering node had room: {request:?}");
                    }
                    model.reserved[node][pi(p.pool)] += p.demand;
                    model.check_node(&s, node, p.pool, step);
                    if recent.len() < 4096 {
                        recent.push(p.node);
                    } else {
                        recent[step % 4096] = p.node;
                    }
                    live.push(p);
                }
                Err(ScheduleError::NoCapacity { pool, .. }) => {
                    refused += 1;
                    assert_eq!(pool, request.pool);
                    for &n in &model.serving[pi(pool)] {
                        assert!(
                            !model.free(n, pool).is_some_and(|f| f.fits(&demand)),
                            "step {step}: NoCapacity although node {n} has room in {pool:?}"
                        );
                    }
                }
                Err(e) => panic!("step {step}: unexpected error {e}"),
            }
        } else {
            let p = live.swap_remove(rng.random_range(0..live.len()));
            s.release(&p);
            let node = p.node.0 as usize;
            model.reserved[node][pi(p.pool)] = model.reserved[node][pi(p.pool)] - p.demand;
            model.check_node(&s, node, p.pool, step);
        }
        if step % 100_000 == 99_999 {
            for pool in POOLS {
                for &n in &model.serving[pi(pool)] {
                    model.check_node(&s, n, pool, step);
                }
                let used: u64 = model.serving[pi(pool)].iter().map(|&n| model.reserved[n][pi(pool)].memory_bytes).sum();
                assert_eq!(s.totals(pool).used_bytes(), used, "step {step}: cluster aggregate of {pool:?}");
            }
        }
    }
    let stats = *s.stats();
    assert_eq!(stats.placed, placed);
    assert_eq!(stats.refused, refused);
    assert!(refused > 0, "the load never reached saturation");
    assert!(stats.rerouted > 0, "no request was ever re-routed");
    assert!(
        peer_checks > 10_000 && trigger_checks > 10_000,
        "locality rarely exercised: {peer_checks} {trigger_checks}"
    );
    eprintln!("placed {placed}, refused {refused}, {stats:?}");
}
