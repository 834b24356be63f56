//! FarRegion against real userfaultfd over the in-process memory node:
//! contents, pressure, threads, dirtiness, fork, unmapping, failures.
//!
//! These tests need root (or access to `/dev/userfaultfd`); where
//! userfaultfd is unavailable they fail, unless `RESC_SWAP_SKIP_UNAVAILABLE=1`.

mod common;

use common::{backing, byte, region, small, userfaultfd_or_skip};
use proptest::prelude::*;
use resc_core::pool::MemoryPool;
use resc_core::testkit::faults::FaultyTransport;
use resc_core::transport::Transport;
use resc_swap::{EvictionPolicy, FailedOp, FarRegion, HandlerPolicy, SwapConfig, SwapError};
use std::sync::{Arc, Barrier};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[test]
fn never_written_bytes_read_as_zeros_and_written_ones_survive_pressure() {
    if !userfaultfd_or_skip() {
        return;
    }
    let budget = 256 * KIB;
    let (mut region, memory) = region(small(8 * MIB, budget));
    assert!(region.as_slice().iter().all(|&b| b == 0), "fresh memory reads as zeros");
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = byte(1, i);
    }
    for (i, &b) in region.as_slice().iter().enumerate() {
        assert_eq!(b, byte(1, i), "byte {i}");
    }
    // Overwrite it all (chunks come back read-ahead, some with marker
    // holes), then every other page, then check.
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = byte(2, i);
    }
    for (p, page) in region.as_mut_slice().chunks_mut(4096).enumerate().step_by(2) {
        page[17] = byte(3, p);
    }
    for (i, &b) in region.as_slice().iter().enumerate() {
        let expected = if (i / 4096) % 2 == 0 && i % 4096 == 17 { byte(3, i / 4096) } else { byte(2, i) };
        assert_eq!(b, expected, "byte {i}");
    }
    let stats = region.stats();
    assert!(stats.peak_resident_bytes <= budget, "{stats:?}");
    assert!(stats.bytes_written_back >= 7 * MIB, "most of it went to swap space: {stats:?}");
    assert!(stats.swap_space_bytes >= 7 * MIB && stats.swap_components >= 7);
    assert!(stats.read_ahead_chunks > 0 && stats.read_ahead_hits > 0, "sequential access reads ahead: {stats:?}");
    assert_eq!(stats.resident_bytes + stats.swapped_out_bytes, 8 * MIB, "every chunk is somewhere: {stats:?}");
    region.check().expect("nothing failed");
    drop(region);
    assert_eq!(memory.allocated_bytes(), 0, "swap space freed with the region");
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: usize, len: usize, seed: u64 },
    Read { offset: usize, len: usize },
    Discard { offset: usize, len: usize },
}

fn op(len: usize) -> impl Strategy<Value = Op> {
    let span: usize = 160 * 1024;
    prop_oneof![
        4 => (0..len, 1..span, any::<u64>()).prop_map(|(offset, len, seed)| Op::Write { offset, len, seed }),
        4 => (0..len, 1..span).prop_map(|(offset, len)| Op::Read { offset, len }),
        1 => (0..len, 1..4 * span).prop_map(|(offset, len)| Op::Discard { offset, len }),
    ]
}

fn policies() -> impl Strategy<Value = (EvictionPolicy, HandlerPolicy)> {
    (
        prop_oneof![Just(EvictionPolicy::Clock), Just(EvictionPolicy::Nru)],
        prop_oneof![Just(HandlerPolicy::Poll), Just(HandlerPolicy::Spin), Just(HandlerPolicy::Hybrid { spin_us: 20 })],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random reads, writes and discards (runs of up to ten chunks, so that
    /// streams, read-ahead and marker holes come into play) under a budget
    /// of eight chunks behave exactly like a plain `Vec`.
    #[test]
    fn random_operations_match_a_vec(
        ops in proptest::collection::vec(op(1 << 20), 1..60),
        (eviction, handler) in policies(),
    ) {
        if !userfaultfd_or_skip() {
            return Ok(());
        }
        const LEN: usize = 1 << 20;
        let mut config = small(LEN as u64, 128 * KIB);
        config.eviction = eviction;
        config.handler = handler;
        config.free_target = 0;
        let (mut region, _memory) = region(config);
        let chunk = region.chunk_size();
        let mut model = vec![0u8; LEN];
        for op in ops {
            match op {
                Op::Write { offset, len, seed } => {
                    let end = (offset + len).min(LEN);
                    let far = &mut region.as_mut_slice()[offset..end];
                    for ((i, m), f) in model[offset..end].iter_mut().enumerate().zip(far) {
                        *m = byte(seed, offset + i);
                        *f = *m;
                    }
                }
                Op::Read { offset, len } => {
                    let end = (offset + len).min(LEN);
                    prop_assert_eq!(&region.as_slice()[offset..end], &model[offset..end]);
                }
                Op::Discard { offset, len } => {
                    region.discard(offset, len);
                    // Only whole chunks inside the range are discarded.
                    let first = offset.div_ceil(chunk) * chunk;
                    let end = ((offset + len).min(LEN) / chunk) * chunk;
                    if first < end {
                        model[first..end].fill(0);
                    }
                }
            }
        }
        prop_assert!(region.as_slice() == model.as_slice(), "final contents differ");
        prop_assert!(region.stats().peak_resident_bytes <= 128 * KIB);
        region.check().map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

#[test]
fn threads_fault_on_the_same_chunks_at_once() {
    if !userfaultfd_or_skip() {
        return;
    }
    const THREADS: usize = 4;
    let (mut region, _memory) = region(small(8 * MIB, 256 * KIB));
    // Pages dealt round-robin: every chunk is written by every thread.
    let page = 4096;
    let mut shares: Vec<Vec<(usize, &mut [u8])>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (p, slice) in region.as_mut_slice().chunks_mut(page).enumerate() {
        shares[p % THREADS].push((p, slice));
    }
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for (t, mut share) in shares.into_iter().enumerate() {
            let barrier = &barrier;
            scope.spawn(move || {
                barrier.wait();
                for round in 0..2u64 {
                    for (p, slice) in share.iter_mut() {
                        for (i, b) in slice.iter_mut().enumerate() {
                            *b = byte(round * 100 + t as u64, *p * page + i);
                        }
                    }
                }
            });
        }
    });
    // Concurrent readers of everything.
    let region = &region;
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(move || {
                for (p, slice) in region.as_slice().chunks(page).enumerate() {
                    let t = (p % THREADS) as u64;
                    for (i, &b) in slice.iter().enumerate() {
                        assert_eq!(b, byte(100 + t, p * page + i), "page {p} byte {i}");
                    }
                }
            });
        }
    });
    let stats = region.stats();
    assert!(stats.write_protect_faults > 0, "{stats:?}");
    assert!(stats.peak_resident_bytes <= 256 * KIB);
    region.check().expect("nothing failed");
}

/// Read-modify-write of random words over a working set 128 times the
/// budget, with both policies.
#[test]
fn eviction_keeps_data_under_heavy_pressure() {
    if !userfaultfd_or_skip() {
        return;
    }
    for eviction in [EvictionPolicy::Clock, EvictionPolicy::Nru] {
        let budget = 64 * KIB;
        let mut config = small(8 * MIB, budget);
        config.eviction = eviction;
        let (mut region, _memory) = region(config);
        let words = region.as_mut_slice_of::<u64>();
        let mut model = vec![0u64; words.len()];
        let mut x = 0x1234_5678_u64;
        for step in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % model.len() as u64) as usize;
            words[i] = words[i].wrapping_mul(31).wrapping_add(step);
            model[i] = model[i].wrapping_mul(31).wrapping_add(step);
        }
        assert!(words.iter().eq(model.iter()), "{eviction:?}: contents differ");
        let stats = region.stats();
        assert!(stats.peak_resident_bytes <= budget, "{eviction:?}: {stats:?}");
        assert!(stats.chunks_evicted > 1000, "{eviction:?}: {stats:?}");
        region.check().expect("nothing failed");
    }
}

#[test]
fn only_dirty_pages_are_written_back() {
    if !userfaultfd_or_skip() {
        return;
    }
    let mut config = small(4 * MIB, 256 * KIB);
    config.free_target = 0;
    let (mut region, _memory) = region(config);
    let chunk = region.chunk_size();
    let chunks = region.len() / chunk;
    region.as_mut_slice().fill(7);
    let sum = |r: &FarRegion| r.as_slice().iter().map(|&b| u64::from(b)).sum::<u64>();
    // A read pass saves what is still dirty; a second one writes nothing.
    sum(&region);
    let before = region.stats();
    assert_eq!(sum(&region), 7 * region.len() as u64);
    let after = region.stats();
    assert_eq!(after.pages_written_back, before.pages_written_back, "clean chunks are dropped, not written");
    assert!(after.clean_evictions > before.clean_evictions);
    // One byte in every chunk: one page per chunk is dirty.
    let before = region.stats();
    for c in 0..chunks {
        region.as_mut_slice()[c * chunk] = 9;
    }
    sum(&region);
    sum(&region);
    let after = region.stats();
    let written = after.pages_written_back - before.pages_written_back;
    assert_eq!(written, chunks as u64, "one page per chunk, not whole chunks");
    assert_eq!(sum(&region), 7 * region.len() as u64 + 2 * chunks as u64);
    region.check().expect("nothing failed");
}

#[test]
fn a_forked_child_cannot_touch_the_region() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, _memory) = region(small(4 * MIB, 256 * KIB));
    region.as_mut_slice()[12345] = 42;
    let addr = region.as_ptr() as usize + 12345;
    // SAFETY: the child only reads one byte (a plain load, async-signal-safe)
    // and leaves with `_exit`; the parent only waits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: deliberately reads an address the child did not inherit
        // (MADV_DONTFORK): the expected outcome is SIGSEGV.
        let value = unsafe { std::ptr::read_volatile(addr as *const u8) };
        // SAFETY: leaving the child without running the parent's atexit hooks.
        unsafe { libc::_exit(i32::from(value)) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSEGV,
        "the child must die of SIGSEGV, not read stale or zero data (status {status:#x})"
    );
    assert_eq!(region.as_slice()[12345], 42, "the parent is unaffected");
}

#[test]
fn processes_can_be_spawned_while_a_region_is_in_use() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, _memory) = region(small(4 * MIB, 256 * KIB));
    region.as_mut_slice().fill(3);
    let status = std::process::Command::new("true").status().expect("spawn");
    assert!(status.success());
    assert!(region.as_slice().iter().all(|&b| b == 3));
}

#[test]
fn dropping_unmaps_the_range_and_frees_swap_space() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, memory) = region(small(4 * MIB, 128 * KIB));
    region.as_mut_slice().fill(1);
    assert!(memory.allocated_bytes() > 0);
    let addr = region.as_ptr();
    let len = region.len();
    drop(region);
    assert_eq!(memory.allocated_bytes(), 0);
    let mut vec = vec![0u8; len / 4096];
    // SAFETY: mincore only inspects the mapping state of the range; ENOMEM
    // means it is not mapped.
    let rc = unsafe { libc::mincore(addr.cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, -1, "the range must be unmapped");
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::ENOMEM));
}

fn faulty_region(config: SwapConfig, pool_capacity: u64) -> (FarRegion, Arc<FaultyTransport>) {
    let (memory, fabric) = backing(pool_capacity);
    let faulty = Arc::new(FaultyTransport::new(fabric as Arc<dyn Transport>));
    let region = FarRegion::new(config, memory, faulty.clone()).expect("region");
    (region, faulty)
}

#[test]
fn a_failed_fetch_poisons_the_region() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, faulty) = faulty_region(small(4 * MIB, 128 * KIB), 64 * MIB);
    region.as_mut_slice().fill(5);
    region.check().expect("fine so far");
    faulty.fail_reads(true);
    // The start of the region was evicted long ago: fetching it fails.
    let seen = region.as_slice()[0];
    let err = region.check().expect_err("the failure must surface");
    assert!(matches!(err, SwapError::BackingFailed { during: FailedOp::Fetch, .. }), "{err}");
    assert!(region.is_poisoned());
    assert!(region.stats().backing_failures > 0);
    // What the code piece saw: zeros, not its data — which is why the
    // invocation must fail.
    assert_eq!(seen, 0);
}

#[test]
fn a_failed_write_back_keeps_the_data_and_poisons_the_region() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, faulty) = faulty_region(small(4 * MIB, 128 * KIB), 64 * MIB);
    faulty.fail_writes(true);
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = byte(3, i);
    }
    let err = region.check().expect_err("the failure must surface");
    assert!(matches!(err, SwapError::BackingFailed { during: FailedOp::WriteBack, .. }), "{err}");
    // Nothing was lost: chunks that could not be saved stayed resident.
    assert!(region.stats().resident_bytes > 128 * KIB, "over budget rather than lose data");
    faulty.fail_writes(false);
    for (i, &b) in region.as_slice().iter().enumerate() {
        assert_eq!(b, byte(3, i), "byte {i}");
    }
}

#[test]
fn a_backing_component_lost_mid_run_surfaces_as_an_error() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, faulty) = faulty_region(small(4 * MIB, 128 * KIB), 64 * MIB);
    region.as_mut_slice()[..MIB as usize].fill(9);
    // The memory node crashes: every later operation fails.
    faulty.fail_after(0);
    let sum: u64 = region.as_slice().iter().map(|&b| u64::from(b)).sum();
    assert!(sum < 9 * MIB, "some data could not come back");
    let err = region.check().expect_err("the crash must surface");
    assert!(matches!(err, SwapError::BackingFailed { .. }), "{err}");
}

#[test]
fn running_out_of_swap_space_keeps_the_data_and_poisons_the_region() {
    if !userfaultfd_or_skip() {
        return;
    }
    // Room for one 1 MiB segment only.
    let (memory, fabric) = backing(MIB);
    let mut region = FarRegion::new(small(4 * MIB, 128 * KIB), memory, fabric).expect("region");
    for (i, b) in region.as_mut_slice().iter_mut().enumerate() {
        *b = byte(4, i);
    }
    let err = region.check().expect_err("the pool's refusal must surface");
    assert!(matches!(err, SwapError::BackingFailed { during: FailedOp::Allocate, .. }), "{err}");
    for (i, &b) in region.as_slice().iter().enumerate() {
        assert_eq!(b, byte(4, i), "byte {i}");
    }
}

#[test]
fn faults_taken_inside_system_calls_are_served() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (mut region, _memory) = region(small(4 * MIB, 128 * KIB));
    assert!(region.handles_kernel_faults(), "root may handle kernel faults");
    region.as_mut_slice().fill(1);
    let mut fds = [0; 2];
    // SAFETY: creates a pipe into a two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let message = b"written by the kernel";
    // SAFETY: writes our buffer to the pipe we own.
    let n = unsafe { libc::write(fds[1], message.as_ptr().cast(), message.len()) };
    assert_eq!(n, message.len() as isize);
    // Offset 100: evicted long ago, so the kernel's copy faults.
    let target = &mut region.as_mut_slice()[100..100 + message.len()];
    // SAFETY: reads into a live, exclusively borrowed slice of the region.
    let n = unsafe { libc::read(fds[0], target.as_mut_ptr().cast(), target.len()) };
    assert_eq!(n, message.len() as isize);
    // SAFETY: closes the descriptors we opened.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    assert_eq!(&region.as_slice()[100..100 + message.len()], message);
    assert_eq!(region.as_slice()[99], 1);
}

#[test]
fn bad_configurations_are_refused_with_typed_errors() {
    if !userfaultfd_or_skip() {
        return;
    }
    let (memory, fabric) = backing(MIB);
    let try_config = |config: SwapConfig| FarRegion::new(config, memory.clone(), fabric.clone()).map(drop);
    let mut too_small = small(MIB, 16 * KIB);
    too_small.chunk_size = 16 << 10;
    assert!(matches!(try_config(too_small), Err(SwapError::InvalidConfig(_))));
    let mut odd_chunk = small(MIB, 256 * KIB);
    odd_chunk.chunk_size = 3 * 4096;
    assert!(matches!(try_config(odd_chunk), Err(SwapError::InvalidConfig(_))));
    let mut huge_chunk = small(MIB, 4 * MIB);
    huge_chunk.chunk_size = 1 << 20;
    assert!(matches!(try_config(huge_chunk), Err(SwapError::InvalidConfig(_))));
    let mut segment = small(MIB, 256 * KIB);
    segment.segment_size = 24 << 10;
    assert!(matches!(try_config(segment), Err(SwapError::InvalidConfig(_))));
    assert!(matches!(try_config(small(0, 256 * KIB)), Err(SwapError::InvalidConfig(_))));
}
