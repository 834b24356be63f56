//! A counting global allocator that charges every allocation to the account
//! the allocating thread has entered: how the reference platform measures a
//! compute component's used bytes (DESIGN.md §9).
//!
//! Each allocation carries a small header with its account, so a free on
//! another thread (an output handed to the platform, say) still credits the
//! account that paid for it. The allocator must be installed by the binary:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: resc_reference::alloc_meter::PlatformAllocator = resc_reference::alloc_meter::PLATFORM_ALLOCATOR;
//! ```
//!
//! [`PlatformAllocator`] layers far memory over the counting allocator, so
//! that compute instances swap under memory pressure; installing the bare
//! [`CountingAllocator`] meters the same but never swaps.
//!
//! An account lives in a slot of a static table. A slot's state and its
//! outstanding bytes share one atomic word (`OPEN | bytes`), so the slot is
//! free exactly when that word is 0: an account that was dropped with bytes
//! still outstanding keeps its slot until the last of them is freed, whichever
//! thread frees it, and [`AllocationAccount::open`] only takes free slots.
//!
//! This is the crate's only `unsafe` code.
#![allow(unsafe_code)]

use resc_core::sandbox::ThreadAccount;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::cmp::Ordering as SizeOrder;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many accounts can exist at once (each costs 16 bytes of static memory).
const SLOTS: usize = 1 << 16;
/// Slot 0 means "not charged".
const UNCHARGED: u32 = 0;

/// Bit 63 of a slot's word: an [`AllocationAccount`] holds the slot.
const OPEN: u64 = 1 << 63;
/// The other bits of a slot's word: bytes charged to it and not yet freed.
const BYTES: u64 = OPEN - 1;

struct Slot {
    /// `OPEN | bytes`; 0 means free. Every change is one read-modify-write,
    /// so "closed and nothing outstanding" is decided in a single step.
    word: AtomicU64,
    /// The most bytes outstanding at once since the slot was last opened.
    peak: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const { Slot { word: AtomicU64::new(0), peak: AtomicU64::new(0) } }; SLOTS];
static NEXT_PROBE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    // A const-initialized Cell without destructor: reading it never allocates,
    // which an allocator requires.
    static CURRENT: Cell<u32> = const { Cell::new(UNCHARGED) };
}

/// The global allocator. Install it with `#[global_allocator]`.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

/// Bytes in front of each allocation: room for the account, keeping the
/// caller's alignment.
fn header(layout: Layout) -> usize {
    layout.align().max(16)
}

/// The layout of the block behind a payload of `size` bytes at `align` with
/// `pad` header bytes, or `None` when it is not a valid layout (it overflows,
/// or exceeds `isize::MAX` once rounded up to `align`).
fn block(size: usize, align: usize, pad: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(pad)?, align).ok()
}

/// Charges `bytes` to `slot` and returns the slot that paid. A free slot (its
/// account gone, nothing outstanding) is not charged and `UNCHARGED` comes
/// back, so a thread left entered in a dropped account cannot bring its slot
/// back to life under a later owner.
fn charge(slot: u32, bytes: usize) -> u32 {
    if slot == UNCHARGED {
        return UNCHARGED;
    }
    let s = &TABLE[slot as usize];
    let add = bytes as u64;
    let charged = s.word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
        (word != 0).then(|| (word & OPEN) | (word & BYTES).saturating_add(add).min(BYTES))
    });
    match charged {
        Ok(before) => {
            s.peak.fetch_max((before & BYTES).saturating_add(add).min(BYTES), Ordering::Relaxed);
            slot
        }
        Err(_) => UNCHARGED,
    }
}

/// Credits `bytes` back to `slot`, never below zero. When a closed slot's last
/// bytes come back its word becomes 0, which is what frees it.
fn credit(slot: u32, bytes: usize) {
    if slot == UNCHARGED {
        return;
    }
    let s = &TABLE[slot as usize];
    // The closure always returns `Some`, so this cannot fail.
    let _ = s.word.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
        Some((word & OPEN) | (word & BYTES).saturating_sub(bytes as u64))
    });
}

fn current_slot() -> u32 {
    CURRENT.try_with(Cell::get).unwrap_or(UNCHARGED)
}

/// Switches the current thread to `slot` until the returned guard is dropped
/// (also by unwinding), which puts the previous slot back.
fn switch_to(slot: u32) -> Restore {
    Restore(CURRENT.with(|c| c.replace(slot)))
}

/// The slot to put back; see [`switch_to`].
struct Restore(u32);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.0));
    }
}

/// Runs `f` with the current thread charged to no account, then restores the
/// account it had entered (also if `f` panics): for platform bookkeeping that
/// happens on a code piece's thread.
pub fn uncharged<T>(f: impl FnOnce() -> T) -> T {
    let _restore = switch_to(UNCHARGED);
    f()
}

/// `alloc` and `alloc_zeroed`: a block from `System` with the header in
/// front, charged to the current thread's account.
fn allocate(layout: Layout, zeroed: bool) -> *mut u8 {
    let pad = header(layout);
    let Some(full) = block(layout.size(), layout.align(), pad) else {
        return std::ptr::null_mut();
    };
    let base = if zeroed {
        // SAFETY: `full` is a valid layout of non-zero size (pad ≥ 16), all
        // that `System.alloc_zeroed` requires.
        unsafe { System.alloc_zeroed(full) }
    } else {
        // SAFETY: as above, for `System.alloc`.
        unsafe { System.alloc(full) }
    };
    if base.is_null() {
        return base;
    }
    let slot = charge(current_slot(), layout.size());
    // SAFETY: base..base+pad lies in the block (full.size() ≥ pad ≥ 4), so the
    // 4 bytes at base+pad-4 are in bounds and writable; written unaligned, as
    // `System` only promises `layout.align()`, which may be less than 4.
    unsafe { base.add(pad - 4).cast::<u32>().write_unaligned(slot) };
    // SAFETY: pad ≤ full.size(), so the result is within (or one past) the block.
    unsafe { base.add(pad) }
}

/// The start of the block behind `ptr` and the account that paid for it.
///
/// # Safety
///
/// `ptr` was returned by this allocator for a layout whose header is `pad`
/// bytes, and the block has not been freed.
unsafe fn owner(ptr: *mut u8, pad: usize) -> (*mut u8, u32) {
    // SAFETY: `allocate` returned base+pad, so the block starts `pad` bytes
    // before `ptr`, in the same allocation.
    let base = unsafe { ptr.sub(pad) };
    // SAFETY: `allocate` wrote the account as a u32 at base+pad-4, inside the
    // block; `System.realloc` keeps these leading bytes. Read unaligned as written.
    let slot = unsafe { base.add(pad - 4).cast::<u32>().read_unaligned() };
    (base, slot)
}

// SAFETY: every method forwards to `System` with a layout that is the
// caller's grown by `header(layout)` bytes at the same alignment, checked with
// `Layout::from_size_align` before the block exists, and hands back the pointer
// `header` bytes past the block's start (so the caller's alignment holds); the
// header's last 4 bytes hold the account, written before the pointer is
// returned and read only through pointers this allocator produced.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout, false)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The header is written over zeroed bytes in front of the payload; the
        // payload itself stays as `System.alloc_zeroed` left it.
        allocate(layout, true)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let pad = header(layout);
        // SAFETY: `dealloc`'s contract: `ptr` is a live block of this
        // allocator, allocated with `layout`.
        let (base, slot) = unsafe { owner(ptr, pad) };
        credit(slot, layout.size());
        // SAFETY: this is the layout `allocate`/`realloc` gave `System` for the
        // block (same size computation, same alignment), validated back then.
        let full = unsafe { Layout::from_size_align_unchecked(layout.size() + pad, layout.align()) };
        // SAFETY: `base` was allocated by `System` with `full`.
        unsafe { System.dealloc(base, full) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let pad = header(layout);
        let Some(new_full) = block(new_size, layout.align(), pad) else {
            return std::ptr::null_mut();
        };
        // SAFETY: `realloc`'s contract: `ptr` is a live block of this
        // allocator, allocated with `layout`.
        let (base, slot) = unsafe { owner(ptr, pad) };
        // SAFETY: as in `dealloc`, the layout `System` has the block with.
        let old_full = unsafe { Layout::from_size_align_unchecked(layout.size() + pad, layout.align()) };
        // SAFETY: `base` was allocated by `System` with `old_full`; `new_full`
        // checked that new_size + pad is non-zero and, rounded up to the
        // alignment, at most isize::MAX. The header bytes precede the payload,
        // so they are kept.
        let new_base = unsafe { System.realloc(base, old_full, new_full.size()) };
        if new_base.is_null() {
            // The old block and its charge are untouched.
            return new_base;
        }
        // The owner keeps paying for its block, whoever resizes it, in one
        // signed step: its bytes never pass through a transient zero, and the
        // block (still outstanding) keeps its slot from being freed.
        match new_size.cmp(&layout.size()) {
            SizeOrder::Greater => {
                charge(slot, new_size - layout.size());
            }
            SizeOrder::Less => credit(slot, layout.size() - new_size),
            SizeOrder::Equal => {}
        }
        // SAFETY: new_size + pad bytes were allocated; the payload starts at pad.
        unsafe { new_base.add(pad) }
    }
}

/// One account: the bytes allocated by the threads that entered it and not
/// yet freed, and their peak.
#[derive(Debug)]
pub struct AllocationAccount {
    slot: u32,
}

impl AllocationAccount {
    /// Opens a fresh account, or `None` when all are in use. Slots of dropped
    /// accounts whose bytes are still outstanding are not reused.
    pub fn open() -> Option<Arc<AllocationAccount>> {
        for _ in 0..SLOTS {
            let probe = (NEXT_PROBE.fetch_add(1, Ordering::Relaxed) % SLOTS as u64) as u32;
            if probe == UNCHARGED {
                continue;
            }
            let slot = &TABLE[probe as usize];
            // Only a free slot (word 0: no owner, nothing outstanding) is taken,
            // so it starts with zero bytes.
            if slot.word.compare_exchange(0, OPEN, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                slot.peak.store(0, Ordering::Relaxed);
                return Some(Arc::new(AllocationAccount { slot: probe }));
            }
        }
        None
    }

    /// Bytes charged and not yet freed.
    pub fn current_bytes(&self) -> u64 {
        TABLE[self.slot as usize].word.load(Ordering::SeqCst) & BYTES
    }

    /// The most that was charged at once.
    pub fn peak_bytes(&self) -> u64 {
        TABLE[self.slot as usize].peak.load(Ordering::Relaxed)
    }

    /// Runs `f` with the current thread charged to this account, then
    /// restores the thread's previous account (also if `f` panics).
    pub fn charge_during<T>(&self, f: impl FnOnce() -> T) -> T {
        let _restore = switch_to(self.slot);
        f()
    }
}

impl ThreadAccount for AllocationAccount {
    fn enter(&self) {
        CURRENT.with(|c| c.set(self.slot));
    }

    fn leave(&self) {
        CURRENT.with(|c| {
            if c.get() == self.slot {
                c.set(UNCHARGED);
            }
        });
    }
}

impl Drop for AllocationAccount {
    fn drop(&mut self) {
        // A thread still entered here stops charging the closed account.
        let _ = CURRENT.try_with(|c| {
            if c.get() == self.slot {
                c.set(UNCHARGED);
            }
        });
        // One atomic step: with nothing outstanding the word becomes 0 (free);
        // otherwise the credit that returns the last bytes brings it to 0.
        TABLE[self.slot as usize].word.fetch_and(!OPEN, Ordering::SeqCst);
    }
}

/// Bytes charged to the account the current thread has entered and not yet
/// freed (0 outside any account). It never allocates or locks: a
/// [`PressureGate`](resc_swap::PressureGate) calls it from inside the
/// global allocator.
pub fn current_thread_bytes() -> u64 {
    match current_slot() {
        UNCHARGED => 0,
        slot => TABLE[slot as usize].word.load(Ordering::Relaxed) & BYTES,
    }
}

/// The platform's global allocator: metering by [`CountingAllocator`], and
/// under memory pressure a compute instance's large allocations in its far
/// heap ([`resc_swap::SwapAllocator`], allocations of at least
/// [`resc_swap::DEFAULT_THRESHOLD`] bytes). Far blocks are not counted
/// here: metering reads them from the heap's statistics.
pub type PlatformAllocator = resc_swap::SwapAllocator<CountingAllocator>;

/// The value to install: `#[global_allocator] static A: PlatformAllocator = PLATFORM_ALLOCATOR;`.
pub const PLATFORM_ALLOCATOR: PlatformAllocator =
    resc_swap::SwapAllocator::new(CountingAllocator, resc_swap::DEFAULT_THRESHOLD);

/// Whether [`CountingAllocator`] is this process's global allocator.
pub fn is_installed() -> bool {
    let Some(account) = AllocationAccount::open() else { return false };
    let probe = account.charge_during(|| std::hint::black_box(vec![0u8; 64]));
    let charged = account.current_bytes() >= 64;
    drop(probe);
    charged
}
