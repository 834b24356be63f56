//! Control-plane messages that connect RDMA queue pairs, and the traits
//! through which the platform carries them.
//!
//! An RC queue pair works only once both ends know each other's endpoint
//! (LID or GID, queue-pair number, packet sequence number, MTU). The verbs
//! backend never opens a channel of its own to exchange them: the side that
//! wants a connection builds a [`ConnectRequest`], the platform carries it
//! to the node it names (as a control-plane message, next to the placement
//! answers that already flow), that node answers with a [`ConnectReply`],
//! and the platform carries the answer back. [`Disconnect`] tells a node
//! that a connection is gone so it can release its queue pair.
//!
//! Two ways to drive this:
//! - explicitly: [`VerbsTransport::prepare_region`](super::VerbsTransport::prepare_region) /
//!   [`prepare_peer`](super::VerbsTransport::prepare_peer) → deliver the
//!   request → [`ConnectHandler::handle_connect`] on the other node →
//!   deliver the reply → [`VerbsTransport::complete`](super::VerbsTransport::complete);
//! - on demand: give the transport a [`Connector`] — a request/reply carrier
//!   such as a NATS request on the node's subject — and it connects on
//!   first use. [`LocalConnector`] is the carrier of one process.
//!
//! Every message is `serde`-serializable; [`ControlMessage`] wraps them all
//! for carriers that want one type.

use super::VerbsError;
use parking_lot::RwLock;
use resc_core::ids::{AccessKey, NodeId, RegionId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};

/// One end of an RC queue pair, as the other end needs it to connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct QueuePairInfo {
    /// Local identifier of the port (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Global identifier used for routing, when the port needs one (always
    /// on RoCE).
    pub gid: Option<[u8; 16]>,
    /// The queue-pair number.
    pub qpn: u32,
    /// The first packet sequence number this end sends (24 bits).
    pub psn: u32,
    /// The port's active MTU as an `ibv_mtu` value (1 = 256 … 5 = 4096).
    /// The connection uses the smaller of both ends'.
    pub mtu: u8,
    /// RDMA READs this end can have outstanding as requester.
    pub initiator_depth: u8,
    /// RDMA READs this end can serve at once as responder.
    pub responder_resources: u8,
    /// Size of this end's receive buffers for two-sided messages (0 when it
    /// receives none).
    pub recv_slot_bytes: u32,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectTarget {
    /// One-sided access to a physical memory component: the memory node
    /// checks the key before it connects a queue pair in the region's
    /// protection domain.
    Region {
        /// The region.
        region: RegionId,
        /// Its access key.
        key: AccessKey,
    },
    /// Two-sided messages between the endpoints of two compute nodes.
    Peer,
}

/// A request to connect a queue pair, from the node that prepared its end.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectRequest {
    /// The requesting node.
    pub from: NodeId,
    /// The node asked to connect.
    pub to: NodeId,
    /// The requester's id for this connection, unique among its connections.
    pub connection: u64,
    /// What the connection is for.
    pub target: ConnectTarget,
    /// The requester's end.
    pub qp: QueuePairInfo,
}

/// Where a region's bytes are for RDMA: what its access key maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RegionAccess {
    /// Virtual address of the region's first byte on the memory node.
    pub addr: u64,
    /// The remote key of the region's memory registration.
    pub rkey: u32,
    /// The region's length in bytes (the memory node's, authoritative).
    pub len: u64,
}

/// A connection accepted: the other end of the queue pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectAccept {
    /// The accepting node.
    pub from: NodeId,
    /// The requesting node.
    pub to: NodeId,
    /// The requester's connection id, echoed.
    pub connection: u64,
    /// The accepting end.
    pub qp: QueuePairInfo,
    /// For a region connection, where the region is.
    pub region: Option<RegionAccess>,
}

/// Why a node refused a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Refusal {
    /// The region does not exist (never allocated, or freed).
    UnknownRegion,
    /// The access key does not match the region's.
    AccessDenied,
    /// The node does not serve this kind of connection (a memory node asked
    /// for a peer connection, say).
    Unsupported,
    /// The request names another node.
    WrongNode,
    /// The node could not set up its end.
    Failed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownRegion => f.write_str("no such region"),
            Refusal::AccessDenied => f.write_str("wrong access key"),
            Refusal::Unsupported => f.write_str("this node does not serve such connections"),
            Refusal::WrongNode => f.write_str("the request names another node"),
            Refusal::Failed(reason) => write!(f, "setting up the queue pair failed: {reason}"),
        }
    }
}

/// A connection refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectRefused {
    /// The refusing node.
    pub from: NodeId,
    /// The requesting node.
    pub to: NodeId,
    /// The requester's connection id, echoed.
    pub connection: u64,
    /// Why.
    pub reason: Refusal,
}

/// The answer to a [`ConnectRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnectReply {
    /// Connected: the requester completes its end.
    Accept(ConnectAccept),
    /// Refused: the requester drops its end.
    Refuse(ConnectRefused),
}

impl ConnectReply {
    /// The node that answered.
    pub fn from(&self) -> NodeId {
        match self {
            ConnectReply::Accept(a) => a.from,
            ConnectReply::Refuse(r) => r.from,
        }
    }

    /// The connection it answers.
    pub fn connection(&self) -> u64 {
        match self {
            ConnectReply::Accept(a) => a.connection,
            ConnectReply::Refuse(r) => r.connection,
        }
    }

    /// A refusal of `request`.
    pub fn refuse(request: &ConnectRequest, reason: Refusal) -> Self {
        ConnectReply::Refuse(ConnectRefused {
            from: request.to,
            to: request.from,
            connection: request.connection,
            reason,
        })
    }
}

/// A connection is gone: the receiving node releases its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Disconnect {
    /// The node that dropped the connection.
    pub from: NodeId,
    /// The node at the other end.
    pub to: NodeId,
    /// The node that requested the connection (connection ids are its).
    pub requester: NodeId,
    /// The requester's connection id.
    pub connection: u64,
}

/// Every control-plane message of the verbs backend, for carriers that
/// move one type.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ControlMessage {
    /// A connect request.
    Connect(ConnectRequest),
    /// Its answer.
    Reply(ConnectReply),
    /// A connection is gone.
    Disconnect(Disconnect),
}

impl ControlMessage {
    /// The node the message is for.
    pub fn destination(&self) -> NodeId {
        match self {
            ControlMessage::Connect(r) => r.to,
            ControlMessage::Reply(ConnectReply::Accept(a)) => a.to,
            ControlMessage::Reply(ConnectReply::Refuse(r)) => r.to,
            ControlMessage::Disconnect(d) => d.to,
        }
    }
}

/// The node-side handler of connect requests: a memory node's
/// [`VerbsMemory`](super::VerbsMemory) and a compute node's
/// [`VerbsTransport`](super::VerbsTransport) both are one.
pub trait ConnectHandler: Send + Sync {
    /// The node it serves.
    fn node(&self) -> NodeId;

    /// Answers a connect request: sets up this node's end and accepts, or refuses.
    fn handle_connect(&self, request: &ConnectRequest) -> ConnectReply;

    /// Releases the end of a connection the requester dropped.
    fn handle_disconnect(&self, notice: &Disconnect);
}

/// A request/reply carrier of control-plane messages, supplied by the
/// platform (in the reference assembly: a NATS request on the destination
/// node's subject). The transport calls it off the data path's fast case:
/// when it meets a region or peer it has no queue pair for.
pub trait Connector: Send + Sync {
    /// Carries `request` to node `request.to` and returns its answer.
    fn connect(&self, request: &ConnectRequest) -> Result<ConnectReply, VerbsError>;

    /// Carries a disconnect notice to node `notice.to` (best effort, no answer).
    fn disconnect(&self, notice: &Disconnect);
}

/// The [`Connector`] of one process: delivers requests by calling the
/// attached handlers directly. Handlers are held weakly, so a transport
/// that holds this connector may itself be attached without a cycle.
#[derive(Default)]
pub struct LocalConnector {
    handlers: RwLock<HashMap<NodeId, Weak<dyn ConnectHandler>>>,
}

impl fmt::Debug for LocalConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalConnector").field("nodes", &self.handlers.read().keys().collect::<Vec<_>>()).finish()
    }
}

impl LocalConnector {
    /// A connector that reaches no node yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `handler`'s node reachable (replacing an earlier handler of it).
    pub fn attach<H: ConnectHandler + 'static>(&self, handler: &Arc<H>) {
        let weak: Weak<dyn ConnectHandler> = Arc::downgrade(handler) as Weak<dyn ConnectHandler>;
        self.handlers.write().insert(handler.node(), weak);
    }

    /// Makes a node unreachable.
    pub fn detach(&self, node: NodeId) {
        self.handlers.write().remove(&node);
    }

    fn handler(&self, node: NodeId) -> Option<Arc<dyn ConnectHandler>> {
        self.handlers.read().get(&node).and_then(Weak::upgrade)
    }
}

impl Connector for LocalConnector {
    fn connect(&self, request: &ConnectRequest) -> Result<ConnectReply, VerbsError> {
        let handler = self.handler(request.to).ok_or_else(|| VerbsError::Unreachable {
            node: request.to,
            reason: "no handler attached to this LocalConnector".into(),
        })?;
        Ok(handler.handle_connect(request))
    }

    fn disconnect(&self, notice: &Disconnect) {
        if let Some(handler) = self.handler(notice.to) {
            handler.handle_disconnect(notice);
        }
    }
}
