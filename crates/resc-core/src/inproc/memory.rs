//! A memory node's controller whose regions are anonymous mappings of this process.

use crate::ids::{AccessKey, NodeId, RegionId};
use crate::pool::{CapacityLedger, MemoryPool, PoolError};
use crate::transport::{RemoteRegion, TransportError};
use memmap2::MmapMut;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One registered region. Anonymous mappings are zero-filled and committed
/// page by page on first touch, so an untouched class costs no resident memory.
struct Region {
    key: AccessKey,
    /// Fixed at allocation: read without the bytes' lock, so that freeing
    /// never waits on an operation in progress.
    len: u64,
    bytes: RwLock<MmapMut>,
}

/// A memory controller over anonymous memory of this process; it is also the
/// memory side that [`InProcessFabric`](super::InProcessFabric) calls, which
/// checks key and bounds on every operation.
pub struct InProcessMemory {
    node: NodeId,
    capacity: CapacityLedger,
    regions: RwLock<HashMap<RegionId, Arc<Region>>>,
    next_region: AtomicU64,
}

impl std::fmt::Debug for InProcessMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessMemory")
            .field("node", &self.node)
            .field("capacity", &self.capacity.capacity())
            .field("allocated", &self.capacity.allocated())
            .finish_non_exhaustive()
    }
}

impl InProcessMemory {
    /// A controller for `node` with `capacity` bytes.
    pub fn new(node: NodeId, capacity: u64) -> Self {
        InProcessMemory {
            node,
            capacity: CapacityLedger::new(node, capacity),
            regions: RwLock::new(HashMap::new()),
            next_region: AtomicU64::new(1),
        }
    }

    fn checked(&self, remote: &RemoteRegion, offset: u64, len: usize) -> Result<Arc<Region>, TransportError> {
        let unknown = TransportError::UnknownRegion { node: self.node, region: remote.region };
        let region = self.regions.read().get(&remote.region).cloned().ok_or(unknown)?;
        if region.key != remote.key {
            return Err(TransportError::AccessDenied { node: self.node, region: remote.region });
        }
        let region_len = region.len;
        let len = len as u64;
        if offset.checked_add(len).is_none_or(|end| end > region_len) {
            return Err(TransportError::OutOfBounds { region: remote.region, offset, len, region_len });
        }
        Ok(region)
    }

    /// Runs `f` on `len` bytes at `offset` of a region, after checking key
    /// and bounds, with the region read-locked: how a server sends a region's
    /// bytes to the network without an intermediate copy.
    pub fn with_bytes<T>(
        &self,
        remote: &RemoteRegion,
        offset: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, TransportError> {
        let region = self.checked(remote, offset, len)?;
        let bytes = region.bytes.read();
        let start = offset as usize;
        Ok(f(&bytes[start..start + len]))
    }

    /// Like [`with_bytes`](Self::with_bytes), with the bytes writable: how a
    /// server receives a write straight into the region.
    pub fn with_bytes_mut<T>(
        &self,
        remote: &RemoteRegion,
        offset: u64,
        len: usize,
        f: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, TransportError> {
        let region = self.checked(remote, offset, len)?;
        let mut bytes = region.bytes.write();
        let start = offset as usize;
        Ok(f(&mut bytes[start..start + len]))
    }

    /// Serves a one-sided read after checking key and bounds.
    pub fn serve_read(&self, remote: &RemoteRegion, offset: u64, buf: &mut [u8]) -> Result<(), TransportError> {
        let region = self.checked(remote, offset, buf.len())?;
        let bytes = region.bytes.read();
        let start = offset as usize;
        buf.copy_from_slice(&bytes[start..start + buf.len()]);
        Ok(())
    }

    /// Serves a one-sided write after checking key and bounds.
    pub fn serve_write(&self, remote: &RemoteRegion, offset: u64, data: &[u8]) -> Result<(), TransportError> {
        let region = self.checked(remote, offset, data.len())?;
        let mut bytes = region.bytes.write();
        let start = offset as usize;
        bytes[start..start + data.len()].copy_from_slice(data);
        Ok(())
    }
}

impl MemoryPool for InProcessMemory {
    fn node(&self) -> NodeId {
        self.node
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        self.capacity.reserve(bytes)?;
        let release = |reason: String| {
            self.capacity.release(bytes);
            PoolError::System { bytes, reason }
        };
        let len = usize::try_from(bytes).map_err(|_| release("larger than the address space".into()))?;
        let map = MmapMut::map_anon(len).map_err(|e| release(e.to_string()))?;
        let key = AccessKey(rand::random::<u64>());
        let region = RegionId(self.next_region.fetch_add(1, Ordering::Relaxed));
        self.regions.write().insert(region, Arc::new(Region { key, len: bytes, bytes: RwLock::new(map) }));
        Ok(RemoteRegion { node: self.node, region, key, len: bytes })
    }

    fn free(&self, remote: &RemoteRegion) -> Result<(), PoolError> {
        let mut regions = self.regions.write();
        let region =
            regions.get(&remote.region).ok_or(PoolError::UnknownRegion { node: self.node, region: remote.region })?;
        if region.key != remote.key {
            return Err(PoolError::AccessDenied { node: self.node, region: remote.region });
        }
        let len = region.len;
        regions.remove(&remote.region);
        self.capacity.release(len);
        Ok(())
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity.capacity()
    }

    fn allocated_bytes(&self) -> u64 {
        self.capacity.allocated()
    }
}
