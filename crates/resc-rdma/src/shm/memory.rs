//! The memory side: a controller whose regions are memfds.

use super::map::{SharedMap, HEADER};
use memfd::{FileSeal, MemfdOptions};
use nix::fcntl::{fallocate, FallocateFlags};
use parking_lot::RwLock;
use resc_core::ids::{AccessKey, NodeId, RegionId};
use resc_core::pool::{CapacityLedger, MemoryPool, PoolError};
use resc_core::transport::{RemoteRegion, TransportError};
use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How long `free` waits by default for operations in flight to leave.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// One live region: its memfd and the memory side's mapping of its control page.
struct Region {
    key: AccessKey,
    len: u64,
    file: File,
    control: SharedMap,
}

/// A region's memfd as the memory side hands it out after checking the key:
/// what [`ShmTransport`](super::ShmTransport) maps. It names the region it
/// belongs to, so it cannot be mistaken for another one.
pub struct RegionDescriptor {
    node: NodeId,
    region: RegionId,
    key: AccessKey,
    len: u64,
    file: File,
}

impl std::fmt::Debug for RegionDescriptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionDescriptor")
            .field("node", &self.node)
            .field("region", &self.region)
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl RegionDescriptor {
    pub(crate) fn new(node: NodeId, region: RegionId, key: AccessKey, len: u64, file: File) -> Self {
        RegionDescriptor { node, region, key, len, file }
    }

    /// The region as the compute side addresses it.
    pub fn remote(&self) -> RemoteRegion {
        RemoteRegion { node: self.node, region: self.region, key: self.key, len: self.len }
    }

    /// The region's length in bytes (the memfd holds [`HEADER`] more).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: regions are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn file(&self) -> &File {
        &self.file
    }
}

impl AsFd for RegionDescriptor {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// A memory node's controller whose regions are memfds, to be mapped by
/// [`ShmTransport`](super::ShmTransport)s of this process or, through a
/// [`ShmMemoryServer`](super::ShmMemoryServer), of other processes on the
/// host. See the [module documentation](super) for the layout and the
/// revocation protocol.
pub struct ShmMemory {
    node: NodeId,
    capacity: CapacityLedger,
    grace: Duration,
    regions: RwLock<HashMap<RegionId, Arc<Region>>>,
    next_region: AtomicU64,
}

impl std::fmt::Debug for ShmMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmMemory")
            .field("node", &self.node)
            .field("capacity", &self.capacity.capacity())
            .field("allocated", &self.capacity.allocated())
            .field("regions", &self.regions.read().len())
            .finish_non_exhaustive()
    }
}

impl ShmMemory {
    /// A controller for `node` with `capacity` bytes.
    pub fn new(node: NodeId, capacity: u64) -> Self {
        // Region ids start at a per-instance random base, so a restarted
        // node does not hand out ids that clients still have mappings of.
        let base = std::collections::hash_map::RandomState::new().build_hasher().finish() & 0xffff_ffff;
        ShmMemory {
            node,
            capacity: CapacityLedger::new(node, capacity),
            grace: DEFAULT_GRACE,
            regions: RwLock::new(HashMap::new()),
            next_region: AtomicU64::new((base << 24) | 1),
        }
    }

    /// How long [`free`](MemoryPool::free) waits at most for operations in
    /// flight on the region to leave it (5 s unless set): a bound against a
    /// client that died inside an operation.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How many regions are live.
    pub fn live_regions(&self) -> usize {
        self.regions.read().len()
    }

    /// Checks `remote`'s key and hands out a descriptor of its memfd: what
    /// a compute side maps. A region that is not live is `UnknownRegion`, a
    /// wrong key `AccessDenied` (and no descriptor).
    pub fn attach(&self, remote: &RemoteRegion) -> Result<RegionDescriptor, TransportError> {
        let region = self
            .regions
            .read()
            .get(&remote.region)
            .cloned()
            .ok_or(TransportError::UnknownRegion { node: self.node, region: remote.region })?;
        if region.key != remote.key {
            return Err(TransportError::AccessDenied { node: self.node, region: remote.region });
        }
        let file = region
            .file
            .try_clone()
            .map_err(|e| TransportError::Disconnected(format!("{}: duplicating a descriptor: {e}", self.node)))?;
        Ok(RegionDescriptor::new(self.node, remote.region, region.key, region.len, file))
    }

    /// Creates, sizes, seals and initialises a region's memfd.
    fn create(bytes: u64) -> io::Result<(File, SharedMap)> {
        let total = bytes
            .checked_add(HEADER as u64)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "larger than a file can be"))?;
        let memfd = MemfdOptions::new().allow_sealing(true).close_on_exec(true).create("resc-region").map_err(sys)?;
        // A fresh memfd reads as zeros; pages are committed on first touch.
        memfd.as_file().set_len(total)?;
        // Nobody — clients included — can shrink it under a mapping (no
        // SIGBUS) or grow it (no uncounted memory); and no further seals.
        memfd.add_seals(&[FileSeal::SealShrink, FileSeal::SealGrow]).map_err(sys)?;
        memfd.add_seal(FileSeal::SealSeal).map_err(sys)?;
        let file = memfd.into_file();
        let control = SharedMap::control_page(&file)?;
        control.init(bytes);
        Ok((file, control))
    }

    /// Returns a freed region's bytes to the system; its size (and control
    /// page) stay, so stale mappings read zeros rather than fault.
    fn punch(region: &Region) {
        let (Ok(offset), Ok(len)) = (i64::try_from(HEADER), i64::try_from(region.len)) else { return };
        let mode = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
        // Best effort: the memory comes back when the last mapping goes anyway.
        let _ = fallocate(&region.file, mode, offset, len);
    }
}

fn sys(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// An access key no caller can derive: 8 bytes from the kernel's CSPRNG.
fn random_key() -> io::Result<AccessKey> {
    let mut bytes = [0u8; 8];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(AccessKey(u64::from_ne_bytes(bytes)))
}

impl MemoryPool for ShmMemory {
    fn node(&self) -> NodeId {
        self.node
    }

    fn allocate(&self, bytes: u64) -> Result<RemoteRegion, PoolError> {
        self.capacity.reserve(bytes)?;
        let release = |e: io::Error| {
            self.capacity.release(bytes);
            PoolError::System { bytes, reason: e.to_string() }
        };
        let (file, control) = Self::create(bytes).map_err(release)?;
        let key = random_key().map_err(release)?;
        let region = RegionId(self.next_region.fetch_add(1, Ordering::Relaxed));
        self.regions.write().insert(region, Arc::new(Region { key, len: bytes, file, control }));
        Ok(RemoteRegion { node: self.node, region, key, len: bytes })
    }

    fn free(&self, remote: &RemoteRegion) -> Result<(), PoolError> {
        let region = {
            let mut regions = self.regions.write();
            let region = regions
                .get(&remote.region)
                .ok_or(PoolError::UnknownRegion { node: self.node, region: remote.region })?;
            if region.key != remote.key {
                return Err(PoolError::AccessDenied { node: self.node, region: remote.region });
            }
            // From here on no new attachment; then revoke the existing ones.
            regions.remove(&remote.region).ok_or(PoolError::UnknownRegion { node: self.node, region: remote.region })?
        };
        region.control.revoke_and_drain(self.grace);
        Self::punch(&region);
        self.capacity.release(region.len);
        Ok(())
    }

    fn capacity_bytes(&self) -> u64 {
        self.capacity.capacity()
    }

    fn allocated_bytes(&self) -> u64 {
        self.capacity.allocated()
    }
}

impl Drop for ShmMemory {
    /// The node goes away: every region still live is revoked (without
    /// waiting), so transports stop using it; the memory returns to the
    /// system when their mappings go.
    fn drop(&mut self) {
        for region in self.regions.get_mut().values() {
            region.control.revoke();
        }
    }
}
