//! Counters for metering and benchmarks.

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a far region did so far: the input of metering (local and swap
/// bytes, number of swaps) and of the benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SwapStats {
    /// Bytes resident in local memory now.
    pub resident_bytes: u64,
    /// The most bytes resident at once.
    pub peak_resident_bytes: u64,
    /// Bytes of the region held only in swap space now.
    pub swapped_out_bytes: u64,
    /// Bytes of swap space allocated (physical memory components held).
    pub swap_space_bytes: u64,
    /// Physical memory components allocated for swap space.
    pub swap_components: u64,
    /// Missing-page faults served (including read-ahead hits).
    pub missing_faults: u64,
    /// Write-protect faults served (first write to a clean page).
    pub write_protect_faults: u64,
    /// Missing faults on a stream's read-ahead marker: the program reached
    /// the middle of the window read ahead, which started the next window.
    pub read_ahead_hits: u64,
    /// Chunks brought in by read-ahead rather than by a fault.
    pub read_ahead_chunks: u64,
    /// Bytes read from swap space.
    pub bytes_fetched: u64,
    /// Chunks filled with zeros (never written back, or discarded).
    pub zero_fills: u64,
    /// Chunks evicted.
    pub chunks_evicted: u64,
    /// Chunks evicted without writing anything back (clean).
    pub clean_evictions: u64,
    /// Pages written back to swap space.
    pub pages_written_back: u64,
    /// Bytes written back to swap space.
    pub bytes_written_back: u64,
    /// Faults the handler found while it was awake (spinning or working).
    pub faults_while_busy: u64,
    /// Faults the handler found right after sleeping in `poll`.
    pub faults_after_sleep: u64,
    /// Backing operations that failed (the region is poisoned when > 0).
    pub backing_failures: u64,
    /// Nanoseconds the handler spent filling chunks (fetch and copy).
    pub fill_ns: u64,
    /// Nanoseconds the handler spent evicting (write-protect, write-back, drop).
    pub evict_ns: u64,
}

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// The live counters behind [`SwapStats`].
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $name: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> SwapStats {
                SwapStats { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters!(
    resident_bytes,
    peak_resident_bytes,
    swapped_out_bytes,
    swap_space_bytes,
    swap_components,
    missing_faults,
    write_protect_faults,
    read_ahead_hits,
    read_ahead_chunks,
    bytes_fetched,
    zero_fills,
    chunks_evicted,
    clean_evictions,
    pages_written_back,
    bytes_written_back,
    faults_while_busy,
    faults_after_sleep,
    backing_failures,
    fill_ns,
    evict_ns,
);

/// Adds `n` to a counter.
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge.
pub(crate) fn set(counter: &AtomicU64, value: u64) {
    counter.store(value, Ordering::Relaxed);
}
