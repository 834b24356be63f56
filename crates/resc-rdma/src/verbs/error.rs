//! The error of the verbs backend's constructors and control-plane calls.

use resc_core::ids::NodeId;
use std::io;
use thiserror::Error;

use super::messages::Refusal;

/// Why the verbs backend could not be set up or connected.
///
/// Data-path failures are reported as [`TransportError`](resc_core::transport::TransportError)
/// and [`PoolError`](resc_core::pool::PoolError) like every other backend;
/// this type covers opening the device and connecting queue pairs.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VerbsError {
    /// The machine has no usable RDMA device (no kernel support, no device,
    /// or no device with an active port).
    #[error("no RDMA device found (ibverbs: {reason}); the verbs transport runs only on machines with RDMA hardware")]
    NoDevice {
        /// What libibverbs reported.
        reason: String,
    },
    /// The configured device is not among the machine's devices.
    #[error("RDMA device {name:?} not found; the machine has {available:?}")]
    DeviceNotFound {
        /// The configured name.
        name: String,
        /// The names of the devices that exist.
        available: Vec<String>,
    },
    /// The configured port of the device is not active.
    #[error("port {port} of RDMA device {device} is not active (state {state})")]
    PortNotActive {
        /// The device.
        device: String,
        /// The port.
        port: u8,
        /// The port state libibverbs reported (`IBV_PORT_*`).
        state: u32,
    },
    /// A verb failed.
    #[error("{verb} failed on RDMA device {device}: {source}")]
    Verb {
        /// The verb, e.g. `ibv_create_qp`.
        verb: &'static str,
        /// The device.
        device: String,
        /// The system error.
        source: io::Error,
    },
    /// The configuration is unusable.
    #[error("invalid verbs configuration: {0}")]
    Config(String),
    /// The peer refused to connect a queue pair.
    #[error("{node} refused the queue-pair connection: {reason}")]
    Refused {
        /// The node that refused.
        node: NodeId,
        /// Why.
        reason: Refusal,
    },
    /// A connect reply names no connection this side prepared (a duplicate,
    /// a reply to another node, or one that arrived after the request was
    /// abandoned).
    #[error("connect reply for unknown connection {connection} from {node}")]
    UnexpectedReply {
        /// The node that sent the reply.
        node: NodeId,
        /// The connection id it names.
        connection: u64,
    },
    /// The control plane could not carry a message to a node.
    #[error("the control plane could not reach {node}: {reason}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
}

impl VerbsError {
    /// Whether this is the "no RDMA hardware here" error.
    pub fn is_no_device(&self) -> bool {
        matches!(self, VerbsError::NoDevice { .. })
    }
}
