//! FarHeap and FarVec: blocks in far memory, explicitly.

mod common;

use common::{region, small, userfaultfd_or_skip};
use resc_core::pool::MemoryPool;
use resc_swap::{FarHeap, FarVec, SwapError};
use std::alloc::Layout;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[test]
fn blocks_are_zeroed_disjoint_and_reused_zeroed() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (region, _memory) = region(small(8 * MIB, 256 * KIB));
    let heap = FarHeap::new(region).expect("heap");
    let layout = Layout::from_size_align(300 * 1024, 8).expect("layout");
    let a = heap.allocate(layout).expect("a");
    let b = heap.allocate(layout).expect("b");
    let (pa, pb) = (a.cast::<u8>().as_ptr(), b.cast::<u8>().as_ptr());
    assert!(heap.contains(pa) && heap.contains(pb));
    assert!(pa as usize + layout.size() <= pb as usize || pb as usize + layout.size() <= pa as usize);
    assert_eq!(pa as usize % heap.granule(), 0);
    // SAFETY: `a` is a live block of `layout.size()` bytes that only this test uses.
    let bytes = unsafe { std::slice::from_raw_parts_mut(pa, layout.size()) };
    assert!(bytes.iter().all(|&x| x == 0));
    bytes.fill(0xAB);
    // SAFETY: `a` came from this heap with `layout` and is not used again.
    unsafe { heap.deallocate(a.cast(), layout) };
    let c = heap.allocate(layout).expect("c");
    // SAFETY: `c` is a live block of `layout.size()` bytes.
    let again = unsafe { std::slice::from_raw_parts(c.cast::<u8>().as_ptr(), layout.size()) };
    assert!(again.iter().all(|&x| x == 0), "a freed block comes back zeroed");
    // SAFETY: both blocks came from this heap with `layout`.
    unsafe {
        heap.deallocate(b.cast(), layout);
        heap.deallocate(c.cast(), layout);
    }
    assert_eq!(heap.allocated_bytes(), 0);
}

#[test]
fn far_vecs_grow_far_beyond_the_budget() {
    if !userfaultfd_or_skip() {
        return;
    }
    let budget = 256 * KIB;
    let (region, memory) = region(small(64 * MIB, budget));
    let heap = FarHeap::new(region).expect("heap");
    let mut v: FarVec<u64> = FarVec::new_in(&heap);
    for i in 0..(4 * MIB / 8) {
        v.push(i * 3);
    }
    let mut w = FarVec::with_capacity_in(1000, &heap).expect("w");
    w.extend_from_slice(&[1u32, 2, 3]);
    w.resize(100_000, 7);
    assert_eq!(v.len(), (4 * MIB / 8) as usize);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    assert_eq!(w.iter().map(|&x| u64::from(x)).sum::<u64>(), 6 + 7 * (100_000 - 3));
    assert_eq!(v.pop(), Some((4 * MIB / 8 - 1) * 3));
    v.truncate(10);
    assert_eq!(&v[..3], &[0, 3, 6]);
    let stats = heap.stats();
    assert!(stats.peak_resident_bytes <= budget, "{stats:?}");
    assert!(stats.swapped_out_bytes > 0);
    heap.check().expect("nothing failed");
    drop((v, w));
    assert_eq!(heap.allocated_bytes(), 0);
    drop(heap);
    assert_eq!(memory.allocated_bytes(), 0, "the region went with the last handle");
}

#[test]
fn a_heap_lives_as_long_as_its_blocks() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (region, memory) = region(small(8 * MIB, 256 * KIB));
    let heap = FarHeap::new(region).expect("heap");
    let mut v = FarVec::with_capacity_in(MIB as usize, &heap).expect("v");
    v.resize(MIB as usize, 1u8);
    drop(heap);
    // The vector still works: it holds the heap.
    let handle = std::thread::spawn(move || v.iter().map(|&x| u64::from(x)).sum::<u64>());
    assert_eq!(handle.join().expect("thread"), MIB);
    assert_eq!(memory.allocated_bytes(), 0, "gone with the vector");
}

#[test]
fn impossible_requests_are_errors() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (region, _memory) = region(small(MIB, 256 * KIB));
    let heap = FarHeap::new(region).expect("heap");
    let huge_align = Layout::from_size_align(4096, 1 << 20).expect("layout");
    assert!(matches!(heap.allocate(huge_align), Err(SwapError::InvalidConfig(_))));
    let too_big = Layout::from_size_align(2 << 20, 8).expect("layout");
    assert!(matches!(heap.allocate(too_big), Err(SwapError::OutOfFarMemory { .. })));
    let mut v: FarVec<u8> = FarVec::new_in(&heap);
    assert!(v.try_reserve(4 << 20).is_err());
    let empty = Layout::from_size_align(0, 64).expect("layout");
    let block = heap.allocate(empty).expect("zero-sized");
    // SAFETY: a zero-sized block of this heap.
    unsafe { heap.deallocate(block.cast(), empty) };
}
