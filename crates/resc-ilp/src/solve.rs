//! Building the integer programs from the problems, and solving them.

use crate::bnb::{self, General, GeneralLimits, HardRow, SoftRow};
use crate::error::{candidate_error, IlpError};
use crate::knapsack::{self, Limits};
use crate::model::{
    check_candidate, check_choice, rel_gap, AggregationEval, AggregationProblem, Candidate, Capacity, Derived,
    DisaggregationEval, DisaggregationProblem, Solution, SolveMethod, SolveOptions, SolveStatus,
};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Profits up to this stay exact integers in `f64`.
const EXACT_F64: u128 = 1 << 52;

fn deadline(start: Instant, limit: Duration) -> Instant {
    start.checked_add(limit).unwrap_or_else(|| start + Duration::from_secs(86_400 * 365))
}

fn derive_all(cands: &[Candidate]) -> Result<Vec<Derived>, IlpError> {
    let mut scratch = Vec::new();
    cands.iter().enumerate().map(|(i, c)| check_candidate(c, i, &mut scratch)).collect()
}

/// Pairs of candidates that share a component, as adjacency lists; `None`
/// when the candidates are disjoint.
fn overlaps(cands: &[Candidate]) -> Option<Vec<Vec<u32>>> {
    // Common case: one candidate per application, in increasing order.
    if cands.windows(2).all(|w| w[0].app < w[1].app) {
        return None;
    }
    let mut by_app: Vec<u32> = (0..cands.len() as u32).collect();
    by_app.sort_unstable_by_key(|&i| cands[i as usize].app);
    let mut adj: Vec<Vec<u32>> = vec![Vec::new(); cands.len()];
    let mut any = false;
    let mut start = 0;
    while start < by_app.len() {
        let app = cands[by_app[start] as usize].app;
        let mut end = start + 1;
        while end < by_app.len() && cands[by_app[end] as usize].app == app {
            end += 1;
        }
        if end - start > 1 {
            let mut holders: HashMap<u64, Vec<u32>> = HashMap::new();
            for &i in &by_app[start..end] {
                for key in &cands[i as usize].components {
                    holders.entry(key.code()).or_default().push(i);
                }
            }
            for list in holders.values() {
                for (x, &a) in list.iter().enumerate() {
                    for &b in &list[x + 1..] {
                        adj[a as usize].push(b);
                        adj[b as usize].push(a);
                        any = true;
                    }
                }
            }
        }
        start = end;
    }
    if !any {
        return None;
    }
    for list in &mut adj {
        list.sort_unstable();
        list.dedup();
    }
    Some(adj)
}

fn side_rows(problem: &AggregationProblem) -> Result<Vec<HardRow>, IlpError> {
    let n = problem.candidates.len();
    problem
        .side_constraints
        .iter()
        .enumerate()
        .map(|(ci, sc)| {
            let mut weights = vec![0u64; n];
            for &(j, coef) in &sc.coefficients {
                let w = weights.get_mut(j).ok_or_else(|| IlpError::InvalidSideConstraint {
                    constraint: ci,
                    name: sc.name.clone(),
                    reason: format!("names candidate {j}, but the problem has {n}"),
                })?;
                *w = w.checked_add(coef).ok_or_else(|| IlpError::InvalidSideConstraint {
                    constraint: ci,
                    name: sc.name.clone(),
                    reason: format!("the coefficients of candidate {j} overflow u64"),
                })?;
            }
            Ok(HardRow { weights, cap: sc.limit })
        })
        .collect()
}

fn solution(
    chosen: Vec<usize>,
    objective: f64,
    bound: f64,
    status: SolveStatus,
    method: SolveMethod,
    nodes: u64,
    start: Instant,
) -> Solution {
    let bound = bound.min(objective);
    let gap = rel_gap(objective, bound);
    Solution {
        chosen,
        objective,
        bound,
        gap,
        optimal: status == SolveStatus::Optimal,
        status,
        method,
        nodes,
        elapsed: start.elapsed(),
    }
}

impl AggregationProblem {
    /// A problem with the given candidates and balanced-pool capacity, and no
    /// side constraints.
    pub fn new(candidates: Vec<Candidate>, balanced_capacity: Capacity) -> Self {
        AggregationProblem { candidates, balanced_capacity, side_constraints: Vec::new() }
    }

    /// Chooses the candidates to aggregate (see the [crate docs](crate#aggregation)).
    ///
    /// Disjoint candidates without side constraints go to the
    /// two-constraint knapsack solver; anything else to the general branch
    /// and bound. Either way the answer is the best plan found within the
    /// limits, with its proven gap.
    ///
    /// # Errors
    /// [`IlpError`] naming the malformed candidate and field, side
    /// constraint, or option. Never "infeasible": aggregating nothing is
    /// always feasible.
    pub fn solve(&self, options: &SolveOptions) -> Result<Solution, IlpError> {
        let start = Instant::now();
        options.check()?;
        let derived = derive_all(&self.candidates)?;
        let side = side_rows(self)?;
        let conflicts = overlaps(&self.candidates);
        let p: Vec<u64> = derived.iter().map(|d| d.saving).collect();
        let offset: u128 = p.iter().map(|&x| u128::from(x)).sum();
        let cap = self.balanced_capacity;
        if conflicts.is_none() && side.is_empty() {
            let w1: Vec<u64> = derived.iter().map(|d| d.cpu).collect();
            let w2: Vec<u64> = derived.iter().map(|d| d.memory).collect();
            let limits = Limits {
                deadline: deadline(start, options.time_limit),
                node_limit: options.node_limit,
                rel_gap: options.rel_gap,
                offset,
                tuning: knapsack::Tuning::default(),
            };
            let r = knapsack::solve(&p, &w1, &w2, cap.millicores, cap.memory_bytes, &limits);
            let method = if r.nodes == 0 && r.status == SolveStatus::Optimal {
                SolveMethod::Trivial
            } else {
                SolveMethod::Knapsack2
            };
            let objective = (offset - r.value) as f64;
            let bound = offset.saturating_sub(r.upper) as f64;
            return Ok(solution(r.chosen, objective, bound, r.status, method, r.nodes, start));
        }
        let n = self.candidates.len();
        let mut hard = vec![
            HardRow { weights: derived.iter().map(|d| d.cpu).collect(), cap: cap.millicores },
            HardRow { weights: derived.iter().map(|d| d.memory).collect(), cap: cap.memory_bytes },
        ];
        hard.extend(side);
        let general = General {
            profit: p.iter().map(|&x| x as f64).collect(),
            hard,
            soft: Vec::new(),
            conflicts: conflicts.unwrap_or_else(|| vec![Vec::new(); n]),
            integral: offset < EXACT_F64,
        };
        let limits = GeneralLimits {
            deadline: deadline(start, options.time_limit),
            node_limit: options.node_limit,
            rel_gap: options.rel_gap,
            offset: offset as f64,
        };
        #[cfg(feature = "cbc")]
        let (r, method) = if self.side_constraints.is_empty() {
            (bnb::solve(&general, &limits), SolveMethod::BranchAndBound)
        } else {
            let out = crate::milp::solve(&general, &limits, start);
            (out.result, if out.used_cbc { SolveMethod::Milp } else { SolveMethod::BranchAndBound })
        };
        #[cfg(not(feature = "cbc"))]
        let (r, method) = (bnb::solve(&general, &limits), SolveMethod::BranchAndBound);
        // The objective from the exact integer sums.
        let saved: u128 = r.chosen.iter().map(|&j| u128::from(p[j])).sum();
        let objective = (offset - saved) as f64;
        let bound = (offset as f64 - r.upper).max(0.0);
        Ok(solution(r.chosen, objective, bound, r.status, method, r.nodes, start))
    }

    /// The figures of a plan: saving, leftover, capacity used, feasibility.
    ///
    /// # Errors
    /// A malformed problem (as [`solve`](Self::solve)), or
    /// [`IlpError::InvalidChoice`] for an index out of range or repeated.
    pub fn evaluate(&self, chosen: &[usize]) -> Result<AggregationEval, IlpError> {
        let derived = derive_all(&self.candidates)?;
        let side = side_rows(self)?;
        let mark = check_choice(chosen, self.candidates.len())?;
        let (mut saved, mut leftover, mut cpu, mut mem) = (0u128, 0u128, 0u128, 0u128);
        for (d, &m) in derived.iter().zip(&mark) {
            if m {
                saved += u128::from(d.saving);
                cpu += u128::from(d.cpu);
                mem += u128::from(d.memory);
            } else {
                leftover += u128::from(d.saving);
            }
        }
        let mut feasible = cpu <= u128::from(self.balanced_capacity.millicores)
            && mem <= u128::from(self.balanced_capacity.memory_bytes);
        for row in &side {
            let used: u128 = chosen.iter().map(|&j| u128::from(row.weights[j])).sum();
            feasible &= used <= u128::from(row.cap);
        }
        let mut seen = std::collections::HashSet::new();
        for &j in chosen {
            let c = &self.candidates[j];
            for key in &c.components {
                feasible &= seen.insert((c.app, *key));
            }
        }
        let clamp = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        Ok(AggregationEval {
            saved: clamp(saved),
            leftover: clamp(leftover),
            used: Capacity::new(clamp(cpu), clamp(mem)),
            feasible,
        })
    }
}

impl DisaggregationProblem {
    fn check(&self) -> Result<Vec<Derived>, IlpError> {
        let derived = derive_all(&self.groups)?;
        for (field, v) in
            [("penalty.per_millicore", self.penalty.per_millicore), ("penalty.per_byte", self.penalty.per_byte)]
        {
            if !(v.is_finite() && v >= 0.0) {
                return Err(IlpError::InvalidProblem {
                    field,
                    reason: format!("must be finite and non-negative, got {v}"),
                });
            }
        }
        if let Some(adj) = overlaps(&self.groups) {
            if let Some((a, list)) = adj.iter().enumerate().find(|(_, l)| !l.is_empty()) {
                let b = list.first().copied().unwrap_or(0);
                return Err(candidate_error(
                    a,
                    "components",
                    format!("shares a component with group {b}: running groups are disjoint"),
                ));
            }
        }
        Ok(derived)
    }

    /// Chooses the groups to split (see the [crate docs](crate#disaggregation)),
    /// with the general branch and bound.
    ///
    /// # Errors
    /// [`IlpError`] naming the malformed group and field (overlapping groups
    /// included), penalty, or option. Never "infeasible": splitting nothing
    /// is always feasible (it only pays the shortfall penalty).
    pub fn solve(&self, options: &SolveOptions) -> Result<Solution, IlpError> {
        let start = Instant::now();
        options.check()?;
        let derived = self.check()?;
        let n = self.groups.len();
        let kinds: Vec<(Capacity, Capacity)> = self.groups.iter().map(Candidate::demand_by_kind).collect();
        let hard = vec![
            HardRow { weights: kinds.iter().map(|k| k.0.millicores).collect(), cap: self.compute_pool_free.millicores },
            HardRow {
                weights: kinds.iter().map(|k| k.0.memory_bytes).collect(),
                cap: self.compute_pool_free.memory_bytes,
            },
            HardRow { weights: kinds.iter().map(|k| k.1.millicores).collect(), cap: self.memory_pool_free.millicores },
            HardRow {
                weights: kinds.iter().map(|k| k.1.memory_bytes).collect(),
                cap: self.memory_pool_free.memory_bytes,
            },
        ];
        let soft = vec![
            SoftRow {
                weights: derived.iter().map(|d| d.cpu).collect(),
                target: self.required_free.millicores,
                penalty: self.penalty.per_millicore,
            },
            SoftRow {
                weights: derived.iter().map(|d| d.memory).collect(),
                target: self.required_free.memory_bytes,
                penalty: self.penalty.per_byte,
            },
        ];
        let general = General {
            profit: derived.iter().map(|d| -(d.saving as f64)).collect(),
            hard,
            soft,
            conflicts: vec![Vec::new(); n],
            integral: false,
        };
        let limits = GeneralLimits {
            deadline: deadline(start, options.time_limit),
            node_limit: options.node_limit,
            rel_gap: options.rel_gap,
            offset: 0.0,
        };
        let r = bnb::solve(&general, &limits);
        let eval = self.evaluate(&r.chosen)?;
        Ok(solution(r.chosen, eval.cost, -r.upper, r.status, SolveMethod::BranchAndBound, r.nodes, start))
    }

    /// The figures of a plan: communication increase, capacity freed and
    /// used, shortfall, cost, feasibility.
    ///
    /// # Errors
    /// A malformed problem (as [`solve`](Self::solve)), or
    /// [`IlpError::InvalidChoice`] for an index out of range or repeated.
    pub fn evaluate(&self, chosen: &[usize]) -> Result<DisaggregationEval, IlpError> {
        let derived = self.check()?;
        check_choice(chosen, self.groups.len())?;
        let (mut inc, mut fc, mut fm) = (0u128, 0u128, 0u128);
        let mut used = [0u128; 4];
        for &j in chosen {
            let d = &derived[j];
            inc += u128::from(d.saving);
            fc += u128::from(d.cpu);
            fm += u128::from(d.memory);
            let (c, m) = self.groups[j].demand_by_kind();
            for (u, x) in used.iter_mut().zip([c.millicores, c.memory_bytes, m.millicores, m.memory_bytes]) {
                *u += u128::from(x);
            }
        }
        let clamp = |x: u128| u64::try_from(x).unwrap_or(u64::MAX);
        let short_c = u128::from(self.required_free.millicores).saturating_sub(fc);
        let short_m = u128::from(self.required_free.memory_bytes).saturating_sub(fm);
        let cost = inc as f64 + self.penalty.per_millicore * short_c as f64 + self.penalty.per_byte * short_m as f64;
        let caps = [
            self.compute_pool_free.millicores,
            self.compute_pool_free.memory_bytes,
            self.memory_pool_free.millicores,
            self.memory_pool_free.memory_bytes,
        ];
        let feasible = used.iter().zip(caps).all(|(&u, c)| u <= u128::from(c));
        Ok(DisaggregationEval {
            comm_increase: clamp(inc),
            freed: Capacity::new(clamp(fc), clamp(fm)),
            shortfall: Capacity::new(clamp(short_c), clamp(short_m)),
            compute_pool_used: Capacity::new(clamp(used[0]), clamp(used[1])),
            memory_pool_used: Capacity::new(clamp(used[2]), clamp(used[3])),
            cost,
            feasible,
        })
    }
}
