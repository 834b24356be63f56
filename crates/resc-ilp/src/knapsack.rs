//! The two-constraint 0-1 knapsack solver: the aggregation problem when the
//! candidates are disjoint and there are no side constraints.
//!
//! `max Σ p_j x_j` s.t. `Σ a_j x_j ≤ A`, `Σ b_j x_j ≤ B`, `x ∈ {0,1}ⁿ`, with
//! integer profits (bytes) and weights (millicores, bytes).
//!
//! 1. **Preprocessing.** Items that cannot fit alone, or save nothing, are
//!    out; items that need nothing are in.
//! 2. **Surrogate multipliers.** Bisection on the weight `μ` of the two
//!    normalized constraints; each step is a fractional knapsack solved in
//!    linear time by selection, on a window of items around the critical
//!    one with the rest aggregated, checked exact at every step and rebuilt
//!    when not. Bracketing starts at `μ = ½` and widens geometrically; the
//!    side of the violated constraint says where the LP dual optimum lies. `μ`
//!    becomes integer multipliers `(α, β)`, so surrogate weights are exact.
//! 3. **Exact LP duals.** With the items sorted by surrogate efficiency,
//!    the critical ratio `λ` gives approximate multipliers `u = λ(α, β)`.
//!    A bounded-variable simplex ([`lp`]) on a core of the items with the
//!    smallest `|r_j|` (the others fixed by the sign of `r_j`) gives the
//!    LP's duals; fixed items whose reduced cost contradicts their fixing
//!    join the core until none does, and then they are the LP optimum's.
//!    They are kept when their bound is lower. Reduced costs
//!    `r_j = p_j − u·w_j`, the bound `L = u·C + Σ max(0, r_j)`, and the LP
//!    rounding `X₀ = {r_j > 0}`. For every feasible `X`,
//!    `value(X) = L − Σ_{j ∈ X △ X₀} |r_j| − u·slack(X)`: a solution better
//!    than `L − T` differs from `X₀` only in items with `|r_j| < T`, and by a
//!    set whose `|r|` sum is below `T`. (Any `u ≥ 0` makes this an identity
//!    and `L` a bound: the LP only makes them tight.)
//! 4. **Exact search by deepening meet-in-the-middle.** For a growing
//!    threshold `T`, the items with `|r_j| < T` are split in two halves; each
//!    half's deviation sets with `|r|` sum below `T` are enumerated, and the
//!    best feasible pair is found by an offline 2-D dominance sweep (sort by
//!    one weight, Fenwick tree of maxima over the rank of the other). After
//!    a complete round, `L − T` bounds every solution not seen, so the round
//!    proves optimality once the incumbent exceeds it. The next threshold is
//!    the one that would prove the incumbent, when the enumeration (whose
//!    logarithm grows as `√T`) is predicted to fit the budget. When more
//!    items than a half enumeration can hold have `|r|` within the rounding
//!    margin, no round can complete and the rounds are skipped.
//! 5. **Large-neighbourhood search.** When the rounds stop (strongly
//!    correlated instances, where almost every item has a small reduced
//!    cost), exact searches of three neighbourhoods of the incumbent
//!    alternate until none improves it: the best 1-for-1 swap (or single
//!    change) over all items, by one dominance sweep of the removals
//!    against the additions; swaps of up to 2 + 2 of the cheapest items;
//!    and every subset of a random core of cheap items.
//! 6. **Cardinality bound.** A solution left unproven gets the tighter of
//!    the rounds' bound and the cardinality bound: when the LP optimum
//!    holds a fractional number `k*` of items and the surrogate LP bound on
//!    the item count (bisection on `μ`, linear time per step) shows that no
//!    solution holds `⌈k*⌉`, then for any `u, v ≥ 0`,
//!    `u·C + v·⌊k*⌋ + Σ max(0, p_j − u·w_j − v)` bounds every solution.
//!    The multipliers are the least-squares fit `p ≈ u·w + v` over the
//!    near-critical items: exact for affine profits, where the fractional
//!    count is what separates the LP from the integer optimum.

use crate::lp;
use crate::model::SolveStatus;
use std::time::Instant;

/// Result on the item set (indices into the input vectors).
pub(crate) struct KpResult {
    pub(crate) chosen: Vec<usize>,
    /// Total profit of `chosen`.
    pub(crate) value: u128,
    /// Proven upper bound on the optimum.
    pub(crate) upper: u128,
    pub(crate) nodes: u64,
    pub(crate) status: SolveStatus,
}

pub(crate) struct Limits {
    pub(crate) deadline: Instant,
    pub(crate) node_limit: u64,
    pub(crate) rel_gap: f64,
    /// The minimization form is `offset − value`.
    pub(crate) offset: u128,
    pub(crate) tuning: Tuning,
}

impl Limits {
    /// The limit that has run out, if any.
    fn reached(&self, nodes: u64) -> Option<SolveStatus> {
        if nodes >= self.node_limit {
            Some(SolveStatus::NodeLimit)
        } else if Instant::now() >= self.deadline {
            Some(SolveStatus::TimeLimit)
        } else {
            None
        }
    }

    /// Whether an upper bound `upper` is close enough to `value` to stop.
    fn within_gap(&self, value: u128, upper: u128) -> bool {
        if upper <= value {
            return true;
        }
        let leftover = self.offset.saturating_sub(value) as f64;
        ((upper - value) as f64) <= self.rel_gap * leftover.max(1.0)
    }
}

/// The search's internal budgets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// States a half enumeration may hold.
    pub(crate) half_cap: usize,
    /// Items per half of a large-neighbourhood core.
    pub(crate) lns_half: usize,
    /// Up to this many active items, one complete enumeration (no
    /// threshold) solves the problem.
    pub(crate) full_enumeration: usize,
    /// Items in the first deepening round.
    pub(crate) initial_core: usize,
    /// Large-neighbourhood rounds without improvement before giving up.
    pub(crate) lns_stale: usize,
    /// Cheapest items the swap neighbourhood draws from.
    pub(crate) swap_pool: usize,
    /// Items of the first core the exact LP is solved on.
    pub(crate) lp_core: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            half_cap: 1 << 18,
            lns_half: 12,
            full_enumeration: 36,
            initial_core: 24,
            lns_stale: 3,
            swap_pool: 200,
            lp_core: 128,
        }
    }
}

#[derive(Clone, Copy)]
struct LpItem {
    ratio: f64,
    s: f64,
    idx: u32,
}

/// Aggregated items of a reduced LP: always in at the current `μ`.
#[derive(Clone, Copy, Default)]
struct Fixed {
    p: f64,
    a: f64,
    b: f64,
}

struct LpOut {
    sa: f64,
    sb: f64,
    /// The critical item's efficiency (0 when everything fits).
    crit_ratio: f64,
}

/// The fractional surrogate knapsack at `μ` over `set` plus the `fixed`
/// aggregate, capacity `cap0` (normalized constraints: 1 for all items).
#[allow(clippy::too_many_arguments)]
fn lp_eval(
    mu: f64,
    p: &[f64],
    a: &[f64],
    b: &[f64],
    set: &[u32],
    fixed: Fixed,
    cap0: f64,
    buf: &mut Vec<LpItem>,
) -> LpOut {
    buf.clear();
    for &j in set {
        let ju = j as usize;
        let s = mu * a[ju] + (1.0 - mu) * b[ju];
        let ratio = if s > 0.0 { p[ju] / s } else { f64::INFINITY };
        buf.push(LpItem { ratio, s, idx: j });
    }
    let mut cap = cap0 - (mu * fixed.a + (1.0 - mu) * fixed.b);
    let (mut sa, mut sb) = (fixed.a, fixed.b);
    if cap < 0.0 {
        return LpOut { sa, sb, crit_ratio: f64::INFINITY };
    }
    let take = |it: &LpItem, f: f64, sa: &mut f64, sb: &mut f64| {
        let j = it.idx as usize;
        *sa += f * a[j];
        *sb += f * b[j];
    };
    let (mut lo, mut hi) = (0usize, buf.len());
    while hi - lo > 24 {
        let slice = &mut buf[lo..hi];
        let m = slice.len();
        let pivot = median3(slice[0].ratio, slice[m / 2].ratio, slice[m - 1].ratio);
        let (gt, eq) = partition3(slice, pivot);
        let sum_gt: f64 = slice[..gt].iter().map(|it| it.s).sum();
        if sum_gt > cap {
            hi = lo + gt;
            continue;
        }
        cap -= sum_gt;
        for it in &slice[..gt] {
            take(it, 1.0, &mut sa, &mut sb);
        }
        for it in &slice[gt..eq] {
            if it.s <= cap {
                cap -= it.s;
                take(it, 1.0, &mut sa, &mut sb);
            } else {
                take(it, cap / it.s, &mut sa, &mut sb);
                return LpOut { sa, sb, crit_ratio: it.ratio };
            }
        }
        lo += eq;
    }
    let rest = &mut buf[lo..hi];
    rest.sort_unstable_by(|x, y| y.ratio.total_cmp(&x.ratio));
    for it in rest.iter() {
        if it.s <= cap {
            cap -= it.s;
            take(it, 1.0, &mut sa, &mut sb);
        } else {
            take(it, cap / it.s, &mut sa, &mut sb);
            return LpOut { sa, sb, crit_ratio: it.ratio };
        }
    }
    LpOut { sa, sb, crit_ratio: 0.0 }
}

fn median3(x: f64, y: f64, z: f64) -> f64 {
    if (x <= y) == (y <= z) {
        y
    } else if (y <= x) == (x <= z) {
        x
    } else {
        z
    }
}

/// Three-way partition in decreasing order: `[0, gt)` > pivot,
/// `[gt, eq)` == pivot, `[eq, len)` < pivot.
fn partition3(v: &mut [LpItem], pivot: f64) -> (usize, usize) {
    let (mut lt, mut i, mut gt) = (0usize, 0usize, v.len());
    while i < gt {
        let r = v[i].ratio;
        if r > pivot {
            v.swap(lt, i);
            lt += 1;
            i += 1;
        } else if r < pivot {
            gt -= 1;
            v.swap(i, gt);
        } else {
            i += 1;
        }
    }
    (lt, gt)
}

/// A window of items around the critical one, with the items ahead of it
/// aggregated and the items behind it dropped: an exact model of the LP as
/// long as the ahead items stay ahead of the critical item and the behind
/// items behind it, which [`Window::eval`] checks.
struct Window {
    set: Vec<u32>,
    ahead: Vec<u32>,
    behind: Vec<u32>,
    fixed: Fixed,
}

impl Window {
    const HALF: usize = 400;

    fn build(mu: f64, p: &[f64], a: &[f64], b: &[f64], active: &[u32], buf: &mut Vec<LpItem>) -> Window {
        // The critical ratio by a full evaluation; the window by two
        // selections around the critical rank.
        let out = lp_eval(mu, p, a, b, active, Fixed::default(), 1.0, buf);
        let mut keyed: Vec<(f64, u32)> = buf.iter().map(|it| (it.ratio, it.idx)).collect();
        let crit = keyed.iter().filter(|x| x.0 > out.crit_ratio).count();
        let lo = crit.saturating_sub(Self::HALF);
        let hi = (crit + Self::HALF).min(keyed.len());
        let cmp = |x: &(f64, u32), y: &(f64, u32)| y.0.total_cmp(&x.0);
        if hi < keyed.len() {
            keyed.select_nth_unstable_by(hi, cmp);
        }
        if lo > 0 {
            keyed[..hi].select_nth_unstable_by(lo, cmp);
        }
        let mut fixed = Fixed::default();
        for &(_, j) in &keyed[..lo] {
            let ju = j as usize;
            fixed.p += p[ju];
            fixed.a += a[ju];
            fixed.b += b[ju];
        }
        Window {
            set: keyed[lo..hi].iter().map(|&(_, j)| j).collect(),
            ahead: keyed[..lo].iter().map(|&(_, j)| j).collect(),
            behind: keyed[hi..].iter().map(|&(_, j)| j).collect(),
            fixed,
        }
    }

    /// The LP at `μ` if the window is still exact there.
    fn eval(&self, mu: f64, p: &[f64], a: &[f64], b: &[f64], buf: &mut Vec<LpItem>) -> Option<LpOut> {
        let out = lp_eval(mu, p, a, b, &self.set, self.fixed, 1.0, buf);
        if !out.crit_ratio.is_finite() || out.crit_ratio <= 0.0 {
            return None;
        }
        let ratio = |j: &u32| {
            let ju = *j as usize;
            p[ju] / (mu * a[ju] + (1.0 - mu) * b[ju])
        };
        let ahead_ok = self.ahead.iter().map(ratio).fold(f64::INFINITY, f64::min) >= out.crit_ratio;
        let behind_ok = self.behind.iter().map(ratio).fold(0.0, f64::max) <= out.crit_ratio;
        (ahead_ok && behind_ok).then_some(out)
    }
}

/// How closely the bisection brackets the surrogate dual's `μ`: the core
/// LP that follows corrects the remaining error exactly.
const LP_MU_TOL: f64 = 1e-5;

/// The weight `μ ∈ [0, 1]` of the normalized first constraint that
/// (approximately) minimizes the surrogate LP bound: bisection on which
/// constraint the LP solution violates.
fn lp_multiplier(p: &[f64], a: &[f64], b: &[f64], active: &[u32]) -> f64 {
    let mut buf = Vec::with_capacity(active.len());
    let violated = |out: &LpOut| -> Option<bool> {
        if out.sa > 1.0 + 1e-12 {
            Some(true)
        } else if out.sb > 1.0 + 1e-12 {
            Some(false)
        } else {
            None
        }
    };
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    // `sa − sb` at the bracket's ends, when evaluated.
    let (mut h_lo, mut h_hi): (Option<f64>, Option<f64>) = (None, None);
    // Large instances: start where the normalized constraints weigh the
    // same, with a window around the critical item there. (An estimate
    // from a sample is no better: the bound is flat in μ near its minimum,
    // so a sample's optimal μ wanders.)
    let mut window = (active.len() > 4 * Window::HALF).then(|| Window::build(0.5, p, a, b, active, &mut buf));
    let eval = |mu: f64, window: &mut Option<Window>, buf: &mut Vec<LpItem>| -> LpOut {
        if let Some(w) = window.as_ref() {
            if let Some(out) = w.eval(mu, p, a, b, buf) {
                return out;
            }
            *window = Some(Window::build(mu, p, a, b, active, buf));
        }
        lp_eval(mu, p, a, b, active, Fixed::default(), 1.0, buf)
    };
    if window.is_some() {
        // Bracket the optimum around the guess, widening geometrically.
        let guess = 0.5;
        (lo, hi) = (guess, guess);
        let first = eval(guess, &mut window, &mut buf);
        let Some(up) = violated(&first) else {
            return guess;
        };
        if up {
            h_lo = Some(first.sa - first.sb);
        } else {
            h_hi = Some(first.sa - first.sb);
        }
        let mut step = 1.0 / 256.0;
        loop {
            let x = if up { (guess + step).min(1.0) } else { (guess - step).max(0.0) };
            let out = eval(x, &mut window, &mut buf);
            let h = out.sa - out.sb;
            match violated(&out) {
                None => return x,
                Some(v) if v == up => {
                    // Still on the guess's side: move on.
                    if up {
                        (lo, h_lo) = (x, Some(h));
                    } else {
                        (hi, h_hi) = (x, Some(h));
                    }
                    if x <= 0.0 || x >= 1.0 {
                        if up {
                            (hi, h_hi) = (1.0, None);
                        } else {
                            (lo, h_lo) = (0.0, None);
                        }
                        break;
                    }
                    step *= 4.0;
                }
                Some(_) => {
                    if up {
                        (hi, h_hi) = (x, Some(h));
                    } else {
                        (lo, h_lo) = (x, Some(h));
                    }
                    break;
                }
            }
        }
    }
    // Safeguarded regula falsi (Illinois) on `h(μ) = sa − sb`, which
    // decreases in `μ` and changes sign at the optimum: superlinear where
    // `h` is smooth, and a bisection step whenever two steps did not halve
    // the bracket (near the jumps of `h` at breakpoints).
    let mut last_side = 0i8;
    let mut width_before = [hi - lo; 2];
    while hi - lo > LP_MU_TOL {
        let width = hi - lo;
        let bisect = width > 0.5 * width_before[0];
        let mid = match (h_lo, h_hi) {
            (Some(a), Some(b)) if !bisect && a > 0.0 && b < 0.0 => {
                (lo + width * a / (a - b)).clamp(lo + 1e-3 * width, hi - 1e-3 * width)
            }
            _ => 0.5 * (lo + hi),
        };
        width_before = [width_before[1], width];
        let out = eval(mid, &mut window, &mut buf);
        let h = out.sa - out.sb;
        match violated(&out) {
            Some(true) => {
                lo = mid;
                h_lo = Some(h);
                if last_side == 1 {
                    h_hi = h_hi.map(|x| 0.5 * x);
                }
                last_side = 1;
            }
            Some(false) => {
                hi = mid;
                h_hi = Some(h);
                if last_side == -1 {
                    h_lo = h_lo.map(|x| 0.5 * x);
                }
                last_side = -1;
            }
            None => return mid,
        }
    }
    0.5 * (lo + hi)
}

/// Integer surrogate multipliers for the normalized weight `μ`.
fn integer_multipliers(mu: f64, c1: u64, c2: u64, use1: bool, use2: bool) -> (u128, u128) {
    const D: f64 = 4_294_967_296.0; // 2^32
    match (use1, use2) {
        (false, false) => (1, 1),
        (true, false) => (1, 0),
        (false, true) => (0, 1),
        (true, true) => {
            let ua = mu / c1 as f64;
            let ub = (1.0 - mu) / c2 as f64;
            if ua >= ub {
                let r = (D * ub / ua).round().max(1.0);
                (D as u128, r as u128)
            } else {
                let r = (D * ua / ub).round().max(1.0);
                (r as u128, D as u128)
            }
        }
    }
}

/// The integers deviations are added in: `i64` when every sum fits
/// (always, in practice), else `i128`.
trait Num: Copy + Ord + Default + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> {
    const MIN: Self;
    /// `x` (the caller checked that it fits).
    fn from_i128(x: i128) -> Self;
    fn to_i128(self) -> i128;
}

impl Num for i64 {
    const MIN: Self = i64::MIN;
    fn from_i128(x: i128) -> Self {
        // Callers only pass values they checked to fit.
        x as i64
    }
    fn to_i128(self) -> i128 {
        i128::from(self)
    }
}

impl Num for i128 {
    const MIN: Self = i128::MIN;
    fn from_i128(x: i128) -> Self {
        x
    }
    fn to_i128(self) -> i128 {
        self
    }
}

/// Flipping one item relative to a base solution.
#[derive(Clone, Copy)]
struct Dev<N> {
    j: u32,
    /// The `|r|` cost the enumeration threshold is measured in.
    cost: f64,
    dp: N,
    dw1: N,
    dw2: N,
}

#[derive(Clone, Copy)]
struct HalfState<N> {
    cost: f64,
    dp: N,
    dw1: N,
    dw2: N,
    parent: u32,
    dev: u32,
}

enum Abort {
    Cap,
    Time,
    Nodes,
}

/// All subsets of `devs` with cost sum below `threshold` (`devs` sorted by
/// ascending cost), as a parent-linked tree rooted at state 0.
fn enumerate<N: Num>(
    devs: &[Dev<N>],
    threshold: f64,
    max_card: usize,
    limits: &Limits,
    nodes: &mut u64,
    out: &mut Vec<HalfState<N>>,
    stack: &mut Vec<(u32, u32)>,
) -> Result<(), Abort> {
    out.clear();
    out.push(HalfState { cost: 0.0, dp: N::default(), dw1: N::default(), dw2: N::default(), parent: 0, dev: 0 });
    stack.clear();
    stack.push((0, 0));
    loop {
        // The top state has `depth - 1` items; its children have `depth`.
        let depth = stack.len();
        let Some(top) = stack.last_mut() else { break };
        let (si, pos) = (top.0 as usize, top.1 as usize);
        if depth > max_card || pos >= devs.len() || out[si].cost + devs[pos].cost >= threshold {
            stack.pop();
            continue;
        }
        top.1 += 1;
        let parent = out[si];
        let d = devs[pos];
        out.push(HalfState {
            cost: parent.cost + d.cost,
            dp: parent.dp + d.dp,
            dw1: parent.dw1 + d.dw1,
            dw2: parent.dw2 + d.dw2,
            parent: si as u32,
            dev: pos as u32,
        });
        let len = out.len();
        if len > limits.tuning.half_cap {
            return Err(Abort::Cap);
        }
        if len & 4095 == 0 {
            if *nodes + len as u64 >= limits.node_limit {
                return Err(Abort::Nodes);
            }
            if Instant::now() >= limits.deadline {
                return Err(Abort::Time);
            }
        }
        if depth < max_card {
            stack.push(((len - 1) as u32, pos as u32 + 1));
        }
    }
    *nodes += out.len() as u64;
    Ok(())
}

fn collect<N: Num>(states: &[HalfState<N>], mut si: usize, devs: &[Dev<N>], into: &mut Vec<u32>) {
    while si != 0 {
        let s = states[si];
        into.push(devs[s.dev as usize].j);
        si = s.parent as usize;
    }
}

/// Reusable buffers of the meet-in-the-middle.
struct Mitm<N> {
    left_devs: Vec<Dev<N>>,
    right_devs: Vec<Dev<N>>,
    left: Vec<HalfState<N>>,
    right: Vec<HalfState<N>>,
    stack: Vec<(u32, u32)>,
    keyed: Vec<(N, u32)>,
    by_w1: Vec<(N, u32)>,
    rank: Vec<u32>,
    qrank: Vec<u32>,
    values: Vec<N>,
    queries: Vec<(N, u32)>,
    tree: Vec<(N, u32)>,
}

impl<N: Num> Mitm<N> {
    fn new() -> Self {
        Mitm {
            left_devs: Vec::new(),
            right_devs: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            stack: Vec::new(),
            keyed: Vec::new(),
            by_w1: Vec::new(),
            rank: Vec::new(),
            qrank: Vec::new(),
            values: Vec::new(),
            queries: Vec::new(),
            tree: Vec::new(),
        }
    }

    /// The best deviation (largest `dp` with `dw ≤ slack`) among the pairs
    /// of half-sets with cost below `threshold`; `Ok(None)` when no pair is
    /// feasible.
    ///
    /// An offline 2-D dominance sweep: right states enter a Fenwick tree of
    /// maxima (indexed by the rank of their `dw2`) in increasing `dw1`;
    /// left states query it in increasing `dw1` allowance. Ranks come from
    /// sorts and merges rather than binary searches (cache-friendlier).
    fn run(
        &mut self,
        devs: &[Dev<N>],
        slack: (N, N),
        threshold: f64,
        max_card: usize,
        limits: &Limits,
        nodes: &mut u64,
    ) -> Result<Option<(N, Vec<u32>)>, Abort> {
        // Alternate the (cost-sorted) items between the halves.
        self.left_devs.clear();
        self.left_devs.extend(devs.iter().step_by(2).copied());
        self.right_devs.clear();
        self.right_devs.extend(devs.iter().skip(1).step_by(2).copied());
        self.run_halves(slack, threshold, max_card, limits, nodes)
    }

    /// As [`run`](Self::run), with the halves given: every set of up to
    /// `max_card` items of `left` with up to `max_card` of `right`, with no
    /// threshold. With removals on one side and additions on the other,
    /// the best swap of up to `max_card` for `max_card` (1: over all
    /// items, in one sweep).
    fn run_split(
        &mut self,
        left: impl Iterator<Item = Dev<N>>,
        right: impl Iterator<Item = Dev<N>>,
        slack: (N, N),
        max_card: usize,
        limits: &Limits,
        nodes: &mut u64,
    ) -> Result<Option<(N, Vec<u32>)>, Abort> {
        self.left_devs.clear();
        self.left_devs.extend(left);
        self.right_devs.clear();
        self.right_devs.extend(right);
        self.run_halves(slack, f64::INFINITY, max_card, limits, nodes)
    }

    fn run_halves(
        &mut self,
        slack: (N, N),
        threshold: f64,
        max_card: usize,
        limits: &Limits,
        nodes: &mut u64,
    ) -> Result<Option<(N, Vec<u32>)>, Abort> {
        enumerate(&self.left_devs, threshold, max_card, limits, nodes, &mut self.left, &mut self.stack)?;
        enumerate(&self.right_devs, threshold, max_card, limits, nodes, &mut self.right, &mut self.stack)?;
        let (left, right) = (&self.left, &self.right);
        // Right states by dw1.
        self.by_w1.clear();
        self.by_w1.extend(right.iter().enumerate().map(|(i, s)| (s.dw1, i as u32)));
        self.by_w1.sort_unstable();
        // Dense ranks of the right states' dw2.
        self.keyed.clear();
        self.keyed.extend(right.iter().enumerate().map(|(i, s)| (s.dw2, i as u32)));
        self.keyed.sort_unstable();
        self.rank.clear();
        self.rank.resize(right.len(), 0);
        self.values.clear();
        for &(v, i) in &self.keyed {
            if self.values.last() != Some(&v) {
                self.values.push(v);
            }
            self.rank[i as usize] = self.values.len() as u32;
        }
        // Each left state's dw2 allowance as a rank bound (how many values
        // fit), by merging the sorted allowances with the sorted values.
        self.keyed.clear();
        self.keyed.extend(left.iter().enumerate().map(|(i, s)| (slack.1 - s.dw2, i as u32)));
        self.keyed.sort_unstable();
        self.qrank.clear();
        self.qrank.resize(left.len(), 0);
        let mut v = 0usize;
        for &(allow2, i) in &self.keyed {
            while v < self.values.len() && self.values[v] <= allow2 {
                v += 1;
            }
            self.qrank[i as usize] = v as u32;
        }
        // Left queries by their dw1 allowance.
        self.queries.clear();
        self.queries.extend(left.iter().enumerate().map(|(i, s)| (slack.0 - s.dw1, i as u32)));
        self.queries.sort_unstable();
        let m = self.values.len();
        self.tree.clear();
        self.tree.resize(m + 1, (N::MIN, u32::MAX));
        let mut next = 0usize;
        let mut best: Option<(N, u32, u32)> = None;
        for &(allow1, li) in &self.queries {
            while next < self.by_w1.len() && self.by_w1[next].0 <= allow1 {
                let ri = self.by_w1[next].1;
                let dp = right[ri as usize].dp;
                let mut k = self.rank[ri as usize] as usize;
                while k <= m {
                    if self.tree[k].0 < dp {
                        self.tree[k] = (dp, ri);
                    }
                    k += k & k.wrapping_neg();
                }
                next += 1;
            }
            if next == 0 {
                continue;
            }
            let mut k = self.qrank[li as usize] as usize;
            let mut found = (N::MIN, u32::MAX);
            while k > 0 {
                if self.tree[k].0 > found.0 {
                    found = self.tree[k];
                }
                k &= k - 1;
            }
            if found.1 != u32::MAX {
                let total = left[li as usize].dp + found.0;
                if best.is_none_or(|b| total > b.0) {
                    best = Some((total, li, found.1));
                }
            }
        }
        Ok(best.map(|(dp, li, ri)| {
            let mut set = Vec::new();
            collect(left, li as usize, &self.left_devs, &mut set);
            collect(right, ri as usize, &self.right_devs, &mut set);
            (dp, set)
        }))
    }
}

/// What the search phases start from.
struct Prep<'a> {
    p: &'a [u64],
    w1: &'a [u64],
    w2: &'a [u64],
    c1: u64,
    c2: u64,
    forced: Vec<usize>,
    forced_value: u128,
    /// The Lagrangian bound and its rounding margin.
    lagr: f64,
    margin: f64,
    /// Active items by ascending `|r|`: (item, |r|, in X₀).
    by_cost: Vec<(u32, f64, bool)>,
    in_base: Vec<bool>,
    base_p: u128,
    slack0: (i128, i128),
    best: u128,
    best_set: Vec<u32>,
    /// What the cardinality bound needs (LP duals, the LP's item count,
    /// the surrogate weight): computed only when the search ends unproven.
    card_input: Option<(Mult, f64, f64)>,
    core_size: usize,
}

impl Prep<'_> {
    fn finish(&self, set: &[u32], value: u128, upper: u128, nodes: u64, stopped: Option<SolveStatus>) -> KpResult {
        let mut chosen = self.forced.clone();
        chosen.extend(set.iter().map(|&j| j as usize));
        chosen.sort_unstable();
        let upper = upper.max(value);
        let status = match stopped {
            Some(s) => s,
            None if upper == value => SolveStatus::Optimal,
            None => SolveStatus::GapReached,
        };
        KpResult { chosen, value: self.forced_value + value, upper: self.forced_value + upper, nodes, status }
    }

    /// `floor(L + margin − t)`: the bound on every solution whose `|r|`
    /// deviation from `X₀` is at least `t`.
    fn bound_minus(&self, t: f64) -> u128 {
        floor_u128(self.lagr + self.margin - t)
    }

    /// The cardinality bound (see [`cardinality_bound`]); `u128::MAX` when
    /// it does not apply.
    fn card_upper(&self) -> u128 {
        let Some((mult, kstar, mu)) = self.card_input else { return u128::MAX };
        let active: Vec<u32> = self.by_cost.iter().map(|d| d.0).collect();
        let p = self.p;
        let profit = |j: usize| p[j] as f64;
        let caps = (self.c1 as f64, self.c2 as f64);
        cardinality_bound(&profit, self.w1, self.w2, caps, &active, mult, kstar, self.core_size, self.lagr, mu)
            .map_or(u128::MAX, |(bound, _, _)| floor_u128(bound + self.margin))
    }

    fn dev<N: Num>(&self, j: u32, cost: f64, remove: bool) -> Dev<N> {
        let ju = j as usize;
        let (pj, a, b) = (i128::from(self.p[ju]), i128::from(self.w1[ju]), i128::from(self.w2[ju]));
        if remove {
            Dev { j, cost, dp: N::from_i128(-pj), dw1: N::from_i128(-a), dw2: N::from_i128(-b) }
        } else {
            Dev { j, cost, dp: N::from_i128(pj), dw1: N::from_i128(a), dw2: N::from_i128(b) }
        }
    }
}

/// `⌊x⌋` as an integer, 0 for negative `x`, saturating.
fn floor_u128(x: f64) -> u128 {
    let v = x.floor();
    if v <= 0.0 {
        0
    } else {
        // Saturating float-to-int conversion.
        v as u128
    }
}

/// Flips `set` in `base`.
fn apply(base: &[bool], set: &[u32]) -> Vec<u32> {
    let mut x = base.to_vec();
    for &j in set {
        x[j as usize] = !x[j as usize];
    }
    (0..x.len() as u32).filter(|&j| x[j as usize]).collect()
}

/// Phases 4 and 5.
fn search<N: Num>(mut prep: Prep<'_>, limits: &Limits) -> KpResult {
    let n = prep.p.len();
    let devs: Vec<Dev<N>> = prep.by_cost.iter().map(|&(j, cost, inb)| prep.dev(j, cost, inb)).collect();
    let slack0 = (N::from_i128(prep.slack0.0), N::from_i128(prep.slack0.1));
    let margin = prep.margin;
    let mut mitm = Mitm::<N>::new();
    let mut nodes = 0u64;
    let mut upper = prep.bound_minus(0.0);
    let mut best = prep.best;
    let mut best_set = std::mem::take(&mut prep.best_set);

    // 4. Deepening meet-in-the-middle around X₀.
    let tuning = limits.tuning;
    let lns_half = tuning.lns_half.max(1);
    let mut t = if devs.len() <= tuning.full_enumeration {
        f64::INFINITY
    } else {
        devs[tuning.initial_core.min(devs.len() - 1)].cost.max(margin)
    };
    let mut stopped = None;
    // Items whose |r| is within the rounding margin are free to flip: when
    // there are more of them than a half enumeration can hold (every
    // subset qualifies), no round can complete, and the search goes
    // straight to the neighbourhoods.
    let free = devs.partition_point(|d| d.cost < 2.0 * margin);
    let hopeless_rounds =
        devs.len() > tuning.full_enumeration && free as f64 > 2.0 * (tuning.half_cap.max(2) as f64).log2();
    loop {
        if hopeless_rounds {
            break;
        }
        if let Some(limit) = limits.reached(nodes) {
            stopped = Some(limit);
            break;
        }
        let reach = t + margin;
        let end = devs.partition_point(|d| d.cost < reach);
        let before = nodes;
        match mitm.run(&devs[..end], slack0, reach, usize::MAX, limits, &mut nodes) {
            Ok(found) => {
                if let Some((dp, set)) = found {
                    let value = prep.base_p as i128 + dp.to_i128();
                    if value > best as i128 {
                        best = value as u128;
                        best_set = apply(&prep.in_base, &set);
                    }
                }
                upper = if t.is_finite() { prep.bound_minus(t).max(best) } else { best };
                if limits.within_gap(best, upper) {
                    return prep.finish(&best_set, best, upper, nodes, None);
                }
            }
            Err(Abort::Time) => {
                stopped = Some(SolveStatus::TimeLimit);
                break;
            }
            Err(Abort::Nodes) => {
                stopped = Some(SolveStatus::NodeLimit);
                break;
            }
            Err(Abort::Cap) => break,
        }
        let states = nodes - before;
        // Next threshold: enough to prove the incumbent if the enumeration
        // is predicted to stay in budget (its logarithm grows about as the
        // square root of T), else 1.6x.
        let gap = prep.lagr - best as f64;
        let prove = (gap + 2.0 * margin + 1.0).max(t * 1.05);
        let t_now = t;
        let predict = |next: f64| (states.max(2) as f64).ln() * (next / t_now).sqrt();
        let budget = (tuning.half_cap as f64).ln();
        let current = (states.max(2) as f64).ln();
        // When even proving is out of reach by far (strongly correlated
        // instances), growth rounds stay small: the neighbourhood search
        // improves the incumbent faster than large enumerations do.
        let proving = predict(prove) <= (current + 2.0).min(budget - 0.5);
        let hopeless = predict(prove) > 2.0 * budget;
        t = if proving { prove } else { (t * 1.6).min(prove) };
        if predict(t) > if hopeless { budget - 4.0 } else { budget } {
            break;
        }
    }

    // 5. Large-neighbourhood search around the incumbent, alternating two
    // neighbourhoods, each searched exactly by the meet-in-the-middle:
    // swaps of up to 2 + 2 items among the cheapest `swap_pool` (fills the
    // slack with few, cheap changes), and every subset of a random core of
    // `2 · lns_half` cheap items.
    if stopped.is_none() {
        let pool = devs.len().min(8 * lns_half);
        // The 2-for-2 swaps' pool per side: the full `swap_pool` on small
        // instances, half of it on large ones (where each round's sweep
        // costs more and the rounds' time matters most).
        let pair_pool = if n <= 2_000 { tuning.swap_pool } else { tuning.swap_pool / 2 };
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut stale = 0;
        let mut in_best = vec![false; n];
        let mut local: Vec<Dev<N>> = Vec::with_capacity(tuning.swap_pool.max(2 * lns_half));
        for round in 0..256 {
            if let Some(limit) = limits.reached(nodes) {
                stopped = Some(limit);
                break;
            }
            if stale >= tuning.lns_stale {
                break;
            }
            in_best.iter_mut().for_each(|x| *x = false);
            let (mut u1, mut u2) = (0i128, 0i128);
            for &j in &best_set {
                in_best[j as usize] = true;
                u1 += i128::from(prep.w1[j as usize]);
                u2 += i128::from(prep.w2[j as usize]);
            }
            let gap = prep.lagr - best as f64 + margin;
            local.clear();
            if round % 3 != 2 {
                // Round 0: the best 1-for-1 swap (or single change) over all
                // items, which moves weight between the resources in one
                // step. Round 1: the best swap of up to 2 for 2 among the
                // cheapest removals and additions.
                let slack = (N::from_i128(i128::from(prep.c1) - u1), N::from_i128(i128::from(prep.c2) - u2));
                let (take, max_card) = if round % 3 == 0 { (usize::MAX, 1) } else { (pair_pool, 2) };
                let removals =
                    devs.iter().filter(|d| in_best[d.j as usize]).take(take).map(|d| prep.dev::<N>(d.j, 0.0, true));
                let additions =
                    devs.iter().filter(|d| !in_best[d.j as usize]).take(take).map(|d| prep.dev::<N>(d.j, 0.0, false));
                let res = mitm.run_split(removals, additions, slack, max_card, limits, &mut nodes);
                match res {
                    Ok(Some((dp, set))) if dp > N::default() => {
                        best = (best as i128 + dp.to_i128()) as u128;
                        best_set = apply(&in_best, &set);
                        stale = 0;
                        if limits.within_gap(best, upper) {
                            return prep.finish(&best_set, best, upper, nodes, None);
                        }
                    }
                    Ok(_) | Err(Abort::Cap) => stale += 1,
                    Err(Abort::Time) => {
                        stopped = Some(SolveStatus::TimeLimit);
                        break;
                    }
                    Err(Abort::Nodes) => {
                        stopped = Some(SolveStatus::NodeLimit);
                        break;
                    }
                }
                continue;
            }
            let (threshold, max_card) = if round % 3 == 1 {
                // Items whose |r| alone exceeds the gap cannot be in a
                // better solution's deviation.
                let end = devs.partition_point(|d| d.cost < gap).min(tuning.swap_pool);
                local.extend(devs[..end].iter().map(|d| prep.dev::<N>(d.j, d.cost, in_best[d.j as usize])));
                (gap, 2)
            } else {
                let want = (2 * lns_half).min(pool);
                let mut picked: Vec<u32> = Vec::with_capacity(want);
                while picked.len() < want {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let d = (rng % pool as u64) as u32;
                    if !picked.contains(&d) {
                        picked.push(d);
                    }
                }
                picked.sort_unstable();
                local.extend(picked.iter().map(|&d| {
                    let d = devs[d as usize];
                    prep.dev::<N>(d.j, d.cost, in_best[d.j as usize])
                }));
                (f64::INFINITY, usize::MAX)
            };
            let slack = (N::from_i128(i128::from(prep.c1) - u1), N::from_i128(i128::from(prep.c2) - u2));
            let res = mitm.run(&local, slack, threshold, max_card, limits, &mut nodes);
            match res {
                Ok(Some((dp, set))) if dp > N::default() => {
                    best = (best as i128 + dp.to_i128()) as u128;
                    best_set = apply(&in_best, &set);
                    stale = 0;
                    if limits.within_gap(best, upper) {
                        return prep.finish(&best_set, best, upper, nodes, None);
                    }
                }
                Ok(_) => stale += 1,
                Err(Abort::Time) => {
                    stopped = Some(SolveStatus::TimeLimit);
                    break;
                }
                Err(Abort::Nodes) => {
                    stopped = Some(SolveStatus::NodeLimit);
                    break;
                }
                Err(Abort::Cap) => stale += 1,
            }
        }
    }
    if !limits.within_gap(best, upper) && stopped != Some(SolveStatus::TimeLimit) && Instant::now() < limits.deadline {
        // Unproven: the cardinality bound may close (part of) the gap.
        upper = upper.min(prep.card_upper().max(best));
    }
    if stopped.is_none() && !limits.within_gap(best, upper) {
        // The search gave up within its own budget, before the limits.
        stopped = Some(SolveStatus::SearchLimit);
    }
    prep.finish(&best_set, best, upper, nodes, stopped)
}

/// Lagrangian multipliers of the capacity rows (`u1`, `u2`) and of a
/// cardinality row (`v`; 0 without one): reduced costs
/// `r_j = q_j − u1·w1_j − u2·w2_j − v`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mult {
    u1: f64,
    u2: f64,
    v: f64,
}

impl Mult {
    fn reduced(&self, q: f64, w1: u64, w2: u64) -> f64 {
        q - self.u1 * w1 as f64 - self.u2 * w2 as f64 - self.v
    }
}

/// The Lagrangian bound `u1·c1 + u2·c2 + v·k + Σ max(0, r_j)`: for `u ≥ 0`
/// an upper bound on `Σ q x` over the solutions with `|X| ≤ k` when
/// `v ≥ 0`, with `|X| ≥ k` when `v ≤ 0` (any `X` when `v = 0`).
fn lagrangian(
    q: &dyn Fn(usize) -> f64,
    w1: &[u64],
    w2: &[u64],
    caps: (f64, f64),
    k: f64,
    active: &[u32],
    m: Mult,
) -> f64 {
    let sum: f64 = active
        .iter()
        .map(|&j| {
            let ju = j as usize;
            m.reduced(q(ju), w1[ju], w2[ju]).max(0.0)
        })
        .sum();
    m.u1 * caps.0 + m.u2 * caps.1 + m.v * k + sum
}

/// What [`core_lp`] found.
struct CoreOut {
    mult: Mult,
    /// `Σ x` of the LP solution (fixed items included).
    card: f64,
    /// Whether every item outside the core agrees with its fixing: then
    /// `mult` are the LP's optimal duals over all items.
    consistent: bool,
}

/// The LP relaxation `max Σ q x` s.t. the two capacity rows, solved on a
/// core of the items with the smallest `|r_j|` under `start`, the others
/// fixed by the sign of `r_j`. Items outside the core whose reduced cost under
/// the core's duals contradicts their fixing join the core, and it is
/// solved again (a few times at most). `None` when the core LP fails
/// (infeasible, or numerical trouble).
#[allow(clippy::too_many_arguments)]
fn core_lp(
    q: &dyn Fn(usize) -> f64,
    w1: &[u64],
    w2: &[u64],
    caps: (f64, f64),
    active: &[u32],
    start: Mult,
    core_size: usize,
) -> Option<CoreOut> {
    if active.is_empty() {
        return None;
    }
    let mut keyed: Vec<(f64, u32)> = active
        .iter()
        .map(|&j| {
            let ju = j as usize;
            (start.reduced(q(ju), w1[ju], w2[ju]), j)
        })
        .collect();
    let size = core_size.clamp(1, keyed.len());
    if size < keyed.len() {
        keyed.select_nth_unstable_by(size, |x, y| x.0.abs().total_cmp(&y.0.abs()));
    }
    // Fixed items: (item, in).
    let fixed: Vec<(u32, bool)> = keyed[size..].iter().map(|&(r, j)| (j, r > 0.0)).collect();
    let mut core: Vec<(u32, bool)> = keyed[..size].iter().map(|&(r, j)| (j, r > 0.0)).collect();
    let mut in_core = vec![false; w1.len()];
    for &(j, _) in &core {
        in_core[j as usize] = true;
    }
    let scale = [caps.0.max(1.0), caps.1.max(1.0)];
    let mut cols: Vec<[f64; lp::MAX_ROWS]> = Vec::new();
    let mut obj: Vec<f64> = Vec::new();
    let mut begin: Vec<bool> = Vec::new();
    for _round in 0..4 {
        // Right-hand sides net of the fixed-in items.
        let (mut f1, mut f2, mut fk) = (0.0, 0.0, 0.0f64);
        for &(j, inside) in &fixed {
            let ju = j as usize;
            if inside && !in_core[ju] {
                f1 += w1[ju] as f64;
                f2 += w2[ju] as f64;
                fk += 1.0;
            }
        }
        let pscale = core.iter().map(|&(j, _)| q(j as usize).abs()).fold(0.0, f64::max).max(1e-300);
        cols.clear();
        obj.clear();
        begin.clear();
        for &(j, inside) in &core {
            let ju = j as usize;
            cols.push([w1[ju] as f64 / scale[0], w2[ju] as f64 / scale[1], 0.0]);
            obj.push(q(ju) / pscale);
            begin.push(inside);
        }
        let b = [(caps.0 - f1) / scale[0], (caps.1 - f2) / scale[1], 0.0];
        let sol = lp::CoreLp { m: 2, c: &obj, a: &cols, b, start: &begin }.solve()?;
        // Duals are non-negative up to the simplex's tolerance: clamp, so
        // that the bounds built on them stay valid.
        let mult =
            Mult { u1: (sol.y[0] * pscale / scale[0]).max(0.0), u2: (sol.y[1] * pscale / scale[1]).max(0.0), v: 0.0 };
        let tol = 1e-9 * pscale;
        let mut added = false;
        for &(j, inside) in &fixed {
            let ju = j as usize;
            if in_core[ju] {
                continue;
            }
            let r = mult.reduced(q(ju), w1[ju], w2[ju]);
            if (inside && r < -tol) || (!inside && r > tol) {
                in_core[ju] = true;
                core.push((j, inside));
                added = true;
            }
        }
        if !added {
            let card = fk + sol.x.iter().sum::<f64>();
            return Some(CoreOut { mult, card, consistent: true });
        }
        if core.len() > 8 * core_size.max(64) {
            return Some(CoreOut { mult, card: f64::NAN, consistent: false });
        }
    }
    None
}

/// The surrogate LP bound on the number of items a solution holds, at
/// weight `μ` of the normalized first capacity: the smallest surrogate
/// sizes fill the surrogate capacity, the critical one fractionally. Also
/// whether that fill violates the first (`Some(true)`) or the second
/// (`Some(false)`) capacity. Valid for every `μ ∈ [0, 1]`.
fn surrogate_card(
    w1: &[u64],
    w2: &[u64],
    caps: (f64, f64),
    active: &[u32],
    mu: f64,
    buf: &mut Vec<(f64, u32)>,
) -> (f64, Option<bool>) {
    let (n1, n2) = (mu / caps.0.max(1.0), (1.0 - mu) / caps.1.max(1.0));
    buf.clear();
    buf.extend(active.iter().map(|&j| (n1 * w1[j as usize] as f64 + n2 * w2[j as usize] as f64, j)));
    let (mut lo, mut hi) = (0usize, buf.len());
    let (mut room, mut count, mut s1, mut s2) = (1.0f64, 0.0f64, 0.0f64, 0.0f64);
    let take = |slice: &[(f64, u32)], s1: &mut f64, s2: &mut f64| {
        for &(_, j) in slice {
            *s1 += w1[j as usize] as f64;
            *s2 += w2[j as usize] as f64;
        }
    };
    while lo < hi {
        let slice = &mut buf[lo..hi];
        let mid = slice.len() / 2;
        slice.select_nth_unstable_by(mid, |x, y| x.0.total_cmp(&y.0));
        let below: f64 = slice[..mid].iter().map(|x| x.0).sum();
        if below > room {
            hi = lo + mid;
        } else if below + slice[mid].0 > room {
            take(&slice[..mid], &mut s1, &mut s2);
            let crit = slice[mid];
            let frac = if crit.0 > 0.0 { (room - below) / crit.0 } else { 1.0 };
            count += mid as f64 + frac;
            s1 += frac * w1[crit.1 as usize] as f64;
            s2 += frac * w2[crit.1 as usize] as f64;
            break;
        } else {
            take(&slice[..=mid], &mut s1, &mut s2);
            room -= below + slice[mid].0;
            count += (mid + 1) as f64;
            lo += mid + 1;
        }
    }
    let violated = if s1 > caps.0 * (1.0 + 1e-12) {
        Some(true)
    } else if s2 > caps.1 * (1.0 + 1e-12) {
        Some(false)
    } else {
        None
    };
    (count, violated)
}

/// Whether no feasible solution holds `k` items or more, by the surrogate
/// LP bound on the item count: bisection on `μ` (which capacity the
/// surrogate solution violates) until some `μ` bounds the count below
/// `k`. Gives up (`false`) after a few steps whose bound stays well above.
fn cardinality_below(w1: &[u64], w2: &[u64], caps: (f64, f64), active: &[u32], k: f64, mu0: f64) -> bool {
    let mut buf = Vec::with_capacity(active.len());
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    let mut mid = mu0.clamp(0.0, 1.0);
    for step in 0..48 {
        let (count, violated) = surrogate_card(w1, w2, caps, active, mid, &mut buf);
        if count + 1e-9 < k {
            return true;
        }
        if step >= 8 && count > k + 1.0 {
            return false;
        }
        match violated {
            Some(true) => lo = mid,
            Some(false) => hi = mid,
            None => return false,
        }
        if hi - lo < 1e-12 {
            return false;
        }
        mid = 0.5 * (lo + hi);
    }
    false
}

/// The cardinality bound, when no solution can hold `⌈k*⌉` items (`k*`
/// the LP optimum's item count, fractional): then every solution holds at
/// most `k = ⌊k*⌋`, and for any `u ≥ 0`, `v ≥ 0` the Lagrangian bound with
/// the row `Σ x ≤ k` bounds every solution. The multipliers are the least
/// squares fit `p_j ≈ u·w_j + v` over the `core_size` items of smallest
/// `|r_j|`: exact when the profits are an affine function of the weights
/// (strongly correlated instances, where the LP's fractional cardinality is
/// what separates it from the integer optimum). Returns the bound, the
/// multipliers and `k`, when the bound is below `lagr`.
#[allow(clippy::too_many_arguments)]
fn cardinality_bound(
    q: &dyn Fn(usize) -> f64,
    w1: &[u64],
    w2: &[u64],
    caps: (f64, f64),
    active: &[u32],
    mult: Mult,
    kstar: f64,
    core_size: usize,
    lagr: f64,
    mu: f64,
) -> Option<(f64, Mult, f64)> {
    let kd = kstar.floor();
    if !(kstar - kd > 1e-6 && kd + 1.0 - kstar > 1e-6) || active.len() < 4 {
        return None;
    }
    if !cardinality_below(w1, w2, caps, active, kd + 1.0, mu) {
        return None;
    }
    // The core: smallest |r| under the LP duals.
    let mut keyed: Vec<(f64, u32)> = active
        .iter()
        .map(|&j| {
            let ju = j as usize;
            (mult.reduced(q(ju), w1[ju], w2[ju]).abs(), j)
        })
        .collect();
    let size = core_size.clamp(4, keyed.len());
    if size < keyed.len() {
        keyed.select_nth_unstable_by(size, |x, y| x.0.total_cmp(&y.0));
    }
    // Normal equations of the fit in scaled columns (w1/s1, w2/s2, 1).
    let (s1, s2) = (caps.0.max(1.0) / kd.max(1.0), caps.1.max(1.0) / kd.max(1.0));
    let pscale = keyed[..size].iter().map(|&(_, j)| q(j as usize).abs()).fold(0.0, f64::max).max(1e-300);
    let mut ata = [[0.0f64; lp::MAX_ROWS]; lp::MAX_ROWS];
    let mut atb = [0.0f64; lp::MAX_ROWS];
    for &(_, j) in &keyed[..size] {
        let ju = j as usize;
        let row = [w1[ju] as f64 / s1, w2[ju] as f64 / s2, 1.0];
        let y = q(ju) / pscale;
        for r in 0..3 {
            for c in 0..3 {
                ata[c][r] += row[r] * row[c];
            }
            atb[r] += row[r] * y;
        }
    }
    let z = lp::solve_basis(3, &ata, atb)?;
    let fit =
        Mult { u1: (z[0] * pscale / s1).max(0.0), u2: (z[1] * pscale / s2).max(0.0), v: (z[2] * pscale).max(0.0) };
    let bound = lagrangian(q, w1, w2, caps, kd, active, fit);
    (bound.is_finite() && bound < lagr).then_some((bound, fit, kd))
}

/// Solves `max Σ p x` s.t. `Σ w1 x ≤ c1`, `Σ w2 x ≤ c2`, `x ∈ {0,1}ⁿ`.
pub(crate) fn solve(p: &[u64], w1: &[u64], w2: &[u64], c1: u64, c2: u64, limits: &Limits) -> KpResult {
    let n = p.len();
    // 1. Preprocessing.
    let mut forced = Vec::new();
    let mut forced_value = 0u128;
    let mut active: Vec<u32> = Vec::with_capacity(n);
    let (mut sum1, mut sum2, mut sump) = (0u128, 0u128, 0u128);
    for j in 0..n {
        if p[j] == 0 || w1[j] > c1 || w2[j] > c2 {
            continue;
        }
        if w1[j] == 0 && w2[j] == 0 {
            forced.push(j);
            forced_value += u128::from(p[j]);
            continue;
        }
        active.push(j as u32);
        sum1 += u128::from(w1[j]);
        sum2 += u128::from(w2[j]);
        sump += u128::from(p[j]);
    }
    let use1 = sum1 > u128::from(c1);
    let use2 = sum2 > u128::from(c2);
    let mut prep = Prep {
        p,
        w1,
        w2,
        c1,
        c2,
        forced,
        forced_value,
        lagr: 0.0,
        margin: 0.0,
        by_cost: Vec::new(),
        in_base: Vec::new(),
        base_p: 0,
        slack0: (0, 0),
        best: 0,
        best_set: Vec::new(),
        card_input: None,
        core_size: limits.tuning.lp_core,
    };
    if !use1 && !use2 {
        let value = active.iter().map(|&j| u128::from(p[j as usize])).sum::<u128>();
        return prep.finish(&active, value, value, 0, None);
    }

    // 2. Surrogate multipliers.
    let mu = if use1 && use2 {
        let pf: Vec<f64> = p.iter().map(|&x| x as f64).collect();
        let a: Vec<f64> = w1.iter().map(|&x| x as f64 / c1 as f64).collect();
        let b: Vec<f64> = w2.iter().map(|&x| x as f64 / c2 as f64).collect();
        lp_multiplier(&pf, &a, &b, &active)
    } else if use1 {
        1.0
    } else {
        0.0
    };
    let (alpha, beta) = integer_multipliers(mu, c1, c2, use1, use2);
    let sw = |j: usize| alpha * u128::from(w1[j]) + beta * u128::from(w2[j]);

    // 3. Lagrangian data: efficiency order, critical ratio, reduced costs.
    let mut keyed: Vec<(f64, u32)> = active
        .iter()
        .map(|&j| {
            let s = sw(j as usize) as f64;
            (if s > 0.0 { p[j as usize] as f64 / s } else { f64::INFINITY }, j)
        })
        .collect();
    keyed.sort_unstable_by(|x, y| y.0.total_cmp(&x.0));
    let cap_s = alpha * u128::from(c1) + beta * u128::from(c2);
    let mut lambda = 0.0;
    let mut acc = 0u128;
    for &(_, j) in &keyed {
        let s = sw(j as usize);
        if acc + s > cap_s {
            lambda = p[j as usize] as f64 / s as f64;
            break;
        }
        acc += s;
    }
    // 3b. The exact LP duals, from a core (the approximate multipliers
    // when the core LP fails or is no better).
    let approx = Mult { u1: lambda * alpha as f64, u2: lambda * beta as f64, v: 0.0 };
    let profit = |j: usize| p[j] as f64;
    let caps = (c1 as f64, c2 as f64);
    let mut mult = approx;
    let mut lagr = lagrangian(&profit, w1, w2, caps, 0.0, &active, approx);
    let mut lp_card = None;
    if let Some(out) = core_lp(&profit, w1, w2, caps, &active, approx, limits.tuning.lp_core) {
        let l = lagrangian(&profit, w1, w2, caps, 0.0, &active, out.mult);
        if l <= lagr {
            (mult, lagr) = (out.mult, l);
            lp_card = out.consistent.then_some(out.card);
        }
    }
    // 3c. The cardinality bound: every solution has at most ⌊k*⌋ or at
    // least ⌈k*⌉ items, where k* is the LP optimum's item count. When no
    // solution can hold ⌈k*⌉, the first branch's multipliers bound every
    // solution, and the search runs on their reduced costs.
    prep.card_input = lp_card.map(|k| (mult, k, mu));
    let margin = 1e-9 * lagr.abs() + 1.0;
    let mut by_cost: Vec<(u32, f64, bool)> = Vec::with_capacity(keyed.len());
    let (mut base_p, mut base_w1, mut base_w2) = (0u128, 0i128, 0i128);
    let mut in_base = vec![false; n];
    for &(_, j) in &keyed {
        let ju = j as usize;
        let r = mult.reduced(p[ju] as f64, w1[ju], w2[ju]);
        if r > 0.0 {
            in_base[ju] = true;
            base_p += u128::from(p[ju]);
            base_w1 += i128::from(w1[ju]);
            base_w2 += i128::from(w2[ju]);
        }
        by_cost.push((j, r.abs(), r > 0.0));
    }
    // Greedy incumbent in efficiency order.
    let (mut r1, mut r2) = (c1, c2);
    for &(_, j) in &keyed {
        let ju = j as usize;
        if w1[ju] <= r1 && w2[ju] <= r2 {
            r1 -= w1[ju];
            r2 -= w2[ju];
            prep.best_set.push(j);
            prep.best += u128::from(p[ju]);
        }
    }
    drop(keyed);
    by_cost.sort_unstable_by(|x, y| x.1.total_cmp(&y.1));
    // A second incumbent: X₀ repaired (drop the items that free the
    // violated resource at the least reduced cost per unit) and filled (add
    // the cheapest items that fit). Better than the greedy when many items
    // tie at the critical ratio and X₀ overfills one resource.
    {
        let (cap1, cap2) = (i128::from(c1), i128::from(c2));
        let mut x = in_base.clone();
        let (mut u1, mut u2) = (base_w1, base_w2);
        for dim in [0usize, 1] {
            let weight = |j: usize| if dim == 0 { w1[j] } else { w2[j] };
            let over = |u1: i128, u2: i128| if dim == 0 { u1 > cap1 } else { u2 > cap2 };
            if !over(u1, u2) {
                continue;
            }
            let mut drop_order: Vec<(f64, u32)> = by_cost
                .iter()
                .filter(|&&(j, _, _)| x[j as usize] && weight(j as usize) > 0)
                .map(|&(j, cost, _)| (cost / weight(j as usize) as f64, j))
                .collect();
            drop_order.sort_unstable_by(|a, b| a.0.total_cmp(&b.0));
            for &(_, j) in &drop_order {
                if !over(u1, u2) {
                    break;
                }
                let ju = j as usize;
                x[ju] = false;
                u1 -= i128::from(w1[ju]);
                u2 -= i128::from(w2[ju]);
            }
        }
        if u1 <= cap1 && u2 <= cap2 {
            for &(j, _, _) in &by_cost {
                let ju = j as usize;
                if !x[ju] && u1 + i128::from(w1[ju]) <= cap1 && u2 + i128::from(w2[ju]) <= cap2 {
                    x[ju] = true;
                    u1 += i128::from(w1[ju]);
                    u2 += i128::from(w2[ju]);
                }
            }
            let value: u128 = (0..n).filter(|&j| x[j]).map(|j| u128::from(p[j])).sum();
            if value > prep.best {
                prep.best = value;
                prep.best_set = (0..n as u32).filter(|&j| x[j as usize]).collect();
            }
        }
    }
    prep.lagr = lagr;
    prep.margin = margin;
    prep.by_cost = by_cost;
    prep.in_base = in_base;
    prep.base_p = base_p;
    prep.slack0 = (i128::from(c1) - base_w1, i128::from(c2) - base_w2);
    let upper = prep.bound_minus(0.0);
    if limits.within_gap(prep.best, upper) {
        let (set, best) = (std::mem::take(&mut prep.best_set), prep.best);
        return prep.finish(&set, best, upper, 0, None);
    }
    // Every partial sum of the search stays within ±(Σp + Σw1 + Σw2 + c1 + c2).
    let span = sump + sum1 + sum2 + u128::from(c1) + u128::from(c2);
    if span < (1u128 << 62) {
        search::<i64>(prep, limits)
    } else {
        search::<i128>(prep, limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn brute(p: &[u64], w1: &[u64], w2: &[u64], c1: u64, c2: u64) -> u128 {
        let n = p.len();
        let mut best = 0u128;
        for mask in 0u32..(1 << n) {
            let (mut v, mut a, mut b) = (0u128, 0u128, 0u128);
            for j in 0..n {
                if mask >> j & 1 == 1 {
                    v += u128::from(p[j]);
                    a += u128::from(w1[j]);
                    b += u128::from(w2[j]);
                }
            }
            if a <= u128::from(c1) && b <= u128::from(c2) {
                best = best.max(v);
            }
        }
        best
    }

    fn tunings() -> [Tuning; 3] {
        [
            Tuning::default(),
            // Forces the deepening rounds and their proofs.
            Tuning { full_enumeration: 0, initial_core: 1, ..Tuning::default() },
            // Forces the budget out: deepening gives up, the neighbourhood
            // search runs, and the bound must still hold.
            Tuning {
                half_cap: 6,
                lns_half: 2,
                full_enumeration: 0,
                initial_core: 1,
                lns_stale: 3,
                swap_pool: 4,
                lp_core: 2,
            },
        ]
    }

    fn check(p: &[u64], w1: &[u64], w2: &[u64], c1: u64, c2: u64, tuning: Tuning) -> Result<(), TestCaseError> {
        let offset = p.iter().map(|&x| u128::from(x)).sum();
        let limits = Limits {
            deadline: Instant::now() + Duration::from_secs(30),
            node_limit: u64::MAX,
            rel_gap: 0.0,
            offset,
            tuning,
        };
        let r = solve(p, w1, w2, c1, c2, &limits);
        let opt = brute(p, w1, w2, c1, c2);
        let (mut v, mut a, mut b) = (0u128, 0u128, 0u128);
        let mut seen = std::collections::HashSet::new();
        for &j in &r.chosen {
            prop_assert!(seen.insert(j), "chosen twice: {j}");
            v += u128::from(p[j]);
            a += u128::from(w1[j]);
            b += u128::from(w2[j]);
        }
        prop_assert!(a <= u128::from(c1) && b <= u128::from(c2), "infeasible");
        prop_assert_eq!(v, r.value);
        prop_assert!(r.value <= opt);
        prop_assert!(r.upper >= opt, "bound {} below the optimum {}", r.upper, opt);
        if r.status == SolveStatus::Optimal {
            prop_assert_eq!(r.value, opt);
            prop_assert_eq!(r.upper, opt);
        } else {
            prop_assert!(tuning.half_cap < 100, "not optimal with the default budget: {:?}", r.status);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn random_instances_match_brute_force(
            items in prop::collection::vec((0u64..1_000, 0u64..400, 0u64..400), 0..14),
            f1 in 0.0f64..1.0,
            f2 in 0.0f64..1.0,
            t in 0usize..3,
        ) {
            let p: Vec<u64> = items.iter().map(|x| x.0).collect();
            let w1: Vec<u64> = items.iter().map(|x| x.1).collect();
            let w2: Vec<u64> = items.iter().map(|x| x.2).collect();
            let c1 = (w1.iter().sum::<u64>() as f64 * f1) as u64;
            let c2 = (w2.iter().sum::<u64>() as f64 * f2) as u64;
            check(&p, &w1, &w2, c1, c2, tunings()[t])?;
        }

        #[test]
        fn strongly_correlated_instances_match_brute_force(
            items in prop::collection::vec((1u64..1_000, 1u64..1_000), 1..15),
            f in 0.2f64..0.8,
            t in 0usize..3,
        ) {
            let w1: Vec<u64> = items.iter().map(|x| x.0).collect();
            let w2: Vec<u64> = items.iter().map(|x| x.1).collect();
            let p: Vec<u64> = items.iter().map(|x| x.0 + 3 * x.1 + 100).collect();
            let c1 = (w1.iter().sum::<u64>() as f64 * f) as u64;
            let c2 = (w2.iter().sum::<u64>() as f64 * f) as u64;
            check(&p, &w1, &w2, c1, c2, tunings()[t])?;
        }

        #[test]
        fn affine_profits_match_brute_force(
            items in prop::collection::vec((1u64..2_000, 1u64..2_000), 1..15),
            f1 in 0.2f64..0.8,
            f2 in 0.2f64..0.8,
            k in 0u64..5_000,
            t in 0usize..3,
        ) {
            // The generator's strongly correlated form: profit affine in
            // both weights, with a per-item constant (the cardinality bound's case).
            let w1: Vec<u64> = items.iter().map(|x| x.0).collect();
            let w2: Vec<u64> = items.iter().map(|x| x.1).collect();
            let p: Vec<u64> = items.iter().map(|x| 7 * x.0 + 2 * x.1 + k).collect();
            let c1 = (w1.iter().sum::<u64>() as f64 * f1) as u64;
            let c2 = (w2.iter().sum::<u64>() as f64 * f2) as u64;
            check(&p, &w1, &w2, c1, c2, tunings()[t])?;
        }

        #[test]
        fn lp_and_cardinality_bounds_hold(
            items in prop::collection::vec((1u64..2_000, 1u64..2_000, 0u64..50), 2..15),
            f1 in 0.2f64..0.8,
            f2 in 0.2f64..0.8,
            k in 0u64..5_000,
        ) {
            let w1: Vec<u64> = items.iter().map(|x| x.0).collect();
            let w2: Vec<u64> = items.iter().map(|x| x.1).collect();
            let p: Vec<u64> = items.iter().map(|x| 7 * x.0 + 2 * x.1 + k + x.2).collect();
            let c1 = (w1.iter().sum::<u64>() as f64 * f1) as u64;
            let c2 = (w2.iter().sum::<u64>() as f64 * f2) as u64;
            let opt = brute(&p, &w1, &w2, c1, c2) as f64;
            let active: Vec<u32> = (0..p.len() as u32).filter(|&j| w1[j as usize] <= c1 && w2[j as usize] <= c2).collect();
            let profit = |j: usize| p[j] as f64;
            let caps = (c1 as f64, c2 as f64);
            let start = Mult { u1: 1.0, u2: 1.0, v: 0.0 };
            // Every multiplier gives a bound; the core LP's are the LP duals.
            prop_assert!(lagrangian(&profit, &w1, &w2, caps, 0.0, &active, start) + 1e-6 >= opt);
            if let Some(out) = core_lp(&profit, &w1, &w2, caps, &active, start, 2) {
                let lp = lagrangian(&profit, &w1, &w2, caps, 0.0, &active, out.mult);
                prop_assert!(lp + 1e-6 * lp.abs().max(1.0) >= opt, "LP bound {lp} below {opt}");
                if out.consistent {
                    if let Some((bound, m, kd)) =
                        cardinality_bound(&profit, &w1, &w2, caps, &active, out.mult, out.card, 2, f64::INFINITY, 0.5)
                    {
                        prop_assert!(m.v >= 0.0 && m.u1 >= 0.0 && m.u2 >= 0.0);
                        prop_assert!(bound + 1e-6 * bound.abs().max(1.0) >= opt, "card bound {bound} below {opt} (k {kd})");
                    }
                }
            }
        }
    }
}
