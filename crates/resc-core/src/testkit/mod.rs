//! Conformance suites for the traits (object_store's pattern): generic checks
//! that every backend — this workspace's and an integrator's — must pass.
//!
//! Each trait has a module with one `pub fn` per check and a `*_suite`
//! function that runs them all. A check panics with a message that names the
//! check and the violated clause of the trait's `# Contract`, so a failure is
//! pinpointed whether the integrator runs the whole suite or one check per
//! test:
//!
//! | trait | suite |
//! |---|---|
//! | [`Transport`](crate::transport::Transport) | [`transport::transport_suite`] |
//! | [`MemoryPool`](crate::pool::MemoryPool) | [`pool::memory_pool_suite`] |
//! | [`Sandbox`](crate::sandbox::Sandbox) | [`sandbox::sandbox_suite`] |
//! | [`Scheduler`](crate::scheduler::Scheduler) | [`scheduler::scheduler_suite`] |
//! | [`TriggerLog`](crate::trigger_log::TriggerLog) | [`trigger_log::trigger_log_suite`] |
//!
//! Every wait is bounded (a check that would otherwise hang fails instead),
//! and no check asserts anything about speed.
//!
//! ```
//! use resc_core::ids::NodeId;
//! use resc_core::inproc::{InProcessFabric, InProcessMemory};
//! use resc_core::testkit;
//! use std::sync::Arc;
//!
//! let memory = Arc::new(InProcessMemory::new(NodeId(0), 16 << 20));
//! let fabric = InProcessFabric::new();
//! fabric.attach(memory.clone());
//! testkit::transport::transport_suite(memory.as_ref(), &fabric);
//! testkit::pool::memory_pool_suite(memory.as_ref(), &fabric);
//! ```

pub mod faults;
pub mod pool;
pub mod sandbox;
pub mod scheduler;
pub mod transport;
pub mod trigger_log;

use crate::ids::InvocationId;
use std::sync::atomic::{AtomicU64, Ordering};

/// An invocation id no other check of this process uses, so that checks can
/// share one backend (and run concurrently on it) without seeing each
/// other's endpoints or records.
fn unique_invocation() -> InvocationId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // High bits: a marker and the process, so that two processes sharing a
    // networked backend do not collide either.
    InvocationId((0x7e57 << 48) | (u64::from(std::process::id() & 0xffff) << 32) | (n & 0xffff_ffff))
}

/// `len` deterministic, non-zero-heavy bytes that differ with `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| ((i as u64).wrapping_mul(31).wrapping_add(u64::from(seed) * 7 + 1) % 251) as u8 + 1).collect()
}
