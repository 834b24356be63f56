//! Aggregation and disaggregation planning for ReSC.
//!
//! This crate will decide, as 0-1 integer programs over candidate groups (a
//! communication matrix plus CPU and memory vectors, against pool capacity),
//! which communicating components to run together in one sandbox on the
//! balanced pool, and which aggregated groups to split again when a pool passes
//! its watermark (the paper's §5.3.2–§5.3.3). It is a policy crate: it depends
//! on `resc-core` only and does no I/O.
//!
//! Nothing is implemented yet.
//!
//! ```
//! fn _plans_for(_: &resc_core::graph::ResourceGraph) {}
//! ```
#![forbid(unsafe_code)]
