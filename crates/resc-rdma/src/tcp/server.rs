//! A node's server: serves one-sided operations on its regions (checking key
//! and bounds on every one), allocation, and delivery into its mailboxes.

use super::spin::SpinPolicy;
use crate::wire::{self, Op, RequestHead, Status, WireError};
use parking_lot::Mutex;
use resc_core::ids::{Endpoint, NodeId};
use resc_core::inproc::{InProcessFabric, InProcessMemory};
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::{Message, RemoteRegion, Transport, TransportError};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Socket send buffer the server asks for (the kernel caps it at `wmem_max`).
const SEND_BUFFER: usize = 4 << 20;
/// How long a frame may take to arrive once begun, and an answer to leave.
const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// Buffer size of each connection's writer: answers to a batch leave together.
const WRITE_BUFFER: usize = 256 * 1024;
/// Buffer size of each connection's reader (a write's bytes are read into
/// the connection's scratch buffer, up to the client's 8 MiB chunk).
const READ_BUFFER: usize = 64 * 1024;

struct Shared {
    node: NodeId,
    memory: Option<Arc<InProcessMemory>>,
    /// Local mailboxes (and, for `Send`, delivery into them).
    mailboxes: InProcessFabric,
    /// Open connections, so that shutdown can close them.
    connections: Mutex<HashMap<u64, TcpStream>>,
    next_connection: AtomicU64,
    stopping: AtomicBool,
}

/// A node's TCP server. A memory node passes its memory controller; a
/// compute node passes none and only hosts mailboxes.
pub struct TcpNodeServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TcpNodeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpNodeServer").field("node", &self.shared.node).field("addr", &self.addr).finish()
    }
}

impl TcpNodeServer {
    /// Listens on `addr` and serves connections on threads of their own.
    pub fn bind(
        addr: impl ToSocketAddrs,
        node: NodeId,
        memory: Option<Arc<InProcessMemory>>,
    ) -> io::Result<Arc<TcpNodeServer>> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let mailboxes = InProcessFabric::new();
        if let Some(memory) = &memory {
            mailboxes.attach(memory.clone());
        }
        let shared = Arc::new(Shared {
            node,
            memory,
            mailboxes,
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::Builder::new()
            .name(format!("resc-tcp-{}", node.0))
            .spawn(move || accept(&listener, &accepting))?;
        Ok(Arc::new(TcpNodeServer { addr, shared }))
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The node it serves.
    pub fn node(&self) -> NodeId {
        self.shared.node
    }

    /// Opens a mailbox on this node.
    pub fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError> {
        self.shared.mailboxes.open_endpoint(endpoint)
    }

    /// Closes a mailbox on this node.
    pub fn close_endpoint(&self, endpoint: &Endpoint) {
        self.shared.mailboxes.close_endpoint(endpoint);
    }

    /// Delivers a message into a mailbox of this node.
    pub fn deliver(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError> {
        self.shared.mailboxes.send(from, to, payload)
    }

    /// Waits for a message in a mailbox of this node.
    pub fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError> {
        self.shared.mailboxes.recv(at, timeout)
    }

    /// Stops accepting and closes every connection. Idempotent.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for (_, connection) in self.shared.connections.lock().drain() {
            let _ = connection.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stopping`.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Drop for TcpNodeServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        // Room for a whole large answer in the socket: the server hands it
        // to the kernel at once instead of waking once per 16 KiB drained.
        let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.connections.lock().insert(id, clone);
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new().name("resc-tcp-conn".into()).spawn(move || {
            // A broken or malformed connection ends here; the server goes on.
            let _ = serve(&stream, &shared);
            let _ = stream.shutdown(Shutdown::Both);
            shared.connections.lock().remove(&id);
        });
        drop(spawned);
    }
}

/// One connection's state between requests.
struct Session<'a> {
    shared: &'a Shared,
    reader: BufReader<TcpStream>,
    writer: BufWriter<TcpStream>,
    head: Vec<u8>,
    scratch: Vec<u8>,
    batch_left: u32,
    batch_failed: bool,
}

fn serve(stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    let mut session = Session {
        shared,
        reader: BufReader::with_capacity(READ_BUFFER, stream.try_clone()?),
        writer: BufWriter::with_capacity(WRITE_BUFFER, stream.try_clone()?),
        head: Vec::with_capacity(64),
        scratch: Vec::new(),
        batch_left: 0,
        batch_failed: false,
    };
    // A frame, once begun, must arrive within FRAME_TIMEOUT; between frames
    // a client may stay idle as long as it likes.
    stream.set_read_timeout(Some(FRAME_TIMEOUT))?;
    stream.set_write_timeout(Some(FRAME_TIMEOUT))?;
    let mut spin = SpinPolicy::default();
    loop {
        let waited = session.reader.buffer().is_empty();
        if waited {
            spin.wait_briefly(stream);
        }
        match session.reader.fill_buf() {
            Ok([]) => return Ok(()),
            Ok(_) => {
                if waited {
                    spin.request_arrived(Instant::now());
                }
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                if shared.stopping.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        let mut prefix = [0u8; 4];
        session.reader.read_exact(&mut prefix)?;
        let body_len = u32::from_le_bytes(prefix);
        let head = match session.read_head(body_len)? {
            Ok(head) => head,
            Err(e) => return session.malformed(&e),
        };
        session.handle(head)?;
        // Answer in bursts: flush only when no further request is buffered.
        if session.reader.buffer().is_empty() {
            session.writer.flush()?;
        }
    }
}

impl Session<'_> {
    fn read_head(&mut self, body_len: u32) -> io::Result<Result<RequestHead, WireError>> {
        if body_len == 0 || body_len > wire::MAX_BODY {
            return Ok(Err(WireError::TooLarge(body_len)));
        }
        let mut code = [0u8; 1];
        self.reader.read_exact(&mut code)?;
        let Some(head_len) = wire::request_head_len(code[0]) else {
            return Ok(Err(WireError::UnknownCode { what: "operation", code: code[0] }));
        };
        if body_len < head_len as u32 {
            return Ok(Err(WireError::Truncated("request head")));
        }
        self.head.clear();
        self.head.push(code[0]);
        self.head.resize(head_len, 0);
        self.reader.read_exact(&mut self.head[1..])?;
        Ok(wire::decode_request_head(body_len, &self.head))
    }

    /// Answers a malformed frame and closes the connection: after it, the
    /// stream cannot be trusted to be at a frame boundary.
    fn malformed(&mut self, e: &WireError) -> io::Result<()> {
        let message = e.to_string();
        let mut out = Vec::new();
        wire::encode_response_head(&mut out, 0, Status::Malformed, [0; 3], message.len() as u32);
        out.extend_from_slice(message.as_bytes());
        self.writer.write_all(&out)?;
        self.writer.flush()
    }

    fn respond(&mut self, id: u64, status: Status, values: [u64; 3]) -> io::Result<()> {
        self.head.clear();
        wire::encode_response_head(&mut self.head, id, status, values, 0);
        self.writer.write_all(&self.head)
    }

    fn discard_tail(&mut self, tail: u32) -> io::Result<()> {
        io::copy(&mut (&mut self.reader).take(u64::from(tail)), &mut io::sink()).map(|_| ())
    }

    fn handle(&mut self, head: RequestHead) -> io::Result<()> {
        if let Op::Batch { count } = head.op {
            self.batch_left = count;
            self.batch_failed = false;
            return self.respond(head.id, Status::Ok, [0; 3]);
        }
        let in_batch = self.batch_left > 0;
        if in_batch {
            self.batch_left -= 1;
            if self.batch_failed {
                self.discard_tail(head.tail)?;
                return self.respond(head.id, Status::Skipped, [0; 3]);
            }
        }
        let status = self.execute(head)?;
        if in_batch && status != Status::Ok {
            self.batch_failed = true;
        }
        Ok(())
    }

    /// Runs one request and writes its response; returns its status.
    fn execute(&mut self, head: RequestHead) -> io::Result<Status> {
        let id = head.id;
        let node = self.shared.node;
        let memory = self.shared.memory.clone();
        let status = match (head.op, memory) {
            (Op::Read { region, key, offset, len }, Some(memory)) => {
                let remote = RemoteRegion { node, region, key, len: 0 };
                let writer = &mut self.writer;
                let head_buf = &mut self.head;
                let sent = memory.with_bytes(&remote, offset, len as usize, |bytes| {
                    head_buf.clear();
                    wire::encode_response_head(head_buf, id, Status::Ok, [0; 3], len);
                    send_head_and_bytes(writer, head_buf, bytes)
                });
                match sent {
                    Ok(io) => {
                        io?;
                        return Ok(Status::Ok);
                    }
                    Err(e) => status_of(&e),
                }
            }
            (Op::Write { region, key, offset }, Some(memory)) => {
                // The bytes arrive first, then go into the region under its
                // lock: a slow or vanished client never holds the lock, and a
                // write cut short changes nothing.
                self.scratch.clear();
                self.scratch.resize(head.tail as usize, 0);
                self.reader.read_exact(&mut self.scratch)?;
                let remote = RemoteRegion { node, region, key, len: 0 };
                let data = &self.scratch;
                match memory.with_bytes_mut(&remote, offset, data.len(), |bytes| bytes.copy_from_slice(data)) {
                    Ok(()) => Status::Ok,
                    Err(e) => status_of(&e),
                }
            }
            (Op::Allocate { bytes }, Some(memory)) => match memory.allocate(bytes) {
                Ok(region) => {
                    // A client that cannot hear the answer never learns the
                    // key: free the region rather than leak it.
                    let answered = self
                        .respond(id, Status::Ok, [region.region.0, region.key.0, region.len])
                        .and_then(|()| self.writer.flush());
                    if let Err(e) = answered {
                        let _ = memory.free(&region);
                        return Err(e);
                    }
                    return Ok(Status::Ok);
                }
                Err(e) => pool_status(&e),
            },
            (Op::Free { region, key }, Some(memory)) => {
                match memory.free(&RemoteRegion { node, region, key, len: 0 }) {
                    Ok(()) => Status::Ok,
                    Err(e) => pool_status(&e),
                }
            }
            (Op::Stats, Some(memory)) => {
                self.respond(id, Status::Ok, [memory.capacity_bytes(), memory.allocated_bytes(), 0])?;
                return Ok(Status::Ok);
            }
            (Op::Stats, None) => {
                self.respond(id, Status::Ok, [0, 0, 0])?;
                return Ok(Status::Ok);
            }
            (Op::Send { from, to }, _) => {
                self.scratch.clear();
                self.scratch.resize(head.tail as usize, 0);
                self.reader.read_exact(&mut self.scratch)?;
                match self.shared.mailboxes.send(&from, &to, &self.scratch) {
                    Ok(()) => Status::Ok,
                    Err(_) => Status::UnknownEndpoint,
                }
            }
            // A node without memory has no regions.
            (Op::Read { .. } | Op::Write { .. } | Op::Free { .. }, None) => {
                self.discard_tail(head.tail)?;
                Status::UnknownRegion
            }
            (Op::Allocate { bytes }, None) => Status::OutOfMemory { requested: bytes, free: 0 },
            (Op::Batch { .. }, _) => Status::Ok,
        };
        self.respond(id, status, [0; 3])?;
        Ok(status)
    }
}

/// Small responses go through the buffer; a large one leaves in one
/// gathered write of head and bytes, straight from the region.
fn send_head_and_bytes(writer: &mut BufWriter<TcpStream>, head: &[u8], bytes: &[u8]) -> io::Result<()> {
    if head.len() + bytes.len() <= writer.capacity() - writer.buffer().len() {
        writer.write_all(head)?;
        return writer.write_all(bytes);
    }
    writer.flush()?;
    let mut slices = [io::IoSlice::new(head), io::IoSlice::new(bytes)];
    let mut slices = &mut slices[..];
    let stream = writer.get_mut();
    while !slices.is_empty() {
        match stream.write_vectored(slices) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn status_of(e: &TransportError) -> Status {
    match *e {
        TransportError::AccessDenied { .. } => Status::AccessDenied,
        TransportError::OutOfBounds { offset, len, region_len, .. } => Status::OutOfBounds { offset, len, region_len },
        TransportError::UnknownRegion { .. } => Status::UnknownRegion,
        TransportError::UnknownEndpoint(_) => Status::UnknownEndpoint,
        _ => Status::System,
    }
}

fn pool_status(e: &PoolError) -> Status {
    match *e {
        PoolError::OutOfMemory { requested, free, .. } => Status::OutOfMemory { requested, free },
        PoolError::ZeroLength => Status::ZeroLength,
        PoolError::UnknownRegion { .. } => Status::UnknownRegion,
        PoolError::AccessDenied { .. } => Status::AccessDenied,
        _ => Status::System,
    }
}
