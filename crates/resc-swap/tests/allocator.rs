//! SwapAllocator as this test binary's global allocator: large allocations
//! of a thread that entered a far heap land in it, without code changes.

mod common;

use common::{region, small, userfaultfd_or_skip};
use resc_core::pool::MemoryPool;
use resc_swap::{FarHeap, SwapAllocator};
use std::alloc::System;

const THRESHOLD: usize = 64 << 10;

#[global_allocator]
static ALLOCATOR: SwapAllocator = SwapAllocator::new(System, THRESHOLD);

fn heap(capacity: u64, budget: u64) -> (FarHeap, std::sync::Arc<resc_core::inproc::InProcessMemory>) {
    let (region, memory) = region(small(capacity, budget));
    (FarHeap::new(region).expect("heap"), memory)
}

#[test]
fn large_allocations_of_an_entered_thread_go_far() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (heap, _memory) = heap(64 << 20, 256 << 10);
    let outside: Vec<u8> = Vec::with_capacity(1 << 20);
    assert!(!heap.contains(outside.as_ptr()), "not entered: local");
    let guard = heap.enter();
    let small: Vec<u8> = Vec::with_capacity(100);
    let large: Vec<u64> = vec![0; 1 << 20];
    assert!(!heap.contains(small.as_ptr()), "below the threshold: local");
    assert!(heap.contains(large.as_ptr().cast()), "large: far");
    assert!(large.iter().all(|&x| x == 0), "alloc_zeroed reads zeros");
    drop(guard);
    let after: Vec<u8> = Vec::with_capacity(1 << 20);
    assert!(!heap.contains(after.as_ptr()), "left: local again");
    drop((outside, small, large, after));
    assert_eq!(heap.allocated_bytes(), 0);
}

#[test]
fn code_that_knows_nothing_computes_correctly_over_far_memory() {
    if !userfaultfd_or_skip() {
        return;
    }
    let budget = 256 << 10;
    let (heap, _memory) = heap(256 << 20, budget);
    // An unmodified "code piece": builds and sorts a 16 MiB vector.
    fn code_piece() -> u64 {
        let mut v: Vec<u64> = (0..2_000_000u64).map(|i| (i * 7_919) % 1_000_003).collect();
        v.sort_unstable();
        let mut grown = Vec::new();
        for x in v.iter().step_by(3) {
            grown.push(*x);
        }
        grown.iter().copied().fold(0u64, u64::wrapping_add) ^ v[1_000_000]
    }
    let expected = code_piece();
    let far = {
        let _entered = heap.enter();
        code_piece()
    };
    assert_eq!(far, expected);
    let stats = heap.stats();
    assert!(stats.swapped_out_bytes > 0 || stats.chunks_evicted > 0, "it really swapped: {stats:?}");
    assert!(stats.peak_resident_bytes <= budget);
    heap.check().expect("nothing failed");
    assert_eq!(heap.allocated_bytes(), 0, "every block was freed");
}

#[test]
fn blocks_move_between_local_and_far_as_they_grow_and_shrink() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (heap, _memory) = heap(64 << 20, 256 << 10);
    let _entered = heap.enter();
    let mut v: Vec<u8> = Vec::with_capacity(1000);
    v.extend((0..1000).map(|i| i as u8));
    assert!(!heap.contains(v.as_ptr()));
    v.reserve(1 << 20);
    assert!(heap.contains(v.as_ptr()), "grown past the threshold: far");
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u8), "contents moved along");
    let far_ptr = v.as_ptr();
    v.extend(std::iter::repeat_n(5u8, 1 << 20));
    v.reserve(8 << 20);
    assert!(heap.contains(v.as_ptr()));
    let _ = far_ptr;
    v.truncate(100);
    v.shrink_to_fit();
    assert!(!heap.contains(v.as_ptr()), "shrunk below the threshold: local");
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u8));
    drop(v);
    assert_eq!(heap.allocated_bytes(), 0);
}

#[test]
fn a_block_outlives_the_sandbox_and_is_freed_on_another_thread() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (heap, memory) = heap(64 << 20, 256 << 10);
    let output = {
        let _entered = heap.enter();
        vec![42u8; 4 << 20]
    };
    assert!(heap.contains(output.as_ptr()));
    drop(heap); // the sandbox is gone; its output is not
    let sum = std::thread::spawn(move || output.iter().map(|&x| u64::from(x)).sum::<u64>()).join().expect("thread");
    assert_eq!(sum, 42 * (4 << 20));
    assert_eq!(memory.allocated_bytes(), 0, "the region went with the last block");
}

#[test]
fn many_threads_share_one_heap() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (heap, _memory) = heap(256 << 20, 512 << 10);
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let heap = heap.clone();
            scope.spawn(move || {
                let _entered = heap.enter();
                for round in 0..20u64 {
                    let v: Vec<u64> = (0..(100_000 + t * 1000 + round)).map(|i| i ^ t).collect();
                    assert!(heap.contains(v.as_ptr().cast()));
                    let expected: u64 = (0..v.len() as u64).map(|i| i ^ t).fold(0, u64::wrapping_add);
                    assert_eq!(v.iter().copied().fold(0, u64::wrapping_add), expected);
                }
            });
        }
    });
    assert_eq!(heap.allocated_bytes(), 0);
    heap.check().expect("nothing failed");
}

#[test]
fn guards_dropped_out_of_order_or_forgotten_leave_no_dangling_heap() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (first, first_memory) = heap(16 << 20, 256 << 10);
    let (second, second_memory) = heap(16 << 20, 256 << 10);
    let outer = first.enter();
    let inner = second.enter();
    drop(outer); // out of order: the thread is back in no heap
    drop(first); // the inner guard still holds the first heap for the thread
    drop(inner); // puts the first heap back, kept alive by the thread-local
    let v: Vec<u8> = vec![2; 1 << 20];
    assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 2 << 20, "the first heap still works");
    drop(v);
    drop(second);
    assert_eq!(second_memory.allocated_bytes(), 0, "nothing keeps the second heap");
    // A forgotten guard keeps its heap alive (a leak, not a dangling pointer).
    let (third, _third_memory) = heap(16 << 20, 256 << 10);
    std::mem::forget(third.enter());
    drop(third);
    let v: Vec<u8> = vec![1; 1 << 20];
    assert_eq!(v.iter().map(|&x| u64::from(x)).sum::<u64>(), 1 << 20);
    let _ = first_memory;
}

#[test]
fn a_sandbox_enters_the_heap_through_the_thread_account_hook() {
    if !userfaultfd_or_skip() {
        return;
    }
    use resc_core::sandbox::ThreadAccount;
    let (heap, _memory) = heap(64 << 20, 256 << 10);
    let account: std::sync::Arc<dyn ThreadAccount> = std::sync::Arc::new(heap.clone());
    let far = std::thread::spawn(move || {
        account.enter();
        let v: Vec<u8> = vec![7; 2 << 20];
        account.leave();
        let after: Vec<u8> = Vec::with_capacity(2 << 20);
        (v, after.as_ptr() as usize)
    })
    .join()
    .expect("thread");
    assert!(heap.contains(far.0.as_ptr()), "allocated while entered: far");
    assert!(!heap.contains(far.1 as *const u8), "after leaving: local");
    assert_eq!(far.0.iter().map(|&x| u64::from(x)).sum::<u64>(), 7 * (2 << 20));
}

thread_local! {
    /// What the gated heap's test pretends the thread holds locally.
    static LOCAL_BYTES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn local_bytes() -> u64 {
    LOCAL_BYTES.with(std::cell::Cell::get)
}

#[test]
fn a_gated_heap_engages_under_pressure_and_takes_what_the_slot_has_left() {
    if !userfaultfd_or_skip() {
        return;
    }
    const MIB: u64 = 1 << 20;
    let (region, _memory) = region(small(256 * MIB, MIB));
    let gate = resc_swap::PressureGate { local_bytes, local_limit: 8 * MIB, headroom: MIB };
    let heap = FarHeap::with_pressure_gate(region, gate).expect("heap");
    LOCAL_BYTES.with(|b| b.set(MIB));
    let _entered = heap.enter();

    let fits: Vec<u8> = Vec::with_capacity(2 << 20);
    assert!(!heap.contains(fits.as_ptr()), "1 MiB held + 2 MiB fits the 8 MiB slot: local");
    assert!(!heap.is_engaged());

    let mut overflow: Vec<u64> = vec![0; 4 << 20]; // 32 MiB: over the slot
    assert!(heap.contains(overflow.as_ptr().cast()), "under pressure: far");
    assert!(heap.is_engaged());
    let after: Vec<u8> = Vec::with_capacity(512 << 10);
    assert!(heap.contains(after.as_ptr()), "once engaged, large allocations stay far");

    for (i, w) in overflow.iter_mut().enumerate() {
        *w = i as u64;
    }
    assert!(overflow.iter().enumerate().all(|(i, &w)| w == i as u64));
    let stats = heap.stats();
    assert!(stats.bytes_written_back > 0, "32 MiB over a 6 MiB budget swapped: {stats:?}");
    assert!(
        stats.peak_resident_bytes > 2 * MIB && stats.peak_resident_bytes <= 6 * MIB,
        "the budget became the slot's 7 MiB left less 1 MiB of headroom, not the region's initial 1 MiB: {stats:?}"
    );
    heap.check().expect("nothing failed");
    drop((fits, overflow, after));
}

#[test]
fn a_local_block_that_grows_into_the_heap_is_not_counted_twice_when_it_engages() {
    if !userfaultfd_or_skip() {
        return;
    }
    const MIB: u64 = 1 << 20;
    let (region, _memory) = region(small(256 * MIB, MIB));
    let gate = resc_swap::PressureGate { local_bytes, local_limit: 8 * MIB, headroom: MIB };
    let heap = FarHeap::with_pressure_gate(region, gate).expect("heap");
    let _entered = heap.enter();
    let mut v: Vec<u8> = Vec::with_capacity(4 << 20);
    assert!(!heap.contains(v.as_ptr()), "4 MiB fits the 8 MiB slot");
    // The thread holds the 4 MiB block and 1 MiB besides.
    LOCAL_BYTES.with(|b| b.set(5 * MIB));
    v.reserve_exact(8 << 20); // grows to 12 MiB: moves far, freeing the 4 MiB
    assert!(heap.contains(v.as_ptr()) && heap.is_engaged());
    v.resize(12 << 20, 7);
    v.resize(24 << 20, 9);
    assert!(v[..12 << 20].iter().all(|&b| b == 7) && v[12 << 20..].iter().all(|&b| b == 9));
    let stats = heap.stats();
    assert!(stats.peak_resident_bytes > 4 * MIB, "budget = 8 − (5 − 4) − 1 = 6 MiB, not 8 − 5 − 1 = 2 MiB: {stats:?}");
    drop(v);
}
