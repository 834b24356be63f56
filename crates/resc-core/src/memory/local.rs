//! A memory component held inside the sandbox: how aggregated components
//! (and the function-centric baseline) keep their data.

use parking_lot::RwLock;

/// Growth granularity of local memory: small enough to track the data
/// closely, large enough that growth is rare.
const LOCAL_GROWTH_STEP: usize = 1 << 20;

/// A memory component backed by the sandbox's own heap. It grows to exactly
/// what is written (rounded up to 1 MiB) and is accounted to the sandbox that
/// allocates it.
#[derive(Debug, Default)]
pub struct LocalMemory {
    bytes: RwLock<Vec<u8>>,
    released: RwLock<bool>,
}

impl LocalMemory {
    /// An empty component.
    pub fn new() -> Self {
        Self::default()
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

    /// Writes `data` at `addr`, growing as needed.
    pub(crate) fn write(&self, addr: u64, data: &[u8]) {
        let mut bytes = self.bytes.write();
        let start = addr as usize;
        let end = start + data.len();
        grow_to(&mut bytes, end);
        bytes[start..end].copy_from_slice(data);
    }

    /// Sets the length, zero-filling growth.
    pub(crate) fn resize(&self, len: u64) {
        let mut bytes = self.bytes.write();
        let len = len as usize;
        if len > bytes.len() {
            grow_to(&mut bytes, len);
        } else {
            bytes.truncate(len);
            bytes.shrink_to(len.next_multiple_of(LOCAL_GROWTH_STEP));
        }
    }

    /// Frees the bytes; later accesses fail.
    pub fn release(&self) {
        *self.released.write() = true;
        *self.bytes.write() = Vec::new();
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
