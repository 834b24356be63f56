//! A warm-start-aware scheduler: any [`Scheduler`] plus a [`WarmPool`] and
//! an [`InvocationPredictor`].
//!
//! # Lifecycle of a sandbox
//!
//! ```text
//!  start ──(warm hit: reuse the idle sandbox's reservation)──┐
//!    │                                                        ▼
//!    └─(miss: scheduler.place, a cold start)──────────────► running
//!                                                             │ finish
//!  prewarm ──(scheduler.place)──► idle (warm) ◄───────────────┘
//!                                   │ keep-alive runs out
//!                                   ▼
//!                         expire: scheduler.release, tear down
//! ```
//!
//! While idle, a sandbox keeps its reservation on the scheduler: warm
//! capacity is allocated capacity, so the scheduler never hands it to
//! another component and metering sees it ([`WarmPool::held_byte_ms`]). A
//! warm hit does not go through the scheduler at all: the request runs where
//! its warm sandbox is, on the reservation the sandbox holds — the node a
//! warm sandbox is on is thus always preferred when the sandbox fits the
//! request (same pool, reservation covering the demand); among several, one
//! on a peer's node, then on the triggering node, then the most recently
//! idle. A miss is a cold start through the wrapped scheduler, whose own
//! (app, component) hash sends first components where their sandboxes were.
//!
//! Invocation arrivals, for the predictor, are the starts of first
//! components (`first_in_graph`).

use crate::predict::{InvocationPredictor, PredictorConfig};
use crate::time::Millis;
use crate::warm::{Prewarm, PrewarmTarget, SandboxId, WarmConfig, WarmPool, WarmSandbox};
use resc_core::ids::NodeId;
use resc_core::scheduler::{Placement, PlacementRequest, ScheduleError, Scheduler};
use serde::{Deserialize, Serialize};

/// How a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    /// Where it runs and what it holds.
    pub placement: Placement,
    /// The warm sandbox it reuses (`None`: a cold start).
    pub warm: Option<SandboxId>,
}

impl Start {
    /// Whether it reused a warm sandbox.
    pub fn is_warm(&self) -> bool {
        self.warm.is_some()
    }
}

/// A [`Scheduler`] with keep-alive and pre-warming. See the [module
/// documentation](self).
///
/// ```
/// use resc_core::resources::{Resources, GIB, MIB};
/// use resc_core::scheduler::{ClusterSpec, PlacementRequest, Pool};
/// use resc_sched::predict::PredictorConfig;
/// use resc_sched::warm::WarmConfig;
/// use resc_sched::warm_sched::WarmScheduler;
/// use resc_sched::{Millis, SchedConfig, TwoLevelScheduler};
///
/// let cluster = ClusterSpec::uniform(2, 4, &[(Pool::Compute, Resources::new(4000, 4 * GIB))].into_iter().collect());
/// let inner = TwoLevelScheduler::new(&cluster, SchedConfig::default())?;
/// let mut s = WarmScheduler::new(inner, WarmConfig { keep_alive: Millis(60_000) }, PredictorConfig::default());
/// let request = PlacementRequest {
///     app: "a".into(), component: "entry".into(), pool: Pool::Compute,
///     demand: Resources::new(250, 256 * MIB), first_in_graph: true, triggered_from: None, peers_on: vec![],
/// };
/// let first = s.start(&request, Millis(0))?;
/// assert!(!first.is_warm());
/// s.finish("a", "entry", first.placement, Millis(100));
/// let second = s.start(&request, Millis(5_000))?;
/// assert!(second.is_warm());
/// assert_eq!(second.placement, first.placement);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct WarmScheduler<S> {
    scheduler: S,
    warm: WarmPool,
    predictor: InvocationPredictor,
}

impl<S: Scheduler> WarmScheduler<S> {
    /// Wraps `scheduler`.
    pub fn new(scheduler: S, warm: WarmConfig, predictor: PredictorConfig) -> WarmScheduler<S> {
        WarmScheduler { scheduler, warm: WarmPool::new(warm), predictor: InvocationPredictor::new(predictor) }
    }

    /// Starts a run of `request` at `now`: on a warm sandbox if one fits, else
    /// on a new placement (cold). Records an arrival for first components.
    pub fn start(&mut self, request: &PlacementRequest, now: Millis) -> Result<Start, ScheduleError> {
        if request.first_in_graph {
            self.predictor.record_arrival(&request.app, now);
        }
        if let Some(sandbox) = self.warm.take_for(request, now) {
            return Ok(Start { placement: sandbox.placement, warm: Some(sandbox.id) });
        }
        let placement = self.scheduler.place(request)?;
        Ok(Start { placement, warm: None })
    }

    /// A run of `component` of `app` on `placement` finished at `now`: keep
    /// its sandbox warm (holding the placement) for the keep-alive.
    pub fn finish(&mut self, app: &str, component: &str, placement: Placement, now: Millis) -> SandboxId {
        self.warm.on_finish(app, component, placement, now)
    }

    /// A run finished and its sandbox is not kept: release the placement.
    pub fn release(&mut self, placement: &Placement) {
        self.scheduler.release(placement);
    }

    /// Tears down sandboxes whose keep-alive ran out by `now`: releases their
    /// reservations and returns them (for the executors to stop).
    pub fn expire(&mut self, now: Millis) -> Vec<WarmSandbox> {
        let gone = self.warm.expire(now);
        for sandbox in &gone {
            self.scheduler.release(&sandbox.placement);
        }
        gone
    }

    /// Realizes a pre-warm: places it (near its trigger, or at its warm-start
    /// hash) and registers the idle sandbox.
    pub fn prewarm(&mut self, action: &Prewarm, now: Millis) -> Result<(SandboxId, Placement), ScheduleError> {
        let placement = self.scheduler.place(&action.request())?;
        Ok((self.warm.on_prewarmed(&action.app, &action.component, placement, now), placement))
    }

    /// Pre-warms for the components a component of `app` running on `near`
    /// triggers (see [`WarmPool::prewarm_next`]); realize them with
    /// [`prewarm`](Self::prewarm).
    pub fn prewarm_next<'a>(
        &self,
        app: &str,
        targets: impl IntoIterator<Item = &'a PrewarmTarget>,
        near: NodeId,
        now: Millis,
    ) -> Vec<Prewarm> {
        self.warm.prewarm_next(app, targets, near, now)
    }

    /// Predicted pre-warms due at `now` (see
    /// [`InvocationPredictor::due_prewarms`]), minus those whose component
    /// already has a warm sandbox.
    pub fn due_prewarms(&mut self, now: Millis) -> Vec<Prewarm> {
        let mut due = self.predictor.due_prewarms(now);
        due.retain(|p| self.warm.idle_count(&p.app, &p.component, now) == 0);
        due
    }

    /// The wrapped scheduler.
    pub fn scheduler(&self) -> &S {
        &self.scheduler
    }

    /// The wrapped scheduler, mutably (placements made through it directly
    /// bypass the warm pool).
    pub fn scheduler_mut(&mut self) -> &mut S {
        &mut self.scheduler
    }

    /// The warm pool.
    pub fn warm(&self) -> &WarmPool {
        &self.warm
    }

    /// The predictor.
    pub fn predictor(&self) -> &InvocationPredictor {
        &self.predictor
    }

    /// The predictor, mutably (to [`register`](InvocationPredictor::register)
    /// applications' first components).
    pub fn predictor_mut(&mut self) -> &mut InvocationPredictor {
        &mut self.predictor
    }

    /// The wrapped scheduler, the warm pool and the predictor.
    pub fn into_parts(self) -> (S, WarmPool, InvocationPredictor) {
        (self.scheduler, self.warm, self.predictor)
    }
}
