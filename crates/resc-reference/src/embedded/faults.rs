//! Fault injection through the traits (redb's pattern): a plan of failures
//! the embedded platform applies as it starts compute instances.
//!
//! A killed compute instance gets a transport that fails after a number of
//! operations (so it dies mid-run if it touches memory), and its sandbox's
//! exit reports it lost, whatever it returned. A killed memory component has
//! its physical components freed on their nodes: its accessors' operations
//! fail, and the platform hears of it as from a missed heartbeat. A killed
//! node takes both with it: the memory it holds and the instances on it.

use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// One failure, applied when a compute instance starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Fault {
    /// The starting instance dies after `after_ops` one-sided operations
    /// (at its end, if it makes fewer).
    KillCompute {
        /// Operations it completes first.
        after_ops: u64,
    },
    /// One memory component in use loses its physical components; `pick`
    /// chooses which (modulo those in use). Nothing happens if none is.
    KillMemory {
        /// Which of the components in use.
        pick: usize,
    },
    /// The starting instance's node dies: every instance running there and
    /// every physical memory component it holds.
    KillNode,
}

/// How many faults of each kind were applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FaultCounts {
    /// Compute instances killed.
    pub compute: u64,
    /// Memory components killed.
    pub memory: u64,
    /// Nodes killed.
    pub nodes: u64,
}

impl FaultCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.compute + self.memory + self.nodes
    }
}

/// Which fault, if any, each compute start brings: drawn at random from a
/// seed, or listed in order.
#[derive(Debug)]
pub struct FaultPlan {
    source: Mutex<Source>,
    compute: AtomicU64,
    memory: AtomicU64,
    nodes: AtomicU64,
}

#[derive(Debug)]
enum Source {
    Random { rng: Box<rand::rngs::StdRng>, probability: f64, budget: u64 },
    Listed(std::collections::VecDeque<Option<Fault>>),
}

impl FaultPlan {
    /// Each start faults with `probability`, the kind and its parameters
    /// drawn from `seed`, until `budget` faults have been drawn.
    pub fn random(seed: u64, probability: f64, budget: u64) -> FaultPlan {
        let rng = Box::new(rand::rngs::StdRng::seed_from_u64(seed));
        FaultPlan::with(Source::Random { rng, probability, budget })
    }

    /// The `i`-th start gets `faults[i]` (`None`: no fault); starts past the
    /// list get none.
    pub fn listed(faults: impl IntoIterator<Item = Option<Fault>>) -> FaultPlan {
        FaultPlan::with(Source::Listed(faults.into_iter().collect()))
    }

    fn with(source: Source) -> FaultPlan {
        FaultPlan {
            source: Mutex::new(source),
            compute: AtomicU64::new(0),
            memory: AtomicU64::new(0),
            nodes: AtomicU64::new(0),
        }
    }

    /// The fault the next start brings.
    pub(crate) fn next(&self) -> Option<Fault> {
        match &mut *self.source.lock() {
            Source::Listed(faults) => faults.pop_front().flatten(),
            Source::Random { rng, probability, budget } => {
                if *budget == 0 || !rng.random_bool(probability.clamp(0.0, 1.0)) {
                    return None;
                }
                *budget -= 1;
                Some(match rng.random_range(0..10) {
                    0..5 => Fault::KillCompute { after_ops: rng.random_range(0..64) },
                    5..9 => Fault::KillMemory { pick: rng.random_range(0..usize::MAX) },
                    _ => Fault::KillNode,
                })
            }
        }
    }

    /// Counts a fault that took effect.
    pub(crate) fn applied(&self, fault: Fault) {
        let counter = match fault {
            Fault::KillCompute { .. } => &self.compute,
            Fault::KillMemory { .. } => &self.memory,
            Fault::KillNode => &self.nodes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The faults applied so far.
    pub fn applied_counts(&self) -> FaultCounts {
        FaultCounts {
            compute: self.compute.load(Ordering::Relaxed),
            memory: self.memory.load(Ordering::Relaxed),
            nodes: self.nodes.load(Ordering::Relaxed),
        }
    }
}
