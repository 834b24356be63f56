//! Adaptation applied to invocations on the embedded platform: every
//! invocation is folded into its application's usage history, every K
//! invocations the [adjuster](super::adjust) re-sizes it, and on demand the
//! [watermark controller](super::watermark) moves applications between
//! aggregated execution (one sandbox on the balanced pool, memory components
//! as local memory spaces, messages as in-process queues) and disaggregated
//! execution.
//!
//! ```no_run
//! # use resc_reference::embedded::{EmbeddedPlatform, PlatformConfig};
//! # use resc_reference::adapt::adaptive::{Adaptive, AdaptConfig};
//! # fn demo(platform: &EmbeddedPlatform, deployment: resc_reference::embedded::Deployment) -> Result<(), Box<dyn std::error::Error>> {
//! let mut adaptive = Adaptive::new(platform, AdaptConfig::default())?;
//! let app = adaptive.manage(deployment);
//! for _ in 0..100 {
//!     adaptive.invoke(app, b"input")?; // folded into the history; re-sized every K
//! }
//! let plan = adaptive.rebalance(&[(app, 1.0)], resc_ilp::Capacity::default())?;
//! println!("{:?}", plan.moves);
//! # Ok(()) }
//! ```

use super::adjust::{AdjustConfig, Adjuster, Decision};
use super::watermark::{Group, Plan, Pools, WatermarkConfig, WatermarkController, WatermarkError};
use crate::embedded::{ComputePlacement, Deployment, EmbeddedPlatform, InvocationReport, PlatformError};
use resc_core::graph::ComponentRef;
use resc_core::ids::{AppId, ComputeId, MemoryId};
use resc_core::resources::MIB;
use resc_core::scheduler::Pool;
use resc_core::usage::UsageHistory;
use resc_ilp::{Candidate, Capacity, CommMatrix, ComponentKey};
use serde::Serialize;
use std::collections::BTreeMap;

/// How the runner adapts.
#[derive(Debug, Clone, Serialize)]
pub struct AdaptConfig {
    /// EMA weight of the newest invocation.
    pub alpha: f64,
    /// When and how to re-size.
    pub adjust: AdjustConfig,
    /// When to aggregate and disaggregate.
    pub watermark: WatermarkConfig,
}

impl Default for AdaptConfig {
    /// α = 0.5, the adjuster's and the controller's defaults.
    fn default() -> Self {
        AdaptConfig { alpha: 0.5, adjust: AdjustConfig::default(), watermark: WatermarkConfig::default() }
    }
}

/// Why adapting failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdaptError {
    /// The platform refused or an invocation failed.
    #[error(transparent)]
    Platform(#[from] PlatformError),
    /// The controller could not decide.
    #[error(transparent)]
    Watermark(#[from] WatermarkError),
    /// A re-sized graph was refused.
    #[error("cannot re-size `{app}`: {reason}")]
    Resize {
        /// The application.
        app: String,
        /// Why.
        reason: String,
    },
    /// No such managed application.
    #[error("no managed application {0}")]
    UnknownApp(usize),
}

/// A managed application, by the order [`Adaptive::manage`] saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ManagedApp(pub usize);

struct Managed {
    deployment: Deployment,
    history: UsageHistory,
    aggregated: bool,
    /// Whether the controller may move it (an application that cannot be
    /// disaggregated is not managed by the controller at all).
    movable: bool,
    decisions: Vec<Decision>,
}

/// Runs invocations and adapts the applications they belong to.
pub struct Adaptive<'p> {
    platform: &'p EmbeddedPlatform,
    adjuster: Adjuster,
    controller: WatermarkController,
    alpha: f64,
    apps: Vec<Managed>,
}

impl std::fmt::Debug for Adaptive<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adaptive").field("apps", &self.apps.len()).finish_non_exhaustive()
    }
}

impl<'p> Adaptive<'p> {
    /// A runner on `platform`.
    pub fn new(platform: &'p EmbeddedPlatform, config: AdaptConfig) -> Result<Self, AdaptError> {
        Ok(Adaptive {
            platform,
            adjuster: Adjuster::new(config.adjust, platform.config().size_classes.clone()),
            controller: WatermarkController::new(config.watermark)?,
            alpha: config.alpha,
            apps: Vec::new(),
        })
    }

    /// Manages a deployed application; it starts disaggregated.
    pub fn manage(&mut self, deployment: Deployment) -> ManagedApp {
        self.apps.push(Managed {
            deployment,
            history: UsageHistory::new(self.alpha),
            aggregated: false,
            movable: true,
            decisions: Vec::new(),
        });
        ManagedApp(self.apps.len() - 1)
    }

    fn app(&self, app: ManagedApp) -> Result<&Managed, AdaptError> {
        self.apps.get(app.0).ok_or(AdaptError::UnknownApp(app.0))
    }

    /// Whether `app` runs aggregated now.
    pub fn is_aggregated(&self, app: ManagedApp) -> bool {
        self.apps.get(app.0).is_some_and(|m| m.aggregated)
    }

    /// Pins `app` aggregated or not: the controller leaves it there.
    pub fn pin(&mut self, app: ManagedApp, aggregated: bool) -> Result<(), AdaptError> {
        let m = self.apps.get_mut(app.0).ok_or(AdaptError::UnknownApp(app.0))?;
        m.aggregated = aggregated;
        m.movable = false;
        Ok(())
    }

    /// `app`'s usage history.
    pub fn history(&self, app: ManagedApp) -> Option<&UsageHistory> {
        self.apps.get(app.0).map(|m| &m.history)
    }

    /// `app`'s current deployment (re-sized by the adjuster over time).
    pub fn deployment(&self, app: ManagedApp) -> Option<&Deployment> {
        self.apps.get(app.0).map(|m| &m.deployment)
    }

    /// The adjustments applied to `app` so far.
    pub fn decisions(&self, app: ManagedApp) -> &[Decision] {
        self.apps.get(app.0).map_or(&[], |m| m.decisions.as_slice())
    }

    /// The memory one aggregated sandbox of `app` holds: what its
    /// components used together (averages), rounded up to the smallest
    /// size class, at least one compute slot.
    pub fn aggregated_bytes(&self, app: ManagedApp) -> u64 {
        let classes = &self.platform.config().size_classes;
        let Some(m) = self.apps.get(app.0) else { return classes.compute_slot() };
        let total: f64 = m.history.components().map(|(_, h)| h.memory_bytes).sum();
        let smallest = classes.smallest();
        ((total.ceil() as u64).div_ceil(smallest) * smallest).max(classes.compute_slot())
    }

    /// Runs one invocation of `app` the way it runs now, folds it into the
    /// history and, every K invocations, applies the adjuster's decisions.
    pub fn invoke(&mut self, app: ManagedApp, input: &[u8]) -> Result<InvocationReport, AdaptError> {
        let aggregated_bytes = self.aggregated_bytes(app);
        let platform = self.platform;
        let m = self.apps.get_mut(app.0).ok_or(AdaptError::UnknownApp(app.0))?;
        let report = if m.aggregated {
            platform.invoke_aggregated(&m.deployment, input, aggregated_bytes)?
        } else {
            platform.invoke(&m.deployment, input)?
        };
        if report.aggregated {
            let traffic = report
                .traffic
                .iter()
                .map(|(c, peers)| (c.as_str(), peers.iter().map(|(p, &b)| (p.clone(), b as f64)).collect()));
            m.history.fold_communication(traffic);
        } else {
            let observations = report.observations();
            m.history.fold(observations.iter().map(|(name, o)| (name.as_str(), o.clone())));
        }
        if self.adjuster.due(&m.history) {
            let decisions = self.adjuster.decide(m.deployment.graph(), &m.history);
            m.deployment = apply(platform, &m.deployment, &decisions)?;
            m.decisions.extend(decisions);
        }
        Ok(report)
    }

    /// `app`'s group for the controller: its components with their usage
    /// averages and traffic, CPU and memory multiplied by `load` (how many
    /// of its invocations the balanced pool holds at once, on average).
    pub fn group(&self, app: ManagedApp, load: f64) -> Result<Group, AdaptError> {
        let m = self.app(app)?;
        let graph = m.deployment.graph();
        let mut components = Vec::new();
        let mut names = Vec::new();
        for (i, c) in graph.compute_components().iter().enumerate() {
            components.push(ComponentKey::Compute(ComputeId(i as u32)));
            names.push(c.name.as_str());
        }
        for (i, c) in graph.memory_components().iter().enumerate() {
            components.push(ComponentKey::Memory(MemoryId(i as u32)));
            names.push(c.name.as_str());
        }
        let position: BTreeMap<&str, u32> = names.iter().enumerate().map(|(i, n)| (*n, i as u32)).collect();
        let mut candidate = Candidate::new(AppId(app.0 as u64), components);
        let mut communication = CommMatrix::new();
        let load = load.max(0.0);
        for (i, name) in names.iter().enumerate() {
            if let Some(ComponentRef::Compute(id)) = graph.find(name) {
                let c = graph.compute(id);
                candidate.cpu[i] = (f64::from(c.millicores.saturating_mul(c.parallelism)) * load).ceil() as u64;
            }
            let Some(h) = m.history.component(name) else { continue };
            candidate.memory[i] = (h.memory_bytes * load).ceil() as u64;
            for (peer, &bytes) in &h.network_bytes {
                if let Some(&to) = position.get(peer.as_str()) {
                    if to != i as u32 && bytes >= 1.0 {
                        communication.push(i as u32, to, bytes as u64);
                    }
                }
            }
        }
        candidate.communication = communication;
        Ok(Group { app: graph.app().to_owned(), candidate, aggregated: m.aggregated })
    }

    /// One controller step over the movable applications, each with its
    /// load (see [`group`](Self::group)); `pinned` is the balanced capacity
    /// used by everything else. Moves are applied: the next invocation of a
    /// moved application runs the new way.
    pub fn rebalance(&mut self, loads: &[(ManagedApp, f64)], pinned: Capacity) -> Result<Plan, AdaptError> {
        let mut groups = Vec::new();
        let mut managed = Vec::new();
        for &(app, load) in loads {
            if self.app(app)?.movable {
                groups.push(self.group(app, load)?);
                managed.push(app);
            }
        }
        let pools = self.pools(pinned);
        let plan = self.controller.decide(&pools, &groups)?;
        for m in &plan.moves {
            if let Some(pos) = groups.iter().position(|g| g.app == m.app()) {
                self.apps[managed[pos].0].aggregated = m.aggregates();
            }
        }
        Ok(plan)
    }

    /// The pools of the platform: capacities from its configuration, with
    /// the balanced pool's other use `pinned`. The compute and memory pools
    /// count as wholly free: between invocations the embedded platform's
    /// hold nothing.
    pub fn pools(&self, pinned: Capacity) -> Pools {
        let config = self.platform.config();
        let nodes = u64::from(config.racks) * u64::from(config.nodes_per_rack);
        let total = |pool: Pool| {
            config.node_pools.get(&pool).map_or(Capacity::default(), |r| {
                Capacity::new(u64::from(r.millicores) * nodes, r.memory_bytes.saturating_mul(nodes))
            })
        };
        Pools {
            balanced: total(Pool::Balanced),
            balanced_pinned: pinned,
            compute_free: total(Pool::Compute),
            memory_free: total(Pool::Memory),
        }
    }
}

/// The deployment with `decisions` applied: memory components re-sized
/// (the graph rebuilt and deployed again), compute components moved.
fn apply(
    platform: &EmbeddedPlatform,
    deployment: &Deployment,
    decisions: &[Decision],
) -> Result<Deployment, AdaptError> {
    let graph = deployment.graph();
    let mut template = graph.to_template();
    let mut resized = false;
    let mut moves = Vec::new();
    for decision in decisions {
        match decision {
            Decision::ResizeMemory { component, initial_bytes, increment_bytes, .. } => {
                if let Some(spec) = template.memory.iter_mut().find(|m| &m.name == component) {
                    spec.initial_mib = initial_bytes.div_ceil(MIB).max(1);
                    spec.increment_mib = increment_bytes.div_ceil(MIB).max(1);
                    resized = true;
                }
            }
            Decision::MoveToBalanced { component, local_bytes, .. } => {
                if let Some(ComponentRef::Compute(id)) = graph.find(component) {
                    moves.push((id, ComputePlacement { pool: Pool::Balanced, local_bytes: *local_bytes }));
                }
            }
        }
    }
    let mut next = if resized {
        let refused = |reason: String| AdaptError::Resize { app: graph.app().to_owned(), reason };
        let graph = resc_core::graph::ResourceGraph::from_template(&template).map_err(|e| refused(e.to_string()))?;
        let mut fresh = platform.deploy(graph)?;
        for (id, placement) in placements(deployment) {
            fresh = fresh.with_placement(id, placement);
        }
        fresh
    } else {
        deployment.clone()
    };
    for (id, placement) in moves {
        next = next.with_placement(id, placement);
    }
    Ok(next)
}

/// The compute components of `deployment` with a placement of their own.
fn placements(deployment: &Deployment) -> Vec<(ComputeId, ComputePlacement)> {
    (0..deployment.graph().compute_components().len() as u32)
        .map(ComputeId)
        .filter_map(|id| deployment.placement(id).map(|p| (id, p)))
        .collect()
}
