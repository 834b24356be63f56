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
//! static ALLOCATOR: resc_reference::alloc_meter::CountingAllocator = resc_reference::alloc_meter::CountingAllocator;
//! ```
//!
//! This is the crate's only `unsafe` code.
#![allow(unsafe_code)]

use resc_core::sandbox::ThreadAccount;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// How many accounts can exist at once (each costs 24 bytes of static memory).
const SLOTS: usize = 1 << 16;
/// Slot 0 means "not charged".
const UNCHARGED: u32 = 0;

const FREE: u8 = 0;
const OPEN: u8 = 1;
const CLOSED: u8 = 2;

struct Slot {
    current: AtomicU64,
    peak: AtomicU64,
    state: AtomicU8,
}

static TABLE: [Slot; SLOTS] =
    [const { Slot { current: AtomicU64::new(0), peak: AtomicU64::new(0), state: AtomicU8::new(FREE) } }; SLOTS];
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

fn charge(slot: u32, bytes: usize) {
    if slot != UNCHARGED {
        let s = &TABLE[slot as usize];
        let now = s.current.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        s.peak.fetch_max(now, Ordering::Relaxed);
    }
}

fn credit(slot: u32, bytes: usize) {
    if slot != UNCHARGED {
        let s = &TABLE[slot as usize];
        s.current.fetch_sub(bytes as u64, Ordering::Relaxed);
        // A closed account whose last bytes came back can be reused.
        if s.current.load(Ordering::Relaxed) == 0 {
            let _ = s.state.compare_exchange(CLOSED, FREE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

fn current_slot() -> u32 {
    CURRENT.try_with(Cell::get).unwrap_or(UNCHARGED)
}

// SAFETY: every method forwards to `System` with a layout that is the
// caller's grown by `header(layout)` bytes at the same alignment, and hands
// back the pointer `header` bytes past the block's start; the header's last 4
// bytes hold the account, written before the pointer is returned and read
// only through pointers this allocator produced.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pad = header(layout);
        let Some(Ok(full)) = layout.size().checked_add(pad).map(|size| Layout::from_size_align(size, layout.align()))
        else {
            return std::ptr::null_mut();
        };
        // SAFETY: `full` has non-zero size (pad ≥ 16).
        let base = unsafe { System.alloc(full) };
        if base.is_null() {
            return base;
        }
        let slot = current_slot();
        // SAFETY: base..base+pad lies in the block; pad ≥ 16 and is a multiple
        // of 4 (a power of two ≥ 16), so the u32 at base+pad-4 is aligned and in bounds.
        unsafe { (base.add(pad - 4) as *mut u32).write(slot) };
        charge(slot, layout.size());
        // SAFETY: pad < full.size(), so the result is within the block.
        unsafe { base.add(pad) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let pad = header(layout);
        // SAFETY: `ptr` came from `alloc`/`realloc` with this layout, so the
        // block starts `pad` bytes before it and holds the account header.
        let base = unsafe { ptr.sub(pad) };
        // SAFETY: see `alloc`: the header's u32 is aligned and initialized.
        let slot = unsafe { (base.add(pad - 4) as *const u32).read() };
        credit(slot, layout.size());
        // SAFETY: this layout matches the one `alloc` used for the block
        // (same size computation, same alignment).
        unsafe { System.dealloc(base, Layout::from_size_align_unchecked(layout.size() + pad, layout.align())) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let pad = header(layout);
        let Some(new_full) = new_size.checked_add(pad) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as in `dealloc`.
        let base = unsafe { ptr.sub(pad) };
        // SAFETY: as in `dealloc`.
        let slot = unsafe { (base.add(pad - 4) as *const u32).read() };
        // SAFETY: the block was allocated with this (size + pad, align) layout;
        // System.realloc keeps the header bytes, which precede the payload.
        let new_base = unsafe {
            System.realloc(base, Layout::from_size_align_unchecked(layout.size() + pad, layout.align()), new_full)
        };
        if new_base.is_null() {
            return new_base;
        }
        // The owner keeps paying for its block, whoever grows it.
        credit(slot, layout.size());
        charge(slot, new_size);
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
    /// Opens a fresh account, or `None` when all are in use.
    pub fn open() -> Option<Arc<AllocationAccount>> {
        for _ in 0..SLOTS {
            let probe = NEXT_PROBE.fetch_add(1, Ordering::Relaxed) as usize % SLOTS;
            if probe as u32 == UNCHARGED {
                continue;
            }
            let slot = &TABLE[probe];
            if slot.state.compare_exchange(FREE, OPEN, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                slot.current.store(0, Ordering::Relaxed);
                slot.peak.store(0, Ordering::Relaxed);
                return Some(Arc::new(AllocationAccount { slot: probe as u32 }));
            }
        }
        None
    }

    /// Bytes charged and not yet freed.
    pub fn current_bytes(&self) -> u64 {
        TABLE[self.slot as usize].current.load(Ordering::Relaxed)
    }

    /// The most that was charged at once.
    pub fn peak_bytes(&self) -> u64 {
        TABLE[self.slot as usize].peak.load(Ordering::Relaxed)
    }

    /// Runs `f` with the current thread charged to this account.
    pub fn charge_during<T>(&self, f: impl FnOnce() -> T) -> T {
        let previous = CURRENT.with(|c| c.replace(self.slot));
        let result = f();
        CURRENT.with(|c| c.set(previous));
        result
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
        let slot = &TABLE[self.slot as usize];
        slot.state.store(CLOSED, Ordering::Release);
        if slot.current.load(Ordering::Relaxed) == 0 {
            let _ = slot.state.compare_exchange(CLOSED, FREE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Whether [`CountingAllocator`] is this process's global allocator.
pub fn is_installed() -> bool {
    let Some(account) = AllocationAccount::open() else { return false };
    let probe = account.charge_during(|| std::hint::black_box(vec![0u8; 64]));
    let charged = account.current_bytes() >= 64;
    drop(probe);
    charged
}
