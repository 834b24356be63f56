//! Seeded instance generators, for tests and benchmarks.
//!
//! A generated candidate is one application's group of `k` components: the
//! first half compute components (CPU 50–500 millicores and local memory
//! 32–256 MiB, each scaled by the application's CPU and memory scale), the
//! rest memory components (no CPU, 16–512 MiB scaled). The application's
//! two scales are independent and log-uniform in 1–16, so candidates differ
//! by more than an order of magnitude in each resource. Each component
//! sends to `peers` distinct random members of its group, so the
//! communication matrix has `k · peers` entries.
//!
//! The capacity is half the total demand in each resource, so that roughly
//! half the candidates fit.

use crate::model::{
    AggregationProblem, Candidate, Capacity, CommMatrix, ComponentKey, DisaggregationProblem, Penalty, Traffic,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resc_core::ids::{AppId, ComputeId, MemoryId};
use resc_core::resources::MIB;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a candidate's saving relates to its resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceKind {
    /// Traffic independent of the resource use: each application has its
    /// own intensity (log-uniform over two orders of magnitude).
    Random,
    /// The saving is an affine function of the resource use, the knapsack's
    /// classic hard case: `saving = (cpu / 1 core + memory / 1 GiB) · 64 MiB`
    /// plus a constant 64 MiB, so every candidate is nearly as efficient as
    /// every other and only the exact fill of the capacity decides.
    StronglyCorrelated,
}

impl fmt::Display for InstanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InstanceKind::Random => "random",
            InstanceKind::StronglyCorrelated => "strongly-correlated",
        })
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// Candidates.
    pub n: usize,
    /// Components per candidate.
    pub k: usize,
    /// Saving versus resource use.
    pub kind: InstanceKind,
    /// The seed; the same spec gives the same instance on every platform.
    pub seed: u64,
    /// Peers each component sends to (capped at `k − 1`).
    pub peers: usize,
}

impl InstanceSpec {
    /// `n × k`, two peers per component.
    pub fn new(n: usize, k: usize, kind: InstanceKind, seed: u64) -> Self {
        InstanceSpec { n, k, kind, seed, peers: 2 }
    }
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    (rng.random_range(lo.ln()..hi.ln())).exp()
}

/// The components of a generated group of `k`: compute first, then memory.
fn keys(k: usize) -> Vec<ComponentKey> {
    let kc = k.div_ceil(2);
    (0..k)
        .map(|i| {
            if i < kc {
                ComponentKey::Compute(ComputeId(i as u32))
            } else {
                ComponentKey::Memory(MemoryId((i - kc) as u32))
            }
        })
        .collect()
}

/// Usage vectors of one group.
fn usage(rng: &mut ChaCha8Rng, k: usize) -> (Vec<u64>, Vec<u64>) {
    let kc = k.div_ceil(2);
    let (sc, sm) = (log_uniform(rng, 1.0, 16.0), log_uniform(rng, 1.0, 16.0));
    let mut cpu = Vec::with_capacity(k);
    let mut memory = Vec::with_capacity(k);
    for i in 0..k {
        if i < kc {
            cpu.push((sc * rng.random_range(50.0..500.0)).round() as u64);
            memory.push((sm * rng.random_range(32.0..256.0) * MIB as f64).round() as u64);
        } else {
            cpu.push(0);
            memory.push((sm * rng.random_range(16.0..512.0) * MIB as f64).round() as u64);
        }
    }
    (cpu, memory)
}

/// `peers` distinct random receivers per sender, with raw weights.
fn edges(rng: &mut ChaCha8Rng, k: usize, peers: usize) -> Vec<(u32, u32, f64)> {
    let peers = peers.min(k.saturating_sub(1));
    let mut out = Vec::with_capacity(k * peers);
    let mut picked = Vec::with_capacity(peers);
    for i in 0..k {
        picked.clear();
        while picked.len() < peers {
            let j = rng.random_range(0..k);
            if j != i && !picked.contains(&j) {
                picked.push(j);
            }
        }
        for &j in &picked {
            out.push((i as u32, j as u32, rng.random_range(0.1..1.0)));
        }
    }
    out
}

/// Splits `total` bytes over the edges in proportion to their weights,
/// exactly.
fn split(edges: &[(u32, u32, f64)], total: u64) -> CommMatrix {
    let sum: f64 = edges.iter().map(|e| e.2).sum();
    let mut entries = Vec::with_capacity(edges.len());
    let mut given = 0u64;
    for (x, &(from, to, w)) in edges.iter().enumerate() {
        let bytes =
            if x + 1 == edges.len() { total.saturating_sub(given) } else { ((w / sum) * total as f64).floor() as u64 };
        given = given.saturating_add(bytes);
        entries.push(Traffic { from, to, bytes });
    }
    CommMatrix::from_entries(entries)
}

/// A seeded aggregation instance: `n` disjoint candidates of `k`
/// components (one application each), capacity half the total demand.
pub fn aggregation_instance(spec: &InstanceSpec) -> AggregationProblem {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let keys = keys(spec.k);
    let mut candidates = Vec::with_capacity(spec.n);
    let (mut total_cpu, mut total_mem) = (0u64, 0u64);
    for j in 0..spec.n {
        let (cpu, memory) = usage(&mut rng, spec.k);
        let (c, m): (u64, u64) = (cpu.iter().sum(), memory.iter().sum());
        total_cpu += c;
        total_mem += m;
        let e = edges(&mut rng, spec.k, spec.peers);
        let saving = match spec.kind {
            InstanceKind::Random => {
                let intensity = log_uniform(&mut rng, 1.0, 100.0);
                (intensity * spec.k as f64 * 4.0 * MIB as f64) as u64
            }
            InstanceKind::StronglyCorrelated => {
                let gib = (1u64 << 30) as f64;
                ((c as f64 / 1000.0 + m as f64 / gib) * 64.0 * MIB as f64) as u64 + 64 * MIB
            }
        };
        let communication = if e.is_empty() { CommMatrix::new() } else { split(&e, saving) };
        candidates.push(Candidate { app: AppId(j as u64), components: keys.clone(), cpu, memory, communication });
    }
    AggregationProblem::new(candidates, Capacity::new(total_cpu / 2, total_mem / 2))
}

/// A seeded instance with overlapping candidates: `apps` applications of
/// `components` components each, and `per_app` candidates per application,
/// each a random subset of 2–6 of its components carrying the sub-matrix
/// of the application's traffic. Capacity: a third of the total demand.
/// For correctness tests: it takes the general branch and bound.
pub fn overlapping_instance(apps: usize, components: usize, per_app: usize, seed: u64) -> AggregationProblem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let components = components.max(2);
    let keys = keys(components);
    let mut candidates = Vec::new();
    let (mut total_cpu, mut total_mem) = (0u64, 0u64);
    for a in 0..apps {
        let (cpu, memory) = usage(&mut rng, components);
        let mut traffic = vec![0u64; components * components];
        for (from, to, w) in edges(&mut rng, components, 2) {
            traffic[from as usize * components + to as usize] = (w * 64.0 * MIB as f64) as u64;
        }
        for _ in 0..per_app {
            let size = rng.random_range(2..=components.min(6));
            let mut members: Vec<usize> = Vec::with_capacity(size);
            while members.len() < size {
                let c = rng.random_range(0..components);
                if !members.contains(&c) {
                    members.push(c);
                }
            }
            let mut comm = CommMatrix::new();
            for (x, &i) in members.iter().enumerate() {
                for (y, &j) in members.iter().enumerate() {
                    let bytes = traffic[i * components + j];
                    if x != y && bytes > 0 {
                        comm.push(x as u32, y as u32, bytes);
                    }
                }
            }
            let cand = Candidate {
                app: AppId(a as u64),
                components: members.iter().map(|&i| keys[i]).collect(),
                cpu: members.iter().map(|&i| cpu[i]).collect(),
                memory: members.iter().map(|&i| memory[i]).collect(),
                communication: comm,
            };
            total_cpu += cand.total_cpu();
            total_mem += cand.total_memory();
            candidates.push(cand);
        }
    }
    AggregationProblem::new(candidates, Capacity::new(total_cpu / 3, total_mem / 3))
}

/// A seeded disaggregation instance: `n` aggregated groups of `k`
/// components (as [`aggregation_instance`] with random traffic); the
/// compute and memory pools have room for 60 % of what the groups would
/// move there, the plan must free 30 % of the groups' total, and the
/// penalty prices a shortfall at twice the average traffic per unit.
pub fn disaggregation_instance(n: usize, k: usize, seed: u64) -> DisaggregationProblem {
    let agg = aggregation_instance(&InstanceSpec::new(n, k, InstanceKind::Random, seed));
    let groups = agg.candidates;
    let (mut compute, mut memory, mut total) = (Capacity::default(), Capacity::default(), Capacity::default());
    let mut saving = 0u64;
    for g in &groups {
        let (c, m) = g.demand_by_kind();
        compute.millicores += c.millicores;
        compute.memory_bytes += c.memory_bytes;
        memory.millicores += m.millicores;
        memory.memory_bytes += m.memory_bytes;
        total.millicores += g.total_cpu();
        total.memory_bytes += g.total_memory();
        saving += g.saving();
    }
    let pct = |x: u64, p: u64| x / 100 * p;
    DisaggregationProblem {
        groups,
        compute_pool_free: Capacity::new(pct(compute.millicores, 60), pct(compute.memory_bytes, 60)),
        memory_pool_free: Capacity::new(pct(memory.millicores, 60), pct(memory.memory_bytes, 60)),
        required_free: Capacity::new(pct(total.millicores, 30), pct(total.memory_bytes, 30)),
        penalty: Penalty {
            per_millicore: 2.0 * saving as f64 / total.millicores.max(1) as f64,
            per_byte: 2.0 * saving as f64 / total.memory_bytes.max(1) as f64,
        },
    }
}
