//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use resc_core::ids::NodeId;
use resc_core::inproc::{InProcessFabric, InProcessMemory};
use resc_swap::{FarRegion, SwapConfig};
use std::sync::Arc;

/// Whether userfaultfd works here. Where it does not, the test fails with
/// the reason, unless `RESC_SWAP_SKIP_UNAVAILABLE=1` says to skip.
pub fn userfaultfd_or_skip() -> bool {
    match FarRegion::probe() {
        Ok(()) => true,
        Err(e) if std::env::var("RESC_SWAP_SKIP_UNAVAILABLE").as_deref() == Ok("1") => {
            eprintln!("skipped: {e} (RESC_SWAP_SKIP_UNAVAILABLE=1)");
            false
        }
        Err(e) => panic!(
            "userfaultfd is needed by this test and unavailable: {e}. \
             Run as root (or give access to /dev/userfaultfd), or set RESC_SWAP_SKIP_UNAVAILABLE=1 to skip"
        ),
    }
}

/// An in-process memory node of `capacity` bytes and a fabric reaching it.
pub fn backing(capacity: u64) -> (Arc<InProcessMemory>, Arc<InProcessFabric>) {
    let memory = Arc::new(InProcessMemory::new(NodeId(7), capacity));
    let fabric = Arc::new(InProcessFabric::new());
    fabric.attach(memory.clone());
    (memory, fabric)
}

/// A small configuration: 16 KiB chunks, 64 KiB read-ahead, 1 MiB segments.
pub fn small(capacity: u64, budget: u64) -> SwapConfig {
    let mut config = SwapConfig::new(capacity, budget);
    config.chunk_size = 16 << 10;
    config.max_read_ahead = 64 << 10;
    config.initial_read_ahead = 32 << 10;
    config.free_target = 32 << 10;
    config.segment_size = 1 << 20;
    config
}

/// A region of `capacity` bytes over `budget` bytes of local memory, on a
/// fresh in-process memory node.
pub fn region(config: SwapConfig) -> (FarRegion, Arc<InProcessMemory>) {
    let (memory, fabric) = backing(config.capacity * 2 + (64 << 20));
    let region = FarRegion::new(config, memory.clone(), fabric).expect("far region");
    (region, memory)
}

/// A deterministic byte for position `i` under `seed`.
pub fn byte(seed: u64, i: usize) -> u8 {
    let x = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}
