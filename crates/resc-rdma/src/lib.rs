//! Transports for ReSC's data path across process and host boundaries.
//!
//! - [`tcp`]: one-sided `read`/`write` on remote regions and two-sided
//!   messages over TCP, with the memory side checking key and bounds on
//!   every operation; pipelined batches; one connection per remote node,
//!   reused for every physical memory component there (the paper's QP reuse).
//!   [`tcp::TcpNodeServer`] is what `resc memory-server` runs.
//! - [`wire`]: the TCP frame format, encoded and decoded by pure functions.
//! - [`shm`]: same-host shared memory: physical memory components are memfd
//!   regions mapped into the compute side, truly one-sided and zero copy.
//! - `verbs` (cargo feature `verbs`): RDMA over ibverbs. It runs only on
//!   machines with an RDMA device; without one it fails with a clear error.
//!
//! Every backend implements [`resc_core::transport::Transport`] and passes
//! the `resc-core` conformance suite.
//!
//! ```
//! use std::sync::Arc;
//! use resc_core::ids::NodeId;
//! use resc_core::inproc::InProcessMemory;
//! use resc_core::pool::MemoryPool;
//! use resc_core::transport::Transport;
//! use resc_rdma::tcp::{Directory, TcpMemoryPool, TcpNodeServer, TcpTransport};
//!
//! // A memory node serving 64 MiB on loopback…
//! let memory = Arc::new(InProcessMemory::new(NodeId(1), 64 << 20));
//! let server = TcpNodeServer::bind("127.0.0.1:0", NodeId(1), Some(memory))?;
//! // …and a compute side that knows where it is.
//! let directory = Arc::new(Directory::new());
//! directory.add_node(NodeId(1), server.local_addr());
//! let pool = TcpMemoryPool::new(NodeId(1), directory.clone());
//! let transport = TcpTransport::new(directory);
//! let region = pool.allocate(4096)?;
//! transport.write(&region, 0, b"over the wire")?;
//! let mut back = [0u8; 13];
//! transport.read(&region, 0, &mut back)?;
//! assert_eq!(&back, b"over the wire");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
// `unsafe` is confined to the modules that map shared memory and drive RDMA
// hardware, each block with a `// SAFETY:` comment.
#![deny(unsafe_code)]

pub mod shm;
pub mod tcp;
#[cfg(feature = "verbs")]
pub mod verbs;
pub mod wire;
