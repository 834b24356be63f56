//! Memory controllers: where physical memory components are allocated.
//!
//! # Contract
//!
//! - [`MemoryPool::allocate`] returns a region of exactly the asked length,
//!   reading as zeros, with a fresh access key that is not derivable from
//!   anything the caller knows; it fails with [`PoolError::OutOfMemory`]
//!   rather than over-commit the pool's capacity.
//!   A region reads as zeros even when it reuses memory another region freed.
//! - [`MemoryPool::free`] needs the region's key; after it, every operation on
//!   the region fails with `UnknownRegion` and the capacity is available
//!   again. Freeing a region that is not live is [`PoolError::UnknownRegion`].
//! - `allocate` and `free` may be called from many threads at once.
//! - `allocated_bytes` is the sum of the lengths of live regions.

use crate::ids::{NodeId, RegionId};
use crate::transport::RemoteRegion;
use thiserror::Error;

/// Why a memory controller refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Not enough free capacity on the node.
    #[error("{node} has {free} bytes free, {requested} were requested")]
    OutOfMemory {
        /// The node.
        node: NodeId,
        /// Requested bytes.
        requested: u64,
        /// Free bytes.
        free: u64,
    },
    /// A zero-byte region was requested.
    #[error("a physical memory component cannot be empty")]
    ZeroLength,
    /// The region is not live on this node.
    #[error("{region} does not exist on {node}")]
    UnknownRegion {
        /// The node.
        node: NodeId,
        /// The region.
        region: RegionId,
    },
    /// The key does not match the region's.
    #[error("wrong access key for {region} on {node}")]
    AccessDenied {
        /// The node.
        node: NodeId,
        /// The region.
        region: RegionId,
    },
    /// The operating system refused the memory.
    #[error("the system could not map {bytes} bytes: {reason}")]
    System {
        /// Requested bytes.
        bytes: u64,
        /// The system's reason.
        reason: String,
    },
}

/// A memory controller's capacity: reservations that never over-commit it.
/// Controllers reserve before they map a region and release when they free
/// it (or when mapping fails), so the accounting lives in one place.
#[derive(Debug)]
pub struct CapacityLedger {
    node: NodeId,
    capacity: u64,
    allocated: parking_lot::Mutex<u64>,
}

impl CapacityLedger {
    /// `capacity` bytes of `node`, none reserved.
    pub fn new(node: NodeId, capacity: u64) -> Self {
        CapacityLedger { node, capacity, allocated: parking_lot::Mutex::new(0) }
    }

    /// Reserves `bytes`, or says why not: a zero length, or not enough free.
    pub fn reserve(&self, bytes: u64) -> Result<(), PoolError> {
        if bytes == 0 {
            return Err(PoolError::ZeroLength);
        }
        let mut allocated = self.allocated.lock();
        let free = self.capacity - *allocated;
        if bytes > free {
            return Err(PoolError::OutOfMemory { node: self.node, requested: bytes, free });
        }
        *allocated += bytes;
        Ok(())
    }

    /// Returns `bytes` reserved before.
    pub fn release(&self, bytes: u64) {
        let mut allocated = self.allocated.lock();
        *allocated = allocated.saturating_sub(bytes);
    }

    /// Total capacity.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Bytes reserved.
    pub fn allocated(&self) -> u64 {
        *self.allocated.lock()
    }
}

/// A memory node's controller. See the [module documentation](self) for the contract.
pub trait MemoryPool: Send + Sync {
    /// The node this controller manages.
    fn node(&self) -> NodeId;

    /// Allocates one physical memory component of `bytes` bytes.
    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError>;

    /// Frees a physical memory component.
    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError>;

    /// Total capacity in bytes.
    fn capacity_bytes(&self) -> u64;

    /// Bytes held by live regions.
    fn allocated_bytes(&self) -> u64;
}

/// A shared controller is a controller: lets `Arc<InProcessMemory>` (or any
/// `Arc<T: MemoryPool>`) stand where a `MemoryPool` is wanted.
impl<T: MemoryPool + ?Sized> MemoryPool for std::sync::Arc<T> {
    fn node(&self) -> NodeId {
        (**self).node()
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        (**self).allocate(bytes)
    }

    fn free(&self, region: &RemoteRegion) -> Result<(), PoolError> {
        (**self).free(region)
    }

    fn capacity_bytes(&self) -> u64 {
        (**self).capacity_bytes()
    }

    fn allocated_bytes(&self) -> u64 {
        (**self).allocated_bytes()
    }
}
