//! The controllers' placement state: the two-level scheduler with its warm
//! pool (`resc-sched`, pure state machines), and the sandbox environments
//! that stand behind the warm sandboxes it tracks.
//!
//! The state machines read no clock: the placer passes them the
//! milliseconds since the platform started.

use parking_lot::Mutex;
use resc_core::ids::NodeId;
use resc_core::sandbox::{CodeLoader, EnvId, Sandbox};
use resc_core::scheduler::{ClusterSpec, Placement, PlacementRequest, ScheduleError, Scheduler};
use resc_sched::predict::PredictorConfig;
use resc_sched::warm::{PrewarmTarget, SandboxId, WarmConfig, WarmStats};
use resc_sched::warm_sched::WarmScheduler;
use resc_sched::{BuildError, Millis, SchedConfig, TwoLevelScheduler};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keep-alive and pre-warming of compute sandboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WarmStartConfig {
    /// How long a finished instance's sandbox stays warm, holding its slot
    /// (zero: torn down at once).
    pub keep_alive: Duration,
    /// Whether the components a starting component triggers are pre-warmed
    /// near it while it runs.
    pub prewarm_next: bool,
    /// How long a pre-warmed sandbox waits for its run before it is torn down.
    pub prewarm_ttl: Duration,
    /// Whether each application's first components are pre-warmed ahead of
    /// the arrival its invocation history predicts (an EMA of inter-arrival
    /// times).
    pub prewarm_predicted: bool,
    /// How long before a predicted arrival to pre-warm; keep it above the
    /// housekeeping tick (100 ms) and below `prewarm_ttl`.
    pub predict_lead: Duration,
}

impl Default for WarmStartConfig {
    /// Ten minutes of keep-alive, as common FaaS platforms do, and pre-warming on.
    fn default() -> Self {
        WarmStartConfig {
            keep_alive: Duration::from_secs(600),
            prewarm_next: true,
            prewarm_ttl: Duration::from_secs(10),
            prewarm_predicted: true,
            predict_lead: Duration::from_millis(500),
        }
    }
}

impl WarmStartConfig {
    /// No keep-alive and no pre-warming: every instance starts cold.
    pub fn cold() -> Self {
        WarmStartConfig { keep_alive: Duration::ZERO, prewarm_next: false, prewarm_predicted: false, ..Self::default() }
    }
}

/// Warm-start counters and what the warm pool held while idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct WarmUsage {
    /// Starts on a warm sandbox.
    pub hits: u64,
    /// Of those, on a pre-warmed one.
    pub prewarm_hits: u64,
    /// Cold starts.
    pub misses: u64,
    /// Sandboxes pre-warmed.
    pub prewarmed: u64,
    /// Memory held by idle warm sandboxes, GiB·s: allocated, though no code runs.
    pub idle_gib_s: f64,
}

impl WarmUsage {
    /// Both together.
    pub fn plus(&self, other: &WarmUsage) -> WarmUsage {
        WarmUsage {
            hits: self.hits + other.hits,
            prewarm_hits: self.prewarm_hits + other.prewarm_hits,
            misses: self.misses + other.misses,
            prewarmed: self.prewarmed + other.prewarmed,
            idle_gib_s: self.idle_gib_s + other.idle_gib_s,
        }
    }

    /// What happened between `before` and `self`.
    pub fn since(&self, before: &WarmUsage) -> WarmUsage {
        WarmUsage {
            hits: self.hits - before.hits,
            prewarm_hits: self.prewarm_hits - before.prewarm_hits,
            misses: self.misses - before.misses,
            prewarmed: self.prewarmed - before.prewarmed,
            idle_gib_s: self.idle_gib_s - before.idle_gib_s,
        }
    }
}

struct State {
    sched: WarmScheduler<TwoLevelScheduler>,
    /// The environment behind each warm sandbox.
    envs: HashMap<SandboxId, EnvId>,
    /// Per application, the code of its first components (for predicted pre-warms).
    entry_code: HashMap<String, HashMap<String, CodeLoader>>,
}

/// Where physical components go, and which sandbox environments are warm.
pub(crate) struct Placer {
    state: Mutex<State>,
    sandbox: Arc<dyn Sandbox>,
    config: WarmStartConfig,
    epoch: Instant,
}

/// A compute instance's start: where, and in which environment if warm.
pub(crate) struct ComputeStart {
    pub(crate) placement: Placement,
    pub(crate) env: Option<EnvId>,
}

fn millis(d: Duration) -> Millis {
    Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Placer {
    pub(crate) fn new(
        cluster: &ClusterSpec,
        seed: u64,
        sandbox: Arc<dyn Sandbox>,
        config: WarmStartConfig,
    ) -> Result<Placer, BuildError> {
        let scheduler = TwoLevelScheduler::new(cluster, SchedConfig::default().with_seed(seed))?;
        // One keep-alive serves both kinds of warm sandbox: finished ones are
        // only kept when the platform's keep-alive is non-zero (see `finish`).
        let keep_alive = if config.keep_alive.is_zero() { config.prewarm_ttl } else { config.keep_alive };
        let warm = WarmConfig { keep_alive: millis(keep_alive) };
        let predictor = PredictorConfig { lead: millis(config.predict_lead), ..PredictorConfig::default() };
        let sched = WarmScheduler::new(scheduler, warm, predictor);
        let state = State { sched, envs: HashMap::new(), entry_code: HashMap::new() };
        Ok(Placer { state: Mutex::new(state), sandbox, config, epoch: Instant::now() })
    }

    fn now(&self) -> Millis {
        millis(self.epoch.elapsed())
    }

    /// Places a reservation outside the warm pool (a memory component, a function).
    pub(crate) fn place(&self, request: &PlacementRequest) -> Result<Placement, ScheduleError> {
        self.state.lock().sched.scheduler_mut().place(request)
    }

    /// Returns a reservation made with [`place`](Self::place), or one whose sandbox is gone.
    pub(crate) fn release(&self, placement: &Placement) {
        self.state.lock().sched.release(placement);
    }

    /// Places a compute instance: on a warm sandbox of its component if one
    /// fits (its environment comes along), else on a new reservation.
    pub(crate) fn start(&self, request: &PlacementRequest) -> Result<ComputeStart, ScheduleError> {
        let now = self.now();
        let mut state = self.state.lock();
        self.expire(&mut state, now);
        let start = state.sched.start(request, now)?;
        // A warm sandbox whose environment could not be prepared has only its
        // reservation: the caller prepares a fresh environment on it.
        let env = start.warm.and_then(|id| state.envs.remove(&id));
        Ok(ComputeStart { placement: start.placement, env })
    }

    /// A compute instance finished in `env`: its sandbox stays warm for the
    /// keep-alive, or is torn down and its reservation returned.
    pub(crate) fn finish(&self, app: &str, component: &str, placement: Placement, env: EnvId) {
        let now = self.now();
        let mut state = self.state.lock();
        if self.config.keep_alive.is_zero() {
            state.sched.release(&placement);
            self.sandbox.retire(env);
        } else {
            let id = state.sched.finish(app, component, placement, now);
            state.envs.insert(id, env);
        }
        self.expire(&mut state, now);
    }

    /// Pre-warms, near `near`, the `targets` a component of `app` that just
    /// started triggers: each gets a reservation and an environment loading
    /// its code. Best effort: a target that does not fit is skipped.
    pub(crate) fn prewarm_next(
        &self,
        app: &str,
        targets: &[PrewarmTarget],
        near: NodeId,
        loader: impl Fn(&str) -> Option<CodeLoader>,
    ) {
        if !self.config.prewarm_next {
            return;
        }
        let now = self.now();
        let mut state = self.state.lock();
        for action in state.sched.prewarm_next(app, targets, near, now) {
            let Some(code) = loader(&action.component) else { continue };
            let Ok((id, _)) = state.sched.prewarm(&action, now) else { continue };
            if let Ok(env) = self.sandbox.prepare(&format!("{}~", action.component), code) {
                state.envs.insert(id, env);
            }
        }
    }

    /// Tears down sandboxes whose keep-alive ran out.
    fn expire(&self, state: &mut State, now: Millis) {
        for gone in state.sched.expire(now) {
            if let Some(env) = state.envs.remove(&gone.id) {
                self.sandbox.retire(env);
            }
        }
    }

    /// Learns an application's first components and their code, so that
    /// its invocation history can pre-warm them.
    pub(crate) fn deployed(&self, app: &str, entries: Vec<(PrewarmTarget, CodeLoader)>) {
        let mut state = self.state.lock();
        let code = entries.iter().map(|(t, code)| (t.component.clone(), code.clone())).collect();
        state.entry_code.insert(app.to_owned(), code);
        state.sched.predictor_mut().register(app, entries.into_iter().map(|(t, _)| t).collect());
    }

    /// Tears down what expired by now and pre-warms first components whose
    /// predicted arrival is near; the platform's housekeeping calls it
    /// between events.
    pub(crate) fn tick(&self) {
        let now = self.now();
        let mut state = self.state.lock();
        self.expire(&mut state, now);
        if !self.config.prewarm_predicted {
            return;
        }
        for action in state.sched.due_prewarms(now) {
            let Some(code) = state.entry_code.get(&action.app).and_then(|c| c.get(&action.component)).cloned() else {
                continue;
            };
            let Ok((id, _)) = state.sched.prewarm(&action, now) else { continue };
            if let Ok(env) = self.sandbox.prepare(&format!("{}~", action.component), code) {
                state.envs.insert(id, env);
            }
        }
    }

    /// Counters so far, and the idle memory the warm pool has held.
    pub(crate) fn usage(&self) -> WarmUsage {
        let now = self.now();
        let state = self.state.lock();
        let warm = state.sched.warm();
        let WarmStats { hits, prewarm_hits, misses, prewarmed, .. } = *warm.stats();
        let byte_ms = warm.held_byte_ms(now) as f64;
        WarmUsage { hits, prewarm_hits, misses, prewarmed, idle_gib_s: byte_ms / 1e3 / (1u64 << 30) as f64 }
    }
}
