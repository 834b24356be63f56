//! The pager: the state of every chunk, the service of missing and
//! write-protect faults, read-ahead, eviction and write-back, and the handler
//! thread that drives them.
//!
//! # The protocol (what keeps every byte a program can observe)
//!
//! A chunk is either *resident* (all its pages present, except perhaps the
//! first page of a read-ahead marker chunk, see `HOLE`) or not (all
//! missing), and only the pager changes that, under the state lock.
//!
//! - **In**: a missing chunk is filled with `UFFDIO_COPY` from its swap-space
//!   copy, or with zeros when it has none (never written back, or discarded).
//!   The kernel refuses to overwrite a present page, so a fill can never
//!   replace bytes a program wrote.
//! - **Dirty tracking**: pages come in write-protected, unless they are
//!   brought in for a writer (below). The first write to such a page stops
//!   in a write-protect fault; the pager records the page as dirty and lifts
//!   the protection (the whole chunk's on the second dirty page of a chunk:
//!   a chunk being written sequentially costs two faults, not one per page).
//!   The faulting page of a missing write fault comes in writable and dirty.
//!   A write fault just after a wholly dirty chunk marks a dense sequential
//!   writer: its chunk, and the chunks read ahead for it, come in writable
//!   and wholly dirty. So every page written since the chunk came in is in
//!   the dirty bitmap, or the chunk is writable and wholly dirty. A marker
//!   hole is never dirty (writing it faults as missing first) and is never
//!   read by a write-back.
//! - **Out**: to evict a chunk with dirty pages, the pager first
//!   write-protects the whole chunk (from then on writers block), then sends
//!   the dirty pages to swap space, and only once that succeeded drops the
//!   pages (`MADV_DONTNEED`). A clean chunk is dropped at once. A writer that
//!   blocked meanwhile retries after the drop, faults as missing, and gets
//!   the chunk back with the bytes written back.
//! - **Discard** (memory freed by a far heap): the chunk's pages are dropped
//!   without write-back and it reads as zeros from then on; its stale swap
//!   copy is overwritten whole at the next write-back.
//!
//! A failed fetch fills the chunk with zeros so the faulting thread can go on,
//! and poisons the region; a failed write-back keeps the chunk resident
//! (over budget rather than lose data) and poisons the region.

use crate::config::{EvictionPolicy, HandlerPolicy, SwapConfig};
use crate::error::{FailedOp, SwapError};
use crate::geometry::{runs, Geometry};
use crate::readahead::{StreamRef, Streams};
use crate::stats::{add, set, Counters};
use crate::sys::{self, CopyError, Doorbell, Fault, Mapping, Userfault};
use parking_lot::Mutex;
use resc_core::pool::MemoryPool;
use resc_core::transport::{RemoteOp, RemoteRegion, Transport};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Chunk flag: all pages present.
const RESIDENT: u8 = 1;
/// Chunk flag: referenced since the reference bits were last cleared.
const REFERENCED: u8 = 2;
/// Chunk flag: no page is write-protected (the chunk counts as wholly dirty).
const WRITABLE: u8 = 4;
/// Chunk flag: resident except its first page, left missing as a read-ahead
/// marker (the program's fault on it is the cue for the next window, and
/// costs only one page).
const HOLE: u8 = 8;

/// Where a chunk's bytes are when it is not resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Remote {
    /// Never written back: zeros (a fresh segment reads as zeros).
    #[default]
    Zero,
    /// Swap space holds the chunk.
    Valid,
    /// Discarded: the chunk reads as zeros, but swap space may hold old bytes.
    Stale,
}

#[derive(Debug, Clone, Copy, Default)]
struct Chunk {
    /// Dirty pages, one bit each.
    dirty: u64,
    /// Generation: bumped at every fill, so CLOCK entries of an earlier
    /// residency are recognised as stale.
    generation: u32,
    /// Position in the NRU list while resident.
    slot: u32,
    flags: u8,
    remote: Remote,
}

impl Chunk {
    fn resident(&self) -> bool {
        self.flags & RESIDENT != 0
    }

    /// The pages that are present (all, or all but a marker hole).
    fn present(&self, full: u64) -> u64 {
        if self.flags & HOLE != 0 {
            full & !1
        } else {
            full
        }
    }

    fn class(&self) -> u8 {
        (u8::from(self.flags & REFERENCED != 0) << 1) | u8::from(self.dirty != 0)
    }
}

/// Chunks sampled per NRU decision.
const NRU_SAMPLES: usize = 8;
/// Chunks evicted per background step.
const BACKGROUND_BATCH: usize = 16;
/// A predicted marker fault this late (ns) is no longer waited for.
const STALE_NS: u64 = 2_000_000;
/// How early the handler wakes before a predicted fault (at least; more
/// when the pace varies).
const WAKE_LEAD: Duration = Duration::from_micros(150);
/// The most chunks evicted at once when a fill needs room.
const SYNC_BATCH: usize = 16;

/// Which chunks are resident, in the form the eviction policy needs.
#[derive(Debug)]
enum Residents {
    /// Chunks in the order they came in, with their generation.
    Clock(VecDeque<(u32, u32)>),
    /// An unordered list (each resident chunk knows its slot) for sampling.
    Nru { list: Vec<u32>, rng: u64, since_clear: usize },
}

/// Everything the handler thread and the region's owners share.
pub(crate) struct Shared {
    pub(crate) geometry: Geometry,
    pub(crate) config: SwapConfig,
    pub(crate) mapping: Mapping,
    pub(crate) uffd: Userfault,
    pub(crate) doorbell: Doorbell,
    pub(crate) stop: AtomicBool,
    pub(crate) counters: Counters,
    pub(crate) poisoned: AtomicBool,
    pub(crate) first_failure: Mutex<Option<SwapError>>,
    pub(crate) pager: Mutex<Pager>,
    pub(crate) pool: Arc<dyn MemoryPool>,
    pub(crate) transport: Arc<dyn Transport>,
}

impl Shared {
    /// Records a failure: the region is poisoned from now on.
    pub(crate) fn fail(&self, error: SwapError) {
        add(&self.counters.backing_failures, 1);
        self.poisoned.store(true, Ordering::SeqCst);
        let mut first = self.first_failure.lock();
        if first.is_none() {
            *first = Some(error);
        }
    }

    /// The first failure, if the region is poisoned.
    pub(crate) fn check(&self) -> Result<(), SwapError> {
        if !self.poisoned.load(Ordering::SeqCst) {
            return Ok(());
        }
        Err(self.first_failure.lock().clone().unwrap_or(SwapError::BackingFailed {
            during: FailedOp::Handler,
            offset: 0,
            reason: "unknown".into(),
        }))
    }
}

/// The pager's state, behind `Shared::pager`.
pub(crate) struct Pager {
    chunks: Vec<Chunk>,
    residents: Residents,
    resident: usize,
    swapped_out: usize,
    budget: usize,
    free_target: usize,
    streams: Streams,
    /// The pace of all missing faults, and of those that start a stream
    /// (random blocks read at a steady rate).
    pace: Pace,
    starts: Pace,
    epoch: Instant,
    /// Chunks to read ahead: (chunk, writable, stream, leave a marker hole).
    read_ahead: VecDeque<(usize, bool, StreamRef, bool)>,
    segments: Vec<Option<RemoteRegion>>,
    staging: Vec<u8>,
    zeros: Vec<u8>,
}

/// Sizes in chunks derived from a configuration.
pub(crate) struct Limits {
    pub(crate) budget: usize,
    pub(crate) free_target: usize,
    pub(crate) max_window: usize,
    pub(crate) initial_window: usize,
}

impl Limits {
    /// Checks the configuration against the geometry.
    pub(crate) fn new(config: &SwapConfig, geometry: &Geometry) -> Result<Limits, SwapError> {
        let chunk = geometry.chunk() as u64;
        let budget = usize::try_from(config.local_budget / chunk).unwrap_or(usize::MAX);
        if budget < 4 {
            return Err(SwapError::InvalidConfig(format!(
                "the local budget ({} B) must hold at least four chunks of {chunk} B",
                config.local_budget
            )));
        }
        let quarter = budget / 4;
        let max_window = (config.max_read_ahead / geometry.chunk()).min(quarter);
        let initial_window = (config.initial_read_ahead / geometry.chunk()).clamp(1, max_window.max(1)).min(max_window);
        let free_target = usize::try_from(config.free_target / chunk).unwrap_or(usize::MAX).min(quarter);
        Ok(Limits { budget, free_target, max_window, initial_window })
    }
}

impl Pager {
    /// Takes new limits; an over-budget pager evicts at the next fault.
    /// Never allocates (it may run inside the global allocator).
    pub(crate) fn set_limits(&mut self, limits: &Limits) {
        self.budget = limits.budget;
        self.free_target = limits.free_target;
        self.streams.set_windows(limits.initial_window, limits.max_window);
    }

    pub(crate) fn new(geometry: &Geometry, limits: &Limits, policy: EvictionPolicy) -> Pager {
        let residents = match policy {
            EvictionPolicy::Clock => Residents::Clock(VecDeque::with_capacity(limits.budget + 1)),
            EvictionPolicy::Nru => Residents::Nru {
                list: Vec::with_capacity(limits.budget + 1),
                rng: 0x9e37_79b9_7f4a_7c15,
                since_clear: 0,
            },
        };
        let batch = geometry.chunk();
        Pager {
            chunks: vec![Chunk::default(); geometry.chunks()],
            residents,
            resident: 0,
            swapped_out: 0,
            budget: limits.budget,
            free_target: limits.free_target,
            streams: Streams::new(limits.initial_window, limits.max_window),
            pace: Pace::default(),
            starts: Pace::default(),
            epoch: Instant::now(),
            read_ahead: VecDeque::new(),
            segments: vec![None; geometry.segments()],
            staging: vec![0; batch],
            zeros: vec![0; batch],
        }
    }

    /// Serves one fault.
    pub(crate) fn on_fault(&mut self, sh: &Shared, fault: Fault) {
        let g = &sh.geometry;
        let Some(offset) = fault.addr.checked_sub(sh.mapping.base() as usize) else { return };
        let Some(c) = g.chunk_of(offset) else { return };
        let page = g.page_in_chunk(offset);
        if fault.write_protect {
            add(&sh.counters.write_protect_faults, 1);
            if self.chunks[c].resident() {
                self.mark_written(sh, c, page, true);
                return;
            }
            // Evicted since the write blocked: serve it as a missing write.
        } else {
            add(&sh.counters.missing_faults, 1);
        }
        if self.chunks[c].resident() {
            if self.chunks[c].flags & HOLE != 0 && page == 0 {
                self.fill_hole(sh, c, fault.write);
                let now = self.epoch.elapsed().as_nanos() as u64;
                self.pace.record(now);
                let dense = fault.write && c > 0 && self.chunks[c - 1].flags & WRITABLE != 0;
                self.follow(sh, c, now, dense);
            } else {
                self.repair_page(sh, c, page);
            }
            return;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        self.pace.record(now);
        // A write just after a chunk written densely (wholly writable): a
        // sequential writer. Bring the chunk, and the chunks read ahead for
        // it, in writable: no write-protect fault per chunk.
        let dense = fault.write && c > 0 && self.chunks[c - 1].flags & WRITABLE != 0;
        self.ensure_room(sh, 1);
        let filled = self.fill(sh, c, dense, !fault.write, false);
        if filled && fault.write && !dense {
            self.mark_written(sh, c, page, false);
        }
        // Whatever happened, the faulting thread must not sleep forever.
        let chunk_addr = sh.mapping.at(g.chunk_start(c));
        if fault.write || !filled {
            if let Err(e) = sh.uffd.wake(chunk_addr, g.chunk()) {
                sh.fail(SwapError::BackingFailed {
                    during: FailedOp::Handler,
                    offset: offset as u64,
                    reason: e.to_string(),
                });
            }
        }
        self.follow(sh, c, now, dense);
    }

    /// Feeds a fault on chunk `c` to the stream detector and queues the
    /// read-ahead it plans.
    fn follow(&mut self, sh: &Shared, c: usize, now: u64, writable: bool) {
        let plan = self.streams.on_fault(c, sh.geometry.chunks(), now);
        if self.streams.started() {
            self.starts.record(now);
        }
        let Some(plan) = plan else { return };
        if plan.hit {
            add(&sh.counters.read_ahead_hits, 1);
        }
        let holes = sh.geometry.pages_per_chunk() >= 2;
        for r in plan.fetch.clone() {
            let hole = Some(r) == plan.marker;
            if hole && !holes {
                continue;
            }
            self.read_ahead.push_back((r, writable, plan.stream, hole));
        }
    }

    /// Serves a fault on the marker hole (page 0) of resident chunk `c`.
    fn fill_hole(&mut self, sh: &Shared, c: usize, write: bool) {
        let g = sh.geometry;
        let writable = self.chunks[c].flags & WRITABLE != 0;
        let start = g.chunk_start(c);
        let result = self.fetch_pages(sh, c, 0, 1, writable, !write);
        if let Err(reason) = result {
            sh.fail(SwapError::BackingFailed { during: FailedOp::Handler, offset: start as u64, reason });
            let _ = sh.uffd.wake(sh.mapping.at(start), g.page());
            return;
        }
        let chunk = &mut self.chunks[c];
        chunk.flags = (chunk.flags & !HOLE) | REFERENCED;
        if writable {
            chunk.dirty |= 1;
        } else if write {
            self.mark_written(sh, c, 0, false);
        }
        if write {
            let _ = sh.uffd.wake(sh.mapping.at(start), g.page());
        }
    }

    /// A missing fault on a resident chunk: an event that raced with the
    /// fill that served it (the page is present: wake the thread), or a page
    /// the program dropped itself (`madvise`): it reads as zeros, as Linux
    /// gives for dropped private anonymous memory.
    fn repair_page(&mut self, sh: &Shared, c: usize, page: u32) {
        let g = &sh.geometry;
        let addr = sh.mapping.at(g.page_start(c, page));
        let protect = self.chunks[c].flags & WRITABLE == 0;
        // SAFETY: one page of our registered mapping, page-aligned; the fill
        // only succeeds if the page is missing, whose content is then zeros.
        let copied = unsafe { sh.uffd.copy(addr, &self.zeros[..g.page()], protect, true) };
        match copied {
            Ok(_) => add(&sh.counters.zero_fills, 1),
            Err(_) => {
                let _ = sh.uffd.wake(addr, g.page());
            }
        }
    }

    /// Records a write to `page` of resident chunk `c` and lifts the write
    /// protection (the page's, or the whole chunk's when it already has a
    /// dirty page).
    fn mark_written(&mut self, sh: &Shared, c: usize, page: u32, wake: bool) {
        let g = &sh.geometry;
        let chunk = &mut self.chunks[c];
        chunk.flags |= REFERENCED;
        let (start, len) = if chunk.flags & WRITABLE != 0 {
            // Already writable: a stale event. Lifting the page's protection
            // again is harmless and wakes the writer.
            (g.page_start(c, page), g.page())
        } else if chunk.dirty != 0 {
            chunk.dirty = chunk.present(g.full_mask());
            chunk.flags |= WRITABLE;
            (g.chunk_start(c), g.chunk())
        } else {
            chunk.dirty |= 1 << page;
            (g.page_start(c, page), g.page())
        };
        if let Err(e) = sh.uffd.unprotect(sh.mapping.at(start), len, wake) {
            sh.fail(SwapError::BackingFailed {
                during: FailedOp::Handler,
                offset: start as u64,
                reason: e.to_string(),
            });
        }
    }

    /// One step of background work: a chunk of read-ahead, or evicting
    /// towards the free target. Returns whether there was anything to do.
    pub(crate) fn background(&mut self, sh: &Shared) -> bool {
        while let Some((c, writable, stream, hole)) = self.read_ahead.pop_front() {
            if self.chunks[c].resident() || !self.streams.wanted(stream, c, hole) {
                continue;
            }
            // A discarded chunk's swap copy is stale: no hole there (its
            // write-back must cover every page); the marker is then lost and
            // the stream goes on from the end of its window.
            let hole = hole && self.chunks[c].remote != Remote::Stale;
            self.ensure_room(sh, 1);
            if self.fill(sh, c, writable, true, hole) {
                add(&sh.counters.read_ahead_chunks, 1);
            }
            return true;
        }
        if self.resident + self.free_target > self.budget {
            let excess = self.resident + self.free_target - self.budget;
            return self.evict(sh, excess.min(BACKGROUND_BATCH)) > 0;
        }
        false
    }

    /// Evicts until `n` more chunks fit in the budget (or nothing more can
    /// go). When it has to evict at all it evicts down to the free target in
    /// batches, so that the next fills need none: one `madvise` and one
    /// write-protect per contiguous run, not per chunk.
    fn ensure_room(&mut self, sh: &Shared, n: usize) {
        while self.resident + n > self.budget {
            let want = (self.resident + n + self.free_target - self.budget).clamp(1, SYNC_BATCH);
            if self.evict(sh, want) == 0 {
                break;
            }
        }
    }

    /// Fills missing chunk `c` (from swap space or with zeros) and makes it
    /// resident: write-protected, or writable and wholly dirty. Returns
    /// whether the pages are now present.
    fn fill(&mut self, sh: &Shared, c: usize, writable: bool, wake: bool, hole: bool) -> bool {
        let started = Instant::now();
        let filled = self.fill_inner(sh, c, writable, wake, hole);
        add(&sh.counters.fill_ns, started.elapsed().as_nanos() as u64);
        filled
    }

    fn fill_inner(&mut self, sh: &Shared, c: usize, writable: bool, wake: bool, hole: bool) -> bool {
        let g = sh.geometry;
        let first = u32::from(hole);
        let start = g.chunk_start(c);
        let result = self.fetch_pages(sh, c, first, g.pages_per_chunk() - first, writable, wake);
        if let Err(reason) = result {
            sh.fail(SwapError::BackingFailed { during: FailedOp::Handler, offset: start as u64, reason });
            return false;
        }
        let full = g.full_mask();
        let remote = self.chunks[c].remote;
        let chunk = &mut self.chunks[c];
        chunk.flags = RESIDENT | REFERENCED | if writable { WRITABLE } else { 0 } | if hole { HOLE } else { 0 };
        chunk.dirty = if writable { chunk.present(full) } else { 0 };
        chunk.generation = chunk.generation.wrapping_add(1);
        if remote == Remote::Valid {
            self.swapped_out = self.swapped_out.saturating_sub(1);
        }
        let generation = chunk.generation;
        self.push_resident(c, generation);
        self.resident += 1;
        self.publish(sh);
        true
    }

    /// Fills `count` missing pages of chunk `c` from page `first`: from swap
    /// space when the chunk has a copy there, else with zeros. A failed read
    /// fills zeros and poisons the region (see the module documentation).
    fn fetch_pages(
        &mut self,
        sh: &Shared,
        c: usize,
        first: u32,
        count: u32,
        writable: bool,
        wake: bool,
    ) -> Result<(), String> {
        let g = sh.geometry;
        let at = first as usize * g.page();
        let len = count as usize * g.page();
        let start = g.chunk_start(c);
        let dst = sh.mapping.at(start + at);
        let protect = !writable;
        if self.chunks[c].remote != Remote::Valid {
            add(&sh.counters.zero_fills, 1);
            return self.copy_all(sh, dst, None, len, protect, wake);
        }
        let (segment, offset) = g.remote(c);
        let Some(region) = self.segments[segment] else {
            sh.fail(SwapError::BackingFailed {
                during: FailedOp::Fetch,
                offset: start as u64,
                reason: "the chunk's swap segment is gone".into(),
            });
            return self.copy_all(sh, dst, None, len, protect, wake);
        };
        add(&sh.counters.bytes_fetched, len as u64);
        let mut lent_result: Option<Result<(), String>> = None;
        let lent = {
            let uffd = &sh.uffd;
            let mut fill_from = |bytes: &[u8]| {
                lent_result = Some(copy_fully(uffd, dst, bytes, protect, wake, g.page()));
            };
            sh.transport.lend(&region, offset + at as u64, len, &mut fill_from)
        };
        match lent {
            Ok(true) => lent_result.unwrap_or_else(|| Err("the transport lent no bytes".into())),
            Ok(false) => {
                let mut staging = std::mem::take(&mut self.staging);
                let result = match sh.transport.read(&region, offset + at as u64, &mut staging[..len]) {
                    Ok(()) => self.copy_all(sh, dst, Some(&staging[..len]), len, protect, wake),
                    Err(e) => {
                        sh.fail(SwapError::transport(FailedOp::Fetch, start as u64, &e));
                        self.copy_all(sh, dst, None, len, protect, wake)
                    }
                };
                self.staging = staging;
                result
            }
            Err(e) => {
                sh.fail(SwapError::transport(FailedOp::Fetch, start as u64, &e));
                self.copy_all(sh, dst, None, len, protect, wake)
            }
        }
    }

    /// Copies `src` (`len` zeros when `None`) into the missing pages at `dst`.
    fn copy_all(
        &self,
        sh: &Shared,
        dst: *mut u8,
        src: Option<&[u8]>,
        len: usize,
        protect: bool,
        wake: bool,
    ) -> Result<(), String> {
        let src = src.unwrap_or(&self.zeros[..len]);
        copy_fully(&sh.uffd, dst, src, protect, wake, sh.geometry.page())
    }

    fn push_resident(&mut self, c: usize, generation: u32) {
        match &mut self.residents {
            Residents::Clock(queue) => queue.push_back((c as u32, generation)),
            Residents::Nru { list, .. } => {
                self.chunks[c].slot = list.len() as u32;
                list.push(c as u32);
            }
        }
    }

    fn remove_resident(&mut self, c: usize) {
        // CLOCK entries go stale by themselves (the chunk is not resident, or
        // its generation moved on).
        if let Residents::Nru { list, .. } = &mut self.residents {
            let slot = self.chunks[c].slot as usize;
            if list.get(slot) == Some(&(c as u32)) {
                list.swap_remove(slot);
                if let Some(&moved) = list.get(slot) {
                    self.chunks[moved as usize].slot = slot as u32;
                }
            }
        }
    }

    /// Picks the next victim and takes it out of the policy's structure.
    fn pick_victim(&mut self) -> Option<usize> {
        let budget = self.budget;
        match &mut self.residents {
            Residents::Clock(queue) => {
                let mut rounds = 2 * queue.len() + 1;
                while rounds > 0 {
                    rounds -= 1;
                    let (c, generation) = queue.pop_front()?;
                    let chunk = &mut self.chunks[c as usize];
                    if !chunk.resident() || chunk.generation != generation {
                        continue;
                    }
                    if chunk.flags & REFERENCED != 0 {
                        chunk.flags &= !REFERENCED;
                        queue.push_back((c, generation));
                        continue;
                    }
                    return Some(c as usize);
                }
                None
            }
            Residents::Nru { list, rng, since_clear } => {
                if list.is_empty() {
                    return None;
                }
                let mut best: Option<(u8, usize)> = None;
                for _ in 0..NRU_SAMPLES.min(list.len()) {
                    let slot = (xorshift(rng) % list.len() as u64) as usize;
                    let class = self.chunks[list[slot] as usize].class();
                    if best.is_none_or(|(b, _)| class < b) {
                        best = Some((class, slot));
                    }
                }
                let (_, slot) = best?;
                let c = list.swap_remove(slot) as usize;
                if let Some(&moved) = list.get(slot) {
                    self.chunks[moved as usize].slot = slot as u32;
                }
                *since_clear += 1;
                if *since_clear >= (budget / 2).max(1) {
                    *since_clear = 0;
                    for &r in list.iter() {
                        self.chunks[r as usize].flags &= !REFERENCED;
                    }
                }
                Some(c)
            }
        }
    }

    /// Evicts up to `n` chunks; returns how many went.
    fn evict(&mut self, sh: &Shared, n: usize) -> usize {
        let started = Instant::now();
        let gone = self.evict_inner(sh, n);
        add(&sh.counters.evict_ns, started.elapsed().as_nanos() as u64);
        gone
    }

    fn evict_inner(&mut self, sh: &Shared, n: usize) -> usize {
        let g = sh.geometry;
        let mut victims: Vec<usize> = Vec::with_capacity(n);
        while victims.len() < n {
            let Some(c) = self.pick_victim() else { break };
            victims.push(c);
        }
        if victims.is_empty() {
            return 0;
        }
        victims.sort_unstable();
        // 1. Stop writers: write-protect every victim with writable pages,
        //    one ioctl per contiguous run.
        let writable = |chunk: &Chunk| chunk.dirty != 0 || chunk.flags & WRITABLE != 0;
        let mut protected = vec![true; victims.len()];
        for run in runs_where(&victims, |c| writable(&self.chunks[c])) {
            let start = g.chunk_start(victims[run.start]);
            let len = run.len() * g.chunk();
            match sh.uffd.write_protect(sh.mapping.at(start), len) {
                Ok(()) => {
                    for &c in &victims[run.clone()] {
                        self.chunks[c].flags &= !WRITABLE;
                    }
                }
                Err(e) => {
                    sh.fail(SwapError::BackingFailed {
                        during: FailedOp::Handler,
                        offset: start as u64,
                        reason: e.to_string(),
                    });
                    protected[run].fill(false);
                }
            }
        }
        // 2. Save the dirty pages; 3. drop what is safe to drop.
        let mut gone: Vec<usize> = Vec::with_capacity(victims.len());
        let mut clean = 0;
        for (i, &c) in victims.iter().enumerate() {
            let saved = if protected[i] { self.write_back(sh, c) } else { None };
            match saved {
                Some(wrote) => {
                    clean += u64::from(!wrote);
                    gone.push(c);
                }
                None => {
                    let generation = self.chunks[c].generation;
                    self.push_resident(c, generation);
                }
            }
        }
        if gone.is_empty() {
            return 0;
        }
        self.drop_chunks(sh, &gone);
        for &c in &gone {
            let chunk = &mut self.chunks[c];
            chunk.flags = 0;
            chunk.dirty = 0;
            if chunk.remote == Remote::Valid {
                self.swapped_out += 1;
            }
        }
        self.resident -= gone.len();
        add(&sh.counters.chunks_evicted, gone.len() as u64);
        add(&sh.counters.clean_evictions, clean);
        self.publish(sh);
        gone.len()
    }

    /// Saves write-protected chunk `c`'s dirty pages to swap space (all of
    /// them when its swap copy is stale). Returns whether anything was
    /// written, or `None` (and poisons the region) when that failed: the
    /// chunk must then stay.
    fn write_back(&mut self, sh: &Shared, c: usize) -> Option<bool> {
        let g = &sh.geometry;
        let chunk = self.chunks[c];
        let whole = if chunk.remote == Remote::Stale { g.full_mask() } else { chunk.dirty };
        // A marker hole is missing: never read it (it was never written).
        let mask = whole & chunk.present(g.full_mask());
        if mask == 0 {
            return Some(false);
        }
        let start = g.chunk_start(c);
        let (segment, offset) = g.remote(c);
        let region = self.segment(sh, segment, start)?;
        let page = g.page();
        let mut ops: Vec<RemoteOp<'_>> = Vec::new();
        let mut pages = 0u64;
        for (first, count) in runs(mask) {
            let at = first as usize * page;
            let len = count as usize * page;
            // SAFETY: the pages are resident (the chunk is) and
            // write-protected (`evict` did it), so no program thread writes
            // them while the transport reads them; the slice ends with `ops`.
            let data = unsafe { sh.mapping.bytes(start + at, len) };
            ops.push(RemoteOp::Write { region, offset: offset + at as u64, data });
            pages += u64::from(count);
        }
        if let Err(e) = sh.transport.execute(&mut ops) {
            sh.fail(SwapError::transport(FailedOp::WriteBack, start as u64, &e.error));
            return None;
        }
        add(&sh.counters.pages_written_back, pages);
        add(&sh.counters.bytes_written_back, pages * page as u64);
        let chunk = &mut self.chunks[c];
        chunk.remote = Remote::Valid;
        chunk.dirty = 0;
        Some(true)
    }

    /// The swap segment `index`, allocated from the pool on first use.
    fn segment(&mut self, sh: &Shared, index: usize, at: usize) -> Option<RemoteRegion> {
        if let Some(region) = self.segments[index] {
            return Some(region);
        }
        match sh.pool.allocate(sh.geometry.segment() as u64) {
            Ok(region) => {
                self.segments[index] = Some(region);
                add(&sh.counters.swap_components, 1);
                add(&sh.counters.swap_space_bytes, region.len);
                Some(region)
            }
            Err(e) => {
                sh.fail(SwapError::pool(FailedOp::Allocate, at as u64, &e));
                None
            }
        }
    }

    /// Drops the pages of `chunks` (sorted), one `madvise` per contiguous run.
    fn drop_chunks(&self, sh: &Shared, chunks: &[usize]) {
        let g = &sh.geometry;
        let mut i = 0;
        while i < chunks.len() {
            let mut j = i + 1;
            while j < chunks.len() && chunks[j] == chunks[j - 1] + 1 {
                j += 1;
            }
            let start = g.chunk_start(chunks[i]);
            let len = (j - i) * g.chunk();
            // SAFETY: the chunks are whole chunks of the region whose bytes
            // are in swap space (written back above, write-protected since)
            // or were never written (clean), or are being discarded by their
            // owner: the protocol in the module documentation.
            if let Err(e) = unsafe { sh.mapping.discard(start, len) } {
                sh.fail(SwapError::BackingFailed {
                    during: FailedOp::Handler,
                    offset: start as u64,
                    reason: e.to_string(),
                });
            }
            i = j;
        }
    }

    /// Discards the chunks wholly inside `[offset, offset + len)`: they read
    /// as zeros from now on, and nothing of them is written back.
    ///
    /// The caller guarantees that no program thread uses those bytes any
    /// more (they were freed).
    pub(crate) fn discard(&mut self, sh: &Shared, offset: usize, len: usize) {
        let range = sh.geometry.chunks_within(offset, len);
        let mut dropped = Vec::new();
        for c in range {
            let chunk = self.chunks[c];
            if chunk.resident() {
                self.remove_resident(c);
                self.resident -= 1;
                dropped.push(c);
            } else if chunk.remote == Remote::Valid {
                self.swapped_out = self.swapped_out.saturating_sub(1);
            }
            let chunk = &mut self.chunks[c];
            chunk.flags = 0;
            chunk.dirty = 0;
            if chunk.remote != Remote::Zero {
                chunk.remote = Remote::Stale;
            }
        }
        self.drop_chunks(sh, &dropped);
        self.publish(sh);
    }

    /// Frees every swap segment (when the region goes away).
    pub(crate) fn free_swap(&mut self, sh: &Shared) {
        for segment in self.segments.iter_mut() {
            if let Some(region) = segment.take() {
                let _ = sh.pool.free(&region);
            }
        }
        set(&sh.counters.swap_space_bytes, 0);
        set(&sh.counters.swap_components, 0);
    }

    /// When the next fault is expected, if faults come at a steady pace,
    /// and how far off the prediction may be (the handler is awake from
    /// `due - slack` to `due + slack`).
    pub(crate) fn next_due(&self) -> Option<(Instant, Duration)> {
        let now = self.epoch.elapsed().as_nanos() as u64;
        let lead = WAKE_LEAD.as_nanos() as u64;
        let (due, slack) = [
            self.streams.next_due(now, STALE_NS).map(|due| (due, lead)),
            self.pace.next_due(now, STALE_NS).map(|(due, dev)| (due, lead.max(2 * dev))),
            self.starts.next_due(now, STALE_NS).map(|(due, dev)| (due, lead.max(2 * dev))),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|&(due, slack)| due.saturating_sub(slack))?;
        Some((self.epoch + Duration::from_nanos(due), Duration::from_nanos(slack)))
    }

    /// Updates the gauges.
    fn publish(&self, sh: &Shared) {
        let chunk = sh.geometry.chunk() as u64;
        let resident = self.resident as u64 * chunk;
        set(&sh.counters.resident_bytes, resident);
        sh.counters.peak_resident_bytes.fetch_max(resident, Ordering::Relaxed);
        set(&sh.counters.swapped_out_bytes, self.swapped_out as u64 * chunk);
    }
}

/// Copies `src` into missing pages at `dst` with `UFFDIO_COPY`, retrying
/// partial copies and, when some page is already present, going page by page
/// around it.
fn copy_fully(
    uffd: &Userfault,
    dst: *mut u8,
    src: &[u8],
    protect: bool,
    wake: bool,
    page: usize,
) -> Result<(), String> {
    let mut done = 0;
    while done < src.len() {
        // SAFETY: `dst .. dst + src.len()` is a missing chunk of the
        // registered mapping (the caller, under the pager lock, found it not
        // resident), and `src` holds its bytes: the pager's protocol.
        let copied = unsafe { uffd.copy(dst.wrapping_add(done), &src[done..], protect, wake) };
        match copied {
            Ok(0) => return Err("UFFDIO_COPY made no progress".into()),
            Ok(n) => done += n,
            Err(CopyError::Exists) => {
                // Some page is present already: fill the others one by one.
                while done < src.len() {
                    let end = done + page;
                    // SAFETY: as above, one page.
                    match unsafe { uffd.copy(dst.wrapping_add(done), &src[done..end], protect, wake) } {
                        Ok(_) | Err(CopyError::Exists) => done = end,
                        Err(CopyError::Os(errno)) => return Err(format!("UFFDIO_COPY failed: errno {errno}")),
                    }
                }
            }
            Err(CopyError::Os(libc::EAGAIN)) => std::thread::yield_now(),
            Err(CopyError::Os(errno)) => return Err(format!("UFFDIO_COPY failed: errno {errno}")),
        }
    }
    Ok(())
}

/// The maximal runs of consecutive chunks among `sorted` (indices into it)
/// whose chunks satisfy `pred`.
fn runs_where(sorted: &[usize], mut pred: impl FnMut(usize) -> bool) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        if !pred(sorted[i]) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 && pred(sorted[j]) {
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

/// The pace of missing faults: the time between them, averaged, and how
/// much it varies. Regular faults (a program working through random blocks
/// at a steady rate) make the next one predictable.
#[derive(Debug, Default)]
struct Pace {
    last: Option<u64>,
    gap: u64,
    deviation: u64,
}

impl Pace {
    fn record(&mut self, now: u64) {
        if let Some(last) = self.last {
            let gap = now.saturating_sub(last);
            if self.gap == 0 {
                self.gap = gap;
            } else {
                self.deviation = (self.deviation * 7 + self.gap.abs_diff(gap)) / 8;
                self.gap = (self.gap * 7 + gap) / 8;
            }
        }
        self.last = Some(now);
    }

    /// The next fault and the typical deviation, if faults come regularly
    /// (deviation under half the gap) and the prediction is not more than
    /// `stale` overdue.
    fn next_due(&self, now: u64, stale: u64) -> Option<(u64, u64)> {
        let due = self.last? + self.gap;
        let regular = self.gap > 0 && self.deviation * 2 < self.gap;
        (regular && due.saturating_add(stale) > now).then_some((due, self.deviation))
    }
}

fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// The handler thread: reads faults, serves them, does background work, and
/// waits according to the policy until told to stop.
///
/// With [`HandlerPolicy::Hybrid`] it spins for the configured time after
/// the last activity, then sleeps in `poll`; when faults come at a steady
/// pace (a stream hitting its read-ahead markers, or faults at regular
/// intervals), it sleeps only until shortly before the next one is due and
/// spins until a little after, so that the fault finds it awake without a
/// core spent on spinning in between.
pub(crate) fn run_handler(sh: &Shared) {
    if sh.config.handler_nice != 0 {
        // Without CAP_SYS_NICE a higher priority is refused: run as is.
        let _ = sys::set_thread_nice(sh.config.handler_nice);
    }
    let mut buffer = userfaultfd::EventBuffer::new(64);
    let mut faults = Vec::with_capacity(64);
    let (spin, predictive) = match sh.config.handler {
        HandlerPolicy::Poll => (Duration::ZERO, false),
        HandlerPolicy::Spin => (Duration::MAX, false),
        HandlerPolicy::Hybrid { spin_us } => (Duration::from_micros(spin_us), true),
    };
    let mut last_activity = Instant::now();
    let mut slept = false;
    // The predicted fault the handler already woke up for (not again), and
    // until when it stays awake for it.
    let mut woken_for: Option<Instant> = None;
    let mut awake_until = Instant::now();
    loop {
        if sh.stop.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = sh.uffd.read_faults(&mut buffer, &mut faults) {
            sh.fail(SwapError::BackingFailed { during: FailedOp::Handler, offset: 0, reason: e.to_string() });
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        if !faults.is_empty() {
            let regime = if slept { &sh.counters.faults_after_sleep } else { &sh.counters.faults_while_busy };
            add(regime, faults.len() as u64);
            slept = false;
            let mut pager = sh.pager.lock();
            for &fault in &faults {
                pager.on_fault(sh, fault);
            }
            drop(pager);
            last_activity = Instant::now();
            continue;
        }
        if sh.pager.lock().background(sh) {
            last_activity = Instant::now();
            slept = false;
            continue;
        }
        if last_activity.elapsed() < spin || Instant::now() < awake_until {
            std::hint::spin_loop();
            continue;
        }
        let mut timeout = None;
        if predictive {
            let predicted = sh.pager.lock().next_due().filter(|&(due, _)| woken_for != Some(due));
            if let Some((due, slack)) = predicted {
                let now = Instant::now();
                match due.checked_sub(slack).filter(|&wake| wake > now) {
                    Some(wake) => timeout = Some(wake - now),
                    None => {
                        // Due soon: stay awake until a little after it.
                        woken_for = Some(due);
                        awake_until = due + slack;
                        slept = false;
                        continue;
                    }
                }
            }
        }
        if let Err(e) = sys::poll_two(sh.uffd.fd(), sh.doorbell.fd(), timeout) {
            sh.fail(SwapError::BackingFailed { during: FailedOp::Handler, offset: 0, reason: e.to_string() });
            std::thread::sleep(Duration::from_millis(1));
        }
        sh.doorbell.drain();
        slept = true;
    }
}
