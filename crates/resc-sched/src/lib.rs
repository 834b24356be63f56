//! The ReSC scheduler as pure state machines.
//!
//! This crate will hold the two-level scheduler of the paper's §5.1: a global
//! scheduler that balances load across racks and rack schedulers that place
//! physical components on nodes, resource-pool aware, locality aware and
//! warm-start aware, with pre-warming and keep-alive. It implements
//! [`resc_core::scheduler::Scheduler`], does no I/O and reads no clock: time is
//! passed in, so a deterministic harness can drive it at thousands of nodes.
//!
//! Until it lands, `resc-core` ships a simple pool-aware placement
//! ([`resc_core::scheduler::PoolAwareScheduler`]) that the embedded platform uses.
//!
//! ```
//! fn _schedules_with(_: &mut dyn resc_core::scheduler::Scheduler) {}
//! ```
#![forbid(unsafe_code)]
