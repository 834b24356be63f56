//! The in-process transport: direct calls into in-process memory nodes, and
//! channels between endpoints.

use super::InProcessMemory;
use crate::ids::{Endpoint, NodeId};
use crate::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type Mailbox = (Sender<Message>, Receiver<Message>);

/// A [`Transport`] for components of one process: one-sided operations call
/// the memory node directly (which checks key and bounds), messages travel
/// over channels.
#[derive(Default)]
pub struct InProcessFabric {
    nodes: RwLock<HashMap<NodeId, Arc<InProcessMemory>>>,
    mailboxes: RwLock<HashMap<Endpoint, Mailbox>>,
}

impl std::fmt::Debug for InProcessFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessFabric")
            .field("nodes", &self.nodes.read().keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl InProcessFabric {
    /// A fabric that reaches no memory node yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a memory node reachable.
    pub fn attach(&self, memory: Arc<InProcessMemory>) {
        use crate::pool::MemoryPool;
        self.nodes.write().insert(memory.node(), memory);
    }

    fn node(&self, node: NodeId) -> Result<Arc<InProcessMemory>, TransportError> {
        self.nodes.read().get(&node).cloned().ok_or(TransportError::UnknownNode(node))
    }
}

impl Transport for InProcessFabric {
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
        for (index, op) in ops.iter_mut().enumerate() {
            let result = match op {
                RemoteOp::Read { region, offset, buf } => {
                    self.node(region.node).and_then(|n| n.serve_read(region, *offset, buf))
                }
                RemoteOp::Write { region, offset, data } => {
                    self.node(region.node).and_then(|n| n.serve_write(region, *offset, data))
                }
            };
            result.map_err(|error| BatchError { index, error })?;
        }
        Ok(())
    }

    fn maps_memory(&self) -> bool {
        true
    }

    fn lend(
        &self,
        region: &RemoteRegion,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, TransportError> {
        self.node(region.node)?.with_bytes(region, offset, len, |bytes| f(bytes))?;
        Ok(true)
    }

    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        self.mailboxes.write().entry(endpoint.clone()).or_insert_with(crossbeam_channel::unbounded);
        Ok(())
    }

    fn close_endpoint(&self, endpoint: &Endpoint) {
        self.mailboxes.write().remove(endpoint);
    }

    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        let sender = self
            .mailboxes
            .read()
            .get(to)
            .map(|(tx, _)| tx.clone())
            .ok_or_else(|| TransportError::UnknownEndpoint(to.clone()))?;
        sender
            .send(Message { from: from.clone(), payload: payload.to_vec() })
            .map_err(|_| TransportError::UnknownEndpoint(to.clone()))
    }

    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        let receiver = self
            .mailboxes
            .read()
            .get(at)
            .map(|(_, rx)| rx.clone())
            .ok_or_else(|| TransportError::UnknownEndpoint(at.clone()))?;
        receiver.recv_timeout(timeout).map_err(|e| match e {
            RecvTimeoutError::Timeout => TransportError::Timeout(at.clone()),
            RecvTimeoutError::Disconnected => TransportError::UnknownEndpoint(at.clone()),
        })
    }
}
