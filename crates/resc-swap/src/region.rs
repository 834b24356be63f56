//! [`FarRegion`]: a reserved range whose overflow lives in swap space.

use crate::config::SwapConfig;
use crate::error::SwapError;
use crate::geometry::Geometry;
use crate::heap::Bypass;
use crate::pager::{run_handler, Limits, Pager, Shared};
use crate::stats::{Counters, SwapStats};
use crate::sys::{self, Doorbell, Mapping, Userfault};
use parking_lot::Mutex;
use resc_core::pool::MemoryPool;
use resc_core::transport::Transport;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Element types a far region can be viewed as: every bit pattern, all
/// zeros included, is a valid value, and there is no padding.
///
/// # Safety
///
/// Implement it only for types with no invalid bit patterns and no padding
/// (integers, floats, arrays of them).
pub unsafe trait Plain: Copy + 'static {}

macro_rules! plain {
    ($($t:ty),*) => {
        $(
            // SAFETY: every bit pattern of a primitive integer or float is a
            // valid value, and they have no padding.
            unsafe impl Plain for $t {}
        )*
    };
}
plain!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

/// A range of virtual memory larger than the local memory behind it.
///
/// The range is reserved up front ([`SwapConfig::capacity`]) and registered
/// with userfaultfd. At most [`SwapConfig::local_budget`] bytes of it are
/// resident at a time; the rest lives in *swap space*, physical memory
/// components allocated from a [`MemoryPool`] on demand and reached through a
/// [`Transport`]. A dedicated handler thread brings chunks in when they are
/// touched (with read-ahead for sequential access) and writes dirty chunks
/// back when it needs room. Reading and writing the range is plain memory
/// access: see [`as_slice`](Self::as_slice), [`as_mut_slice`](Self::as_mut_slice),
/// or the [`FarHeap`](crate::FarHeap) for allocations in it.
///
/// Bytes never written read as zeros. Dropping the region stops the handler,
/// unmaps the range and frees the swap space.
pub struct FarRegion {
    shared: Arc<Shared>,
    handler: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FarRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarRegion")
            .field("len", &self.len())
            .field("config", &self.shared.config)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl FarRegion {
    /// Reserves a region and starts its handler thread. Swap space comes
    /// from `pool` and is read and written through `transport`.
    ///
    /// Fails with [`SwapError::UserfaultfdUnavailable`] or
    /// [`SwapError::UnsupportedKernel`] where userfaultfd cannot be used, and
    /// with [`SwapError::InvalidConfig`] for sizes out of range.
    pub fn new(
        config: SwapConfig,
        pool: Arc<dyn MemoryPool>,
        transport: Arc<dyn Transport>,
    ) -> Result<FarRegion, SwapError> {
        // The region's own bookkeeping stays in ordinary memory, even when
        // the creating thread sends its large allocations to a far heap.
        let _local = Bypass::enter();
        let capacity = usize::try_from(config.capacity)
            .map_err(|_| SwapError::InvalidConfig(format!("capacity {} exceeds the address space", config.capacity)))?;
        let segment = usize::try_from(config.segment_size)
            .map_err(|_| SwapError::InvalidConfig(format!("segment size {} is too large", config.segment_size)))?;
        let geometry = Geometry::new(sys::page_size(), config.chunk_size, segment, capacity)?;
        let limits = Limits::new(&config, &geometry)?;
        let uffd = Userfault::open()?;
        let mapping = Mapping::reserve(geometry.len()).map_err(|e| SwapError::system("reserving the far region", e))?;
        uffd.register(&mapping)?;
        let doorbell = Doorbell::new().map_err(|e| SwapError::system("creating the handler's eventfd", e))?;
        let pager = Pager::new(&geometry, &limits, config.eviction);
        let shared = Arc::new(Shared {
            geometry,
            config,
            mapping,
            uffd,
            doorbell,
            stop: AtomicBool::new(false),
            counters: Counters::default(),
            poisoned: AtomicBool::new(false),
            first_failure: Mutex::new(None),
            pager: Mutex::new(pager),
            pool,
            transport,
        });
        let for_handler = Arc::clone(&shared);
        let handler = std::thread::Builder::new()
            .name("resc-swap".into())
            .spawn(move || run_handler(&for_handler))
            .map_err(|e| SwapError::system("starting the fault handler thread", e))?;
        Ok(FarRegion { shared, handler: Some(handler) })
    }

    /// Whether this process can create far regions: opens a userfaultfd with
    /// the features a region needs and closes it again.
    pub fn probe() -> Result<(), SwapError> {
        Userfault::open().map(drop)
    }

    /// The region's length in bytes (the capacity rounded up to whole chunks).
    pub fn len(&self) -> usize {
        self.shared.geometry.len()
    }

    /// Always false: a region is never empty.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The first byte. The region is page-aligned.
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared.mapping.base()
    }

    /// The whole region as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is live and readable for `len` bytes as long
        // as `self` is (it is unmapped in `drop`); its bytes are always
        // initialised (missing pages read as their saved bytes or zeros).
        // Writes need `&mut self` or a heap that owns the region, so none
        // happens through safe code while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The whole region as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }

    /// The region as a slice of `T` (as many whole elements as fit).
    ///
    /// # Panics
    ///
    /// If `T` needs an alignment larger than a page.
    pub fn as_slice_of<T: Plain>(&self) -> &[T] {
        let (ptr, len) = self.typed::<T>();
        // SAFETY: `typed` checked alignment and size; every bit pattern is a
        // valid `T` (`Plain`); the borrow rules are those of `as_slice`.
        unsafe { std::slice::from_raw_parts(ptr.cast_const(), len) }
    }

    /// The region as a mutable slice of `T` (as many whole elements as fit).
    ///
    /// # Panics
    ///
    /// If `T` needs an alignment larger than a page.
    pub fn as_mut_slice_of<T: Plain>(&mut self) -> &mut [T] {
        let (ptr, len) = self.typed::<T>();
        // SAFETY: as in `as_slice_of`, with `&mut self` the only borrow.
        unsafe { std::slice::from_raw_parts_mut(ptr, len) }
    }

    fn typed<T: Plain>(&self) -> (*mut T, usize) {
        let size = std::mem::size_of::<T>().max(1);
        assert!(std::mem::align_of::<T>() <= self.shared.geometry.page(), "a far region is only page-aligned");
        (self.as_ptr().cast::<T>(), self.len() / size)
    }

    /// What the region did so far.
    pub fn stats(&self) -> SwapStats {
        self.shared.counters.snapshot()
    }

    /// `Err` with the first backing failure once the region is poisoned:
    /// some fetch, write-back or swap-space allocation failed, so bytes a
    /// code piece read may be zeros instead of what it wrote. A sandbox
    /// calls this after a code piece returns and fails the invocation.
    pub fn check(&self) -> Result<(), SwapError> {
        self.shared.check()
    }

    /// Whether a backing failure happened (see [`check`](Self::check)).
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::SeqCst)
    }

    /// Drops the bytes of every chunk lying wholly inside
    /// `[offset, offset + len)`: they read as zeros afterwards and cost
    /// neither local memory nor write-back.
    pub fn discard(&mut self, offset: usize, len: usize) {
        self.shared.pager.lock().discard(&self.shared, offset, len);
    }

    /// Changes the local budget to `bytes`, rounded down to whole chunks and
    /// raised to the minimum of four chunks; read-ahead windows and the free
    /// target are clipped to the new budget as [`SwapConfig`] describes. A
    /// smaller budget takes effect at the next fault, which evicts down to
    /// it. Returns the budget now in force, in bytes.
    ///
    /// It never allocates, so a [`PressureGate`](crate::PressureGate) may
    /// call it from inside the global allocator.
    pub fn set_local_budget(&self, bytes: u64) -> u64 {
        let chunk = self.shared.geometry.chunk() as u64;
        let bytes = bytes.max(4 * chunk) / chunk * chunk;
        let config = SwapConfig { local_budget: bytes, ..self.shared.config.clone() };
        // At least four chunks, so `Limits::new` cannot refuse it.
        if let Ok(limits) = Limits::new(&config, &self.shared.geometry) {
            self.shared.pager.lock().set_limits(&limits);
        }
        bytes
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &SwapConfig {
        &self.shared.config
    }

    /// Whether faults taken by the kernel on the program's behalf (a
    /// `read(2)` into the region) are served too. When false (the process
    /// may not handle kernel faults), such system calls fail with `EFAULT`
    /// on pages that are not resident.
    pub fn handles_kernel_faults(&self) -> bool {
        self.shared.uffd.kernel_faults()
    }

    /// Whether `ptr` points into the region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        let base = self.as_ptr() as usize;
        (base..base + self.len()).contains(&(ptr as usize))
    }

    /// The chunk size in bytes (the unit of residency).
    pub fn chunk_size(&self) -> usize {
        self.shared.geometry.chunk()
    }

    /// Discards like [`discard`](Self::discard), through a shared borrow.
    ///
    /// # Safety
    ///
    /// No thread reads or writes the discarded bytes concurrently, and no
    /// live reference depends on their values (they were freed).
    pub(crate) unsafe fn discard_shared(&self, offset: usize, len: usize) {
        self.shared.pager.lock().discard(&self.shared, offset, len);
    }
}

impl Drop for FarRegion {
    fn drop(&mut self) {
        let _local = Bypass::enter();
        self.shared.stop.store(true, Ordering::Release);
        self.shared.doorbell.ring();
        if let Some(handler) = self.handler.take() {
            let _ = handler.join();
        }
        self.shared.pager.lock().free_swap(&self.shared);
        // The mapping is unmapped when the last `Arc<Shared>` (ours, now
        // that the handler has exited) goes.
    }
}
