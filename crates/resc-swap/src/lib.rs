//! Far memory for ReSC compute components.
//!
//! This crate will let a compute component use more memory than its fixed
//! local slot: a userfaultfd handler serves faults on an overflow area by
//! fetching pages from physical memory components, and evicts not-recently-used
//! pages back to them through [`resc_core::pool::MemoryPool`] and
//! [`resc_core::transport::Transport`]. It is a mechanism crate: it depends on
//! `resc-core` only, and its `unsafe` (mmap, userfaultfd) will stay in small
//! modules with a `// SAFETY:` comment on each block.
//!
//! Nothing is implemented yet.
//!
//! ```
//! fn _swaps_to(_: &dyn resc_core::pool::MemoryPool) {}
//! ```
