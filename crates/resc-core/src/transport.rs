//! The data path between compute and memory components: one-sided `read` and
//! `write` on registered regions, and two-sided `send`/`recv` between compute
//! component instances.
//!
//! # Contract
//!
//! Every implementation, in process or across a network, must behave alike
//! (the `testkit` conformance suite checks it):
//!
//! - A one-sided operation names a [`RemoteRegion`]; the **memory side** checks
//!   the access key and the bounds of every operation. A wrong key is
//!   [`TransportError::AccessDenied`], a range past the region's end is
//!   [`TransportError::OutOfBounds`]; neither returns or changes any data.
//!   A wrong key is reported before a bad range, so a region's length does
//!   not leak to whoever lacks its key. An empty range at the very end is valid.
//! - A region reads as zeros where it was never written.
//! - [`Transport::execute`] runs a batch of operations in order and stops at
//!   the first that fails: operations before it have taken effect, those
//!   after it have not, and the [`BatchError`] names its index. A read that
//!   follows a write to the same bytes in one batch sees the write.
//! - Messages between two endpoints arrive complete, once, and in the order
//!   they were sent. `send` to an endpoint that is not open fails with
//!   [`TransportError::UnknownEndpoint`]; `recv` waits at most its timeout.

use crate::ids::{AccessKey, Endpoint, NodeId, RegionId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use thiserror::Error;

/// A physical memory component as the compute side addresses it: where it
/// is, its access key and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RemoteRegion {
    /// The memory node that holds it.
    pub node: NodeId,
    /// The region on that node.
    pub region: RegionId,
    /// The key the memory side checks on every operation.
    pub key: AccessKey,
    /// Its length in bytes.
    pub len: u64,
}

/// One one-sided operation of a batch.
#[derive(Debug)]
pub enum RemoteOp<'a> {
    /// Read `buf.len()` bytes at `offset` of `region` into `buf`.
    Read {
        /// The region.
        region: RemoteRegion,
        /// Byte offset within the region.
        offset: u64,
        /// Where the bytes go.
        buf: &'a mut [u8],
    },
    /// Write `data` at `offset` of `region`.
    Write {
        /// The region.
        region: RemoteRegion,
        /// Byte offset within the region.
        offset: u64,
        /// The bytes to write.
        data: &'a [u8],
    },
}

/// A message received on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sent it.
    pub from: Endpoint,
    /// Its bytes.
    pub payload: Vec<u8>,
}

/// Why a data-path operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The access key does not match the region's.
    #[error("access denied to {region} on {node}: wrong access key")]
    AccessDenied {
        /// The node.
        node: NodeId,
        /// The region.
        region: RegionId,
    },
    /// The operation's range does not lie within the region.
    #[error("{len} bytes at offset {offset} are outside {region} ({region_len} bytes)")]
    OutOfBounds {
        /// The region.
        region: RegionId,
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: u64,
        /// The region's length.
        region_len: u64,
    },
    /// The node holds no such region (never allocated, or freed).
    #[error("{region} does not exist on {node}")]
    UnknownRegion {
        /// The node.
        node: NodeId,
        /// The region.
        region: RegionId,
    },
    /// The transport cannot reach the node.
    #[error("{0} is not reachable through this transport")]
    UnknownNode(NodeId),
    /// The endpoint is not open.
    #[error("endpoint {0} is not open")]
    UnknownEndpoint(Endpoint),
    /// `recv` waited its whole timeout.
    #[error("no message for {0} within the timeout")]
    Timeout(Endpoint),
    /// The connection to the peer or memory node broke.
    #[error("connection lost: {0}")]
    Disconnected(String),
}

/// The first failing operation of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("operation #{index} of the batch failed: {error}")]
pub struct BatchError {
    /// Its position in the batch.
    pub index: usize,
    /// Why it failed.
    pub error: TransportError,
}

/// The data path. See the [module documentation](self) for the contract.
pub trait Transport: Send + Sync {
    /// Runs a batch of one-sided operations in order, stopping at the first failure.
    fn execute(&self, ops: &mut [RemoteOp<'_>]) -> Result<(), BatchError>;

    /// Reads `buf.len()` bytes at `offset` of `region`.
    fn read(&self, region: &RemoteRegion, offset: u64, buf: &mut [u8]) -> Result<(), TransportError> {
        self.execute(&mut [RemoteOp::Read { region: *region, offset, buf }]).map_err(|e| e.error)
    }

    /// Writes `data` at `offset` of `region`.
    fn write(&self, region: &RemoteRegion, offset: u64, data: &[u8]) -> Result<(), TransportError> {
        self.execute(&mut [RemoteOp::Write { region: *region, offset, data }]).map_err(|e| e.error)
    }

    /// Lends the bytes of `[offset, offset + len)` of `region` to `f` without
    /// copying them, when the medium allows (memory of this process, or
    /// mapped from another): returns `Ok(true)` after calling `f`, `Ok(false)`
    /// without calling it when this transport cannot lend (the caller then
    /// reads into a buffer). Key and bounds are checked as for `read`.
    fn lend(
        &self,
        region: &RemoteRegion,
        offset: u64,
        len: usize,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<bool, TransportError> {
        let _ = (region, offset, len, f);
        Ok(false)
    }

    /// Whether one-sided reads are plain copies out of memory mapped into
    /// this process (the in-process and shared-memory transports). The
    /// runtime fetches ahead only on transports that do not map memory:
    /// fetching ahead into a buffer and copying out again doubles the copies
    /// and gains nothing when the read itself is a copy.
    fn maps_memory(&self) -> bool {
        false
    }

    /// Opens an endpoint so that it can receive messages.
    fn open_endpoint(&self, endpoint: &Endpoint) -> Result<(), TransportError>;

    /// Closes an endpoint; messages not yet received are dropped.
    fn close_endpoint(&self, endpoint: &Endpoint);

    /// Sends one message from `from` to the open endpoint `to`.
    fn send(&self, from: &Endpoint, to: &Endpoint, payload: &[u8]) -> Result<(), TransportError>;

    /// Receives the next message for `at`, waiting at most `timeout`.
    fn recv(&self, at: &Endpoint, timeout: Duration) -> Result<Message, TransportError>;
}
