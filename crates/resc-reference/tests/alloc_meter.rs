//! The counting allocator: who pays for which bytes, across threads,
//! reallocations and the open/close life of accounts.
//!
//! The tests of this file run in parallel threads of one process. Accounts are
//! independent, so each test only asserts about counters of accounts it opened,
//! for allocations it made while entered into them.

use resc_core::sandbox::ThreadAccount;
use resc_reference::alloc_meter::{self, AllocationAccount, CountingAllocator};
use std::alloc::Layout;
use std::hint::black_box;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};

#[global_allocator]
static A: CountingAllocator = CountingAllocator;

/// The allocator's number of slots: cycling this many opens visits every slot.
const SLOTS: usize = 1 << 16;
/// Anything above this is a counter that wrapped below zero.
const WRAPPED: u64 = 1 << 60;

fn open() -> Arc<AllocationAccount> {
    AllocationAccount::open().expect("a free account slot")
}

/// The account's slot, as its `Debug` output shows it.
fn slot_of(account: &AllocationAccount) -> String {
    format!("{account:?}")
}

fn buffer(account: &AllocationAccount, bytes: usize) -> Vec<u8> {
    account.charge_during(|| black_box(Vec::with_capacity(bytes)))
}

#[test]
fn the_allocator_is_installed() {
    assert!(alloc_meter::is_installed());
}

#[test]
fn an_account_pays_for_what_it_allocates_until_another_thread_frees_it() {
    let account = open();
    account.enter();
    let block: Vec<u8> = black_box(Vec::with_capacity(5000));
    account.leave();
    let unpaid: Vec<u8> = black_box(Vec::with_capacity(7000));
    assert_eq!(account.current_bytes(), 5000);
    std::thread::spawn(move || drop(block)).join().expect("the freeing thread");
    drop(unpaid);
    assert_eq!(account.current_bytes(), 0);
    assert_eq!(account.peak_bytes(), 5000);
}

#[test]
fn reallocation_keeps_the_owner_charged_with_the_new_capacity() {
    let account = open();
    let mut block = buffer(&account, 16);
    assert_eq!(account.current_bytes(), 16);
    block.extend_from_slice(&[1; 17]);
    assert!(block.capacity() > 16);
    assert_eq!(account.current_bytes(), block.capacity() as u64);
    let mut block = std::thread::spawn(move || {
        block.reserve_exact(10_000);
        block
    })
    .join()
    .expect("the growing thread");
    assert_eq!(account.current_bytes(), block.capacity() as u64);
    let grown = block.capacity() as u64;
    // Growing inside another account still charges the block's owner.
    let other = open();
    other.charge_during(|| block.reserve_exact(20_000));
    assert_eq!(other.current_bytes(), 0);
    assert_eq!(account.current_bytes(), block.capacity() as u64);
    let largest = block.capacity() as u64;
    assert!(largest > grown);
    block.shrink_to_fit();
    assert_eq!(block.capacity(), 17);
    assert_eq!(account.current_bytes(), 17);
    assert_eq!(account.peak_bytes(), largest);
    drop(block);
    assert_eq!(account.current_bytes(), 0);
}

#[test]
fn a_reallocation_too_large_for_a_layout_fails_and_leaves_the_charge() {
    let account = open();
    let mut block = buffer(&account, 64);
    block.push(1);
    // Valid for the Vec (at most isize::MAX bytes), too large once the
    // allocator adds its header.
    let additional = isize::MAX as usize - 8 - block.len();
    assert!(block.try_reserve_exact(additional).is_err());
    assert_eq!(block.capacity(), 64);
    assert_eq!(block, [1]);
    assert_eq!(account.current_bytes(), 64);
    drop(block);
    assert_eq!(account.current_bytes(), 0);
}

#[test]
fn peak_tracks_the_most_outstanding_at_once() {
    let account = open();
    let (first, second) = account.charge_during(|| {
        let first = black_box(Vec::<u8>::with_capacity(1000));
        let big = black_box(Vec::<u8>::with_capacity(3000));
        drop(big);
        let second = black_box(Vec::<u8>::with_capacity(500));
        (first, second)
    });
    assert_eq!(account.current_bytes(), 1500);
    assert_eq!(account.peak_bytes(), 4000);
    drop((first, second));
    assert_eq!(account.current_bytes(), 0);
    assert_eq!(account.peak_bytes(), 4000);
}

#[test]
fn uncharged_allocations_are_not_charged() {
    let account = open();
    let (free, paid) = account.charge_during(|| {
        let free = alloc_meter::uncharged(|| black_box(Vec::<u8>::with_capacity(4096)));
        // Back in the account after `uncharged`.
        let paid = black_box(Vec::<u8>::with_capacity(100));
        (free, paid)
    });
    assert_eq!(account.current_bytes(), 100);
    account.charge_during(|| drop(free));
    assert_eq!(account.current_bytes(), 100);
    drop(paid);
    assert_eq!(account.current_bytes(), 0);
    assert_eq!(account.peak_bytes(), 100);
}

#[test]
fn a_panic_restores_the_previous_account() {
    let account = open();
    let paid = account.charge_during(|| {
        let unwound = catch_unwind(|| alloc_meter::uncharged(|| std::panic::resume_unwind(Box::new(()))));
        assert!(unwound.is_err());
        // `uncharged` put the account back while unwinding.
        black_box(Vec::<u8>::with_capacity(50))
    });
    assert_eq!(account.current_bytes(), 50);
    let unwound = catch_unwind(AssertUnwindSafe(|| account.charge_during(|| std::panic::resume_unwind(Box::new(())))));
    assert!(unwound.is_err());
    // `charge_during` left the account while unwinding.
    let free = black_box(Vec::<u8>::with_capacity(700));
    assert_eq!(account.current_bytes(), 50);
    drop((paid, free));
    assert_eq!(account.current_bytes(), 0);
}

#[test]
fn alloc_zeroed_returns_zeroed_memory_and_is_charged() {
    for align in [1, 2, 4, 8, 16, 64, 4096] {
        for size in [1, 3, 100, 4096, 100_000] {
            let layout = Layout::from_size_align(size, align).expect("a valid layout");
            // Dirty a block of this layout first, so reuse would show.
            // SAFETY: the layout has non-zero size; the block is written
            // within its size and freed with the same layout.
            unsafe {
                let dirty = std::alloc::alloc(layout);
                assert!(!dirty.is_null());
                dirty.write_bytes(0xAB, size);
                std::alloc::dealloc(dirty, layout);
            }
            let account = open();
            // SAFETY: the layout has non-zero size.
            let block = account.charge_during(|| unsafe { std::alloc::alloc_zeroed(layout) });
            assert!(!block.is_null());
            assert_eq!(block as usize % align, 0, "alignment {align}");
            // SAFETY: `block` holds `size` initialized (zeroed) bytes.
            let bytes = unsafe { std::slice::from_raw_parts(block, size) };
            assert!(bytes.iter().all(|&b| b == 0), "size {size}, alignment {align}");
            assert_eq!(account.current_bytes(), size as u64);
            // SAFETY: allocated above with this layout, not yet freed.
            unsafe { std::alloc::dealloc(block, layout) };
            assert_eq!(account.current_bytes(), 0);
        }
    }
    let account = open();
    let zeros = account.charge_during(|| black_box(vec![0u8; 1 << 20]));
    assert!(zeros.iter().all(|&b| b == 0));
    assert_eq!(account.current_bytes(), 1 << 20);
    drop(zeros);
    assert_eq!(account.current_bytes(), 0);
}

/// Opens (and closes) accounts through the whole table, checking each is
/// fresh and none gets `avoid`'s slot.
fn cycle_fresh_accounts(avoid: &str) {
    for _ in 0..2 * SLOTS {
        let account = open();
        assert_ne!(slot_of(&account), avoid, "a slot with outstanding bytes was reused");
        assert_eq!(account.current_bytes(), 0);
        assert_eq!(account.peak_bytes(), 0);
    }
}

/// Opens (and closes) accounts until one gets `slot`; whether it did.
fn reopen(slot: &str) -> bool {
    for _ in 0..16 * SLOTS {
        let account = open();
        assert!(account.current_bytes() < WRAPPED && account.peak_bytes() < WRAPPED);
        if slot_of(&account) == slot {
            assert_eq!(account.current_bytes(), 0);
            assert_eq!(account.peak_bytes(), 0);
            return true;
        }
    }
    false
}

#[test]
fn a_closed_account_with_outstanding_bytes_keeps_its_slot_until_they_are_freed() {
    let account = open();
    let slot = slot_of(&account);
    let block = account.charge_during(|| black_box(vec![1u8; 3000].into_boxed_slice()));
    assert_eq!(account.current_bytes(), 3000);
    drop(account);
    let held: Vec<_> = (0..200).map(|_| open()).collect();
    for fresh in &held {
        assert_ne!(slot_of(fresh), slot);
        assert_eq!(fresh.current_bytes(), 0);
        assert_eq!(fresh.peak_bytes(), 0);
    }
    cycle_fresh_accounts(&slot);
    std::thread::spawn(move || drop(block)).join().expect("the freeing thread");
    assert!(reopen(&slot), "the slot was not freed with its last bytes");
    drop(held);
}

#[test]
fn resizing_a_closed_accounts_block_never_wraps_a_counter() {
    let account = open();
    let slot = slot_of(&account);
    let mut block = account.charge_during(|| black_box(vec![1u8; 1000]));
    drop(account);
    block.reserve_exact(5000);
    block.shrink_to_fit();
    block.truncate(10);
    block.shrink_to_fit();
    assert_eq!(block.capacity(), 10);
    cycle_fresh_accounts(&slot);
    let later = open();
    let owned_later = buffer(&later, 10);
    drop(block);
    assert_eq!(later.current_bytes(), 10);
    assert!(reopen(&slot), "the slot was not freed with its last bytes");
    drop(owned_later);
    assert_eq!(later.current_bytes(), 0);
}

fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn accounts_balance_under_concurrent_allocation_and_turnover() {
    const THREADS: u64 = 4;
    const CYCLES: usize = 10_000;
    const POOL: usize = 256;
    // Blocks handed between threads; allocated uncharged, and never grown
    // past this capacity.
    let pool: Arc<Mutex<Vec<Vec<u8>>>> = Arc::new(Mutex::new(Vec::with_capacity(2 * POOL)));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let pool = Arc::clone(&pool);
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9_7F4A_7C15 ^ (t + 1).wrapping_mul(0x2545_F491_4F6C_DD1D);
                let mut kept = Vec::with_capacity(CYCLES / 100 + 1);
                let mut account = open();
                for cycle in 0..CYCLES {
                    if cycle % 100 == 99 {
                        // Half the accounts stay open for the final check; the
                        // others close while their blocks are still around.
                        let old = std::mem::replace(&mut account, open());
                        if cycle % 200 == 99 {
                            kept.push(old);
                        } else {
                            drop(old);
                        }
                    }
                    let r = xorshift(&mut rng);
                    let mut block = buffer(&account, 1 + (r % 2000) as usize);
                    block.push(r as u8);
                    match (r >> 16) % 4 {
                        0 => drop(block),
                        1 => {
                            block.reserve_exact((r >> 24) as usize % 3000);
                            let mut pool = pool.lock().expect("the pool");
                            if pool.len() < POOL {
                                pool.push(block);
                            }
                        }
                        2 => {
                            let mut pool = pool.lock().expect("the pool");
                            if pool.len() < POOL {
                                pool.push(block);
                            }
                        }
                        _ => {
                            let theirs = pool.lock().expect("the pool").pop();
                            if let Some(mut theirs) = theirs {
                                // Resized while entered elsewhere: still the owner's.
                                account.charge_during(|| {
                                    theirs.reserve_exact((r >> 32) as usize % 4000);
                                    theirs.shrink_to_fit();
                                });
                            }
                            drop(block);
                        }
                    }
                    assert!(account.current_bytes() < WRAPPED);
                }
                kept.push(account);
                kept
            })
        })
        .collect();
    let kept: Vec<_> = workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect();
    pool.lock().expect("the pool").clear();
    assert_eq!(kept.len(), THREADS as usize * (CYCLES / 200 + 1));
    for account in &kept {
        assert_eq!(account.current_bytes(), 0);
        assert!(account.peak_bytes() > 0 && account.peak_bytes() < WRAPPED);
    }
}
