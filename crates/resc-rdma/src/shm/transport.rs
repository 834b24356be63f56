//! The compute side: one-sided operations as copies on mapped memfds.

use super::client::ShmMemoryClient;
use super::map::SharedMap;
use super::memory::{RegionDescriptor, ShmMemory};
use parking_lot::RwLock;
use resc_core::ids::{AccessKey, Endpoint, NodeId, RegionId};
use resc_core::inproc::InProcessFabric;
use resc_core::pool::MemoryPool;
use resc_core::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How the transport reaches a node's memory side to attach regions.
#[derive(Debug, Clone)]
enum Route {
    /// A controller in this process.
    Local(Arc<ShmMemory>),
    /// A controller behind a Unix socket.
    Remote(Arc<ShmMemoryClient>),
}

/// A region mapped into this process, with what the memory side vouched for.
#[derive(Debug)]
struct Attachment {
    key: AccessKey,
    len: u64,
    /// This process's one mapping of the region, shared with every other
    /// attachment of it in the process (see [`SharedMap::shared`]).
    map: Arc<SharedMap>,
}

impl Attachment {
    /// Maps a descriptor, refusing one that is not a sealed region memfd of
    /// the length it claims.
    fn map(descriptor: &RegionDescriptor) -> Result<Attachment, TransportError> {
        let node = descriptor.remote().node;
        let refused =
            |why: String| TransportError::Disconnected(format!("{node} passed an unusable descriptor: {why}"));
        let len = descriptor.len();
        let data_len = usize::try_from(len).map_err(|_| refused(format!("{len} bytes exceed the address space")))?;
        let map = SharedMap::shared(descriptor.file(), data_len).map_err(|e| refused(e.to_string()))?;
        if !map.describes(len) {
            return Err(refused("its control page does not describe the region".into()));
        }
        Ok(Attachment { key: descriptor.remote().key, len, map })
    }
}

/// The operation's region, offset and length.
fn target(op: &RemoteOp<'_>) -> (RemoteRegion, u64, usize) {
    match op {
        RemoteOp::Read { region, offset, buf } => (*region, *offset, buf.len()),
        RemoteOp::Write { region, offset, data } => (*region, *offset, data.len()),
    }
}

/// A [`Transport`] over shared memory on one host: a region is attached once
/// per transport (the memory side checks its key then), mapped once per
/// process (attachments share the mapping), and every operation
/// after that is a bounds-checked copy on the mapping. See the [module
/// documentation](super) for the revocation protocol that makes a freed
/// region fail with `UnknownRegion`.
///
/// Nodes are reached through a small directory: [`add_local_node`](Self::add_local_node)
/// for a controller of this process, [`add_remote_node`](Self::add_remote_node)
/// for one served on a Unix socket. Messages go through an in-process
/// mailbox: endpoints opened on this transport talk to each other, and
/// to no other process.
#[derive(Default)]
pub struct ShmTransport {
    nodes: RwLock<HashMap<NodeId, Route>>,
    attachments: RwLock<HashMap<(NodeId, RegionId), Arc<Attachment>>>,
    mailboxes: InProcessFabric,
}

impl std::fmt::Debug for ShmTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmTransport")
            .field("nodes", &self.nodes.read().keys().collect::<Vec<_>>())
            .field("attached", &self.attachments.read().len())
            .finish_non_exhaustive()
    }
}

impl ShmTransport {
    /// A transport that reaches no node yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes a controller of this process reachable.
    pub fn add_local_node(&self, memory: Arc<ShmMemory>) {
        self.nodes.write().insert(memory.node(), Route::Local(memory));
    }

    /// Makes `node`, served by a [`ShmMemoryServer`](super::ShmMemoryServer)
    /// at `path`, reachable. The connection opens on the first attachment.
    pub fn add_remote_node(&self, node: NodeId, path: impl AsRef<Path>) {
        self.add_client(Arc::new(ShmMemoryClient::new(node, path)));
    }

    /// Makes a node reachable through an existing client (whose connection
    /// it then shares).
    pub fn add_client(&self, client: Arc<ShmMemoryClient>) {
        self.nodes.write().insert(client.node(), Route::Remote(client));
    }

    /// Forgets a node and drops the mappings of its regions.
    pub fn remove_node(&self, node: NodeId) {
        self.nodes.write().remove(&node);
        self.attachments.write().retain(|(n, _), _| *n != node);
    }

    /// How many regions are mapped.
    pub fn attached_regions(&self) -> usize {
        self.attachments.read().len()
    }

    /// Maps `region` now rather than on its first operation (while a code
    /// piece loads, say).
    pub fn preattach(&self, region: &RemoteRegion) -> Result<(), TransportError> {
        self.attachment(region).map(|_| ())
    }

    /// Maps a region from a descriptor its memory side handed out, such as
    /// [`ShmMemoryClient::allocate_with_descriptor`]'s: no further round trip.
    pub fn adopt(&self, descriptor: &RegionDescriptor) -> Result<(), TransportError> {
        self.install(descriptor).map(|_| ())
    }

    /// Drops this transport's mapping of `region`, if any; the next
    /// operation on it attaches again.
    pub fn detach(&self, region: &RemoteRegion) {
        self.attachments.write().remove(&(region.node, region.region));
    }

    /// Runs `f` on `len` bytes at `offset` of `region`, lent straight from
    /// the mapping: no copy. Key and bounds are checked as for `read`, and
    /// the region cannot be revoked while `f` runs (`free` waits for it, up
    /// to the node's grace period).
    ///
    /// A process maps a region once, whatever attaches it (this transport
    /// or another, before or after a [`detach`](Self::detach) or an
    /// [`adopt`](Self::adopt)), so every write of this process to the region
    /// waits until `f` returns; `f` must therefore not write the region
    /// itself (through any transport). The bytes are still shared memory:
    /// writers in *other processes* may change them while `f` looks, as with
    /// any shared mapping.
    pub fn with_bytes<T>(
        &self,
        region: &RemoteRegion,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, TransportError> {
        let attachment = self.attachment(region)?;
        let start = checked_range(region, &attachment, offset, len)?;
        let Some(_entered) = attachment.map.enter() else {
            return Err(self.revoked(region, &attachment));
        };
        Ok(attachment.map.with_bytes(start, len, f))
    }

    /// The mapping of `region`, attaching it if need be.
    fn attachment(&self, region: &RemoteRegion) -> Result<Arc<Attachment>, TransportError> {
        let id = (region.node, region.region);
        if let Some(attachment) = self.attachments.read().get(&id) {
            if attachment.key == region.key && !attachment.map.is_revoked() {
                return Ok(attachment.clone());
            }
        }
        // Not mapped, revoked, or another key: the memory side decides.
        self.evict_revoked();
        let route = self.nodes.read().get(&region.node).cloned().ok_or(TransportError::UnknownNode(region.node))?;
        let descriptor = match route {
            Route::Local(memory) => memory.attach(region)?,
            Route::Remote(client) => client.attach(region)?,
        };
        self.install(&descriptor)
    }

    fn install(&self, descriptor: &RegionDescriptor) -> Result<Arc<Attachment>, TransportError> {
        let remote = descriptor.remote();
        let attachment = Arc::new(Attachment::map(descriptor)?);
        self.attachments.write().insert((remote.node, remote.region), attachment.clone());
        Ok(attachment)
    }

    /// Drops the mappings of revoked regions (their memory returns to the
    /// system once no transport maps them).
    fn evict_revoked(&self) {
        self.attachments.write().retain(|_, attachment| !attachment.map.is_revoked());
    }

    /// An operation found `attachment` revoked: drop it, and report the
    /// region gone.
    fn revoked(&self, region: &RemoteRegion, attachment: &Arc<Attachment>) -> TransportError {
        let mut attachments = self.attachments.write();
        let id = (region.node, region.region);
        if attachments.get(&id).is_some_and(|cached| Arc::ptr_eq(cached, attachment)) {
            attachments.remove(&id);
        }
        TransportError::UnknownRegion { node: region.node, region: region.region }
    }

    /// Runs one operation on a mapped region.
    fn run(&self, op: &mut RemoteOp<'_>, attachment: &Arc<Attachment>) -> Result<(), TransportError> {
        let (region, offset, len) = target(op);
        let start = checked_range(&region, attachment, offset, len)?;
        let Some(_entered) = attachment.map.enter() else {
            return Err(self.revoked(&region, attachment));
        };
        match op {
            RemoteOp::Read { buf, .. } => attachment.map.read(start, buf),
            RemoteOp::Write { data, .. } => attachment.map.write(start, data),
        }
        Ok(())
    }
}

/// Checks that `len` bytes at `offset` lie within the region (as the memory
/// side described it); returns the start as an index.
fn checked_range(
    region: &RemoteRegion,
    attachment: &Attachment,
    offset: u64,
    len: usize,
) -> Result<usize, TransportError> {
    let region_len = attachment.len;
    let out = || TransportError::OutOfBounds { region: region.region, offset, len: len as u64, region_len };
    match offset.checked_add(len as u64) {
        Some(end) if end <= region_len => usize::try_from(offset).map_err(|_| out()),
        _ => Err(out()),
    }
}

impl Transport for ShmTransport {
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
        // Consecutive operations on one region (and key) reuse its lookup.
        let mut last: Option<((NodeId, RegionId, AccessKey), Arc<Attachment>)> = None;
        for (index, op) in ops.iter_mut().enumerate() {
            let (region, _, _) = target(op);
            let id = (region.node, region.region, region.key);
            let attachment = match last.take() {
                Some((seen, attachment)) if seen == id => attachment,
                _ => self.attachment(&region).map_err(|error| BatchError { index, error })?,
            };
            self.run(op, &attachment).map_err(|error| BatchError { index, error })?;
            last = Some((id, attachment));
        }
        Ok(())
    }

    /// Lends the mapped bytes: see [`ShmTransport::with_bytes`].
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
        self.with_bytes(region, offset, len, |bytes| f(bytes))?;
        Ok(true)
    }

    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        self.mailboxes.open_endpoint(endpoint)
    }

    fn close_endpoint(&self, endpoint: &Endpoint) {
        self.mailboxes.close_endpoint(endpoint);
    }

    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        self.mailboxes.send(from, to, payload)
    }

    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        self.mailboxes.recv(at, timeout)
    }
}
