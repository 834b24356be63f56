//! Disaggregated memory access: the cache of one compute instance, and a
//! channel's operations on one remote memory component through it.

use super::io_worker::IoWorker;
use super::{ChannelError, PendingRead};
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
    /// Runs asynchronous reads; started at the first one.
    io: Option<IoWorker>,
}

impl CacheHost {
    pub(crate) fn new(cache: LineCache, transport: Arc<dyn Transport>) -> Self {
        CacheHost { cache, transport, memories: HashMap::new(), io: None }
    }

    pub(crate) fn register(&mut self, memory: Arc<VirtualMemory>) {
        self.memories.insert(memory.id(), memory);
    }

    pub(crate) fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    /// Writes dirty bytes back to their component; returns how many went
    /// out. Bytes of a released component, or past its end after a shrink,
    /// have no home and are dropped.
    fn write_back(&self, dirty: &DirtyRange) -> Result<usize, ChannelError> {
        self.write_back_all(std::slice::from_ref(dirty))
    }

    /// Writes back dirty ranges of one component as one batch.
    fn write_back_all(&self, dirty: &[DirtyRange]) -> Result<usize, ChannelError> {
        let Some(memory) = dirty.first().and_then(|d| self.memories.get(&d.key.0)) else { return Ok(0) };
        let mut snapshot = Snapshot::default();
        if memory.refresh(&mut snapshot).is_err() {
            return Ok(0);
        }
        let line = self.cache.line_bytes() as u64;
        let mut ops: Vec<RemoteOp<'_>> = Vec::with_capacity(dirty.len());
        let mut written = 0;
        for range in dirty {
            let start = range.key.1 * line + range.offset as u64;
            let len = (snapshot.len.saturating_sub(start) as usize).min(range.bytes.len());
            let Some(pieces) = snapshot.map.split(start, len) else { continue };
            for piece in pieces {
                ops.push(RemoteOp::Write {
                    region: piece.region,
                    offset: piece.offset,
                    data: &range.bytes[piece.buf_range()],
                });
            }
            written += len;
        }
        self.transport
            .execute(&mut ops)
            .map(|()| written)
            .map_err(|e| ChannelError::Transport { component: memory.name().to_owned(), source: e.error })
    }

    /// Makes room for one more line, writing back dirty victims first.
    fn make_room(&mut self) -> Result<(), ChannelError> {
        while let Some(victim) = self.cache.victim_to_write_back() {
            let written = self.write_back(&victim)?;
            self.cache.count_moved(0, written);
            self.cache.mark_clean(victim.key);
        }
        Ok(())
    }

    /// Records a buffered write to `range` of a cached line, writing back a
    /// disjoint older range of the same line first.
    fn mark_dirty(&mut self, key: LineKey, range: std::ops::Range<usize>) -> Result<(), ChannelError> {
        while let Err(older) = self.cache.mark_dirty(key, range.clone()) {
            let written = self.write_back(&older)?;
            self.cache.count_moved(0, written);
            self.cache.mark_clean(key);
        }
        Ok(())
    }

    /// Writes back the buffered writes of `memory` (of all when `None`), one
    /// batch per component. On a failure, what was not written stays
    /// buffered for a later sync (writing a range twice is harmless).
    pub(crate) fn flush(&mut self, memory: Option<MemoryId>) -> Result<(), ChannelError> {
        let dirty = self.cache.dirty(memory);
        for component in dirty.chunk_by(|a, b| a.key.0 == b.key.0) {
            let written = self.write_back_all(component)?;
            self.cache.count_moved(0, written);
            for range in component {
                self.cache.mark_clean(range.key);
            }
        }
        Ok(())
    }

    fn count_moved(&mut self, read: usize, written: usize) {
        self.cache.count_moved(read, written);
    }
}

/// A channel's state for one remote memory component.
pub(crate) struct RemoteChannel {
    memory: Arc<VirtualMemory>,
    cache: Arc<Mutex<CacheHost>>,
    transport: Arc<dyn Transport>,
    snapshot: Snapshot,
    /// Where `read_with` reads what it cannot lend in place; reused.
    scratch: Vec<u8>,
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
        RemoteChannel { memory, cache, transport, snapshot: Snapshot::default(), scratch: Vec::new() }
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
            host.count_moved(buf.len(), 0);
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
            host.count_moved(line as usize, 0);
        }
        Ok(())
    }

    /// Lends `[addr, addr + len)` to `f`: the cache's bytes when one cached
    /// line holds them, the physical component's bytes when the transport
    /// can lend and no buffered write overlaps, else a copy in a reused buffer.
    pub(crate) fn read_with<T>(
        &mut self,
        addr: u64,
        len: usize,
        f: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, ChannelError> {
        self.check_range(addr, len)?;
        let mut f = Some(f);
        {
            let mut host = self.cache.lock();
            let id = self.memory.id();
            let line = host.cache.line_bytes() as u64;
            let lines = addr / line..(addr + len as u64).div_ceil(line).max(addr / line + 1);
            if lines.end - lines.start == 1 {
                let offset = (addr - lines.start * line) as usize;
                let lent = host
                    .cache
                    .peek_mut((id, lines.start))
                    .and_then(|data| Some(f.take()?(&data[offset..offset + len])));
                if let Some(out) = lent {
                    host.cache.count_lent(len);
                    return Ok(out);
                }
            }
            let clean = host.cache.dirty_overlay(id, lines).next().is_none();
            let single =
                self.snapshot.map.split(addr, len).and_then(|mut pieces| pieces.next()).filter(|p| p.len == len);
            if let (true, Some(piece)) = (clean, single) {
                let mut out = None;
                let lent = self.transport.lend(&piece.region, piece.offset, len, &mut |bytes| {
                    if let Some(f) = f.take() {
                        out = Some(f(bytes));
                    }
                });
                match lent {
                    Ok(true) => {
                        if let Some(out) = out {
                            host.cache.count_lent(len);
                            return Ok(out);
                        }
                    }
                    Ok(false) => {}
                    Err(source) => return Err(ChannelError::Transport { component: self.name(), source }),
                }
            }
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.resize(len, 0);
        let read = self.read(addr, &mut scratch);
        let out = read.map(|()| f.take().map(|f| f(&scratch)));
        self.scratch = scratch;
        out?.ok_or_else(|| ChannelError::Transport {
            component: self.name(),
            source: TransportError::Disconnected(
                "the transport called a lent-bytes callback yet said it did not".into(),
            ),
        })
    }

    /// Posts a large read to the instance's I/O thread; a small one, or one
    /// that buffered writes overlap, is served at once.
    pub(crate) fn read_async(&mut self, addr: u64, mut buf: Vec<u8>) -> Result<PendingRead, ChannelError> {
        self.check_range(addr, buf.len())?;
        let len = buf.len();
        let mut host = self.cache.lock();
        let line = host.cache.line_bytes() as u64;
        let lines = addr / line..(addr + len as u64).div_ceil(line);
        let direct = len >= host.cache.config().bypass_bytes()
            && host.cache.dirty_overlay(self.memory.id(), lines).next().is_none();
        if direct {
            if host.io.is_none() {
                host.io = IoWorker::spawn();
            }
            if let Some(io) = &host.io {
                let (done, result) = crossbeam_channel::bounded(1);
                let (transport, map, component) = (self.transport.clone(), self.snapshot.map.clone(), self.name());
                let size = self.snapshot.len;
                let job = Box::new(move || {
                    let read = read_pieces(&*transport, &map, addr, &mut buf).map(|()| buf).map_err(|e| match e {
                        AccessError::Transport(source) => ChannelError::Transport { component, source },
                        AccessError::Unmapped => ChannelError::OutOfRange { component, addr, len: len as u64, size },
                    });
                    let _ = done.send(read);
                });
                if io.submit(job).is_ok() {
                    host.count_moved(len, 0);
                    return Ok(PendingRead::in_flight(result));
                }
                // The I/O thread is gone (and the buffer with the job): read here.
                host.io = None;
                drop(host);
                let mut buf = vec![0; len];
                self.read(addr, &mut buf)?;
                return Ok(PendingRead::ready(buf));
            }
        }
        drop(host);
        self.read(addr, &mut buf)?;
        Ok(PendingRead::ready(buf))
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
            host.count_moved(0, data.len());
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
