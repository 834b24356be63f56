//! Keep-alive and pre-warming, simulated with a virtual clock and checked
//! against a simple model.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resc_core::ids::NodeId;
use resc_core::resources::{Resources, MIB};
use resc_core::scheduler::{Placement, PlacementRequest, Pool};
use resc_sched::predict::PredictorConfig;
use resc_sched::sim::mixed_cluster;
use resc_sched::warm::{PrewarmTarget, WarmConfig};
use resc_sched::warm_sched::WarmScheduler;
use resc_sched::{Millis, SchedConfig, TwoLevelScheduler};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

const TTL: Millis = Millis(10_000);
const DEMAND: Resources = Resources::new(250, 256 * MIB);

fn request(app: usize, stage: usize, from: Option<NodeId>) -> PlacementRequest {
    PlacementRequest {
        app: format!("app{app}"),
        component: format!("c{stage}"),
        pool: Pool::Compute,
        demand: DEMAND,
        first_in_graph: stage == 0,
        triggered_from: from,
        peers_on: Vec::new(),
    }
}

/// The model: at most one idle sandbox per (app, component), since each
/// application's invocations run one after another.
#[derive(Clone, Copy, Default)]
struct Slot {
    /// Idle since, warm until.
    idle: Option<(Millis, Millis)>,
    prewarmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Start,
    Finish,
}

/// Events by (time, sequence): what, application, stage.
type Queue = BinaryHeap<Reverse<(Millis, u64, Event, usize, usize)>>;

/// 40 applications, each a chain of 3 components, invoked one invocation
/// at a time with gaps around the keep-alive; each component pre-warms the
/// next when it starts. Every start's warm/cold outcome, the hit and miss
/// counts, the pre-warm hits, the idle GB·s and the reservations held (running
/// plus warm = what the scheduler has reserved) match the model.
#[test]
fn keep_alive_and_chain_prewarming_match_the_model() {
    const APPS: usize = 40;
    const STAGES: usize = 3;
    const INVOCATIONS: usize = 60;
    let cluster = mixed_cluster(4, 32);
    let inner = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(2)).expect("valid cluster");
    let mut s = WarmScheduler::new(inner, WarmConfig { keep_alive: TTL }, PredictorConfig::default());
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let mut model = vec![[Slot::default(); STAGES]; APPS];
    let mut events: Queue = BinaryHeap::new();
    let mut seq = 0u64;
    for app in 0..APPS {
        events.push(Reverse((Millis(rng.random_range(0..20_000)), seq, Event::Start, app, 0)));
        seq += 1;
    }
    let mut running: Vec<[Option<Placement>; STAGES]> = vec![[None; STAGES]; APPS];
    let mut invocations = vec![0usize; APPS];
    let (mut hits, mut misses, mut prewarm_hits, mut idle_byte_ms) = (0u64, 0u64, 0u64, 0u128);
    let mut now = Millis::ZERO;
    while let Some(Reverse((t, _, event, app, stage))) = events.pop() {
        now = t;
        // Keep-alive runs out: the model collects what the scheduler does.
        s.expire(t);
        for slot in model.iter_mut().flatten() {
            if let Some((since, until)) = slot.idle {
                if until <= t {
                    idle_byte_ms += u128::from(DEMAND.memory_bytes) * u128::from((t - since).0);
                    slot.idle = None;
                }
            }
        }
        match event {
            Event::Start => {
                let from = stage.checked_sub(1).and_then(|prev| running[app][prev].map(|p| p.node));
                let start = s.start(&request(app, stage, from), t).expect("the cluster has room");
                let slot = &mut model[app][stage];
                let expected = slot.idle.is_some_and(|(_, until)| t < until);
                assert_eq!(start.is_warm(), expected, "app{app}/c{stage} at {t}");
                if expected {
                    hits += 1;
                    prewarm_hits += u64::from(slot.prewarmed);
                    let (since, _) = slot.idle.unwrap_or_default();
                    idle_byte_ms += u128::from(DEMAND.memory_bytes) * u128::from((t - since).0);
                } else {
                    misses += 1;
                }
                slot.idle = None;
                running[app][stage] = Some(start.placement);
                // Pre-warm the next component unless it is warm.
                if stage + 1 < STAGES {
                    let target =
                        PrewarmTarget { component: format!("c{}", stage + 1), pool: Pool::Compute, demand: DEMAND };
                    let actions = s.prewarm_next(&format!("app{app}"), [&target], start.placement.node, t);
                    let next = &mut model[app][stage + 1];
                    let warm = next.idle.is_some_and(|(_, until)| t < until);
                    assert_eq!(actions.len(), usize::from(!warm), "app{app}/c{} pre-warm at {t}", stage + 1);
                    for action in &actions {
                        let (_, placement) = s.prewarm(action, t).expect("the cluster has room");
                        assert_eq!(placement.rack, start.placement.rack, "pre-warmed in the triggering rack");
                        *next = Slot { idle: Some((t, t + TTL)), prewarmed: true };
                    }
                }
                let duration = Millis(rng.random_range(10..200));
                events.push(Reverse((t + duration, seq, Event::Finish, app, stage)));
                seq += 1;
            }
            Event::Finish => {
                let placement = running[app][stage].take().expect("started");
                s.finish(&format!("app{app}"), &format!("c{stage}"), placement, t);
                model[app][stage] = Slot { idle: Some((t, t + TTL)), prewarmed: false };
                if stage + 1 < STAGES {
                    events.push(Reverse((t, seq, Event::Start, app, stage + 1)));
                } else {
                    invocations[app] += 1;
                    if invocations[app] < INVOCATIONS {
                        // Gaps from well under to well over the keep-alive.
                        let gap = Millis(rng.random_range(0..3 * TTL.0));
                        events.push(Reverse((t + gap, seq, Event::Start, app, 0)));
                    }
                }
                seq += 1;
            }
        }
        // Warm sandboxes are allocated: reserved = running + idle.
        let running_bytes: u64 = running.iter().flatten().flatten().map(|p| p.demand.memory_bytes).sum();
        let used = s.scheduler().totals(Pool::Compute).used_bytes();
        assert_eq!(used, running_bytes + s.warm().held_totals().1, "at {t}");
    }
    // Collect the last warm sandboxes.
    let end = now + TTL;
    let gone = s.expire(end);
    let mut left = 0;
    for slot in model.iter().flatten() {
        if let Some((since, _)) = slot.idle {
            left += 1;
            idle_byte_ms += u128::from(DEMAND.memory_bytes) * u128::from((end - since).0);
        }
    }
    assert_eq!(gone.len(), left, "the last sandboxes expire");
    assert!(s.warm().is_empty());
    assert_eq!(s.scheduler().totals(Pool::Compute).used_bytes(), 0, "everything released");
    let stats = *s.warm().stats();
    assert_eq!((stats.hits, stats.misses, stats.prewarm_hits), (hits, misses, prewarm_hits));
    assert_eq!(hits + misses, (APPS * STAGES * INVOCATIONS) as u64);
    assert_eq!(stats.idle_byte_ms, idle_byte_ms);
    assert_eq!(s.warm().held_byte_ms(end), idle_byte_ms);
    // Non-first components are always warm (kept or pre-warmed); first ones
    // only when the gap is within the keep-alive: roughly a third of them.
    assert!(misses < (APPS * INVOCATIONS) as u64, "{misses} misses");
    assert!(prewarm_hits > 0 && hits > misses, "{stats:?}");
}

/// A strictly periodic application whose period exceeds the keep-alive:
/// keep-alive never helps, and the predictor (exact after two arrivals)
/// pre-warms the first component before every later arrival: `n − 2` warm
/// hits, all on pre-warmed sandboxes; the pre-warm after the last arrival
/// expires unused.
#[test]
fn predicted_prewarms_cover_a_periodic_application() {
    const PERIOD: u64 = 30_000;
    const N: u64 = 12;
    let cluster = mixed_cluster(2, 32);
    let inner = TwoLevelScheduler::new(&cluster, SchedConfig::default()).expect("valid cluster");
    let mut s =
        WarmScheduler::new(inner, WarmConfig { keep_alive: TTL }, PredictorConfig { alpha: 0.5, lead: Millis(1_000) });
    let entry = PrewarmTarget { component: "c0".into(), pool: Pool::Compute, demand: DEMAND };
    s.predictor_mut().register("app0", vec![entry]);
    let mut warm_nodes = Vec::new();
    let mut t = 0;
    while t <= N * PERIOD + 2 * TTL.0 {
        let now = Millis(t);
        s.expire(now);
        for action in s.due_prewarms(now) {
            s.prewarm(&action, now).expect("room");
        }
        if t % PERIOD == 0 && t / PERIOD < N {
            let start = s.start(&request(0, 0, None), now).expect("room");
            if start.is_warm() {
                warm_nodes.push(start.placement.node);
            }
            s.finish("app0", "c0", start.placement, now + Millis(100));
        }
        t += 100;
    }
    let stats = *s.warm().stats();
    assert_eq!(stats.hits, N - 2);
    assert_eq!(stats.prewarm_hits, N - 2);
    assert_eq!(stats.prewarmed, N - 1, "one pre-warm per prediction, the last unused");
    assert_eq!(stats.expired, N + 1, "every kept sandbox and the unused pre-warm");
    assert_eq!(s.predictor().next_expected_arrival("app0"), Some(Millis(N * PERIOD)));
    // Predicted pre-warms go where the first component's hash sends it.
    assert!(warm_nodes.windows(2).all(|w| w[0] == w[1]), "{warm_nodes:?}");
}
