//! The planning problems' data: candidates, capacities, problems, options and
//! solutions.

use crate::error::{candidate_error, IlpError};
use resc_core::graph::{ComponentKind, ComponentRef};
use resc_core::ids::{AppId, ComputeId, MemoryId};
use resc_core::resources::Resources;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A component of an application, as the planning problems name it.
///
/// Components are named per application ([`Candidate::app`]): two candidates
/// *overlap* when they belong to the same application and share a component
/// key. Candidates of different applications never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKey {
    /// A compute component (a code piece).
    Compute(ComputeId),
    /// A memory component (a data object).
    Memory(MemoryId),
}

impl ComponentKey {
    /// Whether this is a compute or a memory component.
    pub fn kind(&self) -> ComponentKind {
        match self {
            ComponentKey::Compute(_) => ComponentKind::Compute,
            ComponentKey::Memory(_) => ComponentKind::Memory,
        }
    }

    /// A dense code: compute `i` is `2i`, memory `i` is `2i + 1`.
    pub(crate) fn code(&self) -> u64 {
        match self {
            ComponentKey::Compute(c) => u64::from(c.0) << 1,
            ComponentKey::Memory(m) => (u64::from(m.0) << 1) | 1,
        }
    }
}

impl From<ComponentRef> for ComponentKey {
    fn from(r: ComponentRef) -> Self {
        match r {
            ComponentRef::Compute(c) => ComponentKey::Compute(c),
            ComponentRef::Memory(m) => ComponentKey::Memory(m),
        }
    }
}

impl From<ComponentKey> for ComponentRef {
    fn from(k: ComponentKey) -> Self {
        match k {
            ComponentKey::Compute(c) => ComponentRef::Compute(c),
            ComponentKey::Memory(m) => ComponentRef::Memory(m),
        }
    }
}

/// One entry of a communication matrix: `bytes` sent by component `from` to
/// component `to`, both positions in the candidate's component list.
///
/// Serialized as the array `[from, to, bytes]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "(u32, u32, u64)", into = "(u32, u32, u64)")]
pub struct Traffic {
    /// Position of the sender in [`Candidate::components`].
    pub from: u32,
    /// Position of the receiver in [`Candidate::components`].
    pub to: u32,
    /// Bytes sent (an average per invocation, as the monitor's EMA reports it).
    pub bytes: u64,
}

impl From<(u32, u32, u64)> for Traffic {
    fn from((from, to, bytes): (u32, u32, u64)) -> Self {
        Traffic { from, to, bytes }
    }
}

impl From<Traffic> for (u32, u32, u64) {
    fn from(t: Traffic) -> Self {
        (t.from, t.to, t.bytes)
    }
}

/// A component-to-component communication matrix, **directed** and stored
/// sparsely in coordinate form.
///
/// Entry `(i, j)` is the bytes component `i` sends to component `j` (both
/// positions in the candidate's component list). Repeated entries add up.
/// The matrix is directed because that is what a monitor measures per peer;
/// a symmetric (undirected) measurement is entered once per pair, in either
/// direction: only the sum of all entries matters to the planning problems.
/// The diagonal must be empty (a component's traffic with itself never
/// crosses the network); validation rejects it.
///
/// Serialized as an array of `[from, to, bytes]` triples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommMatrix {
    /// The non-zero entries, in any order.
    pub entries: Vec<Traffic>,
}

impl CommMatrix {
    /// An empty matrix: no communication.
    pub fn new() -> Self {
        CommMatrix::default()
    }

    /// A matrix of the given entries.
    pub fn from_entries(entries: Vec<Traffic>) -> Self {
        CommMatrix { entries }
    }

    /// The sparse form of a dense `k × k` row-major matrix (`dense[i * k + j]`
    /// = bytes from `i` to `j`). Zero entries are dropped; diagonal entries
    /// are kept, so that validation reports them.
    ///
    /// # Errors
    /// [`IlpError::InvalidProblem`] when `dense.len() != k * k` or `k`
    /// exceeds `u32::MAX`.
    pub fn from_dense(k: usize, dense: &[u64]) -> Result<Self, IlpError> {
        if k.checked_mul(k) != Some(dense.len()) || u32::try_from(k).is_err() {
            return Err(IlpError::InvalidProblem {
                field: "communication",
                reason: format!("a dense {k} x {k} matrix needs {} entries, got {}", k.saturating_mul(k), dense.len()),
            });
        }
        let mut entries = Vec::new();
        for (idx, &bytes) in dense.iter().enumerate() {
            if bytes != 0 {
                // Both fit in u32: checked above.
                entries.push(Traffic { from: (idx / k) as u32, to: (idx % k) as u32, bytes });
            }
        }
        Ok(CommMatrix { entries })
    }

    /// Adds `bytes` from `from` to `to`.
    pub fn push(&mut self, from: u32, to: u32, bytes: u64) {
        self.entries.push(Traffic { from, to, bytes });
    }

    /// The dense `k × k` row-major form; entries outside `k` are ignored.
    pub fn to_dense(&self, k: usize) -> Vec<u64> {
        let mut dense = vec![0u64; k.saturating_mul(k)];
        for t in &self.entries {
            let (i, j) = (t.from as usize, t.to as usize);
            if i < k && j < k {
                dense[i * k + j] = dense[i * k + j].saturating_add(t.bytes);
            }
        }
        dense
    }

    /// The sum of all off-diagonal entries, saturating at `u64::MAX`.
    pub fn total(&self) -> u64 {
        self.entries.iter().filter(|t| t.from != t.to).fold(0u64, |acc, t| acc.saturating_add(t.bytes))
    }
}

/// An amount of CPU and memory (a pool's free capacity, a demand).
///
/// Unlike [`Resources`], CPU is a `u64`: a pool's capacity can exceed
/// `u32::MAX` millicores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in thousandths of a core.
    pub millicores: u64,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

impl Capacity {
    /// `millicores` of CPU and `memory_bytes` of memory.
    pub const fn new(millicores: u64, memory_bytes: u64) -> Self {
        Capacity { millicores, memory_bytes }
    }
}

impl From<Resources> for Capacity {
    fn from(r: Resources) -> Self {
        Capacity { millicores: u64::from(r.millicores), memory_bytes: r.memory_bytes }
    }
}

/// A group of components of one application that could run aggregated (one
/// sandbox on the balanced pool), or that runs aggregated and could be split.
///
/// The vectors are the paper's per-component usage vectors (the monitor's
/// EMAs): `cpu[i]` and `memory[i]` belong to `components[i]`. The derived
/// figures are [`saving`](Self::saving) (intra-group traffic: what
/// aggregating saves, and what splitting costs), [`total_cpu`](Self::total_cpu)
/// and [`total_memory`](Self::total_memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// The application the components belong to.
    pub app: AppId,
    /// The components, each at most once.
    pub components: Vec<ComponentKey>,
    /// CPU per component, millicores.
    pub cpu: Vec<u64>,
    /// Memory per component (including swap), bytes.
    pub memory: Vec<u64>,
    /// Traffic between the components (positions in `components`).
    pub communication: CommMatrix,
}

impl Candidate {
    /// A candidate of `app` with the given components, all usage zero and no
    /// communication.
    pub fn new(app: AppId, components: Vec<ComponentKey>) -> Self {
        let k = components.len();
        Candidate { app, components, cpu: vec![0; k], memory: vec![0; k], communication: CommMatrix::new() }
    }

    /// The communication saved if the group is aggregated: all traffic
    /// between distinct members, in bytes (saturating).
    pub fn saving(&self) -> u64 {
        self.communication.total()
    }

    /// The group's CPU, millicores (saturating).
    pub fn total_cpu(&self) -> u64 {
        self.cpu.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// The group's memory, bytes (saturating).
    pub fn total_memory(&self) -> u64 {
        self.memory.iter().fold(0u64, |a, &m| a.saturating_add(m))
    }

    /// The group's CPU and memory.
    pub fn demand(&self) -> Capacity {
        Capacity::new(self.total_cpu(), self.total_memory())
    }

    /// The CPU and memory of the group's compute components, then of its
    /// memory components: what splitting it asks of the compute pool and of
    /// the memory pool.
    pub fn demand_by_kind(&self) -> (Capacity, Capacity) {
        let (mut compute, mut memory) = (Capacity::default(), Capacity::default());
        for (i, key) in self.components.iter().enumerate() {
            let target = match key.kind() {
                ComponentKind::Compute => &mut compute,
                ComponentKind::Memory => &mut memory,
            };
            target.millicores = target.millicores.saturating_add(self.cpu.get(i).copied().unwrap_or(0));
            target.memory_bytes = target.memory_bytes.saturating_add(self.memory.get(i).copied().unwrap_or(0));
        }
        (compute, memory)
    }

    /// Checks the candidate as the `index`-th of a problem.
    ///
    /// # Errors
    /// [`IlpError::InvalidCandidate`] naming `index` and the field: vectors
    /// whose lengths differ from `components`, a component listed twice, a
    /// matrix entry out of range or on the diagonal, or a total that
    /// overflows `u64`.
    pub fn validate(&self, index: usize) -> Result<(), IlpError> {
        let mut scratch = Vec::new();
        check_candidate(self, index, &mut scratch).map(|_| ())
    }
}

/// Derived figures of one validated candidate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Derived {
    pub(crate) saving: u64,
    pub(crate) cpu: u64,
    pub(crate) memory: u64,
}

fn sum_checked(values: &[u64], index: usize, field: &'static str) -> Result<u64, IlpError> {
    // Wide sum, one check at the end: no branch per element.
    let total: u128 = values.iter().map(|&v| u128::from(v)).sum();
    u64::try_from(total).map_err(|_| candidate_error(index, field, "the total overflows u64"))
}

/// The first malformed matrix entry, for the error message.
fn traffic_error(c: &Candidate, index: usize) -> IlpError {
    let k = c.components.len();
    for (e, t) in c.communication.entries.iter().enumerate() {
        if t.from as usize >= k || t.to as usize >= k {
            return candidate_error(
                index,
                "communication",
                format!("entry {e} ({} -> {}) is out of range for {k} components", t.from, t.to),
            );
        }
        if t.from == t.to {
            return candidate_error(
                index,
                "communication",
                format!(
                    "entry {e} is on the diagonal (component {}): traffic with itself is not communication",
                    t.from
                ),
            );
        }
    }
    candidate_error(index, "communication", "the total traffic overflows u64")
}

/// Validates one candidate and derives its saving and totals: the
/// "building from the communication matrices" step. The checks are
/// branch-light; a failure is re-examined to name the offending entry.
pub(crate) fn check_candidate(c: &Candidate, index: usize, scratch: &mut Vec<u64>) -> Result<Derived, IlpError> {
    let k = c.components.len();
    if c.cpu.len() != k {
        return Err(candidate_error(index, "cpu", format!("{} entries for {k} components", c.cpu.len())));
    }
    if c.memory.len() != k {
        return Err(candidate_error(index, "memory", format!("{} entries for {k} components", c.memory.len())));
    }
    // Duplicate components: a bitset in a register when every code is
    // below 128 (the usual case: popcount short of k means a repeat), else
    // a sort.
    let (mut bits, mut any) = (0u128, 0u64);
    for key in &c.components {
        let code = key.code();
        any |= code;
        bits |= 1u128 << (code & 127);
    }
    if any >= 128 || bits.count_ones() as usize != k {
        scratch.clear();
        scratch.extend(c.components.iter().map(ComponentKey::code));
        scratch.sort_unstable();
        if let Some(w) = scratch.windows(2).find(|w| w[0] == w[1]) {
            let key = c.components.iter().find(|key| key.code() == w[0]).copied();
            return Err(candidate_error(index, "components", format!("{key:?} is listed twice")));
        }
    }
    let cpu = sum_checked(&c.cpu, index, "cpu")?;
    let memory = sum_checked(&c.memory, index, "memory")?;
    let k32 = u32::try_from(k).unwrap_or(u32::MAX);
    let mut bad = false;
    let mut saving = 0u128;
    for t in &c.communication.entries {
        bad |= (t.from >= k32) | (t.to >= k32) | (t.from == t.to);
        saving += u128::from(t.bytes);
    }
    match (bad, u64::try_from(saving)) {
        (false, Ok(saving)) => Ok(Derived { saving, cpu, memory }),
        _ => Err(traffic_error(c, index)),
    }
}

/// An extra linear constraint of an aggregation problem:
/// `Σ coefficient · x[candidate] ≤ limit`, all coefficients non-negative.
///
/// Examples: "aggregate at most 10 groups" (every coefficient 1, limit 10),
/// or the capacity of one rack of the balanced pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideConstraint {
    /// A name for error messages.
    pub name: String,
    /// `(candidate index, coefficient)` pairs; repeated candidates add up.
    pub coefficients: Vec<(usize, u64)>,
    /// The right-hand side.
    pub limit: u64,
}

/// Which candidate groups to aggregate on the balanced pool (§5.3.2).
///
/// See the [crate docs](crate#aggregation) for the formulation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationProblem {
    /// The candidate groups. They may overlap (share components of one
    /// application); at most one of overlapping candidates is chosen.
    pub candidates: Vec<Candidate>,
    /// The balanced pool's free CPU and memory.
    pub balanced_capacity: Capacity,
    /// Extra constraints (none in the paper's formulation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub side_constraints: Vec<SideConstraint>,
}

/// What splitting groups is worth: the penalty per unit of balanced capacity
/// that the plan fails to free, in bytes of communication.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Penalty {
    /// Bytes of communication one millicore of CPU shortfall costs.
    pub per_millicore: f64,
    /// Bytes of communication one byte of memory shortfall costs.
    pub per_byte: f64,
}

/// Which aggregated groups to split when the balanced pool runs hot
/// (§5.3.3).
///
/// See the [crate docs](crate#disaggregation) for the formulation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DisaggregationProblem {
    /// The groups now running aggregated. Splitting one moves its compute
    /// components to the compute pool and its memory components to the
    /// memory pool.
    pub groups: Vec<Candidate>,
    /// The compute pool's free CPU and memory (hard).
    pub compute_pool_free: Capacity,
    /// The memory pool's free CPU and memory (hard).
    pub memory_pool_free: Capacity,
    /// The balanced-pool capacity to free (soft).
    pub required_free: Capacity,
    /// The price of freeing less than `required_free`.
    pub penalty: Penalty,
}

/// How long to search and when to stop.
///
/// The solver reads the monotonic clock ([`std::time::Instant`]) to enforce
/// the time limit, and nothing else of the outside world; for runs that
/// must be reproducible bit for bit, bound the work with `node_limit` and
/// give a generous time limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SolveOptions {
    /// Wall-clock budget of one solve (building included). When it runs out
    /// the solver returns the best solution found and its proven gap.
    pub time_limit: Duration,
    /// Stop once the proven relative gap is at most this (0: prove
    /// optimality).
    pub rel_gap: f64,
    /// Budget of branch-and-bound nodes (deterministic, unlike the time
    /// limit).
    pub node_limit: u64,
}

impl Default for SolveOptions {
    /// One second, optimality, no node budget.
    fn default() -> Self {
        SolveOptions { time_limit: Duration::from_secs(1), rel_gap: 0.0, node_limit: u64::MAX }
    }
}

impl SolveOptions {
    /// These options with another time limit.
    pub fn with_time_limit(mut self, time_limit: Duration) -> Self {
        self.time_limit = time_limit;
        self
    }

    /// These options with another relative gap.
    pub fn with_rel_gap(mut self, rel_gap: f64) -> Self {
        self.rel_gap = rel_gap;
        self
    }

    /// These options with another node budget.
    pub fn with_node_limit(mut self, node_limit: u64) -> Self {
        self.node_limit = node_limit;
        self
    }

    pub(crate) fn check(&self) -> Result<(), IlpError> {
        if !(self.rel_gap.is_finite() && self.rel_gap >= 0.0) {
            return Err(IlpError::InvalidOption {
                option: "rel_gap",
                reason: format!("must be finite and non-negative, got {}", self.rel_gap),
            });
        }
        Ok(())
    }
}

/// Why the solver stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SolveStatus {
    /// The solution is proven optimal.
    Optimal,
    /// The proven gap is within [`SolveOptions::rel_gap`].
    GapReached,
    /// The time limit ran out.
    TimeLimit,
    /// The node budget ran out.
    NodeLimit,
    /// The solver's own search budget ran out before the time and node
    /// limits did (a strongly correlated knapsack can need an enumeration
    /// too large to finish): the solution is the best found and `gap` is
    /// what was proven.
    SearchLimit,
}

/// Which algorithm solved the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SolveMethod {
    /// The two-constraint knapsack solver (disjoint candidates, no side
    /// constraints): surrogate LP dual, deepening meet-in-the-middle over
    /// reduced-cost deviations, large-neighbourhood search.
    Knapsack2,
    /// The general branch and bound (overlapping candidates, side
    /// constraints, disaggregation): Lagrangian bounds tightened per
    /// conflict group, reduced-cost fixing, conflict propagation.
    BranchAndBound,
    /// Nothing to decide: every candidate was fixed by preprocessing.
    Trivial,
    /// Aggregation with side constraints, feature `cbc`: the general branch
    /// and bound first, then CBC (through `good_lp`) from its incumbent
    /// when the branch and bound did not settle the problem in a quarter of
    /// the time limit. The solution is checked exactly and the bound is the
    /// better of the two solvers'.
    Milp,
}

/// The result of a solve.
///
/// `objective` and `bound` are in the problem's minimization form: for
/// aggregation, the communication left over (bytes of traffic of the
/// candidates not aggregated); for disaggregation, the communication
/// increase plus the shortfall penalty. Lower is better, and
/// `bound ≤ optimum ≤ objective`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Solution {
    /// The chosen candidates (aggregated, or split), ascending indices into
    /// the problem's list.
    pub chosen: Vec<usize>,
    /// The chosen plan's objective value.
    pub objective: f64,
    /// A proven lower bound on the optimum.
    pub bound: f64,
    /// `(objective − bound) / max(|objective|, 1)`.
    pub gap: f64,
    /// Whether `objective` is proven optimal.
    pub optimal: bool,
    /// Why the solver stopped.
    pub status: SolveStatus,
    /// Which algorithm ran.
    pub method: SolveMethod,
    /// Branch-and-bound nodes explored.
    pub nodes: u64,
    /// Wall-clock time of the solve, building included.
    pub elapsed: Duration,
}

/// Relative gap as [`Solution::gap`] defines it.
pub(crate) fn rel_gap(objective: f64, bound: f64) -> f64 {
    ((objective - bound) / objective.abs().max(1.0)).max(0.0)
}

/// The figures of one aggregation plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregationEval {
    /// Traffic that stops crossing the network, bytes.
    pub saved: u64,
    /// Traffic of the candidates not chosen: the objective.
    pub leftover: u64,
    /// Balanced-pool CPU and memory the plan uses.
    pub used: Capacity,
    /// Whether every hard constraint holds (capacity, no overlap, side
    /// constraints).
    pub feasible: bool,
}

/// The figures of one disaggregation plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DisaggregationEval {
    /// Traffic that starts crossing the network, bytes.
    pub comm_increase: u64,
    /// Balanced-pool capacity freed.
    pub freed: Capacity,
    /// How much of `required_free` is not freed.
    pub shortfall: Capacity,
    /// What the plan asks of the compute pool.
    pub compute_pool_used: Capacity,
    /// What the plan asks of the memory pool.
    pub memory_pool_used: Capacity,
    /// `comm_increase` plus the shortfall penalty: the objective.
    pub cost: f64,
    /// Whether both pools' capacities hold.
    pub feasible: bool,
}

pub(crate) fn check_choice(chosen: &[usize], n: usize) -> Result<Vec<bool>, IlpError> {
    let mut mark = vec![false; n];
    for &j in chosen {
        match mark.get_mut(j) {
            None => {
                return Err(IlpError::InvalidChoice { index: j, reason: format!("the problem has {n} candidates") })
            }
            Some(true) => return Err(IlpError::InvalidChoice { index: j, reason: "chosen twice".into() }),
            Some(m) => *m = true,
        }
    }
    Ok(mark)
}
