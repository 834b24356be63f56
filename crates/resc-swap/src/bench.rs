//! Measurement functions: the paper's Fig. 20 (a code piece reading an array
//! larger than its local memory, against the same code with everything
//! local), the eviction policies against each other, and the handler's
//! waiting policies. Every result is serde-serializable; `resc bench swap
//! --json` prints them.
//!
//! The backing store is an [`InProcessMemory`] reached through an
//! [`InProcessFabric`]: the platform's in-process memory node.
//!
//! # What a run does
//!
//! For each array size: the array (`u64` elements, element *i* = *i*) is
//! built in ordinary memory and every page touched, then each pattern × work
//! is timed on it (`seconds_all_local`). Then, for each local-memory size, a
//! [`FarRegion`] with that budget is filled with the same array (evicting as
//! it goes), and the very same pass function is timed on it (`seconds`).
//! Both runs must return the same checksum, or the case reports
//! `checksum_ok: false`. `seq` and `block-random` are timed
//! [`BenchConfig::repetitions`] times each way and the medians are reported
//! (every sample is kept); `page-random` runs once. The far passes of one
//! size run one after the other on the same region, so each starts with
//! what the previous one left resident (at most the local memory).
//!
//! - Patterns: `seq` (one pass in order), `block-random` (1 MiB blocks in a
//!   random order, each read through), `page-random` (4 KiB pages in a
//!   random order; reported, no bar: any pager thrashes on it).
//! - Work: `compute` runs [`COMPUTE_ROUNDS`] rounds of
//!   multiply–rotate–xor per element in one dependent chain (about 10 ns per
//!   8-byte element on the project's machines; each case reports the
//!   measured `ns_per_element` of the all-local run); `bandwidth` only sums
//!   the elements, which shows how close the fault path comes to the copy
//!   limit.
//!
//! ```no_run
//! let report = resc_swap::bench::run(&resc_swap::bench::BenchConfig::quick())?;
//! for case in &report.cases {
//!     println!("{} MiB over {} MiB, {:?}: {:+.1} %", case.array_mib, case.local_mib, case.pattern, case.overhead * 100.0);
//! }
//! # Ok::<(), resc_swap::SwapError>(())
//! ```

use crate::config::{EvictionPolicy, HandlerPolicy, SwapConfig};
use crate::error::SwapError;
use crate::region::FarRegion;
use crate::stats::SwapStats;
use resc_core::ids::NodeId;
use resc_core::inproc::{InProcessFabric, InProcessMemory};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

const MIB: u64 = 1 << 20;
/// Bytes per block of the `block-random` pattern.
pub const BLOCK_BYTES: usize = 1 << 20;
/// Bytes per page of the `page-random` pattern.
pub const PAGE_BYTES: usize = 4096;
/// Rounds of arithmetic per element in the `compute` work.
pub const COMPUTE_ROUNDS: u32 = 6;

/// How a pass walks the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Pattern {
    /// One pass in order.
    Seq,
    /// 1 MiB blocks in a random order, each read through.
    BlockRandom,
    /// 4 KiB pages in a random order.
    PageRandom,
}

impl Pattern {
    /// Every pattern.
    pub const ALL: [Pattern; 3] = [Pattern::Seq, Pattern::BlockRandom, Pattern::PageRandom];

    /// The name used in JSON (`seq`, `block-random`, `page-random`).
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Seq => "seq",
            Pattern::BlockRandom => "block-random",
            Pattern::PageRandom => "page-random",
        }
    }

    fn unit_bytes(self) -> Option<usize> {
        match self {
            Pattern::Seq => None,
            Pattern::BlockRandom => Some(BLOCK_BYTES),
            Pattern::PageRandom => Some(PAGE_BYTES),
        }
    }
}

/// What a pass does with each element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Work {
    /// [`COMPUTE_ROUNDS`] rounds of arithmetic per element (≈ 10 ns).
    Compute,
    /// A plain sum: memory bandwidth only.
    Bandwidth,
}

impl Work {
    /// Both kinds of work.
    pub const ALL: [Work; 2] = [Work::Compute, Work::Bandwidth];
}

/// What to measure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BenchConfig {
    /// Array sizes in MiB.
    pub array_mib: Vec<u64>,
    /// Local memory sizes in MiB (the region's budget).
    pub local_mib: Vec<u64>,
    /// Patterns to run.
    pub patterns: Vec<Pattern>,
    /// Kinds of work to run.
    pub works: Vec<Work>,
    /// The region's settings (capacity and budget are set per case).
    pub swap: SwapConfig,
    /// Seed of the random orders.
    pub seed: u64,
    /// Compare the eviction policies (NRU, CLOCK).
    pub compare_eviction: bool,
    /// Compare the handler's waiting policies.
    pub compare_handler: bool,
    /// Timed runs of each `seq` and `block-random` case (local and far);
    /// the median is reported. `page-random` runs once: it takes long and
    /// has no bar.
    pub repetitions: u32,
}

impl BenchConfig {
    /// The paper's Fig. 20: arrays of 0.5, 1 and 2 GiB, local memory of 200
    /// and 400 MiB, every pattern and work, plus the policy comparisons.
    pub fn full() -> Self {
        BenchConfig {
            array_mib: vec![512, 1024, 2048],
            local_mib: vec![200, 400],
            patterns: Pattern::ALL.to_vec(),
            works: Work::ALL.to_vec(),
            swap: SwapConfig::new(MIB, MIB),
            seed: 20,
            compare_eviction: true,
            compare_handler: true,
            repetitions: 3,
        }
    }

    /// A smoke test that runs in a second or two even in a debug build:
    /// an 8 MiB array with 2 MiB of local memory, chunks and read-ahead
    /// scaled down to match.
    pub fn quick() -> Self {
        let mut swap = SwapConfig::new(MIB, MIB);
        swap.chunk_size = 16 << 10;
        swap.max_read_ahead = 256 << 10;
        swap.initial_read_ahead = 64 << 10;
        swap.free_target = 128 << 10;
        swap.segment_size = 4 * MIB;
        BenchConfig {
            array_mib: vec![8],
            local_mib: vec![2],
            patterns: Pattern::ALL.to_vec(),
            works: Work::ALL.to_vec(),
            swap,
            seed: 20,
            compare_eviction: true,
            compare_handler: true,
            repetitions: 1,
        }
    }
}

/// One measured case of Fig. 20.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SwapCase {
    /// Array size in MiB.
    pub array_mib: u64,
    /// Local memory in MiB.
    pub local_mib: u64,
    /// Access pattern.
    pub pattern: Pattern,
    /// Work per element.
    pub work: Work,
    /// Seconds of the pass over the far region (median of the runs).
    pub seconds: f64,
    /// Seconds of the same pass with the array all local and resident
    /// (median of the runs).
    pub seconds_all_local: f64,
    /// Every far run, in order.
    pub samples: Vec<f64>,
    /// Every all-local run, in order.
    pub samples_all_local: Vec<f64>,
    /// `seconds / seconds_all_local - 1`.
    pub overhead: f64,
    /// Nanoseconds per element of the all-local pass.
    pub ns_per_element: f64,
    /// Whether the far pass computed the same checksum as the local one.
    pub checksum_ok: bool,
    /// Handler policy.
    pub handler: HandlerPolicy,
    /// Eviction policy.
    pub eviction: EvictionPolicy,
    /// Faults of the median far run (missing and write-protect).
    pub faults: u64,
    /// Whether the handler was awake when faults came (see
    /// [`SwapStats::faults_while_busy`]): `busy` (awake for at least 90 % of
    /// them), `idle` (asleep for at least 90 %), `mixed`, or `none` (no
    /// fault).
    pub regime: String,
    /// What the region did during the median far run.
    pub stats: SwapStats,
}

/// One case of the eviction comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EvictionCase {
    /// The workload: `seq`, `block-random` or `hot-cold` (a hot set of
    /// half the local memory read again between cold scans).
    pub workload: String,
    /// The policy.
    pub eviction: EvictionPolicy,
    /// Array size in MiB.
    pub array_mib: u64,
    /// Local memory in MiB.
    pub local_mib: u64,
    /// Seconds of the timed passes.
    pub seconds: f64,
    /// What the region did during them.
    pub stats: SwapStats,
}

/// One case of the handler-policy comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HandlerCase {
    /// The policy.
    pub handler: HandlerPolicy,
    /// Access pattern.
    pub pattern: Pattern,
    /// Array size in MiB.
    pub array_mib: u64,
    /// Local memory in MiB.
    pub local_mib: u64,
    /// Seconds of the pass (compute work).
    pub seconds: f64,
    /// Seconds all local.
    pub seconds_all_local: f64,
    /// `seconds / seconds_all_local - 1`.
    pub overhead: f64,
    /// Handler regime, as in [`SwapCase::regime`].
    pub regime: String,
    /// What the region did during the pass.
    pub stats: SwapStats,
}

/// Everything one run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BenchReport {
    /// The configuration.
    pub config: BenchConfig,
    /// Fig. 20: one object per case.
    pub cases: Vec<SwapCase>,
    /// NRU against CLOCK (empty unless asked).
    pub eviction: Vec<EvictionCase>,
    /// Poll, hybrid and spin handlers (empty unless asked).
    pub handler: Vec<HandlerCase>,
    /// Logical CPUs of the machine.
    pub cpus: usize,
}

/// Runs everything `config` asks for.
pub fn run(config: &BenchConfig) -> Result<BenchReport, SwapError> {
    let cases = fig20(config)?;
    let eviction = if config.compare_eviction { compare_eviction(config)? } else { Vec::new() };
    let handler = if config.compare_handler { compare_handlers(config)? } else { Vec::new() };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    Ok(BenchReport { config: config.clone(), cases, eviction, handler, cpus })
}

/// The order units are visited in (`None`: in order).
fn order(pattern: Pattern, elements: usize, seed: u64) -> Option<Vec<u32>> {
    let unit = pattern.unit_bytes()? / 8;
    let units = elements.div_ceil(unit);
    let mut order: Vec<u32> = (0..units as u32).collect();
    let mut rng = seed | 1;
    for i in (1..order.len()).rev() {
        let j = (crate::bench::next(&mut rng) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    Some(order)
}

fn next(state: &mut u64) -> u64 {
    // splitmix64
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The per-element arithmetic of the `compute` work.
#[inline(always)]
fn mix(acc: u64, x: u64) -> u64 {
    let mut a = acc ^ x;
    for _ in 0..COMPUTE_ROUNDS {
        a = a.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(23) ^ x;
    }
    a
}

fn work_on(slice: &[u64], work: Work, acc: u64) -> u64 {
    match work {
        Work::Compute => slice.iter().fold(acc, |a, &x| mix(a, x)),
        Work::Bandwidth => slice.iter().fold(acc, |a, &x| a.wrapping_add(x)),
    }
}

/// One pass: the same code for the local and the far array.
#[inline(never)]
fn pass(data: &[u64], pattern: Pattern, work: Work, order: Option<&[u32]>) -> u64 {
    match (pattern.unit_bytes(), order) {
        (Some(unit), Some(order)) => {
            let unit = unit / 8;
            let mut acc = 0u64;
            for &u in order {
                let start = u as usize * unit;
                let end = (start + unit).min(data.len());
                acc = work_on(&data[start..end], work, acc);
            }
            acc
        }
        _ => work_on(data, work, 0),
    }
}

fn fill(data: &mut [u64]) {
    for (i, x) in data.iter_mut().enumerate() {
        *x = i as u64;
    }
}

fn regime(stats: &SwapStats) -> String {
    let total = stats.faults_while_busy + stats.faults_after_sleep;
    if total == 0 {
        return "none".into();
    }
    let idle = stats.faults_after_sleep as f64 / total as f64;
    if idle <= 0.1 {
        "busy".into()
    } else if idle >= 0.9 {
        "idle".into()
    } else {
        "mixed".into()
    }
}

/// Counters that moved between two snapshots (gauges are taken from `after`).
fn delta(before: &SwapStats, after: &SwapStats) -> SwapStats {
    let mut d = *after;
    d.missing_faults -= before.missing_faults;
    d.write_protect_faults -= before.write_protect_faults;
    d.read_ahead_hits -= before.read_ahead_hits;
    d.read_ahead_chunks -= before.read_ahead_chunks;
    d.bytes_fetched -= before.bytes_fetched;
    d.zero_fills -= before.zero_fills;
    d.chunks_evicted -= before.chunks_evicted;
    d.clean_evictions -= before.clean_evictions;
    d.pages_written_back -= before.pages_written_back;
    d.bytes_written_back -= before.bytes_written_back;
    d.faults_while_busy -= before.faults_while_busy;
    d.faults_after_sleep -= before.faults_after_sleep;
    d.backing_failures -= before.backing_failures;
    d.fill_ns -= before.fill_ns;
    d.evict_ns -= before.evict_ns;
    d
}

/// A far region of `array_mib` with `local_mib` of budget over an
/// in-process memory node, filled with the array.
fn far_array(template: &SwapConfig, array_mib: u64, local_mib: u64) -> Result<FarRegion, SwapError> {
    let mut config = template.clone();
    config.capacity = array_mib * MIB;
    config.local_budget = local_mib * MIB;
    let segments = (array_mib * MIB).div_ceil(config.segment_size) + 1;
    let memory = Arc::new(InProcessMemory::new(NodeId(0), segments * config.segment_size));
    let fabric = Arc::new(InProcessFabric::new());
    fabric.attach(memory.clone());
    let mut region = FarRegion::new(config, memory, fabric)?;
    fill(region.as_mut_slice_of::<u64>());
    region.check()?;
    Ok(region)
}

struct Timed {
    seconds: f64,
    samples: Vec<f64>,
    checksum_ok: bool,
    stats: SwapStats,
}

fn median(samples: &[f64]) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

fn runs_of(config: &BenchConfig, pattern: Pattern) -> u32 {
    if pattern == Pattern::PageRandom {
        1
    } else {
        config.repetitions.max(1)
    }
}

/// Times `runs` far passes; the median one's statistics are kept.
fn timed_far(
    region: &FarRegion,
    pattern: Pattern,
    work: Work,
    order: Option<&[u32]>,
    runs: u32,
    expected: u64,
) -> Timed {
    let mut results: Vec<(f64, SwapStats)> = Vec::new();
    let mut checksum_ok = true;
    for _ in 0..runs {
        let before = region.stats();
        let start = Instant::now();
        let checksum = std::hint::black_box(pass(region.as_slice_of::<u64>(), pattern, work, order));
        let seconds = start.elapsed().as_secs_f64();
        checksum_ok &= checksum == expected;
        results.push((seconds, delta(&before, &region.stats())));
    }
    let samples: Vec<f64> = results.iter().map(|(s, _)| *s).collect();
    let mut by_time = results.clone();
    by_time.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (seconds, stats) = by_time[by_time.len() / 2];
    Timed { seconds, samples, checksum_ok, stats }
}

/// All-local runs and checksum of every pattern × work for one size.
type LocalRuns = Vec<((Pattern, Work), (Vec<f64>, u64))>;

fn local_runs(config: &BenchConfig, array_mib: u64) -> LocalRuns {
    let elements = (array_mib * MIB / 8) as usize;
    let mut data = vec![0u64; elements];
    fill(&mut data);
    let mut out = Vec::new();
    for &pattern in &config.patterns {
        let order = order(pattern, elements, config.seed);
        for &work in &config.works {
            let mut samples = Vec::new();
            let mut checksum = 0;
            for _ in 0..runs_of(config, pattern) {
                let start = Instant::now();
                checksum = std::hint::black_box(pass(&data, pattern, work, order.as_deref()));
                samples.push(start.elapsed().as_secs_f64());
            }
            out.push(((pattern, work), (samples, checksum)));
        }
    }
    out
}

/// The paper's Fig. 20: one [`SwapCase`] per array × local × pattern × work.
pub fn fig20(config: &BenchConfig) -> Result<Vec<SwapCase>, SwapError> {
    let mut cases = Vec::new();
    for &array_mib in &config.array_mib {
        let elements = (array_mib * MIB / 8) as usize;
        let local = local_runs(config, array_mib);
        for &local_mib in &config.local_mib {
            let region = far_array(&config.swap, array_mib, local_mib)?;
            for &pattern in &config.patterns {
                let order = order(pattern, elements, config.seed);
                for &work in &config.works {
                    let Some((_, (samples_all_local, expected))) =
                        local.iter().find(|(key, _)| *key == (pattern, work))
                    else {
                        continue;
                    };
                    let seconds_all_local = median(samples_all_local);
                    let far = timed_far(&region, pattern, work, order.as_deref(), runs_of(config, pattern), *expected);
                    cases.push(SwapCase {
                        array_mib,
                        local_mib,
                        pattern,
                        work,
                        seconds: far.seconds,
                        seconds_all_local,
                        samples: far.samples,
                        samples_all_local: samples_all_local.clone(),
                        overhead: far.seconds / seconds_all_local - 1.0,
                        ns_per_element: seconds_all_local * 1e9 / elements as f64,
                        checksum_ok: far.checksum_ok,
                        handler: config.swap.handler,
                        eviction: config.swap.eviction,
                        faults: far.stats.missing_faults + far.stats.write_protect_faults,
                        regime: regime(&far.stats),
                        stats: far.stats,
                    });
                }
            }
            region.check()?;
        }
    }
    Ok(cases)
}

/// The size pair the comparisons use: 1 GiB over 200 MiB when the config
/// has them, else its largest array over its smallest local memory.
fn comparison_sizes(config: &BenchConfig) -> (u64, u64) {
    let array =
        if config.array_mib.contains(&1024) { 1024 } else { config.array_mib.iter().copied().max().unwrap_or(64) };
    let local =
        if config.local_mib.contains(&200) { 200 } else { config.local_mib.iter().copied().min().unwrap_or(16) };
    (array, local)
}

/// NRU against CLOCK: Fig. 20's `seq` and `block-random` (compute work),
/// and a `hot-cold` workload where a hot set of half the local memory is
/// read again after each cold scan of another half (so a policy that keeps
/// the hot set would fault less).
pub fn compare_eviction(config: &BenchConfig) -> Result<Vec<EvictionCase>, SwapError> {
    let (array_mib, local_mib) = comparison_sizes(config);
    let elements = (array_mib * MIB / 8) as usize;
    let mut out = Vec::new();
    for eviction in [EvictionPolicy::Nru, EvictionPolicy::Clock] {
        let mut swap = config.swap.clone();
        swap.eviction = eviction;
        let region = far_array(&swap, array_mib, local_mib)?;
        for pattern in [Pattern::Seq, Pattern::BlockRandom] {
            let order = order(pattern, elements, config.seed);
            let far = timed_far(&region, pattern, Work::Compute, order.as_deref(), 1, 0);
            out.push(EvictionCase {
                workload: pattern.name().into(),
                eviction,
                array_mib,
                local_mib,
                seconds: far.seconds,
                stats: far.stats,
            });
        }
        // hot-cold: hot = first local/2; cold scans walk the rest, local/2 at a time.
        let data = region.as_slice_of::<u64>();
        let hot = ((local_mib * MIB / 2) / 8) as usize;
        let rounds = ((elements - hot) / hot).clamp(1, 8);
        let before = region.stats();
        let start = Instant::now();
        let mut acc = 0u64;
        for round in 0..rounds {
            acc = work_on(&data[..hot], Work::Bandwidth, acc);
            let cold = hot + round * hot;
            acc = work_on(&data[cold..(cold + hot).min(elements)], Work::Bandwidth, acc);
        }
        std::hint::black_box(acc);
        let seconds = start.elapsed().as_secs_f64();
        out.push(EvictionCase {
            workload: "hot-cold".into(),
            eviction,
            array_mib,
            local_mib,
            seconds,
            stats: delta(&before, &region.stats()),
        });
        region.check()?;
    }
    Ok(out)
}

/// The handler's waiting policies (poll, hybrid 50 µs, hybrid 200 µs,
/// hybrid 2 ms, spin) on `seq` and `block-random` with compute work.
pub fn compare_handlers(config: &BenchConfig) -> Result<Vec<HandlerCase>, SwapError> {
    let (array_mib, local_mib) = comparison_sizes(config);
    let elements = (array_mib * MIB / 8) as usize;
    let policies = [
        HandlerPolicy::Poll,
        HandlerPolicy::Hybrid { spin_us: 50 },
        HandlerPolicy::Hybrid { spin_us: 200 },
        HandlerPolicy::Hybrid { spin_us: 2000 },
        HandlerPolicy::Spin,
    ];
    let mut local_config = config.clone();
    local_config.patterns = vec![Pattern::Seq, Pattern::BlockRandom];
    local_config.works = vec![Work::Compute];
    local_config.repetitions = 1;
    let local = local_runs(&local_config, array_mib);
    let mut out = Vec::new();
    for handler in policies {
        let mut swap = config.swap.clone();
        swap.handler = handler;
        let region = far_array(&swap, array_mib, local_mib)?;
        for pattern in [Pattern::Seq, Pattern::BlockRandom] {
            let order = order(pattern, elements, config.seed);
            let far = timed_far(&region, pattern, Work::Compute, order.as_deref(), 1, 0);
            let seconds_all_local = local
                .iter()
                .find(|(key, _)| *key == (pattern, Work::Compute))
                .map(|(_, (s, _))| median(s))
                .unwrap_or(f64::NAN);
            out.push(HandlerCase {
                handler,
                pattern,
                array_mib,
                local_mib,
                seconds: far.seconds,
                seconds_all_local,
                overhead: far.seconds / seconds_all_local - 1.0,
                regime: regime(&far.stats),
                stats: far.stats,
            });
        }
        region.check()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations() {
        for pattern in [Pattern::BlockRandom, Pattern::PageRandom] {
            let elements = 3 * (1 << 20) / 8 + 17;
            let mut o = order(pattern, elements, 7).expect("random pattern");
            let units = elements.div_ceil(pattern.unit_bytes().expect("unit") / 8);
            assert_eq!(o.len(), units);
            o.sort_unstable();
            assert!(o.iter().enumerate().all(|(i, &u)| i as u32 == u));
        }
        assert!(order(Pattern::Seq, 100, 7).is_none());
    }

    #[test]
    fn every_pattern_reads_every_element_once() {
        let data: Vec<u64> = (0..(2 << 20) / 8 + 5).collect();
        let expected: u64 = data.iter().fold(0u64, |a, &x| a.wrapping_add(x));
        for pattern in Pattern::ALL {
            let o = order(pattern, data.len(), 3);
            assert_eq!(pass(&data, pattern, Work::Bandwidth, o.as_deref()), expected, "{pattern:?}");
        }
    }
}
