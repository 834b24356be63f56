//! The compute side of a control socket: a [`MemoryPool`] over it, and
//! attachment (receiving a region's memfd).

use super::control::{self, Request, Response};
use super::fdpass;
use super::memory::RegionDescriptor;
use parking_lot::Mutex;
use resc_core::ids::{NodeId, RegionId};
use resc_core::pool::{MemoryPool, PoolError};
use resc_core::transport::{RemoteRegion, TransportError};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long an answer may take before the connection counts as lost. A
/// `free` waits up to the node's grace period, so this is well above it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// A memory node's controller reached over its [`ShmMemoryServer`](super::ShmMemoryServer)'s
/// Unix socket: allocation and freeing run on the node, which issues the
/// keys; [`attach`](Self::attach) receives a region's memfd.
///
/// One connection, opened on first use and reopened after a failure;
/// requests on it take turns.
#[derive(Debug)]
pub struct ShmMemoryClient {
    node: NodeId,
    path: PathBuf,
    connection: Mutex<Option<UnixStream>>,
}

impl ShmMemoryClient {
    /// The controller of `node`, whose server listens at `path`.
    pub fn new(node: NodeId, path: impl AsRef<Path>) -> Self {
        ShmMemoryClient { node, path: path.as_ref().to_path_buf(), connection: Mutex::new(None) }
    }

    /// The node.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Where the node's server listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the connection now rather than on first use.
    pub fn connect(&self) -> io::Result<()> {
        let mut connection = self.connection.lock();
        if connection.is_none() {
            *connection = Some(self.open()?);
        }
        Ok(())
    }

    fn open(&self) -> io::Result<UnixStream> {
        let stream = UnixStream::connect(&self.path)?;
        stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
        stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
        Ok(stream)
    }

    /// One request and its response, with the descriptor that came with it.
    fn call(&self, request: &Request) -> io::Result<(Response, Option<File>)> {
        let mut connection = self.connection.lock();
        let stream = match connection.take() {
            Some(stream) => stream,
            None => self.open()?,
        };
        let mut frame = Vec::with_capacity(32);
        control::encode_request(&mut frame, request);
        fdpass::send_frame(&stream, &frame, None)?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        let body = fdpass::recv_frame(&stream, &mut fds)?;
        let response = control::decode_response(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        if let Response::Malformed(why) = &response {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("the server refused a request: {why}")));
        }
        if let (Response::Allocated { region, .. }, Some(_)) = (&response, fds.first()) {
            // We hold the region's key and descriptor: confirm, so the node
            // no longer frees it when this connection closes. If this cannot
            // be sent the connection is gone and the node frees the region:
            // the allocation failed.
            frame.clear();
            control::encode_request(&mut frame, &Request::Confirm { region: *region });
            fdpass::send_frame(&stream, &frame, None)?;
        }
        // Only a well-behaved exchange leaves the connection for the next one.
        *connection = Some(stream);
        // At most one descriptor is expected; any others close here.
        Ok((response, fds.into_iter().next().map(File::from)))
    }

    fn lost(&self, e: &io::Error) -> String {
        format!("{} at {}: {e}", self.node, self.path.display())
    }

    /// Checks `region`'s key on the node and receives its memfd: an
    /// unknown region is `UnknownRegion`, a wrong key `AccessDenied` (and no
    /// descriptor).
    pub fn attach(&self, region: &RemoteRegion) -> Result<RegionDescriptor, TransportError> {
        let (response, file) = self
            .call(&Request::Attach { region: region.region, key: region.key })
            .map_err(|e| TransportError::Disconnected(self.lost(&e)))?;
        match (response, file) {
            (Response::Attached { len }, Some(file)) => {
                Ok(RegionDescriptor::new(self.node, region.region, region.key, len, file))
            }
            (Response::UnknownRegion, _) => {
                Err(TransportError::UnknownRegion { node: self.node, region: region.region })
            }
            (Response::AccessDenied, _) => Err(TransportError::AccessDenied { node: self.node, region: region.region }),
            (other, _) => Err(TransportError::Disconnected(format!("{} answered an attach with {other:?}", self.node))),
        }
    }

    /// Allocates a region and receives its memfd in the same round trip:
    /// [`ShmTransport::adopt`](super::ShmTransport::adopt) maps it without
    /// asking again.
    pub fn allocate_with_descriptor(&self, bytes: u64) -> Result<RegionDescriptor, PoolError> {
        let (response, file) =
            self.call(&Request::Allocate { bytes }).map_err(|e| PoolError::System { bytes, reason: self.lost(&e) })?;
        match (response, file) {
            (Response::Allocated { region, key, len }, Some(file)) => {
                Ok(RegionDescriptor::new(self.node, region, key, len, file))
            }
            (Response::Allocated { region, key, len }, None) => {
                // Do not leak the region if its descriptor went missing.
                let _ = self.free(&RemoteRegion { node: self.node, region, key, len });
                Err(PoolError::System { bytes, reason: format!("{} allocated without a descriptor", self.node) })
            }
            (other, _) => Err(self.pool_error(other, RegionId(0), bytes)),
        }
    }

    fn pool_error(&self, response: Response, region: RegionId, bytes: u64) -> PoolError {
        let node = self.node;
        match response {
            Response::OutOfMemory { requested, free } => PoolError::OutOfMemory { node, requested, free },
            Response::ZeroLength => PoolError::ZeroLength,
            Response::UnknownRegion => PoolError::UnknownRegion { node, region },
            Response::AccessDenied => PoolError::AccessDenied { node, region },
            Response::System(reason) => PoolError::System { bytes, reason: format!("{node}: {reason}") },
            other => PoolError::System { bytes, reason: format!("{node} answered {other:?}") },
        }
    }

    fn stats(&self) -> (u64, u64) {
        match self.call(&Request::Stats) {
            Ok((Response::Stats { capacity, allocated }, _)) => (capacity, allocated),
            _ => (0, 0),
        }
    }
}

impl MemoryPool for ShmMemoryClient {
    fn node(&self) -> NodeId {
        self.node
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        self.allocate_with_descriptor(bytes).map(|descriptor| descriptor.remote())
    }

    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
        let (response, _) = self
            .call(&Request::Free { region: region.region, key: region.key })
            .map_err(|e| PoolError::System { bytes: region.len, reason: self.lost(&e) })?;
        match response {
            Response::Freed => Ok(()),
            other => Err(self.pool_error(other, region.region, region.len)),
        }
    }

    /// The node's capacity; 0 if it cannot be reached.
    fn capacity_bytes(&self) -> u64 {
        self.stats().0
    }

    /// Bytes held by live regions on the node; 0 if it cannot be reached.
    fn allocated_bytes(&self) -> u64 {
        self.stats().1
    }
}
