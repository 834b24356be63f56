//! Where nodes listen and which node hosts each endpoint: the peer metadata
//! that placement answers carry, so that no side channel is needed.

use parking_lot::RwLock;
use resc_core::ids::{Endpoint, NodeId};
use std::collections::HashMap;
use std::net::SocketAddr;

/// Addresses of nodes and the homes of endpoints, shared by the transports
/// of one process and filled by the control plane.
#[derive(Debug, Default)]
pub struct Directory {
    nodes: RwLock<HashMap<NodeId, SocketAddr>>,
    endpoints: RwLock<HashMap<Endpoint, NodeId>>,
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records where a node's server listens.
    pub fn add_node(&self, node: NodeId, addr: SocketAddr) {
        self.nodes.write().insert(node, addr);
    }

    /// Where a node's server listens.
    pub fn node(&self, node: NodeId) -> Option<SocketAddr> {
        self.nodes.read().get(&node).copied()
    }

    /// Records which node hosts an endpoint's mailbox.
    pub fn add_endpoint(&self, endpoint: Endpoint, node: NodeId) {
        self.endpoints.write().insert(endpoint, node);
    }

    /// Forgets an endpoint.
    pub fn remove_endpoint(&self, endpoint: &Endpoint) {
        self.endpoints.write().remove(endpoint);
    }

    /// Which node hosts an endpoint's mailbox.
    pub fn endpoint(&self, endpoint: &Endpoint) -> Option<NodeId> {
        self.endpoints.read().get(endpoint).copied()
    }
}
