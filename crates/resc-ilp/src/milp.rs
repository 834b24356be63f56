//! The general-MILP path (feature `cbc`): aggregation problems with side
//! constraints, handed to CBC through `good_lp` after a short run of our
//! own branch and bound.
//!
//! 1. The branch and bound runs with a quarter of the time limit. When it
//!    proves optimality (or the requested gap) it is the answer
//!    ([`SolveMethod::BranchAndBound`](crate::SolveMethod::BranchAndBound)).
//! 2. Otherwise CBC solves the whole model (`max Σ s_j x_j`, the capacity
//!    rows, the side rows, `x_i + x_j ≤ 1` for overlapping candidates) with
//!    the rest of the time limit, started from our incumbent.
//! 3. CBC's solution is checked in exact integer arithmetic and kept only
//!    when feasible and better. The bound is the better of ours and CBC's
//!    best possible value (when that is consistent with the solutions
//!    found), so the gap reported stays a proof whichever solver stopped.

use crate::bnb::{self, General, GeneralLimits, GeneralResult};
use crate::model::SolveStatus;
use good_lp::solvers::coin_cbc::coin_cbc;
use good_lp::{
    variable, Expression, ProblemVariables, ResolutionError, Solution as _, SolutionStatus, SolverModel, Variable,
};
use std::time::Instant;

/// What the MILP path found (maximization form, as [`GeneralResult`]).
pub(crate) struct MilpResult {
    pub(crate) result: GeneralResult,
    /// Whether CBC ran (else the branch and bound settled it).
    pub(crate) used_cbc: bool,
}

fn feasible(g: &General, x: &[bool]) -> bool {
    let rows_ok = g.hard.iter().all(|row| {
        let used: u128 = row.weights.iter().zip(x).filter(|(_, &on)| on).map(|(&w, _)| u128::from(w)).sum();
        used <= u128::from(row.cap)
    });
    let conflicts_ok = g.conflicts.iter().enumerate().all(|(i, list)| !x[i] || list.iter().all(|&j| !x[j as usize]));
    rows_ok && conflicts_ok
}

fn value(g: &General, chosen: &[usize]) -> f64 {
    chosen.iter().map(|&j| g.profit[j]).sum()
}

/// Solves the general problem `g` (no soft rows) with our branch and bound
/// and then, if that does not settle it, CBC.
pub(crate) fn solve(g: &General, limits: &GeneralLimits, start: Instant) -> MilpResult {
    let total = limits.deadline.saturating_duration_since(start);
    let ours = GeneralLimits {
        deadline: start + total / 4,
        node_limit: limits.node_limit,
        rel_gap: limits.rel_gap,
        offset: limits.offset,
    };
    let first = bnb::solve(g, &ours);
    if matches!(first.status, SolveStatus::Optimal | SolveStatus::GapReached | SolveStatus::NodeLimit) {
        return MilpResult { result: first, used_cbc: false };
    }
    let remaining = limits.deadline.saturating_duration_since(Instant::now());
    if remaining.is_zero() {
        return MilpResult { result: first, used_cbc: false };
    }
    match run_cbc(g, &first.chosen, remaining.as_secs_f64()) {
        Ok((chosen, cbc_upper, proven)) => {
            let n = g.profit.len();
            let mut x = vec![false; n];
            for &j in &chosen {
                x[j] = true;
            }
            let mine = value(g, &first.chosen);
            let (best, best_value) = if feasible(g, &x) && value(g, &chosen) > mine {
                let v = value(g, &chosen);
                (chosen, v)
            } else {
                (first.chosen.clone(), mine)
            };
            // CBC's bound counts only when it is consistent with what was
            // found; an optimality claim only for a solution we checked.
            let mut upper = first.upper;
            if cbc_upper.is_finite() && cbc_upper + 1e-6 * cbc_upper.abs().max(1.0) >= best_value {
                upper = upper.min(cbc_upper.max(best_value));
            }
            if proven && best_value >= cbc_upper - 1e-9 * cbc_upper.abs().max(1.0) {
                upper = upper.min(best_value);
            }
            let status = if upper <= best_value {
                SolveStatus::Optimal
            } else if (upper - best_value) <= limits.rel_gap * (limits.offset - best_value).max(1.0) {
                SolveStatus::GapReached
            } else {
                SolveStatus::TimeLimit
            };
            MilpResult {
                result: GeneralResult { chosen: best, upper: upper.max(best_value), nodes: first.nodes, status },
                used_cbc: true,
            }
        }
        // CBC failed: our branch and bound's answer stands.
        Err(_) => MilpResult { result: first, used_cbc: false },
    }
}

/// CBC on the whole model: the chosen indices (`x > ½`), CBC's bound, and
/// whether CBC claims optimality.
fn run_cbc(g: &General, start: &[usize], seconds: f64) -> Result<(Vec<usize>, f64, bool), ResolutionError> {
    let n = g.profit.len();
    let mut vars = ProblemVariables::new();
    let mut initial = vec![0.0; n];
    for &j in start {
        initial[j] = 1.0;
    }
    let x: Vec<Variable> = (0..n).map(|j| vars.add(variable().binary().initial(initial[j]))).collect();
    let objective: Expression = x.iter().zip(&g.profit).map(|(&v, &p)| p * v).sum();
    let mut model = vars.maximise(objective).using(coin_cbc);
    model.set_parameter("sec", &format!("{:.3}", seconds.max(0.01)));
    model.set_parameter("threads", "1");
    for row in &g.hard {
        let lhs: Expression = x.iter().zip(&row.weights).filter(|(_, &w)| w > 0).map(|(&v, &w)| w as f64 * v).sum();
        model.add_constraint(lhs.leq(row.cap as f64));
    }
    for (i, list) in g.conflicts.iter().enumerate() {
        for &j in list.iter().filter(|&&j| j as usize > i) {
            model.add_constraint((x[i] + x[j as usize]).leq(1.0));
        }
    }
    let solution = model.solve()?;
    let proven = matches!(solution.status(), SolutionStatus::Optimal);
    let cbc_upper = solution.model().best_possible_value();
    let chosen = (0..n).filter(|&j| solution.value(x[j]) > 0.5).collect();
    Ok((chosen, cbc_upper, proven))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bnb::HardRow;
    use proptest::prelude::*;
    use std::time::Duration;

    fn brute(g: &General) -> f64 {
        let n = g.profit.len();
        let mut best = 0.0f64;
        for mask in 0u32..(1 << n) {
            let x: Vec<bool> = (0..n).map(|j| mask >> j & 1 == 1).collect();
            if feasible(g, &x) {
                let v: f64 = (0..n).filter(|&j| x[j]).map(|j| g.profit[j]).sum();
                best = best.max(v);
            }
        }
        best
    }

    fn instance(items: &[(u64, u64, u64, u64)], caps: (f64, f64, f64), pairs: &[(usize, usize)]) -> General {
        let n = items.len();
        let sum = |f: fn(&(u64, u64, u64, u64)) -> u64| items.iter().map(f).sum::<u64>() as f64;
        let mut conflicts = vec![Vec::new(); n];
        for &(a, b) in pairs {
            let (a, b) = (a % n, b % n);
            if a != b && !conflicts[a].contains(&(b as u32)) {
                conflicts[a].push(b as u32);
                conflicts[b].push(a as u32);
            }
        }
        General {
            profit: items.iter().map(|i| i.0 as f64).collect(),
            hard: vec![
                HardRow { weights: items.iter().map(|i| i.1).collect(), cap: (sum(|i| i.1) * caps.0) as u64 },
                HardRow { weights: items.iter().map(|i| i.2).collect(), cap: (sum(|i| i.2) * caps.1) as u64 },
                // A side row: e.g. "at most so many groups" with weights.
                HardRow { weights: items.iter().map(|i| i.3).collect(), cap: (sum(|i| i.3) * caps.2) as u64 },
            ],
            soft: Vec::new(),
            conflicts,
            integral: true,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]

        #[test]
        fn cbc_matches_brute_force(
            items in prop::collection::vec((1u64..1_000, 0u64..400, 0u64..400, 0u64..5), 1..11),
            caps in (0.1f64..0.9, 0.1f64..0.9, 0.1f64..0.9),
            pairs in prop::collection::vec((0usize..11, 0usize..11), 0..6),
        ) {
            let g = instance(&items, caps, &pairs);
            let opt = brute(&g);
            let (chosen, upper, proven) = run_cbc(&g, &[], 10.0).expect("CBC runs");
            let mut x = vec![false; g.profit.len()];
            for &j in &chosen {
                x[j] = true;
            }
            prop_assert!(feasible(&g, &x), "CBC's solution is infeasible");
            prop_assert!(proven);
            prop_assert_eq!(value(&g, &chosen), opt);
            prop_assert!(upper + 1e-6 >= opt);
            // The whole path agrees too.
            let limits = GeneralLimits {
                deadline: Instant::now() + Duration::from_secs(10),
                node_limit: u64::MAX,
                rel_gap: 0.0,
                offset: g.profit.iter().sum(),
            };
            let r = solve(&g, &limits, Instant::now()).result;
            prop_assert_eq!(value(&g, &r.chosen), opt);
            prop_assert!(r.upper + 1e-6 >= opt);
        }
    }
}
