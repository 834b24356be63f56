//! The compute side's local cache: recently read lines and buffered writes.
//!
//! Lines are keyed by (memory component, line index). Replacement is CLOCK
//! (second chance), which approximates LRU without reordering on every hit.
//! Dirty lines are written back when they are evicted or when the code piece
//! calls `sync`. Line buffers are allocated on first use, so a cache that
//! holds little costs little.

use crate::ids::MemoryId;
use crate::resources::{KIB, MIB};
use std::collections::HashMap;

/// Size of the cache and of its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheConfig {
    /// Total bytes of cached lines.
    pub capacity_bytes: u64,
    /// Bytes per line: a power of two that divides every memory size class.
    pub line_bytes: u64,
}

impl Default for CacheConfig {
    /// The paper's 64 MiB of 4 KiB lines.
    fn default() -> Self {
        CacheConfig { capacity_bytes: 64 * MIB, line_bytes: 4 * KIB }
    }
}

impl CacheConfig {
    /// How many lines fit (at least one).
    pub fn lines(&self) -> usize {
        (self.capacity_bytes / self.line_bytes.max(1)).max(1) as usize
    }

    /// Accesses at least this long go straight to memory: a scan longer than
    /// a quarter of the cache would only evict what the cache holds.
    pub fn bypass_bytes(&self) -> usize {
        (self.capacity_bytes / 4).max(self.line_bytes) as usize
    }
}

/// Hit and miss counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Line lookups served from the cache.
    pub hits: u64,
    /// Line lookups that fetched from memory.
    pub misses: u64,
    /// Dirty lines written back.
    pub writebacks: u64,
    /// Accesses that bypassed the cache.
    pub bypasses: u64,
}

/// Key of a cached line.
pub(crate) type LineKey = (MemoryId, u64);

struct Slot {
    key: LineKey,
    data: Box<[u8]>,
    dirty: bool,
    referenced: bool,
}

/// A line evicted dirty: its bytes must reach memory.
pub(crate) struct Evicted {
    pub(crate) key: LineKey,
    pub(crate) data: Box<[u8]>,
}

/// The cache proper; the runtime drives it (see `runtime::channel`).
pub struct LineCache {
    config: CacheConfig,
    index: HashMap<LineKey, usize>,
    slots: Vec<Slot>,
    hand: usize,
    stats: CacheStats,
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
        LineCache { config, index: HashMap::new(), slots: Vec::new(), hand: 0, stats: CacheStats::default() }
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
        self.config.line_bytes as usize
    }

    pub(crate) fn count_bypass(&mut self) {
        self.stats.bypasses += 1;
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

    /// Installs a line (replacing any cached copy) and returns its buffer to
    /// fill, plus a dirty line it evicted, if any. Counts a miss.
    pub(crate) fn install(&mut self, key: LineKey) -> (&mut [u8], Option<Evicted>) {
        self.stats.misses += 1;
        if let Some(&slot) = self.index.get(&key) {
            return (&mut self.slots[slot].data, None);
        }
        let line = self.line_bytes();
        let (slot, evicted) = if self.slots.len() < self.config.lines() {
            self.slots.push(Slot { key, data: vec![0; line].into_boxed_slice(), dirty: false, referenced: true });
            (self.slots.len() - 1, None)
        } else {
            let victim = self.victim();
            let slot = &mut self.slots[victim];
            self.index.remove(&slot.key);
            let evicted = slot.dirty.then(|| {
                self.stats.writebacks += 1;
                Evicted { key: slot.key, data: slot.data.clone() }
            });
            slot.key = key;
            slot.dirty = false;
            slot.referenced = true;
            (victim, evicted)
        };
        self.index.insert(key, slot);
        (&mut self.slots[slot].data, evicted)
    }

    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            if self.slots[i].referenced {
                self.slots[i].referenced = false;
            } else {
                return i;
            }
        }
    }

    /// Marks a cached line dirty.
    pub(crate) fn mark_dirty(&mut self, key: LineKey) {
        if let Some(&slot) = self.index.get(&key) {
            self.slots[slot].dirty = true;
        }
    }

    /// Takes the dirty lines of `memory` (all components when `None`) whose
    /// index is in `lines`, marking them clean; the caller writes them back.
    pub(crate) fn take_dirty(
        &mut self,
        memory: Option<MemoryId>,
        lines: std::ops::Range<u64>,
    ) -> Vec<(LineKey, &[u8])> {
        let mut dirty: Vec<(LineKey, &[u8])> = Vec::new();
        let mut count = 0;
        for slot in &mut self.slots {
            if slot.dirty && memory.is_none_or(|m| m == slot.key.0) && lines.contains(&slot.key.1) {
                slot.dirty = false;
                count += 1;
                dirty.push((slot.key, &slot.data));
            }
        }
        self.stats.writebacks += count;
        dirty.sort_unstable_by_key(|(k, _)| *k);
        dirty
    }

    /// Copies of the dirty lines of `memory` in `lines`, left dirty.
    pub(crate) fn dirty_overlay(&self, memory: MemoryId, lines: std::ops::Range<u64>) -> Vec<(u64, &[u8])> {
        self.slots
            .iter()
            .filter(|s| s.dirty && s.key.0 == memory && lines.contains(&s.key.1))
            .map(|s| (s.key.1, &s.data[..]))
            .collect()
    }

    /// Drops one line, dirty or not (its fill failed).
    pub(crate) fn forget(&mut self, key: LineKey) {
        if let Some(slot) = self.index.remove(&key) {
            self.retire(slot);
        }
    }

    fn retire(&mut self, slot: usize) {
        let slot = &mut self.slots[slot];
        slot.dirty = false;
        slot.referenced = false;
        // An unreachable key keeps the slot out of lookups until it is reused.
        slot.key = (MemoryId(u32::MAX), u64::MAX);
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
