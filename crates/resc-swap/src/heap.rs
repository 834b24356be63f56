//! Allocations in far memory: a [`FarHeap`] over a region, [`FarVec`] for
//! libraries that want control, and [`SwapAllocator`], the global allocator
//! layer a sandbox installs so that a code piece's large allocations land in
//! far memory without any change to its code. The threading model is in the
//! crate documentation.
//!
//! The allocator never allocates while holding its own locks (the free list
//! has a fixed capacity; the registry of heaps is a fixed table), and the
//! crate's own bookkeeping always stays in the inner allocator ([`Bypass`]).

use crate::error::SwapError;
use crate::region::FarRegion;
use crate::stats::SwapStats;
use resc_core::sandbox::ThreadAccount;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The most far heaps alive at once in a process.
pub const MAX_HEAPS: usize = 64;
/// The most free ranges a heap tracks; a free that would need more leaks its
/// range (counted in [`FarHeap::leaked_bytes`]).
const MAX_FREE_RANGES: usize = 4096;

thread_local! {
    /// The heap the current thread has entered (null: none); it owns one
    /// reference to that heap. Const-initialised without destructor: reading
    /// it never allocates, as an allocator needs.
    static CURRENT: Cell<*const HeapInner> = const { Cell::new(std::ptr::null()) };
    /// Nesting depth of [`Bypass`] on this thread.
    static BYPASS: Cell<u32> = const { Cell::new(0) };
}

/// While alive, the current thread's allocations stay in the inner
/// allocator: for the crate's own bookkeeping.
pub(crate) struct Bypass(PhantomData<*const ()>);

impl Bypass {
    pub(crate) fn enter() -> Bypass {
        let _ = BYPASS.try_with(|b| b.set(b.get() + 1));
        Bypass(PhantomData)
    }
}

impl Drop for Bypass {
    fn drop(&mut self) {
        let _ = BYPASS.try_with(|b| b.set(b.get().saturating_sub(1)));
    }
}

/// When a [`SwapAllocator`] starts sending a thread's large allocations to a
/// heap: under memory pressure, not before.
///
/// A compute component's local memory is its slot. While the bytes it holds
/// locally plus a new allocation fit in `local_limit`, the allocation stays
/// local and swap is off. The first one that does not fit *engages* the heap
/// for good: from then on every large allocation of a thread in the heap
/// goes far, and the region's local budget becomes what the slot has left
/// (`local_limit` − the local bytes at that moment − `headroom`, at least
/// four chunks), so that local and far-resident memory together stay within
/// the slot while the local heap grows by at most `headroom` afterwards.
///
/// `local_bytes` runs inside the global allocator: it must not allocate,
/// lock or panic (reading an atomic counter, as the platform's counting
/// allocator offers, is the intended use).
#[derive(Debug, Clone, Copy)]
pub struct PressureGate {
    /// The bytes the current thread's compute instance holds locally now.
    pub local_bytes: fn() -> u64,
    /// The local memory of the compute instance (its slot), bytes.
    pub local_limit: u64,
    /// Bytes of the slot left out of the region's budget, for the small
    /// allocations (below the allocator's threshold, always local) made
    /// after swap is on.
    pub headroom: u64,
}

/// Free ranges of a heap, in granules, sorted by start, never adjacent (they
/// are merged), in a vector whose capacity is fixed at creation so that
/// allocating and freeing never allocate.
#[derive(Debug)]
pub(crate) struct FreeList {
    ranges: Vec<(usize, usize)>,
    capacity: usize,
}

impl FreeList {
    /// All of `granules` free, at most `capacity` ranges.
    pub(crate) fn new(granules: usize, capacity: usize) -> FreeList {
        let mut ranges = Vec::with_capacity(capacity);
        if granules > 0 {
            ranges.push((0, granules));
        }
        FreeList { ranges, capacity }
    }

    /// Takes `n` granules (first fit); returns the first.
    pub(crate) fn allocate(&mut self, n: usize) -> Option<usize> {
        let index = self.ranges.iter().position(|&(_, len)| len >= n)?;
        let (start, len) = self.ranges[index];
        if len == n {
            self.ranges.remove(index);
        } else {
            self.ranges[index] = (start + n, len - n);
        }
        Some(start)
    }

    /// Takes the `n` granules right after `end`, if free: growth in place.
    pub(crate) fn extend(&mut self, end: usize, n: usize) -> bool {
        let Ok(index) = self.ranges.binary_search_by_key(&end, |&(start, _)| start) else { return false };
        let (start, len) = self.ranges[index];
        if len < n {
            return false;
        }
        if len == n {
            self.ranges.remove(index);
        } else {
            self.ranges[index] = (start + n, len - n);
        }
        true
    }

    /// Returns `n` granules from `start`; false when the list is full and
    /// the range could not be recorded (it is then lost).
    pub(crate) fn free(&mut self, start: usize, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let index = self.ranges.partition_point(|&(s, _)| s < start);
        let joins_previous = index > 0 && {
            let (s, len) = self.ranges[index - 1];
            s + len == start
        };
        let joins_next = index < self.ranges.len() && self.ranges[index].0 == start + n;
        match (joins_previous, joins_next) {
            (true, true) => {
                let (_, next_len) = self.ranges.remove(index);
                self.ranges[index - 1].1 += n + next_len;
            }
            (true, false) => self.ranges[index - 1].1 += n,
            (false, true) => {
                let next = &mut self.ranges[index];
                *next = (start, next.1 + n);
            }
            (false, false) => {
                if self.ranges.len() >= self.capacity {
                    return false;
                }
                self.ranges.insert(index, (start, n));
            }
        }
        true
    }

    /// Free granules in total.
    #[cfg(test)]
    pub(crate) fn free_granules(&self) -> usize {
        self.ranges.iter().map(|&(_, len)| len).sum()
    }

    /// The ranges (for tests).
    #[cfg(test)]
    pub(crate) fn ranges(&self) -> &[(usize, usize)] {
        &self.ranges
    }
}

struct HeapInner {
    region: FarRegion,
    base: usize,
    len: usize,
    granule: usize,
    free: Mutex<FreeList>,
    /// Handles plus live blocks; the heap goes when it reaches zero.
    refs: AtomicUsize,
    allocated: AtomicUsize,
    leaked: AtomicU64,
    /// When the allocator starts sending blocks here; `None`: at once.
    gate: Option<PressureGate>,
    /// Whether the gate opened (always true without a gate).
    engaged: AtomicBool,
}

impl HeapInner {
    fn granules(&self, size: usize) -> usize {
        size.div_ceil(self.granule).max(1)
    }

    fn contains(&self, ptr: usize) -> bool {
        (self.base..self.base + self.len).contains(&ptr)
    }

    /// Whether the allocator may place a block of `size` bytes here now, in
    /// place of a local block of `replacing` bytes that is freed right after
    /// (a `realloc` moving it): always once engaged; before that, only when
    /// the gate sees pressure, which engages the heap and gives its region
    /// what the slot has left.
    fn admits(&self, size: usize, replacing: usize) -> bool {
        if self.engaged.load(Ordering::Acquire) {
            return true;
        }
        let Some(gate) = self.gate else { return true };
        let local = (gate.local_bytes)().saturating_sub(replacing as u64);
        if local.saturating_add(size as u64) <= gate.local_limit {
            return false;
        }
        if self.engaged.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            // The budget change takes the pager's lock, whose slow path may
            // allocate: that must not come back here.
            let _local = Bypass::enter();
            self.region.set_local_budget(gate.local_limit.saturating_sub(local).saturating_sub(gate.headroom));
        }
        true
    }

    /// A zeroed block for `layout` (size > 0, align ≤ granule), or `None`
    /// when no free range is large enough.
    fn alloc_block(&self, layout: Layout) -> Option<NonNull<u8>> {
        let _local = Bypass::enter();
        let n = self.granules(layout.size());
        let start = self.free.lock().unwrap_or_else(|p| p.into_inner()).allocate(n)?;
        self.refs.fetch_add(1, Ordering::Relaxed);
        self.allocated.fetch_add(n * self.granule, Ordering::Relaxed);
        NonNull::new((self.base + start * self.granule) as *mut u8)
    }

    /// Grows or shrinks a block in place when its granules allow; returns
    /// whether it did.
    fn resize_in_place(&self, ptr: usize, old: usize, new: usize) -> bool {
        let _local = Bypass::enter();
        let (old_n, new_n) = (self.granules(old), self.granules(new));
        let start = (ptr - self.base) / self.granule;
        if new_n == old_n {
            return true;
        }
        if new_n > old_n {
            let grown = self.free.lock().unwrap_or_else(|p| p.into_inner()).extend(start + old_n, new_n - old_n);
            if grown {
                self.allocated.fetch_add((new_n - old_n) * self.granule, Ordering::Relaxed);
            }
            return grown;
        }
        self.release_granules(start + new_n, old_n - new_n);
        true
    }

    /// Discards and frees `n` granules from `start`.
    fn release_granules(&self, start: usize, n: usize) {
        let offset = start * self.granule;
        let len = n * self.granule;
        // SAFETY: the granules belonged to a block that its owner has freed:
        // nobody reads or writes them any more, so dropping their bytes
        // cannot change anything observable. They go back to the free list
        // only afterwards, reading as zeros.
        unsafe { self.region.discard_shared(offset, len) };
        self.allocated.fetch_sub(len, Ordering::Relaxed);
        if !self.free.lock().unwrap_or_else(|p| p.into_inner()).free(start, n) {
            self.leaked.fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Frees a block of this heap. The heap may be gone afterwards.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of this heap allocated for `size` bytes, and
    /// `this` points to a live heap (the block itself keeps it alive).
    unsafe fn free_block(this: NonNull<HeapInner>, ptr: usize, size: usize) {
        {
            let _local = Bypass::enter();
            // SAFETY: the block being freed holds a reference, so the heap is alive.
            let heap = unsafe { this.as_ref() };
            let start = (ptr - heap.base) / heap.granule;
            heap.release_granules(start, heap.granules(size));
        }
        // SAFETY: this drops the block's reference, as the caller allows.
        unsafe { release(this) };
    }
}

/// Drops one reference; the last one unregisters and frees the heap.
///
/// # Safety
///
/// The caller owns one reference to the live heap `this`.
unsafe fn release(this: NonNull<HeapInner>) {
    // SAFETY: the caller's reference keeps the heap alive until this call.
    let refs = unsafe { &this.as_ref().refs };
    if refs.fetch_sub(1, Ordering::Release) != 1 {
        return;
    }
    std::sync::atomic::fence(Ordering::Acquire);
    let _local = Bypass::enter();
    unregister(this);
    // SAFETY: the count reached zero: no handle and no block refers to the
    // heap any more, and it is out of the registry, so no lookup can find
    // it. It was made by `Box::into_raw` in `FarHeap::new`.
    drop(unsafe { Box::from_raw(this.as_ptr()) });
}

/// Registry entry: `(start, end, heap address)`; `heap == 0` is free.
type Entry = (usize, usize, usize);

/// Every live heap's address range, so that a free finds its heap.
static REGISTRY: Mutex<[Entry; MAX_HEAPS]> = Mutex::new([(0, 0, 0); MAX_HEAPS]);

fn registry() -> std::sync::MutexGuard<'static, [Entry; MAX_HEAPS]> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

fn unregister(this: NonNull<HeapInner>) {
    let address = this.as_ptr() as usize;
    for entry in registry().iter_mut() {
        if entry.2 == address {
            *entry = (0, 0, 0);
        }
    }
}

/// The heap owning the block at `ptr`, if any.
fn lookup(ptr: usize) -> Option<NonNull<HeapInner>> {
    registry()
        .iter()
        .find(|&&(start, end, heap)| heap != 0 && (start..end).contains(&ptr))
        .and_then(|&(_, _, heap)| NonNull::new(heap as *mut HeapInner))
}

/// A heap in a [`FarRegion`]: blocks of whole chunks, zeroed, freed blocks
/// discarded at once (no write-back, no local memory).
///
/// Cloning makes another handle to the same heap. The heap (and its region)
/// goes when the last handle and the last block are gone.
///
/// ```no_run
/// # use std::sync::Arc;
/// # use resc_core::inproc::{InProcessFabric, InProcessMemory};
/// # use resc_core::ids::NodeId;
/// use resc_swap::{FarHeap, FarRegion, FarVec, SwapConfig};
///
/// # let memory = Arc::new(InProcessMemory::new(NodeId(1), 1 << 30));
/// # let fabric = Arc::new(InProcessFabric::new());
/// # fabric.attach(memory.clone());
/// let region = FarRegion::new(SwapConfig::new(1 << 30, 16 << 20), memory, fabric)?;
/// let heap = FarHeap::new(region)?;
/// let mut v: FarVec<u64> = FarVec::with_capacity_in(1 << 20, &heap)?;
/// v.extend((0..1 << 20).map(|i| i as u64));
/// assert_eq!(v[12345], 12345);
/// # Ok::<(), resc_swap::SwapError>(())
/// ```
pub struct FarHeap {
    inner: NonNull<HeapInner>,
}

// SAFETY: the heap's state is atomics, a mutex and a `FarRegion` (Send +
// Sync); blocks are plain memory.
unsafe impl Send for FarHeap {}
// SAFETY: as above.
unsafe impl Sync for FarHeap {}

impl std::fmt::Debug for FarHeap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarHeap")
            .field("len", &self.inner().len)
            .field("allocated", &self.allocated_bytes())
            .finish_non_exhaustive()
    }
}

impl FarHeap {
    /// A heap over all of `region`; its granule is the region's chunk.
    pub fn new(region: FarRegion) -> Result<FarHeap, SwapError> {
        FarHeap::build(region, None)
    }

    /// A heap over all of `region` that a [`SwapAllocator`] uses only once
    /// `gate` reports memory pressure (see [`PressureGate`]). The explicit
    /// API ([`allocate`](Self::allocate), [`FarVec`]) is not gated.
    pub fn with_pressure_gate(region: FarRegion, gate: PressureGate) -> Result<FarHeap, SwapError> {
        FarHeap::build(region, Some(gate))
    }

    fn build(region: FarRegion, gate: Option<PressureGate>) -> Result<FarHeap, SwapError> {
        let _local = Bypass::enter();
        let base = region.as_ptr() as usize;
        let len = region.len();
        let granule = region.chunk_size();
        let inner = Box::new(HeapInner {
            region,
            base,
            len,
            granule,
            free: Mutex::new(FreeList::new(len / granule, MAX_FREE_RANGES)),
            refs: AtomicUsize::new(1),
            allocated: AtomicUsize::new(0),
            leaked: AtomicU64::new(0),
            engaged: AtomicBool::new(gate.is_none()),
            gate,
        });
        let mut table = registry();
        let Some(entry) = table.iter_mut().find(|e| e.2 == 0) else {
            return Err(SwapError::TooManyHeaps(MAX_HEAPS));
        };
        let inner = NonNull::from(Box::leak(inner));
        *entry = (base, base + len, inner.as_ptr() as usize);
        Ok(FarHeap { inner })
    }

    fn inner(&self) -> &HeapInner {
        // SAFETY: a handle holds a reference, so the heap is alive.
        unsafe { self.inner.as_ref() }
    }

    /// A zeroed block for `layout`. Zero-sized layouts get a dangling,
    /// aligned pointer that [`deallocate`](Self::deallocate) accepts.
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, SwapError> {
        let heap = self.inner();
        if layout.align() > heap.granule {
            return Err(SwapError::InvalidConfig(format!(
                "alignment {} exceeds the far heap's granule of {} bytes",
                layout.align(),
                heap.granule
            )));
        }
        if layout.size() == 0 {
            let dangling = NonNull::new(layout.align() as *mut u8).unwrap_or(NonNull::dangling());
            return Ok(NonNull::slice_from_raw_parts(dangling, 0));
        }
        let block = heap
            .alloc_block(layout)
            .ok_or(SwapError::OutOfFarMemory { requested: (heap.granules(layout.size()) * heap.granule) as u64 })?;
        Ok(NonNull::slice_from_raw_parts(block, layout.size()))
    }

    /// Frees a block.
    ///
    /// # Safety
    ///
    /// `ptr` came from [`allocate`](Self::allocate) of this heap (or a
    /// clone) with this `layout`, and is not used afterwards.
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() == 0 {
            return;
        }
        // SAFETY: the caller's contract: a live block of this heap.
        unsafe { HeapInner::free_block(self.inner, ptr.as_ptr() as usize, layout.size()) };
    }

    /// Whether `ptr` points into the heap's region.
    pub fn contains(&self, ptr: *const u8) -> bool {
        self.inner().contains(ptr as usize)
    }

    /// Sends the current thread's allocations of at least the
    /// [`SwapAllocator`]'s threshold to this heap until the guard is dropped
    /// (when the process's global allocator is a `SwapAllocator`).
    ///
    /// Guards nest; drop them in the reverse order of creation (as scopes
    /// do). Dropping them in another order, or forgetting one, is safe but
    /// leaves the thread in an unexpected heap (or keeps a heap alive).
    pub fn enter(&self) -> Entered {
        // The thread-local holds a reference of its own to the heap it names,
        // so it never names a heap that is gone, whatever the guards do.
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        let previous = CURRENT.with(|c| c.replace(self.inner.as_ptr()));
        Entered { heap: self.clone(), previous, _not_send: PhantomData }
    }

    /// What the heap's region did so far.
    pub fn stats(&self) -> SwapStats {
        self.inner().region.stats()
    }

    /// `Err` once the region is poisoned; see [`FarRegion::check`].
    pub fn check(&self) -> Result<(), SwapError> {
        self.inner().region.check()
    }

    /// Bytes in live blocks (whole granules).
    pub fn allocated_bytes(&self) -> usize {
        self.inner().allocated.load(Ordering::Relaxed)
    }

    /// Bytes lost because the free list was full when they were freed.
    pub fn leaked_bytes(&self) -> u64 {
        self.inner().leaked.load(Ordering::Relaxed)
    }

    /// The allocation granule (the region's chunk size).
    pub fn granule(&self) -> usize {
        self.inner().granule
    }

    /// Whether the [`SwapAllocator`] has started sending allocations here:
    /// at once for a heap without a [`PressureGate`], at the first
    /// allocation under pressure for one with a gate.
    pub fn is_engaged(&self) -> bool {
        self.inner().engaged.load(Ordering::Acquire)
    }
}

impl Clone for FarHeap {
    fn clone(&self) -> Self {
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        FarHeap { inner: self.inner }
    }
}

impl Drop for FarHeap {
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference.
        unsafe { release(self.inner) };
    }
}

/// A far heap is a [`ThreadAccount`]: a sandbox that enters a job's account
/// on the code piece's thread (as [`ThreadSandbox`] does) sends that
/// thread's large allocations to the heap, without a guard. `enter` replaces
/// whatever heap the thread was in; `leave` leaves only this heap. A
/// platform that also meters with its own account enters both from one
/// wrapper account.
///
/// [`ThreadSandbox`]: resc_core::inproc::ThreadSandbox
impl ThreadAccount for FarHeap {
    fn enter(&self) {
        // The thread-local's own reference, as in `FarHeap::enter`.
        self.inner().refs.fetch_add(1, Ordering::Relaxed);
        let previous = CURRENT.with(|c| c.replace(self.inner.as_ptr()));
        if let Some(previous) = NonNull::new(previous.cast_mut()) {
            // SAFETY: the thread-local owned one reference to `previous`.
            unsafe { release(previous) };
        }
    }

    fn leave(&self) {
        let ours = self.inner.as_ptr().cast_const();
        let left = CURRENT.try_with(|c| c.get() == ours && c.replace(std::ptr::null()) == ours).unwrap_or(false);
        if left {
            // SAFETY: the thread-local owned one reference to this heap.
            unsafe { release(self.inner) };
        }
    }
}

/// A thread's stay in a far heap; see [`FarHeap::enter`]. Dropping it
/// restores the heap the thread was in before (if any). Not `Send`: it
/// belongs to the thread that entered.
#[derive(Debug)]
pub struct Entered {
    heap: FarHeap,
    previous: *const HeapInner,
    _not_send: PhantomData<*const ()>,
}

impl Entered {
    /// The heap entered.
    pub fn heap(&self) -> &FarHeap {
        &self.heap
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // `previous` carries the thread-local's reference back to it; the
        // reference of the heap being left goes.
        let previous = self.previous;
        let left = CURRENT.try_with(|c| c.replace(previous)).unwrap_or(std::ptr::null());
        if let Some(left) = NonNull::new(left.cast_mut()) {
            // SAFETY: the thread-local owned one reference to `left`.
            unsafe { release(left) };
        }
    }
}

/// The heap large allocations of this thread go to now, if any.
fn current_heap() -> Option<NonNull<HeapInner>> {
    if BYPASS.try_with(Cell::get).unwrap_or(1) != 0 {
        return None;
    }
    NonNull::new(CURRENT.try_with(Cell::get).unwrap_or(std::ptr::null()).cast_mut())
}

/// Set by the first allocation through a [`SwapAllocator`].
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Whether a [`SwapAllocator`] serves this process's allocations (it has
/// allocated at least once): without one, entering a heap changes nothing.
pub fn allocator_installed() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// The default threshold of [`SwapAllocator`]: 256 KiB.
pub const DEFAULT_THRESHOLD: usize = 256 << 10;

/// A global allocator layer: on a thread that has entered a [`FarHeap`],
/// allocations of at least `threshold` bytes go to that heap; everything
/// else goes to the inner allocator `A`. The binary installs it, and the
/// sandbox enters the code piece's heap around the code piece:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: resc_swap::SwapAllocator =
///     resc_swap::SwapAllocator::new(std::alloc::System, resc_swap::DEFAULT_THRESHOLD);
///
/// // In the sandbox, on the code piece's thread:
/// let heap = resc_swap::FarHeap::new(region)?;
/// let output = {
///     let _entered = heap.enter();
///     piece.run(&mut context) // its large Vecs, Boxes, HashMaps… are far
/// };
/// heap.check()?; // a failed backing component fails the invocation
/// ```
///
/// It composes with a metering allocator (the platform's counting
/// allocator) as its inner allocator; far blocks are metered through the
/// heap's [`SwapStats`] instead. When the heap is full, or the alignment
/// exceeds its granule, the allocation falls back to the inner allocator.
/// A far block that shrinks below the threshold moves back to the inner
/// allocator, one that grows stays in its heap (in place when the granules
/// after it are free). Blocks below the threshold never touch the far path,
/// so small allocations cost one branch more; freeing a large block looks
/// its address up in a table of at most [`MAX_HEAPS`] heaps. See the crate
/// documentation for the threading model.
#[derive(Debug, Clone, Copy, Default)]
pub struct SwapAllocator<A = System> {
    inner: A,
    threshold: usize,
}

impl<A> SwapAllocator<A> {
    /// Large allocations (≥ `threshold` bytes, at least 1) of entered
    /// threads go far; the rest to `inner`.
    pub const fn new(inner: A, threshold: usize) -> Self {
        SwapAllocator { inner, threshold: if threshold == 0 { 1 } else { threshold } }
    }

    /// The threshold in bytes.
    pub const fn threshold(&self) -> usize {
        self.threshold
    }

    /// The far heap the block at `ptr` of `size` bytes belongs to, if any.
    fn far_owner(&self, ptr: *mut u8, size: usize) -> Option<NonNull<HeapInner>> {
        if size < self.threshold {
            return None;
        }
        lookup(ptr as usize)
    }
}

impl<A: GlobalAlloc> SwapAllocator<A> {
    /// A far block for `layout` if this thread is in a heap and the block
    /// qualifies.
    fn far_alloc(&self, layout: Layout) -> Option<*mut u8> {
        self.far_alloc_replacing(layout, 0)
    }

    /// [`far_alloc`](Self::far_alloc) for a block that replaces a local one
    /// of `replacing` bytes (freed once the bytes are copied).
    fn far_alloc_replacing(&self, layout: Layout, replacing: usize) -> Option<*mut u8> {
        if layout.size() < self.threshold {
            return None;
        }
        let heap = current_heap()?;
        // SAFETY: the thread-local owns a reference to the heap it names.
        let heap = unsafe { heap.as_ref() };
        if layout.align() > heap.granule || !heap.admits(layout.size(), replacing) {
            return None;
        }
        heap.alloc_block(layout).map(NonNull::as_ptr)
    }
}

// SAFETY: far blocks are whole granules of a live heap's region, aligned to
// the granule (≥ any alignment accepted), zeroed, and kept alive by the
// reference each holds; a block is recognised as far by its size (≥ the
// threshold, an invariant `realloc` keeps) and its address (the registry),
// so every block goes back to the allocator it came from. Everything else is
// forwarded to `A` unchanged.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SwapAllocator<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !INSTALLED.load(Ordering::Relaxed) {
            INSTALLED.store(true, Ordering::Relaxed);
        }
        if let Some(ptr) = self.far_alloc(layout) {
            return ptr;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { self.inner.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Far blocks are zeroed already.
        if let Some(ptr) = self.far_alloc(layout) {
            return ptr;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { self.inner.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(heap) = self.far_owner(ptr, layout.size()) {
            // SAFETY: `ptr` is a live block of that heap (found by address),
            // of `layout.size()` bytes, given up by the caller.
            unsafe { HeapInner::free_block(heap, ptr as usize, layout.size()) };
            return;
        }
        // SAFETY: not a far block, so it came from `inner` with this layout.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Some(heap_ptr) = self.far_owner(ptr, layout.size()) else {
            // A local block: it moves far only if it grows past the threshold
            // on a thread that is in a heap.
            // SAFETY: `new_size` with the old alignment is a valid layout
            // (the caller's contract).
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            if let Some(far) = self.far_alloc_replacing(new_layout, layout.size()) {
                // SAFETY: both blocks are live and distinct; `min` bytes fit both.
                unsafe { std::ptr::copy_nonoverlapping(ptr, far, layout.size().min(new_size)) };
                // SAFETY: the old block came from `inner` with `layout`.
                unsafe { self.inner.dealloc(ptr, layout) };
                return far;
            }
            // SAFETY: forwarded unchanged.
            return unsafe { self.inner.realloc(ptr, layout, new_size) };
        };
        // SAFETY: the block holds a reference, so its heap is alive.
        let heap = unsafe { heap_ptr.as_ref() };
        if new_size >= self.threshold && heap.resize_in_place(ptr as usize, layout.size(), new_size) {
            return ptr;
        }
        // Move: to the same heap while large, to `inner` once small.
        // SAFETY: as above, a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let target = if new_size >= self.threshold { heap.alloc_block(new_layout).map(NonNull::as_ptr) } else { None };
        let target = match target {
            Some(far) => far,
            // SAFETY: a valid layout of non-zero size (`realloc`'s contract).
            None => unsafe { self.inner.alloc(new_layout) },
        };
        if target.is_null() {
            return target;
        }
        // SAFETY: distinct live blocks; `min` bytes fit both.
        unsafe { std::ptr::copy_nonoverlapping(ptr, target, layout.size().min(new_size)) };
        // SAFETY: the old block is a live block of `heap` of `layout.size()` bytes.
        unsafe { HeapInner::free_block(heap_ptr, ptr as usize, layout.size()) };
        target
    }
}

/// A growable array in a [`FarHeap`]: `Vec<T>` for data that should live in
/// far memory whether or not a global [`SwapAllocator`] is installed.
///
/// Growing extends the block in place when the granules after it are free,
/// and otherwise moves the elements to a larger block; freeing discards the
/// block's pages at once.
pub struct FarVec<T> {
    ptr: NonNull<T>,
    len: usize,
    cap: usize,
    heap: FarHeap,
}

// SAFETY: a `FarVec<T>` owns its elements like a `Vec<T>`.
unsafe impl<T: Send> Send for FarVec<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for FarVec<T> {}

impl<T> FarVec<T> {
    /// An empty vector in `heap` (no block yet).
    pub fn new_in(heap: &FarHeap) -> Self {
        let cap = if std::mem::size_of::<T>() == 0 { usize::MAX } else { 0 };
        FarVec { ptr: NonNull::dangling(), len: 0, cap, heap: heap.clone() }
    }

    /// An empty vector with room for `capacity` elements.
    pub fn with_capacity_in(capacity: usize, heap: &FarHeap) -> Result<Self, SwapError> {
        let mut v = FarVec::new_in(heap);
        v.try_reserve(capacity)?;
        Ok(v)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Elements it can hold without growing.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// The heap it lives in.
    pub fn heap(&self) -> &FarHeap {
        &self.heap
    }

    /// Makes room for `additional` more elements.
    pub fn try_reserve(&mut self, additional: usize) -> Result<(), SwapError> {
        let needed = self.len.checked_add(additional).ok_or(SwapError::OutOfFarMemory { requested: u64::MAX })?;
        if needed <= self.cap {
            return Ok(());
        }
        let size = std::mem::size_of::<T>();
        let per_granule = (self.heap.granule() / size).max(1);
        let new_cap = needed.max(self.cap.saturating_mul(2)).max(per_granule);
        let layout = Layout::array::<T>(new_cap).map_err(|_| SwapError::OutOfFarMemory { requested: u64::MAX })?;
        if self.cap > 0 {
            let old = Layout::array::<T>(self.cap).map_err(|_| SwapError::OutOfFarMemory { requested: u64::MAX })?;
            if self.heap.inner().resize_in_place(self.ptr.as_ptr() as usize, old.size(), layout.size()) {
                // The granules after the block were free: no copy.
                self.cap = new_cap;
                return Ok(());
            }
        }
        let block = self.heap.allocate(layout)?.cast::<T>();
        if self.cap > 0 {
            // SAFETY: the old block holds `len` initialised elements and the
            // new one has room for `new_cap` ≥ `len`; they are distinct.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr(), block.as_ptr(), self.len) };
            let old = Layout::array::<T>(self.cap).map_err(|_| SwapError::OutOfFarMemory { requested: u64::MAX })?;
            // SAFETY: the old block came from this heap with `old`; its
            // elements were moved out bitwise above.
            unsafe { self.heap.deallocate(self.ptr.cast(), old) };
        }
        self.ptr = block;
        self.cap = new_cap;
        Ok(())
    }

    /// Appends `value`. Panics when the far heap is out of space (as `Vec`
    /// aborts when memory runs out); [`try_push`](Self::try_push) returns
    /// the error instead.
    pub fn push(&mut self, value: T) {
        if let Err(e) = self.try_push(value) {
            panic!("FarVec::push: {e}");
        }
    }

    /// Appends `value`, or says why the vector could not grow.
    pub fn try_push(&mut self, value: T) -> Result<(), SwapError> {
        if self.len == self.cap {
            self.try_reserve(1)?;
        }
        // SAFETY: `len < cap`, so the slot is inside the block and unused.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
        Ok(())
    }

    /// Removes and returns the last element.
    pub fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        // SAFETY: the slot held an initialised element, now outside `len`.
        Some(unsafe { self.ptr.as_ptr().add(self.len).read() })
    }

    /// Drops the elements past `len`.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let tail = std::ptr::slice_from_raw_parts_mut(
            // SAFETY: `len < self.len`, inside the block.
            unsafe { self.ptr.as_ptr().add(len) },
            self.len - len,
        );
        self.len = len;
        // SAFETY: the tail held initialised elements, no longer reachable.
        unsafe { std::ptr::drop_in_place(tail) };
    }

    /// Drops every element (the block stays).
    pub fn clear(&mut self) {
        self.truncate(0);
    }

    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        // SAFETY: `len` initialised elements at `ptr` (dangling but aligned
        // when `len` is 0 or `T` is zero-sized).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The elements, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        // SAFETY: as above, borrowed uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Clone> FarVec<T> {
    /// Appends clones of `items`.
    pub fn extend_from_slice(&mut self, items: &[T]) {
        if let Err(e) = self.try_reserve(items.len()) {
            panic!("FarVec::extend_from_slice: {e}");
        }
        for item in items {
            self.push(item.clone());
        }
    }

    /// Grows or shrinks to `len` elements, filling with clones of `value`.
    pub fn resize(&mut self, len: usize, value: T) {
        if len <= self.len {
            self.truncate(len);
            return;
        }
        if let Err(e) = self.try_reserve(len - self.len) {
            panic!("FarVec::resize: {e}");
        }
        while self.len < len {
            self.push(value.clone());
        }
    }
}

impl<T> Extend<T> for FarVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        if let Err(e) = self.try_reserve(iter.size_hint().0) {
            panic!("FarVec::extend: {e}");
        }
        for item in iter {
            self.push(item);
        }
    }
}

impl<T> std::ops::Deref for FarVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T> std::ops::DerefMut for FarVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for FarVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> Drop for FarVec<T> {
    fn drop(&mut self) {
        self.clear();
        if std::mem::size_of::<T>() == 0 || self.cap == 0 {
            return;
        }
        if let Ok(layout) = Layout::array::<T>(self.cap) {
            // SAFETY: the block came from this heap with this layout; its
            // elements were dropped above.
            unsafe { self.heap.deallocate(self.ptr.cast(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FreeList;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Free(usize),
        Grow(usize, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (1usize..40).prop_map(Op::Alloc),
            any::<usize>().prop_map(Op::Free),
            (any::<usize>(), 1usize..10).prop_map(|(i, n)| Op::Grow(i, n)),
        ]
    }

    proptest! {
        /// Blocks never overlap, stay inside, and every granule is either in
        /// exactly one block or free; freeing everything restores one range.
        #[test]
        fn free_list_conserves_granules(ops in proptest::collection::vec(op(), 1..200)) {
            const TOTAL: usize = 256;
            let mut list = FreeList::new(TOTAL, 1024);
            let mut blocks: Vec<(usize, usize)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        if let Some(start) = list.allocate(n) {
                            prop_assert!(start + n <= TOTAL);
                            for &(s, len) in &blocks {
                                prop_assert!(start + n <= s || s + len <= start, "overlap");
                            }
                            blocks.push((start, n));
                        }
                    }
                    Op::Free(i) if !blocks.is_empty() => {
                        let (start, n) = blocks.swap_remove(i % blocks.len());
                        prop_assert!(list.free(start, n));
                    }
                    Op::Grow(i, extra) if !blocks.is_empty() => {
                        let index = i % blocks.len();
                        let (start, n) = blocks[index];
                        if list.extend(start + n, extra) {
                            for (j, &(s, len)) in blocks.iter().enumerate() {
                                if j != index {
                                    prop_assert!(start + n + extra <= s || s + len <= start, "grew into a block");
                                }
                            }
                            blocks[index].1 += extra;
                        }
                    }
                    _ => {}
                }
                let used: usize = blocks.iter().map(|&(_, n)| n).sum();
                prop_assert_eq!(used + list.free_granules(), TOTAL);
                // Sorted, disjoint, never adjacent.
                for pair in list.ranges().windows(2) {
                    prop_assert!(pair[0].0 + pair[0].1 < pair[1].0);
                }
            }
            for (start, n) in blocks.drain(..) {
                prop_assert!(list.free(start, n));
            }
            prop_assert_eq!(list.ranges(), &[(0, TOTAL)]);
        }
    }

    #[test]
    fn a_full_free_list_refuses_new_ranges() {
        let mut list = FreeList::new(8, 2);
        let blocks: Vec<usize> = (0..8).map(|_| list.allocate(1).expect("room")).collect();
        assert!(list.free(blocks[0], 1));
        assert!(list.free(blocks[2], 1));
        assert!(!list.free(blocks[4], 1), "a third, separate range does not fit");
        assert!(list.free(blocks[1], 1), "joining neighbours needs no new entry");
    }
}
