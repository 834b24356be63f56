//! Property tests: every solve agrees with brute force on small instances
//! (n ≤ 16), for both problems, random and strongly correlated, with
//! overlapping candidates and side constraints.

use proptest::prelude::*;
use resc_core::ids::{AppId, ComputeId, MemoryId};
use resc_ilp::{
    AggregationProblem, Candidate, Capacity, CommMatrix, ComponentKey, DisaggregationProblem, Penalty, SideConstraint,
    SolveOptions, SolveStatus,
};
use std::collections::HashSet;
use std::time::Duration;

fn options() -> SolveOptions {
    SolveOptions::default().with_time_limit(Duration::from_secs(60))
}

/// A two-component group (compute + memory) of its own application.
fn group(app: u64, saving: u64, cpu: u64, mem: u64) -> Candidate {
    let mut comm = CommMatrix::new();
    if saving > 0 {
        comm.push(0, 1, saving / 3);
        comm.push(1, 0, saving - saving / 3);
    }
    Candidate {
        app: AppId(app),
        components: vec![ComponentKey::Compute(ComputeId(0)), ComponentKey::Memory(MemoryId(0))],
        cpu: vec![cpu, 0],
        memory: vec![mem / 2, mem - mem / 2],
        communication: comm,
    }
}

/// Independent feasibility and objective of an aggregation plan.
fn agg_value(problem: &AggregationProblem, chosen: &[usize]) -> Option<u64> {
    let (mut cpu, mut mem) = (0u128, 0u128);
    let mut seen = HashSet::new();
    for &j in chosen {
        let c = &problem.candidates[j];
        cpu += c.cpu.iter().map(|&x| u128::from(x)).sum::<u128>();
        mem += c.memory.iter().map(|&x| u128::from(x)).sum::<u128>();
        for k in &c.components {
            if !seen.insert((c.app, *k)) {
                return None;
            }
        }
    }
    for sc in &problem.side_constraints {
        let used: u128 = sc.coefficients.iter().filter(|(j, _)| chosen.contains(j)).map(|&(_, a)| u128::from(a)).sum();
        if used > u128::from(sc.limit) {
            return None;
        }
    }
    if cpu > u128::from(problem.balanced_capacity.millicores)
        || mem > u128::from(problem.balanced_capacity.memory_bytes)
    {
        return None;
    }
    let left: u64 = (0..problem.candidates.len())
        .filter(|j| !chosen.contains(j))
        .map(|j| problem.candidates[j].communication.entries.iter().map(|t| t.bytes).sum::<u64>())
        .sum();
    Some(left)
}

fn brute_aggregation(problem: &AggregationProblem) -> u64 {
    // Per candidate: saving, CPU, memory, component bits, side coefficients.
    let n = problem.candidates.len();
    let mut keys: Vec<(AppId, ComponentKey)> = Vec::new();
    let rows: Vec<(u64, u64, u64, u128, Vec<u64>)> = problem
        .candidates
        .iter()
        .enumerate()
        .map(|(j, c)| {
            let mut bits = 0u128;
            for k in &c.components {
                let key = (c.app, *k);
                let pos = keys.iter().position(|x| *x == key).unwrap_or_else(|| {
                    keys.push(key);
                    keys.len() - 1
                });
                bits |= 1 << pos;
            }
            let side = problem
                .side_constraints
                .iter()
                .map(|sc| sc.coefficients.iter().filter(|x| x.0 == j).map(|x| x.1).sum())
                .collect();
            (c.saving(), c.total_cpu(), c.total_memory(), bits, side)
        })
        .collect();
    let total: u64 = rows.iter().map(|r| r.0).sum();
    let cap = problem.balanced_capacity;
    let mut best = total;
    'masks: for mask in 0u32..(1 << n) {
        let (mut saved, mut cpu, mut mem, mut bits) = (0u64, 0u64, 0u64, 0u128);
        let mut side = vec![0u64; problem.side_constraints.len()];
        for (j, r) in rows.iter().enumerate() {
            if mask >> j & 1 == 1 {
                if bits & r.3 != 0 {
                    continue 'masks;
                }
                bits |= r.3;
                saved += r.0;
                cpu += r.1;
                mem += r.2;
                for (s, a) in side.iter_mut().zip(&r.4) {
                    *s += a;
                }
            }
        }
        let side_ok = side.iter().zip(&problem.side_constraints).all(|(s, sc)| *s <= sc.limit);
        if cpu <= cap.millicores && mem <= cap.memory_bytes && side_ok {
            best = best.min(total - saved);
        }
    }
    best
}

fn check_aggregation(problem: &AggregationProblem) -> Result<(), TestCaseError> {
    let s = problem.solve(&options()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let best = brute_aggregation(problem);
    let mine = agg_value(problem, &s.chosen);
    prop_assert!(mine.is_some(), "infeasible plan {:?}", s.chosen);
    prop_assert!(s.chosen.windows(2).all(|w| w[0] < w[1]), "not ascending: {:?}", s.chosen);
    prop_assert_eq!(mine.unwrap_or(u64::MAX) as f64, s.objective);
    prop_assert_eq!(s.status, SolveStatus::Optimal);
    prop_assert!(s.optimal);
    prop_assert_eq!(s.objective, best as f64, "brute force found {}", best);
    prop_assert!(s.bound <= s.objective && s.gap == 0.0);
    let eval = problem.evaluate(&s.chosen).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(eval.feasible);
    prop_assert_eq!(eval.leftover as f64, s.objective);
    Ok(())
}

fn capacity(cands: &[Candidate], f1: f64, f2: f64) -> Capacity {
    let cpu: u64 = cands.iter().map(Candidate::total_cpu).sum();
    let mem: u64 = cands.iter().map(Candidate::total_memory).sum();
    Capacity::new((cpu as f64 * f1) as u64, (mem as f64 * f2) as u64)
}

/// Candidates of a few applications that share components: each is a
/// random subset of its application's six components.
fn overlapping(specs: &[(u64, u8, u64, u64, u64)]) -> Vec<Candidate> {
    specs
        .iter()
        .map(|&(app, mask, saving, cpu, mem)| {
            let members: Vec<u32> = (0..6).filter(|i| mask >> i & 1 == 1).collect();
            let members = if members.is_empty() { vec![0] } else { members };
            let k = members.len() as u32;
            let mut comm = CommMatrix::new();
            if k >= 2 && saving > 0 {
                comm.push(0, k - 1, saving);
            }
            Candidate {
                app: AppId(app),
                components: members
                    .iter()
                    .map(
                        |&i| {
                            if i < 3 {
                                ComponentKey::Compute(ComputeId(i))
                            } else {
                                ComponentKey::Memory(MemoryId(i))
                            }
                        },
                    )
                    .collect(),
                cpu: members.iter().map(|_| cpu / u64::from(k)).collect(),
                memory: members.iter().map(|_| mem / u64::from(k)).collect(),
                communication: comm,
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(150))]

    #[test]
    fn aggregation_random(
        items in prop::collection::vec((0u64..5_000, 0u64..2_000, 0u64..(1 << 20)), 0..=16),
        f1 in 0.0f64..1.0,
        f2 in 0.0f64..1.0,
    ) {
        let cands: Vec<Candidate> = items.iter().enumerate().map(|(j, &(s, c, m))| group(j as u64, s, c, m)).collect();
        let cap = capacity(&cands, f1, f2);
        check_aggregation(&AggregationProblem::new(cands, cap))?;
    }

    #[test]
    fn aggregation_strongly_correlated(
        items in prop::collection::vec((1u64..2_000, 1u64..(1 << 20)), 1..=16),
        f in 0.2f64..0.8,
    ) {
        // saving = cpu + memory / 1 KiB + a constant: all nearly equally efficient.
        let cands: Vec<Candidate> =
            items.iter().enumerate().map(|(j, &(c, m))| group(j as u64, c + m / 1024 + 500, c, m)).collect();
        let cap = capacity(&cands, f, f);
        check_aggregation(&AggregationProblem::new(cands, cap))?;
    }

    #[test]
    fn aggregation_overlapping(
        specs in prop::collection::vec((0u64..3, 1u8..64, 0u64..5_000, 0u64..2_000, 0u64..(1 << 20)), 0..=12),
        f1 in 0.1f64..1.0,
        f2 in 0.1f64..1.0,
    ) {
        let cands = overlapping(&specs);
        let cap = capacity(&cands, f1, f2);
        check_aggregation(&AggregationProblem::new(cands, cap))?;
    }

    #[test]
    fn aggregation_side_constraints(
        items in prop::collection::vec((0u64..5_000, 0u64..2_000, 0u64..(1 << 20)), 1..=12),
        rows in prop::collection::vec((prop::collection::vec((0usize..12, 0u64..5), 0..8), 0u64..8), 1..3),
        f in 0.2f64..1.0,
    ) {
        let n = items.len();
        let cands: Vec<Candidate> = items.iter().enumerate().map(|(j, &(s, c, m))| group(j as u64, s, c, m)).collect();
        let cap = capacity(&cands, f, f);
        let mut problem = AggregationProblem::new(cands, cap);
        problem.side_constraints = rows
            .iter()
            .enumerate()
            .map(|(i, (coefs, limit))| SideConstraint {
                name: format!("row{i}"),
                coefficients: coefs.iter().map(|&(j, a)| (j % n, a)).collect(),
                limit: *limit,
            })
            .collect();
        check_aggregation(&problem)?;
    }

    #[test]
    fn disaggregation_matches_brute_force(
        groups in prop::collection::vec((0u64..5_000, 0u64..2_000, 0u64..(1 << 20), 0u64..(1 << 20)), 0..=12),
        pools in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
        need in (0.0f64..0.8, 0.0f64..0.8),
        penalty in (0.0f64..10.0, 0.0f64..0.01),
    ) {
        // Each group: a compute component (CPU, local memory) and a memory
        // component.
        let cands: Vec<Candidate> = groups
            .iter()
            .enumerate()
            .map(|(j, &(s, c, local, m))| {
                let mut g = group(j as u64, s, c, 0);
                g.memory = vec![local, m];
                g
            })
            .collect();
        let total = capacity(&cands, 1.0, 1.0);
        let compute_mem: u64 = cands.iter().map(|c| c.memory[0]).sum();
        let memory_mem: u64 = cands.iter().map(|c| c.memory[1]).sum();
        let problem = DisaggregationProblem {
            compute_pool_free: Capacity::new((total.millicores as f64 * pools.0) as u64, (compute_mem as f64 * pools.1) as u64),
            memory_pool_free: Capacity::new(0, (memory_mem as f64 * pools.2 + pools.3) as u64),
            required_free: Capacity::new((total.millicores as f64 * need.0) as u64, (total.memory_bytes as f64 * need.1) as u64),
            penalty: Penalty { per_millicore: penalty.0, per_byte: penalty.1 },
            groups: cands,
        };
        let n = problem.groups.len();
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << n) {
            let chosen: Vec<usize> = (0..n).filter(|&j| mask >> j & 1 == 1).collect();
            let (mut cc, mut cm, mut mm, mut fc, mut fm, mut inc) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
            for &j in &chosen {
                let g = &problem.groups[j];
                cc += g.cpu[0];
                cm += g.memory[0];
                mm += g.memory[1];
                fc += g.cpu[0] + g.cpu[1];
                fm += g.memory[0] + g.memory[1];
                inc += g.communication.entries.iter().map(|t| t.bytes).sum::<u64>();
            }
            if cc > problem.compute_pool_free.millicores
                || cm > problem.compute_pool_free.memory_bytes
                || mm > problem.memory_pool_free.memory_bytes
            {
                continue;
            }
            let cost = inc as f64
                + penalty.0 * problem.required_free.millicores.saturating_sub(fc) as f64
                + penalty.1 * problem.required_free.memory_bytes.saturating_sub(fm) as f64;
            best = best.min(cost);
        }
        let s = problem.solve(&options()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let eval = problem.evaluate(&s.chosen).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(eval.feasible, "infeasible plan {:?}", s.chosen);
        prop_assert!((eval.cost - s.objective).abs() <= 1e-9 * best.max(1.0));
        prop_assert!(s.objective <= best + 1e-6 * best.max(1.0), "objective {} vs brute force {}", s.objective, best);
        prop_assert!(s.bound <= best + 1e-6 * best.max(1.0), "bound {} above the optimum {}", s.bound, best);
        prop_assert_eq!(s.status, SolveStatus::Optimal);
    }
}
