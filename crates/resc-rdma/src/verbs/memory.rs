//! The memory node's side: [`VerbsMemory`].

use super::messages::{
    ConnectAccept, ConnectHandler, ConnectReply, ConnectRequest, ConnectTarget, Connector, Disconnect, Refusal,
    RegionAccess,
};
use super::sys::{Context, Cq, Pd, Qp, QpSpec, Registered};
use super::{random_u64, VerbsConfig, VerbsError};
use parking_lot::Mutex;
use resc_core::ids::{AccessKey, NodeId, RegionId};
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::RemoteRegion;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Connections are named by their requester and its connection id.
type ConnectionKey = (NodeId, u64);

/// One physical memory component: its own protection domain, its memory
/// registration, and the queue pairs connected to it.
struct Region {
    key: AccessKey,
    len: u64,
    access: RegionAccess,
    pd: Arc<Pd>,
    /// The registered bytes; `None` once freed (deregistered and unmapped).
    memory: Mutex<Option<Registered>>,
    /// Queue pairs in the region's protection domain, one per connection.
    /// Also the lock that orders connecting against freeing.
    qps: Mutex<HashMap<ConnectionKey, Qp>>,
}

struct PoolState {
    allocated: u64,
    live: HashMap<RegionId, Arc<Region>>,
    /// Freed regions whose queue pairs still exist: requests on them get an
    /// immediate remote-access NAK (their memory registration is gone)
    /// until the requester disconnects or the tombstone expires.
    tombstones: HashMap<RegionId, (Instant, Arc<Region>)>,
    connections: HashMap<ConnectionKey, RegionId>,
}

/// A memory node's controller on RDMA hardware.
///
/// Every physical memory component gets its own protection domain and one
/// memory registration of exactly its bytes (fresh anonymous memory, so it
/// reads as zeros), and a random 64-bit access key. The key is the
/// capability: a compute node presents it in a [`ConnectRequest`], and only
/// then does this controller connect a queue pair *in the region's
/// protection domain* and answer with the region's address, rkey and length
/// ([`RegionAccess`]). The NIC then checks every RDMA READ and WRITE against
/// the registration (rkey, bounds and protection domain) without this
/// controller's CPU.
///
/// [`MemoryPool::free`] deregisters and unmaps the region at once and
/// releases its capacity; queue pairs connected to it stay (as a tombstone,
/// for [`VerbsConfig::tombstone_ttl`] or until their requester sends
/// [`Disconnect`]) so that a compute node's next access fails fast with a
/// remote access error instead of a retry timeout. With a [`Connector`]
/// ([`with_connector`](Self::with_connector)), `free` also sends each
/// connected compute node a [`Disconnect`], so it drops its queue pair (and
/// answers with its own `Disconnect`, which ends the tombstone) before its
/// next access.
///
/// Construction fails with [`VerbsError::NoDevice`] on machines without RDMA
/// hardware.
pub struct VerbsMemory {
    node: NodeId,
    capacity: u64,
    config: VerbsConfig,
    connector: Option<Arc<dyn Connector>>,
    context: Arc<Context>,
    /// The completion queue of every queue pair here (they post nothing:
    /// the memory node is only ever the responder).
    cq: Arc<Cq>,
    state: Mutex<PoolState>,
    next_region: AtomicU64,
}

impl std::fmt::Debug for VerbsMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("VerbsMemory")
            .field("node", &self.node)
            .field("device", &self.context.name)
            .field("capacity", &self.capacity)
            .field("allocated", &state.allocated)
            .field("regions", &state.live.len())
            .field("tombstones", &state.tombstones.len())
            .finish()
    }
}

impl VerbsMemory {
    /// Opens the RDMA device for memory node `node` with `capacity` bytes.
    pub fn open(node: NodeId, capacity: u64, config: &VerbsConfig) -> Result<Self, VerbsError> {
        Self::build(node, capacity, config, None)
    }

    /// Like [`open`](Self::open), and tells compute nodes through
    /// `connector` when a region they are connected to is freed.
    pub fn with_connector(
        node: NodeId,
        capacity: u64,
        config: &VerbsConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, VerbsError> {
        Self::build(node, capacity, config, Some(connector))
    }

    fn build(
        node: NodeId,
        capacity: u64,
        config: &VerbsConfig,
        connector: Option<Arc<dyn Connector>>,
    ) -> Result<Self, VerbsError> {
        config.validate()?;
        let context = Context::open(config)?;
        let cq = Cq::new(&context, 16)?;
        Ok(VerbsMemory {
            node,
            capacity,
            config: config.clone(),
            connector,
            context,
            cq,
            state: Mutex::new(PoolState {
                allocated: 0,
                live: HashMap::new(),
                tombstones: HashMap::new(),
                connections: HashMap::new(),
            }),
            next_region: AtomicU64::new(1),
        })
    }

    /// The memory node this controller manages (also
    /// [`MemoryPool::node`] and [`ConnectHandler::node`]).
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The RDMA device in use.
    pub fn device_name(&self) -> &str {
        &self.context.name
    }

    /// How many queue pairs are connected to live or freed regions.
    pub fn connections(&self) -> usize {
        self.state.lock().connections.len()
    }

    fn fresh_key() -> AccessKey {
        loop {
            let key = random_u64();
            if key != 0 {
                return AccessKey(key);
            }
        }
    }

    /// Drops expired tombstones (their queue pairs and protection domains).
    fn reap(&self, now: Instant) {
        let expired: Vec<Arc<Region>> = {
            let mut state = self.state.lock();
            let ttl = self.config.tombstone_ttl;
            let ids: Vec<RegionId> = state
                .tombstones
                .iter()
                .filter(|(_, (since, _))| now.duration_since(*since) >= ttl)
                .map(|(id, _)| *id)
                .collect();
            let regions: Vec<Arc<Region>> =
                ids.iter().filter_map(|id| state.tombstones.remove(id)).map(|(_, r)| r).collect();
            for region in &regions {
                for key in region.qps.lock().keys() {
                    state.connections.remove(key);
                }
            }
            regions
        };
        drop(expired);
    }

    fn connect(&self, request: &ConnectRequest, id: RegionId, key: AccessKey) -> Result<ConnectAccept, Refusal> {
        let region = self.state.lock().live.get(&id).cloned().ok_or(Refusal::UnknownRegion)?;
        if region.key != key {
            return Err(Refusal::AccessDenied);
        }
        let connection = (request.from, request.connection);
        let info = {
            let mut qps = region.qps.lock();
            if region.memory.lock().is_none() {
                return Err(Refusal::UnknownRegion);
            }
            let spec =
                QpSpec { max_send_wr: 1, staging_bytes: 0, recv_slots: 0, recv_slot_bytes: 0, remote_access: true };
            let qp = Qp::new(&region.pd, &self.cq, &self.cq, spec, random_u64() as u32)
                .map_err(|e| Refusal::Failed(e.to_string()))?;
            qp.connect(&request.qp, &self.config).map_err(|e| Refusal::Failed(e.to_string()))?;
            let info = qp.info();
            // A reused connection id replaces (and destroys) the old queue pair.
            qps.insert(connection, qp);
            info
        };
        self.state.lock().connections.insert(connection, id);
        Ok(ConnectAccept {
            from: self.node,
            to: request.from,
            connection: request.connection,
            qp: info,
            region: Some(region.access),
        })
    }
}

impl ConnectHandler for VerbsMemory {
    fn node(&self) -> NodeId {
        self.node
    }

    /// Connects a queue pair to a live region whose key the request
    /// presents; refuses with [`Refusal::UnknownRegion`] or
    /// [`Refusal::AccessDenied`] otherwise.
    fn handle_connect(&self, request: &ConnectRequest) -> ConnectReply {
        self.reap(Instant::now());
        if request.to != self.node {
            return ConnectReply::refuse(request, Refusal::WrongNode);
        }
        match request.target {
            ConnectTarget::Peer => ConnectReply::refuse(request, Refusal::Unsupported),
            ConnectTarget::Region { region, key } => match self.connect(request, region, key) {
                Ok(accept) => ConnectReply::Accept(accept),
                Err(reason) => ConnectReply::refuse(request, reason),
            },
        }
    }

    fn handle_disconnect(&self, notice: &Disconnect) {
        let key = (notice.requester, notice.connection);
        let (region, tombstone) = {
            let mut state = self.state.lock();
            let Some(id) = state.connections.remove(&key) else { return };
            match state.live.get(&id) {
                Some(region) => (region.clone(), None),
                None => match state.tombstones.get(&id) {
                    Some((_, region)) => (region.clone(), Some(id)),
                    None => return,
                },
            }
        };
        let (qp, empty) = {
            let mut qps = region.qps.lock();
            (qps.remove(&key), qps.is_empty())
        };
        drop(qp);
        if let (Some(id), true) = (tombstone, empty) {
            let gone = self.state.lock().tombstones.remove(&id);
            drop(gone);
        }
    }
}

impl MemoryPool for VerbsMemory {
    fn node(&self) -> NodeId {
        self.node
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        if bytes == 0 {
            return Err(PoolError::ZeroLength);
        }
        let system = |reason: String| PoolError::System { bytes, reason };
        let len = usize::try_from(bytes).map_err(|_| system("larger than the address space".into()))?;
        {
            let mut state = self.state.lock();
            let free = self.capacity - state.allocated;
            if bytes > free {
                return Err(PoolError::OutOfMemory { node: self.node, requested: bytes, free });
            }
            // Reserve now; registering is slow and happens unlocked.
            state.allocated += bytes;
        }
        let registered = Pd::new(&self.context).and_then(|pd| Registered::new(&pd, len, true).map(|m| (pd, m)));
        let (pd, memory) = match registered {
            Ok(done) => done,
            Err(e) => {
                self.state.lock().allocated -= bytes;
                return Err(system(e.to_string()));
            }
        };
        let id = RegionId(self.next_region.fetch_add(1, Ordering::Relaxed));
        let key = Self::fresh_key();
        let access = RegionAccess { addr: memory.addr(), rkey: memory.rkey(), len: bytes };
        let region =
            Region { key, len: bytes, access, pd, memory: Mutex::new(Some(memory)), qps: Mutex::new(HashMap::new()) };
        self.state.lock().live.insert(id, Arc::new(region));
        Ok(RemoteRegion { node: self.node, region: id, key, len: bytes })
    }

    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
        let unknown = PoolError::UnknownRegion { node: self.node, region: region.region };
        if region.node != self.node {
            return Err(unknown);
        }
        let entry = {
            let mut state = self.state.lock();
            let entry = state.live.get(&region.region).ok_or(unknown)?;
            if entry.key != region.key {
                return Err(PoolError::AccessDenied { node: self.node, region: region.region });
            }
            let entry = state
                .live
                .remove(&region.region)
                .ok_or(PoolError::UnknownRegion { node: self.node, region: region.region })?;
            state.allocated -= entry.len;
            entry
        };
        // Deregister and unmap now (under the connection lock, so that no
        // queue pair is connected to a freed region afterwards).
        let (memory, connected) = {
            let qps = entry.qps.lock();
            (entry.memory.lock().take(), qps.keys().copied().collect::<Vec<ConnectionKey>>())
        };
        drop(memory);
        if !connected.is_empty() {
            self.state.lock().tombstones.insert(region.region, (Instant::now(), entry));
        }
        self.reap(Instant::now());
        // No lock is held: a local connector may answer synchronously.
        if let Some(connector) = &self.connector {
            for (requester, connection) in connected {
                connector.disconnect(&Disconnect { from: self.node, to: requester, requester, connection });
            }
        }
        Ok(())
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity
    }

    fn allocated_bytes(&self) -> u64 {
        self.state.lock().allocated
    }
}
