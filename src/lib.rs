//! ReSC: resource-centric serverless computing.
//!
//! This facade re-exports the workspace's crates under one name:
//!
//! - [`core`]: the resource-graph model, JSON template, traits, runtime API and
//!   in-process backends;
//! - [`reference`](mod@reference): the assembled reference platform (embedded cluster,
//!   metering, the `resc` command);
//! - [`rdma`], [`swap`], [`sched`], [`ilp`]: transports, far memory,
//!   scheduling and aggregation planning.
//!
//! ```
//! let graph = resc::core::template::parse(resc::reference::apps::LR_TEMPLATE)?;
//! assert_eq!(graph.compute_components().len(), 4);
//! assert_eq!(graph.memory_components().len(), 3);
//! # Ok::<(), resc::core::template::TemplateError>(())
//! ```
#![forbid(unsafe_code)]

pub use resc_core as core;
pub use resc_ilp as ilp;
pub use resc_rdma as rdma;
pub use resc_reference as reference;
pub use resc_sched as sched;
pub use resc_swap as swap;
