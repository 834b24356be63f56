//! RDMA over ibverbs: RC queue pairs, one-sided RDMA READ/WRITE for memory
//! components, SEND/RECV for messages (cargo feature `verbs`).
//!
//! # Hardware
//!
//! Everything that touches the device — [`VerbsMemory::open`],
//! [`VerbsTransport::open`] / [`with_connector`](VerbsTransport::with_connector)
//! and all they return — runs **only on machines with an RDMA device**
//! (InfiniBand, RoCE, iWARP, or SoftRoCE `rdma_rxe`) whose port is active.
//! Elsewhere they fail with [`VerbsError::NoDevice`] ("no RDMA device found
//! …; the verbs transport runs only on machines with RDMA hardware"); nothing
//! panics. Building needs `libibverbs-dev` (plus `cmake` and `libclang-dev`
//! for `ibverbs-sys`), not a device. The control-plane messages
//! ([`messages`]) and their [`LocalConnector`] are plain Rust and work
//! anywhere.
//!
//! # Memory side
//!
//! [`VerbsMemory`] is a memory node's controller ([`MemoryPool`](resc_core::pool::MemoryPool)):
//! each physical memory component gets **its own protection domain and one
//! memory registration**, zero-filled, and a random 64-bit [`AccessKey`](resc_core::ids::AccessKey).
//! The key maps, at the memory node, to the region's rkey and address: a
//! compute node that presents it in a [`ConnectRequest`] gets a queue pair
//! connected in the region's protection domain and a [`RegionAccess`]
//! (address, rkey, length). From then on the NIC alone checks each access
//! (rkey, bounds, protection domain); the memory node's CPU is not involved.
//!
//! # Compute side
//!
//! [`VerbsTransport`] is a compute node's [`Transport`](resc_core::transport::Transport).
//! It keeps one RC queue pair per physical memory component it accesses.
//! (The paper reuses one queue pair for all components on a server; with a
//! protection domain per component that is impossible — a queue pair reaches
//! only memory of its own protection domain — so isolation wins here.)
//! Before posting, it checks each operation against the memory node's
//! answer — the key the memory node accepted, then the memory node's length
//! — so a wrong key is [`AccessDenied`](resc_core::transport::TransportError::AccessDenied)
//! and a bad range [`OutOfBounds`](resc_core::transport::TransportError::OutOfBounds)
//! without touching the network or breaking the queue pair; the NIC checks
//! again on every access.
//!
//! ## How a batch stops at its first failure
//!
//! [`Transport::execute`](resc_core::transport::Transport::execute) splits a
//! batch into *runs* of consecutive operations on one region, executed one
//! after the other. Within a run, operations become RDMA READ/WRITE work
//! requests through a registered staging buffer, posted as one linked chain
//! per *window* (as many as fit the staging buffer and the send queue), all
//! signaled; the transport polls until every request of the window has
//! completed before it builds the next. Hence:
//!
//! 1. An operation that fails the check is never posted; everything before
//!    it is posted and waited for; the [`BatchError`](resc_core::transport::BatchError)
//!    names it.
//! 2. If the NIC fails request *k* (say the region was freed: its
//!    registration is gone and the memory node's NIC answers with a remote
//!    access error), the queue pair enters the error state and **RC
//!    semantics flush every later request unexecuted** (`IBV_WC_WR_FLUSH_ERR`);
//!    the responder executes requests strictly in order, so none after *k*
//!    took effect. No later window or run is posted. The error names the
//!    operation of request *k*; READs before it have filled their buffers.
//!    The broken queue pair is dropped, and (with a [`Connector`]) the
//!    memory node is asked again, so a freed region reports `UnknownRegion`.
//! 3. An RDMA WRITE that follows an RDMA READ in the same window carries
//!    `IBV_SEND_FENCE`, so it cannot overtake the READ at the responder; a
//!    READ after a WRITE sees it (RC executes them in order).
//!
//! One exception, as with a broken TCP connection: when the connection
//! itself fails (retries exhausted, no completion within
//! [`VerbsConfig::completion_timeout`]), the failing request may or may not
//! have executed remotely; the error is then `Disconnected`.
//!
//! ## Messages
//!
//! Messages between endpoints of the same transport are delivered in
//! process. Messages to endpoints on other compute nodes (see
//! [`VerbsTransport::route_endpoint`]) travel as RDMA SEND over one RC queue
//! pair per pair of nodes into pre-posted receive buffers, framed and
//! reassembled, and the receiver acknowledges each message — `send` returns
//! when the message is in the destination's mailbox, or fails with
//! `UnknownEndpoint` when the endpoint is not open there.
//!
//! # Connecting queue pairs
//!
//! Queue-pair metadata travels only in control-plane messages
//! ([`messages`]); the backend opens no channel of its own. See
//! [`messages`] for the two ways to drive it.
//!
//! ```no_run
//! use std::sync::Arc;
//! use resc_core::ids::NodeId;
//! use resc_core::pool::MemoryPool;
//! use resc_core::transport::Transport;
//! use resc_rdma::verbs::{LocalConnector, VerbsConfig, VerbsMemory, VerbsTransport};
//!
//! let config = VerbsConfig::default();
//! let memory = Arc::new(VerbsMemory::open(NodeId(1), 64 << 20, &config)?);
//! let connector = Arc::new(LocalConnector::new());
//! connector.attach(&memory);
//! let transport = VerbsTransport::with_connector(NodeId(100), &config, connector)?;
//! let region = memory.allocate(4096)?;
//! transport.write(&region, 0, b"over RDMA")?; // connects a queue pair first
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # `unsafe`
//!
//! The `ibverbs` crate (0.9) cannot post RDMA READ or WRITE (its queue pair
//! posts only SEND and hides its raw handle), so the backend calls
//! libibverbs through the bindgen-generated bindings of `ibverbs-sys`
//! (re-exported by `raw`; `ibverbs-sys` links libibverbs) and wraps them in
//! owned, safe types (`sys`, the one module with `unsafe` code).

mod engine;
mod error;
mod frame;
mod memory;
pub mod messages;
mod raw;
mod sys;
mod transport;

pub use error::VerbsError;
pub use memory::VerbsMemory;
pub use messages::{
    ConnectAccept, ConnectHandler, ConnectRefused, ConnectReply, ConnectRequest, ConnectTarget, Connector,
    ControlMessage, Disconnect, LocalConnector, QueuePairInfo, Refusal, RegionAccess,
};
pub use transport::VerbsTransport;

use std::time::Duration;

/// Settings of the verbs backend. Start from [`VerbsConfig::default`] and
/// change fields.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerbsConfig {
    /// The RDMA device (`ibv_devices` name); `None`: the first device whose
    /// port is active.
    pub device: Option<String>,
    /// The device port (1-based).
    pub port: u8,
    /// The GID table index to route with; `None`: none on InfiniBand, the
    /// best RoCE v2 GID on Ethernet ports.
    pub gid_index: Option<u8>,
    /// Registered staging memory per region queue pair: the bytes one
    /// window of a batch moves (larger operations are split).
    pub staging_bytes: usize,
    /// Work requests a region queue pair has in flight (one window).
    pub max_outstanding: u32,
    /// Size of each receive buffer for messages (and of a message frame).
    pub message_slot_bytes: usize,
    /// Receive buffers posted per peer queue pair.
    pub recv_slots: u32,
    /// Message frames in flight per peer queue pair.
    pub message_window: u32,
    /// How long to wait for a window's completions before declaring the
    /// queue pair broken.
    pub completion_timeout: Duration,
    /// How long `send` waits for the receiver's acknowledgement.
    pub message_timeout: Duration,
    /// Local ACK timeout exponent of RC queue pairs (4.096 µs × 2^n).
    pub ack_timeout: u8,
    /// Transport retries of RC queue pairs (at most 7).
    pub retry_count: u8,
    /// Minimum RNR NAK timer code of RC queue pairs.
    pub min_rnr_timer: u8,
    /// How long a freed region's queue pairs stay (answering with remote
    /// access errors) unless their requesters disconnect first.
    pub tombstone_ttl: Duration,
}

impl Default for VerbsConfig {
    fn default() -> Self {
        VerbsConfig {
            device: None,
            port: 1,
            gid_index: None,
            staging_bytes: 256 << 10,
            max_outstanding: 64,
            message_slot_bytes: 64 << 10,
            recv_slots: 32,
            message_window: 8,
            completion_timeout: Duration::from_secs(10),
            message_timeout: Duration::from_secs(10),
            ack_timeout: 14,
            retry_count: 7,
            min_rnr_timer: 12,
            tombstone_ttl: Duration::from_secs(60),
        }
    }
}

impl VerbsConfig {
    /// Checks that the settings are usable.
    pub fn validate(&self) -> Result<(), VerbsError> {
        let bad = |what: &str| Err(VerbsError::Config(what.to_owned()));
        if self.port == 0 {
            return bad("port numbers start at 1");
        }
        if self.staging_bytes == 0 || self.staging_bytes > 1 << 30 {
            return bad("staging_bytes must be between 1 byte and 1 GiB");
        }
        if self.max_outstanding == 0 || self.message_window == 0 || self.recv_slots == 0 {
            return bad("max_outstanding, message_window and recv_slots must be positive");
        }
        if self.message_slot_bytes < 4096 || self.message_slot_bytes > 1 << 30 {
            return bad("message_slot_bytes must be between 4 KiB and 1 GiB");
        }
        if self.ack_timeout > 31 || self.retry_count > 7 || self.min_rnr_timer > 31 {
            return bad("ack_timeout and min_rnr_timer are 5-bit codes, retry_count at most 7");
        }
        Ok(())
    }
}

/// The names of the machine's RDMA devices; [`VerbsError::NoDevice`] where
/// the kernel has no RDMA support.
pub fn devices() -> Result<Vec<String>, VerbsError> {
    sys::device_names()
}

/// 64 unpredictable bits: from the kernel's random source, or (if it cannot
/// be read) from the process's randomly keyed hasher.
fn random_u64() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return u64::from_ne_bytes(bytes);
    }
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}
