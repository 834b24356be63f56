//! Measurements for `resc bench sched --json`.
//!
//! Unlike the rest of the crate, the throughput measurements here read the
//! clock ([`std::time::Instant`]): they time the state machines, single-
//! threaded, on whatever core runs them. Everything else about them is
//! deterministic (seeded request streams), and the stranding simulation reads
//! no clock at all. Every result is `serde`-serializable.
//!
//! # Throughput loop
//!
//! A seeded stream of [`RequestGen`] requests (the default [`RequestMix`]:
//! compute, memory and balanced components with first-component,
//! trigger and peer hints pointing at random nodes) is pre-generated, so
//! string allocation is not timed. The loop keeps a fixed number of
//! placements live (about 60 % of the pool capacity the stream needs): each
//! iteration releases the oldest live placement once that number is reached,
//! then places the next request. After a warm-up that reaches the live
//! target, `placements` iterations are timed. *Placements per second* counts
//! `place` calls (refused ones included) per second of that loop, each
//! paired with a `release`.
//!
//! ```
//! let report = resc_sched::bench::run(&resc_sched::bench::BenchConfig::toy())?;
//! assert!(report.rack.placements_per_sec > 0.0);
//! let json = serde_json::to_string(&report).expect("serializable");
//! assert!(json.contains("\"stranding\""));
//! # Ok::<(), resc_sched::BuildError>(())
//! ```

use crate::accounting::POOLS;
use crate::config::{PlacementStats, SchedConfig};
use crate::error::BuildError;
use crate::rack::RackScheduler;
use crate::sim::{mixed_cluster, stranding, RequestGen, RequestMix, StrandingConfig, StrandingReport};
use crate::two_level::TwoLevelScheduler;
use resc_core::resources::{GIB, MIB};
use resc_core::scheduler::{ClusterSpec, Placement, PlacementRequest, Scheduler};
use resc_core::size_class::SizeClasses;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Instant;

/// What to measure, and how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BenchConfig {
    /// Seed of every request stream.
    pub seed: u64,
    /// Nodes per rack (the paper's racks: 32).
    pub nodes_per_rack: u32,
    /// Timed iterations of the rack-scheduler loop.
    pub rack_placements: u64,
    /// Racks of the global-scheduler measurement.
    pub global_racks: u32,
    /// Timed iterations of the two-level loop.
    pub global_placements: u64,
    /// Rack counts of the scaling measurement.
    pub scaling_racks: Vec<u32>,
    /// Timed iterations per scaling point.
    pub scaling_placements: u64,
    /// Stranding simulations to run.
    pub stranding: Vec<StrandingConfig>,
}

impl Default for BenchConfig {
    /// The full measurement: 2 M rack placements, 1 M two-level placements
    /// on 64 racks, scaling over 1, 4, 16, 64 and 256 racks (500 k each), and
    /// the [stranding matrix](stranding_matrix) with 5,000 warm-up and
    /// 20,000 measured steps.
    fn default() -> Self {
        BenchConfig {
            seed: 1,
            nodes_per_rack: 32,
            rack_placements: 2_000_000,
            global_racks: 64,
            global_placements: 1_000_000,
            scaling_racks: vec![1, 4, 16, 64, 256],
            scaling_placements: 500_000,
            stranding: stranding_matrix(5_000, 20_000, 1),
        }
    }
}

impl BenchConfig {
    /// A toy scale that runs in well under a second even unoptimized (for
    /// tests and smoke runs; its figures mean little).
    pub fn toy() -> BenchConfig {
        BenchConfig {
            seed: 1,
            nodes_per_rack: 32,
            rack_placements: 2_000,
            global_racks: 4,
            global_placements: 2_000,
            scaling_racks: vec![1, 2],
            scaling_placements: 1_000,
            stranding: vec![StrandingConfig {
                nodes: 4,
                node_bytes: 4 * GIB,
                warmup_steps: 20,
                window_steps: 50,
                ..StrandingConfig::default()
            }],
        }
    }
}

/// The stranding configurations the full benchmark runs: component sizes
/// like the Azure Functions trace (median 170 MB, p90 400 MB) and ten times
/// larger-tailed ones (median 1 GB, p90 2.35 GB, the same spread), on 32
/// nodes of 4 GiB and of 64 GiB, with the default classes (64 MiB … 1 GiB)
/// and finer ones (16 MiB … 1 GiB).
pub fn stranding_matrix(warmup_steps: u32, window_steps: u32, seed: u64) -> Vec<StrandingConfig> {
    let mut out = Vec::new();
    for (median_bytes, p90_bytes) in [(170_000_000, 400_000_000), (1_000_000_000, 2_350_000_000)] {
        for node_bytes in [4 * GIB, 64 * GIB] {
            for smallest in [64 * MIB, 16 * MIB] {
                let Ok(classes) = SizeClasses::powers_of_two(smallest, GIB, 256 * MIB) else { continue };
                out.push(StrandingConfig {
                    nodes: 32,
                    node_bytes,
                    median_bytes,
                    p90_bytes,
                    classes,
                    warmup_steps,
                    window_steps,
                    seed,
                });
            }
        }
    }
    out
}

/// One throughput measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// `rack` or `two_level`.
    pub scheduler: String,
    /// Racks.
    pub racks: u32,
    /// Nodes.
    pub nodes: u32,
    /// Placements kept live.
    pub live_target: u64,
    /// Timed `place` calls.
    pub placements: u64,
    /// Of those, refused.
    pub refused: u64,
    /// Timed `release` calls.
    pub releases: u64,
    /// Wall time of the timed loop, milliseconds.
    pub elapsed_ms: f64,
    /// `place` calls per second (each paired with a `release`).
    pub placements_per_sec: f64,
    /// Nanoseconds per place + release.
    pub ns_per_placement: f64,
    /// What each rule placed, over warm-up and timed loop.
    pub stats: PlacementStats,
}

/// One point of the scaling measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalingPoint {
    /// Racks.
    pub racks: u32,
    /// Nodes.
    pub nodes: u32,
    /// The whole two-level scheduler on one core (measured).
    pub two_level: Throughput,
    /// Global routing decisions per second, one core (measured; no rack work).
    pub route_decisions_per_sec: f64,
    /// `racks ×` the rack scheduler's rate: what the rack schedulers sustain
    /// in parallel, one core each (modelled from the measured rack rate).
    pub parallel_racks_per_sec: f64,
    /// `min(parallel_racks_per_sec, route_decisions_per_sec)`: the modelled
    /// rate of a deployment with one core per rack and one for the global
    /// scheduler.
    pub modelled_cluster_per_sec: f64,
}

/// Everything `resc bench sched` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SchedBench {
    /// What was measured.
    pub config: BenchConfig,
    /// The rack scheduler on one rack.
    pub rack: Throughput,
    /// The two-level scheduler on `global_racks` racks.
    pub global: Throughput,
    /// Scaling with the number of racks.
    pub scaling: Vec<ScalingPoint>,
    /// Stranding simulations.
    pub stranding: Vec<StrandingReport>,
}

/// Runs every measurement of `config`. Fails only when a cluster cannot be
/// built (more than 2^32 nodes: node ids run out).
pub fn run(config: &BenchConfig) -> Result<SchedBench, BuildError> {
    let rack = rack_throughput(config.nodes_per_rack, config.rack_placements, config.seed)?;
    let global = global_throughput(config.global_racks, config.nodes_per_rack, config.global_placements, config.seed)?;
    let scaling = rack_scaling(
        &config.scaling_racks,
        config.nodes_per_rack,
        config.scaling_placements,
        rack.placements_per_sec,
        config.seed,
    )?;
    Ok(SchedBench { config: config.clone(), rack, global, scaling, stranding: stranding_all(&config.stranding) })
}

/// (a) The rack scheduler alone on one rack of `nodes` nodes
/// ([`mixed_cluster`]): `placements` timed place + release iterations.
pub fn rack_throughput(nodes: u32, placements: u64, seed: u64) -> Result<Throughput, BuildError> {
    let cluster = mixed_cluster(1, nodes);
    let mut scheduler = RackScheduler::from_cluster(&cluster, &SchedConfig::default().with_seed(seed))?;
    let mut t = churn(&mut scheduler, &cluster, placements, seed);
    t.scheduler = "rack".into();
    t.stats = *scheduler.stats();
    Ok(t)
}

/// (b) The two-level scheduler on `racks` racks of `nodes_per_rack` nodes:
/// `placements` timed place + release iterations.
pub fn global_throughput(
    racks: u32,
    nodes_per_rack: u32,
    placements: u64,
    seed: u64,
) -> Result<Throughput, BuildError> {
    let cluster = mixed_cluster(racks, nodes_per_rack);
    let mut scheduler = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(seed))?;
    let mut t = churn(&mut scheduler, &cluster, placements, seed);
    t.scheduler = "two_level".into();
    t.racks = racks;
    t.stats = *scheduler.stats();
    Ok(t)
}

/// Global routing decisions per second on `racks` racks (no placement).
pub fn route_throughput(racks: u32, nodes_per_rack: u32, decisions: u64, seed: u64) -> Result<f64, BuildError> {
    let cluster = mixed_cluster(racks, nodes_per_rack);
    let scheduler = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(seed))?;
    let requests = requests(&cluster, seed);
    let reservations: Vec<_> = requests.iter().map(|r| scheduler.accounting().reservation(r.demand)).collect();
    let global = scheduler.global();
    let start = Instant::now();
    let mut routed = 0u64;
    for i in 0..decisions as usize {
        let k = i % requests.len();
        routed += u64::from(black_box(global.route_request(&requests[k], &reservations[k])).is_some());
    }
    let elapsed = start.elapsed().as_secs_f64();
    black_box(routed);
    Ok(decisions as f64 / elapsed.max(1e-9))
}

/// (c) Scaling with the number of racks: for each count, the two-level rate
/// on one core, the global routing rate, and the modelled parallel rates
/// from `rack_rate` (the rack scheduler's measured placements per second).
pub fn rack_scaling(
    racks: &[u32],
    nodes_per_rack: u32,
    placements: u64,
    rack_rate: f64,
    seed: u64,
) -> Result<Vec<ScalingPoint>, BuildError> {
    racks
        .iter()
        .map(|&r| {
            let two_level = global_throughput(r, nodes_per_rack, placements, seed)?;
            let route = route_throughput(r, nodes_per_rack, placements, seed)?;
            let parallel = f64::from(r) * rack_rate;
            Ok(ScalingPoint {
                racks: r,
                nodes: two_level.nodes,
                two_level,
                route_decisions_per_sec: route,
                parallel_racks_per_sec: parallel,
                modelled_cluster_per_sec: parallel.min(route),
            })
        })
        .collect()
}

/// (d) The stranding simulations (no clock involved).
pub fn stranding_all(configs: &[StrandingConfig]) -> Vec<StrandingReport> {
    configs.iter().map(stranding).collect()
}

/// The pre-generated request stream of a cluster.
fn requests(cluster: &ClusterSpec, seed: u64) -> Vec<PlacementRequest> {
    let nodes = cluster.nodes.iter().map(|n| n.id).collect();
    let mut generator = RequestGen::new(RequestMix::default(), nodes, seed);
    (0..8192).map(|_| generator.next_request(&[])).collect()
}

/// How many placements of `requests` keep about 60 % of the scarcest pool
/// resource the stream needs reserved.
fn live_target(cluster: &ClusterSpec, requests: &[PlacementRequest]) -> usize {
    let mut best = f64::INFINITY;
    for pool in POOLS {
        let (cap_mc, cap_b) = cluster
            .nodes
            .iter()
            .filter_map(|n| n.pools.get(&pool))
            .fold((0f64, 0f64), |(c, b), r| (c + f64::from(r.millicores), b + r.memory_bytes as f64));
        let (need_mc, need_b) = requests
            .iter()
            .filter(|r| r.pool == pool)
            .fold((0f64, 0f64), |(c, b), r| (c + f64::from(r.demand.millicores), b + r.demand.memory_bytes as f64));
        let n = requests.len().max(1) as f64;
        for (cap, need) in [(cap_mc, need_mc / n), (cap_b, need_b / n)] {
            if need > 0.0 {
                best = best.min(0.6 * cap / need);
            }
        }
    }
    if best.is_finite() {
        (best as usize).max(1)
    } else {
        1
    }
}

fn churn(scheduler: &mut dyn Scheduler, cluster: &ClusterSpec, placements: u64, seed: u64) -> Throughput {
    let requests = requests(cluster, seed);
    let target = live_target(cluster, &requests);
    let mut live: VecDeque<Placement> = VecDeque::with_capacity(target + 1);
    let step = |scheduler: &mut dyn Scheduler, i: usize, live: &mut VecDeque<Placement>| -> (bool, bool) {
        let released =
            if live.len() >= target { live.pop_front().map(|p| scheduler.release(&p)).is_some() } else { false };
        match scheduler.place(&requests[i % requests.len()]) {
            Ok(p) => {
                live.push_back(p);
                (released, false)
            }
            Err(_) => (released, true),
        }
    };
    for i in 0..target {
        step(scheduler, i, &mut live);
    }
    let (mut refused, mut releases) = (0u64, 0u64);
    let start = Instant::now();
    for i in 0..placements as usize {
        let (released, was_refused) = step(scheduler, target + i, &mut live);
        releases += u64::from(released);
        refused += u64::from(was_refused);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    Throughput {
        scheduler: String::new(),
        racks: 1,
        nodes: cluster.nodes.len() as u32,
        live_target: target as u64,
        placements,
        refused,
        releases,
        elapsed_ms: elapsed * 1e3,
        placements_per_sec: placements as f64 / elapsed,
        ns_per_placement: elapsed * 1e9 / placements.max(1) as f64,
        stats: PlacementStats::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rack_throughput_runs_at_toy_scale() {
        let t = rack_throughput(32, 500, 3).expect("valid cluster");
        assert_eq!((t.scheduler.as_str(), t.nodes, t.placements), ("rack", 32, 500));
        assert!(t.placements_per_sec > 0.0 && t.ns_per_placement > 0.0);
        assert!(t.live_target > 0 && t.releases <= t.placements);
        assert!(t.stats.placed > 0);
        assert!(t.refused < t.placements / 2, "a 60 % load refuses little: {t:?}");
    }

    #[test]
    fn global_throughput_runs_at_toy_scale() {
        let t = global_throughput(3, 32, 500, 3).expect("valid cluster");
        assert_eq!((t.scheduler.as_str(), t.racks, t.nodes), ("two_level", 3, 96));
        assert!(t.placements_per_sec > 0.0);
        assert!(t.stats.peer_node + t.stats.warm_hash + t.stats.trigger_node + t.stats.any_node == t.stats.placed);
    }

    #[test]
    fn scaling_has_one_point_per_rack_count() {
        let points = rack_scaling(&[1, 2], 32, 200, 1000.0, 1).expect("valid clusters");
        assert_eq!(points.iter().map(|p| (p.racks, p.nodes)).collect::<Vec<_>>(), vec![(1, 32), (2, 64)]);
        for p in &points {
            assert!(p.route_decisions_per_sec > 0.0);
            assert_eq!(p.parallel_racks_per_sec, f64::from(p.racks) * 1000.0);
            assert!(p.modelled_cluster_per_sec <= p.parallel_racks_per_sec);
        }
    }

    #[test]
    fn stranding_runs_at_toy_scale() {
        let reports = stranding_all(&BenchConfig::toy().stranding);
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        for x in [&r.size_classes, &r.size_classes_split, &r.whole_first_fit] {
            assert!(x.reserved_utilization > 0.5 && x.reserved_utilization <= 1.0, "{x:?}");
            assert!(x.payload_utilization <= x.reserved_utilization + 1e-12);
            assert!(x.refused >= 71, "one refusal per step: {x:?}");
        }
        assert_eq!(r.whole_first_fit.internal_fragmentation, 0.0);
        assert_eq!(stranding_matrix(1, 1, 1).len(), 8);
    }
}
