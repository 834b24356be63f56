//! A small dense bounded-variable primal simplex, for the linear
//! relaxations of the knapsack solver restricted to a core of items.
//!
//! `max c·x` subject to `A x ≤ b` (every row), `0 ≤ x ≤ 1`, with at most
//! [`MAX_ROWS`] rows. Rows get slack variables; rows that the starting
//! point violates get artificial variables, driven out by a first phase.
//! The basis has at most `MAX_ROWS` columns and is refactored from scratch
//! at every iteration (Gaussian elimination with partial pivoting), which
//! keeps it simple and numerically robust for the few hundred columns and
//! few hundred iterations a core needs.
//!
//! Nothing here needs to be exact: the callers only use the duals as
//! Lagrangian multipliers, and every bound they report is recomputed from
//! those multipliers over all items (a valid bound for any multipliers).

// Dense linear algebra on at most 3 × 3 matrices reads best with indices.
#![allow(clippy::needless_range_loop)]

/// The most rows a problem may have.
pub(crate) const MAX_ROWS: usize = 3;

const TOL: f64 = 1e-9;

/// A problem on a core: columns `a[j]` (the first `m` entries used),
/// objective `c`, right-hand sides `b`, starting values `start` (each 0 or
/// 1).
pub(crate) struct CoreLp<'a> {
    pub(crate) m: usize,
    pub(crate) c: &'a [f64],
    pub(crate) a: &'a [[f64; MAX_ROWS]],
    pub(crate) b: [f64; MAX_ROWS],
    pub(crate) start: &'a [bool],
}

/// An optimal basic solution.
pub(crate) struct LpSolution {
    pub(crate) x: Vec<f64>,
    /// The row duals (`≥ 0`).
    pub(crate) y: [f64; MAX_ROWS],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Structural,
    Slack,
    Artificial,
}

#[derive(Clone, Copy)]
struct Var {
    kind: Kind,
    /// Row of a slack or artificial.
    row: usize,
    /// Coefficient of an artificial in its row (±1).
    sign: f64,
    upper: f64,
    value: f64,
    basic: bool,
}

/// Solves `B z = r` for the basis columns (`cols[i]` is column `i` of `B`);
/// `None` when singular.
pub(crate) fn solve_basis(m: usize, cols: &[[f64; MAX_ROWS]; MAX_ROWS], r: [f64; MAX_ROWS]) -> Option<[f64; MAX_ROWS]> {
    // Row-major copy of B with the right-hand side.
    let mut a = [[0.0f64; MAX_ROWS + 1]; MAX_ROWS];
    for i in 0..m {
        for (k, col) in cols.iter().enumerate().take(m) {
            a[i][k] = col[i];
        }
        a[i][m] = r[i];
    }
    for k in 0..m {
        let piv = (k..m).max_by(|&x, &y| a[x][k].abs().total_cmp(&a[y][k].abs()))?;
        if a[piv][k].abs() < 1e-14 {
            return None;
        }
        a.swap(k, piv);
        for i in 0..m {
            if i != k {
                let f = a[i][k] / a[k][k];
                if f != 0.0 {
                    for c in k..=m {
                        a[i][c] -= f * a[k][c];
                    }
                }
            }
        }
    }
    let mut z = [0.0; MAX_ROWS];
    for i in 0..m {
        z[i] = a[i][m] / a[i][i];
    }
    Some(z)
}

/// Solves `yᵀ B = d` (the transposed system).
fn solve_basis_t(m: usize, cols: &[[f64; MAX_ROWS]; MAX_ROWS], d: [f64; MAX_ROWS]) -> Option<[f64; MAX_ROWS]> {
    // Column k of Bᵀ is row k of B.
    let mut t = [[0.0f64; MAX_ROWS]; MAX_ROWS];
    for (k, tk) in t.iter_mut().enumerate().take(m) {
        for (i, col) in cols.iter().enumerate().take(m) {
            tk[i] = col[k];
        }
    }
    solve_basis(m, &t, d)
}

impl CoreLp<'_> {
    fn column(&self, v: &Var, j: usize) -> [f64; MAX_ROWS] {
        match v.kind {
            Kind::Structural => self.a[j],
            Kind::Slack => {
                let mut e = [0.0; MAX_ROWS];
                e[v.row] = 1.0;
                e
            }
            Kind::Artificial => {
                let mut e = [0.0; MAX_ROWS];
                e[v.row] = v.sign;
                e
            }
        }
    }

    /// The optimum, or `None` when the problem is infeasible, the
    /// iteration budget runs out, or the basis degenerates numerically.
    pub(crate) fn solve(&self) -> Option<LpSolution> {
        let (m, n) = (self.m, self.c.len());
        debug_assert!((1..=MAX_ROWS).contains(&m));
        let mut vars: Vec<Var> = (0..n)
            .map(|j| Var {
                kind: Kind::Structural,
                row: 0,
                sign: 1.0,
                upper: 1.0,
                value: if self.start[j] { 1.0 } else { 0.0 },
                basic: false,
            })
            .collect();
        let mut basis = [usize::MAX; MAX_ROWS];
        let mut any_artificial = false;
        for i in 0..m {
            let used: f64 = (0..n).filter(|&j| self.start[j]).map(|j| self.a[j][i]).sum();
            let res = self.b[i] - used;
            if res >= 0.0 {
                basis[i] = vars.len();
                vars.push(Var { kind: Kind::Slack, row: i, sign: 1.0, upper: f64::INFINITY, value: res, basic: true });
            } else {
                vars.push(Var { kind: Kind::Slack, row: i, sign: 1.0, upper: f64::INFINITY, value: 0.0, basic: false });
                basis[i] = vars.len();
                vars.push(Var {
                    kind: Kind::Artificial,
                    row: i,
                    sign: -1.0,
                    upper: f64::INFINITY,
                    value: -res,
                    basic: true,
                });
                any_artificial = true;
            }
        }
        let cost = |v: &Var, j: usize, phase1: bool| -> f64 {
            match (v.kind, phase1) {
                (Kind::Artificial, true) => -1.0,
                (Kind::Structural, false) => self.c[j],
                _ => 0.0,
            }
        };
        let max_iter = 20 * (n + m) + 100;
        let mut phase1 = any_artificial;
        let mut iter = 0;
        loop {
            iter += 1;
            if iter > max_iter {
                return None;
            }
            let mut cols = [[0.0; MAX_ROWS]; MAX_ROWS];
            let mut cb = [0.0; MAX_ROWS];
            for i in 0..m {
                let v = &vars[basis[i]];
                cols[i] = self.column(v, basis[i]);
                cb[i] = cost(v, basis[i], phase1);
            }
            let y = solve_basis_t(m, &cols, cb)?;
            // Pricing (Dantzig), skipping fixed artificials in phase 2.
            let mut enter = None;
            let mut best = TOL;
            for (q, v) in vars.iter().enumerate() {
                if v.basic || (v.kind == Kind::Artificial && !phase1) {
                    continue;
                }
                let col = self.column(v, q);
                let d = cost(v, q, phase1) - (0..m).map(|i| y[i] * col[i]).sum::<f64>();
                let at_upper = v.value > 0.0 && v.value >= v.upper;
                let gain = if at_upper { -d } else { d };
                if gain > best {
                    best = gain;
                    enter = Some((q, !at_upper));
                }
            }
            let Some((q, increase)) = enter else {
                if phase1 {
                    let infeas: f64 =
                        vars.iter().filter(|v| v.kind == Kind::Artificial && v.basic).map(|v| v.value).sum();
                    if infeas > 1e-7 {
                        return None;
                    }
                    phase1 = false;
                    // Artificials leave at zero: fix them there.
                    for v in vars.iter_mut().filter(|v| v.kind == Kind::Artificial) {
                        v.upper = 0.0;
                        v.value = 0.0;
                    }
                    continue;
                }
                let x = vars[..n].iter().map(|v| v.value.clamp(0.0, 1.0)).collect();
                return Some(LpSolution { x, y });
            };
            let alpha = solve_basis(m, &cols, self.column(&vars[q], q))?;
            let dir = if increase { 1.0 } else { -1.0 };
            // Ratio test: x_B changes by −t·dir·alpha.
            let mut step = vars[q].upper; // a bound flip
            let mut leave: Option<(usize, bool)> = None;
            for i in 0..m {
                let v = &vars[basis[i]];
                let rate = dir * alpha[i];
                if rate > TOL {
                    let t = (v.value.max(0.0)) / rate;
                    if t < step {
                        step = t;
                        leave = Some((i, false));
                    }
                } else if rate < -TOL && v.upper.is_finite() {
                    let t = (v.upper - v.value).max(0.0) / -rate;
                    if t < step {
                        step = t;
                        leave = Some((i, true));
                    }
                }
            }
            if !step.is_finite() {
                // Unbounded: impossible with boxed structurals and
                // non-negative slacks; numerical trouble.
                return None;
            }
            for i in 0..m {
                let bi = basis[i];
                vars[bi].value -= step * dir * alpha[i];
            }
            vars[q].value += step * dir;
            match leave {
                None => {
                    // Bound flip: snap to the bound.
                    vars[q].value = if increase { vars[q].upper } else { 0.0 };
                }
                Some((i, to_upper)) => {
                    let out = basis[i];
                    vars[out].basic = false;
                    vars[out].value = if to_upper { vars[out].upper } else { 0.0 };
                    vars[q].basic = true;
                    basis[i] = q;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractional_knapsack_with_two_rows() {
        // max 10x0 + 6x1 + 4x2 s.t. x0 + x1 + x2 ≤ 1.5, 2x0 + x2 ≤ 1.
        let c = [10.0, 6.0, 4.0];
        let a = [[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]];
        let start = [true, true, true];
        let lp = CoreLp { m: 2, c: &c, a: &a, b: [1.5, 1.0, 0.0], start: &start };
        let s = lp.solve().expect("feasible");
        let value: f64 = s.x.iter().zip(c).map(|(x, c)| x * c).sum();
        // Optimum: x0 = 0.5, x1 = 1, x2 = 0 → 11 (degenerate: several
        // optimal duals, all with dual objective 11).
        assert!((value - 11.0).abs() < 1e-9, "value {value}, x {:?}", s.x);
        let dual: f64 =
            s.y[0] * 1.5 + s.y[1] + (0..3).map(|j| (c[j] - s.y[0] * a[j][0] - s.y[1] * a[j][1]).max(0.0)).sum::<f64>();
        assert!((dual - 11.0).abs() < 1e-9, "duals {:?}", s.y);
    }

    #[test]
    fn infeasible_start_is_repaired_or_reported() {
        // x0 + x1 ≤ 1 from the start (1, 1); and −x0 − x1 ≤ −3 (infeasible).
        let c = [1.0, 2.0];
        let a = [[1.0, -1.0, 0.0], [1.0, -1.0, 0.0]];
        let start = [true, true];
        let ok = CoreLp { m: 1, c: &c, a: &a, b: [1.0, 0.0, 0.0], start: &start };
        let s = ok.solve().expect("feasible");
        assert!((s.x[1] - 1.0).abs() < 1e-9 && s.x[0].abs() < 1e-9);
        let bad = CoreLp { m: 2, c: &c, a: &a, b: [1.0, -3.0, 0.0], start: &start };
        assert!(bad.solve().is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Strong duality: the primal value equals the Lagrangian dual value
        /// of the returned duals, and the solution is feasible.
        #[test]
        fn optimal_by_strong_duality(
            cols in proptest::collection::vec((1.0f64..100.0, 0.0f64..10.0, 0.0f64..10.0, 0.0f64..10.0, proptest::bool::ANY), 1..40),
            m in 1usize..=3,
            fr in (0.1f64..0.9, 0.1f64..0.9, 0.1f64..0.9),
        ) {
            let c: Vec<f64> = cols.iter().map(|x| x.0).collect();
            let a: Vec<[f64; MAX_ROWS]> = cols.iter().map(|x| [x.1, x.2, x.3]).collect();
            let start: Vec<bool> = cols.iter().map(|x| x.4).collect();
            let total = |i: usize| a.iter().map(|col| col[i]).sum::<f64>();
            let b = [total(0) * fr.0, total(1) * fr.1, total(2) * fr.2];
            let s = CoreLp { m, c: &c, a: &a, b, start: &start }.solve().expect("feasible: x = 0 fits");
            for i in 0..m {
                let used: f64 = s.x.iter().zip(&a).map(|(x, col)| x * col[i]).sum();
                proptest::prop_assert!(used <= b[i] + 1e-7, "row {i}: {used} > {}", b[i]);
                proptest::prop_assert!(s.y[i] >= -1e-9);
            }
            let primal: f64 = s.x.iter().zip(&c).map(|(x, c)| x * c).sum();
            let dual: f64 = (0..m).map(|i| s.y[i] * b[i]).sum::<f64>()
                + c.iter().zip(&a).map(|(cj, col)| (cj - (0..m).map(|i| s.y[i] * col[i]).sum::<f64>()).max(0.0)).sum::<f64>();
            proptest::prop_assert!((primal - dual).abs() <= 1e-6 * primal.abs().max(1.0), "primal {primal} dual {dual}");
        }
    }
}
