//! Disaggregated memory access: the cache of one compute instance, and a
//! channel's operations on one remote memory component through it.

use super::ChannelError;
use crate::ids::MemoryId;
use crate::memory::{AddressMap, CacheStats, DirtyRange, LineCache, LineKey, Snapshot, StateError, VirtualMemory};
use crate::transport::{RemoteOp, Transport, TransportError};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

/// Why an access to the physical components failed.
enum AccessError {
    /// The transport refused.
    Transport(TransportError),
    /// The range is not covered by the address map.
    Unmapped,
}

impl From<TransportError> for AccessError {
    fn from(e: TransportError) -> Self {
        AccessError::Transport(e)
    }
}

/// Reads `[addr, addr + buf.len())` of a component through `map`, one
/// operation per physical component touched (no batch is built for one).
fn read_pieces(transport: &dyn Transport, map: &AddressMap, addr: u64, buf: &mut [u8]) -> Result<(), AccessError> {
    let mut pieces = map.split(addr, buf.len()).ok_or(AccessError::Unmapped)?;
    let Some(first) = pieces.next() else { return Ok(()) };
    if first.len == buf.len() {
        return Ok(transport.read(&first.region, first.offset, buf)?);
    }
    let mut ops: Vec<RemoteOp<'_>> = Vec::with_capacity(map.len());
    // The pieces tile the access in order: each takes the next `len` bytes.
    let mut rest = buf;
    for piece in std::iter::once(first).chain(pieces) {
        let (head, tail) = rest.split_at_mut(piece.len);
        ops.push(RemoteOp::Read { region: piece.region, offset: piece.offset, buf: head });
        rest = tail;
    }
    transport.execute(&mut ops).map_err(|e| AccessError::Transport(e.error))
}

/// Writes `data` at `addr` of a component through `map`.
fn write_pieces(transport: &dyn Transport, map: &AddressMap, addr: u64, data: &[u8]) -> Result<(), AccessError> {
    let mut pieces = map.split(addr, data.len()).ok_or(AccessError::Unmapped)?;
    let Some(first) = pieces.next() else { return Ok(()) };
    if first.len == data.len() {
        return Ok(transport.write(&first.region, first.offset, data)?);
    }
    let mut ops: Vec<RemoteOp<'_>> = std::iter::once(first)
        .chain(pieces)
        .map(|p| RemoteOp::Write { region: p.region, offset: p.offset, data: &data[p.buf_range()] })
        .collect();
    transport.execute(&mut ops).map_err(|e| AccessError::Transport(e.error))
}

/// Fills a line buffer starting at virtual `line_start`; bytes past the
/// address space read as zeros.
fn fetch_line(
    transport: &dyn Transport,
    map: &AddressMap,
    line_start: u64,
    data: &mut [u8],
) -> Result<(), AccessError> {
    let len = (map.capacity().saturating_sub(line_start) as usize).min(data.len());
    data[len..].fill(0);
    read_pieces(transport, map, line_start, &mut data[..len])
}

/// The cache of one compute instance, with what it needs to write back.
pub(crate) struct CacheHost {
    cache: LineCache,
    transport: Arc<dyn Transport>,
    memories: HashMap<MemoryId, Arc<VirtualMemory>>,
}

impl CacheHost {
    pub(crate) fn new(cache: LineCache, transport: Arc<dyn Transport>) -> Self {
        CacheHost { cache, transport, memories: HashMap::new() }
    }

    pub(crate) fn register(&mut self, memory: Arc<VirtualMemory>) {
        self.memories.insert(memory.id(), memory);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Writes dirty bytes back to their component. Bytes of a released
    /// component, or past its end after a shrink, have no home and are dropped.
    fn write_back(&self, dirty: &DirtyRange) -> Result<(), ChannelError> {
        let Some(memory) = self.memories.get(&dirty.key.0) else { return Ok(()) };
        let mut snapshot = Snapshot::default();
        if memory.refresh(&mut snapshot).is_err() {
            return Ok(());
        }
        let start = dirty.key.1 * self.cache.line_bytes() as u64 + dirty.offset as u64;
        let len = (snapshot.len.saturating_sub(start) as usize).min(dirty.bytes.len());
        match write_pieces(&*self.transport, &snapshot.map, start, &dirty.bytes[..len]) {
            Ok(()) | Err(AccessError::Unmapped) => Ok(()),
            Err(AccessError::Transport(source)) => {
                Err(ChannelError::Transport { component: memory.name().to_owned(), source })
            }
        }
    }

    /// Makes room for one more line, writing back dirty victims first.
    fn make_room(&mut self) -> Result<(), ChannelError> {
        while let Some(victim) = self.cache.victim_to_write_back() {
            self.write_back(&victim)?;
            self.cache.mark_clean(victim.key);
        }
        Ok(())
    }

    /// Records a buffered write to `range` of a cached line, writing back a
    /// disjoint older range of the same line first.
    fn mark_dirty(&mut self, key: LineKey, range: std::ops::Range<usize>) -> Result<(), ChannelError> {
        while let Err(older) = self.cache.mark_dirty(key, range.clone()) {
            self.write_back(&older)?;
            self.cache.mark_clean(key);
        }
        Ok(())
    }

    /// Writes back the buffered writes of `memory` (of all when `None`). On
    /// a failure, what was not written stays buffered for a later sync.
    pub(crate) fn flush(&mut self, memory: Option<MemoryId>) -> Result<(), ChannelError> {
        for dirty in self.cache.dirty(memory) {
            self.write_back(&dirty)?;
            self.cache.mark_clean(dirty.key);
        }
        Ok(())
    }
}

/// A channel's state for one remote memory component.
pub(crate) struct RemoteChannel {
    memory: Arc<VirtualMemory>,
    cache: Arc<Mutex<CacheHost>>,
    transport: Arc<dyn Transport>,
    snapshot: Snapshot,
}

/// Copies the part of a line (starting at virtual `line_start`) that overlaps
/// the access `[addr, addr + buf.len())` into `buf`.
fn copy_overlap(line_start: u64, line: &[u8], addr: u64, buf: &mut [u8]) {
    if let Some((from, to, n)) = overlap(line_start, line.len(), addr, buf.len()) {
        buf[to..to + n].copy_from_slice(&line[from..from + n]);
    }
}

/// Copies the part of `data` (written at `addr`) that overlaps a line into it;
/// returns the range of the line it wrote.
fn copy_into(line_start: u64, line: &mut [u8], addr: u64, data: &[u8]) -> std::ops::Range<usize> {
    match overlap(line_start, line.len(), addr, data.len()) {
        Some((to, from, n)) => {
            line[to..to + n].copy_from_slice(&data[from..from + n]);
            to..to + n
        }
        None => 0..0,
    }
}

/// Where a line `[line_start, +line_len)` and an access `[addr, +len)`
/// overlap: (offset in line, offset in access, length).
fn overlap(line_start: u64, line_len: usize, addr: u64, len: usize) -> Option<(usize, usize, usize)> {
    let start = line_start.max(addr);
    let end = (line_start + line_len as u64).min(addr + len as u64);
    (start < end).then(|| ((start - line_start) as usize, (start - addr) as usize, (end - start) as usize))
}

impl RemoteChannel {
    pub(crate) fn new(memory: Arc<VirtualMemory>, cache: Arc<Mutex<CacheHost>>, transport: Arc<dyn Transport>) -> Self {
        RemoteChannel { memory, cache, transport, snapshot: Snapshot::default() }
    }

    pub(crate) fn len(&self) -> u64 {
        self.memory.len()
    }

    fn name(&self) -> String {
        self.memory.name().to_owned()
    }

    fn access_error(&self, e: AccessError, addr: u64, len: usize) -> ChannelError {
        match e {
            AccessError::Transport(source) => ChannelError::Transport { component: self.name(), source },
            AccessError::Unmapped => {
                ChannelError::OutOfRange { component: self.name(), addr, len: len as u64, size: self.snapshot.len }
            }
        }
    }

    fn refresh(&mut self) -> Result<(), ChannelError> {
        self.memory.refresh(&mut self.snapshot).map_err(|_| ChannelError::Released { component: self.name() })
    }

    pub(crate) fn state_error(&self, e: StateError, wanted: u64) -> ChannelError {
        super::channel::state_error(self.memory.name(), e, wanted)
    }

    /// Fails unless `[addr, addr + len)` lies within the component's length.
    pub(crate) fn check_range(&mut self, addr: u64, len: usize) -> Result<(), ChannelError> {
        self.refresh()?;
        if addr.checked_add(len as u64).is_none_or(|end| end > self.snapshot.len) {
            return Err(ChannelError::OutOfRange {
                component: self.name(),
                addr,
                len: len as u64,
                size: self.snapshot.len,
            });
        }
        Ok(())
    }

    pub(crate) fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), ChannelError> {
        self.check_range(addr, buf.len())?;
        let mut host = self.cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..(addr + buf.len() as u64).div_ceil(line);
        if buf.len() >= host.cache.config().bypass_bytes() {
            host.cache.count_bypass();
            read_pieces(&*self.transport, &self.snapshot.map, addr, buf)
                .map_err(|e| self.access_error(e, addr, buf.len()))?;
            // The caller sees its own buffered writes.
            for (index, offset, bytes) in host.cache.dirty_overlay(id, lines) {
                copy_overlap(index * line + offset as u64, bytes, addr, buf);
            }
            return Ok(());
        }
        for index in lines {
            let line_start = index * line;
            if let Some(data) = host.cache.lookup((id, index)) {
                copy_overlap(line_start, data, addr, buf);
                continue;
            }
            host.make_room()?;
            let data = host.cache.install((id, index));
            if let Err(e) = fetch_line(&*self.transport, &self.snapshot.map, line_start, data) {
                host.cache.forget((id, index));
                return Err(self.access_error(e, line_start, line as usize));
            }
            copy_overlap(line_start, data, addr, buf);
        }
        Ok(())
    }

    pub(crate) fn write(&mut self, addr: u64, data: &[u8], buffered: bool) -> Result<(), ChannelError> {
        // The channel checked that the end does not overflow.
        let end = addr.saturating_add(data.len() as u64);
        self.refresh()?;
        let old_len = self.snapshot.len;
        self.memory.ensure(end).map_err(|e| self.state_error(e, end))?;
        self.refresh()?;
        let mut host = self.cache.lock();
        let id = self.memory.id();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..end.div_ceil(line);
        if !buffered || data.len() >= host.cache.config().bypass_bytes() {
            if buffered {
                host.cache.count_bypass();
            }
            write_pieces(&*self.transport, &self.snapshot.map, addr, data)
                .map_err(|e| self.access_error(e, addr, data.len()))?;
            // Keep cached copies current; what is dirty stays dirty.
            for index in lines {
                if let Some(cached) = host.cache.peek_mut((id, index)) {
                    copy_into(index * line, cached, addr, data);
                }
            }
            return Ok(());
        }
        for index in lines {
            let key = (id, index);
            let line_start = index * line;
            if host.cache.lookup(key).is_none() {
                host.make_room()?;
                let covers_line = addr <= line_start && end >= line_start + line;
                let slot = host.cache.install(key);
                // Bytes of the line this write does not cover must read right.
                let filled = if covers_line {
                    Ok(())
                } else if line_start < old_len {
                    fetch_line(&*self.transport, &self.snapshot.map, line_start, slot)
                } else {
                    slot.fill(0);
                    Ok(())
                };
                if let Err(e) = filled {
                    host.cache.forget(key);
                    return Err(self.access_error(e, line_start, line as usize));
                }
            }
            let written = match host.cache.peek_mut(key) {
                Some(slot) => copy_into(line_start, slot, addr, data),
                None => 0..0,
            };
            host.mark_dirty(key, written)?;
        }
        Ok(())
    }

    pub(crate) fn flush(&self) -> Result<(), ChannelError> {
        self.cache.lock().flush(Some(self.memory.id()))
    }

    pub(crate) fn resize(&mut self, len: u64) -> Result<(), ChannelError> {
        self.refresh()?;
        let old_len = self.snapshot.len;
        {
            let mut host = self.cache.lock();
            host.flush(Some(self.memory.id()))?;
            let line = host.cache.line_bytes() as u64;
            host.cache.invalidate(self.memory.id(), len / line);
        }
        self.memory.resize(len).map_err(|e| self.state_error(e, len))?;
        self.refresh()?;
        // The physical component that now holds the end keeps the cut bytes:
        // clear them, so that growing again reads zeros.
        self.zero(len, old_len.min(self.snapshot.map.capacity()))
    }

    /// Writes zeros straight to memory over `[from, to)`.
    fn zero(&self, from: u64, to: u64) -> Result<(), ChannelError> {
        const CHUNK: u64 = 64 * 1024;
        if from >= to {
            return Ok(());
        }
        let zeros = vec![0u8; (to - from).min(CHUNK) as usize];
        let mut at = from;
        while at < to {
            let n = (to - at).min(CHUNK) as usize;
            write_pieces(&*self.transport, &self.snapshot.map, at, &zeros[..n])
                .map_err(|e| self.access_error(e, at, n))?;
            at += n as u64;
        }
        Ok(())
    }

    pub(crate) fn release(&self) {
        self.cache.lock().cache.invalidate(self.memory.id(), 0);
        self.memory.release();
    }
}
