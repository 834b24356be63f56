//! The compute side's local cache: recently read lines and buffered writes.
//!
//! Lines are keyed by (memory component, line index). Replacement is CLOCK
//! (second chance), which approximates LRU without reordering on every hit.
//! Each line remembers the byte range its buffered writes dirtied, so a
//! write-back touches exactly the bytes this instance wrote: instances that
//! write disjoint parts of one line never overwrite each other. A dirty
//! victim is written back by the runtime *before* its slot is reused, so a
//! failed write-back loses nothing. Line buffers are allocated on first use.

use crate::ids::MemoryId;
use crate::resources::{KIB, MIB};
use std::collections::HashMap;
use std::ops::Range;

/// Size of the cache and of its lines, and how far channels read ahead.
/// Build one with [`CacheConfig::new`] (fields may be added).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct CacheConfig {
    /// Total bytes of cached lines.
    pub capacity_bytes: u64,
    /// Bytes per line: a power of two from 64 B; other values are rounded
    /// up to one (see [`CacheConfig::line`]).
    pub line_bytes: u64,
    /// Most bytes one channel fetches ahead of a sequential run of reads
    /// (0 turns read-ahead off). Transports that map memory never fetch
    /// ahead (see [`Transport::maps_memory`](crate::transport::Transport::maps_memory)).
    /// See [`Channel::read`](crate::runtime::Channel::read).
    #[serde(default = "default_read_ahead")]
    pub read_ahead_bytes: u64,
}

fn default_read_ahead() -> u64 {
    CacheConfig::DEFAULT_READ_AHEAD
}

impl Default for CacheConfig {
    /// The paper's 64 MiB of 4 KiB lines, with 4 MiB of read-ahead.
    fn default() -> Self {
        CacheConfig { capacity_bytes: 64 * MIB, line_bytes: 4 * KIB, read_ahead_bytes: Self::DEFAULT_READ_AHEAD }
    }
}

/// Smallest line the cache uses.
const MIN_LINE: u64 = 64;
/// Largest line the cache uses (a line is one allocation).
const MAX_LINE: u64 = 64 * MIB;

impl CacheConfig {
    /// Read-ahead per channel unless configured otherwise.
    pub const DEFAULT_READ_AHEAD: u64 = 4 * MIB;

    /// A cache of `capacity_bytes` in lines of `line_bytes`, with the default read-ahead.
    pub fn new(capacity_bytes: u64, line_bytes: u64) -> Self {
        CacheConfig { capacity_bytes, line_bytes, ..CacheConfig::default() }
    }

    /// The same cache with `bytes` of read-ahead per channel (0: none).
    pub fn with_read_ahead(mut self, bytes: u64) -> Self {
        self.read_ahead_bytes = bytes;
        self
    }

    /// The line size in use: `line_bytes` rounded up to a power of two within 64 B … 64 MiB.
    pub fn line(&self) -> u64 {
        self.line_bytes.clamp(MIN_LINE, MAX_LINE).next_power_of_two()
    }

    /// How many lines fit (at least one).
    pub fn lines(&self) -> usize {
        (self.capacity_bytes / self.line()).max(1) as usize
    }

    /// Accesses at least this long go straight to memory: a scan longer than
    /// a quarter of the cache would only evict what the cache holds.
    pub fn bypass_bytes(&self) -> usize {
        (self.capacity_bytes / 4).max(self.line()) as usize
    }
}

/// Hit and miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Line lookups served from the cache.
    pub hits: u64,
    /// Lines fetched from memory into the cache.
    pub misses: u64,
    /// Dirty ranges written back.
    pub writebacks: u64,
    /// Accesses that bypassed the cache.
    pub bypasses: u64,
    /// Bytes read from memory components over the transport.
    pub bytes_read: u64,
    /// Bytes written to memory components over the transport.
    pub bytes_written: u64,
    /// Bytes lent without a copy (see `Channel::read_with`).
    pub bytes_lent: u64,
    /// Bytes fetched ahead of sequential reads (part of `bytes_read`).
    pub read_ahead_bytes: u64,
    /// Bytes of reads served from what was fetched ahead; the rest of
    /// `read_ahead_bytes` was fetched in vain.
    pub read_ahead_hits: u64,
    /// Bytes written back on the I/O thread while the code piece went on
    /// (part of `bytes_written`).
    pub write_behind_bytes: u64,
}

impl CacheStats {
    /// Adds another instance's counters.
    pub fn add(&mut self, other: &CacheStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.writebacks += other.writebacks;
        self.bypasses += other.bypasses;
        self.bytes_read += other.bytes_read;
        self.bytes_written += other.bytes_written;
        self.bytes_lent += other.bytes_lent;
        self.read_ahead_bytes += other.read_ahead_bytes;
        self.read_ahead_hits += other.read_ahead_hits;
        self.write_behind_bytes += other.write_behind_bytes;
    }
}

/// Key of a cached line.
pub(crate) type LineKey = (MemoryId, u64);

/// A slot key no lookup can match: the slot is free for reuse.
const RETIRED: LineKey = (MemoryId(u32::MAX), u64::MAX);

struct Slot {
    key: LineKey,
    data: Box<[u8]>,
    /// Bytes of the line written by buffered writes and not yet written back.
    dirty: Option<Range<usize>>,
    referenced: bool,
}

/// A dirty range to write back: `bytes` belong at byte `offset` of line `key`.
#[derive(Debug)]
pub(crate) struct DirtyRange {
    pub(crate) key: LineKey,
    pub(crate) offset: usize,
    pub(crate) bytes: Box<[u8]>,
}

/// The cache proper; the runtime drives it (see `runtime::remote`).
pub struct LineCache {
    config: CacheConfig,
    index: HashMap<LineKey, usize>,
    slots: Vec<Slot>,
    hand: usize,
    stats: CacheStats,
    /// Lines holding buffered writes.
    dirty_lines: usize,
}

impl std::fmt::Debug for LineCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LineCache")
            .field("config", &self.config)
            .field("lines", &self.slots.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl LineCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        LineCache {
            config,
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            stats: CacheStats::default(),
            dirty_lines: 0,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> CacheConfig {
        self.config
    }

    /// Its counters.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    pub(crate) fn line_bytes(&self) -> usize {
        self.config.line() as usize
    }

    pub(crate) fn count_bypass(&mut self) {
        self.stats.bypasses += 1;
    }

    pub(crate) fn count_moved(&mut self, read: usize, written: usize) {
        self.stats.bytes_read += read as u64;
        self.stats.bytes_written += written as u64;
    }

    pub(crate) fn count_lent(&mut self, bytes: usize) {
        self.stats.bytes_lent += bytes as u64;
    }

    pub(crate) fn count_read_ahead(&mut self, fetched: usize, served: usize) {
        self.stats.read_ahead_bytes += fetched as u64;
        self.stats.read_ahead_hits += served as u64;
    }

    pub(crate) fn count_write_behind(&mut self, bytes: usize) {
        self.stats.write_behind_bytes += bytes as u64;
    }

    /// Bytes of the lines that hold buffered writes.
    pub(crate) fn dirty_line_bytes(&self) -> usize {
        self.dirty_lines * self.line_bytes()
    }

    /// The cached line, marking it referenced and counting a hit.
    pub(crate) fn lookup(&mut self, key: LineKey) -> Option<&mut [u8]> {
        let slot = *self.index.get(&key)?;
        self.stats.hits += 1;
        let slot = &mut self.slots[slot];
        slot.referenced = true;
        Some(&mut slot.data)
    }

    /// The cached line, without counting a hit or marking it referenced.
    pub(crate) fn peek_mut(&mut self, key: LineKey) -> Option<&mut [u8]> {
        let slot = *self.index.get(&key)?;
        Some(&mut self.slots[slot].data)
    }

    /// Makes room for one more line. When the slot CLOCK picks is dirty,
    /// returns a copy of its dirty bytes (leaving it cached and dirty): the
    /// caller writes them back, calls [`mark_clean`](Self::mark_clean), and
    /// asks again. `None` means [`install`](Self::install) will not lose data.
    pub(crate) fn victim_to_write_back(&mut self) -> Option<DirtyRange> {
        if self.slots.len() < self.config.lines() {
            return None;
        }
        loop {
            let i = self.hand;
            let slot = &mut self.slots[i];
            if slot.key == RETIRED || !slot.referenced {
                return slot.dirty.clone().map(|range| DirtyRange {
                    key: slot.key,
                    offset: range.start,
                    bytes: slot.data[range].into(),
                });
            }
            slot.referenced = false;
            self.hand = (self.hand + 1) % self.slots.len();
        }
    }

    /// Installs a line and returns its buffer to fill; counts a miss. Reuses
    /// the slot [`victim_to_write_back`](Self::victim_to_write_back) chose,
    /// which must be clean by now. A cached key is returned as it is.
    pub(crate) fn install(&mut self, key: LineKey) -> &mut [u8] {
        if let Some(&slot) = self.index.get(&key) {
            return &mut self.slots[slot].data;
        }
        self.stats.misses += 1;
        let slot = if self.slots.len() < self.config.lines() {
            let line = self.line_bytes();
            self.slots.push(Slot { key, data: vec![0; line].into_boxed_slice(), dirty: None, referenced: true });
            self.slots.len() - 1
        } else {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            debug_assert!(slot.dirty.is_none(), "a dirty slot is written back before reuse");
            self.index.remove(&slot.key);
            slot.key = key;
            slot.dirty = None;
            slot.referenced = true;
            i
        };
        self.index.insert(key, slot);
        &mut self.slots[slot].data
    }

    /// Records that `range` of a cached line holds buffered writes. When it
    /// neither overlaps nor touches the line's dirty range, the old range is
    /// returned instead, untouched: write it back, then call again.
    pub(crate) fn mark_dirty(&mut self, key: LineKey, range: Range<usize>) -> Result<(), DirtyRange> {
        let Some(&i) = self.index.get(&key) else { return Ok(()) };
        let slot = &mut self.slots[i];
        slot.dirty = match slot.dirty.take() {
            None => {
                self.dirty_lines += 1;
                Some(range)
            }
            Some(old) if old.start <= range.end && range.start <= old.end => {
                Some(old.start.min(range.start)..old.end.max(range.end))
            }
            Some(old) => {
                let pending = DirtyRange { key, offset: old.start, bytes: slot.data[old.clone()].into() };
                slot.dirty = Some(old);
                return Err(pending);
            }
        };
        Ok(())
    }

    /// Marks a line clean after its dirty bytes reached memory.
    pub(crate) fn mark_clean(&mut self, key: LineKey) {
        if let Some(&i) = self.index.get(&key) {
            if self.slots[i].dirty.take().is_some() {
                self.dirty_lines -= 1;
            }
            self.stats.writebacks += 1;
        }
    }

    /// Copies of the dirty ranges of `memory` (all components when `None`),
    /// in line order, left dirty: mark each clean once it is written back.
    pub(crate) fn dirty(&self, memory: Option<MemoryId>) -> Vec<DirtyRange> {
        let mut dirty: Vec<DirtyRange> = self
            .slots
            .iter()
            .filter(|s| s.key != RETIRED && memory.is_none_or(|m| m == s.key.0))
            .filter_map(|s| {
                let range = s.dirty.clone()?;
                Some(DirtyRange { key: s.key, offset: range.start, bytes: s.data[range].into() })
            })
            .collect();
        dirty.sort_unstable_by_key(|d| d.key);
        dirty
    }

    /// The dirty bytes of `memory`'s lines in `lines`: (line, offset in line, bytes).
    pub(crate) fn dirty_overlay(
        &self,
        memory: MemoryId,
        lines: Range<u64>,
    ) -> impl Iterator<Item = (u64, usize, &[u8])> {
        // Nothing dirty, the common case of a read-only stream: skip the scan.
        let slots = if self.dirty_lines == 0 { &self.slots[..0] } else { &self.slots[..] };
        slots.iter().filter(move |s| s.key.0 == memory && lines.contains(&s.key.1)).filter_map(|s| {
            let range = s.dirty.clone()?;
            Some((s.key.1, range.start, &s.data[range]))
        })
    }

    /// Drops one line, dirty or not (its fill failed).
    pub(crate) fn forget(&mut self, key: LineKey) {
        if let Some(slot) = self.index.remove(&key) {
            self.retire(slot);
        }
    }

    fn retire(&mut self, slot: usize) {
        let slot = &mut self.slots[slot];
        if slot.dirty.take().is_some() {
            self.dirty_lines -= 1;
        }
        slot.referenced = false;
        slot.key = RETIRED;
    }

    /// Drops every line of `memory` from index `from_line` on, dirty or not.
    pub(crate) fn invalidate(&mut self, memory: MemoryId, from_line: u64) {
        for i in 0..self.slots.len() {
            let key = self.slots[i].key;
            if key.0 == memory && key.1 >= from_line && self.index.remove(&key).is_some() {
                self.retire(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(lines: u64) -> LineCache {
        LineCache::new(CacheConfig::new(lines * 64, 64))
    }

    #[test]
    fn a_dirty_victim_is_offered_for_write_back_before_its_slot_is_reused() {
        let mut c = cache(1);
        let m = MemoryId(0);
        assert!(c.victim_to_write_back().is_none(), "room left");
        c.install((m, 0))[..4].copy_from_slice(b"abcd");
        c.mark_dirty((m, 0), 0..4).expect("first dirty range");
        // CLOCK clears the reference bit, then offers the dirty line.
        let victim = c.victim_to_write_back().expect("the only slot is dirty");
        assert_eq!((victim.key, victim.offset, &victim.bytes[..]), ((m, 0), 0, &b"abcd"[..]));
        c.mark_clean((m, 0));
        assert!(c.victim_to_write_back().is_none());
        c.install((m, 1));
        assert!(c.peek_mut((m, 0)).is_none() && c.peek_mut((m, 1)).is_some());
    }

    #[test]
    fn disjoint_dirty_ranges_are_not_merged() {
        let mut c = cache(2);
        let key = (MemoryId(0), 0);
        c.install(key);
        c.mark_dirty(key, 0..8).expect("first range");
        c.mark_dirty(key, 8..16).expect("a touching range merges");
        let pending = c.mark_dirty(key, 32..40).expect_err("a disjoint range asks for a write-back");
        assert_eq!((pending.offset, pending.bytes.len()), (0, 16));
        c.mark_clean(key);
        c.mark_dirty(key, 32..40).expect("clean now");
        let dirty = c.dirty(None);
        assert_eq!((dirty.len(), dirty[0].offset, dirty[0].bytes.len()), (1, 32, 8));
    }

    #[test]
    fn lines_are_powers_of_two_from_64_bytes() {
        assert_eq!(CacheConfig::new(MIB, 0).line(), 64);
        assert_eq!(CacheConfig::new(MIB, 3000).line(), 4096);
        assert_eq!(CacheConfig::new(0, 4096).lines(), 1);
    }
}
