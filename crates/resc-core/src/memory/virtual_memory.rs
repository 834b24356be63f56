//! One virtual memory component of one invocation: its address map, its
//! logical length, and growth through a [`Provisioner`].

use super::AddressMap;
use crate::ids::MemoryId;
use crate::pool::PoolError;
use crate::resources::format_bytes;
use crate::transport::RemoteRegion;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

/// Why a physical component could not be provisioned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// Growing would take the application past its budget cap.
    #[error("growing by {} would hold {} of the application's {} budget", format_bytes(*requested), format_bytes(held + requested), format_bytes(*cap))]
    BudgetExceeded {
        /// Bytes asked for.
        requested: u64,
        /// Bytes already held by the application's memory components.
        held: u64,
        /// The cap.
        cap: u64,
    },
    /// No memory node had room.
    #[error("no memory node has room for {}", format_bytes(*requested))]
    NoCapacity {
        /// Bytes asked for.
        requested: u64,
    },
    /// The memory controller refused.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// The platform side of growth: places, allocates, frees and meters physical
/// memory components for one invocation, and enforces its budget cap.
pub trait Provisioner: Send + Sync {
    /// Allocates one physical component that holds at least `bytes` (the
    /// provisioner rounds up to a size class) for `component`.
    fn provision(&self, component: MemoryId, bytes: u64) -> Result<RemoteRegion, ProvisionError>;

    /// Frees a physical component of `component`.
    fn reclaim(&self, component: MemoryId, region: &RemoteRegion);

    /// Reports the component's logical length: the bytes it is using.
    fn observe_len(&self, component: MemoryId, len: u64);
}

#[derive(Debug, Default)]
struct State {
    map: AddressMap,
    len: u64,
    released: bool,
}

/// A channel's view of a component: its address map and length as of one
/// generation. Refreshing costs one atomic load unless something changed.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub(crate) generation: u64,
    pub(crate) map: AddressMap,
    pub(crate) len: u64,
}

impl Default for Snapshot {
    /// A snapshot that any component's first refresh replaces.
    fn default() -> Self {
        Snapshot { generation: u64::MAX, map: AddressMap::new(), len: 0 }
    }
}

/// A virtual memory component of one invocation, shared by every compute
/// instance that opens it.
pub struct VirtualMemory {
    id: MemoryId,
    name: String,
    initial_bytes: u64,
    increment_bytes: u64,
    provisioner: Arc<dyn Provisioner>,
    state: Mutex<State>,
    /// Bumped on every change of the address map, so channels can keep a
    /// snapshot and refresh it only when it changed.
    generation: AtomicU64,
    len: AtomicU64,
    released: AtomicBool,
}

impl std::fmt::Debug for VirtualMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("VirtualMemory")
            .field("name", &self.name)
            .field("len", &state.len)
            .field("capacity", &state.map.capacity())
            .field("physical", &state.map.len())
            .finish()
    }
}

/// Why an access to the component's state failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StateError {
    /// The component has been released.
    Released,
    /// Growth failed.
    Provision(ProvisionError),
}

impl VirtualMemory {
    /// A component with nothing allocated yet: the first access allocates.
    pub fn new(
        id: MemoryId,
        name: impl Into<String>,
        initial_bytes: u64,
        increment_bytes: u64,
        provisioner: Arc<dyn Provisioner>,
    ) -> Self {
        VirtualMemory {
            id,
            name: name.into(),
            initial_bytes,
            increment_bytes,
            provisioner,
            state: Mutex::new(State::default()),
            generation: AtomicU64::new(0),
            len: AtomicU64::new(0),
            released: AtomicBool::new(false),
        }
    }

    /// The component's id.
    pub fn id(&self) -> MemoryId {
        self.id
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes in use: the end of the furthest write, or the size set by resize.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes addressable without growing.
    pub fn capacity(&self) -> u64 {
        self.state.lock().map.capacity()
    }

    /// A snapshot of the address map.
    pub fn address_map(&self) -> AddressMap {
        self.state.lock().map.clone()
    }

    /// Refreshes `snapshot` if the address map or the length changed since
    /// it was taken; both are read together, so they agree.
    pub(crate) fn refresh(&self, snapshot: &mut Snapshot) -> Result<(), StateError> {
        if self.released.load(Ordering::Acquire) {
            return Err(StateError::Released);
        }
        if self.generation.load(Ordering::Acquire) != snapshot.generation {
            let state = self.state.lock();
            if state.released {
                return Err(StateError::Released);
            }
            *snapshot = Snapshot {
                generation: self.generation.load(Ordering::Acquire),
                map: state.map.clone(),
                len: state.len,
            };
        }
        Ok(())
    }

    fn set_len(&self, state: &mut State, len: u64) {
        state.len = len;
        self.len.store(len, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.provisioner.observe_len(self.id, len);
    }

    /// Makes `[0, end)` addressable, growing by the initial size first and
    /// by increments after, and extends the logical length to `end`. All or
    /// nothing: on error the component is as it was.
    pub(crate) fn ensure(&self, end: u64) -> Result<(), StateError> {
        let mut state = self.state.lock();
        if state.released {
            return Err(StateError::Released);
        }
        let added_from = state.map.len();
        while state.map.capacity() < end {
            // The initial size may span several physical components (a size
            // above the largest class); after it, grow by increments.
            let capacity = state.map.capacity();
            let step = if capacity < self.initial_bytes { self.initial_bytes - capacity } else { self.increment_bytes };
            match self.provisioner.provision(self.id, step) {
                Ok(region) => {
                    state.map.push(region);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                Err(e) => {
                    while state.map.len() > added_from {
                        if let Some(region) = state.map.pop() {
                            self.provisioner.reclaim(self.id, &region);
                        }
                    }
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    return Err(StateError::Provision(e));
                }
            }
        }
        if end > state.len {
            self.set_len(&mut state, end);
        }
        Ok(())
    }

    /// Sets the logical length. Growing provisions as a write would;
    /// shrinking frees every physical component that lies wholly past the new
    /// end. The bytes cut from the physical component that still holds the
    /// end stay in memory: the caller clears them (see `Channel::resize`).
    pub(crate) fn resize(&self, new_len: u64) -> Result<(), StateError> {
        self.ensure(new_len)?;
        let mut state = self.state.lock();
        while state.map.last_start().is_some_and(|start| start >= new_len) {
            if let Some(region) = state.map.pop() {
                self.provisioner.reclaim(self.id, &region);
            }
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        if state.len != new_len {
            self.set_len(&mut state, new_len);
        }
        Ok(())
    }

    /// Frees every physical component. Later accesses fail. Idempotent.
    pub fn release(&self) {
        let mut state = self.state.lock();
        if state.released {
            return;
        }
        state.released = true;
        self.released.store(true, Ordering::Release);
        while let Some(region) = state.map.pop() {
            self.provisioner.reclaim(self.id, &region);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.set_len(&mut state, 0);
    }

    /// Whether [`release`](Self::release) has run.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}
