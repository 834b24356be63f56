//! A memory component held inside the sandbox: how aggregated components
//! (and the function-centric baseline) keep their data.

use super::ProvisionError;
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;

/// Growth granularity of local memory: small enough to track the data
/// closely, large enough that growth is rare.
const LOCAL_GROWTH_STEP: usize = 1 << 20;

/// The budget cap that the memory components of one invocation share when
/// they live in the sandbox: the sum of their lengths stays within it.
#[derive(Debug)]
pub(crate) struct LocalBudget {
    cap: u64,
    held: Mutex<u64>,
}

impl LocalBudget {
    pub(crate) fn new(cap: u64) -> Self {
        LocalBudget { cap, held: Mutex::new(0) }
    }
}

/// Why a local access failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LocalError {
    /// The component was released.
    Released,
    /// The access is past the end (`size` bytes).
    OutOfRange { size: u64 },
    /// Growth was refused.
    Provision(ProvisionError),
}

/// A memory component backed by the sandbox's own heap. It grows to exactly
/// what is written (rounded up to 1 MiB) and is accounted to the sandbox that
/// allocates it.
#[derive(Debug)]
pub struct LocalMemory {
    /// `None` once released; one lock, so no access races a release.
    bytes: RwLock<Option<Vec<u8>>>,
    budget: Option<Arc<LocalBudget>>,
}

impl Default for LocalMemory {
    fn default() -> Self {
        LocalMemory { bytes: RwLock::new(Some(Vec::new())), budget: None }
    }
}

impl LocalMemory {
    /// An empty component, with no cap on its growth.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty component that grows only within `budget`.
    pub(crate) fn with_budget(budget: Arc<LocalBudget>) -> Self {
        LocalMemory { budget: Some(budget), ..Self::default() }
    }

    /// Takes `from` → `to` bytes of length out of (or back into) the budget.
    fn charge(&self, from: usize, to: usize) -> Result<(), ProvisionError> {
        let Some(budget) = &self.budget else { return Ok(()) };
        let mut held = budget.held.lock();
        if to > from {
            let requested = (to - from) as u64;
            if held.saturating_add(requested) > budget.cap {
                return Err(ProvisionError::BudgetExceeded { requested, held: *held, cap: budget.cap });
            }
            *held += requested;
        } else {
            *held = held.saturating_sub((from - to) as u64);
        }
        Ok(())
    }

    /// Bytes in use (0 once released).
    pub fn len(&self) -> u64 {
        self.bytes.read().as_ref().map_or(0, |b| b.len() as u64)
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the component was released.
    pub fn is_released(&self) -> bool {
        self.bytes.read().is_none()
    }

    /// Copies `buf.len()` bytes at `addr` into `buf`.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), LocalError> {
        let guard = self.bytes.read();
        let bytes = guard.as_ref().ok_or(LocalError::Released)?;
        let range =
            range_in(addr, buf.len(), bytes.len()).ok_or(LocalError::OutOfRange { size: bytes.len() as u64 })?;
        buf.copy_from_slice(&bytes[range]);
        Ok(())
    }

    /// Lends `len` bytes at `addr` to `f`, under the read lock.
    pub(crate) fn read_with<T>(&self, addr: u64, len: usize, f: impl FnOnce(&[u8]) -> T) -> Result<T, LocalError> {
        let guard = self.bytes.read();
        let bytes = guard.as_ref().ok_or(LocalError::Released)?;
        let range = range_in(addr, len, bytes.len()).ok_or(LocalError::OutOfRange { size: bytes.len() as u64 })?;
        Ok(f(&bytes[range]))
    }

    /// Writes `data` at `addr`, growing as needed within the budget; on
    /// error nothing is written.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), LocalError> {
        let mut guard = self.bytes.write();
        let bytes = guard.as_mut().ok_or(LocalError::Released)?;
        let end = addr.saturating_add(data.len() as u64);
        let end =
            usize::try_from(end).map_err(|_| LocalError::Provision(ProvisionError::NoCapacity { requested: end }))?;
        if end > bytes.len() {
            self.charge(bytes.len(), end).map_err(LocalError::Provision)?;
            grow_to(bytes, end);
        }
        bytes[end - data.len()..end].copy_from_slice(data);
        Ok(())
    }

    /// Sets the length, zero-filling growth within the budget.
    pub(crate) fn resize(&self, len: u64) -> Result<(), LocalError> {
        let mut guard = self.bytes.write();
        let bytes = guard.as_mut().ok_or(LocalError::Released)?;
        let len =
            usize::try_from(len).map_err(|_| LocalError::Provision(ProvisionError::NoCapacity { requested: len }))?;
        self.charge(bytes.len(), len).map_err(LocalError::Provision)?;
        if len > bytes.len() {
            grow_to(bytes, len);
        } else {
            bytes.truncate(len);
            bytes.shrink_to(len.next_multiple_of(LOCAL_GROWTH_STEP));
        }
        Ok(())
    }

    /// Frees the bytes; later accesses fail. Idempotent.
    pub fn release(&self) {
        if let Some(bytes) = self.bytes.write().take() {
            // Giving back never fails.
            let _ = self.charge(bytes.len(), 0);
        }
    }
}

fn grow_to(bytes: &mut Vec<u8>, end: usize) {
    if end > bytes.len() {
        if end > bytes.capacity() {
            let target = end.next_multiple_of(LOCAL_GROWTH_STEP);
            bytes.reserve_exact(target - bytes.len());
        }
        bytes.resize(end, 0);
    }
}

pub(crate) fn range_in(addr: u64, len: usize, size: usize) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(addr).ok()?;
    let end = start.checked_add(len)?;
    (end <= size).then_some(start..end)
}
