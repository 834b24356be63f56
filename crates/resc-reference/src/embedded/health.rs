//! Node heartbeats: each live node beats every [`BEAT`]; the platform
//! declares a node dead when it has missed [`MISSED`] beats in a row, and
//! treats everything on it as lost. A dead node restarts empty once its
//! death has been handled, as a rebooted node would.
//!
//! In the embedded platform nodes die only by injected faults, so the
//! heartbeat thread runs only when a fault plan is set.

use resc_core::ids::NodeId;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How often a live node beats.
pub(crate) const BEAT: Duration = Duration::from_millis(10);
/// Beats a node may miss before it counts as dead.
pub(crate) const MISSED: u32 = 3;

struct Node {
    /// Milliseconds since the epoch at its last beat.
    last_beat_ms: AtomicU64,
    /// Whether it is up (beats); a fault clears it.
    up: AtomicBool,
}

/// The nodes' liveness as the platform sees it.
pub(crate) struct Health {
    epoch: Instant,
    nodes: BTreeMap<NodeId, Node>,
}

impl Health {
    /// Every node up, beating from a thread of its own for as long as the
    /// returned health lives.
    pub(crate) fn start(nodes: impl IntoIterator<Item = NodeId>) -> Arc<Health> {
        let health = Arc::new(Health {
            epoch: Instant::now(),
            nodes: nodes
                .into_iter()
                .map(|id| (id, Node { last_beat_ms: AtomicU64::new(0), up: AtomicBool::new(true) }))
                .collect(),
        });
        let weak: Weak<Health> = Arc::downgrade(&health);
        let _ = std::thread::Builder::new().name("resc-heartbeat".into()).spawn(move || loop {
            let Some(health) = weak.upgrade() else { return };
            health.beat();
            drop(health);
            std::thread::sleep(BEAT);
        });
        health
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Every node that is up beats.
    fn beat(&self) {
        let now = self.now_ms();
        for node in self.nodes.values().filter(|n| n.up.load(Ordering::Acquire)) {
            node.last_beat_ms.store(now, Ordering::Release);
        }
    }

    /// A node goes down: it stops beating.
    pub(crate) fn kill(&self, node: NodeId) {
        if let Some(n) = self.nodes.get(&node) {
            n.up.store(false, Ordering::Release);
        }
    }

    /// Nodes that missed [`MISSED`] beats: declared dead, and restarted
    /// (empty) so that they beat again.
    pub(crate) fn declare_dead(&self) -> Vec<NodeId> {
        let limit = BEAT.as_millis() as u64 * u64::from(MISSED);
        let now = self.now_ms();
        let mut dead = Vec::new();
        for (&id, node) in &self.nodes {
            if now.saturating_sub(node.last_beat_ms.load(Ordering::Acquire)) > limit && !node.up.load(Ordering::Acquire)
            {
                dead.push(id);
                node.last_beat_ms.store(now, Ordering::Release);
                node.up.store(true, Ordering::Release);
            }
        }
        dead
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_that_stops_beating_is_declared_dead_once_and_restarts() {
        let health = Health::start([NodeId(0), NodeId(1)]);
        assert!(health.declare_dead().is_empty(), "beating nodes are alive");
        health.kill(NodeId(1));
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut dead = Vec::new();
        while dead.is_empty() && Instant::now() < deadline {
            std::thread::sleep(BEAT);
            dead = health.declare_dead();
        }
        assert_eq!(dead, [NodeId(1)]);
        assert!(health.declare_dead().is_empty(), "declared once, then restarted");
    }
}
