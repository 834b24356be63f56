//! Property tests of the placement policy's edge cases: racks with nothing
//! free, nodes in several pools, zero demands, unknown hint nodes, releases
//! of placements twice or of foreign ones — against a model.

use proptest::prelude::*;
use resc_core::ids::{NodeId, RackId};
use resc_core::resources::{Resources, GIB, MIB};
use resc_core::scheduler::{ClusterSpec, NodeSpec, Placement, PlacementRequest, Pool, ScheduleError, Scheduler};
use resc_sched::{Accounting, RackScheduler, SchedConfig, TwoLevelScheduler};
use std::collections::BTreeMap;

const POOLS: [Pool; 3] = [Pool::Compute, Pool::Memory, Pool::Balanced];

fn pool_of(i: u8) -> Pool {
    POOLS[usize::from(i % 3)]
}

/// Node `i` of rack `rack`, serving the pools in `mask` with capacities
/// from `sizes` (zero included).
fn node(id: u32, rack: u32, mask: u8, sizes: (u8, u8)) -> NodeSpec {
    let cap = |k: u8| -> Resources {
        match k % 4 {
            0 => Resources::ZERO,
            1 => Resources::new(1000, 256 * MIB),
            2 => Resources::new(4000, GIB),
            _ => Resources::new(8000, 4 * GIB + 32 * MIB),
        }
    };
    let mut pools = BTreeMap::new();
    for (bit, pool) in POOLS.iter().enumerate() {
        if mask & (1 << bit) != 0 {
            let k = if bit == 1 { sizes.1 } else { sizes.0 };
            let mut c = cap(k);
            if *pool == Pool::Memory {
                c.millicores = 0;
            }
            pools.insert(*pool, c);
        }
    }
    NodeSpec { id: NodeId(id), rack: RackId(rack), pools }
}

fn cluster() -> impl Strategy<Value = ClusterSpec> {
    prop::collection::vec((0u32..4, 0u8..8, any::<(u8, u8)>()), 1..14).prop_map(|nodes| ClusterSpec {
        nodes: nodes
            .into_iter()
            .enumerate()
            .map(|(i, (rack, mask, sizes))| node(i as u32 * 3, rack, mask, sizes))
            .collect(),
    })
}

#[derive(Debug, Clone)]
enum Op {
    Place {
        pool: u8,
        demand: u8,
        first: bool,
        trigger: Option<u32>,
        peers: Vec<u32>,
        app: u8,
    },
    /// Release the live placement at this index (mod len).
    Release(usize),
    /// Release the placement released last, a second time.
    ReleaseAgain,
    /// Release a placement the scheduler never made.
    ReleaseForeign {
        node: u32,
        pool: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (any::<u8>(), any::<u8>(), any::<bool>(), prop::option::of(0u32..45), prop::collection::vec(0u32..45, 0..3), 0u8..3)
            .prop_map(|(pool, demand, first, trigger, peers, app)| Op::Place { pool, demand, first, trigger, peers, app }),
        3 => any::<usize>().prop_map(Op::Release),
        1 => Just(Op::ReleaseAgain),
        1 => (0u32..45, any::<u8>()).prop_map(|(node, pool)| Op::ReleaseForeign { node, pool }),
    ]
}

fn demand(pool: Pool, k: u8) -> Resources {
    let mem = [0, 1, 64 * MIB, 100 * MIB, 256 * MIB, GIB, 3 * GIB / 2, 1 << 45][usize::from(k % 8)];
    let cpu = if pool == Pool::Memory { 0 } else { [0, 250, 1000, 5000][usize::from(k / 8 % 4)] };
    Resources::new(cpu, mem)
}

/// The model: free per (node, pool), with release clamped at capacity.
struct Model {
    spec: ClusterSpec,
    free: BTreeMap<(NodeId, Pool), Resources>,
}

impl Model {
    fn new(spec: &ClusterSpec) -> Model {
        let free = spec.nodes.iter().flat_map(|n| n.pools.iter().map(move |(p, r)| ((n.id, *p), *r))).collect();
        Model { spec: spec.clone(), free }
    }

    fn cap(&self, node: NodeId, pool: Pool) -> Option<Resources> {
        self.spec.nodes.iter().find(|n| n.id == node).and_then(|n| n.pools.get(&pool).copied())
    }

    fn room(&self, node: NodeId, pool: Pool, demand: &Resources) -> bool {
        self.free.get(&(node, pool)).is_some_and(|f| f.fits(demand))
    }

    fn release(&mut self, p: &Placement) {
        if let (Some(cap), Some(free)) = (self.cap(p.node, p.pool), self.free.get_mut(&(p.node, p.pool))) {
            let r = *free + p.demand;
            *free = Resources::new(r.millicores.min(cap.millicores), r.memory_bytes.min(cap.memory_bytes));
        }
    }
}

fn run(
    spec: &ClusterSpec,
    config: SchedConfig,
    two_level: bool,
    ops: &[Op],
) -> Result<Vec<Option<Placement>>, TestCaseError> {
    let accounting: Accounting = config.accounting.clone();
    let mut s: Box<dyn Scheduler> = if two_level {
        Box::new(TwoLevelScheduler::new(spec, config).map_err(|e| TestCaseError::fail(e.to_string()))?)
    } else {
        Box::new(RackScheduler::from_cluster(spec, &config).map_err(|e| TestCaseError::fail(e.to_string()))?)
    };
    let mut model = Model::new(spec);
    let mut live: Vec<Placement> = Vec::new();
    let mut last_released: Option<Placement> = None;
    let mut outcomes = Vec::new();
    for op in ops {
        match op {
            Op::Place { pool, demand: k, first, trigger, peers, app } => {
                let pool = pool_of(*pool);
                let request = PlacementRequest {
                    app: format!("a{app}"),
                    component: format!("c{k}"),
                    pool,
                    demand: demand(pool, *k),
                    first_in_graph: *first,
                    triggered_from: trigger.map(NodeId),
                    peers_on: peers.iter().copied().map(NodeId).collect(),
                };
                let reservation = accounting.reservation(request.demand);
                let peer = (pool != Pool::Memory)
                    .then(|| request.peers_on.iter().copied().find(|&n| model.room(n, pool, &reservation)))
                    .flatten();
                match s.place(&request) {
                    Ok(p) => {
                        prop_assert_eq!(p.pool, pool);
                        prop_assert_eq!(p.demand, reservation);
                        prop_assert!(p.demand.fits(&request.demand));
                        let node = spec.nodes.iter().find(|n| n.id == p.node);
                        prop_assert!(node.is_some_and(|n| n.rack == p.rack && n.pools.contains_key(&pool)));
                        prop_assert!(model.room(p.node, pool, &p.demand), "over capacity: {:?}", p);
                        if let Some(peer) = peer {
                            prop_assert_eq!(p.node, peer, "a peer had room");
                        }
                        if let Some(free) = model.free.get_mut(&(p.node, pool)) {
                            *free = *free - p.demand;
                        }
                        live.push(p);
                        outcomes.push(Some(p));
                    }
                    Err(ScheduleError::NoCapacity { pool: refused, demand, .. }) => {
                        prop_assert_eq!((refused, demand), (pool, request.demand));
                        let anywhere = spec.nodes.iter().any(|n| model.room(n.id, pool, &reservation));
                        prop_assert!(!anywhere, "NoCapacity although a node has room");
                        outcomes.push(None);
                    }
                    Err(e) => return Err(TestCaseError::fail(format!("unexpected {e}"))),
                }
            }
            Op::Release(i) => {
                if !live.is_empty() {
                    let p = live.swap_remove(i % live.len());
                    s.release(&p);
                    model.release(&p);
                    last_released = Some(p);
                }
            }
            Op::ReleaseAgain => {
                if let Some(p) = last_released {
                    s.release(&p);
                    model.release(&p);
                }
            }
            Op::ReleaseForeign { node, pool } => {
                let p = Placement {
                    node: NodeId(*node),
                    rack: RackId(7),
                    pool: pool_of(*pool),
                    demand: Resources::new(500, 128 * MIB),
                };
                s.release(&p);
                model.release(&p);
            }
        }
        // Every node and pool, including pools a node does not serve.
        for n in &spec.nodes {
            for pool in POOLS {
                let expected = model.free.get(&(n.id, pool)).copied().unwrap_or_default();
                prop_assert_eq!(s.free(n.id, pool), expected, "free({}, {:?})", n.id, pool);
                if let Some(cap) = n.pools.get(&pool) {
                    prop_assert!(cap.fits(&expected));
                }
            }
        }
    }
    Ok(outcomes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn two_level_size_classes_matches_the_model(spec in cluster(), ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        run(&spec, SchedConfig::default().with_seed(seed), true, &ops)?;
    }

    #[test]
    fn two_level_whole_first_fit_matches_the_model(spec in cluster(), ops in prop::collection::vec(op(), 1..60)) {
        run(&spec, SchedConfig::whole_first_fit(), true, &ops)?;
    }

    #[test]
    fn flat_rack_matches_the_model(spec in cluster(), ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        run(&spec, SchedConfig::default().with_seed(seed), false, &ops)?;
    }

    #[test]
    fn same_seed_same_placements(spec in cluster(), ops in prop::collection::vec(op(), 1..40), seed in any::<u64>()) {
        let a = run(&spec, SchedConfig::default().with_seed(seed), true, &ops)?;
        let b = run(&spec, SchedConfig::default().with_seed(seed), true, &ops)?;
        prop_assert_eq!(a, b);
    }

    /// A first component placed, released and placed again lands on the
    /// same node (the warm-start hash), whatever else the cluster holds.
    #[test]
    fn first_components_return_to_their_node(spec in cluster(), ops in prop::collection::vec(op(), 0..30), app in "[a-z]{1,8}", comp in "[a-z]{1,8}") {
        let mut s = TwoLevelScheduler::new(&spec, SchedConfig::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        for op in &ops {
            if let Op::Place { pool, demand: k, .. } = op {
                let pool = pool_of(*pool);
                let r = PlacementRequest { app: "x".into(), component: "y".into(), pool, demand: demand(pool, *k), first_in_graph: false, triggered_from: None, peers_on: vec![] };
                let _ = s.place(&r);
            }
        }
        let r = PlacementRequest { app, component: comp, pool: Pool::Compute, demand: Resources::new(250, 64 * MIB), first_in_graph: true, triggered_from: None, peers_on: vec![] };
        if let Ok(first) = s.place(&r) {
            s.release(&first);
            let again = s.place(&r).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(again.node, first.node);
        }
    }
}

/// A rack whose nodes have nothing free is never chosen, even when the
/// request's trigger, hash or peers point there; a duplicate node id is
/// refused at construction.
#[test]
fn zero_free_racks_are_skipped() {
    let mut nodes: Vec<NodeSpec> = (0..4).map(|i| node(i, 0, 0b111, (0, 0))).collect(); // rack 0: all zero
    nodes.extend((4..8).map(|i| node(i, 1, 0b111, (2, 2))));
    let spec = ClusterSpec { nodes };
    let mut s = TwoLevelScheduler::new(&spec, SchedConfig::default()).expect("valid");
    for (i, pool) in POOLS.iter().cycle().take(30).enumerate() {
        let r = PlacementRequest {
            app: format!("a{i}"),
            component: "c".into(),
            pool: *pool,
            demand: Resources::new(if *pool == Pool::Memory { 0 } else { 100 }, 64 * MIB),
            first_in_graph: i % 2 == 0,
            triggered_from: Some(NodeId(i as u32 % 4)),
            peers_on: vec![NodeId(1), NodeId(2)],
        };
        let p = s.place(&r).expect("rack 1 has room");
        assert_eq!(p.rack, RackId(1));
    }
    assert!(s.stats().rerouted == 0, "the zero rack's aggregate already says no");
    // A zero demand fits even a zero-capacity node.
    let zero = PlacementRequest {
        app: "z".into(),
        component: "z".into(),
        pool: Pool::Memory,
        demand: Resources::ZERO,
        first_in_graph: false,
        triggered_from: None,
        peers_on: vec![],
    };
    let only_zero = ClusterSpec { nodes: vec![node(0, 0, 0b010, (0, 0))] };
    let mut z = TwoLevelScheduler::new(&only_zero, SchedConfig::default()).expect("valid");
    assert_eq!(z.place(&zero).map(|p| p.node), Ok(NodeId(0)));
    let duplicate = ClusterSpec { nodes: vec![node(1, 0, 1, (1, 1)), node(1, 1, 1, (1, 1))] };
    assert_eq!(
        TwoLevelScheduler::new(&duplicate, SchedConfig::default()).err(),
        Some(resc_sched::BuildError::DuplicateNode(NodeId(1)))
    );
}

/// A node in several (virtual) pools accounts each pool on its own.
#[test]
fn virtual_pools_are_accounted_apart() {
    let spec = ClusterSpec { nodes: vec![node(0, 0, 0b111, (2, 2))] };
    let mut s = TwoLevelScheduler::new(&spec, SchedConfig::default()).expect("valid");
    let before: Vec<Resources> = POOLS.iter().map(|p| s.free(NodeId(0), *p)).collect();
    let r = PlacementRequest {
        app: "a".into(),
        component: "c".into(),
        pool: Pool::Balanced,
        demand: Resources::new(1000, 512 * MIB),
        first_in_graph: false,
        triggered_from: None,
        peers_on: vec![],
    };
    let p = s.place(&r).expect("room");
    assert_eq!(s.free(NodeId(0), Pool::Compute), before[0]);
    assert_eq!(s.free(NodeId(0), Pool::Memory), before[1]);
    assert_eq!(s.free(NodeId(0), Pool::Balanced), before[2] - p.demand);
    s.release(&p);
    s.release(&p); // twice: clamped at capacity
    assert_eq!(s.free(NodeId(0), Pool::Balanced), before[2]);
}

/// Virtual components: size-class pieces are all or nothing, and splitting
/// on failure uses leftovers whole pieces cannot.
#[test]
fn virtual_components_split_into_leftovers() {
    use resc_sched::two_level::Split;
    // Two memory nodes of 768 MiB: a 1 GiB component fits only as pieces.
    let mut spec = ClusterSpec { nodes: vec![node(0, 0, 0b010, (0, 1)), node(1, 0, 0b010, (0, 1))] };
    for n in &mut spec.nodes {
        n.pools.insert(Pool::Memory, Resources::memory(768 * MIB));
    }
    let r = PlacementRequest {
        app: "a".into(),
        component: "m".into(),
        pool: Pool::Memory,
        demand: Resources::memory(GIB),
        first_in_graph: false,
        triggered_from: None,
        peers_on: vec![],
    };
    let mut s = TwoLevelScheduler::new(&spec, SchedConfig::default()).expect("valid");
    assert!(s.place_virtual(&r, Split::Never).is_err());
    assert_eq!(s.totals(Pool::Memory).used_bytes(), 0, "all or nothing");
    let pieces = s.place_virtual(&r, Split::OnFailure).expect("two 512 MiB pieces fit");
    assert_eq!(pieces.iter().map(|p| p.demand.memory_bytes).collect::<Vec<_>>(), vec![512 * MIB, 512 * MIB]);
    assert_ne!(pieces[0].node, pieces[1].node);
    let mut whole = TwoLevelScheduler::new(&spec, SchedConfig::whole_first_fit()).expect("valid");
    assert!(whole.place_virtual(&r, Split::OnFailure).is_err(), "whole components never split");
}
