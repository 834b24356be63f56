//! Invocation-history prediction for pre-warming first components.
//!
//! Per application, the predictor folds the inter-arrival times of its
//! invocations into an exponential moving average (α = 0.5 by default, as
//! DESIGN.md §7 uses for usage history) and predicts the next arrival at
//! `last arrival + EMA`. [`InvocationPredictor::due_prewarms`] emits one
//! [`Prewarm`] per first component of each application whose predicted
//! arrival is within the lead time — once per prediction: a new arrival makes
//! a new prediction. A prediction whose arrival lies more than the lead time
//! in the past is stale (the application went quiet) and emits nothing.
//!
//! Choose the lead shorter than the warm pool's keep-alive, or the
//! pre-warmed sandbox expires before the arrival it was started for.
//!
//! ```
//! use resc_core::resources::{Resources, MIB};
//! use resc_core::scheduler::Pool;
//! use resc_sched::predict::{InvocationPredictor, PredictorConfig};
//! use resc_sched::warm::PrewarmTarget;
//! use resc_sched::Millis;
//!
//! let mut p = InvocationPredictor::new(PredictorConfig { alpha: 0.5, lead: Millis(200) });
//! let entry = PrewarmTarget { component: "entry".into(), pool: Pool::Compute, demand: Resources::new(500, 256 * MIB) };
//! p.register("app", vec![entry]);
//! for t in [0, 1000, 2000] {
//!     p.record_arrival("app", Millis(t));
//! }
//! assert_eq!(p.next_expected_arrival("app"), Some(Millis(3000)));
//! assert!(p.due_prewarms(Millis(2700)).is_empty());
//! assert_eq!(p.due_prewarms(Millis(2800)).len(), 1);
//! assert!(p.due_prewarms(Millis(2900)).is_empty(), "once per prediction");
//! ```

use crate::time::Millis;
use crate::warm::{Prewarm, PrewarmReason, PrewarmTarget};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Predictor parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictorConfig {
    /// Weight of the newest inter-arrival time in the EMA, in (0, 1];
    /// values outside are clamped.
    pub alpha: f64,
    /// How long before a predicted arrival to pre-warm.
    pub lead: Millis,
}

impl Default for PredictorConfig {
    /// α = 0.5, lead 1 s.
    fn default() -> Self {
        PredictorConfig { alpha: 0.5, lead: Millis::from_secs(1) }
    }
}

#[derive(Debug, Clone, Default)]
struct History {
    name: String,
    first_components: Vec<PrewarmTarget>,
    last: Option<Millis>,
    ema_ms: Option<f64>,
    arrivals: u64,
    /// Bumped by every arrival: queued predictions of older versions are stale.
    version: u64,
}

impl History {
    fn next(&self) -> Option<Millis> {
        Some(self.last? + Millis(self.ema_ms?.round().max(0.0) as u64))
    }
}

/// Per-application invocation history and prediction. See the [module
/// documentation](self).
#[derive(Debug, Clone, Default)]
pub struct InvocationPredictor {
    config: PredictorConfig,
    apps: Vec<History>,
    index: BTreeMap<String, usize>,
    /// (pre-warm time, app, version), earliest first.
    due: BinaryHeap<Reverse<(Millis, usize, u64)>>,
}

impl InvocationPredictor {
    /// An empty history.
    pub fn new(config: PredictorConfig) -> InvocationPredictor {
        let alpha = if config.alpha.is_finite() { config.alpha.clamp(f64::MIN_POSITIVE, 1.0) } else { 0.5 };
        InvocationPredictor { config: PredictorConfig { alpha, ..config }, ..InvocationPredictor::default() }
    }

    /// The parameters.
    pub fn config(&self) -> &PredictorConfig {
        &self.config
    }

    fn slot(&mut self, app: &str) -> usize {
        if let Some(&i) = self.index.get(app) {
            return i;
        }
        self.apps.push(History { name: app.to_owned(), ..History::default() });
        self.index.insert(app.to_owned(), self.apps.len() - 1);
        self.apps.len() - 1
    }

    /// Declares `app`'s first components (what to pre-warm for it),
    /// replacing earlier ones. Its history is kept.
    pub fn register(&mut self, app: &str, first_components: Vec<PrewarmTarget>) {
        let i = self.slot(app);
        self.apps[i].first_components = first_components;
    }

    /// An invocation of `app` arrived at `now`. Arrivals must come in time
    /// order per application; an earlier one counts as a zero interval.
    pub fn record_arrival(&mut self, app: &str, now: Millis) {
        let alpha = self.config.alpha;
        let i = self.slot(app);
        let h = &mut self.apps[i];
        if let Some(last) = h.last {
            let interval = (now - last).0 as f64;
            h.ema_ms = Some(match h.ema_ms {
                Some(ema) => alpha * interval + (1.0 - alpha) * ema,
                None => interval,
            });
        }
        h.last = Some(h.last.map_or(now, |last| last.max(now)));
        h.arrivals += 1;
        h.version += 1;
        if let Some(next) = h.next() {
            let version = h.version;
            self.due.push(Reverse((next - self.config.lead, i, version)));
        }
    }

    /// When `app` is next expected: last arrival + EMA of inter-arrival
    /// times; `None` before two arrivals.
    pub fn next_expected_arrival(&self, app: &str) -> Option<Millis> {
        self.apps.get(*self.index.get(app)?)?.next()
    }

    /// The EMA of `app`'s inter-arrival times in milliseconds, if known.
    pub fn mean_interarrival_ms(&self, app: &str) -> Option<f64> {
        self.apps.get(*self.index.get(app)?)?.ema_ms
    }

    /// Invocations of `app` recorded.
    pub fn arrivals(&self, app: &str) -> u64 {
        self.index.get(app).and_then(|&i| self.apps.get(i)).map_or(0, |h| h.arrivals)
    }

    /// Pre-warms for the first components of every application whose
    /// predicted next arrival is within the lead time of `now`, each
    /// prediction at most once, in time order. Amortized O(log n) per
    /// prediction.
    pub fn due_prewarms(&mut self, now: Millis) -> Vec<Prewarm> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, i, version))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            let Some(h) = self.apps.get(i) else { continue };
            if h.version != version {
                continue;
            }
            let Some(next) = h.next() else { continue };
            if now > next + self.config.lead {
                continue; // stale: the application went quiet
            }
            out.extend(h.first_components.iter().map(|t| Prewarm {
                app: h.name.clone(),
                component: t.component.clone(),
                pool: t.pool,
                demand: t.demand,
                near: None,
                reason: PrewarmReason::Predicted,
                at: now,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resc_core::resources::Resources;
    use resc_core::scheduler::Pool;

    fn target() -> Vec<PrewarmTarget> {
        vec![PrewarmTarget { component: "e".into(), pool: Pool::Compute, demand: Resources::new(1, 1) }]
    }

    #[test]
    fn ema_follows_alpha() {
        let mut p = InvocationPredictor::new(PredictorConfig { alpha: 0.5, lead: Millis(0) });
        for t in [0, 100, 300] {
            p.record_arrival("a", Millis(t));
        }
        // EMA: 100, then 0.5·200 + 0.5·100 = 150.
        assert_eq!(p.mean_interarrival_ms("a"), Some(150.0));
        assert_eq!(p.next_expected_arrival("a"), Some(Millis(450)));
        assert_eq!(p.next_expected_arrival("b"), None);
        assert_eq!(p.arrivals("a"), 3);
    }

    #[test]
    fn stale_and_superseded_predictions_emit_nothing() {
        let mut p = InvocationPredictor::new(PredictorConfig { alpha: 1.0, lead: Millis(10) });
        p.register("a", target());
        p.record_arrival("a", Millis(0));
        p.record_arrival("a", Millis(100)); // predicts 200, due at 190
        p.record_arrival("a", Millis(150)); // predicts 200 again (α = 1: interval 50), supersedes
        assert_eq!(p.next_expected_arrival("a"), Some(Millis(200)));
        assert_eq!(p.due_prewarms(Millis(195)).len(), 1);
        p.record_arrival("a", Millis(400)); // predicts 650, due 640
        assert!(p.due_prewarms(Millis(661)).is_empty(), "stale: more than the lead past the arrival");
        // An unregistered app has nothing to pre-warm.
        p.record_arrival("b", Millis(0));
        p.record_arrival("b", Millis(10));
        assert!(p.due_prewarms(Millis(20)).is_empty());
    }
}
