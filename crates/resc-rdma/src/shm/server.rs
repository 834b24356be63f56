//! A memory node's control socket: allocation, freeing, and attachment
//! (passing a region's memfd after checking its key) for other processes.

use super::control::{self, Request, Response, PREFIX};
use super::fdpass;
use super::memory::{RegionDescriptor, ShmMemory};
use parking_lot::Mutex;
use resc_core::ids::NodeId;
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::{RemoteRegion, TransportError};
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long the server waits for a client to take a response.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

struct Shared {
    memory: Arc<ShmMemory>,
    /// Open connections, so that shutdown can close them.
    connections: Mutex<HashMap<u64, UnixStream>>,
    next_connection: AtomicU64,
    stopping: AtomicBool,
}

/// Serves a [`ShmMemory`] to the other processes of the host over a Unix
/// domain socket, one thread per connection. The socket file is created
/// owner-only (mode 0600) and removed on shutdown; widen its permissions to
/// let other users' processes in.
///
/// Requests are those of [`control`](super::control). A malformed frame is
/// answered with [`Response::Malformed`]; the connection goes on if the
/// frame's length was sound (the stream is still at a frame boundary) and is
/// closed otherwise, and the server goes on either way.
pub struct ShmMemoryServer {
    path: PathBuf,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ShmMemoryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmMemoryServer").field("node", &self.node()).field("path", &self.path).finish()
    }
}

impl ShmMemoryServer {
    /// Listens at `path` (which must not exist) and serves connections on
    /// threads of their own.
    pub fn bind(path: impl AsRef<Path>, memory: Arc<ShmMemory>) -> io::Result<Arc<ShmMemoryServer>> {
        let path = path.as_ref().to_path_buf();
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let node = memory.node();
        let shared = Arc::new(Shared {
            memory,
            connections: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
        });
        let accepting = shared.clone();
        std::thread::Builder::new()
            .name(format!("resc-shm-{}", node.0))
            .spawn(move || accept(&listener, &accepting))?;
        Ok(Arc::new(ShmMemoryServer { path, shared }))
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The node it serves.
    pub fn node(&self) -> NodeId {
        self.shared.memory.node()
    }

    /// The controller it serves.
    pub fn memory(&self) -> &Arc<ShmMemory> {
        &self.shared.memory
    }

    /// Stops accepting, closes every connection and removes the socket
    /// file. Regions stay live (and mapped where they are). Idempotent.
    pub fn shutdown(&self) {
        if self.shared.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        for (_, connection) in self.shared.connections.lock().drain() {
            let _ = connection.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so that it sees `stopping`.
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for ShmMemoryServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept(listener: &UnixListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            shared.connections.lock().insert(id, clone);
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new().name("resc-shm-conn".into()).spawn(move || {
            // A broken or malformed connection ends here; the server goes on.
            let mut unconfirmed = Vec::new();
            let _ = serve(&stream, &shared.memory, &mut unconfirmed);
            let _ = stream.shutdown(Shutdown::Both);
            // Regions whose allocation the client never confirmed: it went
            // away before taking them (or in the middle), so nobody holds
            // their key. On shutdown regions stay live, these included.
            if !shared.stopping.load(Ordering::SeqCst) {
                for region in unconfirmed {
                    let _ = shared.memory.free(&region);
                }
            }
            shared.connections.lock().remove(&id);
        });
        drop(spawned);
    }
}

/// Serves one connection until it ends or breaks.
///
/// A region allocated over the connection belongs to it until the client
/// confirms the allocation ([`Request::Confirm`], sent once it holds the
/// answer and the descriptor): if the answer cannot be sent, the region is
/// freed at once; if the connection ends before the confirmation, the
/// caller frees the regions left in `unconfirmed`. So a client that vanishes
/// mid-allocate cannot leak a region nobody has the key of.
fn serve(stream: &UnixStream, memory: &ShmMemory, unconfirmed: &mut Vec<RemoteRegion>) -> io::Result<()> {
    stream.set_write_timeout(Some(SEND_TIMEOUT))?;
    let mut reader = stream;
    let mut out = Vec::with_capacity(64);
    loop {
        let mut prefix = [0u8; PREFIX];
        match reader.read_exact(&mut prefix) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = match control::body_len(prefix) {
            Ok(len) => len,
            Err(e) => {
                // The stream is no longer at a frame boundary: answer and close.
                out.clear();
                control::encode_response(&mut out, &Response::Malformed(e.to_string()));
                return fdpass::send_frame(stream, &out, None);
            }
        };
        let mut body = [0u8; control::MAX_BODY];
        reader.read_exact(&mut body[..len])?;
        let (response, descriptor) = match control::decode_request(&body[..len]) {
            Ok(Request::Confirm { region }) => {
                // Not answered: the client does not wait for it.
                unconfirmed.retain(|pending| pending.region != region);
                continue;
            }
            Ok(request) => handle(memory, request),
            Err(e) => (Response::Malformed(e.to_string()), None),
        };
        out.clear();
        control::encode_response(&mut out, &response);
        let sent = fdpass::send_frame(stream, &out, descriptor.as_ref().map(AsFd::as_fd));
        if let Response::Allocated { region, key, len } = response {
            let region = RemoteRegion { node: memory.node(), region, key, len };
            if let Err(e) = sent {
                // The client will never learn the key: free it now.
                let _ = memory.free(&region);
                return Err(e);
            }
            unconfirmed.push(region);
        }
        sent?;
    }
}

/// Runs one request: its response and the descriptor that goes with it.
fn handle(memory: &ShmMemory, request: Request) -> (Response, Option<RegionDescriptor>) {
    let node = memory.node();
    match request {
        Request::Allocate { bytes } => {
            let region = match memory.allocate(bytes) {
                Ok(region) => region,
                Err(e) => return (pool_response(e), None),
            };
            match memory.attach(&region) {
                Ok(descriptor) => {
                    (Response::Allocated { region: region.region, key: region.key, len: region.len }, Some(descriptor))
                }
                Err(e) => {
                    let _ = memory.free(&region);
                    (Response::System(e.to_string()), None)
                }
            }
        }
        Request::Free { region, key } => match memory.free(&RemoteRegion { node, region, key, len: 0 }) {
            Ok(()) => (Response::Freed, None),
            Err(e) => (pool_response(e), None),
        },
        Request::Attach { region, key } => match memory.attach(&RemoteRegion { node, region, key, len: 0 }) {
            Ok(descriptor) => (Response::Attached { len: descriptor.len() }, Some(descriptor)),
            Err(TransportError::UnknownRegion { .. }) => (Response::UnknownRegion, None),
            Err(TransportError::AccessDenied { .. }) => (Response::AccessDenied, None),
            Err(e) => (Response::System(e.to_string()), None),
        },
        Request::Stats => {
            (Response::Stats { capacity: memory.capacity_bytes(), allocated: memory.allocated_bytes() }, None)
        }
        // Handled by `serve`, which knows the connection's allocations.
        Request::Confirm { .. } => (Response::Malformed("a confirmation out of place".into()), None),
    }
}

fn pool_response(e: PoolError) -> Response {
    match e {
        PoolError::OutOfMemory { requested, free, .. } => Response::OutOfMemory { requested, free },
        PoolError::ZeroLength => Response::ZeroLength,
        PoolError::UnknownRegion { .. } => Response::UnknownRegion,
        PoolError::AccessDenied { .. } => Response::AccessDenied,
        other => Response::System(other.to_string()),
    }
}
