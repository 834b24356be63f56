//! The compute node's side: [`VerbsTransport`].

use super::engine::{self, RunError, Scratch, Target, WorkQueue};
use super::frame::{self, AckStatus, Assembly, Event};
use super::messages::{
    ConnectAccept, ConnectHandler, ConnectReply, ConnectRequest, ConnectTarget, Connector, Disconnect, Refusal,
};
use super::raw::{ibv_wc, ibv_wc_status};
use super::sys::{self, Context, Cq, Pd, Qp, QpSpec, RunFailure, SendGuard, Work, WorkOp};
use super::{random_u64, VerbsConfig, VerbsError};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex, RwLock};
use resc_core::ids::{AccessKey, Endpoint, NodeId, RegionId};
use resc_core::inproc::InProcessFabric;
use resc_core::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Prepared connections whose reply never came are dropped after this long.
const PENDING_TTL: Duration = Duration::from_secs(60);
/// Completions the progress thread fetches per poll.
const POLL_BATCH: usize = 32;

const REM_INV_REQ_ERR: u32 = ibv_wc_status::IBV_WC_REM_INV_REQ_ERR;
const REM_ACCESS_ERR: u32 = ibv_wc_status::IBV_WC_REM_ACCESS_ERR;

/// A queue pair's send side as the batch engine drives it.
struct Timed<'a> {
    guard: SendGuard<'a>,
    timeout: Duration,
    max_works: usize,
}

impl WorkQueue for Timed<'_> {
    fn staging_len(&self) -> usize {
        self.guard.staging_len()
    }

    fn max_works(&self) -> usize {
        self.max_works
    }

    fn stage(&mut self, offset: usize, data: &[u8]) -> bool {
        self.guard.stage(offset, data)
    }

    fn unstage(&self, offset: usize, buf: &mut [u8]) -> bool {
        self.guard.unstage(offset, buf)
    }

    fn run(&mut self, works: &[Work]) -> Result<(), RunFailure> {
        self.guard.run(works, self.timeout)
    }
}

/// A connected queue pair to one physical memory component.
struct RegionLink {
    target: Target,
    qp: Qp,
    scratch: Scratch,
}

/// A region link and the connection id it was requested under.
struct LinkSlot {
    connection: u64,
    link: Mutex<RegionLink>,
}

impl RegionLink {
    fn run(&mut self, ops: &mut [RemoteOp<'_>], timeout: Duration) -> Result<(), RunError> {
        let max_works = self.qp.max_send_wr() as usize;
        let mut queue = Timed { guard: self.qp.send_side(), timeout, max_works };
        engine::execute_run(&mut queue, &self.target, ops, &mut self.scratch)
    }
}

/// A connected queue pair to another compute node, for messages.
struct Peer {
    id: u64,
    node: NodeId,
    requester: NodeId,
    connection: u64,
    qp: Qp,
    recv_cq: Arc<Cq>,
    /// Frame size: the smaller of both ends' receive buffers.
    frame_bytes: usize,
    broken: AtomicBool,
    assembly: Mutex<Option<Assembly>>,
}

enum PendingKind {
    Region { node: NodeId, region: RegionId, key: AccessKey },
    Peer { node: NodeId, recv_cq: Arc<Cq> },
}

/// A queue pair prepared for a connection whose reply has not come yet.
struct Pending {
    kind: PendingKind,
    qp: Qp,
    since: Instant,
}

/// What a completed connection set up.
enum Established {
    Link(Arc<LinkSlot>),
    Peer(Arc<Peer>),
}

/// The status of a message waiting for its acknowledgement: `Err` when the
/// peer connection broke first.
struct AckSlot {
    peer: u64,
    status: Option<Result<AckStatus, ()>>,
}

type AckJob = (Arc<Peer>, u64, AckStatus);

/// Region queue pairs by (memory node, region).
type Links = HashMap<(NodeId, RegionId), Arc<LinkSlot>>;

struct Shared {
    node: NodeId,
    config: VerbsConfig,
    context: Arc<Context>,
    /// The compute side's protection domain: its queue pairs and staging.
    pd: Arc<Pd>,
    /// Receive CQ of queue pairs that receive nothing (region links).
    idle_cq: Arc<Cq>,
    connector: Option<Arc<dyn Connector>>,
    links: RwLock<Links>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_connection: AtomicU64,
    mailboxes: InProcessFabric,
    routes: RwLock<HashMap<Endpoint, NodeId>>,
    peers: RwLock<HashMap<u64, Arc<Peer>>>,
    /// The peer connection this node requested to each node, for sending.
    peer_for_node: RwLock<HashMap<NodeId, u64>>,
    peers_epoch: AtomicU64,
    next_peer: AtomicU64,
    next_seq: AtomicU64,
    acks: Mutex<HashMap<u64, AckSlot>>,
    ack_arrived: Condvar,
    ack_jobs: Sender<AckJob>,
    stop: AtomicBool,
}

/// A compute node's [`Transport`] over RDMA verbs.
///
/// - **One-sided operations** use one RC queue pair per physical memory
///   component (the memory node gives every component its own protection
///   domain, and a queue pair reaches only memory of its own protection
///   domain). A queue pair is connected by a [`ConnectRequest`] carrying the
///   region's access key; the memory node checks it and answers with the
///   region's address, rkey and length. [`Transport::execute`] then posts
///   RDMA READ and WRITE work requests and polls their completions — see
///   the module documentation for how a batch stops at its first failure.
/// - **Messages** between endpoints on different compute nodes travel as
///   SEND/RECV over one RC queue pair per pair of nodes, acknowledged by the
///   receiver (so `send` to an endpoint that is not open fails with
///   `UnknownEndpoint`). Messages between endpoints of this transport are
///   delivered in process. The platform says where remote endpoints live
///   with [`route_endpoint`](Self::route_endpoint).
///
/// Queue pairs connect through control-plane messages only: explicitly
/// ([`prepare_region`](Self::prepare_region) / [`prepare_peer`](Self::prepare_peer)
/// then [`complete`](Self::complete)), or on first use through the
/// [`Connector`] given to [`with_connector`](Self::with_connector).
///
/// Construction fails with [`VerbsError::NoDevice`] on machines without RDMA
/// hardware.
pub struct VerbsTransport {
    shared: Arc<Shared>,
    ack_rx: Mutex<Option<Receiver<AckJob>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for VerbsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerbsTransport")
            .field("node", &self.shared.node)
            .field("device", &self.shared.context.name)
            .field("region_connections", &self.region_connections())
            .field("peer_connections", &self.peer_connections())
            .finish()
    }
}

impl VerbsTransport {
    /// Opens the RDMA device for compute node `node`. Queue pairs connect
    /// only through [`prepare_region`](Self::prepare_region) /
    /// [`prepare_peer`](Self::prepare_peer) and [`complete`](Self::complete).
    pub fn open(node: NodeId, config: &VerbsConfig) -> Result<Self, VerbsError> {
        Self::build(node, config, None)
    }

    /// Like [`open`](Self::open), and connects queue pairs on first use by
    /// sending [`ConnectRequest`]s through `connector`.
    pub fn with_connector(
        node: NodeId,
        config: &VerbsConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, VerbsError> {
        Self::build(node, config, Some(connector))
    }

    fn build(node: NodeId, config: &VerbsConfig, connector: Option<Arc<dyn Connector>>) -> Result<Self, VerbsError> {
        config.validate()?;
        let context = Context::open(config)?;
        let pd = Pd::new(&context)?;
        let idle_cq = Cq::new(&context, 4)?;
        let (ack_jobs, ack_rx) = crossbeam_channel::unbounded();
        Ok(VerbsTransport {
            shared: Arc::new(Shared {
                node,
                config: config.clone(),
                context,
                pd,
                idle_cq,
                connector,
                links: RwLock::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
                next_connection: AtomicU64::new(random_u64() >> 16),
                mailboxes: InProcessFabric::new(),
                routes: RwLock::new(HashMap::new()),
                peers: RwLock::new(HashMap::new()),
                peer_for_node: RwLock::new(HashMap::new()),
                peers_epoch: AtomicU64::new(0),
                next_peer: AtomicU64::new(1),
                next_seq: AtomicU64::new(1),
                acks: Mutex::new(HashMap::new()),
                ack_arrived: Condvar::new(),
                ack_jobs,
                stop: AtomicBool::new(false),
            }),
            ack_rx: Mutex::new(Some(ack_rx)),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// The compute node this transport belongs to.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// The RDMA device in use.
    pub fn device_name(&self) -> &str {
        &self.shared.context.name
    }

    /// Connected queue pairs to physical memory components.
    pub fn region_connections(&self) -> usize {
        self.shared.links.read().len()
    }

    /// Connected queue pairs to other compute nodes (requested or accepted).
    pub fn peer_connections(&self) -> usize {
        self.shared.peers.read().len()
    }

    /// Records that `endpoint` is hosted by compute node `node`, so that
    /// messages to it travel over RDMA SEND to that node.
    pub fn route_endpoint(&self, endpoint: Endpoint, node: NodeId) {
        self.shared.routes.write().insert(endpoint, node);
    }

    /// Forgets where `endpoint` is hosted.
    pub fn unroute_endpoint(&self, endpoint: &Endpoint) {
        self.shared.routes.write().remove(endpoint);
    }

    /// Prepares a queue pair for one-sided access to `region`; the returned
    /// request goes to the region's memory node, and its reply to
    /// [`complete`](Self::complete).
    pub fn prepare_region(&self, region: &RemoteRegion) -> Result<ConnectRequest, VerbsError> {
        let shared = &self.shared;
        let config = &shared.config;
        let send_cq = Cq::new(&shared.context, config.max_outstanding)?;
        let spec = QpSpec {
            max_send_wr: config.max_outstanding,
            staging_bytes: config.staging_bytes,
            recv_slots: 0,
            recv_slot_bytes: 0,
            remote_access: false,
        };
        let qp = Qp::new(&shared.pd, &send_cq, &shared.idle_cq, spec, random_u64() as u32)?;
        let kind = PendingKind::Region { node: region.node, region: region.region, key: region.key };
        let target = ConnectTarget::Region { region: region.region, key: region.key };
        Ok(self.pend(region.node, kind, target, qp))
    }

    /// Prepares a queue pair for messages to compute node `node`; the
    /// returned request goes to that node, and its reply to
    /// [`complete`](Self::complete).
    pub fn prepare_peer(&self, node: NodeId) -> Result<ConnectRequest, VerbsError> {
        let (qp, recv_cq) = self.peer_qp()?;
        Ok(self.pend(node, PendingKind::Peer { node, recv_cq }, ConnectTarget::Peer, qp))
    }

    fn peer_qp(&self) -> Result<(Qp, Arc<Cq>), VerbsError> {
        let shared = &self.shared;
        let config = &shared.config;
        let send_cq = Cq::new(&shared.context, config.message_window)?;
        let recv_cq = Cq::new(&shared.context, config.recv_slots)?;
        let spec = QpSpec {
            max_send_wr: config.message_window,
            staging_bytes: config.message_window as usize * config.message_slot_bytes,
            recv_slots: config.recv_slots,
            recv_slot_bytes: config.message_slot_bytes,
            remote_access: false,
        };
        let qp = Qp::new(&shared.pd, &send_cq, &recv_cq, spec, random_u64() as u32)?;
        Ok((qp, recv_cq))
    }

    fn pend(&self, to: NodeId, kind: PendingKind, target: ConnectTarget, qp: Qp) -> ConnectRequest {
        let shared = &self.shared;
        let connection = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        let request = ConnectRequest { from: shared.node, to, connection, target, qp: qp.info() };
        let now = Instant::now();
        let mut pending = shared.pending.lock();
        pending.retain(|_, p| now.duration_since(p.since) < PENDING_TTL);
        pending.insert(connection, Pending { kind, qp, since: now });
        request
    }

    /// Completes a connection prepared here with the other node's reply:
    /// the queue pair goes to ready-to-send and is used from then on. A
    /// refusal drops the prepared queue pair and is returned as
    /// [`VerbsError::Refused`].
    pub fn complete(&self, reply: &ConnectReply) -> Result<(), VerbsError> {
        self.complete_inner(reply).map(|_| ())
    }

    fn complete_inner(&self, reply: &ConnectReply) -> Result<Established, VerbsError> {
        let shared = &self.shared;
        let unexpected = || VerbsError::UnexpectedReply { node: reply.from(), connection: reply.connection() };
        let pending = {
            let mut pending = shared.pending.lock();
            let expected_node = match pending.get(&reply.connection()).map(|p| &p.kind) {
                Some(PendingKind::Region { node, .. } | PendingKind::Peer { node, .. }) => *node,
                None => return Err(unexpected()),
            };
            if expected_node != reply.from() {
                return Err(unexpected());
            }
            pending.remove(&reply.connection()).ok_or_else(unexpected)?
        };
        let accept: &ConnectAccept = match reply {
            ConnectReply::Refuse(refused) => {
                return Err(VerbsError::Refused { node: refused.from, reason: refused.reason.clone() })
            }
            ConnectReply::Accept(accept) => accept,
        };
        let established = self.establish(pending, accept);
        if established.is_err() {
            // The other end connected a queue pair that will never be used.
            shared.notify_disconnect(accept.from, shared.node, accept.connection);
        }
        established
    }

    fn establish(&self, pending: Pending, accept: &ConnectAccept) -> Result<Established, VerbsError> {
        let shared = &self.shared;
        pending.qp.connect(&accept.qp, &shared.config)?;
        match pending.kind {
            PendingKind::Region { node, region, key } => {
                let access = accept.region.ok_or_else(|| {
                    VerbsError::Config(format!("{node} accepted a region connection without describing the region"))
                })?;
                let link = RegionLink {
                    target: Target { node, region, key, access },
                    qp: pending.qp,
                    scratch: Scratch::default(),
                };
                let link = Arc::new(LinkSlot { connection: accept.connection, link: Mutex::new(link) });
                let kept = {
                    let mut links = shared.links.write();
                    links.entry((node, region)).or_insert_with(|| link.clone()).clone()
                };
                if !Arc::ptr_eq(&kept, &link) {
                    // Another thread connected first: keep its queue pair.
                    shared.notify_disconnect(node, shared.node, accept.connection);
                }
                Ok(Established::Link(kept))
            }
            PendingKind::Peer { node, recv_cq } => {
                let frame_bytes = self.frame_bytes(accept.qp.recv_slot_bytes)?;
                let peer = Arc::new(Peer {
                    id: shared.next_peer.fetch_add(1, Ordering::Relaxed),
                    node,
                    requester: shared.node,
                    connection: accept.connection,
                    qp: pending.qp,
                    recv_cq,
                    frame_bytes,
                    broken: AtomicBool::new(false),
                    assembly: Mutex::new(None),
                });
                shared.peers.write().insert(peer.id, peer.clone());
                shared.peer_for_node.write().insert(node, peer.id);
                shared.peers_epoch.fetch_add(1, Ordering::Release);
                self.ensure_threads();
                Ok(Established::Peer(peer))
            }
        }
    }

    fn frame_bytes(&self, remote_slot: u32) -> Result<usize, VerbsError> {
        let frame = self.shared.config.message_slot_bytes.min(remote_slot as usize);
        if frame <= frame::FIRST_HEADER {
            return Err(VerbsError::Config(format!("the peer's receive buffers ({remote_slot} bytes) are too small")));
        }
        Ok(frame)
    }

    /// Connects a queue pair to `region` now, through the [`Connector`]
    /// (off the critical path, while a code piece loads, say).
    pub fn connect_region(&self, region: &RemoteRegion) -> Result<(), TransportError> {
        self.link(region).map(|_| ())
    }

    /// Connects a queue pair for messages to compute node `node` now,
    /// through the [`Connector`].
    pub fn connect_peer(&self, node: NodeId) -> Result<(), TransportError> {
        self.peer(node).map(|_| ())
    }

    /// Drops the queue pair to a physical memory component (when the
    /// component ends) and tells its memory node.
    pub fn forget_region(&self, node: NodeId, region: RegionId) {
        let slot = self.shared.links.write().remove(&(node, region));
        if let Some(slot) = slot {
            self.shared.notify_disconnect(node, self.shared.node, slot.connection);
        }
    }

    fn connector(&self) -> Option<&Arc<dyn Connector>> {
        self.shared.connector.as_ref()
    }

    /// Sends `request` through the connector and completes it.
    fn connect_via(&self, request: &ConnectRequest) -> Result<Established, VerbsError> {
        let Some(connector) = self.connector() else {
            self.shared.pending.lock().remove(&request.connection);
            return Err(VerbsError::Unreachable {
                node: request.to,
                reason: "no queue pair is connected and the transport has no Connector: connect it with \
                         prepare_region/prepare_peer and complete, or use VerbsTransport::with_connector"
                    .into(),
            });
        };
        let reply = match connector.connect(request) {
            Ok(reply) => reply,
            Err(e) => {
                self.shared.pending.lock().remove(&request.connection);
                return Err(e);
            }
        };
        self.complete_inner(&reply)
    }

    /// The queue pair to `region`, connected on demand.
    fn link(&self, region: &RemoteRegion) -> Result<Arc<LinkSlot>, TransportError> {
        if let Some(link) = self.shared.links.read().get(&(region.node, region.region)) {
            return Ok(link.clone());
        }
        if self.connector().is_none() {
            return Err(TransportError::Disconnected(format!(
                "no queue pair to {} on {}: connect one with prepare_region and complete, \
                 or open the transport with a Connector",
                region.region, region.node
            )));
        }
        let connect = || -> Result<Arc<LinkSlot>, VerbsError> {
            let request = self.prepare_region(region)?;
            match self.connect_via(&request)? {
                Established::Link(link) => Ok(link),
                Established::Peer(_) => Err(VerbsError::UnexpectedReply { node: region.node, connection: 0 }),
            }
        };
        connect().map_err(|e| connect_error(region.node, region.region, e))
    }

    /// The peer connection to `node`, connected on demand.
    fn peer(&self, node: NodeId) -> Result<Arc<Peer>, TransportError> {
        let shared = &self.shared;
        let existing = shared.peer_for_node.read().get(&node).copied();
        if let Some(peer) = existing.and_then(|id| shared.peers.read().get(&id).cloned()) {
            if !peer.broken.load(Ordering::Acquire) {
                return Ok(peer);
            }
        }
        if self.connector().is_none() {
            return Err(TransportError::Disconnected(format!(
                "no queue pair to {node} for messages: connect one with prepare_peer and complete, \
                 or open the transport with a Connector"
            )));
        }
        let connect = || -> Result<Arc<Peer>, VerbsError> {
            let request = self.prepare_peer(node)?;
            match self.connect_via(&request)? {
                Established::Peer(peer) => Ok(peer),
                Established::Link(_) => Err(VerbsError::UnexpectedReply { node, connection: 0 }),
            }
        };
        connect().map_err(|e| match e {
            VerbsError::Unreachable { .. } => TransportError::Disconnected(format!("{node}: {e}")),
            e => TransportError::Disconnected(format!("connecting to {node}: {e}")),
        })
    }

    /// Drops a link whose queue pair failed (if it is still the current
    /// one) and tells the memory node.
    fn drop_link(&self, key: (NodeId, RegionId), link: &Arc<LinkSlot>) {
        let removed = {
            let mut links = self.shared.links.write();
            match links.get(&key) {
                Some(current) if Arc::ptr_eq(current, link) => links.remove(&key),
                _ => None,
            }
        };
        if let Some(slot) = removed {
            self.shared.notify_disconnect(key.0, self.shared.node, slot.connection);
        }
    }

    /// The error of an operation the NIC failed. The queue pair is in the
    /// error state (and dropped); with a connector, the memory node is asked
    /// again whether the region lives — a freed region's registration is
    /// gone, which the NIC reports as a remote access error.
    fn nic_error(&self, region: &RemoteRegion, failure: &RunFailure) -> TransportError {
        let node = region.node;
        let what = match failure {
            RunFailure::Completion { status, .. } => sys::status_text(*status),
            RunFailure::Post { error, .. } => format!("posting the work request failed: {error}"),
            RunFailure::Stuck { .. } => {
                format!("no completion within {:?}", self.shared.config.completion_timeout)
            }
        };
        let access_error = match failure {
            RunFailure::Completion { status, .. } => *status == REM_ACCESS_ERR || *status == REM_INV_REQ_ERR,
            _ => false,
        };
        if self.connector().is_some() {
            return match self.link(region) {
                Ok(_) => TransportError::Disconnected(format!("{node}: {what} (the region is live; reconnected)")),
                Err(e @ (TransportError::UnknownRegion { .. } | TransportError::AccessDenied { .. })) => e,
                Err(_) if access_error => TransportError::UnknownRegion { node, region: region.region },
                Err(e) => TransportError::Disconnected(format!("{node}: {what}; reconnecting failed: {e}")),
            };
        }
        if access_error {
            // Key and bounds were checked before posting: the registration is gone.
            return TransportError::UnknownRegion { node, region: region.region };
        }
        TransportError::Disconnected(format!("{node}: {what}"))
    }

    fn ensure_threads(&self) {
        let mut threads = self.threads.lock();
        if !threads.is_empty() {
            return;
        }
        let Some(ack_rx) = self.ack_rx.lock().take() else { return };
        let shared = self.shared.clone();
        let progress = std::thread::Builder::new()
            .name(format!("resc-verbs-progress-{}", self.shared.node.0))
            .spawn(move || progress_loop(&shared));
        let shared = self.shared.clone();
        let acker = std::thread::Builder::new()
            .name(format!("resc-verbs-acks-{}", self.shared.node.0))
            .spawn(move || ack_loop(&shared, &ack_rx));
        threads.extend(progress.ok());
        threads.extend(acker.ok());
    }

    fn send_remote(&self, node: NodeId, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        let shared = &self.shared;
        if payload.len() as u64 > frame::MAX_MESSAGE {
            return Err(TransportError::Disconnected(format!(
                "a {}-byte message exceeds the {}-byte limit of the verbs transport",
                payload.len(),
                frame::MAX_MESSAGE
            )));
        }
        let peer = self.peer(node)?;
        let seq = shared.next_seq.fetch_add(1, Ordering::Relaxed);
        shared.acks.lock().insert(seq, AckSlot { peer: peer.id, status: None });
        if let Err(failure) = send_frames(shared, &peer, seq, from, to, payload) {
            shared.acks.lock().remove(&seq);
            shared.drop_peer(&peer, true);
            return Err(TransportError::Disconnected(format!("{node}: sending failed: {}", describe(&failure))));
        }
        let deadline = Instant::now() + shared.config.message_timeout;
        let mut acks = shared.acks.lock();
        loop {
            if let Some(status) = acks.get(&seq).and_then(|slot| slot.status) {
                acks.remove(&seq);
                return match status {
                    Ok(AckStatus::Delivered) => Ok(()),
                    Ok(AckStatus::UnknownEndpoint) => Err(TransportError::UnknownEndpoint(to.clone())),
                    Ok(AckStatus::TooLarge) => {
                        Err(TransportError::Disconnected(format!("{node} refused a message this large")))
                    }
                    Err(()) => Err(TransportError::Disconnected(format!("{node}: the connection broke"))),
                };
            }
            if shared.ack_arrived.wait_until(&mut acks, deadline).timed_out() {
                acks.remove(&seq);
                return Err(TransportError::Disconnected(format!(
                    "{node} did not acknowledge a message within {:?}",
                    shared.config.message_timeout
                )));
            }
        }
    }
}

fn describe(failure: &RunFailure) -> String {
    match failure {
        RunFailure::Completion { status, .. } => sys::status_text(*status),
        RunFailure::Post { error, .. } => error.to_string(),
        RunFailure::Stuck { .. } => "no completion".into(),
    }
}

fn connect_error(node: NodeId, region: RegionId, e: VerbsError) -> TransportError {
    match e {
        VerbsError::Refused { reason: Refusal::UnknownRegion, .. } => TransportError::UnknownRegion { node, region },
        VerbsError::Refused { reason: Refusal::AccessDenied, .. } => TransportError::AccessDenied { node, region },
        VerbsError::Unreachable { node, .. } => TransportError::UnknownNode(node),
        e => TransportError::Disconnected(format!("connecting to {region} on {node}: {e}")),
    }
}

/// Posts the frames of one message, `message_window` at a time.
fn send_frames(
    shared: &Shared,
    peer: &Peer,
    seq: u64,
    from: &Endpoint,
    to: &Endpoint,
    payload: &[u8],
) -> Result<(), RunFailure> {
    let timeout = shared.config.completion_timeout;
    let frame_bytes = peer.frame_bytes;
    let mut guard = peer.qp.send_side();
    let slots = (guard.staging_len() / frame_bytes).min(peer.qp.max_send_wr() as usize).max(1);
    let mut works: Vec<Work> = Vec::with_capacity(slots);
    let mut out = Vec::with_capacity(frame_bytes);
    let mut failure = None;
    frame::encode_message(seq, from, to, payload, frame_bytes, &mut out, |bytes| {
        if works.len() == slots {
            if let Err(f) = guard.run(&works, timeout) {
                failure = Some(f);
                return false;
            }
            works.clear();
        }
        let local = works.len() * frame_bytes;
        guard.stage(local, bytes);
        works.push(Work { op: WorkOp::Send, local, len: bytes.len() as u32, remote_addr: 0, rkey: 0, fence: false });
        true
    });
    if let Some(failure) = failure {
        return Err(failure);
    }
    guard.run(&works, timeout)
}

impl Shared {
    fn notify_disconnect(&self, to: NodeId, requester: NodeId, connection: u64) {
        if let Some(connector) = &self.connector {
            connector.disconnect(&Disconnect { from: self.node, to, requester, connection });
        }
    }

    /// Drops a peer connection that failed; waiters of its acknowledgements
    /// learn it at once.
    fn drop_peer(&self, peer: &Arc<Peer>, notify: bool) {
        if peer.broken.swap(true, Ordering::AcqRel) {
            return;
        }
        peer.qp.set_error();
        self.peers.write().remove(&peer.id);
        {
            let mut for_node = self.peer_for_node.write();
            if for_node.get(&peer.node) == Some(&peer.id) {
                for_node.remove(&peer.node);
            }
        }
        self.peers_epoch.fetch_add(1, Ordering::Release);
        {
            let mut acks = self.acks.lock();
            for slot in acks.values_mut().filter(|s| s.peer == peer.id && s.status.is_none()) {
                slot.status = Some(Err(()));
            }
        }
        self.ack_arrived.notify_all();
        if notify {
            self.notify_disconnect(peer.node, peer.requester, peer.connection);
        }
    }

    fn on_frame(&self, peer: &Arc<Peer>, bytes: &[u8]) {
        let event = frame::receive(&mut peer.assembly.lock(), bytes);
        match event {
            Err(_) => self.drop_peer(peer, true),
            Ok(Event::Partial) => {}
            Ok(Event::Ack { seq, status }) => {
                if let Some(slot) = self.acks.lock().get_mut(&seq) {
                    slot.status = Some(Ok(status));
                }
                self.ack_arrived.notify_all();
            }
            Ok(Event::Message { seq, from, to, payload }) => {
                let status = match self.mailboxes.send(&from, &to, &payload) {
                    Ok(()) => AckStatus::Delivered,
                    Err(_) => AckStatus::UnknownEndpoint,
                };
                let _ = self.ack_jobs.send((peer.clone(), seq, status));
            }
            Ok(Event::Rejected { seq }) => {
                let _ = self.ack_jobs.send((peer.clone(), seq, AckStatus::TooLarge));
            }
        }
    }
}

/// Receives on every peer queue pair: reassembles messages into mailboxes,
/// hands acknowledgements to senders, and reposts receive buffers at once
/// (it never blocks on the network, so the peers' senders always progress).
fn progress_loop(shared: &Shared) {
    let mut wcs = vec![ibv_wc::default(); POLL_BATCH];
    let mut bytes = Vec::new();
    let mut peers: Vec<Arc<Peer>> = Vec::new();
    let mut epoch = u64::MAX;
    let mut idle: u32 = 0;
    while !shared.stop.load(Ordering::Acquire) {
        let now_epoch = shared.peers_epoch.load(Ordering::Acquire);
        if now_epoch != epoch {
            peers = shared.peers.read().values().cloned().collect();
            epoch = now_epoch;
        }
        let mut busy = false;
        for peer in &peers {
            if peer.broken.load(Ordering::Acquire) {
                continue;
            }
            let Ok(n) = peer.recv_cq.poll(&mut wcs) else {
                shared.drop_peer(peer, true);
                continue;
            };
            for wc in &wcs[..n] {
                busy = true;
                if peer.broken.load(Ordering::Acquire) {
                    break;
                }
                let slot = u32::try_from(wc.wr_id()).unwrap_or(u32::MAX);
                if wc.error().is_some()
                    || !peer.qp.read_slot(slot, wc.len(), &mut bytes)
                    || peer.qp.post_recv(slot).is_err()
                {
                    shared.drop_peer(peer, true);
                    break;
                }
                shared.on_frame(peer, &bytes);
            }
        }
        if busy {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle < 256 {
            std::hint::spin_loop();
        } else if idle < 2048 {
            std::thread::yield_now();
        } else if idle < 8192 {
            std::thread::sleep(Duration::from_micros(50));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Sends acknowledgements (apart from the progress thread, which must not
/// wait for the network).
fn ack_loop(shared: &Shared, jobs: &Receiver<AckJob>) {
    let timeout = shared.config.completion_timeout;
    loop {
        let (peer, seq, status) = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if !shared.stop.load(Ordering::Acquire) => continue,
            Err(_) => return,
        };
        if peer.broken.load(Ordering::Acquire) {
            continue;
        }
        let ack = frame::encode_ack(seq, status);
        let mut guard = peer.qp.send_side();
        let sent = guard.stage(0, &ack)
            && guard
                .run(
                    &[Work {
                        op: WorkOp::Send,
                        local: 0,
                        len: ack.len() as u32,
                        remote_addr: 0,
                        rkey: 0,
                        fence: false,
                    }],
                    timeout,
                )
                .is_ok();
        drop(guard);
        if !sent {
            shared.drop_peer(&peer, true);
        }
    }
}

impl ConnectHandler for VerbsTransport {
    fn node(&self) -> NodeId {
        self.shared.node
    }

    /// Accepts peer connections (messages between compute nodes); refuses
    /// region connections (a compute node serves no memory).
    fn handle_connect(&self, request: &ConnectRequest) -> ConnectReply {
        let shared = &self.shared;
        if request.to != shared.node {
            return ConnectReply::refuse(request, Refusal::WrongNode);
        }
        if let ConnectTarget::Region { .. } = request.target {
            return ConnectReply::refuse(request, Refusal::Unsupported);
        }
        let accept = || -> Result<ConnectReply, VerbsError> {
            let frame_bytes = self.frame_bytes(request.qp.recv_slot_bytes)?;
            let (qp, recv_cq) = self.peer_qp()?;
            qp.connect(&request.qp, &shared.config)?;
            let info = qp.info();
            let peer = Arc::new(Peer {
                id: shared.next_peer.fetch_add(1, Ordering::Relaxed),
                node: request.from,
                requester: request.from,
                connection: request.connection,
                qp,
                recv_cq,
                frame_bytes,
                broken: AtomicBool::new(false),
                assembly: Mutex::new(None),
            });
            // Received on and acknowledged over; this node sends to the
            // requester over a connection of its own.
            shared.peers.write().insert(peer.id, peer);
            shared.peers_epoch.fetch_add(1, Ordering::Release);
            self.ensure_threads();
            Ok(ConnectReply::Accept(ConnectAccept {
                from: shared.node,
                to: request.from,
                connection: request.connection,
                qp: info,
                region: None,
            }))
        };
        accept().unwrap_or_else(|e| ConnectReply::refuse(request, Refusal::Failed(e.to_string())))
    }

    /// Releases a peer connection the other node dropped, or a region
    /// connection whose region its memory node freed (and then tells the
    /// memory node, which releases its end).
    fn handle_disconnect(&self, notice: &Disconnect) {
        let shared = &self.shared;
        if notice.requester == shared.node {
            let removed = {
                let mut links = shared.links.write();
                let key = links
                    .iter()
                    .find(|((node, _), slot)| *node == notice.from && slot.connection == notice.connection)
                    .map(|(key, _)| *key);
                key.and_then(|key| links.remove(&key))
            };
            if let Some(slot) = removed {
                shared.notify_disconnect(notice.from, shared.node, slot.connection);
                return;
            }
        }
        let peer = self
            .shared
            .peers
            .read()
            .values()
            .find(|p| p.requester == notice.requester && p.connection == notice.connection)
            .cloned();
        if let Some(peer) = peer {
            self.shared.drop_peer(&peer, false);
        }
    }
}

impl Transport for VerbsTransport {
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
        let timeout = self.shared.config.completion_timeout;
        let mut start = 0;
        while start < ops.len() {
            // A run: consecutive operations on one region share its queue
            // pair and are pipelined; runs execute one after the other.
            let key = key_of(&ops[start]);
            let end = start + ops[start..].iter().take_while(|op| key_of(op) == key).count();
            let region = *region_of(&ops[start]);
            let link = self.link(&region).map_err(|error| BatchError { index: start, error })?;
            let result = link.link.lock().run(&mut ops[start..end], timeout);
            match result {
                Ok(()) => start = end,
                Err(RunError::Refused { index, error }) => return Err(BatchError { index: start + index, error }),
                Err(RunError::Nic { index, failure }) => {
                    self.drop_link(key, &link);
                    let region = *region_of(&ops[start + index]);
                    let error = self.nic_error(&region, &failure);
                    return Err(BatchError { index: start + index, error });
                }
            }
        }
        Ok(())
    }

    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        self.shared.mailboxes.open_endpoint(endpoint)
    }

    fn close_endpoint(&self, endpoint: &Endpoint) {
        self.shared.mailboxes.close_endpoint(endpoint);
    }

    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        let route = self.shared.routes.read().get(to).copied();
        match route {
            Some(node) if node != self.shared.node => self.send_remote(node, from, to, payload),
            _ => self.shared.mailboxes.send(from, to, payload),
        }
    }

    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        self.shared.mailboxes.recv(at, timeout)
    }
}

fn region_of<'r>(op: &'r RemoteOp<'_>) -> &'r RemoteRegion {
    match op {
        RemoteOp::Read { region, .. } | RemoteOp::Write { region, .. } => region,
    }
}

fn key_of(op: &RemoteOp<'_>) -> (NodeId, RegionId) {
    let region = region_of(op);
    (region.node, region.region)
}

impl Drop for VerbsTransport {
    fn drop(&mut self) {
        let shared = &self.shared;
        shared.stop.store(true, Ordering::Release);
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
        let links: Vec<_> = shared.links.write().drain().collect();
        for ((node, _), slot) in links {
            shared.notify_disconnect(node, shared.node, slot.connection);
        }
        let peers: Vec<_> = shared.peers.write().drain().map(|(_, p)| p).collect();
        for peer in peers {
            shared.notify_disconnect(peer.node, peer.requester, peer.connection);
        }
    }
}
