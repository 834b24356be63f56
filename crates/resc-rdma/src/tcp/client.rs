//! The compute side: a [`Transport`] and a [`MemoryPool`] over TCP.

use super::{Directory, TcpNodeServer};
use crate::wire::{self, Op, ResponseHead, Status};
use parking_lot::Mutex;
use resc_core::ids::{AccessKey, Endpoint, NodeId, RegionId};
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::{BatchError, Message, RemoteOp, RemoteRegion, Transport, TransportError};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

/// Buffer size of each connection's writer: a batch of requests leaves in few writes.
const WRITE_BUFFER: usize = 256 * 1024;
/// Buffer size of each connection's reader: small, so that the bytes of a
/// large read go straight from the socket into the caller's buffer.
const READ_BUFFER: usize = 16 * 1024;
/// How long a response, or sending a request, may take before the
/// connection counts as lost.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Socket receive buffer the client asks for (the kernel caps it at `rmem_max`).
const RECEIVE_BUFFER: usize = 4 << 20;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest piece of one operation on the wire: longer reads and writes are
/// split, so that no frame approaches the wire's limit.
const CHUNK: usize = 8 << 20;

/// One connection to a node: requests are written back to back and their
/// responses read in order, so a batch has all its operations in flight.
struct Connection {
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    /// Encoding scratch, reused: no allocation per operation.
    head: Vec<u8>,
    next_id: u64,
    /// Set on any I/O error: the stream may be mid-frame, so it is never used again.
    broken: bool,
    /// The wire requests of the window in flight; reused, so that a batch
    /// allocates nothing once the connection is warm.
    chunks: Vec<Chunk>,
}

/// One wire request of a window: a chunk of operation `op`.
struct Chunk {
    op: usize,
    /// The chunk's range within the operation's buffer.
    range: std::ops::Range<usize>,
    id: u64,
}

impl Connection {
    fn open(addr: std::net::SocketAddr) -> io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        stream.set_nodelay(true)?;
        // Room for a whole large answer, so that it arrives in few wake-ups.
        let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::RcvBuf, &RECEIVE_BUFFER);
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Connection {
            reader: BufReader::with_capacity(READ_BUFFER, stream.try_clone()?),
            writer: BufWriter::with_capacity(WRITE_BUFFER, stream),
            head: Vec::with_capacity(64),
            next_id: 1,
            broken: false,
            chunks: Vec::new(),
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

    /// Reads a response's bytes into `buf`: what the reader buffered, then
    /// the rest straight from the socket, asking the kernel to wake us only
    /// when all of it has arrived (MSG_WAITALL) rather than per segment.
    fn read_bytes(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let buffered = self.reader.buffer().len().min(buf.len());
        buf[..buffered].copy_from_slice(&self.reader.buffer()[..buffered]);
        self.reader.consume(buffered);
        let mut at = buffered;
        while at < buf.len() {
            match nix::sys::socket::recv(
                self.reader.get_ref().as_raw_fd(),
                &mut buf[at..],
                nix::sys::socket::MsgFlags::MSG_WAITALL,
            ) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => at += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn skip(&mut self, n: u32) -> io::Result<()> {
        io::copy(&mut (&mut self.reader).take(u64::from(n)), &mut io::sink()).map(|_| ())
    }

    /// Sends a run of operations on this node in pipelined windows and
    /// reads every response, stopping at the first failure.
    ///
    /// A window holds writes, then reads: the client sends all of it, then
    /// reads the answers. Were a write to follow a read in one window, the
    /// server could block sending the read's bytes while the client blocks
    /// sending the write's: so a write after a read opens a new window.
    fn run(&mut self, node: NodeId, ops: &mut [RemoteOp<'_>], first: usize) -> Result<(), BatchError> {
        let mut start = 0;
        while start < ops.len() {
            let first_read = ops[start..].iter().position(|op| matches!(op, RemoteOp::Read { .. }));
            let end = match first_read {
                Some(r) => {
                    let reads_from = start + r;
                    reads_from + ops[reads_from..].iter().take_while(|op| matches!(op, RemoteOp::Read { .. })).count()
                }
                None => ops.len(),
            };
            let result = self.window(node, &mut ops[start..end], first + start);
            if let Err(e) = result {
                if matches!(e.error, TransportError::Disconnected(_)) {
                    self.broken = true;
                }
                return Err(e);
            }
            start = end;
        }
        Ok(())
    }

    fn window(&mut self, node: NodeId, ops: &mut [RemoteOp<'_>], first: usize) -> Result<(), BatchError> {
        let lost =
            |index: usize| move |e: io::Error| BatchError { index, error: TransportError::Disconnected(e.to_string()) };
        let mut chunks = std::mem::take(&mut self.chunks);
        chunks.clear();
        let sent = (|| -> io::Result<()> {
            let count: usize = ops.iter().map(|op| op_len(op).div_ceil(CHUNK).max(1)).sum();
            let batched = count > 1;
            let batch_id = if batched {
                let count = u32::try_from(count).map_err(|_| io::Error::other("a batch of over 4 billion requests"))?;
                Some(self.send_head(&Op::Batch { count }, 0)?)
            } else {
                None
            };
            for (i, op) in ops.iter().enumerate() {
                let len = op_len(op);
                let mut at = 0;
                loop {
                    let n = (len - at).min(CHUNK);
                    let chunk_len = n as u32; // n ≤ CHUNK < 4 GiB
                    let id = match op {
                        RemoteOp::Read { region, offset, .. } => self.send_head(
                            &Op::Read {
                                region: region.region,
                                key: region.key,
                                offset: offset + at as u64,
                                len: chunk_len,
                            },
                            0,
                        )?,
                        RemoteOp::Write { region, offset, data } => {
                            let id = self.send_head(
                                &Op::Write { region: region.region, key: region.key, offset: offset + at as u64 },
                                chunk_len,
                            )?;
                            self.writer.write_all(&data[at..at + n])?;
                            id
                        }
                    };
                    chunks.push(Chunk { op: i, range: at..at + n, id });
                    at += n;
                    if at >= len {
                        break;
                    }
                }
            }
            self.writer.flush()?;
            if let Some(id) = batch_id {
                self.response(id)?;
            }
            Ok(())
        })();
        let result = sent.map_err(lost(first)).and_then(|()| self.answers(node, ops, first, &chunks));
        self.chunks = chunks;
        result
    }

    /// Reads the answers to a window's chunks, in order.
    fn answers(
        &mut self,
        node: NodeId,
        ops: &mut [RemoteOp<'_>],
        first: usize,
        chunks: &[Chunk],
    ) -> Result<(), BatchError> {
        let lost =
            |index: usize| move |e: io::Error| BatchError { index, error: TransportError::Disconnected(e.to_string()) };
        let mut failure = None;
        for chunk in chunks {
            let index = first + chunk.op;
            let head = self.response(chunk.id).map_err(lost(index))?;
            let op = &mut ops[chunk.op];
            match (head.status, op) {
                (Status::Ok, RemoteOp::Read { buf, .. }) if head.tail as usize == chunk.range.len() => {
                    self.read_bytes(&mut buf[chunk.range.clone()]).map_err(lost(index))?;
                }
                (Status::Ok, RemoteOp::Write { .. }) => self.skip(head.tail).map_err(lost(index))?,
                (status, op) => {
                    self.skip(head.tail).map_err(lost(index))?;
                    let region = match op {
                        RemoteOp::Read { region, .. } | RemoteOp::Write { region, .. } => *region,
                    };
                    if failure.is_none() && status != Status::Skipped {
                        failure = Some(BatchError { index, error: error_of(status, node, &region) });
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

fn op_len(op: &RemoteOp<'_>) -> usize {
    match op {
        RemoteOp::Read { buf, .. } => buf.len(),
        RemoteOp::Write { data, .. } => data.len(),
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
            if !c.lock().broken {
                return Ok(c.clone());
            }
        }
        let addr = self.directory.node(node).ok_or(TransportError::UnknownNode(node))?;
        let connection = Connection::open(addr).map_err(|e| TransportError::Disconnected(format!("{node}: {e}")))?;
        let fresh = Arc::new(Mutex::new(connection));
        let mut connections = self.connections.lock();
        let slot = connections.entry(node).or_insert_with(|| fresh.clone());
        if slot.lock().broken {
            *slot = fresh;
        }
        Ok(slot.clone())
    }

    /// Opens the connection to `node` now, off the critical path (while a
    /// code piece loads, say), so the first operation does not pay for it.
    pub fn preconnect(&self, node: NodeId) -> Result<(), TransportError> {
        self.connection(node).map(|_| ())
    }

    /// Drops a connection that failed (only that one: a healthy replacement
    /// stays); the next operation reconnects.
    fn forget(&self, node: NodeId, failed: &Arc<Mutex<Connection>>) {
        failed.lock().broken = true;
        let mut connections = self.connections.lock();
        if connections.get(&node).is_some_and(|c| Arc::ptr_eq(c, failed)) {
            connections.remove(&node);
        }
    }

    /// How many connections are open (one per remote node used).
    pub fn open_connections(&self) -> usize {
        self.connections.lock().len()
    }

    fn call(&self, node: NodeId, op: &Op) -> Result<ResponseHead, TransportError> {
        let connection = self.connection(node)?;
        let result = connection.lock().call(op);
        result.map_err(|e| {
            self.forget(node, &connection);
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
                    self.forget(node, &connection);
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
        let length = u32::try_from(payload.len()).ok().filter(|&n| n <= wire::MAX_MESSAGE).ok_or_else(|| {
            TransportError::Disconnected(format!("a message of {} bytes is over the wire's limit", payload.len()))
        })?;
        let connection = self.connection(node)?;
        let result = (|| {
            let mut c = connection.lock();
            let id = c.send_head(&Op::Send { from: from.clone(), to: to.clone() }, length)?;
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
                self.forget(node, &connection);
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
