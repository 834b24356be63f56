//! Benchmarks behind `resc bench`: side by side in one run, as JSON.
//!
//! Every measurement is bounded in count and time, and reports throughput
//! and latency percentiles; comparisons are ratios within one run, because
//! absolute figures on shared machines are noise.

pub mod faults;
pub mod ilp;
pub mod locality;
pub mod sched;
pub mod swap;
pub mod transport;

use serde::Serialize;
use std::time::{Duration, Instant};

/// The median of `values` (the upper one of an even count); 0 when empty.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// What was measured: a transport, `redis`, `tcp-stream` or `memcpy`.
    pub transport: String,
    /// The operation: `read`, `write` (`get`/`set` for Redis, `copy` for memcpy).
    pub op: String,
    /// Bytes per operation.
    pub size: u64,
    /// `sequential` or `random` offsets (`stream` for the raw socket).
    pub pattern: String,
    /// Operations per batch or pipeline (1: one at a time).
    pub batch: u32,
    /// Throughput, GB/s (10^9 bytes per second).
    pub gbps: f64,
    /// Median latency of one batch, µs.
    pub p50_us: f64,
    /// 99th-percentile latency of one batch, µs.
    pub p99_us: f64,
    /// Operations measured.
    pub ops: u64,
}

/// How long and how many: each measurement stops at whichever comes first.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bounds {
    /// Most batches per measurement.
    pub max_batches: u64,
    /// Fewest batches per measurement (unless `max_time` runs out first).
    pub min_batches: u64,
    /// Longest time per measurement.
    pub max_time: Duration,
}

impl Bounds {
    /// Short runs for tests: a handful of batches each.
    pub fn quick() -> Self {
        Bounds { max_batches: 20, min_batches: 5, max_time: Duration::from_millis(50) }
    }
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds { max_batches: 4000, min_batches: 50, max_time: Duration::from_millis(250) }
    }
}

/// Runs `batch_op(i)` (one batch of `batch` operations of `size` bytes)
/// within `bounds` and summarizes. A failing batch ends the measurement with
/// its error.
pub fn measure<E>(
    label: (&str, &str, &str),
    size: u64,
    batch: u32,
    bounds: Bounds,
    mut batch_op: impl FnMut(u64) -> Result<(), E>,
) -> Result<Measurement, E> {
    // One untimed batch first: connections, page faults, caches.
    batch_op(0)?;
    let mut latencies = Vec::with_capacity(bounds.max_batches as usize);
    let started = Instant::now();
    for i in 0..bounds.max_batches {
        let t = Instant::now();
        batch_op(i + 1)?;
        latencies.push(t.elapsed());
        if i + 1 >= bounds.min_batches && started.elapsed() >= bounds.max_time {
            break;
        }
    }
    let total = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
    };
    let ops = latencies.len() as u64 * u64::from(batch);
    Ok(Measurement {
        transport: label.0.to_owned(),
        op: label.1.to_owned(),
        size,
        pattern: label.2.to_owned(),
        batch,
        gbps: (ops * size) as f64 / total.max(1e-9) / 1e9,
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        ops,
    })
}
