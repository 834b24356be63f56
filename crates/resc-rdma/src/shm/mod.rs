//! Same-host shared memory: physical memory components are memfd regions
//! mapped into the compute side, truly one-sided and zero copy.
//!
//! - [`ShmMemory`] is a memory node's controller ([`MemoryPool`]): every
//!   region is a fresh memfd (so it reads as zeros and never reuses another
//!   region's memory) with a random access key, and capacity is accounted
//!   exactly like [`InProcessMemory`](resc_core::inproc::InProcessMemory).
//! - [`ShmMemoryServer`] serves a [`ShmMemory`] to other processes over a
//!   Unix domain socket (one thread per connection). Its requests are
//!   allocate, free, attach and stats, in the frame format of [`control`];
//!   allocate and attach check the key and pass the region's memfd with
//!   `SCM_RIGHTS`. An allocation belongs to its connection until the client
//!   confirms it has the answer: a region whose answer cannot be sent, or
//!   whose connection closes unconfirmed, is freed (nobody holds its key). [`ShmMemoryClient`] is the other end, and is itself a
//!   [`MemoryPool`].
//! - [`ShmTransport`] is the compute side's [`Transport`]. For a region on a
//!   node it knows (in this process, or behind a server's socket) it asks the
//!   memory side once for the descriptor — the memory side checks the key
//!   then, and a wrong key gets [`AccessDenied`](resc_core::transport::TransportError::AccessDenied)
//!   and no descriptor — maps it `MAP_SHARED`, caches the mapping by
//!   (node, region), and from then on serves `read` and `write` as a `memcpy`
//!   on the mapping, checking the bounds of every operation: no system call,
//!   no server involvement. [`ShmTransport::with_bytes`] lends the mapped
//!   bytes without copying.
//!
//! Messages (`open_endpoint`, `send`, `recv`) travel through an in-process
//! mailbox: they reach endpoints opened on the same [`ShmTransport`] only.
//! Same-host messages *between processes* are out of scope of this
//! transport; they belong to the control plane or to the TCP transport.
//!
//! # Region layout
//!
//! A region of `len` bytes is a memfd of [`HEADER`] + `len` bytes, sealed
//! against shrinking and growing (`F_SEAL_SHRINK | F_SEAL_GROW`, then
//! `F_SEAL_SEAL`). The first [`HEADER`] bytes are a control page: a magic
//! number, the length, and one atomic *state word* whose top bit means
//! "revoked" and whose other bits count operations in flight. The region's
//! bytes follow the control page. The compute side refuses a descriptor
//! that is not a memfd sealed against shrinking, is shorter than it says,
//! or whose control page does not match: nobody can truncate a mapped
//! region under a client, so no access through a mapping can raise `SIGBUS`.
//!
//! # Revocation
//!
//! After [`MemoryPool::free`] returns, no [`ShmTransport`] — in this process
//! or another — reads or writes the region's memory, and every operation on
//! it fails with `UnknownRegion`:
//!
//! 1. Every operation *enters* the region by incrementing the state word
//!    (one atomic read-modify-write on the shared control page) and fails
//!    with `UnknownRegion` if the revoked bit is set; it leaves by
//!    decrementing the word after its `memcpy` (or after a
//!    [`with_bytes`](ShmTransport::with_bytes) closure returns).
//! 2. `free` removes the region from the node's table (no new attachment),
//!    sets the revoked bit, then waits until the in-flight count drains to
//!    zero. Both sides modify the same atomic word, so its modification
//!    order decides every race: an operation either entered before the bit
//!    was set (and `free` waits for it to leave) or sees the bit and never
//!    touches the bytes.
//! 3. Only then does `free` punch the region's bytes out of the memfd
//!    (`FALLOC_FL_PUNCH_HOLE`, size unchanged) — which returns the memory to
//!    the system even while stale mappings exist — release the capacity and
//!    return. The control page is never punched (the revoked bit must stay
//!    visible), and the file is never shrunk (so no `SIGBUS`). A transport
//!    drops its mapping when an operation finds the bit set, or when it
//!    attaches another region.
//!
//! The wait is bounded by a grace period ([`ShmMemory::with_grace`], 5 s by
//! default) so that a client that died in the middle of an operation cannot
//! block `free` forever. A client that is still inside an operation when the
//! grace period ends (a `with_bytes` closure that runs that long, say) sees
//! the bytes turn to zeros; it never crashes. The memory side cannot unmap
//! another process's mapping, so revocation binds transports that follow
//! this protocol; what a process that ignores it can still touch is a
//! punched file that no other region will ever use.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use resc_core::ids::NodeId;
//! use resc_core::pool::MemoryPool;
//! use resc_core::transport::Transport;
//! use resc_rdma::shm::{ShmMemory, ShmMemoryClient, ShmMemoryServer, ShmTransport};
//!
//! let dir = std::env::temp_dir().join(format!("resc-shm-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let socket = dir.join("node1.sock");
//! # let _ = std::fs::remove_file(&socket);
//! // A memory node serving 64 MiB on a Unix socket…
//! let memory = Arc::new(ShmMemory::new(NodeId(1), 64 << 20));
//! let server = ShmMemoryServer::bind(&socket, memory)?;
//! // …and a compute side (here in the same process) that attaches over it.
//! let pool = ShmMemoryClient::new(NodeId(1), &socket);
//! let transport = ShmTransport::new();
//! transport.add_remote_node(NodeId(1), &socket);
//! let region = pool.allocate(4096)?;
//! transport.write(&region, 0, b"shared")?;
//! let seen = transport.with_bytes(&region, 0, 6, |bytes| bytes == b"shared")?;
//! assert!(seen);
//! pool.free(&region)?;
//! assert!(transport.write(&region, 0, b"gone").is_err());
//! server.shutdown();
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`MemoryPool`]: resc_core::pool::MemoryPool
//! [`MemoryPool::free`]: resc_core::pool::MemoryPool::free
//! [`Transport`]: resc_core::transport::Transport

mod client;
pub mod control;
mod fdpass;
mod map;
mod memory;
mod server;
mod transport;

pub use client::ShmMemoryClient;
pub use map::HEADER;
pub use memory::{RegionDescriptor, ShmMemory};
pub use server::ShmMemoryServer;
pub use transport::ShmTransport;
