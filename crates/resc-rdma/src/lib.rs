//! Network transports for ReSC's data path.
//!
//! This crate will hold the implementations of [`resc_core::transport::Transport`]
//! that cross process and host boundaries: a TCP transport (always built) with
//! the same one-sided `read`/`write` semantics as RDMA, and an ibverbs RDMA
//! transport behind the `verbs` cargo feature. It is a mechanism crate: it
//! depends on `resc-core` only and never on a policy crate.
//!
//! Nothing is implemented yet; the in-process transport in `resc-core` is the
//! only backend today.
//!
//! ```
//! // The trait every backend here will implement:
//! fn _takes_a_transport(_: &dyn resc_core::transport::Transport) {}
//! ```
#![forbid(unsafe_code)]
