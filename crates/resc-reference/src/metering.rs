//! Honest metering (DESIGN.md §9): allocated and used GiB·s per component,
//! compute side and memory side, CPU·s, waste, and a timeline.
//!
//! - Allocated: every physical component's size × the time it was held
//!   (compute slots from start to end of the instance, memory components from
//!   allocation to free).
//! - Used, compute side: the bytes the instance's allocation account holds,
//!   sampled (and its exact peak from the allocator).
//! - Used, memory side: each memory component's logical length, tracked
//!   exactly (every change is an event).

use crate::alloc_meter::AllocationAccount;
use parking_lot::Mutex;
use resc_swap::FarHeap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GIB: f64 = (1u64 << 30) as f64;

/// Which side of the disaggregated system a figure belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Compute components (and the function-centric sandbox).
    Compute,
    /// Memory components.
    Memory,
}

struct ComputeRecord {
    component: String,
    slot_bytes: u64,
    millicores: u32,
    start: f64,
    end: Option<f64>,
    samples: Vec<(f64, u64)>,
    peak_bytes: u64,
    cpu_s: f64,
    account: Option<Arc<AllocationAccount>>,
    /// The instance's far heap while it runs.
    far: Option<FarHeap>,
    /// Bytes swapped out over time (their swap space is metered on the
    /// memory side, as `<component>#swap`).
    swapped_out: Vec<(f64, u64)>,
    swap: SwapUsage,
}

struct PhysicalRecord {
    component: String,
    bytes: u64,
    start: f64,
    end: Option<f64>,
}

#[derive(Default)]
struct Records {
    compute: Vec<ComputeRecord>,
    physical: Vec<PhysicalRecord>,
    memory_len: BTreeMap<String, Vec<(f64, u64)>>,
}

/// Records one invocation's resource use as it happens.
pub struct InvocationMeter {
    t0: Instant,
    records: Mutex<Records>,
}

impl std::fmt::Debug for InvocationMeter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvocationMeter").finish_non_exhaustive()
    }
}

/// A compute instance's record.
#[derive(Debug, Clone, Copy)]
pub struct ComputeTicket(usize);

/// A physical memory component's record.
#[derive(Debug, Clone, Copy)]
pub struct PhysicalTicket(usize);

impl InvocationMeter {
    /// A meter whose clock starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(InvocationMeter { t0: Instant::now(), records: Mutex::new(Records::default()) })
    }

    fn now(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    /// A compute instance starts, holding a slot of `slot_bytes` and `millicores`.
    pub fn compute_started(
        &self,
        component: &str,
        slot_bytes: u64,
        millicores: u32,
        account: Arc<AllocationAccount>,
    ) -> ComputeTicket {
        let now = self.now();
        let mut records = self.records.lock();
        records.compute.push(ComputeRecord {
            component: component.to_owned(),
            slot_bytes,
            millicores,
            start: now,
            end: None,
            samples: vec![(now, account.current_bytes())],
            peak_bytes: 0,
            cpu_s: 0.0,
            account: Some(account),
            far: None,
            swapped_out: Vec::new(),
            swap: SwapUsage::default(),
        });
        ComputeTicket(records.compute.len() - 1)
    }

    /// The instance of `ticket` swaps to `heap` under memory pressure: its
    /// resident far bytes count as used local memory, and its swap activity
    /// is recorded.
    pub fn compute_swaps_to(&self, ticket: ComputeTicket, heap: FarHeap) {
        self.records.lock().compute[ticket.0].far = Some(heap);
    }

    /// The instance of `ticket` runs without a far heap although swap is on
    /// (too many heaps at once): it cannot swap.
    pub fn compute_without_swap(&self, ticket: ComputeTicket) {
        self.records.lock().compute[ticket.0].swap.instances_without_swap = 1;
    }

    /// A compute instance ended after using `cpu` of CPU time.
    pub fn compute_finished(&self, ticket: ComputeTicket, cpu: Duration) {
        let now = self.now();
        // Declared before the lock so that it is dropped after it: dropping
        // the last handle of a heap frees its swap space, which records here.
        let heap;
        let mut records = self.records.lock();
        let record = &mut records.compute[ticket.0];
        heap = record.far.take();
        // A heap that never engaged did nothing worth recording.
        let far = heap.as_ref().filter(|h| h.is_engaged()).map(|h| (h.stats(), h.granule() as u64));
        if let Some(account) = record.account.take() {
            let resident = far.as_ref().map_or(0, |(stats, _)| stats.resident_bytes);
            record.samples.push((now, account.current_bytes() + resident));
            // Local bytes exactly, and local plus far-resident bytes as
            // sampled together: never two peaks of different moments added.
            record.peak_bytes = account.peak_bytes();
        }
        if let Some((stats, chunk)) = far {
            record.swapped_out.push((now, stats.swapped_out_bytes));
            let peak_swapped_out = record.swapped_out.iter().map(|s| s.1).max().unwrap_or(0);
            record.swapped_out.push((now, 0));
            record.swap = SwapUsage::of(&stats, chunk, peak_swapped_out);
        }
        record.end = Some(now);
        record.cpu_s = cpu.as_secs_f64();
    }

    /// A physical memory component of `bytes` was allocated for `component`.
    pub fn physical_allocated(&self, component: &str, bytes: u64) -> PhysicalTicket {
        let now = self.now();
        let mut records = self.records.lock();
        records.physical.push(PhysicalRecord { component: component.to_owned(), bytes, start: now, end: None });
        PhysicalTicket(records.physical.len() - 1)
    }

    /// A physical memory component was freed.
    pub fn physical_freed(&self, ticket: PhysicalTicket) {
        let now = self.now();
        self.records.lock().physical[ticket.0].end = Some(now);
    }

    /// A memory component's logical length changed.
    pub fn memory_len(&self, component: &str, len: u64) {
        let now = self.now();
        self.records.lock().memory_len.entry(component.to_owned()).or_default().push((now, len));
    }

    /// Samples every running compute instance's account.
    pub fn sample(&self) {
        let now = self.now();
        let mut records = self.records.lock();
        for record in records.compute.iter_mut().filter(|r| r.end.is_none()) {
            let far = record.far.as_ref().map(FarHeap::stats);
            if let Some(account) = &record.account {
                let resident = far.as_ref().map_or(0, |s| s.resident_bytes);
                record.samples.push((now, account.current_bytes() + resident));
            }
            if let Some(stats) = far.filter(|s| s.swapped_out_bytes > 0 || !record.swapped_out.is_empty()) {
                record.swapped_out.push((now, stats.swapped_out_bytes));
            }
        }
    }

    /// Closes everything still open at `wall` and summarizes.
    pub fn finish(&self, wall: Duration) -> Usage {
        let end = wall.as_secs_f64();
        let records = self.records.lock();
        summarize(&records, end)
    }
}

/// Samples a meter on a thread of its own until dropped.
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Samples `meter` every `interval`.
    pub fn start(meter: Arc<InvocationMeter>, interval: Duration) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("resc-sampler".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    meter.sample();
                    std::thread::sleep(interval);
                }
            })
            .ok();
        Sampler { stop, thread }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Allocated and used resources of one side, or of one component.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Consumption {
    /// Allocated memory × time held, GiB·s.
    pub allocated_gib_s: f64,
    /// Used memory × time, GiB·s.
    pub used_gib_s: f64,
    /// Allocated CPU × time held, core·s.
    pub cpu_allocated_s: f64,
    /// CPU time used, core·s.
    pub cpu_used_s: f64,
}

impl Consumption {
    /// Allocated but unused memory, GiB·s.
    pub fn waste_gib_s(&self) -> f64 {
        (self.allocated_gib_s - self.used_gib_s).max(0.0)
    }

    fn add(&mut self, other: &Consumption) {
        self.allocated_gib_s += other.allocated_gib_s;
        self.used_gib_s += other.used_gib_s;
        self.cpu_allocated_s += other.cpu_allocated_s;
        self.cpu_used_s += other.cpu_used_s;
    }
}

/// One component's figures over one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentUsage {
    /// The component.
    pub name: String,
    /// Its side.
    pub side: Side,
    /// Compute instances run, or physical memory components allocated.
    pub physical_components: usize,
    /// Seconds its physical components were held, summed.
    pub held_s: f64,
    /// Its consumption.
    pub consumption: Consumption,
    /// Largest measured bytes in use at once (for compute: per instance).
    pub peak_bytes: u64,
    /// Compute only: the slot each instance held.
    pub slot_bytes: Option<u64>,
    /// Compute only: an instance's measured peak exceeded its slot.
    pub over_slot: bool,
    /// Compute only: what its instances swapped (all zero when they fit
    /// their slots).
    pub swap: SwapUsage,
}

/// What a compute component's instances swapped to remote memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SwapUsage {
    /// Instances whose far heap engaged (they outgrew their slot).
    pub instances_swapping: u64,
    /// Instances that got no far heap although swap is on (too many at
    /// once): had they outgrown their slot, they would have run over it.
    pub instances_without_swap: u64,
    /// Chunks brought back from swap space (faults and read-ahead).
    pub swap_ins: u64,
    /// Chunks evicted with dirty pages written to swap space.
    pub swap_outs: u64,
    /// Bytes read from swap space.
    pub bytes_in: u64,
    /// Bytes written to swap space.
    pub bytes_out: u64,
    /// The most swap space one instance held, bytes (whole physical
    /// components; it may also hold copies of chunks back in local memory).
    pub peak_swap_space_bytes: u64,
    /// The most bytes one instance had swapped out at once (as sampled):
    /// with its local peak, its memory footprint.
    pub peak_swapped_out_bytes: u64,
}

impl SwapUsage {
    /// One engaged instance's figures, from its far heap.
    fn of(stats: &resc_swap::SwapStats, chunk: u64, peak_swapped_out: u64) -> SwapUsage {
        SwapUsage {
            instances_swapping: 1,
            instances_without_swap: 0,
            swap_ins: stats.bytes_fetched / chunk.max(1),
            swap_outs: stats.chunks_evicted - stats.clean_evictions.min(stats.chunks_evicted),
            bytes_in: stats.bytes_fetched,
            bytes_out: stats.bytes_written_back,
            peak_swap_space_bytes: stats.swap_space_bytes,
            peak_swapped_out_bytes: peak_swapped_out,
        }
    }

    fn add(&mut self, other: &SwapUsage) {
        self.instances_swapping += other.instances_swapping;
        self.instances_without_swap += other.instances_without_swap;
        self.swap_ins += other.swap_ins;
        self.swap_outs += other.swap_outs;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.peak_swap_space_bytes = self.peak_swap_space_bytes.max(other.peak_swap_space_bytes);
        self.peak_swapped_out_bytes = self.peak_swapped_out_bytes.max(other.peak_swapped_out_bytes);
    }

    /// Swaps in and out: the swap frequency the adjuster looks at.
    pub fn swaps(&self) -> u64 {
        self.swap_ins + self.swap_outs
    }
}

/// A point of the allocated-versus-used timeline.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimelinePoint {
    /// Seconds since the invocation started.
    pub t_s: f64,
    /// Bytes allocated at that time, both sides.
    pub allocated_bytes: u64,
    /// Bytes in use at that time, both sides.
    pub used_bytes: u64,
}

/// Everything measured of one invocation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Invocation wall time, seconds.
    pub wall_s: f64,
    /// Compute side totals.
    pub compute: Consumption,
    /// Memory side totals.
    pub memory: Consumption,
    /// Per component.
    pub components: Vec<ComponentUsage>,
    /// Allocated and used bytes over time.
    pub timeline: Vec<TimelinePoint>,
}

impl Usage {
    /// Both sides together.
    pub fn total(&self) -> Consumption {
        let mut total = self.compute;
        total.add(&self.memory);
        total
    }

    /// The largest compute peak over all compute components.
    pub fn compute_peak_bytes(&self) -> u64 {
        self.components.iter().filter(|c| c.side == Side::Compute).map(|c| c.peak_bytes).max().unwrap_or(0)
    }

    /// The same run as if every compute instance had held `slot_bytes`
    /// (how the function-centric baseline is charged once its size is known).
    pub fn with_compute_slot(&self, slot_bytes: u64) -> Usage {
        let mut usage = self.clone();
        usage.compute.allocated_gib_s = 0.0;
        for component in usage.components.iter_mut().filter(|c| c.side == Side::Compute) {
            component.slot_bytes = Some(slot_bytes);
            component.consumption.allocated_gib_s = slot_bytes as f64 * component.held_s / GIB;
            component.over_slot = component.peak_bytes > slot_bytes;
            usage.compute.allocated_gib_s += component.consumption.allocated_gib_s;
        }
        let old_slot = self.components.iter().find(|c| c.side == Side::Compute).and_then(|c| c.slot_bytes).unwrap_or(0);
        for point in &mut usage.timeline {
            // A function-centric sandbox holds its size for the whole run.
            point.allocated_bytes = point.allocated_bytes.saturating_sub(old_slot) + slot_bytes;
        }
        usage
    }
}

/// ∫ of a step function given as (time, value) changes, over [from, to].
fn integrate_steps(steps: &[(f64, u64)], from: f64, to: f64) -> f64 {
    let mut total = 0.0;
    for (i, &(t, v)) in steps.iter().enumerate() {
        let start = t.max(from);
        let end = steps.get(i + 1).map_or(to, |next| next.0).min(to);
        if end > start {
            total += v as f64 * (end - start);
        }
    }
    total
}

fn value_at(steps: &[(f64, u64)], t: f64) -> u64 {
    steps.iter().take_while(|(at, _)| *at <= t).last().map_or(0, |(_, v)| *v)
}

const TIMELINE_POINTS: usize = 400;

fn summarize(records: &Records, end: f64) -> Usage {
    let mut by_key: BTreeMap<(Side, String), ComponentUsage> = BTreeMap::new();
    fn get<'a>(
        map: &'a mut BTreeMap<(Side, String), ComponentUsage>,
        side: Side,
        name: &str,
    ) -> &'a mut ComponentUsage {
        map.entry((side, name.to_owned())).or_insert_with(|| ComponentUsage {
            name: name.to_owned(),
            side,
            physical_components: 0,
            held_s: 0.0,
            consumption: Consumption::default(),
            peak_bytes: 0,
            slot_bytes: None,
            over_slot: false,
            swap: SwapUsage::default(),
        })
    }
    for r in &records.compute {
        let stop = r.end.unwrap_or(end).min(end);
        let held = (stop - r.start).max(0.0);
        let used = integrate_steps(&r.samples, r.start, stop);
        let peak = r.peak_bytes.max(r.samples.iter().map(|s| s.1).max().unwrap_or(0));
        let c = get(&mut by_key, Side::Compute, &r.component);
        c.physical_components += 1;
        c.held_s += held;
        // An instance that outgrew its slot is charged for what it held.
        c.consumption.allocated_gib_s += r.slot_bytes.max(peak) as f64 * held / GIB;
        c.consumption.used_gib_s += used / GIB;
        c.consumption.cpu_allocated_s += f64::from(r.millicores) / 1000.0 * held;
        c.consumption.cpu_used_s += r.cpu_s;
        c.peak_bytes = c.peak_bytes.max(peak);
        c.slot_bytes = Some(r.slot_bytes);
        c.over_slot |= r.slot_bytes > 0 && peak > r.slot_bytes;
        c.swap.add(&r.swap);
        if !r.swapped_out.is_empty() {
            let swapped = integrate_steps(&r.swapped_out, r.start, stop);
            let swap = get(&mut by_key, Side::Memory, &format!("{}#swap", r.component));
            swap.consumption.used_gib_s += swapped / GIB;
            swap.peak_bytes = swap.peak_bytes.max(r.swapped_out.iter().map(|s| s.1).max().unwrap_or(0));
        }
    }
    for r in &records.physical {
        let stop = r.end.unwrap_or(end).min(end);
        let held = (stop - r.start).max(0.0);
        let c = get(&mut by_key, Side::Memory, &r.component);
        c.physical_components += 1;
        c.held_s += held;
        c.consumption.allocated_gib_s += r.bytes as f64 * held / GIB;
    }
    for (name, steps) in &records.memory_len {
        let c = get(&mut by_key, Side::Memory, name);
        c.consumption.used_gib_s += integrate_steps(steps, 0.0, end) / GIB;
        c.peak_bytes = c.peak_bytes.max(steps.iter().map(|s| s.1).max().unwrap_or(0));
    }
    let components: Vec<ComponentUsage> = by_key.into_values().collect();
    let mut compute = Consumption::default();
    let mut memory = Consumption::default();
    for c in &components {
        match c.side {
            Side::Compute => compute.add(&c.consumption),
            Side::Memory => memory.add(&c.consumption),
        }
    }
    Usage { wall_s: end, compute, memory, components, timeline: timeline(records, end) }
}

fn timeline(records: &Records, end: f64) -> Vec<TimelinePoint> {
    (0..=TIMELINE_POINTS)
        .map(|i| {
            let t = end * i as f64 / TIMELINE_POINTS as f64;
            let live = |start: f64, stop: Option<f64>| start <= t && stop.is_none_or(|s| t < s);
            let mut allocated = 0u64;
            let mut used = 0u64;
            for r in records.compute.iter().filter(|r| live(r.start, r.end)) {
                allocated += r.slot_bytes;
                used += value_at(&r.samples, t);
            }
            for r in records.physical.iter().filter(|r| live(r.start, r.end)) {
                allocated += r.bytes;
            }
            for steps in records.memory_len.values() {
                used += value_at(steps, t);
            }
            TimelinePoint { t_s: t, allocated_bytes: allocated, used_bytes: used }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integrates_a_step_function() {
        let steps = [(0.0, 10), (1.0, 20), (3.0, 0)];
        assert!((integrate_steps(&steps, 0.0, 4.0) - 50.0).abs() < 1e-9);
        assert!((integrate_steps(&steps, 0.5, 2.0) - 25.0).abs() < 1e-9);
        assert_eq!(value_at(&steps, 2.0), 20);
        assert_eq!(value_at(&steps, -1.0), 0);
    }
}
