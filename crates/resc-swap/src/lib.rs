//! Far memory for ReSC compute components (paper §5.2.2).
//!
//! A compute component's physical slot is small and fixed, yet its memory has
//! no limit: what does not fit swaps to physical memory components in the
//! memory pool, in user space, through userfaultfd, without the code piece
//! noticing. This crate is that mechanism:
//!
//! - [`FarRegion`]: a reserved virtual range registered with userfaultfd,
//!   with a budget of local memory. Its overflow lives in *swap space*:
//!   physical memory components allocated on demand from a
//!   [`MemoryPool`](resc_core::pool::MemoryPool) (one segment of
//!   [`SwapConfig::segment_size`] at a time) and read and written through a
//!   [`Transport`](resc_core::transport::Transport); they are freed when the
//!   region drops.
//! - [`FarHeap`] and [`FarVec`]: allocations in a region, for libraries that
//!   want control; [`SwapAllocator`]: a global allocator layer a sandbox
//!   installs so that a code piece's large allocations land in a far heap
//!   with no change to its code (the threading model is described at
//!   [`SwapAllocator`]).
//! - [`SwapStats`]: resident and swapped-out bytes, faults, write-backs and
//!   read-ahead, for metering.
//! - [`bench`](mod@bench): the measurement functions behind `resc bench swap`.
//!
//! ```
//! use std::sync::Arc;
//! use resc_core::ids::NodeId;
//! use resc_core::inproc::{InProcessFabric, InProcessMemory};
//! use resc_swap::{FarRegion, SwapConfig};
//!
//! // The memory node that holds swap space, and the data path to it.
//! let memory = Arc::new(InProcessMemory::new(NodeId(1), 1 << 30));
//! let fabric = Arc::new(InProcessFabric::new());
//! fabric.attach(memory.clone());
//!
//! // 64 MiB of virtual memory over 8 MiB of local memory.
//! let mut region = FarRegion::new(SwapConfig::new(64 << 20, 8 << 20), memory, fabric)?;
//! let words = region.as_mut_slice_of::<u64>();
//! for (i, w) in words.iter_mut().enumerate() {
//!     *w = i as u64;
//! }
//! assert_eq!(region.as_slice_of::<u64>()[12_345], 12_345);
//! assert!(region.stats().bytes_written_back > 0, "most of it went to swap space");
//! region.check()?; // no backing component failed
//! # Ok::<(), resc_swap::SwapError>(())
//! ```
//!
//! # How it works
//!
//! The region is a `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE` mapping
//! registered for missing and write-protect faults. It is divided into
//! *chunks* ([`SwapConfig::chunk_size`], 64 KiB by default), the unit of
//! residency, fetching and eviction: every missing fault brings in a whole
//! chunk with one `UFFDIO_COPY`, so faults are served in batches of at
//! least 64 KiB.
//!
//! - **Handler thread.** One thread per region reads faults and serves them
//!   in arrival order; between faults it reads ahead and evicts towards a
//!   free target, so that faults rarely wait for an eviction. How it waits is
//!   a [`HandlerPolicy`]. A fault costs ≈ 7–15 µs when the handler is awake
//!   and ≈ 44 µs when its vCPU must be woken (measured here), so the default
//!   spins for 200 µs after the last activity and then sleeps in `poll` — but
//!   when faults come at a steady pace it predicts the next one and wakes up
//!   150 µs before it is due. The bench reports which regime each case ran
//!   in (`busy`: the handler was awake for ≥ 90 % of the faults) and
//!   compares the policies.
//! - **Read-ahead.** Faults are grouped into up to eight sequential streams.
//!   A second fault right after the first makes a stream sequential; its
//!   window (256 KiB at first) doubles at each read-ahead hit up to 2 MiB.
//!   The window is brought in in the background, except the first page of
//!   a *marker* chunk in its middle, left missing on purpose: the program's
//!   fault on it (a single page to fill) tells the handler how far the
//!   program got, and starts the next window while half of the current one
//!   is still ahead. When recent streams turned out sequential, a new
//!   stream is read ahead from its very first fault, as far as those
//!   streams reached, with its marker right after the faulting chunk, so
//!   that a good guess is confirmed at once (random 1 MiB blocks cost one
//!   chunk fault and one page fault each; random pages read nothing ahead).
//! - **Dirty tracking.** Pages come in write-protected; the first write to a
//!   page is a write-protect fault that records it as dirty (the second dirty
//!   page of a chunk unprotects the whole chunk). A dense sequential writer
//!   (a write fault right after a wholly written chunk) gets its chunks, and
//!   those read ahead for it, writable and counted dirty, without faults.
//!   Only dirty pages are written back; clean chunks are dropped
//!   (`MADV_DONTNEED`).
//!   Synchronous write-protect faults were chosen over
//!   `UFFD_FEATURE_WP_ASYNC`: with asynchronous write protection a writer is
//!   never stopped, so a page written between the scan for dirty pages and
//!   `MADV_DONTNEED` would be lost; with synchronous faults the handler
//!   write-protects a chunk before saving it and writers wait. (The
//!   `userfaultfd` crate does not expose `WP_ASYNC` either.)
//! - **Eviction** when resident chunks exceed the budget: CLOCK by default,
//!   or the paper's NRU ([`EvictionPolicy`]); the bench compares them.
//! - A page never written (and never written back) reads as zeros.
//!
//! # Failures
//!
//! A failed backing component (the pool refuses swap space, a read or write
//! through the transport fails) is never silent, but it cannot be reported
//! to the faulting instruction either. What happens:
//!
//! - A failed **fetch** fills the chunk with zeros so that the faulting
//!   thread can continue, and *poisons* the region. The code piece may then
//!   compute on zeros.
//! - A failed **write-back** keeps the chunk resident (the region goes over
//!   budget rather than lose data) and poisons the region; so does a refused
//!   swap-space allocation.
//! - Once poisoned, [`FarRegion::check`] (and [`FarHeap::check`]) returns
//!   [`SwapError::BackingFailed`] with the first failure. The sandbox calls it
//!   when the code piece returns and fails the invocation, which the
//!   platform re-executes from the trigger log (DESIGN.md §8): results
//!   computed on zeros are discarded, never delivered.
//!
//! No faulting thread is ever left blocked: even when a fill fails the
//! handler wakes it (it then faults again and the fill is retried). Failures
//! are counted in [`SwapStats::backing_failures`]. Raising `SIGBUS` in the
//! faulting thread (`UFFDIO_POISON`) was not chosen: in a thread sandbox it
//! would kill the whole platform process.
//!
//! # Threading model
//!
//! - Each region has one handler thread, started by [`FarRegion::new`] and
//!   joined when the region drops. It alone fills, protects and drops pages
//!   (under the region's state lock, which a far heap's `free` also takes to
//!   discard freed chunks).
//! - Any number of program threads may use the region at once; the region's
//!   memory follows the ordinary Rust rules (shared `&[u8]` from
//!   [`FarRegion::as_slice`], exclusive `&mut [u8]` from
//!   [`FarRegion::as_mut_slice`], which scoped threads can split). A fault
//!   blocks only the faulting thread; faults are served in arrival order.
//! - [`FarHeap`] handles are `Clone + Send + Sync`; any thread may allocate
//!   and free. [`SwapAllocator`] decides per thread: a thread that has
//!   entered a heap ([`FarHeap::enter`], or a sandbox calling the heap's
//!   [`ThreadAccount`](resc_core::sandbox::ThreadAccount) hook on the code
//!   piece's thread) sends its allocations of at least the threshold there; every other allocation, and every allocation of every
//!   other thread, goes to the inner allocator. A block is freed where it
//!   came from, on whatever thread frees it (far blocks are recognised by
//!   address). A heap lives until its last handle *and* its last block are
//!   gone, so a block handed to the platform (a code piece's output)
//!   outlives the sandbox safely. The crate's own bookkeeping (a region's
//!   tables, its handler thread) always stays in the inner allocator.
//! - A process that forks and keeps running Rust code in the child (no
//!   `exec`) must not touch far memory there: the child has no mapping and
//!   no handler.
//!
//! # Fork, unmapping and the kernel
//!
//! - The range is `MADV_DONTFORK`: a child process does not inherit it, so a
//!   child that touches it gets `SIGSEGV` instead of a silently zero-filled
//!   copy (without the handler, the child's missing pages would read as
//!   zeros). Spawning processes (`fork` + `exec`) is unaffected.
//! - The region owns its mapping: do not `munmap`, `mremap`, `mprotect` or
//!   `madvise` it. Dropping the region stops the handler first, then
//!   unmaps the range and frees the swap space.
//! - Faults taken by the kernel on the program's behalf (a `read(2)` into the
//!   region) are served too when the process may handle them (root or access
//!   to `/dev/userfaultfd`); see [`FarRegion::handles_kernel_faults`].
//!
//! # Requirements
//!
//! Linux with userfaultfd and write-protect faults on anonymous memory (5.7
//! or later), and permission to use it: root, access to `/dev/userfaultfd`,
//! or `vm.unprivileged_userfaultfd = 1`. Otherwise [`FarRegion::new`] returns
//! [`SwapError::UserfaultfdUnavailable`] or [`SwapError::UnsupportedKernel`];
//! [`FarRegion::probe`] checks ahead of time. The crate's tests fail (they do
//! not skip) where userfaultfd is unavailable, unless
//! `RESC_SWAP_SKIP_UNAVAILABLE=1` is set.
//!
//! # Safety
//!
//! The `unsafe` code is in `sys.rs` (every system call), `heap.rs` (the
//! allocator and `FarVec`), `region.rs` (the region seen as slices) and a
//! few calls in `pager.rs` (filling and dropping pages under the protocol
//! documented there); each block carries a `// SAFETY:` comment. Page
//! arithmetic and read-ahead planning are safe code and property-tested.

pub mod bench;
mod config;
mod error;
mod geometry;
mod heap;
mod pager;
mod readahead;
mod region;
mod stats;
mod sys;

pub use config::{EvictionPolicy, HandlerPolicy, SwapConfig};
pub use error::{FailedOp, SwapError};
pub use heap::{
    allocator_installed, Entered, FarHeap, FarVec, PressureGate, SwapAllocator, DEFAULT_THRESHOLD, MAX_HEAPS,
};
pub use region::{FarRegion, Plain};
pub use stats::SwapStats;
