//! Aggregation and disaggregation planning for ReSC, as 0-1 integer
//! programs (the paper's §5.3.2–§5.3.3).
//!
//! Communicating components that run apart pay for every byte they exchange
//! over the network. Aggregating a group (running it in one sandbox on the
//! balanced pool) saves that traffic but takes balanced-pool capacity;
//! disaggregating it frees the capacity again and puts the traffic back on
//! the network. This crate decides both, exactly and fast. It is a policy
//! crate: it depends on `resc-core` only and does no I/O (the optional
//! `python` feature adds the one exception, `bench::PythonBaselines`,
//! which runs the Python baseline solvers for `resc bench ilp`; the
//! optional `cbc` feature links CBC for side constraints).
//!
//! # The data
//!
//! A [`Candidate`] is a group of components of one application (its
//! [`ComponentKey`]s), with the paper's per-component usage vectors `C`
//! (CPU, millicores) and `M` (memory including swap, bytes) and its
//! component-to-component communication matrix `B` ([`CommMatrix`]:
//! directed, sparse, bytes; `B[a][b]` is what `a` sends to `b`). Derived:
//!
//! * the saving `s = Σ_{a≠b} B[a][b]`: the intra-group traffic, which stops
//!   crossing the network when the group is aggregated;
//! * the demand `c = Σ C`, `m = Σ M`.
//!
//! # Aggregation
//!
//! [`AggregationProblem`]: candidates `j = 1..n`, the balanced pool's free
//! capacity `(C, M)`, optional [`SideConstraint`]s.
//!
//! ```text
//! variables   x_j ∈ {0, 1}                 1 = aggregate candidate j
//! minimize    Σ_j s_j (1 − x_j)            communication left over
//!             (⇔ maximize Σ_j s_j x_j, the communication saved)
//! subject to  Σ_j c_j x_j ≤ C              balanced-pool CPU
//!             Σ_j m_j x_j ≤ M              balanced-pool memory
//!             Σ_{j ∋ q} x_j ≤ 1            for every component q (of one
//!                                          application) in two or more
//!                                          candidates: no overlap
//!             Σ_j a_ij x_j ≤ b_i           side constraints (a ≥ 0)
//! ```
//!
//! Candidates of different applications never overlap. When no two
//! candidates overlap and there are no side constraints (the usual case: one
//! candidate per application) this is a two-dimensional 0-1 knapsack, and
//! [`AggregationProblem::solve`] uses a dedicated exact solver
//! ([`SolveMethod::Knapsack2`]):
//!
//! 1. the LP relaxation's exact duals `u`: bisection on the weight of the
//!    two constraints in a surrogate constraint (each step a linear-time
//!    fractional knapsack, mostly on a window of items around the critical
//!    one) gives approximate multipliers; a small bounded-variable simplex
//!    on a core of the items with the smallest reduced costs, the others
//!    fixed and checked against the core's duals (the core grows until
//!    they agree), turns them into the LP optimum. This gives reduced
//!    costs `r_j = s_j − u·(c_j, m_j)`, the bound `L` (the LP bound) and
//!    the LP rounding `X₀ = {j : r_j > 0}`;
//! 2. every plan `X` then has `saved(X) = L − Σ_{j ∈ X △ X₀} |r_j| − u·slack(X)`,
//!    so a plan better than `L − T` differs from `X₀` only by a set of items
//!    whose `|r|` sum is below `T`;
//! 3. for growing `T`, those deviation sets are enumerated by
//!    meet-in-the-middle (each half's sets, then the best feasible pair by a
//!    2-D dominance sweep with a Fenwick tree): a complete round at `T`
//!    proves that no unseen plan beats `L − T`, so optimality is proven as
//!    soon as the incumbent does;
//! 4. when the next round would outgrow its budget (strongly correlated
//!    instances, where nearly every item is nearly critical), exact
//!    large-neighbourhood steps around the incumbent improve it: the best
//!    1-for-1 swap over all items (one dominance sweep of removals against
//!    additions), swaps of up to 2 + 2 cheap items, and every subset of
//!    random cores of 24;
//! 5. a plan left unproven gets the **cardinality bound** when it is
//!    tighter: if the LP optimum holds a fractional number `k*` of
//!    candidates and no plan can hold `⌈k*⌉` (a surrogate LP bound on the
//!    count proves it), every plan holds at most `k = ⌊k*⌋`, and the
//!    Lagrangian bound `u·(C, M) + v·k + Σ max(0, s_j − u·(c_j, m_j) − v)`
//!    holds for any `u, v ≥ 0`. The multipliers are the least-squares fit
//!    `s_j ≈ u·(c_j, m_j) + v` over the near-critical candidates, exact when
//!    the savings are an affine function of the demand (the strongly
//!    correlated case, where the LP's fractional count is what separates
//!    it from the integer optimum: the gap proven drops from about 1e-6 to
//!    about 1e-8 there). The gap reported is what was proven
//!    ([`SolveStatus::SearchLimit`] when the search gave up first).
//!
//! Otherwise a general branch and bound runs ([`SolveMethod::BranchAndBound`]):
//! Lagrangian bounds from subgradient optimization, tightened per connected
//! group of overlapping candidates by the best independent set,
//! reduced-cost fixing, and conflict propagation when branching.
//!
//! With the `cbc` feature, problems with side constraints take the MILP
//! path ([`SolveMethod::Milp`]): the branch and bound runs for a quarter of
//! the time limit, and when it has not settled the problem, CBC (COIN-OR,
//! through `good_lp`; the system library is Debian's `coinor-libcbc-dev`)
//! solves the whole model for the rest of the time, started from our
//! incumbent. Its answer is checked in exact integer arithmetic and kept
//! only when feasible and better; the bound is the better of the two
//! solvers', so the reported gap stays a proof. Which method runs:
//!
//! | problem | method |
//! |---|---|
//! | disjoint candidates, no side constraints | [`SolveMethod::Knapsack2`] (or [`SolveMethod::Trivial`]) |
//! | overlapping candidates, no side constraints | [`SolveMethod::BranchAndBound`] |
//! | side constraints, `cbc` off | [`SolveMethod::BranchAndBound`] |
//! | side constraints, `cbc` on | [`SolveMethod::BranchAndBound`] if it settles the problem in a quarter of the time limit, else [`SolveMethod::Milp`] |
//! | disaggregation | [`SolveMethod::BranchAndBound`] |
//!
//! # Disaggregation
//!
//! [`DisaggregationProblem`]: groups `g` now running aggregated; splitting
//! one puts its saving `s_g` back on the network, frees `(c_g, m_g)` on the
//! balanced pool, and moves its compute components to the compute pool
//! (demand `(cc_g, cm_g)`) and its memory components to the memory pool
//! (demand `(mc_g, mm_g)`). The pools' free capacities are hard; freeing
//! the required `(R_c, R_m)` is soft, with penalties `π_c`, `π_m` (bytes of
//! communication per millicore, per byte short).
//!
//! ```text
//! variables   y_g ∈ {0, 1}                 1 = split group g
//!             σ_c, σ_m ≥ 0                 shortfall of freed CPU, memory
//! minimize    Σ_g s_g y_g + π_c σ_c + π_m σ_m
//! subject to  Σ_g cc_g y_g ≤ compute pool free CPU
//!             Σ_g cm_g y_g ≤ compute pool free memory
//!             Σ_g mc_g y_g ≤ memory pool free CPU
//!             Σ_g mm_g y_g ≤ memory pool free memory
//!             σ_c ≥ R_c − Σ_g c_g y_g      (soft: penalized)
//!             σ_m ≥ R_m − Σ_g m_g y_g
//! ```
//!
//! # Solving
//!
//! Every solve takes [`SolveOptions`] (time limit, relative gap, node
//! budget; every method honours the time limit and returns the best plan
//! found with its proven gap) and returns a [`Solution`]: the chosen indices, the objective
//! (minimization form), a proven lower bound, the gap between them, the
//! status and the work done. Choosing nothing is always feasible, so there
//! is no "infeasible" error; malformed input is an [`IlpError`] naming the
//! candidate and field.
//!
//! ```
//! use resc_core::ids::{AppId, ComputeId, MemoryId};
//! use resc_ilp::{AggregationProblem, Candidate, Capacity, CommMatrix, ComponentKey, SolveOptions};
//!
//! // Two applications, each a compute component that reads a memory component.
//! let group = |app: u64, bytes: u64, cpu: u64, mem: u64| Candidate {
//!     app: AppId(app),
//!     components: vec![ComponentKey::Compute(ComputeId(0)), ComponentKey::Memory(MemoryId(0))],
//!     cpu: vec![cpu, 0],
//!     memory: vec![mem / 2, mem / 2],
//!     communication: CommMatrix::from_dense(2, &[0, bytes, bytes / 2, 0]).expect("2 x 2"),
//! };
//! let problem = AggregationProblem::new(
//!     vec![group(1, 1 << 30, 1000, 1 << 30), group(2, 1 << 20, 500, 1 << 29)],
//!     Capacity::new(1500, 1 << 30),
//! );
//! let plan = problem.solve(&SolveOptions::default())?;
//! assert_eq!(plan.chosen, vec![0]); // both do not fit in memory: keep the chattier one
//! assert!(plan.optimal);
//! assert_eq!(plan.objective, ((1u64 << 20) + (1 << 19)) as f64); // app 2's traffic is left over
//! # Ok::<(), resc_ilp::IlpError>(())
//! ```
//!
//! # Instances and measurements
//!
//! [`generate`] makes seeded instances: aggregation problems with random or
//! strongly correlated savings (disjoint candidates), with overlapping
//! candidates, and disaggregation problems. [`bench`](mod@crate::bench) measures this solver
//! and the Python baselines (python-mip with CBC, OR-Tools CP-SAT, HiGHS)
//! on the same instances for `resc bench ilp --json`.
#![forbid(unsafe_code)]

mod bnb;
mod error;
mod knapsack;
mod lp;
#[cfg(feature = "cbc")]
mod milp;
mod model;
mod solve;

pub mod bench;
pub mod generate;

pub use error::IlpError;
pub use model::{
    AggregationEval, AggregationProblem, Candidate, Capacity, CommMatrix, ComponentKey, DisaggregationEval,
    DisaggregationProblem, Penalty, SideConstraint, Solution, SolveMethod, SolveOptions, SolveStatus, Traffic,
};
