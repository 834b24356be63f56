//! The general 0-1 branch and bound: any number of hard knapsack rows
//! (non-negative weights), soft covering rows with a linear shortfall
//! penalty, and pairwise conflicts (overlapping candidates).
//!
//! Maximization form: `max Σ p_j x_j − Σ_l π_l · max(0, R_l − Σ_j F_lj x_j)`
//! subject to `Σ_j W_kj x_j ≤ C_k` for every hard row `k` and
//! `x_i + x_j ≤ 1` for every conflicting pair.
//!
//! Bounds are Lagrangian: for `u ≥ 0` (hard rows) and `0 ≤ v ≤ π` (soft
//! rows), with conflicts dropped,
//! `L(u, v) = Σ_k u_k C_k − Σ_l v_l R_l + Σ_j max(0, p_j − u·W_j + v·F_j)`
//! is an upper bound, at the root and, with the decided variables and
//! residual right-hand sides, at every node. The multipliers come from
//! subgradient optimization at the root; each node also takes the simpler
//! bound with `u = v = 0` (all positive profits, least possible penalty).
//! Reduced-cost fixing shrinks the search before it starts; choosing a
//! candidate excludes its conflicts.

use crate::model::SolveStatus;
use std::time::Instant;

/// A soft covering row: `penalty · max(0, target − Σ weights·x)`.
pub(crate) struct SoftRow {
    pub(crate) weights: Vec<u64>,
    pub(crate) target: u64,
    pub(crate) penalty: f64,
}

/// A hard row: `Σ weights·x ≤ cap`.
pub(crate) struct HardRow {
    pub(crate) weights: Vec<u64>,
    pub(crate) cap: u64,
}

pub(crate) struct General {
    pub(crate) profit: Vec<f64>,
    pub(crate) hard: Vec<HardRow>,
    pub(crate) soft: Vec<SoftRow>,
    /// Conflicting items, per item.
    pub(crate) conflicts: Vec<Vec<u32>>,
    /// Whether every feasible objective value is an integer (integer
    /// profits, no soft rows): then only improvements of at least 1 count.
    pub(crate) integral: bool,
}

pub(crate) struct GeneralLimits {
    pub(crate) deadline: Instant,
    pub(crate) node_limit: u64,
    pub(crate) rel_gap: f64,
    /// The minimization form is `offset − value`.
    pub(crate) offset: f64,
}

pub(crate) struct GeneralResult {
    pub(crate) chosen: Vec<usize>,
    /// Proven upper bound (maximization form).
    pub(crate) upper: f64,
    pub(crate) nodes: u64,
    pub(crate) status: SolveStatus,
}

/// The reduced problem the search runs on.
struct Reduced {
    /// Original item index, per position (search order).
    items: Vec<usize>,
    p: Vec<f64>,
    /// Reduced cost at the root multipliers.
    r: Vec<f64>,
    /// Hard weights, row-major per position: `w[pos * k + row]`.
    w: Vec<u64>,
    /// Normalized soft weights `F/R`, per position.
    f: Vec<f64>,
    /// Exact soft weights, per position.
    fx: Vec<u64>,
    /// Conflicts as positions.
    conflicts: Vec<Vec<u32>>,
    /// Positions in no conflict group.
    singles: Vec<u32>,
    /// Connected components of the conflict graph, with their independent
    /// sets: the bound takes the best independent set of each.
    groups: Vec<Group>,
    k: usize,
    l: usize,
}

/// A connected component of the conflict graph.
struct Group {
    members: Vec<u32>,
    /// Every independent set, as a bit mask over `members`.
    sets: Vec<u32>,
}

/// Conflict components small enough to enumerate their independent sets;
/// every other position is a single.
fn conflict_groups(conflicts: &[Vec<u32>]) -> (Vec<u32>, Vec<Group>) {
    const MAX_MEMBERS: usize = 20;
    const MAX_SETS: usize = 4096;
    let n = conflicts.len();
    let mut comp = vec![u32::MAX; n];
    let mut singles = Vec::new();
    let mut groups = Vec::new();
    for start in 0..n {
        if comp[start] != u32::MAX {
            continue;
        }
        // Breadth-first over the conflicts.
        let mut members = vec![start as u32];
        comp[start] = start as u32;
        let mut head = 0;
        while head < members.len() {
            let m = members[head] as usize;
            head += 1;
            for &c in &conflicts[m] {
                if comp[c as usize] == u32::MAX {
                    comp[c as usize] = start as u32;
                    members.push(c);
                }
            }
        }
        if members.len() == 1 || members.len() > MAX_MEMBERS {
            singles.extend(members);
            continue;
        }
        let local: Vec<u32> = members
            .iter()
            .map(|&m| {
                conflicts[m as usize]
                    .iter()
                    .filter_map(|c| members.iter().position(|x| x == c))
                    .fold(0u32, |acc, b| acc | 1 << b)
            })
            .collect();
        // Independent sets by extension in member order.
        let mut sets = vec![0u32];
        let mut ok = true;
        for (b, &mask) in local.iter().enumerate() {
            let count = sets.len();
            for s in 0..count {
                if sets[s] & mask == 0 {
                    sets.push(sets[s] | 1 << b);
                }
            }
            if sets.len() > MAX_SETS {
                ok = false;
                break;
            }
        }
        if ok {
            groups.push(Group { members, sets });
        } else {
            singles.extend(members);
        }
    }
    (singles, groups)
}

impl General {
    fn need(&self, best: f64, limits: &GeneralLimits) -> f64 {
        let rel = limits.rel_gap * (limits.offset - best).abs();
        if self.integral {
            rel.max(1.0)
        } else {
            rel.max(1e-9 * best.abs().max(1.0))
        }
    }
}

fn err(x: f64) -> f64 {
    1e-9 * x.abs() + 1e-6
}

/// Lagrangian bound for given multipliers on normalized rows, with the
/// reduced costs written to `r`.
#[allow(clippy::too_many_arguments)]
fn lagrangian(p: &[f64], hw: &[f64], sw: &[f64], k: usize, l: usize, u: &[f64], v: &[f64], r: &mut [f64]) -> f64 {
    let mut total: f64 = u.iter().sum::<f64>() - v.iter().sum::<f64>();
    for j in 0..p.len() {
        let mut rj = p[j];
        for kk in 0..k {
            rj -= u[kk] * hw[j * k + kk];
        }
        for ll in 0..l {
            rj += v[ll] * sw[j * l + ll];
        }
        r[j] = rj;
        if rj > 0.0 {
            total += rj;
        }
    }
    total
}

pub(crate) fn solve(g: &General, limits: &GeneralLimits) -> GeneralResult {
    let n = g.profit.len();
    // Preprocessing: items that cannot fit alone, or that can only hurt.
    let mut cand: Vec<usize> = Vec::with_capacity(n);
    'items: for j in 0..n {
        for row in &g.hard {
            if row.weights[j] > row.cap {
                continue 'items;
            }
        }
        let helps_soft = g.soft.iter().any(|s| s.weights[j] > 0 && s.penalty > 0.0 && s.target > 0);
        if g.profit[j] <= 0.0 && !helps_soft {
            continue;
        }
        cand.push(j);
    }
    let hard: Vec<&HardRow> = g.hard.iter().filter(|h| cand.iter().any(|&j| h.weights[j] > 0)).collect();
    let soft: Vec<&SoftRow> = g.soft.iter().filter(|s| s.target > 0 && s.penalty > 0.0).collect();
    let (k, l) = (hard.len(), soft.len());
    // Constant part of the objective: the full penalty of rows no item can
    // reduce is still paid.
    let m = cand.len();
    let p: Vec<f64> = cand.iter().map(|&j| g.profit[j]).collect();
    let mut hw = vec![0.0f64; m * k];
    let mut sw = vec![0.0f64; m * l];
    for (pos, &j) in cand.iter().enumerate() {
        for (kk, h) in hard.iter().enumerate() {
            hw[pos * k + kk] = h.weights[j] as f64 / h.cap.max(1) as f64;
        }
        for (ll, s) in soft.iter().enumerate() {
            sw[pos * l + ll] = s.weights[j] as f64 / s.target as f64;
        }
    }
    // Scaled penalties: per unit of normalized shortfall.
    let pen: Vec<f64> = soft.iter().map(|s| s.penalty * s.target as f64).collect();
    let value_all_zero = -pen.iter().sum::<f64>();

    let mut x = vec![false; n];
    // Greedy: in the given order, add an item when it fits and helps.
    let greedy = |order: &[usize], x: &mut Vec<bool>| -> f64 {
        x.iter_mut().for_each(|b| *b = false);
        let mut used = vec![0u128; k];
        let mut cov = vec![0u128; l];
        let mut blocked = vec![false; n];
        let mut value = value_all_zero;
        for &pos in order {
            let j = cand[pos];
            if blocked[j] || (0..k).any(|kk| used[kk] + u128::from(hard[kk].weights[j]) > u128::from(hard[kk].cap)) {
                continue;
            }
            let mut gain = p[pos];
            for ll in 0..l {
                let s = soft[ll];
                let before = u128::from(s.target).saturating_sub(cov[ll]);
                let after = u128::from(s.target).saturating_sub(cov[ll] + u128::from(s.weights[j]));
                gain += s.penalty * (before - after) as f64;
            }
            if gain <= 0.0 {
                continue;
            }
            x[j] = true;
            value += gain;
            for kk in 0..k {
                used[kk] += u128::from(hard[kk].weights[j]);
            }
            for ll in 0..l {
                cov[ll] += u128::from(soft[ll].weights[j]);
            }
            for &c in &g.conflicts[j] {
                blocked[c as usize] = true;
            }
        }
        value
    };
    let score = |pos: usize| {
        let mut gain = p[pos];
        for ll in 0..l {
            gain += pen[ll] * sw[pos * l + ll].min(1.0);
        }
        let weight: f64 = (0..k).map(|kk| hw[pos * k + kk]).sum();
        gain / (weight + 1e-3)
    };
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| score(b).total_cmp(&score(a)));
    let mut best_value = greedy(&order, &mut x);
    let mut best_x = x.clone();

    // Subgradient optimization of the multipliers.
    let mut u = vec![0.0f64; k];
    let mut v = vec![0.0f64; l];
    let mut r = vec![0.0f64; m];
    let mut best_l = lagrangian(&p, &hw, &sw, k, l, &u, &v, &mut r);
    let (mut best_u, mut best_v) = (u.clone(), v.clone());
    let mut theta = 1.0f64;
    let mut stale = 0;
    let mut gu = vec![0.0f64; k];
    let mut gv = vec![0.0f64; l];
    for _ in 0..300 {
        if k + l == 0 || Instant::now() >= limits.deadline {
            break;
        }
        let lv = lagrangian(&p, &hw, &sw, k, l, &u, &v, &mut r);
        if lv < best_l - 1e-12 * best_l.abs() {
            best_l = lv;
            best_u.clone_from(&u);
            best_v.clone_from(&v);
            stale = 0;
        } else {
            stale += 1;
            if stale >= 15 {
                theta *= 0.5;
                stale = 0;
            }
        }
        if best_l - best_value <= g.need(best_value, limits) * 0.5 || theta < 1e-6 {
            break;
        }
        gu.iter_mut().for_each(|x| *x = 1.0);
        gv.iter_mut().for_each(|x| *x = -1.0);
        for pos in 0..m {
            if r[pos] > 0.0 {
                for kk in 0..k {
                    gu[kk] -= hw[pos * k + kk];
                }
                for ll in 0..l {
                    gv[ll] += sw[pos * l + ll];
                }
            }
        }
        // Projected direction: a coordinate at its bound that the step
        // would push outward does not move.
        for kk in 0..k {
            if u[kk] <= 0.0 && gu[kk] > 0.0 {
                gu[kk] = 0.0;
            }
        }
        for ll in 0..l {
            if (v[ll] <= 0.0 && gv[ll] > 0.0) || (v[ll] >= pen[ll] && gv[ll] < 0.0) {
                gv[ll] = 0.0;
            }
        }
        let norm: f64 = gu.iter().chain(&gv).map(|x| x * x).sum();
        if norm <= 1e-18 {
            break;
        }
        let target = best_value.max(lv - lv.abs().max(1.0) * 0.5);
        let step = theta * (lv - target).max(1e-9 * lv.abs().max(1.0)) / norm;
        for kk in 0..k {
            u[kk] = (u[kk] - step * gu[kk]).max(0.0);
        }
        for ll in 0..l {
            v[ll] = (v[ll] - step * gv[ll]).clamp(0.0, pen[ll]);
        }
    }
    let lagr = lagrangian(&p, &hw, &sw, k, l, &best_u, &best_v, &mut r);
    // A second greedy, in reduced-cost order.
    order.sort_by(|&a, &b| r[b].total_cmp(&r[a]));
    let v2 = greedy(&order, &mut x);
    if v2 > best_value {
        best_value = v2;
        best_x.clone_from(&x);
    }
    // The u = v = 0 bound at the root.
    let trivial = {
        let pos_p: f64 = p.iter().filter(|&&x| x > 0.0).sum();
        let mut pen_sum = 0.0;
        for ll in 0..l {
            let cover: f64 = (0..m).map(|pos| sw[pos * l + ll]).sum();
            pen_sum += pen[ll] * (1.0 - cover).max(0.0);
        }
        pos_p - pen_sum
    };
    let root = lagr.min(trivial) + err(lagr.min(trivial));

    let finish = |best_x: &[bool], value: f64, upper: f64, nodes: u64, stopped: Option<SolveStatus>| {
        let chosen: Vec<usize> = (0..n).filter(|&j| best_x[j]).collect();
        let upper = upper.max(value);
        let status = match stopped {
            Some(s) => s,
            None if upper - value < if g.integral { 1.0 } else { 1e-9 * value.abs().max(1.0) } => SolveStatus::Optimal,
            None => SolveStatus::GapReached,
        };
        let upper = if status == SolveStatus::Optimal { value } else { upper };
        GeneralResult { chosen, upper, nodes, status }
    };
    if root < best_value + g.need(best_value, limits) {
        return finish(&best_x, best_value, root, 0, None);
    }
    if Instant::now() >= limits.deadline {
        return finish(&best_x, best_value, root, 0, Some(SolveStatus::TimeLimit));
    }

    // Reduced-cost fixing with the Lagrangian bound.
    let threshold = best_value + g.need(best_value, limits);
    let mut fixed_bound = f64::NEG_INFINITY;
    let mut fixed_one: Vec<usize> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut fixed_zero = vec![false; m];
    for pos in 0..m {
        let flipped = lagr - r[pos].abs() + err(lagr);
        if flipped < threshold {
            fixed_bound = fixed_bound.max(flipped);
            if r[pos] > 0.0 {
                fixed_one.push(pos);
            } else {
                fixed_zero[pos] = true;
            }
        } else {
            free.push(pos);
        }
    }
    // Apply the fixed ones: capacity, conflicts.
    let mut used = vec![0u128; k];
    let mut cov = vec![0u128; l];
    let mut base = 0.0;
    let mut excluded = vec![false; n];
    let mut fixed_x = vec![false; n];
    for &pos in &fixed_one {
        let j = cand[pos];
        if excluded[j] {
            // Two items every better solution needs conflict: none exists.
            return finish(&best_x, best_value, fixed_bound, 0, None);
        }
        fixed_x[j] = true;
        base += p[pos];
        for kk in 0..k {
            used[kk] += u128::from(hard[kk].weights[j]);
        }
        for ll in 0..l {
            cov[ll] += u128::from(soft[ll].weights[j]);
        }
        for &c in &g.conflicts[j] {
            excluded[c as usize] = true;
        }
    }
    if fixed_one.iter().any(|&pos| {
        let j = cand[pos];
        g.conflicts[j].iter().any(|&c| fixed_x[c as usize])
    }) || (0..k).any(|kk| used[kk] > u128::from(hard[kk].cap))
    {
        return finish(&best_x, best_value, fixed_bound, 0, None);
    }
    free.retain(|&pos| !excluded[cand[pos]]);
    free.sort_by(|&a, &b| r[b].total_cmp(&r[a]));

    // The search over the free items.
    let mut pos_of = vec![u32::MAX; n];
    for (i, &pos) in free.iter().enumerate() {
        pos_of[cand[pos]] = i as u32;
    }
    let (hard_ref, soft_ref, cand_ref, sw_ref) = (&hard, &soft, &cand, &sw);
    let conflicts: Vec<Vec<u32>> = free
        .iter()
        .map(|&pos| g.conflicts[cand[pos]].iter().map(|&c| pos_of[c as usize]).filter(|&q| q != u32::MAX).collect())
        .collect();
    let (singles, groups) = conflict_groups(&conflicts);
    let red = Reduced {
        items: free.iter().map(|&pos| cand[pos]).collect(),
        p: free.iter().map(|&pos| p[pos]).collect(),
        r: free.iter().map(|&pos| r[pos]).collect(),
        w: free.iter().flat_map(|&pos| (0..k).map(move |kk| hard_ref[kk].weights[cand_ref[pos]])).collect(),
        f: free.iter().flat_map(|&pos| (0..l).map(move |ll| sw_ref[pos * l + ll])).collect(),
        fx: free.iter().flat_map(|&pos| (0..l).map(move |ll| soft_ref[ll].weights[cand_ref[pos]])).collect(),
        conflicts,
        singles,
        groups,
        k,
        l,
    };
    let caps: Vec<u64> = (0..k).map(|kk| hard[kk].cap - used[kk] as u64).collect();
    let search = Search {
        g,
        red: &red,
        caps,
        targets: soft.iter().map(|s| s.target).collect(),
        penalties: soft.iter().map(|s| s.penalty).collect(),
        pen,
        u: best_u,
        v: best_v,
        norm: hard.iter().map(|h| h.cap.max(1) as f64).collect(),
        limits,
    };
    let out = search.run(base, cov, best_value);
    let mut value = best_value;
    if let Some((val, set)) = out.improved {
        value = val;
        best_x = fixed_x;
        for i in set {
            best_x[red.items[i]] = true;
        }
    }
    let upper = fixed_bound.max(out.pruned_max);
    finish(&best_x, value, upper, out.nodes, out.stopped)
}

struct Search<'a> {
    g: &'a General,
    red: &'a Reduced,
    /// Residual hard capacities after the fixed items.
    caps: Vec<u64>,
    targets: Vec<u64>,
    penalties: Vec<f64>,
    /// Penalties per unit of normalized shortfall.
    pen: Vec<f64>,
    u: Vec<f64>,
    v: Vec<f64>,
    /// The full capacities the multipliers were normalized with (the
    /// residual `caps` exclude the fixed items).
    norm: Vec<f64>,
    limits: &'a GeneralLimits,
}

struct SearchOutcome {
    improved: Option<(f64, Vec<usize>)>,
    pruned_max: f64,
    nodes: u64,
    stopped: Option<SolveStatus>,
}

struct State {
    cur: f64,
    used: Vec<u64>,
    cov: Vec<u128>,
    excl: Vec<u32>,
}

impl Search<'_> {
    fn value(&self, st: &State) -> f64 {
        let mut v = st.cur;
        for ll in 0..self.red.l {
            let short = u128::from(self.targets[ll]).saturating_sub(st.cov[ll]);
            v -= self.penalties[ll] * short as f64;
        }
        v
    }

    fn fits(&self, st: &State, i: usize) -> bool {
        let k = self.red.k;
        st.excl[i] == 0 && (0..k).all(|kk| self.red.w[i * k + kk] <= self.caps[kk] - st.used[kk])
    }

    fn apply(&self, st: &mut State, i: usize, take: bool) {
        let (k, l) = (self.red.k, self.red.l);
        if take {
            st.cur += self.red.p[i];
            for kk in 0..k {
                st.used[kk] += self.red.w[i * k + kk];
            }
            for ll in 0..l {
                st.cov[ll] += u128::from(self.red.fx[i * l + ll]);
            }
            for &c in &self.red.conflicts[i] {
                st.excl[c as usize] += 1;
            }
        } else {
            st.cur -= self.red.p[i];
            for kk in 0..k {
                st.used[kk] -= self.red.w[i * k + kk];
            }
            for ll in 0..l {
                st.cov[ll] -= u128::from(self.red.fx[i * l + ll]);
            }
            for &c in &self.red.conflicts[i] {
                st.excl[c as usize] -= 1;
            }
        }
    }

    /// Upper bound of the subproblem: positions `i..` undecided.
    // Indexing keeps the parallel per-row arrays readable.
    #[allow(clippy::needless_range_loop)]
    fn bound(&self, st: &State, i: usize) -> f64 {
        let (red, k, l) = (self.red, self.red.k, self.red.l);
        // Lagrangian part.
        let mut lag = st.cur;
        for kk in 0..k {
            let res = (self.caps[kk] - st.used[kk]) as f64 / self.norm[kk];
            lag += self.u[kk] * res;
        }
        let mut cover = vec![0.0f64; l];
        for ll in 0..l {
            let covered = st.cov[ll] as f64 / self.targets[ll] as f64;
            lag -= self.v[ll] * (1.0 - covered);
            cover[ll] = covered;
        }
        let mut pos_p = st.cur;
        let available =
            |j: usize| j >= i && st.excl[j] == 0 && (0..k).all(|kk| red.w[j * k + kk] <= self.caps[kk] - st.used[kk]);
        for &j in &red.singles {
            let j = j as usize;
            if !available(j) {
                continue;
            }
            if red.r[j] > 0.0 {
                lag += red.r[j];
            }
            if red.p[j] > 0.0 {
                pos_p += red.p[j];
            }
            for ll in 0..l {
                cover[ll] += red.f[j * l + ll];
            }
        }
        for group in &red.groups {
            let mut avail = 0u32;
            for (b, &m) in group.members.iter().enumerate() {
                let m = m as usize;
                if available(m) {
                    avail |= 1 << b;
                    for ll in 0..l {
                        cover[ll] += red.f[m * l + ll];
                    }
                }
            }
            if avail == 0 {
                continue;
            }
            // The best independent set of the available members, for the
            // reduced costs and for the profits.
            let (mut best_r, mut best_p) = (0.0f64, 0.0f64);
            for &set in &group.sets {
                if set & !avail != 0 {
                    continue;
                }
                let (mut sr, mut sp) = (0.0, 0.0);
                let mut bits = set;
                while bits != 0 {
                    let m = group.members[bits.trailing_zeros() as usize] as usize;
                    sr += red.r[m].max(0.0);
                    sp += red.p[m].max(0.0);
                    bits &= bits - 1;
                }
                best_r = best_r.max(sr);
                best_p = best_p.max(sp);
            }
            lag += best_r;
            pos_p += best_p;
        }
        for ll in 0..l {
            pos_p -= self.pen[ll] * (1.0 - cover[ll]).max(0.0);
        }
        let b = lag.min(pos_p);
        b + err(b)
    }

    fn run(&self, base: f64, cov: Vec<u128>, mut best: f64) -> SearchOutcome {
        let red = self.red;
        let n = red.p.len();
        let mut st = State { cur: base, used: vec![0; red.k], cov, excl: vec![0; n] };
        // (position, taken, other branch done)
        let mut path: Vec<(u32, bool, bool)> = Vec::with_capacity(n);
        let mut i = 0usize;
        let mut improved = None;
        let mut pruned_max = f64::NEG_INFINITY;
        let mut nodes = 0u64;
        let mut stopped = None;
        'search: loop {
            nodes += 1;
            if nodes & 255 == 0 {
                if nodes >= self.limits.node_limit {
                    stopped = Some(SolveStatus::NodeLimit);
                } else if Instant::now() >= self.limits.deadline {
                    stopped = Some(SolveStatus::TimeLimit);
                }
                if stopped.is_some() {
                    break 'search;
                }
            }
            let here = self.value(&st);
            if here > best {
                best = here;
                let set = path.iter().filter(|e| e.1).map(|e| e.0 as usize).collect();
                improved = Some((here, set));
            }
            let ub = self.bound(&st, i);
            if ub < best + self.g.need(best, self.limits) {
                pruned_max = pruned_max.max(ub);
            } else {
                // Next undecided position that can be taken.
                while i < n && !self.fits(&st, i) {
                    path.push((i as u32, false, true));
                    i += 1;
                }
                if i < n {
                    let take = red.r[i] > 0.0 || red.p[i] > 0.0;
                    if take {
                        self.apply(&mut st, i, true);
                    }
                    path.push((i as u32, take, false));
                    i += 1;
                    continue 'search;
                }
            }
            loop {
                match path.pop() {
                    None => break 'search,
                    Some((pos, taken, false)) => {
                        let pos_u = pos as usize;
                        if taken {
                            self.apply(&mut st, pos_u, false);
                        } else {
                            self.apply(&mut st, pos_u, true);
                        }
                        path.push((pos, !taken, true));
                        i = pos_u + 1;
                        continue 'search;
                    }
                    Some((pos, taken, true)) => {
                        if taken {
                            self.apply(&mut st, pos as usize, false);
                        }
                    }
                }
            }
        }
        if stopped.is_some() {
            pruned_max = pruned_max.max(self.bound(&st, i));
            while let Some((pos, taken, done)) = path.pop() {
                let pos_u = pos as usize;
                if taken {
                    self.apply(&mut st, pos_u, false);
                }
                if !done {
                    // The other branch is unexplored.
                    if !taken {
                        self.apply(&mut st, pos_u, true);
                    }
                    pruned_max = pruned_max.max(self.bound(&st, pos_u + 1));
                    if !taken {
                        self.apply(&mut st, pos_u, false);
                    }
                }
            }
        }
        SearchOutcome { improved, pruned_max, nodes, stopped }
    }
}
