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

/// A memory component backed by the sandbox's own heap. It grows to exactly
/// what is written (rounded up to 1 MiB) and is accounted to the sandbox that
/// allocates it.
#[derive(Debug, Default)]
pub struct LocalMemory {
    bytes: RwLock<Vec<u8>>,
    released: RwLock<bool>,
    budget: Option<Arc<LocalBudget>>,
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

    /// Bytes in use.
    pub fn len(&self) -> u64 {
        self.bytes.read().len() as u64
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the component was released.
    pub fn is_released(&self) -> bool {
        *self.released.read()
    }

    /// Copies `buf.len()` bytes at `addr` into `buf`; `false` if out of range.
    pub(crate) fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let bytes = self.bytes.read();
        let Some(range) = range_in(addr, buf.len(), bytes.len()) else {
            return false;
        };
        buf.copy_from_slice(&bytes[range]);
        true
    }

    /// Writes `data` at `addr`, growing as needed within the budget; on
    /// error nothing is written.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), ProvisionError> {
        let mut bytes = self.bytes.write();
        let end = addr.saturating_add(data.len() as u64);
        let end = usize::try_from(end).map_err(|_| ProvisionError::NoCapacity { requested: end })?;
        if end > bytes.len() {
            self.charge(bytes.len(), end)?;
            grow_to(&mut bytes, end);
        }
        bytes[end - data.len()..end].copy_from_slice(data);
        Ok(())
    }

    /// Sets the length, zero-filling growth within the budget.
    pub(crate) fn resize(&self, len: u64) -> Result<(), ProvisionError> {
        let mut bytes = self.bytes.write();
        let len = usize::try_from(len).map_err(|_| ProvisionError::NoCapacity { requested: len })?;
        self.charge(bytes.len(), len)?;
        if len > bytes.len() {
            grow_to(&mut bytes, len);
        } else {
            bytes.truncate(len);
            bytes.shrink_to(len.next_multiple_of(LOCAL_GROWTH_STEP));
        }
        Ok(())
    }

    /// Frees the bytes; later accesses fail.
    pub fn release(&self) {
        let mut bytes = self.bytes.write();
        *self.released.write() = true;
        // Giving back never fails.
        let _ = self.charge(bytes.len(), 0);
        *bytes = Vec::new();
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
