//! The ReSC scheduler as pure state machines (paper §5.1, DESIGN.md §5–6).
//!
//! A **global scheduler** balances load across racks and **rack schedulers**
//! place physical components on nodes — resource-pool aware, locality aware
//! and warm-start aware — with **keep-alive** and **pre-warming** on top.
//! Nothing here does I/O or reads a clock: time is a [`Millis`] value passed
//! in, randomness comes from a seeded generator, so a deterministic harness
//! drives the same state machines a platform runs, at thousands of nodes.
//!
//! | piece | what it is |
//! |---|---|
//! | [`TwoLevelScheduler`] | the whole scheduler; implements [`resc_core::scheduler::Scheduler`] |
//! | [`GlobalScheduler`] | rack choice: trigger's rack, warm-start hash, least-loaded rack, re-routing ([`global`]) |
//! | [`RackScheduler`] | node choice within a rack: peer's node, hash, trigger's node, random node with room ([`rack`]) |
//! | [`Accounting`], [`Fit`] | reservations in fixed size classes (bounded stranding) or exact bytes; random or first fit ([`accounting`]) |
//! | [`warm::WarmPool`] | warm sandboxes with keep-alive, hits and misses, the resources they hold |
//! | [`predict::InvocationPredictor`] | EMA of inter-arrival times; predicted pre-warms of first components |
//! | [`warm_sched::WarmScheduler`] | any `Scheduler` + warm pool + predictor: warm starts reuse the idle sandbox's reservation |
//! | [`sim`] | seeded workloads, the stranding simulation |
//! | [`mod@bench`] | the measurements behind `resc bench sched --json` |
//!
//! # Example
//!
//! ```
//! use resc_core::resources::{Resources, GIB, MIB};
//! use resc_core::scheduler::{ClusterSpec, PlacementRequest, Pool, Scheduler};
//! use resc_sched::predict::PredictorConfig;
//! use resc_sched::warm::{PrewarmTarget, WarmConfig};
//! use resc_sched::warm_sched::WarmScheduler;
//! use resc_sched::{Millis, SchedConfig, TwoLevelScheduler};
//!
//! // Two racks of four nodes, each node in the compute and the memory pool.
//! let pools = [(Pool::Compute, Resources::new(8000, 8 * GIB)), (Pool::Memory, Resources::memory(32 * GIB))];
//! let cluster = ClusterSpec::uniform(2, 4, &pools.into_iter().collect());
//! let scheduler = TwoLevelScheduler::new(&cluster, SchedConfig::default().with_seed(42))?;
//! let mut s = WarmScheduler::new(scheduler, WarmConfig { keep_alive: Millis::from_secs(60) }, PredictorConfig::default());
//!
//! // The first component of an invocation: placed by the warm-start hash.
//! let entry = PlacementRequest {
//!     app: "thumbnails".into(),
//!     component: "decode".into(),
//!     pool: Pool::Compute,
//!     demand: Resources::new(1000, 256 * MIB),
//!     first_in_graph: true,
//!     triggered_from: None,
//!     peers_on: vec![],
//! };
//! let decode = s.start(&entry, Millis(0))?;
//! assert!(!decode.is_warm());
//!
//! // While it runs, pre-warm what it triggers, near it.
//! let resize = PrewarmTarget { component: "resize".into(), pool: Pool::Compute, demand: Resources::new(500, 256 * MIB) };
//! for action in s.prewarm_next("thumbnails", [&resize], decode.placement.node, Millis(1)) {
//!     s.prewarm(&action, Millis(1))?;
//! }
//! // Its data: a memory component in the memory pool, in the same rack.
//! let data = PlacementRequest {
//!     component: "pixels".into(),
//!     pool: Pool::Memory,
//!     demand: Resources::memory(300 * MIB),
//!     first_in_graph: false,
//!     triggered_from: Some(decode.placement.node),
//!     ..entry.clone()
//! };
//! let pixels = s.scheduler_mut().place(&data)?;
//! assert_eq!(pixels.demand, Resources::memory(512 * MIB)); // a size class
//! assert_eq!(pixels.rack, decode.placement.rack);
//!
//! // decode finishes and stays warm; resize starts on its pre-warmed sandbox.
//! s.finish("thumbnails", "decode", decode.placement, Millis(80));
//! let next = PlacementRequest { component: "resize".into(), first_in_graph: false, triggered_from: Some(decode.placement.node), demand: resize.demand, ..entry.clone() };
//! assert!(s.start(&next, Millis(80))?.is_warm());
//!
//! // The next invocation finds decode warm; a minute later it is torn down.
//! assert!(s.start(&entry, Millis(5_000))?.is_warm());
//! s.scheduler_mut().release(&pixels);
//! assert_eq!(s.warm().stats().hits, 2);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod accounting;
pub mod bench;
mod config;
mod error;
pub mod global;
mod hash;
mod lookup;
pub mod predict;
pub mod rack;
pub mod sim;
pub mod time;
pub mod two_level;
pub mod warm;
pub mod warm_sched;

pub use accounting::{Accounting, Fit};
pub use config::{PlacementStats, PoolTotals, SchedConfig};
pub use error::BuildError;
pub use global::GlobalScheduler;
pub use rack::RackScheduler;
pub use time::Millis;
pub use two_level::TwoLevelScheduler;

/// The stable warm-start key of an (application, component): the hash that
/// picks a first component's rack and node, the same across runs, machines
/// and Rust releases (FNV-1a with a SplitMix64 finalizer).
pub fn warm_key(app: &str, component: &str) -> u64 {
    hash::component_hash(app, component)
}
