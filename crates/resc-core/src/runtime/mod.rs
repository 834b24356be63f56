//! The runtime API that code pieces use (the paper's Fig. 7).
//!
//! A code piece receives a [`Context`], opens a [`Channel`] by component name
//! and reads, writes, sends and receives through it. The same code runs
//! disaggregated (memory components in the memory pool, reached through a
//! [`Transport`](crate::transport::Transport) and a local cache) and
//! aggregated (memory components inside the sandbox): [`Bindings`] decides.
//!
//! ```
//! use resc_core::runtime::{Bindings, CodeError, Context};
//! use std::sync::Arc;
//!
//! let graph = Arc::new(resc_core::template::parse(r#"{
//!   "app": "demo", "budget_mib": 64,
//!   "compute": [{ "name": "writer", "code": "demo.writer" }],
//!   "memory": [{ "name": "blob", "initial_mib": 1, "increment_mib": 1 }],
//!   "edges": [{ "kind": "access", "from": "writer", "to": "blob" }]
//! }"#).unwrap());
//! // Aggregated: the memory component lives in the sandbox.
//! let bindings = Bindings::local(graph.clone(), resc_core::ids::InvocationId(1));
//! let writer = graph.entry_points().next().unwrap();
//! let mut ctx = Context::new(bindings, writer, 0, vec![b"hello".to_vec()]);
//! let mut blob = ctx.channel("blob")?;
//! blob.write(0, ctx.input())?;
//! let mut back = [0u8; 5];
//! blob.read(0, &mut back)?;
//! assert_eq!(&back, b"hello");
//! # Ok::<(), CodeError>(())
//! ```

mod bindings;
mod channel;
mod context;
mod error;
mod io_worker;
mod peer;
mod read_ahead;
mod remote;
#[cfg(test)]
mod tests;
mod write_behind;

pub use bindings::{Bindings, MemoryHandle};
pub use channel::{Channel, PendingOp, PendingRead, PendingWrite};
pub use context::Context;
pub use error::{ChannelError, CodeError};
