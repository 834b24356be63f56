//! Warm sandboxes: keep-alive and pre-warming as a pure state machine.
//!
//! A *warm sandbox* is an idle execution environment of one (application,
//! component) on one node, kept after a run ([`WarmPool::on_finish`]) or
//! started ahead of need ([`WarmPool::on_prewarmed`]). It **holds its
//! placement's reservation** while idle: warm sandboxes are allocated
//! resources, and [`WarmPool::held`] / [`WarmPool::held_byte_ms`] expose them so
//! metering counts them honestly. A warm sandbox lives until it is taken by
//! a run ([`WarmPool::take`], a *warm hit*) or its keep-alive runs out
//! ([`WarmPool::expire`] returns it to tear down; its reservation must then be
//! released — [`WarmScheduler`](crate::warm_sched::WarmScheduler) does both).
//!
//! Time is a value ([`Millis`]); a sandbox idle since `t` is warm at `now`
//! while `now < t + keep_alive`.
//!
//! Pre-warming follows the paper (§5.1): when a component starts, the
//! components it triggers are pre-warmed ([`WarmPool::prewarm_next`]), and
//! the first component of a graph is pre-warmed from the invocation history
//! ([`InvocationPredictor`](crate::predict::InvocationPredictor)). Both emit
//! [`Prewarm`] actions; the caller (or the `WarmScheduler`) places them and
//! registers the result.
//!
//! ```
//! use resc_core::ids::{NodeId, RackId};
//! use resc_core::resources::{Resources, MIB};
//! use resc_core::scheduler::{Placement, Pool};
//! use resc_sched::warm::{WarmConfig, WarmPool};
//! use resc_sched::Millis;
//!
//! let mut warm = WarmPool::new(WarmConfig { keep_alive: Millis(10_000) });
//! let placement = Placement { node: NodeId(3), rack: RackId(0), pool: Pool::Compute, demand: Resources::new(500, 256 * MIB) };
//! warm.on_finish("shop", "checkout", placement, Millis(1_000));
//! assert_eq!(warm.held().memory_bytes, 256 * MIB);
//! let hit = warm.take("shop", "checkout", &[], Millis(5_000)).expect("still warm");
//! assert_eq!(hit.placement.node, NodeId(3));
//! assert!(warm.take("shop", "checkout", &[], Millis(5_001)).is_none()); // a miss
//! assert_eq!((warm.stats().hits, warm.stats().misses), (1, 1));
//! ```

use crate::time::Millis;
use resc_core::graph::ResourceGraph;
use resc_core::ids::{ComputeId, NodeId};
use resc_core::resources::Resources;
use resc_core::scheduler::{Placement, PlacementRequest, Pool};
use resc_core::size_class::SizeClasses;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Identity of a warm sandbox, unique within its [`WarmPool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SandboxId(pub u64);

/// How a warm sandbox came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarmOrigin {
    /// Kept alive after a run.
    Finished,
    /// Started ahead of need.
    Prewarmed,
}

/// An idle, warm sandbox and the reservation it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmSandbox {
    /// Its identity.
    pub id: SandboxId,
    /// The application.
    pub app: String,
    /// The component it runs.
    pub component: String,
    /// Where it is and what it holds.
    pub placement: Placement,
    /// Since when it has been idle (and holding its reservation idle).
    pub idle_since: Millis,
    /// When its keep-alive runs out.
    pub expires_at: Millis,
    /// Kept after a run, or pre-warmed.
    pub origin: WarmOrigin,
}

/// Keep-alive policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmConfig {
    /// How long an idle sandbox is kept warm.
    pub keep_alive: Millis,
}

impl Default for WarmConfig {
    /// Ten minutes, as common FaaS platforms do.
    fn default() -> Self {
        WarmConfig { keep_alive: Millis::from_secs(600) }
    }
}

/// Counters of a [`WarmPool`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarmStats {
    /// Takes that found a warm sandbox.
    pub hits: u64,
    /// Of the hits, those on a pre-warmed sandbox.
    pub prewarm_hits: u64,
    /// Takes that found none (cold starts).
    pub misses: u64,
    /// Sandboxes kept alive after a run.
    pub kept: u64,
    /// Sandboxes registered as pre-warmed.
    pub prewarmed: u64,
    /// Sandboxes whose keep-alive ran out.
    pub expired: u64,
    /// Idle memory held by warm sandboxes that are gone (taken or expired),
    /// in byte·milliseconds; see [`WarmPool::held_byte_ms`] for the total.
    pub idle_byte_ms: u128,
    /// Idle CPU likewise, in millicore·milliseconds.
    pub idle_millicore_ms: u128,
}

/// What to pre-warm: a component of an application, its pool and demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrewarmTarget {
    /// The component.
    pub component: String,
    /// Its pool.
    pub pool: Pool,
    /// What one physical instance needs.
    pub demand: Resources,
}

impl PrewarmTarget {
    /// The target for compute component `id` of `graph`: the compute pool,
    /// its millicores and one compute slot of local memory.
    pub fn compute(graph: &ResourceGraph, id: ComputeId, classes: &SizeClasses) -> PrewarmTarget {
        let c = graph.compute(id);
        PrewarmTarget {
            component: c.name.clone(),
            pool: Pool::Compute,
            demand: Resources::new(c.millicores, classes.compute_slot()),
        }
    }

    /// The targets for the components `started` triggers in `graph`.
    pub fn triggered_by(graph: &ResourceGraph, started: ComputeId, classes: &SizeClasses) -> Vec<PrewarmTarget> {
        graph.triggers(started).iter().map(|&id| Self::compute(graph, id, classes)).collect()
    }

    /// The targets for the entry points (first components) of `graph`.
    pub fn entry_points(graph: &ResourceGraph, classes: &SizeClasses) -> Vec<PrewarmTarget> {
        graph.entry_points().map(|id| Self::compute(graph, id, classes)).collect()
    }
}

/// Why a pre-warm was emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PrewarmReason {
    /// A component that triggers it has started.
    Triggered,
    /// The invocation history predicts the application's next arrival.
    Predicted,
}

/// An action: start a sandbox for `component` of `app` ahead of need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prewarm {
    /// The application.
    pub app: String,
    /// The component.
    pub component: String,
    /// Its pool.
    pub pool: Pool,
    /// What it needs.
    pub demand: Resources,
    /// Where the triggering component runs (rack locality), if any.
    pub near: Option<NodeId>,
    /// Why.
    pub reason: PrewarmReason,
    /// When it was emitted.
    pub at: Millis,
}

impl Prewarm {
    /// The placement request that realizes it: near the triggering node for
    /// a triggered pre-warm, at the warm-start hash for a predicted one.
    pub fn request(&self) -> PlacementRequest {
        PlacementRequest {
            app: self.app.clone(),
            component: self.component.clone(),
            pool: self.pool,
            demand: self.demand,
            first_in_graph: self.reason == PrewarmReason::Predicted,
            triggered_from: self.near,
            peers_on: Vec::new(),
        }
    }
}

/// Warm sandboxes per (application, component) with keep-alive. See the
/// [module documentation](self).
#[derive(Debug, Clone, Default)]
pub struct WarmPool {
    config: WarmConfig,
    sandboxes: BTreeMap<u64, WarmSandbox>,
    /// Idle sandbox ids per app and component, oldest first.
    by_key: BTreeMap<String, BTreeMap<String, Vec<u64>>>,
    expiry: BinaryHeap<Reverse<(Millis, u64)>>,
    next_id: u64,
    held_millicores: u64,
    held_bytes: u64,
    /// Σ bytes × idle_since and Σ millicores × idle_since over idle sandboxes.
    weighted_since: (u128, u128),
    stats: WarmStats,
}

impl WarmPool {
    /// An empty pool.
    pub fn new(config: WarmConfig) -> WarmPool {
        WarmPool { config, ..WarmPool::default() }
    }

    /// The keep-alive policy.
    pub fn config(&self) -> &WarmConfig {
        &self.config
    }

    /// The counters.
    pub fn stats(&self) -> &WarmStats {
        &self.stats
    }

    /// A run of `component` of `app` finished with `placement` at `now`: its
    /// sandbox stays warm, holding the placement, until `now + keep_alive`.
    pub fn on_finish(&mut self, app: &str, component: &str, placement: Placement, now: Millis) -> SandboxId {
        self.stats.kept += 1;
        self.insert(app, component, placement, now, WarmOrigin::Finished)
    }

    /// A pre-warmed sandbox of `component` of `app` is ready on `placement`
    /// at `now`; it is warm until `now + keep_alive`.
    pub fn on_prewarmed(&mut self, app: &str, component: &str, placement: Placement, now: Millis) -> SandboxId {
        self.stats.prewarmed += 1;
        self.insert(app, component, placement, now, WarmOrigin::Prewarmed)
    }

    fn insert(
        &mut self,
        app: &str,
        component: &str,
        placement: Placement,
        now: Millis,
        origin: WarmOrigin,
    ) -> SandboxId {
        let id = self.next_id;
        self.next_id += 1;
        let expires_at = now + self.config.keep_alive;
        let sandbox = WarmSandbox {
            id: SandboxId(id),
            app: app.to_owned(),
            component: component.to_owned(),
            placement,
            idle_since: now,
            expires_at,
            origin,
        };
        self.held_millicores += u64::from(placement.demand.millicores);
        self.held_bytes += placement.demand.memory_bytes;
        self.weighted_since.0 += u128::from(placement.demand.memory_bytes) * u128::from(now.0);
        self.weighted_since.1 += u128::from(placement.demand.millicores) * u128::from(now.0);
        self.sandboxes.insert(id, sandbox);
        let ids = match self.by_key.get_mut(app) {
            Some(components) => components,
            None => self.by_key.entry(app.to_owned()).or_default(),
        };
        match ids.get_mut(component) {
            Some(list) => list.push(id),
            None => {
                ids.insert(component.to_owned(), vec![id]);
            }
        }
        self.expiry.push(Reverse((expires_at, id)));
        SandboxId(id)
    }

    /// Takes a warm sandbox of `component` of `app` for a run at `now`: one
    /// on the first node of `prefer` that has one, else the most recently
    /// idle one. Counts a hit or a miss.
    pub fn take(&mut self, app: &str, component: &str, prefer: &[NodeId], now: Millis) -> Option<WarmSandbox> {
        self.take_where(app, component, prefer, now, |_| true)
    }

    /// As [`take`](Self::take) for a placement request: only a sandbox of
    /// the request's pool whose reservation covers the request's demand, and
    /// preferring the request's peers' nodes, then its triggering node.
    pub fn take_for(&mut self, request: &PlacementRequest, now: Millis) -> Option<WarmSandbox> {
        let (pool, demand) = (request.pool, request.demand);
        let fits = move |s: &WarmSandbox| s.placement.pool == pool && crate::config::fits(&s.placement.demand, &demand);
        if request.triggered_from.is_none() {
            return self.take_where(&request.app, &request.component, &request.peers_on, now, fits);
        }
        let mut prefer = request.peers_on.clone();
        prefer.extend(request.triggered_from);
        self.take_where(&request.app, &request.component, &prefer, now, fits)
    }

    fn take_where(
        &mut self,
        app: &str,
        component: &str,
        prefer: &[NodeId],
        now: Millis,
        usable: impl Fn(&WarmSandbox) -> bool,
    ) -> Option<WarmSandbox> {
        let found = self.find(app, component, prefer, now, usable);
        let Some((pos, id)) = found else {
            self.stats.misses += 1;
            return None;
        };
        self.stats.hits += 1;
        let sandbox = self.remove(app, component, pos, id, now)?;
        if sandbox.origin == WarmOrigin::Prewarmed {
            self.stats.prewarm_hits += 1;
        }
        Some(sandbox)
    }

    /// (position in the key's list, id) of the sandbox to take.
    fn find(
        &self,
        app: &str,
        component: &str,
        prefer: &[NodeId],
        now: Millis,
        usable: impl Fn(&WarmSandbox) -> bool,
    ) -> Option<(usize, u64)> {
        let ids = self.by_key.get(app)?.get(component)?;
        let live = |id: &u64| self.sandboxes.get(id).filter(|s| now < s.expires_at && usable(s));
        for node in prefer {
            if let Some(found) =
                ids.iter().enumerate().rev().find(|(_, id)| live(id).is_some_and(|s| s.placement.node == *node))
            {
                return Some((found.0, *found.1));
            }
        }
        ids.iter().enumerate().rev().find(|(_, id)| live(id).is_some()).map(|(pos, id)| (pos, *id))
    }

    /// Removes an idle sandbox, settling its idle cost up to `now`.
    fn remove(&mut self, app: &str, component: &str, pos: usize, id: u64, now: Millis) -> Option<WarmSandbox> {
        if let Some(components) = self.by_key.get_mut(app) {
            if let Some(ids) = components.get_mut(component) {
                if ids.get(pos) == Some(&id) {
                    ids.remove(pos);
                } else {
                    ids.retain(|&i| i != id);
                }
                if ids.is_empty() {
                    components.remove(component);
                }
            }
            if components.is_empty() {
                self.by_key.remove(app);
            }
        }
        let sandbox = self.sandboxes.remove(&id)?;
        let (bytes, millicores) = (sandbox.placement.demand.memory_bytes, sandbox.placement.demand.millicores);
        self.held_bytes -= bytes;
        self.held_millicores -= u64::from(millicores);
        self.weighted_since.0 -= u128::from(bytes) * u128::from(sandbox.idle_since.0);
        self.weighted_since.1 -= u128::from(millicores) * u128::from(sandbox.idle_since.0);
        let idle = u128::from((now - sandbox.idle_since).0);
        self.stats.idle_byte_ms += u128::from(bytes) * idle;
        self.stats.idle_millicore_ms += u128::from(millicores) * idle;
        Some(sandbox)
    }

    /// Removes and returns every sandbox whose keep-alive has run out by
    /// `now` (`expires_at <= now`), in expiry order. Their reservations are
    /// still held: the caller tears them down and releases the placements.
    /// Idle cost is counted up to `now`, when the reservation is given back.
    pub fn expire(&mut self, now: Millis) -> Vec<WarmSandbox> {
        let mut out = Vec::new();
        while let Some(&Reverse((at, id))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            let Some(sandbox) = self.sandboxes.get(&id) else {
                continue; // taken earlier
            };
            let (app, component) = (sandbox.app.clone(), sandbox.component.clone());
            if let Some(s) = self.remove(&app, &component, usize::MAX, id, now) {
                self.stats.expired += 1;
                out.push(s);
            }
        }
        if self.expiry.len() > 2 * self.sandboxes.len() + 1024 {
            self.expiry = self.sandboxes.values().map(|s| Reverse((s.expires_at, s.id.0))).collect();
        }
        out
    }

    /// Pre-warm actions for the `targets` a component of `app` running on
    /// `near` triggers, at `now`: one per target that has no warm sandbox.
    pub fn prewarm_next<'a>(
        &self,
        app: &str,
        targets: impl IntoIterator<Item = &'a PrewarmTarget>,
        near: NodeId,
        now: Millis,
    ) -> Vec<Prewarm> {
        targets
            .into_iter()
            .filter(|t| self.idle_count(app, &t.component, now) == 0)
            .map(|t| Prewarm {
                app: app.to_owned(),
                component: t.component.clone(),
                pool: t.pool,
                demand: t.demand,
                near: Some(near),
                reason: PrewarmReason::Triggered,
                at: now,
            })
            .collect()
    }

    /// Warm (not expired at `now`) sandboxes of `component` of `app`.
    pub fn idle_count(&self, app: &str, component: &str, now: Millis) -> usize {
        self.by_key
            .get(app)
            .and_then(|c| c.get(component))
            .map_or(0, |ids| ids.iter().filter(|id| self.sandboxes.get(id).is_some_and(|s| now < s.expires_at)).count())
    }

    /// Every idle sandbox (expired ones not yet collected included), by id.
    pub fn idle(&self) -> impl Iterator<Item = &WarmSandbox> + '_ {
        self.sandboxes.values()
    }

    /// Number of idle sandboxes held (expired ones not yet collected included).
    pub fn len(&self) -> usize {
        self.sandboxes.len()
    }

    /// Whether no sandbox is held.
    pub fn is_empty(&self) -> bool {
        self.sandboxes.is_empty()
    }

    /// Resources held by idle sandboxes right now (saturating to
    /// [`Resources`]' range; see [`held_totals`](Self::held_totals)).
    pub fn held(&self) -> Resources {
        Resources::new(u32::try_from(self.held_millicores).unwrap_or(u32::MAX), self.held_bytes)
    }

    /// (millicores, bytes) held by idle sandboxes right now, unsaturated.
    pub fn held_totals(&self) -> (u64, u64) {
        (self.held_millicores, self.held_bytes)
    }

    /// Resources idle sandboxes hold on `node` (O(idle sandboxes)).
    pub fn held_on(&self, node: NodeId) -> Resources {
        self.sandboxes
            .values()
            .filter(|s| s.placement.node == node)
            .fold(Resources::ZERO, |a, s| a + s.placement.demand)
    }

    /// Idle memory held by warm sandboxes from the start up to `now`, in
    /// byte·milliseconds: gone sandboxes plus those still idle (counted up to
    /// `now`). This is what keep-alive and pre-warming cost. O(1).
    pub fn held_byte_ms(&self, now: Millis) -> u128 {
        let live = u128::from(self.held_bytes) * u128::from(now.0);
        self.stats.idle_byte_ms + live.saturating_sub(self.weighted_since.0)
    }

    /// Idle CPU likewise, in millicore·milliseconds. O(1).
    pub fn held_millicore_ms(&self, now: Millis) -> u128 {
        let live = u128::from(self.held_millicores) * u128::from(now.0);
        self.stats.idle_millicore_ms + live.saturating_sub(self.weighted_since.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use resc_core::ids::RackId;
    use resc_core::resources::MIB;

    fn at(node: u32) -> Placement {
        Placement { node: NodeId(node), rack: RackId(0), pool: Pool::Compute, demand: Resources::new(100, 256 * MIB) }
    }

    #[test]
    fn keep_alive_boundary_and_preference() {
        let mut w = WarmPool::new(WarmConfig { keep_alive: Millis(100) });
        w.on_finish("a", "c", at(1), Millis(0));
        w.on_finish("a", "c", at(2), Millis(10));
        w.on_finish("a", "c", at(3), Millis(20));
        assert_eq!(w.idle_count("a", "c", Millis(99)), 3);
        assert_eq!(w.idle_count("a", "c", Millis(100)), 2);
        // Preference wins over recency.
        assert_eq!(w.take("a", "c", &[NodeId(9), NodeId(2)], Millis(50)).map(|s| s.placement.node), Some(NodeId(2)));
        // Otherwise the most recently idle.
        assert_eq!(w.take("a", "c", &[], Millis(50)).map(|s| s.placement.node), Some(NodeId(3)));
        // Node 1's expired at 100: not taken, collected by expire.
        assert!(w.take("a", "c", &[], Millis(100)).is_none());
        let gone = w.expire(Millis(100));
        assert_eq!(gone.iter().map(|s| s.placement.node).collect::<Vec<_>>(), vec![NodeId(1)]);
        assert!(w.is_empty());
        assert_eq!(w.held(), Resources::ZERO);
        let s = w.stats();
        assert_eq!((s.hits, s.misses, s.kept, s.expired), (2, 1, 3, 1));
        // Idle cost: 256 MiB for 100 ms (node 1) + 40 ms (node 2) + 30 ms (node 3).
        assert_eq!(w.held_byte_ms(Millis(1000)), u128::from(256 * MIB) * 170);
    }

    #[test]
    fn held_cost_counts_live_sandboxes_to_now() {
        let mut w = WarmPool::new(WarmConfig { keep_alive: Millis(1000) });
        w.on_prewarmed("a", "c", at(1), Millis(10));
        assert_eq!(w.held_byte_ms(Millis(30)), u128::from(256 * MIB) * 20);
        assert_eq!(w.held_millicore_ms(Millis(30)), 100 * 20);
        assert_eq!(w.held_on(NodeId(1)), at(1).demand);
        assert_eq!(w.held_on(NodeId(2)), Resources::ZERO);
        let hit = w.take("a", "c", &[], Millis(30)).expect("warm");
        assert_eq!(hit.origin, WarmOrigin::Prewarmed);
        assert_eq!(w.stats().prewarm_hits, 1);
        assert_eq!(w.held_byte_ms(Millis(99)), u128::from(256 * MIB) * 20);
    }

    #[test]
    fn take_for_checks_pool_and_size() {
        let mut w = WarmPool::new(WarmConfig::default());
        w.on_finish("a", "c", at(1), Millis(0));
        let mut request = Prewarm {
            app: "a".into(),
            component: "c".into(),
            pool: Pool::Balanced,
            demand: Resources::new(100, 128 * MIB),
            near: None,
            reason: PrewarmReason::Triggered,
            at: Millis(0),
        }
        .request();
        assert!(w.take_for(&request, Millis(1)).is_none(), "another pool");
        request.pool = Pool::Compute;
        request.demand = Resources::new(100, 512 * MIB);
        assert!(w.take_for(&request, Millis(1)).is_none(), "too small");
        request.demand = Resources::new(100, 200 * MIB);
        request.triggered_from = Some(NodeId(1));
        assert!(w.take_for(&request, Millis(1)).is_some());
    }

    #[test]
    fn prewarm_next_skips_warm_targets() {
        let mut w = WarmPool::new(WarmConfig::default());
        w.on_finish("a", "warm", at(1), Millis(0));
        let targets = [
            PrewarmTarget { component: "warm".into(), pool: Pool::Compute, demand: Resources::new(100, 256 * MIB) },
            PrewarmTarget { component: "cold".into(), pool: Pool::Compute, demand: Resources::new(100, 256 * MIB) },
        ];
        let actions = w.prewarm_next("a", &targets, NodeId(4), Millis(5));
        assert_eq!(actions.len(), 1);
        assert_eq!(actions[0].component, "cold");
        assert_eq!(actions[0].request().triggered_from, Some(NodeId(4)));
    }
}
