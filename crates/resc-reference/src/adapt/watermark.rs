//! The watermark controller (paper §5.3.2–§5.3.3): which applications run
//! aggregated on the balanced pool.
//!
//! Aggregating an application's components into one sandbox saves the
//! traffic between them but takes balanced-pool capacity. The controller
//! watches the pool's utilization, `max(CPU used ÷ CPU, memory used ÷
//! memory)`:
//!
//! - **Above the high watermark** (70 % by default) it disaggregates: the
//!   [`DisaggregationProblem`] picks the aggregated groups whose split costs
//!   the least communication while freeing what brings the pool back to the
//!   watermark (the shortfall priced above any communication, so freeing
//!   comes first) — lowest-communication groups go first.
//! - **Otherwise** it aggregates: the [`AggregationProblem`] picks, among
//!   the disaggregated groups, those that save the most communication within
//!   the capacity left below the *aggregation ceiling* (60 % by default).
//!   The gap between the ceiling and the watermark keeps a group from being
//!   split and merged again at every step while the load hovers.
//!
//! It is sans-IO: callers describe the pools and the applications, and get
//! the moves with their reasons, also traced.

use resc_ilp::{AggregationProblem, Candidate, Capacity, DisaggregationProblem, Penalty, SolveOptions};
use serde::Serialize;
use std::time::Duration;

/// Bytes in a MiB.
const MIB: u64 = 1 << 20;

/// When the controller moves applications.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WatermarkConfig {
    /// Utilization above which aggregated groups are split.
    pub high: f64,
    /// Aggregation fills the pool up to this utilization, no further.
    pub aggregate_below: f64,
    /// The solvers' limits.
    #[serde(skip)]
    pub solve: SolveOptions,
}

impl Default for WatermarkConfig {
    /// High watermark 70 %, aggregation up to 60 %, 50 ms per solve.
    fn default() -> Self {
        WatermarkConfig {
            high: 0.7,
            aggregate_below: 0.6,
            solve: SolveOptions::default().with_time_limit(Duration::from_millis(50)),
        }
    }
}

/// An application the controller may move: its group of components with
/// their usage and traffic (the monitor's averages, scaled to the load the
/// application puts on the pool), and where it runs now.
#[derive(Debug, Clone)]
pub struct Group {
    /// The application's name.
    pub app: String,
    /// Its components, their CPU and memory while aggregated, and the
    /// traffic between them.
    pub candidate: Candidate,
    /// Whether it runs aggregated now.
    pub aggregated: bool,
}

/// The pools as the controller sees them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Pools {
    /// The balanced pool's capacity.
    pub balanced: Capacity,
    /// Balanced capacity used by what the controller does not move
    /// (applications that cannot be disaggregated, say).
    pub balanced_pinned: Capacity,
    /// Free capacity of the compute pool.
    pub compute_free: Capacity,
    /// Free capacity of the memory pool.
    pub memory_free: Capacity,
}

/// One move.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Move {
    /// Run the application's components in one sandbox on the balanced pool.
    Aggregate {
        /// The application.
        app: String,
        /// Bytes per invocation that stop crossing the network.
        saving_bytes: u64,
        /// Why.
        reason: String,
    },
    /// Run its components apart again.
    Disaggregate {
        /// The application.
        app: String,
        /// Bytes per invocation that cross the network again.
        cost_bytes: u64,
        /// Why.
        reason: String,
    },
}

impl Move {
    /// The application moved.
    pub fn app(&self) -> &str {
        match self {
            Move::Aggregate { app, .. } | Move::Disaggregate { app, .. } => app,
        }
    }

    /// Whether it is to run aggregated afterwards.
    pub fn aggregates(&self) -> bool {
        matches!(self, Move::Aggregate { .. })
    }
}

/// What one step decided.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Balanced-pool utilization before the moves.
    pub utilization_before: f64,
    /// And after them.
    pub utilization_after: f64,
    /// The moves, in the order the solver's choice lists them.
    pub moves: Vec<Move>,
}

/// Why the controller could not decide.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatermarkError {
    /// A configuration value is out of range.
    #[error("invalid watermark configuration: {0}")]
    Config(String),
    /// The planning problem was refused.
    #[error(transparent)]
    Ilp(#[from] resc_ilp::IlpError),
}

fn add(a: Capacity, b: Capacity) -> Capacity {
    Capacity::new(a.millicores.saturating_add(b.millicores), a.memory_bytes.saturating_add(b.memory_bytes))
}

fn utilization(used: Capacity, of: Capacity) -> f64 {
    let ratio = |u: u64, c: u64| {
        if c == 0 {
            if u == 0 {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            u as f64 / c as f64
        }
    };
    ratio(used.millicores, of.millicores).max(ratio(used.memory_bytes, of.memory_bytes))
}

fn scaled(capacity: Capacity, fraction: f64) -> Capacity {
    Capacity::new((capacity.millicores as f64 * fraction) as u64, (capacity.memory_bytes as f64 * fraction) as u64)
}

/// The controller.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatermarkController {
    config: WatermarkConfig,
}

impl WatermarkController {
    /// A controller with `config`; the watermark and the ceiling must lie
    /// in (0, 1] with the ceiling at or below the watermark.
    pub fn new(config: WatermarkConfig) -> Result<Self, WatermarkError> {
        let in_range = |v: f64| v > 0.0 && v <= 1.0;
        if !in_range(config.high) || !in_range(config.aggregate_below) || config.aggregate_below > config.high {
            return Err(WatermarkError::Config(format!(
                "need 0 < aggregate_below ({}) ≤ high ({}) ≤ 1",
                config.aggregate_below, config.high
            )));
        }
        Ok(WatermarkController { config })
    }

    /// The configuration.
    pub fn config(&self) -> &WatermarkConfig {
        &self.config
    }

    /// Decides this step's moves for `groups` on `pools`.
    pub fn decide(&self, pools: &Pools, groups: &[Group]) -> Result<Plan, WatermarkError> {
        let aggregated_use =
            groups.iter().filter(|g| g.aggregated).fold(Capacity::default(), |a, g| add(a, g.candidate.demand()));
        let used = add(pools.balanced_pinned, aggregated_use);
        let before = utilization(used, pools.balanced);
        let moves = if before > self.config.high {
            self.disaggregate(pools, groups, used, before)?
        } else {
            self.aggregate(pools, groups, used, before)?
        };
        let mut after_use = used;
        for m in &moves {
            if let Some(g) = groups.iter().find(|g| g.app == m.app()) {
                let d = g.candidate.demand();
                after_use = if m.aggregates() {
                    add(after_use, d)
                } else {
                    Capacity::new(
                        after_use.millicores.saturating_sub(d.millicores),
                        after_use.memory_bytes.saturating_sub(d.memory_bytes),
                    )
                };
            }
        }
        for m in &moves {
            match m {
                Move::Aggregate { app, saving_bytes, reason } => {
                    tracing::info!(app, saving_bytes, reason, "aggregate");
                }
                Move::Disaggregate { app, cost_bytes, reason } => {
                    tracing::info!(app, cost_bytes, reason, "disaggregate");
                }
            }
        }
        Ok(Plan { utilization_before: before, utilization_after: utilization(after_use, pools.balanced), moves })
    }

    fn disaggregate(
        &self,
        pools: &Pools,
        groups: &[Group],
        used: Capacity,
        before: f64,
    ) -> Result<Vec<Move>, WatermarkError> {
        let running: Vec<&Group> = groups.iter().filter(|g| g.aggregated).collect();
        if running.is_empty() {
            return Ok(Vec::new());
        }
        let target = scaled(pools.balanced, self.config.high);
        let required = Capacity::new(
            used.millicores.saturating_sub(target.millicores),
            used.memory_bytes.saturating_sub(target.memory_bytes),
        );
        // One millicore or one MiB of shortfall costs more than all the
        // communication at stake, so the plan frees what it must first and
        // saves traffic second (a shortfall under 1 MiB of memory may remain).
        let at_stake = running.iter().map(|g| g.candidate.saving() as f64).sum::<f64>() + 1.0;
        let penalty = Penalty { per_millicore: at_stake, per_byte: at_stake / MIB as f64 };
        let problem = DisaggregationProblem {
            groups: running.iter().map(|g| g.candidate.clone()).collect(),
            compute_pool_free: pools.compute_free,
            memory_pool_free: pools.memory_free,
            required_free: required,
            penalty,
        };
        let solution = problem.solve(&self.config.solve)?;
        let mut chosen: Vec<&Group> = solution.chosen.iter().filter_map(|&i| running.get(i).copied()).collect();
        chosen.sort_by_key(|g| g.candidate.saving());
        Ok(chosen
            .into_iter()
            .map(|g| Move::Disaggregate {
                app: g.app.clone(),
                cost_bytes: g.candidate.saving(),
                reason: format!(
                    "balanced pool at {:.0} % is above the {:.0} % watermark; splitting `{}` frees {} mcores and {} MiB for {} B per invocation of traffic, the least of the plans that free enough",
                    before * 100.0,
                    self.config.high * 100.0,
                    g.app,
                    g.candidate.total_cpu(),
                    g.candidate.total_memory() >> 20,
                    g.candidate.saving()
                ),
            })
            .collect())
    }

    fn aggregate(
        &self,
        pools: &Pools,
        groups: &[Group],
        used: Capacity,
        before: f64,
    ) -> Result<Vec<Move>, WatermarkError> {
        let apart: Vec<&Group> = groups.iter().filter(|g| !g.aggregated && g.candidate.saving() > 0).collect();
        let ceiling = scaled(pools.balanced, self.config.aggregate_below);
        if apart.is_empty() || utilization(used, pools.balanced) >= self.config.aggregate_below {
            return Ok(Vec::new());
        }
        let room = Capacity::new(
            ceiling.millicores.saturating_sub(used.millicores),
            ceiling.memory_bytes.saturating_sub(used.memory_bytes),
        );
        let problem = AggregationProblem::new(apart.iter().map(|g| g.candidate.clone()).collect(), room);
        let solution = problem.solve(&self.config.solve)?;
        let mut chosen: Vec<&Group> = solution.chosen.iter().filter_map(|&i| apart.get(i).copied()).collect();
        chosen.sort_by_key(|g| std::cmp::Reverse(g.candidate.saving()));
        Ok(chosen
            .into_iter()
            .map(|g| Move::Aggregate {
                app: g.app.clone(),
                saving_bytes: g.candidate.saving(),
                reason: format!(
                    "balanced pool at {:.0} %, below the {:.0} % ceiling; aggregating `{}` saves {} B per invocation of traffic within the room left",
                    before * 100.0,
                    self.config.aggregate_below * 100.0,
                    g.app,
                    g.candidate.saving()
                ),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resc_core::ids::{AppId, ComputeId, MemoryId};
    use resc_ilp::{CommMatrix, ComponentKey};

    const GIB: u64 = 1 << 30;

    fn group(app: u64, name: &str, saving: u64, millicores: u64, aggregated: bool) -> Group {
        let mut candidate =
            Candidate::new(AppId(app), vec![ComponentKey::Compute(ComputeId(0)), ComponentKey::Memory(MemoryId(0))]);
        candidate.cpu = vec![millicores, 0];
        candidate.memory = vec![millicores * (GIB / 1000), 0];
        let mut communication = CommMatrix::new();
        communication.push(0, 1, saving);
        candidate.communication = communication;
        Group { app: name.into(), candidate, aggregated }
    }

    fn pools(pinned_millicores: u64) -> Pools {
        Pools {
            balanced: Capacity::new(10_000, 10 * GIB),
            balanced_pinned: Capacity::new(pinned_millicores, pinned_millicores * (GIB / 1000)),
            compute_free: Capacity::new(100_000, 100 * GIB),
            memory_free: Capacity::new(0, 1000 * GIB),
        }
    }

    fn apps(moves: &[Move]) -> Vec<(&str, bool)> {
        moves.iter().map(|m| (m.app(), m.aggregates())).collect()
    }

    #[test]
    fn above_the_watermark_the_lowest_communication_group_is_split_first() {
        let controller = WatermarkController::default();
        let groups = [group(1, "chatty", 9_000, 1500, true), group(2, "quiet", 1_000, 1500, true)];
        // 5 + 1.5 + 1.5 = 8 of 10 cores: 80 % > 70 %; one split suffices.
        let plan = controller.decide(&pools(5000), &groups).expect("plan");
        assert_eq!(apps(&plan.moves), [("quiet", false)]);
        assert!((plan.utilization_before - 0.8).abs() < 1e-9);
        assert!(plan.utilization_after <= 0.7 + 1e-9);
        // Hotter still: both must go.
        let plan = controller.decide(&pools(6500), &groups).expect("plan");
        assert_eq!(apps(&plan.moves), [("quiet", false), ("chatty", false)]);
    }

    #[test]
    fn freeing_enough_comes_before_saving_traffic() {
        let controller = WatermarkController::default();
        // 6 + 0.9 + 1.5 = 8.4 of 10 cores: splitting the quiet group alone
        // leaves 75 %, so the chatty one must go even though it costs more.
        let groups = [group(1, "quiet", 100, 900, true), group(2, "chatty", 10_000, 1500, true)];
        let plan = controller.decide(&pools(6000), &groups).expect("plan");
        assert!(plan.utilization_after <= 0.7 + 1e-9, "{plan:?}");
        assert_eq!(apps(&plan.moves), [("chatty", false)], "the one split that frees enough");
    }

    #[test]
    fn freed_capacity_aggregates_the_biggest_saving_first_up_to_the_ceiling() {
        let controller = WatermarkController::default();
        let groups = [group(1, "chatty", 9_000, 1500, false), group(2, "quiet", 1_000, 1500, false)];
        // 4 cores pinned: room for one group below 60 %.
        let plan = controller.decide(&pools(4000), &groups).expect("plan");
        assert_eq!(apps(&plan.moves), [("chatty", true)]);
        assert!(plan.utilization_after <= 0.6 + 1e-9);
        // Load gone: both come back.
        let plan = controller.decide(&pools(1000), &groups).expect("plan");
        assert_eq!(apps(&plan.moves), [("chatty", true), ("quiet", true)]);
        // Between the ceiling and the watermark nothing moves either way.
        let hovering = [group(1, "chatty", 9_000, 1500, true), group(2, "quiet", 1_000, 1500, false)];
        assert!(controller.decide(&pools(5000), &hovering).expect("plan").moves.is_empty());
    }

    #[test]
    fn a_bad_configuration_is_refused() {
        let config = WatermarkConfig { high: 0.5, aggregate_below: 0.6, ..WatermarkConfig::default() };
        assert!(matches!(WatermarkController::new(config), Err(WatermarkError::Config(_))));
    }
}
