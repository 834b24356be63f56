//! The compute side: a [`Transport`] and a [`MemoryPool`] over TCP.

use super::{Directory, TcpNodeServer};
use crate::wire::{self, Op, ResponseHead, Status};
use parking_lot::Mutex;
use resc_core::ids::{AccessKey, Endpoint, NodeId, RegionId};
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
use std::collections::HashMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

/// Buffer size of each connection's writer: a batch of requests leaves in few writes.
const WRITE_BUFFER: usize = 256 * 1024;
/// Buffer size of each connection's reader: small, so that the bytes of a
/// large read go straight from the socket into the caller's buffer.
const READ_BUFFER: usize = 16 * 1024;
/// How long a response may take before the connection counts as lost.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// One connection to a node: requests are written back to back and their
/// responses read in order, so a batch has all its operations in flight.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// Encoding scratch, reused: no allocation per operation.
    head: Vec<u8>,
    next_id: u64,
}

impl Connection {
    fn open(addr: std::net::SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::with_capacity(READ_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(WRITE_BUFFER, stream),
            head: Vec::with_capacity(64),
            next_id: 1,
        })
    }

    fn send_head(&mut self, op: &Op, tail: u32) -> io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.head.clear();
        wire::encode_request_head(&mut self.head, id, op, tail);
        self.writer.write_all(&self.head)?;
        Ok(id)
    }

    /// Reads one response head; a tail is left for the caller to read.
    fn response(&mut self, expected: u64) -> io::Result<ResponseHead> {
        let mut prefix = [0u8; 4];
        self.reader.read_exact(&mut prefix)?;
        let mut head = [0u8; wire::RESPONSE_HEAD];
        self.reader.read_exact(&mut head)?;
        let head = wire::decode_response_head(u32::from_le_bytes(prefix), &head)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if head.status == Status::Malformed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the server refused a malformed frame"));
        }
        if head.id != expected {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a response out of order"));
        }
        Ok(head)
    }

    fn skip(&mut self, n: u32) -> io::Result<()> {
        io::copy(&mut (&mut self.reader).take(u64::from(n)), &mut io::sink()).map(|_| ())
    }

    /// Sends a run of operations on this node as one pipelined batch and
    /// reads every response, stopping at the first failure.
    fn run(&mut self, node: NodeId, ops: &mut [RemoteOp<'_>], first: usize) -> Result<(), BatchError> {
        let lost = |e: io::Error| BatchError { index: first, error: TransportError::Disconnected(e.to_string()) };
        let batched = ops.len() > 1;
        let mut ids = [0u64; 0].to_vec();
        let mut batch_id = 0;
        (|| -> io::Result<()> {
            if batched {
                batch_id = self.send_head(&Op::Batch { count: ops.len() as u32 }, 0)?;
            }
            ids.reserve(ops.len());
            for op in ops.iter() {
                let id = match op {
                    RemoteOp::Read { region, offset, buf } => self.send_head(
                        &Op::Read { region: region.region, key: region.key, offset: *offset, len: buf.len() as u32 },
                        0,
                    )?,
                    RemoteOp::Write { region, offset, data } => {
                        let id = self.send_head(
                            &Op::Write { region: region.region, key: region.key, offset: *offset },
                            data.len() as u32,
                        )?;
                        self.writer.write_all(data)?;
                        id
                    }
                };
                ids.push(id);
            }
            self.writer.flush()
        })()
        .map_err(lost)?;
        if batched {
            self.response(batch_id).map_err(lost)?;
        }
        let mut failure = None;
        for (i, (op, id)) in ops.iter_mut().zip(ids).enumerate() {
            let head = self.response(id).map_err(|e| BatchError { index: first + i, ..lost(e) })?;
            match (head.status, op) {
                (Status::Ok, RemoteOp::Read { buf, .. }) if head.tail as usize == buf.len() => {
                    self.reader.read_exact(buf).map_err(lost)?;
                }
                (Status::Ok, RemoteOp::Write { .. }) => self.skip(head.tail).map_err(lost)?,
                (status, op) => {
                    self.skip(head.tail).map_err(lost)?;
                    let region = match op {
                        RemoteOp::Read { region, .. } | RemoteOp::Write { region, .. } => *region,
                    };
                    if failure.is_none() && status != Status::Skipped {
                        failure = Some(BatchError { index: first + i, error: error_of(status, node, &region) });
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// One request with no tail; its response head (the tail is skipped).
    fn call(&mut self, op: &Op) -> io::Result<ResponseHead> {
        let id = self.send_head(op, 0)?;
        self.writer.flush()?;
        let head = self.response(id)?;
        self.skip(head.tail)?;
        Ok(head)
    }
}

fn error_of(status: Status, node: NodeId, region: &RemoteRegion) -> TransportError {
    match status {
        Status::AccessDenied => TransportError::AccessDenied { node, region: region.region },
        Status::OutOfBounds { offset, len, region_len } => {
            TransportError::OutOfBounds { region: region.region, offset, len, region_len }
        }
        Status::UnknownRegion => TransportError::UnknownRegion { node, region: region.region },
        other => TransportError::Disconnected(format!("{node} answered {other:?}")),
    }
}

/// A [`Transport`] over TCP. One connection per remote node, shared by every
/// physical memory component there; connections open on first use or ahead
/// of it with [`preconnect`](TcpTransport::preconnect). Messages are
/// delivered into the mailbox of the node that hosts the receiving endpoint;
/// endpoints opened here live on the local node server.
pub struct TcpTransport {
    directory: Arc<Directory>,
    local: Option<Arc<TcpNodeServer>>,
    connections: Mutex<HashMap<NodeId, Arc<Mutex<Connection>>>>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("connections", &self.connections.lock().len())
            .field("local", &self.local.as_ref().map(|l| l.node()))
            .finish()
    }
}

impl TcpTransport {
    /// A transport that reaches nodes through `directory` and hosts no endpoints.
    pub fn new(directory: Arc<Directory>) -> Self {
        TcpTransport { directory, local: None, connections: Mutex::new(HashMap::new()) }
    }

    /// A transport whose endpoints live on `local`, the server of this process's node.
    pub fn with_local_node(directory: Arc<Directory>, local: Arc<TcpNodeServer>) -> Self {
        directory.add_node(local.node(), local.local_addr());
        TcpTransport { directory, local: Some(local), connections: Mutex::new(HashMap::new()) }
    }

    fn connection(&self, node: NodeId) -> Result<Arc<Mutex<Connection>>, TransportError> {
        if let Some(c) = self.connections.lock().get(&node) {
            return Ok(c.clone());
        }
        let addr = self.directory.node(node).ok_or(TransportError::UnknownNode(node))?;
        let connection = Connection::open(addr).map_err(|e| TransportError::Disconnected(format!("{node}: {e}")))?;
        Ok(self.connections.lock().entry(node).or_insert_with(|| Arc::new(Mutex::new(connection))).clone())
    }

    /// Opens the connection to `node` now, off the critical path (while a
    /// code piece loads, say), so the first operation does not pay for it.
    pub fn preconnect(&self, node: NodeId) -> Result<(), TransportError> {
        self.connection(node).map(|_| ())
    }

    /// Drops a connection that failed; the next operation reconnects.
    fn forget(&self, node: NodeId) {
        self.connections.lock().remove(&node);
    }

    /// How many connections are open (one per remote node used).
    pub fn open_connections(&self) -> usize {
        self.connections.lock().len()
    }

    fn call(&self, node: NodeId, op: &Op) -> Result<ResponseHead, TransportError> {
        let connection = self.connection(node)?;
        let result = connection.lock().call(op);
        result.map_err(|e| {
            self.forget(node);
            TransportError::Disconnected(format!("{node}: {e}"))
        })
    }
}

impl Transport for TcpTransport {
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError> {
        // Consecutive operations on one node form one pipelined batch; the
        // batches run in order, so the batch contract holds across nodes.
        let mut start = 0;
        while start < ops.len() {
            let node = node_of(&ops[start]);
            let end = start + ops[start..].iter().take_while(|op| node_of(op) == node).count();
            let connection = self.connection(node).map_err(|error| BatchError { index: start, error })?;
            let result = connection.lock().run(node, &mut ops[start..end], start);
            if let Err(e) = result {
                if matches!(e.error, TransportError::Disconnected(_)) {
                    self.forget(node);
                }
                return Err(e);
            }
            start = end;
        }
        Ok(())
    }

    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        let local = self.local.as_ref().ok_or_else(|| {
            TransportError::Disconnected("this transport has no local node server to host endpoints".into())
        })?;
        local.open_endpoint(endpoint)?;
        self.directory.add_endpoint(endpoint.clone(), local.node());
        Ok(())
    }

    fn close_endpoint(&self, endpoint: &Endpoint) {
        if let Some(local) = &self.local {
            local.close_endpoint(endpoint);
            self.directory.remove_endpoint(endpoint);
        }
    }

    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        let node = self.directory.endpoint(to).ok_or_else(|| TransportError::UnknownEndpoint(to.clone()))?;
        if let Some(local) = self.local.as_ref().filter(|l| l.node() == node) {
            return local.deliver(from, to, payload);
        }
        let connection = self.connection(node)?;
        let result = (|| {
            let mut c = connection.lock();
            let id = c.send_head(&Op::Send { from: from.clone(), to: to.clone() }, payload.len() as u32)?;
            c.writer.write_all(payload)?;
            c.writer.flush()?;
            let head = c.response(id)?;
            c.skip(head.tail)?;
            Ok::<_, io::Error>(head.status)
        })();
        match result {
            Ok(Status::Ok) => Ok(()),
            Ok(_) => Err(TransportError::UnknownEndpoint(to.clone())),
            Err(e) => {
                self.forget(node);
                Err(TransportError::Disconnected(format!("{node}: {e}")))
            }
        }
    }

    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        match &self.local {
            Some(local) => local.recv(at, timeout),
            None => Err(TransportError::UnknownEndpoint(at.clone())),
        }
    }
}

fn node_of(op: &RemoteOp<'_>) -> NodeId {
    match op {
        RemoteOp::Read { region, .. } | RemoteOp::Write { region, .. } => region.node,
    }
}

/// A memory node's controller reached over TCP: allocation and freeing run
/// on the node's server, which issues the keys.
#[derive(Debug)]
pub struct TcpMemoryPool {
    node: NodeId,
    transport: TcpTransport,
}

impl TcpMemoryPool {
    /// The controller of `node`, reached through `directory`.
    pub fn new(node: NodeId, directory: Arc<Directory>) -> Self {
        TcpMemoryPool { node, transport: TcpTransport::new(directory) }
    }

    fn stats(&self) -> [u64; 3] {
        match self.transport.call(self.node, &Op::Stats) {
            Ok(head) if head.status == Status::Ok => head.values,
            _ => [0; 3],
        }
    }
}

fn pool_error(node: NodeId, status: Status, region: RegionId, bytes: u64) -> PoolError {
    match status {
        Status::OutOfMemory { requested, free } => PoolError::OutOfMemory { node, requested, free },
        Status::ZeroLength => PoolError::ZeroLength,
        Status::UnknownRegion => PoolError::UnknownRegion { node, region },
        Status::AccessDenied => PoolError::AccessDenied { node, region },
        other => PoolError::System { bytes, reason: format!("{node} answered {other:?}") },
    }
}

impl MemoryPool for TcpMemoryPool {
    fn node(&self) -> NodeId {
        self.node
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        let head = self
            .transport
            .call(self.node, &Op::Allocate { bytes })
            .map_err(|e| PoolError::System { bytes, reason: e.to_string() })?;
        match head.status {
            Status::Ok => Ok(RemoteRegion {
                node: self.node,
                region: RegionId(head.values[0]),
                key: AccessKey(head.values[1]),
                len: head.values[2],
            }),
            status => Err(pool_error(self.node, status, RegionId(0), bytes)),
        }
    }

    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
        let head = self
            .transport
            .call(self.node, &Op::Free { region: region.region, key: region.key })
            .map_err(|e| PoolError::System { bytes: region.len, reason: e.to_string() })?;
        match head.status {
            Status::Ok => Ok(()),
            status => Err(pool_error(self.node, status, region.region, region.len)),
        }
    }

    fn capacity_bytes(&self) -> u64 {
        self.stats()[0]
    }

    fn allocated_bytes(&self) -> u64 {
        self.stats()[1]
    }
}
